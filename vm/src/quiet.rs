//! Work that userbpf does for itself inside a traced process: loading,
//! verifying, compiling and attaching programs, reporting at exit,
//! compiling in the background. The in-process hooks (uprobes, syscall
//! hooks) do not see it: a syscall or a call a thread makes inside a
//! [`scope`] (or on a [`thread`] marked quiet) runs no program and counts
//! no miss, as the kernel's probes never see a tracer that runs in
//! another process.
//!
//! This crate is the lowest layer the hooks and every part of the runtime
//! share, so the flag lives here.

use std::cell::Cell;

thread_local! {
    static QUIET: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` as userbpf's own work on this thread: hooks do not see it.
pub fn scope<T>(f: impl FnOnce() -> T) -> T {
    counted_scope(&QUIET, f)
}

/// Runs `f` with the thread's counter `key` one higher (until `f` returns
/// or unwinds).
pub(crate) fn counted_scope<T>(
    key: &'static std::thread::LocalKey<Cell<u32>>,
    f: impl FnOnce() -> T,
) -> T {
    struct Leave(&'static std::thread::LocalKey<Cell<u32>>);
    impl Drop for Leave {
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
    QUIET.set(QUIET.get() + 1);
}

/// Whether this thread is doing userbpf's own work now.
#[inline(always)]
pub fn active() -> bool {
    QUIET.get() != 0
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
