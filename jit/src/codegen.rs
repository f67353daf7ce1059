//! BPF to Cranelift IR. The whole program (subprograms included) becomes
//! one function `fn(ctx: *mut JitCtx, entry: u64) -> status`, mirroring
//! the interpreter: BPF registers are SSA variables, bpf-to-bpf calls push
//! an explicit frame (in the context) and return through a jump table of
//! return sites, `bpf_loop` callbacks re-enter their subprogram the same
//! way. Everything else (helpers, memory checks outside the stack, tail
//! calls, packet loads, faults) is a call to a function of [`crate::ctx`].
//!
//! Division and modulo by zero and `INT_MIN / -1` are computed with
//! selects on a divisor that can never be 0 or -1, so no division traps.

use std::collections::{BTreeSet, HashMap};
use std::mem::offset_of;

use cranelift_codegen::ir::condcodes::{CondCode, IntCC};
use cranelift_codegen::ir::types::{I16, I32, I64, I8};
use cranelift_codegen::ir::{
    AbiParam, AtomicRmwOp, Block, BlockArg, GlobalValue, InstBuilder, JumpTableData, MemFlagsData,
    Signature, Type, Value,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, Variable};
use userbpf_vm::interp::{OpClass, PreparedProgram, BPF_MAX_LOOPS, STACK_SIZE};
use userbpf_vm::isa::{
    decode, AluOp, AtomicOp, EndianOp, Instruction, JmpCond, MemSize, PacketMode, Source, Width,
};

use crate::ctx::{self, FaultCode, JitCtx, JitFrame};
use crate::hoist::{self, Bound, CopyLoop, HoistLoop};
use crate::JitError;

/// Whether accesses, budget and depth are checked at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Checks {
    /// Checked mode.
    On,
    /// Verified mode.
    Off,
}

/// Addresses of the call-outs, baked into the code.
struct Callouts {
    helper: Value,
    callx_helper: Value,
    map_lookup: Value,
    tail_call: Value,
    packet_load: Value,
    drive: Value,
    tail_call_nested: Value,
}

struct Sigs {
    /// (ctx, pc, a, b) -> u64
    four: cranelift_codegen::ir::SigRef,
    /// (ctx, pc, r1..r5) -> u64
    seven: cranelift_codegen::ir::SigRef,
    /// (ctx, pc, a, b, c) -> u64
    five: cranelift_codegen::ir::SigRef,
    /// (ctx, pc, a) -> u64
    three: cranelift_codegen::ir::SigRef,
}

fn sig(call_conv: CallConv, params: usize) -> Signature {
    let mut s = Signature::new(call_conv);
    for _ in 0..params {
        s.params.push(AbiParam::new(I64));
    }
    s.returns.push(AbiParam::new(I64));
    s
}

/// The body of the `preserve_all` trampoline to [`ctx::jit_check`] (see
/// `check_trampoline`): its one parameter (the context, which holds the
/// access in its record) passed on, the result left in the context's
/// status.
pub(crate) fn check_trampoline_body(b: &mut FunctionBuilder<'_>, call_conv: CallConv) {
    let blk = b.create_block();
    b.append_block_params_for_function_params(blk);
    b.switch_to_block(blk);
    let params = b.block_params(blk).to_vec();
    let callee = b
        .ins()
        .iconst(I64, ctx::jit_check as *const () as usize as i64);
    let s = b.import_signature(sig(call_conv, 1));
    b.ins().call_indirect(s, callee, &params);
    b.ins().return_(&[]);
    b.seal_all_blocks();
}

/// The signature of compiled programs: `(context, entry pc, r1, r2, r3,
/// r4) -> (r0, status)` (the other registers in the context; r0 first:
/// it comes back in rax, where the program's result wants to be, and the
/// register allocator keeps it out of the argument registers).
pub(crate) fn entry_signature(call_conv: CallConv) -> Signature {
    let mut s = sig(call_conv, 6);
    s.returns.push(AbiParam::new(I64));
    s
}

/// Where the context keeps what baseline code reads and writes.
pub(crate) const LAYOUT: crate::baseline::Layout = crate::baseline::Layout {
    regs: REGS_OFF,
    budget: BUDGET_OFF,
    seed: SEED_OFF,
    stack_top: STACK_TOP_OFF,
    fp: FP_OFF,
    status: STATUS_OFF,
    record: RECORD_OFF,
    max_depth: MAX_DEPTH_OFF,
    depth_limit: DEPTH_LIMIT_OFF,
    cb_target: CB_TARGET_OFF,
    cb_args: CB_ARGS_OFF,
    frames: FRAMES_OFF,
};
const REGS_OFF: i32 = offset_of!(JitCtx, head.regs) as i32;
const BUDGET_OFF: i32 = offset_of!(JitCtx, head.budget) as i32;
const MAX_DEPTH_OFF: i32 = offset_of!(JitCtx, head.max_depth) as i32;
const STACK_TOP_OFF: i32 = offset_of!(JitCtx, stack_top) as i32;
const FP_OFF: i32 = offset_of!(JitCtx, fp) as i32;
const STATUS_OFF: i32 = offset_of!(JitCtx, status) as i32;
const DEPTH_LIMIT_OFF: i32 = offset_of!(JitCtx, depth_limit) as i32;
const CB_TARGET_OFF: i32 = offset_of!(JitCtx, cb_target) as i32;
const CB_ARGS_OFF: i32 = offset_of!(JitCtx, cb_args) as i32;
const SEED_OFF: i32 = offset_of!(JitCtx, head.seed) as i32;
const RECORD_OFF: i32 = offset_of!(JitCtx, record) as i32;
const FRAMES_OFF: i32 = offset_of!(JitCtx, frames) as i32;
const FRAME_SIZE: i64 = std::mem::size_of::<JitFrame>() as i64;
const F_RET: i32 = offset_of!(JitFrame, ret_site) as i32;
const F_SAVED: i32 = offset_of!(JitFrame, saved) as i32;
const F_FP: i32 = offset_of!(JitFrame, fp) as i32;
const F_LOOP_CB: i32 = offset_of!(JitFrame, loop_cb) as i32;
const F_LOOP_I: i32 = offset_of!(JitFrame, loop_i) as i32;
const F_LOOP_N: i32 = offset_of!(JitFrame, loop_n) as i32;
const F_LOOP_CTX: i32 = offset_of!(JitFrame, loop_ctx) as i32;

/// Memory flags of the context (aligned, never traps).
fn ctx_flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// Memory flags of program accesses (checked or verified: never trap;
/// BPF allows unaligned accesses).
fn mem_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

pub(crate) fn size_bytes(s: MemSize) -> u64 {
    match s {
        MemSize::B => 1,
        MemSize::H => 2,
        MemSize::W => 4,
        MemSize::DW => 8,
    }
}

fn size_type(s: MemSize) -> Type {
    match s {
        MemSize::B => I8,
        MemSize::H => I16,
        MemSize::W => I32,
        MemSize::DW => I64,
    }
}

/// What ends a basic block.
fn ends_block(i: &Instruction, class: OpClass) -> bool {
    matches!(
        i,
        Instruction::Ja { .. }
            | Instruction::JaLong { .. }
            | Instruction::Jump { .. }
            | Instruction::Exit
            | Instruction::CallX { .. }
    ) || matches!(
        class,
        OpClass::Local(_) | OpClass::Loop | OpClass::TailCall | OpClass::CorePoison
    )
}

/// `(k, true)` for a multiplier `2^k + 1`, `(k, false)` for `2^k - 1`
/// (k from 2 to 31; 3 = 2 + 1 and 1 are left to the multiply, which
/// Cranelift turns into a shift or a `lea`).
fn shift_add(m: i64) -> Option<(u8, bool)> {
    let k = |v: i64| {
        (v > 0 && v.count_ones() == 1)
            .then(|| v.trailing_zeros() as u8)
            .filter(|k| (2..32).contains(k))
    };
    k(m - 1)
        .map(|k| (k, true))
        .or_else(|| k(m + 1).map(|k| (k, false)))
}

/// The registers an instruction reads and those it surely writes (a bit
/// per register), for liveness in a single frame: reads over-approximated
/// (a helper reads r1..r5, a tail call all of them, whose target starts
/// from them), writes under-approximated (a helper's clobbered r1..r5 not
/// counted).
fn reads_writes(i: &Instruction, class: OpClass) -> (u16, u16) {
    let bit = |r: userbpf_vm::Reg| 1u16 << r.num();
    let src = |s: &Source| match s {
        Source::Reg(r) => bit(*r),
        Source::Imm(_) => 0,
    };
    match class {
        OpClass::Helper(_) | OpClass::MapLookup(_) => return (0b11_1110, 1),
        OpClass::TailCall | OpClass::Local(_) | OpClass::Loop | OpClass::CallX => {
            return (u16::MAX, 0)
        }
        OpClass::CorePoison => return (0, 0),
        _ => {}
    }
    let w = i.dst_written().map_or(0, bit);
    let r = match i {
        Instruction::Alu {
            op: AluOp::Mov,
            src: s,
            ..
        } => src(s),
        Instruction::Alu { dst, src: s, .. } => bit(*dst) | src(s),
        Instruction::MovSx { src, .. } => bit(*src),
        Instruction::Neg { dst, .. } | Instruction::Endian { dst, .. } => bit(*dst),
        Instruction::Load { src, .. } | Instruction::LoadSx { src, .. } => bit(*src),
        Instruction::Store { dst, src: s, .. } => bit(*dst) | src(s),
        Instruction::Atomic { dst, src, op, .. } => {
            bit(*dst) | bit(*src) | if *op == AtomicOp::CmpXchg { 1 } else { 0 }
        }
        Instruction::LoadImm64 { .. } => 0,
        // (The packet comes with r6, the context.)
        Instruction::LoadPacket { mode, .. } => {
            1 << 6
                | match mode {
                    PacketMode::Ind(r) => bit(*r),
                    PacketMode::Abs => 0,
                }
        }
        Instruction::Jump { dst, src: s, .. } => bit(*dst) | src(s),
        Instruction::Exit => 1,
        Instruction::CallX { .. } | Instruction::Call(_) => u16::MAX,
        Instruction::Ja { .. } | Instruction::JaLong { .. } => 0,
    };
    (r, w)
}

/// The static shape of the program: decoded instructions, block leaders,
/// subprogram entries.
pub(crate) struct Shape {
    pub(crate) insns: Vec<Option<(Instruction, OpClass)>>,
    pub(crate) leaders: BTreeSet<usize>,
    pub(crate) entries: BTreeSet<usize>,
    /// pcs reached otherwise than by falling through: jump and call
    /// targets, subprogram entries, return sites.
    pub(crate) targets: BTreeSet<usize>,
}

/// A chain of `if rX == K goto T` on one register: compiled as a jump
/// table.
pub(crate) struct Chain {
    width: Width,
    reg: userbpf_vm::Reg,
    /// (value, chain position, target pc), first occurrence of each value.
    cases: Vec<(u64, usize, usize)>,
    /// Number of compares in the chain.
    pub(crate) len: usize,
}

impl Chain {
    /// One past the largest value tested (the table's length).
    fn size(&self) -> u64 {
        self.cases.iter().map(|c| c.0).max().unwrap_or(0) + 1
    }
}

/// A chain whose every way out (each case and the fall-through) is one
/// block `rX += K` (or `rX = K`; 64-bit, one register, one operation for
/// all) then `ja J`, or falling through to `J`, one `J` for all: compiled
/// as a load from a table of the `K`s, as compilers turn such a `switch`
/// into a lookup.
struct Lookup {
    dst: userbpf_vm::Reg,
    /// `+=` (else `=`).
    add: bool,
    /// The pc every way joins at.
    join: usize,
    /// `K` for each chain value `0..size`, then the fall-through's.
    ks: Vec<u64>,
    /// The pc of each entry's block (for budget points), as `ks`.
    ways: Vec<usize>,
    /// The instructions the interpreter runs on each entry's way after
    /// the chain's first test (the tests after it, the way's block), as
    /// `ks`.
    charges: Vec<usize>,
}

/// A block to fill once the current one is terminated.
enum Pending {
    /// Faults with an invalid pc.
    InvalidPc(Block, usize),
    /// Jumps to the second block (an edge of a branch).
    Edge(Block, Block),
    /// Charges `count` instructions from `pc` (checked mode), then jumps.
    Charge {
        block: Block,
        pc: usize,
        count: u64,
        target: Block,
    },
}

/// Programs naming at most this many of r0..r9 keep the region cache in
/// registers ([`Translator::seed_vars`]).
const SEED_VAR_MAX_NAMES: usize = 6;

/// Bounds on a counted loop's trips and on its head's count for a budget
/// test on entry (their product cannot wrap).
const MAX_TRIPS: u64 = 1 << 31;

/// The most instructions of a loop's test block copied to its bottom
/// ([`Translator::rotate`]).
const MAX_ROTATED: usize = 4;

/// Shortest chain worth a table, and the largest value in one.
const MIN_CHAIN: usize = 4;
const MAX_CHAIN_VALUE: u64 = 255;

impl Shape {
    pub(crate) fn of(prog: &PreparedProgram) -> Result<Shape, JitError> {
        let len = prog.len();
        let mut insns = Vec::with_capacity(len);
        let mut leaders = BTreeSet::new();
        let mut entries = BTreeSet::new();
        let mut targets = BTreeSet::new();
        leaders.insert(0);
        entries.insert(0);
        for pc in 0..len {
            let class = prog.op_class(pc).unwrap_or(OpClass::Hole);
            if class == OpClass::Hole {
                insns.push(None);
                continue;
            }
            let i = decode(prog.insns(), pc).map_err(|e| JitError::Decode {
                program: prog.name().to_string(),
                pc,
                message: e.to_string(),
            })?;
            let mut jump = |t: usize| {
                leaders.insert(t);
                targets.insert(t);
            };
            match (i, class) {
                (_, OpClass::Local(t)) => {
                    jump(t);
                    entries.insert(t);
                }
                (_, OpClass::LoadImm(v)) => {
                    if let Some(t) = prog.callback_target(v) {
                        jump(t);
                        entries.insert(t);
                    }
                }
                (i, _) => {
                    if let Some(rel) = i.jump_offset() {
                        jump(target(pc, rel));
                    }
                }
            }
            // Whatever follows a call is a return site; after a helper call
            // too (a helper may call back into the program).
            if matches!(
                class,
                OpClass::Local(_)
                    | OpClass::CallX
                    | OpClass::Loop
                    | OpClass::TailCall
                    | OpClass::Helper(_)
            ) {
                targets.insert(pc + 1);
            }
            if ends_block(&i, class) {
                leaders.insert(pc + i.slots());
            }
            insns.push(Some((i, class)));
        }
        targets.extend(entries.iter().copied());
        Ok(Shape {
            insns,
            leaders,
            entries,
            targets,
        })
    }

    /// Instructions from leader `pc` to the end of its block, as checked
    /// code charges them on entry (a jump, exit or call ends a block, as
    /// does the next leader; reaching an lddw's second slot counts it, and
    /// ends the block: the interpreter charges it, then faults).
    pub(crate) fn block_len(&self, pc: usize) -> u64 {
        let mut n = 0;
        let mut p = pc;
        while let Some(slot) = self.insns.get(p) {
            if p != pc && self.leaders.contains(&p) {
                break;
            }
            match slot {
                Some((i, class)) => {
                    n += 1;
                    let end = ends_block(i, *class);
                    p += i.slots();
                    if end {
                        break;
                    }
                }
                None => {
                    // Reached the second slot of an lddw: the interpreter
                    // charges it, then faults.
                    n += 1;
                    break;
                }
            }
        }
        n
    }

    /// Where checked code tests the budget when it need not test it at
    /// every block: pc -> the most instructions a run can charge from
    /// there before it reaches the next such pc (or ends). The points are
    /// pc 0 and the targets of back-edges (of a depth-first walk from pc
    /// 0: every cycle passes one), so the paths between them are acyclic
    /// and the counts finite. A point whose budget is below its count
    /// stops for the interpreter, which runs the rest and faults where the
    /// budget runs out, at the interpreter's pc ([`ctx::STATUS_RESUME`]).
    /// With each count, the registers live there (a bit per register):
    /// the only ones the interpreter can read after it takes over.
    /// `None` for programs that can run a frame other than the first
    /// (local calls, `callx`, callbacks): the interpreter could not take
    /// over their frames.
    pub(crate) fn budget_points(&self) -> Option<HashMap<usize, (u64, u16)>> {
        let len = self.insns.len();
        if self.entries.len() > 1
            || self.insns.iter().flatten().any(|(_, class)| {
                matches!(class, OpClass::Local(_) | OpClass::CallX | OpClass::Loop)
            })
        {
            return None;
        }
        // Successors of the instruction at `pc` (pcs past the end or on
        // an lddw's second slot included: they fault when reached).
        let succ = |pc: usize| -> ([usize; 2], usize) {
            match self.insns[pc] {
                None => ([0; 2], 0),
                Some((i, class)) => match i {
                    Instruction::Exit => ([0; 2], 0),
                    Instruction::Ja { .. } | Instruction::JaLong { .. } => {
                        let rel = i.jump_offset().unwrap_or(0);
                        ([target(pc, rel), 0], 1)
                    }
                    Instruction::Jump { .. } => {
                        let rel = i.jump_offset().unwrap_or(0);
                        ([pc + 1, target(pc, rel)], 2)
                    }
                    _ if class == OpClass::CorePoison => ([0; 2], 0),
                    _ => ([pc + i.slots(), 0], 1),
                },
            }
        };
        let valid = |pc: usize| pc < len && self.insns[pc].is_some();
        // Depth-first from pc 0: colours (0 new, 1 on the stack, 2 done),
        // the finishing order, the back-edge targets.
        let mut colour = vec![0u8; len];
        let mut order = Vec::new();
        let mut points = HashMap::new();
        points.insert(0usize, (0u64, u16::MAX));
        if len == 0 {
            return Some(points);
        }
        let mut stack = vec![(0usize, 0usize)];
        colour[0] = 1;
        while let Some(&mut (pc, ref mut next)) = stack.last_mut() {
            let (s, n) = succ(pc);
            if *next < n {
                let t = s[*next];
                *next += 1;
                if valid(t) {
                    match colour[t] {
                        0 => {
                            colour[t] = 1;
                            stack.push((t, 0));
                        }
                        1 => {
                            points.insert(t, (0, 0));
                        }
                        _ => {}
                    }
                }
            } else {
                colour[pc] = 2;
                order.push(pc);
                stack.pop();
            }
        }
        // Longest paths, successors first (the finishing order, with the
        // edges into points cut, is a topological order of what is left).
        let mut most = vec![0u64; len];
        for &pc in &order {
            let (s, n) = succ(pc);
            let after = s[..n]
                .iter()
                .map(|&t| {
                    if !valid(t) {
                        1
                    } else if points.contains_key(&t) {
                        0
                    } else {
                        most[t]
                    }
                })
                .max()
                .unwrap_or(0);
            most[pc] = 1 + after;
        }
        // Live registers, backwards to a fixed point (the finishing order
        // visits successors first, but for back-edges).
        let mut live = vec![0u16; len];
        loop {
            let mut changed = false;
            for &pc in &order {
                let (s, n) = succ(pc);
                let out = s[..n]
                    .iter()
                    .filter(|&&t| valid(t))
                    .fold(0u16, |acc, &t| acc | live[t]);
                let (reads, writes) = self.insns[pc].map_or((0, 0), |(i, c)| reads_writes(&i, c));
                let inn = reads | (out & !writes);
                if inn != live[pc] {
                    live[pc] = inn;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        for (pc, k) in points.iter_mut() {
            // (r10 always: the frame.)
            *k = (most[*pc], live[*pc] | 1 << 10);
        }
        Some(points)
    }

    /// The chain of equality tests on one register starting at `pc`, if
    /// it is long enough and its values small enough for a table. Only the
    /// first test may be reached otherwise than by falling through.
    pub(crate) fn chain(&self, pc: usize) -> Option<Chain> {
        let first = self.insns.get(pc).copied().flatten()?;
        let (width, reg) = match first.0 {
            Instruction::Jump {
                width,
                cond: JmpCond::Eq,
                dst,
                src: Source::Imm(_),
                ..
            } => (width, dst),
            _ => return None,
        };
        let mut cases: Vec<(u64, usize, usize)> = Vec::new();
        let mut p = pc;
        loop {
            if p != pc && self.targets.contains(&p) {
                break;
            }
            let Some((
                Instruction::Jump {
                    width: w,
                    cond: JmpCond::Eq,
                    dst,
                    src: Source::Imm(imm),
                    off,
                },
                OpClass::Plain,
            )) = self.insns.get(p).copied().flatten()
            else {
                break;
            };
            if w != width || dst != reg {
                break;
            }
            // The value the register must hold.
            let value = match width {
                Width::W64 => i64::from(imm) as u64,
                Width::W32 => u64::from(imm as u32),
            };
            if value > MAX_CHAIN_VALUE {
                break;
            }
            if !cases.iter().any(|c| c.0 == value) {
                cases.push((value, p - pc, target(p, i64::from(off))));
            }
            p += 1;
        }
        let len = p - pc;
        (len >= MIN_CHAIN).then_some(Chain {
            width,
            reg,
            cases,
            len,
        })
    }

    /// The chain's ways as a lookup table, when every one has that form
    /// ([`Lookup`]).
    fn lookup(&self, pc: usize, chain: &Chain) -> Option<Lookup> {
        let size = chain.size();
        let fall = (chain.len - 1, pc + chain.len);
        let mut form: Option<(userbpf_vm::Reg, bool, usize)> = None;
        let n = size as usize + 1;
        let (mut ks, mut ways, mut charges) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        // Each value's way, then the fall-through's.
        for value in (0..size).map(Some).chain([None]) {
            let (at, dest) = chain
                .cases
                .iter()
                .find(|c| Some(c.0) == value)
                .map_or(fall, |&(_, at, dest)| (at, dest));
            let Some((
                Instruction::Alu {
                    width: Width::W64,
                    op: op @ (AluOp::Add | AluOp::Mov),
                    dst,
                    src: Source::Imm(k),
                },
                OpClass::Plain,
            )) = self.insns.get(dest).copied().flatten()
            else {
                return None;
            };
            // The block is the operation and a jump, or the operation
            // alone falling through to the next block.
            let (join, way_len) = if self.leaders.contains(&(dest + 1)) {
                (dest + 1, 1)
            } else {
                let Some((Instruction::Ja { off }, OpClass::Plain)) =
                    self.insns.get(dest + 1).copied().flatten()
                else {
                    return None;
                };
                (target(dest + 1, i64::from(off)), 2)
            };
            let this = (dst, op == AluOp::Add, join);
            if *form.get_or_insert(this) != this {
                return None;
            }
            ks.push(i64::from(k) as u64);
            ways.push(dest);
            charges.push(at + way_len);
        }
        let (dst, add, join) = form?;
        (join < self.insns.len()).then_some(Lookup {
            dst,
            add,
            join,
            ks,
            ways,
            charges,
        })
    }
}

pub(crate) fn target(pc: usize, rel: i64) -> usize {
    let t = (pc as i64).saturating_add(1).saturating_add(rel);
    usize::try_from(t).unwrap_or(usize::MAX)
}

/// Translates `prog` into the function `b` builds.
pub(crate) struct Translator<'a, 'b> {
    prog: &'a PreparedProgram,
    shape: &'a Shape,
    checks: Checks,
    b: &'a mut FunctionBuilder<'b>,
    regs: [Variable; 11],
    budget: Variable,
    depth: Variable,
    ctx: Value,
    /// One past the stack's top (loaded at entry when accesses are based
    /// on r10, else where needed).
    stack_top: Option<Value>,
    /// Checked code of one frame that never names r10 reads it from the
    /// context where a check or a fault record needs it, instead of
    /// holding it from the entry.
    lazy_fp: bool,
    depth_limit: Value,
    callouts: Callouts,
    sigs: Sigs,
    /// pc -> block, for leaders.
    blocks: Vec<Option<Block>>,
    /// Return sites of calls, by index.
    ret_sites: Vec<Block>,
    /// Shared blocks.
    fault_exit: Block,
    dispatch: Block,
    /// Where `exit` from a subprogram goes: a jump table over the return
    /// sites, indexed by the frame's site.
    ret_block: Block,
    /// Whether frames can be pushed (calls, callbacks, helpers that may
    /// call back); without, every `exit` ends the run.
    may_nest: bool,
    /// The shared code of an `exit` from a frame.
    nested_exit: Block,
    /// Whether anything jumps to the dispatch block.
    dispatch_used: bool,
    /// Blocks referred to before they could be filled.
    pending: Vec<Pending>,
    /// Whether the current block still needs a terminator.
    open: bool,
    /// Whether no call-out but memory checks was emitted.
    closed: bool,
    /// The code is a leaf ([`Translated::leaf`]) so far.
    leaf: bool,
    /// The leader of the block being translated (charged in full on
    /// entry, in checked mode).
    leader: usize,
    /// The `preserve_all` trampoline to the memory check call-out and its
    /// signature.
    check: (Value, cranelift_codegen::ir::SigRef),
    /// Accesses of the current block already proven by a group check:
    /// pc -> the group's condition (see [`Translator::group_check`]).
    grouped: Vec<(usize, Value)>,
    /// Checked code that tests the budget only at these points
    /// ([`Shape::budget_points`]); `None`: at every block.
    budget_points: Option<HashMap<usize, (u64, u16)>>,
    /// The region cache in variables (registers), for programs that name
    /// few registers: read start and limit, write start and limit, as the
    /// run starts (a test against the context's cache, which follows the
    /// slow checks, comes second). `None`: read from the context at each
    /// test.
    seed_vars: Option<[Variable; 4]>,
    /// With `seed_vars`: the read (then write) limit for 1-, 2- and 4-byte
    /// accesses (length - len + 1), for the sizes the program uses.
    narrow_limits: Option<[[Option<Value>; 3]; 2]>,
    /// Declares read-only data (lookup tables) for the function: its
    /// address is the returned global value.
    data: &'a mut DataFn<'a>,
    /// Checked code: loops whose accesses are proven on entry
    /// ([`crate::hoist`]), each with the blocks of its copy that skips
    /// those accesses' checks (a block per leader of the loop, by pc; the
    /// head's first).
    hoisted: Vec<(HoistLoop, Vec<(usize, Block)>)>,
    /// The accesses the loop copy being translated does not check.
    unchecked: Vec<usize>,
    /// The lookup tables declared, by the pc of their chain.
    tables: Vec<(usize, GlobalValue)>,
    /// The head of the loop copy being translated when its entry proved
    /// the budget enough for the whole loop ([`Translator::head_most`]).
    unbudgeted: Option<usize>,
    /// Translating the test of a rotated loop ([`Translator::rotate`]).
    rotating: bool,
    /// Loops that copy memory forward ([`crate::hoist::copy_loop`]), by
    /// head: verified code copies all rounds but the last in bulk where
    /// the loop is entered; checked code where it enters the loop's copy
    /// with proven accesses and budget ([`Translator::bulk_copy`]).
    copies: Vec<(usize, CopyLoop)>,
    /// How many copy loops the code enters through a bulk copy.
    bulk_copies: usize,
}

/// What [`Translator::translate`] found out about the code.
pub(crate) struct Translated {
    /// The code is closed: it calls out for nothing but memory checks (and
    /// `memmove`), so it can run without a host.
    pub(crate) closed: bool,
    /// The code is a leaf: verified code that calls nothing (no call-out,
    /// helper, map lookup but inlined array ones, tail call, subprogram
    /// or bulk copy) and reads nothing of its context but the head's
    /// registers (see [`userbpf_vm::interp::LeafCode`]).
    pub(crate) leaf: bool,
    /// Loops that prove their accesses on entry ([`crate::hoist`]).
    pub(crate) proven_loops: usize,
    /// Copy loops entered through a bulk copy ([`Translator::bulk_copy`]).
    pub(crate) bulk_copies: usize,
}

/// Fewest bytes a copy loop's rounds copy in bulk (`memmove`): below, the
/// call costs more than the rounds.
const BULK_MIN: i64 = 256;

/// `memmove` for [`Translator::bulk_copy`] (the signature of the other
/// call-outs: the first argument, the context, unused).
extern "C" fn jit_bulk_copy(_ctx: u64, dst: u64, src: u64, len: u64) -> u64 {
    // SAFETY: the code calls this only for the rounds of a copy loop that
    // would run, whose every access is proven inside one region (verified
    // code, or the loop's entry test in checked code), with `dst` at or
    // below `src` or at least `len` past it: the copy reads what the
    // rounds would read and writes what they would write.
    unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, len as usize) };
    0
}

/// Declares read-only data for a function being compiled (see
/// [`Translator::new`]).
pub(crate) type DataFn<'a> =
    dyn FnMut(&mut cranelift_codegen::ir::Function, Box<[u8]>) -> Result<GlobalValue, String> + 'a;

impl<'a, 'b> Translator<'a, 'b> {
    pub(crate) fn new(
        prog: &'a PreparedProgram,
        shape: &'a Shape,
        checks: Checks,
        b: &'a mut FunctionBuilder<'b>,
        call_conv: CallConv,
        check_trampoline: u64,
        data: &'a mut DataFn<'a>,
    ) -> Translator<'a, 'b> {
        let regs = std::array::from_fn(|_| b.declare_var(I64));
        let budget = b.declare_var(I64);
        let depth = b.declare_var(I64);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let ctx = b.block_params(entry)[0];
        let entry_pc = b.block_params(entry)[1];
        let args: [Value; 4] = std::array::from_fn(|i| b.block_params(entry)[2 + i]);
        let addr = |b: &mut FunctionBuilder<'_>, p: usize| b.ins().iconst(I64, p as i64);
        let callouts = Callouts {
            helper: addr(b, ctx::jit_helper as *const () as usize),
            callx_helper: addr(b, ctx::jit_callx_helper as *const () as usize),
            map_lookup: addr(b, ctx::jit_map_lookup as *const () as usize),
            tail_call: addr(b, ctx::jit_tail_call as *const () as usize),
            packet_load: addr(b, ctx::jit_packet_load as *const () as usize),
            drive: addr(b, ctx::jit_drive as *const () as usize),
            tail_call_nested: addr(b, ctx::jit_tail_call_nested as *const () as usize),
        };
        let check = {
            let mut s = Signature::new(CallConv::PreserveAll);
            s.params.push(AbiParam::new(I64));
            (
                b.ins().iconst(I64, check_trampoline as i64),
                b.import_signature(s),
            )
        };
        let sigs = Sigs {
            four: b.import_signature(sig(call_conv, 4)),
            seven: b.import_signature(sig(call_conv, 7)),
            five: b.import_signature(sig(call_conv, 5)),
            three: b.import_signature(sig(call_conv, 3)),
        };
        // r1..r4 come in as arguments. Registers the program never names
        // start as zero instead of being loaded: nothing can observe them
        // (without calls of any kind, only r0 leaves the code). r0 is
        // loaded unless the program writes it before reading it (in
        // programs of one frame), r10 if the program or the checks use it.
        let calls = shape.insns.iter().flatten().any(|(_, class)| {
            !matches!(class, OpClass::Plain | OpClass::LoadImm(_) | OpClass::Hole)
        });
        let points = shape.budget_points();
        let live_at_entry = points
            .as_ref()
            .and_then(|p| p.get(&0))
            .map_or(u16::MAX, |&(_, live)| live);
        let mut named = [calls; 11];
        named[0] = true;
        named[10] = calls;
        for i in prog.insns() {
            for r in [i.dst, i.src] {
                if let Some(n) = named.get_mut(usize::from(r)) {
                    *n = true;
                }
            }
        }
        for (i, n) in named.iter_mut().enumerate() {
            *n &= live_at_entry & 1 << i != 0;
        }
        for (i, r) in regs.iter().enumerate() {
            let v = if (1..=4).contains(&i) {
                args[i - 1]
            } else if named[i] {
                b.ins().load(I64, ctx_flags(), ctx, REGS_OFF + 8 * i as i32)
            } else {
                b.ins().iconst(I64, 0)
            };
            b.def_var(*r, v);
        }
        // (Only checked code counts instructions; only checked code and
        // code that pushes frames needs the stack's top and the depth
        // limit.)
        let bud = if checks == Checks::On {
            b.ins().load(I64, ctx_flags(), ctx, BUDGET_OFF)
        } else {
            b.ins().iconst(I64, 0)
        };
        b.def_var(budget, bud);
        let zero = b.ins().iconst(I64, 0);
        b.def_var(depth, zero);
        // Programs that name few registers keep the run's first region in
        // registers; others read the cache from the context at each test
        // (four registers held through every loop would spill theirs).
        let names = (0..10u8)
            .filter(|&r| prog.insns().iter().any(|i| i.dst == r || i.src == r))
            .count();
        // (Only the pairs the program's accesses use: a load nothing reads
        // still costs.)
        let (mut reads, mut writes, mut stack_based) = (false, false, false);
        // Narrow access sizes (1, 2, 4 bytes) by reads and writes.
        let mut narrow = [[false; 3]; 2];
        let narrow_at = |size: MemSize| match size {
            MemSize::B => Some(0),
            MemSize::H => Some(1),
            MemSize::W => Some(2),
            MemSize::DW => None,
        };
        for (i, _) in shape.insns.iter().flatten() {
            match *i {
                Instruction::Load { src, size, .. } | Instruction::LoadSx { src, size, .. } => {
                    reads = true;
                    stack_based |= src.num() == 10;
                    if let Some(at) = narrow_at(size) {
                        narrow[0][at] = true;
                    }
                }
                Instruction::Store { dst, size, .. } => {
                    writes = true;
                    stack_based |= dst.num() == 10;
                    if let Some(at) = narrow_at(size) {
                        narrow[1][at] = true;
                    }
                }
                Instruction::Atomic { dst, .. } => {
                    writes = true;
                    stack_based |= dst.num() == 10;
                }
                _ => {}
            }
        }
        let seed_vars = (checks == Checks::On && names <= SEED_VAR_MAX_NAMES).then(|| {
            std::array::from_fn(|i| {
                let var = b.declare_var(I64);
                let used = if i < 2 { reads } else { writes };
                let v = if used {
                    b.ins().load(I64, ctx_flags(), ctx, SEED_OFF + 8 * i as i32)
                } else {
                    zero
                };
                b.def_var(var, v);
                var
            })
        });
        // The seed's limits for the narrow accesses the program makes,
        // computed once here. The added constants (`8 - len`) are loaded
        // from a table: Cranelift would redo an addition of a constant at
        // each use, inside loops. (Without the table, the checks add at
        // each test, as for the context's cache.)
        let narrow_limits = match seed_vars {
            Some(vars) if narrow.iter().flatten().any(|&n| n) => {
                let words: Vec<u8> = [1u64, 2, 4]
                    .iter()
                    .flat_map(|len| (8 - len).to_le_bytes())
                    .collect();
                data(b.func, words.into_boxed_slice()).ok().map(|gv| {
                    let table = b.ins().symbol_value(I64, gv);
                    std::array::from_fn(|w| {
                        std::array::from_fn(|at| {
                            narrow[w][at].then(|| {
                                let lim = b.use_var(vars[2 * w + 1]);
                                let flags = MemFlagsData::trusted().with_readonly();
                                let add = b.ins().load(I64, flags, table, 8 * at as i32);
                                b.ins().iadd(lim, add)
                            })
                        })
                    })
                })
            }
            _ => None,
        };
        // (Loaded where a check needs it when no access is based on r10:
        // the stack is then only a fallback test.)
        let stack_top = if checks == Checks::On && stack_based {
            Some(b.ins().load(I64, ctx_flags(), ctx, STACK_TOP_OFF))
        } else {
            None
        };
        let depth_limit = if calls {
            b.ins().load(I64, ctx_flags(), ctx, DEPTH_LIMIT_OFF)
        } else {
            zero
        };
        let len = shape.insns.len();
        let mut blocks = vec![None; len + 1];
        for &l in &shape.leaders {
            if l <= len {
                blocks[l] = Some(b.create_block());
            }
        }
        let simple = crate::hoist::loops(shape);
        let mut copies: Vec<(usize, CopyLoop)> = simple
            .iter()
            .filter_map(|l| Some((l.head, crate::hoist::copy_loop(shape, l)?)))
            .collect();
        copies.sort_unstable_by_key(|c| c.0);
        let hoisted = if checks == Checks::On {
            simple
                .into_iter()
                .map(|l| {
                    let copy = shape
                        .leaders
                        .range(l.head..l.end)
                        .map(|&p| (p, b.create_block()))
                        .collect();
                    (l, copy)
                })
                .collect()
        } else {
            Vec::new()
        };
        let fault_exit = b.create_block();
        let dispatch = b.create_block();
        b.append_block_param(dispatch, I64);
        let ret_block = b.create_block();
        b.append_block_param(ret_block, I64);
        let nested_exit = b.create_block();
        let may_nest = shape.insns.iter().flatten().any(|(_, class)| {
            matches!(
                class,
                OpClass::Local(_) | OpClass::CallX | OpClass::Loop | OpClass::Helper(_)
            )
        });
        // Entry: pc 0, or a subprogram (run_subprogram).
        let start = blocks[0].unwrap_or(fault_exit);
        let many_entries = shape.entries.len() > 1;
        if many_entries {
            let is_zero = b.ins().icmp_imm_s(IntCC::Equal, entry_pc, 0);
            b.ins()
                .brif(is_zero, start, &[], dispatch, &[BlockArg::Value(entry_pc)]);
        } else {
            // Only pc 0 can be entered (the VM checks subprogram entries).
            b.ins().jump(start, &[]);
        }
        Translator {
            prog,
            shape,
            checks,
            b,
            regs,
            budget,
            depth,
            ctx,
            stack_top,
            depth_limit,
            callouts,
            sigs,
            blocks,
            ret_sites: Vec::new(),
            fault_exit,
            dispatch,
            ret_block,
            may_nest,
            nested_exit,
            dispatch_used: many_entries,
            pending: Vec::new(),
            open: false,
            closed: true,
            leaf: checks == Checks::Off,
            leader: 0,
            check,
            grouped: Vec::new(),
            budget_points: if checks == Checks::On { points } else { None },
            seed_vars,
            narrow_limits,
            lazy_fp: checks == Checks::On && !named[10],
            data,
            hoisted,
            unchecked: Vec::new(),
            tables: Vec::new(),
            unbudgeted: None,
            rotating: false,
            copies,
            bulk_copies: 0,
        }
    }

    /// r10, the frame pointer: from the context where the code does not
    /// keep it ([`Translator::lazy_fp`]).
    fn fp(&mut self) -> Value {
        if self.lazy_fp {
            self.b.ins().load(I64, ctx_flags(), self.ctx, REGS_OFF + 80)
        } else {
            self.r(10)
        }
    }

    fn reg(&mut self, r: userbpf_vm::Reg) -> Value {
        self.b.use_var(self.regs[usize::from(r.num()).min(10)])
    }

    fn set(&mut self, r: userbpf_vm::Reg, v: Value) {
        self.b.def_var(self.regs[usize::from(r.num()).min(10)], v);
    }

    fn r(&mut self, i: usize) -> Value {
        self.b.use_var(self.regs[i])
    }

    fn set_r(&mut self, i: usize, v: Value) {
        self.b.def_var(self.regs[i], v);
    }

    /// In verified code, the array map `bpf_map_lookup_elem` at `pc` is
    /// called on, when `r1` is a constant (the map's `lddw`) naming one
    /// whose values are one block ([`MapAccel::array_values`]) and keys
    /// are 4 bytes.
    ///
    /// [`MapAccel::array_values`]: userbpf_vm::interp::MapAccel::array_values
    fn inline_array(&mut self, _pc: usize) -> Option<(u64, u64, u32)> {
        if self.checks != Checks::Off {
            return None;
        }
        let accel = self.prog.map_accel()?;
        let v = self.r(1);
        let dfg = &self.b.func.dfg;
        let v = dfg.resolve_aliases(v);
        let cranelift_codegen::ir::ValueDef::Result(inst, _) = dfg.value_def(v) else {
            return None;
        };
        let cranelift_codegen::ir::InstructionData::UnaryImm {
            opcode: cranelift_codegen::ir::Opcode::Iconst,
            imm,
        } = dfg.insts[inst]
        else {
            return None;
        };
        accel.array_values(imm.bits() as u64)
    }

    fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    /// Calls a call-out with `args` after `ctx` (and stores the caller's
    /// frame pointer for it); returns its result.
    fn callout(&mut self, f: Value, sig: cranelift_codegen::ir::SigRef, args: &[Value]) -> Value {
        // (Memory checks, which work without a host, go through the
        // trampoline instead.)
        self.closed = false;
        self.leaf = false;
        let fp = self.r(10);
        self.b.ins().store(ctx_flags(), fp, self.ctx, FP_OFF);
        let mut all = vec![self.ctx];
        all.extend_from_slice(args);
        let call = self.b.ins().call_indirect(sig, f, &all);
        self.b.inst_results(call)[0]
    }

    /// Runs `then`, which must end its block, when `cond` is non-zero;
    /// translation goes on in a new block where it is zero. `cold`: the
    /// taken side is rare.
    fn when(&mut self, cond: Value, cold: bool, then: impl FnOnce(&mut Self)) {
        let taken = self.b.create_block();
        let next = self.b.create_block();
        self.b.ins().brif(cond, taken, &[], next, &[]);
        self.b.switch_to_block(taken);
        self.b.seal_block(taken);
        if cold {
            self.b.set_cold_block(taken);
        }
        then(self);
        self.b.switch_to_block(next);
        self.b.seal_block(next);
    }

    /// Records fault `code` at `pc` and leaves when `cond` is non-zero.
    fn fault_if(&mut self, cond: Value, pc: usize, code: FaultCode, value: Value, len: u64) {
        self.when(cond, true, |t| t.fault(pc, code, value, len));
    }

    /// Whether `v` is a subprogram address (`lddw src=4`: tagged).
    fn is_func_addr(&mut self, v: Value) -> Value {
        let mask = self.iconst(userbpf_vm::interp::FUNC_ADDR_MASK as i64);
        let tag = self.b.ins().band(v, mask);
        self.b
            .ins()
            .icmp_imm_s(IntCC::Equal, tag, userbpf_vm::interp::FUNC_ADDR_TAG as i64)
    }

    /// After a call-out: a non-zero status leaves the run (fault, exit with
    /// the returned value as r0, tail call).
    fn check_status(&mut self, pc: usize, ret: Value) {
        let status = self.b.ins().load(I64, ctx_flags(), self.ctx, STATUS_OFF);
        self.when(status, false, |t| {
            // r0 = the returned value for an exit; the status is returned
            // (the rest of the block did not run).
            t.set_r(0, ret);
            let bud = t.budget_at(pc);
            t.b.def_var(t.budget, bud);
            t.leave(status);
        });
    }

    /// After a helper call: go on with r0, start the helper's callback
    /// (a frame returning here, the callback's arguments), or leave.
    fn helper_status(&mut self, pc: usize, ret: Value) {
        // Both the plain return and the callback's end continue here.
        let cont = self.b.create_block();
        self.callback_status(ret, Some(pc), |t| {
            // The callback: a frame returning after this call, marked
            // driven; it starts with the helper's r0, as in the
            // interpreter.
            t.set_r(0, ret);
            let frame = t.push_frame_to(pc, cont);
            let driven = t.iconst(ctx::FRAME_DRIVEN as i64);
            t.b.ins().store(ctx_flags(), driven, frame, F_LOOP_CB);
            let pcv = t.iconst(pc as i64);
            t.b.ins().store(ctx_flags(), pcv, frame, F_LOOP_I);
            t.enter_callback();
        });
        self.b.ins().jump(cont, &[]);
        self.b.switch_to_block(cont);
    }

    /// After a call-out that may start or continue a helper's callback:
    /// status 0 goes on with r0 = `ret`, [`ctx::STATUS_CALLBACK`] runs
    /// `callback` (which must end its block), any other status leaves the
    /// run (with the call at `pc`: the budget given back the rest of its
    /// block, which does not run, as for any fault).
    fn callback_status(&mut self, ret: Value, pc: Option<usize>, callback: impl FnOnce(&mut Self)) {
        let status = self.b.ins().load(I64, ctx_flags(), self.ctx, STATUS_OFF);
        self.when(status, false, |t| {
            let is_cb =
                t.b.ins()
                    .icmp_imm_s(IntCC::Equal, status, ctx::STATUS_CALLBACK as i64);
            t.when(is_cb, false, callback);
            t.set_r(0, ret);
            if let Some(pc) = pc {
                let bud = t.budget_at(pc);
                t.b.def_var(t.budget, bud);
            }
            t.leave(status);
        });
        self.set_r(0, ret);
    }

    /// Loads a helper's callback arguments and jumps to the callback.
    fn enter_callback(&mut self) {
        for i in 0..5 {
            let v = self
                .b
                .ins()
                .load(I64, ctx_flags(), self.ctx, CB_ARGS_OFF + 8 * i as i32);
            self.set_r(1 + i, v);
        }
        let t = self.b.ins().load(I64, ctx_flags(), self.ctx, CB_TARGET_OFF);
        self.jump_dispatch(t);
    }

    /// Stores the budget back and returns `status` and r0.
    fn leave(&mut self, status: Value) {
        self.leave_with(status, false);
    }

    /// [`Translator::leave`]; `all`: every register into the context too
    /// (a tail call hands them to its target). r0 is returned.
    fn leave_with(&mut self, status: Value, all: bool) {
        if all {
            for i in 0..11 {
                let v = self.r(i);
                self.b
                    .ins()
                    .store(ctx_flags(), v, self.ctx, REGS_OFF + 8 * i as i32);
            }
        }
        self.store_budget();
        let r0 = self.r(0);
        self.b.ins().return_(&[r0, status]);
    }

    /// Stores the budget back into the context (checked code: verified
    /// code counts nothing and leaves the context's budget as it was).
    fn store_budget(&mut self) {
        if self.checks == Checks::On {
            let bud = self.b.use_var(self.budget);
            self.b.ins().store(ctx_flags(), bud, self.ctx, BUDGET_OFF);
        }
    }

    /// Stops before `pc` for the interpreter to go on: the `live`
    /// registers (the others are never read again) and the budget into the
    /// context, `pc` returned with [`ctx::STATUS_RESUME`].
    fn resume(&mut self, pc: usize, live: u16) {
        // (A frame pointer read from the context is there already.)
        let lazy = self.lazy_fp;
        for i in (0..11).filter(|&i| live & 1 << i != 0 && !(i == 10 && lazy)) {
            let v = self.r(i);
            self.b
                .ins()
                .store(ctx_flags(), v, self.ctx, REGS_OFF + 8 * i as i32);
        }
        let bud = self.b.use_var(self.budget);
        self.b.ins().store(ctx_flags(), bud, self.ctx, BUDGET_OFF);
        let status = self.iconst(ctx::STATUS_RESUME as i64);
        let pcv = self.iconst(pc as i64);
        self.b.ins().return_(&[pcv, status]);
    }

    /// Records a fault in the context (no call-out: the engine turns the
    /// record into the fault after the code returns) and leaves.
    fn fault(&mut self, pc: usize, code: FaultCode, value: Value, len: u64) {
        let pcv = self.iconst(pc as i64);
        let codev = self.iconst(code as i64);
        let lenv = self.iconst(len as i64);
        let fp = self.fp();
        for (i, v) in [pcv, codev, value, lenv, fp].into_iter().enumerate() {
            self.b
                .ins()
                .store(ctx_flags(), v, self.ctx, RECORD_OFF + 8 * i as i32);
        }
        let status = self.iconst(ctx::STATUS_FAULT_RECORD as i64);
        self.b
            .ins()
            .store(ctx_flags(), status, self.ctx, STATUS_OFF);
        // (A budget fault has spent the budget: nothing to give back.)
        if self.checks == Checks::On {
            let bud = if matches!(code, FaultCode::Budget) {
                self.b.use_var(self.budget)
            } else {
                self.budget_at(pc)
            };
            self.b.ins().store(ctx_flags(), bud, self.ctx, BUDGET_OFF);
        }
        self.b.ins().jump(self.fault_exit, &[]);
    }

    /// The address of `base + off`, checked for `len` bytes of `write` (in
    /// checked mode): the current frame and the ones above it inline,
    /// anything else through [`ctx::jit_check`].
    fn address(
        &mut self,
        pc: usize,
        base: Value,
        off: i16,
        len: u64,
        write: bool,
        stack_first: bool,
    ) -> Value {
        let addr = self.b.ins().iadd_imm_s(base, i64::from(off));
        if self.checks == Checks::Off || self.unchecked.contains(&pc) {
            return addr;
        }
        let ok = self.b.create_block();
        // An access a group check covers skips its own checks when the
        // group's held (otherwise it checks as usual).
        let covered = match self.grouped.iter().position(|&(p, _)| p == pc) {
            Some(i) => Some(self.grouped.swap_remove(i).1),
            None if !stack_first => self.group_check(pc, base),
            None => None,
        };
        if let Some(cond) = covered {
            let own = self.b.create_block();
            self.b.ins().brif(cond, ok, &[], own, &[]);
            self.b.switch_to_block(own);
            self.b.seal_block(own);
            self.b.set_cold_block(own);
        }
        let second = self.b.create_block();
        let slow = self.b.create_block();
        // Accesses through r10 are almost always to the stack; others
        // mostly to the region the previous access used.
        let first = if stack_first {
            self.in_stack(addr, len)
        } else {
            self.in_cached_region(addr, len, write)
        };
        self.b.ins().brif(first, ok, &[], second, &[]);
        self.b.switch_to_block(second);
        self.b.seal_block(second);
        // (Out of line: the first test is the one that usually passes.)
        self.b.set_cold_block(second);
        let other = if stack_first {
            self.in_cached_region(addr, len, write)
        } else {
            self.in_stack(addr, len)
        };
        if self.seed_vars.is_some() {
            // The cache in registers stays the run's first region; the one
            // in the context follows the slow checks.
            let third = self.b.create_block();
            self.b.ins().brif(other, ok, &[], third, &[]);
            self.b.switch_to_block(third);
            self.b.seal_block(third);
            self.b.set_cold_block(third);
            let (lo, lim) = self.cached_in_context(write);
            let followed = self.in_region(addr, len, lo, lim);
            self.b.ins().brif(followed, ok, &[], slow, &[]);
        } else {
            self.b.ins().brif(other, ok, &[], slow, &[]);
        }
        self.b.switch_to_block(slow);
        self.b.seal_block(slow);
        self.b.set_cold_block(slow);
        let pcv = self.iconst(pc as i64);
        let la = self.iconst((len | (u64::from(write) << 32)) as i64);
        // Through the trampoline: no register is clobbered (the access goes
        // in the context's record, the context is the one argument, already
        // in its register); the answer is the status (0: allowed).
        let (tramp, sig) = self.check;
        let fp = self.fp();
        self.b.ins().store(ctx_flags(), fp, self.ctx, FP_OFF);
        self.b.ins().store(ctx_flags(), pcv, self.ctx, RECORD_OFF);
        self.b
            .ins()
            .store(ctx_flags(), addr, self.ctx, RECORD_OFF + 16);
        self.b
            .ins()
            .store(ctx_flags(), la, self.ctx, RECORD_OFF + 24);
        self.b.ins().call_indirect(sig, tramp, &[self.ctx]);
        let status = self.b.ins().load(I64, ctx_flags(), self.ctx, STATUS_OFF);
        let allowed = self.b.ins().icmp_imm_s(IntCC::Equal, status, 0);
        // (The check moved the cache to the region it found, if that has
        // at least 8 bytes.)
        let refused = self.b.create_block();
        self.b.ins().brif(allowed, ok, &[], refused, &[]);
        self.b.switch_to_block(refused);
        self.b.seal_block(refused);
        self.b.set_cold_block(refused);
        let bud = self.budget_at(pc);
        self.b.ins().store(ctx_flags(), bud, self.ctx, BUDGET_OFF);
        self.b.ins().jump(self.fault_exit, &[]);
        self.b.switch_to_block(ok);
        self.b.seal_block(ok);
        addr
    }

    /// The memory access of `pc` (a load or store): base register,
    /// offset, length, whether it writes.
    fn access_of(&self, pc: usize) -> Option<(u8, i16, u64, bool)> {
        match self.shape.insns.get(pc).copied().flatten()?.0 {
            Instruction::Load { size, src, off, .. }
            | Instruction::LoadSx { size, src, off, .. } => {
                Some((src.num(), off, size_bytes(size), false))
            }
            Instruction::Store { size, dst, off, .. } => {
                Some((dst.num(), off, size_bytes(size), true))
            }
            _ => None,
        }
    }

    /// For the access at `pc` (through `base`, not r10) that starts a run
    /// of accesses through the same register in its block (the register
    /// unchanged in between, nothing but ALU instructions, loads and
    /// stores among them): one inline test that the region cache covers
    /// all of them (for writing if any writes), whose result each access
    /// tests first. When it fails, every access checks itself as usual,
    /// so faults and their pcs stay the interpreter's.
    fn group_check(&mut self, pc: usize, base: Value) -> Option<Value> {
        let (reg, off0, len0, w0) = self.access_of(pc)?;
        let writes_base = |i: &Instruction| i.dst_written().is_some_and(|r| r.num() == reg);
        // A load into its own base register moves the base: nothing after
        // it shares the test.
        if self.shape.insns[pc].is_some_and(|(i, _)| writes_base(&i)) {
            return None;
        }
        let mut members = Vec::new();
        let (mut lo, mut hi, mut write) = (i64::from(off0), i64::from(off0) + len0 as i64, w0);
        let mut p = pc + 1;
        while p < self.shape.insns.len() && !self.shape.leaders.contains(&p) {
            let Some((insn, class)) = self.shape.insns[p] else {
                break;
            };
            if class != OpClass::Plain {
                break;
            }
            if let Some((r, off, len, w)) = self.access_of(p) {
                if r == reg {
                    members.push(p);
                    lo = lo.min(i64::from(off));
                    hi = hi.max(i64::from(off) + len as i64);
                    write |= w;
                }
            }
            // (A jump ends the block: what follows is a leader.)
            if writes_base(&insn) {
                break;
            }
            p += insn.slots();
        }
        let span = (hi - lo) as u64;
        // (Only accesses within 8 bytes: a wider test costs about what it
        // saves.)
        if members.is_empty() || span > 8 {
            return None;
        }
        let first = self.b.ins().iadd_imm_s(base, lo);
        let cond = self.in_cached_region(first, span, write);
        for m in members {
            self.grouped.push((m, cond));
        }
        Some(cond)
    }

    /// The region cache for reads or writes (`ClosedHead::seed`): the
    /// start of a region of at least 8 bytes and its length minus 7 (an
    /// 8-byte access may start at offsets below it; a `len`-byte one below
    /// it plus `8 - len`). It starts as the engine chose (the first frame,
    /// or the context's region) and follows the slow checks in the
    /// context. Tested first: the run's first region, held in registers
    /// ([`Translator::seed_vars`]) by programs that name few registers,
    /// else the context's cache, read where tested (four registers held
    /// through every loop would spill the program's).
    fn cached(&mut self, write: bool) -> (Value, Value) {
        match self.seed_vars {
            Some(vars) => {
                let at = if write { 2 } else { 0 };
                (self.b.use_var(vars[at]), self.b.use_var(vars[at + 1]))
            }
            None => self.cached_in_context(write),
        }
    }

    /// The region cache as the context holds it (following the slow
    /// checks).
    fn cached_in_context(&mut self, write: bool) -> (Value, Value) {
        let off = SEED_OFF + if write { 16 } else { 0 };
        let lo = self.b.ins().load(I64, ctx_flags(), self.ctx, off);
        let lim = self.b.ins().load(I64, ctx_flags(), self.ctx, off + 8);
        (lo, lim)
    }

    /// Whether `[addr, addr + len)` lies in the current frame or the ones
    /// above it.
    fn in_stack(&mut self, addr: Value, len: u64) -> Value {
        let fp = self.fp();
        let lo = self.b.ins().iadd_imm_s(fp, -(STACK_SIZE as i64));
        let top = match self.stack_top {
            Some(t) => t,
            None => self.b.ins().load(I64, ctx_flags(), self.ctx, STACK_TOP_OFF),
        };
        let span = self.b.ins().isub(top, lo);
        let limit = self.b.ins().iadd_imm_s(span, -(len as i64));
        let off_in = self.b.ins().isub(addr, lo);
        self.b
            .ins()
            .icmp(IntCC::UnsignedLessThanOrEqual, off_in, limit)
    }

    /// Whether `[addr, addr + len)` lies in the region the last slow check
    /// found (for `write`, only if it is writable).
    fn in_cached_region(&mut self, addr: Value, len: u64, write: bool) -> Value {
        let (lo, lim) = self.cached(write);
        let narrow = match (self.narrow_limits, len) {
            (Some(l), 1 | 2 | 4) => l[usize::from(write)][len.trailing_zeros() as usize],
            _ => None,
        };
        match narrow {
            Some(lim) => self.offset_below(addr, lo, lim),
            None => self.in_region(addr, len, lo, lim),
        }
    }

    /// Whether `[addr, addr + len)` lies in the region starting at `lo`
    /// with limit `lim` (its length - 7).
    fn in_region(&mut self, addr: Value, len: u64, lo: Value, lim: Value) -> Value {
        let lim = if len < 8 {
            self.b.ins().iadd_imm_s(lim, 8 - len as i64)
        } else {
            lim
        };
        self.offset_below(addr, lo, lim)
    }

    /// Whether `addr - lo` is below `lim` (unsigned).
    fn offset_below(&mut self, addr: Value, lo: Value, lim: Value) -> Value {
        let off_in = self.b.ins().isub(addr, lo);
        self.b.ins().icmp(IntCC::UnsignedLessThan, off_in, lim)
    }

    /// Charges the block starting at `pc` (checked mode).
    fn charge(&mut self, pc: usize, count: u64) {
        if self.checks == Checks::Off || count == 0 {
            return;
        }
        let budget = self.b.use_var(self.budget);
        if let Some(points) = &self.budget_points {
            // Tested only where the budget must cover the way to the
            // next point; the interpreter takes over when it may not.
            // (A loop copy whose entry proved the budget enough for the
            // whole loop tests nothing at its head.)
            let proven = self.unbudgeted == Some(pc);
            if let Some(&(most, live)) = points.get(&pc).filter(|_| !proven) {
                let short = self
                    .b
                    .ins()
                    .icmp_imm_s(IntCC::UnsignedLessThan, budget, most as i64);
                self.when(short, true, |t| t.resume(pc, live));
            }
            let left = self.b.ins().iadd_imm_s(budget, -(count as i64));
            self.b.def_var(self.budget, left);
            return;
        }
        let short = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedLessThan, budget, count as i64);
        self.when(short, true, |t| {
            // The interpreter spends the whole budget before it stops.
            let zero = t.iconst(0);
            t.b.def_var(t.budget, zero);
            t.fault(pc, FaultCode::Budget, budget, 0);
        });
        let left = self.b.ins().iadd_imm_s(budget, -(count as i64));
        self.b.def_var(self.budget, left);
    }

    fn block_at(&mut self, pc: usize) -> Block {
        match self.blocks.get(pc).copied().flatten() {
            Some(b) => b,
            None => {
                // A jump outside the program: an invalid pc when reached
                // (the block is filled at the end).
                let bad = self.b.create_block();
                self.pending.push(Pending::InvalidPc(bad, pc));
                bad
            }
        }
    }

    /// Number of instructions from leader `pc` to the end of its block.
    /// Instructions of the current block after `pc`: charged on entry,
    /// they do not run when the program leaves at `pc` (a fault, or a
    /// call-out ending the run), so the count the interpreter reports
    /// excludes them. 0 when `pc` is not in the current block.
    fn refund(&self, pc: usize) -> u64 {
        if self.checks == Checks::Off || pc < self.leader {
            return 0;
        }
        let mut done = 0u64;
        let mut p = self.leader;
        while p <= pc {
            match self.shape.insns.get(p) {
                Some(Some((i, class))) => {
                    done += 1;
                    if p < pc && ends_block(i, *class) {
                        return 0;
                    }
                    p += i.slots();
                }
                _ => {
                    done += 1;
                    break;
                }
            }
        }
        if p <= pc {
            return 0;
        }
        self.block_len(self.leader).saturating_sub(done)
    }

    /// The budget variable plus [`Translator::refund`] of `pc`.
    fn budget_at(&mut self, pc: usize) -> Value {
        let bud = self.b.use_var(self.budget);
        match self.refund(pc) {
            0 => bud,
            n => self.b.ins().iadd_imm_s(bud, n as i64),
        }
    }

    fn block_len(&self, pc: usize) -> u64 {
        self.shape.block_len(pc)
    }

    /// Translates the program.
    pub(crate) fn translate(mut self) -> Result<Translated, JitError> {
        let len = self.shape.insns.len();
        self.translate_range(0, len, false)?;
        if self.open {
            let end = self.block_at(len);
            self.b.ins().jump(end, &[]);
        }
        if let Some(end) = self.blocks[len] {
            self.b.switch_to_block(end);
            let zero = self.iconst(0);
            self.fault(len, FaultCode::InvalidPc, zero, 0);
        }
        for i in 0..self.hoisted.len() {
            self.loop_copy(i)?;
        }
        self.fill_pending();
        self.emit_nested_exit();
        self.emit_dispatch();
        self.emit_returns();
        self.fill_pending();
        // Every way here set the status: a fault in the host, or a record.
        // (Cold: laid out after the hot code, not inside a loop.)
        self.b.switch_to_block(self.fault_exit);
        self.b.set_cold_block(self.fault_exit);
        let status = self.b.ins().load(I64, ctx_flags(), self.ctx, STATUS_OFF);
        let zero = self.iconst(0);
        self.b.ins().return_(&[zero, status]);
        self.b.seal_all_blocks();
        Ok(Translated {
            closed: self.closed,
            leaf: self.leaf && self.closed && self.bulk_copies == 0,
            proven_loops: self.hoisted.len(),
            bulk_copies: self.bulk_copies,
        })
    }

    /// Translates the instructions from `from` to `to`: the program, or
    /// (`copy`) a loop's copy whose proven accesses go unchecked. In the
    /// program, the head of a loop in [`Translator::hoisted`] tests the
    /// loop's ranges and enters the copy when they hold; the loop's own
    /// blocks jump back to a head without the test (a block of its own,
    /// the head's until the loop's end).
    fn translate_range(&mut self, from: usize, to: usize, copy: bool) -> Result<(), JitError> {
        let mut pc = from;
        // The loop being translated: head, end, the head's block with the
        // test (what the rest of the program jumps to).
        let mut inside: Option<(usize, usize, Block)> = None;
        while pc < to {
            if let Some((head, end, entry)) = inside {
                if pc >= end {
                    self.blocks[head] = Some(entry);
                    inside = None;
                }
            }
            if let Some(block) = self.blocks[pc] {
                if self.open {
                    self.b.ins().jump(block, &[]);
                }
                self.b.switch_to_block(block);
                self.open = true;
                let hoisted = self.hoisted.binary_search_by_key(&pc, |(l, _)| l.head);
                if let (false, Ok(i)) = (copy, hoisted) {
                    let ok = self.entry_test(i);
                    let fast = self.hoisted[i].1[0].1;
                    let checked = self.b.create_block();
                    // A copy loop whose entry test also proved the budget
                    // copies in bulk on the way into its proven copy.
                    match self.head_most(i).and_then(|_| self.copy_at(pc)) {
                        Some(c) => {
                            let bulk = self.b.create_block();
                            self.b.ins().brif(ok, bulk, &[], checked, &[]);
                            self.b.switch_to_block(bulk);
                            self.bulk_copy(&c);
                            self.b.ins().jump(fast, &[]);
                        }
                        None => {
                            self.b.ins().brif(ok, fast, &[], checked, &[]);
                        }
                    }
                    self.b.switch_to_block(checked);
                    inside = Some((pc, self.hoisted[i].0.end, block));
                    self.blocks[pc] = Some(checked);
                } else if let (false, Checks::Off, Some(c)) = (copy, self.checks, self.copy_at(pc))
                {
                    // Verified code: in bulk where the loop is entered;
                    // its way back goes to the head without it.
                    self.bulk_copy(&c);
                    let round = self.b.create_block();
                    self.b.ins().jump(round, &[]);
                    self.b.switch_to_block(round);
                    inside = Some((pc, c.end, block));
                    self.blocks[pc] = Some(round);
                }
                let n = self.block_len(pc);
                self.leader = pc;
                self.grouped.clear();
                self.charge(pc, n);
            }
            if !self.open {
                // Unreachable code after a terminator, not a leader.
                pc += 1;
                continue;
            }
            let Some((insn, class)) = self.shape.insns[pc] else {
                // Executing the second slot of an lddw.
                let zero = self.iconst(0);
                self.fault(pc, FaultCode::InvalidPc, zero, 0);
                self.open = false;
                pc += 1;
                continue;
            };
            if let Some(chain) = self.shape.chain(pc) {
                match self.shape.lookup(pc, &chain) {
                    Some(l) if self.lookup_fits(&l) => self.lookup_table(pc, &chain, &l)?,
                    _ => self.jump_table(pc, &chain),
                }
                pc += chain.len;
                continue;
            }
            self.instruction(pc, insn, class)?;
            pc += insn.slots();
        }
        if let Some((head, _, entry)) = inside {
            self.blocks[head] = Some(entry);
        }
        Ok(())
    }

    /// The copy of hoisted loop `i` whose proven accesses skip their
    /// checks (entered from the loop's head when its test holds; its
    /// back-edges stay in it, its exits leave to the program).
    fn loop_copy(&mut self, i: usize) -> Result<(), JitError> {
        let (head, end) = (self.hoisted[i].0.head, self.hoisted[i].0.end);
        let saved: Vec<(usize, Option<Block>)> = self.hoisted[i]
            .1
            .iter()
            .map(|&(p, b)| (p, self.blocks[p].replace(b)))
            .collect();
        self.unchecked = self.hoisted[i].0.accesses.clone();
        self.unbudgeted = self.head_most(i).map(|_| head);
        self.open = false;
        let done = self.translate_range(head, end, true);
        self.unbudgeted = None;
        if done.is_ok() && self.open {
            let after = self.block_at(end);
            self.b.ins().jump(after, &[]);
        }
        self.open = false;
        for (p, b) in saved {
            self.blocks[p] = b;
        }
        self.unchecked.clear();
        done
    }

    /// Register `r` as an access's base: r10 is the frame pointer (read
    /// from the context where the code does not keep it).
    fn base(&mut self, r: u8) -> Value {
        if r == 10 {
            self.fp()
        } else {
            self.r(usize::from(r))
        }
    }

    /// The copy loop ([`crate::hoist::copy_loop`]) whose head is `pc`.
    fn copy_at(&self, pc: usize) -> Option<CopyLoop> {
        let i = self.copies.binary_search_by_key(&pc, |c| c.0).ok()?;
        Some(self.copies[i].1)
    }

    /// Where copy loop `c` is entered: all its rounds but the last as one
    /// `memmove` when they copy at least [`BULK_MIN`] bytes and the
    /// destination is at or below the source or past every byte those
    /// rounds read (then no round reads what an earlier one wrote, and a
    /// forward copy is a `memmove`); the induction variable, and in
    /// checked code the budget, as those rounds would leave them. The loop
    /// runs the rest (its last round sets every other register it
    /// writes, none of which a round reads before writing). The rounds'
    /// accesses are proven: by the verifier, or by the entry test of the
    /// loop's checked copy, which also proved the budget enough.
    fn bulk_copy(&mut self, c: &CopyLoop) {
        self.bulk_copies += 1;
        let shift = i64::from(c.size.trailing_zeros());
        let now = self.r(usize::from(c.iv.reg));
        let limit = match c.iv.bound {
            Bound::Imm(n) => self.iconst(n as i64),
            Bound::Reg(q) => self.r(usize::from(q)),
        };
        // The largest value the variable has in a round: the limit, or one
        // below it (an exclusive limit above the variable is not 0).
        let (runs, last) = if c.iv.inclusive {
            let runs = self
                .b
                .ins()
                .icmp(IntCC::UnsignedLessThanOrEqual, now, limit);
            (runs, limit)
        } else {
            let runs = self.b.ins().icmp(IntCC::UnsignedLessThan, now, limit);
            (runs, self.b.ins().iadd_imm_s(limit, -1))
        };
        // Rounds before the last (as many at the head as at the back-edge:
        // a back-edge guard lets the first round run whatever the bound).
        let span = self.b.ins().isub(last, now);
        let rounds = self.b.ins().ushr_imm_s(span, shift);
        let zero = self.iconst(0);
        let rounds = self.b.ins().select(runs, rounds, zero);
        let bytes = self.b.ins().ishl_imm_s(rounds, shift);
        let at = |t: &mut Self, (base, off): (u8, i64)| {
            let b = t.base(base);
            let a = t.b.ins().iadd(b, now);
            t.b.ins().iadd_imm_s(a, off)
        };
        let src = at(self, c.src);
        let dst = at(self, c.dst);
        let behind = self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, dst, src);
        let gap = self.b.ins().isub(dst, src);
        let apart = self
            .b
            .ins()
            .icmp(IntCC::UnsignedGreaterThanOrEqual, gap, bytes);
        let forward = self.b.ins().bor(behind, apart);
        let many = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, bytes, BULK_MIN);
        let go = self.b.ins().band(forward, many);
        let bulk = self.b.create_block();
        let join = self.b.create_block();
        self.b.ins().brif(go, bulk, &[], join, &[]);
        self.b.switch_to_block(bulk);
        self.b.seal_block(bulk);
        let f = self.iconst(jit_bulk_copy as *const () as usize as i64);
        let sig = self.sigs.four;
        self.b
            .ins()
            .call_indirect(sig, f, &[self.ctx, dst, src, bytes]);
        let moved = self.b.ins().iadd(now, bytes);
        self.set_r(usize::from(c.iv.reg), moved);
        if self.checks == Checks::On {
            let budget = self.b.use_var(self.budget);
            let spent = self.b.ins().imul_imm_s(rounds, c.per_round as i64);
            let left = self.b.ins().isub(budget, spent);
            self.b.def_var(self.budget, left);
        }
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
    }

    /// For a counted hoisted loop `i` whose head is a budget point (its
    /// entry test then also proves the budget enough for the whole loop): the
    /// most instructions a run charges from its head to the next point
    /// (below [`MAX_TRIPS`], so the entry test's product cannot wrap).
    fn head_most(&self, i: usize) -> Option<u64> {
        let l = &self.hoisted[i].0;
        let &(most, _) = self.budget_points.as_ref()?.get(&l.head)?;
        (l.iv.is_some_and(|iv| iv.counted) && most < MAX_TRIPS).then_some(most)
    }

    /// Whether every access hoisted loop `i` proves stays in its region
    /// however long the loop runs from here ([`crate::hoist::Group`]):
    /// each group's lowest address (the induction variable as it is now)
    /// to its highest (the variable at its largest at the head), tested
    /// against the region cache (the stack for r10).
    fn entry_test(&mut self, i: usize) -> Value {
        let l = self.hoisted[i].0.clone();
        let mut tests = Vec::new();
        let iv = l.iv.map(|iv| {
            let now = self.r(usize::from(iv.reg));
            let limit = match iv.bound {
                // (The analysis saw that an exclusive bound is not 0.)
                Bound::Imm(n) => self.iconst(n.wrapping_sub(u64::from(!iv.inclusive)) as i64),
                Bound::Reg(q) => {
                    let n = self.r(usize::from(q));
                    if iv.inclusive {
                        n
                    } else {
                        self.b.ins().iadd_imm_s(n, -1)
                    }
                }
            };
            let top = if iv.at_head {
                limit
            } else {
                self.b.ins().umax(now, limit)
            };
            // Small enough that the variable never wraps (known for a
            // constant limit at the head). (Above the limit now, a guard
            // at the head ends the loop before any access; at the
            // back-edge, the top is at least where the variable is.)
            if !(iv.at_head && matches!(iv.bound, Bound::Imm(_))) {
                tests.push(self.b.ins().icmp_imm_s(
                    IntCC::UnsignedLessThan,
                    top,
                    hoist::MAX_LIMIT as i64,
                ));
            }
            // The largest value it takes at the head keeps its value now
            // modulo the stride.
            let top = if iv.stride > 1 {
                let d = self.b.ins().isub(top, now);
                let m = self.b.ins().band_imm_s(d, (iv.stride - 1) as i64);
                self.b.ins().isub(top, m)
            } else {
                top
            };
            (now, top)
        });
        // A counted loop runs its body at most `(top - now) / stride + 1`
        // times; with the way out, each charges at most the head's count
        // (the longest way from the head to the next budget point): a
        // budget of `(top - now) / stride + 2` times that lasts the whole
        // loop, whose copy then tests none.
        if let (Some(most), Some((now, top)), Some(iv)) = (self.head_most(i), iv, l.iv) {
            let d = self.b.ins().isub(top, now);
            let d = self
                .b
                .ins()
                .ushr_imm_s(d, i64::from(iv.stride.trailing_zeros()));
            // (Small enough that the product cannot wrap.)
            tests.push(
                self.b
                    .ins()
                    .icmp_imm_s(IntCC::UnsignedLessThan, d, MAX_TRIPS as i64),
            );
            let trips = self.b.ins().iadd_imm_s(d, 2);
            let need = self.b.ins().imul_imm_s(trips, most as i64);
            let budget = self.b.use_var(self.budget);
            tests.push(
                self.b
                    .ins()
                    .icmp(IntCC::UnsignedLessThanOrEqual, need, budget),
            );
        }
        for g in &l.groups {
            let (lo, size) = if g.base == Some(10) {
                let fp = self.fp();
                let lo = self.b.ins().iadd_imm_s(fp, -(STACK_SIZE as i64));
                let top = match self.stack_top {
                    Some(t) => t,
                    None => self.b.ins().load(I64, ctx_flags(), self.ctx, STACK_TOP_OFF),
                };
                (lo, self.b.ins().isub(top, lo))
            } else {
                let (lo, lim) = self.cached(g.write);
                (lo, self.b.ins().iadd_imm_s(lim, 7))
            };
            let base = g.base.map(|r| self.base(r));
            let at = |t: &mut Self, v: Option<Value>, c: i64| -> Value {
                let from = match (base, v) {
                    (Some(a), Some(b)) => t.b.ins().iadd(a, b),
                    (Some(a), None) | (None, Some(a)) => a,
                    (None, None) => t.iconst(0),
                };
                let from = t.b.ins().isub(from, lo);
                t.b.ins().iadd_imm_s(from, c)
            };
            let (now, top) = match (g.iv, iv) {
                (true, Some((now, top))) => (Some(now), Some(top)),
                _ => (None, None),
            };
            let first = at(self, now, g.lo);
            let last = at(self, top, g.hi);
            tests.push(
                self.b
                    .ins()
                    .icmp(IntCC::UnsignedLessThanOrEqual, first, last),
            );
            tests.push(
                self.b
                    .ins()
                    .icmp(IntCC::UnsignedLessThanOrEqual, last, size),
            );
        }
        let mut ok = match tests.pop() {
            Some(t) => t,
            None => self.b.ins().iconst(I8, 1),
        };
        for t in tests {
            ok = self.b.ins().band(ok, t);
        }
        ok
    }

    /// A block that jumps to `target` (filled after the current block's
    /// terminator, see [`Pending::Edge`]).
    fn edge_to(&mut self, target: Block) -> Block {
        let edge = self.b.create_block();
        self.pending.push(Pending::Edge(edge, target));
        edge
    }

    /// Whether a jump back to leader `t` may run a copy of `t`'s block
    /// instead ([`Translator::rotate`]): a few ALU instructions and a
    /// conditional jump (no chain: neither the block nor its jump may
    /// start one, whose later tests have no blocks of their own).
    fn rotatable(&self, t: usize) -> bool {
        let n = self.block_len(t) as usize;
        if self.blocks.get(t).copied().flatten().is_none()
            || n == 0
            || n > MAX_ROTATED
            || self.shape.chain(t).is_some()
            || self.shape.chain(t + n - 1).is_some()
        {
            return false;
        }
        (t..t + n).all(|p| match self.shape.insns.get(p).copied().flatten() {
            Some((i, OpClass::Plain)) => match i {
                Instruction::Jump { .. } => p == t + n - 1,
                Instruction::Alu { .. } | Instruction::MovSx { .. } | Instruction::Neg { .. } => {
                    p < t + n - 1
                }
                _ => false,
            },
            _ => false,
        })
    }

    /// A jump back to `t` as a copy of `t`'s block (charged as the block
    /// is), whose test branches back into the loop on the opposite
    /// condition: the loop's test at its bottom, one branch per iteration
    /// (as compilers rotate loops) instead of a jump back to the test.
    fn rotate(&mut self, t: usize) -> Result<(), JitError> {
        let n = self.block_len(t) as usize;
        self.leader = t;
        self.grouped.clear();
        self.charge(t, n as u64);
        for p in t..t + n {
            if let Some((insn, class)) = self.shape.insns[p] {
                self.rotating = p == t + n - 1;
                let done = self.instruction(p, insn, class);
                self.rotating = false;
                done?;
            }
        }
        Ok(())
    }

    /// The dynamic jump to a subprogram entry (run_subprogram entries,
    /// callx, bpf_loop callbacks): a jump table over the entries.
    fn emit_dispatch(&mut self) {
        if !self.dispatch_used {
            return;
        }
        self.b.switch_to_block(self.dispatch);
        let pcv = self.b.block_params(self.dispatch)[0];
        let bad = self.b.create_block();
        let len = self.shape.insns.len();
        let table: Vec<_> = (0..len)
            .map(|p| {
                let blk = match self.blocks[p] {
                    Some(b) if self.shape.entries.contains(&p) => b,
                    _ => bad,
                };
                self.b.func.dfg.block_call(blk, &[])
            })
            .collect();
        let def = self.b.func.dfg.block_call(bad, &[]);
        let jt = self.b.create_jump_table(JumpTableData::new(def, &table));
        let idx = self.b.ins().ireduce(I32, pcv);
        let in_range = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedLessThan, pcv, len as i64);
        let go = self.b.create_block();
        self.b.ins().brif(in_range, go, &[], bad, &[]);
        self.b.switch_to_block(go);
        self.b.ins().br_table(idx, jt);
        self.b.switch_to_block(bad);
        self.b.set_cold_block(bad);
        let tagged = self
            .b
            .ins()
            .bor_imm_s(pcv, userbpf_vm::interp::FUNC_ADDR_TAG as i64);
        self.fault(0, FaultCode::BadCallTarget, tagged, 0);
    }

    /// The value a chain tests (its low 32 bits for `jeq32`).
    fn chain_value(&mut self, chain: &Chain) -> Value {
        let v = self.reg(chain.reg);
        if chain.width == Width::W32 {
            let low = self.b.ins().ireduce(I32, v);
            return self.b.ins().uextend(I64, low);
        }
        v
    }

    /// A chain of equality tests at `pc` as one jump table. In checked
    /// mode each way out first charges the tests the interpreter would have
    /// run after the first (which its block already paid for).
    fn jump_table(&mut self, pc: usize, chain: &Chain) {
        let v = self.chain_value(chain);
        let size = chain.size();
        // Way out for a case at chain position `at` (or the fall-through
        // after all `len` tests, position `len - 1`).
        let way = |t: &mut Self, at: usize, dest: usize| -> Block {
            let target = t.block_at(dest);
            if t.checks == Checks::Off || at == 0 {
                return target;
            }
            let block = t.b.create_block();
            t.pending.push(Pending::Charge {
                block,
                pc: pc + 1,
                count: at as u64,
                target,
            });
            block
        };
        let default = way(self, chain.len - 1, pc + chain.len);
        let mut table = Vec::with_capacity(size as usize);
        for value in 0..size {
            let blk = match chain.cases.iter().find(|c| c.0 == value) {
                Some(&(_, at, dest)) => way(self, at, dest),
                None => default,
            };
            table.push(self.b.func.dfg.block_call(blk, &[]));
        }
        let def = self.b.func.dfg.block_call(default, &[]);
        let jt = self.b.create_jump_table(JumpTableData::new(def, &table));
        let in_range = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedLessThan, v, size as i64);
        let go = self.b.create_block();
        self.b.ins().brif(in_range, go, &[], default, &[]);
        self.b.switch_to_block(go);
        self.b.seal_block(go);
        let idx = self.b.ins().ireduce(I32, v);
        self.b.ins().br_table(idx, jt);
        self.open = false;
        self.fill_pending();
    }

    /// Whether a chain's lookup can stand for its ways: verified code, or
    /// checked code that charges the budget without testing it there
    /// (tested only at budget points, none of which is a way's block).
    fn lookup_fits(&self, l: &Lookup) -> bool {
        match (self.checks, &self.budget_points) {
            (Checks::Off, _) => true,
            (Checks::On, Some(points)) => !l.ways.iter().any(|w| points.contains_key(w)),
            (Checks::On, None) => false,
        }
    }

    /// A chain of equality tests at `pc` whose ways all add (or move) a
    /// constant to one register and join ([`Lookup`]): the constant is
    /// loaded from a table indexed by the register. In checked mode the
    /// budget is charged what the interpreter runs on the way (the tests
    /// after the first and the way's block), from a second table.
    fn lookup_table(&mut self, pc: usize, chain: &Chain, l: &Lookup) -> Result<(), JitError> {
        let v = self.chain_value(chain);
        let size = l.ks.len() as i64 - 1;
        let checked = self.checks == Checks::On;
        let mut bytes: Vec<u8> = l.ks.iter().flat_map(|k| k.to_le_bytes()).collect();
        if checked {
            bytes.extend(l.charges.iter().flat_map(|&c| (c as u64).to_le_bytes()));
        }
        // (A loop's copy shares the table.)
        let gv = match self.tables.iter().find(|&&(p, _)| p == pc) {
            Some(&(_, gv)) => gv,
            None => {
                let gv = (self.data)(self.b.func, bytes.into_boxed_slice()).map_err(|message| {
                    JitError::Codegen {
                        program: self.prog.name().to_string(),
                        message: format!("pc {pc}: lookup table: {message}"),
                    }
                })?;
                self.tables.push((pc, gv));
                gv
            }
        };
        let in_range = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, v, size);
        let fall = self.iconst(size);
        let idx = self.b.ins().select(in_range, v, fall);
        let base = self.b.ins().symbol_value(I64, gv);
        let off = self.b.ins().ishl_imm_s(idx, 3);
        let addr = self.b.ins().iadd(base, off);
        let table = MemFlagsData::trusted().with_readonly();
        let k = self.b.ins().load(I64, table, addr, 0);
        let value = if l.add {
            let d = self.reg(l.dst);
            self.b.ins().iadd(d, k)
        } else {
            k
        };
        if checked {
            let charge = self.b.ins().load(I64, table, addr, (size + 1) as i32 * 8);
            let budget = self.b.use_var(self.budget);
            let left = self.b.ins().isub(budget, charge);
            self.b.def_var(self.budget, left);
        }
        self.set(l.dst, value);
        let join = self.block_at(l.join);
        self.b.ins().jump(join, &[]);
        self.open = false;
        self.fill_pending();
        Ok(())
    }

    /// Fills the blocks referred to while the current block was open (call
    /// only between blocks).
    fn fill_pending(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            match p {
                Pending::InvalidPc(block, pc) => {
                    self.b.switch_to_block(block);
                    self.b.set_cold_block(block);
                    let zero = self.iconst(0);
                    self.fault(pc, FaultCode::InvalidPc, zero, 0);
                }
                Pending::Edge(block, target) => {
                    self.b.switch_to_block(block);
                    self.b.ins().jump(target, &[]);
                }
                Pending::Charge {
                    block,
                    pc,
                    count,
                    target,
                } => {
                    self.b.switch_to_block(block);
                    self.charge(pc, count);
                    self.b.ins().jump(target, &[]);
                }
            }
        }
    }

    /// Pushes a call frame returning to `ret_pc` (or faults past the depth
    /// limit); returns the frame's address.
    fn push_frame(&mut self, pc: usize, ret_pc: usize) -> Value {
        let ret_block = self.block_at(ret_pc);
        self.push_frame_to(pc, ret_block)
    }

    /// [`Translator::push_frame`] returning to a given block.
    fn push_frame_to(&mut self, pc: usize, ret_block: Block) -> Value {
        let depth = self.b.use_var(self.depth);
        let too_deep =
            self.b
                .ins()
                .icmp(IntCC::UnsignedGreaterThanOrEqual, depth, self.depth_limit);
        let zero = self.iconst(0);
        self.fault_if(too_deep, pc, FaultCode::CallDepth, zero, 0);
        let frame = self.frame_addr(depth);
        let site = self.ret_sites.len();
        self.ret_sites.push(ret_block);
        let sitev = self.iconst(site as i64);
        self.b.ins().store(ctx_flags(), sitev, frame, F_RET);
        for i in 0..4 {
            let v = self.r(6 + i);
            self.b
                .ins()
                .store(ctx_flags(), v, frame, F_SAVED + 8 * i as i32);
        }
        let fp = self.r(10);
        self.b.ins().store(ctx_flags(), fp, frame, F_FP);
        let none = self.iconst(-1);
        self.b.ins().store(ctx_flags(), none, frame, F_LOOP_CB);
        let new_depth = self.b.ins().iadd_imm_s(depth, 1);
        self.b.def_var(self.depth, new_depth);
        let max = self.b.ins().load(I64, ctx_flags(), self.ctx, MAX_DEPTH_OFF);
        let bigger = self.b.ins().umax(max, new_depth);
        self.b
            .ins()
            .store(ctx_flags(), bigger, self.ctx, MAX_DEPTH_OFF);
        let new_fp = self.b.ins().iadd_imm_s(fp, -(STACK_SIZE as i64));
        self.set_r(10, new_fp);
        frame
    }

    /// Address of frame `depth` (0-based) in the context.
    fn frame_addr(&mut self, depth: Value) -> Value {
        let off = self.b.ins().imul_imm_s(depth, FRAME_SIZE);
        let base = self.b.ins().iadd_imm_s(self.ctx, i64::from(FRAMES_OFF));
        self.b.ins().iadd(base, off)
    }

    /// Jumps to the subprogram at the (dynamic) pc `target`.
    fn jump_dispatch(&mut self, target: Value) {
        self.dispatch_used = true;
        self.b.ins().jump(self.dispatch, &[BlockArg::Value(target)]);
    }

    fn instruction(
        &mut self,
        pc: usize,
        insn: Instruction,
        class: OpClass,
    ) -> Result<(), JitError> {
        match class {
            OpClass::Plain | OpClass::Hole | OpClass::LoadImm(_) => {}
            OpClass::MapLookup(_) if self.inline_array(pc).is_some() => {}
            _ => self.leaf = false,
        }
        match class {
            OpClass::Plain => self.plain(pc, insn),
            OpClass::Hole => Ok(()),
            OpClass::LoadImm(v) => {
                if let Instruction::LoadImm64 { dst, .. } = insn {
                    let c = self.iconst(v as i64);
                    self.set(dst, c);
                }
                Ok(())
            }
            OpClass::Helper(_) => {
                let pcv = self.iconst(pc as i64);
                let args: Vec<Value> = (1..6).map(|i| self.r(i)).collect();
                let mut all = vec![pcv];
                all.extend(args);
                let (f, sig) = (self.callouts.helper, self.sigs.seven);
                let r0 = self.callout(f, sig, &all);
                self.helper_status(pc, r0);
                Ok(())
            }
            OpClass::MapLookup(_) => {
                if let Some((base, stride, entries)) = self.inline_array(pc) {
                    // Verified code on an array map: the value's address
                    // inline (the key is a readable u32, as the verifier
                    // proved), 0 past the last index.
                    let key_ptr = self.r(2);
                    let key = self.b.ins().load(I32, mem_flags(), key_ptr, 0);
                    let key = self.b.ins().uextend(I64, key);
                    let inside =
                        self.b
                            .ins()
                            .icmp_imm_u(IntCC::UnsignedLessThan, key, i64::from(entries));
                    let off = self.b.ins().imul_imm_u(key, stride as i64);
                    let addr = self.b.ins().iadd_imm_u(off, base as i64);
                    let zero = self.iconst(0);
                    let r0 = self.b.ins().select(inside, addr, zero);
                    self.set_r(0, r0);
                    return Ok(());
                }
                let pcv = self.iconst(pc as i64);
                let (m, k) = (self.r(1), self.r(2));
                let (f, sig) = (self.callouts.map_lookup, self.sigs.four);
                let r0 = self.callout(f, sig, &[pcv, m, k]);
                self.check_status(pc, r0);
                self.set_r(0, r0);
                Ok(())
            }
            OpClass::TailCall => {
                self.tail_call(pc);
                Ok(())
            }
            OpClass::Loop => {
                self.bpf_loop(pc);
                Ok(())
            }
            OpClass::Local(t) => {
                self.push_frame(pc, pc + 1);
                let blk = self.block_at(t);
                self.b.ins().jump(blk, &[]);
                self.open = false;
                Ok(())
            }
            OpClass::CallX => {
                if let Instruction::CallX { reg } = insn {
                    self.callx(pc, reg);
                }
                Ok(())
            }
            OpClass::CorePoison => {
                let zero = self.iconst(0);
                self.fault(pc, FaultCode::CorePoison, zero, 0);
                self.open = false;
                Ok(())
            }
        }
    }

    fn tail_call(&mut self, pc: usize) {
        // Not taken: falls through with -ENOENT, as in the kernel's
        // interpreter path.
        let fall = self.b.create_block();
        let depth = self.b.use_var(self.depth);
        self.when(depth, false, |t| t.tail_call_nested(pc, fall));
        let pcv = self.iconst(pc as i64);
        let (m, i) = (self.r(2), self.r(3));
        let (f, sig) = (self.callouts.tail_call, self.sigs.four);
        let taken = self.callout(f, sig, &[pcv, m, i]);
        self.when(taken, false, |t| {
            let st = t.iconst(ctx::STATUS_TAIL_CALL as i64);
            t.leave_with(st, true);
        });
        self.b.ins().jump(fall, &[]);
        self.b.switch_to_block(fall);
        let e = self.iconst(-i64::from(libc::ENOENT));
        self.set_r(0, e);
        let next = self.block_at(pc + 1);
        self.b.ins().jump(next, &[]);
        self.open = false;
    }

    /// A tail call from a subprogram: the target runs in place of this
    /// function, whose exit returns its r0.
    fn tail_call_nested(&mut self, pc: usize, fall: Block) {
        for i in 0..11 {
            let v = self.r(i);
            self.b
                .ins()
                .store(ctx_flags(), v, self.ctx, REGS_OFF + 8 * i as i32);
        }
        let pcv = self.iconst(pc as i64);
        let (m, i) = (self.r(2), self.r(3));
        let depth = self.b.use_var(self.depth);
        let (f, sig) = (self.callouts.tail_call_nested, self.sigs.five);
        // The target spends the same budget: it goes out with the call and
        // comes back with what is left.
        self.store_budget();
        let ret = self.callout(f, sig, &[pcv, m, i, depth]);
        if self.checks == Checks::On {
            let left = self.b.ins().load(I64, ctx_flags(), self.ctx, BUDGET_OFF);
            self.b.def_var(self.budget, left);
        }
        let status = self.b.ins().load(I64, ctx_flags(), self.ctx, STATUS_OFF);
        self.when(status, false, |t| {
            let is_ret =
                t.b.ins()
                    .icmp_imm_s(IntCC::Equal, status, ctx::STATUS_RETURN as i64);
            // Taken: the target's r0 is this function's: exit.
            t.when(is_ret, false, |t| {
                t.set_r(0, ret);
                t.exit();
            });
            t.leave(status);
        });
        self.b.ins().jump(fall, &[]);
    }

    fn callx(&mut self, pc: usize, reg: userbpf_vm::Reg) {
        let v = self.reg(reg);
        let is_func = self.is_func_addr(v);
        // A subprogram: check it is one (before the frame, as the
        // interpreter does), push a frame, dispatch.
        self.when(is_func, false, |t| {
            let v1 = t.reg(reg);
            t.entry_check(pc, v1);
            t.push_frame(pc, pc + 1);
            let not_mask = t.iconst(!userbpf_vm::interp::FUNC_ADDR_MASK as i64);
            let v2 = t.reg(reg);
            let target = t.b.ins().band(v2, not_mask);
            t.jump_dispatch(target);
        });
        // A helper id.
        let slot = self
            .b
            .create_sized_stack_slot(cranelift_codegen::ir::StackSlotData::new(
                cranelift_codegen::ir::StackSlotKind::ExplicitSlot,
                40,
                3,
            ));
        for i in 0..5 {
            let r = self.r(i + 1);
            self.b.ins().stack_store(I64, r, slot, 8 * i as i32);
        }
        let args = self.b.ins().stack_addr(I64, slot, 0);
        let pcv = self.iconst(pc as i64);
        let v3 = self.reg(reg);
        let (f, sig) = (self.callouts.callx_helper, self.sigs.four);
        let r0 = self.callout(f, sig, &[pcv, v3, args]);
        self.helper_status(pc, r0);
        let next = self.block_at(pc + 1);
        self.b.ins().jump(next, &[]);
        self.open = false;
    }

    /// Faults at `pc` with a bad call target unless `tagged` (a
    /// subprogram address) names a subprogram entry of the program
    /// (`PreparedProgram::callback_target`): a forged address of another
    /// pc is refused, as in the interpreter.
    fn entry_check(&mut self, pc: usize, tagged: Value) {
        let not_mask = self.iconst(!userbpf_vm::interp::FUNC_ADDR_MASK as i64);
        let target = self.b.ins().band(tagged, not_mask);
        let entries: Vec<usize> = self.shape.entries.iter().copied().collect();
        let ok = self.b.create_block();
        let bad = self.b.create_block();
        if entries.len() <= 32 {
            let mut any = self.b.ins().iconst(I8, 0);
            for e in entries {
                let is = self.b.ins().icmp_imm_s(IntCC::Equal, target, e as i64);
                any = self.b.ins().bor(any, is);
            }
            self.b.ins().brif(any, ok, &[], bad, &[]);
        } else {
            let len = self.shape.insns.len();
            let table: Vec<_> = (0..len)
                .map(|p| {
                    let blk = if self.shape.entries.contains(&p) {
                        ok
                    } else {
                        bad
                    };
                    self.b.func.dfg.block_call(blk, &[])
                })
                .collect();
            let def = self.b.func.dfg.block_call(bad, &[]);
            let jt = self.b.create_jump_table(JumpTableData::new(def, &table));
            let in_range = self
                .b
                .ins()
                .icmp_imm_s(IntCC::UnsignedLessThan, target, len as i64);
            let go = self.b.create_block();
            self.b.ins().brif(in_range, go, &[], bad, &[]);
            self.b.switch_to_block(go);
            self.b.seal_block(go);
            let idx = self.b.ins().ireduce(I32, target);
            self.b.ins().br_table(idx, jt);
        }
        self.b.switch_to_block(bad);
        self.b.seal_block(bad);
        self.b.set_cold_block(bad);
        self.fault(pc, FaultCode::BadCallTarget, tagged, 0);
        self.b.switch_to_block(ok);
        self.b.seal_block(ok);
    }

    fn bpf_loop(&mut self, pc: usize) {
        // bpf_loop(nr_loops, callback_fn, callback_ctx, flags)
        let n = self.r(1);
        let n = self.b.ins().ireduce(I32, n);
        let n = self.b.ins().uextend(I64, n);
        let flags = self.r(4);
        let next = self.block_at(pc + 1);
        // Refusals and the empty loop return at once (r0 = -EINVAL for
        // flags, -E2BIG past BPF_MAX_LOOPS, 0 for no iteration).
        let done_with = |t: &mut Self, r0: i64| {
            let v = t.iconst(r0);
            t.set_r(0, v);
            t.b.ins().jump(next, &[]);
        };
        self.when(flags, false, |t| done_with(t, -i64::from(libc::EINVAL)));
        let too_many = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedGreaterThan, n, BPF_MAX_LOOPS as i64);
        self.when(too_many, false, |t| done_with(t, -i64::from(libc::E2BIG)));
        let none = self.b.ins().icmp_imm_s(IntCC::Equal, n, 0);
        self.when(none, false, |t| done_with(t, 0));
        // The callback must be a subprogram of this program.
        let cb = self.r(2);
        let is_func = self.is_func_addr(cb);
        let not_func = self.b.ins().icmp_imm_s(IntCC::Equal, is_func, 0);
        self.fault_if(not_func, pc, FaultCode::BadCallTarget, cb, 0);
        self.entry_check(pc, cb);
        let loop_ctx = self.r(3);
        let frame = self.push_frame(pc, pc + 1);
        let not_mask = self.iconst(!userbpf_vm::interp::FUNC_ADDR_MASK as i64);
        let target = self.b.ins().band(cb, not_mask);
        self.b.ins().store(ctx_flags(), target, frame, F_LOOP_CB);
        let zero = self.iconst(0);
        self.b.ins().store(ctx_flags(), zero, frame, F_LOOP_I);
        self.b.ins().store(ctx_flags(), n, frame, F_LOOP_N);
        self.b.ins().store(ctx_flags(), loop_ctx, frame, F_LOOP_CTX);
        self.set_r(1, zero);
        self.set_r(2, loop_ctx);
        self.set_r(3, zero);
        self.set_r(4, zero);
        self.set_r(5, zero);
        self.jump_dispatch(target);
        self.open = false;
    }

    fn exit(&mut self) {
        if !self.may_nest {
            // No calls: every exit ends the run.
            let ok = self.iconst(ctx::STATUS_OK as i64);
            self.leave(ok);
            self.open = false;
            return;
        }
        let depth = self.b.use_var(self.depth);
        let top = self.b.create_block();
        let nested = self.nested_exit;
        self.b.ins().brif(depth, nested, &[], top, &[]);
        self.b.switch_to_block(top);
        self.b.seal_block(top);
        let ok = self.iconst(ctx::STATUS_OK as i64);
        self.leave(ok);
        self.open = false;
    }

    /// The return from a subprogram frame, shared by every `exit`: the
    /// next `bpf_loop` iteration or helper callback, or a jump back to the
    /// caller's return site.
    fn emit_nested_exit(&mut self) {
        if !self.may_nest {
            return;
        }
        self.b.switch_to_block(self.nested_exit);
        let depth = self.b.use_var(self.depth);
        let d1 = self.b.ins().iadd_imm_s(depth, -1);
        let frame = self.frame_addr(d1);
        // A bpf_loop frame: the next iteration, or the loop's result.
        let cb = self.b.ins().load(I64, ctx_flags(), frame, F_LOOP_CB);
        let is_plain = self
            .b
            .ins()
            .icmp_imm_s(IntCC::Equal, cb, ctx::FRAME_PLAIN as i64);
        let special = self.b.create_block();
        let pop = self.b.create_block();
        self.b.ins().brif(is_plain, pop, &[], special, &[]);
        self.b.switch_to_block(special);
        self.b.seal_block(special);
        let is_driven = self
            .b
            .ins()
            .icmp_imm_s(IntCC::Equal, cb, ctx::FRAME_DRIVEN as i64);
        let driven = self.b.create_block();
        let looping = self.b.create_block();
        self.b.ins().brif(is_driven, driven, &[], looping, &[]);
        // A helper's callback returned: call it again, or the helper's
        // result.
        self.b.switch_to_block(driven);
        self.b.seal_block(driven);
        let call_pc = self.b.ins().load(I64, ctx_flags(), frame, F_LOOP_I);
        let r0 = self.r(0);
        let fp_now = self.r(10);
        self.b.ins().store(ctx_flags(), fp_now, self.ctx, FP_OFF);
        let call = self.b.ins().call_indirect(
            self.sigs.three,
            self.callouts.drive,
            &[self.ctx, call_pc, r0],
        );
        let ret = self.b.inst_results(call)[0];
        self.callback_status(ret, None, |t| {
            let ffp = t.b.ins().load(I64, ctx_flags(), frame, F_FP);
            let cfp = t.b.ins().iadd_imm_s(ffp, -(STACK_SIZE as i64));
            t.set_r(10, cfp);
            t.enter_callback();
        });
        self.b.ins().jump(pop, &[]);
        self.b.switch_to_block(looping);
        self.b.seal_block(looping);
        let i = self.b.ins().load(I64, ctx_flags(), frame, F_LOOP_I);
        let n = self.b.ins().load(I64, ctx_flags(), frame, F_LOOP_N);
        let next = self.b.ins().iadd_imm_s(i, 1);
        let r0 = self.r(0);
        let r0_zero = self.b.ins().icmp_imm_s(IntCC::Equal, r0, 0);
        let more = self.b.ins().icmp(IntCC::UnsignedLessThan, next, n);
        let again = self.b.ins().band(r0_zero, more);
        let iterate = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().brif(again, iterate, &[], done, &[]);
        self.b.switch_to_block(iterate);
        self.b.seal_block(iterate);
        self.b.ins().store(ctx_flags(), next, frame, F_LOOP_I);
        let lctx = self.b.ins().load(I64, ctx_flags(), frame, F_LOOP_CTX);
        let zero = self.iconst(0);
        self.set_r(1, next);
        self.set_r(2, lctx);
        self.set_r(3, zero);
        self.set_r(4, zero);
        self.set_r(5, zero);
        let ffp = self.b.ins().load(I64, ctx_flags(), frame, F_FP);
        let cfp = self.b.ins().iadd_imm_s(ffp, -(STACK_SIZE as i64));
        self.set_r(10, cfp);
        self.jump_dispatch(cb);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
        // bpf_loop returns the number of iterations.
        let r0 = self.r(0);
        let stopped = self.b.ins().icmp_imm_s(IntCC::NotEqual, r0, 0);
        let result = self.b.ins().select(stopped, next, n);
        self.set_r(0, result);
        self.b.ins().jump(pop, &[]);
        self.b.switch_to_block(pop);
        self.b.seal_block(pop);
        self.b.def_var(self.depth, d1);
        for k in 0..4 {
            let v = self
                .b
                .ins()
                .load(I64, ctx_flags(), frame, F_SAVED + 8 * k as i32);
            self.set_r(6 + k, v);
        }
        let ffp = self.b.ins().load(I64, ctx_flags(), frame, F_FP);
        self.set_r(10, ffp);
        let site = self.b.ins().load(I64, ctx_flags(), frame, F_RET);
        self.b.ins().jump(self.ret_block, &[BlockArg::Value(site)]);
        self.open = false;
    }

    /// The return block: a jump table over every call's return site.
    fn emit_returns(&mut self) {
        if self.ret_sites.is_empty() {
            return;
        }
        self.b.switch_to_block(self.ret_block);
        let site = self.b.block_params(self.ret_block)[0];
        let bad = self.b.create_block();
        let table: Vec<_> = self
            .ret_sites
            .clone()
            .into_iter()
            .map(|blk| self.b.func.dfg.block_call(blk, &[]))
            .collect();
        let def = self.b.func.dfg.block_call(bad, &[]);
        let jt = self.b.create_jump_table(JumpTableData::new(def, &table));
        let idx = self.b.ins().ireduce(I32, site);
        self.b.ins().br_table(idx, jt);
        self.b.switch_to_block(bad);
        self.b.set_cold_block(bad);
        let zero = self.iconst(0);
        self.fault(0, FaultCode::InvalidPc, zero, 0);
    }

    fn plain(&mut self, pc: usize, insn: Instruction) -> Result<(), JitError> {
        match insn {
            Instruction::Alu {
                width,
                op,
                dst,
                src,
            } => self.alu(width, op, dst, src),
            Instruction::MovSx {
                width,
                dst,
                src,
                bits,
            } => {
                let s = self.reg(src);
                let ty = match bits {
                    8 => I8,
                    16 => I16,
                    _ => I32,
                };
                let narrow = self.b.ins().ireduce(ty, s);
                let v = match width {
                    Width::W64 => self.b.ins().sextend(I64, narrow),
                    Width::W32 => {
                        let w = self.b.ins().sextend(I32, narrow);
                        self.b.ins().uextend(I64, w)
                    }
                };
                self.set(dst, v);
            }
            Instruction::Neg { width, dst } => {
                let d = self.reg(dst);
                let v = match width {
                    Width::W64 => self.b.ins().ineg(d),
                    Width::W32 => {
                        let n = self.b.ins().ireduce(I32, d);
                        let n = self.b.ins().ineg(n);
                        self.b.ins().uextend(I64, n)
                    }
                };
                self.set(dst, v);
            }
            Instruction::Endian { op, dst, bits } => {
                let d = self.reg(dst);
                let ty = match bits {
                    16 => I16,
                    32 => I32,
                    _ => I64,
                };
                let v = match op {
                    EndianOp::ToLe => {
                        if ty == I64 {
                            d
                        } else {
                            let n = self.b.ins().ireduce(ty, d);
                            self.b.ins().uextend(I64, n)
                        }
                    }
                    EndianOp::ToBe | EndianOp::Swap => {
                        if ty == I64 {
                            self.b.ins().bswap(d)
                        } else {
                            let n = self.b.ins().ireduce(ty, d);
                            let n = self.b.ins().bswap(n);
                            self.b.ins().uextend(I64, n)
                        }
                    }
                };
                self.set(dst, v);
            }
            Instruction::Load {
                size,
                dst,
                src,
                off,
            }
            | Instruction::LoadSx {
                size,
                dst,
                src,
                off,
            } => {
                let signed = matches!(insn, Instruction::LoadSx { .. });
                let base = self.reg(src);
                let a = self.address(pc, base, off, size_bytes(size), false, src.num() == 10);
                let f = mem_flags();
                let v = match (size, signed) {
                    (MemSize::B, false) => self.b.ins().uload8(I64, f, a, 0),
                    (MemSize::H, false) => self.b.ins().uload16(I64, f, a, 0),
                    (MemSize::W, false) => self.b.ins().uload32(f, a, 0),
                    (MemSize::B, true) => self.b.ins().sload8(I64, f, a, 0),
                    (MemSize::H, true) => self.b.ins().sload16(I64, f, a, 0),
                    (MemSize::W, true) => self.b.ins().sload32(f, a, 0),
                    (MemSize::DW, _) => self.b.ins().load(I64, f, a, 0),
                };
                self.set(dst, v);
            }
            Instruction::Store {
                size,
                dst,
                off,
                src,
            } => {
                let v = match src {
                    Source::Reg(r) => self.reg(r),
                    Source::Imm(i) => self.iconst(i64::from(i)),
                };
                let base = self.reg(dst);
                let a = self.address(pc, base, off, size_bytes(size), true, dst.num() == 10);
                match size {
                    MemSize::B => self.b.ins().istore8(mem_flags(), v, a, 0),
                    MemSize::H => self.b.ins().istore16(mem_flags(), v, a, 0),
                    MemSize::W => self.b.ins().istore32(mem_flags(), v, a, 0),
                    MemSize::DW => self.b.ins().store(mem_flags(), v, a, 0),
                };
            }
            Instruction::Atomic {
                size,
                op,
                fetch,
                dst,
                src,
                off,
            } => self.atomic(pc, size, op, fetch, dst, src, off),
            Instruction::LoadPacket { size, mode, imm } => {
                let base = match mode {
                    PacketMode::Abs => self.iconst(0),
                    PacketMode::Ind(r) => self.reg(r),
                };
                let off = self.b.ins().iadd_imm_s(base, i64::from(imm));
                let pcv = self.iconst(pc as i64);
                let sz = self.iconst(size_bytes(size) as i64);
                let (f, sig) = (self.callouts.packet_load, self.sigs.four);
                let v = self.callout(f, sig, &[pcv, off, sz]);
                // Outside the packet: the function returns 0 (the kernel's
                // `gen_ld_abs` exits), a subprogram to its caller.
                let status = self.b.ins().load(I64, ctx_flags(), self.ctx, STATUS_OFF);
                let outside =
                    self.b
                        .ins()
                        .icmp_imm_s(IntCC::Equal, status, ctx::STATUS_EXIT as i64);
                self.when(outside, false, |t| {
                    let ok = t.iconst(ctx::STATUS_OK as i64);
                    t.b.ins().store(ctx_flags(), ok, t.ctx, STATUS_OFF);
                    let zero = t.iconst(0);
                    t.set_r(0, zero);
                    t.exit();
                });
                // (`exit` closed its own block, not this one.)
                self.open = true;
                self.check_status(pc, v);
                self.set_r(0, v);
            }
            Instruction::Ja { .. } | Instruction::JaLong { .. } => {
                let t = target(pc, insn.jump_offset().unwrap_or(0));
                if t <= pc && self.rotatable(t) {
                    self.rotate(t)?;
                } else {
                    let t = self.block_at(t);
                    self.b.ins().jump(t, &[]);
                }
                self.open = false;
            }
            Instruction::Jump {
                width,
                cond,
                dst,
                src,
                off,
            } => {
                let mut a = self.reg(dst);
                let mut b = match src {
                    Source::Reg(r) => self.reg(r),
                    Source::Imm(i) => self.iconst(i64::from(i)),
                };
                if width == Width::W32 {
                    a = self.b.ins().ireduce(I32, a);
                    b = self.b.ins().ireduce(I32, b);
                }
                let cc = match cond {
                    JmpCond::Eq => IntCC::Equal,
                    // (`&` then `!= 0`.)
                    JmpCond::Ne | JmpCond::Set => IntCC::NotEqual,
                    JmpCond::Gt => IntCC::UnsignedGreaterThan,
                    JmpCond::Ge => IntCC::UnsignedGreaterThanOrEqual,
                    JmpCond::Lt => IntCC::UnsignedLessThan,
                    JmpCond::Le => IntCC::UnsignedLessThanOrEqual,
                    JmpCond::SGt => IntCC::SignedGreaterThan,
                    JmpCond::SGe => IntCC::SignedGreaterThanOrEqual,
                    JmpCond::SLt => IntCC::SignedLessThan,
                    JmpCond::SLe => IntCC::SignedLessThanOrEqual,
                };
                if cond == JmpCond::Set {
                    let ty = if width == Width::W32 { I32 } else { I64 };
                    a = self.b.ins().band(a, b);
                    b = self.b.ins().iconst(ty, 0);
                }
                // (A rotated loop's test branches back on the opposite
                // condition: see `rotate`.)
                let cc = if self.rotating { cc.complement() } else { cc };
                let c = self.b.ins().icmp(cc, a, b);
                let to = target(pc, i64::from(off));
                let mut taken = self.block_at(to);
                let fall = self.block_at(pc + 1);
                // Checked code that charges the budget by block passes the
                // budget a forward jump takes on an edge of its own: the
                // value a way out of a loop takes is then computed on that
                // way only (as an argument of the branch itself it would be
                // computed before it, on every iteration).
                let edges = self.checks == Checks::On
                    && self.budget_points.is_some()
                    && to > pc
                    && !self.rotating;
                if edges {
                    taken = self.edge_to(taken);
                }
                if self.rotating {
                    self.b.ins().brif(c, fall, &[], taken, &[]);
                } else {
                    self.b.ins().brif(c, taken, &[], fall, &[]);
                }
                if edges {
                    self.fill_pending();
                }
                self.open = false;
            }
            Instruction::Exit => self.exit(),
            Instruction::LoadImm64 { .. } | Instruction::Call(_) | Instruction::CallX { .. } => {
                return Err(JitError::Unsupported {
                    program: self.prog.name().to_string(),
                    pc,
                    what: format!("{insn:?} without its lowering"),
                });
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn atomic(
        &mut self,
        pc: usize,
        size: MemSize,
        op: AtomicOp,
        fetch: bool,
        dst: userbpf_vm::Reg,
        src: userbpf_vm::Reg,
        off: i16,
    ) {
        let len = size_bytes(size);
        let ty = size_type(size);
        let base = self.reg(dst);
        let a = self.address(pc, base, off, len, true, dst.num() == 10);
        if self.checks == Checks::On {
            let low = self.b.ins().band_imm_s(a, (len - 1) as i64);
            self.fault_if(low, pc, FaultCode::Misaligned, a, len);
        }
        let flags = MemFlagsData::trusted();
        let s = self.reg(src);
        let v = if ty == I64 {
            s
        } else {
            self.b.ins().ireduce(ty, s)
        };
        let rmw = match op {
            AtomicOp::Add => Some(AtomicRmwOp::Add),
            AtomicOp::Or => Some(AtomicRmwOp::Or),
            AtomicOp::And => Some(AtomicRmwOp::And),
            AtomicOp::Xor => Some(AtomicRmwOp::Xor),
            AtomicOp::Xchg => Some(AtomicRmwOp::Xchg),
            AtomicOp::CmpXchg => None,
        };
        let widen = |t: &mut Self, x: Value| {
            if ty == I64 {
                x
            } else {
                t.b.ins().uextend(I64, x)
            }
        };
        match rmw {
            Some(r) => {
                let old = self.b.ins().atomic_rmw(ty, flags, r, a, v);
                if fetch || op.always_fetches() {
                    let w = widen(self, old);
                    self.set(src, w);
                }
            }
            None => {
                let r0 = self.r(0);
                let expected = if ty == I64 {
                    r0
                } else {
                    self.b.ins().ireduce(ty, r0)
                };
                let old = self.b.ins().atomic_cas(flags, a, expected, v);
                let w = widen(self, old);
                self.set_r(0, w);
            }
        }
    }

    fn alu(&mut self, width: Width, op: AluOp, dst: userbpf_vm::Reg, src: Source) {
        let (ty, narrow) = match width {
            Width::W64 => (I64, false),
            Width::W32 => (I32, true),
        };
        let imm = match src {
            Source::Imm(i) => Some(i64::from(i)),
            Source::Reg(_) => None,
        };
        let s64 = match src {
            Source::Reg(r) => self.reg(r),
            Source::Imm(i) => self.iconst(i64::from(i)),
        };
        if op == AluOp::Mov {
            // (The old value is not read: reading it would keep the
            // register alive, a dead value carried around every loop.)
            let v = if narrow {
                let s = self.b.ins().ireduce(I32, s64);
                self.b.ins().uextend(I64, s)
            } else {
                s64
            };
            self.set(dst, v);
            return;
        }
        let d64 = self.reg(dst);
        let (d, s) = if narrow {
            (
                self.b.ins().ireduce(I32, d64),
                self.b.ins().ireduce(I32, s64),
            )
        } else {
            (d64, s64)
        };
        let v = match op {
            AluOp::Add => self.b.ins().iadd(d, s),
            AluOp::Sub => self.b.ins().isub(d, s),
            AluOp::Mul => match imm.and_then(shift_add) {
                // By 2^k + 1 or 2^k - 1: a shift and an add or subtract,
                // a cycle shorter than a multiply in a chain (Cranelift
                // keeps the multiply).
                Some((k, plus)) => {
                    let t = self.b.ins().ishl_imm_s(d, i64::from(k));
                    if plus {
                        self.b.ins().iadd(t, d)
                    } else {
                        self.b.ins().isub(t, d)
                    }
                }
                None => self.b.ins().imul(d, s),
            },
            AluOp::Or => self.b.ins().bor(d, s),
            AluOp::And => self.b.ins().band(d, s),
            AluOp::Xor => self.b.ins().bxor(d, s),
            AluOp::Lsh => self.b.ins().ishl(d, s),
            AluOp::Rsh => self.b.ins().ushr(d, s),
            AluOp::Arsh => self.b.ins().sshr(d, s),
            AluOp::Mov => s,
            AluOp::Div => self.udiv(ty, d, s, imm, false),
            AluOp::Mod => self.udiv(ty, d, s, imm, true),
            AluOp::SDiv => self.sdiv(ty, d, s, imm, false),
            AluOp::SMod => self.sdiv(ty, d, s, imm, true),
        };
        let v = if narrow {
            self.b.ins().uextend(I64, v)
        } else {
            v
        };
        self.set(dst, v);
    }

    /// Unsigned division or modulo: x / 0 = 0, x % 0 = x.
    fn udiv(&mut self, ty: Type, d: Value, s: Value, imm: Option<i64>, rem: bool) -> Value {
        if let Some(i) = imm {
            let k = if ty == I32 { i64::from(i as u32) } else { i };
            if k == 0 {
                return if rem { d } else { self.b.ins().iconst(ty, 0) };
            }
            let c = self.b.ins().iconst(ty, k);
            return if rem {
                self.b.ins().urem(d, c)
            } else {
                self.b.ins().udiv(d, c)
            };
        }
        let zero = self.b.ins().icmp_imm_s(IntCC::Equal, s, 0);
        let one = self.b.ins().iconst(ty, 1);
        let safe = self.b.ins().select(zero, one, s);
        let r = self.divide(ty, d, safe, rem, false);
        if rem {
            self.b.ins().select(zero, d, r)
        } else {
            let z = self.b.ins().iconst(ty, 0);
            self.b.ins().select(zero, z, r)
        }
    }

    /// `d / s` or `d % s` for a divisor that is neither 0 nor (signed) -1.
    /// A 64-bit one takes a 32-bit divide when both operands fit in 32
    /// bits (as compilers do for x86: the 64-bit divide is the slower one,
    /// and small operands are the common case); for signed operands that
    /// also means both are non-negative, where the unsigned divide agrees.
    fn divide(&mut self, ty: Type, d: Value, s: Value, rem: bool, signed: bool) -> Value {
        let wide = |b: &mut FunctionBuilder<'_>, d: Value, s: Value| match (signed, rem) {
            (false, false) => b.ins().udiv(d, s),
            (false, true) => b.ins().urem(d, s),
            (true, false) => b.ins().sdiv(d, s),
            (true, true) => b.ins().srem(d, s),
        };
        if ty != I64 {
            return wide(self.b, d, s);
        }
        let both = self.b.ins().bor(d, s);
        let high = self.b.ins().ushr_imm_s(both, 32);
        let narrow = self.b.create_block();
        let full = self.b.create_block();
        let join = self.b.create_block();
        self.b.append_block_param(join, I64);
        self.b.ins().brif(high, full, &[], narrow, &[]);
        self.b.switch_to_block(narrow);
        self.b.seal_block(narrow);
        let (d32, s32) = (self.b.ins().ireduce(I32, d), self.b.ins().ireduce(I32, s));
        let r32 = if rem {
            self.b.ins().urem(d32, s32)
        } else {
            self.b.ins().udiv(d32, s32)
        };
        let r = self.b.ins().uextend(I64, r32);
        self.b.ins().jump(join, &[BlockArg::Value(r)]);
        self.b.switch_to_block(full);
        self.b.seal_block(full);
        let r = wide(self.b, d, s);
        self.b.ins().jump(join, &[BlockArg::Value(r)]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        self.b.block_params(join)[0]
    }

    /// Signed division or modulo: x / 0 = 0, x % 0 = x, INT_MIN / -1 =
    /// INT_MIN, INT_MIN % -1 = 0.
    fn sdiv(&mut self, ty: Type, d: Value, s: Value, imm: Option<i64>, rem: bool) -> Value {
        if let Some(i) = imm {
            let k = if ty == I32 { i64::from(i as i32) } else { i };
            match k {
                0 => return if rem { d } else { self.b.ins().iconst(ty, 0) },
                -1 => {
                    return if rem {
                        self.b.ins().iconst(ty, 0)
                    } else {
                        self.b.ins().ineg(d)
                    }
                }
                _ => {
                    let c = self.b.ins().iconst(ty, k);
                    return if rem {
                        self.b.ins().srem(d, c)
                    } else {
                        self.b.ins().sdiv(d, c)
                    };
                }
            }
        }
        let zero = self.b.ins().icmp_imm_s(IntCC::Equal, s, 0);
        let m1 = self.b.ins().icmp_imm_s(IntCC::Equal, s, -1);
        let special = self.b.ins().bor(zero, m1);
        let one = self.b.ins().iconst(ty, 1);
        let safe = self.b.ins().select(special, one, s);
        if rem {
            let r = self.divide(ty, d, safe, true, true);
            let z = self.b.ins().iconst(ty, 0);
            let r = self.b.ins().select(m1, z, r);
            self.b.ins().select(zero, d, r)
        } else {
            let q = self.divide(ty, d, safe, false, true);
            let neg = self.b.ins().ineg(d);
            let q = self.b.ins().select(m1, neg, q);
            let z = self.b.ins().iconst(ty, 0);
            self.b.ins().select(zero, z, q)
        }
    }
}
