//! BPF timers (`struct bpf_timer` in a map value): `bpf_timer_init` (169),
//! `bpf_timer_set_callback` (170), `bpf_timer_start` (171) and
//! `bpf_timer_cancel` (172), with the kernel's semantics and error codes.
//!
//! A process-wide service thread keeps the armed timers and, when one
//! expires, runs its callback (a subprogram of the program that set it)
//! with `(map, &key, &value)` in a fresh VM bound to the same maps. The
//! 16 opaque bytes of `struct bpf_timer` hold the timer's id and the
//! creating process, so the map value stays plain shared memory. As in the
//! kernel, a timer dies with its element: one whose element was deleted or
//! replaced never fires again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::set::MapSet;
use super::Map;
use crate::helpers::{neg_errno, HelperContext, HelperError, Helpers};
use crate::interp::PreparedProgram;
use crate::memory::{Region, RegionKind};

/// `bpf_timer_init`.
pub const BPF_FUNC_TIMER_INIT: i32 = 169;
/// `bpf_timer_set_callback`.
pub const BPF_FUNC_TIMER_SET_CALLBACK: i32 = 170;
/// `bpf_timer_start`.
pub const BPF_FUNC_TIMER_START: i32 = 171;
/// `bpf_timer_cancel`.
pub const BPF_FUNC_TIMER_CANCEL: i32 = 172;
/// `BPF_F_TIMER_ABS`: `nsecs` is an absolute time on the timer's clock.
pub const BPF_F_TIMER_ABS: u64 = 1;
/// `BPF_F_TIMER_CPU_PIN`: accepted; user-space timers fire on the service
/// thread.
pub const BPF_F_TIMER_CPU_PIN: u64 = 2;
/// `sizeof(struct bpf_timer)`.
pub const BPF_TIMER_SIZE: usize = 16;

/// Marks the opaque bytes of an initialised timer (bytes 12..16).
const TIMER_MAGIC: u32 = 0x746d_7262; // "brmt"

struct Timer {
    set: Weak<MapSet>,
    map: Weak<Map>,
    key: Vec<u8>,
    value: u64,
    addr: u64,
    clock: libc::clockid_t,
    callback: Option<(Arc<PreparedProgram>, u64)>,
    /// Expiry on `clock`, in ns, while armed.
    deadline: Option<u128>,
    /// Bumped on every start and cancel, so stale heap entries are ignored.
    generation: u64,
}

#[derive(Default)]
struct Timers {
    next_id: u64,
    by_id: HashMap<u64, Timer>,
    /// (deadline in CLOCK_MONOTONIC ns, id, generation).
    queue: BinaryHeap<Reverse<(u128, u64, u64)>>,
    /// The timer whose callback runs now, if any.
    running: Option<u64>,
    worker: bool,
}

struct Service {
    timers: Mutex<Timers>,
    wake: Condvar,
}

fn service() -> &'static Service {
    static S: OnceLock<Service> = OnceLock::new();
    S.get_or_init(|| Service {
        timers: Mutex::new(Timers::default()),
        wake: Condvar::new(),
    })
}

/// The timer table, locked.
fn table(s: &Service) -> Result<std::sync::MutexGuard<'_, Timers>, HelperError> {
    s.timers
        .lock()
        .map_err(|_| HelperError::Failed("the timer table is poisoned".into()))
}

fn now(clock: libc::clockid_t) -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec.max(0) as u128) * 1_000_000_000 + ts.tv_nsec.max(0) as u128
}

fn pid() -> u32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 }
}

/// Reads the opaque bytes: (id, creator pid) if initialised.
fn read_opaque(ctx: &HelperContext<'_>, addr: u64) -> Result<Option<(u64, u32)>, HelperError> {
    let b = ctx.read(addr, BPF_TIMER_SIZE)?;
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    };
    let id = b
        .get(0..8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    let (owner, magic) = (u32_at(8), u32_at(12));
    Ok((magic == TIMER_MAGIC && id != 0).then_some((id, owner)))
}

/// The live timer of this process at `addr`, if any.
fn lookup(ctx: &HelperContext<'_>, t: &Timers, addr: u64) -> Result<Option<u64>, HelperError> {
    Ok(match read_opaque(ctx, addr)? {
        Some((id, owner)) if owner == pid() => {
            t.by_id.get(&id).filter(|x| x.addr == addr).map(|_| id)
        }
        _ => None,
    })
}

fn process_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(p, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

impl MapSet {
    /// Registers the timer helpers on these maps.
    pub(super) fn timer_helpers(self: &Arc<MapSet>, h: &mut Helpers) {
        let set = Arc::downgrade(self);
        h.register_kernel(BPF_FUNC_TIMER_INIT, move |ctx, a| {
            // (timer, map, flags = clock id)
            let clock = match a[2] {
                0 => libc::CLOCK_REALTIME,
                1 => libc::CLOCK_MONOTONIC,
                7 => libc::CLOCK_BOOTTIME,
                _ => return Ok(neg_errno(libc::EINVAL)),
            };
            let strong = set
                .upgrade()
                .ok_or_else(|| HelperError::Failed("maps are gone".into()))?;
            let map = strong
                .by_handle(a[1])
                .ok_or_else(|| HelperError::Failed(format!("r2 ({:#x}) is not a map", a[1])))?;
            let s = service();
            let mut t = table(s)?;
            // Busy: a live timer of this process at this address, or
            // one another live process initialised.
            let busy = match read_opaque(ctx, a[0])? {
                Some((id, owner)) if owner == pid() => {
                    t.by_id.get(&id).is_some_and(|x| x.addr == a[0])
                }
                Some((_, owner)) => process_alive(owner),
                None => false,
            };
            if busy {
                return Ok(neg_errno(libc::EBUSY));
            }
            let value_size = u64::from(map.spec().value_size);
            let Some((key, value)) = super::foreach::Keys::of(map).find_map(|k| {
                let p = map.lookup_ptr(&k)? as u64;
                (a[0] >= p
                    && a[0].saturating_add(BPF_TIMER_SIZE as u64) <= p.saturating_add(value_size))
                .then_some((k, p))
            }) else {
                return Err(HelperError::Failed(format!(
                    "r1 ({:#x}) is not a struct bpf_timer inside a value of map `{}`",
                    a[0],
                    map.spec().name
                )));
            };
            t.next_id = t.next_id.wrapping_add(1).max(1);
            let id = t.next_id;
            let mut opaque = [0u8; BPF_TIMER_SIZE];
            opaque[..8].copy_from_slice(&id.to_le_bytes());
            opaque[8..12].copy_from_slice(&pid().to_le_bytes());
            opaque[12..16].copy_from_slice(&TIMER_MAGIC.to_le_bytes());
            ctx.write(a[0], &opaque)?;
            t.by_id.insert(
                id,
                Timer {
                    set: set.clone(),
                    map: Arc::downgrade(map),
                    key,
                    value,
                    addr: a[0],
                    clock,
                    callback: None,
                    deadline: None,
                    generation: 0,
                },
            );
            Ok(0)
        });
        h.register_kernel(BPF_FUNC_TIMER_SET_CALLBACK, |ctx, a| {
            let program = ctx.program().cloned();
            let s = service();
            let mut t = table(s)?;
            let Some(id) = lookup(ctx, &t, a[0])? else {
                return Ok(neg_errno(libc::EINVAL));
            };
            let Some(program) = program else {
                return Ok(neg_errno(libc::EINVAL));
            };
            if let Some(timer) = t.by_id.get_mut(&id) {
                timer.callback = Some((program, a[1]));
            }
            Ok(0)
        });
        h.register_kernel(BPF_FUNC_TIMER_START, |ctx, a| {
            // (timer, nsecs, flags)
            if a[2] & !(BPF_F_TIMER_ABS | BPF_F_TIMER_CPU_PIN) != 0 {
                return Ok(neg_errno(libc::EINVAL));
            }
            let s = service();
            let mut t = table(s)?;
            let Some(id) = lookup(ctx, &t, a[0])? else {
                return Ok(neg_errno(libc::EINVAL));
            };
            let Some(timer) = t.by_id.get_mut(&id) else {
                return Ok(neg_errno(libc::EINVAL));
            };
            if timer.callback.is_none() {
                return Ok(neg_errno(libc::EINVAL));
            }
            let on_clock = now(timer.clock);
            let deadline = if a[2] & BPF_F_TIMER_ABS != 0 {
                u128::from(a[1])
            } else {
                on_clock + u128::from(a[1])
            };
            timer.deadline = Some(deadline);
            timer.generation = timer.generation.wrapping_add(1);
            let generation = timer.generation;
            // The queue runs on CLOCK_MONOTONIC.
            let mono = now(libc::CLOCK_MONOTONIC) + deadline.saturating_sub(on_clock);
            t.queue.push(Reverse((mono, id, generation)));
            if !t.worker {
                t.worker = true;
                std::thread::Builder::new()
                    .name("userbpf-timers".into())
                    .spawn(worker)
                    .map_err(|e| {
                        HelperError::Failed(format!("cannot start the timer thread: {e}"))
                    })?;
            }
            s.wake.notify_one();
            Ok(0)
        });
        h.register_kernel(BPF_FUNC_TIMER_CANCEL, |ctx, a| {
            let s = service();
            let mut t = table(s)?;
            let Some(id) = lookup(ctx, &t, a[0])? else {
                return Ok(neg_errno(libc::EINVAL));
            };
            if t.running == Some(id) && std::thread::current().name() == Some("userbpf-timers") {
                // A callback cancelling its own timer would wait for itself.
                return Ok(neg_errno(libc::EDEADLK));
            }
            let Some(timer) = t.by_id.get_mut(&id) else {
                return Ok(neg_errno(libc::EINVAL));
            };
            timer.generation = timer.generation.wrapping_add(1);
            Ok(u64::from(timer.deadline.take().is_some()))
        });
    }
}

/// The service thread: waits for the earliest deadline and runs callbacks.
fn worker() {
    let s = service();
    let Ok(mut t) = s.timers.lock() else {
        return;
    };
    loop {
        let Some(&Reverse((due, id, generation))) = t.queue.peek() else {
            t = match s.wake.wait(t) {
                Ok(g) => g,
                Err(_) => return,
            };
            continue;
        };
        let mono = now(libc::CLOCK_MONOTONIC);
        if due > mono {
            let wait = Duration::from_nanos(u64::try_from(due - mono).unwrap_or(u64::MAX));
            t = match s.wake.wait_timeout(t, wait) {
                Ok((g, _)) => g,
                Err(_) => return,
            };
            continue;
        }
        t.queue.pop();
        let Some(timer) = t.by_id.get_mut(&id) else {
            continue;
        };
        if timer.generation != generation || timer.deadline.is_none() {
            continue;
        }
        timer.deadline = None;
        let job = fire_job(timer);
        match job {
            None => {
                // The element or the maps are gone: so is the timer.
                t.by_id.remove(&id);
            }
            Some(job) => {
                t.running = Some(id);
                drop(t);
                job.run();
                t = match s.timers.lock() {
                    Ok(g) => g,
                    Err(_) => return,
                };
                t.running = None;
            }
        }
    }
}

struct Job {
    set: Arc<MapSet>,
    map: Arc<Map>,
    key: Vec<u8>,
    value: u64,
    program: Arc<PreparedProgram>,
    callback: u64,
}

/// What to run for an expired timer, if its element still exists.
fn fire_job(timer: &Timer) -> Option<Job> {
    let set = timer.set.upgrade()?;
    let map = timer.map.upgrade()?;
    if map.lookup_ptr(&timer.key)? as u64 != timer.value {
        return None;
    }
    let (program, callback) = timer.callback.clone()?;
    Some(Job {
        set,
        map,
        key: timer.key.clone(),
        value: timer.value,
        program,
        callback,
    })
}

impl Job {
    fn run(self) {
        let mut vm = crate::interp::Vm::from_prepared(self.program);
        for r in self.set.regions() {
            // SAFETY: the regions lie in maps of `self.set`, alive for the
            // whole run.
            unsafe { vm.add_region(r) };
        }
        let mut key = self.key.into_boxed_slice();
        let key_region = Region::from_mut_slice(&mut key, RegionKind::HelperMemory);
        let key_region = Region {
            writable: false,
            ..key_region
        };
        // SAFETY: `key` lives until the end of this function, past the run.
        unsafe { vm.add_region(key_region) };
        vm.set_program_array(Some(
            Arc::clone(&self.set) as Arc<dyn crate::interp::ProgramArray>
        ));
        if let Err(f) = vm.run_subprogram(
            self.callback,
            [self.map.handle(), key_region.start, self.value, 0, 0],
        ) {
            eprintln!("userbpf: timer callback failed: {f}");
        }
    }
}
