//! `bpf_for_each_map_elem` (164): calls a program's callback on every
//! element of an array or hash map, as the kernel does.

use std::sync::Arc;

use super::array::BPF_MAP_TYPE_PERCPU_ARRAY;
use super::hash::{BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_HASH};
use super::set::MapSet;
use super::{Map, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH};
use crate::helpers::{neg_errno, CallbackDriver, HelperContext, HelperError, Helpers};

/// `bpf_for_each_map_elem`.
pub const BPF_FUNC_FOR_EACH_MAP_ELEM: i32 = 164;

/// The map types the kernel iterates (`map_for_each_callback`).
fn iterable(map_type: u32) -> bool {
    matches!(
        map_type,
        BPF_MAP_TYPE_ARRAY
            | BPF_MAP_TYPE_PERCPU_ARRAY
            | BPF_MAP_TYPE_HASH
            | BPF_MAP_TYPE_PERCPU_HASH
            | BPF_MAP_TYPE_LRU_HASH
            | BPF_MAP_TYPE_LRU_PERCPU_HASH
    )
}

/// Iterates a snapshot of the map's keys taken when the helper is called;
/// elements deleted meanwhile are skipped, as the kernel's hash iteration
/// skips them. The callback sees `(map, &key, &value, ctx)`; it returns 0 to
/// go on and 1 to stop. The helper returns the number of callback calls.
struct ForEach {
    map: Arc<Map>,
    keys: Keys,
    /// Where the current key is copied for the callback (read-only to it).
    key_addr: Option<u64>,
    callback_ctx: u64,
    calls: u64,
}

/// The keys of a map, one at a time: array indexes are counted, other
/// maps' keys snapshotted.
pub(super) enum Keys {
    Indexes(std::ops::Range<u32>),
    Snapshot(std::vec::IntoIter<Vec<u8>>),
}

impl Keys {
    pub(super) fn of(map: &Map) -> Keys {
        if matches!(
            map.spec().map_type,
            BPF_MAP_TYPE_ARRAY | BPF_MAP_TYPE_PERCPU_ARRAY
        ) {
            Keys::Indexes(0..map.spec().max_entries)
        } else {
            Keys::Snapshot(map.keys().into_iter())
        }
    }
}

impl Iterator for Keys {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        match self {
            Keys::Indexes(r) => r.next().map(|i| i.to_le_bytes().to_vec()),
            Keys::Snapshot(k) => k.next(),
        }
    }
}

impl CallbackDriver for ForEach {
    fn next(
        &mut self,
        ctx: &mut HelperContext<'_>,
        last_r0: Option<u64>,
    ) -> Result<Option<[u64; 5]>, HelperError> {
        if let Some(r0) = last_r0 {
            self.calls = self.calls.saturating_add(1);
            if r0 != 0 {
                return Ok(None);
            }
        }
        for key in self.keys.by_ref() {
            let Some(value) = self.map.lookup_ptr(&key) else {
                continue;
            };
            let addr = match self.key_addr {
                Some(a) => {
                    ctx.write_owned(a, &key)?;
                    a
                }
                None => {
                    let a = ctx.grant_owned(key.clone().into_boxed_slice(), false);
                    self.key_addr = Some(a);
                    a
                }
            };
            return Ok(Some([
                self.map.handle(),
                addr,
                value as u64,
                self.callback_ctx,
                0,
            ]));
        }
        Ok(None)
    }

    fn result(&self) -> u64 {
        self.calls
    }
}

impl MapSet {
    /// Registers `bpf_get_stackid` (27) on these maps: the user stack of
    /// the event ([`crate::HookInfo::user_regs`]) goes into a
    /// `BPF_MAP_TYPE_STACK_TRACE` map and the call returns its id.
    pub(super) fn stackid_helper(self: &Arc<MapSet>, h: &mut Helpers) {
        use crate::stack::{
            frames_for, BPF_FUNC_GET_STACKID, BPF_F_FAST_STACK_CMP, BPF_F_REUSE_STACKID,
            BPF_F_SKIP_FIELD_MASK, BPF_F_USER_STACK,
        };
        let set = Arc::clone(self);
        h.register_kernel(BPF_FUNC_GET_STACKID, move |ctx, a| {
            // (ctx, map, flags)
            let map = set
                .by_handle(a[1])
                .ok_or_else(|| HelperError::Failed(format!("r2 ({:#x}) is not a map", a[1])))?;
            if map.spec().map_type != super::stackmap::BPF_MAP_TYPE_STACK_TRACE {
                return Err(HelperError::Failed(format!(
                    "map `{}` is not a stack trace map (BPF_MAP_TYPE_STACK_TRACE)",
                    map.spec().name
                )));
            }
            let flags = a[2];
            let known = BPF_F_SKIP_FIELD_MASK
                | BPF_F_USER_STACK
                | BPF_F_FAST_STACK_CMP
                | BPF_F_REUSE_STACKID;
            if flags & !known != 0 {
                return Ok(neg_errno(libc::EINVAL));
            }
            let frames = match frames_for(ctx.hook().user_regs, flags, map.stack_depth()) {
                Ok(f) => f,
                Err(e) => return Ok(neg_errno(e)),
            };
            let depth = frames.len().min(map.stack_depth());
            Ok(match map.stack_store(&frames[..depth], flags) {
                Ok(id) => u64::from(id),
                Err(e) => neg_errno(e),
            })
        });
    }

    /// Registers `bpf_for_each_map_elem` on these maps.
    pub(super) fn for_each_helper(self: &Arc<MapSet>, h: &mut Helpers) {
        let set = Arc::clone(self);
        h.register_kernel(BPF_FUNC_FOR_EACH_MAP_ELEM, move |ctx, a| {
            // (map, callback_fn, callback_ctx, flags)
            let map = set
                .by_handle(a[0])
                .ok_or_else(|| HelperError::Failed(format!("r1 ({:#x}) is not a map", a[0])))?;
            if a[3] != 0 {
                return Ok(neg_errno(libc::EINVAL));
            }
            if !iterable(map.spec().map_type) {
                return Err(HelperError::Failed(format!(
                    "map `{}` has type {}; the kernel iterates only array and hash maps",
                    map.spec().name,
                    map.spec().map_type
                )));
            }
            ctx.call_back(
                a[1],
                Box::new(ForEach {
                    map: Arc::clone(map),
                    keys: Keys::of(map),
                    key_addr: None,
                    callback_ctx: a[2],
                    calls: 0,
                }),
            );
            Ok(0)
        });
    }
}
