//! BPF programs on in-process uprobes and uretprobes.
//!
//! [`attach`] loads nothing itself: it takes an object already loaded
//! with its maps ([`MapSet`]), verifies the program (unless asked not
//! to), and attaches it through [`userbpf_shims::hook`] at a target such
//! as `libc.so.6:malloc`, `self:my_function+4` or `0x401000`. Each thread
//! that hits the probe runs the program on a VM of its own (same native
//! code and maps), with the thread's registers as the `struct pt_regs`
//! context, so `BPF_KPROBE`/`BPF_KRETPROBE` programs work unmodified.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use userbpf_shims::hook::{self, Action, Probe, ProbeKind, ProbeLink, PtRegs, Target};
use userbpf_shims::symbols;
use userbpf_vm::interp::{Config, Vm};
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
}

impl Default for AttachOptions {
    fn default() -> AttachOptions {
        AttachOptions {
            verify: true,
            cookie: 0,
            kind: None,
        }
    }
}

/// Ids of probes, to find a thread's VM for each.
static NEXT_PROBE: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// This thread's VMs, by probe id.
    static VMS: RefCell<Vec<(usize, Vm)>> = const { RefCell::new(Vec::new()) };
}

/// A BPF program as a probe.
pub struct BpfProbe {
    id: usize,
    program: String,
    maps: Arc<MapSet>,
    /// The VM the others are made from (and that keeps tail-call targets
    /// alive).
    proto: Mutex<Vm>,
    cookie: u64,
    runs: AtomicU64,
    faults: AtomicU64,
    last_fault: Mutex<Option<String>>,
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
        let last = self.last_fault.lock().ok().and_then(|l| l.clone());
        (self.faults.load(Ordering::Relaxed), last)
    }

    #[cold]
    #[inline(never)]
    fn new_vm(&self) -> Option<Vm> {
        let proto = self.proto.lock().ok()?;
        Some(self.maps.vm_sharing(&proto))
    }

    #[cold]
    #[inline(never)]
    fn record_fault(&self, fault: String) {
        self.faults.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.last_fault.lock() {
            *l = Some(fault);
        }
    }

    fn run(&self, vm: &mut Vm, regs: &mut PtRegs) -> Action {
        vm.set_hook_info(HookInfo {
            attach_cookie: self.cookie,
            func_ip: regs.ip,
            user_regs: Some(regs as *mut PtRegs as u64),
            ..HookInfo::default()
        });
        // SAFETY: `regs` is a live, exclusive `PtRegs` (168 bytes, no
        // padding) for the duration of the run.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                (regs as *mut PtRegs).cast::<u8>(),
                std::mem::size_of::<PtRegs>(),
            )
        };
        match vm.run(bytes) {
            Ok(_) => match vm.last_outcome().override_return {
                Some(v) => Action::Return(v),
                None => Action::Continue,
            },
            Err(fault) => {
                self.record_fault(fault.to_string());
                Action::Continue
            }
        }
    }
}

impl Probe for BpfProbe {
    fn hit(&self, regs: &mut PtRegs) -> Action {
        self.runs.fetch_add(0, Ordering::Relaxed);
        VMS.try_with(|vms| {
            let Ok(mut vms) = vms.try_borrow_mut() else {
                return Action::Continue;
            };
            if let Some((_, vm)) = vms.iter_mut().find(|(id, _)| *id == self.id) {
                return self.run(vm, regs);
            }
            let Some(vm) = self.new_vm() else {
                return Action::Continue;
            };
            vms.push((self.id, vm));
            let last = vms.len() - 1;
            self.run(&mut vms[last].1, regs)
        })
        .unwrap_or(Action::Continue)
    }
}

/// A BPF program attached in this process; dropping it detaches.
#[derive(Debug)]
pub struct UprobeLink {
    /// The hook (dropped first).
    link: ProbeLink,
    probe: Arc<BpfProbe>,
    target: String,
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
    let program = prog.to_program().map_err(|e| perr(e.to_string()))?;
    if options.verify {
        let env = userbpf_verifier::Env::for_object(object, prog);
        let (proof, _report) =
            userbpf_verifier::verify(program, &env, &userbpf_verifier::Options::default())
                .map_err(|e| AttachError::Rejected {
                    program: name.to_string(),
                    message: e.to_string(),
                })?;
        crate::engine::add_proof(proof);
    }
    let proto = maps
        .vm_for_object(object, name, &Helpers::kernel_basics(), Config::default())
        .map_err(|e| perr(e.to_string()))?;
    let resolved = symbols::resolve(target).map_err(|source| AttachError::Target {
        program: name.to_string(),
        source,
    })?;
    let function = resolved
        .symbol
        .as_ref()
        .map(|_| (resolved.address - resolved.offset_in_symbol, resolved.size));
    let probe = Arc::new(BpfProbe {
        id: NEXT_PROBE.fetch_add(1, Ordering::Relaxed),
        program: name.to_string(),
        maps: Arc::clone(maps),
        proto: Mutex::new(proto),
        cookie: options.cookie,
        runs: AtomicU64::new(0),
        faults: AtomicU64::new(0),
        last_fault: Mutex::new(None),
    });
    let link = hook::attach(
        Target {
            address: resolved.address,
            function,
        },
        kind,
        Arc::clone(&probe) as Arc<dyn Probe>,
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
    })
}
