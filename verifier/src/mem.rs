//! Memory accesses (`check_mem_access`): every load, store and atomic
//! operation is checked against the region its base pointer points into,
//! and loads produce the abstract value stored there.

use userbpf_vm::isa::{AtomicOp, MemSize, PacketMode, Reg as R, Source};

use crate::ctx::{Context, CtxField};
use crate::error::VerifyError;
use crate::exec::MAX_VAR_OFF;
use crate::explore::Verifier;
use crate::kstruct::Walked;
use crate::reg::{Reg, RegType, Trust};
use crate::scalar::Scalar;
use crate::state::{ByteKind, Frame, Slot, State, MAX_BPF_STACK};
use crate::tnum::Tnum;

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

pub(crate) fn size_bytes(size: MemSize) -> u32 {
    match size {
        MemSize::B => 1,
        MemSize::H => 2,
        MemSize::W => 4,
        MemSize::DW => 8,
    }
}

/// What an access found: for reads, the loaded value.
pub(crate) enum Found {
    /// A value of the loaded size (zero-extended), unknown.
    Unknown,
    /// A known register (a stack fill, a packet pointer from the context).
    Reg(Reg),
}

/// The kind of pointer a load or store goes through, as far as one
/// instruction must always see the same: the kernel rewrites accesses to
/// the context, sockets and kernel structures by the pointer's kind, so
/// an instruction that sees one of them on some path must see it on
/// every path (`reg_type_mismatch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AccessPtr {
    /// Any pointer the kernel does not rewrite accesses through (stack,
    /// map value, packet, memory).
    Plain,
    Ctx,
    Socket,
    SockCommon,
    TcpSock,
    XdpSock,
    /// A kernel structure, by how far it is trusted.
    BtfId(Trust),
}

impl AccessPtr {
    fn of(r: &Reg) -> AccessPtr {
        match r.ty {
            RegType::Ctx => AccessPtr::Ctx,
            RegType::Socket => AccessPtr::Socket,
            RegType::SockCommon => AccessPtr::SockCommon,
            RegType::TcpSock => AccessPtr::TcpSock,
            RegType::XdpSock => AccessPtr::XdpSock,
            RegType::BtfId { trust, .. } => AccessPtr::BtfId(trust),
            _ => AccessPtr::Plain,
        }
    }
}

impl Verifier<'_> {
    /// Records the kind of pointer the access at the current pc went
    /// through, and refuses one that differs from an earlier path's where
    /// either is rewritten by the kernel (`save_aux_ptr_type`). Loads of
    /// kernel structures may differ in trust (the kernel falls back to
    /// an untrusted read).
    fn same_pointer_kind(&mut self, base: &Reg, load: bool) -> Result<(), Box<VerifyError>> {
        let kind = AccessPtr::of(base);
        let Some(seen) = self.access_ptr.get_mut(self.pc) else {
            return Ok(());
        };
        match *seen {
            None => *seen = Some(kind),
            Some(prev) if prev == kind => {}
            Some(AccessPtr::BtfId(_)) if load && matches!(kind, AccessPtr::BtfId(_)) => {
                *seen = Some(AccessPtr::BtfId(Trust::Untrusted));
            }
            // Two kinds, one of them rewritten by the kernel.
            Some(_) => {
                return Err(self.error("same insn cannot be used with different pointers"));
            }
        }
        Ok(())
    }

    pub(crate) fn load(
        &mut self,
        st: &mut State,
        size: MemSize,
        dst: R,
        src: R,
        off: i16,
        sign: bool,
    ) -> Result<(), Box<VerifyError>> {
        let base = self.read_reg(st, src)?;
        self.write_check(dst)?;
        let bytes = size_bytes(size);
        let found = self.access(
            st,
            src.num(),
            &base,
            i32::from(off),
            bytes,
            Access::Read,
            None,
        )?;
        self.same_pointer_kind(&base, true)?;
        if let Found::Reg(r) = &found {
            // A packet pointer field read sign-extending is refused
            // (`bpf_skb_is_valid_access`, `xdp_is_valid_access`: the
            // kernel rewrites those loads into 64-bit pointer loads).
            let packet = matches!(
                r.ty,
                RegType::Packet { .. } | RegType::PacketMeta { .. } | RegType::PacketEnd
            );
            if sign && base.ty == RegType::Ctx && packet {
                return Err(self.error(format!(
                    "invalid bpf_context access off={} size={bytes}",
                    base.off.wrapping_add(i32::from(off))
                )));
            }
        }
        let reg = match found {
            Found::Reg(r) => match r.const_value() {
                // A folded constant, sign-extended from its size.
                Some(v) if sign && bytes < 8 => {
                    let shift = 64u32.saturating_sub(bytes.saturating_mul(8));
                    Reg::constant((((v << shift) as i64) >> shift) as u64)
                }
                _ if sign && r.is_scalar() => Reg::scalar(Scalar::sext_load(bytes as usize)),
                _ => r,
            },
            Found::Unknown => {
                if sign {
                    Reg::scalar(Scalar::sext_load(bytes as usize))
                } else {
                    Reg::scalar(Scalar::unknown_bits(bytes as usize))
                }
            }
        };
        *st.reg_mut(dst.num()) = reg;
        Ok(())
    }

    pub(crate) fn store(
        &mut self,
        st: &mut State,
        size: MemSize,
        dst: R,
        off: i16,
        src: Source,
    ) -> Result<(), Box<VerifyError>> {
        let value = match src {
            Source::Reg(r) => self.read_reg(st, r)?,
            Source::Imm(imm) => Reg::constant(match size {
                MemSize::DW => i64::from(imm) as u64,
                _ => u64::from(imm as u32),
            }),
        };
        let base = self.read_reg(st, dst)?;
        let bytes = size_bytes(size);
        let mut value = value;
        // A number spilled whole links the register and its stack copy,
        // so that a check on one bounds the other
        // (`assign_scalar_id_before_mov` in `check_stack_write_fixed_off`).
        if let (RegType::Stack { .. }, Source::Reg(r)) = (base.ty, src) {
            if value.is_scalar()
                && value.id == 0
                && value.val.is_const().is_none()
                && fits(&value, bytes)
            {
                value.id = self.fresh_id();
                st.reg_mut(r.num()).id = value.id;
            }
        }
        // A kernel address stored outside the stack is a number there (and
        // the program the kernel's alone: in user space the address would
        // be the host's).
        let value = if value.is_kernel_address() && !matches!(base.ty, RegType::Stack { .. }) {
            self.stats.kernel_memory.get_or_insert(self.pc);
            Reg::unknown()
        } else {
            value
        };
        self.access(
            st,
            dst.num(),
            &base,
            i32::from(off),
            bytes,
            Access::Write,
            Some(value),
        )?;
        self.same_pointer_kind(&base, false)?;
        // userbpf's rule, checked after the kernel's (which a privileged
        // kernel applies alone): no address stored outside the stack.
        if !value.is_scalar() && !matches!(base.ty, RegType::Stack { .. }) {
            let src_no = match src {
                Source::Reg(r) => r.num(),
                Source::Imm(_) => 0,
            };
            let into = match base.ty {
                RegType::MapValue { .. } => "map",
                RegType::Ctx => "ctx",
                RegType::Packet { .. } | RegType::PacketMeta { .. } => "packet",
                _ => "mem",
            };
            return Err(self.error(format!("R{src_no} leaks addr into {into}")));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn atomic(
        &mut self,
        st: &mut State,
        size: MemSize,
        op: AtomicOp,
        fetch: bool,
        dst: R,
        src: R,
        off: i16,
    ) -> Result<(), Box<VerifyError>> {
        let value = self.read_reg(st, src)?;
        let base = self.read_reg(st, dst)?;
        let r0 = if op == AtomicOp::CmpXchg {
            Some(self.read_reg(st, R::new(0).unwrap_or(src))?)
        } else {
            None
        };
        match base.ty {
            RegType::Stack { .. }
            | RegType::MapValue { .. }
            | RegType::Mem { .. }
            | RegType::RingbufMem { .. }
            | RegType::BtfId { .. }
            | RegType::UntrustedMem
            | RegType::TpBuffer
                if !base.maybe_null => {}
            _ => {
                return Err(self.error(format!(
                    "BPF_ATOMIC stores into R{} {} is not allowed",
                    dst.num(),
                    base.type_name()
                )))
            }
        }
        // userbpf's rule, checked after the kernel's destination rule
        // (which a privileged kernel applies alone): no address stored
        // outside the stack, nor on it by an atomic operation.
        if r0.is_some_and(|r0| !r0.is_scalar()) {
            return Err(self.error("R0 leaks addr into mem"));
        }
        if !value.is_scalar() {
            return Err(self.error(format!("R{} leaks addr into mem", src.num())));
        }
        let bytes = size_bytes(size);
        // An atomic operation both reads and writes, aligned.
        self.aligned(&base, i32::from(off), bytes)?;
        if matches!(base.ty, RegType::Stack { .. }) && base.val.is_const().is_none() {
            // The kernel reads the stack for an atomic operation as it does
            // for a helper, which takes no variable offset.
            return Err(self.error(format!(
                "variable offset stack pointer cannot be passed into helper function; var_off={} off={} size={bytes}",
                base.val.var_off,
                i64::from(base.off).wrapping_add(i64::from(off))
            )));
        }
        let old = self.access(
            st,
            dst.num(),
            &base,
            i32::from(off),
            bytes,
            Access::Read,
            None,
        )?;
        if let Found::Reg(r) = &old {
            // A spilled address the operation would turn into a number
            // (fetched, or left in the slot): the kernel's rule for
            // unprivileged programs, userbpf's for all.
            if r.is_kernel_address() {
                self.stats.kernel_memory.get_or_insert(self.pc);
            } else if !r.is_scalar() {
                return Err(self.error(format!(
                    "leaking pointer from stack off {}",
                    base.off.wrapping_add(i32::from(off))
                )));
            }
        }
        self.access(
            st,
            dst.num(),
            &base,
            i32::from(off),
            bytes,
            Access::Write,
            None,
        )?;
        // What a fetch returns is what a load would read there (as the
        // kernel's check_atomic has it): a number spilled on the stack
        // comes back whole.
        let result = match old {
            Found::Reg(r) if r.is_scalar() => r,
            _ => Reg::scalar(Scalar::unknown_bits(bytes as usize)),
        };
        if op == AtomicOp::CmpXchg {
            *st.reg_mut(0) = result;
        } else if fetch {
            self.write_check(src)?;
            *st.reg_mut(src.num()) = result;
        }
        Ok(())
    }

    /// `BPF_LD | BPF_ABS/IND`: socket programs only, `r6` the skb.
    pub(crate) fn legacy_packet_load(
        &mut self,
        st: &mut State,
        size: MemSize,
        mode: PacketMode,
    ) -> Result<(), Box<VerifyError>> {
        let allowed = match self.env.context {
            Context::SkBuff(kind) => kind.legacy_packet_loads(),
            Context::Generic { data, .. } => data.is_some(),
            _ => false,
        };
        if !allowed {
            return Err(
                self.error("BPF_LD_[ABS|IND] instructions not allowed for this program type")
            );
        }
        // Its failure returns 0 from the function: the kernel does not
        // allow that in a callback (run by a helper).
        if st.frames.iter().any(|f| f.callback) {
            return Err(self.error("cannot use BPF_LD_[ABS|IND] within callback"));
        }
        let r6 = self.read_reg(
            st,
            R::new(6).unwrap_or(R::new(0).unwrap_or_else(|| unreachable!())),
        )?;
        if r6.ty != RegType::Ctx || r6.off != 0 {
            return Err(self.error("at the time of BPF_LD_ABS|IND R6 != pointer to skb"));
        }
        if let PacketMode::Ind(r) = mode {
            let v = self.read_reg(st, r)?;
            if !v.is_scalar() {
                return Err(self.error(format!("R{} leaks addr into packet offset", r.num())));
            }
        }
        if st.lock.is_some() {
            return Err(
                self.error("BPF_LD_[ABS|IND] cannot be used inside bpf_spin_lock-ed region")
            );
        }
        if !st.refs.is_empty() {
            return Err(self.error("BPF_LD_[ABS|IND] cannot be mixed with socket references"));
        }
        let frame = st.cur_mut();
        for r in 1..=5 {
            frame.regs[r] = Reg::NOT_INIT;
        }
        frame.regs[0] = Reg::scalar(Scalar::unknown_bits(size_bytes(size) as usize));
        Ok(())
    }

    /// Checks an access of `size` bytes at `base + off` (base in register
    /// `regno`) and performs it on the state: writes update the stack,
    /// reads return what they find. `value` is what a store writes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn access(
        &mut self,
        st: &mut State,
        regno: u8,
        base: &Reg,
        off: i32,
        size: u32,
        access: Access,
        value: Option<Reg>,
    ) -> Result<Found, Box<VerifyError>> {
        if base.maybe_null {
            return Err(self.error(format!(
                "R{regno} invalid mem access '{}'",
                base.type_name()
            )));
        }
        let fixed = i64::from(base.off).saturating_add(i64::from(off));
        if value.is_some_and(|v| v.ty == RegType::Ctx) {
            self.stats.ctx_escapes = true;
        }
        match base.ty {
            RegType::NotInit => Err(self.error(format!("R{regno} !read_ok"))),
            RegType::ConstMap { map } => self.map_ptr_access(regno, map, fixed, size, access),
            RegType::Scalar
            | RegType::PacketEnd
            | RegType::Func { .. }
            | RegType::IterNum
            | RegType::Dynptr { .. } => Err(self.error(format!(
                "R{regno} invalid mem access '{}'",
                base.type_name()
            ))),
            RegType::Stack { frame } => {
                if let Some(Reg {
                    ty: RegType::Stack { frame: from },
                    ..
                }) = value
                {
                    if from > frame {
                        return Err(self.error(
                            "cannot spill pointers to stack into stack frame of the caller",
                        ));
                    }
                }
                let found =
                    self.stack_access(st, regno, base, frame, fixed, size, access, value)?;
                if access == Access::Write {
                    self.check_stack_depth(st)?;
                }
                Ok(found)
            }
            // Syscall programs: the context is a plain buffer, accessed at
            // any offset within it (userbpf; the kernel refuses variable
            // offsets), the largest end recorded for the runtime.
            RegType::Ctx if self.env.context == Context::Syscall => {
                let total = self.env.context.size();
                self.region_access(regno, base, fixed, size, total, |off, size| {
                    format!("invalid bpf_context access off={off} size={size}")
                })?;
                let end = fixed
                    .saturating_add(base.val.umax.min(u64::from(total)) as i64)
                    .saturating_add(i64::from(size));
                let end = u32::try_from(end).unwrap_or(u32::MAX);
                self.stats.max_ctx_offset = self.stats.max_ctx_offset.max(end);
                Ok(Found::Unknown)
            }
            RegType::Ctx => {
                self.ctx_ptr_offset(regno, base, self.env.context == Context::Syscall)?;
                if self.env.prog_type == Some(userbpf_vm::object::ProgramType::Tracing) {
                    if let Some(f) = self.traced_func() {
                        return self.traced_arg(&f, fixed, size, access);
                    }
                }
                let Some(field) = self
                    .env
                    .context
                    .access(fixed, size, access == Access::Write)
                else {
                    return Err(self.error(format!(
                        "invalid bpf_context access off={fixed} size={size}{}",
                        self.unmodelled()
                    )));
                };
                let end = u32::try_from(fixed.saturating_add(i64::from(size))).unwrap_or(u32::MAX);
                self.stats.max_ctx_offset = self.stats.max_ctx_offset.max(end);
                self.stats.ctx_words |= ctx_words(fixed, size);
                Ok(match field {
                    CtxField::Scalar => Found::Unknown,
                    // Every load of `data` (or `data_meta`) is the same
                    // pointer: they share id 0, so a bounds check on one
                    // proves the others (as in the kernel, whose context
                    // loads give packet pointers no id).
                    CtxField::PacketData => {
                        Found::Reg(Reg::pointer(RegType::Packet { range: 0 }, 0))
                    }
                    CtxField::PacketMeta => {
                        Found::Reg(Reg::pointer(RegType::PacketMeta { range: 0 }, 0))
                    }
                    CtxField::PacketEnd => Found::Reg(Reg::pointer(RegType::PacketEnd, 0)),
                    CtxField::SockCommonOrNull => Found::Reg(self.or_null(RegType::SockCommon)),
                    CtxField::SocketOrNull => Found::Reg(self.or_null(RegType::Socket)),
                    CtxField::Socket => Found::Reg(Reg::pointer(RegType::Socket, 0)),
                    CtxField::FlowKeys => Found::Reg(Reg::pointer(RegType::FlowKeys, 0)),
                    CtxField::TpBuffer => Found::Reg(Reg::pointer(RegType::TpBuffer, 0)),
                })
            }
            RegType::MapValue { map } => {
                let Some(m) = self.env.maps.get(map as usize) else {
                    return Err(self.error(format!("R{regno} points to an unknown map {map}")));
                };
                let value_size = m.value_size;
                let read_only = m.prog_read_only();
                let write_only = m.write_only;
                let fields = [
                    (m.spin_lock, 4, "bpf_spin_lock"),
                    (m.timer, 16, "bpf_timer"),
                ];
                self.region_access(regno, base, fixed, size, value_size, |off, size| {
                    format!("invalid access to map value, value_size={value_size} off={off} size={size}")
                })?;
                // A lock or a timer is its helpers' alone
                // (`check_map_access`: any byte of it the access may touch).
                let lo = fixed.saturating_add(base.val.smin);
                let hi = fixed
                    .saturating_add(base.val.umax.min(i64::MAX as u64) as i64)
                    .saturating_add(i64::from(size));
                for (at, len, what) in fields {
                    let Some(at) = at.map(i64::from) else {
                        continue;
                    };
                    if lo < at.saturating_add(len) && at < hi {
                        return Err(
                            self.error(format!("{what} cannot be accessed directly by load/store"))
                        );
                    }
                }
                if access == Access::Write && read_only {
                    return Err(self.error(format!(
                        "write into map forbidden, value_size={value_size} off={fixed} size={size}"
                    )));
                }
                if access == Access::Read && write_only {
                    return Err(self.error(format!(
                        "read from map forbidden, value_size={value_size} off={fixed} size={size}"
                    )));
                }
                // Values of read-only maps are not folded into constants
                // (`bpf_map_direct_read`): user space may still write
                // them, so a branch they decide is explored both ways. The
                // kernel folds those of frozen maps; with
                // `fold_read_only_maps` so do we (for a second try, whose
                // acceptance is the kernel's alone: see `check`).
                if self.opts.fold_read_only_maps && access == Access::Read {
                    if let Some(v) = self.read_only_value(map, base, fixed, size) {
                        self.stats.folded.get_or_insert(self.pc);
                        return Ok(Found::Reg(Reg::constant(v)));
                    }
                }
                Ok(Found::Unknown)
            }
            RegType::MapKey { map } => {
                let key_size = self.env.maps.get(map as usize).map_or(0, |m| m.key_size);
                if access == Access::Write {
                    return Err(self.error(format!("R{regno} cannot write into map_key")));
                }
                self.region_access(regno, base, fixed, size, key_size, |off, size| {
                    format!("invalid access to map key, key_size={key_size} off={off} size={size}")
                })?;
                Ok(Found::Unknown)
            }
            RegType::Mem {
                size: mem_size,
                rdonly,
            } => {
                if access == Access::Write && rdonly {
                    return Err(self.error(format!("R{regno} cannot write into rdonly_mem")));
                }
                self.region_access(regno, base, fixed, size, mem_size, |off, size| {
                    format!("invalid access to memory, mem_size={mem_size} off={off} size={size}")
                })?;
                if self.env.context.type_name() == "mem" {
                    let end = u32::try_from(
                        fixed
                            .saturating_add(base.val.umax.min(u64::from(u32::MAX)) as i64)
                            .saturating_add(i64::from(size)),
                    )
                    .unwrap_or(u32::MAX);
                    self.stats.max_ctx_offset = self.stats.max_ctx_offset.max(end);
                }
                Ok(Found::Unknown)
            }
            // `check_flow_keys_access`: the 56 bytes of `struct
            // bpf_flow_keys`, read and written.
            RegType::FlowKeys => {
                if value.is_some_and(|v| !v.is_scalar()) {
                    return Err(self.error(format!("R{regno} leaks addr into flow keys")));
                }
                if fixed < 0 || fixed.saturating_add(i64::from(size)) > FLOW_KEYS_SIZE {
                    return Err(self.error(format!(
                        "invalid access to flow keys off={fixed} size={size}"
                    )));
                }
                Ok(Found::Unknown)
            }
            // `check_tp_buffer_access`: any constant, non-negative offset
            // (the kernel records the largest end and checks it against
            // the tracepoint's writable size at attach time).
            RegType::TpBuffer => {
                if fixed < 0 {
                    return Err(self.error(format!(
                        "R{regno} invalid tracepoint buffer access: off={fixed}, size={size}"
                    )));
                }
                if base.val.is_const() != Some(0) {
                    return Err(self.error(format!(
                        "R{regno} invalid variable buffer offset: off={fixed}, var_off={}",
                        base.val.var_off
                    )));
                }
                let end = u32::try_from(fixed.saturating_add(i64::from(size))).unwrap_or(u32::MAX);
                self.stats.max_tp_access = self.stats.max_tp_access.max(end);
                Ok(Found::Unknown)
            }
            RegType::Socket | RegType::SockCommon | RegType::TcpSock | RegType::XdpSock => {
                if access == Access::Write {
                    return Err(
                        self.error(format!("R{regno} cannot write into {}", base.type_name()))
                    );
                }
                if !crate::ctx::sock_access(base.ty, fixed, size) {
                    return Err(self.error(format!(
                        "R{regno} invalid {} access off={fixed} size={size}",
                        base.type_name()
                    )));
                }
                Ok(Found::Unknown)
            }
            RegType::BtfId { id, trust } => {
                self.kernel_struct_access(regno, base, id, trust, fixed, size, access)
            }
            // Read at any offset (the loads cannot fault), never written.
            RegType::UntrustedMem => {
                if access == Access::Write {
                    return Err(
                        self.error(format!("R{regno} cannot write into {}", base.type_name()))
                    );
                }
                self.stats.kernel_memory.get_or_insert(self.pc);
                Ok(Found::Unknown)
            }
            RegType::RingbufMem { size: mem_size } => {
                self.region_access(regno, base, fixed, size, mem_size, |off, size| {
                    format!("invalid access to memory, mem_size={mem_size} off={off} size={size}")
                })?;
                Ok(Found::Unknown)
            }
            RegType::Packet { range } | RegType::PacketMeta { range } => {
                if access == Access::Write && !self.packet_writable() {
                    return Err(self.error("cannot write into packet".to_string()));
                }
                if base.val.smin < 0 {
                    return Err(self.error(format!(
                        "R{regno} min value is negative, either use unsigned index or do a if (index >=0) check."
                    )));
                }
                let end = fixed.saturating_add(i64::from(size));
                if fixed < 0 || end > i64::from(range) {
                    // As the kernel prints it: the access offset twice, and
                    // the pointer's id, which it gives only to pointers
                    // moved by a variable (its ids count differently).
                    let id = if base.val.is_const().is_some() {
                        0
                    } else {
                        base.id
                    };
                    return Err(self.error(format!(
                        "invalid access to packet, off={fixed} size={size}, R{regno}(id={id},off={fixed},r={range})\nR{regno} offset is outside of the packet"
                    )));
                }
                Ok(Found::Unknown)
            }
        }
    }

    /// The `size`-byte little-endian value at `fixed` of read-only map
    /// `map`'s known contents, when the pointer's offset is constant.
    fn read_only_value(&self, map: u32, base: &Reg, fixed: i64, size: u32) -> Option<u64> {
        let m = self.env.maps.get(map as usize)?;
        if !m.read_only {
            return None;
        }
        let var = base.val.is_const()? as i64;
        let at = usize::try_from(fixed.checked_add(var)?).ok()?;
        let bytes = m
            .contents
            .as_ref()?
            .get(at..at.checked_add(size as usize)?)?;
        let mut word = [0u8; 8];
        word.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(u64::from_le_bytes(word))
    }

    /// A read of a map's own kernel structure (`check_ptr_to_map_access`:
    /// `struct bpf_array` of an array, `struct bpf_htab` of a hash, ...),
    /// as of any kernel structure; the kernel's alone to run.
    fn map_ptr_access(
        &mut self,
        regno: u8,
        map: u32,
        fixed: i64,
        size: u32,
        access: Access,
    ) -> Result<Found, Box<VerifyError>> {
        let map_type = self.env.maps.get(map as usize).map_or(0, |m| m.map_type);
        let Some(structure) = crate::kstruct::map_struct(map_type) else {
            return Err(self.error(format!(
                "map_ptr access not supported for map type {map_type}"
            )));
        };
        let id = self.kernel_struct(structure, "a map's kernel structure")?;
        if fixed < 0 {
            return Err(self.error(format!(
                "R{regno} is {structure} invalid negative access: off={fixed}"
            )));
        }
        if access == Access::Write {
            return Err(self.error(format!("only read from {structure} is supported")));
        }
        let off = u32::try_from(fixed).unwrap_or(u32::MAX);
        // A pointer read there is as untrusted as the kernel's walk of an
        // untrusted-less structure makes it (`mark_btf_ld_reg`).
        self.read_kernel_struct(id, Trust::Plain, off, size)
    }

    /// A read of a tracing program's context: the traced function's
    /// arguments (and, for `fexit`, its return value) as the kernel's BTF
    /// types them (`tracing_prog_is_valid_access`, `btf_ctx_access`).
    fn traced_arg(
        &mut self,
        f: &crate::kstruct::TracedFunc,
        fixed: i64,
        size: u32,
        access: Access,
    ) -> Result<Found, Box<VerifyError>> {
        use userbpf_vm::object::AttachType as A;
        let invalid = format!("invalid bpf_context access off={fixed} size={size}");
        let in_args = (0..i64::from(crate::ctx::MAX_BPF_FUNC_ARGS * 8)).contains(&fixed);
        if !in_args || access == Access::Write || fixed.rem_euclid(i64::from(size.max(1))) != 0 {
            return Err(self.error(invalid));
        }
        let btf = self.kernel_btf("a tracing program's arguments")?;
        let off = u32::try_from(fixed).unwrap_or(0);
        let ret = self.env.attach_type == Some(A::TraceFexit);
        let fmod_ret = self.env.attach_type == Some(A::ModifyReturn);
        let arg = crate::kstruct::ctx_arg(&btf, f, off, size, ret, fmod_ret)
            .map_err(|line| self.error(format!("{line}\n{invalid}")))?;
        let end = u32::try_from(fixed.saturating_add(i64::from(size))).unwrap_or(u32::MAX);
        self.stats.max_ctx_offset = self.stats.max_ctx_offset.max(end);
        self.stats.ctx_words |= ctx_words(fixed, size);
        Ok(match arg {
            crate::kstruct::CtxArg::Scalar => Found::Unknown,
            crate::kstruct::CtxArg::Ptr { id, nullable } => {
                // A tracepoint's arguments are trusted (`prog_args_trusted`).
                let trust = if self.env.attach_type == Some(A::TraceRawTp) {
                    Trust::Trusted
                } else {
                    Trust::Plain
                };
                Found::Reg(self.pointer_maybe_null(RegType::BtfId { id, trust }, nullable))
            }
        })
    }

    /// A read of a kernel structure (`check_ptr_to_btf_access`): at a
    /// constant, non-negative offset, of a field the structure has; a
    /// pointer field gives a pointer to its structure, trusted as the
    /// kernel's lists of safe fields say.
    #[allow(clippy::too_many_arguments)]
    fn kernel_struct_access(
        &mut self,
        regno: u8,
        base: &Reg,
        id: u32,
        trust: Trust,
        fixed: i64,
        size: u32,
        access: Access,
    ) -> Result<Found, Box<VerifyError>> {
        // (The structure's name, for the messages only.)
        let tname = |v: &mut Self| {
            v.kernel_btf("a pointer to a kernel structure")
                .map(|btf| crate::kstruct::type_name(&btf, id))
        };
        if fixed < 0 {
            let tname = tname(self)?;
            return Err(self.error(format!(
                "R{regno} is ptr_{tname} invalid negative access: off={fixed}"
            )));
        }
        if base.val.is_const() != Some(0) {
            let tname = tname(self)?;
            return Err(self.error(format!(
                "R{regno} is ptr_{tname} invalid variable offset: off={fixed}, var_off={}",
                base.val.var_off
            )));
        }
        if access == Access::Write {
            return Err(self.error("only read is supported"));
        }
        let off = u32::try_from(fixed).unwrap_or(u32::MAX);
        self.read_kernel_struct(id, trust, off, size)
    }

    /// `size` bytes at `off` of kernel structure `id` read through a
    /// pointer of trust `trust` (`btf_struct_access`, then the trust of a
    /// pointer read: `check_ptr_to_btf_access`); the program is then the
    /// kernel's alone to run.
    fn read_kernel_struct(
        &mut self,
        id: u32,
        trust: Trust,
        off: u32,
        size: u32,
    ) -> Result<Found, Box<VerifyError>> {
        let btf = self.kernel_btf("a pointer to a kernel structure")?;
        self.stats.kernel_memory.get_or_insert(self.pc);
        match crate::kstruct::struct_access(&btf, id, off, size) {
            Err(message) => Err(self.error(message)),
            // (`Nested` comes only from `ids_match`.)
            Ok(Walked::Scalar | Walked::Nested) => Ok(Found::Unknown),
            Ok(Walked::UntrustedMem) => Ok(Found::Reg(Reg::pointer(RegType::UntrustedMem, 0))),
            Ok(Walked::Ptr {
                id: target,
                field,
                via_union,
            }) => {
                let (trust, maybe_null) = crate::kstruct::loaded_trust(
                    &btf,
                    trust,
                    id,
                    &field,
                    target,
                    via_union,
                    !self.env.sleepable,
                );
                let ty = RegType::BtfId { id: target, trust };
                Ok(Found::Reg(self.pointer_maybe_null(ty, maybe_null)))
            }
        }
    }

    fn packet_writable(&self) -> bool {
        match self.env.context {
            Context::Xdp { .. }
            | Context::Generic { .. }
            | Context::SkMsg
            | Context::Sockopt { .. } => true,
            Context::SkBuff(kind) => kind.packet_writable(),
            _ => false,
        }
    }

    /// Dynptrs on the stack (`STACK_DYNPTR`) over `[lo, end)` of frame
    /// `fi`: nothing reads them but the dynptr helpers; a write destroys
    /// an unreferenced one (both halves) and may not touch a referenced
    /// one. `helper`: the access is a helper's (register, offset, size).
    pub(crate) fn guard_dynptrs(
        &self,
        st: &mut State,
        fi: usize,
        lo: i64,
        end: i64,
        access: Access,
        helper: Option<(u8, i64, u32)>,
    ) -> Result<(), Box<VerifyError>> {
        let Some(frame) = st.frames.get_mut(fi) else {
            return Ok(());
        };
        let mut destroyed = Vec::new();
        let mut slot = lo.div_euclid(8).saturating_mul(8);
        while slot < end {
            let at = i32::try_from(slot).unwrap_or(0);
            if let Some(d) = crate::call::dynptr_half(frame, at) {
                let first = lo.max(slot);
                match (access, helper) {
                    (Access::Read, None) => {
                        return Err(self.error(format!(
                            "invalid read from stack off {first}+0 size {}",
                            end.saturating_sub(lo)
                        )))
                    }
                    (Access::Read, Some((regno, fixed, size))) => {
                        return Err(self.error(format!(
                            "invalid read from stack R{regno} off {fixed}+{} size {size}",
                            first.saturating_sub(fixed)
                        )))
                    }
                    (Access::Write, _) if d.ref_id != 0 => {
                        return Err(self.error(if helper.is_some() {
                            format!("potential write to dynptr at off={slot} disallowed")
                        } else {
                            "cannot overwrite referenced dynptr".to_string()
                        }))
                    }
                    (Access::Write, _) => destroyed.push(d.id),
                }
            }
            slot = slot.saturating_add(8);
        }
        if !destroyed.is_empty() {
            frame.stack.update(|s| {
                if s.is_spill()
                    && matches!(s.spill.ty, RegType::Dynptr { .. })
                    && destroyed.contains(&s.spill.id)
                {
                    *s = Slot::INVALID;
                }
            });
        }
        Ok(())
    }

    /// `check_mem_region_access`: `[fixed + var, + size)` inside
    /// `[0, region)` for every value of the variable part.
    fn region_access(
        &self,
        regno: u8,
        base: &Reg,
        fixed: i64,
        size: u32,
        region: u32,
        msg: impl Fn(i64, u32) -> String,
    ) -> Result<(), Box<VerifyError>> {
        let var = &base.val;
        if var.smin < 0
            && (var.smin == i64::MIN
                || var.smin <= -MAX_VAR_OFF
                || fixed.saturating_add(var.smin) < 0)
        {
            return Err(self.error(format!(
                "R{regno} min value is negative, either use unsigned index or do a if (index >=0) check."
            )));
        }
        let lo = fixed.saturating_add(var.smin);
        if lo < 0 || lo.saturating_add(i64::from(size)) > i64::from(region) {
            return Err(self.error(msg(lo, size)));
        }
        if var.umax >= MAX_VAR_OFF as u64 {
            return Err(self.error(format!(
                "R{regno} unbounded memory access, make sure to bounds check any such access"
            )));
        }
        let hi = fixed.saturating_add(var.umax as i64);
        if hi < 0 || hi.saturating_add(i64::from(size)) > i64::from(region) {
            return Err(self.error(msg(hi, size)));
        }
        Ok(())
    }

    /// A stack access out of the frame, in the kernel's words
    /// (`check_stack_access_within_bounds`).
    fn stack_bounds_error(
        &self,
        regno: u8,
        base: &Reg,
        fixed: i64,
        size: u32,
        access: Access,
    ) -> Box<VerifyError> {
        let what = if access == Access::Read {
            " read from"
        } else {
            " write to"
        };
        let var = &base.val;
        self.error(if var.is_const().is_some() {
            format!("invalid{what} stack R{regno} off={fixed} size={size}")
        } else if var.smax >= MAX_VAR_OFF || var.smin <= -MAX_VAR_OFF {
            format!("invalid unbounded variable-offset{what} stack R{regno}")
        } else {
            format!(
                "invalid variable-offset{what} stack R{regno} var_off={} off={fixed} size={size}",
                base.val.var_off
            )
        })
    }

    /// Accesses the kernel always aligns (atomics, `MEM_ALIGNED` helper
    /// arguments): aligned at every offset the pointer may have
    /// (`tnum_is_aligned` on the variable offset plus the fixed ones), in
    /// the kernel's words (`check_generic_ptr_alignment`).
    pub(crate) fn aligned(&self, base: &Reg, off: i32, bytes: u32) -> Result<(), Box<VerifyError>> {
        let fixed = i64::from(base.off).wrapping_add(i64::from(off)) as u64;
        let at = base.val.var_off.add(Tnum::constant(fixed));
        if (at.value | at.mask) & u64::from(bytes.wrapping_sub(1)) != 0 {
            let desc = match base.ty {
                RegType::Stack { .. } => "stack ",
                RegType::MapValue { .. } => "value ",
                _ => "",
            };
            return Err(self.error(format!(
                "misaligned {desc}access off {}+{}+{off} size {bytes}",
                var_off_text(&base.val),
                base.off
            )));
        }
        Ok(())
    }

    /// The kernel's `__check_ptr_off_reg` for a context pointer: no
    /// negative offset, no fixed one (unless `fixed_ok`), no variable one.
    pub(crate) fn ctx_ptr_offset(
        &self,
        regno: u8,
        reg: &Reg,
        fixed_ok: bool,
    ) -> Result<(), Box<VerifyError>> {
        if reg.off < 0 {
            return Err(self.error(format!(
                "negative offset ctx ptr R{regno} off={} disallowed",
                reg.off
            )));
        }
        if reg.off != 0 && !fixed_ok {
            return Err(self.error(format!(
                "dereference of modified ctx ptr R{regno} off={} disallowed",
                reg.off
            )));
        }
        if reg.val.is_const() != Some(0) {
            return Err(self.error(format!(
                "variable ctx access var_off={} disallowed",
                reg.val.var_off
            )));
        }
        Ok(())
    }

    /// Stack accesses: bounds, alignment, and the per-byte state.
    #[allow(clippy::too_many_arguments)]
    fn stack_access(
        &mut self,
        st: &mut State,
        regno: u8,
        base: &Reg,
        frame: u8,
        fixed: i64,
        size: u32,
        access: Access,
        value: Option<Reg>,
    ) -> Result<Found, Box<VerifyError>> {
        let fi = usize::from(frame);
        if fi >= st.frames.len() {
            return Err(self.error(format!(
                "R{regno} points to a stack frame that has returned"
            )));
        }
        let size_i = i64::from(size);
        let lo = fixed.saturating_add(base.val.smin);
        let hi = fixed.saturating_add(base.val.smax);
        let constant = base.val.is_const().is_some();
        // Stack accesses are aligned (the kernel's strict rule), also at
        // a variable offset: every possible offset must be (the variable
        // part's bits plus the fixed offset, as `tnum_is_aligned` sees
        // them after `tnum_add`).
        let low = u64::from(size).wrapping_sub(1);
        let at = base.val.var_off.add(Tnum::constant(fixed as u64));
        if (at.value | at.mask) & low != 0 {
            return Err(self.error(format!(
                "misaligned stack access off {}+{}+{} size {size}",
                var_off_text(&base.val),
                base.off,
                fixed.saturating_sub(i64::from(base.off))
            )));
        }
        if base.val.smin <= -MAX_VAR_OFF
            || base.val.smax >= MAX_VAR_OFF
            || lo < i64::from(MAX_BPF_STACK).wrapping_neg()
            || hi.saturating_add(size_i) > 0
        {
            return Err(self.stack_bounds_error(regno, base, fixed, size, access));
        }
        let end = hi.saturating_add(size_i);
        self.guard_dynptrs(st, fi, lo, end, access, None)?;
        let frame_state = &mut st.frames[fi];
        let depth = u32::try_from(lo.unsigned_abs()).unwrap_or(u32::MAX);
        // The deepest byte touched, rounded to a slot.
        let _ = depth;
        if !constant {
            // Variable offset: reads need every possible byte written;
            // writes may hit any of them.
            match access {
                Access::Read => {
                    for o in lo..end {
                        let o = o as i32;
                        // Uninitialised bytes, or bytes of a spilled pointer
                        // (read as a number, they would leak it).
                        let spill = frame_state
                            .slot(o)
                            .filter(|(s, b)| s.bytes[*b] == ByteKind::Spill)
                            .map(|(s, _)| s.spill);
                        let pointer =
                            spill.is_some_and(|r| !r.is_scalar() && !r.is_kernel_address());
                        if spill.is_some_and(|r| r.is_kernel_address()) {
                            self.stats.kernel_memory.get_or_insert(self.pc);
                        }
                        if frame_state.byte(o) == ByteKind::Invalid || pointer {
                            return Err(self.error(format!(
                                "invalid variable-offset read from stack R{regno} var_off={} off={} size={size}",
                                base.val.var_off,
                                fixed
                            )));
                        }
                    }
                    return Ok(Found::Unknown);
                }
                Access::Write => {
                    if let Some(v) = value {
                        if !v.is_scalar() {
                            return Err(self.error(format!(
                                "spilled ptr in range of var-offset stack write R{regno}"
                            )));
                        }
                    }
                    for o in lo..end {
                        let (slot, b) = frame_state.slot_mut(o as i32);
                        if slot.bytes.contains(&ByteKind::Spill) {
                            slot.forget_spill();
                        }
                        if slot.bytes[b] == ByteKind::Zero {
                            slot.bytes[b] = ByteKind::Misc;
                        }
                    }
                    return Ok(Found::Unknown);
                }
            }
        }
        let start = lo as i32;
        match access {
            Access::Write => {
                let v = value.unwrap_or_else(|| Reg::scalar(Scalar::unknown_bits(size as usize)));
                if size == 8 {
                    // A spill keeps the whole register state.
                    let (slot, _) = frame_state.slot_mut(start);
                    *slot = Slot {
                        bytes: [ByteKind::Spill; 8],
                        spill: v,
                    };
                    if value.is_none() {
                        // Atomic or helper write: the value is unknown.
                        slot.bytes = [ByteKind::Misc; 8];
                        slot.spill = Reg::NOT_INIT;
                    }
                } else {
                    if !v.is_scalar() {
                        return Err(self.error("invalid size of register spill".to_string()));
                    }
                    // As the kernel (`check_stack_write_fixed_off`): a
                    // number stored at the start of a slot is a spill of
                    // the store's size, zero or not (its size decides
                    // what `get_constant_map_key` finds); zeros elsewhere
                    // are STACK_ZERO bytes.
                    let at_slot_start = start.rem_euclid(8) == 0;
                    let zero = v.const_value() == Some(0) && value.is_some() && !at_slot_start;
                    for o in start..start.saturating_add(size as i32) {
                        let (slot, b) = frame_state.slot_mut(o);
                        if slot.bytes.contains(&ByteKind::Spill) {
                            // What was spilled here is partly overwritten.
                            slot.forget_spill();
                        }
                        slot.bytes[b] = if zero { ByteKind::Zero } else { ByteKind::Misc };
                    }
                    if value.is_some() && !zero {
                        // A narrow spill of a number keeps its value (the
                        // low `size` bytes) for a fill of at most its
                        // size, and its link to the register if the value
                        // fits (`reg_value_fits`).
                        let spill = truncated(&v, size);
                        let (slot, b) = frame_state.slot_mut(start);
                        for k in slot.bytes.iter_mut().skip(b).take(size as usize) {
                            *k = ByteKind::Spill;
                        }
                        slot.spill = spill;
                    }
                }
                Ok(Found::Unknown)
            }
            Access::Read => {
                if let Some((slot, b)) = frame_state.slot(start) {
                    if size == 8 && slot.is_spill() {
                        if slot.spill.ty == RegType::IterNum {
                            return Err(self.error(
                                "the stack slot holds an iterator (iter_num): its state is not readable",
                            ));
                        }
                        return Ok(Found::Reg(slot.spill));
                    }
                    // A narrow fill from the first byte of a spilled
                    // number: its low `size` bytes, still linked to the
                    // register if the value fits (`bpf_stack_narrow_access_ok`).
                    if size < 8
                        && slot.spill.is_scalar()
                        && slot
                            .spill_range()
                            .is_some_and(|(first, n)| first == b && size as usize <= n)
                    {
                        return Ok(Found::Reg(truncated(&slot.spill, size)));
                    }
                }
                let mut all_zero = true;
                for o in start..start.saturating_add(size as i32) {
                    match frame_state.byte(o) {
                        ByteKind::Invalid => {
                            return Err(self.error(uninit_read(
                                frame_state,
                                regno,
                                start.into(),
                                size,
                                format!(
                                    "invalid read from stack off {start}+{} size {size}",
                                    o.saturating_sub(start)
                                ),
                            )));
                        }
                        ByteKind::Spill => {
                            let (slot, _) = frame_state
                                .slot(o)
                                .ok_or_else(|| self.error("corrupted spill memory"))?;
                            if !slot.spill.is_scalar() {
                                return Err(self.error("invalid size of register fill".to_string()));
                            }
                            if slot.spill.const_value() != Some(0) {
                                all_zero = false;
                            }
                        }
                        ByteKind::Misc => all_zero = false,
                        ByteKind::Zero => {}
                    }
                }
                if all_zero {
                    Ok(Found::Reg(Reg::constant(0)))
                } else {
                    Ok(Found::Unknown)
                }
            }
        }
    }

    /// Checks that a helper may read (`Access::Read`, every byte
    /// initialised) or write `size` bytes at the pointer in `regno`;
    /// writes mark stack bytes as initialised.
    pub(crate) fn helper_mem(
        &mut self,
        st: &mut State,
        regno: u8,
        size_min: u64,
        size_max: u64,
        access: Access,
        no_pointers: bool,
    ) -> Result<(), Box<VerifyError>> {
        let base = *st.reg(regno);
        if base.ty == RegType::NotInit {
            return Err(self.error(format!("R{regno} !read_ok")));
        }
        // Nothing to access; a stack pointer must still lie in the frame
        // (the kernel checks its bounds with size 0).
        if size_max == 0 && !matches!(base.ty, RegType::Stack { .. }) {
            return Ok(());
        }
        let size = u32::try_from(size_max).map_err(|_| {
            self.error(format!(
                "R{regno} unbounded memory access, use 'var &= const' or 'if (var < const)'"
            ))
        })?;
        let _ = size_min;
        match base.ty {
            RegType::Stack { frame } => {
                let fi = usize::from(frame);
                let fixed = i64::from(base.off);
                let lo = fixed.saturating_add(base.val.smin);
                let hi = fixed
                    .saturating_add(base.val.smax)
                    .saturating_add(i64::from(size));
                if base.val.smin <= -MAX_VAR_OFF
                    || base.val.smax >= MAX_VAR_OFF
                    || lo < i64::from(MAX_BPF_STACK).wrapping_neg()
                    || hi > 0
                    || fi >= st.frames.len()
                {
                    // A helper reads or writes the stack.
                    return Err(self.stack_bounds_error(regno, &base, fixed, size, access));
                }
                if size == 0 {
                    return Ok(());
                }
                self.guard_dynptrs(st, fi, lo, hi, access, Some((regno, fixed, size)))?;
                let frame_state = &mut st.frames[fi];
                match access {
                    Access::Read => {
                        for o in lo..hi {
                            if frame_state.byte(o as i32) == ByteKind::Invalid {
                                return Err(self.error(uninit_read(
                                    frame_state,
                                    regno,
                                    lo,
                                    size,
                                    format!(
                                        "invalid read from stack R{regno} off {}+{} size {size}",
                                        fixed,
                                        o.saturating_sub(fixed)
                                    ),
                                )));
                            }
                        }
                        for o in lo..hi {
                            if !no_pointers {
                                break;
                            }
                            if let Some((slot, _)) = frame_state.slot(o as i32) {
                                if slot.is_spill() && slot.spill.is_kernel_address() {
                                    // A kernel address as a number: the
                                    // kernel's alone, as for a store.
                                    self.stats.kernel_memory.get_or_insert(self.pc);
                                }
                                if slot.is_spill()
                                    && !slot.spill.is_scalar()
                                    && !slot.spill.is_kernel_address()
                                {
                                    // The kernel's refusal for loaders
                                    // without CAP_PERFMON.
                                    return Err(self.error(format!(
                                        "invalid read from stack R{regno} off {fixed}+{} size {size} \
                                         (a spilled pointer: its address would leak)",
                                        o.saturating_sub(fixed)
                                    )));
                                }
                            }
                        }
                    }
                    Access::Write => {
                        let exact = base.val.is_const().is_some();
                        for o in lo..hi {
                            let (slot, b) = frame_state.slot_mut(o as i32);
                            if slot.bytes.contains(&ByteKind::Spill) {
                                slot.forget_spill();
                            }
                            if exact || slot.bytes[b] != ByteKind::Invalid {
                                slot.bytes[b] = ByteKind::Misc;
                            }
                        }
                        self.check_stack_depth(st)?;
                    }
                }
                Ok(())
            }
            // Syscall programs: the context is a plain buffer helpers may
            // use (the kernel checks it the same way).
            RegType::Ctx if self.env.context == Context::Syscall => {
                // (userbpf also takes a constant offset into the buffer,
                // which the kernel refuses.)
                let off = i64::from(base.off);
                let end = off.saturating_add(i64::from(size));
                if base.val.is_const() != Some(0)
                    || off < 0
                    || end > i64::from(self.env.context.size())
                {
                    return Err(
                        self.error(format!("invalid bpf_context access off={off} size={size}"))
                    );
                }
                let end = u32::try_from(end).unwrap_or(u32::MAX);
                self.stats.max_ctx_offset = self.stats.max_ctx_offset.max(end);
                Ok(())
            }
            _ => self
                .access(st, regno, &base, 0, size, access, None)
                .map(|_| ()),
        }
    }
}

/// The bits of [`crate::Stats::ctx_words`] for `size` bytes at `off`.
/// Whether a number fits in `bytes` bytes (`get_reg_width`).
fn fits(v: &Reg, bytes: u32) -> bool {
    bytes >= 8 || v.val.umax >> bytes.saturating_mul(8) == 0
}

/// The low `bytes` bytes of a number, linked to it only if the number
/// fits in them.
fn truncated(v: &Reg, bytes: u32) -> Reg {
    if fits(v, bytes) {
        return *v;
    }
    let mask = 1u64
        .checked_shl(bytes.saturating_mul(8))
        .map_or(u64::MAX, |m| m.wrapping_sub(1));
    Reg::scalar(v.val.alu(
        userbpf_vm::isa::AluOp::And,
        userbpf_vm::isa::Width::W64,
        &Scalar::constant(mask),
    ))
}

fn ctx_words(off: i64, size: u32) -> u64 {
    let first = off.max(0) / 8;
    let last = off
        .max(0)
        .saturating_add(i64::from(size.max(1)))
        .saturating_sub(1)
        / 8;
    (first..=last).fold(0, |m, w| m | 1u64 << w.min(63))
}

/// A pointer's variable offset as the kernel's alignment messages print it:
/// the number when it is known, else the tnum.
fn var_off_text(val: &Scalar) -> String {
    match val.is_const() {
        Some(v) => (v as i64).to_string(),
        None => val.var_off.to_string(),
    }
}

/// `sizeof(struct bpf_flow_keys)`.
const FLOW_KEYS_SIZE: i64 = 56;

/// The kernel's message for a read of uninitialised stack (refused to
/// loaders without `CAP_PERFMON`, which `allow_uninit_stack` needs, and by
/// userbpf to all): below the stack the path has written, the bounds
/// check's (`check_stack_slot_within_bounds`:
/// `invalid read from stack R10 off=-8 size=8`), otherwise `within`, the
/// byte-by-byte check's.
fn uninit_read(frame: &Frame, regno: u8, start: i64, size: u32, within: String) -> String {
    let allocated = i64::try_from(frame.stack.len())
        .unwrap_or(i64::MAX)
        .saturating_mul(8);
    if start < allocated.saturating_neg() {
        format!("invalid read from stack R{regno} off={start} size={size}")
    } else {
        within
    }
}
