//! Helper functions: registration by id, prototypes, and the context a helper
//! sees while it runs.
//!
//! Helper ids are the kernel's (`BPF_FUNC_*`, see [`crate::helper_names`])
//! unless an embedder chooses its own ids for its own helpers. Each helper has
//! one [`HelperProto`]; in checked mode the engine checks every pointer
//! argument against it before the helper runs.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::memory::{Access, AccessError, MemoryMap, Region};

/// A helper implemented as a plain C-ABI function of `r1..r5` returning `r0`.
pub type NativeHelper = extern "C" fn(u64, u64, u64, u64, u64) -> u64;

/// The signature of helpers that use the [`HelperContext`].
pub type HelperFn =
    dyn Fn(&mut HelperContext<'_>, [u64; 5]) -> Result<u64, HelperError> + Send + Sync;

/// How many bytes a pointer argument covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgSize {
    /// A fixed number of bytes.
    Fixed(u32),
    /// The value of another argument (0-based index: 0 is `r1`).
    Arg(usize),
}

/// The type of one helper argument, as far as run-time checks need it (the
/// verifier extends this with the kernel's full `bpf_arg_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgKind {
    /// Any value (`ARG_ANYTHING`, scalars, map pointers, the context).
    Anything,
    /// A pointer to memory of the given size that the helper reads
    /// (`ARG_PTR_TO_MEM | MEM_RDONLY`).
    ReadMem {
        /// Bytes covered.
        size: ArgSize,
        /// Whether NULL (with size 0) is allowed.
        nullable: bool,
    },
    /// A pointer to memory the helper writes (`ARG_PTR_TO_UNINIT_MEM`).
    WriteMem {
        /// Bytes covered.
        size: ArgSize,
        /// Whether NULL (with size 0) is allowed.
        nullable: bool,
    },
}

/// A helper's prototype: the kinds of its (up to five) arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HelperProto {
    /// `r1..r5`; unused arguments are [`ArgKind::Anything`].
    pub args: [ArgKind; 5],
}

impl HelperProto {
    /// Five scalar arguments: nothing to check.
    pub const SCALARS: HelperProto = HelperProto {
        args: [ArgKind::Anything; 5],
    };

    /// Whether any argument is a pointer (not [`ArgKind::Anything`]).
    pub fn has_pointers(&self) -> bool {
        self.args.iter().any(|a| *a != ArgKind::Anything)
    }

    /// A prototype with the given leading argument kinds.
    pub fn new(kinds: &[ArgKind]) -> HelperProto {
        let mut args = [ArgKind::Anything; 5];
        for (slot, k) in args.iter_mut().zip(kinds) {
            *slot = *k;
        }
        HelperProto { args }
    }
}

/// An error a helper reports; the run stops with a fault naming the helper.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelperError {
    /// The helper refused its arguments or failed.
    #[error("{0}")]
    Failed(String),
    /// The helper accessed memory outside every region.
    #[error("helper {access} of {len} bytes at {addr:#x} is outside the program's memory")]
    BadAccess {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
        /// Read or write.
        access: Access,
    },
    /// The helper panicked (the panic was caught).
    #[error("helper panicked: {0}")]
    Panicked(String),
}

/// What the hook that runs a program knows about the event, for the
/// helpers that ask about it. The hook (a uprobe shim, the CLI, an
/// embedder) sets it with [`crate::Vm::set_hook_info`] before a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookInfo {
    /// `bpf_get_attach_cookie` (174): the cookie given at attach time.
    pub attach_cookie: u64,
    /// `bpf_get_func_ip` (173): the address of the probed function or
    /// instruction.
    pub func_ip: u64,
    /// For programs whose context is the traced function's arguments as an
    /// array of `u64` (fentry/fexit style, the return value after the
    /// arguments): how many arguments there are. `bpf_get_func_arg` (183),
    /// `bpf_get_func_ret` (184) and `bpf_get_func_arg_cnt` (185) need it.
    pub func_arg_count: Option<u32>,
    /// Whether the return value follows the arguments in the context
    /// (fexit style), for `bpf_get_func_ret`.
    pub func_has_ret: bool,
    /// The user-space registers at the event (`struct pt_regs`, x86-64
    /// layout), for `bpf_get_stack` (67) and `bpf_get_stackid` (27) with
    /// `BPF_F_USER_STACK`. Usually the context of uprobe, USDT and
    /// perf_event programs.
    pub user_regs: Option<u64>,
}

/// Drives a helper that calls back into the program, as
/// `bpf_for_each_map_elem` (164) does: the engine calls the callback with
/// the arguments [`CallbackDriver::next`] returns until it returns `None`,
/// then the helper returns [`CallbackDriver::result`].
pub trait CallbackDriver: Send {
    /// `r1..r5` of the next callback call, or `None` to stop. `last_r0` is
    /// what the previous call returned (`None` before the first).
    fn next(
        &mut self,
        ctx: &mut HelperContext<'_>,
        last_r0: Option<u64>,
    ) -> Result<Option<[u64; 5]>, HelperError>;
    /// The helper's return value once the iteration ends.
    fn result(&self) -> u64;
}

/// What a run of the program has to say to its hook besides `r0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOutcome {
    /// Set by `bpf_override_return` (58): the hook must make the probed
    /// function return this value without running it.
    pub override_return: Option<u64>,
}

/// The hook's facts and the run's outcome, for the helpers of one run.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RunEnv {
    pub(crate) hook: HookInfo,
    pub(crate) outcome: RunOutcome,
}

/// What a helper can do besides computing `r0`: access the program's memory
/// (checked), grant memory to the program, call back into the program, or
/// end the program.
pub struct HelperContext<'a> {
    pub(crate) mem: &'a mut MemoryMap,
    pub(crate) exit: Option<u64>,
    pub(crate) env: &'a mut RunEnv,
    pub(crate) callbacks: Option<(u64, Box<dyn CallbackDriver>)>,
    pub(crate) program: Option<&'a Arc<crate::interp::PreparedProgram>>,
}

impl fmt::Debug for HelperContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HelperContext")
            .field("exit", &self.exit)
            .finish_non_exhaustive()
    }
}

impl<'a> HelperContext<'a> {
    #[inline(always)]
    pub(crate) fn new(
        mem: &'a mut MemoryMap,
        env: &'a mut RunEnv,
        program: Option<&'a Arc<crate::interp::PreparedProgram>>,
    ) -> HelperContext<'a> {
        HelperContext {
            mem,
            exit: None,
            env,
            callbacks: None,
            program,
        }
    }

    /// The program that called the helper (its callbacks are subprograms
    /// of it, see [`crate::Vm::run_subprogram`]); `None` outside a run.
    pub fn program(&self) -> Option<&Arc<crate::interp::PreparedProgram>> {
        self.program
    }

    /// What the hook knows about the event (see [`HookInfo`]).
    pub fn hook(&self) -> &HookInfo {
        &self.env.hook
    }

    /// Asks the hook to make the probed function return `value`
    /// (`bpf_override_return`).
    pub fn set_override_return(&mut self, value: u64) {
        self.env.outcome.override_return = Some(value);
    }

    /// The value the hook will make the probed function return, if a
    /// helper asked for one during this run.
    pub fn override_return(&self) -> Option<u64> {
        self.env.outcome.override_return
    }

    /// After this helper returns, calls the subprogram at `callback` (a
    /// `lddw src=4` value) with the arguments `driver` yields; the helper's
    /// `r0` becomes `driver.result()`. A callback address that is not a
    /// subprogram of the running program is a fault.
    pub fn call_back(&mut self, callback: u64, driver: Box<dyn CallbackDriver>) {
        self.callbacks = Some((callback, driver));
    }

    #[inline]
    fn check(&self, addr: u64, len: u64, access: Access) -> Result<(), HelperError> {
        if len == 0 {
            // Nothing is touched.
            return Ok(());
        }
        match self.mem.check(addr, len, access) {
            Ok(_) => Ok(()),
            Err(AccessError::Unmapped | AccessError::ReadOnly(_)) => {
                Err(HelperError::BadAccess { addr, len, access })
            }
        }
    }

    /// Copies `buf.len()` bytes from program memory at `addr`.
    pub fn read_into(&self, addr: u64, buf: &mut [u8]) -> Result<(), HelperError> {
        self.check(addr, buf.len() as u64, Access::Read)?;
        // SAFETY: the range was checked to lie inside a region (or the live
        // stack) that the embedder guaranteed valid for the run.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Program memory at `addr` as a slice, valid while the helper runs
    /// (no copy: for keys and other read-only arguments).
    #[inline]
    pub fn bytes(&self, addr: u64, len: usize) -> Result<&[u8], HelperError> {
        self.mem.readable(addr, len).ok_or(HelperError::BadAccess {
            addr,
            len: len as u64,
            access: Access::Read,
        })
    }

    /// Writable program memory at `addr` as a slice, valid while the helper
    /// runs (no copy: for helpers that fill a buffer the program passed).
    #[inline]
    pub fn bytes_mut(&mut self, addr: u64, len: usize) -> Result<&mut [u8], HelperError> {
        self.check(addr, len as u64, Access::Write)?;
        if len == 0 {
            return Ok(&mut []);
        }
        // SAFETY: the range was checked to lie inside a writable region (or
        // the live stack) that the embedder guaranteed valid for the run;
        // the borrow of `self` keeps this context's other accessors away
        // while the slice lives.
        Ok(unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) })
    }

    /// Reads `len` bytes from program memory at `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, HelperError> {
        let mut v = vec![0; len];
        self.read_into(addr, &mut v)?;
        Ok(v)
    }

    /// Writes `data` to program memory at `addr`.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), HelperError> {
        self.check(addr, data.len() as u64, Access::Write)?;
        // SAFETY: the range was checked to lie inside a writable region (or
        // the live stack) that the embedder guaranteed valid for the run.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
        Ok(())
    }

    /// Reads a NUL-terminated string of at most `max` bytes (without the NUL).
    pub fn read_cstr(&self, addr: u64, max: usize) -> Result<Vec<u8>, HelperError> {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        for i in 0..max as u64 {
            self.read_into(addr.wrapping_add(i), &mut b)?;
            if b[0] == 0 {
                break;
            }
            out.push(b[0]);
        }
        Ok(out)
    }

    /// Makes `region` accessible to the program until the run ends (for
    /// helpers that return pointers).
    ///
    /// # Safety
    /// The memory must stay valid (and, if `writable`, writable) until the
    /// current run returns.
    pub unsafe fn grant(&mut self, region: Region) {
        self.mem.add_transient(region);
    }

    /// Hands `buf` to the program for the rest of the run (read-only unless
    /// `writable`) and returns its address; it is freed when the run ends.
    pub fn grant_owned(&mut self, buf: Box<[u8]>, writable: bool) -> u64 {
        self.mem
            .add_owned(buf, writable, crate::memory::RegionKind::HelperMemory)
    }

    /// Copies `data` into memory [`HelperContext::grant_owned`] handed out
    /// before (an address and length it returned). Errors if the range is
    /// not inside such a buffer.
    pub fn write_owned(&mut self, addr: u64, data: &[u8]) -> Result<(), HelperError> {
        self.mem
            .write_owned(addr, data)
            .ok_or(HelperError::BadAccess {
                addr,
                len: data.len() as u64,
                access: Access::Write,
            })
    }

    /// Ends the program after this helper returns, with `r0` as its result
    /// (used by the conformance suite's `unwind` helper).
    pub fn exit(&mut self, r0: u64) {
        self.exit = Some(r0);
    }
}

#[derive(Clone)]
enum HelperImpl {
    Native(NativeHelper),
    Closure(Arc<HelperFn>),
}

/// One registered helper.
#[derive(Clone)]
pub struct Helper {
    id: i32,
    name: Arc<str>,
    proto: HelperProto,
    imp: HelperImpl,
    /// Whether any argument is a pointer the engine must check.
    has_pointers: bool,
}

impl fmt::Debug for Helper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Helper")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("proto", &self.proto)
            .finish_non_exhaustive()
    }
}

impl Helper {
    /// The helper id.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The helper's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The helper's prototype.
    pub fn proto(&self) -> &HelperProto {
        &self.proto
    }

    /// Whether the engine must check pointer arguments before calling it.
    #[inline(always)]
    pub fn has_pointers(&self) -> bool {
        self.has_pointers
    }

    /// Calls the helper. Panics inside closures are caught and reported.
    #[inline]
    pub fn call(&self, ctx: &mut HelperContext<'_>, args: [u64; 5]) -> Result<u64, HelperError> {
        match &self.imp {
            HelperImpl::Native(f) => Ok(f(args[0], args[1], args[2], args[3], args[4])),
            HelperImpl::Closure(f) => match catch_unwind(AssertUnwindSafe(|| f(ctx, args))) {
                Ok(r) => r,
                Err(payload) => Err(panic_error(payload)),
            },
        }
    }
}

#[cold]
#[inline(never)]
fn panic_error(payload: Box<dyn std::any::Any + Send>) -> HelperError {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string());
    HelperError::Panicked(msg)
}

/// The set of helpers available to a program, by id.
#[derive(Clone, Debug, Default)]
pub struct Helpers {
    by_id: BTreeMap<i32, Helper>,
    kfuncs: BTreeMap<i32, Helper>,
}

impl Helpers {
    /// No helpers.
    pub fn new() -> Helpers {
        Helpers::default()
    }

    fn insert(&mut self, id: i32, name: &str, proto: HelperProto, imp: HelperImpl) -> &mut Self {
        self.by_id.insert(
            id,
            Helper {
                id,
                name: Arc::from(name),
                proto,
                imp,
                has_pointers: proto.has_pointers(),
            },
        );
        self
    }

    /// Registers a C-ABI function with scalar arguments under `id`
    /// (replacing any helper with that id). A panic inside it aborts the
    /// process, as any panic across `extern "C"` does.
    pub fn register_native(&mut self, id: i32, name: &str, f: NativeHelper) -> &mut Self {
        self.insert(id, name, HelperProto::SCALARS, HelperImpl::Native(f))
    }

    /// Registers a closure of `r1..r5` with scalar arguments.
    pub fn register_fn(
        &mut self,
        id: i32,
        name: &str,
        f: impl Fn(u64, u64, u64, u64, u64) -> u64 + Send + Sync + 'static,
    ) -> &mut Self {
        self.register(id, name, HelperProto::SCALARS, move |_, a| {
            Ok(f(a[0], a[1], a[2], a[3], a[4]))
        })
    }

    /// Registers kernel helper `id` under its kernel name and prototype
    /// (from [`crate::proto`], the table the verifier uses too).
    pub fn register_kernel(
        &mut self,
        id: i32,
        f: impl Fn(&mut HelperContext<'_>, [u64; 5]) -> Result<u64, HelperError> + Send + Sync + 'static,
    ) -> &mut Self {
        let (name, proto) = match crate::proto::kernel_proto(id) {
            Some(p) => (p.name(), p.runtime()),
            None => (
                crate::helper_names::helper_name(id).unwrap_or("bpf_unknown"),
                HelperProto::SCALARS,
            ),
        };
        self.insert(id, name, proto, HelperImpl::Closure(Arc::new(f)))
    }

    /// [`Helpers::register_kernel`] for a helper of scalars only.
    pub fn register_kernel_fn(
        &mut self,
        id: i32,
        f: impl Fn(u64, u64, u64, u64, u64) -> u64 + Send + Sync + 'static,
    ) -> &mut Self {
        self.register_kernel(id, move |_, a| Ok(f(a[0], a[1], a[2], a[3], a[4])))
    }

    /// Registers a closure that uses the [`HelperContext`], with a prototype
    /// whose pointer arguments the engine checks before each call.
    pub fn register(
        &mut self,
        id: i32,
        name: &str,
        proto: HelperProto,
        f: impl Fn(&mut HelperContext<'_>, [u64; 5]) -> Result<u64, HelperError> + Send + Sync + 'static,
    ) -> &mut Self {
        self.insert(id, name, proto, HelperImpl::Closure(Arc::new(f)))
    }

    /// Registers kfunc `id` (a userbpf kfunc id, see [`crate::kfunc`]),
    /// called by `call src=2` instructions whose `imm` is `id`.
    pub fn register_kfunc(
        &mut self,
        id: i32,
        name: &str,
        proto: HelperProto,
        f: impl Fn(&mut HelperContext<'_>, [u64; 5]) -> Result<u64, HelperError> + Send + Sync + 'static,
    ) -> &mut Self {
        self.kfuncs.insert(
            id,
            Helper {
                id,
                name: Arc::from(name),
                proto,
                imp: HelperImpl::Closure(Arc::new(f)),
                has_pointers: proto.has_pointers(),
            },
        );
        self
    }

    /// The kfunc registered under `id`.
    pub fn kfunc(&self, id: i32) -> Option<&Helper> {
        self.kfuncs.get(&id)
    }

    /// The helper with this id.
    pub fn get(&self, id: i32) -> Option<&Helper> {
        self.by_id.get(&id)
    }

    /// Removes the helper with this id.
    pub fn remove(&mut self, id: i32) -> Option<Helper> {
        self.by_id.remove(&id)
    }

    /// All helpers, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Helper> {
        self.by_id.values()
    }

    /// Adds (or replaces) every helper of `other`.
    pub fn extend(&mut self, other: &Helpers) -> &mut Self {
        for h in other.iter() {
            self.by_id.insert(h.id, h.clone());
        }
        for h in other.kfuncs.values() {
            self.kfuncs.insert(h.id, h.clone());
        }
        self
    }

    /// [`Helpers::kernel_basics_with_trace`] with `bpf_trace_printk`
    /// output on standard error.
    pub fn kernel_basics() -> Helpers {
        Helpers::kernel_basics_with_trace(stderr_sink())
    }

    /// The helpers of the kernel that need no maps and no hook context,
    /// under their kernel ids: `bpf_probe_read` (4), `bpf_ktime_get_ns`
    /// (5), `bpf_trace_printk` (6), `bpf_get_prandom_u32` (7),
    /// `bpf_get_smp_processor_id` (8), `bpf_get_current_pid_tgid` (14),
    /// `bpf_get_current_uid_gid` (15), `bpf_get_current_comm` (16),
    /// `bpf_probe_read_str` (45), `bpf_override_return` (58),
    /// `bpf_get_stack` (67), `bpf_send_signal` (109),
    /// `bpf_send_signal_thread` (117), `bpf_jiffies64` (118),
    /// `bpf_get_func_ip` (173), `bpf_get_attach_cookie` (174),
    /// `bpf_get_func_arg`/`_ret`/`_arg_cnt` (183-185) (those that ask
    /// about the event read the VM's [`HookInfo`]),
    /// `bpf_probe_read_user`/`_kernel` (112, 113) and their `_str` forms (114,
    /// 115), `bpf_copy_from_user` (148), `bpf_ktime_get_boot_ns` (125), `bpf_ktime_get_coarse_ns` (160),
    /// `bpf_snprintf` (165), `bpf_trace_vprintk` (177), `bpf_strncmp` (182),
    /// `bpf_get_numa_node_id` (42), `bpf_ktime_get_tai_ns` (208), and the
    /// local dynptr helpers (197, 201-203, [`crate::dynptr`]).
    /// In user space the probe helpers read the process's own memory and
    /// return `-EFAULT` (never crash) on a bad address; writing it
    /// (`bpf_probe_write_user`) is opt-in, see [`Helpers::probe_write_user`].
    /// `trace_printk` output goes to `sink`, one call per message.
    pub fn kernel_basics_with_trace(sink: TraceSink) -> Helpers {
        let mut h = Helpers::new();
        register_probe_helpers(&mut h);
        register_printk_helpers(&mut h, sink);
        h.register_kernel_fn(5, |_, _, _, _, _| clock_ns(libc::CLOCK_MONOTONIC));
        h.register_kernel_fn(7, |_, _, _, _, _| u64::from(prandom_u32()));
        h.register_kernel_fn(8, |_, _, _, _, _| {
            // SAFETY: sched_getcpu has no preconditions.
            let cpu = unsafe { libc::sched_getcpu() };
            // Below ncpus(), as the verifier assumes (the kernel's
            // nr_cpu_ids - 1 bound on the result).
            let last = crate::maps::percpu::ncpus().saturating_sub(1);
            u64::try_from(cpu).unwrap_or(0).min(last as u64)
        });
        h.register_kernel_fn(14, |_, _, _, _, _| crate::identity::pid_tgid());
        h.register_kernel_fn(15, |_, _, _, _, _| {
            // SAFETY: getuid and getgid have no preconditions.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            (u64::from(gid) << 32) | u64::from(uid)
        });
        h.register_kernel(16, |ctx, a| {
            let size = a[1] as usize;
            if size == 0 {
                return Ok(neg_errno(libc::EINVAL));
            }
            let (comm, len) = current_comm();
            let dst = ctx.bytes_mut(a[0], size)?;
            let n = len.min(size - 1);
            dst[..n].copy_from_slice(&comm[..n]);
            dst[n..].fill(0);
            Ok(0)
        });
        h.register_kernel_fn(125, |_, _, _, _, _| clock_ns(libc::CLOCK_BOOTTIME));
        h.register_kernel_fn(160, |_, _, _, _, _| clock_ns(libc::CLOCK_MONOTONIC_COARSE));
        h.register_kernel_fn(208, |_, _, _, _, _| clock_ns(libc::CLOCK_TAI));
        h.register_kernel_fn(42, |_, _, _, _, _| u64::from(numa_node()));
        crate::tracing::register(&mut h);
        crate::stack::register(&mut h);
        crate::kfunc::register(&mut h);
        crate::dynptr::register(&mut h);
        h
    }
}

/// Where `bpf_trace_printk` output goes: one call per message.
pub type TraceSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// A sink writing each message to standard error (with a newline if the
/// message has none).
pub fn stderr_sink() -> TraceSink {
    Arc::new(|msg: &[u8]| {
        use std::io::Write;
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(msg);
        if !msg.ends_with(b"\n") {
            let _ = e.write_all(b"\n");
        }
    })
}

fn register_probe_helpers(h: &mut Helpers) {
    // bpf_probe_read, bpf_probe_read_user, bpf_probe_read_kernel, and
    // bpf_copy_from_user (sleepable programs'): straight into the
    // program's buffer, no allocation (a probe on `malloc` may call them).
    for id in [4, 112, 113, 148] {
        h.register_kernel(id, |ctx, a| {
            let n = a[1] as usize;
            // Memory the run knows (its stack, its context, map values:
            // a `usdt.bpf.h` register read) is copied without a syscall.
            if let Ok(src) = ctx.bytes(a[2], n).map(<[u8]>::as_ptr) {
                let dst = ctx.bytes_mut(a[0], n)?;
                // SAFETY: both ranges were checked inside memory valid for
                // the run; they may overlap (a copy within the stack).
                unsafe { std::ptr::copy(src, dst.as_mut_ptr(), n) };
                return Ok(0);
            }
            let dst = ctx.bytes_mut(a[0], n)?;
            Ok(if crate::probe::read(dst, a[2]) {
                0
            } else {
                neg_errno(libc::EFAULT)
            })
        });
    }
    // bpf_probe_read_str, bpf_probe_read_user_str, bpf_probe_read_kernel_str
    // (the buffer past the string zeroed).
    for id in [45, 114, 115] {
        h.register_kernel(id, |ctx, a| {
            let dst = ctx.bytes_mut(a[0], a[1] as usize)?;
            let r = crate::probe::read_str(dst, a[2]);
            if let Some(n) = r {
                dst[n..].fill(0);
            }
            Ok(match r {
                Some(n) => n as u64,
                None => neg_errno(libc::EFAULT),
            })
        });
    }
    h.register_kernel(182, |ctx, a| {
        let s1 = ctx.read(a[0], a[1] as usize)?;
        let s2 = ctx.read_cstr(a[2], a[1] as usize + 1)?;
        for (i, &c1) in s1.iter().enumerate() {
            let c2 = s2.get(i).copied().unwrap_or(0);
            if c1 != c2 {
                return Ok(if c1 < c2 { u64::MAX } else { 1 });
            }
            if c1 == 0 {
                break;
            }
        }
        Ok(0)
    });
}

/// Reads a `%s` argument: up to 1 KiB of the process's memory.
fn printk_str(p: u64) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    let n = crate::probe::read_str(&mut buf, p)?;
    buf.truncate(n.saturating_sub(1));
    Some(buf)
}

/// The format string of a printk helper: `size` bytes ending with a NUL.
fn printk_fmt(
    ctx: &HelperContext<'_>,
    ptr: u64,
    size: u64,
) -> Result<Option<Vec<u8>>, HelperError> {
    if size == 0 {
        return Ok(None);
    }
    let mut fmt = ctx.read(ptr, size as usize)?;
    match fmt.iter().position(|&b| b == 0) {
        Some(n) => {
            fmt.truncate(n);
            Ok(Some(fmt))
        }
        None => Ok(None),
    }
}

fn register_printk_helpers(h: &mut Helpers, sink: TraceSink) {
    let s = Arc::clone(&sink);
    h.register_kernel(6, move |ctx, a| {
        let Some(fmt) = printk_fmt(ctx, a[0], a[1])? else {
            return Ok(neg_errno(libc::EINVAL));
        };
        match crate::printk::format(&fmt, &a[2..5], printk_str) {
            Ok(msg) => {
                s(&msg);
                Ok(msg.len() as u64)
            }
            Err(_) => Ok(neg_errno(libc::EINVAL)),
        }
    });
    let vargs =
        |ctx: &HelperContext<'_>, data: u64, len: u64| -> Result<Option<Vec<u64>>, HelperError> {
            if !len.is_multiple_of(8) || len > 12 * 8 || (len > 0 && data == 0) {
                return Ok(None);
            }
            let raw = ctx.read(data, len as usize)?;
            Ok(Some(
                raw.chunks(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect(),
            ))
        };
    let s = Arc::clone(&sink);
    h.register_kernel(177, move |ctx, a| {
        let Some(fmt) = printk_fmt(ctx, a[0], a[1])? else {
            return Ok(neg_errno(libc::EINVAL));
        };
        let Some(args) = vargs(ctx, a[2], a[3])? else {
            return Ok(neg_errno(libc::EINVAL));
        };
        match crate::printk::format(&fmt, &args, printk_str) {
            Ok(msg) => {
                s(&msg);
                Ok(msg.len() as u64)
            }
            Err(_) => Ok(neg_errno(libc::EINVAL)),
        }
    });
    h.register_kernel(165, move |ctx, a| {
        let fmt = ctx.read_cstr(a[2], 4096)?;
        let Some(args) = vargs(ctx, a[3], a[4])? else {
            return Ok(neg_errno(libc::EINVAL));
        };
        let msg = match crate::printk::format(&fmt, &args, printk_str) {
            Ok(m) => m,
            Err(_) => return Ok(neg_errno(libc::EINVAL)),
        };
        let size = a[1] as usize;
        if size > 0 {
            let n = msg.len().min(size - 1);
            let mut out = msg[..n].to_vec();
            out.push(0);
            ctx.write(a[0], &out)?;
        }
        Ok(msg.len() as u64 + 1)
    });
}

impl Helpers {
    /// `bpf_probe_write_user` (36): writes program data to any address of
    /// the process (through `process_vm_writev`, so a bad address is
    /// `-EFAULT`, not a crash). Not part of [`Helpers::kernel_basics`]: like
    /// the kernel, which reserves it to privileged tracing and warns when a
    /// program uses it, an embedder must opt in, since it lets a program
    /// change the host's memory.
    pub fn probe_write_user() -> Helpers {
        let mut h = Helpers::new();
        h.register_kernel(36, |ctx, a| {
            let data = ctx.read(a[1], a[2] as usize)?;
            Ok(if crate::probe::write(a[0], &data) {
                0
            } else {
                neg_errno(libc::EFAULT)
            })
        });
        h
    }
}

/// `-errno` as the u64 a helper returns.
pub fn neg_errno(errno: i32) -> u64 {
    (-i64::from(errno)) as u64
}

/// The NUMA node of the CPU the thread runs on (`getcpu`), 0 when the
/// kernel does not say.
fn numa_node() -> u32 {
    let (mut cpu, mut node) = (0u32, 0u32);
    // SAFETY: getcpu writes two unsigned ints through valid pointers; the
    // third argument (a cache) is unused and may be NULL.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut u32,
            &mut node as *mut u32,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if rc == 0 {
        node
    } else {
        0
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

fn prandom_u32() -> u32 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0) };
    }
    STATE.with(|s| {
        let mut x = s.get();
        if x == 0 {
            x = clock_ns(libc::CLOCK_MONOTONIC) | 1;
        }
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    })
}

/// The thread's name (`comm`, at most 15 bytes) and its length.
fn current_comm() -> ([u8; 16], usize) {
    let mut buf = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into the buffer.
    let rc = unsafe {
        libc::prctl(
            libc::PR_GET_NAME,
            buf.as_mut_ptr() as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return ([0; 16], 0);
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    (buf, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn add5(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
        a + b + c + d + e
    }

    #[test]
    fn native_and_closure_helpers_are_called_with_r1_to_r5() {
        let mut h = Helpers::new();
        h.register_native(1, "add5", add5);
        h.register_fn(2, "mul", |a, b, _, _, _| a * b);
        let mut mem = MemoryMap::new();
        let mut env = RunEnv::default();
        let mut ctx = HelperContext::new(&mut mem, &mut env, None);
        assert_eq!(h.get(1).unwrap().call(&mut ctx, [1, 2, 3, 4, 5]), Ok(15));
        assert_eq!(h.get(2).unwrap().call(&mut ctx, [6, 7, 0, 0, 0]), Ok(42));
        assert!(h.get(3).is_none());
    }

    #[test]
    fn panics_in_closures_are_caught() {
        let mut h = Helpers::new();
        h.register(9, "boom", HelperProto::SCALARS, |_, _| panic!("kaboom"));
        let mut mem = MemoryMap::new();
        let mut env = RunEnv::default();
        let mut ctx = HelperContext::new(&mut mem, &mut env, None);
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = h.get(9).unwrap().call(&mut ctx, [0; 5]);
        std::panic::set_hook(prev);
        assert_eq!(r, Err(HelperError::Panicked("kaboom".into())));
    }

    #[test]
    fn context_memory_access_is_checked() {
        let mut buf = [1u8, 2, 3, 4];
        let mut mem = MemoryMap::new();
        mem.add_transient(Region::from_mut_slice(
            &mut buf,
            crate::memory::RegionKind::Other,
        ));
        let base = buf.as_ptr() as u64;
        let mut env = RunEnv::default();
        let mut ctx = HelperContext::new(&mut mem, &mut env, None);
        assert_eq!(ctx.read(base + 1, 2), Ok(vec![2, 3]));
        assert!(ctx.read(base + 3, 2).is_err());
        ctx.write(base, &[9]).unwrap();
        assert!(ctx.write(base + 4, &[9]).is_err());
        assert_eq!(buf[0], 9);
    }

    #[test]
    fn probe_reads_fill_the_programs_buffer_from_any_memory_and_zero_it_on_a_fault() {
        let h = Helpers::kernel_basics();
        let mut dst = [7u8; 8];
        let mut known = *b"regions!";
        // Memory of this process the run does not know of.
        let elsewhere = Box::new(*b"process\0");
        let mut mem = MemoryMap::new();
        mem.add_transient(Region::from_mut_slice(
            &mut dst,
            crate::memory::RegionKind::Other,
        ));
        mem.add_transient(Region::from_mut_slice(
            &mut known,
            crate::memory::RegionKind::Other,
        ));
        let (d, k, e) = (
            dst.as_ptr() as u64,
            known.as_ptr() as u64,
            elsewhere.as_ptr() as u64,
        );
        let mut env = RunEnv::default();
        let mut ctx = HelperContext::new(&mut mem, &mut env, None);
        // bpf_copy_from_user (148) reads as bpf_probe_read_user does.
        for id in [4, 112, 113, 148] {
            let read = h.get(id).unwrap();
            assert_eq!(read.call(&mut ctx, [d, 8, k, 0, 0]), Ok(0));
            assert_eq!(ctx.read(d, 8).unwrap(), b"regions!");
            assert_eq!(read.call(&mut ctx, [d, 8, e, 0, 0]), Ok(0));
            assert_eq!(ctx.read(d, 8).unwrap(), b"process\0");
            // A bad source: -EFAULT and the buffer zeroed, as the kernel.
            assert_eq!(
                read.call(&mut ctx, [d, 8, 16, 0, 0]),
                Ok(neg_errno(libc::EFAULT))
            );
            assert_eq!(ctx.read(d, 8).unwrap(), [0; 8]);
            // A destination outside the program's memory is a fault.
            assert!(read.call(&mut ctx, [e, 8, k, 0, 0]).is_err());
        }
        for id in [45, 114, 115] {
            let read = h.get(id).unwrap();
            ctx.write(d, &[7; 8]).unwrap();
            // "process" and its NUL: 8; the rest of the buffer zeroed.
            assert_eq!(read.call(&mut ctx, [d, 8, e, 0, 0]), Ok(8));
            assert_eq!(ctx.read(d, 8).unwrap(), b"process\0");
            ctx.write(d, &[7; 8]).unwrap();
            assert_eq!(
                read.call(&mut ctx, [d, 4, e, 0, 0]),
                Ok(4),
                "cut at 3 and a NUL"
            );
            assert_eq!(ctx.read(d, 8).unwrap(), b"pro\0\x07\x07\x07\x07");
            assert_eq!(
                read.call(&mut ctx, [d, 8, 16, 0, 0]),
                Ok(neg_errno(libc::EFAULT))
            );
            assert_eq!(ctx.read(d, 8).unwrap(), [0; 8]);
        }
        drop(elsewhere);
    }

    #[test]
    fn current_comm_is_the_threads_name_cut_and_nul_terminated() {
        let h = Helpers::kernel_basics();
        let want = std::fs::read_to_string("/proc/thread-self/comm").expect("comm");
        let want = want.trim_end_matches('\n').as_bytes().to_vec();
        let mut buf = [0xffu8; 16];
        let mut mem = MemoryMap::new();
        mem.add_transient(Region::from_mut_slice(
            &mut buf,
            crate::memory::RegionKind::Other,
        ));
        let b = buf.as_ptr() as u64;
        let mut env = RunEnv::default();
        let mut ctx = HelperContext::new(&mut mem, &mut env, None);
        let comm = h.get(16).unwrap();
        assert_eq!(comm.call(&mut ctx, [b, 16, 0, 0, 0]), Ok(0));
        let got = ctx.read(b, 16).unwrap();
        assert_eq!(&got[..want.len()], want.as_slice());
        assert!(got[want.len()..].iter().all(|&c| c == 0));
        // A 4-byte buffer: 3 bytes and a NUL.
        ctx.write(b, &[0xff; 16]).unwrap();
        assert_eq!(comm.call(&mut ctx, [b, 4, 0, 0, 0]), Ok(0));
        let got = ctx.read(b, 5).unwrap();
        assert_eq!(&got[..3], &want[..3]);
        assert_eq!(&got[3..], &[0, 0xff]);
        assert_eq!(
            comm.call(&mut ctx, [b, 0, 0, 0, 0]),
            Ok(neg_errno(libc::EINVAL))
        );
    }

    #[test]
    fn probe_write_user_is_opt_in_and_never_crashes() {
        assert!(Helpers::kernel_basics().get(36).is_none());
        let h = Helpers::probe_write_user();
        let mut src = [1u8, 2, 3];
        let mut target = [0u8; 3];
        let mut mem = MemoryMap::new();
        mem.add_transient(Region::from_mut_slice(
            &mut src,
            crate::memory::RegionKind::Other,
        ));
        let mut env = RunEnv::default();
        let mut ctx = HelperContext::new(&mut mem, &mut env, None);
        let w = h.get(36).unwrap();
        let args = [target.as_mut_ptr() as u64, src.as_ptr() as u64, 3, 0, 0];
        assert_eq!(w.call(&mut ctx, args), Ok(0));
        assert_eq!(target, [1, 2, 3]);
        let bad = [16, src.as_ptr() as u64, 3, 0, 0];
        assert_eq!(w.call(&mut ctx, bad), Ok(neg_errno(libc::EFAULT)));
    }

    #[test]
    fn kernel_basics_use_kernel_ids() {
        let h = Helpers::kernel_basics();
        assert_eq!(h.get(5).unwrap().name(), "bpf_ktime_get_ns");
        assert_eq!(h.get(14).unwrap().name(), "bpf_get_current_pid_tgid");
        let mut mem = MemoryMap::new();
        let mut env = RunEnv::default();
        let mut ctx = HelperContext::new(&mut mem, &mut env, None);
        let pid_tgid = h.get(14).unwrap().call(&mut ctx, [0; 5]).unwrap();
        assert_eq!(pid_tgid >> 32, u64::from(std::process::id()));
        let t1 = h.get(5).unwrap().call(&mut ctx, [0; 5]).unwrap();
        let t2 = h.get(5).unwrap().call(&mut ctx, [0; 5]).unwrap();
        assert!(t2 >= t1 && t1 > 0);
    }

    #[test]
    fn task_time_and_random_helpers_answer_as_the_kernel_does() {
        let h = Helpers::kernel_basics();
        let mut mem = MemoryMap::new();
        let mut env = RunEnv::default();
        let mut ctx = HelperContext::new(&mut mem, &mut env, None);
        let mut call = |id: i32| h.get(id).unwrap().call(&mut ctx, [0; 5]).unwrap();
        // bpf_get_current_uid_gid: gid << 32 | uid.
        // SAFETY: getuid and getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!(call(15), (u64::from(gid) << 32) | u64::from(uid));
        // bpf_get_smp_processor_id: a configured CPU.
        assert!((call(8) as usize) < crate::maps::percpu::ncpus());
        // Boot time counts suspend, so it is never behind the monotonic
        // clock; the coarse clock is at most a tick behind it.
        let mono = call(5);
        let boot = call(125);
        let coarse = call(160);
        assert!(boot >= mono, "boot {boot} < monotonic {mono}");
        assert!(coarse <= call(5) && mono - coarse.min(mono) < 100_000_000);
        // TAI is ahead of (or, unset, equal to) the realtime clock.
        assert!(call(208) >= clock_ns(libc::CLOCK_REALTIME).saturating_sub(1_000_000_000));
        // bpf_get_numa_node_id: an online node.
        let online = std::fs::read_to_string("/sys/devices/system/node/online")
            .unwrap_or_else(|_| "0".to_string());
        let last = online
            .trim()
            .rsplit(['-', ','])
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(call(42) <= last, "node {} of {online:?}", call(42));
        // bpf_get_prandom_u32: 32-bit values that vary.
        let draws: Vec<u64> = (0..16).map(|_| call(7)).collect();
        assert!(draws.iter().all(|&v| v <= u64::from(u32::MAX)));
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }
}
