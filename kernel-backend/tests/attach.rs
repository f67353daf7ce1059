//! Kernel programs attached to uprobes, uretprobes, tracepoints and raw
//! tracepoints fire exactly once per event, see their context, and stop
//! when the link is dropped.
//!
//! Needs root and bpf(); skips with a printed reason otherwise, unless
//! `USERBPF_REQUIRE_KERNEL=1` (CI), where it fails instead.

use std::path::{Path, PathBuf};

use userbpf_kernel::attach::{mapped_file_offset, vaddr_to_file_offset, LinkKind};
use userbpf_kernel::{
    attach_raw_tracepoint, attach_tracepoint, attach_uprobe, kernel_required, kernel_unavailable,
    KernelMap, KernelProgram,
};
use userbpf_vm::insn::Insn;

const N: u64 = 1000;

/// `BPF_MAP_TYPE_ARRAY`; program types.
const ARRAY: u32 = 2;
const SOCKET_FILTER: u32 = 1;
const KPROBE: u32 = 2;
const TRACEPOINT: u32 = 5;
const RAW_TRACEPOINT: u32 = 17;

/// `struct pt_regs` offsets (x86-64): `ax` (`PT_REGS_RC`), `di`
/// (`PT_REGS_PARM1`).
const PT_REGS_AX: i16 = 80;
const PT_REGS_DI: i16 = 112;

fn kernel_or_skip(test: &str) -> bool {
    match kernel_unavailable() {
        None => true,
        Some(why) if kernel_required() => panic!("{test}: kernel required but unavailable: {why}"),
        Some(why) => {
            println!("SKIP {test}: {why}");
            false
        }
    }
}

/// The probed functions: one per test (tests run in parallel), each with
/// a real body so the probe is not on a `ret` (single-stepped).
#[no_mangle]
#[inline(never)]
pub extern "C" fn userbpf_attach_test_entry(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(3).wrapping_add(7)
}

/// See [`userbpf_attach_test_entry`].
#[no_mangle]
#[inline(never)]
pub extern "C" fn userbpf_attach_test_return(x: u64) -> u64 {
    (std::hint::black_box(x) ^ 0x5a5a_0000_0000_5a5a).rotate_left(7)
}

/// The value the kernel's `bpf_get_current_pid_tgid()` gives this thread.
fn pid_tgid() -> u64 {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u64;
    (u64::from(std::process::id()) << 32) | tid
}

/// What a test program does: count the events of this thread (slot 0 of
/// the map), and store a context field in slot 1.
#[derive(Default)]
struct Spec {
    /// Count only when `bpf_get_current_pid_tgid()` is this.
    thread: Option<u64>,
    /// Count only when the u64 at this context offset equals the value.
    ctx_equals: Option<(i16, i32)>,
    /// Store the u64 at this context offset in slot 1 (the u32 with
    /// `store_u32`).
    store: Option<i16>,
    /// `store` loads 4 bytes.
    store_u32: bool,
}

/// Builds the program of `spec` for the map `map_fd`.
fn program(map_fd: i32, spec: &Spec) -> Vec<Insn> {
    let mut p = vec![Insn::new(0xbf, 6, 1, 0, 0)]; // r6 = r1
    let mut to_out = Vec::new();
    let lddw = |p: &mut Vec<Insn>, dst: u8, src: u8, v: u64| {
        p.push(Insn::new(0x18, dst, src, 0, v as u32 as i32));
        p.push(Insn::new(0, 0, 0, 0, (v >> 32) as u32 as i32));
    };
    if let Some(t) = spec.thread {
        p.push(Insn::new(0x85, 0, 0, 0, 14)); // call bpf_get_current_pid_tgid
        lddw(&mut p, 1, 0, t);
        to_out.push(p.len());
        p.push(Insn::new(0x5d, 0, 1, 0, 0)); // if r0 != r1 goto out
    }
    if let Some((off, v)) = spec.ctx_equals {
        p.push(Insn::new(0x79, 1, 6, off, 0)); // r1 = *(u64 *)(r6 + off)
        to_out.push(p.len());
        p.push(Insn::new(0x55, 1, 0, 0, v)); // if r1 != v goto out
    }
    // slot 0 += 1
    p.push(Insn::new(0x62, 10, 0, -4, 0)); // *(u32 *)(r10 - 4) = 0
    p.push(Insn::new(0xbf, 2, 10, 0, 0)); // r2 = r10
    p.push(Insn::new(0x07, 2, 0, 0, -4)); // r2 += -4
    lddw(&mut p, 1, 1, map_fd as u64); // r1 = map
    p.push(Insn::new(0x85, 0, 0, 0, 1)); // call bpf_map_lookup_elem
    to_out.push(p.len());
    p.push(Insn::new(0x15, 0, 0, 0, 0)); // if r0 == 0 goto out
    p.push(Insn::new(0xb7, 1, 0, 0, 1)); // r1 = 1
    p.push(Insn::new(0xdb, 0, 1, 0, 0)); // lock *(u64 *)(r0 + 0) += r1
    if let Some(off) = spec.store {
        // r7 = *(u64 *)(r6 + off) or *(u32 *)(r6 + off)
        let ldx = if spec.store_u32 { 0x61 } else { 0x79 };
        p.push(Insn::new(ldx, 7, 6, off, 0));
        p.push(Insn::new(0x62, 10, 0, -4, 1)); // *(u32 *)(r10 - 4) = 1
        p.push(Insn::new(0xbf, 2, 10, 0, 0));
        p.push(Insn::new(0x07, 2, 0, 0, -4));
        lddw(&mut p, 1, 1, map_fd as u64);
        p.push(Insn::new(0x85, 0, 0, 0, 1));
        to_out.push(p.len());
        p.push(Insn::new(0x15, 0, 0, 0, 0));
        p.push(Insn::new(0x7b, 0, 7, 0, 0)); // *(u64 *)(r0 + 0) = r7
    }
    let out = p.len();
    for j in to_out {
        p[j].off = (out - j - 1) as i16;
    }
    p.push(Insn::new(0xb7, 0, 0, 0, 0)); // r0 = 0
    p.push(Insn::new(0x95, 0, 0, 0, 0)); // exit
    p
}

/// A map and the program of `spec` of `prog_type` over it.
fn load(prog_type: u32, spec: &Spec) -> (KernelMap, KernelProgram) {
    let map = KernelMap::create("attach_counts", ARRAY, 4, 8, 4, 0, 0).unwrap();
    let insns = program(map.raw_fd(), spec);
    let prog = KernelProgram::load("attach_test", prog_type, &insns, "GPL", 0, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    (map, prog)
}

fn slot(map: &KernelMap, key: u32) -> u64 {
    let v = map.lookup(&key.to_le_bytes()).expect("array slot");
    u64::from_le_bytes(v[..8].try_into().unwrap())
}

/// The file and file offset of one of this binary's functions.
fn file_offset_of(f: extern "C" fn(u64) -> u64) -> (PathBuf, u64) {
    mapped_file_offset(None, f as usize as u64).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn uprobe_counts_every_call_and_sees_the_argument() {
    if !kernel_or_skip("uprobe_counts_every_call_and_sees_the_argument") {
        return;
    }
    let (binary, offset) = file_offset_of(userbpf_attach_test_entry);
    for pid in [Some(std::process::id() as i32), None] {
        let spec = Spec {
            store: Some(PT_REGS_DI),
            ..Spec::default()
        };
        let (map, prog) = load(KPROBE, &spec);
        let link =
            attach_uprobe(&prog, &binary, offset, false, pid).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(link.kind(), LinkKind::PerfLink);
        assert!(
            link.hook().contains(&format!("{offset:#x}")),
            "{}",
            link.hook()
        );
        let mut sum = 0u64;
        for i in 0..N {
            sum = sum.wrapping_add(userbpf_attach_test_entry(std::hint::black_box(1000 + i)));
        }
        std::hint::black_box(sum);
        assert_eq!(slot(&map, 0), N, "uprobe hits with pid {pid:?}");
        assert_eq!(slot(&map, 1), 1000 + N - 1, "last first argument (di)");
        drop(link);
        for i in 0..N {
            std::hint::black_box(userbpf_attach_test_entry(std::hint::black_box(i)));
        }
        assert_eq!(slot(&map, 0), N, "hits after the link was dropped");
    }
}

#[test]
fn uretprobe_counts_returns_and_sees_the_return_value() {
    if !kernel_or_skip("uretprobe_counts_returns_and_sees_the_return_value") {
        return;
    }
    let (binary, offset) = file_offset_of(userbpf_attach_test_return);
    let spec = Spec {
        store: Some(PT_REGS_AX),
        ..Spec::default()
    };
    let (map, prog) = load(KPROBE, &spec);
    let link = attach_uprobe(
        &prog,
        &binary,
        offset,
        true,
        Some(std::process::id() as i32),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(link.hook().starts_with("uretprobe "), "{}", link.hook());
    let mut last = 0;
    for i in 0..N {
        last = userbpf_attach_test_return(std::hint::black_box(i * 7919));
    }
    assert_eq!(slot(&map, 0), N, "uretprobe hits");
    assert_eq!(slot(&map, 1), last, "last return value (ax)");
    drop(link);
    for i in 0..N {
        std::hint::black_box(userbpf_attach_test_return(std::hint::black_box(i)));
    }
    assert_eq!(slot(&map, 0), N, "hits after the link was dropped");
}

fn getpid_n(n: u64) {
    for _ in 0..n {
        // SAFETY: getpid has no preconditions.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getpid) });
    }
}

#[test]
fn tracepoint_counts_this_threads_getpid_calls() {
    if !kernel_or_skip("tracepoint_counts_this_threads_getpid_calls") {
        return;
    }
    // trace_event_raw_sys_enter: 8 bytes of common fields, then
    // `int __syscall_nr`, the last field of sys_enter_getpid's record (the
    // kernel refuses programs that read past it).
    let spec = Spec {
        thread: Some(pid_tgid()),
        store: Some(8),
        store_u32: true,
        ..Spec::default()
    };
    let (map, prog) = load(TRACEPOINT, &spec);
    let link =
        attach_tracepoint(&prog, "syscalls", "sys_enter_getpid").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(link.hook(), "tracepoint syscalls/sys_enter_getpid");
    getpid_n(N);
    assert_eq!(slot(&map, 0), N, "sys_enter_getpid hits");
    assert_eq!(slot(&map, 1), libc::SYS_getpid as u64, "__syscall_nr");
    drop(link);
    getpid_n(N);
    assert_eq!(slot(&map, 0), N, "hits after the link was dropped");
}

#[test]
fn raw_tracepoint_counts_this_threads_getpid_calls() {
    if !kernel_or_skip("raw_tracepoint_counts_this_threads_getpid_calls") {
        return;
    }
    // sys_enter(struct pt_regs *regs, long id): args[1] is the syscall.
    let spec = Spec {
        thread: Some(pid_tgid()),
        ctx_equals: Some((8, libc::SYS_getpid as i32)),
        store: Some(8),
        store_u32: false,
    };
    let (map, prog) = load(RAW_TRACEPOINT, &spec);
    let link = attach_raw_tracepoint(&prog, "sys_enter").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(link.kind(), LinkKind::RawTracepoint);
    assert!(link.link_fd().is_some() && link.perf_fd().is_none());
    getpid_n(N);
    assert_eq!(slot(&map, 0), N, "raw sys_enter getpid hits");
    assert_eq!(slot(&map, 1), libc::SYS_getpid as u64, "args[1]");
    drop(link);
    getpid_n(N);
    assert_eq!(slot(&map, 0), N, "hits after the link was dropped");
}

/// The load bias of the main program (`dl_iterate_phdr`'s first entry).
fn load_bias() -> u64 {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info and our `data`, a
        // `*mut u64`.
        unsafe { *(data as *mut u64) = (*info).dlpi_addr };
        1
    }
    let mut bias = 0u64;
    // SAFETY: the callback only writes the u64 `data` points to, which
    // outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(first), &mut bias as *mut u64 as *mut libc::c_void) };
    bias
}

#[test]
fn elf_program_headers_and_proc_maps_agree_on_file_offsets() {
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    for f in [
        userbpf_attach_test_entry as extern "C" fn(u64) -> u64,
        userbpf_attach_test_return,
    ] {
        let addr = f as usize as u64;
        let (path, from_maps) = mapped_file_offset(None, addr).unwrap();
        assert_eq!(path, exe);
        let vaddr = addr - load_bias();
        let from_elf = vaddr_to_file_offset(&exe, vaddr).unwrap();
        assert_eq!(
            from_elf, from_maps,
            "file offset of {addr:#x} (vaddr {vaddr:#x})"
        );
        // The probed instruction is not a `ret` (single-stepped).
        let code = std::fs::read(&exe).unwrap();
        assert_ne!(code[from_elf as usize], 0xc3, "function starts with ret");
    }
    let err = vaddr_to_file_offset(&exe, u64::MAX - 8).unwrap_err();
    assert!(err.to_string().contains("no PT_LOAD"), "{err}");
    let err = vaddr_to_file_offset(Path::new("/proc/self/maps"), 0).unwrap_err();
    assert!(err.to_string().contains("/proc/self/maps"), "{err}");
    let stack = 0u64;
    let err = mapped_file_offset(None, &stack as *const u64 as u64).unwrap_err();
    assert!(err.to_string().contains("not a file"), "{err}");
}

#[test]
fn attach_errors_name_the_hook_and_the_errno() {
    if !kernel_or_skip("attach_errors_name_the_hook_and_the_errno") {
        return;
    }
    let (_, kprobe) = load(KPROBE, &Spec::default());
    let err =
        attach_uprobe(&kprobe, Path::new("/no/such/binary"), 0x1234, false, None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/no/such/binary:0x1234"), "{msg}");
    assert!(
        msg.contains("perf_event_open") && msg.contains("os error"),
        "{msg}"
    );
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{msg}");

    let err = attach_tracepoint(&kprobe, "syscalls", "sys_enter_no_such_call").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("syscalls/sys_enter_no_such_call") && msg.contains("no such tracepoint"),
        "{msg}"
    );
    let err = attach_tracepoint(&kprobe, "..", "x").unwrap_err();
    assert!(
        err.to_string().contains("invalid tracepoint category"),
        "{err}"
    );

    // A program of the wrong type: the error says which type it is.
    let (_, filter) = load(SOCKET_FILTER, &Spec::default());
    let err = attach_tracepoint(&filter, "syscalls", "sys_enter_getpid").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("BPF_LINK_CREATE") && msg.contains("BPF_PROG_TYPE_TRACEPOINT"),
        "{msg}"
    );
    // A tracepoint program reading past the record: the kernel says
    // EACCES, the error says why.
    let (_, past) = load(
        TRACEPOINT,
        &Spec {
            store: Some(8),
            ..Spec::default()
        },
    );
    let err = attach_tracepoint(&past, "syscalls", "sys_enter_getpid").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    assert!(err.to_string().contains("past the end"), "{err}");
    let (binary, offset) = file_offset_of(userbpf_attach_test_entry);
    let err = attach_uprobe(
        &filter,
        &binary,
        offset,
        false,
        Some(std::process::id() as i32),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("BPF_PROG_TYPE_KPROBE"), "{msg}");

    let err = attach_raw_tracepoint(&kprobe, "no_such_raw_tracepoint").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("raw tracepoint no_such_raw_tracepoint"),
        "{msg}"
    );
    println!("{msg}");
}
