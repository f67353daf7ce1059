//! A `longjmp` (C) and an exception (C++) leaving a function whose
//! uretprobe is pending: the process runs on, the return probes of the
//! functions that did return see every one of them, and each skipped
//! return is counted as missed for its site.
//!
//! The targets are small shared libraries built here with the system's C
//! and C++ compilers (`cc`, `c++`); without them the tests say so and
//! skip.

use std::ffi::{c_long, c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use userbpf_shims::hook::{self, Action, Probe, ProbeKind, PtRegs, Target};

const LONGJMP_C: &str = r#"
#include <setjmp.h>

static jmp_buf uw_env;

__attribute__((noinline)) void uw_bail(long i)
{
	longjmp(uw_env, (int)i + 1);
}

/* Returns 2i+1, or leaves through longjmp when i % 3 == 2. */
__attribute__((noinline)) long uw_work(long i)
{
	if (i % 3 == 2)
		uw_bail(i);
	return i * 2 + 1;
}

long uw_run(long n, long *jumped)
{
	volatile long sum = 0, j = 0;
	for (volatile long i = 0; i < n; i++) {
		if (setjmp(uw_env) == 0)
			sum += uw_work(i);
		else
			j++;
	}
	*jumped = j;
	return sum;
}
"#;

const THROW_CC: &str = r#"
/* Returns 2i+1, or throws i when i % 3 == 2. */
extern "C" __attribute__((noinline)) long uw_throw_work(long i)
{
	if (i % 3 == 2)
		throw i;
	return i * 2 + 1;
}

/* Calls uw_throw_work in its first bytes: `push %rbx; call`, 6 bytes, so
 * a hook's patch displaces the call (written in assembly to be sure). */
extern "C" long uw_call_first(long i);
__asm__(".text\n"
	".globl uw_call_first\n"
	".type uw_call_first, @function\n"
	"uw_call_first:\n"
	".cfi_startproc\n"
	"push %rbx\n"
	".cfi_def_cfa_offset 16\n"
	".cfi_offset %rbx, -16\n"
	"call uw_throw_work@PLT\n"
	"add $1000, %rax\n"
	"pop %rbx\n"
	".cfi_def_cfa_offset 8\n"
	"ret\n"
	".cfi_endproc\n"
	".size uw_call_first, . - uw_call_first\n");

extern "C" long uw_call_run(long n, long *caught)
{
	long sum = 0, c = 0;
	for (long i = 0; i < n; i++) {
		try {
			sum += uw_call_first(i);
		} catch (long) {
			c++;
		}
	}
	*caught = c;
	return sum;
}

extern "C" long uw_throw_run(long n, long *caught)
{
	long sum = 0, c = 0;
	for (long i = 0; i < n; i++) {
		try {
			sum += uw_throw_work(i);
		} catch (long) {
			c++;
		}
	}
	*caught = c;
	return sum;
}
"#;

/// Counts hits and sums `ax` (the return value, at a return).
#[derive(Default)]
struct Counter {
    hits: AtomicU64,
    sum_ax: AtomicU64,
}

impl Probe for Counter {
    fn hit(&self, regs: &mut PtRegs) -> Action {
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.sum_ax.fetch_add(regs.ax, Ordering::SeqCst);
        Action::Continue
    }
}

/// A scratch directory of this test process, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("unwind-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles `source` into a shared library with `compiler`, or says why
/// it cannot here.
fn build_lib(dir: &Path, compiler: &str, file: &str, source: &str) -> Result<PathBuf, String> {
    let src = dir.join(file);
    std::fs::write(&src, source).map_err(|e| format!("{}: {e}", src.display()))?;
    let lib = dir.join(format!("lib{file}.so"));
    let out = Command::new(compiler)
        .args(["-O1", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .output()
        .map_err(|e| format!("no `{compiler}` here: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{compiler}` cannot build the target: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(lib)
}

/// dlopens `lib` and returns the address of `name` (the library is never
/// unloaded: hooks may outlive a test).
fn symbol(lib: &Path, name: &str) -> usize {
    let path = CString::new(lib.to_string_lossy().as_bytes()).expect("path");
    // SAFETY: a NUL-terminated path of a library without constructors of
    // its own.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
    assert!(!handle.is_null(), "dlopen {}", lib.display());
    let c = CString::new(name).expect("symbol name");
    // SAFETY: a live handle and a NUL-terminated name.
    let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
    assert!(!p.is_null(), "{} has no {name}", lib.display());
    p as usize
}

type Run = unsafe extern "C" fn(c_long, *mut c_long) -> c_long;

/// Attaches an entry and a return counter to `work`, runs `run(n)` and
/// checks what the probes saw against what the run reports: `left` calls
/// (`i % 3 == 2`) left `work` without returning.
/// What a pair of probes (entry, return) counted: entries, returns, and
/// the sum of the return values.
type Seen = Box<dyn Fn() -> (u64, u64, u64)>;

fn check(work: usize, run: usize, what: &str) {
    let entry = Arc::new(Counter::default());
    let ret = Arc::new(Counter::default());
    let (e, r) = (entry.clone(), ret.clone());
    let seen: Seen = Box::new(move || {
        (
            e.hits.load(Ordering::SeqCst),
            r.hits.load(Ordering::SeqCst),
            r.sum_ax.load(Ordering::SeqCst),
        )
    });
    check_probes(work, run, what, entry, ret, seen, false);
}

fn check_probes(
    work: usize,
    run: usize,
    what: &str,
    entry: Arc<dyn Probe>,
    ret: Arc<dyn Probe>,
    seen: Seen,
    direct: bool,
) {
    let target = Target {
        address: work as u64,
        function: None,
    };
    let l1 = hook::attach(target, ProbeKind::Entry, entry).expect("attach entry");
    let l2 = hook::attach(target, ProbeKind::Return, ret).expect("attach return");
    assert_eq!(l2.stats().direct, direct, "{what}: the lanes");
    // (The site's counter counts from its first probe.)
    let missed_before = l2.stats().missed_returns;
    // SAFETY: `run` is the library's driver with this signature.
    let run: Run = unsafe { std::mem::transmute::<*const c_void, Run>(run as *const c_void) };
    // 31 calls: the last one returns, so the frame the last skipped call
    // left is found (and counted) by the push after it.
    let n: c_long = 31;
    let mut left: c_long = 0;
    // SAFETY: the driver writes one long through the pointer.
    let sum = unsafe { run(n, &mut left) };
    let expected_left = (0..n).filter(|i| i % 3 == 2).count() as u64;
    let expected_sum: u64 = (0..n as u64)
        .filter(|i| i % 3 != 2)
        .map(|i| 2 * i + 1)
        .sum();
    assert_eq!(left as u64, expected_left, "{what}: calls that left");
    assert_eq!(sum as u64, expected_sum, "{what}: the driver's sum");
    let (entries, returns, sum_ax) = seen();
    assert_eq!(entries, n as u64, "{what}: entries");
    assert_eq!(returns, n as u64 - expected_left, "{what}: returns seen");
    assert_eq!(sum_ax, expected_sum, "{what}: the return values seen");
    assert_eq!(
        l2.stats().missed_returns - missed_before,
        expected_left,
        "{what}: each skipped return counted for the site"
    );
    // Once more: the thread's return stack is sound after all that.
    let mut again: c_long = 0;
    // SAFETY: as above.
    assert_eq!(unsafe { run(n, &mut again) } as u64, expected_sum);
    assert_eq!(seen().1, 2 * (n as u64 - expected_left));
    assert_eq!(hook::thread::pending_returns(), 0);
    drop((l1, l2));
}

/// Leaf code (see `Probe::direct`) that counts its runs and sums `ax`
/// into two statics, and a probe made of it.
macro_rules! leaf_counter {
    ($probe:ident, $code:ident, $end:ident, $hits:ident, $sum:ident) => {
        static $hits: AtomicU64 = AtomicU64::new(0);
        static $sum: AtomicU64 = AtomicU64::new(0);
        std::arch::global_asm!(
            concat!(".globl ", stringify!($code)),
            concat!(stringify!($code), ":"),
            "lock inc qword ptr [rip + {hits}]",
            "mov rax, qword ptr [rdx + 80]",
            "lock add qword ptr [rip + {sum}], rax",
            "xor eax, eax",
            "xor edx, edx",
            "ret",
            concat!(".globl ", stringify!($end)),
            concat!(stringify!($end), ":"),
            hits = sym $hits,
            sum = sym $sum,
        );
        extern "C" {
            fn $code();
            fn $end();
        }
        struct $probe;
        impl Probe for $probe {
            fn hit(&self, regs: &mut PtRegs) -> Action {
                $hits.fetch_add(1, Ordering::SeqCst);
                $sum.fetch_add(regs.ax, Ordering::SeqCst);
                Action::Continue
            }
            fn lean(&self) -> bool {
                true
            }
            fn direct(&self) -> Option<hook::LeafCode> {
                let (s, e) = ($code as *const () as usize, $end as *const () as usize);
                Some(hook::LeafCode {
                    entry: s,
                    len: e - s,
                })
            }
        }
    };
}

leaf_counter!(
    JmpEntry,
    uw_leaf_jmp_entry,
    uw_leaf_jmp_entry_end,
    JMP_E_HITS,
    JMP_E_SUM
);
leaf_counter!(
    JmpRet,
    uw_leaf_jmp_ret,
    uw_leaf_jmp_ret_end,
    JMP_R_HITS,
    JMP_R_SUM
);
leaf_counter!(
    ThrowEntry,
    uw_leaf_throw_entry,
    uw_leaf_throw_entry_end,
    THROW_E_HITS,
    THROW_E_SUM
);
leaf_counter!(
    ThrowRet,
    uw_leaf_throw_ret,
    uw_leaf_throw_ret_end,
    THROW_R_HITS,
    THROW_R_SUM
);

#[test]
fn a_longjmp_out_of_a_function_with_a_pending_uretprobe_is_counted_and_harmless() {
    let dir = Scratch::new("longjmp");
    let lib = match build_lib(&dir.0, "cc", "longjmp.c", LONGJMP_C) {
        Ok(l) => l,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    check(symbol(&lib, "uw_work"), symbol(&lib, "uw_run"), "longjmp");
    // The same with leaf probes, which the trampoline and the return
    // handler run themselves (pushing and popping the pending returns).
    let seen: Seen = Box::new(|| {
        (
            JMP_E_HITS.load(Ordering::SeqCst),
            JMP_R_HITS.load(Ordering::SeqCst),
            JMP_R_SUM.load(Ordering::SeqCst),
        )
    });
    let _ = &JMP_E_SUM;
    check_probes(
        symbol(&lib, "uw_work"),
        symbol(&lib, "uw_run"),
        "longjmp, leaf probes",
        Arc::new(JmpEntry),
        Arc::new(JmpRet),
        seen,
        true,
    );
}

#[test]
fn a_cpp_exception_through_a_pending_uretprobe_is_counted_and_harmless() {
    let dir = Scratch::new("throw");
    let lib = match build_lib(&dir.0, "c++", "throw.cc", THROW_CC) {
        Ok(l) => l,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    check(
        symbol(&lib, "uw_throw_work"),
        symbol(&lib, "uw_throw_run"),
        "C++ exception",
    );
    let seen: Seen = Box::new(|| {
        (
            THROW_E_HITS.load(Ordering::SeqCst),
            THROW_R_HITS.load(Ordering::SeqCst),
            THROW_R_SUM.load(Ordering::SeqCst),
        )
    });
    let _ = &THROW_E_SUM;
    check_probes(
        symbol(&lib, "uw_throw_work"),
        symbol(&lib, "uw_throw_run"),
        "C++ exception, leaf probes",
        Arc::new(ThrowEntry),
        Arc::new(ThrowRet),
        seen,
        true,
    );
}

#[test]
fn an_exception_through_a_call_the_patch_displaced_unwinds_through_the_original_caller() {
    // The entry hook of uw_call_first moves its `call` into the trampoline:
    // the callee must still return to (and unwind through) the function.
    let dir = Scratch::new("call");
    let lib = match build_lib(&dir.0, "c++", "call.cc", THROW_CC) {
        Ok(l) => l,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let f = symbol(&lib, "uw_call_first");
    // SAFETY: the first 6 bytes of the assembly function above.
    let first = unsafe { std::slice::from_raw_parts(f as *const u8, 6) };
    assert_eq!(first[0], 0x53, "push %rbx");
    assert_eq!(first[1], 0xe8, "call rel32");
    let entry = Arc::new(Counter::default());
    let ret = Arc::new(Counter::default());
    let target = Target {
        address: f as u64,
        function: None,
    };
    let link = hook::attach(target, ProbeKind::Entry, entry.clone()).expect("attach");
    let rlink = hook::attach(target, ProbeKind::Return, ret.clone()).expect("attach return");
    // SAFETY: the driver has this signature.
    let run: Run = unsafe {
        std::mem::transmute::<*const c_void, Run>(symbol(&lib, "uw_call_run") as *const c_void)
    };
    let n: c_long = 31;
    let mut caught: c_long = 0;
    // SAFETY: the driver writes one long through the pointer.
    let sum = unsafe { run(n, &mut caught) };
    let expected: u64 = (0..n as u64)
        .filter(|i| i % 3 != 2)
        .map(|i| 2 * i + 1 + 1000)
        .sum();
    assert_eq!(caught as u64, (0..n).filter(|i| i % 3 == 2).count() as u64);
    assert_eq!(sum as u64, expected);
    assert_eq!(entry.hits.load(Ordering::SeqCst), n as u64);
    let left = (0..n).filter(|i| i % 3 == 2).count() as u64;
    assert_eq!(ret.hits.load(Ordering::SeqCst), n as u64 - left, "returns");
    assert_eq!(ret.sum_ax.load(Ordering::SeqCst), expected, "return values");
    assert_eq!(rlink.stats().missed_returns, left, "exceptions: missed");
    drop((link, rlink));
}
