//! What each program type may do, checked by both verifiers: the Linux
//! verifier (as root, `BPF_PROG_LOAD`) and ours must give the same
//! verdicts, except where a listed userbpf rule differs, on
//! - every context access: for each program type whose context userbpf's
//!   verifier models, every load and store of 1, 2, 4 and 8 bytes at every
//!   offset from 8 bytes before the context to 8 bytes past it;
//! - the packet: direct reads and writes, `BPF_LD_[ABS|IND]`;
//! - the helpers each program type may call;
//! - the structures socket lookups return, and the kernel's own
//!   structures (`struct task_struct` from `bpf_get_current_task_btf`).
//!
//! Needs root and bpf(); skips with a printed reason otherwise, unless
//! `USERBPF_REQUIRE_KERNEL=1` (CI), where it fails instead.

use userbpf_kernel::{kernel_required, kernel_unavailable, KernelProgram, LoadRequest};
use userbpf_verifier::{check, Context, Env, Options, VerifyError};
use userbpf_vm::insn::Insn;
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
    "cgroup/dev",
    "cgroup/sysctl",
    "cgroup/sock_create",
    "cgroup/sock_release",
    "cgroup/post_bind4",
    "cgroup/post_bind6",
    "sk_lookup",
    "cgroup/connect4",
    "cgroup/connect6",
    "cgroup/sendmsg4",
    "cgroup/sendmsg6",
    "cgroup/recvmsg6",
    "cgroup/connect_unix",
    "sockops",
    "sk_msg",
    "flow_dissector",
    "sk_reuseport",
    "cgroup/getsockopt",
    "cgroup/setsockopt",
];

/// Skips a test (printing why) when the kernel cannot load programs here,
/// unless `USERBPF_REQUIRE_KERNEL=1`.
fn skip(test: &str) -> bool {
    match kernel_unavailable() {
        None => false,
        Some(why) if kernel_required() => panic!("kernel required but unavailable: {why}"),
        Some(why) => {
            println!("SKIP {test}: {why}");
            true
        }
    }
}

/// The verifier's environment for a program of `kind` without maps.
fn env_for(kind: &ProgramKind) -> Env {
    Env {
        prog_type: Some(kind.prog_type),
        attach_type: kind.attach_type,
        context: Context::for_kind(kind),
        maps: Vec::new(),
        subprogram_names: Vec::new(),
        sleepable: false,
        kernel_btf: None,
        attach_btf_name: None,
        non_scalar_returns: Vec::new(),
        global_functions: Vec::new(),
    }
}

/// `(rN + off)` or `(rN - off)`.
fn at(reg: &str, off: i64) -> String {
    if off < 0 {
        format!("({reg} - {})", off.unsigned_abs())
    } else {
        format!("({reg} + {off})")
    }
}

/// The kernel's load of a program of `kind`, with its expected attach
/// type.
fn request<'a>(name: &'a str, kind: &ProgramKind, insns: &'a [Insn]) -> LoadRequest<'a> {
    LoadRequest {
        expected_attach_type: kind.attach_type.map_or(0, |a| a as u32),
        ..LoadRequest::new(name, kind.prog_type as u32, insns)
    }
}

/// Both verifiers' verdicts on `text` as a program of `kind`: ours, and
/// the kernel's (on a refusal its log when `log`, else only the error: a
/// load without a log is the faster one).
fn verdicts(
    kind: &ProgramKind,
    text: &str,
    log: bool,
) -> (Result<(), Box<VerifyError>>, Result<(), String>) {
    let insns = userbpf_vm::asm::assemble(text).expect("assembles");
    let program = Program::new("p", insns.clone()).expect("valid program");
    let ours = check(&program, &env_for(kind), &Options::default(), None).map(|_| ());
    let request = request("p", kind, &insns);
    let kernel = if log {
        KernelProgram::load_request(&request)
            .map(|_| ())
            .map_err(|e| e.log)
    } else {
        KernelProgram::load_once(&request, 0, 0)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    (ours, kernel)
}

/// The kernel's verdict on a load: on a refusal the error and its log.
fn kernel_verdict(request: &LoadRequest<'_>) -> Result<(), String> {
    KernelProgram::load_request(request)
        .map(|_| ())
        .map_err(|e| format!("{e}\n{}", e.log))
}

/// Our verdict, in words.
fn our_verdict(ours: &Result<(), Box<VerifyError>>) -> String {
    match ours {
        Ok(()) => "accepts".to_string(),
        Err(e) => format!("rejects ({})", e.message),
    }
}

/// Both verifiers' verdicts on `text` as a program of `kind` in `env`,
/// whose maps the kernel has as `fds` (with BTF for its subprograms, as
/// libbpf loads them).
fn verdicts_with_maps(
    kind: &ProgramKind,
    env: &Env,
    fds: &[i32],
    text: &str,
) -> (Result<(), Box<VerifyError>>, Result<(), String>) {
    let insns = userbpf_vm::asm::assemble(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let program = Program::new("p", insns.clone()).expect("valid program");
    let ours = check(&program, env, &Options::default(), None).map(|_| ());
    let btf = userbpf_kernel::ProgBtf::for_subprograms(&insns).expect("program BTF");
    let request = LoadRequest {
        fd_array: fds,
        btf: btf.as_ref(),
        ..request("p", kind, &insns)
    };
    (ours, kernel_verdict(&request))
}

/// A line saying how the verifiers disagree on `what`: the kernel's
/// verdict (the last line of its log) and ours.
fn disagreement(
    what: &str,
    ours: &Result<(), Box<VerifyError>>,
    kernel: &Result<(), String>,
) -> String {
    format!(
        "{what}: kernel {:?}, userbpf {}",
        kernel
            .as_ref()
            .map_err(|l| l.lines().rev().nth(1).unwrap_or("").to_string()),
        our_verdict(ours)
    )
}

/// The running kernel's BTF; `None` (after printing why) when it exposes
/// none and `USERBPF_REQUIRE_KERNEL` is unset.
fn running_kernel_btf(test: &str) -> Option<std::sync::Arc<userbpf_vm::object::btf::Btf>> {
    match userbpf_vm::object::TargetBtf::System.load() {
        Ok(b) if b.origin == userbpf_vm::object::VMLINUX_BTF => Some(b.btf),
        _ if kernel_required() => panic!("kernel required but it exposes no BTF"),
        _ => {
            println!("SKIP {test}: no kernel BTF");
            None
        }
    }
}

/// The kernel structure called `name` in `btf`.
fn kernel_struct(btf: &userbpf_vm::object::btf::Btf, name: &str) -> userbpf_vm::object::btf::Type {
    btf.by_name(name)
        .into_iter()
        .filter_map(|id| btf.get(id))
        .find(|t| t.kind == userbpf_vm::object::btf::Kind::Struct)
        .unwrap_or_else(|| panic!("struct {name}"))
}

/// The byte offset of field `name` of `structure`, if it has one.
fn field_offset(structure: &userbpf_vm::object::btf::Type, name: &str) -> Option<u32> {
    structure
        .members
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.offset / 8)
}

/// Prints how many of `what` were checked (`checked`: refused and
/// accepted by the kernel), and asserts both verdicts occurred and the
/// verifiers agreed on each.
fn report(what: &str, checked: [usize; 2], failures: &[String]) {
    println!(
        "{} {what} checked ({} accepted by the kernel), {} disagreements",
        checked[0] + checked[1],
        checked[1],
        failures.len()
    );
    assert!(checked[0] > 0 && checked[1] > 0, "{checked:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Whether both verifiers accept, or both refuse with our message in the
/// kernel's log (any message, with `any_message`).
fn agree(
    ours: &Result<(), Box<VerifyError>>,
    kernel: &Result<(), String>,
    any_message: bool,
) -> bool {
    match (ours, kernel) {
        (Ok(()), Ok(())) => true,
        (Err(e), Err(log)) => any_message || log.contains(e.message.as_str()),
        _ => false,
    }
}

/// The C type of a `size`-byte access.
fn mem_type(size: u32) -> &'static str {
    match size {
        1 => "u8",
        2 => "u16",
        4 => "u32",
        _ => "u64",
    }
}

/// What an access does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `r0 = *(uN *)(r1 + off)`.
    Load,
    /// `*(uN *)(r1 + off) = r2` with `r2` a number.
    Store,
}

fn source(op: Op, off: i64, size: u32) -> String {
    let ty = mem_type(size);
    let at = at("r1", off);
    match op {
        Op::Load => format!("r0 = *({ty} *){at}\nr0 = 1\nexit"),
        Op::Store => format!("r2 = 0\n*({ty} *){at} = r2\nr0 = 1\nexit"),
    }
}

/// Accesses where userbpf's verdict differs from the kernel's on
/// purpose: the section, the operation, the offset range, the size (0:
/// any), and the reason.
const DIFFERENCES: &[(&str, Op, std::ops::Range<i64>, u32, &str)] = &[
    (TRACEPOINT, Op::Load, -8..0, 0, TRACEPOINT_REASON),
    (TRACEPOINT, Op::Load, 64..2048, 0, TRACEPOINT_REASON),
];

/// A syscall tracepoint: its record is `struct trace_event_raw_sys_enter`
/// (64 bytes).
const TRACEPOINT: &str = "tracepoint/syscalls/sys_enter_openat";
const TRACEPOINT_REASON: &str = "Linux 6.18 does not bound a tracepoint program's context reads by the record at load time (it accepts reads before and past it, and compares only the largest offset with the record's size when the program is attached); userbpf knows the record and refuses reads outside it at load";

fn listed(section: &str, op: Op, off: i64, size: u32) -> Option<&'static str> {
    DIFFERENCES
        .iter()
        .find(|(s, o, range, sz, _)| {
            *s == section && *o == op && range.contains(&off) && (*sz == 0 || *sz == size)
        })
        .map(|d| d.4)
}

#[test]
fn every_context_access_gets_the_kernels_verdict() {
    if skip("every_context_access_gets_the_kernels_verdict") {
        return;
    }
    let mut failures = Vec::new();
    let mut checked = 0usize;
    let mut differences = 0usize;
    for &section in SECTIONS {
        let kind = ProgramKind::from_section(section).expect("a libbpf section");
        let end = i64::from(Context::for_kind(&kind).size().max(192)) + 8;
        for op in [Op::Load, Op::Store] {
            for size in [1u32, 2, 4, 8] {
                for off in -8..end {
                    let (ours, kernel) = verdicts(&kind, &source(op, off, size), false);
                    let ours = ours.map_err(|e| e.message);
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
    if skip("packet_permissions_follow_the_program_type") {
        return;
    }
    let mut failures = Vec::new();
    for &section in SECTIONS {
        let kind = ProgramKind::from_section(section).expect("a libbpf section");
        let context = Context::for_kind(&kind);
        // `data` and `data_end` of `struct __sk_buff`, or `struct xdp_md`.
        // The packet's start and end in the context, and their size.
        let (data, data_end, ty) = match context {
            Context::Xdp { .. } => (0, 4, "u32"),
            Context::SkMsg | Context::SkReuseport => (0, 8, "u64"),
            Context::Sockopt { .. } => (8, 16, "u64"),
            Context::SockOps => (192, 200, "u64"),
            _ => (76, 80, "u32"),
        };
        let bounded = format!(
            "r5 = 1\nr2 = *({ty} *)(r1 + {data})\nr3 = *({ty} *)(r1 + {data_end})\nr4 = r2\nr4 += 1\nif r4 > r3 goto +1\n"
        );
        let cases = [
            (
                "direct read",
                format!("{bounded}r0 = *(u8 *)(r2 + 0)\nr0 = 1\nexit"),
            ),
            (
                "direct write",
                format!("{bounded}*(u8 *)(r2 + 0) = r5\nr0 = 1\nexit"),
            ),
            (
                "BPF_LD_ABS",
                "r6 = r1\nr0 = *(u8 *)skb[0]\nr0 = 1\nexit".to_string(),
            ),
        ];
        for (what, text) in cases {
            let (ours, kernel) = verdicts(&kind, &text, true);
            let ours = ours.map_err(|e| e.message);
            println!(
                "{section} {what}: kernel {}, userbpf {}",
                if kernel.is_ok() { "accepts" } else { "rejects" },
                if ours.is_ok() { "accepts" } else { "rejects" }
            );
            if ours.is_ok() != kernel.is_ok() {
                failures.push(format!(
                    "{section} {what}: kernel {:?}, userbpf {ours:?}",
                    kernel.map_err(|log| log.lines().last().map(str::to_string))
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
    if skip("each_program_type_may_call_the_kernels_helpers") {
        return;
    }
    let mut failures = Vec::new();
    let mut unmodeled = Vec::new();
    for &section in SECTIONS {
        let kind = ProgramKind::from_section(section).expect("a libbpf section");
        let mut missing = Vec::new();
        for id in 1..BPF_FUNC_MAX_ID {
            // The arguments are unset: a verifier that lets the program
            // type call the helper refuses its first argument instead.
            let (ours, kernel) = verdicts(&kind, &format!("call {id}\nr0 = 1\nexit"), true);
            let ours = ours.map_or_else(|e| e.message, |()| "accepted".to_string());
            let kernel = kernel.map_or_else(|log| log, |()| "accepted".to_string());
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

/// A TC program that looks a socket up (`lookup`), and reads `size`
/// bytes at `off` of it (`read`: the socket itself, or its `bpf_tcp_sock`
/// cast) before releasing it.
fn socket_read(lookup: &str, tcp: bool, op: Op, off: i64, size: u32) -> String {
    let ty = mem_type(size);
    let at = at("r0", off);
    let access = match op {
        Op::Load => format!("r1 = *({ty} *){at}"),
        Op::Store => format!("r1 = 0\n*({ty} *){at} = r1"),
    };
    let skip = if op == Op::Store { 8 } else { 7 };
    let prologue = format!(
        "r6 = r1\nr2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr2 = r10\nr2 += -16\nr3 = 12\nr4 = -1\nr5 = 0\ncall {lookup}\n"
    );
    if tcp {
        format!(
            "{prologue}if r0 == 0 goto +{skip}\nr7 = r0\nr1 = r0\ncall bpf_tcp_sock\nif r0 == 0 goto +{}\n{access}\nr1 = r7\ncall bpf_sk_release\nr0 = 0\nexit",
            skip - 6
        )
    } else {
        format!(
            "{prologue}if r0 == 0 goto +{}\n{access}\nr1 = r0\ncall bpf_sk_release\nr0 = 0\nexit",
            skip - 4
        )
    }
}

/// Every read and write of the socket structures (`struct bpf_sock`
/// from `bpf_sk_lookup_tcp`, its common part from `bpf_skc_lookup_tcp`,
/// `struct bpf_tcp_sock` from `bpf_tcp_sock`), at each offset and size,
/// checked by both verifiers.
#[test]
fn socket_fields_are_read_as_the_kernel_reads_them() {
    if skip("socket_fields_are_read_as_the_kernel_reads_them") {
        return;
    }
    let kind = ProgramKind::from_section("tc").expect("a libbpf section");
    let mut failures = Vec::new();
    let mut checked = 0usize;
    for (what, lookup, tcp) in [
        ("sock", "bpf_sk_lookup_tcp", false),
        ("sock_common", "bpf_skc_lookup_tcp", false),
        ("tcp_sock", "bpf_sk_lookup_tcp", true),
    ] {
        for op in [Op::Load, Op::Store] {
            for size in [1u32, 2, 4, 8] {
                for off in -4..120 {
                    let text = socket_read(lookup, tcp, op, off, size);
                    let (ours, kernel) = verdicts(&kind, &text, false);
                    let ours = ours.map_err(|e| format!("{} at pc {}", e.message, e.pc));
                    checked += 1;
                    if ours.is_ok() != kernel.is_ok() {
                        failures.push(format!(
                            "{what} {op:?} off={off} size={size}: kernel {}, userbpf {ours:?}",
                            if kernel.is_ok() { "accepts" } else { "rejects" },
                        ));
                    }
                }
            }
        }
    }
    println!(
        "{checked} socket accesses checked, {} disagreements",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The values a program may return, checked by both verifiers for each
/// program type (and the cgroup types whose context userbpf does not
/// model: the rule does not depend on it).
#[test]
fn return_values_follow_the_program_type() {
    if skip("return_values_follow_the_program_type") {
        return;
    }
    let cgroup_sections = [
        "cgroup_skb/ingress",
        "cgroup_skb/egress",
        "cgroup/connect4",
        "cgroup/recvmsg4",
        "cgroup/getpeername6",
        "cgroup/sock_create",
        "cgroup/dev",
        "cgroup/sysctl",
        "cgroup/getsockopt",
        "sockops",
        "sk_lookup",
    ];
    let mut failures = Vec::new();
    for section in SECTIONS.iter().copied().chain(cgroup_sections) {
        let kind = ProgramKind::from_section(section).expect("a libbpf section");
        for ret in ["-1", "0", "1", "2", "3", "4"] {
            let (ours, kernel) = verdicts(&kind, &format!("r0 = {ret}\nexit"), true);
            let ours = ours.map_err(|e| e.message);
            let agree = match (&ours, &kernel) {
                (Ok(()), Ok(())) => true,
                (Err(m), Err(log)) => log.contains(m.as_str()),
                _ => false,
            };
            if !agree {
                failures.push(format!(
                    "{section} returning {ret}: kernel {:?}, userbpf {ours:?}",
                    kernel.map_err(|log| log.lines().rev().nth(1).unwrap_or("").to_string())
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Both verdicts on `text` as a kprobe program, compared (a refusal by
/// both must carry our message in the kernel's log): on a disagreement, a
/// line naming `what` with both messages (the kernel's last log line).
fn compare_kprobe(text: &str, what: &str, checked: &mut [usize; 2], failures: &mut Vec<String>) {
    let kind = ProgramKind::from_section("kprobe/f").expect("a libbpf section");
    let (ours, kernel) = verdicts(&kind, text, false);
    checked[usize::from(kernel.is_ok())] += 1;
    if ours.is_ok() && kernel.is_ok() {
        return;
    }
    let (_, log) = verdicts(&kind, text, true);
    if let (Err(e), Err(l)) = (&ours, &log) {
        if l.contains(e.message.as_str()) {
            return;
        }
    }
    failures.push(format!(
        "{what}: kernel {:?}, userbpf {:?}",
        log.map_err(|l| l.lines().rev().nth(1).unwrap_or("").to_string()),
        ours.map_err(|e| format!("{} at pc {}", e.message, e.pc))
    ));
}

/// Reads of the kernel's own structures through the pointer
/// `bpf_get_current_task_btf` returns (`struct task_struct`, laid out by
/// the running kernel's BTF), checked by both verifiers: every load of 1,
/// 2, 4 and 8 bytes from 8 bytes before the structure to 16 past it, a
/// store at each field boundary, and for every 8-byte-aligned field the
/// first words of what a pointer there points to, with and without a
/// NULL check (the kernel's RCU lists make some of them possibly NULL).
#[test]
fn kernel_structures_are_read_as_the_kernel_reads_them() {
    if skip("kernel_structures_are_read_as_the_kernel_reads_them") {
        return;
    }
    let Some(btf) = running_kernel_btf("kernel_structures_are_read_as_the_kernel_reads_them")
    else {
        return;
    };
    let task_struct = kernel_struct(&btf, "task_struct");
    let task_size = task_struct.size_or_type;
    let parent = field_offset(&task_struct, "real_parent").unwrap_or(0);
    // `void *stack`: a pointer to something that is not a structure.
    let stack = field_offset(&task_struct, "stack").unwrap_or(32);
    let end = i64::from(task_size) + 16;
    let mut failures = Vec::new();
    // Programs the kernel refuses, and accepts.
    let mut checked = [0usize; 2];
    let task = "call bpf_get_current_task_btf\n";
    for size in [1u32, 2, 4, 8] {
        let ty = mem_type(size);
        for off in -8..end {
            let text = format!("{task}r1 = *({ty} *){}\nr0 = 0\nexit", at("r0", off));
            compare_kprobe(
                &text,
                &format!("load off={off} size={size}"),
                &mut checked,
                &mut failures,
            );
        }
    }
    for off in (0..end).step_by(8) {
        let text = format!("{task}r1 = 0\n*(u64 *){} = r1\nr0 = 0\nexit", at("r0", off));
        compare_kprobe(
            &text,
            &format!("store off={off}"),
            &mut checked,
            &mut failures,
        );
        for check in [false, true] {
            let null_check = if check { "if r1 == 0 goto +1\n" } else { "" };
            for (q, size) in [(0, 8), (8, 8), (16, 4), (24, 8), (-8, 8)] {
                let ty = mem_type(size);
                let text = format!(
                    "{task}r1 = *(u64 *){}\n{null_check}r2 = *({ty} *){}\nr0 = 0\nexit",
                    at("r0", off),
                    at("r1", q)
                );
                compare_kprobe(
                    &text,
                    &format!("field at {off}, then load off={q} size={size} (null check: {check})"),
                    &mut checked,
                    &mut failures,
                );
            }
        }
    }
    // Arithmetic: constant offsets move the pointer (and the offset
    // checked is the sum); a variable one makes it unreadable, but it
    // still goes to bpf_probe_read_kernel as an address (opensnoop's
    // pattern); a write is refused, a comparison with 0 is allowed.
    let shapes = [
        ("constant step", format!("{task}r0 += 8\nr1 = *(u32 *)(r0 + 0)\nr0 = 0\nexit")),
        ("negative step", format!("{task}r0 += -8\nr1 = *(u32 *)(r0 + 8)\nr0 = 0\nexit")),
        ("variable step", format!("r6 = r1\n{task}r7 = *(u64 *)(r6 + 0)\nr7 &= 8\nr0 += r7\nr1 = *(u32 *)(r0 + 0)\nr0 = 0\nexit")),
        ("probe read", format!("{task}r3 = r0\nr3 += 16\nr1 = r10\nr1 += -8\nr2 = 8\ncall bpf_probe_read_kernel\nr0 = 0\nexit")),
        ("null compare", format!("{task}if r0 != 0 goto +2\nr0 = 1\nexit\nr0 = 0\nexit")),
        ("spill and fill", format!("{task}*(u64 *)(r10 - 8) = r0\nr1 = *(u64 *)(r10 - 8)\nr2 = *(u32 *)(r1 + 0)\nr0 = 0\nexit")),
        ("atomic add", format!("{task}r1 = 1\nlock *(u64 *)(r0 + 0) += r1\nr0 = 0\nexit")),
        ("misaligned atomic", format!("{task}r1 = 1\nlock *(u64 *)(r0 + 4) += r1\nr0 = 0\nexit")),
        ("untrusted memory read", format!("r6 = r1\n{task}r1 = *(u64 *)(r0 + {stack})\nr7 = *(u64 *)(r6 + 0)\nr1 += r7\nr1 = *(u64 *)(r1 - 8)\nr0 = 0\nexit")),
        ("task registers", format!("{task}r1 = r0\ncall bpf_task_pt_regs\nr1 = *(u64 *)(r0 + 128)\nr0 = 0\nexit")),
        ("parent's registers", format!("{task}r1 = *(u64 *)(r0 + {parent})\ncall bpf_task_pt_regs\nr0 = 0\nexit")),
        ("registers of a number", format!("{task}r1 = 0\ncall bpf_task_pt_regs\nr0 = 0\nexit")),
        ("registers of a moved task", format!("{task}r1 = r0\nr1 += 8\ncall bpf_task_pt_regs\nr0 = 0\nexit")),
        ("registers of registers", format!("{task}r1 = r0\ncall bpf_task_pt_regs\nr1 = r0\ncall bpf_task_pt_regs\nr0 = 0\nexit")),
        ("registers of a task at a variable offset", format!("r6 = r1\n{task}r7 = *(u64 *)(r6 + 0)\nr7 &= 8\nr1 = r0\nr1 += r7\ncall bpf_task_pt_regs\nr0 = 0\nexit")),
        ("task stack", format!("{task}r1 = r0\nr2 = r10\nr2 += -64\nr3 = 64\nr4 = 0\ncall bpf_get_task_stack\nif r0 s> 64 goto +2\nr0 = 0\nexit\nr0 = *(u64 *)(r0 + 0)\nexit")),
        ("task stack of a number", "r1 = 0\nr2 = r10\nr2 += -64\nr3 = 64\nr4 = 0\ncall bpf_get_task_stack\nr0 = 0\nexit".to_string()),
        ("branch snapshot", "r1 = r10\nr1 += -64\nr2 = 64\nr3 = 0\ncall bpf_get_branch_snapshot\nr0 = 0\nexit".to_string()),
        ("untrusted memory write", format!("{task}r1 = *(u64 *)(r0 + {stack})\nr2 = 0\n*(u64 *)(r1 + 0) = r2\nr0 = 0\nexit")),
        ("untrusted memory as helper memory", format!("{task}r1 = *(u64 *)(r0 + {stack})\nr2 = 8\ncall bpf_trace_printk\nr0 = 0\nexit")),
        ("32-bit arithmetic", format!("{task}w0 += 8\nr0 = 0\nexit")),
    ];
    for (what, text) in &shapes {
        compare_kprobe(text, what, &mut checked, &mut failures);
    }
    // Both verdicts occur (the sweep reaches fields and misses them).
    report("kernel structure accesses", checked, &failures);
}

/// Programs taking the `bpf_spin_lock` or the `bpf_timer` of map values,
/// checked by both verifiers (verdict, and our message in the kernel's
/// log): the maps are created with BTF that places them (an array with
/// the lock at byte 4 of 16-byte values, a hash with it at byte 0, an
/// array without one, an array with a timer at byte 8 of 32-byte values).
#[test]
fn spin_locks_are_held_as_the_kernel_holds_them() {
    use userbpf_kernel::{KernelMap, ValueField};
    use userbpf_verifier::MapInfo;
    if skip("spin_locks_are_held_as_the_kernel_holds_them") {
        return;
    }
    // (type, name, key size, value size, lock offset, timer offset)
    type Shape = (u32, &'static str, u32, u32, Option<u32>, Option<u32>);
    let shapes: [Shape; 4] = [
        (2, "locked", 4, 16, Some(4), None),
        (1, "locked_hash", 4, 8, Some(0), None),
        (2, "plain", 4, 8, None, None),
        (2, "timed", 4, 32, None, Some(8)),
    ];
    let maps: Vec<KernelMap> = shapes
        .iter()
        .map(|&(t, name, k, v, lock, timer)| {
            let fields: Vec<ValueField> = lock
                .map(ValueField::SpinLock)
                .into_iter()
                .chain(timer.map(ValueField::Timer))
                .collect();
            if fields.is_empty() {
                KernelMap::create(name, t, k, v, 4, 0, 0)
            } else {
                KernelMap::create_with_fields(name, [t, k, v, 4, 0], 0, &fields)
            }
        })
        .collect::<Result<_, _>>()
        .expect("maps");
    let fds: Vec<i32> = maps.iter().map(KernelMap::raw_fd).collect();
    let infos: Vec<MapInfo> = shapes
        .iter()
        .map(
            |&(map_type, name, key_size, value_size, spin_lock, timer)| MapInfo {
                spin_lock,
                timer,
                ..MapInfo::new(name, map_type, key_size, value_size, 4)
            },
        )
        .collect();
    let lookup = |map: u32| {
        format!(
            "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:{map}]\ncall bpf_map_lookup_elem\n"
        )
    };
    let locked = lookup(0);
    let lock = "r6 = r0\nr1 = r0\nr1 += 4\ncall bpf_spin_lock\n";
    let unlock = "r1 = r6\nr1 += 4\ncall bpf_spin_unlock\n";
    let end = "r0 = 0\nexit";
    // `prefix`, then if r0 is NULL a jump to the final exit, else `body`.
    let slots = |body: &str| {
        body.lines()
            .map(|l| {
                if l.contains("map[") || l.contains(" ll") {
                    2
                } else {
                    1
                }
            })
            .sum::<usize>()
    };
    let guarded = |prefix: &str, body: &str| {
        format!("{prefix}if r0 == 0 goto +{}\n{body}{end}", slots(body) + 1)
    };
    let cases: Vec<(&str, &str, String)> = vec![
        ("lock and unlock", "tc", guarded(&locked, &format!("{lock}{unlock}"))),
        ("no unlock", "tc", guarded(&locked, lock)),
        ("two locks", "tc", guarded(&locked, &format!("{lock}r1 = r6\nr1 += 4\ncall bpf_spin_lock\n{unlock}"))),
        ("unlock only", "tc", guarded(&locked, &format!("r6 = r0\n{unlock}"))),
        ("wrong offset", "tc", guarded(&locked, "r1 = r0\ncall bpf_spin_lock\n")),
        ("variable offset", "tc", guarded(&format!("r7 = *(u32 *)(r1 + 0)\nr7 &= 4\n{locked}"), "r1 = r0\nr1 += r7\ncall bpf_spin_lock\n")),
        ("helper while locked", "tc", guarded(&locked, &format!("{lock}call bpf_ktime_get_ns\n{unlock}"))),
        ("field while locked", "tc", guarded(&locked, &format!("{lock}r1 = *(u64 *)(r6 + 8)\nr1 += 1\n*(u64 *)(r6 + 8) = r1\n{unlock}"))),
        ("lock word read", "tc", guarded(&locked, "r1 = *(u32 *)(r0 + 4)\n")),
        ("lock word overlapped", "tc", guarded(&locked, "r1 = *(u64 *)(r0 + 0)\n")),
        ("lock word written by a helper", "tc", guarded(&locked, "r1 = r0\nr2 = 8\nr3 = 0\ncall bpf_probe_read_kernel\n")),
        ("map without a lock", "tc", guarded(&lookup(2), lock)),
        ("hash map's lock", "tc", guarded(&lookup(1), "r6 = r0\nr1 = r0\ncall bpf_spin_lock\nr1 = r6\ncall bpf_spin_unlock\n")),
        ("unlock through another lookup", "tc", guarded(&locked, &guarded("r7 = r0\n*(u32 *)(r10 - 4) = 1\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\n", &format!("r6 = r0\nr1 = r7\nr1 += 4\ncall bpf_spin_lock\n{unlock}")).replace("r0 = 0\nexit", "") )),
        ("unchecked lookup", "tc", format!("{}r1 = r0\ncall bpf_spin_lock\n{end}", lookup(1))),
        ("packet load while locked", "tc", guarded(&format!("r9 = r1\n{locked}"), &format!("{lock}r6 = r9\nr0 = *(u8 *)skb[0]\nr6 = r0\n{unlock}"))),
        ("subprogram while locked", "tc", format!("{}if r0 == 0 goto +8\n{lock}call pc+5\n{unlock}{end}\nr0 = 0\nexit", locked)),
        ("socket filter", "socket", format!("{locked}{end}")),
        ("kprobe", "kprobe/f", format!("{locked}{end}")),
        ("xdp", "xdp", guarded(&locked, &format!("{lock}{unlock}"))),
        // The lock taken in a subprogram, released by its caller.
        (
            "lock in a subprogram",
            "tc",
            format!("{locked}if r0 == 0 goto +9\nr6 = r0\nr1 = r0\nr1 += 4\ncall pc+6\nr1 = r6\nr1 += 4\ncall bpf_spin_unlock\nr0 = 1\nexit\nexit\ncall bpf_spin_lock\nr0 = 0\nexit"),
        ),
        // Two lookups of one map: locking through one and unlocking
        // through the other on one path is caught, whatever is pruned.
        (
            "lock ids across paths",
            "tc",
            format!("r6 = *(u32 *)(r1 + 8)\n{locked}if r0 == 0 goto +19\nr7 = r0\n{locked}if r0 == 0 goto +11\nr8 = r0\nr1 = r7\nr1 += 4\ncall bpf_spin_lock\nif r6 == 0 goto +1\ngoto +1\nr7 = r8\nr1 = r7\nr1 += 4\ncall bpf_spin_unlock\nr0 = 0\nexit"),
        ),
        ("timer", "tc", guarded(&lookup(3), "r1 = r0\nr1 += 8\nr2 = map[idx:3]\nr3 = 1\ncall bpf_timer_init\n")),
        ("timer at the wrong offset", "tc", guarded(&lookup(3), "r1 = r0\nr2 = map[idx:3]\nr3 = 1\ncall bpf_timer_init\n")),
        ("timer in a map without one", "tc", guarded(&lookup(0), "r1 = r0\nr1 += 8\nr2 = map[idx:0]\nr3 = 1\ncall bpf_timer_init\n")),
        ("timer bytes read", "tc", guarded(&lookup(3), "r1 = *(u64 *)(r0 + 16)\n")),
        ("bytes around the timer", "tc", guarded(&lookup(3), "r1 = *(u64 *)(r0 + 0)\nr1 = *(u64 *)(r0 + 24)\n")),
        ("timer in a kprobe", "kprobe/f", format!("{}{end}", lookup(3))),
    ];
    let mut failures = Vec::new();
    for (what, section, text) in &cases {
        let kind = ProgramKind::from_section(section).expect("a libbpf section");
        let env = Env {
            maps: infos.clone(),
            ..env_for(&kind)
        };
        let (ours, kernel) = verdicts_with_maps(&kind, &env, &fds, text);
        // The map without a lock is created without BTF, so the kernel
        // asks for BTF first; userbpf, which knows from the object's BTF
        // whether a value holds a lock, says it has none.
        println!("{what}: userbpf {}", our_verdict(&ours));
        let own_message = *what == "map without a lock";
        if !agree(&ours, &kernel, own_message) {
            failures.push(format!(
                "{what}: kernel {:?}, userbpf {:?}",
                kernel.map_err(|l| l.lines().rev().nth(1).unwrap_or("").to_string()),
                ours.map_err(|e| format!("{} at pc {}", e.message, e.pc))
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `bpf_copy_from_user` and `bpf_copy_from_user_task` may sleep: only
/// sleepable programs may call them (and not from their timers'
/// callbacks), checked by both verifiers on a kprobe and on sleepable
/// uprobes (loaded with `BPF_F_SLEEPABLE`).
#[test]
fn sleeping_helpers_need_sleepable_programs() {
    if skip("sleeping_helpers_need_sleepable_programs") {
        return;
    }
    const BPF_F_SLEEPABLE: u32 = 1 << 4;
    let copy = "r1 = r10\nr1 += -8\nr2 = 8\nr3 = 0\ncall bpf_copy_from_user\nr0 = 0\nexit";
    // bpf_copy_from_user_task(dst, size, user_ptr, task, flags).
    let copy_task = "call bpf_get_current_task_btf\nr4 = r0\nr1 = r10\nr1 += -8\nr2 = 8\nr3 = 0\nr5 = 0\ncall bpf_copy_from_user_task\nr0 = 0\nexit";
    let mut failures = Vec::new();
    let sections = [
        "kprobe/f",
        "uprobe/bin:f",
        "uprobe.s/bin:f",
        "uprobe.multi.s/bin:f",
    ];
    for (section, text) in sections.iter().flat_map(|s| [(*s, copy), (*s, copy_task)]) {
        let kind = ProgramKind::from_section(section).expect("a libbpf section");
        let insns = userbpf_vm::asm::assemble(text).expect("assembles");
        let program = Program::new("p", insns.clone()).expect("valid program");
        let env = Env {
            sleepable: kind.sleepable,
            ..env_for(&kind)
        };
        let ours = check(&program, &env, &Options::default(), None).map(|_| ());
        let request = LoadRequest {
            prog_flags: if kind.sleepable { BPF_F_SLEEPABLE } else { 0 },
            ..request("p", &kind, &insns)
        };
        let kernel = kernel_verdict(&request);
        println!(
            "{section}: kernel {}, userbpf {}",
            if kernel.is_ok() { "accepts" } else { "rejects" },
            our_verdict(&ours)
        );
        if !agree(&ours, &kernel, false) {
            failures.push(format!("{section}: kernel {kernel:?}, userbpf {ours:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Reads through a map's pointer of the map's own kernel structure
/// (`struct bpf_array`, `struct bpf_htab`, ...), checked by both verifiers
/// on socket filters: every load of 1, 2, 4 and 8 bytes from 8 bytes
/// before the structure to 8 past it, a store, and what a pointer field
/// read there points to.
#[test]
fn map_structures_are_read_as_the_kernel_reads_them() {
    use userbpf_kernel::KernelMap;
    use userbpf_verifier::MapInfo;
    if skip("map_structures_are_read_as_the_kernel_reads_them") {
        return;
    }
    let Some(btf) = running_kernel_btf("map_structures_are_read_as_the_kernel_reads_them") else {
        return;
    };
    // (type, name, key size, value size, max entries, kernel structure)
    let shapes: [(u32, &str, u32, u32, u32, &str); 5] = [
        (2, "array", 4, 8, 4, "bpf_array"),
        (1, "hash", 4, 8, 4, "bpf_htab"),
        (6, "percpu", 4, 8, 4, "bpf_array"),
        (3, "progs", 4, 4, 4, "bpf_array"),
        (27, "events", 0, 0, 4096, "bpf_ringbuf_map"),
    ];
    let maps: Vec<KernelMap> = shapes
        .iter()
        .map(|&(t, name, k, v, n, _)| KernelMap::create(name, t, k, v, n, 0, 0))
        .collect::<Result<_, _>>()
        .expect("maps");
    let fds: Vec<i32> = maps.iter().map(KernelMap::raw_fd).collect();
    let kind = ProgramKind::from_section("socket").expect("a libbpf section");
    let env = Env {
        maps: shapes
            .iter()
            .map(|&(t, name, k, v, n, _)| MapInfo::new(name, t, k, v, n))
            .collect(),
        ..env_for(&kind)
    };
    let mut failures = Vec::new();
    let mut checked = [0usize; 2];
    let mut compare = |what: String, text: String| {
        let (ours, kernel) = verdicts_with_maps(&kind, &env, &fds, &text);
        checked[usize::from(kernel.is_ok())] += 1;
        if !agree(&ours, &kernel, false) {
            failures.push(disagreement(&what, &ours, &kernel));
        }
    };
    for (i, &(.., structure)) in shapes.iter().enumerate() {
        let size = kernel_struct(&btf, structure).size_or_type;
        let end = i64::from(size) + 8;
        for bytes in [1u32, 2, 4, 8] {
            let ty = mem_type(bytes);
            for off in -8..end {
                compare(
                    format!("{structure} load off={off} size={bytes}"),
                    format!(
                        "r1 = map[idx:{i}]\nr0 = *({ty} *){}\nr0 = 0\nexit",
                        at("r1", off)
                    ),
                );
            }
        }
        for off in (0..end).step_by(8) {
            compare(
                format!("{structure} store off={off}"),
                format!(
                    "r1 = map[idx:{i}]\nr2 = 0\n*(u64 *){} = r2\nr0 = 0\nexit",
                    at("r1", off)
                ),
            );
            compare(
                format!("{structure} field at {off}, then load"),
                format!(
                    "r1 = map[idx:{i}]\nr1 = *(u64 *){}\nr0 = *(u32 *)(r1 + 0)\nr0 = 0\nexit",
                    at("r1", off)
                ),
            );
        }
    }
    report("map structure accesses", checked, &failures);
}

/// Task and cgroup local storage (`bpf_task_storage_get`/`_delete`,
/// `bpf_cgrp_storage_get`/`_delete` on maps created with BTF), checked by
/// both verifiers on kprobes and socket filters: the task or cgroup (or
/// NULL), the initial value (or NULL), the value returned, and the maps
/// each helper takes.
#[test]
fn task_storage_is_used_as_the_kernel_uses_it() {
    use userbpf_kernel::KernelMap;
    use userbpf_verifier::MapInfo;
    if skip("task_storage_is_used_as_the_kernel_uses_it") {
        return;
    }
    const BPF_F_NO_PREALLOC: u32 = 1;
    let maps = [
        KernelMap::create_with_fields("tasks", [29, 4, 8, 0, BPF_F_NO_PREALLOC], 0, &[])
            .expect("task storage"),
        KernelMap::create("array", 2, 4, 8, 4, 0, 0).expect("array"),
        KernelMap::create_with_fields("cgroups", [32, 4, 8, 0, BPF_F_NO_PREALLOC], 0, &[])
            .expect("cgroup storage"),
    ];
    let fds: Vec<i32> = maps.iter().map(KernelMap::raw_fd).collect();
    let infos = vec![
        MapInfo {
            max_entries: 0,
            ..MapInfo::new("tasks", 29, 4, 8, 0)
        },
        MapInfo::new("array", 2, 4, 8, 4),
        MapInfo {
            max_entries: 0,
            ..MapInfo::new("cgroups", 32, 4, 8, 0)
        },
    ];
    let task = "call bpf_get_current_task_btf\nr2 = r0\n";
    // The offsets of task_struct.cgroups and css_set.dfl_cgrp.
    let field = |structure: &str, name: &str| {
        let btf = userbpf_vm::object::TargetBtf::System
            .load()
            .expect("BTF")
            .btf;
        field_offset(&kernel_struct(&btf, structure), name).expect("field")
    };
    let (cgroups, dfl) = (
        field("task_struct", "cgroups"),
        field("css_set", "dfl_cgrp"),
    );
    let get = |task: &str, value: &str, map: u32| {
        format!("{task}{value}r1 = map[idx:{map}]\nr4 = 1\ncall bpf_task_storage_get\nif r0 == 0 goto +2\nr1 = 7\n*(u64 *)(r0 + 0) = r1\nr0 = 0\nexit")
    };
    let cases: Vec<(&str, String)> = vec![
        ("get", get(task, "r3 = 0\n", 0)),
        ("get for no task", get("r2 = 0\n", "r3 = 0\n", 0)),
        ("get for a number", get("r2 = 5\n", "r3 = 0\n", 0)),
        ("get with a value", get(task, "*(u64 *)(r10 - 8) = 0\nr3 = r10\nr3 += -8\n", 0)),
        ("get with an uninitialised value", get(task, "r3 = r10\nr3 += -8\n", 0)),
        ("get from an array", get(task, "r3 = 0\n", 1)),
        ("delete", format!("{task}r1 = map[idx:0]\ncall bpf_task_storage_delete\nr0 = 0\nexit")),
        ("delete for no task", "r2 = 0\nr1 = map[idx:0]\ncall bpf_task_storage_delete\nr0 = 0\nexit".to_string()),
        ("lookup", "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = 0\nexit".to_string()),
        ("unchecked value", format!("{task}r3 = 0\nr1 = map[idx:0]\nr4 = 1\ncall bpf_task_storage_get\nr1 = *(u64 *)(r0 + 0)\nr0 = 0\nexit")),
        // The current cgroup: task->cgroups->dfl_cgrp, RCU-protected.
        ("cgroup get", format!("call bpf_get_current_task_btf\nr2 = *(u64 *)(r0 + {cgroups})\nr2 = *(u64 *)(r2 + {dfl})\nr3 = 0\nr1 = map[idx:2]\nr4 = 1\ncall bpf_cgrp_storage_get\nr0 = 0\nexit")),
        ("cgroup delete", format!("call bpf_get_current_task_btf\nr2 = *(u64 *)(r0 + {cgroups})\nr2 = *(u64 *)(r2 + {dfl})\nr1 = map[idx:2]\ncall bpf_cgrp_storage_delete\nr0 = 0\nexit")),
        ("cgroup get for a task", format!("{task}r3 = 0\nr1 = map[idx:2]\nr4 = 1\ncall bpf_cgrp_storage_get\nr0 = 0\nexit")),
        ("cgroup get from task storage", format!("call bpf_get_current_task_btf\nr2 = *(u64 *)(r0 + {cgroups})\nr2 = *(u64 *)(r2 + {dfl})\nr3 = 0\nr1 = map[idx:0]\nr4 = 1\ncall bpf_cgrp_storage_get\nr0 = 0\nexit")),
    ];
    let mut failures = Vec::new();
    for section in ["kprobe/f", "socket"] {
        let kind = ProgramKind::from_section(section).expect("a libbpf section");
        let env = Env {
            maps: infos.clone(),
            ..env_for(&kind)
        };
        for (what, text) in &cases {
            let (ours, kernel) = verdicts_with_maps(&kind, &env, &fds, text);
            println!("{section} {what}: userbpf {}", our_verdict(&ours));
            // userbpf's rule (no helper reads uninitialised stack, which the
            // kernel allows root): the only listed difference.
            let uninit_rule = *what == "get with an uninitialised value"
                && kernel.is_ok()
                && ours
                    .as_ref()
                    .is_err_and(|e| e.message.contains("invalid read from stack"));
            if !uninit_rule && !agree(&ours, &kernel, false) {
                failures.push(disagreement(&format!("{section} {what}"), &ours, &kernel));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `bpf_find_vma` calls back with the task's memory area (`struct
/// vm_area_struct`), checked by both verifiers on kprobes: the callback
/// reads it, returns 0 or 1, and the task must be a kernel task.
#[test]
fn find_vma_calls_back_as_the_kernel_does() {
    if skip("find_vma_calls_back_as_the_kernel_does") {
        return;
    }
    let kind = ProgramKind::from_section("kprobe/f").expect("a libbpf section");
    let env = env_for(&kind);
    let call = |task: &str, body: &str| {
        format!("{task}r2 = 0\nr3 = func[cb]\nr4 = 0\nr5 = 0\ncall bpf_find_vma\nr0 = 0\nexit\ncb:\n{body}")
    };
    let task = "call bpf_get_current_task_btf\nr1 = r0\n";
    let cases = [
        (
            "reads the area",
            call(task, "r0 = *(u64 *)(r2 + 0)\nr0 = 0\nexit"),
        ),
        ("returns 1", call(task, "r0 = 1\nexit")),
        ("returns 2", call(task, "r0 = 2\nexit")),
        (
            "writes the area",
            call(task, "r0 = 0\n*(u64 *)(r2 + 0) = r0\nexit"),
        ),
        (
            "reads the task",
            call(task, "r0 = *(u32 *)(r1 + 0)\nr0 = 0\nexit"),
        ),
        ("for a number", call("r1 = 0\n", "r0 = 0\nexit")),
    ];
    let mut failures = Vec::new();
    for (what, text) in &cases {
        let (ours, kernel) = verdicts_with_maps(&kind, &env, &[], text);
        println!("{what}: userbpf {}", our_verdict(&ours));
        if !agree(&ours, &kernel, false) {
            failures.push(disagreement(what, &ours, &kernel));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
