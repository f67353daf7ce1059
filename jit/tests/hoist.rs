//! Checked loops whose accesses are proven once, where the loop is entered
//! (hoisted range checks; see the jit crate's `hoist` module). Loops of
//! every form the analysis takes (a guard at the head or at the
//! back-edge, a constant or register bound, strides, a pointer that is the
//! induction variable, bounded offsets, the stack), on memories and bounds
//! that keep the loop inside its region, end it on the region's last byte,
//! take it one step past, start it outside or stop it early: native code
//! ends every run as the interpreter does (result or fault with its pc
//! and kind, instruction count, memory), with an ample budget and with
//! budgets that run out in the loop, on the closed path and the general
//! one.

use std::sync::Arc;

use userbpf_jit::{compile_checked, jit_checked, Options};
use userbpf_vm::asm::assemble;
use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::memory::{Region, RegionKind};
use userbpf_vm::{Config, FaultKind, Helpers, Program, Vm};

type Outcome = (Result<u64, (usize, FaultKind)>, u64, Vec<u8>);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Engine {
    Interpreter,
    /// `Vm::run` (closed code called directly).
    Native,
    /// The memory as a region of `run_with_regions`.
    NativeGeneral,
}

fn run(src: &str, mem: &[u8], budget: u64, engine: Engine) -> Outcome {
    let program = Program::new("hoist", assemble(src).unwrap()).unwrap();
    let config = Config {
        budget: Some(budget),
    };
    let p = Arc::new(PreparedProgram::new(&program, &Helpers::new(), config).unwrap());
    if engine != Engine::Interpreter {
        jit_checked(&p, Options::default()).unwrap();
    }
    let mut vm = Vm::from_prepared(p);
    let mut m = mem.to_vec();
    let r = match engine {
        Engine::NativeGeneral => {
            let region = Region::from_mut_slice(&mut m, RegionKind::Context);
            // SAFETY: `m` outlives the run.
            unsafe { vm.run_with_regions([region.start, region.len, 0, 0, 0], &[region], None) }
        }
        _ => vm.run(&mut m),
    };
    (r.map_err(|f| (f.pc, f.kind)), vm.last_insn_count(), m)
}

/// Runs `src` on `mem` with an ample budget, then with budgets that run
/// out at the end, midway and early: native code agrees with the
/// interpreter every time. Returns the interpreter's outcome.
fn agrees(src: &str, mem: &[u8]) -> Outcome {
    const AMPLE: u64 = 10_000_000;
    let full = run(src, mem, AMPLE, Engine::Interpreter);
    let count = full.1;
    for budget in [AMPLE, count, count - 1, count / 2 + 1, 9, 2, 1] {
        let expected = run(src, mem, budget.max(1), Engine::Interpreter);
        for engine in [Engine::Native, Engine::NativeGeneral] {
            let got = run(src, mem, budget.max(1), engine);
            assert_eq!(
                got,
                expected,
                "budget {budget}, {engine:?}, memory of {} bytes:\n{src}",
                mem.len()
            );
        }
    }
    full
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8 | 1
        })
        .collect()
}

fn faulted(o: &Outcome) -> bool {
    o.0.is_err()
}

/// Both runs that went through and runs that faulted are among `all`.
fn both_kinds(all: &[Outcome]) {
    assert!(all.iter().any(faulted), "no run faulted");
    assert!(all.iter().any(|o| !faulted(o)), "every run faulted");
}

#[test]
fn copy_loops_with_a_guard_at_the_head() {
    let mut all = Vec::new();
    for (size, stride) in [("dw", 8), ("w", 4), ("b", 1), ("dw", 3), ("h", 6)] {
        for n in [0i64, 1, 64, 96, 97, 100, 128] {
            for start in [0i64, 8, 120, 200] {
                // Copies [start, n) of the first half to the second.
                let src = format!(
                    "
                    mov %r6, %r1
                    add %r6, 100
                    mov %r3, {start}
                loop:
                    jge %r3, {n}, done
                    mov %r4, %r1
                    add %r4, %r3
                    ldx{size} %r5, [%r4+0]
                    mov %r4, %r6
                    add %r4, %r3
                    stx{size} [%r4+0], %r5
                    add %r3, {stride}
                    ja loop
                done:
                    mov %r0, %r3
                    exit"
                );
                all.push(agrees(&src, &bytes(200, n as u64)));
            }
        }
    }
    both_kinds(&all);
}

#[test]
fn sums_with_a_guard_at_the_back_edge_and_a_register_bound() {
    let mut all = Vec::new();
    for cond in ["jlt", "jle"] {
        for (start, off) in [
            (0i64, 0i16),
            (0, -1),
            (1, -1),
            (1, -2),
            (5, 3),
            (64, 0),
            (70, -70),
        ] {
            // Sums bytes r1[r3 + off] while r3 < r2 (or <=), r2 = the
            // memory's length; the address is taken before the increment.
            let src = format!(
                "
                mov %r3, {start}
                mov %r0, 0
            loop:
                mov %r4, %r1
                add %r4, %r3
                add %r3, 1
                ldxb %r5, [%r4{off:+}]
                add %r0, %r5
                {cond} %r3, %r2, loop
                exit"
            );
            for len in [1usize, 2, 63, 64, 65] {
                all.push(agrees(&src, &bytes(len, 7)));
            }
        }
    }
    both_kinds(&all);
}

#[test]
fn a_pointer_that_is_the_induction_variable_up_to_a_register() {
    let mut all = Vec::new();
    for end in [0i64, 1, 40, 64, 65, -1] {
        for (step, off) in [(1, 0), (1, -1), (2, 0), (16, 1)] {
            // Sums r1[off..end + off] (end -1: as far as r1 + 2^64 - 1:
            // the loop faults when it leaves the memory).
            let src = format!(
                "
                mov %r6, %r1
                add %r6, {end}
                mov %r3, %r1
                mov %r0, 0
            loop:
                jge %r3, %r6, done
                ldxb %r5, [%r3{off:+}]
                add %r0, %r5
                add %r3, {step}
                ja loop
            done:
                exit"
            );
            all.push(agrees(&src, &bytes(64, 3)));
        }
    }
    both_kinds(&all);
}

#[test]
fn loops_that_stop_early_inside_a_wider_bound() {
    // strcmp: the bound (4,096) is past the memory, but a zero byte or a
    // difference stops the loop first, or it runs off the end.
    let src = "
        mov %r3, 0
    loop:
        jge %r3, 4096, equal
        mov %r4, %r1
        add %r4, %r3
        ldxb %r5, [%r4+0]
        ldxb %r6, [%r4+32]
        jne %r5, %r6, differ
        jeq %r5, 0, equal
        add %r3, 1
        ja loop
    differ:
        mov %r0, %r5
        sub %r0, %r6
        exit
    equal:
        mov %r0, 0
        exit";
    let mut all = Vec::new();
    for at in [None, Some(0), Some(5), Some(31)] {
        for differ in [None, Some(3), Some(20)] {
            let mut mem = vec![b'a'; 64];
            if let Some(d) = differ {
                mem[32 + d] = b'b';
            }
            if let Some(z) = at {
                mem[z] = 0;
                mem[32 + z] = 0;
            }
            all.push(agrees(src, &mem));
        }
    }
    both_kinds(&all);
}

#[test]
fn bounded_offsets_a_continue_and_the_stack() {
    let mut all = Vec::new();
    // A histogram: a table of 8-byte counters at r1 + 64, indexed by
    // (byte & mask) * 8, bytes 0 to 63 of the memory; zero bytes skip to
    // the head (a jump to it from inside).
    for mask in [7, 15, 31] {
        let src = format!(
            "
            mov %r3, 0
        loop:
            jge %r3, 64, done
            mov %r4, %r1
            add %r4, %r3
            add %r3, 1
            ldxb %r5, [%r4+0]
            jeq %r5, 0, loop
            and %r5, {mask}
            lsh %r5, 3
            mov %r4, %r1
            add %r4, %r5
            ldxdw %r6, [%r4+64]
            add %r6, 1
            stxdw [%r4+64], %r6
            ja loop
        done:
            ldxdw %r0, [%r1+64]
            exit"
        );
        // (The table just fits, or its last counter is one byte short.)
        let table = (mask as usize + 1) * 8;
        for len in [64 + table - 1, 64 + table, 64 + 256] {
            let mut mem = bytes(len, mask);
            mem[10] = 0;
            all.push(agrees(&src, &mem));
        }
    }
    both_kinds(&all);
    all.clear();
    // Fills n bytes of the stack below r10 - top, then reads one back.
    for (top, n) in [(64, 64), (64, 65), (512, 512), (512, 513), (8, 1)] {
        let src = format!(
            "
            mov %r3, 0
        loop:
            jge %r3, {n}, done
            mov %r4, %r10
            add %r4, %r3
            stb [%r4-{top}], 7
            add %r3, 1
            ja loop
        done:
            ldxb %r0, [%r10-{top}]
            exit"
        );
        all.push(agrees(&src, &bytes(8, 1)));
    }
    both_kinds(&all);
}

#[test]
fn bounds_at_the_edges_of_the_arithmetic() {
    // Register bounds of 0, 1 and the largest values: the entry test must
    // not wrap into a false proof (the loop faults where the interpreter
    // does, or never runs).
    let mut all = Vec::new();
    for bound in [
        "0",
        "1",
        "-1",
        "-2",
        "0x3fffffffffffffff",
        "0x4000000000000000",
    ] {
        for start in ["0", "-8", "0x3ffffffffffffff8"] {
            let src = format!(
                "
                lddw %r2, {bound}
                lddw %r3, {start}
            loop:
                jge %r3, %r2, done
                mov %r4, %r1
                add %r4, %r3
                ldxdw %r5, [%r4+0]
                add %r3, 8
                ja loop
            done:
                mov %r0, %r3
                exit"
            );
            all.push(agrees(&src, &bytes(64, 5)));
        }
    }
    both_kinds(&all);
}
#[test]
fn joins_in_the_body_keep_only_what_every_way_in_agrees_on() {
    let mut all = Vec::new();
    // At `join`, r4 is r1 + r3 + 32 when r3 > 40, else r1: the way that
    // jumps there reads past 64 bytes.
    let src = "
        mov %r3, 0
        mov %r0, 0
    loop:
        jge %r3, 64, done
        mov %r4, %r1
        add %r4, %r3
        add %r4, 32
        jgt %r3, 40, join
        mov %r4, %r1
    join:
        ldxb %r5, [%r4+0]
        add %r0, %r5
        add %r3, 1
        ja loop
    done:
        exit";
    for len in [64, 96, 97] {
        all.push(agrees(src, &bytes(len, 9)));
    }
    // r3 grows by 1 before `join` only when it is even: an odd start
    // reads the byte below r1 + r3 - 1.
    for start in [0, 1, 2, 3] {
        let src = format!(
            "
            mov %r3, {start}
            mov %r0, 0
        loop:
            jge %r3, 64, done
            jset %r3, 1, join
            add %r3, 1
        join:
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4-2]
            add %r0, %r5
            add %r3, 1
            ja loop
        done:
            exit"
        );
        all.push(agrees(&src, &bytes(64, 9)));
    }
    both_kinds(&all);
}

#[test]
fn a_loop_that_goes_round_without_its_increment_runs_out_of_budget_where_it_should() {
    // A zero byte is made 1 and the loop goes back to its head without
    // growing r3: up to twice as many rounds as r3's range (no bound on
    // the rounds from r3 alone, so no budget test may be left out).
    let src = "
        mov %r3, 0
        mov %r0, 0
    loop:
        jge %r3, 64, done
        mov %r4, %r1
        add %r4, %r3
        ldxb %r5, [%r4+0]
        jne %r5, 0, go
        stb [%r4+0], 1
        ja loop
    go:
        add %r0, %r5
        add %r3, 1
        ja loop
    done:
        exit";
    // The same, the fix-up past the increment (a forward jump over it).
    let past = "
        mov %r3, 0
        mov %r0, 0
    loop:
        jge %r3, 64, done
        mov %r4, %r1
        add %r4, %r3
        ldxb %r5, [%r4+0]
        jeq %r5, 0, fix
        add %r0, %r5
        add %r3, 1
        ja loop
    fix:
        stb [%r4+0], 1
        ja loop
    done:
        exit";
    let mut all = Vec::new();
    for src in [src, past] {
        for zeros in [0, 1, 32, 64] {
            let mut mem = bytes(64, 11);
            for b in mem.iter_mut().take(zeros) {
                *b = 0;
            }
            all.push(agrees(src, &mem));
        }
    }
    assert!(all.iter().all(|o| !faulted(o)));
}

#[test]
fn loops_the_analysis_takes_are_entered_through_a_proof_and_others_are_not() {
    let proven = |src: &str| {
        let program = Program::new("hoist", assemble(src).unwrap()).unwrap();
        let mut helpers = Helpers::new();
        helpers.register_fn(0x100, "one", |_, _, _, _, _| 1);
        let p = PreparedProgram::new(&program, &helpers, Config::default()).unwrap();
        compile_checked(&Arc::new(p), Options::default())
            .unwrap()
            .proven_loops()
    };
    let copy = |body_extra: &str| {
        format!(
            "
            mov %r3, 0
        loop:
            jge %r3, 64, done
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4+0]
            {body_extra}
            add %r3, 1
            ja loop
        done:
            exit"
        )
    };
    assert_eq!(proven(&copy("")), Some(1));
    // Two loops one after the other.
    let first = copy("").replace("exit", "mov %r0, 0");
    let second = copy("").replace("loop", "again").replace("done", "end");
    assert_eq!(proven(&format!("{first}\n{second}")), Some(2));
    // A call in the body, or an address the loop cannot bound.
    assert_eq!(proven(&copy("call 0x100")), Some(0));
    assert_eq!(
        proven(
            "
            mov %r3, 0
            mov %r6, %r1
        loop:
            jge %r3, 64, done
            mul %r6, 1
            ldxb %r5, [%r6+0]
            add %r3, 1
            ja loop
        done:
            exit"
        ),
        Some(0)
    );
}
