//! `BPF_MAP_TYPE_LPM_TRIE`: longest-prefix match on keys
//! `struct { u32 prefixlen; u8 data[]; }` (bits in network order). Entries
//! live in a fixed pool scanned under a robust lock; values are contiguous
//! so programs see only them.

use std::sync::atomic::{AtomicU32, Ordering};

use super::lock::Guard;
use super::{round8, Map, MapError, MapSpec, BPF_EXIST, BPF_NOEXIST, HEADER_SIZE};

/// `BPF_MAP_TYPE_LPM_TRIE`.
pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
/// The kernel's largest LPM data size (`LPM_DATA_SIZE_MAX`).
pub const LPM_DATA_SIZE_MAX: u32 = 256;

const LOCK: usize = 128;

#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    /// Per entry: in_use (u32), prefixlen (u32), then the data.
    entries: usize,
    entry_stride: usize,
    pub(super) values: usize,
    pub(super) value_stride: usize,
    pub(super) size: usize,
}

impl Layout {
    pub(super) fn new(spec: &MapSpec) -> Layout {
        let max = spec.max_entries as usize;
        let entry_stride = 8 + round8(spec.key_size.saturating_sub(4));
        let entries = HEADER_SIZE + 64;
        let values = entries.saturating_add(max.saturating_mul(entry_stride));
        let value_stride = round8(spec.value_size);
        Layout {
            entries,
            entry_stride,
            values,
            value_stride,
            size: values.saturating_add(max.saturating_mul(value_stride)),
        }
    }
}

/// Whether the first `bits` bits of `a` and `b` agree (MSB first).
fn prefix_eq(a: &[u8], b: &[u8], bits: u32) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

impl Map {
    fn lpm(&self) -> Option<Layout> {
        match self.layout {
            super::Layout::Lpm(l) => Some(l),
            _ => None,
        }
    }

    fn lpm_entry(&self, l: &Layout, i: usize) -> (&AtomicU32, &AtomicU32, *mut u8) {
        // SAFETY: i < max_entries: the entry lies in the pool.
        unsafe {
            let e = self.region.as_ptr().add(l.entries + i * l.entry_stride);
            (
                &*(e as *const AtomicU32),
                &*(e.add(4) as *const AtomicU32),
                e.add(8),
            )
        }
    }

    fn lpm_data(&self, l: &Layout, i: usize) -> Vec<u8> {
        let (_, _, data) = self.lpm_entry(l, i);
        let n = self.spec.key_size as usize - 4;
        let mut v = vec![0u8; n];
        // SAFETY: the entry's data holds key_size - 4 bytes.
        unsafe { std::ptr::copy_nonoverlapping(data, v.as_mut_ptr(), n) };
        v
    }

    fn lpm_value(&self, l: &Layout, i: usize) -> *mut u8 {
        // SAFETY: i < max_entries: the value lies in the value array.
        unsafe { self.region.as_ptr().add(l.values + i * l.value_stride) }
    }

    /// Splits a key into (prefixlen, data), checking its form.
    fn lpm_key<'k>(&self, op: &'static str, key: &'k [u8]) -> Result<(u32, &'k [u8]), MapError> {
        let data_len = self.spec.key_size as usize - 4;
        if key.len() != self.spec.key_size as usize {
            return Err(self.errno(op, libc::EINVAL));
        }
        let prefixlen = u32::from_le_bytes([key[0], key[1], key[2], key[3]]);
        if prefixlen as usize > data_len * 8 {
            return Err(self.errno(op, libc::EINVAL));
        }
        Ok((prefixlen, &key[4..]))
    }

    /// The entry with exactly this prefix (lock held).
    fn lpm_find_exact(&self, l: &Layout, prefixlen: u32, data: &[u8]) -> Option<usize> {
        (0..self.spec.max_entries as usize).find(|&i| {
            let (used, plen, _) = self.lpm_entry(l, i);
            used.load(Ordering::Relaxed) != 0
                && plen.load(Ordering::Relaxed) == prefixlen
                && prefix_eq(&self.lpm_data(l, i), data, prefixlen)
        })
    }

    pub(super) fn lpm_lookup(&self, key: &[u8]) -> Option<*mut u8> {
        let l = self.lpm()?;
        let (maxlen, data) = self.lpm_key("lookup", key).ok()?;
        let _g = Guard::new(self.word(LOCK));
        let mut best: Option<(u32, usize)> = None;
        for i in 0..self.spec.max_entries as usize {
            let (used, plen, _) = self.lpm_entry(&l, i);
            if used.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let p = plen.load(Ordering::Relaxed);
            if p <= maxlen
                && best.is_none_or(|(b, _)| p > b)
                && prefix_eq(&self.lpm_data(&l, i), data, p)
            {
                best = Some((p, i));
            }
        }
        best.map(|(_, i)| self.lpm_value(&l, i))
    }

    pub(super) fn lpm_update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        let Some(l) = self.lpm() else {
            return Err(self.errno("update", libc::EINVAL));
        };
        let (prefixlen, data) = self.lpm_key("update", key)?;
        let _g = Guard::new(self.word(LOCK));
        let slot = match (self.lpm_find_exact(&l, prefixlen, data), flags) {
            (Some(_), BPF_NOEXIST) => return Err(self.errno("update", libc::EEXIST)),
            (Some(i), _) => i,
            (None, BPF_EXIST) => return Err(self.errno("update", libc::ENOENT)),
            (None, _) => {
                let Some(i) = (0..self.spec.max_entries as usize)
                    .find(|&i| self.lpm_entry(&l, i).0.load(Ordering::Relaxed) == 0)
                else {
                    return Err(self.errno("update", libc::ENOSPC));
                };
                let (used, plen, d) = self.lpm_entry(&l, i);
                // Store the prefix with the bits past it cleared, as the
                // kernel's trie does.
                let mut masked = data.to_vec();
                for (b, byte) in masked.iter_mut().enumerate() {
                    let keep = prefixlen.saturating_sub(b as u32 * 8).min(8);
                    *byte &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
                }
                // SAFETY: the entry's data holds key_size - 4 bytes.
                unsafe { std::ptr::copy_nonoverlapping(masked.as_ptr(), d, masked.len()) };
                plen.store(prefixlen, Ordering::Relaxed);
                used.store(1, Ordering::Release);
                i
            }
        };
        // SAFETY: the value slot holds value_size bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(value.as_ptr(), self.lpm_value(&l, slot), value.len())
        };
        Ok(())
    }

    pub(super) fn lpm_delete(&self, key: &[u8]) -> Result<(), MapError> {
        let Some(l) = self.lpm() else {
            return Err(self.errno("delete", libc::EINVAL));
        };
        let (prefixlen, data) = self.lpm_key("delete", key)?;
        let _g = Guard::new(self.word(LOCK));
        match self.lpm_find_exact(&l, prefixlen, data) {
            Some(i) => {
                self.lpm_entry(&l, i).0.store(0, Ordering::Release);
                Ok(())
            }
            None => Err(self.errno("delete", libc::ENOENT)),
        }
    }

    pub(super) fn lpm_keys(&self) -> Vec<Vec<u8>> {
        let Some(l) = self.lpm() else {
            return Vec::new();
        };
        let _g = Guard::new(self.word(LOCK));
        (0..self.spec.max_entries as usize)
            .filter(|&i| self.lpm_entry(&l, i).0.load(Ordering::Relaxed) != 0)
            .map(|i| {
                let mut k = self
                    .lpm_entry(&l, i)
                    .1
                    .load(Ordering::Relaxed)
                    .to_le_bytes()
                    .to_vec();
                k.extend_from_slice(&self.lpm_data(&l, i));
                k
            })
            .collect()
    }
}
