//! Helpers shared by the syscall tests (each test binary uses some).
#![allow(dead_code)]

/// Maps `code` read-write, copies it in, then makes the page
/// read-execute (never both): code the rewriter never saw, as a JIT
/// makes it. With `own`, the page is first registered as userbpf's own
/// code (`userbpf_vm::own_code`).
pub fn map_code(code: &[u8], own: bool) -> *mut libc::c_void {
    assert!(code.len() <= 4096);
    // SAFETY: a fresh anonymous mapping, written within its size, then
    // sealed read-execute.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        std::ptr::copy_nonoverlapping(code.as_ptr(), p.cast::<u8>(), code.len());
        if own {
            userbpf_vm::own_code::register(p as u64, 4096);
        }
        assert_eq!(
            libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC),
            0
        );
        p
    }
}

/// `mov %rdi, %rax; syscall; ret`: `syscall(nr)` from code the rewriter
/// never saw.
pub fn jit_syscall_stub() -> extern "C" fn(u64) -> i64 {
    let p = map_code(&[0x48, 0x89, 0xf8, 0x0f, 0x05, 0xc3], false);
    // SAFETY: the code above takes a u64 and returns the syscall's i64.
    unsafe { std::mem::transmute::<*mut libc::c_void, extern "C" fn(u64) -> i64>(p) }
}
