//! `BPF_MAP_TYPE_ARRAY` and `BPF_MAP_TYPE_PERCPU_ARRAY`: `max_entries`
//! values, all present, keyed by a u32. A per-CPU array holds one value per
//! CPU slot for each index, and a lease table (see [`super::percpu`]).

use std::sync::atomic::AtomicU32;

use super::{round8, Map, MapError, MapSpec, BPF_NOEXIST, HEADER_SIZE};

/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;

#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub(super) values: usize,
    pub(super) value_stride: usize,
    /// Bytes per index: value_stride times the CPU slots.
    pub(super) elem_stride: usize,
    pub(super) size: usize,
    /// Per-CPU arrays: the CPU slots and the lease table's offset.
    pub(super) percpu: Option<(usize, usize)>,
}

impl Layout {
    pub(super) fn new(spec: &MapSpec) -> Layout {
        let value_stride = round8(spec.value_size);
        let (values, percpu) = if spec.map_type == BPF_MAP_TYPE_PERCPU_ARRAY {
            let cpus = super::percpu::ncpus();
            let leases = HEADER_SIZE;
            (leases + (4 * cpus).div_ceil(64) * 64, Some((cpus, leases)))
        } else {
            (HEADER_SIZE, None)
        };
        let elem_stride = value_stride.saturating_mul(percpu.map(|p| p.0).unwrap_or(1));
        Layout {
            values,
            value_stride,
            elem_stride,
            size: values.saturating_add(elem_stride.saturating_mul(spec.max_entries as usize)),
            percpu,
        }
    }
}

fn index(map: &Map, key: &[u8]) -> Option<usize> {
    let idx = u32::from_le_bytes(key.try_into().ok()?);
    (idx < map.spec.max_entries).then_some(idx as usize)
}

/// The block of index `idx` (all its CPU slots).
fn elem_ptr(map: &Map, l: &Layout, idx: usize) -> *mut u8 {
    // SAFETY: idx < max_entries, so the block lies inside the region.
    unsafe { map.region.as_ptr().add(l.values + idx * l.elem_stride) }
}

/// This run's CPU slot of a per-CPU array (leased for the run), else 0.
fn slot(map: &Map, l: &Layout) -> usize {
    match l.percpu {
        Some((cpus, leases)) => {
            // SAFETY: the lease table lies in the header area of the region.
            let table = unsafe { map.region.as_ptr().add(leases) } as *const AtomicU32;
            super::percpu::slot(table, cpus)
        }
        None => 0,
    }
}

/// A program's pointer to the value of `key`: its CPU slot for per-CPU
/// arrays.
pub(super) fn lookup(map: &Map, l: &Layout, key: &[u8]) -> Option<*mut u8> {
    let i = index(map, key)?;
    let s = slot(map, l);
    // SAFETY: s < CPU slots: inside the index's block.
    Some(unsafe { elem_ptr(map, l, i).add(s * l.value_stride) })
}

/// A pointer to the value of `key` in CPU slot `cpu` of a per-CPU array
/// (`bpf_map_lookup_percpu_elem`; `None` past the slots).
pub(super) fn lookup_on_cpu(map: &Map, l: &Layout, key: &[u8], cpu: usize) -> Option<*mut u8> {
    let (cpus, _) = l.percpu?;
    if cpu >= cpus {
        return None;
    }
    let i = index(map, key)?;
    // SAFETY: cpu < CPU slots: inside the index's block.
    Some(unsafe { elem_ptr(map, l, i).add(cpu * l.value_stride) })
}

/// A copy of every CPU slot of `key` (the kernel's user-space view:
/// `round_up(value_size, 8)` bytes per CPU).
pub(super) fn lookup_all(map: &Map, l: &Layout, key: &[u8]) -> Option<Vec<u8>> {
    let i = index(map, key)?;
    let mut v = vec![0u8; l.elem_stride];
    // SAFETY: the block holds elem_stride bytes in the region.
    unsafe { std::ptr::copy_nonoverlapping(elem_ptr(map, l, i), v.as_mut_ptr(), v.len()) };
    if l.percpu.is_none() {
        v.truncate(map.spec.value_size as usize);
    }
    Some(v)
}

/// Updates from user space: for per-CPU arrays `value` holds every CPU's
/// value, `round_up(value_size, 8)` bytes each.
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
    let expect = if l.percpu.is_some() {
        l.elem_stride
    } else {
        map.spec.value_size as usize
    };
    if value.len() != expect {
        return Err(map.errno("update", libc::EINVAL));
    }
    // SAFETY: the block lies inside the region; `value` fits it.
    unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), elem_ptr(map, l, i), value.len()) };
    Ok(())
}

/// Updates from a program: its CPU slot only.
pub(super) fn update_from_program(
    map: &Map,
    l: &Layout,
    key: &[u8],
    value: &[u8],
    flags: u64,
) -> Result<(), MapError> {
    if l.percpu.is_none() {
        return update(map, l, key, value, flags);
    }
    let Some(p) = lookup(map, l, key) else {
        return Err(map.errno("update", libc::E2BIG));
    };
    if flags == BPF_NOEXIST {
        return Err(map.errno("update", libc::EEXIST));
    }
    // SAFETY: the slot holds value_size bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            value.as_ptr(),
            p,
            value.len().min(map.spec.value_size as usize),
        )
    };
    Ok(())
}
