//! In-process uprobes and uretprobes on functions of this test binary.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use userbpf_shims::hook::{self, Action, HookError, Probe, ProbeKind, PtRegs, Target};

/// Counts hits and remembers the last `di` (first argument) and `ax`.
#[derive(Default)]
struct Recorder {
    hits: AtomicU64,
    last_di: AtomicU64,
    last_ax: AtomicU64,
    last_ip: AtomicU64,
    seen: Mutex<Vec<u64>>,
    keep: bool,
}

impl Probe for Recorder {
    fn hit(&self, regs: &mut PtRegs) -> Action {
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.last_di.store(regs.di, Ordering::SeqCst);
        self.last_ax.store(regs.ax, Ordering::SeqCst);
        self.last_ip.store(regs.ip, Ordering::SeqCst);
        if self.keep {
            if let Ok(mut s) = self.seen.lock() {
                s.push(regs.ax);
            }
        }
        Action::Continue
    }
}

fn target(f: usize) -> Target {
    Target {
        address: f as u64,
        function: None,
    }
}

fn first_bytes(f: usize, n: usize) -> Vec<u8> {
    // SAFETY: `f` is a function of this binary with at least `n` bytes.
    unsafe { std::slice::from_raw_parts(f as *const u8, n).to_vec() }
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn hooked_mul_add(a: u64, b: u64) -> u64 {
    black_box(a).wrapping_mul(3).wrapping_add(black_box(b))
}

#[test]
fn entry_probe_sees_every_call_and_its_arguments_and_detach_restores_the_bytes() {
    let f = hooked_mul_add as *const () as usize;
    let before = first_bytes(f, 16);
    let rec = Arc::new(Recorder::default());
    let link = hook::attach(target(f), ProbeKind::Entry, rec.clone()).expect("attach");
    assert_ne!(first_bytes(f, 16), before, "the site is patched");
    let mut sum = 0u64;
    for i in 0..1000u64 {
        sum = sum.wrapping_add(black_box(hooked_mul_add)(i, 7));
    }
    assert_eq!(
        sum,
        (0..1000u64).map(|i| i * 3 + 7).sum::<u64>(),
        "results unchanged"
    );
    assert_eq!(rec.hits.load(Ordering::SeqCst), 1000);
    assert_eq!(rec.last_di.load(Ordering::SeqCst), 999);
    assert_eq!(
        rec.last_ip.load(Ordering::SeqCst),
        f as u64,
        "ip is the probed address"
    );
    drop(link);
    assert_eq!(
        first_bytes(f, 16),
        before,
        "detaching restores the original bytes"
    );
    black_box(hooked_mul_add)(1, 2);
    assert_eq!(
        rec.hits.load(Ordering::SeqCst),
        1000,
        "no hits after detach"
    );
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn hooked_fib(n: u64) -> u64 {
    if black_box(n) < 2 {
        return n;
    }
    hooked_fib(n - 1) + hooked_fib(n - 2)
}

#[test]
fn return_probe_sees_every_return_value_through_recursion() {
    let f = hooked_fib as *const () as usize;
    let rec = Arc::new(Recorder {
        keep: true,
        ..Recorder::default()
    });
    let entry = Arc::new(Recorder::default());
    let l1 = hook::attach(target(f), ProbeKind::Return, rec.clone()).expect("attach ret");
    let l2 = hook::attach(target(f), ProbeKind::Entry, entry.clone()).expect("attach entry");
    assert_eq!(black_box(hooked_fib)(10), 55);
    // fib(10) makes 177 calls.
    assert_eq!(entry.hits.load(Ordering::SeqCst), 177);
    assert_eq!(rec.hits.load(Ordering::SeqCst), 177);
    assert_eq!(
        rec.last_ax.load(Ordering::SeqCst),
        55,
        "the outermost return is last"
    );
    let seen = rec.seen.lock().unwrap().clone();
    // Every return value is fib of something, and the values match a
    // plain recursion's returns in order.
    fn expect(n: u64, out: &mut Vec<u64>) -> u64 {
        let r = if n < 2 {
            n
        } else {
            expect(n - 1, out) + expect(n - 2, out)
        };
        out.push(r);
        r
    }
    let mut want = Vec::new();
    expect(10, &mut want);
    assert_eq!(seen, want);
    drop((l1, l2));
    assert_eq!(black_box(hooked_fib)(5), 5);
    assert_eq!(rec.hits.load(Ordering::SeqCst), 177);
}

/// Eight arguments: the last two arrive on the stack, just above the
/// return address the uretprobe replaces.
#[no_mangle]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn hooked_eight(
    a: u64,
    b: u64,
    c: u64,
    d: u64,
    e: u64,
    f: u64,
    g: u64,
    h: u64,
) -> u64 {
    black_box(a) + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * black_box(g) + 8 * black_box(h)
}

#[test]
fn a_function_with_stack_arguments_sees_them_under_a_return_probe() {
    let f = hooked_eight as *const () as usize;
    let rec = Arc::new(Recorder {
        keep: true,
        ..Recorder::default()
    });
    let link = hook::attach(target(f), ProbeKind::Return, rec.clone()).expect("attach ret");
    let mut want = Vec::new();
    for i in 0..100u64 {
        let r = black_box(hooked_eight)(i, 1, 2, 3, 4, 5, 1000 + i, 2000 + i);
        let expect = i + 2 + 6 + 12 + 20 + 30 + 7 * (1000 + i) + 8 * (2000 + i);
        assert_eq!(r, expect, "call {i}");
        want.push(expect);
    }
    assert_eq!(
        *rec.seen.lock().unwrap(),
        want,
        "the return probe saw every value"
    );
    drop(link);
}

static SIDE_EFFECTS: AtomicU64 = AtomicU64::new(0);

#[no_mangle]
#[inline(never)]
pub extern "C" fn hooked_fallible(x: u64) -> u64 {
    SIDE_EFFECTS.fetch_add(1, Ordering::SeqCst);
    black_box(x) + 1
}

struct Override(u64);

impl Probe for Override {
    fn hit(&self, _regs: &mut PtRegs) -> Action {
        Action::Return(self.0)
    }
}

#[test]
fn an_entry_probe_can_make_the_function_return_at_once() {
    let f = hooked_fallible as *const () as usize;
    let ret = Arc::new(Recorder::default());
    let l1 = hook::attach(
        target(f),
        ProbeKind::Entry,
        Arc::new(Override(u64::MAX - 11)),
    )
    .expect("attach");
    let l2 = hook::attach(target(f), ProbeKind::Return, ret.clone()).expect("attach ret");
    assert_eq!(black_box(hooked_fallible)(5), u64::MAX - 11);
    assert_eq!(
        SIDE_EFFECTS.load(Ordering::SeqCst),
        0,
        "the function did not run"
    );
    assert_eq!(
        ret.last_ax.load(Ordering::SeqCst),
        u64::MAX - 11,
        "return probes see the value"
    );
    drop(l1);
    assert_eq!(black_box(hooked_fallible)(5), 6);
    assert_eq!(SIDE_EFFECTS.load(Ordering::SeqCst), 1);
    drop(l2);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn hooked_reentered(x: u64) -> u64 {
    black_box(x).wrapping_mul(5).rotate_left(3)
}

/// Calls the hooked function from inside the probe.
struct Reenter(AtomicU64);

impl Probe for Reenter {
    fn hit(&self, _regs: &mut PtRegs) -> Action {
        self.0.fetch_add(1, Ordering::SeqCst);
        black_box(hooked_reentered)(1);
        Action::Continue
    }
}

#[test]
fn a_hook_reentered_from_its_probe_skips_the_probe_and_counts_a_miss() {
    let f = hooked_reentered as *const () as usize;
    let p = Arc::new(Reenter(AtomicU64::new(0)));
    let link = hook::attach(target(f), ProbeKind::Entry, p.clone()).expect("attach");
    for _ in 0..10 {
        black_box(hooked_reentered)(2);
    }
    assert_eq!(p.0.load(Ordering::SeqCst), 10);
    assert_eq!(link.stats().misses, 10);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn hooked_ordered(x: u64) -> u64 {
    black_box(x) ^ 0x55
}

struct Tag(u64, Arc<Mutex<Vec<u64>>>);

impl Probe for Tag {
    fn hit(&self, _regs: &mut PtRegs) -> Action {
        self.1.lock().unwrap().push(self.0);
        Action::Continue
    }
}

struct Panics;

impl Probe for Panics {
    fn hit(&self, _regs: &mut PtRegs) -> Action {
        panic!("a probe that panics");
    }
}

#[test]
fn probes_on_one_site_run_in_attach_order_and_a_panicking_probe_is_contained() {
    let f = hooked_ordered as *const () as usize;
    let log = Arc::new(Mutex::new(Vec::new()));
    let a = hook::attach(target(f), ProbeKind::Entry, Arc::new(Tag(1, log.clone()))).unwrap();
    let bad = hook::attach(target(f), ProbeKind::Entry, Arc::new(Panics)).unwrap();
    let b = hook::attach(target(f), ProbeKind::Entry, Arc::new(Tag(2, log.clone()))).unwrap();
    let c = hook::attach(target(f), ProbeKind::Entry, Arc::new(Tag(3, log.clone()))).unwrap();
    assert_eq!(black_box(hooked_ordered)(0), 0x55);
    drop(b);
    assert_eq!(black_box(hooked_ordered)(1), 0x54);
    assert_eq!(*log.lock().unwrap(), vec![1, 2, 3, 1, 3]);
    drop((a, bad, c));
}

// Functions shorter than a jump: `hooked_tiny` (3 bytes) is followed by
// alignment padding, `hooked_tiny_a` (1 byte) directly by another
// function.
std::arch::global_asm!(
    ".p2align 4",
    ".globl hooked_tiny",
    ".type hooked_tiny, @function",
    "hooked_tiny:",
    "lea eax, [rdi + 1]",
    "ret",
    ".size hooked_tiny, . - hooked_tiny",
    ".p2align 4",
    ".globl hooked_tiny_a",
    ".type hooked_tiny_a, @function",
    "hooked_tiny_a:",
    "ret",
    ".size hooked_tiny_a, . - hooked_tiny_a",
    ".globl hooked_tiny_b",
    ".type hooked_tiny_b, @function",
    "hooked_tiny_b:",
    "mov eax, 7",
    "ret",
    ".size hooked_tiny_b, . - hooked_tiny_b",
    ".p2align 4",
    ".globl hooked_tiny_spin",
    ".type hooked_tiny_spin, @function",
    "hooked_tiny_spin:",
    "nop",
    "2: jmp 2b",
    ".size hooked_tiny_spin, . - hooked_tiny_spin",
    ".p2align 4",
);

extern "C" {
    fn hooked_tiny(x: u32) -> u32;
    fn hooked_tiny_a();
    fn hooked_tiny_b() -> u32;
}

/// The target of a symbol of this binary, with its function's extent.
fn symbol_target(name: &str) -> Target {
    let r = userbpf_shims::symbols::resolve(&format!("self:{name}")).expect("symbol");
    Target {
        address: r.address,
        function: Some((r.address - r.offset_in_symbol, r.size)),
    }
}

#[test]
fn a_function_shorter_than_a_jump_is_hooked_through_the_padding_after_it() {
    let t = symbol_target("hooked_tiny");
    assert_eq!(t.function.map(|f| f.1), Some(4), "lea (3 bytes) and ret");
    let entry = Arc::new(Recorder::default());
    let ret = Arc::new(Recorder {
        keep: true,
        ..Recorder::default()
    });
    let l1 = hook::attach(t, ProbeKind::Entry, entry.clone()).expect("entry probe");
    let l2 = hook::attach(t, ProbeKind::Return, ret.clone()).expect("return probe");
    for i in 0..10u32 {
        // SAFETY: the assembly function above (u32 -> u32).
        assert_eq!(unsafe { black_box(hooked_tiny)(i) }, i + 1);
    }
    assert_eq!(entry.hits.load(Ordering::SeqCst), 10);
    assert_eq!(entry.last_di.load(Ordering::SeqCst), 9);
    assert_eq!(*ret.seen.lock().unwrap(), (1..=10).collect::<Vec<u64>>());
    drop((l1, l2));
    // SAFETY: as above.
    assert_eq!(unsafe { black_box(hooked_tiny)(41) }, 42);
    assert_eq!(entry.hits.load(Ordering::SeqCst), 10, "detached");
}

#[test]
fn a_function_shorter_than_a_jump_that_branches_into_its_own_first_bytes_is_refused() {
    // `nop; 2: jmp 2b` (never called): padding follows, but the jump
    // lands inside the bytes a patch would replace.
    let t = symbol_target("hooked_tiny_spin");
    let before = first_bytes(t.address as usize, 8);
    let err = hook::attach(t, ProbeKind::Entry, Arc::new(Recorder::default()))
        .expect_err("a branch into the window");
    assert!(err.to_string().contains("branches into"), "{err}");
    assert_eq!(
        first_bytes(t.address as usize, 8),
        before,
        "nothing patched"
    );
}

#[test]
fn sites_that_cannot_be_patched_are_refused_with_the_reason() {
    // A 1-byte function with another function right after it: no room.
    let t = symbol_target("hooked_tiny_a");
    let before = first_bytes(t.address as usize, 8);
    let err = hook::attach(t, ProbeKind::Entry, Arc::new(Recorder::default()))
        .expect_err("a 1-byte function without padding");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{:#x}", t.address)), "{msg}");
    assert!(
        msg.contains("too short") && msg.contains("padding"),
        "{msg}"
    );
    assert_eq!(
        first_bytes(t.address as usize, 8),
        before,
        "nothing patched"
    );
    // SAFETY: the assembly functions above.
    unsafe {
        black_box(hooked_tiny_a)();
        assert_eq!(black_box(hooked_tiny_b)(), 7);
    }
    let heap = Box::new([0u8; 64]);
    let err = hook::attach(
        target(heap.as_ptr() as usize),
        ProbeKind::Entry,
        Arc::new(Recorder::default()),
    )
    .expect_err("data");
    assert!(matches!(err, HookError::NotCode { .. }), "{err}");
    let f = hooked_mul_add as *const () as usize;
    let err = hook::attach(
        Target {
            address: f as u64 + 4,
            function: Some((f as u64, 16)),
        },
        ProbeKind::Return,
        Arc::new(Recorder::default()),
    )
    .expect_err("a return probe inside a function");
    assert!(
        matches!(err, HookError::NotEntry { offset: 4, .. }),
        "{err}"
    );
}

// A function whose first bytes are several short instructions (`push
// rbp` is one byte): a thread can be preempted between them, which the
// patching must handle.
std::arch::global_asm!(
    ".globl hooked_hammered",
    ".type hooked_hammered, @function",
    "hooked_hammered:",
    "push rbp",
    "mov rbp, rsp",
    "lea rax, [rdi + 1]",
    "nop",
    "pop rbp",
    "ret",
    ".size hooked_hammered, . - hooked_hammered",
);

extern "C" {
    fn hooked_hammered(x: u64) -> u64;
}

#[test]
fn attach_and_detach_a_thousand_times_while_eight_threads_call_the_function() {
    let f = hooked_hammered as *const () as usize;
    assert_eq!(first_bytes(f, 1), [0x55], "starts with push rbp");
    let before = first_bytes(f, 16);
    let rec = Arc::new(Recorder::default());
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (stop, calls) = (stop.clone(), calls.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: an assembly function taking and returning a u64.
                    let r = unsafe { black_box(hooked_hammered)(n) };
                    assert_eq!(r, n.wrapping_add(1), "a hooked call returned a wrong value");
                    n += 1;
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                n
            })
        })
        .collect();
    for _ in 0..1000 {
        let link = hook::attach(target(f), ProbeKind::Entry, rec.clone()).expect("attach");
        drop(link);
    }
    assert_eq!(first_bytes(f, 16), before);
    // A final window with the probe attached: the count grows by exactly
    // the calls made in it (workers paused around it).
    stop.store(true, Ordering::SeqCst);
    let total: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    assert!(
        rec.hits.load(Ordering::SeqCst) <= total,
        "more hits than calls"
    );
    let link = hook::attach(target(f), ProbeKind::Entry, rec.clone()).expect("attach");
    let start = rec.hits.load(Ordering::SeqCst);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut made = 0usize;
                for i in 0..10_000u64 {
                    // SAFETY: as above.
                    black_box(unsafe { black_box(hooked_hammered)(i + t) });
                    made += 1;
                }
                made
            })
        })
        .collect();
    let made: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(rec.hits.load(Ordering::SeqCst) - start, made as u64);
    drop(link);
    assert_eq!(first_bytes(f, 16), before);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn hooked_detacher(x: u64) -> u64 {
    black_box(x).wrapping_sub(3)
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn hooked_detached(x: u64) -> u64 {
    black_box(x).wrapping_add(9)
}

/// Detaches another probe from inside its own hit.
struct Detacher(Mutex<Option<hook::ProbeLink>>);

impl Probe for Detacher {
    fn hit(&self, _regs: &mut PtRegs) -> Action {
        drop(self.0.lock().unwrap().take());
        Action::Continue
    }
}

#[test]
fn a_probe_may_detach_another_from_inside_its_hit() {
    let victim = hooked_detached as *const () as usize;
    let rec = Arc::new(Recorder::default());
    let link = hook::attach(target(victim), ProbeKind::Entry, rec.clone()).unwrap();
    black_box(hooked_detached)(1);
    assert_eq!(rec.hits.load(Ordering::SeqCst), 1);
    let d = Arc::new(Detacher(Mutex::new(Some(link))));
    let f = hooked_detacher as *const () as usize;
    let l2 = hook::attach(target(f), ProbeKind::Entry, d.clone()).unwrap();
    assert_eq!(black_box(hooked_detacher)(10), 7);
    assert!(d.0.lock().unwrap().is_none(), "detached from the probe");
    black_box(hooked_detached)(1);
    assert_eq!(
        rec.hits.load(Ordering::SeqCst),
        1,
        "the victim's probe is gone"
    );
    drop(l2);
}

#[no_mangle]
#[inline(never)]
pub fn hooked_panicker(x: u64) -> u64 {
    if black_box(x) == 1 {
        panic!("unwinding through a uretprobe");
    }
    x + 1
}

#[test]
fn a_panic_unwinding_through_a_pending_uretprobe_does_not_end_the_process() {
    let f = hooked_panicker as fn(u64) -> u64 as usize;
    let rec = Arc::new(Recorder::default());
    let link = hook::attach(target(f), ProbeKind::Return, rec.clone()).expect("attach");
    assert_eq!(black_box(hooked_panicker)(5), 6);
    assert_eq!(rec.hits.load(Ordering::SeqCst), 1);
    let before = hook::skipped_returns();
    let r = std::panic::catch_unwind(|| black_box(hooked_panicker)(1));
    assert!(r.is_err(), "the panic reached its catch");
    assert!(
        hook::skipped_returns() > before,
        "the missed return is counted"
    );
    // Still working afterwards.
    assert_eq!(black_box(hooked_panicker)(7), 8);
    assert_eq!(rec.hits.load(Ordering::SeqCst), 2);
    drop(link);
}

// A loop whose branch lands in the bytes a patch would replace (the
// `add` at +2, inside the first 5 bytes).
std::arch::global_asm!(
    ".globl hooked_branch_into_prologue",
    ".type hooked_branch_into_prologue, @function",
    "hooked_branch_into_prologue:",
    "xor eax, eax",
    "2: add rax, rdi",
    "dec rdi",
    "jnz 2b",
    "ret",
    ".size hooked_branch_into_prologue, . - hooked_branch_into_prologue",
);

extern "C" {
    fn hooked_branch_into_prologue(n: u64) -> u64;
}

#[test]
fn a_site_that_a_branch_of_its_function_lands_in_is_refused() {
    let f = hooked_branch_into_prologue as *const () as usize;
    let r = userbpf_shims::symbols::resolve("self:hooked_branch_into_prologue").expect("symbol");
    assert_eq!(r.address, f as u64);
    let before = first_bytes(f, 12);
    let err = hook::attach(
        Target {
            address: r.address,
            function: Some((r.address, r.size)),
        },
        ProbeKind::Entry,
        Arc::new(Recorder::default()),
    )
    .expect_err("a branch into the patched bytes");
    let msg = err.to_string();
    assert!(
        msg.contains("branches to") && msg.contains(&format!("{f:#x}")),
        "{msg}"
    );
    assert_eq!(first_bytes(f, 12), before, "nothing was patched");
    // SAFETY: an assembly function taking and returning a u64.
    assert_eq!(unsafe { black_box(hooked_branch_into_prologue)(4) }, 10);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn hooked_during_own_work(x: u64) -> u64 {
    black_box(x).wrapping_add(11)
}

/// Calls made during userbpf's own work (`userbpf_vm::quiet`: loading,
/// attaching, background compilation) run no probe, entry or return, and
/// count no miss; the same calls outside it do.
#[test]
fn calls_during_userbpfs_own_work_run_no_probe_and_count_no_miss() {
    let t = symbol_target("hooked_during_own_work");
    let entry = Arc::new(Recorder::default());
    let ret = Arc::new(Recorder::default());
    let e = hook::attach(t, ProbeKind::Entry, entry.clone()).expect("attach");
    let r = hook::attach(t, ProbeKind::Return, ret.clone()).expect("attach");
    userbpf_vm::quiet::scope(|| {
        for i in 0..5 {
            assert_eq!(black_box(hooked_during_own_work)(i), i + 11);
        }
    });
    assert_eq!(entry.hits.load(Ordering::SeqCst), 0);
    assert_eq!(ret.hits.load(Ordering::SeqCst), 0);
    assert_eq!((e.stats().misses, r.stats().missed_returns), (0, 0));
    for i in 0..3 {
        assert_eq!(black_box(hooked_during_own_work)(i), i + 11);
    }
    assert_eq!(entry.hits.load(Ordering::SeqCst), 3);
    assert_eq!(ret.hits.load(Ordering::SeqCst), 3);
    assert_eq!(ret.last_ax.load(Ordering::SeqCst), 13);
}

/// [`hook::LEAN_WORDS`] names the `pt_regs` fields a lean frame saves.
#[test]
fn lean_words_are_the_saved_fields() {
    use std::mem::offset_of;
    let word = |off: usize| 1u64 << (off / 8);
    let lean = [
        offset_of!(PtRegs, bx),
        offset_of!(PtRegs, r11),
        offset_of!(PtRegs, r10),
        offset_of!(PtRegs, r9),
        offset_of!(PtRegs, r8),
        offset_of!(PtRegs, ax),
        offset_of!(PtRegs, cx),
        offset_of!(PtRegs, dx),
        offset_of!(PtRegs, si),
        offset_of!(PtRegs, di),
        offset_of!(PtRegs, ip),
        offset_of!(PtRegs, sp),
    ];
    assert_eq!(hook::LEAN_WORDS, lean.iter().fold(0, |m, &o| m | word(o)));
}

/// `di`, `ip`, `sp`, `cs`, `orig_ax` of a frame.
type FrameWords = (u64, u64, u64, u64, u64);

/// Records what a probe saw of the frame.
struct Seen {
    lean: bool,
    hits: AtomicU64,
    last: Mutex<Option<FrameWords>>,
}

impl Seen {
    fn new(lean: bool) -> Arc<Seen> {
        Arc::new(Seen {
            lean,
            hits: AtomicU64::new(0),
            last: Mutex::new(None),
        })
    }
}

impl Probe for Seen {
    fn hit(&self, regs: &mut PtRegs) -> Action {
        self.hits.fetch_add(1, Ordering::SeqCst);
        *self.last.lock().unwrap() = Some((regs.di, regs.ip, regs.sp, regs.cs, regs.orig_ax));
        if regs.di == 99 {
            return Action::Return(4242);
        }
        Action::Continue
    }

    fn lean(&self) -> bool {
        self.lean
    }
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn hooked_lean(x: u64) -> u64 {
    black_box(x).wrapping_mul(5)
}

/// A site whose probes are all lean saves a lean frame, which still gives
/// them the arguments, `ip` and `sp`, and lets them return at once; a
/// probe that is not lean, attached to the same site, gets the full
/// frame (`cs`, `orig_ax` as the kernel's), and detaching it goes back.
#[test]
fn lean_probes_get_a_lean_frame_and_a_full_probe_gets_the_full_one() {
    let t = symbol_target("hooked_lean");
    let lean = Seen::new(true);
    let l = hook::attach(t, ProbeKind::Entry, lean.clone()).expect("attach");
    assert!(l.stats().lean_frame);
    assert_eq!(black_box(hooked_lean)(7), 35);
    let (di, ip, sp, _, _) = lean.last.lock().unwrap().expect("a hit");
    assert_eq!((di, ip), (7, t.address));
    assert_eq!(sp % 16, 8, "the stack pointer at a function's entry");
    assert_eq!(black_box(hooked_lean)(99), 4242, "returned at once");
    let full = Seen::new(false);
    let f = hook::attach(t, ProbeKind::Entry, full.clone()).expect("attach");
    assert!(!l.stats().lean_frame);
    assert_eq!(black_box(hooked_lean)(8), 40);
    let (di, ip, _, cs, orig_ax) = full.last.lock().unwrap().expect("a hit");
    assert_eq!((di, ip, cs, orig_ax), (8, t.address, 0x33, u64::MAX));
    drop(f);
    assert!(l.stats().lean_frame);
    assert_eq!(black_box(hooked_lean)(9), 45);
    assert_eq!(lean.last.lock().unwrap().expect("a hit").0, 9);
    assert_eq!(lean.hits.load(Ordering::SeqCst), 4);
    assert_eq!(full.hits.load(Ordering::SeqCst), 1);
    assert_eq!(l.stats().misses, 0);
}

// A caller that keeps values in vector registers across a call, as GCC's
// interprocedural register allocation (`-fipa-ra`, on at -O2) does when
// it knows the callee leaves them alone: 3.0 in xmm2, 5.0 in xmm9.
std::arch::global_asm!(
    ".globl userbpf_ipra_callee",
    ".type userbpf_ipra_callee, @function",
    "userbpf_ipra_callee:",
    "push rbp",
    "mov rbp, rsp",
    "lea rax, [rdi + 1]",
    "pop rbp",
    "ret",
    ".size userbpf_ipra_callee, . - userbpf_ipra_callee",
    ".globl userbpf_ipra_caller",
    ".type userbpf_ipra_caller, @function",
    "userbpf_ipra_caller:",
    "push rbx",
    "mov rax, 0x4008000000000000",
    "movq xmm2, rax",
    "mov rax, 0x4014000000000000",
    "movq xmm9, rax",
    "call userbpf_ipra_callee",
    "cvtsi2sd xmm0, rax",
    "addsd xmm0, xmm2",
    "addsd xmm0, xmm9",
    "pop rbx",
    "ret",
    ".size userbpf_ipra_caller, . - userbpf_ipra_caller",
);

extern "C" {
    fn userbpf_ipra_caller(x: u64) -> f64;
}

/// Clobbers every vector register (as any code may), and counts.
struct ClobbersVectors(AtomicU64);

impl Probe for ClobbersVectors {
    fn hit(&self, _regs: &mut PtRegs) -> Action {
        self.0.fetch_add(1, Ordering::SeqCst);
        // SAFETY: zeroes the vector registers, declared clobbered.
        unsafe {
            std::arch::asm!(
                "xorps xmm0, xmm0", "xorps xmm1, xmm1", "xorps xmm2, xmm2", "xorps xmm3, xmm3",
                "xorps xmm4, xmm4", "xorps xmm5, xmm5", "xorps xmm6, xmm6", "xorps xmm7, xmm7",
                "xorps xmm8, xmm8", "xorps xmm9, xmm9", "xorps xmm10, xmm10", "xorps xmm11, xmm11",
                "xorps xmm12, xmm12", "xorps xmm13, xmm13", "xorps xmm14, xmm14", "xorps xmm15, xmm15",
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
                out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
                out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            );
        }
        Action::Continue
    }
}

/// Entry and return probes keep every SSE register of the caller, even
/// those the calling convention lets a callee change (a caller compiled
/// with interprocedural register allocation keeps values there).
#[test]
fn probes_keep_the_vector_registers_a_caller_keeps_across_the_call() {
    // SAFETY: the assembly function above (u64 -> f64).
    let call = |x| unsafe { userbpf_ipra_caller(black_box(x)) };
    assert_eq!(call(7), 16.0);
    let t = symbol_target("userbpf_ipra_callee");
    let entry = Arc::new(ClobbersVectors(AtomicU64::new(0)));
    let ret = Arc::new(ClobbersVectors(AtomicU64::new(0)));
    let e = hook::attach(t, ProbeKind::Entry, entry.clone()).expect("attach");
    assert_eq!(call(7), 16.0, "an entry probe");
    let r = hook::attach(t, ProbeKind::Return, ret.clone()).expect("attach");
    assert_eq!(call(10), 19.0, "entry and return probes");
    drop(e);
    assert_eq!(call(20), 29.0, "a return probe");
    drop(r);
    assert_eq!(entry.0.load(Ordering::SeqCst), 2);
    assert_eq!(ret.0.load(Ordering::SeqCst), 2);
}

// A caller with `__m256` state live across a call: an argument in ymm0
// (all ones) and a value kept in ymm9 (all ones). Returns the low word of
// the upper half of each, and-ed: all ones when both survived.
std::arch::global_asm!(
    ".globl userbpf_avx_callee",
    ".type userbpf_avx_callee, @function",
    "userbpf_avx_callee:",
    "push rbp",
    "mov rbp, rsp",
    "mov rax, rdi",
    "pop rbp",
    "ret",
    ".size userbpf_avx_callee, . - userbpf_avx_callee",
    ".globl userbpf_avx_caller",
    ".type userbpf_avx_caller, @function",
    "userbpf_avx_caller:",
    "push rbx",
    "vpcmpeqd ymm0, ymm0, ymm0",
    "vpcmpeqd ymm9, ymm9, ymm9",
    "call userbpf_avx_callee",
    "vextractf128 xmm1, ymm0, 1",
    "vextractf128 xmm2, ymm9, 1",
    "movq rax, xmm1",
    "movq rbx, xmm2",
    "and rax, rbx",
    "vzeroupper",
    "pop rbx",
    "ret",
    ".size userbpf_avx_caller, . - userbpf_avx_caller",
);

extern "C" {
    fn userbpf_avx_caller() -> u64;
}

/// Zeroes the upper halves of every ymm register, as libc's AVX `memcpy`
/// does on its way out.
struct Vzeroupper(AtomicU64);

impl Probe for Vzeroupper {
    fn hit(&self, _regs: &mut PtRegs) -> Action {
        self.0.fetch_add(1, Ordering::SeqCst);
        // SAFETY: vzeroupper on a CPU with AVX (checked by the test);
        // changes only the vector registers' upper halves.
        unsafe { std::arch::asm!("vzeroupper") };
        Action::Continue
    }
}

/// With AVX, entry and return probes keep the `ymm` registers whole: a
/// `__m256` argument, and what a caller keeps across the call.
#[test]
fn probes_keep_the_avx_state_of_arguments_and_of_the_caller() {
    if !std::arch::is_x86_feature_detected!("avx") {
        eprintln!("skipped: no AVX on this CPU");
        return;
    }
    // SAFETY: the assembly function above, on a CPU with AVX.
    let call = || unsafe { userbpf_avx_caller() };
    assert_eq!(call(), u64::MAX);
    let t = symbol_target("userbpf_avx_callee");
    let entry = Arc::new(Vzeroupper(AtomicU64::new(0)));
    let ret = Arc::new(Vzeroupper(AtomicU64::new(0)));
    let e = hook::attach(t, ProbeKind::Entry, entry.clone()).expect("attach");
    assert_eq!(call(), u64::MAX, "an entry probe");
    let r = hook::attach(t, ProbeKind::Return, ret.clone()).expect("attach");
    assert_eq!(call(), u64::MAX, "entry and return probes");
    drop(e);
    assert_eq!(call(), u64::MAX, "a return probe");
    drop(r);
    assert_eq!(entry.0.load(Ordering::SeqCst), 2);
    assert_eq!(ret.0.load(Ordering::SeqCst), 2);
}

// A function with AVX state live in its middle (ymm4 all ones) at a
// 5-byte nop where a probe goes (a site inside a function).
std::arch::global_asm!(
    ".globl userbpf_avx_middle",
    ".type userbpf_avx_middle, @function",
    "userbpf_avx_middle:",
    "vpcmpeqd ymm4, ymm4, ymm4",
    "mov rax, 0x2a",
    ".globl userbpf_avx_middle_site",
    "userbpf_avx_middle_site:",
    "nop dword ptr [rax + rax * 1 + 0]",
    "add rax, 1",
    "vextractf128 xmm1, ymm4, 1",
    "movq rdx, xmm1",
    "and rax, rdx",
    "vzeroupper",
    "ret",
    ".size userbpf_avx_middle, . - userbpf_avx_middle",
);

extern "C" {
    fn userbpf_avx_middle() -> u64;
    static userbpf_avx_middle_site: u8;
}

/// A probe inside a function keeps the AVX state live there, and the
/// registers and flags.
#[test]
fn a_probe_inside_a_function_keeps_its_avx_state() {
    if !std::arch::is_x86_feature_detected!("avx") {
        eprintln!("skipped: no AVX on this CPU");
        return;
    }
    // SAFETY: the assembly function above, on a CPU with AVX.
    let call = || unsafe { userbpf_avx_middle() };
    assert_eq!(call(), 0x2b);
    let f = symbol_target("userbpf_avx_middle");
    let t = Target {
        address: &raw const userbpf_avx_middle_site as u64,
        function: f.function,
    };
    assert!(!t.at_entry());
    let p = Arc::new(Vzeroupper(AtomicU64::new(0)));
    let link = hook::attach(t, ProbeKind::Entry, p.clone()).expect("attach");
    assert_eq!(call(), 0x2b);
    assert_eq!(call(), 0x2b);
    assert_eq!(p.0.load(Ordering::SeqCst), 2);
    assert_eq!(link.stats().misses, 0);
}

// A caller that keeps values in caller-saved general registers across a
// call (r11 = 1000, rcx = 200, rsi = 30), as interprocedural register
// allocation does when the callee leaves them alone.
std::arch::global_asm!(
    ".globl userbpf_ipra_gpr_callee",
    ".type userbpf_ipra_gpr_callee, @function",
    "userbpf_ipra_gpr_callee:",
    "push rbp",
    "mov rbp, rsp",
    "lea rax, [rdi + 1]",
    "pop rbp",
    "ret",
    ".size userbpf_ipra_gpr_callee, . - userbpf_ipra_gpr_callee",
    ".globl userbpf_ipra_gpr_caller",
    ".type userbpf_ipra_gpr_caller, @function",
    "userbpf_ipra_gpr_caller:",
    "push rbx",
    "mov r11, 1000",
    "mov rcx, 200",
    "mov rsi, 30",
    "call userbpf_ipra_gpr_callee",
    "add rax, r11",
    "add rax, rcx",
    "add rax, rsi",
    "pop rbx",
    "ret",
    ".size userbpf_ipra_gpr_caller, . - userbpf_ipra_gpr_caller",
);

extern "C" {
    fn userbpf_ipra_gpr_caller(x: u64) -> u64;
}

/// Clobbers the caller-saved general registers, and counts; lean or not.
struct ClobbersGprs(AtomicU64, bool);

impl Probe for ClobbersGprs {
    fn hit(&self, regs: &mut PtRegs) -> Action {
        self.0.fetch_add(1, Ordering::SeqCst);
        assert!(regs.ax > 0 || regs.di > 0);
        // SAFETY: changes only registers declared clobbered.
        unsafe {
            std::arch::asm!(
                "mov rcx, -1", "mov rdx, -1", "mov rsi, -1", "mov rdi, -1",
                "mov r8, -1", "mov r9, -1", "mov r10, -1", "mov r11, -1",
                out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            );
        }
        Action::Continue
    }

    fn lean(&self) -> bool {
        self.1
    }
}

/// Entry and return probes, through full and lean frames, keep every
/// general register a caller keeps across the call (r11 included, which
/// the way back to the return handler used to take).
#[test]
fn probes_keep_the_general_registers_a_caller_keeps_across_the_call() {
    // SAFETY: the assembly function above (u64 -> u64).
    let call = |x| unsafe { userbpf_ipra_gpr_caller(black_box(x)) };
    assert_eq!(call(7), 1238);
    let t = symbol_target("userbpf_ipra_gpr_callee");
    for lean in [false, true] {
        let entry = Arc::new(ClobbersGprs(AtomicU64::new(0), lean));
        let ret = Arc::new(ClobbersGprs(AtomicU64::new(0), lean));
        let e = hook::attach(t, ProbeKind::Entry, entry.clone()).expect("attach");
        let r = hook::attach(t, ProbeKind::Return, ret.clone()).expect("attach");
        assert_eq!(e.stats().lean_frame, lean);
        assert_eq!(call(10), 1241, "lean: {lean}");
        drop(e);
        assert_eq!(call(20), 1251, "a return probe, lean: {lean}");
        drop(r);
        assert_eq!(entry.0.load(Ordering::SeqCst), 1);
        assert_eq!(ret.0.load(Ordering::SeqCst), 2);
    }
}
