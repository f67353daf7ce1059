//! Executable memory for trampolines, within reach of a `jmp rel32` from
//! the patched site, and never writable and executable at once: a page is
//! mapped read-write, filled, then made read-execute for good.

use std::io;

/// The reach of a `jmp rel32` (minus a margin for the page itself).
const REACH: u64 = (1 << 31) - (1 << 20);

/// A sealed (read-execute) code page. Pages are never unmapped: a thread
/// may still be executing a trampoline after its site was detached.
#[derive(Debug, Clone, Copy)]
pub struct CodePage {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub len: usize,
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

/// The free gaps of the address space (between mappings of
/// `/proc/self/maps`), as `(start, end)`.
fn gaps() -> io::Result<Vec<(u64, u64)>> {
    let mut maps: Vec<(u64, u64)> = crate::maps::mappings()?
        .into_iter()
        .map(|m| (m.start, m.end))
        .collect();
    maps.sort_unstable();
    let mut out = Vec::new();
    // Never below 64 KiB (mmap_min_addr) nor in the top of the user half.
    let mut prev_end = 0x10000u64;
    for (s, e) in maps {
        if s > prev_end {
            out.push((prev_end, s));
        }
        prev_end = prev_end.max(e);
    }
    if prev_end < 0x7fff_ffff_0000 {
        out.push((prev_end, 0x7fff_ffff_0000));
    }
    Ok(out)
}

/// Maps `code` read-execute at an address from which a `jmp rel32` at
/// `near` reaches every byte of it (or anywhere when `near` is `None`).
/// `place` receives the final address and writes the code for it (code
/// with relative branches depends on where it lands).
pub fn alloc_code(
    near: Option<u64>,
    len: usize,
    place: impl FnOnce(u64) -> Result<Vec<u8>, String>,
) -> Result<CodePage, String> {
    let page = page_size();
    let size = len.div_ceil(page).max(1) * page;
    let addr = match near {
        None => {
            // SAFETY: an anonymous private mapping; no existing memory is
            // touched.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(format!("mmap: {}", io::Error::last_os_error()));
            }
            p as u64
        }
        Some(near) => map_near(near, size)?,
    };
    let code = match place(addr) {
        Ok(c) if c.len() <= size => c,
        Ok(c) => {
            unmap(addr, size);
            return Err(format!("code of {} bytes does not fit {size}", c.len()));
        }
        Err(e) => {
            unmap(addr, size);
            return Err(e);
        }
    };
    // SAFETY: the mapping is ours, read-write, and `size` >= code.len().
    unsafe {
        std::ptr::copy_nonoverlapping(code.as_ptr(), addr as *mut u8, code.len());
        // Fill the rest with int3.
        std::ptr::write_bytes((addr as *mut u8).add(code.len()), 0xcc, size - code.len());
    }
    // Userbpf's own code (see `userbpf_vm::own_code`); trampolines are
    // never unmapped once in use.
    userbpf_vm::own_code::register(addr, size as u64);
    // SAFETY: the mapping is ours; from now on it is never writable.
    if unsafe {
        libc::mprotect(
            addr as *mut libc::c_void,
            size,
            libc::PROT_READ | libc::PROT_EXEC,
        )
    } != 0
    {
        let e = io::Error::last_os_error();
        userbpf_vm::own_code::unregister(addr);
        unmap(addr, size);
        return Err(format!("mprotect: {e}"));
    }
    Ok(CodePage { addr, len: size })
}

fn unmap(addr: u64, size: usize) {
    // SAFETY: unmapping a mapping this module created and never handed out.
    unsafe { libc::munmap(addr as *mut libc::c_void, size) };
}

/// Maps `size` bytes read-write within `REACH` of `near`.
fn map_near(near: u64, size: usize) -> Result<u64, String> {
    let size64 = size as u64;
    let lo = near.saturating_sub(REACH);
    let hi = near.saturating_add(REACH);
    let mut candidates: Vec<u64> = Vec::new();
    for (s, e) in gaps().map_err(|e| format!("/proc/self/maps: {e}"))? {
        // Keep a page free on each side of the gap.
        let s = s.saturating_add(0x10000) & !0xffff;
        let e = e.saturating_sub(0x10000);
        if e <= s || e - s < size64 {
            continue;
        }
        // The address in [s, e - size] closest to `near`, within reach.
        let last = e - size64;
        let pick = near.clamp(s, last) & !0xfff;
        if pick < s || pick > last {
            continue;
        }
        if pick >= lo && pick.saturating_add(size64) <= hi {
            candidates.push(pick);
        }
    }
    candidates.sort_by_key(|a| a.abs_diff(near));
    for addr in candidates {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping;
        // it fails if the range is taken (a race with another mmap).
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            if p as u64 == addr {
                return Ok(addr);
            }
            unmap(p as u64, size);
        }
    }
    Err(format!(
        "no free memory within 2 GiB of {near:#x} for a trampoline"
    ))
}
