//! Inline hooks on x86-64 code: uprobes and uretprobes inside the
//! process.
//!
//! Attaching the first probe at an address (a *site*) builds a trampoline
//! within reach of it, copies the instructions a 5-byte `jmp` displaces
//! into the trampoline (relocated), and patches the site with a jump to
//! it (see [`patch`] for how that stays safe while other threads run the
//! code). On every hit the trampoline saves the registers as the kernel's
//! `struct pt_regs` and calls the dispatcher, which runs the site's probes
//! in attach order. Detaching the last probe restores the original bytes.
//!
//! - A hit on a thread that is already inside the dispatcher (a probe's
//!   helper calling a hooked `malloc`, a signal handler) skips the probes
//!   and counts a miss ([`Stats::misses`]), as the kernel counts `misses`.
//!   A hit during userbpf's own work (`userbpf_vm::quiet`: loading and
//!   attaching programs, background compilation) skips them silently.
//! - Return probes keep the real return address on a per-thread stack,
//!   and the entry trampoline runs the function as a call from its own
//!   return slot (the stack the function sees is unchanged, but for the
//!   return address): the function's `ret` comes back to the trampoline,
//!   which runs the return probes and returns to the real address with a
//!   `ret`, both predicted by the return stack buffer. Frames a
//!   `longjmp` skipped are dropped from it when detected, an exception or
//!   a forced unwind puts every real return address back before the
//!   unwinder walks the stack, and both count as missed
//!   ([`Stats::missed_returns`]).
//! - A probe returning [`Action::Return`] at a function's entry makes the
//!   function return that value at once (`bpf_override_return`).
//! - The trampolines keep every general register and `xmm0-15` (`ymm0-15`
//!   with AVX) of the hooked code, at the entry and at the return: the
//!   calling convention lets a callee change most of them, but `__m256`
//!   arguments and return values live in the upper halves, and a caller
//!   built with interprocedural register allocation (GCC's `-fipa-ra`, on
//!   at -O2) keeps values in the registers it knows its callee leaves
//!   alone, which the probes' code (libc's `memcpy` among it) may change.
//!   A site inside a function keeps the x87 state too (`xsave64`, or
//!   `fxsave64` without AVX). Not kept: `zmm16-31`, the upper halves of
//!   `zmm0-15` and the opmask registers.
//! - Probe lists change by publishing a new list and waiting for a grace
//!   period ([`thread::synchronize`]) before freeing the old one: a hit
//!   never takes a lock.
//! - A function's entry whose probes are leaf code ([`Probe::direct`]: a
//!   verified BPF program that calls nothing, JIT-compiled; one entry
//!   probe, one return probe, or one of each) runs them from the
//!   trampoline and the lean return handler themselves
//!   ([`codegen::DirectLane`], [`codegen::ReturnLane`]): no call into the
//!   dispatcher, and no vector register saved, since the code is checked
//!   to use none ([`codegen::check_leaf`]). The lanes take the
//!   same per-thread guard, quiet flag and quiescence counter as the
//!   dispatcher and push and pop the same pending returns (they live in
//!   or are reached from `userbpf_vm::thread_words`, at a fixed offset
//!   from `fs`), so misses, grace periods, `longjmp` and exceptions work
//!   as for any probe.

pub mod codegen;
pub mod mem;
pub mod patch;
pub mod thread;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub use userbpf_vm::context::PtRegs;
pub use userbpf_vm::interp::LeafCode;

use codegen::{VectorSave, Window};

/// What a probe asks for after it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let the function run.
    Continue,
    /// Return from the function at once with this value (only at a
    /// function's entry; elsewhere it is ignored).
    Return(u64),
}

/// A probe: code run at a site with the registers of the thread that hit
/// it. It may run on many threads at once.
pub trait Probe: Send + Sync {
    /// Runs at a hit. `regs` is the thread's registers (`ip` the site for
    /// an entry probe; the return address, with `ax` the return value, for
    /// a return probe). Changes to `regs` are not written back, except
    /// `ax` with [`Action::Return`].
    fn hit(&self, regs: &mut PtRegs) -> Action;

    /// Whether the probe reads only the words of its `PtRegs` in
    /// [`LEAN_WORDS`] (and writes at most `ax`, with [`Action::Return`]).
    /// A function entry whose entry probes all do, and a return whose
    /// return probes all do, save only those (the other fields then hold
    /// stale stack bytes): about 2 ns less per hit. Default: false.
    fn lean(&self) -> bool {
        false
    }

    /// Native code that does all [`Probe::hit`] does, for a trampoline to
    /// call straight on the hit's lean `pt_regs` (as `r1`; see
    /// [`LeafCode`]): no call into the dispatcher, no vector register
    /// saved. The probe must be [`Probe::lean`], and [`Probe::hit`] must
    /// do nothing but run that code (no helper, no hook information, no
    /// [`Action::Return`]); the code must live as long as the probe. A
    /// function's entry whose probes are all such (at most one entry and
    /// one return probe) runs them so ([`Stats::direct`]): the entry
    /// trampoline the entry probe's code and pushes the pending return,
    /// the lean return handler the return probe's code, once the code
    /// passes [`codegen::check_leaf`]. Default: none.
    fn direct(&self) -> Option<LeafCode> {
        None
    }
}

/// The words of `struct pt_regs` (bit `i`: bytes `8i..8i+8`) that every
/// hit at a function's entry saves: `bx`, `r11`-`r8`, `ax`, `cx`, `dx`,
/// `si`, `di`, `ip` and `sp`. The others (`r15`-`r12`, `bp`, `orig_ax`,
/// `cs`, `flags`, `ss`) only for probes that are not [`Probe::lean`].
pub const LEAN_WORDS: u64 = {
    // bx (word 5) to di (14), ip (16), sp (19).
    let mut w = 0u64;
    let mut i = 5;
    while i <= 14 {
        w |= 1 << i;
        i += 1;
    }
    w | 1 << 16 | 1 << 19
};

/// Where a probe runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// When the instruction at the site is about to run (uprobe).
    Entry,
    /// When the function whose entry is the site returns (uretprobe).
    Return,
}

/// The code to hook: an address, and (when known) the function that
/// contains it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The address of the instruction.
    pub address: u64,
    /// The function's start and size, if known (from its symbol): the
    /// hook checks that no branch of the function lands in the bytes it
    /// replaces, and whether the site is the function's entry.
    pub function: Option<(u64, u64)>,
}

impl Target {
    /// Whether the site is a function's first instruction (assumed when
    /// the function is not known).
    pub fn at_entry(&self) -> bool {
        self.function.is_none_or(|(start, _)| start == self.address)
    }
}

/// Why a hook could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The address is not in executable memory of this process.
    #[error("{address:#x} is not in executable memory of this process")]
    NotCode {
        /// The address.
        address: u64,
    },
    /// The site's code cannot be patched (too short, a branch into the
    /// replaced bytes, an instruction that cannot move).
    #[error("cannot hook {address:#x}: {reason}")]
    Unpatchable {
        /// The site.
        address: u64,
        /// Why.
        reason: String,
    },
    /// A return probe on an address that is not a function's entry.
    #[error("a return probe needs a function's entry; {address:#x} is {offset:#x} bytes into its function")]
    NotEntry {
        /// The site.
        address: u64,
        /// Its offset in the function.
        offset: u64,
    },
    /// Memory or system calls failed while placing the hook.
    #[error("hooking {address:#x}: {reason}")]
    System {
        /// The site.
        address: u64,
        /// What failed.
        reason: String,
    },
}

/// Counters of a site.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Hits that skipped their probes: the thread was already inside the
    /// dispatcher (or exiting).
    pub misses: u64,
    /// Returns whose probes did not run: deeper than the per-thread limit
    /// ([`thread::MAX_RETURN_DEPTH`]), or whose frames a `longjmp` or an
    /// exception skipped.
    pub missed_returns: u64,
    /// Whether hits save a lean frame now (every entry probe of the site
    /// is [`Probe::lean`]).
    pub lean_frame: bool,
    /// Whether hits run the site's probe as leaf code straight from the
    /// trampoline now ([`Probe::direct`]).
    pub direct: bool,
    /// Runs of leaf code that returned a fault status (none should:
    /// leaf code is verified and cannot fault).
    pub direct_faults: u64,
}

type ProbeRef = (u64, Arc<dyn Probe>);

#[derive(Default)]
struct ProbeList {
    entry: Vec<ProbeRef>,
    ret: Vec<ProbeRef>,
    /// Some entry probe is not [`Probe::lean`]: hits need the full
    /// `pt_regs`.
    needs_full: bool,
    /// Some return probe is not lean: returns go through the full
    /// return handler.
    ret_needs_full: bool,
    /// The entry of the entry probe's leaf code the trampoline runs
    /// itself ([`Probe::direct`]; 0: none), read by the direct lane.
    direct: u64,
    /// The same for the return probe, run by the lean return handler.
    /// (A list with leaf code holds nothing else: at most one entry and
    /// one return probe, both leaves.)
    direct_ret: u64,
}

impl ProbeList {
    fn is_empty(&self) -> bool {
        self.entry.is_empty() && self.ret.is_empty()
    }

    fn new(entry: Vec<ProbeRef>, ret: Vec<ProbeRef>) -> ProbeList {
        let needs_full = entry.iter().any(|(_, p)| !p.lean());
        let ret_needs_full = ret.iter().any(|(_, p)| !p.lean());
        // Each side: no probe, or one lean leaf.
        let leaf = |probes: &[ProbeRef]| -> Option<u64> {
            match probes {
                [] => Some(0),
                [(_, p)] if p.lean() => p.direct().filter(leaf_ok).map(|c| c.entry as u64),
                _ => None,
            }
        };
        let (direct, direct_ret) = match (leaf(&entry), leaf(&ret)) {
            (Some(e), Some(r)) if thread::membarrier_ok() => (e, r),
            _ => (0, 0),
        };
        ProbeList {
            entry,
            ret,
            needs_full,
            ret_needs_full,
            direct,
            direct_ret,
        }
    }
}

/// Whether `code` may run from a direct lane ([`codegen::check_leaf`]).
fn leaf_ok(code: &LeafCode) -> bool {
    // SAFETY: leaf code lives as long as its probe, which the caller
    // holds.
    unsafe { codegen::check_leaf_code(code) }.is_ok()
}

/// A hooked address. Sites are never freed (a thread may still run their
/// trampoline after a detach); re-attaching reuses them.
struct Site {
    address: u64,
    at_entry: bool,
    window: Window,
    original: Vec<u8>,
    jump: Vec<u8>,
    /// The return address a function run for its return probes returns
    /// to (in the entry trampoline; 0: return probes cannot run here).
    wrap_return: u64,
    /// The same, on the way to the lean return handler.
    wrap_return_lean: u64,
    probes: AtomicPtr<ProbeList>,
    /// Read by the entry trampoline of a function's entry: non-zero, it
    /// saves the full `pt_regs`; zero, only [`LEAN_WORDS`]. Set before a
    /// list that needs the full frame is published, cleared once none
    /// does (a hit that read it before still gets a full list's check).
    full: std::sync::atomic::AtomicU8,
    misses: AtomicU64,
    missed_returns: AtomicU64,
    /// Leaf runs that returned a fault status (the direct lane counts).
    direct_faults: AtomicU64,
}

struct Registry {
    sites: HashMap<u64, &'static Site>,
    /// Sites whose jump is in place.
    patched: HashMap<u64, bool>,
    next_id: u64,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);
static RETURN_HANDLER: OnceLock<Result<codegen::ReturnHandlers, String>> = OnceLock::new();
/// Returns skipped by a `longjmp` or an exception (detected on a later
/// push or pop, or when the unwinder starts), in the whole process.
static MISSED_RETURNS: AtomicU64 = AtomicU64::new(0);

/// Counts a pending return whose probes will not run (its frame was
/// skipped), for its site and the process.
fn missed_return(entry: &thread::PendingReturn) {
    MISSED_RETURNS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the entry's site is a leaked `Site`.
    let site = unsafe { &*(entry.site as *const Site) };
    site.missed_returns.fetch_add(1, Ordering::Relaxed);
}

/// The return handler every entry trampoline's return probes go through
/// (made once).
fn return_handler() -> Result<codegen::ReturnHandlers, String> {
    RETURN_HANDLER
        .get_or_init(|| {
            // The lean handler runs return leaves itself, where the
            // thread words are within a displacement's reach of `fs`.
            let lane = codegen::thread_words_offset().map(|words| codegen::ReturnLane {
                words,
                site_list: std::mem::offset_of!(Site, probes) as i32,
                ret_offset: std::mem::offset_of!(ProbeList, direct_ret) as i32,
                site_faults: std::mem::offset_of!(Site, direct_faults) as i32,
            });
            let make = |lean: bool| {
                mem::alloc_code(None, 4096, |ip| {
                    codegen::return_handler(ip, return_dispatch, lean, lane.filter(|_| lean))
                })
                .map(|p| p.addr)
            };
            Ok(codegen::ReturnHandlers {
                full: make(false)?,
                lean: make(true)?,
            })
        })
        .clone()
}

/// Puts the real return addresses back before an exception (C++, or a
/// Rust panic) or a forced unwind walks this thread's stack: the unwinder
/// knows nothing of the trampolines' return addresses and would end the
/// process.
struct UnwindRepair;

impl Probe for UnwindRepair {
    fn hit(&self, _regs: &mut PtRegs) -> Action {
        thread::repair_returns(missed_return);
        Action::Continue
    }
}

/// The unwinder's entry points (libgcc's, which C++ and Rust use).
const UNWIND_ENTRIES: [&str; 2] = ["_Unwind_RaiseException", "_Unwind_ForcedUnwind"];

/// Hooks the unwinder's entry points with [`UnwindRepair`], once (those
/// of the modules loaded when the first return probe is attached).
fn repair_before_unwinding() {
    static DONE: OnceLock<Vec<ProbeLink>> = OnceLock::new();
    DONE.get_or_init(|| {
        let mut links = Vec::new();
        for name in UNWIND_ENTRIES {
            for module in ["libgcc_s.so.1", "self"] {
                let Ok(r) = crate::symbols::resolve(&format!("{module}:{name}")) else {
                    continue;
                };
                let target = Target {
                    address: r.address,
                    function: Some((r.address - r.offset_in_symbol, r.size)),
                };
                if let Ok(link) = attach(target, ProbeKind::Entry, Arc::new(UnwindRepair)) {
                    links.push(link);
                    break;
                }
            }
        }
        links
    });
}

/// The end of the executable mapping containing `addr`.
fn executable_until(addr: u64) -> Option<u64> {
    crate::maps::mapping_of(addr)
        .filter(|m| m.exec())
        .map(|m| m.end)
}

fn new_site(target: &Target) -> Result<&'static Site, HookError> {
    let address = target.address;
    let map_end = executable_until(address).ok_or(HookError::NotCode { address })?;
    let unpatchable = |reason: String| HookError::Unpatchable { address, reason };
    // The bytes to decode: the rest of the function (for the branch
    // check), at most 64 KiB, never past the mapping.
    let (fn_start, fn_size) = target.function.unwrap_or((address, 0));
    let fn_end = fn_start.saturating_add(fn_size);
    let avail = map_end - address;
    // (16 bytes more than the function: the alignment padding after a
    // function too short for a jump can take the rest of it.)
    let want = if fn_size > 0 {
        fn_end.saturating_sub(address).max(codegen::JMP_LEN as u64) + 16
    } else {
        32
    };
    let len = want.min(avail).min(64 * 1024) as usize;
    // SAFETY: [address, address + len) is inside an executable (hence
    // readable) mapping of this process.
    let code = unsafe { std::slice::from_raw_parts(address as *const u8, len) };
    let within = |w: &codegen::Window| fn_size == 0 || address + w.len as u64 <= fn_end;
    let window = match codegen::decode_window(address, code) {
        Ok(w) if within(&w) => w,
        first => {
            // Too close to the function's end: the padding after it may
            // take the rest of the jump.
            let reason = match first {
                Ok(_) => format!(
                    "the function ends {} bytes after it: too short for a {}-byte jump",
                    fn_end.saturating_sub(address),
                    codegen::JMP_LEN
                ),
                Err(e) => e,
            };
            if fn_size == 0 {
                return Err(unpatchable(reason));
            }
            codegen::decode_window_into_padding(address, code, fn_end)
                .map_err(|e| unpatchable(format!("{reason}; {e}")))?
        }
    };
    if fn_size > 0 {
        // The whole function: no branch may land in the replaced bytes.
        let start = fn_start.max(map_end.min(fn_start));
        let flen = (fn_end.min(map_end) - start) as usize;
        // SAFETY: inside the same mapping (the function's bytes).
        let fcode = unsafe { std::slice::from_raw_parts(start as *const u8, flen) };
        codegen::check_no_branch_into(address, fcode, window.len).map_err(unpatchable)?;
    }
    let at_entry = target.at_entry();
    let vectors = if at_entry {
        VectorSave::Sse
    } else {
        VectorSave::All
    };
    // A function's entry can take return probes: its trampoline knows the
    // return handler (made first).
    let handler = if at_entry {
        Some(return_handler().map_err(|reason| HookError::System { address, reason })?)
    } else {
        None
    };
    // The site is leaked first: its address is the token the trampoline
    // passes to the dispatcher.
    let site: &'static mut Site = Box::leak(Box::new(Site {
        address,
        at_entry,
        original: code[..window.len].to_vec(),
        window: window.clone(),
        jump: Vec::new(),
        wrap_return: 0,
        wrap_return_lean: 0,
        probes: AtomicPtr::new(Box::into_raw(Box::<ProbeList>::default())),
        full: std::sync::atomic::AtomicU8::new(1),
        misses: AtomicU64::new(0),
        missed_returns: AtomicU64::new(0),
        direct_faults: AtomicU64::new(0),
    }));
    let token = site as *const Site as usize;
    // Mid-function sites always save everything. A function's entry runs
    // leaf code itself, where the thread words are within a
    // displacement's reach of `fs`.
    let function_entry = at_entry.then(|| codegen::FunctionEntry {
        full_flag: &site.full as *const std::sync::atomic::AtomicU8 as u64,
        direct: codegen::thread_words_offset().map(|words| codegen::DirectLane {
            list: &site.probes as *const AtomicPtr<ProbeList> as u64,
            entry_offset: std::mem::offset_of!(ProbeList, direct) as i32,
            ret_offset: std::mem::offset_of!(ProbeList, direct_ret) as i32,
            words,
            faults: &site.direct_faults as *const AtomicU64 as u64,
        }),
    });
    let mut copies = Vec::new();
    let mut wrap_return = (0, 0);
    let page = mem::alloc_code(Some(address), 4096, |ip| {
        let code = codegen::entry_trampoline(
            ip,
            &window,
            token,
            entry_dispatch,
            vectors,
            handler,
            function_entry,
        )?;
        copies = code.orig_insns.clone();
        wrap_return = (code.wrap_return, code.wrap_return_lean);
        Ok(code.code)
    })
    .map_err(|reason| HookError::System { address, reason })?;
    (site.wrap_return, site.wrap_return_lean) = wrap_return;
    site.jump = codegen::jump_bytes(address, page.addr, window.len)
        .map_err(|reason| HookError::System { address, reason })?;
    patch::publish(patch::SiteCode {
        site: address,
        len: window.len as u64,
        boundaries: window.boundaries(),
        copies,
    })
    .map_err(|reason| HookError::System { address, reason })?;
    Ok(site)
}

/// A probe attached at a site; dropping it detaches the probe.
#[derive(Debug)]
pub struct ProbeLink {
    address: u64,
    id: u64,
}

impl ProbeLink {
    /// The hooked address.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// The site's counters.
    pub fn stats(&self) -> Stats {
        stats(self.address).unwrap_or_default()
    }
}

impl Drop for ProbeLink {
    fn drop(&mut self) {
        if let Err(e) = detach(self.address, self.id) {
            eprintln!("userbpf: detaching the probe at {:#x}: {e}", self.address);
        }
    }
}

/// The counters of the site at `address`, if it was ever hooked.
pub fn stats(address: u64) -> Option<Stats> {
    let reg = REGISTRY.lock().ok()?;
    let site = reg.as_ref()?.sites.get(&address)?;
    Some(Stats {
        misses: site.misses.load(Ordering::Relaxed),
        missed_returns: site.missed_returns.load(Ordering::Relaxed),
        lean_frame: site.at_entry && site.full.load(Ordering::Relaxed) == 0,
        // SAFETY: the list is only replaced under the registry lock, held.
        direct: unsafe {
            let list = &*site.probes.load(Ordering::Acquire);
            list.direct != 0 || list.direct_ret != 0
        },
        direct_faults: site.direct_faults.load(Ordering::Relaxed),
    })
}

/// Returns skipped by a `longjmp` (or an exception) past frames with
/// pending return probes, in the whole process.
pub fn skipped_returns() -> u64 {
    MISSED_RETURNS.load(Ordering::Relaxed)
}

/// Replaces the site's probe list, then frees the old one after a grace
/// period.
fn publish_list(site: &Site, list: ProbeList) {
    let old = site
        .probes
        .swap(Box::into_raw(Box::new(list)), Ordering::AcqRel);
    thread::synchronize();
    if !old.is_null() {
        // SAFETY: lists are boxed; after the grace period no thread can
        // still hold the old one.
        drop(unsafe { Box::from_raw(old) });
    }
}

fn clone_list(site: &Site) -> (Vec<ProbeRef>, Vec<ProbeRef>) {
    // SAFETY: the list is only replaced under the registry lock, which
    // the caller holds; the pointer is never null.
    let cur = unsafe { &*site.probes.load(Ordering::Acquire) };
    (cur.entry.clone(), cur.ret.clone())
}

/// Publishes `list` at `site`, with the trampoline's frame as full as the
/// list needs: widened before, narrowed after the grace period.
fn publish_with_frame(site: &Site, list: ProbeList) {
    let full = list.needs_full;
    if full {
        site.full.store(1, Ordering::SeqCst);
    }
    publish_list(site, list);
    if !full {
        site.full.store(0, Ordering::SeqCst);
    }
}

/// Attaches `probe` at `target`: an entry probe (uprobe) or a return
/// probe (uretprobe; the target must be a function's entry).
pub fn attach(
    target: Target,
    kind: ProbeKind,
    probe: Arc<dyn Probe>,
) -> Result<ProbeLink, HookError> {
    let address = target.address;
    if kind == ProbeKind::Return && !target.at_entry() {
        let start = target.function.map_or(address, |(s, _)| s);
        return Err(HookError::NotEntry {
            address,
            offset: address - start,
        });
    }
    thread::init_membarrier();
    if kind == ProbeKind::Return {
        return_handler().map_err(|reason| HookError::System { address, reason })?;
        repair_before_unwinding();
    }
    let mut guard = REGISTRY.lock().map_err(|_| HookError::System {
        address,
        reason: "hook registry poisoned".into(),
    })?;
    let reg = guard.get_or_insert_with(|| Registry {
        sites: HashMap::new(),
        patched: HashMap::new(),
        next_id: 1,
    });
    let site = match reg.sites.get(&address) {
        Some(s) => *s,
        None => {
            let s = new_site(&target)?;
            reg.sites.insert(address, s);
            s
        }
    };
    let id = reg.next_id;
    reg.next_id += 1;
    let (mut entry, mut ret) = clone_list(site);
    match kind {
        ProbeKind::Entry => entry.push((id, probe)),
        ProbeKind::Return => ret.push((id, probe)),
    }
    publish_with_frame(site, ProbeList::new(entry, ret));
    if !reg.patched.get(&address).copied().unwrap_or(false) {
        patch::write_code(address, &site.jump, site.window.insns.len())
            .map_err(|reason| HookError::System { address, reason })?;
        reg.patched.insert(address, true);
    }
    Ok(ProbeLink { address, id })
}

fn detach(address: u64, id: u64) -> Result<(), String> {
    let mut guard = REGISTRY
        .lock()
        .map_err(|_| "hook registry poisoned".to_string())?;
    let Some(reg) = guard.as_mut() else {
        return Ok(());
    };
    let Some(site) = reg.sites.get(&address).copied() else {
        return Ok(());
    };
    let (mut entry, mut ret) = clone_list(site);
    entry.retain(|(i, _)| *i != id);
    ret.retain(|(i, _)| *i != id);
    let list = ProbeList::new(entry, ret);
    if list.is_empty() && reg.patched.get(&address).copied().unwrap_or(false) {
        // The original bytes first: then no new hit reaches the probes.
        // (The patched bytes are one instruction: no thread can be
        // inside them.)
        patch::write_code(address, &site.original, 1)?;
        reg.patched.insert(address, false);
    }
    publish_with_frame(site, list);
    Ok(())
}

/// Runs `probe` and contains a panic (a probe must never unwind into the
/// traced code).
#[inline(always)]
fn run_probe(probe: &dyn Probe, regs: &mut PtRegs) -> Action {
    match catch_unwind(AssertUnwindSafe(|| probe.hit(regs))) {
        Ok(a) => a,
        Err(_) => Action::Continue,
    }
}

extern "C" fn entry_dispatch(token: usize, regs: *mut u8, full: u64) -> u64 {
    // SAFETY: the token is the leaked `Site` the trampoline was built for.
    let site = unsafe { &*(token as *const Site) };
    let Some(_inside) = thread::enter() else {
        site.misses.fetch_add(1, Ordering::Relaxed);
        return codegen::RUN;
    };
    if userbpf_vm::quiet::active() {
        // Userbpf's own work (see `userbpf_vm::quiet`): not a hit.
        return codegen::RUN;
    }
    // SAFETY: the list stays valid while this thread is inside (the grace
    // period of `publish_list`); the pointer is never null.
    let list = unsafe { &*site.probes.load(Ordering::Acquire) };
    if full == 0 && list.needs_full {
        // The frame was saved lean just before a probe that needs it full
        // was attached.
        site.misses.fetch_add(1, Ordering::Relaxed);
        return codegen::RUN;
    }
    // SAFETY: the trampoline passes its pt_regs frame, 8-byte aligned
    // (stack memory: the words a lean frame did not save hold stale
    // bytes, which lean probes never read).
    let regs = unsafe { &mut *regs.cast::<PtRegs>() };
    let ret = match list.entry.as_slice() {
        [] => None,
        [(_, p)] => match run_probe(p.as_ref(), regs) {
            Action::Return(v) => Some(v),
            Action::Continue => None,
        },
        many => run_entry_probes(many, regs),
    };
    if !site.at_entry {
        return codegen::RUN;
    }
    if let Some(v) = ret {
        return return_now(site, list, regs, v, full != 0);
    }
    if list.ret.is_empty() || site.wrap_return == 0 {
        return codegen::RUN;
    }
    hijack_return(site, token, regs, !list.ret_needs_full)
}

/// Runs several entry probes in attach order: the last `Action::Return`
/// wins.
#[inline(never)]
fn run_entry_probes(probes: &[ProbeRef], regs: &mut PtRegs) -> Option<u64> {
    let mut ret = None;
    for (_, p) in probes {
        if let Action::Return(v) = run_probe(p.as_ref(), regs) {
            ret = Some(v);
        }
    }
    ret
}

/// A probe asked the function to return `v` at once: its return probes
/// see that value (the function does not run).
#[cold]
#[inline(never)]
fn return_now(site: &Site, list: &ProbeList, regs: &mut PtRegs, v: u64, full: bool) -> u64 {
    regs.ax = v;
    if !list.ret.is_empty() && !full && list.ret_needs_full {
        // The entry saved a lean frame; these return probes need more.
        site.missed_returns.fetch_add(1, Ordering::Relaxed);
    } else if !list.ret.is_empty() {
        // SAFETY: at a function's entry, sp points at the return address.
        let ret_addr = unsafe { *(regs.sp as *const u64) };
        let saved = *regs;
        regs.ip = ret_addr;
        regs.sp += 8;
        for (_, p) in &list.ret {
            run_probe(p.as_ref(), regs);
        }
        *regs = saved;
        regs.ax = v;
    }
    codegen::RETURN_NOW
}

/// Keeps the real return address of a function whose return probes must
/// run: the trampoline then calls the function from its return slot.
fn hijack_return(site: &Site, token: usize, regs: &mut PtRegs, lean: bool) -> u64 {
    let slot = regs.sp;
    // SAFETY: at a function's entry, sp points at the return address,
    // which this thread's stack holds.
    let ret_addr = unsafe { *(slot as *const u64) };
    let pushed = thread::push_return(
        thread::PendingReturn {
            ret_addr,
            slot,
            hijack: if lean {
                site.wrap_return_lean
            } else {
                site.wrap_return
            },
            site: token,
        },
        missed_return,
    );
    if pushed {
        // The trampoline calls the function from the slot: the function
        // returns to `wrap_return`, then the return handler.
        if lean {
            codegen::RUN_AND_RETURN_LEAN
        } else {
            codegen::RUN_AND_RETURN_HERE
        }
    } else {
        site.missed_returns.fetch_add(1, Ordering::Relaxed);
        codegen::RUN
    }
}

extern "C" fn return_dispatch(regs: *mut u8, full: u64) -> u64 {
    // SAFETY: the return handler passes its pt_regs frame.
    let regs = unsafe { &mut *regs.cast::<PtRegs>() };
    // The `ret` popped the slot just below the current sp.
    let slot = regs.sp.wrapping_sub(8);
    let Some(entry) = thread::pop_return(slot, missed_return) else {
        // Only a corrupted stack gets here: there is nowhere to return.
        let msg = b"userbpf: a hooked function returned through the uretprobe handler with no pending return on this thread\n";
        // SAFETY: writing a static message to stderr, then aborting.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::abort();
        }
    };
    regs.ip = entry.ret_addr;
    // SAFETY: the entry's site is a leaked `Site`.
    let site = unsafe { &*(entry.site as *const Site) };
    match thread::enter() {
        Some(_inside) if userbpf_vm::quiet::active() => {}
        Some(_inside) => {
            // SAFETY: as in `entry_dispatch`.
            let list = unsafe { &*site.probes.load(Ordering::Acquire) };
            if full == 0 && list.ret_needs_full {
                // A probe that needs the full frame was attached while
                // the function ran.
                site.missed_returns.fetch_add(1, Ordering::Relaxed);
                return entry.ret_addr;
            }
            for (_, p) in &list.ret {
                run_probe(p.as_ref(), regs);
            }
        }
        None => {
            site.misses.fetch_add(1, Ordering::Relaxed);
        }
    }
    entry.ret_addr
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("address", &format_args!("{:#x}", self.address))
            .field("window", &self.window.len)
            .finish_non_exhaustive()
    }
}
