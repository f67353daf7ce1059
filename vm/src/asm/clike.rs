//! The C-like syntax of llvm-objdump, bpftool and [`crate::disasm`].

use super::*;

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
    /// The label a `func[label]` named, for the assembler to resolve.
    func_label: Option<String>,
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

    /// `[pc+5]` or `[label]` (after `func`).
    fn func(&mut self) -> Res<Lddw> {
        self.expect("[")?;
        if let Some(Tok::Word(w)) = self.peek() {
            if w != "pc" && is_label(w) {
                self.bump();
                self.func_label = Some(w.to_string());
                self.expect("]")?;
                return Ok(Lddw::Func(0));
            }
        }
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

pub(super) fn parse_c(s: &str, force_lddw: bool) -> Res<Parsed> {
    let mut p = Parser {
        toks: lex(s)?,
        pos: 0,
        func_label: None,
    };
    let mut parsed = p.statement(force_lddw)?;
    p.finish()?;
    if let Some(label) = p.func_label.take() {
        parsed.label = Some(label);
    }
    Ok(parsed)
}
