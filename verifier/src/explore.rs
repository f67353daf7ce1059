//! The search: every path of the program is executed on abstract states,
//! depth first, the fall-through of each branch before its target
//! (`do_check`); at prune points a state covered by an explored, finished
//! state is dropped (`is_state_visited`), and a state covered by one of
//! its own unfinished ancestors is a loop the verifier cannot bound.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use userbpf_vm::disasm::format_instruction;
use userbpf_vm::isa::{CallTarget, Instruction, Lddw};
use userbpf_vm::Program;

use crate::cfg::{function_target, target_of};
use crate::ctx::Context;
use crate::env::Env;
use crate::error::{Stats, VerifyError};
use crate::liveness::{live_in, RegMask};
use crate::reg::{Reg, RegType};
use crate::state::{state_within, widen, Frame, FrameMask, FxHasher, State};
use crate::Options;

/// An explored state kept for pruning.
struct Entry {
    state: State,
    /// The previous entry on the path that reached it.
    parent: Option<usize>,
    /// Paths still being explored from it (0: finished, safe to prune
    /// against).
    branches: u32,
    /// Times it pruned a path, and times it was compared in vain: states
    /// that keep missing are dropped from the pruning list (as the
    /// kernel drops them on `miss_cnt > hit_cnt * 3 + 3`, more patiently).
    hits: u32,
    misses: u32,
    /// Where it was explored.
    pc: usize,
    /// Still compared with later states: in its pc's pruning list, or
    /// reaching a helper that calls back (`at_callback`). A finished entry
    /// that is neither keeps only its place in the tree of paths: its
    /// state is dropped, so memory follows the states that can still prune
    /// (as the kernel frees its states), not every state ever stored.
    listed: bool,
    at_callback: bool,
}

impl Entry {
    /// Drops the state of a finished entry nothing compares any more.
    fn release_if_unused(&mut self) {
        if self.branches == 0 && !self.listed && !self.at_callback {
            self.state = State {
                frames: Vec::new(),
                refs: Vec::new(),
                lock: None,
            };
        }
    }
}

/// A branch waiting to be explored.
struct Pending {
    state: State,
    pc: usize,
    parent: Option<usize>,
    /// The jump that created it, for the log.
    from: usize,
    /// The last backward jump on its path (see `Verifier::back_edge`).
    back_edge: Option<(usize, usize)>,
}

/// What executing one instruction did.
pub(crate) enum Step {
    /// Continue at this pc.
    Next(usize),
    /// A conditional jump with both outcomes possible: continue at the
    /// first pc; the state for the second is returned.
    Branch(usize, Box<State>, usize),
    /// The path ended (exit from the entry function).
    Done,
}

/// The verifier's working data for one program.
pub(crate) struct Verifier<'a> {
    pub(crate) prog: &'a Program,
    pub(crate) env: &'a Env,
    pub(crate) opts: &'a Options,
    live: Vec<RegMask>,
    /// Registers and stack slots whose values matter, per pc.
    precise: Vec<crate::precision::Precise>,
    /// Functions whose callers' stacks matter whole while they run
    /// ([`crate::precision::Precision::reads_callers_stack`]).
    reads_callers_stack: Vec<usize>,
    prune_point: Vec<bool>,
    entries: Vec<Entry>,
    /// Finished entries per pc, for pruning (an entry joins its list
    /// when its last path ends).
    explored: Vec<Vec<usize>>,
    /// Entries in the `explored` lists.
    stored: u64,
    /// Jumps processed, and the counts when a state was last stored.
    jumps: u64,
    jumps_at_store: u64,
    insns_at_store: u64,
    /// Entries by (pc, hash of the state), to find a path's own earlier
    /// state quickly (infinite loops).
    by_hash: HashMap<(usize, u64), Vec<usize>>,
    pending: Vec<Pending>,
    pub(crate) stats: Stats,
    pub(crate) log: String,
    next_id: u32,
    /// pc of the instruction being executed.
    pub(crate) pc: usize,
    /// pc of the instruction executed before it on this path.
    prev_pc: usize,
    /// Scratch states for comparing states up to the numbering of their
    /// ids (their allocations reused).
    canon: State,
    canon_old: State,
    /// The last jump to an earlier (or the same) instruction on this path,
    /// from and to: the back-edge an infinite loop came round by.
    back_edge: Option<(usize, usize)>,
    /// Paths started by the last instruction besides its own (the bodies
    /// of asynchronous callbacks): state and first pc.
    spawned: Vec<(State, usize)>,
    /// Calls of helpers that call back synchronously: the loop heads of
    /// their callbacks, where a state covered by an unfinished one is
    /// pruned (the helper bounds the iterations).
    callback_point: Vec<bool>,
    /// Entries stored at callback points, finished or not.
    at_callback: HashMap<usize, Vec<usize>>,
    /// The deepest stack each function (by its first pc) used on any
    /// path, in bytes (the kernel's `subprog_info[].stack_depth`).
    pub(crate) subprog_depth: Vec<i32>,
    /// Asynchronous callbacks (timers'): their own call chains' roots.
    pub(crate) async_callbacks: std::collections::BTreeSet<usize>,
    /// Global functions a call reached: each is verified once on its
    /// own (`subprog_info[].called`).
    pub(crate) called_globals: std::collections::BTreeSet<usize>,
    /// The program's global functions, as far as their calls and returns
    /// need them.
    pub(crate) globals: Vec<crate::global::GlobalFacts<'a>>,
    /// Targets of backward jumps: where a path can come back to a state
    /// it had.
    loop_head: Vec<bool>,
    /// The kind of pointer each load and store went through on the paths
    /// seen so far (`insn_aux_data[].ptr_type`).
    pub(crate) access_ptr: Vec<Option<crate::mem::AccessPtr>>,
    start: Instant,
    /// The kernel's BTF, once a pointer to a kernel structure needs it.
    kernel_btf: Option<std::sync::Arc<userbpf_vm::object::btf::Btf>>,
    /// The kernel function or tracepoint a tracing program attaches to,
    /// once looked up (`Some(None)`: not in the kernel's BTF).
    traced: Option<Option<std::sync::Arc<crate::kstruct::TracedFunc>>>,
}

/// States reaching a helper that calls back before the next ones are
/// widened.
const WIDEN_AFTER: usize = 4;

/// A state reaching a helper that calls back, compared this many times
/// per hit (plus one) without covering the state compared, leaves the
/// list of such states (which keeps `WIDEN_AFTER` of them, so widening
/// goes on).
const CALLBACK_MISSES: u32 = 64;

/// A finished state compared this many times per hit (plus one) without
/// covering a state that is kept leaves the pruning list (the kernel's
/// factor for checkpoints; Linux's selftest `test_verif_scale3`, 90 calls
/// each reached by a growing number of states, needs the states of each
/// call kept that long).
const MISS_FACTOR: u32 = 64;

/// Largest log kept, in bytes; the rest is dropped with a note.
const MAX_LOG: usize = 16 << 20;

impl<'a> Verifier<'a> {
    pub(crate) fn new(prog: &'a Program, env: &'a Env, opts: &'a Options) -> Verifier<'a> {
        let start = Instant::now();
        let len = prog.len();
        let mut prune_point = vec![false; len];
        let mut callback_point = vec![false; len];
        let mut loop_head = vec![false; len];
        for (pc, i) in prog.instructions() {
            let target = target_of(pc, &i);
            let next = pc.wrapping_add(i.slots());
            if let Some(t) = target.filter(|&t| t <= pc) {
                mark(&mut loop_head, t);
            }
            match i {
                Instruction::Jump { .. } => {
                    if let Some(t) = target {
                        mark(&mut prune_point, t);
                    }
                    mark(&mut prune_point, next);
                }
                Instruction::Ja { .. } | Instruction::JaLong { .. } => {
                    if let Some(t) = target {
                        mark(&mut prune_point, t);
                    }
                }
                Instruction::Call(CallTarget::Local(_))
                | Instruction::LoadImm64 {
                    value: Lddw::Func(_),
                    ..
                } => {
                    if let Some(t) = function_target(pc, &i) {
                        mark(&mut prune_point, t);
                    }
                    if matches!(i, Instruction::Call(_)) {
                        mark(&mut prune_point, next);
                    }
                }
                Instruction::Call(CallTarget::Helper(id)) => {
                    mark(&mut prune_point, next);
                    if matches!(id, 164 | 180 | 181) {
                        mark(&mut prune_point, pc);
                        mark(&mut callback_point, pc);
                    }
                }
                Instruction::Call(CallTarget::Kfunc { btf_id, .. })
                    if btf_id == userbpf_vm::kfunc::BPF_ITER_NUM_NEXT =>
                {
                    // The loop around an iterator's next() is bounded by
                    // the iterator.
                    mark(&mut prune_point, next);
                    mark(&mut prune_point, pc);
                    mark(&mut callback_point, pc);
                }
                Instruction::Call(_) => mark(&mut prune_point, next),
                _ => {}
            }
        }
        Verifier {
            prog,
            env,
            opts,
            live: Vec::new(),
            precise: Vec::new(),
            reads_callers_stack: Vec::new(),
            prune_point,
            entries: Vec::new(),
            explored: (0..len).map(|_| Vec::new()).collect(),
            by_hash: HashMap::new(),
            stored: 0,
            jumps: 0,
            jumps_at_store: 0,
            insns_at_store: 0,
            pending: Vec::new(),
            stats: Stats::default(),
            log: String::new(),
            next_id: 0,
            pc: 0,
            prev_pc: 0,
            back_edge: None,
            canon: State::empty(),
            canon_old: State::empty(),
            spawned: Vec::new(),
            callback_point,
            at_callback: HashMap::new(),
            subprog_depth: vec![0; len],
            async_callbacks: std::collections::BTreeSet::new(),
            called_globals: std::collections::BTreeSet::new(),
            globals: crate::global::global_facts(prog, env),
            loop_head,
            access_ptr: vec![None; len],
            start,
            kernel_btf: env.kernel_btf.clone(),
            traced: None,
        }
    }

    /// The kernel function or tracepoint this tracing program attaches
    /// to, when the kernel's BTF describes it (otherwise its context is
    /// plain numbers: a function of user space, or no BTF to tell).
    pub(crate) fn traced_func(&mut self) -> Option<std::sync::Arc<crate::kstruct::TracedFunc>> {
        use userbpf_vm::object::AttachType as A;
        if let Some(t) = &self.traced {
            return t.clone();
        }
        let tracepoint = match self.env.attach_type {
            Some(A::TraceRawTp) => true,
            Some(A::TraceFentry | A::TraceFexit | A::ModifyReturn) => false,
            _ => {
                self.traced = Some(None);
                return None;
            }
        };
        let found = self.env.attach_btf_name.clone().and_then(|name| {
            let btf = self.kernel_btf("a tracing program's arguments").ok()?;
            crate::kstruct::traced_func(&btf, &name, tracepoint).map(std::sync::Arc::new)
        });
        self.traced = Some(found.clone());
        found
    }

    /// The id of the kernel structure called `name` (`what` needs it).
    pub(crate) fn kernel_struct(
        &mut self,
        name: &str,
        what: &str,
    ) -> Result<u32, Box<VerifyError>> {
        let btf = self.kernel_btf(what)?;
        crate::kstruct::struct_id(&btf, name)
            .ok_or_else(|| self.error(format!("{what}: the kernel's BTF has no struct {name}")))
    }

    /// The kernel's BTF, which pointers to kernel structures refer to
    /// (`what` needs it: named in the error when there is none).
    pub(crate) fn kernel_btf(
        &mut self,
        what: &str,
    ) -> Result<std::sync::Arc<userbpf_vm::object::btf::Btf>, Box<VerifyError>> {
        use userbpf_vm::object::{TargetBtf, VMLINUX_BTF};
        if let Some(btf) = &self.kernel_btf {
            return Ok(btf.clone());
        }
        match TargetBtf::System.load() {
            Ok(loaded) if loaded.origin == VMLINUX_BTF => {
                self.kernel_btf = Some(loaded.btf.clone());
                Ok(loaded.btf)
            }
            _ => Err(self.error(format!(
                "{what} needs the kernel's BTF ({VMLINUX_BTF}), which this machine does not expose"
            ))),
        }
    }

    /// Starts another path from `state` at `pc` (explored after the
    /// current one).
    pub(crate) fn spawn(&mut self, state: State, pc: usize) {
        self.spawned.push((state, pc));
    }

    /// A fresh id for linking registers or naming a reference.
    pub(crate) fn fresh_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// A possibly-NULL pointer of type `ty`, with a fresh id: its null
    /// check then holds for every copy.
    pub(crate) fn or_null(&mut self, ty: RegType) -> Reg {
        Reg {
            maybe_null: true,
            id: self.fresh_id(),
            ..Reg::pointer(ty, 0)
        }
    }

    /// A pointer of type `ty`, possibly NULL when `maybe_null` (then with
    /// a fresh id, as [`Verifier::or_null`]).
    pub(crate) fn pointer_maybe_null(&mut self, ty: RegType, maybe_null: bool) -> Reg {
        if maybe_null {
            self.or_null(ty)
        } else {
            Reg::pointer(ty, 0)
        }
    }

    /// A possibly-NULL pointer of type `ty` holding a reference acquired
    /// at `pc` (`acquire_reference`), which its NULL branch or a release
    /// gives back.
    pub(crate) fn acquired_or_null(&mut self, st: &mut State, pc: usize, ty: RegType) -> Reg {
        let r = self.or_null(ty);
        st.refs.push((r.id, pc));
        Reg { ref_id: r.id, ..r }
    }

    /// A rejection at the current pc.
    pub(crate) fn error(&self, message: impl Into<String>) -> Box<VerifyError> {
        self.error_at(self.pc, message)
    }

    /// A rejection at `pc`.
    pub(crate) fn error_at(&self, pc: usize, message: impl Into<String>) -> Box<VerifyError> {
        let message = message.into();
        let mut stats = self.stats;
        stats.time = self.start.elapsed();
        let mut log = self.log.clone();
        if self.opts.log_level > 0 {
            let _ = writeln!(log, "{message}");
        }
        Box::new(VerifyError {
            program: self.prog.name().to_string(),
            pc,
            insn: self
                .prog
                .instruction(pc)
                .map(|i| format_instruction(&i))
                .unwrap_or_default(),
            message,
            log,
            stats,
        })
    }

    /// Appends a line to the log (when asked for one).
    pub(crate) fn log_line(&mut self, line: impl FnOnce() -> String) {
        if self.opts.log_level == 0 || self.log.len() > MAX_LOG {
            return;
        }
        self.log.push_str(&line());
        self.log.push('\n');
        if self.log.len() > MAX_LOG {
            self.log.push_str("(log truncated)\n");
        }
    }

    /// The state at entry: `r1` the context, `r10` the frame pointer.
    pub(crate) fn initial_state(&self) -> State {
        let mut frame = Frame::new(0, 0, 0);
        match self.env.context {
            Context::Raw { len: 0 } => {
                frame.regs[1] = Reg::constant(0);
                frame.regs[2] = Reg::constant(0);
            }
            Context::Raw { len } => {
                frame.regs[1] = Reg::pointer(
                    RegType::Mem {
                        size: len,
                        rdonly: false,
                    },
                    0,
                );
                frame.regs[2] = Reg::constant(u64::from(len));
            }
            _ => frame.regs[1] = Reg::pointer(RegType::Ctx, 0),
        }
        State {
            frames: vec![frame],
            refs: Vec::new(),
            lock: None,
        }
    }

    /// Explores every path from `state` at pc 0.
    pub(crate) fn run(&mut self, state: State) -> Result<(), Box<VerifyError>> {
        let starts = crate::cfg::function_starts(self.prog);
        let result = crate::cfg::check_functions(self.prog, &starts)
            .and_then(|()| {
                crate::cfg::check_scalar_returns(self.prog, &starts, &self.env.non_scalar_returns)
            })
            .and_then(|()| crate::cfg::check_reachable(self.prog))
            .map_err(|(pc, message)| self.error_at(pc, message))
            .and_then(|()| self.search(state))
            .and_then(|()| self.check_max_stack_depth(&starts));
        self.stats.time = self.start.elapsed();
        result
    }

    fn search(&mut self, mut cur: State) -> Result<(), Box<VerifyError>> {
        let mut pc = 0usize;
        let mut parent: Option<usize> = None;
        loop {
            // One path.
            loop {
                self.pc = pc;
                if self.prune_point.get(pc).copied().unwrap_or(false) {
                    match self.visit(pc, &mut cur, parent)? {
                        Visit::Pruned => break,
                        Visit::Stored(e) => parent = Some(e),
                        Visit::Unstored => {}
                    }
                }
                self.stats.processed = self.stats.processed.saturating_add(1);
                if self.stats.processed > self.opts.max_processed {
                    return Err(self.error(format!(
                        "BPF program is too large. Processed {} insn",
                        self.stats.processed
                    )));
                }
                let insn = self
                    .prog
                    .instruction(pc)
                    .ok_or_else(|| self.error("invalid insn idx (second slot of an lddw)"))?;
                if self.opts.log_level > 1 {
                    let text = format_instruction(&insn);
                    let st = describe(&cur);
                    self.log_line(|| format!("{pc}: {st}\n{pc}: {text}"));
                }
                self.prev_pc = pc;
                if matches!(
                    insn,
                    Instruction::Jump { .. }
                        | Instruction::Ja { .. }
                        | Instruction::JaLong { .. }
                        | Instruction::Call(_)
                        | Instruction::CallX { .. }
                        | Instruction::Exit
                ) {
                    self.jumps = self.jumps.saturating_add(1);
                }
                let step = self.step(&mut cur, pc, &insn)?;
                for (state, at) in self.spawned.drain(..) {
                    self.pending.push(Pending {
                        state,
                        pc: at,
                        parent: None,
                        from: pc,
                        back_edge: None,
                    });
                }
                let jump = matches!(
                    insn,
                    Instruction::Jump { .. } | Instruction::Ja { .. } | Instruction::JaLong { .. }
                );
                let back = |to: usize| (jump && to <= pc).then_some((pc, to));
                match step {
                    Step::Next(next) => {
                        self.back_edge = back(next).or(self.back_edge);
                        pc = next;
                    }
                    Step::Branch(next, other, other_pc) => {
                        if let Some(p) = parent {
                            self.entries[p].branches = self.entries[p].branches.saturating_add(1);
                        }
                        self.pending.push(Pending {
                            state: *other,
                            pc: other_pc,
                            parent,
                            from: pc,
                            back_edge: back(other_pc).or(self.back_edge),
                        });
                        self.back_edge = back(next).or(self.back_edge);
                        pc = next;
                    }
                    Step::Done => break,
                }
            }
            // The path ended: its states are finished once all their
            // branches are.
            let mut up = parent;
            while let Some(p) = up {
                let e = &mut self.entries[p];
                e.branches = e.branches.saturating_sub(1);
                if e.branches > 0 {
                    break;
                }
                up = e.parent;
                let at = e.pc;
                if self.explored[at].len() < self.opts.max_states_per_insn {
                    self.explored[at].push(p);
                    self.entries[p].listed = true;
                    self.stored = self.stored.saturating_add(1);
                    self.stats.peak_states = self.stats.peak_states.max(self.stored);
                } else {
                    self.entries[p].release_if_unused();
                }
            }
            match self.pending.pop() {
                None => return Ok(()),
                Some(next) => {
                    if self.opts.log_level > 0 {
                        // A global function's own verification starts (a
                        // path started by a call, in a frame of its own).
                        let f = &next.state.frames[..];
                        let from_call =
                            matches!(self.prog.instruction(next.from), Some(Instruction::Call(_)));
                        if let [only] = f {
                            if let Some(g) = self
                                .global(only.subprog)
                                .and_then(|i| self.globals.get(i))
                                .filter(|_| from_call && next.pc == only.subprog && !only.callback)
                            {
                                let (func, name) = (g.func, g.function.name.clone());
                                self.log_line(|| format!("Validating {name}() func#{func}..."));
                            }
                        }
                    }
                    if self.opts.log_level > 1 {
                        let st = describe(&next.state);
                        let (from, to) = (next.from, next.pc);
                        self.log_line(|| format!("from {from} to {to}: {st}"));
                    }
                    cur = next.state;
                    pc = next.pc;
                    self.prev_pc = next.from;
                    self.back_edge = next.back_edge;
                    parent = next.parent;
                }
            }
        }
    }

    /// What matters in each frame of `state` at `pc` for comparisons.
    /// Liveness and precision, computed on the first comparison of
    /// states (a program without branches never needs them).
    fn ensure_analyses(&mut self) {
        if self.live.is_empty() {
            let cfg = crate::cfg::Cfg::new(self.prog);
            self.live = live_in(&cfg);
            let precision = crate::precision::precise(&cfg);
            self.precise = precision.at;
            self.reads_callers_stack = precision.reads_callers_stack;
        }
    }

    fn live_masks(&self, state: &State, pc: usize) -> Vec<FrameMask> {
        let n = state.frames.len();
        let mut masks = Vec::with_capacity(n);
        for i in 0..n {
            let mask = if i.wrapping_add(1) == n {
                let p = self.precise.get(pc).copied().unwrap_or_default();
                FrameMask {
                    live: self.live.get(pc).copied().unwrap_or(u16::MAX),
                    precise_regs: p.regs,
                    precise_stack: p.stack,
                }
            } else {
                let above = &state.frames[i.wrapping_add(1)];
                // A caller's stack may be read by the functions it called
                // through pointers: all of it matters.
                let (at, clobbered) = if above.callback {
                    // Below a callback, the caller resumes at the helper
                    // call itself, arguments included.
                    (above.callsite, 0)
                } else {
                    // A caller resumes after the call with r0 from the
                    // callee and r1-r5 clobbered.
                    (above.callsite.wrapping_add(1), 0b11_1111)
                };
                let p = self
                    .precise
                    .get(at)
                    .copied()
                    .unwrap_or(crate::precision::Precise {
                        regs: u16::MAX,
                        stack: u64::MAX,
                    });
                // A caller's stack matters whole while a function that
                // may read it runs; else as after the call.
                let read = above.callback
                    || self
                        .reads_callers_stack
                        .binary_search(&above.subprog)
                        .is_ok();
                FrameMask {
                    live: self.live.get(at).copied().unwrap_or(u16::MAX) & !clobbered,
                    precise_regs: p.regs,
                    precise_stack: if read { u64::MAX } else { p.stack },
                }
            };
            masks.push(mask);
        }
        masks
    }

    fn visit(
        &mut self,
        pc: usize,
        cur: &mut State,
        parent: Option<usize>,
    ) -> Result<Visit, Box<VerifyError>> {
        // A path that comes back to exactly the state it was in at this pc
        // loops forever.
        // Only a loop's head can see its own state again.
        let loop_head = self.loop_head.get(pc).copied().unwrap_or(false);
        let callback_point = self.callback_point.get(pc).copied().unwrap_or(false);
        // A helper that calls back stores every state reaching it: a loop
        // of the caller's own around it comes back to one of those (the
        // loop's head itself may never store one).
        let repeats_here = loop_head || callback_point;
        // (Hashed and compared with their ids renumbered: a loop that
        // makes a new id on each iteration, a number loaded and spilled,
        // still repeats; Linux 6.18 runs such a loop to its instruction
        // limit.)
        // (A state without ids is its own canonical form.)
        let renumbered = repeats_here && cur.has_ids();
        if renumbered {
            self.canon.clone_from(cur);
            self.canon.canonicalize_ids();
        }
        let hash = if repeats_here {
            let mut h = FxHasher::default();
            if renumbered {
                self.canon.hash(&mut h);
            } else {
                cur.hash(&mut h);
            }
            h.finish()
        } else {
            0
        };
        // A helper's callback iterations come back to its call from the
        // callback's `exit`; the helper bounds those. Any other arrival
        // at the call (a loop of the caller's own going around it) is
        // not bounded by the helper, and is checked as any loop is. (The
        // kernel prunes both alike, and so accepts a loop that never
        // ends through a bpf_loop call.) An iterator's next() bounds the
        // loop around it, however it is reached.
        let iterates = callback_point
            && (matches!(
                self.prog.instruction(pc),
                Some(Instruction::Call(CallTarget::Kfunc { .. }))
            ) || matches!(self.prog.instruction(self.prev_pc), Some(Instruction::Exit)));
        if iterates {
            // The helper bounds the callback's iterations: a state covered
            // by any earlier one, finished or not, adds nothing.
            self.ensure_analyses();
            self.ensure_analyses();
            let live = self.live_masks(cur, pc);
            // States that keep missing leave the list (as the kernel
            // evicts a checkpoint's after 64 misses per hit): without that,
            // callback iterations that never converge compare every new
            // state with all the earlier ones.
            if let Some(list) = self.at_callback.get_mut(&pc) {
                let mut i = 0;
                while let Some(&e) = list.get(i) {
                    let entry = &mut self.entries[e];
                    if state_within(&entry.state, cur, &live) {
                        entry.hits = entry.hits.saturating_add(1);
                        self.stats.pruned = self.stats.pruned.saturating_add(1);
                        return Ok(Visit::Pruned);
                    }
                    entry.misses = entry.misses.saturating_add(1);
                    let limit = entry.hits.saturating_add(1).saturating_mul(CALLBACK_MISSES);
                    if entry.misses > limit && list.len() > WIDEN_AFTER {
                        list.remove(i);
                        entry.at_callback = false;
                        entry.release_if_unused();
                    } else {
                        i = i.wrapping_add(1);
                    }
                }
            }
            // Many different states reach this helper (each call of the
            // callback may change what it sees): go on from one covering
            // this one and the previous iteration's, with values that keep
            // changing widened, so the iterations converge.
            let seen = self.at_callback.get(&pc).map_or(0, Vec::len);
            if seen >= WIDEN_AFTER {
                // Against the previous arrival at this call on this path
                // (the callback's previous iteration), not a state another
                // path left here: values of a loop around the call that
                // differ between its iterations are not the callback's.
                let mut up = parent;
                let mut previous = None;
                while let Some(p) = up {
                    let e = &self.entries[p];
                    if e.pc == pc {
                        previous = Some(p);
                        break;
                    }
                    up = e.parent;
                }
                if let Some(w) = previous.and_then(|e| widen(&self.entries[e].state, cur)) {
                    *cur = w;
                }
            }
        } else if let Some(same) = self
            .by_hash
            .get(&(pc, hash))
            .filter(|_| repeats_here)
            // Inside a callback, a state may repeat from one call of the
            // callback to the next: the helper bounds those. (A loop of
            // the callback's own ends at the instruction limit.)
            .filter(|_| !bounded_elsewhere(cur))
        {
            let same = same.clone();
            for e in same {
                let entry = &self.entries[e];
                if entry.branches == 0 {
                    continue;
                }
                self.canon_old.clone_from(&entry.state);
                self.canon_old.canonicalize_ids();
                let canon = if renumbered { &self.canon } else { &*cur };
                if self.canon_old == *canon {
                    let by = self
                        .back_edge
                        .map(|(from, to)| format!("back-edge from insn {from} to {to}: "))
                        .unwrap_or_default();
                    return Err(self.error_at(
                        pc,
                        format!(
                            "infinite loop detected at insn {pc} ({by}the loop comes back to the state it was in)"
                        ),
                    ));
                }
            }
        }
        // Prune against finished states only: an unfinished one is an
        // ancestor of this path, and covering it proves nothing about
        // termination. Newest first; states that keep missing go.
        self.ensure_analyses();
        let live = self.live_masks(cur, pc);
        // Keep a state only every few jumps and instructions (as the
        // kernel does): a long loop does not store one per iteration.
        // (Helpers' callback loops keep every state: they converge on
        // them.)
        let jumps = self.jumps.saturating_sub(self.jumps_at_store);
        let insns = self.stats.processed.saturating_sub(self.insns_at_store);
        let store = callback_point || (jumps >= 2 && insns >= 8);
        let list = &mut self.explored[pc];
        let mut i = list.len();
        while i > 0 {
            i = i.wrapping_sub(1);
            let e = list[i];
            let entry = &mut self.entries[e];
            if state_within(&entry.state, cur, &live) {
                entry.hits = entry.hits.saturating_add(1);
                self.stats.pruned = self.stats.pruned.saturating_add(1);
                if self.opts.log_level > 1 {
                    self.log_line(|| format!("{pc}: safe"));
                }
                return Ok(Visit::Pruned);
            }
            // A miss counts only where this state is kept: where it is
            // not, it says little of the listed state's use (the kernel's
            // `if (add_new_state) sl->miss_cnt++`).
            if store {
                entry.misses = entry.misses.saturating_add(1);
            }
            if entry.misses > entry.hits.saturating_add(1).saturating_mul(MISS_FACTOR) {
                list.swap_remove(i);
                entry.listed = false;
                entry.release_if_unused();
                self.stored = self.stored.saturating_sub(1);
            }
        }
        if !store {
            return Ok(Visit::Unstored);
        }
        self.jumps_at_store = self.jumps;
        self.insns_at_store = self.stats.processed;
        let idx = self.entries.len();
        self.entries.push(Entry {
            state: cur.clone(),
            parent,
            branches: 1,
            hits: 0,
            misses: 0,
            pc,
            listed: false,
            at_callback: callback_point,
        });
        if repeats_here {
            self.by_hash.entry((pc, hash)).or_default().push(idx);
        }
        if callback_point {
            self.at_callback.entry(pc).or_default().push(idx);
        }
        self.stats.total_states = self.stats.total_states.saturating_add(1);
        Ok(Visit::Stored(idx))
    }
}

/// Whether a repeated state may be an iteration bounded by a helper or a
/// kfunc rather than a loop of its own: inside a callback, or with an
/// open-coded iterator alive.
fn bounded_elsewhere(state: &State) -> bool {
    state.frames.iter().any(|f| {
        f.callback
            || f.stack
                .iter()
                .any(|s| s.is_spill() && s.spill.ty == RegType::IterNum)
    })
}

enum Visit {
    Pruned,
    Stored(usize),
    Unstored,
}

fn mark(points: &mut [bool], pc: usize) {
    if let Some(p) = points.get_mut(pc) {
        *p = true;
    }
}

/// The state as the kernel's log prints it: `R1=ctx() R10=fp0 fp-8=mmmmmmmm`.
pub(crate) fn describe(state: &State) -> String {
    let mut out = String::new();
    for (fi, frame) in state.frames.iter().enumerate() {
        if state.frames.len() > 1 {
            let _ = write!(out, "frame{fi}: ");
        }
        for (r, reg) in frame.regs.iter().enumerate() {
            if reg.ty == RegType::NotInit {
                continue;
            }
            if r == 10 {
                let _ = write!(out, "R10=fp0 ");
            } else {
                let _ = write!(out, "R{r}={reg} ");
            }
        }
        for (i, slot) in frame.stack.iter().enumerate() {
            let off = i.wrapping_add(1).wrapping_mul(8);
            if slot.is_spill() {
                let _ = write!(out, "fp-{off}={} ", slot.spill);
            } else if slot
                .bytes
                .iter()
                .any(|&b| b != crate::state::ByteKind::Invalid)
            {
                let s: String = slot
                    .bytes
                    .iter()
                    .rev()
                    .map(|b| match b {
                        crate::state::ByteKind::Invalid => '?',
                        crate::state::ByteKind::Misc => 'm',
                        crate::state::ByteKind::Zero => '0',
                        crate::state::ByteKind::Spill => 'r',
                    })
                    .collect();
                let _ = write!(out, "fp-{off}={s} ");
            }
        }
    }
    if !state.refs.is_empty() {
        let _ = write!(out, "refs=");
        for (i, (id, _)) in state.refs.iter().enumerate() {
            let _ = write!(out, "{}{id}", if i == 0 { "" } else { "," });
        }
    }
    out.trim_end().to_string()
}
