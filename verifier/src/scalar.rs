//! The abstract value of a scalar register: a [`Tnum`] plus signed and
//! unsigned bounds of the whole 64-bit value and of its low 32 bits, kept
//! consistent with each other as the Linux verifier's `bpf_reg_state` does.
//!
//! A [`Scalar`] stands for the set of `u64`s that are members of its tnum
//! and lie within all four bound pairs (see [`Scalar::contains`]). Every
//! operation is sound: the concrete result of the interpreter's operation
//! on members of the operands is a member of the abstract result.
//!
//! Every constructor and operation except [`Scalar::join`] returns a
//! *synced* value (bounds and tnum tightened against each other by
//! [`Scalar::sync`]); only a joined value or one whose fields were written
//! by hand needs an explicit `sync()` (or [`Scalar::try_sync`]).

use std::cmp::{max, min};
use std::fmt;

use userbpf_vm::isa::{AluOp, EndianOp, JmpCond, Width};

use crate::tnum::{low_mask, Tnum};

/// The abstract value of a scalar: the `u64`s in `var_off` within all four
/// bound pairs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Scalar {
    /// Known and unknown bits.
    pub var_off: Tnum,
    /// Smallest value, as signed.
    pub smin: i64,
    /// Largest value, as signed.
    pub smax: i64,
    /// Smallest value, as unsigned.
    pub umin: u64,
    /// Largest value, as unsigned.
    pub umax: u64,
    /// Smallest low 32 bits, as signed.
    pub s32_min: i32,
    /// Largest low 32 bits, as signed.
    pub s32_max: i32,
    /// Smallest low 32 bits, as unsigned.
    pub u32_min: u32,
    /// Largest low 32 bits, as unsigned.
    pub u32_max: u32,
}

/// Bounds of a value of one width (32 or 64 bits), held sign- or
/// zero-extended in 64-bit containers so one code path serves both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rng {
    smin: i64,
    smax: i64,
    umin: u64,
    umax: u64,
}

/// Largest unsigned value of `bits` bits.
const fn umax_of(bits: u32) -> u64 {
    low_mask(bits)
}

/// Smallest signed value of `bits` bits.
const fn smin_of(bits: u32) -> i64 {
    i64::MIN.wrapping_shr(64u32.wrapping_sub(bits))
}

/// Largest signed value of `bits` bits.
const fn smax_of(bits: u32) -> i64 {
    !smin_of(bits)
}

/// The low `bits` bits of `v`, sign-extended.
const fn sext(v: u64, bits: u32) -> i64 {
    let sh = 64u32.wrapping_sub(bits);
    (v.wrapping_shl(sh) as i64).wrapping_shr(sh)
}

const fn width_bits(width: Width) -> u32 {
    match width {
        Width::W32 => 32,
        Width::W64 => 64,
    }
}

/// The mathematical range `lo..=hi` taken modulo `2^bits` as unsigned.
fn wrap_u(bits: u32, lo: i128, hi: i128) -> (u64, u64) {
    if lo.wrapping_shr(bits) == hi.wrapping_shr(bits) {
        let m = umax_of(bits);
        ((lo as u64) & m, (hi as u64) & m)
    } else {
        (0, umax_of(bits))
    }
}

/// The mathematical range `lo..=hi` taken modulo `2^bits` as signed.
fn wrap_s(bits: u32, lo: i128, hi: i128) -> (i64, i64) {
    let off = 1i128.wrapping_shl(bits.wrapping_sub(1));
    if lo.wrapping_add(off).wrapping_shr(bits) == hi.wrapping_add(off).wrapping_shr(bits) {
        (sext(lo as u64, bits), sext(hi as u64, bits))
    } else {
        (smin_of(bits), smax_of(bits))
    }
}

impl Rng {
    const fn full(bits: u32) -> Rng {
        Rng {
            smin: smin_of(bits),
            smax: smax_of(bits),
            umin: 0,
            umax: umax_of(bits),
        }
    }

    /// Unsigned bounds; signed ones follow when the range does not cross
    /// the sign boundary.
    fn from_unsigned(bits: u32, umin: u64, umax: u64) -> Rng {
        let (lo, hi) = (sext(umin, bits), sext(umax, bits));
        if lo <= hi {
            Rng {
                smin: lo,
                smax: hi,
                umin,
                umax,
            }
        } else {
            Rng {
                umin,
                umax,
                ..Rng::full(bits)
            }
        }
    }

    /// Signed bounds; unsigned ones follow when both ends share a sign.
    fn from_signed(bits: u32, smin: i64, smax: i64) -> Rng {
        let m = umax_of(bits);
        let (lo, hi) = ((smin as u64) & m, (smax as u64) & m);
        if lo <= hi {
            Rng {
                smin,
                smax,
                umin: lo,
                umax: hi,
            }
        } else {
            Rng {
                smin,
                smax,
                ..Rng::full(bits)
            }
        }
    }

    /// Intersection (possibly empty).
    fn meet(self, o: Rng) -> Rng {
        Rng {
            smin: max(self.smin, o.smin),
            smax: min(self.smax, o.smax),
            umin: max(self.umin, o.umin),
            umax: min(self.umax, o.umax),
        }
    }

    /// Both pairs signed and unsigned, widened to `i128`.
    fn wide(self) -> (i128, i128, i128, i128) {
        (
            i128::from(self.smin),
            i128::from(self.smax),
            i128::from(self.umin),
            i128::from(self.umax),
        )
    }
}

/// A comparison normalised for refinement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rel {
    Eq,
    Ne,
    Lt,
    Le,
    SLt,
    SLe,
    Set,
    NotSet,
}

/// The concrete semantics of `dst op= src` (the interpreter's).
fn eval_alu(op: AluOp, width: Width, dst: u64, src: u64) -> u64 {
    match width {
        Width::W64 => match op {
            AluOp::Add => dst.wrapping_add(src),
            AluOp::Sub => dst.wrapping_sub(src),
            AluOp::Mul => dst.wrapping_mul(src),
            AluOp::Div => dst.checked_div(src).unwrap_or(0),
            AluOp::SDiv => {
                let (a, b) = (dst as i64, src as i64);
                if b == 0 {
                    0
                } else {
                    a.checked_div(b).unwrap_or(a) as u64
                }
            }
            AluOp::Or => dst | src,
            AluOp::And => dst & src,
            AluOp::Lsh => dst.wrapping_shl(src as u32),
            AluOp::Rsh => dst.wrapping_shr(src as u32),
            AluOp::Mod => dst.checked_rem(src).unwrap_or(dst),
            AluOp::SMod => {
                let (a, b) = (dst as i64, src as i64);
                if b == 0 {
                    dst
                } else {
                    a.checked_rem(b).unwrap_or(0) as u64
                }
            }
            AluOp::Xor => dst ^ src,
            AluOp::Mov => src,
            AluOp::Arsh => (dst as i64).wrapping_shr(src as u32) as u64,
        },
        Width::W32 => {
            let (a, b) = (dst as u32, src as u32);
            let r: u32 = match op {
                AluOp::Add => a.wrapping_add(b),
                AluOp::Sub => a.wrapping_sub(b),
                AluOp::Mul => a.wrapping_mul(b),
                AluOp::Div => a.checked_div(b).unwrap_or(0),
                AluOp::SDiv => {
                    let (sa, sb) = (a as i32, b as i32);
                    if sb == 0 {
                        0
                    } else {
                        sa.checked_div(sb).unwrap_or(sa) as u32
                    }
                }
                AluOp::Or => a | b,
                AluOp::And => a & b,
                AluOp::Lsh => a.wrapping_shl(b),
                AluOp::Rsh => a.wrapping_shr(b),
                AluOp::Mod => a.checked_rem(b).unwrap_or(a),
                AluOp::SMod => {
                    let (sa, sb) = (a as i32, b as i32);
                    if sb == 0 {
                        a
                    } else {
                        sa.checked_rem(sb).unwrap_or(0) as u32
                    }
                }
                AluOp::Xor => a ^ b,
                AluOp::Mov => b,
                AluOp::Arsh => (a as i32).wrapping_shr(b) as u32,
            };
            u64::from(r)
        }
    }
}

impl Scalar {
    /// Every `u64`.
    pub const UNKNOWN: Scalar = Scalar {
        var_off: Tnum::UNKNOWN,
        smin: i64::MIN,
        smax: i64::MAX,
        umin: 0,
        umax: u64::MAX,
        s32_min: i32::MIN,
        s32_max: i32::MAX,
        u32_min: 0,
        u32_max: u32::MAX,
    };

    /// Exactly `v`.
    pub const fn constant(v: u64) -> Scalar {
        Scalar {
            var_off: Tnum::constant(v),
            smin: v as i64,
            smax: v as i64,
            umin: v,
            umax: v,
            s32_min: v as i32,
            s32_max: v as i32,
            u32_min: v as u32,
            u32_max: v as u32,
        }
    }

    /// `self` with its low half known to be `v` (the kernel's
    /// `__mark_reg32_known`), synced.
    pub fn with_subreg_const(&self, v: u32) -> Scalar {
        Scalar {
            var_off: self.var_off.with_subreg(Tnum::constant(u64::from(v))),
            u32_min: v,
            u32_max: v,
            s32_min: v as i32,
            s32_max: v as i32,
            ..*self
        }
        .finish()
    }

    /// Every `u64`.
    pub const fn unknown() -> Scalar {
        Scalar::UNKNOWN
    }

    /// The members of `t`.
    pub fn from_tnum(t: Tnum) -> Scalar {
        Scalar {
            var_off: t,
            ..Scalar::UNKNOWN
        }
        .finish()
    }

    /// The values `lo..=hi` (unsigned); `lo > hi` gives [`Scalar::UNKNOWN`].
    pub fn from_range_u64(lo: u64, hi: u64) -> Scalar {
        if lo > hi {
            return Scalar::UNKNOWN;
        }
        Scalar {
            umin: lo,
            umax: hi,
            ..Scalar::UNKNOWN
        }
        .finish()
    }

    /// The values `lo..=hi` (signed, within `i32`); `lo > hi` gives
    /// [`Scalar::UNKNOWN`].
    pub fn from_range_i64(lo: i64, hi: i64) -> Scalar {
        let (Ok(lo32), Ok(hi32)) = (i32::try_from(lo), i32::try_from(hi)) else {
            return Scalar::UNKNOWN;
        };
        if lo > hi {
            return Scalar::UNKNOWN;
        }
        Scalar {
            smin: lo,
            smax: hi,
            s32_min: lo32,
            s32_max: hi32,
            ..Scalar::UNKNOWN
        }
        .finish()
    }

    /// The value of a zero-extending load of `bytes` bytes (1, 2, 4 or 8):
    /// any value below `2^(8 * bytes)`.
    pub fn unknown_bits(bytes: usize) -> Scalar {
        Scalar::from_tnum(Tnum::UNKNOWN.cast(bytes))
    }

    /// The value of a sign-extending load of `bytes` bytes (1, 2 or 4):
    /// any value of that signed range, sign-extended. 8 or more gives
    /// [`Scalar::UNKNOWN`].
    pub fn sext_load(bytes: usize) -> Scalar {
        if bytes >= 8 {
            return Scalar::UNKNOWN;
        }
        if bytes == 0 {
            return Scalar::constant(0);
        }
        let bits = (bytes as u32).wrapping_mul(8);
        let (lo, hi) = (smin_of(bits), smax_of(bits));
        Scalar {
            smin: lo,
            smax: hi,
            ..Scalar::UNKNOWN
        }
        .finish()
    }

    /// The value, if exactly one is possible.
    pub const fn is_const(&self) -> Option<u64> {
        if self.var_off.is_const() {
            Some(self.var_off.value)
        } else {
            None
        }
    }

    /// The low 32 bits, if exactly one value is possible for them.
    pub const fn subreg_const(&self) -> Option<u32> {
        let t = self.var_off.subreg();
        if t.is_const() {
            Some(t.value as u32)
        } else {
            None
        }
    }

    /// Whether `v` is a member: in the tnum and within all four bound
    /// pairs.
    pub fn contains(&self, v: u64) -> bool {
        let (lo, slo) = (v as u32, v as i64);
        self.var_off.contains_value(v)
            && self.umin <= v
            && v <= self.umax
            && self.smin <= slo
            && slo <= self.smax
            && self.u32_min <= lo
            && lo <= self.u32_max
            && self.s32_min <= lo as i32
            && lo as i32 <= self.s32_max
    }

    /// Internal consistency: a well-formed tnum and four non-empty bound
    /// pairs.
    pub fn is_valid(&self) -> bool {
        self.var_off.value & self.var_off.mask == 0
            && self.smin <= self.smax
            && self.umin <= self.umax
            && self.s32_min <= self.s32_max
            && self.u32_min <= self.u32_max
    }

    /// Whether every member of `self` is a member of `old` (bounds inside
    /// and tnum contained): the test of state pruning.
    pub fn within(&self, old: &Scalar) -> bool {
        old.umin <= self.umin
            && self.umax <= old.umax
            && old.smin <= self.smin
            && self.smax <= old.smax
            && old.u32_min <= self.u32_min
            && self.u32_max <= old.u32_max
            && old.s32_min <= self.s32_min
            && self.s32_max <= old.s32_max
            && old.var_off.contains(self.var_off)
    }

    /// A value holding every member of both: the hull of each bound pair
    /// and the union of the tnums. Not synced, so that `self` and `other`
    /// are always [`within`](Scalar::within) it; call [`Scalar::sync`] for
    /// the tightest form.
    pub fn join(&self, other: &Scalar) -> Scalar {
        Scalar {
            var_off: self.var_off.union(other.var_off),
            smin: min(self.smin, other.smin),
            smax: max(self.smax, other.smax),
            umin: min(self.umin, other.umin),
            umax: max(self.umax, other.umax),
            s32_min: min(self.s32_min, other.s32_min),
            s32_max: max(self.s32_max, other.s32_max),
            u32_min: min(self.u32_min, other.u32_min),
            u32_max: max(self.u32_max, other.u32_max),
        }
    }

    // ----- syncing ---------------------------------------------------------

    /// Tightens bounds and tnum against each other (the kernel's
    /// `reg_bounds_sync`): bounds from the tnum, 32-bit bounds from 64-bit
    /// ones and back, signed from unsigned and back, then the tnum from the
    /// bounds and the bounds once more from the tnum. Keeps every member.
    pub fn sync(&mut self) {
        let _ = self.try_sync();
    }

    /// [`Scalar::sync`], returning `false` when it finds that no value can
    /// be a member (then the fields are meaningless).
    pub fn try_sync(&mut self) -> bool {
        self.bounds_from_tnum();
        self.deduce();
        self.deduce();
        if !self.is_valid() || !self.tnum_from_bounds() {
            return false;
        }
        self.bounds_from_tnum();
        self.is_valid()
    }

    /// Synced, or [`Scalar::UNKNOWN`] when syncing finds the value empty
    /// (possible only for inconsistent inputs; any value is sound then).
    fn finish(mut self) -> Scalar {
        if self.try_sync() {
            self
        } else {
            Scalar::UNKNOWN
        }
    }

    fn bounds_from_tnum(&mut self) {
        let t = self.var_off;
        self.smin = max(self.smin, t.smin());
        self.smax = min(self.smax, t.smax());
        self.umin = max(self.umin, t.umin());
        self.umax = min(self.umax, t.umax());
        if let Some(v) = single_overlap(t, self.umin, self.umax) {
            // Unless the other bounds exclude it too (nothing is possible;
            // syncing finds that).
            if self.contains(v) {
                *self = Scalar::constant(v);
                return;
            }
        }
        let s = t.subreg();
        self.s32_min = max(
            self.s32_min,
            (s.value | (s.mask & 0x8000_0000)) as u32 as i32,
        );
        self.s32_max = min(
            self.s32_max,
            (s.value | (s.mask & 0x7fff_ffff)) as u32 as i32,
        );
        self.u32_min = max(self.u32_min, s.value as u32);
        self.u32_max = min(self.u32_max, (s.value | s.mask) as u32);
    }

    fn tighten_u32(&mut self, lo: u32, hi: u32) {
        self.u32_min = max(self.u32_min, lo);
        self.u32_max = min(self.u32_max, hi);
    }

    fn tighten_s32(&mut self, lo: i32, hi: i32) {
        self.s32_min = max(self.s32_min, lo);
        self.s32_max = min(self.s32_max, hi);
    }

    fn tighten_u64(&mut self, lo: u64, hi: u64) {
        self.umin = max(self.umin, lo);
        self.umax = min(self.umax, hi);
    }

    fn tighten_s64(&mut self, lo: i64, hi: i64) {
        self.smin = max(self.smin, lo);
        self.smax = min(self.smax, hi);
    }

    fn deduce(&mut self) {
        self.deduce32();
        self.deduce64();
        self.deduce_mixed();
    }

    /// 32-bit bounds from 64-bit ones and from each other.
    fn deduce32(&mut self) {
        let (uhi_lo, uhi_hi) = (
            self.umin.wrapping_shr(32) as u32,
            self.umax.wrapping_shr(32) as u32,
        );
        let (shi_lo, shi_hi) = (
            self.smin.wrapping_shr(32) as u32,
            self.smax.wrapping_shr(32) as u32,
        );
        // Same high half: the low halves form a range of their own.
        if uhi_lo == uhi_hi {
            let (lo, hi) = (self.umin as u32, self.umax as u32);
            self.tighten_u32(lo, hi);
            if lo as i32 <= hi as i32 {
                self.tighten_s32(lo as i32, hi as i32);
            }
        }
        if shi_lo == shi_hi {
            let (lo, hi) = (self.smin as u32, self.smax as u32);
            if lo <= hi {
                self.tighten_u32(lo, hi);
            }
            if lo as i32 <= hi as i32 {
                self.tighten_s32(lo as i32, hi as i32);
            }
        }
        // High halves consecutive while the low halves run from negative to
        // non-negative (as s32): the low halves still form one s32 range.
        if uhi_lo.wrapping_add(1) == uhi_hi && (self.umin as i32) < 0 && (self.umax as i32) >= 0 {
            self.tighten_s32(self.umin as i32, self.umax as i32);
        }
        if shi_lo.wrapping_add(1) == shi_hi && (self.smin as i32) < 0 && (self.smax as i32) >= 0 {
            self.tighten_s32(self.smin as i32, self.smax as i32);
        }
        // Signed and unsigned 32-bit bounds agree when no sign crossing.
        if self.u32_min as i32 <= self.u32_max as i32 {
            self.tighten_s32(self.u32_min as i32, self.u32_max as i32);
        }
        if self.s32_min as u32 <= self.s32_max as u32 {
            self.tighten_u32(self.s32_min as u32, self.s32_max as u32);
        }
    }

    /// Signed 64-bit bounds from unsigned ones and back.
    fn deduce64(&mut self) {
        if self.umin as i64 <= self.umax as i64 {
            self.tighten_s64(self.umin as i64, self.umax as i64);
        }
        if self.smin as u64 <= self.smax as u64 {
            self.tighten_u64(self.smin as u64, self.smax as u64);
        } else if self.umax < self.smin as u64 {
            // Signed range crosses zero, unsigned one stays below its
            // negative part: only the non-negative part is possible.
            self.smin = max(self.smin, self.umin as i64);
            self.umax = min(self.umax, self.smax as u64);
        } else if (self.smax as u64) < self.umin {
            // ... or above its non-negative part: only negatives.
            self.smax = min(self.smax, self.umax as i64);
            self.umin = max(self.umin, self.smin as u64);
        }
    }

    /// 64-bit bounds from 32-bit ones.
    fn deduce_mixed(&mut self) {
        const HI: u64 = !0xffff_ffff;
        // The low half of the smallest value is at least the smallest low
        // half, within the same high half (and symmetrically for the max).
        let (l, h) = (u64::from(self.u32_min), u64::from(self.u32_max));
        self.tighten_u64((self.umin & HI) | l, (self.umax & HI) | h);
        self.tighten_s64(
            (((self.smin as u64) & HI) | l) as i64,
            (((self.smax as u64) & HI) | h) as i64,
        );
        if self.s32_min as u32 <= self.s32_max as u32 {
            let (l, h) = (
                u64::from(self.s32_min as u32),
                u64::from(self.s32_max as u32),
            );
            self.tighten_u64((self.umin & HI) | l, (self.umax & HI) | h);
            self.tighten_s64(
                (((self.smin as u64) & HI) | l) as i64,
                (((self.smax as u64) & HI) | h) as i64,
            );
        }
        // A 64-bit value within the s32 range is the sign extension of its
        // low half.
        if self.smin >= i64::from(i32::MIN) && self.smax <= i64::from(i32::MAX) {
            self.tighten_s64(i64::from(self.s32_min), i64::from(self.s32_max));
        }
    }

    /// Tnum from the bounds; `false` when they contradict it.
    fn tnum_from_bounds(&mut self) -> bool {
        let Some(t64) = self
            .var_off
            .try_intersect(Tnum::range(self.umin, self.umax))
        else {
            return false;
        };
        let r32 = Tnum::range(u64::from(self.u32_min), u64::from(self.u32_max));
        let Some(t32) = t64.subreg().try_intersect(r32) else {
            return false;
        };
        self.var_off = t64.with_subreg(t32);
        true
    }

    // ----- width views -----------------------------------------------------

    fn rng(&self, bits: u32) -> Rng {
        if bits == 32 {
            Rng {
                smin: i64::from(self.s32_min),
                smax: i64::from(self.s32_max),
                umin: u64::from(self.u32_min),
                umax: u64::from(self.u32_max),
            }
        } else {
            Rng {
                smin: self.smin,
                smax: self.smax,
                umin: self.umin,
                umax: self.umax,
            }
        }
    }

    fn set_rng(&mut self, bits: u32, r: Rng) {
        if bits == 32 {
            self.s32_min = r.smin as i32;
            self.s32_max = r.smax as i32;
            self.u32_min = r.umin as u32;
            self.u32_max = r.umax as u32;
        } else {
            self.smin = r.smin;
            self.smax = r.smax;
            self.umin = r.umin;
            self.umax = r.umax;
        }
    }

    fn tn(&self, bits: u32) -> Tnum {
        if bits == 32 {
            self.var_off.subreg()
        } else {
            self.var_off
        }
    }

    fn set_tn(&mut self, bits: u32, t: Tnum) {
        self.var_off = if bits == 32 {
            self.var_off.with_subreg(t)
        } else {
            t
        };
    }

    fn const_at(&self, bits: u32) -> Option<u64> {
        let t = self.tn(bits);
        if t.is_const() {
            Some(t.value)
        } else {
            None
        }
    }

    /// The value at width `bits`: itself, or its low half zero-extended.
    fn at_width(&self, bits: u32) -> Scalar {
        if bits == 32 {
            self.zext32()
        } else {
            *self
        }
    }

    /// A 32-bit result (tnum of the low half, its bounds), zero-extended.
    fn from32(t: Tnum, r: Rng) -> Scalar {
        Scalar {
            var_off: t.subreg(),
            smin: r.umin as i64,
            smax: r.umax as i64,
            umin: r.umin,
            umax: r.umax,
            s32_min: r.smin as i32,
            s32_max: r.smax as i32,
            u32_min: r.umin as u32,
            u32_max: r.umax as u32,
        }
        .finish()
    }

    /// A 64-bit result with bounds of the whole value and of its low half.
    fn from64(t: Tnum, r: Rng, r32: Rng) -> Scalar {
        Scalar {
            var_off: t,
            smin: r.smin,
            smax: r.smax,
            umin: r.umin,
            umax: r.umax,
            s32_min: r32.smin as i32,
            s32_max: r32.smax as i32,
            u32_min: r32.umin as u32,
            u32_max: r32.umax as u32,
        }
        .finish()
    }

    /// A result of width `bits` with tnum `t` and bounds `r` (the low half's
    /// bounds of a 64-bit result unknown).
    fn from_width(bits: u32, t: Tnum, r: Rng) -> Scalar {
        if bits == 32 {
            Scalar::from32(t, r)
        } else {
            Scalar::from64(t, r, Rng::full(32))
        }
    }

    // ----- ALU -------------------------------------------------------------

    /// `self op= src` at `width` (32-bit results zero-extended).
    pub fn alu(&self, op: AluOp, width: Width, src: &Scalar) -> Scalar {
        let bits = width_bits(width);
        if op == AluOp::Mov {
            return src.at_width(bits);
        }
        if let (Some(x), Some(y)) = (self.const_at(bits), src.const_at(bits)) {
            return Scalar::constant(eval_alu(op, width, x, y));
        }
        match op {
            AluOp::Add | AluOp::Sub | AluOp::Mul | AluOp::And | AluOp::Or | AluOp::Xor => {
                self.arith(op, bits, src)
            }
            AluOp::Lsh | AluOp::Rsh | AluOp::Arsh => self.shift(op, bits, src),
            AluOp::Div => self.udiv(bits, src),
            AluOp::Mod => self.umod(bits, src),
            AluOp::SDiv => self.sdiv(bits, src),
            AluOp::SMod => self.smod(bits, src),
            AluOp::Mov => src.at_width(bits),
        }
    }

    /// `-self` at `width` (wrapping; 32-bit results zero-extended).
    pub fn neg(&self, width: Width) -> Scalar {
        Scalar::constant(0).alu(AluOp::Sub, width, self)
    }

    /// The low 32 bits, zero-extended.
    pub fn zext32(&self) -> Scalar {
        Scalar {
            var_off: self.var_off.subreg(),
            smin: i64::from(self.u32_min),
            smax: i64::from(self.u32_max),
            umin: u64::from(self.u32_min),
            umax: u64::from(self.u32_max),
            ..*self
        }
        .finish()
    }

    /// Add, Sub, Mul, And, Or, Xor.
    fn arith(&self, op: AluOp, bits: u32, src: &Scalar) -> Scalar {
        let t = arith_tnum(op, self.tn(bits), src.tn(bits));
        if bits == 32 {
            let t = t.subreg();
            Scalar::from32(t, arith_rng(op, 32, self.rng(32), src.rng(32), t))
        } else {
            // The low half of these results depends only on the low halves.
            let t32 = t.subreg();
            Scalar::from64(
                t,
                arith_rng(op, 64, self.rng(64), src.rng(64), t),
                arith_rng(op, 32, self.rng(32), src.rng(32), t32),
            )
        }
    }

    /// Shifts: a constant amount exactly as the kernel; otherwise the join
    /// over every possible (masked) amount.
    fn shift(&self, op: AluOp, bits: u32, src: &Scalar) -> Scalar {
        let amount_mask = u64::from(bits.wrapping_sub(1));
        if let Some(k) = src.const_at(bits) {
            return self.shift_const(op, bits, (k & amount_mask) as u32);
        }
        let amounts = src.tn(bits).and(Tnum::constant(amount_mask));
        let r = src.rng(bits);
        let in_range = r.umax <= amount_mask;
        let mut acc: Option<Scalar> = None;
        for k in 0..bits {
            let k64 = u64::from(k);
            if !amounts.contains_value(k64) || (in_range && (k64 < r.umin || k64 > r.umax)) {
                continue;
            }
            let s = self.shift_const(op, bits, k);
            acc = Some(match acc {
                None => s,
                Some(p) => p.join(&s),
            });
        }
        acc.map_or(Scalar::UNKNOWN, Scalar::finish)
    }

    /// Shift by `k < bits`.
    fn shift_const(&self, op: AluOp, bits: u32, k: u32) -> Scalar {
        let a = self.rng(bits);
        let (smin, smax, umin, umax) = a.wide();
        let k8 = k as u8;
        match op {
            AluOp::Lsh => {
                let mut t = self.tn(bits).lshift(k8);
                if bits == 32 {
                    t = t.subreg();
                }
                let (ul, uh) = wrap_u(bits, umin.wrapping_shl(k), umax.wrapping_shl(k));
                let (mut sl, mut sh) = wrap_s(bits, smin.wrapping_shl(k), smax.wrapping_shl(k));
                if bits == 64 && k == 32 {
                    // x << 32 read as signed is the low half's s32 value
                    // times 2^32.
                    sl = max(sl, i64::from(self.s32_min).wrapping_shl(32));
                    sh = min(sh, i64::from(self.s32_max).wrapping_shl(32));
                }
                let r = Rng {
                    smin: sl,
                    smax: sh,
                    umin: ul,
                    umax: uh,
                };
                if bits == 32 {
                    Scalar::from32(t, r)
                } else {
                    let r32 = if k < 32 {
                        let (smin, smax, umin, umax) = self.rng(32).wide();
                        let (ul, uh) = wrap_u(32, umin.wrapping_shl(k), umax.wrapping_shl(k));
                        let (sl, sh) = wrap_s(32, smin.wrapping_shl(k), smax.wrapping_shl(k));
                        Rng {
                            smin: sl,
                            smax: sh,
                            umin: ul,
                            umax: uh,
                        }
                    } else {
                        Rng {
                            smin: 0,
                            smax: 0,
                            umin: 0,
                            umax: 0,
                        }
                    };
                    Scalar::from64(t, r, r32)
                }
            }
            AluOp::Rsh => {
                let t = self.tn(bits).rshift(k8);
                let r = Rng::from_unsigned(bits, a.umin.wrapping_shr(k), a.umax.wrapping_shr(k));
                Scalar::from_width(bits, t, r)
            }
            _ => {
                let t = self.tn(bits).arshift(k8, bits as u8);
                let r = Rng::from_signed(bits, a.smin.wrapping_shr(k), a.smax.wrapping_shr(k));
                Scalar::from_width(bits, t, r)
            }
        }
    }

    /// Unsigned division (`x / 0 = 0`).
    fn udiv(&self, bits: u32, src: &Scalar) -> Scalar {
        let (a, b) = (self.rng(bits), src.rng(bits));
        if b.umax == 0 {
            return Scalar::constant(0);
        }
        if let Some(c) = src.const_at(bits) {
            if c.is_power_of_two() {
                return self.shift_const(AluOp::Rsh, bits, c.trailing_zeros());
            }
        }
        let hi = a.umax.checked_div(max(b.umin, 1)).unwrap_or(a.umax);
        let lo = if b.umin == 0 {
            0
        } else {
            a.umin.checked_div(b.umax).unwrap_or(0)
        };
        Scalar::from_width(
            bits,
            Tnum::UNKNOWN.cast(bits as usize / 8),
            Rng::from_unsigned(bits, lo, hi),
        )
    }

    /// Unsigned remainder (`x % 0 = x`).
    fn umod(&self, bits: u32, src: &Scalar) -> Scalar {
        let (a, b) = (self.rng(bits), src.rng(bits));
        if b.umax == 0 || a.umax < b.umin {
            return self.at_width(bits);
        }
        if let Some(c) = src.const_at(bits) {
            if c.is_power_of_two() {
                return self.arith(AluOp::And, bits, &Scalar::constant(c.wrapping_sub(1)));
            }
        }
        let hi = if b.umin == 0 {
            a.umax
        } else {
            min(a.umax, b.umax.wrapping_sub(1))
        };
        Scalar::from_width(
            bits,
            Tnum::UNKNOWN.cast(bits as usize / 8),
            Rng::from_unsigned(bits, 0, hi),
        )
    }

    /// Signed division (`x / 0 = 0`, `MIN / -1 = MIN`).
    fn sdiv(&self, bits: u32, src: &Scalar) -> Scalar {
        let (al, ah, _, _) = self.rng(bits).wide();
        let (bl, bh, _, _) = src.rng(bits).wide();
        let mut lo = i128::MAX;
        let mut hi = i128::MIN;
        let mut add = |v: i128| {
            lo = min(lo, v);
            hi = max(hi, v);
        };
        if bl <= 0 && bh >= 0 {
            add(0);
        }
        // Within one sign of the divisor the quotient is monotonic in each
        // operand, so the corners bound it.
        let mut corners = |d1: i128, d2: i128| {
            for x in [al, ah] {
                for d in [d1, d2] {
                    add(x.checked_div(d).unwrap_or(0));
                }
            }
        };
        if bh >= 1 {
            corners(max(bl, 1), bh);
        }
        if bl <= -1 {
            corners(bl, min(bh, -1));
        }
        let (sl, sh) = wrap_s(bits, lo, hi);
        Scalar::from_width(
            bits,
            Tnum::UNKNOWN.cast(bits as usize / 8),
            Rng::from_signed(bits, sl, sh),
        )
    }

    /// Signed remainder (sign of the dividend; `x % 0 = x`, `MIN % -1 = 0`).
    fn smod(&self, bits: u32, src: &Scalar) -> Scalar {
        let (al, ah, _, _) = self.rng(bits).wide();
        let (bl, bh, _, _) = src.rng(bits).wide();
        let may_be_zero = bl <= 0 && bh >= 0;
        if bl == 0 && bh == 0 {
            return self.at_width(bits);
        }
        let max_abs_b = max(bl.wrapping_abs(), bh.wrapping_abs());
        let min_abs_b = if bl > 0 {
            bl
        } else if bh < 0 {
            bh.wrapping_neg()
        } else {
            1
        };
        let max_abs_a = max(al.wrapping_abs(), ah.wrapping_abs());
        if max_abs_a < min_abs_b {
            // |x| < |divisor|: the remainder is x itself.
            return self.at_width(bits);
        }
        let bound = max_abs_b.wrapping_sub(1);
        let mut lo = if al < 0 {
            max(al, bound.wrapping_neg())
        } else {
            0
        };
        let mut hi = if ah > 0 { min(ah, bound) } else { 0 };
        if may_be_zero {
            lo = min(lo, al);
            hi = max(hi, ah);
        }
        let r = Rng::from_signed(bits, lo as i64, hi as i64);
        Scalar::from_width(bits, Tnum::UNKNOWN.cast(bits as usize / 8), r)
    }

    // ----- unary -----------------------------------------------------------

    /// `le16/32/64`, `be16/32/64`, `bswap16/32/64` (`bits` 16, 32 or 64;
    /// anything else is taken as 64). Follows the host's byte order exactly
    /// as the interpreter does.
    pub fn endian(&self, op: EndianOp, bits: u8) -> Scalar {
        let bytes: usize = match bits {
            16 => 2,
            32 => 4,
            _ => 8,
        };
        let swaps = match op {
            EndianOp::ToLe => 1u16.to_le() != 1,
            EndianOp::ToBe => 1u16.to_be() != 1,
            EndianOp::Swap => true,
        };
        if !swaps {
            return self.truncate(bytes);
        }
        let t = self.var_off;
        let swapped = match bytes {
            2 => Tnum {
                value: u64::from((t.value as u16).swap_bytes()),
                mask: u64::from((t.mask as u16).swap_bytes()),
            },
            4 => Tnum {
                value: u64::from((t.value as u32).swap_bytes()),
                mask: u64::from((t.mask as u32).swap_bytes()),
            },
            _ => Tnum {
                value: t.value.swap_bytes(),
                mask: t.mask.swap_bytes(),
            },
        };
        Scalar::from_tnum(swapped)
    }

    /// The low `bytes` bytes, zero-extended.
    fn truncate(&self, bytes: usize) -> Scalar {
        if bytes >= 8 {
            return *self;
        }
        let bits = (bytes as u32).wrapping_mul(8);
        let keep = umax_of(bits);
        if self.umax <= keep {
            return *self;
        }
        if bits == 32 || u64::from(self.u32_max) <= keep {
            return self.zext32();
        }
        Scalar::from_tnum(self.var_off.cast(bytes))
    }

    /// `movsx`: the low `bits` (8, 16 or 32) bits sign-extended; at
    /// [`Width::W32`] the result is then truncated to 32 bits and
    /// zero-extended.
    pub fn movsx(&self, width: Width, bits: u8) -> Scalar {
        let r = self.sext_low(u32::from(bits));
        match width {
            Width::W64 => r,
            Width::W32 => r.zext32(),
        }
    }

    /// The low `bits` bits sign-extended to 64.
    fn sext_low(&self, bits: u32) -> Scalar {
        if bits >= 64 || bits == 0 {
            return *self;
        }
        let (half_lo, half_hi) = (smin_of(bits), smax_of(bits));
        if self.smin >= half_lo && self.smax <= half_hi {
            return *self;
        }
        let t = self.var_off.sext(bits);
        let (lo, hi) = if bits == 32
            || (i64::from(self.s32_min) >= half_lo && i64::from(self.s32_max) <= half_hi)
        {
            (i64::from(self.s32_min), i64::from(self.s32_max))
        } else {
            (half_lo, half_hi)
        };
        Scalar {
            var_off: t,
            smin: lo,
            smax: hi,
            s32_min: lo as i32,
            s32_max: hi as i32,
            ..Scalar::UNKNOWN
        }
        .finish()
    }

    // ----- branches --------------------------------------------------------

    /// Whether `self cond other` (at `width`: 32 compares the low halves)
    /// holds for every pair of members (`Some(true)`), for none
    /// (`Some(false)`), or is unknown (`None`).
    pub fn is_branch_taken(&self, cond: JmpCond, width: Width, other: &Scalar) -> Option<bool> {
        let bits = width_bits(width);
        let (a, b) = (self.rng(bits), other.rng(bits));
        let (ta, tb) = (self.tn(bits), other.tn(bits));
        match cond {
            JmpCond::Eq => self.eq_known(bits, other, a, b, ta, tb),
            JmpCond::Ne => self.eq_known(bits, other, a, b, ta, tb).map(|e| !e),
            JmpCond::Set => {
                if ta.value & tb.value != 0 {
                    Some(true)
                } else if ta.umax() & tb.umax() == 0 {
                    Some(false)
                } else {
                    None
                }
            }
            JmpCond::Gt => order(a.umin > b.umax, a.umax <= b.umin),
            JmpCond::Ge => order(a.umin >= b.umax, a.umax < b.umin),
            JmpCond::Lt => order(a.umax < b.umin, a.umin >= b.umax),
            JmpCond::Le => order(a.umax <= b.umin, a.umin > b.umax),
            JmpCond::SGt => order(a.smin > b.smax, a.smax <= b.smin),
            JmpCond::SGe => order(a.smin >= b.smax, a.smax < b.smin),
            JmpCond::SLt => order(a.smax < b.smin, a.smin >= b.smax),
            JmpCond::SLe => order(a.smax <= b.smin, a.smin > b.smax),
        }
    }

    fn eq_known(
        &self,
        bits: u32,
        other: &Scalar,
        a: Rng,
        b: Rng,
        ta: Tnum,
        tb: Tnum,
    ) -> Option<bool> {
        if ta.is_const() && tb.is_const() {
            return Some(ta.value == tb.value);
        }
        let disjoint = |a: Rng, b: Rng| {
            a.umin > b.umax || a.umax < b.umin || a.smin > b.smax || a.smax < b.smin
        };
        if disjoint(a, b) || ta.try_intersect(tb).is_none() {
            return Some(false);
        }
        if bits == 64 && disjoint(self.rng(32), other.rng(32)) {
            return Some(false);
        }
        None
    }

    /// Narrows `a` and `b` assuming `a cond b` (at `width`) evaluated to
    /// `taken`. Returns `false` when no pair of members can do so (the
    /// branch is dead; `a` and `b` are then left unchanged). Both results
    /// are synced.
    pub fn refine(
        cond: JmpCond,
        width: Width,
        taken: bool,
        a: &mut Scalar,
        b: &mut Scalar,
    ) -> bool {
        if let Some(known) = a.is_branch_taken(cond, width, b) {
            return known == taken;
        }
        let bits = width_bits(width);
        let (rel, swapped) = normalize(cond, taken);
        let (mut x, mut y) = if swapped { (*b, *a) } else { (*a, *b) };
        if !refine_rel(rel, bits, &mut x, &mut y) || !x.try_sync() || !y.try_sync() {
            return false;
        }
        if swapped {
            *a = y;
            *b = x;
        } else {
            *a = x;
            *b = y;
        }
        true
    }
}

/// The one member of `t` within `umin..=umax`, when the two share a
/// single value, as the kernel finds it (`__update_reg64_bounds`, with
/// `tnum_step`): `umin` itself when it is a member and the next member
/// lies past `umax`; the largest member when the next member above `umin`
/// (not one) is that; the next member above `umin` when the one after it
/// lies past `umax`. (Where the kernel's second case also answers when
/// the range and `t` share nothing, this answers nothing, and syncing
/// finds the value empty.)
fn single_overlap(t: Tnum, umin: u64, umax: u64) -> Option<u64> {
    if t.is_const() || umin == umax {
        return None;
    }
    let next = t.step(umin);
    let umin_in = t.contains_value(umin);
    if umin_in {
        return (next > umax).then_some(umin);
    }
    // The next member above `umin` is the largest, or the one after it
    // lies past `umax`.
    (next <= umax && (next == t.umax() || t.step(next) > umax)).then_some(next)
}

/// `Some(true)` if `always`, `Some(false)` if `never`, else `None`.
fn order(always: bool, never: bool) -> Option<bool> {
    if always {
        Some(true)
    } else if never {
        Some(false)
    } else {
        None
    }
}

/// The relation that holds between the (possibly swapped) operands when
/// `cond` evaluated to `taken`, and whether they are swapped.
fn normalize(cond: JmpCond, taken: bool) -> (Rel, bool) {
    match (cond, taken) {
        (JmpCond::Eq, true) | (JmpCond::Ne, false) => (Rel::Eq, false),
        (JmpCond::Eq, false) | (JmpCond::Ne, true) => (Rel::Ne, false),
        (JmpCond::Set, true) => (Rel::Set, false),
        (JmpCond::Set, false) => (Rel::NotSet, false),
        (JmpCond::Lt, true) | (JmpCond::Ge, false) => (Rel::Lt, false),
        (JmpCond::Le, true) | (JmpCond::Gt, false) => (Rel::Le, false),
        (JmpCond::Gt, true) | (JmpCond::Le, false) => (Rel::Lt, true),
        (JmpCond::Ge, true) | (JmpCond::Lt, false) => (Rel::Le, true),
        (JmpCond::SLt, true) | (JmpCond::SGe, false) => (Rel::SLt, false),
        (JmpCond::SLe, true) | (JmpCond::SGt, false) => (Rel::SLe, false),
        (JmpCond::SGt, true) | (JmpCond::SLe, false) => (Rel::SLt, true),
        (JmpCond::SGe, true) | (JmpCond::SLt, false) => (Rel::SLe, true),
    }
}

/// Applies `x rel y` at width `bits` to the bounds and tnums (unsynced);
/// `false` when it is impossible.
fn refine_rel(rel: Rel, bits: u32, x: &mut Scalar, y: &mut Scalar) -> bool {
    let (mut rx, mut ry) = (x.rng(bits), y.rng(bits));
    let top = umax_of(bits);
    let (smin_w, smax_w) = (smin_of(bits), smax_of(bits));
    match rel {
        Rel::Eq => {
            let r = rx.meet(ry);
            rx = r;
            ry = r;
            let Some(t) = x.tn(bits).try_intersect(y.tn(bits)) else {
                return false;
            };
            x.set_tn(bits, t);
            y.set_tn(bits, t);
            if bits == 64 {
                let r32 = x.rng(32).meet(y.rng(32));
                x.set_rng(32, r32);
                y.set_rng(32, r32);
            }
        }
        Rel::Ne => {
            if let Some(c) = y.const_at(bits) {
                if !trim(&mut rx, bits, c) {
                    return false;
                }
            }
            if let Some(c) = x.const_at(bits) {
                if !trim(&mut ry, bits, c) {
                    return false;
                }
            }
        }
        Rel::Le => {
            rx.umax = min(rx.umax, ry.umax);
            ry.umin = max(rx.umin, ry.umin);
        }
        Rel::Lt => {
            if ry.umax == 0 || rx.umin == top {
                return false;
            }
            rx.umax = min(rx.umax, ry.umax.wrapping_sub(1));
            ry.umin = max(rx.umin.wrapping_add(1), ry.umin);
        }
        Rel::SLe => {
            rx.smax = min(rx.smax, ry.smax);
            ry.smin = max(rx.smin, ry.smin);
        }
        Rel::SLt => {
            if ry.smax == smin_w || rx.smin == smax_w {
                return false;
            }
            rx.smax = min(rx.smax, ry.smax.wrapping_sub(1));
            ry.smin = max(rx.smin.wrapping_add(1), ry.smin);
        }
        Rel::Set => {
            // Some bit is set in both: it is among the bits both may have.
            let (tx, ty) = (x.tn(bits), y.tn(bits));
            let common = tx.umax() & ty.umax();
            if common == 0 {
                return false;
            }
            let lowest = 1u64.wrapping_shl(common.trailing_zeros());
            rx.umin = max(rx.umin, lowest);
            ry.umin = max(ry.umin, lowest);
            if common.is_power_of_two() {
                x.set_tn(bits, tx.or(Tnum::constant(common)));
                y.set_tn(bits, ty.or(Tnum::constant(common)));
            }
        }
        Rel::NotSet => {
            // No bit is set in both: a bit known set in one is clear in the
            // other.
            let (tx, ty) = (x.tn(bits), y.tn(bits));
            x.set_tn(bits, tx.and(Tnum::constant(!ty.value)));
            y.set_tn(bits, ty.and(Tnum::constant(!tx.value)));
        }
    }
    x.set_rng(bits, rx);
    y.set_rng(bits, ry);
    true
}

/// Removes the constant `c` from the ends of `r` (width `bits`); `false`
/// when nothing is left.
fn trim(r: &mut Rng, bits: u32, c: u64) -> bool {
    let sc = sext(c, bits);
    if r.umin == c {
        if c == umax_of(bits) {
            return false;
        }
        r.umin = c.wrapping_add(1);
    }
    if r.umax == c {
        if c == 0 {
            return false;
        }
        r.umax = c.wrapping_sub(1);
    }
    if r.smin == sc {
        if sc == smax_of(bits) {
            return false;
        }
        r.smin = sc.wrapping_add(1);
    }
    if r.smax == sc {
        if sc == smin_of(bits) {
            return false;
        }
        r.smax = sc.wrapping_sub(1);
    }
    true
}

/// The tnum of Add, Sub, Mul, And, Or, Xor.
fn arith_tnum(op: AluOp, a: Tnum, b: Tnum) -> Tnum {
    match op {
        AluOp::Add => a.add(b),
        AluOp::Sub => a.sub(b),
        AluOp::Mul => a.mul(b),
        AluOp::And => a.and(b),
        AluOp::Or => a.or(b),
        AluOp::Xor => a.xor(b),
        _ => Tnum::UNKNOWN,
    }
}

/// The bounds of Add, Sub, Mul, And, Or, Xor at width `bits`, given the
/// result's tnum `t` (of that width).
fn arith_rng(op: AluOp, bits: u32, a: Rng, b: Rng, t: Tnum) -> Rng {
    let (asl, ash, aul, auh) = a.wide();
    let (bsl, bsh, bul, buh) = b.wide();
    match op {
        AluOp::Add => {
            let (ul, uh) = wrap_u(bits, aul.wrapping_add(bul), auh.wrapping_add(buh));
            let (sl, sh) = wrap_s(bits, asl.wrapping_add(bsl), ash.wrapping_add(bsh));
            Rng {
                smin: sl,
                smax: sh,
                umin: ul,
                umax: uh,
            }
        }
        AluOp::Sub => {
            let (ul, uh) = wrap_u(bits, aul.wrapping_sub(buh), auh.wrapping_sub(bul));
            let (sl, sh) = wrap_s(bits, asl.wrapping_sub(bsh), ash.wrapping_sub(bsl));
            Rng {
                smin: sl,
                smax: sh,
                umin: ul,
                umax: uh,
            }
        }
        AluOp::Mul => {
            let lo = u128::from(a.umin).wrapping_mul(u128::from(b.umin));
            let hi = u128::from(a.umax).wrapping_mul(u128::from(b.umax));
            let (ul, uh) = if lo.wrapping_shr(bits) == hi.wrapping_shr(bits) {
                let m = umax_of(bits);
                ((lo as u64) & m, (hi as u64) & m)
            } else {
                (0, umax_of(bits))
            };
            let products = [
                asl.wrapping_mul(bsl),
                asl.wrapping_mul(bsh),
                ash.wrapping_mul(bsl),
                ash.wrapping_mul(bsh),
            ];
            let mut sl = i128::MAX;
            let mut sh = i128::MIN;
            for p in products {
                sl = min(sl, p);
                sh = max(sh, p);
            }
            let (sl, sh) = wrap_s(bits, sl, sh);
            Rng {
                smin: sl,
                smax: sh,
                umin: ul,
                umax: uh,
            }
        }
        AluOp::And => zero_or_all_ones(
            op,
            bits,
            a,
            b,
            Rng::from_unsigned(bits, t.umin(), min(a.umax, b.umax)),
        ),
        AluOp::Or => zero_or_all_ones(
            op,
            bits,
            a,
            b,
            Rng::from_unsigned(bits, max(a.umin, b.umin), t.umax()),
        ),
        AluOp::Xor => Rng::from_unsigned(bits, t.umin(), t.umax()),
        _ => Rng::full(bits),
    }
}

/// `x & y` or `x | y` where one operand is 0 or -1 (a sign mask, as
/// `x s>> 31` makes): the result is 0 or the other operand (`&`), the
/// other operand or -1 (`|`), which tnums and unsigned bounds lose when
/// the other operand is negative (the kernel's special case since Linux
/// 6.17, for code compilers emit, e.g. cilium's). `rng`: the general
/// bounds, which the special ones narrow.
fn zero_or_all_ones(op: AluOp, bits: u32, a: Rng, b: Rng, rng: Rng) -> Rng {
    let mask = |r: &Rng| r.smin == -1 && r.smax == 0;
    let other = if mask(&a) {
        b
    } else if mask(&b) {
        a
    } else {
        return rng;
    };
    let (lo, hi) = if op == AluOp::And {
        (min(0, other.smin), max(0, other.smax))
    } else {
        (min(-1, other.smin), max(-1, other.smax))
    };
    let special = Rng::from_signed(bits, lo, hi);
    Rng {
        smin: max(rng.smin, special.smin),
        smax: min(rng.smax, special.smax),
        umin: max(rng.umin, special.umin),
        umax: min(rng.umax, special.umax),
    }
}

// ----- display ---------------------------------------------------------------

/// A number as the kernel log writes it: decimal when small, else hex of
/// its bit pattern (`bits` wide).
fn fmt_num(f: &mut fmt::Formatter<'_>, v: i128, bits: u32) -> fmt::Result {
    if (-512..=512).contains(&v) {
        write!(f, "{v}")
    } else {
        write!(f, "{:#x}", (v as u64) & umax_of(bits))
    }
}

/// Constants as the number; otherwise `scalar(...)` with the bounds that
/// differ from their defaults (equal ones merged, `smax=umax=255`) and the
/// tnum unless unknown, like the kernel's verifier log.
impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = self.is_const() {
            return fmt_num(f, i128::from(c as i64), 64);
        }
        let items: [(&str, i128, bool, u32); 8] = [
            ("smin", i128::from(self.smin), self.smin == i64::MIN, 64),
            ("smax", i128::from(self.smax), self.smax == i64::MAX, 64),
            ("umin", i128::from(self.umin), self.umin == 0, 64),
            ("umax", i128::from(self.umax), self.umax == u64::MAX, 64),
            (
                "smin32",
                i128::from(self.s32_min),
                self.s32_min == i32::MIN,
                32,
            ),
            (
                "smax32",
                i128::from(self.s32_max),
                self.s32_max == i32::MAX,
                32,
            ),
            ("umin32", i128::from(self.u32_min), self.u32_min == 0, 32),
            (
                "umax32",
                i128::from(self.u32_max),
                self.u32_max == u32::MAX,
                32,
            ),
        ];
        let mut shown = [false; 8];
        f.write_str("scalar(")?;
        let mut sep = "";
        for (i, &(name, v, default, bits)) in items.iter().enumerate() {
            if default || shown[i] {
                continue;
            }
            write!(f, "{sep}{name}=")?;
            sep = ",";
            // Later bounds of the same kind (min or max) with the same value
            // are written together.
            for (j, &(name2, v2, default2, _)) in
                items.iter().enumerate().skip(i.wrapping_add(2)).step_by(2)
            {
                if !default2 && !shown[j] && v2 == v {
                    shown[j] = true;
                    write!(f, "{name2}=")?;
                }
            }
            fmt_num(f, v, bits)?;
        }
        if !self.var_off.is_unknown() {
            write!(f, "{sep}var_off={}", self.var_off)?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
// The reference semantics below spell the rules out as written, on purpose.
#[allow(clippy::arithmetic_side_effects, clippy::manual_checked_ops)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WIDTHS: [Width; 2] = [Width::W32, Width::W64];

    // ----- an independent reference of the interpreter's semantics ---------

    fn ref_alu(op: AluOp, width: Width, x: u64, y: u64) -> u64 {
        if width == Width::W32 {
            let (a, b) = (x as u32, y as u32);
            let (sa, sb) = (a as i32, b as i32);
            let r: u32 = match op {
                AluOp::Add => a.wrapping_add(b),
                AluOp::Sub => a.wrapping_sub(b),
                AluOp::Mul => a.wrapping_mul(b),
                AluOp::Div => {
                    if b == 0 {
                        0
                    } else {
                        a / b
                    }
                }
                AluOp::SDiv => {
                    if sb == 0 {
                        0
                    } else if sa == i32::MIN && sb == -1 {
                        sa as u32
                    } else {
                        (sa / sb) as u32
                    }
                }
                AluOp::Mod => {
                    if b == 0 {
                        a
                    } else {
                        a % b
                    }
                }
                AluOp::SMod => {
                    if sb == 0 {
                        a
                    } else if sb == -1 {
                        0
                    } else {
                        (sa % sb) as u32
                    }
                }
                AluOp::Or => a | b,
                AluOp::And => a & b,
                AluOp::Xor => a ^ b,
                AluOp::Mov => b,
                AluOp::Lsh => a << (b & 31),
                AluOp::Rsh => a >> (b & 31),
                AluOp::Arsh => (sa >> (b & 31)) as u32,
            };
            return r as u64;
        }
        let (sa, sb) = (x as i64, y as i64);
        match op {
            AluOp::Add => x.wrapping_add(y),
            AluOp::Sub => x.wrapping_sub(y),
            AluOp::Mul => x.wrapping_mul(y),
            AluOp::Div => {
                if y == 0 {
                    0
                } else {
                    x / y
                }
            }
            AluOp::SDiv => {
                if sb == 0 {
                    0
                } else if sa == i64::MIN && sb == -1 {
                    x
                } else {
                    (sa / sb) as u64
                }
            }
            AluOp::Mod => {
                if y == 0 {
                    x
                } else {
                    x % y
                }
            }
            AluOp::SMod => {
                if sb == 0 {
                    x
                } else if sb == -1 {
                    0
                } else {
                    (sa % sb) as u64
                }
            }
            AluOp::Or => x | y,
            AluOp::And => x & y,
            AluOp::Xor => x ^ y,
            AluOp::Mov => y,
            AluOp::Lsh => x << (y & 63),
            AluOp::Rsh => x >> (y & 63),
            AluOp::Arsh => (sa >> (y & 63)) as u64,
        }
    }

    fn ref_cond(cond: JmpCond, width: Width, x: u64, y: u64) -> bool {
        let (x, y) = if width == Width::W32 {
            (x & 0xffff_ffff, y & 0xffff_ffff)
        } else {
            (x, y)
        };
        let (sx, sy) = if width == Width::W32 {
            (x as u32 as i32 as i64, y as u32 as i32 as i64)
        } else {
            (x as i64, y as i64)
        };
        match cond {
            JmpCond::Eq => x == y,
            JmpCond::Ne => x != y,
            JmpCond::Set => x & y != 0,
            JmpCond::Gt => x > y,
            JmpCond::Ge => x >= y,
            JmpCond::Lt => x < y,
            JmpCond::Le => x <= y,
            JmpCond::SGt => sx > sy,
            JmpCond::SGe => sx >= sy,
            JmpCond::SLt => sx < sy,
            JmpCond::SLe => sx <= sy,
        }
    }

    fn ref_endian(op: EndianOp, bits: u8, x: u64) -> u64 {
        // The host is little-endian wherever these tests run; assert it.
        assert_eq!(1u16.to_le_bytes(), [1, 0]);
        match (op, bits) {
            (EndianOp::ToLe, 16) => x & 0xffff,
            (EndianOp::ToLe, 32) => x & 0xffff_ffff,
            (EndianOp::ToLe, _) => x,
            (_, 16) => {
                let b = (x as u16).to_le_bytes();
                u16::from_be_bytes(b) as u64
            }
            (_, 32) => {
                let b = (x as u32).to_le_bytes();
                u32::from_be_bytes(b) as u64
            }
            (_, _) => u64::from_be_bytes(x.to_le_bytes()),
        }
    }

    fn ref_movsx(width: Width, bits: u8, x: u64) -> u64 {
        let v: i64 = match bits {
            8 => x as u8 as i8 as i64,
            16 => x as u16 as i16 as i64,
            _ => x as u32 as i32 as i64,
        };
        if width == Width::W32 {
            v as u64 & 0xffff_ffff
        } else {
            v as u64
        }
    }

    // ----- generators --------------------------------------------------------

    fn interesting() -> impl Strategy<Value = u64> {
        prop_oneof![
            3 => any::<u64>(),
            3 => 0u64..300,
            2 => (0u64..300).prop_map(|d| 0u64.wrapping_sub(d)),
            2 => (0u32..64, -3i64..=3).prop_map(|(k, d)| (1u64 << k).wrapping_add(d as u64)),
            2 => any::<u32>().prop_map(u64::from),
            1 => (any::<u32>(), 0u64..3).prop_map(|(lo, hi)| (hi << 32) | lo as u64),
            1 => (any::<u32>()).prop_map(|lo| 0xffff_ffff_0000_0000 | lo as u64),
            1 => (0u64..300).prop_map(|d| 0xffff_ffffu64.wrapping_sub(d)),
        ]
    }

    fn masks() -> impl Strategy<Value = u64> {
        prop_oneof![
            3 => Just(0u64),
            3 => (0u32..=64).prop_map(low_mask),
            2 => any::<u64>(),
            2 => (any::<u64>(), any::<u64>()).prop_map(|(a, b)| a & b),
            1 => (0u32..64).prop_map(|k| 1u64 << k),
            1 => (0u32..=64, 0u32..=64).prop_map(|(a, b)| low_mask(a) ^ low_mask(b)),
        ]
    }

    /// How far a bound lies from the member: `None` = unbounded.
    fn deltas() -> impl Strategy<Value = Option<u64>> {
        prop_oneof![
            3 => Just(None),
            1 => Just(Some(0)),
            2 => (0u64..20).prop_map(Some),
            2 => (0u32..64).prop_map(|k| Some(1u64 << k)),
            1 => any::<u64>().prop_map(Some),
        ]
    }

    /// A hand-made, unsynced value around `x`: tnum `x` with unknown bits
    /// `m`, bounds at random distances.
    fn raw_around(x: u64, m: u64, d: [Option<u64>; 8]) -> Scalar {
        let lo = x as u32;
        let s = x as i64;
        let s32 = lo as i32;
        let d32 = |d: u64| d.min(u32::MAX as u64) as u32;
        Scalar {
            var_off: Tnum {
                value: x & !m,
                mask: m,
            },
            umin: d[0].map_or(0, |d| x.saturating_sub(d)),
            umax: d[1].map_or(u64::MAX, |d| x.saturating_add(d)),
            smin: d[2].map_or(i64::MIN, |d| s.saturating_sub_unsigned(d)),
            smax: d[3].map_or(i64::MAX, |d| s.saturating_add_unsigned(d)),
            u32_min: d[4].map_or(0, |d| lo.saturating_sub(d32(d))),
            u32_max: d[5].map_or(u32::MAX, |d| lo.saturating_add(d32(d))),
            s32_min: d[6].map_or(i32::MIN, |d| s32.saturating_sub_unsigned(d32(d))),
            s32_max: d[7].map_or(i32::MAX, |d| s32.saturating_add_unsigned(d32(d))),
        }
    }

    fn raw_member() -> BoxedStrategy<(Scalar, u64)> {
        (interesting(), masks(), proptest::array::uniform8(deltas()))
            .prop_map(|(x, m, d)| (raw_around(x, m, d), x))
            .boxed()
    }

    /// A synced value and a member, from several constructions.
    fn base_member() -> BoxedStrategy<(Scalar, u64)> {
        prop_oneof![
            2 => interesting().prop_map(|x| (Scalar::constant(x), x)),
            5 => raw_member().prop_map(|(mut s, x)| {
                s.sync();
                (s, x)
            }),
            2 => (proptest::collection::vec(interesting(), 1..=4), any::<prop::sample::Index>())
                .prop_map(|(vals, i)| {
                    let mut s = Scalar::constant(vals[0]);
                    for &v in &vals[1..] {
                        s = s.join(&Scalar::constant(v));
                    }
                    s.sync();
                    (s, vals[i.index(vals.len())])
                }),
            2 => (interesting(), interesting(), any::<u64>()).prop_map(|(a, b, r)| {
                let (lo, hi) = (a.min(b), a.max(b));
                let x = match r % 3 {
                    0 => lo,
                    1 => hi,
                    _ if hi - lo == u64::MAX => r,
                    _ => lo + r % (hi - lo + 1),
                };
                (Scalar::from_range_u64(lo, hi), x)
            }),
            1 => (prop::sample::select(vec![1usize, 2, 4, 8]), any::<u64>()).prop_map(|(n, r)| {
                (Scalar::unknown_bits(n), r & low_mask(n as u32 * 8))
            }),
            1 => (prop::sample::select(vec![1usize, 2, 4]), any::<u64>()).prop_map(|(n, r)| {
                let sh = 64 - 8 * n as u32;
                (Scalar::sext_load(n), (((r << sh) as i64) >> sh) as u64)
            }),
            1 => any::<u64>().prop_map(|x| (Scalar::UNKNOWN, x)),
        ]
        .boxed()
    }

    fn ops() -> impl Strategy<Value = AluOp> {
        prop::sample::select(AluOp::ALL.to_vec())
    }

    fn conds() -> impl Strategy<Value = JmpCond> {
        prop::sample::select(JmpCond::ALL.to_vec())
    }

    fn widths() -> impl Strategy<Value = Width> {
        prop::sample::select(WIDTHS.to_vec())
    }

    /// A synced value and a member: a base one, or one derived from two base
    /// ones by an ALU operation or a branch.
    fn member() -> BoxedStrategy<(Scalar, u64)> {
        prop_oneof![
            4 => base_member(),
            2 => (base_member(), base_member(), ops(), widths()).prop_map(
                |((a, x), (b, y), op, w)| (a.alu(op, w, &b), ref_alu(op, w, x, y))
            ),
            2 => (base_member(), base_member(), conds(), widths()).prop_map(
                |((mut a, x), (mut b, y), c, w)| {
                    let taken = ref_cond(c, w, x, y);
                    let ok = Scalar::refine(c, w, taken, &mut a, &mut b);
                    assert!(ok);
                    (a, x)
                }
            ),
        ]
        .boxed()
    }

    fn check(s: &Scalar, v: u64) -> Result<(), TestCaseError> {
        prop_assert!(s.is_valid(), "invalid {:?}", s);
        prop_assert!(s.contains(v), "{:#x} not in {} ({:?})", v, s, s);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn sync_keeps_members_and_narrows((raw, x) in raw_member()) {
            prop_assert!(raw.contains(x));
            let mut s = raw;
            s.sync();
            check(&s, x)?;
            prop_assert!(s.within(&raw), "{:?} widened to {:?}", raw, s);
        }

        #[test]
        fn generated_members_are_members((s, x) in member()) {
            check(&s, x)?;
        }

        #[test]
        fn alu_sound((a, x) in member(), (b, y) in member()) {
            check(&a, x)?;
            check(&b, y)?;
            for op in AluOp::ALL {
                for w in WIDTHS {
                    let r = a.alu(op, w, &b);
                    let v = ref_alu(op, w, x, y);
                    prop_assert!(r.is_valid());
                    prop_assert!(r.contains(v),
                        "{:?} {:?}: {:#x} op {:#x} = {:#x} not in {} from a={} b={}",
                        op, w, x, y, v, r, a, b);
                }
            }
        }

        #[test]
        fn sign_masks_and_or_sound((b, y) in member(), neg in any::<bool>(), wide in any::<bool>()) {
            // `x s>> 31` / `s>> 63`: 0 or -1, ANDed or ORed with anything.
            check(&b, y)?;
            let w = if wide { Width::W64 } else { Width::W32 };
            let shift = if wide { 63 } else { 31 };
            let mask = Scalar::UNKNOWN.alu(AluOp::Arsh, w, &Scalar::constant(shift));
            let x = if neg { u64::MAX } else { 0 };
            prop_assert!(mask.contains(ref_alu(AluOp::Arsh, w, x, shift)));
            for op in [AluOp::And, AluOp::Or] {
                for (l, r, lx, ry) in [(&mask, &b, x, y), (&b, &mask, y, x)] {
                    let out = l.alu(op, w, r);
                    let v = ref_alu(op, w, lx, ry);
                    prop_assert!(out.is_valid());
                    prop_assert!(out.contains(v), "{:?} {:?}: {:#x} not in {}", op, w, v, out);
                }
            }
        }

        #[test]
        fn alu_constants_exact(x in interesting(), y in interesting()) {
            let (a, b) = (Scalar::constant(x), Scalar::constant(y));
            for op in AluOp::ALL {
                for w in WIDTHS {
                    prop_assert_eq!(a.alu(op, w, &b), Scalar::constant(ref_alu(op, w, x, y)));
                }
            }
        }

        #[test]
        fn alu_small_sets_sound((a, x) in member(), ys in proptest::collection::vec(interesting(), 1..4),
                                i in any::<prop::sample::Index>()) {
            // A second operand made of a few constants (shift amounts,
            // divisors of both signs and zero).
            let mut b = Scalar::constant(ys[0] & 0x3f);
            for &v in &ys[1..] {
                b = b.join(&Scalar::constant(v & 0x3f));
            }
            b.sync();
            let y = ys[i.index(ys.len())] & 0x3f;
            let nb = b.neg(Width::W64);
            for op in AluOp::ALL {
                for w in WIDTHS {
                    prop_assert!(a.alu(op, w, &b).contains(ref_alu(op, w, x, y)), "{:?} {:?}", op, w);
                    let ny = y.wrapping_neg();
                    prop_assert!(a.alu(op, w, &nb).contains(ref_alu(op, w, x, ny)), "{:?} {:?} neg", op, w);
                }
            }
        }

        #[test]
        fn unary_sound((a, x) in member()) {
            for w in WIDTHS {
                let v = if w == Width::W32 { (x as u32).wrapping_neg() as u64 } else { x.wrapping_neg() };
                check(&a.neg(w), v)?;
                for bits in [8u8, 16, 32] {
                    check(&a.movsx(w, bits), ref_movsx(w, bits, x))?;
                }
            }
            check(&a.zext32(), x & 0xffff_ffff)?;
            for op in [EndianOp::ToLe, EndianOp::ToBe, EndianOp::Swap] {
                for bits in [16u8, 32, 64] {
                    check(&a.endian(op, bits), ref_endian(op, bits, x))?;
                }
            }
        }

        #[test]
        fn branch_taken_sound((a, x) in member(), (b, y) in member()) {
            for c in JmpCond::ALL {
                for w in WIDTHS {
                    if let Some(t) = a.is_branch_taken(c, w, &b) {
                        prop_assert_eq!(t, ref_cond(c, w, x, y), "{:?} {:?} a={} b={}", c, w, a, b);
                    }
                }
            }
        }

        #[test]
        fn branch_taken_sound_near((a, x) in member(), d in -3i64..=3) {
            // Operands close to each other exercise the edges.
            let y = x.wrapping_add(d as u64);
            let b = Scalar::constant(y);
            for c in JmpCond::ALL {
                for w in WIDTHS {
                    if let Some(t) = a.is_branch_taken(c, w, &b) {
                        prop_assert_eq!(t, ref_cond(c, w, x, y));
                    }
                    if let Some(t) = b.is_branch_taken(c, w, &a) {
                        prop_assert_eq!(t, ref_cond(c, w, y, x));
                    }
                }
            }
        }

        #[test]
        fn refine_sound((a, x) in member(), (b, y) in member()) {
            for c in JmpCond::ALL {
                for w in WIDTHS {
                    let taken = ref_cond(c, w, x, y);
                    let (mut a2, mut b2) = (a, b);
                    prop_assert!(Scalar::refine(c, w, taken, &mut a2, &mut b2),
                        "{:?} {:?} {} a={} b={}", c, w, taken, a, b);
                    check(&a2, x)?;
                    check(&b2, y)?;
                    prop_assert!(a2.within(&a) && b2.within(&b));
                    // The other outcome: dead or still sound-shaped.
                    let (mut a3, mut b3) = (a, b);
                    if Scalar::refine(c, w, !taken, &mut a3, &mut b3) {
                        prop_assert!(a3.is_valid() && b3.is_valid());
                        prop_assert!(a3.within(&a) && b3.within(&b));
                    } else {
                        prop_assert_eq!((a3, b3), (a, b));
                    }
                }
            }
        }

        #[test]
        fn refine_sound_near((a, x) in member(), d in -2i64..=2, swap in any::<bool>()) {
            let y = x.wrapping_add(d as u64);
            for c in JmpCond::ALL {
                for w in WIDTHS {
                    let (mut p, mut q) = (a, Scalar::constant(y));
                    let (u, v) = if swap { (y, x) } else { (x, y) };
                    let taken = ref_cond(c, w, u, v);
                    let ok = if swap {
                        Scalar::refine(c, w, taken, &mut q, &mut p)
                    } else {
                        Scalar::refine(c, w, taken, &mut p, &mut q)
                    };
                    prop_assert!(ok, "{:?} {:?} {} a={}", c, w, taken, a);
                    check(&p, x)?;
                    check(&q, y)?;
                }
            }
        }

        #[test]
        fn within_and_join_sound((a, x) in member(), (b, y) in member(), r in any::<u64>()) {
            prop_assert!(a.within(&a));
            let j = a.join(&b);
            check(&j, x)?;
            check(&j, y)?;
            prop_assert!(a.within(&j) && b.within(&j));
            // Every member of a (sampled through its tnum) that is in a is
            // in anything a is within.
            let z = a.var_off.value | (r & a.var_off.mask);
            for other in [b, j] {
                if a.within(&other) {
                    prop_assert!(other.contains(x));
                    if a.contains(z) {
                        prop_assert!(other.contains(z));
                    }
                }
            }
        }
    }

    // ----- precision ---------------------------------------------------------

    fn c(v: u64) -> Scalar {
        Scalar::constant(v)
    }

    #[test]
    fn byte_load_masked() {
        let r = Scalar::unknown_bits(1).alu(AluOp::And, Width::W64, &c(0x0f));
        assert_eq!(r.umax, 15);
        assert_eq!(r.umin, 0);
        assert_eq!(
            r.var_off,
            Tnum {
                value: 0,
                mask: 0xf
            }
        );
        assert_eq!(
            r.to_string(),
            "scalar(smin=smin32=0,smax=umax=smax32=umax32=15,var_off=(0x0; 0xf))"
        );
    }

    #[test]
    fn masked_plus_one() {
        let r = Scalar::UNKNOWN.alu(AluOp::And, Width::W64, &c(0xff)).alu(
            AluOp::Add,
            Width::W64,
            &c(1),
        );
        assert_eq!((r.umin, r.umax), (1, 256));
        assert_eq!((r.smin, r.smax), (1, 256));
        assert_eq!(
            r.var_off,
            Tnum {
                value: 0,
                mask: 0x1ff
            }
        );
    }

    #[test]
    fn unsigned_less_than() {
        let mut x = Scalar::UNKNOWN;
        let mut k = c(10);
        assert!(Scalar::refine(
            JmpCond::Lt,
            Width::W64,
            true,
            &mut x,
            &mut k
        ));
        assert_eq!((x.umin, x.umax), (0, 9));
        assert_eq!((x.smin, x.smax), (0, 9));
        assert_eq!(
            x.var_off,
            Tnum {
                value: 0,
                mask: 0xf
            }
        );
        let mut y = Scalar::UNKNOWN;
        let mut k = c(10);
        assert!(Scalar::refine(
            JmpCond::Lt,
            Width::W64,
            false,
            &mut y,
            &mut k
        ));
        assert_eq!((y.umin, y.umax), (10, u64::MAX));
    }

    #[test]
    fn equality_gives_constant() {
        let mut x = Scalar::unknown_bits(4);
        let mut k = c(5);
        assert!(Scalar::refine(
            JmpCond::Eq,
            Width::W64,
            true,
            &mut x,
            &mut k
        ));
        assert_eq!(x, c(5));
        assert_eq!(x.is_const(), Some(5));
        assert_eq!(x.to_string(), "5");
        // 32-bit equality fixes the low half only.
        let mut y = Scalar::UNKNOWN;
        let mut k = c(5);
        assert!(Scalar::refine(
            JmpCond::Eq,
            Width::W32,
            true,
            &mut y,
            &mut k
        ));
        assert_eq!(y.subreg_const(), Some(5));
        assert_eq!(y.is_const(), None);
        // Ne with a constant trims an end.
        let mut z = Scalar::from_range_u64(5, 9);
        let mut k = c(5);
        assert!(Scalar::refine(
            JmpCond::Ne,
            Width::W64,
            true,
            &mut z,
            &mut k
        ));
        assert_eq!((z.umin, z.umax), (6, 9));
        // Impossible equality: the branch is dead.
        let mut w = Scalar::from_range_u64(5, 9);
        let mut k = c(20);
        assert!(!Scalar::refine(
            JmpCond::Eq,
            Width::W64,
            true,
            &mut w,
            &mut k
        ));
        assert_eq!(w, Scalar::from_range_u64(5, 9));
    }

    #[test]
    fn add32_zero_extends() {
        let a = Scalar::unknown_bits(4);
        let r = a.alu(AluOp::Add, Width::W32, &a);
        assert!(r.umax <= u32::MAX as u64);
        assert_eq!(
            r.var_off,
            Tnum {
                value: 0,
                mask: 0xffff_ffff
            }
        );
        let r = Scalar::UNKNOWN.alu(AluOp::Add, Width::W32, &c(1));
        assert_eq!((r.umin, r.umax), (0, u32::MAX as u64));
        let small = Scalar::from_range_u64(0, 100).alu(AluOp::Add, Width::W32, &c(5));
        assert_eq!((small.umin, small.umax), (5, 105));
        // 64-bit add of a negative: the 32-bit bounds follow.
        let r = Scalar::from_range_u64(10, 20).alu(AluOp::Add, Width::W64, &c(u64::MAX));
        assert_eq!((r.umin, r.umax), (9, 19));
        assert_eq!((r.u32_min, r.u32_max), (9, 19));
    }

    #[test]
    fn constant_shifts_exact() {
        let a = Scalar::from_range_u64(1, 3);
        let r = a.alu(AluOp::Lsh, Width::W64, &c(4));
        assert_eq!((r.umin, r.umax), (16, 48));
        assert_eq!(
            r.var_off,
            Tnum {
                value: 0,
                mask: 0x30
            }
        );
        let r = Scalar::unknown_bits(2).alu(AluOp::Rsh, Width::W64, &c(8));
        assert_eq!((r.umin, r.umax), (0, 255));
        let r = Scalar::sext_load(1).alu(AluOp::Arsh, Width::W64, &c(4));
        assert_eq!((r.smin, r.smax), (-8, 7));
        // Shift amounts are masked.
        assert_eq!(c(1).alu(AluOp::Lsh, Width::W64, &c(65)), c(2));
        assert_eq!(c(1).alu(AluOp::Lsh, Width::W32, &c(33)), c(2));
        // x << 32 s>> 32 sign-extends the low half.
        let x = Scalar::from_range_u64(0, 100);
        let r = x
            .alu(AluOp::Lsh, Width::W64, &c(32))
            .alu(AluOp::Arsh, Width::W64, &c(32));
        assert_eq!((r.smin, r.smax, r.umin, r.umax), (0, 100, 0, 100));
        // A variable amount: the join of the possible shifts.
        let k = Scalar::from_range_u64(1, 2);
        let r = c(1).alu(AluOp::Lsh, Width::W64, &k);
        assert_eq!((r.umin, r.umax), (2, 4));
    }

    #[test]
    fn u32_range_signed_compare() {
        let mut x = Scalar::UNKNOWN.alu(AluOp::Mov, Width::W32, &Scalar::UNKNOWN);
        let mut lim = c(100);
        assert!(Scalar::refine(
            JmpCond::Le,
            Width::W32,
            true,
            &mut x,
            &mut lim
        ));
        assert_eq!((x.umin, x.umax), (0, 100));
        // [0, 100] s> 0 is unknown; after it, x is [1, 100].
        assert_eq!(x.is_branch_taken(JmpCond::SGt, Width::W64, &c(0)), None);
        assert_eq!(
            x.is_branch_taken(JmpCond::SGe, Width::W64, &c(0)),
            Some(true)
        );
        assert_eq!(
            x.is_branch_taken(JmpCond::SGt, Width::W32, &c(100)),
            Some(false)
        );
        assert_eq!(
            x.is_branch_taken(JmpCond::SLt, Width::W32, &c(0)),
            Some(false)
        );
        let mut t = x;
        let mut zero = c(0);
        assert!(Scalar::refine(
            JmpCond::SGt,
            Width::W64,
            true,
            &mut t,
            &mut zero
        ));
        assert_eq!((t.smin, t.smax, t.umin, t.umax), (1, 100, 1, 100));
        assert_eq!(
            (t.s32_min, t.s32_max, t.u32_min, t.u32_max),
            (1, 100, 1, 100)
        );
        let mut f = x;
        let mut zero = c(0);
        assert!(Scalar::refine(
            JmpCond::SGt,
            Width::W64,
            false,
            &mut f,
            &mut zero
        ));
        assert_eq!(f, c(0));
        // A 32-bit signed test on a 64-bit unknown refines the low half and
        // what follows from it.
        let mut y = Scalar::UNKNOWN;
        let mut zero = c(0);
        assert!(Scalar::refine(
            JmpCond::SGt,
            Width::W32,
            true,
            &mut y,
            &mut zero
        ));
        assert_eq!((y.s32_min, y.s32_max), (1, i32::MAX));
        assert_eq!((y.u32_min, y.u32_max), (1, i32::MAX as u32));
    }

    #[test]
    fn division_and_remainder() {
        let a = Scalar::from_range_u64(10, 100);
        let r = a.alu(AluOp::Div, Width::W64, &c(3));
        assert_eq!((r.umin, r.umax), (3, 33));
        let r = a.alu(AluOp::Mod, Width::W64, &c(7));
        assert_eq!((r.umin, r.umax), (0, 6));
        let r = a.alu(AluOp::Mod, Width::W64, &c(8));
        assert_eq!(r.var_off, Tnum { value: 0, mask: 7 });
        let r = a.alu(AluOp::Mod, Width::W64, &c(1000));
        assert_eq!(r, a);
        // A divisor that may be zero.
        let d = Scalar::from_range_u64(0, 5);
        let r = a.alu(AluOp::Div, Width::W64, &d);
        assert_eq!((r.umin, r.umax), (0, 100));
        let r = a.alu(AluOp::Mod, Width::W64, &d);
        assert_eq!((r.umin, r.umax), (0, 100));
        let r = Scalar::sext_load(1).alu(AluOp::SDiv, Width::W64, &c(2));
        assert_eq!((r.smin, r.smax), (-64, 63));
        let r = Scalar::sext_load(1).alu(AluOp::SMod, Width::W64, &c(10));
        assert_eq!((r.smin, r.smax), (-9, 9));
        assert_eq!(
            c(i64::MIN as u64).alu(AluOp::SDiv, Width::W64, &c(u64::MAX)),
            c(i64::MIN as u64)
        );
        assert_eq!(c(7).alu(AluOp::Mod, Width::W32, &c(0)), c(7));
        assert_eq!(c(0x1_0000_0007).alu(AluOp::Mod, Width::W32, &c(0)), c(7));
    }

    #[test]
    fn unary_precision() {
        let r = Scalar::unknown_bits(1).movsx(Width::W64, 8);
        assert_eq!((r.smin, r.smax), (-128, 127));
        let r = Scalar::from_range_u64(0, 100).movsx(Width::W64, 8);
        assert_eq!((r.smin, r.smax, r.umin, r.umax), (0, 100, 0, 100));
        let r = Scalar::sext_load(2);
        assert_eq!(
            (r.smin, r.smax, r.s32_min, r.s32_max),
            (-32768, 32767, -32768, 32767)
        );
        let r = c(0x1234).endian(EndianOp::ToBe, 16);
        assert_eq!(r, c(0x3412));
        let r = Scalar::unknown_bits(1).endian(EndianOp::Swap, 32);
        assert_eq!(
            r.var_off,
            Tnum {
                value: 0,
                mask: 0xff00_0000
            }
        );
        let r = Scalar::from_range_u64(0, 1000).endian(EndianOp::ToLe, 16);
        assert_eq!((r.umin, r.umax), (0, 1000));
        let r = Scalar::from_range_u64(1, 5).neg(Width::W64);
        assert_eq!((r.smin, r.smax), (-5, -1));
        let r = Scalar::from_range_u64(1, 5).neg(Width::W32);
        assert_eq!((r.umin, r.umax), (0xffff_fffb, 0xffff_ffff));
    }

    #[test]
    fn jset() {
        let mut x = Scalar::unknown_bits(1);
        let mut bit = c(4);
        assert!(Scalar::refine(
            JmpCond::Set,
            Width::W64,
            true,
            &mut x,
            &mut bit
        ));
        assert_eq!(
            x.var_off,
            Tnum {
                value: 4,
                mask: 0xfb
            }
        );
        assert_eq!(x.umin, 4);
        let mut y = Scalar::unknown_bits(1);
        let mut m = c(0xf0);
        assert!(Scalar::refine(
            JmpCond::Set,
            Width::W64,
            false,
            &mut y,
            &mut m
        ));
        assert_eq!(
            y.var_off,
            Tnum {
                value: 0,
                mask: 0x0f
            }
        );
        assert_eq!(y.umax, 15);
        assert_eq!(
            Scalar::unknown_bits(1).is_branch_taken(JmpCond::Set, Width::W64, &c(0x100)),
            Some(false)
        );
    }

    #[test]
    fn try_sync_and_within() {
        let mut empty = Scalar {
            umin: 5,
            umax: 3,
            ..Scalar::UNKNOWN
        };
        assert!(!empty.try_sync());
        // Bounds [4, 7] but bit 2 known clear: nothing fits.
        let mut clash = Scalar {
            var_off: Tnum { value: 0, mask: !4 },
            umin: 4,
            umax: 7,
            ..Scalar::UNKNOWN
        };
        assert!(!clash.try_sync());
        let mut ok = Scalar {
            umin: 3,
            umax: 3,
            ..Scalar::UNKNOWN
        };
        assert!(ok.try_sync());
        assert_eq!(ok, c(3));
        let small = Scalar::from_range_u64(2, 9);
        assert!(small.within(&Scalar::unknown_bits(1)));
        assert!(!Scalar::unknown_bits(1).within(&small));
        assert!(c(5).within(&small) && !c(10).within(&small));
        assert!(small.within(&Scalar::UNKNOWN));
    }

    #[test]
    fn a_range_meeting_the_tnum_in_one_value_is_that_value() {
        // The kernel's verdicts on `r5 &= 0xc` then `if r5 < LO` / `if r5 >
        // HI` (Linux 6.18's log): one common value makes a constant, two
        // leave the range alone.
        let t = Tnum {
            value: 0,
            mask: 0xc,
        };
        let bounded = |lo: u64, hi: u64| {
            let mut s = Scalar::from_tnum(t);
            assert!(Scalar::refine(
                JmpCond::Ge,
                Width::W64,
                true,
                &mut s,
                &mut c(lo)
            ));
            assert!(Scalar::refine(
                JmpCond::Le,
                Width::W64,
                true,
                &mut s,
                &mut c(hi)
            ));
            s
        };
        assert_eq!(bounded(10, 12), c(12));
        assert_eq!(bounded(5, 11), c(8));
        assert_eq!(bounded(1, 7), c(4));
        assert_eq!(bounded(9, 15), c(12));
        let two = bounded(1, 9);
        assert_eq!((two.umin, two.umax, two.var_off), (1, 9, t));
        // 64-bit only: the low half keeps its range ([17, 20] over
        // {16, 20}), as in the kernel.
        let mut s = Scalar::from_tnum(Tnum {
            value: 0x10,
            mask: 0xffff_ffff_0000_0004,
        });
        assert!(Scalar::refine(
            JmpCond::Ge,
            Width::W32,
            true,
            &mut s,
            &mut c(17)
        ));
        assert_eq!(s.subreg_const(), None);
        assert_eq!((s.u32_min, s.u32_max), (17, 20));
        // A shift's multiple of 4 in [2, 4] (the program of a differential
        // campaign, seed 4242, that the kernel accepted and userbpf refused
        // with a misaligned stack access).
        let mut s = Scalar::from_tnum(Tnum { value: 0, mask: !3 });
        assert!(Scalar::refine(
            JmpCond::SGe,
            Width::W64,
            true,
            &mut s,
            &mut c(2)
        ));
        assert!(Scalar::refine(
            JmpCond::SLe,
            Width::W64,
            true,
            &mut s,
            &mut c(4)
        ));
        assert_eq!(s, c(4));
    }

    #[test]
    fn display() {
        assert_eq!(Scalar::UNKNOWN.to_string(), "scalar()");
        assert_eq!(c(u64::MAX).to_string(), "-1");
        assert_eq!(c(0x1000).to_string(), "0x1000");
        assert_eq!(
            Scalar::unknown_bits(4).to_string(),
            "scalar(smin=0,smax=umax=0xffffffff,var_off=(0x0; 0xffffffff))"
        );
        assert_eq!(
            Scalar::sext_load(1).to_string(),
            "scalar(smin=smin32=-128,smax=smax32=127)"
        );
    }
}
