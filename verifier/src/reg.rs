//! The abstract state of one register (`struct bpf_reg_state`): its type
//! and, for scalars, the value's bounds; for pointers, the fixed and the
//! variable part of the offset into the region pointed to.

use std::fmt;

use userbpf_vm::proto::DynptrKind;

use crate::scalar::Scalar;

/// How far the kernel trusts a pointer to a kernel structure: the
/// `PTR_TRUSTED`, `MEM_RCU` and `PTR_UNTRUSTED` flags of `PTR_TO_BTF_ID`.
/// Every kind may be read (the kernel's loads through them cannot fault);
/// only a trusted one is known not to be NULL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trust {
    /// No flag: a pointer read from a field of a structure (the kernel's
    /// "old deprecated PTR_TO_BTF_ID").
    Plain,
    /// `PTR_TRUSTED`: valid for the whole program
    /// (`bpf_get_current_task_btf`).
    Trusted,
    /// `MEM_RCU`: valid in the RCU read section the program runs in.
    Rcu,
    /// `PTR_UNTRUSTED`: may point anywhere.
    Untrusted,
}

impl Trust {
    /// The kernel's prefix for the flag (`reg_type_str`).
    pub fn prefix(self) -> &'static str {
        match self {
            Trust::Plain => "",
            Trust::Trusted => "trusted_",
            Trust::Rcu => "rcu_",
            Trust::Untrusted => "untrusted_",
        }
    }
}

/// What a register holds (`enum bpf_reg_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegType {
    /// Never written (`NOT_INIT`): reading it is an error.
    NotInit,
    /// A number (`SCALAR_VALUE`).
    Scalar,
    /// The context (`PTR_TO_CTX`).
    Ctx,
    /// The stack of call frame `frame` (`PTR_TO_STACK`).
    Stack {
        /// Index of the frame in the call chain (0: the entry function).
        frame: u8,
    },
    /// A map itself (`CONST_PTR_TO_MAP`), argument of map helpers.
    ConstMap {
        /// Index of the map in the environment.
        map: u32,
    },
    /// A map value (`PTR_TO_MAP_VALUE`).
    MapValue {
        /// Index of the map.
        map: u32,
    },
    /// A map key, in a `bpf_for_each_map_elem` callback (`PTR_TO_MAP_KEY`).
    MapKey {
        /// Index of the map.
        map: u32,
    },
    /// Packet data (`PTR_TO_PACKET`); `range` bytes from `off` 0 of the
    /// pointers with the same id are known to lie before `data_end`.
    Packet {
        /// Proven bytes.
        range: u32,
    },
    /// Packet metadata (`PTR_TO_PACKET_META`).
    PacketMeta {
        /// Proven bytes (up to `data`).
        range: u32,
    },
    /// One past the packet (`PTR_TO_PACKET_END`): only for comparisons.
    PacketEnd,
    /// Memory of a known size (`PTR_TO_MEM`): a raw program's buffer, or
    /// memory a helper returned.
    Mem {
        /// Size in bytes.
        size: u32,
        /// `MEM_RDONLY`.
        rdonly: bool,
    },
    /// A ring buffer record (`PTR_TO_MEM | MEM_RINGBUF`), to be submitted
    /// or discarded.
    RingbufMem {
        /// Size in bytes.
        size: u32,
    },
    /// A subprogram (`PTR_TO_FUNC`), as a callback argument.
    Func {
        /// Its first pc.
        pc: u32,
    },
    /// An open-coded numeric iterator (`struct bpf_iter_num`, the
    /// kernel's `STACK_ITER`): only ever in a stack slot, opaque to the
    /// program.
    IterNum,
    /// A socket (`PTR_TO_SOCKET`, `struct bpf_sock`): read only, at fixed
    /// offsets, no arithmetic.
    Socket,
    /// A socket's common part (`PTR_TO_SOCK_COMMON`), which may be a
    /// request or time-wait socket: fewer fields than [`RegType::Socket`].
    SockCommon,
    /// A TCP socket (`PTR_TO_TCP_SOCK`, `struct bpf_tcp_sock`).
    TcpSock,
    /// An AF_XDP socket from an `XSKMAP` lookup (`PTR_TO_XDP_SOCK`,
    /// `struct bpf_xdp_sock`; until its null check the kernel calls it a
    /// `map_value_or_null`).
    XdpSock,
    /// A flow dissector's `struct bpf_flow_keys` (`PTR_TO_FLOW_KEYS`):
    /// fixed offsets, no arithmetic.
    FlowKeys,
    /// A writable raw tracepoint's buffer (`PTR_TO_TP_BUFFER`, `args[0]`
    /// of a `raw_tp.w` program): read and written at constant,
    /// non-negative offsets; the kernel checks the largest end against the
    /// tracepoint's writable size when the program is attached.
    TpBuffer,
    /// A kernel structure the kernel's BTF describes (`PTR_TO_BTF_ID`):
    /// read only, at constant offsets checked against the structure's
    /// layout; reads yield numbers or further such pointers.
    BtfId {
        /// The structure's BTF type id (in the kernel's BTF).
        id: u32,
        /// How far the kernel trusts the pointer.
        trust: Trust,
    },
    /// What a pointer field of a kernel structure points to when it is
    /// not a structure (`PTR_TO_MEM | MEM_RDONLY | PTR_UNTRUSTED`): read
    /// at any offset, never written, possibly NULL.
    UntrustedMem,
    /// One half of a `struct bpf_dynptr` (the kernel's `STACK_DYNPTR`):
    /// only ever in a stack slot, opaque to the program; both halves
    /// share the dynptr's id (and reference, for a ring buffer record).
    Dynptr {
        /// What it points to.
        kind: DynptrKind,
        /// The first 8 bytes (else the second).
        first: bool,
    },
}

impl RegType {
    /// Whether this is a pointer type (everything but scalars and
    /// not-init).
    pub fn is_pointer(self) -> bool {
        !matches!(self, RegType::NotInit | RegType::Scalar)
    }

    /// Whether this is a socket pointer (`type_is_sk_pointer`).
    pub fn is_socket(self) -> bool {
        matches!(
            self,
            RegType::Socket | RegType::SockCommon | RegType::TcpSock
        )
    }

    /// Whether a valid pointer of this type may still be 0: kernel
    /// structures' pointers the kernel does not trust (`reg_not_null`),
    /// which a comparison with 0 does not decide.
    pub fn may_be_zero(self) -> bool {
        match self {
            RegType::BtfId { trust, .. } => trust != Trust::Trusted,
            RegType::UntrustedMem => true,
            _ => false,
        }
    }

    /// The kernel's name for the type (`reg_type_str`).
    pub fn name(self, maybe_null: bool) -> String {
        // A lookup in a map of maps or an XSKMAP is a map value until
        // its null check (`PTR_TO_MAP_VALUE | PTR_MAYBE_NULL`).
        if matches!(self, RegType::XdpSock | RegType::ConstMap { .. }) && maybe_null {
            return "map_value_or_null".to_string();
        }
        if let RegType::BtfId { trust, .. } = self {
            let null = if maybe_null { "or_null_" } else { "" };
            return format!("{}ptr_{null}", trust.prefix());
        }
        let base = match self {
            RegType::NotInit => "?",
            RegType::Scalar => "scalar",
            RegType::Ctx => "ctx",
            RegType::Stack { .. } => "fp",
            RegType::ConstMap { .. } => "map_ptr",
            RegType::MapValue { .. } => "map_value",
            RegType::MapKey { .. } => "map_key",
            RegType::Packet { .. } => "pkt",
            RegType::PacketMeta { .. } => "pkt_meta",
            RegType::PacketEnd => "pkt_end",
            RegType::Mem { rdonly: true, .. } => "rdonly_mem",
            RegType::Mem { .. } => "mem",
            RegType::RingbufMem { .. } => "ringbuf_mem",
            RegType::Func { .. } => "func",
            RegType::IterNum => "iter_num",
            RegType::Socket => "sock",
            RegType::SockCommon => "sock_common",
            RegType::TcpSock => "tcp_sock",
            RegType::XdpSock => "xdp_sock",
            RegType::FlowKeys => "flow_keys",
            RegType::TpBuffer => "tp_buffer",
            RegType::BtfId { .. } => "ptr_",
            RegType::UntrustedMem => "rdonly_untrusted_mem",
            RegType::Dynptr { .. } => "dynptr",
        };
        if maybe_null {
            format!("{base}_or_null")
        } else {
            base.to_string()
        }
    }
}

/// One register's abstract state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reg {
    /// The type.
    pub ty: RegType,
    /// `PTR_MAYBE_NULL`: the pointer may be 0 until checked.
    pub maybe_null: bool,
    /// Fixed part of a pointer's offset (0 for scalars).
    pub off: i32,
    /// A scalar's value, or a pointer's variable offset.
    pub val: Scalar,
    /// Links copies: registers with the same non-zero id hold the same
    /// value (scalars) or the same possibly-null pointer, so a check on
    /// one applies to all.
    pub id: u32,
    /// The acquired reference this pointer holds (ring buffer records,
    /// sockets from lookups and their casts), 0 for none.
    pub ref_id: u32,
}

impl Reg {
    /// A never-written register.
    pub const NOT_INIT: Reg = Reg {
        ty: RegType::NotInit,
        maybe_null: false,
        off: 0,
        val: Scalar::UNKNOWN,
        id: 0,
        ref_id: 0,
    };

    /// A scalar with this abstract value.
    pub fn scalar(val: Scalar) -> Reg {
        Reg {
            ty: RegType::Scalar,
            val,
            ..Reg::NOT_INIT
        }
    }

    /// A known constant.
    pub fn constant(v: u64) -> Reg {
        Reg::scalar(Scalar::constant(v))
    }

    /// An unknown scalar.
    pub fn unknown() -> Reg {
        Reg::scalar(Scalar::UNKNOWN)
    }

    /// A pointer of type `ty` at fixed offset `off`.
    pub fn pointer(ty: RegType, off: i32) -> Reg {
        Reg {
            ty,
            off,
            val: Scalar::constant(0),
            ..Reg::NOT_INIT
        }
    }

    /// Whether this is the address of kernel memory (a kernel structure,
    /// or what one points to): it exists only in programs the kernel
    /// runs, where it may also be stored as a number, into the kernel's
    /// maps or a helper's input, as the kernel allows root (kprobes read
    /// the same addresses from their registers as numbers). It cannot
    /// leak user space's addresses.
    pub fn is_kernel_address(&self) -> bool {
        matches!(self.ty, RegType::BtfId { .. } | RegType::UntrustedMem)
    }

    /// Whether this is a scalar.
    pub fn is_scalar(&self) -> bool {
        self.ty == RegType::Scalar
    }

    /// The constant value of a scalar, if known.
    pub fn const_value(&self) -> Option<u64> {
        if self.is_scalar() {
            self.val.is_const()
        } else {
            None
        }
    }

    /// The kernel's type name (`map_value_or_null`).
    pub fn type_name(&self) -> String {
        self.ty.name(self.maybe_null)
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ty {
            RegType::NotInit => f.write_str("?"),
            RegType::Scalar => {
                if self.id != 0 {
                    write!(f, "{}(id={})", self.val, self.id)
                } else {
                    write!(f, "{}", self.val)
                }
            }
            ty => {
                write!(f, "{}(", ty.name(self.maybe_null))?;
                let mut sep = "";
                if self.id != 0 {
                    write!(f, "id={}", self.id)?;
                    sep = ",";
                }
                if self.ref_id != 0 {
                    write!(f, "{sep}ref_obj_id={}", self.ref_id)?;
                    sep = ",";
                }
                match ty {
                    RegType::MapValue { map }
                    | RegType::ConstMap { map }
                    | RegType::MapKey { map } => {
                        write!(f, "{sep}map={map}")?;
                        sep = ",";
                    }
                    RegType::Packet { range } | RegType::PacketMeta { range } => {
                        write!(f, "{sep}r={range}")?;
                        sep = ",";
                    }
                    RegType::Mem { size, .. } | RegType::RingbufMem { size } => {
                        write!(f, "{sep}sz={size}")?;
                        sep = ",";
                    }
                    RegType::Func { pc } => {
                        write!(f, "{sep}pc={pc}")?;
                        sep = ",";
                    }
                    RegType::BtfId { id, .. } => {
                        write!(f, "{sep}btf_id={id}")?;
                        sep = ",";
                    }
                    RegType::Stack { frame } if frame != 0 => {
                        write!(f, "{sep}frame={frame}")?;
                        sep = ",";
                    }
                    _ => {}
                }
                if self.off != 0 {
                    write!(f, "{sep}off={}", self.off)?;
                    sep = ",";
                }
                if self.val.is_const() != Some(0) {
                    write!(f, "{sep}var_off={}", self.val.var_off)?;
                }
                f.write_str(")")
            }
        }
    }
}
