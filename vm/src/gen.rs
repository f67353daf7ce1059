//! Generators of instructions and programs for property tests and fuzzing.
//!
//! They are built on [`arbitrary::Unstructured`], so proptest (random bytes)
//! and libFuzzer (coverage-guided bytes) drive the same code. Programs are
//! *valid by construction*: every instruction decodes, every jump, call and
//! function address lands on an instruction, and the program ends with
//! `exit`. They are not safe: loads, stores and loops are random, which is
//! what checked mode must survive.

use arbitrary::{Result, Unstructured};

use crate::insn::Insn;
use crate::isa::{
    AluOp, AtomicOp, CallTarget, EndianOp, Instruction, JmpCond, Lddw, MemSize, PacketMode, Reg,
    Source, Width,
};

/// What the generated programs may use.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Maximum number of instructions (before the final `exit`).
    pub max_insns: usize,
    /// Helper ids `call` may use.
    pub helper_ids: Vec<i32>,
    /// Allow `callx` (on function addresses and helper ids).
    pub callx: bool,
    /// Allow legacy packet loads.
    pub packet_loads: bool,
}

impl Default for GenConfig {
    fn default() -> GenConfig {
        GenConfig {
            max_insns: 64,
            helper_ids: Vec::new(),
            callx: true,
            packet_loads: true,
        }
    }
}

/// Any register, r10 included (for operands that are only read).
pub fn any_reg(u: &mut Unstructured<'_>) -> Result<Reg> {
    Ok(Reg::new(u.int_in_range(0..=10)?).unwrap_or(Reg::R0))
}

/// A register that may be written (r0..r9).
pub fn writable_reg(u: &mut Unstructured<'_>) -> Result<Reg> {
    Ok(Reg::new(u.int_in_range(0..=9)?).unwrap_or(Reg::R0))
}

/// A base register for memory accesses: mostly r1 (the memory) and r10 (the
/// stack), so that accesses are often in bounds.
fn base_reg(u: &mut Unstructured<'_>) -> Result<Reg> {
    Ok(match u.int_in_range(0..=7)? {
        0..=2 => Reg::R1,
        3..=5 => Reg::R10,
        _ => any_reg(u)?,
    })
}

fn mem_off(u: &mut Unstructured<'_>, base: Reg) -> Result<i16> {
    if u.ratio(1, 8)? {
        return u.arbitrary();
    }
    Ok(if base == Reg::R10 {
        let slot: i16 = u.int_in_range(1..=64)?;
        let byte: i16 = u.int_in_range(0..=7)?;
        byte - slot * 8
    } else {
        u.int_in_range(-8..=72)?
    })
}

fn imm(u: &mut Unstructured<'_>) -> Result<i32> {
    Ok(match u.int_in_range(0..=3)? {
        0 => u.int_in_range(-4..=4)?,
        1 => *u.choose(&[
            i32::MIN,
            i32::MAX,
            -1,
            0x7fff,
            0x8000,
            0xffff,
            31,
            32,
            63,
            64,
        ])?,
        _ => u.arbitrary()?,
    })
}

fn width(u: &mut Unstructured<'_>) -> Result<Width> {
    Ok(if u.arbitrary()? {
        Width::W64
    } else {
        Width::W32
    })
}

fn source(u: &mut Unstructured<'_>) -> Result<Source> {
    Ok(if u.arbitrary()? {
        Source::Reg(any_reg(u)?)
    } else {
        Source::Imm(imm(u)?)
    })
}

/// One random valid instruction. Jumps, local calls and function addresses
/// get offset 0; [`program`] fixes them up.
pub fn instruction(u: &mut Unstructured<'_>, cfg: &GenConfig) -> Result<Instruction> {
    Ok(match u.int_in_range(0..=19)? {
        0..=5 => Instruction::Alu {
            width: width(u)?,
            op: *u.choose(&AluOp::ALL)?,
            dst: writable_reg(u)?,
            src: source(u)?,
        },
        6 => {
            let width = width(u)?;
            let bits = match width {
                Width::W32 => *u.choose(&[8u8, 16])?,
                Width::W64 => *u.choose(&[8u8, 16, 32])?,
            };
            Instruction::MovSx {
                width,
                dst: writable_reg(u)?,
                src: any_reg(u)?,
                bits,
            }
        }
        7 => {
            if u.arbitrary()? {
                Instruction::Neg {
                    width: width(u)?,
                    dst: writable_reg(u)?,
                }
            } else {
                Instruction::Endian {
                    op: *u.choose(&[EndianOp::ToLe, EndianOp::ToBe, EndianOp::Swap])?,
                    dst: writable_reg(u)?,
                    bits: *u.choose(&[16u8, 32, 64])?,
                }
            }
        }
        8..=9 => {
            let src = base_reg(u)?;
            let off = mem_off(u, src)?;
            let dst = writable_reg(u)?;
            if u.ratio(1, 4)? {
                Instruction::LoadSx {
                    size: *u.choose(&[MemSize::B, MemSize::H, MemSize::W])?,
                    dst,
                    src,
                    off,
                }
            } else {
                Instruction::Load {
                    size: *u.choose(&MemSize::ALL)?,
                    dst,
                    src,
                    off,
                }
            }
        }
        10..=11 => {
            let dst = base_reg(u)?;
            Instruction::Store {
                size: *u.choose(&MemSize::ALL)?,
                dst,
                off: mem_off(u, dst)?,
                src: source(u)?,
            }
        }
        12 => {
            let dst = base_reg(u)?;
            let op = *u.choose(&AtomicOp::ALL)?;
            let fetch = op.always_fetches() || u.arbitrary()?;
            Instruction::Atomic {
                size: *u.choose(&[MemSize::W, MemSize::DW])?,
                op,
                fetch,
                dst,
                // A fetching atomic writes `src`: never r10.
                src: if fetch { writable_reg(u)? } else { any_reg(u)? },
                off: mem_off(u, dst)? & !7,
            }
        }
        13 => Instruction::LoadImm64 {
            dst: writable_reg(u)?,
            value: if u.ratio(1, 4)? {
                Lddw::Func(0)
            } else {
                Lddw::Imm(u.arbitrary()?)
            },
        },
        14..=16 => Instruction::Jump {
            width: width(u)?,
            cond: *u.choose(&JmpCond::ALL)?,
            dst: any_reg(u)?,
            src: source(u)?,
            off: 0,
        },
        17 => {
            if u.arbitrary()? {
                Instruction::Ja { off: 0 }
            } else {
                Instruction::JaLong { imm: 0 }
            }
        }
        18 => {
            if !cfg.helper_ids.is_empty() && u.arbitrary()? {
                Instruction::Call(CallTarget::Helper(*u.choose(&cfg.helper_ids)?))
            } else if cfg.callx && u.ratio(1, 4)? {
                Instruction::CallX { reg: any_reg(u)? }
            } else {
                Instruction::Call(CallTarget::Local(0))
            }
        }
        _ => {
            if cfg.packet_loads && u.arbitrary()? {
                Instruction::LoadPacket {
                    size: *u.choose(&[MemSize::B, MemSize::H, MemSize::W])?,
                    mode: if u.arbitrary()? {
                        PacketMode::Abs
                    } else {
                        PacketMode::Ind(any_reg(u)?)
                    },
                    imm: u.int_in_range(-4..=80)?,
                }
            } else {
                Instruction::Exit
            }
        }
    })
}

/// A random valid program (slots) ending with `exit`.
pub fn program(u: &mut Unstructured<'_>, cfg: &GenConfig) -> Result<Vec<Insn>> {
    let n = u.int_in_range(0..=cfg.max_insns.max(1))?;
    let mut list = Vec::with_capacity(n + 1);
    for _ in 0..n {
        if u.is_empty() {
            break;
        }
        list.push(instruction(u, cfg)?);
    }
    list.push(Instruction::Exit);
    // Slot position of each instruction.
    let mut slot = Vec::with_capacity(list.len());
    let mut pos = 0i64;
    for i in &list {
        slot.push(pos);
        pos += i.slots() as i64;
    }
    let count = list.len();
    for idx in 0..count {
        let needs_target = matches!(
            list[idx],
            Instruction::Ja { .. }
                | Instruction::JaLong { .. }
                | Instruction::Jump { .. }
                | Instruction::Call(CallTarget::Local(_))
                | Instruction::LoadImm64 {
                    value: Lddw::Func(_),
                    ..
                }
        );
        if !needs_target {
            continue;
        }
        let t = u.choose_index(count)?;
        let rel = slot[t] - slot[idx] - 1;
        let off16 = i16::try_from(rel).unwrap_or(0);
        let rel32 = i32::try_from(rel).unwrap_or(0);
        list[idx] = match list[idx] {
            Instruction::Ja { .. } => Instruction::Ja { off: off16 },
            Instruction::JaLong { .. } => Instruction::JaLong { imm: rel32 },
            Instruction::Jump {
                width,
                cond,
                dst,
                src,
                ..
            } => Instruction::Jump {
                width,
                cond,
                dst,
                src,
                off: off16,
            },
            Instruction::Call(_) => Instruction::Call(CallTarget::Local(rel32)),
            Instruction::LoadImm64 { dst, .. } => Instruction::LoadImm64 {
                dst,
                value: Lddw::Func(rel32),
            },
            other => other,
        };
    }
    Ok(crate::isa::encode_all(&list))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::Program;

    #[test]
    fn generated_programs_are_valid() {
        let cfg = GenConfig {
            helper_ids: vec![1, 2],
            ..GenConfig::default()
        };
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..500 {
            let bytes: Vec<u8> = (0..512)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let mut u = Unstructured::new(&bytes);
            let insns = program(&mut u, &cfg).unwrap();
            Program::new("gen", insns).unwrap();
        }
    }
}
