//! The BPF ISA conformance corpus on the JIT, in checked and in verified
//! mode: every case passes, and no compiled program holds a trapping
//! instruction.

use std::path::PathBuf;
use std::sync::Arc;

use userbpf_jit::{jit_checked, jit_verified, Options};
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

fn run_jit(insns: &[Insn], mem: &mut [u8], verified: bool) -> Result<u64, EngineError> {
    let program = Program::new("conformance", insns.to_vec())
        .map_err(|e| EngineError::Load(e.to_string()))?;
    let prepared = Arc::new(
        PreparedProgram::new(&program, &helpers(), Config::default())
            .map_err(|e| EngineError::Load(e.to_string()))?,
    );
    // With the disassembly: the code must hold no trapping instruction
    // (division by zero and the like are branches or selects).
    let options = Options { keep_asm: true };
    let code = if verified {
        // SAFETY: the conformance programs are the suite's known-good
        // programs; those that fault do so on purpose and are run in
        // checked mode (see `expects_fault`).
        let v = unsafe { Verified::assume_verified(Arc::clone(&prepared)) };
        jit_verified(&v, options)
    } else {
        jit_checked(&prepared, options)
    }
    .map_err(|e| EngineError::Load(e.to_string()))?;
    let asm = code.asm().unwrap_or_default();
    assert!(!asm.is_empty(), "no disassembly kept");
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

fn run_corpus(verified: bool) {
    let dir = corpus().join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut ran = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        // Cases that expect a fault only make sense with checks.
        let verified_here = verified && !text.contains("-- error");
        ran += 1;
        if let Err(e) = run_case(&text, |i, m| run_jit(i, m, verified_here)) {
            failures.push(format!("{}: {e}", f.file_name().unwrap().to_string_lossy()));
        }
    }
    let mode = if verified { "verified" } else { "checked" };
    println!(
        "conformance (JIT, {mode}): {}/{} passed",
        ran - failures.len(),
        files.len()
    );
    for f in &failures {
        println!("  FAIL {f}");
    }
    assert!(failures.is_empty(), "{} failures", failures.len());
    assert_eq!(files.len(), 313);
}

#[test]
fn every_conformance_case_passes_on_the_checked_jit() {
    run_corpus(false);
}

#[test]
fn every_conformance_case_passes_on_the_verified_jit() {
    run_corpus(true);
}
