//! `BPF_MAP_TYPE_HASH`, preallocated: buckets with robust locks, an element
//! pool with a free list, keys and values in separate arrays so programs
//! only ever see values.
//!
//! Lookups take no lock: each bucket has a sequence count that writers make
//! odd while they change the bucket, and a lookup retries when the count
//! moved under it (a seqlock). All links are bounds-checked indexes, so a
//! lookup racing a writer can only retry, never leave the region. A count
//! left odd by a writer that died is repaired by the next writer, which
//! takes over the dead writer's lock.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};

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
    /// LRU hash: one "recently used" byte per element, after the values.
    lru: Option<usize>,
    /// Bytes per element's value block (value_stride times the CPU slots).
    pub(super) elem_stride: usize,
    /// Per-CPU hashes: the CPU slots and the lease table's offset.
    pub(super) percpu: Option<(usize, usize)>,
}

/// `BPF_MAP_TYPE_PERCPU_HASH`.
pub const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
/// `BPF_MAP_TYPE_LRU_PERCPU_HASH`.
pub const BPF_MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;

/// `BPF_MAP_TYPE_LRU_HASH`.
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// Offset in the header page of the LRU clock hand.
const CLOCK_HAND: usize = 64;

#[repr(C)]
struct Bucket {
    lock: AtomicU32,
    /// Element index + 1; 0 = empty.
    head: AtomicU32,
    /// Seqlock count: odd while a writer changes the bucket.
    seq: AtomicU32,
    _pad: u32,
}

const BUCKET_SIZE: usize = 16;

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
        let percpu = matches!(
            spec.map_type,
            BPF_MAP_TYPE_PERCPU_HASH | BPF_MAP_TYPE_LRU_PERCPU_HASH
        )
        .then(|| (super::percpu::ncpus(), HEADER_SIZE));
        let buckets = match percpu {
            Some((cpus, leases)) => leases + (4 * cpus).div_ceil(64) * 64,
            None => HEADER_SIZE,
        };
        let meta = buckets.saturating_add(n_buckets.saturating_mul(BUCKET_SIZE));
        let key_stride = round8(spec.key_size);
        let keys = meta.saturating_add(max.saturating_mul(8));
        let values = keys.saturating_add(max.saturating_mul(key_stride));
        let value_stride = round8(spec.value_size);
        let elem_stride = value_stride.saturating_mul(percpu.map(|p| p.0).unwrap_or(1));
        let mut size = values.saturating_add(max.saturating_mul(elem_stride));
        let lru = matches!(
            spec.map_type,
            BPF_MAP_TYPE_LRU_HASH | BPF_MAP_TYPE_LRU_PERCPU_HASH
        )
        .then(|| {
            let at = size;
            size = size.saturating_add(max);
            at
        });
        Layout {
            n_buckets,
            buckets,
            meta,
            keys,
            key_stride,
            values,
            value_stride,
            size,
            lru,
            elem_stride,
            percpu,
        }
    }
}

fn hash(key: &[u8], seed: u32) -> u32 {
    #[inline(always)]
    fn mix(h: u64, w: u64) -> u64 {
        let h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        h ^ (h >> 29)
    }
    let mut h = u64::from(seed) ^ 0xcbf2_9ce4_8422_2325;
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        h = mix(
            h,
            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
        );
    }
    // The tail as whole loads of its own width (no partial-word reads).
    let tail = chunks.remainder();
    let w = match tail.len() {
        0 => None,
        4 => Some(u64::from(u32::from_le_bytes([
            tail[0], tail[1], tail[2], tail[3],
        ]))),
        2 => Some(u64::from(u16::from_le_bytes([tail[0], tail[1]]))),
        _ => Some(
            tail.iter()
                .rev()
                .fold(0u64, |a, &b| (a << 8) | u64::from(b)),
        ),
    };
    if let Some(w) = w {
        h = mix(h, w | ((tail.len() as u64) << 56));
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
                .add(l.buckets + (i & (l.n_buckets - 1)) * BUCKET_SIZE)
                as *const Bucket)
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
        unsafe { self.region.as_ptr().add(l.values + idx * l.elem_stride) }
    }

    /// This run's CPU slot of a per-CPU hash (leased for the run), else 0.
    fn cpu_slot(&self, l: &Layout) -> usize {
        match l.percpu {
            Some((cpus, leases)) => {
                // SAFETY: the lease table lies in the header area.
                let table = unsafe { self.region.as_ptr().add(leases) } as *const AtomicU32;
                super::percpu::slot(table, cpus)
            }
            None => 0,
        }
    }

    /// A program's pointer into element `idx`: its CPU slot.
    fn program_value(&self, l: &Layout, idx: usize) -> *mut u8 {
        let s = self.cpu_slot(l);
        // SAFETY: s < CPU slots: inside the element's block.
        unsafe { self.value_ptr_h(l, idx).add(s * l.value_stride) }
    }

    /// Compares a stored key with atomic loads: a writer may be changing it
    /// (the seqlock then makes the lookup retry).
    fn key_eq(&self, l: &Layout, idx: usize, key: &[u8]) -> bool {
        let base = self.key_ptr(l, idx);
        let mut chunks = key.chunks_exact(8);
        for (i, c) in (&mut chunks).enumerate() {
            // SAFETY: key slots are 8-aligned, key_stride >= key_size, so
            // the word lies inside the slot.
            let w = unsafe { AtomicU64::from_ptr(base.add(i * 8).cast()) }.load(Ordering::Relaxed);
            if w.to_le_bytes() != c {
                return false;
            }
        }
        let mut at = key.len() - chunks.remainder().len();
        let mut rest = chunks.remainder();
        if rest.len() >= 4 {
            // SAFETY: 4-aligned (after whole 8-byte words), inside the slot.
            let v = unsafe { AtomicU32::from_ptr(base.add(at).cast()) }.load(Ordering::Relaxed);
            if v.to_le_bytes() != rest[..4] {
                return false;
            }
            at += 4;
            rest = &rest[4..];
        }
        for (i, &b) in rest.iter().enumerate() {
            // SAFETY: the byte lies inside the key slot.
            let v = unsafe { AtomicU8::from_ptr(base.add(at + i)) }.load(Ordering::Relaxed);
            if v != b {
                return false;
            }
        }
        true
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

    fn recent(&self, l: &Layout, idx: usize) -> Option<&AtomicU8> {
        let base = l.lru?;
        if idx >= self.spec.max_entries as usize {
            return None;
        }
        // SAFETY: idx < max_entries: the byte lies in the LRU area.
        Some(unsafe { AtomicU8::from_ptr(self.region.as_ptr().add(base + idx)) })
    }

    /// Marks an LRU element as recently used.
    fn touch(&self, l: &Layout, idx: usize) {
        if let Some(r) = self.recent(l, idx) {
            if r.load(Ordering::Relaxed) == 0 {
                r.store(1, Ordering::Relaxed);
            }
        }
    }

    /// LRU: frees an element that was not used recently (a CLOCK sweep),
    /// unlinking it from its bucket. `held` is the bucket whose lock the
    /// caller holds; other buckets are only try-locked, so two inserting
    /// threads never wait on each other.
    fn evict(&self, l: &Layout, held: &Bucket) -> Option<usize> {
        l.lru?;
        // SAFETY: the clock hand is an aligned field of the header page.
        let hand = unsafe { &*(self.region.as_ptr().add(CLOCK_HAND) as *const AtomicU32) };
        let max = self.spec.max_entries;
        for _ in 0..max.saturating_mul(4) {
            let idx = (hand.fetch_add(1, Ordering::Relaxed) % max) as usize;
            let r = self.recent(l, idx)?;
            if r.swap(0, Ordering::Relaxed) != 0 {
                continue;
            }
            let h = self.meta(l, idx)?.hash.load(Ordering::Relaxed);
            let b = self.bucket(l, h as usize);
            let own = std::ptr::eq(b, held);
            if !own
                && b.lock
                    .compare_exchange(
                        0,
                        super::lock::current_tid(),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_err()
            {
                continue;
            }
            let unlinked = self.unlink(l, b, idx);
            if !own {
                super::lock::unlock(&b.lock);
            }
            if unlinked {
                self.header().count.fetch_sub(1, Ordering::Relaxed);
                return Some(idx);
            }
        }
        None
    }

    /// Removes element `idx` from bucket `b` (lock held); false if absent.
    fn unlink(&self, l: &Layout, b: &Bucket, idx: usize) -> bool {
        let mut prev: Option<usize> = None;
        let mut cur = b.head.load(Ordering::Acquire);
        let mut steps = 0u32;
        while cur != 0 && steps <= self.spec.max_entries {
            let i = (cur - 1) as usize;
            let Some(m) = self.meta(l, i) else {
                return false;
            };
            let next = m.next.load(Ordering::Relaxed);
            if i == idx {
                write_begin(b);
                match prev.and_then(|p| self.meta(l, p)) {
                    Some(pm) => pm.next.store(next, Ordering::Release),
                    None => b.head.store(next, Ordering::Release),
                }
                write_end(b);
                return true;
            }
            prev = Some(i);
            cur = next;
            steps += 1;
        }
        false
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

/// Marks the start of a change to bucket `b` (its lock is held): the count
/// becomes odd. A count already odd was left by a writer that died.
fn write_begin(b: &Bucket) {
    let s = b.seq.load(Ordering::Relaxed);
    b.seq.store(s | 1, Ordering::Relaxed);
    fence(Ordering::Release);
}

/// Marks the end of a change: the count becomes even again.
fn write_end(b: &Bucket) {
    let s = b.seq.load(Ordering::Relaxed);
    b.seq.store((s | 1).wrapping_add(1), Ordering::Release);
}

pub(super) fn lookup(map: &Map, l: &Layout, key: &[u8]) -> Option<*mut u8> {
    lookup_with(map, l, key, |idx| map.program_value(l, idx))
}

/// A pointer to the value of `key` in CPU slot `cpu` of a per-CPU hash
/// (`bpf_map_lookup_percpu_elem`; `None` past the slots).
pub(super) fn lookup_on_cpu(map: &Map, l: &Layout, key: &[u8], cpu: usize) -> Option<*mut u8> {
    let (cpus, _) = l.percpu?;
    if cpu >= cpus {
        return None;
    }
    // SAFETY: cpu < CPU slots: inside the element's block.
    lookup_with(map, l, key, |idx| unsafe {
        map.value_ptr_h(l, idx).add(cpu * l.value_stride)
    })
}

/// A lookup (lock-free while no writer is in the bucket) that returns
/// `value(idx)` of the element found.
#[inline(always)]
fn lookup_with(
    map: &Map,
    l: &Layout,
    key: &[u8],
    value: impl Fn(usize) -> *mut u8,
) -> Option<*mut u8> {
    let h = hash(key, map.header().seed);
    let b = map.bucket(l, h as usize);
    for _ in 0..8 {
        let s1 = b.seq.load(Ordering::Acquire);
        if s1 & 1 != 0 {
            std::hint::spin_loop();
            continue;
        }
        let found = map.find(l, b, h, key).map(|(_, idx)| idx);
        fence(Ordering::Acquire);
        if b.seq.load(Ordering::Relaxed) == s1 {
            return found.map(|idx| {
                map.touch(l, idx);
                value(idx)
            });
        }
    }
    // Contended (or a writer died mid-change): look up under the lock, which
    // also repairs a count left odd.
    let _g = Guard::new(&b.lock);
    if b.seq.load(Ordering::Relaxed) & 1 != 0 {
        write_end(b);
    }
    map.find(l, b, h, key).map(|(_, idx)| value(idx))
}

/// A copy of the value of `key` for user space: every CPU slot of a
/// per-CPU hash.
pub(super) fn lookup_all(map: &Map, l: &Layout, key: &[u8]) -> Option<Vec<u8>> {
    let h = hash(key, map.header().seed);
    let b = map.bucket(l, h as usize);
    let _g = Guard::new(&b.lock);
    let (_, idx) = map.find(l, b, h, key)?;
    let len = if l.percpu.is_some() {
        l.elem_stride
    } else {
        map.spec.value_size as usize
    };
    let mut v = vec![0u8; len];
    // SAFETY: the element's block holds at least `len` bytes.
    unsafe { std::ptr::copy_nonoverlapping(map.value_ptr_h(l, idx), v.as_mut_ptr(), len) };
    Some(v)
}

/// Updates `key`. `from_program`: `value` is one CPU's value of a per-CPU
/// hash (the run's slot); otherwise it is the whole value (every CPU's).
pub(super) fn update(
    map: &Map,
    l: &Layout,
    key: &[u8],
    value: &[u8],
    flags: u64,
    from_program: bool,
) -> Result<(), MapError> {
    let slot = (from_program && l.percpu.is_some()).then(|| map.cpu_slot(l));
    let h = hash(key, map.header().seed);
    let b = map.bucket(l, h as usize);
    let _g = Guard::new(&b.lock);
    write_begin(b);
    let r = update_locked(map, l, b, h, key, value, flags, slot);
    write_end(b);
    r
}

#[allow(clippy::too_many_arguments)]
fn update_locked(
    map: &Map,
    l: &Layout,
    b: &Bucket,
    h: u32,
    key: &[u8],
    value: &[u8],
    flags: u64,
    slot: Option<usize>,
) -> Result<(), MapError> {
    // Where `value` goes in an element's block.
    let write = |idx: usize| {
        let block = map.value_ptr_h(l, idx);
        let at = slot.map(|s| s * l.value_stride).unwrap_or(0);
        // SAFETY: `at + value.len()` stays inside the element's block.
        unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), block.add(at), value.len()) };
    };
    match (map.find(l, b, h, key), flags) {
        (Some(_), BPF_NOEXIST) => Err(map.errno("update", libc::EEXIST)),
        (Some((_, idx)), _) => {
            write(idx);
            Ok(())
        }
        (None, BPF_EXIST) => Err(map.errno("update", libc::ENOENT)),
        (None, _) => {
            let idx = map
                .pop_free(l)
                .or_else(|| map.evict(l, b))
                .ok_or_else(|| map.errno("update", libc::E2BIG))?;
            // SAFETY: idx < max_entries (from the free list, bounds-checked):
            // key and value slots lie in the region.
            unsafe {
                std::ptr::copy_nonoverlapping(key.as_ptr(), map.key_ptr(l, idx), key.len());
                // A new element starts with every CPU's value zeroed.
                std::ptr::write_bytes(map.value_ptr_h(l, idx), 0, l.elem_stride);
            }
            write(idx);
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
        write_begin(b);
        let next = map
            .meta(l, idx)
            .map(|m| m.next.load(Ordering::Relaxed))
            .unwrap_or(0);
        match prev.and_then(|p| map.meta(l, p)) {
            Some(pm) => pm.next.store(next, Ordering::Release),
            None => b.head.store(next, Ordering::Release),
        }
        map.header().count.fetch_sub(1, Ordering::Relaxed);
        write_end(b);
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
