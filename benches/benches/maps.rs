//! Map operations from a running program (checked interpreter), and ring
//! buffer throughput with the consumer in another process.
//!
//! Programs: a loop of 1,000 `bpf_map_lookup_elem` (array, hash, per-CPU
//! hash, LRU hash) or `bpf_map_update_elem` (hash) on a present key; the
//! figure reported is per loop iteration (lookup or update plus ~5 loop
//! instructions). With `--bench` as root, the same bytecode also runs in
//! the kernel (XDP, `BPF_PROG_TEST_RUN` with repeat, the kernel's JIT) and
//! the ratio is printed.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use userbpf_vm::asm::assemble;
use userbpf_vm::maps::hash::{BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_PERCPU_HASH};
use userbpf_vm::maps::ringbuf::BPF_MAP_TYPE_RINGBUF;
use userbpf_vm::maps::{Map, MapSet, MapSpec, BPF_ANY, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH};
use userbpf_vm::{Config, Program, Vm};

const ITERS: u64 = 1000;
const MAX_ENTRIES: u32 = 1024;

/// The benchmark program: `body` ITERS times with r6 = the map (`handle`),
/// the key (7) at fp-8 and a value at fp-16; returns 2 (`XDP_PASS`).
fn map_program(handle: u64, body: &str) -> Program {
    let src = format!(
        "lddw %r6, {handle:#x}
        stw [%r10-8], 7
        stdw [%r10-16], 1
        mov %r7, 0
    loop:
        {body}
        add %r7, 1
        jlt %r7, {ITERS}, loop
        mov %r0, 2
        exit"
    );
    Program::new("bench", assemble(&src).unwrap()).unwrap()
}

/// The map's value for key 7 (every CPU's slot for per-CPU maps).
fn initial_value(map_type: u32) -> Vec<u8> {
    let cpus = if map_type == BPF_MAP_TYPE_PERCPU_HASH {
        userbpf_vm::maps::percpu::ncpus()
    } else {
        1
    };
    1u64.to_le_bytes().repeat(cpus)
}

/// A VM running [`map_program`] on a fresh map of `map_type`.
fn map_vm(map_type: u32, body: &str) -> (Vm, Arc<MapSet>) {
    let mut set = MapSet::default();
    let map = Map::create(MapSpec {
        name: "bench".into(),
        map_type,
        key_size: 4,
        value_size: 8,
        max_entries: MAX_ENTRIES,
        flags: 0,
        map_extra: 0,
    })
    .unwrap();
    map.update(&7u32.to_le_bytes(), &initial_value(map_type), BPF_ANY)
        .unwrap();
    let handle = map.handle();
    set.push(map);
    let set = Arc::new(set);
    let program = map_program(handle, body);
    // As an application binds a program to its maps (map helpers, value
    // regions, the direct lookup path).
    let vm = set
        .vm(
            &program,
            &userbpf_vm::Helpers::new(),
            Config { budget: None },
        )
        .unwrap();
    (vm, set)
}

const LOOKUP: &str = "mov %r1, %r6
        mov %r2, %r10
        add %r2, -8
        call 1";
const UPDATE: &str = "mov %r1, %r6
        mov %r2, %r10
        add %r2, -8
        mov %r3, %r10
        add %r3, -16
        mov %r4, 0
        call 2";

/// The measured operations: name, map type, loop body.
const CASES: [(&str, u32, &str); 5] = [
    ("array_lookup", BPF_MAP_TYPE_ARRAY, LOOKUP),
    ("hash_lookup", BPF_MAP_TYPE_HASH, LOOKUP),
    ("percpu_hash_lookup", BPF_MAP_TYPE_PERCPU_HASH, LOOKUP),
    ("lru_hash_lookup", BPF_MAP_TYPE_LRU_HASH, LOOKUP),
    ("hash_update", BPF_MAP_TYPE_HASH, UPDATE),
];

/// The same program in the kernel (XDP, the map created with `bpf()` and
/// loaded by fd): mean ns per loop iteration over `BPF_PROG_TEST_RUN`
/// with repeat, or why it cannot run.
fn kernel_ns(map_type: u32, body: &str) -> Result<f64, String> {
    use userbpf_kernel::{KernelMap, KernelProgram};
    if let Some(why) = userbpf_kernel::kernel_unavailable() {
        return Err(why);
    }
    let map =
        KernelMap::create("bench", map_type, 4, 8, MAX_ENTRIES, 0, 0).map_err(|e| e.to_string())?;
    map.update(&7u32.to_le_bytes(), &initial_value(map_type), 0)
        .map_err(|e| e.to_string())?;
    let mut insns = map_program(map.raw_fd() as u64, body).insns().to_vec();
    insns[0].src = userbpf_vm::insn::op::PSEUDO_MAP_FD;
    insns[0].imm = map.raw_fd();
    insns[1].imm = 0;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    let prog = KernelProgram::load("bench", BPF_PROG_TYPE_XDP, &insns, "GPL", 0, &[])
        .map_err(|e| e.to_string())?;
    let packet = [0u8; 64];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let (ret, ns) = prog
            .test_run_packet_timed(&packet, 2000)
            .map_err(|e| e.to_string())?;
        assert_eq!(ret, 2, "the kernel ran the loop to its end");
        best = best.min(f64::from(ns));
    }
    Ok(best / ITERS as f64)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("maps");
    for (name, map_type, body) in CASES {
        let (mut vm, _set) = map_vm(map_type, body);
        g.bench_function(format!("{name}_x{ITERS}"), |b| {
            b.iter(|| black_box(vm.run_with_args([0; 5]).unwrap()))
        });
    }
    g.finish();
}

/// Records per second through a ring buffer: `producers` threads here, the
/// consumer in a child process (this binary re-run with an env var).
fn ringbuf_throughput(producers: u64) -> (f64, u64, u64) {
    let path = std::env::temp_dir().join(format!("userbpf-bench-rb-{}", std::process::id()));
    let map = Map::create_at(
        MapSpec {
            name: "rb".into(),
            map_type: BPF_MAP_TYPE_RINGBUF,
            key_size: 0,
            value_size: 0,
            max_entries: 16 << 20,
            flags: 0,
            map_extra: 0,
        },
        &path,
    )
    .unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("USERBPF_BENCH_RB_CONSUMER", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let per_thread: u64 = 8_000_000 / producers;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..producers {
            let map = &map;
            s.spawn(move || {
                let mut rec = [0u8; 64];
                for n in 0..per_thread {
                    rec[..8].copy_from_slice(&(t << 32 | n).to_le_bytes());
                    while !map.ringbuf_output(&rec) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
    });
    // The end marker: an 8-byte record.
    while !map.ringbuf_output(&u64::MAX.to_le_bytes()) {}
    let out = child.wait_with_output().unwrap();
    let elapsed = start.elapsed();
    let consumed: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let total = producers * per_thread;
    (
        total as f64 / elapsed.as_secs_f64(),
        consumed,
        map.ringbuf_dropped(),
    )
}

fn consumer(path: &str) {
    let map = Map::open(std::path::Path::new(path)).unwrap();
    let mut n = 0u64;
    let mut done = false;
    while !done {
        map.ringbuf_consume(|r| {
            if r.len() == 8 {
                done = true;
            } else {
                n += 1;
            }
        });
    }
    println!("{n}");
}

fn main() {
    if let Ok(path) = std::env::var("USERBPF_BENCH_RB_CONSUMER") {
        consumer(&path);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        println!();
        println!("per loop iteration (median of 21 batches; kernel: best of 5 x 2000 runs)");
        for (name, map_type, body) in CASES {
            let (mut vm, _set) = map_vm(map_type, body);
            let ns = userbpf_benches::median_ns(
                || {
                    black_box(vm.run_with_args([0; 5]).unwrap());
                },
                21,
                Duration::from_millis(20),
            ) / ITERS as f64;
            match kernel_ns(map_type, body) {
                Ok(k) => println!(
                    "{name:20} userbpf (checked interpreter) {ns:6.1} ns   kernel (JIT) {k:6.1} ns   \
                     userbpf/kernel {:.2}x",
                    ns / k
                ),
                Err(why) => println!("{name:20} userbpf {ns:6.1} ns   kernel: not run ({why})"),
            }
        }
        for producers in [1, 2] {
            let (rate, consumed, dropped) = ringbuf_throughput(producers);
            println!(
                "ring buffer, 64-byte records, {producers} producer thread(s), consumer in \
                 another process: {:.1} M records/s ({consumed} consumed, {dropped} dropped)",
                rate / 1e6
            );
        }
    }
}
