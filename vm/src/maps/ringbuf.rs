//! `BPF_MAP_TYPE_RINGBUF` in the kernel's wire format: 8-byte record
//! headers (`len` with the BUSY and DISCARD bits, then a 32-bit word),
//! records 8-byte aligned, a consumer position and a producer position, the
//! data area mapped twice so records that wrap stay contiguous.
//!
//! Region layout: page 0 userbpf's header (with the producer lock and the
//! dropped-record counter), page 1 the consumer position, page 2 the
//! producer position, then `max_entries` bytes of data (and their mirror).
//! While a record is reserved, its header's second word holds the
//! producer's thread id: a consumer that finds a reservation of a thread
//! that no longer exists discards it instead of waiting forever.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::lock::Guard;
use super::{Map, MapSpec};

/// `BPF_MAP_TYPE_RINGBUF`.
pub const BPF_MAP_TYPE_RINGBUF: u32 = 27;
/// `BPF_RINGBUF_BUSY_BIT`.
pub const BUSY: u32 = 1 << 31;
/// `BPF_RINGBUF_DISCARD_BIT`.
pub const DISCARD: u32 = 1 << 30;
/// `BPF_RINGBUF_HDR_SZ`.
pub const HDR: usize = 8;
/// `BPF_RB_AVAIL_DATA`.
pub const BPF_RB_AVAIL_DATA: u64 = 0;
/// `BPF_RB_RING_SIZE`.
pub const BPF_RB_RING_SIZE: u64 = 1;
/// `BPF_RB_CONS_POS`.
pub const BPF_RB_CONS_POS: u64 = 2;
/// `BPF_RB_PROD_POS`.
pub const BPF_RB_PROD_POS: u64 = 3;

const PAGE: usize = 4096;
/// Offsets in page 0, after the common header.
const PROD_LOCK: usize = 128;
const DROPPED: usize = 136;
/// The consumer position as producers last read it (under the producer
/// lock): re-read only when the ring looks full, so producers do not pull
/// the consumer's cache line on every record.
const CACHED_CONS: usize = 144;

#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub(super) data: usize,
    pub(super) size: usize,
}

impl Layout {
    pub(super) fn new(spec: &MapSpec) -> Layout {
        let data = 3 * PAGE;
        Layout {
            data,
            size: data.saturating_add(spec.max_entries as usize),
        }
    }

    /// Where the mirror starts.
    pub(super) fn mirror_from(&self) -> usize {
        self.data
    }
}

/// Whether `max_entries` is a valid ring size (a power of two, a multiple
/// of the page size), as the kernel demands.
pub(super) fn valid_size(spec: &MapSpec) -> bool {
    let n = spec.max_entries as usize;
    n.is_power_of_two() && n.is_multiple_of(PAGE) && spec.key_size == 0 && spec.value_size == 0
}

fn round8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

impl Map {
    fn rb_layout(&self) -> Option<Layout> {
        match self.layout {
            super::Layout::RingBuf(l) => Some(l),
            _ => None,
        }
    }

    fn at<T>(&self, off: usize) -> &T {
        // SAFETY: callers pass offsets of aligned fields inside the mapped
        // region (header page, position pages, record headers).
        unsafe { &*(self.region.as_ptr().add(off) as *const T) }
    }

    fn cons_pos(&self) -> &AtomicU64 {
        self.at(PAGE)
    }

    fn prod_pos(&self) -> &AtomicU64 {
        self.at(2 * PAGE)
    }

    fn ring_mask(&self) -> u64 {
        u64::from(self.spec.max_entries) - 1
    }

    /// Records refused for lack of space (nothing is lost silently).
    pub fn ringbuf_dropped(&self) -> u64 {
        if self.rb_layout().is_none() {
            return 0;
        }
        self.at::<AtomicU64>(DROPPED).load(Ordering::Relaxed)
    }

    /// Reserves `size` bytes (`bpf_ringbuf_reserve`); `None` when the ring
    /// is full (counted as dropped) or `size` cannot fit at all.
    pub fn ringbuf_reserve(&self, size: u64) -> Option<*mut u8> {
        let l = self.rb_layout()?;
        let ring = u64::from(self.spec.max_entries);
        let total = u64::try_from(round8(usize::try_from(size).ok()?.checked_add(HDR)?)).ok()?;
        if size == 0 || size >= u64::from(DISCARD) || total > ring {
            return None;
        }
        let _g = Guard::new(self.at::<AtomicU32>(PROD_LOCK));
        let cached = self.at::<AtomicU64>(CACHED_CONS);
        let prod = self.prod_pos().load(Ordering::Relaxed);
        if prod
            .wrapping_sub(cached.load(Ordering::Relaxed))
            .wrapping_add(total)
            > ring
        {
            let cons = self.cons_pos().load(Ordering::Acquire);
            cached.store(cons, Ordering::Relaxed);
            if prod.wrapping_sub(cons).wrapping_add(total) > ring {
                self.at::<AtomicU64>(DROPPED)
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        let hdr = l.data + (prod & self.ring_mask()) as usize;
        let tid = super::lock::current_tid();
        self.at::<AtomicU32>(hdr + 4).store(tid, Ordering::Relaxed);
        self.at::<AtomicU32>(hdr)
            .store(size as u32 | BUSY, Ordering::Release);
        self.prod_pos().store(prod + total, Ordering::Release);
        // SAFETY: the record lies in the data area or its mirror.
        Some(unsafe { self.region.as_ptr().add(hdr + HDR) })
    }

    /// Commits (or discards) a record returned by
    /// [`Map::ringbuf_reserve`]; `false` if `ptr` is not a reserved record
    /// of this ring.
    pub fn ringbuf_commit(&self, ptr: u64, discard: bool) -> bool {
        let Some(l) = self.rb_layout() else {
            return false;
        };
        let base = self.region.as_ptr() as u64 + l.data as u64;
        let Some(off) = ptr
            .checked_sub(base)
            .and_then(|o| o.checked_sub(HDR as u64))
        else {
            return false;
        };
        if off >= u64::from(self.spec.max_entries) || off % 8 != 0 {
            return false;
        }
        let w = self.at::<AtomicU32>(l.data + off as usize);
        let cur = w.load(Ordering::Acquire);
        if cur & BUSY == 0 {
            return false;
        }
        let new = (cur & !BUSY) | if discard { DISCARD } else { 0 };
        w.compare_exchange(cur, new, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }

    /// `bpf_ringbuf_output`: copies `data` in as one record.
    pub fn ringbuf_output(&self, data: &[u8]) -> bool {
        match self.ringbuf_reserve(data.len() as u64) {
            Some(p) => {
                // SAFETY: the reservation holds data.len() bytes.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
                self.ringbuf_commit(p as u64, false)
            }
            None => false,
        }
    }

    /// `bpf_ringbuf_query`.
    pub fn ringbuf_query(&self, flags: u64) -> u64 {
        if self.rb_layout().is_none() {
            return 0;
        }
        let cons = self.cons_pos().load(Ordering::Acquire);
        let prod = self.prod_pos().load(Ordering::Acquire);
        match flags {
            BPF_RB_AVAIL_DATA => prod.wrapping_sub(cons),
            BPF_RB_RING_SIZE => u64::from(self.spec.max_entries),
            BPF_RB_CONS_POS => cons,
            BPF_RB_PROD_POS => prod,
            _ => 0,
        }
    }

    /// Consumes every complete record, in order, calling `f` on each
    /// committed one; returns how many were delivered. Stops at a record
    /// still being written, unless its producer is gone (then it is
    /// discarded).
    pub fn ringbuf_consume(&self, mut f: impl FnMut(&[u8])) -> usize {
        let Some(l) = self.rb_layout() else {
            return 0;
        };
        let mut delivered = 0;
        loop {
            let prod = self.prod_pos().load(Ordering::Acquire);
            let mut cons = self.cons_pos().load(Ordering::Relaxed);
            if cons == prod {
                return delivered;
            }
            // Everything up to `prod` in one batch; the consumer position is
            // published once per batch.
            while cons != prod {
                let hdr = l.data + (cons & self.ring_mask()) as usize;
                let word = self.at::<AtomicU32>(hdr);
                let mut len = word.load(Ordering::Acquire);
                if len & BUSY != 0 {
                    let owner = self.at::<AtomicU32>(hdr + 4).load(Ordering::Relaxed);
                    if !producer_alive(owner) {
                        // The producer died holding the reservation: discard it.
                        let _ = word.compare_exchange(
                            len,
                            (len & !BUSY) | DISCARD,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        );
                        len = word.load(Ordering::Acquire);
                    }
                    if len & BUSY != 0 {
                        self.cons_pos().store(cons, Ordering::Release);
                        return delivered;
                    }
                }
                let size = (len & !(BUSY | DISCARD)) as usize;
                if len & DISCARD == 0 {
                    // SAFETY: the record lies in the data area or its mirror.
                    let rec = unsafe {
                        std::slice::from_raw_parts(self.region.as_ptr().add(hdr + HDR), size)
                    };
                    f(rec);
                    delivered += 1;
                }
                cons += round8(size + HDR) as u64;
            }
            self.cons_pos().store(cons, Ordering::Release);
        }
    }

    /// Whether `ptr` is the data pointer of a record slot of this ring.
    pub(super) fn ringbuf_contains(&self, ptr: u64) -> bool {
        let Some(l) = self.rb_layout() else {
            return false;
        };
        let start = self.region.as_ptr() as u64 + l.data as u64;
        let hdr = ptr.wrapping_sub(HDR as u64);
        hdr >= start && hdr < start + u64::from(self.spec.max_entries)
    }
}

fn producer_alive(tid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(tid) else {
        return false;
    };
    if pid == 0 {
        return true;
    }
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}
