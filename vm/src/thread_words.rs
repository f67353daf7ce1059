//! A few words of per-thread state at a fixed offset from the thread
//! pointer (`fs` on x86-64), so that machine code made at run time (the
//! hooks' trampolines) reads and writes them as `fs:[offset]`, with no
//! call: whether the thread is doing userbpf's own work ([`QUIET`],
//! see [`crate::quiet`]), whether it is inside the hooks' dispatcher
//! ([`HOOK_DEPTH`]), its quiescence counter ([`HOOK_SLOT`]) and its
//! pending uretprobe returns ([`HOOK_RETURNS`]), and the same for the
//! syscall hooks ([`SYS_DEPTH`], [`SYS_SLOT`]).
//!
//! The words are a thread-local block of the initial-exec model (defined
//! in assembly: Rust has no stable way to choose a TLS model), so they
//! live in the static TLS block every thread gets when it starts, at the
//! same offset from the thread pointer in every thread. A shared library
//! holding them gets `DF_STATIC_TLS`: preloaded or linked, as the agent
//! is, that costs nothing; opened with `dlopen` late, it takes room from
//! glibc's surplus static TLS. The words have no destructor: they stay
//! readable until the thread is gone, even while its other thread-locals
//! are being destroyed. Only their own thread uses them.

/// Word index: userbpf's own work on this thread (a count of nested
/// scopes; [`crate::quiet`]).
pub const QUIET: usize = 0;
/// Word index: non-zero while the thread runs inside the hooks'
/// dispatcher (the re-entrancy guard of `userbpf_shims::hook`).
pub const HOOK_DEPTH: usize = 1;
/// Word index: the address of the thread's quiescence counter (0 until
/// registered) (`userbpf_shims::hook`).
pub const HOOK_SLOT: usize = 2;
/// Word index: the address of the thread's pending uretprobe returns (0
/// until registered) (`userbpf_shims::hook`).
pub const HOOK_RETURNS: usize = 3;
/// Word index: non-zero while the thread runs syscall hooks (the
/// re-entrancy guard of `userbpf_shims::syscall`).
pub const SYS_DEPTH: usize = 4;
/// Word index: the thread's syscall quiescence slot, plus one (0: none
/// yet) (`userbpf_shims::syscall`).
pub const SYS_SLOT: usize = 5;
/// Number of words.
pub const WORDS: usize = 6;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
std::arch::global_asm!(
    ".pushsection .tbss.userbpf_vm_thread_words,\"awT\",@nobits",
    ".p2align 5",
    ".globl userbpf_vm_thread_words",
    ".hidden userbpf_vm_thread_words",
    ".type userbpf_vm_thread_words, @object",
    "userbpf_vm_thread_words:",
    ".zero 48",
    ".size userbpf_vm_thread_words, 48",
    ".popsection",
);

const _: () = assert!(WORDS * 8 == 48);

/// The words' offset from the thread pointer: the same in every thread.
#[inline(always)]
pub fn fs_offset() -> isize {
    let off: isize;
    // SAFETY: reads the GOT entry the linker filled with the block's
    // offset from the thread pointer (an initial-exec reference).
    unsafe {
        std::arch::asm!(
            "mov {off}, qword ptr [rip + userbpf_vm_thread_words@GOTTPOFF]",
            off = out(reg) off,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    off
}

/// Word `i` (below [`WORDS`]) of the calling thread.
#[inline(always)]
pub fn get(i: usize) -> u64 {
    debug_assert!(i < WORDS);
    let v: u64;
    // SAFETY: the block is this thread's static TLS, `WORDS` words at
    // `fs_offset()` from the thread pointer.
    unsafe {
        std::arch::asm!(
            "mov {v}, qword ptr fs:[{off} + {i} * 8]",
            v = out(reg) v,
            off = in(reg) fs_offset(),
            i = in(reg) i,
            options(nostack, preserves_flags, readonly),
        );
    }
    v
}

/// Sets word `i` (below [`WORDS`]) of the calling thread.
#[inline(always)]
pub fn set(i: usize, v: u64) {
    debug_assert!(i < WORDS);
    // SAFETY: as in `get`; only this thread uses its words.
    unsafe {
        std::arch::asm!(
            "mov qword ptr fs:[{off} + {i} * 8], {v}",
            v = in(reg) v,
            off = in(reg) fs_offset(),
            i = in(reg) i,
            options(nostack, preserves_flags),
        );
    }
}

/// The address of the calling thread's words (for tests and debuggers;
/// the words are only ever used by their own thread).
pub fn address() -> usize {
    let base: usize;
    // SAFETY: `fs:[0]` holds the thread pointer itself (the x86-64 TLS
    // ABI's TCB self-pointer).
    unsafe {
        std::arch::asm!(
            "mov {b}, qword ptr fs:[0]",
            b = out(reg) base,
            options(nostack, preserves_flags, readonly),
        );
    }
    base.wrapping_add_signed(fs_offset())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_per_thread_at_one_offset() {
        let off = fs_offset();
        assert!(off < 0, "static TLS lies below the thread pointer: {off}");
        set(HOOK_DEPTH, 7);
        assert_eq!(get(HOOK_DEPTH), 7);
        let mine = address();
        let (theirs, their_off, seen) = std::thread::spawn(|| {
            let seen = get(HOOK_DEPTH);
            set(HOOK_DEPTH, 9);
            (address(), fs_offset(), seen)
        })
        .join()
        .expect("thread");
        assert_eq!(seen, 0, "a new thread starts with zero words");
        assert_eq!(their_off, off);
        assert_ne!(theirs, mine);
        assert_eq!(get(HOOK_DEPTH), 7, "the other thread's write is its own");
        // SAFETY: reading this thread's own word through its address.
        assert_eq!(unsafe { *((mine + 8 * HOOK_DEPTH) as *const u64) }, 7);
        set(HOOK_DEPTH, 0);
    }
}
