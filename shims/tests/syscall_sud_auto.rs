//! The default Syscall User Dispatch policy ([`UserDispatch::Auto`]): SUD
//! stays off while the rewrite covers every executable byte of the
//! process, and is armed as soon as the process makes code the rewrite
//! cannot see, before that code runs.
//!
//! What SUD needs is process-wide and lasts for the life of the process,
//! so each case runs in a forked child of its own (this binary has no test
//! harness: `main` runs the cases one after another from a single thread).

use std::arch::asm;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod support;

use userbpf_shims::syscall::{
    self, SyscallAction, SyscallCtx, SyscallError, SyscallHook, SyscallLink, UserDispatch,
};

/// A child's exit status for "skipped" (page 0 cannot be mapped here).
const SKIP: i32 = 77;

#[derive(Default)]
struct Counter(AtomicU64);

impl SyscallHook for Counter {
    fn enter(&self, _ctx: &mut SyscallCtx) -> SyscallAction {
        self.0.fetch_add(1, Ordering::SeqCst);
        SyscallAction::Continue
    }
}

impl Counter {
    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Attaches a counter to syscall `nr`, or ends the child as skipped.
fn count(nr: i64) -> (Arc<Counter>, SyscallLink) {
    let c = Arc::new(Counter::default());
    match syscall::attach(Some(nr as u64), c.clone()) {
        Ok(link) => (c, link),
        Err(e @ SyscallError::PageZero { .. }) => {
            eprintln!("skipped: {e}");
            // SAFETY: ending the forked child at once.
            unsafe { libc::_exit(SKIP) }
        }
        Err(e) => panic!("attach: {e}"),
    }
}

fn needed() -> bool {
    syscall::stats().sud_needed
}

/// SUD is armed now, where the kernel has it.
fn assert_armed(yes: bool) {
    let s = syscall::stats();
    if s.sud_enabled {
        assert_eq!(s.sud_active, yes, "{s:?} ({:?})", syscall::sud_reason());
    }
}

fn assert_not_needed() {
    assert!(!needed(), "SUD needed: {:?}", syscall::sud_reason());
    assert_armed(false);
}

fn assert_needed_for(what: &str) {
    let reason = syscall::sud_reason().unwrap_or_default();
    assert!(needed(), "SUD not needed after {what}");
    assert!(
        reason.contains(what),
        "reason {reason:?} does not name {what:?}"
    );
    assert_armed(true);
}

/// `mov %rdi, %rax; syscall; ret`.
const SYSCALL_STUB: [u8; 6] = [0x48, 0x89, 0xf8, 0x0f, 0x05, 0xc3];

/// `syscall(nr)` through an inline `syscall` instruction of this binary
/// (rewritten with it).
#[inline(never)]
fn inline_syscall(nr: i64) -> i64 {
    let ret: i64;
    // SAFETY: a syscall without pointer arguments; clobbers what a
    // syscall clobbers.
    unsafe {
        asm!("syscall", inlateout("rax") nr => ret, lateout("rcx") _, lateout("r11") _);
    }
    ret
}

type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

/// The vDSO's own `clock_gettime`.
fn vdso_clock_gettime() -> ClockGettime {
    // SAFETY: the vDSO is always loaded; RTLD_NOLOAD only looks it up, and
    // the symbol has clock_gettime's signature.
    unsafe {
        let h = libc::dlopen(
            c"linux-vdso.so.1".as_ptr(),
            libc::RTLD_LAZY | libc::RTLD_NOLOAD,
        );
        assert!(!h.is_null(), "no vDSO in the link map");
        let f = libc::dlsym(h, c"__vdso_clock_gettime".as_ptr());
        assert!(!f.is_null(), "no __vdso_clock_gettime");
        std::mem::transmute::<*mut libc::c_void, ClockGettime>(f)
    }
}

fn every_module_is_covered_so_libc_inline_and_vdso_syscalls_are_hooked_without_sud() {
    let (c, _link) = count(libc::SYS_clock_gettime);
    assert_not_needed();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // The vDSO has no fast path for this clock: its fallback `syscall`
    // (rewritten with the vDSO's private copy) runs.
    let vdso = vdso_clock_gettime();
    for _ in 0..10 {
        // SAFETY: a valid clock and timespec.
        assert_eq!(unsafe { vdso(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) }, 0);
    }
    assert_eq!(c.get(), 10, "the vDSO's fallback syscalls");
    // SAFETY: as above, through libc's generic syscall().
    unsafe { libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(c.get(), 11);
    let (g, _l) = count(libc::SYS_getppid);
    inline_syscall(libc::SYS_getppid);
    assert_eq!(g.get(), 1, "this binary's inline syscall");
    assert_eq!(syscall::stats().sud_dispatched, 0);
    assert_not_needed();
}

fn code_made_by_mprotect_arms_sud_before_it_runs() {
    let (c, _link) = count(libc::SYS_getegid);
    assert_not_needed();
    let stub = support::map_code(&SYSCALL_STUB, false);
    assert_needed_for("mprotect");
    if !syscall::stats().sud_enabled {
        eprintln!("(SUD not available: the stub's syscalls are not caught)");
        return;
    }
    // SAFETY: the stub above: u64 -> i64.
    let stub = unsafe { std::mem::transmute::<*mut libc::c_void, extern "C" fn(u64) -> i64>(stub) };
    // SAFETY: getegid has no preconditions.
    let egid = i64::from(unsafe { libc::getegid() });
    let before = c.get();
    for _ in 0..5 {
        assert_eq!(stub(libc::SYS_getegid as u64), egid);
    }
    assert_eq!(c.get() - before, 5);
}

fn code_mapped_before_the_first_attach_arms_sud_at_installation() {
    let stub = support::map_code(&SYSCALL_STUB, false);
    let (_c, _link) = count(libc::SYS_getegid);
    // (The reason names where the `syscall` bytes are.)
    assert_needed_for(&format!("{:#x}", stub as u64 + 3));
}

fn anonymous_code_without_system_call_bytes_leaves_sud_off() {
    let (_c, _link) = count(libc::SYS_getegid);
    // mov $42, %eax; ret
    let f = support::map_code(&[0xb8, 0x2a, 0, 0, 0, 0xc3], false);
    // SAFETY: the code above: () -> i32.
    let f = unsafe { std::mem::transmute::<*mut libc::c_void, extern "C" fn() -> i32>(f) };
    assert_eq!(f(), 42);
    assert_not_needed();
}

fn userbpf_own_code_leaves_sud_off_and_the_same_bytes_elsewhere_arm_it() {
    let (_c, _link) = count(libc::SYS_getegid);
    // mov $0x50f, %eax; ret: `0f 05` inside an immediate.
    let code = [0xb8, 0x0f, 0x05, 0, 0, 0xc3];
    support::map_code(&code, true);
    assert_not_needed();
    support::map_code(&code, false);
    assert_needed_for("system call instruction bytes");
}

fn writable_and_executable_memory_arms_sud() {
    let (_c, _link) = count(libc::SYS_getegid);
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    assert_needed_for("writable and executable");
}

fn a_file_mapped_executable_by_hand_arms_sud() {
    let (_c, _link) = count(libc::SYS_getegid);
    let exe = std::fs::File::open("/proc/self/exe").expect("open the executable");
    use std::os::fd::AsRawFd;
    // SAFETY: a private read-execute mapping of a file we hold open.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE,
            exe.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    assert_needed_for("outside the dynamic loader");
}

fn opening_proc_self_mem_for_writing_arms_sud() {
    let (_c, _link) = count(libc::SYS_getegid);
    let ro = std::fs::File::open("/proc/self/mem").expect("open /proc/self/mem");
    drop(ro);
    assert_not_needed();
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
        .expect("open /proc/self/mem for writing");
    drop(rw);
    assert_needed_for("/mem opened for writing");
}

fn dropping_a_modules_rewritten_pages_arms_sud_and_sud_catches_their_syscalls() {
    let (c, _link) = count(libc::SYS_getppid);
    assert_not_needed();
    inline_syscall(libc::SYS_getppid);
    assert_eq!(c.get(), 1);
    // The page of `inline_syscall` goes back to the file's bytes: its
    // `syscall` is no longer rewritten.
    let page = (inline_syscall as *const () as usize) & !4095;
    // SAFETY: dropping private pages of this binary's text, which the
    // kernel reloads from the file.
    let r = unsafe { libc::madvise(page as *mut libc::c_void, 8192, libc::MADV_DONTNEED) };
    assert_eq!(r, 0);
    assert_needed_for("MADV_DONTNEED");
    if syscall::stats().sud_enabled {
        inline_syscall(libc::SYS_getppid);
        assert_eq!(c.get(), 2, "caught by SUD");
        assert!(syscall::stats().sud_dispatched >= 1);
    }
}

fn a_library_loaded_with_dlopen_leaves_sud_off_and_its_syscalls_are_hooked() {
    let Some(so) = library() else {
        eprintln!("(skipped: no C compiler to build the library)");
        return;
    };
    let (c, _link) = count(libc::SYS_getppid);
    assert_not_needed();
    let path = CString::new(so.as_os_str().as_bytes()).expect("path");
    // SAFETY: a library built by `main`, without constructors.
    let lib = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!lib.is_null(), "dlopen {}", so.display());
    // SAFETY: the library's function: () -> long.
    let f = unsafe {
        let f = libc::dlsym(lib, c"inline_getppid".as_ptr());
        assert!(!f.is_null());
        std::mem::transmute::<*mut libc::c_void, extern "C" fn() -> i64>(f)
    };
    // SAFETY: getppid has no preconditions.
    let ppid = i64::from(unsafe { libc::getppid() });
    let before = c.get();
    assert_eq!(f(), ppid);
    assert_eq!(
        c.get() - before,
        2,
        "the library's inline syscall and libc's"
    );
    assert_not_needed();
}

fn the_policy_decides_whether_threads_are_armed() {
    let (_c, _link) = count(libc::SYS_getegid);
    if !syscall::stats().sud_enabled {
        eprintln!("(skipped: no Syscall User Dispatch here)");
        return;
    }
    assert_armed(false);
    syscall::set_user_dispatch(UserDispatch::Always).expect("policy");
    assert!(syscall::stats().sud_active);
    syscall::set_user_dispatch(UserDispatch::Off).expect("policy");
    assert!(!syscall::stats().sud_active);
    syscall::set_user_dispatch(UserDispatch::Auto).expect("policy");
    assert!(!syscall::stats().sud_active);
    support::map_code(&SYSCALL_STUB, false);
    assert!(syscall::stats().sud_active);
    syscall::set_user_dispatch(UserDispatch::Off).expect("policy");
    assert!(!syscall::stats().sud_active);
    assert!(needed(), "still needed; only the policy changed");
}

const LIBRARY_C: &str = r#"
long inline_getppid(void) {
    long ret;
    __asm__ volatile ("syscall" : "=a"(ret) : "a"(110L) : "rcx", "r11", "memory");
    extern int getppid(void);
    return getppid() == ret ? ret : -1;
}
"#;

/// Where `main` builds the library (named after `main`'s process, set
/// before the children fork).
static LIBRARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn library_path() -> PathBuf {
    LIBRARY
        .get_or_init(|| {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "sud-auto-{}/libinline_getppid.so",
                std::process::id()
            ))
        })
        .clone()
}

/// The library the dlopen case loads, if `main` could build it.
fn library() -> Option<PathBuf> {
    let p = library_path();
    p.exists().then_some(p)
}

fn build_library() {
    let so = library_path();
    let dir = so.parent().expect("a directory").to_path_buf();
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let src = dir.join("inline.c");
    std::fs::write(&src, LIBRARY_C).expect("write");
    let ok = std::process::Command::new("cc")
        .args(["-O1", "-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = std::fs::remove_file(&so);
    }
}

fn main() {
    let cases: [(&str, fn()); 11] = [
        (
            "every_module_is_covered_so_libc_inline_and_vdso_syscalls_are_hooked_without_sud",
            every_module_is_covered_so_libc_inline_and_vdso_syscalls_are_hooked_without_sud,
        ),
        (
            "code_made_by_mprotect_arms_sud_before_it_runs",
            code_made_by_mprotect_arms_sud_before_it_runs,
        ),
        (
            "code_mapped_before_the_first_attach_arms_sud_at_installation",
            code_mapped_before_the_first_attach_arms_sud_at_installation,
        ),
        (
            "anonymous_code_without_system_call_bytes_leaves_sud_off",
            anonymous_code_without_system_call_bytes_leaves_sud_off,
        ),
        (
            "userbpf_own_code_leaves_sud_off_and_the_same_bytes_elsewhere_arm_it",
            userbpf_own_code_leaves_sud_off_and_the_same_bytes_elsewhere_arm_it,
        ),
        (
            "writable_and_executable_memory_arms_sud",
            writable_and_executable_memory_arms_sud,
        ),
        (
            "a_file_mapped_executable_by_hand_arms_sud",
            a_file_mapped_executable_by_hand_arms_sud,
        ),
        (
            "opening_proc_self_mem_for_writing_arms_sud",
            opening_proc_self_mem_for_writing_arms_sud,
        ),
        (
            "dropping_a_modules_rewritten_pages_arms_sud_and_sud_catches_their_syscalls",
            dropping_a_modules_rewritten_pages_arms_sud_and_sud_catches_their_syscalls,
        ),
        (
            "a_library_loaded_with_dlopen_leaves_sud_off_and_its_syscalls_are_hooked",
            a_library_loaded_with_dlopen_leaves_sud_off_and_its_syscalls_are_hooked,
        ),
        (
            "the_policy_decides_whether_threads_are_armed",
            the_policy_decides_whether_threads_are_armed,
        ),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let require = std::env::var("USERBPF_REQUIRE_KERNEL").is_ok_and(|v| v == "1");
    // The default policy is under test (still single-threaded here).
    std::env::remove_var("USERBPF_SYSCALL_SUD");
    std::env::remove_var("USERBPF_SYSCALL_REWRITE");
    build_library();
    let mut failed = Vec::new();
    let mut run = 0;
    for (name, case) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        run += 1;
        // SAFETY: this process is single-threaded here; the child runs the
        // case and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let ok = std::panic::catch_unwind(case).is_ok();
            // SAFETY: leaving the child without the parent's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        match code {
            0 => println!("test {name} ... ok"),
            SKIP if !require => println!("test {name} ... skipped (page 0 cannot be mapped)"),
            _ => {
                println!("test {name} ... FAILED (status {code})");
                failed.push(name);
            }
        }
    }
    if let Some(dir) = library_path().parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    println!(
        "\ntest result: {}. {} run; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        run,
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
