//! userbpf's verifier against the kernel's, on the same socket filters,
//! from 2 instructions to loops the kernel processes ~1,000,000
//! instructions of (one in registers, one that keeps a whole 512-byte
//! stack), and a rejected program. userbpf: `check` with the
//! socket filter's `Env`; the kernel: `BPF_PROG_LOAD` of a
//! `BPF_PROG_TYPE_SOCKET_FILTER` without a log, then closing the fd (as
//! root), the cost a loader pays for the kernel's verdict (it includes the
//! kernel's JIT and bookkeeping, which the kernel's own `verification time`
//! statistic, printed beside it, does not).
//!
//! Criterion measures each side; with `cargo bench` a final pass prints a
//! table of medians, the speedup (kernel / userbpf: above 1, userbpf is
//! faster; the target is above 1 on every size) and both
//! verifiers' processed-instruction counts (the kernel's from one load
//! with a `BPF_LOG_STATS` log, outside the timed loops).

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use userbpf_benches::median_ns;
use userbpf_kernel::{KernelProgram, LoadRequest, SysError, LOG_STATS};
use userbpf_verifier::{check, Context, Env, Options, Report, SkbKind, VerifyError};
use userbpf_vm::object::ProgramType;
use userbpf_vm::{asm, Program};

/// `BPF_PROG_TYPE_SOCKET_FILTER`.
const SOCKET_FILTER: u32 = ProgramType::SocketFilter as u32;

/// Iterations of the largest loop: the kernel processes 6 instructions per
/// iteration plus 4, 996,004 in all, under its 1,000,000 limit
/// (`BPF_COMPLEXITY_LIMIT_INSNS`); 166,667 iterations would pass it.
const BIG_LOOP: u32 = 166_000;

/// One program verified by both.
struct Case {
    /// Name in the reports.
    name: &'static str,
    /// What it is.
    what: String,
    /// The program.
    program: Program,
    /// Whether both verifiers must accept it.
    accepted: bool,
}

/// `s = s*31 + (x ^ i)` for `i` in `0..n`, `x` the packet length
/// (`__sk_buff.len`, offset 0).
fn hash_loop(n: u32) -> String {
    format!(
        "ldxw %r2, [%r1]
         mov %r0, 0
         mov %r3, 0
     loop:
         mul %r0, 31
         mov %r4, %r2
         xor %r4, %r3
         add %r0, %r4
         add %r3, 1
         jlt %r3, {n}, loop
         exit"
    )
}

/// Iterations of the stack loop: 5 instructions each after 67 that
/// write the whole 512-byte stack, plus the exit: 995,068 processed
/// instructions.
const STACK_LOOP: u32 = 199_000;

/// A loop that keeps a whole 512-byte stack (64 slots written first) and
/// adds its counter into one spilled slot each iteration, as code that
/// keeps its variables on the stack does: each state the verifiers keep
/// along the loop holds that stack.
fn stack_loop(n: u32) -> String {
    let mut s = String::from("mov %r1, 0\n");
    for slot in 1..=64 {
        s += &format!("stxdw [%r10-{}], %r1\n", slot * 8);
    }
    s += &format!(
        "mov %r3, 0
     loop:
         ldxdw %r0, [%r10-16]
         add %r0, %r3
         stxdw [%r10-16], %r0
         add %r3, 1
         jlt %r3, {n}, loop
         exit"
    );
    s
}

fn program(name: &str, source: &str) -> Program {
    let insns = asm::assemble(source).unwrap_or_else(|e| panic!("{name}: {e}"));
    Program::new(name, insns).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn cases() -> Vec<Case> {
    let straight = format!("mov %r0, 0\n{}exit", "add %r0, 1\n".repeat(998));
    vec![
        Case {
            name: "tiny",
            what: "r0 = 0; exit (2 insns)".into(),
            program: program("tiny", "mov %r0, 0\nexit"),
            accepted: true,
        },
        Case {
            name: "straight_1k",
            what: "1,000-instruction straight line".into(),
            program: program("straight_1k", &straight),
            accepted: true,
        },
        Case {
            name: "loop_1k",
            what: "1,000 x s = s*31 + (len ^ i)".into(),
            program: program("loop_1k", &hash_loop(1000)),
            accepted: true,
        },
        Case {
            name: "loop_1m",
            what: format!("{BIG_LOOP} x s = s*31 + (len ^ i)"),
            program: program("loop_1m", &hash_loop(BIG_LOOP)),
            accepted: true,
        },
        Case {
            name: "stack_1m",
            what: format!("{STACK_LOOP} x fp[-16] += i, 512-byte stack"),
            program: program("stack_1m", &stack_loop(STACK_LOOP)),
            accepted: true,
        },
        Case {
            name: "rejected",
            what: "out-of-bounds stack read (r10 - 520)".into(),
            program: program("rejected", "ldxdw %r0, [%r10-520]\nexit"),
            accepted: false,
        },
    ]
}

/// A socket filter's environment: `r1` is a `struct __sk_buff`, no packet
/// access, no maps.
fn socket_filter_env() -> Env {
    Env {
        prog_type: Some(ProgramType::SocketFilter),
        context: Context::SkBuff(SkbKind::SocketFilter),
        ..Env::raw(0)
    }
}

/// Our verdict.
fn ours(p: &Program, env: &Env) -> Result<Report, Box<VerifyError>> {
    check(p, env, &Options::default(), None)
}

/// The kernel's verdict: one `BPF_PROG_LOAD` without a log (the fd closes
/// when the program drops).
fn kernel(p: &Program) -> Result<KernelProgram, SysError> {
    let req = LoadRequest::new(p.name(), SOCKET_FILTER, p.insns());
    KernelProgram::load_once(&req, 0, 0).map(|(prog, _)| prog)
}

/// Why the kernel cannot be measured here, if it cannot.
fn kernel_unavailable() -> Option<String> {
    userbpf_kernel::kernel_unavailable()
}

fn bench(c: &mut Criterion) {
    let env = socket_filter_env();
    let with_kernel = kernel_unavailable().is_none();
    for case in cases() {
        let mut g = c.benchmark_group(format!("verifier/{}", case.name));
        if case.name.ends_with("_1m") {
            g.sample_size(10).measurement_time(Duration::from_secs(10));
        }
        let p = &case.program;
        g.bench_function("userbpf", |b| {
            b.iter(|| black_box(ours(black_box(p), &env).is_ok()))
        });
        if with_kernel {
            g.bench_function("kernel", |b| {
                b.iter(|| black_box(kernel(black_box(p)).is_ok()))
            });
        }
        g.finish();
    }
}

/// The kernel's statistics of `p` from loads with a `BPF_LOG_STATS` log:
/// processed instructions, and the median of 7 loads' own verification
/// time in µs (`verification time N usec`: `bpf_check` alone, without the
/// JIT and the rest of the syscall).
fn kernel_stats(p: &Program) -> (Option<u64>, Option<u64>) {
    let req = LoadRequest::new(p.name(), SOCKET_FILTER, p.insns());
    let mut processed = None;
    let mut times = Vec::new();
    for _ in 0..7 {
        let log = match KernelProgram::load_once(&req, LOG_STATS, 1 << 16) {
            Ok((_, log)) => log,
            Err(e) => e.log,
        };
        let number_after = |prefix: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        };
        processed = number_after("processed ");
        times.extend(number_after("verification time "));
    }
    times.sort_unstable();
    (processed, times.get(times.len() / 2).copied())
}

fn table() {
    let env = socket_filter_env();
    let kernel_missing = kernel_unavailable();
    let batch = Duration::from_millis(20);
    println!();
    println!(
        "Verifier: userbpf `check` vs the kernel's BPF_PROG_LOAD + close of a socket filter \
         (medians of 21 batches of ~20 ms, at least 1 call each; kern verif: the kernel's own \
         `verification time`, median of 7 loads)"
    );
    println!(
        "{:<12} {:>12} {:>12} {:>8} {:>12} {:>12} {:>12}  what",
        "program",
        "userbpf µs",
        "kernel µs",
        "speedup",
        "ours insns",
        "kernel insns",
        "kern verif µs"
    );
    let mut worst: Option<(f64, &str)> = None;
    for case in cases() {
        let p = &case.program;
        // The verdicts first: both must be what the case says.
        let our_report = ours(p, &env);
        let (our_insns, our_ok) = match &our_report {
            Ok(r) => (r.stats.processed, true),
            Err(e) => (e.stats.processed, false),
        };
        if our_ok != case.accepted {
            println!(
                "{:<12} userbpf {}: {}",
                case.name,
                if our_ok { "accepts" } else { "rejects" },
                our_report.err().map_or(String::new(), |e| e.to_string())
            );
        }
        let our_ns = median_ns(
            || {
                black_box(ours(p, &env).is_ok());
            },
            21,
            batch,
        );
        let (kernel_ns, k_insns, k_time) = match &kernel_missing {
            Some(_) => (None, None, None),
            None => {
                let verdict = kernel(p);
                if verdict.is_ok() != case.accepted {
                    println!(
                        "{:<12} the kernel {}: {}",
                        case.name,
                        if verdict.is_ok() {
                            "accepts"
                        } else {
                            "rejects"
                        },
                        verdict.err().map_or(String::new(), |e| e.to_string())
                    );
                }
                let ns = median_ns(
                    || {
                        black_box(kernel(p).is_ok());
                    },
                    21,
                    batch,
                );
                let (insns, time) = kernel_stats(p);
                (Some(ns), insns, time)
            }
        };
        let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let speedup = kernel_ns.map(|k| k / our_ns);
        if let Some(s) = speedup {
            if worst.is_none_or(|(w, _)| s < w) {
                worst = Some((s, case.name));
            }
        }
        println!(
            "{:<12} {:>12.1} {:>12} {:>8} {:>12} {:>12} {:>12}  {}",
            case.name,
            our_ns / 1e3,
            kernel_ns.map_or("-".to_string(), |k| format!("{:.1}", k / 1e3)),
            speedup.map_or("-".to_string(), |s| format!("{s:.2}x")),
            our_insns,
            show(k_insns),
            show(k_time),
            case.what
        );
    }
    match (kernel_missing, worst) {
        (Some(why), _) => println!("kernel not measured: {why}"),
        (None, Some((s, name))) => println!(
            "slowest relative to the kernel: {name} at {s:.2}x (target: above 1x on every size)"
        ),
        (None, None) => {}
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    // Only when benchmarking for real (`cargo bench`), not in `cargo test`.
    if std::env::args().any(|a| a == "--bench") {
        table();
    }
}
