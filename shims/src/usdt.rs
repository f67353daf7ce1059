//! USDT probes: the `stapsdt` notes of an ELF file and their argument specs.
//!
//! A USDT site (`STAP_PROBE*` of `<sys/sdt.h>`) is a `nop` in the code plus a
//! note in `.note.stapsdt` (owner `stapsdt`, type 3) whose descriptor is
//!
//! ```text
//! u64 pc         link-time address of the nop
//! u64 base       link-time address of `.stapsdt.base`
//! u64 semaphore  link-time address of a u16 counter, or 0
//! char provider[], name[], args[]   (NUL-terminated)
//! ```
//!
//! (the three addresses are 4 bytes each in a 32-bit ELF).
//!
//! # Addresses
//!
//! Prelinking (or any tool that moves sections after the notes were written)
//! shifts code and data but not the notes, so the addresses are adjusted by
//! how far `.stapsdt.base` moved: the *file address* (virtual address in the
//! file as it is now) of the site is
//!
//! ```text
//! file_pc = pc + (address of .stapsdt.base in the section headers - base)
//! ```
//!
//! ([`UsdtProbe::file_pc`]; the same for the semaphore,
//! [`UsdtProbe::file_semaphore`]). When the file has no `.stapsdt.base`
//! section the note's addresses are used as they are.
//!
//! A file address becomes a *runtime address* with the module's load bias:
//! `runtime = file_address + bias` for a shared object or a PIE (`ET_DYN`,
//! bias = where the module was mapped minus its first `PT_LOAD`'s page-aligned
//! `p_vaddr`), `runtime = file_address` for a position-dependent executable
//! (`ET_EXEC`, see [`UsdtFile::position_independent`]). The semaphore is a
//! `u16` in the loaded image (usually in `.probes`): a tracer increments it at
//! `runtime(file_semaphore)` while attached; the kernel's uprobe
//! `ref_ctr_offset` wants its *file offset* instead, which
//! [`UsdtFile::vaddr_to_file_offset`] computes from the `PT_LOAD` headers.
//!
//! # Arguments
//!
//! The argument string is a space-separated list of `SIZE@OPERAND`, SIZE
//! being 1, 2, 4 or 8, negative when signed, and OPERAND an AT&T operand:
//! `$5` (constant), `%edi` (register), `-8(%rbp)` (memory),
//! `16(%rax,%rbx,8)` (SIB memory), `sym(%rip)` / `sym+8` (memory at a
//! symbol). [`UsdtArg`] keeps all of these; [`UsdtArg::to_spec`] lowers one to
//! libbpf's `struct __bpf_usdt_arg_spec` ([`UsdtArgSpec`]), which BPF programs
//! read through `bpf_usdt_arg()` of `<bpf/usdt.bpf.h>`.
//!
//! The layout produced is the one of the installed header, libbpf 1.1
//! (`/usr/include/bpf/usdt.bpf.h`), which knows three argument kinds
//! (`BPF_USDT_ARG_CONST`, `_REG`, `_REG_DEREF`) and **no SIB kind**: SIB
//! operands parse, and [`UsdtArg::value`] evaluates them, but
//! [`UsdtArg::to_spec`] reports them as [`UsdtError::Inexpressible`]. A
//! probe that runs in the traced process serves them anyway: it computes
//! such an argument's address when it fires, into a scratch slot after the
//! `pt_regs` its program receives, and the spec reads the memory there
//! ([`USDT_SCRATCH_OFFSET`], [`UsdtSpec::from_args_in_process`]).
//!
//! Registers are named by their offset in the kernel's x86-64 `struct
//! pt_regs` ([`PtRegs`]); a sub-register (`%edi`, `%ax`, `%sil`, `%r8d`)
//! names the whole register, the size prefix then truncates and extends the
//! value (`arg_bitshift = 64 - 8 * size`), as libbpf does. `%rip`-relative
//! operands read `ip`, which must therefore hold the runtime address of the
//! probed `nop` when a probe runs (as it does for a kernel uprobe).

use std::collections::HashMap;

use goblin::elf::program_header::PT_LOAD;
use goblin::elf::section_header::SHT_NOBITS;
use goblin::elf::Elf;
use userbpf_vm::context::trace::{PtRegs, PT_REGS_SIZE};

/// Section holding the USDT notes.
pub const STAPSDT_NOTE_SECTION: &str = ".note.stapsdt";
/// Section whose address the notes' `base` field records.
pub const STAPSDT_BASE_SECTION: &str = ".stapsdt.base";
/// Owner (name) of USDT notes.
pub const STAPSDT_NOTE_OWNER: &str = "stapsdt";
/// Type of USDT notes (`NT_STAPSDT`).
pub const NT_STAPSDT: u32 = 3;
/// Most arguments a `struct __bpf_usdt_spec` holds.
#[doc(alias = "USDT_MAX_ARG_CNT")]
pub const BPF_USDT_MAX_ARG_CNT: usize = 12;
/// `sizeof(struct __bpf_usdt_arg_spec)`.
pub const USDT_ARG_SPEC_SIZE: usize = 16;
/// `sizeof(struct __bpf_usdt_spec)`: 12 argument specs, `usdt_cookie` at 192,
/// `arg_cnt` at 200, padded to 8.
pub const USDT_SPEC_SIZE: usize = 208;

/// Where the scratch slots of an in-process USDT probe's context begin:
/// right after its `struct pt_regs`. An argument libbpf 1.1's spec cannot
/// describe (SIB addressing, a symbol plus a register, an absolute
/// address) gets a slot of 8 bytes there; the probe writes the argument's
/// address into it each time it fires, and the spec reads memory at the
/// slot's content (see [`UsdtSpec::from_args_in_process`]).
/// `bpf_usdt_arg()` reads registers with `bpf_probe_read_kernel(ctx +
/// reg_off)`, so an unmodified `usdt.bpf.h` program reads the slot as it
/// reads a register.
pub const USDT_SCRATCH_OFFSET: usize = PT_REGS_SIZE;

/// What went wrong reading USDT notes or arguments.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsdtError {
    /// The file is not an ELF file goblin can read.
    #[error("cannot parse the ELF file: {0}")]
    Elf(#[from] goblin::error::Error),
    /// A section's bytes lie outside the file.
    #[error("section {section} (offset {offset:#x}, size {size:#x}) lies outside the file")]
    SectionOutOfBounds {
        /// The section's name.
        section: String,
        /// `sh_offset`.
        offset: u64,
        /// `sh_size`.
        size: u64,
    },
    /// A note's header, name or descriptor runs past the end of its section.
    #[error("truncated note at offset {offset:#x} of {STAPSDT_NOTE_SECTION}: {needed} bytes needed, {available} left")]
    TruncatedNote {
        /// Offset of the note in the section.
        offset: usize,
        /// Bytes the note's header says it spans (from `offset`).
        needed: u64,
        /// Bytes left in the section.
        available: usize,
    },
    /// A descriptor too short for its three addresses.
    #[error("USDT note descriptor of {len} bytes cannot hold three {addr_size}-byte addresses")]
    TruncatedDescriptor {
        /// The descriptor's size.
        len: usize,
        /// 8 in an ELF64, 4 in an ELF32.
        addr_size: usize,
    },
    /// A descriptor string without its terminating NUL.
    #[error("the {field} string of a USDT note is not NUL-terminated")]
    MissingNul {
        /// `provider`, `name` or `arguments`.
        field: &'static str,
    },
    /// A descriptor string that is not UTF-8.
    #[error("the {field} string of a USDT note is not UTF-8")]
    NotUtf8 {
        /// `provider`, `name` or `arguments`.
        field: &'static str,
    },
    /// An argument that is not `SIZE@OPERAND` as `<sys/sdt.h>` writes it.
    #[error("bad USDT argument spec `{text}`: {reason}")]
    BadArg {
        /// The argument as written.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A valid argument that libbpf 1.1's `struct __bpf_usdt_arg_spec`
    /// cannot describe.
    #[error("USDT argument `{text}` cannot be expressed by the installed libbpf's usdt.bpf.h (libbpf 1.1): {reason}")]
    Inexpressible {
        /// The argument as written.
        text: String,
        /// Why.
        reason: String,
    },
    /// More arguments than `struct __bpf_usdt_spec` holds.
    #[error("{count} USDT arguments; struct __bpf_usdt_spec holds at most {BPF_USDT_MAX_ARG_CNT}")]
    TooManyArgs {
        /// How many there are.
        count: usize,
    },
    /// An error in the `index`-th note of `.note.stapsdt`.
    #[error("USDT note #{index}{}: {source}", probe.as_deref().map(|p| format!(" ({p})")).unwrap_or_default())]
    InNote {
        /// 0-based index among the file's `stapsdt` notes.
        index: usize,
        /// `provider:name`, when the descriptor got that far.
        probe: Option<String>,
        /// The error.
        #[source]
        source: Box<UsdtError>,
    },
}

fn bad_arg(text: &str, reason: impl Into<String>) -> UsdtError {
    UsdtError::BadArg {
        text: text.to_string(),
        reason: reason.into(),
    }
}

fn inexpressible(text: &str, reason: impl Into<String>) -> UsdtError {
    UsdtError::Inexpressible {
        text: text.to_string(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------
// Registers

/// An x86-64 register as a slot of the kernel's `struct pt_regs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Register {
    R15,
    R14,
    R13,
    R12,
    Bp,
    Bx,
    R11,
    R10,
    R9,
    R8,
    Ax,
    Cx,
    Dx,
    Si,
    Di,
    Ip,
    Sp,
}

/// AT&T names (without `%`) of each register and its sub-registers, as in
/// libbpf's `calc_pt_regs_off()`.
const REGISTER_NAMES: [(Register, [&str; 4]); 17] = [
    (Register::Ip, ["rip", "eip", "", ""]),
    (Register::Ax, ["rax", "eax", "ax", "al"]),
    (Register::Bx, ["rbx", "ebx", "bx", "bl"]),
    (Register::Cx, ["rcx", "ecx", "cx", "cl"]),
    (Register::Dx, ["rdx", "edx", "dx", "dl"]),
    (Register::Si, ["rsi", "esi", "si", "sil"]),
    (Register::Di, ["rdi", "edi", "di", "dil"]),
    (Register::Bp, ["rbp", "ebp", "bp", "bpl"]),
    (Register::Sp, ["rsp", "esp", "sp", "spl"]),
    (Register::R8, ["r8", "r8d", "r8w", "r8b"]),
    (Register::R9, ["r9", "r9d", "r9w", "r9b"]),
    (Register::R10, ["r10", "r10d", "r10w", "r10b"]),
    (Register::R11, ["r11", "r11d", "r11w", "r11b"]),
    (Register::R12, ["r12", "r12d", "r12w", "r12b"]),
    (Register::R13, ["r13", "r13d", "r13w", "r13b"]),
    (Register::R14, ["r14", "r14d", "r14w", "r14b"]),
    (Register::R15, ["r15", "r15d", "r15w", "r15b"]),
];

impl Register {
    /// The register an AT&T name (without `%`) refers to: `rdi`, `edi`,
    /// `di`, `dil`, `r8d`, `rip`... High-byte registers (`ah`) and
    /// non-general registers are `None`.
    pub fn from_att_name(name: &str) -> Option<Register> {
        REGISTER_NAMES
            .iter()
            .find(|(_, names)| names.iter().any(|n| !n.is_empty() && *n == name))
            .map(|(reg, _)| *reg)
    }

    /// `offsetof(struct pt_regs, <reg>)` on x86-64.
    pub const fn pt_regs_offset(self) -> u16 {
        match self {
            Register::R15 => 0,
            Register::R14 => 8,
            Register::R13 => 16,
            Register::R12 => 24,
            Register::Bp => 32,
            Register::Bx => 40,
            Register::R11 => 48,
            Register::R10 => 56,
            Register::R9 => 64,
            Register::R8 => 72,
            Register::Ax => 80,
            Register::Cx => 88,
            Register::Dx => 96,
            Register::Si => 104,
            Register::Di => 112,
            Register::Ip => 128,
            Register::Sp => 152,
        }
    }

    /// The register's value in `regs`.
    pub fn read(self, regs: &PtRegs) -> u64 {
        match self {
            Register::R15 => regs.r15,
            Register::R14 => regs.r14,
            Register::R13 => regs.r13,
            Register::R12 => regs.r12,
            Register::Bp => regs.bp,
            Register::Bx => regs.bx,
            Register::R11 => regs.r11,
            Register::R10 => regs.r10,
            Register::R9 => regs.r9,
            Register::R8 => regs.r8,
            Register::Ax => regs.ax,
            Register::Cx => regs.cx,
            Register::Dx => regs.dx,
            Register::Si => regs.si,
            Register::Di => regs.di,
            Register::Ip => regs.ip,
            Register::Sp => regs.sp,
        }
    }
}

// ---------------------------------------------------------------------------
// Arguments

/// A symbol in a memory operand (`sym(%rip)`, `sym+8`, `arr(,%rax,8)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsdtSymbol {
    /// The symbol's name as written.
    pub name: String,
    /// The symbol's address minus the probe's address (both file addresses,
    /// so the difference is the same at runtime), when [`probes`] found the
    /// symbol in the file's `.symtab` or `.dynsym`. At runtime the symbol is
    /// at `regs.ip + ip_offset`.
    pub ip_offset: Option<i64>,
}

/// An AT&T memory operand: `[symbol][±disp](base, index, scale)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryOperand {
    /// The numeric displacement (0 if none).
    pub disp: i64,
    /// The symbolic displacement, if any.
    pub symbol: Option<UsdtSymbol>,
    /// The base register. `%rip` with a symbol means "the symbol's address"
    /// (the assembler's RIP-relative form); `%rip` without one reads `ip`
    /// (the probe's address at runtime) plus `disp`, as libbpf does.
    pub base: Option<Register>,
    /// The index register, scaled by `scale`.
    pub index: Option<Register>,
    /// 1, 2, 4 or 8 (1 when there is no index).
    pub scale: u8,
}

/// Where an argument's value is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsdtArgLocation {
    /// `$imm`: the value itself.
    Const(i64),
    /// `%reg`: a register (a sub-register names its full register).
    Reg(Register),
    /// Memory at an address computed from registers and symbols.
    Memory(MemoryOperand),
}

/// One argument of a USDT probe, `SIZE@OPERAND`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsdtArg {
    /// Size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// Whether the value is sign-extended (negative SIZE).
    pub signed: bool,
    /// Where the value is.
    pub location: UsdtArgLocation,
    /// The argument as written in the note.
    pub text: String,
}

/// Splits a note's argument string at spaces outside parentheses.
fn split_args(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = None;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth = depth.saturating_add(1),
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c.is_whitespace() && depth == 0 {
            if let Some(s) = start.take() {
                out.extend(text.get(s..i));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.extend(text.get(s..));
    }
    out
}

/// Parses `[+-]digits` or `[+-]0xhex`; values up to `u64::MAX` wrap into
/// `i64` as the assembler would store them.
fn parse_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, s.get(1..)?),
        b'+' => (false, s.get(1..)?),
        _ => (false, s),
    };
    let magnitude = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None if digits.bytes().all(|b| b.is_ascii_digit()) => digits.parse::<u64>().ok()?,
        None => return None,
    };
    if neg {
        if magnitude > 1u64 << 63 {
            return None;
        }
        Some((magnitude as i64).wrapping_neg())
    } else {
        Some(magnitude as i64)
    }
}

fn is_symbol_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '.'
}

fn is_symbol_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '@' || c == '$'
}

fn parse_register(text: &str, operand: &str) -> Result<Register, UsdtError> {
    let Some(name) = operand.strip_prefix('%') else {
        return Err(bad_arg(
            text,
            format!("`{operand}` is not a register (no `%`)"),
        ));
    };
    if let Some(reg) = Register::from_att_name(name) {
        return Ok(reg);
    }
    if matches!(name, "ah" | "bh" | "ch" | "dh") {
        return Err(bad_arg(
            text,
            format!(
                "high-byte register %{name} is not supported: pt_regs offsets name whole \
                 registers, and libbpf's spec cannot shift out the low byte"
            ),
        ));
    }
    Err(bad_arg(text, format!("unknown register %{name}")))
}

/// Parses a displacement: a sum of integers and at most one (added) symbol,
/// as compilers write them: `-8`, `0x10`, `sym`, `sym+8`, `16+sym`,
/// `8+sym-4`.
fn parse_disp(text: &str, s: &str) -> Result<(i64, Option<String>), UsdtError> {
    let bad = || bad_arg(text, format!("bad displacement `{s}`"));
    let mut disp = 0i64;
    let mut symbol: Option<String> = None;
    let mut rest = s;
    let mut first = true;
    while !rest.is_empty() {
        let (negative, body) = if let Some(b) = rest.strip_prefix('+') {
            (false, b)
        } else if let Some(b) = rest.strip_prefix('-') {
            (true, b)
        } else if first {
            (false, rest)
        } else {
            return Err(bad());
        };
        first = false;
        let end = body.find(['+', '-']).unwrap_or(body.len());
        let (term, tail) = body.split_at(end);
        rest = tail;
        if term.starts_with(|c: char| c.is_ascii_digit()) {
            let v = parse_int(term).ok_or_else(bad)?;
            disp = if negative {
                disp.wrapping_sub(v)
            } else {
                disp.wrapping_add(v)
            };
        } else if term.starts_with(is_symbol_start) && term.chars().all(is_symbol_char) {
            if negative || symbol.is_some() {
                return Err(bad_arg(
                    text,
                    format!("`{s}` is not a symbol plus a constant"),
                ));
            }
            symbol = Some(term.to_string());
        } else {
            return Err(bad());
        }
    }
    Ok((disp, symbol))
}

fn parse_memory(text: &str, operand: &str) -> Result<MemoryOperand, UsdtError> {
    let (disp_text, regs_text) = match operand.find('(') {
        Some(open) => {
            let inner = operand
                .get(open..)
                .and_then(|s| s.strip_prefix('('))
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| bad_arg(text, "unbalanced parentheses"))?;
            (operand.get(..open).unwrap_or(""), Some(inner))
        }
        None => (operand, None),
    };
    let (disp, symbol) = parse_disp(text, disp_text)?;
    let mut mem = MemoryOperand {
        disp,
        symbol: symbol.map(|name| UsdtSymbol {
            name,
            ip_offset: None,
        }),
        base: None,
        index: None,
        scale: 1,
    };
    let Some(inner) = regs_text else {
        if mem.symbol.is_none() {
            return Err(bad_arg(
                text,
                "operand is neither `$imm`, `%reg` nor a memory reference",
            ));
        }
        return Ok(mem);
    };
    let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
    if parts.len() > 3 || inner.contains('(') || inner.contains(')') {
        return Err(bad_arg(text, "malformed memory operand"));
    }
    if let Some(base) = parts.first().filter(|b| !b.is_empty()) {
        mem.base = Some(parse_register(text, base)?);
    }
    if let Some(index) = parts.get(1) {
        let index = parse_register(text, index)?;
        if matches!(index, Register::Sp | Register::Ip) {
            return Err(bad_arg(text, "%rsp and %rip cannot be index registers"));
        }
        if mem.base == Some(Register::Ip) {
            return Err(bad_arg(text, "%rip-relative operands take no index"));
        }
        mem.index = Some(index);
    }
    if let Some(scale) = parts.get(2) {
        mem.scale = match *scale {
            "1" => 1,
            "2" => 2,
            "4" => 4,
            "8" => 8,
            _ => {
                return Err(bad_arg(
                    text,
                    format!("scale `{scale}` is not 1, 2, 4 or 8"),
                ))
            }
        };
    }
    if mem.base.is_none() && mem.index.is_none() {
        return Err(bad_arg(text, "memory operand without a register"));
    }
    Ok(mem)
}

impl UsdtArg {
    /// Parses one `SIZE@OPERAND` argument.
    pub fn parse(text: &str) -> Result<UsdtArg, UsdtError> {
        let trimmed = text.trim();
        let Some((size_text, operand)) = trimmed.split_once('@') else {
            return Err(bad_arg(text, "no `@` between size and operand"));
        };
        let (size_text, operand) = (size_text.trim(), operand.trim());
        let (signed, magnitude) = match size_text.strip_prefix('-') {
            Some(m) => (true, m),
            None => (false, size_text.strip_prefix('+').unwrap_or(size_text)),
        };
        let size = match magnitude {
            "1" => 1,
            "2" => 2,
            "4" => 4,
            "8" => 8,
            _ => {
                return Err(bad_arg(
                    text,
                    format!("size `{size_text}` is not 1, 2, 4 or 8 (negative if signed)"),
                ))
            }
        };
        let operand: String = operand.chars().filter(|c| !c.is_whitespace()).collect();
        let location = if let Some(imm) = operand.strip_prefix('$') {
            let v = parse_int(imm).ok_or_else(|| {
                bad_arg(
                    text,
                    format!("immediate `${imm}` is not an integer (symbolic immediates are not supported)"),
                )
            })?;
            UsdtArgLocation::Const(v)
        } else if operand.starts_with('%') {
            UsdtArgLocation::Reg(parse_register(text, &operand)?)
        } else if operand.is_empty() {
            return Err(bad_arg(text, "empty operand"));
        } else {
            UsdtArgLocation::Memory(parse_memory(text, &operand)?)
        };
        Ok(UsdtArg {
            size,
            signed,
            location,
            text: trimmed.to_string(),
        })
    }

    /// Parses a note's whole argument string (space-separated arguments).
    pub fn parse_list(text: &str) -> Result<Vec<UsdtArg>, UsdtError> {
        split_args(text).into_iter().map(UsdtArg::parse).collect()
    }

    /// `arg_bitshift` of libbpf: `64 - 8 * size`.
    pub fn bitshift(&self) -> u8 {
        64u8.saturating_sub(self.size.saturating_mul(8))
    }

    /// Truncates `raw` to the argument's size and extends it (sign or zero),
    /// as the end of `bpf_usdt_arg()` does.
    fn cast(&self, raw: u64) -> u64 {
        cast(raw, self.bitshift(), self.signed)
    }

    /// The address the argument reads when a probe fires with `regs`
    /// (`None`: not a memory operand, or a symbol that was not resolved).
    pub fn address_at(&self, regs: &PtRegs) -> Option<u64> {
        match &self.location {
            UsdtArgLocation::Memory(mem) => Self::address(mem, regs),
            _ => None,
        }
    }

    /// Whether an in-process probe serves the argument through a scratch
    /// slot ([`USDT_SCRATCH_OFFSET`]): a memory operand whose address
    /// computes but that libbpf 1.1's spec cannot describe.
    pub fn needs_scratch(&self) -> bool {
        let UsdtArgLocation::Memory(mem) = &self.location else {
            return false;
        };
        let resolved = mem.symbol.as_ref().is_none_or(|s| s.ip_offset.is_some());
        resolved && self.to_spec().is_err()
    }

    /// Lowers the argument for an in-process probe: as
    /// [`to_spec`](Self::to_spec), except that an argument that
    /// [`needs_scratch`](Self::needs_scratch) reads the memory at the
    /// address found in scratch slot `slot` (`BPF_USDT_ARG_REG_DEREF`,
    /// `reg_off` = [`USDT_SCRATCH_OFFSET`] + 8 * `slot`, `val_off` = 0).
    pub fn to_spec_in_process(&self, slot: usize) -> Result<UsdtArgSpec, UsdtError> {
        if !self.needs_scratch() {
            return self.to_spec();
        }
        let reg_off = USDT_SCRATCH_OFFSET + 8 * slot;
        let reg_off = i16::try_from(reg_off).map_err(|_| {
            inexpressible(&self.text, format!("scratch slot {slot} is out of reach"))
        })?;
        Ok(UsdtArgSpec {
            val_off: 0,
            arg_type: UsdtArgType::RegDeref,
            reg_off,
            arg_signed: self.signed,
            arg_bitshift: self.bitshift() as i8,
        })
    }

    /// The address a memory operand reads, or `None` when it names a symbol
    /// that was not resolved.
    fn address(mem: &MemoryOperand, regs: &PtRegs) -> Option<u64> {
        let mut addr = mem.disp as u64;
        match &mem.symbol {
            Some(sym) => {
                addr = addr
                    .wrapping_add(regs.ip)
                    .wrapping_add(sym.ip_offset? as u64);
                // `sym(%rip)` is the symbol's address, not ip + symbol.
                if let Some(base) = mem.base.filter(|b| *b != Register::Ip) {
                    addr = addr.wrapping_add(base.read(regs));
                }
            }
            None => {
                if let Some(base) = mem.base {
                    addr = addr.wrapping_add(base.read(regs));
                }
            }
        }
        if let Some(index) = mem.index {
            addr = addr.wrapping_add(index.read(regs).wrapping_mul(u64::from(mem.scale)));
        }
        Some(addr)
    }

    /// The argument's value when a probe fires with `regs`, computed as
    /// `bpf_usdt_arg()` of `<bpf/usdt.bpf.h>` computes it: memory operands
    /// read 8 bytes (`read_mem(addr, 8)`, little-endian) and the result is
    /// truncated to [`size`](Self::size) and sign- or zero-extended.
    ///
    /// SIB operands are evaluated as newer libbpf's `BPF_USDT_ARG_SIB`
    /// would (`base + index * scale + disp`), although the installed header
    /// cannot express them. `None` when a read fails or a symbol is
    /// unresolved.
    pub fn value(
        &self,
        regs: &PtRegs,
        read_mem: impl Fn(u64, usize) -> Option<u64>,
    ) -> Option<u64> {
        let raw = match &self.location {
            UsdtArgLocation::Const(v) => *v as u64,
            UsdtArgLocation::Reg(r) => r.read(regs),
            UsdtArgLocation::Memory(mem) => read_mem(Self::address(mem, regs)?, 8)?,
        };
        Some(self.cast(raw))
    }

    /// Lowers the argument to libbpf 1.1's `struct __bpf_usdt_arg_spec`.
    ///
    /// Errors ([`UsdtError::Inexpressible`]) for SIB operands (libbpf 1.1 has
    /// no `BPF_USDT_ARG_SIB`), unresolved symbols, a symbol plus a register,
    /// and absolute numeric addresses.
    pub fn to_spec(&self) -> Result<UsdtArgSpec, UsdtError> {
        let (arg_type, val_off, reg) = match &self.location {
            UsdtArgLocation::Const(v) => (UsdtArgType::Const, *v as u64, None),
            UsdtArgLocation::Reg(r) => (UsdtArgType::Reg, 0, Some(*r)),
            UsdtArgLocation::Memory(mem) => {
                if mem.index.is_some() {
                    return Err(inexpressible(
                        &self.text,
                        "SIB (base + index * scale) addressing needs BPF_USDT_ARG_SIB and \
                         idx_reg_off/scale_bitshift, which this usdt.bpf.h does not define",
                    ));
                }
                match (&mem.symbol, mem.base) {
                    (Some(sym), None | Some(Register::Ip)) => {
                        let Some(ip_offset) = sym.ip_offset else {
                            return Err(inexpressible(
                                &self.text,
                                format!("symbol `{}` is not in the file's symbol tables", sym.name),
                            ));
                        };
                        (
                            UsdtArgType::RegDeref,
                            ip_offset.wrapping_add(mem.disp) as u64,
                            Some(Register::Ip),
                        )
                    }
                    (Some(_), Some(_)) => {
                        return Err(inexpressible(
                            &self.text,
                            "a symbol plus a register needs two additions",
                        ))
                    }
                    (None, Some(base)) => (UsdtArgType::RegDeref, mem.disp as u64, Some(base)),
                    (None, None) => {
                        return Err(inexpressible(
                            &self.text,
                            "absolute addresses need a register",
                        ))
                    }
                }
            }
        };
        Ok(UsdtArgSpec {
            val_off,
            arg_type,
            reg_off: reg.map_or(0, |r| r.pt_regs_offset() as i16),
            arg_signed: self.signed,
            arg_bitshift: self.bitshift() as i8,
        })
    }
}

fn cast(raw: u64, bitshift: u8, signed: bool) -> u64 {
    // BPF shifts are taken modulo 64, as wrapping_sh* do.
    let shift = u32::from(bitshift);
    let v = raw.wrapping_shl(shift);
    if signed {
        (v as i64).wrapping_shr(shift) as u64
    } else {
        v.wrapping_shr(shift)
    }
}

// ---------------------------------------------------------------------------
// libbpf's spec structs

/// `enum __bpf_usdt_arg_type` of libbpf 1.1 (no `BPF_USDT_ARG_SIB`).
#[doc(alias = "__bpf_usdt_arg_type")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum UsdtArgType {
    /// `BPF_USDT_ARG_CONST`: the value is `val_off`.
    #[doc(alias = "BPF_USDT_ARG_CONST")]
    Const = 0,
    /// `BPF_USDT_ARG_REG`: the value is the register at `reg_off`.
    #[doc(alias = "BPF_USDT_ARG_REG")]
    Reg = 1,
    /// `BPF_USDT_ARG_REG_DEREF`: the value is in memory at register +
    /// `val_off`.
    #[doc(alias = "BPF_USDT_ARG_REG_DEREF")]
    RegDeref = 2,
}

/// `struct __bpf_usdt_arg_spec` of libbpf 1.1's `usdt.bpf.h`:
///
/// ```c
/// struct __bpf_usdt_arg_spec {
///     __u64 val_off;                        // 0
///     enum __bpf_usdt_arg_type arg_type;    // 8
///     short reg_off;                        // 12
///     bool arg_signed;                      // 14
///     char arg_bitshift;                    // 15
/// };                                        // 16 bytes, align 8
/// ```
#[doc(alias = "__bpf_usdt_arg_spec")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsdtArgSpec {
    /// The constant, or the offset added to the register.
    pub val_off: u64,
    /// The kind of argument.
    pub arg_type: UsdtArgType,
    /// `offsetof(struct pt_regs, reg)`.
    pub reg_off: i16,
    /// Sign-extend.
    pub arg_signed: bool,
    /// `64 - 8 * size`.
    pub arg_bitshift: i8,
}

impl UsdtArgSpec {
    /// The struct's bytes (little-endian, x86-64).
    pub fn to_bytes(&self) -> [u8; USDT_ARG_SPEC_SIZE] {
        let mut b = [0u8; USDT_ARG_SPEC_SIZE];
        b[0..8].copy_from_slice(&self.val_off.to_le_bytes());
        b[8..12].copy_from_slice(&(self.arg_type as u32).to_le_bytes());
        b[12..14].copy_from_slice(&self.reg_off.to_le_bytes());
        b[14] = u8::from(self.arg_signed);
        b[15] = self.arg_bitshift as u8;
        b
    }

    /// Reads the struct back; `None` when `b` is short or `arg_type` is not
    /// one of libbpf 1.1's kinds.
    pub fn from_bytes(b: &[u8]) -> Option<UsdtArgSpec> {
        let b: &[u8; USDT_ARG_SPEC_SIZE] = b.get(..USDT_ARG_SPEC_SIZE)?.try_into().ok()?;
        let arg_type = match u32::from_le_bytes([b[8], b[9], b[10], b[11]]) {
            0 => UsdtArgType::Const,
            1 => UsdtArgType::Reg,
            2 => UsdtArgType::RegDeref,
            _ => return None,
        };
        Some(UsdtArgSpec {
            val_off: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            arg_type,
            reg_off: i16::from_le_bytes([b[12], b[13]]),
            arg_signed: b[14] != 0,
            arg_bitshift: b[15] as i8,
        })
    }

    /// What `bpf_usdt_arg()` computes from this spec: registers are read as
    /// 8 bytes at `reg_off` in the `struct pt_regs` image, memory as 8 bytes
    /// through `read_mem(addr, 8)`. `None` where `bpf_usdt_arg()` returns an
    /// error (a failed read, `reg_off` outside `pt_regs`, an unknown kind).
    pub fn value(
        &self,
        regs: &PtRegs,
        read_mem: impl Fn(u64, usize) -> Option<u64>,
    ) -> Option<u64> {
        let reg = || -> Option<u64> {
            let off = usize::try_from(self.reg_off).ok()?;
            let bytes = regs.to_bytes();
            let end = off.checked_add(8).filter(|&e| e <= PT_REGS_SIZE)?;
            Some(u64::from_le_bytes(bytes.get(off..end)?.try_into().ok()?))
        };
        let raw = match self.arg_type {
            UsdtArgType::Const => self.val_off,
            UsdtArgType::Reg => reg()?,
            UsdtArgType::RegDeref => read_mem(reg()?.wrapping_add(self.val_off), 8)?,
        };
        Some(cast(raw, self.arg_bitshift as u8, self.arg_signed))
    }
}

/// `struct __bpf_usdt_spec` of libbpf 1.1's `usdt.bpf.h`, the value type
/// of the `__bpf_usdt_specs` map:
///
/// ```c
/// struct __bpf_usdt_spec {
///     struct __bpf_usdt_arg_spec args[12];  // 0
///     __u64 usdt_cookie;                    // 192
///     short arg_cnt;                        // 200
/// };                                        // 208 bytes
/// ```
#[doc(alias = "__bpf_usdt_spec")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsdtSpec {
    args: Vec<UsdtArgSpec>,
    /// `usdt_cookie`, what `bpf_usdt_cookie()` returns.
    pub cookie: u64,
}

impl UsdtSpec {
    /// A spec with these arguments (at most [`BPF_USDT_MAX_ARG_CNT`]).
    pub fn new(args: Vec<UsdtArgSpec>, cookie: u64) -> Result<UsdtSpec, UsdtError> {
        if args.len() > BPF_USDT_MAX_ARG_CNT {
            return Err(UsdtError::TooManyArgs { count: args.len() });
        }
        Ok(UsdtSpec { args, cookie })
    }

    /// Lowers parsed arguments ([`UsdtArg::to_spec`] for each).
    pub fn from_args(args: &[UsdtArg], cookie: u64) -> Result<UsdtSpec, UsdtError> {
        if args.len() > BPF_USDT_MAX_ARG_CNT {
            return Err(UsdtError::TooManyArgs { count: args.len() });
        }
        let args = args
            .iter()
            .map(UsdtArg::to_spec)
            .collect::<Result<_, _>>()?;
        Ok(UsdtSpec { args, cookie })
    }

    /// Lowers parsed arguments for an in-process probe
    /// ([`UsdtArg::to_spec_in_process`]): the arguments that
    /// [`need scratch`](UsdtArg::needs_scratch) get slots 0, 1, ... in
    /// order. Returns the spec and the indices (in `args`) of those
    /// arguments, slot by slot: the probe fills slot `k` with
    /// `args[indices[k]].address_at(regs)` each time it fires.
    pub fn from_args_in_process(
        args: &[UsdtArg],
        cookie: u64,
    ) -> Result<(UsdtSpec, Vec<usize>), UsdtError> {
        if args.len() > BPF_USDT_MAX_ARG_CNT {
            return Err(UsdtError::TooManyArgs { count: args.len() });
        }
        let mut scratch = Vec::new();
        let mut specs = Vec::with_capacity(args.len());
        for (i, a) in args.iter().enumerate() {
            specs.push(a.to_spec_in_process(scratch.len())?);
            if a.needs_scratch() {
                scratch.push(i);
            }
        }
        Ok((
            UsdtSpec {
                args: specs,
                cookie,
            },
            scratch,
        ))
    }

    /// The argument specs (`arg_cnt` of them).
    pub fn args(&self) -> &[UsdtArgSpec] {
        &self.args
    }

    /// The struct's [`USDT_SPEC_SIZE`] bytes, padding zeroed, ready for the
    /// `__bpf_usdt_specs` map.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; USDT_SPEC_SIZE];
        for (slot, arg) in b.chunks_exact_mut(USDT_ARG_SPEC_SIZE).zip(&self.args) {
            slot.copy_from_slice(&arg.to_bytes());
        }
        let args_end = BPF_USDT_MAX_ARG_CNT * USDT_ARG_SPEC_SIZE;
        b[args_end..args_end + 8].copy_from_slice(&self.cookie.to_le_bytes());
        // `new` keeps the count at most 12.
        let count = self.args.len() as i16;
        b[args_end + 8..args_end + 10].copy_from_slice(&count.to_le_bytes());
        b
    }

    /// Reads the struct back (`None` when short, `arg_cnt` is out of range,
    /// or an argument's kind is unknown).
    pub fn from_bytes(b: &[u8]) -> Option<UsdtSpec> {
        let args_end = BPF_USDT_MAX_ARG_CNT * USDT_ARG_SPEC_SIZE;
        let cookie = u64::from_le_bytes(b.get(args_end..args_end + 8)?.try_into().ok()?);
        let count = i16::from_le_bytes(b.get(args_end + 8..args_end + 10)?.try_into().ok()?);
        let count = usize::try_from(count)
            .ok()
            .filter(|&c| c <= BPF_USDT_MAX_ARG_CNT)?;
        let args = b
            .get(..args_end)?
            .chunks_exact(USDT_ARG_SPEC_SIZE)
            .take(count)
            .map(UsdtArgSpec::from_bytes)
            .collect::<Option<Vec<_>>>()?;
        Some(UsdtSpec { args, cookie })
    }
}

// ---------------------------------------------------------------------------
// Probes

/// One USDT probe site, as its note describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsdtProbe {
    /// The provider (`libc`, `python`...).
    pub provider: String,
    /// The probe's name.
    pub name: String,
    /// Link-time address of the probe's `nop`.
    pub pc: u64,
    /// Link-time address of `.stapsdt.base`.
    pub base: u64,
    /// Link-time address of the semaphore (`u16`), 0 if none.
    pub semaphore: u64,
    /// The parsed arguments.
    pub args: Vec<UsdtArg>,
    /// The argument string as written.
    pub args_text: String,
}

impl UsdtProbe {
    /// The address of the probe's `nop` in the file: `pc` adjusted by how
    /// far `.stapsdt.base` moved since the note was written
    /// (`stapsdt_base_addr`: [`stapsdt_base`], or
    /// [`UsdtFile::stapsdt_base`]). Add the load bias for the runtime
    /// address (see the module docs).
    pub fn file_pc(&self, stapsdt_base_addr: Option<u64>) -> u64 {
        self.adjust(self.pc, stapsdt_base_addr)
    }

    /// The semaphore's address in the file, adjusted like
    /// [`file_pc`](Self::file_pc); `None` when the probe has none.
    pub fn file_semaphore(&self, stapsdt_base_addr: Option<u64>) -> Option<u64> {
        (self.semaphore != 0).then(|| self.adjust(self.semaphore, stapsdt_base_addr))
    }

    fn adjust(&self, addr: u64, stapsdt_base_addr: Option<u64>) -> u64 {
        match stapsdt_base_addr {
            Some(actual) => addr.wrapping_add(actual.wrapping_sub(self.base)),
            None => addr,
        }
    }

    /// `provider:name`.
    pub fn full_name(&self) -> String {
        format!("{}:{}", self.provider, self.name)
    }

    /// The `struct __bpf_usdt_spec` for this probe ([`UsdtSpec::from_args`]).
    pub fn spec(&self, cookie: u64) -> Result<UsdtSpec, UsdtError> {
        UsdtSpec::from_args(&self.args, cookie)
    }

    /// The spec for a probe that runs in the traced process, and the
    /// arguments it computes into scratch slots
    /// ([`UsdtSpec::from_args_in_process`]).
    pub fn spec_in_process(&self, cookie: u64) -> Result<(UsdtSpec, Vec<usize>), UsdtError> {
        UsdtSpec::from_args_in_process(&self.args, cookie)
    }
}

/// A `PT_LOAD` segment's file mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LoadSegment {
    vaddr: u64,
    filesz: u64,
    offset: u64,
}

/// The USDT view of an ELF file: its probes and what is needed to place
/// them (see the module docs for the address arithmetic).
#[derive(Debug)]
pub struct UsdtFile {
    /// The probes whose notes parsed, in note order.
    pub probes: Vec<UsdtProbe>,
    /// Notes that did not parse ([`UsdtError::InNote`]). A truncated note
    /// ends the section's walk.
    pub skipped: Vec<UsdtError>,
    /// Address of `.stapsdt.base` in the section headers, if present.
    pub stapsdt_base: Option<u64>,
    /// `ET_DYN` (shared object, PIE): runtime address = file address + load
    /// bias. `false` for `ET_EXEC`: runtime address = file address.
    pub position_independent: bool,
    loads: Vec<LoadSegment>,
}

impl UsdtFile {
    /// Reads the notes of an ELF file. Malformed notes land in
    /// [`skipped`](Self::skipped); only an unreadable ELF file or a note
    /// section outside the file is an error.
    pub fn parse(elf_bytes: &[u8]) -> Result<UsdtFile, UsdtError> {
        let elf = Elf::parse(elf_bytes)?;
        let name_of = |sh_name: usize| elf.shdr_strtab.get_at(sh_name);
        let stapsdt_base = elf
            .section_headers
            .iter()
            .find(|s| name_of(s.sh_name) == Some(STAPSDT_BASE_SECTION))
            .map(|s| s.sh_addr);
        let loads = elf
            .program_headers
            .iter()
            .filter(|p| p.p_type == PT_LOAD)
            .map(|p| LoadSegment {
                vaddr: p.p_vaddr,
                filesz: p.p_filesz,
                offset: p.p_offset,
            })
            .collect();
        let mut file = UsdtFile {
            probes: Vec::new(),
            skipped: Vec::new(),
            stapsdt_base,
            position_independent: elf.header.e_type == goblin::elf::header::ET_DYN,
            loads,
        };
        let addr_size = if elf.is_64 { 8 } else { 4 };
        let mut index = 0;
        let mut symbols = None;
        for sh in &elf.section_headers {
            if name_of(sh.sh_name) != Some(STAPSDT_NOTE_SECTION) || sh.sh_type == SHT_NOBITS {
                continue;
            }
            let out_of_bounds = || UsdtError::SectionOutOfBounds {
                section: STAPSDT_NOTE_SECTION.to_string(),
                offset: sh.sh_offset,
                size: sh.sh_size,
            };
            let start = usize::try_from(sh.sh_offset).map_err(|_| out_of_bounds())?;
            let size = usize::try_from(sh.sh_size).map_err(|_| out_of_bounds())?;
            let data = start
                .checked_add(size)
                .and_then(|end| elf_bytes.get(start..end))
                .ok_or_else(out_of_bounds)?;
            let align = if sh.sh_addralign == 8 { 8 } else { 4 };
            for note in parse_notes(data, align, elf.little_endian, addr_size) {
                match note {
                    Ok(mut probe) => {
                        resolve_symbols(&elf, &mut symbols, &mut probe, stapsdt_base);
                        file.probes.push(probe);
                    }
                    Err(e) => file.skipped.push(e.in_note(index)),
                }
                index += 1;
            }
        }
        Ok(file)
    }

    /// The file offset of a file (link-time) virtual address, through the
    /// `PT_LOAD` program headers; `None` when no segment holds it in its
    /// file-backed part (e.g. `.bss`). This is the offset of a semaphore
    /// the kernel's `ref_ctr_offset` wants.
    pub fn vaddr_to_file_offset(&self, vaddr: u64) -> Option<u64> {
        self.loads.iter().find_map(|seg| {
            let delta = vaddr.checked_sub(seg.vaddr)?;
            (delta < seg.filesz).then(|| seg.offset.checked_add(delta))?
        })
    }

    /// The runtime address of a file address once the module is mapped
    /// with `load_bias` (ignored for `ET_EXEC`).
    pub fn runtime_address(&self, file_address: u64, load_bias: u64) -> u64 {
        if self.position_independent {
            file_address.wrapping_add(load_bias)
        } else {
            file_address
        }
    }
}

impl UsdtError {
    fn in_note(self, index: usize) -> UsdtError {
        match self {
            UsdtError::InNote { probe, source, .. } => UsdtError::InNote {
                index,
                probe,
                source,
            },
            other => UsdtError::InNote {
                index,
                probe: None,
                source: Box::new(other),
            },
        }
    }
}

/// The probes of an ELF file; an error if any note is malformed (use
/// [`UsdtFile::parse`] to keep the good ones).
pub fn probes(elf_bytes: &[u8]) -> Result<Vec<UsdtProbe>, UsdtError> {
    let mut file = UsdtFile::parse(elf_bytes)?;
    if !file.skipped.is_empty() {
        return Err(file.skipped.swap_remove(0));
    }
    Ok(file.probes)
}

/// The address of `.stapsdt.base` in an ELF file's section headers, for
/// [`UsdtProbe::file_pc`]; `None` when there is no such section.
pub fn stapsdt_base(elf_bytes: &[u8]) -> Result<Option<u64>, UsdtError> {
    Ok(UsdtFile::parse(elf_bytes)?.stapsdt_base)
}

/// The file offset of a link-time virtual address of an ELF file
/// ([`UsdtFile::vaddr_to_file_offset`]).
pub fn vaddr_to_file_offset(elf_bytes: &[u8], vaddr: u64) -> Result<Option<u64>, UsdtError> {
    Ok(UsdtFile::parse(elf_bytes)?.vaddr_to_file_offset(vaddr))
}

/// Fills in [`UsdtSymbol::ip_offset`] of the probe's symbolic operands from
/// the ELF's `.symtab`, then `.dynsym`; `table` is built on first use.
fn resolve_symbols<'a>(
    elf: &Elf<'a>,
    table: &mut Option<HashMap<&'a str, u64>>,
    probe: &mut UsdtProbe,
    stapsdt_base: Option<u64>,
) {
    let pc = probe.file_pc(stapsdt_base);
    for arg in &mut probe.args {
        let UsdtArgLocation::Memory(MemoryOperand {
            symbol: Some(sym), ..
        }) = &mut arg.location
        else {
            continue;
        };
        let table = table.get_or_insert_with(|| {
            let mut t = HashMap::new();
            for (syms, strtab) in [(&elf.dynsyms, &elf.dynstrtab), (&elf.syms, &elf.strtab)] {
                for s in syms.iter().filter(|s| s.st_shndx != 0) {
                    if let Some(name) = strtab.get_at(s.st_name) {
                        t.insert(name, s.st_value);
                    }
                }
            }
            t
        });
        sym.ip_offset = table
            .get(sym.name.as_str())
            .map(|addr| addr.wrapping_sub(pc) as i64);
    }
}

// ---------------------------------------------------------------------------
// Notes

fn read_u32(b: &[u8], little: bool) -> Option<u32> {
    let b: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(if little {
        u32::from_le_bytes(b)
    } else {
        u32::from_be_bytes(b)
    })
}

fn read_addr(b: &[u8], size: usize, little: bool) -> Option<u64> {
    if size == 4 {
        return read_u32(b, little).map(u64::from);
    }
    let b: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some(if little {
        u64::from_le_bytes(b)
    } else {
        u64::from_be_bytes(b)
    })
}

fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align).saturating_mul(align)
}

/// Parses the notes of a `.note.stapsdt` section's bytes: each `stapsdt`
/// note of type 3 yields a probe or an error; other notes are skipped. A
/// truncated note yields an error and ends the walk. `align` is the notes'
/// padding (4, or 8 for a section aligned to 8), `addr_size` 8 for ELF64 and
/// 4 for ELF32.
pub fn parse_notes(
    section: &[u8],
    align: usize,
    little_endian: bool,
    addr_size: usize,
) -> impl Iterator<Item = Result<UsdtProbe, UsdtError>> + '_ {
    let align = if align == 8 { 8u64 } else { 4u64 };
    let mut offset = 0usize;
    let mut done = false;
    std::iter::from_fn(move || loop {
        if done || offset >= section.len() {
            return None;
        }
        let rest = section.get(offset..).unwrap_or(&[]);
        let truncated = |needed: u64| UsdtError::TruncatedNote {
            offset,
            needed,
            available: rest.len(),
        };
        let header = (
            read_u32(rest, little_endian),
            rest.get(4..).and_then(|b| read_u32(b, little_endian)),
            rest.get(8..).and_then(|b| read_u32(b, little_endian)),
        );
        let (Some(namesz), Some(descsz), Some(n_type)) = header else {
            done = true;
            return Some(Err(truncated(12)));
        };
        let name_end = 12 + u64::from(namesz);
        let desc_start = align_up(name_end, align);
        let desc_end = desc_start + u64::from(descsz);
        let note_end = align_up(desc_end, align);
        let (Some(name), Some(desc)) = (
            usize::try_from(name_end).ok().and_then(|e| rest.get(12..e)),
            usize::try_from(desc_start)
                .ok()
                .zip(usize::try_from(desc_end).ok())
                .and_then(|(s, e)| rest.get(s..e)),
        ) else {
            done = true;
            return Some(Err(truncated(desc_end)));
        };
        // The last note's padding may be missing.
        offset = offset.saturating_add(usize::try_from(note_end).unwrap_or(usize::MAX));
        let owner = name.strip_suffix(&[0]).unwrap_or(name);
        if owner != STAPSDT_NOTE_OWNER.as_bytes() || n_type != NT_STAPSDT {
            continue;
        }
        return Some(parse_descriptor(desc, addr_size, little_endian));
    })
}

/// Splits a NUL-terminated string off the front of `b`.
fn take_cstr(b: &mut &[u8], field: &'static str) -> Result<String, UsdtError> {
    let nul = b
        .iter()
        .position(|&c| c == 0)
        .ok_or(UsdtError::MissingNul { field })?;
    let s = std::str::from_utf8(b.get(..nul).unwrap_or(&[]))
        .map_err(|_| UsdtError::NotUtf8 { field })?
        .to_string();
    *b = b.get(nul + 1..).unwrap_or(&[]);
    Ok(s)
}

/// Parses a `stapsdt` note's descriptor into a probe.
pub fn parse_descriptor(
    desc: &[u8],
    addr_size: usize,
    little_endian: bool,
) -> Result<UsdtProbe, UsdtError> {
    let addr_size = if addr_size == 4 { 4 } else { 8 };
    let truncated = UsdtError::TruncatedDescriptor {
        len: desc.len(),
        addr_size,
    };
    let addr = |i: usize| {
        desc.get(i * addr_size..)
            .and_then(|b| read_addr(b, addr_size, little_endian))
    };
    let (Some(pc), Some(base), Some(semaphore), Some(mut rest)) =
        (addr(0), addr(1), addr(2), desc.get(3 * addr_size..))
    else {
        return Err(truncated);
    };
    let provider = take_cstr(&mut rest, "provider")?;
    let name = take_cstr(&mut rest, "name")?;
    // Old notes may stop right after the name: no arguments.
    let args_text = if rest.is_empty() {
        String::new()
    } else {
        take_cstr(&mut rest, "arguments")?
    };
    let in_probe = |source: UsdtError| UsdtError::InNote {
        index: 0,
        probe: Some(format!("{provider}:{name}")),
        source: Box::new(source),
    };
    let args = UsdtArg::parse_list(&args_text).map_err(in_probe)?;
    Ok(UsdtProbe {
        provider,
        name,
        pc,
        base,
        semaphore,
        args,
        args_text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(text: &str) -> UsdtArg {
        match UsdtArg::parse(text) {
            Ok(a) => a,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    fn mem(
        disp: i64,
        base: Option<Register>,
        index: Option<Register>,
        scale: u8,
    ) -> UsdtArgLocation {
        UsdtArgLocation::Memory(MemoryOperand {
            disp,
            symbol: None,
            base,
            index,
            scale,
        })
    }

    #[test]
    fn grammar() {
        use Register::*;
        let cases: &[(&str, u8, bool, UsdtArgLocation)] = &[
            ("-4@%edi", 4, true, UsdtArgLocation::Reg(Di)),
            ("8@-8(%rbp)", 8, false, mem(-8, Some(Bp), None, 1)),
            ("8@$5", 8, false, UsdtArgLocation::Const(5)),
            ("4@$-1", 4, false, UsdtArgLocation::Const(-1)),
            ("-4@$0x10", 4, true, UsdtArgLocation::Const(16)),
            (
                "8@16(%rax,%rbx,8)",
                8,
                false,
                mem(16, Some(Ax), Some(Bx), 8),
            ),
            ("8@(%rax,%rbx)", 8, false, mem(0, Some(Ax), Some(Bx), 1)),
            ("8@(,%rbx,4)", 8, false, mem(0, None, Some(Bx), 4)),
            ("-8@(%rsp)", 8, true, mem(0, Some(Sp), None, 1)),
            ("8@%r12", 8, false, UsdtArgLocation::Reg(R12)),
            ("2@%ax", 2, false, UsdtArgLocation::Reg(Ax)),
            ("1@%sil", 1, false, UsdtArgLocation::Reg(Si)),
            ("-1@%r9b", 1, true, UsdtArgLocation::Reg(R9)),
            ("4@%r10d", 4, false, UsdtArgLocation::Reg(R10)),
            ("2@%r15w", 2, false, UsdtArgLocation::Reg(R15)),
            ("8@%rip", 8, false, UsdtArgLocation::Reg(Ip)),
            ("8@24(%rip)", 8, false, mem(24, Some(Ip), None, 1)),
            ("-4@112(%rsp)", 4, true, mem(112, Some(Sp), None, 1)),
            (" 8 @ -0x20( %rbp ) ", 8, false, mem(-32, Some(Bp), None, 1)),
        ];
        for (text, size, signed, loc) in cases {
            let a = arg(text);
            assert_eq!(
                (a.size, a.signed, &a.location),
                (*size, *signed, loc),
                "{text}"
            );
        }
        let sym = arg("8@counter+8(%rip)");
        let UsdtArgLocation::Memory(m) = &sym.location else {
            panic!("{sym:?}")
        };
        assert_eq!((m.disp, m.base), (8, Some(Ip)));
        assert_eq!(m.symbol.as_ref().map(|s| s.name.as_str()), Some("counter"));
        let abs = arg("-4@table-4");
        let UsdtArgLocation::Memory(m) = &abs.location else {
            panic!("{abs:?}")
        };
        assert_eq!(
            (m.disp, m.base, m.symbol.as_ref().map(|s| s.name.as_str())),
            (-4, None, Some("table"))
        );
        for (text, disp, name) in [
            ("-8@16+arr_global(%rip)", 16, "arr_global"),
            ("-8@8+sym-4(%rip)", 4, "sym"),
            ("-8@sym-0x10(%rip)", -16, "sym"),
            ("-8@.Lfoo(%rip)", 0, ".Lfoo"),
        ] {
            let a = arg(text);
            let UsdtArgLocation::Memory(m) = &a.location else {
                panic!("{a:?}")
            };
            assert_eq!(
                (m.disp, m.symbol.as_ref().map(|s| s.name.as_str())),
                (disp, Some(name)),
                "{text}"
            );
        }
        let arr = arg("8@arr(,%rax,8)");
        let UsdtArgLocation::Memory(m) = &arr.location else {
            panic!("{arr:?}")
        };
        assert_eq!((m.index, m.scale), (Some(Ax), 8));
    }

    #[test]
    fn arg_lists() {
        let list =
            UsdtArg::parse_list("8@%rdx  8@-80(%rbx) -4@16(%rax, %rbx, 8)").unwrap_or_default();
        let texts: Vec<&str> = list.iter().map(|a| a.text.as_str()).collect();
        assert_eq!(texts, ["8@%rdx", "8@-80(%rbx)", "-4@16(%rax, %rbx, 8)"]);
        assert!(matches!(UsdtArg::parse_list(""), Ok(v) if v.is_empty()));
        assert!(matches!(UsdtArg::parse_list("   "), Ok(v) if v.is_empty()));
    }

    #[test]
    fn malformed_args_are_errors() {
        for bad in [
            "",
            "@",
            "8",
            "8@",
            "3@%rax",
            "16@%rax",
            "-0@%rax",
            "x@%rax",
            "8@%",
            "8@%xmm0",
            "1@%ah",
            "1@%bh",
            "8@$",
            "8@$sym",
            "8@$1x",
            "8@(%rax",
            "8@%rax)",
            "8@()",
            "8@(%rax,%rsp,2)",
            "8@(%rax,%rbx,3)",
            "8@(%rax,%rbx,8,1)",
            "8@8(%rip,%rax,1)",
            "8@-8(%rbp))",
            "8@((%rbp))",
            "8@12",
            "8@-",
            "8@sym+",
            "8@sym*2",
            "8@1sym",
            "8@$99999999999999999999",
            "8@$-9223372036854775809",
            "@@@",
            "8@@%rax",
            "8@%rax%rbx",
            "8@-sym(%rip)",
            "8@a+b(%rip)",
            "8@8++sym(%rip)",
            "8@sym+(%rip)",
            "8@0x(%rip)",
            "8@-8(%rbp)x",
        ] {
            match UsdtArg::parse(bad) {
                Err(UsdtError::BadArg { text, .. }) => assert_eq!(text, bad),
                other => panic!("`{bad}` gave {other:?}"),
            }
        }
        let err = UsdtArg::parse("1@%ah")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("high-byte"), "{err}");
        assert!(
            matches!(UsdtArg::parse("8@$-9223372036854775808"), Ok(a) if a.location == UsdtArgLocation::Const(i64::MIN))
        );
        assert!(
            matches!(UsdtArg::parse("8@$18446744073709551615"), Ok(a) if a.location == UsdtArgLocation::Const(-1))
        );
    }

    #[test]
    fn in_process_specs_read_what_libbpf_cannot_express_from_scratch_slots() {
        let args =
            UsdtArg::parse_list("-4@%edi 8@16(%rax,%rbx,8) 8@-8(%rbp) 2@(,%rcx,2)").expect("parse");
        assert_eq!(
            args.iter().map(UsdtArg::needs_scratch).collect::<Vec<_>>(),
            vec![false, true, false, true]
        );
        let (spec, scratch) = UsdtSpec::from_args_in_process(&args, 9).expect("lowered");
        assert_eq!(scratch, vec![1, 3]);
        let base = USDT_SCRATCH_OFFSET as i16;
        let got: Vec<_> = spec
            .args()
            .iter()
            .map(|s| (s.arg_type, s.reg_off, s.val_off, s.arg_bitshift))
            .collect();
        assert_eq!(
            got,
            vec![
                (UsdtArgType::Reg, 112, 0, 32),
                (UsdtArgType::RegDeref, base, 0, 0),
                (UsdtArgType::RegDeref, 32, (-8i64) as u64, 0),
                (UsdtArgType::RegDeref, base + 8, 0, 48),
            ]
        );
        // The addresses the slots get: base + index * scale + disp.
        let regs = PtRegs {
            ax: 0x1000,
            bx: 3,
            cx: 5,
            ..PtRegs::default()
        };
        assert_eq!(args[1].address_at(&regs), Some(0x1000 + 3 * 8 + 16));
        assert_eq!(args[3].address_at(&regs), Some(10));
        assert_eq!(args[0].address_at(&regs), None, "a register has no address");
        // A symbol the file does not have stays inexpressible.
        let nosym = arg("8@nosuchsym(%rip)");
        assert!(!nosym.needs_scratch());
        assert!(matches!(
            nosym.to_spec_in_process(0),
            Err(UsdtError::Inexpressible { .. })
        ));
    }

    #[test]
    fn specs() {
        let s = arg("-4@%edi").to_spec().ok();
        assert_eq!(
            s,
            Some(UsdtArgSpec {
                val_off: 0,
                arg_type: UsdtArgType::Reg,
                reg_off: 112,
                arg_signed: true,
                arg_bitshift: 32
            })
        );
        let s = arg("8@-8(%rbp)").to_spec().ok();
        assert_eq!(
            s.map(|s| (s.arg_type, s.val_off, s.reg_off, s.arg_bitshift)),
            Some((UsdtArgType::RegDeref, (-8i64) as u64, 32, 0))
        );
        let s = arg("1@$300").to_spec().ok();
        assert_eq!(
            s.map(|s| (s.arg_type, s.val_off, s.reg_off, s.arg_bitshift)),
            Some((UsdtArgType::Const, 300, 0, 56))
        );
        for text in [
            "8@16(%rax,%rbx,8)",
            "8@sym(%rip)",
            "8@sym(%rax)",
            "8@(,%rax,8)",
        ] {
            assert!(
                matches!(arg(text).to_spec(), Err(UsdtError::Inexpressible { .. })),
                "{text}"
            );
        }
        let e = arg("8@16(%rax,%rbx,8)")
            .to_spec()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("BPF_USDT_ARG_SIB") && e.contains("usdt.bpf.h"),
            "{e}"
        );
        let mut resolved = arg("8@sym+8(%rip)");
        if let UsdtArgLocation::Memory(MemoryOperand {
            symbol: Some(sym), ..
        }) = &mut resolved.location
        {
            sym.ip_offset = Some(0x100);
        }
        assert_eq!(
            resolved
                .to_spec()
                .ok()
                .map(|s| (s.arg_type, s.reg_off, s.val_off)),
            Some((UsdtArgType::RegDeref, 128, 0x108))
        );
    }

    #[test]
    fn spec_bytes() {
        let args = UsdtArg::parse_list("-4@%edi 8@-8(%rbp) 1@$7").unwrap_or_default();
        let spec = UsdtSpec::from_args(&args, 0xdead_beef).ok();
        let bytes = spec.as_ref().map(UsdtSpec::to_bytes).unwrap_or_default();
        assert_eq!(bytes.len(), USDT_SPEC_SIZE);
        assert_eq!(
            &bytes[0..16],
            &[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 112, 0, 1, 32]
        );
        assert_eq!(
            &bytes[16..32],
            &[0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 32, 0, 0, 0]
        );
        assert_eq!(
            &bytes[32..48],
            &[7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 56]
        );
        assert!(bytes[48..192].iter().all(|&b| b == 0));
        assert_eq!(&bytes[192..200], &0xdead_beefu64.to_le_bytes());
        assert_eq!(&bytes[200..208], &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(UsdtSpec::from_bytes(&bytes), spec);
        let thirteen = vec![arg("8@$1"); 13];
        assert!(matches!(
            UsdtSpec::from_args(&thirteen, 0),
            Err(UsdtError::TooManyArgs { count: 13 })
        ));
    }

    #[test]
    fn values() {
        let regs = PtRegs {
            di: 0xffff_ffff_ffff_fffe,
            bp: 0x1000,
            ax: 0x2000,
            bx: 3,
            si: 0x1234_5680,
            ip: 0x4000,
            ..PtRegs::default()
        };
        let mem = |addr: u64, len: usize| -> Option<u64> {
            assert_eq!(len, 8);
            match addr {
                0x0ff8 => Some(0x1122_3344_5566_7788),
                0x2028 => Some(0x8000_0000_0000_00ff),
                0x4108 => Some(42),
                _ => None,
            }
        };
        let cases: &[(&str, Option<u64>)] = &[
            ("-4@%edi", Some(-2i64 as u64)),
            ("4@%edi", Some(0xffff_fffe)),
            ("8@-8(%rbp)", Some(0x1122_3344_5566_7788)),
            ("-1@-8(%rbp)", Some(-0x78i64 as u64)),
            ("8@16(%rax,%rbx,8)", Some(0x8000_0000_0000_00ff)),
            ("-1@16(%rax,%rbx,8)", Some(u64::MAX)),
            ("1@%sil", Some(0x80)),
            ("-1@%sil", Some(-0x80i64 as u64)),
            ("4@$-1", Some(0xffff_ffff)),
            ("-4@$-1", Some(u64::MAX)),
            ("8@(%rsp)", None),
            ("8@sym(%rip)", None),
        ];
        for (text, want) in cases {
            let a = arg(text);
            assert_eq!(a.value(&regs, mem), *want, "{text}");
            if let Ok(spec) = a.to_spec() {
                assert_eq!(spec.value(&regs, mem), *want, "{text} (spec)");
            }
        }
        let mut sym = arg("8@sym+8(%rip)");
        if let UsdtArgLocation::Memory(MemoryOperand {
            symbol: Some(s), ..
        }) = &mut sym.location
        {
            s.ip_offset = Some(0x100);
        }
        assert_eq!(sym.value(&regs, mem), Some(42));
        assert_eq!(
            sym.to_spec().ok().and_then(|s| s.value(&regs, mem)),
            Some(42)
        );
        let odd = UsdtArgSpec {
            val_off: 0,
            arg_type: UsdtArgType::Reg,
            reg_off: 165,
            arg_signed: false,
            arg_bitshift: 0,
        };
        assert_eq!(odd.value(&regs, mem), None);
    }

    fn note(owner: &[u8], n_type: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(owner.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&n_type.to_le_bytes());
        n.extend_from_slice(owner);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n.extend_from_slice(desc);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n
    }

    fn descriptor(pc: u64, base: u64, sem: u64, strings: &[&str]) -> Vec<u8> {
        let mut d = Vec::new();
        for v in [pc, base, sem] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        for s in strings {
            d.extend_from_slice(s.as_bytes());
            d.push(0);
        }
        d
    }

    #[test]
    fn notes() {
        let mut section = note(
            b"stapsdt\0",
            3,
            &descriptor(0x1130, 0x2004, 0, &["prov", "a", "-4@%edi 8@$5"]),
        );
        section.extend(note(b"GNU\0", 3, &[1, 2, 3, 4]));
        section.extend(note(
            b"stapsdt\0",
            3,
            &descriptor(0x1140, 0x2004, 0x4010, &["prov", "b", ""]),
        ));
        section.extend(note(
            b"stapsdt\0",
            3,
            &descriptor(0x1150, 0x2004, 0, &["prov", "c", "8@%bogus"]),
        ));
        let got: Vec<_> = parse_notes(&section, 4, true, 8).collect();
        assert_eq!(got.len(), 3);
        let a = got[0].as_ref().ok();
        assert_eq!(
            a.map(|p| (p.name.as_str(), p.pc, p.args.len())),
            Some(("a", 0x1130, 2))
        );
        assert_eq!(a.map(|p| p.file_pc(Some(0x3004))), Some(0x2130));
        let b = got[1].as_ref().ok();
        assert_eq!(
            b.map(|p| (p.file_semaphore(Some(0x2004)), p.args.len())),
            Some((Some(0x4010), 0))
        );
        assert_eq!(
            b.map(|p| p.file_semaphore(Some(0x1004))),
            Some(Some(0x3010))
        );
        match &got[2] {
            Err(UsdtError::InNote {
                probe: Some(p),
                source,
                ..
            }) => {
                assert_eq!(p, "prov:c");
                assert!(matches!(**source, UsdtError::BadArg { .. }));
            }
            other => panic!("{other:?}"),
        }
        // Missing NULs and short descriptors.
        let mut d = descriptor(1, 2, 3, &["prov", "name"]);
        d.extend_from_slice(b"8@%rax");
        assert!(matches!(
            parse_descriptor(&d, 8, true),
            Err(UsdtError::MissingNul { field: "arguments" })
        ));
        assert!(matches!(
            parse_descriptor(&d[..30], 8, true),
            Err(UsdtError::MissingNul { field: "name" })
        ));
        assert!(matches!(
            parse_descriptor(&d[..20], 8, true),
            Err(UsdtError::TruncatedDescriptor { .. })
        ));
        assert!(matches!(
            parse_descriptor(&[0xff; 30], 8, true),
            Err(UsdtError::MissingNul { field: "provider" })
        ));
        let mut bad_utf8 = descriptor(1, 2, 3, &[]);
        bad_utf8.extend_from_slice(&[0xc3, 0x28, 0]);
        assert!(matches!(
            parse_descriptor(&bad_utf8, 8, true),
            Err(UsdtError::NotUtf8 { field: "provider" })
        ));
        // ELF32 descriptors.
        let mut d32 = Vec::new();
        for v in [0x100u32, 0x200, 0x300] {
            d32.extend_from_slice(&v.to_le_bytes());
        }
        d32.extend_from_slice(b"p\0n\0-4@%eax\0");
        let p = parse_descriptor(&d32, 4, true).ok();
        assert_eq!(
            p.map(|p| (p.pc, p.base, p.semaphore, p.args.len())),
            Some((0x100, 0x200, 0x300, 1))
        );
    }

    /// A tiny xorshift generator: deterministic garbage without a crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut section = Vec::new();
        for i in 0..4u64 {
            section.extend(note(
                b"stapsdt\0",
                3,
                &descriptor(
                    0x1000 + i,
                    0x2000,
                    i,
                    &["prov", "probe", "-4@%edi 8@16(%rax,%rbx,8) 8@$5"],
                ),
            ));
        }
        // Every truncation, for both alignments and address sizes.
        for len in 0..=section.len() {
            for (align, addr) in [(4, 8), (8, 8), (4, 4)] {
                let _ = parse_notes(&section[..len], align, true, addr).count();
            }
            let whole = parse_notes(&section[..len], 4, true, 8)
                .filter(Result::is_ok)
                .count();
            // A note counts once its descriptor is in, before its padding.
            let note_len = section.len() / 4;
            assert!(
                whole == len / note_len || whole == (len + 3) / note_len,
                "{len}"
            );
        }
        // Random byte flips and random bytes.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let mut s = section.clone();
            for _ in 0..(rng.next() % 8 + 1) {
                let i = (rng.next() as usize) % s.len();
                s[i] = rng.next() as u8;
            }
            let little = rng.next().is_multiple_of(2);
            let _ = parse_notes(&s, 4, little, 8).count();
            let cut = (rng.next() as usize) % s.len();
            let _ = parse_notes(&s[cut..], 4, little, 8).count();
        }
        for _ in 0..5_000 {
            let len = (rng.next() % 96) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = parse_notes(&bytes, 4, true, 8).count();
            let _ = parse_descriptor(&bytes, 8, true);
        }
        // Random argument strings over the grammar's alphabet.
        let alphabet = b"0123456789-+@$%(),x rabcdeilpsw_.";
        for _ in 0..50_000 {
            let len = (rng.next() % 20) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[(rng.next() as usize) % alphabet.len()] as char)
                .collect();
            if let Ok(a) = UsdtArg::parse(&text) {
                let _ = a.to_spec();
                let _ = a.value(&PtRegs::default(), |_, _| Some(0));
            }
        }
        for _ in 0..5_000 {
            let bytes: Vec<u8> = (0..USDT_SPEC_SIZE).map(|_| rng.next() as u8).collect();
            if let Some(spec) = UsdtSpec::from_bytes(&bytes) {
                for a in spec.args() {
                    let _ = a.value(&PtRegs::default(), |_, _| Some(1));
                }
            }
        }
    }
}
