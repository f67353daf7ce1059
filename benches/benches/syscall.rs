//! The cost of a syscall hook: `getpid` (through libc's `syscall()`)
//! with nothing attached, with the kernel's `syscalls/sys_enter_getpid`
//! tracepoint running a program (as root), with userbpf's in-process hook
//! running the same program (tests/bpf/syscount.bpf.o: an array-map
//! counter), and an unhooked syscall in a process whose hooks are
//! installed for another syscall.
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

fn table() {
    let t = Duration::from_millis(20);
    let m = || median_ns(getpid, 31, t);
    let plain = in_child(m).unwrap_or(f64::NAN);
    let kernel = in_child(|| match kernel_link(&object()) {
        Ok(_k) => m(),
        Err(_) => f64::NAN,
    })
    .unwrap_or(f64::NAN);
    let other = in_child(|| {
        let _o = other_hook();
        m()
    })
    .unwrap_or(f64::NAN);
    let ours = in_child(|| {
        let (_maps, _l) = userbpf_link(&object());
        m()
    })
    .unwrap_or(f64::NAN);
    println!();
    println!("getpid, nothing attached: {plain:.1} ns");
    println!("{:<44} {:>10} {:>10}", "case", "ns", "adds");
    for (name, v) in [
        ("kernel sys_enter_getpid tracepoint", kernel),
        ("userbpf in-process hook", ours),
        ("userbpf, unhooked syscall, hooks installed", other),
    ] {
        println!("{name:<44} {v:>10.1} {:>10.1}", v - plain);
    }
    println!(
        "ratio (kernel adds / userbpf adds): {:.1}x",
        (kernel - plain) / (ours - plain)
    );
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
