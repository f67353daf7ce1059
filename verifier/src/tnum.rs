//! Tristate numbers: 64-bit values of which each bit is known to be 0,
//! known to be 1, or unknown (the Linux verifier's `struct tnum`).
//!
//! A [`Tnum`] stands for the set of every `u64` whose known bits match:
//! `value` holds the bits known to be 1 and `mask` the unknown bits, never
//! both (`value & mask == 0`). Every operation over-approximates the
//! matching concrete operation: each result of the concrete operation on
//! members of the operands is a member of the result.

use std::fmt;

/// The mask of the low `bits` bits (all 64 for `bits >= 64`).
pub(crate) const fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        1u64.wrapping_shl(bits).wrapping_sub(1)
    }
}

const SIGN64: u64 = 1 << 63;
const LOW32: u64 = 0xffff_ffff;

/// A tristate number: the set of `u64`s `x` with `x & !mask == value`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Tnum {
    /// The bits known to be 1.
    pub value: u64,
    /// The unknown bits.
    pub mask: u64,
}

impl Tnum {
    /// Every `u64`.
    pub const UNKNOWN: Tnum = Tnum {
        value: 0,
        mask: u64::MAX,
    };

    /// Exactly `v`.
    pub const fn constant(v: u64) -> Tnum {
        Tnum { value: v, mask: 0 }
    }

    /// Every `u64`.
    pub const fn unknown() -> Tnum {
        Tnum::UNKNOWN
    }

    /// The smallest tnum of the form "common high bits, then unknown low
    /// bits" holding every value of `min..=max` (the kernel's
    /// `tnum_range`). `min > max` gives [`Tnum::UNKNOWN`].
    pub const fn range(min: u64, max: u64) -> Tnum {
        if min > max {
            return Tnum::UNKNOWN;
        }
        let differing = min ^ max;
        let bits = 64u32.wrapping_sub(differing.leading_zeros());
        if bits >= 64 {
            return Tnum::UNKNOWN;
        }
        let delta = low_mask(bits);
        Tnum {
            value: min & !delta,
            mask: delta,
        }
    }

    /// Whether exactly one value is possible.
    pub const fn is_const(self) -> bool {
        self.mask == 0
    }

    /// Whether nothing is known.
    pub const fn is_unknown(self) -> bool {
        self.mask == u64::MAX
    }

    /// Whether `v` is a member.
    pub const fn contains_value(self, v: u64) -> bool {
        v & !self.mask == self.value
    }

    /// Whether every member of `other` is a member of `self` (the kernel's
    /// `tnum_in`).
    pub const fn contains(self, other: Tnum) -> bool {
        if other.mask & !self.mask != 0 {
            return false;
        }
        other.value & !self.mask == self.value
    }

    /// The smallest member.
    pub const fn umin(self) -> u64 {
        self.value
    }

    /// The largest member.
    pub const fn umax(self) -> u64 {
        self.value | self.mask
    }

    /// The smallest member not below `y`, if there is one.
    pub fn next_at_least(self, y: u64) -> Option<u64> {
        if y <= self.value {
            return Some(self.value);
        }
        // `y`'s bits are kept down to the highest known bit where they
        // differ from the known bits; there either the known bit is 1 (the
        // rest is then the smallest possible) or it is 0, and a higher
        // unknown bit where `y` has 0 must be raised.
        let differ = (y ^ self.value) & !self.mask;
        if differ == 0 {
            return Some(y);
        }
        let bit = 1u64 << differ.ilog2();
        let below = bit.wrapping_sub(1);
        if self.value & bit != 0 {
            return Some((y & !below & !bit) | bit | (self.value & below));
        }
        // The lowest unknown bit above it that `y` has clear.
        let free = self.mask & !(below | bit) & !y;
        if free == 0 {
            return None;
        }
        let j = free & free.wrapping_neg();
        let below_j = j.wrapping_sub(1);
        Some((y & !below_j & !j) | j | (self.value & below_j))
    }

    /// The smallest member greater than `z`, saturated to the largest
    /// member when there is none, and the smallest member when `z` is below
    /// it (the kernel's `tnum_step`).
    pub fn step(self, z: u64) -> u64 {
        let tmax = self.umax();
        if z >= tmax {
            return tmax;
        }
        if z < self.value {
            return self.value;
        }
        self.next_at_least(z.wrapping_add(1)).unwrap_or(tmax)
    }

    /// The smallest member, read as signed.
    pub const fn smin(self) -> i64 {
        (self.value | (self.mask & SIGN64)) as i64
    }

    /// The largest member, read as signed.
    pub const fn smax(self) -> i64 {
        (self.value | (self.mask & !SIGN64)) as i64
    }

    /// `self + other` (wrapping).
    pub const fn add(self, other: Tnum) -> Tnum {
        let masks = self.mask.wrapping_add(other.mask);
        let values = self.value.wrapping_add(other.value);
        // Bits where the all-unknown-set sum and the all-unknown-clear sum
        // differ may carry either way.
        let carries = masks.wrapping_add(values) ^ values;
        let unknown = carries | self.mask | other.mask;
        Tnum {
            value: values & !unknown,
            mask: unknown,
        }
    }

    /// `self - other` (wrapping).
    pub const fn sub(self, other: Tnum) -> Tnum {
        let diff = self.value.wrapping_sub(other.value);
        // Largest and smallest differences; bits where they disagree may
        // borrow either way.
        let hi = diff.wrapping_add(self.mask);
        let lo = diff.wrapping_sub(other.mask);
        let unknown = (hi ^ lo) | self.mask | other.mask;
        Tnum {
            value: diff & !unknown,
            mask: unknown,
        }
    }

    /// `-self` (wrapping).
    pub const fn neg(self) -> Tnum {
        Tnum::constant(0).sub(self)
    }

    /// `self & other`.
    pub const fn and(self, other: Tnum) -> Tnum {
        let maybe_a = self.value | self.mask;
        let maybe_b = other.value | other.mask;
        let value = self.value & other.value;
        Tnum {
            value,
            mask: maybe_a & maybe_b & !value,
        }
    }

    /// `self | other`.
    pub const fn or(self, other: Tnum) -> Tnum {
        let value = self.value | other.value;
        Tnum {
            value,
            mask: (self.mask | other.mask) & !value,
        }
    }

    /// `self ^ other`.
    pub const fn xor(self, other: Tnum) -> Tnum {
        let unknown = self.mask | other.mask;
        Tnum {
            value: (self.value ^ other.value) & !unknown,
            mask: unknown,
        }
    }

    /// `self * other` (wrapping), by shift-and-add over the bits of `self`.
    pub const fn mul(self, other: Tnum) -> Tnum {
        let exact = self.value.wrapping_mul(other.value);
        // Sum of the uncertain partial products: a known-1 bit of `a` adds
        // `b`'s unknown part, an unknown bit adds all of `b`'s possible bits.
        let mut acc = Tnum::constant(0);
        let mut a = self;
        let mut b = other;
        while a.value != 0 || a.mask != 0 {
            if a.value & 1 != 0 {
                acc = acc.add(Tnum {
                    value: 0,
                    mask: b.mask,
                });
            } else if a.mask & 1 != 0 {
                acc = acc.add(Tnum {
                    value: 0,
                    mask: b.value | b.mask,
                });
            }
            a = a.rshift(1);
            b = b.lshift(1);
        }
        Tnum::constant(exact).add(acc)
    }

    /// `self << shift`; 64 or more gives 0.
    pub const fn lshift(self, shift: u8) -> Tnum {
        if shift >= 64 {
            return Tnum::constant(0);
        }
        Tnum {
            value: self.value.wrapping_shl(shift as u32),
            mask: self.mask.wrapping_shl(shift as u32),
        }
    }

    /// Logical `self >> shift`; 64 or more gives 0.
    pub const fn rshift(self, shift: u8) -> Tnum {
        if shift >= 64 {
            return Tnum::constant(0);
        }
        Tnum {
            value: self.value.wrapping_shr(shift as u32),
            mask: self.mask.wrapping_shr(shift as u32),
        }
    }

    /// Arithmetic `>> shift` of the low `bits` bits (32 or 64; 32 gives a
    /// zero-extended 32-bit result). Shifts of `bits` or more fill with the
    /// sign bit.
    pub const fn arshift(self, shift: u8, bits: u8) -> Tnum {
        if bits == 32 {
            let s = if shift >= 32 { 31 } else { shift };
            Tnum {
                value: (self.value as u32 as i32).wrapping_shr(s as u32) as u32 as u64,
                mask: (self.mask as u32 as i32).wrapping_shr(s as u32) as u32 as u64,
            }
        } else {
            let s = if shift >= 64 { 63 } else { shift };
            Tnum {
                value: (self.value as i64).wrapping_shr(s as u32) as u64,
                mask: (self.mask as i64).wrapping_shr(s as u32) as u64,
            }
        }
    }

    /// The values in both (meaningful only when they share a value; see
    /// [`Tnum::try_intersect`]).
    pub const fn intersect(self, other: Tnum) -> Tnum {
        let value = self.value | other.value;
        let unknown = self.mask & other.mask;
        Tnum {
            value: value & !unknown,
            mask: unknown,
        }
    }

    /// The values in both, or `None` when a bit known in both differs
    /// (no common value).
    pub const fn try_intersect(self, other: Tnum) -> Option<Tnum> {
        if (self.value ^ other.value) & !self.mask & !other.mask != 0 {
            None
        } else {
            Some(self.intersect(other))
        }
    }

    /// The smallest tnum holding every member of both.
    pub const fn union(self, other: Tnum) -> Tnum {
        let unknown = self.mask | other.mask | (self.value ^ other.value);
        Tnum {
            value: self.value & !unknown,
            mask: unknown,
        }
    }

    /// Truncated to the low `bytes` bytes (zero-extended; 8 or more keeps
    /// all).
    pub const fn cast(self, bytes: usize) -> Tnum {
        let bits = if bytes >= 8 {
            64
        } else {
            (bytes as u32).wrapping_mul(8)
        };
        let keep = low_mask(bits);
        Tnum {
            value: self.value & keep,
            mask: self.mask & keep,
        }
    }

    /// The low 32 bits, zero-extended.
    pub const fn subreg(self) -> Tnum {
        Tnum {
            value: self.value & LOW32,
            mask: self.mask & LOW32,
        }
    }

    /// The high 32 bits, with the low 32 bits known 0.
    pub const fn clear_subreg(self) -> Tnum {
        Tnum {
            value: self.value & !LOW32,
            mask: self.mask & !LOW32,
        }
    }

    /// The high 32 bits of `self` with the low 32 bits of `sub`.
    pub const fn with_subreg(self, sub: Tnum) -> Tnum {
        self.clear_subreg().or(sub.subreg())
    }

    /// The low `bits` bits sign-extended to 64 (`bits` in 1..=64).
    pub const fn sext(self, bits: u32) -> Tnum {
        if bits >= 64 || bits == 0 {
            return self;
        }
        let keep = low_mask(bits);
        let sign = 1u64.wrapping_shl(bits.wrapping_sub(1));
        let value = self.value & keep;
        let mask = self.mask & keep;
        if mask & sign != 0 {
            Tnum {
                value,
                mask: mask | !keep,
            }
        } else if value & sign != 0 {
            Tnum {
                value: value | !keep,
                mask,
            }
        } else {
            Tnum { value, mask }
        }
    }
}

/// `(value; mask)` in hex, as the kernel's `tnum_strn` prints it (the log
/// puts `var_off=` before it).
impl fmt::Display for Tnum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:#x}; {:#x})", self.value, self.mask)
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A tnum and one of its members.
    fn tnum_member() -> impl Strategy<Value = (Tnum, u64)> {
        let mask = prop_oneof![
            Just(0u64),
            (0u32..=64).prop_map(low_mask),
            any::<u64>(),
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| a & b),
            (0u32..64).prop_map(|k| 1u64 << k),
            (0u32..=64, 0u32..=64).prop_map(|(a, b)| low_mask(a) ^ low_mask(b)),
        ];
        let val = prop_oneof![
            any::<u64>(),
            0u64..300,
            (0u64..300).prop_map(|d| 0u64.wrapping_sub(d)),
            (0u32..64, -3i64..3).prop_map(|(k, d)| (1u64 << k).wrapping_add(d as u64)),
        ];
        (val, mask).prop_map(|(x, m)| {
            (
                Tnum {
                    value: x & !m,
                    mask: m,
                },
                x,
            )
        })
    }

    fn pick(t: Tnum, r: u64) -> u64 {
        t.value | (r & t.mask)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn binary_ops_sound((a, x) in tnum_member(), (b, y) in tnum_member()) {
            prop_assert!(a.contains_value(x) && b.contains_value(y));
            prop_assert!(a.add(b).contains_value(x.wrapping_add(y)));
            prop_assert!(a.sub(b).contains_value(x.wrapping_sub(y)));
            prop_assert!(a.mul(b).contains_value(x.wrapping_mul(y)));
            prop_assert!(a.and(b).contains_value(x & y));
            prop_assert!(a.or(b).contains_value(x | y));
            prop_assert!(a.xor(b).contains_value(x ^ y));
            prop_assert!(a.neg().contains_value(x.wrapping_neg()));
            let u = a.union(b);
            prop_assert!(u.contains_value(x) && u.contains_value(y));
            prop_assert!(u.contains(a) && u.contains(b));
            if b.contains_value(x) {
                prop_assert!(a.try_intersect(b).is_some());
                prop_assert!(a.intersect(b).contains_value(x));
            }
            if a.try_intersect(b).is_none() {
                prop_assert!(!b.contains_value(x) && !a.contains_value(y));
            }
            if a.contains(b) {
                prop_assert!(a.contains_value(y));
            }
            for t in [a.add(b), a.sub(b), a.mul(b), a.and(b), a.or(b), a.xor(b), u] {
                prop_assert_eq!(t.value & t.mask, 0);
            }
        }

        #[test]
        fn unary_ops_sound((a, x) in tnum_member(), s in 0u8..70, bytes in 0usize..9,
                           bits in 1u32..=64, r in any::<u64>()) {
            let l = if s < 64 { x << s } else { 0 };
            prop_assert!(a.lshift(s).contains_value(l));
            let rs = if s < 64 { x >> s } else { 0 };
            prop_assert!(a.rshift(s).contains_value(rs));
            prop_assert!(a.arshift(s, 64).contains_value(((x as i64) >> s.min(63)) as u64));
            prop_assert!(a
                .arshift(s, 32)
                .contains_value(((x as u32 as i32) >> s.min(31)) as u32 as u64));
            let keep = if bytes >= 8 { u64::MAX } else { (1u64 << (bytes * 8)) - 1 };
            prop_assert!(a.cast(bytes).contains_value(x & keep));
            prop_assert!(a.subreg().contains_value(x & 0xffff_ffff));
            prop_assert!(a.clear_subreg().contains_value(x & !0xffff_ffff));
            let sh = 64 - bits;
            prop_assert!(a.sext(bits).contains_value((((x << sh) as i64) >> sh) as u64));
            prop_assert!(a.umin() <= x && x <= a.umax());
            prop_assert!(a.smin() <= x as i64 && x as i64 <= a.smax());
            prop_assert!(a.contains_value(a.umin()) && a.contains_value(a.umax()));
            prop_assert!(a.contains_value(a.smin() as u64) && a.contains_value(a.smax() as u64));
            let y = pick(a, r);
            prop_assert!(a.contains_value(y));
            prop_assert!(a.contains(a));
        }

        #[test]
        fn with_subreg_sound((a, x) in tnum_member(), (b, y) in tnum_member()) {
            let t = a.with_subreg(b);
            prop_assert!(t.contains_value((x & !0xffff_ffff) | (y & 0xffff_ffff)));
        }

        #[test]
        fn next_at_least_is_the_smallest_member_not_below((a, _x) in tnum_member(), y in any::<u64>(), r in any::<u64>()) {
            // Against a brute force over a tnum of at most 12 unknown bits.
            let mut m = a.mask;
            while m.count_ones() > 12 {
                m &= m - 1;
            }
            let t = Tnum { value: a.value | (r & a.mask & !m), mask: m };
            let mut best: Option<u64> = None;
            let bits: Vec<u64> = (0..64).map(|i| 1u64 << i).filter(|b| m & b != 0).collect();
            for k in 0u64..(1 << bits.len()) {
                let mut x = t.value;
                for (i, b) in bits.iter().enumerate() {
                    if k >> i & 1 == 1 {
                        x |= b;
                    }
                }
                if x >= y && best.is_none_or(|b| x < b) {
                    best = Some(x);
                }
            }
            // `y` near a member too, where the boundaries are.
            prop_assert_eq!(t.next_at_least(y), best);
            let z = pick(t, r);
            for y in [z.wrapping_sub(1), z, z.wrapping_add(1)] {
                let n = t.next_at_least(y);
                prop_assert!(n.is_none_or(|n| n >= y && t.contains_value(n)));
                if t.contains_value(y) {
                    prop_assert_eq!(n, Some(y));
                }
            }
        }

        #[test]
        fn range_sound(a in any::<u64>(), b in any::<u64>(), r in any::<u64>(), k in 0u32..64) {
            let (lo, hi) = (a.min(b), a.max(b) >> (k % 64).min(63));
            let (lo, hi) = (lo.min(hi), lo.max(hi));
            let t = Tnum::range(lo, hi);
            prop_assert!(t.contains_value(lo) && t.contains_value(hi));
            let span = hi - lo;
            let mid = if span == u64::MAX { r } else { lo + r % (span + 1) };
            prop_assert!(t.contains_value(mid));
        }
    }

    #[test]
    fn basics() {
        assert_eq!(
            Tnum::range(0, 255),
            Tnum {
                value: 0,
                mask: 0xff
            }
        );
        assert_eq!(Tnum::range(5, 5), Tnum::constant(5));
        assert_eq!(Tnum::range(0, u64::MAX), Tnum::UNKNOWN);
        assert_eq!(Tnum::range(3, 2), Tnum::UNKNOWN);
        assert_eq!(
            Tnum::range(16, 31),
            Tnum {
                value: 16,
                mask: 15
            }
        );
        let t = Tnum::constant(6).mul(Tnum::constant(7));
        assert_eq!(t, Tnum::constant(42));
        let byte = Tnum {
            value: 0,
            mask: 0xff,
        };
        assert_eq!(
            byte.add(Tnum::constant(1)),
            Tnum {
                value: 0,
                mask: 0x1ff
            }
        );
        assert_eq!(byte.and(Tnum::constant(0x0f)).umax(), 15);
        assert_eq!(byte.lshift(4).umax(), 0xff0);
        assert_eq!(byte.to_string(), "(0x0; 0xff)");
        assert_eq!(Tnum::constant(0).to_string(), "(0x0; 0x0)");
        assert!(Tnum::UNKNOWN.is_unknown());
        assert!(Tnum::UNKNOWN.contains(byte));
        assert!(!byte.contains(Tnum::UNKNOWN));
        assert_eq!(
            Tnum::constant(0x80).sext(8),
            Tnum::constant(0xffff_ffff_ffff_ff80)
        );
        assert_eq!(
            Tnum::constant(0x1_0000_0005).with_subreg(Tnum::constant(7)),
            Tnum::constant(0x1_0000_0007)
        );
        assert_eq!(byte.union(Tnum::constant(0x100)).mask, 0x1ff);
        assert!(Tnum::constant(1).try_intersect(Tnum::constant(2)).is_none());
    }
}
