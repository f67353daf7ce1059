//! BPF programs on in-process uprobes and uretprobes: tests/bpf/uprobe.bpf.o
//! attached to functions of this test binary, verified and JIT-compiled.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use userbpf::probe::{self, AttachError, AttachOptions};
use userbpf_vm::maps::MapSet;
use userbpf_vm::object::Object;

/// The fixture's `counts` map.
fn counts_map(maps: &MapSet) -> &userbpf_vm::maps::Map {
    maps.maps()
        .iter()
        .find(|m| m.spec().name == "counts")
        .expect("the counts map")
}

fn fixture() -> (Object, Arc<MapSet>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bpf/uprobe.bpf.o");
    let object = userbpf::source::load_object(&path).expect("uprobe.bpf.o");
    let maps = Arc::new(MapSet::from_object(&object).expect("maps"));
    userbpf::engine::Engine::Jit.install();
    (object, maps)
}

/// counts[i] of the fixture's array map.
fn count(maps: &MapSet, i: u32) -> u64 {
    let v = counts_map(maps).lookup(&i.to_le_bytes()).expect("slot");
    u64::from_le_bytes(v[..8].try_into().unwrap())
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn userbpf_test_square(x: u64) -> u64 {
    black_box(x).wrapping_mul(black_box(x))
}

#[test]
fn a_kprobe_style_program_counts_every_call_and_reads_the_argument() {
    let (object, maps) = fixture();
    let link = probe::attach(
        &object,
        &maps,
        "count_calls",
        "self:userbpf_test_square",
        &AttachOptions::default(),
    )
    .expect("attach");
    for i in 0..1000u64 {
        assert_eq!(black_box(userbpf_test_square)(i), i * i);
    }
    assert_eq!(count(&maps, 0), 1000, "calls");
    assert_eq!(count(&maps, 1), 999, "PT_REGS_PARM1 of the last call");
    assert_eq!(link.probe().faults().0, 0);
    drop(link);
    black_box(userbpf_test_square)(3);
    assert_eq!(count(&maps, 0), 1000, "detached");
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn userbpf_test_triple(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

#[test]
fn a_kretprobe_style_program_sees_every_return_value_from_many_threads() {
    use userbpf::shims::hook::Probe;
    let (object, maps) = fixture();
    let link = probe::attach(
        &object,
        &maps,
        "count_returns",
        "self:userbpf_test_triple",
        &AttachOptions::default(),
    )
    .expect("attach");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                for i in 0..2500u64 {
                    assert_eq!(black_box(userbpf_test_triple)(i), i * 3);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        link.probe().lean(),
        "reads only ax: the lean return handler"
    );
    assert_eq!(count(&maps, 2), 10_000, "returns");
    black_box(userbpf_test_triple)(7);
    assert_eq!(count(&maps, 3), 21, "PT_REGS_RC of the last return");
    drop(link);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn userbpf_test_plus_one(x: u64) -> u64 {
    black_box(x).wrapping_add(1)
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn userbpf_test_minus_one(x: u64) -> u64 {
    black_box(x).wrapping_sub(1)
}

/// Each thread runs three programs in turn (an entry and a return probe
/// on one function, an entry probe on another, with maps of its own):
/// more than the per-thread cache of VMs holds, so every way a thread
/// finds its VM is taken, and no run is lost or goes to another
/// program's VM.
#[test]
fn three_programs_in_turn_on_many_threads_count_exactly() {
    let (object, maps) = fixture();
    let other = Arc::new(MapSet::from_object(&object).expect("maps"));
    let opts = AttachOptions::default();
    let links = [
        probe::attach(
            &object,
            &maps,
            "count_calls",
            "self:userbpf_test_plus_one",
            &opts,
        ),
        probe::attach(
            &object,
            &maps,
            "count_returns",
            "self:userbpf_test_plus_one",
            &opts,
        ),
        probe::attach(
            &object,
            &other,
            "count_calls",
            "self:userbpf_test_minus_one",
            &opts,
        ),
    ]
    .map(|l| l.expect("attach"));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    assert_eq!(black_box(userbpf_test_plus_one)(i), i + 1);
                    if i % 3 == t % 3 {
                        assert_eq!(black_box(userbpf_test_minus_one)(i + 10), i + 9);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let minus_calls: u64 = (0..4u64)
        .map(|t| (0..2000u64).filter(|i| i % 3 == t % 3).count() as u64)
        .sum();
    assert_eq!(count(&maps, 0), 8000, "entries of plus_one");
    assert_eq!(count(&maps, 2), 8000, "returns of plus_one");
    assert_eq!(count(&other, 0), minus_calls, "entries of minus_one");
    assert_eq!(count(&other, 2), 0, "no return probe on minus_one");
    for l in &links {
        assert_eq!(l.probe().faults().0, 0);
    }
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn userbpf_test_allocate(n: u64) -> i64 {
    black_box(n as i64) + 100
}

#[test]
fn bpf_override_return_makes_the_function_fail_without_running() {
    let (object, maps) = fixture();
    let link = probe::attach(
        &object,
        &maps,
        "fail_unlucky",
        "self:userbpf_test_allocate",
        &AttachOptions::default(),
    )
    .expect("attach");
    assert_eq!(black_box(userbpf_test_allocate)(12), 112);
    assert_eq!(
        black_box(userbpf_test_allocate)(13),
        -12,
        "-ENOMEM injected"
    );
    assert_eq!(black_box(userbpf_test_allocate)(14), 114);
    drop(link);
    assert_eq!(black_box(userbpf_test_allocate)(13), 113);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn userbpf_test_reserve(n: u64) -> i64 {
    black_box(n as i64) * 2
}

#[test]
fn bpf_set_retval_makes_the_function_return_its_int_without_running() {
    let (object, maps) = fixture();
    let link = probe::attach(
        &object,
        &maps,
        "fail_with_retval",
        "self:userbpf_test_reserve",
        &AttachOptions::default(),
    )
    .expect("attach (verified: a user-space helper on a uprobe)");
    assert_eq!(black_box(userbpf_test_reserve)(20), 40);
    assert_eq!(
        black_box(userbpf_test_reserve)(21),
        -7,
        "the int set, sign-extended"
    );
    assert_eq!(count(&maps, 1) as i64, -7, "bpf_get_retval read it back");
    assert_eq!(black_box(userbpf_test_reserve)(22), 44);
    assert_eq!(link.probe().faults(), (0, None));
    drop(link);
    assert_eq!(black_box(userbpf_test_reserve)(21), 42);
}

#[test]
fn attach_errors_name_the_program_and_the_target() {
    let (object, maps) = fixture();
    let opts = AttachOptions::default();
    let e = probe::attach(
        &object,
        &maps,
        "count_calls",
        "self:userbpf_no_such_fn",
        &opts,
    )
    .expect_err("missing symbol");
    assert!(matches!(e, AttachError::Target { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("count_calls") && msg.contains("userbpf_no_such_fn"),
        "{msg}"
    );
    let e = probe::attach(
        &object,
        &maps,
        "no_such_prog",
        "self:userbpf_test_square",
        &opts,
    )
    .expect_err("missing program");
    assert!(e.to_string().contains("no_such_prog"), "{e}");
    let e = probe::attach(
        &object,
        &maps,
        "count_calls",
        "libuserbpf_absent.so:f",
        &opts,
    )
    .expect_err("missing module");
    assert!(e.to_string().contains("libuserbpf_absent"), "{e}");
}

#[test]
fn uprobe_section_names_give_the_kind_and_target() {
    use userbpf_shims::hook::ProbeKind;
    assert_eq!(
        probe::section_target("uprobe"),
        Some((ProbeKind::Entry, None))
    );
    assert_eq!(
        probe::section_target("uretprobe/libc.so.6:malloc"),
        Some((ProbeKind::Return, Some("libc.so.6:malloc")))
    );
    assert_eq!(
        probe::section_target("uprobe.s/./app:f+4"),
        Some((ProbeKind::Entry, Some("./app:f+4")))
    );
    assert_eq!(probe::section_target("kprobe/x"), None);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn userbpf_test_lean(x: u64) -> u64 {
    black_box(x) ^ 0x5a
}

/// A verified program whose context reads a lean frame holds (the
/// arguments) gets one; a program that hands the context to a helper
/// (`bpf_override_return`, `bpf_perf_event_output`), or runs unverified,
/// gets the full `pt_regs`; programs still see their arguments.
#[test]
fn programs_that_read_only_arguments_get_a_lean_frame() {
    use userbpf::shims::hook::Probe;
    let (object, maps) = fixture();
    let opts = AttachOptions::default();
    let target = "self:userbpf_test_lean";
    let calls = probe::attach(&object, &maps, "count_calls", target, &opts).expect("attach");
    assert!(calls.probe().lean());
    assert!(calls.stats().lean_frame);
    assert_eq!(black_box(userbpf_test_lean)(40), 40 ^ 0x5a);
    assert_eq!(count(&maps, 1), 40, "PT_REGS_PARM1 from a lean frame");
    let printk = probe::attach(&object, &maps, "report", target, &opts).expect("attach");
    assert!(
        printk.probe().lean(),
        "ring buffer and trace_printk take no context"
    );
    for prog in ["fail_unlucky", "perf_report"] {
        let l = probe::attach(&object, &maps, prog, target, &opts).expect("attach");
        assert!(!l.probe().lean(), "{prog} hands the context to a helper");
        assert!(
            !calls.stats().lean_frame,
            "{prog} makes the site's frame full"
        );
        assert_eq!(black_box(userbpf_test_lean)(41), 41 ^ 0x5a);
        assert_eq!(count(&maps, 1), 41);
        drop(l);
        assert!(calls.stats().lean_frame, "lean again without {prog}");
    }
    let unverified = AttachOptions {
        verify: false,
        ..AttachOptions::default()
    };
    let l = probe::attach(&object, &maps, "count_calls", target, &unverified).expect("attach");
    assert!(!l.probe().lean(), "checked mode reads the whole frame");
    drop((l, printk));
    assert_eq!(black_box(userbpf_test_lean)(42), 42 ^ 0x5a);
    assert_eq!(count(&maps, 1), 42);
    assert_eq!(calls.probe().faults().0, 0);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn userbpf_test_direct(x: u64) -> u64 {
    black_box(x) ^ 0xa5
}

/// A verified program that calls nothing (its array lookups are inline)
/// and reads only the arguments runs straight from the trampoline
/// (`Stats::direct`), with exact counts on many threads; a program with a
/// helper call, a second probe on the site, or an unverified program
/// takes the dispatcher.
#[test]
fn verified_leaf_programs_run_straight_from_the_trampoline() {
    let (object, maps) = fixture();
    let opts = AttachOptions::default();
    let target = "self:userbpf_test_direct";
    let calls = probe::attach(&object, &maps, "count_calls", target, &opts).expect("attach");
    assert!(calls.stats().direct, "{:?}", calls.stats());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..2500u64 {
                    assert_eq!(black_box(userbpf_test_direct)(t + i), (t + i) ^ 0xa5);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(count(&maps, 0), 10_000, "every call counted once");
    black_box(userbpf_test_direct)(77);
    assert_eq!(count(&maps, 1), 77, "PT_REGS_PARM1");
    let printk = probe::attach(&object, &maps, "report", target, &opts).expect("attach");
    assert!(!calls.stats().direct, "two probes");
    drop(printk);
    assert!(calls.stats().direct);
    drop(calls);
    let unverified = AttachOptions {
        verify: false,
        ..AttachOptions::default()
    };
    let checked =
        probe::attach(&object, &maps, "count_calls", target, &unverified).expect("attach");
    assert!(!checked.stats().direct, "checked code");
    black_box(userbpf_test_direct)(78);
    assert_eq!(count(&maps, 0), 10_002);
    assert_eq!(checked.stats().direct_faults, 0);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn userbpf_test_direct_ret(x: u64) -> u64 {
    black_box(x).wrapping_mul(5)
}

/// A leaf entry program and a leaf return program on one function run
/// from the trampoline and the return handler: exact counts from many
/// threads, and the return value as `PT_REGS_RC`.
#[test]
fn verified_leaf_entry_and_return_programs_run_without_the_dispatcher() {
    let (object, maps) = fixture();
    let opts = AttachOptions::default();
    let target = "self:userbpf_test_direct_ret";
    let calls = probe::attach(&object, &maps, "count_calls", target, &opts).expect("attach");
    let rets = probe::attach(&object, &maps, "count_returns", target, &opts).expect("attach");
    assert!(rets.stats().direct, "{:?}", rets.stats());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..2500u64 {
                    assert_eq!(black_box(userbpf_test_direct_ret)(t + i), (t + i) * 5);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(count(&maps, 0), 10_000, "calls");
    assert_eq!(count(&maps, 2), 10_000, "returns");
    black_box(userbpf_test_direct_ret)(9);
    assert_eq!(count(&maps, 3), 45, "PT_REGS_RC");
    assert_eq!(rets.stats().missed_returns, 0);
    drop(calls);
    assert!(rets.stats().direct, "a return leaf alone");
    black_box(userbpf_test_direct_ret)(2);
    assert_eq!(
        (count(&maps, 0), count(&maps, 2), count(&maps, 3)),
        (10_001, 10_002, 10)
    );
}
