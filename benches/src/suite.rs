//! The JIT benchmark suite: the programs of the public bpf-benchmark suite,
//! re-written here from their descriptions, plus loop-, memory- and
//! branch-heavy programs, each with the same algorithm in native Rust.
//!
//! Every program gets its input memory in `r1` (lengths are constants, as
//! rbpf's raw VM passes none) and bounds-checks its own accesses against
//! those constants, so the same body also passes the kernel's verifier when
//! `r1` is a map value of that size ([`kernel_prologue`]).

use std::hint::black_box;

/// One program of the suite.
#[derive(Clone, Debug)]
pub struct SuiteProgram {
    /// Name shown in reports.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Assembler source (conformance syntax).
    pub source: String,
    /// Input memory.
    pub input: fn() -> Vec<u8>,
    /// The same algorithm in Rust, on the same memory.
    pub native: fn(&mut [u8]) -> u64,
}

fn filled(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// 1,000 pseudo-random u64 values (xorshift), none zero.
fn log2_input() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(8000);
    for i in 0..1000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Values of every magnitude.
        let v = (x >> (i % 64)) | 1;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The program's binary search, step for step (a faithful port: not
/// `leading_zeros`, which is another algorithm, one instruction).
fn native_log2(mem: &mut [u8]) -> u64 {
    let mut sum = 0u64;
    for c in black_box(&*mem).chunks_exact(8).take(1000) {
        let mut v = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        let mut r = 0;
        for k in [32, 16, 8, 4, 2] {
            if v >> k != 0 {
                r += k;
                v >>= k;
            }
        }
        if v >> 1 != 0 {
            r += 1;
        }
        sum += r;
    }
    sum
}

const MIB: usize = 1 << 20;

fn memcpy_input() -> Vec<u8> {
    filled(2 * MIB)
}

fn native_memcpy(mem: &mut [u8]) -> u64 {
    let mem = black_box(mem);
    mem.copy_within(0..MIB, MIB);
    MIB as u64
}

fn native_a_plus_b(mem: &mut [u8]) -> u64 {
    let m = black_box(&*mem);
    let a = u64::from_le_bytes(m[0..8].try_into().unwrap_or([0; 8]));
    let b = u64::from_le_bytes(m[8..16].try_into().unwrap_or([0; 8]));
    a.wrapping_add(b)
}

fn native_prime(_: &mut [u8]) -> u64 {
    let mut count = 0;
    let limit = black_box(10_000u64);
    for n in 2..limit {
        let mut d = 2;
        let mut prime = true;
        while d * d <= n {
            if n % d == 0 {
                prime = false;
                break;
            }
            d += 1;
        }
        if prime {
            count += 1;
        }
    }
    count
}

/// Two 4 KiB strings: equal (`full`) or differing at byte 2048 (`fail`),
/// NUL-terminated at the last byte.
fn strings(differ: bool) -> Vec<u8> {
    let mut a: Vec<u8> = (0..4096).map(|i| b'a' + (i % 26) as u8).collect();
    a[4095] = 0;
    let mut b = a.clone();
    if differ {
        b[2048] = b'!';
    }
    a.extend_from_slice(&b);
    a
}

fn native_strcmp(mem: &mut [u8]) -> u64 {
    let m = black_box(&*mem);
    for i in 0..4096 {
        let (x, y) = (m[i], m[4096 + i]);
        if x != y {
            return u64::from(x).wrapping_sub(u64::from(y));
        }
        if x == 0 {
            return 0;
        }
    }
    0
}

/// The constants the switch adds for each case.
const SWITCH_ADDS: [u64; 16] = [3, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61];

fn switch_source() -> String {
    let mut s = String::from(
        "mov %r0, 0
        mov %r3, 0
    loop:
        jge %r3, 1000, done
        mov %r4, %r1
        add %r4, %r3
        ldxb %r5, [%r4+0]
        and %r5, 31
",
    );
    for c in 0..16 {
        s += &format!("        jeq %r5, {c}, c{c}\n");
    }
    // The default case (16..31).
    s += "        add %r0, 1\n        ja next\n";
    for (c, add) in SWITCH_ADDS.iter().enumerate() {
        s += &format!("    c{c}:\n        add %r0, {add}\n        ja next\n");
    }
    s += "    next:
        add %r3, 1
        ja loop
    done:
        exit";
    s
}

fn native_switch(mem: &mut [u8]) -> u64 {
    let m = black_box(&*mem);
    let mut r = 0u64;
    for &b in &m[..1000] {
        r += match b & 31 {
            0 => 3,
            1 => 7,
            2 => 11,
            3 => 13,
            4 => 17,
            5 => 19,
            6 => 23,
            7 => 29,
            8 => 31,
            9 => 37,
            10 => 41,
            11 => 43,
            12 => 47,
            13 => 53,
            14 => 59,
            15 => 61,
            _ => 1,
        };
    }
    r
}

fn native_hash_loop(mem: &mut [u8]) -> u64 {
    let x = u64::from_le_bytes(black_box(&*mem)[..8].try_into().unwrap_or([0; 8]));
    let mut s = 0u64;
    for i in 0..1000u64 {
        s = s.wrapping_mul(31).wrapping_add(x ^ i);
    }
    s
}

fn native_histogram(mem: &mut [u8]) -> u64 {
    let m = black_box(mem);
    for i in 0..1000 {
        let slot = 1000 + usize::from(m[i] & 63) * 8;
        let v = u64::from_le_bytes(m[slot..slot + 8].try_into().unwrap_or([0; 8]));
        m[slot..slot + 8].copy_from_slice(&v.wrapping_add(1).to_le_bytes());
    }
    u64::from_le_bytes(m[1000..1008].try_into().unwrap_or([0; 8]))
}

/// An Ethernet + IPv4 + UDP packet to port 4242, padded to 64 bytes.
fn packet() -> Vec<u8> {
    let mut p = vec![0u8; 64];
    p[12] = 0x08; // IPv4
    p[14] = 0x45; // version 4, IHL 5
    p[23] = 17; // UDP
    p[34..36].copy_from_slice(&1234u16.to_be_bytes());
    p[36..38].copy_from_slice(&4242u16.to_be_bytes());
    p
}

fn native_parser(mem: &mut [u8]) -> u64 {
    let p = black_box(&*mem);
    if p[12] != 8 || p[13] != 0 {
        return 0;
    }
    if p[14] >> 4 != 4 {
        return 0;
    }
    let ihl = usize::from(p[14] & 15) * 4;
    if !(20..=40).contains(&ihl) || p[23] != 17 {
        return 0;
    }
    u64::from(u16::from_be_bytes([p[14 + ihl + 2], p[14 + ihl + 3]]))
}

/// The suite.
pub fn suite() -> Vec<SuiteProgram> {
    vec![
        SuiteProgram {
            name: "simple",
            description: "return 0 (the cost of a call)",
            source: "mov %r0, 0\nexit".into(),
            input: Vec::new,
            native: |_| black_box(0),
        },
        SuiteProgram {
            name: "log2_int",
            description: "floor(log2) of 1,000 u64 values by binary search",
            source: "
                mov %r0, 0
                mov %r3, 0
            loop:
                jgt %r3, 7992, done
                mov %r5, %r1
                add %r5, %r3
                ldxdw %r6, [%r5+0]
                mov %r7, 0
                mov %r8, %r6
                rsh %r8, 32
                jeq %r8, 0, l16
                add %r7, 32
                rsh %r6, 32
            l16:
                mov %r8, %r6
                rsh %r8, 16
                jeq %r8, 0, l8
                add %r7, 16
                rsh %r6, 16
            l8:
                mov %r8, %r6
                rsh %r8, 8
                jeq %r8, 0, l4
                add %r7, 8
                rsh %r6, 8
            l4:
                mov %r8, %r6
                rsh %r8, 4
                jeq %r8, 0, l2
                add %r7, 4
                rsh %r6, 4
            l2:
                mov %r8, %r6
                rsh %r8, 2
                jeq %r8, 0, l1
                add %r7, 2
                rsh %r6, 2
            l1:
                mov %r8, %r6
                rsh %r8, 1
                jeq %r8, 0, l0
                add %r7, 1
            l0:
                add %r0, %r7
                add %r3, 8
                ja loop
            done:
                exit"
                .into(),
            input: log2_input,
            native: native_log2,
        },
        SuiteProgram {
            name: "memcpy",
            description: "copy 1 MiB, 8 bytes at a time",
            source: "
                mov %r6, %r1
                add %r6, 1048576
                mov %r3, 0
            loop:
                jge %r3, 1048576, done
                mov %r4, %r1
                add %r4, %r3
                ldxdw %r5, [%r4+0]
                mov %r4, %r6
                add %r4, %r3
                stxdw [%r4+0], %r5
                add %r3, 8
                ja loop
            done:
                mov %r0, %r3
                exit"
                .into(),
            input: memcpy_input,
            native: native_memcpy,
        },
        SuiteProgram {
            name: "memory_a_plus_b",
            description: "load two u64 and add them",
            source: "
                ldxdw %r3, [%r1+0]
                ldxdw %r0, [%r1+8]
                add %r0, %r3
                exit"
                .into(),
            input: || filled(16),
            native: native_a_plus_b,
        },
        SuiteProgram {
            name: "prime",
            description: "count the primes below 10,000 by trial division",
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
                jlt %r2, 10000, outer
                exit"
                .into(),
            input: Vec::new,
            native: native_prime,
        },
        SuiteProgram {
            name: "strcmp_fail",
            description: "compare two 4 KiB strings that differ at byte 2,048",
            source: STRCMP.into(),
            input: || strings(true),
            native: native_strcmp,
        },
        SuiteProgram {
            name: "strcmp_full",
            description: "compare two equal 4 KiB strings",
            source: STRCMP.into(),
            input: || strings(false),
            native: native_strcmp,
        },
        SuiteProgram {
            name: "switch",
            description: "a 16-way switch with a default on 1,000 input bytes",
            source: switch_source(),
            input: || filled(1000),
            native: native_switch,
        },
        SuiteProgram {
            name: "hash_loop",
            description: "1,000 iterations of s = s*31 + (x ^ i)",
            source: "
                ldxdw %r2, [%r1+0]
                mov %r0, 0
                mov %r3, 0
            loop:
                mul %r0, 31
                mov %r4, %r2
                xor %r4, %r3
                add %r0, %r4
                add %r3, 1
                jlt %r3, 1000, loop
                exit"
                .into(),
            input: || filled(8),
            native: native_hash_loop,
        },
        SuiteProgram {
            name: "histogram",
            description: "a 64-bucket histogram of 1,000 input bytes (load, add, store)",
            source: "
                mov %r3, 0
            loop:
                jge %r3, 1000, done
                mov %r4, %r1
                add %r4, %r3
                ldxb %r5, [%r4+0]
                and %r5, 63
                lsh %r5, 3
                mov %r4, %r1
                add %r4, %r5
                ldxdw %r6, [%r4+1000]
                add %r6, 1
                stxdw [%r4+1000], %r6
                add %r3, 1
                ja loop
            done:
                ldxdw %r0, [%r1+1000]
                exit"
                .into(),
            input: || filled(1000 + 512),
            native: native_histogram,
        },
        SuiteProgram {
            name: "packet_parser",
            description: "parse Ethernet, IPv4 and UDP headers; return the port",
            source: "
                ldxb %r3, [%r1+12]
                jne %r3, 8, drop
                ldxb %r3, [%r1+13]
                jne %r3, 0, drop
                ldxb %r4, [%r1+14]
                mov %r5, %r4
                rsh %r5, 4
                jne %r5, 4, drop
                and %r4, 15
                lsh %r4, 2
                jlt %r4, 20, drop
                jgt %r4, 40, drop
                ldxb %r5, [%r1+23]
                jne %r5, 17, drop
                mov %r6, %r1
                add %r6, %r4
                ldxh %r0, [%r6+16]
                be16 %r0
                exit
            drop:
                mov %r0, 0
                exit"
                .into(),
            input: packet,
            native: native_parser,
        },
    ]
}

const STRCMP: &str = "
                mov %r3, 0
            loop:
                jge %r3, 4096, equal
                mov %r4, %r1
                add %r4, %r3
                ldxb %r5, [%r4+0]
                ldxb %r6, [%r4+4096]
                jne %r5, %r6, differ
                jeq %r5, 0, equal
                add %r3, 1
                ja loop
            differ:
                mov %r0, %r5
                sub %r0, %r6
                exit
            equal:
                mov %r0, 0
                exit";

/// The program as an XDP program for the kernel: the input memory is the
/// value of an array map (`fd`), looked up first; the result is returned
/// as the XDP verdict (the kernel's test run reports it whatever it is).
pub fn kernel_source(p: &SuiteProgram, fd: i32) -> String {
    if (p.input)().is_empty() {
        return p.source.clone();
    }
    format!(
        "lddw %r1, {fd}
        mov %r2, %r10
        add %r2, -4
        stw [%r10-4], 0
        call 1
        jne %r0, 0, have_mem
        exit
    have_mem:
        mov %r1, %r0
        {}",
        p.source
    )
}
