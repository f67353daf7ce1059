//! `BPF_MAP_TYPE_QUEUE` (FIFO) and `BPF_MAP_TYPE_STACK` (LIFO): values
//! without keys, pushed, popped and peeked under a robust lock.

use std::sync::atomic::{AtomicU32, Ordering};

use super::lock::Guard;
use super::{round8, Map, MapError, MapSpec, BPF_EXIST, HEADER_SIZE};

/// `BPF_MAP_TYPE_QUEUE`.
pub const BPF_MAP_TYPE_QUEUE: u32 = 22;
/// `BPF_MAP_TYPE_STACK`.
pub const BPF_MAP_TYPE_STACK: u32 = 23;

/// Offsets of the state in the header area.
const LOCK: usize = 128;
const HEAD: usize = 132;
const COUNT: usize = 136;

#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub(super) values: usize,
    pub(super) value_stride: usize,
    pub(super) size: usize,
    lifo: bool,
}

impl Layout {
    pub(super) fn new(spec: &MapSpec) -> Layout {
        let value_stride = round8(spec.value_size);
        Layout {
            values: HEADER_SIZE + 64,
            value_stride,
            size: (HEADER_SIZE + 64)
                .saturating_add(value_stride.saturating_mul(spec.max_entries as usize)),
            lifo: spec.map_type == BPF_MAP_TYPE_STACK,
        }
    }
}

impl Map {
    fn q_layout(&self) -> Option<Layout> {
        match self.layout {
            super::Layout::Queue(l) => Some(l),
            _ => None,
        }
    }

    pub(super) fn word(&self, off: usize) -> &AtomicU32 {
        // SAFETY: the offsets are aligned fields of the header area.
        unsafe { &*(self.region.as_ptr().add(off) as *const AtomicU32) }
    }

    fn slot(&self, l: &Layout, i: u32) -> *mut u8 {
        let i = (i % self.spec.max_entries) as usize;
        // SAFETY: i < max_entries: the slot lies in the region.
        unsafe { self.region.as_ptr().add(l.values + i * l.value_stride) }
    }

    /// `bpf_map_push_elem`: `BPF_EXIST` makes room by dropping the oldest
    /// value when full; otherwise a full map gives `-E2BIG`.
    pub fn push(&self, value: &[u8], flags: u64) -> Result<(), MapError> {
        let Some(l) = self.q_layout() else {
            return Err(self.errno("push", libc::EINVAL));
        };
        if value.len() != self.spec.value_size as usize || (flags != 0 && flags != BPF_EXIST) {
            return Err(self.errno("push", libc::EINVAL));
        }
        let _g = Guard::new(self.word(LOCK));
        let max = self.spec.max_entries;
        let mut head = self.word(HEAD).load(Ordering::Relaxed) % max;
        let mut count = self.word(COUNT).load(Ordering::Relaxed).min(max);
        if count == max {
            if flags != BPF_EXIST {
                return Err(self.errno("push", libc::E2BIG));
            }
            // Drop the oldest value (the front of a queue, the bottom of a
            // stack), as the kernel does.
            head = (head + 1) % max;
            count -= 1;
        }
        let at = head + count;
        // SAFETY: the slot holds value_size bytes in the region.
        unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), self.slot(&l, at), value.len()) };
        self.word(HEAD).store(head, Ordering::Relaxed);
        self.word(COUNT).store(count + 1, Ordering::Relaxed);
        Ok(())
    }

    /// `bpf_map_pop_elem` (`delete`: true) and `bpf_map_peek_elem`: the
    /// front of a queue, the top of a stack; `-ENOENT` when empty.
    pub fn pop(&self, delete: bool) -> Result<Vec<u8>, MapError> {
        let Some(l) = self.q_layout() else {
            return Err(self.errno("pop", libc::EINVAL));
        };
        let _g = Guard::new(self.word(LOCK));
        let max = self.spec.max_entries;
        let head = self.word(HEAD).load(Ordering::Relaxed) % max;
        let count = self.word(COUNT).load(Ordering::Relaxed).min(max);
        if count == 0 {
            return Err(self.errno("pop", libc::ENOENT));
        }
        let at = if l.lifo { head + count - 1 } else { head };
        let mut v = vec![0u8; self.spec.value_size as usize];
        // SAFETY: the slot holds value_size bytes in the region.
        unsafe { std::ptr::copy_nonoverlapping(self.slot(&l, at), v.as_mut_ptr(), v.len()) };
        if delete {
            if !l.lifo {
                self.word(HEAD).store((head + 1) % max, Ordering::Relaxed);
            }
            self.word(COUNT).store(count - 1, Ordering::Relaxed);
        }
        Ok(v)
    }
}
