//! userbpf's kernel backend: places programs in the kernel. Today it loads
//! an object's program and maps with raw `bpf(2)` calls and test-runs them
//! (`BPF_PROG_TEST_RUN`), which the tests use to compare the user-space VM
//! with the kernel; attachment of kernel-only hooks (aya) lands with its
//! issue.
//!
//! What a load does as libbpf would: maps of maps get their inner maps'
//! shape and initial slots, perf event arrays one slot per CPU, kfunc calls
//! the running kernel's BTF ids, and programs that pass a callback's address
//! BTF describing their functions (`func_info`). It loads no object BTF yet,
//! so maps whose values hold a `bpf_timer` (or other BTF-described fields)
//! are refused by the kernel.
#![deny(missing_docs)]

pub mod attach;
pub mod sys;

use userbpf_vm::insn::{op, Insn};
use userbpf_vm::object::{FuncReturn, FuncSig, MapDef, ObjProgram, Object, TargetBtf};

pub use attach::{
    attach_raw_tracepoint, attach_tracepoint, attach_uprobe, AttachError, KernelLink,
};
pub use sys::{
    KernelMap, KernelProgram, LoadRequest, ProgBtf, SysError, TestRun, ValueField, LOG_LEVEL1,
    LOG_STATS,
};

/// Whether kernel tests must run (`USERBPF_REQUIRE_KERNEL=1`) rather than
/// skip when the kernel refuses.
pub fn kernel_required() -> bool {
    std::env::var("USERBPF_REQUIRE_KERNEL").is_ok_and(|v| v == "1")
}

/// Why the kernel cannot be used here, if it cannot: not root, or `bpf()`
/// unavailable.
pub fn kernel_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    match KernelMap::create("probe", 2, 4, 4, 1, 0, 0) {
        Ok(_) => None,
        Err(e) => Some(format!("bpf() refused a map: {e}")),
    }
}

/// `CAP_SYS_ADMIN`.
const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_PERFMON`.
const CAP_PERFMON: u32 = 38;

/// Runs `f` on a thread of its own whose effective capabilities lack
/// `CAP_PERFMON` and `CAP_SYS_ADMIN` (capabilities are per thread; the
/// caller's stay as they are): with `CAP_BPF` still held, the loads it
/// makes are verified under the kernel's rules for a loader without
/// `CAP_PERFMON` (`allow_ptr_leaks`, `allow_uninit_stack` and
/// `bypass_spec_v1` off: no address may leak, no uninitialised stack be
/// read, pointer arithmetic is masked against Spectre v1). An error if
/// the capabilities cannot be read or set.
pub fn without_cap_perfmon<T: Send>(f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            drop_effective_caps(&[CAP_SYS_ADMIN, CAP_PERFMON])?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Drops `caps` from the calling thread's effective capabilities.
fn drop_effective_caps(caps: &[u32]) -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // _LINUX_CAPABILITY_VERSION_3: two words of each set.
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes two `Data` words for version 3, which `data`
    // holds; `header` is a valid header (pid 0: this thread).
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for &c in caps {
        if let Some(word) = data.get_mut((c / 32) as usize) {
            word.effective &= !(1u32 << (c % 32));
        }
    }
    // SAFETY: as above; capset reads the header and two words, and
    // changes this thread's capabilities only.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// An object's program loaded in the kernel with its maps.
#[derive(Debug)]
pub struct KernelLoad {
    /// The program.
    pub program: KernelProgram,
    /// The maps, in the object's map order (the `lddw` indexes).
    pub maps: Vec<KernelMap>,
    /// Programs loaded for the object's program arrays (kept open).
    pub tail_targets: Vec<KernelProgram>,
}

/// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`.
const PERF_EVENT_ARRAY: u32 = 4;
/// `BPF_MAP_TYPE_ARRAY_OF_MAPS`, `BPF_MAP_TYPE_HASH_OF_MAPS`.
const ARRAY_OF_MAPS: u32 = 12;
const HASH_OF_MAPS: u32 = 13;

fn is_map_of_maps(def: &MapDef) -> bool {
    matches!(def.map_type, ARRAY_OF_MAPS | HASH_OF_MAPS)
}

fn create_map(def: &MapDef) -> Result<KernelMap, SysError> {
    // A perf event array without max_entries gets one slot per possible
    // CPU, as libbpf gives it.
    let max_entries = if def.map_type == PERF_EVENT_ARRAY && def.max_entries == 0 {
        sys::possible_cpus() as u32
    } else {
        def.max_entries
    };
    let shape = [
        def.map_type,
        def.key_size,
        def.value_size,
        max_entries,
        def.flags,
    ];
    let fields: Vec<ValueField> = def
        .spin_lock
        .map(ValueField::SpinLock)
        .into_iter()
        .chain(def.timer.map(ValueField::Timer))
        .collect();
    // Local storage maps (socket, inode, task, cgroup) need BTF too.
    let local_storage = matches!(def.map_type, 24 | 28 | 29 | 32);
    let m = if !fields.is_empty() || local_storage {
        KernelMap::create_with_fields(&def.name, shape, def.map_extra, &fields)?
    } else {
        KernelMap::create(
            &def.name,
            def.map_type,
            def.key_size,
            def.value_size,
            max_entries,
            def.flags,
            def.map_extra,
        )?
    };
    if let Some(init) = &def.initial {
        if init.len() == def.value_size as usize {
            m.update(&0u32.to_le_bytes(), init, 0)?;
        }
    }
    // `.rodata` and `.kconfig`: constants from here on, as under libbpf.
    if def.flags & userbpf_vm::object::BPF_F_RDONLY_PROG != 0 {
        m.freeze()?;
    }
    Ok(m)
}

/// An array or hash of maps, its inner maps shaped like its inner map
/// definition (`__array(values, struct { ... })`, created for the call
/// and closed, as libbpf does) or else like the first map its initial
/// slots name, as the verifier assumes; without either the kernel has no
/// inner map to copy and refuses.
fn create_map_of_maps(
    obj: &Object,
    def: &MapDef,
    created: &[Option<KernelMap>],
) -> Result<KernelMap, SysError> {
    let template;
    let inner = match &def.inner {
        Some(inner) => {
            template = create_map(inner)?;
            &template
        }
        None => def
            .initial_slots
            .first()
            .and_then(|(_, name)| obj.maps.iter().position(|m| &m.name == name))
            .and_then(|i| created.get(i)?.as_ref())
            .ok_or_else(|| SysError {
                cmd: "BPF_MAP_CREATE",
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
                log: format!(
                    "map of maps `{}` has no inner map definition (`__array(values, struct {{ ... }})`) and names no inner map",
                    def.name
                ),
            })?,
    };
    KernelMap::create_map_of_maps(
        &def.name,
        def.map_type,
        def.key_size,
        def.max_entries,
        def.flags,
        inner,
    )
}

/// Rewrites the userbpf kfunc ids of `insns` (`call src=2`) to the
/// running kernel's BTF ids of the same functions (`/sys/kernel/btf/vmlinux`),
/// as libbpf resolves `__ksym` functions. Unknown ids are left for the
/// kernel to refuse.
pub fn resolve_kfuncs(insns: &mut [Insn]) {
    let is_kfunc_call = |i: &Insn| i.code == op::CALL && i.src == op::CALL_KFUNC;
    if !insns.iter().any(is_kfunc_call) {
        return;
    }
    let Ok(vmlinux) = TargetBtf::System.load() else {
        return;
    };
    let btf = &vmlinux.btf;
    for insn in insns.iter_mut().filter(|i| is_kfunc_call(i)) {
        let Some(name) = userbpf_vm::kfunc::name_of(insn.imm) else {
            continue;
        };
        let func = btf
            .by_name(name)
            .into_iter()
            .find(|&id| btf.kind(id) == Some(userbpf_vm::object::btf::Kind::Func));
        if let Some(id) = func.and_then(|id| i32::try_from(id).ok()) {
            insn.imm = id;
        }
    }
}

/// BTF describing `prog`'s functions when it has subprograms, as libbpf
/// always loads it: the kernel refuses a function's address
/// (`bpf_loop`, `bpf_for_each_map_elem`, `bpf_timer_set_callback`
/// callbacks) without `func_info`, and allows `BPF_LD_ABS` and tail calls
/// in subprograms only with it, in those returning a scalar; it verifies
/// global functions on their own, for any arguments their prototypes
/// allow. Functions the object's BTF does not describe are static and
/// return `int`.
fn functions_btf(obj: &Object, prog: &ObjProgram) -> Result<Option<ProgBtf>, SysError> {
    if prog.subprograms.is_empty() {
        return Ok(None);
    }
    // Functions the object's BTF does not describe: static, returning
    // `int`. (The program itself is `int`, whatever its linkage: its own
    // arguments come from its type, not from BTF.)
    let int = FuncSig {
        ret: FuncReturn::Scalar,
        global: false,
        params: Vec::new(),
    };
    let mut functions: Vec<(&str, usize, &FuncSig)> = vec![(prog.name.as_str(), 0, &int)];
    functions.extend(
        prog.subprograms
            .iter()
            .map(|(n, pc)| (n.as_str(), *pc, obj.functions.get(n).unwrap_or(&int))),
    );
    ProgBtf::for_functions(&functions).map(Some)
}

/// Loads `prog` against the map fds `fds`: without a log and then, if the
/// kernel refuses it, with a log for the error (`log` `None`), or once
/// with a log of `log` = (`log_level`, bytes), returned beside it.
fn load_one(
    obj: &Object,
    prog: &ObjProgram,
    fds: &[i32],
    log: Option<(u32, usize)>,
) -> Result<(KernelProgram, String), SysError> {
    let flags = if prog.kind.sleepable {
        sys::BPF_F_SLEEPABLE
    } else {
        0
    };
    let mut insns = prog.insns.clone();
    resolve_kfuncs(&mut insns);
    let btf = functions_btf(obj, prog)?;
    let req = LoadRequest {
        name: &prog.name,
        prog_type: prog.kind.prog_type as u32,
        insns: &insns,
        license: obj.license.as_deref().unwrap_or("GPL"),
        prog_flags: flags,
        expected_attach_type: prog.kind.attach_type.map_or(0, |a| a as u32),
        fd_array: fds,
        btf: btf.as_ref(),
    };
    match log {
        None => KernelProgram::load_request(&req).map(|p| (p, String::new())),
        Some((level, size)) => KernelProgram::load_once(&req, level, size),
    }
}

/// Creates `obj`'s maps in the kernel and loads `prog` against them; the
/// programs the object's program arrays name are loaded too and their fds
/// stored in the slots, and the maps that arrays and hashes of maps name
/// are stored in theirs.
pub fn load(obj: &Object, prog: &ObjProgram) -> Result<KernelLoad, SysError> {
    load_maps_and(obj, prog, None).map(|(k, _)| k)
}

/// [`load`], with one load of `prog` at `log_level` ([`LOG_STATS`]: the
/// verdict and the statistics, `processed N insns ...`) with a log of
/// `log_size` bytes: the load and the log (a refusal carries it).
pub fn load_logged(
    obj: &Object,
    prog: &ObjProgram,
    log_level: u32,
    log_size: usize,
) -> Result<(KernelLoad, String), SysError> {
    load_maps_and(obj, prog, Some((log_level, log_size)))
}

fn load_maps_and(
    obj: &Object,
    prog: &ObjProgram,
    log: Option<(u32, usize)>,
) -> Result<(KernelLoad, String), SysError> {
    // Maps of maps last: they take an inner map's shape.
    let mut created: Vec<Option<KernelMap>> = Vec::with_capacity(obj.maps.len());
    for def in &obj.maps {
        created.push(if is_map_of_maps(def) {
            None
        } else {
            Some(create_map(def)?)
        });
    }
    for (i, def) in obj.maps.iter().enumerate() {
        if is_map_of_maps(def) {
            let m = create_map_of_maps(obj, def, &created)?;
            created[i] = Some(m);
        }
    }
    let maps: Vec<KernelMap> = created.into_iter().flatten().collect();
    let fds: Vec<i32> = maps.iter().map(|m| m.raw_fd()).collect();
    let mut tail_targets = Vec::new();
    for (def, map) in obj.maps.iter().zip(&maps) {
        for (slot, name) in &def.initial_slots {
            let fd = if is_map_of_maps(def) {
                match obj.maps.iter().position(|m| &m.name == name) {
                    Some(i) => fds[i],
                    None => continue,
                }
            } else {
                let Some(t) = obj.programs.iter().find(|p| &p.name == name) else {
                    continue;
                };
                let (loaded, _) = load_one(obj, t, &fds, None)?;
                let fd = loaded.raw_fd();
                tail_targets.push(loaded);
                fd
            };
            map.update(&slot.to_le_bytes(), &(fd as u32).to_le_bytes(), 0)?;
        }
    }
    let (program, log) = load_one(obj, prog, &fds, log)?;
    let load = KernelLoad {
        program,
        maps,
        tail_targets,
    };
    Ok((load, log))
}
