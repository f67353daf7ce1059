//! Maps with kernel semantics whose storage is shared memory.
//!
//! Every map lives in one [`SharedRegion`] (a memfd, or a 0600 file another
//! process opens by path) with a `#[repr(C)]` header and no process-local
//! pointers, so several processes can update the same map concurrently.
//! Values are contiguous in the region: a lookup returns a pointer into it
//! that stays valid for the map's lifetime, as the kernel's do, and programs
//! see only the value area (never keys, links or locks).
//!
//! Implemented so far: `BPF_MAP_TYPE_ARRAY` and `BPF_MAP_TYPE_HASH`
//! (preallocated, per-bucket robust locks). The other types of the objects
//! issue are refused by [`Map::create`] with an error that says so.

pub mod array;
pub mod bloom;
pub mod foreach;
pub mod hash;
pub mod lock;
pub mod lpm;
pub mod percpu;
pub mod perf;
pub mod queue;
pub mod ringbuf;
pub mod set;
pub mod shm;
pub mod stackmap;
pub mod timer;

use std::path::Path;
use std::sync::atomic::AtomicU32;

use crate::memory::{Region, RegionKind};
pub use set::MapSet;
pub use shm::SharedRegion;

/// `BPF_ANY`: create or update.
pub const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST`: create only.
pub const BPF_NOEXIST: u64 = 1;
/// `BPF_EXIST`: update only.
pub const BPF_EXIST: u64 = 2;
/// `BPF_F_NO_PREALLOC`.
pub const BPF_F_NO_PREALLOC: u32 = 1;

/// `BPF_MAP_TYPE_HASH`.
pub const BPF_MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PROG_ARRAY`: slots of program ids for `bpf_tail_call`.
pub const BPF_MAP_TYPE_PROG_ARRAY: u32 = 3;
/// `BPF_MAP_TYPE_ARRAY_OF_MAPS`: slots of map ids.
pub const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;
/// `BPF_MAP_TYPE_HASH_OF_MAPS`: keys to map ids.
pub const BPF_MAP_TYPE_HASH_OF_MAPS: u32 = 13;

/// Whether programs see the values of maps of this type as memory (not for
/// program arrays and maps of maps, whose values are ids).
fn values_are_memory(map_type: u32) -> bool {
    !matches!(
        map_type,
        BPF_MAP_TYPE_PROG_ARRAY | BPF_MAP_TYPE_ARRAY_OF_MAPS | BPF_MAP_TYPE_HASH_OF_MAPS
    )
}

const MAGIC: u32 = 0x7562_6d70; // "pmbu"
const VERSION: u32 = 2;
/// Size of the region header.
const HEADER_SIZE: usize = 128;

/// What a map is: the fields of `BPF_MAP_CREATE` that matter here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// Map name (for messages and region names).
    pub name: String,
    /// `enum bpf_map_type`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum entries.
    pub max_entries: u32,
    /// `map_flags`.
    pub flags: u32,
    /// `map_extra` (bloom filters: the number of hash functions in the low
    /// 4 bits, 0 for the default 5).
    pub map_extra: u64,
}

/// Map errors, as the kernel's errno values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// A kernel error code (`ENOENT`, `EEXIST`, `E2BIG`, `EINVAL`, ...).
    #[error("map `{map}`: {op}: {}", errno_name(*.errno))]
    Errno {
        /// The map.
        map: String,
        /// The operation.
        op: &'static str,
        /// The positive errno.
        errno: i32,
    },
    /// Creating or opening the shared region failed.
    #[error("map `{map}`: {message}")]
    Io {
        /// The map.
        map: String,
        /// The OS error.
        message: String,
    },
    /// A map type not implemented yet.
    #[error("map `{map}`: map type {map_type} is not supported yet")]
    Unsupported {
        /// The map.
        map: String,
        /// `enum bpf_map_type`.
        map_type: u32,
    },
}

impl MapError {
    /// The errno, for helpers that return `-errno`.
    pub fn errno(&self) -> i32 {
        match self {
            MapError::Errno { errno, .. } => *errno,
            MapError::Io { .. } => libc::EIO,
            MapError::Unsupported { .. } => libc::EOPNOTSUPP,
        }
    }
}

fn errno_name(e: i32) -> String {
    match e {
        libc::ENOENT => "-ENOENT (no such element)".into(),
        libc::EEXIST => "-EEXIST (element exists)".into(),
        libc::E2BIG => "-E2BIG (map is full or index out of range)".into(),
        libc::EINVAL => "-EINVAL (invalid argument)".into(),
        libc::ENOMEM => "-ENOMEM".into(),
        other => format!("-{other}"),
    }
}

/// The header at the start of every map region.
#[repr(C)]
struct Header {
    magic: u32,
    version: u32,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
    /// Hash maps: number of buckets (a power of two).
    n_buckets: u32,
    /// Hash maps: element count.
    count: AtomicU32,
    /// Hash maps: the free-list lock.
    free_lock: AtomicU32,
    /// Hash maps: head of the free list (element index + 1, 0 = empty).
    free_head: AtomicU32,
    /// Hash seed.
    seed: u32,
    /// `map_extra`.
    map_extra: u64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);

impl Layout {
    /// The storage layout of a supported map type.
    fn for_spec(spec: &MapSpec) -> Option<Layout> {
        Some(match spec.map_type {
            BPF_MAP_TYPE_ARRAY
            | array::BPF_MAP_TYPE_PERCPU_ARRAY
            | BPF_MAP_TYPE_PROG_ARRAY
            | BPF_MAP_TYPE_ARRAY_OF_MAPS => Layout::Array(array::Layout::new(spec)),
            BPF_MAP_TYPE_HASH
            | hash::BPF_MAP_TYPE_LRU_HASH
            | hash::BPF_MAP_TYPE_PERCPU_HASH
            | hash::BPF_MAP_TYPE_LRU_PERCPU_HASH
            | BPF_MAP_TYPE_HASH_OF_MAPS => Layout::Hash(hash::Layout::new(spec)),
            ringbuf::BPF_MAP_TYPE_RINGBUF => Layout::RingBuf(ringbuf::Layout::new(spec)),
            queue::BPF_MAP_TYPE_QUEUE | queue::BPF_MAP_TYPE_STACK => {
                Layout::Queue(queue::Layout::new(spec))
            }
            bloom::BPF_MAP_TYPE_BLOOM_FILTER => Layout::Bloom(bloom::Layout::new(spec)),
            lpm::BPF_MAP_TYPE_LPM_TRIE => Layout::Lpm(lpm::Layout::new(spec)),
            perf::BPF_MAP_TYPE_PERF_EVENT_ARRAY => Layout::Perf(perf::Layout::new(spec)),
            stackmap::BPF_MAP_TYPE_STACK_TRACE => Layout::Stack(stackmap::Layout::new(spec)),
            _ => return None,
        })
    }

    /// Bytes of the region.
    fn size(&self) -> usize {
        match self {
            Layout::Array(l) => l.size,
            Layout::Hash(l) => l.size,
            Layout::RingBuf(l) => l.size,
            Layout::Queue(l) => l.size,
            Layout::Bloom(l) => l.size,
            Layout::Lpm(l) => l.size,
            Layout::Perf(l) => l.size,
            Layout::Stack(l) => l.size,
        }
    }

    /// Where the mirrored part of the region starts (ring buffers).
    fn mirror_from(&self) -> Option<usize> {
        match self {
            Layout::RingBuf(l) => Some(l.mirror_from()),
            _ => None,
        }
    }
}

fn round8(n: u32) -> usize {
    (n as usize).div_ceil(8) * 8
}

/// A map: its spec and its shared storage.
#[derive(Debug)]
pub struct Map {
    spec: MapSpec,
    region: SharedRegion,
    layout: Layout,
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    Array(array::Layout),
    Hash(hash::Layout),
    RingBuf(ringbuf::Layout),
    Queue(queue::Layout),
    Bloom(bloom::Layout),
    Lpm(lpm::Layout),
    Perf(perf::Layout),
    Stack(stackmap::Layout),
}

impl Map {
    /// Creates a map in an anonymous shared region (memfd).
    pub fn create(spec: MapSpec) -> Result<Map, MapError> {
        Map::create_with(spec, SharedRegion::anonymous_mirrored)
    }

    /// Creates a map in a new 0600 file at `path` that other processes can
    /// [`Map::open`]; the file is removed when this map is dropped.
    pub fn create_at(spec: MapSpec, path: &Path) -> Result<Map, MapError> {
        Map::create_with(spec, |_, len, mirror| {
            SharedRegion::create_file_mirrored(path, len, mirror)
        })
    }

    fn create_with(
        mut spec: MapSpec,
        make: impl FnOnce(&str, usize, Option<usize>) -> std::io::Result<SharedRegion>,
    ) -> Result<Map, MapError> {
        if spec.map_type == perf::BPF_MAP_TYPE_PERF_EVENT_ARRAY && spec.max_entries == 0 {
            // libbpf sizes perf event arrays to the CPUs when unset.
            spec.max_entries = u32::try_from(percpu::ncpus()).unwrap_or(1);
        }
        let einval = |op| MapError::Errno {
            map: spec.name.clone(),
            op,
            errno: libc::EINVAL,
        };
        if Layout::for_spec(&spec).is_none() {
            return Err(MapError::Unsupported {
                map: spec.name.clone(),
                map_type: spec.map_type,
            });
        }
        if spec.map_type == stackmap::BPF_MAP_TYPE_STACK_TRACE && !stackmap::valid(&spec) {
            return Err(einval(
                "create (stack trace maps take u32 keys and values of at most 127 frames)",
            ));
        }
        if spec.map_type == ringbuf::BPF_MAP_TYPE_RINGBUF {
            if !ringbuf::valid_size(&spec) {
                return Err(einval(
                    "create (ring size must be a power of two and a multiple of the page size)",
                ));
            }
        } else if spec.max_entries == 0 || spec.value_size == 0 {
            return Err(einval("create"));
        }
        if matches!(
            spec.map_type,
            queue::BPF_MAP_TYPE_QUEUE
                | queue::BPF_MAP_TYPE_STACK
                | bloom::BPF_MAP_TYPE_BLOOM_FILTER
        ) && spec.key_size != 0
        {
            return Err(einval(
                "create (queues, stacks and bloom filters have no keys)",
            ));
        }
        // As the kernel: only bloom filters take map_extra (the number of
        // hash functions, 0..=15).
        if spec.map_extra != 0
            && (spec.map_type != bloom::BPF_MAP_TYPE_BLOOM_FILTER || spec.map_extra > 0xf)
        {
            return Err(einval(
                "create (map_extra is only for bloom filters: 1..15 hash functions)",
            ));
        }
        match spec.map_type {
            BPF_MAP_TYPE_PROG_ARRAY if spec.key_size != 4 || spec.value_size != 4 => {
                return Err(einval("create (program arrays map u32 to u32)"))
            }
            BPF_MAP_TYPE_ARRAY_OF_MAPS | BPF_MAP_TYPE_HASH_OF_MAPS
                if spec.value_size != 4 || spec.key_size == 0 =>
            {
                return Err(einval("create (maps of maps hold u32 map ids)"))
            }
            BPF_MAP_TYPE_ARRAY | array::BPF_MAP_TYPE_PERCPU_ARRAY if spec.key_size != 4 => {
                return Err(einval("create (array keys are 4 bytes)"))
            }
            BPF_MAP_TYPE_HASH
            | hash::BPF_MAP_TYPE_LRU_HASH
            | hash::BPF_MAP_TYPE_PERCPU_HASH
            | hash::BPF_MAP_TYPE_LRU_PERCPU_HASH
                if spec.key_size == 0 =>
            {
                return Err(einval("create"))
            }
            lpm::BPF_MAP_TYPE_LPM_TRIE
                if spec.key_size <= 4
                    || spec.key_size - 4 > lpm::LPM_DATA_SIZE_MAX
                    || spec.flags & BPF_F_NO_PREALLOC == 0 =>
            {
                return Err(einval(
                    "create (LPM tries need BPF_F_NO_PREALLOC and a key of 4 + 1..256 bytes)",
                ))
            }
            _ => {}
        }
        let layout = Layout::for_spec(&spec).ok_or_else(|| MapError::Unsupported {
            map: spec.name.clone(),
            map_type: spec.map_type,
        })?;
        let size = layout.size();
        let region = make(&spec.name, size, layout.mirror_from()).map_err(|e| MapError::Io {
            map: spec.name.clone(),
            message: e.to_string(),
        })?;
        let map = Map {
            spec,
            region,
            layout,
        };
        let n_buckets = match map.layout {
            Layout::Hash(l) => u32::try_from(l.n_buckets).unwrap_or(u32::MAX),
            _ => 0,
        };
        let header = Header {
            magic: MAGIC,
            version: VERSION,
            map_type: map.spec.map_type,
            key_size: map.spec.key_size,
            value_size: map.spec.value_size,
            max_entries: map.spec.max_entries,
            flags: map.spec.flags,
            n_buckets,
            count: AtomicU32::new(0),
            free_lock: AtomicU32::new(0),
            free_head: AtomicU32::new(0),
            seed: random_u32(),
            map_extra: map.spec.map_extra,
        };
        // SAFETY: the region is page aligned, at least HEADER_SIZE bytes,
        // and not yet shared with anyone.
        unsafe { std::ptr::write(map.region.as_ptr() as *mut Header, header) };
        if let Layout::Hash(l) = map.layout {
            hash::init(&map, &l);
        }
        Ok(map)
    }

    /// Opens a map another process created with [`Map::create_at`].
    pub fn open(path: &Path) -> Result<Map, MapError> {
        let name = path.display().to_string();
        let io = |message: String| MapError::Io {
            map: name.clone(),
            message,
        };
        let region = SharedRegion::open_file(path).map_err(|e| io(e.to_string()))?;
        if region.len() < HEADER_SIZE {
            return Err(io("not a userbpf map region (too small)".into()));
        }
        // SAFETY: the region holds at least HEADER_SIZE bytes, page aligned.
        let h = unsafe { &*(region.as_ptr() as *const Header) };
        if h.magic != MAGIC || h.version != VERSION {
            return Err(io("not a userbpf map region (bad magic)".into()));
        }
        let spec = MapSpec {
            name: name.clone(),
            map_type: h.map_type,
            key_size: h.key_size,
            value_size: h.value_size,
            max_entries: h.max_entries,
            flags: h.flags,
            map_extra: h.map_extra,
        };
        let layout = Layout::for_spec(&spec).ok_or_else(|| MapError::Unsupported {
            map: name.clone(),
            map_type: spec.map_type,
        })?;
        let needed = layout.size();
        if region.len() < needed {
            return Err(io("region smaller than its header says".into()));
        }
        let region = match layout.mirror_from() {
            // Map again with the data area mirrored.
            Some(m) => {
                SharedRegion::open_file_mirrored(path, Some(m)).map_err(|e| io(e.to_string()))?
            }
            None => region,
        };
        Ok(Map {
            spec,
            region,
            layout,
        })
    }

    fn header(&self) -> &Header {
        // SAFETY: the region starts with a Header (checked at creation or
        // open); mutable fields are atomics.
        unsafe { &*(self.region.as_ptr() as *const Header) }
    }

    /// The map's spec.
    pub fn spec(&self) -> &MapSpec {
        &self.spec
    }

    /// The value area, the only part of the region programs may access
    /// (read-only when the map has `BPF_F_RDONLY_PROG`).
    pub fn value_region(&self) -> Region {
        let (off, len) = match self.layout {
            Layout::Array(l) => (l.values, l.elem_stride * self.spec.max_entries as usize),
            Layout::Hash(l) => (l.values, l.elem_stride * self.spec.max_entries as usize),
            // Records are granted one by one when reserved; queue values are
            // copied in and out by the helpers.
            Layout::RingBuf(l) => (l.data, 0),
            Layout::Queue(l) => (l.values, 0),
            Layout::Bloom(_) => (HEADER_SIZE, 0),
            Layout::Lpm(l) => (l.values, l.value_stride * self.spec.max_entries as usize),
            // Samples are copied in by the helper.
            Layout::Perf(_) => (HEADER_SIZE, 0),
            // Traces are copied out by lookups; programs never see them.
            Layout::Stack(_) => (HEADER_SIZE, 0),
        };
        // Programs never see the ids in program arrays and maps of maps.
        let len = if values_are_memory(self.spec.map_type) {
            len
        } else {
            0
        };
        let writable = self.spec.flags & crate::object::BPF_F_RDONLY_PROG == 0;
        // SAFETY: `off + len` lies within the region by construction.
        let ptr = unsafe { self.region.as_ptr().add(off) };
        Region::new(ptr, len, writable, RegionKind::MapValue)
    }

    /// A stable handle programs receive for `lddw src=1/5`: the address of
    /// the map's header.
    pub fn handle(&self) -> u64 {
        self.region.as_ptr() as u64
    }

    /// The backing file, for maps created with [`Map::create_at`].
    pub fn path(&self) -> Option<&Path> {
        self.region.path()
    }

    fn errno(&self, op: &'static str, errno: i32) -> MapError {
        MapError::Errno {
            map: self.spec.name.clone(),
            op,
            errno,
        }
    }

    fn check_key(&self, op: &'static str, key: &[u8]) -> Result<(), MapError> {
        if key.len() != self.spec.key_size as usize {
            return Err(self.errno(op, libc::EINVAL));
        }
        Ok(())
    }

    /// An array map's values (not per-CPU): the address of index 0, the
    /// bytes per index and the number of entries (the region lives as long
    /// as the map). `None` for other maps.
    pub fn array_values(&self) -> Option<(u64, u64, u32)> {
        match &self.layout {
            Layout::Array(l) if l.percpu.is_none() && self.spec.map_type == BPF_MAP_TYPE_ARRAY => {
                Some((
                    self.region.as_ptr() as u64 + l.values as u64,
                    l.elem_stride as u64,
                    self.spec.max_entries,
                ))
            }
            _ => None,
        }
    }

    /// A pointer to the value of `key` (`bpf_map_lookup_elem`).
    pub fn lookup_ptr(&self, key: &[u8]) -> Option<*mut u8> {
        if key.len() != self.spec.key_size as usize || !values_are_memory(self.spec.map_type) {
            return None;
        }
        match &self.layout {
            Layout::Array(l) => array::lookup(self, l, key),
            Layout::Hash(l) => hash::lookup(self, l, key),
            Layout::RingBuf(_) | Layout::Queue(_) | Layout::Bloom(_) => None,
            Layout::Lpm(_) => self.lpm_lookup(key),
            Layout::Perf(_) | Layout::Stack(_) => None,
        }
    }

    /// A pointer to the value of `key` in CPU slot `cpu` of a per-CPU map
    /// (`bpf_map_lookup_percpu_elem`: in user space a CPU slot is the one
    /// a run leases, see [`percpu`]); `None` for other maps, absent keys
    /// and slots past the map's.
    pub fn lookup_ptr_on_cpu(&self, key: &[u8], cpu: usize) -> Option<*mut u8> {
        if key.len() != self.spec.key_size as usize {
            return None;
        }
        match &self.layout {
            Layout::Array(l) => array::lookup_on_cpu(self, l, key, cpu),
            Layout::Hash(l) => hash::lookup_on_cpu(self, l, key, cpu),
            _ => None,
        }
    }

    /// CPU slots of a per-CPU map (`None` for other maps).
    pub fn percpu_slots(&self) -> Option<usize> {
        match &self.layout {
            Layout::Array(l) => l.percpu.map(|p| p.0),
            Layout::Hash(l) => l.percpu.map(|p| p.0),
            _ => None,
        }
    }

    /// `bpf_map_update_elem` from a program: per-CPU maps update the run's
    /// CPU slot only.
    pub fn update_from_program(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
    ) -> Result<(), MapError> {
        match &self.layout {
            Layout::Array(l) if l.percpu.is_some() => {
                self.check_key("update", key)?;
                if value.len() != self.spec.value_size as usize || flags > BPF_EXIST {
                    return Err(self.errno("update", libc::EINVAL));
                }
                array::update_from_program(self, l, key, value, flags)
            }
            Layout::Hash(l) if l.percpu.is_some() => {
                self.check_key("update", key)?;
                if value.len() != self.spec.value_size as usize || flags > BPF_EXIST {
                    return Err(self.errno("update", libc::EINVAL));
                }
                hash::update(self, l, key, value, flags, true)
            }
            _ => self.update(key, value, flags),
        }
    }

    /// A copy of the value of `key` (for per-CPU maps every CPU's value,
    /// `round_up(value_size, 8)` bytes each, as the kernel returns them).
    pub fn lookup(&self, key: &[u8]) -> Option<Vec<u8>> {
        if let Layout::Array(l) = &self.layout {
            if key.len() != self.spec.key_size as usize {
                return None;
            }
            return array::lookup_all(self, l, key);
        }
        if let Layout::Hash(l) = &self.layout {
            if key.len() != self.spec.key_size as usize {
                return None;
            }
            return hash::lookup_all(self, l, key);
        }
        if let Layout::Stack(_) = &self.layout {
            return self.stack_lookup(key);
        }
        let p = self.lookup_ptr(key)?;
        let mut v = vec![0u8; self.spec.value_size as usize];
        // SAFETY: `p` points to a value of `value_size` bytes in the region.
        unsafe { std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), v.len()) };
        Some(v)
    }

    /// `bpf_map_update_elem`.
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        self.check_key("update", key)?;
        let value_len = match &self.layout {
            Layout::Array(l) if l.percpu.is_some() => l.elem_stride,
            Layout::Hash(l) if l.percpu.is_some() => l.elem_stride,
            _ => self.spec.value_size as usize,
        };
        if value.len() != value_len || flags > BPF_EXIST {
            return Err(self.errno("update", libc::EINVAL));
        }
        match &self.layout {
            Layout::Array(l) => array::update(self, l, key, value, flags),
            Layout::Hash(l) => hash::update(self, l, key, value, flags, false),
            Layout::RingBuf(_) => Err(self.errno("update", libc::EINVAL)),
            Layout::Queue(_) => self.push(value, flags),
            Layout::Bloom(_) => self.bloom_push(value),
            Layout::Lpm(_) => self.lpm_update(key, value, flags),
            // The kernel stores perf event fds; user space has no such fds.
            Layout::Perf(_) => Err(self.errno("update", libc::EOPNOTSUPP)),
            // As the kernel: only bpf_get_stackid fills stack trace maps.
            Layout::Stack(_) => Err(self.errno("update", libc::EINVAL)),
        }
    }

    /// `bpf_map_delete_elem`.
    pub fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        self.check_key("delete", key)?;
        match &self.layout {
            Layout::Array(_) | Layout::RingBuf(_) | Layout::Queue(_) | Layout::Bloom(_) => {
                Err(self.errno("delete", libc::EINVAL))
            }
            Layout::Hash(l) => hash::delete(self, l, key),
            Layout::Lpm(_) => self.lpm_delete(key),
            Layout::Perf(_) => Err(self.errno("delete", libc::EOPNOTSUPP)),
            Layout::Stack(_) => self.stack_delete(key).map_err(|e| self.errno("delete", e)),
        }
    }

    /// Every present key, in storage order.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        match &self.layout {
            Layout::Array(_) => (0..self.spec.max_entries)
                .map(|i| i.to_le_bytes().to_vec())
                .collect(),
            Layout::Hash(l) => hash::keys(self, l),
            Layout::RingBuf(_) | Layout::Queue(_) | Layout::Bloom(_) => Vec::new(),
            Layout::Lpm(_) => self.lpm_keys(),
            Layout::Perf(_) => Vec::new(),
            Layout::Stack(_) => self.stack_keys(),
        }
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: `b` is a valid 4-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        0x9e37_79b9
    }
}
