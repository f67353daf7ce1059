//! Program contexts with the kernel's layouts, for running packet programs
//! on packets in user space.
//!
//! The kernel rewrites loads of `data`/`data_end`/`data_meta` (32-bit fields
//! of `xdp_md` and `__sk_buff`) into loads of real pointers. Here the context
//! and the packet live in memory mapped below 2 GiB (`MAP_32BIT`), so the
//! 32-bit fields hold the real addresses and programs run unmodified.

use crate::interp::{Fault, Vm};
use crate::memory::{Region, RegionKind};

/// `XDP_PACKET_HEADROOM`.
pub const XDP_PACKET_HEADROOM: usize = 256;
/// `sizeof(struct xdp_md)`.
pub const XDP_MD_SIZE: usize = 24;

/// Memory mapped below 2 GiB, freed on drop.
#[derive(Debug)]
struct LowMem {
    ptr: *mut u8,
    len: usize,
}

impl LowMem {
    fn new(len: usize) -> std::io::Result<LowMem> {
        let len = len.div_ceil(4096).max(1) * 4096;
        // SAFETY: a fresh anonymous private mapping; MAP_32BIT only
        // constrains where the kernel places it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(LowMem { ptr: p.cast(), len })
    }

    fn slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for LowMem {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The result of running a packet program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketRun {
    /// The program's return value (`XDP_PASS`, `TC_ACT_OK`, ...).
    pub r0: u64,
    /// The packet after the run.
    pub packet: Vec<u8>,
}

/// Runs an XDP program on `packet` with a `struct xdp_md` context
/// (`data`, `data_end`, `data_meta`; the interface fields are 0).
pub fn run_xdp(vm: &mut Vm, packet: &[u8]) -> Result<PacketRun, XdpError> {
    let ctx_off = 0usize;
    let data_off = 64 + XDP_PACKET_HEADROOM;
    let mut mem = LowMem::new(data_off + packet.len()).map_err(XdpError::Memory)?;
    let base = mem.ptr as u64;
    let data = base + data_off as u64;
    let data_end = data + packet.len() as u64;
    if data_end > u64::from(u32::MAX) {
        return Err(XdpError::Memory(std::io::Error::other(
            "memory above 4 GiB",
        )));
    }
    {
        let s = mem.slice();
        s[data_off..data_off + packet.len()].copy_from_slice(packet);
        let md = &mut s[ctx_off..ctx_off + XDP_MD_SIZE];
        md[0..4].copy_from_slice(&(data as u32).to_le_bytes());
        md[4..8].copy_from_slice(&(data_end as u32).to_le_bytes());
        md[8..12].copy_from_slice(&(data as u32).to_le_bytes());
    }
    let regions = [
        Region::new(mem.ptr, XDP_MD_SIZE, false, RegionKind::Context),
        // The packet (data_meta == data: no metadata).
        Region::new(
            // SAFETY: data_off is inside the mapping.
            unsafe { mem.ptr.add(data_off) },
            packet.len(),
            true,
            RegionKind::Packet,
        ),
    ];
    // SAFETY: `mem` outlives the run; the regions lie inside it.
    let r0 = unsafe {
        vm.run_with_regions(
            [base, 0, 0, 0, 0],
            &regions,
            Some((data, packet.len() as u64)),
        )
    }
    .map_err(XdpError::Fault)?;
    let out = mem.slice()[data_off..data_off + packet.len()].to_vec();
    Ok(PacketRun { r0, packet: out })
}

/// Why an XDP run failed.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The low memory for the context could not be mapped.
    #[error("mapping packet memory: {0}")]
    Memory(std::io::Error),
    /// The program faulted.
    #[error(transparent)]
    Fault(Fault),
}
