//! The structured instruction set: RFC 9669 plus the v4 additions, decoded and
//! validated.
//!
//! [`Instruction`] can only hold encodable instructions; [`decode`] turns raw
//! slots into it and rejects anything the RFC (or the kernel) does not define,
//! including non-zero *unused* fields, with an error naming the pc.

use std::fmt;

use crate::insn::{op, Insn};

/// A register `r0`..`r10`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reg(u8);

impl Reg {
    /// Return value, scratch.
    pub const R0: Reg = Reg(0);
    /// First argument (the context on entry).
    pub const R1: Reg = Reg(1);
    /// Second argument.
    pub const R2: Reg = Reg(2);
    /// Third argument.
    pub const R3: Reg = Reg(3);
    /// Fourth argument.
    pub const R4: Reg = Reg(4);
    /// Fifth argument.
    pub const R5: Reg = Reg(5);
    /// Callee-saved.
    pub const R6: Reg = Reg(6);
    /// Callee-saved.
    pub const R7: Reg = Reg(7);
    /// Callee-saved.
    pub const R8: Reg = Reg(8);
    /// Callee-saved.
    pub const R9: Reg = Reg(9);
    /// Read-only frame pointer.
    pub const R10: Reg = Reg(10);
    /// The frame pointer, by its role.
    pub const FP: Reg = Reg::R10;

    /// `Some` for 0..=10.
    pub const fn new(n: u8) -> Option<Reg> {
        if n <= 10 {
            Some(Reg(n))
        } else {
            None
        }
    }

    /// The register number.
    pub const fn num(self) -> u8 {
        self.0
    }

    /// The register number as an index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// Operand width of ALU and jump instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    /// `BPF_ALU` / `BPF_JMP32`: operate on the low 32 bits (ALU results are
    /// zero-extended).
    W32,
    /// `BPF_ALU64` / `BPF_JMP`.
    W64,
}

/// The second operand of an ALU, jump or store instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// `BPF_X`: a register.
    Reg(Reg),
    /// `BPF_K`: the 32-bit immediate (sign-extended for 64-bit operations).
    Imm(i32),
}

/// Binary ALU operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AluOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// unsigned `/` (division by zero gives 0)
    Div,
    /// signed `/` (v4, `off = 1`)
    SDiv,
    /// `|`
    Or,
    /// `&`
    And,
    /// `<<` (shift amount masked)
    Lsh,
    /// logical `>>`
    Rsh,
    /// unsigned `%` (modulo by zero leaves dst)
    Mod,
    /// signed `%` (v4, `off = 1`)
    SMod,
    /// `^`
    Xor,
    /// `=`
    Mov,
    /// arithmetic `>>`
    Arsh,
}

impl AluOp {
    /// All operations, for generators.
    pub const ALL: [AluOp; 14] = [
        AluOp::Add,
        AluOp::Sub,
        AluOp::Mul,
        AluOp::Div,
        AluOp::SDiv,
        AluOp::Or,
        AluOp::And,
        AluOp::Lsh,
        AluOp::Rsh,
        AluOp::Mod,
        AluOp::SMod,
        AluOp::Xor,
        AluOp::Mov,
        AluOp::Arsh,
    ];

    fn code_and_off(self) -> (u8, i16) {
        match self {
            AluOp::Add => (op::ALU_ADD, 0),
            AluOp::Sub => (op::ALU_SUB, 0),
            AluOp::Mul => (op::ALU_MUL, 0),
            AluOp::Div => (op::ALU_DIV, 0),
            AluOp::SDiv => (op::ALU_DIV, 1),
            AluOp::Or => (op::ALU_OR, 0),
            AluOp::And => (op::ALU_AND, 0),
            AluOp::Lsh => (op::ALU_LSH, 0),
            AluOp::Rsh => (op::ALU_RSH, 0),
            AluOp::Mod => (op::ALU_MOD, 0),
            AluOp::SMod => (op::ALU_MOD, 1),
            AluOp::Xor => (op::ALU_XOR, 0),
            AluOp::Mov => (op::ALU_MOV, 0),
            AluOp::Arsh => (op::ALU_ARSH, 0),
        }
    }

    /// The conformance-suite mnemonic (without the `32` suffix).
    pub fn mnemonic(self) -> &'static str {
        match self {
            AluOp::Add => "add",
            AluOp::Sub => "sub",
            AluOp::Mul => "mul",
            AluOp::Div => "div",
            AluOp::SDiv => "sdiv",
            AluOp::Or => "or",
            AluOp::And => "and",
            AluOp::Lsh => "lsh",
            AluOp::Rsh => "rsh",
            AluOp::Mod => "mod",
            AluOp::SMod => "smod",
            AluOp::Xor => "xor",
            AluOp::Mov => "mov",
            AluOp::Arsh => "arsh",
        }
    }
}

/// Access size of loads, stores and atomics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemSize {
    /// 1 byte (`u8`).
    B,
    /// 2 bytes (`u16`).
    H,
    /// 4 bytes (`u32`).
    W,
    /// 8 bytes (`u64`).
    DW,
}

impl MemSize {
    /// All sizes, for generators.
    pub const ALL: [MemSize; 4] = [MemSize::B, MemSize::H, MemSize::W, MemSize::DW];

    /// Size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            MemSize::B => 1,
            MemSize::H => 2,
            MemSize::W => 4,
            MemSize::DW => 8,
        }
    }

    /// Size in bits.
    pub const fn bits(self) -> u32 {
        (self.bytes() * 8) as u32
    }

    const fn code(self) -> u8 {
        match self {
            MemSize::B => op::SIZE_B,
            MemSize::H => op::SIZE_H,
            MemSize::W => op::SIZE_W,
            MemSize::DW => op::SIZE_DW,
        }
    }

    const fn from_code(code: u8) -> MemSize {
        match code & 0x18 {
            op::SIZE_B => MemSize::B,
            op::SIZE_H => MemSize::H,
            op::SIZE_W => MemSize::W,
            _ => MemSize::DW,
        }
    }

    /// The conformance-suite suffix (`b`, `h`, `w`, `dw`).
    pub fn suffix(self) -> &'static str {
        match self {
            MemSize::B => "b",
            MemSize::H => "h",
            MemSize::W => "w",
            MemSize::DW => "dw",
        }
    }
}

/// Conditions of conditional jumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JmpCond {
    /// `==`
    Eq,
    /// unsigned `>`
    Gt,
    /// unsigned `>=`
    Ge,
    /// `&` (jump if any bit in common)
    Set,
    /// `!=`
    Ne,
    /// signed `>`
    SGt,
    /// signed `>=`
    SGe,
    /// unsigned `<`
    Lt,
    /// unsigned `<=`
    Le,
    /// signed `<`
    SLt,
    /// signed `<=`
    SLe,
}

impl JmpCond {
    /// All conditions, for generators.
    pub const ALL: [JmpCond; 11] = [
        JmpCond::Eq,
        JmpCond::Gt,
        JmpCond::Ge,
        JmpCond::Set,
        JmpCond::Ne,
        JmpCond::SGt,
        JmpCond::SGe,
        JmpCond::Lt,
        JmpCond::Le,
        JmpCond::SLt,
        JmpCond::SLe,
    ];

    const fn code(self) -> u8 {
        match self {
            JmpCond::Eq => op::JMP_JEQ,
            JmpCond::Gt => op::JMP_JGT,
            JmpCond::Ge => op::JMP_JGE,
            JmpCond::Set => op::JMP_JSET,
            JmpCond::Ne => op::JMP_JNE,
            JmpCond::SGt => op::JMP_JSGT,
            JmpCond::SGe => op::JMP_JSGE,
            JmpCond::Lt => op::JMP_JLT,
            JmpCond::Le => op::JMP_JLE,
            JmpCond::SLt => op::JMP_JSLT,
            JmpCond::SLe => op::JMP_JSLE,
        }
    }

    const fn from_code(code: u8) -> Option<JmpCond> {
        Some(match code & 0xf0 {
            op::JMP_JEQ => JmpCond::Eq,
            op::JMP_JGT => JmpCond::Gt,
            op::JMP_JGE => JmpCond::Ge,
            op::JMP_JSET => JmpCond::Set,
            op::JMP_JNE => JmpCond::Ne,
            op::JMP_JSGT => JmpCond::SGt,
            op::JMP_JSGE => JmpCond::SGe,
            op::JMP_JLT => JmpCond::Lt,
            op::JMP_JLE => JmpCond::Le,
            op::JMP_JSLT => JmpCond::SLt,
            op::JMP_JSLE => JmpCond::SLe,
            _ => return None,
        })
    }

    /// The conformance-suite mnemonic (`jeq`, `jsgt`, ...; without `32`).
    pub fn mnemonic(self) -> &'static str {
        match self {
            JmpCond::Eq => "jeq",
            JmpCond::Gt => "jgt",
            JmpCond::Ge => "jge",
            JmpCond::Set => "jset",
            JmpCond::Ne => "jne",
            JmpCond::SGt => "jsgt",
            JmpCond::SGe => "jsge",
            JmpCond::Lt => "jlt",
            JmpCond::Le => "jle",
            JmpCond::SLt => "jslt",
            JmpCond::SLe => "jsle",
        }
    }

    /// The C-like operator (`==`, `s>`, `&`, ...).
    pub fn operator(self) -> &'static str {
        match self {
            JmpCond::Eq => "==",
            JmpCond::Gt => ">",
            JmpCond::Ge => ">=",
            JmpCond::Set => "&",
            JmpCond::Ne => "!=",
            JmpCond::SGt => "s>",
            JmpCond::SGe => "s>=",
            JmpCond::Lt => "<",
            JmpCond::Le => "<=",
            JmpCond::SLt => "s<",
            JmpCond::SLe => "s<=",
        }
    }
}

/// Atomic read-modify-write operations (`BPF_ATOMIC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    /// `*addr += src`, with `fetch`: `src = old`.
    Add,
    /// `*addr |= src`.
    Or,
    /// `*addr &= src`.
    And,
    /// `*addr ^= src`.
    Xor,
    /// `src = xchg(*addr, src)` (always fetches).
    Xchg,
    /// `r0 = cmpxchg(*addr, r0, src)` (always fetches).
    CmpXchg,
}

impl AtomicOp {
    /// All operations, for generators.
    pub const ALL: [AtomicOp; 6] = [
        AtomicOp::Add,
        AtomicOp::Or,
        AtomicOp::And,
        AtomicOp::Xor,
        AtomicOp::Xchg,
        AtomicOp::CmpXchg,
    ];

    /// Whether the operation always returns the old value.
    pub const fn always_fetches(self) -> bool {
        matches!(self, AtomicOp::Xchg | AtomicOp::CmpXchg)
    }

    /// The conformance-suite mnemonic.
    pub fn mnemonic(self) -> &'static str {
        match self {
            AtomicOp::Add => "add",
            AtomicOp::Or => "or",
            AtomicOp::And => "and",
            AtomicOp::Xor => "xor",
            AtomicOp::Xchg => "xchg",
            AtomicOp::CmpXchg => "cmpxchg",
        }
    }
}

/// Byte-order operations (`BPF_END`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndianOp {
    /// `le16/32/64`: convert host to little endian (truncates on x86-64).
    ToLe,
    /// `be16/32/64`: convert host to big endian.
    ToBe,
    /// `bswap16/32/64` (v4, `BPF_ALU64 | BPF_END`): unconditional swap.
    Swap,
}

/// The flavours of the two-slot `lddw` instruction (`src` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lddw {
    /// `src = 0`: a 64-bit constant.
    Imm(u64),
    /// `src = 1` (`BPF_PSEUDO_MAP_FD`): pointer to the map with this fd.
    MapFd(i32),
    /// `src = 2` (`BPF_PSEUDO_MAP_VALUE`): address of a map's value + offset.
    MapValue {
        /// Map fd.
        fd: i32,
        /// Byte offset into the (single) value.
        off: u32,
    },
    /// `src = 3` (`BPF_PSEUDO_BTF_ID`): address of a kernel variable.
    BtfVar {
        /// BTF id of the variable.
        btf_id: i32,
        /// fd of the module BTF, 0 for vmlinux.
        btf_fd: i32,
    },
    /// `src = 4` (`BPF_PSEUDO_FUNC`): address of the subprogram at
    /// `pc + off + 1`.
    Func(i32),
    /// `src = 5` (`BPF_PSEUDO_MAP_IDX`): map by index into `fd_array`.
    MapIdx(i32),
    /// `src = 6` (`BPF_PSEUDO_MAP_IDX_VALUE`): map index + value offset.
    MapIdxValue {
        /// Index into `fd_array`.
        idx: i32,
        /// Byte offset into the value.
        off: u32,
    },
}

impl Lddw {
    /// The `src` field value of this flavour.
    pub const fn src(self) -> u8 {
        match self {
            Lddw::Imm(_) => op::PSEUDO_IMM64,
            Lddw::MapFd(_) => op::PSEUDO_MAP_FD,
            Lddw::MapValue { .. } => op::PSEUDO_MAP_VALUE,
            Lddw::BtfVar { .. } => op::PSEUDO_BTF_ID,
            Lddw::Func(_) => op::PSEUDO_FUNC,
            Lddw::MapIdx(_) => op::PSEUDO_MAP_IDX,
            Lddw::MapIdxValue { .. } => op::PSEUDO_MAP_IDX_VALUE,
        }
    }

    /// The two 32-bit immediates (first slot, second slot).
    pub const fn imms(self) -> (i32, i32) {
        match self {
            Lddw::Imm(v) => (v as u32 as i32, (v >> 32) as u32 as i32),
            Lddw::MapFd(fd) => (fd, 0),
            Lddw::MapValue { fd, off } => (fd, off as i32),
            Lddw::BtfVar { btf_id, btf_fd } => (btf_id, btf_fd),
            Lddw::Func(off) => (off, 0),
            Lddw::MapIdx(idx) => (idx, 0),
            Lddw::MapIdxValue { idx, off } => (idx, off as i32),
        }
    }
}

/// Legacy packet-load addressing (`BPF_LD | BPF_ABS/BPF_IND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketMode {
    /// `BPF_ABS`: offset `imm`.
    Abs,
    /// `BPF_IND`: offset `src + imm`.
    Ind(Reg),
}

/// What a `call` (opcode 0x85) calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallTarget {
    /// `src = 0`: a helper by its (kernel) id.
    Helper(i32),
    /// `src = 1` (`BPF_PSEUDO_CALL`): the subprogram at `pc + imm + 1`.
    Local(i32),
    /// `src = 2` (`BPF_PSEUDO_KFUNC_CALL`): a kernel function by BTF id.
    /// Decoded, but not callable in user space.
    Kfunc {
        /// BTF id of the function.
        btf_id: i32,
        /// Index of the module BTF in `fd_array` (0: vmlinux).
        btf_idx: i16,
    },
}

/// One decoded, valid instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Instruction {
    /// `dst op= src` (all binary ALU operations, `mov` included).
    Alu {
        /// 32 or 64 bit.
        width: Width,
        /// The operation.
        op: AluOp,
        /// Destination (and first operand).
        dst: Reg,
        /// Second operand.
        src: Source,
    },
    /// `dst = (sN) src` (v4 `movsx`, `BPF_MOV | BPF_X` with `off = 8/16/32`).
    MovSx {
        /// 32 (8 and 16 bit sources) or 64 bit (8, 16 and 32).
        width: Width,
        /// Destination.
        dst: Reg,
        /// Source register.
        src: Reg,
        /// Source bits to sign-extend from: 8, 16 or 32.
        bits: u8,
    },
    /// `dst = -dst`.
    Neg {
        /// 32 or 64 bit.
        width: Width,
        /// Operand and destination.
        dst: Reg,
    },
    /// Byte swaps: `le16/32/64`, `be16/32/64`, `bswap16/32/64`.
    Endian {
        /// Conversion.
        op: EndianOp,
        /// Operand and destination.
        dst: Reg,
        /// 16, 32 or 64.
        bits: u8,
    },
    /// `dst = *(size *)(src + off)`, zero-extended.
    Load {
        /// Access size.
        size: MemSize,
        /// Destination.
        dst: Reg,
        /// Base address register.
        src: Reg,
        /// Displacement.
        off: i16,
    },
    /// `dst = *(sN *)(src + off)`, sign-extended (v4 `ldxs{b,h,w}`).
    LoadSx {
        /// Access size: B, H or W.
        size: MemSize,
        /// Destination.
        dst: Reg,
        /// Base address register.
        src: Reg,
        /// Displacement.
        off: i16,
    },
    /// `*(size *)(dst + off) = src` (`st` with an immediate, `stx` with a
    /// register).
    Store {
        /// Access size.
        size: MemSize,
        /// Base address register.
        dst: Reg,
        /// Displacement.
        off: i16,
        /// Value stored.
        src: Source,
    },
    /// Atomic read-modify-write on `*(size *)(dst + off)` (W or DW).
    Atomic {
        /// W or DW.
        size: MemSize,
        /// The operation.
        op: AtomicOp,
        /// `BPF_FETCH`: return the old value in `src` (`r0` for cmpxchg).
        fetch: bool,
        /// Base address register.
        dst: Reg,
        /// Operand register.
        src: Reg,
        /// Displacement.
        off: i16,
    },
    /// The two-slot `lddw`.
    LoadImm64 {
        /// Destination.
        dst: Reg,
        /// What is loaded.
        value: Lddw,
    },
    /// Legacy packet load into `r0` (`BPF_LD | BPF_ABS/BPF_IND`), big endian.
    LoadPacket {
        /// B, H or W.
        size: MemSize,
        /// Absolute or register-relative.
        mode: PacketMode,
        /// Offset.
        imm: i32,
    },
    /// `goto pc + off + 1` (`ja`).
    Ja {
        /// Relative target.
        off: i16,
    },
    /// `gotol pc + imm + 1` (v4 `ja32`, `BPF_JMP32 | BPF_JA`).
    JaLong {
        /// Relative target.
        imm: i32,
    },
    /// `if dst cond src goto pc + off + 1`.
    Jump {
        /// 64-bit (`BPF_JMP`) or 32-bit (`BPF_JMP32`) comparison.
        width: Width,
        /// Condition.
        cond: JmpCond,
        /// First operand.
        dst: Reg,
        /// Second operand.
        src: Source,
        /// Relative target.
        off: i16,
    },
    /// `call`.
    Call(CallTarget),
    /// `callx reg` (register in the `dst` field).
    CallX {
        /// Register holding the target.
        reg: Reg,
    },
    /// `exit`: return `r0`.
    Exit,
}

impl Instruction {
    /// Number of 8-byte slots (2 for `lddw`, else 1).
    pub const fn slots(&self) -> usize {
        match self {
            Instruction::LoadImm64 { .. } => 2,
            _ => 1,
        }
    }

    /// Appends the encoding of `self` to `out`.
    pub fn encode_into(&self, out: &mut Vec<Insn>) {
        let width_class = |w: Width, c32: u8, c64: u8| match w {
            Width::W32 => c32,
            Width::W64 => c64,
        };
        let insn = match *self {
            Instruction::Alu {
                width,
                op: alu,
                dst,
                src,
            } => {
                let class = width_class(width, op::CLS_ALU, op::CLS_ALU64);
                let (code, off) = alu.code_and_off();
                match src {
                    Source::Reg(s) => {
                        Insn::new(class | code | op::SRC_X, dst.num(), s.num(), off, 0)
                    }
                    Source::Imm(imm) => Insn::new(class | code | op::SRC_K, dst.num(), 0, off, imm),
                }
            }
            Instruction::MovSx {
                width,
                dst,
                src,
                bits,
            } => Insn::new(
                width_class(width, op::CLS_ALU, op::CLS_ALU64) | op::ALU_MOV | op::SRC_X,
                dst.num(),
                src.num(),
                i16::from(bits),
                0,
            ),
            Instruction::Neg { width, dst } => Insn::new(
                width_class(width, op::CLS_ALU, op::CLS_ALU64) | op::ALU_NEG,
                dst.num(),
                0,
                0,
                0,
            ),
            Instruction::Endian { op: e, dst, bits } => {
                let code = match e {
                    EndianOp::ToLe => op::CLS_ALU | op::ALU_END | op::END_TO_LE,
                    EndianOp::ToBe => op::CLS_ALU | op::ALU_END | op::END_TO_BE,
                    EndianOp::Swap => op::CLS_ALU64 | op::ALU_END | op::END_TO_LE,
                };
                Insn::new(code, dst.num(), 0, 0, i32::from(bits))
            }
            Instruction::Load {
                size,
                dst,
                src,
                off,
            } => Insn::new(
                op::CLS_LDX | op::MODE_MEM | size.code(),
                dst.num(),
                src.num(),
                off,
                0,
            ),
            Instruction::LoadSx {
                size,
                dst,
                src,
                off,
            } => Insn::new(
                op::CLS_LDX | op::MODE_MEMSX | size.code(),
                dst.num(),
                src.num(),
                off,
                0,
            ),
            Instruction::Store {
                size,
                dst,
                off,
                src,
            } => match src {
                Source::Reg(s) => Insn::new(
                    op::CLS_STX | op::MODE_MEM | size.code(),
                    dst.num(),
                    s.num(),
                    off,
                    0,
                ),
                Source::Imm(imm) => Insn::new(
                    op::CLS_ST | op::MODE_MEM | size.code(),
                    dst.num(),
                    0,
                    off,
                    imm,
                ),
            },
            Instruction::Atomic {
                size,
                op: a,
                fetch,
                dst,
                src,
                off,
            } => {
                let imm = match a {
                    AtomicOp::Add => op::ATOMIC_ADD,
                    AtomicOp::Or => op::ATOMIC_OR,
                    AtomicOp::And => op::ATOMIC_AND,
                    AtomicOp::Xor => op::ATOMIC_XOR,
                    AtomicOp::Xchg => op::ATOMIC_XCHG,
                    AtomicOp::CmpXchg => op::ATOMIC_CMPXCHG,
                } | if fetch { op::ATOMIC_FETCH } else { 0 };
                Insn::new(
                    op::CLS_STX | op::MODE_ATOMIC | size.code(),
                    dst.num(),
                    src.num(),
                    off,
                    imm,
                )
            }
            Instruction::LoadImm64 { dst, value } => {
                let (lo, hi) = value.imms();
                out.push(Insn::new(op::LDDW, dst.num(), value.src(), 0, lo));
                out.push(Insn::new(0, 0, 0, 0, hi));
                return;
            }
            Instruction::LoadPacket { size, mode, imm } => match mode {
                PacketMode::Abs => Insn::new(op::CLS_LD | op::MODE_ABS | size.code(), 0, 0, 0, imm),
                PacketMode::Ind(r) => {
                    Insn::new(op::CLS_LD | op::MODE_IND | size.code(), 0, r.num(), 0, imm)
                }
            },
            Instruction::Ja { off } => Insn::new(op::JA, 0, 0, off, 0),
            Instruction::JaLong { imm } => Insn::new(op::JA32, 0, 0, 0, imm),
            Instruction::Jump {
                width,
                cond,
                dst,
                src,
                off,
            } => {
                let class = width_class(width, op::CLS_JMP32, op::CLS_JMP);
                match src {
                    Source::Reg(s) => {
                        Insn::new(class | cond.code() | op::SRC_X, dst.num(), s.num(), off, 0)
                    }
                    Source::Imm(imm) => Insn::new(class | cond.code(), dst.num(), 0, off, imm),
                }
            }
            Instruction::Call(target) => match target {
                CallTarget::Helper(id) => Insn::new(op::CALL, 0, op::CALL_HELPER, 0, id),
                CallTarget::Local(rel) => Insn::new(op::CALL, 0, op::CALL_LOCAL, 0, rel),
                CallTarget::Kfunc { btf_id, btf_idx } => {
                    Insn::new(op::CALL, 0, op::CALL_KFUNC, btf_idx, btf_id)
                }
            },
            Instruction::CallX { reg } => Insn::new(op::CALLX, reg.num(), 0, 0, 0),
            Instruction::Exit => Insn::new(op::EXIT, 0, 0, 0, 0),
        };
        out.push(insn);
    }

    /// The encoding of `self` (one or two slots).
    pub fn encode(&self) -> Vec<Insn> {
        let mut v = Vec::with_capacity(2);
        self.encode_into(&mut v);
        v
    }

    /// The pc-relative target of a jump, if `self` is one (`ja`, `gotol`,
    /// conditional jumps): the target pc is `pc + 1 + rel`.
    pub const fn jump_offset(&self) -> Option<i64> {
        match *self {
            Instruction::Ja { off } => Some(off as i64),
            Instruction::JaLong { imm } => Some(imm as i64),
            Instruction::Jump { off, .. } => Some(off as i64),
            _ => None,
        }
    }

    /// The register written by `self`, if any (calls clobber r0-r5 and are
    /// not reported).
    pub const fn dst_written(&self) -> Option<Reg> {
        match *self {
            Instruction::Alu { dst, .. }
            | Instruction::MovSx { dst, .. }
            | Instruction::Neg { dst, .. }
            | Instruction::Endian { dst, .. }
            | Instruction::Load { dst, .. }
            | Instruction::LoadSx { dst, .. }
            | Instruction::LoadImm64 { dst, .. } => Some(dst),
            Instruction::LoadPacket { .. } => Some(Reg::R0),
            Instruction::Atomic {
                op: AtomicOp::CmpXchg,
                ..
            } => Some(Reg::R0),
            Instruction::Atomic {
                fetch: true, src, ..
            } => Some(src),
            _ => None,
        }
    }
}

/// A field of an instruction slot, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The destination register field.
    Dst,
    /// The source register field.
    Src,
    /// The offset field.
    Off,
    /// The immediate field.
    Imm,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Dst => "dst",
            Field::Src => "src",
            Field::Off => "off",
            Field::Imm => "imm",
        })
    }
}

/// Why a slot does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The opcode byte is not defined.
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// A field the instruction does not use holds a non-zero value.
    #[error("unused field `{field}` is {value}, must be 0")]
    UnusedFieldNotZero {
        /// The field.
        field: Field,
        /// Its value.
        value: i64,
    },
    /// A register field above r10.
    #[error("invalid register r{0}")]
    InvalidRegister(u8),
    /// An instruction that writes r10.
    #[error("frame pointer is read only (instruction writes r10)")]
    FramePointerWrite,
    /// A field holds a value the instruction does not define.
    #[error("invalid `{field}` value {value} ({what})")]
    InvalidField {
        /// The field.
        field: Field,
        /// Its value.
        value: i64,
        /// What the field may hold.
        what: &'static str,
    },
    /// `lddw` in the last slot.
    #[error("lddw needs two slots but the program ends after the first")]
    TruncatedLddw,
    /// The second `lddw` slot has non-zero fields besides `imm`.
    #[error("invalid second slot of lddw: code, dst, src and off must be 0")]
    BadLddwSecondSlot,
}

/// A slot that does not decode, with its pc.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid instruction at pc {pc} ({insn}): {kind}")]
pub struct DecodeError {
    /// Index of the offending slot.
    pub pc: usize,
    /// The slot.
    pub insn: Insn,
    /// The reason.
    pub kind: DecodeErrorKind,
}

struct Checker {
    pc: usize,
    insn: Insn,
}

impl Checker {
    fn err(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            pc: self.pc,
            insn: self.insn,
            kind,
        }
    }

    fn zero(&self, field: Field) -> Result<(), DecodeError> {
        let value = match field {
            Field::Dst => i64::from(self.insn.dst),
            Field::Src => i64::from(self.insn.src),
            Field::Off => i64::from(self.insn.off),
            Field::Imm => i64::from(self.insn.imm),
        };
        if value != 0 {
            return Err(self.err(DecodeErrorKind::UnusedFieldNotZero { field, value }));
        }
        Ok(())
    }

    fn reg(&self, n: u8) -> Result<Reg, DecodeError> {
        Reg::new(n).ok_or_else(|| self.err(DecodeErrorKind::InvalidRegister(n)))
    }

    fn src(&self) -> Result<Reg, DecodeError> {
        self.reg(self.insn.src)
    }

    fn dst(&self) -> Result<Reg, DecodeError> {
        self.reg(self.insn.dst)
    }

    /// A destination that is written: r10 is refused.
    fn dst_w(&self) -> Result<Reg, DecodeError> {
        let r = self.dst()?;
        if r == Reg::R10 {
            return Err(self.err(DecodeErrorKind::FramePointerWrite));
        }
        Ok(r)
    }

    fn invalid(&self, field: Field, value: i64, what: &'static str) -> DecodeError {
        self.err(DecodeErrorKind::InvalidField { field, value, what })
    }
}

/// Decodes the instruction starting at `insns[pc]` (reading the second slot of
/// an `lddw`).
pub fn decode(insns: &[Insn], pc: usize) -> Result<Instruction, DecodeError> {
    let Some(&insn) = insns.get(pc) else {
        return Err(DecodeError {
            pc,
            insn: Insn::default(),
            kind: DecodeErrorKind::TruncatedLddw,
        });
    };
    let c = Checker { pc, insn };
    let code = insn.code;
    match insn.class() {
        op::CLS_ALU | op::CLS_ALU64 => decode_alu(&c),
        op::CLS_JMP | op::CLS_JMP32 => decode_jmp(&c),
        op::CLS_LDX => {
            c.zero(Field::Imm)?;
            let size = MemSize::from_code(code);
            let (dst, src, off) = (c.dst_w()?, c.src()?, insn.off);
            match code & 0xe0 {
                op::MODE_MEM => Ok(Instruction::Load {
                    size,
                    dst,
                    src,
                    off,
                }),
                op::MODE_MEMSX if size != MemSize::DW => Ok(Instruction::LoadSx {
                    size,
                    dst,
                    src,
                    off,
                }),
                _ => Err(c.err(DecodeErrorKind::UnknownOpcode(code))),
            }
        }
        op::CLS_ST => {
            if code & 0xe0 != op::MODE_MEM {
                return Err(c.err(DecodeErrorKind::UnknownOpcode(code)));
            }
            c.zero(Field::Src)?;
            Ok(Instruction::Store {
                size: MemSize::from_code(code),
                dst: c.dst()?,
                off: insn.off,
                src: Source::Imm(insn.imm),
            })
        }
        op::CLS_STX => {
            let size = MemSize::from_code(code);
            match code & 0xe0 {
                op::MODE_MEM => {
                    c.zero(Field::Imm)?;
                    Ok(Instruction::Store {
                        size,
                        dst: c.dst()?,
                        off: insn.off,
                        src: Source::Reg(c.src()?),
                    })
                }
                op::MODE_ATOMIC if matches!(size, MemSize::W | MemSize::DW) => {
                    let fetch = insn.imm & op::ATOMIC_FETCH != 0;
                    let aop = match insn.imm & !op::ATOMIC_FETCH {
                        op::ATOMIC_ADD => AtomicOp::Add,
                        op::ATOMIC_OR => AtomicOp::Or,
                        op::ATOMIC_AND => AtomicOp::And,
                        op::ATOMIC_XOR => AtomicOp::Xor,
                        x if x == op::ATOMIC_XCHG & !op::ATOMIC_FETCH && fetch => AtomicOp::Xchg,
                        x if x == op::ATOMIC_CMPXCHG & !op::ATOMIC_FETCH && fetch => {
                            AtomicOp::CmpXchg
                        }
                        _ => {
                            return Err(c.invalid(
                                Field::Imm,
                                i64::from(insn.imm),
                                "atomic operation: add, or, and, xor (optionally | fetch), xchg, cmpxchg",
                            ))
                        }
                    };
                    let src = c.src()?;
                    if fetch && aop != AtomicOp::CmpXchg && src == Reg::R10 {
                        return Err(c.err(DecodeErrorKind::FramePointerWrite));
                    }
                    Ok(Instruction::Atomic {
                        size,
                        op: aop,
                        fetch,
                        dst: c.dst()?,
                        src,
                        off: insn.off,
                    })
                }
                _ => Err(c.err(DecodeErrorKind::UnknownOpcode(code))),
            }
        }
        _ => decode_ld(&c, insns),
    }
}

fn decode_ld(c: &Checker, insns: &[Insn]) -> Result<Instruction, DecodeError> {
    let insn = c.insn;
    let code = insn.code;
    let size = MemSize::from_code(code);
    match code & 0xe0 {
        op::MODE_IMM if size == MemSize::DW => {
            c.zero(Field::Off)?;
            let dst = c.dst_w()?;
            let Some(&next) = insns.get(c.pc + 1) else {
                return Err(c.err(DecodeErrorKind::TruncatedLddw));
            };
            if next.code != 0 || next.dst != 0 || next.src != 0 || next.off != 0 {
                return Err(c.err(DecodeErrorKind::BadLddwSecondSlot));
            }
            let hi = next.imm;
            let need_hi_zero = |what| {
                if hi != 0 {
                    Err(c.invalid(Field::Imm, i64::from(hi), what))
                } else {
                    Ok(())
                }
            };
            let value = match insn.src {
                op::PSEUDO_IMM64 => {
                    Lddw::Imm(u64::from(insn.imm as u32) | (u64::from(hi as u32) << 32))
                }
                op::PSEUDO_MAP_FD => {
                    need_hi_zero("second lddw slot of a map fd load must be 0")?;
                    Lddw::MapFd(insn.imm)
                }
                op::PSEUDO_MAP_VALUE => Lddw::MapValue {
                    fd: insn.imm,
                    off: hi as u32,
                },
                op::PSEUDO_BTF_ID => Lddw::BtfVar {
                    btf_id: insn.imm,
                    btf_fd: hi,
                },
                op::PSEUDO_FUNC => {
                    need_hi_zero("second lddw slot of a function address load must be 0")?;
                    Lddw::Func(insn.imm)
                }
                op::PSEUDO_MAP_IDX => {
                    need_hi_zero("second lddw slot of a map index load must be 0")?;
                    Lddw::MapIdx(insn.imm)
                }
                op::PSEUDO_MAP_IDX_VALUE => Lddw::MapIdxValue {
                    idx: insn.imm,
                    off: hi as u32,
                },
                s => {
                    return Err(c.invalid(
                        Field::Src,
                        i64::from(s),
                        "lddw source: 0 imm64, 1 map fd, 2 map value, 3 btf id, 4 func, 5 map idx, 6 map idx value",
                    ))
                }
            };
            Ok(Instruction::LoadImm64 { dst, value })
        }
        op::MODE_ABS | op::MODE_IND if size != MemSize::DW => {
            // The kernel: "BPF_LD_[ABS|IND] uses reserved fields".
            c.zero(Field::Dst)?;
            c.zero(Field::Off)?;
            let mode = if code & 0xe0 == op::MODE_ABS {
                c.zero(Field::Src)?;
                PacketMode::Abs
            } else {
                PacketMode::Ind(c.src()?)
            };
            Ok(Instruction::LoadPacket {
                size,
                mode,
                imm: insn.imm,
            })
        }
        _ => Err(c.err(DecodeErrorKind::UnknownOpcode(code))),
    }
}

fn decode_alu(c: &Checker) -> Result<Instruction, DecodeError> {
    let insn = c.insn;
    let code = insn.code;
    let width = if insn.class() == op::CLS_ALU64 {
        Width::W64
    } else {
        Width::W32
    };
    let is_reg = code & op::SRC_X != 0;
    let operation = code & 0xf0;
    let src = |c: &Checker| -> Result<Source, DecodeError> {
        if is_reg {
            c.zero(Field::Imm)?;
            Ok(Source::Reg(c.src()?))
        } else {
            c.zero(Field::Src)?;
            Ok(Source::Imm(insn.imm))
        }
    };
    let simple = |aop: AluOp| -> Result<Instruction, DecodeError> {
        c.zero(Field::Off)?;
        let src = src(c)?;
        Ok(Instruction::Alu {
            width,
            op: aop,
            dst: c.dst_w()?,
            src,
        })
    };
    let signed = |unsigned: AluOp, signed: AluOp| -> Result<Instruction, DecodeError> {
        let aop = match insn.off {
            0 => unsigned,
            1 => signed,
            v => {
                return Err(c.invalid(
                    Field::Off,
                    i64::from(v),
                    "0 for unsigned, 1 for signed division/modulo",
                ))
            }
        };
        let src = src(c)?;
        Ok(Instruction::Alu {
            width,
            op: aop,
            dst: c.dst_w()?,
            src,
        })
    };
    match operation {
        op::ALU_ADD => simple(AluOp::Add),
        op::ALU_SUB => simple(AluOp::Sub),
        op::ALU_MUL => simple(AluOp::Mul),
        op::ALU_OR => simple(AluOp::Or),
        op::ALU_AND => simple(AluOp::And),
        op::ALU_LSH => simple(AluOp::Lsh),
        op::ALU_RSH => simple(AluOp::Rsh),
        op::ALU_XOR => simple(AluOp::Xor),
        op::ALU_ARSH => simple(AluOp::Arsh),
        op::ALU_DIV => signed(AluOp::Div, AluOp::SDiv),
        op::ALU_MOD => signed(AluOp::Mod, AluOp::SMod),
        op::ALU_MOV => {
            if is_reg && insn.off != 0 {
                let valid = match width {
                    Width::W32 => matches!(insn.off, 8 | 16),
                    Width::W64 => matches!(insn.off, 8 | 16 | 32),
                };
                if !valid {
                    return Err(c.invalid(
                        Field::Off,
                        i64::from(insn.off),
                        "must be 0 for mov, or the source bits of movsx: 8 or 16 (32-bit), 8, 16 or 32 (64-bit)",
                    ));
                }
                c.zero(Field::Imm)?;
                return Ok(Instruction::MovSx {
                    width,
                    dst: c.dst_w()?,
                    src: c.src()?,
                    bits: insn.off as u8,
                });
            }
            simple(AluOp::Mov)
        }
        op::ALU_NEG => {
            if is_reg {
                return Err(c.err(DecodeErrorKind::UnknownOpcode(code)));
            }
            c.zero(Field::Src)?;
            c.zero(Field::Off)?;
            c.zero(Field::Imm)?;
            Ok(Instruction::Neg {
                width,
                dst: c.dst_w()?,
            })
        }
        op::ALU_END => {
            let eop = match (width, is_reg) {
                (Width::W32, false) => EndianOp::ToLe,
                (Width::W32, true) => EndianOp::ToBe,
                (Width::W64, false) => EndianOp::Swap,
                (Width::W64, true) => return Err(c.err(DecodeErrorKind::UnknownOpcode(code))),
            };
            c.zero(Field::Src)?;
            c.zero(Field::Off)?;
            if !matches!(insn.imm, 16 | 32 | 64) {
                return Err(c.invalid(
                    Field::Imm,
                    i64::from(insn.imm),
                    "byte swap width: 16, 32 or 64",
                ));
            }
            Ok(Instruction::Endian {
                op: eop,
                dst: c.dst_w()?,
                bits: insn.imm as u8,
            })
        }
        _ => Err(c.err(DecodeErrorKind::UnknownOpcode(code))),
    }
}

fn decode_jmp(c: &Checker) -> Result<Instruction, DecodeError> {
    let insn = c.insn;
    let code = insn.code;
    let jmp32 = insn.class() == op::CLS_JMP32;
    let is_reg = code & op::SRC_X != 0;
    match code & 0xf0 {
        op::JMP_JA => {
            if is_reg {
                return Err(c.err(DecodeErrorKind::UnknownOpcode(code)));
            }
            c.zero(Field::Dst)?;
            c.zero(Field::Src)?;
            if jmp32 {
                c.zero(Field::Off)?;
                Ok(Instruction::JaLong { imm: insn.imm })
            } else {
                c.zero(Field::Imm)?;
                Ok(Instruction::Ja { off: insn.off })
            }
        }
        op::JMP_CALL if !jmp32 => {
            c.zero(Field::Off).or_else(|e| {
                // kfunc calls carry the module BTF index in `off`.
                if !is_reg && insn.src == op::CALL_KFUNC {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
            if is_reg {
                c.zero(Field::Src)?;
                c.zero(Field::Imm)?;
                return Ok(Instruction::CallX { reg: c.dst()? });
            }
            c.zero(Field::Dst)?;
            let target = match insn.src {
                op::CALL_HELPER => CallTarget::Helper(insn.imm),
                op::CALL_LOCAL => CallTarget::Local(insn.imm),
                op::CALL_KFUNC => CallTarget::Kfunc {
                    btf_id: insn.imm,
                    btf_idx: insn.off,
                },
                s => {
                    return Err(c.invalid(
                        Field::Src,
                        i64::from(s),
                        "call source: 0 helper, 1 bpf-to-bpf, 2 kfunc",
                    ))
                }
            };
            Ok(Instruction::Call(target))
        }
        op::JMP_EXIT if !jmp32 && !is_reg => {
            c.zero(Field::Dst)?;
            c.zero(Field::Src)?;
            c.zero(Field::Off)?;
            c.zero(Field::Imm)?;
            Ok(Instruction::Exit)
        }
        _ => {
            let Some(cond) = JmpCond::from_code(code) else {
                return Err(c.err(DecodeErrorKind::UnknownOpcode(code)));
            };
            let src = if is_reg {
                c.zero(Field::Imm)?;
                Source::Reg(c.src()?)
            } else {
                c.zero(Field::Src)?;
                Source::Imm(insn.imm)
            };
            Ok(Instruction::Jump {
                width: if jmp32 { Width::W32 } else { Width::W64 },
                cond,
                dst: c.dst()?,
                src,
                off: insn.off,
            })
        }
    }
}

/// Decodes a whole program: `(pc, instruction)` for every instruction (the
/// second slot of an `lddw` has no entry).
pub fn decode_all(insns: &[Insn]) -> Result<Vec<(usize, Instruction)>, DecodeError> {
    let mut out = Vec::with_capacity(insns.len());
    let mut pc = 0;
    while pc < insns.len() {
        let i = decode(insns, pc)?;
        out.push((pc, i));
        pc += i.slots();
    }
    Ok(out)
}

/// Encodes a list of instructions into slots.
pub fn encode_all<'a>(instructions: impl IntoIterator<Item = &'a Instruction>) -> Vec<Insn> {
    let mut out = Vec::new();
    for i in instructions {
        i.encode_into(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(words: &[[u8; 8]]) -> Result<Instruction, DecodeError> {
        let insns: Vec<Insn> = words.iter().map(|b| Insn::from_bytes(*b)).collect();
        decode(&insns, 0)
    }

    #[test]
    fn decodes_common_forms() {
        assert_eq!(
            d(&[[0xb7, 0x00, 0, 0, 1, 0, 0, 0]]),
            Ok(Instruction::Alu {
                width: Width::W64,
                op: AluOp::Mov,
                dst: Reg::R0,
                src: Source::Imm(1)
            })
        );
        assert_eq!(
            d(&[[0x61, 0x10, 4, 0, 0, 0, 0, 0]]),
            Ok(Instruction::Load {
                size: MemSize::W,
                dst: Reg::R0,
                src: Reg::R1,
                off: 4
            })
        );
        assert_eq!(
            d(&[
                [0x18, 0x01, 0, 0, 0x88, 0x77, 0x66, 0x55],
                [0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11]
            ]),
            Ok(Instruction::LoadImm64 {
                dst: Reg::R1,
                value: Lddw::Imm(0x1122334455667788)
            })
        );
        assert_eq!(d(&[[0x95, 0, 0, 0, 0, 0, 0, 0]]), Ok(Instruction::Exit));
    }

    #[test]
    fn rejects_unused_fields_naming_the_pc() {
        let insns = [
            Insn::new(0xb7, 0, 0, 0, 0),
            Insn::new(0x07, 0, 0, 1, 1), // add64 imm with off = 1
        ];
        let err = decode_all(&insns).unwrap_err();
        assert_eq!(err.pc, 1);
        assert_eq!(
            err.kind,
            DecodeErrorKind::UnusedFieldNotZero {
                field: Field::Off,
                value: 1
            }
        );
        assert!(err.to_string().contains("pc 1"), "{err}");
    }

    #[test]
    fn rejects_writes_to_r10_and_bad_registers() {
        assert_eq!(
            d(&[[0xb7, 0x0a, 0, 0, 0, 0, 0, 0]]).unwrap_err().kind,
            DecodeErrorKind::FramePointerWrite
        );
        assert_eq!(
            d(&[[0xbf, 0xb0, 0, 0, 0, 0, 0, 0]]).unwrap_err().kind,
            DecodeErrorKind::InvalidRegister(11)
        );
    }

    #[test]
    fn lddw_variants_and_truncation() {
        for src in 0..=6u8 {
            let insns = [Insn::new(op::LDDW, 1, src, 0, 7), Insn::new(0, 0, 0, 0, 0)];
            let i = decode(&insns, 0).unwrap();
            assert_eq!(i.encode(), insns.to_vec());
        }
        let insns = [Insn::new(op::LDDW, 1, 7, 0, 7), Insn::new(0, 0, 0, 0, 0)];
        assert!(decode(&insns, 0).is_err());
        assert_eq!(
            decode(&[Insn::new(op::LDDW, 1, 0, 0, 7)], 0)
                .unwrap_err()
                .kind,
            DecodeErrorKind::TruncatedLddw
        );
    }
}
