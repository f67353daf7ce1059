//! The run context compiled code works on, and the `extern "C"` functions
//! it calls for everything that is not straight-line computation: memory
//! checks outside the stack, helpers, map lookups, tail calls, packet loads
//! and faults. Every one of them catches panics (a panic must not unwind
//! into JIT frames) and reports through [`JitCtx::status`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use userbpf_vm::interp::{
    ClosedHead, DriveStep, EngineFault, EngineRun, FaultKind, HelperReturn, OpClass,
    PreparedProgram,
};
use userbpf_vm::memory::Access;
use userbpf_vm::Fault;

/// Most frames: the main program and 7 nested calls (`MAX_CALL_FRAMES`).
pub(crate) const MAX_FRAMES: usize = userbpf_vm::interp::MAX_CALL_FRAMES;

/// Status of a call-out and of a compiled run.
pub(crate) const STATUS_OK: u64 = 0;
/// A fault is in [`Host::fault`].
pub(crate) const STATUS_FAULT: u64 = 1;
/// The program ends with the value returned (`unwind`); after a legacy
/// packet load, the load was outside the packet and the function returns
/// 0 (the program's end in baseline code, which has no subprograms).
pub(crate) const STATUS_EXIT: u64 = 2;
/// A tail call: the target is in [`Host::tail`].
pub(crate) const STATUS_TAIL_CALL: u64 = 3;
/// A helper calls back into the program: the callback's pc is in
/// [`JitCtx::cb_target`], its arguments in [`JitCtx::cb_args`].
pub(crate) const STATUS_CALLBACK: u64 = 4;
/// A tail call from a subprogram ran its target: the function returns
/// the value returned.
pub(crate) const STATUS_RETURN: u64 = 5;
/// A fault is described by [`JitCtx::record`].
pub(crate) const STATUS_FAULT_RECORD: u64 = 6;
/// The code stopped before the instruction at the pc it returns, with
/// every register in the head, for the interpreter to go on
/// (`EngineStop::Resume`).
pub(crate) const STATUS_RESUME: u64 = userbpf_vm::interp::ClosedEntry::RESUME;

/// [`JitFrame::loop_cb`] of a frame that is not a `bpf_loop` frame.
pub(crate) const FRAME_PLAIN: u64 = u64::MAX;
/// [`JitFrame::loop_cb`] of a frame running a helper's callback
/// (`loop_i` holds the helper call's pc).
pub(crate) const FRAME_DRIVEN: u64 = u64::MAX - 1;

/// One call frame: where to return and what to restore.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct JitFrame {
    /// Index of the return site.
    pub(crate) ret_site: u64,
    /// r6..r9 of the caller.
    pub(crate) saved: [u64; 4],
    /// r10 of the caller.
    pub(crate) fp: u64,
    /// `bpf_loop` frames: the callback's pc (`u64::MAX` otherwise), the
    /// iteration, the count and the callback context.
    pub(crate) loop_cb: u64,
    pub(crate) loop_i: u64,
    pub(crate) loop_n: u64,
    pub(crate) loop_ctx: u64,
}

/// What compiled code reads and writes (offsets are baked into the code).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct JitCtx {
    /// What the VM reads and writes around a closed run (first: the VM
    /// knows its layout): the budget, the deepest frame, the checks' first
    /// regions, r0..r10 (r1..r4 come in as arguments; all are stored here
    /// for a tail call).
    pub(crate) head: ClosedHead,
    /// One past the top of the stack.
    pub(crate) stack_top: u64,
    /// The caller's r10 at a call-out.
    pub(crate) fp: u64,
    /// Status of the last call-out.
    pub(crate) status: u64,
    /// Frames the run may still push (`MAX_CALL_FRAMES - 1` minus the
    /// depth it starts at).
    pub(crate) depth_limit: u64,
    /// A fault the code (or a check without a host) recorded: pc, a
    /// [`FaultCode`], a value, a length and the frame's `r10`.
    pub(crate) record: [u64; 5],
    /// A helper's callback: its pc and arguments.
    pub(crate) cb_target: u64,
    pub(crate) cb_args: [u64; 5],
    /// Call frames (written by compiled code before it reads them).
    pub(crate) frames: [std::mem::MaybeUninit<JitFrame>; MAX_FRAMES],
    /// The Rust side of the run.
    pub(crate) host: *mut Host<'static, 'static>,
}

impl JitCtx {
    /// Writes the fields of a fresh context that are read before compiled
    /// code or a call-out writes them (registers zero; `init` sets them)
    /// into `slot`, and returns a pointer to it. Word by word, with
    /// volatile stores: the compiler would otherwise merge the zeros into
    /// a `memset`, whose stores the code's first loads (and ours after the
    /// run) cannot forward from, a stall per run. The other fields (`fp`,
    /// `status`, the callback fields, the frames) are
    /// written by the code or a call-out before anything reads them.
    pub(crate) fn init(
        slot: &mut std::mem::MaybeUninit<JitCtx>,
        budget: u64,
        stack_top: u64,
        depth_limit: u64,
        seed: [u64; 4],
        init: impl FnOnce(*mut u64),
    ) -> *mut JitCtx {
        let p = slot.as_mut_ptr();
        // SAFETY: every write stays inside `slot`, at a field's address
        // and type.
        unsafe {
            let word = |w: *mut u64, v: u64| std::ptr::write_volatile(w, v);
            init(std::ptr::addr_of_mut!((*p).head.regs).cast());
            word(std::ptr::addr_of_mut!((*p).head.budget), budget);
            word(std::ptr::addr_of_mut!((*p).head.max_depth), 0);
            word(std::ptr::addr_of_mut!((*p).stack_top), stack_top);
            word(std::ptr::addr_of_mut!((*p).depth_limit), depth_limit);
            for (i, v) in seed.into_iter().enumerate() {
                word(std::ptr::addr_of_mut!((*p).head.seed[i]), v);
            }
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).host), std::ptr::null_mut());
        }
        p
    }
}

/// The Rust side of a run, reached from call-outs.
pub(crate) struct Host<'r, 'a> {
    pub(crate) run: &'r mut EngineRun<'a>,
    pub(crate) prog: &'a Arc<PreparedProgram>,
    pub(crate) fault: Option<Box<Fault>>,
    pub(crate) tail: Option<Arc<PreparedProgram>>,
}

fn boxed(f: Fault) -> Option<Box<Fault>> {
    Some(Box::new(f))
}

/// Fault codes of [`JitCtx::record`].
#[repr(u64)]
#[derive(Clone, Copy, Debug)]
pub(crate) enum FaultCode {
    Misaligned = 0,
    Budget = 1,
    CallDepth = 2,
    BadCallTarget = 3,
    InvalidPc = 4,
    CorePoison = 5,
    /// An access no inline check allowed, in a run without a host (value:
    /// the address, length: `len | (1 << 32)` for a write).
    Access = 6,
}

/// The fault a record describes. Budget: the value is the budget left at
/// the start of the block at `pc` (the fault lands on the instruction the
/// interpreter would stop at).
pub(crate) fn record_fault(rec: [u64; 5]) -> EngineFault {
    let [pc, code, value, len, fp] = rec;
    let pc = pc as usize;
    match code {
        0 => EngineFault::Misaligned {
            pc,
            addr: value,
            len,
        },
        1 => EngineFault::Budget { pc, done: value },
        2 => EngineFault::CallDepth { pc },
        3 => EngineFault::BadCallTarget { pc, value },
        5 => EngineFault::PoisonedCoreRelocation { pc },
        6 => EngineFault::Access {
            pc,
            fp,
            addr: value,
            len: len & 0xffff_ffff,
            access: if len >> 32 != 0 {
                Access::Write
            } else {
                Access::Read
            },
        },
        _ => EngineFault::InvalidPc { pc },
    }
}

/// Runs `f` on the host; a panic becomes a fault.
///
/// # Safety
/// `ctx` must be the live context of a run (`host` set by the engine).
unsafe fn with_host(
    ctx: *mut JitCtx,
    pc: u64,
    f: impl FnOnce(&mut Host<'_, '_>, u64) -> u64,
) -> u64 {
    // SAFETY: the engine passes its own context, alive for the whole run;
    // no reference to it is held while `f` runs (`f` may write fields
    // through the same pointer).
    let (host, fp) = unsafe {
        (*ctx).status = STATUS_OK;
        (&mut *(*ctx).host, (*ctx).fp)
    };
    let status = |s: u64| {
        // SAFETY: as above.
        unsafe { (*ctx).status = s };
    };
    match catch_unwind(AssertUnwindSafe(|| f(host, fp))) {
        Ok(v) => {
            if host.fault.is_some() {
                status(STATUS_FAULT);
            } else if host.tail.is_some() {
                status(STATUS_TAIL_CALL);
            }
            v
        }
        Err(_) => {
            let prog = host.prog;
            host.fault = boxed(host.run.fault(
                prog,
                pc as usize,
                0,
                0,
                FaultKind::Helper {
                    helper: 0,
                    name: "engine".into(),
                    error: userbpf_vm::HelperError::Panicked("in a JIT call-out".into()),
                },
            ));
            status(STATUS_FAULT);
            0
        }
    }
}

/// Marks the call-out as ending the program with its return value.
fn exit_with(ctx: *mut JitCtx, r0: u64) -> u64 {
    // SAFETY: the engine's live context.
    unsafe { (*ctx).status = STATUS_EXIT };
    r0
}

/// Checks a memory access outside the stack, described by the context's
/// record: `[pc, _, addr, len_access, _]`, `len_access` = `len | (1 << 32)`
/// for a write. Returns 1 if allowed (and sets the status to 0).
pub(crate) extern "C" fn jit_check(ctx: *mut JitCtx) -> u64 {
    // SAFETY: called by compiled code with its context.
    unsafe {
        let [pc, _, addr, len_access, _] = (*ctx).record;
        if (*ctx).host.is_null() {
            // A closed run: the inline checks knew every region (the
            // stack, the context); the engine classifies the refusal.
            (*ctx).record = [pc, FaultCode::Access as u64, addr, len_access, (*ctx).fp];
            (*ctx).status = STATUS_FAULT_RECORD;
            return 0;
        }
        with_host(ctx, pc, |h, fp| {
            let len = len_access & 0xffff_ffff;
            let access = if len_access >> 32 != 0 {
                Access::Write
            } else {
                Access::Read
            };
            match h.run.check_region(fp, addr, len, access) {
                Ok(region) => {
                    // The region cache for this kind of access takes the
                    // region, if it has at least 8 bytes (smaller ones
                    // keep taking this path).
                    if let Some(r) = region.filter(|r| r.len >= 8) {
                        let at = if access == Access::Write { 2 } else { 0 };
                        (*ctx).head.seed[at] = r.start;
                        (*ctx).head.seed[at + 1] = r.len - 7;
                    }
                    1
                }
                Err(kind) => {
                    let prog = h.prog;
                    h.fault = boxed(h.run.fault(prog, pc as usize, addr, len, kind));
                    0
                }
            }
        })
    }
}

/// Calls the helper (or kfunc) of the `call` at `pc`.
pub(crate) extern "C" fn jit_helper(
    ctx: *mut JitCtx,
    pc: u64,
    r1: u64,
    r2: u64,
    r3: u64,
    r4: u64,
    r5: u64,
) -> u64 {
    let mut exit = None;
    let mut callback = None;
    // SAFETY: called by compiled code with its context.
    let r0 = unsafe {
        with_host(ctx, pc, |h, fp| {
            let prog = h.prog;
            let index = match prog.op_class(pc as usize) {
                Some(OpClass::Helper(i)) => i,
                _ => {
                    h.fault = boxed(h.run.fault(prog, pc as usize, 0, 0, FaultKind::InvalidPc));
                    return 0;
                }
            };
            match h
                .run
                .call_helper(prog, pc as usize, index, [r1, r2, r3, r4, r5], fp)
            {
                Ok(ret) => helper_return(ret, &mut exit, &mut callback),
                Err(f) => {
                    h.fault = boxed(f);
                    0
                }
            }
        })
    };
    finish_helper(ctx, r0, exit, callback)
}

/// The value of a helper call, noting an exit or a callback.
fn helper_return(
    ret: HelperReturn,
    exit: &mut Option<u64>,
    callback: &mut Option<(usize, [u64; 5])>,
) -> u64 {
    match ret {
        HelperReturn::Value(r0) => r0,
        HelperReturn::Exit(r0) => {
            *exit = Some(r0);
            r0
        }
        HelperReturn::Callback { target, args } => {
            *callback = Some((target, args));
            0
        }
    }
}

/// Sets the status of a helper call that ended the program or calls back.
fn finish_helper(
    ctx: *mut JitCtx,
    r0: u64,
    exit: Option<u64>,
    callback: Option<(usize, [u64; 5])>,
) -> u64 {
    if let Some(r0) = exit {
        return exit_with(ctx, r0);
    }
    if let Some((target, args)) = callback {
        // SAFETY: the engine's live context; fields by raw pointer (some
        // are unwritten yet).
        unsafe {
            if (*ctx).status == STATUS_OK {
                (*ctx).cb_target = target as u64;
                (*ctx).cb_args = args;
                (*ctx).status = STATUS_CALLBACK;
            }
        }
    }
    r0
}

/// A helper's callback returned `r0`: the next call (status
/// [`STATUS_CALLBACK`]) or the helper's result. `pc`: the helper call.
pub(crate) extern "C" fn jit_drive(ctx: *mut JitCtx, pc: u64, r0: u64) -> u64 {
    let mut callback = None;
    // SAFETY: called by compiled code with its context.
    let v = unsafe {
        with_host(ctx, pc, |h, _| {
            let prog = h.prog;
            match h.run.drive(prog, pc as usize, Some(r0)) {
                Ok(DriveStep::Call(args)) => {
                    callback = Some(args);
                    0
                }
                Ok(DriveStep::Done(r0)) => r0,
                Err(f) => {
                    h.fault = boxed(f);
                    0
                }
            }
        })
    };
    if let Some(args) = callback {
        // SAFETY: the engine's live context, by raw pointer.
        unsafe {
            if (*ctx).status == STATUS_OK {
                // The target stays the one the helper started with.
                (*ctx).cb_args = args;
                (*ctx).status = STATUS_CALLBACK;
            }
        }
    }
    v
}

/// `callx` on a value that is not a subprogram address: the helper with
/// that id, if the program has it (the conformance suite's convention).
pub(crate) extern "C" fn jit_callx_helper(
    ctx: *mut JitCtx,
    pc: u64,
    id: u64,
    args: *const u64,
) -> u64 {
    let mut exit = None;
    let mut callback = None;
    // SAFETY: `args` points to r1..r5 the compiled code stored.
    let args = unsafe { std::slice::from_raw_parts(args, 5) };
    let args = [args[0], args[1], args[2], args[3], args[4]];
    // SAFETY: called by compiled code with its context.
    let r0 = unsafe {
        with_host(ctx, pc, |h, fp| {
            let prog = h.prog;
            match h.run.call_helper_by_id(prog, pc as usize, id, args, fp) {
                Ok(ret) => helper_return(ret, &mut exit, &mut callback),
                Err(f) => {
                    h.fault = boxed(f);
                    0
                }
            }
        })
    };
    finish_helper(ctx, r0, exit, callback)
}

/// `bpf_tail_call` from a subprogram at `depth` (below the run's first
/// frame): runs the target in place of the calling function with the
/// registers in [`JitCtx::regs`]; status [`STATUS_RETURN`] with its `r0`,
/// or [`STATUS_OK`] when the call falls through.
pub(crate) extern "C" fn jit_tail_call_nested(
    ctx: *mut JitCtx,
    pc: u64,
    map: u64,
    index: u64,
    depth: u64,
) -> u64 {
    // SAFETY: the engine's live context.
    let regs = unsafe { (*ctx).head.regs };
    let mut taken = false;
    // SAFETY: called by compiled code with its context.
    let r0 = unsafe {
        with_host(ctx, pc, |h, _| {
            let Some(t) = h.run.tail_call(map, index) else {
                return 0;
            };
            taken = true;
            let abs = h.run.base_depth() + depth as usize;
            // The target runs on the budget the code left (and leaves it
            // what it does not spend).
            *h.run.budget() = (*ctx).head.budget;
            let r0 = match h.run.run_tail_target(t, regs, abs) {
                Ok(r0) => r0,
                Err(f) => {
                    h.fault = boxed(f);
                    0
                }
            };
            (*ctx).head.budget = *h.run.budget();
            r0
        })
    };
    // SAFETY: the engine's live context, by raw pointer.
    unsafe {
        if taken && (*ctx).status == STATUS_OK {
            (*ctx).status = STATUS_RETURN;
        }
    }
    r0
}

/// `bpf_map_lookup_elem` at `pc` through the maps' direct path.
pub(crate) extern "C" fn jit_map_lookup(ctx: *mut JitCtx, pc: u64, map: u64, key: u64) -> u64 {
    // SAFETY: called by compiled code with its context.
    unsafe {
        with_host(ctx, pc, |h, fp| {
            let prog = h.prog;
            let Some(OpClass::MapLookup(index)) = prog.op_class(pc as usize) else {
                h.fault = boxed(h.run.fault(prog, pc as usize, 0, 0, FaultKind::InvalidPc));
                return 0;
            };
            match h.run.map_lookup(prog, pc as usize, index, map, key, fp) {
                Ok(r0) => r0,
                Err(f) => {
                    h.fault = boxed(f);
                    0
                }
            }
        })
    }
}

/// `bpf_tail_call(ctx, map, index)`: 1 if the call is taken (the target is
/// in the host), 0 if it falls through.
pub(crate) extern "C" fn jit_tail_call(ctx: *mut JitCtx, pc: u64, map: u64, index: u64) -> u64 {
    // SAFETY: called by compiled code with its context.
    unsafe {
        with_host(ctx, pc, |h, _| match h.run.tail_call(map, index) {
            Some(t) => {
                h.tail = Some(t);
                1
            }
            None => 0,
        })
    }
}

/// A legacy packet load of `size` bytes (1, 2, 4) at `off` (`src + imm`,
/// [`userbpf_vm::interp::PacketWindow::load`]). Returns the big-endian
/// value; a load outside the packet sets [`STATUS_EXIT`] (the function
/// returns 0, as after the kernel's `gen_ld_abs`).
pub(crate) extern "C" fn jit_packet_load(ctx: *mut JitCtx, pc: u64, off: u64, size: u64) -> u64 {
    let mut end = false;
    // SAFETY: called by compiled code with its context.
    let v = unsafe {
        with_host(ctx, pc, |h, fp| {
            let prog = h.prog;
            let Some(window) = h.run.packet() else {
                h.fault = boxed(h.run.fault(prog, pc as usize, 0, 0, FaultKind::NoPacket));
                return 0;
            };
            // SAFETY: `check` accepts only readable memory.
            match window.load(off, size, |a, len| {
                h.run.check(fp, a, len, Access::Read).map(|()| a)
            }) {
                Ok(Some(v)) => v,
                Ok(None) => {
                    end = true;
                    0
                }
                Err((a, len, kind)) => {
                    h.fault = boxed(h.run.fault(prog, pc as usize, a, len, kind));
                    0
                }
            }
        })
    };
    if end {
        exit_with(ctx, 0)
    } else {
        v
    }
}
