//! userbpf's kernel backend: places programs in the kernel. Today it loads
//! an object's program and maps with raw `bpf(2)` calls and test-runs them
//! (`BPF_PROG_TEST_RUN`), which the tests use to compare the user-space VM
//! with the kernel; attachment of kernel-only hooks (aya) lands with its
//! issue.
#![deny(missing_docs)]

pub mod sys;

use userbpf_vm::object::{MapDef, ObjProgram, Object};

pub use sys::{KernelMap, KernelProgram, SysError, TestRun};

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

fn create_map(def: &MapDef) -> Result<KernelMap, SysError> {
    let m = KernelMap::create(
        &def.name,
        def.map_type,
        def.key_size,
        def.value_size,
        def.max_entries,
        def.flags,
        def.map_extra,
    )?;
    if let Some(init) = &def.initial {
        if init.len() == def.value_size as usize {
            m.update(&0u32.to_le_bytes(), init, 0)?;
        }
    }
    Ok(m)
}

fn load_one(obj: &Object, prog: &ObjProgram, fds: &[i32]) -> Result<KernelProgram, SysError> {
    let flags = if prog.kind.sleepable {
        sys::BPF_F_SLEEPABLE
    } else {
        0
    };
    KernelProgram::load(
        &prog.name,
        prog.kind.prog_type as u32,
        &prog.insns,
        obj.license.as_deref().unwrap_or("GPL"),
        flags,
        fds,
    )
}

/// Creates `obj`'s maps in the kernel and loads `prog` against them; the
/// programs the object's program arrays name are loaded too and their fds
/// stored in the slots.
pub fn load(obj: &Object, prog: &ObjProgram) -> Result<KernelLoad, SysError> {
    let maps = obj
        .maps
        .iter()
        .map(create_map)
        .collect::<Result<Vec<_>, _>>()?;
    let fds: Vec<i32> = maps.iter().map(|m| m.raw_fd()).collect();
    let mut tail_targets = Vec::new();
    for (def, map) in obj.maps.iter().zip(&maps) {
        for (slot, name) in &def.initial_slots {
            let Some(t) = obj.programs.iter().find(|p| &p.name == name) else {
                continue;
            };
            let loaded = load_one(obj, t, &fds)?;
            map.update(
                &slot.to_le_bytes(),
                &(loaded.raw_fd() as u32).to_le_bytes(),
                0,
            )?;
            tail_targets.push(loaded);
        }
    }
    let program = load_one(obj, prog, &fds)?;
    Ok(KernelLoad {
        program,
        maps,
        tail_targets,
    })
}
