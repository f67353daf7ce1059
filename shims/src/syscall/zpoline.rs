//! zpoline: page 0 and the rewriting of `syscall` instructions.
//!
//! Page 0 holds a sled that any syscall number (`rax`, 0 to ~4000) can
//! enter and that ends in a stub jumping to the trampoline. A rewritten
//! site is `call *%rax` (`ff d0`), as long as `syscall` (`0f 05`).
//!
//! Sites are found per loaded module (`dl_iterate_phdr`, the vDSO
//! included: writing to it makes a private copy of its page) by decoding
//! with iced-x86 from the start of every function the module describes, over that function's extent: FDEs of `.eh_frame` (via
//! `.eh_frame_hdr`, present for nearly all code, static functions
//! included) and function symbols of `.symtab`/`.dynsym`. Bytes outside
//! every function are never decoded, and a function whose decoding meets
//! an invalid instruction is abandoned from there, so data that happens
//! to contain `0f 05` is left alone.
//!
//! Each site is rewritten by an atomic 2-byte `lock cmpxchg` (threads that
//! run the code meanwhile execute either instruction whole); a site that
//! straddles a cache line changes one byte at a time, its second byte
//! first, with a SIGILL handler for a thread that meets the half-written
//! site. Pages are made writable (and stay executable: other threads may
//! be running them) only while they are patched.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CStr;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use iced_x86::{Code, Decoder, DecoderOptions, Instruction};

use super::eh_frame;
use super::signals::{
    call_handler, redirect_to_trampoline, rt_sigaction, KernelSigaction, SavedAction,
};
use super::trampoline;
use crate::symbols::{SymbolKind, SymbolTable};

const PAGE: u64 = 4096;
/// Where the first stub starts in page 0: every syscall number below it
/// (all of them: x86-64 numbers end below 500, the x32 range 512-547
/// included) enters the first sled. As close to them as that allows: a
/// syscall hops through the sled to the stub, and every hop and nop costs.
const STUB_A: usize = 548;
/// The second stub, at the end of a second sled for numbers past the first
/// stub (none exist: they get `ENOSYS` rather than a crash). Numbers that
/// land inside the first stub (549-566) or after the second crash.
const STUB_B: usize = 4096 - 32;
/// Bytes of a stub: `lea -128(%rsp), %rsp; jmp *0(%rip); .quad target`.
const STUB_LEN: usize = 19;
/// The 2-byte nops before a stub: at least as long as the farthest a sled
/// jump goes past the last jump (75 bytes).
const TAIL: usize = 76;

/// The longest gap between a function's known end and the next function
/// that is decoded as part of the function.
const MAX_GAP: u64 = 64;

static MODULES: AtomicU64 = AtomicU64::new(0);
static REWRITTEN: AtomicU64 = AtomicU64::new(0);
static SKIPPED: AtomicU64 = AtomicU64::new(0);
/// Modules already rewritten: (load bias, path) -> the first site
/// rewritten (none: the module has no site). A module whose first site
/// reads `syscall` again was unloaded and loaded anew at the same place.
type Scanned = HashMap<(u64, PathBuf), Option<u64>>;
static SCANNED: Mutex<Option<Scanned>> = Mutex::new(None);

/// Whether the module scanned with this first site is still the one
/// rewritten.
fn still_rewritten(m: &LoadedModule, first: Option<u64>) -> bool {
    match first {
        None => true,
        Some(site) if m.readable(site, 2) => {
            // SAFETY: two bytes of a readable segment of a loaded module.
            let bytes = unsafe { (site as *const [u8; 2]).read_unaligned() };
            bytes == [0xff, 0xd0]
        }
        Some(_) => false,
    }
}

/// Counters for [`super::stats`].
#[derive(Debug, Clone, Copy)]
pub struct Counters {
    /// Modules rewritten.
    pub modules: u64,
    /// Sites rewritten.
    pub rewritten: u64,
    /// Sites found but not rewritten.
    pub skipped: u64,
}

/// The counters.
pub fn counters() -> Counters {
    Counters {
        modules: MODULES.load(Ordering::Relaxed),
        rewritten: REWRITTEN.load(Ordering::Relaxed),
        skipped: SKIPPED.load(Ordering::Relaxed),
    }
}

/// The bytes of page 0: two sleds, each ending in a stub
/// `lea -128(%rsp), %rsp; jmp *0(%rip); .quad target`.
///
/// A sled is `eb 48` repeated, then `66 90` repeated. Entered at an `eb`,
/// it is `jmp .+0x4a`; at a `48`, a REX.W prefix of the next `jmp` (or of
/// the first `66 90`, where it is ignored): either way it hops forward 74
/// or 75 bytes at a time. The tail of 2-byte nops (`66 90`, or `90` when
/// entered at its second byte) catches the last hop. From any entry the
/// stub is at most ~14 jumps and 38 nops away. The `lea` steps over the
/// caller's red zone (the `call` that got here already used its top 8
/// bytes) without touching the flags.
pub fn page_zero_bytes(target: u64) -> Vec<u8> {
    let mut page = vec![0xccu8; PAGE as usize];
    let mut stub = vec![0x48, 0x8d, 0x64, 0x24, 0x80, 0xff, 0x25, 0, 0, 0, 0];
    stub.extend_from_slice(&target.to_le_bytes());
    debug_assert_eq!(stub.len(), STUB_LEN);
    let mut sled = |from: usize, stub_at: usize| {
        let tail = stub_at - TAIL;
        let mut i = from;
        while i + 2 <= tail {
            page[i..i + 2].copy_from_slice(&[0xeb, 0x48]);
            i += 2;
        }
        // An odd leftover byte: a nop.
        page[i..tail].fill(0x90);
        for pair in page[tail..stub_at].chunks_exact_mut(2) {
            pair.copy_from_slice(&[0x66, 0x90]);
        }
        page[stub_at..stub_at + STUB_LEN].copy_from_slice(&stub);
    };
    sled(0, STUB_A);
    sled(STUB_A + STUB_LEN, STUB_B);
    page
}

/// Maps page 0 read-write, fills it, and makes it read-execute.
pub fn map_page_zero(target: u64) -> io::Result<()> {
    // SAFETY: an anonymous mapping at address 0 that never replaces an
    // existing mapping (MAP_FIXED_NOREPLACE).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    if !p.is_null() {
        // SAFETY: unmapping the mapping just made.
        unsafe { libc::munmap(p, PAGE as usize) };
        return Err(io::Error::other(format!(
            "the kernel placed the page at {p:p} instead of 0"
        )));
    }
    let bytes = page_zero_bytes(target);
    // SAFETY: page 0 is ours, read-write, and PAGE bytes long. Rust forbids
    // writes through a null pointer, so the copy is a `rep movsb` whose
    // destination register starts at 0.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") bytes.len() => _,
            inout("rsi") bytes.as_ptr() => _,
            inout("rdi") 0usize => _,
            options(nostack, preserves_flags),
        );
    }
    // SAFETY: page 0 is ours; from now on it is never writable.
    if unsafe { libc::mprotect(p, PAGE as usize, libc::PROT_READ | libc::PROT_EXEC) } != 0 {
        let e = io::Error::last_os_error();
        // SAFETY: as above.
        unsafe { libc::munmap(p, PAGE as usize) };
        return Err(e);
    }
    Ok(())
}

/// A loaded module, as `dl_iterate_phdr` describes it.
#[derive(Debug, Clone)]
struct LoadedModule {
    path: PathBuf,
    bias: u64,
    /// PT_LOAD segments: runtime start, end, `p_flags`.
    segments: Vec<(u64, u64, u32)>,
    eh_frame_hdr: Option<u64>,
}

impl LoadedModule {
    /// Whether `[addr, addr + len)` lies in one readable, file-backed
    /// segment.
    fn readable(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        self.segments
            .iter()
            .any(|&(s, e, f)| f & libc::PF_R != 0 && s <= addr && end <= e)
    }
}

unsafe extern "C" fn collect(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info and our `data`.
    let (info, out) = unsafe { (&*info, &mut *data.cast::<Vec<LoadedModule>>()) };
    let path = if info.dlpi_name.is_null() {
        PathBuf::new()
    } else {
        // SAFETY: a NUL-terminated string owned by the loader.
        let name = unsafe { CStr::from_ptr(info.dlpi_name) };
        PathBuf::from(name.to_string_lossy().into_owned())
    };
    let mut m = LoadedModule {
        path,
        bias: info.dlpi_addr,
        segments: Vec::new(),
        eh_frame_hdr: None,
    };
    for i in 0..usize::from(info.dlpi_phnum) {
        // SAFETY: dlpi_phdr has dlpi_phnum entries.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        let start = info.dlpi_addr.wrapping_add(ph.p_vaddr);
        match ph.p_type {
            libc::PT_LOAD => m.segments.push((
                start,
                start.wrapping_add(ph.p_filesz.min(ph.p_memsz)),
                ph.p_flags,
            )),
            libc::PT_GNU_EH_FRAME => m.eh_frame_hdr = Some(start),
            _ => {}
        }
    }
    out.push(m);
    0
}

fn loaded_modules() -> Vec<LoadedModule> {
    let mut out: Vec<LoadedModule> = Vec::new();
    // SAFETY: the callback only appends to `out`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(collect), (&raw mut out).cast()) };
    out
}

/// Rewrites every module not rewritten yet; returns the number of sites
/// rewritten.
pub fn rewrite_loaded_modules() -> u64 {
    let Ok(mut scanned) = SCANNED.lock() else {
        return 0;
    };
    let mut total = rewrite_new(scanned.get_or_insert_with(HashMap::new));
    // A rescan the dynamic loader asked for meanwhile (see
    // `rewrite_after_dlopen`).
    while PENDING.swap(false, Ordering::AcqRel) {
        total += rewrite_new(scanned.get_or_insert_with(HashMap::new));
    }
    drop(scanned);
    // (One asked for between the last check and the unlock.)
    if PENDING.load(Ordering::Acquire) {
        rewrite_after_dlopen();
    }
    total
}

/// A rescan was asked for while another ran.
static PENDING: AtomicBool = AtomicBool::new(false);

/// Rewrites the modules the dynamic loader has just added, from inside
/// the loader (never waits: if a scan is running on another thread, that
/// scan runs again for this one before it returns).
fn rewrite_after_dlopen() {
    PENDING.store(true, Ordering::Release);
    while PENDING.load(Ordering::Acquire) {
        let Ok(mut scanned) = SCANNED.try_lock() else {
            return;
        };
        if PENDING.swap(false, Ordering::AcqRel) {
            rewrite_new(scanned.get_or_insert_with(HashMap::new));
        }
    }
}

/// Calls [`rewrite_after_dlopen`] whenever the dynamic loader changes its
/// list of modules: a hook on `_dl_debug_state` (`ld.so`'s function for
/// debuggers, called before and after a `dlopen` or `dlclose` maps or
/// unmaps objects; at the second call the new objects are listed and none
/// of their code has run). Libraries loaded later are then rewritten
/// before their constructors run, and no syscall of theirs has to be
/// caught by Syscall User Dispatch. `Err`: why there is no such hook (the
/// rescans are then [`super::rescan`]'s to make).
pub fn watch_dlopen() -> Result<(), String> {
    struct Rescan;
    impl crate::hook::Probe for Rescan {
        fn hit(&self, _regs: &mut crate::hook::PtRegs) -> crate::hook::Action {
            rewrite_after_dlopen();
            crate::hook::Action::Continue
        }
    }
    static LINK: Mutex<Option<crate::hook::ProbeLink>> = Mutex::new(None);
    let mut link = LINK.lock().map_err(|_| "poisoned".to_string())?;
    if link.is_some() {
        return Ok(());
    }
    let mut last = String::from("no dynamic loader");
    for module in ["ld-linux-x86-64.so.2", "ld.so"] {
        let r = match crate::symbols::resolve(&format!("{module}:_dl_debug_state")) {
            Ok(r) => r,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let target = crate::hook::Target {
            address: r.address,
            function: Some((r.address - r.offset_in_symbol, r.size)),
        };
        match crate::hook::attach(
            target,
            crate::hook::ProbeKind::Entry,
            std::sync::Arc::new(Rescan),
        ) {
            Ok(l) => {
                *link = Some(l);
                if let Some((s, e)) = loaded_modules()
                    .iter()
                    .flat_map(exec_ranges)
                    .find(|&(s, e)| s <= r.address && r.address < e)
                {
                    super::coverage::set_loader(s, e);
                }
                return Ok(());
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// One pass over the loaded modules: rewrites those not scanned yet.
fn rewrite_new(scanned: &mut Scanned) -> u64 {
    // SAFETY: getauxval has no preconditions.
    let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    let mut total = 0;
    for mut m in loaded_modules() {
        if !m.segments.iter().any(|&(_, _, f)| f & libc::PF_X != 0) {
            continue;
        }
        let is_vdso = (vdso != 0 && m.segments.iter().any(|&(s, e, _)| s <= vdso && vdso < e))
            || m.path.to_str().is_some_and(|p| p.contains("linux-vdso"));
        if is_vdso {
            // Its in-memory image: no file to read symbols from.
            m.path = PathBuf::from("[vdso]");
        }
        let key = (m.bias, m.path.clone());
        if let Some(&first) = scanned.get(&key) {
            if still_rewritten(&m, first) {
                continue;
            }
        }
        MODULES.fetch_add(1, Ordering::Relaxed);
        if std::env::var("USERBPF_SYSCALL_REWRITE").is_ok_and(|v| v == "0") {
            super::coverage::module_scanned(
                &m.path,
                &exec_ranges(&m),
                Some("the rewrite is off (USERBPF_SYSCALL_REWRITE=0)".into()),
            );
            continue;
        }
        let found = find_sites(&m);
        let sites = &found.sites;
        if std::env::var("USERBPF_SYSCALL_DEBUG").is_ok_and(|v| v == "2") {
            for s in sites {
                eprintln!(
                    "userbpf-site {} {:#x}",
                    m.path.display(),
                    s.wrapping_sub(m.bias)
                );
            }
        }
        let rewritten = patch_sites(&m, sites);
        scanned.insert(key, sites.first().copied());
        super::coverage::module_scanned(&m.path, &exec_ranges(&m), uncovered(&m, &found));
        if std::env::var_os("USERBPF_SYSCALL_DEBUG").is_some() {
            eprintln!(
                "userbpf: {} (bias {:#x}): {} syscall sites, {rewritten} rewritten",
                m.path.display(),
                m.bias,
                sites.len()
            );
        }
        total += rewritten;
    }
    if total > 0 {
        sync_core();
    }
    total
}

/// The functions of a module: start -> end (0 when unknown).
fn functions(m: &LoadedModule) -> BTreeMap<u64, u64> {
    let mut fns: BTreeMap<u64, u64> = BTreeMap::new();
    let mut add = |start: u64, end: u64| {
        let e = fns.entry(start).or_insert(0);
        *e = (*e).max(end);
    };
    if let Some(hdr) = m.eh_frame_hdr {
        for (start, len) in eh_frame::functions(hdr, &|addr, len| m.readable(addr, len)) {
            add(start, start.saturating_add(len));
        }
    }
    let path = if m.path.as_os_str().is_empty() {
        PathBuf::from("/proc/self/exe")
    } else {
        m.path.clone()
    };
    if let Ok(table) = SymbolTable::load(&path) {
        for s in table.symbols() {
            if matches!(s.kind, SymbolKind::Function | SymbolKind::Ifunc) && s.value != 0 {
                let start = m.bias.wrapping_add(s.value);
                add(
                    start,
                    if s.size > 0 {
                        start.saturating_add(s.size)
                    } else {
                        0
                    },
                );
            }
        }
    }
    fns
}

/// What decoding a module's functions found.
#[derive(Debug, Default)]
struct Found {
    /// The `syscall` instructions (sorted).
    sites: Vec<u64>,
    /// The byte ranges decoded as instructions (sorted, merged).
    decoded: Vec<(u64, u64)>,
    /// Other system call instructions (`sysenter`, `int 0x80`): the
    /// rewrite leaves them alone.
    others: Vec<u64>,
}

/// The page-rounded executable segments of a module.
fn exec_ranges(m: &LoadedModule) -> Vec<(u64, u64)> {
    m.segments
        .iter()
        .filter(|&&(_, _, f)| f & libc::PF_X != 0)
        .map(|&(s, e, _)| (s & !(PAGE - 1), e.div_ceil(PAGE) * PAGE))
        .collect()
}

/// Why some system call instruction of module `m` may escape the
/// rewrite (checked after it), or `None`: every `syscall` of its
/// executable segments was decoded and rewritten, and no byte pair that
/// could be one (`0f 05`, `0f 34` sysenter, `cd 80` int 0x80) lies outside
/// the decoded instructions (code no function describes).
fn uncovered(m: &LoadedModule, found: &Found) -> Option<String> {
    let (tramp_start, tramp_end) = trampoline::text_range();
    if let Some(&at) = found.others.first() {
        return Some(format!(
            "{}: a sysenter or int 0x80 at {:#x} (offset {:#x})",
            m.path.display(),
            at,
            at.wrapping_sub(m.bias)
        ));
    }
    for &(seg_start, seg_end, flags) in &m.segments {
        if flags & libc::PF_X == 0 {
            continue;
        }
        if flags & libc::PF_R == 0 {
            return Some(format!(
                "{}: an executable segment at {seg_start:#x} that cannot be read",
                m.path.display()
            ));
        }
        // SAFETY: a readable segment of a loaded module (its file-backed
        // part).
        let code = unsafe {
            std::slice::from_raw_parts(seg_start as *const u8, (seg_end - seg_start) as usize)
        };
        for at in syscall_byte_pairs(seg_start, code) {
            if tramp_start <= at && at < tramp_end {
                continue;
            }
            let inside = match found.decoded.binary_search_by(|&(s, _)| s.cmp(&at)) {
                Ok(_) => true,
                Err(0) => false,
                Err(i) => at < found.decoded[i - 1].1,
            };
            let is_site = found.sites.binary_search(&at).is_ok();
            if !inside || is_site {
                return Some(format!(
                    "{}: {} at {at:#x} (offset {:#x})",
                    m.path.display(),
                    if is_site {
                        "a syscall instruction left unrewritten"
                    } else {
                        "system call instruction bytes outside every decoded function"
                    },
                    at.wrapping_sub(m.bias)
                ));
            }
        }
    }
    None
}

/// The addresses in `code` (at `ip`) where the bytes of `syscall` (`0f
/// 05`), `sysenter` (`0f 34`) or `int 0x80` (`cd 80`) start.
pub fn syscall_byte_pairs(ip: u64, code: &[u8]) -> impl Iterator<Item = u64> + '_ {
    code.windows(2).enumerate().filter_map(move |(i, w)| {
        matches!(w, [0x0f, 0x05] | [0x0f, 0x34] | [0xcd, 0x80]).then_some(ip + i as u64)
    })
}

/// The `syscall` instructions of a module's executable segments.
fn find_sites(m: &LoadedModule) -> Found {
    let fns = functions(m);
    let (tramp_start, tramp_end) = trampoline::text_range();
    let mut sites = HashSet::new();
    let mut decoded = Vec::new();
    let mut others = Vec::new();
    for &(seg_start, seg_end, flags) in &m.segments {
        if flags & libc::PF_X == 0 || flags & libc::PF_R == 0 {
            continue;
        }
        let in_seg: Vec<(u64, u64)> = fns
            .range(seg_start..seg_end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (i, &(start, end)) in in_seg.iter().enumerate() {
            // Unknown extent: up to the next function. A known extent
            // stops short of code its CFI leaves out on purpose (glibc's
            // `clone3` ends its FDE right before the `syscall`, the child
            // side has an FDE of its own): a short gap up to the next
            // function is decoded as the same instruction stream.
            let next = in_seg.get(i + 1).map_or(seg_end, |&(n, _)| n);
            let end = if end == 0 || (end < next && next - end <= MAX_GAP) {
                next
            } else {
                end.min(seg_end)
            };
            if end <= start || (start < tramp_end && tramp_start < end) {
                continue;
            }
            let len = (end - start) as usize;
            // SAFETY: [start, end) lies in a readable, executable PT_LOAD
            // segment of a loaded module (its file-backed part).
            let code = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
            let stream = decode_stream(start, code);
            sites.extend(stream.syscalls);
            others.extend(stream.others);
            decoded.push((start, stream.end));
        }
    }
    let mut sites: Vec<u64> = sites.into_iter().collect();
    sites.sort_unstable();
    decoded.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(decoded.len());
    for (s, e) in decoded {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    others.sort_unstable();
    Found {
        sites,
        decoded: merged,
        others,
    }
}

/// What decoding one instruction stream met.
struct Stream {
    /// `syscall` instructions.
    syscalls: Vec<u64>,
    /// `sysenter` and `int 0x80` instructions.
    others: Vec<u64>,
    /// Where decoding stopped (the end, or the first invalid
    /// instruction).
    end: u64,
}

/// Decodes `code` (at `ip`) linearly up to the first invalid instruction.
fn decode_stream(ip: u64, code: &[u8]) -> Stream {
    let mut out = Stream {
        syscalls: Vec::new(),
        others: Vec::new(),
        end: ip,
    };
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        if instr.is_invalid() {
            break;
        }
        match instr.code() {
            Code::Syscall => out.syscalls.push(instr.ip()),
            Code::Sysenter => out.others.push(instr.ip()),
            Code::Int_imm8 if instr.immediate8() == 0x80 => out.others.push(instr.ip()),
            _ => {}
        }
        out.end = instr.next_ip();
    }
    out
}

/// The addresses of the `syscall` instructions met decoding `code` (at
/// `ip`) linearly; stops at the first invalid instruction.
#[cfg(test)]
pub fn decode_syscalls(ip: u64, code: &[u8]) -> Vec<u64> {
    decode_stream(ip, code).syscalls
}

const SYSCALL: u16 = u16::from_le_bytes([0x0f, 0x05]);
const CALL_RAX: u16 = u16::from_le_bytes([0xff, 0xd0]);

/// Replaces `0f 05` by `ff d0` at `addr` in one locked compare-and-swap.
///
/// # Safety
///
/// `addr` is writable and the two bytes do not cross a cache line.
unsafe fn swap_site(addr: u64) -> bool {
    let prev: u16;
    // SAFETY: the caller's contract; a locked cmpxchg within a cache line
    // is atomic for data and instruction fetch alike.
    unsafe {
        std::arch::asm!(
            "lock cmpxchg word ptr [{addr}], {new:x}",
            addr = in(reg) addr,
            new = in(reg) CALL_RAX,
            inout("ax") SYSCALL => prev,
            options(nostack),
        );
    }
    prev == SYSCALL
}

fn prot_of(flags: u32) -> i32 {
    let mut prot = 0;
    if flags & libc::PF_R != 0 {
        prot |= libc::PROT_READ;
    }
    if flags & libc::PF_W != 0 {
        prot |= libc::PROT_WRITE;
    }
    if flags & libc::PF_X != 0 {
        prot |= libc::PROT_EXEC;
    }
    prot
}

fn segment_flags(m: &LoadedModule, addr: u64) -> u32 {
    m.segments
        .iter()
        .find(|&&(s, e, _)| s <= addr && addr < e)
        .map_or(libc::PF_R | libc::PF_X, |&(_, _, f)| f)
}

/// Makes `[start, start + len)` (page-aligned) writable (and still
/// executable) for `f`, then restores `prot`.
fn with_writable<T>(start: u64, len: u64, prot: i32, f: impl FnOnce() -> T) -> Option<T> {
    // One code writer at a time (the uprobe patcher changes protections
    // too).
    let _code = crate::hook::patch::code_lock();
    userbpf_vm::own_code::scope(|| with_writable_locked(start, len, prot, f))
}

fn with_writable_locked<T>(start: u64, len: u64, prot: i32, f: impl FnOnce() -> T) -> Option<T> {
    // The pages stay executable: other threads may be running them.
    // SAFETY: the pages belong to a loaded module's executable segment;
    // only their protection changes.
    let ok = unsafe {
        libc::mprotect(
            start as *mut libc::c_void,
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
        )
    } == 0;
    if !ok {
        return None;
    }
    let out = f();
    // SAFETY: as above.
    unsafe { libc::mprotect(start as *mut libc::c_void, len as usize, prot) };
    Some(out)
}

/// The pages made writable to rewrite `site`: its own page, or for the
/// vDSO its whole executable segment (the kernel refuses to split that
/// mapping: `mprotect` of a part of it fails).
fn writable_range(m: &LoadedModule, site: u64) -> (u64, u64) {
    if m.path.as_os_str() == "[vdso]" {
        if let Some((s, e)) = exec_ranges(m)
            .into_iter()
            .find(|&(s, e)| s <= site && site < e)
        {
            return (s, e - s);
        }
    }
    (site & !(PAGE - 1), PAGE)
}

/// Rewrites `sites` (sorted) of module `m`, page by page.
fn patch_sites(m: &LoadedModule, sites: &[u64]) -> u64 {
    let debug = std::env::var_os("USERBPF_SYSCALL_DEBUG").is_some();
    let mut rewritten = 0;
    let mut skipped = 0;
    let (straddling, plain): (Vec<u64>, Vec<u64>) = sites.iter().partition(|&&s| s % 64 == 63);
    for group in plain.chunk_by(|a, b| writable_range(m, *a) == writable_range(m, *b)) {
        let (start, len) = writable_range(m, group[0]);
        let prot = prot_of(segment_flags(m, group[0]));
        let done = with_writable(start, len, prot, || {
            group
                .iter()
                // SAFETY: the page is writable now; a plain site does not
                // cross a cache line.
                .filter(|&&s| unsafe { swap_site(s) })
                .count() as u64
        });
        let done = done.unwrap_or(0);
        rewritten += done;
        skipped += group.len() as u64 - done;
    }
    for s in straddling {
        if patch_straddling(m, s) {
            rewritten += 1;
        } else {
            if debug {
                eprintln!("userbpf: {s:#x} (straddles a cache line) left to SUD");
            }
            skipped += 1;
        }
    }
    REWRITTEN.fetch_add(rewritten, Ordering::Relaxed);
    SKIPPED.fetch_add(skipped, Ordering::Relaxed);
    rewritten
}

// ---------------------------------------------------------------------------
// Sites that straddle a cache line
// ---------------------------------------------------------------------------
//
// No single store changes both bytes atomically for instruction fetch, so
// the second byte changes first (`0f d0`: an invalid opcode), every core
// serialises, then the first (`ff d0`). A thread that meets the site in
// between takes a SIGILL whose handler sends it to the trampoline as if
// the site were done.

const MAX_STRADDLING: usize = 256;
static STRADDLING: [AtomicU64; MAX_STRADDLING] = [const { AtomicU64::new(0) }; MAX_STRADDLING];
static STRADDLING_LEN: AtomicUsize = AtomicUsize::new(0);
static PREV_SIGILL: SavedAction = SavedAction::new();
static SIGILL_INSTALLED: AtomicBool = AtomicBool::new(false);

fn is_straddling_site(ip: u64) -> bool {
    let n = STRADDLING_LEN.load(Ordering::Acquire).min(MAX_STRADDLING);
    STRADDLING[..n]
        .iter()
        .any(|s| s.load(Ordering::Acquire) == ip)
}

extern "C" fn on_sigill(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let uc = ctx.cast::<libc::ucontext_t>();
    // SAFETY: the kernel passes a valid ucontext to SA_SIGINFO handlers.
    let (ip, nr) = unsafe {
        let g = &(*uc).uc_mcontext.gregs;
        (g[libc::REG_RIP as usize] as u64, g[libc::REG_RAX as usize])
    };
    if is_straddling_site(ip) {
        // SAFETY: a valid ucontext; the site is a syscall whose number is
        // in rax (the invalid opcode changed nothing).
        unsafe { redirect_to_trampoline(ctx, nr, ip + 2) };
        return;
    }
    let prev = PREV_SIGILL.load();
    if !super::sud::allowing_syscalls(|| call_handler(&prev, sig, info, ctx)) {
        // SIG_DFL or SIG_IGN: put it back; the faulting instruction runs
        // again and the kernel applies it.
        rt_sigaction(sig, Some(&prev), None);
    }
}

fn install_sigill() -> bool {
    if SIGILL_INSTALLED.load(Ordering::Acquire) {
        return true;
    }
    let act = KernelSigaction::ours(on_sigill, 0, 0);
    let mut old = KernelSigaction::default();
    if rt_sigaction(libc::SIGILL, Some(&act), Some(&mut old)) != 0 {
        return false;
    }
    PREV_SIGILL.store(&old);
    SIGILL_INSTALLED.store(true, Ordering::Release);
    true
}

fn patch_straddling(m: &LoadedModule, site: u64) -> bool {
    let n = STRADDLING_LEN.load(Ordering::Acquire);
    if n >= MAX_STRADDLING || !install_sigill() {
        return false;
    }
    STRADDLING[n].store(site, Ordering::Release);
    STRADDLING_LEN.store(n + 1, Ordering::Release);
    let (start, len) = match writable_range(m, site) {
        (s, l) if s + l >= site + 2 => (s, l),
        (s, _) => (s, (site + 2).div_ceil(PAGE) * PAGE - s),
    };
    let prot = prot_of(segment_flags(m, site));
    let p = site as *mut u8;
    with_writable(start, len, prot, || {
        // SAFETY: both bytes are writable now; single-byte stores.
        unsafe {
            if p.read_volatile() != 0x0f || p.add(1).read_volatile() != 0x05 {
                return false;
            }
            p.add(1).write_volatile(0xd0);
            sync_core();
            p.write_volatile(0xff);
            sync_core();
        }
        true
    })
    .unwrap_or(false)
}

const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: u64 = 1 << 5;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: u64 = 1 << 6;

/// Serialises instruction fetch on every core running this process.
fn sync_core() {
    let call = |cmd: u64| {
        // SAFETY: membarrier takes no pointers.
        unsafe { trampoline::raw_syscall(libc::SYS_membarrier, [cmd, 0, 0, 0, 0, 0]) }
    };
    if call(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) != 0 {
        call(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE);
        call(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::FlowControl;

    /// Every entry of the sleds reaches a stub through jumps and nops
    /// only.
    #[test]
    fn every_sled_entry_reaches_a_stub() {
        let page = page_zero_bytes(0x1234_5678_9abc);
        let mut worst = 0;
        let entries = (0..STUB_A).chain(STUB_A + STUB_LEN..STUB_B);
        for entry in entries {
            let mut ip = entry as u64;
            let mut steps = 0;
            while ip != STUB_A as u64 && ip != STUB_B as u64 {
                assert!(
                    ip < STUB_B as u64
                        && !(STUB_A as u64..(STUB_A + STUB_LEN) as u64).contains(&ip),
                    "entry {entry} lands at {ip}"
                );
                let mut d = Decoder::with_ip(64, &page[ip as usize..], ip, DecoderOptions::NONE);
                let i = d.decode();
                match i.code() {
                    Code::Jmp_rel8_64 => ip = i.near_branch_target(),
                    Code::Nopd | Code::Nopq | Code::Nopw => ip = i.next_ip(),
                    other => panic!("entry {entry}: {other:?} at {ip}"),
                }
                steps += 1;
                assert!(steps < 200, "entry {entry} loops");
            }
            if entry < 512 {
                worst = worst.max(steps);
            }
        }
        assert!(
            worst <= 60,
            "{worst} instructions from a syscall number to the stub"
        );
        for stub in [STUB_A, STUB_B] {
            let mut d = Decoder::with_ip(64, &page[stub..], stub as u64, DecoderOptions::NONE);
            let lea = d.decode();
            assert_eq!(lea.code(), Code::Lea_r64_m);
            assert_eq!(lea.memory_displacement64() as i64, -128);
            let jmp = d.decode();
            assert_eq!(jmp.flow_control(), FlowControl::IndirectBranch);
            assert_eq!(jmp.next_ip() as usize, stub + STUB_LEN - 8);
        }
    }

    #[test]
    fn eh_frame_describes_the_functions_of_this_binary() {
        let f = decode_syscalls as *const () as u64;
        let m = loaded_modules()
            .into_iter()
            .find(|m| m.segments.iter().any(|&(s, e, _)| s <= f && f < e))
            .expect("the module of this test");
        let hdr = m.eh_frame_hdr.expect("a PT_GNU_EH_FRAME");
        let fns = eh_frame::functions(hdr, &|a, l| m.readable(a, l));
        assert!(fns.len() > 100, "{} FDEs", fns.len());
        assert!(fns.iter().any(|&(s, len)| s == f && len > 0));
        assert!(functions(&m).contains_key(&f));
    }

    #[test]
    fn decoding_finds_syscalls_at_instruction_boundaries_only() {
        // mov eax, 0x050f0000 ; syscall ; ret
        let code = [0xb8, 0x00, 0x00, 0x0f, 0x05, 0x0f, 0x05, 0xc3];
        assert_eq!(decode_syscalls(0x1000, &code), vec![0x1005]);
    }
}
