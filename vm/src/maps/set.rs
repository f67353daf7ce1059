//! The maps of one object, instantiated: storage, the `lddw` resolver and
//! the map helpers bound to them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};

use super::bloom::BPF_MAP_TYPE_BLOOM_FILTER;
use super::{
    Map, MapError, MapSpec, BPF_ANY, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_ARRAY_OF_MAPS,
    BPF_MAP_TYPE_HASH_OF_MAPS, BPF_MAP_TYPE_PROG_ARRAY,
};
use crate::helpers::{neg_errno, HelperContext, HelperError, Helpers};
use crate::interp::{
    Config, MapAccel, MapResolver, PrepareError, PreparedProgram, ProgramArray, Vm,
};
use crate::isa::Lddw;
use crate::memory::{MemoryMap, Region, RegionKind};
use crate::object::{MapDef, Object};
use crate::program::Program;

/// `bpf_map_lookup_elem`.
pub const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
/// `bpf_map_update_elem`.
pub const BPF_FUNC_MAP_UPDATE_ELEM: i32 = 2;
/// `bpf_map_delete_elem`.
pub const BPF_FUNC_MAP_DELETE_ELEM: i32 = 3;
/// `bpf_perf_event_output`.
pub const BPF_FUNC_PERF_EVENT_OUTPUT: i32 = 25;
/// `bpf_map_push_elem`.
pub const BPF_FUNC_MAP_PUSH_ELEM: i32 = 87;
/// `bpf_map_pop_elem`.
pub const BPF_FUNC_MAP_POP_ELEM: i32 = 88;
/// `bpf_map_peek_elem`.
pub const BPF_FUNC_MAP_PEEK_ELEM: i32 = 89;
/// `bpf_ringbuf_output`.
pub const BPF_FUNC_RINGBUF_OUTPUT: i32 = 130;
/// `bpf_ringbuf_reserve`.
pub const BPF_FUNC_RINGBUF_RESERVE: i32 = 131;
/// `bpf_ringbuf_submit`.
pub const BPF_FUNC_RINGBUF_SUBMIT: i32 = 132;
/// `bpf_ringbuf_discard`.
pub const BPF_FUNC_RINGBUF_DISCARD: i32 = 133;
/// `bpf_ringbuf_query`.
pub const BPF_FUNC_RINGBUF_QUERY: i32 = 134;
/// `bpf_map_lookup_percpu_elem`.
pub const BPF_FUNC_MAP_LOOKUP_PERCPU_ELEM: i32 = 195;

/// Maps by index (the `imm` of `lddw src=5/6`) and by handle.
#[derive(Debug, Default)]
pub struct MapSet {
    maps: Vec<Arc<Map>>,
    /// Programs that program arrays can name, by id. Weak: the VMs that
    /// run them own them (programs hold helpers that hold this set).
    programs: RwLock<HashMap<u32, Weak<PreparedProgram>>>,
    /// (handle, index), for the helpers' lookups by handle: a short linear
    /// scan beats hashing for the few maps an object has.
    handles: Vec<(u64, usize)>,
    by_handle: HashMap<u64, usize>,
    /// Maps of maps, by index: the shape their inner maps have (what the
    /// verifier assumed of the maps a lookup gives).
    inner: HashMap<usize, InnerShape>,
}

/// What every inner map of a map of maps matches, as the kernel's
/// `bpf_map_meta_equal` has it: type, key and value sizes, flags (a
/// read-only inner map stays read-only to programs), and for arrays the
/// number of entries (`BPF_F_INNER_MAP` lifts that).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InnerShape {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    flags: u32,
    max_entries: Option<u32>,
}

/// `BPF_F_INNER_MAP`: the inner maps of this array's shape may have any
/// number of entries.
pub const BPF_F_INNER_MAP: u32 = 1 << 12;

impl InnerShape {
    fn of(map_type: u32, key_size: u32, value_size: u32, flags: u32, max_entries: u32) -> Self {
        let arrays = matches!(
            map_type,
            BPF_MAP_TYPE_ARRAY | super::array::BPF_MAP_TYPE_PERCPU_ARRAY
        );
        InnerShape {
            map_type,
            key_size,
            value_size,
            flags,
            max_entries: (arrays && flags & BPF_F_INNER_MAP == 0).then_some(max_entries),
        }
    }

    fn of_def(def: &MapDef) -> Self {
        Self::of(
            def.map_type,
            def.key_size,
            def.value_size,
            def.flags,
            def.max_entries,
        )
    }

    fn of_map(map: &Map) -> Self {
        let s = map.spec();
        Self::of(s.map_type, s.key_size, s.value_size, s.flags, s.max_entries)
    }
}

impl MapSet {
    /// Creates the maps an object defines; global data maps get their
    /// initial contents.
    pub fn from_object(obj: &Object) -> Result<MapSet, MapError> {
        let mut set = MapSet::default();
        for def in &obj.maps {
            set.push(create(def)?);
        }
        set.inner_shapes(obj);
        Ok(set)
    }

    /// Records the shape of the inner maps of `obj`'s maps of maps: their
    /// inner map definition, or else the first map their initial slots
    /// name (what the verifier assumes).
    fn inner_shapes(&mut self, obj: &Object) {
        for (i, def) in obj.maps.iter().enumerate() {
            let shape = match &def.inner {
                Some(inner) => Some(InnerShape::of_def(inner)),
                None => def
                    .initial_slots
                    .first()
                    .and_then(|(_, name)| obj.maps.iter().find(|m| &m.name == name))
                    .map(InnerShape::of_def),
            };
            if let Some(shape) = shape {
                self.inner.insert(i, shape);
            }
        }
    }

    /// Creates the maps an object defines as 0600 files in `dir` (one per
    /// map, named by [`MapSet::map_file`]) that other processes open with
    /// [`MapSet::open_in`]: how a session shares its maps with the traced
    /// processes. The files go when the maps are dropped.
    pub fn create_in(obj: &Object, dir: &Path) -> Result<MapSet, MapError> {
        let mut set = MapSet::default();
        for (i, def) in obj.maps.iter().enumerate() {
            let path = MapSet::map_file(dir, i, &def.name);
            set.push(create_with(def, |spec| Map::create_at(spec, &path))?);
        }
        set.inner_shapes(obj);
        Ok(set)
    }

    /// Opens the maps [`MapSet::create_in`] made in `dir` for the same
    /// object (their contents are shared, live).
    pub fn open_in(obj: &Object, dir: &Path) -> Result<MapSet, MapError> {
        let mut set = MapSet::default();
        for (i, def) in obj.maps.iter().enumerate() {
            let map = Map::open(&MapSet::map_file(dir, i, &def.name))?;
            let spec = map.spec();
            // (A perf event array without a size gets one per CPU.)
            let entries_differ = def.max_entries != 0 && spec.max_entries != def.max_entries;
            if (spec.map_type, spec.key_size, spec.value_size)
                != (def.map_type, def.key_size, def.value_size)
                || entries_differ
            {
                return Err(MapError::Errno {
                    map: def.name.clone(),
                    op: "open (the shared map's file does not match the object's definition)",
                    errno: libc::EINVAL,
                });
            }
            set.push(map);
        }
        set.inner_shapes(obj);
        Ok(set)
    }

    /// The file of map `index` (named `name`) in a session directory.
    pub fn map_file(dir: &Path, index: usize, name: &str) -> PathBuf {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        dir.join(format!("map{index}-{clean}"))
    }

    /// Adds a map; returns its index.
    pub fn push(&mut self, map: Map) -> usize {
        let i = self.maps.len();
        self.by_handle.insert(map.handle(), i);
        self.handles.push((map.handle(), i));
        self.maps.push(Arc::new(map));
        i
    }

    /// The maps, by index.
    pub fn maps(&self) -> &[Arc<Map>] {
        &self.maps
    }

    /// The map behind a handle a program passed to a helper.
    #[inline]
    pub fn by_handle(&self, handle: u64) -> Option<&Arc<Map>> {
        if self.handles.len() <= 16 {
            return self
                .handles
                .iter()
                .find(|(h, _)| *h == handle)
                .map(|&(_, i)| &self.maps[i]);
        }
        self.by_handle.get(&handle).map(|&i| &self.maps[i])
    }

    /// The value regions programs may access.
    pub fn regions(&self) -> Vec<Region> {
        self.maps
            .iter()
            .map(|m| m.value_region())
            .filter(|r| r.len > 0)
            .collect()
    }

    /// A VM for `program` bound to these maps: the map helpers join
    /// `helpers`, map loads resolve to these maps, their values are
    /// accessible, and the VM keeps the maps alive.
    pub fn vm(
        self: &Arc<MapSet>,
        program: &Program,
        helpers: &Helpers,
        config: Config,
    ) -> Result<Vm, PrepareError> {
        let mut all = helpers.clone();
        all.extend(&self.helpers());
        let mut prepared = PreparedProgram::with_maps(program, &all, config, self.as_ref())?;
        prepared.set_map_accel(Arc::clone(self) as Arc<dyn MapAccel>);
        let mut vm = Vm::from_prepared(Arc::new(prepared));
        for r in self.regions() {
            // SAFETY: the regions lie in maps of this set, which the VM keeps
            // alive (below) for as long as it can run.
            unsafe { vm.add_region(r) };
        }
        vm.keep_alive(Arc::clone(self) as Arc<dyn std::any::Any + Send + Sync>);
        vm.set_program_array(Some(Arc::clone(self) as Arc<dyn ProgramArray>));
        Ok(vm)
    }

    /// Another VM running the same prepared program as `vm` (made by
    /// [`MapSet::vm`] or [`MapSet::vm_for_object`] on this set) on these
    /// maps: its native code and maps are shared, its stack is its own.
    /// One per thread: how a probe hit on many threads at once runs.
    pub fn vm_sharing(self: &Arc<MapSet>, vm: &Vm) -> Vm {
        let mut out = Vm::from_prepared(Arc::clone(vm.prepared()));
        for r in self.regions() {
            // SAFETY: as in `vm`: the regions lie in maps of this set, kept
            // alive with the VM.
            unsafe { out.add_region(r) };
        }
        out.keep_alive(Arc::clone(self) as Arc<dyn std::any::Any + Send + Sync>);
        out.set_program_array(Some(Arc::clone(self) as Arc<dyn ProgramArray>));
        out
    }

    /// Makes `program` reachable from program arrays under `id` while
    /// something (a VM, see [`Vm::keep_alive`]) holds it.
    pub fn register_program(&self, id: u32, program: &Arc<PreparedProgram>) {
        if let Ok(mut p) = self.programs.write() {
            p.insert(id, Arc::downgrade(program));
        }
    }

    /// A VM for program `entry` of `obj` (see [`MapSet::vm`]) with the
    /// object's program arrays filled: every program they name is prepared
    /// and registered under its id (its position in the object, from 1), so
    /// `bpf_tail_call` reaches it.
    pub fn vm_for_object(
        self: &Arc<MapSet>,
        obj: &Object,
        entry: &str,
        helpers: &Helpers,
        config: Config,
    ) -> Result<Vm, ObjectVmError> {
        let program = |name: &str| -> Result<Program, ObjectVmError> {
            obj.program(name)
                .map_err(|e| ObjectVmError::Object(e.to_string()))?
                .to_program()
                .map_err(|e| ObjectVmError::Object(e.to_string()))
        };
        let id_of = |name: &str| {
            obj.programs
                .iter()
                .position(|p| p.name == name)
                .map(|i| i as u32 + 1)
        };
        let mut all = helpers.clone();
        all.extend(&self.helpers());
        let mut targets = Vec::new();
        for (outer, (def, map)) in obj.maps.iter().zip(&self.maps).enumerate() {
            if matches!(
                def.map_type,
                BPF_MAP_TYPE_ARRAY_OF_MAPS | BPF_MAP_TYPE_HASH_OF_MAPS
            ) {
                // Slots name maps of the object: store their ids.
                for (slot, name) in &def.initial_slots {
                    let index = obj
                        .maps
                        .iter()
                        .position(|m| &m.name == name)
                        .ok_or_else(|| {
                            ObjectVmError::Object(format!(
                                "map `{}` names unknown map `{name}`",
                                def.name
                            ))
                        })?;
                    let shape = self.inner.get(&outer).copied();
                    if let (Some(shape), Some(named)) = (shape, obj.maps.get(index)) {
                        if InnerShape::of_def(named) != shape {
                            return Err(ObjectVmError::Object(format!(
                                "map `{}` names map `{name}`, which does not match its inner map definition (type, key and value sizes, flags, entries of arrays)",
                                def.name
                            )));
                        }
                    }
                    let id = index as u32 + 1;
                    map.update(&slot.to_le_bytes(), &id.to_le_bytes(), BPF_ANY)
                        .map_err(|e| ObjectVmError::Object(e.to_string()))?;
                }
                continue;
            }
            for (slot, name) in &def.initial_slots {
                let id = id_of(name).ok_or_else(|| {
                    ObjectVmError::Object(format!(
                        "program array `{}` names unknown program `{name}`",
                        def.name
                    ))
                })?;
                let mut prepared =
                    PreparedProgram::with_maps(&program(name)?, &all, config, self.as_ref())?;
                prepared.set_map_accel(Arc::clone(self) as Arc<dyn MapAccel>);
                let prepared = Arc::new(prepared);
                crate::interp::engine_hook(&prepared);
                self.register_program(id, &prepared);
                targets.push(prepared);
                map.update(&slot.to_le_bytes(), &id.to_le_bytes(), BPF_ANY)
                    .map_err(|e| ObjectVmError::Object(e.to_string()))?;
            }
        }
        let mut vm = self.vm(&program(entry)?, helpers, config)?;
        for t in targets {
            vm.keep_alive(t as Arc<dyn std::any::Any + Send + Sync>);
        }
        Ok(vm)
    }

    /// `bpf_map_lookup_elem` (1), `bpf_map_update_elem` (2) and
    /// `bpf_map_delete_elem` (3) on these maps. Keys and values are read
    /// from program memory with checks; a first argument that is not one of
    /// these maps is a helper error (the verifier rules it out).
    pub fn helpers(self: &Arc<MapSet>) -> Helpers {
        let mut h = Helpers::new();
        let set = Arc::clone(self);
        h.register_kernel(BPF_FUNC_MAP_LOOKUP_ELEM, move |ctx, a| {
            let map = set.map_arg(a[0])?;
            let key = ctx.bytes(a[1], map.spec().key_size as usize)?;
            if matches!(
                map.spec().map_type,
                BPF_MAP_TYPE_ARRAY_OF_MAPS | BPF_MAP_TYPE_HASH_OF_MAPS
            ) {
                // Maps of maps: the inner map, named by its id.
                return Ok(set.inner_map(map, key).map_or(0, |m| m.handle()));
            }
            Ok(map.lookup_ptr(key).map_or(0, |p| p as u64))
        });
        let set = Arc::clone(self);
        h.register_kernel(BPF_FUNC_MAP_LOOKUP_PERCPU_ELEM, move |ctx, a| {
            let map = set.map_arg(a[0])?;
            let key = ctx.bytes(a[1], map.spec().key_size as usize)?;
            let cpu = usize::try_from(a[2]).unwrap_or(usize::MAX);
            Ok(map.lookup_ptr_on_cpu(key, cpu).map_or(0, |p| p as u64))
        });
        let set = Arc::clone(self);
        h.register_kernel(
            BPF_FUNC_MAP_UPDATE_ELEM,
            move |ctx: &mut HelperContext<'_>, a| {
                let map = set.map_arg(a[0])?;
                let key = ctx.bytes(a[1], map.spec().key_size as usize)?;
                // A copy: the value may point into the element it replaces
                // (on the stack when it is small: no allocation).
                let size = map.spec().value_size as usize;
                let mut small = [0u8; 128];
                let heap;
                let value: &[u8] = if size <= small.len() {
                    ctx.read_into(a[2], &mut small[..size])?;
                    &small[..size]
                } else {
                    heap = ctx.read(a[2], size)?;
                    &heap
                };
                Ok(match map.update_from_program(key, value, a[3]) {
                    Ok(()) => 0,
                    Err(e) => neg_errno(e.errno()),
                })
            },
        );
        let set = Arc::clone(self);
        h.register_kernel(BPF_FUNC_MAP_DELETE_ELEM, move |ctx, a| {
            let map = set.map_arg(a[0])?;
            let key = ctx.bytes(a[1], map.spec().key_size as usize)?;
            Ok(match map.delete(key) {
                Ok(()) => 0,
                Err(e) => neg_errno(e.errno()),
            })
        });
        self.ringbuf_helpers(&mut h);
        self.queue_helpers(&mut h);
        self.for_each_helper(&mut h);
        self.stackid_helper(&mut h);
        self.timer_helpers(&mut h);
        let set = Arc::clone(self);
        h.register_kernel(BPF_FUNC_PERF_EVENT_OUTPUT, move |ctx, a| {
            // (ctx, map, flags, data, size)
            let map = set.map_arg(a[1])?;
            if a[2] >> 32 != 0 {
                return Ok(neg_errno(libc::EINVAL));
            }
            // (Copied into the buffer from the program's memory directly.)
            let data = ctx.bytes(
                a[3],
                usize::try_from(a[4]).unwrap_or(usize::MAX).min(1 << 16),
            )?;
            Ok(match map.perf_output(a[2] & 0xffff_ffff, data) {
                Ok(()) => 0,
                Err(e) => neg_errno(e),
            })
        });
        h
    }

    fn ringbuf_helpers(self: &Arc<MapSet>, h: &mut Helpers) {
        let set = Arc::clone(self);
        h.register_kernel(BPF_FUNC_RINGBUF_OUTPUT, move |ctx, a| {
            let map = set.map_arg(a[0])?;
            let len = usize::try_from(a[2]).unwrap_or(usize::MAX);
            if len > map.spec().max_entries as usize {
                return Ok(neg_errno(libc::E2BIG));
            }
            // (A new record: never the memory `data` is in.)
            let data = ctx.bytes(a[1], len)?;
            Ok(if map.ringbuf_output(data) {
                0
            } else {
                neg_errno(libc::EAGAIN)
            })
        });
        let set = Arc::clone(self);
        h.register_kernel(BPF_FUNC_RINGBUF_RESERVE, move |ctx, a| {
            let map = set.map_arg(a[0])?;
            if a[2] != 0 {
                return Ok(0);
            }
            Ok(reserve_record(ctx, map, a[1]).map_or(0, |p| p as u64))
        });
        for (id, discard) in [
            (BPF_FUNC_RINGBUF_SUBMIT, false),
            (BPF_FUNC_RINGBUF_DISCARD, true),
        ] {
            let set = Arc::clone(self);
            h.register_kernel(id, move |_, a| {
                if set.commit_record(a[0], discard) {
                    Ok(0)
                } else {
                    Err(HelperError::Failed(format!(
                        "r1 ({:#x}) is not a reserved ring buffer record",
                        a[0]
                    )))
                }
            });
        }
        self.ringbuf_dynptr_helpers(h);
        let set = Arc::clone(self);
        h.register_kernel(BPF_FUNC_RINGBUF_QUERY, move |_, a| {
            Ok(set.map_arg(a[0])?.ringbuf_query(a[1]))
        });
    }

    /// `bpf_ringbuf_reserve_dynptr`, `_submit_dynptr`, `_discard_dynptr`:
    /// the record behind a [`crate::dynptr::Dynptr`], which a failed
    /// reservation leaves NULL (and which must still be submitted or
    /// discarded, as the verifier requires).
    fn ringbuf_dynptr_helpers(self: &Arc<MapSet>, h: &mut Helpers) {
        use crate::dynptr::{self, Dynptr};
        let set = Arc::clone(self);
        h.register_kernel(dynptr::BPF_FUNC_RINGBUF_RESERVE_DYNPTR, move |ctx, a| {
            let (size, flags, ptr) = (a[1], a[2], a[3]);
            let map = set.map_arg(a[0])?;
            let err = if flags != 0 {
                Some(libc::EINVAL)
            } else if size > dynptr::MAX_SIZE {
                Some(libc::E2BIG)
            } else {
                None
            };
            let record = match err {
                Some(_) => None,
                None => reserve_record(ctx, map, size),
            };
            let Some(p) = record else {
                Dynptr::NULL.store(ctx, ptr)?;
                return Ok(neg_errno(err.unwrap_or(libc::ENOMEM)));
            };
            Dynptr {
                data: p as u64,
                size: size as u32,
                kind: dynptr::KIND_RINGBUF,
            }
            .store(ctx, ptr)?;
            Ok(0)
        });
        for (id, discard) in [
            (dynptr::BPF_FUNC_RINGBUF_SUBMIT_DYNPTR, false),
            (dynptr::BPF_FUNC_RINGBUF_DISCARD_DYNPTR, true),
        ] {
            let set = Arc::clone(self);
            h.register_kernel(id, move |ctx, a| {
                let d = Dynptr::load(ctx, a[0])?;
                if d.data != 0 {
                    let ok = d.kind == dynptr::KIND_RINGBUF && set.commit_record(d.data, discard);
                    if !ok {
                        return Err(HelperError::Failed(format!(
                            "r1 ({:#x}) is not a ring buffer dynptr",
                            a[0]
                        )));
                    }
                }
                Dynptr::NULL.store(ctx, a[0])?;
                Ok(0)
            });
        }
    }

    /// Submits (or discards) the ring buffer record at `addr`: false if
    /// no ring of the set holds a reserved record there.
    fn commit_record(&self, addr: u64, discard: bool) -> bool {
        self.maps
            .iter()
            .find(|m| m.ringbuf_contains(addr))
            .is_some_and(|m| m.ringbuf_commit(addr, discard))
    }

    fn queue_helpers(self: &Arc<MapSet>, h: &mut Helpers) {
        let set = Arc::clone(self);
        h.register_kernel(BPF_FUNC_MAP_PUSH_ELEM, move |ctx, a| {
            let map = set.map_arg(a[0])?;
            let value = ctx.read(a[1], map.spec().value_size as usize)?;
            let r = if map.spec().map_type == BPF_MAP_TYPE_BLOOM_FILTER {
                map.bloom_push(&value)
            } else {
                map.push(&value, a[2])
            };
            Ok(match r {
                Ok(()) => 0,
                Err(e) => neg_errno(e.errno()),
            })
        });
        for (id, delete) in [
            (BPF_FUNC_MAP_POP_ELEM, true),
            (BPF_FUNC_MAP_PEEK_ELEM, false),
        ] {
            let set = Arc::clone(self);
            h.register_kernel(id, move |ctx, a| {
                let map = set.map_arg(a[0])?;
                if map.spec().map_type == BPF_MAP_TYPE_BLOOM_FILTER {
                    // peek(value): 0 if maybe present; pop is not supported.
                    if delete {
                        return Ok(neg_errno(libc::EOPNOTSUPP));
                    }
                    let value = ctx.read(a[1], map.spec().value_size as usize)?;
                    return Ok(if map.bloom_contains(&value) {
                        0
                    } else {
                        neg_errno(libc::ENOENT)
                    });
                }
                match map.pop(delete) {
                    Ok(v) => {
                        ctx.write(a[1], &v)?;
                        Ok(0)
                    }
                    Err(e) => Ok(neg_errno(e.errno())),
                }
            });
        }
    }

    /// The map whose id (position in this set, from 1) `outer` holds at
    /// `key`, if it has the shape of `outer`'s inner maps (programs were
    /// verified for that shape: a map of another shape, stored there by
    /// user space, is not found). None for a map of maps whose inner maps'
    /// shape is unknown.
    pub fn inner_map(&self, outer: &Map, key: &[u8]) -> Option<&Arc<Map>> {
        let outer_index = *self.by_handle.get(&outer.handle())?;
        let shape = self.inner.get(&outer_index)?;
        let v = outer.lookup(key)?;
        let id = u32::from_le_bytes(v.get(..4)?.try_into().ok()?);
        let map = self.maps.get(usize::try_from(id).ok()?.checked_sub(1)?)?;
        (InnerShape::of_map(map) == *shape).then_some(map)
    }

    #[inline]
    fn map_arg(&self, handle: u64) -> Result<&Arc<Map>, HelperError> {
        self.by_handle(handle)
            .ok_or_else(|| HelperError::Failed(format!("r1 ({handle:#x}) is not a map")))
    }
}

/// Reserves a record of `size` bytes in ring buffer `map` and grants the
/// run access to it.
fn reserve_record(ctx: &mut HelperContext<'_>, map: &Map, size: u64) -> Option<*mut u8> {
    let p = map.ringbuf_reserve(size)?;
    let len = usize::try_from(size).unwrap_or(0);
    // SAFETY: the record lies in the ring's mapping, which the set (held
    // by the helpers that call this) keeps alive past the run.
    unsafe { ctx.grant(Region::new(p, len, true, RegionKind::HelperMemory)) };
    Some(p)
}

fn create(def: &MapDef) -> Result<Map, MapError> {
    create_with(def, Map::create)
}

fn create_with(
    def: &MapDef,
    make: impl FnOnce(MapSpec) -> Result<Map, MapError>,
) -> Result<Map, MapError> {
    let map = make(MapSpec {
        name: def.name.clone(),
        map_type: def.map_type,
        key_size: def.key_size,
        value_size: def.value_size,
        max_entries: def.max_entries,
        flags: def.flags,
        map_extra: def.map_extra,
    })?;
    if let Some(initial) = &def.initial {
        if def.map_type == BPF_MAP_TYPE_ARRAY && initial.len() == def.value_size as usize {
            map.update(&0u32.to_le_bytes(), initial, BPF_ANY)?;
        }
    }
    Ok(map)
}

/// Why a VM for an object's program cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ObjectVmError {
    /// The object does not provide what is needed.
    #[error("{0}")]
    Object(String),
    /// A program does not prepare.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
}

impl ProgramArray for MapSet {
    fn get(&self, map: u64, index: u32) -> Option<Arc<PreparedProgram>> {
        let m = self.by_handle(map)?;
        if m.spec().map_type != BPF_MAP_TYPE_PROG_ARRAY {
            return None;
        }
        let v = m.lookup(&index.to_le_bytes())?;
        let id = u32::from_le_bytes(v.get(..4)?.try_into().ok()?);
        self.programs.read().ok()?.get(&id)?.upgrade()
    }
}

impl MapAccel for MapSet {
    #[inline]
    fn lookup(&self, mem: &MemoryMap, handle: u64, key: u64) -> Option<u64> {
        let map = self.by_handle(handle)?;
        let spec = map.spec();
        if matches!(
            spec.map_type,
            BPF_MAP_TYPE_ARRAY_OF_MAPS | BPF_MAP_TYPE_HASH_OF_MAPS
        ) {
            return None;
        }
        let key = mem.readable(key, spec.key_size as usize)?;
        Some(map.lookup_ptr(key).map_or(0, |p| p as u64))
    }

    fn array_values(&self, handle: u64) -> Option<(u64, u64, u32)> {
        self.by_handle(handle)?.array_values()
    }
}

impl MapResolver for MapSet {
    fn resolve(&self, _pc: usize, value: Lddw) -> Result<u64, String> {
        let get = |i: i32| {
            usize::try_from(i)
                .ok()
                .and_then(|i| self.maps.get(i))
                .ok_or_else(|| format!("map index {i} does not exist ({} maps)", self.maps.len()))
        };
        match value {
            Lddw::MapIdx(i) => Ok(get(i)?.handle()),
            Lddw::MapIdxValue { idx, off } => {
                let m = get(idx)?;
                if m.spec().map_type != BPF_MAP_TYPE_ARRAY || off >= m.spec().value_size {
                    return Err(format!(
                        "offset {off} is outside the value of map `{}` ({} bytes)",
                        m.spec().name,
                        m.spec().value_size
                    ));
                }
                Ok(m.value_region().start + u64::from(off))
            }
            Lddw::MapFd(_) | Lddw::MapValue { .. } => {
                Err("map file descriptors do not exist in user space; load maps by index (from an object)".into())
            }
            other => Err(format!("{other:?} is not a map load")),
        }
    }
}
