//! Which executable memory the rewrite covers, and so whether Syscall
//! User Dispatch is needed ([`super::UserDispatch::Auto`]).
//!
//! SUD costs every syscall of an armed thread the kernel's slow path
//! (~35 ns here), hooked or not. It is only needed while some code that
//! can run a system call instruction escaped the rewrite. The rewrite
//! covers a module when every `syscall` of its executable segments was
//! decoded and rewritten and no byte pair that could start one (`0f 05`,
//! `sysenter`'s `0f 34`, `int 0x80`'s `cd 80`) lies outside the decoded
//! instructions ([`module_scanned`]). Other executable memory is judged
//! at installation ([`classify_mappings`], from `/proc/self/maps`) and
//! whenever the process makes some (the syscalls that can:
//! [`WATCHED`], judged after they return, before the caller can run the
//! new code):
//!
//! - the dynamic loader's own read-execute mappings: covered, since each new module
//!   is rewritten before any of its code runs (the `_dl_debug_state`
//!   hook), and judged as a module then;
//! - memory that is writable and executable at once, shared (another
//!   mapping may change it), a file mapped executable outside the loader,
//!   or unreadable: needs SUD;
//! - other anonymous executable memory (a JIT's code): needs SUD if it
//!   holds one of those byte pairs outside userbpf's own code
//!   (`userbpf_vm::own_code`); to change later it must be made writable
//!   or remapped, which is judged again;
//! - a module's code made executable again by the program (it may have
//!   changed meanwhile), or its pages dropped (`MADV_DONTNEED` brings
//!   back the file's bytes, unrewritten): needs SUD;
//! - opening `/proc/<this process>/mem` for writing (it writes through
//!   page protections): needs SUD.
//!
//! Once needed, SUD stays needed for the life of the process (while hooks
//! are attached, as before), and the watch stops.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::dispatch::{self, copy_user, Direction};
use super::{sud, zpoline};
use crate::maps::Mapping;

/// The syscalls that can make executable memory or write code.
pub const WATCHED: [i64; 9] = [
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_pkey_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_shmat,
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_openat2,
];

/// Some executable memory escapes the rewrite.
static NEEDED: AtomicBool = AtomicBool::new(false);
/// Why (the first reason found).
static REASON: Mutex<Option<String>> = Mutex::new(None);
/// The page-rounded executable segments of the modules the rewrite
/// handled.
static MODULES: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
/// The dynamic loader's executable segment, while the `_dl_debug_state`
/// hook rewrites the modules it loads (0, 0: no such hook).
static LOADER_START: AtomicU64 = AtomicU64::new(0);
static LOADER_END: AtomicU64 = AtomicU64::new(0);

/// Whether some executable memory escapes the rewrite.
pub fn needed() -> bool {
    NEEDED.load(Ordering::Acquire)
}

/// Why SUD is needed, if it is.
pub fn reason() -> Option<String> {
    REASON.lock().ok().and_then(|r| r.clone())
}

/// Records that `reason` escapes the rewrite: SUD is needed from now on
/// (threads are armed if the policy is [`super::UserDispatch::Auto`] and
/// hooks are attached), and the watch stops.
pub fn need(reason: String) {
    if NEEDED.swap(true, Ordering::AcqRel) {
        return;
    }
    if std::env::var_os("USERBPF_SYSCALL_DEBUG").is_some() {
        eprintln!("userbpf: Syscall User Dispatch is needed: {reason}");
    }
    if let Ok(mut r) = REASON.lock() {
        *r = Some(reason);
    }
    for nr in WATCHED {
        dispatch::unmark_watched(nr);
    }
    sud::needs_changed();
}

/// Sends the [`WATCHED`] syscalls through the dispatcher (at
/// installation, unless SUD is already needed).
pub fn watch() {
    if needed() {
        return;
    }
    for nr in WATCHED {
        dispatch::mark_watched(nr);
    }
}

/// Called by the rewrite for each module it scanned: its executable
/// segments, and why it is not covered (`None`: covered).
pub fn module_scanned(path: &std::path::Path, exec: &[(u64, u64)], uncovered: Option<String>) {
    if let Ok(mut m) = MODULES.lock() {
        m.extend_from_slice(exec);
    }
    if let Some(why) = uncovered {
        need(format!(
            "not every system call of {} is rewritten: {why}",
            path.display()
        ));
    }
}

/// Records the dynamic loader's executable segment (the `_dl_debug_state`
/// hook is in place).
pub fn set_loader(start: u64, end: u64) {
    LOADER_START.store(start, Ordering::Release);
    LOADER_END.store(end, Ordering::Release);
}

fn from_loader(ip: u64) -> bool {
    let (s, e) = (
        LOADER_START.load(Ordering::Acquire),
        LOADER_END.load(Ordering::Acquire),
    );
    s <= ip && ip < e
}

/// Whether every page of `[start, end)` lies in a module's executable
/// segment.
fn in_modules(start: u64, end: u64) -> bool {
    let Ok(m) = MODULES.lock() else {
        return false;
    };
    let mut at = start;
    while at < end {
        match m
            .iter()
            .filter(|&&(s, e)| s <= at && at < e)
            .map(|&(_, e)| e)
            .max()
        {
            Some(e) => at = e,
            None => return false,
        }
    }
    true
}

/// Whether `[start, end)` meets a module's executable segment.
fn touches_modules(start: u64, end: u64) -> bool {
    MODULES
        .lock()
        .map(|m| m.iter().any(|&(s, e)| s < end && start < e))
        .unwrap_or(true)
}

fn mappings() -> Vec<Mapping> {
    crate::maps::mappings().unwrap_or_default()
}

/// Judges the executable mappings present at installation (after the
/// rewrite of the loaded modules).
pub fn classify_mappings() {
    for m in mappings() {
        if needed() {
            return;
        }
        if !m.exec() || m.name == "[vsyscall]" || m.start == 0 {
            // (The vsyscall page is emulated by the kernel, no
            // instruction runs; page 0 is the rewrite's own sled.)
            continue;
        }
        if in_modules(m.start, m.end) {
            continue;
        }
        if let Some(why) = judge_mapping(&m) {
            need(why);
        }
    }
}

/// Why mapping `m` (executable, not a rewritten module's) escapes the
/// rewrite, if it does.
fn judge_mapping(m: &Mapping) -> Option<String> {
    let what = format!(
        "{:#x}-{:#x} {}{}",
        m.start,
        m.end,
        String::from_utf8_lossy(&m.perms),
        if m.name.is_empty() {
            String::new()
        } else {
            format!(" {}", m.name)
        }
    );
    if m.writable() {
        return Some(format!("writable and executable memory ({what})"));
    }
    if m.shared() {
        return Some(format!(
            "shared executable memory ({what}): another mapping may change it"
        ));
    }
    if m.file_backed() || m.name == "[vdso]" {
        return Some(format!("code the rewrite did not see ({what})"));
    }
    scan(m.start, m.end).map(|at| {
        format!("system call instruction bytes at {at:#x} in anonymous executable memory ({what})")
    })
}

/// The first byte pair of a system call instruction in `[start, end)`
/// outside userbpf's own code; `Some(start)` when the memory cannot be
/// read.
fn scan(start: u64, end: u64) -> Option<u64> {
    const CHUNK: usize = 4096;
    let mut buf = [0u8; CHUNK + 1];
    let mut at = start;
    // The last byte of the previous chunk (a pair may straddle chunks).
    let mut carry: Option<u8> = None;
    while at < end {
        let n = ((end - at) as usize).min(CHUNK);
        if !copy_user(buf[1..].as_mut_ptr(), at, n, Direction::Read) {
            return Some(at);
        }
        let (bytes, base) = match carry {
            Some(b) => {
                buf[0] = b;
                (&buf[..n + 1], at - 1)
            }
            None => (&buf[1..n + 1], at),
        };
        for p in zpoline::syscall_byte_pairs(base, bytes) {
            if !userbpf_vm::own_code::contains(p, 2) {
                return Some(p);
            }
        }
        carry = Some(buf[n]);
        at += n as u64;
    }
    None
}

/// After a [`WATCHED`] syscall `nr` with `args` returned `ret` to the
/// code at `ip`: judges what it made.
pub fn after(nr: u64, args: &[u64; 6], ret: i64, ip: u64) {
    if (-4095..0).contains(&ret) || needed() || userbpf_vm::own_code::in_scope() {
        return;
    }
    let ret = ret as u64;
    let why = match nr as i64 {
        libc::SYS_mmap => {
            let (len, prot, flags) = (args[1], args[2] as i32, args[3] as i32);
            if prot & libc::PROT_EXEC == 0 {
                return;
            }
            let what = format!("mmap at {ret:#x} ({len} bytes)");
            if prot & libc::PROT_WRITE != 0 {
                Some(format!("writable and executable memory ({what})"))
            } else if from_loader(ip) {
                None
            } else if matches!(flags & 0x0f, libc::MAP_SHARED | libc::MAP_SHARED_VALIDATE) {
                Some(format!("shared executable memory ({what})"))
            } else if flags & libc::MAP_ANONYMOUS == 0 {
                Some(format!(
                    "a file mapped executable outside the dynamic loader ({what})"
                ))
            } else {
                judge_range(ret, len, &what)
            }
        }
        libc::SYS_mprotect | libc::SYS_pkey_mprotect => {
            let (start, len, prot) = (args[0], args[1], args[2] as i32);
            if prot & libc::PROT_EXEC == 0 {
                return;
            }
            let what = format!("mprotect of {start:#x} ({len} bytes)");
            if prot & libc::PROT_WRITE != 0 {
                Some(format!("writable and executable memory ({what})"))
            } else if from_loader(ip) {
                None
            } else {
                judge_range(start, len, &what)
            }
        }
        libc::SYS_mremap => {
            if from_loader(ip) {
                return;
            }
            let what = format!("mremap to {ret:#x} ({} bytes)", args[2]);
            judge_range(ret, args[2], &what)
        }
        libc::SYS_madvise => {
            // Dropping a private file mapping's pages brings back the
            // file's bytes: a module's rewritten sites would read
            // `syscall` again.
            const MADV_DONTNEED_LOCKED: u64 = 24;
            let (start, len, advice) = (args[0], args[1], args[2]);
            let drops = advice == libc::MADV_DONTNEED as u64 || advice == MADV_DONTNEED_LOCKED;
            (drops && touches_modules(start, start.saturating_add(len))).then(|| {
                format!("madvise({start:#x}, {len}, MADV_DONTNEED) on a rewritten module's code")
            })
        }
        libc::SYS_shmat => {
            const SHM_EXEC: u64 = 0o100000;
            (args[2] & SHM_EXEC != 0).then(|| format!("shmat with SHM_EXEC at {ret:#x}"))
        }
        libc::SYS_open => proc_mem(args[0], args[1], ret),
        libc::SYS_openat => proc_mem(args[1], args[2], ret),
        libc::SYS_openat2 => {
            // `struct open_how` starts with the u64 flags.
            let mut flags = 0u64;
            if !copy_user((&raw mut flags).cast(), args[2], 8, Direction::Read) {
                return;
            }
            proc_mem(args[1], flags, ret)
        }
        _ => None,
    };
    if let Some(why) = why {
        need(why);
    }
}

/// Judges `[start, start + len)`, now executable: the mappings it covers
/// are checked as at installation.
fn judge_range(start: u64, len: u64, what: &str) -> Option<String> {
    let end = start.saturating_add(len);
    if userbpf_vm::own_code::contains(start, len) {
        return None;
    }
    for m in mappings() {
        if m.end <= start || end <= m.start || !m.exec() {
            continue;
        }
        if in_modules(m.start, m.end) {
            // Module code made executable again by the program: it may
            // have changed while it was not (the loader's and userbpf's
            // own changes are not judged).
            return Some(format!(
                "a module's code changed by the program ({:#x}-{:#x} {}), after {what}",
                m.start, m.end, m.name
            ));
        }
        if let Some(why) = judge_mapping(&m) {
            return Some(format!("{why}, after {what}"));
        }
    }
    None
}

/// Whether an open of `path` (a pointer of the caller's) with `flags`
/// that returned descriptor `fd` opened this process's `mem` for writing.
fn proc_mem(path: u64, flags: u64, fd: u64) -> Option<String> {
    if flags & libc::O_ACCMODE as u64 == libc::O_RDONLY as u64 {
        return None;
    }
    // Only paths ending in "mem" are looked at closer. The path is read
    // a page at a time (the kernel read it whole, but it may end just
    // before an unmapped page).
    let mut name = [0u8; 512];
    let mut len = 0;
    let end = loop {
        let at = path + len as u64;
        let n = ((at | 4095) + 1 - at).min((name.len() - len) as u64) as usize;
        if n == 0 || !copy_user(name[len..].as_mut_ptr(), at, n, Direction::Read) {
            return None;
        }
        if let Some(z) = name[len..len + n].iter().position(|&b| b == 0) {
            break len + z;
        }
        len += n;
    };
    if !name[..end].ends_with(b"mem") {
        return None;
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let link = link.to_string_lossy().into_owned();
    let pid = std::process::id();
    let ours = link == format!("/proc/{pid}/mem")
        || (link.starts_with(&format!("/proc/{pid}/task/")) && link.ends_with("/mem"));
    ours.then(|| format!("{link} opened for writing (it writes through page protections)"))
}
