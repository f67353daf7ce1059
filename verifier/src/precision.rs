//! Which scalar values matter: a scalar whose value can never reach a
//! branch condition, a pointer's offset, a memory access, a helper's
//! arguments or a callback's return value (directly or through copies,
//! arithmetic and stack spills) cannot change what the program may do, so
//! two states that differ only in such values are equivalent for pruning.
//! The kernel finds these by backtracking from each precise use
//! (`mark_chain_precision`); here a backward analysis over registers and
//! fixed stack slots computes them ahead of the search. Locations it cannot
//! pin down (stack accesses through a pointer of unknown offset, stack
//! slots a callee or a callback may read) are kept precise.
//!
//! A caller's stack matters whole while a function runs that may read it
//! where the value read matters ([`Precision::reads_callers_stack`]): a
//! forward analysis finds the registers that may point into a stack
//! (copies of `r10`, arguments that callers passed such a pointer in, and
//! what is loaded through one), and a function that reads through such a
//! pointer of unknown frame into a value that matters, hands one to a
//! helper, or calls a function that does, is one. Any other function only
//! writes what its callers pass it (`bpf_usdt_arg(ctx, n, &res)`), and
//! its callers' stacks matter as they do after the call returns.

use userbpf_vm::isa::{
    AluOp, AtomicOp, CallTarget, Instruction, Lddw, MemSize, PacketMode, Source,
};

use crate::cfg::{function_target, Cfg};
use crate::liveness::{bit, RegMask};

/// Bit `i` set: stack slot `i` (bytes `-(8 * (i + 1))..-(8 * i)` from the
/// frame pointer) holds a value that matters.
pub type SlotMask = u64;

/// Registers and stack slots whose values matter, before an instruction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Precise {
    /// Registers.
    pub regs: RegMask,
    /// Stack slots of the current frame.
    pub stack: SlotMask,
}

const ALL_STACK: SlotMask = u64::MAX;

/// `r1..r5`.
const ARGS: RegMask = 0b11_1110;

/// The result of the analysis.
#[derive(Clone, Debug, Default)]
pub struct Precision {
    /// Before each pc: the registers and stack slots whose values matter.
    pub at: Vec<Precise>,
    /// The first pcs (sorted) of the functions that may read a caller's
    /// stack where the value read matters, themselves or through the
    /// functions they call or hand to helpers: while one of them runs,
    /// its callers' stacks matter whole.
    pub reads_callers_stack: Vec<usize>,
}

/// Registers, and stack slots of the current frame, that may hold a
/// pointer into a stack (this frame's or a caller's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct StackPointers {
    regs: RegMask,
    stack: SlotMask,
}

fn slot_bit(off: i64) -> SlotMask {
    // off in [-512, -1].
    if !(-512..0).contains(&off) {
        return 0;
    }
    let idx = (off.unsigned_abs().wrapping_sub(1)) / 8;
    1u64.checked_shl(u32::try_from(idx).unwrap_or(64))
        .unwrap_or(0)
}

/// Known frame-pointer offsets of registers before an instruction
/// (`None`: not a known `r10 + c`).
type FpRegs = [Option<i64>; 11];

/// Forward: which registers hold `r10 + c` before each instruction.
fn frame_pointers(cfg: &Cfg, starts: &[usize]) -> Vec<Option<FpRegs>> {
    let mut entry: FpRegs = [None; 11];
    entry[10] = Some(0);
    cfg.forward(
        starts.iter().map(|&s| (s, entry)),
        |mut a: FpRegs, b| {
            for (x, y) in a.iter_mut().zip(b.iter()) {
                if *x != *y {
                    *x = None;
                }
            }
            a
        },
        |_, i, regs| {
            let mut out = regs;
            match *i {
                Instruction::Alu { op, dst, src, .. } => {
                    let d = usize::from(dst.num());
                    out[d] = match (op, src, regs[d]) {
                        (AluOp::Mov, Source::Reg(s), _) if i_is_64(i) => regs[usize::from(s.num())],
                        (AluOp::Add, Source::Imm(c), Some(o)) if i_is_64(i) => {
                            o.checked_add(i64::from(c))
                        }
                        (AluOp::Sub, Source::Imm(c), Some(o)) if i_is_64(i) => {
                            o.checked_sub(i64::from(c))
                        }
                        _ => None,
                    };
                }
                Instruction::Call(_)
                | Instruction::CallX { .. }
                | Instruction::LoadPacket { .. } => {
                    for r in out.iter_mut().take(6) {
                        *r = None;
                    }
                }
                _ => {
                    if let Some(d) = def(i) {
                        out[usize::from(d)] = None;
                    }
                }
            }
            out
        },
    )
}

fn i_is_64(i: &Instruction) -> bool {
    matches!(
        i,
        Instruction::Alu {
            width: userbpf_vm::isa::Width::W64,
            ..
        }
    )
}

/// The register an instruction writes (besides calls).
fn def(i: &Instruction) -> Option<u8> {
    use Instruction as I;
    match i {
        I::Alu { dst, .. }
        | I::MovSx { dst, .. }
        | I::Neg { dst, .. }
        | I::Endian { dst, .. }
        | I::Load { dst, .. }
        | I::LoadSx { dst, .. }
        | I::LoadImm64 { dst, .. } => Some(dst.num()),
        I::Atomic { op, fetch, src, .. } => {
            if *op == AtomicOp::CmpXchg {
                Some(0)
            } else if *fetch {
                Some(src.num())
            } else {
                None
            }
        }
        _ => None,
    }
}

/// For each pc, the registers and stack slots whose values matter before
/// it, and the functions whose callers' stacks matter whole while they
/// run.
pub fn precise(cfg: &Cfg) -> Precision {
    let len = cfg.len();
    let starts = cfg.function_starts();
    let fp = frame_pointers(cfg, &starts);
    let main_end = starts.get(1).copied().unwrap_or(len);
    let pointers = stack_pointers(cfg, &starts, &fp);
    let run = |reads: &[bool]| {
        cfg.backward(
            |a: Precise, b| Precise {
                regs: a.regs | b.regs,
                stack: a.stack | b.stack,
            },
            |pc, i, out| {
                // Whether a local call's callee may read this frame's stack
                // where it matters.
                let callee_reads = function_target(pc, i)
                    .and_then(|t| starts.binary_search(&t).ok())
                    .is_none_or(|k| reads.get(k).copied().unwrap_or(true));
                let stack_regs = pointers[pc].map_or(u16::MAX, |p| p.regs);
                transfer(
                    i,
                    out,
                    fp[pc].as_ref(),
                    pc < main_end,
                    callee_reads,
                    stack_regs,
                )
            },
        )
    };
    // Every callee reading its callers' stacks (sound for any function),
    // to find those that do not.
    let conservative = run(&vec![true; starts.len()]);
    let reads = callers_stack_readers(cfg, &starts, &fp, &pointers, &conservative);
    // Again only where a called function turned out not to read (the
    // entry function is never called).
    let at = if reads.iter().skip(1).all(|&r| r) {
        conservative
    } else {
        run(&reads)
    };
    Precision {
        at,
        reads_callers_stack: starts
            .iter()
            .zip(&reads)
            .filter(|(_, r)| **r)
            .map(|(s, _)| *s)
            .collect(),
    }
}

/// Before each pc (`None`: unreachable from its function's start), the
/// registers and slots that may hold a stack pointer. A function's
/// arguments may if a call of it passes one; a callback's (a function
/// whose address is taken) and every function's under `callx` may.
fn stack_pointers(
    cfg: &Cfg,
    starts: &[usize],
    fp: &[Option<FpRegs>],
) -> Vec<Option<StackPointers>> {
    let mut entry: Vec<RegMask> = vec![0; starts.len()];
    let index = |pc: usize, i: &Instruction| {
        function_target(pc, i).and_then(|t| starts.binary_search(&t).ok())
    };
    for (pc, i) in cfg.insns.iter().enumerate() {
        match i {
            Some(
                i @ Instruction::LoadImm64 {
                    value: Lddw::Func(_),
                    ..
                },
            ) => {
                if let Some(k) = index(pc, i) {
                    entry[k] = ARGS;
                }
            }
            Some(Instruction::CallX { .. }) => entry.iter_mut().for_each(|e| *e = ARGS),
            _ => {}
        }
    }
    loop {
        let at = stack_pointers_from(cfg, starts, fp, &entry);
        let mut changed = false;
        for (pc, i) in cfg.insns.iter().enumerate() {
            let (Some(p), Some(i @ Instruction::Call(CallTarget::Local(_)))) = (at[pc], i) else {
                continue;
            };
            if let Some(k) = index(pc, i) {
                let m = entry[k] | (p.regs & ARGS);
                if m != entry[k] {
                    entry[k] = m;
                    changed = true;
                }
            }
        }
        if !changed {
            return at;
        }
    }
}

/// [`stack_pointers`] for these arguments of each function.
fn stack_pointers_from(
    cfg: &Cfg,
    starts: &[usize],
    fp: &[Option<FpRegs>],
    entry: &[RegMask],
) -> Vec<Option<StackPointers>> {
    cfg.forward(
        starts.iter().zip(entry).map(|(&s, &e)| {
            (
                s,
                StackPointers {
                    regs: e | bit(10),
                    stack: 0,
                },
            )
        }),
        |a, b| StackPointers {
            regs: a.regs | b.regs,
            stack: a.stack | b.stack,
        },
        |pc, i, p| stack_pointer_step(i, p, fp[pc].as_ref()),
    )
}

/// What may hold a stack pointer after `i`.
fn stack_pointer_step(i: &Instruction, p: StackPointers, fp: Option<&FpRegs>) -> StackPointers {
    use Instruction as I;
    let mut out = p;
    let has = |r: u8| p.regs & bit(r) != 0;
    let set = |out: &mut StackPointers, r: u8, v: bool| {
        if v {
            out.regs |= bit(r);
        } else {
            out.regs &= !bit(r);
        }
    };
    // The slot of this frame an access at `base + off` touches, if known.
    let slot = |base: u8, off: i16| -> Option<SlotMask> {
        let o = fp?.get(usize::from(base)).copied().flatten()?;
        Some(slot_bit(o.checked_add(i64::from(off))?))
    };
    match *i {
        I::Alu { op, dst, src, .. } => {
            let s = matches!(src, Source::Reg(r) if has(r.num()));
            if op == AluOp::Mov {
                set(&mut out, dst.num(), s);
            } else if s {
                out.regs |= bit(dst.num());
            }
        }
        I::MovSx { dst, src, .. } => set(&mut out, dst.num(), has(src.num())),
        I::Neg { .. } | I::Endian { .. } => {}
        I::LoadImm64 { dst, .. } => set(&mut out, dst.num(), false),
        I::Load { dst, src, off, .. } | I::LoadSx { dst, src, off, .. } => {
            let v = match slot(src.num(), off) {
                Some(s) => p.stack & s != 0,
                // A spilled stack pointer, through a stack pointer.
                None => has(src.num()),
            };
            set(&mut out, dst.num(), v);
        }
        I::Store {
            dst,
            off,
            src,
            size,
            ..
        } => {
            let v = matches!(src, Source::Reg(r) if has(r.num()));
            match slot(dst.num(), off) {
                Some(s) if v => out.stack |= s,
                Some(s) if size == MemSize::DW => out.stack &= !s,
                Some(_) => {}
                None if v && has(dst.num()) => out.stack = ALL_STACK,
                None => {}
            }
        }
        I::Atomic {
            dst,
            src,
            op,
            fetch,
            off,
            ..
        } => {
            match slot(dst.num(), off) {
                Some(s) if has(src.num()) => out.stack |= s,
                None if has(src.num()) && has(dst.num()) => out.stack = ALL_STACK,
                _ => {}
            }
            let fetched = if op == AtomicOp::CmpXchg {
                Some(0)
            } else if fetch {
                Some(src.num())
            } else {
                None
            };
            if let Some(r) = fetched {
                set(&mut out, r, has(dst.num()));
            }
        }
        I::LoadPacket { .. } => out.regs &= !0b11_1111,
        I::Call(CallTarget::Local(_)) | I::CallX { .. } => {
            // The callee may store stack pointers where it was given one,
            // and return one.
            if p.regs & ARGS != 0 {
                out.stack = ALL_STACK;
            }
            out.regs &= !0b11_1111;
            out.regs |= 1;
        }
        I::Call(_) => out.regs &= !0b11_1111,
        I::Ja { .. } | I::JaLong { .. } | I::Jump { .. } | I::Exit => {}
    }
    out
}

/// For each function of `starts`, whether it may read a caller's stack
/// where the value read matters (by `precise`, computed with every callee
/// reading): a load through a possible stack pointer of no known frame
/// offset into a register that matters, an atomic or a helper or kfunc
/// call on one, a `callx`; or a call of a function that does, or a
/// callback that does.
fn callers_stack_readers(
    cfg: &Cfg,
    starts: &[usize],
    fp: &[Option<FpRegs>],
    pointers: &[Option<StackPointers>],
    precise: &[Precise],
) -> Vec<bool> {
    use Instruction as I;
    let mut reads = vec![false; starts.len()];
    let mut edges = Vec::new();
    for (pc, i) in cfg.insns.iter().enumerate() {
        let (Some(p), Some(i)) = (pointers[pc], i) else {
            continue;
        };
        let k = starts.partition_point(|&s| s <= pc).saturating_sub(1);
        // May point into another frame's stack.
        let elsewhere = |r: u8| {
            p.regs & bit(r) != 0
                && fp[pc]
                    .and_then(|f| f.get(usize::from(r)).copied().flatten())
                    .is_none()
        };
        let after = precise.get(pc.wrapping_add(1)).copied().unwrap_or(Precise {
            regs: u16::MAX,
            stack: ALL_STACK,
        });
        let read = match *i {
            I::Load { dst, src, .. } | I::LoadSx { dst, src, .. } => {
                elsewhere(src.num()) && after.regs & bit(dst.num()) != 0
            }
            I::Atomic { dst, .. } => elsewhere(dst.num()),
            I::Call(CallTarget::Local(_)) => false,
            // The arguments the helper takes (all five for kfuncs).
            I::Call(CallTarget::Helper(id)) => match userbpf_vm::proto::kernel_proto(id) {
                Some(proto) => (1..=5u8)
                    .zip(proto.args)
                    .any(|(r, a)| a != userbpf_vm::proto::ArgType::DontCare && elsewhere(r)),
                None => (1..=5).any(elsewhere),
            },
            I::Call(_) => (1..=5).any(elsewhere),
            I::CallX { .. } => true,
            _ => false,
        };
        if read {
            reads[k] = true;
        }
        if let Some(g) = function_target(pc, i).and_then(|t| starts.binary_search(&t).ok()) {
            edges.push((k, g));
        }
    }
    loop {
        let mut changed = false;
        for &(caller, callee) in &edges {
            if reads[callee] && !reads[caller] {
                reads[caller] = true;
                changed = true;
            }
        }
        if !changed {
            return reads;
        }
    }
}

/// What matters before `i`, given what matters after it.
/// `callee_reads`: for a local call, whether the callee may read this
/// frame's stack where it matters; `stack_regs`: the registers that may
/// hold a stack pointer before `i`.
fn transfer(
    i: &Instruction,
    after: Precise,
    fp: Option<&FpRegs>,
    in_main: bool,
    callee_reads: bool,
    stack_regs: RegMask,
) -> Precise {
    use Instruction as I;
    let mut p = after;
    let src_bit = |s: &Source| match s {
        Source::Reg(r) => bit(r.num()),
        Source::Imm(_) => 0,
    };
    // The stack slot an access at `base + off` touches, if known.
    let slot = |base: u8, off: i16| -> Option<SlotMask> {
        let o = fp?.get(usize::from(base)).copied().flatten()?;
        Some(slot_bit(o.checked_add(i64::from(off))?))
    };
    match i {
        I::Alu { op, dst, src, .. } => {
            let d = bit(dst.num());
            if *op == AluOp::Mov {
                if p.regs & d != 0 {
                    p.regs = (p.regs & !d) | src_bit(src);
                }
            } else if p.regs & d != 0 {
                p.regs |= src_bit(src);
            }
        }
        I::MovSx { dst, src, .. } => {
            let d = bit(dst.num());
            if p.regs & d != 0 {
                p.regs = (p.regs & !d) | bit(src.num());
            }
        }
        I::Neg { .. } | I::Endian { .. } => {}
        I::Load { dst, src, off, .. } | I::LoadSx { dst, src, off, .. } => {
            let d = bit(dst.num());
            let needed = p.regs & d != 0;
            p.regs &= !d;
            // The base is a pointer whose offset matters.
            p.regs |= bit(src.num());
            if needed {
                p.stack |= match slot(src.num(), *off) {
                    Some(s) => s,
                    // A stack pointer of unknown offset: any slot.
                    None if stack_regs & bit(src.num()) != 0 => ALL_STACK,
                    // Not a stack pointer.
                    None => 0,
                };
            }
        }
        I::Store {
            dst,
            off,
            src,
            size,
        } => {
            p.regs |= bit(dst.num());
            match slot(dst.num(), *off) {
                Some(s) => {
                    if p.stack & s != 0 {
                        p.regs |= src_bit(src);
                        if matches!(size, userbpf_vm::isa::MemSize::DW) {
                            p.stack &= !s;
                        }
                    }
                }
                None => {
                    // Into this frame at an unknown slot, or into a
                    // caller's stack, which it reads after the return.
                    if stack_regs & bit(dst.num()) != 0 {
                        p.regs |= src_bit(src);
                    }
                }
            }
        }
        I::Atomic { dst, src, .. } => {
            p.regs |= bit(dst.num()) | bit(src.num()) | 1;
        }
        I::LoadImm64 { dst, .. } => p.regs &= !bit(dst.num()),
        I::LoadPacket { mode, .. } => {
            p.regs &= !0b11_1111;
            p.regs |= bit(6);
            if let PacketMode::Ind(r) = mode {
                p.regs |= bit(r.num());
            }
        }
        I::Ja { .. } | I::JaLong { .. } => {}
        I::Jump { dst, src, .. } => p.regs |= bit(dst.num()) | src_bit(src),
        I::Call(target) => {
            p.regs &= !0b11_1111;
            p.regs |= 0b11_1110;
            // A callee or a callback may read this frame's stack through
            // a pointer.
            let calls_back = match target {
                CallTarget::Helper(id) => matches!(id, 164 | 170 | 181),
                CallTarget::Local(_) => callee_reads,
                CallTarget::Kfunc { .. } => true,
            };
            if calls_back {
                p.stack = ALL_STACK;
            }
            // bpf_map_lookup_elem: an array's constant key makes the
            // result non-null (`get_constant_map_key` marks it precise).
            if matches!(target, CallTarget::Helper(1)) {
                p.stack |= match fp.and_then(|regs| regs[2]) {
                    Some(o) => slot_bit(o) | o.checked_add(3).map_or(ALL_STACK, slot_bit),
                    None => ALL_STACK,
                };
            }
        }
        I::CallX { reg } => {
            p.regs &= !0b11_1111;
            p.regs |= 0b11_1110 | bit(reg.num());
            p.stack = ALL_STACK;
        }
        I::Exit => {
            // The entry function's result need only be a number;
            // a subprogram's (or a callback's) goes on to matter.
            p = Precise {
                regs: if in_main { 0 } else { 1 },
                stack: 0,
            };
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use userbpf_vm::asm::assemble;
    use userbpf_vm::Program;

    fn of(src: &str) -> Vec<Precise> {
        let p = Program::new("t", assemble(src).unwrap()).unwrap();
        precise(&Cfg::new(&p)).at
    }

    #[test]
    fn an_accumulator_never_compared_does_not_matter_and_a_counter_does() {
        // r0 += r2 (accumulator); r1 counter compared with 10.
        let p = of("r0 = 0\nr1 = 0\nr0 += r1\nr1 += 1\nif r1 < 10 goto -3\nexit");
        assert_eq!(p[2].regs & bit(0), 0, "{:?}", p[2]);
        assert_ne!(p[2].regs & bit(1), 0, "{:?}", p[2]);
    }

    #[test]
    fn values_through_the_stack_matter_when_they_come_back_to_a_branch() {
        let p = of("r1 = 5\n*(u64 *)(r10 - 8) = r1\nr2 = *(u64 *)(r10 - 8)\nif r2 > 3 goto +0\nr0 = 0\nexit");
        assert_ne!(p[1].regs & bit(1), 0, "{:?}", p[1]);
        assert_ne!(p[2].stack & 1, 0, "{:?}", p[2]);
        // Through a copy of the frame pointer too.
        let p = of("r1 = 5\nr3 = r10\nr3 += -16\n*(u64 *)(r3 + 0) = r1\nr2 = *(u64 *)(r10 - 16)\nif r2 > 3 goto +0\nr0 = 0\nexit");
        assert_ne!(p[3].regs & bit(1), 0, "{:?}", p[3]);
        assert_ne!(p[4].stack & 2, 0, "{:?}", p[4]);
        // A value stored and never read back into a branch does not.
        let p = of("r1 = 5\n*(u64 *)(r10 - 8) = r1\nr0 = 0\nexit");
        assert_eq!(p[1].regs & bit(1), 0, "{:?}", p[1]);
    }

    fn readers(src: &str) -> Vec<usize> {
        let p = Program::new("t", assemble(src).unwrap()).unwrap();
        precise(&Cfg::new(&p)).reads_callers_stack
    }

    #[test]
    fn a_callee_that_only_writes_through_its_argument_leaves_its_callers_slots_alone() {
        // f(&x) writes x; the caller stores x in a map value (r0 from a
        // lookup is not a stack pointer).
        let src = "r1 = r10\nr1 += -8\ncall pc+4\nr1 = *(u64 *)(r10 - 8)\n\
                   *(u64 *)(r10 - 16) = r1\nr0 = 0\nexit\n\
                   r2 = 7\n*(u64 *)(r1 + 0) = r2\nr0 = 0\nexit";
        assert!(readers(src).is_empty());
        let p = of(src);
        assert_eq!(p[2].stack, 0, "{:?}", p[2]);
        // A callee that branches on what it reads there.
        let src = "r1 = r10\nr1 += -8\ncall pc+4\nr1 = *(u64 *)(r10 - 8)\n\
                   *(u64 *)(r10 - 16) = r1\nr0 = 0\nexit\n\
                   r2 = *(u64 *)(r1 + 0)\nif r2 > 3 goto +0\nr0 = 0\nexit";
        // (The entry function calls it: it counts too, with no caller.)
        assert_eq!(readers(src), vec![0, 7]);
        assert_eq!(of(src)[2].stack, ALL_STACK);
        // Or one that calls a function that does, or hands the pointer to
        // a helper.
        let src = "r1 = r10\nr1 += -8\ncall pc+2\nr0 = 0\nexit\n\
                   call pc+1\nexit\n\
                   r2 = *(u64 *)(r1 + 0)\nif r2 > 3 goto +0\nr0 = 0\nexit";
        assert_eq!(readers(src), vec![0, 5, 7]);
        let src = "r1 = r10\nr1 += -8\ncall pc+2\nr0 = 0\nexit\n\
                   r2 = r1\nr1 = map[idx:0]\ncall 1\nr0 = 0\nexit";
        assert_eq!(readers(src), vec![0, 5]);
    }

    #[test]
    fn loads_through_pointers_that_cannot_be_into_a_stack_leave_the_stack_alone() {
        // A map value's number branched on: no stack slot matters.
        let p = of(
            "*(u64 *)(r10 - 8) = 1\nr1 = map[idx:0]\nr2 = r10\nr2 += -8\ncall 1\n\
                    if r0 == 0 goto +2\nr1 = *(u64 *)(r0 + 0)\nif r1 > 3 goto +0\nr0 = 0\nexit",
        );
        assert_eq!(p[7].stack, 0, "{:?}", p[7]);
        // Through a stack pointer of unknown offset, every slot may.
        let p = of(
            "r1 = r10\nr1 += -8\nif r2 > 3 goto +1\nr1 += -8\nr3 = *(u64 *)(r1 + 0)\n\
                    if r3 > 3 goto +0\nr0 = 0\nexit",
        );
        assert_eq!(p[4].stack, ALL_STACK, "{:?}", p[4]);
    }

    #[test]
    fn pointer_offsets_and_helper_arguments_matter() {
        let p = of("r2 = 4\nr1 += r2\nr0 = *(u8 *)(r1 + 0)\nexit");
        assert_ne!(p[1].regs & bit(2), 0, "{:?}", p[1]);
        let p = of("r2 = 8\ncall 5\nexit");
        assert_ne!(p[1].regs & bit(2), 0, "{:?}", p[1]);
    }
}
