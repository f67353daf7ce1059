//! `struct bpf_dynptr` in user space: 16 bytes of the program's stack
//! that the dynptr helpers fill and read. Programs never look inside
//! (the verifier forbids it); the layout is userbpf's own:
//!
//! - bytes 0..8: the data's address (0: a NULL dynptr, as a failed
//!   initialisation leaves it);
//! - bytes 8..12: its size; bytes 12..16: its kind ([`KIND_LOCAL`],
//!   [`KIND_RINGBUF`]).
//!
//! The helpers read the data through the run's memory map, so a dynptr
//! forged by an unverified program (checked mode) reaches no memory the
//! program could not reach itself.

use crate::helpers::{neg_errno, HelperContext, HelperError, Helpers};

/// `BPF_FUNC_dynptr_from_mem`.
pub const BPF_FUNC_DYNPTR_FROM_MEM: i32 = 197;
/// `BPF_FUNC_ringbuf_reserve_dynptr`.
pub const BPF_FUNC_RINGBUF_RESERVE_DYNPTR: i32 = 198;
/// `BPF_FUNC_ringbuf_submit_dynptr`.
pub const BPF_FUNC_RINGBUF_SUBMIT_DYNPTR: i32 = 199;
/// `BPF_FUNC_ringbuf_discard_dynptr`.
pub const BPF_FUNC_RINGBUF_DISCARD_DYNPTR: i32 = 200;
/// `BPF_FUNC_dynptr_read`.
pub const BPF_FUNC_DYNPTR_READ: i32 = 201;
/// `BPF_FUNC_dynptr_write`.
pub const BPF_FUNC_DYNPTR_WRITE: i32 = 202;
/// `BPF_FUNC_dynptr_data`.
pub const BPF_FUNC_DYNPTR_DATA: i32 = 203;

/// A dynptr over a map value (`DYNPTR_TYPE_LOCAL`).
pub const KIND_LOCAL: u32 = 1;
/// A dynptr over a ring buffer record (`DYNPTR_TYPE_RINGBUF`).
pub const KIND_RINGBUF: u32 = 2;
/// `DYNPTR_MAX_SIZE`: sizes fit in 24 bits.
pub const MAX_SIZE: u64 = (1 << 24) - 1;

/// A dynptr's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dynptr {
    /// The data's address; 0 for a NULL dynptr.
    pub data: u64,
    /// Bytes of data.
    pub size: u32,
    /// [`KIND_LOCAL`] or [`KIND_RINGBUF`].
    pub kind: u32,
}

impl Dynptr {
    /// The NULL dynptr (`bpf_dynptr_set_null`).
    pub const NULL: Dynptr = Dynptr {
        data: 0,
        size: 0,
        kind: 0,
    };

    /// Reads the dynptr at `addr` of program memory.
    pub fn load(ctx: &HelperContext<'_>, addr: u64) -> Result<Dynptr, HelperError> {
        let b = ctx.bytes(addr, 16)?;
        let word = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[i..i + 4]);
            u32::from_le_bytes(w)
        };
        let data = u64::from(word(0)) | (u64::from(word(4)) << 32);
        Ok(Dynptr {
            data,
            size: word(8),
            kind: word(12),
        })
    }

    /// Writes this dynptr at `addr` of program memory.
    pub fn store(self, ctx: &mut HelperContext<'_>, addr: u64) -> Result<(), HelperError> {
        let b = ctx.bytes_mut(addr, 16)?;
        b[..8].copy_from_slice(&self.data.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b[12..].copy_from_slice(&self.kind.to_le_bytes());
        Ok(())
    }

    /// The address of `len` bytes at `offset` of the data, or the error
    /// the kernel returns (`-EINVAL` for a NULL dynptr, `-E2BIG` past its
    /// end).
    fn range(self, offset: u64, len: u64) -> Result<u64, u64> {
        if self.data == 0 {
            return Err(neg_errno(libc::EINVAL));
        }
        let end = offset.checked_add(len).ok_or(neg_errno(libc::E2BIG))?;
        if end > u64::from(self.size) {
            return Err(neg_errno(libc::E2BIG));
        }
        Ok(self.data.wrapping_add(offset))
    }
}

/// Registers the helpers of local dynptrs: `bpf_dynptr_from_mem`,
/// `bpf_dynptr_read`, `bpf_dynptr_write`, `bpf_dynptr_data` (the ring
/// buffer ones live with the maps).
pub fn register(h: &mut Helpers) {
    h.register_kernel(BPF_FUNC_DYNPTR_FROM_MEM, |ctx, a| {
        let (data, size, flags, ptr) = (a[0], a[1], a[2], a[3]);
        let err = if flags != 0 {
            Some(libc::EINVAL)
        } else if size > MAX_SIZE {
            Some(libc::E2BIG)
        } else {
            None
        };
        if let Some(e) = err {
            Dynptr::NULL.store(ctx, ptr)?;
            return Ok(neg_errno(e));
        }
        // The memory must be the program's to write.
        ctx.bytes_mut(data, size as usize)?;
        Dynptr {
            data,
            size: size as u32,
            kind: KIND_LOCAL,
        }
        .store(ctx, ptr)?;
        Ok(0)
    });
    h.register_kernel(BPF_FUNC_DYNPTR_READ, |ctx, a| {
        let (dst, len, src, offset, flags) = (a[0], a[1], a[2], a[3], a[4]);
        let d = Dynptr::load(ctx, src)?;
        let from = if flags != 0 {
            Err(neg_errno(libc::EINVAL))
        } else {
            d.range(offset, len)
        };
        match from {
            Ok(from) => {
                let bytes = ctx.read(from, len as usize)?;
                ctx.write(dst, &bytes)?;
                Ok(0)
            }
            Err(e) => {
                // The verifier takes the buffer as written: leave no
                // stale bytes in it.
                ctx.bytes_mut(dst, len as usize)?.fill(0);
                Ok(e)
            }
        }
    });
    h.register_kernel(BPF_FUNC_DYNPTR_WRITE, |ctx, a| {
        let (dst, offset, src, len, flags) = (a[0], a[1], a[2], a[3], a[4]);
        let d = Dynptr::load(ctx, dst)?;
        if flags != 0 {
            return Ok(neg_errno(libc::EINVAL));
        }
        let to = match d.range(offset, len) {
            Ok(to) => to,
            Err(e) => return Ok(e),
        };
        let bytes = ctx.read(src, len as usize)?;
        ctx.write(to, &bytes)?;
        Ok(0)
    });
    h.register_kernel(BPF_FUNC_DYNPTR_DATA, |ctx, a| {
        let d = Dynptr::load(ctx, a[0])?;
        Ok(d.range(a[1], a[2]).unwrap_or(0))
    });
}
