//! What every in-process hook (uprobes, USDT, syscalls) does with a BPF
//! program: prepare it (verify, record the proof, make the VM the
//! threads' VMs are cloned from), run it on an event, and keep its faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use userbpf_vm::interp::{Config, Fault, Vm};
use userbpf_vm::maps::MapSet;
use userbpf_vm::object::Object;
use userbpf_vm::{Helpers, HookInfo};

use crate::engine::{verify_object_program, ProgramRefused};

/// Verifies program `name` of `object` (unless `verify` is false: checked
/// mode), records the proof, and makes its VM on `maps` with `helpers`
/// (`None`: [`Helpers::kernel_basics`]) and the object's program arrays.
/// Also returns the verifier's statistics (`None` when not verified).
pub fn prepare(
    object: &Object,
    maps: &Arc<MapSet>,
    name: &str,
    verify: bool,
    helpers: Option<&Helpers>,
) -> Result<(Vm, Option<userbpf_verifier::Stats>), ProgramRefused> {
    let stats = verify_object_program(object, name, verify)?;
    let basics;
    let helpers = match helpers {
        Some(h) => h,
        None => {
            basics = Helpers::kernel_basics();
            &basics
        }
    };
    let vm = maps
        .vm_for_object(object, name, helpers, Config::default())
        .map_err(|e| ProgramRefused::Invalid(e.to_string()))?;
    Ok((vm, stats))
}

/// The runs of a hooked program that faulted (checked mode: an access out
/// of bounds, the instruction budget) and the last fault's message.
#[derive(Debug, Default)]
pub struct FaultLog {
    count: AtomicU64,
    last: Mutex<Option<String>>,
}

impl FaultLog {
    /// How many runs faulted, and the last message.
    pub fn get(&self) -> (u64, Option<String>) {
        let last = self.last.lock().ok().and_then(|l| l.clone());
        (self.count.load(Ordering::Relaxed), last)
    }

    #[cold]
    #[inline(never)]
    fn record(&self, fault: &Fault) {
        self.count.fetch_add(1, Ordering::Relaxed);
        // (Never waits: a hook may run where blocking could deadlock.)
        if let Ok(mut l) = self.last.try_lock() {
            *l = Some(fault.to_string());
        }
    }
}

/// Runs `vm`'s program on one event: `ctx` is its context, `hook` what the
/// event's helpers know (`bpf_get_func_ip`, the attach cookie, the user
/// registers). Returns the value `bpf_override_return` asked for, if any;
/// a fault goes to `faults`.
///
/// (Always inlined: as a call of its own, with the `HookInfo` passed
/// through memory, it costs a probe ~3 ns a run.)
#[inline(always)]
pub fn run(vm: &mut Vm, ctx: &mut [u8], hook: HookInfo, faults: &FaultLog) -> Option<u64> {
    vm.set_hook_info(hook);
    match vm.run(ctx) {
        Ok(_) => vm.last_outcome().override_return,
        Err(fault) => {
            faults.record(&fault);
            None
        }
    }
}
