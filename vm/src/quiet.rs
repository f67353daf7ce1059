//! Work that userbpf does for itself inside a traced process: loading,
//! verifying, compiling and attaching programs, reporting at exit,
//! compiling in the background. The in-process hooks (uprobes, syscall
//! hooks) do not see it: a syscall or a call a thread makes inside a
//! [`scope`] (or on a [`thread`] marked quiet) runs no program and counts
//! no miss, as the kernel's probes never see a tracer that runs in
//! another process.
//!
//! This crate is the lowest layer the hooks and every part of the runtime
//! share, so the flag lives here, in one of the [`crate::thread_words`]
//! (the trampolines of direct hooks read it there).

use std::cell::Cell;

use crate::thread_words::{self, QUIET};

/// Runs `f` as userbpf's own work on this thread: hooks do not see it.
pub fn scope<T>(f: impl FnOnce() -> T) -> T {
    /// The quiet word, as a counter.
    struct Quiet;
    impl Counter for Quiet {
        fn get(&self) -> u64 {
            thread_words::get(QUIET)
        }
        fn set(&self, v: u64) {
            thread_words::set(QUIET, v)
        }
    }
    counted_scope(Quiet, f)
}

/// A per-thread count of nested scopes.
pub(crate) trait Counter {
    /// The count.
    fn get(&self) -> u64;
    /// Sets it.
    fn set(&self, v: u64);
}

impl Counter for &'static std::thread::LocalKey<Cell<u32>> {
    fn get(&self) -> u64 {
        u64::from(self.with(Cell::get))
    }
    fn set(&self, v: u64) {
        self.with(|c| c.set(u32::try_from(v).unwrap_or(u32::MAX)))
    }
}

/// Runs `f` with the thread's counter `key` one higher (until `f` returns
/// or unwinds).
pub(crate) fn counted_scope<C: Counter, T>(key: C, f: impl FnOnce() -> T) -> T {
    struct Leave<C: Counter>(C);
    impl<C: Counter> Drop for Leave<C> {
        fn drop(&mut self) {
            self.0.set(self.0.get().saturating_sub(1));
        }
    }
    key.set(key.get().saturating_add(1));
    let _leave = Leave(key);
    f()
}

/// Marks the calling thread as userbpf's own for the rest of its life (a
/// background compiler).
pub fn thread() {
    thread_words::set(QUIET, thread_words::get(QUIET) + 1);
}

/// Whether this thread is doing userbpf's own work now.
#[inline(always)]
pub fn active() -> bool {
    thread_words::get(QUIET) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_end_and_threads_stay_marked() {
        assert!(!active());
        scope(|| {
            assert!(active());
            scope(|| assert!(active()));
            assert!(active());
            std::thread::spawn(|| {
                assert!(!active(), "per thread");
                thread();
                assert!(active());
            })
            .join()
            .expect("thread");
        });
        assert!(!active());
        let r = std::panic::catch_unwind(|| scope(|| panic!("inside")));
        assert!(r.is_err());
        assert!(!active(), "a panic leaves the scope too");
    }
}
