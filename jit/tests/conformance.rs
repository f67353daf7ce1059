//! The BPF ISA conformance corpus on the JIT, in checked and in verified
//! mode: every case passes, and no compiled program holds a trapping
//! instruction. The baseline code generator passes every case it takes
//! (those without calls: the others go to Cranelift), in both modes.

use std::path::PathBuf;
use std::sync::Arc;

use userbpf_jit::{jit_checked, jit_verified, JitError, Options, Tier};
use userbpf_verifier::Verified;
use userbpf_vm::conformance::{helpers, run_case, EngineError};
use userbpf_vm::insn::Insn;
use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::{Config, Program, Vm};

fn corpus() -> PathBuf {
    match std::env::var_os("USERBPF_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Checked,
    Verified,
    /// Verified, by the baseline generator only.
    Baseline,
    /// Checked, by the baseline generator only.
    BaselineChecked,
}

/// What a case that the baseline generator does not take fails with.
const NOT_TAKEN: &str = "not for the baseline generator";

fn run_jit(insns: &[Insn], mem: &mut [u8], mode: Mode) -> Result<u64, EngineError> {
    let program = Program::new("conformance", insns.to_vec())
        .map_err(|e| EngineError::Load(e.to_string()))?;
    let prepared = Arc::new(
        PreparedProgram::new(&program, &helpers(), Config::default())
            .map_err(|e| EngineError::Load(e.to_string()))?,
    );
    // With the disassembly: the code must hold no trapping instruction
    // (division by zero and the like are branches or selects).
    let options = Options {
        keep_asm: true,
        tier: if matches!(mode, Mode::Baseline | Mode::BaselineChecked) {
            Tier::Baseline
        } else {
            Tier::Optimized
        },
    };
    let code = if matches!(mode, Mode::Checked | Mode::BaselineChecked) {
        jit_checked(&prepared, options)
    } else {
        // SAFETY: the conformance programs are the suite's known-good
        // programs; those that fault do so on purpose and are run in
        // checked mode (see `run_corpus`).
        let v = unsafe { Verified::assume_verified(Arc::clone(&prepared)) };
        jit_verified(&v, options)
    };
    let code = match code {
        Ok(c) => c,
        Err(JitError::Baseline { .. }) => return Err(EngineError::Load(NOT_TAKEN.into())),
        Err(e) => return Err(EngineError::Load(e.to_string())),
    };
    // (The baseline generator has no disassembly; it emits no trapping
    // instruction by construction.)
    let asm = code.asm().unwrap_or_default();
    assert!(
        !asm.is_empty() || matches!(mode, Mode::Baseline | Mode::BaselineChecked),
        "no disassembly kept"
    );
    if let Some(trap) = asm
        .lines()
        .find(|l| l.trim_start().starts_with("ud2") || l.trim_start().starts_with("trap"))
    {
        return Err(EngineError::Load(format!(
            "the code holds a trapping instruction: {trap}"
        )));
    }
    let mut vm = Vm::from_prepared(prepared);
    vm.run(mem).map_err(|f| EngineError::Fault(f.to_string()))
}

fn run_corpus(mode: Mode) -> usize {
    let dir = corpus().join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut not_taken = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        // Cases that expect a fault only make sense with checks.
        let mode_here = match mode {
            _ if !text.contains("-- error") => mode,
            Mode::Baseline => continue,
            Mode::Verified => Mode::Checked,
            _ => mode,
        };
        ran += 1;
        if let Err(e) = run_case(&text, |i, m| run_jit(i, m, mode_here)) {
            if e.to_string().contains(NOT_TAKEN) {
                not_taken += 1;
                continue;
            }
            failures.push(format!("{}: {e}", f.file_name().unwrap().to_string_lossy()));
        }
    }
    println!(
        "conformance (JIT, {mode:?}): {}/{} passed, {not_taken} not taken",
        ran - failures.len() - not_taken,
        files.len()
    );
    for f in &failures {
        println!("  FAIL {f}");
    }
    assert!(failures.is_empty(), "{} failures", failures.len());
    assert_eq!(files.len(), 313);
    ran - not_taken
}

#[test]
fn every_conformance_case_passes_on_the_checked_jit() {
    run_corpus(Mode::Checked);
}

#[test]
fn every_conformance_case_passes_on_the_verified_jit() {
    run_corpus(Mode::Verified);
}

#[test]
fn the_baseline_generator_passes_every_case_it_takes() {
    let taken = run_corpus(Mode::Baseline);
    // Every case without a call or an expected fault.
    assert!(taken >= 250, "the baseline generator took {taken} cases");
}

#[test]
fn the_checked_baseline_generator_passes_every_case_it_takes() {
    let taken = run_corpus(Mode::BaselineChecked);
    // Every case without a call (those that fault included).
    assert!(taken >= 250, "the baseline generator took {taken} cases");
}
