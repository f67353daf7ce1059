//! The interpreter against rbpf's interpreter (0.4, no cranelift), on the
//! same bytecode, in the same process. Criterion reports each side; with
//! `cargo bench` a final pass measures both interleaved and prints a table of
//! medians and ratios (target: at least 2x faster on loop-heavy programs).

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use userbpf_benches::{bytecode, input, median_ns, programs, userbpf_vm};

fn bench(c: &mut Criterion) {
    for p in programs() {
        let mut group = c.benchmark_group(format!("interp/{}", p.name));
        let code = bytecode(&p);
        let mut vm = userbpf_vm(&p);
        let mut mem = input(&p);
        group.bench_function("userbpf", |b| {
            b.iter(|| black_box(vm.run(black_box(&mut mem)).unwrap()))
        });
        let rvm = rbpf::EbpfVmRaw::new(Some(&code)).unwrap();
        let mut mem = input(&p);
        group.bench_function("rbpf", |b| {
            b.iter(|| black_box(rvm.execute_program(black_box(&mut mem)).unwrap()))
        });
        group.finish();
    }
}

fn ratio_table() {
    println!();
    println!("userbpf interpreter vs rbpf 0.4 interpreter (medians of 21 interleaved batches)");
    println!(
        "{:<12} {:>14} {:>14} {:>8}",
        "program", "userbpf ns", "rbpf ns", "speedup"
    );
    let mut log_sum = 0.0;
    let list = programs();
    for p in &list {
        let code = bytecode(p);
        let mut vm = userbpf_vm(p);
        let rvm = rbpf::EbpfVmRaw::new(Some(&code)).unwrap();
        let mut mem_a = input(p);
        let mut mem_b = input(p);
        let batch = Duration::from_millis(20);
        let ours = median_ns(
            || {
                black_box(vm.run(&mut mem_a).unwrap());
            },
            21,
            batch,
        );
        let theirs = median_ns(
            || {
                black_box(rvm.execute_program(&mut mem_b).unwrap());
            },
            21,
            batch,
        );
        let speedup = theirs / ours;
        log_sum += speedup.ln();
        println!(
            "{:<12} {:>14.1} {:>14.1} {:>7.2}x",
            p.name, ours, theirs, speedup
        );
    }
    println!(
        "geometric mean speedup over rbpf: {:.2}x",
        (log_sum / list.len() as f64).exp()
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    // Only when benchmarking for real (`cargo bench`), not in `cargo test`.
    if std::env::args().any(|a| a == "--bench") {
        ratio_table();
    }
}
