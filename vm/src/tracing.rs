//! Helpers that ask about the event that fired the program or act on the
//! traced thread: `bpf_get_func_ip` (173), `bpf_get_attach_cookie` (174),
//! `bpf_get_func_arg` (183), `bpf_get_func_ret` (184),
//! `bpf_get_func_arg_cnt` (185), `bpf_override_return` (58),
//! `bpf_get_retval` (186), `bpf_set_retval` (187),
//! `bpf_send_signal` (109), `bpf_send_signal_thread` (117) and
//! `bpf_jiffies64` (118). The event's facts come from the [`HookInfo`] the
//! hook sets on the VM.
//!
//! [`HookInfo`]: crate::helpers::HookInfo

use std::sync::OnceLock;

use crate::helpers::{neg_errno, HelperError, Helpers};

/// `_NSIG`: signals are 1..=64 (0 checks permissions only).
const NSIG: u64 = 64;

/// The kernel's tick rate (`CONFIG_HZ`), from the running kernel's
/// configuration; 250 (Debian's) when it cannot be read.
pub fn kernel_hz() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        crate::object::KernelConfig::system()
            .ok()
            .and_then(|c| c.get("CONFIG_HZ").and_then(|v| v.parse().ok()))
            .filter(|&hz: &u64| hz > 0)
            .unwrap_or(250)
    })
}

fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u128) * 1_000_000_000 + ts.tv_nsec as u128
}

/// Jiffies from a `CLOCK_MONOTONIC` reading, before calibration.
fn raw_jiffies(ns: u128, hz: u64) -> u64 {
    let initial = u64::from(0u32.wrapping_sub((300 * hz) as u32));
    initial.wrapping_add((ns * u128::from(hz) / 1_000_000_000) as u64)
}

/// How far the kernel's jiffies are from [`raw_jiffies`] (the tick starts a
/// little after the monotonic clock), read once from `/proc/timer_list`
/// (root only), which prints the monotonic time and the jiffies together.
fn jiffies_offset(hz: u64) -> u64 {
    static OFFSET: OnceLock<u64> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        let Ok(text) = std::fs::read_to_string("/proc/timer_list") else {
            return 0;
        };
        let now = text.lines().find_map(|l| {
            l.strip_prefix("now at ")?
                .strip_suffix(" nsecs")?
                .parse::<u128>()
                .ok()
        });
        let jiffies = text
            .lines()
            .find_map(|l| l.strip_prefix("jiffies: ")?.trim().parse::<u64>().ok());
        match (now, jiffies) {
            (Some(now), Some(j)) => j.wrapping_sub(raw_jiffies(now, hz)),
            _ => 0,
        }
    })
}

/// `bpf_jiffies64()`: the kernel's `jiffies_64`, which starts at
/// `INITIAL_JIFFIES` (`-300 * HZ` as a `u32`, so that it wraps five minutes
/// after boot) and advances `HZ` times a second of `CLOCK_MONOTONIC`. As
/// root the phase of the tick is calibrated once from `/proc/timer_list`
/// (then it matches the kernel's value within a tick); otherwise it may be
/// off by the fraction of a second the tick started after the clock.
pub fn jiffies64() -> u64 {
    let hz = kernel_hz();
    raw_jiffies(monotonic_ns(), hz).wrapping_add(jiffies_offset(hz))
}

fn no_args(name: &str) -> HelperError {
    HelperError::Failed(format!(
        "{name}: this hook passes no function arguments (only hooks whose context is the \
         traced function's arguments, fentry/fexit style, do)"
    ))
}

/// Registers the helpers of this module.
pub(crate) fn register(h: &mut Helpers) {
    h.register_kernel(173, |ctx, _| Ok(ctx.hook().func_ip));
    h.register_kernel(174, |ctx, _| Ok(ctx.hook().attach_cookie));
    h.register_kernel(183, |ctx, a| {
        // (ctx, n, *value)
        let nr = ctx
            .hook()
            .func_arg_count
            .ok_or_else(|| no_args("bpf_get_func_arg"))?;
        if a[1] >= u64::from(nr) {
            return Ok(neg_errno(libc::EINVAL));
        }
        let v = ctx.read(a[0].wrapping_add(a[1].wrapping_mul(8)), 8)?;
        ctx.write(a[2], &v)?;
        Ok(0)
    });
    h.register_kernel(184, |ctx, a| {
        // (ctx, *value): the return value follows the arguments.
        let hook = *ctx.hook();
        let nr = hook
            .func_arg_count
            .ok_or_else(|| no_args("bpf_get_func_ret"))?;
        if !hook.func_has_ret {
            return Ok(neg_errno(libc::EOPNOTSUPP));
        }
        let v = ctx.read(a[0].wrapping_add(u64::from(nr).wrapping_mul(8)), 8)?;
        ctx.write(a[1], &v)?;
        Ok(0)
    });
    h.register_kernel(185, |ctx, _| {
        let nr = ctx
            .hook()
            .func_arg_count
            .ok_or_else(|| no_args("bpf_get_func_arg_cnt"))?;
        Ok(u64::from(nr))
    });
    h.register_kernel(58, |ctx, a| {
        // (regs, rc): the hook returns rc from the probed function instead
        // of running it.
        ctx.set_override_return(a[1]);
        Ok(0)
    });
    // bpf_set_retval(int retval), bpf_get_retval(): the kernel's cgroup
    // helpers, which in-process hooks take as `bpf_override_return` with
    // an `int` (sign-extended): the probed function (or syscall) returns
    // it instead of running; get_retval reads back what was set in this
    // run (0 if nothing).
    h.register_kernel(187, |ctx, a| {
        ctx.set_override_return(a[0] as u32 as i32 as i64 as u64);
        Ok(0)
    });
    h.register_kernel(186, |ctx, _| {
        Ok(ctx
            .override_return()
            .map_or(0, |v| v as u32 as i32 as i64 as u64))
    });
    // bpf_send_signal, bpf_send_signal_thread.
    for (id, thread) in [(109, false), (117, true)] {
        h.register_kernel(id, move |_, a| {
            let sig = a[0] as u32;
            if u64::from(sig) > NSIG {
                return Ok(neg_errno(libc::EINVAL));
            }
            let sig = sig as libc::c_int;
            // SAFETY: getpid, gettid, kill and tgkill have no memory
            // preconditions; the signal goes to this process or thread, as
            // the kernel sends it to the current task.
            let rc = unsafe {
                if thread {
                    libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), sig)
                        as libc::c_int
                } else {
                    libc::kill(libc::getpid(), sig)
                }
            };
            Ok(if rc == 0 {
                0
            } else {
                neg_errno(
                    std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EINVAL),
                )
            })
        });
    }
    h.register_kernel_fn(118, |_, _, _, _, _| jiffies64());
}
