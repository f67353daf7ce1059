//! What a syscall costs before the interception is installed, with a hook,
//! without one, and through Syscall User Dispatch. A test binary of its
//! own: the first measurement needs a process where nothing is installed.
//!
//! Prints medians; asserts only the counts (timings are machine noise).
//! `cargo test -p userbpf-shims --test syscall_bench -- --nocapture`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

mod support;

use userbpf_shims::syscall::{
    self, SyscallAction, SyscallCtx, SyscallError, SyscallHook, UserDispatch,
};

const ITERS: u64 = 100_000;
const RUNS: usize = 7;

/// Median ns per call of `f` over [`RUNS`] runs of [`ITERS`] calls.
fn ns_per_call(mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ITERS {
                f();
            }
            start.elapsed().as_nanos() as f64 / ITERS as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

fn getpid() {
    // SAFETY: getpid has no preconditions.
    black_box(unsafe { libc::getpid() });
}

#[derive(Default)]
struct Count(AtomicU64);

impl SyscallHook for Count {
    fn enter(&self, _ctx: &mut SyscallCtx) -> SyscallAction {
        self.0.fetch_add(1, Ordering::Relaxed);
        SyscallAction::Continue
    }
}

#[test]
fn syscall_hook_overhead() {
    let jit = support::jit_syscall_stub();
    let plain = ns_per_call(getpid);
    let plain_jit = ns_per_call(|| {
        black_box(jit(libc::SYS_getpid as u64));
    });

    let count = Arc::new(Count::default());
    let link = match syscall::attach(Some(libc::SYS_getpid as u64), count.clone()) {
        Ok(l) => l,
        Err(e @ SyscallError::PageZero { .. })
            if std::env::var("USERBPF_REQUIRE_KERNEL").as_deref() != Ok("1") =>
        {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("attach: {e}"),
    };
    let before = count.0.load(Ordering::Relaxed);
    let hooked = ns_per_call(getpid);
    assert_eq!(
        count.0.load(Ordering::Relaxed) - before,
        ITERS * RUNS as u64,
        "every getpid counted"
    );
    let sud = syscall::stats().sud_enabled;
    // The stub (mapped before the install) escapes the rewrite: the
    // default policy arms SUD for it.
    assert!(syscall::stats().sud_needed, "{:?}", syscall::sud_reason());
    let hooked_sud = if sud {
        let before = count.0.load(Ordering::Relaxed);
        let ns = ns_per_call(|| {
            black_box(jit(libc::SYS_getpid as u64));
        });
        assert_eq!(
            count.0.load(Ordering::Relaxed) - before,
            ITERS * RUNS as u64
        );
        Some(ns)
    } else {
        None
    };
    // Without SUD: only rewritten sites reach the hooks.
    syscall::set_user_dispatch(UserDispatch::Off).expect("registry");
    assert!(!syscall::stats().sud_active);
    let before = count.0.load(Ordering::Relaxed);
    let hooked_no_sud = ns_per_call(getpid);
    assert_eq!(
        count.0.load(Ordering::Relaxed) - before,
        ITERS * RUNS as u64
    );
    let before = count.0.load(Ordering::Relaxed);
    black_box(jit(libc::SYS_getpid as u64));
    assert_eq!(
        count.0.load(Ordering::Relaxed),
        before,
        "JIT code escapes without SUD"
    );
    syscall::set_user_dispatch(UserDispatch::Auto).expect("registry");
    assert_eq!(syscall::stats().sud_active, sud);
    drop(link);

    let other = syscall::attach(Some(libc::SYS_getppid as u64), Arc::new(Count::default()))
        .expect("installed already");
    let unhooked_with_other = ns_per_call(getpid);
    drop(other);

    let all = Arc::new(Count::default());
    let all_link = syscall::attach(None, all.clone()).expect("installed already");
    let hooked_all = ns_per_call(getpid);
    drop(all_link);

    let after_detach = ns_per_call(getpid);
    let unhooked_sud = if sud {
        Some(ns_per_call(|| {
            black_box(jit(libc::SYS_getpid as u64));
        }))
    } else {
        None
    };

    let fmt = |v: Option<f64>| v.map_or("n/a (SUD off)".to_string(), |v| format!("{v:.1} ns"));
    println!("getpid via libc, nothing installed:               {plain:.1} ns");
    println!("getpid via JIT code, nothing installed:           {plain_jit:.1} ns");
    println!(
        "getpid via libc, counting hook on getpid:         {hooked:.1} ns (+{:.1})",
        hooked - plain
    );
    println!(
        "getpid via libc, counting hook, SUD off:          {hooked_no_sud:.1} ns (+{:.1})",
        hooked_no_sud - plain
    );
    println!(
        "getpid via libc, counting hook on every syscall:  {hooked_all:.1} ns (+{:.1})",
        hooked_all - plain
    );
    println!(
        "getpid via libc, hook on getppid only:            {unhooked_with_other:.1} ns (+{:.1})",
        unhooked_with_other - plain
    );
    println!(
        "getpid via libc, installed, no hook attached:     {after_detach:.1} ns (+{:.1})",
        after_detach - plain
    );
    println!(
        "getpid via JIT code (SUD), counting hook:         {}",
        fmt(hooked_sud)
    );
    println!(
        "getpid via JIT code (SUD), no hook attached:      {}",
        fmt(unhooked_sud)
    );
    println!("{:?}", syscall::stats());
}
