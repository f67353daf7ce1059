//! Syscall User Dispatch: the safety net for syscalls the rewrite missed.
//!
//! Once a thread is armed (`prctl(PR_SET_SYSCALL_USER_DISPATCH)` with the
//! trampoline's code as the allowed range and a per-thread selector byte
//! set to BLOCK), a `syscall` instruction anywhere else raises SIGSYS
//! instead of reaching the kernel. The handler makes no syscall: it
//! rewrites the interrupted context so that the thread resumes in the
//! trampoline exactly as if the site had been rewritten (`r11` = the
//! return address, `rcx` = the caller's stack pointer), and returns
//! through this crate's own `SA_RESTORER`, which lies inside the allowed
//! range (glibc's restorer is outside it: its `rt_sigreturn` would be
//! blocked unless rewritten).
//!
//! SUD is per thread and not inherited by `clone`/`fork`. Threads are
//! armed only while hooks are attached, and by default only while some
//! executable memory escapes the rewrite (see `coverage.rs`; an armed
//! thread takes the kernel's slow syscall path, tens of ns per syscall,
//! even for allowed syscalls): the thread that arms (at an attach, or
//! that made the code that needs SUD) arms itself and asks every other
//! thread to do the same with a signal (`SIGRTMAX-2`, or
//! `USERBPF_SYSCALL_SIGNAL`; threads that block it stay unarmed); on the
//! last detach they disarm the same way. Clone children onto a new stack
//! arm themselves before they return to their caller, fork children in the
//! dispatcher; vfork children (which share their parent's thread-locals,
//! hence its selector) are not armed. `USERBPF_SYSCALL_SUD=0` disables SUD,
//! `USERBPF_SYSCALL_SUD=1` arms it whenever hooks are attached.
//!
//! A SIGSYS that arrives while SIGSYS is blocked kills the process, so the
//! dispatcher keeps SIGSYS out of the signal masks of armed threads (it
//! edits the sets passed to `rt_sigprocmask` and the `sa_mask` of
//! `rt_sigaction`), and keeps the SIGSYS handler for itself: a handler the
//! program installs for SIGSYS is remembered and called for the SIGSYS
//! that are not SUD's (seccomp's `SECCOMP_RET_TRAP`, `kill`).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::dispatch::{self, copy_user, Direction};
use super::signals::{
    call_handler, redirect_to_trampoline, rt_sigaction, KernelSigaction, SavedAction, SIGSET_SIZE,
};
use super::trampoline::{self, Frame, Mode};

const PR_SET_SYSCALL_USER_DISPATCH: u64 = 59;
const PR_SYS_DISPATCH_OFF: u64 = 0;
const PR_SYS_DISPATCH_ON: u64 = 1;
const SELECTOR_ALLOW: u8 = 0;
const SELECTOR_BLOCK: u8 = 1;
/// `si_code` of a SIGSYS raised by Syscall User Dispatch.
const SYS_USER_DISPATCH: i32 = 2;
const SIGSYS_BIT: u64 = 1 << (libc::SIGSYS - 1);
/// How long a switch waits for the other threads to follow.
const SWITCH_TIMEOUT: Duration = Duration::from_millis(500);

thread_local! {
    /// The selector the kernel reads at every syscall of an armed thread.
    static SELECTOR: Cell<u8> = const { Cell::new(SELECTOR_ALLOW) };
    /// Whether the thread that owns these thread-locals is armed.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// The id of the thread that owns these thread-locals (0: not known
    /// yet). A vfork child shares its parent's thread-locals: its own id
    /// differs.
    static OWNER: Cell<u32> = const { Cell::new(0) };
}

/// The SIGSYS handler is installed and the kernel has SUD.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Threads should be armed: hooks are attached and SUD is wanted.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Hooks are attached.
static HOOKS: AtomicBool = AtomicBool::new(false);
/// When threads are armed: [`POLICY_OFF`], [`POLICY_AUTO`] or
/// [`POLICY_ALWAYS`] ([`set_policy`]).
static POLICY: AtomicU8 = AtomicU8::new(POLICY_AUTO);
/// Never.
pub const POLICY_OFF: u8 = 0;
/// While hooks are attached and some code escapes the rewrite
/// ([`super::coverage::needed`]).
pub const POLICY_AUTO: u8 = 1;
/// While hooks are attached.
pub const POLICY_ALWAYS: u8 = 2;
/// Serialises [`switch`]es.
static SWITCH: Mutex<()> = Mutex::new(());
static ARM_SIGNAL: AtomicUsize = AtomicUsize::new(0);
static THREADS: AtomicU64 = AtomicU64::new(0);
static DISPATCHED: AtomicU64 = AtomicU64::new(0);
static ACKS: AtomicUsize = AtomicUsize::new(0);
static COOKIE: AtomicU64 = AtomicU64::new(0x5553_4244_0000_0000);

/// The program's own SIGSYS action, called for SIGSYS that are not SUD's.
static PREV: SavedAction = SavedAction::new();

/// Counters for [`super::stats`].
#[derive(Debug, Clone, Copy)]
pub struct Counters {
    /// SUD is available (handler installed).
    pub enabled: bool,
    /// Threads are armed (hooks attached, and SUD needed or always on).
    pub active: bool,
    /// Times a thread armed itself.
    pub threads: u64,
    /// SIGSYS sent to the trampoline.
    pub dispatched: u64,
}

/// The counters.
pub fn counters() -> Counters {
    Counters {
        enabled: ENABLED.load(Ordering::Relaxed),
        active: ACTIVE.load(Ordering::Relaxed),
        threads: THREADS.load(Ordering::Relaxed),
        dispatched: DISPATCHED.load(Ordering::Relaxed),
    }
}

fn unblock_sigsys() {
    let set: u64 = SIGSYS_BIT;
    // SAFETY: a valid 8-byte signal set; no old set.
    unsafe {
        trampoline::raw_syscall(
            libc::SYS_rt_sigprocmask,
            [
                libc::SIG_UNBLOCK as u64,
                (&raw const set) as u64,
                0,
                SIGSET_SIZE,
                0,
                0,
            ],
        );
    }
}

/// Records the calling thread as the owner of its thread-locals (if no
/// one is yet). Called before a clone whose child shares them.
pub fn claim_owner() {
    if OWNER.get() == 0 {
        OWNER.set(trampoline::gettid());
    }
}

/// Whether the caller owns its thread-locals (false in a vfork child).
fn is_owner() -> bool {
    let me = trampoline::gettid();
    match OWNER.get() {
        0 => {
            OWNER.set(me);
            true
        }
        owner => owner == me,
    }
}

fn prctl_dispatch(on: bool) -> i64 {
    let selector = SELECTOR.with(|s| s.as_ptr()) as u64;
    let (start, end) = trampoline::text_range();
    let args = if on {
        [
            PR_SET_SYSCALL_USER_DISPATCH,
            PR_SYS_DISPATCH_ON,
            start,
            end - start,
            selector,
            0,
        ]
    } else {
        [
            PR_SET_SYSCALL_USER_DISPATCH,
            PR_SYS_DISPATCH_OFF,
            0,
            0,
            0,
            0,
        ]
    };
    // SAFETY: the selector is this thread's, alive as long as the thread;
    // the range is the trampoline's code.
    unsafe { trampoline::raw_syscall(libc::SYS_prctl, args) }
}

/// Arms SUD in the calling thread.
fn arm_current() -> Result<(), i64> {
    claim_owner();
    SELECTOR.set(SELECTOR_BLOCK);
    let r = prctl_dispatch(true);
    if r != 0 {
        SELECTOR.set(SELECTOR_ALLOW);
        return Err(r);
    }
    ARMED.set(true);
    THREADS.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn disarm_current() {
    prctl_dispatch(false);
    ARMED.set(false);
    SELECTOR.set(SELECTOR_ALLOW);
}

/// Arms or disarms the calling thread as [`ACTIVE`] says.
fn sync_current() {
    let want = ACTIVE.load(Ordering::Acquire);
    if want && !ARMED.get() {
        unblock_sigsys();
        let _ = arm_current();
    } else if !want && ARMED.get() {
        disarm_current();
    }
}

/// A thread just created by a hooked clone, with thread-locals of its
/// own: arms it if hooks are attached.
pub fn arm_new_thread() {
    if ENABLED.load(Ordering::Acquire) {
        OWNER.set(trampoline::gettid());
        ARMED.set(false);
        sync_current();
    }
}

/// In a fork child (one thread, its own memory): SUD is not inherited.
pub fn after_fork() {
    if ENABLED.load(Ordering::Acquire) {
        OWNER.set(trampoline::gettid());
        ARMED.set(false);
        sync_current();
    }
}

fn arm_signal() -> i32 {
    std::env::var("USERBPF_SYSCALL_SIGNAL")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or_else(|| libc::SIGRTMAX() - 2)
}

/// Installs the SIGSYS handler and checks that the kernel has SUD. No
/// thread is armed until [`set_active`].
pub fn install() -> Result<(), String> {
    match std::env::var("USERBPF_SYSCALL_SUD").as_deref() {
        Ok("0" | "off") => return Err("disabled by USERBPF_SYSCALL_SUD=0".into()),
        Ok("1" | "on" | "always") => POLICY.store(POLICY_ALWAYS, Ordering::Release),
        _ => {}
    }
    if let Err(r) = arm_current() {
        return Err(format!(
            "prctl(PR_SET_SYSCALL_USER_DISPATCH): errno {} (a kernel without CONFIG_SYSCALL_USER_DISPATCH?)",
            -r
        ));
    }
    disarm_current();
    let sig = arm_signal();
    let arm = KernelSigaction::ours(on_arm, libc::SA_RESTART, 0);
    let r = rt_sigaction(sig, Some(&arm), None);
    if r != 0 {
        return Err(format!("rt_sigaction({sig}): errno {}", -r));
    }
    ARM_SIGNAL.store(sig as usize, Ordering::Release);
    claim_sigsys()?;
    // The dispatcher sees every signal mask and action from now on.
    dispatch::mark_special(libc::SYS_rt_sigprocmask);
    dispatch::mark_special(libc::SYS_rt_sigaction);
    ENABLED.store(true, Ordering::Release);
    Ok(())
}

/// Installs our SIGSYS handler (again: a raw syscall may have replaced
/// it), remembering the program's, and keeps SIGSYS out of the masks of
/// the other handlers.
fn claim_sigsys() -> Result<(), String> {
    let act = KernelSigaction::ours(on_sigsys, 0, !0);
    let mut old = KernelSigaction::default();
    let r = rt_sigaction(libc::SIGSYS, Some(&act), Some(&mut old));
    if r != 0 {
        return Err(format!("rt_sigaction(SIGSYS): errno {}", -r));
    }
    if old.handler != act.handler {
        PREV.store(&old);
    }
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || sig == libc::SIGSYS {
            continue;
        }
        let mut a = KernelSigaction::default();
        if rt_sigaction(sig, None, Some(&mut a)) != 0 || a.handler <= 1 {
            continue;
        }
        if a.mask & SIGSYS_BIT != 0 {
            a.mask &= !SIGSYS_BIT;
            rt_sigaction(sig, Some(&a), None);
        }
    }
    Ok(())
}

/// Records whether hooks are attached, and arms or disarms the threads
/// accordingly ([`switch`]).
pub fn set_hooks_attached(attached: bool) {
    HOOKS.store(attached, Ordering::Release);
    switch();
}

/// Sets when threads are armed ([`POLICY_OFF`], [`POLICY_AUTO`],
/// [`POLICY_ALWAYS`]), and arms or disarms them accordingly ([`switch`]).
pub fn set_policy(policy: u8) {
    POLICY.store(policy, Ordering::Release);
    switch();
}

/// [`super::coverage::needed`] changed: arms the threads if the policy
/// is [`POLICY_AUTO`] and hooks are attached.
pub fn needs_changed() {
    switch();
}

/// Arms (hooks attached, and the policy says so) or disarms every
/// thread: the calling one directly, the others through a signal, waiting
/// up to half a second for them. Disarmed threads pay nothing for SUD;
/// armed ones pay the kernel's slow syscall path (tens of ns per
/// syscall).
fn switch() {
    if !ENABLED.load(Ordering::Acquire) {
        return;
    }
    let _one = SWITCH.lock();
    let wanted = match POLICY.load(Ordering::Acquire) {
        POLICY_ALWAYS => true,
        POLICY_AUTO => super::coverage::needed(),
        _ => false,
    };
    let active = HOOKS.load(Ordering::Acquire) && wanted;
    if ACTIVE.load(Ordering::Acquire) == active {
        // The calling thread at least (it may have been created while
        // nothing was armed, by a clone no hook saw).
        sync_current();
        return;
    }
    if active {
        let _ = claim_sigsys();
    }
    ACTIVE.store(active, Ordering::Release);
    sync_current();
    signal_other_threads();
}

/// Whether thread `tid` blocks signal `sig` (from its `/proc` status).
fn blocks(tid: u32, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

/// Asks every other thread to follow [`ACTIVE`], and waits for those that
/// can hear it.
fn signal_other_threads() {
    let sig = ARM_SIGNAL.load(Ordering::Acquire) as i32;
    let cookie = COOKIE.fetch_add(1, Ordering::AcqRel) + 1;
    ACKS.store(0, Ordering::Release);
    // SAFETY: getpid/getuid have no preconditions.
    let (pid, uid) = unsafe { (libc::getpid(), libc::getuid()) };
    let me = trampoline::gettid();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    let mut sent = 0usize;
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if tid == me || blocks(tid, sig) {
            continue;
        }
        // SAFETY: a zeroed siginfo filled as rt_tgsigqueueinfo wants
        // (SI_QUEUE, our pid and uid, the cookie as the value).
        let r = unsafe {
            let mut si: libc::siginfo_t = std::mem::zeroed();
            si.si_signo = sig;
            si.si_code = libc::SI_QUEUE;
            let raw = (&raw mut si).cast::<u8>();
            // si_pid at 16, si_uid at 20, si_value at 24 (x86-64).
            raw.add(16).cast::<i32>().write_unaligned(pid);
            raw.add(20).cast::<u32>().write_unaligned(uid);
            raw.add(24).cast::<u64>().write_unaligned(cookie);
            trampoline::raw_syscall(
                libc::SYS_rt_tgsigqueueinfo,
                [
                    pid as u64,
                    u64::from(tid),
                    sig as u64,
                    (&raw const si) as u64,
                    0,
                    0,
                ],
            )
        };
        if r == 0 {
            sent += 1;
        }
    }
    let start = Instant::now();
    while ACKS.load(Ordering::Acquire) < sent && start.elapsed() < SWITCH_TIMEOUT {
        std::thread::yield_now();
    }
}

/// Reads a field of a siginfo at a byte offset.
///
/// # Safety
///
/// `info` is a valid siginfo and `offset + size_of::<T>()` <= 128.
unsafe fn siginfo_field<T: Copy>(info: *const libc::siginfo_t, offset: usize) -> T {
    // SAFETY: the caller's contract.
    unsafe { info.cast::<u8>().add(offset).cast::<T>().read_unaligned() }
}

extern "C" fn on_arm(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext to SA_SIGINFO
    // handlers.
    unsafe {
        if (*info).si_code != libc::SI_QUEUE {
            return;
        }
        let cookie = siginfo_field::<u64>(info, 24);
        let current = COOKIE.load(Ordering::Acquire);
        if cookie >> 32 != current >> 32 {
            return;
        }
        sync_current();
        if ARMED.get() {
            // The mask restored when the handler returns: SIGSYS
            // unblocked.
            let uc = ctx.cast::<libc::ucontext_t>();
            let mask = (&raw mut (*uc).uc_sigmask).cast::<u64>();
            mask.write_unaligned(mask.read_unaligned() & !SIGSYS_BIT);
        }
        if cookie == current {
            ACKS.fetch_add(1, Ordering::AcqRel);
        }
    }
}

extern "C" fn on_sigsys(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to SA_SIGINFO handlers.
    let code = unsafe { (*info).si_code };
    if code != SYS_USER_DISPATCH {
        chain(sig, info, ctx);
        return;
    }
    // SAFETY: a valid siginfo; for SIGSYS, si_syscall is the int at 24.
    let nr = unsafe { siginfo_field::<i32>(info, 24) };
    let uc = ctx.cast::<libc::ucontext_t>();
    // SAFETY: a valid ucontext; the trapped syscall's return address is
    // the interrupted instruction pointer.
    unsafe {
        let ip = (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
        redirect_to_trampoline(ctx, i64::from(nr), ip);
    }
    DISPATCHED.fetch_add(1, Ordering::Relaxed);
}

/// Runs `f` with this thread's selector at ALLOW: syscalls from anywhere
/// reach the kernel (for a program's signal handler called from one of
/// ours, while SIGSYS may be blocked).
pub fn allowing_syscalls<T>(f: impl FnOnce() -> T) -> T {
    let saved = SELECTOR.replace(SELECTOR_ALLOW);
    let out = f();
    SELECTOR.set(saved);
    out
}

/// A SIGSYS that is not SUD's: the program's handler, or the default.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let p = PREV.load();
    if p.handler == 0 {
        // SIG_DFL: the process dies of it once this handler returns.
        let dfl = KernelSigaction::default();
        rt_sigaction(sig, Some(&dfl), None);
        // SAFETY: tgkill on this thread.
        unsafe {
            let pid = trampoline::raw_syscall(libc::SYS_getpid, [0; 6]);
            trampoline::raw_syscall(
                libc::SYS_tgkill,
                [
                    pid as u64,
                    u64::from(trampoline::gettid()),
                    sig as u64,
                    0,
                    0,
                    0,
                ],
            );
        }
        return;
    }
    // The program's handler may make syscalls from anywhere.
    allowing_syscalls(|| call_handler(&p, sig, info, ctx));
}

/// `rt_sigprocmask(how, set, oldset, size)` from an armed thread: SIGSYS
/// stays unblocked.
pub fn filter_sigprocmask(f: &mut Frame) -> Mode {
    let [how, set, _, size, ..] = f.call.ctx.args;
    // (A vfork child sees its parent's mark: keeping SIGSYS unblocked
    // there is harmless.)
    if !ARMED.get()
        || set == 0
        || size != SIGSET_SIZE
        || (how != libc::SIG_BLOCK as u64 && how != libc::SIG_SETMASK as u64)
    {
        return Mode::Syscall;
    }
    let mut mask = 0u64;
    if !copy_user((&raw mut mask).cast(), set, 8, Direction::Read) {
        return Mode::Syscall;
    }
    if mask & SIGSYS_BIT != 0 {
        f.scratch[0] = mask & !SIGSYS_BIT;
        f.call.ctx.args[1] = f.scratch.as_ptr() as u64;
    }
    Mode::Syscall
}

/// `rt_sigaction(sig, act, oact, size)`: the SIGSYS action is kept for
/// SUD (the program's is remembered and chained to); other handlers never
/// block SIGSYS.
pub fn filter_sigaction(f: &mut Frame) -> Mode {
    let [sig, act, oact, size, ..] = f.call.ctx.args;
    if !ENABLED.load(Ordering::Acquire) || size != SIGSET_SIZE {
        return Mode::Syscall;
    }
    if sig == libc::SIGSYS as u64 && !is_owner() {
        // Not an armed thread (a vfork child resetting its handlers, with
        // a signal table of its own): the kernel's business.
        return Mode::Syscall;
    }
    let len = std::mem::size_of::<KernelSigaction>();
    let mut new = KernelSigaction::default();
    if act != 0 && !copy_user((&raw mut new).cast(), act, len, Direction::Read) {
        return Mode::Syscall;
    }
    if sig == libc::SIGSYS as u64 {
        if oact != 0 {
            let mut old = PREV.load();
            if !copy_user((&raw mut old).cast(), oact, len, Direction::Write) {
                f.call.result = (-(libc::EFAULT as i64)) as u64;
                return Mode::Skip;
            }
        }
        if act != 0 {
            PREV.store(&new);
        }
        f.call.result = 0;
        return Mode::Skip;
    }
    if act != 0 && new.mask & SIGSYS_BIT != 0 {
        new.mask &= !SIGSYS_BIT;
        let scratch = f.scratch.as_mut_ptr().cast::<KernelSigaction>();
        // SAFETY: the scratch area is 128 bytes, 8-aligned, this frame's.
        unsafe { scratch.write(new) };
        f.call.ctx.args[1] = scratch as u64;
    }
    Mode::Syscall
}
