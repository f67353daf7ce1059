//! The generator of [`super::generate`]: it keeps a rough view of what
//! each register and stack slot holds (enough to write plausible code:
//! scalars where scalars are expected, initialised slots where reads go,
//! null-checked map values where accesses go) and writes items one by
//! one: arithmetic, branches and bounded loops here, memory accesses in
//! [`memory`], maps and helper calls in [`maps`].

use std::fmt::Write as _;

use arbitrary::Unstructured;

use super::{Flavour, GenSpec};

mod maps;
mod memory;

/// The assembly of a program for `spec`, from the fuzzer's bytes.
pub(super) fn program_source(u: &mut Unstructured<'_>, spec: &GenSpec) -> String {
    let mut g = Gen::new(u, spec);
    g.prologue();
    let n = g.range(2, 16);
    g.items(n, 0);
    g.epilogue();
    // The subprograms the main program calls, after it.
    let mut out = g.out;
    for sub in g.subs {
        out.push_str(&sub);
    }
    out
}

/// Subprograms in one program, at most.
const MAX_FUNCTIONS: u32 = 4;

/// Nested bpf-to-bpf calls, at most (the kernel allows 8 frames).
const MAX_CALL_DEPTH: u32 = 2;

/// What a register holds, as far as the generator keeps track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Never written.
    Uninit,
    /// A number.
    Scalar,
    /// The context (or the raw buffer), unmodified.
    Ctx,
    /// A map value of this map, null-checked, at offset 0.
    MapVal(u8),
    /// In a subprogram: a pointer to the caller's `len` bytes below its
    /// frame pointer, every byte of them written (`readable`) or not.
    CallerStack { len: u8, readable: bool },
    /// Something else, or different things on different paths: written
    /// before it is read again.
    Dead,
}

/// One 8-byte stack slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Slot {
    /// Bytes written (bit `b`: the slot's byte at `fp - 8 * (i + 1) + b`).
    init: u8,
    /// What an 8-byte spill of a pointer put there (`Some(Kind::Dead)`:
    /// a pointer on some path, partly overwritten, ...: not to be read).
    ptr: Option<Kind>,
}

/// Stack slots: `fp-8` .. `fp-512`.
const SLOTS: usize = 64;

/// The generator's view of the registers `r0..r9` and the stack.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    regs: [Kind; 10],
    stack: [Slot; SLOTS],
}

impl Snapshot {
    /// What holds after two paths join.
    fn join(&self, other: &Snapshot) -> Snapshot {
        let mut out = self.clone();
        for (r, o) in out.regs.iter_mut().zip(other.regs) {
            if *r != o {
                *r = Kind::Dead;
            }
        }
        for (s, o) in out.stack.iter_mut().zip(other.stack) {
            s.init &= o.init;
            if s.ptr != o.ptr {
                s.ptr = Some(Kind::Dead);
            }
        }
        out
    }
}

/// The stack slot and byte mask of an access of `size` bytes at
/// `fp + off` (`off` negative, the access inside one slot).
fn slot_bytes(off: i64, size: u32) -> Option<(usize, u8)> {
    if !(-512..0).contains(&off) || size == 0 || size > 8 {
        return None;
    }
    let slot = usize::try_from((-off - 1) / 8).ok()?;
    let byte = off + 8 * (slot as i64 + 1);
    if byte + i64::from(size) > 8 {
        return None;
    }
    let mask = (((1u16 << size) - 1) << byte) as u8;
    Some((slot, mask))
}

/// `r1 + 8` / `r10 - 8`.
fn addr(base: u8, off: i64) -> String {
    if off < 0 {
        format!("r{base} - {}", -off)
    } else {
        format!("r{base} + {off}")
    }
}

fn mem_type(size: u32, signed: bool) -> String {
    format!("{}{}", if signed { 's' } else { 'u' }, size * 8)
}

/// One deliberate bug per this many opportunities.
const BUG: u32 = 20;

/// Scalar operators, 64- and 32-bit.
const ALU_OPS: [&str; 13] = [
    "+=", "-=", "*=", "/=", "%=", "|=", "&=", "^=", "<<=", ">>=", "s>>=", "s/=", "s%=",
];

/// The operators whose results the Linux verifier bounds.
const KERNEL_ALU_OPS: [&str; 7] = ["+=", "-=", "|=", "&=", "^=", ">>=", "s>>="];

/// Jump conditions.
const CONDS: [&str; 11] = [
    "==", "!=", ">", ">=", "<", "<=", "s>", "s>=", "s<", "s<=", "&",
];

/// The kinds of items a program is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Alu,
    Mov,
    CtxLoad,
    CtxStore,
    StackStore,
    StackLoad,
    Cond,
    Loop,
    VarAccess,
    PtrConst,
    MapLookup,
    MapUse,
    MapUpdate,
    MapDelete,
    Helper,
    Comm,
    Atomic,
    Call,
    LoopCallback,
    CallerStack,
    ForEachCallback,
    Dynptr,
}

/// Where a variable-offset access points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    /// The raw buffer (in this register).
    Buf(u8),
    /// A map value (in this register), of this size.
    Map(u8, u32),
    /// The stack window `[fp - size, fp)`.
    Stack(u32),
}

struct Gen<'a, 'd> {
    u: &'a mut Unstructured<'d>,
    spec: &'a GenSpec,
    out: String,
    st: Snapshot,
    labels: u32,
    /// Items still to write.
    budget: u32,
    /// Loop counters in scope: the loops' bodies do not write them.
    counters: Vec<u8>,
    /// The view at the head of each enclosing loop: a body does not change
    /// what a register or slot holds into something else (the next
    /// iteration would read it as what it was), it only writes registers
    /// and slots that held nothing usable there.
    frozen: Vec<Snapshot>,
    /// Labels' prefix: `""` in the main program, `fN_` in subprogram N.
    prefix: String,
    /// Subprograms generated so far in the whole program.
    functions: u32,
    /// Frames below this one.
    call_depth: u32,
    /// The text of the subprograms this function calls (and theirs).
    subs: Vec<String>,
}

impl<'a, 'd> Gen<'a, 'd> {
    fn new(u: &'a mut Unstructured<'d>, spec: &'a GenSpec) -> Gen<'a, 'd> {
        let mut regs = [Kind::Uninit; 10];
        match spec.flavour {
            Flavour::Raw { len: 0 } => {
                regs[1] = Kind::Scalar;
                regs[2] = Kind::Scalar;
            }
            Flavour::Raw { .. } => {
                regs[1] = Kind::Ctx;
                regs[2] = Kind::Scalar;
            }
            Flavour::SocketFilter => regs[1] = Kind::Ctx,
        }
        Gen {
            u,
            spec,
            out: String::new(),
            st: Snapshot {
                regs,
                stack: [Slot::default(); SLOTS],
            },
            labels: 0,
            budget: 40,
            counters: Vec::new(),
            frozen: Vec::new(),
            prefix: String::new(),
            functions: 0,
            call_depth: 0,
            subs: Vec::new(),
        }
    }

    // Choices. (With the bytes exhausted they take the first, harmless
    // option: `arbitrary`'s own `ratio` says yes then.)

    /// `num` times in `den`.
    fn chance(&mut self, num: u32, den: u32) -> bool {
        self.u
            .int_in_range(0..=den.saturating_sub(1))
            .is_ok_and(|x| x >= den.saturating_sub(num))
    }

    /// A deliberate bug this time?
    fn bug(&mut self) -> bool {
        self.chance(1, BUG)
    }

    /// `0..n`.
    fn below(&mut self, n: u32) -> u32 {
        self.u.int_in_range(0..=n.saturating_sub(1)).unwrap_or(0)
    }

    /// `lo..=hi`.
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        self.u.int_in_range(lo..=hi).unwrap_or(lo)
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u32) as usize]
    }

    /// A 32-bit immediate: small, a mask, an extreme or anything.
    fn imm32(&mut self) -> i64 {
        match self.below(8) {
            0..=3 => i64::from(self.range(0, 20)) - 4,
            4 | 5 => self.pick(&[0xff, 0xffff, 0x7f, 7, 15, 63, 255, 1024, 4096]),
            6 => self.pick(&[
                i64::from(i32::MAX),
                i64::from(i32::MIN),
                0x4000_0000,
                -0x10000,
                -1,
                -2,
            ]),
            _ => i64::from(self.u.arbitrary::<i32>().unwrap_or(0)),
        }
    }

    // Output.

    fn emit(&mut self, line: &str) {
        self.out.push_str(line);
        self.out.push('\n');
    }

    fn label(&mut self) -> String {
        self.labels += 1;
        format!("{}l{}", self.prefix, self.labels)
    }

    fn place(&mut self, label: &str) {
        let _ = writeln!(self.out, "{label}:");
    }

    // Registers.

    fn regs_where(&self, f: impl Fn(Kind) -> bool) -> Vec<u8> {
        (0..10u8).filter(|&r| f(self.st.regs[r as usize])).collect()
    }

    fn choose(&mut self, regs: &[u8]) -> Option<u8> {
        if regs.is_empty() {
            None
        } else {
            Some(self.pick(regs))
        }
    }

    /// A register holding a scalar.
    fn scalar(&mut self) -> Option<u8> {
        let regs = self.regs_where(|k| k == Kind::Scalar);
        self.choose(&regs)
    }

    /// A register to read as a scalar (now and then any register: a bug).
    fn operand(&mut self) -> Option<u8> {
        if self.bug() {
            return Some(self.below(10) as u8);
        }
        self.scalar()
    }

    /// Whether `r` may be written with a `kind` here.
    fn can_write(&self, r: u8, kind: Kind) -> bool {
        r != 6
            && r < 10
            && !self.counters.contains(&r)
            && self.frozen.iter().all(|f| {
                let was = f.regs[r as usize];
                matches!(was, Kind::Dead | Kind::Uninit) || was == kind
            })
    }

    /// A register to write a `kind` into.
    fn dst(&mut self, kind: Kind) -> Option<u8> {
        let regs: Vec<u8> = (0..10u8).filter(|&r| self.can_write(r, kind)).collect();
        self.choose(&regs)
    }

    /// A register to write a `kind` into, among `from`.
    fn dst_among(&mut self, kind: Kind, from: &[u8]) -> Option<u8> {
        let regs: Vec<u8> = from
            .iter()
            .copied()
            .filter(|&r| self.can_write(r, kind))
            .collect();
        self.choose(&regs)
    }

    fn set(&mut self, r: u8, kind: Kind) {
        if let Some(k) = self.st.regs.get_mut(r as usize) {
            *k = kind;
        }
    }

    /// A helper call clobbers `r1..r5` and returns in `r0`.
    fn clobber(&mut self, r0: Kind) {
        for r in 1..=5 {
            self.st.regs[r] = Kind::Uninit;
        }
        self.st.regs[0] = r0;
    }

    /// The context register, if any holds it.
    fn ctx_reg(&mut self) -> Option<u8> {
        if self.st.regs[6] == Kind::Ctx {
            return Some(6);
        }
        let regs = self.regs_where(|k| k == Kind::Ctx);
        self.choose(&regs)
    }

    /// Registers holding a null-checked map value.
    fn map_regs(&self) -> Vec<u8> {
        self.regs_where(|k| matches!(k, Kind::MapVal(_)))
    }

    fn value_size(&self, map: u8) -> u32 {
        self.spec.maps.get(map as usize).map_or(8, |m| m.value_size)
    }

    fn buffer_len(&self) -> Option<u32> {
        match self.spec.flavour {
            Flavour::Raw { len } if len > 0 => Some(len),
            _ => None,
        }
    }

    // Stack.

    /// Whether a write at `fp + off` of `size` bytes leaving `ptr` in its
    /// slot keeps what enclosing loop heads saw there.
    fn can_write_stack(&self, off: i64, size: u32, ptr: Option<Kind>) -> bool {
        let Some((slot, _)) = slot_bytes(off, size) else {
            return true;
        };
        self.frozen.iter().all(|f| {
            let s = f.stack[slot];
            s.init == 0 || s.ptr == ptr
        })
    }

    /// Records a write at `fp + off`.
    fn stack_written(&mut self, off: i64, size: u32, ptr: Option<Kind>) {
        let Some((slot, mask)) = slot_bytes(off, size) else {
            return;
        };
        let s = &mut self.st.stack[slot];
        if size == 8 {
            *s = Slot { init: 0xff, ptr };
        } else {
            s.init |= mask;
            if s.ptr.is_some() {
                s.ptr = Some(Kind::Dead);
            }
        }
    }

    /// Whether `size` bytes at `fp + off` were written, as scalars.
    fn stack_readable(&self, off: i64, size: u32) -> bool {
        slot_bytes(off, size).is_some_and(|(slot, mask)| {
            let s = self.st.stack[slot];
            s.init & mask == mask && s.ptr.is_none()
        })
    }

    /// Writes scalars to every 8-byte slot of `[fp - size, fp - size + len)`
    /// not yet readable (to pass the window to a helper or read it).
    fn init_stack(&mut self, top: i64, len: u32) {
        let mut off = top;
        while off < top + i64::from(len) && off < 0 {
            let aligned = off - off.rem_euclid(8);
            if !self.stack_readable(aligned, 8) && self.can_write_stack(aligned, 8, None) {
                let v = self.imm32();
                let _ = writeln!(self.out, "*(u64 *)({}) = {v}", addr(10, aligned));
                self.stack_written(aligned, 8, None);
            }
            off = aligned + 8;
        }
    }

    // The program.

    fn prologue(&mut self) {
        self.emit("r6 = r1");
        self.st.regs[6] = self.st.regs[1];
        if matches!(self.spec.flavour, Flavour::Raw { .. }) {
            self.emit("r7 = r2");
            self.st.regs[7] = Kind::Scalar;
        }
        for r in [8u8, 9] {
            if self.chance(1, 2) {
                let v = self.imm32();
                let _ = writeln!(self.out, "r{r} = {v}");
                self.set(r, Kind::Scalar);
            }
        }
    }

    fn epilogue(&mut self) {
        // (Now and then r0 is left as it is: not a scalar, a bug.)
        if (self.st.regs[0] != Kind::Scalar || self.chance(1, 3)) && !self.bug() {
            match self.scalar() {
                Some(s) if self.chance(2, 3) => {
                    let _ = writeln!(self.out, "r0 = r{s}");
                }
                _ => {
                    let v = self.imm32();
                    let _ = writeln!(self.out, "r0 = {v}");
                }
            }
            self.st.regs[0] = Kind::Scalar;
        }
        self.emit("exit");
    }

    fn items(&mut self, n: u32, depth: u32) {
        for _ in 0..n {
            if self.budget == 0 || self.u.is_empty() {
                break;
            }
            self.budget -= 1;
            self.item(depth);
        }
    }

    fn item(&mut self, depth: u32) {
        let maps = !self.spec.maps.is_empty();
        let raw = matches!(self.spec.flavour, Flavour::Raw { .. });
        let ctx = !self.regs_where(|k| k == Kind::Ctx).is_empty();
        let mapvals = !self.map_regs().is_empty();
        let call = self.call_depth < MAX_CALL_DEPTH && self.functions < MAX_FUNCTIONS;
        let caller_stack = !self
            .regs_where(|k| matches!(k, Kind::CallerStack { .. }))
            .is_empty();
        let table: [(u32, Item, bool); 22] = [
            (20, Item::Alu, true),
            (6, Item::Mov, true),
            (10, Item::CtxLoad, ctx),
            (4, Item::CtxStore, ctx),
            (8, Item::StackStore, true),
            (6, Item::StackLoad, true),
            (8, Item::Cond, depth < 3),
            (5, Item::Loop, depth < 2 && self.counters.len() < 2),
            (9, Item::VarAccess, true),
            (3, Item::PtrConst, ctx && raw),
            (7, Item::MapLookup, maps),
            (6, Item::MapUse, mapvals),
            (3, Item::MapUpdate, maps),
            (2, Item::MapDelete, maps),
            (4, Item::Helper, true),
            (2, Item::Comm, raw),
            (2, Item::Atomic, true),
            (3, Item::Call, call),
            (2, Item::LoopCallback, call),
            (8, Item::CallerStack, caller_stack),
            (2, Item::ForEachCallback, call && maps),
            (3, Item::Dynptr, mapvals),
        ];
        let total: u32 = table.iter().filter(|t| t.2).map(|t| t.0).sum();
        let mut x = self.below(total);
        let mut item = Item::Alu;
        for (w, it, ok) in table {
            if !ok {
                continue;
            }
            if x < w {
                item = it;
                break;
            }
            x -= w;
        }
        match item {
            Item::Alu => self.alu(),
            Item::Mov => self.mov(),
            Item::CtxLoad => self.ctx_load(),
            Item::CtxStore => self.ctx_store(),
            Item::StackStore => self.stack_store(),
            Item::StackLoad => self.stack_load(),
            Item::Cond => self.cond(depth),
            Item::Loop => self.bounded_loop(depth),
            Item::VarAccess => self.var_access(None),
            Item::PtrConst => self.ptr_const(),
            Item::MapLookup => self.map_lookup(depth),
            Item::MapUse => {
                let regs = self.map_regs();
                if let Some(r) = self.choose(&regs) {
                    self.map_use(r);
                }
            }
            Item::MapUpdate => self.map_update(),
            Item::MapDelete => self.map_delete(),
            Item::Helper => self.helper(),
            Item::Comm => self.get_comm(),
            Item::Atomic => self.atomic(),
            Item::Call => self.local_call(),
            Item::LoopCallback => self.loop_callback(),
            Item::CallerStack => self.caller_stack_access(),
            Item::ForEachCallback => self.for_each_callback(),
            Item::Dynptr => {
                let regs = self.map_regs();
                if let Some(r) = self.choose(&regs) {
                    self.dynptr(r);
                }
            }
        }
    }

    /// In a subprogram, a store through (or a load from) a pointer to the
    /// caller's stack.
    fn caller_stack_access(&mut self) {
        let regs = self.regs_where(|k| matches!(k, Kind::CallerStack { .. }));
        let Some(r) = self.choose(&regs) else {
            return;
        };
        let Kind::CallerStack { len, readable } = self.st.regs[r as usize] else {
            return;
        };
        let size = self.pick(&[8u32, 8, 4, 2, 1]).min(u32::from(len));
        let slots = u32::from(len) / size;
        let mut off = i64::from(size * self.below(slots));
        if self.bug() {
            off = self.pick(&[i64::from(len), -8, off + 1]);
        }
        if readable && self.chance(1, 2) {
            if let Some(d) = self.dst(Kind::Scalar) {
                let _ = writeln!(
                    self.out,
                    "r{d} = *({} *)({})",
                    mem_type(size, false),
                    addr(r, off)
                );
                self.set(d, Kind::Scalar);
            }
        } else {
            let value = self.store_value(size);
            let _ = writeln!(
                self.out,
                "*({} *)({}) = {value}",
                mem_type(size, false),
                addr(r, off)
            );
        }
    }

    /// A subprogram generated here (placed after the main program) with
    /// `regs` on entry and a frame of its own; its name, and what it
    /// leaves in `r0`. `callback`: it returns 0 or 1 (continue or stop,
    /// for bpf_loop and bpf_for_each_map_elem), now and then something
    /// else (a bug).
    fn subprogram(&mut self, regs: [Kind; 10], callback: bool) -> (String, Kind) {
        self.functions += 1;
        let name = format!("f{}", self.functions);
        let budget = self.range(1, 10);
        let mut sub = Gen {
            u: &mut *self.u,
            spec: self.spec,
            out: format!("{name}:\n"),
            st: Snapshot {
                regs,
                stack: [Slot::default(); SLOTS],
            },
            labels: 0,
            budget,
            counters: Vec::new(),
            frozen: Vec::new(),
            prefix: format!("{name}_"),
            functions: self.functions,
            call_depth: self.call_depth + 1,
            subs: Vec::new(),
        };
        if sub.st.regs[1] == Kind::Ctx && sub.chance(1, 2) {
            sub.emit("r6 = r1");
            sub.st.regs[6] = Kind::Ctx;
        }
        sub.items(budget, 0);
        if callback {
            let r0 = if sub.bug() {
                sub.imm32()
            } else {
                i64::from(sub.below(2))
            };
            let _ = writeln!(sub.out, "r0 = {r0}");
            sub.st.regs[0] = Kind::Scalar;
            sub.emit("exit");
        } else {
            sub.epilogue();
        }
        let returns = sub.st.regs[0];
        self.functions = sub.functions;
        self.subs.push(sub.out);
        self.subs.append(&mut sub.subs);
        (name, returns)
    }

    /// `bpf_loop(nr, cb, NULL, 0)` with a callback generated here: it
    /// gets the iteration's index in `r1` and the NULL context in `r2`.
    fn loop_callback(&mut self) {
        let mut regs = [Kind::Uninit; 10];
        regs[1] = Kind::Scalar;
        regs[2] = Kind::Scalar;
        let (name, _) = self.subprogram(regs, true);
        match self.scalar() {
            Some(s) if self.chance(1, 3) => {
                let _ = writeln!(self.out, "r1 = r{s}");
                self.emit("r1 &= 7");
            }
            _ => {
                let nr = self.range(0, 8);
                let _ = writeln!(self.out, "r1 = {nr}");
            }
        }
        self.call_back("bpf_loop#181", &name);
    }

    /// `r2 = func[name]`, a NULL context and no flags, and the call of
    /// `helper`, whose first argument is in `r1` already.
    fn call_back(&mut self, helper: &str, name: &str) {
        let _ = writeln!(self.out, "r2 = func[{name}]");
        self.emit("r3 = 0");
        self.emit("r4 = 0");
        let _ = writeln!(self.out, "call {helper}");
        self.clobber(Kind::Scalar);
    }

    /// `call local fN`: a bpf-to-bpf call of a subprogram generated here
    /// (placed after the main program), which gets `r1..r5` as they are
    /// and a frame of its own; it returns in `r0` and leaves `r1..r5`
    /// unset, `r6..r9` and this frame's stack as they were.
    fn local_call(&mut self) {
        // Now and then an argument is set for the call.
        if self.chance(1, 3) {
            if let Some(d) = self.dst_among(Kind::Scalar, &[1, 2, 3, 4, 5]) {
                let v = self.imm32();
                let _ = writeln!(self.out, "r{d} = {v}");
                self.set(d, Kind::Scalar);
            }
        }
        // Now and then the caller passes a window of its stack that holds
        // no pointer: the callee writes it, or reads it if written.
        let mut window = None;
        if self.chance(1, 3) {
            let len = self.pick(&[8u8, 16, 32]);
            let slots = usize::from(len / 8);
            let no_pointers = self.st.stack[..slots].iter().all(|s| s.ptr.is_none());
            if no_pointers {
                if let Some(d) = self.dst_among(Kind::Dead, &[1, 2, 3, 4, 5]) {
                    let readable = self.st.stack[..slots].iter().all(|s| s.init == 0xff);
                    let _ = writeln!(self.out, "r{d} = r10");
                    let _ = writeln!(self.out, "r{d} += -{len}");
                    self.set(d, Kind::Dead);
                    window = Some((d, Kind::CallerStack { len, readable }));
                }
            }
        }
        let mut regs = [Kind::Uninit; 10];
        for (callee, &caller) in regs.iter_mut().zip(&self.st.regs).take(6).skip(1) {
            *callee = match caller {
                k @ (Kind::Scalar | Kind::Ctx | Kind::MapVal(_)) => k,
                _ => Kind::Uninit,
            };
        }
        if let Some((d, kind)) = window {
            regs[usize::from(d)] = kind;
        }
        let (name, returns) = self.subprogram(regs, false);
        let _ = writeln!(self.out, "call local {name}");
        self.clobber(if returns == Kind::Scalar {
            Kind::Scalar
        } else {
            Kind::Dead
        });
    }

    /// `rD = imm` into a fresh scalar register.
    fn mov_imm(&mut self) -> Option<u8> {
        let d = self.dst(Kind::Scalar)?;
        if self.chance(1, 8) {
            let v = self.u.arbitrary::<u64>().unwrap_or(0);
            let _ = writeln!(self.out, "r{d} = {v:#x} ll");
        } else {
            let w = if self.chance(1, 4) { 'w' } else { 'r' };
            let v = self.imm32();
            let _ = writeln!(self.out, "{w}{d} = {v}");
        }
        self.set(d, Kind::Scalar);
        Some(d)
    }

    /// A scalar to work on: an existing one that may be written, or a
    /// fresh constant.
    fn scalar_dst(&mut self) -> Option<u8> {
        let regs: Vec<u8> = self
            .regs_where(|k| k == Kind::Scalar)
            .into_iter()
            .filter(|&r| self.can_write(r, Kind::Scalar))
            .collect();
        match self.choose(&regs) {
            Some(r) => Some(r),
            None => self.mov_imm(),
        }
    }

    fn alu(&mut self) {
        let Some(d) = self.scalar_dst() else {
            return;
        };
        self.alu_on(d);
    }

    /// One scalar operation on `d`.
    fn alu_on(&mut self, d: u8) {
        let wide = !self.chance(1, 4);
        let w = if wide { 'r' } else { 'w' };
        let bits: i64 = if wide { 64 } else { 32 };
        if self.chance(1, 6) {
            // Unary operations.
            match self.below(3) {
                0 => {
                    let _ = writeln!(self.out, "{w}{d} = -{w}{d}");
                }
                1 => {
                    let op = self.pick(&["be", "le", "bswap"]);
                    let n = self.pick(&[16, 32, 64]);
                    let _ = writeln!(self.out, "r{d} = {op}{n} r{d}");
                }
                // (Sign extensions, whose bounds the kernel keeps less
                // precisely through later signed and unsigned compares,
                // only where the kernel need not bound.)
                _ if self.spec.kernel_bounds_only => {
                    let _ = writeln!(self.out, "{w}{d} &= 0xff");
                }
                _ => {
                    let s = self.operand().unwrap_or(d);
                    let n = if wide {
                        self.pick(&[8, 16, 32])
                    } else {
                        self.pick(&[8, 16])
                    };
                    let _ = writeln!(self.out, "{w}{d} = (s{n}){w}{s}");
                }
            }
            self.set(d, Kind::Scalar);
            return;
        }
        let kernel = self.spec.kernel_bounds_only;
        let op = if kernel {
            self.pick(&KERNEL_ALU_OPS)
        } else {
            self.pick(&ALU_OPS)
        };
        let shift = op.contains("<<") || op.contains(">>");
        let div = op.contains('/') || op.contains('%');
        let src = if self.chance(2, 5) && !(kernel && shift) {
            self.operand().map(|s| format!("{w}{s}"))
        } else {
            None
        };
        let src = match src {
            Some(s) => s,
            None => {
                let v = if shift {
                    if self.bug() {
                        self.pick(&[bits, bits + 1, -1])
                    } else {
                        i64::from(self.below(bits as u32))
                    }
                } else if div {
                    if self.bug() {
                        0
                    } else {
                        self.pick(&[1, 2, 3, 7, 8, 10, 16, 255, -1, -3])
                    }
                } else {
                    self.imm32()
                };
                v.to_string()
            }
        };
        let _ = writeln!(self.out, "{w}{d} {op} {src}");
        self.set(d, Kind::Scalar);
    }

    fn mov(&mut self) {
        match self.below(5) {
            0..=2 => {
                self.mov_imm();
            }
            3 => {
                let Some(s) = self.operand() else {
                    self.mov_imm();
                    return;
                };
                let Some(d) = self.dst(Kind::Scalar) else {
                    return;
                };
                let w = if self.chance(1, 4) { 'w' } else { 'r' };
                let _ = writeln!(self.out, "{w}{d} = {w}{s}");
                self.set(d, Kind::Scalar);
            }
            _ => {
                // A copy of a pointer.
                let regs = self.regs_where(|k| matches!(k, Kind::Ctx | Kind::MapVal(_)));
                let Some(s) = self.choose(&regs) else {
                    return;
                };
                let kind = self.st.regs[s as usize];
                let Some(d) = self.dst(kind) else {
                    return;
                };
                let _ = writeln!(self.out, "r{d} = r{s}");
                self.set(d, kind);
            }
        }
    }

    fn choose_u32(&mut self, xs: &[u32]) -> Option<u32> {
        if xs.is_empty() {
            None
        } else {
            Some(self.pick(xs))
        }
    }

    /// A comparison of a scalar with an immediate or another scalar.
    fn condition(&mut self) -> Option<String> {
        let a = match self.operand() {
            Some(a) => a,
            None => self.mov_imm()?,
        };
        let w = if self.chance(1, 4) { 'w' } else { 'r' };
        let op = self.pick(&CONDS);
        let b = match self.scalar() {
            Some(b) if self.chance(1, 3) => format!("{w}{b}"),
            _ => self.imm32().to_string(),
        };
        Some(format!("if {w}{a} {op} {b}"))
    }

    fn cond(&mut self, depth: u32) {
        let Some(test) = self.condition() else {
            return;
        };
        let skip = self.label();
        let _ = writeln!(self.out, "{test} goto {skip}");
        let before = self.st.clone();
        let n = self.range(1, 3);
        self.items(n, depth + 1);
        if self.chance(1, 4) {
            // An else branch.
            let end = self.label();
            let _ = writeln!(self.out, "goto {end}");
            self.place(&skip);
            let then = std::mem::replace(&mut self.st, before);
            let n = self.range(1, 2);
            self.items(n, depth + 1);
            self.place(&end);
            self.st = self.st.join(&then);
        } else {
            self.place(&skip);
            self.st = self.st.join(&before);
        }
    }

    /// `for (i = start; i < n; i += step)`, tested at the head or at the
    /// back-edge.
    fn bounded_loop(&mut self, depth: u32) {
        let Some(c) = self.dst_among(Kind::Scalar, &[7, 8, 9]) else {
            return;
        };
        let n = if depth > 0 || !self.counters.is_empty() {
            self.range(1, 3)
        } else {
            self.pick(&[1, 2, 3, 4, 5, 8])
        };
        let start = if self.chance(1, 5) { 1 } else { 0 };
        let step = if self.bug() {
            0
        } else if self.chance(1, 5) {
            2
        } else {
            1
        };
        let _ = writeln!(self.out, "r{c} = {start}");
        self.set(c, Kind::Scalar);
        // The body sees r0..r5 as whatever the last iteration left.
        for r in 0..=5 {
            if self.st.regs[r] != Kind::Uninit {
                self.st.regs[r] = Kind::Dead;
            }
        }
        let head = self.label();
        let end = self.label();
        let at_head = self.chance(3, 5);
        let before = self.st.clone();
        self.frozen.push(before.clone());
        self.counters.push(c);
        self.place(&head);
        if at_head {
            let test = match self.below(4) {
                0 => format!("if r{c} > {} goto {end}", n - 1),
                1 => format!("if w{c} >= {n} goto {end}"),
                2 => format!("if r{c} s>= {n} goto {end}"),
                _ => format!("if r{c} >= {n} goto {end}"),
            };
            self.emit(&test);
        }
        let items = self.range(1, 3);
        self.items(items, depth + 1);
        if step > 0 {
            let _ = writeln!(self.out, "r{c} += {step}");
        }
        if at_head {
            let _ = writeln!(self.out, "goto {head}");
            self.place(&end);
        } else if (n - start) % step.max(1) == 0 && self.chance(1, 4) {
            let _ = writeln!(self.out, "if r{c} != {n} goto {head}");
        } else {
            let _ = writeln!(self.out, "if r{c} < {n} goto {head}");
        }
        self.counters.pop();
        self.frozen.pop();
        self.st = self.st.join(&before);
    }

    /// A scratch register to write a `kind` into, other than `not`.
    fn scratch(&mut self, kind: Kind, not: &[u8]) -> Option<u8> {
        let regs: Vec<u8> = [1u8, 2, 3, 4, 5, 0, 8, 9, 7]
            .into_iter()
            .filter(|r| !not.contains(r) && self.can_write(*r, kind))
            .collect();
        // Mostly r1..r5.
        let n = regs.len().min(5);
        if n == 0 {
            return None;
        }
        Some(regs[self.below(n as u32) as usize])
    }

    /// One operation that changes the range of `t`.
    fn transform(&mut self, t: u8) {
        let line = match self.below(16) {
            0 => format!(
                "r{t} &= {}",
                self.pick(&[0xff, 0xffff, 7, 15, 63, 0x7fff_ffff])
            ),
            1 => format!("r{t} >>= {}", self.range(1, 40)),
            2 | 5 if self.spec.kernel_bounds_only => {
                format!("r{t} &= {}", self.pick(&[3, 31, 0xfff]))
            }
            2 => format!("r{t} <<= {}", self.range(1, 4)),
            3 => format!("r{t} += {}", self.pick(&[1, 4, 8, -1, -8, 100])),
            4 => format!("r{t} -= {}", self.pick(&[1, 4, 8, -1, 100])),
            5 => format!("r{t} *= {}", self.pick(&[2, 3, 4, 8, -1])),
            6 | 7 if self.spec.kernel_bounds_only => format!("r{t} >>= {}", self.range(1, 8)),
            6 => format!("r{t} /= {}", self.pick(&[2, 3, 4, 16, 100])),
            7 => format!("r{t} %= {}", self.pick(&[2, 5, 8, 16, 33])),
            8 => format!("r{t} |= {}", self.pick(&[1, 8, 0x80])),
            9 => format!("r{t} ^= {}", self.pick(&[1, 0xff, -1])),
            10 => format!("r{t} s>>= {}", self.range(1, 63)),
            11 => format!("w{t} = w{t}"),
            12 => format!("w{t} += {}", self.pick(&[1, -1, 0x7fff_ffff])),
            13 if self.spec.kernel_bounds_only => format!("r{t} &= {}", self.pick(&[0x7f, 0xff])),
            13 => {
                let n = self.pick(&[8, 16, 32]);
                format!("r{t} = (s{n})r{t}")
            }
            14 => format!("r{t} = be{} r{t}", self.pick(&[16, 32])),
            _ => match self.scalar().filter(|&s| s != t) {
                Some(s) => {
                    let ops: &[&str] = if self.spec.kernel_bounds_only {
                        &["&=", "+=", "-=", "|="]
                    } else {
                        &["&=", "+=", "-=", "|=", "/=", "%="]
                    };
                    format!("r{t} {} r{s}", self.pick(ops))
                }
                None => format!("r{t} &= 31"),
            },
        };
        self.emit(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_bytes_cover_the_access() {
        assert_eq!(slot_bytes(-8, 8), Some((0, 0xff)));
        assert_eq!(slot_bytes(-4, 4), Some((0, 0xf0)));
        assert_eq!(slot_bytes(-16, 1), Some((1, 0x01)));
        assert_eq!(slot_bytes(-512, 8), Some((63, 0xff)));
        assert_eq!(slot_bytes(-520, 8), None);
        assert_eq!(slot_bytes(0, 4), None);
    }
}
