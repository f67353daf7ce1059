//! User-space stack traces for `bpf_get_stack` (67) and `bpf_get_stackid`
//! (27): a frame-pointer walk from the registers of the event, as the
//! kernel's `perf_callchain_user` does on x86-64, reading memory with
//! `process_vm_readv` so a broken chain ends the walk instead of crashing.
//!
//! Kernel stacks do not exist in user space: asked for one, the helpers
//! behave as the kernel does for a uprobe, whose kernel part of the stack is
//! empty.

use crate::helpers::{neg_errno, Helpers};

/// `bpf_get_stack`.
pub const BPF_FUNC_GET_STACK: i32 = 67;
/// `bpf_get_stackid`.
pub const BPF_FUNC_GET_STACKID: i32 = 27;
/// `BPF_F_SKIP_FIELD_MASK`: frames to skip.
pub const BPF_F_SKIP_FIELD_MASK: u64 = 0xff;
/// `BPF_F_USER_STACK`.
pub const BPF_F_USER_STACK: u64 = 1 << 8;
/// `BPF_F_FAST_STACK_CMP` (`bpf_get_stackid`).
pub const BPF_F_FAST_STACK_CMP: u64 = 1 << 9;
/// `BPF_F_REUSE_STACKID` (`bpf_get_stackid`).
pub const BPF_F_REUSE_STACKID: u64 = 1 << 10;
/// `BPF_F_USER_BUILD_ID` (`bpf_get_stack`).
pub const BPF_F_USER_BUILD_ID: u64 = 1 << 11;
/// `sysctl kernel.perf_event_max_stack`'s default: the deepest trace.
pub const PERF_MAX_STACK_DEPTH: usize = 127;
/// `BPF_STACK_BUILD_ID_IP`: a `struct bpf_stack_build_id` holding an ip.
pub const BPF_STACK_BUILD_ID_IP: i32 = 2;
/// `sizeof(struct bpf_stack_build_id)`.
pub const BPF_STACK_BUILD_ID_SIZE: usize = 32;

/// Offsets in the x86-64 `struct pt_regs`.
const PT_REGS_BP: u64 = 32;
const PT_REGS_IP: u64 = 128;

fn read_u64(addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    crate::probe::read(&mut b, addr).then(|| u64::from_le_bytes(b))
}

/// The user stack at the event whose registers (`struct pt_regs`) are at
/// `regs`: the instruction pointer, then each return address found by
/// following the frame pointers, at most `max` entries. Walking stops at
/// an unreadable frame, a null frame pointer or one that does not move up
/// the stack (so a corrupt chain cannot loop).
pub fn user_stack(regs: u64, max: usize) -> Vec<u64> {
    let mut out = Vec::new();
    let Some(ip) = read_u64(regs.wrapping_add(PT_REGS_IP)) else {
        return out;
    };
    if max == 0 {
        return out;
    }
    out.push(ip);
    let Some(mut fp) = read_u64(regs.wrapping_add(PT_REGS_BP)) else {
        return out;
    };
    while out.len() < max && fp != 0 {
        let (Some(next), Some(ret)) = (read_u64(fp), read_u64(fp.wrapping_add(8))) else {
            break;
        };
        if ret == 0 {
            break;
        }
        out.push(ret);
        if next <= fp {
            break;
        }
        fp = next;
    }
    out
}

/// The frames a `bpf_get_stack`/`bpf_get_stackid` call with `flags` sees:
/// `Err(errno)` when there is no stack to take.
pub(crate) fn frames_for(
    user_regs: Option<u64>,
    flags: u64,
    max_after_skip: usize,
) -> Result<Vec<u64>, i32> {
    let skip = (flags & BPF_F_SKIP_FIELD_MASK) as usize;
    if flags & BPF_F_USER_STACK == 0 {
        // The kernel part of a user-space event's stack is empty.
        return Ok(Vec::new());
    }
    let regs = user_regs.ok_or(libc::EFAULT)?;
    let mut frames = user_stack(
        regs,
        max_after_skip
            .saturating_add(skip)
            .min(PERF_MAX_STACK_DEPTH),
    );
    if frames.len() < skip {
        return Err(libc::EFAULT);
    }
    frames.drain(..skip);
    Ok(frames)
}

/// Registers `bpf_get_stack` (67).
pub(crate) fn register(h: &mut Helpers) {
    h.register_kernel(BPF_FUNC_GET_STACK, |ctx, a| {
        // (ctx, buf, size, flags)
        let (buf, size, flags) = (a[1], a[2], a[3]);
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let zero = vec![0u8; size];
        if flags & !(BPF_F_SKIP_FIELD_MASK | BPF_F_USER_STACK | BPF_F_USER_BUILD_ID) != 0 {
            ctx.write(buf, &zero)?;
            return Ok(neg_errno(libc::EINVAL));
        }
        let build_id = flags & BPF_F_USER_BUILD_ID != 0;
        if build_id && flags & BPF_F_USER_STACK == 0 {
            ctx.write(buf, &zero)?;
            return Ok(neg_errno(libc::EINVAL));
        }
        let elem = if build_id { BPF_STACK_BUILD_ID_SIZE } else { 8 };
        if !size.is_multiple_of(elem) {
            ctx.write(buf, &zero)?;
            return Ok(neg_errno(libc::EINVAL));
        }
        let frames = match frames_for(ctx.hook().user_regs, flags, size / elem) {
            Ok(f) => f,
            Err(errno) => {
                ctx.write(buf, &zero)?;
                return Ok(neg_errno(errno));
            }
        };
        let mut out = zero;
        for (slot, ip) in out.chunks_exact_mut(elem).zip(&frames) {
            if build_id {
                // No build id is looked up: each entry carries the ip,
                // as the kernel reports frames whose build id it cannot
                // read.
                slot[..4].copy_from_slice(&BPF_STACK_BUILD_ID_IP.to_le_bytes());
                slot[24..32].copy_from_slice(&ip.to_le_bytes());
            } else {
                slot.copy_from_slice(&ip.to_le_bytes());
            }
        }
        ctx.write(buf, &out)?;
        Ok((frames.len().min(size / elem) * elem) as u64)
    });
}
