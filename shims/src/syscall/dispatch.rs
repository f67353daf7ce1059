//! The dispatcher the trampoline calls on its slow path: runs the hooks,
//! and prepares the syscalls that cannot simply be made from the
//! trampoline (`clone` onto a new stack, `clone3`, `vfork`), the ones
//! whose effects the dispatcher tracks (`fork`, `exit`), and the signal
//! calls Syscall User Dispatch must see ([`super::sud`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};

use super::trampoline::{self, Call, ChildRecord, Frame, Mode, HOOKED, TABLE_LEN};
use super::{coverage, current_list, quiesce, sud, SyscallAction, SyscallCtx, MISSES};

/// [`HOOKED`] bit: some hook is attached to the number.
const HOOK: u8 = 1;
/// [`HOOKED`] bit: the number needs the dispatcher even without hooks.
const SPECIAL: u8 = 2;
/// [`HOOKED`] bit: the number may make executable memory
/// ([`super::coverage`] judges it after the syscall).
const WATCH: u8 = 4;
/// [`HOOKED`] bit: the number's one hook is leaf code, which the
/// trampoline's direct lane runs itself ([`super::SyscallHook::direct`]).
const DIRECT: u8 = 8;
/// The [`HOOKED`] byte of a number the direct lane takes: hooked, direct,
/// nothing special or watched.
pub const DIRECT_BYTE: u8 = HOOK | DIRECT;

/// [`Call::exit`] bit: run the exit hooks.
const EXIT_HOOKS: u64 = 1;
/// [`Call::exit`] bit: a fork-like clone; the child (result 0) must reset
/// the per-thread bookkeeping it inherited.
const EXIT_FORK: u64 = 2;
/// [`Call::exit`] bit: a clone whose child ran on this thread's
/// thread-locals (`CLONE_VM` without `CLONE_SETTLS`, onto a new stack):
/// the ids cached there may be the child's.
const EXIT_SHARED_TLS: u64 = 4;
/// [`Call::exit`] bit: [`super::coverage::after`] judges the result.
const EXIT_WATCH: u64 = 8;

const CLONE_ARGS_SIZE_VER0: u64 = 64;

/// Marks the numbers the dispatcher always handles.
pub fn init_table() {
    for nr in [
        // (Runs on the caller's stack: never the fast path, which runs a
        // syscall on the trampoline's.)
        libc::SYS_rt_sigreturn,
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_fork,
        libc::SYS_vfork,
        libc::SYS_exit,
    ] {
        mark_special(nr);
    }
}

/// The [`HOOKED`] byte of syscall `nr`, if the table has one.
fn table_byte(nr: u64) -> Option<&'static AtomicU8> {
    usize::try_from(nr).ok().and_then(|n| HOOKED.get(n))
}

/// Sends every `nr` syscall through the dispatcher.
pub fn mark_special(nr: i64) {
    if let Some(b) = table_byte(nr as u64) {
        b.fetch_or(SPECIAL, Ordering::Release);
    }
}

/// Sends every `nr` syscall through the dispatcher, which judges what it
/// made ([`super::coverage::after`]).
pub fn mark_watched(nr: i64) {
    if let Some(b) = table_byte(nr as u64) {
        b.fetch_or(WATCH, Ordering::Release);
    }
}

/// Undoes [`mark_watched`].
pub fn unmark_watched(nr: i64) {
    if let Some(b) = table_byte(nr as u64) {
        b.fetch_and(!WATCH, Ordering::Release);
    }
}

/// Sets the hook bits of the table for hooks with these filters, and the
/// direct bit of the numbers in `direct` (the published list's
/// [`super::HookList::direct`]).
pub fn update_table(
    filters: impl Iterator<Item = Option<u64>>,
    direct: Option<&super::DirectTable>,
) {
    let mut all = false;
    let mut hooked = [false; TABLE_LEN];
    for f in filters {
        match f {
            None => all = true,
            Some(nr) => {
                if let Some(h) = usize::try_from(nr).ok().and_then(|n| hooked.get_mut(n)) {
                    *h = true;
                }
            }
        }
    }
    for (i, (b, h)) in HOOKED.iter().zip(hooked).enumerate() {
        if all || h {
            b.fetch_or(HOOK, Ordering::Release);
        } else {
            b.fetch_and(!HOOK, Ordering::Release);
        }
        if direct.is_some_and(|d| d[i][0] != 0) {
            b.fetch_or(DIRECT, Ordering::Release);
        } else {
            b.fetch_and(!DIRECT, Ordering::Release);
        }
    }
}

/// The table's bits for `nr` (a number past the table may be hooked:
/// [`HOOK`]).
#[inline]
fn table_bits(nr: u64) -> u8 {
    table_byte(nr).map_or(HOOK, |b| b.load(Ordering::Relaxed))
}

/// The trampoline's slow path, before the syscall. Returns a [`Mode`].
pub extern "C" fn enter(frame: *mut Frame) -> u32 {
    // SAFETY: the trampoline passes its own frame, aligned and
    // initialised (regs and xmm), used by nothing else meanwhile.
    let f = unsafe { &mut *frame };
    let r = f.regs;
    f.call = Call {
        ctx: SyscallCtx {
            nr: r.nr,
            args: [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9],
            ip: r.ret,
            sp: r.caller_rsp,
        },
        result: 0,
        exit: 0,
    };
    let bits = table_bits(r.nr);
    if bits & HOOK != 0 && !userbpf_vm::quiet::active() {
        if let Some(v) = run_enter_hooks(f) {
            f.call.result = v as u64;
            return Mode::Skip as u32;
        }
    }
    if bits & WATCH != 0 {
        f.call.exit |= EXIT_WATCH;
    }
    special(f) as u32
}

fn run_enter_hooks(f: &mut Frame) -> Option<i64> {
    let nr = f.call.ctx.nr;
    let Some(_inside) = quiesce::enter() else {
        note_miss(nr);
        return None;
    };
    // SAFETY: this thread is inside until `_inside` drops.
    let list = unsafe { current_list() }?;
    let ctx = &mut f.call.ctx;
    let mut result = None;
    let mut any = false;
    for e in list.entries.iter().filter(|e| e.matches(nr)) {
        any |= e.exit;
        let action =
            catch_unwind(AssertUnwindSafe(|| e.hook.enter(ctx))).unwrap_or(SyscallAction::Continue);
        // (The number, the return address and the stack pointer are
        // read-only.)
        (ctx.nr, ctx.ip, ctx.sp) = (nr, f.regs.ret, f.regs.caller_rsp);
        if let SyscallAction::Return(v) = action {
            result.get_or_insert(v);
        }
    }
    if any {
        f.call.exit |= EXIT_HOOKS;
    }
    result
}

/// A syscall made while this thread runs hooks: straight to the kernel.
#[cold]
fn note_miss(nr: u64) {
    MISSES.fetch_add(1, Ordering::Relaxed);
    // SAFETY: this thread is inside (that is why it missed), further up
    // its stack.
    if let Some(list) = unsafe { current_list() } {
        for e in list.entries.iter().filter(|e| e.matches(nr)) {
            e.misses.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The trampoline's slow path, after the syscall (when [`Call::exit`] is
/// set).
pub extern "C" fn exit(frame: *mut Frame) {
    // SAFETY: as in `enter`.
    let f = unsafe { &mut *frame };
    let ret = f.call.result as i64;
    if f.call.exit & EXIT_FORK != 0 && ret == 0 {
        child_after_fork();
    }
    if f.call.exit & EXIT_SHARED_TLS != 0 {
        // The parent, once the child no longer runs on its thread-locals
        // (a vfork-like child has exec'd or exited).
        userbpf_vm::identity::invalidate();
    }
    if f.call.exit & EXIT_WATCH != 0 {
        coverage::after(f.call.ctx.nr, &f.call.ctx.args, ret, f.regs.ret);
    }
    if f.call.exit & EXIT_HOOKS == 0 {
        return;
    }
    let nr = f.call.ctx.nr;
    let Some(_inside) = quiesce::enter() else {
        return;
    };
    // SAFETY: inside until `_inside` drops.
    let Some(list) = (unsafe { current_list() }) else {
        return;
    };
    let ctx = &f.call.ctx;
    for e in list.entries.iter().filter(|e| e.exit && e.matches(nr)) {
        let _ = catch_unwind(AssertUnwindSafe(|| e.hook.exit(ctx, ret)));
    }
}

/// The first code a clone child onto a new stack runs (on that stack,
/// before it returns to the caller). `flags` are the clone flags.
pub extern "C" fn child_entry(flags: u64) {
    let vm = flags & libc::CLONE_VM as u64 != 0;
    if !vm {
        child_after_fork();
    } else if flags & libc::CLONE_SETTLS as u64 != 0 {
        // A thread with thread-locals of its own.
        sud::arm_new_thread();
    } else {
        // Its parent's thread-locals: the ids cached there are not its own.
        userbpf_vm::identity::invalidate();
    }
}

fn child_after_fork() {
    quiesce::after_fork();
    sud::after_fork();
    // (A raw fork runs no pthread_atfork handler.)
    userbpf_vm::identity::invalidate();
}

fn special(f: &mut Frame) -> Mode {
    match f.call.ctx.nr as i64 {
        libc::SYS_clone => clone(f),
        libc::SYS_clone3 => clone3(f),
        libc::SYS_vfork => {
            sud::claim_owner();
            f.call.exit = 0;
            Mode::Vfork
        }
        libc::SYS_fork => {
            f.call.exit |= EXIT_FORK;
            Mode::Syscall
        }
        libc::SYS_exit => {
            quiesce::thread_exiting();
            Mode::Syscall
        }
        libc::SYS_rt_sigprocmask => sud::filter_sigprocmask(f),
        libc::SYS_rt_sigaction => sud::filter_sigaction(f),
        _ => Mode::Syscall,
    }
}

fn skip(f: &mut Frame, errno: i32) -> Mode {
    f.call.result = (-(errno as i64)) as u64;
    Mode::Skip
}

fn child_record(f: &Frame, flags: u64) -> ChildRecord {
    let r = &f.regs;
    ChildRecord {
        xmm: trampoline::saved_xmm(f),
        rdi: r.rdi,
        rsi: r.rsi,
        rdx: r.rdx,
        r10: r.r10,
        r8: r.r8,
        r9: r.r9,
        rbp: r.rbp,
        rflags: r.rflags,
        info: flags,
        ret: r.ret,
    }
}

/// Writes the child's record just below `top` (its initial stack
/// pointer); returns the record's address.
fn place_record(f: &Frame, flags: u64, top: u64) -> Option<u64> {
    let size = std::mem::size_of::<ChildRecord>();
    let at = top.checked_sub(size as u64)?;
    let record = child_record(f, flags);
    copy_user(
        (&raw const record).cast_mut().cast(),
        at,
        size,
        Direction::Write,
    )
    .then_some(at)
}

/// `clone(flags, stack, parent_tid, child_tid, tls)`.
fn clone(f: &mut Frame) -> Mode {
    let flags = f.call.ctx.args[0];
    let stack = f.call.ctx.args[1];
    if shares_tls(flags) {
        // The child will share this thread's thread-locals.
        sud::claim_owner();
    }
    if stack != 0 {
        match place_record(f, flags, stack) {
            Some(at) => {
                f.call.ctx.args[1] = at;
                clone_mode(f, flags, true)
            }
            None => skip(f, libc::EFAULT),
        }
    } else {
        clone_mode(f, flags, false)
    }
}

/// How the trampoline makes a clone (once a child onto a new stack has
/// its record): onto the new stack, on this very stack (vfork-like: the
/// child shares the caller's memory and stack), or as a fork.
fn clone_mode(f: &mut Frame, flags: u64, onto_new_stack: bool) -> Mode {
    if onto_new_stack {
        if shares_tls(flags) {
            f.call.exit |= EXIT_SHARED_TLS;
        }
        Mode::NewStack
    } else if flags & libc::CLONE_VM as u64 != 0 {
        f.call.exit = 0;
        Mode::Vfork
    } else {
        f.call.exit |= EXIT_FORK;
        Mode::Syscall
    }
}

/// Whether a clone's child runs on its parent's thread-locals.
fn shares_tls(flags: u64) -> bool {
    flags & libc::CLONE_VM as u64 != 0 && flags & libc::CLONE_SETTLS as u64 == 0
}

/// `clone3(struct clone_args *args, size_t size)`.
fn clone3(f: &mut Frame) -> Mode {
    let ptr = f.call.ctx.args[0];
    let size = f.call.ctx.args[1];
    if ptr == 0 || size < CLONE_ARGS_SIZE_VER0 {
        // The kernel refuses it.
        return Mode::Syscall;
    }
    let room = std::mem::size_of_val(&f.scratch) as u64;
    if size > room {
        // Larger than any `struct clone_args` this kernel knows.
        return skip(f, libc::E2BIG);
    }
    f.scratch = [0; 16];
    if !copy_user(
        f.scratch.as_mut_ptr().cast(),
        ptr,
        size as usize,
        Direction::Read,
    ) {
        return skip(f, libc::EFAULT);
    }
    let flags = f.scratch[0];
    let stack = f.scratch[5];
    let stack_size = f.scratch[6];
    if shares_tls(flags) {
        sud::claim_owner();
    }
    if stack != 0 {
        let record = std::mem::size_of::<ChildRecord>() as u64;
        let Some(top) = stack.checked_add(stack_size) else {
            return skip(f, libc::EINVAL);
        };
        if stack_size <= record {
            return skip(f, libc::EINVAL);
        }
        let Some(at) = place_record(f, flags, top) else {
            return skip(f, libc::EFAULT);
        };
        f.scratch[6] = at - stack;
        f.call.ctx.args[0] = f.scratch.as_ptr() as u64;
        clone_mode(f, flags, true)
    } else {
        clone_mode(f, flags, false)
    }
}

/// Which way [`copy_user`] copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the process's memory at `remote` to `local`.
    Read,
    /// From `local` to the process's memory at `remote`.
    Write,
}

/// Copies `len` bytes between `local` and an address the hooked code
/// passed (`remote`), through the kernel so a bad address gives false
/// instead of a fault. `local` must be valid for `len` bytes.
pub fn copy_user(local: *mut u8, remote: u64, len: usize, dir: Direction) -> bool {
    let liov = libc::iovec {
        iov_base: local.cast(),
        iov_len: len,
    };
    let riov = libc::iovec {
        iov_base: remote as *mut libc::c_void,
        iov_len: len,
    };
    let nr = match dir {
        Direction::Read => libc::SYS_process_vm_readv,
        Direction::Write => libc::SYS_process_vm_writev,
    };
    // SAFETY: getpid takes no arguments; process_vm_{read,write}v on this
    // process with one local iovec the caller vouches for, and a remote
    // one the kernel checks.
    unsafe {
        let pid = trampoline::raw_syscall(libc::SYS_getpid, [0; 6]);
        trampoline::raw_syscall(
            nr,
            [
                pid as u64,
                (&raw const liov) as u64,
                1,
                (&raw const riov) as u64,
                1,
                0,
            ],
        ) == len as i64
    }
}
