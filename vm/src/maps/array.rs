//! `BPF_MAP_TYPE_ARRAY`: `max_entries` values, all present, keyed by a u32.

use super::{round8, Map, MapError, MapSpec, BPF_NOEXIST, HEADER_SIZE};

#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub(super) values: usize,
    pub(super) value_stride: usize,
    pub(super) size: usize,
}

impl Layout {
    pub(super) fn new(spec: &MapSpec) -> Layout {
        let value_stride = round8(spec.value_size);
        Layout {
            values: HEADER_SIZE,
            value_stride,
            size: HEADER_SIZE
                .saturating_add(value_stride.saturating_mul(spec.max_entries as usize)),
        }
    }
}

fn index(map: &Map, key: &[u8]) -> Option<usize> {
    let idx = u32::from_le_bytes(key.try_into().ok()?);
    (idx < map.spec.max_entries).then_some(idx as usize)
}

fn value_ptr(map: &Map, l: &Layout, idx: usize) -> *mut u8 {
    // SAFETY: idx < max_entries, so the value lies inside the region.
    unsafe { map.region.as_ptr().add(l.values + idx * l.value_stride) }
}

pub(super) fn lookup(map: &Map, l: &Layout, key: &[u8]) -> Option<*mut u8> {
    index(map, key).map(|i| value_ptr(map, l, i))
}

pub(super) fn update(
    map: &Map,
    l: &Layout,
    key: &[u8],
    value: &[u8],
    flags: u64,
) -> Result<(), MapError> {
    let Some(i) = index(map, key) else {
        return Err(map.errno("update", libc::E2BIG));
    };
    if flags == BPF_NOEXIST {
        // Every element of an array exists.
        return Err(map.errno("update", libc::EEXIST));
    }
    // SAFETY: the value lies inside the region; `value` has value_size bytes.
    unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), value_ptr(map, l, i), value.len()) };
    Ok(())
}
