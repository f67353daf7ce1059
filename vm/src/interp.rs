//! The checked interpreter.
//!
//! A [`Program`] is lowered once into a [`PreparedProgram`]: a flat array of
//! pre-decoded operations (immediates sign-extended, jump targets absolute,
//! helper ids bound to their implementations, `lddw` pseudo values resolved).
//! A [`Vm`] runs it with *checked mode* semantics:
//!
//! - every load, store and atomic is checked against the memory regions the
//!   embedder provided, the regions helpers granted, and the live stack
//!   frames; every pointer argument of a helper is checked against its
//!   prototype;
//! - an instruction budget (1,000,000 by default) stops unverified loops;
//! - bpf-to-bpf calls are limited to 8 frames of 512 bytes, tail calls to 33;
//! - the stack is zeroed before each run.
//!
//! Any violation ends the run with a [`Fault`] naming the program, the pc and
//! the instruction. Nothing in here panics or touches memory outside those
//! regions, whatever the bytecode.
#![warn(clippy::arithmetic_side_effects)]

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::helpers::{ArgKind, ArgSize, Helper, HelperContext, HelperError, Helpers};
use crate::insn::Insn;
use crate::isa::{
    AluOp, AtomicOp, CallTarget, EndianOp, Instruction, JmpCond, Lddw, MemSize, PacketMode, Source,
    Width,
};
use crate::memory::{Access, AccessError, MemoryMap, Region, RegionKind};
use crate::program::Program;

/// Bytes of stack per frame (`MAX_BPF_STACK`).
pub const STACK_SIZE: usize = 512;
/// Maximum call depth, the main program included (`MAX_CALL_FRAMES`).
pub const MAX_CALL_FRAMES: usize = 8;
/// Maximum number of tail calls per run (`MAX_TAIL_CALL_CNT`).
pub const MAX_TAIL_CALLS: u32 = 33;
/// Default instruction budget per run.
pub const DEFAULT_BUDGET: u64 = 1_000_000;
/// The kernel's helper id of `bpf_tail_call`.
pub const BPF_FUNC_TAIL_CALL: i32 = 12;

/// Tag in the upper 32 bits of a subprogram "address" loaded by
/// `lddw src=4` (`BPF_PSEUDO_FUNC`); the lower 32 bits are its pc. `callx`
/// on such a value is a bpf-to-bpf call; on a small integer it calls the
/// helper with that id (the conformance suite's convention).
pub const FUNC_ADDR_TAG: u64 = 0xc0de_f00d_0000_0000;
const FUNC_ADDR_MASK: u64 = 0xffff_ffff_0000_0000;

const TOTAL_STACK: usize = STACK_SIZE * MAX_CALL_FRAMES;

/// Run-time limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Instructions allowed per run; `None` for no limit (only for programs
    /// known to terminate).
    pub budget: Option<u64>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            budget: Some(DEFAULT_BUDGET),
        }
    }
}

/// Resolves the map flavours of `lddw` (`src` 1, 2, 5, 6) to addresses or
/// handles. The objects layer implements it; without one, programs that load
/// maps are refused.
pub trait MapResolver: Send + Sync {
    /// The 64-bit value `lddw` at `pc` loads.
    fn resolve(&self, pc: usize, value: Lddw) -> Result<u64, String>;
}

/// A program array (`BPF_MAP_TYPE_PROG_ARRAY`) as `bpf_tail_call` sees it.
pub trait ProgramArray: Send + Sync {
    /// The program at `index` of the program array `map` (the value of `r2`
    /// at the call), if the slot is set.
    fn get(&self, map: u64, index: u32) -> Option<Arc<PreparedProgram>>;
}

/// Why a program cannot be prepared for the interpreter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// A `call` names a helper that is not registered.
    #[error("program `{program}`: unknown helper id {id} ({name}) called at pc {pc}")]
    UnknownHelper {
        /// Program name.
        program: String,
        /// pc of the call.
        pc: usize,
        /// Helper id.
        id: i32,
        /// The kernel's name for the id, if any.
        name: String,
    },
    /// A kfunc call (`call src=2`).
    #[error("program `{program}`: kfunc call (btf_id {btf_id}) at pc {pc} is not supported in user space")]
    Kfunc {
        /// Program name.
        program: String,
        /// pc of the call.
        pc: usize,
        /// BTF id of the kfunc.
        btf_id: i32,
    },
    /// An `lddw` whose value cannot be provided.
    #[error("program `{program}`: lddw at pc {pc} ({what}): {message}")]
    Lddw {
        /// Program name.
        program: String,
        /// pc of the lddw.
        pc: usize,
        /// Which flavour.
        what: &'static str,
        /// Why.
        message: String,
    },
}

/// What went wrong at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// No region covers the access.
    OutOfBounds {
        /// Read or write.
        access: Access,
    },
    /// A store or atomic into a read-only region.
    ReadOnly {
        /// The region.
        region: RegionKind,
    },
    /// An atomic operation on an address not aligned to its size.
    Misaligned,
    /// The instruction budget ran out.
    BudgetExhausted {
        /// The budget.
        limit: u64,
    },
    /// A bpf-to-bpf call beyond [`MAX_CALL_FRAMES`].
    CallDepthExceeded {
        /// The limit.
        limit: usize,
    },
    /// A helper pointer argument outside the program's memory.
    HelperArgument {
        /// Helper id.
        helper: i32,
        /// Argument index (1 for `r1`).
        arg: usize,
        /// How the helper uses it.
        access: Access,
    },
    /// A helper failed.
    Helper {
        /// Helper id.
        helper: i32,
        /// Helper name.
        name: String,
        /// The error.
        error: HelperError,
    },
    /// `callx` on a value that is neither a subprogram address nor a
    /// registered helper id.
    BadCallTarget {
        /// The register value.
        value: u64,
    },
    /// A legacy packet load without a packet.
    NoPacket,
    /// Execution reached a pc that holds no instruction.
    InvalidPc,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::OutOfBounds { access } => {
                write!(f, "invalid {access}: no memory region covers it")
            }
            FaultKind::ReadOnly { region } => write!(f, "write into read-only {region:?} memory"),
            FaultKind::Misaligned => f.write_str("misaligned atomic access"),
            FaultKind::BudgetExhausted { limit } => {
                write!(f, "instruction budget of {limit} exhausted")
            }
            FaultKind::CallDepthExceeded { limit } => {
                write!(f, "the call stack is too deep (more than {limit} frames)")
            }
            FaultKind::HelperArgument {
                helper,
                arg,
                access,
            } => write!(
                f,
                "argument r{arg} of helper {helper} points outside the program's memory ({access})"
            ),
            FaultKind::Helper {
                helper,
                name,
                error,
            } => write!(f, "helper {name}#{helper} failed: {error}"),
            FaultKind::BadCallTarget { value } => {
                write!(
                    f,
                    "callx target {value:#x} is neither a subprogram nor a helper"
                )
            }
            FaultKind::NoPacket => f.write_str("legacy packet load without packet data"),
            FaultKind::InvalidPc => f.write_str("execution reached a pc without an instruction"),
        }
    }
}

/// A run-time error: the program, the pc, the instruction, the address and
/// length involved (0 when not a memory access) and what went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Program name.
    pub program: Arc<str>,
    /// pc of the faulting instruction.
    pub pc: usize,
    /// The faulting slot.
    pub insn: Insn,
    /// Address involved.
    pub addr: u64,
    /// Length involved.
    pub len: u64,
    /// What went wrong.
    pub kind: FaultKind,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "program `{}`: fault at pc {} (", self.program, self.pc)?;
        match crate::isa::decode(&[self.insn, Insn::default()], 0) {
            Ok(i) => write!(f, "{}", crate::disasm::format_instruction(&i))?,
            Err(_) => write!(f, "{}", self.insn)?,
        }
        write!(f, "): {}", self.kind)?;
        if matches!(
            self.kind,
            FaultKind::OutOfBounds { .. }
                | FaultKind::ReadOnly { .. }
                | FaultKind::Misaligned
                | FaultKind::HelperArgument { .. }
        ) {
            write!(f, " [addr {:#x}, {} bytes]", self.addr, self.len)?;
        }
        Ok(())
    }
}

impl std::error::Error for Fault {}

/// Operation kinds of the lowered program. Names: operation, width,
/// operand (`I` immediate, `R` register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum K {
    Add64I,
    Add64R,
    Sub64I,
    Sub64R,
    Mul64I,
    Mul64R,
    Div64I,
    Div64R,
    SDiv64I,
    SDiv64R,
    Or64I,
    Or64R,
    And64I,
    And64R,
    Lsh64I,
    Lsh64R,
    Rsh64I,
    Rsh64R,
    Mod64I,
    Mod64R,
    SMod64I,
    SMod64R,
    Xor64I,
    Xor64R,
    Mov64I,
    Mov64R,
    Arsh64I,
    Arsh64R,
    Add32I,
    Add32R,
    Sub32I,
    Sub32R,
    Mul32I,
    Mul32R,
    Div32I,
    Div32R,
    SDiv32I,
    SDiv32R,
    Or32I,
    Or32R,
    And32I,
    And32R,
    Lsh32I,
    Lsh32R,
    Rsh32I,
    Rsh32R,
    Mod32I,
    Mod32R,
    SMod32I,
    SMod32R,
    Xor32I,
    Xor32R,
    Mov32I,
    Mov32R,
    Arsh32I,
    Arsh32R,
    MovSx64B,
    MovSx64H,
    MovSx64W,
    MovSx32B,
    MovSx32H,
    Neg64,
    Neg32,
    Le16,
    Le32,
    Le64,
    Be16,
    Be32,
    Be64,
    Swap16,
    Swap32,
    Swap64,
    LdxB,
    LdxH,
    LdxW,
    LdxDW,
    LdxSB,
    LdxSH,
    LdxSW,
    StB,
    StH,
    StW,
    StDW,
    StxB,
    StxH,
    StxW,
    StxDW,
    /// Atomic: `src` register, `aux` offset, `imm` = AtomicOp index | fetch << 8.
    Atomic32,
    Atomic64,
    LoadImm,
    LdAbsB,
    LdAbsH,
    LdAbsW,
    LdIndB,
    LdIndH,
    LdIndW,
    Ja,
    JeqI,
    JeqR,
    JgtI,
    JgtR,
    JgeI,
    JgeR,
    JsetI,
    JsetR,
    JneI,
    JneR,
    JsgtI,
    JsgtR,
    JsgeI,
    JsgeR,
    JltI,
    JltR,
    JleI,
    JleR,
    JsltI,
    JsltR,
    JsleI,
    JsleR,
    Jeq32I,
    Jeq32R,
    Jgt32I,
    Jgt32R,
    Jge32I,
    Jge32R,
    Jset32I,
    Jset32R,
    Jne32I,
    Jne32R,
    Jsgt32I,
    Jsgt32R,
    Jsge32I,
    Jsge32R,
    Jlt32I,
    Jlt32R,
    Jle32I,
    Jle32R,
    Jslt32I,
    Jslt32R,
    Jsle32I,
    Jsle32R,
    /// `imm` = index into the helper table.
    Call,
    CallLocal,
    CallX,
    TailCall,
    Exit,
    /// The second slot of an lddw: never executed.
    Hole,
}

/// One lowered operation: 16 bytes.
#[derive(Clone, Copy, Debug)]
struct Op {
    kind: K,
    dst: u8,
    src: u8,
    /// Memory offset (sign-extended) or absolute jump/call target.
    aux: i32,
    /// Immediate, sign-extended to 64 bits (full value for lddw).
    imm: u64,
}

/// A program lowered for the interpreter, with its helpers bound. Immutable
/// and shareable between threads and VMs.
pub struct PreparedProgram {
    name: Arc<str>,
    ops: Box<[Op]>,
    insns: Box<[Insn]>,
    helper_table: Box<[Helper]>,
    helpers: Helpers,
    config: Config,
}

impl fmt::Debug for PreparedProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedProgram")
            .field("name", &self.name)
            .field("insns", &self.insns.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn alu_kind(width: Width, aop: AluOp, reg: bool) -> K {
    use AluOp::*;
    let base = match (width, aop) {
        (Width::W64, Add) => K::Add64I,
        (Width::W64, Sub) => K::Sub64I,
        (Width::W64, Mul) => K::Mul64I,
        (Width::W64, Div) => K::Div64I,
        (Width::W64, SDiv) => K::SDiv64I,
        (Width::W64, Or) => K::Or64I,
        (Width::W64, And) => K::And64I,
        (Width::W64, Lsh) => K::Lsh64I,
        (Width::W64, Rsh) => K::Rsh64I,
        (Width::W64, Mod) => K::Mod64I,
        (Width::W64, SMod) => K::SMod64I,
        (Width::W64, Xor) => K::Xor64I,
        (Width::W64, Mov) => K::Mov64I,
        (Width::W64, Arsh) => K::Arsh64I,
        (Width::W32, Add) => K::Add32I,
        (Width::W32, Sub) => K::Sub32I,
        (Width::W32, Mul) => K::Mul32I,
        (Width::W32, Div) => K::Div32I,
        (Width::W32, SDiv) => K::SDiv32I,
        (Width::W32, Or) => K::Or32I,
        (Width::W32, And) => K::And32I,
        (Width::W32, Lsh) => K::Lsh32I,
        (Width::W32, Rsh) => K::Rsh32I,
        (Width::W32, Mod) => K::Mod32I,
        (Width::W32, SMod) => K::SMod32I,
        (Width::W32, Xor) => K::Xor32I,
        (Width::W32, Mov) => K::Mov32I,
        (Width::W32, Arsh) => K::Arsh32I,
    };
    if reg {
        next_kind(base)
    } else {
        base
    }
}

fn jmp_kind(width: Width, cond: JmpCond, reg: bool) -> K {
    use JmpCond::*;
    let base = match (width, cond) {
        (Width::W64, Eq) => K::JeqI,
        (Width::W64, Gt) => K::JgtI,
        (Width::W64, Ge) => K::JgeI,
        (Width::W64, Set) => K::JsetI,
        (Width::W64, Ne) => K::JneI,
        (Width::W64, SGt) => K::JsgtI,
        (Width::W64, SGe) => K::JsgeI,
        (Width::W64, Lt) => K::JltI,
        (Width::W64, Le) => K::JleI,
        (Width::W64, SLt) => K::JsltI,
        (Width::W64, SLe) => K::JsleI,
        (Width::W32, Eq) => K::Jeq32I,
        (Width::W32, Gt) => K::Jgt32I,
        (Width::W32, Ge) => K::Jge32I,
        (Width::W32, Set) => K::Jset32I,
        (Width::W32, Ne) => K::Jne32I,
        (Width::W32, SGt) => K::Jsgt32I,
        (Width::W32, SGe) => K::Jsge32I,
        (Width::W32, Lt) => K::Jlt32I,
        (Width::W32, Le) => K::Jle32I,
        (Width::W32, SLt) => K::Jslt32I,
        (Width::W32, SLe) => K::Jsle32I,
    };
    if reg {
        next_kind(base)
    } else {
        base
    }
}

/// The register form that follows an immediate form in the enum.
fn next_kind(k: K) -> K {
    use K::*;
    match k {
        Add64I => Add64R,
        Sub64I => Sub64R,
        Mul64I => Mul64R,
        Div64I => Div64R,
        SDiv64I => SDiv64R,
        Or64I => Or64R,
        And64I => And64R,
        Lsh64I => Lsh64R,
        Rsh64I => Rsh64R,
        Mod64I => Mod64R,
        SMod64I => SMod64R,
        Xor64I => Xor64R,
        Mov64I => Mov64R,
        Arsh64I => Arsh64R,
        Add32I => Add32R,
        Sub32I => Sub32R,
        Mul32I => Mul32R,
        Div32I => Div32R,
        SDiv32I => SDiv32R,
        Or32I => Or32R,
        And32I => And32R,
        Lsh32I => Lsh32R,
        Rsh32I => Rsh32R,
        Mod32I => Mod32R,
        SMod32I => SMod32R,
        Xor32I => Xor32R,
        Mov32I => Mov32R,
        Arsh32I => Arsh32R,
        JeqI => JeqR,
        JgtI => JgtR,
        JgeI => JgeR,
        JsetI => JsetR,
        JneI => JneR,
        JsgtI => JsgtR,
        JsgeI => JsgeR,
        JltI => JltR,
        JleI => JleR,
        JsltI => JsltR,
        JsleI => JsleR,
        Jeq32I => Jeq32R,
        Jgt32I => Jgt32R,
        Jge32I => Jge32R,
        Jset32I => Jset32R,
        Jne32I => Jne32R,
        Jsgt32I => Jsgt32R,
        Jsge32I => Jsge32R,
        Jlt32I => Jlt32R,
        Jle32I => Jle32R,
        Jslt32I => Jslt32R,
        Jsle32I => Jsle32R,
        other => other,
    }
}

fn atomic_code(aop: AtomicOp, fetch: bool) -> u64 {
    let idx = match aop {
        AtomicOp::Add => 0u64,
        AtomicOp::Or => 1,
        AtomicOp::And => 2,
        AtomicOp::Xor => 3,
        AtomicOp::Xchg => 4,
        AtomicOp::CmpXchg => 5,
    };
    idx | (u64::from(fetch) << 8)
}

fn sext(imm: i32) -> u64 {
    i64::from(imm) as u64
}

/// Absolute target of a validated relative jump (validated by
/// [`Program::new`], so it fits).
fn target(pc: usize, rel: i64) -> i32 {
    let t = (pc as i64).saturating_add(1).saturating_add(rel);
    i32::try_from(t).unwrap_or(i32::MAX)
}

impl PreparedProgram {
    /// Lowers `program` with `helpers`. Fails on unknown helpers, kfuncs and
    /// map loads (see [`PreparedProgram::with_maps`]).
    pub fn new(
        program: &Program,
        helpers: &Helpers,
        config: Config,
    ) -> Result<PreparedProgram, PrepareError> {
        PreparedProgram::build(program, helpers, config, None)
    }

    /// Like [`PreparedProgram::new`], resolving map loads through `maps`.
    pub fn with_maps(
        program: &Program,
        helpers: &Helpers,
        config: Config,
        maps: &dyn MapResolver,
    ) -> Result<PreparedProgram, PrepareError> {
        PreparedProgram::build(program, helpers, config, Some(maps))
    }

    fn build(
        program: &Program,
        helpers: &Helpers,
        config: Config,
        maps: Option<&dyn MapResolver>,
    ) -> Result<PreparedProgram, PrepareError> {
        let name = program.name().to_string();
        let mut helper_table: Vec<Helper> = Vec::new();
        let mut ops = Vec::with_capacity(program.len());
        for pc in 0..program.len() {
            let Some(i) = program.instruction(pc) else {
                ops.push(Op {
                    kind: K::Hole,
                    dst: 0,
                    src: 0,
                    aux: 0,
                    imm: 0,
                });
                continue;
            };
            let mut op = Op {
                kind: K::Exit,
                dst: 0,
                src: 0,
                aux: 0,
                imm: 0,
            };
            match i {
                Instruction::Alu {
                    width,
                    op: aop,
                    dst,
                    src,
                } => {
                    op.dst = dst.num();
                    match src {
                        Source::Reg(s) => {
                            op.kind = alu_kind(width, aop, true);
                            op.src = s.num();
                        }
                        Source::Imm(imm) => {
                            op.kind = alu_kind(width, aop, false);
                            op.imm = sext(imm);
                        }
                    }
                }
                Instruction::MovSx {
                    width,
                    dst,
                    src,
                    bits,
                } => {
                    op.kind = match (width, bits) {
                        (Width::W64, 8) => K::MovSx64B,
                        (Width::W64, 16) => K::MovSx64H,
                        (Width::W64, _) => K::MovSx64W,
                        (Width::W32, 8) => K::MovSx32B,
                        (Width::W32, _) => K::MovSx32H,
                    };
                    op.dst = dst.num();
                    op.src = src.num();
                }
                Instruction::Neg { width, dst } => {
                    op.kind = match width {
                        Width::W64 => K::Neg64,
                        Width::W32 => K::Neg32,
                    };
                    op.dst = dst.num();
                }
                Instruction::Endian { op: e, dst, bits } => {
                    op.kind = match (e, bits) {
                        (EndianOp::ToLe, 16) => K::Le16,
                        (EndianOp::ToLe, 32) => K::Le32,
                        (EndianOp::ToLe, _) => K::Le64,
                        (EndianOp::ToBe, 16) => K::Be16,
                        (EndianOp::ToBe, 32) => K::Be32,
                        (EndianOp::ToBe, _) => K::Be64,
                        (EndianOp::Swap, 16) => K::Swap16,
                        (EndianOp::Swap, 32) => K::Swap32,
                        (EndianOp::Swap, _) => K::Swap64,
                    };
                    op.dst = dst.num();
                }
                Instruction::Load {
                    size,
                    dst,
                    src,
                    off,
                } => {
                    op.kind = match size {
                        MemSize::B => K::LdxB,
                        MemSize::H => K::LdxH,
                        MemSize::W => K::LdxW,
                        MemSize::DW => K::LdxDW,
                    };
                    op.dst = dst.num();
                    op.src = src.num();
                    op.aux = i32::from(off);
                }
                Instruction::LoadSx {
                    size,
                    dst,
                    src,
                    off,
                } => {
                    op.kind = match size {
                        MemSize::B => K::LdxSB,
                        MemSize::H => K::LdxSH,
                        _ => K::LdxSW,
                    };
                    op.dst = dst.num();
                    op.src = src.num();
                    op.aux = i32::from(off);
                }
                Instruction::Store {
                    size,
                    dst,
                    off,
                    src,
                } => {
                    op.dst = dst.num();
                    op.aux = i32::from(off);
                    match src {
                        Source::Imm(imm) => {
                            op.imm = sext(imm);
                            op.kind = match size {
                                MemSize::B => K::StB,
                                MemSize::H => K::StH,
                                MemSize::W => K::StW,
                                MemSize::DW => K::StDW,
                            };
                        }
                        Source::Reg(s) => {
                            op.src = s.num();
                            op.kind = match size {
                                MemSize::B => K::StxB,
                                MemSize::H => K::StxH,
                                MemSize::W => K::StxW,
                                MemSize::DW => K::StxDW,
                            };
                        }
                    }
                }
                Instruction::Atomic {
                    size,
                    op: aop,
                    fetch,
                    dst,
                    src,
                    off,
                } => {
                    op.kind = if size == MemSize::DW {
                        K::Atomic64
                    } else {
                        K::Atomic32
                    };
                    op.dst = dst.num();
                    op.src = src.num();
                    op.aux = i32::from(off);
                    op.imm = atomic_code(aop, fetch || aop.always_fetches());
                }
                Instruction::LoadImm64 { dst, value } => {
                    op.kind = K::LoadImm;
                    op.dst = dst.num();
                    let lddw_err = |what: &'static str, message: String| PrepareError::Lddw {
                        program: name.clone(),
                        pc,
                        what,
                        message,
                    };
                    op.imm = match value {
                        Lddw::Imm(v) => v,
                        Lddw::Func(rel) => FUNC_ADDR_TAG | target(pc, i64::from(rel)) as u32 as u64,
                        Lddw::BtfVar { btf_id, .. } => {
                            return Err(lddw_err(
                                "src=3, kernel variable",
                                format!(
                                    "kernel variable addresses (BTF id {btf_id}) do not exist in user space"
                                ),
                            ))
                        }
                        Lddw::MapFd(_)
                        | Lddw::MapValue { .. }
                        | Lddw::MapIdx(_)
                        | Lddw::MapIdxValue { .. } => {
                            let what = match value {
                                Lddw::MapFd(_) => "src=1, map fd",
                                Lddw::MapValue { .. } => "src=2, map value",
                                Lddw::MapIdx(_) => "src=5, map index",
                                _ => "src=6, map index value",
                            };
                            match maps {
                                Some(m) => m.resolve(pc, value).map_err(|e| lddw_err(what, e))?,
                                None => {
                                    return Err(lddw_err(
                                        what,
                                        "the program loads a map but none were provided (load it from an object file)"
                                            .to_string(),
                                    ))
                                }
                            }
                        }
                    };
                }
                Instruction::LoadPacket { size, mode, imm } => {
                    op.imm = sext(imm);
                    op.kind = match (mode, size) {
                        (PacketMode::Abs, MemSize::B) => K::LdAbsB,
                        (PacketMode::Abs, MemSize::H) => K::LdAbsH,
                        (PacketMode::Abs, _) => K::LdAbsW,
                        (PacketMode::Ind(_), MemSize::B) => K::LdIndB,
                        (PacketMode::Ind(_), MemSize::H) => K::LdIndH,
                        (PacketMode::Ind(_), _) => K::LdIndW,
                    };
                    if let PacketMode::Ind(r) = mode {
                        op.src = r.num();
                    }
                }
                Instruction::Ja { .. } | Instruction::JaLong { .. } => {
                    op.kind = K::Ja;
                    op.aux = target(pc, i.jump_offset().unwrap_or(0));
                }
                Instruction::Jump {
                    width,
                    cond,
                    dst,
                    src,
                    off,
                } => {
                    op.dst = dst.num();
                    op.aux = target(pc, i64::from(off));
                    match src {
                        Source::Reg(s) => {
                            op.kind = jmp_kind(width, cond, true);
                            op.src = s.num();
                        }
                        Source::Imm(imm) => {
                            op.kind = jmp_kind(width, cond, false);
                            op.imm = sext(imm);
                        }
                    }
                }
                Instruction::Call(CallTarget::Helper(id)) => match helpers.get(id) {
                    Some(h) => {
                        op.kind = K::Call;
                        let idx = match helper_table.iter().position(|x| x.id() == id) {
                            Some(idx) => idx,
                            None => {
                                helper_table.push(h.clone());
                                helper_table.len().saturating_sub(1)
                            }
                        };
                        op.imm = idx as u64;
                    }
                    None if id == BPF_FUNC_TAIL_CALL => op.kind = K::TailCall,
                    None => {
                        return Err(PrepareError::UnknownHelper {
                            program: name,
                            pc,
                            id,
                            name: crate::helper_names::helper_name(id)
                                .unwrap_or("not a kernel helper")
                                .to_string(),
                        })
                    }
                },
                Instruction::Call(CallTarget::Local(rel)) => {
                    op.kind = K::CallLocal;
                    op.aux = target(pc, i64::from(rel));
                }
                Instruction::Call(CallTarget::Kfunc { btf_id, .. }) => {
                    return Err(PrepareError::Kfunc {
                        program: name,
                        pc,
                        btf_id,
                    })
                }
                Instruction::CallX { reg } => {
                    op.kind = K::CallX;
                    op.dst = reg.num();
                }
                Instruction::Exit => op.kind = K::Exit,
            }
            ops.push(op);
        }
        Ok(PreparedProgram {
            name: Arc::from(program.name()),
            ops: ops.into_boxed_slice(),
            insns: program.insns().to_vec().into_boxed_slice(),
            helper_table: helper_table.into_boxed_slice(),
            helpers: helpers.clone(),
            config,
        })
    }

    /// The program's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The run-time limits.
    pub fn config(&self) -> Config {
        self.config
    }

    /// The raw slots.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }
}

#[derive(Clone, Copy, Default)]
struct Frame {
    ret_pc: usize,
    prog: usize,
    saved: [u64; 4],
    fp: u64,
}

struct State {
    regs: [u64; 16],
    frames: [Frame; MAX_CALL_FRAMES],
    depth: usize,
    max_depth: usize,
    budget: u64,
    tail_calls: u32,
    packet: Option<(u64, u64)>,
}

enum Stop {
    Exit(u64),
    /// Continue in program `prog` (of the run's program list) at `pc`.
    Switch {
        prog: usize,
        pc: usize,
    },
    TailCall(Arc<PreparedProgram>),
}

/// An interpreter instance: a prepared program plus the state of its runs
/// (stack, memory regions, program array). Not shared between threads; make
/// one per thread from the same `Arc<PreparedProgram>`.
pub struct Vm {
    prog: Arc<PreparedProgram>,
    stack: Box<[u64; TOTAL_STACK / 8]>,
    dirty_frames: usize,
    mem: MemoryMap,
    program_array: Option<Arc<dyn ProgramArray>>,
    last_insn_count: u64,
}

impl fmt::Debug for Vm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vm")
            .field("prog", &self.prog)
            .field("regions", &self.mem.regions())
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// Prepares `program` with `helpers` and the default [`Config`].
    pub fn new(program: &Program, helpers: Helpers) -> Result<Vm, PrepareError> {
        Vm::with_config(program, &helpers, Config::default())
    }

    /// Prepares `program` with `helpers` and `config`.
    pub fn with_config(
        program: &Program,
        helpers: &Helpers,
        config: Config,
    ) -> Result<Vm, PrepareError> {
        Ok(Vm::from_prepared(Arc::new(PreparedProgram::new(
            program, helpers, config,
        )?)))
    }

    /// A VM for an already prepared program.
    pub fn from_prepared(prog: Arc<PreparedProgram>) -> Vm {
        Vm {
            prog,
            stack: Box::new([0u64; TOTAL_STACK / 8]),
            dirty_frames: 0,
            mem: MemoryMap::new(),
            program_array: None,
            last_insn_count: 0,
        }
    }

    /// The prepared program.
    pub fn prepared(&self) -> &Arc<PreparedProgram> {
        &self.prog
    }

    /// Makes `region` accessible to every later run.
    ///
    /// # Safety
    /// The memory must stay valid (and writable, if `region.writable`) for
    /// as long as this VM may run, or until [`Vm::clear_regions`].
    pub unsafe fn add_region(&mut self, region: Region) {
        self.mem.add_persistent(region);
    }

    /// Removes every region added with [`Vm::add_region`].
    pub fn clear_regions(&mut self) {
        self.mem.clear_persistent();
    }

    /// Sets the program array `bpf_tail_call` (helper 12) looks programs up
    /// in.
    pub fn set_program_array(&mut self, array: Option<Arc<dyn ProgramArray>>) {
        self.program_array = array;
    }

    /// Instructions executed by the last run.
    pub fn last_insn_count(&self) -> u64 {
        self.last_insn_count
    }

    /// Runs the program with `r1` = `mem`, `r2` = its length (`r1` = 0 when
    /// empty), the convention of the conformance suite. `mem` is writable
    /// context memory and the packet for legacy packet loads.
    pub fn run(&mut self, mem: &mut [u8]) -> Result<u64, Fault> {
        if mem.is_empty() {
            return self.execute([0; 5], None);
        }
        let region = Region::from_mut_slice(mem, RegionKind::Context);
        self.mem.add_transient(region);
        self.execute(
            [region.start, region.len, 0, 0, 0],
            Some((region.start, region.len)),
        )
    }

    /// Runs the program with `r1..r5` = `args`. Pointers among them are only
    /// usable if they fall in regions added with [`Vm::add_region`].
    pub fn run_with_args(&mut self, args: [u64; 5]) -> Result<u64, Fault> {
        self.execute(args, None)
    }

    fn execute(&mut self, args: [u64; 5], packet: Option<(u64, u64)>) -> Result<u64, Fault> {
        // Zero the frames the previous run used: no data crosses runs.
        let dirty_words = self
            .dirty_frames
            .min(MAX_CALL_FRAMES)
            .saturating_mul(STACK_SIZE / 8);
        let total_words = self.stack.len();
        self.stack[total_words.saturating_sub(dirty_words)..].fill(0);
        let top = (self.stack.as_ptr() as u64).wrapping_add(TOTAL_STACK as u64);
        self.mem.stack_hi = top;
        self.mem.stack_lo = top.wrapping_sub(STACK_SIZE as u64);

        let start_budget = self.prog.config.budget.unwrap_or(u64::MAX);
        let mut st = State {
            regs: [0; 16],
            frames: [Frame::default(); MAX_CALL_FRAMES],
            depth: 0,
            max_depth: 0,
            budget: start_budget,
            tail_calls: 0,
            packet,
        };
        st.regs[1..6].copy_from_slice(&args);
        st.regs[10] = top;

        // Programs entered by tail calls; index 0 is `self.prog`.
        let mut extra: Vec<Arc<PreparedProgram>> = Vec::new();
        let mut cur = 0usize;
        let mut pc = 0usize;
        let result = loop {
            let prog: &PreparedProgram = match cur.checked_sub(1) {
                None => &self.prog,
                Some(i) => match extra.get(i) {
                    Some(p) => p,
                    None => &self.prog,
                },
            };
            match run_ops(
                prog,
                cur,
                pc,
                &mut st,
                &mut self.mem,
                self.program_array.as_deref(),
            ) {
                Ok(Stop::Exit(r0)) => break Ok(r0),
                Ok(Stop::Switch { prog, pc: next }) => {
                    cur = prog;
                    pc = next;
                }
                Ok(Stop::TailCall(next)) => {
                    extra.push(next);
                    cur = extra.len();
                    pc = 0;
                }
                Err(f) => break Err(f),
            }
        };
        self.dirty_frames = st.max_depth.saturating_add(1);
        self.last_insn_count = start_budget.wrapping_sub(st.budget);
        self.mem.end_run();
        result
    }
}

#[cold]
#[inline(never)]
fn fault(prog: &PreparedProgram, pc: usize, addr: u64, len: u64, kind: FaultKind) -> Fault {
    Fault {
        program: prog.name.clone(),
        pc,
        insn: prog.insns.get(pc).copied().unwrap_or_default(),
        addr,
        len,
        kind,
    }
}

#[cold]
#[inline(never)]
fn mem_fault(
    prog: &PreparedProgram,
    pc: usize,
    addr: u64,
    len: u64,
    access: Access,
    e: AccessError,
) -> Fault {
    let kind = match e {
        AccessError::Unmapped => FaultKind::OutOfBounds { access },
        AccessError::ReadOnly(region) => FaultKind::ReadOnly { region },
    };
    fault(prog, pc, addr, len, kind)
}

/// Checks the pointer arguments of a helper against its prototype.
fn check_helper_args(
    h: &Helper,
    regs: &[u64; 16],
    mem: &MemoryMap,
) -> Result<(), (usize, u64, u64, Access)> {
    for (i, kind) in h.proto().args.iter().enumerate() {
        let (size, nullable, access) = match *kind {
            ArgKind::Anything => continue,
            ArgKind::ReadMem { size, nullable } => (size, nullable, Access::Read),
            ArgKind::WriteMem { size, nullable } => (size, nullable, Access::Write),
        };
        let ptr = regs[(i.wrapping_add(1)) & 15];
        let len = match size {
            ArgSize::Fixed(n) => u64::from(n),
            ArgSize::Arg(j) => regs[(j.wrapping_add(1)) & 15],
        };
        if nullable && ptr == 0 && len == 0 {
            continue;
        }
        if mem.check(ptr, len, access).is_err() {
            return Err((i.wrapping_add(1), ptr, len, access));
        }
    }
    Ok(())
}

/// Calls helper `h`; `Ok(Some(r0))` means the helper ended the program.
fn call_helper(
    prog: &PreparedProgram,
    pc: usize,
    h: &Helper,
    regs: &mut [u64; 16],
    mem: &mut MemoryMap,
) -> Result<Option<u64>, Fault> {
    if let Err((arg, addr, len, access)) = check_helper_args(h, regs, mem) {
        return Err(fault(
            prog,
            pc,
            addr,
            len,
            FaultKind::HelperArgument {
                helper: h.id(),
                arg,
                access,
            },
        ));
    }
    let mut ctx = HelperContext::new(mem);
    let args = [regs[1], regs[2], regs[3], regs[4], regs[5]];
    match h.call(&mut ctx, args) {
        Ok(r0) => {
            regs[0] = r0;
            Ok(ctx.exit)
        }
        Err(error) => Err(fault(
            prog,
            pc,
            0,
            0,
            FaultKind::Helper {
                helper: h.id(),
                name: h.name().to_string(),
                error,
            },
        )),
    }
}

/// Runs `prog` from `pc` until the run ends, a tail call replaces the
/// program, or a return lands in another program.
#[inline(never)]
fn run_ops(
    prog: &PreparedProgram,
    prog_idx: usize,
    mut pc: usize,
    st: &mut State,
    mem: &mut MemoryMap,
    program_array: Option<&dyn ProgramArray>,
) -> Result<Stop, Fault> {
    let ops: &[Op] = &prog.ops;
    let mut regs = st.regs;
    let mut budget = st.budget;
    let limit = prog.config.budget.unwrap_or(u64::MAX);

    macro_rules! save {
        () => {
            st.regs = regs;
            st.budget = budget;
        };
    }
    macro_rules! bail {
        ($f:expr) => {{
            save!();
            return Err($f);
        }};
    }
    macro_rules! load {
        ($op:ident, $d:ident, $s:ident, $ty:ty, $conv:expr) => {{
            let addr = regs[$s].wrapping_add(i64::from($op.aux) as u64);
            let len = std::mem::size_of::<$ty>() as u64;
            match mem.check(addr, len, Access::Read) {
                Ok(a) => {
                    // SAFETY: `check` proved [a, a + len) lies in a readable
                    // region or the live stack.
                    let v: $ty = unsafe { (a as *const $ty).read_unaligned() };
                    #[allow(clippy::redundant_closure_call)]
                    {
                        regs[$d] = ($conv)(v);
                    }
                }
                Err(e) => bail!(mem_fault(prog, pc, addr, len, Access::Read, e)),
            }
        }};
    }
    macro_rules! store {
        ($op:ident, $d:ident, $ty:ty, $val:expr) => {{
            let addr = regs[$d].wrapping_add(i64::from($op.aux) as u64);
            let len = std::mem::size_of::<$ty>() as u64;
            match mem.check(addr, len, Access::Write) {
                // SAFETY: `check` proved [a, a + len) lies in a writable
                // region or the live stack.
                Ok(a) => unsafe { (a as *mut $ty).write_unaligned($val as $ty) },
                Err(e) => bail!(mem_fault(prog, pc, addr, len, Access::Write, e)),
            }
        }};
    }
    macro_rules! jump {
        ($op:ident, $cond:expr) => {{
            if $cond {
                branch_taken();
                pc = $op.aux as usize;
                continue;
            }
        }};
    }
    macro_rules! packet_load {
        ($op:ident, $base:expr, $n:expr) => {{
            let Some((start, plen)) = st.packet else {
                bail!(fault(prog, pc, 0, 0, FaultKind::NoPacket));
            };
            let off = ($base as i64).wrapping_add($op.imm as i64);
            // Out of bounds: the kernel ends the program with r0 = 0.
            if off < 0 || (off as u64) > plen || $n > plen.wrapping_sub(off as u64) {
                save!();
                return Ok(Stop::Exit(0));
            }
            let addr = start.wrapping_add(off as u64);
            match mem.check(addr, $n, Access::Read) {
                Ok(a) => {
                    let mut b = [0u8; 8];
                    // SAFETY: `check` proved [a, a + n) readable; n <= 4.
                    unsafe {
                        std::ptr::copy_nonoverlapping(a as *const u8, b.as_mut_ptr(), $n as usize)
                    };
                    let mut v = 0u64;
                    for byte in &b[..$n as usize] {
                        v = (v << 8) | u64::from(*byte);
                    }
                    regs[0] = v;
                }
                Err(e) => bail!(mem_fault(prog, pc, addr, $n, Access::Read, e)),
            }
        }};
    }

    loop {
        let Some(&op) = ops.get(pc) else {
            bail!(fault(prog, pc, 0, 0, FaultKind::InvalidPc));
        };
        if budget == 0 {
            bail!(fault(prog, pc, 0, 0, FaultKind::BudgetExhausted { limit }));
        }
        budget = budget.wrapping_sub(1);
        let d = usize::from(op.dst & 15);
        let s = usize::from(op.src & 15);
        let imm = op.imm;
        let imm32 = imm as u32;
        let next = pc.wrapping_add(1);
        match op.kind {
            K::Add64I => regs[d] = regs[d].wrapping_add(imm),
            K::Add64R => regs[d] = regs[d].wrapping_add(regs[s]),
            K::Sub64I => regs[d] = regs[d].wrapping_sub(imm),
            K::Sub64R => regs[d] = regs[d].wrapping_sub(regs[s]),
            K::Mul64I => regs[d] = regs[d].wrapping_mul(imm),
            K::Mul64R => regs[d] = regs[d].wrapping_mul(regs[s]),
            K::Div64I => regs[d] = regs[d].checked_div(imm).unwrap_or(0),
            K::Div64R => regs[d] = regs[d].checked_div(regs[s]).unwrap_or(0),
            K::SDiv64I => regs[d] = sdiv64(regs[d], imm),
            K::SDiv64R => regs[d] = sdiv64(regs[d], regs[s]),
            K::Or64I => regs[d] |= imm,
            K::Or64R => regs[d] |= regs[s],
            K::And64I => regs[d] &= imm,
            K::And64R => regs[d] &= regs[s],
            K::Lsh64I => regs[d] = regs[d].wrapping_shl(imm as u32),
            K::Lsh64R => regs[d] = regs[d].wrapping_shl(regs[s] as u32),
            K::Rsh64I => regs[d] = regs[d].wrapping_shr(imm as u32),
            K::Rsh64R => regs[d] = regs[d].wrapping_shr(regs[s] as u32),
            K::Mod64I => regs[d] = regs[d].checked_rem(imm).unwrap_or(regs[d]),
            K::Mod64R => regs[d] = regs[d].checked_rem(regs[s]).unwrap_or(regs[d]),
            K::SMod64I => regs[d] = smod64(regs[d], imm),
            K::SMod64R => regs[d] = smod64(regs[d], regs[s]),
            K::Xor64I => regs[d] ^= imm,
            K::Xor64R => regs[d] ^= regs[s],
            K::Mov64I => regs[d] = imm,
            K::Mov64R => regs[d] = regs[s],
            K::Arsh64I => regs[d] = (regs[d] as i64).wrapping_shr(imm as u32) as u64,
            K::Arsh64R => regs[d] = (regs[d] as i64).wrapping_shr(regs[s] as u32) as u64,
            K::Add32I => regs[d] = u64::from((regs[d] as u32).wrapping_add(imm32)),
            K::Add32R => regs[d] = u64::from((regs[d] as u32).wrapping_add(regs[s] as u32)),
            K::Sub32I => regs[d] = u64::from((regs[d] as u32).wrapping_sub(imm32)),
            K::Sub32R => regs[d] = u64::from((regs[d] as u32).wrapping_sub(regs[s] as u32)),
            K::Mul32I => regs[d] = u64::from((regs[d] as u32).wrapping_mul(imm32)),
            K::Mul32R => regs[d] = u64::from((regs[d] as u32).wrapping_mul(regs[s] as u32)),
            K::Div32I => regs[d] = u64::from((regs[d] as u32).checked_div(imm32).unwrap_or(0)),
            K::Div32R => {
                regs[d] = u64::from((regs[d] as u32).checked_div(regs[s] as u32).unwrap_or(0))
            }
            K::SDiv32I => regs[d] = sdiv32(regs[d], imm),
            K::SDiv32R => regs[d] = sdiv32(regs[d], regs[s]),
            K::Or32I => regs[d] = u64::from(regs[d] as u32 | imm32),
            K::Or32R => regs[d] = u64::from(regs[d] as u32 | regs[s] as u32),
            K::And32I => regs[d] = u64::from(regs[d] as u32 & imm32),
            K::And32R => regs[d] = u64::from(regs[d] as u32 & regs[s] as u32),
            K::Lsh32I => regs[d] = u64::from((regs[d] as u32).wrapping_shl(imm32)),
            K::Lsh32R => regs[d] = u64::from((regs[d] as u32).wrapping_shl(regs[s] as u32)),
            K::Rsh32I => regs[d] = u64::from((regs[d] as u32).wrapping_shr(imm32)),
            K::Rsh32R => regs[d] = u64::from((regs[d] as u32).wrapping_shr(regs[s] as u32)),
            K::Mod32I => {
                let a = regs[d] as u32;
                regs[d] = u64::from(a.checked_rem(imm32).unwrap_or(a))
            }
            K::Mod32R => {
                let a = regs[d] as u32;
                regs[d] = u64::from(a.checked_rem(regs[s] as u32).unwrap_or(a))
            }
            K::SMod32I => regs[d] = smod32(regs[d], imm),
            K::SMod32R => regs[d] = smod32(regs[d], regs[s]),
            K::Xor32I => regs[d] = u64::from(regs[d] as u32 ^ imm32),
            K::Xor32R => regs[d] = u64::from(regs[d] as u32 ^ regs[s] as u32),
            K::Mov32I => regs[d] = u64::from(imm32),
            K::Mov32R => regs[d] = u64::from(regs[s] as u32),
            K::Arsh32I => regs[d] = u64::from((regs[d] as i32).wrapping_shr(imm32) as u32),
            K::Arsh32R => regs[d] = u64::from((regs[d] as i32).wrapping_shr(regs[s] as u32) as u32),
            K::MovSx64B => regs[d] = i64::from(regs[s] as i8) as u64,
            K::MovSx64H => regs[d] = i64::from(regs[s] as i16) as u64,
            K::MovSx64W => regs[d] = i64::from(regs[s] as i32) as u64,
            K::MovSx32B => regs[d] = u64::from(i32::from(regs[s] as i8) as u32),
            K::MovSx32H => regs[d] = u64::from(i32::from(regs[s] as i16) as u32),
            K::Neg64 => regs[d] = regs[d].wrapping_neg(),
            K::Neg32 => regs[d] = u64::from((regs[d] as u32).wrapping_neg()),
            K::Le16 => regs[d] = u64::from((regs[d] as u16).to_le()),
            K::Le32 => regs[d] = u64::from((regs[d] as u32).to_le()),
            K::Le64 => regs[d] = regs[d].to_le(),
            K::Be16 => regs[d] = u64::from((regs[d] as u16).to_be()),
            K::Be32 => regs[d] = u64::from((regs[d] as u32).to_be()),
            K::Be64 => regs[d] = regs[d].to_be(),
            K::Swap16 => regs[d] = u64::from((regs[d] as u16).swap_bytes()),
            K::Swap32 => regs[d] = u64::from((regs[d] as u32).swap_bytes()),
            K::Swap64 => regs[d] = regs[d].swap_bytes(),
            K::LdxB => load!(op, d, s, u8, u64::from),
            K::LdxH => load!(op, d, s, u16, u64::from),
            K::LdxW => load!(op, d, s, u32, u64::from),
            K::LdxDW => load!(op, d, s, u64, |v: u64| v),
            K::LdxSB => load!(op, d, s, i8, |v: i8| i64::from(v) as u64),
            K::LdxSH => load!(op, d, s, i16, |v: i16| i64::from(v) as u64),
            K::LdxSW => load!(op, d, s, i32, |v: i32| i64::from(v) as u64),
            K::StB => store!(op, d, u8, imm),
            K::StH => store!(op, d, u16, imm),
            K::StW => store!(op, d, u32, imm),
            K::StDW => store!(op, d, u64, imm),
            K::StxB => store!(op, d, u8, regs[s]),
            K::StxH => store!(op, d, u16, regs[s]),
            K::StxW => store!(op, d, u32, regs[s]),
            K::StxDW => store!(op, d, u64, regs[s]),
            K::Atomic32 | K::Atomic64 => {
                let wide = op.kind == K::Atomic64;
                let len: u64 = if wide { 8 } else { 4 };
                let addr = regs[d].wrapping_add(i64::from(op.aux) as u64);
                let a = match mem.check(addr, len, Access::Write) {
                    Ok(a) => a,
                    Err(e) => bail!(mem_fault(prog, pc, addr, len, Access::Write, e)),
                };
                if a & (len.wrapping_sub(1)) != 0 {
                    bail!(fault(prog, pc, addr, len, FaultKind::Misaligned));
                }
                let fetch = imm & 0x100 != 0;
                let code = imm & 0xff;
                if wide {
                    // SAFETY: `a` is 8-aligned and lies in a writable region
                    // or the live stack (checked above).
                    let cell = unsafe { AtomicU64::from_ptr(a as *mut u64) };
                    let v = regs[s];
                    let old = match code {
                        0 => cell.fetch_add(v, Ordering::SeqCst),
                        1 => cell.fetch_or(v, Ordering::SeqCst),
                        2 => cell.fetch_and(v, Ordering::SeqCst),
                        3 => cell.fetch_xor(v, Ordering::SeqCst),
                        4 => cell.swap(v, Ordering::SeqCst),
                        _ => match cell.compare_exchange(
                            regs[0],
                            v,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        ) {
                            Ok(x) | Err(x) => x,
                        },
                    };
                    if code == 5 {
                        regs[0] = old;
                    } else if fetch {
                        regs[s] = old;
                    }
                } else {
                    // SAFETY: `a` is 4-aligned and lies in a writable region
                    // or the live stack (checked above).
                    let cell = unsafe { AtomicU32::from_ptr(a as *mut u32) };
                    let v = regs[s] as u32;
                    let old = match code {
                        0 => cell.fetch_add(v, Ordering::SeqCst),
                        1 => cell.fetch_or(v, Ordering::SeqCst),
                        2 => cell.fetch_and(v, Ordering::SeqCst),
                        3 => cell.fetch_xor(v, Ordering::SeqCst),
                        4 => cell.swap(v, Ordering::SeqCst),
                        _ => match cell.compare_exchange(
                            regs[0] as u32,
                            v,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        ) {
                            Ok(x) | Err(x) => x,
                        },
                    };
                    if code == 5 {
                        regs[0] = u64::from(old);
                    } else if fetch {
                        regs[s] = u64::from(old);
                    }
                }
            }
            K::LoadImm => {
                regs[d] = imm;
                pc = pc.wrapping_add(2);
                continue;
            }
            K::LdAbsB => packet_load!(op, 0u64, 1u64),
            K::LdAbsH => packet_load!(op, 0u64, 2u64),
            K::LdAbsW => packet_load!(op, 0u64, 4u64),
            K::LdIndB => packet_load!(op, regs[s], 1u64),
            K::LdIndH => packet_load!(op, regs[s], 2u64),
            K::LdIndW => packet_load!(op, regs[s], 4u64),
            K::Ja => {
                pc = op.aux as usize;
                continue;
            }
            K::JeqI => jump!(op, regs[d] == imm),
            K::JeqR => jump!(op, regs[d] == regs[s]),
            K::JgtI => jump!(op, regs[d] > imm),
            K::JgtR => jump!(op, regs[d] > regs[s]),
            K::JgeI => jump!(op, regs[d] >= imm),
            K::JgeR => jump!(op, regs[d] >= regs[s]),
            K::JsetI => jump!(op, regs[d] & imm != 0),
            K::JsetR => jump!(op, regs[d] & regs[s] != 0),
            K::JneI => jump!(op, regs[d] != imm),
            K::JneR => jump!(op, regs[d] != regs[s]),
            K::JsgtI => jump!(op, (regs[d] as i64) > imm as i64),
            K::JsgtR => jump!(op, (regs[d] as i64) > regs[s] as i64),
            K::JsgeI => jump!(op, (regs[d] as i64) >= imm as i64),
            K::JsgeR => jump!(op, (regs[d] as i64) >= regs[s] as i64),
            K::JltI => jump!(op, regs[d] < imm),
            K::JltR => jump!(op, regs[d] < regs[s]),
            K::JleI => jump!(op, regs[d] <= imm),
            K::JleR => jump!(op, regs[d] <= regs[s]),
            K::JsltI => jump!(op, (regs[d] as i64) < imm as i64),
            K::JsltR => jump!(op, (regs[d] as i64) < regs[s] as i64),
            K::JsleI => jump!(op, (regs[d] as i64) <= imm as i64),
            K::JsleR => jump!(op, (regs[d] as i64) <= regs[s] as i64),
            K::Jeq32I => jump!(op, regs[d] as u32 == imm32),
            K::Jeq32R => jump!(op, regs[d] as u32 == regs[s] as u32),
            K::Jgt32I => jump!(op, regs[d] as u32 > imm32),
            K::Jgt32R => jump!(op, regs[d] as u32 > regs[s] as u32),
            K::Jge32I => jump!(op, regs[d] as u32 >= imm32),
            K::Jge32R => jump!(op, regs[d] as u32 >= regs[s] as u32),
            K::Jset32I => jump!(op, regs[d] as u32 & imm32 != 0),
            K::Jset32R => jump!(op, regs[d] as u32 & regs[s] as u32 != 0),
            K::Jne32I => jump!(op, regs[d] as u32 != imm32),
            K::Jne32R => jump!(op, regs[d] as u32 != regs[s] as u32),
            K::Jsgt32I => jump!(op, (regs[d] as i32) > imm32 as i32),
            K::Jsgt32R => jump!(op, (regs[d] as i32) > regs[s] as i32),
            K::Jsge32I => jump!(op, (regs[d] as i32) >= imm32 as i32),
            K::Jsge32R => jump!(op, (regs[d] as i32) >= regs[s] as i32),
            K::Jlt32I => jump!(op, (regs[d] as u32) < imm32),
            K::Jlt32R => jump!(op, (regs[d] as u32) < regs[s] as u32),
            K::Jle32I => jump!(op, regs[d] as u32 <= imm32),
            K::Jle32R => jump!(op, regs[d] as u32 <= regs[s] as u32),
            K::Jslt32I => jump!(op, (regs[d] as i32) < imm32 as i32),
            K::Jslt32R => jump!(op, (regs[d] as i32) < regs[s] as i32),
            K::Jsle32I => jump!(op, (regs[d] as i32) <= imm32 as i32),
            K::Jsle32R => jump!(op, (regs[d] as i32) <= regs[s] as i32),
            K::Call => {
                let Some(h) = prog.helper_table.get(imm as usize) else {
                    bail!(fault(prog, pc, 0, 0, FaultKind::InvalidPc));
                };
                match call_helper(prog, pc, h, &mut regs, mem) {
                    Ok(None) => {}
                    Ok(Some(r0)) => {
                        regs[0] = r0;
                        save!();
                        return Ok(Stop::Exit(r0));
                    }
                    Err(f) => bail!(f),
                }
            }
            K::CallLocal => {
                if let Err(f) = push_frame(prog, prog_idx, pc, &mut regs, st, mem) {
                    bail!(f);
                }
                pc = op.aux as usize;
                continue;
            }
            K::CallX => {
                let value = regs[d];
                if value & FUNC_ADDR_MASK == FUNC_ADDR_TAG {
                    let t = (value & !FUNC_ADDR_MASK) as usize;
                    match ops.get(t) {
                        Some(o) if o.kind != K::Hole => {}
                        _ => bail!(fault(prog, pc, 0, 0, FaultKind::BadCallTarget { value })),
                    }
                    if let Err(f) = push_frame(prog, prog_idx, pc, &mut regs, st, mem) {
                        bail!(f);
                    }
                    pc = t;
                    continue;
                }
                let helper = i32::try_from(value)
                    .ok()
                    .and_then(|id| prog.helpers.get(id));
                let Some(h) = helper else {
                    bail!(fault(prog, pc, 0, 0, FaultKind::BadCallTarget { value }));
                };
                match call_helper(prog, pc, h, &mut regs, mem) {
                    Ok(None) => {}
                    Ok(Some(r0)) => {
                        regs[0] = r0;
                        save!();
                        return Ok(Stop::Exit(r0));
                    }
                    Err(f) => bail!(f),
                }
            }
            K::TailCall => {
                let index = regs[3];
                let target = match (program_array, u32::try_from(index)) {
                    (Some(arr), Ok(i)) if st.tail_calls < MAX_TAIL_CALLS => arr.get(regs[2], i),
                    _ => None,
                };
                match target {
                    Some(t) => {
                        st.tail_calls = st.tail_calls.wrapping_add(1);
                        save!();
                        return Ok(Stop::TailCall(t));
                    }
                    // A failed tail call falls through, as in the kernel.
                    None => regs[0] = crate::helpers::neg_errno(libc::ENOENT),
                }
            }
            K::Exit => {
                if st.depth == 0 {
                    save!();
                    return Ok(Stop::Exit(regs[0]));
                }
                st.depth = st.depth.wrapping_sub(1);
                let f = st.frames[st.depth & (MAX_CALL_FRAMES - 1)];
                regs[6..10].copy_from_slice(&f.saved);
                regs[10] = f.fp;
                mem.stack_lo = f.fp.wrapping_sub(STACK_SIZE as u64);
                pc = f.ret_pc;
                if f.prog != prog_idx {
                    save!();
                    return Ok(Stop::Switch { prog: f.prog, pc });
                }
                continue;
            }
            K::Hole => bail!(fault(prog, pc, 0, 0, FaultKind::InvalidPc)),
        }
        pc = next;
    }
}

/// Marks the taken side of a conditional jump. Without it LLVM turns the
/// jump into a conditional move of the next pc, which puts the comparison
/// (and the load of its register) on the dispatch critical path and defeats
/// branch prediction: loops run about 2x slower.
#[inline(always)]
fn branch_taken() {
    // SAFETY: an empty assembly block: no instructions, no memory or stack
    // access, flags preserved. It only stops if-conversion.
    unsafe { std::arch::asm!("", options(nomem, nostack, preserves_flags)) }
}

/// Enters a bpf-to-bpf call from `pc`: saves r6-r9 and the frame pointer
/// and moves to a fresh 512-byte frame.
fn push_frame(
    prog: &PreparedProgram,
    prog_idx: usize,
    pc: usize,
    regs: &mut [u64; 16],
    st: &mut State,
    mem: &mut MemoryMap,
) -> Result<(), Fault> {
    let depth = st.depth.wrapping_add(1);
    if depth >= MAX_CALL_FRAMES {
        return Err(fault(
            prog,
            pc,
            0,
            0,
            FaultKind::CallDepthExceeded {
                limit: MAX_CALL_FRAMES,
            },
        ));
    }
    let mut saved = [0u64; 4];
    saved.copy_from_slice(&regs[6..10]);
    st.frames[st.depth & (MAX_CALL_FRAMES - 1)] = Frame {
        ret_pc: pc.wrapping_add(1),
        prog: prog_idx,
        saved,
        fp: regs[10],
    };
    st.depth = depth;
    st.max_depth = st.max_depth.max(depth);
    regs[10] = regs[10].wrapping_sub(STACK_SIZE as u64);
    mem.stack_lo = regs[10].wrapping_sub(STACK_SIZE as u64);
    Ok(())
}

fn sdiv64(a: u64, b: u64) -> u64 {
    // Division by zero gives 0; INT_MIN / -1 (the only overflow) gives INT_MIN.
    let (a, b) = (a as i64, b as i64);
    if b == 0 {
        0
    } else {
        a.checked_div(b).unwrap_or(a) as u64
    }
}

fn smod64(a: u64, b: u64) -> u64 {
    // Modulo by zero leaves dst; INT_MIN % -1 gives 0.
    let (sa, sb) = (a as i64, b as i64);
    if sb == 0 {
        a
    } else {
        sa.checked_rem(sb).unwrap_or(0) as u64
    }
}

fn sdiv32(a: u64, b: u64) -> u64 {
    let (a, b) = (a as i32, b as i32);
    if b == 0 {
        0
    } else {
        u64::from(a.checked_div(b).unwrap_or(a) as u32)
    }
}

fn smod32(a: u64, b: u64) -> u64 {
    let (a, b) = (a as i32, b as i32);
    if b == 0 {
        u64::from(a as u32)
    } else {
        u64::from(a.checked_rem(b).unwrap_or(0) as u32)
    }
}
