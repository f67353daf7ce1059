//! The instruction budget in checked native code. Code that runs in one
//! frame tests the budget only at pc 0 and at loop heads; where the budget
//! may run out before the next test, the interpreter takes over (the
//! registers live there and the budget left) and faults where it runs out.
//! For every budget, on the closed path (`Vm::run` calling the code
//! itself) and the general one, with Cranelift's code and the baseline
//! generator's, the run must end as in the interpreter:
//! the same result or fault (pc, kind), instruction count and memory.

use std::sync::Arc;

use userbpf_jit::{jit_checked, JitError, Options, Tier};
use userbpf_vm::asm::assemble;
use userbpf_vm::interp::{CompiledProgram, PreparedProgram};
use userbpf_vm::memory::{Region, RegionKind};
use userbpf_vm::{Config, FaultKind, Helpers, Program, Vm};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Engine {
    Interpreter,
    /// Native code through `Vm::run` (closed code is called directly).
    Native,
    /// Native code with the memory added as a region: the general path.
    NativeGeneral,
    /// The baseline generator's checked code, both paths.
    Baseline,
    BaselineGeneral,
}

type Outcome = (Result<u64, (usize, FaultKind)>, u64, Vec<u8>);

/// The outcome of a run, `None` if the engine does not take the program
/// (the baseline generator and calls).
fn run(src: &str, helpers: &Helpers, mem: &[u8], budget: u64, engine: Engine) -> Option<Outcome> {
    let program = Program::new("budget", assemble(src).unwrap()).unwrap();
    let p = Arc::new(
        PreparedProgram::new(
            &program,
            helpers,
            Config {
                budget: Some(budget),
            },
        )
        .unwrap(),
    );
    let tier = match engine {
        Engine::Baseline | Engine::BaselineGeneral => Tier::Baseline,
        _ => Tier::Optimized,
    };
    if engine != Engine::Interpreter {
        let options = Options {
            tier,
            ..Options::default()
        };
        match jit_checked(&p, options) {
            Ok(_) => {}
            Err(JitError::Baseline { .. }) => return None,
            Err(e) => panic!("{e}"),
        }
    }
    let mut vm = Vm::from_prepared(p);
    let mut m = mem.to_vec();
    let r = match engine {
        Engine::NativeGeneral | Engine::BaselineGeneral => {
            let region = Region::from_mut_slice(&mut m, RegionKind::Context);
            // SAFETY: `m` outlives the run.
            unsafe { vm.run_with_regions([region.start, region.len, 0, 0, 0], &[region], None) }
        }
        _ => vm.run(&mut m),
    };
    Some((r.map_err(|f| (f.pc, f.kind)), vm.last_insn_count(), m))
}

/// Every budget from 1 to `max` gives the interpreter's outcome on both
/// native paths; returns how many budgets ran out.
fn every_budget_agrees(src: &str, helpers: &Helpers, mem: &[u8], max: u64) -> usize {
    let mut ran_out = 0;
    for budget in 1..=max {
        let expected = run(src, helpers, mem, budget, Engine::Interpreter).unwrap();
        if matches!(&expected.0, Err((_, FaultKind::BudgetExhausted { .. }))) {
            ran_out += 1;
        }
        for engine in [
            Engine::Native,
            Engine::NativeGeneral,
            Engine::Baseline,
            Engine::BaselineGeneral,
        ] {
            if let Some(got) = run(src, helpers, mem, budget, engine) {
                assert_eq!(got, expected, "budget {budget}, {engine:?}:\n{src}");
            }
        }
    }
    ran_out
}

/// Whether checked native code for `src` is closed (runs without a host).
fn closed(src: &str, helpers: &Helpers) -> bool {
    let program = Program::new("budget", assemble(src).unwrap()).unwrap();
    let p = PreparedProgram::new(&program, helpers, Config { budget: Some(10) }).unwrap();
    jit_checked(&Arc::new(p), Options::default())
        .unwrap()
        .closed_entry()
        .is_some()
}

#[test]
fn a_loop_that_stores_stops_where_the_interpreter_stops() {
    // 30 iterations, each storing a byte before the budget can run out at
    // the next instruction: memory shows where the run stopped.
    let src = "
        mov %r6, 0
        mov %r7, %r1
    loop:
        stb [%r7+0], 1
        add %r7, 1
        add %r6, 3
        jlt %r6, 90, loop
        mov %r0, %r6
        exit";
    let h = Helpers::new();
    assert!(closed(src, &h));
    let ran_out = every_budget_agrees(src, &h, &[0; 32], 130);
    // 124 instructions in all: every smaller budget runs out.
    assert_eq!(ran_out, 123);
}

#[test]
fn nested_loops_keep_the_registers_live_at_their_heads() {
    // r8 is live at both heads, r9 at neither (written before read), r2 at
    // the inner one: whatever the code leaves the interpreter, the sums
    // match.
    let src = "
        mov %r8, 0
        mov %r2, 0
    outer:
        mov %r3, 0
    inner:
        add %r8, %r3
        mov %r9, %r8
        lsh %r9, 1
        add %r8, %r2
        add %r3, 1
        jlt %r3, 5, inner
        stxdw [%r1+0], %r8
        add %r2, 1
        jlt %r2, 4, outer
        mov %r0, %r8
        add %r0, %r9
        exit";
    let h = Helpers::new();
    let ran_out = every_budget_agrees(src, &h, &[0; 16], 160);
    // 2 + 4 * (1 + 5 * 6 + 3) + 3 = 141 instructions in all.
    assert_eq!(ran_out, 140);
}

#[test]
fn helper_calls_in_a_loop_stop_where_the_interpreter_stops() {
    let mut h = Helpers::new();
    h.register_fn(0x100, "sum5", |a, b, c, d, e| {
        a.wrapping_add(b)
            .wrapping_add(c)
            .wrapping_add(d)
            .wrapping_add(e)
    });
    let src = "
        mov %r6, %r1
        mov %r7, 0
    loop:
        mov %r1, %r7
        mov %r2, 2
        mov %r3, 3
        mov %r4, 4
        mov %r5, 5
        call 0x100
        stxdw [%r6+0], %r0
        add %r7, 1
        jlt %r7, 10, loop
        ldxdw %r0, [%r6+0]
        exit";
    // (Not closed: helpers need the run's state, the general path.)
    assert!(!closed(src, &h));
    let ran_out = every_budget_agrees(src, &h, &[0; 8], 110);
    // 94 instructions in all.
    assert_eq!(ran_out, 93);
}

#[test]
fn a_helper_that_fails_or_ends_the_program_counts_the_interpreters_instructions() {
    // The call is the last instruction run: its block's instructions after
    // it are not counted, whether the helper fails or ends the program.
    let mut h = Helpers::new();
    h.register(
        0x100,
        "fails_on_7",
        userbpf_vm::helpers::HelperProto::SCALARS,
        |_, a| {
            if a[0] == 7 {
                return Err(userbpf_vm::helpers::HelperError::Failed("seven".into()));
            }
            Ok(a[0] + 1)
        },
    );
    let src = "
        mov %r6, 0
    loop:
        mov %r1, %r6
        call 0x100
        add %r6, 1
        mov %r0, %r6
        jlt %r6, 10, loop
        exit";
    let ran_out = every_budget_agrees(src, &h, &[0; 8], 60);
    assert!(ran_out > 0);
}

#[test]
fn straight_code_and_tail_positions_agree_too() {
    // No loop: only pc 0 tests, for the whole program.
    let src = "
        ldxdw %r2, [%r1+0]
        add %r2, 5
        stxdw [%r1+8], %r2
        jeq %r2, 5, five
        mov %r0, 1
        exit
    five:
        mov %r0, 2
        exit";
    let ran_out = every_budget_agrees(src, &Helpers::new(), &[0; 16], 10);
    assert_eq!(ran_out, 5);
}

#[test]
fn faults_inside_a_block_count_the_interpreters_instructions() {
    // An access past the memory in the middle of a block, and a
    // misaligned atomic: the instructions after it were charged with the
    // block but never ran.
    for src in [
        "mov %r2, 1\nmov %r3, 2\nldxdw %r0, [%r1+100]\nmov %r4, 3\nexit",
        "mov %r2, 1\nmov %r3, 2\nlock add [%r1+4], %r2\nmov %r4, 3\nmov %r0, 0\nexit",
    ] {
        let ran_out = every_budget_agrees(src, &Helpers::new(), &[0; 16], 8);
        assert_eq!(ran_out, 2, "{src}");
    }
}

#[test]
fn a_stop_for_the_interpreter_leaves_nothing_to_the_next_run() {
    // r6 is live at the loop head (read after the loop), so a stop there
    // hands it to the interpreter; the next run must still start with r6
    // zero, as every interpreter run does.
    // (The branch never taken makes the loop head's test ask for more
    // than the run needs: the code stops for the interpreter near the end
    // of a run that then completes.)
    let long: String = (0..20).map(|_| "add %r8, 1\n").collect();
    let src = format!(
        "
        mov %r0, %r6
        mov %r6, 77
        mov %r7, 0
    loop:
        add %r7, 1
        jeq %r7, 1000, long
        jlt %r7, 50, loop
        add %r0, %r6
        exit
    long:
        {long}
        ja loop"
    );
    let h = Helpers::new();
    for tier in [Tier::Optimized, Tier::Baseline] {
        // Enough budget for the run (3 + 49 * 3 + 5 instructions).
        let program = Program::new("budget", assemble(&src).unwrap()).unwrap();
        let p = Arc::new(PreparedProgram::new(&program, &h, Config { budget: Some(160) }).unwrap());
        let options = Options {
            tier,
            ..Options::default()
        };
        jit_checked(&p, options).unwrap();
        let mut vm = Vm::from_prepared(p);
        for run in 0..3 {
            assert_eq!(vm.run(&mut [0; 8]), Ok(77), "{tier:?}, run {run}");
            assert_eq!(vm.last_insn_count(), 155, "{tier:?}, run {run}");
        }
    }
}

struct Array(Arc<PreparedProgram>);

impl userbpf_vm::interp::ProgramArray for Array {
    fn get(&self, map: u64, index: u32) -> Option<Arc<PreparedProgram>> {
        (map == 0xa77a && index == 0).then(|| Arc::clone(&self.0))
    }
}

#[test]
fn tail_call_targets_stop_where_the_interpreter_stops() {
    // The target loops; it is reached by a tail call from the program's
    // first frame and from a subprogram (which returns its r0 to the
    // caller). The run's budget runs out in the target, or just suffices.
    let target = "
        mov %r0, 0
    loop:
        add %r0, 1
        jlt %r0, 20, loop
        exit";
    let entries = [
        "lddw %r2, 0xa77a\nmov %r3, 0\ncall 12\nexit",
        "call local f\nadd %r0, 1\nexit\nf:\nlddw %r2, 0xa77a\nmov %r3, 0\ncall 12\nmov %r0, 100\nexit",
    ];
    let h = Helpers::new();
    for entry in entries {
        for tier in [None, Some(Tier::Optimized), Some(Tier::Baseline)] {
            for budget in 1..=60 {
                let prepare = |src: &str, jit: bool| {
                    let program = Program::new("tail", assemble(src).unwrap()).unwrap();
                    let config = Config {
                        budget: Some(budget),
                    };
                    let p = Arc::new(PreparedProgram::new(&program, &h, config).unwrap());
                    if let (true, Some(tier)) = (jit, tier) {
                        let options = Options {
                            tier,
                            ..Options::default()
                        };
                        // (Both tiers take both entries.)
                        jit_checked(&p, options).unwrap();
                    }
                    p
                };
                let run = |jit: bool| {
                    let t = prepare(target, jit);
                    let mut vm = Vm::from_prepared(prepare(entry, jit));
                    vm.set_program_array(Some(Arc::new(Array(t))));
                    let r = vm.run(&mut [0; 8]).map_err(|f| (f.pc, f.kind));
                    (r, vm.last_insn_count())
                };
                assert_eq!(run(true), run(false), "{tier:?}, budget {budget}:\n{entry}");
            }
        }
    }
}
