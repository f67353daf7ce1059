//! The BTF that CO-RE relocations are resolved against: the running
//! kernel's (`/sys/kernel/btf/vmlinux`), a file the caller names (like
//! libbpf's `btf_custom_path` and bpftool's `--base-btf`), or, when the
//! kernel exposes none, a small built-in BTF with the types user-space hooks
//! see.
//!
//! The built-in BTF is built in Rust ([`builtin`]) rather than committed as
//! a blob: its layouts are the x86-64 kernel's, written out below
//! (`struct pt_regs` with `cs` and `ss` as plain `unsigned long`, as before
//! the FRED unions of 6.9+; the offsets are the same).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::btf::{Btf, BtfWriter};

/// Where the kernel exposes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Which BTF CO-RE relocations are resolved against.
#[derive(Clone, Debug, Default)]
pub enum TargetBtf {
    /// [`VMLINUX_BTF`] when readable, else the built-in BTF.
    #[default]
    System,
    /// The built-in BTF ([`builtin`]), whatever the kernel has.
    Builtin,
    /// A raw BTF file (`bpftool btf dump file X format raw` input, e.g. a
    /// copy of another machine's `/sys/kernel/btf/vmlinux`).
    File(PathBuf),
    /// An already parsed BTF.
    Parsed(Arc<Btf>),
}

/// A loaded target BTF and what it is, for messages.
#[derive(Clone, Debug)]
pub struct LoadedBtf {
    /// The types.
    pub btf: Arc<Btf>,
    /// Where they come from (`/sys/kernel/btf/vmlinux`, `built-in BTF`,
    /// a path).
    pub origin: String,
}

impl TargetBtf {
    /// Loads (or takes from the process-wide cache) the BTF this names.
    pub fn load(&self) -> Result<LoadedBtf, String> {
        match self {
            TargetBtf::System => {
                static SYSTEM: OnceLock<Option<Arc<Btf>>> = OnceLock::new();
                let system = SYSTEM.get_or_init(|| {
                    let bytes = std::fs::read(VMLINUX_BTF).ok()?;
                    Btf::parse(&bytes).ok().map(Arc::new)
                });
                match system {
                    Some(btf) => Ok(LoadedBtf {
                        btf: btf.clone(),
                        origin: VMLINUX_BTF.to_string(),
                    }),
                    None => TargetBtf::Builtin.load(),
                }
            }
            TargetBtf::Builtin => {
                static BUILTIN: OnceLock<Arc<Btf>> = OnceLock::new();
                Ok(LoadedBtf {
                    btf: BUILTIN.get_or_init(|| Arc::new(builtin())).clone(),
                    origin: "built-in BTF (no /sys/kernel/btf/vmlinux)".to_string(),
                })
            }
            TargetBtf::File(path) => Ok(LoadedBtf {
                btf: Arc::new(parse_file(path)?),
                origin: path.display().to_string(),
            }),
            TargetBtf::Parsed(btf) => Ok(LoadedBtf {
                btf: btf.clone(),
                origin: "the given BTF".to_string(),
            }),
        }
    }
}

fn parse_file(path: &Path) -> Result<Btf, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Btf::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `struct pt_regs` fields of x86-64, in order, each an `unsigned long`.
pub const PT_REGS_X86_64: [&str; 21] = [
    "r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di",
    "orig_ax", "ip", "cs", "flags", "sp", "ss",
];

/// The built-in target BTF: the C integer types and `__u8`..`__s64`,
/// `struct pt_regs` (x86-64), `struct trace_entry`,
/// `struct trace_event_raw_sys_enter`/`_sys_exit` (syscall tracepoint
/// contexts) and `struct bpf_raw_tracepoint_args`.
pub fn builtin() -> Btf {
    let mut w = BtfWriter::new();
    let ulong = w.int("long unsigned int", 8, false);
    let long = w.int("long int", 8, true);
    let int = w.int("int", 4, true);
    let uint = w.int("unsigned int", 4, false);
    let ushort = w.int("short unsigned int", 2, false);
    let short = w.int("short int", 2, true);
    let uchar = w.int("unsigned char", 1, false);
    let schar = w.int("signed char", 1, true);
    let chr = w.int("char", 1, false);
    let ullong = w.int("long long unsigned int", 8, false);
    let llong = w.int("long long int", 8, true);
    let u64s = w.typedef("__u64", ullong);
    w.typedef("u64", ullong);
    for (name, to) in [
        ("__u8", uchar),
        ("__s8", schar),
        ("__u16", ushort),
        ("__s16", short),
        ("__u32", uint),
        ("__s32", int),
        ("__s64", llong),
    ] {
        w.typedef(name, to);
        // The kernel's own short names.
        w.typedef(name.trim_start_matches('_'), to);
    }
    let regs: Vec<(&str, u32, u32)> = PT_REGS_X86_64.iter().map(|&n| (n, ulong, 8)).collect();
    w.structure("pt_regs", &regs);
    let entry = w.structure(
        "trace_entry",
        &[
            ("type", ushort, 2),
            ("flags", uchar, 1),
            ("preempt_count", uchar, 1),
            ("pid", int, 4),
        ],
    );
    let args6 = w.array(ulong, int, 6);
    let data0 = w.array(chr, int, 0);
    w.structure(
        "trace_event_raw_sys_enter",
        &[
            ("ent", entry, 8),
            ("id", long, 8),
            ("args", args6, 48),
            ("__data", data0, 0),
        ],
    );
    w.structure(
        "trace_event_raw_sys_exit",
        &[
            ("ent", entry, 8),
            ("id", long, 8),
            ("ret", long, 8),
            ("__data", data0, 0),
        ],
    );
    let args0 = w.array(u64s, int, 0);
    w.structure("bpf_raw_tracepoint_args", &[("args", args0, 0)]);
    // The writer's output is well-formed by construction.
    Btf::parse(&w.finish()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_btf_has_the_x86_64_pt_regs_layout() {
        let btf = builtin();
        let ids = btf.by_name("pt_regs");
        assert_eq!(ids.len(), 1);
        let t = btf.get(ids[0]).unwrap();
        assert_eq!(t.size_or_type, 21 * 8);
        assert_eq!(t.members[14].name, "di");
        assert_eq!(t.members[14].offset, 14 * 64);
        let sys_enter = btf.by_name("trace_event_raw_sys_enter");
        assert_eq!(btf.size_of(sys_enter[0]), Some(64));
        let args = btf.by_name("bpf_raw_tracepoint_args");
        assert_eq!(btf.size_of(args[0]), Some(0));
    }

    #[test]
    fn parses_the_kernel_btf_quickly() {
        let Ok(bytes) = std::fs::read(VMLINUX_BTF) else {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        };
        let start = std::time::Instant::now();
        let btf = Btf::parse(&bytes).unwrap();
        let parsed = start.elapsed();
        let ids = btf.by_name("pt_regs");
        let indexed = start.elapsed();
        eprintln!(
            "{VMLINUX_BTF}: {} bytes, {} types: parsed in {parsed:?}, indexed by name in {:?}",
            bytes.len(),
            btf.len(),
            indexed - parsed
        );
        assert_eq!(ids.len(), 1);
        let t = btf.get(ids[0]).unwrap();
        assert_eq!(t.size_or_type, 21 * 8);
        let di = t.members.iter().find(|m| m.name == "di").unwrap();
        assert_eq!(di.offset, 14 * 64);
        // Enumerators, with their values.
        let e = btf.by_name("bpf_func_id");
        let t = btf.get(e[0]).unwrap();
        let v = t
            .enumerators
            .iter()
            .find(|v| v.name == "BPF_FUNC_probe_read_kernel")
            .unwrap();
        assert_eq!(v.value, 113);
    }
}
