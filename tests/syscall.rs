//! BPF programs on this process's syscalls: libbpf-tools-style opensnoop
//! (sys_enter/sys_exit_openat tracepoints and a raw sys_enter
//! tracepoint) and a deny policy, verified and JIT-compiled, through the
//! in-process interception. One test function: the interception is
//! process-wide and each step counts its own calls.

use std::path::PathBuf;
use std::sync::Arc;

use userbpf::syscall::{self, SyscallOptions, SyscallProgram};
use userbpf_vm::maps::{Map, MapSet};
use userbpf_vm::object::Object;

fn fixture(name: &str) -> (Object, Arc<MapSet>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/bpf")
        .join(name);
    let object = userbpf::source::load_object(&path).expect("fixture");
    let maps = Arc::new(MapSet::from_object(&object).expect("maps"));
    userbpf::engine::Engine::Jit.install();
    (object, maps)
}

fn map<'a>(maps: &'a MapSet, name: &str) -> &'a Map {
    maps.maps()
        .iter()
        .find(|m| m.spec().name == name)
        .unwrap_or_else(|| panic!("map {name}"))
}

fn u64_at(m: &Map, key: u32) -> u64 {
    let v = m.lookup(&key.to_le_bytes()).expect("slot");
    u64::from_le_bytes(v[..8].try_into().unwrap())
}

/// `openat(AT_FDCWD, path, O_RDONLY)` by an inline `syscall`
/// instruction: the return value.
fn raw_openat(path: &std::ffi::CStr) -> i64 {
    let ret: i64;
    // SAFETY: the openat syscall with a valid C string; rcx and r11 are
    // clobbered by `syscall`.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_openat => ret,
            in("rdi") libc::AT_FDCWD as i64,
            in("rsi") path.as_ptr(),
            in("rdx") libc::O_RDONLY as i64,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

fn skip_unless_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("USERBPF_REQUIRE_KERNEL").as_deref() != Ok("1"),
            "syscall hooks need root (page 0)"
        );
        println!("SKIP: in-process syscall hooks need root to map page 0");
        return true;
    }
    false
}

#[test]
fn syscall_programs_see_every_call_and_can_deny_one() {
    if skip_unless_root() {
        return;
    }
    assert_eq!(
        SyscallProgram::of_section("tracepoint/syscalls/sys_enter_openat").unwrap(),
        Ok(SyscallProgram::Enter(Some(libc::SYS_openat as u64)))
    );
    assert!(
        SyscallProgram::of_section("tracepoint/syscalls/sys_enter_nosuch")
            .unwrap()
            .is_err()
    );
    assert_eq!(SyscallProgram::of_section("kprobe/x"), None);

    let dir = std::env::temp_dir().join(format!("userbpf-sys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("traced");
    std::fs::write(&file, b"x").unwrap();
    let cpath = std::ffi::CString::new(file.to_str().unwrap()).unwrap();

    // opensnoop: every openat of our file, through libc and through an
    // inline syscall, reaches the ring buffer with its name and result.
    let (object, maps) = fixture("opensnoop.bpf.o");
    let opts = SyscallOptions::default();
    let links: Vec<_> = ["enter_openat", "exit_openat", "raw_enter"]
        .iter()
        .map(|p| syscall::attach(&object, &maps, p, &opts).expect(p))
        .collect();
    for _ in 0..10 {
        drop(std::fs::File::open(&file).unwrap());
    }
    for _ in 0..5 {
        let fd = raw_openat(&cpath);
        assert!(fd >= 0, "openat: {fd}");
        // SAFETY: a descriptor we opened.
        unsafe { libc::close(fd as i32) };
    }
    // getppid through libc, counted by the raw tracepoint by number.
    let ppid_before = u64_at(map(&maps, "syscalls"), libc::SYS_getppid as u32);
    for _ in 0..7 {
        // SAFETY: no preconditions.
        unsafe { libc::getppid() };
    }
    let ppid_after = u64_at(map(&maps, "syscalls"), libc::SYS_getppid as u32);
    drop(links);
    assert_eq!(
        ppid_after - ppid_before,
        7,
        "raw sys_enter counts by number"
    );
    let mut ours = 0;
    let mut results = Vec::new();
    map(&maps, "events").ringbuf_consume(|rec| {
        // struct event: pid, tid, flags, ret, comm[16], fname[64].
        let name_bytes = &rec[32..96];
        let end = name_bytes.iter().position(|b| *b == 0).unwrap_or(64);
        if &name_bytes[..end] == file.to_str().unwrap().as_bytes() {
            ours += 1;
            results.push(i32::from_le_bytes(rec[12..16].try_into().unwrap()));
        }
    });
    assert_eq!(ours, 15, "10 through libc, 5 through an inline syscall");
    assert!(results.iter().all(|r| *r >= 0), "{results:?}");
    // Detached: no more events.
    drop(std::fs::File::open(&file).unwrap());
    let mut after = 0;
    map(&maps, "events").ringbuf_consume(|_| after += 1);
    assert_eq!(after, 0);

    // The policy: openat of /tmp/userbpf-deny* fails with EACCES and the
    // file is not created; other paths open.
    let (object, maps) = fixture("syscall_policy.bpf.o");
    let link = syscall::attach(&object, &maps, "deny_prefix", &opts).expect("deny_prefix");
    let denied = PathBuf::from(format!("/tmp/userbpf-deny-{}", std::process::id()));
    let err = std::fs::File::create(&denied).expect_err("denied");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    assert!(!denied.exists(), "the call was not made");
    let denied_c = std::ffi::CString::new(denied.to_str().unwrap()).unwrap();
    assert_eq!(raw_openat(&denied_c), -(libc::EACCES as i64));
    std::fs::File::open(&file).expect("another path opens");
    assert_eq!(u64_at(map(&maps, "denied"), 0), 2);
    drop(link);
    std::fs::File::create(&denied).expect("allowed once detached");
    std::fs::remove_file(&denied).ok();
    std::fs::remove_dir_all(&dir).ok();

    // A verified sys_enter program that calls nothing (its array lookup
    // is inline) runs from the trampoline itself: exact counts on four
    // threads, through libc and inline syscalls.
    let (object, maps) = fixture("syscount.bpf.o");
    // (Before the attach: `std::process::id` is a getpid.)
    let pid = std::process::id() as i64;
    let link = syscall::attach(&object, &maps, "count_getpid", &opts).expect("count_getpid");
    assert_eq!(
        userbpf::shims::syscall::stats().direct_numbers,
        1,
        "the trampoline runs it"
    );
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    // SAFETY: no preconditions.
                    assert_eq!(i64::from(unsafe { libc::getpid() }), pid);
                    let r: i64;
                    // SAFETY: the getpid syscall; rcx and r11 clobbered.
                    unsafe {
                        std::arch::asm!(
                            "syscall",
                            inlateout("rax") libc::SYS_getpid => r,
                            lateout("rcx") _,
                            lateout("r11") _,
                            options(nostack),
                        );
                    }
                    assert_eq!(r, pid);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(u64_at(map(&maps, "calls"), 0), 8000);
    drop(link);
    assert_eq!(userbpf::shims::syscall::stats().direct_numbers, 0);
    assert_eq!(userbpf::shims::syscall::stats().direct_faults, 0);
}
