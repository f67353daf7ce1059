//! Loops whose memory accesses checked code proves once, on entry.
//!
//! In a simple loop (one entry, no calls, no loop inside) an access whose
//! address is an invariant register plus the loop's induction variable
//! plus a bounded term covers a range known when the loop is entered: the
//! induction variable only grows, by constants, up to the bound its guard
//! tests. Checked code tests that whole range once, where the loop is
//! entered, and runs a copy of the loop whose proven accesses skip their
//! own checks ([`crate::codegen`]); when the test fails (the range is not
//! in one region, or the loop would leave it), the loop runs with every
//! access checked, so faults and their pcs stay the interpreter's.

use userbpf_vm::interp::OpClass;
use userbpf_vm::isa::{AluOp, Instruction, JmpCond, MemSize, Source, Width};

use crate::codegen::{size_bytes, target, Shape};

/// Largest constant part or bounded term tracked (beyond it a value is
/// unknown), and the widest range one group may span: the entry test's
/// arithmetic cannot wrap with these.
const TRACKED: i128 = 1 << 40;

/// The largest increment of an induction variable.
const MAX_STEP: i64 = 1 << 20;

/// Highest value a guard's limit may have (tested on entry when it is a
/// register): the induction variable then never wraps.
pub(crate) const MAX_LIMIT: u64 = 1 << 62;

/// The bound an induction variable's guard compares it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bound {
    /// A constant.
    Imm(u64),
    /// A register the loop does not write.
    Reg(u8),
}

/// A register that only grows in the loop, by positive constants, and a
/// guard that bounds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Induction {
    /// The register.
    pub(crate) reg: u8,
    /// What the guard compares it with (unsigned).
    pub(crate) bound: Bound,
    /// The guard allows the bound itself (`<=`; else `<`).
    pub(crate) inclusive: bool,
    /// The guard is the head's first instruction (`if reg >= bound goto
    /// out`: the body runs with `reg` at most the limit); else it is the
    /// back-edge (`if reg < bound goto head`: at the head `reg` is at most
    /// the larger of its value on entry and the limit).
    pub(crate) at_head: bool,
    /// A power of two every increment is a multiple of: the register
    /// keeps its value on entry modulo it.
    pub(crate) stride: u64,
    /// Every way back to the head passes an increment: the loop runs at
    /// most `(largest - entry) / stride + 1` times.
    pub(crate) counted: bool,
}

/// Accesses of one loop sharing a base, whether they add the induction
/// variable, and a region kind: one range to test on entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    /// The register (unwritten in the loop) the addresses add; `None`: the
    /// induction variable itself is the pointer. r10: tested against the
    /// stack.
    pub(crate) base: Option<u8>,
    /// The addresses add the induction variable.
    pub(crate) iv: bool,
    /// Some access writes (tested against the region cache for writes).
    pub(crate) write: bool,
    /// The lowest address is at least `base + iv + lo` (`iv`: its value on
    /// entry).
    pub(crate) lo: i64,
    /// One past the highest byte is at most `base + iv + hi` (`iv`: its
    /// largest value at the head).
    pub(crate) hi: i64,
}

/// A loop whose accesses in `accesses` are proven by testing `groups` on
/// entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HoistLoop {
    /// The head: the one pc the loop is entered at.
    pub(crate) head: usize,
    /// One past the last instruction (the back-edge).
    pub(crate) end: usize,
    /// The induction variable, if any access uses one.
    pub(crate) iv: Option<Induction>,
    /// The ranges to test on entry.
    pub(crate) groups: Vec<Group>,
    /// The pcs of the accesses the groups cover.
    pub(crate) accesses: Vec<usize>,
}

/// What an instruction of a loop leaves in a register, as far as it is
/// known: `base + iv + c + t` for some `t` in `0..=var`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sym {
    base: Option<u8>,
    iv: bool,
    c: i64,
    var: u64,
}

impl Sym {
    fn constant(c: i64) -> Sym {
        Sym {
            base: None,
            iv: false,
            c,
            var: 0,
        }
    }

    fn bounded(var: u64) -> Option<Sym> {
        (i128::from(var) <= TRACKED).then_some(Sym {
            base: None,
            iv: false,
            c: 0,
            var,
        })
    }

    /// A plain number (no register in it) that is never negative.
    fn pure(&self) -> bool {
        self.base.is_none() && !self.iv && self.c >= 0
    }

    fn add_c(self, k: i64) -> Option<Sym> {
        Some(Sym {
            c: self.c.checked_add(k)?,
            ..self
        })
    }

    fn sum(a: Sym, b: Sym) -> Option<Sym> {
        if (a.base.is_some() && b.base.is_some()) || (a.iv && b.iv) {
            return None;
        }
        let var = a.var.checked_add(b.var)?;
        Some(Sym {
            base: a.base.or(b.base),
            iv: a.iv || b.iv,
            c: a.c.checked_add(b.c)?,
            var: Sym::bounded(var)?.var,
        })
    }
}

/// The simple loops of `shape` with at least one access to prove on
/// entry.
pub(crate) fn loops(shape: &Shape) -> Vec<HoistLoop> {
    let len = shape.insns.len();
    // Every jump as (target, source), by target.
    let mut edges: Vec<(usize, usize)> = Vec::new();
    for (pc, slot) in shape.insns.iter().enumerate() {
        if let Some((i, OpClass::Plain)) = slot {
            if let Some(rel) = i.jump_offset() {
                edges.push((target(pc, rel), pc));
            }
        }
    }
    edges.sort_unstable();
    // The last back-edge into each head.
    let mut heads: Vec<(usize, usize)> = edges
        .iter()
        .filter(|&&(t, s)| t <= s)
        .map(|&(t, s)| (t, s))
        .collect();
    heads.sort_unstable();
    heads.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            earlier.1 = earlier.1.max(later.1);
            true
        } else {
            false
        }
    });
    heads
        .into_iter()
        .filter(|&(_, back)| back < len)
        .filter_map(|(head, back)| analyse(shape, &edges, head, back + 1))
        .collect()
}

/// The loop `head..end` if it is simple and has accesses to prove.
fn analyse(shape: &Shape, edges: &[(usize, usize)], head: usize, end: usize) -> Option<HoistLoop> {
    let body = head..end;
    // Only plain instructions (no calls of any kind); jumps go forward
    // but to the head; nothing but the head is entered from outside.
    let mut written = [false; 11];
    for pc in body.clone() {
        match shape.insns[pc] {
            None => {}
            Some((i, OpClass::Plain | OpClass::LoadImm(_))) => {
                if let Some(rel) = i.jump_offset() {
                    let t = target(pc, rel);
                    if t <= pc && t != head {
                        return None;
                    }
                }
                if let Some(d) = i.dst_written() {
                    written[usize::from(d.num()).min(10)] = true;
                }
                if let Some(chain) = shape.chain(pc) {
                    if pc + chain.len > end {
                        return None;
                    }
                }
            }
            Some(_) => return None,
        }
    }
    if shape.entries.range(head + 1..end).next().is_some() {
        return None;
    }
    let from = edges.partition_point(|&(t, _)| t <= head);
    if edges[from..]
        .iter()
        .take_while(|&&(t, _)| t < end)
        .any(|&(_, s)| !body.contains(&s))
    {
        return None;
    }
    let iv = induction(shape, edges, head, end, &written);
    let found = accesses(shape, head, end, &written, iv.map(|v| v.reg));
    let same = |a: &Group, b: &Group| a.base == b.base && a.iv == b.iv && a.write == b.write;
    let mut groups: Vec<Group> = Vec::new();
    for (_, g) in &found {
        match groups.iter_mut().find(|o| same(o, g)) {
            Some(o) => {
                o.lo = o.lo.min(g.lo);
                o.hi = o.hi.max(g.hi);
            }
            None => groups.push(*g),
        }
    }
    // A group spanning too much is left out (with its accesses).
    groups.retain(|g| i128::from(g.hi) - i128::from(g.lo) <= TRACKED);
    let accesses: Vec<usize> = found
        .iter()
        .filter(|(_, g)| groups.iter().any(|o| same(o, g)))
        .map(|&(pc, _)| pc)
        .collect();
    if accesses.is_empty() {
        return None;
    }
    let iv = iv.filter(|_| groups.iter().any(|g| g.iv));
    Some(HoistLoop {
        head,
        end,
        iv,
        groups,
        accesses,
    })
}

/// The loop's induction variable: a register only ever increased by
/// positive constants in the loop, with a guard (see [`Induction`]).
fn induction(
    shape: &Shape,
    edges: &[(usize, usize)],
    head: usize,
    end: usize,
    written: &[bool; 11],
) -> Option<Induction> {
    let insn = |pc: usize| shape.insns.get(pc).copied().flatten().map(|(i, _)| i);
    // The guard: the head's exit test, or the back-edge's test.
    let (guard, at_head) = match insn(head)? {
        Instruction::Jump {
            width: Width::W64,
            cond: JmpCond::Ge | JmpCond::Gt,
            off,
            ..
        } if !(head..end).contains(&target(head, i64::from(off))) => (insn(head)?, true),
        _ => {
            let back = end - 1;
            // (Only the back-edge re-enters the head.)
            let into_head = edges.partition_point(|&(t, _)| t < head);
            let others = edges[into_head..]
                .iter()
                .take_while(|&&(t, _)| t == head)
                .any(|&(_, s)| s != back && (head..end).contains(&s));
            match insn(back)? {
                Instruction::Jump {
                    width: Width::W64,
                    cond: JmpCond::Lt | JmpCond::Le,
                    off,
                    ..
                } if !others && target(back, i64::from(off)) == head => (insn(back)?, false),
                _ => return None,
            }
        }
    };
    let Instruction::Jump { cond, dst, src, .. } = guard else {
        return None;
    };
    let reg = dst.num();
    if reg >= 10 {
        return None;
    }
    let inclusive = matches!(cond, JmpCond::Gt | JmpCond::Le);
    let bound = match src {
        Source::Imm(k) => {
            let n = i64::from(k) as u64;
            // The limit, known now: the loop never runs past it.
            let limit = if inclusive { Some(n) } else { n.checked_sub(1) };
            if limit.is_none_or(|l| l >= MAX_LIMIT) {
                return None;
            }
            Bound::Imm(n)
        }
        Source::Reg(q) if q.num() != reg && !written[usize::from(q.num()).min(10)] => {
            Bound::Reg(q.num())
        }
        Source::Reg(_) => return None,
    };
    // Every write of the register an increment by a positive constant.
    let mut steps = 0u64;
    // An increment every way back to the head passes: no jump before it
    // goes back to the head or past it (but out of the loop).
    let mut counted = false;
    let (mut to_head, mut farthest) = (false, 0);
    for pc in head..end {
        let Some(i) = insn(pc) else { continue };
        let jumps_over = to_head || farthest > pc;
        if let Some(rel) = i.jump_offset() {
            let t = target(pc, rel);
            if t == head {
                to_head = true;
            } else if t < end {
                farthest = farthest.max(t);
            }
        }
        if i.dst_written().is_none_or(|d| d.num() != reg) {
            continue;
        }
        match i {
            Instruction::Alu {
                width: Width::W64,
                op: AluOp::Add,
                src: Source::Imm(k),
                ..
            } if (1..=MAX_STEP).contains(&i64::from(k)) => {
                steps |= k as u64;
                counted |= !jumps_over;
            }
            _ => return None,
        }
    }
    if steps == 0 {
        return None;
    }
    Some(Induction {
        reg,
        bound,
        inclusive,
        at_head,
        stride: 1 << steps.trailing_zeros(),
        counted,
    })
}

/// The loop's loads and stores whose address is known in the form of a
/// [`Group`] (each as a group of its own), by pc.
fn accesses(
    shape: &Shape,
    head: usize,
    end: usize,
    written: &[bool; 11],
    iv: Option<u8>,
) -> Vec<(usize, Group)> {
    // What each register holds at a block's start.
    let start: [Option<Sym>; 11] = std::array::from_fn(|r| {
        if iv == Some(r as u8) {
            Some(Sym {
                base: None,
                iv: true,
                c: 0,
                var: 0,
            })
        } else if !written[r] {
            Some(Sym {
                base: Some(r as u8),
                iv: false,
                c: 0,
                var: 0,
            })
        } else {
            None
        }
    });
    let mut out = Vec::new();
    let mut regs = start;
    // What the induction variable grew by on the way to here: at most
    // (any path from the head), and at least (in this block).
    let mut grown: i64 = 0;
    let mut surely: i64 = 0;
    let mut pc = head;
    while pc < end {
        if pc != head && shape.leaders.contains(&pc) {
            // A join: only what holds at every block start.
            regs = start;
            surely = 0;
        }
        let Some((i, class)) = shape.insns[pc] else {
            pc += 1;
            continue;
        };
        let access = match i {
            Instruction::Load { size, src, off, .. }
            | Instruction::LoadSx { size, src, off, .. } => Some((src, off, size, false)),
            Instruction::Store { size, dst, off, .. } => Some((dst, off, size, true)),
            _ => None,
        };
        if let Some((r, off, size, write)) = access {
            if let Some(s) = regs[usize::from(r.num()).min(10)] {
                if s.base.is_some() || s.iv {
                    let len = i128::from(size_bytes(size));
                    let at = i128::from(s.c) + i128::from(off);
                    let (lo, hi) = if s.iv {
                        (at + i128::from(surely), at + i128::from(grown))
                    } else {
                        (at, at)
                    };
                    let hi = hi + i128::from(s.var) + len;
                    if let (Ok(lo), Ok(hi)) = (i64::try_from(lo), i64::try_from(hi)) {
                        out.push((
                            pc,
                            Group {
                                base: s.base,
                                iv: s.iv,
                                write,
                                lo,
                                hi,
                            },
                        ));
                    }
                }
            }
        }
        if let Some(d) = i.dst_written() {
            let d = usize::from(d.num()).min(10);
            let next = effect(&i, class, &regs);
            if iv == Some(d as u8) {
                // `iv += k`: what was expressed with its old value now
                // has `k` less.
                if let Instruction::Alu {
                    src: Source::Imm(k),
                    ..
                } = i
                {
                    grown += i64::from(k);
                    surely += i64::from(k);
                    for s in regs.iter_mut().filter(|s| s.is_some_and(|s| s.iv)) {
                        *s = s.and_then(|s| s.add_c(-i64::from(k)));
                    }
                    regs[d] = start[d];
                }
            } else {
                regs[d] = next;
            }
        }
        pc += i.slots();
    }
    out
}

/// A loop that copies memory forward, one element a round: the same
/// effect as `memmove` of all its rounds but the last, when the
/// destination does not start inside the source ahead of where the copy
/// reads ([`copy_loop`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CopyLoop {
    /// The induction variable: it grows by `size` once a round.
    pub(crate) iv: Induction,
    /// Bytes a round copies (the access size and the step).
    pub(crate) size: u64,
    /// Where round `k` reads: `base + iv + off` (`iv` at the round's start).
    pub(crate) src: (u8, i64),
    /// Where round `k` writes, in the same form.
    pub(crate) dst: (u8, i64),
    /// Instructions a round executes (the whole straight-line body).
    pub(crate) per_round: u64,
    /// One past the loop's last instruction.
    pub(crate) end: usize,
}

/// Whether simple loop `l` is a forward copy: a straight-line body (no
/// jump but its guard and its way back) of ALU instructions, one load and
/// one store of the same size that stores what the load read, at addresses
/// an invariant register plus the induction variable plus a constant, and
/// one increment of the induction variable by that size; every other
/// register it writes is written before it is read in a round, so a round's
/// effect on registers depends only on the induction variable. Skipping
/// rounds then changes nothing but memory (copied in bulk instead) and the
/// induction variable (set to where the rounds leave it).
pub(crate) fn copy_loop(shape: &Shape, l: &HoistLoop) -> Option<CopyLoop> {
    let iv = l.iv.filter(|iv| iv.counted)?;
    let (head, end) = (l.head, l.end);
    let back = end.checked_sub(1)?;
    let mut written = [false; 11];
    let mut body = Vec::with_capacity(end - head);
    for pc in head..end {
        let (i, OpClass::Plain) = shape.insns[pc]? else {
            return None;
        };
        if let Some(d) = i.dst_written() {
            written[usize::from(d.num()).min(10)] = true;
        }
        body.push((pc, i));
    }
    // Jumps: the guard and the way back only.
    for &(pc, i) in &body {
        let Some(rel) = i.jump_offset() else { continue };
        let t = target(pc, rel);
        let guard = if iv.at_head { head } else { back };
        let ok = match i {
            Instruction::Jump { .. } => pc == guard,
            Instruction::Ja { .. } => iv.at_head && pc == back && t == head,
            _ => false,
        };
        if !ok {
            return None;
        }
    }
    if iv.at_head && !matches!(body.last(), Some((_, Instruction::Ja { .. }))) {
        return None;
    }
    let (mut load, mut store, mut steps, mut step) = (None, None, 0, 0);
    // Registers written so far in the round.
    let mut set = [false; 11];
    for &(pc, i) in &body {
        let mut reads: [Option<u8>; 2] = [None, None];
        match i {
            Instruction::Alu { op, dst, src, .. } => {
                if op != AluOp::Mov {
                    reads[0] = Some(dst.num());
                }
                if let Source::Reg(r) = src {
                    reads[1] = Some(r.num());
                }
                if dst.num() == iv.reg {
                    // (An increment by a positive constant: see `induction`.)
                    steps += 1;
                    step = match src {
                        Source::Imm(k) => i64::from(k) as u64,
                        Source::Reg(_) => return None,
                    };
                }
            }
            Instruction::MovSx { src, .. } => reads[0] = Some(src.num()),
            Instruction::Neg { dst, .. } | Instruction::Endian { dst, .. } => {
                reads[0] = Some(dst.num())
            }
            Instruction::Load { size, dst, src, .. } if load.is_none() => {
                reads[0] = Some(src.num());
                load = Some((pc, size, dst.num()));
            }
            Instruction::Store {
                size,
                dst,
                src: Source::Reg(v),
                ..
            } if store.is_none() => {
                // What the load read, unchanged since.
                let (lpc, lsize, ldst) = load?;
                let rewritten = body.iter().any(|&(p, j)| {
                    p > lpc && p < pc && j.dst_written().is_some_and(|d| d.num() == ldst)
                });
                if lsize != size || v.num() != ldst || rewritten {
                    return None;
                }
                reads = [Some(dst.num()), Some(v.num())];
                store = Some((pc, size));
            }
            Instruction::Jump { dst, src, .. } => {
                reads[0] = Some(dst.num());
                if let Source::Reg(r) = src {
                    reads[1] = Some(r.num());
                }
            }
            Instruction::Ja { .. } => {}
            _ => return None,
        }
        for r in reads.into_iter().flatten() {
            let r = usize::from(r).min(10);
            if written[r] && r != usize::from(iv.reg) && !set[r] {
                return None;
            }
        }
        if let Some(d) = i.dst_written() {
            set[usize::from(d.num()).min(10)] = true;
        }
    }
    let ((lpc, size, _), (spc, _)) = (load?, store?);
    let size = size_bytes(size);
    // One increment, by the element's size.
    if steps != 1 || step != size {
        return None;
    }
    let found = accesses(shape, head, end, &written, Some(iv.reg));
    let at = |pc: usize| -> Option<(u8, i64)> {
        let &(_, g) = found.iter().find(|(p, _)| *p == pc)?;
        (g.iv && i128::from(g.hi) - i128::from(g.lo) == i128::from(size)).then_some(())?;
        Some((g.base?, g.lo))
    };
    Some(CopyLoop {
        iv,
        size,
        src: at(lpc)?,
        dst: at(spc)?,
        per_round: (end - head) as u64,
        end,
    })
}

/// What `i` leaves in its destination register, given `regs` before it.
fn effect(i: &Instruction, class: OpClass, regs: &[Option<Sym>; 11]) -> Option<Sym> {
    let reg = |r: userbpf_vm::Reg| regs[usize::from(r.num()).min(10)];
    match *i {
        Instruction::Alu {
            width,
            op,
            dst,
            src,
        } => {
            let s = match src {
                Source::Reg(r) => reg(r),
                Source::Imm(k) => Some(Sym::constant(match width {
                    Width::W64 => i64::from(k),
                    Width::W32 => i64::from(k as u32),
                })),
            };
            let d = reg(dst);
            match (width, op) {
                (_, AluOp::And) => match src {
                    Source::Imm(k) if k >= 0 => Sym::bounded(k as u64),
                    _ => None,
                },
                (Width::W64, AluOp::Mov) => s,
                (Width::W32, AluOp::Mov) => {
                    let s = s?;
                    if s.pure() && (s.c as u64).checked_add(s.var)? <= u64::from(u32::MAX) {
                        Some(s)
                    } else {
                        Sym::bounded(u64::from(u32::MAX))
                    }
                }
                (Width::W64, AluOp::Add) => Sym::sum(d?, s?),
                (Width::W64, AluOp::Sub) => {
                    let s = s?;
                    (s.pure() && s.var == 0).then_some(())?;
                    d?.add_c(-s.c)
                }
                (Width::W64, AluOp::Lsh) => {
                    let (d, s) = (d?, s?);
                    (d.pure() && s.pure() && s.var == 0 && s.c < 64).then_some(())?;
                    let c = i128::from(d.c) << s.c;
                    let var = i128::from(d.var) << s.c;
                    (c <= TRACKED && var <= TRACKED).then_some(Sym {
                        c: c as i64,
                        var: var as u64,
                        ..d
                    })
                }
                (Width::W64, AluOp::Rsh) => {
                    let (d, s) = (d?, s?);
                    (d.pure() && s.pure() && s.var == 0 && s.c < 64).then_some(())?;
                    let lo = (d.c as u64) >> s.c;
                    let hi = (d.c as u64).checked_add(d.var)? >> s.c;
                    Some(Sym {
                        c: lo as i64,
                        var: hi - lo,
                        ..d
                    })
                }
                _ => None,
            }
        }
        Instruction::Load { size, .. } => match size {
            MemSize::B => Sym::bounded(0xff),
            MemSize::H => Sym::bounded(0xffff),
            MemSize::W => Sym::bounded(0xffff_ffff),
            MemSize::DW => None,
        },
        Instruction::LoadImm64 { .. } => match class {
            OpClass::LoadImm(v) => Some(Sym::constant(v as i64)),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use userbpf_vm::asm::assemble;
    use userbpf_vm::interp::PreparedProgram;
    use userbpf_vm::{Config, Helpers, Program};

    fn loops_of(src: &str) -> Vec<HoistLoop> {
        let program = Program::new("hoist", assemble(src).unwrap()).unwrap();
        let mut helpers = Helpers::new();
        helpers.register_fn(0x100, "one", |_, _, _, _, _| 1);
        let p = PreparedProgram::new(&program, &helpers, Config::default()).unwrap();
        loops(&Shape::of(&p).unwrap())
    }

    const COPY: &str = "
        mov %r6, %r1
        add %r6, 4096
        mov %r3, 0
    loop:
        jge %r3, 4096, done
        mov %r4, %r1
        add %r4, %r3
        ldxdw %r5, [%r4+0]
        mov %r4, %r6
        add %r4, %r3
        stxdw [%r4+0], %r5
        add %r3, 8
        ja loop
    done:
        mov %r0, %r3
        exit";

    #[test]
    fn a_copy_loop_proves_its_load_and_store_from_their_bases() {
        let l = loops_of(COPY);
        assert_eq!(l.len(), 1);
        let l = &l[0];
        assert_eq!((l.head, l.end), (3, 12));
        assert_eq!(
            l.iv,
            Some(Induction {
                reg: 3,
                bound: Bound::Imm(4096),
                inclusive: false,
                at_head: true,
                stride: 8,
                counted: true,
            })
        );
        assert_eq!(l.accesses, vec![6, 9]);
        let group = |base, write| Group {
            base: Some(base),
            iv: true,
            write,
            lo: 0,
            hi: 8,
        };
        assert_eq!(l.groups, vec![group(1, false), group(6, true)]);
    }

    #[test]
    fn a_guard_at_the_back_edge_with_a_register_bound_and_a_bounded_index() {
        // Loads r1 + r3 - 1 (computed before the increment) and a table
        // entry at r1 + 8 * (byte & 15) + 64.
        let l = loops_of(
            "
            mov %r3, 1
        loop:
            mov %r4, %r1
            add %r4, %r3
            add %r3, 2
            ldxb %r5, [%r4-1]
            and %r5, 15
            lsh %r5, 3
            mov %r4, %r1
            add %r4, %r5
            ldxdw %r0, [%r4+64]
            jle %r3, %r2, loop
            exit",
        );
        assert_eq!(l.len(), 1);
        let l = &l[0];
        assert_eq!(
            l.iv,
            Some(Induction {
                reg: 3,
                bound: Bound::Reg(2),
                inclusive: true,
                at_head: false,
                stride: 2,
                counted: true,
            })
        );
        assert_eq!(l.accesses, vec![4, 9]);
        // The byte at r1 + r3_old - 1 = r1 + r3_now - 3, and r3 has grown
        // by 2 when it is read (r3 on entry, at least).
        let byte = Group {
            base: Some(1),
            iv: true,
            write: false,
            lo: -3 + 2,
            hi: -3 + 2 + 1,
        };
        let table = Group {
            base: Some(1),
            iv: false,
            write: false,
            lo: 64,
            hi: 64 + 15 * 8 + 8,
        };
        assert_eq!(l.groups, vec![byte, table]);
    }

    #[test]
    fn a_pointer_that_is_the_induction_variable_and_the_stack() {
        let l = loops_of(
            "
            mov %r6, %r1
            add %r6, %r2
        loop:
            jge %r1, %r6, done
            ldxb %r5, [%r1+0]
            mov %r4, %r10
            add %r4, %r5
            stxb [%r4-256], %r5
            add %r1, 1
            ja loop
        done:
            exit",
        );
        assert_eq!(l.len(), 1);
        let l = &l[0];
        assert_eq!(l.iv.map(|v| (v.reg, v.bound)), Some((1, Bound::Reg(6))));
        assert_eq!(
            l.groups,
            vec![
                Group {
                    base: None,
                    iv: true,
                    write: false,
                    lo: 0,
                    hi: 1,
                },
                Group {
                    base: Some(10),
                    iv: false,
                    write: true,
                    lo: -256,
                    hi: -256 + 255 + 1,
                },
            ]
        );
    }

    #[test]
    fn a_loop_that_can_go_round_without_its_increment_is_not_counted() {
        // Zero bytes go back to the head before r3 grows.
        let l = loops_of(
            "
            mov %r3, 0
        loop:
            jge %r3, 64, done
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4+0]
            jeq %r5, 0, loop
            add %r3, 1
            ja loop
        done:
            exit",
        );
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].iv.map(|v| v.counted), Some(false));
        // Skipping it forward is no better.
        let l = loops_of(
            "
            mov %r3, 0
        loop:
            jge %r3, 64, done
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4+0]
            jeq %r5, 0, skip
            add %r3, 1
        skip:
            add %r0, 1
            ja loop
        done:
            exit",
        );
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].iv.map(|v| v.counted), Some(false));
        // Jumps that land before the increment (a switch's ways joining
        // there) still pass it.
        let l = loops_of(
            "
            mov %r3, 0
        loop:
            jge %r3, 64, done
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4+0]
            jeq %r5, 1, one
            jeq %r5, 2, two
            add %r0, 3
            ja next
        one:
            add %r0, 1
            ja next
        two:
            add %r0, 2
        next:
            add %r3, 1
            ja loop
        done:
            exit",
        );
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].iv.map(|v| v.counted), Some(true));
    }

    #[test]
    fn loops_with_calls_second_entries_or_inner_loops_are_left_alone() {
        // A helper call in the body.
        assert!(loops_of(
            "
            mov %r3, 0
        loop:
            jge %r3, 8, done
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4+0]
            call 0x100
            add %r3, 1
            ja loop
        done:
            exit"
        )
        .is_empty());
        // A jump into the middle of the body from before it.
        assert!(loops_of(
            "
            mov %r3, 0
            jeq %r2, 0, middle
        loop:
            jge %r3, 8, done
        middle:
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4+0]
            add %r3, 1
            ja loop
        done:
            exit"
        )
        .is_empty());
        // The outer of two nested loops (the inner one is taken).
        let l = loops_of(
            "
            mov %r6, 0
        outer:
            mov %r3, 0
        inner:
            jge %r3, 8, next
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4+0]
            add %r3, 1
            ja inner
        next:
            add %r6, 1
            jlt %r6, 4, outer
            exit",
        );
        assert_eq!(l.iter().map(|l| l.head).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn a_register_written_otherwise_than_by_increments_is_no_induction_variable() {
        // r3 is doubled: its accesses are unknown, nothing is proven.
        assert!(loops_of(
            "
            mov %r3, 1
        loop:
            jge %r3, 4096, done
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4+0]
            lsh %r3, 1
            ja loop
        done:
            exit"
        )
        .is_empty());
        // A guard on a bound the loop writes proves nothing either.
        assert!(loops_of(
            "
            mov %r3, 0
        loop:
            jge %r3, %r2, done
            mov %r4, %r1
            add %r4, %r3
            ldxb %r5, [%r4+0]
            add %r2, 1
            add %r3, 1
            ja loop
        done:
            exit"
        )
        .is_empty());
    }
}
