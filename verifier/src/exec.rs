//! Abstract execution of ALU instructions and jumps (`check_alu_op`,
//! `adjust_ptr_min_max_vals`, `check_cond_jmp_op`).

use userbpf_vm::isa::{AluOp, Instruction, JmpCond, Lddw, Reg as R, Source, Width};

use crate::error::VerifyError;
use crate::explore::{Step, Verifier};
use crate::reg::{Reg, RegType};
use crate::scalar::Scalar;
use crate::state::State;

/// `BPF_MAX_VAR_OFF`: the largest offset a pointer may carry.
pub(crate) const MAX_VAR_OFF: i64 = 1 << 29;
/// `MAX_PACKET_OFF`.
const MAX_PACKET_OFF: u64 = 0xffff;

fn op_name(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "+=",
        AluOp::Sub => "-=",
        AluOp::Mul => "*=",
        AluOp::Div => "/=",
        AluOp::SDiv => "s/=",
        AluOp::Or => "|=",
        AluOp::And => "&=",
        AluOp::Lsh => "<<=",
        AluOp::Rsh => ">>=",
        AluOp::Mod => "%=",
        AluOp::SMod => "s%=",
        AluOp::Xor => "^=",
        AluOp::Mov => "=",
        AluOp::Arsh => "s>>=",
    }
}

impl Verifier<'_> {
    /// Executes the instruction at `pc` on `st`.
    pub(crate) fn step(
        &mut self,
        st: &mut State,
        pc: usize,
        insn: &Instruction,
    ) -> Result<Step, Box<VerifyError>> {
        let next = pc.wrapping_add(insn.slots());
        match *insn {
            Instruction::Alu {
                width,
                op,
                dst,
                src,
            } => Ok(match self.alu(st, width, op, dst, src)? {
                None => Step::Next(next),
                Some(other) => Step::Branch(next, other, pc),
            }),
            Instruction::MovSx {
                width,
                dst,
                src,
                bits,
            } => {
                self.write_check(dst)?;
                let s = self.read_reg(st, src)?;
                if !s.is_scalar() {
                    return Err(
                        self.error(format!("R{} sign-extension part of pointer", src.num()))
                    );
                }
                *st.reg_mut(dst.num()) = Reg::scalar(s.val.movsx(width, bits));
                Ok(Step::Next(next))
            }
            Instruction::Neg { width, dst } => {
                self.write_check(dst)?;
                let d = self.read_reg(st, dst)?;
                if !d.is_scalar() {
                    return Err(self.error(format!("R{} pointer arithmetic prohibited", dst.num())));
                }
                *st.reg_mut(dst.num()) = Reg::scalar(d.val.neg(width));
                Ok(Step::Next(next))
            }
            Instruction::Endian { op, dst, bits } => {
                self.write_check(dst)?;
                let d = self.read_reg(st, dst)?;
                if !d.is_scalar() {
                    return Err(self.error(format!("R{} pointer arithmetic prohibited", dst.num())));
                }
                *st.reg_mut(dst.num()) = Reg::scalar(d.val.endian(op, bits));
                Ok(Step::Next(next))
            }
            Instruction::Load {
                size,
                dst,
                src,
                off,
            } => {
                self.load(st, size, dst, src, off, false)?;
                Ok(Step::Next(next))
            }
            Instruction::LoadSx {
                size,
                dst,
                src,
                off,
            } => {
                self.load(st, size, dst, src, off, true)?;
                Ok(Step::Next(next))
            }
            Instruction::Store {
                size,
                dst,
                off,
                src,
            } => {
                self.store(st, size, dst, off, src)?;
                Ok(Step::Next(next))
            }
            Instruction::Atomic {
                size,
                op,
                fetch,
                dst,
                src,
                off,
            } => {
                self.atomic(st, size, op, fetch, dst, src, off)?;
                Ok(Step::Next(next))
            }
            Instruction::LoadImm64 { dst, value } => {
                self.write_check(dst)?;
                let reg = self.lddw(pc, value)?;
                *st.reg_mut(dst.num()) = reg;
                Ok(Step::Next(next))
            }
            Instruction::LoadPacket { size, mode, .. } => {
                self.legacy_packet_load(st, size, mode)?;
                if st.frames.len() == 1 {
                    return Ok(Step::Next(next));
                }
                // A failed load in a subprogram: the kernel's code for it
                // (`gen_ld_abs`) returns 0 from the function, and its
                // caller goes on (as userbpf's engines do).
                let mut failed = st.clone();
                *failed.reg_mut(0) = Reg::constant(0);
                match self.exit(&mut failed)? {
                    Step::Next(ret) => Ok(Step::Branch(next, Box::new(failed), ret)),
                    _ => Ok(Step::Next(next)),
                }
            }
            Instruction::Ja { .. } | Instruction::JaLong { .. } => {
                let t = self.target(pc, insn);
                Ok(Step::Next(t))
            }
            Instruction::Jump {
                width,
                cond,
                dst,
                src,
                ..
            } => {
                let t = self.target(pc, insn);
                self.cond_jump(st, width, cond, dst, src, next, t)
            }
            Instruction::Call(target) => self.call(st, pc, target),
            Instruction::CallX { reg } => self.callx(st, pc, reg),
            Instruction::Exit => self.exit(st),
        }
    }

    /// The target pc of a jump.
    fn target(&self, pc: usize, insn: &Instruction) -> usize {
        crate::cfg::target_of(pc, insn).unwrap_or(pc)
    }

    /// `check_reg_arg(.., SRC_OP)`: the register must have been written.
    pub(crate) fn read_reg(&self, st: &State, r: R) -> Result<Reg, Box<VerifyError>> {
        let reg = *st.reg(r.num());
        if reg.ty == RegType::NotInit {
            return Err(self.error(format!("R{} !read_ok", r.num())));
        }
        Ok(reg)
    }

    /// `check_reg_arg(.., DST_OP)`: `r10` cannot be written.
    pub(crate) fn write_check(&self, r: R) -> Result<(), Box<VerifyError>> {
        if r.num() == 10 {
            return Err(self.error("frame pointer is read only"));
        }
        Ok(())
    }

    /// Executes an ALU instruction on `st`; a second state to explore
    /// from the same instruction, when it splits one (see
    /// [`fork_minus_one_or_zero`]).
    fn alu(
        &mut self,
        st: &mut State,
        width: Width,
        op: AluOp,
        dst: R,
        src: Source,
    ) -> Result<Option<Box<State>>, Box<VerifyError>> {
        let d = dst.num();
        let s = match src {
            Source::Reg(r) => self.read_reg(st, r)?,
            Source::Imm(imm) => {
                if matches!(op, AluOp::Div | AluOp::Mod | AluOp::SDiv | AluOp::SMod) && imm == 0 {
                    return Err(self.error("div by zero"));
                }
                if matches!(op, AluOp::Lsh | AluOp::Rsh | AluOp::Arsh) {
                    let bits = if width == Width::W64 { 64 } else { 32 };
                    if imm < 0 || imm >= bits {
                        return Err(self.error(format!("invalid shift {imm}")));
                    }
                }
                let v = match width {
                    Width::W64 => i64::from(imm) as u64,
                    Width::W32 => u64::from(imm as u32),
                };
                Reg::constant(v)
            }
        };
        self.write_check(dst)?;
        if op == AluOp::Mov {
            if width == Width::W32 && !s.is_scalar() {
                return Err(self.error(format!(
                    "R{} partial copy of pointer",
                    match src {
                        Source::Reg(r) => r.num(),
                        Source::Imm(_) => 0,
                    }
                )));
            }
            // A 32-bit copy of a number whose upper half is zero is the
            // whole number (the kernel's `is_src_reg_u32`).
            let whole = width == Width::W64 || s.val.umax <= u64::from(u32::MAX);
            let new = if !s.is_scalar() {
                s
            } else if s.val.is_const().is_none() && whole {
                // Link the copies: a check on one bounds both.
                let id = if s.id != 0 { s.id } else { self.fresh_id() };
                if let Source::Reg(r) = src {
                    st.reg_mut(r.num()).id = id;
                }
                Reg { id, ..s }
            } else if width == Width::W64 {
                Reg { id: 0, ..s }
            } else {
                Reg::scalar(s.val.zext32())
            };
            *st.reg_mut(d) = new;
            return Ok(None);
        }
        let mut dv = self.read_reg(st, dst)?;
        let fork = fork_minus_one_or_zero(st, op, d, &mut dv, &s);
        if !self.opts.allow_division_by_zero
            && matches!(op, AluOp::Div | AluOp::Mod | AluOp::SDiv | AluOp::SMod)
            && s.is_scalar()
        {
            let may_be_zero = match width {
                Width::W64 => s.val.umin == 0,
                Width::W32 => s.val.u32_min == 0,
            };
            if may_be_zero {
                let r = match src {
                    Source::Reg(r) => r.num(),
                    Source::Imm(_) => 0,
                };
                return Err(self.error(format!("R{r} possible division by zero")));
            }
        }
        let result = match (dv.is_scalar(), s.is_scalar()) {
            (true, true) => Reg::scalar(dv.val.alu(op, width, &s.val)),
            (false, true) => self.ptr_arith(width, op, d, &dv, &s, false)?,
            (true, false) => {
                if op == AluOp::Sub {
                    return Err(self.error(format!("R{d} tried to subtract pointer from scalar")));
                }
                self.ptr_arith(width, op, d, &s, &dv, true)?
            }
            (false, false) => {
                if op == AluOp::Sub && same_region(&dv, &s) {
                    // The distance between two pointers into one region is
                    // an offset, not an address (in 32 bits, its low half:
                    // `len = data_end - data` on `u32`s).
                    match width {
                        Width::W64 => Reg::unknown(),
                        Width::W32 => Reg::scalar(Scalar::unknown_bits(4)),
                    }
                } else {
                    return Err(
                        self.error(format!("R{d} pointer {} pointer prohibited", op_name(op)))
                    );
                }
            }
        };
        *st.reg_mut(d) = result;
        Ok(fork)
    }

    /// `ptr op scalar` (or `scalar + ptr` when `swapped`).
    fn ptr_arith(
        &mut self,
        width: Width,
        op: AluOp,
        d: u8,
        ptr: &Reg,
        scalar: &Reg,
        swapped: bool,
    ) -> Result<Reg, Box<VerifyError>> {
        // In the kernel's order (`adjust_ptr_min_max_vals`): width, null
        // check, pointer type, offsets, then the operator.
        if width == Width::W32 {
            return Err(self.error(format!("R{d} 32-bit pointer arithmetic prohibited")));
        }
        if ptr.maybe_null {
            return Err(self.error(format!(
                "R{d} pointer arithmetic on {} prohibited, null-check it first",
                ptr.type_name()
            )));
        }
        // Memory a kernel structure points to is read without bounds
        // (the loads cannot fault): the kernel tracks no offset into it,
        // whatever the operator. (`number += pointer` gives the pointer
        // below, as for other pointers, where the kernel leaves the number
        // as it was.)
        if ptr.ty == RegType::UntrustedMem && !swapped {
            return Ok(*ptr);
        }
        match ptr.ty {
            // `map_ptr += 0` is allowed (and changes nothing).
            RegType::ConstMap { .. } if op == AluOp::Add && scalar.val.is_const() == Some(0) => {
                return Ok(*ptr);
            }
            // Flow keys move by constants only.
            RegType::FlowKeys if scalar.val.is_const().is_some() => {}
            RegType::ConstMap { .. }
            | RegType::PacketEnd
            | RegType::Func { .. }
            | RegType::IterNum
            | RegType::Socket
            | RegType::SockCommon
            | RegType::TcpSock
            | RegType::XdpSock
            | RegType::FlowKeys
            | RegType::Dynptr { .. } => {
                return Err(self.error(format!(
                    "R{d} pointer arithmetic on {} prohibited",
                    ptr.type_name()
                )))
            }
            _ => {}
        }
        // The kernel's `check_reg_sane_offset`, on both operands and on
        // the result: pointer offsets stay within +-2^29
        // (`BPF_MAX_VAR_OFF`) and a variable part has a bounded minimum.
        // (Forming such a pointer accesses nothing, but the kernel forbids
        // the arithmetic, and so do we.)
        self.sane_offset(scalar, ptr)?;
        self.sane_offset(ptr, ptr)?;
        match op {
            AluOp::Add | AluOp::Sub => {}
            AluOp::And | AluOp::Or | AluOp::Xor => {
                return Err(self.error(format!(
                    "R{d} bitwise operator {} on pointer prohibited",
                    op_name(op)
                )))
            }
            _ => {
                return Err(self.error(format!(
                    "R{d} pointer arithmetic with {} operator prohibited",
                    op_name(op)
                )))
            }
        }
        if op == AluOp::Sub && matches!(ptr.ty, RegType::Stack { .. }) {
            // The kernel's rule for JITs: the frame pointer only grows
            // down by addition (`r1 += -8`, as compilers write it).
            return Err(self.error(format!("R{d} subtraction from stack pointer prohibited")));
        }
        let mut out = *ptr;
        if let Some(c) = scalar.val.is_const() {
            let c = c as i64;
            let delta = if op == AluOp::Sub {
                c.wrapping_neg()
            } else {
                c
            };
            // Both within +-2^29 (checked above): the sum fits an i32, and
            // `sane_offset` bounds it.
            out.off = i64::from(ptr.off).wrapping_add(delta) as i32;
            self.sane_offset(&out, ptr)?;
            return Ok(out);
        }
        let v = &scalar.val;
        // (A context pointer with a variable offset is refused when it is
        // dereferenced or passed as the context, as the kernel does; it may
        // go to helpers that take any value: usdt.bpf.h's bpf_usdt_arg
        // reads `ctx + reg_off` with bpf_probe_read_kernel.)
        out.val = ptr.val.alu(op, Width::W64, v);
        self.sane_offset(&out, ptr)?;
        if let RegType::Packet { .. } | RegType::PacketMeta { .. } = ptr.ty {
            if out.val.umax > MAX_PACKET_OFF {
                // A negative or huge variable part: unusable for access,
                // but not an error until dereferenced.
            }
            // A new variable part: the proven range no longer applies.
            out.id = self.fresh_id();
            out.ty = match ptr.ty {
                RegType::Packet { .. } => RegType::Packet { range: 0 },
                _ => RegType::PacketMeta { range: 0 },
            };
        }
        Ok(out)
    }

    /// `check_reg_sane_offset`: `reg` (an operand or the result of
    /// arithmetic on `ptr`) keeps the pointer's offsets in range.
    fn sane_offset(&self, reg: &Reg, ptr: &Reg) -> Result<(), Box<VerifyError>> {
        let ty = ptr.type_name();
        if let Some(val) = reg.val.is_const() {
            let val = val as i64;
            if val >= MAX_VAR_OFF || val <= -MAX_VAR_OFF {
                return Err(self.error(format!(
                    "math between {ty} pointer and {val} is not allowed"
                )));
            }
        }
        if i64::from(reg.off) >= MAX_VAR_OFF || i64::from(reg.off) <= -MAX_VAR_OFF {
            return Err(self.error(format!("{ty} pointer offset {} is not allowed", reg.off)));
        }
        let smin = reg.val.smin;
        if smin == i64::MIN {
            return Err(self.error(format!(
                "math between {ty} pointer and register with unbounded min value is not allowed"
            )));
        }
        if smin >= MAX_VAR_OFF || smin <= -MAX_VAR_OFF {
            return Err(self.error(format!("value {smin} makes {ty} pointer be out of bounds")));
        }
        Ok(())
    }

    fn lddw(&mut self, pc: usize, value: Lddw) -> Result<Reg, Box<VerifyError>> {
        Ok(match value {
            Lddw::Imm(v) => Reg::constant(v),
            Lddw::MapFd(fd) | Lddw::MapIdx(fd) => {
                let Some(m) = self.env.map(fd) else {
                    return Err(self.error(format!("fd {fd} is not pointing to valid bpf_map")));
                };
                self.map_prog_compat(m)?;
                Reg::pointer(RegType::ConstMap { map: fd as u32 }, 0)
            }
            Lddw::MapValue { fd, off } | Lddw::MapIdxValue { idx: fd, off } => {
                let Some(m) = self.env.map(fd) else {
                    return Err(self.error(format!("fd {fd} is not pointing to valid bpf_map")));
                };
                self.map_prog_compat(m)?;
                if !m.direct_value {
                    return Err(self.error(format!(
                        "map `{}` does not support direct value access",
                        m.name
                    )));
                }
                if off >= m.value_size {
                    return Err(self.error(format!(
                        "invalid access to map value pointer, value_size={} off={off}",
                        m.value_size
                    )));
                }
                Reg::pointer(RegType::MapValue { map: fd as u32 }, off as i32)
            }
            Lddw::Func(rel) => {
                let t = crate::cfg::rel_target(pc, i64::from(rel))
                    .and_then(|t| u32::try_from(t).ok())
                    .unwrap_or(0);
                Reg::pointer(RegType::Func { pc: t }, 0)
            }
            Lddw::BtfVar { btf_id, .. } => {
                return Err(self.error(format!(
                    "ldimm64 of kernel variable (BTF id {btf_id}) is not available in user space"
                )))
            }
        })
    }

    /// `check_map_prog_compatibility`: the program types that may not use
    /// a map holding a lock or a timer.
    fn map_prog_compat(&self, m: &crate::env::MapInfo) -> Result<(), Box<VerifyError>> {
        use userbpf_vm::object::ProgramType as T;
        let tracing = matches!(
            self.env.prog_type,
            Some(
                T::Kprobe
                    | T::Tracepoint
                    | T::PerfEvent
                    | T::RawTracepoint
                    | T::RawTracepointWritable
            )
        );
        if m.spin_lock.is_some() {
            if self.env.prog_type == Some(T::SocketFilter) {
                return Err(self.error("socket filter progs cannot use bpf_spin_lock yet"));
            }
            if tracing {
                return Err(self.error("tracing progs cannot use bpf_spin_lock yet"));
            }
        }
        if m.timer.is_some() && tracing {
            return Err(self.error("tracing progs cannot use bpf_timer yet"));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn cond_jump(
        &mut self,
        st: &mut State,
        width: Width,
        cond: JmpCond,
        dst: R,
        src: Source,
        fall: usize,
        target: usize,
    ) -> Result<Step, Box<VerifyError>> {
        let a = self.read_reg(st, dst)?;
        let b = match src {
            Source::Reg(r) => self.read_reg(st, r)?,
            Source::Imm(imm) => Reg::constant(match width {
                Width::W64 => i64::from(imm) as u64,
                Width::W32 => u64::from(imm as u32),
            }),
        };
        let src_reg = match src {
            Source::Reg(r) => Some(r.num()),
            Source::Imm(_) => None,
        };
        if a.is_scalar() && b.is_scalar() {
            if let Some(taken) = a.val.is_branch_taken(cond, width, &b.val) {
                return Ok(Step::Next(if taken { target } else { fall }));
            }
            let mut other = st.clone();
            // Fall-through: the condition is false.
            let ok_fall = refine_pair(st, dst.num(), src_reg, &a, &b, cond, width, false);
            let ok_taken = refine_pair(&mut other, dst.num(), src_reg, &a, &b, cond, width, true);
            return Ok(match (ok_fall, ok_taken) {
                (true, true) => Step::Branch(fall, Box::new(other), target),
                (true, false) => Step::Next(fall),
                (false, true) => {
                    *st = other;
                    Step::Next(target)
                }
                // Neither side is feasible: the state itself was empty.
                (false, false) => Step::Done,
            });
        }
        if let Some(regno) = leaking_comparison(&a, &b, cond, width, dst.num(), src_reg) {
            return Err(self.error(format!("R{regno} pointer comparison prohibited")));
        }
        // Null checks: `if rX == 0` / `if rX != 0` on a maybe-null pointer.
        let zero = |r: &Reg| r.const_value() == Some(0);
        if width == Width::W64 && matches!(cond, JmpCond::Eq | JmpCond::Ne) {
            // A comparison with a register holding 0 (either way round)
            // decides the branch of a pointer that is never 0, but (as in
            // the kernel, whose null checks take an immediate 0) teaches
            // nothing of a maybe-null one.
            let imm = matches!(src, Source::Imm(_));
            let (ptr, ptr_reg) = if !a.is_scalar() && zero(&b) && (imm || !a.maybe_null) {
                (a, Some(dst.num()))
            } else if a.is_scalar() && zero(&a) && !b.is_scalar() && !b.maybe_null {
                (b, src_reg)
            } else {
                (Reg::NOT_INIT, None)
            };
            if ptr_reg.is_some() {
                let ne_pc = if cond == JmpCond::Eq { fall } else { target };
                if !ptr.maybe_null && ptr.ty.may_be_zero() {
                    // A kernel structure's untrusted pointer may be 0 (its
                    // loads cannot fault): both branches, unchanged.
                    let other = st.clone();
                    return Ok(Step::Branch(fall, Box::new(other), target));
                }
                if !ptr.maybe_null {
                    // A valid pointer is never 0.
                    return Ok(Step::Next(ne_pc));
                }
                let mut null_state = st.clone();
                mark_null(&mut null_state, &ptr, true);
                mark_null(st, &ptr, false);
                return Ok(if ne_pc == fall {
                    Step::Branch(fall, Box::new(null_state), target)
                } else {
                    let non_null = std::mem::replace(st, null_state);
                    Step::Branch(fall, Box::new(non_null), target)
                });
            }
        }
        // Two pointers into one region compare as their offsets (the
        // region lies far from address 0 and the top, so nothing wraps).
        if width == Width::W64 && same_base(&a, &b) {
            let at = |r: &Reg| {
                r.val.alu(
                    AluOp::Add,
                    Width::W64,
                    &Scalar::constant(i64::from(r.off) as u64),
                )
            };
            if let Some(taken) = at(&a).is_branch_taken(cond, width, &at(&b)) {
                return Ok(Step::Next(if taken { target } else { fall }));
            }
        }
        // A maybe-null pointer equal to one that is not null is not null
        // either ("jne/jeq infer not null", as the kernel does).
        if width == Width::W64
            && matches!(cond, JmpCond::Eq | JmpCond::Ne)
            && !a.is_scalar()
            && !b.is_scalar()
            && a.maybe_null != b.maybe_null
            && !matches!(a.ty, RegType::BtfId { .. })
            && !matches!(b.ty, RegType::BtfId { .. })
        {
            let maybe = if a.maybe_null { a } else { b };
            let mut equal = st.clone();
            mark_null(&mut equal, &maybe, false);
            return Ok(if cond == JmpCond::Eq {
                Step::Branch(fall, Box::new(equal), target)
            } else {
                let differ = std::mem::replace(st, equal);
                Step::Branch(fall, Box::new(differ), target)
            });
        }
        // Packet bounds: comparisons of packet pointers with data_end (or
        // of metadata pointers with data).
        if width == Width::W64 {
            if let Some(step) = self.packet_compare(st, cond, &a, &b, fall, target) {
                return Ok(step);
            }
        }
        // Other comparisons involving pointers teach nothing.
        Ok(Step::Branch(fall, Box::new(st.clone()), target))
    }

    /// `find_good_pkt_pointers`: after `pkt' <= pkt_end` (or any
    /// equivalent form), every packet pointer with pkt's id may access
    /// `pkt'.off` bytes.
    fn packet_compare(
        &self,
        st: &mut State,
        cond: JmpCond,
        a: &Reg,
        b: &Reg,
        fall: usize,
        target: usize,
    ) -> Option<Step> {
        let is_pkt = |r: &Reg| matches!(r.ty, RegType::Packet { .. });
        let is_meta = |r: &Reg| matches!(r.ty, RegType::PacketMeta { .. });
        // The end of the metadata is `data` itself, not a pointer moved
        // from it (`reg_is_init_pkt_pointer`): `meta + 8 <= data + 8`
        // says nothing of the metadata's length.
        let is_data = |r: &Reg| is_pkt(r) && r.off == 0 && r.val.is_const() == Some(0);
        // Normalise to `ptr CMP end`.
        let (ptr, cond) = if (is_pkt(a) && b.ty == RegType::PacketEnd) || (is_meta(a) && is_data(b))
        {
            (*a, cond)
        } else if (is_pkt(b) && a.ty == RegType::PacketEnd) || (is_meta(b) && is_data(a)) {
            (*b, swap_cond(cond))
        } else {
            return None;
        };
        // Which outcome proves `ptr <= end` (range off) or `ptr < end`
        // (range off + 1).
        let (proof_taken, strict) = match cond {
            JmpCond::Gt => (false, false), // not (ptr > end): ptr <= end
            JmpCond::Ge => (false, true),  // not (ptr >= end): ptr < end
            JmpCond::Lt => (true, true),
            JmpCond::Le => (true, false),
            _ => return Some(Step::Branch(fall, Box::new(st.clone()), target)),
        };
        if ptr.off < 0
            || ptr.val.umax > MAX_PACKET_OFF
            || ptr.val.umax.saturating_add(ptr.off as u64) > MAX_PACKET_OFF
        {
            return Some(Step::Branch(fall, Box::new(st.clone()), target));
        }
        let mut range = ptr.off as u32;
        if strict {
            range = range.saturating_add(1);
        }
        let mut proven = st.clone();
        let meta = is_meta(&ptr);
        proven.for_each_reg(|r| {
            if r.id != ptr.id {
                return;
            }
            match &mut r.ty {
                RegType::Packet { range: rr } if !meta => *rr = (*rr).max(range),
                RegType::PacketMeta { range: rr } if meta => *rr = (*rr).max(range),
                _ => {}
            }
        });
        Some(if proof_taken {
            Step::Branch(fall, Box::new(proven), target)
        } else {
            let unproven = std::mem::replace(st, proven);
            Step::Branch(fall, Box::new(unproven), target)
        })
    }
}

/// Whether two pointers point into the same region (their difference is
/// an offset).
fn same_region(a: &Reg, b: &Reg) -> bool {
    use RegType as T;
    let pkt = |t: T| matches!(t, T::Packet { .. } | T::PacketMeta { .. } | T::PacketEnd);
    if pkt(a.ty) && pkt(b.ty) {
        return true;
    }
    match (a.ty, b.ty) {
        (T::Stack { frame: x }, T::Stack { frame: y }) => x == y,
        (T::MapValue { map: x }, T::MapValue { map: y }) => {
            x == y && a.id == b.id && !a.maybe_null && !b.maybe_null
        }
        (T::Ctx, T::Ctx) => true,
        // Two pointers to memory of unknown provenance may point into
        // different regions: only one record's pointers subtract.
        (T::RingbufMem { .. }, T::RingbufMem { .. }) => {
            a.ref_id == b.ref_id && a.ref_id != 0 && !a.maybe_null && !b.maybe_null
        }
        _ => false,
    }
}

/// The register to name when a comparison of `a` (register `dst`) with
/// `b` (register `src_reg`, or an immediate) would tell where a region of
/// user space lies: a pointer against a number other than 0, an ordering
/// of pointers into different kinds of region, or a 32-bit half of a
/// pointer. Its outcome could be written into a map bit by bit, an
/// address-space leak as a stored pointer is. The kernel refuses every
/// comparison of pointers to unprivileged programs ("pointer comparison
/// prohibited"); userbpf refuses these to all. Null checks, equality of
/// two pointers (`p == &local`: at most a guess at their distance
/// confirmed), and orderings of two pointers into one kind of region
/// (packet bounds, the stack, one map's values: their offsets) stay
/// allowed, as do kernel addresses, which are the kernel's.
fn leaking_comparison(
    a: &Reg,
    b: &Reg,
    cond: JmpCond,
    width: Width,
    dst: u8,
    src_reg: Option<u8>,
) -> Option<u8> {
    use RegType as T;
    let user_pointer = |r: &Reg| !r.is_scalar() && !r.is_kernel_address();
    let (pa, pb) = (user_pointer(a), user_pointer(b));
    if !pa && !pb {
        return None;
    }
    // The kernel names the source register first.
    let named = match src_reg {
        Some(s) if pb => s,
        _ => dst,
    };
    if width != Width::W64 {
        return Some(named);
    }
    if pa && pb {
        if matches!(cond, JmpCond::Eq | JmpCond::Ne) {
            // Whether two pointers are one (`p == &local`): a guess at
            // their distance, not where either lies.
            return None;
        }
        let pkt = |t: T| matches!(t, T::Packet { .. } | T::PacketMeta { .. } | T::PacketEnd);
        let comparable = (pkt(a.ty) && pkt(b.ty))
            || match (a.ty, b.ty) {
                // The frames lie in one stack, in call order.
                (T::Stack { .. }, T::Stack { .. })
                | (T::RingbufMem { .. }, T::RingbufMem { .. })
                | (T::Ctx, T::Ctx) => true,
                (T::MapValue { map: x }, T::MapValue { map: y }) => x == y,
                (T::Mem { .. }, T::Mem { .. }) => a.id == b.id,
                _ => false,
            };
        return (!comparable).then_some(named);
    }
    let number = if pa { b } else { a };
    (number.const_value() != Some(0)).then_some(named)
}

/// Whether two pointers are known to point into the very same region
/// (the same stack frame, map value, buffer or packet lineage).
fn same_base(a: &Reg, b: &Reg) -> bool {
    use RegType as T;
    if a.maybe_null || b.maybe_null {
        return false;
    }
    match (a.ty, b.ty) {
        (T::Stack { frame: x }, T::Stack { frame: y }) => x == y,
        (T::MapValue { map: x }, T::MapValue { map: y }) => x == y && a.id == b.id && a.id != 0,
        (T::Mem { size: x, .. }, T::Mem { size: y, .. }) => x == y && a.id == b.id,
        (T::RingbufMem { .. }, T::RingbufMem { .. }) => a.ref_id == b.ref_id && a.ref_id != 0,
        (T::Packet { .. }, T::Packet { .. }) | (T::PacketMeta { .. }, T::PacketMeta { .. }) => {
            a.id == b.id
        }
        (T::Ctx, T::Ctx) => true,
        _ => false,
    }
}

/// The condition with its operands swapped (`a < b` is `b > a`).
fn swap_cond(c: JmpCond) -> JmpCond {
    match c {
        JmpCond::Gt => JmpCond::Lt,
        JmpCond::Ge => JmpCond::Le,
        JmpCond::Lt => JmpCond::Gt,
        JmpCond::Le => JmpCond::Ge,
        JmpCond::SGt => JmpCond::SLt,
        JmpCond::SGe => JmpCond::SLe,
        JmpCond::SLt => JmpCond::SGt,
        JmpCond::SLe => JmpCond::SGe,
        c => c,
    }
}

/// Refines both operands of a scalar comparison for one outcome, and
/// every register linked to them; false if the outcome is impossible.
#[allow(clippy::too_many_arguments)]
fn refine_pair(
    st: &mut State,
    dst: u8,
    src: Option<u8>,
    a: &Reg,
    b: &Reg,
    cond: JmpCond,
    width: Width,
    taken: bool,
) -> bool {
    let mut va = a.val;
    let mut vb = b.val;
    if !Scalar::refine(cond, width, taken, &mut va, &mut vb) {
        return false;
    }
    apply(st, dst, a, va);
    if let Some(s) = src {
        let cur = *st.reg(s);
        apply(st, s, &cur, vb);
    }
    true
}

/// Sets register `r` (and every register linked to it) to `val`.
fn apply(st: &mut State, r: u8, old: &Reg, val: Scalar) {
    if old.id != 0 {
        let id = old.id;
        st.for_each_reg(|x| {
            if x.is_scalar() && x.id == id {
                x.val = val;
            }
        });
    }
    st.reg_mut(r).val = val;
}

/// After a null check on `ptr`: on the null branch every copy becomes the
/// scalar 0 (and a reference it held is gone), on the other every copy
/// is a valid pointer.
fn mark_null(st: &mut State, ptr: &Reg, is_null: bool) {
    let id = ptr.id;
    if id == 0 {
        return;
    }
    st.for_each_reg(|x| {
        if x.id == id && !x.is_scalar() && x.maybe_null {
            if is_null {
                *x = Reg::constant(0);
            } else {
                x.maybe_null = false;
            }
        }
    });
    // A NULL lookup holds no reference; a NULL cast of a socket says
    // nothing of the socket it was given (`ref_obj_id == id` only for
    // the pointer that acquired the reference).
    if is_null && ptr.ref_id != 0 && ptr.ref_id == id {
        st.refs.retain(|&(r, _)| r != ptr.ref_id);
    }
}

/// `dst &= K` or `dst |= K` with `dst` a number that is -1 or 0 (the
/// `x s>> 63` of branch-free selects): as Linux 6.18 does, the state splits
/// in two, `dst` -1 here (`dv` updated; `st` gets the result when the
/// instruction completes) and 0 in the state returned, which executes the
/// instruction again. With the 64-bit range
/// [-1, 0] the whole register is set, else with the 32-bit one its low
/// half. The result of each is then the constant it is, not the
/// `(0; K)` tnum a join of both gives.
fn fork_minus_one_or_zero(
    st: &State,
    op: AluOp,
    d: u8,
    dv: &mut Reg,
    src: &Reg,
) -> Option<Box<State>> {
    if !matches!(op, AluOp::And | AluOp::Or)
        || !dv.is_scalar()
        || !src.is_scalar()
        || src.val.is_const().is_none()
    {
        return None;
    }
    let v = dv.val;
    let (minus_one, zero) = if (v.smin, v.smax) == (-1, 0) {
        (Scalar::constant(u64::MAX), Scalar::constant(0))
    } else if (v.s32_min, v.s32_max) == (-1, 0) {
        (v.with_subreg_const(u32::MAX), v.with_subreg_const(0))
    } else {
        return None;
    };
    let mut other = Box::new(st.clone());
    *other.reg_mut(d) = Reg::scalar(zero);
    *dv = Reg::scalar(minus_one);
    Some(other)
}
