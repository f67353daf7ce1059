//! The verifier state at one instruction (`struct bpf_verifier_state`):
//! the call frames with their registers and stacks, and the references
//! the program holds. Also the comparison that prunes the search: a state
//! whose every concrete execution is covered by an already explored safe
//! state need not be explored again (`states_equal`).

use std::cell::Cell;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use crate::reg::{Reg, RegType};
use crate::scalar::Scalar;

/// Bytes of stack per frame (`MAX_BPF_STACK`).
pub const MAX_BPF_STACK: i32 = 512;
/// Call depth (`MAX_CALL_FRAMES`).
pub const MAX_CALL_FRAMES: usize = 8;

/// What one stack byte holds (`enum bpf_stack_slot_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteKind {
    /// Never written (`STACK_INVALID`).
    Invalid,
    /// Some value (`STACK_MISC`).
    Misc,
    /// Known zero (`STACK_ZERO`).
    Zero,
    /// Part of a spilled register (`STACK_SPILL`).
    Spill,
}

/// An 8-byte stack slot (`struct bpf_stack_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Byte `i` is at offset `-(8 * (slot + 1)) + i` from the frame
    /// pointer.
    pub bytes: [ByteKind; 8],
    /// The register spilled here when all 8 bytes are `Spill`.
    pub spill: Reg,
}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The byte kinds in one word; the spilled register only where a
        // byte holds part of it (hashing fewer fields keeps equal slots
        // hashing equal).
        let kinds = self
            .bytes
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64);
        state.write_u64(kinds);
        if self.bytes.contains(&ByteKind::Spill) {
            self.spill.hash(state);
        }
    }
}

impl Slot {
    /// A slot never written.
    pub const INVALID: Slot = Slot {
        bytes: [ByteKind::Invalid; 8],
        spill: Reg::NOT_INIT,
    };

    /// Whether the slot holds a whole spilled register.
    pub fn is_spill(&self) -> bool {
        self.bytes.iter().all(|&b| b == ByteKind::Spill)
    }

    /// The bytes a spill covers: (first byte, count); a narrow spill of a
    /// number covers fewer than 8.
    pub fn spill_range(&self) -> Option<(usize, usize)> {
        let first = self.bytes.iter().position(|&b| b == ByteKind::Spill)?;
        let count = self.bytes[first..]
            .iter()
            .take_while(|&&b| b == ByteKind::Spill)
            .count();
        Some((first, count))
    }

    /// Forgets a spill that is partly overwritten: the bytes of a number
    /// stay initialised; those of a pointer become unreadable (reading
    /// them as a number would leak the address).
    pub fn forget_spill(&mut self) {
        let kind = if self.spill.is_scalar() {
            ByteKind::Misc
        } else {
            ByteKind::Invalid
        };
        for b in self.bytes.iter_mut() {
            if *b == ByteKind::Spill {
                *b = kind;
            }
        }
        self.spill = Reg::NOT_INIT;
    }
}

/// Slots per [`Stack`] part: 32 bytes of stack.
const CHUNK: usize = 4;

/// Up to [`CHUNK`] slots of a stack, shared by the states that hold them
/// unchanged.
#[derive(Clone, Debug)]
struct Part {
    slots: Rc<[Slot]>,
    /// The slots' hash once computed (0: not yet).
    hash: Cell<u64>,
}

impl Part {
    fn new(slots: impl IntoIterator<Item = Slot>) -> Part {
        Part {
            slots: slots.into_iter().collect(),
            hash: Cell::new(0),
        }
    }

    fn hash(&self) -> u64 {
        let cached = self.hash.get();
        if cached != 0 {
            return cached;
        }
        let mut h = FxHasher::default();
        for slot in self.slots.iter() {
            slot.hash(&mut h);
        }
        let hash = h.finish().max(1);
        self.hash.set(hash);
        hash
    }

    /// The slots, mutable: copied first if other states share them.
    fn slots_mut(&mut self) -> &mut [Slot] {
        self.hash.set(0);
        Rc::make_mut(&mut self.slots)
    }
}

/// A frame's stack slots, slot 0 holding `fp-8..fp-1`: copy-on-write
/// parts of [`CHUNK`] slots (the last one as long as the stack needs),
/// so that the states the search keeps share what they have in common (a
/// long loop keeps a state every few iterations, each with its whole
/// stack) and cloning a state copies no slots.
#[derive(Clone, Debug, Default)]
pub struct Stack {
    /// Every part but the last holds [`CHUNK`] slots.
    parts: Vec<Part>,
    len: usize,
}

impl Stack {
    /// An empty stack.
    pub fn new() -> Stack {
        Stack::default()
    }

    /// Slots in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slot `i`, if the stack reaches it.
    pub fn get(&self, i: usize) -> Option<&Slot> {
        self.parts.get(i / CHUNK)?.slots.get(i % CHUNK)
    }

    /// Slot `i`, mutable (its part is copied first if other states share
    /// it); the stack grows to reach it.
    pub fn slot_mut(&mut self, i: usize) -> &mut Slot {
        if i >= self.len {
            self.resize(i.saturating_add(1));
        }
        &mut self.parts[i / CHUNK].slots_mut()[i % CHUNK]
    }

    /// Grows the stack to `len` slots with never-written ones (never
    /// shrinks it).
    pub fn resize(&mut self, len: usize) {
        while self.len < len {
            let want = len.saturating_sub(self.len);
            match self.parts.last_mut() {
                Some(last) if last.slots.len() < CHUNK => {
                    let have = last.slots.len();
                    let add = want.min(CHUNK.saturating_sub(have));
                    *last = Part::new(
                        last.slots
                            .iter()
                            .copied()
                            .chain(std::iter::repeat_n(Slot::INVALID, add)),
                    );
                    self.len = self.len.saturating_add(add);
                }
                _ => {
                    let add = want.min(CHUNK);
                    self.parts
                        .push(Part::new(std::iter::repeat_n(Slot::INVALID, add)));
                    self.len = self.len.saturating_add(add);
                }
            }
        }
    }

    /// The slots in use, from the frame pointer down.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.parts.iter().flat_map(|p| p.slots.iter())
    }

    /// Applies `f` to every slot in use, copying only the parts whose
    /// slots it changes.
    pub fn update(&mut self, mut f: impl FnMut(&mut Slot)) {
        for part in &mut self.parts {
            for i in 0..part.slots.len() {
                let mut slot = part.slots[i];
                f(&mut slot);
                if slot != part.slots[i] {
                    part.slots_mut()[i] = slot;
                }
            }
        }
    }
}

impl From<Vec<Slot>> for Stack {
    fn from(slots: Vec<Slot>) -> Stack {
        let len = slots.len();
        Stack {
            parts: slots
                .chunks(CHUNK)
                .map(|c| Part::new(c.iter().copied()))
                .collect(),
            len,
        }
    }
}

impl PartialEq for Stack {
    fn eq(&self, other: &Stack) -> bool {
        self.len == other.len
            && self.parts.iter().zip(&other.parts).all(|(a, b)| {
                Rc::ptr_eq(&a.slots, &b.slots) || {
                    let (ha, hb) = (a.hash.get(), b.hash.get());
                    (ha == 0 || hb == 0 || ha == hb) && a.slots == b.slots
                }
            })
    }
}

impl Eq for Stack {}

impl Hash for Stack {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.len);
        for p in &self.parts {
            state.write_u64(p.hash());
        }
    }
}

/// A fast, non-cryptographic hasher (FxHash's multiply-rotate) for
/// state fingerprints.
#[derive(Default)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// One function's frame (`struct bpf_func_state`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// `r0..r10`.
    pub regs: [Reg; 11],
    /// Slots from the frame pointer down; grown as the program writes.
    pub stack: Stack,
    /// pc of the call instruction that created this frame (0 for the
    /// entry frame).
    pub callsite: usize,
    /// First pc of the function.
    pub subprog: usize,
    /// Callback frames (`bpf_loop`, `bpf_for_each_map_elem`): the range
    /// of return values the helper accepts, if it checks one.
    pub callback: bool,
}

impl Frame {
    /// A frame whose registers are all not-init except `r10`.
    pub fn new(frame: u8, callsite: usize, subprog: usize) -> Frame {
        let mut regs = [Reg::NOT_INIT; 11];
        regs[10] = Reg::pointer(RegType::Stack { frame }, 0);
        Frame {
            regs,
            stack: Stack::new(),
            callsite,
            subprog,
            callback: false,
        }
    }

    /// The slot holding byte offset `off` (negative, from the frame
    /// pointer), growing the stack to it.
    pub fn slot_mut(&mut self, off: i32) -> (&mut Slot, usize) {
        let idx = slot_index(off);
        if self.stack.len() <= idx {
            self.stack.resize(idx.wrapping_add(1));
        }
        let byte = byte_index(off);
        (self.stack.slot_mut(idx), byte)
    }

    /// The slot holding byte offset `off`, if the stack reaches it.
    pub fn slot(&self, off: i32) -> Option<(&Slot, usize)> {
        self.stack
            .get(slot_index(off))
            .map(|s| (s, byte_index(off)))
    }

    /// The kind of byte at offset `off`.
    pub fn byte(&self, off: i32) -> ByteKind {
        self.slot(off)
            .map_or(ByteKind::Invalid, |(s, b)| s.bytes[b])
    }

    /// Depth of the stack in use, in bytes.
    pub fn depth(&self) -> i32 {
        i32::try_from(self.stack.len())
            .unwrap_or(i32::MAX)
            .saturating_mul(8)
    }
}

/// Slot index of a (negative) frame-pointer offset.
fn slot_index(off: i32) -> usize {
    // off in [-512, -1]: slot (-off - 1) / 8.
    usize::try_from(off.saturating_neg().saturating_sub(1) / 8).unwrap_or(0)
}

/// Byte index within its slot of a (negative) frame-pointer offset.
fn byte_index(off: i32) -> usize {
    // -8 -> 0, -1 -> 7.
    usize::try_from(off.rem_euclid(8)).unwrap_or(0)
}

/// A whole verifier state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// The call frames, the current function last.
    pub frames: Vec<Frame>,
    /// Acquired references not yet released: (id, pc of acquisition).
    pub refs: Vec<(u32, usize)>,
    /// The `bpf_spin_lock` held: the map, and the id of the value
    /// pointer it was taken through (0: global data).
    pub lock: Option<(u32, u32)>,
}

impl State {
    /// The current function's frame.
    pub fn cur(&self) -> &Frame {
        // A state always has at least one frame.
        self.frames
            .last()
            .unwrap_or_else(|| unreachable!("a state has a frame"))
    }

    /// The current function's frame, mutable.
    pub fn cur_mut(&mut self) -> &mut Frame {
        self.frames
            .last_mut()
            .unwrap_or_else(|| unreachable!("a state has a frame"))
    }

    /// Register `r` of the current frame.
    pub fn reg(&self, r: u8) -> &Reg {
        &self.cur().regs[usize::from(r)]
    }

    /// Register `r` of the current frame, mutable.
    pub fn reg_mut(&mut self, r: u8) -> &mut Reg {
        &mut self.cur_mut().regs[usize::from(r)]
    }

    /// Every register and spilled register of every frame, mutable (to
    /// apply a check on one copy of a value to all copies).
    pub fn for_each_reg(&mut self, mut f: impl FnMut(&mut Reg)) {
        for frame in &mut self.frames {
            for r in &mut frame.regs {
                f(r);
            }
            frame.stack.update(|s| {
                // Whole spills, and narrow spills of numbers.
                if s.bytes.contains(&ByteKind::Spill) {
                    f(&mut s.spill);
                }
            });
        }
    }

    /// A state of no frames (a scratch value to overwrite; not a state a
    /// program can be in).
    pub fn empty() -> State {
        State {
            frames: Vec::new(),
            refs: Vec::new(),
            lock: None,
        }
    }

    /// Whether any register, spill, reference or lock carries an id.
    pub fn has_ids(&self) -> bool {
        !self.refs.is_empty()
            || self.lock.is_some_and(|(_, id)| id != 0)
            || self.frames.iter().any(|f| {
                f.regs.iter().any(|r| r.id != 0 || r.ref_id != 0)
                    || f.stack
                        .iter()
                        .any(|s| s.spill.id != 0 || s.spill.ref_id != 0)
            })
    }

    /// Renumbers the ids (of linked copies, of references, of the held
    /// lock) 1, 2, ... in order of first appearance, so that two states
    /// that differ only in how their ids are numbered become equal (the
    /// kernel's `states_equal` with `check_ids`, for exact comparisons).
    pub fn canonicalize_ids(&mut self) {
        let mut seen: Vec<u32> = Vec::new();
        let mut rename = |id: &mut u32| {
            if *id == 0 {
                return;
            }
            let n = match seen.iter().position(|&o| o == *id) {
                Some(i) => i,
                None => {
                    seen.push(*id);
                    seen.len().saturating_sub(1)
                }
            };
            *id = u32::try_from(n).map_or(u32::MAX, |n| n.saturating_add(1));
        };
        for (id, _) in &mut self.refs {
            rename(id);
        }
        if let Some((_, id)) = &mut self.lock {
            rename(id);
        }
        for frame in &mut self.frames {
            for r in &mut frame.regs {
                rename(&mut r.id);
                rename(&mut r.ref_id);
            }
            frame.stack.update(|slot| {
                rename(&mut slot.spill.id);
                rename(&mut slot.spill.ref_id);
            });
        }
    }
}

/// Maps the ids of an old state to the ids of the current one: two states
/// are comparable only if ids link the same registers in both
/// (`check_ids`).
#[derive(Debug, Default)]
pub struct IdMap {
    pairs: Vec<(u32, u32)>,
}

impl IdMap {
    /// Records or checks that `old` corresponds to `cur`.
    pub fn check(&mut self, old: u32, cur: u32) -> bool {
        if old == 0 && cur == 0 {
            return true;
        }
        if old == 0 || cur == 0 {
            return false;
        }
        for &(o, c) in &self.pairs {
            if o == old || c == cur {
                return o == old && c == cur;
            }
        }
        self.pairs.push((old, cur));
        true
    }
}

/// Whether every execution from `cur` is one from `old` as far as safety
/// goes: `cur`'s registers (the live ones) and stack are within `old`'s.
/// `live` gives, for each frame of `old`, the registers live at that
/// frame's resume point.
pub fn state_within(old: &State, cur: &State, masks: &[FrameMask]) -> bool {
    if old.frames.len() != cur.frames.len() || old.refs.len() != cur.refs.len() {
        return false;
    }
    let mut ids = IdMap::default();
    for (&(o, _), &(c, _)) in old.refs.iter().zip(&cur.refs) {
        if !ids.check(o, c) {
            return false;
        }
    }
    match (old.lock, cur.lock) {
        (None, None) => {}
        (Some((om, oi)), Some((cm, ci))) if om == cm && ids.check(oi, ci) => {}
        _ => return false,
    }
    for (i, (fo, fc)) in old.frames.iter().zip(&cur.frames).enumerate() {
        // (A function both a callback and called: its paths end under
        // other rules, so they never cover one another.)
        if fo.callsite != fc.callsite || fo.subprog != fc.subprog || fo.callback != fc.callback {
            return false;
        }
        let mask = masks.get(i).copied().unwrap_or(FrameMask::ALL);
        for r in 0..11 {
            if mask.live & (1 << r) == 0 {
                continue;
            }
            let (o, c) = (&fo.regs[r], &fc.regs[r]);
            if mask.precise_regs & (1 << r) == 0 && o.is_scalar() {
                // Its value never matters: any number will do.
                if !c.is_scalar() {
                    return false;
                }
                continue;
            }
            if !reg_within(o, c, &mut ids) {
                return false;
            }
        }
        if !stack_within(fo, fc, mask.precise_stack, &mut ids) {
            return false;
        }
    }
    true
}

/// What matters of one frame when states are compared: the registers
/// live (read before written on some path), those of them whose scalar
/// values matter, and the stack slots whose values matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMask {
    /// Live registers.
    pub live: u16,
    /// Registers whose values matter.
    pub precise_regs: u16,
    /// Stack slots whose values matter.
    pub precise_stack: u64,
}

impl FrameMask {
    /// Everything matters.
    pub const ALL: FrameMask = FrameMask {
        live: u16::MAX,
        precise_regs: u16::MAX,
        precise_stack: u64::MAX,
    };
}

/// `regsafe`: whether `cur` is covered by `old`.
pub fn reg_within(old: &Reg, cur: &Reg, ids: &mut IdMap) -> bool {
    match old.ty {
        // The old path never read it: anything goes.
        RegType::NotInit => true,
        RegType::Scalar => {
            if cur.ty != RegType::Scalar {
                return false;
            }
            if !cur.val.within(&old.val) {
                return false;
            }
            // Linked scalars: a check on one refines the other, so the
            // links must match.
            old.id == 0 || ids.check(old.id, cur.id)
        }
        RegType::Packet { range } | RegType::PacketMeta { range } => {
            let cur_range = match cur.ty {
                RegType::Packet { range } if matches!(old.ty, RegType::Packet { .. }) => range,
                RegType::PacketMeta { range } if matches!(old.ty, RegType::PacketMeta { .. }) => {
                    range
                }
                _ => return false,
            };
            cur_range >= range
                && old.off == cur.off
                && cur.val.within(&old.val)
                && ids.check(old.id, cur.id)
        }
        _ => {
            old.ty == cur.ty
                && old.maybe_null == cur.maybe_null
                && old.off == cur.off
                && cur.val.within(&old.val)
                && ids.check(old.id, cur.id)
                && ids.check(old.ref_id, cur.ref_id)
        }
    }
}

fn stack_within(old: &Frame, cur: &Frame, precise: u64, ids: &mut IdMap) -> bool {
    for (i, so) in old.stack.iter().enumerate() {
        let sc = cur.stack.get(i).copied().unwrap_or(Slot::INVALID);
        let pointer_spill = |s: &Slot| s.bytes.contains(&ByteKind::Spill) && !s.spill.is_scalar();
        if precise
            .checked_shr(u32::try_from(i).unwrap_or(64))
            .unwrap_or(0)
            & 1
            == 0
            && !pointer_spill(so)
        {
            // Numbers whose values never matter: initialised bytes cover
            // initialised bytes.
            if pointer_spill(&sc) {
                return false;
            }
            let covered = so
                .bytes
                .iter()
                .zip(sc.bytes.iter())
                .all(|(&o, &c)| o == ByteKind::Invalid || c != ByteKind::Invalid);
            if !covered {
                return false;
            }
            continue;
        }
        if !so.is_spill() && so.spill_range().is_some() {
            // A narrow spill: the same bytes spilled with a covered value,
            // or (the old value being any number) plain bytes.
            if sc.spill_range() == so.spill_range() && !reg_within(&so.spill, &sc.spill, ids) {
                return false;
            }
            for (b, &kind) in so.bytes.iter().enumerate() {
                let ok = match (kind, sc.bytes[b]) {
                    (ByteKind::Invalid, _) => true,
                    (ByteKind::Spill, ByteKind::Spill) => sc.spill_range() == so.spill_range(),
                    (ByteKind::Spill, _) => false,
                    (ByteKind::Misc, k) => {
                        k != ByteKind::Invalid && (k != ByteKind::Spill || sc.spill.is_scalar())
                    }
                    (ByteKind::Zero, ByteKind::Zero) => true,
                    (ByteKind::Zero, _) => false,
                };
                if !ok {
                    return false;
                }
            }
            continue;
        }
        if so.is_spill() {
            if sc.is_spill() {
                if !reg_within(&so.spill, &sc.spill, ids) {
                    return false;
                }
                continue;
            }
            // An old spilled unknown scalar covers plain bytes.
            if so.spill.is_scalar()
                && so.spill.val == Scalar::UNKNOWN
                && so.spill.id == 0
                && sc
                    .bytes
                    .iter()
                    .all(|&b| matches!(b, ByteKind::Misc | ByteKind::Zero))
            {
                continue;
            }
            return false;
        }
        for (b, &kind) in so.bytes.iter().enumerate() {
            let ok = match kind {
                ByteKind::Invalid => true,
                ByteKind::Misc => match sc.bytes[b] {
                    ByteKind::Misc | ByteKind::Zero => true,
                    ByteKind::Spill => sc.spill.is_scalar(),
                    ByteKind::Invalid => false,
                },
                ByteKind::Zero => {
                    sc.bytes[b] == ByteKind::Zero
                        || (sc.bytes[b] == ByteKind::Spill && sc.spill.const_value() == Some(0))
                }
                ByteKind::Spill => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

/// A state covering both `old` and `cur` (`cur` must be the newer of two
/// states at one instruction): scalars `cur` keeps within `old`'s bounds
/// keep them, others become unknown (widening: repeated widening ends);
/// everything else must be the same, or is made unusable (not-init
/// registers, invalid stack bytes), which only ever rejects more.
/// `None` when the frames or references differ.
pub fn widen(old: &State, cur: &State) -> Option<State> {
    if old.frames.len() != cur.frames.len() || old.refs != cur.refs || old.lock != cur.lock {
        return None;
    }
    let mut out = cur.clone();
    for (fo, fc) in old.frames.iter().zip(out.frames.iter_mut()) {
        if fo.callsite != fc.callsite || fo.subprog != fc.subprog || fo.callback != fc.callback {
            return None;
        }
        for (ro, rc) in fo.regs.iter().zip(fc.regs.iter_mut()) {
            *rc = widen_reg(ro, rc);
        }
        fc.stack.resize(fo.stack.len());
        let mut i = 0usize;
        fc.stack.update(|sc| {
            let so = fo.stack.get(i).copied().unwrap_or(Slot::INVALID);
            i = i.wrapping_add(1);
            if so.is_spill() && sc.is_spill() {
                let w = widen_reg(&so.spill, &sc.spill);
                if w.ty == RegType::NotInit {
                    *sc = Slot::INVALID;
                } else {
                    sc.spill = w;
                }
                return;
            }
            // (Judged on the slot as it was: the loop rewrites its bytes.)
            let was = *sc;
            let scalar_spill = |s: &Slot| s.is_spill() && s.spill.is_scalar();
            for b in 0..8 {
                let ko = if so.is_spill() {
                    if scalar_spill(&so) {
                        ByteKind::Misc
                    } else {
                        ByteKind::Invalid
                    }
                } else {
                    so.bytes[b]
                };
                let kc = if was.is_spill() {
                    if scalar_spill(&was) {
                        ByteKind::Misc
                    } else {
                        ByteKind::Invalid
                    }
                } else {
                    was.bytes[b]
                };
                let k = match (ko, kc) {
                    (ByteKind::Invalid, _) | (_, ByteKind::Invalid) => ByteKind::Invalid,
                    (ByteKind::Zero, ByteKind::Zero) => ByteKind::Zero,
                    _ => ByteKind::Misc,
                };
                sc.bytes[b] = k;
            }
            sc.spill = Reg::NOT_INIT;
        });
    }
    Some(out)
}

fn widen_reg(old: &Reg, cur: &Reg) -> Reg {
    match (old.ty, cur.ty) {
        (RegType::NotInit, _) | (_, RegType::NotInit) => Reg::NOT_INIT,
        (RegType::Scalar, RegType::Scalar) => {
            let val = if cur.val.within(&old.val) {
                old.val
            } else {
                Scalar::UNKNOWN
            };
            Reg {
                val,
                id: if old.id == cur.id { cur.id } else { 0 },
                ..*cur
            }
        }
        _ if old == cur => *cur,
        _ if old.ty == cur.ty
            && old.maybe_null == cur.maybe_null
            && old.off == cur.off
            && old.id == cur.id
            && old.ref_id == cur.ref_id
            && cur.val.within(&old.val) =>
        {
            Reg {
                val: old.val,
                ..*cur
            }
        }
        _ => Reg::NOT_INIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hash_of(stack: &Stack) -> u64 {
        let mut h = FxHasher::default();
        stack.hash(&mut h);
        h.finish()
    }

    /// A slot holding a spilled constant `v`.
    fn spill(v: u64) -> Slot {
        Slot {
            bytes: [ByteKind::Spill; 8],
            spill: Reg::constant(v),
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Write(usize, u64),
        Grow(usize),
        /// Clone the stack and continue on the copy.
        Fork,
        /// Forget every spill of an odd value.
        ForgetOdd,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..64, 0u64..4).prop_map(|(i, v)| Op::Write(i, v)),
            (0usize..=64).prop_map(Op::Grow),
            Just(Op::Fork),
            Just(Op::ForgetOdd),
        ]
    }

    proptest! {
        /// A stack behaves as the plain list of slots it replaces, whatever
        /// it shares with its copies, and equal stacks hash alike.
        #[test]
        fn stack_is_a_list_of_slots(ops in proptest::collection::vec(op(), 0..40)) {
            let mut stack = Stack::new();
            let mut model: Vec<Slot> = Vec::new();
            // Earlier copies with the model of each: writes to a later copy
            // must not show through in them.
            let mut copies: Vec<(Stack, Vec<Slot>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Write(i, v) => {
                        *stack.slot_mut(i) = spill(v);
                        if model.len() <= i {
                            model.resize(i.saturating_add(1), Slot::INVALID);
                        }
                        model[i] = spill(v);
                    }
                    Op::Grow(n) => {
                        stack.resize(n);
                        if model.len() < n {
                            model.resize(n, Slot::INVALID);
                        }
                    }
                    Op::Fork => copies.push((stack.clone(), model.clone())),
                    Op::ForgetOdd => {
                        let odd = |s: &Slot| s.is_spill() && s.spill.const_value().is_some_and(|v| v % 2 == 1);
                        stack.update(|s| if odd(s) { *s = Slot::INVALID });
                        for s in &mut model {
                            if odd(s) {
                                *s = Slot::INVALID;
                            }
                        }
                    }
                }
                prop_assert_eq!(stack.len(), model.len());
                prop_assert_eq!(stack.iter().copied().collect::<Vec<_>>(), model.clone());
                for (i, s) in model.iter().enumerate() {
                    prop_assert_eq!(stack.get(i), Some(s));
                }
                prop_assert_eq!(stack.get(model.len()), None);
            }
            for (copy, model) in &copies {
                prop_assert_eq!(copy.iter().copied().collect::<Vec<_>>(), model.clone());
                // Built anew, without sharing: equal, and hashed alike.
                let fresh = Stack::from(model.clone());
                prop_assert_eq!(copy, &fresh);
                prop_assert_eq!(hash_of(copy), hash_of(&fresh));
                prop_assert_eq!(copy == &stack, model == &stack.iter().copied().collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn a_copy_shares_the_slots_until_one_side_writes() {
        let mut a = Stack::new();
        *a.slot_mut(10) = spill(1);
        let mut b = a.clone();
        assert!(Rc::ptr_eq(&a.parts[0].slots, &b.parts[0].slots));
        *b.slot_mut(0) = spill(2);
        assert_eq!(a.get(0), Some(&Slot::INVALID));
        assert_eq!(b.get(0), Some(&spill(2)));
        // Only the written part was copied.
        assert!(!Rc::ptr_eq(&a.parts[0].slots, &b.parts[0].slots));
        assert!(Rc::ptr_eq(&a.parts[2].slots, &b.parts[2].slots));
        // An update that changes nothing copies nothing.
        b.update(|_| {});
        assert!(Rc::ptr_eq(&a.parts[2].slots, &b.parts[2].slots));
    }

    #[test]
    fn widening_a_pointer_spill_over_plain_bytes_leaves_no_byte_readable() {
        // One path had a number's bytes at fp-8, the next a spilled stack
        // pointer: no byte of the pointer may be readable as a number
        // after widening (that would leak the address).
        let mut old = State {
            frames: vec![Frame::new(0, 0, 0)],
            refs: Vec::new(),
            lock: None,
        };
        let mut cur = old.clone();
        old.frames[0].slot_mut(-8).0.bytes = [ByteKind::Misc; 8];
        *cur.frames[0].slot_mut(-8).0 = Slot {
            bytes: [ByteKind::Spill; 8],
            spill: Reg::pointer(RegType::Stack { frame: 0 }, -16),
        };
        let w = widen(&old, &cur).expect("same frames");
        let slot = w.frames[0].stack.get(0).expect("slot 0");
        assert_eq!(slot.bytes, [ByteKind::Invalid; 8]);
        assert_eq!(slot.spill, Reg::NOT_INIT);
    }
}
