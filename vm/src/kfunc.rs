//! Kernel functions (kfuncs) that user space runs: the open-coded numeric
//! iterator behind libbpf's `bpf_for()` and `bpf_repeat()`
//! (`bpf_iter_num_new`, `bpf_iter_num_next`, `bpf_iter_num_destroy`), with
//! the kernel's semantics (`kernel/bpf/bpf_iter.c`).
//!
//! In an object, a kfunc call (`call src=2`) names its function through a
//! relocation; the loader rewrites the `imm` of the calls it knows to the
//! userbpf kfunc id below (`off` = 0) and refuses any other kfunc, naming
//! it. The ids lie far above the kernel's BTF ids, so raw bytecode that
//! carries kernel BTF ids is never mistaken for them.

use crate::helpers::{neg_errno, ArgKind, ArgSize, HelperProto, Helpers};
use crate::interp::BPF_MAX_LOOPS;

/// First userbpf kfunc id.
pub const KFUNC_ID_BASE: i32 = 0x7ffe_0000;
/// `bpf_iter_num_new(it, start, end)`.
pub const BPF_ITER_NUM_NEW: i32 = KFUNC_ID_BASE + 1;
/// `bpf_iter_num_next(it)`.
pub const BPF_ITER_NUM_NEXT: i32 = KFUNC_ID_BASE + 2;
/// `bpf_iter_num_destroy(it)`.
pub const BPF_ITER_NUM_DESTROY: i32 = KFUNC_ID_BASE + 3;

/// The kfuncs userbpf runs in user space: name and id.
pub const KFUNCS: &[(&str, i32)] = &[
    ("bpf_iter_num_new", BPF_ITER_NUM_NEW),
    ("bpf_iter_num_next", BPF_ITER_NUM_NEXT),
    ("bpf_iter_num_destroy", BPF_ITER_NUM_DESTROY),
];

/// The userbpf id of kfunc `name`, if user space runs it.
pub fn id_of(name: &str) -> Option<i32> {
    KFUNCS.iter().find(|(n, _)| *n == name).map(|&(_, id)| id)
}

/// The name of userbpf kfunc `id`.
pub fn name_of(id: i32) -> Option<&'static str> {
    KFUNCS.iter().find(|&&(_, i)| i == id).map(|&(n, _)| n)
}

/// `struct bpf_iter_num` is 8 bytes: `{ int cur; int end; }` inside.
const ITER_SIZE: u32 = 8;

fn state(cur: i32, end: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&cur.to_le_bytes());
    b[4..].copy_from_slice(&end.to_le_bytes());
    b
}

/// Registers the numeric iterator kfuncs.
pub(crate) fn register(h: &mut Helpers) {
    let it = HelperProto::new(&[ArgKind::WriteMem {
        size: ArgSize::Fixed(ITER_SIZE),
        nullable: false,
    }]);
    h.register_kfunc(BPF_ITER_NUM_NEW, "bpf_iter_num_new", it, |ctx, a| {
        let (start, end) = (a[1] as i32, a[2] as i32);
        // An empty range (start == end) is fine: the first next() is NULL.
        if start > end {
            ctx.write(a[0], &state(0, 0))?;
            return Ok(neg_errno(libc::EINVAL));
        }
        if i64::from(end) - i64::from(start) > BPF_MAX_LOOPS as i64 {
            ctx.write(a[0], &state(0, 0))?;
            return Ok(neg_errno(libc::E2BIG));
        }
        // next() increments first.
        ctx.write(a[0], &state(start.wrapping_sub(1), end))?;
        Ok(0)
    });
    h.register_kfunc(BPF_ITER_NUM_NEXT, "bpf_iter_num_next", it, |ctx, a| {
        let b = ctx.read(a[0], ITER_SIZE as usize)?;
        let word = |o: usize| {
            b.get(o..o + 4)
                .and_then(|s| s.try_into().ok())
                .map_or(0, i32::from_le_bytes)
        };
        let (cur, end) = (word(0), word(4));
        if i64::from(cur) + 1 >= i64::from(end) {
            ctx.write(a[0], &state(0, 0))?;
            return Ok(0);
        }
        ctx.write(a[0], &state(cur.wrapping_add(1), end))?;
        // A pointer to `cur`, inside the iterator (on the program's stack).
        Ok(a[0])
    });
    h.register_kfunc(
        BPF_ITER_NUM_DESTROY,
        "bpf_iter_num_destroy",
        it,
        |ctx, a| {
            ctx.write(a[0], &state(0, 0))?;
            Ok(0)
        },
    );
}
