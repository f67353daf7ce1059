//! `BPF_MAP_TYPE_STACK_TRACE`: stack ids to stack traces, filled by
//! `bpf_get_stackid` (27) and read from user space. As in the kernel, the
//! id is the trace's hash masked to `roundup_pow_of_two(max_entries)`
//! buckets; a different trace in an occupied bucket is `-EEXIST` unless
//! `BPF_F_REUSE_STACKID`. Each bucket has a robust lock, so concurrent
//! writers in several processes never tear a trace.

use std::sync::atomic::AtomicU32;

use super::lock::Guard;
use super::{round8, Map, MapSpec, HEADER_SIZE};
use crate::stack::{BPF_F_FAST_STACK_CMP, BPF_F_REUSE_STACKID, BPF_STACK_BUILD_ID_IP};

/// `BPF_MAP_TYPE_STACK_TRACE`.
pub const BPF_MAP_TYPE_STACK_TRACE: u32 = 7;
/// `BPF_F_STACK_BUILD_ID`: values are `struct bpf_stack_build_id` entries.
pub const BPF_F_STACK_BUILD_ID: u32 = 1 << 5;

/// Bucket header: lock (u32), number of frames (u32, 0 = empty), hash (u64).
const BUCKET_HEADER: usize = 16;

#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    n_buckets: usize,
    buckets: usize,
    stride: usize,
    pub(super) size: usize,
}

impl Layout {
    pub(super) fn new(spec: &MapSpec) -> Layout {
        let n_buckets = (spec.max_entries as usize).max(1).next_power_of_two();
        let stride = BUCKET_HEADER + round8(spec.value_size);
        Layout {
            n_buckets,
            buckets: HEADER_SIZE,
            stride,
            size: HEADER_SIZE.saturating_add(stride.saturating_mul(n_buckets)),
        }
    }
}

/// Bytes per frame in the map's values.
fn elem_size(spec: &MapSpec) -> usize {
    if spec.flags & BPF_F_STACK_BUILD_ID != 0 {
        crate::stack::BPF_STACK_BUILD_ID_SIZE
    } else {
        8
    }
}

/// Whether `spec` is a valid stack trace map (`-EINVAL` otherwise).
pub(super) fn valid(spec: &MapSpec) -> bool {
    let elem = elem_size(spec);
    spec.key_size == 4
        && (spec.value_size as usize).is_multiple_of(elem)
        && spec.value_size as usize / elem <= crate::stack::PERF_MAX_STACK_DEPTH
}

fn fnv(ips: &[u64]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for ip in ips {
        for b in ip.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

struct Bucket {
    ptr: *mut u8,
    value_len: usize,
}

impl Bucket {
    fn lock(&self) -> &AtomicU32 {
        // SAFETY: the bucket header starts with an aligned u32 lock word.
        unsafe { &*(self.ptr as *const AtomicU32) }
    }
    /// Reads or writes the bucket's fields; the caller holds the lock.
    fn nr(&self) -> u32 {
        // SAFETY: bytes 4..8 of the bucket, read under its lock.
        unsafe { (self.ptr.add(4) as *const u32).read() }
    }
    fn hash(&self) -> u64 {
        // SAFETY: bytes 8..16 of the bucket, read under its lock.
        unsafe { (self.ptr.add(8) as *const u64).read() }
    }
    fn value(&self) -> &[u8] {
        // SAFETY: the value follows the header inside the bucket's stride;
        // only accessed under the bucket's lock.
        unsafe { std::slice::from_raw_parts(self.ptr.add(BUCKET_HEADER), self.value_len) }
    }
    fn set_value(&self, data: &[u8]) {
        let n = data.len().min(self.value_len);
        // SAFETY: at most value_len bytes after the header, inside the
        // bucket's stride; written under the bucket's lock.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(BUCKET_HEADER), n) };
    }
    fn set(&self, nr: u32, hash: u64) {
        // SAFETY: header fields of the bucket, written under its lock.
        unsafe {
            (self.ptr.add(4) as *mut u32).write(nr);
            (self.ptr.add(8) as *mut u64).write(hash);
        }
    }
}

impl Map {
    fn stack_layout(&self) -> Option<Layout> {
        match self.layout {
            super::Layout::Stack(l) => Some(l),
            _ => None,
        }
    }

    fn stack_bucket(&self, l: &Layout, id: usize) -> Option<Bucket> {
        if id >= l.n_buckets {
            return None;
        }
        Some(Bucket {
            // SAFETY: id < n_buckets: the bucket lies in the region.
            ptr: unsafe { self.region.as_ptr().add(l.buckets + id * l.stride) },
            value_len: self.spec.value_size as usize,
        })
    }

    /// The trace stored under stack id `key`, zero-padded to `value_size`.
    pub(super) fn stack_lookup(&self, key: &[u8]) -> Option<Vec<u8>> {
        let l = self.stack_layout()?;
        let id = u32::from_le_bytes(key.try_into().ok()?) as usize;
        let b = self.stack_bucket(&l, id)?;
        let _g = Guard::new(b.lock());
        (b.nr() != 0).then(|| b.value().to_vec())
    }

    /// Frees stack id `key` (`-ENOENT` if empty).
    pub(super) fn stack_delete(&self, key: &[u8]) -> Result<(), i32> {
        let l = self.stack_layout().ok_or(libc::EINVAL)?;
        let id = u32::from_le_bytes(key.try_into().map_err(|_| libc::EINVAL)?) as usize;
        let b = self.stack_bucket(&l, id).ok_or(libc::ENOENT)?;
        let _g = Guard::new(b.lock());
        if b.nr() == 0 {
            return Err(libc::ENOENT);
        }
        b.set(0, 0);
        b.set_value(&vec![0u8; b.value_len]);
        Ok(())
    }

    /// The stack ids in use.
    pub(super) fn stack_keys(&self) -> Vec<Vec<u8>> {
        let Some(l) = self.stack_layout() else {
            return Vec::new();
        };
        (0..l.n_buckets)
            .filter(|&id| {
                self.stack_bucket(&l, id).is_some_and(|b| {
                    let _g = Guard::new(b.lock());
                    b.nr() != 0
                })
            })
            .map(|id| (id as u32).to_le_bytes().to_vec())
            .collect()
    }

    /// Most frames a value holds.
    pub fn stack_depth(&self) -> usize {
        self.spec.value_size as usize / elem_size(&self.spec)
    }

    /// `bpf_get_stackid`: stores `ips` (already skipped and truncated to
    /// [`Map::stack_depth`]) and returns its id, or `-errno`.
    pub fn stack_store(&self, ips: &[u64], flags: u64) -> Result<u32, i32> {
        let l = self.stack_layout().ok_or(libc::EINVAL)?;
        if ips.is_empty() {
            return Err(libc::EFAULT);
        }
        let hash = fnv(ips);
        let id = (hash as usize) & (l.n_buckets - 1);
        let b = self.stack_bucket(&l, id).ok_or(libc::EFAULT)?;
        let elem = elem_size(&self.spec);
        let mut encoded = vec![0u8; self.spec.value_size as usize];
        for (slot, ip) in encoded.chunks_exact_mut(elem).zip(ips) {
            if elem == 8 {
                slot.copy_from_slice(&ip.to_le_bytes());
            } else {
                slot[..4].copy_from_slice(&BPF_STACK_BUILD_ID_IP.to_le_bytes());
                slot[24..32].copy_from_slice(&ip.to_le_bytes());
            }
        }
        let nr = u32::try_from(ips.len()).map_err(|_| libc::EINVAL)?;
        let _g = Guard::new(b.lock());
        if b.nr() != 0 {
            let same = b.hash() == hash
                && (flags & BPF_F_FAST_STACK_CMP != 0
                    || (b.nr() == nr && b.value()[..] == encoded[..]));
            if same {
                return Ok(id as u32);
            }
            if flags & BPF_F_REUSE_STACKID == 0 {
                return Err(libc::EEXIST);
            }
        }
        b.set_value(&encoded);
        b.set(nr, hash);
        Ok(id as u32)
    }
}
