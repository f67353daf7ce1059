//! The raw 8-byte instruction slot and the opcode constants of RFC 9669.
//!
//! [`Insn`] is one instruction slot exactly as it sits in a `.bpf.o` or a
//! `BPF_PROG_LOAD` buffer (little-endian). The structured, validated view of
//! an instruction is [`crate::isa::Instruction`].

use std::fmt;

/// Size in bytes of one instruction slot.
pub const INSN_SIZE: usize = 8;

/// One raw instruction slot (`struct bpf_insn`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Insn {
    /// The opcode byte (`code`).
    pub code: u8,
    /// Destination register field (low nibble of byte 1).
    pub dst: u8,
    /// Source register field (high nibble of byte 1).
    pub src: u8,
    /// Signed 16-bit offset field.
    pub off: i16,
    /// Signed 32-bit immediate field.
    pub imm: i32,
}

impl Insn {
    /// Builds a slot from its fields. `dst` and `src` are truncated to 4 bits.
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst: dst & 0x0f,
            src: src & 0x0f,
            off,
            imm,
        }
    }

    /// Decodes one slot from its 8 little-endian bytes.
    pub const fn from_bytes(b: [u8; INSN_SIZE]) -> Insn {
        Insn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Encodes the slot as 8 little-endian bytes.
    pub const fn to_bytes(self) -> [u8; INSN_SIZE] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [
            self.code,
            (self.dst & 0x0f) | (self.src << 4),
            off[0],
            off[1],
            imm[0],
            imm[1],
            imm[2],
            imm[3],
        ]
    }

    /// The slot read as one little-endian `u64` (the form of the conformance
    /// suite's `-- raw` sections).
    pub const fn to_u64(self) -> u64 {
        u64::from_le_bytes(self.to_bytes())
    }

    /// Inverse of [`Insn::to_u64`].
    pub const fn from_u64(word: u64) -> Insn {
        Insn::from_bytes(word.to_le_bytes())
    }

    /// The instruction class (`BPF_CLASS(code)`).
    pub const fn class(self) -> u8 {
        self.code & 0x07
    }
}

impl fmt::Debug for Insn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Prints the 8 bytes in hex, as llvm-objdump shows them.
impl fmt::Display for Insn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_bytes();
        write!(
            f,
            "{:02x} {:02x} {:02x} {:02x} {:02x} {:02x} {:02x} {:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

/// A byte buffer whose length is not a multiple of [`INSN_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bytecode length {len} is not a multiple of 8 (one BPF instruction is 8 bytes)")]
pub struct LengthError {
    /// The offending length in bytes.
    pub len: usize,
}

/// Splits raw bytecode into instruction slots.
pub fn insns_from_bytes(bytes: &[u8]) -> Result<Vec<Insn>, LengthError> {
    if !bytes.len().is_multiple_of(INSN_SIZE) {
        return Err(LengthError { len: bytes.len() });
    }
    Ok(bytes
        .chunks_exact(INSN_SIZE)
        .map(|c| {
            let mut b = [0u8; INSN_SIZE];
            b.copy_from_slice(c);
            Insn::from_bytes(b)
        })
        .collect())
}

/// Serialises instruction slots as raw bytecode.
pub fn insns_to_bytes(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|i| i.to_bytes()).collect()
}

/// Opcode field values (`include/uapi/linux/bpf_common.h`, `bpf.h`, RFC 9669).
pub mod op {
    /// `BPF_LD`: non-standard loads (lddw, legacy packet loads).
    pub const CLS_LD: u8 = 0x00;
    /// `BPF_LDX`: loads into a register.
    pub const CLS_LDX: u8 = 0x01;
    /// `BPF_ST`: stores of an immediate.
    pub const CLS_ST: u8 = 0x02;
    /// `BPF_STX`: stores of a register, atomics.
    pub const CLS_STX: u8 = 0x03;
    /// `BPF_ALU`: 32-bit arithmetic.
    pub const CLS_ALU: u8 = 0x04;
    /// `BPF_JMP`: 64-bit jumps, calls, exit.
    pub const CLS_JMP: u8 = 0x05;
    /// `BPF_JMP32`: 32-bit jumps.
    pub const CLS_JMP32: u8 = 0x06;
    /// `BPF_ALU64`: 64-bit arithmetic.
    pub const CLS_ALU64: u8 = 0x07;

    /// `BPF_K`: the operand is the immediate.
    pub const SRC_K: u8 = 0x00;
    /// `BPF_X`: the operand is the source register.
    pub const SRC_X: u8 = 0x08;

    /// `BPF_W`: 4 bytes.
    pub const SIZE_W: u8 = 0x00;
    /// `BPF_H`: 2 bytes.
    pub const SIZE_H: u8 = 0x08;
    /// `BPF_B`: 1 byte.
    pub const SIZE_B: u8 = 0x10;
    /// `BPF_DW`: 8 bytes.
    pub const SIZE_DW: u8 = 0x18;

    /// `BPF_IMM`: 64-bit immediate load.
    pub const MODE_IMM: u8 = 0x00;
    /// `BPF_ABS`: legacy packet load at an absolute offset.
    pub const MODE_ABS: u8 = 0x20;
    /// `BPF_IND`: legacy packet load at register + offset.
    pub const MODE_IND: u8 = 0x40;
    /// `BPF_MEM`: regular load/store.
    pub const MODE_MEM: u8 = 0x60;
    /// `BPF_MEMSX`: sign-extending load.
    pub const MODE_MEMSX: u8 = 0x80;
    /// `BPF_ATOMIC`: atomic operation.
    pub const MODE_ATOMIC: u8 = 0xc0;

    /// `BPF_ADD`.
    pub const ALU_ADD: u8 = 0x00;
    /// `BPF_SUB`.
    pub const ALU_SUB: u8 = 0x10;
    /// `BPF_MUL`.
    pub const ALU_MUL: u8 = 0x20;
    /// `BPF_DIV` (`off = 1`: signed).
    pub const ALU_DIV: u8 = 0x30;
    /// `BPF_OR`.
    pub const ALU_OR: u8 = 0x40;
    /// `BPF_AND`.
    pub const ALU_AND: u8 = 0x50;
    /// `BPF_LSH`.
    pub const ALU_LSH: u8 = 0x60;
    /// `BPF_RSH`.
    pub const ALU_RSH: u8 = 0x70;
    /// `BPF_NEG`.
    pub const ALU_NEG: u8 = 0x80;
    /// `BPF_MOD` (`off = 1`: signed).
    pub const ALU_MOD: u8 = 0x90;
    /// `BPF_XOR`.
    pub const ALU_XOR: u8 = 0xa0;
    /// `BPF_MOV` (`off = 8/16/32`: sign-extending).
    pub const ALU_MOV: u8 = 0xb0;
    /// `BPF_ARSH`.
    pub const ALU_ARSH: u8 = 0xc0;
    /// `BPF_END`: byte swap.
    pub const ALU_END: u8 = 0xd0;

    /// `BPF_TO_LE` (in `BPF_ALU | BPF_END`).
    pub const END_TO_LE: u8 = 0x00;
    /// `BPF_TO_BE` (in `BPF_ALU | BPF_END`).
    pub const END_TO_BE: u8 = 0x08;

    /// `BPF_JA`.
    pub const JMP_JA: u8 = 0x00;
    /// `BPF_JEQ`.
    pub const JMP_JEQ: u8 = 0x10;
    /// `BPF_JGT`.
    pub const JMP_JGT: u8 = 0x20;
    /// `BPF_JGE`.
    pub const JMP_JGE: u8 = 0x30;
    /// `BPF_JSET`.
    pub const JMP_JSET: u8 = 0x40;
    /// `BPF_JNE`.
    pub const JMP_JNE: u8 = 0x50;
    /// `BPF_JSGT`.
    pub const JMP_JSGT: u8 = 0x60;
    /// `BPF_JSGE`.
    pub const JMP_JSGE: u8 = 0x70;
    /// `BPF_CALL`.
    pub const JMP_CALL: u8 = 0x80;
    /// `BPF_EXIT`.
    pub const JMP_EXIT: u8 = 0x90;
    /// `BPF_JLT`.
    pub const JMP_JLT: u8 = 0xa0;
    /// `BPF_JLE`.
    pub const JMP_JLE: u8 = 0xb0;
    /// `BPF_JSLT`.
    pub const JMP_JSLT: u8 = 0xc0;
    /// `BPF_JSLE`.
    pub const JMP_JSLE: u8 = 0xd0;

    /// Atomic `imm`: `BPF_ADD`.
    pub const ATOMIC_ADD: i32 = 0x00;
    /// Atomic `imm`: `BPF_OR`.
    pub const ATOMIC_OR: i32 = 0x40;
    /// Atomic `imm`: `BPF_AND`.
    pub const ATOMIC_AND: i32 = 0x50;
    /// Atomic `imm`: `BPF_XOR`.
    pub const ATOMIC_XOR: i32 = 0xa0;
    /// Atomic `imm` flag: `BPF_FETCH`.
    pub const ATOMIC_FETCH: i32 = 0x01;
    /// Atomic `imm`: `BPF_XCHG` (always with `BPF_FETCH`).
    pub const ATOMIC_XCHG: i32 = 0xe0 | ATOMIC_FETCH;
    /// Atomic `imm`: `BPF_CMPXCHG` (always with `BPF_FETCH`).
    pub const ATOMIC_CMPXCHG: i32 = 0xf0 | ATOMIC_FETCH;

    /// `lddw` `src`: plain 64-bit immediate.
    pub const PSEUDO_IMM64: u8 = 0;
    /// `lddw` `src`: `BPF_PSEUDO_MAP_FD`, `imm` is a map fd.
    pub const PSEUDO_MAP_FD: u8 = 1;
    /// `lddw` `src`: `BPF_PSEUDO_MAP_VALUE`, map fd + value offset.
    pub const PSEUDO_MAP_VALUE: u8 = 2;
    /// `lddw` `src`: `BPF_PSEUDO_BTF_ID`, address of a kernel variable.
    pub const PSEUDO_BTF_ID: u8 = 3;
    /// `lddw` `src`: `BPF_PSEUDO_FUNC`, address of a subprogram.
    pub const PSEUDO_FUNC: u8 = 4;
    /// `lddw` `src`: `BPF_PSEUDO_MAP_IDX`, map by index into `fd_array`.
    pub const PSEUDO_MAP_IDX: u8 = 5;
    /// `lddw` `src`: `BPF_PSEUDO_MAP_IDX_VALUE`, map index + value offset.
    pub const PSEUDO_MAP_IDX_VALUE: u8 = 6;

    /// `call` `src`: helper by id.
    pub const CALL_HELPER: u8 = 0;
    /// `call` `src`: `BPF_PSEUDO_CALL`, bpf-to-bpf call, `imm` is pc-relative.
    pub const CALL_LOCAL: u8 = 1;
    /// `call` `src`: `BPF_PSEUDO_KFUNC_CALL`, `imm` is a BTF id.
    pub const CALL_KFUNC: u8 = 2;

    /// `lddw` opcode.
    pub const LDDW: u8 = CLS_LD | MODE_IMM | SIZE_DW;
    /// `exit` opcode.
    pub const EXIT: u8 = CLS_JMP | JMP_EXIT;
    /// `call` opcode.
    pub const CALL: u8 = CLS_JMP | JMP_CALL;
    /// `callx` opcode (register in `dst`).
    pub const CALLX: u8 = CLS_JMP | JMP_CALL | SRC_X;
    /// `ja` opcode.
    pub const JA: u8 = CLS_JMP | JMP_JA;
    /// `gotol` / `ja32` opcode (32-bit offset in `imm`).
    pub const JA32: u8 = CLS_JMP32 | JMP_JA;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_field_layout() {
        // `r1 = *(u32 *)(r10 - 4)` with imm 1: 61 a1 fc ff 01 00 00 00
        let b = [0x61, 0xa1, 0xfc, 0xff, 0x01, 0x00, 0x00, 0x00];
        let i = Insn::from_bytes(b);
        assert_eq!(i.code, 0x61);
        assert_eq!(i.dst, 1);
        assert_eq!(i.src, 10);
        assert_eq!(i.off, -4);
        assert_eq!(i.imm, 1);
        assert_eq!(i.to_bytes(), b);
        assert_eq!(Insn::from_u64(i.to_u64()), i);
    }

    #[test]
    fn length_must_be_a_multiple_of_eight() {
        assert_eq!(insns_from_bytes(&[0; 9]), Err(LengthError { len: 9 }));
        assert_eq!(insns_from_bytes(&[0; 16]).map(|v| v.len()), Ok(2));
    }
}
