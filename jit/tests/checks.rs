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
