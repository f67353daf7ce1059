//! The same object runs in the user-space VM and in the kernel
//! (`BPF_PROG_TEST_RUN`): same r0, same context, same map contents.
//!
//! Needs root and bpf(); skips with a printed reason otherwise, unless
//! `USERBPF_REQUIRE_KERNEL=1` (CI), where it fails instead.

use std::path::PathBuf;
use std::sync::Arc;

use userbpf_kernel::{kernel_required, kernel_unavailable, load};
use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::maps::MapSet;
use userbpf_vm::object::Object;
use userbpf_vm::{Config, Helpers, Vm};

fn kernel_or_skip(test: &str) -> bool {
    match kernel_unavailable() {
        None => true,
        Some(why) if kernel_required() => panic!("{test}: kernel required but unavailable: {why}"),
        Some(why) => {
            println!("SKIP {test}: {why}");
            false
        }
    }
}

fn object(name: &str) -> Object {
    let dir = match std::env::var_os("USERBPF_FIXTURES_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/bpf"),
    };
    let path = dir.join(name);
    let bytes = std::fs::read(&path).unwrap();
    Object::parse(&path.display().to_string(), &bytes).unwrap_or_else(|e| panic!("{e}"))
}

/// The VM side: the program with its maps.
struct VmSide {
    vm: Vm,
    maps: Arc<MapSet>,
}

fn vm_side(obj: &Object, prog: &str) -> VmSide {
    let maps = Arc::new(MapSet::from_object(obj).unwrap());
    let program = obj.program(prog).unwrap().to_program().unwrap();
    let mut helpers = Helpers::kernel_basics();
    helpers.extend(&maps.helpers());
    let prepared =
        PreparedProgram::with_maps(&program, &helpers, Config::default(), maps.as_ref()).unwrap();
    let mut vm = Vm::from_prepared(Arc::new(prepared));
    for r in maps.regions() {
        // SAFETY: `maps` lives in the same struct and outlives every run.
        unsafe { vm.add_region(r) };
    }
    VmSide { vm, maps }
}

#[test]
fn calls_fixture_matches_the_kernel() {
    if !kernel_or_skip("calls_fixture_matches_the_kernel") {
        return;
    }
    let obj = object("calls.bpf.o");
    let prog = obj.program("calls").unwrap();
    let k = load(&obj, prog).unwrap_or_else(|e| panic!("{e}"));
    let mut side = vm_side(&obj, "calls");
    for (a, b) in [
        (0u64, 0u64),
        (1, 2),
        (0xdead_beef, 0x1234_5678_9abc_def0),
        (u64::MAX, 7),
    ] {
        let mut ctx = [0u8; 24];
        ctx[..8].copy_from_slice(&a.to_le_bytes());
        ctx[8..16].copy_from_slice(&b.to_le_bytes());
        let mut kctx = ctx;
        let kr0 = k.program.test_run_syscall(&mut kctx).unwrap();
        let r0 = side.vm.run(&mut ctx).unwrap();
        assert_eq!(r0 as u32, kr0, "r0 for a={a:#x} b={b:#x}");
        assert_eq!(ctx, kctx, "context after the run");
    }
}

/// Runs `prog` of `fixture` on each context in the VM and in the kernel and
/// compares r0, the context after the run, and every map afterwards.
fn compare_syscall(test: &str, fixture: &str, prog: &str, ctxs: &[Vec<u8>]) {
    if !kernel_or_skip(test) {
        return;
    }
    let obj = object(fixture);
    let p = obj.program(prog).unwrap();
    let k = load(&obj, p).unwrap_or_else(|e| panic!("{e}"));
    let mut side = vm_side(&obj, prog);
    for ctx in ctxs {
        let mut ours = ctx.clone();
        let mut theirs = ctx.clone();
        let kr0 = k.program.test_run_syscall(&mut theirs).unwrap();
        let r0 = side.vm.run(&mut ours).unwrap();
        assert_eq!(r0 as u32, kr0, "{test}: r0");
        assert_eq!(ours, theirs, "{test}: context after the run");
    }
    for (i, (def, vm_map)) in obj.maps.iter().zip(side.maps.maps()).enumerate() {
        let kmap = &k.maps[i];
        let dump = |keys: Vec<Vec<u8>>, get: &dyn Fn(&[u8]) -> Option<Vec<u8>>| {
            let mut v: Vec<(Vec<u8>, Vec<u8>)> = keys
                .into_iter()
                .map(|key| (get(&key).unwrap(), key))
                .map(|(v, k)| (k, v))
                .collect();
            v.sort();
            v
        };
        let kernel = dump(kmap.keys(), &|k| kmap.lookup(k));
        let ours = dump(vm_map.keys(), &|k| vm_map.lookup(k));
        assert_eq!(ours, kernel, "{test}: map `{}`", def.name);
    }
}

#[test]
fn counter_fixture_leaves_the_same_maps_as_the_kernel() {
    let ctxs: Vec<Vec<u8>> = [(5u32, 2u64), (5, 2), (13, 1), (7, 9), (5, 400), (5, 1)]
        .iter()
        .map(|(key, add)| {
            let mut ctx = vec![0u8; 16];
            ctx[..4].copy_from_slice(&key.to_le_bytes());
            ctx[8..].copy_from_slice(&add.to_le_bytes());
            ctx
        })
        .collect();
    compare_syscall("counter", "counter.bpf.o", "count", &ctxs);
}
