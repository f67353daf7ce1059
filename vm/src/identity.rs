//! The calling thread's ids, as `bpf_get_current_pid_tgid` returns them
//! (`tgid << 32 | tid`), without two syscalls per call: each thread keeps
//! its own in a thread-local, valid while [`GENERATION`] has not moved.
//!
//! The ids change only in a new process or a thread that shares another's
//! thread-locals: a `fork` child (libc's `fork` runs this module's
//! `pthread_atfork` handler, which moves the generation), and a `vfork`
//! child or a raw `clone`, which userbpf's syscall interception sees when
//! it is installed (it moves the generation in the child and again in the
//! parent when it resumes: they share the thread-locals). Without that
//! interception, a `vfork` child that runs a probe before its `exec`
//! reports its parent's ids.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// Moves when the ids a thread cached may no longer be its own (see the
/// module documentation). Public so that code which must not call into
/// Rust (an assembly syscall trampoline) can move it with a plain
/// increment.
pub static GENERATION: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// (generation, `tgid << 32 | tid`); no destructor: usable at any
    /// moment of the thread's life.
    static CACHED: Cell<(u64, u64)> = const { Cell::new((u64::MAX, 0)) };
}

static ATFORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    invalidate();
}

/// Makes every thread ask the kernel again (a process or a thread whose
/// ids changed under the cache).
pub fn invalidate() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// `tgid << 32 | tid` of the calling thread.
#[inline]
pub fn pid_tgid() -> u64 {
    let gen = GENERATION.load(Ordering::Acquire);
    if let Ok((g, v)) = CACHED.try_with(Cell::get) {
        if g == gen {
            return v;
        }
    }
    fetch(gen)
}

#[cold]
#[inline(never)]
fn fetch(gen: u64) -> u64 {
    ATFORK.call_once(|| {
        // SAFETY: registering a plain extern "C" function for fork children.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    // SAFETY: getpid and gettid have no preconditions.
    let (tgid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
    let v = (u64::from(tgid as u32) << 32) | u64::from(tid as u32);
    let _ = CACHED.try_with(|c| c.set((gen, v)));
    v
}

/// The calling process's id (`tgid`).
#[inline]
pub fn pid() -> i32 {
    (pid_tgid() >> 32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_gets_its_own_tid_and_the_process_id() {
        // SAFETY: getpid/gettid have no preconditions.
        let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
        assert_eq!(
            pid_tgid(),
            (u64::from(pid as u32) << 32) | u64::from(tid as u32)
        );
        assert_eq!(pid_tgid(), pid_tgid(), "cached");
        let other = std::thread::spawn(|| {
            // SAFETY: as above.
            let tid = unsafe { libc::gettid() };
            (pid_tgid(), tid)
        })
        .join()
        .unwrap();
        assert_eq!(other.0 >> 32, pid as u64);
        assert_eq!(other.0 & 0xffff_ffff, other.1 as u64);
    }

    #[test]
    fn a_fork_child_gets_its_own_ids() {
        let parent = pid_tgid();
        // SAFETY: the child only compares numbers and leaves with _exit.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: as above.
            let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
            let want = (u64::from(pid as u32) << 32) | u64::from(tid as u32);
            let code = if pid_tgid() == want && want != parent {
                0
            } else {
                1
            };
            // SAFETY: leaving the child without the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        assert!(child > 0, "fork");
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child saw its parent's ids"
        );
        assert_eq!(pid_tgid(), parent, "the parent's stay");
    }
}
