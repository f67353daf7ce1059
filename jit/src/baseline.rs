//! The baseline code generator: x86-64 machine code in one pass over the
//! program, each BPF register in a fixed host register (as the kernel's
//! JIT does), no optimisation. It compiles in well under a microsecond per
//! instruction, where Cranelift needs several (a fixed ~40 µs per program
//! and ~1 µs per IR instruction), so a verified program runs native code
//! at once while Cranelift compiles the optimised code in the background
//! ([`crate::Tier::Tiered`]).
//!
//! It takes ALU (32/64-bit, v4 included), jumps, loads, stores, atomics,
//! `lddw` values, helper calls (through the same call-outs as Cranelift's
//! code: such code is not closed), map lookups (on an array map named by
//! an `lddw` in the same block, computed inline in verified code, as
//! Cranelift's is) and `exit`, verified or checked (the checks and budget
//! of Cranelift's checked code, with the same faults and stops), and
//! subprograms: bpf-to-bpf calls (the host's `call`, the depth tested as
//! Cranelift's code tests it), `bpf_loop`, helpers that call back, runs
//! that start at a subprogram; tail calls and legacy packet loads
//! (call-outs). Checked code with subprograms keeps a copy of
//! its frame data (region cache, context, the frame's stack) per frame and
//! tests the budget at every stretch that ends with an effect (no budget
//! points: a run never stops for the interpreter inside a subprogram).
//! `callx` in verified code (the verifier knows its target). Anything else
//! (`callx` in checked code, control that leaves a function otherwise than
//! by a call, jumps out of the program) is left to Cranelift
//! ([`Unsupported`]). The
//! code follows the compiled-program convention of the Cranelift code:
//! `(context, entry pc, r1, r2, r3, r4) -> (r0, status)`, the other
//! registers read from the context's head; division and modulo by zero and
//! `INT_MIN / -1` take branches (no instruction traps).

use userbpf_vm::interp::{OpClass, PreparedProgram};
use userbpf_vm::isa::{AluOp, AtomicOp, EndianOp, Instruction, JmpCond, MemSize, Source, Width};

use crate::codegen::{target, Shape};

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
/// and shifts by a register need them; r15 holds the context (verified
/// code) or the budget (checked code).
const MAP: [u8; 11] = [RBX, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, RBP];
const CTX: u8 = R15;
const RSP: u8 = 4;

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
    fn rex(&mut self, w: bool, reg: u8, base: u8, force: bool) {
        let r = 0x40 | (u8::from(w) << 3) | ((reg >> 3) << 2) | (base >> 3);
        if r != 0x40 || force {
            self.byte(r);
        }
    }

    /// `opcode reg, rm` with both registers (ModRM mode 3).
    fn rr(&mut self, w: bool, op: &[u8], reg: u8, rm: u8) {
        self.rex(w, reg, rm, false);
        self.bytes(op);
        self.byte(0xc0 | ((reg & 7) << 3) | (rm & 7));
    }

    /// [`Asm::rr`] on byte registers.
    fn rr8(&mut self, op: &[u8], reg: u8, rm: u8) {
        let force = (4..8).contains(&reg) || (4..8).contains(&rm);
        self.rex(false, reg, rm, force);
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
        self.rex(e.w, reg, base, e.byte && (4..8).contains(&reg));
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
            self.rex(false, 0, dst, false);
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
            self.rex(true, 0, dst, false);
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

    /// `call rel32` with a displacement to patch (as [`Asm::jmp32`]).
    fn call32(&mut self) -> usize {
        self.byte(0xe8);
        self.imm32(0);
        self.code.len() - 4
    }

    fn jmp32(&mut self) -> usize {
        self.byte(0xe9);
        self.imm32(0);
        self.code.len() - 4
    }

    /// Points the jump whose displacement is at `at` here.
    fn here(&mut self, at: usize) {
        self.point(at, self.code.len());
    }

    /// Points the jump whose displacement is at `at` to `to`.
    fn point(&mut self, at: usize, to: usize) {
        let rel = (to as i64 - (at as i64 + 4)) as i32;
        self.code[at..at + 4].copy_from_slice(&rel.to_le_bytes());
    }

    fn push(&mut self, r: u8) {
        self.rex(false, 0, r, false);
        self.byte(0x50 + (r & 7));
    }

    fn pop(&mut self, r: u8) {
        self.rex(false, 0, r, false);
        self.byte(0x58 + (r & 7));
    }
}

/// A call-out's argument: a register, a register plus a constant, a
/// constant.
#[derive(Clone, Copy)]
enum Arg {
    Reg(u8),
    RegPlus(u8, i32),
    Imm(i32),
    /// The frames below the entry's (computed from the context in rax).
    Depth,
}

/// Registers saved by the code (callee-saved in the C convention).
const SAVED: [u8; 6] = [RBP, RBX, R12, R13, R14, R15];

/// The baseline generator's code for a program.
pub(crate) struct Generated {
    /// The machine code.
    pub(crate) code: Vec<u8>,
    /// Whether it calls out for nothing (it makes no helper call): runs
    /// need no host ([`userbpf_vm::interp::ClosedEntry`]).
    pub(crate) closed: bool,
}

/// Machine code for the program of `shape` (`checked`: with the checks of
/// checked mode, through this memory check trampoline; `prog`: its
/// helpers and maps), or why the baseline generator leaves it to
/// Cranelift.
pub(crate) fn generate(
    shape: &Shape,
    prog: &PreparedProgram,
    layout: &Layout,
    checked: Option<u64>,
) -> Result<Generated, Unsupported> {
    let len = shape.insns.len();
    let unsupported = |pc: usize, what: &str| Unsupported(format!("pc {pc}: {what}"));
    // Subprograms run with the host's `call` (a frame: r6..r10 pushed,
    // r10 a stack frame lower): by bpf-to-bpf calls, `bpf_loop`, helpers'
    // callbacks and `callx`; a run may also start at one (a timer's
    // callback).
    let multi = shape.entries.len() > 1;
    // Where the first function (the program's own frame) ends.
    let main_end = shape
        .entries
        .iter()
        .copied()
        .find(|&e| e > 0)
        .unwrap_or(len);
    // Every function stays in itself (as the verifier demands; checked
    // code may break it): no jump lands in another function, none falls
    // off its end into the next. (Each function's code assumes its own
    // frame.)
    {
        let function = |pc: usize| shape.entries.range(..=pc).next_back().copied();
        for (pc, slot) in shape.insns.iter().enumerate() {
            let Some((i, class)) = slot else { continue };
            // (The first function is never called: its `exit` ends the
            // run.)
            let to_first = match class {
                OpClass::Local(t) => *t == 0,
                OpClass::LoadImm(v) => prog.callback_target(*v) == Some(0),
                _ => false,
            };
            if to_first {
                return Err(unsupported(pc, "a call of the program's first function"));
            }
            if let Some(rel) = i.jump_offset() {
                let t = target(pc, rel);
                if t < len && function(t) != function(pc) {
                    return Err(unsupported(pc, "a jump into another function"));
                }
            }
            let next = pc + i.slots();
            let ends = matches!(
                i,
                Instruction::Exit | Instruction::Ja { .. } | Instruction::JaLong { .. }
            );
            if !ends && next < len && shape.entries.contains(&next) {
                return Err(unsupported(pc, "falls into the next function"));
            }
        }
    }
    if len == 0 {
        return Err(Unsupported("an empty program".into()));
    }
    // (With subprograms, no budget points: every block tests the budget,
    // a `Budget` fault where it runs out.)
    let checks = checked.map(|trampoline| Checks {
        trampoline,
        points: shape.budget_points(),
    });
    let valid = |t: usize| t < len && shape.insns[t].is_some();
    let mut asm = Asm {
        code: Vec::with_capacity(64 + len * 12),
    };
    // Prologue: save; r1 (rdx) and r2 (rcx) to their registers (r3, r4
    // arrive in r8, r9, theirs), the others from the context (in rax
    // meanwhile). Verified code keeps the context in r15; checked code
    // keeps the budget there, and the context, the checks' regions and
    // the stack's bounds in its frame.
    for r in SAVED {
        asm.push(r);
    }
    if multi {
        // The entry pc (the run may start at a subprogram) and the stack
        // pointer every way out returns to.
        asm.rm(Enc::of(&[0x89]).wide(), RSI, RDI, layout.record);
        asm.rm(Enc::of(&[0x89]).wide(), RSP, RDI, layout.frames);
    }
    asm.mov_rr(true, RAX, RDI);
    asm.mov_rr(true, MAP[1], RDX);
    asm.mov_rr(true, MAP[2], RCX);
    for i in [0usize, 5, 6, 7, 8, 9, 10] {
        asm.rm(
            Enc::of(&[0x8b]).wide(),
            MAP[i],
            RAX,
            layout.regs + 8 * i as i32,
        );
    }
    if multi {
        // The entry's r10 (frames below it are a stack frame lower each),
        // kept where a tail call from a subprogram, which stores every
        // register into the context, leaves it.
        asm.rm(
            Enc::of(&[0x89]).wide(),
            MAP[10],
            RAX,
            layout.frames + ENTRY_R10,
        );
    }
    if checks.is_some() {
        asm.alu_ri(true, 5, RSP, FRAME);
        asm.rm(Enc::of(&[0x89]).wide(), RAX, RSP, F_CTX);
        for i in 0..4 {
            asm.rm(Enc::of(&[0x8b]).wide(), RCX, RAX, layout.seed + 8 * i);
            asm.rm(Enc::of(&[0x89]).wide(), RCX, RSP, F_SEED + 8 * i);
        }
        // The stack: from r10 - 512 up to the stack's top.
        asm.rm(Enc::of(&[0x8d]).wide(), RCX, MAP[10], -(STACK_SIZE as i32));
        asm.rm(Enc::of(&[0x89]).wide(), RCX, RSP, F_STACK_LO);
        asm.rm(Enc::of(&[0x8b]).wide(), RDX, RAX, layout.stack_top);
        asm.rr(true, &[0x29], RCX, RDX);
        asm.rm(Enc::of(&[0x89]).wide(), RDX, RSP, F_STACK_SPAN);
        asm.rm(Enc::of(&[0x8b]).wide(), R15, RAX, layout.budget);
    } else {
        asm.mov_rr(true, CTX, RAX);
    }
    let mut g = Gen {
        asm,
        layout,
        checks,
        blk_len: 0,
        blk_done: 0,
        frames: multi,
        fdisp: 0,
    };
    let mut closed = true;
    // A run that starts at a subprogram: to its code (the dispatch at the
    // end).
    let mut to_dispatch = None;
    if multi {
        let ctx = g.ctx_into(RAX);
        g.asm.rm(Enc::of(&[0x8b]).wide(), RAX, ctx, layout.record);
        g.asm.rr(true, &[0x85], RAX, RAX);
        to_dispatch = Some(g.asm.jcc32(CC_NE));
    }
    let entries: Vec<usize> = shape.entries.iter().copied().filter(|&e| e > 0).collect();
    // Registers known to hold a constant (an `lddw` earlier in the same
    // block, not written since): the map of an inline array lookup.
    let mut consts: [Option<u64>; 11] = [None; 11];
    // Checked code that tests the budget at every block (no budget
    // points) charges each stretch that ends with an instruction with
    // effects (a store, an atomic, a call-out) on its own: when the
    // budget runs out inside a stretch, the interpreter too stops before
    // its effect (it ran only instructions without any), at the pc the
    // fault names.
    let per_block = g.checks.as_ref().is_some_and(|c| c.points.is_none());
    let mut charge_at = shape.leaders.clone();
    if per_block {
        for (pc, slot) in shape.insns.iter().enumerate() {
            if let Some((i, class)) = slot {
                let effect = matches!(class, OpClass::Helper(_) | OpClass::MapLookup(_))
                    || matches!(
                        i,
                        Instruction::LoadPacket { .. }
                            | Instruction::Store { .. }
                            | Instruction::Atomic { .. }
                    );
                if effect {
                    charge_at.insert(pc + i.slots());
                }
            }
        }
    }
    // Instructions from `pc` to the next place that charges.
    let span = |pc: usize| -> u64 {
        let (mut n, mut p) = (0, pc);
        while let Some(slot) = shape.insns.get(p) {
            if p != pc && charge_at.contains(&p) {
                break;
            }
            match slot {
                Some((i, _)) => {
                    n += 1;
                    p += i.slots();
                }
                None => p += 1,
            }
        }
        n
    };
    let mut starts = vec![0usize; len];
    let mut fixups: Vec<(usize, usize)> = Vec::new();
    for (pc, slot) in shape.insns.iter().enumerate() {
        starts[pc] = g.asm.code.len();
        g.fdisp = if pc >= main_end { 8 } else { 0 };
        let Some((insn, class)) = *slot else {
            // The second slot of an lddw: reached only by falling through
            // the lddw, which jumps over it.
            continue;
        };
        if shape.leaders.contains(&pc) {
            consts = [None; 11];
        }
        if g.checks.is_some() {
            if charge_at.contains(&pc) {
                let n = if per_block {
                    span(pc)
                } else {
                    shape.block_len(pc)
                };
                g.charge(pc, n);
            }
            g.blk_done += 1;
            g.check_access(pc, &insn);
        }
        let known = consts;
        if let Some(d) = insn.dst_written() {
            consts[usize::from(d.num()).min(10)] = None;
        }
        if matches!(class, OpClass::Helper(_) | OpClass::MapLookup(_)) {
            // (r0..r5 are not known after a call.)
            consts = [None; 11];
        }
        let asm = &mut g.asm;
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
                    consts[usize::from(dst.num()).min(10)] = Some(v);
                    continue;
                }
                return Err(unsupported(pc, "a resolved value on another instruction"));
            }
            // (Without subprograms no callback is valid: the checks, then
            // a `BadCallTarget` fault.)
            OpClass::Loop => {
                g.bpf_loop(pc, &entries, &mut fixups);
                continue;
            }
            OpClass::CorePoison => {
                g.fault_at(pc, crate::ctx::FaultCode::CorePoison, None);
                continue;
            }
            OpClass::Local(t) if multi && valid(t) => {
                g.local_call(pc);
                fixups.push((g.asm.call32(), t));
                g.local_return();
                continue;
            }
            OpClass::TailCall => {
                if pc < main_end {
                    g.tail_call(pc);
                } else {
                    g.tail_call_in_subprogram(pc);
                }
                closed = false;
                continue;
            }
            OpClass::Helper(_) => {
                g.call_out(pc, crate::ctx::jit_helper as *const () as u64, true);
                if multi {
                    g.drive_callbacks(pc, &entries, &mut fixups);
                }
                g.leave_on_status();
                closed = false;
                continue;
            }
            OpClass::MapLookup(_) => {
                // (Inline in verified code only, as Cranelift's.)
                let array = known[1]
                    .filter(|_| g.checks.is_none())
                    .and_then(|m| prog.map_accel()?.array_values(m))
                    .and_then(|(base, stride, entries)| {
                        Some((base, i32::try_from(stride).ok()?, entries))
                    });
                match array {
                    Some((base, stride, entries)) => g.inline_array(base, stride, entries),
                    None => {
                        g.call_out(pc, crate::ctx::jit_map_lookup as *const () as u64, false);
                        g.leave_on_status();
                        closed = false;
                    }
                }
                continue;
            }
            // Verified code only (the verifier knows the target: a
            // subprogram or a helper's id); checked code may forge an
            // address of the first function, which this code cannot call.
            OpClass::CallX if g.checks.is_none() => {
                if let Instruction::CallX { reg } = insn {
                    g.callx(pc, host(reg), &entries, &mut fixups);
                    closed = false;
                }
                continue;
            }
            _ => return Err(unsupported(pc, "a call")),
        }
        match insn {
            Instruction::Alu {
                width,
                op,
                dst,
                src,
            } => alu(asm, width, op, host(dst), src),
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
            Instruction::Endian { op, dst, bits } => endian(asm, op, host(dst), bits),
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
                // Zero-extending loads (32-bit moves zero the top half),
                // or sign-extending ones.
                let sx = matches!(insn, Instruction::LoadSx { .. });
                let enc = match (size, sx) {
                    (MemSize::B, false) => Enc::of(&[0x0f, 0xb6]),
                    (MemSize::H, false) => Enc::of(&[0x0f, 0xb7]),
                    (MemSize::W, false) => Enc::of(&[0x8b]),
                    (MemSize::B, true) => Enc::of(&[0x0f, 0xbe]).wide(),
                    (MemSize::H, true) => Enc::of(&[0x0f, 0xbf]).wide(),
                    (MemSize::W, true) => Enc::of(&[0x63]).wide(),
                    (MemSize::DW, _) => Enc::of(&[0x8b]).wide(),
                };
                asm.rm(enc, host(dst), host(src), i32::from(off));
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
                atomic(asm, w, op, fetch, host(dst), host(src), i32::from(off));
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
            Instruction::Exit if pc >= main_end => g.function_exit(),
            Instruction::Exit => g.end_run(),
            Instruction::Call(_) | Instruction::CallX { .. } => {
                return Err(unsupported(pc, "a call"));
            }
            Instruction::LoadPacket { size, mode, imm } => {
                let off = match mode {
                    userbpf_vm::isa::PacketMode::Abs => Arg::Imm(imm),
                    userbpf_vm::isa::PacketMode::Ind(r) => Arg::RegPlus(host(r), imm),
                };
                let f = crate::ctx::jit_packet_load as *const () as u64;
                let len = size_len(size) as i32;
                g.call_out_with(pc, f, false, off, Arg::Imm(len), Arg::Reg(R8));
                if pc >= main_end {
                    g.return_zero_if_outside();
                }
                g.leave_on_status();
                closed = false;
            }
        }
    }
    if let Some(at) = to_dispatch {
        // A run that starts at a subprogram (its pc in rax): jumps to it,
        // whose `exit` ends the run; any other pc is no entry.
        g.asm.here(at);
        g.fdisp = 0;
        let mut found = Vec::new();
        for &e in &entries {
            g.asm.alu_ri(true, 7, RAX, e as i32);
            found.push((g.asm.jcc32(CC_E), e));
        }
        g.fault_at(0, crate::ctx::FaultCode::InvalidPc, None);
        for (at, e) in found {
            g.asm.here(at);
            // Checked code: the frame data copied where a subprogram finds
            // it (past a slot in place of a return address).
            g.frame_copy(0, 8);
            fixups.push((g.asm.jmp32(), e));
        }
    }
    if g.asm.code.len() > i32::MAX as usize {
        return Err(Unsupported("code over 2 GiB".into()));
    }
    for (at, t) in fixups {
        g.asm.point(at, starts[t]);
    }
    Ok(Generated {
        code: g.asm.code,
        closed,
    })
}

/// Where the compiled-program context keeps what the code reads and
/// writes (offsets).
pub(crate) struct Layout {
    pub(crate) regs: i32,
    pub(crate) budget: i32,
    pub(crate) seed: i32,
    pub(crate) stack_top: i32,
    pub(crate) fp: i32,
    pub(crate) status: i32,
    pub(crate) record: i32,
    pub(crate) max_depth: i32,
    pub(crate) depth_limit: i32,
    pub(crate) cb_target: i32,
    pub(crate) cb_args: i32,
    /// Scratch the baseline code owns (Cranelift's call frames, which it
    /// does not use): the host stack pointer at the entry.
    pub(crate) frames: i32,
}

/// What checked code needs: the memory check trampoline and where the
/// budget is tested.
struct Checks {
    trampoline: u64,
    points: Option<std::collections::HashMap<usize, (u64, u16)>>,
}

// Checked code's frame (below the saved registers): the checks' regions
// (read start, read limit, write start, write limit, as in the context's
// seed), the context, the stack's start and size, r2 across a check's
// call. 72 bytes keep the stack 16-byte aligned at that call.
const F_SEED: i32 = 0;
const F_CTX: i32 = 32;
const F_STACK_LO: i32 = 40;
const F_STACK_SPAN: i32 = 48;
const F_R2: i32 = 56;
const FRAME: i32 = 72;
const STACK_SIZE: u64 = userbpf_vm::interp::STACK_SIZE as u64;
/// Where the entry's r10 is kept in the baseline code's scratch
/// ([`Layout::frames`]; the entry's stack pointer is at 0).
const ENTRY_R10: i32 = 8;
/// Bytes of a checked frame's copy of the frame data, with the pad that
/// keeps a callee's stack aligned as the first frame's.
const COPY: i32 = FRAME + 8;
/// log2 of [`STACK_SIZE`].
const STACK_SHIFT: u8 = STACK_SIZE.trailing_zeros() as u8;

/// The generator's state.
struct Gen<'l> {
    asm: Asm,
    layout: &'l Layout,
    checks: Option<Checks>,
    /// Instructions of the current block, and how many of them have
    /// started (checked code charges a block on entry).
    blk_len: u64,
    blk_done: u64,
    /// Verified code with subprograms: a way out of the run may start in
    /// a frame below the first ([`Gen::ret`] unwinds them).
    frames: bool,
    /// Checked code: where the frame data is from the stack pointer, past
    /// its offsets (0 in the first frame; 8 in a subprogram, whose copy
    /// lies past the return address).
    fdisp: i32,
}

impl Gen<'_> {
    /// Calls call-out `f` (`(context, pc, r1, r2, r3, r4[, r5])`: the
    /// helper's with `five`, else the map lookup's) for the call at `pc`,
    /// its value in rax; r1..r6 (in caller-saved registers) as they were,
    /// r0, r7..r10 and the budget in callee-saved ones.
    fn call_out(&mut self, pc: usize, f: u64, five: bool) {
        let (r1, r2, r3) = (Arg::Reg(MAP[1]), Arg::Reg(MAP[2]), Arg::Reg(MAP[3]));
        self.call_out_with(pc, f, five, r1, r2, r3);
    }

    /// [`Gen::call_out`] with `third`, `fourth` and `fifth` as the
    /// call-out's third to fifth arguments (r1 and r2 are read before
    /// rdi and rsi take the first two).
    fn call_out_with(
        &mut self,
        pc: usize,
        f: u64,
        five: bool,
        third: Arg,
        fourth: Arg,
        fifth: Arg,
    ) {
        let checked = self.checks.is_some();
        let entry_r10 = self.layout.frames + ENTRY_R10;
        let fp = self.layout.fp;
        let ctx_at = self.f(F_CTX);
        let a = &mut self.asm;
        // The context (checked code keeps it in its frame), and in it the
        // caller's frame pointer, for the host's checks of stack
        // arguments.
        if checked {
            a.rm(Enc::of(&[0x8b]).wide(), RAX, RSP, ctx_at);
        } else {
            a.mov_rr(true, RAX, CTX);
        }
        a.rm(Enc::of(&[0x89]).wide(), MAP[10], RAX, fp);
        let kept = [MAP[1], MAP[2], MAP[3], MAP[4], MAP[5], MAP[6]];
        for r in kept {
            a.push(r);
        }
        // The stack 16-byte aligned at the call: after the saved
        // registers (and checked code's frame) it is 8 (verified) or 0
        // (checked) past a multiple of 16; r5 goes on it as the seventh
        // argument.
        let pad = if five == checked { 8 } else { 0 };
        if pad != 0 {
            a.alu_ri(true, 5, RSP, pad);
        }
        if five {
            a.push(MAP[5]);
        }
        for (into, arg) in [(RDX, third), (RCX, fourth), (R8, fifth)] {
            match arg {
                Arg::Reg(r) if r == into => {}
                Arg::Reg(r) => a.mov_rr(true, into, r),
                Arg::RegPlus(r, k) => a.rm(Enc::of(&[0x8d]).wide(), into, r, k),
                Arg::Imm(k) => a.mov_ri(true, into, k),
                Arg::Depth => {
                    a.rm(Enc::of(&[0x8b]).wide(), into, RAX, entry_r10);
                    a.rr(true, &[0x29], MAP[10], into);
                    a.shift_ri(true, 5, into, STACK_SHIFT);
                }
            }
        }
        a.mov_rr(true, RDI, RAX);
        a.mov_ri(false, RSI, pc as i32);
        a.mov_ri64(RAX, f);
        a.bytes(&[0xff, 0xd0]); // call rax
        let popped = pad + if five { 8 } else { 0 };
        if popped != 0 {
            a.alu_ri(true, 0, RSP, popped);
        }
        for r in kept.iter().rev() {
            a.pop(*r);
        }
    }

    /// The frame data's offset `off` from the stack pointer, in the code
    /// being generated.
    fn f(&self, off: i32) -> i32 {
        off + self.fdisp
    }

    /// The register that holds the context: r15 in verified code; in
    /// checked code `into`, loaded from the frame data.
    fn ctx_into(&mut self, into: u8) -> u8 {
        if self.checks.is_some() {
            let at = self.f(F_CTX);
            self.asm.rm(Enc::of(&[0x8b]).wide(), into, RSP, at);
            into
        } else {
            CTX
        }
    }

    /// A bpf-to-bpf call at `pc` (the callee's code follows it, after
    /// [`Gen::frame_copy`]): a frame more than the run may push is a
    /// `CallDepth` fault (the depth from r10, a stack frame below the
    /// entry's per frame), else the deepest frame is noted and the
    /// caller's r6..r10 saved; r10 moves a stack frame down. (rax, rcx
    /// and, in checked code, rdx are clobbered.)
    fn frame_push(&mut self, pc: usize) {
        let l = self.layout;
        let ctx = self.ctx_into(RDX);
        let a = &mut self.asm;
        // rax = bytes of stack frames below the entry's.
        a.rm(Enc::of(&[0x8b]).wide(), RAX, ctx, l.frames + ENTRY_R10);
        a.rr(true, &[0x29], MAP[10], RAX);
        a.rm(Enc::of(&[0x8b]).wide(), RCX, ctx, l.depth_limit);
        a.shift_ri(true, 4, RCX, STACK_SHIFT);
        a.rr(true, &[0x39], RCX, RAX);
        let ok = a.jcc32(CC_B);
        // The fault: recorded, then out of every frame and of the code.
        self.fault_at(pc, crate::ctx::FaultCode::CallDepth, None);
        let a = &mut self.asm;
        a.here(ok);
        // The deepest frame: max(head.max_depth, depth + 1).
        a.shift_ri(true, 5, RAX, STACK_SHIFT);
        a.alu_ri(true, 0, RAX, 1);
        a.rm(Enc::of(&[0x3b]).wide(), RAX, ctx, l.max_depth);
        let shallower = a.jcc32(CC_BE);
        a.rm(Enc::of(&[0x89]).wide(), RAX, ctx, l.max_depth);
        a.here(shallower);
        for r in [MAP[6], MAP[7], MAP[8], MAP[9], MAP[10]] {
            a.push(r);
        }
        a.alu_ri(true, 5, MAP[10], STACK_SIZE as i32);
    }

    /// Checked code: room for a frame's copy of the frame data (the
    /// region cache and the context as the caller's, whose data is
    /// `above` bytes over the room; the stack from the new r10's frame up)
    /// at `base` bytes from the new stack pointer, which stays aligned as
    /// in the first frame. Nothing in verified code.
    fn frame_copy(&mut self, above: i32, base: i32) {
        if self.checks.is_none() {
            return;
        }
        let old = COPY + above;
        let a = &mut self.asm;
        a.alu_ri(true, 5, RSP, COPY);
        for w in [F_SEED, F_SEED + 8, F_SEED + 16, F_SEED + 24, F_CTX] {
            a.rm(Enc::of(&[0x8b]).wide(), RAX, RSP, old + w);
            a.rm(Enc::of(&[0x89]).wide(), RAX, RSP, base + w);
        }
        a.rm(Enc::of(&[0x8d]).wide(), RCX, MAP[10], -(STACK_SIZE as i32));
        a.rm(Enc::of(&[0x89]).wide(), RCX, RSP, base + F_STACK_LO);
        a.rm(Enc::of(&[0x8b]).wide(), RAX, RAX, self.layout.stack_top);
        a.rr(true, &[0x29], RCX, RAX);
        a.rm(Enc::of(&[0x89]).wide(), RAX, RSP, base + F_STACK_SPAN);
    }

    /// A call's frame set up: [`Gen::frame_push`], then
    /// [`Gen::frame_copy`] (the caller's data past the pushed registers);
    /// `call` next.
    fn local_call(&mut self, pc: usize) {
        self.frame_push(pc);
        let above = 40 + self.fdisp;
        self.frame_copy(above, 0);
    }

    /// Records fault `code` at `pc` (value: `value`'s register, or 0) and
    /// leaves the run ([`Gen::fault_record`]).
    fn fault_at(&mut self, pc: usize, code: crate::ctx::FaultCode, value: Option<u8>) {
        match value {
            Some(r) => self.asm.mov_rr(true, RAX, r),
            None => self.asm.rr(false, &[0x31], RAX, RAX),
        }
        self.fault_record(pc, code, 0);
    }

    /// The run's end at an `exit`: r0 and status 0 back (checked code:
    /// the budget into the context first).
    fn end_run(&mut self) {
        if self.checks.is_some() {
            let ctx = self.ctx_into(RAX);
            let budget = self.layout.budget;
            self.asm.rm(Enc::of(&[0x89]).wide(), R15, ctx, budget);
        }
        self.asm.mov_rr(true, RAX, MAP[0]);
        self.asm.rr(false, &[0x31], RDX, RDX);
        self.ret();
    }

    /// Sets the flags for a test whether `v` holds a subprogram's address
    /// (`E`: it does), through rdx.
    fn test_function_address(&mut self, v: u8) {
        self.asm.mov_rr(true, RDX, v);
        self.asm.shift_ri(true, 5, RDX, 32);
        let tag = (userbpf_vm::interp::FUNC_ADDR_TAG >> 32) as u32 as i32;
        self.asm.alu_ri(false, 7, RDX, tag);
    }

    /// rdx = the pc of subprogram address `v` when it is one of `entries`,
    /// else a `BadCallTarget` fault at `pc` (the value `v`).
    fn entry_of(&mut self, pc: usize, v: u8, entries: &[usize]) {
        self.asm.mov_rr(false, RDX, v);
        let mut known = Vec::new();
        for &e in entries {
            self.asm.alu_ri(true, 7, RDX, e as i32);
            known.push(self.asm.jcc32(CC_E));
        }
        self.fault_at(pc, crate::ctx::FaultCode::BadCallTarget, Some(v));
        for at in known {
            self.asm.here(at);
        }
    }

    /// Calls the subprogram whose pc is in rdx (one of `entries`, else
    /// an `InvalidPc` fault at `pc`), a frame already pushed.
    fn call_dynamic(&mut self, pc: usize, entries: &[usize], fixups: &mut Vec<(usize, usize)>) {
        let mut done = Vec::new();
        for &e in entries {
            self.asm.alu_ri(true, 7, RDX, e as i32);
            let next = self.asm.jcc32(CC_NE);
            fixups.push((self.asm.call32(), e));
            done.push(self.asm.jmp32());
            self.asm.here(next);
        }
        // (The frame's copy of the data is at the stack pointer.)
        let fdisp = std::mem::replace(&mut self.fdisp, 0);
        self.fault_at(pc, crate::ctx::FaultCode::InvalidPc, None);
        self.fdisp = fdisp;
        for at in done {
            self.asm.here(at);
        }
    }

    /// Verified code: `bpf_loop(nr_loops, callback, ctx, flags)` at `pc`
    /// as Cranelift's code runs it: -EINVAL for flags, -E2BIG past
    /// `BPF_MAX_LOOPS`, 0 for no iteration, a `BadCallTarget` fault for a
    /// callback that is not a subprogram; else the callback (r1 = the
    /// index, r2 = ctx) in one frame until it returns non-zero or the
    /// count is done, r0 = the iterations run.
    fn bpf_loop(&mut self, pc: usize, entries: &[usize], fixups: &mut Vec<(usize, usize)>) {
        let mut out = Vec::new();
        let early = |g: &mut Self, cc: u8, r0: i32, out: &mut Vec<usize>| {
            let skip = g.asm.jcc32(cc);
            g.asm.mov_ri(true, MAP[0], r0);
            out.push(g.asm.jmp32());
            g.asm.here(skip);
        };
        // r1 (rsi) as a u32.
        self.asm.mov_rr(false, MAP[1], MAP[1]);
        self.asm.rr(true, &[0x85], MAP[4], MAP[4]);
        early(self, CC_E, -libc::EINVAL, &mut out);
        self.asm
            .alu_ri(true, 7, MAP[1], userbpf_vm::interp::BPF_MAX_LOOPS as i32);
        early(self, CC_BE, -libc::E2BIG, &mut out);
        self.asm.rr(true, &[0x85], MAP[1], MAP[1]);
        early(self, CC_NE, 0, &mut out);
        // The callback: a function address of this program.
        self.test_function_address(MAP[2]);
        let tagged = self.asm.jcc32(CC_E);
        self.fault_at(pc, crate::ctx::FaultCode::BadCallTarget, Some(MAP[2]));
        self.asm.here(tagged);
        self.entry_of(pc, MAP[2], entries);
        // One frame for the whole loop (r6..r10 saved, r10 lower), then
        // its state: the callback's pc, ctx, the count, the index; checked
        // code's copy of the frame data below it all.
        self.frame_push(pc);
        let above = 40 + 32 + self.fdisp;
        let a = &mut self.asm;
        a.mov_rr(false, RDX, MAP[2]);
        a.push(RDX);
        a.push(MAP[3]);
        a.push(MAP[1]);
        a.rr(false, &[0x31], RAX, RAX);
        a.push(RAX);
        self.frame_copy(above, 0);
        // The state's place from the stack pointer.
        let st = if self.checks.is_some() { COPY } else { 0 };
        let a = &mut self.asm;
        let round = a.code.len();
        a.rm(Enc::of(&[0x8b]).wide(), MAP[1], RSP, st);
        a.rm(Enc::of(&[0x8b]).wide(), MAP[2], RSP, st + 16);
        for r in [MAP[3], MAP[4], MAP[5]] {
            a.rr(false, &[0x31], r, r);
        }
        a.rm(Enc::of(&[0x8b]).wide(), RDX, RSP, st + 24);
        self.call_dynamic(pc, entries, fixups);
        let a = &mut self.asm;
        // rax = the index + 1; a non-zero r0 stops with it, else the next
        // round while it is below the count, else the count.
        a.rm(Enc::of(&[0x8b]).wide(), RAX, RSP, st);
        a.alu_ri(true, 0, RAX, 1);
        a.rr(true, &[0x85], MAP[0], MAP[0]);
        let stopped = a.jcc32(CC_NE);
        a.rm(Enc::of(&[0x3b]).wide(), RAX, RSP, st + 8);
        let all = a.jcc32(CC_AE);
        a.rm(Enc::of(&[0x89]).wide(), RAX, RSP, st);
        let back = a.jmp32();
        a.point(back, round);
        a.here(stopped);
        a.mov_rr(true, MAP[0], RAX);
        let to_end = a.jmp32();
        a.here(all);
        a.rm(Enc::of(&[0x8b]).wide(), MAP[0], RSP, st + 8);
        a.here(to_end);
        a.alu_ri(true, 0, RSP, st + 32);
        for r in [MAP[10], MAP[9], MAP[8], MAP[7], MAP[6]] {
            a.pop(r);
        }
        for at in out {
            self.asm.here(at);
        }
    }

    /// After the helper call-out at `pc`: while the helper asks for its
    /// callback (`STATUS_CALLBACK`), calls it in a frame with the
    /// arguments it gave, and hands its r0 back (`jit_drive`), whose
    /// value and status are then the call's.
    fn drive_callbacks(&mut self, pc: usize, entries: &[usize], fixups: &mut Vec<(usize, usize)>) {
        let l = self.layout;
        let checked = self.checks.is_some();
        let again = self.asm.code.len();
        let ctx = self.ctx_into(RCX);
        self.asm.rm(Enc::of(&[0x81]).wide(), 7, ctx, l.status);
        self.asm.imm32(crate::ctx::STATUS_CALLBACK as i32);
        let not_cb = self.asm.jcc32(CC_NE);
        self.local_call(pc);
        // (The context from the new frame's copy in checked code.)
        let ctx = if checked {
            self.asm.rm(Enc::of(&[0x8b]).wide(), RCX, RSP, F_CTX);
            RCX
        } else {
            CTX
        };
        let a = &mut self.asm;
        for (i, r) in [MAP[1], MAP[2], MAP[3], MAP[4], MAP[5]]
            .into_iter()
            .enumerate()
        {
            a.rm(Enc::of(&[0x8b]).wide(), r, ctx, l.cb_args + 8 * i as i32);
        }
        a.rm(Enc::of(&[0x8b]).wide(), RDX, ctx, l.cb_target);
        self.call_dynamic(pc, entries, fixups);
        self.local_return();
        // jit_drive(ctx, pc, r0), the caller's frame pointer noted; r6 (in
        // a caller-saved register) kept; the stack aligned for the call.
        let ctx = self.ctx_into(RDI);
        let a = &mut self.asm;
        a.rm(Enc::of(&[0x89]).wide(), MAP[10], ctx, l.fp);
        a.push(MAP[6]);
        if checked {
            a.alu_ri(true, 5, RSP, 8);
        }
        a.mov_rr(true, RDI, ctx);
        a.mov_ri(false, RSI, pc as i32);
        a.mov_rr(true, RDX, MAP[0]);
        a.mov_ri64(RAX, crate::ctx::jit_drive as *const () as u64);
        a.bytes(&[0xff, 0xd0]); // call rax
        if checked {
            a.alu_ri(true, 0, RSP, 8);
        }
        a.pop(MAP[6]);
        let back = a.jmp32();
        a.point(back, again);
        a.here(not_cb);
    }

    /// `bpf_tail_call(ctx, map, index)` at `pc`, in the first frame: when
    /// the host takes it, every register into the context (the target
    /// starts from them) and out with `STATUS_TAIL_CALL`; else r0 =
    /// -ENOENT and on.
    fn tail_call(&mut self, pc: usize) {
        let f = crate::ctx::jit_tail_call as *const () as u64;
        let (r2, r3) = (Arg::Reg(MAP[2]), Arg::Reg(MAP[3]));
        self.call_out_with(pc, f, false, r2, r3, Arg::Reg(R8));
        self.asm.rr(true, &[0x85], RAX, RAX);
        let not_taken = self.asm.jcc32(CC_E);
        let ctx = self.ctx_into(RCX);
        self.store_registers(ctx);
        self.asm
            .mov_ri(false, RDX, crate::ctx::STATUS_TAIL_CALL as i32);
        self.asm.mov_rr(true, RAX, MAP[0]);
        self.ret();
        self.asm.here(not_taken);
        self.asm.mov_ri(true, MAP[0], -libc::ENOENT);
    }

    /// Every register, and in checked code the budget, into the context
    /// (in `ctx`): what a tail call's target starts from.
    fn store_registers(&mut self, ctx: u8) {
        let l = self.layout;
        for (i, r) in MAP.iter().enumerate() {
            self.asm
                .rm(Enc::of(&[0x89]).wide(), *r, ctx, l.regs + 8 * i as i32);
        }
        if self.checks.is_some() {
            self.asm.rm(Enc::of(&[0x89]).wide(), R15, ctx, l.budget);
        }
    }

    /// `bpf_tail_call` at `pc` in a subprogram: in a run that started
    /// there, as from the first frame ([`Gen::tail_call`]); in a frame
    /// below it, the host runs the target in place of this function
    /// (every register and the budget handed over through the context,
    /// the budget taken back): taken, its r0 is this function's, which
    /// returns; not taken, r0 = -ENOENT and on; a fault leaves the run.
    fn tail_call_in_subprogram(&mut self, pc: usize) {
        let l = self.layout;
        let checked = self.checks.is_some();
        let ctx = self.ctx_into(RCX);
        self.asm
            .rm(Enc::of(&[0x8b]).wide(), RAX, ctx, l.frames + ENTRY_R10);
        self.asm.rr(true, &[0x39], MAP[10], RAX);
        let nested = self.asm.jcc32(CC_NE);
        self.tail_call(pc);
        let done = self.asm.jmp32();
        self.asm.here(nested);
        let ctx = self.ctx_into(RCX);
        self.store_registers(ctx);
        let f = crate::ctx::jit_tail_call_nested as *const () as u64;
        let (r2, r3) = (Arg::Reg(MAP[2]), Arg::Reg(MAP[3]));
        self.call_out_with(pc, f, false, r2, r3, Arg::Depth);
        let ctx = self.ctx_into(RCX);
        if checked {
            self.asm.rm(Enc::of(&[0x8b]).wide(), R15, ctx, l.budget);
        }
        let a = &mut self.asm;
        a.rm(Enc::of(&[0x8b]).wide(), RDX, ctx, l.status);
        a.rr(true, &[0x85], RDX, RDX);
        let fall = a.jcc32(CC_E);
        a.alu_ri(true, 7, RDX, crate::ctx::STATUS_RETURN as i32);
        let failed = a.jcc32(CC_NE);
        // Taken: the target's r0, back to this function's caller.
        a.mov_rr(true, MAP[0], RAX);
        a.byte(0xc3);
        a.here(failed);
        if checked {
            a.rm(Enc::of(&[0x89]).wide(), R15, ctx, l.budget);
        }
        a.rm(Enc::of(&[0x8b]).wide(), RDX, ctx, l.status);
        self.ret();
        let a = &mut self.asm;
        a.here(fall);
        a.mov_ri(true, MAP[0], -libc::ENOENT);
        a.here(done);
    }

    /// Verified code, `callx` at `pc` on `v`: a subprogram's address calls
    /// it in a frame (as a bpf-to-bpf call; not one of this program's: a
    /// `BadCallTarget` fault); anything else is a helper's id, called
    /// with r1..r5 (as the interpreter's `callx`).
    fn callx(&mut self, pc: usize, v: u8, entries: &[usize], fixups: &mut Vec<(usize, usize)>) {
        let l = self.layout;
        self.test_function_address(v);
        let helper = self.asm.jcc32(CC_NE);
        self.entry_of(pc, v, entries);
        self.local_call(pc);
        self.call_dynamic(pc, entries, fixups);
        self.local_return();
        let done = self.asm.jmp32();
        // A helper's id: jit_callx_helper(ctx, pc, id, &[r1..r5]), r1..r6
        // kept (pushed so that r1..r5 lie in order from the stack pointer,
        // past a pad that aligns the call).
        let a = &mut self.asm;
        a.here(helper);
        a.rm(Enc::of(&[0x89]).wide(), MAP[10], CTX, l.fp);
        for r in [MAP[6], MAP[5], MAP[4], MAP[3], MAP[2], MAP[1]] {
            a.push(r);
        }
        a.mov_rr(true, RDX, v);
        a.mov_rr(true, RCX, RSP);
        a.alu_ri(true, 5, RSP, 8);
        a.mov_rr(true, RDI, CTX);
        a.mov_ri(false, RSI, pc as i32);
        a.mov_ri64(RAX, crate::ctx::jit_callx_helper as *const () as u64);
        a.bytes(&[0xff, 0xd0]); // call rax
        a.alu_ri(true, 0, RSP, 8);
        for r in [MAP[1], MAP[2], MAP[3], MAP[4], MAP[5], MAP[6]] {
            a.pop(r);
        }
        self.drive_callbacks(pc, entries, fixups);
        self.leave_on_status();
        self.asm.here(done);
    }

    /// After a bpf-to-bpf call returned: the caller's r6..r10 back (r0 is
    /// the callee's; r1..r5 are unreadable).
    fn local_return(&mut self) {
        if self.checks.is_some() {
            self.asm.alu_ri(true, 0, RSP, COPY);
        }
        for r in [MAP[10], MAP[9], MAP[8], MAP[7], MAP[6]] {
            self.asm.pop(r);
        }
    }

    /// `exit` in a subprogram: back to its caller's `call`, or (the run
    /// started here: r10 is the entry's) the run's end.
    fn function_exit(&mut self) {
        let ctx = self.ctx_into(RCX);
        let entry_r10 = self.layout.frames + ENTRY_R10;
        self.asm
            .rm(Enc::of(&[0x3b]).wide(), MAP[10], ctx, entry_r10);
        let nested = self.asm.jcc32(CC_NE);
        self.end_run();
        self.asm.here(nested);
        self.asm.byte(0xc3);
    }

    /// After a legacy packet load in a subprogram: a load outside the
    /// packet (status [`crate::ctx::STATUS_EXIT`]) returns 0 from the
    /// function, as the kernel's `gen_ld_abs` exits it.
    fn return_zero_if_outside(&mut self) {
        let status = self.layout.status;
        let ctx = self.ctx_into(RDX);
        self.asm.rm(Enc::of(&[0x83]).wide(), 7, ctx, status);
        self.asm.byte(crate::ctx::STATUS_EXIT as u8);
        let inside = self.asm.jcc32(CC_NE);
        self.asm.rm(Enc::of(&[0xc7]).wide(), 0, ctx, status);
        self.asm.imm32(crate::ctx::STATUS_OK as i32);
        self.asm.rr(false, &[0x31], MAP[0], MAP[0]);
        self.function_exit();
        self.asm.here(inside);
    }

    /// After a call-out at `pc`: a non-zero status (a fault, a helper that
    /// ended the program) leaves with it and the call's value (checked
    /// code: and the budget, less what the rest of the block would have
    /// charged); else r0 is the value.
    fn leave_on_status(&mut self) {
        let status = self.layout.status;
        let ctx = self.ctx_into(RDX);
        self.asm.rm(Enc::of(&[0x83]).wide(), 7, ctx, status);
        self.asm.byte(0);
        let ok = self.asm.jcc32(CC_E);
        if self.checks.is_some() {
            self.budget_here(RCX);
            let budget = self.layout.budget;
            self.asm.rm(Enc::of(&[0x89]).wide(), RCX, ctx, budget);
        }
        self.asm.rm(Enc::of(&[0x8b]).wide(), RDX, ctx, status);
        self.ret();
        self.asm.here(ok);
        self.asm.mov_rr(true, MAP[0], RAX);
    }

    /// Verified code: `bpf_map_lookup_elem` on an array map whose values
    /// start at `base`, `stride` bytes apart, `entries` of them: the
    /// value's address computed inline (the key, a u32 the verifier
    /// proved readable, at r2), 0 past the last index; r1..r5 kept.
    fn inline_array(&mut self, base: u64, stride: i32, entries: u32) {
        let a = &mut self.asm;
        a.rm(Enc::of(&[0x8b]), RAX, MAP[2], 0);
        a.rr(false, &[0x31], MAP[0], MAP[0]);
        // `cmp eax, entries`, unsigned: an index past the last has no
        // value.
        a.rr(false, &[0x81], 7, RAX);
        a.imm32(entries as i32);
        let past = a.jcc32(CC_AE);
        // r0 = key * stride + base (the key zero-extended).
        a.rr(true, &[0x69], RAX, RAX);
        a.imm32(stride);
        a.mov_ri64(RCX, base);
        a.rr(true, &[0x01], RCX, RAX);
        a.mov_rr(true, MAP[0], RAX);
        a.here(past);
    }

    /// Restores the saved registers and returns.
    fn ret(&mut self) {
        if self.frames {
            // Out of every frame below the first: the stack pointer of the
            // entry, after the saved registers.
            let ctx = self.ctx_into(RCX);
            self.asm
                .rm(Enc::of(&[0x8b]).wide(), RSP, ctx, self.layout.frames);
        } else if self.checks.is_some() {
            self.asm.alu_ri(true, 0, RSP, FRAME);
        }
        for r in SAVED.iter().rev() {
            self.asm.pop(*r);
        }
        self.asm.byte(0xc3);
    }

    /// The budget at the current instruction, were the run to leave here:
    /// the block's instructions after it were charged but do not run.
    fn budget_here(&mut self, into: u8) {
        let refund = self.blk_len.saturating_sub(self.blk_done);
        self.asm
            .rm(Enc::of(&[0x8d]).wide(), into, R15, refund as i32);
    }

    /// Charges the block at leader `pc`; at a budget point, first stops
    /// for the interpreter if the budget may run out before the next one.
    fn charge(&mut self, pc: usize, len: u64) {
        self.blk_len = len;
        self.blk_done = 0;
        if self.checks.as_ref().is_some_and(|c| c.points.is_none()) {
            // Every block tests the budget: short of it, a `Budget` fault
            // (the budget before as its value, none left).
            let n = i32::try_from(self.blk_len).unwrap_or(i32::MAX);
            self.asm.alu_ri(true, 7, R15, n);
            let enough = self.asm.jcc32(CC_AE);
            self.asm.mov_rr(true, RAX, R15);
            self.asm.rr(false, &[0x31], R15, R15);
            self.fault_record(pc, crate::ctx::FaultCode::Budget, 0);
            self.asm.here(enough);
        }
        let point = self
            .checks
            .as_ref()
            .and_then(|c| c.points.as_ref()?.get(&pc).copied());
        if let Some((most, live)) = point {
            let most = i32::try_from(most).unwrap_or(i32::MAX);
            self.asm.alu_ri(true, 7, R15, most);
            let enough = self.asm.jcc32(CC_AE);
            // Stop: the live registers and the budget into the context,
            // (pc, STATUS_RESUME) back.
            self.asm
                .rm(Enc::of(&[0x8b]).wide(), RDX, RSP, self.f(F_CTX));
            for i in (0..11).filter(|i| live & 1 << i != 0) {
                self.asm.rm(
                    Enc::of(&[0x89]).wide(),
                    MAP[i],
                    RDX,
                    self.layout.regs + 8 * i as i32,
                );
            }
            self.asm
                .rm(Enc::of(&[0x89]).wide(), R15, RDX, self.layout.budget);
            self.asm
                .mov_ri(false, RDX, crate::ctx::STATUS_RESUME as i32);
            self.asm.mov_ri(false, RAX, pc as i32);
            self.ret();
            self.asm.here(enough);
        }
        let n = i32::try_from(self.blk_len).unwrap_or(i32::MAX);
        self.asm.alu_ri(true, 5, R15, n);
    }

    /// Records a fault (`code`, the value in rax, `len`) in the context
    /// and returns its status, the budget as the interpreter leaves it.
    fn fault_record(&mut self, pc: usize, code: crate::ctx::FaultCode, len: u64) {
        let (rec, l) = (self.layout.record, self.layout);
        let ctx = self.ctx_into(RDX);
        self.asm.rm(Enc::of(&[0xc7]).wide(), 0, ctx, rec);
        self.asm.imm32(pc as i32);
        self.asm.rm(Enc::of(&[0xc7]).wide(), 0, ctx, rec + 8);
        self.asm.imm32(code as i32);
        self.asm.rm(Enc::of(&[0x89]).wide(), RAX, ctx, rec + 16);
        self.asm.mov_ri64(RCX, len);
        self.asm.rm(Enc::of(&[0x89]).wide(), RCX, ctx, rec + 24);
        self.asm.rm(Enc::of(&[0x89]).wide(), MAP[10], ctx, rec + 32);
        let status = crate::ctx::STATUS_FAULT_RECORD as i32;
        self.asm.rm(Enc::of(&[0xc7]).wide(), 0, ctx, l.status);
        self.asm.imm32(status);
        if self.checks.is_some() {
            if matches!(code, crate::ctx::FaultCode::Budget) {
                // (A budget fault has spent the budget.)
                self.asm.mov_rr(true, RCX, R15);
            } else {
                self.budget_here(RCX);
            }
            self.asm.rm(Enc::of(&[0x89]).wide(), RCX, ctx, l.budget);
        }
        self.asm.mov_ri(false, RDX, status);
        self.asm.rr(false, &[0x31], RAX, RAX);
        self.ret();
    }

    /// Checks the memory access of `insn` (if it is one): the region the
    /// last slow check found, the stack, then the trampoline to the full
    /// check (which moves the region cache, or refuses: a fault). Atomics
    /// must be aligned too.
    fn check_access(&mut self, pc: usize, insn: &Instruction) {
        let (base, off, len, write) = match *insn {
            Instruction::Load { size, src, off, .. }
            | Instruction::LoadSx { size, src, off, .. } => (src, off, size_len(size), false),
            Instruction::Store { size, dst, off, .. } => (dst, off, size_len(size), true),
            Instruction::Atomic { size, dst, off, .. } => (dst, off, size_len(size), true),
            _ => return,
        };
        let (b, o) = (host(base), i32::from(off));
        let ok_jumps = {
            let mut oks = Vec::new();
            let stack_first = base.num() == 10;
            // (The address stays in rax: the tests work in rcx and rdx.)
            self.asm.rm(Enc::of(&[0x8d]).wide(), RAX, b, o);
            for stack in [stack_first, !stack_first] {
                self.asm.mov_rr(true, RCX, RAX);
                if stack {
                    // addr - lo <= span - len
                    self.asm
                        .rm(Enc::of(&[0x2b]).wide(), RCX, RSP, self.f(F_STACK_LO));
                    self.asm
                        .rm(Enc::of(&[0x8b]).wide(), RDX, RSP, self.f(F_STACK_SPAN));
                    self.asm.alu_ri(true, 5, RDX, len as i32);
                    self.asm.rr(true, &[0x39], RDX, RCX);
                    oks.push(self.asm.jcc32(CC_BE));
                } else {
                    // addr - lo < limit + (8 - len)
                    let at = if write { 16 } else { 0 };
                    self.asm
                        .rm(Enc::of(&[0x2b]).wide(), RCX, RSP, self.f(F_SEED + at));
                    self.asm
                        .rm(Enc::of(&[0x8b]).wide(), RDX, RSP, self.f(F_SEED + at + 8));
                    if len < 8 {
                        self.asm.alu_ri(true, 0, RDX, 8 - len as i32);
                    }
                    self.asm.rr(true, &[0x39], RDX, RCX);
                    oks.push(self.asm.jcc32(CC_B));
                }
            }
            oks
        };
        // The full check, through the trampoline (which clobbers no
        // register; r2, in rdi, makes room for the context).
        let (l, tramp) = (
            self.layout,
            self.checks.as_ref().map_or(0, |c| c.trampoline),
        );
        self.asm
            .rm(Enc::of(&[0x8b]).wide(), RDX, RSP, self.f(F_CTX));
        self.asm.rm(Enc::of(&[0x89]).wide(), MAP[10], RDX, l.fp);
        self.asm.rm(Enc::of(&[0xc7]).wide(), 0, RDX, l.record);
        self.asm.imm32(pc as i32);
        self.asm
            .rm(Enc::of(&[0x89]).wide(), RAX, RDX, l.record + 16);
        self.asm.mov_ri64(RCX, len | u64::from(write) << 32);
        self.asm
            .rm(Enc::of(&[0x89]).wide(), RCX, RDX, l.record + 24);
        self.asm.rm(Enc::of(&[0x89]).wide(), RDI, RSP, self.f(F_R2));
        self.asm.mov_rr(true, RDI, RDX);
        self.asm.mov_ri64(RAX, tramp);
        self.asm.bytes(&[0xff, 0xd0]); // call rax
        self.asm.rm(Enc::of(&[0x8b]).wide(), RDI, RSP, self.f(F_R2));
        self.asm
            .rm(Enc::of(&[0x8b]).wide(), RDX, RSP, self.f(F_CTX));
        self.asm.rm(Enc::of(&[0x83]).wide(), 7, RDX, l.status);
        self.asm.byte(0);
        let allowed = self.asm.jcc32(CC_E);
        // Refused: the check left the fault (or its record) and the
        // status; the budget as the interpreter leaves it.
        self.budget_here(RCX);
        self.asm.rm(Enc::of(&[0x89]).wide(), RCX, RDX, l.budget);
        self.asm.rm(Enc::of(&[0x8b]).wide(), RDX, RDX, l.status);
        self.asm.rr(false, &[0x31], RAX, RAX);
        self.ret();
        self.asm.here(allowed);
        // Allowed: the region cache moved in the context; the frame's
        // copy follows.
        for i in 0..4 {
            self.asm
                .rm(Enc::of(&[0x8b]).wide(), RCX, RDX, l.seed + 8 * i);
            self.asm
                .rm(Enc::of(&[0x89]).wide(), RCX, RSP, self.f(F_SEED + 8 * i));
        }
        for at in ok_jumps {
            self.asm.here(at);
        }
        if matches!(insn, Instruction::Atomic { .. }) {
            self.asm.rm(Enc::of(&[0x8d]).wide(), RAX, b, o);
            self.asm.rr(false, &[0xf7], 0, RAX);
            self.asm.imm32((len - 1) as i32);
            let aligned = self.asm.jcc32(CC_E);
            self.fault_record(pc, crate::ctx::FaultCode::Misaligned, len);
            self.asm.here(aligned);
        }
    }
}

fn size_len(size: MemSize) -> u64 {
    match size {
        MemSize::B => 1,
        MemSize::H => 2,
        MemSize::W => 4,
        MemSize::DW => 8,
    }
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
            let done = by_zero(asm, w, rem, d, s);
            asm.mov_rr(w, RAX, d);
            asm.rr(false, &[0x31], RDX, RDX);
            asm.rr(w, &[0xf7], 6, s);
            asm.mov_rr(w, d, if rem { RDX } else { RAX });
            asm.here(done);
        }
        AluOp::SDiv | AluOp::SMod => {
            let rem = op == AluOp::SMod;
            let s = src_reg(asm);
            let done = by_zero(asm, w, rem, d, s);
            // By -1: the negation (INT_MIN stays INT_MIN), remainder 0;
            // idiv would trap on INT_MIN / -1.
            asm.alu_ri(w, 7, s, -1);
            let divide = asm.jcc32(CC_NE);
            if rem {
                asm.rr(false, &[0x31], d, d);
            } else {
                asm.rr(w, &[0xf7], 3, d);
            }
            let done2 = asm.jmp32();
            asm.here(divide);
            asm.mov_rr(w, RAX, d);
            if w {
                asm.bytes(&[0x48, 0x99]);
            } else {
                asm.byte(0x99);
            }
            asm.rr(w, &[0xf7], 7, s);
            asm.mov_rr(w, d, if rem { RDX } else { RAX });
            asm.here(done);
            asm.here(done2);
        }
    }
}

/// Division or modulo of `d` by zero (`s` zero): 0 for a division, the
/// dividend (32 bits of it for a 32-bit one) for a modulo. Emits the test
/// and that case; the division follows. Returns the jump to point past
/// the division.
fn by_zero(asm: &mut Asm, w: bool, rem: bool, d: u8, s: u8) -> usize {
    asm.rr(w, &[0x85], s, s);
    let nonzero = asm.jcc32(CC_NE);
    if rem {
        if !w {
            asm.mov_rr(false, d, d);
        }
    } else {
        asm.rr(false, &[0x31], d, d);
    }
    let done = asm.jmp32();
    asm.here(nonzero);
    done
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
            asm.rex(false, 0, d, false);
            asm.bytes(&[0x0f, 0xc8 + (d & 7)]);
        }
        (true, _) => {
            asm.rex(true, 0, d, false);
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
            let back = asm.jcc32(CC_NE);
            asm.point(back, again);
            asm.mov_rr(w, s, RAX);
        }
    }
}
