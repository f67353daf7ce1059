//! Map items (lookups with and without their null checks, uses of the
//! values, updates, deletions) and helper calls.

use std::fmt::Write as _;

use super::{addr, mem_type, Gen, Kind};

impl Gen<'_, '_> {
    /// Writes a 4-byte key at `fp - k` (now and then not: an uninitialised
    /// key unless it was written before) and returns `k`.
    fn key(&mut self) -> i64 {
        let k = self.pick(&[4i64, 4, 8, 12, 16, 24, 32]);
        if self.bug() || !self.can_write_stack(-k, 4, None) {
            return k;
        }
        let v = match self.scalar() {
            Some(s) if self.chance(1, 4) => format!("w{s}"),
            _ => self.pick(&[0, 0, 0, 1, 2]).to_string(),
        };
        let _ = writeln!(self.out, "*(u32 *)({}) = {v}", addr(10, -k));
        self.stack_written(-k, 4, None);
        k
    }

    fn map_index(&mut self) -> u8 {
        self.below(self.spec.maps.len() as u32) as u8
    }

    pub(super) fn map_lookup(&mut self, depth: u32) {
        let m = self.map_index();
        let k = self.key();
        self.emit("r2 = r10");
        let _ = writeln!(self.out, "r2 += -{k}");
        let _ = writeln!(self.out, "r1 = map[idx:{m}]");
        self.emit("call bpf_map_lookup_elem#1");
        self.clobber(Kind::Dead);
        let value = Kind::MapVal(m);
        match self.below(10) {
            0..=5 => {
                // if (v) { ... }
                let copy = if self.chance(1, 3) {
                    self.dst_among(value, &[7, 8, 9])
                } else {
                    None
                };
                if let Some(c) = copy {
                    let _ = writeln!(self.out, "r{c} = r0");
                    self.set(c, Kind::Dead);
                }
                let before = self.st.clone();
                let skip = self.label();
                let checked = match copy {
                    Some(c) if self.chance(1, 2) => c,
                    _ => 0,
                };
                let _ = writeln!(self.out, "if r{checked} == 0 goto {skip}");
                self.set(0, value);
                if let Some(c) = copy {
                    self.set(c, value);
                }
                for _ in 0..self.range(1, 3) {
                    if self.chance(1, 4) {
                        self.items(1, depth + 1);
                    } else {
                        let regs = self.map_regs();
                        match self.choose(&regs) {
                            Some(r) => self.map_use(r),
                            None => break,
                        }
                    }
                }
                self.place(&skip);
                self.st = self.st.join(&before);
            }
            6..=8 => {
                // if (!v) return 0;
                let ok = self.label();
                let _ = writeln!(self.out, "if r0 != 0 goto {ok}");
                self.emit("r0 = 0");
                self.emit("exit");
                self.place(&ok);
                self.set(0, value);
                if self.chance(1, 2) {
                    if let Some(c) = self.dst_among(value, &[7, 8, 9]) {
                        let _ = writeln!(self.out, "r{c} = r0");
                        self.set(c, value);
                    }
                }
                for _ in 0..self.below(3) {
                    self.map_use(0);
                    if self.st.regs[0] != value {
                        break;
                    }
                }
            }
            _ => {
                // No null check, or a use on the null branch: a bug.
                let wrong = self.chance(1, 2);
                let skip = self.label();
                if wrong {
                    let _ = writeln!(self.out, "if r0 != 0 goto {skip}");
                }
                let before = self.st.clone();
                self.set(0, value);
                self.map_use(0);
                if wrong {
                    self.place(&skip);
                    self.st = self.st.join(&before);
                }
                self.set(0, Kind::Dead);
            }
        }
    }

    /// A use of the map value in `r`.
    pub(super) fn map_use(&mut self, r: u8) {
        let Kind::MapVal(m) = self.st.regs[r as usize] else {
            return;
        };
        let v = i64::from(self.value_size(m));
        let size = self.pick(&[1u32, 2, 4, 8, 8]);
        let room = v - i64::from(size);
        let off = if room >= 0 && !self.bug() {
            i64::from(self.below(room as u32 + 1))
        } else {
            self.pick(&[room + 1, v, -1, -8])
        };
        let ty = mem_type(size, false);
        match self.below(7) {
            0 | 1 => {
                if let Some(d) = self.dst(Kind::Scalar) {
                    let signed = size < 8 && self.chance(1, 5);
                    let _ = writeln!(
                        self.out,
                        "r{d} = *({} *)({})",
                        mem_type(size, signed),
                        addr(r, off)
                    );
                    self.set(d, Kind::Scalar);
                }
            }
            2 => {
                let value = if self.chance(1, 30) && size == 8 {
                    // A pointer into a map: a leak.
                    "r6".to_string()
                } else {
                    self.store_value(size)
                };
                let _ = writeln!(self.out, "*({ty} *)({}) = {value}", addr(r, off));
            }
            3 => {
                // Atomics are aligned.
                let Some(s) = self.scalar() else {
                    return;
                };
                let (size, w) = if self.chance(1, 2) {
                    (8, 'r')
                } else {
                    (4, 'w')
                };
                let off = (off / size) * size;
                let ty = mem_type(size as u32, false);
                if self.chance(1, 3) && self.can_write(s, Kind::Scalar) {
                    let _ = writeln!(
                        self.out,
                        "{w}{s} = atomic_fetch_add(({ty} *)({}), {w}{s})",
                        addr(r, off)
                    );
                } else {
                    let _ = writeln!(self.out, "lock *({ty} *)({}) += {w}{s}", addr(r, off));
                }
            }
            4 => self.var_access(Some(r)),
            5 => {
                // value + constant, then an access.
                let Some(p) = self.scratch(Kind::Dead, &[r]) else {
                    return;
                };
                let k = self.pick(&[off, off / 2, 4, 8]);
                let _ = writeln!(self.out, "r{p} = r{r}");
                let _ = writeln!(self.out, "r{p} += {k}");
                self.set(p, Kind::Dead);
                if let Some(d) = self.dst(Kind::Scalar) {
                    let _ = writeln!(self.out, "r{d} = *({ty} *)({})", addr(p, off - k));
                    self.set(d, Kind::Scalar);
                }
            }
            _ => self.map_update_from(Some(r)),
        }
    }

    pub(super) fn map_update(&mut self) {
        self.map_update_from(None);
    }

    /// `bpf_map_update_elem` with a value on the stack or in the map value
    /// in `from`.
    fn map_update_from(&mut self, from: Option<u8>) {
        let m = self.map_index();
        let v = self.value_size(m);
        let k = self.key();
        let from = from.map(|r| (r, self.st.regs[r as usize]));
        let src = match from {
            Some((r, Kind::MapVal(s))) if self.value_size(s) >= v || self.bug() => Some(r),
            _ => None,
        };
        match src {
            Some(r) => {
                let _ = writeln!(self.out, "r3 = r{r}");
            }
            None => {
                let at = -(i64::from(v) + 8 * i64::from(self.range(1, 4)));
                if !self.bug() {
                    self.init_stack(at, v);
                }
                self.emit("r3 = r10");
                let _ = writeln!(self.out, "r3 += {at}");
            }
        }
        self.emit("r2 = r10");
        let _ = writeln!(self.out, "r2 += -{k}");
        let _ = writeln!(self.out, "r1 = map[idx:{m}]");
        let flags = self.pick(&[0, 0, 1, 2]);
        let _ = writeln!(self.out, "r4 = {flags}");
        self.emit("call bpf_map_update_elem#2");
        self.clobber(Kind::Scalar);
    }

    pub(super) fn map_delete(&mut self) {
        let m = self.map_index();
        let k = self.key();
        self.emit("r2 = r10");
        let _ = writeln!(self.out, "r2 += -{k}");
        let _ = writeln!(self.out, "r1 = map[idx:{m}]");
        self.emit("call bpf_map_delete_elem#3");
        self.clobber(Kind::Scalar);
    }

    /// `bpf_for_each_map_elem(map, cb, NULL, 0)` with a callback generated
    /// here: it gets the map in `r1`, the key in `r2`, the value (of the
    /// map's size) in `r3` and the NULL context in `r4`.
    pub(super) fn for_each_callback(&mut self) {
        let m = self.map_index();
        let mut regs = [Kind::Uninit; 10];
        regs[1] = Kind::Dead;
        regs[2] = Kind::Dead;
        regs[3] = Kind::MapVal(m);
        regs[4] = Kind::Scalar;
        let (name, _) = self.subprogram(regs, true);
        let _ = writeln!(self.out, "r1 = map[idx:{m}]");
        self.call_back("bpf_for_each_map_elem#164", &name);
    }

    pub(super) fn helper(&mut self) {
        let name = self.pick(&[
            "bpf_ktime_get_ns#5",
            "bpf_get_prandom_u32#7",
            "bpf_get_smp_processor_id#8",
        ]);
        let _ = writeln!(self.out, "call {name}");
        self.clobber(Kind::Scalar);
    }

    /// `bpf_get_current_comm(fp - k, size)`: a helper writing the stack.
    pub(super) fn get_comm(&mut self) {
        let k = self.pick(&[8u32, 16, 24, 32]);
        let size = if self.bug() { k + 8 } else { self.range(1, k) };
        let top = -i64::from(k);
        let slots =
            (0..k.div_ceil(8)).all(|i| self.can_write_stack(top + 8 * i64::from(i), 8, None));
        if !slots {
            return;
        }
        if self.chance(1, 4) {
            // A bounded variable size.
            match self.scalar() {
                Some(s) => {
                    let _ = writeln!(self.out, "r2 = r{s}");
                    let mask = self.pick(&[1, 3, 7, 15]).min(k - 1);
                    let _ = writeln!(self.out, "r2 &= {mask}");
                    self.emit("r2 += 1");
                }
                None => {
                    let _ = writeln!(self.out, "r2 = {size}");
                }
            }
        } else {
            let _ = writeln!(self.out, "r2 = {size}");
        }
        self.emit("r1 = r10");
        let _ = writeln!(self.out, "r1 += {top}");
        self.emit("call bpf_get_current_comm#16");
        self.clobber(Kind::Scalar);
        // (Only a constant size writes every byte for sure.)
        for i in 0..size.min(k) {
            let off = top + i64::from(i);
            self.stack_written(off, 1, None);
        }
    }

    /// A local dynptr over the null-checked map value in `r`
    /// (`bpf_dynptr_from_mem`), used at once: sliced (`bpf_dynptr_data`)
    /// and the slice read or written (the slice ending at the value's end
    /// now and then, so that an access past it leaves the value), read
    /// into the stack, or written from it. Its 16 bytes of stack are not
    /// to be read afterwards.
    pub(super) fn dynptr(&mut self, r: u8) {
        let Kind::MapVal(m) = self.st.regs[r as usize] else {
            return;
        };
        let v = self.value_size(m);
        let k = self.pick(&[16i64, 24, 32, 48, 64]);
        let dead = Some(Kind::Dead);
        if !self.can_write_stack(-k, 8, dead) || !self.can_write_stack(-k + 8, 8, dead) {
            return;
        }
        let size = if self.bug() { v + 8 } else { self.range(1, v) };
        let _ = writeln!(
            self.out,
            "r1 = r{r}\nr2 = {size}\nr3 = 0\nr4 = r10\nr4 += {}",
            -k
        );
        self.emit("call bpf_dynptr_from_mem#197");
        self.clobber(Kind::Scalar);
        self.stack_written(-k, 8, dead);
        self.stack_written(-k + 8, 8, dead);
        let off = self.below(size);
        match self.below(3) {
            0 => {
                // A slice of `len` bytes at `off`, an access inside it.
                let len = if self.chance(1, 2) {
                    size - off
                } else {
                    self.range(1, size - off)
                };
                let sizes: Vec<u32> = [1u32, 2, 4, 8].into_iter().filter(|&s| s <= len).collect();
                let sz = self.pick(&sizes);
                let at = if self.bug() {
                    len - sz + 1
                } else {
                    self.below(len - sz + 1)
                };
                let _ = writeln!(self.out, "r1 = r10\nr1 += {}\nr2 = {off}\nr3 = {len}", -k);
                self.emit("call bpf_dynptr_data#203");
                self.emit("if r0 == 0 goto +1");
                let ty = mem_type(sz, false);
                if self.chance(1, 2) {
                    let _ = writeln!(self.out, "r0 = *({ty} *)(r0 + {at})");
                } else {
                    let value = self.store_value(sz);
                    let _ = writeln!(self.out, "*({ty} *)(r0 + {at}) = {value}");
                }
                self.clobber(Kind::Dead);
            }
            which => {
                // A window of the stack below the dynptr.
                let top = -k - 8 * i64::from(self.range(1, 2));
                let len = self.range(1, 8);
                if top < -512 || !self.can_write_stack(top, 8, None) {
                    return;
                }
                if which == 1 {
                    let _ = writeln!(
                        self.out,
                        "r1 = r10\nr1 += {top}\nr2 = {len}\nr3 = r10\nr3 += {}\nr4 = {off}\nr5 = 0",
                        -k
                    );
                    self.emit("call bpf_dynptr_read#201");
                    self.clobber(Kind::Scalar);
                    self.stack_written(top, len, None);
                } else {
                    self.init_stack(top, len);
                    let _ = writeln!(
                        self.out,
                        "r1 = r10\nr1 += {}\nr2 = {off}\nr3 = r10\nr3 += {top}\nr4 = {len}\nr5 = 0",
                        -k
                    );
                    self.emit("call bpf_dynptr_write#202");
                    self.clobber(Kind::Scalar);
                }
            }
        }
    }
}
