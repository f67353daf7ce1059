//! Program section names: libbpf's program-type table (`SEC("...")`) and
//! the attach targets encoded in them.
//!
//! Matching follows libbpf 1.x: a definition ending in `+` matches the bare
//! name or `name/extras`; one ending in `/` needs extras; any other matches
//! exactly. Program and attach type numbers are the kernel's
//! (`enum bpf_prog_type`, `enum bpf_attach_type`, read from this kernel's
//! BTF).

use std::fmt;

/// `enum bpf_prog_type`.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ProgramType {
    #[doc(alias = "BPF_PROG_TYPE_SOCKET_FILTER")]
    SocketFilter = 1,
    #[doc(alias = "BPF_PROG_TYPE_KPROBE")]
    Kprobe = 2,
    #[doc(alias = "BPF_PROG_TYPE_SCHED_CLS")]
    SchedCls = 3,
    #[doc(alias = "BPF_PROG_TYPE_SCHED_ACT")]
    SchedAct = 4,
    #[doc(alias = "BPF_PROG_TYPE_TRACEPOINT")]
    Tracepoint = 5,
    #[doc(alias = "BPF_PROG_TYPE_XDP")]
    Xdp = 6,
    #[doc(alias = "BPF_PROG_TYPE_PERF_EVENT")]
    PerfEvent = 7,
    #[doc(alias = "BPF_PROG_TYPE_CGROUP_SKB")]
    CgroupSkb = 8,
    #[doc(alias = "BPF_PROG_TYPE_CGROUP_SOCK")]
    CgroupSock = 9,
    #[doc(alias = "BPF_PROG_TYPE_LWT_IN")]
    LwtIn = 10,
    #[doc(alias = "BPF_PROG_TYPE_LWT_OUT")]
    LwtOut = 11,
    #[doc(alias = "BPF_PROG_TYPE_LWT_XMIT")]
    LwtXmit = 12,
    #[doc(alias = "BPF_PROG_TYPE_SOCK_OPS")]
    SockOps = 13,
    #[doc(alias = "BPF_PROG_TYPE_SK_SKB")]
    SkSkb = 14,
    #[doc(alias = "BPF_PROG_TYPE_CGROUP_DEVICE")]
    CgroupDevice = 15,
    #[doc(alias = "BPF_PROG_TYPE_SK_MSG")]
    SkMsg = 16,
    #[doc(alias = "BPF_PROG_TYPE_RAW_TRACEPOINT")]
    RawTracepoint = 17,
    #[doc(alias = "BPF_PROG_TYPE_CGROUP_SOCK_ADDR")]
    CgroupSockAddr = 18,
    #[doc(alias = "BPF_PROG_TYPE_LWT_SEG6LOCAL")]
    LwtSeg6local = 19,
    #[doc(alias = "BPF_PROG_TYPE_LIRC_MODE2")]
    LircMode2 = 20,
    #[doc(alias = "BPF_PROG_TYPE_SK_REUSEPORT")]
    SkReuseport = 21,
    #[doc(alias = "BPF_PROG_TYPE_FLOW_DISSECTOR")]
    FlowDissector = 22,
    #[doc(alias = "BPF_PROG_TYPE_CGROUP_SYSCTL")]
    CgroupSysctl = 23,
    #[doc(alias = "BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE")]
    RawTracepointWritable = 24,
    #[doc(alias = "BPF_PROG_TYPE_CGROUP_SOCKOPT")]
    CgroupSockopt = 25,
    #[doc(alias = "BPF_PROG_TYPE_TRACING")]
    Tracing = 26,
    #[doc(alias = "BPF_PROG_TYPE_STRUCT_OPS")]
    StructOps = 27,
    #[doc(alias = "BPF_PROG_TYPE_EXT")]
    Ext = 28,
    #[doc(alias = "BPF_PROG_TYPE_LSM")]
    Lsm = 29,
    #[doc(alias = "BPF_PROG_TYPE_SK_LOOKUP")]
    SkLookup = 30,
    #[doc(alias = "BPF_PROG_TYPE_SYSCALL")]
    Syscall = 31,
    #[doc(alias = "BPF_PROG_TYPE_NETFILTER")]
    Netfilter = 32,
}

impl ProgramType {
    /// The kernel's name, e.g. `BPF_PROG_TYPE_KPROBE`.
    pub fn kernel_name(self) -> &'static str {
        use ProgramType::*;
        match self {
            SocketFilter => "BPF_PROG_TYPE_SOCKET_FILTER",
            Kprobe => "BPF_PROG_TYPE_KPROBE",
            SchedCls => "BPF_PROG_TYPE_SCHED_CLS",
            SchedAct => "BPF_PROG_TYPE_SCHED_ACT",
            Tracepoint => "BPF_PROG_TYPE_TRACEPOINT",
            Xdp => "BPF_PROG_TYPE_XDP",
            PerfEvent => "BPF_PROG_TYPE_PERF_EVENT",
            CgroupSkb => "BPF_PROG_TYPE_CGROUP_SKB",
            CgroupSock => "BPF_PROG_TYPE_CGROUP_SOCK",
            LwtIn => "BPF_PROG_TYPE_LWT_IN",
            LwtOut => "BPF_PROG_TYPE_LWT_OUT",
            LwtXmit => "BPF_PROG_TYPE_LWT_XMIT",
            SockOps => "BPF_PROG_TYPE_SOCK_OPS",
            SkSkb => "BPF_PROG_TYPE_SK_SKB",
            CgroupDevice => "BPF_PROG_TYPE_CGROUP_DEVICE",
            SkMsg => "BPF_PROG_TYPE_SK_MSG",
            RawTracepoint => "BPF_PROG_TYPE_RAW_TRACEPOINT",
            CgroupSockAddr => "BPF_PROG_TYPE_CGROUP_SOCK_ADDR",
            LwtSeg6local => "BPF_PROG_TYPE_LWT_SEG6LOCAL",
            LircMode2 => "BPF_PROG_TYPE_LIRC_MODE2",
            SkReuseport => "BPF_PROG_TYPE_SK_REUSEPORT",
            FlowDissector => "BPF_PROG_TYPE_FLOW_DISSECTOR",
            CgroupSysctl => "BPF_PROG_TYPE_CGROUP_SYSCTL",
            RawTracepointWritable => "BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE",
            CgroupSockopt => "BPF_PROG_TYPE_CGROUP_SOCKOPT",
            Tracing => "BPF_PROG_TYPE_TRACING",
            StructOps => "BPF_PROG_TYPE_STRUCT_OPS",
            Ext => "BPF_PROG_TYPE_EXT",
            Lsm => "BPF_PROG_TYPE_LSM",
            SkLookup => "BPF_PROG_TYPE_SK_LOOKUP",
            Syscall => "BPF_PROG_TYPE_SYSCALL",
            Netfilter => "BPF_PROG_TYPE_NETFILTER",
        }
    }
}

/// `enum bpf_attach_type`.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum AttachType {
    CgroupInetIngress = 0,
    CgroupInetEgress = 1,
    CgroupInetSockCreate = 2,
    CgroupSockOps = 3,
    SkSkbStreamParser = 4,
    SkSkbStreamVerdict = 5,
    CgroupDevice = 6,
    SkMsgVerdict = 7,
    CgroupInet4Bind = 8,
    CgroupInet6Bind = 9,
    CgroupInet4Connect = 10,
    CgroupInet6Connect = 11,
    CgroupInet4PostBind = 12,
    CgroupInet6PostBind = 13,
    CgroupUdp4Sendmsg = 14,
    CgroupUdp6Sendmsg = 15,
    LircMode2 = 16,
    FlowDissector = 17,
    CgroupSysctl = 18,
    CgroupUdp4Recvmsg = 19,
    CgroupUdp6Recvmsg = 20,
    CgroupGetsockopt = 21,
    CgroupSetsockopt = 22,
    TraceRawTp = 23,
    TraceFentry = 24,
    TraceFexit = 25,
    ModifyReturn = 26,
    LsmMac = 27,
    TraceIter = 28,
    CgroupInet4Getpeername = 29,
    CgroupInet6Getpeername = 30,
    CgroupInet4Getsockname = 31,
    CgroupInet6Getsockname = 32,
    XdpDevmap = 33,
    CgroupInetSockRelease = 34,
    XdpCpumap = 35,
    SkLookup = 36,
    Xdp = 37,
    SkSkbVerdict = 38,
    SkReuseportSelect = 39,
    SkReuseportSelectOrMigrate = 40,
    PerfEvent = 41,
    TraceKprobeMulti = 42,
    LsmCgroup = 43,
    StructOps = 44,
    Netfilter = 45,
    TcxIngress = 46,
    TcxEgress = 47,
    TraceUprobeMulti = 48,
    CgroupUnixConnect = 49,
    CgroupUnixSendmsg = 50,
    CgroupUnixRecvmsg = 51,
    CgroupUnixGetpeername = 52,
    CgroupUnixGetsockname = 53,
    NetkitPrimary = 54,
    NetkitPeer = 55,
    TraceKprobeSession = 56,
    TraceUprobeSession = 57,
}

/// How the extras after `type/` are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Syntax {
    /// Nothing after the type.
    Plain,
    /// `binary:function[+offset]` or `binary:offset`.
    Uprobe { ret: bool },
    /// `binary:pattern`.
    UprobeMulti { ret: bool, session: bool },
    /// `binary:provider:name`.
    Usdt,
    /// `function[+offset]`.
    Kprobe { ret: bool },
    /// `pattern`.
    KprobeMulti { ret: bool, session: bool },
    /// `syscall`.
    Ksyscall { ret: bool },
    /// `category/name`.
    Tracepoint,
    /// `name`.
    RawTracepoint,
    /// A BTF name: function, hook, raw tracepoint.
    Btf,
    /// An iterator target.
    Iter,
    /// A `struct_ops` member.
    StructOps,
}

const SLEEPABLE: u8 = 1;
const XDP_FRAGS: u8 = 2;

struct SecDef {
    sec: &'static str,
    prog_type: ProgramType,
    attach: Option<AttachType>,
    flags: u8,
    syntax: Syntax,
}

const fn def(
    sec: &'static str,
    prog_type: ProgramType,
    attach: Option<AttachType>,
    flags: u8,
    syntax: Syntax,
) -> SecDef {
    SecDef {
        sec,
        prog_type,
        attach,
        flags,
        syntax,
    }
}

use AttachType as A;
use ProgramType as P;
use Syntax as S;

/// libbpf's `section_defs[]`, in its order.
static SECTION_DEFS: &[SecDef] = &[
    def("socket", P::SocketFilter, None, 0, S::Plain),
    def(
        "sk_reuseport/migrate",
        P::SkReuseport,
        Some(A::SkReuseportSelectOrMigrate),
        0,
        S::Plain,
    ),
    def(
        "sk_reuseport",
        P::SkReuseport,
        Some(A::SkReuseportSelect),
        0,
        S::Plain,
    ),
    def("kprobe+", P::Kprobe, None, 0, S::Kprobe { ret: false }),
    def("uprobe+", P::Kprobe, None, 0, S::Uprobe { ret: false }),
    def(
        "uprobe.s+",
        P::Kprobe,
        None,
        SLEEPABLE,
        S::Uprobe { ret: false },
    ),
    def("kretprobe+", P::Kprobe, None, 0, S::Kprobe { ret: true }),
    def("uretprobe+", P::Kprobe, None, 0, S::Uprobe { ret: true }),
    def(
        "uretprobe.s+",
        P::Kprobe,
        None,
        SLEEPABLE,
        S::Uprobe { ret: true },
    ),
    def(
        "kprobe.multi+",
        P::Kprobe,
        Some(A::TraceKprobeMulti),
        0,
        S::KprobeMulti {
            ret: false,
            session: false,
        },
    ),
    def(
        "kretprobe.multi+",
        P::Kprobe,
        Some(A::TraceKprobeMulti),
        0,
        S::KprobeMulti {
            ret: true,
            session: false,
        },
    ),
    def(
        "kprobe.session+",
        P::Kprobe,
        Some(A::TraceKprobeSession),
        0,
        S::KprobeMulti {
            ret: false,
            session: true,
        },
    ),
    def(
        "uprobe.multi+",
        P::Kprobe,
        Some(A::TraceUprobeMulti),
        0,
        S::UprobeMulti {
            ret: false,
            session: false,
        },
    ),
    def(
        "uretprobe.multi+",
        P::Kprobe,
        Some(A::TraceUprobeMulti),
        0,
        S::UprobeMulti {
            ret: true,
            session: false,
        },
    ),
    def(
        "uprobe.session+",
        P::Kprobe,
        Some(A::TraceUprobeSession),
        0,
        S::UprobeMulti {
            ret: false,
            session: true,
        },
    ),
    def(
        "uprobe.multi.s+",
        P::Kprobe,
        Some(A::TraceUprobeMulti),
        SLEEPABLE,
        S::UprobeMulti {
            ret: false,
            session: false,
        },
    ),
    def(
        "uretprobe.multi.s+",
        P::Kprobe,
        Some(A::TraceUprobeMulti),
        SLEEPABLE,
        S::UprobeMulti {
            ret: true,
            session: false,
        },
    ),
    def(
        "uprobe.session.s+",
        P::Kprobe,
        Some(A::TraceUprobeSession),
        SLEEPABLE,
        S::UprobeMulti {
            ret: false,
            session: true,
        },
    ),
    def("ksyscall+", P::Kprobe, None, 0, S::Ksyscall { ret: false }),
    def(
        "kretsyscall+",
        P::Kprobe,
        None,
        0,
        S::Ksyscall { ret: true },
    ),
    def("usdt+", P::Kprobe, None, 0, S::Usdt),
    def("usdt.s+", P::Kprobe, None, SLEEPABLE, S::Usdt),
    def("tc/ingress", P::SchedCls, Some(A::TcxIngress), 0, S::Plain),
    def("tc/egress", P::SchedCls, Some(A::TcxEgress), 0, S::Plain),
    def("tcx/ingress", P::SchedCls, Some(A::TcxIngress), 0, S::Plain),
    def("tcx/egress", P::SchedCls, Some(A::TcxEgress), 0, S::Plain),
    def("tc", P::SchedCls, None, 0, S::Plain),
    def("classifier", P::SchedCls, None, 0, S::Plain),
    def("action", P::SchedAct, None, 0, S::Plain),
    def(
        "netkit/primary",
        P::SchedCls,
        Some(A::NetkitPrimary),
        0,
        S::Plain,
    ),
    def("netkit/peer", P::SchedCls, Some(A::NetkitPeer), 0, S::Plain),
    def("tracepoint+", P::Tracepoint, None, 0, S::Tracepoint),
    def("tp+", P::Tracepoint, None, 0, S::Tracepoint),
    def(
        "tracepoint.s+",
        P::Tracepoint,
        None,
        SLEEPABLE,
        S::Tracepoint,
    ),
    def("tp.s+", P::Tracepoint, None, SLEEPABLE, S::Tracepoint),
    def(
        "raw_tracepoint+",
        P::RawTracepoint,
        None,
        0,
        S::RawTracepoint,
    ),
    def("raw_tp+", P::RawTracepoint, None, 0, S::RawTracepoint),
    def(
        "raw_tracepoint.s+",
        P::RawTracepoint,
        None,
        SLEEPABLE,
        S::RawTracepoint,
    ),
    def(
        "raw_tp.s+",
        P::RawTracepoint,
        None,
        SLEEPABLE,
        S::RawTracepoint,
    ),
    def(
        "raw_tracepoint.w+",
        P::RawTracepointWritable,
        None,
        0,
        S::RawTracepoint,
    ),
    def(
        "raw_tp.w+",
        P::RawTracepointWritable,
        None,
        0,
        S::RawTracepoint,
    ),
    def("tp_btf+", P::Tracing, Some(A::TraceRawTp), 0, S::Btf),
    def(
        "tp_btf.s+",
        P::Tracing,
        Some(A::TraceRawTp),
        SLEEPABLE,
        S::Btf,
    ),
    def("fentry+", P::Tracing, Some(A::TraceFentry), 0, S::Btf),
    def("fmod_ret+", P::Tracing, Some(A::ModifyReturn), 0, S::Btf),
    def("fexit+", P::Tracing, Some(A::TraceFexit), 0, S::Btf),
    def(
        "fentry.s+",
        P::Tracing,
        Some(A::TraceFentry),
        SLEEPABLE,
        S::Btf,
    ),
    def(
        "fmod_ret.s+",
        P::Tracing,
        Some(A::ModifyReturn),
        SLEEPABLE,
        S::Btf,
    ),
    def(
        "fexit.s+",
        P::Tracing,
        Some(A::TraceFexit),
        SLEEPABLE,
        S::Btf,
    ),
    def("freplace+", P::Ext, None, 0, S::Btf),
    def("lsm+", P::Lsm, Some(A::LsmMac), 0, S::Btf),
    def("lsm.s+", P::Lsm, Some(A::LsmMac), SLEEPABLE, S::Btf),
    def("lsm_cgroup+", P::Lsm, Some(A::LsmCgroup), 0, S::Btf),
    def("iter+", P::Tracing, Some(A::TraceIter), 0, S::Iter),
    def(
        "iter.s+",
        P::Tracing,
        Some(A::TraceIter),
        SLEEPABLE,
        S::Iter,
    ),
    def("syscall", P::Syscall, None, SLEEPABLE, S::Plain),
    def(
        "xdp.frags/devmap",
        P::Xdp,
        Some(A::XdpDevmap),
        XDP_FRAGS,
        S::Plain,
    ),
    def("xdp/devmap", P::Xdp, Some(A::XdpDevmap), 0, S::Plain),
    def(
        "xdp.frags/cpumap",
        P::Xdp,
        Some(A::XdpCpumap),
        XDP_FRAGS,
        S::Plain,
    ),
    def("xdp/cpumap", P::Xdp, Some(A::XdpCpumap), 0, S::Plain),
    def("xdp.frags", P::Xdp, Some(A::Xdp), XDP_FRAGS, S::Plain),
    def("xdp", P::Xdp, Some(A::Xdp), 0, S::Plain),
    def("perf_event", P::PerfEvent, None, 0, S::Plain),
    def("lwt_in", P::LwtIn, None, 0, S::Plain),
    def("lwt_out", P::LwtOut, None, 0, S::Plain),
    def("lwt_xmit", P::LwtXmit, None, 0, S::Plain),
    def("lwt_seg6local", P::LwtSeg6local, None, 0, S::Plain),
    def("sockops", P::SockOps, Some(A::CgroupSockOps), 0, S::Plain),
    def(
        "sk_skb/stream_parser",
        P::SkSkb,
        Some(A::SkSkbStreamParser),
        0,
        S::Plain,
    ),
    def(
        "sk_skb/stream_verdict",
        P::SkSkb,
        Some(A::SkSkbStreamVerdict),
        0,
        S::Plain,
    ),
    def(
        "sk_skb/verdict",
        P::SkSkb,
        Some(A::SkSkbVerdict),
        0,
        S::Plain,
    ),
    def("sk_skb", P::SkSkb, None, 0, S::Plain),
    def("sk_msg", P::SkMsg, Some(A::SkMsgVerdict), 0, S::Plain),
    def("lirc_mode2", P::LircMode2, Some(A::LircMode2), 0, S::Plain),
    def(
        "flow_dissector",
        P::FlowDissector,
        Some(A::FlowDissector),
        0,
        S::Plain,
    ),
    def(
        "cgroup_skb/ingress",
        P::CgroupSkb,
        Some(A::CgroupInetIngress),
        0,
        S::Plain,
    ),
    def(
        "cgroup_skb/egress",
        P::CgroupSkb,
        Some(A::CgroupInetEgress),
        0,
        S::Plain,
    ),
    def("cgroup/skb", P::CgroupSkb, None, 0, S::Plain),
    def(
        "cgroup/sock_create",
        P::CgroupSock,
        Some(A::CgroupInetSockCreate),
        0,
        S::Plain,
    ),
    def(
        "cgroup/sock_release",
        P::CgroupSock,
        Some(A::CgroupInetSockRelease),
        0,
        S::Plain,
    ),
    def(
        "cgroup/sock",
        P::CgroupSock,
        Some(A::CgroupInetSockCreate),
        0,
        S::Plain,
    ),
    def(
        "cgroup/post_bind4",
        P::CgroupSock,
        Some(A::CgroupInet4PostBind),
        0,
        S::Plain,
    ),
    def(
        "cgroup/post_bind6",
        P::CgroupSock,
        Some(A::CgroupInet6PostBind),
        0,
        S::Plain,
    ),
    def(
        "cgroup/bind4",
        P::CgroupSockAddr,
        Some(A::CgroupInet4Bind),
        0,
        S::Plain,
    ),
    def(
        "cgroup/bind6",
        P::CgroupSockAddr,
        Some(A::CgroupInet6Bind),
        0,
        S::Plain,
    ),
    def(
        "cgroup/connect4",
        P::CgroupSockAddr,
        Some(A::CgroupInet4Connect),
        0,
        S::Plain,
    ),
    def(
        "cgroup/connect6",
        P::CgroupSockAddr,
        Some(A::CgroupInet6Connect),
        0,
        S::Plain,
    ),
    def(
        "cgroup/connect_unix",
        P::CgroupSockAddr,
        Some(A::CgroupUnixConnect),
        0,
        S::Plain,
    ),
    def(
        "cgroup/sendmsg4",
        P::CgroupSockAddr,
        Some(A::CgroupUdp4Sendmsg),
        0,
        S::Plain,
    ),
    def(
        "cgroup/sendmsg6",
        P::CgroupSockAddr,
        Some(A::CgroupUdp6Sendmsg),
        0,
        S::Plain,
    ),
    def(
        "cgroup/sendmsg_unix",
        P::CgroupSockAddr,
        Some(A::CgroupUnixSendmsg),
        0,
        S::Plain,
    ),
    def(
        "cgroup/recvmsg4",
        P::CgroupSockAddr,
        Some(A::CgroupUdp4Recvmsg),
        0,
        S::Plain,
    ),
    def(
        "cgroup/recvmsg6",
        P::CgroupSockAddr,
        Some(A::CgroupUdp6Recvmsg),
        0,
        S::Plain,
    ),
    def(
        "cgroup/recvmsg_unix",
        P::CgroupSockAddr,
        Some(A::CgroupUnixRecvmsg),
        0,
        S::Plain,
    ),
    def(
        "cgroup/getpeername4",
        P::CgroupSockAddr,
        Some(A::CgroupInet4Getpeername),
        0,
        S::Plain,
    ),
    def(
        "cgroup/getpeername6",
        P::CgroupSockAddr,
        Some(A::CgroupInet6Getpeername),
        0,
        S::Plain,
    ),
    def(
        "cgroup/getpeername_unix",
        P::CgroupSockAddr,
        Some(A::CgroupUnixGetpeername),
        0,
        S::Plain,
    ),
    def(
        "cgroup/getsockname4",
        P::CgroupSockAddr,
        Some(A::CgroupInet4Getsockname),
        0,
        S::Plain,
    ),
    def(
        "cgroup/getsockname6",
        P::CgroupSockAddr,
        Some(A::CgroupInet6Getsockname),
        0,
        S::Plain,
    ),
    def(
        "cgroup/getsockname_unix",
        P::CgroupSockAddr,
        Some(A::CgroupUnixGetsockname),
        0,
        S::Plain,
    ),
    def(
        "cgroup/sysctl",
        P::CgroupSysctl,
        Some(A::CgroupSysctl),
        0,
        S::Plain,
    ),
    def(
        "cgroup/getsockopt",
        P::CgroupSockopt,
        Some(A::CgroupGetsockopt),
        0,
        S::Plain,
    ),
    def(
        "cgroup/setsockopt",
        P::CgroupSockopt,
        Some(A::CgroupSetsockopt),
        0,
        S::Plain,
    ),
    def(
        "cgroup/dev",
        P::CgroupDevice,
        Some(A::CgroupDevice),
        0,
        S::Plain,
    ),
    def("struct_ops+", P::StructOps, None, 0, S::StructOps),
    def("struct_ops.s+", P::StructOps, None, SLEEPABLE, S::StructOps),
    def("sk_lookup", P::SkLookup, Some(A::SkLookup), 0, S::Plain),
    def("netfilter", P::Netfilter, Some(A::Netfilter), 0, S::Plain),
];

/// Where a program attaches, as far as its section name says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachTarget {
    /// Nothing in the name (attached by hand, or needs no target).
    None,
    /// `uprobe/BINARY:SYMBOL[+OFFSET]` or `uprobe/BINARY:OFFSET`.
    Uprobe {
        /// A uretprobe.
        retprobe: bool,
        /// Binary or library path (`libc.so.6` is resolved later).
        binary: String,
        /// Function symbol; `None` when the target is a plain offset.
        symbol: Option<String>,
        /// Offset from the symbol (or from the start of the file).
        offset: u64,
    },
    /// `uprobe.multi/BINARY:PATTERN`.
    UprobeMulti {
        /// Return probes.
        retprobe: bool,
        /// `uprobe.session`.
        session: bool,
        /// Binary or library path.
        binary: String,
        /// Symbol glob.
        pattern: String,
    },
    /// `usdt/BINARY:PROVIDER:NAME`.
    Usdt {
        /// Binary or library path.
        binary: String,
        /// Probe provider.
        provider: String,
        /// Probe name.
        name: String,
    },
    /// `kprobe/FUNCTION[+OFFSET]`.
    Kprobe {
        /// A kretprobe.
        retprobe: bool,
        /// Kernel function.
        function: String,
        /// Offset into it.
        offset: u64,
    },
    /// `kprobe.multi/PATTERN`.
    KprobeMulti {
        /// Return probes.
        retprobe: bool,
        /// `kprobe.session`.
        session: bool,
        /// Function glob.
        pattern: String,
    },
    /// `ksyscall/NAME`.
    Ksyscall {
        /// `kretsyscall`.
        retprobe: bool,
        /// Syscall name.
        syscall: String,
    },
    /// `tracepoint/CATEGORY/NAME`.
    Tracepoint {
        /// Category (`syscalls`, `sched`, ...).
        category: String,
        /// Event name.
        name: String,
    },
    /// `raw_tp/NAME`.
    RawTracepoint {
        /// Tracepoint name.
        name: String,
    },
    /// `fentry/NAME`, `fexit/`, `fmod_ret/`, `freplace/`, `lsm/`, `tp_btf/`.
    Btf {
        /// BTF name of the function, hook or tracepoint.
        name: String,
    },
    /// `iter/TARGET`.
    Iter {
        /// Iterator target (`task`, `bpf_map`, ...).
        target: String,
    },
    /// `struct_ops/MEMBER`.
    StructOps {
        /// Member name.
        member: String,
    },
}

/// What a program section name means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramKind {
    /// The section name.
    pub section: String,
    /// The kernel program type.
    pub prog_type: ProgramType,
    /// The expected attach type, when the section implies one.
    pub attach_type: Option<AttachType>,
    /// `.s` sections: the program may sleep.
    pub sleepable: bool,
    /// `xdp.frags`: multi-buffer XDP.
    pub xdp_frags: bool,
    /// The attach target in the name.
    pub target: AttachTarget,
}

/// A section name that is not a program section, or whose target does not
/// parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SectionError {
    /// No definition matches.
    #[error("unknown program section `{0}` (not in libbpf's program type table)")]
    Unknown(String),
    /// The extras after `type/` do not parse.
    #[error("section `{section}`: {message}")]
    BadTarget {
        /// The section name.
        section: String,
        /// What is wrong, with the expected form.
        message: String,
    },
}

fn matches(def: &str, name: &str) -> bool {
    if let Some(prefix) = def.strip_suffix('+') {
        return match name.strip_prefix(prefix) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        };
    }
    if def.ends_with('/') {
        return name.starts_with(def);
    }
    def == name
}

fn parse_offset(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

impl ProgramKind {
    /// Reads a section name as libbpf does.
    pub fn from_section(section: &str) -> Result<ProgramKind, SectionError> {
        let def = SECTION_DEFS
            .iter()
            .find(|d| matches(d.sec, section))
            .ok_or_else(|| SectionError::Unknown(section.to_string()))?;
        let prefix_len = def.sec.trim_end_matches('+').len();
        let extras = section
            .get(prefix_len..)
            .and_then(|r| r.strip_prefix('/'))
            .filter(|r| !r.is_empty());
        let bad = |message: &str| SectionError::BadTarget {
            section: section.to_string(),
            message: message.to_string(),
        };
        let target = match (def.syntax, extras) {
            (_, None) | (Syntax::Plain, _) => AttachTarget::None,
            (Syntax::Uprobe { ret }, Some(x)) => {
                let (binary, func) = x.rsplit_once(':').ok_or_else(|| {
                    bad("expected uprobe/BINARY:FUNCTION[+OFFSET] or uprobe/BINARY:OFFSET")
                })?;
                if binary.is_empty() || func.is_empty() {
                    return Err(bad("expected uprobe/BINARY:FUNCTION[+OFFSET]"));
                }
                let (symbol, offset) = if func.starts_with(|c: char| c.is_ascii_digit()) {
                    let off = parse_offset(func).ok_or_else(|| bad("invalid offset"))?;
                    (None, off)
                } else {
                    match func.split_once('+') {
                        Some((sym, off)) => (
                            Some(sym.to_string()),
                            parse_offset(off).ok_or_else(|| bad("invalid offset after `+`"))?,
                        ),
                        None => (Some(func.to_string()), 0),
                    }
                };
                if ret && offset != 0 {
                    return Err(bad("uretprobes do not support an offset"));
                }
                AttachTarget::Uprobe {
                    retprobe: ret,
                    binary: binary.to_string(),
                    symbol,
                    offset,
                }
            }
            (Syntax::UprobeMulti { ret, session }, Some(x)) => {
                let (binary, pattern) = x
                    .split_once(':')
                    .ok_or_else(|| bad("expected uprobe.multi/BINARY:PATTERN"))?;
                AttachTarget::UprobeMulti {
                    retprobe: ret,
                    session,
                    binary: binary.to_string(),
                    pattern: pattern.to_string(),
                }
            }
            (Syntax::Usdt, Some(x)) => {
                let mut parts = x.rsplitn(3, ':');
                let (name, provider, binary) = match (parts.next(), parts.next(), parts.next()) {
                    (Some(n), Some(p), Some(b))
                        if !n.is_empty() && !p.is_empty() && !b.is_empty() =>
                    {
                        (n, p, b)
                    }
                    _ => return Err(bad("expected usdt/BINARY:PROVIDER:NAME")),
                };
                AttachTarget::Usdt {
                    binary: binary.to_string(),
                    provider: provider.to_string(),
                    name: name.to_string(),
                }
            }
            (Syntax::Kprobe { ret }, Some(x)) => {
                let (function, offset) = match x.split_once('+') {
                    Some((f, off)) => (
                        f,
                        parse_offset(off).ok_or_else(|| bad("invalid offset after `+`"))?,
                    ),
                    None => (x, 0),
                };
                if ret && offset != 0 {
                    return Err(bad("kretprobes do not support an offset"));
                }
                AttachTarget::Kprobe {
                    retprobe: ret,
                    function: function.to_string(),
                    offset,
                }
            }
            (Syntax::KprobeMulti { ret, session }, Some(x)) => AttachTarget::KprobeMulti {
                retprobe: ret,
                session,
                pattern: x.to_string(),
            },
            (Syntax::Ksyscall { ret }, Some(x)) => AttachTarget::Ksyscall {
                retprobe: ret,
                syscall: x.to_string(),
            },
            (Syntax::Tracepoint, Some(x)) => {
                let (category, name) = x
                    .split_once('/')
                    .filter(|(c, n)| !c.is_empty() && !n.is_empty())
                    .ok_or_else(|| bad("expected tracepoint/CATEGORY/NAME"))?;
                AttachTarget::Tracepoint {
                    category: category.to_string(),
                    name: name.to_string(),
                }
            }
            (Syntax::RawTracepoint, Some(x)) => AttachTarget::RawTracepoint {
                name: x.to_string(),
            },
            (Syntax::Btf, Some(x)) => AttachTarget::Btf {
                name: x.to_string(),
            },
            (Syntax::Iter, Some(x)) => AttachTarget::Iter {
                target: x.to_string(),
            },
            (Syntax::StructOps, Some(x)) => AttachTarget::StructOps {
                member: x.to_string(),
            },
        };
        Ok(ProgramKind {
            section: section.to_string(),
            prog_type: def.prog_type,
            attach_type: def.attach,
            sleepable: def.flags & SLEEPABLE != 0,
            xdp_frags: def.flags & XDP_FRAGS != 0,
            target,
        })
    }

    /// Whether user space can host this program in-process: uprobes,
    /// uretprobes, USDT probes and syscall tracepoints (`syscalls/sys_enter_*`,
    /// `sys_exit_*`, `raw_tp/sys_enter|sys_exit`). Everything else needs the
    /// kernel (or runs in the VM only on test input).
    pub fn user_space_hook(&self) -> bool {
        match &self.target {
            AttachTarget::Uprobe { .. }
            | AttachTarget::UprobeMulti { .. }
            | AttachTarget::Usdt { .. } => true,
            AttachTarget::Tracepoint { category, name } => {
                (category == "syscalls"
                    && (name.starts_with("sys_enter_") || name.starts_with("sys_exit_")))
                    || (category == "raw_syscalls" && (name == "sys_enter" || name == "sys_exit"))
            }
            AttachTarget::RawTracepoint { name } => name == "sys_enter" || name == "sys_exit",
            AttachTarget::None => {
                let s = &self.section;
                ["uprobe", "uretprobe", "usdt"]
                    .iter()
                    .any(|p| s.starts_with(p))
            }
            _ => false,
        }
    }
}

impl fmt::Display for AttachTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachTarget::None => f.write_str("-"),
            AttachTarget::Uprobe {
                binary,
                symbol,
                offset,
                ..
            } => match (symbol, offset) {
                (Some(s), 0) => write!(f, "{binary}:{s}"),
                (Some(s), o) => write!(f, "{binary}:{s}+{o:#x}"),
                (None, o) => write!(f, "{binary}:{o:#x}"),
            },
            AttachTarget::UprobeMulti {
                binary, pattern, ..
            } => write!(f, "{binary}:{pattern}"),
            AttachTarget::Usdt {
                binary,
                provider,
                name,
            } => write!(f, "{binary}:{provider}:{name}"),
            AttachTarget::Kprobe {
                function, offset, ..
            } => {
                if *offset == 0 {
                    write!(f, "{function}")
                } else {
                    write!(f, "{function}+{offset:#x}")
                }
            }
            AttachTarget::KprobeMulti { pattern, .. } => f.write_str(pattern),
            AttachTarget::Ksyscall { syscall, .. } => f.write_str(syscall),
            AttachTarget::Tracepoint { category, name } => write!(f, "{category}/{name}"),
            AttachTarget::RawTracepoint { name } | AttachTarget::Btf { name } => f.write_str(name),
            AttachTarget::Iter { target } => f.write_str(target),
            AttachTarget::StructOps { member } => f.write_str(member),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> ProgramKind {
        ProgramKind::from_section(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn uprobes_parse_binary_symbol_and_offset() {
        let k = kind("uprobe//usr/lib/libc.so.6:malloc");
        assert_eq!(k.prog_type, ProgramType::Kprobe);
        assert_eq!(
            k.target,
            AttachTarget::Uprobe {
                retprobe: false,
                binary: "/usr/lib/libc.so.6".into(),
                symbol: Some("malloc".into()),
                offset: 0
            }
        );
        assert!(k.user_space_hook());
        let k = kind("uprobe/./app:work+0x10");
        assert!(matches!(k.target, AttachTarget::Uprobe { offset: 16, .. }));
        let k = kind("uprobe/libc.so.6:0x1234");
        assert!(matches!(
            k.target,
            AttachTarget::Uprobe {
                symbol: None,
                offset: 0x1234,
                ..
            }
        ));
        let k = kind("uretprobe.s/libc.so.6:free");
        assert!(k.sleepable);
        assert!(matches!(
            k.target,
            AttachTarget::Uprobe { retprobe: true, .. }
        ));
        assert_eq!(kind("uprobe").target, AttachTarget::None);
        assert!(kind("uprobe").user_space_hook());
        assert!(ProgramKind::from_section("uretprobe/app:f+8").is_err());
        assert!(ProgramKind::from_section("uprobe/app").is_err());
    }

    #[test]
    fn usdt_tracepoints_and_btf_targets() {
        assert_eq!(
            kind("usdt/./app:myprov:myprobe").target,
            AttachTarget::Usdt {
                binary: "./app".into(),
                provider: "myprov".into(),
                name: "myprobe".into()
            }
        );
        let k = kind("tracepoint/syscalls/sys_enter_openat");
        assert_eq!(k.prog_type, ProgramType::Tracepoint);
        assert!(k.user_space_hook());
        assert!(!kind("tp/sched/sched_switch").user_space_hook());
        assert!(kind("raw_tp/sys_enter").user_space_hook());
        assert!(ProgramKind::from_section("tp/syscalls").is_err());
        let k = kind("fentry/do_unlinkat");
        assert_eq!(k.attach_type, Some(AttachType::TraceFentry));
        assert_eq!(
            k.target,
            AttachTarget::Btf {
                name: "do_unlinkat".into()
            }
        );
        assert_eq!(
            kind("lsm.s/file_open").attach_type,
            Some(AttachType::LsmMac)
        );
        assert_eq!(kind("freplace/handler").prog_type, ProgramType::Ext);
    }

    #[test]
    fn network_sections_and_attach_types() {
        assert_eq!(kind("xdp").attach_type, Some(AttachType::Xdp));
        assert!(kind("xdp.frags").xdp_frags);
        assert_eq!(kind("tc").prog_type, ProgramType::SchedCls);
        assert_eq!(
            kind("tcx/ingress").attach_type,
            Some(AttachType::TcxIngress)
        );
        assert_eq!(AttachType::TcxIngress as u32, 46);
        assert_eq!(kind("classifier").prog_type, ProgramType::SchedCls);
        assert_eq!(kind("socket").prog_type as u32, 1);
        assert_eq!(
            kind("cgroup_skb/egress").attach_type,
            Some(AttachType::CgroupInetEgress)
        );
        assert_eq!(
            kind("cgroup/connect4").prog_type,
            ProgramType::CgroupSockAddr
        );
        assert_eq!(kind("sk_lookup").prog_type, ProgramType::SkLookup);
        assert_eq!(
            kind("struct_ops/ssthresh").prog_type,
            ProgramType::StructOps
        );
        assert_eq!(kind("syscall").prog_type as u32, 31);
        assert!(kind("syscall").sleepable);
        assert_eq!(
            kind("iter/task").target,
            AttachTarget::Iter {
                target: "task".into()
            }
        );
    }

    #[test]
    fn unknown_sections_are_named() {
        for s in [
            "xdp_prog",
            "tcx",
            "uprobex/a:b",
            "kprobe.multix",
            "maps",
            ".text",
        ] {
            let e = ProgramKind::from_section(s).unwrap_err();
            assert!(e.to_string().contains(s), "{e}");
        }
    }

    #[test]
    fn every_definition_matches_its_own_name() {
        for d in SECTION_DEFS {
            let name = d.sec.trim_end_matches('+');
            let k = kind(name);
            assert_eq!(k.prog_type, d.prog_type, "{name}");
            assert_eq!(k.attach_type, d.attach, "{name}");
        }
    }
}
