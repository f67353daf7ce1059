//! A robust spinlock that lives in shared memory: the lock word holds the
//! owner's thread id, so a lock left behind by a thread of a process that
//! died is taken over instead of wedging every other process.

use std::sync::atomic::{AtomicU32, Ordering};

pub(super) fn current_tid() -> u32 {
    thread_local! {
        static TID: u32 = {
            // SAFETY: gettid has no preconditions.
            let t = unsafe { libc::gettid() };
            u32::try_from(t).unwrap_or(1).max(1)
        };
    }
    TID.with(|t| *t)
}

/// Whether thread (or process) `tid` still exists.
fn alive(tid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(tid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Whether thread `tid` still exists (for lease take-over).
pub(super) fn alive_pub(tid: u32) -> bool {
    alive(tid)
}

/// Spins this many times between liveness checks of the owner.
const SPINS_BEFORE_CHECK: u32 = 1 << 16;

/// Takes the lock at `word` (0 = free, else the owner's tid).
pub fn lock(word: &AtomicU32) {
    let me = current_tid();
    let mut spins = 0u32;
    loop {
        let cur = word.load(Ordering::Relaxed);
        if cur == 0 {
            if word
                .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            continue;
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(SPINS_BEFORE_CHECK) {
            if !alive(cur)
                && word
                    .compare_exchange(cur, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                // The owner died holding the lock: take it over.
                return;
            }
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Releases the lock at `word`.
pub fn unlock(word: &AtomicU32) {
    word.store(0, Ordering::Release);
}

/// Holds the lock at `word` until dropped.
#[derive(Debug)]
pub struct Guard<'a>(&'a AtomicU32);

impl<'a> Guard<'a> {
    /// Takes the lock.
    pub fn new(word: &'a AtomicU32) -> Guard<'a> {
        lock(word);
        Guard(word)
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        unlock(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_owner_does_not_wedge_the_lock() {
        // A thread id that cannot exist (above pid_max's hard limit).
        let word = AtomicU32::new(0x7fff_fff0);
        lock(&word);
        assert_eq!(word.load(Ordering::Relaxed), current_tid());
        unlock(&word);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn excludes_other_threads() {
        let word = AtomicU32::new(0);
        let counter = std::sync::atomic::AtomicU64::new(0);
        let plain = std::cell::UnsafeCell::new(0u64);
        struct Shared<'a>(&'a std::cell::UnsafeCell<u64>);
        // SAFETY: accesses to the cell are serialised by the lock below.
        unsafe impl Sync for Shared<'_> {}
        impl Shared<'_> {
            fn bump(&self) {
                // SAFETY: callers hold the lock.
                unsafe { *self.0.get() += 1 };
            }
        }
        let shared = Shared(&plain);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        let _g = Guard::new(&word);
                        shared.bump();
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(plain.into_inner(), 40_000);
    }
}
