//! The entry trampoline's direct lane: a probe whose work is leaf code
//! (`Probe::direct`) runs it straight from the trampoline. The leaf here
//! is hand-written: it counts its runs and sums the first argument into
//! the `Counters` the hooked function's second argument points at (the
//! probe's `hit` does the same in Rust, for hits the lane hands to the
//! dispatcher).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use userbpf_shims::hook::{self, Action, LeafCode, Probe, ProbeKind, PtRegs, Target};

/// What the probes count.
#[repr(C)]
#[derive(Default)]
struct Counters {
    /// Runs of the leaf code.
    leaf: AtomicU64,
    /// Runs of `hit`.
    rust: AtomicU64,
    /// Sum of the first arguments seen.
    sum: AtomicU64,
}

impl Counters {
    fn runs(&self) -> u64 {
        self.leaf.load(Ordering::SeqCst) + self.rust.load(Ordering::SeqCst)
    }
}

// The leaf code: `(head, 0, r1 = pt_regs, ...) -> (r0, status 0)`, and a
// variant that also writes a vector register (which the lane refuses).
std::arch::global_asm!(
    ".globl userbpf_leaf_count",
    ".type userbpf_leaf_count, @function",
    "userbpf_leaf_count:",
    "mov rax, qword ptr [rdx + 104]",
    "mov rcx, qword ptr [rdx + 112]",
    "lock inc qword ptr [rax]",
    "lock add qword ptr [rax + 16], rcx",
    "xor eax, eax",
    "xor edx, edx",
    "ret",
    ".globl userbpf_leaf_count_end",
    "userbpf_leaf_count_end:",
    ".size userbpf_leaf_count, . - userbpf_leaf_count",
    ".globl userbpf_leaf_vector",
    ".type userbpf_leaf_vector, @function",
    "userbpf_leaf_vector:",
    "mov rax, qword ptr [rdx + 104]",
    "mov rcx, qword ptr [rdx + 112]",
    "lock inc qword ptr [rax]",
    "lock add qword ptr [rax + 16], rcx",
    "movq xmm1, rcx",
    "xor eax, eax",
    "xor edx, edx",
    "ret",
    ".globl userbpf_leaf_vector_end",
    "userbpf_leaf_vector_end:",
    ".size userbpf_leaf_vector, . - userbpf_leaf_vector",
);

extern "C" {
    fn userbpf_leaf_count();
    fn userbpf_leaf_count_end();
    fn userbpf_leaf_vector();
    fn userbpf_leaf_vector_end();
}

fn leaf(start: unsafe extern "C" fn(), end: unsafe extern "C" fn()) -> LeafCode {
    let (s, e) = (start as *const () as usize, end as *const () as usize);
    LeafCode {
        entry: s,
        len: e - s,
    }
}

/// A probe whose work is the leaf code (or, from the dispatcher, the same
/// in Rust).
struct LeafProbe(LeafCode);

impl Probe for LeafProbe {
    fn hit(&self, regs: &mut PtRegs) -> Action {
        // SAFETY: the hooked functions' second argument is a `Counters`.
        let c = unsafe { &*(regs.si as *const Counters) };
        c.rust.fetch_add(1, Ordering::SeqCst);
        c.sum.fetch_add(regs.di, Ordering::SeqCst);
        Action::Continue
    }

    fn lean(&self) -> bool {
        true
    }

    fn direct(&self) -> Option<LeafCode> {
        Some(self.0)
    }
}

fn counting() -> Arc<LeafProbe> {
    Arc::new(LeafProbe(leaf(userbpf_leaf_count, userbpf_leaf_count_end)))
}

/// A probe that needs the dispatcher (counts its hits).
struct Plain(AtomicU64);

impl Probe for Plain {
    fn hit(&self, _regs: &mut PtRegs) -> Action {
        self.0.fetch_add(1, Ordering::SeqCst);
        Action::Continue
    }

    fn lean(&self) -> bool {
        true
    }
}

// Hooked functions `(x, counters) -> x + k`, one per test, beginning with
// `push rbp` as compiled functions do.
macro_rules! target {
    ($name:literal, $k:literal) => {
        std::arch::global_asm!(
            concat!(".globl ", $name),
            concat!(".type ", $name, ", @function"),
            concat!($name, ":"),
            "push rbp",
            "mov rbp, rsp",
            concat!("lea rax, [rdi + ", $k, "]"),
            "pop rbp",
            "ret",
            concat!(".size ", $name, ", . - ", $name),
        );
    };
}

target!("userbpf_direct_a", 1);
target!("userbpf_direct_b", 2);
target!("userbpf_direct_c", 3);
target!("userbpf_direct_d", 4);
target!("userbpf_direct_e", 5);
target!("userbpf_direct_f", 6);
target!("userbpf_direct_keep_callee", 7);
target!("userbpf_direct_g", 8);

extern "C" {
    fn userbpf_direct_a(x: u64, c: *const Counters) -> u64;
    fn userbpf_direct_b(x: u64, c: *const Counters) -> u64;
    fn userbpf_direct_c(x: u64, c: *const Counters) -> u64;
    fn userbpf_direct_d(x: u64, c: *const Counters) -> u64;
    fn userbpf_direct_e(x: u64, c: *const Counters) -> u64;
    fn userbpf_direct_f(x: u64, c: *const Counters) -> u64;
    fn userbpf_direct_g(x: u64, c: *const Counters) -> u64;
}

type Hooked = unsafe extern "C" fn(u64, *const Counters) -> u64;

fn call(f: Hooked, x: u64, c: &Counters) -> u64 {
    // SAFETY: the assembly functions above only add to `x`.
    unsafe { black_box(f)(black_box(x), c) }
}

fn entry_of(f: Hooked) -> Target {
    let address = f as *const () as u64;
    Target {
        address,
        // (The functions are 9 bytes.)
        function: Some((address, 9)),
    }
}

#[test]
fn a_leaf_probe_runs_from_the_trampoline_and_sees_every_call() {
    let c = Counters::default();
    let link = hook::attach(entry_of(userbpf_direct_a), ProbeKind::Entry, counting()).unwrap();
    assert!(link.stats().direct, "{:?}", link.stats());
    let n = 1000u64;
    for i in 0..n {
        assert_eq!(call(userbpf_direct_a, i, &c), i + 1);
    }
    assert_eq!(c.runs(), n, "every call ran the probe once");
    assert_eq!(
        c.sum.load(Ordering::SeqCst),
        n * (n - 1) / 2,
        "the argument"
    );
    // (A thread's first hit may register it through the dispatcher.)
    assert!(
        c.leaf.load(Ordering::SeqCst) >= n - 1,
        "the lane ran the leaf"
    );
    // Another thread: the same.
    let c2 = Arc::new(Counters::default());
    let c3 = Arc::clone(&c2);
    std::thread::spawn(move || {
        for i in 0..n {
            call(userbpf_direct_a, i, &c3);
        }
    })
    .join()
    .unwrap();
    assert_eq!(c2.runs(), n);
    assert_eq!(link.stats().misses, 0);
    assert_eq!(link.stats().direct_faults, 0);
    drop(link);
    call(userbpf_direct_a, 1, &c);
    assert_eq!(c.runs(), n, "detached");
}

#[test]
fn the_lane_gives_way_to_the_dispatcher_when_the_site_has_more_probes() {
    let c = Counters::default();
    let t = entry_of(userbpf_direct_b);
    let leafy = hook::attach(t, ProbeKind::Entry, counting()).unwrap();
    let plain = Arc::new(Plain(AtomicU64::new(0)));
    let other = hook::attach(t, ProbeKind::Entry, plain.clone()).unwrap();
    assert!(
        !leafy.stats().direct,
        "two probes: the dispatcher runs both"
    );
    call(userbpf_direct_b, 5, &c);
    assert_eq!(
        (c.leaf.load(Ordering::SeqCst), c.rust.load(Ordering::SeqCst)),
        (0, 1)
    );
    assert_eq!(plain.0.load(Ordering::SeqCst), 1);
    drop(other);
    assert!(leafy.stats().direct, "alone again");
    call(userbpf_direct_b, 6, &c);
    assert_eq!(c.leaf.load(Ordering::SeqCst), 1);
    // A return probe takes the dispatcher too.
    let ret = hook::attach(t, ProbeKind::Return, plain.clone()).unwrap();
    assert!(!leafy.stats().direct);
    assert_eq!(call(userbpf_direct_b, 7, &c), 9);
    assert_eq!(c.runs(), 3);
    assert_eq!(plain.0.load(Ordering::SeqCst), 2, "the return probe ran");
    drop((ret, leafy));
}

#[test]
fn leaf_code_that_uses_vector_registers_is_run_through_the_dispatcher() {
    let c = Counters::default();
    let probe = Arc::new(LeafProbe(leaf(
        userbpf_leaf_vector,
        userbpf_leaf_vector_end,
    )));
    let link = hook::attach(entry_of(userbpf_direct_c), ProbeKind::Entry, probe).unwrap();
    assert!(!link.stats().direct);
    for i in 0..10 {
        call(userbpf_direct_c, i, &c);
    }
    assert_eq!(
        (c.leaf.load(Ordering::SeqCst), c.rust.load(Ordering::SeqCst)),
        (0, 10)
    );
    let err = hook::codegen::check_leaf(
        userbpf_leaf_vector as *const () as u64,
        &leaf_bytes(leaf(userbpf_leaf_vector, userbpf_leaf_vector_end)),
    )
    .unwrap_err();
    assert!(err.contains("movq xmm1"), "{err}");
    drop(link);
}

fn leaf_bytes(code: LeafCode) -> Vec<u8> {
    // SAFETY: the code's bytes, in this binary's text.
    unsafe { std::slice::from_raw_parts(code.entry as *const u8, code.len).to_vec() }
}

/// Hits inside the dispatcher (here, a probe that calls the function) and
/// during userbpf's own work skip the leaf as they skip any probe.
#[test]
fn the_lane_keeps_the_reentrancy_guard_and_the_quiet_flag() {
    static COUNTERS: Counters = Counters {
        leaf: AtomicU64::new(0),
        rust: AtomicU64::new(0),
        sum: AtomicU64::new(0),
    };
    struct CallsInside;
    impl Probe for CallsInside {
        fn hit(&self, _regs: &mut PtRegs) -> Action {
            call(userbpf_direct_d, 1, &COUNTERS);
            Action::Continue
        }
    }
    let leafy = hook::attach(entry_of(userbpf_direct_d), ProbeKind::Entry, counting()).unwrap();
    let outer = hook::attach(
        entry_of(userbpf_direct_e),
        ProbeKind::Entry,
        Arc::new(CallsInside),
    )
    .unwrap();
    call(userbpf_direct_d, 1, &COUNTERS);
    assert_eq!(COUNTERS.runs(), 1);
    call(userbpf_direct_e, 1, &COUNTERS);
    assert_eq!(COUNTERS.runs(), 1, "re-entered: skipped");
    assert_eq!(leafy.stats().misses, 1, "and counted as a miss");
    userbpf_vm::quiet::scope(|| call(userbpf_direct_d, 1, &COUNTERS));
    assert_eq!(COUNTERS.runs(), 1, "userbpf's own work is not seen");
    assert_eq!(leafy.stats().misses, 1);
    drop((outer, leafy));
}

// A caller that keeps values in every general register but rax and rdi
// across a call (and in xmm9), as interprocedural register allocation
// may: returns 0 when all survived.
std::arch::global_asm!(
    ".globl userbpf_direct_keep_caller",
    ".type userbpf_direct_keep_caller, @function",
    "userbpf_direct_keep_caller:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 8",
    "mov rsi, rdi",
    "mov edi, 5",
    "mov rbx, 0x1111111111111111",
    "mov rbp, 0x2222222222222222",
    "mov r12, 0x3333333333333333",
    "mov r13, 0x4444444444444444",
    "mov r14, 0x5555555555555555",
    "mov r15, 0x6666666666666666",
    "mov rcx, 0x7777777777777777",
    "mov rdx, 0x8888888888888888",
    "mov r8, 0x9999999999999999",
    "mov r9, 0xaaaaaaaaaaaaaaaa",
    "mov r10, 0xbbbbbbbbbbbbbbbb",
    "mov r11, 0xcccccccccccccccc",
    "movq xmm9, r11",
    "call userbpf_direct_keep_callee",
    "mov rax, 0x1111111111111111",
    "xor rbx, rax",
    "mov rax, 0x2222222222222222",
    "xor rbp, rax",
    "or rbx, rbp",
    "mov rax, 0x3333333333333333",
    "xor r12, rax",
    "or rbx, r12",
    "mov rax, 0x4444444444444444",
    "xor r13, rax",
    "or rbx, r13",
    "mov rax, 0x5555555555555555",
    "xor r14, rax",
    "or rbx, r14",
    "mov rax, 0x6666666666666666",
    "xor r15, rax",
    "or rbx, r15",
    "mov rax, 0x7777777777777777",
    "xor rcx, rax",
    "or rbx, rcx",
    "mov rax, 0x8888888888888888",
    "xor rdx, rax",
    "or rbx, rdx",
    "mov rax, 0x9999999999999999",
    "xor r8, rax",
    "or rbx, r8",
    "mov rax, 0xaaaaaaaaaaaaaaaa",
    "xor r9, rax",
    "or rbx, r9",
    "mov rax, 0xbbbbbbbbbbbbbbbb",
    "xor r10, rax",
    "or rbx, r10",
    "mov rax, 0xcccccccccccccccc",
    "xor r11, rax",
    "or rbx, r11",
    "movq rcx, xmm9",
    "xor rcx, rax",
    "or rbx, rcx",
    "xor rdi, 5",
    "or rbx, rdi",
    "mov rax, rbx",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    ".size userbpf_direct_keep_caller, . - userbpf_direct_keep_caller",
);

extern "C" {
    fn userbpf_direct_keep_caller(c: *const Counters) -> u64;
    fn userbpf_direct_keep_callee(x: u64, c: *const Counters) -> u64;
}

#[test]
fn the_lane_keeps_every_register_a_caller_keeps_across_the_call() {
    let c = Counters::default();
    // SAFETY: the assembly caller above.
    let run = || unsafe { userbpf_direct_keep_caller(black_box(&c)) };
    assert_eq!(run(), 0, "unhooked");
    let link = hook::attach(
        entry_of(userbpf_direct_keep_callee),
        ProbeKind::Entry,
        counting(),
    )
    .unwrap();
    assert!(link.stats().direct);
    for _ in 0..3 {
        assert_eq!(run(), 0, "hooked: some register changed");
    }
    assert_eq!(c.runs(), 3);
    assert!(c.leaf.load(Ordering::SeqCst) >= 2);
    assert_eq!(c.sum.load(Ordering::SeqCst), 15, "the first argument");
    drop(link);
}

/// 8 threads call a function with a leaf probe while another thread
/// attaches and detaches it 1,000 times (and now and then a return leaf,
/// or a second probe that turns the lanes off): no crash, every call
/// returns its value, no more runs than an entry and a return per call,
/// and in a final window with the entry probe attached every call runs it
/// once.
#[test]
fn attaching_and_detaching_a_leaf_probe_under_eight_calling_threads() {
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (c, stop, calls) = (counters.clone(), stop.clone(), calls.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(call(userbpf_direct_f, n, &c), n + 6);
                    n += 1;
                }
                calls.fetch_add(n, Ordering::SeqCst);
            })
        })
        .collect();
    let t = entry_of(userbpf_direct_f);
    let plain = Arc::new(Plain(AtomicU64::new(0)));
    for i in 0..1000 {
        let link = hook::attach(t, ProbeKind::Entry, counting()).unwrap();
        let ret = (i % 3 == 0).then(|| hook::attach(t, ProbeKind::Return, counting()).unwrap());
        let other = (i % 7 == 0).then(|| hook::attach(t, ProbeKind::Entry, plain.clone()).unwrap());
        std::thread::yield_now();
        drop(other);
        drop(link);
        drop(ret);
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let made = calls.load(Ordering::SeqCst);
    assert!(
        counters.runs() <= made,
        "{} runs for {made} calls",
        counters.runs()
    );
    let link = hook::attach(t, ProbeKind::Entry, counting()).unwrap();
    let before = counters.runs();
    for i in 0..10_000 {
        call(userbpf_direct_f, i, &counters);
    }
    assert_eq!(counters.runs() - before, 10_000);
    assert_eq!(link.stats().direct_faults, 0);
    drop(link);
}

/// An entry and a return probe that are both leaves run from the
/// trampoline and the lean return handler: each call runs both once, on
/// many threads, and the thread's pending returns are all taken.
#[test]
fn leaf_entry_and_return_probes_run_without_the_dispatcher() {
    let t = entry_of(userbpf_direct_g);
    let e = hook::attach(t, ProbeKind::Entry, counting()).unwrap();
    let r = hook::attach(t, ProbeKind::Return, counting()).unwrap();
    assert!(r.stats().direct, "{:?}", r.stats());
    let n = 2000u64;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let c = Counters::default();
                for i in 0..n {
                    assert_eq!(call(userbpf_direct_g, i, &c), i + 8);
                }
                assert_eq!(hook::thread::pending_returns(), 0);
                (
                    c.leaf.load(Ordering::SeqCst),
                    c.runs(),
                    c.sum.load(Ordering::SeqCst),
                )
            })
        })
        .collect();
    for t in threads {
        let (leaf, runs, sum) = t.join().unwrap();
        assert_eq!(runs, 2 * n, "an entry and a return run per call");
        assert_eq!(sum, n * (n - 1), "both saw the argument");
        assert!(leaf >= 2 * n - 2, "the lanes ran the leaves: {leaf}");
    }
    assert_eq!(r.stats().missed_returns, 0);
    // A return leaf alone.
    drop(e);
    assert!(r.stats().direct);
    let c = Counters::default();
    for i in 0..100 {
        call(userbpf_direct_g, i, &c);
    }
    assert_eq!(c.runs(), 100);
    assert_eq!(r.stats().direct_faults, 0);
    drop(r);
}

/// A return leaf on a recursive function: every level's return runs it,
/// deepest first, and the pending returns end empty.
#[test]
fn a_return_leaf_sees_every_level_of_a_recursion() {
    #[inline(never)]
    extern "C" fn down(x: u64, c: *const Counters) -> u64 {
        // SAFETY: `c` is a live `Counters`.
        let r = if x == 0 {
            0
        } else {
            black_box(down)(x - 1, c) + 1
        };
        black_box(r)
    }
    let address = down as *const () as u64;
    let sym = userbpf_shims::symbols::resolve(&format!("{address:#x}")).ok();
    let t = Target {
        address,
        function: sym.and_then(|s| s.symbol.map(|_| (s.address - s.offset_in_symbol, s.size))),
    };
    let r = hook::attach(t, ProbeKind::Return, counting()).unwrap();
    assert!(r.stats().direct);
    let c = Counters::default();
    assert_eq!(down(20, &c), 20);
    // The return leaf reads `rdi`/`rsi` as the function left them: only
    // the count is exact.
    assert_eq!(c.runs(), 21);
    assert_eq!(hook::thread::pending_returns(), 0);
    assert_eq!(r.stats().missed_returns, 0);
    drop(r);
}
