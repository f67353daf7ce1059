//! Chains of equality tests on one register become jump tables: the same
//! results as the interpreter for every value, in both modes, and the same
//! budget faults in checked mode.

use std::sync::Arc;

use userbpf_jit::{jit_checked, jit_verified, Options};
use userbpf_verifier::Verified;
use userbpf_vm::asm::assemble;
use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::{Config, Helpers, Program, Vm};

/// r0 = a different number per case of r1 (with a duplicate value and a
/// 32-bit chain), 99 by default.
const SRC: &str = "
    mov %r0, 0
    jeq %r1, 0, c0
    jeq %r1, 5, c5
    jeq %r1, 2, c2
    jeq %r1, 5, c0
    jeq %r1, 7, c7
    mov %r0, 99
    ja w32
c0: mov %r0, 10
    ja w32
c5: mov %r0, 15
    ja w32
c2: mov %r0, 12
    ja w32
c7: mov %r0, 17
w32:
    jeq32 %r2, 1, d1
    jeq32 %r2, 3, d3
    jeq32 %r2, 4, d4
    jeq32 %r2, 6, d6
    exit
d1: add %r0, 100
    exit
d3: add %r0, 300
    exit
d4: add %r0, 400
    exit
d6: add %r0, 600
    exit";

fn vm(budget: Option<u64>, jit: Option<bool>) -> Vm {
    let program = Program::new("chains", assemble(SRC).unwrap()).unwrap();
    let p = Arc::new(PreparedProgram::new(&program, &Helpers::new(), Config { budget }).unwrap());
    match jit {
        Some(true) => {
            jit_checked(&p, Options::default()).unwrap();
        }
        Some(false) => {
            // SAFETY: the program touches no memory and terminates.
            let v = unsafe { Verified::assume_verified(Arc::clone(&p)) };
            jit_verified(&v, Options::default()).unwrap();
        }
        None => {}
    }
    Vm::from_prepared(p)
}

#[test]
fn jump_tables_agree_with_the_interpreter() {
    let values = [
        0u64,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        255,
        256,
        1 << 32,
        (1 << 32) | 3,
        u64::MAX,
    ];
    for jit in [Some(true), Some(false)] {
        let mut interp = vm(None, None);
        let mut native = vm(None, jit);
        for &a in &values {
            for &b in &values {
                assert_eq!(
                    native.run_with_args([a, b, 0, 0, 0]),
                    interp.run_with_args([a, b, 0, 0, 0]),
                    "r1={a:#x} r2={b:#x} jit={jit:?}"
                );
            }
        }
    }
}

#[test]
fn budgets_run_out_at_the_same_test() {
    for budget in 1..12 {
        for a in [0u64, 5, 7, 9] {
            let mut interp = vm(Some(budget), None);
            let mut native = vm(Some(budget), Some(true));
            let i = interp.run_with_args([a, 6, 0, 0, 0]);
            let n = native.run_with_args([a, 6, 0, 0, 0]);
            assert_eq!(
                n.as_ref().map_err(|f| (f.pc, f.kind.clone())),
                i.as_ref().map_err(|f| (f.pc, f.kind.clone())),
                "budget {budget}, r1={a}"
            );
            assert_eq!(
                native.last_insn_count(),
                interp.last_insn_count(),
                "budget {budget}, r1={a}"
            );
        }
    }
}
