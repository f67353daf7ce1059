//! The control-flow graph the static analyses share: each instruction's
//! successors within its function (a call continues at the next
//! instruction) and predecessors, in flat arrays.

use userbpf_vm::isa::{CallTarget, Instruction, Lddw};
use userbpf_vm::Program;

const NONE: u32 = u32::MAX;

/// Successors and predecessors of every instruction.
#[derive(Debug)]
pub struct Cfg {
    succ: Vec<[u32; 2]>,
    pred_start: Vec<u32>,
    preds: Vec<u32>,
    /// The instructions, by pc (`None` for second `lddw` slots).
    pub insns: Vec<Option<Instruction>>,
}

/// The pc `rel` slots after the instruction at `pc` (`pc + rel + 1`: jump,
/// local call and function-address targets).
pub fn rel_target(pc: usize, rel: i64) -> Option<usize> {
    i64::try_from(pc)
        .ok()?
        .checked_add(1)?
        .checked_add(rel)
        .and_then(|t| usize::try_from(t).ok())
}

/// The target of a jump at `pc`.
pub fn target_of(pc: usize, i: &Instruction) -> Option<usize> {
    rel_target(pc, i.jump_offset()?)
}

/// The subprogram a local call or a function address at `pc` names.
pub fn function_target(pc: usize, i: &Instruction) -> Option<usize> {
    match *i {
        Instruction::Call(CallTarget::Local(rel))
        | Instruction::LoadImm64 {
            value: Lddw::Func(rel),
            ..
        } => rel_target(pc, i64::from(rel)),
        _ => None,
    }
}

/// The first pc of each function, sorted: 0 and every target of a local
/// call or a function address.
pub fn function_starts(program: &Program) -> Vec<usize> {
    starts_of(program.instructions(), program.len())
}

/// Whether the function starting at `start` (among `starts`,
/// [`function_starts`]), or one it calls, calls a helper that changes the
/// packet (`bpf_helper_changes_pkt_data`): the kernel's
/// `changes_pkt_data` of a subprogram.
pub fn changes_packet(program: &Program, starts: &[usize], start: usize) -> bool {
    reaches(
        program,
        starts,
        start,
        |i| matches!(i, Instruction::Call(CallTarget::Helper(id)) if helper_changes_packet(*id)),
    )
}

/// Whether helper `id` may leave the packet changed
/// (`bpf_helper_changes_pkt_data`): the helpers that move or resize it,
/// and `bpf_tail_call#12`, whose target may call them: from a subprogram
/// it returns to the subprogram's caller, and the kernel forgets the
/// packet's pointers after any tail call.
pub fn helper_changes_packet(id: i32) -> bool {
    id == 12 || userbpf_vm::proto::CHANGES_PACKET.contains(&id)
}

/// Whether the function starting at `start`, or one it calls, has a
/// legacy packet load (`BPF_LD_ABS`/`BPF_LD_IND`), which fails by
/// returning from its function: not allowed in a callback.
pub fn loads_packet_legacy(program: &Program, starts: &[usize], start: usize) -> bool {
    reaches(program, starts, start, |i| {
        matches!(i, Instruction::LoadPacket { .. })
    })
}

/// Whether an instruction `found` picks is in the function starting at
/// `start` or in one it calls.
fn reaches(
    program: &Program,
    starts: &[usize],
    start: usize,
    found: impl Fn(&Instruction) -> bool,
) -> bool {
    let mut seen = vec![start];
    let mut todo = vec![start];
    while let Some(f) = todo.pop() {
        let end = starts
            .iter()
            .copied()
            .find(|&s| s > f)
            .unwrap_or(program.len());
        for pc in f..end {
            let Some(i) = program.instruction(pc) else {
                continue;
            };
            if found(&i) {
                return true;
            }
            if matches!(i, Instruction::Call(CallTarget::Local(_))) {
                if let Some(t) = function_target(pc, &i).filter(|t| !seen.contains(t)) {
                    seen.push(t);
                    todo.push(t);
                }
            }
        }
    }
    false
}

/// [`function_starts`] of the instructions `insns` (pc, instruction) of a
/// program `len` slots long.
fn starts_of(insns: impl Iterator<Item = (usize, Instruction)>, len: usize) -> Vec<usize> {
    let mut starts: Vec<usize> = insns
        .filter_map(|(pc, i)| function_target(pc, &i))
        .filter(|&t| t < len)
        .collect();
    starts.push(0);
    starts.sort_unstable();
    starts.dedup();
    starts
}

/// The kernel's `check_subprogs`: the functions (starting at `starts`,
/// [`function_starts`]) are the entry and every target of a local call
/// or a function address; no jump leaves its
/// function (`jump out of range from insn 4 to 2`) and every function
/// ends with `exit` or an unconditional jump, so none falls into the next
/// (`last insn is not an exit or jmp`). On failure, the pc and the
/// kernel's message.
pub fn check_functions(program: &Program, starts: &[usize]) -> Result<(), (usize, String)> {
    let len = program.len();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k.wrapping_add(1)).copied().unwrap_or(len);
        let mut last = None;
        for pc in start..end {
            let Some(i) = program.instruction(pc) else {
                // The second slot of an `lddw` ends the function.
                last = None;
                continue;
            };
            if let Some(t) = target_of(pc, &i).filter(|&t| t < start || t >= end) {
                return Err((pc, format!("jump out of range from insn {pc} to {t}")));
            }
            last = Some((pc, i));
        }
        match last {
            Some((_, Instruction::Exit | Instruction::Ja { .. } | Instruction::JaLong { .. })) => {}
            _ => {
                return Err((
                    end.saturating_sub(1),
                    "last insn is not an exit or jmp".to_string(),
                ))
            }
        }
    }
    Ok(())
}

/// The kernel's `check_cfg`: every instruction is reached from the entry
/// by some edge (jumps both ways, calls into their function and on,
/// function addresses into their function), whatever the values; dead
/// code is refused (`unreachable insn 1`). On failure, the pc and the
/// kernel's message.
pub fn check_reachable(program: &Program) -> Result<(), (usize, String)> {
    let len = program.len();
    let mut seen = vec![false; len];
    let mut todo = vec![0usize];
    while let Some(pc) = todo.pop() {
        let Some(done) = seen.get_mut(pc) else {
            continue;
        };
        if std::mem::replace(done, true) {
            continue;
        }
        let Some(i) = program.instruction(pc) else {
            continue;
        };
        todo.extend(successors(pc, &i).into_iter().flatten());
        todo.extend(function_target(pc, &i));
    }
    match program
        .instructions()
        .map(|(pc, _)| pc)
        .find(|&pc| !seen[pc])
    {
        Some(pc) => Err((pc, format!("unreachable insn {pc}"))),
        None => Ok(()),
    }
}

/// The kernel's `check_btf_func` rule: the functions starting at
/// `non_scalar` (among `starts`, [`function_starts`]), whose BTF prototype
/// returns no scalar, use neither `BPF_LD_ABS`/`BPF_LD_IND` nor tail calls
/// (whose failure returns 0 from the function). On failure, the pc and the
/// kernel's message.
pub fn check_scalar_returns(
    program: &Program,
    starts: &[usize],
    non_scalar: &[usize],
) -> Result<(), (usize, String)> {
    for (k, &start) in starts.iter().enumerate() {
        if start == 0 || !non_scalar.contains(&start) {
            continue;
        }
        let end = starts
            .get(k.wrapping_add(1))
            .copied()
            .unwrap_or(program.len());
        for pc in start..end {
            match program.instruction(pc) {
                Some(Instruction::LoadPacket { .. }) => {
                    return Err((
                        pc,
                        "LD_ABS is only allowed in functions that return 'int'.".to_string(),
                    ))
                }
                Some(Instruction::Call(CallTarget::Helper(12))) => {
                    return Err((
                        pc,
                        "tail_call is only allowed in functions that return 'int'.".to_string(),
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn successors(pc: usize, i: &Instruction) -> [Option<usize>; 2] {
    let next = pc.wrapping_add(i.slots());
    match i {
        Instruction::Exit => [None, None],
        Instruction::Ja { .. } | Instruction::JaLong { .. } => [target_of(pc, i), None],
        Instruction::Jump { .. } => [Some(next), target_of(pc, i)],
        _ => [Some(next), None],
    }
}

impl Cfg {
    /// The graph of `program`.
    pub fn new(program: &Program) -> Cfg {
        let len = program.len();
        let to32 = |x: usize| u32::try_from(x).unwrap_or(NONE);
        let mut succ = vec![[NONE; 2]; len];
        let mut insns = vec![None; len];
        let mut count = vec![0u32; len.saturating_add(1)];
        for (pc, i) in program.instructions() {
            insns[pc] = Some(i);
            for (k, s) in successors(pc, &i).into_iter().enumerate() {
                if let Some(s) = s.filter(|&s| s < len) {
                    succ[pc][k] = to32(s);
                    count[s] = count[s].saturating_add(1);
                }
            }
        }
        // Prefix sums: predecessors of pc are preds[pred_start[pc]..pred_start[pc + 1]].
        let mut pred_start = vec![0u32; len.saturating_add(1)];
        let mut acc = 0u32;
        for pc in 0..len {
            pred_start[pc] = acc;
            acc = acc.saturating_add(count[pc]);
        }
        pred_start[len] = acc;
        let mut fill = pred_start.clone();
        let mut preds = vec![0u32; acc as usize];
        for (pc, ss) in succ.iter().enumerate() {
            for &s in ss.iter().filter(|&&s| s != NONE) {
                let at = &mut fill[s as usize];
                preds[*at as usize] = to32(pc);
                *at = at.saturating_add(1);
            }
        }
        Cfg {
            succ,
            pred_start,
            preds,
            insns,
        }
    }

    /// [`function_starts`] of the program.
    pub fn function_starts(&self) -> Vec<usize> {
        let insns = self
            .insns
            .iter()
            .enumerate()
            .filter_map(|(pc, i)| i.map(|i| (pc, i)));
        starts_of(insns, self.len())
    }

    /// Number of pcs.
    pub fn len(&self) -> usize {
        self.succ.len()
    }

    /// Successors of `pc`.
    pub fn succs(&self, pc: usize) -> impl Iterator<Item = usize> + '_ {
        self.succ[pc]
            .iter()
            .filter(|&&s| s != NONE)
            .map(|&s| s as usize)
    }

    /// Predecessors of `pc`.
    pub fn preds(&self, pc: usize) -> impl Iterator<Item = usize> + '_ {
        let a = self.pred_start[pc] as usize;
        let b = self.pred_start[pc.wrapping_add(1)] as usize;
        self.preds[a..b].iter().map(|&p| p as usize)
    }

    /// A forward data-flow analysis to its fixpoint: the fact before each
    /// instruction reachable from an entry of `entries` (pc and fact) is
    /// the `join` of `step(pc, insn, fact before it)` over its
    /// predecessors; `None` where no entry reaches.
    pub fn forward<T: Copy + PartialEq>(
        &self,
        entries: impl IntoIterator<Item = (usize, T)>,
        join: impl Fn(T, T) -> T,
        step: impl Fn(usize, &Instruction, T) -> T,
    ) -> Vec<Option<T>> {
        let len = self.len();
        let mut at: Vec<Option<T>> = vec![None; len];
        let mut work = Vec::new();
        for (pc, fact) in entries {
            if pc < len {
                at[pc] = Some(fact);
                work.push(pc);
            }
        }
        while let Some(pc) = work.pop() {
            let (Some(fact), Some(i)) = (at[pc], self.insns[pc]) else {
                continue;
            };
            let out = step(pc, &i, fact);
            for s in self.succs(pc) {
                let merged = match at[s] {
                    None => out,
                    Some(old) => join(old, out),
                };
                if at[s] != Some(merged) {
                    at[s] = Some(merged);
                    work.push(s);
                }
            }
        }
        at
    }

    /// A backward data-flow analysis to its fixpoint: the fact before each
    /// instruction is `transfer(pc, insn, join of the facts before its
    /// successors)`, with `join` combining facts and `T::default()` the
    /// fact of no path.
    pub fn backward<T: Copy + Default + PartialEq>(
        &self,
        join: impl Fn(T, T) -> T,
        transfer: impl Fn(usize, &Instruction, T) -> T,
    ) -> Vec<T> {
        let len = self.len();
        let mut before = vec![T::default(); len];
        let mut work: Vec<usize> = (0..len).filter(|&pc| self.insns[pc].is_some()).collect();
        let mut queued = vec![true; len];
        while let Some(pc) = work.pop() {
            queued[pc] = false;
            let Some(i) = self.insns[pc] else { continue };
            let after = self.succs(pc).fold(T::default(), |m, s| join(m, before[s]));
            let new = transfer(pc, &i, after);
            if new != before[pc] {
                before[pc] = new;
                for p in self.preds(pc) {
                    if !queued[p] {
                        queued[p] = true;
                        work.push(p);
                    }
                }
            }
        }
        before
    }
}
