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
        Instruction::JaLong { imm }
        | Instruction::Call(CallTarget::Local(imm))
        | Instruction::LoadImm64 {
            value: Lddw::Func(imm),
            ..
        } => {
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

mod clike;
#[cfg(test)]
mod tests;

use clike::parse_c;
