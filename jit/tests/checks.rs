//! Checked mode's memory checks in native code: the inline stack and
//! region-cache paths accept exactly what the interpreter accepts.

use std::sync::Arc;

use userbpf_jit::{jit_checked, Options};
use userbpf_vm::asm::assemble;
use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::memory::{Access, Region, RegionKind};
use userbpf_vm::{Config, Fault, FaultKind, Helpers, Program, Vm};

fn vms(src: &str) -> (Vm, Vm) {
    let program = Program::new("checks", assemble(src).unwrap()).unwrap();
    let make = |jit: bool| {
        let p =
            Arc::new(PreparedProgram::new(&program, &Helpers::new(), Config::default()).unwrap());
        if jit {
            jit_checked(&p, Options::default()).unwrap();
        }
        Vm::from_prepared(p)
    };
    (make(false), make(true))
}

/// Runs with a read-only region `ro` (r2) and the writable memory `rw`
/// (r1) on both engines: same result.
fn both(src: &str, rw: &mut [u8], ro: &[u8]) -> Result<u64, Fault> {
    let (mut interp, mut jit) = vms(src);
    let ro_region = Region::new(ro.as_ptr(), ro.len(), false, RegionKind::Other);
    let mut results = Vec::new();
    for vm in [&mut interp, &mut jit] {
        let mut mem = rw.to_vec();
        let rw_region = Region::from_mut_slice(&mut mem, RegionKind::Context);
        // SAFETY: both regions outlive the run.
        let r = unsafe {
            vm.run_with_regions(
                [rw_region.start, ro_region.start, 0, 0, 0],
                &[rw_region, ro_region],
                None,
            )
        };
        results.push((r, mem));
    }
    // Faults compare without their address (each engine ran on its own
    // copy of the memory).
    let key = |(r, mem): &(Result<u64, Fault>, Vec<u8>)| {
        (
            r.as_ref()
                .map_err(|f| (f.pc, f.len, f.kind.clone()))
                .copied(),
            mem.clone(),
        )
    };
    assert_eq!(
        key(&results[0]),
        key(&results[1]),
        "interpreter and JIT differ on\n{src}"
    );
    rw.copy_from_slice(&results[1].1);
    results.swap_remove(1).0
}

#[test]
fn a_cached_read_only_region_still_refuses_writes() {
    let ro = [7u8; 16];
    let mut rw = [0u8; 16];
    // Read the read-only region (caching it), then write to it.
    let r = both(
        "ldxdw %r3, [%r2]\nstxdw [%r1], %r3\nstxdw [%r2+8], %r3\nmov %r0, 1\nexit",
        &mut rw,
        &ro,
    );
    let f = r.unwrap_err();
    assert!(matches!(f.kind, FaultKind::ReadOnly { .. }), "{f}");
    assert_eq!(f.pc, 2);
    assert_eq!(&rw[..8], &[7; 8], "the first store happened");
}

#[test]
fn a_cached_region_refuses_accesses_past_its_end() {
    let ro = [1u8; 16];
    let mut rw = [0u8; 16];
    for (src, ok) in [
        ("ldxdw %r0, [%r2+8]\nexit", true),
        ("ldxdw %r0, [%r2]\nldxdw %r0, [%r2+9]\nexit", false),
        ("ldxdw %r0, [%r2]\nldxb %r0, [%r2+16]\nexit", false),
        ("ldxdw %r0, [%r2]\nldxdw %r0, [%r2-1]\nexit", false),
        (
            "ldxdw %r0, [%r2]\nmov %r3, -8\nadd %r3, %r2\nldxdw %r0, [%r3]\nexit",
            false,
        ),
        (
            "ldxw %r0, [%r1+12]\nstw [%r1+12], 5\nldxw %r0, [%r1+12]\nexit",
            true,
        ),
        ("stw [%r1+12], 5\nstdw [%r1+12], 5\nexit", false),
    ] {
        let r = both(src, &mut rw, &ro);
        assert_eq!(r.is_ok(), ok, "{src}: {r:?}");
        if let Err(f) = r {
            assert_eq!(
                f.kind,
                FaultKind::OutOfBounds {
                    access: if src.contains("stdw") {
                        Access::Write
                    } else {
                        Access::Read
                    }
                },
                "{src}"
            );
        }
    }
}

/// Runs `src` twice with `mem` (through [`Vm::run`]) on the interpreter
/// and on checked native code, which must be closed (no call-outs: the VM
/// runs it without a run's state). Results, faults (pc, offset in `mem`,
/// kind), instruction counts and memory effects must be the interpreter's.
/// Returns the native code's result on a fresh copy of `mem`.
fn closed_same(src: &str, mem: &[u8], budget: Option<u64>) -> Result<u64, Fault> {
    type Runs = Vec<(Result<u64, (usize, Option<u64>, u64, FaultKind)>, u64)>;
    let program = Program::new("closed", assemble(src).unwrap()).unwrap();
    let mut seen = Vec::new();
    for jit in [false, true] {
        let p =
            Arc::new(PreparedProgram::new(&program, &Helpers::new(), Config { budget }).unwrap());
        if jit {
            let code = jit_checked(&p, Options::default()).unwrap();
            assert!(
                userbpf_vm::interp::CompiledProgram::closed_entry(&*code).is_some(),
                "not closed:\n{src}"
            );
        }
        let mut vm = Vm::from_prepared(p);
        let mut m = mem.to_vec();
        let base = m.as_ptr() as u64;
        let len = m.len() as u64;
        // Addresses compare as offsets into `mem` (each VM has its own
        // stack: addresses elsewhere compare as `None`).
        let offset = move |a: u64| Some(a.wrapping_sub(base)).filter(|&o| o < len + 64);
        let mut runs = Vec::new();
        // Twice: the second run starts from what the first left behind.
        for _ in 0..2 {
            let r = vm.run(&mut m);
            runs.push((
                r.clone().map_err(|f| (f.pc, offset(f.addr), f.len, f.kind)),
                vm.last_insn_count(),
            ));
        }
        seen.push((runs, m, vm.run(&mut mem.to_vec())));
    }
    let key = |s: &(Runs, Vec<u8>, Result<u64, Fault>)| (s.0.clone(), s.1.clone());
    assert_eq!(
        key(&seen[0]),
        key(&seen[1]),
        "interpreter and closed JIT differ on\n{src}"
    );
    seen.swap_remove(1).2
}

#[test]
fn closed_runs_report_what_the_interpreter_reports() {
    let mem: Vec<u8> = (0..32u8).collect();
    // A plain result, memory written in place.
    assert_eq!(
        closed_same(
            "ldxdw %r2, [%r1+8]\nadd %r2, 1\nstxdw [%r1+16], %r2\nmov %r0, %r2\nexit",
            &mem,
            None
        ),
        Ok(u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]) + 1)
    );
    // Past the end of the context: out of bounds, at the load.
    let r = closed_same("ldxdw %r0, [%r1+28]\nexit", &mem, None);
    assert!(
        matches!(&r, Err(f) if f.pc == 0 && matches!(f.kind, FaultKind::OutOfBounds { access: Access::Read })),
        "{r:?}"
    );
    // Below the frame: out of bounds, a write.
    let r = closed_same("stdw [%r10-520], 1\nmov %r0, 0\nexit", &mem, None);
    assert!(
        matches!(&r, Err(f) if matches!(f.kind, FaultKind::OutOfBounds { access: Access::Write })),
        "{r:?}"
    );
    // The budget runs out inside a loop, at the interpreter's pc.
    let r = closed_same(
        "mov %r0, 0\nloop:\nadd %r0, 1\njlt %r0, 1000, loop\nexit",
        &mem,
        Some(100),
    );
    assert!(
        matches!(&r, Err(f) if matches!(f.kind, FaultKind::BudgetExhausted { limit: 100 })),
        "{r:?}"
    );
    // Stack written by one run is zero in the next.
    assert_eq!(
        closed_same("ldxdw %r0, [%r10-8]\nstdw [%r10-8], 7\nexit", &mem, None),
        Ok(0)
    );
    // bpf-to-bpf calls nest frames; too deep a recursion faults.
    let r = closed_same("call local f\nexit\nf:\ncall local f\nexit", &mem, None);
    assert!(
        matches!(&r, Err(f) if matches!(f.kind, FaultKind::CallDepthExceeded { .. })),
        "{r:?}"
    );
}

#[test]
fn grouped_accesses_fall_back_to_their_own_checks() {
    // Accesses through one register in a block share one inline test;
    // when it fails (another region, the stack, a bad offset), each checks
    // itself: same results, same faulting pc as the interpreter.
    let ro = [3u8; 16];
    let mut rw = [0u8; 16];
    for (src, expect) in [
        // Through a copy of r10: the stack, not the cached region.
        (
            "mov %r2, %r10\nadd %r2, -16\nstdw [%r2], 4\nldxdw %r0, [%r2]\nldxdw %r3, [%r2+8]\nexit",
            Ok(4),
        ),
        // A read-only region: the loads pass, the store faults (pc 2).
        ("ldxb %r0, [%r2]\nldxb %r3, [%r2+15]\nstb [%r2+1], 1\nexit", Err(2)),
        // The last of three is past the end (pc 2).
        (
            "ldxb %r0, [%r1]\nldxb %r3, [%r1+8]\nldxb %r3, [%r1+16]\nexit",
            Err(2),
        ),
        // Far apart, both inside: one test covers them.
        ("stb [%r1], 9\nstb [%r1+15], 9\nldxb %r0, [%r1+15]\nexit", Ok(9)),
        // A load into its base register moves the base: the next access
        // (now through address 0) faults (found by jit_differential).
        ("ldxb %r1, [%r1]\nldxdw %r0, [%r1+5]\nexit", Err(1)),
        ("ldxb %r0, [%r1+1]\nldxb %r1, [%r1]\nldxdw %r0, [%r1+5]\nexit", Err(2)),
    ] {
        let r = both(src, &mut rw, &ro);
        assert_eq!(r.as_ref().map_err(|f| f.pc).copied(), expect, "{src}: {r:?}");
    }
}

#[test]
fn a_forged_subprogram_address_is_a_bad_call_target_in_both_engines() {
    // pc 4 holds an instruction but no subprogram starts there: a
    // function address made up with lddw (not `lddw src=4`) must not
    // enter it, in the interpreter as in native code.
    let src = "lddw %r1, 0xc0def00d00000004\ncall %r1\nexit\nmov %r0, 7\nexit";
    let (mut interp, mut jit) = vms(src);
    for vm in [&mut interp, &mut jit] {
        let f = vm.run(&mut []).unwrap_err();
        assert_eq!(f.pc, 2, "{f}");
        assert!(
            matches!(
                f.kind,
                FaultKind::BadCallTarget {
                    value: 0xc0de_f00d_0000_0004
                }
            ),
            "{f}"
        );
    }
}

#[test]
fn closed_runs_check_each_run_against_its_own_memory() {
    // One VM, runs over memories of different sizes: each run's checks
    // start from its own context (a stale region from the run before
    // would let the 16-byte run read past its end, or refuse the 32-byte
    // one), whichever path the run takes (closed, or the general one for
    // a context under 8 bytes or a VM with regions).
    let (mut interp, mut jit) = vms("ldxdw %r0, [%r1+24]\nexit");
    // The small memories start where the big one does: a region left over
    // from a bigger run would cover their reads.
    let mut mem = [2u8; 32];
    for vm in [&mut interp, &mut jit] {
        for _ in 0..2 {
            assert_eq!(vm.run(&mut mem), Ok(u64::from_le_bytes([2; 8])));
            let f = vm.run(&mut mem[..16]).unwrap_err();
            assert!(matches!(f.kind, FaultKind::OutOfBounds { .. }), "{f}");
            let f = vm.run(&mut mem[..4]).unwrap_err();
            assert!(matches!(f.kind, FaultKind::OutOfBounds { .. }), "{f}");
        }
        let extra = [9u8; 8];
        // SAFETY: `extra` outlives the runs below.
        unsafe { vm.add_region(Region::from_slice(&extra, RegionKind::Other)) };
        assert_eq!(vm.run(&mut mem), Ok(u64::from_le_bytes([2; 8])));
        assert!(vm.run(&mut mem[..16]).is_err());
        vm.clear_regions();
        assert_eq!(vm.run(&mut mem), Ok(u64::from_le_bytes([2; 8])));
    }
}

#[test]
fn loops_over_a_region_other_than_the_first_agree_with_the_interpreter() {
    // The run's first region (the context, r1) is not the one the loop
    // reads (the read-only region, r2) nor, for the last program, the one
    // it writes past: the checks find the loop's region after the first
    // slow check, and still refuse what lies past it.
    let ro: Vec<u8> = (0..32u8).collect();
    let mut rw = [0u8; 16];
    let sum = "
        mov %r0, 0
        mov %r3, 0
    loop:
        mov %r4, %r2
        add %r4, %r3
        ldxb %r5, [%r4]
        add %r0, %r5
        add %r3, 1
        jlt %r3, 32, loop
        stxdw [%r1], %r0
        exit";
    assert_eq!(both(sum, &mut rw, &ro), Ok((0..32).sum()));
    assert_eq!(u64::from(rw[0]), (0..32u64).sum::<u64>() & 0xff);
    // One byte too far: out of bounds at the load, on the 33rd round.
    let past = sum.replace("jlt %r3, 32, loop", "jlt %r3, 33, loop");
    let f = both(&past, &mut rw, &ro).unwrap_err();
    assert_eq!((f.pc, f.len), (4, 1));
    assert!(matches!(f.kind, FaultKind::OutOfBounds { .. }), "{f}");
}

#[test]
fn every_access_size_is_refused_exactly_past_the_region_end() {
    // Each size read and written at every offset around a 16-byte context
    // (narrow accesses test against limits computed once per run): the
    // last offset that fits runs, the next faults, as in the interpreter.
    let mem: Vec<u8> = (0..16u8).collect();
    for (suffix, len) in [("b", 1i64), ("h", 2), ("w", 4), ("dw", 8)] {
        for off in -9i64..=18 {
            let load = format!("mov %r3, %r1\nadd %r3, {off}\nldx{suffix} %r0, [%r3+0]\nexit");
            let fits = off >= 0 && off + len <= 16;
            assert_eq!(closed_same(&load, &mem, None).is_ok(), fits, "{load}");
            let store =
                format!("mov %r3, %r1\nadd %r3, {off}\nst{suffix} [%r3+0], 7\nmov %r0, 1\nexit");
            assert_eq!(closed_same(&store, &mem, None).is_ok(), fits, "{store}");
        }
    }
}
