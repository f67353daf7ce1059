//! The signal plumbing the interception shares: the kernel's `struct
//! sigaction`, raw `rt_sigaction` (glibc's wrapper would impose its own
//! restorer, which Syscall User Dispatch blocks), remembered actions to
//! chain to, and the redirection of a trapped syscall into the trampoline.

use std::sync::atomic::{AtomicU64, Ordering};

use super::trampoline;

/// `sa_flags` bit: `restorer` is the handler's return path.
pub const SA_RESTORER: u64 = 0x0400_0000;
/// The kernel's signal set size on x86-64.
pub const SIGSET_SIZE: u64 = 8;

/// The kernel's `struct sigaction` (x86-64).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelSigaction {
    /// `sa_handler` / `sa_sigaction` (0 = `SIG_DFL`, 1 = `SIG_IGN`).
    pub handler: u64,
    /// `sa_flags`.
    pub flags: u64,
    /// `sa_restorer`.
    pub restorer: u64,
    /// `sa_mask` (signal `n` is bit `n - 1`).
    pub mask: u64,
}

impl KernelSigaction {
    /// A handler of this crate: `SA_SIGINFO`, on the alternate stack if
    /// the thread has one, returning through the trampoline's restorer.
    pub fn ours(
        handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void),
        extra_flags: i32,
        mask: u64,
    ) -> Self {
        KernelSigaction {
            handler: handler as *const () as u64,
            flags: (libc::SA_SIGINFO | libc::SA_ONSTACK | extra_flags) as u64 | SA_RESTORER,
            restorer: trampoline::restorer(),
            mask,
        }
    }
}

/// Raw `rt_sigaction(sig, act, old)`; returns 0 or `-errno`.
pub fn rt_sigaction(
    sig: i32,
    act: Option<&KernelSigaction>,
    old: Option<&mut KernelSigaction>,
) -> i64 {
    let act = act.map_or(0, |a| a as *const KernelSigaction as u64);
    let old = old.map_or(0, |o| o as *mut KernelSigaction as u64);
    // SAFETY: both pointers are null or valid kernel sigaction structs.
    unsafe {
        trampoline::raw_syscall(
            libc::SYS_rt_sigaction,
            [sig as u64, act, old, SIGSET_SIZE, 0, 0],
        )
    }
}

/// A remembered action, readable from a signal handler.
#[derive(Debug)]
pub struct SavedAction([AtomicU64; 4]);

impl SavedAction {
    /// `SIG_DFL`.
    pub const fn new() -> Self {
        SavedAction([const { AtomicU64::new(0) }; 4])
    }

    /// The action.
    pub fn load(&self) -> KernelSigaction {
        KernelSigaction {
            handler: self.0[0].load(Ordering::Acquire),
            flags: self.0[1].load(Ordering::Acquire),
            restorer: self.0[2].load(Ordering::Acquire),
            mask: self.0[3].load(Ordering::Acquire),
        }
    }

    /// Replaces the action.
    pub fn store(&self, a: &KernelSigaction) {
        self.0[1].store(a.flags, Ordering::Release);
        self.0[2].store(a.restorer, Ordering::Release);
        self.0[3].store(a.mask, Ordering::Release);
        self.0[0].store(a.handler, Ordering::Release);
    }
}

/// Calls the handler of `action` as the kernel would have (with
/// `SA_SIGINFO`, or the plain one-argument form). False for `SIG_DFL`
/// and `SIG_IGN`.
pub fn call_handler(
    action: &KernelSigaction,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) -> bool {
    if action.handler <= 1 {
        return false;
    }
    if action.flags & libc::SA_SIGINFO as u64 != 0 {
        // SAFETY: the program installed this handler with SA_SIGINFO; it
        // gets what the kernel gave us.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(action.handler as usize) };
        f(sig, info, ctx);
    } else {
        // SAFETY: as above, a plain handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(action.handler as usize) };
        f(sig);
    }
    true
}

/// Makes the interrupted thread of `ctx` resume in the trampoline as if
/// the syscall instruction just before `ret_ip` had been a rewritten site:
/// `rax` = `nr`, `r11` = `ret_ip`, `rcx` = its stack pointer, and the
/// stack pointer below its red zone.
///
/// # Safety
///
/// `ctx` is the `ucontext_t` a signal handler received.
pub unsafe fn redirect_to_trampoline(ctx: *mut libc::c_void, nr: i64, ret_ip: u64) {
    let uc = ctx.cast::<libc::ucontext_t>();
    // SAFETY: a valid ucontext (the caller's contract): its registers are
    // the interrupted thread's, restored by rt_sigreturn.
    unsafe {
        let g = &mut (*uc).uc_mcontext.gregs;
        let sp = g[libc::REG_RSP as usize];
        g[libc::REG_R11 as usize] = ret_ip as i64;
        g[libc::REG_RCX as usize] = sp;
        g[libc::REG_RSP as usize] = sp.wrapping_sub(136);
        g[libc::REG_RAX as usize] = nr;
        g[libc::REG_RIP as usize] = trampoline::sud_entry() as i64;
    }
}
