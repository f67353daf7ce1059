//! Reading and writing the process's own memory at addresses a program
//! names (`bpf_probe_read*`, `bpf_probe_write_user`) without ever faulting:
//! `process_vm_readv`/`process_vm_writev` on our own pid return `EFAULT`
//! for unmapped or protected addresses instead of raising SIGSEGV.

/// Copies `dst.len()` bytes from address `src` of this process; `false`
/// (with `dst` zeroed, as the kernel does) if any byte is unreadable.
pub fn read(dst: &mut [u8], src: u64) -> bool {
    if dst.is_empty() {
        return true;
    }
    let local = libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: dst.len(),
    };
    let remote = libc::iovec {
        iov_base: src as *mut libc::c_void,
        iov_len: dst.len(),
    };
    // SAFETY: `local` describes `dst`, which we own; the remote side is only
    // read by the kernel, which checks it.
    let n = unsafe { libc::process_vm_readv(crate::identity::pid(), &local, 1, &remote, 1, 0) };
    if n == dst.len() as isize {
        return true;
    }
    dst.fill(0);
    false
}

/// Writes `src` to address `dst` of this process; `false` if any byte is
/// not writable.
pub fn write(dst: u64, src: &[u8]) -> bool {
    if src.is_empty() {
        return true;
    }
    let local = libc::iovec {
        iov_base: src.as_ptr() as *mut libc::c_void,
        iov_len: src.len(),
    };
    let remote = libc::iovec {
        iov_base: dst as *mut libc::c_void,
        iov_len: src.len(),
    };
    // SAFETY: `local` describes `src`, which the kernel only reads; the
    // remote side is checked by the kernel.
    let n = unsafe { libc::process_vm_writev(crate::identity::pid(), &local, 1, &remote, 1, 0) };
    n == src.len() as isize
}

/// Reads a NUL-terminated string at `src` into `dst` (at most `dst.len()`
/// bytes, always NUL-terminated): the length including the NUL, or `None`
/// if the first byte is unreadable (`dst` zeroed).
pub fn read_str(dst: &mut [u8], src: u64) -> Option<usize> {
    if dst.is_empty() {
        return Some(0);
    }
    let max = dst.len();
    let mut got = 0usize;
    // Read in chunks that never cross a page, so a string ending right
    // before an unmapped page is still read.
    while got < max - 1 {
        let addr = src.wrapping_add(got as u64);
        let to_page_end = 4096 - (addr % 4096) as usize;
        let want = to_page_end.min(max - 1 - got);
        if !read(&mut dst[got..got + want], addr) {
            if got == 0 {
                dst.fill(0);
                return None;
            }
            break;
        }
        if let Some(nul) = dst[got..got + want].iter().position(|&b| b == 0) {
            return Some(got + nul + 1);
        }
        got += want;
    }
    dst[got] = 0;
    Some(got + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_memory_and_refuses_bad_addresses() {
        let data = [1u8, 2, 3, 4];
        let mut out = [9u8; 4];
        assert!(read(&mut out, data.as_ptr() as u64));
        assert_eq!(out, data);
        let mut out = [9u8; 4];
        assert!(!read(&mut out, 8));
        assert_eq!(out, [0; 4]);
        assert!(!write(16, &[1]));
        let mut target = [0u8; 2];
        assert!(write(target.as_mut_ptr() as u64, &[5, 6]));
        assert_eq!(target, [5, 6]);
    }

    #[test]
    fn strings_stop_at_nul_and_truncate() {
        let s = b"hello\0world";
        let mut out = [0xffu8; 16];
        assert_eq!(read_str(&mut out, s.as_ptr() as u64), Some(6));
        assert_eq!(&out[..6], b"hello\0");
        let mut small = [0xffu8; 3];
        assert_eq!(read_str(&mut small, s.as_ptr() as u64), Some(3));
        assert_eq!(&small, b"he\0");
        assert_eq!(read_str(&mut out, 0), None);
    }
}
