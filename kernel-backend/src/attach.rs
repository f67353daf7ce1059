//! Attaching kernel programs to hooks: uprobes and uretprobes (the uprobe
//! PMU), tracepoints (`PERF_TYPE_TRACEPOINT`) and raw tracepoints
//! (`BPF_RAW_TRACEPOINT_OPEN`), over raw `perf_event_open(2)`, `ioctl(2)`
//! and `bpf(2)` calls, as libbpf does. A [`KernelLink`] is the attachment;
//! dropping it detaches the program.
//!
//! Programs must be loaded with the type the hook runs: uprobes and
//! uretprobes `BPF_PROG_TYPE_KPROBE` (context `struct pt_regs`),
//! tracepoints `BPF_PROG_TYPE_TRACEPOINT`, raw tracepoints
//! `BPF_PROG_TYPE_RAW_TRACEPOINT`; a mismatch is refused with the type the
//! program has.
//!
//! One perf event attaches a program to a uprobe or a tracepoint for every
//! CPU: the kernel runs the programs of the event's trace point (its
//! `prog_array`) wherever the probe fires, and the event's CPU only matters
//! for samples written to a perf buffer. (One event per CPU cannot work:
//! the kernel refuses a program already attached to the trace point,
//! `EEXIST`.)

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::KernelProgram;

/// `bpf()` commands.
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_RAW_TRACEPOINT_OPEN: u32 = 17;
const BPF_LINK_CREATE: u32 = 28;
/// `BPF_PERF_EVENT` (`enum bpf_attach_type`).
const BPF_PERF_EVENT: u32 = 41;

/// `PERF_TYPE_TRACEPOINT`.
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `PERF_EVENT_IOC_ENABLE` = `_IO('$', 0)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
/// `PERF_EVENT_IOC_DISABLE` = `_IO('$', 1)`.
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
/// `PERF_EVENT_IOC_SET_BPF` = `_IOW('$', 8, __u32)`.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
/// `sizeof(struct perf_event_attr)` (`PERF_ATTR_SIZE_VER8`).
const PERF_ATTR_SIZE: usize = 136;

/// The uprobe PMU's sysfs directory.
const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe";
/// Where tracefs is looked for, in order; the first is where it is mounted
/// when none is.
const TRACEFS_DIRS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// `BPF_PROG_TYPE_KPROBE`, `_TRACEPOINT`, `_RAW_TRACEPOINT`.
const PROG_TYPE_KPROBE: u32 = 2;
const PROG_TYPE_TRACEPOINT: u32 = 5;
const PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// Why a program could not be attached. Every message names the hook
/// (binary and file offset, tracepoint) and, for a refused system call,
/// the call and the errno.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// A sysfs or tracefs file describing the hook is missing or does not
    /// hold what it should (the uprobe PMU's type or retprobe bit, a
    /// tracepoint's id).
    #[error("{hook}: {path}: {message}")]
    Describe {
        /// The hook.
        hook: String,
        /// The file.
        path: PathBuf,
        /// What is wrong (the OS error, or the unexpected contents).
        message: String,
    },
    /// The hook's name cannot be used (a NUL byte, a `/` in a tracepoint
    /// name).
    #[error("{hook}: {message}")]
    BadName {
        /// The hook.
        hook: String,
        /// What is wrong.
        message: String,
    },
    /// A system call refused.
    #[error("{hook}: {call}: {source}{hint}")]
    Syscall {
        /// The hook.
        hook: String,
        /// The call (`perf_event_open`, `BPF_LINK_CREATE`, ...).
        call: &'static str,
        /// The OS error.
        source: io::Error,
        /// Extra explanation, starting with `; ` when present (a program
        /// of the wrong type, for one).
        hint: String,
    },
    /// An ELF file could not be read or holds no such address.
    #[error("{}: {message}", path.display())]
    Elf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An address no file mapping of the process covers.
    #[error("address {addr:#x} is not in a file mapping of {process} ({maps})")]
    Unmapped {
        /// `self` or the pid.
        process: String,
        /// The address.
        addr: u64,
        /// Why: the maps file's error, or that no mapping covers it.
        maps: String,
    },
}

impl AttachError {
    /// The errno of a refused system call.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            AttachError::Syscall { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// How a [`KernelLink`] holds its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A BPF link on a perf event (`BPF_LINK_CREATE`, `BPF_PERF_EVENT`).
    PerfLink,
    /// The program set on a perf event (`PERF_EVENT_IOC_SET_BPF`), for
    /// kernels without perf links.
    PerfIoctl,
    /// A raw tracepoint link (`BPF_RAW_TRACEPOINT_OPEN`).
    RawTracepoint,
}

/// A program attached to a kernel hook. Dropping it detaches the program:
/// the perf event is disabled and closed and the BPF link closed.
pub struct KernelLink {
    /// The BPF link, when there is one (closed first).
    link: Option<OwnedFd>,
    /// The perf event, for perf-event attachments.
    perf: Option<OwnedFd>,
    kind: LinkKind,
    hook: String,
}

impl fmt::Debug for KernelLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelLink")
            .field("hook", &self.hook)
            .field("kind", &self.kind)
            .field("link_fd", &self.link_fd())
            .field("perf_fd", &self.perf_fd())
            .finish()
    }
}

impl KernelLink {
    /// The hook, as error messages name it (`uprobe /bin/app:0x1139 (pid
    /// 42)`, `tracepoint syscalls/sys_enter_getpid`, ...).
    pub fn hook(&self) -> &str {
        &self.hook
    }

    /// How the program is held.
    pub fn kind(&self) -> LinkKind {
        self.kind
    }

    /// The BPF link's fd, if the attachment is a BPF link.
    pub fn link_fd(&self) -> Option<i32> {
        self.link.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// The perf event's fd, for uprobes and tracepoints.
    pub fn perf_fd(&self) -> Option<i32> {
        self.perf.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Detaches the program (the same as dropping the link).
    pub fn detach(self) {}
}

impl Drop for KernelLink {
    fn drop(&mut self) {
        // The link closes when the fields drop, link first, then the perf
        // event.
        if let Some(perf) = &self.perf {
            // SAFETY: `perf` is an open perf event fd this link owns;
            // PERF_EVENT_IOC_DISABLE takes no argument.
            unsafe { libc::ioctl(perf.as_raw_fd(), PERF_EVENT_IOC_DISABLE as _, 0) };
        }
    }
}

fn bpf(cmd: u32, attr: &mut [u64], size: usize) -> io::Result<i64> {
    // SAFETY: `attr` is a zero-initialised buffer of at least `size` bytes
    // laid out as the command's `union bpf_attr` member; the kernel reads
    // and writes only within `size`, and the pointers inside it point to
    // buffers the caller keeps alive across the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Writes `v` at byte offset `off` of an attribute buffer.
fn put32(attr: &mut [u64], off: usize, v: u32) {
    let word = &mut attr[off / 8];
    let mut w = word.to_le_bytes();
    w[off % 8..off % 8 + 4].copy_from_slice(&v.to_le_bytes());
    *word = u64::from_le_bytes(w);
}

/// Takes ownership of the fd a successful call returned.
fn owned(rc: i64) -> OwnedFd {
    // SAFETY: `rc` is the new fd returned by a successful perf_event_open
    // or bpf() object creation; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

/// A `perf_event_attr` (`PERF_ATTR_SIZE_VER8` bytes, zeroed) of `type_`
/// and `config`.
fn perf_attr(type_: u32, config: u64) -> [u64; PERF_ATTR_SIZE / 8] {
    let mut attr = [0u64; PERF_ATTR_SIZE / 8];
    put32(&mut attr, 0, type_);
    put32(&mut attr, 4, PERF_ATTR_SIZE as u32);
    attr[1] = config;
    attr
}

fn perf_event_open(
    hook: &str,
    attr: &mut [u64; PERF_ATTR_SIZE / 8],
    pid: i32,
    cpu: i32,
) -> Result<OwnedFd, AttachError> {
    // SAFETY: `attr` is a `struct perf_event_attr` whose `size` field
    // gives its length; the pointers it holds (a uprobe's path) are kept
    // alive by the caller across the call. No group fd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_mut_ptr(),
            pid,
            cpu,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if rc < 0 {
        let source = io::Error::last_os_error();
        let hint = match source.raw_os_error() {
            Some(libc::ESRCH) => format!("; no process {pid}"),
            Some(libc::ENOENT) if hook.starts_with('u') => "; no such file".to_string(),
            _ => String::new(),
        };
        return Err(AttachError::Syscall {
            hook: hook.to_string(),
            call: "perf_event_open",
            source,
            hint,
        });
    }
    Ok(owned(rc))
}

/// The `BPF_PROG_TYPE_*` of a loaded program (`BPF_OBJ_GET_INFO_BY_FD`).
fn prog_type_of(prog: &KernelProgram) -> Option<u32> {
    // struct bpf_prog_info starts with `type`, then `id`.
    let mut info = [0u32; 2];
    let mut attr = [0u64; 2];
    put32(&mut attr, 0, prog.raw_fd() as u32);
    put32(&mut attr, 4, std::mem::size_of_val(&info) as u32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr, 16).ok()?;
    Some(info[0])
}

fn prog_type_name(t: u32) -> String {
    match t {
        PROG_TYPE_KPROBE => "BPF_PROG_TYPE_KPROBE".into(),
        PROG_TYPE_TRACEPOINT => "BPF_PROG_TYPE_TRACEPOINT".into(),
        PROG_TYPE_RAW_TRACEPOINT => "BPF_PROG_TYPE_RAW_TRACEPOINT".into(),
        other => format!("program type {other}"),
    }
}

/// `; the program is X, HOOK needs Y` when `prog` is not of type `want`.
fn type_hint(prog: &KernelProgram, want: u32, hook_kind: &str) -> String {
    match prog_type_of(prog) {
        Some(t) if t != want => format!(
            "; the program is {}, {hook_kind} programs must be loaded as {}",
            prog_type_name(t),
            prog_type_name(want)
        ),
        _ => String::new(),
    }
}

/// Attaches `prog` to the perf event `perf` (a uprobe, tracepoint,
/// kprobe or software event opened by the caller) and enables it: a BPF
/// link (`BPF_LINK_CREATE`, attach type `BPF_PERF_EVENT`), or on kernels
/// without perf links `PERF_EVENT_IOC_SET_BPF`. `hook` names the event in
/// errors and in [`KernelLink::hook`].
pub fn attach_perf_event(
    prog: &KernelProgram,
    perf: OwnedFd,
    hook: &str,
) -> Result<KernelLink, AttachError> {
    attach_perf_event_as(prog, perf, hook, None)
}

/// [`attach_perf_event`]; a refusal names the program type `want` (with
/// the hook kind) when the program is of another.
fn attach_perf_event_as(
    prog: &KernelProgram,
    perf: OwnedFd,
    hook: &str,
    want: Option<(u32, &str)>,
) -> Result<KernelLink, AttachError> {
    let mut attr = [0u64; 4];
    put32(&mut attr, 0, prog.raw_fd() as u32); // prog_fd
    put32(&mut attr, 4, perf.as_raw_fd() as u32); // target_fd
    put32(&mut attr, 8, BPF_PERF_EVENT); // attach_type
    let (link, kind) = match bpf(BPF_LINK_CREATE, &mut attr, 32) {
        Ok(rc) => (Some(owned(rc)), LinkKind::PerfLink),
        Err(link_err) => {
            // SAFETY: `perf` is an open perf event fd; SET_BPF takes the
            // program's fd by value.
            let rc = unsafe {
                libc::ioctl(perf.as_raw_fd(), PERF_EVENT_IOC_SET_BPF as _, prog.raw_fd())
            };
            if rc < 0 {
                let mut hint = want
                    .map(|(t, kind)| type_hint(prog, t, kind))
                    .unwrap_or_default();
                if hint.is_empty() && link_err.raw_os_error() == Some(libc::EEXIST) {
                    hint = "; the program is already attached to this hook".into();
                }
                let tracepoint = matches!(want, Some((PROG_TYPE_TRACEPOINT, _)));
                if hint.is_empty() && tracepoint && link_err.raw_os_error() == Some(libc::EACCES) {
                    hint = "; the program reads past the end of the tracepoint's record \
                            (its fields are in tracefs events/CATEGORY/NAME/format)"
                        .into();
                }
                return Err(AttachError::Syscall {
                    hook: hook.to_string(),
                    call: "BPF_LINK_CREATE",
                    source: link_err,
                    hint,
                });
            }
            (None, LinkKind::PerfIoctl)
        }
    };
    let link = KernelLink {
        link,
        perf: Some(perf),
        kind,
        hook: hook.to_string(),
    };
    // SAFETY: the perf fd is open (owned by `link`); ENABLE takes no
    // argument.
    let rc = unsafe { libc::ioctl(link.perf_fd().unwrap_or(-1), PERF_EVENT_IOC_ENABLE as _, 0) };
    if rc < 0 {
        return Err(AttachError::Syscall {
            hook: hook.to_string(),
            call: "PERF_EVENT_IOC_ENABLE",
            source: io::Error::last_os_error(),
            hint: String::new(),
        });
    }
    Ok(link)
}

fn read_sysfs(hook: &str, path: &Path) -> Result<String, AttachError> {
    std::fs::read_to_string(path).map_err(|e| AttachError::Describe {
        hook: hook.to_string(),
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The uprobe PMU's perf type (`/sys/bus/event_source/devices/uprobe/type`).
pub fn uprobe_pmu_type() -> Result<u32, AttachError> {
    let path = Path::new(UPROBE_PMU).join("type");
    let text = read_sysfs("uprobe PMU", &path)?;
    text.trim().parse().map_err(|_| AttachError::Describe {
        hook: "uprobe PMU".into(),
        path,
        message: format!("expected a number, found `{}`", text.trim()),
    })
}

/// The `config` bit that makes a uprobe a uretprobe
/// (`/sys/bus/event_source/devices/uprobe/format/retprobe`: `config:0`).
pub fn uprobe_retprobe_bit() -> Result<u32, AttachError> {
    let path = Path::new(UPROBE_PMU).join("format/retprobe");
    let text = read_sysfs("uprobe PMU", &path)?;
    text.trim()
        .strip_prefix("config:")
        .and_then(|bits| bits.split('-').next()?.parse::<u32>().ok())
        .filter(|&bit| bit < 64)
        .ok_or_else(|| AttachError::Describe {
            hook: "uprobe PMU".into(),
            path,
            message: format!("expected `config:N`, found `{}`", text.trim()),
        })
}

/// Attaches `prog` (`BPF_PROG_TYPE_KPROBE`, context `struct pt_regs`) to a
/// uprobe, or with `retprobe` a uretprobe, on the instruction at
/// `file_offset` of `binary` (a file offset, not a virtual address: see
/// [`vaddr_to_file_offset`] and [`mapped_file_offset`]).
///
/// With `pid`, the probe fires only in that process (any of its threads,
/// any CPU); without, in every process that maps the file.
pub fn attach_uprobe(
    prog: &KernelProgram,
    binary: &Path,
    file_offset: u64,
    retprobe: bool,
    pid: Option<i32>,
) -> Result<KernelLink, AttachError> {
    let hook = format!(
        "{} {}:{file_offset:#x}{}",
        if retprobe { "uretprobe" } else { "uprobe" },
        binary.display(),
        match pid {
            Some(p) => format!(" (pid {p})"),
            None => String::new(),
        }
    );
    let pmu = uprobe_pmu_type().map_err(|e| with_hook(e, &hook))?;
    let config = if retprobe {
        1u64 << uprobe_retprobe_bit().map_err(|e| with_hook(e, &hook))?
    } else {
        0
    };
    let path = CString::new(binary.as_os_str().as_bytes()).map_err(|_| AttachError::BadName {
        hook: hook.clone(),
        message: "the binary's path holds a NUL byte".into(),
    })?;
    let mut attr = perf_attr(pmu, config);
    attr[7] = path.as_ptr() as u64; // config1: uprobe_path
    attr[8] = file_offset; // config2: probe_offset
                           // A task's event may run on any CPU; an event of every process needs
                           // a CPU, and its program still runs on all of them.
    let (pid, cpu) = match pid {
        Some(p) => (p, -1),
        None => (-1, 0),
    };
    let perf = perf_event_open(&hook, &mut attr, pid, cpu)?;
    drop(path);
    let kind = if retprobe { "uretprobe" } else { "uprobe" };
    attach_perf_event_as(prog, perf, &hook, Some((PROG_TYPE_KPROBE, kind)))
}

/// Replaces the hook of a describing error with the attachment's.
fn with_hook(e: AttachError, hook: &str) -> AttachError {
    match e {
        AttachError::Describe { path, message, .. } => AttachError::Describe {
            hook: hook.to_string(),
            path,
            message,
        },
        other => other,
    }
}

/// The tracefs directory holding `events/`: `/sys/kernel/tracing` or
/// `/sys/kernel/debug/tracing`, whichever is mounted. When neither is,
/// tracefs is mounted at `/sys/kernel/tracing` (as perf's tools do),
/// which needs root.
pub fn tracefs_dir() -> Result<PathBuf, AttachError> {
    let found = || {
        TRACEFS_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("events").is_dir())
    };
    if let Some(d) = found() {
        return Ok(d);
    }
    let target = TRACEFS_DIRS[0];
    // SAFETY: all three strings are NUL-terminated literals; tracefs
    // takes no mount data.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(AttachError::Syscall {
            hook: "tracefs".into(),
            call: "mount",
            source: io::Error::last_os_error(),
            hint: format!("; tracefs is not mounted (mount -t tracefs tracefs {target})"),
        });
    }
    found().ok_or_else(|| AttachError::Describe {
        hook: "tracefs".into(),
        path: PathBuf::from(target).join("events"),
        message: "missing after mounting tracefs".into(),
    })
}

/// Checks a tracepoint category or name: one path component.
fn tracepoint_part<'a>(hook: &str, what: &str, s: &'a str) -> Result<&'a str, AttachError> {
    if s.is_empty() || s == "." || s == ".." || s.contains(['/', '\0']) {
        return Err(AttachError::BadName {
            hook: hook.to_string(),
            message: format!("invalid tracepoint {what} `{s}`"),
        });
    }
    Ok(s)
}

/// A tracepoint's id (`events/CATEGORY/NAME/id` in tracefs): the perf
/// config of its event, and the `common_type` of its records.
pub fn tracepoint_id(category: &str, name: &str) -> Result<u64, AttachError> {
    let hook = format!("tracepoint {category}/{name}");
    let category = tracepoint_part(&hook, "category", category)?;
    let name = tracepoint_part(&hook, "name", name)?;
    let path = tracefs_dir()?
        .join("events")
        .join(category)
        .join(name)
        .join("id");
    let text = std::fs::read_to_string(&path).map_err(|e| AttachError::Describe {
        hook: hook.clone(),
        path: path.clone(),
        message: if e.kind() == io::ErrorKind::NotFound {
            "no such tracepoint".into()
        } else {
            e.to_string()
        },
    })?;
    text.trim().parse().map_err(|_| AttachError::Describe {
        hook,
        path,
        message: format!("expected a number, found `{}`", text.trim()),
    })
}

/// Attaches `prog` (`BPF_PROG_TYPE_TRACEPOINT`, context the event's
/// record) to the tracepoint `category/name` (`syscalls`,
/// `sys_enter_getpid`), in every process and on every CPU.
pub fn attach_tracepoint(
    prog: &KernelProgram,
    category: &str,
    name: &str,
) -> Result<KernelLink, AttachError> {
    let hook = format!("tracepoint {category}/{name}");
    let id = tracepoint_id(category, name)?;
    let mut attr = perf_attr(PERF_TYPE_TRACEPOINT, id);
    attr[2] = 1; // sample_period
    put32(&mut attr, 48, 1); // wakeup_events
                             // One event runs the program on every CPU (see the module docs).
    let perf = perf_event_open(&hook, &mut attr, -1, 0)?;
    attach_perf_event_as(
        prog,
        perf,
        &hook,
        Some((PROG_TYPE_TRACEPOINT, "tracepoint")),
    )
}

/// Attaches `prog` (`BPF_PROG_TYPE_RAW_TRACEPOINT`, context the
/// tracepoint's arguments as `u64`s) to the raw tracepoint `name`
/// (`sys_enter`, `sched_switch`) with `BPF_RAW_TRACEPOINT_OPEN`.
pub fn attach_raw_tracepoint(prog: &KernelProgram, name: &str) -> Result<KernelLink, AttachError> {
    let hook = format!("raw tracepoint {name}");
    let cname = CString::new(name).map_err(|_| AttachError::BadName {
        hook: hook.clone(),
        message: "the name holds a NUL byte".into(),
    })?;
    let mut attr = [0u64; 3];
    attr[0] = cname.as_ptr() as u64; // name
    put32(&mut attr, 8, prog.raw_fd() as u32); // prog_fd
    let rc = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr, 24).map_err(|source| {
        let hint = match source.raw_os_error() {
            Some(libc::ENOENT) => "; no such raw tracepoint".to_string(),
            Some(libc::EINVAL) | Some(libc::EACCES) => {
                type_hint(prog, PROG_TYPE_RAW_TRACEPOINT, "raw tracepoint")
            }
            _ => String::new(),
        };
        AttachError::Syscall {
            hook: hook.clone(),
            call: "BPF_RAW_TRACEPOINT_OPEN",
            source,
            hint,
        }
    })?;
    drop(cname);
    Ok(KernelLink {
        link: Some(owned(rc)),
        perf: None,
        kind: LinkKind::RawTracepoint,
        hook,
    })
}

/// `PT_LOAD`.
const PT_LOAD: u32 = 1;

/// The file offset of the instruction at link-time virtual address
/// `vaddr` of the 64-bit little-endian ELF file `elf_path` (an executable
/// or a shared library), from its `PT_LOAD` program headers: what
/// [`attach_uprobe`] takes for a symbol's `st_value`.
pub fn vaddr_to_file_offset(elf_path: &Path, vaddr: u64) -> Result<u64, AttachError> {
    let elf_err = |message: String| AttachError::Elf {
        path: elf_path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(elf_path).map_err(|e| elf_err(e.to_string()))?;
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| elf_err(format!("reading the ELF header: {e}")))?;
    if header[..4] != *b"\x7fELF" {
        return Err(elf_err("not an ELF file".into()));
    }
    if header[4] != 2 || header[5] != 1 {
        return Err(elf_err(
            "not a 64-bit little-endian ELF file (the only kind supported)".into(),
        ));
    }
    let u16_at = |b: &[u8], off: usize| u16::from_le_bytes([b[off], b[off + 1]]);
    let u32_at = |b: &[u8], off: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[off..off + 4]);
        u32::from_le_bytes(w)
    };
    let u64_at = |b: &[u8], off: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[off..off + 8]);
        u64::from_le_bytes(w)
    };
    let phoff = u64_at(&header, 32);
    let phentsize = usize::from(u16_at(&header, 54));
    let phnum = usize::from(u16_at(&header, 56));
    if phnum == 0xffff {
        return Err(elf_err(
            "more than 65534 program headers (PN_XNUM) are not supported".into(),
        ));
    }
    if phentsize < 56 {
        return Err(elf_err(format!("program header size {phentsize} < 56")));
    }
    let mut phdrs = vec![0u8; phentsize * phnum];
    file.read_exact_at(&mut phdrs, phoff).map_err(|e| {
        elf_err(format!(
            "reading {phnum} program headers at {phoff:#x}: {e}"
        ))
    })?;
    for ph in phdrs.chunks_exact(phentsize) {
        if u32_at(ph, 0) != PT_LOAD {
            continue;
        }
        let p_offset = u64_at(ph, 8);
        let p_vaddr = u64_at(ph, 16);
        let p_filesz = u64_at(ph, 32);
        if vaddr >= p_vaddr && vaddr - p_vaddr < p_filesz {
            return p_offset
                .checked_add(vaddr - p_vaddr)
                .ok_or_else(|| elf_err(format!("segment offset {p_offset:#x} overflows")));
        }
    }
    Err(elf_err(format!(
        "no PT_LOAD segment holds file contents at address {vaddr:#x}"
    )))
}

/// The file mapped at runtime address `addr` of process `pid` (`None`:
/// this process) and the offset in it, from `/proc/PID/maps`
/// (`addr - start + offset` of the mapping that covers it): where to
/// attach a uprobe to a function whose address the process knows.
pub fn mapped_file_offset(pid: Option<i32>, addr: u64) -> Result<(PathBuf, u64), AttachError> {
    let (process, maps_path) = match pid {
        Some(p) => (format!("pid {p}"), format!("/proc/{p}/maps")),
        None => ("this process".to_string(), "/proc/self/maps".to_string()),
    };
    let unmapped = |maps: String| AttachError::Unmapped {
        process: process.clone(),
        addr,
        maps,
    };
    let text =
        std::fs::read_to_string(&maps_path).map_err(|e| unmapped(format!("{maps_path}: {e}")))?;
    for line in text.lines() {
        // start-end perms offset dev inode [path]
        let mut fields = line.splitn(6, ' ');
        let (Some(range), Some(_perms), Some(offset), Some(_dev), Some(_inode), Some(path)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            u64::from_str_radix(offset, 16),
        ) else {
            continue;
        };
        if !(start..end).contains(&addr) {
            continue;
        }
        let path = path.trim_start();
        if !path.starts_with('/') {
            return Err(unmapped(format!(
                "{maps_path}: the mapping {range} is not a file ({})",
                if path.is_empty() { "anonymous" } else { path }
            )));
        }
        return Ok((PathBuf::from(path), addr - start + offset));
    }
    Err(unmapped(format!("{maps_path}: no mapping covers it")))
}
