//! Executable memory that userbpf makes for itself: JIT code, hook
//! trampolines, the code pages it patches.
//!
//! The in-process syscall interception watches the process create
//! executable memory, because a `syscall` instruction there would escape
//! its rewrite (it then arms Syscall User Dispatch). userbpf's own code
//! never contains one, so the crates that make code say so here: a
//! region is [`register`]ed before it becomes executable, and code
//! patching runs inside a [`scope`]. This crate is the lowest layer every
//! code maker and the interception share.

use std::cell::Cell;
use std::sync::Mutex;

/// Registered regions: (start, end).
static REGIONS: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

thread_local! {
    static SCOPE: Cell<u32> = const { Cell::new(0) };
}

/// Records `[start, start + len)` as userbpf's own code (no `syscall`
/// instruction in it, ever). Call before the memory becomes executable.
pub fn register(start: u64, len: u64) {
    if let Ok(mut r) = REGIONS.lock() {
        r.push((start, start.saturating_add(len)));
    }
}

/// Forgets a region [`register`]ed with the same start (call once it is
/// unmapped).
pub fn unregister(start: u64) {
    if let Ok(mut r) = REGIONS.lock() {
        if let Some(i) = r.iter().position(|&(s, _)| s == start) {
            r.swap_remove(i);
        }
    }
}

/// Whether `[start, start + len)` lies inside one registered region.
pub fn contains(start: u64, len: u64) -> bool {
    let end = start.saturating_add(len);
    REGIONS
        .lock()
        .map(|r| r.iter().any(|&(s, e)| s <= start && end <= e))
        .unwrap_or(false)
}

/// Runs `f` as userbpf's own code work on this thread: the executable
/// mappings and protection changes it makes (patching code pages) are
/// userbpf's and add no `syscall` instruction.
pub fn scope<T>(f: impl FnOnce() -> T) -> T {
    crate::quiet::counted_scope(
        || u64::from(SCOPE.get()),
        |v| SCOPE.set(u32::try_from(v).unwrap_or(u32::MAX)),
        f,
    )
}

/// Whether this thread is inside a [`scope`].
pub fn in_scope() -> bool {
    SCOPE.get() > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_found_until_unregistered() {
        let start = 0x7777_0000_1000u64;
        assert!(!contains(start, 16));
        register(start, 0x2000);
        assert!(contains(start, 16));
        assert!(contains(start + 0x1ff0, 16));
        assert!(!contains(start + 0x1ff8, 16), "crosses the end");
        assert!(!contains(start - 8, 16), "starts before");
        unregister(start);
        assert!(!contains(start, 16));
    }

    #[test]
    fn the_scope_is_per_thread_and_nests() {
        assert!(!in_scope());
        scope(|| {
            assert!(in_scope());
            scope(|| assert!(in_scope()));
            assert!(in_scope());
            std::thread::spawn(|| assert!(!in_scope()))
                .join()
                .expect("thread");
        });
        assert!(!in_scope());
    }
}
