//! Benchmark programs and the peers they run on, shared by the criterion
//! benches in `benches/`.
//!
//! Every program here is written in the conformance-suite assembler syntax,
//! uses only instructions every peer supports (64-bit ALU and jumps, loads
//! and stores), and receives its input memory in `r1` (rbpf's raw VM passes
//! no length, so lengths are constants).
#![deny(missing_docs)]

pub mod engines;
pub mod suite;

use std::time::{Duration, Instant};

use userbpf_vm::asm::assemble;
use userbpf_vm::insn::insns_to_bytes;
use userbpf_vm::{Config, Helpers, Program, Vm};

/// One benchmark program.
#[derive(Clone, Debug)]
pub struct BenchProgram {
    /// Name shown in reports.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Assembler source.
    pub source: &'static str,
    /// Input memory size in bytes (filled with `i * 7 + 3` for byte `i`).
    pub mem_len: usize,
}

/// The loop-heavy programs of the interpreter benchmark.
pub fn programs() -> Vec<BenchProgram> {
    vec![
        BenchProgram {
            name: "hash_loop",
            description: "1,000 iterations of s = s*31 + (x ^ i)",
            source: "
                ldxdw %r2, [%r1]
                mov %r0, 0
                mov %r3, 0
            loop:
                mul %r0, 31
                mov %r4, %r2
                xor %r4, %r3
                add %r0, %r4
                add %r3, 1
                jlt %r3, 1000, loop
                exit",
            mem_len: 8,
        },
        BenchProgram {
            name: "sum_loop",
            description: "sum of 0..10,000 with a counted loop",
            source: "
                mov %r0, 0
                mov %r2, 0
            loop:
                add %r0, %r2
                add %r2, 1
                jne %r2, 10000, loop
                exit",
            mem_len: 0,
        },
        BenchProgram {
            name: "prime",
            description: "count primes below 2,000 by trial division",
            source: "
                mov %r0, 0
                mov %r2, 2
            outer:
                mov %r3, 2
            inner:
                mov %r4, %r3
                mul %r4, %r3
                jgt %r4, %r2, is_prime
                mov %r5, %r2
                mod %r5, %r3
                jeq %r5, 0, next
                add %r3, 1
                ja inner
            is_prime:
                add %r0, 1
            next:
                add %r2, 1
                jlt %r2, 2000, outer
                exit",
            mem_len: 0,
        },
        BenchProgram {
            name: "byte_sum",
            description: "sum the bytes of a 4 KiB buffer (a load per iteration)",
            source: "
                mov %r0, 0
                mov %r2, %r1
                mov %r3, %r1
                add %r3, 4096
            loop:
                ldxb %r4, [%r2]
                add %r0, %r4
                add %r2, 1
                jlt %r2, %r3, loop
                exit",
            mem_len: 4096,
        },
        BenchProgram {
            name: "bubble_sort",
            description: "bubble sort of 64 u64 values in memory (loads, stores, branches)",
            source: "
                mov %r6, 63
            outer:
                mov %r2, %r1
                mov %r3, 0
            inner:
                ldxdw %r4, [%r2]
                ldxdw %r5, [%r2+8]
                jle %r4, %r5, no_swap
                stxdw [%r2], %r5
                stxdw [%r2+8], %r4
            no_swap:
                add %r2, 8
                add %r3, 1
                jlt %r3, %r6, inner
                sub %r6, 1
                jne %r6, 0, outer
                ldxdw %r0, [%r1]
                exit",
            mem_len: 512,
        },
    ]
}

/// The input memory of a program.
pub fn input(p: &BenchProgram) -> Vec<u8> {
    (0..p.mem_len).map(|i| (i * 7 + 3) as u8).collect()
}

/// The program's bytecode.
pub fn bytecode(p: &BenchProgram) -> Vec<u8> {
    let insns = assemble(p.source).unwrap_or_else(|e| panic!("{}: {e}", p.name));
    insns_to_bytes(&insns)
}

/// A userbpf interpreter VM for the program (checked mode, no budget: the
/// programs terminate).
pub fn userbpf_vm(p: &BenchProgram) -> Vm {
    let program = Program::from_bytes(p.name, &bytecode(p)).unwrap_or_else(|e| panic!("{e}"));
    Vm::with_config(&program, &Helpers::new(), Config { budget: None })
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Median nanoseconds per call of `f`, from `rounds` batches sized to take
/// about `batch_time` each.
pub fn median_ns(mut f: impl FnMut(), rounds: usize, batch_time: Duration) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < batch_time / 4 || calls < 3 {
        f();
        calls += 1;
    }
    let per_call = start.elapsed().as_secs_f64() / calls as f64;
    let batch = ((batch_time.as_secs_f64() / per_call) as u64).max(1);
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed().as_secs_f64() * 1e9 / batch as f64
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userbpf_and_rbpf_agree_on_every_benchmark_program() {
        for p in programs() {
            let mut mem = input(&p);
            let ours = userbpf_vm(&p).run(&mut mem).unwrap();
            let code = bytecode(&p);
            let vm = rbpf::EbpfVmRaw::new(Some(&code)).unwrap();
            let mut mem = input(&p);
            let theirs = vm.execute_program(&mut mem).unwrap();
            assert_eq!(ours, theirs, "{}", p.name);
        }
    }

    #[test]
    fn results_are_the_expected_values() {
        let by_name = |n: &str| programs().into_iter().find(|p| p.name == n).unwrap();
        let run = |n: &str| {
            let p = by_name(n);
            userbpf_vm(&p).run(&mut input(&p)).unwrap()
        };
        assert_eq!(run("sum_loop"), (0..10_000u64).sum::<u64>());
        // 303 primes below 2000.
        assert_eq!(run("prime"), 303);
        let bytes: u64 = input(&by_name("byte_sum"))
            .iter()
            .map(|&b| u64::from(b))
            .sum();
        assert_eq!(run("byte_sum"), bytes);
        let first = input(&by_name("bubble_sort"))
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .min()
            .unwrap();
        assert_eq!(run("bubble_sort"), first);
    }
}
