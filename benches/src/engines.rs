//! The engines the JIT suite runs each program on.

use std::sync::Arc;

use userbpf_jit::{Options, Tier};
use userbpf_verifier::Verified;
use userbpf_vm::asm::assemble;
use userbpf_vm::insn::{insns_to_bytes, Insn};
use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::{Config, Helpers, Program, Vm};

use crate::suite::SuiteProgram;

/// The program's instructions.
pub fn insns(p: &SuiteProgram) -> Vec<Insn> {
    assemble(&p.source).unwrap_or_else(|e| panic!("{}: {e}", p.name))
}

/// The program's bytecode (for rbpf).
pub fn bytecode(p: &SuiteProgram) -> Vec<u8> {
    insns_to_bytes(&insns(p))
}

/// The budget checked runs get: far above what the suite needs, so runs
/// finish, while the JIT still emits the budget accounting.
pub const CHECKED_BUDGET: u64 = 1 << 40;

fn prepared(p: &SuiteProgram, budget: Option<u64>) -> Arc<PreparedProgram> {
    let program = Program::new(p.name, insns(p)).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(
        PreparedProgram::new(&program, &Helpers::new(), Config { budget })
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// The interpreter (checked, no budget).
pub fn interpreter(p: &SuiteProgram) -> Vm {
    Vm::from_prepared(prepared(p, None))
}

/// The JIT in checked mode (bounds checks and budget accounting).
pub fn jit_checked(p: &SuiteProgram) -> Vm {
    let prog = prepared(p, Some(CHECKED_BUDGET));
    userbpf_jit::jit_checked(&prog, Options::default()).unwrap_or_else(|e| panic!("{e}"));
    Vm::from_prepared(prog)
}

/// The JIT in verified mode: no run-time checks, for the programs the
/// verifier accepts (the others, too complex for it, stay in checked
/// mode; the benchmark marks them).
pub fn jit_verified(p: &SuiteProgram) -> Vm {
    verified_vm(p, Tier::Optimized)
}

/// The JIT's baseline code generator alone (verified mode): the code a
/// tiered compile runs until Cranelift's is in.
pub fn jit_baseline(p: &SuiteProgram) -> Vm {
    verified_vm(p, Tier::Baseline)
}

/// The verifier's verdict on the program with its input as the buffer
/// (`Env::raw`): the proof, or why it was rejected.
pub fn verify(p: &SuiteProgram) -> Result<Verified<Program>, String> {
    let program = Program::new(p.name, insns(p)).map_err(|e| e.to_string())?;
    let len = u32::try_from((p.input)().len()).map_err(|e| e.to_string())?;
    userbpf_verifier::verify(
        program,
        &userbpf_verifier::Env::raw(len),
        &userbpf_verifier::Options::default(),
    )
    .map(|(v, _)| v)
    .map_err(|e| e.message)
}

/// The program prepared for the verified engines: with the verifier's
/// proof, or (rejected: too complex to verify) checked.
fn verified_or_checked(
    p: &SuiteProgram,
) -> Result<Verified<Arc<PreparedProgram>>, Arc<PreparedProgram>> {
    match verify(p) {
        Ok(v) => {
            let prog = prepared(p, None);
            v.vouch_for(&prog)
                .ok_or_else(|| unreachable!("prepared from the verified program"))
        }
        Err(_) => Err(prepared(p, Some(CHECKED_BUDGET))),
    }
}

fn verified_vm(p: &SuiteProgram, tier: Tier) -> Vm {
    let options = Options {
        tier,
        ..Options::default()
    };
    match verified_or_checked(p) {
        Ok(v) => {
            userbpf_jit::jit_verified(&v, options).unwrap_or_else(|e| panic!("{e}"));
            Vm::from_prepared(Arc::clone(&v))
        }
        Err(prog) => {
            userbpf_jit::jit_checked(&prog, options).unwrap_or_else(|e| panic!("{e}"));
            Vm::from_prepared(prog)
        }
    }
}

/// Time until a program has native code with a tiered compile (the
/// baseline generator's), checked and verified, in µs per instruction
/// (medians of `rounds`).
pub fn baseline_us_per_insn(p: &SuiteProgram, rounds: u32) -> (f64, f64) {
    us_per_insn(p, rounds, Tier::Baseline)
}

/// Compile time of the program (checked, verified), in µs per instruction.
pub fn compile_us_per_insn(p: &SuiteProgram, rounds: u32) -> (f64, f64) {
    us_per_insn(p, rounds, Tier::Optimized)
}

/// Compile time of the program with `tier`'s code generator (checked,
/// verified), in µs per instruction (medians of `rounds`).
fn us_per_insn(p: &SuiteProgram, rounds: u32, tier: Tier) -> (f64, f64) {
    let n = insns(p).len();
    let checked = prepared(p, Some(CHECKED_BUDGET));
    let v = verified_or_checked(p);
    let options = Options {
        tier,
        ..Options::default()
    };
    let c = median_us_per_insn(n, rounds, || {
        userbpf_jit::compile_checked(&checked, options)
    });
    let u = median_us_per_insn(n, rounds, || match &v {
        Ok(v) => userbpf_jit::compile_verified(v, options),
        Err(c) => userbpf_jit::compile_checked(c, options),
    });
    match (c, u) {
        (Ok(c), Ok(u)) => (c, u),
        (c, u) => panic!("{}: {:?} {:?}", p.name, c.err(), u.err()),
    }
}

/// The median time of `rounds` calls of `compile` in µs per instruction
/// of a program of `insns` instructions (each result dropped outside the
/// timing), after 3 untimed calls (the process's one-time set-up, such as
/// the check trampoline, is not a program's compile time); the first
/// failure's message if one fails.
pub fn median_us_per_insn<T, E: std::fmt::Display>(
    insns: usize,
    rounds: u32,
    mut compile: impl FnMut() -> Result<T, E>,
) -> Result<f64, String> {
    for _ in 0..3 {
        compile().map_err(|e| e.to_string())?;
    }
    let mut t = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds.max(1) {
        let start = std::time::Instant::now();
        let code = compile();
        t.push(start.elapsed().as_secs_f64() * 1e6 / insns.max(1) as f64);
        code.map_err(|e| e.to_string())?;
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{suite, SuiteProgram};

    type MakeVm = fn(&SuiteProgram) -> Vm;

    #[test]
    fn every_engine_agrees_with_native_rust_on_the_suite() {
        for p in suite() {
            let expected = (p.native)(&mut (p.input)());
            let engines: [(&str, MakeVm); 3] = [
                ("interpreter", interpreter),
                ("jit checked", jit_checked),
                ("jit verified", jit_verified),
            ];
            for (name, make) in engines {
                let mut vm = make(&p);
                assert_eq!(
                    vm.run(&mut (p.input)()),
                    Ok(expected),
                    "{} on {name}",
                    p.name
                );
            }
            let code = bytecode(&p);
            let mut rvm = rbpf::EbpfVmRaw::new(Some(&code)).unwrap();
            let mut mem = (p.input)();
            assert_eq!(
                rvm.execute_program(&mut mem).unwrap(),
                expected,
                "{} on rbpf",
                p.name
            );
            rvm.jit_compile().unwrap();
            let mut mem = (p.input)();
            // SAFETY: the program only touches its memory (see above).
            let r = unsafe { rvm.execute_program_jit(&mut mem) }.unwrap();
            assert_eq!(r, expected, "{} on rbpf's JIT", p.name);
        }
    }
}
