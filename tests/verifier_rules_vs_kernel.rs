//! The kernel's rules that userbpf's verifier follows, each shown on a
//! small program checked by both verifiers: the Linux verifier (as root,
//! `BPF_PROG_LOAD`) and ours must give the same verdict, and on a
//! rejection the same message. The few rules where userbpf differs on
//! purpose are listed with the verdict each side gives and the reason.
//!
//! These are the rules `verifier/tests/prevail-disagreements.txt` cites
//! as "the kernel rejects ..." where PREVAIL accepts: this test keeps
//! those reasons true on the running kernel.
//!
//! A second test shows that userbpf's rules against address leaks and
//! uninitialised stack reads, which root's kernel relaxes, are the
//! kernel's own for a loader without `CAP_PERFMON` (its
//! `allow_ptr_leaks` and `allow_uninit_stack`): each case is loaded as
//! root, then from a thread that dropped `CAP_PERFMON` and
//! `CAP_SYS_ADMIN` (keeping `CAP_BPF`), and userbpf's verdict and message
//! must be the latter's, except where listed with a reason.
//!
//! Needs root and bpf(); skips with a printed reason otherwise, unless
//! `USERBPF_REQUIRE_KERNEL=1` (CI), where it fails instead.

use userbpf_kernel::{
    kernel_required, kernel_unavailable, resolve_kfuncs, without_cap_perfmon, KernelMap,
    KernelProgram, LoadRequest, ProgBtf,
};
use userbpf_verifier::{check, Context, Env, MapInfo, Options, SkbKind};
use userbpf_vm::object::ProgramType;
use userbpf_vm::Program;

/// One side's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Accepted.
    Accepts,
    /// Rejected with a message containing this text.
    Rejects(&'static str),
}

use Verdict::{Accepts, Rejects};

/// A program and what each verifier says of it.
struct Rule {
    /// What the program shows.
    name: &'static str,
    /// `BPF_PROG_TYPE_SOCKET_FILTER`, `_SCHED_CLS`, `_CGROUP_SKB` or
    /// `_KPROBE`.
    prog_type: ProgramType,
    /// The program (C-like assembly).
    source: &'static str,
    /// The kernel's verdict.
    kernel: Verdict,
    /// Ours, when it differs on purpose, with the reason.
    ours: Option<(Verdict, &'static str)>,
}

const fn same(
    name: &'static str,
    prog_type: ProgramType,
    source: &'static str,
    verdict: Verdict,
) -> Rule {
    Rule {
        name,
        prog_type,
        source,
        kernel: verdict,
        ours: None,
    }
}

const SOCKET: ProgramType = ProgramType::SocketFilter;
const TC: ProgramType = ProgramType::SchedCls;
const KPROBE: ProgramType = ProgramType::Kprobe;
const CGROUP_SKB: ProgramType = ProgramType::CgroupSkb;
const XDP: ProgramType = ProgramType::Xdp;
const FLOW_DISSECTOR: ProgramType = ProgramType::FlowDissector;
const RAW_TP_W: ProgramType = ProgramType::RawTracepointWritable;

const RULES: &[Rule] = &[
    // userbpf's kfunc ids (`userbpf_vm::kfunc`: 0x7ffe0001 is
    // bpf_iter_num_new) become the kernel's BTF ids at load.
    same(
        "an address as a kfunc's int argument (bpf_iter_num_new's end)",
        SOCKET,
        "r1 = r10\nr1 += -8\nr2 = 0\nr3 = r10\ncall kfunc#2147352577\nr0 = 0\nexit",
        Rejects("R3 is not a scalar"),
    ),
    same("division by an immediate 0", SOCKET, "r0 = 0\nr0 /= 0\nexit", Rejects("div by zero")),
    same("modulo by an immediate 0", SOCKET, "r0 = 0\nr0 %= 0\nexit", Rejects("div by zero")),
    same(
        "division by a register that may be 0 (defined: x / 0 = 0)",
        SOCKET,
        "r0 = *(u32 *)(r1 + 0)\nr2 = 7\nr2 /= r0\nexit",
        Accepts,
    ),
    same("64-bit shift by 80", SOCKET, "r0 = 0\nr0 >>= 80\nexit", Rejects("invalid shift 80")),
    same("64-bit shift by -48", SOCKET, "r0 = 0\nr0 <<= -48\nexit", Rejects("invalid shift -48")),
    same("32-bit shift by 40", SOCKET, "w0 = 0\nw0 s>>= 40\nexit", Rejects("invalid shift 40")),
    same(
        "misaligned stack store",
        SOCKET,
        "r0 = 0\n*(u32 *)(r10 - 6) = 1\nexit",
        Rejects("misaligned stack access off 0+0+-6 size 4"),
    ),
    // A variable stack offset is aligned when every offset it may take
    // is: an odd variable part plus an odd fixed offset is even.
    same(
        "variable stack offset made even by the fixed offset",
        SOCKET,
        "r1 = *(u32 *)(r1 + 0)\nr1 &= 30\nr1 |= 1\nr2 = r10\nr2 += -64\nr2 += r1\n*(u16 *)(r2 + 3) = 0\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "variable stack offset made odd by the fixed offset",
        SOCKET,
        "r1 = *(u32 *)(r1 + 0)\nr1 &= 30\nr2 = r10\nr2 += -64\nr2 += r1\n*(u16 *)(r2 + 3) = 0\nr0 = 0\nexit",
        Rejects("misaligned stack access off (0x0; 0x1e)+-64+3 size 2"),
    ),
    // A range that meets the tnum in one value makes that value a
    // constant (`__update_reg64_bounds` with `tnum_step`): a multiple of 4
    // in [2, 4] is 4, so the offset is -12 + 4, aligned; with two values
    // left ([1, 9] of {0, 4, 8, 12}) the offset stays variable.
    same(
        "a range meeting the tnum in one value makes a constant offset",
        SOCKET,
        "r6 = r1\ncall bpf_get_prandom_u32\nr5 = r0\nr5 += 8\nr5 <<= 2\nif r5 s< 2 goto +5\nif r5 s> 4 goto +4\nr0 = r10\nr0 += -16\nr0 += r5\n*(u64 *)(r0 + 4) = 0\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a range meeting the tnum in two values leaves the offset variable",
        SOCKET,
        "call bpf_get_prandom_u32\nr5 = r0\nr5 &= 12\nif r5 < 1 goto +5\nif r5 > 9 goto +4\nr0 = r10\nr0 += -24\nr0 += r5\n*(u64 *)(r0 + 4) = 0\nr0 = 0\nexit",
        Rejects("misaligned stack access off (0x0; 0xc)+-24+4 size 8"),
    ),
    // A number that is -1 or 0 (`x s>> 63`) ANDed or ORed with a
    // constant splits the state, -1 on one path and 0 on the other, so the
    // result is one constant on each (Linux 6.18); the join of both,
    // [0, 14] after the check, would reach past the stack.
    same(
        "an AND of a number that is -1 or 0 splits the state",
        SOCKET,
        "*(u64 *)(r10 - 8) = 0\ncall bpf_get_prandom_u32\nr3 = r0\nr3 s>>= 63\nr3 &= 255\nif r3 > 14 goto +4\nr1 = r10\nr1 += -8\nr1 += r3\nr0 = *(u8 *)(r1 + 7)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "an AND of a low half that is -1 or 0 splits the state",
        SOCKET,
        "*(u64 *)(r10 - 8) = 0\ncall bpf_get_prandom_u32\nr3 = r0\nw3 s>>= 31\nr3 &= 255\nif r3 > 14 goto +4\nr1 = r10\nr1 += -8\nr1 += r3\nr0 = *(u8 *)(r1 + 7)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "an AND of a number that is -1 or 0 with an unknown number does not split",
        SOCKET,
        "r6 = *(u32 *)(r1 + 0)\n*(u64 *)(r10 - 8) = 0\ncall bpf_get_prandom_u32\nr3 = r0\nr3 s>>= 63\nr3 &= r6\nif r3 > 14 goto +4\nr1 = r10\nr1 += -8\nr1 += r3\nr0 = *(u8 *)(r1 + 7)\nr0 = 0\nexit",
        Rejects("invalid variable-offset read from stack R1"),
    ),
    same(
        "misaligned stack atomic",
        SOCKET,
        "r0 = 0\n*(u64 *)(r10 - 16) = r0\n*(u64 *)(r10 - 8) = r0\nlock *(u64 *)(r10 - 12) += r0\nexit",
        Rejects("misaligned stack access off 0+0+-12 size 8"),
    ),
    // Atomics are aligned at every offset a variable pointer may have
    // (`tnum_is_aligned`), as histogram code's `slots[i]` increments are.
    same(
        "an atomic add at a variable 4-aligned offset of a map value",
        SOCKET,
        "r6 = *(u32 *)(r1 + 0)\nr6 &= 4\n*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 += r6\nr1 = 1\nlock *(u32 *)(r0 + 0) += w1\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "an atomic add at a variable 2-aligned offset of a map value",
        SOCKET,
        "r6 = *(u32 *)(r1 + 0)\nr6 &= 2\n*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 += r6\nr1 = 1\nlock *(u32 *)(r0 + 0) += w1\nr0 = 0\nexit",
        Rejects("misaligned value access off (0x0; 0x2)+0+0 size 4"),
    ),
    same(
        "an atomic add at a variable offset of the stack (the kernel refuses any)",
        SOCKET,
        "r6 = *(u32 *)(r1 + 0)\nr6 &= 8\nr2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr3 = r10\nr3 += -16\nr3 += r6\nr1 = 1\nlock *(u64 *)(r3 + 0) += r1\nr0 = 0\nexit",
        Rejects("variable offset stack pointer cannot be passed into helper function; var_off=(0x0; 0x8) off=-16 size=8"),
    ),
    // Kernel-only tracing helpers (libbpf-tools call them): the verifier
    // knows their prototypes and which programs may call them; user space
    // does not run them.
    same(
        "bpf_get_current_task in a kprobe",
        KPROBE,
        "call bpf_get_current_task\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_get_current_task in a socket filter (root: CAP_PERFMON)",
        SOCKET,
        "call bpf_get_current_task\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_get_current_cgroup_id in a kprobe",
        KPROBE,
        "call bpf_get_current_cgroup_id\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_get_current_cgroup_id in a socket filter (root: CAP_PERFMON)",
        SOCKET,
        "call bpf_get_current_cgroup_id\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_current_task_under_cgroup with a cgroup array in a kprobe",
        KPROBE,
        "r1 = map[idx:3]\nr2 = 0\ncall bpf_current_task_under_cgroup\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_current_task_under_cgroup with an array",
        KPROBE,
        "r1 = map[idx:0]\nr2 = 0\ncall bpf_current_task_under_cgroup\nr0 = 0\nexit",
        Rejects("cannot pass map_type 2 into func bpf_current_task_under_cgroup#37"),
    ),
    same(
        "bpf_current_task_under_cgroup in a socket filter (root: CAP_PERFMON)",
        SOCKET,
        "r1 = map[idx:3]\nr2 = 0\ncall bpf_current_task_under_cgroup\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_get_socket_cookie in a socket filter",
        SOCKET,
        "call bpf_get_socket_cookie\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_get_socket_cookie in a kprobe",
        KPROBE,
        "call bpf_get_socket_cookie\nr0 = 0\nexit",
        Rejects("program of this type cannot use helper bpf_get_socket_cookie#46"),
    ),
    same(
        "bpf_probe_read_kernel of 0 bytes into NULL",
        KPROBE,
        "r1 = 0\nr2 = 0\nr3 = 0\ncall bpf_probe_read_kernel\nr0 = 0\nexit",
        Rejects("R1 type=scalar expected=fp, pkt, pkt_meta, map_key, map_value, mem, ringbuf_mem, buf, trusted_ptr_"),
    ),
    same(
        "bpf_get_stack of 0 bytes into NULL",
        KPROBE,
        "r2 = 0\nr3 = 0\nr4 = 0\ncall bpf_get_stack\nr0 = 0\nexit",
        Rejects("R2 type=scalar expected=fp, pkt, pkt_meta, map_key, map_value, mem, ringbuf_mem, buf, trusted_ptr_"),
    ),
    same(
        "bpf_skb_load_bytes into the stack in a socket filter",
        SOCKET,
        "r2 = 0\nr3 = r10\nr3 += -8\nr4 = 8\ncall bpf_skb_load_bytes\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_skb_load_bytes past the stack",
        TC,
        "r2 = 0\nr3 = r10\nr3 += -8\nr4 = 16\ncall bpf_skb_load_bytes\nr0 = 0\nexit",
        Rejects("invalid write to stack R3 off=-8 size=16"),
    ),
    same(
        "one load through the context on a path and the stack on another",
        TC,
        "r6 = r1\nr1 = 0\n*(u64 *)(r10 - 8) = r1\ncall bpf_get_prandom_u32\nr7 = r10\nr7 += -16\nif r0 == 0 goto +1\nr7 = r6\nr0 = *(u32 *)(r7 + 8)\nr0 = 0\nexit",
        Rejects("same insn cannot be used with different pointers"),
    ),
    same(
        "one store through a map value on a path and the stack on another",
        TC,
        "r1 = 0\n*(u64 *)(r10 - 8) = r1\nr2 = r10\nr2 += -8\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr7 = r10\nr7 += -8\nif r0 == 0 goto +1\nr7 = r0\nr1 = 1\n*(u32 *)(r7 + 0) = r1\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a bounds check on one load of data proves another",
        XDP,
        "r2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr4 = *(u32 *)(r1 + 0)\nr5 = r2\nr5 += 8\nr0 = 0\nif r5 > r3 goto +1\nr0 = *(u64 *)(r4 + 0)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "the 32-bit distance of two packet pointers",
        XDP,
        "r2 = *(u32 *)(r1 + 4)\nr4 = *(u32 *)(r1 + 0)\nw2 -= w4\nr0 = 2\nexit",
        Accepts,
    ),
    same(
        "bpf_skb_load_bytes_relative into uninitialised stack",
        TC,
        "r2 = 0\nr3 = r10\nr3 += -8\nr4 = 8\nr5 = 1\ncall bpf_skb_load_bytes_relative\nr0 = *(u64 *)(r10 - 8)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_skb_load_bytes_relative in XDP",
        XDP,
        "r2 = 0\nr3 = r10\nr3 += -8\nr4 = 8\nr5 = 1\ncall bpf_skb_load_bytes_relative\nr0 = 0\nexit",
        Rejects("program of this type cannot use helper bpf_skb_load_bytes_relative#68"),
    ),
    same(
        "bpf_skb_load_bytes in a kprobe",
        KPROBE,
        "r2 = 0\nr3 = r10\nr3 += -8\nr4 = 8\ncall bpf_skb_load_bytes\nr0 = 0\nexit",
        Rejects("program of this type cannot use helper bpf_skb_load_bytes#26"),
    ),
    same(
        "bpf_csum_diff of the stack in TC",
        TC,
        "r1 = 0\n*(u64 *)(r10 - 8) = r1\nr1 = 0\nr2 = 0\nr3 = r10\nr3 += -8\nr4 = 8\nr5 = 0\ncall bpf_csum_diff\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_csum_diff in a socket filter",
        SOCKET,
        "r1 = 0\n*(u64 *)(r10 - 8) = r1\nr1 = 0\nr2 = 0\nr3 = r10\nr3 += -8\nr4 = 8\nr5 = 0\ncall bpf_csum_diff\nr0 = 0\nexit",
        Rejects("program of this type cannot use helper bpf_csum_diff#28"),
    ),
    same(
        "bpf_csum_diff in a kprobe",
        KPROBE,
        "r1 = 0\n*(u64 *)(r10 - 8) = r1\nr1 = 0\nr2 = 0\nr3 = r10\nr3 += -8\nr4 = 8\nr5 = 0\ncall bpf_csum_diff\nr0 = 0\nexit",
        Rejects("program of this type cannot use helper bpf_csum_diff#28"),
    ),
    same(
        "bpf_skb_load_bytes into the packet",
        TC,
        "r6 = *(u32 *)(r1 + 76)\nr7 = *(u32 *)(r1 + 80)\nr3 = r6\nr3 += 8\nif r3 > r7 goto +4\nr2 = 0\nr3 = r6\nr4 = 4\ncall bpf_skb_load_bytes\nr0 = 0\nexit",
        Rejects("helper access to the packet is not allowed"),
    ),
    same(
        "a map update with a value in the packet",
        TC,
        "r6 = *(u32 *)(r1 + 76)\nr7 = *(u32 *)(r1 + 80)\nr3 = r6\nr3 += 8\nif r3 > r7 goto +8\n*(u32 *)(r10 - 4) = 0\nr1 = map[idx:1]\nr2 = r10\nr2 += -4\nr3 = r6\nr4 = 0\ncall bpf_map_update_elem\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_csum_diff of the packet",
        TC,
        "r6 = *(u32 *)(r1 + 76)\nr7 = *(u32 *)(r1 + 80)\nr3 = r6\nr3 += 8\nif r3 > r7 goto +6\nr1 = r6\nr2 = 8\nr3 = 0\nr4 = 0\nr5 = 0\ncall bpf_csum_diff\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a helper access of 0 bytes at a stack pointer past the frame",
        SOCKET,
        "r0 = 0\n*(u64 *)(r10 - 16) = r0\n*(u64 *)(r10 - 8) = r0\nr1 = *(u32 *)(r1 + 0)\nr1 &= 63\nr1 += -16\nr1 += r10\nr2 = 0\nr3 = 0\ncall bpf_probe_read_kernel\nr0 = 0\nexit",
        Rejects("invalid variable-offset write to stack R1"),
    ),
    same(
        "a helper access of 0 bytes at a stack pointer in the frame",
        SOCKET,
        "r0 = 0\n*(u64 *)(r10 - 16) = r0\n*(u64 *)(r10 - 8) = r0\nr1 = *(u32 *)(r1 + 0)\nr1 &= 15\nr1 += -16\nr1 += r10\nr2 = 0\nr3 = 0\ncall bpf_probe_read_kernel\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_strtoul into an aligned long in a socket filter (root)",
        SOCKET,
        "r1 = 0x31\n*(u64 *)(r10 - 8) = r1\nr1 = r10\nr1 += -8\nr2 = 2\nr3 = 0\nr4 = r10\nr4 += -16\ncall bpf_strtoul\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_strtoul into a misaligned long",
        KPROBE,
        "r1 = 0x31\n*(u64 *)(r10 - 8) = r1\nr1 = r10\nr1 += -8\nr2 = 2\nr3 = 0\nr4 = r10\nr4 += -20\ncall bpf_strtoul\nr0 = 0\nexit",
        Rejects("misaligned stack access off 0+-20+0 size 8"),
    ),
    same(
        "bpf_strtoul into a long past the stack (bounds before alignment)",
        KPROBE,
        "r1 = 0x31\n*(u64 *)(r10 - 16) = r1\nr1 = r10\nr1 += -16\nr2 = 2\nr3 = 0\nr4 = r10\nr4 += -4\ncall bpf_strtoul\nr0 = 0\nexit",
        Rejects("invalid write to stack R4 off=-4 size=8"),
    ),
    Rule {
        name: "a sign-extending move of a pointer",
        prog_type: SOCKET,
        source: "r1 = (s16)r10\nr0 = 0\nexit",
        kernel: Accepts,
        ours: Some((
            Rejects("R10 sign-extension part of pointer"),
            "the kernel makes the result a number for root, which would carry address bits; userbpf refuses it, in the kernel's words for unprivileged programs",
        )),
    },
    same(
        "csum_diff of NULL with a size that may not be 0",
        TC,
        "r2 = *(u32 *)(r1 + 0)\nr2 &= 64\nr1 = 0\nr3 = 0\nr4 = 0\nr5 = 0\ncall bpf_csum_diff\nr0 = 0\nexit",
        Rejects("R1 type=scalar expected=fp"),
    ),
    same(
        "bpf_strtoul in a kprobe",
        KPROBE,
        "r1 = 0x31\n*(u64 *)(r10 - 8) = r1\nr1 = r10\nr1 += -8\nr2 = 2\nr3 = 0\nr4 = r10\nr4 += -16\ncall bpf_strtoul\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_strtol in a socket filter (root)",
        SOCKET,
        "r1 = 0x31\n*(u64 *)(r10 - 8) = r1\nr1 = r10\nr1 += -8\nr2 = 2\nr3 = 0\nr4 = r10\nr4 += -16\ncall bpf_strtol\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_csum_update in TC",
        TC,
        "r2 = 0\ncall bpf_csum_update\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_csum_update in a socket filter",
        SOCKET,
        "r2 = 0\ncall bpf_csum_update\nr0 = 0\nexit",
        Rejects("program of this type cannot use helper bpf_csum_update#40"),
    ),
    Rule {
        name: "a packet pointer after bpf_skb_store_bytes",
        prog_type: TC,
        source: "r6 = *(u32 *)(r1 + 76)\nr7 = *(u32 *)(r1 + 80)\nr3 = r6\nr3 += 8\nif r3 > r7 goto +11\nr8 = r1\nr1 = 0\n*(u64 *)(r10 - 8) = r1\nr1 = r8\nr2 = 0\nr3 = r10\nr3 += -8\nr4 = 4\nr5 = 0\ncall bpf_skb_store_bytes\nr0 = *(u8 *)(r6 + 0)\nr0 = 0\nexit",
        kernel: Rejects("R6 invalid mem access 'scalar'"),
        ours: Some((Rejects("R6 !read_ok"), "the kernel makes stale packet pointers numbers for root, which would carry addresses; userbpf makes them unreadable, as the kernel does for unprivileged programs")),
    },
    same(
        "packet pointers read again after bpf_skb_store_bytes",
        TC,
        "r6 = *(u32 *)(r1 + 76)\nr7 = *(u32 *)(r1 + 80)\nr3 = r6\nr3 += 8\nif r3 > r7 goto +16\nr8 = r1\nr1 = 0\n*(u64 *)(r10 - 8) = r1\nr1 = r8\nr2 = 0\nr3 = r10\nr3 += -8\nr4 = 4\nr5 = 0\ncall bpf_skb_store_bytes\nr6 = *(u32 *)(r8 + 76)\nr7 = *(u32 *)(r8 + 80)\nr3 = r6\nr3 += 1\nif r3 > r7 goto +1\nr0 = *(u8 *)(r6 + 0)\nr0 = 0\nexit",
        Accepts,
    ),
    Rule {
        name: "a packet pointer after bpf_xdp_adjust_head",
        prog_type: XDP,
        source: "r0 = 2\nr6 = *(u32 *)(r1 + 0)\nr7 = *(u32 *)(r1 + 4)\nr3 = r6\nr3 += 8\nif r3 > r7 goto +3\nr2 = 4\ncall bpf_xdp_adjust_head\nr0 = *(u8 *)(r6 + 0)\nr0 = 2\nexit",
        kernel: Rejects("R6 invalid mem access 'scalar'"),
        ours: Some((Rejects("R6 !read_ok"), "as after bpf_skb_store_bytes")),
    },
    same(
        "a lookup in a cgroup array",
        KPROBE,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:3]\ncall bpf_map_lookup_elem\nr0 = 0\nexit",
        Rejects("cannot pass map_type 8 into func bpf_map_lookup_elem#1"),
    ),
    same(
        "a lookup in a stack trace map",
        KPROBE,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:4]\ncall bpf_map_lookup_elem\nr0 = 0\nexit",
        Rejects("cannot pass map_type 7 into func bpf_map_lookup_elem#1"),
    ),
    same(
        "bpf_get_ns_current_pid_tgid into 8 bytes of stack in a kprobe",
        KPROBE,
        "r1 = 1\nr2 = 2\nr3 = r10\nr3 += -8\nr4 = 8\ncall bpf_get_ns_current_pid_tgid\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_get_ns_current_pid_tgid past the stack",
        KPROBE,
        "r1 = 1\nr2 = 2\nr3 = r10\nr3 += -8\nr4 = 16\ncall bpf_get_ns_current_pid_tgid\nr0 = 0\nexit",
        Rejects("invalid write to stack R3 off=-8 size=16"),
    ),
    same(
        "bpf_trace_printk of a format past the stack",
        KPROBE,
        "r1 = 0\n*(u64 *)(r10 - 8) = r1\nr1 = r10\nr1 += -8\nr2 = 16\ncall bpf_trace_printk\nr0 = 0\nexit",
        Rejects("invalid read from stack R1 off=-8 size=16"),
    ),
    same(
        "bpf_get_ns_current_pid_tgid in a socket filter (root: CAP_PERFMON)",
        SOCKET,
        "r1 = 1\nr2 = 2\nr3 = r10\nr3 += -8\nr4 = 8\ncall bpf_get_ns_current_pid_tgid\nr0 = 0\nexit",
        Accepts,
    ),
    // Pointer arithmetic the kernel forbids (`adjust_ptr_min_max_vals`,
    // `check_reg_sane_offset`), though it accesses nothing.
    same(
        "subtracting from a stack pointer",
        SOCKET,
        "r0 = 0\nr1 = r10\nr1 -= 8\n*(u64 *)(r1 + 0) = r0\nexit",
        Rejects("R1 subtraction from stack pointer prohibited"),
    ),
    same(
        "adding 2^29 to a map value pointer",
        SOCKET,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr1 = 0x20000000\nr0 += r1\nr0 = 0\nexit",
        Rejects("math between map_value pointer and 536870912 is not allowed"),
    ),
    same(
        "a map value pointer whose fixed offset passes 2^29",
        SOCKET,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 += 0x1fffffff\nr0 += 0x1fffffff\nr0 = 0\nexit",
        Rejects("map_value pointer offset 1073741822 is not allowed"),
    ),
    same(
        "a map value pointer plus a value down to -2^29",
        SOCKET,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr1 = *(u8 *)(r0 + 0)\nr1 += -0x20000000\nr0 += r1\nr0 = 0\nexit",
        Rejects("value -536870912 makes map_value pointer be out of bounds"),
    ),
    same(
        "a map value pointer plus a value of unbounded minimum",
        SOCKET,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr1 = *(u64 *)(r0 + 0)\nr0 += r1\nr0 = 0\nexit",
        Rejects("math between map_value pointer and register with unbounded min value is not allowed"),
    ),
    // A sign mask (`x s>> 31`: 0 or -1) ANDed or ORed with a constant is
    // one of two values; the kernel decides branches on that, and does not
    // check the dead division by zero behind them.
    same(
        "a 32-bit sign mask ANDed with -134 is 0 or -134",
        SOCKET,
        "call bpf_get_prandom_u32\nw2 = w0\nw2 s>>= 31\nw2 &= -134\nif w2 s> -1 goto +2\nif w2 != -136 goto +1\nw0 /= 0\nw0 = 0\nexit",
        Accepts,
    ),
    same(
        "a 64-bit sign mask ORed with 6 is 6 or -1",
        SOCKET,
        "call bpf_get_prandom_u32\nr2 = r0\nr2 <<= 32\nr2 s>>= 63\nr2 |= 6\nif r2 == 6 goto +2\nif r2 == -1 goto +1\nr0 /= 0\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a sign mask ORed with 6 is not 5",
        SOCKET,
        "call bpf_get_prandom_u32\nr2 = r0\nr2 <<= 32\nr2 s>>= 63\nr2 |= 6\nif r2 == 6 goto +1\nr0 /= 0\nr0 = 0\nexit",
        Rejects("div by zero"),
    ),
    same(
        "a lookup's result equal to a checked one is not null",
        SOCKET,
        "*(u32 *)(r10 - 8) = 0\nr1 = map[idx:1]\nr2 = r10\nr2 += -8\ncall bpf_map_lookup_elem\nr6 = r0\nr1 = map[idx:1]\nr2 = r10\nr2 += -8\ncall bpf_map_lookup_elem\nr7 = r0\nif r6 == 0 goto +2\nif r6 != r7 goto +1\nr0 = *(u32 *)(r7 + 0)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a lookup's result different from a checked one may be null",
        SOCKET,
        "*(u32 *)(r10 - 8) = 0\nr1 = map[idx:1]\nr2 = r10\nr2 += -8\ncall bpf_map_lookup_elem\nr6 = r0\nr1 = map[idx:1]\nr2 = r10\nr2 += -8\ncall bpf_map_lookup_elem\nr7 = r0\nif r6 == 0 goto +2\nif r6 == r7 goto +1\nr0 = *(u32 *)(r7 + 0)\nr0 = 0\nexit",
        Rejects("R7 invalid mem access 'map_value_or_null'"),
    ),
    same(
        "a 32-bit copy of a number below 2^32 is linked to it",
        SOCKET,
        "call bpf_ktime_get_ns\n*(u64 *)(r10 - 8) = r0\nr2 = *(u32 *)(r10 - 8)\nw3 = w2\nif w2 < 9 goto +1\nexit\nif r3 < 9 goto +1\nr0 -= r1\nexit",
        Accepts,
    ),
    same(
        "a 32-bit copy of a wider number is not linked to it",
        SOCKET,
        "call bpf_ktime_get_ns\nr2 = r0\nw3 = w2\nif w2 < 9 goto +1\nexit\nif r3 < 9 goto +1\nr0 -= r1\nexit",
        Rejects("R1 !read_ok"),
    ),
    same(
        "a context pointer moved back",
        SOCKET,
        "r1 += -8\nr0 = *(u32 *)(r1 + 8)\nexit",
        Rejects("negative offset ctx ptr R1 off=-8 disallowed"),
    ),
    same(
        "a context pointer moved forward",
        SOCKET,
        "r1 += 8\nr0 = *(u32 *)(r1 + 0)\nexit",
        Rejects("dereference of modified ctx ptr R1 off=8 disallowed"),
    ),
    same(
        "a context pointer moved by a variable",
        SOCKET,
        "r2 = *(u32 *)(r1 + 0)\nr2 &= 4\nr1 += r2\nr0 = *(u32 *)(r1 + 0)\nexit",
        Rejects("variable ctx access var_off=(0x0; 0x4) disallowed"),
    ),
    same(
        "a bitwise operation on a lookup's result before its null check",
        SOCKET,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:1]\ncall bpf_map_lookup_elem\nr0 &= 1\nr0 = 0\nexit",
        Rejects("R0 pointer arithmetic on map_value_or_null prohibited, null-check it first"),
    ),
    same(
        "adding 0 to a map pointer",
        SOCKET,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:1]\nr3 = 0\nr1 += r3\ncall bpf_map_lookup_elem\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "adding 8 to a map pointer",
        SOCKET,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:1]\nr1 += 8\ncall bpf_map_lookup_elem\nr0 = 0\nexit",
        Rejects("R1 pointer arithmetic on map_ptr prohibited"),
    ),
    same(
        "bpf_probe_read_kernel in a socket filter (root: CAP_PERFMON)",
        SOCKET,
        "r1 = r10\nr1 += -8\nr2 = 8\nr3 = 0\ncall bpf_probe_read_kernel\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_probe_read_user in a socket filter (root: CAP_PERFMON)",
        SOCKET,
        "r1 = r10\nr1 += -8\nr2 = 8\nr3 = 0\ncall bpf_probe_read_user\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_probe_read_user_str in a socket filter (root: CAP_PERFMON)",
        SOCKET,
        "r1 = r10\nr1 += -8\nr2 = 8\nr3 = 0\ncall bpf_probe_read_user_str\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_probe_read_kernel_str in a socket filter (root: CAP_PERFMON)",
        SOCKET,
        "r1 = r10\nr1 += -8\nr2 = 8\nr3 = 0\ncall bpf_probe_read_kernel_str\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_probe_read in a socket filter",
        SOCKET,
        "r1 = r10\nr1 += -8\nr2 = 8\nr3 = 0\ncall bpf_probe_read\nr0 = 0\nexit",
        Rejects("program of this type cannot use helper bpf_probe_read#4"),
    ),
    same(
        "bpf_probe_read_str in a socket filter",
        SOCKET,
        "r1 = r10\nr1 += -8\nr2 = 8\nr3 = 0\ncall bpf_probe_read_str\nr0 = 0\nexit",
        Rejects("program of this type cannot use helper bpf_probe_read_str#45"),
    ),
    same(
        "a loop around bpf_loop whose counter indexes the stack",
        SOCKET,
        "r8 = 0\nr1 = 0\n*(u64 *)(r10 - 56) = r1\nl1:\nif r8 >= 6 goto l2\nr1 = 8\nr2 = func[cb]\nr3 = r10\nr3 += -56\nr4 = 0\ncall bpf_loop\nr1 = r10\nr1 += -48\nr2 = r8\nr2 <<= 3\nr1 += r2\nr3 = 0\n*(u64 *)(r1 + 0) = r3\nr8 += 1\ngoto l1\nl2:\nr0 = 0\nexit\ncb:\nr6 = *(u64 *)(r2 + 0)\nr6 += 1\n*(u64 *)(r2 + 0) = r6\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a pointer spilled with a 4-byte store",
        SOCKET,
        "r0 = 0\n*(u32 *)(r10 - 8) = r1\nexit",
        Rejects("invalid size of register spill"),
    ),
    same(
        "a packet pointer field of the context read in 2 bytes",
        TC,
        "r2 = *(u16 *)(r1 + 76)\nr0 = 0\nexit",
        Rejects("invalid bpf_context access off=76 size=2"),
    ),
    same(
        "a packet pointer field of the context read whole",
        TC,
        "r2 = *(u32 *)(r1 + 76)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a socket filter reads tstamp_type",
        SOCKET,
        "r2 = *(u8 *)(r1 + 180)\nr0 = 0\nexit",
        Rejects("invalid bpf_context access off=180 size=1"),
    ),
    same(
        "a TC program reads tstamp_type",
        TC,
        "r2 = *(u8 *)(r1 + 180)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a TC program reads the padding after tstamp_type",
        TC,
        "r2 = *(u8 *)(r1 + 181)\nr0 = 0\nexit",
        Rejects("invalid bpf_context access off=181 size=1"),
    ),
    same(
        "a socket filter reads gso_size in 2 bytes",
        SOCKET,
        "r2 = *(u16 *)(r1 + 176)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a socket filter reads tstamp",
        SOCKET,
        "r2 = *(u64 *)(r1 + 152)\nr0 = 0\nexit",
        Rejects("invalid bpf_context access off=152 size=8"),
    ),
    same(
        "a socket filter reads wire_len",
        SOCKET,
        "r2 = *(u32 *)(r1 + 160)\nr0 = 0\nexit",
        Rejects("invalid bpf_context access off=160 size=4"),
    ),
    same(
        "a TC program reads wire_len and hwtstamp",
        TC,
        "r2 = *(u32 *)(r1 + 160)\nr2 = *(u64 *)(r1 + 184)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a cgroup_skb program reads data_meta",
        CGROUP_SKB,
        "r2 = *(u32 *)(r1 + 140)\nr0 = 0\nexit",
        Rejects("invalid bpf_context access off=140 size=4"),
    ),
    same(
        "a cgroup_skb program writes tstamp and mark",
        CGROUP_SKB,
        "r2 = 1\n*(u64 *)(r1 + 152) = r2\n*(u32 *)(r1 + 8) = r2\nr0 = 1\nexit",
        Accepts,
    ),
    same(
        "an atomic fetch returns the number spilled there",
        SOCKET,
        "*(u64 *)(r10 - 8) = 4\nr2 = 1\nr2 = atomic_fetch_or((u64 *)(r10 - 8), r2)\nif r2 == 4 goto +1\nr0 = *(u64 *)(r2 + 0)\nr0 = 0\nexit",
        Accepts,
    ),
    same("a register never written, read", SOCKET, "r0 = r3\nexit", Rejects("R3 !read_ok")),
    same(
        "a register never written, stored",
        SOCKET,
        "*(u64 *)(r10 - 8) = r6\nr0 = 0\nexit",
        Rejects("R6 !read_ok"),
    ),
    same("exit without r0", SOCKET, "r1 = 0\nexit", Rejects("R0 !read_ok")),
    same(
        "a callee reads the caller's r6 (callee frames start with r1-r5)",
        SOCKET,
        "r6 = 1\ncall pc+2\nr0 = 0\nexit\nr0 = r6\nexit",
        Rejects("R6 !read_ok"),
    ),
    same(
        "a callee reads the caller's r0",
        SOCKET,
        "r0 = 1\ncall pc+2\nr0 = 0\nexit\nr0 += 3\nexit",
        Rejects("R0 !read_ok"),
    ),
    same(
        "a subprogram returns without setting r0, the caller sets it",
        SOCKET,
        "r6 = 0\ncall pc+2\nr0 = 0\nexit\nr6 = 1\nexit",
        Accepts,
    ),
    same(
        "a subprogram returns without setting r0, the caller returns it",
        SOCKET,
        "r6 = 0\ncall pc+1\nexit\nr6 = 1\nexit",
        Rejects("R0 !read_ok"),
    ),
    same(
        "a pointer compared with 0 by `<`: both branches are explored",
        SOCKET,
        "if r1 < 0 goto +1\nr0 = 1\nexit",
        Rejects("R0 !read_ok"),
    ),
    same(
        "a jump out of a subprogram",
        SOCKET,
        "r0 = 1\ncall pc+2\nr0 = 2\nexit\ngoto -3",
        Rejects("jump out of range from insn 4 to 2"),
    ),
    same(
        "a maybe-null pointer compared with a register holding 0 is not null-checked",
        SOCKET,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:1]\ncall bpf_map_lookup_elem\nr1 = 0\nif r0 != r1 goto +2\nr0 = 0\nexit\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
        Rejects("R0 invalid mem access 'map_value_or_null'"),
    ),
    same(
        "a maybe-null pointer compared with a register holding 0, on its left, is not null-checked",
        SOCKET,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:1]\ncall bpf_map_lookup_elem\nr1 = 0\nif r1 != r0 goto +2\nr0 = 0\nexit\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
        Rejects("R0 invalid mem access 'map_value_or_null'"),
    ),
    same(
        "an atomic operation on the context, adding a pointer",
        SOCKET,
        "lock *(u64 *)(r1 + 48) += r10\nr0 = 0\nexit",
        Rejects("BPF_ATOMIC stores into R1 ctx is not allowed"),
    ),
    same(
        "a helper writing to the stack at an offset without an upper bound",
        SOCKET,
        "r6 = r1\nr2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr4 = *(u32 *)(r1 + 0)\nr4 -= 16\nr4 += r10\nr1 = r6\nr2 = 0\nr3 = r4\nr4 = 8\ncall bpf_skb_load_bytes\nr0 = 0\nexit",
        Rejects("invalid unbounded variable-offset write to stack R3"),
    ),
    same(
        "a failed BPF_LD_ABS in a subprogram returns 0 to its caller",
        SOCKET,
        "call pc+4\nif r0 != 0 goto +1\nr0 = r9\nr0 = 0\nexit\nr6 = r1\nr0 = *(u32 *)skb[0]\nr0 = 1\nexit",
        Rejects("R9 !read_ok"),
    ),
    same(
        "a caller safe whatever its subprogram's BPF_LD_ABS gives",
        SOCKET,
        "call pc+2\nr0 = 0\nexit\nr6 = r1\nr0 = *(u32 *)skb[0]\nr0 = 1\nexit",
        Accepts,
    ),
    same(
        "dead code after an unconditional jump",
        SOCKET,
        "r0 = 0\ngoto +1\nr0 = 1\nexit",
        Rejects("unreachable insn 2"),
    ),
    same(
        "dead code in a subprogram, after its exit",
        SOCKET,
        "call pc+2\nr0 = 0\nexit\nr0 = 1\nexit\nexit",
        Rejects("unreachable insn 5"),
    ),
    same(
        "a function reached only by its address (a callback)",
        SOCKET,
        "r1 = 1\nr2 = func[cb]\nr3 = 0\nr4 = 0\ncall bpf_loop\nr0 = 0\nexit\ncb:\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a subprogram that falls into the next one",
        SOCKET,
        "r0 = 0\ncall pc+2\nexit\nexit\nr0 = 1\nr0 = 2\ncall pc+0\nr0 = 3\nexit",
        Rejects("last insn is not an exit or jmp"),
    ),
    same(
        "the functions' deepest stacks add up to more than 512 bytes",
        SOCKET,
        "r6 = 0\ncall pc+3\n*(u64 *)(r10 - 448) = r6\nr0 = 0\nexit\n*(u64 *)(r10 - 96) = r1\nr0 = 0\nexit",
        Rejects("combined stack size of 2 calls is 544. Too large"),
    ),
    same(
        "the functions' deepest stacks add up to 512 bytes",
        SOCKET,
        "r6 = 0\ncall pc+3\n*(u64 *)(r10 - 448) = r6\nr0 = 0\nexit\n*(u64 *)(r10 - 64) = r1\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a tail call from a function entered with 256 bytes of stack",
        SOCKET,
        "*(u64 *)(r10 - 256) = r1\ncall pc+2\nr0 = 0\nexit\nr2 = map[idx:2]\nr3 = 0\ncall bpf_tail_call\nr0 = 0\nexit",
        Rejects("tail_calls are not allowed when call stack of previous frames is 256 bytes. Too large"),
    ),
    same(
        "a tail call from a function entered with 240 bytes of stack",
        SOCKET,
        "*(u64 *)(r10 - 240) = r1\ncall pc+2\nr0 = 0\nexit\nr2 = map[idx:2]\nr3 = 0\ncall bpf_tail_call\nr0 = 0\nexit",
        Accepts,
    ),
    Rule {
        name: "a loop that never ends, through bpf_loop's call",
        prog_type: SOCKET,
        source: "r6 = 1\nl1:\nif r6 >= 8 goto l2\nr1 = 1\nr2 = func[cb]\nr3 = 0\nr4 = 0\ncall bpf_loop\ngoto l1\nl2:\nr0 = 0\nexit\ncb:\nr0 = 0\nexit",
        kernel: Accepts,
        ours: Some((
            Rejects("infinite loop detected at insn 7"),
            "the kernel prunes a state at a callback-calling instruction against any earlier \
             one still being explored, also when the path came round a loop of the caller's \
             own rather than from the callback: it accepts this loop, which never ends (never \
             run it in the kernel); userbpf prunes so only on the callback's return, and finds \
             the loop's state again at the call",
        )),
    },
    same(
        "bpf_loop with no iteration does not call its callback",
        SOCKET,
        "r1 = 0\nr2 = func[cb]\nr3 = 0\nr4 = 0\ncall bpf_loop\nr0 = 0\nexit\ncb:\n*(u32 *)(r10 + 0) = 7\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_loop with an iteration calls its callback",
        SOCKET,
        "r1 = 1\nr2 = func[cb]\nr3 = 0\nr4 = 0\ncall bpf_loop\nr0 = 0\nexit\ncb:\n*(u32 *)(r10 + 0) = 7\nr0 = 0\nexit",
        Rejects("invalid write to stack R10 off=0 size=4"),
    ),
    same(
        "a bounded loop around bpf_loop's call",
        SOCKET,
        "r6 = 1\nl1:\nif r6 >= 8 goto l2\nr1 = 1\nr2 = func[cb]\nr3 = 0\nr4 = 0\ncall bpf_loop\nr6 += 1\ngoto l1\nl2:\nr0 = 0\nexit\ncb:\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a pointer to the caller's stack returned to the caller",
        SOCKET,
        "r1 = r10\nr1 += -8\ncall pc+2\nr0 = 0\nexit\nr0 = r1\nexit",
        Rejects("cannot return stack pointer to the caller"),
    ),
    same(
        "a stack pointer returned to the caller",
        SOCKET,
        "r0 = r10\ncall pc+2\nr0 = 0\nexit\nr0 = r10\nexit",
        Rejects("cannot return stack pointer to the caller"),
    ),
    // Linux 6.14's nullness elision: an array lookup with a constant key
    // in range needs no null check. (Map 0: an array of 4 8-byte values;
    // map 1: a hash map of the same shape.)
    same(
        "an array lookup with a constant key 0 written as zeros at fp-4",
        SOCKET,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "an array lookup with a constant key 3 spilled at fp-8",
        SOCKET,
        "r1 = 3\n*(u32 *)(r10 - 8) = r1\nr2 = r10\nr2 += -8\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "an array lookup with the key 4, past max_entries",
        SOCKET,
        "r1 = 4\n*(u32 *)(r10 - 8) = r1\nr2 = r10\nr2 += -8\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
        Rejects("R0 invalid mem access 'map_value_or_null'"),
    ),
    same(
        "an array lookup whose 4-byte key is the start of an 8-byte spill",
        SOCKET,
        "r1 = 3\n*(u64 *)(r10 - 8) = r1\nr2 = r10\nr2 += -8\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
        Rejects("R0 invalid mem access 'map_value_or_null'"),
    ),
    same(
        "an array lookup whose 4-byte key is the end of an 8-byte spill",
        SOCKET,
        "r1 = 3\n*(u64 *)(r10 - 8) = r1\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a hash lookup with a constant key",
        SOCKET,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:1]\ncall bpf_map_lookup_elem\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
        Rejects("R0 invalid mem access 'map_value_or_null'"),
    ),
    same(
        "an array lookup with the key 0 stored at the start of its slot",
        SOCKET,
        "*(u32 *)(r10 - 8) = 0\nr2 = r10\nr2 += -8\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "an array lookup whose key's zeros were stored in two halves",
        SOCKET,
        "*(u16 *)(r10 - 8) = 0\n*(u16 *)(r10 - 6) = 0\nr2 = r10\nr2 += -8\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
        Rejects("R0 invalid mem access 'map_value_or_null'"),
    ),
    same(
        "an array lookup whose key's zeros were stored in two halves, off the slot's start",
        SOCKET,
        "*(u16 *)(r10 - 4) = 0\n*(u16 *)(r10 - 2) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
        Accepts,
    ),
    // do_refine_retval_range: what some helpers may return.
    same(
        "bpf_get_smp_processor_id returns a CPU number",
        SOCKET,
        "call bpf_get_smp_processor_id\nif r0 > 0xffff goto +2\nr0 = 0\nexit\nr1 = *(u64 *)(r0 + 0)\nexit",
        Accepts,
    ),
    same(
        "bpf_get_prandom_u32 returns any number",
        SOCKET,
        "call bpf_get_prandom_u32\nif r0 > 0xffff goto +2\nr0 = 0\nexit\nr1 = *(u64 *)(r0 + 0)\nexit",
        Rejects("R0 invalid mem access 'scalar'"),
    ),
    same(
        "bpf_probe_read_str returns at most its size, or an errno",
        KPROBE,
        "r1 = r10\nr1 += -16\nr2 = 8\nr3 = 0\ncall bpf_probe_read_str\nif r0 s> 8 goto +3\nif r0 s< -4095 goto +2\nr0 = 0\nexit\nr1 = *(u64 *)(r0 + 0)\nexit",
        Accepts,
    ),
    same(
        "bpf_probe_read_str may return its size",
        KPROBE,
        "r1 = r10\nr1 += -16\nr2 = 8\nr3 = 0\ncall bpf_probe_read_str\nif r0 s> 7 goto +3\nif r0 s< -4095 goto +2\nr0 = 0\nexit\nr1 = *(u64 *)(r0 + 0)\nexit",
        Rejects("R0 invalid mem access 'scalar'"),
    ),
    Rule {
        name: "a read of stack never written",
        prog_type: SOCKET,
        source: "r0 = *(u64 *)(r10 - 8)\nexit",
        kernel: Accepts,
        ours: Some((
            Rejects("invalid read from stack R10 off=-8 size=8"),
            "userbpf rejects reads of uninitialised stack; the kernel allows them to root (and \
             refuses them, in these words, to loaders without CAP_PERFMON)",
        )),
    },
    same(
        "an instruction no path reaches",
        SOCKET,
        "r0 = 0\nexit\nr0 = 1\nexit",
        Rejects("unreachable insn 2"),
    ),
    same(
        "bpf_get_netns_cookie of the context and of NULL",
        SOCKET,
        "r6 = r1\nr1 = 0\ncall bpf_get_netns_cookie\nr1 = r6\ncall bpf_get_netns_cookie\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_get_netns_cookie of a stack pointer",
        SOCKET,
        "r1 = r10\nr1 += -8\ncall bpf_get_netns_cookie\nr0 = 0\nexit",
        Rejects("R1 type=fp expected=ctx"),
    ),
    same(
        "a writable raw tracepoint reads and writes its buffer, atomically too",
        RAW_TP_W,
        "r2 = *(u64 *)(r1 + 0)\nr3 = *(u64 *)(r1 + 8)\n*(u64 *)(r2 + 8) = r3\nr2 += 16\nr0 = *(u32 *)(r2 + 3)\nr4 = 1\nlock *(u64 *)(r2 + 8) += r4\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a writable raw tracepoint's buffer below its start",
        RAW_TP_W,
        "r2 = *(u64 *)(r1 + 0)\nr2 += 8\nr0 = *(u8 *)(r2 - 9)\nr0 = 0\nexit",
        Rejects("R2 invalid tracepoint buffer access: off=-1, size=1"),
    ),
    same(
        "a writable raw tracepoint's buffer at a variable offset",
        RAW_TP_W,
        "r2 = *(u64 *)(r1 + 0)\nr3 = *(u64 *)(r1 + 8)\nr3 &= 7\nr2 += r3\n*(u8 *)(r2 + 0) = 1\nr0 = 0\nexit",
        Rejects("R2 invalid variable buffer offset: off=0, var_off=(0x0; 0x7)"),
    ),
    same(
        "a writable raw tracepoint reads its buffer pointer in part",
        RAW_TP_W,
        "r2 = *(u32 *)(r1 + 0)\nr0 = 0\nexit",
        Rejects("invalid bpf_context access off=0 size=4"),
    ),
    same(
        "a writable raw tracepoint writes its arguments",
        RAW_TP_W,
        "*(u64 *)(r1 + 8) = 0\nr0 = 0\nexit",
        Rejects("invalid bpf_context access off=8 size=8"),
    ),
    same(
        "a writable raw tracepoint's buffer is no helper memory",
        RAW_TP_W,
        "r1 = *(u64 *)(r1 + 0)\nr2 = 8\nr3 = 0\ncall bpf_probe_read_kernel\nr0 = 0\nexit",
        Rejects("R1 type=tp_buffer expected=fp"),
    ),
    same(
        "a flow dissector writes its flow keys",
        FLOW_DISSECTOR,
        "r2 = *(u64 *)(r1 + 144)\nr3 = 6\n*(u8 *)(r2 + 11) = r3\nr0 = *(u32 *)(r2 + 52)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a flow dissector reads past its flow keys",
        FLOW_DISSECTOR,
        "r2 = *(u64 *)(r1 + 144)\nr0 = *(u8 *)(r2 + 56)\nr0 = 0\nexit",
        Rejects("invalid access to flow keys off=56 size=1"),
    ),
    same(
        "flow keys moved by a constant",
        FLOW_DISSECTOR,
        "r2 = *(u64 *)(r1 + 144)\nr2 += 48\nr0 = *(u64 *)(r2 + 0)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "flow keys moved past their end by a constant",
        FLOW_DISSECTOR,
        "r2 = *(u64 *)(r1 + 144)\nr2 += 52\nr0 = *(u64 *)(r2 + 0)\nr0 = 0\nexit",
        Rejects("invalid access to flow keys off=52 size=8"),
    ),
    same(
        "flow keys moved by a variable",
        FLOW_DISSECTOR,
        "r2 = *(u64 *)(r1 + 144)\nr3 = *(u32 *)(r2 + 0)\nr3 &= 8\nr2 += r3\nr0 = *(u8 *)(r2 + 0)\nr0 = 0\nexit",
        Rejects("R2 pointer arithmetic on flow_keys prohibited"),
    ),
    same(
        "bpf_redirect_map to a device map in XDP",
        XDP,
        "r1 = map[idx:5]\nr2 = 0\nr3 = 0\ncall bpf_redirect_map\nexit",
        Accepts,
    ),
    same(
        "bpf_redirect_map to an array",
        XDP,
        "r1 = map[idx:0]\nr2 = 0\nr3 = 0\ncall bpf_redirect_map\nexit",
        Rejects("cannot pass map_type 2 into func bpf_redirect_map#51"),
    ),
    same(
        "a device map's value read in XDP",
        XDP,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:5]\ncall bpf_map_lookup_elem\nif r0 == 0 goto +1\nr0 = *(u32 *)(r0 + 0)\nr0 = 2\nexit",
        Accepts,
    ),
    same(
        "a device map's value written in XDP",
        XDP,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:5]\ncall bpf_map_lookup_elem\nif r0 == 0 goto +1\n*(u32 *)(r0 + 0) = 1\nr0 = 2\nexit",
        Rejects("write into map forbidden"),
    ),
    same(
        "a device map updated from XDP",
        XDP,
        "*(u32 *)(r10 - 4) = 0\n*(u32 *)(r10 - 8) = 0\nr2 = r10\nr2 += -4\nr3 = r10\nr3 += -8\nr4 = 0\nr1 = map[idx:5]\ncall bpf_map_update_elem\nr0 = 2\nexit",
        Rejects("write into map forbidden"),
    ),
    same(
        "bpf_redirect_map in TC",
        TC,
        "r1 = map[idx:5]\nr2 = 0\nr3 = 0\ncall bpf_redirect_map\nexit",
        Rejects("program of this type cannot use helper bpf_redirect_map#51"),
    ),
    same(
        "bpf_fib_lookup with its parameters on the stack in XDP",
        XDP,
        concat!(
            "r6 = r1\nr2 = 0\n*(u64 *)(r10 - 64) = r2\n*(u64 *)(r10 - 56) = r2\n*(u64 *)(r10 - 48) = r2\n",
            "*(u64 *)(r10 - 40) = r2\n*(u64 *)(r10 - 32) = r2\n*(u64 *)(r10 - 24) = r2\n",
            "*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr1 = r6\nr2 = r10\nr2 += -64\n",
            "r3 = 64\nr4 = 0\ncall bpf_fib_lookup\nr0 = 2\nexit"
        ),
        Accepts,
    ),
    same(
        "bpf_check_mtu with the MTU on the stack in XDP",
        XDP,
        "*(u32 *)(r10 - 8) = 0\nr2 = 0\nr3 = r10\nr3 += -8\nr4 = 0\nr5 = 0\ncall bpf_check_mtu\nr0 = 2\nexit",
        Accepts,
    ),
    same(
        "bpf_check_mtu with a misaligned MTU",
        XDP,
        "*(u64 *)(r10 - 8) = 0\nr2 = 0\nr3 = r10\nr3 += -6\nr4 = 0\nr5 = 0\ncall bpf_check_mtu\nr0 = 2\nexit",
        Rejects("misaligned stack access off 0+-6+0 size 4"),
    ),
    same(
        "bpf_tcp_check_syncookie on the packet's headers in XDP",
        XDP,
        concat!(
            "r6 = r1\nr8 = *(u32 *)(r6 + 0)\nr9 = *(u32 *)(r6 + 4)\nr1 = r8\nr1 += 40\nif r1 > r9 goto +21\n",
            "r2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr1 = r6\nr2 = r10\nr2 += -16\n",
            "r3 = 12\nr4 = -1\nr5 = 0\ncall bpf_skc_lookup_tcp\nif r0 == 0 goto +10\nr7 = r0\n",
            "r1 = r0\nr2 = r8\nr3 = 20\nr4 = r8\nr4 += 20\nr5 = 20\ncall bpf_tcp_check_syncookie\n",
            "r1 = r7\ncall bpf_sk_release\nr0 = 2\nexit"
        ),
        Accepts,
    ),
    same(
        "bpf_redirect in TC",
        TC,
        "r1 = 1\nr2 = 0\ncall bpf_redirect\nexit",
        Accepts,
    ),
    same(
        "bpf_get_cgroup_classid of the current task (no argument) in a kprobe",
        KPROBE,
        "call bpf_get_cgroup_classid\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "bpf_get_cgroup_classid of the packet (the context) in TC",
        TC,
        "r1 = 0\ncall bpf_get_cgroup_classid\nr0 = 0\nexit",
        Rejects("R1 type=scalar expected=ctx"),
    ),
    Rule {
        name: "a packet pointer after bpf_skb_vlan_push",
        prog_type: TC,
        source: "r6 = *(u32 *)(r1 + 76)\nr7 = *(u32 *)(r1 + 80)\nr3 = r6\nr3 += 8\nif r3 > r7 goto +4\nr2 = 0x81\nr3 = 1\ncall bpf_skb_vlan_push\nr0 = *(u8 *)(r6 + 0)\nr0 = 0\nexit",
        kernel: Rejects("R6 invalid mem access 'scalar'"),
        ours: Some((Rejects("R6 !read_ok"), "as after bpf_skb_store_bytes")),
    },
    same(
        "another CPU's value of a per-CPU array",
        KPROBE,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:7]\nr3 = 1\ncall bpf_map_lookup_percpu_elem\nif r0 == 0 goto +1\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "another CPU's value of a plain array",
        KPROBE,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\nr3 = 1\ncall bpf_map_lookup_percpu_elem\nr0 = 0\nexit",
        Rejects("cannot pass map_type 2 into func bpf_map_lookup_percpu_elem#195"),
    ),
    same(
        "a perf event counter read",
        KPROBE,
        "r1 = map[idx:8]\nr2 = 0\ncall bpf_perf_event_read\nr0 = 0\nexit",
        Accepts,
    ),
    same(
        "a lookup in a perf event array",
        KPROBE,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:8]\ncall bpf_map_lookup_elem\nr0 = 0\nexit",
        Rejects("cannot pass map_type 4 into func bpf_map_lookup_elem#1"),
    ),
    same(
        "an AF_XDP socket's queue read after a lookup in XDP",
        XDP,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:10]\ncall bpf_map_lookup_elem\nif r0 == 0 goto +1\nr0 = *(u32 *)(r0 + 0)\nr0 = 2\nexit",
        Accepts,
    ),
    same(
        "an AF_XDP socket read past its queue",
        XDP,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:10]\ncall bpf_map_lookup_elem\nif r0 == 0 goto +1\nr0 = *(u32 *)(r0 + 4)\nr0 = 2\nexit",
        Rejects("R0 invalid xdp_sock access off=4 size=4"),
    ),
    same(
        "an AF_XDP socket read before its null check",
        XDP,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:10]\ncall bpf_map_lookup_elem\nr0 = *(u32 *)(r0 + 0)\nr0 = 2\nexit",
        Rejects("R0 invalid mem access 'map_value_or_null'"),
    ),
    same(
        "a looked-up socket assigned to the packet in TC",
        TC,
        concat!(
            "r6 = r1\nr2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr2 = r10\nr2 += -16\n",
            "r3 = 12\nr4 = -1\nr5 = 0\ncall bpf_sk_lookup_tcp\nif r0 == 0 goto +7\nr7 = r0\n",
            "r1 = r6\nr2 = r0\nr3 = 0\ncall bpf_sk_assign\nr1 = r7\ncall bpf_sk_release\nr0 = 0\nexit"
        ),
        Accepts,
    ),
    same(
        "NULL assigned to the packet in TC",
        TC,
        "r2 = 0\nr3 = 0\ncall bpf_sk_assign\nr0 = 0\nexit",
        Rejects("R2 type=scalar expected=sock_common, sock, tcp_sock, xdp_sock, ptr_, trusted_ptr_"),
    ),
    same(
        "a socket looked up in a socket map and released",
        TC,
        concat!(
            "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:9]\ncall bpf_map_lookup_elem\n",
            "if r0 == 0 goto +3\nr1 = *(u32 *)(r0 + 4)\nr1 = r0\ncall bpf_sk_release\nr0 = 0\nexit"
        ),
        Accepts,
    ),
    same(
        "a socket looked up in a socket map and kept",
        TC,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:9]\ncall bpf_map_lookup_elem\nr0 = 0\nexit",
        Rejects("Unreleased reference"),
    ),
    same(
        "a socket put in a socket map from TC",
        TC,
        concat!(
            "r2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr2 = r10\nr2 += -16\n",
            "r3 = 12\nr4 = -1\nr5 = 0\ncall bpf_sk_lookup_tcp\nif r0 == 0 goto +11\nr6 = r0\n",
            "*(u32 *)(r10 - 20) = 0\nr2 = r10\nr2 += -20\nr1 = map[idx:9]\nr3 = r6\nr4 = 0\n",
            "call bpf_map_update_elem\nr1 = r6\ncall bpf_sk_release\nr0 = 0\nexit"
        ),
        Accepts,
    ),
    same(
        "a number put in a socket map",
        TC,
        "*(u32 *)(r10 - 4) = 0\n*(u32 *)(r10 - 8) = 0\nr2 = r10\nr2 += -4\nr3 = r10\nr3 += -8\nr4 = 0\nr1 = map[idx:9]\ncall bpf_map_update_elem\nr0 = 0\nexit",
        Rejects("R3 type=fp expected=sock_common, sock, tcp_sock, xdp_sock, ptr_, trusted_ptr_"),
    ),
    same(
        "a socket map updated from a kprobe",
        KPROBE,
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:9]\ncall bpf_map_delete_elem\nr0 = 0\nexit",
        Rejects("cannot pass map_type 15 into func bpf_map_delete_elem#3"),
    ),
    // Dynptrs: 16 opaque bytes of stack the dynptr helpers make and use;
    // a ring buffer one holds a reference until submitted or discarded.
    same(
        "a ring buffer dynptr reserved, written, read and submitted",
        SOCKET,
        concat!(
            "r1 = map[idx:6]\nr2 = 16\nr3 = 0\nr4 = r10\nr4 += -16\ncall bpf_ringbuf_reserve_dynptr\n",
            "*(u64 *)(r10 - 24) = 7\nr1 = r10\nr1 += -16\nr2 = 0\nr3 = r10\nr3 += -24\nr4 = 8\nr5 = 0\n",
            "call bpf_dynptr_write\nr1 = r10\nr1 += -32\nr2 = 8\nr3 = r10\nr3 += -16\nr4 = 8\nr5 = 0\n",
            "call bpf_dynptr_read\nr1 = r10\nr1 += -16\nr2 = 0\ncall bpf_ringbuf_submit_dynptr\nr0 = 0\nexit"
        ),
        Accepts,
    ),
    same(
        "a ring buffer dynptr never submitted",
        SOCKET,
        "r1 = map[idx:6]\nr2 = 16\nr3 = 0\nr4 = r10\nr4 += -16\ncall bpf_ringbuf_reserve_dynptr\nr0 = 0\nexit",
        Rejects("Unreleased reference"),
    ),
    same(
        "a dynptr read as a number",
        SOCKET,
        concat!(
            "r1 = map[idx:6]\nr2 = 16\nr3 = 0\nr4 = r10\nr4 += -16\ncall bpf_ringbuf_reserve_dynptr\n",
            "r0 = *(u64 *)(r10 - 16)\nr1 = r10\nr1 += -16\nr2 = 0\ncall bpf_ringbuf_submit_dynptr\nr0 = 0\nexit"
        ),
        Rejects("invalid read from stack off -16+0 size 8"),
    ),
    same(
        "a referenced dynptr overwritten",
        SOCKET,
        concat!(
            "r1 = map[idx:6]\nr2 = 16\nr3 = 0\nr4 = r10\nr4 += -16\ncall bpf_ringbuf_reserve_dynptr\n",
            "*(u64 *)(r10 - 8) = 0\nr1 = r10\nr1 += -16\nr2 = 0\ncall bpf_ringbuf_submit_dynptr\nr0 = 0\nexit"
        ),
        Rejects("cannot overwrite referenced dynptr"),
    ),
    same(
        "a dynptr used before it is made",
        SOCKET,
        "r1 = r10\nr1 += -24\nr2 = 8\nr3 = r10\nr3 += -16\nr4 = 0\nr5 = 0\ncall bpf_dynptr_read\nr0 = 0\nexit",
        Rejects("Expected an initialized dynptr as arg #2"),
    ),
    same(
        "a dynptr made at a misaligned offset",
        SOCKET,
        "r1 = map[idx:6]\nr2 = 16\nr3 = 0\nr4 = r10\nr4 += -12\ncall bpf_ringbuf_reserve_dynptr\nr0 = 0\nexit",
        Rejects("Dynptr has to be an uninitialized dynptr"),
    ),
    same(
        "a dynptr over the stack",
        SOCKET,
        "r1 = r10\nr1 += -32\nr2 = 8\nr3 = 0\nr4 = r10\nr4 += -16\ncall bpf_dynptr_from_mem\nr0 = 0\nexit",
        Rejects("Unsupported reg type fp for bpf_dynptr_from_mem data"),
    ),
    same(
        "a local dynptr over a map value submitted to a ring buffer",
        SOCKET,
        concat!(
            "*(u32 *)(r10 - 20) = 0\nr2 = r10\nr2 += -20\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\n",
            "if r0 == 0 goto +9\nr1 = r0\nr2 = 8\nr3 = 0\nr4 = r10\nr4 += -16\ncall bpf_dynptr_from_mem\n",
            "r1 = r10\nr1 += -16\nr2 = 0\ncall bpf_ringbuf_submit_dynptr\nr0 = 0\nexit"
        ),
        Rejects("arg 1 is an unacquired reference"),
    ),
    same(
        "a slice of a ring buffer dynptr written within its size",
        SOCKET,
        concat!(
            "r1 = map[idx:6]\nr2 = 16\nr3 = 0\nr4 = r10\nr4 += -16\ncall bpf_ringbuf_reserve_dynptr\n",
            "r1 = r10\nr1 += -16\nr2 = 0\nr3 = 8\ncall bpf_dynptr_data\nif r0 == 0 goto +1\n*(u64 *)(r0 + 0) = 1\n",
            "r1 = r10\nr1 += -16\nr2 = 0\ncall bpf_ringbuf_submit_dynptr\nr0 = 0\nexit"
        ),
        Accepts,
    ),
    same(
        "a slice of a ring buffer dynptr written past its size",
        SOCKET,
        concat!(
            "r1 = map[idx:6]\nr2 = 16\nr3 = 0\nr4 = r10\nr4 += -16\ncall bpf_ringbuf_reserve_dynptr\n",
            "r1 = r10\nr1 += -16\nr2 = 0\nr3 = 8\ncall bpf_dynptr_data\nif r0 == 0 goto +1\n*(u64 *)(r0 + 8) = 1\n",
            "r1 = r10\nr1 += -16\nr2 = 0\ncall bpf_ringbuf_submit_dynptr\nr0 = 0\nexit"
        ),
        Rejects("invalid access to memory, mem_size=8 off=8 size=8"),
    ),
    Rule {
        name: "a slice of a ring buffer dynptr used after the submit",
        prog_type: SOCKET,
        source: concat!(
            "r1 = map[idx:6]\nr2 = 16\nr3 = 0\nr4 = r10\nr4 += -16\ncall bpf_ringbuf_reserve_dynptr\n",
            "r1 = r10\nr1 += -16\nr2 = 0\nr3 = 8\ncall bpf_dynptr_data\nr6 = r0\n",
            "r1 = r10\nr1 += -16\nr2 = 0\ncall bpf_ringbuf_submit_dynptr\nif r6 == 0 goto +1\n*(u64 *)(r6 + 0) = 1\nr0 = 0\nexit"
        ),
        kernel: Rejects("R6 invalid mem access 'scalar'"),
        ours: Some((Rejects("R6 !read_ok"), "the kernel makes released pointers numbers for root, which would carry addresses; userbpf makes them unreadable, as the kernel does for unprivileged programs")),
    },
    Rule {
        name: "a spilled pointer read through a variable stack offset",
        prog_type: SOCKET,
        source: "r1 = r10\n*(u64 *)(r10 - 8) = r1\n*(u64 *)(r10 - 16) = 0\ncall bpf_get_prandom_u32\nr2 = r0\nr2 &= 8\nr3 = r10\nr3 += -16\nr3 += r2\nr0 = *(u64 *)(r3 + 0)\nr0 = 0\nexit",
        kernel: Accepts,
        ours: Some((Rejects("invalid variable-offset read from stack R3 var_off=(0x0; 0x8) off=-16 size=8"), "the number read would hold the pointer's bits: a leak, which the kernel allows root and userbpf refuses")),
    },
    // Sockets: lookups return a reference to release on every path;
    // socket pointers are read at fixed offsets only.
    same(
        "a socket looked up, null-checked, read and released",
        TC,
        concat!(
            "r2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr2 = r10\nr2 += -16\n",
            "r3 = 12\nr4 = -1\nr5 = 0\ncall bpf_sk_lookup_tcp\nif r0 == 0 goto +3\n",
            "r1 = *(u32 *)(r0 + 72)\nr1 = r0\ncall bpf_sk_release\nr0 = 0\nexit"
        ),
        Accepts,
    ),
    same(
        "a socket looked up and never released",
        TC,
        concat!(
            "r2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr2 = r10\nr2 += -16\n",
            "r3 = 12\nr4 = -1\nr5 = 0\ncall bpf_sk_lookup_udp\nif r0 == 0 goto +1\n",
            "r1 = *(u32 *)(r0 + 72)\nr0 = 0\nexit"
        ),
        Rejects("Unreleased reference"),
    ),
    same(
        "a socket read before its null check",
        TC,
        concat!(
            "r2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr2 = r10\nr2 += -16\n",
            "r3 = 12\nr4 = -1\nr5 = 0\ncall bpf_sk_lookup_tcp\nr1 = *(u32 *)(r0 + 72)\n",
            "r1 = r0\ncall bpf_sk_release\nr0 = 0\nexit"
        ),
        Rejects("R0 invalid mem access 'sock_or_null'"),
    ),
    same(
        "a possibly NULL socket released",
        TC,
        concat!(
            "r2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr2 = r10\nr2 += -16\n",
            "r3 = 12\nr4 = -1\nr5 = 0\ncall bpf_sk_lookup_tcp\n",
            "r1 = r0\ncall bpf_sk_release\nr0 = 0\nexit"
        ),
        Rejects("R1 type=sock_or_null expected=sock_common, sock, tcp_sock, xdp_sock, ptr_, trusted_ptr_"),
    ),
    same(
        "pointer arithmetic on a socket",
        TC,
        concat!(
            "r2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr2 = r10\nr2 += -16\n",
            "r3 = 12\nr4 = -1\nr5 = 0\ncall bpf_sk_lookup_tcp\nif r0 == 0 goto +3\n",
            "r0 += 4\nr1 = r0\ncall bpf_sk_release\nr0 = 0\nexit"
        ),
        Rejects("R0 pointer arithmetic on sock prohibited"),
    ),
    same(
        "a field a request socket lacks, read from bpf_skc_lookup_tcp's socket",
        TC,
        concat!(
            "r2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr2 = r10\nr2 += -16\n",
            "r3 = 12\nr4 = -1\nr5 = 0\ncall bpf_skc_lookup_tcp\nif r0 == 0 goto +3\n",
            "r1 = *(u32 *)(r0 + 8)\nr1 = r0\ncall bpf_sk_release\nr0 = 0\nexit"
        ),
        Rejects("R0 invalid sock_common access off=8 size=4"),
    ),
    same(
        "the packet's own socket (__sk_buff->sk) released",
        TC,
        "r1 = *(u64 *)(r1 + 168)\nif r1 == 0 goto +1\ncall bpf_sk_release\nr0 = 0\nexit",
        Rejects("R1 must be referenced when passed to release function"),
    ),
    same(
        "the packet's own socket made a full socket and read",
        CGROUP_SKB,
        concat!(
            "r1 = *(u64 *)(r1 + 168)\nif r1 == 0 goto +3\ncall bpf_sk_fullsock\n",
            "if r0 == 0 goto +1\nr0 = *(u32 *)(r0 + 8)\nr0 = 1\nexit"
        ),
        Accepts,
    ),
    same(
        "the packet's own socket read without a null check",
        TC,
        "r1 = *(u64 *)(r1 + 168)\nr0 = *(u32 *)(r1 + 4)\nr0 = 0\nexit",
        Rejects("R1 invalid mem access 'sock_common_or_null'"),
    ),
    same(
        "a socket released through its bpf_tcp_sock cast",
        TC,
        concat!(
            "r2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr2 = r10\nr2 += -16\n",
            "r3 = 12\nr4 = -1\nr5 = 0\ncall bpf_sk_lookup_tcp\nif r0 == 0 goto +10\n",
            "r7 = r0\nr1 = r0\ncall bpf_tcp_sock\nif r0 != 0 goto +3\n",
            "r1 = r7\ncall bpf_sk_release\ngoto +3\n",
            "r1 = *(u32 *)(r0 + 0)\nr1 = r0\ncall bpf_sk_release\nr0 = 0\nexit"
        ),
        Accepts,
    ),
    same(
        "a NULL bpf_tcp_sock cast does not release the socket",
        TC,
        concat!(
            "r2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr2 = r10\nr2 += -16\n",
            "r3 = 12\nr4 = -1\nr5 = 0\ncall bpf_sk_lookup_tcp\nif r0 == 0 goto +6\n",
            "r7 = r0\nr1 = r0\ncall bpf_tcp_sock\nif r0 == 0 goto +2\n",
            "r1 = r0\ncall bpf_sk_release\nr0 = 0\nexit"
        ),
        Rejects("Unreleased reference"),
    ),
    Rule {
        name: "a socket read after its release",
        prog_type: TC,
        source: concat!(
            "r2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr2 = r10\nr2 += -16\n",
            "r3 = 12\nr4 = -1\nr5 = 0\ncall bpf_sk_lookup_tcp\nif r0 == 0 goto +4\n",
            "r6 = r0\nr1 = r0\ncall bpf_sk_release\nr0 = *(u32 *)(r6 + 72)\nr0 = 0\nexit"
        ),
        kernel: Rejects("R6 invalid mem access 'scalar'"),
        ours: Some((Rejects("R6 !read_ok"), "the kernel makes released pointers numbers for root, which would carry addresses; userbpf makes them unreadable, as the kernel does for unprivileged programs")),
    },
];

/// The maps the programs use: (type, name, key size, value size,
/// entries).
const MAPS: [(u32, &str, u32, u32, u32); 11] = [
    (2, "array", 4, 8, 4),
    (1, "hash", 4, 8, 4),
    (3, "progs", 4, 4, 4),
    (8, "cgroups", 4, 4, 4),
    (7, "stacks", 4, 8, 4),
    (14, "devices", 4, 4, 4),
    (27, "events", 0, 0, 4096),
    (6, "percpu", 4, 8, 4),
    (4, "counters", 4, 4, 4),
    (15, "sockets", 4, 4, 4),
    (17, "xsks", 4, 4, 4),
];

fn env(prog_type: ProgramType) -> Env {
    Env {
        prog_type: Some(prog_type),
        attach_type: None,
        context: if prog_type == KPROBE {
            Context::PtRegs
        } else if prog_type == XDP {
            Context::Xdp { egress: false }
        } else if prog_type == FLOW_DISSECTOR {
            Context::FlowDissector
        } else if prog_type == RAW_TP_W {
            Context::RawTracepointWritable
        } else if prog_type == TC {
            Context::SkBuff(SkbKind::Tc)
        } else if prog_type == CGROUP_SKB {
            Context::SkBuff(SkbKind::CgroupSkb)
        } else {
            Context::SkBuff(SkbKind::SocketFilter)
        },
        maps: MAPS
            .iter()
            .map(|&(map_type, name, key_size, value_size, max_entries)| {
                MapInfo::new(name, map_type, key_size, value_size, max_entries)
            })
            .collect(),
        subprogram_names: Vec::new(),
        sleepable: false,
        kernel_btf: None,
        attach_btf_name: None,
        non_scalar_returns: Vec::new(),
        global_functions: Vec::new(),
    }
}

/// The kernel's copies of [`MAPS`], or `None` (the test `test` skipped,
/// with a printed reason) where the kernel is not available.
fn kernel_maps(test: &str) -> Option<Vec<KernelMap>> {
    match kernel_unavailable() {
        None => {}
        Some(why) if kernel_required() => panic!("kernel required but unavailable: {why}"),
        Some(why) => {
            println!("SKIP {test}: {why}");
            return None;
        }
    }
    Some(
        MAPS.iter()
            .map(|&(map_type, name, key_size, value_size, max_entries)| {
                KernelMap::create(name, map_type, key_size, value_size, max_entries, 0, 0)
                    .unwrap_or_else(|e| panic!("creating map {name}: {e}"))
            })
            .collect(),
    )
}

/// The kernel's verdict on `insns` (of `prog_type`, with the maps `fds`):
/// loaded with BTF for the subprograms, as libbpf loads them (the kernel
/// wants it of subprograms that tail-call, and of callbacks), and
/// userbpf's kfunc ids made the kernel's BTF ids.
fn kernel_verdict(prog_type: ProgramType, insns: &[userbpf_vm::insn::Insn], fds: &[i32]) -> String {
    let btf = ProgBtf::for_subprograms(insns).expect("program BTF");
    let mut kernel_insns = insns.to_vec();
    resolve_kfuncs(&mut kernel_insns);
    let request = LoadRequest {
        fd_array: fds,
        btf: btf.as_ref(),
        ..LoadRequest::new("rules", prog_type as u32, &kernel_insns)
    };
    match KernelProgram::load_request(&request) {
        Ok(_) => "accepted".to_string(),
        Err(e) => format!("rejected: {e}\n{}", e.log),
    }
}

/// Whether a verdict's text (`accepted`, or `rejected...` with the
/// message) is `v`.
fn holds(text: &str, v: Verdict) -> bool {
    match v {
        Accepts => text == "accepted",
        Rejects(m) => text.starts_with("rejected") && text.contains(m),
    }
}

#[test]
fn the_kernel_rules_userbpf_follows_give_the_same_verdicts_on_the_kernel() {
    let Some(maps) = kernel_maps("the_kernel_rules_userbpf_follows") else {
        return;
    };
    let fds: Vec<i32> = maps.iter().map(KernelMap::raw_fd).collect();
    let mut failures = Vec::new();
    for rule in RULES {
        let insns =
            userbpf_vm::asm::assemble(rule.source).unwrap_or_else(|e| panic!("{}: {e}", rule.name));
        let program = Program::new(rule.name, insns.clone()).expect("valid program");
        let ours = match check(&program, &env(rule.prog_type), &Options::default(), None) {
            Ok(_) => "accepted".to_string(),
            Err(e) => format!("rejected at {}: {}", e.pc, e.message),
        };
        let kernel = kernel_verdict(rule.prog_type, &insns, &fds);
        let (expected_ours, reason) = rule.ours.unwrap_or((rule.kernel, "same rule"));
        println!(
            "{}: kernel {:?}, userbpf {expected_ours:?} ({reason})",
            rule.name, rule.kernel
        );
        if !holds(&kernel, rule.kernel) {
            failures.push(format!(
                "{}: the kernel was expected to give {:?}, it gave {kernel}",
                rule.name, rule.kernel
            ));
        }
        if !holds(&ours, expected_ours) {
            failures.push(format!(
                "{}: userbpf was expected to give {expected_ours:?}, it gave {ours}",
                rule.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A program on which userbpf's rules against address leaks and
/// uninitialised reads meet the kernel's for a loader without
/// `CAP_PERFMON` (`allow_ptr_leaks` and `allow_uninit_stack` off), which
/// root's kernel relaxes.
struct LeakRule {
    /// What the program shows.
    name: &'static str,
    /// The program type.
    prog_type: ProgramType,
    /// The program (C-like assembly).
    source: &'static str,
    /// The kernel's verdict for root.
    root: Verdict,
    /// The kernel's verdict for a loader with `CAP_BPF` and without
    /// `CAP_PERFMON` (nor `CAP_SYS_ADMIN`).
    no_perfmon: Verdict,
    /// Ours, when it differs from `no_perfmon`, with the reason.
    ours: Option<(Verdict, &'static str)>,
}

const LEAK_RULES: &[LeakRule] = &[
    LeakRule {
        name: "a stack pointer compared with a number",
        prog_type: SOCKET,
        source: "r0 = 0\nr1 = r10\nif r1 > 0x1000 goto +1\nr0 = 1\nexit",
        root: Accepts,
        no_perfmon: Rejects("R1 pointer comparison prohibited"),
        ours: None,
    },
    LeakRule {
        name: "a pointer's bits tested (jset)",
        prog_type: SOCKET,
        source: "r0 = 0\nr1 = r10\nif r1 & 0x1000 goto +1\nr0 = 1\nexit",
        root: Accepts,
        no_perfmon: Rejects("R1 pointer comparison prohibited"),
        ours: None,
    },
    LeakRule {
        name: "a pointer's low half compared with 0",
        prog_type: SOCKET,
        source: "r0 = 0\nr1 = r10\nif w1 == 0 goto +1\nr0 = 1\nexit",
        root: Accepts,
        no_perfmon: Rejects("R1 pointer comparison prohibited"),
        ours: None,
    },
    LeakRule {
        name: "two maps' addresses ordered",
        prog_type: SOCKET,
        source: "r1 = map[idx:0]\nr2 = map[idx:1]\nr0 = 0\nif r1 < r2 goto +1\nr0 = 1\nexit",
        root: Accepts,
        no_perfmon: Rejects("R2 pointer comparison prohibited"),
        ours: None,
    },
    LeakRule {
        name: "a map value and the stack ordered",
        prog_type: SOCKET,
        source: "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nif r0 == 0 goto +4\nr1 = r10\nr1 += -8\nif r0 > r1 goto +1\nr0 = 1\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Rejects("R1 pointer comparison prohibited"),
        ours: None,
    },
    LeakRule {
        name: "two map pointers compared for equality",
        prog_type: SOCKET,
        source: "r1 = map[idx:0]\nr2 = map[idx:1]\nr0 = 0\nif r1 == r2 goto +1\nr0 = 1\nexit",
        root: Accepts,
        no_perfmon: Rejects("R2 pointer comparison prohibited"),
        ours: Some((Accepts, "equality tells whether two pointers are one, not where either lies (at most a guess at their distance confirmed)")),
    },
    LeakRule {
        name: "a map value compared with a stack address for equality (p == &local)",
        prog_type: SOCKET,
        source: "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nif r0 == 0 goto +4\nr1 = r10\nr1 += -8\nif r0 == r1 goto +1\nr0 = 1\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Rejects("R1 pointer comparison prohibited"),
        ours: Some((Accepts, "the same: C code's `p == &local` (libbpf-tools' biosnoop, biostacks)")),
    },
    LeakRule {
        name: "two stack addresses ordered",
        prog_type: SOCKET,
        source: "r0 = 0\nr1 = r10\nr1 += -8\nr2 = r10\nif r1 < r2 goto +1\nr0 = 1\nexit",
        root: Accepts,
        no_perfmon: Rejects("R2 pointer comparison prohibited"),
        ours: Some((Accepts, "two pointers into one region compare as their offsets")),
    },
    LeakRule {
        name: "a null check",
        prog_type: SOCKET,
        source: "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nif r0 == 0 goto +1\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Accepts,
        ours: None,
    },
    LeakRule {
        name: "an atomic add on a spilled pointer",
        prog_type: SOCKET,
        source: "*(u64 *)(r10 - 8) = r10\nr1 = 1\nlock *(u64 *)(r10 - 8) += r1\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Rejects("leaking pointer from stack off -8"),
        ours: None,
    },
    LeakRule {
        name: "an atomic fetch of a spilled pointer",
        prog_type: SOCKET,
        source: "*(u64 *)(r10 - 8) = r10\nr1 = 0\nr1 = atomic_fetch_add((u64 *)(r10 - 8), r1)\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Rejects("leaking pointer from stack off -8"),
        ours: None,
    },
    LeakRule {
        name: "a pointer as a helper's flags",
        prog_type: SOCKET,
        source: "*(u32 *)(r10 - 4) = 0\n*(u64 *)(r10 - 16) = 0\nr1 = map[idx:0]\nr2 = r10\nr2 += -4\nr3 = r10\nr3 += -16\nr4 = r10\ncall bpf_map_update_elem\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Rejects("R4 leaks addr into helper function"),
        ours: None,
    },
    LeakRule {
        name: "a pointer stored into a map value",
        prog_type: SOCKET,
        source: "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nif r0 == 0 goto +1\n*(u64 *)(r0 + 0) = r10\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Rejects("R10 leaks addr into map"),
        ours: None,
    },
    LeakRule {
        name: "a pointer stored into the context",
        prog_type: TC,
        source: "*(u32 *)(r1 + 48) = r10\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Rejects("R10 leaks addr into ctx"),
        ours: None,
    },
    LeakRule {
        name: "a pointer returned",
        prog_type: SOCKET,
        source: "r0 = r10\nexit",
        root: Accepts,
        no_perfmon: Rejects("R0 leaks addr as return value"),
        ours: None,
    },
    LeakRule {
        name: "a pointer's low half copied",
        prog_type: SOCKET,
        source: "w1 = w10\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Rejects("R10 partial copy of pointer"),
        ours: None,
    },
    LeakRule {
        name: "a spilled pointer read back in part",
        prog_type: SOCKET,
        source: "*(u64 *)(r10 - 8) = r10\nr0 = *(u32 *)(r10 - 8)\nr0 = 0\nexit",
        root: Rejects("invalid size of register fill"),
        no_perfmon: Rejects("invalid size of register fill"),
        ours: None,
    },
    LeakRule {
        name: "a spilled pointer written to a ring buffer",
        prog_type: SOCKET,
        source: "*(u64 *)(r10 - 8) = r10\nr1 = map[idx:6]\nr2 = r10\nr2 += -8\nr3 = 8\nr4 = 0\ncall bpf_ringbuf_output\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Rejects("invalid read from stack R2 off -8+0 size 8"),
        ours: None,
    },
    LeakRule {
        name: "pointers into two regions subtracted",
        prog_type: SOCKET,
        source: "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nif r0 == 0 goto +3\nr1 = r10\nr1 -= r0\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Rejects("R1 pointer -= pointer prohibited"),
        ours: None,
    },
    LeakRule {
        name: "two stack addresses subtracted",
        prog_type: SOCKET,
        source: "r1 = r10\nr2 = r10\nr2 += -8\nr1 -= r2\nr0 = r1\nexit",
        root: Accepts,
        no_perfmon: Rejects("R1 pointer -= pointer prohibited"),
        ours: Some((Accepts, "the difference of two pointers into one region is an offset")),
    },
    LeakRule {
        name: "uninitialised stack read",
        prog_type: SOCKET,
        source: "r0 = *(u64 *)(r10 - 8)\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Rejects("invalid read from stack R10 off=-8 size=8"),
        ours: None,
    },
    LeakRule {
        name: "uninitialised stack read within what was written",
        prog_type: SOCKET,
        source: "*(u64 *)(r10 - 16) = 0\nr0 = *(u64 *)(r10 - 8)\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Rejects("invalid read from stack off -8+0 size 8"),
        ours: None,
    },
    LeakRule {
        name: "uninitialised stack given to a helper",
        prog_type: SOCKET,
        source: "r2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Rejects("invalid read from stack R2 off=-4 size=4"),
        ours: None,
    },
    LeakRule {
        name: "uninitialised stack within what was written given to a helper",
        prog_type: SOCKET,
        source: "*(u64 *)(r10 - 16) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = 0\nexit",
        root: Accepts,
        no_perfmon: Rejects("invalid read from stack R2 off -4+0 size 4"),
        ours: None,
    },
];

#[test]
fn userbpf_leak_rules_are_the_kernels_for_loaders_without_cap_perfmon() {
    let Some(maps) = kernel_maps("userbpf_leak_rules") else {
        return;
    };
    let fds: Vec<i32> = maps.iter().map(KernelMap::raw_fd).collect();
    let programs: Vec<Vec<userbpf_vm::insn::Insn>> = LEAK_RULES
        .iter()
        .map(|r| userbpf_vm::asm::assemble(r.source).unwrap_or_else(|e| panic!("{}: {e}", r.name)))
        .collect();
    let root: Vec<String> = LEAK_RULES
        .iter()
        .zip(&programs)
        .map(|(r, insns)| kernel_verdict(r.prog_type, insns, &fds))
        .collect();
    // The same loads from a thread without CAP_PERFMON and CAP_SYS_ADMIN.
    let no_perfmon: Vec<String> = without_cap_perfmon(|| {
        LEAK_RULES
            .iter()
            .zip(&programs)
            .map(|(r, insns)| kernel_verdict(r.prog_type, insns, &fds))
            .collect()
    })
    .expect("a thread without CAP_PERFMON");
    let mut failures = Vec::new();
    for (i, rule) in LEAK_RULES.iter().enumerate() {
        let program = Program::new(rule.name, programs[i].clone()).expect("valid program");
        let ours = match check(&program, &env(rule.prog_type), &Options::default(), None) {
            Ok(_) => "accepted".to_string(),
            Err(e) => format!("rejected at {}: {}", e.pc, e.message),
        };
        let (expected_ours, reason) = rule.ours.unwrap_or((rule.no_perfmon, "the same rule"));
        println!(
            "{}: root {:?}, without CAP_PERFMON {:?}, userbpf {expected_ours:?} ({reason})",
            rule.name, rule.root, rule.no_perfmon
        );
        for (who, got, expected) in [
            ("the kernel (root)", &root[i], rule.root),
            (
                "the kernel without CAP_PERFMON",
                &no_perfmon[i],
                rule.no_perfmon,
            ),
            ("userbpf", &ours, expected_ours),
        ] {
            if !holds(got, expected) {
                failures.push(format!(
                    "{}: {who} was expected to give {expected:?}, it gave {got}",
                    rule.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
