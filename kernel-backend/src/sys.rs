//! The `bpf(2)` commands the kernel backend needs so far, over raw
//! syscalls: map creation and access, BTF loading, program loading (maps by
//! index through `fd_array`, functions through `func_info`), and
//! `BPF_PROG_TEST_RUN`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use userbpf_vm::insn::{op, Insn};
use userbpf_vm::object::btf::BtfWriter;
use userbpf_vm::object::{FuncReturn, FuncSig, ParamType};

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_GET_NEXT_KEY: u32 = 4;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_BTF_LOAD: u32 = 18;
const BPF_MAP_FREEZE: u32 = 22;

/// Verifier `log_level` bit: the instructions processed and the states
/// at branches (`BPF_LOG_LEVEL1`).
pub const LOG_LEVEL1: u32 = 1;
/// Verifier `log_level` bit: the verification time, stack depth and
/// `processed N insns` statistics (`BPF_LOG_STATS`); alone, the log holds
/// only those and the reason of a refusal.
pub const LOG_STATS: u32 = 4;

/// `BPF_F_SLEEPABLE` (program flag).
pub const BPF_F_SLEEPABLE: u32 = 1 << 4;

/// A failed `bpf()` call: the command, the errno and (for program loads)
/// the verifier log.
#[derive(Debug, thiserror::Error)]
#[error("bpf({cmd}): {source}{}", if log.is_empty() { String::new() } else { format!("\nverifier log:\n{log}") })]
pub struct SysError {
    /// The command name.
    pub cmd: &'static str,
    /// The OS error.
    pub source: std::io::Error,
    /// The verifier log, if any.
    pub log: String,
}

fn bpf(cmd: u32, attr: &mut [u64], size: usize) -> Result<i64, std::io::Error> {
    // SAFETY: `attr` is a zero-initialised buffer of at least `size` bytes
    // laid out as the command's `union bpf_attr` member; the kernel reads
    // and writes only within `size`.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Writes `v` at byte offset `off` of an attr buffer.
fn put32(attr: &mut [u64], off: usize, v: u32) {
    let bytes = v.to_le_bytes();
    let word = &mut attr[off / 8];
    let mut w = word.to_le_bytes();
    w[off % 8..off % 8 + 4].copy_from_slice(&bytes);
    *word = u64::from_le_bytes(w);
}

fn put64(attr: &mut [u64], off: usize, v: u64) {
    attr[off / 8] = v;
}

fn get32(attr: &[u64], off: usize) -> u32 {
    let w = attr[off / 8].to_le_bytes();
    u32::from_le_bytes([w[off % 8], w[off % 8 + 1], w[off % 8 + 2], w[off % 8 + 3]])
}

fn fd(rc: i64) -> OwnedFd {
    // SAFETY: a successful bpf() object creation returns a new fd we own.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

/// A kernel map.
#[derive(Debug)]
pub struct KernelMap {
    fd: OwnedFd,
    /// Key size.
    pub key_size: u32,
    /// Value size.
    pub value_size: u32,
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`, as
/// libbpf's `libbpf_num_possible_cpus`): per-CPU map values from user space
/// hold one value per possible CPU.
pub fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let highest = text
        .trim()
        .split(',')
        .filter_map(|range| range.rsplit('-').next()?.trim().parse::<usize>().ok())
        .max();
    match highest {
        Some(h) => h + 1,
        // SAFETY: sysconf has no preconditions.
        None => usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) })
            .unwrap_or(1)
            .max(1),
    }
}

/// Whether values of `map_type` are per CPU (`BPF_MAP_TYPE_PERCPU_HASH`,
/// `_PERCPU_ARRAY`, `_LRU_PERCPU_HASH`, `_PERCPU_CGROUP_STORAGE`).
fn is_percpu(map_type: u32) -> bool {
    matches!(map_type, 5 | 6 | 10 | 21)
}

impl KernelMap {
    /// Bytes of a value as user space reads and writes it: one
    /// `round_up(value_size, 8)` slot per possible CPU for per-CPU maps.
    pub fn user_value_size(&self) -> usize {
        if is_percpu(self.map_type) {
            (self.value_size as usize).div_ceil(8) * 8 * possible_cpus()
        } else {
            self.value_size as usize
        }
    }

    /// `BPF_MAP_CREATE` (`map_extra`: bloom filter hash count).
    pub fn create(
        name: &str,
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        flags: u32,
        map_extra: u64,
    ) -> Result<KernelMap, SysError> {
        Self::create_with_inner(
            name,
            [map_type, key_size, value_size, max_entries, flags],
            map_extra,
            0,
            None,
        )
    }

    /// `BPF_MAP_CREATE` of a map whose values hold special fields (a
    /// `struct bpf_spin_lock`, a `struct bpf_timer`): with BTF describing
    /// the key (bytes, or a `u32`) and the value (the fields between byte
    /// arrays), which the kernel needs to find them. `shape` is type, key
    /// size, value size, max entries and flags.
    pub fn create_with_fields(
        name: &str,
        shape: [u32; 5],
        map_extra: u64,
        fields: &[ValueField],
    ) -> Result<KernelMap, SysError> {
        let [_, key_size, value_size, ..] = shape;
        let btf = value_fields_btf(key_size, value_size, fields)?;
        Self::create_with_inner(name, shape, map_extra, 0, Some(&btf))
    }

    /// `BPF_MAP_CREATE` of an array or hash of maps
    /// (`BPF_MAP_TYPE_ARRAY_OF_MAPS`/`_HASH_OF_MAPS`) whose inner maps
    /// have `inner`'s shape (`inner_map_fd`: the kernel copies its type,
    /// sizes and flags). Values are map fds, 4 bytes.
    pub fn create_map_of_maps(
        name: &str,
        map_type: u32,
        key_size: u32,
        max_entries: u32,
        flags: u32,
        inner: &KernelMap,
    ) -> Result<KernelMap, SysError> {
        Self::create_with_inner(
            name,
            [map_type, key_size, 4, max_entries, flags],
            0,
            inner.raw_fd() as u32,
            None,
        )
    }

    /// `BPF_MAP_CREATE`: `shape` is type, key size, value size, max
    /// entries and flags; `inner_map_fd` 0 for maps of values; `btf` the
    /// key's and value's types.
    fn create_with_inner(
        name: &str,
        shape: [u32; 5],
        map_extra: u64,
        inner_map_fd: u32,
        btf: Option<&MapBtf>,
    ) -> Result<KernelMap, SysError> {
        let [map_type, key_size, value_size, max_entries, flags] = shape;
        let mut attr = [0u64; 16];
        // map_extra is the u64 at offset 64.
        attr[8] = map_extra;
        if let Some(btf) = btf {
            // btf_fd, btf_key_type_id, btf_value_type_id.
            put32(&mut attr, 48, btf.fd.as_raw_fd() as u32);
            put32(&mut attr, 52, btf.key);
            put32(&mut attr, 56, btf.value);
        }
        put32(&mut attr, 0, map_type);
        put32(&mut attr, 4, key_size);
        put32(&mut attr, 8, value_size);
        put32(&mut attr, 12, max_entries);
        put32(&mut attr, 16, flags);
        put32(&mut attr, 20, inner_map_fd);
        // map_name at offset 28 (16 bytes): [a-zA-Z0-9_.] only.
        let clean: Vec<u8> = name
            .bytes()
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
            .take(15)
            .collect();
        for (i, b) in clean.iter().enumerate() {
            let off = 28 + i;
            let mut w = attr[off / 8].to_le_bytes();
            w[off % 8] = *b;
            attr[off / 8] = u64::from_le_bytes(w);
        }
        let rc = bpf(BPF_MAP_CREATE, &mut attr, 72).map_err(|source| SysError {
            cmd: "BPF_MAP_CREATE",
            source,
            log: String::new(),
        })?;
        Ok(KernelMap {
            fd: fd(rc),
            key_size,
            value_size,
            map_type,
        })
    }

    /// The map's fd.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// `BPF_MAP_FREEZE`: no more writes from user space. A frozen map
    /// that programs may only read (`BPF_F_RDONLY_PROG`) is constant to
    /// the verifier, which then reads its values (a format string, a
    /// size), as libbpf freezes `.rodata` after filling it.
    pub fn freeze(&self) -> Result<(), SysError> {
        let mut attr = [0u64; 1];
        put32(&mut attr, 0, self.raw_fd() as u32);
        bpf(BPF_MAP_FREEZE, &mut attr, 4).map_err(|source| SysError {
            cmd: "BPF_MAP_FREEZE",
            source,
            log: String::new(),
        })?;
        Ok(())
    }

    /// `BPF_MAP_UPDATE_ELEM` (`value`: [`KernelMap::user_value_size`] bytes,
    /// or `EINVAL` without a call, since the kernel would read past it).
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), SysError> {
        if value.len() < self.user_value_size() || key.len() < self.key_size as usize {
            return Err(SysError {
                cmd: "BPF_MAP_UPDATE_ELEM",
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
                log: format!(
                    "key of {} bytes and value of {} bytes given, the map takes {} and {}",
                    key.len(),
                    value.len(),
                    self.key_size,
                    self.user_value_size()
                ),
            });
        }
        let mut attr = [0u64; 4];
        put32(&mut attr, 0, self.raw_fd() as u32);
        put64(&mut attr, 8, key.as_ptr() as u64);
        put64(&mut attr, 16, value.as_ptr() as u64);
        put64(&mut attr, 24, flags);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr, 32).map_err(|source| SysError {
            cmd: "BPF_MAP_UPDATE_ELEM",
            source,
            log: String::new(),
        })?;
        Ok(())
    }

    /// `BPF_MAP_LOOKUP_ELEM`.
    pub fn lookup(&self, key: &[u8]) -> Option<Vec<u8>> {
        if key.len() < self.key_size as usize {
            return None;
        }
        let mut value = vec![0u8; self.user_value_size()];
        let mut attr = [0u64; 4];
        put32(&mut attr, 0, self.raw_fd() as u32);
        put64(&mut attr, 8, key.as_ptr() as u64);
        put64(&mut attr, 16, value.as_mut_ptr() as u64);
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr, 32).ok()?;
        Some(value)
    }

    /// Every key (`BPF_MAP_GET_NEXT_KEY`).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut next = vec![0u8; self.key_size as usize];
        loop {
            let mut attr = [0u64; 3];
            put32(&mut attr, 0, self.raw_fd() as u32);
            put64(
                &mut attr,
                8,
                out.last().map(|k| k.as_ptr() as u64).unwrap_or(0),
            );
            put64(&mut attr, 16, next.as_mut_ptr() as u64);
            if bpf(BPF_MAP_GET_NEXT_KEY, &mut attr, 24).is_err() || out.len() > 1 << 20 {
                return out;
            }
            out.push(next.clone());
        }
    }
}

/// A loaded kernel program.
#[derive(Debug)]
pub struct KernelProgram {
    fd: OwnedFd,
}

/// The result of `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (`retval`, 32 bits).
    pub retval: u32,
    /// `duration` in ns per run, as the kernel reports it.
    pub duration: u32,
    /// The context after the run (when `ctx_out` was requested).
    pub ctx_out: Vec<u8>,
}

impl KernelProgram {
    /// The program's fd.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// `BPF_PROG_LOAD` with `fd_array` for `lddw src=5/6` map indexes.
    /// Loads without a log first (a verbose log of a long program fills any
    /// buffer, and the kernel then refuses the load with `ENOSPC`); a
    /// refused program is loaded again with the log, for the error.
    pub fn load(
        name: &str,
        prog_type: u32,
        insns: &[Insn],
        license: &str,
        prog_flags: u32,
        fd_array: &[i32],
    ) -> Result<KernelProgram, SysError> {
        Self::load_request(&LoadRequest {
            prog_flags,
            fd_array,
            license,
            ..LoadRequest::new(name, prog_type, insns)
        })
    }

    /// [`KernelProgram::load`] of a full request: without a log first,
    /// then, if the kernel refuses it, again with a 16 MiB log for the
    /// error.
    pub fn load_request(req: &LoadRequest<'_>) -> Result<KernelProgram, SysError> {
        match Self::load_once(req, 0, 0) {
            Ok((p, _)) => Ok(p),
            Err(_) => Self::load_once(req, LOG_LEVEL1, 1 << 24).map(|(p, _)| p),
        }
    }

    /// One `BPF_PROG_LOAD` with a log buffer of `log_size` bytes at
    /// `log_level` (0 with `log_size` 0: no log; [`LOG_LEVEL1`]: every
    /// instruction processed, which overflows any buffer on long programs
    /// and then fails the load with `ENOSPC`; [`LOG_STATS`]: only the
    /// verdict and the statistics): the program and the log, whose last
    /// line is the kernel's `processed N insns ...` summary, or the refusal
    /// with the log. Benchmarks time this call (and the drop that closes
    /// the fd) as the kernel verifier's cost.
    pub fn load_once(
        req: &LoadRequest<'_>,
        log_level: u32,
        log_size: usize,
    ) -> Result<(KernelProgram, String), SysError> {
        let insns = req.insns;
        let bytes = userbpf_vm::insn::insns_to_bytes(insns);
        let license = CString::new(req.license).unwrap_or_else(|_| c"GPL".into());
        let mut log = vec![0u8; log_size];
        let mut attr = [0u64; 20];
        put32(&mut attr, 0, req.prog_type);
        put32(&mut attr, 4, insns.len() as u32);
        put64(&mut attr, 8, bytes.as_ptr() as u64);
        put64(&mut attr, 16, license.as_ptr() as u64);
        if log_size > 0 {
            put32(&mut attr, 24, log_level);
            put32(&mut attr, 28, log.len() as u32);
            put64(&mut attr, 32, log.as_mut_ptr() as u64);
        }
        put32(&mut attr, 44, req.prog_flags);
        put32(&mut attr, 68, req.expected_attach_type);
        for (i, b) in req
            .name
            .bytes()
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .take(15)
            .enumerate()
        {
            let off = 48 + i;
            let mut w = attr[off / 8].to_le_bytes();
            w[off % 8] = b;
            attr[off / 8] = u64::from_le_bytes(w);
        }
        if let Some(btf) = req.btf {
            // prog_btf_fd, func_info_rec_size, func_info, func_info_cnt.
            put32(&mut attr, 72, btf.raw_fd() as u32);
            put32(&mut attr, 76, 8);
            put64(&mut attr, 80, btf.func_info.as_ptr() as u64);
            put32(&mut attr, 88, btf.func_info.len() as u32);
        }
        if !req.fd_array.is_empty() {
            // fd_array at offset 120 (union bpf_attr, BPF_PROG_LOAD).
            put64(&mut attr, 120, req.fd_array.as_ptr() as u64);
        }
        let rc = bpf(BPF_PROG_LOAD, &mut attr, 152);
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let log = String::from_utf8_lossy(&log[..end]).into_owned();
        match rc {
            Ok(rc) => Ok((KernelProgram { fd: fd(rc) }, log)),
            Err(source) => Err(SysError {
                cmd: "BPF_PROG_LOAD",
                source,
                log,
            }),
        }
    }

    /// `BPF_PROG_TEST_RUN` for `syscall` programs: the kernel runs the
    /// program once on a copy of `ctx` and copies the context back into it.
    pub fn test_run_syscall(&self, ctx: &mut [u8]) -> Result<u32, SysError> {
        let mut attr = [0u64; 10];
        put32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put32(&mut attr, 40, ctx.len() as u32);
        put64(&mut attr, 48, ctx.as_mut_ptr() as u64);
        bpf(BPF_PROG_TEST_RUN, &mut attr, 80).map_err(|source| SysError {
            cmd: "BPF_PROG_TEST_RUN",
            source,
            log: String::new(),
        })?;
        Ok(get32(&attr, 4))
    }

    /// `BPF_PROG_TEST_RUN` of a packet program (XDP, TC, socket filter) on
    /// `packet`: the return value and the packet afterwards.
    pub fn test_run_packet(&self, packet: &[u8]) -> Result<(u32, Vec<u8>), SysError> {
        let (retval, _, out) = self.run_packet(packet, 1)?;
        Ok((retval, out))
    }

    /// `BPF_PROG_TEST_RUN` of a packet program `repeat` times on `packet`:
    /// the return value and the kernel's mean duration of one run in ns.
    pub fn test_run_packet_timed(
        &self,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(u32, u32), SysError> {
        let (retval, duration, _) = self.run_packet(packet, repeat)?;
        Ok((retval, duration))
    }

    /// The return value, mean duration and packet out of `repeat` runs.
    fn run_packet(&self, packet: &[u8], repeat: u32) -> Result<(u32, u32, Vec<u8>), SysError> {
        let mut out = vec![0u8; packet.len() + 512];
        let mut attr = [0u64; 10];
        put32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put32(&mut attr, 8, packet.len() as u32); // data_size_in
        put32(&mut attr, 12, out.len() as u32); // data_size_out
        put64(&mut attr, 16, packet.as_ptr() as u64);
        put64(&mut attr, 24, out.as_mut_ptr() as u64);
        put32(&mut attr, 32, repeat);
        bpf(BPF_PROG_TEST_RUN, &mut attr, 80).map_err(|source| SysError {
            cmd: "BPF_PROG_TEST_RUN",
            source,
            log: String::new(),
        })?;
        out.truncate(get32(&attr, 12) as usize);
        Ok((get32(&attr, 4), get32(&attr, 36), out))
    }

    /// `BPF_PROG_TEST_RUN` with a context in and out (`repeat` 0 runs once;
    /// syscall and raw_tp programs only accept 0).
    pub fn test_run(&self, ctx: &[u8], repeat: u32) -> Result<TestRun, SysError> {
        let mut ctx_out = vec![0u8; ctx.len()];
        let mut attr = [0u64; 10];
        put32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put32(&mut attr, 32, repeat);
        if !ctx.is_empty() {
            put32(&mut attr, 40, ctx.len() as u32); // ctx_size_in
            put32(&mut attr, 44, ctx_out.len() as u32); // ctx_size_out
            put64(&mut attr, 48, ctx.as_ptr() as u64); // ctx_in
            put64(&mut attr, 56, ctx_out.as_mut_ptr() as u64); // ctx_out
        }
        bpf(BPF_PROG_TEST_RUN, &mut attr, 80).map_err(|source| SysError {
            cmd: "BPF_PROG_TEST_RUN",
            source,
            log: String::new(),
        })?;
        Ok(TestRun {
            retval: get32(&attr, 4),
            duration: get32(&attr, 36),
            ctx_out,
        })
    }
}

/// One `BPF_PROG_LOAD`: the program and what the kernel takes with it.
#[derive(Debug, Clone, Copy)]
pub struct LoadRequest<'a> {
    /// The program's name (the kernel keeps 15 bytes of `[A-Za-z0-9_]`).
    pub name: &'a str,
    /// `enum bpf_prog_type`.
    pub prog_type: u32,
    /// The instructions.
    pub insns: &'a [Insn],
    /// The license (GPL-only helpers need a GPL-compatible one).
    pub license: &'a str,
    /// `prog_flags` (`BPF_F_SLEEPABLE`, ...).
    pub prog_flags: u32,
    /// `expected_attach_type` (`enum bpf_attach_type`; 0 when the program
    /// type needs none).
    pub expected_attach_type: u32,
    /// Map fds by the index `lddw src=5/6` carry.
    pub fd_array: &'a [i32],
    /// BTF with a function per subprogram (`prog_btf_fd` and `func_info`),
    /// which the kernel requires of programs that take a function's
    /// address (callbacks).
    pub btf: Option<&'a ProgBtf>,
}

impl<'a> LoadRequest<'a> {
    /// A GPL program of `prog_type` without maps, flags or BTF.
    pub fn new(name: &'a str, prog_type: u32, insns: &'a [Insn]) -> LoadRequest<'a> {
        LoadRequest {
            name,
            prog_type,
            insns,
            license: "GPL",
            prog_flags: 0,
            expected_attach_type: 0,
            fd_array: &[],
            btf: None,
        }
    }
}

/// A BTF object loaded in the kernel (`BPF_BTF_LOAD`) describing a
/// program's functions, with the `func_info` records that place them: the
/// kernel wants both from a program that passes a callback's address.
#[derive(Debug)]
pub struct ProgBtf {
    fd: OwnedFd,
    /// `struct bpf_func_info`: (`insn_off`, `type_id`) per function.
    func_info: Vec<[u32; 2]>,
}

/// `BPF_BTF_LOAD` of a BTF blob (a [`BtfWriter`]'s).
fn load_btf(blob: &[u8]) -> Result<OwnedFd, SysError> {
    let mut log = vec![0u8; 1 << 16];
    let mut attr = [0u64; 4];
    put64(&mut attr, 0, blob.as_ptr() as u64); // btf
    put64(&mut attr, 8, log.as_mut_ptr() as u64); // btf_log_buf
    put32(&mut attr, 16, blob.len() as u32); // btf_size
    put32(&mut attr, 20, log.len() as u32); // btf_log_size
    put32(&mut attr, 24, 1); // btf_log_level
    match bpf(BPF_BTF_LOAD, &mut attr, 28) {
        Ok(rc) => Ok(fd(rc)),
        Err(source) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(SysError {
                cmd: "BPF_BTF_LOAD",
                source,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

/// A map's BTF: the loaded types and the key's and value's ids.
struct MapBtf {
    fd: OwnedFd,
    key: u32,
    value: u32,
}

/// A special field of a map value, which the kernel finds through the
/// map's BTF: its byte offset in the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueField {
    /// `struct bpf_spin_lock` (4 bytes).
    SpinLock(u32),
    /// `struct bpf_timer` (16 bytes, 8-byte aligned).
    Timer(u32),
}

impl ValueField {
    fn offset(self) -> u32 {
        match self {
            ValueField::SpinLock(off) | ValueField::Timer(off) => off,
        }
    }

    fn size(self) -> u32 {
        match self {
            ValueField::SpinLock(_) => 4,
            ValueField::Timer(_) => 16,
        }
    }
}

/// BTF for a map with `value_size`-byte values holding `fields`: the key
/// (`unsigned int` for 4 bytes, else bytes), `struct bpf_spin_lock {
/// unsigned int val; }`, `struct bpf_timer { unsigned long long
/// __opaque[2]; }` and the value's structure, the fields between byte
/// arrays.
fn value_fields_btf(
    key_size: u32,
    value_size: u32,
    fields: &[ValueField],
) -> Result<MapBtf, SysError> {
    let invalid = |log: String| SysError {
        cmd: "BPF_BTF_LOAD",
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
        log,
    };
    let mut fields = fields.to_vec();
    fields.sort_by_key(|f| f.offset());
    let mut w = BtfWriter::new();
    let uint = w.int("unsigned int", 4, false);
    let uchar = w.int("unsigned char", 1, false);
    let ulong = w.int("unsigned long long", 8, false);
    let lock = w.structure("bpf_spin_lock", &[("val", uint, 4)]);
    let opaque = w.array(ulong, uint, 2);
    let timer = w.structure("bpf_timer", &[("__opaque", opaque, 16)]);
    let key = if key_size == 4 {
        uint
    } else {
        w.array(uchar, uint, key_size)
    };
    // (name, type, size) of the value's members, in order.
    let mut members: Vec<(String, u32, u32)> = Vec::new();
    let mut at = 0u32;
    for (i, f) in fields.iter().enumerate() {
        let off = f.offset();
        if off < at {
            return Err(invalid(format!("value fields overlap at byte {off}")));
        }
        if off > at {
            members.push((format!("pad{i}"), w.array(uchar, uint, off - at), off - at));
        }
        let (name, ty) = match f {
            ValueField::SpinLock(_) => ("lock", lock),
            ValueField::Timer(_) => ("timer", timer),
        };
        members.push((format!("{name}{i}"), ty, f.size()));
        at = off.saturating_add(f.size());
    }
    if at > value_size {
        return Err(invalid(format!(
            "value fields end at byte {at}, past a value of {value_size} bytes"
        )));
    }
    if value_size > at {
        members.push((
            "tail".to_string(),
            w.array(uchar, uint, value_size - at),
            value_size - at,
        ));
    }
    let members: Vec<(&str, u32, u32)> = members
        .iter()
        .map(|(name, ty, size)| (name.as_str(), *ty, *size))
        .collect();
    let value = w.structure("value", &members);
    Ok(MapBtf {
        fd: load_btf(&w.finish())?,
        key,
        value,
    })
}

impl ProgBtf {
    /// BTF for raw bytecode with subprograms (the targets of local calls
    /// and function addresses), named `f0` (the program), `f1`, ...; `None`
    /// when the code has none. For programs assembled by hand: objects
    /// carry their functions' names.
    pub fn for_subprograms(insns: &[Insn]) -> Result<Option<ProgBtf>, SysError> {
        let mut starts: Vec<usize> = vec![0];
        let mut pc = 0usize;
        while let Some(i) = insns.get(pc) {
            let local_call = i.code == op::CALL && i.src == op::CALL_LOCAL;
            let function_address = i.code == op::LDDW && i.src == op::PSEUDO_FUNC;
            if local_call || function_address {
                let target = i64::try_from(pc)
                    .ok()
                    .and_then(|p| p.checked_add(1)?.checked_add(i64::from(i.imm)))
                    .and_then(|t| usize::try_from(t).ok());
                starts.extend(target.filter(|&t| t < insns.len()));
            }
            pc = pc.saturating_add(if i.code == op::LDDW { 2 } else { 1 });
        }
        starts.sort_unstable();
        starts.dedup();
        if starts.len() < 2 {
            return Ok(None);
        }
        let names: Vec<String> = (0..starts.len()).map(|k| format!("f{k}")).collect();
        let int = FuncSig {
            ret: FuncReturn::Scalar,
            global: false,
            params: Vec::new(),
        };
        let functions: Vec<(&str, usize, &FuncSig)> = names
            .iter()
            .map(String::as_str)
            .zip(starts)
            .map(|(name, pc)| (name, pc, &int))
            .collect();
        ProgBtf::for_functions(&functions).map(Some)
    }

    /// Synthesises and loads BTF for a program whose functions start at
    /// the given pcs (the program itself at 0, its subprograms after),
    /// as the object's BTF describes them: static functions `name(void)`
    /// returning what they return in the object (`int`, `void`, or else
    /// `void *`: the kernel allows `BPF_LD_ABS` and tail calls only in
    /// functions returning a scalar), verified at their call sites with
    /// the caller's registers; global functions with their parameters'
    /// types (scalars as `int`, pointers to the context by its name, other
    /// pointers to memory of the pointee's size) and `arg:` tags, which the
    /// kernel verifies on their own for any such arguments, as with the
    /// BTF libbpf loads. The object's own BTF (with its data sections) is
    /// not loaded.
    pub fn for_functions(functions: &[(&str, usize, &FuncSig)]) -> Result<ProgBtf, SysError> {
        let mut w = BtfWriter::new();
        let int = w.int("int", 4, true);
        let void_ptr = w.pointer(0);
        let mut func_info: Vec<[u32; 2]> = Vec::with_capacity(functions.len());
        // (BTF names must be C identifiers.)
        let ident = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        for &(name, pc, sig) in functions {
            let name = ident(name);
            let ret = match sig.ret {
                FuncReturn::Scalar => int,
                FuncReturn::Void => 0,
                FuncReturn::Other => void_ptr,
            };
            let id = if sig.global {
                let names: Vec<String> = sig.params.iter().map(|p| ident(&p.name)).collect();
                let mut params = Vec::with_capacity(sig.params.len());
                for (i, p) in sig.params.iter().enumerate() {
                    let ty = match &p.ty {
                        ParamType::Scalar => int,
                        ParamType::Pointer {
                            typedefs,
                            record,
                            size,
                            ..
                        } => {
                            let size = size.unwrap_or(0);
                            let mut to = match (record, size) {
                                (Some(r), _) => w.opaque_structure(r, size),
                                (None, 0) => 0,
                                (None, n) => w.opaque_structure(&format!("userbpf_arg{i}"), n),
                            };
                            for t in typedefs.iter().rev() {
                                to = w.typedef(t, to);
                            }
                            w.pointer(to)
                        }
                        // (A structure by value: the kernel refuses it.)
                        ParamType::Other(_) => w.opaque_structure(&format!("userbpf_arg{i}"), 8),
                    };
                    params.push((names[i].as_str(), ty));
                }
                let proto = w.func_proto_with(ret, &params);
                let f = w.global_func(&name, proto);
                for (i, p) in sig.params.iter().enumerate() {
                    for tag in &p.tags {
                        w.decl_tag(&format!("arg:{tag}"), f, i as u32);
                    }
                }
                f
            } else {
                let proto = w.func_proto(ret);
                w.func(&name, proto)
            };
            func_info.push([pc as u32, id]);
        }
        func_info.sort_unstable();
        Ok(ProgBtf {
            fd: load_btf(&w.finish())?,
            func_info,
        })
    }

    /// The BTF object's fd.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}
