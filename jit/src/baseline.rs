//! The baseline code generator: x86-64 machine code in one pass over the
//! program, each BPF register in a fixed host register (as the kernel's
//! JIT does), no optimisation. It compiles in well under a microsecond per
//! instruction, where Cranelift needs several (a fixed ~40 µs per program
//! and ~1 µs per IR instruction), so a verified program runs native code
//! at once while Cranelift compiles the optimised code in the background
//! ([`crate::Tier::Tiered`]).
//!
//! It takes verified programs of one frame that do nothing but compute
//! and access memory: ALU (32/64-bit, v4 included), jumps, loads, stores,
//! atomics, `lddw` values and `exit`. Anything else (helper calls,
//! bpf-to-bpf calls, tail calls, legacy packet loads, subprogram entries,
//! jumps out of the program) is left to Cranelift ([`Unsupported`]). The
//! code follows the compiled-program convention of the Cranelift code:
//! `(context, entry pc, r1, r2, r3, r4) -> (status, r0)`, the other
//! registers read from the context's head; division and modulo by zero and
//! `INT_MIN / -1` take branches (no instruction traps).

use userbpf_vm::interp::OpClass;
use userbpf_vm::isa::{AluOp, AtomicOp, EndianOp, Instruction, JmpCond, MemSize, Source, Width};

use crate::codegen::Shape;

/// Why the baseline generator leaves a program to Cranelift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsupported(pub(crate) String);

// Host registers (x86-64 numbering).
const RAX: u8 = 0;
const RCX: u8 = 1;
const RDX: u8 = 2;
const RBX: u8 = 3;
const RBP: u8 = 5;
const RSI: u8 = 6;
const RDI: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;
const R10: u8 = 10;
const R11: u8 = 11;
const R12: u8 = 12;
const R13: u8 = 13;
const R14: u8 = 14;
const R15: u8 = 15;

/// BPF r0..r10 -> host registers. rax, rcx and rdx stay free: division
/// and shifts by a register need them; the context lives in r15.
const MAP: [u8; 11] = [RBX, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, RBP];
const CTX: u8 = R15;

/// Condition codes.
const CC_E: u8 = 0x4;
const CC_NE: u8 = 0x5;
const CC_B: u8 = 0x2;
const CC_AE: u8 = 0x3;
const CC_BE: u8 = 0x6;
const CC_A: u8 = 0x7;
const CC_L: u8 = 0xc;
const CC_GE: u8 = 0xd;
const CC_LE: u8 = 0xe;
const CC_G: u8 = 0xf;

fn host(r: userbpf_vm::Reg) -> u8 {
    MAP[usize::from(r.num()).min(10)]
}

/// An instruction with a memory operand: prefix (0x66, a lock, or none),
/// REX.W, whether `reg` is a byte register, opcode.
#[derive(Clone, Copy)]
struct Enc<'a> {
    prefix: &'a [u8],
    w: bool,
    byte: bool,
    op: &'a [u8],
}

impl<'a> Enc<'a> {
    /// `op`, 32-bit operands.
    fn of(op: &'a [u8]) -> Enc<'a> {
        Enc {
            prefix: &[],
            w: false,
            byte: false,
            op,
        }
    }

    /// With 64-bit operands (REX.W).
    fn wide(self) -> Enc<'a> {
        self.wide_if(true)
    }

    fn wide_if(self, w: bool) -> Enc<'a> {
        Enc { w, ..self }
    }

    /// `reg` is a byte register.
    fn byte(self) -> Enc<'a> {
        Enc { byte: true, ..self }
    }

    fn prefixed(self, prefix: &'a [u8]) -> Enc<'a> {
        Enc { prefix, ..self }
    }
}

/// A growing buffer of x86-64 code with the encodings the generator uses.
struct Asm {
    code: Vec<u8>,
}

impl Asm {
    fn byte(&mut self, b: u8) {
        self.code.push(b);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.code.extend_from_slice(b);
    }

    fn imm32(&mut self, v: i32) {
        self.bytes(&v.to_le_bytes());
    }

    /// A REX prefix when needed (`force`: byte access to sil/dil/bpl).
    fn rex(&mut self, w: bool, reg: u8, index: u8, base: u8, force: bool) {
        let r = 0x40 | (u8::from(w) << 3) | ((reg >> 3) << 2) | ((index >> 3) << 1) | (base >> 3);
        if r != 0x40 || force {
            self.byte(r);
        }
    }

    /// `opcode reg, rm` with both registers (ModRM mode 3).
    fn rr(&mut self, w: bool, op: &[u8], reg: u8, rm: u8) {
        self.rex(w, reg, 0, rm, false);
        self.bytes(op);
        self.byte(0xc0 | ((reg & 7) << 3) | (rm & 7));
    }

    /// [`Asm::rr`] on byte registers.
    fn rr8(&mut self, op: &[u8], reg: u8, rm: u8) {
        let force = (4..8).contains(&reg) || (4..8).contains(&rm);
        self.rex(false, reg, 0, rm, force);
        self.bytes(op);
        self.byte(0xc0 | ((reg & 7) << 3) | (rm & 7));
    }

    /// The ModRM (and SIB, displacement) of `[base + disp]` with `reg`.
    fn mem(&mut self, reg: u8, base: u8, disp: i32) {
        let (md, short) = if disp == 0 && base & 7 != 5 {
            (0, None)
        } else if let Ok(d) = i8::try_from(disp) {
            (1, Some(d))
        } else {
            (2, None)
        };
        self.byte((md << 6) | ((reg & 7) << 3) | (base & 7));
        if base & 7 == 4 {
            self.byte(0x24);
        }
        match (md, short) {
            (1, Some(d)) => self.byte(d as u8),
            (2, _) => self.imm32(disp),
            _ => {}
        }
    }

    /// `opcode reg, [base + disp]`.
    fn rm(&mut self, e: Enc<'_>, reg: u8, base: u8, disp: i32) {
        self.bytes(e.prefix);
        self.rex(e.w, reg, 0, base, e.byte && (4..8).contains(&reg));
        self.bytes(e.op);
        self.mem(reg, base, disp);
    }

    fn mov_rr(&mut self, w: bool, dst: u8, src: u8) {
        self.rr(w, &[0x89], src, dst);
    }

    /// `dst = imm` sign-extended to 64 bits (`w`) or zero-extended from
    /// 32.
    fn mov_ri(&mut self, w: bool, dst: u8, imm: i32) {
        if w && imm < 0 {
            self.rr(true, &[0xc7], 0, dst);
            self.imm32(imm);
        } else {
            self.rex(false, 0, 0, dst, false);
            self.byte(0xb8 + (dst & 7));
            self.imm32(imm);
        }
    }

    fn mov_ri64(&mut self, dst: u8, v: u64) {
        if let Ok(v32) = u32::try_from(v) {
            self.mov_ri(false, dst, v32 as i32);
        } else if let Ok(s) = i32::try_from(v as i64) {
            self.mov_ri(true, dst, s);
        } else {
            self.rex(true, 0, 0, dst, false);
            self.byte(0xb8 + (dst & 7));
            self.bytes(&v.to_le_bytes());
        }
    }

    /// Group-1 operation with an immediate (`ext`: add 0, or 1, and 4,
    /// sub 5, xor 6, cmp 7).
    fn alu_ri(&mut self, w: bool, ext: u8, dst: u8, imm: i32) {
        if let Ok(i) = i8::try_from(imm) {
            self.rr(w, &[0x83], ext, dst);
            self.byte(i as u8);
        } else {
            self.rr(w, &[0x81], ext, dst);
            self.imm32(imm);
        }
    }

    /// Shift group (`ext`: rol 0, shl 4, shr 5, sar 7) by a constant.
    fn shift_ri(&mut self, w: bool, ext: u8, dst: u8, n: u8) {
        self.rr(w, &[0xc1], ext, dst);
        self.byte(n);
    }

    /// A conditional jump with a 32-bit displacement to patch; returns
    /// where the displacement is.
    fn jcc32(&mut self, cc: u8) -> usize {
        self.bytes(&[0x0f, 0x80 | cc]);
        self.imm32(0);
        self.code.len() - 4
    }

    fn jmp32(&mut self) -> usize {
        self.byte(0xe9);
        self.imm32(0);
        self.code.len() - 4
    }

    /// A short jump forward (`cc` `None`: unconditional); patched by
    /// [`Asm::here8`].
    fn j8(&mut self, cc: Option<u8>) -> usize {
        match cc {
            Some(cc) => self.byte(0x70 | cc),
            None => self.byte(0xeb),
        }
        self.byte(0);
        self.code.len() - 1
    }

    /// Points the short jump at `at` here.
    fn here8(&mut self, at: usize) {
        let d = self.code.len() - (at + 1);
        self.code[at] = u8::try_from(d).expect("short jump within 127 bytes");
    }

    /// A short jump backward to `to`.
    fn j8_back(&mut self, cc: u8, to: usize) {
        let d = to as i64 - (self.code.len() as i64 + 2);
        self.byte(0x70 | cc);
        self.byte(i8::try_from(d).expect("short jump within 128 bytes") as u8);
    }

    fn push(&mut self, r: u8) {
        self.rex(false, 0, 0, r, false);
        self.byte(0x50 + (r & 7));
    }

    fn pop(&mut self, r: u8) {
        self.rex(false, 0, 0, r, false);
        self.byte(0x58 + (r & 7));
    }
}

/// Registers saved by the code (callee-saved in the C convention).
const SAVED: [u8; 6] = [RBP, RBX, R12, R13, R14, R15];

/// Machine code for `prog`, or why the baseline generator leaves it to
/// Cranelift. `regs_off`: offset of r0..r10 in the context.
pub(crate) fn generate(shape: &Shape, regs_off: i32) -> Result<Vec<u8>, Unsupported> {
    let len = shape.insns.len();
    let unsupported = |pc: usize, what: &str| Unsupported(format!("pc {pc}: {what}"));
    if shape.entries.len() > 1 {
        return Err(Unsupported("subprogram entries".into()));
    }
    if len == 0 {
        return Err(Unsupported("an empty program".into()));
    }
    let valid = |t: usize| t < len && shape.insns[t].is_some();
    let mut asm = Asm {
        code: Vec::with_capacity(64 + len * 12),
    };
    // Prologue: save, the context to r15, r1 (rdx) and r2 (rcx) to their
    // registers (r3, r4 arrive in r8, r9, theirs), the others from the
    // context.
    for r in SAVED {
        asm.push(r);
    }
    asm.mov_rr(true, CTX, RDI);
    asm.mov_rr(true, MAP[1], RDX);
    asm.mov_rr(true, MAP[2], RCX);
    for i in [0usize, 5, 6, 7, 8, 9, 10] {
        asm.rm(
            Enc::of(&[0x8b]).wide(),
            MAP[i],
            CTX,
            regs_off + 8 * i as i32,
        );
    }
    let mut starts = vec![0usize; len];
    let mut fixups: Vec<(usize, usize)> = Vec::new();
    for (pc, slot) in shape.insns.iter().enumerate() {
        starts[pc] = asm.code.len();
        let Some((insn, class)) = *slot else {
            // The second slot of an lddw: reached only by falling through
            // the lddw, which jumps over it.
            continue;
        };
        let next = pc + insn.slots();
        let terminates = matches!(
            insn,
            Instruction::Exit | Instruction::Ja { .. } | Instruction::JaLong { .. }
        );
        if !terminates && next >= len {
            return Err(unsupported(pc, "falls off the end"));
        }
        match class {
            OpClass::Plain => {}
            OpClass::LoadImm(v) => {
                if let Instruction::LoadImm64 { dst, .. } = insn {
                    asm.mov_ri64(host(dst), v);
                    continue;
                }
                return Err(unsupported(pc, "a resolved value on another instruction"));
            }
            _ => return Err(unsupported(pc, "a call")),
        }
        match insn {
            Instruction::Alu {
                width,
                op,
                dst,
                src,
            } => alu(&mut asm, width, op, host(dst), src),
            Instruction::MovSx {
                width,
                dst,
                src,
                bits,
            } => {
                let (d, s) = (host(dst), host(src));
                match (width, bits) {
                    // (REX.W reaches every byte register.)
                    (Width::W64, 8) => asm.rr(true, &[0x0f, 0xbe], d, s),
                    (_, 8) => asm.rr8(&[0x0f, 0xbe], d, s),
                    (Width::W64, 16) => asm.rr(true, &[0x0f, 0xbf], d, s),
                    (_, 16) => asm.rr(false, &[0x0f, 0xbf], d, s),
                    (Width::W64, 32) => asm.rr(true, &[0x63], d, s),
                    _ => return Err(unsupported(pc, "a sign extension")),
                }
            }
            Instruction::Neg { width, dst } => asm.rr(width == Width::W64, &[0xf7], 3, host(dst)),
            Instruction::Endian { op, dst, bits } => endian(&mut asm, op, host(dst), bits),
            Instruction::Load {
                size,
                dst,
                src,
                off,
            } => {
                let (d, b, o) = (host(dst), host(src), i32::from(off));
                match size {
                    MemSize::B => asm.rm(Enc::of(&[0x0f, 0xb6]), d, b, o),
                    MemSize::H => asm.rm(Enc::of(&[0x0f, 0xb7]), d, b, o),
                    MemSize::W => asm.rm(Enc::of(&[0x8b]), d, b, o),
                    MemSize::DW => asm.rm(Enc::of(&[0x8b]).wide(), d, b, o),
                }
            }
            Instruction::LoadSx {
                size,
                dst,
                src,
                off,
            } => {
                let (d, b, o) = (host(dst), host(src), i32::from(off));
                match size {
                    MemSize::B => asm.rm(Enc::of(&[0x0f, 0xbe]).wide(), d, b, o),
                    MemSize::H => asm.rm(Enc::of(&[0x0f, 0xbf]).wide(), d, b, o),
                    MemSize::W => asm.rm(Enc::of(&[0x63]).wide(), d, b, o),
                    MemSize::DW => asm.rm(Enc::of(&[0x8b]).wide(), d, b, o),
                }
            }
            Instruction::Store {
                size,
                dst,
                off,
                src,
            } => {
                let (b, o) = (host(dst), i32::from(off));
                match src {
                    Source::Reg(s) => {
                        let s = host(s);
                        match size {
                            MemSize::B => asm.rm(Enc::of(&[0x88]).byte(), s, b, o),
                            MemSize::H => asm.rm(Enc::of(&[0x89]).prefixed(&[0x66]), s, b, o),
                            MemSize::W => asm.rm(Enc::of(&[0x89]), s, b, o),
                            MemSize::DW => asm.rm(Enc::of(&[0x89]).wide(), s, b, o),
                        }
                    }
                    Source::Imm(imm) => match size {
                        MemSize::B => {
                            asm.rm(Enc::of(&[0xc6]), 0, b, o);
                            asm.byte(imm as u8);
                        }
                        MemSize::H => {
                            asm.rm(Enc::of(&[0xc7]).prefixed(&[0x66]), 0, b, o);
                            asm.bytes(&(imm as u16).to_le_bytes());
                        }
                        MemSize::W => {
                            asm.rm(Enc::of(&[0xc7]), 0, b, o);
                            asm.imm32(imm);
                        }
                        MemSize::DW => {
                            asm.rm(Enc::of(&[0xc7]).wide(), 0, b, o);
                            asm.imm32(imm);
                        }
                    },
                }
            }
            Instruction::Atomic {
                size,
                op,
                fetch,
                dst,
                src,
                off,
            } => {
                let w = match size {
                    MemSize::W => false,
                    MemSize::DW => true,
                    _ => return Err(unsupported(pc, "an atomic of 1 or 2 bytes")),
                };
                atomic(&mut asm, w, op, fetch, host(dst), host(src), i32::from(off));
            }
            Instruction::LoadImm64 { .. } => {
                return Err(unsupported(pc, "an unresolved lddw"));
            }
            Instruction::Ja { .. } | Instruction::JaLong { .. } => {
                let t = target(pc, insn.jump_offset().unwrap_or(0));
                if !valid(t) {
                    return Err(unsupported(pc, "a jump out of the program"));
                }
                fixups.push((asm.jmp32(), t));
            }
            Instruction::Jump {
                width,
                cond,
                dst,
                src,
                ..
            } => {
                let t = target(pc, insn.jump_offset().unwrap_or(0));
                if !valid(t) {
                    return Err(unsupported(pc, "a jump out of the program"));
                }
                let w = width == Width::W64;
                let d = host(dst);
                let cc = if cond == JmpCond::Set {
                    match src {
                        Source::Reg(s) => asm.rr(w, &[0x85], host(s), d),
                        Source::Imm(imm) => {
                            asm.rr(w, &[0xf7], 0, d);
                            asm.imm32(imm);
                        }
                    }
                    CC_NE
                } else {
                    match src {
                        Source::Reg(s) => asm.rr(w, &[0x39], host(s), d),
                        Source::Imm(imm) => asm.alu_ri(w, 7, d, imm),
                    }
                    match cond {
                        JmpCond::Eq => CC_E,
                        JmpCond::Ne => CC_NE,
                        JmpCond::Gt => CC_A,
                        JmpCond::Ge => CC_AE,
                        JmpCond::Lt => CC_B,
                        JmpCond::Le => CC_BE,
                        JmpCond::SGt => CC_G,
                        JmpCond::SGe => CC_GE,
                        JmpCond::SLt => CC_L,
                        JmpCond::SLe => CC_LE,
                        JmpCond::Set => CC_NE,
                    }
                };
                fixups.push((asm.jcc32(cc), t));
            }
            Instruction::Exit => {
                // (status 0 in rax, r0 in rdx)
                asm.mov_rr(true, RDX, MAP[0]);
                asm.rr(false, &[0x31], RAX, RAX);
                for r in SAVED.iter().rev() {
                    asm.pop(*r);
                }
                asm.byte(0xc3);
            }
            Instruction::Call(_) | Instruction::CallX { .. } => {
                return Err(unsupported(pc, "a call"));
            }
            Instruction::LoadPacket { .. } => {
                return Err(unsupported(pc, "a legacy packet load"));
            }
        }
    }
    for (at, t) in fixups {
        let rel = starts[t] as i64 - (at as i64 + 4);
        let rel = i32::try_from(rel).map_err(|_| Unsupported("code over 2 GiB".into()))?;
        asm.code[at..at + 4].copy_from_slice(&rel.to_le_bytes());
    }
    Ok(asm.code)
}

fn target(pc: usize, rel: i64) -> usize {
    let t = (pc as i64).saturating_add(1).saturating_add(rel);
    usize::try_from(t).unwrap_or(usize::MAX)
}

/// An ALU instruction on `d`.
fn alu(asm: &mut Asm, width: Width, op: AluOp, d: u8, src: Source) {
    let w = width == Width::W64;
    // The source in a register (rcx for an immediate the operation
    // cannot take).
    let src_reg = |asm: &mut Asm| -> u8 {
        match src {
            Source::Reg(s) => host(s),
            Source::Imm(imm) => {
                asm.mov_ri(w, RCX, imm);
                RCX
            }
        }
    };
    let group1 = |asm: &mut Asm, opcode: u8, ext: u8| match src {
        Source::Reg(s) => asm.rr(w, &[opcode], host(s), d),
        Source::Imm(imm) => asm.alu_ri(w, ext, d, imm),
    };
    match op {
        AluOp::Add => group1(asm, 0x01, 0),
        AluOp::Or => group1(asm, 0x09, 1),
        AluOp::And => group1(asm, 0x21, 4),
        AluOp::Sub => group1(asm, 0x29, 5),
        AluOp::Xor => group1(asm, 0x31, 6),
        AluOp::Mov => match src {
            Source::Reg(s) => asm.mov_rr(w, d, host(s)),
            Source::Imm(imm) => asm.mov_ri(w, d, imm),
        },
        AluOp::Mul => match src {
            Source::Reg(s) => asm.rr(w, &[0x0f, 0xaf], d, host(s)),
            Source::Imm(imm) => {
                asm.rr(w, &[0x69], d, d);
                asm.imm32(imm);
            }
        },
        AluOp::Lsh | AluOp::Rsh | AluOp::Arsh => {
            let ext = match op {
                AluOp::Lsh => 4,
                AluOp::Rsh => 5,
                _ => 7,
            };
            match src {
                Source::Imm(imm) => {
                    let mask = if w { 63 } else { 31 };
                    asm.shift_ri(w, ext, d, (imm as u8) & mask);
                }
                Source::Reg(s) => {
                    asm.mov_rr(true, RCX, host(s));
                    asm.rr(w, &[0xd3], ext, d);
                }
            }
        }
        AluOp::Div | AluOp::Mod => {
            let rem = op == AluOp::Mod;
            let s = src_reg(asm);
            // By zero: 0 for a division; the dividend (32 bits of it for
            // a 32-bit one) for a modulo.
            asm.rr(w, &[0x85], s, s);
            let nonzero = asm.j8(Some(CC_NE));
            if rem {
                if !w {
                    asm.mov_rr(false, d, d);
                }
            } else {
                asm.rr(false, &[0x31], d, d);
            }
            let done = asm.j8(None);
            asm.here8(nonzero);
            asm.mov_rr(w, RAX, d);
            asm.rr(false, &[0x31], RDX, RDX);
            asm.rr(w, &[0xf7], 6, s);
            asm.mov_rr(w, d, if rem { RDX } else { RAX });
            asm.here8(done);
        }
        AluOp::SDiv | AluOp::SMod => {
            let rem = op == AluOp::SMod;
            let s = src_reg(asm);
            asm.rr(w, &[0x85], s, s);
            let nonzero = asm.j8(Some(CC_NE));
            if rem {
                if !w {
                    asm.mov_rr(false, d, d);
                }
            } else {
                asm.rr(false, &[0x31], d, d);
            }
            let done = asm.j8(None);
            asm.here8(nonzero);
            // By -1: the negation (INT_MIN stays INT_MIN), remainder 0;
            // idiv would trap on INT_MIN / -1.
            asm.alu_ri(w, 7, s, -1);
            let divide = asm.j8(Some(CC_NE));
            if rem {
                asm.rr(false, &[0x31], d, d);
            } else {
                asm.rr(w, &[0xf7], 3, d);
            }
            let done2 = asm.j8(None);
            asm.here8(divide);
            asm.mov_rr(w, RAX, d);
            if w {
                asm.bytes(&[0x48, 0x99]);
            } else {
                asm.byte(0x99);
            }
            asm.rr(w, &[0xf7], 7, s);
            asm.mov_rr(w, d, if rem { RDX } else { RAX });
            asm.here8(done);
            asm.here8(done2);
        }
    }
}

/// Byte-order conversions (little-endian host).
fn endian(asm: &mut Asm, op: EndianOp, d: u8, bits: u8) {
    let swap = matches!(op, EndianOp::ToBe | EndianOp::Swap);
    match (swap, bits) {
        (false, 16) => asm.rr(false, &[0x0f, 0xb7], d, d),
        (false, 32) => asm.mov_rr(false, d, d),
        (false, _) => {}
        (true, 16) => {
            // rol r16, 8 then zero-extend.
            asm.byte(0x66);
            asm.shift_ri(false, 0, d, 8);
            asm.rr(false, &[0x0f, 0xb7], d, d);
        }
        (true, 32) => {
            asm.rex(false, 0, 0, d, false);
            asm.bytes(&[0x0f, 0xc8 + (d & 7)]);
        }
        (true, _) => {
            asm.rex(true, 0, 0, d, false);
            asm.bytes(&[0x0f, 0xc8 + (d & 7)]);
        }
    }
}

/// `lock`ed read-modify-write of `[b + o]` with `s` (and r0 for cmpxchg).
fn atomic(asm: &mut Asm, w: bool, op: AtomicOp, fetch: bool, b: u8, s: u8, o: i32) {
    const LOCK: &[u8] = &[0xf0];
    match op {
        AtomicOp::Xchg => {
            asm.mov_rr(w, RAX, s);
            asm.rm(Enc::of(&[0x87]).wide_if(w), RAX, b, o);
            asm.mov_rr(w, s, RAX);
        }
        AtomicOp::CmpXchg => {
            asm.mov_rr(w, RAX, MAP[0]);
            asm.rm(Enc::of(&[0x0f, 0xb1]).wide_if(w).prefixed(LOCK), s, b, o);
            asm.mov_rr(w, MAP[0], RAX);
        }
        AtomicOp::Add if fetch => {
            asm.mov_rr(w, RAX, s);
            asm.rm(Enc::of(&[0x0f, 0xc1]).wide_if(w).prefixed(LOCK), RAX, b, o);
            asm.mov_rr(w, s, RAX);
        }
        AtomicOp::Add | AtomicOp::Or | AtomicOp::And | AtomicOp::Xor if !fetch => {
            let opcode = match op {
                AtomicOp::Add => 0x01,
                AtomicOp::Or => 0x09,
                AtomicOp::And => 0x21,
                _ => 0x31,
            };
            asm.rm(Enc::of(&[opcode]).wide_if(w).prefixed(LOCK), s, b, o);
        }
        AtomicOp::Or | AtomicOp::And | AtomicOp::Xor | AtomicOp::Add => {
            // Fetching or/and/xor: a compare-and-swap loop.
            let opcode = match op {
                AtomicOp::Or => 0x09,
                AtomicOp::And => 0x21,
                _ => 0x31,
            };
            asm.rm(Enc::of(&[0x8b]).wide_if(w), RAX, b, o);
            let again = asm.code.len();
            asm.mov_rr(w, RDX, RAX);
            asm.rr(w, &[opcode], s, RDX);
            asm.rm(Enc::of(&[0x0f, 0xb1]).wide_if(w).prefixed(LOCK), RDX, b, o);
            asm.j8_back(CC_NE, again);
            asm.mov_rr(w, s, RAX);
        }
    }
}
