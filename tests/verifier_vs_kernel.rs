//! userbpf's verifier against the Linux verifier: random plausible socket
//! filters (the generator of the verifier oracles,
//! `userbpf_fuzz::verifier_oracle`) are checked by both, as
//! `BPF_PROG_TYPE_SOCKET_FILTER` with the same maps (an array and a hash
//! map of one entry), and the verdicts compared.
//!
//! The counts are printed: both accept, both reject, we accept and the
//! kernel rejects (grouped by the kernel's message, with an example: the
//! kernel's log line and our state at that instruction), we reject and
//! the kernel accepts (grouped by our message).
//!
//! Every program we accept and the kernel rejects is also run in the
//! checked interpreter on random contexts and map contents, where it must
//! not fault. Four programs in five avoid the operations whose results
//! the kernel does not bound (`BPF_DIV`, `BPF_MOD`, multiplications and
//! left shifts of values that may be negative, shifts by a register:
//! [`GenSpec::kernel_bounds_only`]); for those, the kernel's reason must be
//! one that is not about memory safety ([`NOT_MEMORY_SAFETY`],
//! [`ctx_policy`], [`UNREACHED`], [`SET_ON_EVERY_PATH`]): any other reason (an out-of-bounds
//! access, an uninitialised read, a bad pointer...) that we let through is
//! a bug of our verifier, and fails the test. With divisions, the kernel
//! rejects many safe programs for bounds it does not know
//! ([`WITH_DIVISIONS`]); those are judged by the interpreter runs alone,
//! as are rejections inside callbacks ([`IN_CALLBACK`]).
//! (Rejecting what the kernel accepts is allowed: the kernel runs as root
//! here, privileged, and reads uninitialised stack, leaks pointers into
//! maps, ...; the counts show how much.)
//!
//! Those rules of userbpf's are the kernel's for a loader without
//! `CAP_PERFMON`: every program we accept is loaded again from a thread
//! without it (nor `CAP_SYS_ADMIN`), and that kernel's refusals are
//! printed by message; one for an address leak or an uninitialised read
//! ([`LEAK_MESSAGES`]) at an instruction our verifier reaches fails the
//! test. (Seed 777 over 20,000 programs: of the 6,459 we accept, that
//! kernel refuses 1,740, none for those reasons: for loops it finds
//! endless, variable stack offsets and pointer arithmetic its Spectre
//! masking cannot handle, partial overwrites of a spilled pointer, which
//! userbpf allows and makes the rest of the pointer unreadable, ...)
//!
//! [`GenSpec::kernel_bounds_only`]: userbpf_fuzz::verifier_oracle::GenSpec::kernel_bounds_only
//!
//! Needs root and bpf(); skips with a printed reason otherwise, unless
//! `USERBPF_REQUIRE_KERNEL=1` (CI), where it fails instead.
//! `VERIFIER_VS_KERNEL_SHOW=TEXT` prints the programs we reject with a
//! message containing TEXT and the kernel accepts.
//! `VERIFIER_VS_KERNEL_CASES=N` and `VERIFIER_VS_KERNEL_SEED=S` run a
//! longer or another campaign. (Bounds rejections stay strict even where
//! the kernel is merely less precise than ours, which it is in places
//! besides divisions, about one program in a few thousand. Sign
//! extensions are one: a sign-extended value checked with `<` and `s<`
//! keeps `[4, 26]` in ours, `[0, 26]` in the kernel, which then refuses
//! `*(u16 *)(value + x - 4)`; so the programs judged by the kernel's
//! message have none. A long campaign may flag another such program for
//! a human to look at: the report prints our state next to the kernel's
//! message. Seed 20261201 over 100,000 programs flags two, both safe
//! and both the kernel's imprecision: a number bounded by `if r5 < 4`
//! and then `if w5 > 18`, whose negative minimum the kernel keeps (it
//! does not learn the 64-bit range from the 32-bit one), and a 4-byte
//! constant stored with `*(u32 *)(r10 - 4) = 1` and loaded back, which
//! the kernel does not remember, so the offset built from it may be
//! negative to it. Seed 4242 over 50,000 programs flags two more, both
//! the kernel's imprecision and now told apart ([`CONSTANT_KEY`],
//! [`CONTRADICTING_BRANCH`]); it also showed a precision userbpf lacked,
//! since added: a range that meets the tnum in one value makes a
//! constant, as in Linux 6.18. That run, at the commit adding it: both
//! accept 15,889, both reject 32,029, only we accept 392 (none faulted in
//! the interpreter), only the kernel accepts 1,690.)

use std::collections::BTreeMap;

use userbpf_fuzz::verifier_oracle::{
    message_group, run_in_interpreter, socket_filter_program, GenMap, XorShift, MAP_ARRAY, MAP_HASH,
};
use userbpf_kernel::{
    kernel_required, kernel_unavailable, without_cap_perfmon, KernelMap, KernelProgram,
    LoadRequest, ProgBtf,
};
use userbpf_verifier::{check, Env, Options};
use userbpf_vm::Program;

/// Programs generated and compared (`VERIFIER_VS_KERNEL_CASES`).
const CASES: usize = 500;

/// The generator's seed (`VERIFIER_VS_KERNEL_SEED`).
const SEED: u64 = 0x5eed_0f5e_ed0f;

/// A number from the environment, or `default`.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Interpreter runs of each program we accept and the kernel rejects.
const RUNS: usize = 32;

/// `BPF_PROG_TYPE_SOCKET_FILTER`.
const SOCKET_FILTER: u32 = 1;

/// `sizeof(struct __sk_buff)`.
const SK_BUFF_SIZE: i64 = 192;

/// The maps of the programs that have maps (`map[idx:0]`, `map[idx:1]`).
const MAPS: [GenMap; 2] = [
    GenMap {
        map_type: MAP_ARRAY,
        value_size: 16,
    },
    GenMap {
        map_type: MAP_HASH,
        value_size: 24,
    },
];

/// Kernel rejections that are not about memory safety: the program is
/// safe to run in user space, the kernel's rule is about something else.
/// Matched as substrings of the kernel's message (`invalid bpf_context
/// access` is judged by its offset: [`ctx_policy`]).
const NOT_MEMORY_SAFETY: &[(&str, &str)] = &[
    // The kernel's CFG check refuses dead code (an instruction no jump or
    // fall-through reaches); the generator writes none on purpose, but a
    // difference here would be about the program's shape, not its
    // accesses.
    ("unreachable insn", "dead code"),
    // The kernel requires every stack access to be aligned to its size,
    // variable offsets included (`check_ptr_alignment` is always strict
    // for the stack, so that spilled registers stay whole). userbpf
    // refuses misaligned constant offsets the same way, but accepts a
    // variable offset all of whose values are in bounds (and forgets the
    // spills it may touch). x86 and userbpf's engines access unaligned
    // data; the bounds are checked apart (and the interpreter runs check
    // them again).
    (
        "misaligned stack access",
        "alignment rule (bounds checked apart)",
    ),
    // Termination, not memory safety: the kernel saw a loop come back to
    // a state it had (its own bounds being wider than ours, a loop ours
    // proves finite, or never enters, looks endless to it). The
    // interpreter runs check termination: a run that exhausts the budget
    // is a fault.
    (
        "infinite loop detected",
        "termination (the interpreter runs end)",
    ),
    // The kernel refuses to form a pointer whose offset may reach
    // +-2^29 (`BPF_MAX_VAR_OFF`, `check_reg_sane_offset`). userbpf applies
    // the same rule to its own bounds, which are tighter in places: a
    // scalar the kernel bounds only through its link to another register
    // with a large delta (`r4 = r7; w4 += 0x7fffffff; if r4 > 23 ...`) is
    // in range for ours. Forming a pointer accesses nothing, and the
    // access is checked where the pointer is dereferenced.
    (
        "pointer offset",
        "pointer formation rule (accesses checked apart)",
    ),
    (
        "pointer be out of bounds",
        "pointer formation rule (accesses checked apart)",
    ),
    // The kernel's limit on the stack of a call chain (512 bytes in all),
    // which it sums over the deepest access of each function on every
    // path it explores, paths ours proves never taken included. Each
    // frame of userbpf's engines has its own 512 bytes, so the limit is
    // the kernel's rule, not a bound of memory userbpf gives the program.
    (
        "combined stack size",
        "the kernel's limit on a call chain's stack (each of userbpf's frames has 512 bytes)",
    ),
    // The kernel failing on its own: `verifier bug: No program to jit at
    // insn N (subprog < 0)` (seen on programs with bpf_loop callbacks,
    // Linux 6.18). Not a verdict on the program.
    ("verifier bug", "the kernel's internal error (verifier bug)"),
];

/// Why a rejection inside a callback (the kernel's log marks the state
/// `cb`) is judged by the interpreter runs alone: the kernel passes
/// `bpf_loop`'s index as any 64-bit number (it is a `u32`, as userbpf
/// has it) and widens the values it has not marked precise when a
/// callback's states repeat, so an offset ours bounds is unbounded or
/// wider to it.
const IN_CALLBACK: &str =
    "inside a callback, whose index and widened values the kernel knows less of (judged by the interpreter runs)";

/// Whether the kernel ran the rejected instruction at `pc` in a callback:
/// the line before it in `log` (a state, or the previous instruction
/// with the registers it changed) ends with the kernel's `cb` mark.
fn in_callback(log: &str, pc: usize) -> bool {
    let insn = format!("{pc}: (");
    let lines: Vec<&str> = log.lines().collect();
    lines
        .iter()
        .rposition(|l| l.starts_with(&insn))
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| lines.get(i))
        .is_some_and(|l| l.trim_end().ends_with(" cb"))
}

/// Why a difference on a program with divisions (or multiplications,
/// shifts) is not judged by the kernel's message: the kernel's
/// `adjust_scalar_min_max_vals` does not track `BPF_DIV` and `BPF_MOD`
/// (signed or not, even of two constants: `r5 = 21; r5 /= 100` leaves
/// `R5=scalar()`), gives up on signs in multiplications and left shifts,
/// and on shifts by a register, so a pointer plus `x % 16` is
/// "unbounded" to it (or bounded too loosely for the access, after a mask
/// or a sign extension), it follows branches ours proves never taken and
/// finds uninitialised registers there, ... while ours knows `[0, 15]`.
/// Such programs must only run without a fault (and our bounds of
/// division results are what `verifier_soundness` tests).
const WITH_DIVISIONS: &str =
    "division, multiplication or shift, which the kernel does not bound (judged by the interpreter runs)";

/// Why a rejection at an instruction our verifier never reaches is not a
/// memory-safety difference: the kernel explores a branch ours proves
/// never taken, through a value the kernel does not know. As every
/// difference, only when the interpreter runs the program without a
/// fault.
const UNREACHED: &str =
    "at an instruction ours proves unreachable (a value the kernel does not know)";

/// Why the kernel's `RN !read_ok` at an instruction where every one of our
/// states has rN set is not a memory-safety difference: the kernel reaches
/// the instruction on a path ours proves never taken (a branch the kernel
/// does not decide, such as `if w9 s< w9`), without rN written on it.
const SET_ON_EVERY_PATH: &str =
    "a register the kernel finds unset on a path ours proves never taken (set in each of our states there)";

/// Why the kernel's `RN invalid mem access 'map_value_or_null'` (or
/// `type=map_value_or_null`) where our state has RN a map value is not a
/// memory-safety difference: ours proves the lookup non-NULL by its
/// constant key into an array, a key the kernel does not know. (Linux
/// 6.18's `get_constant_map_key` takes a narrow spill's whole register:
/// `*(u32 *)(r10 - 8) = w8` with r8 = 0xfbffffff00000000 is key 0 in
/// memory, to the kernel 0xfbffffff00000000, past the array.) A lookup
/// by a constant key gives the same element on every run, so the
/// interpreter runs judge it: a NULL there would fault.
const CONSTANT_KEY: &str =
    "a lookup ours proves non-NULL by a constant key the kernel does not know (judged by the interpreter runs)";

/// Whether the kernel's `message` is about a map value that may be NULL
/// in register RN while RN is a map value (not NULL) in our `state` (in
/// its innermost frame: the last `RN=` of the line).
fn non_null_to_us(message: &str, state: &str) -> bool {
    if !message.contains("map_value_or_null") {
        return false;
    }
    let Some(n) = message
        .strip_prefix('R')
        .and_then(|m| m.split(|c: char| !c.is_ascii_digit()).next())
    else {
        return false;
    };
    let reg = format!("R{n}=");
    state
        .split_whitespace()
        .rfind(|t| t.starts_with(&reg))
        .is_some_and(|t| t[reg.len()..].starts_with("map_value("))
}

/// Why a rejection after the kernel followed a branch its own state rules
/// out is not a memory-safety difference: on the fall-through of
/// `if rN > K` the kernel holds rN at a constant above K (its bounds and
/// known bits intersect to nothing, which it does not notice: Linux 6.18
/// turns `umin=12, umax=12` with bit 0 known set into `R4=13`), so it
/// checks the accesses of a path no run takes, and ours proves it
/// infeasible. Judged by the interpreter runs.
const CONTRADICTING_BRANCH: &str =
    "after a branch the kernel's own state contradicts (a path ours proves infeasible; judged by the interpreter runs)";

/// Whether a line of the kernel's log starts a path (the state of a
/// branch it comes back to: `from N to M: ...`, `M: R1=...`, or a jump
/// line followed by the target's state, `N: (..) if ... goto pc+K M: R0=...`).
fn starts_path(line: &str) -> bool {
    if line.starts_with("from ") {
        return true;
    }
    let Some((pc, rest)) = line.split_once(": ") else {
        return false;
    };
    if pc.trim().parse::<usize>().is_err() {
        return false;
    }
    if rest.starts_with('R') || rest.starts_with("frame") {
        return true;
    }
    rest.split_once(" goto pc")
        .and_then(|(_, tail)| tail.split_once(' '))
        .is_some_and(|(_, state)| !state.trim_start().starts_with(';') && state.contains(": R"))
}

/// The first line of the kernel's last path (the one it rejected) where
/// it falls through a conditional jump on a register and a constant (`N:
/// (..) if rD OP IMM goto pc+K ; ... RD=V`, followed by instruction N+1)
/// with the register at a constant V for which the condition holds: the
/// kernel follows a branch its own state rules out.
fn contradicting_branch(log: &str) -> Option<&str> {
    let all: Vec<&str> = log.lines().collect();
    let start = all
        .iter()
        .rposition(|l| starts_path(l))
        .map_or(0, |i| i + 1);
    let lines = &all[start..];
    lines.iter().enumerate().find_map(|(i, line)| {
        let (pc, rest) = line.split_once(": (")?;
        let pc: usize = pc.trim().parse().ok()?;
        let (jump, after) = rest.split_once(" ; ")?;
        let cond = jump.split_once(") if ")?.1;
        let mut words = cond.split_whitespace();
        let reg = words.next()?;
        let op = words.next()?;
        let imm = words.next()?;
        if words.next() != Some("goto") {
            return None;
        }
        let wide = reg.starts_with('r');
        let n = reg.get(1..)?;
        let imm = u32::from_str_radix(imm.strip_prefix("0x")?, 16).ok()?;
        let next = format!("{}: (", pc + 1);
        if !lines.get(i + 1).is_some_and(|l| l.starts_with(&next)) {
            return None;
        }
        let token = format!("R{n}=");
        let value = after
            .split_whitespace()
            .find_map(|t| t.strip_prefix(token.as_str()))?;
        let value: u64 = match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok()?,
            None => value.parse::<i64>().ok()? as u64,
        };
        // Both sides as the instruction compares them: 64-bit with the
        // immediate sign-extended, or the low 32 bits.
        let (a, b, sa, sb) = if wide {
            let b = i64::from(imm as i32) as u64;
            (value, b, value as i64, b as i64)
        } else {
            let a = value & 0xffff_ffff;
            let b = u64::from(imm);
            (a, b, i64::from(a as u32 as i32), i64::from(imm as i32))
        };
        let holds = match op {
            "==" => a == b,
            "!=" => a != b,
            ">" => a > b,
            ">=" => a >= b,
            "<" => a < b,
            "<=" => a <= b,
            "s>" => sa > sb,
            "s>=" => sa >= sb,
            "s<" => sa < sb,
            "s<=" => sa <= sb,
            "&" => a & b != 0,
            _ => return None,
        };
        holds.then_some(*line)
    })
}

/// Whether register `n` is set in every one of our states before `pc`
/// (at least one), from the verifier's log.
fn set_in_every_state(log: &str, pc: usize, n: u8) -> bool {
    let prefix = format!("{pc}: ");
    let reg = format!("R{n}=");
    let mut states = log
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains("R10="))
        .peekable();
    states.peek().is_some() && states.all(|l| l.split_whitespace().any(|t| t.starts_with(&reg)))
}

/// The register of the kernel's `RN !read_ok`.
fn unset_register(message: &str) -> Option<u8> {
    message
        .strip_suffix(" !read_ok")?
        .strip_prefix('R')?
        .parse()
        .ok()
}

/// Socket filters may not touch some `__sk_buff` fields (`tc_classid`,
/// `data`, `tstamp`, `wire_len`, the socket fields, `tstamp_type`,
/// `hwtstamp`...) nor read 4-byte fields with 8-byte loads: `invalid
/// bpf_context access off=X size=Y` with the access inside the structure
/// is that policy (the bytes are there in user space); outside it, memory
/// safety.
fn ctx_policy(message: &str) -> Option<&'static str> {
    let rest = message.strip_prefix("invalid bpf_context access off=")?;
    let (off, size) = rest.split_once(" size=")?;
    let off: i64 = off.trim().parse().ok()?;
    let size: i64 = size.trim().parse().ok()?;
    (off >= 0 && off + size <= SK_BUFF_SIZE)
        .then_some("a __sk_buff field socket filters may not access (policy; inside the context)")
}

/// Why the kernel's rejection (`message`) is not about memory safety, if
/// it is not; `reached`: whether our verifier got to the instruction the
/// kernel rejects; `divisions`: whether the program may divide.
fn not_memory_safety(message: &str, reached: bool, divisions: bool) -> Option<&'static str> {
    if let Some(why) = ctx_policy(message) {
        return Some(why);
    }
    if !reached {
        return Some(UNREACHED);
    }
    if let Some((_, why)) = NOT_MEMORY_SAFETY
        .iter()
        .find(|(pattern, _)| message.contains(pattern))
    {
        return Some(why);
    }
    divisions.then_some(WITH_DIVISIONS)
}

/// The kernel's verdict line (the last before the statistics, and before
/// the states it prints after some messages) and the pc of the last
/// instruction it printed.
fn kernel_message(log: &str) -> (String, Option<usize>) {
    let lines: Vec<&str> = log
        .lines()
        .take_while(|l| !l.starts_with("processed "))
        .filter(|l| {
            !l.trim().is_empty() && !l.starts_with("old state:") && !l.starts_with("cur state:")
        })
        .collect();
    let message = lines.last().map_or("(no log)", |l| l.trim()).to_string();
    let pc = lines.iter().rev().find_map(|l| {
        let (n, rest) = l.split_once(": (")?;
        rest.get(..2)?;
        n.trim().parse::<usize>().ok()
    });
    (message, pc)
}

/// Our state before `pc` (the first time the verifier got there), from its
/// log; `None` if it never got there.
fn our_state(log: &str, pc: usize) -> Option<String> {
    let prefix = format!("{pc}: ");
    log.lines()
        .filter(|l| l.starts_with(&prefix))
        .find(|l| l.contains("R10="))
        .map(str::to_string)
}

/// A program we accept and the kernel rejects.
struct Difference {
    source: String,
    /// The kernel's message, with the pc it printed last.
    kernel_log_line: String,
    /// Our state at that pc.
    our_state: String,
    /// Why it is not a memory-safety difference (`None`: it is one).
    why: Option<&'static str>,
    /// A fault of the program in the interpreter.
    fault: Option<String>,
}

/// The kernel's refusals, to a loader without `CAP_PERFMON`, that
/// userbpf's own rules also make (address leaks, uninitialised reads):
/// one of these at an instruction our verifier reaches, in a program it
/// accepts, is a rule of ours missing. (Its other refusals are not ours
/// to make: Spectre v1 masking limits on pointer arithmetic, and the
/// comparisons and subtractions of pointers userbpf allows, equality of
/// two pointers and pointers into one region.)
const LEAK_MESSAGES: &[&str] = &[
    "leaks addr",
    "leaking pointer",
    "partial copy of pointer",
    "invalid read from stack",
    "invalid indirect read from stack",
];

/// Loads the programs we accepted (with the maps `fds` where the flag
/// says so) from a thread without `CAP_PERFMON` and `CAP_SYS_ADMIN`,
/// prints what that kernel refuses, and returns the refusals that are
/// [`LEAK_MESSAGES`] at an instruction our verifier reaches.
fn leak_rules_without_cap_perfmon(accepted: &[(Program, Env, bool)], fds: &[i32]) -> Vec<String> {
    let logs: Vec<Option<String>> = without_cap_perfmon(|| {
        accepted
            .iter()
            .map(|(program, _, with_maps)| {
                let btf = ProgBtf::for_subprograms(program.insns()).ok().flatten();
                let request = LoadRequest {
                    fd_array: if *with_maps { fds } else { &[] },
                    btf: btf.as_ref(),
                    ..LoadRequest::new("vfuzz", SOCKET_FILTER, program.insns())
                };
                KernelProgram::load_request(&request).err().map(|e| {
                    if e.log.is_empty() {
                        e.to_string()
                    } else {
                        e.log
                    }
                })
            })
            .collect()
    })
    .expect("a thread without CAP_PERFMON");
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut missing = Vec::new();
    for ((program, env, _), log) in accepted.iter().zip(&logs) {
        let Some(log) = log else {
            continue;
        };
        let (message, pc) = kernel_message(log);
        *refused.entry(message_group(&message)).or_default() += 1;
        if !LEAK_MESSAGES.iter().any(|m| message.contains(m)) {
            continue;
        }
        let opts = Options {
            log_level: 2,
            ..Options::default()
        };
        let reached = match (pc, check(program, env, &opts, None)) {
            (Some(pc), Ok(report)) => our_state(&report.log, pc),
            _ => Some("(unknown)".to_string()),
        };
        if let Some(state) = reached {
            missing.push(format!(
                "kernel: {}{message}\nours:   {state}\n{}",
                pc.map_or(String::new(), |pc| format!("{pc}: ")),
                userbpf_vm::disasm::disassemble(program.insns()).unwrap_or_default()
            ));
        }
    }
    let n: usize = refused.values().sum();
    println!(
        "without CAP_PERFMON, the kernel refuses {n} of the {} programs we accept:",
        accepted.len()
    );
    let mut by_count: Vec<(&String, &usize)> = refused.iter().collect();
    by_count.sort_by_key(|r| std::cmp::Reverse(*r.1));
    for (message, count) in by_count {
        println!("  {count:4}  {message}");
    }
    missing
}

#[test]
fn our_verifier_accepts_nothing_unsafe_the_kernel_rejects() {
    if let Some(why) = kernel_unavailable() {
        if kernel_required() {
            panic!("verifier_vs_kernel: kernel required but unavailable: {why}");
        }
        println!("SKIP verifier_vs_kernel: {why}");
        return;
    }
    let kernel_maps: Vec<KernelMap> = MAPS
        .iter()
        .enumerate()
        .map(|(i, m)| {
            KernelMap::create(
                &m.name(i),
                m.map_type,
                GenMap::KEY_SIZE,
                m.value_size,
                GenMap::MAX_ENTRIES,
                0,
                0,
            )
            .unwrap_or_else(|e| panic!("creating map {i}: {e}"))
        })
        .collect();
    let fds: Vec<i32> = kernel_maps.iter().map(KernelMap::raw_fd).collect();

    let cases = usize::try_from(env_or("VERIFIER_VS_KERNEL_CASES", CASES as u64)).unwrap_or(CASES);
    let mut rng = XorShift(env_or("VERIFIER_VS_KERNEL_SEED", SEED) | 1);
    let show = std::env::var("VERIFIER_VS_KERNEL_SHOW").ok();
    let (mut both_accept, mut both_reject) = (0usize, 0usize);
    let mut kernel_rejects: BTreeMap<String, Vec<Difference>> = BTreeMap::new();
    // Our message: count, an example instruction.
    let mut we_reject: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut kernel_errors = Vec::new();
    // The programs we accept, for the kernel without CAP_PERFMON.
    let mut accepted = Vec::new();
    for case in 0..cases {
        let len = 64 + (rng.next_u64() % 1472) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let maps: &[GenMap] = if case % 3 == 0 { &[] } else { &MAPS };
        let divisions = case % 5 == 4;
        let g = socket_filter_program(&data, maps, !divisions);
        let ours = check(&g.program, &g.env, &Options::default(), None);
        let fd_array: &[i32] = if maps.is_empty() { &[] } else { &fds };
        // BTF for the subprograms, as libbpf loads it (the kernel wants
        // it of programs with callbacks).
        let btf = match ProgBtf::for_subprograms(g.program.insns()) {
            Ok(btf) => btf,
            Err(e) => {
                kernel_errors.push(format!("{e}\n{}", g.source));
                continue;
            }
        };
        let request = LoadRequest {
            fd_array,
            btf: btf.as_ref(),
            ..LoadRequest::new("vfuzz", SOCKET_FILTER, g.program.insns())
        };
        let kernel = match KernelProgram::load_request(&request) {
            Ok(_) => Ok(()),
            // The verifier's verdict comes with a log; anything else is the
            // kernel refusing the load for another reason.
            Err(e) if !e.log.is_empty() => Err(e.log),
            Err(e) => {
                kernel_errors.push(format!("{e}\n{}", g.source));
                continue;
            }
        };
        if ours.is_ok() {
            accepted.push((g.program.clone(), g.env.clone(), !maps.is_empty()));
        }
        match (ours, kernel) {
            (Ok(_), Ok(())) => both_accept += 1,
            (Err(_), Err(_)) => both_reject += 1,
            (Ok(_), Err(log)) => {
                let (message, pc) = kernel_message(&log);
                let opts = Options {
                    log_level: 2,
                    ..Options::default()
                };
                let mut set_everywhere = false;
                let (reached, state) = match (pc, check(&g.program, &g.env, &opts, None)) {
                    (Some(pc), Ok(report)) => {
                        set_everywhere = unset_register(&message)
                            .is_some_and(|n| set_in_every_state(&report.log, pc, n));
                        match our_state(&report.log, pc) {
                            Some(state) => (true, state),
                            None => (false, "(never reached)".to_string()),
                        }
                    }
                    _ => (true, "(unknown)".to_string()),
                };
                let at = pc.map_or(String::new(), |pc| format!("{pc}: "));
                let why = if set_everywhere {
                    Some(SET_ON_EVERY_PATH)
                } else {
                    not_memory_safety(&message, reached, divisions)
                        .or_else(|| pc.filter(|&pc| in_callback(&log, pc)).map(|_| IN_CALLBACK))
                        .or_else(|| non_null_to_us(&message, &state).then_some(CONSTANT_KEY))
                        .or_else(|| contradicting_branch(&log).map(|_| CONTRADICTING_BRANCH))
                };
                let difference = Difference {
                    why,
                    fault: run_in_interpreter(&g, rng.next_u64(), RUNS).err(),
                    source: g.source,
                    kernel_log_line: format!("{at}{message}"),
                    our_state: state,
                };
                kernel_rejects
                    .entry(message_group(&message))
                    .or_default()
                    .push(difference);
            }
            (Err(e), Ok(())) => {
                if show.as_deref().is_some_and(|m| e.message.contains(m)) {
                    println!(
                        "--- we reject ({}: {}), the kernel accepts:\n{}",
                        e.pc, e.message, g.source
                    );
                }
                let entry = we_reject
                    .entry(message_group(&e.message))
                    .or_insert_with(|| (0, format!("{}: {}: {}", e.pc, e.insn, e.message)));
                entry.0 += 1;
            }
        }
    }

    let kernel_rejects_n: usize = kernel_rejects.values().map(Vec::len).sum();
    let we_reject_n: usize = we_reject.values().map(|v| v.0).sum();
    println!(
        "verifier vs kernel ({cases} socket filters): both accept {both_accept}, both reject \
         {both_reject}, we accept and the kernel rejects {kernel_rejects_n}, we reject and the \
         kernel accepts {we_reject_n}, kernel load errors {}",
        kernel_errors.len()
    );
    println!("we accept, the kernel rejects (by the kernel's message; each run {RUNS} times in the interpreter):");
    let mut bad: Vec<&Difference> = Vec::new();
    for (message, cases) in &kernel_rejects {
        let mut reasons: Vec<&str> = cases
            .iter()
            .map(|d| d.why.unwrap_or("MEMORY SAFETY: a bug of ours"))
            .collect();
        reasons.sort_unstable();
        reasons.dedup();
        let faults = cases.iter().filter(|d| d.fault.is_some()).count();
        println!(
            "  {:4}  {message}  [{}] ({faults} faulted)",
            cases.len(),
            reasons.join("; ")
        );
        println!("          e.g. kernel: {}", cases[0].kernel_log_line);
        println!("               ours:   {}", cases[0].our_state);
        bad.extend(
            cases
                .iter()
                .filter(|d| d.why.is_none() || d.fault.is_some()),
        );
    }
    println!("we reject, the kernel accepts (by our message):");
    let mut ours: Vec<(&String, &(usize, String))> = we_reject.iter().collect();
    ours.sort_by_key(|o| std::cmp::Reverse(o.1 .0));
    for (message, (n, example)) in ours {
        println!("  {n:4}  {message}");
        println!("          e.g. {example}");
    }
    let leaks = leak_rules_without_cap_perfmon(&accepted, &fds);
    assert!(
        kernel_errors.is_empty(),
        "the kernel refused loads without a verifier log:\n{}",
        kernel_errors.join("\n---\n")
    );
    assert!(
        leaks.is_empty(),
        "{} programs we accept break the kernel's rules against address leaks and \
         uninitialised reads (a loader without CAP_PERFMON), at instructions we reach:\n{}",
        leaks.len(),
        leaks.join("\n---\n")
    );
    if !bad.is_empty() {
        let mut report = String::new();
        for d in &bad {
            report.push_str(&format!(
                "--- kernel: {}\n    ours:   {}\n    interpreter: {}\n{}\n",
                d.kernel_log_line,
                d.our_state,
                d.fault.as_deref().unwrap_or("no fault"),
                d.source
            ));
        }
        panic!(
            "{} programs we accept are rejected by the kernel for memory safety, or fault:\n{report}",
            bad.len()
        );
    }
}

/// The two classifiers of kernel imprecision, on lines of Linux 6.18's
/// logs (seed 4242 of this test): they must recognise what the kernel
/// printed there, and nothing on a consistent branch or a NULL map value.
#[test]
fn the_kernels_contradicting_branches_and_unknown_keys_are_recognised() {
    let log = "\
28: (3d) if r0 >= r8 goto pc+2 31: R0=scalar(umin=12) R8=12 R10=fp0
31: (6a) *(u16 *)(r10 -40) = 6        ; R10=fp0 fp-40=??????6
37: (4f) r4 |= r0                     ; R0=scalar(umin=12) R4=scalar(umin=12,var_off=(0x1; 0xfffffffffffffffe))
38: (25) if r4 > 0xc goto pc+3        ; R4=13
39: (bf) r1 = r7                      ; R1=map_value(map=m0,ks=4,vs=16) R7=map_value(map=m0,ks=4,vs=16)
41: (69) r4 = *(u16 *)(r1 +2)
R1 min value is outside of the allowed memory range
";
    assert_eq!(
        contradicting_branch(log),
        Some("38: (25) if r4 > 0xc goto pc+3        ; R4=13")
    );
    // The same jump with a value that satisfies its fall-through.
    assert_eq!(contradicting_branch(&log.replace("R4=13", "R4=11")), None);
    // 32-bit and signed comparisons, the immediate sign-extended.
    let w = "5: (a6) if w2 < 0x4 goto pc+1   ; R2=0x100000003\n6: (b7) r0 = 0";
    assert!(contradicting_branch(w).is_some());
    let s = "5: (c5) if r2 s< 0xfffffffe goto pc+1   ; R2=-3\n6: (b7) r0 = 0";
    assert!(contradicting_branch(s).is_some());
    // On an earlier path than the rejected one, it does not count.
    let earlier = format!("{log}from 38 to 42: R0=scalar()\n42: (b7) r0 = 0\nR0 !read_ok\n");
    assert_eq!(contradicting_branch(&earlier), None);

    let message = "R0 invalid mem access 'map_value_or_null'";
    assert!(non_null_to_us(
        message,
        "61: R0=map_value(map=0) R6=ctx() R10=fp0"
    ));
    assert!(!non_null_to_us(
        message,
        "61: R0=map_value_or_null(id=2,map=0) R6=ctx() R10=fp0"
    ));
    assert!(!non_null_to_us(
        "R1 invalid mem access 'scalar'",
        "61: R1=scalar() R10=fp0"
    ));
    // In a callback, the innermost frame's register.
    assert!(non_null_to_us(
        "R3 type=map_value_or_null expected=fp",
        "43: frame0: R3=0 R10=fp0 frame1: R3=map_value(map=0) R10=fp0"
    ));
}
