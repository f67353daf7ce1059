//! Loops that copy memory forward, one element a round, run all their
//! rounds but the last as one `memmove` where they are entered (verified
//! code, and checked code's loop copy whose entry proved accesses and
//! budget). Every form the analysis takes (a guard at the head or at the
//! back-edge, constant or register bounds, inclusive or not, every access
//! size, a start off the stride), sources and destinations that do not
//! overlap, overlap behind, overlap ahead (a `memmove` would differ: the
//! loop runs as it is) or leave the memory: native code ends every run as
//! the interpreter does (result or fault, instruction count, every byte of
//! memory, the loop's other registers), with ample budgets and with
//! budgets that run out.

use std::sync::Arc;

use userbpf_jit::{compile_checked, compile_verified, jit_checked, jit_verified, Options};
use userbpf_verifier::Verified;
use userbpf_vm::asm::assemble;
use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::{Config, FaultKind, Helpers, Program, Vm};

type Outcome = (Result<u64, (usize, FaultKind)>, u64, Vec<u8>);

const MEM: usize = 4096;

fn prepared(src: &str, budget: Option<u64>) -> Arc<PreparedProgram> {
    let program = Program::new("bulk", assemble(src).unwrap()).unwrap();
    Arc::new(PreparedProgram::new(&program, &Helpers::new(), Config { budget }).unwrap())
}

fn interpreter(src: &str, mem: &[u8], budget: u64) -> Outcome {
    let mut vm = Vm::from_prepared(prepared(src, Some(budget)));
    let mut m = mem.to_vec();
    let r = vm.run(&mut m);
    (r.map_err(|f| (f.pc, f.kind)), vm.last_insn_count(), m)
}

fn checked(src: &str, mem: &[u8], budget: u64) -> Outcome {
    let p = prepared(src, Some(budget));
    jit_checked(&p, Options::default()).unwrap();
    let mut vm = Vm::from_prepared(p);
    let mut m = mem.to_vec();
    let r = vm.run(&mut m);
    (r.map_err(|f| (f.pc, f.kind)), vm.last_insn_count(), m)
}

/// Verified code, run only on memory where the interpreter showed every
/// access in bounds (what the verifier would have proven).
fn verified(src: &str, mem: &[u8]) -> (u64, Vec<u8>) {
    let p = prepared(src, None);
    // SAFETY: the callers run this only where the interpreter ran the
    // program on the same memory without a fault: every access it makes
    // is in bounds, and it ends.
    let v = unsafe { Verified::assume_verified(Arc::clone(&p)) };
    jit_verified(&v, Options::default()).unwrap();
    let mut vm = Vm::from_prepared(p);
    let mut m = mem.to_vec();
    (vm.run(&mut m).unwrap(), m)
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Whether Cranelift's code of `src` copies in bulk: (checked, verified).
fn bulk(src: &str) -> (usize, usize) {
    let p = prepared(src, Some(1 << 40));
    let c = compile_checked(&p, Options::default()).unwrap();
    let p = prepared(src, None);
    // SAFETY: compiled only, never run.
    let v = unsafe { Verified::assume_verified(p) };
    let u = compile_verified(&v, Options::default()).unwrap();
    (c.bulk_copies().unwrap(), u.bulk_copies().unwrap())
}

/// A copy of `size` bytes a round from `r1 + from` to `r1 + to`, the
/// induction variable from `start` to `n`; `form` picks the guard. The
/// result mixes every register the loop writes (pointers as offsets).
fn copy_loop(form: &str, size: (&str, i64), from: i64, to: i64, start: i64, n: i64) -> String {
    let (sz, step) = size;
    let body_head = format!(
        "
            mov %r4, %r7
            add %r4, %r3
            ldx{sz} %r5, [%r4+0]
            mov %r8, %r6
            add %r8, %r3
            stx{sz} [%r8+0], %r5
            add %r3, {step}"
    );
    // (The increment between the load and the store: the store's
    // address is in terms of the grown variable.)
    let body_back = format!(
        "
            mov %r4, %r7
            add %r4, %r3
            ldx{sz} %r5, [%r4+0]
            add %r3, {step}
            mov %r8, %r6
            add %r8, %r3
            stx{sz} [%r8-{step}], %r5"
    );
    let head = |cond: &str| {
        format!(
            "
        loop:
            {cond} %r3, {n}, done
            {body_head}
            ja loop
        done:"
        )
    };
    let back = |cond: &str| {
        format!(
            "
            mov %r9, {n}
        loop:
            {body_back}
            {cond} %r3, %r9, loop"
        )
    };
    let lp = match form {
        "jge" | "jgt" => head(form),
        _ => back(form),
    };
    format!(
        "
            mov %r5, 0
            mov %r6, %r1
            add %r6, {to}
            mov %r7, %r1
            add %r7, {from}
            mov %r4, %r7
            mov %r8, %r6
            mov %r3, {start}
            {lp}
            sub %r4, %r7
            sub %r8, %r6
            mov %r0, %r3
            lsh %r0, 16
            xor %r0, %r4
            lsh %r0, 16
            xor %r0, %r8
            lsh %r0, 8
            xor %r0, %r5
            exit"
    )
}

const FORMS: [&str; 4] = ["jge", "jgt", "jlt", "jle"];
const SIZES: [(&str, i64); 4] = [("b", 1), ("h", 2), ("w", 4), ("dw", 8)];

#[test]
fn copy_loops_copy_in_bulk_in_both_modes() {
    for form in FORMS {
        for size in SIZES {
            let src = copy_loop(form, size, 0, 2048, 0, 1000);
            assert_eq!(bulk(&src), (1, 1), "{form} {size:?}:\n{src}");
        }
    }
}

#[test]
fn loops_a_bulk_copy_would_change_are_left_alone() {
    // A register carried from round to round (a running sum), a store of
    // something else than what was loaded, a step other than the size, a
    // second store, a jump inside: none is a copy.
    let carried = "
            mov %r3, 0
            mov %r0, 0
        loop:
            jge %r3, 1000, done
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4+0]
            add %r0, %r5
            stxb [%r4+2048], %r5
            add %r3, 1
            ja loop
        done:
            exit";
    let other_value = "
            mov %r3, 0
        loop:
            jge %r3, 1000, done
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4+0]
            add %r5, 1
            stxb [%r4+2048], %r5
            add %r3, 1
            ja loop
        done:
            mov %r0, %r3
            exit";
    let strided = "
            mov %r3, 0
        loop:
            jge %r3, 1000, done
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4+0]
            stxb [%r4+2048], %r5
            add %r3, 2
            ja loop
        done:
            mov %r0, %r3
            exit";
    let two_stores = "
            mov %r3, 0
        loop:
            jge %r3, 1000, done
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4+0]
            stxb [%r4+2048], %r5
            stxb [%r4+3072], %r5
            add %r3, 1
            ja loop
        done:
            mov %r0, %r3
            exit";
    let branchy = "
            mov %r3, 0
        loop:
            jge %r3, 1000, done
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4+0]
            jeq %r5, 7, skip
            stxb [%r4+2048], %r5
        skip:
            add %r3, 1
            ja loop
        done:
            mov %r0, %r3
            exit";
    for src in [carried, other_value, strided, two_stores, branchy] {
        assert_eq!(bulk(src), (0, 0), "{src}");
        let mem = bytes(MEM, 7);
        let expected = interpreter(src, &mem, 1 << 40);
        assert_eq!(checked(src, &mem, 1 << 40), expected, "{src}");
        let (r0, m) = verified(src, &mem);
        assert_eq!((Ok(r0), m), (expected.0, expected.2), "{src}");
    }
}

#[test]
fn bulk_copies_end_every_run_as_the_interpreter_does() {
    // (source, destination) offsets: apart either way, overlapping behind
    // (a memmove), overlapping ahead by less than the copy (the loop
    // replicates: it runs round by round), in place, and running off the
    // end of the memory.
    let places = [
        (0, 2048),
        (2048, 0),
        (520, 512),
        (100, 97),
        (512, 520),
        (97, 100),
        (700, 700),
        (0, 3500),
    ];
    // (start, n): long, unaligned, short (below the bulk threshold),
    // empty (a back-edge guard still runs one round).
    let spans = [(0, 1000), (5, 901), (0, 100), (64, 64)];
    let mut faults = 0;
    let mut runs = 0;
    for form in FORMS {
        for size in SIZES {
            for (from, to) in places {
                for (start, n) in spans {
                    let src = copy_loop(form, size, from, to, start, n);
                    let mem = bytes(MEM, (from * 31 + to + n) as u64);
                    let full = interpreter(&src, &mem, 1 << 40);
                    let count = full.1;
                    for budget in [1 << 40, count, count - 1, count / 2 + 1] {
                        let expected = interpreter(&src, &mem, budget.max(1));
                        let got = checked(&src, &mem, budget.max(1));
                        assert_eq!(
                            got.0, expected.0,
                            "budget {budget}, {form} {size:?}:\n{src}"
                        );
                        assert_eq!(got.1, expected.1, "instructions, budget {budget}:\n{src}");
                        assert!(got.2 == expected.2, "memory, budget {budget}:\n{src}");
                    }
                    match full.0 {
                        Ok(r0) => {
                            let (got, m) = verified(&src, &mem);
                            assert_eq!(got, r0, "verified, {form} {size:?}:\n{src}");
                            assert!(m == full.2, "verified memory, {form} {size:?}:\n{src}");
                        }
                        Err(_) => faults += 1,
                    }
                    runs += 1;
                }
            }
        }
    }
    // Both kinds of run happened.
    assert!(
        faults > 0 && faults < runs,
        "{faults} of {runs} runs faulted"
    );
}
