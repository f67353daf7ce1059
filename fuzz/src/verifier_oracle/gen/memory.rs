//! Memory items: context (or buffer) loads and stores, stack spills and
//! fills, accesses through a pointer plus a bounded (or not) variable
//! offset, pointer plus constant, atomics.

use std::fmt::Write as _;

use super::{addr, mem_type, Base, Gen, Kind, SLOTS};
use crate::verifier_oracle::{Flavour, SK_BUFF_SIZE};

impl Gen<'_, '_> {
    /// An access to the context at a field (socket filters) or an offset
    /// in the buffer: `(offset, size)`; now and then out of bounds.
    fn ctx_offset(&mut self, write: bool) -> (i64, u32) {
        match self.spec.flavour {
            Flavour::Raw { len } => {
                let len = i64::from(len);
                let size = self.pick(&[1u32, 2, 4, 8]);
                let room = len - i64::from(size);
                if room >= 0 && !self.bug() {
                    (i64::from(self.below(room as u32 + 1)), size)
                } else {
                    let off = self.pick(&[room + 1, len, -1, -i64::from(size), 512]);
                    (off, size)
                }
            }
            Flavour::SocketFilter => self.skb_field(write),
        }
    }

    /// A `struct __sk_buff` access of a socket filter.
    fn skb_field(&mut self, write: bool) -> (i64, u32) {
        if self.bug() {
            // Out of bounds, misaligned, or a field out of reach.
            return match self.below(4) {
                0 => (self.pick(&[SK_BUFF_SIZE, SK_BUFF_SIZE + 4, -4, -8]), 4),
                1 => (self.pick(&[1, 2, 50, 70]), 4),
                2 => (self.pick(&[0, 8, 16, 32]), 8),
                _ => (self.pick(&[8, 32, 76, 80, 0]), 4),
            };
        }
        let cb = |g: &mut Self| -> (i64, u32) {
            let size = g.pick(&[4u32, 4, 8, 2, 1]);
            let room = 20 / size;
            (48 + i64::from(size * g.below(room)), size)
        };
        if write {
            return cb(self);
        }
        match self.below(12) {
            0..=6 => {
                // len .. tc_index, hash, napi_id, gso_segs, gso_size:
                // 4-byte fields, narrow reads too.
                let fields: [i64; 16] = [
                    0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 68, 84, 164, 176,
                ];
                let field = self.pick(&fields);
                let size = self.pick(&[4u32, 4, 4, 2, 1]);
                (field + i64::from(size * self.below(4 / size)), size)
            }
            7..=9 => cb(self),
            10 => {
                // Fields socket filters may not read (tc_classid, data,
                // data_end, family, tstamp, wire_len, sk, tstamp_type,
                // hwtstamp): policy, not memory safety.
                self.pick(&[
                    (72, 4),
                    (76, 4),
                    (80, 4),
                    (88, 4),
                    (152, 8),
                    (160, 4),
                    (168, 8),
                    (180, 1),
                    (184, 8),
                ])
            }
            _ => {
                // Anywhere in the structure, any size.
                let size = self.pick(&[1u32, 2, 4, 8]);
                let off = i64::from(self.below(SK_BUFF_SIZE as u32 / size)) * i64::from(size);
                (off, size)
            }
        }
    }

    pub(super) fn ctx_load(&mut self) {
        let base = match self.ctx_reg() {
            Some(r) => r,
            None if self.bug() => 6,
            None => return,
        };
        let (off, size) = self.ctx_offset(false);
        let Some(d) = self.dst(Kind::Scalar) else {
            return;
        };
        let signed = size < 8 && self.chance(1, 6);
        let _ = writeln!(
            self.out,
            "r{d} = *({} *)({})",
            mem_type(size, signed),
            addr(base, off)
        );
        self.set(d, Kind::Scalar);
    }

    /// A value to store: an immediate or a scalar register (now and then
    /// a pointer: a leak).
    pub(super) fn store_value(&mut self, size: u32) -> String {
        if self.chance(1, 2) {
            let v = self.imm32();
            if self.spec.kernel_bounds_only && size < 4 {
                // (What fits the store, as a compiler writes it.)
                return (v & ((1i64 << (size * 8)) - 1)).to_string();
            }
            return v.to_string();
        }
        match self.operand() {
            Some(s) if size == 8 => format!("r{s}"),
            Some(s) => format!("w{s}"),
            None => self.imm32().to_string(),
        }
    }

    pub(super) fn ctx_store(&mut self) {
        let Some(base) = self.ctx_reg() else {
            return;
        };
        let (off, size) = self.ctx_offset(true);
        let v = self.store_value(size);
        let _ = writeln!(
            self.out,
            "*({} *)({}) = {v}",
            mem_type(size, false),
            addr(base, off)
        );
    }

    pub(super) fn stack_store(&mut self) {
        let size = self.pick(&[8u32, 8, 4, 2, 1]);
        let slot = if self.chance(1, 8) {
            self.below(SLOTS as u32)
        } else {
            self.below(12)
        };
        let mut off = -8 * (i64::from(slot) + 1) + i64::from(size * self.below(8 / size));
        if self.bug() {
            off = self.pick(&[-520, 0, 8, off + 1]);
        }
        // A pointer (8 bytes only) or a scalar.
        let ptrs = self.regs_where(|k| matches!(k, Kind::Ctx | Kind::MapVal(_)));
        let (value, ptr) = match self.choose(&ptrs) {
            Some(p) if size == 8 && self.chance(1, 5) => {
                (format!("r{p}"), Some(self.st.regs[p as usize]))
            }
            _ => (self.store_value(size), None),
        };
        if !self.can_write_stack(off, size, ptr) {
            return;
        }
        let _ = writeln!(
            self.out,
            "*({} *)({}) = {value}",
            mem_type(size, false),
            addr(10, off)
        );
        self.stack_written(off, size, ptr);
    }

    pub(super) fn stack_load(&mut self) {
        let written: Vec<u32> = (0..SLOTS as u32)
            .filter(|&i| self.st.stack[i as usize].init != 0)
            .collect();
        let bug = self.bug();
        let slot = match self.choose_u32(&written) {
            Some(s) if !bug => s,
            None if !bug => return self.stack_store(),
            _ => self.below(12),
        };
        let s = self.st.stack[slot as usize];
        let top = -8 * (i64::from(slot) + 1);
        // A pointer spill comes back whole.
        if let Some(kind @ (Kind::Ctx | Kind::MapVal(_))) = s.ptr {
            if let Some(d) = self.dst(kind) {
                let _ = writeln!(self.out, "r{d} = *(u64 *)({})", addr(10, top));
                self.set(d, kind);
            }
            return;
        }
        let sizes = [8u32, 4, 2, 1];
        let first = self.below(4) as usize;
        let mut found = None;
        'sizes: for k in 0..4 {
            let size = sizes[(first + k) % 4];
            for pos in 0..8 / size {
                let off = top + i64::from(pos * size);
                if self.stack_readable(off, size) {
                    found = Some((off, size));
                    break 'sizes;
                }
            }
        }
        let (off, size) = match found {
            Some(f) if !bug => f,
            _ => (top, self.pick(&sizes)),
        };
        let Some(d) = self.dst(Kind::Scalar) else {
            return;
        };
        let signed = size < 8 && self.chance(1, 6);
        let _ = writeln!(
            self.out,
            "r{d} = *({} *)({})",
            mem_type(size, signed),
            addr(10, off)
        );
        self.set(d, Kind::Scalar);
    }

    /// An access through a pointer plus a variable offset: a scalar from
    /// the input, a helper or a loop counter, transformed, bounded by an
    /// `&` or a comparison (or not: a bug), added to a buffer, map value
    /// or stack pointer.
    pub(super) fn var_access(&mut self, base_hint: Option<u8>) {
        let base = match base_hint {
            Some(r) => match self.st.regs[r as usize] {
                Kind::MapVal(m) => Base::Map(r, self.value_size(m)),
                _ => Base::Buf(r),
            },
            None => {
                let mut bases = vec![Base::Stack(self.pick(&[16, 32, 64]))];
                if self.buffer_len().is_some() {
                    if let Some(r) = self.ctx_reg() {
                        bases.push(Base::Buf(r));
                        bases.push(Base::Buf(r));
                    }
                }
                for r in self.map_regs() {
                    if let Kind::MapVal(m) = self.st.regs[r as usize] {
                        bases.push(Base::Map(r, self.value_size(m)));
                    }
                }
                self.pick(&bases)
            }
        };
        let (base_reg, region) = match base {
            Base::Buf(r) => (Some(r), self.buffer_len().unwrap_or(0)),
            Base::Map(r, size) => (Some(r), size),
            Base::Stack(size) => (None, size),
        };
        let keep: Vec<u8> = base_reg.into_iter().collect();
        let Some(t) = self.scratch(Kind::Scalar, &keep) else {
            return;
        };
        // How the offset is bounded (below); a signed bound goes with a
        // signed offset.
        let bound = match self.below(13) {
            // (Instead of `%` and `/`, which the kernel does not bound:
            // a mask, a shift.)
            9 if self.spec.kernel_bounds_only => 1,
            12 if self.spec.kernel_bounds_only => 11,
            b => b,
        };
        // (A sign-extended value checked with `<` and `s<` loses its
        // unsigned bounds in the kernel: not where the kernel must bound.)
        let signed = matches!(bound, 7 | 8) && !self.spec.kernel_bounds_only && self.chance(1, 2);
        // The largest value of the scalar, when it is a zero-extended load.
        let mut src_max: Option<u64> = None;
        // The scalar.
        let caller_saved_base = base_reg.is_some_and(|r| r <= 5);
        match self.below(6) {
            0 | 1 => match (self.ctx_reg(), self.spec.flavour) {
                (Some(c), Flavour::SocketFilter) => {
                    let (off, size) = self.skb_field(false);
                    let _ = writeln!(
                        self.out,
                        "r{t} = *({} *)({})",
                        mem_type(size, false),
                        addr(c, off)
                    );
                    if signed {
                        let bits = self.pick(&[8, 16]);
                        let _ = writeln!(self.out, "r{t} = (s{bits})r{t}");
                    }
                }
                (Some(c), Flavour::Raw { len }) if len > 0 => {
                    let size = self.pick(&[1u32, 1, 2, 4, 8]).min(len);
                    let size = [1, 2, 4, 8]
                        .into_iter()
                        .filter(|&s| s <= size)
                        .max()
                        .unwrap_or(1);
                    let off = self.below(len - size + 1);
                    let signed = size < 8 && (signed || self.chance(1, 5));
                    if !signed && size < 8 {
                        src_max = Some((1u64 << (size * 8)) - 1);
                    }
                    let _ = writeln!(
                        self.out,
                        "r{t} = *({} *)({})",
                        mem_type(size, signed),
                        addr(c, i64::from(off))
                    );
                }
                _ => {
                    let v = self.imm32();
                    let _ = writeln!(self.out, "r{t} = {v}");
                }
            },
            2 if !caller_saved_base => {
                self.emit("call bpf_get_prandom_u32#7");
                self.clobber(Kind::Scalar);
                let _ = writeln!(self.out, "r{t} = r0");
            }
            3 if !self.counters.is_empty() => {
                let counters = self.counters.clone();
                let c = self.pick(&counters);
                let _ = writeln!(self.out, "r{t} = r{c}");
            }
            4 => match self.scalar() {
                Some(s) => {
                    let _ = writeln!(self.out, "r{t} = r{s}");
                }
                None => {
                    let v = self.imm32();
                    let _ = writeln!(self.out, "r{t} = {v}");
                }
            },
            _ => {
                let v = self.range(0, region + 2);
                let _ = writeln!(self.out, "r{t} = {v}");
            }
        }
        self.set(t, Kind::Scalar);
        let transforms = if matches!(bound, 11 | 12) && src_max.is_some() {
            0
        } else {
            self.pick(&[0, 0, 1, 2])
        };
        for _ in 0..transforms {
            self.transform(t);
        }
        // The access, and the largest offset it allows (a negative
        // access offset, `buf[i - 1]`, needs a smallest one too).
        let size = self.pick(&[1u32, 1, 2, 4, 8]);
        let off = if self.chance(1, 4) {
            -self.pick(&[1i64, 1, 2, 4, 8])
        } else {
            i64::from(self.below(5))
        };
        let limit = i64::from(region) - i64::from(size) - off;
        // Bounds off by one (or more) now and then: the verifier must
        // refuse them, exactly.
        let fuzz = |g: &mut Self, at: i64| -> i64 {
            if g.chance(1, 4) {
                at + g.pick(&[1, 1, -1, 2, 8])
            } else {
                at
            }
        };
        let skip = self.label();
        let mut branched = false;
        let before = self.st.clone();
        if off < 0 {
            let low = fuzz(self, -off);
            let _ = writeln!(self.out, "if r{t} < {low} goto {skip}");
            branched = true;
        }
        match bound {
            0 => {} // unbounded, unless the transforms bounded it
            1 | 2 => {
                let mask = if limit >= 0 && self.chance(1, 2) {
                    // The largest 2^k - 1 within the limit.
                    let mut m = 0i64;
                    while m * 2 < limit {
                        m = m * 2 + 1;
                    }
                    m
                } else {
                    self.pick(&[1, 3, 7, 15, 31, 63, 255])
                };
                let _ = writeln!(self.out, "r{t} &= {mask}");
            }
            3 | 4 => {
                let c = fuzz(self, limit);
                let _ = writeln!(self.out, "if r{t} > {c} goto {skip}");
                branched = true;
            }
            5 => {
                let c = fuzz(self, limit + 1);
                let _ = writeln!(self.out, "if r{t} >= {c} goto {skip}");
                branched = true;
            }
            6 => {
                let c = fuzz(self, limit);
                let _ = writeln!(self.out, "if w{t} > {c} goto {skip}");
                branched = true;
            }
            7 => {
                let c = fuzz(self, limit);
                let low = fuzz(self, 0);
                let _ = writeln!(self.out, "if r{t} s< {low} goto {skip}");
                let _ = writeln!(self.out, "if r{t} s> {c} goto {skip}");
                branched = true;
            }
            8 => {
                let c = fuzz(self, limit);
                let _ = writeln!(self.out, "if r{t} s> {c} goto {skip}");
                branched = true;
            }
            9 => {
                let c = fuzz(self, limit + 1).max(1);
                let _ = writeln!(self.out, "r{t} %= {c}");
            }
            11 | 12 if limit >= 0 && src_max.is_some() => {
                // A load scaled down into range: `x >> k`, `x / c` (now
                // and then one step short).
                let max = src_max.unwrap_or(0);
                let limit = limit as u64;
                let c = (max + 1).div_ceil(limit + 1).max(1);
                if bound == 12 && c <= i32::MAX as u64 {
                    let c = if c > 1 && self.chance(1, 4) { c - 1 } else { c };
                    let _ = writeln!(self.out, "r{t} /= {c}");
                } else {
                    let mut k = 0u32;
                    while max >> k > limit {
                        k += 1;
                    }
                    let k = if k > 0 && self.chance(1, 4) { k - 1 } else { k };
                    let _ = writeln!(self.out, "r{t} >>= {k}");
                }
            }
            _ => {
                let keep = [t, base_reg.unwrap_or(t)];
                if let Some(b) = self.scratch(Kind::Scalar, &keep) {
                    let c = fuzz(self, limit);
                    let _ = writeln!(self.out, "r{b} = {c}");
                    self.set(b, Kind::Scalar);
                    let _ = writeln!(self.out, "if r{t} > r{b} goto {skip}");
                    branched = true;
                }
            }
        }
        // The pointer and the access.
        let ty = mem_type(size, false);
        let write = match base {
            Base::Stack(_) => self.chance(1, 2),
            _ => self.chance(1, 3),
        };
        if let Base::Stack(window) = base {
            if !write && !self.bug() {
                // Reads need every byte the offset may reach written.
                self.init_stack(-i64::from(window), window);
            }
        }
        let mut not = vec![t];
        not.extend(base_reg);
        if let Some(p) = self.scratch(Kind::Dead, &not) {
            match base {
                Base::Stack(window) => {
                    let _ = writeln!(self.out, "r{p} = r10");
                    let _ = writeln!(self.out, "r{p} += -{window}");
                }
                Base::Buf(r) | Base::Map(r, _) => {
                    let _ = writeln!(self.out, "r{p} = r{r}");
                }
            }
            self.set(p, Kind::Dead);
            let _ = writeln!(self.out, "r{p} += r{t}");
            if write {
                let v = self.store_value(size);
                let _ = writeln!(self.out, "*({ty} *)({}) = {v}", addr(p, off));
            } else if let Some(d) = self.dst(Kind::Scalar) {
                let _ = writeln!(self.out, "r{d} = *({ty} *)({})", addr(p, off));
                self.set(d, Kind::Scalar);
            }
        }
        if branched {
            self.place(&skip);
            self.st = self.st.join(&before);
        }
    }

    /// The buffer plus a constant, then an access.
    pub(super) fn ptr_const(&mut self) {
        let Some(c) = self.ctx_reg() else {
            return;
        };
        let len = i64::from(self.buffer_len().unwrap_or(0));
        let size = self.pick(&[1u32, 2, 4, 8]);
        let total = if self.bug() {
            len - i64::from(size) + 1
        } else {
            i64::from(self.below((len - i64::from(size) + 1).max(1) as u32))
        };
        let k = self.pick(&[total, total - 4, total + 4, 0]);
        let off = total - k;
        let Some(p) = self.scratch(Kind::Dead, &[c]) else {
            return;
        };
        let _ = writeln!(self.out, "r{p} = r{c}");
        let _ = writeln!(self.out, "r{p} += {k}");
        self.set(p, Kind::Dead);
        let ty = mem_type(size, false);
        if self.chance(1, 3) {
            let v = self.store_value(size);
            let _ = writeln!(self.out, "*({ty} *)({}) = {v}", addr(p, off));
        } else if let Some(d) = self.dst(Kind::Scalar) {
            let _ = writeln!(self.out, "r{d} = *({ty} *)({})", addr(p, off));
            self.set(d, Kind::Scalar);
        }
    }

    /// An atomic operation on a written stack slot (now and then, a bug:
    /// on a spilled pointer, whose address it would make a number).
    pub(super) fn atomic(&mut self) {
        let Some(s) = self.scalar() else {
            return;
        };
        let pointers: Vec<u32> = (0..SLOTS as u32)
            .filter(|&i| {
                matches!(
                    self.st.stack[i as usize].ptr,
                    Some(Kind::Ctx | Kind::MapVal(_))
                )
            })
            .collect();
        if !pointers.is_empty() && self.chance(1, 3) {
            let slot = pointers[self.below(pointers.len() as u32) as usize];
            let off = -8 * (i64::from(slot) + 1);
            if self.can_write(s, Kind::Scalar) && self.chance(1, 2) {
                let _ = writeln!(
                    self.out,
                    "r{s} = atomic_fetch_add((u64 *)({}), r{s})",
                    addr(10, off)
                );
            } else {
                let _ = writeln!(self.out, "lock *(u64 *)({}) += r{s}", addr(10, off));
            }
            self.stack_written(off, 8, None);
            return;
        }
        let wide = self.chance(1, 2);
        let (size, w) = if wide { (8u32, 'r') } else { (4, 'w') };
        let cands: Vec<i64> = (0..16i64)
            .flat_map(|i| [-8 * (i + 1), -8 * (i + 1) + 4])
            .filter(|&off| (!wide || off % 8 == 0) && self.stack_readable(off, size))
            .collect();
        let off = if !cands.is_empty() && !self.bug() {
            cands[self.below(cands.len() as u32) as usize]
        } else {
            let off = -8 * i64::from(self.range(1, 8));
            if !self.bug() {
                self.init_stack(off, 8);
            }
            off
        };
        let ty = mem_type(size, false);
        if self.chance(1, 3) && self.can_write(s, Kind::Scalar) {
            let op = self.pick(&["add", "or", "and", "xor"]);
            let _ = writeln!(
                self.out,
                "{w}{s} = atomic_fetch_{op}(({ty} *)({}), {w}{s})",
                addr(10, off)
            );
        } else {
            let op = self.pick(&["+=", "|=", "&=", "^="]);
            let _ = writeln!(self.out, "lock *({ty} *)({}) {op} {w}{s}", addr(10, off));
        }
    }
}
