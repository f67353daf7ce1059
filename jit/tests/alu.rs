//! Arithmetic the JIT lowers otherwise than as written (multiplies by
//! `2^k ± 1` as a shift and an add or subtract) against the interpreter,
//! in both widths, on Cranelift's code (verified and checked) and the
//! baseline generator's.

use std::sync::Arc;

use userbpf_jit::{jit_checked, jit_verified, Options, Tier};
use userbpf_verifier::Verified;
use userbpf_vm::asm::assemble;
use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::{Config, Helpers, Program, Vm};

fn vm(src: &str, engine: u8) -> Vm {
    let program = Program::new("alu", assemble(src).unwrap()).unwrap();
    let p = Arc::new(PreparedProgram::new(&program, &Helpers::new(), Config::default()).unwrap());
    // SAFETY: the programs touch no memory and terminate.
    let v = unsafe { Verified::assume_verified(Arc::clone(&p)) };
    let baseline = Options {
        tier: Tier::Baseline,
        ..Options::default()
    };
    match engine {
        0 => {}
        1 => drop(jit_verified(&v, Options::default()).unwrap()),
        2 => drop(jit_checked(&p, Options::default()).unwrap()),
        _ => drop(jit_verified(&v, baseline).unwrap()),
    }
    Vm::from_prepared(p)
}

#[test]
fn multiplies_by_constants_agree_with_the_interpreter() {
    let multipliers: [i64; 18] = [
        3,
        5,
        7,
        9,
        15,
        17,
        31,
        33,
        63,
        65,
        255,
        257,
        (1 << 30) + 1,
        (1 << 31) - 1,
        -31,
        -33,
        -1,
        i32::MIN as i64,
    ];
    let values: [u64; 8] = [
        0,
        1,
        u64::MAX,
        1 << 63,
        (1 << 63) - 1,
        0x0123_4567_89ab_cdef,
        0xffff_ffff,
        0x8000_0000,
    ];
    for m in multipliers {
        for op in ["mul", "mul32"] {
            let src = format!("mov %r0, %r1\n{op} %r0, {m}\nexit");
            let mut interp = vm(&src, 0);
            let mut jits: Vec<Vm> = (1..=3).map(|e| vm(&src, e)).collect();
            for x in values {
                let expected = interp.run_with_args([x, 0, 0, 0, 0]);
                for (i, j) in jits.iter_mut().enumerate() {
                    assert_eq!(
                        j.run_with_args([x, 0, 0, 0, 0]),
                        expected,
                        "{op} {x:#x} by {m}, engine {i}"
                    );
                }
            }
        }
    }
}

#[test]
fn divisions_on_either_side_of_32_bits_agree_with_the_interpreter() {
    // Cranelift's code takes a 32-bit divide when both operands fit in 32
    // bits: values on both sides of that line, signed and unsigned, by
    // register (by zero and -1 too).
    let values: [u64; 12] = [
        0,
        1,
        7,
        0xffff_fffe,
        0xffff_ffff,
        1 << 32,
        (1 << 32) + 5,
        0x7fff_ffff_ffff_ffff,
        1 << 63,
        u64::MAX,
        u64::MAX - 6,
        0x0123_4567_89ab_cdef,
    ];
    for op in ["div", "mod", "sdiv", "smod"] {
        let src = format!("mov %r0, %r1\n{op} %r0, %r2\nexit");
        let mut interp = vm(&src, 0);
        let mut jits: Vec<Vm> = (1..=3).map(|e| vm(&src, e)).collect();
        for a in values {
            for b in values {
                let expected = interp.run_with_args([a, b, 0, 0, 0]);
                for (i, j) in jits.iter_mut().enumerate() {
                    assert_eq!(
                        j.run_with_args([a, b, 0, 0, 0]),
                        expected,
                        "{a:#x} {op} {b:#x}, engine {i}"
                    );
                }
            }
        }
    }
}
