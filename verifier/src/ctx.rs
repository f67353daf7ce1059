//! Context layouts: which bytes of the context a program of each kind may
//! read or write, with what sizes, and which fields hold packet pointers
//! (the kernel's `*_is_valid_access` callbacks, x86-64 layouts).

use userbpf_vm::context::trace::{context_size, PT_REGS_SIZE};
use userbpf_vm::context::{SK_BUFF_SIZE, XDP_MD_SIZE};
use userbpf_vm::object::{ProgramKind, ProgramType};

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
    Xdp,
    /// `struct __sk_buff`, with the rules of the program type.
    SkBuff {
        /// Direct packet access (`data`, `data_end`, `data_meta`):
        /// TC and cgroup_skb programs, not socket filters.
        packet: bool,
        /// TC programs may write `mark`, `priority`, `tc_index`,
        /// `tc_classid`, `queue_mapping`, `tstamp`; others `mark` and
        /// `priority` (cgroup_skb) or only `cb[]` (socket filters).
        tc: bool,
        /// cgroup_skb programs may write `mark` and `priority`.
        cgroup: bool,
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
            T::Xdp => Context::Xdp,
            T::SocketFilter => Context::SkBuff {
                packet: false,
                tc: false,
                cgroup: false,
            },
            T::SchedCls | T::SchedAct => Context::SkBuff {
                packet: true,
                tc: true,
                cgroup: false,
            },
            T::CgroupSkb => Context::SkBuff {
                packet: true,
                tc: false,
                cgroup: true,
            },
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
            Context::Xdp => XDP_MD_SIZE as u32,
            Context::SkBuff { .. } => SK_BUFF_SIZE as u32,
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
            Context::PtRegs | Context::PerfEvent | Context::RawTracepoint => {
                (!write && aligned).then_some(CtxField::Scalar)
            }
            Context::Tracepoint { .. } => {
                (!write && aligned && off >= 8).then_some(CtxField::Scalar)
            }
            Context::Syscall => aligned.then_some(CtxField::Scalar),
            Context::Opaque => None,
            Context::Xdp => {
                if write || size != 4 || !aligned {
                    return None;
                }
                Some(match off {
                    0 => CtxField::PacketData,
                    4 => CtxField::PacketEnd,
                    8 => CtxField::PacketMeta,
                    _ => CtxField::Scalar,
                })
            }
            Context::SkBuff { packet, tc, cgroup } => {
                skb_access(off, size, write, aligned, packet, tc, cgroup)
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
    pub const FAMILY: u32 = 88;
    pub const DATA_META: u32 = 140;
    pub const FLOW_KEYS: u32 = 144;
    pub const TSTAMP: u32 = 152;
    pub const WIRE_LEN: u32 = 160;
    pub const SK: u32 = 168;
    pub const TSTAMP_TYPE: u32 = 180;
    pub const HWTSTAMP: u32 = 184;
}

fn skb_access(
    off: u32,
    size: u32,
    write: bool,
    aligned: bool,
    packet: bool,
    tc: bool,
    cgroup: bool,
) -> Option<CtxField> {
    if !aligned {
        return None;
    }
    let end = off.checked_add(size)?;
    let within = |start: u32, len: u32| off >= start && end <= start.saturating_add(len);
    let socket_filter = !tc && !cgroup;
    // The program types' own refusals (sk_filter_, cg_skb_ and
    // tc_cls_act_is_valid_access): data_meta, tc_classid and wire_len
    // are TC's; socket filters see no timestamps.
    if (!tc
        && (within(skb::DATA_META, 4) || within(skb::TC_CLASSID, 4) || within(skb::WIRE_LEN, 4)))
        || (socket_filter && (within(skb::TSTAMP, 8) || within(skb::HWTSTAMP, 8)))
    {
        return None;
    }
    // Pointer fields: exactly their own size.
    if within(skb::DATA, 4) || within(skb::DATA_END, 4) || within(skb::DATA_META, 4) {
        if write || !packet || size != 4 {
            return None;
        }
        return Some(match off {
            skb::DATA => CtxField::PacketData,
            skb::DATA_END => CtxField::PacketEnd,
            _ => CtxField::PacketMeta,
        });
    }
    if within(skb::FLOW_KEYS, 8) || within(skb::SK, 8) {
        // Kernel pointers userbpf does not model.
        return None;
    }
    // `tstamp_type` (a byte TC programs read) and the padding after it.
    if (skb::TSTAMP_TYPE..skb::HWTSTAMP).contains(&off) {
        return (off == skb::TSTAMP_TYPE && size == 1 && !write && tc).then_some(CtxField::Scalar);
    }
    if within(skb::TSTAMP, 8) || within(skb::HWTSTAMP, 8) {
        if size != 8 {
            return None;
        }
        return (!write || ((tc || cgroup) && off == skb::TSTAMP)).then_some(CtxField::Scalar);
    }
    // The socket fields (family .. local_port) exist only with a socket.
    if off >= skb::FAMILY && end <= skb::DATA_META && !cgroup {
        return None;
    }
    if size > 4 && !within(skb::CB, skb::CB_END - skb::CB) {
        return None;
    }
    if write {
        let ok = within(skb::CB, skb::CB_END - skb::CB)
            || ((tc || cgroup) && (within(skb::MARK, 4) || within(skb::PRIORITY, 4)))
            || (tc
                && (within(skb::TC_INDEX, 4)
                    || within(skb::TC_CLASSID, 4)
                    || within(skb::QUEUE_MAPPING, 4)));
        return ok.then_some(CtxField::Scalar);
    }
    Some(CtxField::Scalar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_fields_are_four_byte_reads() {
        let x = Context::Xdp;
        assert_eq!(x.access(0, 4, false), Some(CtxField::PacketData));
        assert_eq!(x.access(4, 4, false), Some(CtxField::PacketEnd));
        assert_eq!(x.access(12, 4, false), Some(CtxField::Scalar));
        assert_eq!(x.access(0, 8, false), None);
        assert_eq!(x.access(0, 4, true), None);
        assert_eq!(x.access(24, 4, false), None);
    }

    #[test]
    fn socket_filters_have_no_direct_packet_access() {
        let sf = Context::SkBuff {
            packet: false,
            tc: false,
            cgroup: false,
        };
        assert_eq!(sf.access(76, 4, false), None);
        assert_eq!(sf.access(0, 4, false), Some(CtxField::Scalar));
        assert_eq!(sf.access(48, 4, true), Some(CtxField::Scalar));
        assert_eq!(sf.access(8, 4, true), None);
        let tc = Context::SkBuff {
            packet: true,
            tc: true,
            cgroup: false,
        };
        assert_eq!(tc.access(76, 4, false), Some(CtxField::PacketData));
        assert_eq!(tc.access(8, 4, true), Some(CtxField::Scalar));
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
        let cg = Context::SkBuff {
            packet: true,
            tc: false,
            cgroup: true,
        };
        // cgroup_skb: data and data_end, no data_meta, wire_len or
        // tc_classid; it may write tstamp.
        assert_eq!(cg.access(76, 4, false), Some(CtxField::PacketData));
        assert_eq!(cg.access(140, 4, false), None);
        assert_eq!(cg.access(160, 4, false), None);
        assert_eq!(cg.access(72, 4, false), None);
        assert_eq!(cg.access(152, 8, true), Some(CtxField::Scalar));
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
