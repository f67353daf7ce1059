//! Lowering a [`Program`] into the interpreter's flat operation array.

use std::fmt;
use std::sync::Arc;

use super::{
    Config, MapResolver, PrepareError, BPF_FUNC_LOOP, BPF_FUNC_TAIL_CALL, CORE_POISON_HELPER,
    FUNC_ADDR_TAG,
};
use crate::helpers::{Helper, Helpers};
use crate::insn::Insn;
use crate::isa::{
    AluOp, AtomicOp, CallTarget, EndianOp, Instruction, JmpCond, Lddw, MemSize, PacketMode, Source,
    Width,
};
use crate::memory::MemoryMap;
use crate::program::Program;

/// Operation kinds of the lowered program. Names: operation, width,
/// operand (`I` immediate, `R` register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum K {
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
    /// `bpf_loop`: calls a callback subprogram up to n times.
    Loop,
    Exit,
    /// The second slot of an lddw: never executed.
    Hole,
    /// `call 0xbad2310`: an instruction whose CO-RE relocation failed.
    CorePoison,
    /// `bpf_map_lookup_elem` straight into the maps' [`MapAccel`]; `imm` =
    /// index of the helper in the table, the slow path when the fast one
    /// declines.
    MapLookup,
}

/// Map operations an engine may call directly instead of through the
/// helper interface (as the kernel inlines map lookups): the maps a program
/// is bound to provide it.
pub trait MapAccel: Send + Sync {
    /// `bpf_map_lookup_elem(handle, key)` with the key checked against
    /// `mem`: the value's address or 0 when absent; `None` to decline
    /// (anything unusual), and the engine calls the helper instead.
    fn lookup(&self, mem: &MemoryMap, handle: u64, key: u64) -> Option<u64>;

    /// The values of the array map `handle` (`BPF_MAP_TYPE_ARRAY`, not
    /// per-CPU) as one block of memory that lives as long as this accel:
    /// the address of index 0, the bytes per index and the number of
    /// entries. Native code computes `bpf_map_lookup_elem` on such a map
    /// inline. `None` for other maps.
    fn array_values(&self, _handle: u64) -> Option<(u64, u64, u32)> {
        None
    }
}

/// One lowered operation: 16 bytes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Op {
    pub(super) kind: K,
    pub(super) dst: u8,
    pub(super) src: u8,
    /// Memory offset (sign-extended) or absolute jump/call target.
    pub(super) aux: i32,
    /// Immediate, sign-extended to 64 bits (full value for lddw).
    pub(super) imm: u64,
}

/// A program lowered for the interpreter, with its helpers bound. Immutable
/// and shareable between threads and VMs.
pub struct PreparedProgram {
    pub(super) name: Arc<str>,
    pub(super) ops: Box<[Op]>,
    pub(super) insns: Box<[Insn]>,
    pub(super) helper_table: Box<[Helper]>,
    pub(super) helpers: Helpers,
    pub(super) config: Config,
    pub(super) accel: Option<Arc<dyn MapAccel>>,
    /// Native code, and whether runs need a zeroed stack.
    pub(super) compiled: std::sync::OnceLock<(Arc<dyn super::CompiledProgram>, bool)>,
    /// The pcs a `callx`, a helper's callback or
    /// [`crate::Vm::run_subprogram`] may enter: pc 0, the targets of local
    /// calls and of `lddw src=4` (a subprogram's address). A forged
    /// address of another pc is a bad call target in every engine.
    pub(super) entries: Box<[bool]>,
    /// Whether any instruction names r10: a program that never does
    /// cannot write its stack (every stack pointer derives from r10), so
    /// its runs leave nothing to zero.
    pub(super) touches_stack: bool,
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
    /// The maps' direct paths the program was prepared with, if any.
    pub fn map_accel(&self) -> Option<&Arc<dyn MapAccel>> {
        self.accel.as_ref()
    }

    /// Lowers `program` with `helpers`. Fails on unknown helpers, kfuncs and
    /// map loads (see [`PreparedProgram::with_maps`]).
    pub fn new(
        program: &Program,
        helpers: &Helpers,
        config: Config,
    ) -> Result<PreparedProgram, PrepareError> {
        PreparedProgram::build(program, helpers, config, None)
    }

    /// Calls `bpf_map_lookup_elem` (helper 1) through `accel` instead of
    /// the helper, which stays the fallback. Only for the maps whose map
    /// helpers the program was prepared with.
    pub fn set_map_accel(&mut self, accel: Arc<dyn MapAccel>) {
        for op in self.ops.iter_mut() {
            if op.kind == K::Call
                && self
                    .helper_table
                    .get(op.imm as usize)
                    .is_some_and(|h| h.id() == crate::maps::set::BPF_FUNC_MAP_LOOKUP_ELEM)
            {
                op.kind = K::MapLookup;
            }
        }
        self.accel = Some(accel);
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
        // Targets of `lddw src=4` (subprogram addresses).
        let mut func_targets: Vec<usize> = Vec::new();
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
                        Lddw::Func(rel) => {
                            let t = target(pc, i64::from(rel));
                            func_targets.push(t as u32 as usize);
                            FUNC_ADDR_TAG | t as u32 as u64
                        }
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
                                        "the program uses a map but no maps were provided to the interpreter"
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
                    None if id == BPF_FUNC_LOOP => op.kind = K::Loop,
                    // A failed CO-RE relocation: a fault if it runs.
                    None if id == CORE_POISON_HELPER => op.kind = K::CorePoison,
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
                Instruction::Call(CallTarget::Kfunc { btf_id, btf_idx }) => {
                    match helpers.kfunc(btf_id).filter(|_| btf_idx == 0) {
                        Some(h) => {
                            op.kind = K::Call;
                            let idx = match helper_table
                                .iter()
                                .position(|x| x.id() == btf_id && x.name() == h.name())
                            {
                                Some(idx) => idx,
                                None => {
                                    helper_table.push(h.clone());
                                    helper_table.len().saturating_sub(1)
                                }
                            };
                            op.imm = idx as u64;
                        }
                        None => {
                            return Err(PrepareError::Kfunc {
                                program: name,
                                pc,
                                btf_id,
                            })
                        }
                    }
                }
                Instruction::CallX { reg } => {
                    op.kind = K::CallX;
                    op.dst = reg.num();
                }
                Instruction::Exit => op.kind = K::Exit,
            }
            ops.push(op);
        }
        let mut entries = vec![false; ops.len()];
        let mut enter = |t: usize| {
            if let Some(e) = entries.get_mut(t) {
                *e = true;
            }
        };
        enter(0);
        for op in ops.iter().filter(|o| o.kind == K::CallLocal) {
            enter(op.aux as usize);
        }
        for t in func_targets {
            enter(t);
        }
        Ok(PreparedProgram {
            entries: entries.into_boxed_slice(),
            name: Arc::from(program.name()),
            ops: ops.into_boxed_slice(),
            insns: program.insns().to_vec().into_boxed_slice(),
            helper_table: helper_table.into_boxed_slice(),
            helpers: helpers.clone(),
            config,
            accel: None,
            compiled: std::sync::OnceLock::new(),
            touches_stack: program.insns().iter().any(|i| i.dst == 10 || i.src == 10),
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
