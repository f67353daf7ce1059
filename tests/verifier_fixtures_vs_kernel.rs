//! userbpf's verifier against the Linux verifier on every program of the
//! project's BPF fixtures (`tests/bpf/*.o`, or the objects in
//! `USERBPF_FIXTURES_DIR`): each program the kernel can load here is loaded
//! by the kernel backend (its maps created, `BPF_PROG_LOAD` with a
//! statistics log) and checked by our verifier, and the two verdicts must
//! agree: both accept, or both reject with our message in the kernel's log.
//!
//! The differences this host shows are listed in [`DIFFERENCES`], each with
//! its reason (a userbpf rule, a feature of user space, or something the
//! host's kernel or our kernel backend lacks). The test fails on any other
//! disagreement, and when a listed difference stops happening, so the table
//! stays true. A table of every program's two verdicts is printed
//! (`--nocapture`), and, for each program only root's kernel accepts, the
//! verdict of a kernel without `CAP_PERFMON` (whose rules against address
//! leaks and uninitialised reads are userbpf's), loaded from a thread
//! without that capability.
//!
//! Needs root and bpf(); skips with a printed reason otherwise, unless
//! `USERBPF_REQUIRE_KERNEL=1` (CI), where it fails instead.

use std::path::PathBuf;

use userbpf_kernel::{
    kernel_required, kernel_unavailable, load_logged, without_cap_perfmon, SysError, LOG_STATS,
};
use userbpf_verifier::{check, Env, Options};
use userbpf_vm::object::{Object, ProgramType};

/// One side's verdict in [`DIFFERENCES`].
#[derive(Clone, Copy, Debug)]
enum Verdict {
    /// The verifier accepts the program.
    Accepts,
    /// The verifier rejects it with a message containing this text (ours:
    /// the error's message; the kernel's: the failed call, its errno and
    /// its log).
    Rejects(&'static str),
}

use Verdict::{Accepts, Rejects};

/// An expected disagreement between the two verifiers on this host.
#[derive(Debug)]
struct Difference {
    /// Fixture object file name.
    object: &'static str,
    /// Program name.
    program: &'static str,
    /// Our verdict.
    ours: Verdict,
    /// The kernel's verdict (through the kernel backend).
    kernel: Verdict,
    /// Why the two differ.
    reason: &'static str,
}

/// The differences between our verdicts and the kernel's, each with its
/// reason.
const DIFFERENCES: &[Difference] = &[
    // Both refuse a packet pointer read after a call of a global function
    // that may change the packet (`clear_all_pkt_pointers`), in other
    // words: root's kernel turns stale packet pointers into numbers, which
    // userbpf makes unreadable instead (as the kernel does for
    // unprivileged programs), since such numbers carry addresses.
    Difference {
        object: "globals.bpf.o",
        program: "stale_packet",
        ours: Rejects("R6 !read_ok"),
        kernel: Rejects("R6 invalid mem access 'scalar'"),
        reason: "same verdict, other words: stale packet pointers are unreadable in userbpf \
                 (numbers carrying addresses in root's kernel)",
    },
    // Kernel imprecision: the loop counter `i` lives in a 4-byte stack slot
    // (fp-28) whose address is passed to bpf_map_update_elem. The kernel
    // keeps only 8-byte-aligned spills of scalars, so it forgets `i`
    // (STACK_MISC) and sees the loop come back to the same state; we track
    // narrow spills of numbers and prove the loop ends. (So this fixture
    // does not load in the kernel with libbpf either.)
    Difference {
        object: "foreach.bpf.o",
        program: "walk",
        ours: Accepts,
        kernel: Rejects("infinite loop detected"),
        reason: "kernel imprecision: a u32 loop counter spilled to an unaligned 4-byte stack slot \
                 is forgotten (STACK_MISC), so the kernel sees the loop repeat its state; \
                 we track narrow spills and prove the loop ends",
    },
    // A user-space-only helper: userbpf's uprobes may override the probed
    // function's return value; the kernel offers bpf_override_return only
    // to kprobes on error-injectable kernel functions, and only with
    // CONFIG_BPF_KPROBE_OVERRIDE, which this kernel lacks.
    Difference {
        object: "hooks.bpf.o",
        program: "probe",
        ours: Accepts,
        kernel: Rejects("cannot use helper bpf_override_return#58"),
        reason: "user-space-only helper: bpf_override_return on a uprobe (the kernel has it \
                 only for kprobes, with CONFIG_BPF_KPROBE_OVERRIDE, not set here)",
    },
    // The same user-space-only helper in the uprobe fault injector.
    Difference {
        object: "uprobe.bpf.o",
        program: "fail_unlucky",
        ours: Accepts,
        kernel: Rejects("cannot use helper bpf_override_return#58"),
        reason: "user-space-only helper: bpf_override_return on a uprobe, as for hooks.bpf.o's \
                 `probe`",
    },
    // bpf_set_retval / bpf_get_retval on a uprobe: the kernel's cgroup
    // helpers, which userbpf's in-process hooks take as an int-valued
    // bpf_override_return.
    Difference {
        object: "uprobe.bpf.o",
        program: "fail_with_retval",
        ours: Accepts,
        kernel: Rejects("cannot use helper bpf_set_retval#187"),
        reason: "user-space-only helper: bpf_set_retval on a uprobe makes the function return \
                 the int (the kernel has it for cgroup programs only)",
    },
    // The syscall policy: bpf_override_return on a sys_enter tracepoint
    // denies the call in userbpf's in-process hooks (a user-space
    // seccomp/LSM); the kernel has no such helper for tracepoints.
    Difference {
        object: "syscall_policy.bpf.o",
        program: "deny_prefix",
        ours: Accepts,
        kernel: Rejects("cannot use helper bpf_override_return#58"),
        reason: "user-space-only helper: bpf_override_return on an in-process sys_enter hook \
                 denies the call",
    },
    // A userbpf rule: a syscall program's context is a plain buffer the
    // caller passes (the runtime gives at least max_ctx_offset bytes), so we
    // take variable offsets into it; the kernel refuses any variable context
    // offset. Here the bpf_loop callback reads `c->args->values[i]`.
    Difference {
        object: "loop.bpf.o",
        program: "histogram",
        ours: Accepts,
        kernel: Rejects("variable ctx access"),
        reason: "userbpf rule: variable offsets into a syscall program's context (a plain buffer \
                 of at least max_ctx_offset bytes) are allowed; the kernel refuses variable \
                 context offsets",
    },
    // A kernel rule for sleepable programs (libbpf marks SEC("syscall")
    // sleepable): only maps whose elements are safe without RCU. User space
    // has no RCU; a perf event array is as safe as any map there.
    Difference {
        object: "perf.bpf.o",
        program: "emit",
        ours: Accepts,
        kernel: Rejects(
            "Sleepable programs can only use array, hash, ringbuf and local storage maps",
        ),
        reason: "kernel rule for sleepable programs (SEC(\"syscall\") is sleepable): no perf \
                 event array (RCU); user space has no such constraint",
    },
    // A userbpf rule: a syscall program's context is memory helpers may
    // read and write (bounded by the context's size and counted in
    // max_ctx_offset); the kernel's helpers take no context pointer.
    Difference {
        object: "printk.bpf.o",
        program: "probes",
        ours: Accepts,
        kernel: Rejects("R1 type=ctx expected=fp"),
        reason: "userbpf rule: a syscall program's context is plain memory helpers may write \
                 (bpf_snprintf into ctx->out); the kernel's helpers refuse a context pointer",
    },
];

/// Objects userbpf's loader refuses, so that neither verifier sees their
/// programs (the kernel backend loads from the same object model): file,
/// text of the loader's error, reason.
const UNLOADABLE_OBJECTS: &[(&str, &str, &str)] = &[(
    "ksym.bpf.o",
    "__ksym",
    "a `__ksym` variable extern names a kernel symbol (bpf_prog_active), which a \
     user-space program cannot reach; the loader refuses the object, naming the extern",
)];

/// Program types the kernel refuses to load on this host (see
/// ../shared/NOTES.md): their programs are checked by our verifier only.
fn not_loadable_here(t: ProgramType) -> Option<&'static str> {
    match t {
        ProgramType::Tracing | ProgramType::Lsm | ProgramType::Ext => Some(
            "fentry/fexit/fmod_ret/freplace/LSM loads are refused here (EPERM, lockdown policy)",
        ),
        ProgramType::StructOps => Some("struct_ops programs need their struct's BTF at load"),
        _ => None,
    }
}

fn kernel_or_skip(test: &str) -> bool {
    match kernel_unavailable() {
        None => true,
        Some(why) if kernel_required() => panic!("{test}: kernel required but unavailable: {why}"),
        Some(why) => {
            println!("SKIP {test}: {why}");
            false
        }
    }
}

/// The fixture objects, sorted (`USERBPF_FIXTURES_DIR` or tests/bpf).
fn fixture_objects() -> Vec<PathBuf> {
    let dir = match std::env::var_os("USERBPF_FIXTURES_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bpf"),
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    v.sort();
    v
}

/// A verifier's verdict on one program.
#[derive(Debug)]
enum Outcome {
    /// Accepted after processing this many instructions (None: unknown).
    Accepted(Option<u64>),
    /// Rejected: the short reason, and the full text to match against.
    Rejected { reason: String, text: String },
}

impl Outcome {
    fn matches(&self, v: Verdict) -> bool {
        match (self, v) {
            (Outcome::Accepted(_), Accepts) => true,
            (Outcome::Rejected { text, .. }, Rejects(m)) => text.contains(m),
            _ => false,
        }
    }

    fn short(&self) -> String {
        match self {
            Outcome::Accepted(Some(n)) => format!("accepted ({n} insns)"),
            Outcome::Accepted(None) => "accepted".to_string(),
            Outcome::Rejected { reason, .. } => format!("rejected: {reason}"),
        }
    }
}

/// The kernel log's `processed N insns` count.
fn processed(log: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.starts_with("processed "))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The kernel's verdict from the backend's load.
fn kernel_outcome(result: Result<String, SysError>) -> Outcome {
    match result {
        Ok(log) => Outcome::Accepted(processed(&log)),
        Err(e) => {
            // The reason is the last line before the statistics.
            let reason = e
                .log
                .lines()
                .rfind(|l| {
                    let l = l.trim();
                    !l.is_empty()
                        && !l.starts_with("processed ")
                        && !l.starts_with("verification time")
                        && !l.starts_with("stack depth")
                        && !l.starts_with("cur state:")
                        && !l.starts_with("old state:")
                })
                .map_or_else(|| format!("{}: {}", e.cmd, e.source), str::to_string);
            Outcome::Rejected {
                reason,
                text: format!("{}: {}\n{}", e.cmd, e.source, e.log),
            }
        }
    }
}

#[test]
fn fixture_verdicts_agree_with_the_kernel() {
    if !kernel_or_skip("fixture_verdicts_agree_with_the_kernel") {
        return;
    }
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut seen_differences = vec![false; DIFFERENCES.len()];
    let mut compared = 0usize;
    // Programs only root's kernel accepts: the verdict of a kernel without
    // CAP_PERFMON, and whether it refuses them in our words.
    let mut root_only: Vec<(String, String, bool)> = Vec::new();
    for path in fixture_objects() {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let listed = UNLOADABLE_OBJECTS.iter().find(|(f, _, _)| *f == file);
        let obj = match (Object::parse(&file, &bytes), listed) {
            (Ok(obj), None) => obj,
            (Err(e), Some((_, m, why))) if e.to_string().contains(m) => {
                rows.push([file, "*".into(), "object refused".into(), (*why).into()]);
                continue;
            }
            (Ok(_), Some(_)) => {
                failures.push(format!("{file}: listed as unloadable but loads now"));
                continue;
            }
            (Err(e), _) => {
                failures.push(format!("{file}: {e}"));
                continue;
            }
        };
        for p in &obj.programs {
            let prog = match p.to_program() {
                Ok(prog) => prog,
                Err(e) => {
                    failures.push(format!("{file} {}: {e}", p.name));
                    continue;
                }
            };
            let env = Env::for_object(&obj, p);
            let ours = match check(&prog, &env, &Options::default(), None) {
                Ok(report) => Outcome::Accepted(Some(report.stats.processed)),
                Err(e) => Outcome::Rejected {
                    reason: format!("pc {}: {}", e.pc, e.message),
                    text: e.message.clone(),
                },
            };
            if let Some(why) = not_loadable_here(p.kind.prog_type) {
                rows.push([
                    file.clone(),
                    p.name.clone(),
                    ours.short(),
                    format!("not loaded: {why}"),
                ]);
                continue;
            }
            let kernel =
                kernel_outcome(load_logged(&obj, p, LOG_STATS, 1 << 20).map(|(_, log)| log));
            compared += 1;
            if let (
                Outcome::Rejected {
                    text: ours_text, ..
                },
                Outcome::Accepted(_),
            ) = (&ours, &kernel)
            {
                // Only root's kernel accepts: is it a rule of a kernel
                // without CAP_PERFMON (leaks, uninitialised stack)?
                let unprivileged = without_cap_perfmon(|| {
                    kernel_outcome(load_logged(&obj, p, LOG_STATS, 1 << 20).map(|(_, log)| log))
                })
                .expect("a thread without CAP_PERFMON");
                let same = matches!(&unprivileged, Outcome::Rejected { text, .. }
                    if text.contains(ours_text.as_str()));
                root_only.push((format!("{file} {}", p.name), unprivileged.short(), same));
            }
            rows.push([file.clone(), p.name.clone(), ours.short(), kernel.short()]);
            let agree = match (&ours, &kernel) {
                (Outcome::Accepted(_), Outcome::Accepted(_)) => true,
                (Outcome::Rejected { text: m, .. }, Outcome::Rejected { text, .. }) => {
                    text.contains(m.as_str())
                }
                _ => false,
            };
            let listed = DIFFERENCES
                .iter()
                .position(|d| d.object == file && d.program == p.name);
            match (agree, listed) {
                (true, None) => {}
                (true, Some(_)) => failures.push(format!(
                    "{file} {}: listed as a difference, but both now agree ({})",
                    p.name,
                    ours.short()
                )),
                (false, Some(i))
                    if ours.matches(DIFFERENCES[i].ours)
                        && kernel.matches(DIFFERENCES[i].kernel) =>
                {
                    seen_differences[i] = true;
                }
                (false, _) => failures.push(format!(
                    "{file} {}: unlisted disagreement\n    ours:   {}\n    kernel: {}",
                    p.name,
                    ours.short(),
                    kernel.short()
                )),
            }
        }
    }
    for (d, seen) in DIFFERENCES.iter().zip(&seen_differences) {
        if !seen
            && !failures
                .iter()
                .any(|f| f.starts_with(&format!("{} {}:", d.object, d.program)))
        {
            failures.push(format!(
                "{} {}: listed difference did not happen (ours {:?}, kernel {:?})",
                d.object, d.program, d.ours, d.kernel
            ));
        }
    }

    println!(
        "{:<18} {:<14} {:<48} kernel",
        "object", "program", "userbpf"
    );
    for [object, program, ours, kernel] in &rows {
        println!("{object:<18} {program:<14} {ours:<48} {kernel}");
    }
    if !root_only.is_empty() {
        let refused = root_only
            .iter()
            .filter(|(_, v, _)| v.starts_with("rejected"))
            .count();
        let same = root_only.iter().filter(|(_, _, same)| *same).count();
        println!(
            "of the {} programs only root's kernel accepts, the kernel without CAP_PERFMON \
             refuses {refused}, {same} with userbpf's message:",
            root_only.len()
        );
        for (program, verdict, same) in &root_only {
            let words = if *same { "same message" } else { "" };
            println!("  {program:<60} {verdict} {words}");
        }
    }
    println!("{compared} programs compared with the kernel; expected differences:");
    for d in DIFFERENCES {
        println!("  {} {}: {}", d.object, d.program, d.reason);
    }
    assert!(compared >= 35, "only {compared} programs compared");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
