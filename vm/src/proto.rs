//! The kernel's prototypes of the helpers userbpf implements (`struct
//! bpf_func_proto`: return type and argument types, as in the kernel's
//! `*_proto` definitions), the one source of truth for both the engines'
//! run-time checks ([`KernelProto::runtime`]) and the verifier.
//!
//! A few tracing helpers are here only so that the verifier checks
//! programs for the kernel as the kernel does (libbpf-tools call them):
//! `bpf_get_current_task`, `bpf_current_task_under_cgroup`,
//! `bpf_get_socket_cookie` and `bpf_skb_load_bytes` (of an `__sk_buff`),
//! `bpf_csum_diff` and `bpf_csum_update`, `bpf_strtol`, `bpf_strtoul`,
//! `bpf_get_current_cgroup_id`, `bpf_get_ns_current_pid_tgid`, the
//! helpers that change a packet ([`CHANGES_PACKET`]), and those of the
//! kernel's own hooks (socket casts such as `bpf_skc_to_tcp_sock`,
//! sysctl, TCP header options, branch records, `bpf_sys_bpf`); all in
//! [`KERNEL_ONLY`]. User
//! space has no implementation of them: preparing a program that calls
//! one fails with the helper's name and pc (`UnknownHelper`).

use crate::helper_names::helper_name;
use crate::helpers::{ArgKind, ArgSize, HelperProto};

/// A helper argument type (`enum bpf_arg_type`, with its flags folded in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum ArgType {
    /// Unused argument (`ARG_DONTCARE`).
    DontCare,
    /// Any value (`ARG_ANYTHING`).
    Anything,
    /// `ARG_CONST_MAP_PTR`.
    ConstMapPtr,
    /// `ARG_PTR_TO_MAP_KEY`: `key_size` bytes the helper reads.
    PtrToMapKey,
    /// `ARG_PTR_TO_MAP_VALUE`: `value_size` bytes the helper reads.
    PtrToMapValue,
    /// `ARG_PTR_TO_MAP_VALUE | MEM_UNINIT`: `value_size` bytes it writes.
    PtrToUninitMapValue,
    /// `ARG_PTR_TO_MEM` (| `MEM_RDONLY`, | `PTR_MAYBE_NULL`): memory the
    /// helper reads, sized by the next argument.
    PtrToMem { maybe_null: bool },
    /// `ARG_PTR_TO_UNINIT_MEM` (`ARG_PTR_TO_MEM | MEM_UNINIT`, |
    /// `PTR_MAYBE_NULL`): memory the helper writes, sized by the next
    /// argument.
    PtrToUninitMem { maybe_null: bool },
    /// `ARG_CONST_SIZE`: the size of the previous pointer, > 0.
    ConstSize,
    /// `ARG_CONST_SIZE_OR_ZERO`.
    ConstSizeOrZero,
    /// `ARG_CONST_ALLOC_SIZE_OR_ZERO` (`bpf_ringbuf_reserve`).
    ConstAllocSizeOrZero,
    /// `ARG_PTR_TO_CTX`.
    PtrToCtx,
    /// `ARG_PTR_TO_CTX_OR_NULL`: the context, or NULL.
    PtrToCtxOrNull,
    /// `ARG_PTR_TO_FUNC`: a subprogram (callback).
    PtrToFunc,
    /// `ARG_PTR_TO_STACK_OR_NULL`.
    PtrToStackOrNull,
    /// `ARG_PTR_TO_LONG`: 8 bytes the helper writes.
    PtrToLong,
    /// `ARG_PTR_TO_FIXED_SIZE_MEM | MEM_UNINIT | MEM_ALIGNED` of 4 bytes
    /// (`bpf_check_mtu`'s MTU): a `u32` the helper reads and writes.
    PtrToU32,
    /// `ARG_PTR_TO_TIMER`: a `struct bpf_timer` in a map value.
    PtrToTimer,
    /// `ARG_PTR_TO_CONST_STR`: a NUL-terminated string in read-only map
    /// memory.
    PtrToConstStr,
    /// `ARG_PTR_TO_RINGBUF_MEM | OBJ_RELEASE`: a ring buffer record from
    /// `bpf_ringbuf_reserve`, released by the call.
    PtrToRingbufMemRelease,
    /// `ARG_PTR_TO_MEM` that the helper reads and writes (`bpf_fib_lookup`'s
    /// parameters), sized by the next argument.
    PtrToMemInOut,
    /// `ARG_PTR_TO_DYNPTR`: a `struct bpf_dynptr` (16 bytes of stack).
    PtrToDynptr(DynptrArg),
    /// `ARG_PTR_TO_SOCKET_OR_NULL` (`bpf_sk_assign` in sk_lookup
    /// programs): a full socket, or NULL.
    PtrToSockOrNull,
    /// `ARG_PTR_TO_SOCK_COMMON`: a socket pointer of any kind (not null).
    PtrToSockCommon,
    /// `ARG_PTR_TO_BTF_ID_SOCK_COMMON` (`bpf_sk_assign` in TC): as
    /// [`ArgType::PtrToSockCommon`], or a BTF socket pointer, which
    /// userbpf does not model.
    PtrToBtfSockCommon,
    /// `ARG_PTR_TO_BTF_ID_SOCK_COMMON | PTR_MAYBE_NULL`
    /// (`bpf_get_socket_cookie` in tracing programs): a kernel socket (a
    /// structure starting with `struct sock_common`), possibly NULL.
    PtrToBtfSockCommonOrNull,
    /// `ARG_PTR_TO_SPIN_LOCK`: the `struct bpf_spin_lock` of a map value.
    PtrToSpinLock,
    /// `ARG_PTR_TO_BTF_ID`: a pointer to the kernel structure of this
    /// name (trusted, RCU-protected or plain, not NULL), or to a structure
    /// that starts with it.
    BtfId(&'static str),
    /// `ARG_PTR_TO_BTF_ID_OR_NULL`: as [`ArgType::BtfId`], or NULL.
    BtfIdOrNull(&'static str),
    /// `ARG_PTR_TO_MAP_VALUE | PTR_MAYBE_NULL`: `value_size` bytes the
    /// helper reads (an initial value), or NULL.
    PtrToMapValueMaybeNull,
    /// `ARG_PTR_TO_BTF_ID_SOCK_COMMON | OBJ_RELEASE` (`bpf_sk_release`): a
    /// socket reference from a lookup, released by the call.
    PtrToSockCommonRelease,
}

/// What a helper does with a `struct bpf_dynptr` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DynptrArg {
    /// Initialises it (`MEM_UNINIT`) as a dynptr of this kind.
    New(DynptrKind),
    /// Uses an initialised dynptr of any kind (`MEM_RDONLY`).
    Use,
    /// Releases an initialised dynptr of this kind (`OBJ_RELEASE`).
    Release(DynptrKind),
}

/// The kinds of `struct bpf_dynptr` userbpf knows (`DYNPTR_TYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DynptrKind {
    /// `DYNPTR_TYPE_LOCAL`: over a map value.
    Local,
    /// `DYNPTR_TYPE_RINGBUF`: over a ring buffer record, to submit or
    /// discard.
    Ringbuf,
}

impl DynptrKind {
    /// The kernel's name (`dynptr_type_str`).
    pub fn name(self) -> &'static str {
        match self {
            DynptrKind::Local => "local",
            DynptrKind::Ringbuf => "ringbuf",
        }
    }
}

/// A helper's return type (`enum bpf_return_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetType {
    /// `RET_INTEGER`.
    Integer,
    /// `RET_VOID`.
    Void,
    /// `RET_PTR_TO_MAP_VALUE_OR_NULL`.
    PtrToMapValueOrNull,
    /// `RET_PTR_TO_MAP_VALUE`: a value of the map argument, never NULL
    /// (`bpf_get_local_storage`).
    PtrToMapValueNotNull,
    /// `RET_PTR_TO_RINGBUF_MEM_OR_NULL`: a record of the requested size.
    PtrToRingbufMemOrNull,
    /// `RET_PTR_TO_SOCKET_OR_NULL` (`struct bpf_sock`).
    PtrToSocketOrNull,
    /// `RET_PTR_TO_SOCK_COMMON_OR_NULL` (`struct bpf_sock`'s common part).
    PtrToSockCommonOrNull,
    /// `RET_PTR_TO_TCP_SOCK_OR_NULL` (`struct bpf_tcp_sock`).
    PtrToTcpSockOrNull,
    /// `RET_PTR_TO_DYNPTR_MEM_OR_NULL` (`bpf_dynptr_data`): a slice of the
    /// dynptr's memory of the requested (constant) size.
    PtrToDynptrMemOrNull,
    /// `RET_PTR_TO_BTF_ID_TRUSTED`: a trusted pointer (never NULL) to the
    /// kernel structure of this name, as the kernel's BTF describes it
    /// (`bpf_get_current_task_btf`'s `struct task_struct`).
    PtrToTrustedBtfId(&'static str),
    /// `RET_PTR_TO_BTF_ID`: a pointer (never NULL, not trusted) to the
    /// kernel structure of this name (`bpf_task_pt_regs`'s
    /// `struct pt_regs`).
    PtrToBtfId(&'static str),
    /// `RET_PTR_TO_BTF_ID_OR_NULL`: as [`RetType::PtrToBtfId`], or NULL
    /// (`bpf_skc_to_tcp_sock`'s `struct tcp_sock`).
    PtrToBtfIdOrNull(&'static str),
}

/// A helper's prototype in the kernel's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelProto {
    /// The kernel's helper id.
    pub id: i32,
    /// What it returns.
    pub ret: RetType,
    /// `r1..r5`.
    pub args: [ArgType; 5],
}

impl KernelProto {
    /// Helper `id`'s prototype: it returns `ret` and takes `a` (the
    /// arguments past them unused, `ARG_DONTCARE`).
    pub const fn new(id: i32, ret: RetType, a: &[ArgType]) -> KernelProto {
        let mut args = [ArgType::DontCare; 5];
        let mut i = 0;
        while i < a.len() && i < 5 {
            args[i] = a[i];
            i += 1;
        }
        KernelProto { id, ret, args }
    }

    /// The kernel's name (`bpf_map_lookup_elem`).
    pub fn name(&self) -> &'static str {
        helper_name(self.id).unwrap_or("bpf_unknown")
    }

    /// The checks an engine makes in checked mode before calling the
    /// helper: every memory argument sized by the next argument is checked
    /// as read or written memory; map keys and values, timers and strings,
    /// whose size the helper knows, are checked by the helper itself.
    pub fn runtime(&self) -> HelperProto {
        let mut args = [ArgKind::Anything; 5];
        for (i, a) in self.args.iter().enumerate() {
            let sized_by_next = || {
                let next = self.args.get(i + 1).copied();
                let or_zero = next == Some(ArgType::ConstSizeOrZero);
                (ArgSize::Arg(i + 1), or_zero)
            };
            args[i] = match *a {
                ArgType::PtrToMem { maybe_null } => {
                    let (size, or_zero) = sized_by_next();
                    ArgKind::ReadMem {
                        size,
                        nullable: maybe_null || or_zero,
                    }
                }
                ArgType::PtrToUninitMem { maybe_null } => {
                    let (size, or_zero) = sized_by_next();
                    ArgKind::WriteMem {
                        size,
                        nullable: maybe_null || or_zero,
                    }
                }
                ArgType::PtrToLong => ArgKind::WriteMem {
                    size: ArgSize::Fixed(8),
                    nullable: false,
                },
                ArgType::PtrToU32 => ArgKind::WriteMem {
                    size: ArgSize::Fixed(4),
                    nullable: false,
                },
                ArgType::PtrToDynptr(DynptrArg::New(_)) => ArgKind::WriteMem {
                    size: ArgSize::Fixed(16),
                    nullable: false,
                },
                ArgType::PtrToDynptr(_) => ArgKind::ReadMem {
                    size: ArgSize::Fixed(16),
                    nullable: false,
                },
                _ => ArgKind::Anything,
            };
        }
        HelperProto { args }
    }
}

const fn proto(id: i32, ret: RetType, a: &[ArgType]) -> KernelProto {
    KernelProto::new(id, ret, a)
}

use ArgType::*;
use RetType::*;

const MEM: ArgType = PtrToMem { maybe_null: false };
const MEM_OR_NULL: ArgType = PtrToMem { maybe_null: true };
const UNINIT_MEM: ArgType = PtrToUninitMem { maybe_null: false };
const PROBE_READ: [ArgType; 3] = [UNINIT_MEM, ConstSizeOrZero, Anything];
/// `bpf_sk_lookup_tcp`, `_udp`, `bpf_skc_lookup_tcp`: the context, the
/// tuple and its size, the network namespace, the flags.
const SK_LOOKUP: [ArgType; 5] = [PtrToCtx, MEM, ConstSize, Anything, Anything];

/// `bpf_l3_csum_replace`/`bpf_l4_csum_replace`: the context, the offset,
/// the old and new values, the flags.
const CSUM_REPLACE: [ArgType; 5] = [PtrToCtx, Anything, Anything, Anything, Anything];
/// `bpf_tcp_check_syncookie`/`bpf_tcp_gen_syncookie`: the listening
/// socket, the IP header and its size, the TCP header and its size.
const SYN_COOKIE: [ArgType; 5] = [PtrToBtfSockCommon, MEM, ConstSize, MEM, ConstSize];

/// The prototypes, by id (from the kernel's `*_proto` definitions).
pub const KERNEL_PROTOS: &[KernelProto] = &[
    proto(1, PtrToMapValueOrNull, &[ConstMapPtr, PtrToMapKey]),
    proto(
        2,
        Integer,
        &[ConstMapPtr, PtrToMapKey, PtrToMapValue, Anything],
    ),
    proto(3, Integer, &[ConstMapPtr, PtrToMapKey]),
    proto(4, Integer, &PROBE_READ),
    proto(5, Integer, &[]),
    proto(6, Integer, &[MEM, ConstSize]),
    proto(7, Integer, &[]),
    proto(8, Integer, &[]),
    // Kernel only, and they change the packet (the verifier forgets every
    // packet pointer after them: `CHANGES_PACKET`).
    proto(9, Integer, &[PtrToCtx, Anything, MEM, ConstSize, Anything]),
    proto(10, Integer, &CSUM_REPLACE),
    proto(11, Integer, &CSUM_REPLACE),
    proto(12, Void, &[PtrToCtx, ConstMapPtr, Anything]),
    // Kernel only: TC and XDP helpers (the `__sk_buff` forms where a
    // helper has several).
    proto(13, Integer, &[PtrToCtx, Anything, Anything]),
    proto(17, Integer, &[PtrToCtx]),
    proto(18, Integer, &[PtrToCtx, Anything, Anything]),
    proto(19, Integer, &[PtrToCtx]),
    proto(20, Integer, &[PtrToCtx, UNINIT_MEM, ConstSize, Anything]),
    proto(21, Integer, &[PtrToCtx, MEM, ConstSize, Anything]),
    proto(22, Integer, &[ConstMapPtr, Anything]),
    proto(23, Integer, &[Anything, Anything]),
    proto(24, Integer, &[PtrToCtx]),
    proto(29, Integer, &[PtrToCtx, UNINIT_MEM, ConstSize]),
    proto(30, Integer, &[PtrToCtx, MEM, ConstSize]),
    proto(31, Integer, &[PtrToCtx, Anything, Anything]),
    proto(32, Integer, &[PtrToCtx, Anything]),
    proto(34, Integer, &[PtrToCtx]),
    proto(41, Integer, &[PtrToCtx]),
    proto(48, Integer, &[PtrToCtx, Anything]),
    proto(50, Integer, &[PtrToCtx, Anything, Anything, Anything]),
    proto(51, Integer, &[ConstMapPtr, Anything, Anything]),
    proto(69, Integer, &[PtrToCtx, PtrToMemInOut, ConstSize, Anything]),
    proto(79, Integer, &[PtrToCtx]),
    proto(83, Integer, &[PtrToCtx, Anything]),
    proto(97, Integer, &[PtrToCtx]),
    // Kernel only: SYN cookies of a listening socket, from the packet's
    // IP and TCP headers.
    proto(100, Integer, &SYN_COOKIE),
    proto(110, Integer, &SYN_COOKIE),
    proto(135, Integer, &[PtrToCtx, Anything]),
    proto(
        152,
        Integer,
        &[Anything, MEM_OR_NULL, ConstSizeOrZero, Anything],
    ),
    proto(155, Integer, &[Anything, Anything]),
    proto(
        163,
        Integer,
        &[PtrToCtx, Anything, PtrToU32, Anything, Anything],
    ),
    proto(188, Integer, &[PtrToCtx]),
    proto(189, Integer, &[PtrToCtx, Anything, UNINIT_MEM, ConstSize]),
    proto(190, Integer, &[PtrToCtx, Anything, MEM, ConstSize]),
    proto(14, Integer, &[]),
    proto(15, Integer, &[]),
    proto(16, Integer, &[UNINIT_MEM, ConstSize]),
    proto(
        25,
        Integer,
        &[PtrToCtx, ConstMapPtr, Anything, MEM, ConstSizeOrZero],
    ),
    // Kernel only: the `__sk_buff` form.
    proto(26, Integer, &[PtrToCtx, Anything, UNINIT_MEM, ConstSize]),
    proto(27, Integer, &[PtrToCtx, ConstMapPtr, Anything]),
    // Kernel only.
    proto(
        28,
        Integer,
        &[
            MEM_OR_NULL,
            ConstSizeOrZero,
            MEM_OR_NULL,
            ConstSizeOrZero,
            Anything,
        ],
    ),
    // Kernel only (no user-space implementation: see the module docs).
    proto(35, Integer, &[]),
    proto(36, Integer, &[Anything, MEM, ConstSize]),
    // Kernel only (38, 39, 43: they change the packet).
    proto(38, Integer, &[PtrToCtx, Anything, Anything]),
    proto(39, Integer, &[PtrToCtx, Anything]),
    proto(40, Integer, &[PtrToCtx, Anything]),
    proto(43, Integer, &[PtrToCtx, Anything, Anything]),
    proto(42, Integer, &[]),
    proto(44, Integer, &[PtrToCtx, Anything]),
    // Kernel only.
    proto(37, Integer, &[ConstMapPtr, Anything]),
    // Kernel only; the `__sk_buff` form (socket filters, TC, cgroup_skb).
    proto(46, Integer, &[PtrToCtx]),
    proto(45, Integer, &PROBE_READ),
    // Kernel only, changes the packet.
    proto(54, Integer, &[PtrToCtx, Anything]),
    // Kernel only: a perf event counter's value, with its running times.
    proto(55, Integer, &[ConstMapPtr, Anything, UNINIT_MEM, ConstSize]),
    proto(58, Integer, &[PtrToCtx, Anything]),
    // Kernel only, changes the packet.
    proto(65, Integer, &[PtrToCtx, Anything]),
    proto(
        67,
        Integer,
        &[PtrToCtx, UNINIT_MEM, ConstSizeOrZero, Anything],
    ),
    // Kernel only.
    proto(80, Integer, &[]),
    // Kernel only: socket lookups, which return a reference the program
    // must release (`bpf_sk_release`), and socket casts, whose result
    // shares the reference of their argument.
    proto(84, PtrToSocketOrNull, &SK_LOOKUP),
    proto(85, PtrToSocketOrNull, &SK_LOOKUP),
    proto(86, Integer, &[PtrToSockCommonRelease]),
    proto(95, PtrToSocketOrNull, &[PtrToSockCommon]),
    proto(96, PtrToTcpSockOrNull, &[PtrToSockCommon]),
    proto(98, PtrToSocketOrNull, &[PtrToSockCommon]),
    proto(99, PtrToSockCommonOrNull, &SK_LOOKUP),
    // Kernel only: casts of a socket to the kernel structure of its kind
    // (`bpf_skc_to_tcp6_sock` .. `bpf_skc_to_mptcp_sock`), NULL when it
    // is another kind; and a socket's cgroup.
    proto(136, PtrToBtfIdOrNull("tcp6_sock"), &[PtrToBtfSockCommon]),
    proto(137, PtrToBtfIdOrNull("tcp_sock"), &[PtrToBtfSockCommon]),
    proto(
        138,
        PtrToBtfIdOrNull("tcp_timewait_sock"),
        &[PtrToBtfSockCommon],
    ),
    proto(
        139,
        PtrToBtfIdOrNull("tcp_request_sock"),
        &[PtrToBtfSockCommon],
    ),
    proto(140, PtrToBtfIdOrNull("udp6_sock"), &[PtrToBtfSockCommon]),
    proto(178, PtrToBtfIdOrNull("unix_sock"), &[PtrToBtfSockCommon]),
    proto(196, PtrToBtfIdOrNull("mptcp_sock"), &[PtrToBtfSockCommon]),
    proto(128, Integer, &[PtrToBtfSockCommon]),
    proto(129, Integer, &[PtrToBtfSockCommon, Anything]),
    // Kernel only: packet bytes relative to a header
    // (`bpf_skb_load_bytes_relative`), a packet's delivery time
    // (`bpf_skb_set_tstamp`).
    proto(
        68,
        Integer,
        &[PtrToCtx, Anything, UNINIT_MEM, ConstSize, Anything],
    ),
    proto(192, Integer, &[PtrToCtx, Anything, Anything]),
    // Kernel only: TCP header options of sockops programs
    // (`bpf_load_hdr_opt` writes the option found into its buffer:
    // `ARG_PTR_TO_MEM | MEM_WRITE`), `bpf_store_hdr_opt`,
    // `bpf_reserve_hdr_opt`.
    proto(142, Integer, &[PtrToCtx, UNINIT_MEM, ConstSize, Anything]),
    proto(143, Integer, &[PtrToCtx, MEM, ConstSize, Anything]),
    proto(144, Integer, &[PtrToCtx, Anything, Anything]),
    // Kernel only: cgroup/sysctl programs' name and values
    // (`bpf_sysctl_get_name`, `_get_current_value`, `_get_new_value`,
    // `_set_new_value`).
    proto(101, Integer, &[PtrToCtx, MEM, ConstSize, Anything]),
    proto(102, Integer, &[PtrToCtx, UNINIT_MEM, ConstSize]),
    proto(103, Integer, &[PtrToCtx, UNINIT_MEM, ConstSize]),
    proto(104, Integer, &[PtrToCtx, MEM, ConstSize]),
    // Kernel only: a perf event's branch records
    // (`bpf_read_branch_records`), and `bpf_sys_bpf` of syscall programs.
    proto(
        119,
        Integer,
        &[PtrToCtx, MEM_OR_NULL, ConstSizeOrZero, Anything],
    ),
    proto(166, Integer, &[Anything, MEM, ConstSize]),
    // Kernel only, and they change the packet: lightweight tunnel
    // encapsulation (`bpf_lwt_push_encap`) and the IPv6 segment routing
    // header of seg6local programs (`bpf_lwt_seg6_store_bytes`,
    // `_adjust_srh`, `_action`).
    proto(73, Integer, &[PtrToCtx, Anything, MEM, ConstSize]),
    proto(74, Integer, &[PtrToCtx, Anything, MEM, ConstSize]),
    proto(75, Integer, &[PtrToCtx, Anything, Anything]),
    proto(76, Integer, &[PtrToCtx, Anything, MEM, ConstSize]),
    // Kernel only: socket programs' helpers (sockops, sk_msg, sk_skb,
    // sock_addr, sk_reuseport): socket options, redirects through socket
    // maps, message data, binding.
    proto(49, Integer, &[PtrToCtx, Anything, Anything, MEM, ConstSize]),
    proto(52, Integer, &[PtrToCtx, ConstMapPtr, Anything, Anything]),
    proto(53, Integer, &[PtrToCtx, ConstMapPtr, PtrToMapKey, Anything]),
    proto(
        57,
        Integer,
        &[PtrToCtx, Anything, Anything, UNINIT_MEM, ConstSize],
    ),
    proto(59, Integer, &[PtrToCtx, Anything]),
    proto(60, Integer, &[PtrToCtx, ConstMapPtr, Anything, Anything]),
    proto(61, Integer, &[PtrToCtx, Anything]),
    proto(62, Integer, &[PtrToCtx, Anything]),
    proto(63, Integer, &[PtrToCtx, Anything, Anything, Anything]),
    proto(64, Integer, &[PtrToCtx, MEM, ConstSize]),
    proto(70, Integer, &[PtrToCtx, ConstMapPtr, PtrToMapKey, Anything]),
    proto(71, Integer, &[PtrToCtx, ConstMapPtr, PtrToMapKey, Anything]),
    proto(72, Integer, &[PtrToCtx, ConstMapPtr, PtrToMapKey, Anything]),
    proto(82, Integer, &[PtrToCtx, ConstMapPtr, PtrToMapKey, Anything]),
    proto(90, Integer, &[PtrToCtx, Anything, Anything, Anything]),
    proto(91, Integer, &[PtrToCtx, Anything, Anything, Anything]),
    proto(87, Integer, &[ConstMapPtr, PtrToMapValue, Anything]),
    proto(88, Integer, &[ConstMapPtr, PtrToUninitMapValue]),
    proto(89, Integer, &[ConstMapPtr, PtrToUninitMapValue]),
    // Kernel only.
    proto(105, Integer, &[MEM, ConstSize, Anything, PtrToLong]),
    proto(106, Integer, &[MEM, ConstSize, Anything, PtrToLong]),
    proto(109, Integer, &[Anything]),
    proto(112, Integer, &PROBE_READ),
    proto(113, Integer, &PROBE_READ),
    proto(114, Integer, &PROBE_READ),
    proto(115, Integer, &PROBE_READ),
    proto(117, Integer, &[Anything]),
    proto(118, Integer, &[]),
    // Kernel only.
    proto(120, Integer, &[Anything, Anything, UNINIT_MEM, ConstSize]),
    // Kernel only: the network namespace of the context's socket, or of
    // the caller (NULL).
    proto(122, Integer, &[PtrToCtxOrNull]),
    // Kernel only: a socket for the packet (TC; sk_lookup programs pass
    // a full socket or NULL).
    proto(124, Integer, &[PtrToCtx, PtrToBtfSockCommon, Anything]),
    // Kernel only: the current task's cgroup ancestor at a level.
    proto(123, Integer, &[Anything]),
    proto(125, Integer, &[]),
    proto(130, Integer, &[ConstMapPtr, MEM, ConstSizeOrZero, Anything]),
    proto(
        131,
        PtrToRingbufMemOrNull,
        &[ConstMapPtr, ConstAllocSizeOrZero, Anything],
    ),
    proto(132, Void, &[PtrToRingbufMemRelease, Anything]),
    proto(133, Void, &[PtrToRingbufMemRelease, Anything]),
    proto(134, Integer, &[ConstMapPtr, Anything]),
    // Kernel only: the lock of a map value (the verifier tracks which
    // one is held).
    proto(93, Void, &[PtrToSpinLock]),
    proto(94, Void, &[PtrToSpinLock]),
    // Kernel only: the cgroup storage of the running program's cgroup
    // (bpf_get_local_storage(map, flags), flags 0).
    proto(81, PtrToMapValueNotNull, &[ConstMapPtr, Anything]),
    // Kernel only: socket local storage (bpf_sk_storage_get(map, sk,
    // init value, flags), bpf_sk_storage_delete(map, sk)).
    proto(
        107,
        PtrToMapValueOrNull,
        &[
            ConstMapPtr,
            PtrToBtfSockCommon,
            PtrToMapValueMaybeNull,
            Anything,
        ],
    ),
    proto(108, Integer, &[ConstMapPtr, PtrToBtfSockCommon]),
    // Kernel only: task local storage (bpf_task_storage_get(map, task,
    // init value, flags), bpf_task_storage_delete(map, task)).
    proto(
        156,
        PtrToMapValueOrNull,
        &[
            ConstMapPtr,
            BtfIdOrNull("task_struct"),
            PtrToMapValueMaybeNull,
            Anything,
        ],
    ),
    proto(157, Integer, &[ConstMapPtr, BtfIdOrNull("task_struct")]),
    // Kernel only: cgroup local storage (bpf_cgrp_storage_get(map,
    // cgroup, init value, flags), bpf_cgrp_storage_delete(map, cgroup)).
    proto(
        210,
        PtrToMapValueOrNull,
        &[
            ConstMapPtr,
            BtfIdOrNull("cgroup"),
            PtrToMapValueMaybeNull,
            Anything,
        ],
    ),
    proto(211, Integer, &[ConstMapPtr, BtfIdOrNull("cgroup")]),
    // Kernel only: bpf_find_vma(task, addr, callback, ctx, flags) calls
    // callback(task, vma, ctx) for the task's memory area at addr.
    proto(
        180,
        Integer,
        &[
            BtfId("task_struct"),
            Anything,
            PtrToFunc,
            PtrToStackOrNull,
            Anything,
        ],
    ),
    // Kernel only: a task's kernel stack.
    proto(
        141,
        Integer,
        &[BtfId("task_struct"), UNINIT_MEM, ConstSizeOrZero, Anything],
    ),
    // bpf_copy_from_user(dst, size, user_ptr): sleepable programs only
    // (`MIGHT_SLEEP`).
    proto(148, Integer, &[UNINIT_MEM, ConstSizeOrZero, Anything]),
    // Kernel only: bpf_copy_from_user_task(dst, size, user_ptr, task,
    // flags), sleepable programs only (`MIGHT_SLEEP`).
    proto(
        191,
        Integer,
        &[
            UNINIT_MEM,
            ConstSizeOrZero,
            Anything,
            BtfId("task_struct"),
            Anything,
        ],
    ),
    // Kernel only: the current task's `struct task_struct`.
    proto(158, PtrToTrustedBtfId("task_struct"), &[]),
    proto(160, Integer, &[]),
    // Kernel only: the registers a task entered the kernel with.
    proto(175, PtrToBtfId("pt_regs"), &[BtfId("task_struct")]),
    // Kernel only: the CPU's last branch records.
    proto(176, Integer, &[UNINIT_MEM, ConstSizeOrZero, Anything]),
    proto(
        164,
        Integer,
        &[ConstMapPtr, PtrToFunc, PtrToStackOrNull, Anything],
    ),
    proto(
        165,
        Integer,
        &[
            // `ARG_PTR_TO_MEM_OR_NULL`: NULL with a size of 0 measures.
            PtrToUninitMem { maybe_null: true },
            ConstSizeOrZero,
            PtrToConstStr,
            MEM_OR_NULL,
            ConstSizeOrZero,
        ],
    ),
    proto(169, Integer, &[PtrToTimer, ConstMapPtr, Anything]),
    proto(170, Integer, &[PtrToTimer, PtrToFunc]),
    proto(171, Integer, &[PtrToTimer, Anything, Anything]),
    proto(172, Integer, &[PtrToTimer]),
    proto(173, Integer, &[PtrToCtx]),
    proto(174, Integer, &[PtrToCtx]),
    proto(
        177,
        Integer,
        &[MEM, ConstSize, MEM_OR_NULL, ConstSizeOrZero],
    ),
    proto(
        181,
        Integer,
        &[Anything, PtrToFunc, PtrToStackOrNull, Anything],
    ),
    proto(182, Integer, &[MEM, ConstSize, PtrToConstStr]),
    proto(183, Integer, &[PtrToCtx, Anything, PtrToLong]),
    proto(184, Integer, &[PtrToCtx, PtrToLong]),
    proto(185, Integer, &[PtrToCtx]),
    proto(186, Integer, &[]),
    proto(187, Integer, &[Anything]),
    // Kernel only: a per-CPU map's value on a given CPU.
    proto(
        195,
        PtrToMapValueOrNull,
        &[ConstMapPtr, PtrToMapKey, Anything],
    ),
    proto(
        197,
        Integer,
        &[
            UNINIT_MEM,
            ConstSizeOrZero,
            Anything,
            PtrToDynptr(DynptrArg::New(DynptrKind::Local)),
        ],
    ),
    proto(
        198,
        Integer,
        &[
            ConstMapPtr,
            Anything,
            Anything,
            PtrToDynptr(DynptrArg::New(DynptrKind::Ringbuf)),
        ],
    ),
    proto(
        199,
        Void,
        &[
            PtrToDynptr(DynptrArg::Release(DynptrKind::Ringbuf)),
            Anything,
        ],
    ),
    proto(
        200,
        Void,
        &[
            PtrToDynptr(DynptrArg::Release(DynptrKind::Ringbuf)),
            Anything,
        ],
    ),
    proto(
        201,
        Integer,
        &[
            UNINIT_MEM,
            ConstSizeOrZero,
            PtrToDynptr(DynptrArg::Use),
            Anything,
            Anything,
        ],
    ),
    proto(
        202,
        Integer,
        &[
            PtrToDynptr(DynptrArg::Use),
            Anything,
            MEM,
            ConstSizeOrZero,
            Anything,
        ],
    ),
    proto(
        203,
        PtrToDynptrMemOrNull,
        &[PtrToDynptr(DynptrArg::Use), Anything, ConstAllocSizeOrZero],
    ),
    proto(208, Integer, &[]),
];

/// The helpers of [`KERNEL_PROTOS`] user space does not run: their
/// prototypes are there for the verifier's checks of kernel programs.
pub const KERNEL_ONLY: &[i32] = &[
    9, 10, 11, 13, 17, 18, 19, 20, 21, 22, 23, 24, 26, 28, 29, 30, 31, 32, 34, 35, 37, 38, 39, 40,
    41, 43, 44, 46, 48, 49, 50, 51, 52, 53, 54, 55, 57, 59, 60, 61, 62, 63, 64, 65, 68, 69, 70, 71,
    72, 73, 74, 75, 76, 79, 80, 81, 82, 83, 84, 85, 86, 90, 91, 93, 94, 95, 96, 97, 98, 99, 100,
    101, 102, 103, 104, 105, 106, 107, 108, 110, 119, 120, 122, 123, 124, 128, 129, 135, 136, 137,
    138, 139, 140, 141, 142, 143, 144, 152, 155, 156, 157, 158, 163, 166, 175, 176, 178, 180, 188,
    189, 190, 191, 192, 196, 210, 211,
];

/// The helpers of [`KERNEL_PROTOS`] only sleepable programs may call
/// (`might_sleep`): `bpf_copy_from_user`, `bpf_sys_bpf`,
/// `bpf_copy_from_user_task`.
pub const MIGHT_SLEEP: &[i32] = &[148, 166, 191];

/// The helpers of [`KERNEL_PROTOS`] that acquire a reference the program
/// must release on every path (`is_acquire_function`): the socket lookups
/// (`bpf_ringbuf_reserve`'s records are tracked by their return type).
pub const ACQUIRES: &[i32] = &[84, 85, 99];

/// The helpers of [`KERNEL_PROTOS`] whose result points into their
/// argument's object and shares its reference (`is_ptr_cast_function`):
/// `bpf_sk_fullsock`, `bpf_tcp_sock`, `bpf_skc_to_*_sock`.
pub const CASTS: &[i32] = &[95, 96, 136, 137, 138, 139, 140, 178, 196];

/// The helpers of [`KERNEL_ONLY`] that change the packet
/// (`bpf_helper_changes_pkt_data`): `bpf_skb_store_bytes`,
/// `bpf_l3_csum_replace`, `bpf_l4_csum_replace`, `bpf_clone_redirect`,
/// `bpf_skb_vlan_push`, `bpf_skb_vlan_pop`, `bpf_skb_change_proto`,
/// `bpf_skb_change_tail`, `bpf_skb_pull_data`, `bpf_skb_change_head`,
/// `bpf_xdp_adjust_head`, `bpf_skb_adjust_room`, `bpf_xdp_adjust_meta`,
/// `bpf_msg_pull_data`, `bpf_xdp_adjust_tail`, `bpf_msg_push_data`,
/// `bpf_msg_pop_data`, `bpf_lwt_push_encap`, `bpf_lwt_seg6_store_bytes`,
/// `bpf_lwt_seg6_adjust_srh`, `bpf_lwt_seg6_action`.
pub const CHANGES_PACKET: &[i32] = &[
    9, 10, 11, 13, 18, 19, 31, 38, 39, 43, 44, 50, 54, 63, 65, 73, 74, 75, 76, 90, 91,
];

/// The kernel's prototype of helper `id`, if userbpf implements it (or
/// checks it for the kernel: [`KERNEL_ONLY`]).
pub fn kernel_proto(id: i32) -> Option<&'static KernelProto> {
    KERNEL_PROTOS.iter().find(|p| p.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_their_pointers_and_ids_are_unique() {
        let mut ids: Vec<i32> = KERNEL_PROTOS.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), KERNEL_PROTOS.len());
        for p in KERNEL_PROTOS {
            assert!(helper_name(p.id).is_some(), "{}", p.id);
            for (i, a) in p.args.iter().enumerate() {
                if matches!(a, ConstSize | ConstSizeOrZero) {
                    assert!(
                        i > 0
                            && matches!(
                                p.args[i - 1],
                                PtrToMem { .. } | PtrToUninitMem { .. } | PtrToMemInOut
                            ),
                        "{}: size without a pointer at r{}",
                        p.name(),
                        i + 1
                    );
                }
            }
        }
    }

    #[test]
    fn runtime_checks_follow_the_kernel_types() {
        let read = kernel_proto(130).unwrap().runtime();
        assert_eq!(
            read.args[1],
            ArgKind::ReadMem {
                size: ArgSize::Arg(2),
                nullable: true
            }
        );
        let comm = kernel_proto(16).unwrap().runtime();
        assert_eq!(
            comm.args[0],
            ArgKind::WriteMem {
                size: ArgSize::Arg(1),
                nullable: false
            }
        );
        assert_eq!(kernel_proto(1).unwrap().runtime(), HelperProto::SCALARS);
    }
}
