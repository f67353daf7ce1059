//! The syscall trampoline's direct lane: a number whose one hook is leaf
//! code (`SyscallHook::direct`) runs it from the trampoline, on the
//! `sys_enter` record. The leaf here is hand-written: it counts its runs,
//! sums the first argument and keeps the record's first word (the hook's
//! `enter` does the same in Rust, for calls the lane hands to the
//! dispatcher). One test function: the interception is process-wide, and
//! a hook on every number (which no lane serves) must not run meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use userbpf_shims::syscall::{
    self, LeafCode, SyscallAction, SyscallCtx, SyscallError, SyscallHook, SyscallLeaf,
};

static LEAF_HITS: AtomicU64 = AtomicU64::new(0);
static LEAF_SUM: AtomicU64 = AtomicU64::new(0);
static LEAF_COMMON: AtomicU64 = AtomicU64::new(0);
static LEAF_NR: AtomicU64 = AtomicU64::new(0);
static RUST_HITS: AtomicU64 = AtomicU64::new(0);
static RUST_SUM: AtomicU64 = AtomicU64::new(0);

// (head, 0, r1 = the record, r2 = 64, ...) -> (r0, status 0)
std::arch::global_asm!(
    ".globl userbpf_sys_leaf",
    "userbpf_sys_leaf:",
    "lock inc qword ptr [rip + {hits}]",
    "mov rax, qword ptr [rdx + 16]",
    "lock add qword ptr [rip + {sum}], rax",
    "mov rax, qword ptr [rdx]",
    "mov qword ptr [rip + {common}], rax",
    "mov rax, qword ptr [rdx + 8]",
    "mov qword ptr [rip + {nr}], rax",
    "xor eax, eax",
    "xor edx, edx",
    "ret",
    ".globl userbpf_sys_leaf_end",
    "userbpf_sys_leaf_end:",
    hits = sym LEAF_HITS,
    sum = sym LEAF_SUM,
    common = sym LEAF_COMMON,
    nr = sym LEAF_NR,
);

extern "C" {
    fn userbpf_sys_leaf();
    fn userbpf_sys_leaf_end();
}

const COMMON: u64 = 0x0000_0000_0000_1234;

/// A hook whose `enter` is the leaf code above.
struct Leafy;

impl SyscallHook for Leafy {
    fn enter(&self, ctx: &mut SyscallCtx) -> SyscallAction {
        RUST_HITS.fetch_add(1, Ordering::SeqCst);
        RUST_SUM.fetch_add(ctx.args[0], Ordering::SeqCst);
        SyscallAction::Continue
    }

    fn wants_exit(&self) -> bool {
        false
    }

    fn direct(&self) -> Option<SyscallLeaf> {
        let (s, e) = (
            userbpf_sys_leaf as *const () as usize,
            userbpf_sys_leaf_end as *const () as usize,
        );
        Some(SyscallLeaf {
            code: LeafCode {
                entry: s,
                len: e - s,
            },
            common: COMMON,
        })
    }
}

/// Counts its runs.
struct Plain(AtomicU64);

impl SyscallHook for Plain {
    fn enter(&self, _ctx: &mut SyscallCtx) -> SyscallAction {
        self.0.fetch_add(1, Ordering::SeqCst);
        SyscallAction::Continue
    }
}

/// Makes a `getpgid` syscall from inside a hook.
struct CallsInside;

impl SyscallHook for CallsInside {
    fn enter(&self, _ctx: &mut SyscallCtx) -> SyscallAction {
        // SAFETY: no preconditions.
        unsafe { libc::syscall(libc::SYS_getpgid, 3) };
        SyscallAction::Continue
    }
}

fn runs() -> u64 {
    LEAF_HITS.load(Ordering::SeqCst) + RUST_HITS.load(Ordering::SeqCst)
}

fn sum() -> u64 {
    LEAF_SUM.load(Ordering::SeqCst) + RUST_SUM.load(Ordering::SeqCst)
}

/// `getpgid(pid)` by an inline `syscall`, with values in every register
/// a syscall keeps (and in xmm3); returns the result and whether they
/// all survived.
fn getpgid_keeping_registers(pid: u64) -> (i64, bool) {
    let ret: i64;
    let same: u64;
    // SAFETY: the getpgid syscall; the registers used are declared.
    unsafe {
        std::arch::asm!(
            "push rbx",
            "mov rbx, 0x1111111111111111",
            "mov rsi, 0x2222222222222222",
            "mov rdx, 0x3333333333333333",
            "mov r10, 0x4444444444444444",
            "mov r8, 0x5555555555555555",
            "mov r9, 0x6666666666666666",
            "mov r12, 0x7777777777777777",
            "movq xmm3, r12",
            "syscall",
            "mov r12, 0x1111111111111111",
            "xor rbx, r12",
            "mov r12, 0x2222222222222222",
            "xor rsi, r12",
            "or rbx, rsi",
            "mov r12, 0x3333333333333333",
            "xor rdx, r12",
            "or rbx, rdx",
            "mov r12, 0x4444444444444444",
            "xor r10, r12",
            "or rbx, r10",
            "mov r12, 0x5555555555555555",
            "xor r8, r12",
            "or rbx, r8",
            "mov r12, 0x6666666666666666",
            "xor r9, r12",
            "or rbx, r9",
            "mov r12, 0x7777777777777777",
            "movq rsi, xmm3",
            "xor rsi, r12",
            "or rbx, rsi",
            "mov r12, rbx",
            "pop rbx",
            inlateout("rax") libc::SYS_getpgid => ret,
            inlateout("rdi") pid => _,
            out("rsi") _,
            out("rdx") _,
            out("r10") _,
            out("r8") _,
            out("r9") _,
            out("r12") same,
            out("rcx") _,
            out("r11") _,
            out("xmm3") _,
        );
    }
    (ret, same == 0)
}

fn getpgid(pid: u64) -> i64 {
    // SAFETY: no preconditions.
    unsafe { libc::syscall(libc::SYS_getpgid, pid) }
}

#[test]
fn a_leaf_syscall_hook_runs_from_the_trampoline() {
    let link = match syscall::attach(Some(libc::SYS_getpgid as u64), Arc::new(Leafy)) {
        Ok(l) => l,
        Err(e @ SyscallError::PageZero { .. })
            if std::env::var("USERBPF_REQUIRE_KERNEL").as_deref() != Ok("1") =>
        {
            println!("skipped: {e}");
            return;
        }
        Err(e) => panic!("attach: {e}"),
    };
    assert_eq!(syscall::stats().direct_numbers, 1, "{:?}", syscall::stats());
    // SAFETY: no preconditions.
    let own = unsafe { libc::getpgid(0) } as i64;

    // Every call runs the hook once, from libc and from inline code, on
    // four threads; the arguments and the record reach the leaf.
    let (r0, s0) = (runs(), sum());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..1000u64 {
                    assert_eq!(getpgid(0), own);
                    let (r, kept) = getpgid_keeping_registers(t * 1000 + i + 1_000_000);
                    assert_eq!(r, -i64::from(libc::ESRCH));
                    assert!(kept, "a register the syscall keeps changed");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(runs() - r0, 8000, "every call once");
    let want: u64 = (0..4000u64).map(|k| k + 1_000_000).sum();
    assert_eq!(sum() - s0, want, "the first arguments");
    assert!(
        LEAF_HITS.load(Ordering::SeqCst) >= 8000 - 4,
        "the lane ran the leaf (a thread's first call may register it)"
    );
    assert_eq!(LEAF_COMMON.load(Ordering::SeqCst), COMMON);
    assert_eq!(LEAF_NR.load(Ordering::SeqCst), libc::SYS_getpgid as u64);

    // Userbpf's own work runs no hook.
    let r1 = runs();
    userbpf_vm::quiet::scope(|| getpgid(0));
    assert_eq!(runs(), r1);

    // A syscall made inside another hook is a miss, not a run.
    let inside = syscall::attach(Some(libc::SYS_getsid as u64), Arc::new(CallsInside)).unwrap();
    let misses = link.misses();
    // SAFETY: no preconditions.
    unsafe { libc::getsid(0) };
    assert_eq!(runs(), r1, "re-entered");
    assert_eq!(link.misses(), misses + 1);
    drop(inside);

    // A second hook on the number: the dispatcher runs both.
    let plain = Arc::new(Plain(AtomicU64::new(0)));
    let second = syscall::attach(Some(libc::SYS_getpgid as u64), plain.clone()).unwrap();
    assert_eq!(syscall::stats().direct_numbers, 0);
    let leaf_before = LEAF_HITS.load(Ordering::SeqCst);
    getpgid(0);
    assert_eq!(LEAF_HITS.load(Ordering::SeqCst), leaf_before);
    assert_eq!(runs(), r1 + 1);
    assert_eq!(plain.0.load(Ordering::SeqCst), 1);
    drop(second);
    assert_eq!(syscall::stats().direct_numbers, 1);
    getpgid(0);
    assert_eq!(LEAF_HITS.load(Ordering::SeqCst), leaf_before + 1);

    // A hook on every number turns the lanes off.
    let all = syscall::attach(None, Arc::new(Plain(AtomicU64::new(0)))).unwrap();
    assert_eq!(syscall::stats().direct_numbers, 0);
    getpgid(0);
    assert_eq!(runs(), r1 + 3);
    drop(all);
    assert_eq!(syscall::stats().direct_faults, 0);
    drop(link);
    assert_eq!(syscall::stats().direct_numbers, 0);
    getpgid(0);
    assert_eq!(runs(), r1 + 3, "detached");
}
