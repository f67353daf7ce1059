//! A disassembler printing the C-like syntax of llvm-objdump and bpftool.
//!
//! ```text
//!    0: r1 = 0x1122334455667788 ll
//!    2: r0 = *(u32 *)(r1 + 4)
//!    3: if r0 s> 5 goto +1
//!    4: call bpf_map_lookup_elem#1
//!    5: exit
//! ```
//!
//! 32-bit ALU and jump instructions use `w` registers, 64-bit ones `r`
//! registers. Immediates are printed in signed decimal, except the 64-bit
//! constant of `lddw`, printed in hex with the ` ll` suffix. Jump and call
//! offsets are relative and always carry their sign (`goto +3`, `call pc-2`).
//! [`crate::asm::assemble`] reads everything printed here back into the same
//! instructions.

use std::fmt;

use crate::helper_names::helper_name;
use crate::insn::Insn;
use crate::isa::{
    decode_all, AluOp, AtomicOp, CallTarget, DecodeError, EndianOp, Instruction, Lddw, MemSize,
    PacketMode, Reg, Source, Width,
};

/// Displays one instruction in the C-like syntax (see [`format_instruction`]).
#[derive(Debug, Clone, Copy)]
pub struct Disasm<'a>(pub &'a Instruction);

/// The C-like text of one instruction, without pc or newline
/// (`r0 = *(u32 *)(r1 + 4)`).
pub fn format_instruction(i: &Instruction) -> String {
    Disasm(i).to_string()
}

/// Disassembles a whole program: one line per instruction, `"{pc:>4}: {text}\n"`,
/// where `pc` is the slot index (an `lddw` takes two slots, so the pc of the
/// instruction after it skips one).
pub fn disassemble(insns: &[Insn]) -> Result<String, DecodeError> {
    let mut out = String::new();
    for (pc, i) in decode_all(insns)? {
        out.push_str(&format!("{pc:>4}: {}\n", Disasm(&i)));
    }
    Ok(out)
}

/// A register printed with the letter of its width (`w1` or `r1`).
struct R(Width, Reg);

impl fmt::Display for R {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let letter = match self.0 {
            Width::W32 => 'w',
            Width::W64 => 'r',
        };
        write!(f, "{letter}{}", self.1.num())
    }
}

/// A second operand: register of the given width or signed decimal immediate.
struct Src(Width, Source);

impl fmt::Display for Src {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Source::Reg(r) => R(self.0, r).fmt(f),
            Source::Imm(imm) => write!(f, "{imm}"),
        }
    }
}

/// `r1 + 4` / `r10 - 8`: base register and displacement, sign always shown.
struct Addr(Reg, i16);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let off = i32::from(self.1);
        let sign = if off < 0 { '-' } else { '+' };
        write!(f, "r{} {sign} {}", self.0.num(), off.unsigned_abs())
    }
}

/// A relative target with its sign (`+3`, `-1`, `+0`).
struct Rel(i64);

impl fmt::Display for Rel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:+}", self.0)
    }
}

fn unsigned_type(size: MemSize) -> &'static str {
    match size {
        MemSize::B => "u8",
        MemSize::H => "u16",
        MemSize::W => "u32",
        MemSize::DW => "u64",
    }
}

fn signed_type(size: MemSize) -> &'static str {
    match size {
        MemSize::B => "s8",
        MemSize::H => "s16",
        MemSize::W => "s32",
        MemSize::DW => "s64",
    }
}

/// The compound-assignment operator of an ALU operation (`+`, `s/`, ...;
/// empty for `mov`).
fn alu_operator(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "+",
        AluOp::Sub => "-",
        AluOp::Mul => "*",
        AluOp::Div => "/",
        AluOp::SDiv => "s/",
        AluOp::Or => "|",
        AluOp::And => "&",
        AluOp::Lsh => "<<",
        AluOp::Rsh => ">>",
        AluOp::Mod => "%",
        AluOp::SMod => "s%",
        AluOp::Xor => "^",
        AluOp::Mov => "",
        AluOp::Arsh => "s>>",
    }
}

/// Width of the registers an atomic operation of this size works on.
fn atomic_width(size: MemSize) -> Width {
    match size {
        MemSize::DW => Width::W64,
        _ => Width::W32,
    }
}

impl fmt::Display for Disasm<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.0 {
            Instruction::Alu {
                width,
                op,
                dst,
                src,
            } => write!(
                f,
                "{} {}= {}",
                R(width, dst),
                alu_operator(op),
                Src(width, src)
            ),
            Instruction::MovSx {
                width,
                dst,
                src,
                bits,
            } => write!(f, "{} = (s{bits}){}", R(width, dst), R(width, src)),
            Instruction::Neg { width, dst } => {
                write!(f, "{} = -{}", R(width, dst), R(width, dst))
            }
            Instruction::Endian { op, dst, bits } => {
                let name = match op {
                    EndianOp::ToLe => "le",
                    EndianOp::ToBe => "be",
                    EndianOp::Swap => "bswap",
                };
                write!(f, "{dst} = {name}{bits} {dst}")
            }
            Instruction::Load {
                size,
                dst,
                src,
                off,
            } => write!(
                f,
                "{dst} = *({} *)({})",
                unsigned_type(size),
                Addr(src, off)
            ),
            Instruction::LoadSx {
                size,
                dst,
                src,
                off,
            } => write!(f, "{dst} = *({} *)({})", signed_type(size), Addr(src, off)),
            Instruction::Store {
                size,
                dst,
                off,
                src,
            } => write!(
                f,
                "*({} *)({}) = {}",
                unsigned_type(size),
                Addr(dst, off),
                Src(Width::W64, src)
            ),
            Instruction::Atomic {
                size,
                op,
                fetch,
                dst,
                src,
                off,
            } => {
                let w = atomic_width(size);
                let ty = unsigned_type(size);
                let addr = Addr(dst, off);
                let (name, operator) = match op {
                    AtomicOp::Add => ("add", "+"),
                    AtomicOp::Or => ("or", "|"),
                    AtomicOp::And => ("and", "&"),
                    AtomicOp::Xor => ("xor", "^"),
                    AtomicOp::Xchg => {
                        let name = if w == Width::W64 {
                            "xchg_64"
                        } else {
                            "xchg32_32"
                        };
                        return write!(f, "{} = {name}({addr}, {})", R(w, src), R(w, src));
                    }
                    AtomicOp::CmpXchg => {
                        let name = if w == Width::W64 {
                            "cmpxchg_64"
                        } else {
                            "cmpxchg32_32"
                        };
                        return write!(
                            f,
                            "{} = {name}({addr}, {}, {})",
                            R(w, Reg::R0),
                            R(w, Reg::R0),
                            R(w, src)
                        );
                    }
                };
                if fetch {
                    write!(
                        f,
                        "{} = atomic_fetch_{name}(({ty} *)({addr}), {})",
                        R(w, src),
                        R(w, src)
                    )
                } else {
                    write!(f, "lock *({ty} *)({addr}) {operator}= {}", R(w, src))
                }
            }
            Instruction::LoadImm64 { dst, value } => match value {
                Lddw::Imm(v) => write!(f, "{dst} = {v:#x} ll"),
                Lddw::MapFd(fd) => write!(f, "{dst} = map[fd:{fd}]"),
                Lddw::MapValue { fd, off } => write!(f, "{dst} = map[fd:{fd}][0]+{off}"),
                Lddw::MapIdx(idx) => write!(f, "{dst} = map[idx:{idx}]"),
                Lddw::MapIdxValue { idx, off } => write!(f, "{dst} = map[idx:{idx}][0]+{off}"),
                Lddw::BtfVar { btf_id, btf_fd } => {
                    write!(f, "{dst} = var[btf_id:{btf_id}]")?;
                    if btf_fd != 0 {
                        write!(f, "[btf_fd:{btf_fd}]")?;
                    }
                    Ok(())
                }
                Lddw::Func(rel) => write!(f, "{dst} = func[pc{}]", Rel(i64::from(rel))),
            },
            Instruction::LoadPacket { size, mode, imm } => {
                write!(f, "r0 = *({} *)skb[", unsigned_type(size))?;
                match mode {
                    PacketMode::Abs => write!(f, "{imm}]"),
                    PacketMode::Ind(r) => {
                        let sign = if imm < 0 { '-' } else { '+' };
                        write!(f, "{r} {sign} {}]", imm.unsigned_abs())
                    }
                }
            }
            Instruction::Ja { off } => write!(f, "goto {}", Rel(i64::from(off))),
            Instruction::JaLong { imm } => write!(f, "gotol {}", Rel(i64::from(imm))),
            Instruction::Jump {
                width,
                cond,
                dst,
                src,
                off,
            } => write!(
                f,
                "if {} {} {} goto {}",
                R(width, dst),
                cond.operator(),
                Src(width, src),
                Rel(i64::from(off))
            ),
            Instruction::Call(target) => match target {
                CallTarget::Helper(id) => match helper_name(id) {
                    Some(name) => write!(f, "call {name}#{id}"),
                    None => write!(f, "call #{id}"),
                },
                CallTarget::Local(rel) => write!(f, "call pc{}", Rel(i64::from(rel))),
                CallTarget::Kfunc { btf_id, btf_idx } => {
                    write!(f, "call kfunc#{btf_id}")?;
                    if btf_idx != 0 {
                        write!(f, "[btf_idx:{btf_idx}]")?;
                    } else if let Some(name) = crate::kfunc::name_of(btf_id) {
                        write!(f, " // {name}")?;
                    }
                    Ok(())
                }
            },
            Instruction::CallX { reg } => write!(f, "callx {reg}"),
            Instruction::Exit => f.write_str("exit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{JmpCond, MemSize};

    fn r(n: u8) -> Reg {
        Reg::new(n).expect("valid register")
    }

    fn text(i: Instruction) -> String {
        let s = format_instruction(&i);
        assert_eq!(Disasm(&i).to_string(), s);
        s
    }

    fn alu(width: Width, op: AluOp, dst: u8, src: Source) -> String {
        text(Instruction::Alu {
            width,
            op,
            dst: r(dst),
            src,
        })
    }

    #[test]
    fn alu_forms() {
        use AluOp::*;
        use Width::*;
        let (imm, reg) = (Source::Imm, |n| Source::Reg(r(n)));
        assert_eq!(alu(W64, Add, 0, imm(1)), "r0 += 1");
        assert_eq!(alu(W32, Sub, 0, reg(1)), "w0 -= w1");
        assert_eq!(alu(W64, Mul, 0, reg(1)), "r0 *= r1");
        assert_eq!(alu(W64, Div, 0, reg(1)), "r0 /= r1");
        assert_eq!(alu(W64, SDiv, 0, reg(1)), "r0 s/= r1");
        assert_eq!(alu(W64, Mod, 0, imm(3)), "r0 %= 3");
        assert_eq!(alu(W64, SMod, 0, reg(1)), "r0 s%= r1");
        assert_eq!(alu(W64, Or, 0, reg(1)), "r0 |= r1");
        assert_eq!(alu(W64, And, 0, reg(1)), "r0 &= r1");
        assert_eq!(alu(W64, Lsh, 0, imm(3)), "r0 <<= 3");
        assert_eq!(alu(W64, Rsh, 0, imm(3)), "r0 >>= 3");
        assert_eq!(alu(W64, Arsh, 0, imm(3)), "r0 s>>= 3");
        assert_eq!(alu(W64, Xor, 0, reg(1)), "r0 ^= r1");
        assert_eq!(alu(W64, Mov, 0, imm(1)), "r0 = 1");
        assert_eq!(alu(W32, Mov, 0, reg(1)), "w0 = w1");
        assert_eq!(alu(W32, Add, 9, imm(-5)), "w9 += -5");
        assert_eq!(alu(W64, Mov, 0, imm(i32::MIN)), "r0 = -2147483648");
        assert_eq!(alu(W64, Mov, 0, reg(10)), "r0 = r10");
    }

    #[test]
    fn movsx_neg_endian() {
        let movsx = |width, bits| {
            text(Instruction::MovSx {
                width,
                dst: r(0),
                src: r(1),
                bits,
            })
        };
        assert_eq!(movsx(Width::W64, 8), "r0 = (s8)r1");
        assert_eq!(movsx(Width::W64, 16), "r0 = (s16)r1");
        assert_eq!(movsx(Width::W64, 32), "r0 = (s32)r1");
        assert_eq!(movsx(Width::W32, 8), "w0 = (s8)w1");
        assert_eq!(
            text(Instruction::Neg {
                width: Width::W64,
                dst: r(0)
            }),
            "r0 = -r0"
        );
        assert_eq!(
            text(Instruction::Neg {
                width: Width::W32,
                dst: r(0)
            }),
            "w0 = -w0"
        );
        let endian = |op, bits| {
            text(Instruction::Endian {
                op,
                dst: r(0),
                bits,
            })
        };
        assert_eq!(endian(EndianOp::ToLe, 16), "r0 = le16 r0");
        assert_eq!(endian(EndianOp::ToBe, 32), "r0 = be32 r0");
        assert_eq!(endian(EndianOp::Swap, 64), "r0 = bswap64 r0");
    }

    #[test]
    fn loads_and_stores() {
        let load = |size, dst, src, off| {
            text(Instruction::Load {
                size,
                dst: r(dst),
                src: r(src),
                off,
            })
        };
        assert_eq!(load(MemSize::W, 0, 1, 4), "r0 = *(u32 *)(r1 + 4)");
        assert_eq!(load(MemSize::B, 0, 10, -8), "r0 = *(u8 *)(r10 - 8)");
        assert_eq!(load(MemSize::DW, 3, 1, 0), "r3 = *(u64 *)(r1 + 0)");
        assert_eq!(
            load(MemSize::H, 3, 1, i16::MIN),
            "r3 = *(u16 *)(r1 - 32768)"
        );
        assert_eq!(
            text(Instruction::LoadSx {
                size: MemSize::H,
                dst: r(0),
                src: r(1),
                off: 2
            }),
            "r0 = *(s16 *)(r1 + 2)"
        );
        assert_eq!(
            text(Instruction::Store {
                size: MemSize::DW,
                dst: r(10),
                off: -8,
                src: Source::Reg(r(1))
            }),
            "*(u64 *)(r10 - 8) = r1"
        );
        assert_eq!(
            text(Instruction::Store {
                size: MemSize::W,
                dst: r(10),
                off: -8,
                src: Source::Imm(5)
            }),
            "*(u32 *)(r10 - 8) = 5"
        );
    }

    fn atomic(size: MemSize, op: AtomicOp, fetch: bool) -> String {
        text(Instruction::Atomic {
            size,
            op,
            fetch,
            dst: r(1),
            src: r(2),
            off: 0,
        })
    }

    #[test]
    fn atomics() {
        use AtomicOp::*;
        use MemSize::{DW, W};
        assert_eq!(atomic(DW, Add, false), "lock *(u64 *)(r1 + 0) += r2");
        assert_eq!(atomic(DW, Or, false), "lock *(u64 *)(r1 + 0) |= r2");
        assert_eq!(atomic(DW, And, false), "lock *(u64 *)(r1 + 0) &= r2");
        assert_eq!(atomic(DW, Xor, false), "lock *(u64 *)(r1 + 0) ^= r2");
        assert_eq!(atomic(W, Add, false), "lock *(u32 *)(r1 + 0) += w2");
        assert_eq!(
            atomic(DW, Add, true),
            "r2 = atomic_fetch_add((u64 *)(r1 + 0), r2)"
        );
        assert_eq!(
            atomic(DW, Or, true),
            "r2 = atomic_fetch_or((u64 *)(r1 + 0), r2)"
        );
        assert_eq!(
            atomic(DW, And, true),
            "r2 = atomic_fetch_and((u64 *)(r1 + 0), r2)"
        );
        assert_eq!(
            atomic(W, Xor, true),
            "w2 = atomic_fetch_xor((u32 *)(r1 + 0), w2)"
        );
        assert_eq!(atomic(DW, Xchg, true), "r2 = xchg_64(r1 + 0, r2)");
        assert_eq!(atomic(W, Xchg, true), "w2 = xchg32_32(r1 + 0, w2)");
        assert_eq!(atomic(DW, CmpXchg, true), "r0 = cmpxchg_64(r1 + 0, r0, r2)");
        assert_eq!(
            atomic(W, CmpXchg, true),
            "w0 = cmpxchg32_32(r1 + 0, w0, w2)"
        );
    }

    #[test]
    fn lddw_forms() {
        let lddw = |value| text(Instruction::LoadImm64 { dst: r(1), value });
        assert_eq!(
            lddw(Lddw::Imm(0x1122334455667788)),
            "r1 = 0x1122334455667788 ll"
        );
        assert_eq!(lddw(Lddw::Imm(0)), "r1 = 0x0 ll");
        assert_eq!(lddw(Lddw::Imm(u64::MAX)), "r1 = 0xffffffffffffffff ll");
        assert_eq!(lddw(Lddw::MapFd(3)), "r1 = map[fd:3]");
        assert_eq!(
            lddw(Lddw::MapValue { fd: 3, off: 16 }),
            "r1 = map[fd:3][0]+16"
        );
        assert_eq!(lddw(Lddw::MapIdx(2)), "r1 = map[idx:2]");
        assert_eq!(
            lddw(Lddw::MapIdxValue { idx: 2, off: 16 }),
            "r1 = map[idx:2][0]+16"
        );
        assert_eq!(
            lddw(Lddw::BtfVar {
                btf_id: 5,
                btf_fd: 0
            }),
            "r1 = var[btf_id:5]"
        );
        assert_eq!(
            lddw(Lddw::BtfVar {
                btf_id: 5,
                btf_fd: 7
            }),
            "r1 = var[btf_id:5][btf_fd:7]"
        );
        assert_eq!(lddw(Lddw::Func(5)), "r1 = func[pc+5]");
        assert_eq!(lddw(Lddw::Func(-3)), "r1 = func[pc-3]");
    }

    #[test]
    fn packet_loads() {
        let pkt = |size, mode, imm| text(Instruction::LoadPacket { size, mode, imm });
        assert_eq!(pkt(MemSize::B, PacketMode::Abs, 5), "r0 = *(u8 *)skb[5]");
        assert_eq!(pkt(MemSize::B, PacketMode::Abs, -5), "r0 = *(u8 *)skb[-5]");
        assert_eq!(
            pkt(MemSize::H, PacketMode::Ind(r(1)), 5),
            "r0 = *(u16 *)skb[r1 + 5]"
        );
        assert_eq!(
            pkt(MemSize::W, PacketMode::Ind(r(1)), -5),
            "r0 = *(u32 *)skb[r1 - 5]"
        );
    }

    #[test]
    fn jumps() {
        assert_eq!(text(Instruction::Ja { off: 3 }), "goto +3");
        assert_eq!(text(Instruction::Ja { off: -1 }), "goto -1");
        assert_eq!(text(Instruction::Ja { off: 0 }), "goto +0");
        assert_eq!(text(Instruction::JaLong { imm: 3 }), "gotol +3");
        let jump = |width, cond, src, off| {
            text(Instruction::Jump {
                width,
                cond,
                dst: r(1),
                src,
                off,
            })
        };
        assert_eq!(
            jump(Width::W64, JmpCond::Gt, Source::Imm(5), 3),
            "if r1 > 5 goto +3"
        );
        assert_eq!(
            jump(Width::W64, JmpCond::SGe, Source::Reg(r(2)), -2),
            "if r1 s>= r2 goto -2"
        );
        assert_eq!(
            jump(Width::W32, JmpCond::Eq, Source::Reg(r(2)), 1),
            "if w1 == w2 goto +1"
        );
        assert_eq!(
            jump(Width::W64, JmpCond::Set, Source::Imm(4), 1),
            "if r1 & 4 goto +1"
        );
    }

    #[test]
    fn calls_and_exit() {
        let call = |t| text(Instruction::Call(t));
        assert_eq!(call(CallTarget::Helper(1)), "call bpf_map_lookup_elem#1");
        assert_eq!(call(CallTarget::Helper(12345)), "call #12345");
        assert_eq!(call(CallTarget::Helper(0)), "call #0");
        assert_eq!(call(CallTarget::Helper(-7)), "call #-7");
        assert_eq!(call(CallTarget::Local(5)), "call pc+5");
        assert_eq!(call(CallTarget::Local(-3)), "call pc-3");
        assert_eq!(
            call(CallTarget::Kfunc {
                btf_id: 1234,
                btf_idx: 0
            }),
            "call kfunc#1234"
        );
        assert_eq!(
            call(CallTarget::Kfunc {
                btf_id: 1234,
                btf_idx: 2
            }),
            "call kfunc#1234[btf_idx:2]"
        );
        assert_eq!(text(Instruction::CallX { reg: r(2) }), "callx r2");
        assert_eq!(text(Instruction::Exit), "exit");
    }

    #[test]
    fn whole_programs_number_slots() {
        let program = [
            Instruction::LoadImm64 {
                dst: r(1),
                value: Lddw::Imm(0x1122334455667788),
            },
            Instruction::Alu {
                width: Width::W64,
                op: AluOp::Mov,
                dst: r(0),
                src: Source::Imm(1),
            },
            Instruction::Exit,
        ];
        let insns = crate::isa::encode_all(&program);
        assert_eq!(
            disassemble(&insns).expect("valid program"),
            "   0: r1 = 0x1122334455667788 ll\n   2: r0 = 1\n   3: exit\n"
        );
        assert_eq!(disassemble(&[]).expect("empty"), "");
        let err = disassemble(&[Insn::new(0xff, 0, 0, 0, 0)]).unwrap_err();
        assert_eq!(err.pc, 0);
    }
}
