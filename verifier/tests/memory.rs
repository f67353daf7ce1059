//! The verifier's memory: the states it keeps share what they have in
//! common. Measured with a counting allocator, so this file holds a
//! single test (tests in one binary run on threads of one process).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use userbpf_verifier::{check, Context, Env, Options};
use userbpf_vm::asm::assemble;
use userbpf_vm::object::ProgramType;
use userbpf_vm::Program;

/// The system allocator, counting the bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are only read.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak heap bytes while verifying a loop of `iterations` that first
/// writes `slots` 8-byte stack slots and then, each iteration, only the
/// first; and the states the verifier stored.
fn peak_heap(slots: usize, iterations: u32) -> (usize, u64) {
    let mut src = String::from("r6 = 0\n");
    for i in 1..=slots {
        src += &format!("*(u64 *)(r10 - {}) = r6\n", i * 8);
    }
    src += &format!(
        "l1:\nr6 += 1\n*(u64 *)(r10 - 8) = r6\nif r6 < {iterations} goto l1\nr0 = 0\nexit\n"
    );
    let program = Program::new("loop", assemble(&src).expect("assembles")).expect("a program");
    let env = Env {
        prog_type: Some(ProgramType::SocketFilter),
        attach_type: None,
        context: Context::SkBuff(userbpf_verifier::SkbKind::SocketFilter),
        maps: Vec::new(),
        subprogram_names: Vec::new(),
        sleepable: false,
        kernel_btf: None,
        attach_btf_name: None,
        non_scalar_returns: Vec::new(),
        global_functions: Vec::new(),
    };
    let opts = Options::default();
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let report = check(&program, &env, &opts, None).expect("the loop is accepted");
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    (peak, report.stats.total_states)
}

#[test]
fn states_kept_along_a_loop_share_the_stack_it_does_not_write() {
    // 20,000 iterations: the path keeps thousands of states and as many
    // pending branches (the loop's exits), all alive at its end.
    let (small, small_states) = peak_heap(1, 20_000);
    let (full, full_states) = peak_heap(64, 20_000);
    assert!(small_states > 1_000, "{small_states} states stored");
    assert!(full_states > 1_000, "{full_states} states stored");
    // Each of those states has 63 more slots in the second program than in
    // the first. Copied per state, they would cost `63 * size_of::<Slot>()`
    // bytes each (over 6 KB, several times a state's registers); shared,
    // the states cost about the same in both programs.
    let copied = full_states as usize * 63 * std::mem::size_of::<userbpf_verifier::state::Slot>();
    assert!(
        full < small + copied / 4,
        "64 slots: {full} bytes at peak for {full_states} states; 1 slot: {small} bytes for {small_states} states"
    );
    println!("peak heap: 1 slot {small} bytes ({small_states} states), 64 slots {full} bytes ({full_states} states)");
}
