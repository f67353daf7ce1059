//! Changing code that other threads may be running.
//!
//! A site goes from its original bytes to a `jmp` to its trampoline (and
//! back) in three writes, each followed by a serialising barrier on every
//! core (`membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)`): an
//! `int3` on the first byte, then the other bytes, then the first byte.
//! A thread that reaches the `int3` meanwhile takes a `SIGTRAP` that this
//! module sends to the displaced instructions' copy (the function,
//! unhooked). When the original bytes are several instructions, a thread
//! may also be *between* them (preempted after the first): before the
//! other bytes change, every other thread is interrupted by a signal whose
//! handler moves such a thread to the same point of the copy.

use std::io;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the signal handlers know of a site: where it is, how long its
/// window is, and where each displaced instruction lives in its copy.
#[derive(Debug)]
pub struct SiteCode {
    /// The site's address.
    pub site: u64,
    /// Bytes displaced.
    pub len: u64,
    /// Offsets (from the site) of the displaced instructions.
    pub boundaries: Vec<u64>,
    /// Their addresses in the copy (same order).
    pub copies: Vec<u64>,
}

const MAX_SITES: usize = 4096;

/// Every site ever prepared (entries are leaked and never change once
/// published, so the signal handlers read them without locks).
static SITES: [AtomicPtr<SiteCode>; MAX_SITES] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_SITES];
static SITE_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Serialises patching (and the handler set-up).
static PATCH_LOCK: Mutex<()> = Mutex::new(());

/// The lock every writer of code in this process holds while a code page
/// is writable (the hooks here, the syscall rewriter): one writer's
/// `mprotect` back to read-execute must not land while another writes.
pub fn code_lock() -> std::sync::MutexGuard<'static, ()> {
    PATCH_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Publishes a site's code for the signal handlers.
pub fn publish(code: SiteCode) -> Result<&'static SiteCode, String> {
    let _g = PATCH_LOCK
        .lock()
        .map_err(|_| "patch lock poisoned".to_string())?;
    let n = SITE_COUNT.load(Ordering::Acquire);
    if n == MAX_SITES {
        return Err(format!("more than {MAX_SITES} hook sites in one process"));
    }
    let leaked: &'static mut SiteCode = Box::leak(Box::new(code));
    SITES[n].store(leaked, Ordering::Release);
    SITE_COUNT.store(n + 1, Ordering::Release);
    Ok(leaked)
}

fn sites() -> impl Iterator<Item = &'static SiteCode> {
    let n = SITE_COUNT.load(Ordering::Acquire);
    SITES[..n].iter().filter_map(|p| {
        let p = p.load(Ordering::Acquire);
        // SAFETY: published entries are leaked and immutable.
        (!p.is_null()).then(|| unsafe { &*p })
    })
}

/// Where a thread stopped at `rip` must continue: the copy of the
/// displaced instruction it was about to run, if `rip` is inside a
/// window (past its first byte; `rip` at a site's first byte is handled
/// by the `int3`).
fn relocate(rip: u64) -> Option<u64> {
    for s in sites() {
        if rip > s.site && rip < s.site + s.len {
            let i = s.boundaries.iter().position(|b| s.site + b == rip)?;
            return s.copies.get(i).copied();
        }
    }
    None
}

static OLD_TRAP: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
static STOP_GEN: AtomicU64 = AtomicU64::new(1);
static STOP_ACKS: AtomicUsize = AtomicUsize::new(0);
static STOP_SIGNAL: AtomicUsize = AtomicUsize::new(0);

fn rip_of(ctx: *mut libc::c_void) -> *mut i64 {
    let uc = ctx.cast::<libc::ucontext_t>();
    // SAFETY: the kernel passes a valid ucontext to SA_SIGINFO handlers.
    unsafe { &raw mut (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] }
}

extern "C" fn on_trap(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let rip = rip_of(ctx);
    // SAFETY: a valid ucontext (see rip_of).
    let at = unsafe { *rip } as u64;
    let hit = at.wrapping_sub(1);
    for s in sites() {
        if s.site == hit {
            if let Some(first) = s.copies.first() {
                // SAFETY: as above.
                unsafe { *rip = *first as i64 };
                return;
            }
        }
    }
    // Not ours: the previous handler, or the default action.
    let old = OLD_TRAP.load(Ordering::Acquire);
    if !old.is_null() {
        // SAFETY: a sigaction saved when ours was installed (leaked).
        let old = unsafe { &*old };
        let h = old.sa_sigaction;
        if h != libc::SIG_DFL && h != libc::SIG_IGN {
            if old.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler, called as it expects.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(h) };
                f(sig, info, ctx);
            } else {
                // SAFETY: as above.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
                f(sig);
            }
            return;
        }
        if h == libc::SIG_IGN {
            return;
        }
    }
    // SAFETY: resetting to the default action and re-raising: the process
    // ends as it would have without us.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

extern "C" fn on_stop(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let rip = rip_of(ctx);
    // SAFETY: a valid ucontext.
    if let Some(to) = relocate(unsafe { *rip } as u64) {
        // SAFETY: as above.
        unsafe { *rip = to as i64 };
    }
    // SAFETY: the kernel passes a valid siginfo; rt_tgsigqueueinfo put
    // the generation in its value.
    let gen = unsafe { (*info).si_value().sival_ptr } as u64;
    if gen == STOP_GEN.load(Ordering::Acquire) {
        STOP_ACKS.fetch_add(1, Ordering::AcqRel);
    }
}

fn install_handlers() -> Result<(), String> {
    if STOP_SIGNAL.load(Ordering::Acquire) != 0 {
        return Ok(());
    }
    let stop_sig = std::env::var("USERBPF_PATCH_SIGNAL")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or_else(|| libc::SIGRTMAX() - 1);
    // SAFETY: plain sigaction calls with zeroed, then filled structs; the
    // old SIGTRAP action is leaked for the handler to chain to.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_trap as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK | libc::SA_NODEFER;
        libc::sigemptyset(&mut sa.sa_mask);
        let old: &'static mut libc::sigaction = Box::leak(Box::new(std::mem::zeroed()));
        if libc::sigaction(libc::SIGTRAP, &sa, old) != 0 {
            return Err(format!(
                "sigaction(SIGTRAP): {}",
                io::Error::last_os_error()
            ));
        }
        OLD_TRAP.store(old, Ordering::Release);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(stop_sig, &sa, std::ptr::null_mut()) != 0 {
            return Err(format!(
                "sigaction({stop_sig}): {}",
                io::Error::last_os_error()
            ));
        }
    }
    STOP_SIGNAL.store(stop_sig as usize, Ordering::Release);
    Ok(())
}

const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_long = 1 << 5;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_long = 1 << 6;

/// Serialises instruction fetch on every core running this process.
fn sync_core() {
    // SAFETY: membarrier takes no pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
            0,
            0,
        )
    };
    if r != 0 {
        // SAFETY: as above.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
                0,
                0,
            );
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
                0,
                0,
            );
        }
    }
}

/// Interrupts every other thread once (their handler moves any thread
/// that is between displaced instructions to the copy) and waits until
/// each has handled it, or until a thread that does not run (blocked in
/// the kernel: it handles the signal before it runs user code again) has
/// had a second.
fn stop_others() {
    let sig = STOP_SIGNAL.load(Ordering::Acquire) as i32;
    let gen = STOP_GEN.fetch_add(1, Ordering::AcqRel) + 1;
    STOP_ACKS.store(0, Ordering::Release);
    // SAFETY: getpid/gettid have no preconditions.
    let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    let mut sent = 0usize;
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if tid == me {
            continue;
        }
        // SAFETY: a zeroed siginfo filled as rt_tgsigqueueinfo wants
        // (SI_QUEUE from user space, our pid and uid, the generation).
        let ok = unsafe {
            let mut si: libc::siginfo_t = std::mem::zeroed();
            si.si_signo = sig;
            si.si_code = libc::SI_QUEUE;
            let raw = (&raw mut si).cast::<u8>();
            // si_pid at 16, si_uid at 20, si_value at 24 (x86-64).
            raw.add(16).cast::<i32>().write_unaligned(pid);
            raw.add(20).cast::<u32>().write_unaligned(libc::getuid());
            raw.add(24).cast::<u64>().write_unaligned(gen);
            libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, tid, sig, &raw const si) == 0
        };
        if ok {
            sent += 1;
        }
    }
    let start = Instant::now();
    while STOP_ACKS.load(Ordering::Acquire) < sent && start.elapsed() < Duration::from_secs(1) {
        std::thread::yield_now();
    }
}

/// The protection of the mapping that holds `addr` (`/proc/self/maps`).
fn protection_of(addr: u64) -> Option<i32> {
    crate::maps::mapping_of(addr).map(|m| m.prot())
}

/// Writes `bytes` at `addr` in code that threads may be running, as the
/// module's documentation describes. `window_insns`: how many instructions
/// the bytes being replaced are (more than one needs every thread
/// stopped once).
pub fn write_code(addr: u64, bytes: &[u8], window_insns: usize) -> Result<(), String> {
    // Userbpf's own code change (see `userbpf_vm::own_code`).
    userbpf_vm::own_code::scope(|| write_code_in_scope(addr, bytes, window_insns))
}

fn write_code_in_scope(addr: u64, bytes: &[u8], window_insns: usize) -> Result<(), String> {
    let _g = PATCH_LOCK
        .lock()
        .map_err(|_| "patch lock poisoned".to_string())?;
    install_handlers()?;
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096) as u64;
    let start = addr & !(page - 1);
    let end = (addr + bytes.len() as u64).div_ceil(page) * page;
    let len = (end - start) as usize;
    let restore = protection_of(start).unwrap_or(libc::PROT_READ | libc::PROT_EXEC);
    // The page stays executable: other threads run it meanwhile.
    // SAFETY: the range is mapped code of this process (the caller found
    // a function there); only the protection changes.
    if unsafe {
        libc::mprotect(
            start as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
        )
    } != 0
    {
        return Err(format!(
            "mprotect({start:#x}, {len}) to patch {addr:#x}: {}",
            io::Error::last_os_error()
        ));
    }
    let p = addr as *mut u8;
    // SAFETY: the bytes are writable now; each write is a single byte or
    // bytes no thread executes (behind the int3, with every thread moved
    // out of them).
    unsafe {
        std::ptr::write_volatile(p, 0xcc);
        sync_core();
        if window_insns > 1 {
            stop_others();
        }
        for (i, b) in bytes.iter().enumerate().skip(1) {
            std::ptr::write_volatile(p.add(i), *b);
        }
        sync_core();
        std::ptr::write_volatile(p, bytes[0]);
        sync_core();
    }
    // SAFETY: as above; the protection the mapping had.
    if unsafe { libc::mprotect(start as *mut libc::c_void, len, restore) } != 0 {
        return Err(format!(
            "mprotect({start:#x}, {len}) after patching {addr:#x}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}
