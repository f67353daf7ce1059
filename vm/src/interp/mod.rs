//! The checked interpreter.
//!
//! A [`Program`] is lowered once into a [`PreparedProgram`]: a flat array of
//! pre-decoded operations (immediates sign-extended, jump targets absolute,
//! helper ids bound to their implementations, `lddw` pseudo values resolved).
//! A [`Vm`] runs it with *checked mode* semantics:
//!
//! - every load, store and atomic is checked against the memory regions the
//!   embedder provided, the regions helpers granted, and the live stack
//!   frames; every pointer argument of a helper is checked against its
//!   prototype;
//! - an instruction budget (1,000,000 by default) stops unverified loops;
//! - bpf-to-bpf calls are limited to 8 frames of 512 bytes, tail calls to 33;
//! - the stack is zeroed before each run.
//!
//! Any violation ends the run with a [`Fault`] naming the program, the pc and
//! the instruction. Nothing in here panics or touches memory outside those
//! regions, whatever the bytecode.
#![warn(clippy::arithmetic_side_effects)]

mod engine;
mod exec;
mod lower;

pub(crate) use engine::apply_compile_hook as engine_hook;
pub use engine::{
    set_compile_hook, ClosedCode, ClosedEntry, ClosedHead, ClosedReturn, CompiledProgram,
    DriveStep, EngineFault, EngineRun, EngineStop, HelperReturn, LeafCode, OpClass, LEAF_STACK,
};

pub use lower::{MapAccel, PreparedProgram};

use std::fmt;
use std::sync::Arc;

use crate::helpers::{HelperError, Helpers, HookInfo, RunEnv, RunOutcome};
use crate::insn::Insn;
use crate::isa::Lddw;
use crate::memory::{Access, MemoryMap, Region, RegionKind};
use crate::program::Program;

use exec::{run_ops, Frame, State, Stop};

/// Bytes of stack per frame (`MAX_BPF_STACK`).
pub const STACK_SIZE: usize = 512;
/// Maximum call depth, the main program included (`MAX_CALL_FRAMES`).
pub const MAX_CALL_FRAMES: usize = 8;
/// Maximum number of tail calls per run (`MAX_TAIL_CALL_CNT`).
pub const MAX_TAIL_CALLS: u32 = 33;
/// Default instruction budget per run.
pub const DEFAULT_BUDGET: u64 = 1_000_000;
/// The kernel's helper id of `bpf_tail_call`.
pub const BPF_FUNC_TAIL_CALL: i32 = 12;
/// The kernel's helper id of `bpf_loop`, run by the interpreter itself
/// (its callback is a subprogram of the running program).
pub const BPF_FUNC_LOOP: i32 = 181;
/// The helper id libbpf (and the object loader) put in a `call` that
/// replaces an instruction whose CO-RE relocation could not be resolved
/// (`0xbad2310`, "bad relo"). The interpreter stops with
/// [`FaultKind::PoisonedCoreRelocation`] if it is executed.
pub const CORE_POISON_HELPER: i32 = 0xbad2310;
/// `BPF_MAX_LOOPS`: the most iterations `bpf_loop` accepts.
pub const BPF_MAX_LOOPS: u64 = 8 * 1024 * 1024;

/// `SKF_NET_OFF`: legacy packet loads at this offset and above (to 0)
/// read from the network header.
pub const SKF_NET_OFF: i32 = -0x10_0000;
/// `SKF_LL_OFF`: legacy packet loads at this offset and above (to
/// [`SKF_NET_OFF`]) read from the link-layer header.
pub const SKF_LL_OFF: i32 = -0x20_0000;

/// What legacy packet loads (`BPF_LD_ABS`, `BPF_LD_IND`) read: the packet
/// from `skb->data`, and for negative offsets (`SKF_NET_OFF`,
/// `SKF_LL_OFF`) its network and link-layer headers, as the kernel's
/// `bpf_internal_load_pointer_neg_helper` finds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketWindow {
    /// Address of the packet's first byte (`skb->data`).
    pub start: u64,
    /// Its length from there.
    pub len: u64,
    /// The lowest address a load may reach (`skb->head`; loads end at
    /// `start + len`, `skb_tail_pointer`).
    pub head: u64,
    /// The network header, if the packet has one.
    pub net: Option<u64>,
    /// The link-layer header, if the packet has one.
    pub mac: Option<u64>,
}

impl PacketWindow {
    /// A plain window of `len` bytes at `start`: no header below it.
    pub fn new(start: u64, len: u64) -> PacketWindow {
        PacketWindow {
            start,
            len,
            head: start,
            net: None,
            mac: None,
        }
    }

    /// The address `size` bytes are loaded from at offset `off` (the
    /// 64-bit sum of the base register and `imm`, which the kernel passes
    /// to its load helpers as an `int`), or `None` when they lie outside
    /// the packet: the function then returns 0.
    #[inline]
    pub fn address(&self, off: u64, size: u64) -> Option<u64> {
        let off = i64::from(off as u32 as i32);
        let tail = self.start.wrapping_add(self.len);
        let at = if off >= 0 {
            self.start.wrapping_add(off as u64)
        } else if off >= i64::from(SKF_NET_OFF) {
            self.net?
                .wrapping_add(off.wrapping_sub(i64::from(SKF_NET_OFF)) as u64)
        } else if off >= i64::from(SKF_LL_OFF) {
            self.mac?
                .wrapping_add(off.wrapping_sub(i64::from(SKF_LL_OFF)) as u64)
        } else {
            return None;
        };
        let end = at.checked_add(size)?;
        (at >= self.head && end <= tail).then_some(at)
    }

    /// Loads `size` bytes (at most 4) at offset `off` ([`address`]),
    /// big-endian: `Ok(None)` outside the packet (the function then
    /// returns 0), `Err((addr, len, e))` when `check` refuses a part.
    /// `check(addr, len)` gives the address to read `len` bytes at `addr`
    /// from; a load across the packet's start is checked in two parts (the
    /// headers below it may be a memory region of their own).
    ///
    /// # Safety
    /// `check` returns `Ok(a)` only when `[a, a + len)` is readable.
    ///
    /// [`address`]: PacketWindow::address
    #[inline]
    pub unsafe fn load<E>(
        &self,
        off: u64,
        size: u64,
        mut check: impl FnMut(u64, u64) -> Result<u64, E>,
    ) -> Result<Option<u64>, (u64, u64, E)> {
        let size = size.min(4);
        let Some(at) = self.address(off, size) else {
            return Ok(None);
        };
        let mut v = 0u64;
        for (part, len) in self.parts(at, size) {
            if len == 0 {
                continue;
            }
            let a = check(part, len).map_err(|e| (part, len, e))?;
            let mut b = [0u8; 4];
            // SAFETY: the caller's `check` proved [a, a + len) readable;
            // len <= 4.
            unsafe { std::ptr::copy_nonoverlapping(a as *const u8, b.as_mut_ptr(), len as usize) };
            v = b[..len as usize]
                .iter()
                .fold(v, |v, &byte| (v << 8) | u64::from(byte));
        }
        Ok(Some(v))
    }

    /// The parts of `[at, at + size)` on either side of the packet's
    /// start: `(at, size)` alone when it does not straddle it.
    #[inline]
    fn parts(&self, at: u64, size: u64) -> [(u64, u64); 2] {
        if at < self.start && at.wrapping_add(size) > self.start {
            let below = self.start.wrapping_sub(at);
            [(at, below), (self.start, size.wrapping_sub(below))]
        } else {
            [(at, size), (at, 0)]
        }
    }
}

/// Tag in the upper 32 bits of a subprogram "address" loaded by
/// `lddw src=4` (`BPF_PSEUDO_FUNC`); the lower 32 bits are its pc. `callx`
/// on such a value is a bpf-to-bpf call; on a small integer it calls the
/// helper with that id (the conformance suite's convention).
pub const FUNC_ADDR_TAG: u64 = 0xc0de_f00d_0000_0000;
/// The tag bits of [`FUNC_ADDR_TAG`] values.
pub const FUNC_ADDR_MASK: u64 = 0xffff_ffff_0000_0000;

const TOTAL_STACK: usize = STACK_SIZE * MAX_CALL_FRAMES;

/// Run-time limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Instructions allowed per run; `None` for no limit (only for programs
    /// known to terminate).
    pub budget: Option<u64>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            budget: Some(DEFAULT_BUDGET),
        }
    }
}

/// Resolves the map flavours of `lddw` (`src` 1, 2, 5, 6) to addresses or
/// handles. The objects layer implements it; without one, programs that load
/// maps are refused.
pub trait MapResolver: Send + Sync {
    /// The 64-bit value `lddw` at `pc` loads.
    fn resolve(&self, pc: usize, value: Lddw) -> Result<u64, String>;
}

/// A program array (`BPF_MAP_TYPE_PROG_ARRAY`) as `bpf_tail_call` sees it.
pub trait ProgramArray: Send + Sync {
    /// The program at `index` of the program array `map` (the value of `r2`
    /// at the call), if the slot is set.
    fn get(&self, map: u64, index: u32) -> Option<Arc<PreparedProgram>>;
}

/// Why a program cannot be prepared for the interpreter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// A `call` names a helper that is not registered.
    #[error("program `{program}`: unknown helper id {id} ({name}) called at pc {pc}")]
    UnknownHelper {
        /// Program name.
        program: String,
        /// pc of the call.
        pc: usize,
        /// Helper id.
        id: i32,
        /// The kernel's name for the id, if any.
        name: String,
    },
    /// A kfunc call (`call src=2`).
    #[error("program `{program}`: kfunc call (btf_id {btf_id}) at pc {pc} is not supported in user space")]
    Kfunc {
        /// Program name.
        program: String,
        /// pc of the call.
        pc: usize,
        /// BTF id of the kfunc.
        btf_id: i32,
    },
    /// An `lddw` whose value cannot be provided.
    #[error("program `{program}`: lddw at pc {pc} ({what}): {message}")]
    Lddw {
        /// Program name.
        program: String,
        /// pc of the lddw.
        pc: usize,
        /// Which flavour.
        what: &'static str,
        /// Why.
        message: String,
    },
}

/// What went wrong at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// No region covers the access.
    OutOfBounds {
        /// Read or write.
        access: Access,
    },
    /// A store or atomic into a read-only region.
    ReadOnly {
        /// The region.
        region: RegionKind,
    },
    /// An atomic operation on an address not aligned to its size.
    Misaligned,
    /// The instruction budget ran out.
    BudgetExhausted {
        /// The budget.
        limit: u64,
    },
    /// A bpf-to-bpf call beyond [`MAX_CALL_FRAMES`].
    CallDepthExceeded {
        /// The limit.
        limit: usize,
    },
    /// A helper pointer argument outside the program's memory.
    HelperArgument {
        /// Helper id.
        helper: i32,
        /// Argument index (1 for `r1`).
        arg: usize,
        /// How the helper uses it.
        access: Access,
    },
    /// A helper failed.
    Helper {
        /// Helper id.
        helper: i32,
        /// Helper name.
        name: String,
        /// The error.
        error: HelperError,
    },
    /// `callx` on a value that is neither a subprogram address nor a
    /// registered helper id.
    BadCallTarget {
        /// The register value.
        value: u64,
    },
    /// A legacy packet load without a packet.
    NoPacket,
    /// Execution reached a pc that holds no instruction.
    InvalidPc,
    /// Execution reached an instruction whose CO-RE relocation could not be
    /// resolved against the target BTF (`call 0xbad2310`); the object's
    /// `ObjProgram::core_failures` names the relocation.
    PoisonedCoreRelocation,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::OutOfBounds { access } => {
                write!(f, "invalid {access}: no memory region covers it")
            }
            FaultKind::ReadOnly { region } => write!(f, "write into read-only {region:?} memory"),
            FaultKind::Misaligned => f.write_str("misaligned atomic access"),
            FaultKind::BudgetExhausted { limit } => {
                write!(f, "instruction budget of {limit} exhausted")
            }
            FaultKind::CallDepthExceeded { limit } => {
                write!(f, "the call stack is too deep (more than {limit} frames)")
            }
            FaultKind::HelperArgument {
                helper,
                arg,
                access,
            } => write!(
                f,
                "argument r{arg} of helper {helper} points outside the program's memory ({access})"
            ),
            FaultKind::Helper {
                helper,
                name,
                error,
            } => write!(f, "helper {name}#{helper} failed: {error}"),
            FaultKind::BadCallTarget { value } => {
                write!(
                    f,
                    "callx target {value:#x} is neither a subprogram nor a helper"
                )
            }
            FaultKind::NoPacket => f.write_str("legacy packet load without packet data"),
            FaultKind::InvalidPc => f.write_str("execution reached a pc without an instruction"),
            FaultKind::PoisonedCoreRelocation => f.write_str(
                "reached an instruction whose CO-RE relocation could not be resolved against \
                 the target BTF (the loader replaced it with `call 0xbad2310`, as libbpf does)",
            ),
        }
    }
}

/// A run-time error: the program, the pc, the instruction, the address and
/// length involved (0 when not a memory access) and what went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Program name.
    pub program: Arc<str>,
    /// pc of the faulting instruction.
    pub pc: usize,
    /// The faulting slot.
    pub insn: Insn,
    /// Address involved.
    pub addr: u64,
    /// Length involved.
    pub len: u64,
    /// What went wrong.
    pub kind: FaultKind,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "program `{}`: fault at pc {} (", self.program, self.pc)?;
        match crate::isa::decode(&[self.insn, Insn::default()], 0) {
            Ok(i) => write!(f, "{}", crate::disasm::format_instruction(&i))?,
            Err(_) => write!(f, "{}", self.insn)?,
        }
        write!(f, "): {}", self.kind)?;
        if matches!(
            self.kind,
            FaultKind::OutOfBounds { .. }
                | FaultKind::ReadOnly { .. }
                | FaultKind::Misaligned
                | FaultKind::HelperArgument { .. }
        ) {
            write!(f, " [addr {:#x}, {} bytes]", self.addr, self.len)?;
        }
        Ok(())
    }
}

impl std::error::Error for Fault {}

/// An interpreter instance: a prepared program plus the state of its runs
/// (stack, memory regions, program array). Not shared between threads; make
/// one per thread from the same `Arc<PreparedProgram>`.
pub struct Vm {
    prog: Arc<PreparedProgram>,
    stack: Box<[u64; TOTAL_STACK / 8]>,
    dirty_frames: usize,
    mem: MemoryMap,
    program_array: Option<Arc<dyn ProgramArray>>,
    last_insn_count: u64,
    /// The last run was closed and its instruction count and the frames
    /// it used are still in its context's head (read when asked for: a
    /// closed run does nothing after its call but test the status).
    closed_pending: bool,
    outcome: RunOutcome,
    /// The run state, kept between runs so a run does not rebuild it.
    state: Box<State>,
    /// Whether runs use native code attached to the programs.
    use_compiled: bool,
    /// Whether the program's native code is closed, once known.
    closed: Closed,
    /// [`Vm::run`]'s fast path into closed code, when it has one.
    fast: Option<FastClosed>,
    /// The context (start, length) of the last run on that path.
    fast_context: (u64, u64),
    /// Owners of memory behind persistent regions, kept alive with the VM.
    keep_alive: Vec<Arc<dyn std::any::Any + Send + Sync>>,
}

/// What a VM knows of its program's native code being closed
/// ([`CompiledProgram::closed_entry`]).
enum Closed {
    /// No native code attached yet.
    Unknown,
    /// The code is not closed: runs take the general path.
    No,
    /// Closed: its entry, the context the VM keeps for it, and what each
    /// run needs of the program (kept here: one load each).
    Yes(ClosedRun),
}

/// What [`Vm::run`] needs to call closed code that wants no zeroed
/// stack (copied out of [`ClosedRun`] when runs use compiled code: one
/// test for the whole path, no enum to match).
#[derive(Clone, Copy)]
struct FastClosed {
    code: *const std::sync::atomic::AtomicUsize,
    head: *mut ClosedHead,
    budget: u64,
    checked: bool,
}

// SAFETY: the pointers are into the VM's own `ClosedRun` (its context's
// words, boxed) and its program's code slot, which move with the VM and
// are only used by it (`ClosedEntry` is `Send` for the slot's sake).
unsafe impl Send for FastClosed {}
// SAFETY: as above; a shared VM never dereferences them.
unsafe impl Sync for FastClosed {}

/// What a closed run needs, kept by the VM.
struct ClosedRun {
    entry: ClosedEntry,
    ctx: Box<[u64]>,
    /// The program's budget (`u64::MAX` without one).
    budget: u64,
    /// Whether the program names r10 (the stack to zero after a run).
    touches_stack: bool,
}

impl fmt::Debug for Vm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vm")
            .field("prog", &self.prog)
            .field("regions", &self.mem.regions())
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// Prepares `program` with `helpers` and the default [`Config`].
    pub fn new(program: &Program, helpers: Helpers) -> Result<Vm, PrepareError> {
        Vm::with_config(program, &helpers, Config::default())
    }

    /// Prepares `program` with `helpers` and `config`.
    pub fn with_config(
        program: &Program,
        helpers: &Helpers,
        config: Config,
    ) -> Result<Vm, PrepareError> {
        Ok(Vm::from_prepared(Arc::new(PreparedProgram::new(
            program, helpers, config,
        )?)))
    }

    /// A VM for an already prepared program.
    pub fn from_prepared(prog: Arc<PreparedProgram>) -> Vm {
        engine::apply_compile_hook(&prog);
        Vm {
            prog,
            stack: Box::new([0u64; TOTAL_STACK / 8]),
            dirty_frames: 0,
            mem: MemoryMap::new(),
            program_array: None,
            last_insn_count: 0,
            closed_pending: false,
            outcome: RunOutcome::default(),
            state: Box::new(State {
                regs: [0; 16],
                frames: [Frame::default(); MAX_CALL_FRAMES],
                depth: 0,
                base_depth: 0,
                max_depth: 0,
                budget: 0,
                tail_calls: 0,
                packet: None,
                env: RunEnv::default(),
                drivers: Vec::new(),
            }),
            use_compiled: true,
            closed: Closed::Unknown,
            fast: None,
            fast_context: (0, 0),
            keep_alive: Vec::new(),
        }
    }

    /// Allocates now what a VM otherwise allocates on its first runs (its
    /// native code's context, room for a run's regions), so that runs of
    /// programs that call no allocating helper allocate nothing: for hooks
    /// that may run inside `malloc` or a signal handler.
    pub fn warm_up(&mut self) {
        if self.use_compiled && matches!(self.closed, Closed::Unknown) {
            self.closed_setup();
        }
        self.mem.reserve(16);
    }

    /// Keeps `owner` alive as long as this VM (for the memory behind
    /// regions added with [`Vm::add_region`]).
    pub fn keep_alive(&mut self, owner: Arc<dyn std::any::Any + Send + Sync>) {
        self.keep_alive.push(owner);
    }

    /// The prepared program.
    pub fn prepared(&self) -> &Arc<PreparedProgram> {
        &self.prog
    }

    /// Makes `region` accessible to every later run.
    ///
    /// # Safety
    /// The memory must stay valid (and writable, if `region.writable`) for
    /// as long as this VM may run, or until [`Vm::clear_regions`].
    pub unsafe fn add_region(&mut self, region: Region) {
        self.mem.add_persistent(region);
    }

    /// Removes every region added with [`Vm::add_region`].
    pub fn clear_regions(&mut self) {
        self.mem.clear_persistent();
    }

    /// Sets the program array `bpf_tail_call` (helper 12) looks programs up
    /// in.
    pub fn set_program_array(&mut self, array: Option<Arc<dyn ProgramArray>>) {
        self.program_array = array;
    }

    /// Whether later runs use native code attached to the programs
    /// ([`PreparedProgram::set_compiled`]) or interpret them (default: use
    /// it). Differential tests run one VM both ways.
    pub fn set_use_compiled(&mut self, use_compiled: bool) {
        self.use_compiled = use_compiled;
        self.fast = self.fast_closed();
    }

    /// The fast path into closed code, if runs may take it: they use
    /// compiled code and the code is closed.
    fn fast_closed(&mut self) -> Option<FastClosed> {
        let Closed::Yes(run) = &mut self.closed else {
            return None;
        };
        // (Code that wants a zeroed stack takes the other path, unless
        // its program never names r10 and so leaves the stack as it was.)
        (self.use_compiled && !(run.entry.zeroed_stack && run.touches_stack)).then(|| FastClosed {
            code: run.entry.code,
            head: run.ctx.as_mut_ptr().cast::<ClosedHead>(),
            budget: run.budget,
            checked: run.entry.checked,
        })
    }

    /// Sets what the hook knows about the events of the following runs
    /// (attach cookie, function address, registers; see [`HookInfo`]).
    pub fn set_hook_info(&mut self, hook: HookInfo) {
        // The run state keeps it: runs do not copy it.
        self.state.env.hook = hook;
    }

    /// What the hook knows about the events, as last set.
    pub fn hook_info(&self) -> &HookInfo {
        &self.state.env.hook
    }

    /// What the last run asked of its hook besides `r0`
    /// (`bpf_override_return`).
    pub fn last_outcome(&self) -> RunOutcome {
        self.outcome
    }

    /// Instructions executed by the last run.
    pub fn last_insn_count(&self) -> u64 {
        match self.closed_counts() {
            Some((count, _)) => count,
            None => self.last_insn_count,
        }
    }

    /// The instruction count and the frames used of the last run, if it
    /// was closed and they are still in its head.
    #[inline(always)]
    fn closed_counts(&self) -> Option<(u64, usize)> {
        if !self.closed_pending {
            return None;
        }
        let Closed::Yes(run) = &self.closed else {
            return None;
        };
        let head = run.ctx.as_ptr().cast::<ClosedHead>();
        // SAFETY: the context's head, which the last run's code wrote.
        let (left, max_depth) = unsafe { ((*head).budget, (*head).max_depth) };
        let frames = if run.touches_stack {
            (max_depth as usize).saturating_add(1)
        } else {
            0
        };
        Some((run.budget.wrapping_sub(left), frames))
    }

    /// Takes the last closed run's counts out of its head (before
    /// anything else uses its head or the counts).
    #[inline(always)]
    fn settle_closed(&mut self) {
        if let Some((count, frames)) = self.closed_counts() {
            self.last_insn_count = count;
            self.dirty_frames = frames;
        }
        self.closed_pending = false;
    }

    /// Runs the program with `r1` = `mem`, `r2` = its length (`r1` = 0 when
    /// empty), the convention of the conformance suite. `mem` is writable
    /// context memory and the packet for legacy packet loads.
    ///
    /// (Always inlined: the closed path is a handful of instructions
    /// around the call into native code, and as a function of its own it
    /// costs ~3 ns more per run, its saved registers and frame.)
    #[inline(always)]
    pub fn run(&mut self, mem: &mut [u8]) -> Result<u64, Fault> {
        // Closed code on an empty context or one of at least 8 bytes (and
        // for checked code, no other region): a call with nothing set up
        // but the head.
        let len = mem.len() as u64;
        if let Some(f) = self.fast.filter(|_| len == 0 || len >= 8) {
            if !f.checked || self.mem.regions().is_empty() {
                let start = if len == 0 { 0 } else { mem.as_mut_ptr() as u64 };
                // (Kept for a run that does not exit, so that only `self`
                // lives across the call.)
                self.fast_context = (start, len);
                // (The counts stay in the head: see `closed_pending`.)
                self.closed_pending = true;
                self.outcome = RunOutcome::default();
                // SAFETY: as in `try_closed`: `head` is this VM's context
                // for the entry, set up by its `init` for this VM's stack;
                // the code slot lives while the program keeps its code,
                // which this VM's `prog` does; `mem` stays valid during the
                // call (the caller's borrow).
                let ret = unsafe {
                    let head = f.head;
                    (*head).budget = f.budget;
                    (*head).max_depth = 0;
                    (*head).regs[5] = 0;
                    if f.checked {
                        let context =
                            (len != 0).then(|| Region::from_mut_slice(mem, RegionKind::Context));
                        (*head).seed = ClosedHead::seed_for(context.as_ref(), self.stack_top());
                    }
                    // (Written out rather than shared with `try_closed`:
                    // a shared function with an optional seed costs this
                    // path 2-5 instructions a run.)
                    ClosedEntry::code_in(f.code)(head, 0, start, len, 0, 0)
                };
                if ret.status == 0 {
                    return Ok(ret.r0);
                }
                return self.fast_stopped(ret);
            }
        }
        self.run_other(mem)
    }

    /// The end of a fast closed run that did not exit
    /// ([`Vm::closed_stopped`] with the run's context).
    #[cold]
    #[inline(never)]
    fn fast_stopped(&mut self, ret: ClosedReturn) -> Result<u64, Fault> {
        let (start, len) = self.fast_context;
        let context = (len != 0)
            .then(|| Region::new(start as *const u8, len as usize, true, RegionKind::Context));
        self.closed_stopped(ret, context).map_err(|f| *f)
    }

    /// [`Vm::run`] off its fast path: the first run, contexts of 1 to 7
    /// bytes, checked code with other regions, code that wants a zeroed
    /// stack, the interpreter.
    #[inline(never)]
    fn run_other(&mut self, mem: &mut [u8]) -> Result<u64, Fault> {
        let context = (!mem.is_empty()).then(|| Region::from_mut_slice(mem, RegionKind::Context));
        let args = match &context {
            Some(r) => [r.start, r.len, 0, 0, 0],
            None => [0; 5],
        };
        // (Matched arm by arm: moving a whole `Result<u64, Fault>` would
        // copy the fault's bytes on every run.)
        match self.try_closed(&args, context.as_ref()) {
            Some(Ok(r0)) => return Ok(r0),
            Some(Err(f)) => return Err(*f),
            None => {}
        }
        self.run_general(args, context)
    }

    /// [`Vm::run`] with a run's full state (apart, so that the closed path
    /// stays a small function).
    #[inline(never)]
    fn run_general(&mut self, args: [u64; 5], context: Option<Region>) -> Result<u64, Fault> {
        match context {
            Some(r) => {
                self.mem.add_transient(r);
                self.execute(args, Some(PacketWindow::new(r.start, r.len)))
            }
            None => self.execute(args, None),
        }
    }

    /// Runs the program with `r1..r5` = `args`. Pointers among them are only
    /// usable if they fall in regions added with [`Vm::add_region`].
    #[inline(always)]
    pub fn run_with_args(&mut self, args: [u64; 5]) -> Result<u64, Fault> {
        match self.try_closed(&args, None) {
            Some(Ok(r0)) => return Ok(r0),
            Some(Err(f)) => return Err(*f),
            None => {}
        }
        self.execute(args, None)
    }

    /// Runs the program with `r1..r5` = `args`, `regions` accessible for
    /// this run only, and `packet` for legacy packet loads.
    ///
    /// # Safety
    /// Every region must stay valid (and writable, if marked so) until this
    /// call returns.
    pub unsafe fn run_with_regions(
        &mut self,
        args: [u64; 5],
        regions: &[Region],
        packet: Option<PacketWindow>,
    ) -> Result<u64, Fault> {
        for r in regions {
            self.mem.add_transient(*r);
        }
        self.execute(args, packet)
    }

    /// Runs the subprogram of this VM's program whose address a
    /// `lddw src=4` loads (`callback`, as helpers receive it) with `r1..r5`
    /// = `args`: how timer callbacks run. Pointers among the arguments are
    /// only usable if they fall in regions added with [`Vm::add_region`].
    pub fn run_subprogram(&mut self, callback: u64, args: [u64; 5]) -> Result<u64, Fault> {
        let Some(pc) = self.prog.callback_target(callback) else {
            return Err(Fault {
                program: Arc::clone(&self.prog.name),
                pc: 0,
                insn: Insn::default(),
                addr: 0,
                len: 0,
                kind: FaultKind::BadCallTarget { value: callback },
            });
        };
        self.execute_at(args, None, pc).map_err(|f| *f)
    }

    #[inline(always)]
    fn execute(&mut self, args: [u64; 5], packet: Option<PacketWindow>) -> Result<u64, Fault> {
        self.execute_at(args, packet, 0).map_err(|f| *f)
    }

    /// Runs closed native code ([`CompiledProgram::closed_entry`]) from pc
    /// 0 when the run allows it (no region but `context`, which has at
    /// least 8 bytes, unless the code is verified): a call straight into the code on the context this
    /// VM keeps for it; none of a run's state is set up, as the code uses
    /// none of it. `None`: the run takes the general path (nothing ran).
    #[inline(always)]
    fn try_closed(
        &mut self,
        args: &[u64; 5],
        context: Option<&Region>,
    ) -> Option<Result<u64, Box<Fault>>> {
        if !self.use_compiled || context.is_some_and(|r| r.len < 8) {
            return None;
        }
        if matches!(self.closed, Closed::Unknown) {
            self.closed_setup();
        }
        let Closed::Yes(run) = &mut self.closed else {
            return None;
        };
        // Checked closed code knows no region but its context (and the
        // stack): others need the general path. Verified code checks
        // nothing, so the VM's regions (maps' memory) do not matter.
        if run.entry.checked && !self.mem.regions().is_empty() {
            return None;
        }
        let (entry, budget) = (run.entry, run.budget);
        let head = run.ctx.as_mut_ptr().cast::<ClosedHead>();
        if entry.zeroed_stack {
            self.settle_closed();
            zero_dirty_stack(&mut self.stack[..], self.dirty_frames);
        }
        // (The counts stay in the head: see `closed_pending`.)
        self.closed_pending = true;
        self.outcome = RunOutcome::default();
        // SAFETY: `ctx` is this VM's context for the entry: `ctx_words`
        // words, at least a head, set up by the entry's `init` for this
        // VM's stack; the code is attached to `self.prog`, which this VM
        // keeps alive; the context region (if any) stays valid during the
        // call (the caller's borrow).
        let ret = unsafe {
            (*head).budget = budget;
            (*head).max_depth = 0;
            (*head).regs[5] = args[4];
            if entry.checked {
                (*head).seed = ClosedHead::seed_for(context, self.stack_top());
            }
            (entry.current())(head, 0, args[0], args[1], args[2], args[3])
        };
        if ret.status == 0 {
            return Some(Ok(ret.r0));
        }
        Some(self.closed_stopped(ret, context.copied()))
    }

    /// The end of a closed run that did not exit: a stop for the
    /// interpreter, or a fault.
    #[cold]
    #[inline(never)]
    fn closed_stopped(
        &mut self,
        ret: ClosedReturn,
        context: Option<Region>,
    ) -> Result<u64, Box<Fault>> {
        self.settle_closed();
        // (Only a closed run gets here; its code and context are the VM's.)
        let Closed::Yes(run) = &mut self.closed else {
            let top = self.stack_top();
            return Err(Box::new(self.closed_fault(
                top,
                context,
                EngineFault::InvalidPc { pc: 0 },
            )));
        };
        let (fault, head, budget) = (
            run.entry.fault,
            run.ctx.as_mut_ptr().cast::<ClosedHead>(),
            run.budget,
        );
        if ret.status == ClosedEntry::RESUME {
            // SAFETY: as above; the code stored the live registers and the
            // budget before returning this status. The head's registers go
            // back to what every run starts from (r0 and r6..r9 zero, r10
            // the stack top): nothing of this run reaches the next.
            let (regs, left) = unsafe {
                let taken = ((*head).regs, (*head).budget);
                let top = self.stack_top();
                (*head).regs = [0; 11];
                (*head).regs[10] = top;
                taken
            };
            return self.closed_resume(ret.r0 as usize, regs, budget, left, context);
        }
        // SAFETY: a non-zero status: the code left its fault in `ctx`.
        let f = unsafe { fault(head, ret.status) };
        let top = self.stack_top();
        Err(Box::new(self.closed_fault(top, context, f)))
    }

    /// One past the top of this VM's stack.
    #[inline(always)]
    fn stack_top(&self) -> u64 {
        (self.stack.as_ptr() as u64).wrapping_add(TOTAL_STACK as u64)
    }

    /// Looks up the program's closed code and sets up its context (once
    /// native code is attached: it never changes after).
    #[cold]
    #[inline(never)]
    fn closed_setup(&mut self) {
        if self.prog.compiled().is_none() {
            return;
        }
        // (Asked first: once it says no, `closed_entry` is final.)
        let may_come = self.prog.compiled().is_some_and(|c| c.closed_may_come());
        let Some(entry) = self.prog.closed_entry() else {
            if !may_come {
                self.closed = Closed::No;
            }
            return;
        };
        let mut ctx = vec![0u64; entry.ctx_words.max(std::mem::size_of::<ClosedHead>() / 8)]
            .into_boxed_slice();
        let top = self.stack_top();
        // SAFETY: a zeroed context of `ctx_words` words, as `init` wants.
        unsafe { (entry.init)(ctx.as_mut_ptr().cast(), top) };
        // (Moving the box does not move its words.)
        self.closed = Closed::Yes(ClosedRun {
            entry,
            ctx,
            budget: self.prog.config.budget.unwrap_or(u64::MAX),
            touches_stack: self.prog.touches_stack,
        });
        self.fast = self.fast_closed();
    }

    /// The rest of a closed run that stopped before `pc` for the
    /// interpreter ([`ClosedEntry::RESUME`]): the run's state set up as the
    /// general path sets it (the context a transient region, and the
    /// packet), the registers and the budget as the code left them.
    #[cold]
    #[inline(never)]
    fn closed_resume(
        &mut self,
        pc: usize,
        regs: [u64; 11],
        start_budget: u64,
        left: u64,
        context: Option<Region>,
    ) -> Result<u64, Box<Fault>> {
        let top = self.stack_top();
        self.mem.stack_hi = top;
        self.mem.stack_lo = top.wrapping_sub(STACK_SIZE as u64);
        if let Some(r) = context {
            self.mem.add_transient(r);
        }
        let st = &mut *self.state;
        st.begin_run(left, context.map(|r| PacketWindow::new(r.start, r.len)));
        st.regs = [0; 16];
        st.regs[..11].copy_from_slice(&regs);
        let result = self.run_loop(Vec::new(), 0, pc, true);
        self.finish_run(start_budget, result)
    }

    /// The fault for `f` in a closed run (classified against the run's
    /// regions, as the interpreter would).
    #[cold]
    #[inline(never)]
    fn closed_fault(&mut self, top: u64, context: Option<Region>, f: EngineFault) -> Fault {
        self.mem.stack_hi = top;
        self.mem.stack_lo = top.wrapping_sub(STACK_SIZE as u64);
        if let Some(r) = context {
            self.mem.add_transient(r);
        }
        let fault = engine::engine_fault(&self.prog, &mut self.mem, f);
        self.mem.end_run();
        fault
    }

    // Inlined into each entry point: the arguments and the packet then
    // stay in registers (passed by reference, they were copied with wide
    // loads that stall on the caller's narrow stores).
    #[inline(always)]
    fn execute_at(
        &mut self,
        args: [u64; 5],
        packet: Option<PacketWindow>,
        entry: usize,
    ) -> Result<u64, Box<Fault>> {
        // (The fault is boxed so the hot result comes back in registers.)
        self.settle_closed();
        let compiled = if self.use_compiled {
            self.prog.compiled()
        } else {
            None
        };
        // Zero the frames the previous run used: no data crosses runs.
        // Verified native code needs no zeroing: the verifier proved that
        // the program never reads stack it did not write.
        if compiled.is_none_or(|c| c.needs_zeroed_stack()) {
            zero_dirty_stack(&mut self.stack[..], self.dirty_frames);
        }
        let top = (self.stack.as_ptr() as u64).wrapping_add(TOTAL_STACK as u64);
        self.mem.stack_hi = top;
        self.mem.stack_lo = top.wrapping_sub(STACK_SIZE as u64);

        let start_budget = self.prog.config.budget.unwrap_or(u64::MAX);
        let st = &mut *self.state;
        st.begin_run(start_budget, packet);

        // Native code for the program takes the arguments directly (the
        // common case: no tail call); the loop below handles the rest.
        let result = match compiled {
            Some(code) => {
                let mut run = EngineRun {
                    prog: &self.prog,
                    st: &mut *st,
                    mem: &mut self.mem,
                    program_array: self.program_array.as_deref(),
                };
                match code.start(&mut run, &args, entry) {
                    Ok(EngineStop::Exit(r0)) => Ok(r0),
                    Ok(EngineStop::TailCall(next)) => self.run_loop(vec![next], 1, 0, false),
                    Ok(EngineStop::Resume(pc)) => self.run_loop(Vec::new(), 0, pc, true),
                    Err(f) => Err(f),
                }
            }
            None => {
                st.regs = [0; 16];
                st.regs[1..6].copy_from_slice(&args);
                st.regs[10] = top;
                self.run_loop(Vec::new(), 0, entry, false)
            }
        };
        self.finish_run(start_budget, result)
    }

    /// Runs programs from `pc` of `cur` (0: this VM's program, `i`: the
    /// `i`th of `extra`) until one exits: interpreted, or native code
    /// from the outermost frame, following tail calls.
    fn run_loop(
        &mut self,
        mut extra: Vec<Arc<PreparedProgram>>,
        mut cur: usize,
        mut pc: usize,
        mut interpret: bool,
    ) -> Result<u64, Box<Fault>> {
        let st = &mut *self.state;
        loop {
            let prog: &Arc<PreparedProgram> = match cur.checked_sub(1) {
                None => &self.prog,
                Some(i) => match extra.get(i) {
                    Some(p) => p,
                    None => &self.prog,
                },
            };
            // Native code runs whole programs from the outermost frame (a
            // tail call from a subprogram continues in the interpreter).
            let use_compiled = self.use_compiled;
            // (`interpret`: compiled code stopped at `pc` for the
            // interpreter to go on.)
            let compiled = prog
                .compiled()
                .filter(|_| st.depth == 0 && use_compiled && !interpret);
            interpret = false;
            let stop = match compiled {
                Some(code) => {
                    let mut run = EngineRun {
                        prog,
                        st: &mut *st,
                        mem: &mut self.mem,
                        program_array: self.program_array.as_deref(),
                    };
                    match code.run(&mut run, pc) {
                        Ok(EngineStop::Exit(r0)) => Ok(Stop::Exit(r0)),
                        Ok(EngineStop::TailCall(t)) => Ok(Stop::TailCall(t)),
                        Ok(EngineStop::Resume(at)) => {
                            interpret = true;
                            Ok(Stop::Switch { prog: cur, pc: at })
                        }
                        Err(f) => Err(*f),
                    }
                }
                None => run_ops(
                    prog,
                    cur,
                    pc,
                    &mut *st,
                    &mut self.mem,
                    self.program_array.as_deref(),
                ),
            };
            match stop {
                Ok(Stop::Exit(r0)) => return Ok(r0),
                Ok(Stop::Switch { prog, pc: next }) => {
                    cur = prog;
                    pc = next;
                }
                Ok(Stop::TailCall(next)) => {
                    extra.push(next);
                    cur = extra.len();
                    pc = 0;
                }
                Err(f) => return Err(Box::new(f)),
            }
        }
    }

    /// The end of every run: per-CPU leases back, what the next run must
    /// zero, the counts and outcome the accessors report.
    fn finish_run(
        &mut self,
        start_budget: u64,
        result: Result<u64, Box<Fault>>,
    ) -> Result<u64, Box<Fault>> {
        crate::maps::percpu::release_leases();
        let st = &mut *self.state;
        // A run of a program that never names r10, without tail calls,
        // wrote no stack.
        self.dirty_frames = if self.prog.touches_stack || st.tail_calls > 0 {
            st.max_depth.saturating_add(1)
        } else {
            0
        };
        self.last_insn_count = start_budget.wrapping_sub(st.budget);
        self.mem.end_run();
        self.outcome = st.env.outcome;
        result
    }
}

/// Zeroes the top `dirty_frames` frames of `stack` (those the previous run
/// may have written).
#[inline(always)]
fn zero_dirty_stack(stack: &mut [u64], dirty_frames: usize) {
    if dirty_frames > 0 {
        let dirty_words = dirty_frames
            .min(MAX_CALL_FRAMES)
            .saturating_mul(STACK_SIZE / 8);
        let total_words = stack.len();
        stack[total_words.saturating_sub(dirty_words)..].fill(0);
    }
}
