//! Per-thread state of the hooks: the re-entrancy guard, the pending
//! uretprobe returns, and the quiescence counters that let a detach free a
//! probe list once no thread can still be running it.
//!
//! Everything a hook touches on its fast path lives in constant-initialised
//! thread-locals without destructors, so it is reachable at any moment of a
//! thread's life (even while other thread-locals are being destroyed); the
//! one thread-local with a destructor only releases the thread's counter.

use std::cell::Cell;
use std::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use userbpf_vm::thread_words::{self, HOOK_DEPTH, HOOK_RETURNS, HOOK_SLOT};

/// Pending uretprobe returns per thread (the kernel's
/// `MAX_URETPROBE_DEPTH` is 64 too); deeper calls are not hijacked and
/// count as missed.
pub const MAX_RETURN_DEPTH: usize = 64;

/// One hijacked return: where the function really returns to, the stack
/// slot that held that address (and what holds it instead), and the site
/// whose return probes run.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct PendingReturn {
    /// The original return address.
    pub ret_addr: u64,
    /// The address of the stack slot that held it (the `rsp` at entry).
    pub slot: u64,
    /// The return address the slot holds instead (the trampoline's).
    pub hijack: u64,
    /// The site (a `&'static Site` as an address).
    pub site: usize,
}

const EMPTY: PendingReturn = PendingReturn {
    ret_addr: 0,
    slot: 0,
    hijack: 0,
    site: 0,
};

// Two of the thread's `userbpf_vm::thread_words`: `HOOK_DEPTH`, non-zero
// while this thread runs inside the hooks' dispatcher (a hook hit then, a
// probe's helper calling a hooked `malloc` or a signal handler, skips its
// probes and counts a miss); `HOOK_SLOT`, the address of this thread's
// quiescence counter (0 until registered). Direct trampolines use both,
// and `HOOK_RETURNS`: the address of this thread's `RETURNS` (set when the
// thread registers).
thread_local! {
    static RETURNS: Cell<ReturnStack> = const { Cell::new(ReturnStack { len: 0, entries: [EMPTY; MAX_RETURN_DEPTH] }) };
    /// Releases the thread's slot when the thread exits.
    static RELEASE: SlotRelease = const { SlotRelease };
}

/// A thread's pending returns, the latest last. (Direct trampolines push
/// and pop them too: the layout is fixed.)
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct ReturnStack {
    /// How many entries are pending.
    pub len: usize,
    /// The entries.
    pub entries: [PendingReturn; MAX_RETURN_DEPTH],
}

/// A thread's quiescence counter: odd while the thread is inside the
/// dispatcher. Slots are leaked and reused by later threads. (The
/// counter first: direct trampolines increment the word the thread's
/// `HOOK_SLOT` points at.)
#[derive(Debug)]
#[repr(C)]
pub struct ThreadSlot {
    counter: AtomicU64,
    in_use: AtomicBool,
}

static SLOTS: Mutex<Vec<&'static ThreadSlot>> = Mutex::new(Vec::new());

/// Whether `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` works here: then
/// readers need no fence of their own (the writer's membarrier is one on
/// every thread).
static MEMBARRIER: AtomicBool = AtomicBool::new(false);

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// Registers the process for expedited membarriers (once; idempotent).
pub fn init_membarrier() {
    if MEMBARRIER.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: membarrier takes no pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            0,
            0,
        )
    };
    MEMBARRIER.store(r == 0, Ordering::SeqCst);
}

/// Whether [`barrier_all_threads`] is a membarrier (registered by
/// [`init_membarrier`]): readers then need no fence of their own.
pub fn membarrier_ok() -> bool {
    MEMBARRIER.load(Ordering::Relaxed)
}

/// A full memory barrier on every thread of the process (or a plain fence
/// when membarrier is not available: the readers then fence themselves).
pub fn barrier_all_threads() {
    if MEMBARRIER.load(Ordering::Relaxed) {
        // SAFETY: membarrier takes no pointers.
        let r =
            unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) };
        if r == 0 {
            return;
        }
    }
    fence(Ordering::SeqCst);
}

struct SlotRelease;

impl Drop for SlotRelease {
    fn drop(&mut self) {
        let slot = thread_words::get(HOOK_SLOT) as *const ThreadSlot;
        thread_words::set(HOOK_SLOT, 0);
        if !slot.is_null() {
            // SAFETY: slots are leaked: the pointer stays valid.
            let slot = unsafe { &*slot };
            let c = slot.counter.load(Ordering::Relaxed);
            slot.counter.store(c.wrapping_add(c & 1), Ordering::Release);
            slot.in_use.store(false, Ordering::Release);
        }
    }
}

/// This thread's slot, registering the thread on first use. `None` when
/// the thread is exiting (its thread-locals are being destroyed).
#[cold]
#[inline(never)]
fn register() -> Option<&'static ThreadSlot> {
    // Touch the releaser first: if it is gone, the thread is exiting.
    RELEASE.try_with(|_| ()).ok()?;
    let mut slots = SLOTS.lock().ok()?;
    let slot = match slots.iter().find(|s| {
        s.in_use
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }) {
        Some(s) => *s,
        None => {
            let s: &'static ThreadSlot = Box::leak(Box::new(ThreadSlot {
                counter: AtomicU64::new(0),
                in_use: AtomicBool::new(true),
            }));
            slots.push(s);
            s
        }
    };
    thread_words::set(HOOK_SLOT, slot as *const ThreadSlot as u64);
    thread_words::set(HOOK_RETURNS, RETURNS.with(|r| r.as_ptr()) as u64);
    Some(slot)
}

/// Proof that this thread entered the dispatcher (the guard was free);
/// leaving it (drop) marks the thread quiescent again.
#[derive(Debug)]
pub struct Inside {
    slot: &'static ThreadSlot,
    count: u64,
}

/// Enters the dispatcher on this thread: `None` if it is already inside
/// (re-entered: the caller counts a miss) or the thread is exiting.
#[inline(always)]
pub fn enter() -> Option<Inside> {
    if thread_words::get(HOOK_DEPTH) != 0 {
        return None;
    }
    thread_words::set(HOOK_DEPTH, 1);
    let mut slot = thread_words::get(HOOK_SLOT) as *const ThreadSlot;
    if slot.is_null() {
        match register() {
            Some(s) => slot = s,
            None => {
                thread_words::set(HOOK_DEPTH, 0);
                return None;
            }
        }
    }
    // SAFETY: slots are leaked; this one is this thread's.
    let slot: &'static ThreadSlot = unsafe { &*slot };
    let count = slot.counter.load(Ordering::Relaxed).wrapping_add(1);
    slot.counter.store(count, Ordering::Relaxed);
    if MEMBARRIER.load(Ordering::Relaxed) {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
    Some(Inside { slot, count })
}

impl Drop for Inside {
    #[inline(always)]
    fn drop(&mut self) {
        self.slot
            .counter
            .store(self.count.wrapping_add(1), Ordering::Release);
        thread_words::set(HOOK_DEPTH, 0);
    }
}

/// Waits until every thread that was inside the dispatcher when this is
/// called has left it (a grace period: what it could see before is now
/// unreachable). Call after publishing the new state.
pub fn synchronize() {
    barrier_all_threads();
    // (A probe that attaches or detaches runs inside the dispatcher: it
    // must not wait for itself.)
    let own = thread_words::get(HOOK_SLOT) as *const ThreadSlot;
    let busy: Vec<(&'static ThreadSlot, u64)> = match SLOTS.lock() {
        Ok(slots) => slots
            .iter()
            .filter(|s| !std::ptr::eq(**s, own) && s.in_use.load(Ordering::Acquire))
            .map(|s| (*s, s.counter.load(Ordering::Acquire)))
            .filter(|(_, c)| c & 1 == 1)
            .collect(),
        Err(_) => return,
    };
    for (slot, c) in busy {
        let mut spins = 0u32;
        while slot.counter.load(Ordering::Acquire) == c && slot.in_use.load(Ordering::Acquire) {
            spins = spins.saturating_add(1);
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Pushes a pending return; false when the thread's return stack is full.
/// Entries for frames at or below `entry.slot` (deeper frames that a
/// `longjmp` or an exception skipped: the new call reuses their stack)
/// are dropped first, each passed to `dropped`.
pub fn push_return(entry: PendingReturn, mut dropped: impl FnMut(&PendingReturn)) -> bool {
    RETURNS.with(|cell| {
        let stack = cell.as_ptr();
        // SAFETY: this thread's stack; no reference to it outlives this
        // closure, and nothing re-enters here (the dispatcher's guard).
        unsafe {
            let mut len = (*stack).len;
            while len > 0 && (*stack).entries[len - 1].slot <= entry.slot {
                len -= 1;
                dropped(&(*stack).entries[len]);
            }
            if len == MAX_RETURN_DEPTH {
                (*stack).len = len;
                return false;
            }
            (*stack).entries[len] = entry;
            (*stack).len = len + 1;
        }
        true
    })
}

/// Pops the pending return whose slot is `slot` (the stack slot the
/// returning function's `ret` read), dropping the deeper stale entries
/// above it (each passed to `dropped`). `None` if no entry matches (then
/// nothing changes).
pub fn pop_return(slot: u64, mut dropped: impl FnMut(&PendingReturn)) -> Option<PendingReturn> {
    RETURNS.with(|cell| {
        let stack = cell.as_ptr();
        // SAFETY: as in `push_return`.
        let (len, entries) = unsafe { ((*stack).len, &(*stack).entries) };
        let entries = &entries[..len];
        let i = entries.iter().rposition(|e| e.slot == slot)?;
        for e in &entries[i + 1..] {
            dropped(e);
        }
        let found = entries[i];
        // SAFETY: as above (the shared borrow ends first).
        unsafe { (*stack).len = i };
        Some(found)
    })
}

/// The number of pending returns on this thread.
pub fn pending_returns() -> usize {
    // SAFETY: this thread's stack, read.
    RETURNS.with(|r| unsafe { (*r.as_ptr()).len })
}

/// Puts back every return address this thread's pending uretprobes
/// replaced (those still in place: the hijacking address in their slot)
/// and forgets them: an exception or a forced unwind is about to walk the
/// stack, and the unwinder must see the real callers. Each entry that was
/// pending is passed to `missed` (its return probes will not run).
pub fn repair_returns(mut missed: impl FnMut(&PendingReturn)) {
    RETURNS.with(|cell| {
        let stack = cell.as_ptr();
        // SAFETY: as in `push_return`; each slot is a stack word of this
        // thread that held a return address when it was pushed (a frame
        // still live, or memory of this thread's stack).
        unsafe {
            let len = (*stack).len;
            for e in &(&(*stack).entries)[..len] {
                let slot = e.slot as *mut u64;
                if *slot == e.hijack {
                    *slot = e.ret_addr;
                }
                missed(e);
            }
            (*stack).len = 0;
        }
    });
}
