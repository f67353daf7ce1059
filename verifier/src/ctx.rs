//! Context layouts: which bytes of the context a program of each kind may
//! read or write, with what sizes, and which fields hold packet pointers
//! (the kernel's `*_is_valid_access` callbacks, x86-64 layouts).

use userbpf_vm::context::trace::{context_size, PT_REGS_SIZE};
use userbpf_vm::context::{SK_BUFF_SIZE, XDP_MD_SIZE};
use userbpf_vm::object::{AttachType, ProgramKind, ProgramType};

use crate::reg::RegType;

/// The context a program receives in `r1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// Raw bytecode run on a buffer: `r1` points to `len` bytes of
    /// memory the program may read and write, `r2` holds `len`.
    Raw {
        /// Buffer size (0: `r1` and `r2` are 0).
        len: u32,
    },
    /// `struct pt_regs` (uprobes, uretprobes, USDT, kprobes): read only.
    PtRegs,
    /// `struct bpf_perf_event_data`: the registers, `sample_period`,
    /// `addr`; read only.
    PerfEvent,
    /// A tracepoint record of `size` bytes (the syscall tracepoints'
    /// `trace_event_raw_sys_enter`/`_exit`; `None`: an unknown
    /// tracepoint, bounded by `PERF_MAX_TRACE_SIZE`). The common fields
    /// (first 8 bytes) are not readable; read only.
    Tracepoint {
        /// Record size.
        size: Option<u32>,
    },
    /// `struct bpf_raw_tracepoint_args`: `u64 args[]`, read only.
    RawTracepoint,
    /// `struct bpf_raw_tracepoint_args` of a writable raw tracepoint
    /// (`BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE`): `args[0]` is the
    /// tracepoint's buffer (`PTR_TO_TP_BUFFER`), read and written through;
    /// read only itself.
    RawTracepointWritable,
    /// `struct xdp_md`.
    Xdp {
        /// `egress_ifindex` is readable: programs attached to a devmap
        /// entry (`BPF_XDP_DEVMAP`).
        egress: bool,
    },
    /// `struct __sk_buff`, with the rules of the program type.
    SkBuff(SkbKind),
    /// `struct bpf_cgroup_dev_ctx` (`BPF_PROG_TYPE_CGROUP_DEVICE`): read
    /// only.
    CgroupDevice,
    /// `struct bpf_sysctl` (`BPF_PROG_TYPE_CGROUP_SYSCTL`): `file_pos`
    /// is writable.
    Sysctl,
    /// `struct bpf_sock` as the context (`BPF_PROG_TYPE_CGROUP_SOCK`):
    /// which fields depends on the hook.
    CgroupSock(SockHook),
    /// `struct bpf_sk_lookup` (`BPF_PROG_TYPE_SK_LOOKUP`): read only,
    /// `sk` a socket or NULL.
    SkLookup,
    /// `struct bpf_sock_addr` (`BPF_PROG_TYPE_CGROUP_SOCK_ADDR`): the
    /// address fields of the hook's family, `sk` a socket.
    SockAddr {
        /// The address family of the hook.
        family: AddrFamily,
        /// A `sendmsg` hook: `msg_src_ip4`/`_ip6` too.
        sendmsg: bool,
    },
    /// `struct bpf_sock_ops` (`BPF_PROG_TYPE_SOCK_OPS`): 4-byte fields,
    /// the socket or NULL, the packet (read only); `reply` and
    /// `sk_txhash` are writable.
    SockOps,
    /// `struct sk_msg_md` (`BPF_PROG_TYPE_SK_MSG`): the message as a
    /// packet, 4-byte fields, the socket.
    SkMsg,
    /// `struct __sk_buff` of a flow dissector
    /// (`BPF_PROG_TYPE_FLOW_DISSECTOR`): the packet (read only) and
    /// `flow_keys`.
    FlowDissector,
    /// `struct sk_reuseport_md` (`BPF_PROG_TYPE_SK_REUSEPORT`): the packet
    /// (read only), a few fields, the socket and the migrating one.
    SkReuseport,
    /// `struct bpf_sockopt` (`BPF_PROG_TYPE_CGROUP_SOCKOPT`): the socket,
    /// the option value as a packet, the option's fields.
    Sockopt {
        /// A `getsockopt` hook (else `setsockopt`).
        get: bool,
    },
    /// `BPF_PROG_TYPE_SYSCALL`: a buffer of up to 65,535 bytes the caller
    /// provides; the runtime passes at least the largest offset accessed.
    Syscall,
    /// A program type whose context userbpf does not model: every
    /// context access is rejected.
    Opaque,
    /// An embedder's context: `size` bytes, read (and written, when
    /// `writable`) at aligned offsets, with 4-byte packet pointer fields
    /// at the given offsets.
    Generic {
        /// Size in bytes.
        size: u32,
        /// Offset of the `data` field.
        data: Option<u32>,
        /// Offset of the `data_end` field.
        data_end: Option<u32>,
        /// Offset of the `data_meta` field.
        meta: Option<u32>,
        /// Whether plain fields may be written.
        writable: bool,
    },
}

/// The program types whose context is a `struct __sk_buff`: each has its
/// own `*_is_valid_access` rules and packet permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkbKind {
    /// `BPF_PROG_TYPE_SOCKET_FILTER`: no direct packet access; writes
    /// only `cb[]`.
    SocketFilter,
    /// `BPF_PROG_TYPE_SCHED_CLS` and `_SCHED_ACT`: reads and writes the
    /// packet, `data_meta`, the TC fields.
    Tc,
    /// `BPF_PROG_TYPE_CGROUP_SKB`: reads the packet and the socket
    /// fields; writes `mark`, `priority`, `tstamp`, `cb[]`.
    CgroupSkb,
    /// `BPF_PROG_TYPE_LWT_IN`, `_LWT_OUT`, `_LWT_SEG6LOCAL`: reads the
    /// packet; writes `mark`, `priority`, `cb[]`.
    Lwt,
    /// `BPF_PROG_TYPE_LWT_XMIT`: as the other LWT types, and writes the
    /// packet.
    LwtXmit,
    /// `BPF_PROG_TYPE_SK_SKB`: reads and writes the packet, reads the
    /// socket fields but not `mark`; writes `priority` and `tc_index`.
    SkSkb,
}

impl SkbKind {
    /// `data` and `data_end` are readable (`may_access_direct_pkt_data`).
    pub fn packet_readable(self) -> bool {
        self != SkbKind::SocketFilter
    }

    /// The packet is writable through direct packet pointers.
    pub fn packet_writable(self) -> bool {
        matches!(self, SkbKind::Tc | SkbKind::LwtXmit | SkbKind::SkSkb)
    }

    /// `BPF_LD_[ABS|IND]` is allowed (`may_access_skb`).
    pub fn legacy_packet_loads(self) -> bool {
        matches!(self, SkbKind::SocketFilter | SkbKind::Tc)
    }
}

/// The hooks of `BPF_PROG_TYPE_CGROUP_SOCK` programs, which see
/// different fields of the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockHook {
    /// `sock_create`, `sock_release`: `bound_dev_if`, `mark` and
    /// `priority` are read and written, the source address is unset.
    CreateRelease,
    /// `post_bind4`: the IPv4 source address and port, read only.
    PostBind4,
    /// `post_bind6`: the IPv6 source address and port, read only.
    PostBind6,
}

/// The address family of a `BPF_PROG_TYPE_CGROUP_SOCK_ADDR` hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrFamily {
    /// `*4` hooks: `user_ip4`.
    V4,
    /// `*6` hooks: `user_ip6`.
    V6,
    /// `*_unix` hooks: neither.
    Unix,
}

/// What a context access reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtxField {
    /// A plain value.
    Scalar,
    /// `data`: a pointer to the packet's first byte.
    PacketData,
    /// `data_end`: a pointer one past the packet's last byte.
    PacketEnd,
    /// `data_meta`: a pointer to the metadata before the packet.
    PacketMeta,
    /// `__sk_buff->sk`: the packet's socket, or NULL; also
    /// `sk_reuseport_md->migrating_sk` (`PTR_TO_SOCK_COMMON_OR_NULL`).
    SockCommonOrNull,
    /// `bpf_sk_lookup->sk`: the selected socket, or NULL
    /// (`PTR_TO_SOCKET_OR_NULL`).
    SocketOrNull,
    /// `bpf_sock_addr->sk`: the hook's socket (`PTR_TO_SOCKET`).
    Socket,
    /// `__sk_buff->flow_keys` of a flow dissector (`PTR_TO_FLOW_KEYS`).
    FlowKeys,
    /// `args[0]` of a writable raw tracepoint (`PTR_TO_TP_BUFFER`).
    TpBuffer,
}

/// `PERF_MAX_TRACE_SIZE`.
const PERF_MAX_TRACE_SIZE: u32 = 2048;
/// `MAX_BPF_FUNC_ARGS`.
pub(crate) const MAX_BPF_FUNC_ARGS: u32 = 12;

impl Context {
    /// The context of a program of `kind`.
    pub fn for_kind(kind: &ProgramKind) -> Context {
        use ProgramType as T;
        match kind.prog_type {
            T::Kprobe => Context::PtRegs,
            T::PerfEvent => Context::PerfEvent,
            T::Tracepoint => Context::Tracepoint {
                size: context_size(kind).and_then(|s| u32::try_from(s).ok()),
            },
            // fentry/fexit read their function's arguments (and return
            // value) as an array of u64, like raw tracepoints.
            T::RawTracepoint | T::Tracing => Context::RawTracepoint,
            T::RawTracepointWritable => Context::RawTracepointWritable,
            T::Xdp => Context::Xdp {
                egress: kind.attach_type == Some(AttachType::XdpDevmap),
            },
            T::SocketFilter => Context::SkBuff(SkbKind::SocketFilter),
            T::SchedCls | T::SchedAct => Context::SkBuff(SkbKind::Tc),
            T::CgroupSkb => Context::SkBuff(SkbKind::CgroupSkb),
            T::LwtIn | T::LwtOut | T::LwtSeg6local => Context::SkBuff(SkbKind::Lwt),
            T::LwtXmit => Context::SkBuff(SkbKind::LwtXmit),
            T::SkSkb => Context::SkBuff(SkbKind::SkSkb),
            T::Syscall => Context::Syscall,
            T::CgroupDevice => Context::CgroupDevice,
            T::CgroupSysctl => Context::Sysctl,
            T::CgroupSock => Context::CgroupSock(match kind.attach_type {
                Some(AttachType::CgroupInet4PostBind) => SockHook::PostBind4,
                Some(AttachType::CgroupInet6PostBind) => SockHook::PostBind6,
                _ => SockHook::CreateRelease,
            }),
            T::SkLookup => Context::SkLookup,
            T::SockOps => Context::SockOps,
            T::SkMsg => Context::SkMsg,
            T::FlowDissector => Context::FlowDissector,
            T::SkReuseport => Context::SkReuseport,
            T::CgroupSockopt => Context::Sockopt {
                get: kind.attach_type == Some(AttachType::CgroupGetsockopt),
            },
            T::CgroupSockAddr => {
                use AttachType as A;
                let family = match kind.attach_type {
                    Some(
                        A::CgroupInet4Bind
                        | A::CgroupInet4Connect
                        | A::CgroupInet4Getpeername
                        | A::CgroupInet4Getsockname
                        | A::CgroupUdp4Sendmsg
                        | A::CgroupUdp4Recvmsg,
                    ) => AddrFamily::V4,
                    Some(
                        A::CgroupInet6Bind
                        | A::CgroupInet6Connect
                        | A::CgroupInet6Getpeername
                        | A::CgroupInet6Getsockname
                        | A::CgroupUdp6Sendmsg
                        | A::CgroupUdp6Recvmsg,
                    ) => AddrFamily::V6,
                    _ => AddrFamily::Unix,
                };
                let sendmsg = matches!(
                    kind.attach_type,
                    Some(A::CgroupUdp4Sendmsg | A::CgroupUdp6Sendmsg)
                );
                Context::SockAddr { family, sendmsg }
            }
            _ => Context::Opaque,
        }
    }

    /// The context's size in bytes, as far as accesses go.
    pub fn size(&self) -> u32 {
        match *self {
            Context::Raw { len } => len,
            Context::PtRegs => PT_REGS_SIZE as u32,
            Context::PerfEvent => (PT_REGS_SIZE as u32).wrapping_add(16),
            Context::Tracepoint { size } => size.unwrap_or(PERF_MAX_TRACE_SIZE),
            Context::RawTracepoint | Context::RawTracepointWritable => MAX_BPF_FUNC_ARGS * 8,
            Context::Xdp { .. } => XDP_MD_SIZE as u32,
            Context::SkBuff(_) => SK_BUFF_SIZE as u32,
            Context::Syscall => u32::from(u16::MAX),
            Context::Opaque => 0,
            Context::CgroupDevice => 12,
            Context::Sysctl => 8,
            Context::CgroupSock(_) => 80,
            Context::SkLookup => 68,
            Context::SockAddr { .. } => 72,
            Context::SockOps => 224,
            Context::SkMsg => 80,
            Context::FlowDissector => SK_BUFF_SIZE as u32,
            Context::SkReuseport => 56,
            Context::Sockopt { .. } => 40,
            Context::Generic { size, .. } => size,
        }
    }

    /// The kernel's name of the context type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Context::Raw { .. } => "mem",
            _ => "ctx",
        }
    }

    /// Checks an access of `size` bytes at byte offset `off`: what it
    /// reads, or `None` when the kernel's rules refuse it (`invalid
    /// bpf_context access`).
    pub fn access(&self, off: i64, size: u32, write: bool) -> Option<CtxField> {
        let total = i64::from(self.size());
        let end = off.checked_add(i64::from(size))?;
        if off < 0 || end > total || size == 0 {
            return None;
        }
        let aligned = off.checked_rem(i64::from(size)) == Some(0);
        let off = u32::try_from(off).ok()?;
        match *self {
            Context::Raw { .. } => Some(CtxField::Scalar),
            Context::PtRegs | Context::RawTracepoint => {
                (!write && aligned).then_some(CtxField::Scalar)
            }
            // `raw_tp_writable_prog_is_valid_access`: `args[0]` is read
            // whole, as the buffer.
            Context::RawTracepointWritable => match (off, size) {
                (0, 8) if !write => Some(CtxField::TpBuffer),
                (0, _) => None,
                _ => (!write && aligned).then_some(CtxField::Scalar),
            },
            // `pe_prog_is_valid_access`: the registers are read whole;
            // `sample_period` and `addr` also in parts.
            Context::PerfEvent => (!write && aligned && (size == 8 || off >= PT_REGS_SIZE as u32))
                .then_some(CtxField::Scalar),
            Context::Tracepoint { .. } => {
                (!write && aligned && off >= 8).then_some(CtxField::Scalar)
            }
            Context::Syscall => aligned.then_some(CtxField::Scalar),
            Context::Opaque => None,
            // `access_type` in parts, `major` and `minor` whole.
            Context::CgroupDevice => (!write && aligned && (size == 4 || (off < 4 && size < 4)))
                .then_some(CtxField::Scalar),
            // `write`, `file_pos`; `file_pos` is written whole.
            Context::Sysctl => (aligned && size <= 4 && (!write || (off == 4 && size == 4)))
                .then_some(CtxField::Scalar),
            Context::CgroupSock(hook) => cgroup_sock_access(hook, off, size, write),
            Context::SkLookup => sk_lookup_access(off, size, write, aligned),
            Context::SockAddr { family, sendmsg } => {
                sock_addr_access(family, sendmsg, off, size, write, aligned)
            }
            Context::SockOps => {
                if !aligned {
                    return None;
                }
                sock_ops_access(off, size, write)
            }
            // data, data_end, then 4-byte fields, the socket.
            Context::SkMsg => {
                if write || !aligned {
                    return None;
                }
                match (off, size) {
                    (0, 8) => Some(CtxField::PacketData),
                    (8, 8) => Some(CtxField::PacketEnd),
                    (72, 8) => Some(CtxField::Socket),
                    (16..72, 4) => Some(CtxField::Scalar),
                    _ => None,
                }
            }
            // Only the packet and the flow keys.
            Context::FlowDissector => {
                if write || !aligned {
                    return None;
                }
                match (off, size) {
                    (skb::DATA, 4) => Some(CtxField::PacketData),
                    (skb::DATA_END, 4) => Some(CtxField::PacketEnd),
                    (skb::FLOW_KEYS, 8) => Some(CtxField::FlowKeys),
                    _ => None,
                }
            }
            Context::SkReuseport => {
                if write || !aligned {
                    return None;
                }
                match (off, size) {
                    (0, 8) => Some(CtxField::PacketData),
                    (8, 8) => Some(CtxField::PacketEnd),
                    (40, 8) => Some(CtxField::Socket),
                    (48, 8) => Some(CtxField::SockCommonOrNull),
                    // len, ip_protocol, bind_inany in parts; eth_protocol
                    // in 2 or 4 bytes; hash whole.
                    (16..20 | 24..32, 1 | 2 | 4) => Some(CtxField::Scalar),
                    (20, 2 | 4) | (22, 2) | (32, 4) => Some(CtxField::Scalar),
                    _ => None,
                }
            }
            Context::Sockopt { get } => {
                if !aligned {
                    return None;
                }
                match (off, size) {
                    (0, 8) if !write => Some(CtxField::Socket),
                    (8, 8) if !write => Some(CtxField::PacketData),
                    (16, 8) if !write => Some(CtxField::PacketEnd),
                    // level, optname (written by setsockopt hooks), optlen,
                    // retval (getsockopt hooks only, which may set it).
                    (24 | 28, 4) => (!write || !get).then_some(CtxField::Scalar),
                    (32, 4) => Some(CtxField::Scalar),
                    (36, 4) => get.then_some(CtxField::Scalar),
                    _ => None,
                }
            }
            Context::Xdp { egress } => {
                if write || size != 4 || !aligned || (off == XDP_EGRESS_IFINDEX && !egress) {
                    return None;
                }
                Some(match off {
                    0 => CtxField::PacketData,
                    4 => CtxField::PacketEnd,
                    8 => CtxField::PacketMeta,
                    _ => CtxField::Scalar,
                })
            }
            Context::SkBuff(kind) => {
                if !aligned {
                    return None;
                }
                skb_access(kind, off, size, write)
            }
            Context::Generic {
                data,
                data_end,
                meta,
                writable,
                ..
            } => {
                if !aligned {
                    return None;
                }
                let end = off.checked_add(size)?;
                let overlaps =
                    |f: Option<u32>| f.is_some_and(|f| off < f.saturating_add(4) && end > f);
                let field = if overlaps(data) {
                    CtxField::PacketData
                } else if overlaps(data_end) {
                    CtxField::PacketEnd
                } else if overlaps(meta) {
                    CtxField::PacketMeta
                } else {
                    return (!write || writable).then_some(CtxField::Scalar);
                };
                // Pointer fields: whole 4-byte reads only.
                (!write && size == 4 && [data, data_end, meta].contains(&Some(off)))
                    .then_some(field)
            }
        }
    }
}

/// `struct xdp_md`'s `egress_ifindex`.
const XDP_EGRESS_IFINDEX: u32 = 20;

/// `struct __sk_buff` offsets.
mod skb {
    pub const MARK: u32 = 8;
    pub const QUEUE_MAPPING: u32 = 12;
    pub const PRIORITY: u32 = 32;
    pub const TC_INDEX: u32 = 44;
    pub const CB: u32 = 48;
    pub const CB_END: u32 = 68;
    pub const TC_CLASSID: u32 = 72;
    pub const DATA: u32 = 76;
    pub const DATA_END: u32 = 80;
    pub const NAPI_ID: u32 = 84;
    pub const FAMILY: u32 = 88;
    pub const REMOTE_IP4: u32 = 92;
    pub const REMOTE_PORT: u32 = 132;
    pub const DATA_META: u32 = 140;
    pub const FLOW_KEYS: u32 = 144;
    pub const TSTAMP: u32 = 152;
    pub const WIRE_LEN: u32 = 160;
    pub const GSO_SEGS: u32 = 164;
    pub const SK: u32 = 168;
    pub const GSO_SIZE: u32 = 176;
    pub const TSTAMP_TYPE: u32 = 180;
    pub const HWTSTAMP: u32 = 184;
}

/// An aligned access of `size` bytes at `off` of a `struct __sk_buff`
/// under the rules of `kind` (`bpf_skb_is_valid_access` and the program
/// types' own callbacks, as Linux 6.18 applies them; see
/// tests/program_types_vs_kernel.rs).
fn skb_access(kind: SkbKind, off: u32, size: u32, write: bool) -> Option<CtxField> {
    use SkbKind as K;
    let end = off.checked_add(size)?;
    let within = |start: u32, len: u32| off >= start && end <= start.saturating_add(len);
    let tc = kind == K::Tc;
    let cgroup = kind == K::CgroupSkb;
    let cb = within(skb::CB, skb::CB_END - skb::CB);
    if write {
        // Every writable field but `cb[]` and `tstamp` is written whole.
        let word = size == 4;
        let ok = match off {
            _ if cb => kind != K::SkSkb,
            skb::MARK => word && matches!(kind, K::Tc | K::CgroupSkb | K::Lwt | K::LwtXmit),
            skb::PRIORITY => word && kind != K::SocketFilter,
            skb::QUEUE_MAPPING | skb::TC_CLASSID => word && tc,
            skb::TC_INDEX => word && (tc || kind == K::SkSkb),
            skb::TSTAMP => size == 8 && (tc || cgroup),
            _ => false,
        };
        return ok.then_some(CtxField::Scalar);
    }
    if cb {
        return Some(CtxField::Scalar);
    }
    // Pointer fields: exactly their own size.
    if within(skb::DATA, 8) || within(skb::DATA_META, 4) {
        let meta = off >= skb::DATA_META;
        if size != 4 || !kind.packet_readable() || (meta && !tc) {
            return None;
        }
        return Some(match off {
            skb::DATA => CtxField::PacketData,
            skb::DATA_END => CtxField::PacketEnd,
            _ => CtxField::PacketMeta,
        });
    }
    if within(skb::TSTAMP, 8) || within(skb::HWTSTAMP, 8) {
        return (size == 8 && (tc || cgroup)).then_some(CtxField::Scalar);
    }
    if within(skb::SK, 8) {
        return (size == 8).then_some(CtxField::SockCommonOrNull);
    }
    // `flow_keys` (flow dissectors only); every other field is at most 4
    // bytes.
    if size > 4 || within(skb::FLOW_KEYS, 8) {
        return None;
    }
    let field = off & !3;
    let ok = match field {
        skb::MARK => kind != K::SkSkb,
        0..skb::TC_CLASSID => true,
        skb::TC_CLASSID | skb::WIRE_LEN => tc,
        skb::NAPI_ID | skb::GSO_SEGS | skb::GSO_SIZE => true,
        // The socket fields exist only with a socket; the addresses are
        // read whole.
        skb::FAMILY..skb::DATA_META => {
            matches!(kind, K::CgroupSkb | K::SkSkb)
                && (size == 4 || !(skb::REMOTE_IP4..skb::REMOTE_PORT).contains(&field))
        }
        // `tstamp_type`, a byte TC programs read, then padding.
        skb::TSTAMP_TYPE => tc && off == skb::TSTAMP_TYPE && size == 1,
        _ => false,
    };
    ok.then_some(CtxField::Scalar)
}

/// `struct bpf_sock` offsets.
mod bpf_sock {
    pub const BOUND_DEV_IF: i64 = 0;
    pub const FAMILY: i64 = 4;
    pub const TYPE: i64 = 8;
    pub const PROTOCOL: i64 = 12;
    pub const MARK: i64 = 16;
    pub const PRIORITY: i64 = 20;
    pub const PRIORITY_END: i64 = 24;
    pub const SRC_IP4: i64 = 24;
    pub const SRC_IP6: i64 = 28;
    pub const SRC_PORT: i64 = 44;
    pub const DST_PORT: i64 = 48;
    pub const DST_IP4: i64 = 52;
    pub const STATE: i64 = 72;
    pub const RX_QUEUE_MAPPING: i64 = 76;
    pub const SIZE: i64 = 80;
}

/// `struct bpf_tcp_sock`: `bytes_received` and `bytes_acked` (8 bytes),
/// its end (after `icsk_retransmits`).
const TCP_SOCK_U64: [i64; 2] = [80, 88];
const TCP_SOCK_SIZE: i64 = 112;

/// A read of `size` bytes at `off` of a socket (`bpf_sock_is_valid_access`,
/// `bpf_sock_common_is_valid_access`, `bpf_tcp_sock_is_valid_access`).
pub(crate) fn sock_access(ty: RegType, off: i64, size: u32) -> bool {
    use bpf_sock as S;
    let size = i64::from(size);
    if off < 0 || off.checked_rem(size) != Some(0) {
        return false;
    }
    // `struct bpf_xdp_sock`: `queue_id`.
    if ty == RegType::XdpSock {
        return off == 0 && size == 4;
    }
    if ty == RegType::TcpSock {
        // `bytes_received` and `bytes_acked` are read whole.
        let in_u64 = TCP_SOCK_U64
            .iter()
            .any(|&f| (f..f.saturating_add(8)).contains(&off));
        return off < TCP_SOCK_SIZE
            && if in_u64 {
                size == 8 && TCP_SOCK_U64.contains(&off)
            } else {
                size == 4
            };
    }
    if off >= S::SIZE {
        return false;
    }
    // A request or time-wait socket has no type, protocol, mark or
    // priority.
    if ty == RegType::SockCommon && (S::TYPE..S::PRIORITY_END).contains(&off) {
        return false;
    }
    // Fields read in parts from their first byte, the addresses in parts
    // anywhere, `dst_port` (2 bytes, or 4 with the padding) from its
    // first byte or the next; the padding after it not at all.
    let narrow_at_start = [
        S::STATE,
        S::FAMILY,
        S::TYPE,
        S::PROTOCOL,
        S::SRC_PORT,
        S::RX_QUEUE_MAPPING,
    ];
    let address = (S::SRC_IP4..S::SRC_PORT).contains(&off) || (S::DST_IP4..S::STATE).contains(&off);
    if narrow_at_start.contains(&off) || address {
        return narrow_ok(off, size, 4);
    }
    match off {
        S::DST_PORT => size <= 4,
        o if o == S::DST_PORT + 1 => size == 1,
        o if (S::DST_PORT + 2..S::DST_IP4).contains(&o) => false,
        _ => size == 4,
    }
}

/// `sock_filter_is_valid_access`: the socket's fields (as
/// [`sock_access`] reads them), those the hook sees, written only where
/// `sock_create` and `sock_release` may.
fn cgroup_sock_access(hook: SockHook, off: u32, size: u32, write: bool) -> Option<CtxField> {
    use bpf_sock as S;
    let off = i64::from(off);
    if !sock_access(RegType::Socket, off, size) {
        return None;
    }
    let field = off & !3;
    let settable = [S::BOUND_DEV_IF, S::MARK, S::PRIORITY].contains(&field);
    let ok = if settable {
        hook == SockHook::CreateRelease
    } else if (S::SRC_IP4..S::SRC_IP6).contains(&field) {
        !write && hook == SockHook::PostBind4
    } else if (S::SRC_IP6..S::SRC_PORT).contains(&field) {
        !write && hook == SockHook::PostBind6
    } else if field == S::SRC_PORT {
        !write && hook != SockHook::CreateRelease
    } else {
        !write
    };
    ok.then_some(CtxField::Scalar)
}

/// `sock_ops_is_valid_access`: 4-byte fields, then `bytes_received`,
/// `bytes_acked`, `sk`, `skb_data`, `skb_data_end` (8 bytes), `skb_len`,
/// `skb_tcp_flags` (in parts), `skb_hwtstamp`; `reply` and `sk_txhash`
/// written.
fn sock_ops_access(off: u32, size: u32, write: bool) -> Option<CtxField> {
    if write {
        return (size == 4 && (off == 4 || off == 164)).then_some(CtxField::Scalar);
    }
    match (off, size) {
        (0..168 | 208, 4) => Some(CtxField::Scalar),
        (212, 1 | 2 | 4) => Some(CtxField::Scalar),
        (168 | 176 | 216, 8) => Some(CtxField::Scalar),
        (184, 8) => Some(CtxField::SocketOrNull),
        (192, 8) => Some(CtxField::PacketData),
        (200, 8) => Some(CtxField::PacketEnd),
        _ => None,
    }
}

/// `bpf_ctx_narrow_access_ok`: `size` bytes at `off` (not negative) lie
/// inside one field of `field` bytes, a power of two.
fn narrow_ok(off: i64, size: i64, field: i64) -> bool {
    size <= field && (off & field.wrapping_sub(1)).saturating_add(size) <= field
}

/// `struct bpf_sk_lookup` offsets.
mod sk_lookup {
    pub const FAMILY: u32 = 8;
    pub const REMOTE_PORT: u32 = 36;
    pub const END: u32 = 68;
}

/// `sk_lookup_is_valid_access`: `sk` whole, the rest (4-byte fields,
/// `remote_port` 2 or 4 bytes, its padding) in parts; nothing written.
fn sk_lookup_access(off: u32, size: u32, write: bool, aligned: bool) -> Option<CtxField> {
    if write || !aligned {
        return None;
    }
    if off < sk_lookup::FAMILY {
        return (off == 0 && size == 8).then_some(CtxField::SocketOrNull);
    }
    let end = off.checked_add(size)?;
    if end > sk_lookup::END || size > 4 {
        return None;
    }
    // `remote_port` (2 bytes, or 4 with its padding) and the padding are
    // read within their 2 bytes.
    let in_port = (sk_lookup::REMOTE_PORT..sk_lookup::REMOTE_PORT + 4).contains(&off);
    let ok = size == 4 || !in_port || narrow_ok(i64::from(off), i64::from(size), 2);
    ok.then_some(CtxField::Scalar)
}

/// `struct bpf_sock_addr` offsets.
mod sock_addr {
    pub const USER_IP4: u32 = 4;
    pub const USER_IP6: u32 = 8;
    pub const USER_PORT: u32 = 24;
    pub const MSG_SRC_IP4: u32 = 40;
    pub const MSG_SRC_IP6: u32 = 44;
    pub const PADDING: u32 = 60;
    pub const SK: u32 = 64;
}

/// `sock_addr_is_valid_access`: the hook's address fields (read in
/// parts, written whole; the IPv6 ones also as 8-byte halves) and port,
/// the other fields read whole, `sk` a socket.
fn sock_addr_access(
    family: AddrFamily,
    sendmsg: bool,
    off: u32,
    size: u32,
    write: bool,
    aligned: bool,
) -> Option<CtxField> {
    use sock_addr as A;
    if !aligned {
        return None;
    }
    let end = off.checked_add(size)?;
    if off == A::SK {
        return (!write && size == 8).then_some(CtxField::Socket);
    }
    if end > A::PADDING {
        return None;
    }
    let within = |start: u32, len: u32| off >= start && end <= start.saturating_add(len);
    let wide = |start: u32, len: u32| size == 8 && within(start, len);
    let address = if within(A::USER_IP4, 4) {
        Some(family == AddrFamily::V4)
    } else if within(A::USER_IP6, 16) {
        Some(family == AddrFamily::V6)
    } else if within(A::MSG_SRC_IP4, 4) {
        Some(family == AddrFamily::V4 && sendmsg)
    } else if within(A::MSG_SRC_IP6, 16) {
        Some(family == AddrFamily::V6 && sendmsg)
    } else if within(A::USER_PORT, 4) {
        Some(true)
    } else {
        None
    };
    let ok = match address {
        Some(false) => false,
        Some(true) if wide(A::USER_IP6, 16) || wide(A::MSG_SRC_IP6, 16) => true,
        Some(true) if write => size == 4,
        Some(true) => narrow_ok(i64::from(off), i64::from(size), 4),
        // user_family, family, type, protocol: read whole.
        None => !write && size == 4,
    };
    ok.then_some(CtxField::Scalar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_fields_are_four_byte_reads() {
        let x = Context::Xdp { egress: false };
        assert_eq!(x.access(0, 4, false), Some(CtxField::PacketData));
        assert_eq!(x.access(4, 4, false), Some(CtxField::PacketEnd));
        assert_eq!(x.access(12, 4, false), Some(CtxField::Scalar));
        assert_eq!(x.access(0, 8, false), None);
        assert_eq!(x.access(0, 4, true), None);
        assert_eq!(x.access(24, 4, false), None);
        // egress_ifindex: devmap programs only.
        assert_eq!(x.access(20, 4, false), None);
        let devmap = Context::Xdp { egress: true };
        assert_eq!(devmap.access(20, 4, false), Some(CtxField::Scalar));
    }

    #[test]
    fn skb_rules_follow_the_program_type() {
        let sf = Context::SkBuff(SkbKind::SocketFilter);
        let tc = Context::SkBuff(SkbKind::Tc);
        let cg = Context::SkBuff(SkbKind::CgroupSkb);
        let lwt = Context::SkBuff(SkbKind::Lwt);
        let sk_skb = Context::SkBuff(SkbKind::SkSkb);
        assert_eq!(sf.access(76, 4, false), None);
        assert_eq!(sf.access(0, 4, false), Some(CtxField::Scalar));
        assert_eq!(sf.access(48, 4, true), Some(CtxField::Scalar));
        assert_eq!(sf.access(8, 4, true), None);
        assert_eq!(tc.access(76, 4, false), Some(CtxField::PacketData));
        assert_eq!(tc.access(8, 4, true), Some(CtxField::Scalar));
        // Fields other than cb[] are written whole.
        assert_eq!(tc.access(8, 2, true), None);
        assert_eq!(tc.access(48, 2, true), Some(CtxField::Scalar));
        // tstamp_type: a byte only TC programs read; then padding.
        assert_eq!(tc.access(180, 1, false), Some(CtxField::Scalar));
        assert_eq!(tc.access(180, 1, true), None);
        assert_eq!(tc.access(180, 4, false), None);
        assert_eq!(tc.access(181, 1, false), None);
        assert_eq!(sf.access(180, 1, false), None);
        assert_eq!(sf.access(176, 4, false), Some(CtxField::Scalar));
        // Socket filters see no timestamps and no wire_len; TC does.
        for (off, size) in [(152, 8), (184, 8), (160, 4)] {
            assert_eq!(sf.access(off, size, false), None, "{off}");
            assert_eq!(tc.access(off, size, false), Some(CtxField::Scalar), "{off}");
        }
        // cgroup_skb: data and data_end, no data_meta, wire_len or
        // tc_classid; it may write tstamp; it reads the socket's fields,
        // the addresses whole.
        assert_eq!(cg.access(76, 4, false), Some(CtxField::PacketData));
        assert_eq!(cg.access(140, 4, false), None);
        assert_eq!(cg.access(160, 4, false), None);
        assert_eq!(cg.access(72, 4, false), None);
        assert_eq!(cg.access(152, 8, true), Some(CtxField::Scalar));
        assert_eq!(cg.access(92, 4, false), Some(CtxField::Scalar));
        assert_eq!(cg.access(92, 2, false), None);
        assert_eq!(cg.access(132, 2, false), Some(CtxField::Scalar));
        assert_eq!(tc.access(92, 4, false), None);
        // LWT: packet reads, mark/priority/cb writes, no socket fields.
        assert_eq!(lwt.access(80, 4, false), Some(CtxField::PacketEnd));
        assert_eq!(lwt.access(8, 4, true), Some(CtxField::Scalar));
        assert_eq!(lwt.access(88, 4, false), None);
        // sk_skb: no mark, no cb writes; priority and tc_index writes.
        assert_eq!(sk_skb.access(8, 4, false), None);
        assert_eq!(sk_skb.access(48, 4, true), None);
        assert_eq!(sk_skb.access(44, 4, true), Some(CtxField::Scalar));
        assert_eq!(sk_skb.access(88, 4, false), Some(CtxField::Scalar));
        assert!(SkbKind::LwtXmit.packet_writable() && !SkbKind::Lwt.packet_writable());
        assert!(!SkbKind::CgroupSkb.legacy_packet_loads());
    }

    #[test]
    fn cgroup_and_socket_hook_contexts() {
        let dev = Context::CgroupDevice;
        assert_eq!(dev.access(0, 1, false), Some(CtxField::Scalar));
        assert_eq!(dev.access(4, 2, false), None);
        assert_eq!(dev.access(8, 4, true), None);
        let sysctl = Context::Sysctl;
        assert_eq!(sysctl.access(4, 4, true), Some(CtxField::Scalar));
        assert_eq!(sysctl.access(0, 4, true), None);
        // cgroup/sock: the source address only after bind, of its family;
        // bound_dev_if, mark, priority only at creation and release.
        let create = Context::CgroupSock(SockHook::CreateRelease);
        let bind4 = Context::CgroupSock(SockHook::PostBind4);
        let bind6 = Context::CgroupSock(SockHook::PostBind6);
        assert_eq!(create.access(16, 4, true), Some(CtxField::Scalar));
        assert_eq!(bind4.access(16, 4, false), None);
        assert_eq!(create.access(24, 4, false), None);
        assert_eq!(bind4.access(24, 1, false), Some(CtxField::Scalar));
        assert_eq!(bind6.access(24, 4, false), None);
        assert_eq!(bind6.access(28, 4, false), Some(CtxField::Scalar));
        assert_eq!(bind4.access(44, 4, true), None);
        // sk_lookup: the socket or NULL, read-only fields.
        assert_eq!(
            Context::SkLookup.access(0, 8, false),
            Some(CtxField::SocketOrNull)
        );
        assert_eq!(
            Context::SkLookup.access(38, 2, false),
            Some(CtxField::Scalar)
        );
        assert_eq!(Context::SkLookup.access(8, 4, true), None);
        // sock_addr: the hook family's address, written whole or as
        // 8-byte IPv6 halves; the socket.
        let v4 = Context::SockAddr {
            family: AddrFamily::V4,
            sendmsg: false,
        };
        let v6 = Context::SockAddr {
            family: AddrFamily::V6,
            sendmsg: true,
        };
        assert_eq!(v4.access(4, 1, false), Some(CtxField::Scalar));
        assert_eq!(v4.access(4, 2, true), None);
        assert_eq!(v4.access(8, 4, false), None);
        assert_eq!(v6.access(16, 8, true), Some(CtxField::Scalar));
        assert_eq!(v6.access(48, 8, false), Some(CtxField::Scalar));
        assert_eq!(v4.access(40, 4, false), None);
        assert_eq!(v4.access(60, 4, false), None);
        assert_eq!(v4.access(64, 8, false), Some(CtxField::Socket));
        assert_eq!(v4.access(0, 2, false), None);
    }

    #[test]
    fn socket_program_contexts_with_packets() {
        assert_eq!(
            Context::SockOps.access(192, 8, false),
            Some(CtxField::PacketData)
        );
        assert_eq!(
            Context::SockOps.access(184, 8, false),
            Some(CtxField::SocketOrNull)
        );
        assert_eq!(Context::SockOps.access(4, 4, true), Some(CtxField::Scalar));
        assert_eq!(Context::SockOps.access(8, 4, true), None);
        assert_eq!(Context::SockOps.access(0, 2, false), None);
        assert_eq!(
            Context::SkMsg.access(8, 8, false),
            Some(CtxField::PacketEnd)
        );
        assert_eq!(Context::SkMsg.access(72, 8, false), Some(CtxField::Socket));
        assert_eq!(
            Context::FlowDissector.access(144, 8, false),
            Some(CtxField::FlowKeys)
        );
        assert_eq!(Context::FlowDissector.access(0, 4, false), None);
        assert_eq!(
            Context::SkReuseport.access(48, 8, false),
            Some(CtxField::SockCommonOrNull)
        );
        assert_eq!(Context::SkReuseport.access(21, 1, false), None);
        let get = Context::Sockopt { get: true };
        let set = Context::Sockopt { get: false };
        assert_eq!(get.access(36, 4, true), Some(CtxField::Scalar));
        assert_eq!(set.access(36, 4, false), None);
        assert_eq!(set.access(24, 4, true), Some(CtxField::Scalar));
        assert_eq!(get.access(24, 4, true), None);
        assert_eq!(get.access(8, 8, false), Some(CtxField::PacketData));
    }

    #[test]
    fn perf_event_registers_are_read_whole() {
        let pe = Context::PerfEvent;
        assert_eq!(pe.access(112, 8, false), Some(CtxField::Scalar));
        assert_eq!(pe.access(112, 4, false), None);
        // sample_period and addr: also in parts.
        assert_eq!(pe.access(168, 4, false), Some(CtxField::Scalar));
        assert_eq!(pe.access(176, 1, false), Some(CtxField::Scalar));
        assert_eq!(pe.access(184, 1, false), None);
    }

    #[test]
    fn tracing_contexts_are_read_only_and_aligned() {
        assert_eq!(
            Context::PtRegs.access(112, 8, false),
            Some(CtxField::Scalar)
        );
        assert_eq!(Context::PtRegs.access(112, 8, true), None);
        assert_eq!(Context::PtRegs.access(113, 8, false), None);
        assert_eq!(Context::PtRegs.access(168, 8, false), None);
        let tp = Context::Tracepoint { size: Some(64) };
        assert_eq!(tp.access(0, 8, false), None);
        assert_eq!(tp.access(16, 8, false), Some(CtxField::Scalar));
    }
}
