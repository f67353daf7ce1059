//! Contexts of tracing programs, in the kernel's layouts (x86-64): `struct
//! pt_regs` for uprobes, kprobes and USDT probes, the records of the
//! syscall tracepoints (`struct trace_event_raw_sys_enter` /
//! `_sys_exit`), and `struct bpf_raw_tracepoint_args`.

use crate::object::{ProgramKind, ProgramType};

/// `sizeof(struct pt_regs)` on x86-64.
pub const PT_REGS_SIZE: usize = 168;
/// `sizeof(struct trace_event_raw_sys_enter)`.
pub const SYS_ENTER_SIZE: usize = 64;
/// `sizeof(struct trace_event_raw_sys_exit)`.
pub const SYS_EXIT_SIZE: usize = 24;

/// `struct pt_regs` (x86-64), the context of uprobe, uretprobe, kprobe and
/// USDT programs. `PT_REGS_PARM1..6` are `di, si, dx, cx, r8, r9`;
/// `PT_REGS_RC` is `ax`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PtRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub bp: u64,
    pub bx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub ax: u64,
    pub cx: u64,
    pub dx: u64,
    pub si: u64,
    pub di: u64,
    pub orig_ax: u64,
    pub ip: u64,
    pub cs: u64,
    pub flags: u64,
    pub sp: u64,
    pub ss: u64,
}

const _: () = assert!(std::mem::size_of::<PtRegs>() == PT_REGS_SIZE);

impl PtRegs {
    /// Registers of a call to a function with these (up to six) integer
    /// arguments, in the x86-64 calling convention.
    pub fn with_args(args: &[u64]) -> PtRegs {
        let mut r = PtRegs::default();
        let slots = [
            &mut r.di, &mut r.si, &mut r.dx, &mut r.cx, &mut r.r8, &mut r.r9,
        ];
        for (slot, a) in slots.into_iter().zip(args) {
            *slot = *a;
        }
        r
    }

    /// Argument `n` (0-based, `PT_REGS_PARM{n+1}`), for `n < 6`.
    pub fn arg(&self, n: usize) -> Option<u64> {
        [self.di, self.si, self.dx, self.cx, self.r8, self.r9]
            .get(n)
            .copied()
    }

    fn words(&self) -> [u64; PT_REGS_SIZE / 8] {
        [
            self.r15,
            self.r14,
            self.r13,
            self.r12,
            self.bp,
            self.bx,
            self.r11,
            self.r10,
            self.r9,
            self.r8,
            self.ax,
            self.cx,
            self.dx,
            self.si,
            self.di,
            self.orig_ax,
            self.ip,
            self.cs,
            self.flags,
            self.sp,
            self.ss,
        ]
    }

    /// The kernel's byte image.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words().iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Reads an image of at least [`PT_REGS_SIZE`] bytes.
    pub fn from_bytes(b: &[u8]) -> Option<PtRegs> {
        let w = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(PtRegs {
            r15: w(0)?,
            r14: w(1)?,
            r13: w(2)?,
            r12: w(3)?,
            bp: w(4)?,
            bx: w(5)?,
            r11: w(6)?,
            r10: w(7)?,
            r9: w(8)?,
            r8: w(9)?,
            ax: w(10)?,
            cx: w(11)?,
            dx: w(12)?,
            si: w(13)?,
            di: w(14)?,
            orig_ax: w(15)?,
            ip: w(16)?,
            cs: w(17)?,
            flags: w(18)?,
            sp: w(19)?,
            ss: w(20)?,
        })
    }
}

/// `struct trace_entry`: the common fields of every tracepoint record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceEntry {
    /// `common_type`: the event's id (`events/<cat>/<name>/id` in tracefs).
    pub common_type: u16,
    /// `common_flags`.
    pub common_flags: u8,
    /// `common_preempt_count`.
    pub common_preempt_count: u8,
    /// `common_pid`.
    pub common_pid: i32,
}

impl TraceEntry {
    fn bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..2].copy_from_slice(&self.common_type.to_le_bytes());
        b[2] = self.common_flags;
        b[3] = self.common_preempt_count;
        b[4..].copy_from_slice(&self.common_pid.to_le_bytes());
        b
    }
}

/// The record of `tracepoint/raw_syscalls/sys_enter` and of every
/// `tracepoint/syscalls/sys_enter_<name>` (whose `__syscall_nr` and
/// arguments sit at the same offsets): `struct trace_event_raw_sys_enter`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysEnter {
    /// Common fields.
    pub ent: TraceEntry,
    /// The syscall number.
    pub id: i64,
    /// The arguments.
    pub args: [u64; 6],
}

impl SysEnter {
    /// The kernel's byte image ([`SYS_ENTER_SIZE`] bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.ent.bytes().to_vec();
        b.extend_from_slice(&self.id.to_le_bytes());
        for a in self.args {
            b.extend_from_slice(&a.to_le_bytes());
        }
        b
    }
}

/// The record of `tracepoint/raw_syscalls/sys_exit` and of every
/// `tracepoint/syscalls/sys_exit_<name>`: `struct trace_event_raw_sys_exit`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysExit {
    /// Common fields.
    pub ent: TraceEntry,
    /// The syscall number.
    pub id: i64,
    /// The return value.
    pub ret: i64,
}

impl SysExit {
    /// The kernel's byte image ([`SYS_EXIT_SIZE`] bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.ent.bytes().to_vec();
        b.extend_from_slice(&self.id.to_le_bytes());
        b.extend_from_slice(&self.ret.to_le_bytes());
        b
    }
}

/// `struct bpf_raw_tracepoint_args`: the raw arguments of a tracepoint
/// (for `raw_tp/sys_enter`: a `struct pt_regs *` and the syscall number).
pub fn raw_tracepoint_args(args: &[u64]) -> Vec<u8> {
    args.iter().flat_map(|a| a.to_le_bytes()).collect()
}

/// The size of the context the kernel hands programs of `kind`, where it
/// is fixed: `struct pt_regs` for kprobe-type programs (uprobes, USDT,
/// kprobes), the syscall tracepoint records, `struct
/// bpf_perf_event_data` (whose first member is the registers). `None`
/// where it depends on the event (other tracepoints, raw tracepoints) or
/// the program is not a tracing program.
pub fn context_size(kind: &ProgramKind) -> Option<usize> {
    match kind.prog_type {
        ProgramType::Kprobe => Some(PT_REGS_SIZE),
        // struct bpf_perf_event_data: regs, sample_period, addr.
        ProgramType::PerfEvent => Some(PT_REGS_SIZE + 16),
        ProgramType::Tracepoint => {
            let mut parts = kind.section.rsplit('/');
            let name = parts.next().unwrap_or("");
            let category = parts.next().unwrap_or("");
            if !matches!(category, "syscalls" | "raw_syscalls") {
                None
            } else if name.starts_with("sys_enter") {
                Some(SYS_ENTER_SIZE)
            } else if name.starts_with("sys_exit") {
                Some(SYS_EXIT_SIZE)
            } else {
                None
            }
        }
        _ => None,
    }
}
