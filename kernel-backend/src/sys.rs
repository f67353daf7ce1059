//! The `bpf(2)` commands the kernel backend needs so far, over raw
//! syscalls: map creation and access, program loading (maps by index through
//! `fd_array`), and `BPF_PROG_TEST_RUN`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use userbpf_vm::insn::Insn;

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_GET_NEXT_KEY: u32 = 4;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;

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
        let mut attr = [0u64; 16];
        // map_extra is the u64 at offset 64.
        attr[8] = map_extra;
        put32(&mut attr, 0, map_type);
        put32(&mut attr, 4, key_size);
        put32(&mut attr, 8, value_size);
        put32(&mut attr, 12, max_entries);
        put32(&mut attr, 16, flags);
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
        match Self::load_with_log(name, prog_type, insns, license, prog_flags, fd_array, 0) {
            Ok(p) => Ok(p),
            Err(_) => Self::load_with_log(
                name,
                prog_type,
                insns,
                license,
                prog_flags,
                fd_array,
                1 << 24,
            ),
        }
    }

    fn load_with_log(
        name: &str,
        prog_type: u32,
        insns: &[Insn],
        license: &str,
        prog_flags: u32,
        fd_array: &[i32],
        log_size: usize,
    ) -> Result<KernelProgram, SysError> {
        let bytes = userbpf_vm::insn::insns_to_bytes(insns);
        let license = CString::new(license).unwrap_or_else(|_| c"GPL".into());
        let mut log = vec![0u8; log_size];
        let mut attr = [0u64; 20];
        put32(&mut attr, 0, prog_type);
        put32(&mut attr, 4, insns.len() as u32);
        put64(&mut attr, 8, bytes.as_ptr() as u64);
        put64(&mut attr, 16, license.as_ptr() as u64);
        if log_size > 0 {
            put32(&mut attr, 24, 1); // log_level
            put32(&mut attr, 28, log.len() as u32);
            put64(&mut attr, 32, log.as_mut_ptr() as u64);
        }
        put32(&mut attr, 44, prog_flags);
        for (i, b) in name
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
        if !fd_array.is_empty() {
            // fd_array at offset 120 (union bpf_attr, BPF_PROG_LOAD).
            put64(&mut attr, 120, fd_array.as_ptr() as u64);
        }
        let rc = bpf(BPF_PROG_LOAD, &mut attr, 152);
        match rc {
            Ok(rc) => Ok(KernelProgram { fd: fd(rc) }),
            Err(source) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                Err(SysError {
                    cmd: "BPF_PROG_LOAD",
                    source,
                    log: String::from_utf8_lossy(&log[..end]).into_owned(),
                })
            }
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
