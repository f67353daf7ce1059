//! In-process syscall hooks: every syscall of the process, whether it goes
//! through a libc wrapper or an inline `syscall` instruction, reaches the
//! hooks attached with [`attach`] before the kernel sees it (and after it
//! returns), at the cost of a few function calls instead of a trap.
//!
//! This is the mechanism only; the facade runs BPF programs (syscall
//! tracepoints, a user-space seccomp/LSM policy) as [`SyscallHook`]s.
//!
//! # How syscalls are caught
//!
//! 1. **zpoline rewriting.** The first [`attach`] maps page 0 (root can,
//!    despite `vm.mmap_min_addr`) with a jump sled that ends in a jump to
//!    the trampoline, then rewrites every `syscall` instruction (`0f 05`)
//!    of every loaded module (the executable, libc, `ld.so`, every
//!    library, the vDSO's private copy) into `call *%rax` (`ff d0`): `rax` holds the
//!    syscall number, so the call lands in the sled. Sites are found by
//!    decoding with iced-x86 over the extent of every function the module
//!    describes (`.eh_frame_hdr` FDEs, `.symtab`/`.dynsym` functions),
//!    never by a byte search, so only real instruction boundaries change.
//!    A site changes with one atomic 2-byte compare-and-swap (a site that
//!    straddles a cache line: one byte at a time, the half-written state
//!    being an invalid opcode whose SIGILL is sent to the trampoline), so
//!    other threads may run the code meanwhile. Libraries loaded later
//!    (`dlopen`) are rewritten as the dynamic loader lists them, before
//!    any of their code runs (a hook on its `_dl_debug_state`, where
//!    debuggers learn of new libraries); [`rescan`] does it by hand where
//!    that hook cannot be placed.
//! 2. **Syscall User Dispatch** (SUD) catches what the rewrite missed (a
//!    JIT's code, code mapped without the dynamic loader): outside the
//!    trampoline's address range a syscall raises SIGSYS, whose handler
//!    resumes the thread in the trampoline as if the site had been
//!    rewritten. An armed thread takes the kernel's slower syscall path
//!    (~35 ns here, hooked or not), so by default ([`UserDispatch::Auto`])
//!    threads are armed only while hooks are attached *and* some
//!    executable memory escapes the rewrite: the rewrite checks that
//!    every system call instruction of each module was rewritten, the
//!    other executable memory is judged at installation, and the syscalls
//!    that make executable memory (`mmap`, `mprotect`, `mremap`, `shmat`,
//!    opening `/proc/self/mem` for writing) are judged as they return,
//!    before the new code can run (see `coverage.rs`; [`sud_reason`]
//!    says what escaped). The attaching thread arms directly, the others
//!    through a signal, new threads as they are created by a hooked
//!    `clone`/`clone3` and fork children in the dispatcher.
//!    [`set_user_dispatch`] (or `USERBPF_SYSCALL_SUD=0`/`1`) turns it off
//!    or always on.
//!
//! The trampoline saves the registers, runs the hooks in attach order,
//! performs the real syscall from inside its own code (never rewritten,
//! and the range SUD allows), runs the exit hooks and returns with the
//! syscall ABI intact. `rt_sigreturn` runs directly on the caller's stack;
//! the child of a `clone`/`clone3` onto a new stack returns through a
//! record written on that stack, never through the parent's frame; a
//! `vfork` (or a clone that shares the caller's stack) returns through a
//! thread-local slot, since the child reuses the stack.
//!
//! # Semantics
//!
//! - Hooks run in attach order; each sees the arguments as the previous
//!   ones left them. The first [`SyscallAction::Return`] decides the
//!   result (the syscall is not made); the remaining hooks still run.
//!   Changes to [`SyscallCtx::args`] are passed to the kernel (the
//!   caller's registers are restored unchanged); the number cannot
//!   change. [`SyscallHook::exit`] runs after the syscall (or the
//!   override) with the value the caller gets, for the hooks attached at
//!   that moment (like the kernel's `sys_exit` tracepoints).
//! - A syscall made while a hook runs on the same thread (the hook's own
//!   syscalls, a signal handler interrupting it) goes straight to the
//!   kernel and counts as a miss ([`SyscallLink::misses`]). One made
//!   during userbpf's own work (`userbpf_vm::quiet`: loading and
//!   attaching programs, background compilation) skips the hooks
//!   silently.
//! - Not reported: `rt_sigreturn`; the exit of `vfork` and of a clone
//!   that shares the caller's stack; the child's side of a `clone`/`fork`
//!   onto a new stack (the parent's is); `exit`, `exit_group` and a
//!   successful `execve` have no exit.
//! - Hooks may run inside `malloc`, in signal handlers, during thread
//!   start and exit, in vfork children: they must not allocate, take locks
//!   the hooked code may hold, attach or detach hooks, or panic (a panic
//!   is caught and counts as [`SyscallAction::Continue`]). They run on the
//!   caller's stack, below its red zone.
//! - Detaching waits until no thread runs the detached hook any more (a
//!   grace period; after 5 s it gives up and leaks the hook).
//! - To keep SUD working, the dispatcher keeps SIGSYS unblocked in armed
//!   threads (it edits the sets given to `rt_sigprocmask` and the
//!   `sa_mask` of `rt_sigaction`) and keeps the SIGSYS handler: a program
//!   that installs one gets it called for every SIGSYS that is not SUD's,
//!   and `sigaction` reports it back as installed.
//!
//! # Costs and side effects
//!
//! - Installation is permanent: page 0 stays mapped (reading a null
//!   pointer no longer faults; writing still does; a call through a null
//!   function pointer becomes syscall 0), sites stay rewritten. With no
//!   hook attached a syscall costs the trampoline's table check (~10 ns
//!   on the development machine, on a ~140 ns `getpid`); a hooked
//!   syscall ~27 ns plus the hooks (~35 ns with a BPF program counting
//!   in an array map); while threads are armed SUD adds
//!   ~35 ns to every syscall (the kernel's slow path); the syscalls that
//!   can make executable memory take the dispatcher's path while SUD is
//!   not needed;
//!   a syscall caught by SUD (not rewritten) costs ~2.4 µs (a signal
//!   round trip).
//! - The `call` of a rewritten site writes 8 bytes below the caller's
//!   stack pointer: code that keeps data in the red zone across an inline
//!   `syscall` loses that slot (zpoline's known caveat).
//! - The trampoline keeps `xmm0`-`xmm15` (`ymm0`-`ymm15` whole where the
//!   CPU has AVX: an inline `syscall` in AVX code may keep values in the
//!   upper halves, and a hook's code may change them), not `zmm16`-`zmm31`,
//!   the upper halves of `zmm0`-`zmm15` or the `k` registers; a clone
//!   child onto a new stack gets `xmm0`-`xmm15` back, not the upper
//!   halves.
//! - Syscall numbers 549-566 and above 4064 crash (they land inside or
//!   past the sled's stubs); no such syscall exists on x86-64.
//! - Thread-locals of this crate must be static TLS (the crate linked
//!   into the executable or a library loaded at start-up, such as an
//!   `LD_PRELOAD` agent), not a library `dlopen`ed later.
//! - Arming and disarming SUD (the first attach after none, the last
//!   detach, [`set_user_dispatch`]) interrupts every other thread with a
//!   signal (`SIGRTMAX-2`, or `USERBPF_SYSCALL_SIGNAL`): a thread blocked
//!   in `poll`, `epoll_wait`, `nanosleep`... may see `EINTR` then.
//! - Code pages are writable and executable while they are patched (other
//!   threads may be running them); page 0 is written read-write, then
//!   sealed read-execute.

mod coverage;
mod dispatch;
mod eh_frame;
mod quiesce;
mod signals;
mod sud;
mod trampoline;
mod zpoline;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a hook sees of a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyscallCtx {
    /// The syscall number (`libc::SYS_openat`, ...). Read-only: changing it
    /// has no effect.
    pub nr: u64,
    /// The arguments, in the kernel's order (`rdi`, `rsi`, `rdx`, `r10`,
    /// `r8`, `r9`). An [`SyscallHook::enter`] may change them: the kernel
    /// gets the changed values.
    pub args: [u64; 6],
    /// The address of the instruction after the syscall site.
    pub ip: u64,
    /// The caller's stack pointer at the syscall.
    pub sp: u64,
}

impl SyscallCtx {
    /// A context for syscall `nr` with `args` (for tests of hooks).
    pub fn new(nr: u64, args: [u64; 6]) -> Self {
        SyscallCtx {
            nr,
            args,
            ip: 0,
            sp: 0,
        }
    }
}

/// What a hook wants done with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallAction {
    /// Make the syscall.
    Continue,
    /// Do not make it: the caller gets this value instead (`-errno` for
    /// a failure, e.g. `-libc::EACCES as i64`).
    Return(i64),
}

/// Code run around the syscalls of the process, on the thread that makes
/// them, possibly on many threads at once.
pub trait SyscallHook: Send + Sync {
    /// Runs before the syscall.
    fn enter(&self, ctx: &mut SyscallCtx) -> SyscallAction;

    /// Runs after it, with the value the caller gets (`-errno` on
    /// failure).
    fn exit(&self, ctx: &SyscallCtx, ret: i64) {
        let _ = (ctx, ret);
    }

    /// Whether [`SyscallHook::exit`] does anything (asked once, when the
    /// hook is attached): a syscall whose hooks all say no skips the exit
    /// dispatch.
    fn wants_exit(&self) -> bool {
        true
    }

    /// Native code that does all [`SyscallHook::enter`] does, for the
    /// trampoline to run itself on the syscall's `struct
    /// trace_event_raw_sys_enter` (64 bytes: [`SyscallLeaf::common`], the
    /// number, the six arguments; `r1` = the record, `r2` = 64): no call
    /// into the dispatcher, no vector register saved. Only for a hook on
    /// one number that wants no exit, whose `enter` does nothing but run
    /// that code and return [`SyscallAction::Continue`]; the code must
    /// live as long as the hook. The trampoline runs it when it is the
    /// number's only hook and passes [`crate::hook::codegen::check_leaf`]
    /// ([`SyscallStats::direct_numbers`]). Default: none.
    fn direct(&self) -> Option<SyscallLeaf> {
        None
    }
}

/// Leaf code a syscall hook's `enter` is ([`SyscallHook::direct`]).
#[derive(Debug, Clone, Copy)]
pub struct SyscallLeaf {
    /// The code (see [`LeafCode`]).
    pub code: LeafCode,
    /// The record's first word: `common_type`, `common_flags`,
    /// `common_preempt_count`, `common_pid`.
    pub common: u64,
}

pub use userbpf_vm::interp::LeafCode;

/// Why hooks could not be attached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyscallError {
    /// Syscall hooks exist on x86-64 Linux only.
    #[error("in-process syscall hooks are only implemented on x86-64 Linux")]
    Unsupported,
    /// Page 0 could not be mapped (not root: mapping below
    /// `vm.mmap_min_addr` needs `CAP_SYS_RAWIO`; or something is there).
    #[error("cannot map the syscall trampoline page at address 0: {source} (mapping below vm.mmap_min_addr needs root/CAP_SYS_RAWIO)")]
    PageZero {
        /// The error from `mmap`.
        #[source]
        source: io::Error,
    },
    /// Installing the interception failed.
    #[error("installing the syscall interception: {reason}")]
    Install {
        /// What failed.
        reason: String,
    },
    /// A previous attach or detach panicked while holding the registry.
    #[error("the syscall hook registry is poisoned")]
    Poisoned,
}

/// Counters of the interception, for the whole process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyscallStats {
    /// Whether the interception is installed.
    pub installed: bool,
    /// Modules scanned by the rewriter.
    pub modules: u64,
    /// `syscall` instructions rewritten.
    pub sites_rewritten: u64,
    /// `syscall` instructions found but left alone (on a page that could
    /// not be made writable): SUD catches them.
    pub sites_skipped: u64,
    /// Whether Syscall User Dispatch is available (the kernel has it and
    /// `USERBPF_SYSCALL_SUD` is not `0`).
    pub sud_enabled: bool,
    /// Whether threads are armed now (while hooks are attached, if SUD is
    /// needed or always on: [`UserDispatch`]).
    pub sud_active: bool,
    /// Whether some executable memory escapes the rewrite (then
    /// [`UserDispatch::Auto`] arms the threads; [`sud_reason`] says why).
    pub sud_needed: bool,
    /// Times a thread armed SUD (at the first attach after none, by
    /// signal, at creation).
    pub sud_threads: u64,
    /// Syscalls caught by SUD (SIGSYS) and sent to the trampoline.
    pub sud_dispatched: u64,
    /// Syscalls that skipped the hooks because the thread was already
    /// running hooks.
    pub misses: u64,
    /// Syscall numbers whose hook the trampoline runs itself now
    /// ([`SyscallHook::direct`]).
    pub direct_numbers: u64,
    /// Runs of leaf code that returned a fault status (none should).
    pub direct_faults: u64,
}

/// An attached hook; dropping it detaches the hook.
#[derive(Debug)]
pub struct SyscallLink {
    id: u64,
    filter: Option<u64>,
    misses: Arc<AtomicU64>,
}

impl SyscallLink {
    /// The syscall number the hook is attached to (`None`: all).
    pub fn filter(&self) -> Option<u64> {
        self.filter
    }

    /// Syscalls this hook would have seen but that went straight to the
    /// kernel: made while a hook was running on the same thread.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

impl Drop for SyscallLink {
    fn drop(&mut self) {
        detach(self.id);
    }
}

/// A hook in the published list.
pub(crate) struct Entry {
    id: u64,
    filter: Option<u64>,
    hook: Arc<dyn SyscallHook>,
    misses: Arc<AtomicU64>,
    /// [`SyscallHook::wants_exit`], as the hook said at attach.
    exit: bool,
}

impl Entry {
    #[inline]
    fn matches(&self, nr: u64) -> bool {
        self.filter.is_none_or(|f| f == nr)
    }
}

impl Clone for Entry {
    fn clone(&self) -> Self {
        Entry {
            id: self.id,
            filter: self.filter,
            hook: self.hook.clone(),
            misses: self.misses.clone(),
            exit: self.exit,
        }
    }
}

/// The hooks, in attach order; replaced as a whole on attach and detach.
pub(crate) struct HookList {
    entries: Vec<Entry>,
    /// By number: the leaf code of the number's one hook and its record's
    /// first word, where the hook is direct ([`SyscallHook::direct`];
    /// zeros elsewhere), read by the trampoline's direct lane.
    pub(crate) direct: Option<Box<DirectTable>>,
}

/// [`HookList::direct`]: `[code, common word]` per syscall number.
pub(crate) type DirectTable = [[u64; 2]; trampoline::TABLE_LEN];

/// The direct table of `entries`: numbers whose only hook is leaf code
/// that passes [`crate::hook::codegen::check_leaf`] and wants no exit.
/// `None` when there are none, when a hook sees every number, or when
/// readers need fences of their own (no membarrier).
fn direct_table(entries: &[Entry]) -> Option<Box<DirectTable>> {
    if !quiesce::membarrier_ok() || entries.iter().any(|e| e.filter.is_none()) {
        return None;
    }
    let len = trampoline::TABLE_LEN;
    let mut hooks = vec![0u32; len];
    let mut table = vec![[0u64; 2]; len];
    for e in entries {
        let Some(nr) = e
            .filter
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n < len)
        else {
            continue;
        };
        hooks[nr] += 1;
        if let Some(leaf) = e.hook.direct().filter(|_| !e.exit) {
            // SAFETY: leaf code lives as long as its hook, which `e` holds.
            if unsafe { crate::hook::codegen::check_leaf_code(&leaf.code) }.is_ok() {
                table[nr] = [leaf.code.entry as u64, leaf.common];
            }
        }
    }
    let mut any = false;
    for (t, n) in table.iter_mut().zip(hooks) {
        if n != 1 {
            *t = [0, 0];
        }
        any |= t[0] != 0;
    }
    any.then(|| table.into_boxed_slice().try_into().ok())?
}

/// The current list (null: none). Readers load it only while inside
/// ([`quiesce::enter`]); a replaced list is freed after a grace period.
static LIST: AtomicPtr<HookList> = AtomicPtr::new(std::ptr::null_mut());
static MISSES: AtomicU64 = AtomicU64::new(0);
/// Leaf runs of the direct lane that returned a fault status.
static DIRECT_FAULTS: AtomicU64 = AtomicU64::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The current hook list.
///
/// # Safety
///
/// The caller is inside the hooks ([`quiesce::enter`] succeeded on this
/// thread, possibly further up the stack) for as long as it uses the
/// reference.
unsafe fn current_list<'a>() -> Option<&'a HookList> {
    let p = LIST.load(Ordering::Acquire);
    // SAFETY: a published list stays alive until a grace period that waits
    // for this thread has passed (the caller's contract).
    unsafe { p.as_ref() }
}

struct Registry {
    installed: bool,
    entries: Vec<Entry>,
    next_id: u64,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    installed: false,
    entries: Vec::new(),
    next_id: 1,
});

/// How long a detach waits for threads running hooks before it leaks the
/// old list instead of freeing it.
const GRACE_TIMEOUT: Duration = Duration::from_secs(5);

/// Attaches `hook` to syscall `filter` (a `libc::SYS_*` number), or to
/// every syscall with `None`. The first attach of the process installs the
/// interception (see the module documentation); it stays installed.
pub fn attach(
    filter: Option<u64>,
    hook: Arc<dyn SyscallHook>,
) -> Result<SyscallLink, SyscallError> {
    if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        return Err(SyscallError::Unsupported);
    }
    let mut reg = REGISTRY.lock().map_err(|_| SyscallError::Poisoned)?;
    if !reg.installed {
        install()?;
        reg.installed = true;
        INSTALLED.store(true, Ordering::Release);
    }
    let id = reg.next_id;
    reg.next_id += 1;
    let misses = Arc::new(AtomicU64::new(0));
    let exit = hook.wants_exit();
    reg.entries.push(Entry {
        id,
        filter,
        hook,
        misses: misses.clone(),
        exit,
    });
    publish(&reg.entries);
    Ok(SyscallLink { id, filter, misses })
}

fn detach(id: u64) {
    let Ok(mut reg) = REGISTRY.lock() else {
        return;
    };
    let before = reg.entries.len();
    reg.entries.retain(|e| e.id != id);
    if reg.entries.len() != before {
        publish(&reg.entries);
    }
}

/// Publishes `entries` as the new list, updates the trampoline's table,
/// and frees the old list after a grace period. Called with the registry
/// locked.
fn publish(entries: &[Entry]) {
    if !entries.is_empty() {
        sud::set_hooks_attached(true);
    }
    let new = if entries.is_empty() {
        std::ptr::null_mut()
    } else {
        Box::into_raw(Box::new(HookList {
            entries: entries.to_vec(),
            direct: direct_table(entries),
        }))
    };
    let old = LIST.swap(new, Ordering::AcqRel);
    // SAFETY: the list just published; only this writer (registry lock
    // held) frees lists.
    let direct = unsafe { new.as_ref() }.and_then(|l| l.direct.as_deref());
    dispatch::update_table(entries.iter().map(|e| e.filter), direct);
    if !old.is_null() {
        if quiesce::synchronize(GRACE_TIMEOUT) {
            // SAFETY: lists are boxed; after the grace period no thread can
            // still hold the old one.
            drop(unsafe { Box::from_raw(old) });
        } else {
            eprintln!(
                "userbpf: a thread stayed inside a syscall hook for {GRACE_TIMEOUT:?}; leaking the old hook list"
            );
        }
    }
    if entries.is_empty() {
        sud::set_hooks_attached(false);
    }
}

/// Maps page 0, rewrites the loaded modules, judges the other executable
/// memory, installs SUD.
fn install() -> Result<(), SyscallError> {
    quiesce::init();
    trampoline::init_vector_save();
    zpoline::map_page_zero(trampoline::zp_entry())
        .map_err(|source| SyscallError::PageZero { source })?;
    dispatch::init_table();
    zpoline::rewrite_loaded_modules();
    if let Err(reason) = zpoline::watch_dlopen() {
        if std::env::var_os("USERBPF_SYSCALL_DEBUG").is_some() {
            eprintln!("userbpf: libraries loaded later are not rewritten by themselves ({reason}): call rescan()");
        }
        coverage::need(format!(
            "libraries loaded later are not rewritten before their code runs ({reason})"
        ));
    }
    coverage::classify_mappings();
    coverage::watch();
    if let Err(reason) = sud::install() {
        if std::env::var_os("USERBPF_SYSCALL_DEBUG").is_some() {
            eprintln!("userbpf: Syscall User Dispatch not armed: {reason}");
        }
    }
    Ok(())
}

/// Rewrites the modules loaded since the last scan (a `dlopen`ed
/// library); returns how many sites were rewritten. Does nothing before
/// the first [`attach`].
pub fn rescan() -> Result<u64, SyscallError> {
    let reg = REGISTRY.lock().map_err(|_| SyscallError::Poisoned)?;
    if !reg.installed {
        return Ok(0);
    }
    Ok(zpoline::rewrite_loaded_modules())
}

/// When Syscall User Dispatch backs up the rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserDispatch {
    /// Never: syscalls of code the rewrite did not see (a JIT's code made
    /// after a check, a file mapped executable by hand) are not hooked.
    /// (`USERBPF_SYSCALL_SUD=0`.)
    Off,
    /// While hooks are attached and some executable memory escapes the
    /// rewrite (the default; see [`sud_reason`]): a process whose code is
    /// all rewritten pays nothing for SUD, and one that makes code the
    /// rewrite cannot see arms it before that code can run.
    #[default]
    Auto,
    /// While hooks are attached, whatever the code (`USERBPF_SYSCALL_SUD=1`).
    Always,
}

/// Sets when Syscall User Dispatch backs up the rewrite. Armed threads
/// take the kernel's slower syscall path while hooks are attached (about
/// +35 ns per syscall on the development machine, hooked or not).
/// Takes effect at once.
pub fn set_user_dispatch(when: UserDispatch) -> Result<(), SyscallError> {
    let _reg = REGISTRY.lock().map_err(|_| SyscallError::Poisoned)?;
    sud::set_policy(match when {
        UserDispatch::Off => sud::POLICY_OFF,
        UserDispatch::Auto => sud::POLICY_AUTO,
        UserDispatch::Always => sud::POLICY_ALWAYS,
    });
    Ok(())
}

/// Why Syscall User Dispatch is needed ([`UserDispatch::Auto`]): the
/// first executable memory found that the rewrite does not cover, or
/// `None` while all of it is covered.
pub fn sud_reason() -> Option<String> {
    coverage::reason()
}

/// The counters of the interception.
pub fn stats() -> SyscallStats {
    let installed = INSTALLED.load(Ordering::Acquire);
    let rewrite = zpoline::counters();
    let sud = sud::counters();
    SyscallStats {
        installed,
        modules: rewrite.modules,
        sites_rewritten: rewrite.rewritten,
        sites_skipped: rewrite.skipped,
        sud_enabled: sud.enabled,
        sud_active: sud.active,
        sud_needed: coverage::needed(),
        sud_threads: sud.threads,
        sud_dispatched: sud.dispatched,
        misses: MISSES.load(Ordering::Relaxed),
        direct_numbers: trampoline::HOOKED
            .iter()
            .filter(|b| b.load(Ordering::Relaxed) == dispatch::DIRECT_BYTE)
            .count() as u64,
        direct_faults: DIRECT_FAULTS.load(Ordering::Relaxed),
    }
}
