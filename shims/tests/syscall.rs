//! In-process syscall hooks: libc wrappers and inline `syscall`
//! instructions, overrides, threads, fork, vfork, signals, re-entrancy and
//! JIT code (Syscall User Dispatch).
//!
//! The interception is process-wide and the tests of this binary run in
//! parallel: every hook counts only what its own test does (a unique path,
//! a thread-local marker, a syscall number no other test uses), and every
//! test drops its links before it ends.

use std::arch::asm;
use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use userbpf_shims::syscall::{
    self, SyscallAction, SyscallCtx, SyscallError, SyscallHook, SyscallLink,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `USERBPF_SYSCALL_REWRITE=0`: Syscall User Dispatch catches everything.
fn rewrite_disabled() -> bool {
    std::env::var("USERBPF_SYSCALL_REWRITE").is_ok_and(|v| v == "0")
}

fn require_kernel() -> bool {
    std::env::var("USERBPF_REQUIRE_KERNEL").is_ok_and(|v| v == "1")
}

/// Attaches, or returns `None` (with the reason printed) when this
/// machine cannot map page 0 and the kernel is not required.
fn attach_or_skip(filter: Option<i64>, hook: Arc<dyn SyscallHook>) -> Option<SyscallLink> {
    match syscall::attach(filter.map(|n| n as u64), hook) {
        Ok(link) => Some(link),
        Err(e @ SyscallError::PageZero { .. }) if !require_kernel() => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("attach: {e}"),
    }
}

thread_local! {
    /// The id of the test whose syscalls this thread makes (0: none).
    static MARK: Cell<u32> = const { Cell::new(0) };
}

fn mark(test: u32) {
    MARK.with(|m| m.set(test));
}

fn marked_by(test: u32) -> bool {
    MARK.with(|m| m.get()) == test
}

/// Removes a test's file however the test ends (an early return, a
/// failed assertion).
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "userbpf-syscall-test-{}-{name}",
        std::process::id()
    ))
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a temp path")
}

/// `openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC)` with an inline `syscall`
/// instruction (no libc).
#[inline(never)]
fn inline_openat(path: &CStr) -> i64 {
    let ret: i64;
    // SAFETY: a plain openat with a valid NUL-terminated path; the asm
    // clobbers only what a syscall clobbers (and may use the stack).
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") libc::SYS_openat => ret,
            in("rdi") libc::AT_FDCWD as i64,
            in("rsi") path.as_ptr(),
            in("rdx") (libc::O_RDONLY | libc::O_CLOEXEC) as i64,
            in("r10") 0i64,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// Reads the NUL-terminated string at `addr` (a syscall argument of this
/// process) and tells whether it is `wanted`.
fn c_str_is(addr: u64, wanted: &[u8]) -> bool {
    if addr == 0 {
        return false;
    }
    // SAFETY: the address is a path argument a thread of this process
    // passed to openat/execve: a valid C string.
    let s = unsafe { CStr::from_ptr(addr as *const libc::c_char) };
    s.to_bytes() == wanted
}

// ---------------------------------------------------------------------------
// openat through libc and through an inline syscall
// ---------------------------------------------------------------------------

struct OpenCounter {
    path: Vec<u8>,
    enters: AtomicU64,
    exits_ok: AtomicU64,
}

impl SyscallHook for OpenCounter {
    fn enter(&self, ctx: &mut SyscallCtx) -> SyscallAction {
        if ctx.nr == libc::SYS_openat as u64 && c_str_is(ctx.args[1], &self.path) {
            self.enters.fetch_add(1, Ordering::SeqCst);
        }
        SyscallAction::Continue
    }

    fn exit(&self, ctx: &SyscallCtx, ret: i64) {
        if c_str_is(ctx.args[1], &self.path) && ret >= 0 {
            self.exits_ok.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn openat_hook_sees_libc_and_inline_syscalls_with_their_path() {
    let path = temp_path("openat");
    let _cleanup_path = Cleanup(path.clone());
    std::fs::write(&path, b"hello").expect("create the test file");
    let hook = Arc::new(OpenCounter {
        path: path.as_os_str().as_bytes().to_vec(),
        enters: AtomicU64::new(0),
        exits_ok: AtomicU64::new(0),
    });
    let Some(link) = attach_or_skip(Some(libc::SYS_openat), hook.clone()) else {
        return;
    };
    assert_eq!(link.filter(), Some(libc::SYS_openat as u64));
    for _ in 0..5 {
        let mut s = String::new();
        std::fs::File::open(&path)
            .expect("open through libc")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "hello");
    }
    let cpath = c_path(&path);
    for _ in 0..7 {
        let fd = inline_openat(&cpath);
        assert!(fd >= 0, "inline openat failed: {fd}");
        // SAFETY: closing the descriptor just opened.
        unsafe { libc::close(fd as i32) };
    }
    assert_eq!(hook.enters.load(Ordering::SeqCst), 12);
    assert_eq!(hook.exits_ok.load(Ordering::SeqCst), 12);

    // The inline site itself was rewritten (`call *%rax`), not left to
    // Syscall User Dispatch.
    if rewrite_disabled() {
        return;
    }
    let f = inline_openat as *const () as usize;
    // SAFETY: the first 256 bytes of a function of this binary (its text
    // is longer than this function alone).
    let code = unsafe { std::slice::from_raw_parts(f as *const u8, 256) };
    let mut decoder = iced_x86::Decoder::with_ip(64, code, f as u64, 0);
    let mut saw_call_rax = false;
    for i in decoder.iter() {
        assert_ne!(i.code(), iced_x86::Code::Syscall, "a syscall left in place");
        if i.code() == iced_x86::Code::Call_rm64 && i.op0_register() == iced_x86::Register::RAX {
            saw_call_rax = true;
        }
        if i.flow_control() == iced_x86::FlowControl::Return {
            break;
        }
    }
    assert!(saw_call_rax, "the inline syscall was rewritten");

    drop(link);
    std::fs::File::open(&path).expect("open after detach");
    assert_eq!(
        hook.enters.load(Ordering::SeqCst),
        12,
        "no call after detach"
    );
    let _ = std::fs::remove_file(&path);
}

// ---------------------------------------------------------------------------
// Overriding the result: a user-space policy
// ---------------------------------------------------------------------------

struct Deny {
    path: Vec<u8>,
    denied: AtomicU64,
    exit_ret: AtomicI64,
}

impl SyscallHook for Deny {
    fn enter(&self, ctx: &mut SyscallCtx) -> SyscallAction {
        if c_str_is(ctx.args[1], &self.path) {
            self.denied.fetch_add(1, Ordering::SeqCst);
            return SyscallAction::Return(-(libc::EACCES as i64));
        }
        SyscallAction::Continue
    }

    fn exit(&self, ctx: &SyscallCtx, ret: i64) {
        if c_str_is(ctx.args[1], &self.path) {
            self.exit_ret.store(ret, Ordering::SeqCst);
        }
    }
}

#[test]
fn returning_eacces_denies_the_open_and_the_file_is_not_created() {
    let path = temp_path("denied");
    let _cleanup_path = Cleanup(path.clone());
    let _ = std::fs::remove_file(&path);
    let hook = Arc::new(Deny {
        path: path.as_os_str().as_bytes().to_vec(),
        denied: AtomicU64::new(0),
        exit_ret: AtomicI64::new(0),
    });
    let Some(link) = attach_or_skip(Some(libc::SYS_openat), hook.clone()) else {
        return;
    };
    let err = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect_err("the hook denies the open");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    assert!(
        !path.exists(),
        "the syscall did not run: no file was created"
    );
    let fd = inline_openat(&c_path(&path));
    assert_eq!(fd, -(libc::EACCES as i64), "inline syscalls are denied too");
    assert_eq!(hook.denied.load(Ordering::SeqCst), 2);
    assert_eq!(hook.exit_ret.load(Ordering::SeqCst), -(libc::EACCES as i64));
    drop(link);
    let f = std::fs::File::create(&path).expect("allowed again after detach");
    drop(f);
    let _ = std::fs::remove_file(&path);
}

// ---------------------------------------------------------------------------
// Changing an argument
// ---------------------------------------------------------------------------

struct Redirect {
    from: Vec<u8>,
    to: CString,
}

impl SyscallHook for Redirect {
    fn enter(&self, ctx: &mut SyscallCtx) -> SyscallAction {
        if c_str_is(ctx.args[1], &self.from) {
            ctx.args[1] = self.to.as_ptr() as u64;
        }
        SyscallAction::Continue
    }
}

#[test]
fn a_hook_can_change_the_arguments() {
    let from = temp_path("redirect-from");
    let _cleanup_from = Cleanup(from.clone());
    let to = temp_path("redirect-to");
    let _cleanup_to = Cleanup(to.clone());
    std::fs::write(&from, b"original").expect("write");
    std::fs::write(&to, b"redirected").expect("write");
    let hook = Arc::new(Redirect {
        from: from.as_os_str().as_bytes().to_vec(),
        to: c_path(&to),
    });
    let Some(link) = attach_or_skip(Some(libc::SYS_openat), hook) else {
        return;
    };
    assert_eq!(std::fs::read(&from).expect("read"), b"redirected");
    drop(link);
    assert_eq!(std::fs::read(&from).expect("read"), b"original");
    let _ = std::fs::remove_file(&from);
    let _ = std::fs::remove_file(&to);
}

// ---------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------

/// Counts the syscalls of the threads marked with `test`.
struct MarkedCounter {
    test: u32,
    enters: AtomicU64,
    exits: AtomicU64,
}

impl MarkedCounter {
    fn new(test: u32) -> Arc<Self> {
        Arc::new(MarkedCounter {
            test,
            enters: AtomicU64::new(0),
            exits: AtomicU64::new(0),
        })
    }
}

impl SyscallHook for MarkedCounter {
    fn enter(&self, _ctx: &mut SyscallCtx) -> SyscallAction {
        if marked_by(self.test) {
            self.enters.fetch_add(1, Ordering::Relaxed);
        }
        SyscallAction::Continue
    }

    fn exit(&self, _ctx: &SyscallCtx, _ret: i64) {
        if marked_by(self.test) {
            self.exits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn four_threads_of_getpid_are_counted_exactly() {
    let hook = MarkedCounter::new(1);
    let Some(link) = attach_or_skip(Some(libc::SYS_getpid), hook.clone()) else {
        return;
    };
    let pid = std::process::id() as i32;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                mark(1);
                for _ in 0..1000 {
                    // SAFETY: getpid has no preconditions.
                    assert_eq!(unsafe { libc::getpid() }, pid);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(hook.enters.load(Ordering::Relaxed), 4000);
    assert_eq!(hook.exits.load(Ordering::Relaxed), 4000);
    drop(link);
}

#[test]
fn threads_created_and_joined_under_a_hook_on_every_syscall() {
    let hook = MarkedCounter::new(2);
    let Some(link) = attach_or_skip(None, hook.clone()) else {
        return;
    };
    for round in 0..20 {
        let threads: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    mark(2);
                    let v: Vec<u64> = (0..100).map(|x| x * i).collect();
                    v.iter().sum::<u64>() + round
                })
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            assert_eq!(t.join().expect("thread"), 4950 * i as u64 + round);
        }
    }
    assert!(hook.enters.load(Ordering::Relaxed) > 0);
    drop(link);
}

// ---------------------------------------------------------------------------
// fork, vfork, posix_spawn
// ---------------------------------------------------------------------------

#[test]
fn a_forked_child_makes_syscalls_and_exits_cleanly() {
    let hook = MarkedCounter::new(3);
    let Some(link) = attach_or_skip(Some(libc::SYS_getppid), hook.clone()) else {
        return;
    };
    mark(3);
    let mut fds = [0i32; 2];
    // SAFETY: a pipe into a valid array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only makes async-signal-safe calls and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: async-signal-safe calls in the child.
        unsafe {
            let parent = libc::getppid();
            let _ = libc::getppid();
            // The hook ran in the child too (its copy of the counter).
            let counted = hook.enters.load(Ordering::Relaxed);
            let msg: [u8; 2] = [
                if parent > 0 { b'p' } else { b'?' },
                if counted >= 2 { b'h' } else { b'?' },
            ];
            libc::write(fds[1], msg.as_ptr().cast(), 2);
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };
    let mut buf = [0u8; 2];
    // SAFETY: reading into a valid buffer.
    let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 2) };
    let mut status = 0;
    // SAFETY: waiting for our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    // SAFETY: closing the read end.
    unsafe { libc::close(fds[0]) };
    mark(0);
    assert_eq!(n, 2);
    assert_eq!(&buf, b"ph", "the child's syscalls ran and were hooked");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status:#x}"
    );
    assert_eq!(
        hook.enters.load(Ordering::Relaxed),
        0,
        "the parent made no getppid"
    );
    drop(link);
}

/// `vfork` then `_exit(code)` in the child.
#[inline(never)]
fn vfork_and_exit(code: i32) -> libc::pid_t {
    // SAFETY: the child only calls _exit, as vfork requires.
    #[allow(deprecated)]
    unsafe {
        let pid = libc::vfork();
        if pid == 0 {
            libc::_exit(code);
        }
        pid
    }
}

struct ExecCounter {
    path: Vec<u8>,
    execs: AtomicU64,
}

impl SyscallHook for ExecCounter {
    fn enter(&self, ctx: &mut SyscallCtx) -> SyscallAction {
        if c_str_is(ctx.args[0], &self.path) {
            self.execs.fetch_add(1, Ordering::SeqCst);
        }
        SyscallAction::Continue
    }
}

#[test]
fn vfork_and_posix_spawn_work_under_hooks() {
    let counter = MarkedCounter::new(4);
    let Some(vfork_link) = attach_or_skip(Some(libc::SYS_vfork), counter.clone()) else {
        return;
    };
    mark(4);
    for code in [0, 7, 42] {
        let pid = vfork_and_exit(code);
        assert!(pid > 0, "vfork failed");
        let mut status = 0;
        // SAFETY: waiting for our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), code);
    }
    mark(0);
    assert_eq!(counter.enters.load(Ordering::Relaxed), 3);
    drop(vfork_link);

    // posix_spawn: clone3(CLONE_VM | CLONE_VFORK) onto a new stack, then
    // execve in the child (which shares our memory: the hook counts it).
    let exec = Arc::new(ExecCounter {
        path: b"/bin/sh".to_vec(),
        execs: AtomicU64::new(0),
    });
    let Some(exec_link) = attach_or_skip(Some(libc::SYS_execve), exec.clone()) else {
        return;
    };
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("exit 3")
        .status()
        .expect("spawn /bin/sh");
    assert_eq!(status.code(), Some(3));
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("echo spawned")
        .output()
        .expect("spawn with pipes");
    assert_eq!(out.stdout, b"spawned\n");
    if !rewrite_disabled() {
        // (Syscall User Dispatch does not arm vfork children.)
        assert_eq!(exec.execs.load(Ordering::SeqCst), 2);
    }
    drop(exec_link);
}

// ---------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------

static HANDLED: AtomicU64 = AtomicU64::new(0);
static HANDLER_PID_OK: AtomicBool = AtomicBool::new(true);

extern "C" fn on_signal(_sig: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::SeqCst);
    // A hooked syscall inside the handler.
    // SAFETY: getpid is async-signal-safe.
    if unsafe { libc::getpid() } != std::process::id() as i32 {
        HANDLER_PID_OK.store(false, Ordering::SeqCst);
    }
}

#[test]
fn signal_handlers_run_and_return_under_hooks() {
    let hook = MarkedCounter::new(5);
    let Some(link) = attach_or_skip(None, hook.clone()) else {
        return;
    };
    mark(5);
    // SAFETY: installing a handler that only uses atomics and getpid.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        assert_eq!(libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()), 0);
    }
    let before = HANDLED.load(Ordering::SeqCst);
    // Synchronous: raised by this thread (the handler runs on return from
    // the tgkill syscall, inside the trampoline's return path).
    for _ in 0..100 {
        // SAFETY: signalling this thread with a handled signal.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
    }
    assert_eq!(HANDLED.load(Ordering::SeqCst) - before, 100);

    // Asynchronous: a timer aimed at this thread interrupts it anywhere
    // (in the trampoline, in the hooks) while it makes syscalls.
    // SAFETY: a per-thread CPU-time timer delivering SIGALRM to this
    // thread; deleted below.
    let timer = unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = libc::SIGALRM;
        sev.sigev_notify_thread_id = libc::gettid();
        let mut timer: libc::timer_t = std::mem::zeroed();
        assert_eq!(
            libc::timer_create(libc::CLOCK_THREAD_CPUTIME_ID, &mut sev, &mut timer),
            0
        );
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 50_000,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: 50_000,
            },
        };
        assert_eq!(
            libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()),
            0
        );
        timer
    };
    let pid = std::process::id() as i32;
    let start = Instant::now();
    let mut calls = 0u64;
    let before = HANDLED.load(Ordering::SeqCst);
    while start.elapsed() < Duration::from_millis(300) {
        // SAFETY: getpid/getppid have no preconditions.
        unsafe {
            assert_eq!(libc::getpid(), pid);
            assert!(libc::getppid() > 0);
        }
        calls += 2;
    }
    // SAFETY: deleting the timer made above.
    unsafe { libc::timer_delete(timer) };
    let handled = HANDLED.load(Ordering::SeqCst) - before;
    mark(0);
    assert!(handled > 10, "the timer fired {handled} times");
    assert!(HANDLER_PID_OK.load(Ordering::SeqCst));
    assert!(hook.enters.load(Ordering::Relaxed) >= calls);
    drop(link);
}

// ---------------------------------------------------------------------------
// Re-entrancy
// ---------------------------------------------------------------------------

struct Reentrant {
    hits: AtomicU64,
}

impl SyscallHook for Reentrant {
    fn enter(&self, _ctx: &mut SyscallCtx) -> SyscallAction {
        if marked_by(6) {
            self.hits.fetch_add(1, Ordering::SeqCst);
            // The hook's own syscall: straight to the kernel, a miss.
            // SAFETY: getuid has no preconditions.
            let _ = unsafe { libc::getuid() };
        }
        SyscallAction::Continue
    }
}

#[test]
fn a_hook_that_makes_its_own_syscall_does_not_recurse() {
    let hook = Arc::new(Reentrant {
        hits: AtomicU64::new(0),
    });
    let Some(link) = attach_or_skip(Some(libc::SYS_getuid), hook.clone()) else {
        return;
    };
    mark(6);
    for _ in 0..50 {
        // SAFETY: getuid has no preconditions.
        let _ = unsafe { libc::getuid() };
    }
    mark(0);
    assert_eq!(hook.hits.load(Ordering::SeqCst), 50);
    assert_eq!(link.misses(), 50);
    assert!(syscall::stats().misses >= 50);
    drop(link);
}

// ---------------------------------------------------------------------------
// Several hooks, attach order
// ---------------------------------------------------------------------------

struct Ordered {
    id: u64,
    log: Arc<std::sync::Mutex<Vec<u64>>>,
    ret: Option<i64>,
}

impl SyscallHook for Ordered {
    fn enter(&self, _ctx: &mut SyscallCtx) -> SyscallAction {
        if marked_by(7) {
            if let Ok(mut l) = self.log.lock() {
                l.push(self.id);
            }
            if let Some(v) = self.ret {
                return SyscallAction::Return(v);
            }
        }
        SyscallAction::Continue
    }
}

#[test]
fn hooks_run_in_attach_order_and_the_first_return_wins() {
    let log = Arc::new(std::sync::Mutex::new(Vec::with_capacity(64)));
    let mk = |id, ret| {
        Arc::new(Ordered {
            id,
            log: log.clone(),
            ret,
        })
    };
    let Some(a) = attach_or_skip(Some(libc::SYS_getgid), mk(1, None)) else {
        return;
    };
    let b = attach_or_skip(None, mk(2, Some(1234))).expect("installed");
    let c = attach_or_skip(Some(libc::SYS_getgid), mk(3, Some(5678))).expect("installed");
    mark(7);
    // SAFETY: getgid has no preconditions.
    let r = unsafe { libc::syscall(libc::SYS_getgid) };
    mark(0);
    assert_eq!(r, 1234);
    assert_eq!(*log.lock().expect("log"), vec![1, 2, 3]);
    drop((a, b, c));
}

// ---------------------------------------------------------------------------
// JIT code: no symbol, not rewritten, caught by Syscall User Dispatch
// ---------------------------------------------------------------------------

#[test]
fn syscalls_from_jit_code_are_caught_by_syscall_user_dispatch() {
    let hook = MarkedCounter::new(8);
    let Some(link) = attach_or_skip(Some(libc::SYS_getegid), hook.clone()) else {
        return;
    };
    if !syscall::stats().sud_enabled {
        assert!(!require_kernel(), "Syscall User Dispatch is not armed");
        eprintln!("skipped: Syscall User Dispatch is not armed");
        return;
    }
    let stub = support::jit_syscall_stub();
    // SAFETY: getegid has no preconditions.
    let egid = i64::from(unsafe { libc::getegid() });
    let dispatched = syscall::stats().sud_dispatched;
    mark(8);
    for _ in 0..100 {
        assert_eq!(stub(libc::SYS_getegid as u64), egid);
    }
    mark(0);
    assert_eq!(hook.enters.load(Ordering::Relaxed), 100);
    assert_eq!(hook.exits.load(Ordering::Relaxed), 100);
    assert!(syscall::stats().sud_dispatched >= dispatched + 100);
    // A thread created after the install is armed at creation.
    let h = hook.clone();
    std::thread::spawn(move || {
        mark(8);
        for _ in 0..10 {
            assert_eq!(stub(libc::SYS_getegid as u64), egid);
        }
        assert_eq!(h.enters.load(Ordering::Relaxed), 110);
    })
    .join()
    .expect("thread");
    drop(link);
}

// ---------------------------------------------------------------------------
// Bookkeeping
// ---------------------------------------------------------------------------

#[test]
fn stats_show_an_installed_interception() {
    let hook = MarkedCounter::new(9);
    let Some(link) = attach_or_skip(Some(libc::SYS_sched_yield), hook) else {
        return;
    };
    let s = syscall::stats();
    assert!(s.installed);
    assert!(s.modules >= 2, "{s:?}");
    if !rewrite_disabled() {
        assert!(s.sites_rewritten > 100, "libc alone has hundreds: {s:?}");
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    let _ = writeln!(out, "interception: {s:?}");
    drop(link);
}

#[test]
fn a_thread_that_blocks_every_signal_still_gets_its_jit_syscalls_caught() {
    let hook = MarkedCounter::new(10);
    let Some(link) = attach_or_skip(Some(libc::SYS_getresuid), hook.clone()) else {
        return;
    };
    if !syscall::stats().sud_enabled {
        eprintln!("skipped: Syscall User Dispatch is not armed");
        return;
    }
    let stub = jit_syscall_stub_3();
    let h = hook.clone();
    std::thread::spawn(move || {
        mark(10);
        // SAFETY: blocking every signal in this thread, then reading the
        // mask back.
        let blocked = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            assert_eq!(
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut()),
                0
            );
            let mut now: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now);
            libc::sigismember(&now, libc::SIGSYS)
        };
        assert_eq!(blocked, 0, "SIGSYS stays unblocked in an armed thread");
        let (mut r, mut e, mut s) = (0u32, 0u32, 0u32);
        for _ in 0..20 {
            let ret = stub(
                libc::SYS_getresuid as u64,
                (&raw mut r) as u64,
                (&raw mut e) as u64,
                (&raw mut s) as u64,
            );
            assert_eq!(ret, 0);
        }
        // SAFETY: getuid has no preconditions.
        assert_eq!(r, unsafe { libc::getuid() });
        assert_eq!(h.enters.load(Ordering::Relaxed), 20);
    })
    .join()
    .expect("thread");
    drop(link);
}

/// Maps `mov %rdi, %rax; mov %rsi, %rdi; mov %rdx, %rsi; mov %rcx, %rdx;
/// syscall; ret`: a three-argument syscall from JIT code.
fn jit_syscall_stub_3() -> extern "C" fn(u64, u64, u64, u64) -> i64 {
    let code = [
        0x48, 0x89, 0xf8, 0x48, 0x89, 0xf7, 0x48, 0x89, 0xd6, 0x48, 0x89, 0xca, 0x0f, 0x05, 0xc3,
    ];
    let p = support::map_code(&code, false);
    // SAFETY: the code above: four u64 in, the syscall's i64 out.
    unsafe { std::mem::transmute::<*mut libc::c_void, extern "C" fn(u64, u64, u64, u64) -> i64>(p) }
}

static PROGRAM_SIGSYS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_program_sigsys(_sig: libc::c_int) {
    PROGRAM_SIGSYS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn the_program_keeps_its_own_sigsys_handler() {
    let hook = MarkedCounter::new(11);
    let Some(link) = attach_or_skip(Some(libc::SYS_getsid), hook.clone()) else {
        return;
    };
    if !syscall::stats().sud_enabled {
        eprintln!("skipped: Syscall User Dispatch is not armed");
        return;
    }
    // SAFETY: installing and later restoring a SIGSYS handler that only
    // counts.
    let old = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_program_sigsys as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGSYS, &sa, &mut old), 0);
        let mut now: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGSYS, std::ptr::null(), &mut now), 0);
        assert_eq!(now.sa_sigaction, on_program_sigsys as *const () as usize);
        old
    };
    // A SIGSYS that is not SUD's reaches the program's handler.
    // SAFETY: signalling this thread.
    unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGSYS) };
    assert_eq!(PROGRAM_SIGSYS.load(Ordering::SeqCst), 1);
    // SUD still works.
    let stub = jit_syscall_stub_3();
    mark(11);
    // SAFETY: getsid(0) has no preconditions.
    let sid = i64::from(unsafe { libc::getsid(0) });
    for _ in 0..5 {
        assert_eq!(stub(libc::SYS_getsid as u64, 0, 0, 0), sid);
    }
    mark(0);
    assert_eq!(hook.enters.load(Ordering::Relaxed), 6);
    assert_eq!(PROGRAM_SIGSYS.load(Ordering::SeqCst), 1);
    // SAFETY: restoring the previous action.
    unsafe { libc::sigaction(libc::SIGSYS, &old, std::ptr::null_mut()) };
    drop(link);
}

/// Dropped when the registry frees the last list that holds the hook.
struct DropFlag {
    dropped: Arc<AtomicBool>,
}

impl SyscallHook for DropFlag {
    fn enter(&self, _ctx: &mut SyscallCtx) -> SyscallAction {
        std::hint::black_box(&self.dropped);
        SyscallAction::Continue
    }
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[test]
fn attach_and_detach_while_threads_make_syscalls() {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: getpid/getppid/sched_yield have no
                    // preconditions.
                    unsafe {
                        libc::getpid();
                        libc::getppid();
                        libc::sched_yield();
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    for round in 0..200 {
        let dropped = Arc::new(AtomicBool::new(false));
        let filter = match round % 3 {
            0 => None,
            1 => Some(libc::SYS_getpid),
            _ => Some(libc::SYS_sched_yield),
        };
        let hook = Arc::new(DropFlag {
            dropped: dropped.clone(),
        });
        let Some(link) = attach_or_skip(filter, hook) else {
            stop.store(true, Ordering::Relaxed);
            return;
        };
        std::thread::yield_now();
        drop(link);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the detach freed the hook after its grace period"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        assert!(w.join().expect("worker") > 0);
    }
}

#[test]
fn a_library_loaded_later_is_rewritten_as_it_is_loaded() {
    let hook = MarkedCounter::new(12);
    let Some(link) = attach_or_skip(Some(libc::SYS_io_uring_setup), hook.clone()) else {
        return;
    };
    // liburing makes its syscalls with inline `syscall` instructions.
    let before = syscall::stats().sites_rewritten;
    // SAFETY: loading a system library by name.
    let lib = unsafe { libc::dlopen(c"liburing.so.2".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if lib.is_null() {
        eprintln!("skipped: liburing.so.2 is not installed");
        return;
    }
    if !rewrite_disabled() {
        let rewritten = syscall::stats().sites_rewritten - before;
        assert!(
            rewritten >= 10,
            "liburing's sites, rewritten by the dlopen: {rewritten}"
        );
        assert_eq!(
            syscall::rescan().expect("rescan"),
            0,
            "nothing left to rescan"
        );
    }
    // SAFETY: looking up liburing's documented entry points.
    let (get_probe, free_probe) = unsafe {
        (
            libc::dlsym(lib, c"io_uring_get_probe".as_ptr()),
            libc::dlsym(lib, c"io_uring_free_probe".as_ptr()),
        )
    };
    assert!(!get_probe.is_null() && !free_probe.is_null());
    // SAFETY: the documented signatures: `struct io_uring_probe
    // *io_uring_get_probe(void)` and `void io_uring_free_probe(struct
    // io_uring_probe *)`.
    unsafe {
        let get: extern "C" fn() -> *mut libc::c_void = std::mem::transmute(get_probe);
        let free: extern "C" fn(*mut libc::c_void) = std::mem::transmute(free_probe);
        mark(12);
        let probe = get();
        mark(0);
        if !probe.is_null() {
            free(probe);
        }
    }
    // (io_uring may be disabled: the attempt counts.)
    assert_eq!(hook.enters.load(Ordering::Relaxed), 1);
    drop(link);
}

// ---------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------

/// Sets the flags to `flags`, makes syscall `nr` with an inline `syscall`
/// (a rewritten site) and returns the flags right after it.
#[inline(never)]
fn syscall_with_flags(nr: i64, flags: u64) -> u64 {
    let out: u64;
    // SAFETY: a syscall without arguments that cannot fail; the flags are
    // the asm's own (`cld` before it returns: Rust code expects DF clear);
    // it clobbers what a syscall clobbers and uses the stack evenly.
    unsafe {
        asm!(
            "push {f}",
            "popfq",
            "syscall",
            "pushfq",
            "pop {f}",
            "cld",
            f = inout(reg) flags => out,
            inlateout("rax") nr => _,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    out
}

#[test]
fn the_callers_flags_survive_a_hooked_and_an_unhooked_syscall() {
    const CF: u64 = 1;
    const PF: u64 = 1 << 2;
    const AF: u64 = 1 << 4;
    const ZF: u64 = 1 << 6;
    const SF: u64 = 1 << 7;
    const DF: u64 = 1 << 10;
    const OF: u64 = 1 << 11;
    // Bit 1 is always set; IF is always set in user mode.
    const BASE: u64 = 0x202;
    const CHECKED: u64 = CF | PF | AF | ZF | SF | DF | OF;
    let hook = MarkedCounter::new(40);
    let Some(link) = attach_or_skip(Some(libc::SYS_getpgrp), hook.clone()) else {
        return;
    };
    mark(40);
    let patterns = [
        0,
        CF,
        ZF,
        OF,
        SF | OF,
        CF | PF | AF | ZF | SF | OF,
        ZF | PF,
        DF,
        DF | CF | OF,
    ];
    // getpgrp: hooked (the slow path, through the dispatcher); geteuid:
    // no hook (the fast path).
    for nr in [libc::SYS_getpgrp, libc::SYS_geteuid] {
        for &p in &patterns {
            let after = syscall_with_flags(nr, BASE | p);
            assert_eq!(
                after & CHECKED,
                p,
                "syscall {nr}: flags {:#x} came back as {:#x}",
                BASE | p,
                after
            );
        }
    }
    mark(0);
    assert_eq!(
        hook.enters.load(Ordering::Relaxed),
        patterns.len() as u64,
        "every getpgrp went through the hook"
    );
    drop(link);
}

/// A library with an inline `syscall` at a known label (`getppid`).
const INLINE_SYSCALL_C: &str = r#"
long lib_getppid(void)
{
	long r;
	__asm__ volatile(".globl lib_sys_site\n"
			 "lib_sys_site:\n"
			 "syscall"
			 : "=a"(r)
			 : "a"(110L)
			 : "rcx", "r11", "memory");
	return r;
}
"#;

#[test]
fn a_dlopened_library_is_rewritten_before_its_code_runs_without_a_rescan() {
    let hook = MarkedCounter::new(13);
    let Some(link) = attach_or_skip(Some(libc::SYS_getppid), hook.clone()) else {
        return;
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("syscall-dlopen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let _cleanup = CleanupDir(dir.clone());
    let src = dir.join("inline.c");
    std::fs::write(&src, INLINE_SYSCALL_C).expect("write");
    let so = dir.join("libinline_syscall.so");
    match std::process::Command::new("cc")
        .args(["-O1", "-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("cc: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!("skipped: no C compiler (`cc`): {e}");
            return;
        }
    }
    let path = c_path(&so);
    // SAFETY: a library built above, without constructors.
    let lib = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!lib.is_null(), "dlopen {}", so.display());
    // SAFETY: looking up the library's symbols.
    let (site, f) = unsafe {
        (
            libc::dlsym(lib, c"lib_sys_site".as_ptr()),
            libc::dlsym(lib, c"lib_getppid".as_ptr()),
        )
    };
    assert!(!site.is_null() && !f.is_null());
    if !rewrite_disabled() {
        // SAFETY: two bytes of the library's code.
        let bytes = unsafe { std::ptr::read(site.cast::<[u8; 2]>()) };
        assert_eq!(
            bytes,
            [0xff, 0xd0],
            "`call *%rax`, rewritten by the dlopen itself"
        );
    }
    // SAFETY: `long lib_getppid(void)`.
    let get: extern "C" fn() -> libc::c_long = unsafe { std::mem::transmute(f) };
    mark(13);
    let ppid = get();
    mark(0);
    // SAFETY: getppid has no preconditions.
    assert_eq!(ppid, unsafe { libc::getppid() } as libc::c_long);
    assert_eq!(hook.enters.load(Ordering::Relaxed), 1, "the hook saw it");
    drop(link);
}

/// Removes a test's directory however the test ends.
struct CleanupDir(PathBuf);

impl Drop for CleanupDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// The ids a hook sees in a child
// ---------------------------------------------------------------------------

/// Records `userbpf_vm::identity::pid()` (the cached ids that
/// `bpf_get_current_pid_tgid` returns) for syscalls made under mark 14: in
/// a vfork or posix_spawn child, which runs on its parent's thread-locals
/// (mark included). No allocation: the child shares our memory.
struct IdRecorder {
    pids: [AtomicI64; 4],
    n: AtomicU64,
}

impl SyscallHook for IdRecorder {
    fn enter(&self, _ctx: &mut SyscallCtx) -> SyscallAction {
        if marked_by(14) {
            let i = self.n.fetch_add(1, Ordering::SeqCst) as usize;
            if let Some(slot) = self.pids.get(i) {
                slot.store(i64::from(userbpf_vm::identity::pid()), Ordering::SeqCst);
            }
        }
        SyscallAction::Continue
    }
}

#[test]
fn hooks_in_vfork_and_posix_spawn_children_see_the_childs_ids_and_the_parent_keeps_its_own() {
    let rec = Arc::new(IdRecorder {
        pids: [const { AtomicI64::new(0) }; 4],
        n: AtomicU64::new(0),
    });
    let Some(l1) = attach_or_skip(Some(libc::SYS_exit_group), rec.clone()) else {
        return;
    };
    let Some(l2) = attach_or_skip(Some(libc::SYS_execve), rec.clone()) else {
        return;
    };
    let parent = userbpf_vm::identity::pid_tgid();
    // vfork: the child's exit_group.
    mark(14);
    let child = vfork_and_exit(5);
    mark(0);
    assert!(child > 0);
    let mut status = 0;
    // SAFETY: waiting for our child.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert_eq!(libc::WEXITSTATUS(status), 5);
    assert_eq!(
        userbpf_vm::identity::pid_tgid(),
        parent,
        "the parent's ids, after the vfork"
    );
    // posix_spawn (clone3 with CLONE_VM | CLONE_VFORK onto a new stack):
    // the child's execve.
    mark(14);
    let spawned = std::process::Command::new("/bin/true")
        .spawn()
        .expect("spawn /bin/true");
    mark(0);
    let spawned_pid = spawned.id() as i64;
    let out = spawned.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(
        userbpf_vm::identity::pid_tgid(),
        parent,
        "the parent's ids, after the spawn"
    );
    drop((l1, l2));
    if rewrite_disabled() {
        // (Syscall User Dispatch does not arm vfork children.)
        return;
    }
    assert!(
        rec.n.load(Ordering::SeqCst) >= 2,
        "both children's syscalls seen"
    );
    assert_eq!(
        rec.pids[0].load(Ordering::SeqCst),
        i64::from(child),
        "the vfork child's own pid"
    );
    assert_eq!(
        rec.pids[1].load(Ordering::SeqCst),
        spawned_pid,
        "the spawned child's own pid"
    );
}

/// Syscalls made during userbpf's own work (`userbpf_vm::quiet`) run no
/// hook and count no miss; the same syscalls outside it do.
#[test]
fn syscalls_during_userbpfs_own_work_run_no_hook_and_count_no_miss() {
    let hook = MarkedCounter::new(41);
    let Some(link) = attach_or_skip(Some(libc::SYS_getsid), hook.clone()) else {
        return;
    };
    mark(41);
    userbpf_vm::quiet::scope(|| {
        for _ in 0..5 {
            // SAFETY: getsid(0) has no preconditions.
            unsafe { libc::getsid(0) };
        }
    });
    assert_eq!(hook.enters.load(Ordering::Relaxed), 0);
    assert_eq!(hook.exits.load(Ordering::Relaxed), 0);
    assert_eq!(link.misses(), 0);
    for _ in 0..3 {
        // SAFETY: as above.
        unsafe { libc::getsid(0) };
    }
    mark(0);
    assert_eq!(hook.enters.load(Ordering::Relaxed), 3);
    assert_eq!(hook.exits.load(Ordering::Relaxed), 3);
    drop(link);
}

/// A hook that zeroes the upper halves of the ymm registers (as libc's
/// AVX `memcpy` does on its way out) and counts.
struct Vzeroupper(AtomicU64);

impl SyscallHook for Vzeroupper {
    fn enter(&self, _ctx: &mut SyscallCtx) -> SyscallAction {
        if marked_by(42) {
            self.0.fetch_add(1, Ordering::SeqCst);
            // SAFETY: vzeroupper on a CPU with AVX (checked by the test);
            // changes only the vector registers' upper halves.
            unsafe { asm!("vzeroupper") };
        }
        SyscallAction::Continue
    }

    fn exit(&self, _ctx: &SyscallCtx, _ret: i64) {
        if marked_by(42) {
            // SAFETY: as above.
            unsafe { asm!("vzeroupper") };
        }
    }
}

/// An inline `getppid` with ymm2 and ymm12 all ones across it: the low
/// word of each upper half, and-ed (all ones when both survived).
#[inline(never)]
fn avx_state_across_a_syscall() -> u64 {
    let out: u64;
    // SAFETY: AVX instructions on a CPU with AVX (checked by the caller),
    // a getppid (no arguments); clobbers only what it declares.
    unsafe {
        asm!(
            "vpcmpeqd ymm2, ymm2, ymm2",
            "vpcmpeqd ymm12, ymm12, ymm12",
            "mov eax, {nr}",
            "syscall",
            "vextractf128 xmm3, ymm2, 1",
            "vextractf128 xmm4, ymm12, 1",
            "movq rax, xmm3",
            "movq rdx, xmm4",
            "and rax, rdx",
            "vzeroupper",
            nr = const libc::SYS_getppid,
            out("rax") out,
            out("rcx") _, out("rdx") _, out("r11") _,
            out("xmm2") _, out("xmm3") _, out("xmm4") _, out("xmm12") _,
        );
    }
    out
}

/// With AVX, a hooked syscall keeps the ymm registers whole, whatever the
/// hooks' code does to them.
#[test]
fn a_hooked_syscall_keeps_the_avx_state_of_its_caller() {
    if !std::arch::is_x86_feature_detected!("avx") {
        eprintln!("skipped: no AVX on this CPU");
        return;
    }
    assert_eq!(avx_state_across_a_syscall(), u64::MAX);
    let hook = Arc::new(Vzeroupper(AtomicU64::new(0)));
    let Some(link) = attach_or_skip(Some(libc::SYS_getppid), hook.clone()) else {
        return;
    };
    mark(42);
    for _ in 0..3 {
        assert_eq!(avx_state_across_a_syscall(), u64::MAX);
    }
    mark(0);
    assert_eq!(hook.0.load(Ordering::SeqCst), 3);
    drop(link);
}
