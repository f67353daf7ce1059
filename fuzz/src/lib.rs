//! Fuzzing oracles for userbpf. The cargo-fuzz targets in `fuzz_targets/`
//! are a few lines each; the generators live in `userbpf_vm::gen` (and,
//! for the verifier's oracles, in [`verifier_oracle`]) and the oracles
//! here, so `cargo test` runs them too (with proptest).
//!
//! Run a target with cargo-fuzz on stable:
//! `cargo fuzz run --fuzz-dir fuzz -s none --features fuzzing interp_checked`.
#![deny(missing_docs)]

pub mod verifier_oracle;

pub use verifier_oracle::verifier_soundness;

use arbitrary::Unstructured;
use std::sync::Arc;
use userbpf_vm::gen::{self, GenConfig};
use userbpf_vm::helpers::{ArgKind, ArgSize, HelperProto};
use userbpf_vm::insn::{insns_from_bytes, Insn};
use userbpf_vm::memory::{Region, RegionKind};

use userbpf_verifier::Verified;
use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::{Config, Helpers, Program, Vm};

/// A buffer whose last byte sits right before an inaccessible page (and
/// whose first page follows one), so any access past either end of the
/// region crashes the process instead of silently touching other memory.
#[derive(Debug)]
pub struct GuardedBuffer {
    map: *mut u8,
    map_len: usize,
    data: *mut u8,
    len: usize,
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096)
}

impl GuardedBuffer {
    /// `len` bytes flush against the trailing guard page, filled with `fill`.
    pub fn new(len: usize, fill: &[u8]) -> GuardedBuffer {
        let page = page_size();
        let body = len.div_ceil(page).max(1) * page;
        let map_len = body + 2 * page;
        // SAFETY: an anonymous private mapping with no address hint.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(map != libc::MAP_FAILED, "mmap failed");
        let map = map.cast::<u8>();
        // SAFETY: `map + page .. map + page + body` lies inside the mapping.
        let rc = unsafe {
            libc::mprotect(
                map.add(page).cast(),
                body,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        assert_eq!(rc, 0, "mprotect failed");
        // SAFETY: `page + body - len` is within the readable-writable body.
        let data = unsafe { map.add(page + body - len) };
        let mut b = GuardedBuffer {
            map,
            map_len,
            data,
            len,
        };
        for (i, byte) in b.as_mut_slice().iter_mut().enumerate() {
            *byte = fill.get(i % fill.len().max(1)).copied().unwrap_or(0);
        }
        b
    }

    /// The usable bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `data..data + len` is mapped read-write and owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }

    /// The usable bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `data..data + len` is mapped read-write and owned by self.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

impl Drop for GuardedBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

/// Helpers that exercise pointer arguments: 1 sums `r2` bytes at `r1`
/// (read), 2 fills `r2` bytes at `r1` with 0xab (write), 3 returns `r1`
/// unchanged (a scalar), 5 is the conformance suite's `unwind`.
pub fn fuzz_helpers() -> Helpers {
    let mut h = userbpf_vm::conformance::helpers();
    h.register(
        1,
        "sum_bytes",
        HelperProto::new(&[ArgKind::ReadMem {
            size: ArgSize::Arg(1),
            nullable: true,
        }]),
        |ctx, a| {
            let len = usize::try_from(a[1]).unwrap_or(0).min(1 << 20);
            let bytes = ctx.read(a[0], len)?;
            Ok(bytes.iter().map(|&b| u64::from(b)).sum())
        },
    );
    h.register(
        2,
        "fill_ab",
        HelperProto::new(&[ArgKind::WriteMem {
            size: ArgSize::Arg(1),
            nullable: true,
        }]),
        |ctx, a| {
            let len = usize::try_from(a[1]).unwrap_or(0).min(1 << 20);
            ctx.write(a[0], &vec![0xab; len])?;
            Ok(0)
        },
    );
    h.register_fn(3, "identity", |a, _, _, _, _| a);
    h
}

/// The outcome of one run, for comparisons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRecord {
    /// `Ok(r0)` or the fault's message.
    pub result: Result<u64, String>,
    /// The memory after the run.
    pub mem: Vec<u8>,
}

/// The oracle behind `interp_checked`: builds a program from `data` (raw
/// slots or a valid-by-construction program), runs it twice in the checked
/// interpreter on guarded memory, and panics if the runs differ (stack
/// contents or other state leaking across runs). A read or write outside the
/// regions crashes on the guard pages; a panic in the interpreter fails the
/// fuzzer or the test.
pub fn interp_checked(data: &[u8]) {
    let Some(case) = Case::from_data(data) else {
        return;
    };
    let Ok(program) = Program::new("fuzz", case.insns.clone()) else {
        return;
    };
    let Ok(mut vm) = Vm::with_config(&program, &fuzz_helpers(), case.config) else {
        return;
    };
    // A read-only region next to the context, also guarded.
    let ro = GuardedBuffer::new(64, &[0x5a, 0xa5]);
    // SAFETY: `ro` outlives every run of `vm` below.
    unsafe { vm.add_region(Region::from_slice(ro.as_slice(), RegionKind::Other)) };
    let mut mem = GuardedBuffer::new(case.mem_len, &case.fill);
    let first = run_once(&mut vm, &mut mem, &case.fill);
    let second = run_once(&mut vm, &mut mem, &case.fill);
    assert_eq!(
        first, second,
        "two runs of the same program on the same input differ"
    );
    assert_read_only_intact(&ro);
}

fn assert_read_only_intact(ro: &GuardedBuffer) {
    assert!(
        ro.as_slice()
            .iter()
            .enumerate()
            .all(|(i, &b)| b == [0x5a, 0xa5][i % 2]),
        "a read-only region was modified"
    );
}

/// A program and its input, built from fuzzer bytes.
struct Case {
    insns: Vec<userbpf_vm::insn::Insn>,
    mem_len: usize,
    fill: Vec<u8>,
    config: Config,
}

impl Case {
    /// Raw slots (a quarter of the time) or a valid-by-construction
    /// program, and the input memory.
    fn from_data(data: &[u8]) -> Option<Case> {
        let mut u = Unstructured::new(data);
        let selector = u.arbitrary::<u8>().ok()?;
        let mem_len = u.int_in_range::<usize>(0..=96).ok()?;
        let fill = u.bytes(mem_len.min(u.len())).ok()?.to_vec();
        let insns = if selector % 4 == 0 {
            // Raw slots: mostly rejected by the decoder, which must not panic.
            let rest = u.take_rest();
            let n = rest.len() / 8 * 8;
            insns_from_bytes(&rest[..n]).ok()?
        } else {
            let cfg = GenConfig {
                max_insns: 48,
                helper_ids: vec![1, 2, 3, 5, 12],
                callx: true,
                packet_loads: true,
            };
            gen::program(&mut u, &cfg).ok()?
        };
        Some(Case {
            insns,
            mem_len,
            fill,
            config: Config {
                budget: Some(4_096),
            },
        })
    }
}

/// The oracle behind `jit_differential`: the same program, on the same VM
/// (same stack, same guarded memory), interpreted and then run as
/// checked-mode native code. Both must end alike: the same `r0` and memory,
/// or the same fault (pc, instruction, address, kind). Runs that exhaust
/// the budget only need to fault on both: in programs that can run more
/// than one frame (the generator's use `callx`), the JIT charges a basic
/// block when it enters it, so the instructions before the stop differ
/// (single-frame programs stop exactly where the interpreter stops:
/// `jit/tests/budget.rs`).
pub fn jit_differential(data: &[u8]) {
    let Some(case) = Case::from_data(data) else {
        return;
    };
    let Ok(program) = Program::new("fuzz", case.insns.clone()) else {
        return;
    };
    let Ok(prepared) = PreparedProgram::new(&program, &fuzz_helpers(), case.config) else {
        return;
    };
    let prepared = Arc::new(prepared);
    if let Err(e) = userbpf_jit::jit_checked(&prepared, userbpf_jit::Options::default()) {
        panic!("the JIT refused a valid program: {e}");
    }
    let (interp, jit) = interpreter_then_native(prepared, &case);
    let budget = |r: &RunRecord| {
        r.result
            .as_ref()
            .err()
            .is_some_and(|m| m.contains("instruction budget"))
    };
    if budget(&interp) || budget(&jit) {
        assert!(
            interp.result.is_err() && jit.result.is_err(),
            "one engine exhausted the budget, the other did not: interpreter {:?}, JIT {:?}",
            interp.result,
            jit.result
        );
        return;
    }
    assert_eq!(interp, jit, "the interpreter and the JIT disagree");
    baseline_checked_agrees(&program, &case);
}

/// The same case on the baseline generator's checked code, when it takes
/// the program (one frame, no calls), against the interpreter on the same
/// VM: identical in every respect, budget faults included (single-frame
/// code stops for the interpreter where the budget may run out).
fn baseline_checked_agrees(program: &Program, case: &Case) {
    let Ok(prepared) = PreparedProgram::new(program, &fuzz_helpers(), case.config) else {
        return;
    };
    let prepared = Arc::new(prepared);
    let options = userbpf_jit::Options {
        tier: userbpf_jit::Tier::Baseline,
        ..Default::default()
    };
    match userbpf_jit::jit_checked(&prepared, options) {
        Ok(_) => {}
        Err(userbpf_jit::JitError::Baseline { .. }) => return,
        Err(e) => panic!("the baseline generator failed: {e}"),
    }
    let (interp, base) = interpreter_then_native(prepared, case);
    assert_eq!(
        interp, base,
        "the interpreter and the baseline checked code disagree"
    );
}

/// The oracle behind `baseline_differential`: a random program (helper
/// calls included, no other calls) runs on the checked interpreter; if it ends without a fault (so
/// every access it made on this input was in bounds, and it ends), the
/// JIT's baseline code (verified mode: no checks) runs it on the same
/// input and must give the same `r0` and memory. Both runs use the same
/// memory (same addresses) on fresh VMs (zeroed stacks); r10 is only ever
/// the base of an access (stack addresses differ between VMs), and every
/// exit first folds r1..r9 into r0.
pub fn baseline_differential(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(mem_len) = u.int_in_range::<usize>(8..=96) else {
        return;
    };
    let Ok(fill) = u.bytes(mem_len.min(u.len())).map(<[u8]>::to_vec) else {
        return;
    };
    let cfg = GenConfig {
        max_insns: 48,
        helper_ids: vec![1, 2, 3, 5, 12],
        callx: false,
        packet_loads: false,
    };
    let Ok(mut insns) = gen::program(&mut u, &cfg) else {
        return;
    };
    // r10 as a value (not an access's base) would put stack addresses,
    // which differ between the VMs, into results: r0 stands in for it.
    for i in &mut insns {
        let class = i.code & 0x07;
        // (ST, STX and atomics take r10 as the base in dst; LDX in src.)
        if i.dst == 10 && !matches!(class, 0x02 | 0x03) {
            i.dst = 0;
        }
        if i.src == 10 && class != 0x01 {
            i.src = 0;
        }
    }
    // Every exit goes through an epilogue that folds r1..r9 into r0: the
    // result then shows every register (a `ja` takes the exit's slot, so
    // no jump moves).
    let end = insns.len();
    for (at, i) in insns.iter_mut().enumerate() {
        if i.code == 0x95 {
            let Ok(off) = i16::try_from(end - at - 1) else {
                return;
            };
            *i = Insn::new(0x05, 0, 0, off, 0);
        }
    }
    for r in 1..=9 {
        insns.push(Insn::new(0x27, 0, 0, 0, 31));
        insns.push(Insn::new(0x0f, 0, r, 0, 0));
    }
    insns.push(Insn::new(0x95, 0, 0, 0, 0));
    let Ok(program) = Program::new("fuzz", insns) else {
        return;
    };
    let helpers = fuzz_helpers();
    let Ok(checked) = PreparedProgram::new(
        &program,
        &helpers,
        Config {
            budget: Some(4_096),
        },
    ) else {
        return;
    };
    let mut mem = GuardedBuffer::new(mem_len, &fill);
    let refill = |mem: &mut GuardedBuffer| {
        for (i, byte) in mem.as_mut_slice().iter_mut().enumerate() {
            *byte = fill.get(i).copied().unwrap_or(0);
        }
    };
    refill(&mut mem);
    let expected = Vm::from_prepared(Arc::new(checked)).run(mem.as_mut_slice());
    let Ok(expected) = expected else {
        return;
    };
    let expected_mem = mem.as_slice().to_vec();
    let verified = match PreparedProgram::new(&program, &helpers, Config::default()) {
        Ok(p) => Arc::new(p),
        Err(e) => panic!("prepared with a budget, not without: {e}"),
    };
    // SAFETY: the checked run above ended without a fault on this input:
    // the same input takes the same path (nothing else differs but the
    // stack's address, which the program never reads as a value).
    let v = unsafe { Verified::assume_verified(Arc::clone(&verified)) };
    let options = userbpf_jit::Options {
        tier: userbpf_jit::Tier::Baseline,
        ..Default::default()
    };
    match userbpf_jit::jit_verified(&v, options) {
        Ok(_) => {}
        Err(userbpf_jit::JitError::Baseline { .. }) => return,
        Err(e) => panic!("the JIT refused a valid program: {e}"),
    }
    refill(&mut mem);
    let got = Vm::from_prepared(verified).run(mem.as_mut_slice());
    assert_eq!(
        (got, mem.as_slice()),
        (Ok(expected), &expected_mem[..]),
        "the interpreter and the baseline code disagree"
    );
}

/// The case on one VM (a read-only region beside the memory), in the
/// interpreter and then as the native code attached to `prepared`; the
/// read-only region must come out intact.
fn interpreter_then_native(prepared: Arc<PreparedProgram>, case: &Case) -> (RunRecord, RunRecord) {
    let mut vm = Vm::from_prepared(prepared);
    let ro = GuardedBuffer::new(64, &[0x5a, 0xa5]);
    // SAFETY: `ro` outlives every run of `vm` below.
    unsafe { vm.add_region(Region::from_slice(ro.as_slice(), RegionKind::Other)) };
    let mut mem = GuardedBuffer::new(case.mem_len, &case.fill);
    vm.set_use_compiled(false);
    let interp = run_once(&mut vm, &mut mem, &case.fill);
    vm.set_use_compiled(true);
    let native = run_once(&mut vm, &mut mem, &case.fill);
    assert_read_only_intact(&ro);
    (interp, native)
}

fn run_once(vm: &mut Vm, mem: &mut GuardedBuffer, fill: &[u8]) -> RunRecord {
    for (i, byte) in mem.as_mut_slice().iter_mut().enumerate() {
        *byte = fill.get(i % fill.len().max(1)).copied().unwrap_or(0);
    }
    let result = vm.run(mem.as_mut_slice()).map_err(|f| f.to_string());
    RunRecord {
        result,
        mem: mem.as_slice().to_vec(),
    }
}

/// The oracle behind `loop_differential`: a loop of the shapes checked
/// native code proves on entry (`userbpf_jit`'s hoisted range checks),
/// built from fuzzer bytes: an induction variable (a register, or a
/// pointer) from a chosen start, a guard at the head or at the back-edge
/// against a constant or a register (huge ones too), increments before,
/// between or after the accesses, loads and stores of every size through
/// the context, a register the loop does not write or the stack, at
/// offsets around the memory's ends, with bounded terms from loaded bytes,
/// early exits and jumps back to the head. The interpreter and checked
/// native code run it on guarded memory (an access the entry test wrongly
/// proved crashes on the guard pages), on the closed path and the general
/// one, with an ample budget and with one the loop runs out of: the same
/// result or fault, instruction count and memory.
pub fn loop_differential(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Some((src, mem_len, fill)) = loop_case(&mut u) else {
        return;
    };
    let insns = match userbpf_vm::asm::assemble(&src) {
        Ok(i) => i,
        Err(e) => panic!("the loop generator wrote bad assembly ({e}):\n{src}"),
    };
    let Ok(program) = Program::new("loop", insns) else {
        return;
    };
    // An ample budget (a loop may never end: it runs out), then budgets
    // just short of what the run takes, where a wrong proof of the budget
    // would let the loop run on.
    let ample = 20_000u64;
    let mut budgets = vec![ample];
    let short = u.int_in_range::<u64>(1..=24).unwrap_or(1);
    budgets.push(short);
    while let Some(budget) = budgets.pop() {
        let config = Config {
            budget: Some(budget),
        };
        let Ok(prepared) = PreparedProgram::new(&program, &fuzz_helpers(), config) else {
            return;
        };
        let prepared = Arc::new(prepared);
        if let Err(e) = userbpf_jit::jit_checked(&prepared, userbpf_jit::Options::default()) {
            panic!("the JIT refused a valid program: {e}\n{src}");
        }
        for general in [false, true] {
            let mut vm = Vm::from_prepared(Arc::clone(&prepared));
            let ro = GuardedBuffer::new(64, &[0x5a, 0xa5]);
            if general {
                // SAFETY: `ro` outlives every run of `vm` below.
                unsafe { vm.add_region(Region::from_slice(ro.as_slice(), RegionKind::Other)) };
            }
            let mut mem = GuardedBuffer::new(mem_len, &fill);
            vm.set_use_compiled(false);
            let interp = run_once(&mut vm, &mut mem, &fill);
            let interp_count = vm.last_insn_count();
            vm.set_use_compiled(true);
            let native = run_once(&mut vm, &mut mem, &fill);
            assert_eq!(
                (&interp, interp_count),
                (&native, vm.last_insn_count()),
                "the interpreter and checked native code disagree (budget {budget}, general path {general}) on\n{src}"
            );
            assert_read_only_intact(&ro);
            if budget == ample && !general {
                // (`short` below the instructions the run took.)
                budgets.push(interp_count.saturating_sub(short).max(1));
            }
        }
    }
}

/// A loop program for [`loop_differential`], its memory's length and fill.
fn loop_case(u: &mut Unstructured<'_>) -> Option<(String, usize, Vec<u8>)> {
    let mem_len = u.int_in_range::<usize>(0..=96).ok()?;
    // (The fill from a seed: the fuzzer's bytes go to the program's shape.)
    let mut x = u.arbitrary::<u64>().ok()? | 1;
    let fill = (0..mem_len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // (Some zeros, for the loops' early exits.)
            if x % 7 == 0 {
                0
            } else {
                (x >> 32) as u8
            }
        })
        .collect();
    let pick = |u: &mut Unstructured<'_>, from: &[i64]| -> Option<i64> {
        Some(from[u.choose_index(from.len()).ok()?])
    };
    // The induction variable: r3 from a start, or a pointer r3 = r1 + start.
    let pointer = u.ratio(1, 4).ok()?;
    let start = pick(u, &[0, 0, 1, 3, 7, 8, 16, 60, 95, 96, -1, -8])?;
    let stride = u.int_in_range::<i64>(1..=9).ok()?;
    let at_head = u.arbitrary::<bool>().ok()?;
    let cond = match (at_head, u.arbitrary::<bool>().ok()?) {
        (true, false) => "jge",
        (true, true) => "jgt",
        (false, false) => "jlt",
        (false, true) => "jle",
    };
    let mut s = String::from("mov %r0, 0\nmov %r6, %r1\n");
    s += &format!("add %r6, {}\n", pick(u, &[0, 8, 32, 48, 64, 90])?);
    // The bound: a constant, the memory's length (r2), or r7 (huge
    // values included); a pointer's is r1 plus it.
    let bound = match u.int_in_range::<u8>(0..=2).ok()? {
        0 => format!("{}", pick(u, &[0, 1, 8, 40, 64, 90, 96, 97, 200])?),
        1 => "%r2".to_string(),
        _ => {
            let v = pick(
                u,
                &[
                    0,
                    1,
                    64,
                    -1,
                    -2,
                    0x3fff_ffff_ffff_ffff,
                    0x4000_0000_0000_0000,
                ],
            )?;
            s += &format!("lddw %r7, {v}\n");
            "%r7".to_string()
        }
    };
    // The pointer's bound is r1 plus the bound (in a register).
    let bound = if pointer {
        let b = if bound.starts_with('%') {
            bound
        } else {
            s += &format!("mov %r7, {bound}\n");
            "%r7".to_string()
        };
        s += &format!("add {b}, %r1\nmov %r3, %r1\nadd %r3, {start}\n");
        b
    } else {
        s += &format!("mov %r3, {start}\n");
        bound
    };
    s += "loop:\n";
    if at_head {
        s += &format!("{cond} %r3, {bound}, done\n");
    }
    s += &loop_body(u, pointer, stride)?;
    if at_head {
        s += "ja loop\n";
    } else {
        s += &format!("{cond} %r3, {bound}, loop\n");
    }
    s += "done:\nexit\n";
    Some((s, mem_len, fill))
}

/// The body of a [`loop_case`] loop: accesses, an increment of r3 by
/// `stride` (somewhere among them, or more than one), early exits and
/// jumps back to the head.
fn loop_body(u: &mut Unstructured<'_>, pointer: bool, stride: i64) -> Option<String> {
    let mut s = String::new();
    let items = u.int_in_range::<usize>(1..=6).ok()?;
    let mut incremented = false;
    // Labels of ways round an item, placed after the next one.
    let (mut skips, mut pending) = (0, Vec::new());
    for _ in 0..items {
        let ends = std::mem::take(&mut pending);
        match u.int_in_range::<u8>(0..=11).ok()? {
            0 | 1 => {
                s += &format!("add %r3, {stride}\n");
                incremented = true;
            }
            2 => {
                // A bounded term from a byte of the context.
                let off = u.int_in_range::<i16>(0..=8).ok()?;
                let mask = [1, 3, 7, 15, 63, 255][u.choose_index(6).ok()?];
                let shift = u.int_in_range::<u8>(0..=3).ok()?;
                s += &format!("ldxb %r8, [%r1+{off}]\nand %r8, {mask}\nlsh %r8, {shift}\n");
            }
            3 => {
                let k = u.int_in_range::<u8>(0..=255).ok()?;
                s += &format!("jeq %r5, {k}, done\n");
            }
            4 => {
                // (Before an increment, the loop may go round for ever:
                // it runs out of budget.)
                let k = u.int_in_range::<u8>(0..=255).ok()?;
                s += &format!("jeq %r5, {k}, loop\n");
            }
            5 => {
                // A way round the next item (a join after it).
                let k = u.int_in_range::<u8>(0..=255).ok()?;
                s += &format!("jeq %r5, {k}, skip{skips}\n");
                // (Ways round this one land after the next item too.)
                pending.extend(ends);
                pending.push(skips);
                skips += 1;
                continue;
            }
            _ => {
                let size = ["b", "h", "w", "dw"][u.choose_index(4).ok()?];
                let base = match (pointer, u.int_in_range::<u8>(0..=3).ok()?) {
                    (true, 0) => "%r3",
                    (_, 1) => "%r6",
                    (_, 2) => "%r10",
                    _ => "%r1",
                };
                let off: i16 = if base == "%r10" {
                    -u.int_in_range::<i16>(1..=80).ok()?
                } else {
                    u.int_in_range::<i16>(-9..=40).ok()?
                };
                s += &format!("mov %r4, {base}\n");
                if !pointer && base != "%r3" && u.ratio(3, 4).ok()? {
                    s += "add %r4, %r3\n";
                }
                if u.ratio(1, 4).ok()? {
                    s += "and %r8, 255\nadd %r4, %r8\n";
                }
                match u.int_in_range::<u8>(0..=2).ok()? {
                    0 => s += &format!("ldx{size} %r5, [%r4{off:+}]\nadd %r0, %r5\n"),
                    1 => s += &format!("stx{size} [%r4{off:+}], %r0\n"),
                    _ => s += &format!("st{size} [%r4{off:+}], 7\n"),
                }
            }
        }
        for l in ends {
            s += &format!("skip{l}:\n");
        }
    }
    for l in pending {
        s += &format!("skip{l}:\n");
    }
    if !incremented || u.ratio(1, 2).ok()? {
        s += &format!("add %r3, {stride}\n");
    }
    Some(s)
}

/// The oracle behind `object_loader`: parsing and linking any bytes as a BPF
/// object returns a program list or an error; it never panics (a panic
/// inside the ELF parser is caught by the loader and reported, which this
/// oracle treats as a failure too).
pub fn object_loader(data: &[u8]) {
    match userbpf_vm::object::Object::parse("fuzz.o", data) {
        Ok(obj) => {
            // The verifier on what the object's BTF says (global
            // functions' prototypes, map shapes), without the running
            // kernel's types and within a small budget: a verdict, never
            // a panic.
            let kernel_btf = userbpf_vm::object::btf::Btf::parse(
                &userbpf_vm::object::btf::BtfWriter::new().finish(),
            )
            .ok()
            .map(std::sync::Arc::new);
            let opts = userbpf_verifier::Options {
                max_processed: 20_000,
                ..userbpf_verifier::Options::default()
            };
            for p in &obj.programs {
                // Linked programs either validate or fail with an error.
                let Ok(prog) = p.to_program() else {
                    continue;
                };
                let env = userbpf_verifier::Env {
                    kernel_btf: kernel_btf.clone(),
                    ..userbpf_verifier::Env::for_object(&obj, p)
                };
                let _ = userbpf_verifier::check(&prog, &env, &opts, None);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains("panicked"), "loader panic: {msg}");
            assert!(
                msg.starts_with("fuzz.o"),
                "error does not name the file: {msg}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_buffer_ends_at_a_page_boundary() {
        let mut b = GuardedBuffer::new(10, &[1, 2]);
        assert_eq!(b.as_slice(), &[1, 2, 1, 2, 1, 2, 1, 2, 1, 2]);
        let end = b.as_mut_slice().as_ptr() as usize + 10;
        assert_eq!(end % page_size(), 0);
    }
}
