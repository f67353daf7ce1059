//! BPF programs on USDT probes in this process, playing libbpf's part.
//!
//! A USDT probe (`STAP_PROBE*`/`DTRACE_PROBE*` of `<sys/sdt.h>`) is a `nop`
//! in the code plus a `.note.stapsdt` note naming it `provider:name` and
//! describing its arguments (see [`userbpf_shims::usdt`]). Programs written
//! for libbpf's `<bpf/usdt.bpf.h>` (`SEC("usdt")`, `BPF_USDT(...)`,
//! `bpf_usdt_arg()`, `bpf_usdt_arg_cnt()`, `bpf_usdt_cookie()`) find the
//! arguments of the probe that fired in the `__bpf_usdt_specs` map, at the
//! *spec id* their `bpf_get_attach_cookie()` returns. [`attach_usdt`] does
//! what libbpf's `bpf_program__attach_usdt()` does, in process:
//!
//! 1. finds the module (`"self"`, a path or a library name) among this
//!    process's mappings and reads its USDT notes;
//! 2. lowers each site's arguments to libbpf 1.1's `struct
//!    __bpf_usdt_spec` (with the caller's [`UsdtOptions::cookie`] as
//!    `usdt_cookie`), gives each distinct spec an id, writes it to
//!    `__bpf_usdt_specs[id]` (and `__bpf_usdt_ip_to_spec_id[ip] = id`,
//!    which programs only read when `LINUX_HAS_BPF_COOKIE` is false — our
//!    loader sets it to true);
//! 3. hooks every site of the probe with [`probe::attach`] (an entry
//!    uprobe at the site's runtime address, attach cookie = spec id; the
//!    hook hands the program the thread's `struct pt_regs` with `ip` = the
//!    site, which `%rip`-relative arguments need);
//! 4. increments the probe's semaphore, if it has one (a `u16` in the
//!    module's data that `if (PROVIDER_NAME_ENABLED())` reads), once per
//!    hooked site, as the kernel does through `ref_ctr_offset`.
//!
//! Dropping the [`UsdtLink`] undoes all of it: the hooks go first, then
//! the semaphores are decremented and the spec ids freed for reuse.
//!
//! Spec ids are per [`MapSet`] (the maps are the object's): ids are taken
//! from `0..max_entries` of `__bpf_usdt_specs`, identical specs of one link
//! share an id, and a detached link's ids are reused.
//!
//! As the kernel does for uprobes, a program that calls
//! `bpf_override_return` is refused: a USDT site is in the middle of a
//! function, there is nothing to return from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, Weak};

use userbpf_shims::hook::{self, ProbeKind, PtRegs};
use userbpf_shims::symbols::{Module, ProcessModules};
use userbpf_shims::usdt::{UsdtArg, UsdtError, UsdtFile, UsdtProbe, USDT_SPEC_SIZE};
use userbpf_vm::insn::op;
use userbpf_vm::maps::{Map, MapSet};
use userbpf_vm::object::{AttachTarget, Object, ProgramType};
use userbpf_vm::Helpers;

use crate::probe::{self, AttachOptions, UprobeLink};

/// The array map of `usdt.bpf.h` holding `struct __bpf_usdt_spec`s by spec
/// id.
pub const SPECS_MAP: &str = "__bpf_usdt_specs";
/// The hash map of `usdt.bpf.h` from a site's address to its spec id (read
/// only without BPF cookies).
pub const IP_TO_SPEC_ID_MAP: &str = "__bpf_usdt_ip_to_spec_id";
/// `BPF_FUNC_override_return`.
const BPF_FUNC_OVERRIDE_RETURN: i32 = 58;
/// How many existing probes a "probe not found" error lists.
const LISTED_PROBES: usize = 8;

/// How [`attach_usdt`] treats the program.
#[derive(Clone, Debug)]
pub struct UsdtOptions {
    /// Verify the program first (the default). Without verification it
    /// runs in checked mode.
    pub verify: bool,
    /// `bpf_usdt_cookie()`'s value (libbpf's `bpf_usdt_opts.usdt_cookie`).
    /// The BPF attach cookie itself carries the spec id, as with libbpf.
    pub cookie: u64,
    /// The helpers beyond the maps' (`None`: [`Helpers::kernel_basics`],
    /// `bpf_trace_printk` writing to standard error), as
    /// [`AttachOptions::helpers`].
    pub helpers: Option<Helpers>,
}

impl Default for UsdtOptions {
    fn default() -> UsdtOptions {
        UsdtOptions {
            verify: true,
            cookie: 0,
            helpers: None,
        }
    }
}

/// A USDT probe to attach to: `BINARY:PROVIDER:NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsdtTarget {
    /// The module: `self` for the executable, a path, or a library name
    /// (see [`ProcessModules::find`]).
    pub binary: String,
    /// The probe's provider.
    pub provider: String,
    /// The probe's name.
    pub name: String,
}

impl std::fmt::Display for UsdtTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.binary, self.provider, self.name)
    }
}

/// The target in a USDT section name, libbpf's convention:
/// `Some(None)` for `usdt` (or `usdt.s`), which the caller must give a
/// target; `Some(Some(target))` for `usdt/BINARY:PROVIDER:NAME`; `None`
/// for a section that is not a USDT one or whose target is malformed.
/// `BINARY` may itself contain `:`; provider and name may not.
pub fn section_target(section: &str) -> Option<Option<UsdtTarget>> {
    let rest = section.strip_prefix("usdt")?;
    let rest = rest.strip_prefix(".s").unwrap_or(rest);
    if rest.is_empty() {
        return Some(None);
    }
    let spec = rest.strip_prefix('/')?;
    let mut parts = spec.rsplitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(provider), Some(binary))
            if !name.is_empty() && !provider.is_empty() && !binary.is_empty() =>
        {
            Some(Some(UsdtTarget {
                binary: binary.to_string(),
                provider: provider.to_string(),
                name: name.to_string(),
            }))
        }
        _ => None,
    }
}

/// Why a program could not be attached to a USDT probe. Every message
/// names the program, and the probe (`BINARY:PROVIDER:NAME`) once known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsdtAttachError {
    /// The object has no such program, it is not a kprobe-type (`usdt`)
    /// program, or it cannot be prepared.
    #[error("program `{program}`: {message}")]
    Program {
        /// The program.
        program: String,
        /// What is wrong.
        message: String,
    },
    /// The verifier rejected the program.
    #[error("program `{program}` was rejected by the verifier: {message}")]
    Rejected {
        /// The program.
        program: String,
        /// The verifier's message (pc, instruction, reason).
        message: String,
    },
    /// The object lacks `usdt.bpf.h`'s maps, or they cannot take the specs.
    #[error("program `{program}`, USDT probe {probe}: {message}")]
    Maps {
        /// The program.
        program: String,
        /// The probe as given, `BINARY:PROVIDER:NAME`.
        probe: String,
        /// What is wrong.
        message: String,
    },
    /// No module of this process matches the binary.
    #[error("program `{program}`, USDT probe {probe}: module not loaded: {reason}")]
    ModuleNotLoaded {
        /// The program.
        program: String,
        /// The probe as given, `BINARY:PROVIDER:NAME`.
        probe: String,
        /// Why (the loaded modules, or why a match is unusable).
        reason: String,
    },
    /// The module's file could not be read or parsed.
    #[error("program `{program}`, USDT probe {probe}: cannot read the USDT notes of {}: {reason}", path.display())]
    Notes {
        /// The program.
        program: String,
        /// The probe as given, `BINARY:PROVIDER:NAME`.
        probe: String,
        /// The module's file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The module has no such probe.
    #[error("program `{program}`: no USDT probe {probe} ({}); {available}", path.display())]
    ProbeNotFound {
        /// The program.
        program: String,
        /// The probe as given, `BINARY:PROVIDER:NAME`.
        probe: String,
        /// The module's file.
        path: PathBuf,
        /// A few of the probes it has.
        available: String,
    },
    /// An argument whose value cannot be found (a symbol the file's symbol
    /// tables do not have). Forms libbpf 1.1's `usdt.bpf.h` cannot
    /// describe (SIB addressing, a symbol plus a register, an absolute
    /// address) are served through scratch slots
    /// (`userbpf_shims::usdt::USDT_SCRATCH_OFFSET`).
    #[error("program `{program}`, USDT probe {probe}: argument `{argument}` cannot be expressed: {reason}")]
    Inexpressible {
        /// The program.
        program: String,
        /// The probe as given, `BINARY:PROVIDER:NAME`.
        probe: String,
        /// The argument as written in the note.
        argument: String,
        /// Why.
        reason: String,
    },
    /// The probe's note is malformed or has too many arguments.
    #[error("program `{program}`, USDT probe {probe}: {reason}")]
    Spec {
        /// The program.
        program: String,
        /// The probe as given, `BINARY:PROVIDER:NAME`.
        probe: String,
        /// The note's problem.
        reason: String,
    },
    /// The probe's semaphore is not a writable, aligned `u16` of this
    /// process, or is saturated.
    #[error("program `{program}`, USDT probe {probe}: semaphore at {address:#x}: {reason}")]
    Semaphore {
        /// The program.
        program: String,
        /// The probe as given, `BINARY:PROVIDER:NAME`.
        probe: String,
        /// The semaphore's runtime address.
        address: u64,
        /// Why.
        reason: String,
    },
    /// The hook refused a site (a branch into the bytes it would replace,
    /// a site too close to the end of its function...).
    #[error(
        "program `{program}`, USDT probe {probe}: cannot hook the site at {address:#x}: {reason}"
    )]
    Hook {
        /// The program.
        program: String,
        /// The probe as given, `BINARY:PROVIDER:NAME`.
        probe: String,
        /// The site's runtime address.
        address: u64,
        /// Why.
        reason: String,
    },
}

// ---------------------------------------------------------------------------
// Spec ids

/// The spec ids in use for one [`MapSet`] (held weakly: its allocation,
/// hence its address, stays while the entry exists).
struct SpecIds {
    maps: Weak<MapSet>,
    next: u32,
    free: Vec<u32>,
}

static SPEC_IDS: Mutex<Vec<SpecIds>> = Mutex::new(Vec::new());

/// Takes `count` spec ids below `limit` for `maps`; `None` when there are
/// not that many left.
fn allocate_spec_ids(maps: &Arc<MapSet>, count: usize, limit: u32) -> Option<Vec<u32>> {
    let mut all = SPEC_IDS.lock().ok()?;
    all.retain(|s| s.maps.strong_count() > 0);
    let index = match all
        .iter()
        .position(|s| std::ptr::eq(s.maps.as_ptr(), Arc::as_ptr(maps)))
    {
        Some(i) => i,
        None => {
            all.push(SpecIds {
                maps: Arc::downgrade(maps),
                next: 0,
                free: Vec::new(),
            });
            all.len() - 1
        }
    };
    let ids = all.get_mut(index)?;
    let fresh = limit.saturating_sub(ids.next) as usize;
    if ids.free.len().saturating_add(fresh) < count {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        match ids.free.pop() {
            Some(id) => out.push(id),
            None => {
                out.push(ids.next);
                ids.next += 1;
            }
        }
    }
    Some(out)
}

/// Gives spec ids back for reuse.
fn release_spec_ids(maps: &Arc<MapSet>, released: &[u32]) {
    let Ok(mut all) = SPEC_IDS.lock() else {
        return;
    };
    if let Some(ids) = all
        .iter_mut()
        .find(|s| std::ptr::eq(s.maps.as_ptr(), Arc::as_ptr(maps)))
    {
        ids.free.extend_from_slice(released);
    }
}

// ---------------------------------------------------------------------------
// Semaphores

/// Whether `[address, address + len)` lies in one writable private mapping
/// of this process (`/proc/self/maps`).
fn writable(address: u64, len: u64) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/maps") else {
        return false;
    };
    let end = address.saturating_add(len);
    text.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            return false;
        };
        let Some((a, b)) = range.split_once('-') else {
            return false;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            return false;
        };
        let perms = perms.as_bytes();
        a <= address && end <= b && perms.get(1) == Some(&b'w') && perms.get(3) == Some(&b'p')
    })
}

/// Why the `u16` at `address` cannot serve as a semaphore, if it cannot.
fn semaphore_problem(address: u64) -> Option<String> {
    if !address.is_multiple_of(2) {
        return Some("not aligned for a u16".to_string());
    }
    if !writable(address, 2) {
        return Some("not in a writable private mapping of this process".to_string());
    }
    None
}

/// Adds `delta` (+1 or -1) to the semaphore at `address`, which
/// [`semaphore_problem`] just found usable. `false` when the count would
/// overflow or go below zero.
fn adjust_semaphore(address: u64, delta: i16) -> bool {
    // SAFETY: the caller has just checked that `address` is 2-aligned and
    // inside a writable private mapping of this process (only a
    // concurrent `dlclose` of the probed module could unmap it, which
    // would equally break the hooks on its code). The traced code reads
    // the counter with plain 16-bit loads, which cannot tear against this
    // locked read-modify-write on x86-64 (the kernel updates
    // `ref_ctr_offset` counters without synchronising with the traced
    // code either).
    let counter = unsafe { AtomicU16::from_ptr(address as *mut u16) };
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
            v.checked_add_signed(delta)
        })
        .is_ok()
}

// ---------------------------------------------------------------------------
// Links

/// One hooked site of a USDT probe.
#[derive(Debug)]
pub struct UsdtSite {
    link: UprobeLink,
    spec_id: u32,
    semaphore: Option<u64>,
}

impl UsdtSite {
    /// The site's runtime address (the probe's `nop`).
    pub fn address(&self) -> u64 {
        self.link.address()
    }

    /// The spec id: the site's index in `__bpf_usdt_specs`, and the
    /// program's attach cookie.
    pub fn spec_id(&self) -> u32 {
        self.spec_id
    }

    /// The runtime address of the probe's semaphore, if it has one.
    pub fn semaphore(&self) -> Option<u64> {
        self.semaphore
    }

    /// The uprobe the site is hooked with (its program's faults, its
    /// site's statistics).
    pub fn uprobe(&self) -> &UprobeLink {
        &self.link
    }
}

/// A BPF program attached to every site of a USDT probe; dropping it
/// detaches from all of them, decrements the semaphores and frees the
/// spec ids.
#[derive(Debug)]
pub struct UsdtLink {
    program: String,
    target: UsdtTarget,
    module_path: PathBuf,
    sites: Vec<UsdtSite>,
    /// Semaphores incremented (one entry per increment).
    semaphores: Vec<u64>,
    /// `__bpf_usdt_ip_to_spec_id` entries written: (ip, spec id).
    ip_entries: Vec<(u64, u32)>,
    ip_map: Option<Arc<Map>>,
    spec_ids: Vec<u32>,
    maps: Arc<MapSet>,
}

impl UsdtLink {
    /// The program's name.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The probe as given (binary, provider, name).
    pub fn target(&self) -> &UsdtTarget {
        &self.target
    }

    /// The file of the module the probe is in.
    pub fn module_path(&self) -> &Path {
        &self.module_path
    }

    /// The hooked sites, in note order.
    pub fn sites(&self) -> &[UsdtSite] {
        &self.sites
    }

    /// Runs of the program that faulted (checked mode) over all sites, and
    /// the last fault's message.
    pub fn faults(&self) -> (u64, Option<String>) {
        self.sites.iter().fold((0, None), |(n, last), s| {
            let (k, msg) = s.link.probe().faults();
            (n + k, msg.or(last))
        })
    }

    /// The sites' counters, summed.
    pub fn stats(&self) -> hook::Stats {
        self.sites.iter().fold(hook::Stats::default(), |acc, s| {
            let st = s.link.stats();
            hook::Stats {
                misses: acc.misses + st.misses,
                missed_returns: acc.missed_returns + st.missed_returns,
                // (USDT sites are inside functions: never lean, never
                // direct.)
                lean_frame: false,
                direct: false,
                direct_faults: acc.direct_faults + st.direct_faults,
            }
        })
    }
}

impl Drop for UsdtLink {
    fn drop(&mut self) {
        // The hooks first: once they are gone (their grace period over),
        // no thread runs the program, so the specs can go.
        self.sites.clear();
        for &address in &self.semaphores {
            let done = semaphore_problem(address).is_none() && adjust_semaphore(address, -1);
            if !done {
                eprintln!(
                    "userbpf: USDT {}: cannot decrement the semaphore at {address:#x} \
                     (module unloaded?)",
                    self.target
                );
            }
        }
        if let Some(map) = &self.ip_map {
            for &(ip, id) in &self.ip_entries {
                let key = ip.to_le_bytes();
                // Only our own entry: another link may have taken the ip.
                if map.lookup(&key).as_deref() == Some(&id.to_le_bytes()[..]) {
                    let _ = map.delete(&key);
                }
            }
        }
        release_spec_ids(&self.maps, &self.spec_ids);
    }
}

// ---------------------------------------------------------------------------
// Attaching

/// Whether the program calls `bpf_override_return`.
fn calls_override_return(program: &userbpf_vm::Program) -> bool {
    program.insns().iter().any(|i| {
        i.code == op::CALL && i.src == op::CALL_HELPER && i.imm == BPF_FUNC_OVERRIDE_RETURN
    })
}

/// "it has a:b, c:d, ... (N in all)", or "it has no USDT probes".
fn available_probes(file: &UsdtFile) -> String {
    let mut names: Vec<String> = Vec::new();
    for p in &file.probes {
        let n = p.full_name();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    match names.len() {
        0 => "it has no USDT probes".to_string(),
        n if n <= LISTED_PROBES => format!("it has {}", names.join(", ")),
        n => format!(
            "it has {}, ... ({n} in all)",
            names[..LISTED_PROBES].join(", ")
        ),
    }
}

/// A site to hook: its runtime address, semaphore and spec bytes.
struct PlannedSite {
    address: u64,
    semaphore: Option<u64>,
    spec: Vec<u8>,
    /// The arguments whose addresses fill the scratch slots, in order.
    scratch: Vec<UsdtArg>,
}

/// The scratch values of a site: the addresses of its arguments that
/// libbpf's spec cannot describe, computed at each hit.
fn scratch_of(args: &[UsdtArg]) -> Option<probe::ContextScratch> {
    if args.is_empty() {
        return None;
    }
    let args = args.to_vec();
    probe::ContextScratch::new(
        args.len(),
        Arc::new(move |regs: &PtRegs, out: &mut [u64]| {
            for (o, a) in out.iter_mut().zip(&args) {
                *o = a.address_at(regs).unwrap_or(0);
            }
        }),
    )
}

/// Verifies program `prog` of `object` (unless `options.verify` is false)
/// and attaches it to every site of USDT probe `provider:name` of `binary`
/// in this process, on the maps `maps` (made from the same object).
///
/// `binary` is `self` (or empty) for the main executable, a path, or a
/// library name (`libfoo.so.1`, `libfoo`, `foo`), as
/// [`ProcessModules::find`] takes it; the module must be loaded. The
/// program must be a kprobe-type program (`SEC("usdt")`, or any
/// uprobe section) that includes `<bpf/usdt.bpf.h>` (the object needs
/// its `__bpf_usdt_specs` map).
pub fn attach_usdt(
    object: &Object,
    maps: &Arc<MapSet>,
    prog: &str,
    binary: &str,
    provider: &str,
    name: &str,
    options: &UsdtOptions,
) -> Result<UsdtLink, UsdtAttachError> {
    // Userbpf's own work: the process's hooks do not see it.
    userbpf_vm::quiet::scope(|| {
        attach_usdt_unseen(object, maps, prog, binary, provider, name, options)
    })
}

fn attach_usdt_unseen(
    object: &Object,
    maps: &Arc<MapSet>,
    prog: &str,
    binary: &str,
    provider: &str,
    name: &str,
    options: &UsdtOptions,
) -> Result<UsdtLink, UsdtAttachError> {
    let target = UsdtTarget {
        binary: binary.to_string(),
        provider: provider.to_string(),
        name: name.to_string(),
    };
    let probe_name = format!("{provider}:{name}");
    let full_name = target.to_string();
    let program_err = |message: String| UsdtAttachError::Program {
        program: prog.to_string(),
        message,
    };
    let maps_err = |message: String| UsdtAttachError::Maps {
        program: prog.to_string(),
        probe: full_name.clone(),
        message,
    };

    // The program.
    let obj_prog = object
        .program(prog)
        .map_err(|e| program_err(e.to_string()))?;
    if obj_prog.kind.prog_type != ProgramType::Kprobe {
        return Err(program_err(format!(
            "section `{}` is not a usdt (or uprobe) program",
            obj_prog.kind.section
        )));
    }
    let program = obj_prog
        .to_program()
        .map_err(|e| program_err(e.to_string()))?;
    if calls_override_return(&program) {
        return Err(program_err(
            "bpf_override_return is not allowed on a USDT probe (a site in the middle of a \
             function; the kernel refuses it on uprobes too)"
                .to_string(),
        ));
    }
    // Every site's VM is prepared from the same instructions: the one
    // proof vouches for them all.
    crate::engine::verify_object_program(object, prog, options.verify).map_err(|e| match e {
        crate::engine::ProgramRefused::Invalid(m) => program_err(m),
        crate::engine::ProgramRefused::Rejected(message) => UsdtAttachError::Rejected {
            program: prog.to_string(),
            message,
        },
    })?;

    // usdt.bpf.h's maps.
    let map_of = |map_name: &str| -> Option<&Arc<Map>> {
        let index = object.maps.iter().position(|m| m.name == map_name)?;
        maps.maps().get(index)
    };
    let specs = map_of(SPECS_MAP).ok_or_else(|| {
        maps_err(format!(
            "the object has no `{SPECS_MAP}` map (does the program include <bpf/usdt.bpf.h>?)"
        ))
    })?;
    let spec = specs.spec();
    if spec.key_size != 4 || spec.value_size as usize != USDT_SPEC_SIZE {
        return Err(maps_err(format!(
            "`{SPECS_MAP}` has {}-byte keys and {}-byte values; libbpf 1.1's usdt.bpf.h \
             has 4 and {USDT_SPEC_SIZE}",
            spec.key_size, spec.value_size
        )));
    }
    let spec_limit = spec.max_entries;
    let ip_map = map_of(IP_TO_SPEC_ID_MAP)
        .filter(|m| m.spec().key_size == 8 && m.spec().value_size == 4)
        .cloned();

    // The module and its notes.
    let not_loaded = |reason: String| UsdtAttachError::ModuleNotLoaded {
        program: prog.to_string(),
        probe: full_name.clone(),
        reason,
    };
    let modules = ProcessModules::current().map_err(|e| not_loaded(e.to_string()))?;
    let module: &Module = modules
        .find(binary)
        .map_err(|e| not_loaded(e.to_string()))?;
    let notes_err = |reason: String| UsdtAttachError::Notes {
        program: prog.to_string(),
        probe: full_name.clone(),
        path: module.path.clone(),
        reason,
    };
    let bytes = std::fs::read(&module.path).map_err(|e| notes_err(e.to_string()))?;
    let file = UsdtFile::parse(&bytes).map_err(|e| notes_err(e.to_string()))?;
    let found: Vec<&UsdtProbe> = file
        .probes
        .iter()
        .filter(|p| p.provider == provider && p.name == name)
        .collect();
    // A note of this probe that did not parse makes the probe unusable:
    // its sites would be missed.
    if let Some(bad) = file
        .skipped
        .iter()
        .find(|e| matches!(e, UsdtError::InNote { probe: Some(p), .. } if *p == probe_name))
    {
        return Err(UsdtAttachError::Spec {
            program: prog.to_string(),
            probe: full_name.clone(),
            reason: bad.to_string(),
        });
    }
    if found.is_empty() {
        return Err(UsdtAttachError::ProbeNotFound {
            program: prog.to_string(),
            probe: full_name.clone(),
            path: module.path.clone(),
            available: available_probes(&file),
        });
    }

    // Each site's address, semaphore and spec.
    let mut planned = Vec::with_capacity(found.len());
    for site in found {
        let address = file.runtime_address(site.file_pc(file.stapsdt_base), module.load_bias);
        let (spec, scratch) = site.spec_in_process(options.cookie).map_err(|e| match e {
            UsdtError::Inexpressible { text, reason } => UsdtAttachError::Inexpressible {
                program: prog.to_string(),
                probe: full_name.clone(),
                argument: text,
                reason,
            },
            e => UsdtAttachError::Spec {
                program: prog.to_string(),
                probe: full_name.clone(),
                reason: e.to_string(),
            },
        })?;
        let scratch: Vec<UsdtArg> = scratch.iter().map(|&i| site.args[i].clone()).collect();
        let semaphore = site
            .file_semaphore(file.stapsdt_base)
            .map(|s| file.runtime_address(s, module.load_bias));
        if planned.iter().any(|p: &PlannedSite| p.address == address) {
            // The same site twice in the notes: hook it once.
            continue;
        }
        if let Some(sem) = semaphore {
            if let Some(reason) = semaphore_problem(sem) {
                return Err(UsdtAttachError::Semaphore {
                    program: prog.to_string(),
                    probe: full_name.clone(),
                    address: sem,
                    reason,
                });
            }
        }
        planned.push(PlannedSite {
            address,
            semaphore,
            spec: spec.to_bytes(),
            scratch,
        });
    }

    // Spec ids: one per distinct spec.
    let mut distinct: Vec<&[u8]> = Vec::new();
    let site_spec_index: Vec<usize> = planned
        .iter()
        .map(
            |s| match distinct.iter().position(|d| *d == s.spec.as_slice()) {
                Some(i) => i,
                None => {
                    distinct.push(&s.spec);
                    distinct.len() - 1
                }
            },
        )
        .collect();
    let ids = allocate_spec_ids(maps, distinct.len(), spec_limit).ok_or_else(|| {
        maps_err(format!(
            "`{SPECS_MAP}` is full ({spec_limit} specs in use; define a larger \
             BPF_USDT_MAX_SPEC_CNT before including usdt.bpf.h)"
        ))
    })?;
    // From here on the link undoes what was done if a step fails.
    let mut link = UsdtLink {
        program: prog.to_string(),
        target,
        module_path: module.path.clone(),
        sites: Vec::with_capacity(planned.len()),
        semaphores: Vec::new(),
        ip_entries: Vec::new(),
        ip_map,
        spec_ids: ids.clone(),
        maps: Arc::clone(maps),
    };
    for (id, bytes) in ids.iter().zip(&distinct) {
        specs
            .update(&id.to_le_bytes(), bytes, 0)
            .map_err(|e| maps_err(format!("writing spec {id}: {e}")))?;
    }
    let site_ids: HashMap<u64, u32> = planned
        .iter()
        .zip(&site_spec_index)
        .filter_map(|(s, &i)| Some((s.address, *ids.get(i)?)))
        .collect();
    if let Some(map) = &link.ip_map {
        for (&ip, &id) in &site_ids {
            // Only read by programs when LINUX_HAS_BPF_COOKIE is false:
            // a full map is not an error (libbpf with cookies skips it).
            if map.update(&ip.to_le_bytes(), &id.to_le_bytes(), 0).is_ok() {
                link.ip_entries.push((ip, id));
            }
        }
    }

    // The hooks.
    for site in &planned {
        let Some(&spec_id) = site_ids.get(&site.address) else {
            continue;
        };
        let uprobe = probe::attach(
            object,
            maps,
            prog,
            &format!("{:#x}", site.address),
            &AttachOptions {
                // Verified above (its proof covers this VM).
                verify: false,
                cookie: u64::from(spec_id),
                kind: Some(ProbeKind::Entry),
                helpers: options.helpers.clone(),
                scratch: scratch_of(&site.scratch),
            },
        )
        .map_err(|e| UsdtAttachError::Hook {
            program: prog.to_string(),
            probe: full_name.clone(),
            address: site.address,
            reason: match e {
                probe::AttachError::Hook { source, .. } => source.to_string(),
                other => other.to_string(),
            },
        })?;
        link.sites.push(UsdtSite {
            link: uprobe,
            spec_id,
            semaphore: site.semaphore,
        });
    }

    // The semaphores, once every site is hooked.
    for site in &planned {
        let Some(sem) = site.semaphore else {
            continue;
        };
        let problem = semaphore_problem(sem).or_else(|| {
            (!adjust_semaphore(sem, 1)).then(|| "the count is at its maximum".to_string())
        });
        if let Some(reason) = problem {
            return Err(UsdtAttachError::Semaphore {
                program: prog.to_string(),
                probe: full_name.clone(),
                address: sem,
                reason,
            });
        }
        link.semaphores.push(sem);
    }
    Ok(link)
}

/// Attaches program `prog` to the probe its section names
/// (`usdt/BINARY:PROVIDER:NAME`), as [`attach_usdt`] does. Errors when the
/// section is a bare `usdt` (the caller must name the probe).
pub fn attach_usdt_section(
    object: &Object,
    maps: &Arc<MapSet>,
    prog: &str,
    options: &UsdtOptions,
) -> Result<UsdtLink, UsdtAttachError> {
    // Userbpf's own work: the process's hooks do not see it.
    userbpf_vm::quiet::scope(|| attach_usdt_section_unseen(object, maps, prog, options))
}

fn attach_usdt_section_unseen(
    object: &Object,
    maps: &Arc<MapSet>,
    prog: &str,
    options: &UsdtOptions,
) -> Result<UsdtLink, UsdtAttachError> {
    let program_err = |message: String| UsdtAttachError::Program {
        program: prog.to_string(),
        message,
    };
    let obj_prog = object
        .program(prog)
        .map_err(|e| program_err(e.to_string()))?;
    let target = match &obj_prog.kind.target {
        AttachTarget::Usdt {
            binary,
            provider,
            name,
        } => UsdtTarget {
            binary: binary.clone(),
            provider: provider.clone(),
            name: name.clone(),
        },
        _ => match section_target(&obj_prog.kind.section) {
            Some(Some(t)) => t,
            _ => {
                return Err(program_err(format!(
                    "section `{}` names no USDT probe (expected usdt/BINARY:PROVIDER:NAME)",
                    obj_prog.kind.section
                )))
            }
        },
    };
    attach_usdt(
        object,
        maps,
        prog,
        &target.binary,
        &target.provider,
        &target.name,
        options,
    )
}
