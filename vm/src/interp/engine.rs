//! The seam between [`Vm`](super::Vm) and compiled engines (the JIT): a
//! [`PreparedProgram`] may carry native code ([`CompiledProgram`]), which
//! the VM runs in place of the interpreter with the same run state
//! (stack, memory regions, hook facts, budget, tail calls). Engines see the
//! program through [`PreparedProgram::op_class`] and friends, and reach
//! helpers, maps and checks through [`EngineRun`], so every engine shares
//! the interpreter's semantics and its [`Fault`]s.

use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::exec::{self, Called, State};
use super::lower::{PreparedProgram, K};
use super::{Fault, FaultKind, ProgramArray, MAX_TAIL_CALLS};
use crate::memory::{Access, AccessError, MemoryMap};

static COMPILE_HOOK: std::sync::OnceLock<fn(&Arc<PreparedProgram>)> = std::sync::OnceLock::new();

/// Makes every program a [`Vm`](super::Vm) is made for in this process go
/// through `hook` first (which attaches native code with
/// [`PreparedProgram::set_compiled`]): how a runtime that compiles
/// everything, or a test suite run on another engine, plugs an engine in
/// without touching each call site. Set once; `false` if already set.
pub fn set_compile_hook(hook: fn(&Arc<PreparedProgram>)) -> bool {
    COMPILE_HOOK.set(hook).is_ok()
}

/// Runs the compile hook on `prog` if one is set and it has no code yet.
pub(crate) fn apply_compile_hook(prog: &Arc<PreparedProgram>) {
    if let Some(hook) = COMPILE_HOOK.get() {
        if prog.compiled().is_none() {
            hook(prog);
        }
    }
}

/// Native code for a [`PreparedProgram`].
pub trait CompiledProgram: Send + Sync + fmt::Debug {
    /// Runs the program from `entry` (0, or a subprogram's pc) with `r1..r5`
    /// and `r10` from [`EngineRun::regs`]; `r0` is the result. (A fault is
    /// boxed: runs are hot, faults are not, and a small result comes back
    /// in registers.)
    fn run(&self, run: &mut EngineRun<'_>, entry: usize) -> Result<EngineStop, Box<Fault>>;

    /// Starts a run at `entry` with `r1..r5` = `args`, `r10` = the stack
    /// top and the other registers zero. [`EngineRun::regs`] is not set:
    /// an engine that reads its registers from there (the default) sets
    /// them first; one that takes `args` directly skips that copy.
    fn start(
        &self,
        run: &mut EngineRun<'_>,
        args: &[u64; 5],
        entry: usize,
    ) -> Result<EngineStop, Box<Fault>> {
        let top = run.stack_top();
        let regs = run.regs();
        *regs = [0; 16];
        regs[1..6].copy_from_slice(args);
        regs[10] = top;
        self.run(run, entry)
    }

    /// Whether the stack must be zeroed before each run (always, unless
    /// the verifier proved the program never reads stack it did not
    /// write).
    fn needs_zeroed_stack(&self) -> bool {
        true
    }

    /// The entry of *closed* code, if the code is closed: it needs nothing
    /// from the VM but the arguments, the stack and one region (no helpers,
    /// maps, tail calls or packet loads). The VM then runs it without
    /// setting up a run's state, through the entry it keeps.
    fn closed_entry(&self) -> Option<ClosedEntry> {
        None
    }

    /// The program's code as a *leaf* ([`LeafCode`]), if it is one. May
    /// wait for a background compile to end (the leaf must be the code's
    /// final form).
    fn leaf_code(&self) -> Option<LeafCode> {
        None
    }

    /// Whether [`CompiledProgram::closed_entry`] may still change from
    /// `None` (better code that is closed is being compiled): a VM then
    /// asks again on later runs instead of settling on its general path.
    fn closed_may_come(&self) -> bool {
        false
    }
}

/// How the VM runs closed code ([`CompiledProgram::closed_entry`]): the
/// machine code itself, called straight from the VM with the arguments in
/// registers, on a context the VM keeps (allocated and set up once).
#[derive(Clone, Copy, Debug)]
pub struct ClosedEntry {
    /// The code: `(context, 0, r1, r2, r3, r4) -> (r0, status)`; status 0
    /// is an exit, [`ClosedEntry::RESUME`] a stop before the instruction
    /// at pc `r0` (see [`EngineStop::Resume`]; the registers in the head's
    /// `regs`, the budget left in its `budget`), anything else a fault
    /// ([`ClosedEntry::fault`]). Before
    /// a call the VM sets the head's budget, `max_depth` (0), `regs[5]`
    /// (`r5`) and, for checked code, `seed`.
    ///
    /// The address of that function is read from `code` at each run: a
    /// tiered engine puts better code there when it has it. The slot lives
    /// as long as the code is attached to its program.
    pub code: *const AtomicUsize,
    /// Size of the context in words (the head first).
    pub ctx_words: usize,
    /// Sets up a zeroed context of `ctx_words` words for runs whose stack
    /// top is the second argument.
    pub init: unsafe fn(*mut ClosedHead, u64),
    /// The fault of a run that returned a non-zero `status` (read from the
    /// context).
    pub fault: unsafe fn(*const ClosedHead, u64) -> EngineFault,
    /// Whether runs must start on a zeroed stack.
    pub zeroed_stack: bool,
    /// Whether the code checks accesses (and reads `seed`).
    pub checked: bool,
}

/// The start of the context closed code runs on: what the VM writes before
/// a closed run and reads after it (the engine's own fields follow).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ClosedHead {
    /// In: the instruction budget; out: what is left.
    pub budget: u64,
    /// Out: the deepest frame the run used below the first.
    pub max_depth: u64,
    /// In (checked code): the regions the inline checks start with, for
    /// reads and writes: start and limit (length - 7) of each; the first
    /// frame, or the context's region when it has at least 8 bytes.
    pub seed: [u64; 4],
    /// The registers not passed as arguments: `r5` (set per run), `r0`
    /// and `r6..r9` (zero), `r10` (the stack top, set by `init`).
    pub regs: [u64; 11],
}

// SAFETY: `code` points at an `AtomicUsize` (itself `Send` and `Sync`)
// that lives as long as the program's code, which whoever holds the entry
// keeps attached.
unsafe impl Send for ClosedEntry {}
// SAFETY: as above.
unsafe impl Sync for ClosedEntry {}

/// Closed native code that is a *leaf*: it calls no function, uses no
/// register but the general ones (a caller may check that in `code`),
/// and reads nothing of its context but [`ClosedHead::regs`]. So it runs
/// on a context that is only a head, set up by whoever calls it (`regs`:
/// `r0` and `r5`-`r9` zero, `r10` the top of 512 bytes of stack,
/// `MAX_BPF_STACK`), and always returns status 0. Verified code only:
/// nothing in it can fault.
#[derive(Clone, Copy, Debug)]
pub struct LeafCode {
    /// The code: `extern "C" fn(head, 0, r1, r2, r3, r4) -> (r0, status)`
    /// ([`ClosedCode`]). It lives as long as the program keeps its code.
    pub entry: usize,
    /// Bytes of machine code from `entry`.
    pub len: usize,
}

/// Bytes of stack a [`LeafCode`] run needs below its `r10`.
pub const LEAF_STACK: usize = 512;

/// The function [`ClosedEntry::code`] holds the address of.
pub type ClosedCode =
    unsafe extern "C" fn(*mut ClosedHead, u64, u64, u64, u64, u64) -> ClosedReturn;

impl ClosedEntry {
    /// The status of a closed run that stopped for the interpreter to
    /// continue ([`EngineStop::Resume`]).
    pub const RESUME: u64 = 7;

    /// The code to call now.
    ///
    /// # Safety
    /// The entry's program still has its code attached.
    #[inline(always)]
    pub unsafe fn current(&self) -> ClosedCode {
        // SAFETY: per the contract, the entry's slot is live.
        unsafe { Self::code_in(self.code) }
    }

    /// The code a slot like [`ClosedEntry::code`] holds now.
    ///
    /// # Safety
    /// `slot` is a live code slot of attached code.
    #[inline(always)]
    pub unsafe fn code_in(slot: *const AtomicUsize) -> ClosedCode {
        // SAFETY: per the contract, `slot` only ever holds the address of a
        // `ClosedCode`.
        unsafe {
            let p = (*slot).load(std::sync::atomic::Ordering::Acquire);
            std::mem::transmute::<usize, ClosedCode>(p)
        }
    }
}

impl ClosedHead {
    /// The checks' first regions ([`ClosedHead::seed`]) for a run whose
    /// context is `context` (the first frame below `stack_top` when it has
    /// fewer than 8 bytes, and for writes when it is read-only).
    #[inline]
    pub fn seed_for(context: Option<&crate::memory::Region>, stack_top: u64) -> [u64; 4] {
        let size = super::STACK_SIZE as u64;
        let frame = [stack_top.wrapping_sub(size), size.wrapping_sub(7)];
        let region = context.filter(|r| r.len >= 8);
        let read = region.map_or(frame, |r| [r.start, r.len.wrapping_sub(7)]);
        let write = region
            .filter(|r| r.writable)
            .map_or(frame, |r| [r.start, r.len.wrapping_sub(7)]);
        [read[0], read[1], write[0], write[1]]
    }
}

/// What closed code returns (in two registers).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ClosedReturn {
    /// `r0` at the exit (first: in rax, as a C function's result).
    pub r0: u64,
    /// 0: the program exited; otherwise see [`ClosedEntry::fault`].
    pub status: u64,
}

/// A fault as compiled code reports it: what happened at which pc. The VM
/// turns it into the [`Fault`] the interpreter reports for the same run
/// ([`EngineRun::engine_fault`]), so compiled code needs no call-out to
/// fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineFault {
    /// An access the inline checks refused: `[addr, addr + len)` for
    /// `access` at `pc`, `fp` being the frame's `r10`.
    Access {
        /// pc.
        pc: usize,
        /// `r10` of the frame.
        fp: u64,
        /// First byte.
        addr: u64,
        /// Length.
        len: u64,
        /// Read or write.
        access: Access,
    },
    /// The budget ran out in the block starting at `pc`, whose first
    /// `done` instructions ran.
    Budget {
        /// First pc of the block.
        pc: usize,
        /// Instructions of the block that ran.
        done: u64,
    },
    /// A misaligned atomic access.
    Misaligned {
        /// pc.
        pc: usize,
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// A call beyond [`super::MAX_CALL_FRAMES`].
    CallDepth {
        /// pc of the call.
        pc: usize,
    },
    /// `callx` (or a callback) to `value`, which is no subprogram.
    BadCallTarget {
        /// pc.
        pc: usize,
        /// The target value.
        value: u64,
    },
    /// Execution reached `pc`, which holds no instruction.
    InvalidPc {
        /// pc.
        pc: usize,
    },
    /// A poisoned CO-RE relocation ran.
    PoisonedCoreRelocation {
        /// pc.
        pc: usize,
    },
}

/// The [`Fault`] for `f` in a run of `prog` over `mem`.
pub(super) fn engine_fault(prog: &PreparedProgram, mem: &mut MemoryMap, f: EngineFault) -> Fault {
    let fault =
        |pc: usize, addr: u64, len: u64, kind: FaultKind| exec::fault(prog, pc, addr, len, kind);
    match f {
        EngineFault::Access {
            pc,
            fp,
            addr,
            len,
            access,
        } => {
            mem.stack_lo = fp.wrapping_sub(super::STACK_SIZE as u64);
            let kind = match mem.check(addr, len, access) {
                Err(AccessError::ReadOnly(region)) => FaultKind::ReadOnly { region },
                // (`Ok` would be an engine refusing an allowed access: it
                // is reported as out of bounds rather than not at all.)
                Err(AccessError::Unmapped) | Ok(_) => FaultKind::OutOfBounds { access },
            };
            fault(pc, addr, len, kind)
        }
        EngineFault::Budget { pc, done } => {
            // The pc the interpreter stops at: `done` instructions in (an
            // `lddw` takes two slots).
            let mut at = pc;
            for _ in 0..done {
                at = at.saturating_add(match prog.op_class(at) {
                    Some(OpClass::LoadImm(_)) => 2,
                    _ => 1,
                });
            }
            let limit = prog.config.budget.unwrap_or(u64::MAX);
            fault(at, 0, 0, FaultKind::BudgetExhausted { limit })
        }
        EngineFault::Misaligned { pc, addr, len } => fault(pc, addr, len, FaultKind::Misaligned),
        EngineFault::CallDepth { pc } => fault(
            pc,
            0,
            0,
            FaultKind::CallDepthExceeded {
                limit: super::MAX_CALL_FRAMES,
            },
        ),
        EngineFault::BadCallTarget { pc, value } => {
            fault(pc, 0, 0, FaultKind::BadCallTarget { value })
        }
        EngineFault::InvalidPc { pc } => fault(pc, 0, 0, FaultKind::InvalidPc),
        EngineFault::PoisonedCoreRelocation { pc } => {
            fault(pc, 0, 0, FaultKind::PoisonedCoreRelocation)
        }
    }
}

/// How a compiled run ended.
#[derive(Debug)]
pub enum EngineStop {
    /// `exit` at the outermost frame with this `r0`.
    Exit(u64),
    /// `bpf_tail_call` to this program (registers in [`EngineRun::regs`]).
    TailCall(Arc<PreparedProgram>),
    /// The engine stopped before the instruction at this pc of the
    /// program's outermost frame (registers in [`EngineRun::regs`], the
    /// budget left in [`EngineRun::budget`]); the interpreter runs the rest.
    /// Compiled code that tests the budget only at loop heads stops so
    /// when the budget may run out before its next test: the interpreter
    /// then faults at the instruction where it does, as the whole run in
    /// the interpreter would.
    Resume(usize),
}

/// What an instruction is, for an engine that compiles the program: the
/// interpreter's lowering (helpers bound, `lddw` values resolved) exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    /// Not a call: translate the decoded instruction.
    Plain,
    /// The second slot of an `lddw`.
    Hole,
    /// An `lddw` with its resolved 64-bit value.
    LoadImm(u64),
    /// A helper call: index for [`EngineRun::call_helper`].
    Helper(usize),
    /// `bpf_map_lookup_elem` through the maps' direct path
    /// ([`EngineRun::map_lookup`]); the index is the helper's.
    MapLookup(usize),
    /// `bpf_tail_call`.
    TailCall,
    /// `bpf_loop`: the callback runs as a subprogram frame.
    Loop,
    /// A bpf-to-bpf call to this pc.
    Local(usize),
    /// `callx`.
    CallX,
    /// `call 0xbad2310`: a failed CO-RE relocation; faults when run.
    CorePoison,
}

impl PreparedProgram {
    /// Number of instruction slots.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the program has no instructions (never: programs are
    /// validated non-empty).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// How the instruction at `pc` was lowered.
    pub fn op_class(&self, pc: usize) -> Option<OpClass> {
        let op = self.ops.get(pc)?;
        Some(match op.kind {
            K::Hole => OpClass::Hole,
            K::LoadImm => OpClass::LoadImm(op.imm),
            K::Call => OpClass::Helper(op.imm as usize),
            K::MapLookup => OpClass::MapLookup(op.imm as usize),
            K::TailCall => OpClass::TailCall,
            K::Loop => OpClass::Loop,
            K::CallLocal => OpClass::Local(op.aux as usize),
            K::CallX => OpClass::CallX,
            K::CorePoison => OpClass::CorePoison,
            _ => OpClass::Plain,
        })
    }

    /// Whether a `callx` value or callback address names a subprogram of
    /// this program: its pc.
    pub fn callback_target(&self, value: u64) -> Option<usize> {
        if value & super::FUNC_ADDR_MASK != super::FUNC_ADDR_TAG {
            return None;
        }
        let pc = (value & !super::FUNC_ADDR_MASK) as usize;
        self.entries.get(pc).copied().unwrap_or(false).then_some(pc)
    }

    /// Attaches native code; the VM runs it from then on. Fails (returning
    /// the code) if the program already has some.
    pub fn set_compiled(
        &self,
        code: Arc<dyn CompiledProgram>,
    ) -> Result<(), Arc<dyn CompiledProgram>> {
        let zero = code.needs_zeroed_stack();
        self.compiled.set((code, zero)).map_err(|(c, _)| c)
    }

    /// The attached native code, if any.
    #[inline]
    pub fn compiled(&self) -> Option<&Arc<dyn CompiledProgram>> {
        self.compiled.get().map(|(c, _)| c)
    }

    /// Whether runs must start on a zeroed stack: yes, unless the program
    /// has native code from a verified program.
    #[inline]
    pub fn needs_zeroed_stack(&self) -> bool {
        self.compiled.get().is_none_or(|&(_, zero)| zero)
    }

    /// The entry of the attached native code, if it is closed
    /// ([`CompiledProgram::closed_entry`]).
    pub fn closed_entry(&self) -> Option<ClosedEntry> {
        self.compiled.get().and_then(|(c, _)| c.closed_entry())
    }

    /// The attached native code as a leaf, if it is one
    /// ([`CompiledProgram::leaf_code`]; may wait for a background
    /// compile).
    pub fn leaf_code(&self) -> Option<LeafCode> {
        self.compiled.get().and_then(|(c, _)| c.leaf_code())
    }
}

/// What a helper call asks of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelperReturn {
    /// Go on with `r0`.
    Value(u64),
    /// End the run with `r0` (the conformance suite's `unwind`).
    Exit(u64),
    /// The helper calls back into the program (`bpf_for_each_map_elem`):
    /// call the subprogram at `target` with `args` as a new frame; when it
    /// exits, ask [`EngineRun::drive`] what next.
    Callback {
        /// pc of the callback.
        target: usize,
        /// `r1..r5`.
        args: [u64; 5],
    },
}

/// What follows a callback's exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveStep {
    /// Call the callback again with these arguments.
    Call([u64; 5]),
    /// The helper is done and returns this `r0`.
    Done(u64),
}

/// One run's state, for a compiled engine.
pub struct EngineRun<'a> {
    pub(super) prog: &'a Arc<PreparedProgram>,
    pub(super) st: &'a mut State,
    pub(super) mem: &'a mut MemoryMap,
    pub(super) program_array: Option<&'a dyn ProgramArray>,
}

impl fmt::Debug for EngineRun<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineRun").finish_non_exhaustive()
    }
}

impl<'a> EngineRun<'a> {
    /// The program being run.
    pub fn program(&self) -> &'a Arc<PreparedProgram> {
        self.prog
    }

    /// The registers: `r1..r5` and `r10` on entry; set `r0` (and leave the
    /// others as they are) on a tail call.
    pub fn regs(&mut self) -> &mut [u64; 16] {
        &mut self.st.regs
    }

    /// The remaining instruction budget (checked mode; `u64::MAX` without
    /// a limit).
    pub fn budget(&mut self) -> &mut u64 {
        &mut self.st.budget
    }

    /// One past the top of the stack (frame 0's `r10`).
    pub fn stack_top(&self) -> u64 {
        self.mem.stack_hi
    }

    /// Records that the run used `depth` frames below the first (for the
    /// stack zeroing between runs).
    #[inline]
    pub fn note_depth(&mut self, depth: usize) {
        self.st.max_depth = self.st.max_depth.max(depth);
    }

    /// The packet of legacy packet loads, if any.
    pub fn packet(&self) -> Option<super::PacketWindow> {
        self.st.packet
    }

    /// Checks `[addr, addr + len)` for `access` with the frame whose `r10`
    /// is `fp` as the lowest stack frame.
    pub fn check(&mut self, fp: u64, addr: u64, len: u64, access: Access) -> Result<(), FaultKind> {
        self.mem.stack_lo = fp.wrapping_sub(super::STACK_SIZE as u64);
        match self.mem.check(addr, len, access) {
            Ok(_) => Ok(()),
            Err(AccessError::Unmapped) => Err(FaultKind::OutOfBounds { access }),
            Err(AccessError::ReadOnly(region)) => Err(FaultKind::ReadOnly { region }),
        }
    }

    /// [`EngineRun::check`], also returning the region that allowed the
    /// access (`None` for the stack), which stays valid for the run: an
    /// engine may check later accesses against it inline.
    pub fn check_region(
        &mut self,
        fp: u64,
        addr: u64,
        len: u64,
        access: Access,
    ) -> Result<Option<crate::memory::Region>, FaultKind> {
        self.check(fp, addr, len, access)?;
        Ok(self.mem.region_for(addr, len, access))
    }

    /// The [`Fault`] the interpreter reports for `f` in this run of `prog`.
    pub fn engine_fault(&mut self, prog: &PreparedProgram, f: EngineFault) -> Fault {
        engine_fault(prog, self.mem, f)
    }

    /// The region (not the stack) that allows `[addr, addr + len)` for
    /// `access`, if any; it stays valid for the run (an engine may check
    /// accesses against it inline from the start).
    pub fn region_for(&self, addr: u64, len: u64, access: Access) -> Option<crate::memory::Region> {
        self.mem.region_for(addr, len, access)
    }

    /// Calls helper `index` of `prog` for the `call` at `pc` (`fp`: the
    /// caller's `r10`). Helpers that call back into the program
    /// (`bpf_for_each_map_elem`, ...) are refused with a fault.
    pub fn call_helper(
        &mut self,
        prog: &Arc<PreparedProgram>,
        pc: usize,
        index: usize,
        args: [u64; 5],
        fp: u64,
    ) -> Result<HelperReturn, Fault> {
        let Some(h) = prog.helper_table.get(index) else {
            return Err(self.fault(prog, pc, 0, 0, FaultKind::InvalidPc));
        };
        self.invoke(prog, pc, h, args, fp)
    }

    /// Calls `h` for the call at `pc` with `r1..r5` = `args` (`fp`: the
    /// caller's `r10`).
    fn invoke(
        &mut self,
        prog: &Arc<PreparedProgram>,
        pc: usize,
        h: &crate::helpers::Helper,
        args: [u64; 5],
        fp: u64,
    ) -> Result<HelperReturn, Fault> {
        self.mem.stack_lo = fp.wrapping_sub(super::STACK_SIZE as u64);
        let mut regs = [0u64; 16];
        regs[1..6].copy_from_slice(&args);
        match exec::call_helper(prog, pc, h, &mut regs, self.mem, &mut self.st.env)? {
            Called::Continue => Ok(HelperReturn::Value(regs[0])),
            Called::Exit(r0) => Ok(HelperReturn::Exit(r0)),
            Called::Callbacks(cb, driver) => {
                self.start_callbacks(prog, pc, h.id(), h.name(), cb, driver)
            }
        }
    }

    fn start_callbacks(
        &mut self,
        prog: &Arc<PreparedProgram>,
        pc: usize,
        helper: i32,
        name: &str,
        cb: u64,
        driver: Box<dyn crate::helpers::CallbackDriver>,
    ) -> Result<HelperReturn, Fault> {
        let Some(target) = prog.callback_target(cb) else {
            return Err(self.fault(prog, pc, 0, 0, FaultKind::BadCallTarget { value: cb }));
        };
        self.st.drivers.push(exec::Driven {
            driver,
            callback: target,
            helper,
            name: Arc::from(name),
        });
        match self.drive(prog, pc, None)? {
            DriveStep::Call(args) => Ok(HelperReturn::Callback { target, args }),
            DriveStep::Done(r0) => Ok(HelperReturn::Value(r0)),
        }
    }

    /// After a callback started by [`HelperReturn::Callback`] returned
    /// `last_r0` (`None` before the first call): call it again, or the
    /// helper's result. `pc` is the helper call's, for faults.
    pub fn drive(
        &mut self,
        prog: &Arc<PreparedProgram>,
        pc: usize,
        last_r0: Option<u64>,
    ) -> Result<DriveStep, Fault> {
        match exec::drive(prog, self.st, self.mem, last_r0) {
            Ok(Some(args)) => Ok(DriveStep::Call(args)),
            Ok(None) => {
                let r0 = self.st.drivers.pop().map_or(0, |d| d.driver.result());
                Ok(DriveStep::Done(r0))
            }
            Err((helper, name, error)) => {
                self.st.drivers.pop();
                Err(exec::helper_fault(prog, pc, helper, &name, error))
            }
        }
    }

    /// The depth (frames below the first) the engine's run starts at: 0,
    /// or the caller's depth for the target of a tail call from a
    /// subprogram ([`EngineRun::run_tail_target`]).
    pub fn base_depth(&self) -> usize {
        self.st.base_depth
    }

    /// A tail call from a subprogram at `depth`: runs `target` (and any
    /// program it tail-calls) in place of the calling function, from the
    /// registers `regs` (`r10` the caller's frame), and returns its `r0`,
    /// as the kernel returns to the subprogram's caller.
    pub fn run_tail_target(
        &mut self,
        target: Arc<PreparedProgram>,
        regs: [u64; 11],
        depth: usize,
    ) -> Result<u64, Fault> {
        let (saved_depth, saved_base) = (self.st.depth, self.st.base_depth);
        self.st.regs[..11].copy_from_slice(&regs);
        self.st.depth = depth;
        self.st.base_depth = depth;
        let mut cur = target;
        // Where the interpreter takes over from compiled code.
        let mut resume = None;
        let result = loop {
            let stop = match cur.compiled().cloned().filter(|_| resume.is_none()) {
                Some(code) => {
                    let mut run = EngineRun {
                        prog: &cur,
                        st: &mut *self.st,
                        mem: &mut *self.mem,
                        program_array: self.program_array,
                    };
                    code.run(&mut run, 0).map_err(|f| *f)
                }
                None => exec::run_ops(
                    &cur,
                    0,
                    resume.take().unwrap_or(0),
                    self.st,
                    self.mem,
                    self.program_array,
                )
                .and_then(|s| match s {
                    exec::Stop::Exit(r0) => Ok(EngineStop::Exit(r0)),
                    exec::Stop::TailCall(t) => Ok(EngineStop::TailCall(t)),
                    exec::Stop::Switch { pc, .. } => {
                        Err(self.fault(&cur, pc, 0, 0, FaultKind::InvalidPc))
                    }
                }),
            };
            match stop {
                Ok(EngineStop::Exit(r0)) => break Ok(r0),
                Ok(EngineStop::TailCall(t)) => cur = t,
                Ok(EngineStop::Resume(pc)) => resume = Some(pc),
                Err(f) => break Err(f),
            }
        };
        self.st.depth = saved_depth;
        self.st.base_depth = saved_base;
        result
    }

    /// `callx` on a value that is not a subprogram address: the helper with
    /// that id, if the program's helpers have it (the conformance suite's
    /// convention); otherwise a bad-call-target fault.
    pub fn call_helper_by_id(
        &mut self,
        prog: &Arc<PreparedProgram>,
        pc: usize,
        id: u64,
        args: [u64; 5],
        fp: u64,
    ) -> Result<HelperReturn, Fault> {
        let Some(h) = i32::try_from(id).ok().and_then(|id| prog.helpers.get(id)) else {
            return Err(self.fault(prog, pc, 0, 0, FaultKind::BadCallTarget { value: id }));
        };
        let h = h.clone();
        self.invoke(prog, pc, &h, args, fp)
    }

    /// `bpf_map_lookup_elem` at `pc` through the maps' direct path, or the
    /// helper (`index`) when it declines.
    pub fn map_lookup(
        &mut self,
        prog: &Arc<PreparedProgram>,
        pc: usize,
        index: usize,
        handle: u64,
        key: u64,
        fp: u64,
    ) -> Result<u64, Fault> {
        self.mem.stack_lo = fp.wrapping_sub(super::STACK_SIZE as u64);
        if let Some(r0) = prog
            .accel
            .as_ref()
            .and_then(|a| a.lookup(self.mem, handle, key))
        {
            return Ok(r0);
        }
        match self.call_helper(prog, pc, index, [handle, key, 0, 0, 0], fp)? {
            HelperReturn::Value(r0) | HelperReturn::Exit(r0) => Ok(r0),
            // bpf_map_lookup_elem never calls back.
            HelperReturn::Callback { .. } => Err(self.fault(prog, pc, 0, 0, FaultKind::InvalidPc)),
        }
    }

    /// The program `bpf_tail_call(ctx, map, index)` jumps to, counting the
    /// call; `None` (the call falls through) past 33 tail calls or for an
    /// empty slot.
    pub fn tail_call(&mut self, map: u64, index: u64) -> Option<Arc<PreparedProgram>> {
        let arr = self.program_array?;
        let index = u32::try_from(index).ok()?;
        if self.st.tail_calls >= MAX_TAIL_CALLS {
            return None;
        }
        let target = arr.get(map, index)?;
        self.st.tail_calls = self.st.tail_calls.wrapping_add(1);
        Some(target)
    }

    /// A fault of `prog` at `pc`.
    pub fn fault(
        &self,
        prog: &PreparedProgram,
        pc: usize,
        addr: u64,
        len: u64,
        kind: FaultKind,
    ) -> Fault {
        exec::fault(prog, pc, addr, len, kind)
    }
}
