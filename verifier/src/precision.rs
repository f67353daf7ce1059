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

use userbpf_vm::isa::{AluOp, AtomicOp, CallTarget, Instruction, PacketMode, Source};

use crate::cfg::Cfg;
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
    let len = cfg.len();
    let mut at: Vec<Option<FpRegs>> = vec![None; len];
    let mut work = Vec::new();
    for &s in starts {
        let mut regs: FpRegs = [None; 11];
        regs[10] = Some(0);
        if s < len {
            at[s] = Some(regs);
            work.push(s);
        }
    }
    while let Some(pc) = work.pop() {
        let (Some(regs), Some(i)) = (at[pc], cfg.insns[pc]) else {
            continue;
        };
        let mut out = regs;
        match i {
            Instruction::Alu { op, dst, src, .. } => {
                let d = usize::from(dst.num());
                out[d] = match (op, src, regs[d]) {
                    (AluOp::Mov, Source::Reg(s), _) if i_is_64(&i) => regs[usize::from(s.num())],
                    (AluOp::Add, Source::Imm(c), Some(o)) if i_is_64(&i) => {
                        o.checked_add(i64::from(c))
                    }
                    (AluOp::Sub, Source::Imm(c), Some(o)) if i_is_64(&i) => {
                        o.checked_sub(i64::from(c))
                    }
                    _ => None,
                };
            }
            Instruction::Call(_) | Instruction::CallX { .. } | Instruction::LoadPacket { .. } => {
                for r in out.iter_mut().take(6) {
                    *r = None;
                }
            }
            _ => {
                if let Some(d) = def(&i) {
                    out[usize::from(d)] = None;
                }
            }
        }
        for s in cfg.succs(pc) {
            let Some(slot) = at.get_mut(s) else { continue };
            let merged = match slot {
                None => out,
                Some(old) => {
                    let mut m = *old;
                    for (a, b) in m.iter_mut().zip(out.iter()) {
                        if *a != *b {
                            *a = None;
                        }
                    }
                    m
                }
            };
            if *slot != Some(merged) {
                *slot = Some(merged);
                work.push(s);
            }
        }
    }
    at
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
/// it.
pub fn precise(cfg: &Cfg) -> Vec<Precise> {
    let len = cfg.len();
    let starts = cfg.function_starts();
    let fp = frame_pointers(cfg, &starts);
    let main_end = starts.get(1).copied().unwrap_or(len);
    cfg.backward(
        |a: Precise, b| Precise {
            regs: a.regs | b.regs,
            stack: a.stack | b.stack,
        },
        |pc, i, out| transfer(i, out, fp[pc].as_ref(), pc < main_end),
    )
}

/// What matters before `i`, given what matters after it.
fn transfer(i: &Instruction, after: Precise, fp: Option<&FpRegs>, in_main: bool) -> Precise {
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
                p.stack |= slot(src.num(), *off).unwrap_or(ALL_STACK);
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
                    if p.stack != 0 {
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
                _ => true,
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
        precise(&Cfg::new(&p))
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

    #[test]
    fn pointer_offsets_and_helper_arguments_matter() {
        let p = of("r2 = 4\nr1 += r2\nr0 = *(u8 *)(r1 + 0)\nexit");
        assert_ne!(p[1].regs & bit(2), 0, "{:?}", p[1]);
        let p = of("r2 = 8\ncall 5\nexit");
        assert_ne!(p[1].regs & bit(2), 0, "{:?}", p[1]);
    }
}
