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
    match KernelMap::create("probe", 2, 4, 4, 1, 0) {
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
}

fn create_map(def: &MapDef) -> Result<KernelMap, SysError> {
    let m = KernelMap::create(
        &def.name,
        def.map_type,
        def.key_size,
        def.value_size,
        def.max_entries,
        def.flags,
    )?;
    if let Some(init) = &def.initial {
        if init.len() == def.value_size as usize {
            m.update(&0u32.to_le_bytes(), init, 0)?;
        }
    }
    Ok(m)
}

/// Creates `obj`'s maps in the kernel and loads `prog` against them.
pub fn load(obj: &Object, prog: &ObjProgram) -> Result<KernelLoad, SysError> {
    let maps = obj
        .maps
        .iter()
        .map(create_map)
        .collect::<Result<Vec<_>, _>>()?;
    let fds: Vec<i32> = maps.iter().map(|m| m.raw_fd()).collect();
    let flags = if prog.kind.sleepable {
        sys::BPF_F_SLEEPABLE
    } else {
        0
    };
    let program = KernelProgram::load(
        &prog.name,
        prog.kind.prog_type as u32,
        &prog.insns,
        obj.license.as_deref().unwrap_or("GPL"),
        flags,
        &fds,
    )?;
    Ok(KernelLoad { program, maps })
}
