//! An assembler for two syntaxes, freely mixed line by line:
//!
//! * the syntax of the bpf_conformance suite's `-- asm` sections
//!   (`mov %r0, 1`, `ldxw %r2, [%r1+4]`, `jeq %r1, 5, exit`,
//!   `lock fetch add [%r10-8], %r1`, `call local func1`, ...), plus uBPF's
//!   legacy packet loads `ldabs{b,h,w} IMM` and `ldind{b,h,w} %rS, IMM`;
//! * the C-like syntax printed by [`crate::disasm`], llvm-objdump and
//!   bpftool (`r0 = 1`, `w2 = *(u32 *)(r1 + 4)`, `if r1 == 5 goto +1`,
//!   `r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)`, `call bpf_map_lookup_elem#1`,
//!   ...). Disassembler listings can be pasted as they are: a leading `NNN:`
//!   pc, a bpftool `(b7)` opcode annotation, llvm-objdump's raw byte columns
//!   and a trailing `<LBB0_2>` annotation are ignored, and llvm-objdump's
//!   symbol lines (`0000000000000028 <LBB0_2>:`) define labels.
//!
//! Comments start with `;`, `//`, or a `#` at the start of a line or after
//! whitespace (the `#` of `call bpf_map_lookup_elem#1` or `call #12` is not a
//! comment). Labels are `name:` (alone on their line or before an
//! instruction); `exit` names the first `exit` instruction unless a label of
//! that name is defined. Jump offsets and label targets count 8-byte slots
//! (`lddw` takes two).
//!
//! Immediates are decimal or hex (`0x`), optionally negative. A 32-bit
//! immediate is a decimal in the `i32` range or a hex bit pattern up to
//! `0xffffffff`; offsets written with a sign (`[%r1-8]`, `(r1 + 4)`, `+3`)
//! are signed values that must fit the field. In C-like syntax `rN = IMM`
//! is a `mov` when the value fits a sign-extended 32-bit immediate and an
//! `lddw` otherwise (or when followed by `ll`).
//!
//! Every instruction produced is checked against [`crate::isa::decode`], so
//! the assembler never emits an encoding the decoder would refuse (writes to
//! `r10`, for example, are errors).
//!
//! ```
//! use userbpf_vm::asm::assemble;
//! use userbpf_vm::disasm::disassemble;
//!
//! let a = assemble("mov %r0, 1\njeq %r1, 0, +1\nadd32 %r0, -3\nexit").unwrap();
//! let b = assemble("r0 = 1\nif r1 == 0 goto +1\nw0 += -3\nexit").unwrap();
//! assert_eq!(a, b);
//! assert_eq!(assemble(&disassemble(&a).unwrap()).unwrap(), a);
//! ```

use std::collections::HashMap;
use std::fmt;

use crate::helper_names::helper_id;
use crate::insn::Insn;
use crate::isa::{
    decode, encode_all, AluOp, AtomicOp, CallTarget, EndianOp, Instruction, JmpCond, Lddw, MemSize,
    PacketMode, Reg, Source, Width,
};

/// An assembly error, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}: `{text}`")]
pub struct AsmError {
    /// 1-based line number.
    pub line: usize,
    /// The source line (without surrounding whitespace).
    pub text: String,
    /// What is wrong.
    pub message: String,
}

/// Assembles a program into instruction slots.
pub fn assemble(text: &str) -> Result<Vec<Insn>, AsmError> {
    Ok(encode_all(&assemble_instructions(text)?))
}

/// Assembles a program into instructions (an `lddw` is one instruction of
/// two slots).
pub fn assemble_instructions(text: &str) -> Result<Vec<Instruction>, AsmError> {
    let mut labels: HashMap<String, usize> = HashMap::new();
    let mut first_exit = None;
    let mut items = Vec::new();
    let mut pc = 0usize;
    for (index, raw) in text.lines().enumerate() {
        let line = index.saturating_add(1);
        let err = |message: String| AsmError {
            line,
            text: raw.trim().to_string(),
            message,
        };
        let cleaned = clean_line(raw).map_err(err)?;
        if let Some(label) = cleaned.label {
            if labels.insert(label.to_string(), pc).is_some() {
                return Err(err(format!("duplicate label `{label}`")));
            }
        }
        if cleaned.body.is_empty() {
            continue;
        }
        let parsed = parse_statement(cleaned.body, cleaned.force_lddw).map_err(err)?;
        if parsed.insn == Instruction::Exit && first_exit.is_none() {
            first_exit = Some(pc);
        }
        let next = pc.saturating_add(parsed.insn.slots());
        items.push((line, raw, pc, parsed));
        pc = next;
    }

    let mut out = Vec::with_capacity(items.len());
    for (line, raw, pc, parsed) in items {
        let err = |message: String| AsmError {
            line,
            text: raw.trim().to_string(),
            message,
        };
        let mut insn = parsed.insn;
        if let Some(label) = parsed.label {
            let target = labels
                .get(&label)
                .copied()
                .or(if label == "exit" { first_exit } else { None })
                .ok_or_else(|| err(format!("undefined label `{label}`")))?;
            let rel = relative(pc, target)
                .ok_or_else(|| err(format!("label `{label}` is out of range")))?;
            set_relative(&mut insn, rel).map_err(err)?;
        }
        validate(&insn).map_err(err)?;
        out.push(insn);
    }
    Ok(out)
}

/// `target - pc - 1`, the relative offset of a jump at `pc`.
fn relative(pc: usize, target: usize) -> Option<i64> {
    let pc = i64::try_from(pc).ok()?;
    let target = i64::try_from(target).ok()?;
    target.checked_sub(pc)?.checked_sub(1)
}

type Res<T> = Result<T, String>;

/// An instruction parsed from one line, with the label its relative offset
/// still has to be resolved against.
#[derive(Debug)]
struct Parsed {
    insn: Instruction,
    label: Option<String>,
}

impl From<Instruction> for Parsed {
    fn from(insn: Instruction) -> Parsed {
        Parsed { insn, label: None }
    }
}

/// A jump or call target.
#[derive(Debug)]
enum Target {
    /// `+N` / `-N` / `pc+N`: relative, in slots.
    Rel(i128),
    /// A label.
    Label(String),
}

/// `insn` (a jump or local call with a zero offset) aimed at `target`.
fn with_target(mut insn: Instruction, target: Target) -> Res<Parsed> {
    match target {
        Target::Rel(rel) => {
            let rel =
                i64::try_from(rel).map_err(|_| format!("jump offset {rel} is out of range"))?;
            set_relative(&mut insn, rel)?;
            Ok(insn.into())
        }
        Target::Label(label) => Ok(Parsed {
            insn,
            label: Some(label),
        }),
    }
}

fn set_relative(insn: &mut Instruction, rel: i64) -> Res<()> {
    match insn {
        Instruction::Ja { off } | Instruction::Jump { off, .. } => {
            *off = i16::try_from(rel)
                .map_err(|_| format!("jump offset {rel} is out of 16-bit range"))?;
        }
        Instruction::JaLong { imm } | Instruction::Call(CallTarget::Local(imm)) => {
            *imm = i32::try_from(rel)
                .map_err(|_| format!("jump offset {rel} is out of 32-bit range"))?;
        }
        _ => return Err("internal error: a label on an instruction without a target".into()),
    }
    Ok(())
}

/// Checks that `insn` encodes to slots the decoder accepts as `insn`.
fn validate(insn: &Instruction) -> Res<()> {
    match decode(&insn.encode(), 0) {
        Ok(decoded) if decoded == *insn => Ok(()),
        Ok(_) => Err("instruction cannot be encoded".into()),
        Err(e) => Err(e.kind.to_string()),
    }
}

// ---------------------------------------------------------------------------
// Lines: comments, disassembler decorations, labels.
// ---------------------------------------------------------------------------

/// One source line with decorations and comments removed.
#[derive(Debug)]
struct Line<'a> {
    label: Option<&'a str>,
    body: &'a str,
    /// bpftool annotated the line with opcode `(18)`: `rN = IMM` is an lddw.
    force_lddw: bool,
}

fn clean_line(raw: &str) -> Res<Line<'_>> {
    let s = strip_comment(raw).trim();
    if let Some(label) = objdump_symbol(s) {
        return Ok(Line {
            label: Some(label),
            body: "",
            force_lddw: false,
        });
    }
    let s = strip_pc(s);
    let (s, opcode) = strip_opcode_annotation(s);
    let s = strip_trailing_annotation(strip_raw_bytes(s));
    let (label, body) = split_label(s)?;
    Ok(Line {
        label,
        body,
        force_lddw: opcode == Some(0x18),
    })
}

fn strip_comment(line: &str) -> &str {
    for (i, c) in line.char_indices() {
        let before = &line[..i];
        let comment = match c {
            ';' => true,
            '/' => line[i..].starts_with("//"),
            '#' => {
                let after_space = before.chars().next_back().is_none_or(char::is_whitespace);
                after_space && !is_call_hash(before, &line[i + 1..])
            }
            _ => false,
        };
        if comment {
            return before;
        }
    }
    line
}

/// `call #12` / `call #-1`: the `#` introduces a helper id, not a comment.
fn is_call_hash(before: &str, after: &str) -> bool {
    let digits = after.strip_prefix('-').unwrap_or(after);
    before.split_whitespace().next_back() == Some("call")
        && digits.starts_with(|c: char| c.is_ascii_digit())
}

/// llvm-objdump's symbol lines, `0000000000000028 <LBB0_2>:`, define labels.
fn objdump_symbol(s: &str) -> Option<&str> {
    let (addr, rest) = s.split_once(char::is_whitespace)?;
    if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let name = rest.trim().strip_prefix('<')?.strip_suffix(">:")?;
    is_label(name).then_some(name)
}

/// Removes a leading `NNN:` pc.
fn strip_pc(s: &str) -> &str {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    match s[digits..].strip_prefix(':') {
        Some(rest) if digits > 0 => rest.trim_start(),
        _ => s,
    }
}

/// Removes bpftool's `(b7)` opcode annotation, returning the opcode.
fn strip_opcode_annotation(s: &str) -> (&str, Option<u8>) {
    let hex = s
        .get(1..3)
        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    match (s.get(..1), hex, s.get(3..4)) {
        (Some("("), Some(h), Some(")")) => (s[4..].trim_start(), u8::from_str_radix(h, 16).ok()),
        _ => (s, None),
    }
}

/// Removes llvm-objdump's raw bytes: a run of 8 (or 16, for lddw) two-digit
/// hex groups.
fn strip_raw_bytes(s: &str) -> &str {
    let mut rest = s;
    let mut count = 0;
    let mut after_eight = s;
    loop {
        let trimmed = rest.trim_start();
        let group = trimmed
            .get(..2)
            .filter(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
        let ends = trimmed
            .get(2..3)
            .is_none_or(|c| c.starts_with(char::is_whitespace));
        if group.is_none() || !ends {
            break;
        }
        rest = &trimmed[2..];
        count += 1;
        if count == 8 {
            after_eight = rest;
        }
        if count == 16 {
            return rest.trim_start();
        }
    }
    if count >= 8 {
        after_eight.trim_start()
    } else {
        s
    }
}

/// Removes llvm-objdump's trailing `<LBB0_2>` target annotation.
fn strip_trailing_annotation(s: &str) -> &str {
    let Some(pos) = s.rfind(char::is_whitespace) else {
        return s;
    };
    let last = s[pos..].trim_start();
    let inner = last.strip_prefix('<').and_then(|l| l.strip_suffix('>'));
    match inner {
        Some(name) if !name.is_empty() && !name.starts_with(['<', '=']) => s[..pos].trim_end(),
        _ => s,
    }
}

/// Splits a leading `label:` off the line.
fn split_label(s: &str) -> Res<(Option<&str>, &str)> {
    let (first, rest) = split_word(s);
    match first.strip_suffix(':') {
        Some(name) if is_label(name) => Ok((Some(name), rest.trim_start())),
        Some(name) => Err(format!("invalid label name `{name}`")),
        None => Ok((None, s)),
    }
}

fn split_word(s: &str) -> (&str, &str) {
    s.split_once(char::is_whitespace).unwrap_or((s, ""))
}

/// Label names: a letter, `_` or `.`, then letters, digits, `_` and `.`.
fn is_label(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '.')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

// ---------------------------------------------------------------------------
// Numbers and registers (shared by both syntaxes).
// ---------------------------------------------------------------------------

/// `[+-]?(0x<hex>|<decimal>)`.
struct Number {
    negative: bool,
    magnitude: u64,
    hex: bool,
}

fn parse_number(s: &str) -> Res<Number> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (hex, digits) = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(d) => (true, d),
        None => (false, body),
    };
    let radix = if hex { 16 } else { 10 };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(format!("invalid number `{s}`"));
    }
    let magnitude = u64::from_str_radix(digits, radix)
        .map_err(|_| format!("number `{s}` is out of 64-bit range"))?;
    Ok(Number {
        negative,
        magnitude,
        hex,
    })
}

/// A signed value (offsets, jump targets).
fn signed(s: &str) -> Res<i128> {
    let n = parse_number(s)?;
    let m = i128::from(n.magnitude);
    Ok(if n.negative { -m } else { m })
}

/// A 32-bit immediate: decimal in the `i32` range, or hex up to
/// `0xffffffff` (a bit pattern), or a negative number down to `-2^31`.
fn imm32(s: &str) -> Res<i32> {
    let n = parse_number(s)?;
    let out_of_range = || format!("immediate `{s}` is out of 32-bit range");
    if n.negative {
        i32::try_from(-i128::from(n.magnitude)).map_err(|_| out_of_range())
    } else if n.hex {
        u32::try_from(n.magnitude)
            .map(|v| i32::from_ne_bytes(v.to_ne_bytes()))
            .map_err(|_| out_of_range())
    } else {
        i32::try_from(n.magnitude).map_err(|_| out_of_range())
    }
}

/// A 64-bit immediate: any `u64`, or a negative `i64`.
fn imm64(s: &str) -> Res<u64> {
    let n = parse_number(s)?;
    if n.negative {
        i64::try_from(-i128::from(n.magnitude))
            .map(|v| u64::from_ne_bytes(v.to_ne_bytes()))
            .map_err(|_| format!("immediate `{s}` is out of 64-bit range"))
    } else {
        Ok(n.magnitude)
    }
}

/// A signed 16-bit offset.
fn off16(s: &str) -> Res<i16> {
    i16::try_from(signed(s)?).map_err(|_| format!("offset `{s}` is out of 16-bit range"))
}

/// A signed 32-bit value written with an explicit sign (`pc+N`, `skb[r1 - 5]`).
fn rel32(s: &str) -> Res<i32> {
    i32::try_from(signed(s)?).map_err(|_| format!("offset `{s}` is out of 32-bit range"))
}

/// An unsigned 32-bit value (map value offsets).
fn uimm32(s: &str) -> Res<u32> {
    let n = parse_number(s)?;
    match u32::try_from(n.magnitude) {
        Ok(v) if !n.negative => Ok(v),
        _ => Err(format!("`{s}` is not an unsigned 32-bit value")),
    }
}

/// `r0`..`r10` / `w0`..`w10`; `None` if `w` does not look like a register,
/// an error if it does but the number is above 10.
fn reg_word(w: &str) -> Option<Res<(Width, Reg)>> {
    let width = match w.as_bytes().first()? {
        b'r' => Width::W64,
        b'w' => Width::W32,
        _ => return None,
    };
    let digits = &w[1..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        digits
            .parse::<u8>()
            .ok()
            .and_then(Reg::new)
            .map(|r| (width, r))
            .ok_or_else(|| format!("invalid register `{w}`")),
    )
}

/// A register the instruction writes: `r10` is read-only.
fn writable(r: Reg) -> Res<Reg> {
    if r == Reg::R10 {
        Err("r10 is the read-only frame pointer and cannot be written".into())
    } else {
        Ok(r)
    }
}

fn jump_target(s: &str) -> Res<Target> {
    let s = s.trim();
    let rel = s.strip_prefix("pc").filter(|r| r.starts_with(['+', '-']));
    let rel = rel.or(s.starts_with(['+', '-']).then_some(s));
    match rel {
        Some(r) => Ok(Target::Rel(signed(r)?)),
        None if is_label(s) => Ok(Target::Label(s.to_string())),
        None => Err(format!(
            "invalid jump target `{s}` (expected +N, -N or a label)"
        )),
    }
}

fn atomic(
    size: MemSize,
    op: AtomicOp,
    fetch: bool,
    dst: Reg,
    src: Reg,
    off: i16,
) -> Res<Instruction> {
    let fetch = fetch || op.always_fetches();
    if !matches!(size, MemSize::W | MemSize::DW) {
        return Err("atomic operations are 32 or 64 bits wide".into());
    }
    if fetch && op != AtomicOp::CmpXchg {
        writable(src)?;
    }
    Ok(Instruction::Atomic {
        size,
        op,
        fetch,
        dst,
        src,
        off,
    })
}

// ---------------------------------------------------------------------------
// Statements.
// ---------------------------------------------------------------------------

/// Words that start C-like statements.
const C_KEYWORDS: [&str; 5] = ["if", "goto", "gotol", "callx", "lock"];

fn parse_statement(s: &str, force_lddw: bool) -> Res<Parsed> {
    let (word, rest) = split_word(s);
    match word {
        "exit" if rest.trim().is_empty() => Ok(Instruction::Exit.into()),
        "exit" => Err("invalid number of operands for `exit`: expected 0".into()),
        "call" => parse_call(rest),
        "lock" if !rest.trim_start().starts_with('*') => parse_lock(rest),
        _ => {
            if let Some(m) = conformance_mnemonic(word) {
                return parse_conformance(m, word, rest);
            }
            let end = s
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(s.len());
            let ident = &s[..end];
            if !ident.is_empty() && !C_KEYWORDS.contains(&ident) && reg_word(ident).is_none() {
                return Err(format!("invalid mnemonic `{ident}`"));
            }
            parse_c(s, force_lddw)
        }
    }
}

/// `call` in both syntaxes.
fn parse_call(rest: &str) -> Res<Parsed> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Err("invalid number of operands for `call`: expected 1 or 2, found 0".into());
    }
    let (mode, arg) = split_word(rest);
    let arg = arg.trim();
    let insn = match mode {
        "helper" if arg.starts_with('%') => Instruction::CallX { reg: creg(arg)? },
        "helper" if !arg.is_empty() => Instruction::Call(CallTarget::Helper(imm32(arg)?)),
        "local" if !arg.is_empty() => {
            return with_target(Instruction::Call(CallTarget::Local(0)), jump_target(arg)?)
        }
        "runtime" if !arg.is_empty() => Instruction::Call(CallTarget::Kfunc {
            btf_id: imm32(arg)?,
            btf_idx: 0,
        }),
        _ => call_operand(&rest.split_whitespace().collect::<String>())?,
    };
    Ok(insn.into())
}

/// The single operand of a `call`: `%r2`/`r2` (callx), `5`, `#5`,
/// `bpf_map_lookup_elem#1`, `bpf_map_lookup_elem`, `pc+5`,
/// `kfunc#1234[btf_idx:2]`.
fn call_operand(s: &str) -> Res<Instruction> {
    if s.starts_with('%') {
        return Ok(Instruction::CallX { reg: creg(s)? });
    }
    if let Some(r) = reg_word(s) {
        return Ok(Instruction::CallX { reg: r?.1 });
    }
    if let Some(rel) = s.strip_prefix("pc").filter(|r| r.starts_with(['+', '-'])) {
        return Ok(Instruction::Call(CallTarget::Local(rel32(rel)?)));
    }
    if s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
        return Ok(Instruction::Call(CallTarget::Helper(imm32(s)?)));
    }
    if let Some((name, id)) = s.split_once('#') {
        if name == "kfunc" {
            let (id, btf_idx) = match id.split_once('[') {
                Some((id, idx)) => {
                    let idx = idx
                        .strip_prefix("btf_idx:")
                        .and_then(|i| i.strip_suffix(']'))
                        .ok_or_else(|| format!("invalid kfunc call `{s}`"))?;
                    let idx = i16::try_from(signed(idx)?)
                        .map_err(|_| format!("btf_idx `{idx}` is out of 16-bit range"))?;
                    (id, idx)
                }
                None => (id, 0),
            };
            return Ok(Instruction::Call(CallTarget::Kfunc {
                btf_id: imm32(id)?,
                btf_idx,
            }));
        }
        if name.is_empty() || is_label(name) {
            return Ok(Instruction::Call(CallTarget::Helper(imm32(id)?)));
        }
    } else if is_label(s) {
        return helper_id(s)
            .map(|id| Instruction::Call(CallTarget::Helper(id)))
            .ok_or_else(|| format!("unknown helper `{s}`"));
    }
    Err(format!("invalid call target `{s}`"))
}

// ---------------------------------------------------------------------------
// The bpf_conformance syntax.
// ---------------------------------------------------------------------------

/// A bpf_conformance mnemonic (other than `exit`, `call` and `lock`).
#[derive(Debug, Clone, Copy)]
enum Mnemonic {
    Alu(AluOp, Width),
    Neg(Width),
    Endian(EndianOp, u8),
    MovSx(u8, Width),
    Ldx(MemSize),
    Ldxs(MemSize),
    St(MemSize),
    Stx(MemSize),
    Lddw,
    Ja,
    Ja32,
    Jmp(JmpCond, Width),
    LdAbs(MemSize),
    LdInd(MemSize),
}

fn size_suffix(s: &str) -> Option<MemSize> {
    MemSize::ALL.into_iter().find(|z| z.suffix() == s)
}

/// A mnemonic taking a size suffix: prefix, constructor, whether the `dw`
/// size exists.
type SizedMnemonic = (&'static str, fn(MemSize) -> Mnemonic, bool);

fn conformance_mnemonic(m: &str) -> Option<Mnemonic> {
    for (prefix, op) in [
        ("le", EndianOp::ToLe),
        ("be", EndianOp::ToBe),
        ("swap", EndianOp::Swap),
        ("bswap", EndianOp::Swap),
    ] {
        match m.strip_prefix(prefix) {
            Some("16") => return Some(Mnemonic::Endian(op, 16)),
            Some("32") => return Some(Mnemonic::Endian(op, 32)),
            Some("64") => return Some(Mnemonic::Endian(op, 64)),
            _ => {}
        }
    }
    if let Some(rest) = m.strip_prefix("movsx") {
        return match rest {
            "832" => Some(Mnemonic::MovSx(8, Width::W32)),
            "864" => Some(Mnemonic::MovSx(8, Width::W64)),
            "1632" => Some(Mnemonic::MovSx(16, Width::W32)),
            "1664" => Some(Mnemonic::MovSx(16, Width::W64)),
            "3264" => Some(Mnemonic::MovSx(32, Width::W64)),
            _ => None,
        };
    }
    let sized: [SizedMnemonic; 6] = [
        ("ldxs", Mnemonic::Ldxs, false),
        ("ldx", Mnemonic::Ldx, true),
        ("stx", Mnemonic::Stx, true),
        ("st", Mnemonic::St, true),
        ("ldabs", Mnemonic::LdAbs, false),
        ("ldind", Mnemonic::LdInd, false),
    ];
    for (prefix, make, has_dw) in sized {
        let size = m
            .strip_prefix(prefix)
            .and_then(size_suffix)
            .filter(|&z| has_dw || z != MemSize::DW);
        if let Some(size) = size {
            return Some(make(size));
        }
    }
    match m {
        "lddw" => return Some(Mnemonic::Lddw),
        "ja" => return Some(Mnemonic::Ja),
        "ja32" => return Some(Mnemonic::Ja32),
        _ => {}
    }
    let (base, width, suffix64) = match (m.strip_suffix("32"), m.strip_suffix("64")) {
        (Some(b), _) => (b, Width::W32, false),
        (_, Some(b)) => (b, Width::W64, true),
        _ => (m, Width::W64, false),
    };
    if let Some(op) = AluOp::ALL.into_iter().find(|o| o.mnemonic() == base) {
        return Some(Mnemonic::Alu(op, width));
    }
    if base == "neg" {
        return Some(Mnemonic::Neg(width));
    }
    JmpCond::ALL
        .into_iter()
        .find(|c| c.mnemonic() == base && !suffix64)
        .map(|c| Mnemonic::Jmp(c, width))
}

/// Splits operands on commas and whitespace (whitespace inside `[...]` is
/// dropped). An empty operand between commas is an error.
fn split_operands(rest: &str) -> Res<Vec<String>> {
    let rest = rest.trim();
    let mut out = Vec::new();
    if rest.is_empty() {
        return Ok(out);
    }
    for field in rest.split(',') {
        let field = field.trim();
        if field.is_empty() {
            return Err("empty operand (stray `,`)".into());
        }
        let mut current = String::new();
        let mut in_brackets = false;
        for c in field.chars() {
            match c {
                '[' => {
                    in_brackets = true;
                    current.push(c);
                }
                ']' => {
                    in_brackets = false;
                    current.push(c);
                }
                c if c.is_whitespace() => {
                    if !in_brackets && !current.is_empty() {
                        out.push(std::mem::take(&mut current));
                    }
                }
                c => current.push(c),
            }
        }
        if !current.is_empty() {
            out.push(current);
        }
    }
    Ok(out)
}

/// Exactly `N` operands.
fn operands<'o, const N: usize>(ops: &'o [String], word: &str) -> Res<[&'o str; N]> {
    let arr: &[String; N] = ops.try_into().map_err(|_| {
        format!(
            "invalid number of operands for `{word}`: expected {N}, found {}",
            ops.len()
        )
    })?;
    Ok(arr.each_ref().map(String::as_str))
}

/// `%r0`..`%r10`.
fn creg(s: &str) -> Res<Reg> {
    match s.strip_prefix('%').and_then(reg_word) {
        Some(Ok((Width::W64, r))) => Ok(r),
        _ => Err(format!("invalid register `{s}`")),
    }
}

/// A register or a 32-bit immediate.
fn csrc(s: &str) -> Res<Source> {
    if s.starts_with('%') {
        Ok(Source::Reg(creg(s)?))
    } else {
        Ok(Source::Imm(imm32(s)?))
    }
}

/// `[%rN+off]`, `[%rN-off]`, `[%rN]`.
fn cmem(s: &str) -> Res<(Reg, i16)> {
    let inner = s
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| format!("expected a memory operand `[%rN+offset]`, found `{s}`"))?;
    let inner: String = inner.split_whitespace().collect();
    match inner.find(['+', '-']) {
        Some(p) => Ok((creg(&inner[..p])?, off16(&inner[p..])?)),
        None => Ok((creg(&inner)?, 0)),
    }
}

fn parse_conformance(m: Mnemonic, word: &str, rest: &str) -> Res<Parsed> {
    let ops = split_operands(rest)?;
    let insn = match m {
        Mnemonic::Alu(op, width) => {
            let [dst, src] = operands(&ops, word)?;
            Instruction::Alu {
                width,
                op,
                dst: writable(creg(dst)?)?,
                src: csrc(src)?,
            }
        }
        Mnemonic::Neg(width) => {
            let [dst] = operands(&ops, word)?;
            Instruction::Neg {
                width,
                dst: writable(creg(dst)?)?,
            }
        }
        Mnemonic::Endian(op, bits) => {
            let [dst] = operands(&ops, word)?;
            Instruction::Endian {
                op,
                dst: writable(creg(dst)?)?,
                bits,
            }
        }
        Mnemonic::MovSx(bits, width) => {
            let [dst, src] = operands(&ops, word)?;
            Instruction::MovSx {
                width,
                dst: writable(creg(dst)?)?,
                src: creg(src)?,
                bits,
            }
        }
        Mnemonic::Ldx(size) | Mnemonic::Ldxs(size) => {
            let [dst, mem] = operands(&ops, word)?;
            let dst = writable(creg(dst)?)?;
            let (src, off) = cmem(mem)?;
            if matches!(m, Mnemonic::Ldxs(_)) {
                Instruction::LoadSx {
                    size,
                    dst,
                    src,
                    off,
                }
            } else {
                Instruction::Load {
                    size,
                    dst,
                    src,
                    off,
                }
            }
        }
        Mnemonic::St(size) | Mnemonic::Stx(size) => {
            let [mem, value] = operands(&ops, word)?;
            let (dst, off) = cmem(mem)?;
            let src = if matches!(m, Mnemonic::Stx(_)) {
                Source::Reg(creg(value)?)
            } else {
                Source::Imm(imm32(value)?)
            };
            Instruction::Store {
                size,
                dst,
                off,
                src,
            }
        }
        Mnemonic::Lddw => {
            let [dst, value] = operands(&ops, word)?;
            Instruction::LoadImm64 {
                dst: writable(creg(dst)?)?,
                value: Lddw::Imm(imm64(value)?),
            }
        }
        Mnemonic::Ja => {
            let [target] = operands(&ops, word)?;
            return with_target(Instruction::Ja { off: 0 }, jump_target(target)?);
        }
        Mnemonic::Ja32 => {
            let [target] = operands(&ops, word)?;
            return with_target(Instruction::JaLong { imm: 0 }, jump_target(target)?);
        }
        Mnemonic::Jmp(cond, width) => {
            let [dst, src, target] = operands(&ops, word)?;
            let insn = Instruction::Jump {
                width,
                cond,
                dst: creg(dst)?,
                src: csrc(src)?,
                off: 0,
            };
            return with_target(insn, jump_target(target)?);
        }
        Mnemonic::LdAbs(size) => {
            let [imm] = operands(&ops, word)?;
            Instruction::LoadPacket {
                size,
                mode: PacketMode::Abs,
                imm: imm32(imm)?,
            }
        }
        Mnemonic::LdInd(size) => {
            let [src, imm] = operands(&ops, word)?;
            Instruction::LoadPacket {
                size,
                mode: PacketMode::Ind(creg(src)?),
                imm: imm32(imm)?,
            }
        }
    };
    Ok(insn.into())
}

/// `lock [fetch] op[32] [%rD+off], %rS`.
fn parse_lock(rest: &str) -> Res<Parsed> {
    const COUNT: &str = "Invalid number of operands for lock";
    let mut ops = split_operands(rest)?;
    let fetch = ops.first().is_some_and(|o| o == "fetch");
    if fetch {
        ops.remove(0);
    }
    let [name, mem, src] = ops.as_slice() else {
        return Err(COUNT.into());
    };
    let (base, size) = match (name.strip_suffix("32"), name.strip_suffix("64")) {
        (Some(b), _) => (b, MemSize::W),
        (_, Some(b)) => (b, MemSize::DW),
        _ => (name.as_str(), MemSize::DW),
    };
    let op = AtomicOp::ALL
        .into_iter()
        .find(|o| o.mnemonic() == base)
        .ok_or_else(|| format!("invalid atomic operation `{name}`"))?;
    let (dst, off) = cmem(mem)?;
    Ok(atomic(size, op, fetch, dst, creg(src)?, off)?.into())
}

// ---------------------------------------------------------------------------
// The C-like syntax.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok<'a> {
    /// Identifiers: registers, names, keywords (`r1`, `bpf_x`, `goto`, `s`).
    Word(&'a str),
    /// Numbers without sign (`5`, `0x1f`).
    Num(&'a str),
    /// Operators and punctuation.
    Sym(&'static str),
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(s) | Tok::Num(s) => f.write_str(s),
            Tok::Sym(s) => f.write_str(s),
        }
    }
}

/// Longest first.
const SYMBOLS: [&str; 28] = [
    "<<=", ">>=", "+=", "-=", "*=", "/=", "%=", "|=", "&=", "^=", "==", "!=", "<=", ">=", "=", "<",
    ">", "&", "*", "(", ")", "[", "]", "+", "-", ":", "#", ",",
];

fn lex(s: &str) -> Res<Vec<Tok<'_>>> {
    let mut toks = Vec::new();
    let mut rest = s.trim_start();
    while let Some(c) = rest.chars().next() {
        let word_end = |ok: fn(char) -> bool| rest.find(|c: char| !ok(c)).unwrap_or(rest.len());
        let len = if c.is_ascii_alphabetic() || c == '_' || c == '.' {
            let n = word_end(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            toks.push(Tok::Word(&rest[..n]));
            n
        } else if c.is_ascii_digit() {
            let n = word_end(|c| c.is_ascii_alphanumeric() || c == '_');
            toks.push(Tok::Num(&rest[..n]));
            n
        } else if let Some(sym) = SYMBOLS.iter().find(|sym| rest.starts_with(**sym)) {
            toks.push(Tok::Sym(sym));
            sym.len()
        } else {
            return Err(format!("unexpected character `{c}`"));
        };
        rest = rest[len..].trim_start();
    }
    Ok(toks)
}

struct Parser<'a> {
    toks: Vec<Tok<'a>>,
    pos: usize,
}

fn width_letter(w: Width) -> char {
    match w {
        Width::W32 => 'w',
        Width::W64 => 'r',
    }
}

fn same_width(a: Width, b: Width) -> Res<()> {
    if a == b {
        Ok(())
    } else {
        Err("mixed 32-bit (w) and 64-bit (r) registers".into())
    }
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Tok<'a>> {
        self.toks.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<Tok<'a>> {
        self.toks.get(self.pos.saturating_add(ahead)).copied()
    }

    fn bump(&mut self) -> Option<Tok<'a>> {
        let t = self.peek();
        if t.is_some() {
            self.pos = self.pos.saturating_add(1);
        }
        t
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(t) => format!("`{t}`"),
            None => "end of line".into(),
        }
    }

    fn eat(&mut self, sym: &str) -> bool {
        let hit = matches!(self.peek(), Some(Tok::Sym(s)) if s == sym);
        if hit {
            self.bump();
        }
        hit
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let hit = self.peek() == Some(Tok::Word(word));
        if hit {
            self.bump();
        }
        hit
    }

    fn expect(&mut self, sym: &str) -> Res<()> {
        if self.eat(sym) {
            Ok(())
        } else {
            Err(format!("expected `{sym}`, found {}", self.found()))
        }
    }

    fn expect_word(&mut self, word: &str) -> Res<()> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(format!("expected `{word}`, found {}", self.found()))
        }
    }

    fn finish(&self) -> Res<()> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(format!("unexpected `{t}` after the instruction")),
        }
    }

    fn is_reg_next(&self) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if reg_word(w).is_some())
    }

    fn reg(&mut self) -> Res<(Width, Reg)> {
        if let Some(Tok::Word(w)) = self.peek() {
            if let Some(r) = reg_word(w) {
                self.bump();
                return r;
            }
        }
        Err(format!("expected a register, found {}", self.found()))
    }

    /// A register that must be written with `r`.
    fn reg64(&mut self) -> Res<Reg> {
        match self.reg()? {
            (Width::W64, r) => Ok(r),
            (Width::W32, r) => Err(format!("expected r{}, found w{}", r.num(), r.num())),
        }
    }

    /// An optionally signed number, as text (`-0x10`).
    fn number(&mut self) -> Res<String> {
        let sign = if self.eat("-") {
            "-"
        } else if self.eat("+") {
            "+"
        } else {
            ""
        };
        match self.peek() {
            Some(Tok::Num(n)) => {
                self.bump();
                Ok(format!("{sign}{n}"))
            }
            _ => Err(format!("expected a number, found {}", self.found())),
        }
    }

    /// A register of width `width` or a 32-bit immediate.
    fn operand(&mut self, width: Width) -> Res<Source> {
        if self.is_reg_next() {
            let (w, r) = self.reg()?;
            same_width(width, w)?;
            Ok(Source::Reg(r))
        } else {
            Ok(Source::Imm(imm32(&self.number()?)?))
        }
    }

    fn target(&mut self) -> Res<Target> {
        let pc_rel = self.peek() == Some(Tok::Word("pc"))
            && matches!(self.peek_at(1), Some(Tok::Sym("+" | "-")));
        if pc_rel {
            self.bump();
        }
        match self.peek() {
            Some(Tok::Sym("+" | "-")) => Ok(Target::Rel(signed(&self.number()?)?)),
            Some(Tok::Word(w)) if is_label(w) => {
                self.bump();
                Ok(Target::Label(w.to_string()))
            }
            _ => Err(format!(
                "expected a jump target (+N, -N or a label), found {}",
                self.found()
            )),
        }
    }

    /// `(u32 *)` / `(s16 *)`: (signed, size).
    fn mem_type(&mut self) -> Res<(bool, MemSize)> {
        self.expect("(")?;
        let ty = match self.bump() {
            Some(Tok::Word(w)) => w,
            _ => return Err("expected a type such as `u32`".into()),
        };
        let parsed = match ty {
            "u8" => (false, MemSize::B),
            "u16" => (false, MemSize::H),
            "u32" => (false, MemSize::W),
            "u64" => (false, MemSize::DW),
            "s8" => (true, MemSize::B),
            "s16" => (true, MemSize::H),
            "s32" => (true, MemSize::W),
            "s64" => (true, MemSize::DW),
            other => return Err(format!("invalid type `{other}`")),
        };
        self.expect("*")?;
        self.expect(")")?;
        Ok(parsed)
    }

    fn unsigned_type(&mut self) -> Res<MemSize> {
        match self.mem_type()? {
            (false, size) => Ok(size),
            (true, _) => Err("only loads can be sign-extending".into()),
        }
    }

    /// `r1 + 4`, `r10 -8`, `r1`.
    fn addr_inner(&mut self) -> Res<(Reg, i16)> {
        let base = self.reg64()?;
        let off = if matches!(self.peek(), Some(Tok::Sym("+" | "-"))) {
            off16(&self.number()?)?
        } else {
            0
        };
        Ok((base, off))
    }

    /// `(r1 + 4)`.
    fn addr(&mut self) -> Res<(Reg, i16)> {
        self.expect("(")?;
        let a = self.addr_inner()?;
        self.expect(")")?;
        Ok(a)
    }

    /// A register holding a value of an atomic of `size` (`w` only for 32 bits).
    fn atomic_reg(&mut self, size: MemSize) -> Res<Reg> {
        match self.reg()? {
            (Width::W32, _) if size == MemSize::DW => {
                Err("64-bit atomic operations use r registers".into())
            }
            (_, r) => Ok(r),
        }
    }

    fn statement(&mut self, force_lddw: bool) -> Res<Parsed> {
        match self.bump() {
            Some(Tok::Word("if")) => self.cond_jump(),
            Some(Tok::Word("goto")) => with_target(Instruction::Ja { off: 0 }, self.target()?),
            Some(Tok::Word("gotol")) => with_target(Instruction::JaLong { imm: 0 }, self.target()?),
            Some(Tok::Word("callx")) => Ok(Instruction::CallX { reg: self.reg()?.1 }.into()),
            Some(Tok::Word("lock")) => self.lock().map(Parsed::from),
            Some(Tok::Sym("*")) => self.store().map(Parsed::from),
            Some(Tok::Word(w)) => match reg_word(w) {
                Some(dst) => self.assign(dst?, force_lddw).map(Parsed::from),
                None => Err(format!("invalid mnemonic `{w}`")),
            },
            Some(t) => Err(format!("unexpected `{t}`")),
            None => Err("empty instruction".into()),
        }
    }

    /// `if r1 s> 5 goto +3` (after `if`).
    fn cond_jump(&mut self) -> Res<Parsed> {
        let (width, dst) = self.reg()?;
        let signed =
            self.peek() == Some(Tok::Word("s")) && matches!(self.peek_at(1), Some(Tok::Sym(_)));
        if signed {
            self.bump();
        }
        let op = match self.bump() {
            Some(Tok::Sym(s)) => s,
            _ => return Err("expected a comparison operator".into()),
        };
        let op = if signed { format!("s{op}") } else { op.into() };
        let cond = JmpCond::ALL
            .into_iter()
            .find(|c| c.operator() == op)
            .ok_or_else(|| format!("invalid comparison `{op}`"))?;
        let src = self.operand(width)?;
        self.expect_word("goto")?;
        let insn = Instruction::Jump {
            width,
            cond,
            dst,
            src,
            off: 0,
        };
        with_target(insn, self.target()?)
    }

    /// `lock *(u64 *)(r1 + 0) += r2` (after `lock`).
    fn lock(&mut self) -> Res<Instruction> {
        self.expect("*")?;
        let size = self.unsigned_type()?;
        let (dst, off) = self.addr()?;
        let op = match self.bump() {
            Some(Tok::Sym("+=")) => AtomicOp::Add,
            Some(Tok::Sym("|=")) => AtomicOp::Or,
            Some(Tok::Sym("&=")) => AtomicOp::And,
            Some(Tok::Sym("^=")) => AtomicOp::Xor,
            _ => return Err("expected `+=`, `|=`, `&=` or `^=`".into()),
        };
        let src = self.atomic_reg(size)?;
        atomic(size, op, false, dst, src, off)
    }

    /// `*(u32 *)(r10 - 8) = r1` (after `*`).
    fn store(&mut self) -> Res<Instruction> {
        let size = self.unsigned_type()?;
        let (dst, off) = self.addr()?;
        self.expect("=")?;
        let src = if self.is_reg_next() {
            match self.reg()? {
                (Width::W32, _) if size == MemSize::DW => {
                    return Err("a 64-bit store takes an r register".into())
                }
                (_, r) => Source::Reg(r),
            }
        } else {
            Source::Imm(imm32(&self.number()?)?)
        };
        Ok(Instruction::Store {
            size,
            dst,
            off,
            src,
        })
    }

    /// `dst op= src` / `dst = ...` (after the destination register).
    fn assign(&mut self, (width, dst): (Width, Reg), force_lddw: bool) -> Res<Instruction> {
        let signed =
            self.peek() == Some(Tok::Word("s")) && matches!(self.peek_at(1), Some(Tok::Sym(_)));
        if signed {
            self.bump();
        }
        let op = match (self.bump(), signed) {
            (Some(Tok::Sym("=")), false) => return self.rhs(width, dst, force_lddw),
            (Some(Tok::Sym("+=")), false) => AluOp::Add,
            (Some(Tok::Sym("-=")), false) => AluOp::Sub,
            (Some(Tok::Sym("*=")), false) => AluOp::Mul,
            (Some(Tok::Sym("/=")), false) => AluOp::Div,
            (Some(Tok::Sym("/=")), true) => AluOp::SDiv,
            (Some(Tok::Sym("%=")), false) => AluOp::Mod,
            (Some(Tok::Sym("%=")), true) => AluOp::SMod,
            (Some(Tok::Sym("|=")), false) => AluOp::Or,
            (Some(Tok::Sym("&=")), false) => AluOp::And,
            (Some(Tok::Sym("<<=")), false) => AluOp::Lsh,
            (Some(Tok::Sym(">>=")), false) => AluOp::Rsh,
            (Some(Tok::Sym(">>=")), true) => AluOp::Arsh,
            (Some(Tok::Sym("^=")), false) => AluOp::Xor,
            _ => return Err("expected an assignment operator".into()),
        };
        let src = self.operand(width)?;
        Ok(Instruction::Alu {
            width,
            op,
            dst: writable(dst)?,
            src,
        })
    }

    /// The right-hand side of `dst = ...`.
    fn rhs(&mut self, width: Width, dst: Reg, force_lddw: bool) -> Res<Instruction> {
        match self.peek() {
            Some(Tok::Sym("-")) if matches!(self.peek_at(1), Some(Tok::Word(_))) => {
                self.bump();
                let (w, r) = self.reg()?;
                same_width(width, w)?;
                if r != dst {
                    return Err(format!(
                        "negation works in place: write `{0}{1} = -{0}{1}`",
                        width_letter(width),
                        dst.num()
                    ));
                }
                Ok(Instruction::Neg {
                    width,
                    dst: writable(dst)?,
                })
            }
            Some(Tok::Sym("-" | "+") | Tok::Num(_)) => self.constant(width, dst, force_lddw),
            Some(Tok::Sym("(")) => self.movsx(width, dst),
            Some(Tok::Sym("*")) => {
                self.bump();
                self.load(width, dst)
            }
            Some(Tok::Word(w)) if reg_word(w).is_some() => {
                let (w, src) = self.reg()?;
                same_width(width, w)?;
                Ok(Instruction::Alu {
                    width,
                    op: AluOp::Mov,
                    dst: writable(dst)?,
                    src: Source::Reg(src),
                })
            }
            Some(Tok::Word(w)) => {
                self.bump();
                if let Some((op, bits)) = endian_word(w) {
                    let (_, r) = self.reg()?;
                    if r != dst {
                        return Err(format!(
                            "`{w}` works in place: write `r{0} = {w} r{0}`",
                            dst.num()
                        ));
                    }
                    return Ok(Instruction::Endian {
                        op,
                        dst: writable(dst)?,
                        bits,
                    });
                }
                let value = match w {
                    "map" => self.map()?,
                    "var" => self.var()?,
                    "func" => self.func()?,
                    _ => return self.atomic_call(w, width, dst),
                };
                if width == Width::W32 {
                    return Err("lddw loads into an r register".into());
                }
                Ok(Instruction::LoadImm64 {
                    dst: writable(dst)?,
                    value,
                })
            }
            _ => Err(format!("unexpected {} after `=`", self.found())),
        }
    }

    /// `r0 = 5`, `w0 = -1`, `r1 = 0x1122334455667788 ll`.
    fn constant(&mut self, width: Width, dst: Reg, force_lddw: bool) -> Res<Instruction> {
        let text = self.number()?;
        let ll = self.eat_word("ll");
        if !ll && !force_lddw {
            let imm = match width {
                Width::W32 => Some(imm32(&text)?),
                Width::W64 => i32::try_from(signed(&text)?).ok(),
            };
            if let Some(imm) = imm {
                return Ok(Instruction::Alu {
                    width,
                    op: AluOp::Mov,
                    dst: writable(dst)?,
                    src: Source::Imm(imm),
                });
            }
        }
        if width == Width::W32 {
            return Err("lddw loads into an r register".into());
        }
        Ok(Instruction::LoadImm64 {
            dst: writable(dst)?,
            value: Lddw::Imm(imm64(&text)?),
        })
    }

    /// `(s8)r1` (at `(`).
    fn movsx(&mut self, width: Width, dst: Reg) -> Res<Instruction> {
        self.expect("(")?;
        let bits = match self.bump() {
            Some(Tok::Word("s8")) => 8,
            Some(Tok::Word("s16")) => 16,
            Some(Tok::Word("s32")) if width == Width::W64 => 32,
            _ => {
                return Err(match width {
                    Width::W32 => "expected `(s8)` or `(s16)`".into(),
                    Width::W64 => "expected `(s8)`, `(s16)` or `(s32)`".into(),
                })
            }
        };
        self.expect(")")?;
        let (w, src) = self.reg()?;
        same_width(width, w)?;
        Ok(Instruction::MovSx {
            width,
            dst: writable(dst)?,
            src,
            bits,
        })
    }

    /// `*(u32 *)(r1 + 4)`, `*(s8 *)(r1 + 0)`, `*(u8 *)skb[...]` (after `*`).
    fn load(&mut self, width: Width, dst: Reg) -> Res<Instruction> {
        let (sign_extend, size) = self.mem_type()?;
        if self.eat_word("skb") {
            return self.packet(width, dst, sign_extend, size);
        }
        let (src, off) = self.addr()?;
        let dst = writable(dst)?;
        if sign_extend {
            if width == Width::W32 {
                return Err("sign-extending loads write an r register".into());
            }
            if size == MemSize::DW {
                return Err("there is no sign-extending 64-bit load".into());
            }
            return Ok(Instruction::LoadSx {
                size,
                dst,
                src,
                off,
            });
        }
        if width == Width::W32 && size == MemSize::DW {
            return Err("a 64-bit load writes an r register".into());
        }
        Ok(Instruction::Load {
            size,
            dst,
            src,
            off,
        })
    }

    /// `skb[5]`, `skb[r1 + 5]` (after `skb`).
    fn packet(
        &mut self,
        width: Width,
        dst: Reg,
        sign_extend: bool,
        size: MemSize,
    ) -> Res<Instruction> {
        if width != Width::W64 || dst != Reg::R0 {
            return Err("legacy packet loads write r0".into());
        }
        if sign_extend || size == MemSize::DW {
            return Err("legacy packet loads are u8, u16 or u32".into());
        }
        self.expect("[")?;
        let (mode, imm) = if self.is_reg_next() {
            let r = self.reg64()?;
            let imm = if matches!(self.peek(), Some(Tok::Sym("+" | "-"))) {
                rel32(&self.number()?)?
            } else {
                0
            };
            (PacketMode::Ind(r), imm)
        } else {
            (PacketMode::Abs, imm32(&self.number()?)?)
        };
        self.expect("]")?;
        Ok(Instruction::LoadPacket { size, mode, imm })
    }

    /// `[fd:3]`, `[fd:3][0]+16`, `[idx:2]`, `[idx:2][0]+16` (after `map`).
    fn map(&mut self) -> Res<Lddw> {
        self.expect("[")?;
        let by_fd = match self.bump() {
            Some(Tok::Word("fd")) => true,
            Some(Tok::Word("idx")) => false,
            _ => return Err("expected `map[fd:N]` or `map[idx:N]`".into()),
        };
        self.expect(":")?;
        let n = imm32(&self.number()?)?;
        self.expect("]")?;
        if !self.eat("[") {
            return Ok(if by_fd {
                Lddw::MapFd(n)
            } else {
                Lddw::MapIdx(n)
            });
        }
        if self.bump() != Some(Tok::Num("0")) {
            return Err("expected `[0]` (map values are addressed as `map[fd:N][0]+OFF`)".into());
        }
        self.expect("]")?;
        self.expect("+")?;
        let off = match self.bump() {
            Some(Tok::Num(n)) => uimm32(n)?,
            _ => return Err("expected the value offset".into()),
        };
        Ok(if by_fd {
            Lddw::MapValue { fd: n, off }
        } else {
            Lddw::MapIdxValue { idx: n, off }
        })
    }

    /// `[btf_id:5]`, `[btf_id:5][btf_fd:7]` (after `var`).
    fn var(&mut self) -> Res<Lddw> {
        self.expect("[")?;
        self.expect_word("btf_id")?;
        self.expect(":")?;
        let btf_id = imm32(&self.number()?)?;
        self.expect("]")?;
        let mut btf_fd = 0;
        if self.eat("[") {
            self.expect_word("btf_fd")?;
            self.expect(":")?;
            btf_fd = imm32(&self.number()?)?;
            self.expect("]")?;
        }
        Ok(Lddw::BtfVar { btf_id, btf_fd })
    }

    /// `[pc+5]` (after `func`).
    fn func(&mut self) -> Res<Lddw> {
        self.expect("[")?;
        self.expect_word("pc")?;
        if !matches!(self.peek(), Some(Tok::Sym("+" | "-"))) {
            return Err("expected `func[pc+N]`".into());
        }
        let rel = rel32(&self.number()?)?;
        self.expect("]")?;
        Ok(Lddw::Func(rel))
    }

    /// The fetching atomics, written as function calls:
    /// `r2 = atomic_fetch_add((u64 *)(r1 + 0), r2)`,
    /// `r2 = atomic64_xchg((u64 *)(r1 +0), r2)`, `w2 = xchg32_32(r1 + 0, w2)`,
    /// `r0 = cmpxchg_64(r1 + 0, r0, r2)`, ... (after the function name).
    fn atomic_call(&mut self, name: &str, width: Width, dst: Reg) -> Res<Instruction> {
        let unknown = || format!("unrecognized expression `{name}`");
        // (operation, size fixed by the name, typed `(uNN *)(addr)` argument)
        let (op, fixed, typed) = match name {
            "xchg_64" => (AtomicOp::Xchg, Some(MemSize::DW), false),
            "xchg32_32" => (AtomicOp::Xchg, Some(MemSize::W), false),
            "cmpxchg_64" => (AtomicOp::CmpXchg, Some(MemSize::DW), false),
            "cmpxchg32_32" => (AtomicOp::CmpXchg, Some(MemSize::W), false),
            _ => {
                let (rest, fixed) = match name.strip_prefix("atomic64_") {
                    Some(rest) => (rest, Some(MemSize::DW)),
                    None => (name.strip_prefix("atomic_").ok_or_else(unknown)?, None),
                };
                let op = match rest {
                    "fetch_add" => AtomicOp::Add,
                    "fetch_or" => AtomicOp::Or,
                    "fetch_and" => AtomicOp::And,
                    "fetch_xor" => AtomicOp::Xor,
                    "xchg" => AtomicOp::Xchg,
                    "cmpxchg" => AtomicOp::CmpXchg,
                    _ => return Err(unknown()),
                };
                (op, fixed, true)
            }
        };
        self.expect("(")?;
        let (size, (base, off)) = if typed {
            let size = self.unsigned_type()?;
            (size, self.addr()?)
        } else {
            (fixed.unwrap_or(MemSize::DW), self.addr_inner()?)
        };
        if fixed.is_some_and(|f| f != size) || !matches!(size, MemSize::W | MemSize::DW) {
            return Err(format!("invalid access size for `{name}`"));
        }
        if width == Width::W32 && size == MemSize::DW {
            return Err("64-bit atomic operations use r registers".into());
        }
        self.expect(",")?;
        if op == AtomicOp::CmpXchg {
            let expected = self.atomic_reg(size)?;
            if dst != Reg::R0 || expected != Reg::R0 {
                return Err("cmpxchg compares with and returns r0".into());
            }
            self.expect(",")?;
        }
        let src = self.atomic_reg(size)?;
        self.expect(")")?;
        if op != AtomicOp::CmpXchg && src != dst {
            return Err(format!(
                "`{name}` returns the old value in its source register: write `r{0} = {name}(..., r{0})`",
                src.num()
            ));
        }
        atomic(size, op, true, base, src, off)
    }
}

/// `le16`, `be32`, `bswap64`, ...
fn endian_word(w: &str) -> Option<(EndianOp, u8)> {
    let (op, bits) = if let Some(b) = w.strip_prefix("bswap") {
        (EndianOp::Swap, b)
    } else if let Some(b) = w.strip_prefix("le") {
        (EndianOp::ToLe, b)
    } else {
        (EndianOp::ToBe, w.strip_prefix("be")?)
    };
    match bits {
        "16" => Some((op, 16)),
        "32" => Some((op, 32)),
        "64" => Some((op, 64)),
        _ => None,
    }
}

fn parse_c(s: &str, force_lddw: bool) -> Res<Parsed> {
    let mut p = Parser {
        toks: lex(s)?,
        pos: 0,
    };
    let parsed = p.statement(force_lddw)?;
    p.finish()?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disasm::disassemble;

    fn r(n: u8) -> Reg {
        Reg::new(n).expect("valid register")
    }

    /// Assembles one instruction.
    fn one(text: &str) -> Instruction {
        match assemble_instructions(text) {
            Ok(v) if v.len() == 1 => v[0],
            other => panic!("`{text}`: {other:?}"),
        }
    }

    /// The error message for `text`.
    fn error(text: &str) -> AsmError {
        match assemble(text) {
            Err(e) => e,
            Ok(v) => panic!("`{text}` assembled to {v:?}"),
        }
    }

    fn assert_error(text: &str, needle: &str) {
        let e = error(text);
        assert!(
            e.message.contains(needle),
            "`{text}`: message `{}` does not mention `{needle}`",
            e.message
        );
    }

    fn alu(width: Width, op: AluOp, dst: u8, src: Source) -> Instruction {
        Instruction::Alu {
            width,
            op,
            dst: r(dst),
            src,
        }
    }

    #[test]
    fn conformance_alu() {
        use AluOp::*;
        use Width::*;
        assert_eq!(one("mov %r0, 1"), alu(W64, Mov, 0, Source::Imm(1)));
        assert_eq!(one("mov64 %r0, %r1"), alu(W64, Mov, 0, Source::Reg(r(1))));
        assert_eq!(one("add32 %r0, -3"), alu(W32, Add, 0, Source::Imm(-3)));
        assert_eq!(one("sdiv32 %r2, %r3"), alu(W32, SDiv, 2, Source::Reg(r(3))));
        assert_eq!(one("smod %r2, 7"), alu(W64, SMod, 2, Source::Imm(7)));
        assert_eq!(one("arsh %r0, 4"), alu(W64, Arsh, 0, Source::Imm(4)));
        assert_eq!(one("xor32 %r9, %r10"), alu(W32, Xor, 9, Source::Reg(r(10))));
        assert_eq!(
            one("mov32 %r0, 0xffffffff"),
            alu(W32, Mov, 0, Source::Imm(-1))
        );
        assert_eq!(one("mov %r0, -0x10"), alu(W64, Mov, 0, Source::Imm(-16)));
        assert_eq!(
            one("mov %r0, -2147483648"),
            alu(W64, Mov, 0, Source::Imm(i32::MIN))
        );
        assert_eq!(
            one("neg32 %r1"),
            Instruction::Neg {
                width: W32,
                dst: r(1)
            }
        );
        assert_eq!(
            one("neg %r1"),
            Instruction::Neg {
                width: W64,
                dst: r(1)
            }
        );
        for (text, op, bits) in [
            ("be16 %r0", EndianOp::ToBe, 16),
            ("le32 %r0", EndianOp::ToLe, 32),
            ("swap64 %r0", EndianOp::Swap, 64),
            ("bswap16 %r0", EndianOp::Swap, 16),
        ] {
            assert_eq!(
                one(text),
                Instruction::Endian {
                    op,
                    dst: r(0),
                    bits
                },
                "{text}"
            );
        }
        for (text, width, bits) in [
            ("movsx864 %r0, %r1", W64, 8),
            ("movsx832 %r0, %r1", W32, 8),
            ("movsx1664 %r0, %r1", W64, 16),
            ("movsx1632 %r0, %r1", W32, 16),
            ("movsx3264 %r0, %r1", W64, 32),
        ] {
            assert_eq!(
                one(text),
                Instruction::MovSx {
                    width,
                    dst: r(0),
                    src: r(1),
                    bits
                },
                "{text}"
            );
        }
    }

    #[test]
    fn conformance_memory() {
        assert_eq!(
            one("ldxw %r2, [%r1+4]"),
            Instruction::Load {
                size: MemSize::W,
                dst: r(2),
                src: r(1),
                off: 4
            }
        );
        assert_eq!(
            one("ldxdw %r0, [%r10-8]"),
            Instruction::Load {
                size: MemSize::DW,
                dst: r(0),
                src: r(10),
                off: -8
            }
        );
        assert_eq!(
            one("ldxb %r0, [%r1]"),
            Instruction::Load {
                size: MemSize::B,
                dst: r(0),
                src: r(1),
                off: 0
            }
        );
        assert_eq!(
            one("ldxh %r0, [%r1+0x10]"),
            Instruction::Load {
                size: MemSize::H,
                dst: r(0),
                src: r(1),
                off: 16
            }
        );
        assert_eq!(
            one("ldxsh %r0, [%r10 - 2]"),
            Instruction::LoadSx {
                size: MemSize::H,
                dst: r(0),
                src: r(10),
                off: -2
            }
        );
        assert_eq!(
            one("stw [%r10-4], 0x80000001"),
            Instruction::Store {
                size: MemSize::W,
                dst: r(10),
                off: -4,
                src: Source::Imm(i32::MIN + 1)
            }
        );
        assert_eq!(
            one("stxdw [%r10-8], %r1"),
            Instruction::Store {
                size: MemSize::DW,
                dst: r(10),
                off: -8,
                src: Source::Reg(r(1))
            }
        );
        assert_eq!(
            one("lddw %r0, 0x10000000c"),
            Instruction::LoadImm64 {
                dst: r(0),
                value: Lddw::Imm(0x1_0000_000c)
            }
        );
        assert_eq!(
            one("lddw %r1, -1"),
            Instruction::LoadImm64 {
                dst: r(1),
                value: Lddw::Imm(u64::MAX)
            }
        );
        assert_eq!(
            one("lddw %r1, 18446744073709551615"),
            Instruction::LoadImm64 {
                dst: r(1),
                value: Lddw::Imm(u64::MAX)
            }
        );
        assert_eq!(
            one("ldabsh 12"),
            Instruction::LoadPacket {
                size: MemSize::H,
                mode: PacketMode::Abs,
                imm: 12
            }
        );
        assert_eq!(
            one("ldindb %r1, -4"),
            Instruction::LoadPacket {
                size: MemSize::B,
                mode: PacketMode::Ind(r(1)),
                imm: -4
            }
        );
    }

    #[test]
    fn conformance_atomics() {
        let at = |size, op, fetch, src| Instruction::Atomic {
            size,
            op,
            fetch,
            dst: r(10),
            src: r(src),
            off: -8,
        };
        use AtomicOp::*;
        use MemSize::{DW, W};
        assert_eq!(one("lock add [%r10-8], %r1"), at(DW, Add, false, 1));
        assert_eq!(one("lock add32 [%r10-8], %r1"), at(W, Add, false, 1));
        assert_eq!(one("lock fetch add [%r10-8], %r1"), at(DW, Add, true, 1));
        assert_eq!(one("lock or [%r10-8], %r1"), at(DW, Or, false, 1));
        assert_eq!(one("lock fetch and32 [%r10-8], %r3"), at(W, And, true, 3));
        assert_eq!(one("lock fetch xor [%r10-8], %r3"), at(DW, Xor, true, 3));
        assert_eq!(one("lock xchg [%r10-8], %r1"), at(DW, Xchg, true, 1));
        assert_eq!(one("lock xchg32 [%r10-8], %r1"), at(W, Xchg, true, 1));
        assert_eq!(one("lock cmpxchg [%r10-8], %r1 "), at(DW, CmpXchg, true, 1));
        assert_eq!(one("lock cmpxchg32 [%r10-8], %r1"), at(W, CmpXchg, true, 1));
        assert_eq!(
            one("lock add32 [%r1], %r2"),
            Instruction::Atomic {
                size: W,
                op: Add,
                fetch: false,
                dst: r(1),
                src: r(2),
                off: 0
            }
        );
    }

    #[test]
    fn conformance_jumps_labels_and_calls() {
        let program = "\
            mov %r0, 0\n\
            lddw %r1, 0x1122334455667788\n\
            loop:\n\
            jeq %r1, 5, done\n\
            jsgt32 %r1, %r2, loop\n\
            ja +1\n\
            ja -3\n\
            ja32 done\n\
            done:\n\
            call local func\n\
            exit\n\
            func:\n\
            call 5\n\
            call helper 0x10000\n\
            call %r2\n\
            call helper %r3\n\
            call runtime 77\n\
            exit";
        let got = assemble_instructions(program).expect("assembles");
        let jump = |width, cond, src, off| Instruction::Jump {
            width,
            cond,
            dst: r(1),
            src,
            off,
        };
        // pcs: mov 0, lddw 1-2, jeq 3, jsgt32 4, ja 5, ja 6, ja32 7, call 8, exit 9, call 10...
        assert_eq!(got[2], jump(Width::W64, JmpCond::Eq, Source::Imm(5), 4));
        assert_eq!(
            got[3],
            jump(Width::W32, JmpCond::SGt, Source::Reg(r(2)), -2)
        );
        assert_eq!(got[4], Instruction::Ja { off: 1 });
        assert_eq!(got[5], Instruction::Ja { off: -3 });
        assert_eq!(got[6], Instruction::JaLong { imm: 0 });
        assert_eq!(got[7], Instruction::Call(CallTarget::Local(1)));
        assert_eq!(got[9], Instruction::Call(CallTarget::Helper(5)));
        assert_eq!(got[10], Instruction::Call(CallTarget::Helper(0x10000)));
        assert_eq!(got[11], Instruction::CallX { reg: r(2) });
        assert_eq!(got[12], Instruction::CallX { reg: r(3) });
        assert_eq!(
            got[13],
            Instruction::Call(CallTarget::Kfunc {
                btf_id: 77,
                btf_idx: 0
            })
        );
    }

    #[test]
    fn exit_label_is_the_first_exit_unless_defined() {
        let got = assemble_instructions("jeq %r1, 0xb, exit\nmov %r0, 1\nexit\nexit").unwrap();
        assert_eq!(
            got[0],
            Instruction::Jump {
                width: Width::W64,
                cond: JmpCond::Eq,
                dst: r(1),
                src: Source::Imm(11),
                off: 1
            }
        );
        let got = assemble_instructions("ja exit\nexit\nexit:\nexit").unwrap();
        assert_eq!(got[0], Instruction::Ja { off: 1 });
    }

    #[test]
    fn c_like_alu() {
        use AluOp::*;
        use Width::*;
        assert_eq!(one("r0 += 1"), alu(W64, Add, 0, Source::Imm(1)));
        assert_eq!(one("w0 -= w1"), alu(W32, Sub, 0, Source::Reg(r(1))));
        assert_eq!(one("r0 s/= r1"), alu(W64, SDiv, 0, Source::Reg(r(1))));
        assert_eq!(one("r0 s%= -3"), alu(W64, SMod, 0, Source::Imm(-3)));
        assert_eq!(one("r0 s>>= 3"), alu(W64, Arsh, 0, Source::Imm(3)));
        assert_eq!(one("r0 <<= 0x3"), alu(W64, Lsh, 0, Source::Imm(3)));
        assert_eq!(one("w0 = w1"), alu(W32, Mov, 0, Source::Reg(r(1))));
        assert_eq!(one("r0 = -1"), alu(W64, Mov, 0, Source::Imm(-1)));
        assert_eq!(one("w0 = 0xffffffff"), alu(W32, Mov, 0, Source::Imm(-1)));
        assert_eq!(
            one("r0 = (s16)r1"),
            Instruction::MovSx {
                width: W64,
                dst: r(0),
                src: r(1),
                bits: 16
            }
        );
        assert_eq!(
            one("w0 = -w0"),
            Instruction::Neg {
                width: W32,
                dst: r(0)
            }
        );
        assert_eq!(
            one("r3 = bswap32 r3"),
            Instruction::Endian {
                op: EndianOp::Swap,
                dst: r(3),
                bits: 32
            }
        );
    }

    #[test]
    fn c_like_constants_pick_mov_or_lddw() {
        let lddw = |dst, v| Instruction::LoadImm64 {
            dst: r(dst),
            value: Lddw::Imm(v),
        };
        assert_eq!(
            one("r1 = 0x1122334455667788 ll"),
            lddw(1, 0x1122334455667788)
        );
        assert_eq!(one("r1 = 0x1122334455667788"), lddw(1, 0x1122334455667788));
        assert_eq!(one("r0 = 0x1 ll"), lddw(0, 1));
        assert_eq!(one("r0 = 1 ll"), lddw(0, 1));
        assert_eq!(one("r0 = -1 ll"), lddw(0, u64::MAX));
        // 0xffffffff does not fit a sign-extended 32-bit immediate.
        assert_eq!(one("r0 = 0xffffffff"), lddw(0, 0xffff_ffff));
        assert_eq!(one("r0 = 4294967298 ll"), lddw(0, 0x1_0000_0002));
        // bpftool's opcode annotation says lddw.
        assert_eq!(one("   7: (18) r1 = 0x5"), lddw(1, 5));
        assert_eq!(
            one("r0 = 0x1"),
            alu(Width::W64, AluOp::Mov, 0, Source::Imm(1))
        );
    }

    #[test]
    fn c_like_memory_and_atomics() {
        assert_eq!(
            one("w0 = *(u32 *)(r1 + 4)"),
            Instruction::Load {
                size: MemSize::W,
                dst: r(0),
                src: r(1),
                off: 4
            }
        );
        assert_eq!(
            one("r0 = *(u8 *)(r10 -8)"),
            Instruction::Load {
                size: MemSize::B,
                dst: r(0),
                src: r(10),
                off: -8
            }
        );
        assert_eq!(
            one("r0 = *(u64 *)(r1)"),
            Instruction::Load {
                size: MemSize::DW,
                dst: r(0),
                src: r(1),
                off: 0
            }
        );
        assert_eq!(
            one("*(u32 *)(r10 - 8) = w1"),
            Instruction::Store {
                size: MemSize::W,
                dst: r(10),
                off: -8,
                src: Source::Reg(r(1))
            }
        );
        let at = |size, op, fetch, src| Instruction::Atomic {
            size,
            op,
            fetch,
            dst: r(1),
            src: r(src),
            off: 0,
        };
        use AtomicOp::*;
        use MemSize::{DW, W};
        assert_eq!(one("lock *(u64 *)(r1 + 0) |= r2"), at(DW, Or, false, 2));
        assert_eq!(one("lock *(u32 *)(r1 +0) += r2"), at(W, Add, false, 2));
        assert_eq!(
            one("r2 = atomic64_fetch_add((u64 *)(r1 +0), r2)"),
            at(DW, Add, true, 2)
        );
        assert_eq!(
            one("w2 = atomic_fetch_xor((u32 *)(r1 + 0), w2)"),
            at(W, Xor, true, 2)
        );
        assert_eq!(
            one("r2 = atomic64_xchg((u64 *)(r1 +0), r2)"),
            at(DW, Xchg, true, 2)
        );
        assert_eq!(
            one("r0 = atomic64_cmpxchg((u64 *)(r1 +0), r0, r2)"),
            at(DW, CmpXchg, true, 2)
        );
        assert_eq!(
            one("r0 = atomic_cmpxchg((u32 *)(r1 +0), r0, r2)"),
            at(W, CmpXchg, true, 2)
        );
        assert_eq!(one("w2 = xchg32_32(r1 + 0, w2)"), at(W, Xchg, true, 2));
        assert_eq!(
            one("w0 = cmpxchg32_32(r1 + 0, w0, w2)"),
            at(W, CmpXchg, true, 2)
        );
    }

    #[test]
    fn c_like_lddw_variants_and_packets() {
        let l = |value| Instruction::LoadImm64 { dst: r(1), value };
        assert_eq!(one("r1 = map[fd:3]"), l(Lddw::MapFd(3)));
        assert_eq!(
            one("r1 = map[fd:3][0]+16"),
            l(Lddw::MapValue { fd: 3, off: 16 })
        );
        assert_eq!(one("r1 = map[idx:2]"), l(Lddw::MapIdx(2)));
        assert_eq!(
            one("r1 = map[idx:2][0]+16"),
            l(Lddw::MapIdxValue { idx: 2, off: 16 })
        );
        assert_eq!(
            one("r1 = var[btf_id:5][btf_fd:6]"),
            l(Lddw::BtfVar {
                btf_id: 5,
                btf_fd: 6
            })
        );
        assert_eq!(one("r1 = func[pc-3]"), l(Lddw::Func(-3)));
        assert_eq!(
            one("r0 = *(u16 *)skb[r1 - 5]"),
            Instruction::LoadPacket {
                size: MemSize::H,
                mode: PacketMode::Ind(r(1)),
                imm: -5
            }
        );
        assert_eq!(
            one("r0 = *(u32 *)skb[-5]"),
            Instruction::LoadPacket {
                size: MemSize::W,
                mode: PacketMode::Abs,
                imm: -5
            }
        );
    }

    #[test]
    fn c_like_jumps_and_calls() {
        let got = assemble_instructions(
            "start:\n\
             if r1 > 5 goto end\n\
             if w1 == w2 goto +1\n\
             if r1 & 0x4 goto pc-1\n\
             goto start\n\
             gotol +3\n\
             end:\n\
             call bpf_map_lookup_elem#1\n\
             call 12\n\
             call ktime_get_ns\n\
             call bpf_tail_call\n\
             call whatever#77\n\
             call #-7\n\
             call pc+5\n\
             call kfunc#1234[btf_idx:2]\n\
             callx r2\n\
             exit",
        )
        .expect("assembles");
        assert_eq!(
            got[0],
            Instruction::Jump {
                width: Width::W64,
                cond: JmpCond::Gt,
                dst: r(1),
                src: Source::Imm(5),
                off: 4
            }
        );
        assert_eq!(
            got[1],
            Instruction::Jump {
                width: Width::W32,
                cond: JmpCond::Eq,
                dst: r(1),
                src: Source::Reg(r(2)),
                off: 1
            }
        );
        assert_eq!(
            got[2],
            Instruction::Jump {
                width: Width::W64,
                cond: JmpCond::Set,
                dst: r(1),
                src: Source::Imm(4),
                off: -1
            }
        );
        assert_eq!(got[3], Instruction::Ja { off: -4 });
        assert_eq!(got[4], Instruction::JaLong { imm: 3 });
        let helpers: Vec<_> = got[5..11].to_vec();
        assert_eq!(
            helpers,
            [1, 12, 5, 12, 77, -7].map(|id| Instruction::Call(CallTarget::Helper(id)))
        );
        assert_eq!(got[11], Instruction::Call(CallTarget::Local(5)));
        assert_eq!(
            got[12],
            Instruction::Call(CallTarget::Kfunc {
                btf_id: 1234,
                btf_idx: 2
            })
        );
        assert_eq!(got[13], Instruction::CallX { reg: r(2) });
        assert_eq!(got[14], Instruction::Exit);
    }

    #[test]
    fn both_syntaxes_mix_and_agree() {
        let conformance = "mov %r0, 1\nlddw %r1, 0x100000002\nldxw %r2, [%r1+4]\n\
                           jsge %r2, -1, +1\nlock fetch add [%r10-8], %r1\nexit";
        let c_like = "r0 = 1\nr1 = 0x100000002 ll\nr2 = *(u32 *)(r1 + 4)\n\
                      if r2 s>= -1 goto +1\nr1 = atomic_fetch_add((u64 *)(r10 - 8), r1)\nexit";
        let mixed = "mov %r0, 1\nr1 = 0x100000002 ll\nldxw %r2, [%r1+4]\n\
                     if r2 s>= -1 goto +1\nlock fetch add [%r10-8], %r1\nexit";
        let a = assemble(conformance).unwrap();
        assert_eq!(assemble(c_like).unwrap(), a);
        assert_eq!(assemble(mixed).unwrap(), a);
        assert_eq!(assemble(&disassemble(&a).unwrap()).unwrap(), a);
    }

    #[test]
    fn disassembler_decorations_and_comments_are_ignored() {
        let listing = "\
0000000000000000 <prog>:
       0:	b7 00 00 00 01 00 00 00	r0 = 1 ; set r0
       1:	18 01 00 00 88 77 66 55 00 00 00 00 44 33 22 11	r1 = 0x1122334455667788 ll
       3:	05 00 01 00 00 00 00 00	goto +1 <LBB0_2>
   4: (85) call bpf_ktime_get_ns#5 // bpftool
   5: (95) exit
# a comment line
; another
// and another
       b7 00 00 00 02 00 00 00
LBB0_2:
mov %r0, 2 # conformance comment
call #12 # helper by number, then a comment
exit";
        let got = assemble_instructions(listing).expect("assembles");
        assert_eq!(
            got,
            vec![
                alu(Width::W64, AluOp::Mov, 0, Source::Imm(1)),
                Instruction::LoadImm64 {
                    dst: r(1),
                    value: Lddw::Imm(0x1122334455667788)
                },
                Instruction::Ja { off: 1 },
                Instruction::Call(CallTarget::Helper(5)),
                Instruction::Exit,
                alu(Width::W64, AluOp::Mov, 0, Source::Imm(2)),
                Instruction::Call(CallTarget::Helper(12)),
                Instruction::Exit,
            ]
        );
    }

    #[test]
    fn conformance_errors() {
        assert_error("mov32 %r0, 2147483648", "out of 32-bit range");
        assert_error("mov32 %r0, 0x100000000", "out of 32-bit range");
        assert_error("mov %r0, -2147483649", "out of 32-bit range");
        assert_error("ldxb %r0, [%r1+0x10000]", "out of 16-bit range");
        assert_error("ldxb %r0, [%r1+32768]", "out of 16-bit range");
        assert_error("lddw %r0", "invalid number of operands for `lddw`");
        assert_error("lddw %r0, 0x10000000000000000", "out of 64-bit range");
        assert_error("jeq %r1, 5", "invalid number of operands");
        assert_error("lock", "Invalid number of operands for lock");
        assert_error("lock or [%r10-8]", "Invalid number of operands for lock");
        assert_error("lock fetch", "Invalid number of operands for lock");
        assert_error("lock nand [%r10-8], %r1", "invalid atomic operation");
        assert_error("lock fetch add [%r10-8], %r10", "r10");
        assert_error("ldxb %r0, %r1", "memory operand");
        assert_error("ldxq %r0, %r1", "invalid mnemonic `ldxq`");
        assert_error("or %r0, %r50", "invalid register `%r50`");
        assert_error("mov %r11, 1", "invalid register");
        assert_error("mov r1, 1", "invalid register");
        assert_error("mov %r10, 1", "r10");
        assert_error("ldxw %r10, [%r1]", "r10");
        assert_error("ja NOT_A_LABEL", "undefined label `NOT_A_LABEL`");
        assert_error("ja 5", "invalid jump target");
        assert_error("ja +32768", "out of 16-bit range");
        assert_error("mov %r0, 1,", "empty operand");
        assert_error("mov %r0, 1x", "invalid number");
        assert_error("exit 1", "invalid number of operands for `exit`");
        assert_error("call", "invalid number of operands for `call`");
        assert_error("call local nowhere", "undefined label `nowhere`");
        assert_error("movsx3232 %r0, %r1", "invalid mnemonic");
        assert_error("a:\na:\nexit", "duplicate label `a`");
        assert_error("1a: exit", "invalid label name");
    }

    #[test]
    fn c_like_errors() {
        assert_error("w0 += r1", "mixed");
        assert_error("if w1 == r2 goto +1", "mixed");
        assert_error("r10 = 1", "r10");
        assert_error("r10 += r1", "r10");
        assert_error("r10 = *(u64 *)(r1 + 0)", "r10");
        assert_error("r10 = atomic_fetch_add((u64 *)(r1 + 0), r10)", "r10");
        assert_error("r11 = 1", "invalid register `r11`");
        assert_error("r0 = r16", "invalid register `r16`");
        assert_error("w0 = (s32)w1", "(s16)");
        assert_error("r0 = -r1", "in place");
        assert_error("r0 = le16 r1", "in place");
        assert_error("w1 = 0x1122334455667788", "out of 32-bit range");
        assert_error("w1 = 1 ll", "r register");
        assert_error("w0 = *(u64 *)(r1 + 0)", "r register");
        assert_error("r0 = *(u32 *)(r1 + 32768)", "out of 16-bit range");
        assert_error("*(s32 *)(r1 + 0) = 1", "sign-extending");
        assert_error("r1 = *(u8 *)skb[5]", "r0");
        assert_error(
            "r2 = atomic_fetch_add((u64 *)(r1 + 0), r3)",
            "source register",
        );
        assert_error("r1 = cmpxchg_64(r1 + 0, r0, r2)", "r0");
        assert_error("r1 = atomic_fetch_add((u16 *)(r1 + 0), r1)", "access size");
        assert_error("w1 = xchg_64(r1 + 0, w1)", "r registers");
        assert_error("call not_a_helper", "unknown helper `not_a_helper`");
        assert_error("goto nowhere", "undefined label `nowhere`");
        assert_error("if r1 ~ 2 goto +1", "unexpected character");
        assert_error("if r1 => 2 goto +1", "comparison");
        assert_error("r0 = 1 2", "unexpected `2`");
        assert_error("foo r0", "invalid mnemonic `foo`");
        assert_error("goto +32768", "out of 16-bit range");
        assert_error("gotol +2147483648", "out of 32-bit range");
    }

    #[test]
    fn errors_name_the_line() {
        let e = error("mov %r0, 1\n\n  lddw %r0  \nexit");
        assert_eq!(e.line, 3);
        assert_eq!(e.text, "lddw %r0");
        assert_eq!(
            e.to_string(),
            "line 3: invalid number of operands for `lddw`: expected 2, found 1: `lddw %r0`"
        );
        let e = error("ja end\nexit");
        assert_eq!(e.line, 1);
    }

    #[test]
    fn label_offsets_count_slots_and_are_range_checked() {
        let mut program = String::from("ja far\n");
        for _ in 0..40000 {
            program.push_str("mov %r0, 0\n");
        }
        program.push_str("far:\nexit\n");
        assert_error(&program, "out of 16-bit range");
        let long = program.replacen("ja far", "ja32 far", 1);
        assert_eq!(
            assemble_instructions(&long).unwrap()[0],
            Instruction::JaLong { imm: 40000 }
        );
        let got = assemble_instructions("ja l\nlddw %r0, 1\nl:\nexit").unwrap();
        assert_eq!(got[0], Instruction::Ja { off: 2 });
    }

    #[test]
    fn empty_and_comment_only_programs() {
        assert_eq!(assemble(""), Ok(vec![]));
        assert_eq!(assemble("\n  \n# nothing\n; nothing\n"), Ok(vec![]));
    }

    #[test]
    fn no_panics_on_truncated_or_odd_input() {
        let samples = [
            "r2 = atomic_fetch_add((u64 *)(r1 + 0), r2)",
            "r0 = cmpxchg_64(r1 + 0, r0, r2)",
            "r1 = map[idx:2][0]+16",
            "r1 = var[btf_id:5][btf_fd:7]",
            "r0 = *(u16 *)skb[r1 - 5]",
            "call kfunc#1234[btf_idx:2]",
            "lock fetch xor32 [%r10-8], %r1",
            "   1: (18) r1 = 0x5",
            "  12:\tb7 00 00 00 01 00 00 00\tr0 = 1 <x>",
            "ldxh %r0, [%r1+0x10]",
            "jsle32 %r1, -0x80000000, exit",
            "r0 = é\u{3000}<ü>",
            "\u{3000}#\u{3000}",
            "call #",
            "call -",
            "call pc+",
            "call kfunc#[btf_idx:",
        ];
        for s in samples {
            for (i, _) in s.char_indices().chain([(s.len(), ' ')]) {
                let _ = assemble(&s[..i]);
                let _ = assemble(&s[i..]);
            }
        }
    }

    /// The negative assembler cases of the conformance corpus.
    #[test]
    fn conformance_negative_files_do_not_assemble() {
        let dir = std::env::var_os("USERBPF_CONFORMANCE_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
            })
            .join("negative");
        let mut checked = 0;
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.starts_with("invalid_") || name == "invalid_unknown_directive.data" {
                continue;
            }
            let data = std::fs::read_to_string(&path).expect("readable");
            let mut lines = data.lines();
            if !lines.by_ref().any(|l| l.trim_end() == "-- asm") {
                continue;
            }
            let asm: String = lines
                .by_ref()
                .take_while(|l| !l.starts_with("--"))
                .map(|l| format!("{}\n", l.split('#').next().unwrap_or("")))
                .collect();
            let err = assemble(&asm).expect_err(name);
            let expected = data
                .split("-- error")
                .nth(1)
                .map(|e| e.trim().to_lowercase());
            if let Some(expected) = expected.filter(|e| !e.is_empty()) {
                assert!(
                    err.message.to_lowercase().contains(&expected),
                    "{name}: `{err}` does not mention `{expected}`"
                );
            }
            checked += 1;
        }
        assert_eq!(checked, 10);
    }
}
