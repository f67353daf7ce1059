//! `BPF_MAP_TYPE_PERF_EVENT_ARRAY` as `bpf_perf_event_output` uses it: one
//! ring per CPU slot in the perf mmap format (a control page with
//! `data_head` at 1024 and `data_tail` at 1032, then data pages), records
//! `PERF_RECORD_SAMPLE` with a raw payload, 8-byte aligned. A full ring
//! counts the record as lost; the consumer reports the count. User space
//! cannot keep a thread on its CPU while it writes, so each ring has a
//! robust writer lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::lock::Guard;
use super::{Map, MapSpec, HEADER_SIZE};

/// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`.
pub const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = 4;
/// `PERF_RECORD_SAMPLE`.
pub const PERF_RECORD_SAMPLE: u32 = 9;
/// `BPF_F_CURRENT_CPU`: the index meaning "this CPU".
pub const BPF_F_CURRENT_CPU: u64 = 0xffff_ffff;
/// Data bytes per CPU ring (a power of two).
pub const RING_BYTES: usize = 64 * 1024;

const PAGE: usize = 4096;
/// Offsets in a ring's control page (as `struct perf_event_mmap_page`).
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;
/// userbpf's additions to the control page.
const LOCK: usize = 2048;
const LOST: usize = 2056;

#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    cpus: usize,
    rings: usize,
    pub(super) size: usize,
}

impl Layout {
    pub(super) fn new(spec: &MapSpec) -> Layout {
        let cpus = (spec.max_entries as usize).clamp(1, super::percpu::ncpus());
        let rings = HEADER_SIZE.div_ceil(PAGE) * PAGE;
        Layout {
            cpus,
            rings,
            size: rings + cpus * (PAGE + RING_BYTES),
        }
    }
}

impl Map {
    fn perf(&self) -> Option<Layout> {
        match self.layout {
            super::Layout::Perf(l) => Some(l),
            _ => None,
        }
    }

    fn ring(&self, l: &Layout, cpu: usize) -> *mut u8 {
        // SAFETY: cpu < cpus: the ring lies in the region.
        unsafe {
            self.region
                .as_ptr()
                .add(l.rings + (cpu % l.cpus) * (PAGE + RING_BYTES))
        }
    }

    fn at_ring<T>(&self, ring: *mut u8, off: usize) -> &T {
        // SAFETY: the offsets are aligned fields of the ring's control page.
        unsafe { &*(ring.add(off) as *const T) }
    }

    /// `bpf_perf_event_output`: writes `data` as one sample to the ring of
    /// `index` (`BPF_F_CURRENT_CPU`: the current CPU). `Err(errno)`:
    /// `E2BIG` for an index past the CPUs, `ENOSPC` when the ring is full
    /// (the record is counted as lost).
    pub fn perf_output(&self, index: u64, data: &[u8]) -> Result<(), i32> {
        let Some(l) = self.perf() else {
            return Err(libc::EINVAL);
        };
        let cpu = if index == BPF_F_CURRENT_CPU {
            // SAFETY: sched_getcpu has no preconditions.
            usize::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(0) % l.cpus
        } else {
            let i = usize::try_from(index).map_err(|_| libc::E2BIG)?;
            if i >= l.cpus {
                return Err(libc::E2BIG);
            }
            i
        };
        let size = (8 + 4 + data.len()).div_ceil(8) * 8;
        if size > RING_BYTES || size > usize::from(u16::MAX) {
            return Err(libc::E2BIG);
        }
        let ring = self.ring(&l, cpu);
        let _g = Guard::new(self.at_ring::<AtomicU32>(ring, LOCK));
        let head = self
            .at_ring::<AtomicU64>(ring, DATA_HEAD)
            .load(Ordering::Relaxed);
        let tail = self
            .at_ring::<AtomicU64>(ring, DATA_TAIL)
            .load(Ordering::Acquire);
        if head.wrapping_sub(tail) + size as u64 > RING_BYTES as u64 {
            self.at_ring::<AtomicU64>(ring, LOST)
                .fetch_add(1, Ordering::Relaxed);
            return Err(libc::ENOSPC);
        }
        let mut rec = Vec::with_capacity(size);
        rec.extend_from_slice(&PERF_RECORD_SAMPLE.to_le_bytes());
        rec.extend_from_slice(&0u16.to_le_bytes());
        rec.extend_from_slice(&(size as u16).to_le_bytes());
        rec.extend_from_slice(&(data.len() as u32).to_le_bytes());
        rec.extend_from_slice(data);
        rec.resize(size, 0);
        for (i, b) in rec.iter().enumerate() {
            let at = (head as usize + i) % RING_BYTES;
            // SAFETY: `at` < RING_BYTES: inside the ring's data pages.
            unsafe { ring.add(PAGE + at).write(*b) };
        }
        self.at_ring::<AtomicU64>(ring, DATA_HEAD)
            .store(head + size as u64, Ordering::Release);
        Ok(())
    }

    /// Consumes every sample of every CPU ring: `f(cpu, raw payload)`.
    /// Returns (samples delivered, records lost since the last call).
    pub fn perf_consume(&self, mut f: impl FnMut(usize, &[u8])) -> (usize, u64) {
        let Some(l) = self.perf() else {
            return (0, 0);
        };
        let mut delivered = 0;
        let mut lost = 0;
        for cpu in 0..l.cpus {
            let ring = self.ring(&l, cpu);
            let head = self
                .at_ring::<AtomicU64>(ring, DATA_HEAD)
                .load(Ordering::Acquire);
            let mut tail = self
                .at_ring::<AtomicU64>(ring, DATA_TAIL)
                .load(Ordering::Relaxed);
            let byte = |off: u64| {
                // SAFETY: the offset is reduced into the ring's data pages.
                unsafe { ring.add(PAGE + (off as usize % RING_BYTES)).read() }
            };
            while tail < head {
                let hdr: Vec<u8> = (0..12).map(|i| byte(tail + i)).collect();
                let size = u64::from(u16::from_le_bytes([hdr[6], hdr[7]]));
                let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
                if size < 8 || tail + size > head {
                    break;
                }
                if kind == PERF_RECORD_SAMPLE {
                    let len = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as u64;
                    let payload: Vec<u8> = (0..len.min(size - 12))
                        .map(|i| byte(tail + 12 + i))
                        .collect();
                    f(cpu, &payload);
                    delivered += 1;
                }
                tail += size;
            }
            self.at_ring::<AtomicU64>(ring, DATA_TAIL)
                .store(tail, Ordering::Release);
            lost += self
                .at_ring::<AtomicU64>(ring, LOST)
                .swap(0, Ordering::Relaxed);
        }
        (delivered, lost)
    }
}
