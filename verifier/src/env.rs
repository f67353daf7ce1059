//! What the verifier knows about a program besides its instructions: its
//! kind (which decides the context's layout and the helpers it may call)
//! and the maps its `lddw`s refer to.

use std::sync::Arc;

use userbpf_vm::object::btf::Btf;
use userbpf_vm::object::{
    AttachTarget, AttachType, FuncReturn, FuncSig, MapDef, ObjProgram, Object, ProgramType,
    BPF_F_RDONLY_PROG, BPF_F_WRONLY_PROG,
};

use crate::ctx::Context;

/// `BPF_MAP_TYPE_*` numbers the verifier treats specially.
pub mod map_type {
    /// `BPF_MAP_TYPE_HASH`.
    pub const HASH: u32 = 1;
    /// `BPF_MAP_TYPE_ARRAY`.
    pub const ARRAY: u32 = 2;
    /// `BPF_MAP_TYPE_PROG_ARRAY`.
    pub const PROG_ARRAY: u32 = 3;
    /// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`.
    pub const PERF_EVENT_ARRAY: u32 = 4;
    /// `BPF_MAP_TYPE_PERCPU_HASH`.
    pub const PERCPU_HASH: u32 = 5;
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`.
    pub const PERCPU_ARRAY: u32 = 6;
    /// `BPF_MAP_TYPE_LRU_PERCPU_HASH`.
    pub const LRU_PERCPU_HASH: u32 = 10;
    /// `BPF_MAP_TYPE_STACK_TRACE`.
    pub const STACK_TRACE: u32 = 7;
    /// `BPF_MAP_TYPE_CGROUP_ARRAY`.
    pub const CGROUP_ARRAY: u32 = 8;
    /// `BPF_MAP_TYPE_DEVMAP`.
    pub const DEVMAP: u32 = 14;
    /// `BPF_MAP_TYPE_SOCKMAP`.
    pub const SOCKMAP: u32 = 15;
    /// `BPF_MAP_TYPE_CPUMAP`.
    pub const CPUMAP: u32 = 16;
    /// `BPF_MAP_TYPE_SOCKHASH`.
    pub const SOCKHASH: u32 = 18;
    /// `BPF_MAP_TYPE_REUSEPORT_SOCKARRAY`.
    pub const REUSEPORT_SOCKARRAY: u32 = 20;
    /// `BPF_MAP_TYPE_XSKMAP`.
    pub const XSKMAP: u32 = 17;
    /// `BPF_MAP_TYPE_DEVMAP_HASH`.
    pub const DEVMAP_HASH: u32 = 25;
    /// `BPF_MAP_TYPE_ARRAY_OF_MAPS`.
    pub const ARRAY_OF_MAPS: u32 = 12;
    /// `BPF_MAP_TYPE_HASH_OF_MAPS`.
    pub const HASH_OF_MAPS: u32 = 13;
    /// `BPF_MAP_TYPE_QUEUE`.
    pub const QUEUE: u32 = 22;
    /// `BPF_MAP_TYPE_STACK`.
    pub const STACK: u32 = 23;
    /// `BPF_MAP_TYPE_RINGBUF`.
    pub const RINGBUF: u32 = 27;
    /// `BPF_MAP_TYPE_BLOOM_FILTER`.
    pub const BLOOM_FILTER: u32 = 30;
    /// `BPF_MAP_TYPE_TASK_STORAGE`.
    pub const TASK_STORAGE: u32 = 29;
    /// `BPF_MAP_TYPE_CGRP_STORAGE`.
    pub const CGRP_STORAGE: u32 = 32;
    /// `BPF_MAP_TYPE_CGROUP_STORAGE`.
    pub const CGROUP_STORAGE: u32 = 19;
    /// `BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE`.
    pub const PERCPU_CGROUP_STORAGE: u32 = 21;
    /// `BPF_MAP_TYPE_SK_STORAGE`.
    pub const SK_STORAGE: u32 = 24;
    /// `BPF_MAP_TYPE_INODE_STORAGE`.
    pub const INODE_STORAGE: u32 = 28;
    /// `BPF_MAP_TYPE_USER_RINGBUF`.
    pub const USER_RINGBUF: u32 = 31;
}

/// A map as the verifier sees it (`struct bpf_map`'s shape).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapInfo {
    /// The map's name, for messages.
    pub name: String,
    /// `enum bpf_map_type`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum entries.
    pub max_entries: u32,
    /// `BPF_F_RDONLY_PROG`: programs may read values but not write them
    /// (`.rodata`).
    pub read_only: bool,
    /// `BPF_F_WRONLY_PROG`: programs may write values but not read them.
    pub write_only: bool,
    /// Whether `lddw` may take the address of its value
    /// (`BPF_PSEUDO_MAP_VALUE`: global data, single-value arrays).
    pub direct_value: bool,
    /// The value's bytes, for read-only maps whose contents are known
    /// at verification time (`.rodata`): format strings are checked for
    /// their terminating NUL.
    pub contents: Option<Vec<u8>>,
    /// Maps of maps: the index of a map with the inner maps' shape (the
    /// first map in the initial slots).
    pub inner: Option<u32>,
    /// Byte offset of the `struct bpf_spin_lock` in each value (from the
    /// value's BTF type), which `bpf_spin_lock` takes and programs may not
    /// read or write directly.
    pub spin_lock: Option<u32>,
    /// Byte offset of the `struct bpf_timer` in each value (from the
    /// value's BTF type), which the timer helpers take and programs may
    /// not read or write directly.
    pub timer: Option<u32>,
}

impl MapInfo {
    /// A map of this shape, read and written by programs, without global
    /// data, inner maps or a lock.
    pub fn new(
        name: &str,
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> MapInfo {
        MapInfo {
            name: name.to_string(),
            map_type,
            key_size,
            value_size,
            max_entries,
            read_only: false,
            write_only: false,
            direct_value: false,
            contents: None,
            inner: None,
            spin_lock: None,
            timer: None,
        }
    }

    /// The verifier's view of an object's map definition.
    pub fn from_def(def: &MapDef) -> MapInfo {
        MapInfo {
            name: def.name.clone(),
            map_type: def.map_type,
            key_size: def.key_size,
            value_size: def.value_size,
            max_entries: def.max_entries,
            read_only: def.flags & BPF_F_RDONLY_PROG != 0,
            write_only: def.flags & BPF_F_WRONLY_PROG != 0,
            direct_value: def.map_type == map_type::ARRAY && def.max_entries == 1,
            contents: if def.flags & BPF_F_RDONLY_PROG != 0 {
                def.initial.clone()
            } else {
                None
            },
            inner: None,
            spin_lock: def.spin_lock,
            timer: def.timer,
        }
    }

    /// Whether programs may only read the map (`BPF_F_RDONLY_PROG`, which
    /// the kernel also sets on device maps).
    pub fn prog_read_only(&self) -> bool {
        self.read_only || matches!(self.map_type, map_type::DEVMAP | map_type::DEVMAP_HASH)
    }

    /// Whether a lookup returns a pointer to a value (not an inner map or a
    /// special object).
    pub fn has_values(&self) -> bool {
        !matches!(
            self.map_type,
            map_type::PROG_ARRAY
                | map_type::PERF_EVENT_ARRAY
                | map_type::RINGBUF
                | map_type::QUEUE
                | map_type::STACK
                | map_type::BLOOM_FILTER
                | map_type::ARRAY_OF_MAPS
                | map_type::HASH_OF_MAPS
        )
    }
}

/// Everything about a program but its instructions.
#[derive(Clone, Debug)]
pub struct Env {
    /// The kernel program type, when the program comes from an object
    /// (`None`: raw bytecode, run on a memory buffer).
    pub prog_type: Option<ProgramType>,
    /// The expected attach type, which some program types' rules depend
    /// on (`None`: the type's default, attach type 0).
    pub attach_type: Option<AttachType>,
    /// The context `r1` points to at entry.
    pub context: Context,
    /// Maps by the index the `lddw`s carry.
    pub maps: Vec<MapInfo>,
    /// Function-name of each subprogram start pc, for messages.
    pub subprogram_names: Vec<(String, usize)>,
    /// Whether the program may sleep (`BPF_F_SLEEPABLE`, libbpf's `.s`
    /// sections): outside an RCU read section, pointers it reads from
    /// kernel structures are untrusted.
    pub sleepable: bool,
    /// The kernel's types, for pointers to kernel structures
    /// (`PTR_TO_BTF_ID`: `bpf_get_current_task_btf`); `None`: the running
    /// kernel's (`/sys/kernel/btf/vmlinux`), read when first needed.
    pub kernel_btf: Option<Arc<Btf>>,
    /// The kernel function or tracepoint a tracing program attaches to
    /// (`fentry/NAME`, `fexit/NAME`, `fmod_ret/NAME`, `tp_btf/NAME`): when
    /// the kernel's BTF has it, the context's words are its arguments,
    /// typed as the kernel types them (`btf_ctx_access`); otherwise plain
    /// numbers.
    pub attach_btf_name: Option<String>,
    /// Start pcs of the subprograms whose BTF prototype returns no scalar
    /// (`void`, a pointer): the kernel allows neither `BPF_LD_ABS`/`IND`
    /// nor tail calls in them (`check_btf_func`).
    pub non_scalar_returns: Vec<usize>,
    /// The subprograms with `BTF_FUNC_GLOBAL` linkage: each is verified on
    /// its own, for any arguments its prototype allows, and each call's
    /// arguments are checked against that prototype, as the kernel does
    /// (`do_check_subprogs`, `btf_check_subprog_call`).
    pub global_functions: Vec<GlobalFunction>,
}

/// A global function of a program (a non-static C function).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalFunction {
    /// Its first pc in the program.
    pub start: usize,
    /// Its name.
    pub name: String,
    /// What the object's BTF says of it.
    pub sig: FuncSig,
}

/// The maps of `object`, followed by the inner map definitions of its
/// maps of maps (`__array(values, struct { ... })`), which the lookups in
/// them give. Without one, the first map in a map of maps' initial slots
/// has the inner maps' shape.
fn object_maps(object: &Object) -> Vec<MapInfo> {
    let mut maps: Vec<MapInfo> = object.maps.iter().map(MapInfo::from_def).collect();
    for (i, def) in object.maps.iter().enumerate() {
        let inner = match &def.inner {
            Some(inner) => {
                let at = maps.len();
                maps.push(MapInfo::from_def(inner));
                u32::try_from(at).ok()
            }
            None => def.initial_slots.first().and_then(|(_, name)| {
                let j = object.maps.iter().position(|d| &d.name == name)?;
                u32::try_from(j).ok()
            }),
        };
        if let Some(m) = maps.get_mut(i) {
            m.inner = inner;
        }
    }
    maps
}

impl Env {
    /// A raw program run on a buffer of `len` bytes (`userbpf run
    /// --mem`): `r1` points to it and `r2` holds `len`; with `len == 0`
    /// both are 0, as the engines pass them.
    pub fn raw(len: u32) -> Env {
        Env {
            prog_type: None,
            attach_type: None,
            context: Context::Raw { len },
            maps: Vec::new(),
            subprogram_names: Vec::new(),
            sleepable: false,
            kernel_btf: None,
            attach_btf_name: None,
            non_scalar_returns: Vec::new(),
            global_functions: Vec::new(),
        }
    }

    /// A program of an object: its kind's context and the object's maps.
    pub fn for_object(object: &Object, program: &ObjProgram) -> Env {
        Env {
            prog_type: Some(program.kind.prog_type),
            attach_type: program.kind.attach_type,
            context: Context::for_kind(&program.kind),
            maps: object_maps(object),
            subprogram_names: program.subprograms.clone(),
            non_scalar_returns: program
                .subprograms
                .iter()
                .filter(|(name, _)| {
                    object
                        .functions
                        .get(name)
                        .is_some_and(|f| f.ret != FuncReturn::Scalar)
                })
                .map(|&(_, pc)| pc)
                .collect(),
            global_functions: program
                .subprograms
                .iter()
                .filter_map(|(name, pc)| {
                    let sig = object.functions.get(name).filter(|f| f.global)?;
                    Some(GlobalFunction {
                        start: *pc,
                        name: name.clone(),
                        sig: sig.clone(),
                    })
                })
                .collect(),
            sleepable: program.kind.sleepable,
            kernel_btf: None,
            attach_btf_name: match &program.kind.target {
                AttachTarget::Btf { name } if program.kind.prog_type == ProgramType::Tracing => {
                    Some(name.clone())
                }
                _ => None,
            },
        }
    }

    /// The map at index `idx` of an `lddw`.
    pub fn map(&self, idx: i32) -> Option<&MapInfo> {
        usize::try_from(idx).ok().and_then(|i| self.maps.get(i))
    }
}
