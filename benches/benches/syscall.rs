//! The cost of a syscall hook: `getpid` (through libc's `syscall()`)
//! with nothing attached, with the kernel's `syscalls/sys_enter_getpid`
//! tracepoint running a program (as root), with userbpf's in-process hook
//! running the same program (tests/bpf/syscount.bpf.o: an array-map
//! counter), and an unhooked syscall in a process whose hooks are
//! installed for another syscall.
//!
//! The userbpf cases run with the default Syscall User Dispatch policy
//! (armed only when some executable memory escapes the rewrite: not
//! here), and again with SUD always on (`USERBPF_SYSCALL_SUD=1`).
//!
//! Installing userbpf's interception rewrites the process's syscall
//! instructions for good, so the criterion pass measures in that order
//! (nothing first), and the table pass (`cargo bench`) measures each case
//! in a forked child of its own. The targets: a hooked syscall at
//! most 30 ns over the unhooked one (the kernel's tracepoint adds ~120 ns
//! here), an unhooked syscall in a process with hooks at most 10 ns more.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use userbpf::syscall::{self, SyscallOptions, SyscallProbeLink};
use userbpf_benches::median_ns;
use userbpf_kernel::attach::attach_tracepoint;
use userbpf_kernel::{KernelLink, KernelLoad};
use userbpf_vm::maps::MapSet;
use userbpf_vm::object::Object;

fn getpid() {
    // SAFETY: getpid has no preconditions.
    black_box(unsafe { libc::syscall(libc::SYS_getpid) });
}

fn object() -> Object {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/bpf/syscount.bpf.o");
    userbpf::source::load_object(&path).expect("syscount.bpf.o")
}

fn kernel_link(object: &Object) -> Result<(KernelLoad, KernelLink), String> {
    if let Some(why) = userbpf_kernel::kernel_unavailable() {
        return Err(why);
    }
    let prog = object.program("count_getpid").map_err(|e| e.to_string())?;
    let load = userbpf_kernel::load(object, prog).map_err(|e| e.to_string())?;
    let link = attach_tracepoint(&load.program, "syscalls", "sys_enter_getpid")
        .map_err(|e| e.to_string())?;
    Ok((load, link))
}

fn userbpf_link(object: &Object) -> (Arc<MapSet>, SyscallProbeLink) {
    userbpf::engine::Engine::Jit.install();
    let maps = Arc::new(MapSet::from_object(object).expect("maps"));
    let link = syscall::attach(object, &maps, "count_getpid", &SyscallOptions::default())
        .expect("userbpf syscall hook (needs root: page 0)");
    (maps, link)
}

/// A hook on getppid (never called here): getpid is then unhooked in a
/// process with hooks.
struct Nothing;

impl userbpf::shims::syscall::SyscallHook for Nothing {
    fn enter(
        &self,
        _ctx: &mut userbpf::shims::syscall::SyscallCtx,
    ) -> userbpf::shims::syscall::SyscallAction {
        userbpf::shims::syscall::SyscallAction::Continue
    }
}

fn other_hook() -> userbpf::shims::syscall::SyscallLink {
    userbpf::shims::syscall::attach(Some(libc::SYS_getppid as u64), Arc::new(Nothing))
        .expect("a hook on getppid")
}

fn bench(c: &mut Criterion) {
    let object = object();
    let mut g = c.benchmark_group("syscall");
    g.measurement_time(Duration::from_secs(2));
    g.warm_up_time(Duration::from_millis(500));
    g.bench_function("none", |b| b.iter(getpid));
    match kernel_link(&object) {
        Ok(k) => {
            g.bench_function("kernel_tracepoint", |b| b.iter(getpid));
            drop(k);
        }
        Err(why) => eprintln!("kernel tracepoint not measured: {why}"),
    }
    let other = other_hook();
    g.bench_function("userbpf_unhooked_in_hooked_process", |b| b.iter(getpid));
    let (_maps, link) = userbpf_link(&object);
    g.bench_function("userbpf", |b| b.iter(getpid));
    drop((link, other));
    g.finish();
}

/// Runs `f` in a forked child and returns what it measured.
fn in_child(f: impl FnOnce() -> f64) -> Option<f64> {
    let mut fds = [0i32; 2];
    // SAFETY: a pipe into a valid array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: the child only measures, writes 8 bytes and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let v = f();
        let b = v.to_le_bytes();
        // SAFETY: writing 8 bytes to our pipe, then leaving without the
        // parent's exit handlers.
        unsafe {
            libc::write(fds[1], b.as_ptr().cast(), 8);
            libc::_exit(0);
        }
    }
    let mut b = [0u8; 8];
    // SAFETY: reading 8 bytes from our pipe; reaping our child.
    let n = unsafe {
        libc::close(fds[1]);
        let n = libc::read(fds[0], b.as_mut_ptr().cast(), 8);
        libc::close(fds[0]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        n
    };
    (n == 8).then(|| f64::from_le_bytes(b))
}

/// Says so when Syscall User Dispatch is armed under the default policy
/// (some executable memory escapes the rewrite): the figures then include
/// its cost.
fn report_sud() {
    use userbpf::shims::syscall as shim;
    if shim::stats().sud_active {
        eprintln!("(Syscall User Dispatch armed: {:?})", shim::sud_reason());
    }
}

/// Arms Syscall User Dispatch whatever the code (`USERBPF_SYSCALL_SUD=1`).
fn sud_always() {
    use userbpf::shims::syscall as shim;
    shim::set_user_dispatch(shim::UserDispatch::Always).expect("SUD policy");
    if !shim::stats().sud_active {
        eprintln!("(Syscall User Dispatch not available here)");
    }
}

/// Rounds of the table pass: each case is measured once per round in a
/// fresh child, the cases in turn, and what a case adds is the median over
/// the rounds of its difference with the same round's `getpid` with
/// nothing attached (the machine's drift cancels; a single pair of
/// children can read 10 ns apart).
const ROUNDS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn table() {
    let t = Duration::from_millis(10);
    let m = || median_ns(getpid, 21, t);
    let cases: [(&str, &dyn Fn() -> f64); 6] = [
        ("nothing attached", &|| in_child(m).unwrap_or(f64::NAN)),
        ("kernel sys_enter_getpid tracepoint", &|| {
            in_child(|| match kernel_link(&object()) {
                Ok(_k) => m(),
                Err(_) => f64::NAN,
            })
            .unwrap_or(f64::NAN)
        }),
        ("userbpf in-process hook", &|| {
            in_child(|| {
                let (_maps, _l) = userbpf_link(&object());
                report_sud();
                m()
            })
            .unwrap_or(f64::NAN)
        }),
        ("userbpf, unhooked syscall, hooks installed", &|| {
            in_child(|| {
                let _o = other_hook();
                report_sud();
                m()
            })
            .unwrap_or(f64::NAN)
        }),
        ("userbpf in-process hook, SUD always on", &|| {
            in_child(|| {
                let (_maps, _l) = userbpf_link(&object());
                sud_always();
                m()
            })
            .unwrap_or(f64::NAN)
        }),
        ("userbpf, unhooked syscall, SUD always on", &|| {
            in_child(|| {
                let _o = other_hook();
                sud_always();
                m()
            })
            .unwrap_or(f64::NAN)
        }),
    ];
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        for (i, (_, f)) in cases.iter().enumerate() {
            runs[i].push(f());
        }
    }
    let adds = |i: usize| median(runs[i].iter().zip(&runs[0]).map(|(a, b)| a - b).collect());
    println!();
    println!(
        "getpid, nothing attached: {:.1} ns (median of {ROUNDS} rounds, one child per case and round)",
        median(runs[0].clone())
    );
    println!("{:<44} {:>10} {:>10}", "case", "ns", "adds");
    for (i, (name, _)) in cases.iter().enumerate().skip(1) {
        println!(
            "{name:<44} {:>10.1} {:>10.1}",
            median(runs[i].clone()),
            adds(i)
        );
    }
    println!(
        "ratio (kernel adds / userbpf adds): {:.1}x",
        adds(1) / adds(2)
    );
    for (i, (name, _)) in cases.iter().enumerate() {
        println!("  {name}, each round: {:.1?}", runs[i]);
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    if std::env::args().any(|a| a == "--bench") {
        // First, in fresh children (nothing installed yet here).
        table();
    }
    bench(&mut c);
    c.final_summary();
}
