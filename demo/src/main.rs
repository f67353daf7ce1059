//! `userbpf-demo [N] [abort]`: calls `demo_work(i)` for `i` in `0..N`
//! (default 10), allocates with `malloc`, opens `/proc/self/stat`, and
//! prints the sum of the results: a target for `userbpf exec` and its
//! examples. With `abort`, it then dies of SIGABRT (a target that crashes
//! mid-trace).

use std::hint::black_box;

/// A USDT probe site (`.note.stapsdt`, the layout `<sys/sdt.h>` emits):
/// `provider:name` with two 8-byte arguments in registers, and the
/// address of its semaphore (0: none). The site is a `nop`.
macro_rules! usdt {
    ($provider:literal, $name:literal, none, $a:expr, $b:expr) => {
        usdt!(@emit $provider, $name, ".8byte 0 # (no semaphore) {sem}", $a, $b, demo_work)
    };
    ($provider:literal, $name:literal, $semaphore:path, $a:expr, $b:expr) => {
        usdt!(@emit $provider, $name, ".8byte {sem}", $a, $b, $semaphore)
    };
    (@emit $provider:literal, $name:literal, $sem_line:literal, $a:expr, $b:expr, $sem:path) => {
        // SAFETY: a `nop` and a note in other sections; the arguments are
        // only named (in registers).
        unsafe {
            std::arch::asm!(
                "990: nop",
                ".pushsection .note.stapsdt,\"\",\"note\"",
                ".balign 4",
                ".4byte 992f-991f, 994f-993f, 3",
                "991: .asciz \"stapsdt\"",
                "992: .balign 4",
                "993: .8byte 990b",
                ".8byte _.stapsdt.base",
                $sem_line,
                concat!(".asciz \"", $provider, "\""),
                concat!(".asciz \"", $name, "\""),
                ".asciz \"8@{a} 8@{b}\"",
                "994: .balign 4",
                ".popsection",
                ".ifndef _.stapsdt.base",
                ".pushsection .stapsdt.base,\"aG\",\"progbits\",.stapsdt.base,comdat",
                ".weak _.stapsdt.base",
                ".hidden _.stapsdt.base",
                "_.stapsdt.base: .space 1",
                ".size _.stapsdt.base, 1",
                ".popsection",
                ".endif",
                sem = sym $sem,
                a = in(reg) $a,
                b = in(reg) $b,
                options(att_syntax, nostack, preserves_flags),
            );
        }
    };
}

/// The semaphore of `demo:tick` (a tracer that attaches increments it; the
/// probe's arguments are computed only then). `.probes`, as `<sys/sdt.h>`
/// places them.
#[no_mangle]
#[link_section = ".probes"]
pub static demo_tick_semaphore: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// The function the examples probe: `i * i + 1`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn demo_work(i: u64) -> u64 {
    black_box(i).wrapping_mul(black_box(i)).wrapping_add(1)
}

/// Reserves `bytes`: fails (returns -1) above 1 MiB, else 0. The
/// fault-injection example makes it fail for a size it never fails for.
#[no_mangle]
#[inline(never)]
pub extern "C" fn demo_reserve(bytes: u64) -> i64 {
    if black_box(bytes) > 1 << 20 {
        -1
    } else {
        0
    }
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let mut sum = 0u64;
    let mut failed = 0u64;
    let mut ticks = 0u64;
    for i in 0..n {
        let r = demo_work(i);
        sum = sum.wrapping_add(r);
        // demo:work(i, result), always; demo:tick(i, sum) only when a
        // tracer set its semaphore.
        usdt!("demo", "work", none, i, r);
        if demo_tick_semaphore.load(std::sync::atomic::Ordering::Relaxed) != 0 {
            ticks += 1;
            usdt!("demo", "tick", demo_tick_semaphore, i, sum);
        }
        if demo_reserve(i) != 0 {
            failed += 1;
        }
        // SAFETY: malloc/free of a small block.
        unsafe {
            let p = black_box(libc::malloc(black_box(64 + i as usize)));
            libc::free(p);
        }
    }
    let opened = std::fs::read_to_string("/proc/self/stat").is_ok();
    println!(
        "demo: {n} calls, sum {sum}, {failed} reservations failed, stat read: {opened}, \
         {ticks} ticks"
    );
    if std::env::args().nth(2).as_deref() == Some("abort") {
        std::process::abort();
    }
}
