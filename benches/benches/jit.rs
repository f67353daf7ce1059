//! The JIT suite: every program on our interpreter, our JIT (verified and
//! checked, and the baseline code a tiered compile runs first), rbpf
//! 0.4's interpreter and x86 JIT, the same algorithm in
//! native Rust, and (as root) the kernel's JIT through `BPF_PROG_TEST_RUN`
//! with repeat, all in this process. Criterion measures each; with
//! `--bench` a final pass prints a table of medians, the ratios the JIT
//! issue targets, and compile time per instruction.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use userbpf_benches::engines::{
    baseline_us_per_insn, bytecode, compile_us_per_insn, interpreter, jit_baseline, jit_checked,
    jit_verified, median_us_per_insn, verify,
};
use userbpf_benches::median_ns;
use userbpf_benches::suite::{kernel_source, suite, SuiteProgram};
use userbpf_jit::{Options, Tier};
use userbpf_verifier::Verified;
use userbpf_vm::interp::PreparedProgram;

fn bench(c: &mut Criterion) {
    for p in suite() {
        let mut g = c.benchmark_group(format!("jit/{}", p.name));
        let mut mem = (p.input)();
        let mut vm = jit_verified(&p);
        g.bench_function("userbpf_jit_verified", |b| {
            b.iter(|| black_box(vm.run(black_box(&mut mem)).unwrap()))
        });
        let mut vm = jit_checked(&p);
        g.bench_function("userbpf_jit_checked", |b| {
            b.iter(|| black_box(vm.run(black_box(&mut mem)).unwrap()))
        });
        let mut vm = jit_baseline(&p);
        g.bench_function("userbpf_jit_baseline", |b| {
            b.iter(|| black_box(vm.run(black_box(&mut mem)).unwrap()))
        });
        let code = bytecode(&p);
        let mut rvm = rbpf::EbpfVmRaw::new(Some(&code)).unwrap();
        rvm.jit_compile().unwrap();
        g.bench_function("rbpf_jit", |b| {
            // SAFETY: the suite's programs stay inside their memory.
            b.iter(|| black_box(unsafe { rvm.execute_program_jit(black_box(&mut mem)) }.unwrap()))
        });
        g.bench_function("native", |b| {
            b.iter(|| black_box((p.native)(black_box(&mut mem))))
        });
        g.finish();
    }
}

/// The kernel's JIT on the program: the median of 21 repeated test runs
/// of ~20 ms (each the mean ns per run), or why it does not run.
fn kernel_ns(p: &SuiteProgram) -> Result<f64, String> {
    use userbpf_kernel::{KernelMap, KernelProgram};
    if let Some(why) = userbpf_kernel::kernel_unavailable() {
        return Err(why);
    }
    let input = (p.input)();
    let map = if input.is_empty() {
        None
    } else {
        let m = KernelMap::create("suite", 2, 4, input.len() as u32, 1, 0, 0)
            .map_err(|e| format!("map: {}", e.source))?;
        m.update(&0u32.to_le_bytes(), &input, 0)
            .map_err(|e| format!("map: {}", e.source))?;
        Some(m)
    };
    let fd = map.as_ref().map_or(0, |m| m.raw_fd());
    let mut insns = userbpf_vm::asm::assemble(&kernel_source(p, fd)).map_err(|e| e.to_string())?;
    if map.is_some() {
        insns[0].src = userbpf_vm::insn::op::PSEUDO_MAP_FD;
    }
    const BPF_PROG_TYPE_XDP: u32 = 6;
    let prog =
        KernelProgram::load(p.name, BPF_PROG_TYPE_XDP, &insns, "GPL", 0, &[]).map_err(|e| {
            // The verifier's reason is the line before its closing summary.
            let lines: Vec<&str> = e.log.lines().filter(|l| !l.trim().is_empty()).collect();
            let last = lines[lines.len().saturating_sub(2)..].join(" / ");
            format!("the verifier refuses it ({}: {last})", e.source)
        })?;
    let packet = [0u8; 64];
    // Batches like ours: repeats for ~20 ms each, the median of 21.
    let (_, first) = prog
        .test_run_packet_timed(&packet, 10)
        .map_err(|e| e.to_string())?;
    let repeat = (20_000_000 / u64::from(first.max(1))).clamp(10, 1_000_000) as u32;
    let mut runs = Vec::with_capacity(21);
    for _ in 0..21 {
        let (_, ns) = prog
            .test_run_packet_timed(&packet, repeat)
            .map_err(|e| e.to_string())?;
        runs.push(f64::from(ns));
    }
    runs.sort_by(f64::total_cmp);
    let median = runs[runs.len() / 2];
    // XDP test runs include ~20 ns of per-run setup (an empty program's
    // time here); it is part of the kernel's figure, as our figures include
    // our per-run setup.
    Ok(median)
}

fn table() {
    let batch = Duration::from_millis(20);
    println!();
    println!(
        "JIT suite: median ns per run (21 batches of ~20 ms; kernel: 21 repeated test runs of ~20 ms)"
    );
    println!(
        "{:<16} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} | {:>7} {:>7} {:>7} {:>7}",
        "program",
        "interp",
        "jit",
        "jit-chk",
        "jit-base",
        "rbpf-int",
        "rbpf-jit",
        "native",
        "kernel",
        "jit/krn",
        "jit/rbj",
        "jit/nat",
        "chk/jit"
    );
    let mut logs = [(0.0f64, 0u32); 5];
    let mut worst_vs_kernel: (f64, &str) = (0.0, "");
    for p in suite() {
        let time = |f: &mut dyn FnMut()| median_ns(f, 21, batch);
        let mut mem = (p.input)();
        let mut vm = interpreter(&p);
        let interp = time(&mut || {
            black_box(vm.run(black_box(&mut mem)).unwrap());
        });
        let mut vm = jit_verified(&p);
        let jit = time(&mut || {
            black_box(vm.run(black_box(&mut mem)).unwrap());
        });
        let mut vm = jit_checked(&p);
        let chk = time(&mut || {
            black_box(vm.run(black_box(&mut mem)).unwrap());
        });
        let mut vm = jit_baseline(&p);
        let base = time(&mut || {
            black_box(vm.run(black_box(&mut mem)).unwrap());
        });
        let code = bytecode(&p);
        let mut rvm = rbpf::EbpfVmRaw::new(Some(&code)).unwrap();
        let rint = time(&mut || {
            black_box(rvm.execute_program(black_box(&mut mem)).unwrap());
        });
        rvm.jit_compile().unwrap();
        let rjit = time(&mut || {
            // SAFETY: the suite's programs stay inside their memory.
            black_box(unsafe { rvm.execute_program_jit(black_box(&mut mem)) }.unwrap());
        });
        let native = time(&mut || {
            black_box((p.native)(black_box(&mut mem)));
        });
        let kernel = kernel_ns(&p);
        let k = kernel.as_ref().ok().copied();
        let ratio = |a: f64, b: Option<f64>| b.map(|b| a / b);
        let cols = [
            ratio(jit, k),
            ratio(jit, Some(rjit)),
            ratio(jit, Some(native)),
            ratio(chk, Some(jit)),
            ratio(base, Some(rjit)),
        ];
        for (i, c) in cols.iter().enumerate() {
            if let Some(r) = c {
                logs[i].0 += r.ln();
                logs[i].1 += 1;
            }
        }
        if let Some(r) = cols[0] {
            if r > worst_vs_kernel.0 {
                worst_vs_kernel = (r, p.name);
            }
        }
        let show = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}x"));
        println!(
            "{:<16} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10} | {:>7} {:>7} {:>7} {:>7}",
            p.name,
            interp,
            jit,
            chk,
            base,
            rint,
            rjit,
            native,
            k.map_or("-".to_string(), |k| format!("{k:.1}")),
            show(cols[0]),
            show(cols[1]),
            show(cols[2]),
            show(cols[3]),
        );
        if let Err(why) = kernel {
            println!("{:<16}   kernel: {why}", "");
        }
        if let Err(why) = verify(&p) {
            println!(
                "{:<16}   rejected by userbpf's verifier ({why}): its jit column runs checked code",
                ""
            );
        }
    }
    let geo = |(s, n): (f64, u32)| {
        if n == 0 {
            f64::NAN
        } else {
            (s / f64::from(n)).exp()
        }
    };
    println!(
        "geometric means: jit/kernel {:.2}x (target <= 0.70; worst {:.2}x on {}), jit/rbpf-jit {:.2}x (target <= 0.67), jit/native {:.2}x (target <= 2), checked/verified {:.2}x (target <= 1.5)",
        geo(logs[0]),
        worst_vs_kernel.0,
        worst_vs_kernel.1,
        geo(logs[1]),
        geo(logs[2]),
        geo(logs[3])
    );
    println!(
        "baseline code (a tiered compile's first code)/rbpf-jit: {:.2}x",
        geo(logs[4])
    );
    println!();
    println!(
        "compile time, µs per instruction (median of 21; target < 5): Cranelift, and the baseline generator (until a tiered compile runs native code; Cranelift's follows in the background):"
    );
    for p in suite() {
        let (c, v) = compile_us_per_insn(&p, 21);
        let (bc, bv) = baseline_us_per_insn(&p, 21);
        println!(
            "  {:<16} Cranelift: checked {c:6.2} verified {v:6.2}   baseline: checked {bc:5.2} verified {bv:5.2}",
            p.name
        );
    }
    // A 10,000-instruction straight-line program.
    let big: String = (0..10_000)
        .map(|i| format!("add %r0, {}\n", i % 97))
        .collect::<String>()
        + "exit";
    let p = SuiteProgram {
        name: "straight_10k",
        description: "10,000 adds",
        source: big,
        input: Vec::new,
        native: |_| 0,
    };
    let (c, v) = compile_us_per_insn(&p, 5);
    let (bc, bv) = baseline_us_per_insn(&p, 5);
    println!(
        "  {:<16} Cranelift: checked {c:6.2} verified {v:6.2}   baseline: checked {bc:5.2} verified {bv:5.2}",
        p.name
    );
    objects_compile_time();
}

/// Compile time of every program of the project's BPF objects, in the
/// mode the runtime compiles it: the time until it runs native code with
/// a tiered compile (the baseline generator's, where it takes the
/// program; Cranelift's otherwise).
fn objects_compile_time() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let programs = object_programs(&[root.join("tests/bpf"), root.join("examples/bpf")]);
    println!();
    println!(
        "compile time of the project's BPF objects' programs, µs per instruction (median of 11; target < 5): Cranelift, the baseline generator, and the first code of a tiered compile:"
    );
    let (mut worst, mut over, mut untaken) = ((0.0f64, String::new()), 0, 0);
    for p in &programs {
        let n = p.prepared.len();
        let mode = if p.verified.is_some() {
            "verified"
        } else {
            "checked"
        };
        let (cl, base) = object_us_per_insn(p, 11);
        let first = match &base {
            Ok(b) => *b,
            Err(_) => cl,
        };
        if first > worst.0 {
            worst = (first, p.name.clone());
        }
        over += usize::from(first >= 5.0);
        untaken += usize::from(base.is_err());
        let base = match base {
            Ok(b) => format!("{b:6.2}"),
            Err(e) => format!("- ({})", e.rsplit(": ").next().unwrap_or(&e)),
        };
        println!(
            "  {:<44} {n:>5} insns {mode:<8} Cranelift {cl:7.2}  baseline {base}  first {first:6.2}",
            p.name
        );
    }
    println!(
        "{} programs: {} taken by the baseline generator; first code under 5 µs per instruction for {} (worst {:.2}, {})",
        programs.len(),
        programs.len() - untaken,
        programs.len() - over,
        worst.0,
        worst.1
    );
}

/// A program of one of the project's BPF objects, prepared on its maps
/// as the in-process hooks prepare it (`kernel_basics` and the maps'
/// helpers): with the verifier's proof, or (rejected, or of a kind the
/// hooks do not verify) checked.
struct ObjectProgram {
    /// `file:program`.
    name: String,
    /// The program (checked form).
    prepared: Arc<PreparedProgram>,
    /// The proof, when the verifier accepts it.
    verified: Option<Verified<Arc<PreparedProgram>>>,
}

/// Every program of the BPF objects under `dirs` that the in-process
/// runtime can prepare (the others need helpers only their hook kind
/// registers, or maps this process cannot create: left out).
fn object_programs(dirs: &[std::path::PathBuf]) -> Vec<ObjectProgram> {
    let mut files: Vec<std::path::PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.o"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let file = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        let Ok(object) = userbpf_vm::object::Object::parse(&file, &bytes) else {
            continue;
        };
        let Ok(maps) = userbpf_vm::maps::MapSet::from_object(&object) else {
            continue;
        };
        let maps = Arc::new(maps);
        for p in &object.programs {
            let Ok((vm, _)) = userbpf::hooked::prepare(&object, &maps, &p.name, false, None) else {
                continue;
            };
            let prepared = Arc::clone(vm.prepared());
            let verified = userbpf::engine::verify_object_program(&object, &p.name, true)
                .ok()
                .and_then(|_| userbpf::engine::proof_for(&prepared));
            out.push(ObjectProgram {
                name: format!("{file}:{}", p.name),
                prepared,
                verified,
            });
        }
    }
    out
}

/// Compile time of an object program in µs per instruction, median of
/// `rounds` (after 3 untimed): Cranelift's, and the baseline
/// generator's (or why it does not take the program), in the mode the
/// runtime compiles it (verified when the verifier accepts it).
fn object_us_per_insn(p: &ObjectProgram, rounds: u32) -> (f64, Result<f64, String>) {
    let time = |tier: Tier| {
        let options = Options {
            tier,
            ..Options::default()
        };
        median_us_per_insn(p.prepared.len(), rounds, || match &p.verified {
            Some(v) => userbpf_jit::compile_verified(v, options),
            None => userbpf_jit::compile_checked(&p.prepared, options),
        })
    };
    (
        time(Tier::Optimized).unwrap_or(f64::NAN),
        time(Tier::Baseline),
    )
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        table();
    }
}
