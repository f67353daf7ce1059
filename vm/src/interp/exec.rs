//! The dispatch loop and what it calls: memory and helper checks, calls,
//! tail calls, faults.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::lower::{Op, PreparedProgram, K};
use super::{
    Fault, FaultKind, ProgramArray, BPF_MAX_LOOPS, FUNC_ADDR_MASK, FUNC_ADDR_TAG, MAX_CALL_FRAMES,
    MAX_TAIL_CALLS, STACK_SIZE,
};
use crate::helpers::{
    ArgKind, ArgSize, CallbackDriver, Helper, HelperContext, HelperError, RunEnv,
};
use crate::memory::{Access, AccessError, MemoryMap};

#[derive(Clone, Copy, Default)]
pub(super) struct Frame {
    ret_pc: usize,
    prog: usize,
    saved: [u64; 4],
    fp: u64,
    /// Set when the frame runs a `bpf_loop` callback.
    looping: Option<LoopState>,
    /// Set when the frame runs the callback of a helper's
    /// [`CallbackDriver`] (the last of `State::drivers`).
    driven: bool,
}

/// A helper calling back into the program (`bpf_for_each_map_elem`, ...).
pub(super) struct Driven {
    pub(super) driver: Box<dyn CallbackDriver>,
    pub(super) callback: usize,
    pub(super) helper: i32,
    pub(super) name: Arc<str>,
}

/// A `bpf_loop` in progress: the callback at `callback` runs with
/// `r1 = i, r2 = ctx` until it returns non-zero or `i` reaches `n`.
#[derive(Clone, Copy, Default)]
struct LoopState {
    i: u64,
    n: u64,
    ctx: u64,
    callback: usize,
}

pub(super) struct State {
    pub(super) regs: [u64; 16],
    pub(super) frames: [Frame; MAX_CALL_FRAMES],
    pub(super) depth: usize,
    /// `exit` at this depth ends the run (0, or the depth a compiled
    /// engine's tail call from a subprogram runs its target at).
    pub(super) base_depth: usize,
    pub(super) max_depth: usize,
    pub(super) budget: u64,
    pub(super) tail_calls: u32,
    pub(super) packet: Option<super::PacketWindow>,
    pub(super) env: RunEnv,
    pub(super) drivers: Vec<Driven>,
}

impl State {
    /// The state a run starts from (the registers apart): the first frame,
    /// `budget`, no tail call yet, `packet`, a fresh outcome, no callback
    /// driver. (The frames are written before they are read.)
    #[inline(always)]
    pub(super) fn begin_run(&mut self, budget: u64, packet: Option<super::PacketWindow>) {
        self.depth = 0;
        self.base_depth = 0;
        self.max_depth = 0;
        self.budget = budget;
        self.tail_calls = 0;
        self.packet = packet;
        self.env.outcome = crate::helpers::RunOutcome::default();
        if !self.drivers.is_empty() {
            self.drivers.clear();
        }
    }
}

/// How a helper call ended.
pub(super) enum Called {
    /// `r0` is set; go on.
    Continue,
    /// The helper ended the run with this `r0`.
    Exit(u64),
    /// The helper calls back into the program.
    Callbacks(u64, Box<dyn CallbackDriver>),
}

pub(super) enum Stop {
    Exit(u64),
    /// Continue in program `prog` (of the run's program list) at `pc`.
    Switch {
        prog: usize,
        pc: usize,
    },
    TailCall(Arc<PreparedProgram>),
}

#[cold]
#[inline(never)]
pub(super) fn fault(
    prog: &PreparedProgram,
    pc: usize,
    addr: u64,
    len: u64,
    kind: FaultKind,
) -> Fault {
    Fault {
        program: prog.name.clone(),
        pc,
        insn: prog.insns.get(pc).copied().unwrap_or_default(),
        addr,
        len,
        kind,
    }
}

#[cold]
#[inline(never)]
fn mem_fault(
    prog: &PreparedProgram,
    pc: usize,
    addr: u64,
    len: u64,
    access: Access,
    e: AccessError,
) -> Fault {
    let kind = match e {
        AccessError::Unmapped => FaultKind::OutOfBounds { access },
        AccessError::ReadOnly(region) => FaultKind::ReadOnly { region },
    };
    fault(prog, pc, addr, len, kind)
}

/// Checks the pointer arguments of a helper against its prototype.
fn check_helper_args(
    h: &Helper,
    regs: &[u64; 16],
    mem: &MemoryMap,
) -> Result<(), (usize, u64, u64, Access)> {
    for (i, kind) in h.proto().args.iter().enumerate() {
        let (size, nullable, access) = match *kind {
            ArgKind::Anything => continue,
            ArgKind::ReadMem { size, nullable } => (size, nullable, Access::Read),
            ArgKind::WriteMem { size, nullable } => (size, nullable, Access::Write),
        };
        let ptr = regs[(i.wrapping_add(1)) & 15];
        let len = match size {
            ArgSize::Fixed(n) => u64::from(n),
            ArgSize::Arg(j) => regs[(j.wrapping_add(1)) & 15],
        };
        if nullable && ptr == 0 && len == 0 {
            continue;
        }
        if mem.check(ptr, len, access).is_err() {
            return Err((i.wrapping_add(1), ptr, len, access));
        }
    }
    Ok(())
}

/// Calls helper `h`.
pub(super) fn call_helper(
    prog: &Arc<PreparedProgram>,
    pc: usize,
    h: &Helper,
    regs: &mut [u64; 16],
    mem: &mut MemoryMap,
    env: &mut RunEnv,
) -> Result<Called, Fault> {
    if !h.has_pointers() {
        // Nothing to check.
    } else if let Err((arg, addr, len, access)) = check_helper_args(h, regs, mem) {
        return Err(fault(
            prog,
            pc,
            addr,
            len,
            FaultKind::HelperArgument {
                helper: h.id(),
                arg,
                access,
            },
        ));
    }
    let mut ctx = HelperContext::new(mem, env, Some(prog));
    let args = [regs[1], regs[2], regs[3], regs[4], regs[5]];
    match h.call(&mut ctx, args) {
        Ok(r0) => {
            regs[0] = r0;
            Ok(match (ctx.exit, ctx.callbacks.take()) {
                (Some(r0), _) => Called::Exit(r0),
                (None, Some((cb, d))) => Called::Callbacks(cb, d),
                (None, None) => Called::Continue,
            })
        }
        Err(error) => Err(helper_fault(prog, pc, h.id(), h.name(), error)),
    }
}

#[cold]
#[inline(never)]
pub(super) fn helper_fault(
    prog: &PreparedProgram,
    pc: usize,
    helper: i32,
    name: &str,
    error: HelperError,
) -> Fault {
    fault(
        prog,
        pc,
        0,
        0,
        FaultKind::Helper {
            helper,
            name: name.to_string(),
            error,
        },
    )
}

/// Asks the driver of the innermost helper callback for the next call's
/// arguments.
pub(super) fn drive(
    prog: &Arc<PreparedProgram>,
    st: &mut State,
    mem: &mut MemoryMap,
    last_r0: Option<u64>,
) -> Result<Option<[u64; 5]>, (i32, Arc<str>, HelperError)> {
    let Some(d) = st.drivers.last_mut() else {
        return Ok(None);
    };
    let mut ctx = HelperContext::new(mem, &mut st.env, Some(prog));
    d.driver
        .next(&mut ctx, last_r0)
        .map_err(|e| (d.helper, Arc::clone(&d.name), e))
}

/// Runs `prog` from `pc` until the run ends, a tail call replaces the
/// program, or a return lands in another program.
#[inline(never)]
pub(super) fn run_ops(
    prog_arc: &Arc<PreparedProgram>,
    prog_idx: usize,
    mut pc: usize,
    st: &mut State,
    mem: &mut MemoryMap,
    program_array: Option<&dyn ProgramArray>,
) -> Result<Stop, Fault> {
    let prog: &PreparedProgram = prog_arc;
    let ops: &[Op] = &prog.ops;
    let mut regs = st.regs;
    let mut budget = st.budget;
    let limit = prog.config.budget.unwrap_or(u64::MAX);

    macro_rules! save {
        () => {
            st.regs = regs;
            st.budget = budget;
        };
    }
    macro_rules! bail {
        ($f:expr) => {{
            save!();
            return Err($f);
        }};
    }
    macro_rules! load {
        ($op:ident, $d:ident, $s:ident, $ty:ty, $conv:expr) => {{
            let addr = regs[$s].wrapping_add(i64::from($op.aux) as u64);
            let len = std::mem::size_of::<$ty>() as u64;
            match mem.check(addr, len, Access::Read) {
                Ok(a) => {
                    // SAFETY: `check` proved [a, a + len) lies in a readable
                    // region or the live stack.
                    let v: $ty = unsafe { (a as *const $ty).read_unaligned() };
                    #[allow(clippy::redundant_closure_call)]
                    {
                        regs[$d] = ($conv)(v);
                    }
                }
                Err(e) => bail!(mem_fault(prog, pc, addr, len, Access::Read, e)),
            }
        }};
    }
    macro_rules! store {
        ($op:ident, $d:ident, $ty:ty, $val:expr) => {{
            let addr = regs[$d].wrapping_add(i64::from($op.aux) as u64);
            let len = std::mem::size_of::<$ty>() as u64;
            match mem.check(addr, len, Access::Write) {
                // SAFETY: `check` proved [a, a + len) lies in a writable
                // region or the live stack.
                Ok(a) => unsafe { (a as *mut $ty).write_unaligned($val as $ty) },
                Err(e) => bail!(mem_fault(prog, pc, addr, len, Access::Write, e)),
            }
        }};
    }
    // Calls helper `$h`; a helper that ends the run (`HelperContext::exit`)
    // stops it with its r0.
    macro_rules! helper {
        ($h:expr) => {
            let h: &Helper = $h;
            match call_helper(prog_arc, pc, h, &mut regs, mem, &mut st.env) {
                Ok(Called::Continue) => {}
                Ok(Called::Exit(r0)) => {
                    regs[0] = r0;
                    save!();
                    return Ok(Stop::Exit(r0));
                }
                Ok(Called::Callbacks(cb, driver)) => {
                    let Some(t) = prog.callback_target(cb) else {
                        bail!(fault(
                            prog,
                            pc,
                            0,
                            0,
                            FaultKind::BadCallTarget { value: cb }
                        ))
                    };
                    st.drivers.push(Driven {
                        driver,
                        callback: t,
                        helper: h.id(),
                        name: Arc::from(h.name()),
                    });
                    match drive(prog_arc, st, mem, None) {
                        Ok(Some(args)) => {
                            if let Err(f) = push_frame(prog, prog_idx, pc, &mut regs, st, mem) {
                                st.drivers.pop();
                                bail!(f);
                            }
                            st.frames[st.depth.wrapping_sub(1) & (MAX_CALL_FRAMES - 1)].driven =
                                true;
                            regs[1..6].copy_from_slice(&args);
                            pc = t;
                            continue;
                        }
                        Ok(None) => {
                            if let Some(d) = st.drivers.pop() {
                                regs[0] = d.driver.result();
                            }
                        }
                        Err((id, name, e)) => {
                            st.drivers.pop();
                            bail!(helper_fault(prog, pc, id, &name, e));
                        }
                    }
                }
                Err(f) => bail!(f),
            }
        };
    }
    macro_rules! jump {
        ($op:ident, $cond:expr) => {{
            if $cond {
                branch_taken();
                pc = $op.aux as usize;
                continue;
            }
        }};
    }
    // `exit`: the run's end at its first frame, else the return to the
    // caller (or the next callback call of a helper or `bpf_loop`).
    macro_rules! function_exit {
        () => {{
            if st.depth == st.base_depth {
                save!();
                return Ok(Stop::Exit(regs[0]));
            }
            let top = st.depth.wrapping_sub(1) & (MAX_CALL_FRAMES - 1);
            if st.frames[top].driven {
                match drive(prog_arc, st, mem, Some(regs[0])) {
                    Ok(Some(args)) => {
                        regs[1..6].copy_from_slice(&args);
                        regs[10] = st.frames[top].fp.wrapping_sub(STACK_SIZE as u64);
                        pc = st.drivers.last().map_or(0, |d| d.callback);
                        continue;
                    }
                    Ok(None) => {
                        if let Some(d) = st.drivers.pop() {
                            regs[0] = d.driver.result();
                        }
                    }
                    Err((id, name, e)) => {
                        st.drivers.pop();
                        let ret = st.frames[top].ret_pc.wrapping_sub(1);
                        bail!(helper_fault(prog, ret, id, &name, e));
                    }
                }
            }
            if let Some(l) = st.frames[top].looping {
                let next = l.i.wrapping_add(1);
                if regs[0] == 0 && next < l.n {
                    // Next iteration: a fresh call of the callback.
                    st.frames[top].looping = Some(LoopState { i: next, ..l });
                    regs[1] = next;
                    regs[2] = l.ctx;
                    regs[3] = 0;
                    regs[4] = 0;
                    regs[5] = 0;
                    regs[10] = st.frames[top].fp.wrapping_sub(STACK_SIZE as u64);
                    pc = l.callback;
                    continue;
                }
                // Done: bpf_loop returns the number of iterations.
                regs[0] = if regs[0] != 0 { next } else { l.n };
            }
            st.depth = st.depth.wrapping_sub(1);
            let f = st.frames[st.depth & (MAX_CALL_FRAMES - 1)];
            regs[6..10].copy_from_slice(&f.saved);
            regs[10] = f.fp;
            mem.stack_lo = f.fp.wrapping_sub(STACK_SIZE as u64);
            pc = f.ret_pc;
            if f.prog != prog_idx {
                save!();
                return Ok(Stop::Switch { prog: f.prog, pc });
            }
            continue;
        }};
    }

    loop {
        let Some(&op) = ops.get(pc) else {
            bail!(fault(prog, pc, 0, 0, FaultKind::InvalidPc));
        };
        if budget == 0 {
            bail!(fault(prog, pc, 0, 0, FaultKind::BudgetExhausted { limit }));
        }
        budget = budget.wrapping_sub(1);
        let d = usize::from(op.dst & 15);
        let s = usize::from(op.src & 15);
        let imm = op.imm;
        let imm32 = imm as u32;
        let next = pc.wrapping_add(1);
        match op.kind {
            K::Add64I => regs[d] = regs[d].wrapping_add(imm),
            K::Add64R => regs[d] = regs[d].wrapping_add(regs[s]),
            K::Sub64I => regs[d] = regs[d].wrapping_sub(imm),
            K::Sub64R => regs[d] = regs[d].wrapping_sub(regs[s]),
            K::Mul64I => regs[d] = regs[d].wrapping_mul(imm),
            K::Mul64R => regs[d] = regs[d].wrapping_mul(regs[s]),
            K::Div64I => regs[d] = regs[d].checked_div(imm).unwrap_or(0),
            K::Div64R => regs[d] = regs[d].checked_div(regs[s]).unwrap_or(0),
            K::SDiv64I => regs[d] = sdiv64(regs[d], imm),
            K::SDiv64R => regs[d] = sdiv64(regs[d], regs[s]),
            K::Or64I => regs[d] |= imm,
            K::Or64R => regs[d] |= regs[s],
            K::And64I => regs[d] &= imm,
            K::And64R => regs[d] &= regs[s],
            K::Lsh64I => regs[d] = regs[d].wrapping_shl(imm as u32),
            K::Lsh64R => regs[d] = regs[d].wrapping_shl(regs[s] as u32),
            K::Rsh64I => regs[d] = regs[d].wrapping_shr(imm as u32),
            K::Rsh64R => regs[d] = regs[d].wrapping_shr(regs[s] as u32),
            K::Mod64I => regs[d] = regs[d].checked_rem(imm).unwrap_or(regs[d]),
            K::Mod64R => regs[d] = regs[d].checked_rem(regs[s]).unwrap_or(regs[d]),
            K::SMod64I => regs[d] = smod64(regs[d], imm),
            K::SMod64R => regs[d] = smod64(regs[d], regs[s]),
            K::Xor64I => regs[d] ^= imm,
            K::Xor64R => regs[d] ^= regs[s],
            K::Mov64I => regs[d] = imm,
            K::Mov64R => regs[d] = regs[s],
            K::Arsh64I => regs[d] = (regs[d] as i64).wrapping_shr(imm as u32) as u64,
            K::Arsh64R => regs[d] = (regs[d] as i64).wrapping_shr(regs[s] as u32) as u64,
            K::Add32I => regs[d] = u64::from((regs[d] as u32).wrapping_add(imm32)),
            K::Add32R => regs[d] = u64::from((regs[d] as u32).wrapping_add(regs[s] as u32)),
            K::Sub32I => regs[d] = u64::from((regs[d] as u32).wrapping_sub(imm32)),
            K::Sub32R => regs[d] = u64::from((regs[d] as u32).wrapping_sub(regs[s] as u32)),
            K::Mul32I => regs[d] = u64::from((regs[d] as u32).wrapping_mul(imm32)),
            K::Mul32R => regs[d] = u64::from((regs[d] as u32).wrapping_mul(regs[s] as u32)),
            K::Div32I => regs[d] = u64::from((regs[d] as u32).checked_div(imm32).unwrap_or(0)),
            K::Div32R => {
                regs[d] = u64::from((regs[d] as u32).checked_div(regs[s] as u32).unwrap_or(0))
            }
            K::SDiv32I => regs[d] = sdiv32(regs[d], imm),
            K::SDiv32R => regs[d] = sdiv32(regs[d], regs[s]),
            K::Or32I => regs[d] = u64::from(regs[d] as u32 | imm32),
            K::Or32R => regs[d] = u64::from(regs[d] as u32 | regs[s] as u32),
            K::And32I => regs[d] = u64::from(regs[d] as u32 & imm32),
            K::And32R => regs[d] = u64::from(regs[d] as u32 & regs[s] as u32),
            K::Lsh32I => regs[d] = u64::from((regs[d] as u32).wrapping_shl(imm32)),
            K::Lsh32R => regs[d] = u64::from((regs[d] as u32).wrapping_shl(regs[s] as u32)),
            K::Rsh32I => regs[d] = u64::from((regs[d] as u32).wrapping_shr(imm32)),
            K::Rsh32R => regs[d] = u64::from((regs[d] as u32).wrapping_shr(regs[s] as u32)),
            K::Mod32I => {
                let a = regs[d] as u32;
                regs[d] = u64::from(a.checked_rem(imm32).unwrap_or(a))
            }
            K::Mod32R => {
                let a = regs[d] as u32;
                regs[d] = u64::from(a.checked_rem(regs[s] as u32).unwrap_or(a))
            }
            K::SMod32I => regs[d] = smod32(regs[d], imm),
            K::SMod32R => regs[d] = smod32(regs[d], regs[s]),
            K::Xor32I => regs[d] = u64::from(regs[d] as u32 ^ imm32),
            K::Xor32R => regs[d] = u64::from(regs[d] as u32 ^ regs[s] as u32),
            K::Mov32I => regs[d] = u64::from(imm32),
            K::Mov32R => regs[d] = u64::from(regs[s] as u32),
            K::Arsh32I => regs[d] = u64::from((regs[d] as i32).wrapping_shr(imm32) as u32),
            K::Arsh32R => regs[d] = u64::from((regs[d] as i32).wrapping_shr(regs[s] as u32) as u32),
            K::MovSx64B => regs[d] = i64::from(regs[s] as i8) as u64,
            K::MovSx64H => regs[d] = i64::from(regs[s] as i16) as u64,
            K::MovSx64W => regs[d] = i64::from(regs[s] as i32) as u64,
            K::MovSx32B => regs[d] = u64::from(i32::from(regs[s] as i8) as u32),
            K::MovSx32H => regs[d] = u64::from(i32::from(regs[s] as i16) as u32),
            K::Neg64 => regs[d] = regs[d].wrapping_neg(),
            K::Neg32 => regs[d] = u64::from((regs[d] as u32).wrapping_neg()),
            K::Le16 => regs[d] = u64::from((regs[d] as u16).to_le()),
            K::Le32 => regs[d] = u64::from((regs[d] as u32).to_le()),
            K::Le64 => regs[d] = regs[d].to_le(),
            K::Be16 => regs[d] = u64::from((regs[d] as u16).to_be()),
            K::Be32 => regs[d] = u64::from((regs[d] as u32).to_be()),
            K::Be64 => regs[d] = regs[d].to_be(),
            K::Swap16 => regs[d] = u64::from((regs[d] as u16).swap_bytes()),
            K::Swap32 => regs[d] = u64::from((regs[d] as u32).swap_bytes()),
            K::Swap64 => regs[d] = regs[d].swap_bytes(),
            K::LdxB => load!(op, d, s, u8, u64::from),
            K::LdxH => load!(op, d, s, u16, u64::from),
            K::LdxW => load!(op, d, s, u32, u64::from),
            K::LdxDW => load!(op, d, s, u64, |v: u64| v),
            K::LdxSB => load!(op, d, s, i8, |v: i8| i64::from(v) as u64),
            K::LdxSH => load!(op, d, s, i16, |v: i16| i64::from(v) as u64),
            K::LdxSW => load!(op, d, s, i32, |v: i32| i64::from(v) as u64),
            K::StB => store!(op, d, u8, imm),
            K::StH => store!(op, d, u16, imm),
            K::StW => store!(op, d, u32, imm),
            K::StDW => store!(op, d, u64, imm),
            K::StxB => store!(op, d, u8, regs[s]),
            K::StxH => store!(op, d, u16, regs[s]),
            K::StxW => store!(op, d, u32, regs[s]),
            K::StxDW => store!(op, d, u64, regs[s]),
            K::Atomic32 | K::Atomic64 => {
                let wide = op.kind == K::Atomic64;
                let len: u64 = if wide { 8 } else { 4 };
                let addr = regs[d].wrapping_add(i64::from(op.aux) as u64);
                let a = match mem.check(addr, len, Access::Write) {
                    Ok(a) => a,
                    Err(e) => bail!(mem_fault(prog, pc, addr, len, Access::Write, e)),
                };
                if a & (len.wrapping_sub(1)) != 0 {
                    bail!(fault(prog, pc, addr, len, FaultKind::Misaligned));
                }
                let fetch = imm & 0x100 != 0;
                let code = imm & 0xff;
                if wide {
                    // SAFETY: `a` is 8-aligned and lies in a writable region
                    // or the live stack (checked above).
                    let cell = unsafe { AtomicU64::from_ptr(a as *mut u64) };
                    let v = regs[s];
                    let old = match code {
                        0 => cell.fetch_add(v, Ordering::SeqCst),
                        1 => cell.fetch_or(v, Ordering::SeqCst),
                        2 => cell.fetch_and(v, Ordering::SeqCst),
                        3 => cell.fetch_xor(v, Ordering::SeqCst),
                        4 => cell.swap(v, Ordering::SeqCst),
                        _ => match cell.compare_exchange(
                            regs[0],
                            v,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        ) {
                            Ok(x) | Err(x) => x,
                        },
                    };
                    if code == 5 {
                        regs[0] = old;
                    } else if fetch {
                        regs[s] = old;
                    }
                } else {
                    // SAFETY: `a` is 4-aligned and lies in a writable region
                    // or the live stack (checked above).
                    let cell = unsafe { AtomicU32::from_ptr(a as *mut u32) };
                    let v = regs[s] as u32;
                    let old = match code {
                        0 => cell.fetch_add(v, Ordering::SeqCst),
                        1 => cell.fetch_or(v, Ordering::SeqCst),
                        2 => cell.fetch_and(v, Ordering::SeqCst),
                        3 => cell.fetch_xor(v, Ordering::SeqCst),
                        4 => cell.swap(v, Ordering::SeqCst),
                        _ => match cell.compare_exchange(
                            regs[0] as u32,
                            v,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        ) {
                            Ok(x) | Err(x) => x,
                        },
                    };
                    if code == 5 {
                        regs[0] = u64::from(old);
                    } else if fetch {
                        regs[s] = u64::from(old);
                    }
                }
            }
            K::LoadImm => {
                regs[d] = imm;
                pc = pc.wrapping_add(2);
                continue;
            }
            K::LdAbsB | K::LdAbsH | K::LdAbsW | K::LdIndB | K::LdIndH | K::LdIndW => {
                // A legacy packet load into r0, big-endian; outside the
                // packet, the function returns 0 (the kernel's
                // `gen_ld_abs`: an `exit`, so a subprogram returns 0 to its
                // caller).
                let (base, n) = match op.kind {
                    K::LdAbsB => (0, 1),
                    K::LdAbsH => (0, 2),
                    K::LdAbsW => (0, 4),
                    K::LdIndB => (regs[s], 1),
                    K::LdIndH => (regs[s], 2),
                    _ => (regs[s], 4),
                };
                let Some(window) = st.packet else {
                    bail!(fault(prog, pc, 0, 0, FaultKind::NoPacket));
                };
                let off = base.wrapping_add(imm);
                // SAFETY: `mem.check` gives only addresses it proved
                // readable.
                match unsafe { window.load(off, n, |a, len| mem.check(a, len, Access::Read)) } {
                    Ok(Some(v)) => regs[0] = v,
                    Ok(None) => {
                        regs[0] = 0;
                        function_exit!();
                    }
                    Err((a, len, e)) => bail!(mem_fault(prog, pc, a, len, Access::Read, e)),
                }
            }
            K::Ja => {
                pc = op.aux as usize;
                continue;
            }
            K::JeqI => jump!(op, regs[d] == imm),
            K::JeqR => jump!(op, regs[d] == regs[s]),
            K::JgtI => jump!(op, regs[d] > imm),
            K::JgtR => jump!(op, regs[d] > regs[s]),
            K::JgeI => jump!(op, regs[d] >= imm),
            K::JgeR => jump!(op, regs[d] >= regs[s]),
            K::JsetI => jump!(op, regs[d] & imm != 0),
            K::JsetR => jump!(op, regs[d] & regs[s] != 0),
            K::JneI => jump!(op, regs[d] != imm),
            K::JneR => jump!(op, regs[d] != regs[s]),
            K::JsgtI => jump!(op, (regs[d] as i64) > imm as i64),
            K::JsgtR => jump!(op, (regs[d] as i64) > regs[s] as i64),
            K::JsgeI => jump!(op, (regs[d] as i64) >= imm as i64),
            K::JsgeR => jump!(op, (regs[d] as i64) >= regs[s] as i64),
            K::JltI => jump!(op, regs[d] < imm),
            K::JltR => jump!(op, regs[d] < regs[s]),
            K::JleI => jump!(op, regs[d] <= imm),
            K::JleR => jump!(op, regs[d] <= regs[s]),
            K::JsltI => jump!(op, (regs[d] as i64) < imm as i64),
            K::JsltR => jump!(op, (regs[d] as i64) < regs[s] as i64),
            K::JsleI => jump!(op, (regs[d] as i64) <= imm as i64),
            K::JsleR => jump!(op, (regs[d] as i64) <= regs[s] as i64),
            K::Jeq32I => jump!(op, regs[d] as u32 == imm32),
            K::Jeq32R => jump!(op, regs[d] as u32 == regs[s] as u32),
            K::Jgt32I => jump!(op, regs[d] as u32 > imm32),
            K::Jgt32R => jump!(op, regs[d] as u32 > regs[s] as u32),
            K::Jge32I => jump!(op, regs[d] as u32 >= imm32),
            K::Jge32R => jump!(op, regs[d] as u32 >= regs[s] as u32),
            K::Jset32I => jump!(op, regs[d] as u32 & imm32 != 0),
            K::Jset32R => jump!(op, regs[d] as u32 & regs[s] as u32 != 0),
            K::Jne32I => jump!(op, regs[d] as u32 != imm32),
            K::Jne32R => jump!(op, regs[d] as u32 != regs[s] as u32),
            K::Jsgt32I => jump!(op, (regs[d] as i32) > imm32 as i32),
            K::Jsgt32R => jump!(op, (regs[d] as i32) > regs[s] as i32),
            K::Jsge32I => jump!(op, (regs[d] as i32) >= imm32 as i32),
            K::Jsge32R => jump!(op, (regs[d] as i32) >= regs[s] as i32),
            K::Jlt32I => jump!(op, (regs[d] as u32) < imm32),
            K::Jlt32R => jump!(op, (regs[d] as u32) < regs[s] as u32),
            K::Jle32I => jump!(op, regs[d] as u32 <= imm32),
            K::Jle32R => jump!(op, regs[d] as u32 <= regs[s] as u32),
            K::Jslt32I => jump!(op, (regs[d] as i32) < imm32 as i32),
            K::Jslt32R => jump!(op, (regs[d] as i32) < regs[s] as i32),
            K::Jsle32I => jump!(op, (regs[d] as i32) <= imm32 as i32),
            K::Jsle32R => jump!(op, (regs[d] as i32) <= regs[s] as i32),
            K::Call => {
                let Some(h) = prog.helper_table.get(imm as usize) else {
                    bail!(fault(prog, pc, 0, 0, FaultKind::InvalidPc));
                };
                helper!(h);
            }
            K::CallLocal => {
                if let Err(f) = push_frame(prog, prog_idx, pc, &mut regs, st, mem) {
                    bail!(f);
                }
                pc = op.aux as usize;
                continue;
            }
            K::CallX => {
                let value = regs[d];
                if value & FUNC_ADDR_MASK == FUNC_ADDR_TAG {
                    let Some(t) = prog.callback_target(value) else {
                        bail!(fault(prog, pc, 0, 0, FaultKind::BadCallTarget { value }))
                    };
                    if let Err(f) = push_frame(prog, prog_idx, pc, &mut regs, st, mem) {
                        bail!(f);
                    }
                    pc = t;
                    continue;
                }
                let helper = i32::try_from(value)
                    .ok()
                    .and_then(|id| prog.helpers.get(id));
                let Some(h) = helper else {
                    bail!(fault(prog, pc, 0, 0, FaultKind::BadCallTarget { value }));
                };
                helper!(h);
            }
            K::TailCall => {
                let index = regs[3];
                let target = match (program_array, u32::try_from(index)) {
                    (Some(arr), Ok(i)) if st.tail_calls < MAX_TAIL_CALLS => arr.get(regs[2], i),
                    _ => None,
                };
                match target {
                    Some(t) => {
                        st.tail_calls = st.tail_calls.wrapping_add(1);
                        save!();
                        return Ok(Stop::TailCall(t));
                    }
                    // A failed tail call falls through, as in the kernel.
                    None => regs[0] = crate::helpers::neg_errno(libc::ENOENT),
                }
            }
            K::Loop => {
                // bpf_loop(nr_loops, callback_fn, callback_ctx, flags)
                let n = regs[1] as u32 as u64;
                let cb = regs[2];
                if regs[4] != 0 {
                    regs[0] = crate::helpers::neg_errno(libc::EINVAL);
                } else if n > BPF_MAX_LOOPS {
                    regs[0] = crate::helpers::neg_errno(libc::E2BIG);
                } else if n == 0 {
                    regs[0] = 0;
                } else {
                    let Some(t) = prog.callback_target(cb) else {
                        bail!(fault(
                            prog,
                            pc,
                            0,
                            0,
                            FaultKind::BadCallTarget { value: cb }
                        ))
                    };
                    let ctx = regs[3];
                    if let Err(f) = push_frame(prog, prog_idx, pc, &mut regs, st, mem) {
                        bail!(f);
                    }
                    st.frames[st.depth.wrapping_sub(1) & (MAX_CALL_FRAMES - 1)].looping =
                        Some(LoopState {
                            i: 0,
                            n,
                            ctx,
                            callback: t,
                        });
                    regs[1] = 0;
                    regs[2] = ctx;
                    regs[3] = 0;
                    regs[4] = 0;
                    regs[5] = 0;
                    pc = t;
                    continue;
                }
            }
            K::Exit => function_exit!(),
            K::Hole => bail!(fault(prog, pc, 0, 0, FaultKind::InvalidPc)),
            K::MapLookup => {
                let fast = match &prog.accel {
                    Some(a) => a.lookup(mem, regs[1], regs[2]),
                    None => None,
                };
                match fast {
                    Some(r0) => regs[0] = r0,
                    None => {
                        let Some(h) = prog.helper_table.get(imm as usize) else {
                            bail!(fault(prog, pc, 0, 0, FaultKind::InvalidPc));
                        };
                        helper!(h);
                    }
                }
            }
            K::CorePoison => bail!(fault(prog, pc, 0, 0, FaultKind::PoisonedCoreRelocation)),
        }
        pc = next;
    }
}

/// Marks the taken side of a conditional jump. Without it LLVM turns the
/// jump into a conditional move of the next pc, which puts the comparison
/// (and the load of its register) on the dispatch critical path and defeats
/// branch prediction: loops run about 2x slower.
#[inline(always)]
fn branch_taken() {
    // SAFETY: an empty assembly block: no instructions, no memory or stack
    // access, flags preserved. It only stops if-conversion.
    unsafe { std::arch::asm!("", options(nomem, nostack, preserves_flags)) }
}

/// Enters a bpf-to-bpf call from `pc`: saves r6-r9 and the frame pointer
/// and moves to a fresh 512-byte frame.
fn push_frame(
    prog: &PreparedProgram,
    prog_idx: usize,
    pc: usize,
    regs: &mut [u64; 16],
    st: &mut State,
    mem: &mut MemoryMap,
) -> Result<(), Fault> {
    let depth = st.depth.wrapping_add(1);
    if depth >= MAX_CALL_FRAMES {
        return Err(fault(
            prog,
            pc,
            0,
            0,
            FaultKind::CallDepthExceeded {
                limit: MAX_CALL_FRAMES,
            },
        ));
    }
    let mut saved = [0u64; 4];
    saved.copy_from_slice(&regs[6..10]);
    st.frames[st.depth & (MAX_CALL_FRAMES - 1)] = Frame {
        ret_pc: pc.wrapping_add(1),
        prog: prog_idx,
        saved,
        fp: regs[10],
        looping: None,
        driven: false,
    };
    st.depth = depth;
    st.max_depth = st.max_depth.max(depth);
    regs[10] = regs[10].wrapping_sub(STACK_SIZE as u64);
    mem.stack_lo = regs[10].wrapping_sub(STACK_SIZE as u64);
    Ok(())
}

fn sdiv64(a: u64, b: u64) -> u64 {
    // Division by zero gives 0; INT_MIN / -1 (the only overflow) gives INT_MIN.
    let (a, b) = (a as i64, b as i64);
    if b == 0 {
        0
    } else {
        a.checked_div(b).unwrap_or(a) as u64
    }
}

fn smod64(a: u64, b: u64) -> u64 {
    // Modulo by zero leaves dst; INT_MIN % -1 gives 0.
    let (sa, sb) = (a as i64, b as i64);
    if sb == 0 {
        a
    } else {
        sa.checked_rem(sb).unwrap_or(0) as u64
    }
}

fn sdiv32(a: u64, b: u64) -> u64 {
    let (a, b) = (a as i32, b as i32);
    if b == 0 {
        0
    } else {
        u64::from(a.checked_div(b).unwrap_or(a) as u32)
    }
}

fn smod32(a: u64, b: u64) -> u64 {
    let (a, b) = (a as i32, b as i32);
    if b == 0 {
        u64::from(a as u32)
    } else {
        u64::from(a.checked_rem(b).unwrap_or(0) as u32)
    }
}
