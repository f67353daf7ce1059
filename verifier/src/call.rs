//! Calls and returns: helper calls checked against their prototypes
//! (`check_helper_call`, `check_func_arg`), bpf-to-bpf calls with their
//! frames (`check_func_call`), and `exit` (`prepare_func_exit`,
//! `check_return_code`, `check_reference_leak`).

use userbpf_vm::helper_names::helper_name;
use userbpf_vm::isa::{CallTarget, Reg as R};
use userbpf_vm::object::ProgramType;
use userbpf_vm::proto::{kernel_proto, ArgType, DynptrArg, DynptrKind, KernelProto, RetType};

use crate::ctx::Context;
use crate::env::{map_type, MapInfo};
use crate::error::VerifyError;
use crate::explore::{Step, Verifier};
use crate::mem::Access;
use crate::reg::{Reg, RegType, Trust};
use crate::scalar::Scalar;
use crate::state::{ByteKind, Frame, State, MAX_BPF_STACK, MAX_CALL_FRAMES};

/// Helpers every program may call (`bpf_base_func_proto`, with root's
/// CAP_BPF and CAP_PERFMON), but [`NOT_TRACING`] in tracing programs.
const BASE: &[i32] = &[
    1, 2, 3, 5, 6, 7, 8, 12, 14, 15, 16, 17, 22, 35, 37, 42, 55, 80, 87, 88, 89, 93, 94, 105, 106,
    109, 112, 113, 114, 115, 117, 118, 120, 123, 125, 130, 131, 132, 133, 134, 141, 148, 156, 157,
    158, 160, 164, 165, 169, 170, 171, 172, 175, 176, 177, 180, 181, 182, 191, 195, 197, 198, 199,
    200, 201, 202, 203, 208, 210, 211,
];
/// Base helpers tracing programs (kprobes, tracepoints, perf events,
/// fentry) may not call: `bpf_ktime_get_coarse_ns`.
const NOT_TRACING: &[i32] = &[160];
/// Helpers of tracing programs (`bpf_tracing_func_proto`).
const TRACING: &[i32] = &[
    4, 14, 15, 16, 25, 27, 36, 45, 67, 109, 112, 113, 114, 115, 117, 173, 174,
];
/// userbpf's user-space superset for uprobes, USDT and syscall hooks
/// (documented difference: the kernel allows these only on fentry-style
/// and kprobe programs, or cgroup programs for the last two):
/// `bpf_override_return`, `bpf_get_func_arg`, `bpf_get_func_ret`,
/// `bpf_get_func_arg_cnt`, `bpf_get_retval`, `bpf_set_retval`.
const USER_SPACE: &[i32] = &[58, 183, 184, 185, 186, 187];
/// Helpers packet programs may call besides the base ones.
const PACKET: &[i32] = &[25];
/// Helpers of `__sk_buff` programs (socket filters, TC, cgroup_skb)
/// besides the packet ones: `bpf_skb_load_bytes`, `bpf_get_socket_cookie`,
/// `bpf_skb_load_bytes_relative`, `bpf_get_netns_cookie`.
const SKB: &[i32] = &[26, 46, 68, 122];
/// Helpers that may read or write packet memory through a pointer
/// argument (`pkt_access` in their kernel prototype): the map helpers,
/// `bpf_csum_diff`, the socket lookups (their tuple) and the SYN cookie
/// helpers.
const PKT_ACCESS: &[i32] = &[1, 2, 3, 28, 84, 85, 87, 88, 89, 99, 100, 110, 195];
/// Helpers of TC and XDP programs besides those: `bpf_csum_diff`.
const TC_XDP: &[i32] = &[28];
/// Helpers of TC programs only: `bpf_csum_update`, those that change
/// the packet (`bpf_skb_store_bytes`, `bpf_l3_csum_replace`,
/// `bpf_l4_csum_replace`, `bpf_clone_redirect`, `bpf_skb_vlan_push`,
/// `_pop`, `bpf_skb_change_proto`, `bpf_skb_change_tail`,
/// `bpf_skb_pull_data`, `bpf_skb_change_head`, `bpf_skb_adjust_room`),
/// the tunnel keys and options, the hash, the route realm, the cgroup
/// class and ids, `bpf_skb_change_type`, `bpf_skb_ecn_set_ce`,
/// `bpf_csum_level`, `bpf_redirect_neigh`, `bpf_redirect_peer`.
const TC: &[i32] = &[
    9, 10, 11, 13, 17, 18, 19, 20, 21, 24, 29, 30, 31, 32, 34, 38, 39, 40, 41, 43, 48, 50, 79, 83,
    97, 135, 152, 155,
];
/// Redirects, route lookups, MTU checks and SYN cookies of TC and XDP
/// programs: `bpf_redirect`, `bpf_fib_lookup`, `bpf_check_mtu`,
/// `bpf_tcp_check_syncookie`, `bpf_tcp_gen_syncookie` (and XDP's
/// `bpf_redirect_map`).
const REDIRECT: &[i32] = &[23, 69, 100, 110, 163];
/// Helpers of XDP programs' frames: `bpf_xdp_get_buff_len`,
/// `bpf_xdp_load_bytes`, `bpf_xdp_store_bytes`.
const XDP_BUFF: &[i32] = &[188, 189, 190];
/// Helpers of XDP programs only: `bpf_xdp_adjust_head`, `_meta`, `_tail`.
const XDP: &[i32] = &[44, 54, 65];
/// Helpers of LWT programs besides the packet ones: `bpf_skb_load_bytes`,
/// `bpf_csum_diff`, `bpf_skb_pull_data`, `bpf_get_route_realm`,
/// `bpf_get_hash_recalc`.
const LWT: &[i32] = &[24, 26, 28, 34, 39];
/// Helpers of LWT_XMIT programs only: `bpf_skb_store_bytes`,
/// `bpf_l3_csum_replace`, `bpf_l4_csum_replace`, `bpf_clone_redirect`,
/// the tunnel keys and options, `bpf_redirect`, `bpf_skb_change_tail`,
/// `bpf_csum_update`, `bpf_set_hash_invalid`, `bpf_skb_change_head`,
/// `bpf_csum_level`.
const LWT_XMIT: &[i32] = &[9, 10, 11, 13, 20, 21, 23, 29, 30, 38, 40, 41, 43, 135];
/// Socket lookups (TC, cgroup_skb, sk_skb and XDP programs):
/// `bpf_sk_lookup_tcp`, `bpf_sk_lookup_udp`, `bpf_sk_release`,
/// `bpf_skc_lookup_tcp`.
const SOCK_LOOKUP: &[i32] = &[84, 85, 86, 99];
/// Socket casts (TC and cgroup_skb programs): `bpf_sk_fullsock`,
/// `bpf_tcp_sock`, `bpf_get_listener_sock`.
const SOCK_CAST: &[i32] = &[95, 96, 98];
/// Helpers of cgroup programs (but cgroup_skb's) besides the base ones:
/// `bpf_perf_event_output`, `bpf_get_local_storage`, `bpf_get_retval`,
/// `bpf_set_retval`.
const CGROUP: &[i32] = &[25, 81, 186, 187];
/// Socket storage, of the hooks with a socket at hand:
/// `bpf_sk_storage_get`, `bpf_sk_storage_delete` (cgroup/sock programs
/// get only, on their context).
const SK_STORAGE: &[i32] = &[107, 108];
/// `bpf_get_socket_cookie` and `bpf_get_netns_cookie` of a socket hook's
/// context (cgroup sock and sock_addr programs).
const SOCK_COOKIES: &[i32] = &[46, 122];
/// Helpers of sk_skb programs besides the packet ones:
/// `bpf_skb_store_bytes`, `bpf_skb_load_bytes`, `bpf_skb_change_tail`,
/// `bpf_skb_pull_data`, `bpf_skb_change_head`, `bpf_get_socket_cookie`,
/// `bpf_skb_adjust_room`.
const SK_SKB: &[i32] = &[9, 26, 38, 39, 43, 46, 50];
/// Casts of a socket to its kernel structure (`bpf_skc_to_tcp6_sock`,
/// `_tcp_sock`, `_tcp_timewait_sock`, `_tcp_request_sock`, `_udp6_sock`,
/// `_unix_sock`, `_mptcp_sock`): the networking hooks' shared helpers
/// (`bpf_sk_base_func_proto`) and tracing programs'.
const SKC_CASTS: &[i32] = &[136, 137, 138, 139, 140, 178, 196];
/// Helpers of cgroup/sysctl programs: `bpf_sysctl_get_name`,
/// `_get_current_value`, `_get_new_value`, `_set_new_value`.
const SYSCTL: &[i32] = &[101, 102, 103, 104];
/// TCP header options of sockops programs: `bpf_load_hdr_opt`,
/// `bpf_store_hdr_opt`, `bpf_reserve_hdr_opt`.
const HDR_OPT: &[i32] = &[142, 143, 144];

/// The register types a socket argument takes (`sock_common_types`), as
/// the kernel lists them when it refuses one; with the BTF socket
/// pointers for `ARG_PTR_TO_BTF_ID_SOCK_COMMON`.
const SOCK_COMMON_TYPES: &str = "sock_common, sock, tcp_sock, xdp_sock";
/// The register types a lock argument takes (`spin_lock_types`).
const SPIN_LOCK_TYPES: &str = "map_value, ptr_";
/// The register types a kernel structure argument takes (`btf_ptr_types`).
const BTF_ID_TYPES: &str = "ptr_, trusted_ptr_, rcu_ptr_";
const BTF_SOCK_COMMON_TYPES: &str = "sock_common, sock, tcp_sock, xdp_sock, ptr_, trusted_ptr_";

/// What the checks of earlier arguments tell later ones.
#[derive(Default)]
struct Meta {
    map: Option<u32>,
    /// The map whose value holds an `ARG_PTR_TO_TIMER`.
    timer_map: Option<u32>,
    /// `ARG_CONST_ALLOC_SIZE_OR_ZERO`.
    alloc_size: Option<u64>,
    /// The reference a release argument releases.
    release: Option<u32>,
    /// The reference of a socket argument, which a cast's result shares.
    sock_ref: u32,
    /// A dynptr the call initialises: its frame, offset and kind.
    dynptr_new: Option<(usize, i32, DynptrKind)>,
    /// The reference of a dynptr argument, which `bpf_dynptr_data`'s
    /// slice shares (0: none, a local dynptr).
    dynptr_ref: u32,
}

impl Verifier<'_> {
    /// For a refusal in a program type whose context and helpers userbpf
    /// does not model, the reason; otherwise empty.
    pub(crate) fn unmodelled(&self) -> String {
        match self.env.prog_type {
            Some(t) if self.env.context == Context::Opaque => format!(
                " (userbpf's verifier does not model {} programs: their context and helpers)",
                t.kernel_name()
            ),
            _ => String::new(),
        }
    }

    /// Whether the program is a sock_addr hook that reports an address
    /// (recvmsg, getpeername, getsockname): it returns 1 and has no
    /// return value to get or set.
    fn reports_address(&self) -> bool {
        use userbpf_vm::object::AttachType as A;
        matches!(
            self.env.attach_type,
            Some(
                A::CgroupUdp4Recvmsg
                    | A::CgroupUdp6Recvmsg
                    | A::CgroupUnixRecvmsg
                    | A::CgroupInet4Getpeername
                    | A::CgroupInet6Getpeername
                    | A::CgroupUnixGetpeername
                    | A::CgroupInet4Getsockname
                    | A::CgroupInet6Getsockname
                    | A::CgroupUnixGetsockname
            )
        )
    }

    /// The values the program may return, for the program types whose
    /// return value the kernel acts on (`check_return_code`): cgroup
    /// programs allow or deny (cgroup_skb egress programs may also ask
    /// for congestion notification: 2, 3; bind hooks may skip the
    /// privileged-port check: 2, 3), and the address hooks that only
    /// rewrite an address must return 1.
    fn exit_range(&self) -> Option<(i64, i64)> {
        use userbpf_vm::object::AttachType as A;
        use ProgramType as T;
        match self.env.prog_type? {
            T::CgroupSkb if self.env.attach_type == Some(A::CgroupInetEgress) => Some((0, 3)),
            T::CgroupSockAddr if self.reports_address() => Some((1, 1)),
            // bind may also ask to skip the CAP_NET_BIND_SERVICE check
            // (`BPF_RET_BIND_NO_CAP_NET_BIND_SERVICE`, bit 1).
            T::CgroupSockAddr
                if matches!(
                    self.env.attach_type,
                    Some(A::CgroupInet4Bind | A::CgroupInet6Bind)
                ) =>
            {
                Some((0, 3))
            }
            T::CgroupSkb
            | T::CgroupSockAddr
            | T::CgroupSock
            | T::SockOps
            | T::CgroupDevice
            | T::CgroupSysctl
            | T::CgroupSockopt
            | T::SkLookup
            | T::Netfilter => Some((0, 1)),
            _ => None,
        }
    }

    /// The prototype of helper `id` in this program type: the kernel's,
    /// but `bpf_get_cgroup_classid` reads the packet's class in TC and
    /// LWT programs (`r1` the context) and the current task's elsewhere
    /// (no argument).
    fn proto(&self, id: i32) -> Option<&'static KernelProto> {
        use ArgType::*;
        use ProgramType as T;
        static CGROUP_CLASSID_CURRENT: KernelProto = KernelProto::new(17, RetType::Integer, &[]);
        // A setsockopt hook sets and gets options on its socket (`r1` the
        // context's `sk`), not through the context.
        static SK_SETSOCKOPT: KernelProto = KernelProto::new(
            49,
            RetType::Integer,
            &[
                PtrToSockCommon,
                Anything,
                Anything,
                PtrToMem { maybe_null: false },
                ConstSize,
            ],
        );
        static SK_GETSOCKOPT: KernelProto = KernelProto::new(
            57,
            RetType::Integer,
            &[
                PtrToSockCommon,
                Anything,
                Anything,
                PtrToUninitMem { maybe_null: false },
                ConstSize,
            ],
        );
        // A cgroup/sock program's context is the socket
        // (`bpf_sk_storage_get_cg_sock_proto`).
        static SK_STORAGE_GET_CG_SOCK: KernelProto = KernelProto::new(
            107,
            RetType::PtrToMapValueOrNull,
            &[ConstMapPtr, PtrToCtx, PtrToMapValueMaybeNull, Anything],
        );
        static SK_ASSIGN_LOOKUP: KernelProto = KernelProto::new(
            124,
            RetType::Integer,
            &[PtrToCtx, PtrToSockOrNull, Anything],
        );
        // Tracing and sk_reuseport programs take the cookie of a socket
        // (`bpf_get_socket_ptr_cookie_proto`).
        static SOCKET_PTR_COOKIE: KernelProto =
            KernelProto::new(46, RetType::Integer, &[PtrToBtfSockCommonOrNull]);
        let skb_form = matches!(
            self.env.prog_type,
            Some(T::SchedCls | T::SchedAct | T::LwtIn | T::LwtOut | T::LwtXmit | T::LwtSeg6local)
        );
        match (id, self.env.prog_type) {
            (17, _) if !skb_form => Some(&CGROUP_CLASSID_CURRENT),
            (124, Some(T::SkLookup)) => Some(&SK_ASSIGN_LOOKUP),
            (46, Some(T::Tracing | T::SkReuseport)) => Some(&SOCKET_PTR_COOKIE),
            (49, Some(T::CgroupSockopt)) => Some(&SK_SETSOCKOPT),
            (57, Some(T::CgroupSockopt)) => Some(&SK_GETSOCKOPT),
            (107, Some(T::CgroupSock)) => Some(&SK_STORAGE_GET_CG_SOCK),
            _ => kernel_proto(id),
        }
    }

    fn helper_allowed(&self, id: i32) -> bool {
        use userbpf_vm::object::AttachType as A;
        use ProgramType as T;
        let tracing = matches!(
            self.env.prog_type,
            Some(
                T::Kprobe
                    | T::Tracepoint
                    | T::RawTracepoint
                    | T::RawTracepointWritable
                    | T::PerfEvent
                    | T::Tracing
            )
        );
        if BASE.contains(&id) {
            let no_coarse_clock =
                tracing || matches!(self.env.prog_type, Some(T::CgroupDevice | T::CgroupSockopt));
            return !(no_coarse_clock && NOT_TRACING.contains(&id));
        }
        // The hooks that report an address (recvmsg, getpeername,
        // getsockname) have no return value to get or set.
        let retval = !self.reports_address() || !matches!(id, 186 | 187);
        match self.env.prog_type {
            // Embedded raw programs: every helper userbpf has.
            None => true,
            Some(T::Kprobe | T::Tracepoint | T::RawTracepoint | T::RawTracepointWritable) => {
                TRACING.contains(&id) || USER_SPACE.contains(&id)
            }
            // A perf event's branch records.
            Some(T::PerfEvent) => TRACING.contains(&id) || id == 119,
            Some(T::Syscall) => TRACING.contains(&id) || SKC_CASTS.contains(&id) || id == 166,
            // fentry/fexit: the kernel's tracing programs also read their
            // function's arguments and return value.
            Some(T::Tracing) => {
                TRACING.contains(&id) || SKC_CASTS.contains(&id) || matches!(id, 46 | 183..=185)
            }
            Some(T::Xdp) => {
                PACKET.contains(&id)
                    || TC_XDP.contains(&id)
                    || XDP.contains(&id)
                    || XDP_BUFF.contains(&id)
                    || REDIRECT.contains(&id)
                    || id == 51
                    || SOCK_LOOKUP.contains(&id)
                    || SKC_CASTS.contains(&id)
            }
            Some(T::SchedCls | T::SchedAct) => {
                PACKET.contains(&id)
                    || SKB.contains(&id)
                    || TC_XDP.contains(&id)
                    || TC.contains(&id)
                    || REDIRECT.contains(&id)
                    || SOCK_LOOKUP.contains(&id)
                    || SOCK_CAST.contains(&id)
                    || SK_STORAGE.contains(&id)
                    || SKC_CASTS.contains(&id)
                    || matches!(id, 124 | 192)
            }
            Some(T::SocketFilter) => {
                PACKET.contains(&id) || SKB.contains(&id) || SKC_CASTS.contains(&id)
            }
            // Also `bpf_skb_cgroup_id`, `bpf_get_local_storage`,
            // `bpf_skb_ancestor_cgroup_id`, `bpf_skb_ecn_set_ce`.
            Some(T::CgroupSkb) => {
                PACKET.contains(&id)
                    || SKB.contains(&id)
                    || SOCK_LOOKUP.contains(&id)
                    || SOCK_CAST.contains(&id)
                    || SK_STORAGE.contains(&id)
                    || SKC_CASTS.contains(&id)
                    || matches!(id, 79 | 81 | 83 | 97 | 128 | 129)
            }
            // `bpf_lwt_push_encap` on the way in and out, the segment
            // routing helpers in seg6local programs.
            Some(T::LwtIn | T::LwtOut | T::LwtSeg6local) => {
                PACKET.contains(&id)
                    || LWT.contains(&id)
                    || SKC_CASTS.contains(&id)
                    || (id == 73 && self.env.prog_type == Some(T::LwtIn))
                    || (matches!(id, 74..=76) && self.env.prog_type == Some(T::LwtSeg6local))
            }
            Some(T::LwtXmit) => {
                PACKET.contains(&id)
                    || LWT.contains(&id)
                    || LWT_XMIT.contains(&id)
                    || SKC_CASTS.contains(&id)
                    || id == 73
            }
            Some(T::SkSkb) => {
                PACKET.contains(&id)
                    || SK_SKB.contains(&id)
                    || SOCK_LOOKUP.contains(&id)
                    || SKC_CASTS.contains(&id)
                    || matches!(id, 52 | 72)
            }
            Some(T::CgroupDevice) => CGROUP.contains(&id),
            Some(T::CgroupSysctl) => CGROUP.contains(&id) || SYSCTL.contains(&id),
            Some(T::CgroupSock) => CGROUP.contains(&id) || SOCK_COOKIES.contains(&id) || id == 107,
            Some(T::CgroupSockAddr) => {
                (CGROUP.contains(&id) && retval)
                    || SOCK_COOKIES.contains(&id)
                    || SK_STORAGE.contains(&id)
                    || SOCK_LOOKUP.contains(&id)
                    || SKC_CASTS.contains(&id)
                    || matches!(id, 49 | 57)
                    || (id == 64
                        && matches!(
                            self.env.attach_type,
                            Some(A::CgroupInet4Connect | A::CgroupInet6Connect)
                        ))
            }
            Some(T::SkLookup) => SKC_CASTS.contains(&id) || matches!(id, 25 | 86 | 124),
            Some(T::SockOps) => {
                SK_STORAGE.contains(&id)
                    || SKC_CASTS.contains(&id)
                    || HDR_OPT.contains(&id)
                    || matches!(id, 25 | 46 | 49 | 53 | 57 | 59 | 70 | 81 | 96 | 122)
            }
            Some(T::SkMsg) => {
                SK_STORAGE.contains(&id)
                    || SKC_CASTS.contains(&id)
                    || matches!(id, 25 | 60 | 61 | 62 | 63 | 71 | 90 | 91 | 122)
            }
            Some(T::FlowDissector) => id == 26 || SKC_CASTS.contains(&id),
            Some(T::SkReuseport) => matches!(id, 26 | 46 | 68 | 82),
            Some(T::CgroupSockopt) => {
                CGROUP.contains(&id)
                    || SK_STORAGE.contains(&id)
                    || matches!(id, 96 | 122)
                    || (matches!(id, 49 | 57) && self.env.attach_type == Some(A::CgroupSetsockopt))
            }
            Some(_) => false,
        }
    }

    pub(crate) fn call(
        &mut self,
        st: &mut State,
        pc: usize,
        target: CallTarget,
    ) -> Result<Step, Box<VerifyError>> {
        // Only bpf_spin_unlock, and bpf-to-bpf calls, while a lock is held.
        if st.lock.is_some() && !matches!(target, CallTarget::Helper(94) | CallTarget::Local(_)) {
            return Err(self.error("function calls are not allowed while holding a lock"));
        }
        match target {
            CallTarget::Helper(id) => self.helper_call(st, pc, id),
            CallTarget::Local(rel) => {
                let t = crate::cfg::rel_target(pc, i64::from(rel))
                    .ok_or_else(|| self.error("call to an invalid target"))?;
                self.local_call(st, pc, t)
            }
            CallTarget::Kfunc { btf_id, .. } => self.kfunc_call(st, pc, btf_id),
        }
    }

    /// The kfuncs user space runs: the open-coded numeric iterator
    /// (`bpf_iter_num_new`, `_next`, `_destroy`). The iterator lives in an
    /// 8-byte stack slot the program cannot read or write; `new` acquires
    /// it (it must be destroyed on every path), `next` returns a pointer to
    /// the current number or NULL; the loop around `next` is bounded by
    /// the iterator, so the search explores it until its states repeat.
    fn kfunc_call(&mut self, st: &mut State, pc: usize, id: i32) -> Result<Step, Box<VerifyError>> {
        use userbpf_vm::kfunc::{BPF_ITER_NUM_DESTROY, BPF_ITER_NUM_NEW, BPF_ITER_NUM_NEXT};
        let Some(name) = userbpf_vm::kfunc::name_of(id) else {
            return Err(self.error(format!(
                "calling kernel function (kfunc, BTF id {id}) is not allowed in user space"
            )));
        };
        if (1..=5u8).any(|r| st.reg(r).ty == RegType::Ctx) {
            // (A context address as a number: see `Stats::ctx_escapes`.)
            self.stats.ctx_escapes = true;
        }
        let it = self.read_reg(st, R::new(1).unwrap_or_else(|| unreachable!()))?;
        let RegType::Stack { frame } = it.ty else {
            return Err(self.error(format!(
                "{name}: R1 type={} expected=fp (a struct bpf_iter_num on the stack)",
                it.type_name()
            )));
        };
        let off = i64::from(it.off);
        if it.val.is_const() != Some(0) || off % 8 != 0 || !(-512..0).contains(&off) {
            return Err(self.error(format!(
                "{name}: the iterator must be an aligned 8-byte stack slot at a constant offset (off={off})"
            )));
        }
        let fi = usize::from(frame);
        if fi >= st.frames.len() {
            return Err(self.error(format!("{name}: R1 points to a returned frame")));
        }
        let off = off as i32;
        let current = st.frames[fi]
            .slot(off)
            .filter(|(s, _)| s.is_spill() && s.spill.ty == RegType::IterNum)
            .map(|(s, _)| s.spill);
        let r0 = match id {
            BPF_ITER_NUM_NEW => {
                // `start` and `end` are ints (`check_kfunc_args`): an
                // address there would become the numbers the loop counts.
                for r in 2..=3u8 {
                    let v = self.read_reg(st, R::new(r).unwrap_or_else(|| unreachable!()))?;
                    if !v.is_scalar() {
                        return Err(self.error(format!("R{r} is not a scalar")));
                    }
                }
                if current.is_some() {
                    return Err(
                        self.error(format!("{name}: expected uninitialized iter_num as arg #1"))
                    );
                }
                let ref_id = self.fresh_id();
                st.refs.push((ref_id, pc));
                let (slot, _) = st.frames[fi].slot_mut(off);
                *slot = crate::state::Slot {
                    bytes: [crate::state::ByteKind::Spill; 8],
                    spill: Reg {
                        ref_id,
                        ..Reg::pointer(RegType::IterNum, 0)
                    },
                };
                self.check_stack_depth(st)?;
                Reg::scalar(Scalar::sext_load(4))
            }
            BPF_ITER_NUM_NEXT | BPF_ITER_NUM_DESTROY => {
                let Some(iter) = current else {
                    return Err(self.error(format!(
                        "{name}: expected an initialized iter_num as arg #1"
                    )));
                };
                if id == BPF_ITER_NUM_NEXT {
                    self.or_null(RegType::Mem {
                        size: 4,
                        rdonly: true,
                    })
                } else {
                    st.refs.retain(|&(r, _)| r != iter.ref_id);
                    let (slot, _) = st.frames[fi].slot_mut(off);
                    *slot = crate::state::Slot::INVALID;
                    Reg::NOT_INIT
                }
            }
            _ => {
                return Err(self.error(format!("kfunc {name} is not verified")));
            }
        };
        let frame = st.cur_mut();
        frame.regs[0] = r0;
        for r in 1..=5 {
            frame.regs[r] = Reg::NOT_INIT;
        }
        Ok(Step::Next(pc.wrapping_add(1)))
    }

    pub(crate) fn callx(
        &mut self,
        st: &mut State,
        pc: usize,
        reg: R,
    ) -> Result<Step, Box<VerifyError>> {
        let r = self.read_reg(st, reg)?;
        match r.ty {
            RegType::Func { pc: t } if r.off == 0 => self.local_call(st, pc, t as usize),
            // A number in the register is a helper id (as the engines
            // treat it).
            RegType::Scalar => match r.const_value().and_then(|v| i32::try_from(v).ok()) {
                Some(id) => self.helper_call(st, pc, id),
                None => Err(self.error(format!(
                    "R{} callx target is not a known constant helper id or a subprogram",
                    reg.num()
                ))),
            },
            _ => Err(self.error(format!(
                "R{} callx target is {}, not a subprogram",
                reg.num(),
                r.type_name()
            ))),
        }
    }

    fn local_call(
        &mut self,
        st: &mut State,
        pc: usize,
        target: usize,
    ) -> Result<Step, Box<VerifyError>> {
        if st.frames.len() >= MAX_CALL_FRAMES {
            return Err(self.error(format!(
                "the call stack of {} frames is too deep !",
                st.frames.len().saturating_add(1)
            )));
        }
        if let Some(i) = self.global(target) {
            if !self.global_call(st, pc, i)? {
                // Verified on its own: an unknown scalar back, the
                // argument registers gone, and the packet's pointers stale
                // if the function may change it.
                let changes_packet = self.globals.get(i).is_some_and(|g| g.changes_packet);
                let caller = st.cur_mut();
                caller.regs[0] = Reg::unknown();
                for r in 1..=5 {
                    caller.regs[r] = Reg::NOT_INIT;
                }
                if changes_packet {
                    forget_packet(st);
                }
                return Ok(Step::Next(pc.wrapping_add(1)));
            }
        }
        let depth = u8::try_from(st.frames.len()).unwrap_or(u8::MAX);
        let mut frame = Frame::new(depth, pc, target);
        let caller = st.cur();
        for r in 1..=5 {
            frame.regs[r] = caller.regs[r];
        }
        st.frames.push(frame);
        Ok(Step::Next(target))
    }

    pub(crate) fn exit(&mut self, st: &mut State) -> Result<Step, Box<VerifyError>> {
        if st.frames.len() == 1 && st.lock.is_some() {
            return Err(self.error(
                "BPF_EXIT instruction in main prog cannot be used inside bpf_spin_lock-ed region",
            ));
        }
        let r0 = *st.reg(0);
        // As the kernel's `prepare_func_exit`: a subprogram returns
        // whatever its r0 holds, set or not (the caller may not read it
        // then); the entry function and callbacks must set it.
        let returns_to_caller = st.frames.len() > 1 && !st.cur().callback;
        if r0.ty == RegType::NotInit && !returns_to_caller {
            return Err(self.error("R0 !read_ok"));
        }
        if st.frames.len() > 1 {
            // Any frame's (the kernel is conservative: a caller's frame
            // would still be live).
            if matches!(r0.ty, RegType::Stack { .. }) {
                return Err(self.error("cannot return stack pointer to the caller"));
            }
            let callee = st.frames.pop().unwrap_or_else(|| unreachable!());
            if callee.callback {
                // A callback returns to the helper that called it, which
                // may call it again: the caller's registers are untouched.
                self.callback_return(&r0, 1)?;
                return Ok(Step::Next(callee.callsite));
            }
            // A global function returns an unknown scalar, whatever this
            // call's exploration found (`check_func_call`), and if it may
            // change the packet on any path, every packet pointer is stale
            // after it.
            let global = self
                .global(callee.subprog)
                .and_then(|i| self.globals.get(i))
                .map(|g| g.changes_packet);
            let caller = st.cur_mut();
            caller.regs[0] = if global.is_some() { Reg::unknown() } else { r0 };
            for r in 1..=5 {
                caller.regs[r] = Reg::NOT_INIT;
            }
            if global == Some(true) {
                forget_packet(st);
            }
            return Ok(Step::Next(callee.callsite.wrapping_add(1)));
        }
        if st.cur().subprog != 0 && !st.cur().callback {
            // A global function verified on its own (`check_return_code`
            // for a subprogram).
            if !r0.is_scalar() {
                return Err(self.error(format!(
                    "At subprogram exit the register R0 is not a scalar value ({})",
                    r0.type_name()
                )));
            }
        } else if !r0.is_scalar() {
            return Err(self.error("R0 leaks addr as return value"));
        } else if st.cur().callback {
            // An asynchronous callback (a timer's) returns 0.
            self.callback_return(&r0, 0)?;
        } else if let Some((lo, hi)) = self.exit_range() {
            let (smin, smax) = (r0.val.smin, r0.val.smax);
            if smin < lo || smax > hi {
                return Err(self.error(format!(
                    "At program exit the register R0 has smin={smin} smax={smax} should have been in [{lo}, {hi}]"
                )));
            }
        }
        if let Some(&(id, at)) = st.refs.first() {
            return Err(self.error(format!("Unreleased reference id={id} alloc_insn={at}")));
        }
        Ok(Step::Done)
    }

    fn helper_call(
        &mut self,
        st: &mut State,
        pc: usize,
        id: i32,
    ) -> Result<Step, Box<VerifyError>> {
        let Some(proto) = self.proto(id) else {
            return Err(self.error(match helper_name(id) {
                // A helper the kernel has and userbpf does not model.
                Some(name) => format!(
                    "helper {name}#{id} is not supported by userbpf's verifier (no prototype)"
                ),
                None => format!("invalid func unknown#{id}"),
            }));
        };
        let name = helper_name(id).unwrap_or("unknown");
        if !self.helper_allowed(id) {
            return Err(self.error(format!(
                "program of this type cannot use helper {name}#{id}{}",
                self.unmodelled()
            )));
        }
        // `in_sleepable`: a sleepable program, outside its timers'
        // callbacks (which run in no sleepable context).
        let sleepable = self.env.sleepable && !st.frames.first().is_some_and(|f| f.callback);
        if userbpf_vm::proto::MIGHT_SLEEP.contains(&id) && !sleepable {
            return Err(self.error("helper call might sleep in a non-sleepable prog"));
        }
        if id == userbpf_vm::dynptr::BPF_FUNC_DYNPTR_FROM_MEM {
            let data = st.reg(1);
            if data.ty != RegType::NotInit && !matches!(data.ty, RegType::MapValue { .. }) {
                return Err(self.error(format!(
                    "Unsupported reg type {} for bpf_dynptr_from_mem data",
                    data.type_name()
                )));
            }
        }
        let mut meta = Meta::default();
        for (i, arg) in proto.args.iter().enumerate() {
            let regno = u8::try_from(i).unwrap_or(0).wrapping_add(1);
            self.check_arg(st, &mut meta, regno, *arg, &proto.args, i, name, id)?;
        }
        if let Some(m) = meta.map {
            // `record_func_map`: a map programs may only read is not
            // changed by helpers either.
            let read_only = self
                .env
                .maps
                .get(m as usize)
                .is_some_and(|i| i.prog_read_only());
            if read_only && matches!(id, 2 | 3 | 87 | 88) {
                return Err(self.error("write into map forbidden"));
            }
            self.check_map_compat(m, name, id)?;
        }
        // bpf_get_local_storage cannot fail: its flags must be 0.
        if id == 81 && st.reg(2).const_value() != Some(0) {
            return Err(self.error("get_local_storage() doesn't support non-zero flags"));
        }
        if id == 12 && !st.refs.is_empty() {
            return Err(self.error("tail_call would lead to reference leak"));
        }
        if let Some(ref_id) = meta.release {
            st.refs.retain(|&(r, _)| r != ref_id);
            // (Also the released dynptr's stack slots and its slices.)
            forget(st, |r| r.ref_id == ref_id);
        }
        if let Some((fi, off, kind)) = meta.dynptr_new {
            // `mark_stack_slots_dynptr`; a ring buffer dynptr holds its
            // reference even when the reservation fails.
            let dynptr_id = self.fresh_id();
            let ref_id = if kind == DynptrKind::Ringbuf {
                st.refs.push((dynptr_id, pc));
                dynptr_id
            } else {
                0
            };
            for (half, first) in [(off, true), (off.wrapping_add(8), false)] {
                let (slot, _) = st.frames[fi].slot_mut(half);
                *slot = crate::state::Slot {
                    bytes: [ByteKind::Spill; 8],
                    spill: Reg {
                        id: dynptr_id,
                        ref_id,
                        ..Reg::pointer(RegType::Dynptr { kind, first }, 0)
                    },
                };
            }
            self.check_stack_depth(st)?;
        }
        if crate::cfg::helper_changes_packet(id) {
            // The packet moved or changed size: every packet pointer is
            // stale (`clear_all_pkt_pointers`). As for an unprivileged
            // program, they become unreadable (root's kernel makes them
            // numbers, which would carry addresses).
            forget_packet(st);
        }
        let callback = match proto.args.iter().position(|a| *a == ArgType::PtrToFunc) {
            Some(i) => match st.cur().regs[i.wrapping_add(1)].ty {
                RegType::Func { pc: cb } => Some(cb as usize),
                _ => None,
            },
            None => None,
        };
        let mut iterate = None;
        // bpf_loop with no iteration (`nr_loops` at most 0) never calls its
        // callback: the kernel explores it as many times as `nr_loops`
        // may be large, here none.
        let nr = &st.cur().regs[1];
        let never_called = id == 181 && nr.is_scalar() && nr.val.umax == 0;
        if let Some(cb) = callback.filter(|_| !never_called) {
            iterate = self.callback_call(st, &meta, pc, id, name, cb)?;
        }
        let r0 = match proto.ret {
            RetType::Integer => Reg::scalar(self.integer_return(st, id)),
            RetType::Void => Reg::NOT_INIT,
            RetType::PtrToMapValueOrNull => {
                let m = meta.map.unwrap_or(0);
                let info = self.env.maps.get(m as usize);
                if let Some(outer) = info.filter(|i| {
                    matches!(i.map_type, map_type::ARRAY_OF_MAPS | map_type::HASH_OF_MAPS)
                }) {
                    // A lookup in a map of maps gives an inner map.
                    let Some(inner) = outer.inner else {
                        return Err(self.error(format!(
                            "{name}#{id}: the inner map of `{}` is unknown (no inner map definition, `__array(values, struct {{ ... }})`, and no map in its initial slots)",
                            outer.name
                        )));
                    };
                    self.or_null(RegType::ConstMap { map: inner })
                } else if info
                    .is_some_and(|i| matches!(i.map_type, map_type::SOCKMAP | map_type::SOCKHASH))
                {
                    // A socket map's lookup returns a reference to the
                    // socket (`is_acquire_function`).
                    self.acquired_or_null(st, pc, RegType::Socket)
                } else if info.is_some_and(|i| i.map_type == map_type::XSKMAP) {
                    // An AF_XDP socket, or NULL.
                    self.or_null(RegType::XdpSock)
                } else if id == 1 && self.constant_key_in_range(st, m) {
                    // The kernel's nullness elision: a lookup in an array
                    // with a constant key below max_entries finds a value
                    // ([`Verifier::found_map_value`]).
                    self.found_map_value(m)
                } else {
                    self.or_null(RegType::MapValue { map: m })
                }
            }
            RetType::PtrToMapValueNotNull => self.found_map_value(meta.map.unwrap_or(0)),
            RetType::PtrToSocketOrNull
            | RetType::PtrToSockCommonOrNull
            | RetType::PtrToTcpSockOrNull => {
                let ty = match proto.ret {
                    RetType::PtrToSocketOrNull => RegType::Socket,
                    RetType::PtrToSockCommonOrNull => RegType::SockCommon,
                    _ => RegType::TcpSock,
                };
                // A lookup acquires a reference (released on the null
                // branch or by `bpf_sk_release`); a cast shares its
                // argument's.
                if userbpf_vm::proto::ACQUIRES.contains(&id) {
                    self.acquired_or_null(st, pc, ty)
                } else if userbpf_vm::proto::CASTS.contains(&id) {
                    Reg {
                        ref_id: meta.sock_ref,
                        ..self.or_null(ty)
                    }
                } else {
                    self.or_null(ty)
                }
            }
            RetType::PtrToDynptrMemOrNull => {
                let size = meta.alloc_size.unwrap_or(0);
                let size = u32::try_from(size)
                    .map_err(|_| self.error(format!("R3 dynptr slice size {size} is too large")))?;
                // A ring buffer dynptr's slice dies with the record.
                Reg {
                    ref_id: meta.dynptr_ref,
                    ..self.or_null(RegType::Mem {
                        size,
                        rdonly: false,
                    })
                }
            }
            RetType::PtrToTrustedBtfId(structure) | RetType::PtrToBtfId(structure) => {
                let sid = self.kernel_struct(structure, &format!("{name}#{id}"))?;
                let trust = if matches!(proto.ret, RetType::PtrToTrustedBtfId(_)) {
                    Trust::Trusted
                } else {
                    Trust::Plain
                };
                Reg::pointer(RegType::BtfId { id: sid, trust }, 0)
            }
            RetType::PtrToBtfIdOrNull(structure) => {
                // A cast of a socket (`bpf_skc_to_tcp_sock`): NULL when
                // it is of another kind; it shares the socket's reference.
                let sid = self.kernel_struct(structure, &format!("{name}#{id}"))?;
                let r = self.or_null(RegType::BtfId {
                    id: sid,
                    trust: Trust::Plain,
                });
                if userbpf_vm::proto::CASTS.contains(&id) {
                    Reg {
                        ref_id: meta.sock_ref,
                        ..r
                    }
                } else {
                    r
                }
            }
            RetType::PtrToRingbufMemOrNull => {
                let size = meta.alloc_size.unwrap_or(0);
                let size = u32::try_from(size).map_err(|_| {
                    self.error(format!("R2 ring buffer record size {size} is too large"))
                })?;
                self.acquired_or_null(st, pc, RegType::RingbufMem { size })
            }
        };
        let frame = st.cur_mut();
        frame.regs[0] = r0;
        for r in 1..=5 {
            frame.regs[r] = Reg::NOT_INIT;
        }
        Ok(match iterate {
            // The helper may return now, or call the callback (again).
            Some((state, cb)) => Step::Branch(pc.wrapping_add(1), Box::new(state), cb),
            None => Step::Next(pc.wrapping_add(1)),
        })
    }

    /// A helper that calls a subprogram back. Synchronous callbacks
    /// (`bpf_loop`, `bpf_for_each_map_elem`) run in a frame above the
    /// caller's, any number of times: the state where the callback is
    /// entered is returned, and the callback's `exit` comes back to the
    /// helper call, a loop the search explores until its states repeat.
    /// Asynchronous ones (`bpf_timer_set_callback`) run later, on their
    /// own: they are verified as a separate path from a fresh state.
    fn callback_call(
        &mut self,
        st: &State,
        meta: &Meta,
        pc: usize,
        id: i32,
        name: &str,
        cb: usize,
    ) -> Result<Option<(State, usize)>, Box<VerifyError>> {
        // bpf_find_vma's callback gets the memory area's kernel structure.
        let vma = if id == 180 {
            Some(self.kernel_struct("vm_area_struct", &format!("{name}#{id}"))?)
        } else {
            None
        };
        let map = |m: Option<u32>| -> Result<u32, Box<VerifyError>> {
            m.ok_or_else(|| self.error(format!("{name}#{id}: no map for the callback's arguments")))
        };
        let map_args = |m: u32| {
            [
                Reg::pointer(RegType::ConstMap { map: m }, 0),
                Reg::pointer(RegType::MapKey { map: m }, 0),
                Reg::pointer(RegType::MapValue { map: m }, 0),
            ]
        };
        let caller = st.cur();
        let args: Vec<Reg> = match id {
            // bpf_loop(nr, cb, ctx, flags): cb(u32 index, void *ctx).
            181 => vec![Reg::scalar(Scalar::unknown_bits(4)), caller.regs[3]],
            // bpf_for_each_map_elem(map, cb, ctx, flags):
            // cb(map, key, value, ctx).
            164 => {
                let m = map(meta.map)?;
                let [a, b, c] = map_args(m);
                vec![a, b, c, caller.regs[3]]
            }
            // bpf_find_vma(task, addr, cb, ctx, flags): cb(task, vma, ctx).
            180 => vec![
                caller.regs[1],
                Reg::pointer(
                    RegType::BtfId {
                        id: vma.unwrap_or(0),
                        trust: Trust::Plain,
                    },
                    0,
                ),
                caller.regs[4],
            ],
            // bpf_timer_set_callback(timer, cb): cb(map, key, value), later.
            170 => {
                let m = map(meta.timer_map)?;
                let mut frame = Frame::new(0, pc, cb);
                frame.callback = true;
                for (i, r) in map_args(m).into_iter().enumerate() {
                    frame.regs[i.wrapping_add(1)] = r;
                }
                self.async_callbacks.insert(cb);
                self.spawn(
                    State {
                        frames: vec![frame],
                        refs: Vec::new(),
                        lock: None,
                    },
                    cb,
                );
                return Ok(None);
            }
            _ => {
                return Err(self.error(format!(
                    "{name}#{id}: callbacks of this helper are not verified"
                )))
            }
        };
        if st.frames.len() >= MAX_CALL_FRAMES {
            return Err(self.error(format!(
                "the call stack of {} frames is too deep !",
                st.frames.len().saturating_add(1)
            )));
        }
        let mut state = st.clone();
        let depth = u8::try_from(state.frames.len()).unwrap_or(u8::MAX);
        let mut frame = Frame::new(depth, pc, cb);
        frame.callback = true;
        for (i, r) in args.into_iter().enumerate() {
            frame.regs[i.wrapping_add(1)] = r;
        }
        state.frames.push(frame);
        Ok(Some((state, cb)))
    }

    /// A callback's `r0` must be a number in `[0, max]`.
    fn callback_return(&self, r0: &Reg, max: u64) -> Result<(), Box<VerifyError>> {
        if !r0.is_scalar() {
            return Err(self.error(format!(
                "At callback return the register R0 is not a known value ({})",
                r0.type_name()
            )));
        }
        if r0.val.smin < 0 || r0.val.smax > max as i64 {
            // As the kernel prints it (`verbose_invalid_scalar`).
            let mut has = String::new();
            if r0.val.smin > i64::MIN {
                has.push_str(&format!(" smin={}", r0.val.smin));
            }
            if r0.val.smax < i64::MAX {
                has.push_str(&format!(" smax={}", r0.val.smax));
            }
            if has.is_empty() {
                has.push_str(" unknown scalar value");
            }
            return Err(self.error(format!(
                "At callback return the register R0 has{has} should have been in [0, {max}]"
            )));
        }
        Ok(())
    }

    /// Whether `bpf_map_lookup_elem`'s key (r2) is a constant below the
    /// array `map`'s max_entries, as the kernel finds it
    /// (`get_constant_map_key`, Linux 6.14): for an array or a per-CPU
    /// array that is no map of maps' inner map, r2 points at a constant
    /// stack offset whose four key bytes are either known zeros, or the
    /// end of a number spilled at the start of its 8-byte slot whose
    /// value (the whole spill's, as the kernel takes it) is known.
    ///
    /// Stores at the start of a slot are spills of their size, as in the
    /// kernel. Spills that do not start a slot (which the kernel does not
    /// keep, but we do) give no constant key.
    fn constant_key_in_range(&self, st: &State, map: u32) -> bool {
        let Some(info) = self.env.maps.get(map as usize) else {
            return false;
        };
        if !matches!(info.map_type, map_type::ARRAY | map_type::PERCPU_ARRAY)
            || info.key_size != 4
            || self.env.maps.iter().any(|m| m.inner == Some(map))
        {
            return false;
        }
        let key = st.cur().regs[2];
        let RegType::Stack { frame } = key.ty else {
            return false;
        };
        let (Some(frame), Some(var)) = (st.frames.get(usize::from(frame)), key.val.is_const())
        else {
            return false;
        };
        let Some(off) = i64::from(key.off)
            .checked_add(var as i64)
            .and_then(|o| i32::try_from(o).ok())
        else {
            return false;
        };
        let Some((slot, k)) = frame.slot(off) else {
            return false;
        };
        if k.saturating_add(4) > 8 {
            return false;
        }
        let key_bytes = &slot.bytes[k..k.saturating_add(4)];
        let value = if k > 0 && key_bytes.iter().all(|&b| b == ByteKind::Zero) {
            0
        } else {
            match (slot.spill_range(), slot.spill.const_value()) {
                (Some((0, count)), Some(v)) if count.checked_sub(k) == Some(4) => v,
                _ => return false,
            }
        };
        value < u64::from(info.max_entries)
    }

    /// What a helper returning an integer may return, as the kernel's
    /// `do_refine_retval_range` knows it: a CPU number below the CPUs'
    /// count for `bpf_get_smp_processor_id`; at most the buffer's size, or
    /// an errno, for the helpers that fill a buffer with a string or a
    /// stack. (userbpf's helpers keep to these ranges.)
    fn integer_return(&self, st: &State, id: i32) -> Scalar {
        const MAX_ERRNO: i64 = 4095;
        // The size argument of the buffer-filling helpers.
        let size_arg = match id {
            // bpf_probe_read_str(dst, size, src) and its user/kernel forms.
            45 | 114 | 115 => 2,
            // bpf_get_stack(ctx, buf, size, flags), bpf_get_task_stack.
            67 | 141 => 3,
            8 => {
                let last = userbpf_vm::maps::percpu::ncpus().saturating_sub(1);
                return Scalar::from_range_u64(0, last as u64);
            }
            _ => return Scalar::unknown(),
        };
        let max = st.cur().regs[size_arg].val.umax;
        let Ok(max) = i32::try_from(max) else {
            return Scalar::unknown();
        };
        Scalar::from_range_i64(-MAX_ERRNO, i64::from(max))
    }

    /// `may_update_sockmap`: the program types that hold no socket lock
    /// may update or delete socket map entries (sockops only delete).
    fn may_update_sockmap(&self, id: i32) -> bool {
        use ProgramType as T;
        match self.env.prog_type {
            Some(T::SockOps) => id == 3,
            Some(
                T::SocketFilter
                | T::SchedCls
                | T::SchedAct
                | T::Xdp
                | T::SkReuseport
                | T::FlowDissector
                | T::SkLookup,
            ) => matches!(id, 2 | 3),
            _ => false,
        }
    }

    /// `btf_struct_ids_match`: `reg`, a pointer to kernel structure
    /// `have`, points to a `structure` (it, or one nested at its offset).
    fn kernel_struct_arg(
        &mut self,
        reg: &Reg,
        regno: u8,
        have: u32,
        structure: &str,
        what: &str,
    ) -> Result<(), Box<VerifyError>> {
        let target = self.kernel_struct(structure, what)?;
        let btf = self.kernel_btf(what)?;
        let at = u32::try_from(reg.off).ok();
        if at.is_some_and(|off| crate::kstruct::ids_match(&btf, have, off, target)) {
            return Ok(());
        }
        let have = crate::kstruct::type_name(&btf, have);
        Err(self.error(format!(
            "R{regno} is of type {have} but {structure} is expected"
        )))
    }

    /// `check_map_field_pointer`: `reg` points exactly at the special
    /// field `what` (`bpf_timer`, `bpf_spin_lock`) of its map's values,
    /// which the value's BTF places at `at`.
    fn map_field_pointer(
        &self,
        reg: &Reg,
        regno: u8,
        map: u32,
        what: &str,
        at: Option<u32>,
    ) -> Result<(), Box<VerifyError>> {
        let Some(var) = reg.val.is_const() else {
            return Err(self.error(format!(
                "R{regno} doesn't have constant offset. {what} has to be at the constant offset"
            )));
        };
        let Some(at) = at else {
            let name = self
                .env
                .maps
                .get(map as usize)
                .map_or("", |m| m.name.as_str());
            return Err(self.error(format!("map '{name}' has no valid {what}")));
        };
        let off = (var as i64).wrapping_add(i64::from(reg.off));
        if off != i64::from(at) {
            return Err(self.error(format!(
                "off {off} doesn't point to 'struct {what}' that is at {at}"
            )));
        }
        Ok(())
    }

    /// `process_spin_lock`: the lock argument points exactly at its map
    /// value's `struct bpf_spin_lock`; taking it needs none held,
    /// releasing it needs this one held.
    fn spin_lock_arg(
        &mut self,
        st: &mut State,
        reg: &Reg,
        regno: u8,
        map: u32,
        lock: bool,
    ) -> Result<(), Box<VerifyError>> {
        let what = if lock {
            "bpf_spin_lock"
        } else {
            "bpf_spin_unlock"
        };
        let at = self.env.maps.get(map as usize).and_then(|m| m.spin_lock);
        self.map_field_pointer(reg, regno, map, "bpf_spin_lock", at)?;
        if lock {
            if st.lock.is_some() {
                return Err(self.error("Locking two bpf_spin_locks are not allowed"));
            }
            st.lock = Some((map, reg.id));
        } else {
            match st.lock {
                None => return Err(self.error(format!("{what} without taking a lock"))),
                Some(held) if held != (map, reg.id) => {
                    return Err(self.error(format!("{what} of different lock")))
                }
                Some(_) => st.lock = None,
            }
        }
        Ok(())
    }

    /// A value of map `m` a helper found (never NULL), with an id of its
    /// own when it holds a lock, which the id names.
    fn found_map_value(&mut self, m: u32) -> Reg {
        let locked = self
            .env
            .maps
            .get(m as usize)
            .is_some_and(|i| i.spin_lock.is_some());
        Reg {
            id: if locked { self.fresh_id() } else { 0 },
            ..Reg::pointer(RegType::MapValue { map: m }, 0)
        }
    }

    fn check_map_compat(&self, map: u32, name: &str, id: i32) -> Result<(), Box<VerifyError>> {
        let Some(m) = self.env.maps.get(map as usize) else {
            return Ok(());
        };
        let t = m.map_type;
        let map_in_map = matches!(t, map_type::ARRAY_OF_MAPS | map_type::HASH_OF_MAPS);
        let ok = match id {
            1 => m.has_values() || map_in_map,
            2 | 3 => m.has_values() || map_in_map,
            12 => t == map_type::PROG_ARRAY,
            25 => t == map_type::PERF_EVENT_ARRAY,
            81 => matches!(
                t,
                map_type::CGROUP_STORAGE | map_type::PERCPU_CGROUP_STORAGE
            ),
            107 | 108 => t == map_type::SK_STORAGE,
            198..=200 => t == map_type::RINGBUF,
            27 => t == map_type::STACK_TRACE,
            87 | 89 => matches!(
                t,
                map_type::QUEUE | map_type::STACK | map_type::BLOOM_FILTER
            ),
            88 => matches!(t, map_type::QUEUE | map_type::STACK),
            130..=134 => t == map_type::RINGBUF,
            164 | 169 => m.has_values(),
            37 => t == map_type::CGROUP_ARRAY,
            51 => matches!(
                t,
                map_type::DEVMAP | map_type::DEVMAP_HASH | map_type::CPUMAP | map_type::XSKMAP
            ),
            22 | 55 => t == map_type::PERF_EVENT_ARRAY,
            52 | 53 | 60 => t == map_type::SOCKMAP,
            70..=72 => t == map_type::SOCKHASH,
            82 => matches!(
                t,
                map_type::REUSEPORT_SOCKARRAY | map_type::SOCKMAP | map_type::SOCKHASH
            ),
            195 => matches!(
                t,
                map_type::PERCPU_HASH | map_type::PERCPU_ARRAY | map_type::LRU_PERCPU_HASH
            ),
            156 | 157 => t == map_type::TASK_STORAGE,
            210 | 211 => t == map_type::CGRP_STORAGE,
            _ => true,
        } && match t {
            // Local storages serve their own helpers.
            map_type::TASK_STORAGE => matches!(id, 156 | 157),
            map_type::CGRP_STORAGE => matches!(id, 210 | 211),
            map_type::SK_STORAGE => matches!(id, 107 | 108),
            map_type::INODE_STORAGE => matches!(id, 145 | 146),
            map_type::CGROUP_STORAGE | map_type::PERCPU_CGROUP_STORAGE => id == 81,
            // A map of maps is only looked up.
            map_type::ARRAY_OF_MAPS | map_type::HASH_OF_MAPS => id == 1,
            map_type::RINGBUF => matches!(id, 130 | 131 | 134 | 198..=200),
            map_type::USER_RINGBUF => id == 209,
            map_type::PROG_ARRAY => id == 12,
            map_type::QUEUE | map_type::STACK => matches!(id, 87..=89),
            map_type::BLOOM_FILTER => matches!(id, 87 | 89),
            // The map's side (`check_map_func_compatibility`): these maps
            // serve only their own helpers.
            map_type::STACK_TRACE => id == 27,
            // bpf_skb_under_cgroup, bpf_current_task_under_cgroup.
            map_type::CGROUP_ARRAY => matches!(id, 33 | 37),
            // Redirect targets. A device map's values (`struct
            // bpf_devmap_val`) may be looked up, read only, and an AF_XDP
            // socket map's sockets.
            map_type::DEVMAP | map_type::DEVMAP_HASH | map_type::XSKMAP => matches!(id, 1 | 51),
            map_type::CPUMAP => id == 51,
            // Perf event arrays serve output and counter reads.
            map_type::PERF_EVENT_ARRAY => matches!(id, 22 | 25 | 55 | 111 | 121),
            // Socket maps: their redirects and updates, lookups (which
            // return sockets), and map updates where no socket is locked
            // (`may_update_sockmap`).
            map_type::SOCKMAP => matches!(id, 1 | 52 | 53 | 60 | 82) || self.may_update_sockmap(id),
            map_type::SOCKHASH => {
                matches!(id, 1 | 70 | 71 | 72 | 82) || self.may_update_sockmap(id)
            }
            map_type::REUSEPORT_SOCKARRAY => id == 82,
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(self.error(format!("cannot pass map_type {t} into func {name}#{id}")))
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_arg(
        &mut self,
        st: &mut State,
        meta: &mut Meta,
        regno: u8,
        arg: ArgType,
        all: &[ArgType; 5],
        i: usize,
        name: &str,
        id: i32,
    ) -> Result<(), Box<VerifyError>> {
        if arg == ArgType::DontCare {
            return Ok(());
        }
        let reg = *st.reg(regno);
        if reg.ty == RegType::NotInit {
            return Err(self.error(format!("R{regno} !read_ok")));
        }
        if reg.ty == RegType::Ctx {
            // The helper may read any of the context (`get_stack`,
            // `probe_read` through a context address, a tail call).
            self.stats.ctx_escapes = true;
        }
        let expected = |what: &str| format!("R{regno} type={} expected={what}", reg.type_name());
        let map_info = |v: &Self, m: &Meta| -> Result<MapInfo, Box<VerifyError>> {
            m.map
                .and_then(|m| v.env.maps.get(m as usize).cloned())
                .ok_or_else(|| {
                    v.error(format!(
                        "invalid map_ptr to access map->key for {name}#{id}"
                    ))
                })
        };
        match arg {
            ArgType::DontCare => {}
            ArgType::Anything => {
                // userbpf's rule (the kernel's for unprivileged programs):
                // an address given as a plain value may end in a map, a
                // record or the trace output. The address a helper reads
                // from or writes to is used, not given away.
                if !reg.is_scalar() && !reg.is_kernel_address() && !accessed_address(id, i) {
                    return Err(self.error(format!("R{regno} leaks addr into helper function")));
                }
            }
            ArgType::ConstMapPtr => match reg.ty {
                // An inner map is a map only after its null check.
                RegType::ConstMap { map } if !reg.maybe_null => meta.map = Some(map),
                _ => return Err(self.error(expected("map_ptr"))),
            },
            ArgType::PtrToMapKey => {
                let m = map_info(self, meta)?;
                self.ptr_arg_type(&reg, regno, false, id)?;
                let n = u64::from(m.key_size);
                self.helper_mem(st, regno, n, n, Access::Read, true)?;
            }
            ArgType::PtrToMapValue => {
                let m = map_info(self, meta)?;
                if matches!(m.map_type, map_type::SOCKMAP | map_type::SOCKHASH) {
                    // A socket map holds sockets (`resolve_map_arg_type`).
                    if !reg.ty.is_socket() || reg.maybe_null {
                        return Err(self.error(expected(BTF_SOCK_COMMON_TYPES)));
                    }
                    return Ok(());
                }
                self.ptr_arg_type(&reg, regno, false, id)?;
                let n = u64::from(m.value_size);
                self.helper_mem(st, regno, n, n, Access::Read, true)?;
            }
            ArgType::PtrToMapValueMaybeNull => {
                if reg.const_value() != Some(0) {
                    let m = map_info(self, meta)?;
                    self.ptr_arg_type(&reg, regno, false, id)?;
                    let n = u64::from(m.value_size);
                    self.helper_mem(st, regno, n, n, Access::Read, true)?;
                }
            }
            ArgType::PtrToUninitMapValue => {
                let m = map_info(self, meta)?;
                self.ptr_arg_type(&reg, regno, true, id)?;
                let n = u64::from(m.value_size);
                self.helper_mem(st, regno, n, n, Access::Write, false)?;
            }
            ArgType::PtrToMem { .. } | ArgType::PtrToUninitMem { .. } | ArgType::PtrToMemInOut => {
                let write = matches!(arg, ArgType::PtrToUninitMem { .. } | ArgType::PtrToMemInOut);
                let size_arg = all.get(i.wrapping_add(1)).copied();
                let zero_ok = size_arg == Some(ArgType::ConstSizeOrZero);
                let size_reg = *st.reg(regno.wrapping_add(1));
                if size_reg.ty == RegType::NotInit {
                    return Err(self.error(format!("R{} !read_ok", regno.wrapping_add(1))));
                }
                if !size_reg.is_scalar() {
                    return Err(self.error(format!(
                        "R{} type={} expected=scalar",
                        regno.wrapping_add(1),
                        size_reg.type_name()
                    )));
                }
                let v = size_reg.val;
                if v.smin < 0 {
                    return Err(self.error(format!(
                        "R{} min value is negative, either use unsigned or 'var &= const'",
                        regno.wrapping_add(1)
                    )));
                }
                if v.umin == 0 && !zero_ok {
                    return Err(self.error(format!(
                        "R{} invalid zero-sized read: u64=[{},{}]",
                        regno.wrapping_add(1),
                        v.umin,
                        v.umax
                    )));
                }
                if v.umax >= 1 << 29 {
                    return Err(self.error(format!(
                        "R{} unbounded memory access, use 'var &= const' or 'if (var < const)'",
                        regno.wrapping_add(1)
                    )));
                }
                let maybe_null = matches!(
                    arg,
                    ArgType::PtrToMem { maybe_null: true }
                        | ArgType::PtrToUninitMem { maybe_null: true }
                );
                if reg.const_value() == Some(0) && maybe_null {
                    // A null pointer is only fine where the prototype allows
                    // one (`PTR_MAYBE_NULL`), with nothing to access
                    // (`check_helper_mem_access` on a scalar).
                    if v.umax != 0 {
                        return Err(self.error(expected("fp")));
                    }
                    return Ok(());
                }
                self.ptr_arg_type(&reg, regno, write, id)?;
                let access = if write { Access::Write } else { Access::Read };
                // Memory copied out of the program (to maps, ring buffers,
                // perf buffers, other processes) must hold no pointers;
                // formatting helpers read pointers for `%s` on purpose.
                let copied_out = !matches!(id, 6 | 165 | 177 | 182);
                if arg == ArgType::PtrToMemInOut {
                    // Read (every byte initialised), then written.
                    self.helper_mem(st, regno, v.umin, v.umax, Access::Read, false)?;
                }
                self.helper_mem(st, regno, v.umin, v.umax, access, copied_out && !write)?;
            }
            ArgType::ConstSize | ArgType::ConstSizeOrZero => {
                // Checked with the pointer before it.
            }
            ArgType::ConstAllocSizeOrZero => {
                let Some(v) = reg.const_value() else {
                    return Err(self.error(format!("R{regno} is not a known constant'")));
                };
                meta.alloc_size = Some(v);
            }
            ArgType::PtrToCtxOrNull if reg.const_value() == Some(0) => {}
            ArgType::PtrToCtx | ArgType::PtrToCtxOrNull => {
                let ok = match reg.ty {
                    RegType::Ctx => true,
                    RegType::Mem { .. } => matches!(self.env.context, Context::Raw { .. }),
                    _ => false,
                };
                if !ok || reg.maybe_null {
                    return Err(self.error(expected("ctx")));
                }
                self.ctx_ptr_offset(regno, &reg, false)?;
            }
            ArgType::PtrToFunc => {
                if !matches!(reg.ty, RegType::Func { .. }) {
                    return Err(self.error(expected("func")));
                }
            }
            ArgType::PtrToStackOrNull => {
                if !(reg.const_value() == Some(0) || matches!(reg.ty, RegType::Stack { .. })) {
                    return Err(self.error(expected("fp")));
                }
            }
            ArgType::PtrToLong | ArgType::PtrToU32 => {
                let n = if arg == ArgType::PtrToLong { 8 } else { 4 };
                self.ptr_arg_type(&reg, regno, true, id)?;
                // In the kernel's order: the bytes, then `MEM_ALIGNED`.
                self.helper_mem(st, regno, u64::from(n), u64::from(n), Access::Write, false)?;
                self.aligned(&reg, 0, n)?;
            }
            ArgType::PtrToTimer => {
                let RegType::MapValue { map } = reg.ty else {
                    return Err(self.error(expected("map_value")));
                };
                if reg.maybe_null {
                    return Err(self.error(expected("map_value")));
                }
                meta.timer_map = Some(map);
                let at = self.env.maps.get(map as usize).and_then(|m| m.timer);
                self.map_field_pointer(&reg, regno, map, "bpf_timer", at)?;
            }
            ArgType::PtrToConstStr => self.const_str(&reg, regno)?,
            ArgType::PtrToDynptr(what) => self.dynptr_arg(st, meta, &reg, regno, i, what)?,
            ArgType::PtrToSockOrNull => {
                if reg.const_value() != Some(0) && reg.ty != RegType::Socket {
                    return Err(self.error(expected("sock")));
                }
            }
            ArgType::PtrToBtfSockCommonOrNull => {
                // NULL, a socket (possibly NULL: `PTR_MAYBE_NULL` on the
                // argument takes either), or a kernel socket.
                if reg.const_value() != Some(0) && !reg.ty.is_socket() {
                    self.btf_sock_common_arg(&reg, regno, &format!("{name}#{id}"))?;
                }
            }
            ArgType::PtrToBtfSockCommon if matches!(reg.ty, RegType::BtfId { .. }) => {
                if reg.maybe_null {
                    return Err(self.error(expected(BTF_SOCK_COMMON_TYPES)));
                }
                self.btf_sock_common_arg(&reg, regno, &format!("{name}#{id}"))?;
                meta.sock_ref = reg.ref_id;
            }
            ArgType::PtrToSockCommon | ArgType::PtrToBtfSockCommon => {
                if !reg.ty.is_socket() || reg.maybe_null {
                    return Err(self.error(expected(if arg == ArgType::PtrToSockCommon {
                        SOCK_COMMON_TYPES
                    } else {
                        BTF_SOCK_COMMON_TYPES
                    })));
                }
                meta.sock_ref = reg.ref_id;
            }
            ArgType::PtrToSpinLock => {
                let RegType::MapValue { map } = reg.ty else {
                    return Err(self.error(expected(SPIN_LOCK_TYPES)));
                };
                if reg.maybe_null {
                    return Err(self.error(expected(SPIN_LOCK_TYPES)));
                }
                self.spin_lock_arg(st, &reg, regno, map, id == 93)?;
            }
            ArgType::BtfIdOrNull(_) if reg.const_value() == Some(0) => {}
            ArgType::BtfId(structure) | ArgType::BtfIdOrNull(structure) => {
                // `btf_ptr_types`, then `btf_struct_ids_match`, then
                // `__check_ptr_off_reg` with a fixed offset allowed.
                let RegType::BtfId { id: have, trust } = reg.ty else {
                    return Err(self.error(expected(BTF_ID_TYPES)));
                };
                let null_ok = matches!(arg, ArgType::BtfIdOrNull(_));
                if trust == Trust::Untrusted || (reg.maybe_null && !null_ok) {
                    return Err(self.error(expected(BTF_ID_TYPES)));
                }
                self.kernel_struct_arg(&reg, regno, have, structure, &format!("{name}#{id}"))?;
                if reg.val.is_const() != Some(0) {
                    return Err(self.error(format!(
                        "variable {} access var_off={} disallowed",
                        reg.type_name(),
                        reg.val.var_off
                    )));
                }
            }
            ArgType::PtrToSockCommonRelease => {
                if reg.maybe_null {
                    return Err(self.error(expected(BTF_SOCK_COMMON_TYPES)));
                }
                if matches!(reg.ty, RegType::BtfId { .. }) {
                    // A cast of a looked-up socket (`bpf_skc_to_tcp_sock`)
                    // holds its reference.
                    self.btf_sock_common_arg(&reg, regno, &format!("{name}#{id}"))?;
                } else if !reg.ty.is_socket() {
                    return Err(self.error(expected(BTF_SOCK_COMMON_TYPES)));
                }
                if reg.ref_id == 0 || !st.refs.iter().any(|&(r, _)| r == reg.ref_id) {
                    return Err(self.error(format!(
                        "R{regno} must be referenced when passed to release function"
                    )));
                }
                meta.release = Some(reg.ref_id);
            }
            ArgType::PtrToRingbufMemRelease => {
                if !matches!(reg.ty, RegType::RingbufMem { .. }) || reg.maybe_null {
                    return Err(self.error(expected("ringbuf_mem")));
                }
                if reg.off != 0 || reg.val.is_const() != Some(0) {
                    return Err(self.error(format!(
                        "R{regno} must have zero offset when passed to release func"
                    )));
                }
                if reg.ref_id == 0 || !st.refs.iter().any(|&(r, _)| r == reg.ref_id) {
                    return Err(self.error(format!(
                        "R{regno} must be referenced when passed to release function"
                    )));
                }
                meta.release = Some(reg.ref_id);
            }
        }
        Ok(())
    }

    /// A kernel socket argument given as a kernel pointer
    /// (`ARG_PTR_TO_BTF_ID_SOCK_COMMON`): not untrusted, at a constant
    /// offset, to a structure that starts with `struct sock_common`.
    fn btf_sock_common_arg(
        &mut self,
        reg: &Reg,
        regno: u8,
        what: &str,
    ) -> Result<(), Box<VerifyError>> {
        let wrong = || {
            format!(
                "R{regno} type={} expected={BTF_SOCK_COMMON_TYPES}",
                reg.type_name()
            )
        };
        let RegType::BtfId { id: have, trust } = reg.ty else {
            return Err(self.error(wrong()));
        };
        if trust == Trust::Untrusted {
            return Err(self.error(wrong()));
        }
        if reg.val.is_const() != Some(0) {
            return Err(self.error(format!(
                "variable {} access var_off={} disallowed",
                reg.type_name(),
                reg.val.var_off
            )));
        }
        self.kernel_struct_arg(reg, regno, have, "sock_common", what)
    }

    /// `ARG_PTR_TO_DYNPTR` (`process_dynptr_func`): 16 bytes of stack at
    /// a constant, 8-aligned offset, uninitialised for a helper that
    /// makes a dynptr there, an initialised dynptr (of the right kind)
    /// for the others.
    fn dynptr_arg(
        &self,
        st: &State,
        meta: &mut Meta,
        reg: &Reg,
        regno: u8,
        i: usize,
        what: DynptrArg,
    ) -> Result<(), Box<VerifyError>> {
        // (The kernel numbers arguments from 0 in these messages.)
        let argno = i;
        let RegType::Stack { frame } = reg.ty else {
            return Err(self.error(format!(
                "arg#{i} expected pointer to stack or const struct bpf_dynptr"
            )));
        };
        let Some(var) = reg.val.is_const() else {
            return Err(self.error("dynptr has to be at a constant offset"));
        };
        let off = i64::from(reg.off).wrapping_add(var as i64);
        let fi = usize::from(frame);
        let placed = off.rem_euclid(8) == 0
            && (i64::from(MAX_BPF_STACK).wrapping_neg()..=-16).contains(&off);
        let off = off as i32;
        match what {
            DynptrArg::New(kind) => {
                if !placed || fi >= st.frames.len() {
                    return Err(self.error("Dynptr has to be an uninitialized dynptr"));
                }
                // Overwriting a dynptr destroys it, unless it holds a
                // reference (`destroy_if_dynptr_stack_slot`).
                for half in [off, off.wrapping_add(8)] {
                    if let Some(old) = dynptr_half(&st.frames[fi], half) {
                        if old.ref_id != 0 {
                            return Err(self.error("cannot overwrite referenced dynptr"));
                        }
                    }
                }
                meta.dynptr_new = Some((fi, off, kind));
            }
            DynptrArg::Use | DynptrArg::Release(_) => {
                let found = if placed && fi < st.frames.len() {
                    dynptr_at(&st.frames[fi], off)
                } else {
                    None
                };
                let Some((kind, d)) = found else {
                    return Err(
                        self.error(format!("Expected an initialized dynptr as arg #{argno}"))
                    );
                };
                if let DynptrArg::Release(want) = what {
                    if d.ref_id == 0 || !st.refs.iter().any(|&(r, _)| r == d.ref_id) {
                        return Err(self.error(format!("arg {regno} is an unacquired reference")));
                    }
                    if kind != want {
                        return Err(self.error(format!(
                            "Expected a dynptr of type {} as arg #{argno}",
                            want.name()
                        )));
                    }
                    meta.release = Some(d.ref_id);
                }
                meta.dynptr_ref = d.ref_id;
            }
        }
        Ok(())
    }

    /// Pointer arguments a helper reads or writes: only to memory the
    /// program owns (not the context, not constants).
    fn ptr_arg_type(
        &self,
        reg: &Reg,
        regno: u8,
        write: bool,
        id: i32,
    ) -> Result<(), Box<VerifyError>> {
        if matches!(reg.ty, RegType::Packet { .. } | RegType::PacketMeta { .. })
            && !PKT_ACCESS.contains(&id)
        {
            // Only helpers whose prototype says `pkt_access` may take a
            // packet pointer.
            return Err(self.error("helper access to the packet is not allowed"));
        }
        let ok = match reg.ty {
            RegType::Stack { .. }
            | RegType::MapValue { .. }
            | RegType::Mem { .. }
            | RegType::RingbufMem { .. }
            | RegType::Packet { .. }
            | RegType::PacketMeta { .. } => true,
            RegType::MapKey { .. } => !write,
            RegType::Ctx => self.env.context == Context::Syscall,
            _ => false,
        };
        if !ok || reg.maybe_null {
            return Err(self.error(format!(
                "R{regno} type={} expected=fp, pkt, pkt_meta, map_key, map_value, mem, ringbuf_mem, buf, trusted_ptr_",
                reg.type_name()
            )));
        }
        Ok(())
    }

    /// `ARG_PTR_TO_CONST_STR`: a NUL-terminated string in a read-only map.
    fn const_str(&self, reg: &Reg, regno: u8) -> Result<(), Box<VerifyError>> {
        let RegType::MapValue { map } = reg.ty else {
            return Err(self.error(format!(
                "R{regno} type={} expected=map_value",
                reg.type_name()
            )));
        };
        let Some(m) = self.env.maps.get(map as usize) else {
            return Err(self.error(format!("R{regno} does not point to a readonly map'")));
        };
        if !m.read_only || reg.maybe_null {
            return Err(self.error(format!("R{regno} does not point to a readonly map'")));
        }
        let Some(off) = reg.val.is_const() else {
            return Err(self.error(format!("R{regno} is not a constant address'")));
        };
        let start = i64::from(reg.off).saturating_add(off as i64);
        let Some(data) = &m.contents else {
            return Err(self.error(format!(
                "R{regno} points to a map whose contents are unknown"
            )));
        };
        let ok = usize::try_from(start)
            .ok()
            .and_then(|s| data.get(s..))
            .is_some_and(|rest| rest.contains(&0));
        if !ok {
            return Err(self.error("string is not zero-terminated"));
        }
        Ok(())
    }

    /// Checks the combined stack of the call chain, and records each
    /// function's deepest stack for [`Self::check_max_stack_depth`].
    pub(crate) fn check_stack_depth(&mut self, st: &State) -> Result<(), Box<VerifyError>> {
        for f in &st.frames {
            if let Some(d) = self.subprog_depth.get_mut(f.subprog) {
                *d = (*d).max(f.depth());
            }
        }
        let total: i32 = st.frames.iter().map(Frame::depth).sum();
        let total_u = u32::try_from(total).unwrap_or(u32::MAX);
        self.stats.stack_depth = self.stats.stack_depth.max(total_u);
        if total > MAX_BPF_STACK {
            return Err(self.error(format!(
                "combined stack size of {} calls is {total}. Too large",
                st.frames.len()
            )));
        }
        Ok(())
    }

    /// The kernel's `check_max_stack_depth`, after the search: along every
    /// chain of calls (and synchronous callbacks) the code holds, from the
    /// entry function and from each asynchronous callback, the functions'
    /// deepest stacks, each rounded up to 16 bytes as for JIT-compiled
    /// programs, add up to at most 512 bytes; the chain is at most 8
    /// frames; a function with a tail call is entered with less than 256
    /// bytes of stack below and in it. (During the search, the frames
    /// present at each point are checked too, where the pc is known.)
    pub(crate) fn check_max_stack_depth(
        &mut self,
        starts: &[usize],
    ) -> Result<(), Box<VerifyError>> {
        let n = starts.len();
        let index_of = |pc: usize| starts.binary_search(&pc).ok();
        // Per function (by its index in `starts`): its calls (pc, callee),
        // whether it tail-calls, its deepest stack rounded up.
        let mut calls: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
        let mut tail_calls = vec![false; n];
        for (pc, i) in self.prog.instructions() {
            let f = starts.partition_point(|&s| s <= pc).saturating_sub(1);
            if matches!(
                i,
                userbpf_vm::isa::Instruction::Call(CallTarget::Helper(12))
            ) {
                tail_calls[f] = true;
            }
            let callee = crate::cfg::function_target(pc, &i)
                .filter(|t| !self.async_callbacks.contains(t))
                .and_then(index_of);
            if let Some(callee) = callee {
                calls[f].push((pc, callee));
            }
        }
        let rounded = |f: usize| {
            let d = self
                .subprog_depth
                .get(starts[f])
                .copied()
                .unwrap_or(0)
                .max(0);
            d.saturating_add(15) & !15
        };
        // Frame by frame: the deepest stack below each function entered at
        // this many frames, and the call that enters it so (every check
        // is the stricter the deeper it is, so the deepest stands for all
        // the chains). Linear in the calls, where walking every chain
        // could take exponential time.
        let mut layer: Vec<Option<(i32, usize)>> = vec![None; n];
        for root in std::iter::once(0).chain(self.async_callbacks.iter().copied()) {
            if let Some(f) = index_of(root) {
                layer[f] = Some((0, 0));
            }
        }
        for frames in 1..=MAX_CALL_FRAMES.saturating_add(1) {
            let mut next: Vec<Option<(i32, usize)>> = vec![None; n];
            let mut reached = false;
            for (f, entered) in layer.iter().enumerate() {
                let Some((below, at)) = *entered else {
                    continue;
                };
                reached = true;
                if frames > MAX_CALL_FRAMES {
                    return Err(self.error_at(
                        at,
                        format!("the call stack of {frames} frames is too deep !"),
                    ));
                }
                let depth = below.saturating_add(rounded(f));
                if depth > MAX_BPF_STACK {
                    return Err(self.error_at(
                        at,
                        format!("combined stack size of {frames} calls is {depth}. Too large"),
                    ));
                }
                if f != 0 && tail_calls[f] && depth >= 256 {
                    return Err(self.error_at(
                        at,
                        format!(
                            "tail_calls are not allowed when call stack of previous frames is {depth} bytes. Too large"
                        ),
                    ));
                }
                for &(pc, callee) in &calls[f] {
                    let deepest = &mut next[callee];
                    if deepest.is_none_or(|(b, _)| b < depth) {
                        *deepest = Some((depth, pc));
                    }
                }
            }
            if !reached {
                break;
            }
            layer = next;
        }
        Ok(())
    }
}

/// Makes every register `stale` picks unreadable, in every frame, and the
/// stack bytes of its spilled copies uninitialised.
fn forget(st: &mut State, stale: impl Fn(&Reg) -> bool) {
    st.for_each_reg(|r| {
        if stale(r) {
            *r = Reg::NOT_INIT;
        }
    });
    for frame in &mut st.frames {
        frame.stack.update(|slot| {
            if slot.is_spill() && slot.spill.ty == RegType::NotInit {
                *slot = crate::state::Slot::INVALID;
            }
        });
    }
}

/// `clear_all_pkt_pointers`: every packet pointer, in every frame,
/// unreadable.
fn forget_packet(st: &mut State) {
    forget(st, |r| {
        matches!(
            r.ty,
            RegType::Packet { .. } | RegType::PacketMeta { .. } | RegType::PacketEnd
        )
    });
}

/// The dynptr half spilled in the 8-byte slot at `off`, if any.
pub(crate) fn dynptr_half(frame: &Frame, off: i32) -> Option<Reg> {
    frame
        .slot(off)
        .filter(|(s, b)| *b == 0 && s.is_spill() && matches!(s.spill.ty, RegType::Dynptr { .. }))
        .map(|(s, _)| s.spill)
}

/// The initialised dynptr whose first half is at `off`: both halves, in
/// order, of the same dynptr.
fn dynptr_at(frame: &Frame, off: i32) -> Option<(DynptrKind, Reg)> {
    let first = dynptr_half(frame, off)?;
    let second = dynptr_half(frame, off.wrapping_add(8))?;
    match (first.ty, second.ty) {
        (
            RegType::Dynptr { kind, first: true },
            RegType::Dynptr {
                kind: k2,
                first: false,
            },
        ) if kind == k2 && first.id == second.id => Some((kind, first)),
        _ => None,
    }
}

/// Whether argument `i` of helper `id` is an address the helper reads or
/// writes (`bpf_probe_read*`, `bpf_copy_from_user*`: the source;
/// `bpf_probe_write_user`: the destination), not a value it keeps.
fn accessed_address(id: i32, i: usize) -> bool {
    matches!(
        (id, i),
        (4 | 45 | 112 | 113 | 114 | 115 | 148 | 191, 2) | (36, 0)
    )
}
