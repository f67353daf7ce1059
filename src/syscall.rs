//! BPF programs on the syscalls of this process, with the kernel's
//! contexts: `tracepoint/syscalls/sys_enter_NAME` and `sys_exit_NAME`
//! (`struct trace_event_raw_sys_enter` / `_exit`), `tracepoint/
//! raw_syscalls/sys_enter|sys_exit` (every syscall), and
//! `raw_tracepoint/sys_enter|sys_exit` (`struct bpf_raw_tracepoint_args`:
//! a `struct pt_regs *` of the call, then the number or the return
//! value). The mechanism is [`userbpf_shims::syscall`]; a program on
//! `sys_enter` may deny the call with `bpf_override_return(ctx, -EPERM)`
//! (a user-space seccomp/LSM policy).
//!
//! Hooks may run inside `malloc` (its `mmap`/`brk`) or a signal handler:
//! nothing on a hit allocates or locks. Each thread takes a VM from a pool
//! made at attach time ([`POOL`] per program); threads beyond it run
//! nothing and count a miss.

use crate::engine::ProgramRefused;
use crate::hooked::{self, FaultLog};
use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use userbpf_shims::syscall::{self as sys, SyscallAction, SyscallCtx, SyscallHook};
use userbpf_vm::context::{PtRegs, SysExit, TraceEntry};
use userbpf_vm::interp::Vm;
use userbpf_vm::maps::MapSet;
use userbpf_vm::object::{Object, ProgramType};
use userbpf_vm::{Helpers, HookInfo};

use crate::syscall_names;

/// VMs made per program at attach time: the threads that can run it.
pub const POOL: usize = 128;

/// Where a syscall program runs and what its context is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallProgram {
    /// `tracepoint/syscalls/sys_enter_NAME` (`Some(nr)`) or
    /// `tracepoint/raw_syscalls/sys_enter` (`None`).
    Enter(Option<u64>),
    /// `tracepoint/syscalls/sys_exit_NAME` or `raw_syscalls/sys_exit`.
    Exit(Option<u64>),
    /// `raw_tracepoint/sys_enter` (`raw_tp/`).
    RawEnter,
    /// `raw_tracepoint/sys_exit`.
    RawExit,
}

impl SyscallProgram {
    /// The hook a section names, if it is a syscall hook; `Err` for a
    /// syscall tracepoint of an unknown syscall.
    pub fn of_section(section: &str) -> Option<Result<SyscallProgram, String>> {
        let tp = section
            .strip_prefix("tracepoint/")
            .or_else(|| section.strip_prefix("tp/"));
        if let Some(rest) = tp {
            if let Some(name) = rest.strip_prefix("syscalls/sys_enter_") {
                return Some(
                    syscall_names::number(name)
                        .map(|n| SyscallProgram::Enter(Some(n)))
                        .ok_or_else(|| format!("no syscall `{name}` on x86-64")),
                );
            }
            if let Some(name) = rest.strip_prefix("syscalls/sys_exit_") {
                return Some(
                    syscall_names::number(name)
                        .map(|n| SyscallProgram::Exit(Some(n)))
                        .ok_or_else(|| format!("no syscall `{name}` on x86-64")),
                );
            }
            return match rest {
                "raw_syscalls/sys_enter" => Some(Ok(SyscallProgram::Enter(None))),
                "raw_syscalls/sys_exit" => Some(Ok(SyscallProgram::Exit(None))),
                _ => None,
            };
        }
        let raw = section
            .strip_prefix("raw_tracepoint/")
            .or_else(|| section.strip_prefix("raw_tp/"))?;
        match raw {
            "sys_enter" => Some(Ok(SyscallProgram::RawEnter)),
            "sys_exit" => Some(Ok(SyscallProgram::RawExit)),
            _ => None,
        }
    }

    /// The syscall the hook is limited to.
    pub fn filter(self) -> Option<u64> {
        match self {
            SyscallProgram::Enter(f) | SyscallProgram::Exit(f) => f,
            SyscallProgram::RawEnter | SyscallProgram::RawExit => None,
        }
    }
}

/// Why a syscall program could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum SyscallAttachError {
    /// The object has no such program, it is not a syscall hook, or it
    /// cannot be prepared.
    #[error("program `{program}`: {message}")]
    Program {
        /// The program.
        program: String,
        /// What is wrong.
        message: String,
    },
    /// The verifier rejected it.
    #[error("program `{program}` was rejected by the verifier: {message}")]
    Rejected {
        /// The program.
        program: String,
        /// The verifier's message.
        message: String,
    },
    /// The interception could not be installed.
    #[error("program `{program}`: {source}")]
    Hook {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: sys::SyscallError,
    },
}

/// How [`attach`] treats the program.
#[derive(Clone, Debug)]
pub struct SyscallOptions {
    /// Verify first (the default); without, checked mode.
    pub verify: bool,
    /// Helpers beyond the maps' (`None`: [`Helpers::kernel_basics`]).
    pub helpers: Option<Helpers>,
}

impl Default for SyscallOptions {
    fn default() -> SyscallOptions {
        SyscallOptions {
            verify: true,
            helpers: None,
        }
    }
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

const CACHE: usize = 16;

thread_local! {
    /// This thread's VMs for syscall programs: (program id, VM). Constant
    /// initialised, no destructor: usable at any moment of the thread's
    /// life, and never allocating.
    static THREAD_VMS: [Cell<(usize, *mut Vm)>; CACHE] =
        const { [const { Cell::new((0, std::ptr::null_mut())) }; CACHE] };
}

/// A BPF program as a syscall hook.
struct BpfSyscall {
    id: usize,
    kind: SyscallProgram,
    /// VMs not yet taken by a thread.
    pool: Box<[AtomicPtr<Vm>]>,
    next: AtomicUsize,
    /// Every VM made (freed with the program).
    all: Vec<*mut Vm>,
    /// `common_type`: the tracepoint's id in tracefs, when readable.
    event_id: u16,
    /// The program's native code, when it is a leaf on one syscall's
    /// `sys_enter` ([`SyscallHook::direct`]).
    leaf: Option<userbpf_vm::interp::LeafCode>,
    runs_without_vm: AtomicU64,
    faults: FaultLog,
}

// SAFETY: the raw VM pointers are owned by this value (`all`), each used
// by the one thread that took it from the pool.
unsafe impl Send for BpfSyscall {}
// SAFETY: as above.
unsafe impl Sync for BpfSyscall {}

impl Drop for BpfSyscall {
    fn drop(&mut self) {
        // (Dropped after the hook's grace period: no thread runs a VM.)
        for vm in self.all.drain(..) {
            // SAFETY: made with Box::into_raw in `attach`, freed once.
            drop(unsafe { Box::from_raw(vm) });
        }
    }
}

impl BpfSyscall {
    /// This thread's VM for the program: cached, or taken from the pool.
    #[inline]
    fn vm(&self) -> Option<*mut Vm> {
        THREAD_VMS.with(|cache| {
            for c in cache {
                let (id, vm) = c.get();
                if id == self.id {
                    return Some(vm);
                }
            }
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let vm = self
                .pool
                .get(i)?
                .swap(std::ptr::null_mut(), Ordering::AcqRel);
            if vm.is_null() {
                return None;
            }
            // A free cache entry, or one of a program that is gone (ids
            // are never reused; its VM was freed with it).
            let slot = cache
                .iter()
                .find(|c| c.get().0 == 0)
                .unwrap_or(&cache[self.id % CACHE]);
            slot.set((self.id, vm));
            Some(vm)
        })
    }

    fn run(&self, ctx: &mut [u8], regs: Option<&PtRegs>, ip: u64) -> Option<u64> {
        let Some(vm) = self.vm() else {
            self.runs_without_vm.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        // SAFETY: the VM was taken by this thread alone; the hooks never
        // run a hook while another runs on the same thread.
        let vm = unsafe { &mut *vm };
        let hook = HookInfo {
            func_ip: ip,
            user_regs: regs.map(|r| r as *const PtRegs as u64),
            ..HookInfo::default()
        };
        hooked::run(vm, ctx, hook, &self.faults)
    }

    /// [`BpfSyscall::entry`] as the first word of a record.
    #[inline(always)]
    fn entry_word(&self) -> u64 {
        let mut w = [0u8; 8];
        write_entry(&mut w, &self.entry());
        u64::from_le_bytes(w)
    }

    fn entry(&self) -> TraceEntry {
        TraceEntry {
            common_type: self.event_id,
            common_flags: 0,
            common_preempt_count: 0,
            common_pid: 0,
        }
    }
}

/// The syscall's registers as the kernel saves them at entry (`orig_ax`
/// the number, `ax` -ENOSYS as on entry, or the return value at exit).
fn regs_of(ctx: &SyscallCtx, ax: u64) -> PtRegs {
    PtRegs {
        di: ctx.args[0],
        si: ctx.args[1],
        dx: ctx.args[2],
        r10: ctx.args[3],
        r8: ctx.args[4],
        r9: ctx.args[5],
        orig_ax: ctx.nr,
        ax,
        ip: ctx.ip,
        sp: ctx.sp,
        cs: 0x33,
        ss: 0x2b,
        ..PtRegs::default()
    }
}

impl SyscallHook for BpfSyscall {
    fn enter(&self, ctx: &mut SyscallCtx) -> SyscallAction {
        let out = match self.kind {
            SyscallProgram::Enter(_) => {
                // `struct trace_event_raw_sys_enter` as eight words (x86-64
                // is little-endian): the common fields, the number, the
                // arguments. (Eight stores: the hot path of every hooked
                // syscall.)
                let [a0, a1, a2, a3, a4, a5] = ctx.args;
                let mut image = [self.entry_word(), ctx.nr, a0, a1, a2, a3, a4, a5];
                // SAFETY: the 64 bytes of `image`, which outlives the run.
                let bytes =
                    unsafe { std::slice::from_raw_parts_mut(image.as_mut_ptr().cast::<u8>(), 64) };
                self.run(bytes, None, ctx.ip)
            }
            SyscallProgram::RawEnter => {
                let regs = regs_of(ctx, (-libc::ENOSYS) as u64);
                let mut args = [0u8; 16];
                args[..8].copy_from_slice(&(&regs as *const PtRegs as u64).to_le_bytes());
                args[8..].copy_from_slice(&ctx.nr.to_le_bytes());
                self.run(&mut args, Some(&regs), ctx.ip)
            }
            _ => None,
        };
        match out {
            Some(v) => SyscallAction::Return(v as i64),
            None => SyscallAction::Continue,
        }
    }

    fn exit(&self, ctx: &SyscallCtx, ret: i64) {
        match self.kind {
            SyscallProgram::Exit(_) => {
                let mut image = [0u8; 32];
                let e = SysExit {
                    ent: self.entry(),
                    id: ctx.nr as i64,
                    ret,
                };
                write_sys_exit(&mut image, &e);
                self.run(&mut image, None, ctx.ip);
            }
            SyscallProgram::RawExit => {
                let regs = regs_of(ctx, ret as u64);
                let mut args = [0u8; 16];
                args[..8].copy_from_slice(&(&regs as *const PtRegs as u64).to_le_bytes());
                args[8..].copy_from_slice(&ret.to_le_bytes());
                self.run(&mut args, Some(&regs), ctx.ip);
            }
            _ => {}
        }
    }

    fn wants_exit(&self) -> bool {
        matches!(self.kind, SyscallProgram::Exit(_) | SyscallProgram::RawExit)
    }

    fn direct(&self) -> Option<sys::SyscallLeaf> {
        self.leaf.map(|code| sys::SyscallLeaf {
            code,
            common: self.entry_word(),
        })
    }
}

/// `struct trace_event_raw_sys_enter` into `out` (no allocation).
#[cfg(test)]
fn write_sys_enter(out: &mut [u8; 64], e: &userbpf_vm::context::SysEnter) {
    write_entry(out, &e.ent);
    out[8..16].copy_from_slice(&e.id.to_le_bytes());
    for (i, a) in e.args.iter().enumerate() {
        out[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
}

/// `struct trace_event_raw_sys_exit` into `out`.
fn write_sys_exit(out: &mut [u8; 32], e: &SysExit) {
    write_entry(out, &e.ent);
    out[8..16].copy_from_slice(&e.id.to_le_bytes());
    out[16..24].copy_from_slice(&e.ret.to_le_bytes());
}

fn write_entry(out: &mut [u8], e: &TraceEntry) {
    out[..2].copy_from_slice(&e.common_type.to_le_bytes());
    out[2] = e.common_flags;
    out[3] = e.common_preempt_count;
    out[4..8].copy_from_slice(&e.common_pid.to_le_bytes());
}

/// The tracepoint's id in tracefs (`events/CATEGORY/NAME/id`), 0 when not
/// readable.
fn event_id(section: &str) -> u16 {
    let rest = section
        .strip_prefix("tracepoint/")
        .or_else(|| section.strip_prefix("tp/"))
        .unwrap_or("");
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .find_map(|root| {
        std::fs::read_to_string(format!("{root}/{rest}/id"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .unwrap_or(0)
}

/// A syscall program attached in this process; dropping it detaches.
pub struct SyscallProbeLink {
    /// The hook (dropped first).
    link: sys::SyscallLink,
    probe: Arc<BpfSyscall>,
    program: String,
}

impl std::fmt::Debug for SyscallProbeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyscallProbeLink")
            .field("program", &self.program)
            .field("kind", &self.probe.kind)
            .finish_non_exhaustive()
    }
}

impl SyscallProbeLink {
    /// The program.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The hook.
    pub fn kind(&self) -> SyscallProgram {
        self.probe.kind
    }

    /// Hits the program missed: re-entered on a thread already running a
    /// hook, or a thread beyond the VM pool.
    pub fn misses(&self) -> u64 {
        self.link.misses() + self.probe.runs_without_vm.load(Ordering::Relaxed)
    }

    /// Runs that faulted (checked mode), and the first fault's message.
    pub fn faults(&self) -> (u64, Option<String>) {
        self.probe.faults.get()
    }
}

/// Verifies program `name` of `object` (a syscall tracepoint or raw
/// tracepoint: see [`SyscallProgram::of_section`]) unless asked not to,
/// and attaches it to this process's syscalls, on `maps`.
pub fn attach(
    object: &Object,
    maps: &Arc<MapSet>,
    name: &str,
    options: &SyscallOptions,
) -> Result<SyscallProbeLink, SyscallAttachError> {
    // Userbpf's own work: the process's hooks do not see it.
    userbpf_vm::quiet::scope(|| attach_unseen(object, maps, name, options))
}

fn attach_unseen(
    object: &Object,
    maps: &Arc<MapSet>,
    name: &str,
    options: &SyscallOptions,
) -> Result<SyscallProbeLink, SyscallAttachError> {
    let perr = |message: String| SyscallAttachError::Program {
        program: name.to_string(),
        message,
    };
    let prog = object.program(name).map_err(|e| perr(e.to_string()))?;
    let kind = match SyscallProgram::of_section(&prog.kind.section) {
        Some(Ok(k)) => k,
        Some(Err(e)) => return Err(perr(format!("section `{}`: {e}", prog.kind.section))),
        None => {
            return Err(perr(format!(
                "section `{}` is not a syscall hook (tracepoint/syscalls/sys_enter_NAME, \
                 sys_exit_NAME, raw_syscalls/*, raw_tracepoint/sys_enter|sys_exit)",
                prog.kind.section
            )))
        }
    };
    if !matches!(
        prog.kind.prog_type,
        ProgramType::Tracepoint | ProgramType::RawTracepoint
    ) {
        return Err(perr(format!(
            "section `{}` is not a tracepoint program",
            prog.kind.section
        )));
    }
    let (proto, stats) =
        hooked::prepare(object, maps, name, options.verify, options.helpers.as_ref()).map_err(
            |e| match e {
                ProgramRefused::Invalid(m) => perr(m),
                ProgramRefused::Rejected(message) => SyscallAttachError::Rejected {
                    program: name.to_string(),
                    message,
                },
            },
        )?;
    let all: Vec<*mut Vm> = (0..POOL)
        .map(|_| {
            let mut vm = maps.vm_sharing(&proto);
            vm.warm_up();
            Box::into_raw(Box::new(vm))
        })
        .collect();
    // A verified `sys_enter_NAME` program whose code calls nothing runs
    // from the trampoline itself. (Waits for the program's final code.)
    let leaf = match kind {
        SyscallProgram::Enter(Some(_)) if stats.is_some() => proto.prepared().leaf_code(),
        _ => None,
    };
    // The prototype keeps the tail-call targets alive with the pool's
    // VMs: keep it as one of them.
    let mut all = all;
    all.push(Box::into_raw(Box::new(proto)));
    let probe = Arc::new(BpfSyscall {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        kind,
        pool: all[..POOL].iter().map(|p| AtomicPtr::new(*p)).collect(),
        next: AtomicUsize::new(0),
        all,
        event_id: event_id(&prog.kind.section),
        leaf,
        runs_without_vm: AtomicU64::new(0),
        faults: FaultLog::default(),
    });
    let link = sys::attach(kind.filter(), Arc::clone(&probe) as Arc<dyn SyscallHook>).map_err(
        |source| SyscallAttachError::Hook {
            program: name.to_string(),
            source,
        },
    )?;
    Ok(SyscallProbeLink {
        link,
        probe,
        program: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The eight words the hook writes are `struct
    /// trace_event_raw_sys_enter` field by field.
    #[test]
    fn the_sys_enter_words_are_the_kernels_record() {
        let ent = TraceEntry {
            common_type: 0x1234,
            common_flags: 0x56,
            common_preempt_count: 0x78,
            common_pid: 0x0abc_def0,
        };
        let args = [1, u64::MAX, 3, 0x1122_3344_5566_7788, 5, 6];
        let mut want = [0u8; 64];
        write_sys_enter(
            &mut want,
            &userbpf_vm::context::SysEnter { ent, id: 257, args },
        );
        let mut w = [0u8; 8];
        write_entry(&mut w, &ent);
        let words = [
            u64::from_le_bytes(w),
            257,
            1,
            u64::MAX,
            3,
            0x1122_3344_5566_7788,
            5,
            6,
        ];
        let got: Vec<u8> = words.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(got, want);
    }
}
