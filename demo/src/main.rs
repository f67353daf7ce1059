//! `userbpf-demo [N] [abort]`: calls `demo_work(i)` for `i` in `0..N`
//! (default 10), allocates with `malloc`, opens `/proc/self/stat`, and
//! prints the sum of the results: a target for `userbpf exec` and its
//! examples. With `abort`, it then dies of SIGABRT (a target that crashes
//! mid-trace).

use std::hint::black_box;

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
    for i in 0..n {
        sum = sum.wrapping_add(demo_work(i));
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
    println!("demo: {n} calls, sum {sum}, {failed} reservations failed, stat read: {opened}");
    if std::env::args().nth(2).as_deref() == Some("abort") {
        std::process::abort();
    }
}
