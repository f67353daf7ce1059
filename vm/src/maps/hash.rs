//! `BPF_MAP_TYPE_HASH`, preallocated: buckets with robust locks, an element
//! pool with a free list, keys and values in separate arrays so programs
//! only ever see values.

use std::sync::atomic::{AtomicU32, Ordering};

use super::lock::Guard;
use super::{round8, Header, Map, MapError, MapSpec, BPF_EXIST, BPF_NOEXIST, HEADER_SIZE};

#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub(super) n_buckets: usize,
    buckets: usize,
    meta: usize,
    keys: usize,
    key_stride: usize,
    pub(super) values: usize,
    pub(super) value_stride: usize,
    pub(super) size: usize,
}

#[repr(C)]
struct Bucket {
    lock: AtomicU32,
    /// Element index + 1; 0 = empty.
    head: AtomicU32,
}

#[repr(C)]
struct Meta {
    /// Next element index + 1 in the bucket or free list; 0 = end.
    next: AtomicU32,
    hash: AtomicU32,
}

impl Layout {
    pub(super) fn new(spec: &MapSpec) -> Layout {
        let max = spec.max_entries as usize;
        let n_buckets = max.next_power_of_two().max(1);
        let buckets = HEADER_SIZE;
        let meta = buckets.saturating_add(n_buckets.saturating_mul(8));
        let key_stride = round8(spec.key_size);
        let keys = meta.saturating_add(max.saturating_mul(8));
        let values = keys.saturating_add(max.saturating_mul(key_stride));
        let value_stride = round8(spec.value_size);
        let size = values.saturating_add(max.saturating_mul(value_stride));
        Layout {
            n_buckets,
            buckets,
            meta,
            keys,
            key_stride,
            values,
            value_stride,
            size,
        }
    }
}

fn hash(key: &[u8], seed: u32) -> u32 {
    let mut h = u64::from(seed) ^ 0xcbf2_9ce4_8422_2325;
    for chunk in key.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    h ^= h >> 32;
    h as u32
}

impl Map {
    fn bucket(&self, l: &Layout, i: usize) -> &Bucket {
        // SAFETY: i < n_buckets: the bucket lies inside the region, 8-aligned.
        unsafe {
            &*(self
                .region
                .as_ptr()
                .add(l.buckets + (i & (l.n_buckets - 1)) * 8) as *const Bucket)
        }
    }

    /// Element metadata; `None` for an index out of range (corrupt links).
    fn meta(&self, l: &Layout, idx: usize) -> Option<&Meta> {
        if idx >= self.spec.max_entries as usize {
            return None;
        }
        // SAFETY: idx < max_entries: the entry lies inside the region.
        Some(unsafe { &*(self.region.as_ptr().add(l.meta + idx * 8) as *const Meta) })
    }

    fn key_ptr(&self, l: &Layout, idx: usize) -> *mut u8 {
        // SAFETY: callers pass idx < max_entries (checked through `meta`).
        unsafe { self.region.as_ptr().add(l.keys + idx * l.key_stride) }
    }

    fn value_ptr_h(&self, l: &Layout, idx: usize) -> *mut u8 {
        // SAFETY: callers pass idx < max_entries (checked through `meta`).
        unsafe { self.region.as_ptr().add(l.values + idx * l.value_stride) }
    }

    fn key_eq(&self, l: &Layout, idx: usize, key: &[u8]) -> bool {
        // SAFETY: the key slot holds key_size bytes inside the region.
        let stored = unsafe { std::slice::from_raw_parts(self.key_ptr(l, idx), key.len()) };
        stored == key
    }

    /// Finds `key` in its bucket (lock held): (previous element, element).
    fn find(&self, l: &Layout, b: &Bucket, h: u32, key: &[u8]) -> Option<(Option<usize>, usize)> {
        let mut prev = None;
        let mut cur = b.head.load(Ordering::Acquire);
        let mut steps = 0u32;
        while cur != 0 && steps <= self.spec.max_entries {
            let idx = (cur - 1) as usize;
            let m = self.meta(l, idx)?;
            if m.hash.load(Ordering::Relaxed) == h && self.key_eq(l, idx, key) {
                return Some((prev, idx));
            }
            prev = Some(idx);
            cur = m.next.load(Ordering::Acquire);
            steps += 1;
        }
        None
    }

    fn pop_free(&self, l: &Layout) -> Option<usize> {
        let h: &Header = self.header();
        let _g = Guard::new(&h.free_lock);
        let head = h.free_head.load(Ordering::Acquire);
        if head == 0 {
            return None;
        }
        let idx = (head - 1) as usize;
        let m = self.meta(l, idx)?;
        h.free_head
            .store(m.next.load(Ordering::Relaxed), Ordering::Release);
        Some(idx)
    }

    fn push_free(&self, l: &Layout, idx: usize) {
        let h: &Header = self.header();
        let _g = Guard::new(&h.free_lock);
        if let Some(m) = self.meta(l, idx) {
            m.next
                .store(h.free_head.load(Ordering::Relaxed), Ordering::Relaxed);
            h.free_head.store(idx as u32 + 1, Ordering::Release);
        }
    }
}

pub(super) fn init(map: &Map, l: &Layout) {
    let max = map.spec.max_entries as usize;
    for i in 0..max {
        if let Some(m) = map.meta(l, i) {
            let next = if i + 1 < max { i as u32 + 2 } else { 0 };
            m.next.store(next, Ordering::Relaxed);
        }
    }
    let h: &Header = map.header();
    h.free_head
        .store(if max > 0 { 1 } else { 0 }, Ordering::Release);
}

pub(super) fn lookup(map: &Map, l: &Layout, key: &[u8]) -> Option<*mut u8> {
    let h = hash(key, map.header().seed);
    let b = map.bucket(l, h as usize);
    let _g = Guard::new(&b.lock);
    map.find(l, b, h, key)
        .map(|(_, idx)| map.value_ptr_h(l, idx))
}

pub(super) fn update(
    map: &Map,
    l: &Layout,
    key: &[u8],
    value: &[u8],
    flags: u64,
) -> Result<(), MapError> {
    let h = hash(key, map.header().seed);
    let b = map.bucket(l, h as usize);
    let _g = Guard::new(&b.lock);
    match (map.find(l, b, h, key), flags) {
        (Some(_), BPF_NOEXIST) => Err(map.errno("update", libc::EEXIST)),
        (Some((_, idx)), _) => {
            // SAFETY: the value slot holds value_size bytes in the region.
            unsafe {
                std::ptr::copy_nonoverlapping(value.as_ptr(), map.value_ptr_h(l, idx), value.len())
            };
            Ok(())
        }
        (None, BPF_EXIST) => Err(map.errno("update", libc::ENOENT)),
        (None, _) => {
            let idx = map
                .pop_free(l)
                .ok_or_else(|| map.errno("update", libc::E2BIG))?;
            // SAFETY: idx < max_entries (from the free list, bounds-checked):
            // key and value slots lie in the region.
            unsafe {
                std::ptr::copy_nonoverlapping(key.as_ptr(), map.key_ptr(l, idx), key.len());
                std::ptr::copy_nonoverlapping(value.as_ptr(), map.value_ptr_h(l, idx), value.len());
            }
            let Some(m) = map.meta(l, idx) else {
                return Err(map.errno("update", libc::EINVAL));
            };
            m.hash.store(h, Ordering::Relaxed);
            m.next
                .store(b.head.load(Ordering::Relaxed), Ordering::Relaxed);
            b.head.store(idx as u32 + 1, Ordering::Release);
            map.header().count.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }
}

pub(super) fn delete(map: &Map, l: &Layout, key: &[u8]) -> Result<(), MapError> {
    let h = hash(key, map.header().seed);
    let b = map.bucket(l, h as usize);
    let idx = {
        let _g = Guard::new(&b.lock);
        let Some((prev, idx)) = map.find(l, b, h, key) else {
            return Err(map.errno("delete", libc::ENOENT));
        };
        let next = map
            .meta(l, idx)
            .map(|m| m.next.load(Ordering::Relaxed))
            .unwrap_or(0);
        match prev.and_then(|p| map.meta(l, p)) {
            Some(pm) => pm.next.store(next, Ordering::Release),
            None => b.head.store(next, Ordering::Release),
        }
        map.header().count.fetch_sub(1, Ordering::Relaxed);
        idx
    };
    map.push_free(l, idx);
    Ok(())
}

pub(super) fn keys(map: &Map, l: &Layout) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for bi in 0..l.n_buckets {
        let b = map.bucket(l, bi);
        let _g = Guard::new(&b.lock);
        let mut cur = b.head.load(Ordering::Acquire);
        let mut steps = 0u32;
        while cur != 0 && steps <= map.spec.max_entries {
            let idx = (cur - 1) as usize;
            let Some(m) = map.meta(l, idx) else { break };
            // SAFETY: the key slot holds key_size bytes in the region.
            let k = unsafe {
                std::slice::from_raw_parts(map.key_ptr(l, idx), map.spec.key_size as usize)
            };
            out.push(k.to_vec());
            cur = m.next.load(Ordering::Acquire);
            steps += 1;
        }
    }
    out
}
