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

/// A loop over the bytes of its memory whose switch adds a constant per
/// case to r0 (the ways `add; ja`, a lookup table), then a 32-bit chain
/// whose ways move a constant into r6 (`mov; ja`); r0 + r6 at the end.
const LOOKUP_SRC: &str = "
    mov %r0, 0
    mov %r6, 0
    mov %r3, 0
loop:
    jge %r3, %r2, done
    mov %r4, %r1
    add %r4, %r3
    ldxb %r5, [%r4+0]
    and %r5, 15
    jeq %r5, 0, a0
    jeq %r5, 3, a3
    jeq %r5, 1, a1
    jeq %r5, 3, a1
    jeq %r5, 9, a9
    jeq %r5, 4, a4
    add %r0, 1
    ja next
a0: add %r0, 1000
    ja next
a1: add %r0, -7
    ja next
a3: add %r0, 30
    ja next
a4: add %r0, 400000
    ja next
a9: add %r0, 9
next:
    add %r3, 1
    ja loop
done:
    jeq32 %r0, 7, m0
    jeq32 %r0, 1, m1
    jeq32 %r0, 2, m2
    jeq32 %r0, 9, m9
    mov %r6, 5
    ja end
m0: mov %r6, 100
    ja end
m1: mov %r6, 101
    ja end
m2: mov %r6, 102
    ja end
m9: mov %r6, 109
end:
    add %r0, %r6
    exit";

fn lookup_vm(src: &str, budget: Option<u64>, jit: Option<bool>) -> (Vm, Option<String>) {
    let program = Program::new("lookups", assemble(src).unwrap()).unwrap();
    let p = Arc::new(PreparedProgram::new(&program, &Helpers::new(), Config { budget }).unwrap());
    let options = Options {
        keep_asm: true,
        ..Options::default()
    };
    let asm = match jit {
        Some(true) => Some(jit_checked(&p, options).unwrap().asm().unwrap().to_string()),
        Some(false) => {
            // SAFETY: the program reads only its memory (r1, r2 bytes)
            // and terminates.
            let v = unsafe { Verified::assume_verified(Arc::clone(&p)) };
            Some(
                jit_verified(&v, options)
                    .unwrap()
                    .asm()
                    .unwrap()
                    .to_string(),
            )
        }
        None => None,
    };
    (Vm::from_prepared(p), asm)
}

/// Memories that take every way of both chains (and bytes past the
/// first chain's values).
fn lookup_inputs() -> Vec<Vec<u8>> {
    let mut inputs: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![1],
        vec![5],
        vec![2, 2],
        vec![2; 7],
        vec![9],
        vec![3],
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for len in [1usize, 2, 5, 17, 64, 200] {
        let v = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        inputs.push(v);
    }
    inputs
}

fn run_lookup(vm: &mut Vm, mem: &[u8]) -> (Result<u64, (usize, userbpf_vm::FaultKind)>, u64) {
    let mut m = mem.to_vec();
    // An empty memory runs with r1 = r2 = 0 (no byte read).
    let r = vm.run(&mut m).map_err(|f| (f.pc, f.kind));
    (r, vm.last_insn_count())
}

/// The lookup tables the code loads from (`load_ext_name` of each).
fn tables(asm: &str) -> usize {
    let mut names: Vec<&str> = asm
        .split_whitespace()
        .filter(|w| w.starts_with("userextname"))
        .collect();
    names.sort_unstable();
    names.dedup();
    names.len()
}

#[test]
fn switches_whose_ways_add_or_move_a_constant_load_it_from_a_table() {
    // Both chains of this program are tables (ways ending in a jump or
    // falling through to the join); of the first program, only the first
    // chain (the second's ways exit).
    for jit in [true, false] {
        let (_, asm) = lookup_vm(LOOKUP_SRC, None, Some(jit));
        let asm = asm.unwrap();
        assert_eq!(tables(&asm), 2, "checked {jit}:\n{asm}");
        let (_, asm) = lookup_vm(SRC, None, Some(jit));
        let asm = asm.unwrap();
        assert_eq!(tables(&asm), 1, "checked {jit}:\n{asm}");
    }
    for mem in lookup_inputs() {
        let (mut interp, _) = lookup_vm(LOOKUP_SRC, None, None);
        let expected = run_lookup(&mut interp, &mem);
        for jit in [true, false] {
            let (mut native, _) = lookup_vm(LOOKUP_SRC, None, Some(jit));
            let got = run_lookup(&mut native, &mem);
            assert_eq!(got.0, expected.0, "{mem:?} checked {jit}");
            if jit {
                assert_eq!(got.1, expected.1, "{mem:?}: instructions counted");
            }
        }
    }
}

#[test]
fn lookups_charge_the_budget_the_interpreter_spends() {
    let mems = lookup_inputs();
    for mem in mems.iter().filter(|m| m.len() <= 17) {
        let (mut interp, _) = lookup_vm(LOOKUP_SRC, None, None);
        let total = run_lookup(&mut interp, mem).1;
        for budget in 1..=total + 1 {
            let (mut interp, _) = lookup_vm(LOOKUP_SRC, Some(budget), None);
            let (mut native, _) = lookup_vm(LOOKUP_SRC, Some(budget), Some(true));
            assert_eq!(
                run_lookup(&mut native, mem),
                run_lookup(&mut interp, mem),
                "budget {budget}, {mem:?}"
            );
        }
    }
}
