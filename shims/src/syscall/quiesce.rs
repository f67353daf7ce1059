//! The dispatcher's per-thread state: the re-entrancy guard and the
//! quiescence counters that let a detach free a hook list once no thread
//! can still be reading it.
//!
//! Nothing here allocates or takes a lock on the reader side: the
//! dispatcher runs inside `malloc`, during thread start-up and exit, in
//! signal handlers and in vfork children. A thread claims one of
//! [`SLOTS`] statically allocated counters on its first hooked syscall
//! (its index lives in a constant-initialised thread-local without a
//! destructor); the counter is odd while the thread runs hooks. When
//! every slot is taken, readers fall back to one shared counter.

use std::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use userbpf_vm::thread_words;

use super::trampoline;

/// How many threads get a counter of their own.
pub const SLOTS: usize = 1024;

#[repr(C, align(64))]
pub(crate) struct Slot {
    counter: AtomicU64,
    /// The owning thread's id; 0 = free.
    owner: AtomicU32,
}

pub(crate) static TABLE: [Slot; SLOTS] = [const {
    Slot {
        counter: AtomicU64::new(0),
        owner: AtomicU32::new(0),
    }
}; SLOTS];

/// Readers without a slot of their own (all slots taken).
static OVERFLOW: AtomicU64 = AtomicU64::new(0);

/// Whether `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` works: then
/// readers need only a compiler fence (the writer's membarrier is a full
/// barrier on every running thread).
static MEMBARRIER: AtomicBool = AtomicBool::new(false);

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: u64 = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: u64 = 1 << 4;

// Two of the thread's `userbpf_vm::thread_words` (the trampoline's direct
// lane uses them too): `SYS_DEPTH`, non-zero while this thread runs the
// dispatcher's hooks; `SYS_SLOT`, this thread's slot index + 1 (0: none
// yet).
struct Word(usize);

impl Word {
    #[inline(always)]
    fn get(&self) -> u32 {
        thread_words::get(self.0) as u32
    }

    #[inline(always)]
    fn set(&self, v: u32) {
        thread_words::set(self.0, u64::from(v))
    }
}

const DEPTH: Word = Word(thread_words::SYS_DEPTH);
const MY_SLOT: Word = Word(thread_words::SYS_SLOT);

/// Whether readers may skip their own fence (the writer's membarrier is
/// one): the trampoline's direct lane needs it.
pub fn membarrier_ok() -> bool {
    MEMBARRIER.load(Ordering::Relaxed)
}

/// Registers the process for expedited membarriers (idempotent).
pub fn init() {
    // SAFETY: membarrier takes no pointers.
    let r = unsafe {
        trampoline::raw_syscall(
            libc::SYS_membarrier,
            [MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0, 0, 0, 0],
        )
    };
    MEMBARRIER.store(r == 0, Ordering::SeqCst);
}

/// Whether this thread is running hooks right now.
pub fn inside() -> bool {
    DEPTH.get() != 0
}

fn claim() -> Option<u32> {
    let tid = trampoline::gettid();
    for (i, slot) in TABLE.iter().enumerate() {
        if slot.owner.load(Ordering::Relaxed) == 0
            && slot
                .owner
                .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            MY_SLOT.set(i as u32 + 1);
            return Some(i as u32);
        }
    }
    None
}

/// Proof that this thread entered the hooks; dropping it leaves.
#[derive(Debug)]
pub struct Inside {
    slot: Option<(&'static AtomicU64, u64)>,
}

/// Enters the hooks on this thread: `None` if it is already inside (a
/// hook's own syscall, a signal handler interrupting a hook).
#[inline]
pub fn enter() -> Option<Inside> {
    if DEPTH.get() != 0 {
        return None;
    }
    DEPTH.set(1);
    let index = match MY_SLOT.get() {
        0 => claim(),
        n => Some(n - 1),
    };
    let slot = match index {
        Some(i) => {
            let counter = &TABLE[i as usize].counter;
            let old = counter.load(Ordering::Relaxed);
            // Odd, and different from before even if a hook once left
            // without returning (a longjmp out of a signal handler).
            let c = old.wrapping_add(if old & 1 == 0 { 1 } else { 2 });
            counter.store(c, Ordering::Relaxed);
            Some((counter, c))
        }
        None => {
            OVERFLOW.fetch_add(1, Ordering::SeqCst);
            None
        }
    };
    if MEMBARRIER.load(Ordering::Relaxed) {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
    Some(Inside { slot })
}

impl Drop for Inside {
    #[inline]
    fn drop(&mut self) {
        match self.slot {
            Some((counter, c)) => counter.store(c.wrapping_add(1), Ordering::Release),
            None => {
                OVERFLOW.fetch_sub(1, Ordering::SeqCst);
            }
        }
        DEPTH.set(0);
    }
}

/// The thread is about to `exit`: its slot becomes free (only when the
/// slot is really its own: a vfork child shares its parent's
/// thread-locals).
pub fn thread_exiting() {
    let n = MY_SLOT.get();
    if n == 0 {
        return;
    }
    let slot = &TABLE[(n - 1) as usize];
    let tid = trampoline::gettid();
    if slot.owner.load(Ordering::Acquire) == tid {
        MY_SLOT.set(0);
        slot.owner.store(0, Ordering::Release);
    }
}

/// In a fork child: every other thread of the parent is gone, so are its
/// slots; this thread's slot gets the child's thread id.
pub fn after_fork() {
    let mine = MY_SLOT.get();
    for (i, slot) in TABLE.iter().enumerate() {
        if i as u32 + 1 == mine {
            slot.owner.store(trampoline::gettid(), Ordering::Release);
        } else if slot.owner.load(Ordering::Relaxed) != 0 {
            let c = slot.counter.load(Ordering::Relaxed);
            slot.counter.store(c.wrapping_add(c & 1), Ordering::Relaxed);
            slot.owner.store(0, Ordering::Release);
        }
    }
    OVERFLOW.store(0, Ordering::Release);
}

/// A full memory barrier on every thread of the process.
fn barrier_all_threads() {
    if MEMBARRIER.load(Ordering::Relaxed) {
        // SAFETY: membarrier takes no pointers.
        let r = unsafe {
            trampoline::raw_syscall(
                libc::SYS_membarrier,
                [MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0, 0, 0, 0],
            )
        };
        if r == 0 {
            return;
        }
    }
    fence(Ordering::SeqCst);
}

/// Waits until every thread that was running hooks when this is called
/// has left them (a grace period: what they could see before is then
/// unreachable). Call after publishing the new state. Returns false if
/// some thread stayed inside longer than `timeout` (the caller must then
/// leak what it meant to free).
pub fn synchronize(timeout: Duration) -> bool {
    barrier_all_threads();
    let mine = MY_SLOT.get();
    let start = Instant::now();
    let wait = |done: &dyn Fn() -> bool| -> bool {
        let mut spins = 0u32;
        while !done() {
            if start.elapsed() > timeout {
                return false;
            }
            spins = spins.saturating_add(1);
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        true
    };
    for (i, slot) in TABLE.iter().enumerate() {
        if i as u32 + 1 == mine || slot.owner.load(Ordering::Acquire) == 0 {
            continue;
        }
        let c = slot.counter.load(Ordering::Acquire);
        if c & 1 == 0 {
            continue;
        }
        if !wait(&|| {
            slot.counter.load(Ordering::Acquire) != c || slot.owner.load(Ordering::Acquire) == 0
        }) {
            return false;
        }
    }
    // Readers without a slot: wait for the shared count to drop to what
    // this thread itself holds (a detach from inside a hook).
    let own = u64::from(inside() && mine == 0);
    wait(&|| OVERFLOW.load(Ordering::Acquire) <= own)
}
