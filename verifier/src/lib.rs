//! userbpf's verifier: the static proof that a program is safe to run
//! without run-time checks, in the manner of the Linux verifier.
//!
//! Every path of the program is executed on abstract states (registers
//! typed as scalars with tnum and interval bounds, or pointers into the
//! context, the stack, map values, packets, helper memory; stack bytes
//! tracked one by one), and every memory access, helper call and exit is
//! checked on the way. States covered by an explored, finished state are
//! pruned; loops are explored until they exit, and a loop that comes back
//! to a state it already had is rejected. The result is the type-state
//! [`Verified<P>`], which the JIT's unchecked mode requires.
//!
//! ```
//! use userbpf_verifier::{verify, Env, Options};
//! use userbpf_vm::{asm, Program};
//!
//! let ok = Program::new("ok", asm::assemble("r0 = 0\nexit").unwrap()).unwrap();
//! assert!(verify(ok, &Env::raw(0), &Options::default()).is_ok());
//!
//! // r3 is read before anything was written to it.
//! let bad = Program::new("bad", asm::assemble("r0 = r3\nexit").unwrap()).unwrap();
//! let err = verify(bad, &Env::raw(0), &Options::default()).unwrap_err();
//! assert_eq!(err.message, "R3 !read_ok");
//! assert_eq!(err.pc, 0);
//! ```
#![deny(missing_docs)]
#![warn(clippy::arithmetic_side_effects)]

mod call;
mod cfg;
pub mod ctx;
pub mod env;
mod error;
mod exec;
mod explore;
mod global;
mod kstruct;
mod liveness;
mod mem;
mod precision;
pub mod reg;
pub mod scalar;
pub mod state;
pub mod tnum;

use std::ops::Deref;
use std::sync::Arc;

use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::Program;

pub use ctx::{AddrFamily, Context, SkbKind};
pub use env::{Env, GlobalFunction, MapInfo};
pub use error::{Stats, VerifyError};
pub use state::State;

/// The kernel's limit on instructions processed over all paths
/// (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const MAX_PROCESSED: u64 = 1_000_000;

/// How to verify.
#[derive(Clone, Debug)]
pub struct Options {
    /// 0: no log; 1: the verdict; 2: every instruction with the state
    /// before it (the kernel's `log_level` 2).
    pub log_level: u8,
    /// States kept per instruction for pruning (the search stays sound
    /// with fewer; it only prunes less).
    pub max_states_per_insn: usize,
    /// Instructions processed before the program is rejected as too
    /// complex (the kernel's 1,000,000 by default).
    pub max_processed: u64,
    /// BPF defines division and modulo by zero (`x / 0 = 0`, `x % 0 =
    /// x`); `false` rejects a divisor register that may be zero (PREVAIL's
    /// `!allow_division_by_zero`), for programs that want to rule it out.
    pub allow_division_by_zero: bool,
    /// Loads from read-only maps with known contents at constant offsets
    /// give those contents (the kernel's `bpf_map_direct_read` of frozen
    /// maps), so branches they decide are explored one way. [`check`]
    /// turns it on by itself for a second try when a program fails
    /// without it.
    pub fold_read_only_maps: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            log_level: 0,
            max_states_per_insn: 10_000,
            max_processed: MAX_PROCESSED,
            allow_division_by_zero: true,
            fold_read_only_maps: false,
        }
    }
}

/// What the verifier reports about an accepted program.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Statistics.
    pub stats: Stats,
    /// The log (empty at `log_level` 0).
    pub log: String,
}

/// Verifies `program` in `env` for user space: as [`check`], and the
/// program must not read kernel memory (the kernel's loads through its
/// structures' pointers cannot fault; user space's would), which
/// [`check`] accepts as the kernel does.
pub fn verify(
    program: Program,
    env: &Env,
    opts: &Options,
) -> Result<(Verified<Program>, Report), Box<VerifyError>> {
    let report = check(&program, env, opts, None)?;
    let refusal = if let Some(pc) = report.stats.folded {
        Some((
            pc,
            "the program is safe only with the values of its read-only maps as they are now \
             (folded in, as the kernel does for frozen maps); user space does not freeze maps, \
             so only the kernel can run it",
        ))
    } else {
        report.stats.kernel_memory.map(|pc| {
            (
                pc,
                "the program reads kernel memory (a kernel structure the kernel's BTF \
                 describes): only the kernel can run it, user space cannot",
            )
        })
    };
    if let Some((pc, message)) = refusal {
        return Err(Box::new(VerifyError {
            program: program.name().to_string(),
            pc,
            insn: program
                .instruction(pc)
                .map(|i| userbpf_vm::disasm::format_instruction(&i))
                .unwrap_or_default(),
            message: message.to_string(),
            log: report.log,
            stats: report.stats,
        }));
    }
    Ok((Verified(program), report))
}

/// Verifies `program` without taking it (the verdict and the report).
///
/// A program that fails is tried again with the values of its read-only
/// maps folded in, as the kernel folds those of frozen maps (a branch on a
/// `.kconfig` or `.rodata` constant explored one way): if it passes then,
/// the verdict is the kernel's, and [`Stats::folded`] says user space
/// cannot run it ([`verify`] refuses it).
pub fn check(
    program: &Program,
    env: &Env,
    opts: &Options,
    initial: Option<State>,
) -> Result<Report, Box<VerifyError>> {
    let first = check_once(program, env, opts, initial.clone());
    let foldable = env.maps.iter().any(|m| m.read_only && m.contents.is_some());
    match first {
        Err(_) if foldable && !opts.fold_read_only_maps => {
            let folding = Options {
                fold_read_only_maps: true,
                ..opts.clone()
            };
            check_once(program, env, &folding, initial)
        }
        other => other,
    }
}

fn check_once(
    program: &Program,
    env: &Env,
    opts: &Options,
    initial: Option<State>,
) -> Result<Report, Box<VerifyError>> {
    let mut v = explore::Verifier::new(program, env, opts);
    let state = initial.unwrap_or_else(|| v.initial_state());
    v.run(state)?;
    let mut log = std::mem::take(&mut v.log);
    if opts.log_level > 0 {
        log.push_str(&v.stats.to_string());
        log.push('\n');
    }
    Ok(Report {
        stats: v.stats,
        log,
    })
}

/// A program the verifier accepted. Only the verifier makes one (and, for
/// tests and benchmarks of programs known to be safe, the `unsafe`
/// [`Verified::assume_verified`], which neither the CLI nor the agent
/// calls): engines may run it without bounds checks.
#[derive(Debug, Clone)]
pub struct Verified<P>(P);

impl<P> Verified<P> {
    /// Declares `program` verified without running the verifier.
    ///
    /// # Safety
    /// The program must be safe as the verifier would prove it: every
    /// memory access in bounds of the memory it is given, every helper call
    /// with valid arguments, termination. An engine runs it without checks,
    /// so a wrong promise is undefined behaviour in the host process.
    pub unsafe fn assume_verified(program: P) -> Verified<P> {
        Verified(program)
    }

    /// The program.
    pub fn program(&self) -> &P {
        &self.0
    }

    /// The program, consuming the proof.
    pub fn into_inner(self) -> P {
        self.0
    }
}

impl Verified<Program> {
    /// `prepared` — the engines' form of a program — as verified, if it
    /// was prepared from exactly this program's instructions (which the
    /// proof is about). The runtime must give the program the context and
    /// maps of the [`Env`] it was verified with.
    pub fn vouch_for(
        &self,
        prepared: &Arc<PreparedProgram>,
    ) -> Option<Verified<Arc<PreparedProgram>>> {
        (prepared.insns() == self.0.insns() && prepared.name() == self.0.name())
            .then(|| Verified(Arc::clone(prepared)))
    }
}

impl<P> Deref for Verified<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.0
    }
}
