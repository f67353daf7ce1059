//! BPF programs on in-process uprobes and uretprobes.
//!
//! [`attach`] loads nothing itself: it takes an object already loaded
//! with its maps ([`MapSet`]), verifies the program (unless asked not
//! to), and attaches it through [`userbpf_shims::hook`] at a target such
//! as `libc.so.6:malloc`, `self:my_function+4` or `0x401000`. Each thread
//! that hits the probe runs the program on a VM of its own (same native
//! code and maps), with the thread's registers as the `struct pt_regs`
//! context, so `BPF_KPROBE`/`BPF_KRETPROBE` programs work unmodified.

use crate::engine::ProgramRefused;
use crate::hooked::{self, FaultLog};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use userbpf_shims::hook::{self, Action, Probe, ProbeKind, ProbeLink, PtRegs, Target};
use userbpf_shims::symbols;
use userbpf_vm::interp::Vm;
use userbpf_vm::maps::MapSet;
use userbpf_vm::object::{Object, ProgramType};
use userbpf_vm::{Helpers, HookInfo};

/// Why a program could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The object has no such program, or it cannot be prepared.
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
    /// The target does not resolve to code of this process.
    #[error("program `{program}`: {source}")]
    Target {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: symbols::SymbolError,
    },
    /// The hook could not be placed.
    #[error("program `{program}` at {target}: {source}")]
    Hook {
        /// The program.
        program: String,
        /// The target as given.
        target: String,
        /// Why.
        #[source]
        source: hook::HookError,
    },
}

/// How [`attach`] treats the program.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// Verify the program first (the default). Without verification it
    /// runs in checked mode.
    pub verify: bool,
    /// `bpf_get_attach_cookie`'s value.
    pub cookie: u64,
    /// Uprobe or uretprobe; `None` takes it from the section name.
    pub kind: Option<ProbeKind>,
    /// The helpers beyond the maps' (`None`: [`Helpers::kernel_basics`],
    /// `bpf_trace_printk` writing to standard error).
    pub helpers: Option<Helpers>,
    /// Values computed at each hit and placed after the context's `struct
    /// pt_regs` (`None`: the context is the `pt_regs` alone).
    pub scratch: Option<ContextScratch>,
}

/// At most this many scratch values follow a probe's `pt_regs`
/// (`BPF_USDT_MAX_ARG_CNT`: one per USDT argument).
pub const MAX_SCRATCH_SLOTS: usize = 12;

/// The function that fills a probe's scratch slots from the registers.
pub type ScratchFill = Arc<dyn Fn(&PtRegs, &mut [u64]) + Send + Sync>;

/// Values a probe computes from the registers each time it fires and
/// hands its program right after the `struct pt_regs` of its context, 8
/// bytes each (little-endian): how in-process USDT probes serve arguments
/// libbpf's spec cannot describe (`userbpf_shims::usdt::USDT_SCRATCH_OFFSET`).
/// The program reads them with `bpf_probe_read_kernel(ctx + offset)`;
/// direct context loads stay within `pt_regs`, as the verifier checks.
#[derive(Clone)]
pub struct ContextScratch {
    slots: usize,
    fill: ScratchFill,
}

impl ContextScratch {
    /// `slots` values (at most [`MAX_SCRATCH_SLOTS`]; `None` beyond),
    /// written by `fill` at each hit.
    pub fn new(slots: usize, fill: ScratchFill) -> Option<ContextScratch> {
        (slots <= MAX_SCRATCH_SLOTS).then_some(ContextScratch { slots, fill })
    }

    /// How many values.
    pub fn slots(&self) -> usize {
        self.slots
    }
}

impl std::fmt::Debug for ContextScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextScratch")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl Default for AttachOptions {
    fn default() -> AttachOptions {
        AttachOptions {
            verify: true,
            cookie: 0,
            kind: None,
            helpers: None,
            scratch: None,
        }
    }
}

/// Ids of probes, to find a thread's VM for each.
static NEXT_PROBE: AtomicUsize = AtomicUsize::new(1);

/// A thread's VMs, by probe id (boxed: the cache below points into them),
/// with a token telling whether the probe still exists.
struct ThreadVms(Vec<(usize, std::sync::Weak<()>, Box<Vm>)>);

impl Drop for ThreadVms {
    fn drop(&mut self) {
        // The cache must not outlive the VMs.
        LAST_VMS.with(|c| c.set([(0, std::ptr::null_mut()); 2]));
    }
}

thread_local! {
    /// This thread's VMs.
    static VMS: RefCell<ThreadVms> = const { RefCell::new(ThreadVms(Vec::new())) };
    /// The VMs this thread used last, the latest first, with their
    /// probes' ids: most threads hit one probe over and over, or an entry
    /// and a return probe in turn.
    static LAST_VMS: std::cell::Cell<[(usize, *mut Vm); 2]> =
        const { std::cell::Cell::new([(0, std::ptr::null_mut()); 2]) };
}

/// A BPF program as a probe.
pub struct BpfProbe {
    id: usize,
    program: String,
    maps: Arc<MapSet>,
    /// The VM the others are made from (and that keeps tail-call targets
    /// alive).
    proto: Mutex<Vm>,
    /// See [`Probe::lean`].
    lean: bool,
    /// See [`Probe::direct`]: the program's native code, when it is a
    /// leaf that reads only lean words.
    leaf: Option<hook::LeafCode>,
    cookie: u64,
    /// Dropped with the probe: threads then free their VMs for it.
    alive: Arc<()>,
    faults: FaultLog,
}

impl std::fmt::Debug for BpfProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpfProbe")
            .field("program", &self.program)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl BpfProbe {
    /// The program's name.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Runs that faulted (checked mode: an access out of bounds, the
    /// instruction budget), and the last fault's message.
    pub fn faults(&self) -> (u64, Option<String>) {
        self.faults.get()
    }

    #[cold]
    #[inline(never)]
    fn new_vm(&self) -> Option<Vm> {
        let proto = self.proto.lock().ok()?;
        Some(self.maps.vm_sharing(&proto))
    }

    fn run(&self, vm: &mut Vm, regs: &mut PtRegs) -> Action {
        let hook = self.hook_info(regs);
        // SAFETY: `regs` is a live, exclusive `PtRegs` (168 bytes, no
        // padding) for the duration of the run.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                (regs as *mut PtRegs).cast::<u8>(),
                std::mem::size_of::<PtRegs>(),
            )
        };
        self.run_on(vm, hook, bytes)
    }

    /// What the helpers know of a hit with `regs`.
    #[inline(always)]
    fn hook_info(&self, regs: &mut PtRegs) -> HookInfo {
        HookInfo {
            attach_cookie: self.cookie,
            func_ip: regs.ip,
            user_regs: Some(regs as *mut PtRegs as u64),
            ..HookInfo::default()
        }
    }

    /// Runs the program on `ctx` with `hook` for its helpers.
    #[inline(always)]
    fn run_on(&self, vm: &mut Vm, hook: HookInfo, ctx: &mut [u8]) -> Action {
        match hooked::run(vm, ctx, hook, &self.faults) {
            Some(v) => Action::Return(v),
            None => Action::Continue,
        }
    }

    /// This thread's VM for the probe.
    #[inline(always)]
    fn vm(&self) -> Option<*mut Vm> {
        let [(id0, vm0), (id1, vm1)] = LAST_VMS.get();
        if id0 == self.id && !vm0.is_null() {
            Some(vm0)
        } else if id1 == self.id && !vm1.is_null() {
            Some(vm1)
        } else {
            self.thread_vm()
        }
    }
}

/// A [`BpfProbe`] whose context is a copy of the registers followed by
/// scratch values ([`ContextScratch`]): a probe of its own, so that the
/// others pay nothing for it.
struct ScratchProbe {
    probe: Arc<BpfProbe>,
    scratch: ContextScratch,
}

impl Probe for ScratchProbe {
    fn hit(&self, regs: &mut PtRegs) -> Action {
        let Some(vm) = self.probe.vm() else {
            return Action::Continue;
        };
        const REGS: usize = std::mem::size_of::<PtRegs>();
        let mut ctx = [0u8; REGS + 8 * MAX_SCRATCH_SLOTS];
        let mut values = [0u64; MAX_SCRATCH_SLOTS];
        let slots = self.scratch.slots;
        // SAFETY: `regs` is a live `PtRegs` (168 bytes, no padding), read.
        let raw = unsafe { std::slice::from_raw_parts((regs as *const PtRegs).cast::<u8>(), REGS) };
        ctx[..REGS].copy_from_slice(raw);
        (self.scratch.fill)(regs, &mut values[..slots]);
        for (k, v) in values[..slots].iter().enumerate() {
            ctx[REGS + 8 * k..REGS + 8 * k + 8].copy_from_slice(&v.to_le_bytes());
        }
        let hook = self.probe.hook_info(regs);
        // SAFETY: as in `BpfProbe::hit`.
        self.probe
            .run_on(unsafe { &mut *vm }, hook, &mut ctx[..REGS + 8 * slots])
    }
}

impl BpfProbe {
    /// This thread's VM for the probe, made on first use.
    #[cold]
    #[inline(never)]
    fn thread_vm(&self) -> Option<*mut Vm> {
        VMS.try_with(|vms| {
            let mut vms = vms.try_borrow_mut().ok()?;
            let vm: *mut Vm = match vms.0.iter_mut().find(|(id, _, _)| *id == self.id) {
                Some((_, _, vm)) => &mut **vm,
                None => {
                    // VMs of detached probes go first.
                    vms.0.retain(|(_, alive, _)| alive.strong_count() > 0);
                    let vm = Box::new(self.new_vm()?);
                    vms.0.push((self.id, Arc::downgrade(&self.alive), vm));
                    let last = vms.0.len() - 1;
                    &mut *vms.0[last].2
                }
            };
            LAST_VMS.with(|c| {
                let [latest, _] = c.get();
                c.set([(self.id, vm), latest]);
            });
            Some(vm)
        })
        .ok()
        .flatten()
    }
}

impl Probe for BpfProbe {
    #[inline]
    fn hit(&self, regs: &mut PtRegs) -> Action {
        let Some(vm) = self.vm() else {
            return Action::Continue;
        };
        // SAFETY: the VM is boxed in this thread's `VMS` (which clears
        // the cache before it goes); the hooks never run a probe while
        // another runs on the same thread, so this is the only reference.
        self.run(unsafe { &mut *vm }, regs)
    }

    fn lean(&self) -> bool {
        self.lean
    }

    fn direct(&self) -> Option<hook::LeafCode> {
        self.leaf
    }
}

/// A BPF program attached in this process; dropping it detaches.
#[derive(Debug)]
pub struct UprobeLink {
    /// The hook (dropped first).
    link: ProbeLink,
    probe: Arc<BpfProbe>,
    target: String,
    kind: ProbeKind,
}

impl UprobeLink {
    /// The program.
    pub fn probe(&self) -> &Arc<BpfProbe> {
        &self.probe
    }

    /// The hooked address.
    pub fn address(&self) -> u64 {
        self.link.address()
    }

    /// The target as given.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Uprobe or uretprobe.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// Hits that skipped the program (re-entered on a thread already
    /// running a probe) and returns missed.
    pub fn stats(&self) -> hook::Stats {
        self.link.stats()
    }
}

/// The target in a uprobe section name (`uprobe/BINARY:FUNCTION[+OFF]`,
/// libbpf's convention), and whether it is a return probe.
pub fn section_target(section: &str) -> Option<(ProbeKind, Option<&str>)> {
    let (kind, rest) = if let Some(r) = section.strip_prefix("uretprobe") {
        (ProbeKind::Return, r)
    } else if let Some(r) = section.strip_prefix("uprobe") {
        (ProbeKind::Entry, r)
    } else {
        return None;
    };
    // `uprobe.s` (sleepable) is the same hook here.
    let rest = rest.strip_prefix(".s").unwrap_or(rest);
    match rest.strip_prefix('/') {
        Some(t) if !t.is_empty() => Some((kind, Some(t))),
        _ if rest.is_empty() => Some((kind, None)),
        _ => None,
    }
}

/// Verifies program `name` of `object` (unless `options.verify` is
/// false), and attaches it at `target` in this process, on the maps
/// `maps` (made from the same object). `target` is `BINARY:SYMBOL[+OFF]`,
/// `BINARY:0xVADDR` or `0xADDRESS` (see [`symbols::TargetSpec`]).
pub fn attach(
    object: &Object,
    maps: &Arc<MapSet>,
    name: &str,
    target: &str,
    options: &AttachOptions,
) -> Result<UprobeLink, AttachError> {
    // Userbpf's own work: the process's hooks do not see it.
    userbpf_vm::quiet::scope(|| attach_unseen(object, maps, name, target, options))
}

fn attach_unseen(
    object: &Object,
    maps: &Arc<MapSet>,
    name: &str,
    target: &str,
    options: &AttachOptions,
) -> Result<UprobeLink, AttachError> {
    let perr = |message: String| AttachError::Program {
        program: name.to_string(),
        message,
    };
    let prog = object.program(name).map_err(|e| perr(e.to_string()))?;
    if prog.kind.prog_type != ProgramType::Kprobe {
        return Err(perr(format!(
            "section `{}` is not a uprobe or uretprobe program",
            prog.kind.section
        )));
    }
    let kind = match options.kind {
        Some(k) => k,
        None => section_target(&prog.kind.section)
            .map(|(k, _)| k)
            .unwrap_or(ProbeKind::Entry),
    };
    let (proto, stats) =
        hooked::prepare(object, maps, name, options.verify, options.helpers.as_ref()).map_err(
            |e| match e {
                ProgramRefused::Invalid(m) => perr(m),
                ProgramRefused::Rejected(message) => AttachError::Rejected {
                    program: name.to_string(),
                    message,
                },
            },
        )?;
    let resolved = symbols::resolve(target).map_err(|source| AttachError::Target {
        program: name.to_string(),
        source,
    })?;
    let function = resolved
        .symbol
        .as_ref()
        .map(|_| (resolved.address - resolved.offset_in_symbol, resolved.size));
    // Verified to read no more of its `pt_regs` than a lean frame holds
    // (a helper given the context may read any of it).
    let lean = stats.is_some_and(|s| !s.ctx_escapes && s.ctx_words & !hook::LEAN_WORDS == 0);
    // A lean leaf (no helper: no cookie, hook information or override to
    // give it) runs straight from the trampoline. (Waits for the
    // program's final code.)
    let leaf = if lean && options.scratch.is_none() {
        proto.prepared().leaf_code()
    } else {
        None
    };
    let probe = Arc::new(BpfProbe {
        id: NEXT_PROBE.fetch_add(1, Ordering::Relaxed),
        program: name.to_string(),
        maps: Arc::clone(maps),
        proto: Mutex::new(proto),
        lean,
        leaf,
        cookie: options.cookie,
        alive: Arc::new(()),
        faults: FaultLog::default(),
    });
    let hooked: Arc<dyn Probe> = match &options.scratch {
        None => Arc::clone(&probe) as Arc<dyn Probe>,
        Some(scratch) => Arc::new(ScratchProbe {
            probe: Arc::clone(&probe),
            scratch: scratch.clone(),
        }),
    };
    let link = hook::attach(
        Target {
            address: resolved.address,
            function,
        },
        kind,
        hooked,
    )
    .map_err(|source| AttachError::Hook {
        program: name.to_string(),
        target: target.to_string(),
        source,
    })?;
    Ok(UprobeLink {
        link,
        probe,
        target: target.to_string(),
        kind,
    })
}
