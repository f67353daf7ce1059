//! Program contexts with the kernel's layouts: packets behind `xdp_md` and
//! `__sk_buff` (here), and the contexts of tracing programs ([`trace`]).
//!
//! The kernel rewrites loads of `data`/`data_end`/`data_meta` (32-bit fields
//! of `xdp_md` and `__sk_buff`) into loads of real pointers. Here the context
//! and the packet live in memory mapped below 2 GiB (`MAP_32BIT`), so the
//! 32-bit fields hold the real addresses and programs run unmodified.

pub mod trace;

pub use trace::{PtRegs, SysEnter, SysExit, TraceEntry};

use crate::interp::{Fault, PacketWindow, Vm};
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
            Some(PacketWindow::new(data, packet.len() as u64)),
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

/// `sizeof(struct __sk_buff)`.
pub const SK_BUFF_SIZE: usize = 192;
/// `ETH_HLEN`.
pub const ETH_HLEN: usize = 14;

/// Runs a program with a `struct __sk_buff` context on `packet` (an
/// Ethernet frame), as `BPF_PROG_TEST_RUN` does on the loopback device:
/// `l2` programs (TC) see the frame from the Ethernet header, others
/// (socket filters) from the network header. Filled fields: `len`,
/// `pkt_type` (from the destination MAC, as `eth_type_trans` on a device
/// with address 00:00:00:00:00:00), `protocol`, `ifindex` (1), `data`,
/// `data_end`, `data_meta`, `wire_len`; the rest are 0. The packet returned
/// for non-`l2` programs has its link header zeroed, as
/// `BPF_PROG_TEST_RUN` returns it.
pub fn run_skb(vm: &mut Vm, packet: &[u8], l2: bool) -> Result<PacketRun, XdpError> {
    if packet.len() < ETH_HLEN {
        return Err(XdpError::Memory(std::io::Error::other(
            "a packet needs at least an Ethernet header (14 bytes)",
        )));
    }
    let frame_off = 256 + 64;
    let mut mem = LowMem::new(frame_off + packet.len()).map_err(XdpError::Memory)?;
    let base = mem.ptr as u64;
    let start = frame_off + if l2 { 0 } else { ETH_HLEN };
    let data = base + start as u64;
    let data_end = base + (frame_off + packet.len()) as u64;
    if data_end > u64::from(u32::MAX) {
        return Err(XdpError::Memory(std::io::Error::other(
            "memory above 4 GiB",
        )));
    }
    let dst = &packet[..6];
    let pkt_type: u32 = if dst[0] & 1 != 0 {
        if dst.iter().all(|&b| b == 0xff) {
            1 // PACKET_BROADCAST
        } else {
            2 // PACKET_MULTICAST
        }
    } else if dst.iter().all(|&b| b == 0) {
        0 // PACKET_HOST
    } else {
        3 // PACKET_OTHERHOST
    };
    let len = (data_end - data) as u32;
    {
        let s = mem.slice();
        s[frame_off..frame_off + packet.len()].copy_from_slice(packet);
        let mut put = |off: usize, v: u32| s[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put(0, len);
        put(4, pkt_type);
        // protocol: the big-endian h_proto as stored in memory.
        put(16, u32::from(u16::from_le_bytes([packet[12], packet[13]])));
        put(40, 1);
        put(76, data as u32);
        put(80, data_end as u32);
        put(140, data as u32);
        put(160, packet.len() as u32);
    }
    let mut regions = vec![
        Region::new(mem.ptr, SK_BUFF_SIZE, false, RegionKind::Context),
        Region::new(
            // SAFETY: `start` is inside the mapping.
            unsafe { mem.ptr.add(start) },
            (data_end - data) as usize,
            true,
            RegionKind::Packet,
        ),
    ];
    if !l2 {
        // The Ethernet header below `data`: read-only, for legacy loads
        // at `SKF_LL_OFF`.
        regions.push(Region::new(
            // SAFETY: `frame_off` is inside the mapping.
            unsafe { mem.ptr.add(frame_off) },
            ETH_HLEN,
            false,
            RegionKind::Packet,
        ));
    }
    // Legacy packet loads also reach the headers below `data`, as the
    // kernel's do (`SKF_LL_OFF`, `SKF_NET_OFF`): the Ethernet header at the
    // frame's start, the network header after it (`skb->head` is the
    // frame's start here: the kernel's headroom is not modelled).
    let frame = base + frame_off as u64;
    let packet_window = Some(PacketWindow {
        start: data,
        len: data_end - data,
        head: frame,
        net: Some(frame + ETH_HLEN as u64),
        mac: Some(frame),
    });
    // SAFETY: `mem` outlives the run; the regions lie inside it.
    let r0 = unsafe { vm.run_with_regions([base, 0, 0, 0, 0], &regions, packet_window) }
        .map_err(XdpError::Fault)?;
    let mut out = mem.slice()[frame_off..frame_off + packet.len()].to_vec();
    if !l2 {
        // The program never saw the link header; BPF_PROG_TEST_RUN reports
        // it zeroed.
        out[..ETH_HLEN].fill(0);
    }
    Ok(PacketRun { r0, packet: out })
}
