//! `BPF_MAP_TYPE_BLOOM_FILTER`: values without keys; `push` adds a value,
//! `peek` answers "maybe present" (0) or "definitely absent" (`-ENOENT`).
//! The number of hash functions is the low 4 bits of `map_extra` (5 when
//! 0), the bit array is sized as the kernel sizes it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Map, MapError, MapSpec, HEADER_SIZE};

/// `BPF_MAP_TYPE_BLOOM_FILTER`.
pub const BPF_MAP_TYPE_BLOOM_FILTER: u32 = 30;

#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    bits: usize,
    hashes: u32,
    pub(super) size: usize,
}

impl Layout {
    pub(super) fn new(spec: &MapSpec) -> Layout {
        let hashes = match (spec.map_extra & 0xf) as u32 {
            0 => 5,
            n => n,
        };
        // As the kernel: max_entries * nr_hash_funcs / ln(2), rounded up to
        // a power of two (at least one word).
        let want = (u64::from(spec.max_entries) * u64::from(hashes) * 10_000 / 6_931).max(64);
        let bits = want.next_power_of_two().min(1 << 32) as usize;
        Layout {
            bits,
            hashes,
            size: HEADER_SIZE + bits / 8,
        }
    }
}

/// murmur3's 64-bit finaliser.
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Two independent hashes of `value`; hash `i` is `h1 + i * h2`
/// (Kirsch-Mitzenmacher double hashing).
fn hashes(value: &[u8], seed: u32) -> (u64, u64) {
    let mut h = u64::from(seed) ^ 0x9e37_79b9_7f4a_7c15;
    for c in value.chunks(8) {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        h = fmix(h ^ u64::from_le_bytes(w));
    }
    let h1 = fmix(h ^ value.len() as u64);
    let h2 = fmix(h1 ^ 0x5851_f42d_4c95_7f2d) | 1;
    (h1, h2)
}

impl Map {
    fn bloom(&self) -> Option<Layout> {
        match self.layout {
            super::Layout::Bloom(l) => Some(l),
            _ => None,
        }
    }

    fn bloom_word(&self, bit: usize) -> (&AtomicU64, u64) {
        // SAFETY: bit < bits: the word lies in the bit array, 8-aligned.
        let w = unsafe {
            &*(self.region.as_ptr().add(HEADER_SIZE + (bit / 64) * 8) as *const AtomicU64)
        };
        (w, 1u64 << (bit % 64))
    }

    /// Adds `value` to the filter.
    pub fn bloom_push(&self, value: &[u8]) -> Result<(), MapError> {
        let Some(l) = self.bloom() else {
            return Err(self.errno("push", libc::EINVAL));
        };
        if value.len() != self.spec.value_size as usize {
            return Err(self.errno("push", libc::EINVAL));
        }
        let (h1, h2) = hashes(value, self.header().seed);
        for i in 0..l.hashes {
            let bit = (h1.wrapping_add(u64::from(i).wrapping_mul(h2)) as usize) & (l.bits - 1);
            let (w, m) = self.bloom_word(bit);
            w.fetch_or(m, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether `value` may be in the filter (`false`: definitely not).
    pub fn bloom_contains(&self, value: &[u8]) -> bool {
        let Some(l) = self.bloom() else {
            return false;
        };
        let (h1, h2) = hashes(value, self.header().seed);
        (0..l.hashes).all(|i| {
            let bit = (h1.wrapping_add(u64::from(i).wrapping_mul(h2)) as usize) & (l.bits - 1);
            let (w, m) = self.bloom_word(bit);
            w.load(Ordering::Relaxed) & m != 0
        })
    }
}
