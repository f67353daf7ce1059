//! What each program type may do, checked by both verifiers: the Linux
//! verifier (as root, `BPF_PROG_LOAD`) and ours must give the same
//! verdicts, except where a listed userbpf rule differs, on
//! - every context access: for each program type whose context userbpf's
//!   verifier models, every load and store of 1, 2, 4 and 8 bytes at every
//!   offset from 8 bytes before the context to 8 bytes past it;
//! - the packet: direct reads and writes, `BPF_LD_[ABS|IND]`;
//! - the helpers each program type may call.
//!
//! Needs root and bpf(); skips with a printed reason otherwise, unless
//! `USERBPF_REQUIRE_KERNEL=1` (CI), where it fails instead.

use userbpf_kernel::{kernel_required, kernel_unavailable, KernelProgram, LoadRequest};
use userbpf_verifier::{check, Context, Env, Options};
use userbpf_vm::object::ProgramKind;
use userbpf_vm::Program;

/// The section names of the program types swept (libbpf's names).
const SECTIONS: &[&str] = &[
    "socket",
    "tc",
    "action",
    "cgroup/skb",
    "lwt_in",
    "lwt_out",
    "lwt_xmit",
    "lwt_seg6local",
    "sk_skb",
    "xdp",
    "xdp/devmap",
    "kprobe/f",
    "perf_event",
    "raw_tp/x",
    TRACEPOINT,
];

/// The sections above whose context is a `struct __sk_buff`.
const SKB_SECTIONS: &[&str] = &[
    "socket",
    "tc",
    "action",
    "cgroup/skb",
    "lwt_in",
    "lwt_out",
    "lwt_xmit",
    "lwt_seg6local",
    "sk_skb",
];

/// What an access does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `r0 = *(uN *)(r1 + off)`.
    Load,
    /// `*(uN *)(r1 + off) = r2` with `r2` a number.
    Store,
}

fn source(op: Op, off: i64, size: u32) -> String {
    let ty = match size {
        1 => "u8",
        2 => "u16",
        4 => "u32",
        _ => "u64",
    };
    let at = if off < 0 {
        format!("(r1 - {})", -off)
    } else {
        format!("(r1 + {off})")
    };
    match op {
        Op::Load => format!("r0 = *({ty} *){at}\nr0 = 0\nexit"),
        Op::Store => format!("r2 = 0\n*({ty} *){at} = r2\nr0 = 0\nexit"),
    }
}

/// Accesses where userbpf's verdict differs from the kernel's on
/// purpose or for now: the section (`*`: every `__sk_buff` one), the
/// operation, the offset range, the size (0: any), and the reason.
const DIFFERENCES: &[(&str, Op, std::ops::Range<i64>, u32, &str)] = &[(
    "*",
    Op::Load,
    168..169,
    8,
    "`__sk_buff->sk` is a socket pointer (PTR_TO_SOCK_COMMON_OR_NULL); userbpf's verifier does not model socket pointers yet and refuses the read",
), (
    TRACEPOINT,
    Op::Load,
    -8..0,
    0,
    TRACEPOINT_REASON,
), (
    TRACEPOINT,
    Op::Load,
    64..2048,
    0,
    TRACEPOINT_REASON,
)];

/// A syscall tracepoint: its record is `struct trace_event_raw_sys_enter`
/// (64 bytes).
const TRACEPOINT: &str = "tracepoint/syscalls/sys_enter_openat";
const TRACEPOINT_REASON: &str = "Linux 6.18 does not bound a tracepoint program's context reads by the record at load time (it accepts reads before and past it, and compares only the largest offset with the record's size when the program is attached); userbpf knows the record and refuses reads outside it at load";

fn listed(section: &str, op: Op, off: i64, size: u32) -> Option<&'static str> {
    DIFFERENCES
        .iter()
        .find(|(s, o, range, sz, _)| {
            (*s == section || (*s == "*" && SKB_SECTIONS.contains(&section)))
                && *o == op
                && range.contains(&off)
                && (*sz == 0 || *sz == size)
        })
        .map(|d| d.4)
}

#[test]
fn every_context_access_gets_the_kernels_verdict() {
    match kernel_unavailable() {
        None => {}
        Some(why) if kernel_required() => panic!("kernel required but unavailable: {why}"),
        Some(why) => {
            println!("SKIP every_context_access_gets_the_kernels_verdict: {why}");
            return;
        }
    }
    let mut failures = Vec::new();
    let mut checked = 0usize;
    let mut differences = 0usize;
    for &section in SECTIONS {
        let kind = ProgramKind::from_section(section).expect("a libbpf section");
        let context = Context::for_kind(&kind);
        let env = Env {
            prog_type: Some(kind.prog_type),
            context,
            maps: Vec::new(),
            subprogram_names: Vec::new(),
        };
        let end = i64::from(context.size().max(192)) + 8;
        for op in [Op::Load, Op::Store] {
            for size in [1u32, 2, 4, 8] {
                for off in -8..end {
                    let text = source(op, off, size);
                    let insns = userbpf_vm::asm::assemble(&text).expect("assembles");
                    let program = Program::new("ctx", insns.clone()).expect("valid program");
                    let ours = check(&program, &env, &Options::default(), None)
                        .map(|_| ())
                        .map_err(|e| e.message);
                    let request = LoadRequest {
                        expected_attach_type: kind.attach_type.map_or(0, |a| a as u32),
                        ..LoadRequest::new("ctx", kind.prog_type as u32, &insns)
                    };
                    let kernel = KernelProgram::load_once(&request, 0, 0).map(|_| ());
                    checked += 1;
                    if ours.is_ok() == kernel.is_ok() {
                        continue;
                    }
                    if listed(section, op, off, size).is_some() {
                        differences += 1;
                        continue;
                    }
                    failures.push(format!(
                        "{section} {op:?} off={off} size={size}: kernel {}, userbpf {}",
                        match &kernel {
                            Ok(()) => "accepts".to_string(),
                            Err(e) => format!("rejects ({e})"),
                        },
                        match &ours {
                            Ok(()) => "accepts".to_string(),
                            Err(m) => format!("rejects ({m})"),
                        }
                    ));
                }
            }
        }
    }
    println!(
        "{checked} context accesses checked, {differences} listed differences, {} disagreements",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What each program type may do with its packet, checked by both
/// verifiers: read it and write it through `data`/`data_end` pointers
/// (`may_access_direct_pkt_data`), and load from it with
/// `BPF_LD_[ABS|IND]` (`may_access_skb`).
#[test]
fn packet_permissions_follow_the_program_type() {
    match kernel_unavailable() {
        None => {}
        Some(why) if kernel_required() => panic!("kernel required but unavailable: {why}"),
        Some(why) => {
            println!("SKIP packet_permissions_follow_the_program_type: {why}");
            return;
        }
    }
    let mut failures = Vec::new();
    for &section in SECTIONS {
        let kind = ProgramKind::from_section(section).expect("a libbpf section");
        let context = Context::for_kind(&kind);
        let env = Env {
            prog_type: Some(kind.prog_type),
            context,
            maps: Vec::new(),
            subprogram_names: Vec::new(),
        };
        // `data` and `data_end` of `struct __sk_buff`, or `struct xdp_md`.
        let (data, data_end) = match context {
            Context::Xdp { .. } => (0, 4),
            _ => (76, 80),
        };
        let bounded = format!(
            "r5 = 1\nr2 = *(u32 *)(r1 + {data})\nr3 = *(u32 *)(r1 + {data_end})\nr4 = r2\nr4 += 1\nif r4 > r3 goto +1\n"
        );
        let cases = [
            (
                "direct read",
                format!("{bounded}r0 = *(u8 *)(r2 + 0)\nr0 = 0\nexit"),
            ),
            (
                "direct write",
                format!("{bounded}*(u8 *)(r2 + 0) = r5\nr0 = 0\nexit"),
            ),
            (
                "BPF_LD_ABS",
                "r6 = r1\nr0 = *(u8 *)skb[0]\nr0 = 0\nexit".to_string(),
            ),
        ];
        for (what, text) in cases {
            let insns = userbpf_vm::asm::assemble(&text).expect("assembles");
            let program = Program::new("pkt", insns.clone()).expect("valid program");
            let ours = check(&program, &env, &Options::default(), None).map_err(|e| e.message);
            let request = LoadRequest {
                expected_attach_type: kind.attach_type.map_or(0, |a| a as u32),
                ..LoadRequest::new("pkt", kind.prog_type as u32, &insns)
            };
            let kernel = KernelProgram::load_request(&request);
            println!(
                "{section} {what}: kernel {}, userbpf {}",
                if kernel.is_ok() { "accepts" } else { "rejects" },
                if ours.is_ok() { "accepts" } else { "rejects" }
            );
            if ours.is_ok() != kernel.is_ok() {
                failures.push(format!(
                    "{section} {what}: kernel {:?}, userbpf {ours:?}",
                    kernel
                        .map(|_| ())
                        .map_err(|e| e.log.lines().last().map(str::to_string))
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Helpers userbpf allows where the kernel does not, on purpose: the
/// user-space superset of uprobes, USDT and syscall hooks (whose programs
/// are kprobe, tracepoint and raw tracepoint programs):
/// `bpf_override_return`, `bpf_get_func_arg`, `bpf_get_func_ret`,
/// `bpf_get_func_arg_cnt`, `bpf_get_retval`, `bpf_set_retval`.
const USER_SPACE_HELPERS: &[i32] = &[58, 183, 184, 185, 186, 187];
const USER_SPACE_SECTIONS: &[&str] = &["kprobe/f", "raw_tp/x", TRACEPOINT];
/// `bpf_probe_write_user`: tracing programs may call it, but a kernel
/// locked down against it (`LOCKDOWN_BPF_WRITE_USER`, as this machine's
/// is) refuses it; userbpf allows it (in user space it writes the traced
/// process's own memory).
const LOCKDOWN_HELPERS: &[i32] = &[36];
const TRACING_SECTIONS: &[&str] = &["kprobe/f", "raw_tp/x", "perf_event", TRACEPOINT];

/// `__BPF_FUNC_MAX_ID` of Linux 6.18's `enum bpf_func_id`.
const BPF_FUNC_MAX_ID: i32 = 212;

/// Whether a verifier's refusal of `call N` says the program type may not
/// call the helper (rather than refusing its arguments).
fn refuses_helper(message: &str) -> bool {
    message.contains("cannot use helper") || message.contains("invalid func")
}

#[test]
fn each_program_type_may_call_the_kernels_helpers() {
    match kernel_unavailable() {
        None => {}
        Some(why) if kernel_required() => panic!("kernel required but unavailable: {why}"),
        Some(why) => {
            println!("SKIP each_program_type_may_call_the_kernels_helpers: {why}");
            return;
        }
    }
    let mut failures = Vec::new();
    let mut unmodeled = Vec::new();
    for &section in SECTIONS {
        let kind = ProgramKind::from_section(section).expect("a libbpf section");
        let env = Env {
            prog_type: Some(kind.prog_type),
            context: Context::for_kind(&kind),
            maps: Vec::new(),
            subprogram_names: Vec::new(),
        };
        let mut missing = Vec::new();
        for id in 1..BPF_FUNC_MAX_ID {
            // The arguments are unset: a verifier that lets the program
            // type call the helper refuses its first argument instead.
            let insns =
                userbpf_vm::asm::assemble(&format!("call {id}\nr0 = 0\nexit")).expect("assembles");
            let program = Program::new("helper", insns.clone()).expect("valid program");
            let ours = match check(&program, &env, &Options::default(), None) {
                Ok(_) => "accepted".to_string(),
                Err(e) => e.message,
            };
            let request = LoadRequest {
                expected_attach_type: kind.attach_type.map_or(0, |a| a as u32),
                ..LoadRequest::new("helper", kind.prog_type as u32, &insns)
            };
            let kernel = match KernelProgram::load_request(&request) {
                Ok(_) => "accepted".to_string(),
                Err(e) => e.log,
            };
            let k = !refuses_helper(&kernel);
            if ours.contains("no prototype") {
                if k {
                    missing.push(id);
                }
                continue;
            }
            let u = !refuses_helper(&ours);
            if k == u
                || (u && USER_SPACE_HELPERS.contains(&id) && USER_SPACE_SECTIONS.contains(&section))
                || (u && LOCKDOWN_HELPERS.contains(&id) && TRACING_SECTIONS.contains(&section))
            {
                continue;
            }
            failures.push(format!(
                "{section} helper #{id}: kernel {}, userbpf {} ({})",
                if k { "allows" } else { "refuses" },
                if u { "allows" } else { "refuses" },
                ours.lines().next().unwrap_or("")
            ));
        }
        unmodeled.push(format!("{section}: {missing:?}"));
    }
    println!(
        "helpers the kernel allows that have no prototype in userbpf's verifier (refused):\n{}",
        unmodeled.join("\n")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
