//! The verifier's verdicts: a rejection with the pc, the instruction and
//! the kernel's message, and the statistics of a run.

use std::fmt;
use std::time::Duration;

/// Statistics of one verification (what the kernel prints at the end of
/// its log: `processed N insns ... total_states ... peak_states ...`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Instructions processed, over every path.
    pub processed: u64,
    /// States stored for pruning.
    pub total_states: u64,
    /// Most states stored at once.
    pub peak_states: u64,
    /// Paths cut short by pruning.
    pub pruned: u64,
    /// Time the verification took.
    pub time: Duration,
    /// The largest stack depth of any call chain, in bytes.
    pub stack_depth: u32,
    /// One past the largest context byte the program accesses (the
    /// runtime must pass at least that many bytes, as the kernel's
    /// `max_ctx_offset`).
    pub max_ctx_offset: u32,
    /// One past the largest byte of a writable raw tracepoint's buffer
    /// the program accesses (the kernel's `max_tp_access`, which it
    /// checks against the tracepoint's writable size at attach time).
    pub max_tp_access: u32,
    /// The 8-byte words of the context the program's instructions load
    /// or store (bit `i`: bytes `8i..8i+8`; offsets past 512 bytes set
    /// bit 63). A context access is always at a constant offset, so this
    /// is exact for every path.
    pub ctx_words: u64,
    /// The context pointer reaches a helper (as an argument), or is
    /// stored to memory: the program may read any of the context, not
    /// only [`Stats::ctx_words`].
    pub ctx_escapes: bool,
    /// The pc of a read of kernel memory (through a pointer to a kernel
    /// structure, or what one points to): only the kernel, whose loads
    /// there cannot fault, may run the program; [`crate::verify`] refuses
    /// it for user space.
    pub kernel_memory: Option<usize>,
    /// The pc of a load whose value was taken from a read-only map's
    /// contents (`Options::fold_read_only_maps`): the program is safe only
    /// while those stay as they are, which the kernel guarantees (frozen
    /// maps) and user space does not; [`crate::verify`] refuses it.
    pub folded: Option<usize>,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "processed {} insns (limit {}) total_states {} peak_states {} pruned {} stack_depth {}, {:?}",
            self.processed,
            crate::MAX_PROCESSED,
            self.total_states,
            self.peak_states,
            self.pruned,
            self.stack_depth,
            self.time
        )
    }
}

/// Why the verifier rejected a program.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("program `{program}` rejected at pc {pc} ({insn}): {message}")]
pub struct VerifyError {
    /// The program's name.
    pub program: String,
    /// The instruction at fault.
    pub pc: usize,
    /// That instruction, disassembled.
    pub insn: String,
    /// What is wrong, in the kernel's words where it has them.
    pub message: String,
    /// The verifier log up to the rejection (empty unless asked for).
    pub log: String,
    /// Statistics up to the rejection.
    pub stats: Stats,
}
