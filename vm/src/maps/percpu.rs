//! Per-CPU slots without losing updates.
//!
//! In the kernel a program runs with preemption off, so it owns its CPU's
//! slot of a per-CPU map for the whole run. A user-space thread can be
//! preempted or migrated at any instruction, so a second thread on the same
//! CPU could interleave a non-atomic `*v += 1` and lose an update. Here a
//! run *leases* a CPU slot of a map the first time it touches the map: it
//! takes the lease word of its current CPU (or, if another thread holds
//! that one, of any free CPU) and keeps it until the run ends. Two runs
//! never share a slot, so no update is lost; a lease held by a thread that
//! died is taken over.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};

/// Number of CPU slots: the configured CPUs (read once). CPU numbers
/// the runtime hands programs (`bpf_get_smp_processor_id`) are below it.
pub fn ncpus() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        usize::try_from(n).unwrap_or(1).max(1)
    })
}

thread_local! {
    /// Leases held by the current run: (lease table address, slot).
    static HELD: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
    /// Whether `HELD` may be non-empty: a run that leased nothing ends
    /// without touching it (this one needs no destructor, so it costs a
    /// plain thread-local load).
    static ANY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The slot this thread's run uses in the lease table at `table` (with
/// `n` entries), leasing one if the run holds none yet.
pub(super) fn slot(table: *const AtomicU32, n: usize) -> usize {
    let key = table as usize;
    if let Some(s) = HELD.with(|h| h.borrow().iter().find(|(t, _)| *t == key).map(|&(_, s)| s)) {
        return s;
    }
    let me = super::lock::current_tid();
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(0);
    let word = |i: usize| {
        // SAFETY: i < n: the word lies in the lease table.
        unsafe { &*table.add(i % n) }
    };
    let mut spins = 0u32;
    loop {
        for k in 0..n {
            let i = (cpu + k) % n;
            let w = word(i);
            let cur = w.load(Ordering::Relaxed);
            if (cur == 0 || (spins > 1000 && !super::lock::alive_pub(cur)))
                && w.compare_exchange(cur, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                HELD.with(|h| h.borrow_mut().push((key, i)));
                ANY.with(|a| a.set(true));
                return i % n;
            }
        }
        spins = spins.wrapping_add(1);
        std::thread::yield_now();
    }
}

/// Releases every lease of the current thread's run (the interpreter calls
/// this when a run ends).
pub fn release_leases() {
    if !ANY.with(|a| a.replace(false)) {
        return;
    }
    HELD.with(|h| {
        let mut h = h.borrow_mut();
        for &(table, i) in h.iter() {
            // SAFETY: the table belongs to a map that outlives the run that
            // leased from it.
            let w = unsafe { &*(table as *const AtomicU32).add(i) };
            w.store(0, Ordering::Release);
        }
        h.clear();
    });
}
