//! Runs one program of the JIT suite in a loop, for profilers
//! (`perf record`, `valgrind --tool=callgrind`), and prints ns per run.
//!
//! ```sh
//! cargo run --release -p userbpf-benches --example suite_loop -- simple [checked|verified|baseline|rbpf] [runs]
//! ```
//! With `ASM=1` in the environment it first prints the native code; with
//! `RAW=FILE` also writes the machine code to FILE; with
//! `COMPILE=1` it compiles the program `runs` times instead and prints the
//! median compile time per instruction.

use std::hint::black_box;
use std::sync::Arc;

use userbpf_benches::engines::{insns, jit_baseline, jit_checked, jit_verified, CHECKED_BUDGET};
use userbpf_benches::suite::suite;
use userbpf_jit::Options;
use userbpf_verifier::Verified;
use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::{Config, Helpers, Program};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(name) = args.get(1) else {
        eprintln!("usage: suite_loop PROGRAM [checked|verified|baseline|rbpf] [RUNS]");
        std::process::exit(2);
    };
    let checked = args.get(2).is_some_and(|a| a == "checked");
    let base = args.get(2).is_some_and(|a| a == "baseline");
    let runs: u64 = args
        .get(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50_000_000);
    let Some(p) = suite().into_iter().find(|p| p.name == name.as_str()) else {
        eprintln!("no program `{name}` in the suite");
        std::process::exit(2);
    };
    if std::env::var_os("ASM").is_some() {
        let program = Program::new(p.name, insns(&p)).expect("suite program");
        let budget = checked.then_some(CHECKED_BUDGET);
        let prog = Arc::new(
            PreparedProgram::new(&program, &Helpers::new(), Config { budget })
                .expect("suite program"),
        );
        let options = Options {
            keep_asm: true,
            tier: if base {
                userbpf_jit::Tier::Baseline
            } else {
                userbpf_jit::Tier::Optimized
            },
        };
        let code = if checked {
            userbpf_jit::compile_checked(&prog, options)
        } else {
            // SAFETY: as in `engines::jit_verified`: the suite's programs
            // stay inside their memory and terminate.
            let v = unsafe { Verified::assume_verified(prog) };
            userbpf_jit::compile_verified(&v, options)
        }
        .expect("compiles");
        println!("{}", code.asm().unwrap_or_default());
        if let Some(path) = std::env::var_os("RAW") {
            std::fs::write(path, code.code()).expect("writes the code");
        }
    }
    if std::env::var_os("COMPILE").is_some() {
        let (c, v) = userbpf_benches::engines::compile_us_per_insn(&p, runs as u32);
        let (bc, bv) = userbpf_benches::engines::baseline_us_per_insn(&p, runs as u32);
        println!(
            "{}: compile µs/insn, Cranelift: checked {c:.2} verified {v:.2}; baseline: checked {bc:.2} verified {bv:.2}",
            p.name
        );
        return;
    }
    let mut mem = (p.input)();
    if args.get(2).is_some_and(|a| a == "rbpf") {
        let code = userbpf_benches::engines::bytecode(&p);
        let mut rvm = rbpf::EbpfVmRaw::new(Some(&code)).expect("rbpf takes the program");
        rvm.jit_compile().expect("rbpf compiles the program");
        if std::env::var_os("MEDIAN").is_some() {
            let mut run = || {
                // SAFETY: the suite's programs stay inside their memory.
                black_box(unsafe { rvm.execute_program_jit(black_box(&mut mem)) }.expect("runs"));
            };
            let ns = userbpf_benches::median_ns(
                &mut run as &mut dyn FnMut(),
                21,
                std::time::Duration::from_millis(20),
            );
            println!(
                "{} (rbpf JIT): {ns:.2} ns/run (median of 21 batches)",
                p.name
            );
            return;
        }
        let t = std::time::Instant::now();
        for _ in 0..runs {
            // SAFETY: the suite's programs stay inside their memory.
            black_box(unsafe { rvm.execute_program_jit(black_box(&mut mem)) }.expect("runs"));
        }
        println!(
            "{} (rbpf JIT): {:.2} ns/run",
            p.name,
            t.elapsed().as_nanos() as f64 / runs as f64
        );
        return;
    }
    let mut vm = if checked {
        jit_checked(&p)
    } else if base {
        jit_baseline(&p)
    } else {
        jit_verified(&p)
    };
    let mut run = || {
        black_box(vm.run(black_box(&mut mem)).expect("runs"));
    };
    if std::env::var_os("MEDIAN").is_some() {
        // The benchmark's table pass, exactly.
        let ns = userbpf_benches::median_ns(
            &mut run as &mut dyn FnMut(),
            21,
            std::time::Duration::from_millis(20),
        );
        println!("{}: {ns:.2} ns/run (median of 21 batches)", p.name);
        return;
    }
    let t = std::time::Instant::now();
    if std::env::var_os("DYN").is_some() {
        // Through a `dyn FnMut` the compiler cannot see through, as the
        // benchmark's table pass calls.
        let f: &mut dyn FnMut() = black_box(&mut run);
        for _ in 0..runs {
            f();
        }
    } else {
        for _ in 0..runs {
            run();
        }
    }
    println!(
        "{}: {:.2} ns/run",
        p.name,
        t.elapsed().as_nanos() as f64 / runs as f64
    );
}
