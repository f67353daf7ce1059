//! Context layouts: which bytes of the context a program of each kind may
//! read or write, with what sizes, and which fields hold packet pointers
//! (the kernel's `*_is_valid_access` callbacks, x86-64 layouts).

use userbpf_vm::context::trace::{context_size, PT_REGS_SIZE};
use userbpf_vm::context::{SK_BUFF_SIZE, XDP_MD_SIZE};
use userbpf_vm::object::{AttachType, ProgramKind, ProgramType};

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
    /// `struct xdp_md`.
    Xdp {
        /// `egress_ifindex` is readable: programs attached to a devmap
        /// entry (`BPF_XDP_DEVMAP`).
        egress: bool,
    },
    /// `struct __sk_buff`, with the rules of the program type.
    SkBuff(SkbKind),
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
    /// `__sk_buff->sk`: the packet's socket, or NULL
    /// (`PTR_TO_SOCK_COMMON_OR_NULL`).
    SockCommonOrNull,
}

/// `PERF_MAX_TRACE_SIZE`.
const PERF_MAX_TRACE_SIZE: u32 = 2048;
/// `MAX_BPF_FUNC_ARGS`.
const MAX_BPF_FUNC_ARGS: u32 = 12;

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
            T::RawTracepoint | T::RawTracepointWritable | T::Tracing => Context::RawTracepoint,
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
            Context::RawTracepoint => MAX_BPF_FUNC_ARGS * 8,
            Context::Xdp { .. } => XDP_MD_SIZE as u32,
            Context::SkBuff(_) => SK_BUFF_SIZE as u32,
            Context::Syscall => u32::from(u16::MAX),
            Context::Opaque => 0,
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
            // `pe_prog_is_valid_access`: the registers are read whole;
            // `sample_period` and `addr` also in parts.
            Context::PerfEvent => (!write && aligned && (size == 8 || off >= PT_REGS_SIZE as u32))
                .then_some(CtxField::Scalar),
            Context::Tracepoint { .. } => {
                (!write && aligned && off >= 8).then_some(CtxField::Scalar)
            }
            Context::Syscall => aligned.then_some(CtxField::Scalar),
            Context::Opaque => None,
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
