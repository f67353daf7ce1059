//! Memory regions a program may touch, and the checks behind *checked mode*.
//!
//! Guest addresses are host addresses, but they are never trusted: every
//! load, store, atomic and helper pointer argument is looked up in the set of
//! regions the embedder (or a helper) made available, plus the current
//! program's stack frames. Anything else is a [`crate::Fault`].

use std::fmt;

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A load.
    Read,
    /// A store (atomics are writes).
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// What a region holds, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegionKind {
    /// The program's context (`r1` on entry) or the memory passed to `run`.
    Context,
    /// Packet data.
    Packet,
    /// A map value (or a map's whole storage).
    MapValue,
    /// Memory a helper returned or granted for the rest of the run.
    HelperMemory,
    /// Any other memory the embedder made available.
    Other,
}

/// A contiguous range of host memory a program may access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    /// First address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Whether stores (and atomics) are allowed.
    pub writable: bool,
    /// What the region is.
    pub kind: RegionKind,
}

impl Region {
    /// A region over `len` bytes at `ptr`. Creating it is safe; handing it to
    /// a VM is not (see [`crate::Vm::add_region`]).
    pub fn new(ptr: *const u8, len: usize, writable: bool, kind: RegionKind) -> Region {
        Region {
            start: ptr as u64,
            len: len as u64,
            writable,
            kind,
        }
    }

    /// A writable region over a mutable slice.
    pub fn from_mut_slice(s: &mut [u8], kind: RegionKind) -> Region {
        Region::new(s.as_mut_ptr(), s.len(), true, kind)
    }

    /// A read-only region over a slice.
    pub fn from_slice(s: &[u8], kind: RegionKind) -> Region {
        Region::new(s.as_ptr(), s.len(), false, kind)
    }

    /// Whether `[addr, addr + len)` lies inside the region.
    #[inline(always)]
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        let off = addr.wrapping_sub(self.start);
        addr >= self.start && off <= self.len && len <= self.len - off
    }
}

/// Why an access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessError {
    /// No region covers the range.
    Unmapped,
    /// The range is in a read-only region.
    ReadOnly(RegionKind),
}

/// The regions visible to one run: the embedder's, those granted during the
/// run, and the live part of the stack.
#[derive(Clone, Debug)]
pub struct MemoryMap {
    regions: Vec<Region>,
    /// Number of regions that persist across runs; the rest are dropped when
    /// a run ends.
    persistent: usize,
    /// Lowest accessible stack address (bottom of the current frame).
    pub(crate) stack_lo: u64,
    /// One past the highest stack address (top of frame 0).
    pub(crate) stack_hi: u64,
    /// Buffers helpers handed to the current run (freed when it ends, after
    /// their regions are gone).
    owned: Vec<Box<[u8]>>,
}

impl MemoryMap {
    pub(crate) fn new() -> MemoryMap {
        MemoryMap {
            regions: Vec::new(),
            persistent: 0,
            stack_lo: 0,
            stack_hi: 0,
            owned: Vec::new(),
        }
    }

    /// Adds a region that stays until removed.
    pub(crate) fn add_persistent(&mut self, r: Region) {
        self.regions.insert(self.persistent, r);
        self.persistent += 1;
    }

    /// Removes every persistent region.
    pub(crate) fn clear_persistent(&mut self) {
        self.regions.drain(..self.persistent);
        self.persistent = 0;
    }

    /// Adds a region for the current run only.
    /// Room for `n` more regions without allocating.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.regions.reserve(n);
    }

    pub(crate) fn add_transient(&mut self, r: Region) {
        self.regions.push(r);
    }

    /// Makes `buf` accessible for the rest of the run and keeps it alive
    /// until the run ends; returns its address.
    pub(crate) fn add_owned(
        &mut self,
        mut buf: Box<[u8]>,
        writable: bool,
        kind: RegionKind,
    ) -> u64 {
        let r = Region::new(buf.as_mut_ptr(), buf.len(), writable, kind);
        self.regions.push(r);
        self.owned.push(buf);
        r.start
    }

    /// Copies `data` into an owned buffer at `addr` (see `add_owned`).
    pub(crate) fn write_owned(&mut self, addr: u64, data: &[u8]) -> Option<()> {
        for b in &mut self.owned {
            let start = b.as_ptr() as u64;
            let Some(off) = addr
                .checked_sub(start)
                .and_then(|o| usize::try_from(o).ok())
            else {
                continue;
            };
            if let Some(dst) = off
                .checked_add(data.len())
                .and_then(|end| b.get_mut(off..end))
            {
                dst.copy_from_slice(data);
                return Some(());
            }
        }
        None
    }

    /// Drops the regions of the current run.
    pub(crate) fn end_run(&mut self) {
        self.regions.truncate(self.persistent);
        self.owned.clear();
    }

    /// Every region (stack excluded).
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Checks `[addr, addr + len)` for `access`; returns the address on
    /// success.
    #[inline(always)]
    pub fn check(&self, addr: u64, len: u64, access: Access) -> Result<u64, AccessError> {
        let span = self.stack_hi.wrapping_sub(self.stack_lo);
        let off = addr.wrapping_sub(self.stack_lo);
        if addr >= self.stack_lo && off <= span && len <= span - off {
            return Ok(addr);
        }
        // Fast path: a region that allows the access (usually one of a few).
        for r in &self.regions {
            if r.contains(addr, len) && (r.writable || access == Access::Read) {
                return Ok(addr);
            }
        }
        Err(self.classify(addr, len))
    }

    /// `[addr, addr + len)` as a slice if it may be read (any address for
    /// an empty range, as helpers treat it). The memory is
    /// valid while the run that uses this map lasts (regions are only
    /// added during a run).
    pub fn readable(&self, addr: u64, len: usize) -> Option<&[u8]> {
        if len == 0 {
            // Nothing is touched.
            return Some(&[]);
        }
        self.check(addr, len as u64, Access::Read).ok()?;
        // SAFETY: the range lies inside a region (or the live stack) the
        // embedder guaranteed valid for the run.
        Some(unsafe { std::slice::from_raw_parts(addr as *const u8, len) })
    }

    /// The region (not the stack) that allows `[addr, addr + len)` for
    /// `access`, if any.
    pub fn region_for(&self, addr: u64, len: u64, access: Access) -> Option<Region> {
        self.regions
            .iter()
            .find(|r| r.contains(addr, len) && (r.writable || access == Access::Read))
            .copied()
    }

    /// Why an access that no region allows was refused.
    #[cold]
    #[inline(never)]
    fn classify(&self, addr: u64, len: u64) -> AccessError {
        match self.regions.iter().find(|r| r.contains(addr, len)) {
            Some(r) => AccessError::ReadOnly(r.kind),
            None => AccessError::Unmapped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_bounds_are_exact_and_overflow_safe() {
        let r = Region {
            start: 100,
            len: 10,
            writable: true,
            kind: RegionKind::Other,
        };
        assert!(r.contains(100, 10));
        assert!(r.contains(109, 1));
        assert!(r.contains(110, 0));
        assert!(!r.contains(109, 2));
        assert!(!r.contains(99, 1));
        assert!(!r.contains(105, u64::MAX));
        assert!(!r.contains(u64::MAX, 2));
    }

    #[test]
    fn read_only_regions_refuse_writes() {
        let mut m = MemoryMap::new();
        m.add_transient(Region {
            start: 0x1000,
            len: 8,
            writable: false,
            kind: RegionKind::Context,
        });
        assert_eq!(m.check(0x1000, 8, Access::Read), Ok(0x1000));
        assert_eq!(
            m.check(0x1000, 8, Access::Write),
            Err(AccessError::ReadOnly(RegionKind::Context))
        );
        assert_eq!(m.check(0x1001, 8, Access::Read), Err(AccessError::Unmapped));
        m.end_run();
        assert_eq!(m.check(0x1000, 1, Access::Read), Err(AccessError::Unmapped));
    }
}
