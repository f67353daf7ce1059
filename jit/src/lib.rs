//! userbpf's JIT: BPF programs compiled to native x86-64 code with
//! Cranelift.
//!
//! Two modes:
//! - *checked* ([`compile_checked`]): any program, with the interpreter's
//!   checked-mode guarantees — every load, store and atomic bounds-checked
//!   (the stack inline, other regions through a call), helper arguments
//!   checked, the instruction budget charged per basic block, the call
//!   depth limited; a violation is the same [`Fault`] the interpreter
//!   reports, never a signal.
//! - *verified* ([`compile_verified`]): a [`Verified`] program, without
//!   run-time checks.
//!
//! Two code generators compile verified programs ([`Options::tier`]):
//! Cranelift, for the fastest code, and a baseline generator
//! (`baseline.rs`: one pass, fixed registers) that compiles in well under
//! a microsecond per instruction. A *tiered* compile runs the baseline
//! code at once and switches to Cranelift's when a background thread has
//! it ([`Tier::Tiered`]).
//!
//! Compiled code attaches to its [`PreparedProgram`]
//! ([`PreparedProgram::set_compiled`]), and [`userbpf_vm::Vm`] runs it in
//! place of the interpreter with the same memory regions, helpers, maps,
//! hook facts and tail calls. Division and modulo by zero and `INT_MIN /
//! -1` follow the RFC through selects: the code never traps. Each program
//! has its own Cranelift module, freed with it; code pages are mapped
//! writable, filled, then made read-execute (never both).
#![deny(missing_docs)]

mod baseline;
mod codegen;
mod ctx;
mod hoist;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cranelift_codegen::ir::GlobalValueData;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, DataDescription, Module};
use userbpf_verifier::Verified;
use userbpf_vm::interp::{
    ClosedEntry, ClosedHead, ClosedReturn, CompiledProgram, EngineFault, EngineRun, EngineStop,
    PreparedProgram,
};
use userbpf_vm::memory::Access;
use userbpf_vm::Fault;

use codegen::{Checks, Shape, Translator};
use ctx::{Host, JitCtx, MAX_FRAMES};

/// Programs above this many instruction slots are not compiled (the
/// runtime runs them in the interpreter).
pub const MAX_JIT_INSNS: usize = 200_000;

/// Programs up to this many instruction slots are compiled with
/// Cranelift's optimisations (`opt_level=speed`); larger ones without, to
/// keep compile time linear.
pub const OPTIMIZE_UP_TO: usize = 4096;

/// The host's code generator, built once per process and setting.
fn host_isa(optimize: bool) -> Result<cranelift_codegen::isa::OwnedTargetIsa, String> {
    static ISAS: [OnceLock<Result<cranelift_codegen::isa::OwnedTargetIsa, String>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    ISAS[usize::from(optimize)]
        .get_or_init(|| {
            let mut flags = settings::builder();
            flags
                .set("opt_level", if optimize { "speed" } else { "none" })
                .map_err(|e| e.to_string())?;
            flags
                .set(
                    "enable_verifier",
                    if cfg!(debug_assertions) {
                        "true"
                    } else {
                        "false"
                    },
                )
                .map_err(|e| e.to_string())?;
            cranelift_native::builder()
                .map_err(|e| e.to_string())?
                .finish(settings::Flags::new(flags))
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// The address of a process-wide trampoline with Cranelift's
/// `preserve_all` convention that calls [`ctx::jit_check`]
/// `(ctx)` (the access in the context's record) and leaves the answer in the context's
/// status. Checked code calls memory checks through it: a call that
/// clobbers no register keeps the register allocator from spilling every
/// value live across the (rare) slow path of every access. Compiled once,
/// kept for the life of the process (a few bytes).
fn check_trampoline() -> Result<u64, String> {
    static TRAMPOLINE: OnceLock<Result<u64, String>> = OnceLock::new();
    TRAMPOLINE
        .get_or_init(|| {
            let isa = host_isa(true)?;
            let call_conv = isa.default_call_conv();
            let frontend = isa.frontend_config();
            let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
            let mut sig = cranelift_codegen::ir::Signature::new(
                cranelift_codegen::isa::CallConv::PreserveAll,
            );
            sig.params.push(cranelift_codegen::ir::AbiParam::new(
                cranelift_codegen::ir::types::I64,
            ));
            let id = module
                .declare_anonymous_function(&sig)
                .map_err(|e| e.to_string())?;
            let mut cctx = module.make_context();
            cctx.func.signature = sig;
            let mut fbc = FunctionBuilderContext::new();
            {
                let mut b = FunctionBuilder::new(&mut cctx.func, &mut fbc);
                codegen::check_trampoline_body(&mut b, call_conv);
                b.finalize(frontend);
            }
            module
                .define_function(id, &mut cctx)
                .map_err(|e| format!("{e:?}"))?;
            let size = cctx.compiled_code().map_or(0, |c| c.code_buffer().len());
            userbpf_vm::own_code::scope(|| {
                module.finalize_definitions().map_err(|e| e.to_string())
            })?;
            let ptr = module.get_finalized_function(id) as u64;
            userbpf_vm::own_code::register(ptr, size as u64);
            // The code stays mapped for the life of the process.
            std::mem::forget(module);
            Ok(ptr)
        })
        .clone()
}

/// Why a program cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    /// An instruction does not decode (never for a validated program).
    #[error("program `{program}`: pc {pc}: {message}")]
    Decode {
        /// Program name.
        program: String,
        /// pc.
        pc: usize,
        /// Decoder message.
        message: String,
    },
    /// An instruction the JIT does not translate.
    #[error("program `{program}`: pc {pc}: the JIT cannot translate {what}")]
    Unsupported {
        /// Program name.
        program: String,
        /// pc.
        pc: usize,
        /// What.
        what: String,
    },
    /// The program is larger than [`MAX_JIT_INSNS`].
    #[error(
        "program `{program}` has {insns} instruction slots, more than the JIT's limit of {limit}"
    )]
    TooLarge {
        /// Program name.
        program: String,
        /// Its size.
        insns: usize,
        /// The limit.
        limit: usize,
    },
    /// The baseline code generator does not take the program
    /// ([`Tier::Baseline`]).
    #[error("program `{program}`: the baseline code generator does not take it: {reason}")]
    Baseline {
        /// Program name.
        program: String,
        /// What it does not take, with its pc.
        reason: String,
    },
    /// Cranelift refused the code or the host.
    #[error("program `{program}`: code generation failed: {message}")]
    Codegen {
        /// Program name.
        program: String,
        /// Cranelift's message.
        message: String,
    },
}

/// Compilation options.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Keep Cranelift's disassembly of the code ([`JitProgram::asm`]).
    pub keep_asm: bool,
    /// Which code generator(s) compile a verified program.
    pub tier: Tier,
}

/// Which code generator(s) compile a program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tier {
    /// Cranelift, before the compile returns (the default: the fastest
    /// code, from the first run).
    #[default]
    Optimized,
    /// The baseline generator only (a single pass, each BPF register in a
    /// fixed host register): native code in well under a microsecond per
    /// instruction. Programs it does not take (`callx` in checked code,
    /// control that leaves a function otherwise than by a call) are a
    /// [`JitError::Baseline`].
    Baseline,
    /// The baseline code at once, and Cranelift's in the background: runs
    /// switch to it when it is in ([`JitProgram::wait_optimized`]).
    /// Programs the baseline generator does not take are compiled by
    /// Cranelift before the compile returns.
    Tiered,
}

/// The tier of code a program runs now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeTier {
    /// The baseline generator's code.
    Baseline,
    /// Cranelift's code.
    Optimized,
}

/// The compiled function: `(context, entry pc, r1, r2, r3, r4) -> (r0,
/// status)`, the context a [`JitCtx`] (whose head is the [`ClosedHead`]).
type EntryFn = unsafe extern "C" fn(*mut ClosedHead, u64, u64, u64, u64, u64) -> ClosedReturn;

/// Cranelift's code for a program.
struct Optimized {
    /// The module owning the code; freed on drop. (In a mutex: a module
    /// is not `Sync`.)
    module: Mutex<Option<JITModule>>,
    entry: EntryFn,
    /// Calls out for nothing but memory checks (runs without a host).
    closed: bool,
    /// A leaf ([`userbpf_vm::interp::LeafCode`]).
    leaf: bool,
    asm: Option<String>,
    code_size: usize,
    /// Checked code: loops whose accesses are proven on entry.
    proven_loops: usize,
    /// Loops that copy all rounds but their last in bulk.
    bulk_copies: usize,
    compile_time: Duration,
}

impl Drop for Optimized {
    fn drop(&mut self) {
        let module = match self.module.get_mut() {
            Ok(m) => m.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(m) = module {
            userbpf_vm::own_code::unregister(self.entry as usize as u64);
            // SAFETY: the code is only reachable through the program that
            // owns this (through its `Tiers`), which is being dropped:
            // nothing can run it any more (a VM holds the program, and with
            // it this code, while it runs).
            unsafe { m.free_memory() };
        }
    }
}

/// Executable memory holding the baseline generator's code: mapped
/// writable, filled, then made read-execute (never both); unmapped on
/// drop.
struct ExecCode {
    ptr: *mut u8,
    map_len: usize,
    len: usize,
    /// The code makes no call-out (runs need no host).
    closed: bool,
}

// SAFETY: the mapping is never written after `ExecCode::new` and is owned
// by this value alone.
unsafe impl Send for ExecCode {}
// SAFETY: as above: shared references only read or execute it.
unsafe impl Sync for ExecCode {}

/// One-page mappings of dropped baseline code, kept (inaccessible) for the
/// next programs: reusing one costs two `mprotect`s, where a fresh mapping
/// costs an `mmap` and its page fault.
static SPARE_PAGES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Most pages [`SPARE_PAGES`] keeps.
const MAX_SPARE_PAGES: usize = 64;

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

impl ExecCode {
    /// `code` made executable (`closed`: see [`ExecCode::closed`]).
    fn new(code: &[u8], closed: bool) -> Result<ExecCode, String> {
        let page = page_size();
        let map_len = code.len().max(1).div_ceil(page) * page;
        let spare = if map_len == page {
            match SPARE_PAGES.lock() {
                Ok(mut p) => p.pop(),
                Err(p) => p.into_inner().pop(),
            }
        } else {
            None
        };
        let ptr = match spare {
            Some(p) => {
                // SAFETY: a page of ours (from a dropped `ExecCode`) that
                // nothing runs any more; made writable (and not
                // executable) to be filled.
                if unsafe { libc::mprotect(p as *mut _, page, libc::PROT_READ | libc::PROT_WRITE) }
                    != 0
                {
                    return Err(format!(
                        "mprotect of a code page: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                p as *mut libc::c_void
            }
            None => {
                // SAFETY: an anonymous private mapping; the result is
                // checked.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        map_len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    return Err(format!(
                        "mmap of {map_len} bytes for code: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                p
            }
        };
        let exec = ExecCode {
            ptr: ptr.cast(),
            map_len,
            len: code.len(),
            closed,
        };
        // SAFETY: the mapping has `map_len >= code.len()` writable bytes,
        // and nothing else refers to it. (The rest of a reused page is
        // filled with int3, as the kernel's JIT fills its holes: none of
        // the old code becomes executable again.)
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), exec.ptr, code.len());
            if spare.is_some() {
                std::ptr::write_bytes(exec.ptr.add(code.len()), 0xcc, map_len - code.len());
            }
        }
        userbpf_vm::own_code::register(ptr as u64, map_len as u64);
        // SAFETY: the mapping above, now read-execute.
        if unsafe { libc::mprotect(ptr, map_len, libc::PROT_READ | libc::PROT_EXEC) } != 0 {
            return Err(format!(
                "mprotect of the code: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(exec)
    }
}

impl Drop for ExecCode {
    fn drop(&mut self) {
        userbpf_vm::own_code::unregister(self.ptr as u64);
        if self.map_len == page_size() {
            let mut spare = match SPARE_PAGES.lock() {
                Ok(p) => p,
                Err(p) => p.into_inner(),
            };
            // No access at all until reused: no stale code stays
            // executable.
            let sealed = spare.len() < MAX_SPARE_PAGES && {
                // SAFETY: our page, no longer reachable (see
                // `Optimized`'s drop).
                unsafe { libc::mprotect(self.ptr.cast(), self.map_len, libc::PROT_NONE) == 0 }
            };
            if sealed {
                spare.push(self.ptr as usize);
                return;
            }
        }
        // SAFETY: the mapping `new` made, no longer reachable (see
        // `Optimized`'s drop).
        unsafe { libc::munmap(self.ptr.cast(), self.map_len) };
    }
}

/// A program's first code.
enum FirstCode {
    Baseline(ExecCode),
    Optimized(Box<Optimized>),
}

/// The code of a program, by tier, shared with its background compile.
struct Tiers {
    /// The entry runs take: the baseline code's until Cranelift's is in.
    entry: AtomicUsize,
    baseline: Option<ExecCode>,
    optimized: OnceLock<Optimized>,
    /// Whether the background compile is over (its code in, or failed),
    /// and its signal.
    done: Mutex<bool>,
    signal: Condvar,
    /// `done`, readable without the lock (by VMs deciding whether closed
    /// code may still come).
    finished: std::sync::atomic::AtomicBool,
}

impl Tiers {
    /// The code of a program, runs entering `first`. `done`: no
    /// background compile will come.
    fn new(first: FirstCode, done: bool) -> Tiers {
        let (entry, baseline, optimized) = match first {
            FirstCode::Baseline(b) => (b.ptr as usize, Some(b), OnceLock::new()),
            FirstCode::Optimized(o) => {
                let entry = o.entry as usize;
                let slot = OnceLock::new();
                let _ = slot.set(*o);
                (entry, None, slot)
            }
        };
        Tiers {
            entry: AtomicUsize::new(entry),
            baseline,
            optimized,
            done: Mutex::new(done),
            finished: std::sync::atomic::AtomicBool::new(done),
            signal: Condvar::new(),
        }
    }

    fn entry(&self) -> EntryFn {
        let p = self.entry.load(Ordering::Acquire);
        // SAFETY: `entry` only ever holds the entry of code this value
        // owns (baseline or Cranelift), compiled with the `EntryFn`
        // convention.
        unsafe { std::mem::transmute::<usize, EntryFn>(p) }
    }

    /// Installs Cranelift's code (or notes it failed) and wakes waiters.
    /// Code that is not closed cannot replace closed baseline code: VMs
    /// may call the entry as closed code. (Baseline code that is not
    /// closed runs with a host, which any code takes.)
    fn finish(&self, optimized: Option<Optimized>) {
        let baseline_closed = self.baseline.as_ref().is_none_or(|b| b.closed);
        if let Some(o) = optimized.filter(|o| o.closed || !baseline_closed) {
            let entry = o.entry as usize;
            if self.optimized.set(o).is_ok() {
                self.entry.store(entry, Ordering::Release);
            }
        }
        let mut done = match self.done.lock() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        *done = true;
        self.finished.store(true, Ordering::Release);
        self.signal.notify_all();
    }
}

/// A compiled program.
pub struct JitProgram {
    tiers: Arc<Tiers>,
    checked: bool,
    /// How long the first code took.
    compile_time: Duration,
}

impl std::fmt::Debug for JitProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitProgram")
            .field("checked", &self.checked)
            .field("tier", &self.tier())
            .field("code_size", &self.code_size())
            .finish_non_exhaustive()
    }
}

impl JitProgram {
    /// Whether the code checks accesses (checked mode).
    pub fn is_checked(&self) -> bool {
        self.checked
    }

    /// Cranelift's disassembly, if [`Options::keep_asm`] was set (and
    /// Cranelift compiled the program).
    pub fn asm(&self) -> Option<&str> {
        self.tiers.optimized.get().and_then(|o| o.asm.as_deref())
    }

    /// Bytes of machine code of the code runs take now.
    pub fn code_size(&self) -> usize {
        self.code().len()
    }

    /// The machine code runs take now (for disassemblers: `objdump -D -b
    /// binary -mi386:x86-64`).
    pub fn code(&self) -> &[u8] {
        let (ptr, len) = match (self.tiers.optimized.get(), &self.tiers.baseline) {
            (Some(o), _) => (o.entry as *const u8, o.code_size),
            (None, Some(b)) => (b.ptr.cast_const(), b.len),
            (None, None) => return &[],
        };
        // SAFETY: `ptr` starts `len` bytes of finalized (readable,
        // executable) code that lives as long as `self.tiers`.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// How long the compile took until the program could run (the
    /// baseline generator's time for tiered code).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Checked code: how many loops Cranelift's code enters through a
    /// test that proves their accesses (and, when they are counted, the
    /// budget they need) for the whole loop, running a copy without those
    /// checks; `None` until Cranelift's code is in.
    pub fn proven_loops(&self) -> Option<usize> {
        self.tiers.optimized.get().map(|o| o.proven_loops)
    }

    /// How many loops that copy memory forward, one element a round,
    /// Cranelift's code runs as one `memmove` of all rounds but the last
    /// where it is entered (when the copy is long enough and a `memmove`
    /// has the same effect); `None` until Cranelift's code is in.
    pub fn bulk_copies(&self) -> Option<usize> {
        self.tiers.optimized.get().map(|o| o.bulk_copies)
    }

    /// How long Cranelift took, once its code is in.
    pub fn optimized_compile_time(&self) -> Option<Duration> {
        self.tiers.optimized.get().map(|o| o.compile_time)
    }

    /// The tier of the code runs take now.
    pub fn tier(&self) -> CodeTier {
        if self.tiers.optimized.get().is_some() {
            CodeTier::Optimized
        } else {
            CodeTier::Baseline
        }
    }

    /// Waits for a background compile ([`Tier::Tiered`]) to end; returns
    /// whether runs now take Cranelift's code (false: the program keeps
    /// its baseline code, [`Tier::Baseline`], or Cranelift failed).
    pub fn wait_optimized(&self) -> bool {
        let mut done = match self.tiers.done.lock() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        while !*done {
            done = match self.tiers.signal.wait(done) {
                Ok(d) => d,
                Err(p) => p.into_inner(),
            };
        }
        self.tiers.optimized.get().is_some()
    }
}

impl CompiledProgram for JitProgram {
    fn needs_zeroed_stack(&self) -> bool {
        // Verified code never reads stack it did not write.
        self.checked
    }

    fn closed_may_come(&self) -> bool {
        // Baseline code that calls out, while Cranelift's (which may be
        // closed: it computes array lookups the baseline generator calls
        // for) is on its way.
        self.tiers.baseline.as_ref().is_some_and(|b| !b.closed)
            && self.tiers.optimized.get().is_none()
            && !self.tiers.finished.load(Ordering::Acquire)
    }

    fn leaf_code(&self) -> Option<userbpf_vm::interp::LeafCode> {
        if self.checked {
            return None;
        }
        // (Only Cranelift's code can be a leaf: the final form.)
        if !self.tiers.finished.load(Ordering::Acquire) {
            self.wait_optimized();
        }
        let o = self.tiers.optimized.get()?;
        (o.leaf && o.closed).then_some(userbpf_vm::interp::LeafCode {
            entry: o.entry as usize,
            len: o.code_size,
        })
    }

    fn closed_entry(&self) -> Option<ClosedEntry> {
        /// Sets up a zeroed context for closed runs below `top`.
        ///
        /// # Safety
        /// `head` is a zeroed context of `ctx_words` words.
        unsafe fn init(head: *mut ClosedHead, top: u64) {
            let ctx = head.cast::<JitCtx>();
            // SAFETY: per the contract: a whole `JitCtx`, zeroed (every
            // field a valid value); no host (the code calls out for
            // memory checks only, which record a refusal without one).
            unsafe {
                (*ctx).head.regs[10] = top;
                (*ctx).stack_top = top;
                (*ctx).depth_limit = (MAX_FRAMES - 1) as u64;
                (*ctx).host = std::ptr::null_mut();
            }
        }
        /// The fault a closed run left in its context.
        ///
        /// # Safety
        /// `head` is a context `init` set up, after a run that returned
        /// `status`.
        unsafe fn fault(head: *const ClosedHead, status: u64) -> EngineFault {
            if status != ctx::STATUS_FAULT_RECORD {
                // Closed code has no other way out.
                return EngineFault::InvalidPc { pc: 0 };
            }
            // SAFETY: per the contract; the code wrote the record before
            // returning this status.
            let rec = unsafe { (*head.cast::<JitCtx>()).record };
            ctx::record_fault(rec)
        }
        // (Closed baseline code is only replaced by closed optimised
        // code, see `Tiers::finish`.)
        let closed = match self.tiers.optimized.get() {
            Some(o) => o.closed,
            None => self.tiers.baseline.as_ref().is_none_or(|b| b.closed),
        };
        closed.then_some(ClosedEntry {
            code: &self.tiers.entry,
            ctx_words: std::mem::size_of::<JitCtx>().div_ceil(8),
            init,
            fault,
            zeroed_stack: self.checked,
            checked: self.checked,
        })
    }

    fn run(&self, run: &mut EngineRun<'_>, entry: usize) -> Result<EngineStop, Box<Fault>> {
        let seed = frame_seed(run.stack_top());
        let r = run.regs();
        let args = [r[1], r[2], r[3], r[4]];
        self.enter(run, entry, seed, args, |regs, run| {
            // Word by word: the VM has just written these one word at a
            // time, and wider loads would stall on store forwarding.
            let src = run.regs().as_ptr();
            for i in 0..11 {
                // SAFETY: `i < 11`: inside both register arrays.
                unsafe {
                    std::ptr::write_volatile(regs.add(i), std::ptr::read_volatile(src.add(i)))
                };
            }
        })
    }

    fn start(
        &self,
        run: &mut EngineRun<'_>,
        args: &[u64; 5],
        entry: usize,
    ) -> Result<EngineStop, Box<Fault>> {
        let top = run.stack_top();
        let seed = if self.checked {
            context_seed(run, args[0], top)
        } else {
            [0; 4]
        };
        let params = [args[0], args[1], args[2], args[3]];
        self.enter(run, entry, seed, params, |regs, _| {
            let v = [
                0, args[0], args[1], args[2], args[3], args[4], 0, 0, 0, 0, top,
            ];
            for (i, v) in v.into_iter().enumerate() {
                // SAFETY: `i < 11`: inside the register array; one word
                // at a time (see `JitCtx::init`).
                unsafe { std::ptr::write_volatile(regs.add(i), v) };
            }
        })
    }
}

/// The inline checks' first regions: the first frame, `[top - 512,
/// top)`, for reads and writes.
fn frame_seed(top: u64) -> [u64; 4] {
    ClosedHead::seed_for(None, top)
}

/// The inline checks' first regions for a run whose `r1` is `r1`: the
/// region `r1` points into (the context, where most accesses go).
fn context_seed(run: &EngineRun<'_>, r1: u64, top: u64) -> [u64; 4] {
    ClosedHead::seed_for(run.region_for(r1, 1, Access::Read).as_ref(), top)
}

impl JitProgram {
    /// Runs the code from `entry` with the registers `init` sets.
    #[inline(always)]
    fn enter(
        &self,
        run: &mut EngineRun<'_>,
        entry: usize,
        seed: [u64; 4],
        args: [u64; 4],
        init: impl FnOnce(*mut u64, &mut EngineRun<'_>),
    ) -> Result<EngineStop, Box<Fault>> {
        let prog = run.program();
        let budget = *run.budget();
        let stack_top = run.stack_top();
        let base = run.base_depth();
        let mut slot = std::mem::MaybeUninit::uninit();
        let ctx = JitCtx::init(
            &mut slot,
            budget,
            stack_top,
            (MAX_FRAMES - 1).saturating_sub(base) as u64,
            seed,
            |regs| init(regs, run),
        );
        // Dropped by hand: only a fault or a tail call leaves something in
        // it, and a drop call per run is measurable.
        let mut host = std::mem::ManuallyDrop::new(Host {
            run,
            prog,
            fault: None,
            tail: None,
        });
        // SAFETY: `ctx` points into `slot`, alive until the end of this
        // function; `host` outlives the call.
        let ClosedReturn { status, r0 } = unsafe {
            std::ptr::write_volatile(
                std::ptr::addr_of_mut!((*ctx).host),
                (&mut *host as *mut Host<'_, '_>).cast(),
            );
            (self.tiers.entry())(ctx.cast(), entry as u64, args[0], args[1], args[2], args[3])
        };
        let host = &mut *host;
        // SAFETY: the fields the code keeps current, read at their width.
        let (budget, max_depth) = unsafe {
            (
                std::ptr::read_volatile(std::ptr::addr_of!((*ctx).head.budget)),
                std::ptr::read_volatile(std::ptr::addr_of!((*ctx).head.max_depth)),
            )
        };
        *host.run.budget() = budget;
        host.run.note_depth(base + max_depth as usize);
        match status {
            ctx::STATUS_OK | ctx::STATUS_EXIT => Ok(EngineStop::Exit(r0)),
            ctx::STATUS_TAIL_CALL => match host.tail.take() {
                Some(t) => {
                    // The target starts from every register.
                    copy_regs(ctx, host.run);
                    Ok(EngineStop::TailCall(t))
                }
                None => Err(Box::new(host.run.fault(
                    host.prog,
                    0,
                    0,
                    0,
                    userbpf_vm::interp::FaultKind::InvalidPc,
                ))),
            },
            ctx::STATUS_RESUME => {
                copy_regs(ctx, host.run);
                Ok(EngineStop::Resume(r0 as usize))
            }
            ctx::STATUS_FAULT_RECORD => {
                // SAFETY: the code wrote the record before this status.
                let rec = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*ctx).record)) };
                Err(Box::new(
                    host.run.engine_fault(host.prog, ctx::record_fault(rec)),
                ))
            }
            _ => Err(match host.fault.take() {
                Some(f) => f,
                None => Box::new(host.run.fault(
                    host.prog,
                    0,
                    0,
                    0,
                    userbpf_vm::interp::FaultKind::InvalidPc,
                )),
            }),
        }
    }
}

/// Copies every register the code stored in `ctx` (before a tail call or
/// a stop for the interpreter) into the run's.
fn copy_regs(ctx: *const JitCtx, run: &mut EngineRun<'_>) {
    let dst = run.regs().as_mut_ptr();
    for i in 0..11 {
        // SAFETY: `i < 11 <= 16`: inside both register arrays (`ctx` is
        // the run's live context, whose registers the code stored); word by
        // word, as the code wrote them.
        unsafe {
            std::ptr::write_volatile(
                dst.add(i),
                std::ptr::read_volatile(std::ptr::addr_of!((*ctx).head.regs[i])),
            )
        };
    }
}

/// Compiles `prog` in checked mode, with the code generator(s) of
/// [`Options::tier`].
pub fn compile_checked(
    prog: &Arc<PreparedProgram>,
    options: Options,
) -> Result<JitProgram, JitError> {
    compile(prog, Checks::On, options)
}

/// Compiles a verified program without run-time checks, with the code
/// generator(s) of [`Options::tier`].
pub fn compile_verified(
    prog: &Verified<Arc<PreparedProgram>>,
    options: Options,
) -> Result<JitProgram, JitError> {
    compile(prog, Checks::Off, options)
}

fn compile(
    prog: &Arc<PreparedProgram>,
    checks: Checks,
    options: Options,
) -> Result<JitProgram, JitError> {
    let checked = checks == Checks::On;
    if options.tier == Tier::Optimized {
        return Ok(settled(cranelift(prog, checks, options)?, checked));
    }
    let start = Instant::now();
    let base = match baseline(prog, checked) {
        Ok(b) => b,
        // Not for the baseline generator: Cranelift now.
        Err(JitError::Baseline { .. }) if options.tier == Tier::Tiered => {
            return Ok(settled(cranelift(prog, checks, options)?, checked));
        }
        Err(e) => return Err(e),
    };
    let tiers = Arc::new(Tiers::new(
        FirstCode::Baseline(base),
        options.tier == Tier::Baseline,
    ));
    if options.tier == Tier::Tiered {
        let (p, t) = (Arc::clone(prog), Arc::clone(&tiers));
        let job: Job = Box::new(move || {
            // (A panic in Cranelift leaves the program its baseline code.)
            let o = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                cranelift(&p, checks, options)
            }));
            t.finish(o.ok().and_then(Result::ok));
        });
        if let Err(job) = in_background(job) {
            // No background thread: the optimised code now.
            job();
        }
    }
    Ok(JitProgram {
        tiers,
        checked,
        compile_time: start.elapsed(),
    })
}

/// A program around Cranelift's code alone.
fn settled(o: Optimized, checked: bool) -> JitProgram {
    let compile_time = o.compile_time;
    JitProgram {
        tiers: Arc::new(Tiers::new(FirstCode::Optimized(Box::new(o)), true)),
        checked,
        compile_time,
    }
}

/// The baseline generator's code for `prog` (`checked`: with the checks
/// of checked mode).
fn baseline(prog: &PreparedProgram, checked: bool) -> Result<ExecCode, JitError> {
    let name = || prog.name().to_string();
    if prog.len() > MAX_JIT_INSNS {
        return Err(JitError::TooLarge {
            program: name(),
            insns: prog.len(),
            limit: MAX_JIT_INSNS,
        });
    }
    let shape = Shape::of(prog)?;
    let trampoline = if checked {
        Some(check_trampoline().map_err(|message| JitError::Codegen {
            program: name(),
            message,
        })?)
    } else {
        None
    };
    let generated =
        baseline::generate(&shape, prog, &codegen::LAYOUT, trampoline).map_err(|e| {
            JitError::Baseline {
                program: name(),
                reason: e.0,
            }
        })?;
    ExecCode::new(&generated.code, generated.closed).map_err(|message| JitError::Codegen {
        program: name(),
        message,
    })
}

/// Work for the background compile thread.
type Job = Box<dyn FnOnce() + Send>;

/// Hands `job` to the process's background compile thread (started on
/// first use, and again in a child after `fork`, which copies the channel
/// but not the thread); gives it back if no thread can be started.
fn in_background(job: Job) -> Result<(), Job> {
    static WORKER: Mutex<Option<(u32, mpsc::Sender<Job>)>> = Mutex::new(None);
    let mut worker = match WORKER.lock() {
        Ok(w) => w,
        Err(p) => p.into_inner(),
    };
    let pid = std::process::id();
    if worker.as_ref().is_none_or(|(owner, _)| *owner != pid) {
        if let Some((_, parents)) = worker.take() {
            // (A copy of the parent's channel: nothing of it is touched,
            // its receiving thread did not come across the fork.)
            std::mem::forget(parents);
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("userbpf-jit".into())
            .spawn(move || {
                // Userbpf's own work: in-process hooks do not see it.
                userbpf_vm::quiet::thread();
                for job in rx {
                    job();
                }
            });
        if started.is_err() {
            return Err(job);
        }
        *worker = Some((pid, tx));
    }
    match worker.as_ref() {
        Some((_, tx)) => tx.send(job).map_err(|e| e.0),
        None => Err(job),
    }
}

/// Compiles `prog` with Cranelift.
fn cranelift(
    prog: &PreparedProgram,
    checks: Checks,
    options: Options,
) -> Result<Optimized, JitError> {
    let start = Instant::now();
    let name = prog.name().to_string();
    if prog.len() > MAX_JIT_INSNS {
        return Err(JitError::TooLarge {
            program: name,
            insns: prog.len(),
            limit: MAX_JIT_INSNS,
        });
    }
    let cg = |message: String| JitError::Codegen {
        program: name.clone(),
        message,
    };
    // Large programs skip Cranelift's e-graph optimisations, whose cost
    // grows faster than the program.
    let optimize = prog.len() <= OPTIMIZE_UP_TO;
    let isa = host_isa(optimize).map_err(cg)?;
    let call_conv = isa.default_call_conv();
    let frontend = isa.frontend_config();
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let shape = Shape::of(prog)?;
    let check = check_trampoline().map_err(cg)?;
    // Compilation contexts are reused (per thread): their allocations
    // are a good part of compiling a small program.
    thread_local! {
        static CONTEXTS: std::cell::RefCell<Option<(cranelift_codegen::Context, FunctionBuilderContext)>> =
            const { std::cell::RefCell::new(None) };
    }
    let (mut cctx, mut fbc) = CONTEXTS
        .with(|c| c.borrow_mut().take())
        .unwrap_or_else(|| (module.make_context(), FunctionBuilderContext::new()));
    cctx.clear();
    cctx.func.signature = codegen::entry_signature(call_conv);
    let compiled = (|| {
        let id = module
            .declare_anonymous_function(&cctx.func.signature)
            .map_err(|e| cg(e.to_string()))?;
        let translated = {
            let mut b = FunctionBuilder::new(&mut cctx.func, &mut fbc);
            // Lookup tables: read-only data of the module, addressed
            // absolutely (the module's data and code need not be near).
            let mut data = |func: &mut cranelift_codegen::ir::Function, bytes: Box<[u8]>| {
                let id = module
                    .declare_anonymous_data(false, false)
                    .map_err(|e| e.to_string())?;
                let mut desc = DataDescription::new();
                desc.define(bytes);
                desc.set_align(8);
                module.define_data(id, &desc).map_err(|e| e.to_string())?;
                let gv = module.declare_data_in_func(id, func);
                if let GlobalValueData::Symbol { colocated, .. } = &mut func.global_values[gv] {
                    *colocated = false;
                }
                Ok(gv)
            };
            let translated =
                Translator::new(prog, &shape, checks, &mut b, call_conv, check, &mut data)
                    .translate()?;
            b.finalize(frontend);
            translated
        };
        cctx.set_disasm(options.keep_asm);
        module
            .define_function(id, &mut cctx)
            .map_err(|e| cg(format!("{e:?}")))?;
        let asm = cctx.compiled_code().and_then(|c| c.vcode.clone());
        let code_size = cctx
            .compiled_code()
            .map(|c| c.code_buffer().len())
            .unwrap_or(0);
        Ok::<_, JitError>((id, asm, code_size, translated))
    })();
    module.clear_context(&mut cctx);
    CONTEXTS.with(|c| *c.borrow_mut() = Some((cctx, fbc)));
    let (id, asm, code_size, translated) = compiled?;
    userbpf_vm::own_code::scope(|| module.finalize_definitions().map_err(|e| e.to_string()))
        .map_err(cg)?;
    let ptr = module.get_finalized_function(id);
    userbpf_vm::own_code::register(ptr as u64, code_size as u64);
    // SAFETY: the function was compiled with `entry_signature`, the
    // platform's C calling convention, and lives as long as `module`.
    let entry = unsafe { std::mem::transmute::<*const u8, EntryFn>(ptr) };
    Ok(Optimized {
        module: Mutex::new(Some(module)),
        entry,
        closed: translated.closed,
        leaf: translated.leaf,
        asm,
        code_size,
        proven_loops: translated.proven_loops,
        bulk_copies: translated.bulk_copies,
        compile_time: start.elapsed(),
    })
}

/// Compiles `prog` in checked mode and attaches the code to it, so every
/// VM running it uses the JIT. Returns the code.
pub fn jit_checked(
    prog: &Arc<PreparedProgram>,
    options: Options,
) -> Result<Arc<JitProgram>, JitError> {
    let code = Arc::new(compile_checked(prog, options)?);
    let _ = prog.set_compiled(Arc::clone(&code) as Arc<dyn CompiledProgram>);
    Ok(code)
}

/// [`jit_checked`] for a verified program, without run-time checks.
pub fn jit_verified(
    prog: &Verified<Arc<PreparedProgram>>,
    options: Options,
) -> Result<Arc<JitProgram>, JitError> {
    let code = Arc::new(compile_verified(prog, options)?);
    let _ = prog.set_compiled(Arc::clone(&code) as Arc<dyn CompiledProgram>);
    Ok(code)
}
