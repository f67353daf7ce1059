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

use crate::thread_words::{self, QUIET};

/// Runs `f` as userbpf's own work on this thread: hooks do not see it.
pub fn scope<T>(f: impl FnOnce() -> T) -> T {
    counted_scope(
        || thread_words::get(QUIET),
        |v| thread_words::set(QUIET, v),
        f,
    )
}

/// Runs `f` with the thread's counter (read by `get`, written by `set`)
/// one higher, until `f` returns or unwinds.
pub(crate) fn counted_scope<T>(get: fn() -> u64, set: fn(u64), f: impl FnOnce() -> T) -> T {
    struct Leave(fn() -> u64, fn(u64));
    impl Drop for Leave {
        fn drop(&mut self) {
            (self.1)(self.0().saturating_sub(1));
        }
    }
    set(get().saturating_add(1));
    let _leave = Leave(get, set);
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
