//! Tiered compiles of verified programs: the baseline generator's code at
//! once, Cranelift's in the background, and runs that switch from one to
//! the other (in several threads at once) without a visible difference,
//! in verified and in checked mode.

use std::sync::Arc;

use userbpf_jit::{jit_checked, jit_verified, CodeTier, JitError, Options, Tier};
use userbpf_verifier::Verified;
use userbpf_vm::asm::assemble;
use userbpf_vm::helpers::{HelperError, HelperProto};
use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::{Config, Helpers, Program, Vm};

/// Sums the 64 bytes of the memory, weighted, and stores the sum.
const SUM: &str = "
    mov %r0, 0
    mov %r2, 0
loop:
    mov %r3, %r1
    add %r3, %r2
    ldxb %r4, [%r3+0]
    mul %r0, 31
    add %r0, %r4
    add %r2, 1
    jlt %r2, 56, loop
    stxdw [%r1+56], %r0
    exit";

fn prepared(src: &str, helpers: &Helpers) -> Arc<PreparedProgram> {
    prepared_insns(assemble(src).unwrap(), helpers, None)
}

/// `insns` prepared with `helpers` and the instruction budget `budget`.
fn prepared_insns(
    insns: Vec<userbpf_vm::insn::Insn>,
    helpers: &Helpers,
    budget: Option<u64>,
) -> Arc<PreparedProgram> {
    let program = Program::new("tiers", insns).unwrap();
    Arc::new(PreparedProgram::new(&program, helpers, Config { budget }).unwrap())
}

fn verified(p: &Arc<PreparedProgram>) -> Verified<Arc<PreparedProgram>> {
    // SAFETY: the test programs stay inside the 64 bytes they are given
    // and terminate.
    unsafe { Verified::assume_verified(Arc::clone(p)) }
}

fn tiered() -> Options {
    Options {
        tier: Tier::Tiered,
        ..Options::default()
    }
}

fn memory() -> Vec<u8> {
    (0..64u8).map(|i| i.wrapping_mul(37)).collect()
}

/// The interpreter's result and memory for `SUM`.
fn expected() -> (u64, Vec<u8>) {
    let mut vm = Vm::from_prepared(prepared(SUM, &Helpers::new()));
    let mut mem = memory();
    let r0 = vm.run(&mut mem).unwrap();
    (r0, mem)
}

#[test]
fn a_tiered_program_runs_at_once_then_on_cranelifts_code() {
    let (r0, after) = expected();
    let p = prepared(SUM, &Helpers::new());
    let code = jit_verified(&verified(&p), tiered()).unwrap();
    let mut vm = Vm::from_prepared(Arc::clone(&p));
    // Runs before the switch (if the background compile is not done yet)
    // and after it agree with the interpreter.
    for _ in 0..10_000 {
        let mut mem = memory();
        assert_eq!(vm.run(&mut mem), Ok(r0));
        assert_eq!(mem, after);
        if code.tier() == CodeTier::Optimized {
            break;
        }
    }
    assert!(code.wait_optimized(), "Cranelift's code never came in");
    assert_eq!(code.tier(), CodeTier::Optimized);
    assert!(code.optimized_compile_time().is_some());
    let mut mem = memory();
    assert_eq!(vm.run(&mut mem), Ok(r0));
    assert_eq!(mem, after);
}

#[test]
fn threads_running_through_the_switch_all_agree() {
    let (r0, after) = expected();
    for _ in 0..5 {
        let p = prepared(SUM, &Helpers::new());
        let code = jit_verified(&verified(&p), tiered()).unwrap();
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let (p, code, after) = (Arc::clone(&p), Arc::clone(&code), after.clone());
                std::thread::spawn(move || {
                    let mut vm = Vm::from_prepared(p);
                    let mut optimized_runs = 0;
                    while optimized_runs < 200 {
                        if code.tier() == CodeTier::Optimized {
                            optimized_runs += 1;
                        }
                        let mut mem = memory();
                        assert_eq!(vm.run(&mut mem), Ok(r0));
                        assert_eq!(mem, after);
                    }
                })
            })
            .collect();
        for r in runs {
            r.join().unwrap();
        }
    }
}

#[test]
fn baseline_code_stays_baseline_code() {
    let (r0, after) = expected();
    let p = prepared(SUM, &Helpers::new());
    let options = Options {
        tier: Tier::Baseline,
        ..Options::default()
    };
    let code = jit_verified(&verified(&p), options).unwrap();
    assert!(!code.wait_optimized());
    assert_eq!(code.tier(), CodeTier::Baseline);
    assert!(code.asm().is_none());
    assert!(!code.code().is_empty());
    let mut mem = memory();
    assert_eq!(Vm::from_prepared(p).run(&mut mem), Ok(r0));
    assert_eq!(mem, after);
}

#[test]
fn programs_the_baseline_does_not_take_go_to_cranelift() {
    // `callx` (here on a helper's id, the conformance suite's convention)
    // in checked code: the baseline generator refuses it (checked code may
    // forge a call of the first function), naming the pc.
    let mut h = Helpers::new();
    h.register_fn(1, "twice", |a, _, _, _, _| a.wrapping_mul(2));
    let src = "r1 = 21\nr2 = 1\ncallx r2\nexit";
    let checked = |src: &str| prepared_insns(assemble(src).unwrap(), &h, Some(100));
    let options = Options {
        tier: Tier::Baseline,
        ..Options::default()
    };
    let e = jit_checked(&checked(src), options).unwrap_err();
    assert!(
        matches!(&e, JitError::Baseline { reason, .. } if reason.contains("pc 2")),
        "{e}"
    );
    // Tiered: Cranelift at once.
    let p = checked(src);
    let code = jit_checked(&p, tiered()).unwrap();
    assert_eq!(code.tier(), CodeTier::Optimized);
    assert_eq!(Vm::from_prepared(Arc::clone(&p)).run(&mut []), Ok(42));
    // Verified code's `callx` (a helper's id, a subprogram) is the
    // baseline generator's.
    let func = {
        let mut insns =
            assemble("r1 = 20\nr2 = 0 ll\ncallx r2\nr0 += 1\nexit\nr0 = r1\nr0 *= 2\nexit")
                .unwrap();
        insns[1].src = userbpf_vm::insn::op::PSEUDO_FUNC;
        insns[1].imm = 4;
        insns
    };
    for (insns, want) in [(assemble(src).unwrap(), 42), (func, 41)] {
        let p = prepared_insns(insns, &h, None);
        let code = jit_verified(&verified(&p), options).unwrap();
        assert_eq!(code.tier(), CodeTier::Baseline);
        assert_eq!(Vm::from_prepared(p).run(&mut []), Ok(want));
    }
    // Checked code whose control leaves a function otherwise than by a
    // call (a jump into another function, a fall into the next one, a
    // call of the first function): each function's code assumes its own
    // frame, so these are Cranelift's too, and run as the interpreter
    // runs them.
    let first_called = {
        // (f calls pc 0: its call's offset patched.)
        let mut insns = assemble(
            "mov %r0, 1\njne %r1, 0, out\nmov %r1, 1\ncall local f\nout:\nexit\nf:\ncall local f\nexit",
        )
        .unwrap();
        insns[5].imm = -6;
        insns
    };
    for insns in [
        assemble("mov %r0, 1\njeq %r1, 0, g\ncall local f\nexit\nf:\nmov %r0, 2\ng:\nexit")
            .unwrap(),
        assemble("mov %r0, 1\ncall local f\nmov %r0, 5\nf:\nmov %r0, 2\nexit").unwrap(),
        first_called,
    ] {
        let src = userbpf_vm::disasm::disassemble(&insns).unwrap_or_default();
        let p = prepared_insns(insns, &Helpers::new(), Some(1000));
        let e = jit_checked(&p, options).unwrap_err();
        assert!(matches!(e, JitError::Baseline { .. }), "{e}\n{src}");
        let mut interp = Vm::from_prepared(Arc::clone(&p));
        interp.set_use_compiled(false);
        let code = jit_checked(&p, tiered()).unwrap();
        assert_eq!(code.tier(), CodeTier::Optimized);
        let mut vm = Vm::from_prepared(p);
        for mem in [vec![0u8; 8], vec![]] {
            let want = interp.run(&mut mem.clone()).map_err(|f| (f.pc, f.kind));
            assert_eq!(
                vm.run(&mut mem.clone()).map_err(|f| (f.pc, f.kind)),
                want,
                "{src}"
            );
        }
    }
}

/// Calls a helper on every byte of the memory and adds the results; a
/// helper that fails on a byte (0xff) ends the run with a fault at the
/// call.
const HELPED: &str = "
    mov %r6, %r1
    mov %r7, 0
    mov %r8, 0
loop:
    mov %r2, %r6
    add %r2, %r7
    ldxb %r1, [%r2+0]
    mov %r3, 5
    mov %r4, 7
    mov %r5, 11
    call 0x100
    add %r8, %r0
    add %r7, 1
    jlt %r7, 64, loop
    mov %r0, %r8
    exit";

fn helpers() -> Helpers {
    let mut h = Helpers::new();
    h.register(0x100, "mix", HelperProto::SCALARS, |_, a| {
        if a[0] == 0xff {
            return Err(HelperError::Failed("byte 0xff".into()));
        }
        Ok(a[0] * a[2] + a[3] * a[4])
    });
    h
}

#[test]
fn helper_calls_run_on_baseline_code_then_on_cranelifts() {
    // The interpreter's results: a sum, and a fault on a memory with 0xff.
    let mut clean = memory();
    clean.iter_mut().for_each(|b| *b &= 0x7f);
    let mut bad = clean.clone();
    bad[40] = 0xff;
    let interp = |mem: &[u8]| {
        let mut vm = Vm::from_prepared(prepared(HELPED, &helpers()));
        vm.set_use_compiled(false);
        vm.run(&mut mem.to_vec()).map_err(|f| (f.pc, f.kind))
    };
    let (sum, fault) = (interp(&clean), interp(&bad));
    assert!(sum.is_ok() && fault.is_err());
    for checked in [false, true] {
        // Baseline code alone (it calls out: not closed), then tiered.
        let p = prepared(HELPED, &helpers());
        let options = Options {
            tier: Tier::Baseline,
            ..Options::default()
        };
        let code = if checked {
            jit_checked(&p, options)
        } else {
            jit_verified(&verified(&p), options)
        }
        .unwrap();
        assert_eq!(code.tier(), CodeTier::Baseline);
        let mut vm = Vm::from_prepared(Arc::clone(&p));
        let run = |vm: &mut Vm, mem: &[u8]| vm.run(&mut mem.to_vec()).map_err(|f| (f.pc, f.kind));
        assert_eq!(run(&mut vm, &clean), sum, "checked: {checked}");
        if checked {
            // (Verified code is only run where the verifier would accept
            // it: the helper's fault is a run-time one, fine either way.)
            assert_eq!(run(&mut vm, &bad), fault, "checked: {checked}");
        } else {
            assert_eq!(run(&mut vm, &bad), fault);
        }
        let p = prepared(HELPED, &helpers());
        let code = if checked {
            jit_checked(&p, tiered())
        } else {
            jit_verified(&verified(&p), tiered())
        }
        .unwrap();
        let mut vm = Vm::from_prepared(Arc::clone(&p));
        assert_eq!(run(&mut vm, &clean), sum);
        assert!(code.wait_optimized());
        assert_eq!(code.tier(), CodeTier::Optimized);
        assert_eq!(run(&mut vm, &clean), sum);
        assert_eq!(run(&mut vm, &bad), fault);
    }
}

#[test]
fn checked_programs_tier_up_too() {
    let (r0, after) = expected();
    let p = prepared(SUM, &Helpers::new());
    let code = jit_checked(&p, tiered()).unwrap();
    assert!(code.is_checked());
    let mut vm = Vm::from_prepared(Arc::clone(&p));
    let mut mem = memory();
    assert_eq!(vm.run(&mut mem), Ok(r0));
    assert_eq!(mem, after);
    assert!(code.wait_optimized());
    assert_eq!(code.tier(), CodeTier::Optimized);
    let mut mem = memory();
    assert_eq!(vm.run(&mut mem), Ok(r0));
    assert_eq!(mem, after);
    // A fault on either tier is the interpreter's.
    let mut short = [0u8; 16];
    let fault = vm.run(&mut short).unwrap_err();
    let mut interp = Vm::from_prepared(prepared(SUM, &Helpers::new()));
    assert_eq!(interp.run(&mut [0u8; 16]).unwrap_err().pc, fault.pc);
}

/// main calls f, f calls g: each frame keeps its r6 and its stack slot.
const CALLS: &str = "
    mov %r6, 100
    mov %r1, 5
    stxdw [%r10-8], %r6
    call local f
    ldxdw %r2, [%r10-8]
    add %r0, %r2
    add %r0, %r6
    exit
f:
    mov %r6, %r1
    stxdw [%r10-8], %r1
    mov %r1, 7
    call local g
    ldxdw %r3, [%r10-8]
    mul %r0, %r3
    add %r0, %r6
    exit
g:
    mov %r6, 1000
    stxdw [%r10-16], %r6
    mov %r0, %r1
    ldxdw %r2, [%r10-16]
    add %r0, %r2
    exit";

#[test]
fn bpf_to_bpf_calls_run_on_baseline_code() {
    let interp = |src: &str| {
        let mut vm = Vm::from_prepared(prepared(src, &Helpers::new()));
        vm.set_use_compiled(false);
        vm.run(&mut []).map_err(|f| (f.pc, f.kind))
    };
    let baseline = Options {
        tier: Tier::Baseline,
        ..Options::default()
    };
    let want = interp(CALLS);
    assert_eq!(want, Ok((7 + 1000) * 5 + 5 + 100 + 100));
    let p = prepared(CALLS, &Helpers::new());
    let code = jit_verified(&verified(&p), baseline).unwrap();
    assert_eq!(code.tier(), CodeTier::Baseline);
    let mut vm = Vm::from_prepared(Arc::clone(&p));
    for _ in 0..3 {
        assert_eq!(vm.run(&mut []).map_err(|f| (f.pc, f.kind)), want);
    }
    // Calls past the frames a run may push: the interpreter's fault, at
    // the same call (the baseline code tests the depth before it pushes a
    // frame: no frame goes below the stack).
    let deep = "mov %r0, 1\ncall local f\nexit\nf:\ncall local f\nexit";
    let want = interp(deep);
    assert!(
        matches!(
            want,
            Err((_, userbpf_vm::FaultKind::CallDepthExceeded { .. }))
        ),
        "{want:?}"
    );
    let p = prepared(deep, &Helpers::new());
    jit_verified(&verified(&p), baseline).unwrap();
    let mut vm = Vm::from_prepared(p);
    assert_eq!(vm.run(&mut []).map_err(|f| (f.pc, f.kind)), want);
    assert_eq!(vm.run(&mut []).map_err(|f| (f.pc, f.kind)), want);
    // A helper that fails two frames down: the fault, out of every frame.
    let failing = "
        mov %r6, 3
        call local f
        add %r0, %r6
        exit
    f:
        mov %r6, 9
        call local g
        add %r0, %r6
        exit
    g:
        mov %r1, 0xff
        call 0x100
        exit";
    let p = prepared(failing, &helpers());
    let mut interp = Vm::from_prepared(prepared(failing, &helpers()));
    interp.set_use_compiled(false);
    let want = interp.run(&mut []).map_err(|f| (f.pc, f.kind));
    assert!(want.is_err());
    jit_verified(&verified(&p), baseline).unwrap();
    let mut vm = Vm::from_prepared(p);
    for _ in 0..3 {
        assert_eq!(vm.run(&mut []).map_err(|f| (f.pc, f.kind)), want);
    }
    // Checked code with subprograms: every block tests the budget (a
    // helper call ends what a test covers); runs with every budget from
    // ample to none stop where the interpreter stops (fault, pc,
    // instructions), a helper failing at the last instruction the budget
    // allows included.
    let with_budget = |src: &str, budget: u64, native: bool| {
        let p = prepared_insns(assemble(src).unwrap(), &helpers(), Some(budget));
        if native {
            let code = jit_checked(&p, baseline).unwrap();
            assert_eq!(code.tier(), CodeTier::Baseline);
        }
        let mut vm = Vm::from_prepared(p);
        let r = vm.run(&mut []).map_err(|f| (f.pc, f.kind));
        (r, vm.last_insn_count())
    };
    let flat = "mov %r1, 0xff\ncall 0x100\nexit";
    for src in [flat, CALLS, failing] {
        let (_, count) = with_budget(src, 1 << 20, false);
        for budget in [1 << 20].into_iter().chain(1..=count + 1) {
            assert_eq!(
                with_budget(src, budget, true),
                with_budget(src, budget, false),
                "budget {budget}:\n{src}"
            );
        }
    }
}
