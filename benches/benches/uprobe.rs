//! The cost of a probe on a function call: no probe, a userbpf uprobe
//! (in-process inline hook), and a kernel uprobe (attached through the
//! uprobe PMU, as root); the same for uprobe + uretprobe. Each probed
//! function has its own copy (so hooks do not meet), and the programs are
//! tests/bpf/uprobe.bpf.o's `count_calls` / `count_returns`, which update
//! an array map counter: the same object in both places.
//!
//! With `cargo bench` a final pass prints the medians over rounds that run
//! every case in turn, the cost each probe adds to a call (the median of
//! each round's difference with the plain call), and the ratio kernel /
//! userbpf (the targets: a uprobe adds at most 10 ns, uprobe +
//! uretprobe at most 20 ns, and at least 50x less than the kernel).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use userbpf::probe::{self, AttachOptions, UprobeLink};
use userbpf_benches::median_ns;
use userbpf_kernel::attach::{attach_uprobe, mapped_file_offset};
use userbpf_kernel::{KernelLink, KernelLoad};
use userbpf_vm::maps::MapSet;
use userbpf_vm::object::Object;

// The probed functions begin as most compiled functions do, with `push
// rbp` (an instruction the kernel's uprobes emulate instead of
// single-stepping: their fast case), and differ by a constant (identical
// functions would be merged into one).
macro_rules! target {
    ($name:literal, $k:literal) => {
        std::arch::global_asm!(
            concat!(".globl ", $name),
            concat!(".type ", $name, ", @function"),
            concat!($name, ":"),
            "push rbp",
            "mov rbp, rsp",
            concat!("lea rax, [rdi + rdi * 2 + ", $k, "]"),
            "pop rbp",
            "ret",
            concat!(".size ", $name, ", . - ", $name),
        );
    };
}

target!("bench_plain", 1);
target!("bench_userbpf_uprobe", 2);
target!("bench_userbpf_uretprobe", 3);
target!("bench_kernel_uprobe", 4);
target!("bench_kernel_uretprobe", 5);
target!("bench_userbpf_empty", 6);

extern "C" {
    fn bench_plain(x: u64) -> u64;
    fn bench_userbpf_uprobe(x: u64) -> u64;
    fn bench_userbpf_uretprobe(x: u64) -> u64;
    fn bench_kernel_uprobe(x: u64) -> u64;
    fn bench_kernel_uretprobe(x: u64) -> u64;
    fn bench_userbpf_empty(x: u64) -> u64;
}

type Target = unsafe extern "C" fn(u64) -> u64;

/// The fixture's `counts` map.
fn counts_map(maps: &MapSet) -> &userbpf_vm::maps::Map {
    maps.maps()
        .iter()
        .find(|m| m.spec().name == "counts")
        .expect("the counts map")
}

fn fixture() -> (Object, Arc<MapSet>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/bpf/uprobe.bpf.o");
    let object = userbpf::source::load_object(&path).expect("uprobe.bpf.o");
    let maps = Arc::new(MapSet::from_object(&object).expect("maps"));
    (object, maps)
}

/// The userbpf probes: entry on one function, entry + return on another.
fn userbpf_links(object: &Object, maps: &Arc<MapSet>) -> Vec<UprobeLink> {
    userbpf::engine::Engine::Jit.install();
    let opts = AttachOptions::default();
    let attach = |prog: &str, target: &str| {
        probe::attach(object, maps, prog, target, &opts).expect("userbpf attach")
    };
    vec![
        attach("count_calls", "self:bench_userbpf_uprobe"),
        attach("count_calls", "self:bench_userbpf_uretprobe"),
        attach("count_returns", "self:bench_userbpf_uretprobe"),
    ]
}

/// The kernel's probes, or why there are none.
fn kernel_links(object: &Object) -> Result<(Vec<KernelLoad>, Vec<KernelLink>), String> {
    if let Some(why) = userbpf_kernel::kernel_unavailable() {
        return Err(why);
    }
    let load = |name: &str| -> Result<KernelLoad, String> {
        let prog = object.program(name).map_err(|e| e.to_string())?;
        userbpf_kernel::load(object, prog).map_err(|e| e.to_string())
    };
    let calls = load("count_calls")?;
    let rets = load("count_returns")?;
    let pid = std::process::id() as i32;
    let at = |f: Target, prog: &KernelLoad, ret: bool| -> Result<KernelLink, String> {
        let (path, off) = mapped_file_offset(None, f as usize as u64).map_err(|e| e.to_string())?;
        attach_uprobe(&prog.program, &path, off, ret, Some(pid)).map_err(|e| e.to_string())
    };
    let links = vec![
        at(bench_kernel_uprobe, &calls, false)?,
        at(bench_kernel_uretprobe, &calls, false)?,
        at(bench_kernel_uretprobe, &rets, true)?,
    ];
    Ok((vec![calls, rets], links))
}

/// A probe that does nothing: the hook's own cost.
struct Empty;

impl userbpf::shims::hook::Probe for Empty {
    fn hit(&self, _regs: &mut userbpf::shims::hook::PtRegs) -> userbpf::shims::hook::Action {
        userbpf::shims::hook::Action::Continue
    }
}

fn empty_probe() -> userbpf::shims::hook::ProbeLink {
    use userbpf::shims::hook;
    hook::attach(
        hook::Target {
            address: bench_userbpf_empty as *const () as u64,
            function: None,
        },
        hook::ProbeKind::Entry,
        Arc::new(Empty),
    )
    .expect("attach the empty probe")
}

fn call(f: Target) -> u64 {
    // SAFETY: the targets are the assembly functions above (u64 -> u64).
    unsafe { black_box(f)(black_box(7)) }
}

fn call_loop(f: Target) -> impl FnMut() {
    move || {
        black_box(call(f));
    }
}

fn bench(c: &mut Criterion) {
    let (object, maps) = fixture();
    let _ours = userbpf_links(&object, &maps);
    let _empty = empty_probe();
    let kernel = kernel_links(&object);
    if let Err(why) = &kernel {
        eprintln!("kernel uprobes not measured: {why}");
    }
    let mut g = c.benchmark_group("uprobe");
    g.measurement_time(Duration::from_secs(2));
    g.warm_up_time(Duration::from_millis(500));
    g.bench_function("none", |b| b.iter(|| call(bench_plain)));
    g.bench_function("userbpf_empty_probe", |b| {
        b.iter(|| call(bench_userbpf_empty))
    });
    g.bench_function("userbpf", |b| b.iter(|| call(bench_userbpf_uprobe)));
    g.bench_function("userbpf_uretprobe", |b| {
        b.iter(|| call(bench_userbpf_uretprobe))
    });
    if kernel.is_ok() {
        g.bench_function("kernel", |b| b.iter(|| call(bench_kernel_uprobe)));
        g.bench_function("kernel_uretprobe", |b| {
            b.iter(|| call(bench_kernel_uretprobe))
        });
    }
    g.finish();
}

/// The median of `v`.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Rounds of the table: every case once per round, in turn, so a slow
/// phase of the machine (this VM has some, lasting seconds, that slow
/// everything down to half speed) weighs on all cases of its rounds alike.
const ROUNDS: usize = 15;

fn table() {
    let (object, maps) = fixture();
    let ours = userbpf_links(&object, &maps);
    let empty = empty_probe();
    let kernel = kernel_links(&object);
    let t = Duration::from_millis(20);
    let m = |f: Target| median_ns(call_loop(f), 5, t);
    let mut cases: Vec<(&str, Target)> = vec![
        ("no probe", bench_plain),
        ("empty", bench_userbpf_empty),
        ("uprobe", bench_userbpf_uprobe),
        ("uprobe + uretprobe", bench_userbpf_uretprobe),
    ];
    if kernel.is_ok() {
        cases.push(("kernel uprobe", bench_kernel_uprobe));
        cases.push(("kernel uprobe + uretprobe", bench_kernel_uretprobe));
    }
    // ns[case][round], and each round's difference with its call.
    let mut ns = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        for (i, (_, f)) in cases.iter().enumerate() {
            ns[i].push(m(*f));
        }
    }
    let adds = |i: usize| -> Vec<f64> { (0..ROUNDS).map(|r| ns[i][r] - ns[0][r]).collect() };
    let med = |i: usize| median(ns[i].clone());
    let med_adds = |i: usize| median(adds(i));
    println!();
    println!(
        "call with no probe: {:.2} ns (median of {ROUNDS} rounds, every case once a round)",
        med(0)
    );
    println!(
        "the hook alone (a probe that does nothing): {:.2} ns (adds {:.2})",
        med(1),
        med_adds(1)
    );
    drop(empty);
    let counts = counts_map(&maps)
        .lookup(&0u32.to_le_bytes())
        .map(|v| u64::from_le_bytes(v[..8].try_into().unwrap_or([0; 8])))
        .unwrap_or(0);
    println!(
        "(userbpf's counter saw {counts} calls; faults: {:?}; direct: {})",
        ours[0].probe().faults().0,
        ours[0].stats().direct && ours[2].stats().direct
    );
    match &kernel {
        Ok(_) => {
            println!(
                "{:<22} {:>12} {:>12} {:>14} {:>14} {:>8}",
                "probe", "userbpf ns", "kernel ns", "userbpf adds", "kernel adds", "ratio"
            );
            for (name, u, k) in [("uprobe", 2, 4), ("uprobe + uretprobe", 3, 5)] {
                let (ua, ka) = (med_adds(u), med_adds(k));
                println!(
                    "{name:<22} {:>12.2} {:>12.1} {ua:>14.2} {ka:>14.1} {:>7.0}x",
                    med(u),
                    med(k),
                    ka / ua.max(0.01)
                );
            }
        }
        Err(why) => {
            println!(
                "uprobe: {:.2} ns (adds {:.2}); uprobe + uretprobe: {:.2} ns (adds {:.2}); kernel not measured: {why}",
                med(2),
                med_adds(2),
                med(3),
                med_adds(3)
            );
        }
    }
    for (i, (name, _)) in cases.iter().enumerate().skip(1) {
        let a: Vec<String> = adds(i).iter().map(|v| format!("{v:.1}")).collect();
        println!("  {name} adds, each round: [{}]", a.join(", "));
    }
    drop(ours);
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        table();
    }
}
