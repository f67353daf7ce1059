//! Programs the verifier must accept, and unsafe variants it must reject
//! with the kernel's message at the right pc.

use userbpf_verifier::{check, Context, Env, MapInfo, Options, VerifyError};
use userbpf_vm::asm::assemble;
use userbpf_vm::object::{FuncParam, FuncReturn, FuncSig, ParamType, ProgramType};
use userbpf_vm::Program;

/// A hash map: 4-byte keys, 8-byte values (map index 0), a ring buffer
/// (index 1), a read-only global-data array of 8 bytes (index 2), an
/// array of 4 8-byte values (index 3) and a program array (index 4).
fn maps() -> Vec<MapInfo> {
    vec![
        MapInfo::new("hash", 1, 4, 8, 16),
        MapInfo::new("events", 27, 0, 0, 4096),
        MapInfo {
            read_only: true,
            direct_value: true,
            contents: Some(b"%d\0\0abcd".to_vec()),
            ..MapInfo::new(".rodata", 2, 4, 8, 1)
        },
        MapInfo::new("array", 2, 4, 8, 4),
        MapInfo::new("progs", 3, 4, 4, 4),
        MapInfo {
            write_only: true,
            ..MapInfo::new("wronly", 2, 4, 8, 4)
        },
    ]
}

fn env(prog_type: ProgramType, context: Context) -> Env {
    Env {
        prog_type: Some(prog_type),
        attach_type: None,
        context,
        maps: maps(),
        subprogram_names: Vec::new(),
        sleepable: false,
        kernel_btf: None,
        attach_btf_name: None,
        non_scalar_returns: Vec::new(),
        global_functions: Vec::new(),
    }
}

fn xdp() -> Env {
    env(ProgramType::Xdp, Context::Xdp { egress: false })
}

fn uprobe() -> Env {
    env(ProgramType::Kprobe, Context::PtRegs)
}

fn socket() -> Env {
    env(
        ProgramType::SocketFilter,
        Context::SkBuff(userbpf_verifier::SkbKind::SocketFilter),
    )
}

/// `base` with one global function `name` at pc `start`, returning a
/// number, of these parameters (name, type, `arg:` tags).
fn with_global(base: Env, name: &str, start: usize, params: &[(&str, ParamType, &[&str])]) -> Env {
    Env {
        subprogram_names: vec![(name.to_string(), start)],
        global_functions: vec![userbpf_verifier::GlobalFunction {
            start,
            name: name.to_string(),
            sig: FuncSig {
                ret: FuncReturn::Scalar,
                global: true,
                params: params
                    .iter()
                    .map(|(name, ty, tags)| FuncParam {
                        name: name.to_string(),
                        ty: ty.clone(),
                        tags: tags.iter().map(|t| t.to_string()).collect(),
                    })
                    .collect(),
            },
        }],
        ..base
    }
}

/// A pointer parameter to the structure `name` of `size` bytes.
fn record(name: &str, size: u32) -> ParamType {
    ParamType::Pointer {
        target: format!("STRUCT {name}"),
        typedefs: Vec::new(),
        record: Some(name.to_string()),
        size: Some(size),
    }
}

fn run(src: &str, env: &Env) -> Result<u64, Box<VerifyError>> {
    let code = assemble(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let p = Program::new("t", code).unwrap();
    check(&p, env, &Options::default(), None).map(|r| r.stats.processed)
}

#[track_caller]
fn accepts(src: &str, env: &Env) -> u64 {
    match run(src, env) {
        Ok(n) => n,
        Err(e) => panic!("rejected: {e}\n{src}"),
    }
}

#[track_caller]
fn rejects(src: &str, env: &Env, pc: usize, message: &str) {
    match run(src, env) {
        Ok(_) => panic!("accepted, expected `{message}` at pc {pc}:\n{src}"),
        Err(e) => {
            assert!(
                e.message.contains(message),
                "expected `{message}`, got `{}` (pc {})\n{src}",
                e.message,
                e.pc
            );
            assert_eq!(e.pc, pc, "{}\n{src}", e.message);
        }
    }
}

const LOOKUP: &str = "
    *(u32 *)(r10 - 4) = 0
    r2 = r10
    r2 += -4
    r1 = map[idx:0]
    call bpf_map_lookup_elem
";

#[test]
fn a_null_checked_lookup_is_accepted_and_an_unchecked_one_rejected() {
    accepts(
        &format!("{LOOKUP}\nif r0 == 0 goto +1\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit"),
        &uprobe(),
    );
    rejects(
        &format!("{LOOKUP}\nr0 = *(u64 *)(r0 + 0)\nexit"),
        &uprobe(),
        6,
        "R0 invalid mem access 'map_value_or_null'",
    );
    // A copy made before the check is checked with it.
    accepts(
        &format!("{LOOKUP}\nr1 = r0\nif r0 == 0 goto +1\nr0 = *(u64 *)(r1 + 0)\nr0 = 0\nexit"),
        &uprobe(),
    );
    rejects(
        &format!("{LOOKUP}\nr0 += 8\nexit"),
        &uprobe(),
        6,
        "R0 pointer arithmetic on map_value_or_null prohibited, null-check it first",
    );
}

#[test]
fn an_array_lookup_with_a_constant_key_in_range_finds_a_value() {
    // The kernel's nullness elision (Linux 6.14): the value is used
    // without a null check.
    let lookup = |store: &str, off: i32| {
        format!(
            "{store}\nr2 = r10\nr2 += {off}\nr1 = map[idx:3]\ncall bpf_map_lookup_elem\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit"
        )
    };
    // Zeros written at fp-4; a number spilled at the start of its slot.
    accepts(&lookup("*(u32 *)(r10 - 4) = 0", -4), &xdp());
    accepts(&lookup("*(u32 *)(r10 - 8) = 0", -8), &xdp());
    // The kernel's model: the first store is a 2-byte spill, which the
    // second (not at a slot's start) makes unreadable as a spill.
    rejects(
        &lookup("*(u16 *)(r10 - 8) = 0\n*(u16 *)(r10 - 6) = 0", -8),
        &xdp(),
        7,
        "R0 invalid mem access 'map_value_or_null'",
    );
    accepts(&lookup("r1 = 3\n*(u32 *)(r10 - 8) = r1", -8), &xdp());
    // The key is the upper half of an 8-byte spill of 3: the kernel
    // takes the spill's value, 3 (its upper half is 0, also in range).
    accepts(&lookup("r1 = 3\n*(u64 *)(r10 - 8) = r1", -4), &xdp());
    // The kernel's rule: the spill is 8 bytes, the key 4.
    rejects(
        &lookup("r1 = 3\n*(u64 *)(r10 - 8) = r1", -8),
        &xdp(),
        7,
        "R0 invalid mem access 'map_value_or_null'",
    );
    // The last key is max_entries - 1.
    rejects(
        &lookup("r1 = 4\n*(u32 *)(r10 - 8) = r1", -8),
        &xdp(),
        7,
        "R0 invalid mem access 'map_value_or_null'",
    );
    // A key that is not known.
    rejects(
        &lookup("r1 = *(u32 *)(r1 + 16)\n*(u32 *)(r10 - 8) = r1", -8),
        &xdp(),
        7,
        "R0 invalid mem access 'map_value_or_null'",
    );
    // A hash map may not hold the key.
    rejects(
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
        &xdp(),
        6,
        "R0 invalid mem access 'map_value_or_null'",
    );
    // Two paths reach the lookup, one with a key out of range: the state
    // with the key in range (explored first, and kept: the preamble's
    // jumps and instructions make the join a place where states are
    // stored) does not stand for the other. Without the key marked as
    // mattering for pruning, the second path would be pruned there.
    let two_paths = |first: u32, second: u32| {
        format!(
            "r3 = *(u32 *)(r1 + 16)\nr2 = {second}\nr4 = 0\nr4 += 1\nr4 += 1\nr4 += 1\nr4 += 1\nr4 += 1\nr4 += 1\n\
             if r3 > 5 goto +2\nr2 = {first}\ngoto +0\n*(u32 *)(r10 - 8) = r2\nr2 = r10\nr2 += -8\nr1 = map[idx:3]\ncall bpf_map_lookup_elem\nr0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit"
        )
    };
    let processed = accepts(&two_paths(1, 2), &xdp());
    assert!(processed > 20, "both paths run to the end: {processed}");
    rejects(
        &two_paths(1, 100),
        &xdp(),
        18,
        "R0 invalid mem access 'map_value_or_null'",
    );
    rejects(
        &two_paths(100, 1),
        &xdp(),
        18,
        "R0 invalid mem access 'map_value_or_null'",
    );
}

#[test]
fn map_values_are_bounded() {
    rejects(
        &format!("{LOOKUP}\nif r0 == 0 goto +1\nr0 = *(u32 *)(r0 + 8)\nr0 = 0\nexit"),
        &uprobe(),
        7,
        "invalid access to map value, value_size=8 off=8 size=4",
    );
    // A bounded variable index is fine; an unbounded one is not.
    let var = |check: &str| {
        format!(
            "{LOOKUP}\nif r0 == 0 goto +5\nr1 = *(u32 *)(r0 + 0)\n{check}\nr0 += r1\nr0 = *(u8 *)(r0 + 0)\nr0 = 0\nexit"
        )
    };
    accepts(&var("r1 &= 7"), &uprobe());
    rejects(
        &var("r1 &= 15"),
        &uprobe(),
        10,
        "invalid access to map value, value_size=8 off=15 size=1",
    );
    rejects(
        &var("r1 += 0"),
        &uprobe(),
        10,
        "R0 unbounded memory access, make sure to bounds check any such access",
    );
    // Read-only maps are read-only.
    rejects(
        "r1 = map[idx:2][0]+0\nr2 = 1\n*(u32 *)(r1 + 0) = r2\nr0 = 0\nexit",
        &uprobe(),
        3,
        "write into map forbidden, value_size=8 off=0 size=4",
    );
    // ... through helpers too (`record_func_map`).
    for helper in ["bpf_map_update_elem", "bpf_map_delete_elem"] {
        rejects(
            &format!(
                "*(u64 *)(r10 - 8) = 0\n*(u64 *)(r10 - 16) = 0\nr1 = map[idx:2]\nr2 = r10\nr2 += -8\nr3 = r10\nr3 += -16\nr4 = 0\ncall {helper}\nr0 = 0\nexit"
            ),
            &uprobe(),
            9,
            "write into map forbidden",
        );
    }
}

#[test]
fn registers_must_be_written_before_they_are_read() {
    rejects("r0 = r2\nexit", &xdp(), 0, "R2 !read_ok");
    rejects("exit", &xdp(), 0, "R0 !read_ok");
    rejects(
        "r1 = 1\ncall bpf_ktime_get_ns\nr0 = r1\nexit",
        &xdp(),
        2,
        "R1 !read_ok",
    );
    // (Writes to r10 do not even decode: `Program::new` refuses them.)
}

#[test]
fn the_stack_is_tracked_byte_by_byte() {
    // Below what the path has written, the kernel's bounds message (for
    // loaders without CAP_PERFMON); within it, byte by byte.
    rejects(
        "r0 = *(u64 *)(r10 - 8)\nexit",
        &xdp(),
        0,
        "invalid read from stack R10 off=-8 size=8",
    );
    rejects(
        "*(u64 *)(r10 - 16) = 0\nr0 = *(u64 *)(r10 - 8)\nexit",
        &xdp(),
        1,
        "invalid read from stack off -8+0 size 8",
    );
    rejects(
        "*(u32 *)(r10 - 8) = 0\nr0 = *(u64 *)(r10 - 8)\nexit",
        &xdp(),
        1,
        "invalid read from stack off -8+4 size 8",
    );
    accepts(
        "*(u32 *)(r10 - 8) = 0\n*(u32 *)(r10 - 4) = 0\nr0 = *(u64 *)(r10 - 8)\nexit",
        &xdp(),
    );
    rejects(
        "*(u64 *)(r10 - 4) = 0\nr0 = 0\nexit",
        &xdp(),
        0,
        "misaligned stack access",
    );
    rejects(
        "*(u64 *)(r10 - 520) = 0\nr0 = 0\nexit",
        &xdp(),
        0,
        "invalid write to stack R10 off=-520 size=8",
    );
    rejects(
        "*(u8 *)(r10 + 0) = 0\nr0 = 0\nexit",
        &xdp(),
        0,
        "invalid write to stack R10 off=0 size=1",
    );
    // A spilled pointer comes back as the same pointer.
    accepts(
        "*(u64 *)(r10 - 16) = r1\nr1 = 0\nr1 = *(u64 *)(r10 - 16)\nr0 = *(u32 *)(r1 + 12)\nexit",
        &xdp(),
    );
    // ...but not through a narrower fill.
    rejects(
        "*(u64 *)(r10 - 16) = r1\nr0 = *(u32 *)(r10 - 16)\nexit",
        &xdp(),
        1,
        "invalid size of register fill",
    );
}

#[test]
fn pointers_never_leak_into_maps_the_context_or_the_return_value() {
    rejects(
        &format!("{LOOKUP}\nif r0 == 0 goto +1\n*(u64 *)(r0 + 0) = r10\nr0 = 0\nexit"),
        &uprobe(),
        7,
        "R10 leaks addr into map",
    );
    rejects("r0 = r10\nexit", &xdp(), 1, "R0 leaks addr as return value");
    rejects(
        "w1 = w10\nr0 = 0\nexit",
        &xdp(),
        0,
        "R10 partial copy of pointer",
    );
    rejects(
        "r1 &= 7\nr0 = 0\nexit",
        &xdp(),
        0,
        "R1 bitwise operator &= on pointer prohibited",
    );
    rejects(
        "w1 += 1\nr0 = 0\nexit",
        &xdp(),
        0,
        "R1 32-bit pointer arithmetic prohibited",
    );
    rejects(
        "r0 = 1\nr0 -= r1\nexit",
        &xdp(),
        1,
        "R0 tried to subtract pointer from scalar",
    );
}

/// `LOOKUP` in the array (map 3), with the value in r9 (r0 = 0 when
/// none).
const VALUE_IN_R9: &str = "
    *(u32 *)(r10 - 4) = 0
    r2 = r10
    r2 += -4
    r1 = map[idx:3]
    call bpf_map_lookup_elem
    if r0 != 0 goto +2
    r0 = 0
    exit
    r9 = r0
";

#[test]
fn no_address_reaches_a_map_through_a_comparison_an_atomic_or_a_helper() {
    // A comparison whose outcome depends on where memory lies, written
    // into the map: 10 instruction slots of the lookup, the setup, then
    // `r3 = 0` and the comparison (at pc 13 after a setup of two slots).
    let compare = |setup: &str, cmp: &str| {
        format!(
            "{VALUE_IN_R9}\n{setup}\nr3 = 0\n{cmp} goto +1\nr3 = 1\n*(u64 *)(r9 + 0) = r3\nr0 = 0\nexit"
        )
    };
    for (setup, cmp, regno) in [
        // Against a number: its bits, one at a time.
        ("r1 = r10\nr2 = 0", "if r1 > 0x7fff0000", 1),
        ("r1 = r10\nr2 = *(u64 *)(r9 + 0)", "if r1 > r2", 1),
        ("r1 = r10\nr2 = *(u64 *)(r9 + 0)", "if r2 == r1", 1),
        ("r1 = r10\nr2 = 0", "if r1 & 0x1000", 1),
        ("r1 = r9\nr2 = 0", "if r1 != 0x1000", 1),
        // A 32-bit half, even against 0.
        ("r1 = r10\nr2 = 0", "if w1 == 0", 1),
        // The order of two regions.
        ("r1 = r10\nr2 = 0", "if r1 > r9", 9),
        ("r1 = map[idx:0]\nr2 = map[idx:3]", "if r1 < r2", 2),
    ] {
        let src = compare(setup, cmp);
        let pc = if setup.contains("map[") { 15 } else { 13 };
        rejects(
            &src,
            &uprobe(),
            pc,
            &format!("R{regno} pointer comparison prohibited"),
        );
    }
    // What tells nothing of where memory lies stays allowed: a pointer
    // against 0, two pointers compared for equality (`p == &local`),
    // the order of two pointers into one region.
    for (setup, cmp) in [
        ("r1 = r10\nr2 = 0", "if r1 == 0"),
        ("r1 = r9\nr2 = 0", "if r1 > 0"),
        ("r1 = r10\nr1 += -8\nr2 = 0", "if r1 == r9"),
        ("r1 = r10\nr1 += -8\nr2 = 0", "if r9 != r1"),
        ("r1 = map[idx:0]\nr2 = map[idx:3]", "if r1 == r2"),
        ("r1 = r10\nr1 += -8\nr2 = r10", "if r1 < r2"),
        ("r1 = r9\nr1 += 4\nr2 = r9", "if r1 > r2"),
    ] {
        accepts(&compare(setup, cmp), &uprobe());
    }
    // Packet bounds are comparisons of two packet pointers.
    accepts(
        "r2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr4 = r2\nr4 += 8\n\
         if r4 > r3 goto +1\nr0 = *(u64 *)(r2 + 0)\nr0 = 2\nexit",
        &xdp(),
    );
    // An atomic operation on a spilled pointer would turn it into a
    // number, fetched or left in the slot (the kernel's unprivileged rule).
    for op in [
        "r3 = atomic_fetch_add((u64 *)(r10 - 16), r3)",
        "lock *(u64 *)(r10 - 16) += r3",
        "r3 = xchg_64(r10 - 16, r3)",
        "r0 = cmpxchg_64(r10 - 16, r0, r3)",
    ] {
        rejects(
            &format!(
                "{VALUE_IN_R9}\n*(u64 *)(r10 - 16) = r10\nr0 = 0\nr3 = 0\n{op}\n\
                 r3 = *(u64 *)(r10 - 16)\n*(u64 *)(r9 + 0) = r3\nr0 = 0\nexit"
            ),
            &uprobe(),
            13,
            "leaking pointer from stack off -16",
        );
    }
    // A spilled number still adds up.
    accepts(
        &format!(
            "{VALUE_IN_R9}\nr1 = 5\n*(u64 *)(r10 - 16) = r1\nr3 = 1\n\
             r3 = atomic_fetch_add((u64 *)(r10 - 16), r3)\n*(u64 *)(r9 + 0) = r3\nr0 = 0\nexit"
        ),
        &uprobe(),
    );
    // An address given to a helper as a value (flags here) may end
    // anywhere; one it reads from is used, not given.
    rejects(
        &format!(
            "{VALUE_IN_R9}\nr1 = map[idx:3]\nr2 = r10\nr2 += -4\nr3 = r9\nr4 = r10\n\
             call bpf_map_update_elem\nr0 = 0\nexit"
        ),
        &uprobe(),
        16,
        "R4 leaks addr into helper function",
    );
    accepts(
        &format!(
            "{VALUE_IN_R9}\n*(u64 *)(r10 - 16) = 0\nr1 = r10\nr1 += -8\nr2 = 8\nr3 = r9\n\
             call bpf_probe_read_user\nr0 = 0\nexit"
        ),
        &uprobe(),
    );
}

#[test]
fn context_accesses_follow_the_program_kind() {
    accepts("r0 = *(u32 *)(r1 + 12)\nexit", &xdp());
    rejects(
        "r0 = 0\n*(u32 *)(r1 + 12) = r0\nexit",
        &xdp(),
        1,
        "invalid bpf_context access off=12 size=4",
    );
    rejects(
        "r0 = *(u64 *)(r1 + 0)\nexit",
        &xdp(),
        0,
        "invalid bpf_context access off=0 size=8",
    );
    accepts("r0 = *(u64 *)(r1 + 112)\nexit", &uprobe());
    rejects(
        "r0 = *(u64 *)(r1 + 168)\nexit",
        &uprobe(),
        0,
        "invalid bpf_context access off=168 size=8",
    );
    rejects(
        "r1 += 8\nr0 = *(u64 *)(r1 + 0)\nexit",
        &uprobe(),
        1,
        "dereference of modified ctx ptr R1 off=8 disallowed",
    );
    // A program type whose context userbpf does not model says so.
    let netfilter = env(ProgramType::Netfilter, Context::Opaque);
    for (src, pc, what) in [
        (
            "r0 = *(u32 *)(r1 + 4)\nexit",
            0,
            "invalid bpf_context access off=4 size=4",
        ),
        (
            "call bpf_get_socket_cookie\nr0 = 1\nexit",
            0,
            "cannot use helper bpf_get_socket_cookie#46",
        ),
    ] {
        rejects(src, &netfilter, pc, what);
        rejects(
            src,
            &netfilter,
            pc,
            "(userbpf's verifier does not model BPF_PROG_TYPE_NETFILTER programs: their context and helpers)",
        );
    }
}

const PACKET: &str = "
    r2 = *(u32 *)(r1 + 0)
    r3 = *(u32 *)(r1 + 4)
    r4 = r2
    r4 += 14
";

#[test]
fn packet_accesses_need_a_comparison_with_data_end() {
    accepts(
        &format!("{PACKET}\nr0 = 1\nif r4 > r3 goto +1\nr0 = *(u8 *)(r2 + 13)\nexit"),
        &xdp(),
    );
    // The other way round, and with the check inverted.
    accepts(
        &format!("{PACKET}\nr0 = 1\nif r3 < r4 goto +1\nr0 = *(u16 *)(r2 + 12)\nexit"),
        &xdp(),
    );
    rejects(
        &format!("{PACKET}\nr0 = 1\nif r4 > r3 goto +1\nr0 = *(u8 *)(r2 + 14)\nexit"),
        &xdp(),
        6,
        "invalid access to packet, off=14 size=1",
    );
    rejects(
        &format!("{PACKET}\nr0 = *(u8 *)(r2 + 0)\nexit"),
        &xdp(),
        4,
        "R2 offset is outside of the packet",
    );
    // The proof is on the fall-through only.
    rejects(
        &format!("{PACKET}\nr0 = 1\nif r4 > r3 goto +1\nexit\nr0 = *(u8 *)(r2 + 0)\nexit"),
        &xdp(),
        7,
        "invalid access to packet",
    );
    rejects(
        "r0 = *(u32 *)(r1 + 4)\nr0 += 1\nr0 = 0\nexit",
        &xdp(),
        1,
        "pointer arithmetic on pkt_end prohibited",
    );
}

#[test]
fn references_are_released_on_every_path() {
    let reserve = "
        r1 = map[idx:1]
        r2 = 16
        r3 = 0
        call bpf_ringbuf_reserve
    ";
    accepts(
        &format!("{reserve}\nif r0 == 0 goto +4\nr1 = r0\nr2 = 0\ncall bpf_ringbuf_submit\nr0 = 0\nr0 = 0\nexit"),
        &uprobe(),
    );
    rejects(
        &format!("{reserve}\nif r0 == 0 goto +1\nr0 = 0\nr0 = 0\nexit"),
        &uprobe(),
        8,
        "Unreleased reference id=1 alloc_insn=4",
    );
    // Discarded on one branch only.
    rejects(
        &format!(
            "{reserve}\nif r0 == 0 goto +6\nr6 = r0\ncall bpf_get_prandom_u32\nif r0 > 5 goto +3\nr1 = r6\nr2 = 0\ncall bpf_ringbuf_discard\nr0 = 0\nexit"
        ),
        &uprobe(),
        13,
        "Unreleased reference",
    );
    // Used after release.
    rejects(
        &format!("{reserve}\nif r0 == 0 goto +5\nr6 = r0\nr1 = r0\nr2 = 0\ncall bpf_ringbuf_submit\nr0 = *(u8 *)(r6 + 0)\nr0 = 0\nexit"),
        &uprobe(),
        10,
        "R6 !read_ok",
    );
    rejects(
        &format!("{reserve}\nif r0 == 0 goto +4\nr1 = r0\nr1 += 8\nr2 = 0\ncall bpf_ringbuf_submit\nr0 = 0\nexit"),
        &uprobe(),
        9,
        "R1 must have zero offset when passed to release func",
    );
    rejects(
        &format!("{reserve}\nif r0 == 0 goto +1\nr0 = *(u8 *)(r0 + 16)\nr0 = 0\nexit"),
        &uprobe(),
        6,
        "invalid access to memory, mem_size=16 off=16 size=1",
    );
}

#[test]
fn an_atomic_fetch_returns_what_was_there() {
    // A number spilled on the stack comes back whole (the kernel's
    // check_atomic reads it as a load would); then the slot is unknown.
    let fetch = |then: &str| {
        format!(
            "*(u64 *)(r10 - 8) = 4\nr2 = 1\nr2 = atomic_fetch_or((u64 *)(r10 - 8), r2)\n{then}\nr0 = *(u64 *)(r2 + 0)\nr0 = 0\nexit"
        )
    };
    accepts(&fetch("if r2 == 4 goto +1"), &xdp());
    rejects(
        &fetch("r2 = *(u64 *)(r10 - 8)\nif r2 == 4 goto +1"),
        &xdp(),
        5,
        "R2 invalid mem access 'scalar'",
    );
}

#[test]
fn atomics_are_aligned_at_every_offset_a_variable_pointer_may_have() {
    // `slots[i]` of a histogram value: an offset of 0 or 4 keeps a 4-byte
    // add aligned; 0 or 2 does not; the stack takes no variable offset.
    let slot = |mask: u32, size: &str| {
        format!(
            "r6 = *(u32 *)(r1 + 12)\nr6 &= {mask}\n*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nif r0 == 0 goto +3\nr0 += r6\nr1 = 1\nlock *({size} *)(r0 + 0) += r1\nr0 = 0\nexit"
        )
    };
    accepts(&slot(4, "u32"), &xdp());
    rejects(
        &slot(2, "u32"),
        &xdp(),
        11,
        "misaligned value access off (0x0; 0x2)+0+0 size 4",
    );
    rejects(
        &slot(4, "u64"),
        &xdp(),
        11,
        "misaligned value access off (0x0; 0x4)+0+0 size 8",
    );
    rejects(
        "r6 = *(u32 *)(r1 + 12)\nr6 &= 8\nr2 = 0\n*(u64 *)(r10 - 16) = r2\n*(u64 *)(r10 - 8) = r2\nr3 = r10\nr3 += -16\nr3 += r6\nr1 = 1\nlock *(u64 *)(r3 + 0) += r1\nr0 = 0\nexit",
        &xdp(),
        9,
        "variable offset stack pointer cannot be passed into helper function; var_off=(0x0; 0x8) off=-16 size=8",
    );
}

#[test]
fn write_only_and_read_only_map_values() {
    // BPF_F_WRONLY_PROG: stores, but no loads (nor atomics, which load);
    // BPF_F_RDONLY_PROG: loads, but no stores.
    let value = |map: u32, then: &str| {
        format!(
            "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:{map}]\ncall bpf_map_lookup_elem\n{then}\nr0 = 0\nexit"
        )
    };
    accepts(&value(5, "*(u64 *)(r0 + 0) = 1"), &xdp());
    rejects(
        &value(5, "r1 = *(u64 *)(r0 + 0)"),
        &xdp(),
        6,
        "read from map forbidden, value_size=8 off=0 size=8",
    );
    rejects(
        &value(5, "r1 = 1\nlock *(u64 *)(r0 + 0) += r1"),
        &xdp(),
        7,
        "read from map forbidden, value_size=8 off=0 size=8",
    );
    accepts(&value(2, "r1 = *(u64 *)(r0 + 0)"), &xdp());
    rejects(
        &value(2, "*(u64 *)(r0 + 0) = 1"),
        &xdp(),
        6,
        "write into map forbidden, value_size=8 off=0 size=8",
    );
}

#[test]
fn some_helpers_return_numbers_in_a_known_range() {
    // A CPU number is below the CPUs' count (at most 65536 here).
    accepts(
        "call bpf_get_smp_processor_id\nif r0 > 0xffff goto +2\nr0 = 0\nexit\nr1 = *(u64 *)(r0 + 0)\nexit",
        &xdp(),
    );
    rejects(
        "call bpf_get_prandom_u32\nif r0 > 0xffff goto +2\nr0 = 0\nexit\nr1 = *(u64 *)(r0 + 0)\nexit",
        &xdp(),
        4,
        "R0 invalid mem access 'scalar'",
    );
    // A string read returns at most its size, or an errno.
    let str_read = |max: i32| {
        format!(
            "r1 = r10\nr1 += -16\nr2 = 8\nr3 = 0\ncall bpf_probe_read_str\nif r0 s> {max} goto +3\nif r0 s< -4095 goto +2\nr0 = 0\nexit\nr1 = *(u64 *)(r0 + 0)\nexit"
        )
    };
    accepts(&str_read(8), &uprobe());
    rejects(&str_read(7), &uprobe(), 9, "R0 invalid mem access 'scalar'");
}

#[test]
fn helper_calls_follow_their_prototypes() {
    rejects("call 999\nexit", &xdp(), 0, "invalid func unknown#999");
    // A helper the kernel has, which userbpf does not model, says so.
    rejects(
        "call 153\nexit",
        &uprobe(),
        0,
        "helper bpf_per_cpu_ptr#153 is not supported by userbpf's verifier (no prototype)",
    );
    rejects(
        "r1 = r10\nr1 += -8\nr2 = 8\nr3 = 0\ncall bpf_probe_read\nr0 = 0\nexit",
        &xdp(),
        4,
        "program of this type cannot use helper bpf_probe_read#4",
    );
    rejects(
        "r1 = 0\nr2 = r10\nr2 += -4\ncall bpf_map_lookup_elem\nr0 = 0\nexit",
        &uprobe(),
        3,
        "R1 type=scalar expected=map_ptr",
    );
    rejects(
        "r2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = 0\nexit",
        &uprobe(),
        4,
        "invalid read from stack R2 off=-4 size=4",
    );
    rejects(
        "*(u64 *)(r10 - 16) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = 0\nexit",
        &uprobe(),
        5,
        "invalid read from stack R2 off -4+0 size 4",
    );
    rejects(
        "r1 = map[idx:1]\nr2 = r10\nr2 += -4\n*(u32 *)(r10 - 4) = 0\ncall bpf_map_lookup_elem\nr0 = 0\nexit",
        &uprobe(),
        5,
        "cannot pass map_type 27 into func bpf_map_lookup_elem#1",
    );
    // bpf_probe_read writes its destination: uninitialised stack is fine,
    // and is initialised afterwards.
    accepts(
        "r1 = r10\nr1 += -8\nr2 = 8\nr3 = 0\ncall bpf_probe_read\nr0 = *(u64 *)(r10 - 8)\nexit",
        &uprobe(),
    );
    rejects(
        "r1 = r10\nr1 += -8\nr2 = 16\nr3 = 0\ncall bpf_probe_read\nr0 = 0\nexit",
        &uprobe(),
        4,
        "invalid write to stack R1 off=-8 size=16",
    );
    rejects(
        "r1 = r10\nr1 += -8\nr2 = 0\nr3 = 0\ncall bpf_get_current_comm\nr0 = 0\nexit",
        &uprobe(),
        4,
        "R2 invalid zero-sized read",
    );
    // A format string must be a NUL-terminated read-only string.
    accepts(
        "r1 = r10\nr1 += -16\nr2 = 16\nr3 = map[idx:2][0]+0\nr4 = 0\nr5 = 0\ncall bpf_snprintf\nr0 = 0\nexit",
        &uprobe(),
    );
    rejects(
        "r1 = r10\nr1 += -16\nr2 = 16\nr3 = map[idx:2][0]+4\nr4 = 0\nr5 = 0\ncall bpf_snprintf\nr0 = 0\nexit",
        &uprobe(),
        7,
        "string is not zero-terminated",
    );
}

#[test]
fn arithmetic_is_checked() {
    rejects("r0 = 1\nr0 /= 0\nexit", &xdp(), 1, "div by zero");
    rejects("r0 = 1\nr0 <<= 64\nexit", &xdp(), 1, "invalid shift 64");
    // Division by a register that may be zero is defined (0).
    accepts("r0 = 1\nr2 = *(u32 *)(r1 + 12)\nr0 /= r2\nexit", &xdp());
}

#[test]
fn loops_run_until_they_exit_and_unbounded_ones_are_rejected() {
    let n = accepts("r1 = 0\nr1 += 1\nif r1 < 100 goto -2\nr0 = 0\nexit", &xdp());
    assert!(n >= 200, "every iteration is explored ({n} insns)");
    rejects(
        "r0 = 0\ngoto -1",
        &xdp(),
        1,
        "infinite loop detected at insn 1",
    );
    // A loop whose counter never reaches its bound.
    rejects(
        "r1 = 0\nr2 = *(u32 *)(r1 + 0)\nexit",
        &xdp(),
        1,
        "R1 invalid mem access 'scalar'",
    );
    rejects(
        "r0 = *(u32 *)(r1 + 12)\nif r0 != 0 goto -1\nexit",
        &xdp(),
        1,
        "infinite loop detected at insn 1",
    );
    // A loop around a helper that calls back: the state repeats at the
    // call, reached by falling through; the message names the loop's
    // back-edge, not the edge into the call (the kernel loads this endless
    // loop: tests/verifier_rules_vs_kernel.rs).
    rejects(
        "r9 = 0\nl1:\nif r9 >= 1 goto l2\nr1 = 1\nr2 = func[cb]\nr3 = 0\nr4 = 0\ncall bpf_loop#181\ngoto l1\nl2:\nr0 = 0\nexit\ncb:\nr0 = 0\nexit",
        &xdp(),
        7,
        "infinite loop detected at insn 7 (back-edge from insn 8 to 1: the loop comes back to the state it was in)",
    );
    // Each iteration loads a new number and spills it, linking the copies
    // by a new id: the state still repeats, ids compared up to renaming
    // (Linux 6.18 runs this loop to its limit: "BPF program is too large").
    rejects(
        "r7 = 0\nr3 = *(u32 *)(r1 + 12)\n*(u64 *)(r10 - 8) = r3\nif r7 < 3 goto -3\nr0 = 0\nexit",
        &xdp(),
        1,
        "infinite loop detected at insn 1 (back-edge from insn 3 to 1: the loop comes back to the state it was in)",
    );
    rejects(
        "r1 = 0\nr1 += 1\nif r1 < 2000000 goto -2\nr0 = 0\nexit",
        &xdp(),
        2,
        "BPF program is too large. Processed 1000001 insn",
    );
}

#[test]
fn bpf_to_bpf_calls_have_their_own_frames() {
    // The callee writes through a pointer to the caller's stack.
    accepts(
        "r1 = r10\nr1 += -8\ncall pc+2\nr0 = *(u64 *)(r10 - 8)\nexit\n*(u64 *)(r1 + 0) = 7\nr0 = 0\nexit",
        &xdp(),
    );
    // Callee-saved registers survive; r1-r5 do not.
    rejects(
        "r1 = 1\ncall pc+2\nr0 = r1\nexit\nr0 = 0\nexit",
        &xdp(),
        2,
        "R1 !read_ok",
    );
    rejects(
        "r0 = r10\ncall pc+1\nexit\nr0 = r10\nexit",
        &xdp(),
        4,
        "cannot return stack pointer to the caller",
    );
    // Nor the caller's own stack (the kernel refuses any stack pointer).
    rejects(
        "r1 = r10\nr1 += -8\ncall pc+2\nr0 = 0\nexit\nr0 = r1\nexit",
        &xdp(),
        6,
        "cannot return stack pointer to the caller",
    );
    // A subprogram may return without setting r0, as in the kernel
    // (`prepare_func_exit` copies it whatever it is); the caller may not
    // read it then, and the entry function must set it before its exit.
    accepts("r6 = 0\ncall pc+2\nr0 = 0\nexit\nr6 = 1\nexit", &xdp());
    rejects(
        "r6 = 0\ncall pc+1\nexit\nr6 = 1\nexit",
        &xdp(),
        2,
        "R0 !read_ok",
    );
    rejects(
        "r0 = 0\ncall pc+2\nr0 += 1\nexit\nr6 = 1\nexit",
        &xdp(),
        2,
        "R0 !read_ok",
    );
    // No jump leaves its function, and none falls into the next (the
    // kernel's `check_subprogs`); a callback's address starts a function
    // too.
    rejects(
        "r0 = 1\ncall pc+2\nr0 = 2\nexit\ngoto -3",
        &xdp(),
        4,
        "jump out of range from insn 4 to 2",
    );
    rejects(
        "r0 = 0\ncall pc+2\nexit\nexit\nr0 = 1\nr0 = 2\ncall pc+0\nr0 = 3\nexit",
        &xdp(),
        6,
        "last insn is not an exit or jmp",
    );
    rejects(
        "r0 = 0\nif r0 == 0 goto +3\nr2 = func[pc+2]\nexit\nr0 = 0\nexit",
        &xdp(),
        1,
        "jump out of range from insn 1 to 5",
    );
    // The functions' deepest stacks add up along each chain of calls,
    // wherever on their paths they reach them (the kernel's
    // check_max_stack_depth): here the caller goes deep after the call.
    rejects(
        "r6 = 0\ncall pc+3\n*(u64 *)(r10 - 448) = r6\nr0 = 0\nexit\n*(u64 *)(r10 - 96) = r1\nr0 = 0\nexit",
        &xdp(),
        1,
        "combined stack size of 2 calls is 544. Too large",
    );
    accepts(
        "r6 = 0\ncall pc+3\n*(u64 *)(r10 - 448) = r6\nr0 = 0\nexit\n*(u64 *)(r10 - 64) = r1\nr0 = 0\nexit",
        &xdp(),
    );
    // A tail call from a function entered with 256 bytes of stack or more.
    let tail = |depth: i32| {
        format!(
            "*(u64 *)(r10 - {depth}) = r1\ncall pc+2\nr0 = 0\nexit\nr2 = map[idx:4]\nr3 = 0\ncall bpf_tail_call\nr0 = 0\nexit"
        )
    };
    accepts(&tail(240), &xdp());
    rejects(
        &tail(256),
        &xdp(),
        1,
        "tail_calls are not allowed when call stack of previous frames is 256 bytes. Too large",
    );
    rejects(
        "call pc-1\nexit",
        &xdp(),
        0,
        "the call stack of 9 frames is too deep !",
    );
}

#[test]
fn a_loop_around_a_callback_helper_must_end_on_its_own() {
    // bpf_loop bounds its callback's iterations, not a loop of the
    // caller's going around the call: this one never ends (the kernel
    // accepts it, pruning at the call as for the callback's iterations).
    let around = |step: &str| {
        format!(
            "r6 = 1\nl1:\nif r6 >= 8 goto l2\nr1 = 1\nr2 = func[cb]\nr3 = 0\nr4 = 0\ncall bpf_loop\n{step}goto l1\nl2:\nr0 = 0\nexit\ncb:\nr0 = 0\nexit"
        )
    };
    // (Found at once: the call stores every state reaching it, and the
    // loop brings the same one back; it used to run to the limit of
    // processed instructions.)
    rejects(&around(""), &xdp(), 7, "infinite loop detected at insn 7");
    accepts(&around("r6 += 1\n"), &xdp());
}

#[test]
fn callback_iterations_widen_against_their_own_previous_iteration() {
    // A loop of the caller's around bpf_loop: each outer iteration reaches
    // the call with another r8. Widening the callback's iterations against
    // a state another outer iteration left at the call made r8 unbounded,
    // and the stack index below unprovable.
    let src = "r8 = 0\nr1 = 0\n*(u64 *)(r10 - 56) = r1\nl1:\nif r8 >= 6 goto l2\nr1 = 8\nr2 = func[cb]\nr3 = r10\nr3 += -56\nr4 = 0\ncall bpf_loop\nr1 = r10\nr1 += -48\nr2 = r8\nr2 <<= 3\nr1 += r2\nr3 = 0\n*(u64 *)(r1 + 0) = r3\nr8 += 1\ngoto l1\nl2:\nr0 = 0\nexit\ncb:\nr6 = *(u64 *)(r2 + 0)\nr6 += 1\n*(u64 *)(r2 + 0) = r6\nr0 = 0\nexit";
    accepts(src, &xdp());
}

#[test]
fn callbacks_are_verified_with_their_own_arguments() {
    // bpf_loop(4, cb, &fp[-8], 0); cb(i, ctx) adds i to *ctx, returns 0.
    let looped = |body: &str| {
        format!(
            "*(u64 *)(r10 - 8) = 0\nr1 = 4\nr2 = func[pc+7]\nr3 = r10\nr3 += -8\nr4 = 0\ncall bpf_loop\nr0 = *(u64 *)(r10 - 8)\nexit\n{body}"
        )
    };
    accepts(
        &looped("r3 = *(u64 *)(r2 + 0)\nr3 += r1\n*(u64 *)(r2 + 0) = r3\nr0 = 0\nexit"),
        &uprobe(),
    );
    // The context pointer points to 8 bytes.
    rejects(
        &looped("r3 = *(u64 *)(r2 + 8)\nr0 = 0\nexit"),
        &uprobe(),
        10,
        "invalid read from stack R2 off=0 size=8",
    );
    // A callback returns 0 or 1.
    rejects(
        &looped("r0 = 2\nexit"),
        &uprobe(),
        11,
        "should have been in [0, 1]",
    );
    // The index is a number, not a pointer.
    rejects(
        &looped("r0 = *(u8 *)(r1 + 0)\nexit"),
        &uprobe(),
        10,
        "R1 invalid mem access 'scalar'",
    );
    // bpf_for_each_map_elem: cb(map, key, value, ctx) with a typed key
    // and value.
    let each = |body: &str| {
        format!("r1 = map[idx:0]\nr2 = func[pc+6]\nr3 = 0\nr4 = 0\ncall bpf_for_each_map_elem\nr0 = 0\nexit\n{body}")
    };
    accepts(
        &each("r0 = *(u32 *)(r2 + 0)\nr0 = *(u64 *)(r3 + 0)\nr0 = 0\nexit"),
        &uprobe(),
    );
    rejects(
        &each("r0 = *(u64 *)(r3 + 4)\nr0 = 0\nexit"),
        &uprobe(),
        9,
        "invalid access to map value, value_size=8 off=4 size=8",
    );
    rejects(
        &each("r0 = *(u32 *)(r2 + 4)\nr0 = 0\nexit"),
        &uprobe(),
        9,
        "invalid access to map key, key_size=4 off=4 size=4",
    );
}

#[test]
fn open_coded_iterators_are_acquired_iterated_and_destroyed() {
    use userbpf_vm::kfunc::{
        BPF_ITER_NUM_DESTROY as DESTROY, BPF_ITER_NUM_NEW as NEW, BPF_ITER_NUM_NEXT as NEXT,
    };
    use userbpf_vm::Insn;
    let env = env(ProgramType::Syscall, Context::Syscall);
    let kfunc = |id: i32| Insn::new(0x85, 0, 2, 0, id);
    let prog = |insns: Vec<Insn>| Program::new("t", insns).unwrap();
    let fp_minus_8 = [Insn::new(0xbf, 1, 10, 0, 0), Insn::new(0x07, 1, 0, 0, -8)];
    let mut sum = vec![];
    // bpf_iter_num_new(&it, 0, 10); while ((v = next(&it))) r6 += *v; destroy(&it)
    sum.extend(fp_minus_8);
    sum.extend([
        Insn::new(0xb7, 2, 0, 0, 0),
        Insn::new(0xb7, 3, 0, 0, 10),
        kfunc(NEW),
    ]);
    sum.push(Insn::new(0xb7, 6, 0, 0, 0)); // r6 = 0
    sum.extend(fp_minus_8); // loop: 6
    sum.push(kfunc(NEXT)); // 8
    sum.push(Insn::new(0x15, 0, 0, 3, 0)); // if r0 == 0 goto +3
    sum.push(Insn::new(0x61, 1, 0, 0, 0)); // r1 = *(u32 *)(r0 + 0)
    sum.push(Insn::new(0x0f, 6, 1, 0, 0)); // r6 += r1
    sum.push(Insn::new(0x05, 0, 0, -7, 0)); // goto loop
    let tail = |destroy: bool| {
        let mut t = vec![];
        if destroy {
            t.extend(fp_minus_8);
            t.push(kfunc(DESTROY));
        }
        t.extend([Insn::new(0xbf, 0, 6, 0, 0), Insn::new(0x95, 0, 0, 0, 0)]);
        t
    };
    let ok = [sum.clone(), tail(true)].concat();
    check(&prog(ok), &env, &Options::default(), None).unwrap();
    let leak = [sum.clone(), tail(false)].concat();
    let e = check(&prog(leak), &env, &Options::default(), None).unwrap_err();
    assert_eq!(e.message, "Unreleased reference id=1 alloc_insn=4");
    // next() on a slot that holds no iterator.
    let mut bare = fp_minus_8.to_vec();
    bare.extend([
        kfunc(NEXT),
        Insn::new(0xb7, 0, 0, 0, 0),
        Insn::new(0x95, 0, 0, 0, 0),
    ]);
    let e = check(&prog(bare), &env, &Options::default(), None).unwrap_err();
    assert!(
        e.message
            .contains("expected an initialized iter_num as arg #1"),
        "{}",
        e.message
    );
    // Its bounds are numbers (an address there would be counted out).
    let mut bounds = fp_minus_8.to_vec();
    bounds.extend([
        Insn::new(0xb7, 2, 0, 0, 0),
        Insn::new(0xbf, 3, 10, 0, 0), // r3 = r10
        kfunc(NEW),
        Insn::new(0xb7, 0, 0, 0, 0),
        Insn::new(0x95, 0, 0, 0, 0),
    ]);
    let e = check(&prog(bounds), &env, &Options::default(), None).unwrap_err();
    assert_eq!((e.pc, e.message.as_str()), (4, "R3 is not a scalar"));
    // The iterator's bytes are not the program's to read.
    let mut peek = fp_minus_8.to_vec();
    peek.extend([
        Insn::new(0xb7, 2, 0, 0, 0),
        Insn::new(0xb7, 3, 0, 0, 10),
        kfunc(NEW),
    ]);
    peek.extend([Insn::new(0x79, 0, 10, -8, 0), Insn::new(0x95, 0, 0, 0, 0)]);
    let e = check(&prog(peek), &env, &Options::default(), None).unwrap_err();
    assert!(
        e.message.contains("holds an iterator (iter_num)"),
        "{}",
        e.message
    );
}

#[test]
fn variable_offset_stack_accesses_are_aligned_and_initialised() {
    // r2 = fp-32 + (x & 8): 8-byte aligned either way.
    let var = |mask: i32| {
        format!(
            "*(u64 *)(r10 - 32) = 0\n*(u64 *)(r10 - 24) = 0\n*(u64 *)(r10 - 16) = 0\nr1 = *(u32 *)(r1 + 12)\nr1 &= {mask}\nr2 = r10\nr2 += -32\nr2 += r1\nr0 = *(u64 *)(r2 + 0)\nexit"
        )
    };
    accepts(&var(8), &xdp());
    // (x & 12) may be 4: misaligned for 8 bytes.
    rejects(&var(12), &xdp(), 8, "misaligned stack access");
    // (x & 16) reaches fp-16..-8, which is initialised; (x & 24) reaches
    // fp-8, which is not.
    accepts(&var(16), &xdp());
    rejects(
        &var(24),
        &xdp(),
        8,
        "invalid variable-offset read from stack",
    );
}

#[test]
fn a_variable_context_offset_goes_to_any_value_helpers_but_is_never_dereferenced() {
    // usdt.bpf.h's bpf_usdt_arg(): bpf_probe_read_kernel(&v, 8, ctx + off)
    // with `off` a bounded number from a map.
    let pre = "
        r6 = r1
        *(u64 *)(r10 - 8) = 0
        r2 = *(u32 *)(r1 + 112)
        r2 &= 0xf8
        r6 += r2
    ";
    accepts(
        &format!(
            "{pre}
            r1 = r10
            r1 += -8
            r2 = 8
            r3 = r6
            call bpf_probe_read_kernel
            r0 = 0
            exit"
        ),
        &uprobe(),
    );
    rejects(
        &format!("{pre}\nr0 = *(u64 *)(r6 + 0)\nexit"),
        &uprobe(),
        5,
        "variable ctx access",
    );
    // Nor as the context of a helper that takes one.
    rejects(
        &format!("{pre}\nr1 = r6\nr2 = 0\ncall bpf_override_return\nr0 = 0\nexit"),
        &uprobe(),
        7,
        "ctx",
    );
}

fn ctx_use(src: &str) -> (u64, bool) {
    let code = assemble(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let p = Program::new("t", code).unwrap();
    let r = check(&p, &uprobe(), &Options::default(), None)
        .unwrap_or_else(|e| panic!("rejected: {e}\n{src}"));
    (r.stats.ctx_words, r.stats.ctx_escapes)
}

/// The context words a program reads are reported exactly (struct
/// pt_regs: di at 112, si at 104, ip at 128), on every path and through
/// a copy and a spill of the pointer's register; a context pointer
/// passed to a helper or stored to memory escapes.
#[test]
fn the_context_words_read_and_escapes_are_reported() {
    let words = |offs: &[u64]| offs.iter().fold(0u64, |m, o| m | 1 << (o / 8));
    assert_eq!(
        ctx_use("r0 = *(u64 *)(r1 + 112)\nexit"),
        (words(&[112]), false)
    );
    assert_eq!(
        ctx_use(
            "r6 = r1\nr2 = *(u32 *)(r6 + 104)\nif r2 > 5 goto +2\nr0 = *(u64 *)(r6 + 128)\nexit\nr0 = *(u16 *)(r1 + 112)\nexit"
        ),
        (words(&[104, 112, 128]), false)
    );
    assert_eq!(
        ctx_use("r0 = 0\nr1 = *(u64 *)(r1 + 80)\nexit"),
        (words(&[80]), false),
        "a load through the pointer's own register"
    );
    // Helpers: any argument that is the context.
    let (_, escapes) = ctx_use("r2 = r10\nr2 += -8\nr3 = 8\nr4 = 0\ncall 67\nr0 = 0\nexit");
    assert!(escapes, "bpf_get_stack(ctx, ...)");
    let (_, escapes) = ctx_use("r6 = r1\ncall 5\nr0 = *(u64 *)(r6 + 112)\nexit");
    assert!(
        !escapes,
        "the context left in r1 for an argumentless helper"
    );
    let (_, escapes) =
        ctx_use("r3 = r1\nr3 += 112\nr1 = r10\nr1 += -8\nr2 = 8\ncall 113\nr0 = 0\nexit");
    assert!(escapes, "probe_read_kernel from a context address");
    // Stores of the pointer.
    let (_, escapes) =
        ctx_use("*(u64 *)(r10 - 8) = r1\nr1 = *(u64 *)(r10 - 8)\nr0 = *(u64 *)(r1 + 112)\nexit");
    assert!(escapes, "a spill of the context pointer");
}

#[test]
fn dynptrs_are_opaque_stack_objects_released_on_every_path() {
    const RESERVE: &str =
        "r1 = map[idx:1]\nr2 = 16\nr3 = 0\nr4 = r10\nr4 += -16\ncall bpf_ringbuf_reserve_dynptr\n";
    const SUBMIT: &str = "r1 = r10\nr1 += -16\nr2 = 0\ncall bpf_ringbuf_submit_dynptr\n";
    accepts(&format!("{RESERVE}{SUBMIT}r0 = 0\nexit"), &uprobe());
    // A failed reservation still holds the dynptr: it must be released.
    rejects(
        &format!("{RESERVE}r0 = 0\nexit"),
        &uprobe(),
        8,
        "Unreleased reference",
    );
    rejects(
        &format!("{RESERVE}r0 = *(u64 *)(r10 - 8)\n{SUBMIT}r0 = 0\nexit"),
        &uprobe(),
        7,
        "invalid read from stack off -8+0 size 8",
    );
    rejects(
        &format!("{RESERVE}*(u32 *)(r10 - 12) = 0\n{SUBMIT}r0 = 0\nexit"),
        &uprobe(),
        7,
        "cannot overwrite referenced dynptr",
    );
    // Submitted, it is gone; so are its slices.
    rejects(
        &format!("{RESERVE}{SUBMIT}{SUBMIT}r0 = 0\nexit"),
        &uprobe(),
        14,
        "Expected an initialized dynptr as arg #0",
    );
    rejects(
        &format!(
            "{RESERVE}r1 = r10\nr1 += -16\nr2 = 0\nr3 = 8\ncall bpf_dynptr_data\nr6 = r0\n{SUBMIT}if r6 == 0 goto +1\nr0 = *(u64 *)(r6 + 0)\nr0 = 0\nexit"
        ),
        &uprobe(),
        17,
        "R6 !read_ok",
    );
    // A helper may not write over a referenced dynptr either.
    rejects(
        &format!("{RESERVE}r1 = r10\nr1 += -16\nr2 = 8\nr3 = 0\ncall bpf_probe_read_user\n{SUBMIT}r0 = 0\nexit"),
        &uprobe(),
        11,
        "potential write to dynptr at off=-16 disallowed",
    );
}

/// The byte offset of field `name` of the running kernel's `struct
/// task_struct`, or `None` (with a note) when the kernel exposes no BTF.
fn task_field(name: &str) -> Option<u32> {
    kernel_field("task_struct", name)
}

/// The byte offset of field `name` of the running kernel's `struct
/// structure`, or `None` (with a note) when the kernel exposes no BTF.
fn kernel_field(structure: &str, name: &str) -> Option<u32> {
    use userbpf_vm::object::{btf::Kind, TargetBtf, VMLINUX_BTF};
    let loaded = TargetBtf::System.load().ok()?;
    if loaded.origin != VMLINUX_BTF {
        println!("SKIP: no kernel BTF ({VMLINUX_BTF})");
        return None;
    }
    let t = loaded
        .btf
        .by_name(structure)
        .into_iter()
        .filter_map(|id| loaded.btf.get(id))
        .find(|t| t.kind == Kind::Struct)?;
    t.members
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.offset / 8)
}

/// `bpf_get_current_task_btf` gives a trusted pointer to the kernel's
/// `struct task_struct`: read at its fields, never written, never at a
/// negative or variable offset, a pointer field read whole; the pointers
/// read from it are RCU-protected or plain, and may be 0.
#[test]
fn kernel_structures_are_read_at_their_fields() {
    let (Some(pid), Some(parent)) = (task_field("pid"), task_field("real_parent")) else {
        return;
    };
    let kprobe = uprobe();
    let task = "call bpf_get_current_task_btf\n";
    accepts(
        &format!("{task}r1 = *(u32 *)(r0 + {pid})\nr0 = 0\nexit"),
        &kprobe,
    );
    // The parent's pid, through the RCU-protected real_parent.
    accepts(
        &format!("{task}r1 = *(u64 *)(r0 + {parent})\nr0 = *(u32 *)(r1 + {pid})\nexit"),
        &kprobe,
    );
    rejects(
        &format!("{task}r1 = *(u64 *)(r0 - 8)\nr0 = 0\nexit"),
        &kprobe,
        1,
        "R0 is ptr_task_struct invalid negative access: off=-8",
    );
    rejects(
        &format!("{task}r1 = 0\n*(u32 *)(r0 + {pid}) = r1\nr0 = 0\nexit"),
        &kprobe,
        2,
        "only read is supported",
    );
    rejects(
        &format!("r6 = r1\n{task}r1 = *(u64 *)(r6 + 0)\nr1 &= 8\nr0 += r1\nr1 = *(u32 *)(r0 + {pid})\nr0 = 0\nexit"),
        &kprobe,
        5,
        "R0 is ptr_task_struct invalid variable offset: off=",
    );
    rejects(
        &format!("{task}r1 = *(u32 *)(r0 + {})\nr0 = 0\nexit", parent + 4),
        &kprobe,
        1,
        &format!(
            "cannot access ptr member real_parent with moff {parent} in struct task_struct with off {} size 4",
            parent + 4
        ),
    );
    rejects(
        &format!("{task}r1 = 1\nlock *(u32 *)(r0 + {pid}) += w1\nr0 = 0\nexit"),
        &kprobe,
        2,
        "only read is supported",
    );
    // A kernel address is no return value.
    rejects(
        &format!("{task}exit"),
        &kprobe,
        1,
        "R0 leaks addr as return value",
    );
    // The trusted task is never 0: the branch returning it is dead. Its
    // parent may be 0 without being NULL-checked, so both branches are
    // explored and the second returns the address.
    let zero_check = |load: &str| format!("{task}{load}if r0 == 0 goto +2\nr0 = 0\nexit\nexit");
    accepts(&zero_check(""), &kprobe);
    rejects(
        &zero_check(&format!("r0 = *(u64 *)(r0 + {parent})\n")),
        &kprobe,
        5,
        "R0 leaks addr as return value",
    );
    // A kernel address may be stored as a number (into a map value, or
    // as a key read from the stack), as the kernel allows root; a user
    // space address (the stack's) may not.
    let lookup = "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:3]\ncall bpf_map_lookup_elem\nif r0 == 0 goto +1\n";
    accepts(
        &format!("{task}r6 = r0\n{lookup}*(u64 *)(r0 + 0) = r6\nr0 = 0\nexit"),
        &kprobe,
    );
    rejects(
        &format!("{lookup}*(u64 *)(r0 + 0) = r10\nr0 = 0\nexit"),
        &kprobe,
        7,
        "R10 leaks addr into map",
    );
    accepts(
        &format!("{task}*(u64 *)(r10 - 8) = r0\nr2 = r10\nr2 += -8\nr1 = map[idx:0]\ncall bpf_map_lookup_elem\nr0 = 0\nexit"),
        &kprobe,
    );
    // Reads of kernel memory are the kernel's alone: `verify`, which
    // vouches for a program to run in user space, refuses them (at the
    // first read), while the verdict (`check`) is the kernel's.
    let read_pid = format!("{task}r1 = *(u32 *)(r0 + {pid})\nr0 = 0\nexit");
    let program = Program::new("t", assemble(&read_pid).unwrap()).unwrap();
    let refused = userbpf_verifier::verify(program, &kprobe, &Options::default())
        .expect_err("refused for user space");
    assert_eq!(refused.pc, 1);
    assert!(
        refused.message.contains("reads kernel memory"),
        "{}",
        refused.message
    );
    let program = Program::new("t", assemble(&format!("{task}r0 = 0\nexit")).unwrap()).unwrap();
    assert!(userbpf_verifier::verify(program, &kprobe, &Options::default()).is_ok());
    // The pointer goes to bpf_probe_read_kernel as an address.
    accepts(
        &format!("{task}r3 = r0\nr3 += {pid}\nr1 = r10\nr1 += -8\nr2 = 4\ncall bpf_probe_read_kernel\nr0 = 0\nexit"),
        &kprobe,
    );
}

/// A legacy packet load may end the program, which a callback cannot:
/// refused inside `bpf_loop`'s callback (and in what it calls), allowed
/// in the program itself.
#[test]
fn legacy_packet_loads_stay_out_of_callbacks() {
    let socket = socket();
    accepts("r6 = r1\nr0 = *(u32 *)skb[0]\nr0 = 0\nexit", &socket);
    let in_callback = |body: &str| {
        format!("*(u64 *)(r10 - 8) = r1\nr1 = 1\nr2 = func[cb]\nr3 = r10\nr3 += -8\nr4 = 0\ncall bpf_loop\nr0 = 0\nexit\ncb:\nr6 = *(u64 *)(r2 + 0)\n{body}")
    };
    rejects(
        &in_callback("r0 = *(u32 *)skb[0]\nr0 = 0\nexit"),
        &socket,
        11,
        "cannot use BPF_LD_[ABS|IND] within callback",
    );
    rejects(
        &in_callback("call pc+2\nr0 = 0\nexit\nr0 = *(u32 *)skb[0]\nr0 = 0\nexit"),
        &socket,
        14,
        "cannot use BPF_LD_[ABS|IND] within callback",
    );
    // A global function with such a load, g(skb) at `start`, verified on
    // its own: refused where a callback calls it, allowed elsewhere.
    let global = |start: usize| {
        with_global(
            socket.clone(),
            "g",
            start,
            &[("skb", record("__sk_buff", 192), &[])],
        )
    };
    let g = "r6 = r1\nr0 = *(u32 *)skb[0]\nr0 = 0\nexit";
    rejects(
        &in_callback(&format!("r1 = r6\ncall pc+2\nr0 = 0\nexit\n{g}")),
        &global(15),
        12,
        "cannot use BPF_LD_[ABS|IND] within callback",
    );
    accepts(&format!("call pc+2\nr0 = 0\nexit\n{g}"), &global(3));
}

/// A tracing program attached to a kernel function or tracepoint reads
/// its arguments as the kernel's BTF types them (`btf_ctx_access`):
/// pointers to structures as kernel pointers, other arguments as
/// numbers, at 8-byte slots, the return value after them for `fexit`; a
/// function the kernel's BTF does not have (user space's) gives numbers.
#[test]
fn tracing_arguments_follow_the_kernels_types() {
    use userbpf_vm::object::AttachType;
    if task_field("pid").is_none() {
        return;
    }
    let tracing = |attach: AttachType, name: &str| Env {
        attach_type: Some(attach),
        attach_btf_name: Some(name.to_string()),
        non_scalar_returns: Vec::new(),
        global_functions: Vec::new(),
        ..env(ProgramType::Tracing, Context::RawTracepoint)
    };
    // ssize_t vfs_read(struct file *file, char *buf, size_t count, loff_t *pos)
    let fentry = tracing(AttachType::TraceFentry, "vfs_read");
    let fexit = tracing(AttachType::TraceFexit, "vfs_read");
    accepts(
        "r2 = *(u64 *)(r1 + 0)\nr0 = *(u32 *)(r2 + 0)\nr0 = 0\nexit",
        &fentry,
    );
    rejects(
        "r2 = *(u64 *)(r1 + 8)\nr0 = *(u8 *)(r2 + 0)\nr0 = 0\nexit",
        &fentry,
        1,
        "R2 invalid mem access 'scalar'",
    );
    accepts("r0 = *(u32 *)(r1 + 16)\nr0 = 0\nexit", &fentry);
    rejects(
        "r0 = *(u32 *)(r1 + 0)\nr0 = 0\nexit",
        &fentry,
        0,
        "func 'vfs_read' size 4 must be 8\ninvalid bpf_context access off=0 size=4",
    );
    rejects(
        "r0 = *(u8 *)(r1 + 3)\nr0 = 0\nexit",
        &fentry,
        0,
        "func 'vfs_read' offset 3 is not multiple of 8",
    );
    rejects(
        "r0 = *(u64 *)(r1 + 32)\nr0 = 0\nexit",
        &fentry,
        0,
        "func 'vfs_read' doesn't have 5-th argument",
    );
    accepts("r0 = *(u64 *)(r1 + 32)\nr0 = 0\nexit", &fexit);
    rejects(
        "r0 = *(u64 *)(r1 + 40)\nr0 = 0\nexit",
        &fexit,
        0,
        "func 'vfs_read' doesn't have 6-th argument",
    );
    rejects(
        "r1 = 0\n*(u64 *)(r1 + 0) = r1\nr0 = 0\nexit",
        &fentry,
        1,
        "R1 invalid mem access 'scalar'",
    );
    // sched_switch(bool preempt, struct task_struct *prev, ...): a
    // tracepoint's arguments follow its hidden first one, and are trusted.
    let tp = tracing(AttachType::TraceRawTp, "sched_switch");
    accepts(
        "r0 = *(u8 *)(r1 + 0)\nr2 = *(u64 *)(r1 + 8)\nr0 = *(u32 *)(r2 + 0)\nr0 = 0\nexit",
        &tp,
    );
    // bpf_get_socket_cookie takes a kernel socket (or NULL) in tracing
    // programs: tcp_destroy_sock(const struct sock *sk).
    let sock_tp = tracing(AttachType::TraceRawTp, "tcp_destroy_sock");
    accepts(
        "r1 = *(u64 *)(r1 + 0)\ncall bpf_get_socket_cookie\nr0 = 0\nexit",
        &sock_tp,
    );
    accepts("r1 = 0\ncall bpf_get_socket_cookie\nr0 = 0\nexit", &sock_tp);
    rejects(
        "r1 = *(u64 *)(r1 + 8)\ncall bpf_get_socket_cookie\nr0 = 0\nexit",
        &tp,
        1,
        "R1 is of type task_struct but sock_common is expected",
    );
    // A function the kernel does not have: its arguments are numbers.
    let user = tracing(AttachType::TraceFentry, "userbpf_demo_add");
    rejects(
        "r2 = *(u64 *)(r1 + 0)\nr0 = *(u32 *)(r2 + 0)\nr0 = 0\nexit",
        &user,
        1,
        "R2 invalid mem access 'scalar'",
    );
    accepts("r0 = *(u64 *)(r1 + 88)\nr0 = 0\nexit", &user);
}

/// A branch decided by a read-only map's contents (a `.kconfig` value)
/// is explored one way when the program fails otherwise, as the kernel
/// folds frozen maps; the verdict is then the kernel's, and `verify`
/// refuses the program for user space, where the map is not frozen.
#[test]
fn read_only_map_values_decide_branches_as_the_kernel_does() {
    let config = |read_only: bool| MapInfo {
        read_only,
        direct_value: true,
        contents: Some(1u64.to_le_bytes().to_vec()),
        ..MapInfo::new(".kconfig", 2, 4, 8, 1)
    };
    let with = |m: MapInfo| Env {
        maps: vec![m],
        ..uprobe()
    };
    // if (CONFIG == 0) read past the stack.
    let text = "r2 = map[idx:0][0]+0\nr3 = *(u64 *)(r2 + 0)\nif r3 != 0 goto +2\nr0 = *(u64 *)(r10 + 8)\nexit\nr0 = 0\nexit";
    let folded = run(text, &with(config(true)));
    assert!(folded.is_ok(), "{folded:?}");
    let program = Program::new("t", assemble(text).unwrap()).unwrap();
    let refused = userbpf_verifier::verify(program, &with(config(true)), &Options::default())
        .expect_err("refused for user space");
    assert!(
        refused.message.contains("read-only maps"),
        "{}",
        refused.message
    );
    rejects(text, &with(config(false)), 4, "invalid read from stack");
}

#[test]
fn packet_loads_and_tail_calls_only_in_subprograms_returning_a_scalar() {
    let ld_abs = "call pc+2\nr0 = 0\nexit\nr6 = r1\nr0 = *(u32 *)skb[0]\nr0 = 1\nexit";
    let tail_call =
        "call pc+2\nr0 = 0\nexit\nr2 = map[idx:4]\nr3 = 0\ncall bpf_tail_call\nr0 = 1\nexit";
    // Subprograms whose BTF says nothing, or says they return an int.
    accepts(ld_abs, &socket());
    accepts(tail_call, &socket());
    // `void` (or a pointer), as the object's BTF tells: the kernel's
    // `check_btf_func` rules.
    let void_sub = Env {
        non_scalar_returns: vec![3],
        ..socket()
    };
    rejects(
        ld_abs,
        &void_sub,
        4,
        "LD_ABS is only allowed in functions that return 'int'.",
    );
    rejects(
        tail_call,
        &void_sub,
        6,
        "tail_call is only allowed in functions that return 'int'.",
    );
    // The entry function is not concerned.
    let void_entry = Env {
        non_scalar_returns: vec![0],
        ..socket()
    };
    accepts(ld_abs, &void_entry);
}

#[test]
fn dead_code_is_refused() {
    rejects(
        "r0 = 0\nexit\nr0 = 1\nexit",
        &uprobe(),
        2,
        "unreachable insn 2",
    );
    rejects(
        "r0 = 0\ngoto +1\nr0 = 1\nexit",
        &uprobe(),
        2,
        "unreachable insn 2",
    );
    // A function only a function address reaches is reached.
    accepts(
        "r1 = 1\nr2 = func[cb]\nr3 = 0\nr4 = 0\ncall bpf_loop\nr0 = 0\nexit\ncb:\nr0 = 0\nexit",
        &uprobe(),
    );
}

#[test]
fn global_functions_are_verified_on_their_own_and_their_calls_checked() {
    // f(p) at pc 6, a pointer to 8 bytes; the entry passes its stack.
    let global = |ty: ParamType, tags: &[&str]| with_global(socket(), "f", 6, &[("p", ty, tags)]);
    let deref = "r2 = 0\n*(u64 *)(r10 - 8) = r2\nr1 = r10\nr1 += -8\ncall pc+1\nexit\n\
                 r0 = *(u64 *)(r1 + 0)\nexit";
    // Static: safe for this caller.
    accepts(deref, &socket());
    // Global: verified for any pointer to 8 bytes, NULL included.
    rejects(
        deref,
        &global(record("s", 8), &[]),
        6,
        "R1 invalid mem access 'mem_or_null'",
    );
    accepts(deref, &global(record("s", 8), &["nonnull"]));
    // The caller's memory must hold what the prototype says.
    rejects(
        deref,
        &global(record("s", 16), &["nonnull"]),
        4,
        "invalid read from stack R1 off=-8 size=16\nCaller passes invalid args into func#1 ('f')",
    );
    // A number for a pointer, the context for a number.
    rejects(
        deref,
        &global(ParamType::Scalar, &[]),
        4,
        "R1 is not a scalar\nCaller passes invalid args into func#1 ('f')",
    );
    // The context, by its structure's name, unmodified.
    let ctx = "r2 = 0\nr2 = 0\nr2 = 0\nr2 = 0\ncall pc+1\nexit\nr0 = *(u32 *)(r1 + 0)\nexit";
    accepts(ctx, &global(record("__sk_buff", 192), &[]));
    rejects(
        ctx,
        &global(record("s", 4), &[]),
        4,
        "R1 type=ctx expected=fp\nCaller passes invalid args into func#1 ('f')",
    );
    // What it returns is any number to the caller.
    let index = "r2 = 0\n*(u64 *)(r10 - 8) = r2\ncall pc+5\nr1 = r10\nr1 += -8\n\
                 r1 += r0\nr0 = *(u8 *)(r1 + 0)\nexit\nr0 = 3\nexit";
    let returns = |params: &[(&str, ParamType, &[&str])]| with_global(socket(), "f", 8, params);
    accepts(index, &socket());
    rejects(
        index,
        &returns(&[]),
        5,
        "math between fp pointer and register with unbounded min value is not allowed",
    );
    // Global functions return a scalar; dynptr arguments are not taken.
    let mut void = returns(&[]);
    void.global_functions[0].sig.ret = FuncReturn::Void;
    rejects(
        index,
        &void,
        2,
        "Global function f() doesn't return scalar. Only those are supported.\n\
         Caller passes invalid args into func#1 ('f')",
    );
    // The log says so, in the kernel's words.
    let p = Program::new("t", assemble(deref).unwrap()).unwrap();
    let opts = Options {
        log_level: 1,
        ..Options::default()
    };
    let report = check(&p, &global(record("s", 8), &["nonnull"]), &opts, None).unwrap();
    assert!(
        report
            .log
            .contains("Func#1 ('f') is global and assumed valid.")
            && report.log.contains("Validating f() func#1..."),
        "{}",
        report.log
    );
    let err = run(deref, &global(record("bpf_dynptr", 16), &[])).unwrap_err();
    assert_eq!(err.pc, 4);
    assert!(err.message.contains("does not take dynptrs"), "{err}");
    let err = run(deref, &global(record("s", 8), &["arena"])).unwrap_err();
    assert!(err.message.contains("tagged arg:arena"), "{err}");
}

#[test]
fn a_global_function_is_verified_once_however_often_it_is_called() {
    // 50 calls of f(x), whose loop runs 1,000 times whatever x is.
    const CALLS: usize = 50;
    let start = CALLS * 2 + 2;
    let mut src = String::new();
    for i in 0..CALLS {
        let pc = i * 2 + 1;
        src.push_str(&format!("r1 = {i}\ncall pc+{}\n", start - pc - 1));
    }
    src.push_str("r0 = 0\nexit\nr0 = 0\nr0 += 1\nif r0 < 1000 goto -2\nexit");
    let socket = socket();
    // Static, f is explored at every call; global, once, as the kernel
    // does it.
    let once = accepts(
        "r1 = 0\ncall pc+2\nr0 = 0\nexit\nr0 = 0\nr0 += 1\nif r0 < 1000 goto -2\nexit",
        &socket,
    );
    let static_calls = accepts(&src, &socket);
    let global_calls = accepts(
        &src,
        &with_global(socket.clone(), "f", start, &[("x", ParamType::Scalar, &[])]),
    );
    assert!(
        static_calls > (CALLS as u64 - 1) * once,
        "static: {static_calls} processed, one call: {once}"
    );
    assert!(
        global_calls < once + 4 * CALLS as u64,
        "global: {global_calls} processed, one call: {once}"
    );

    // A call that passes the caller's stack is still explored with it:
    // what the function writes there is written, what it reads must be.
    let out = ParamType::Pointer {
        target: "u64".to_string(),
        typedefs: Vec::new(),
        record: None,
        size: Some(8),
    };
    let env = with_global(socket, "f", 6, &[("p", out, &["nonnull"])]);
    // f(p) { *p = 1; }, then the caller reads what f wrote.
    accepts(
        "r1 = r10\nr1 += -8\ncall pc+3\nr0 = *(u64 *)(r10 - 8)\nr0 = 0\nexit\n\
         r2 = 1\n*(u64 *)(r1 + 0) = r2\nr0 = 0\nexit",
        &env,
    );
    // f(p) { return *p; } on stack the caller never wrote.
    rejects(
        "r1 = r10\nr1 += -8\ncall pc+3\nr0 = 0\nr0 = 0\nexit\n\
         r0 = *(u64 *)(r1 + 0)\nr0 = 0\nexit",
        &env,
        6,
        "invalid read from stack",
    );
}

#[test]
fn map_helpers_take_only_the_maps_the_kernel_lets_them_take() {
    // An inner map is a map only after its lookup's null check.
    let mut with_inner = socket();
    with_inner.maps.push(MapInfo {
        inner: Some(3),
        ..MapInfo::new("outer", 12, 4, 4, 2)
    });
    let outer = with_inner.maps.len() - 1;
    let lookup_inner = |check: &str| {
        format!(
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nr1 = map[idx:{outer}]\n\
             call bpf_map_lookup_elem\n{check}r1 = r0\nr2 = r10\nr2 += -4\n\
             call bpf_map_lookup_elem\nr0 = 0\nexit"
        )
    };
    accepts(&lookup_inner("if r0 == 0 goto +4\n"), &with_inner);
    rejects(
        &lookup_inner(""),
        &with_inner,
        10,
        "R1 type=map_value_or_null expected=map_ptr",
    );
    // A map of maps is only looked up (`check_map_func_compatibility`).
    rejects(
        &format!(
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nr1 = map[idx:{outer}]\n\
             call bpf_map_delete_elem\nr0 = 0\nexit"
        ),
        &with_inner,
        6,
        "cannot pass map_type 12 into func bpf_map_delete_elem#3",
    );
    // Socket storage serves bpf_sk_storage_get/delete only.
    let mut storage = socket();
    storage.maps.push(MapInfo::new("sk_storage", 24, 4, 8, 0));
    let sk_storage = storage.maps.len() - 1;
    rejects(
        &format!(
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nr1 = map[idx:{sk_storage}]\n\
             call bpf_map_lookup_elem\nr0 = 0\nexit"
        ),
        &storage,
        6,
        "cannot pass map_type 24 into func bpf_map_lookup_elem#1",
    );
}

#[test]
fn packet_pointers_are_forgotten_after_a_tail_call() {
    // r7 = data, proven to hold 14 bytes before the exit at `skip`.
    let packet = |skip: usize| {
        format!(
            "r6 = r1\nr7 = *(u32 *)(r6 + 76)\nr8 = *(u32 *)(r6 + 80)\nr9 = r7\nr9 += 14\n\
             r0 = 0\nif r9 > r8 goto +{skip}\n"
        )
    };
    let read = "r0 = *(u8 *)(r7 + 0)\nexit";
    accepts(&format!("{}{read}", packet(1)), &tc());
    // A tail call that falls through: the kernel counts bpf_tail_call
    // among the helpers that change the packet.
    rejects(
        &format!(
            "{}r1 = r6\nr2 = map[idx:4]\nr3 = 0\ncall bpf_tail_call\n{read}",
            packet(6)
        ),
        &tc(),
        12,
        "R7 !read_ok",
    );
    // From a subprogram it returns to the subprogram's caller, after
    // whatever the target did to the packet.
    rejects(
        &format!(
            "{}r1 = r6\ncall pc+2\n{read}\nr2 = map[idx:4]\nr3 = 0\ncall bpf_tail_call\nr0 = 0\nexit",
            packet(3)
        ),
        &tc(),
        9,
        "R7 !read_ok",
    );
}

#[test]
fn packet_pointer_fields_are_not_read_sign_extending() {
    accepts("r2 = *(u32 *)(r1 + 76)\nr0 = 0\nexit", &tc());
    rejects(
        "r2 = *(s32 *)(r1 + 76)\nr0 = 0\nexit",
        &tc(),
        0,
        "invalid bpf_context access off=76 size=4",
    );
    rejects(
        "r2 = *(s32 *)(r1 + 4)\nr0 = 0\nexit",
        &xdp(),
        0,
        "invalid bpf_context access off=4 size=4",
    );
    // Other fields may be (`mark`).
    accepts("r2 = *(s32 *)(r1 + 8)\nr0 = 0\nexit", &tc());
}

/// A TC classifier (`__sk_buff`: `data` at 76, `data_end` at 80).
fn tc() -> Env {
    env(
        ProgramType::SchedCls,
        Context::SkBuff(userbpf_verifier::SkbKind::Tc),
    )
}

#[test]
fn bpf_snprintf_measures_with_a_null_buffer_of_size_zero() {
    let call = |buf: &str, size: u32| {
        format!(
            "{buf}r2 = {size}\nr3 = map[idx:2][0]+3\nr4 = 0\nr5 = 0\ncall bpf_snprintf\nr0 = 0\nexit"
        )
    };
    accepts(&call("r1 = 0\n", 0), &uprobe());
    accepts(
        &call("*(u64 *)(r10 - 8) = r1\nr1 = r10\nr1 += -8\n", 8),
        &uprobe(),
    );
    // A NULL buffer to write into.
    rejects(
        &call("r1 = 0\n", 8),
        &uprobe(),
        6,
        "R1 type=scalar expected=fp",
    );
    // bpf_probe_read_user's destination is never NULL.
    rejects(
        "r1 = 0\nr2 = 0\nr3 = 0\ncall bpf_probe_read_user\nr0 = 0\nexit",
        &uprobe(),
        3,
        "R1 type=scalar expected=fp",
    );
}

#[test]
fn bind_hooks_may_return_up_to_3_and_connect_hooks_up_to_1() {
    use userbpf_vm::object::AttachType as A;
    let sock_addr = |attach: A| Env {
        attach_type: Some(attach),
        ..env(
            ProgramType::CgroupSockAddr,
            Context::SockAddr {
                family: userbpf_verifier::AddrFamily::V4,
                sendmsg: false,
            },
        )
    };
    // 3: allow, and skip the CAP_NET_BIND_SERVICE check.
    accepts("r0 = 3\nexit", &sock_addr(A::CgroupInet4Bind));
    rejects(
        "r0 = 4\nexit",
        &sock_addr(A::CgroupInet4Bind),
        1,
        "should have been in [0, 3]",
    );
    rejects(
        "r0 = 3\nexit",
        &sock_addr(A::CgroupInet4Connect),
        1,
        "should have been in [0, 1]",
    );
}

#[test]
fn only_helpers_marked_pkt_access_take_packet_memory() {
    // r7 = data with 12 bytes proven (an IPv4 tuple), r6 = the context.
    let call = |helper: &str, args: &str| {
        format!(
            "r6 = r1\nr7 = *(u32 *)(r6 + 76)\nr8 = *(u32 *)(r6 + 80)\nr9 = r7\nr9 += 12\nr0 = 0\n\
             if r9 > r8 goto +10\nr1 = r6\nr2 = r7\n{args}call {helper}\n\
             if r0 == 0 goto +2\nr1 = r0\ncall bpf_sk_release\nr0 = 0\nexit"
        )
    };
    // The socket lookups read their tuple from the packet.
    accepts(
        &call("bpf_sk_lookup_tcp", "r3 = 12\nr4 = 0\nr5 = 0\n"),
        &tc(),
    );
    accepts(
        &call("bpf_skc_lookup_tcp", "r3 = 12\nr4 = 0\nr5 = 0\n"),
        &tc(),
    );
    // bpf_perf_event_output does not.
    rejects(
        "r6 = r1\nr7 = *(u32 *)(r6 + 76)\nr8 = *(u32 *)(r6 + 80)\nr9 = r7\nr9 += 12\nr0 = 0\n\
             if r9 > r8 goto +7\nr1 = r6\nr2 = map[idx:0]\nr3 = 0\nr4 = r7\nr5 = 12\n\
             call bpf_perf_event_output\nr0 = 0\nexit",
        &tc(),
        13,
        "helper access to the packet is not allowed",
    );
}

/// `n` calls of a function that writes 1 or 2 through the pointer it is
/// given (as libbpf's `bpf_usdt_arg` writes an argument),
/// each result kept in a slot of its own, then all stored in a map value.
fn writer_calls(n: usize) -> String {
    // The main function: 1 + 5 per call + 7 + 2 per store + 2 pcs.
    let writer = 10 + 7 * n;
    let mut src = String::from("r6 = r1\n");
    for k in 0..n {
        let call = 3 + 5 * k;
        src += &format!(
            "r1 = r10\nr1 += -8\ncall pc+{}\nr1 = *(u64 *)(r10 - 8)\n*(u64 *)(r10 - {}) = r1\n",
            writer - call - 1,
            16 + 8 * k
        );
    }
    src += &format!(
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:3]\ncall bpf_map_lookup_elem\n\
         if r0 == 0 goto +{}\n",
        2 * n
    );
    for k in 0..n {
        src += &format!(
            "r1 = *(u64 *)(r10 - {})\n*(u64 *)(r0 + 0) = r1\n",
            16 + 8 * k
        );
    }
    // The writer: 1 or 2 (neither covers the other).
    src + "r0 = 0\nexit\n\
           r6 = r1\n*(u64 *)(r6 + 0) = 1\ncall bpf_get_prandom_u32\nif r0 > 5 goto +1\n\
           *(u64 *)(r6 + 0) = 2\nr0 = 0\nexit"
}

#[test]
fn what_a_callee_only_writes_into_its_callers_stack_does_not_multiply_states() {
    // Each result may be 1 or 2: 2^12 combinations if the
    // caller's slots all mattered while the writer runs; they do not
    // (only stored into a map value), so the states after each call
    // prune one another, as the kernel's precision tracking makes them.
    let processed = accepts(&writer_calls(12), &uprobe());
    assert!(
        processed < 5_000,
        "{processed} instructions processed for 12 calls"
    );
}

#[test]
fn a_callee_that_copies_between_its_callers_slots_keeps_them_precise() {
    // copy(&a, &b): b = a. The caller then indexes an 8-byte map value
    // with b: a = 100 on one path must be found.
    let program = |far: u32| {
        format!(
            "call bpf_get_prandom_u32\nr7 = 0\nif r0 > 5 goto +1\nr7 = {far}\n\
             *(u64 *)(r10 - 8) = r7\n*(u64 *)(r10 - 16) = 0\n\
             r1 = r10\nr1 += -8\nr2 = r10\nr2 += -16\ncall pc+12\n\
             *(u32 *)(r10 - 20) = 0\nr2 = r10\nr2 += -20\nr1 = map[idx:3]\ncall bpf_map_lookup_elem\n\
             if r0 == 0 goto +3\nr1 = *(u64 *)(r10 - 16)\nr0 += r1\nr0 = *(u8 *)(r0 + 0)\nr0 = 0\nexit\n\
             r3 = *(u64 *)(r1 + 0)\n*(u64 *)(r2 + 0) = r3\nr0 = 0\nexit"
        )
    };
    accepts(&program(7), &uprobe());
    rejects(
        &program(100),
        &uprobe(),
        20,
        "invalid access to map value, value_size=8 off=100 size=1",
    );
}

#[test]
fn bpf_get_local_storage_gives_the_cgroup_storage_value() {
    let mut cgroup_skb = env(
        ProgramType::CgroupSkb,
        Context::SkBuff(userbpf_verifier::SkbKind::CgroupSkb),
    );
    cgroup_skb.maps.push(MapInfo::new("storage", 19, 12, 64, 0));
    let storage = cgroup_skb.maps.len() - 1;
    let get = |map: usize, flags: &str, read: &str| {
        format!("r1 = map[idx:{map}]\nr2 = {flags}\ncall bpf_get_local_storage\n{read}r0 = 1\nexit")
    };
    // Never NULL: read at once.
    accepts(&get(storage, "0", "r1 = *(u32 *)(r0 + 60)\n"), &cgroup_skb);
    rejects(
        &get(storage, "0", "r1 = *(u32 *)(r0 + 64)\n"),
        &cgroup_skb,
        4,
        "invalid access to map value, value_size=64 off=64 size=4",
    );
    rejects(
        &get(storage, "1", ""),
        &cgroup_skb,
        3,
        "get_local_storage() doesn't support non-zero flags",
    );
    rejects(
        &get(0, "0", ""),
        &cgroup_skb,
        3,
        "cannot pass map_type 1 into func bpf_get_local_storage#81",
    );
    // A cgroup hook's helper only.
    rejects(
        &get(0, "0", ""),
        &uprobe(),
        3,
        "cannot use helper bpf_get_local_storage#81",
    );
}

#[test]
fn bpf_sk_storage_get_takes_a_socket_and_may_return_null() {
    let mut tc = tc();
    tc.maps.push(MapInfo::new("sk_storage", 24, 4, 8, 0));
    let storage = tc.maps.len() - 1;
    // r2 = skb->sk (offset 168), null-checked or not.
    let get = |check_sk: bool, check_value: bool| {
        format!(
            "r2 = *(u64 *)(r1 + 168)\n{}r1 = map[idx:{storage}]\nr3 = 0\nr4 = 0\n\
             call bpf_sk_storage_get\n{}r0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit",
            if check_sk { "if r2 == 0 goto +7\n" } else { "" },
            if check_value {
                "if r0 == 0 goto +1\n"
            } else {
                ""
            },
        )
    };
    accepts(&get(true, true), &tc);
    rejects(
        &get(false, true),
        &tc,
        5,
        "R2 type=sock_common_or_null expected=",
    );
    rejects(
        &get(true, false),
        &tc,
        7,
        "R0 invalid mem access 'map_value_or_null'",
    );
    // Only on hooks with a socket at hand.
    rejects(
        "r1 = map[idx:0]\nr2 = 0\ncall bpf_sk_storage_delete\nr0 = 0\nexit",
        &uprobe(),
        3,
        "cannot use helper bpf_sk_storage_delete#108",
    );
}

#[test]
fn a_number_spilled_to_the_stack_stays_linked_to_its_register() {
    // A dead branch reads r9, never written: reaching it is an error.
    let dead = "r0 = *(u64 *)(r9 + 0)\n";
    // Whole spill of an unknown number: the check on r0 bounds the copy.
    accepts(
        &format!(
            "call bpf_get_prandom_u32\n*(u64 *)(r10 - 8) = r0\nif r0 > 16 goto +3\n\
             r0 = *(u64 *)(r10 - 8)\nif r0 <= 16 goto +1\n{dead}r0 = 0\nexit"
        ),
        &xdp(),
    );
    // A 4-byte spill of a 16-bit number, checked through a copy.
    accepts(
        &format!(
            "call bpf_get_prandom_u32\nr0 &= 65535\nr1 = r0\n*(u32 *)(r10 - 8) = r0\n\
             if r0 < 1 goto +3\nr1 = *(u32 *)(r10 - 8)\nif r1 >= 1 goto +1\n{dead}r0 = 0\nexit"
        ),
        &xdp(),
    );
    // A 4-byte fill of a whole spill of a 32-bit number is the number.
    accepts(
        &format!(
            "call bpf_get_prandom_u32\nr0 &= 0x8000\n*(u64 *)(r10 - 8) = r0\n\
             r1 = *(u32 *)(r10 - 8)\nr2 = 0\nif r1 != r2 goto +3\nif r0 == r2 goto +2\n\
             {dead}exit\nr0 = 0\nexit"
        ),
        &xdp(),
    );
    // ...and its low half, unlinked, for a number that does not fit.
    accepts(
        &format!(
            "call bpf_get_prandom_u32\nr0 <<= 32\n*(u64 *)(r10 - 8) = r0\n\
             r0 = *(u32 *)(r10 - 8)\nif r0 == 0 goto +1\n{dead}exit"
        ),
        &xdp(),
    );
    rejects(
        "r6 = r1\ncall bpf_get_prandom_u32\nr0 &= 8\nr1 = 0xffffffff ll\nr1 <<= 32\n\
         r1 += r0\n*(u64 *)(r10 - 8) = r1\nr2 = *(u32 *)(r10 - 8)\nr3 = 0\n\
         if r2 != r3 goto +0\nr1 >>= 32\nr6 += r1\nr0 = *(u32 *)(r6 + 0)\nexit",
        &xdp(),
        12,
        "math between ctx pointer and 4294967295 is not allowed",
    );
}

/// `bpf_skc_to_tcp_sock` casts a socket to the kernel's `struct
/// tcp_sock`, or NULL: read at its fields once null-checked; the cast
/// holds the looked-up socket's reference, which either may release.
#[test]
fn bpf_skc_to_tcp_sock_gives_the_kernel_tcp_sock_or_null() {
    let Some(cwnd) = kernel_field("tcp_sock", "snd_cwnd") else {
        return;
    };
    // r7 = a socket looked up with a zeroed IPv4 tuple (pcs 0..12), or exit.
    let lookup = "r6 = r1\nr1 = 0\n*(u64 *)(r10 - 16) = r1\n*(u32 *)(r10 - 8) = r1\n\
                  r1 = r6\nr2 = r10\nr2 += -16\nr3 = 12\nr4 = 0\nr5 = 0\n\
                  call bpf_skc_lookup_tcp\nif r0 == 0 goto +{exit}\nr7 = r0\n";
    let prog = |body: &str| {
        let exit = body.lines().count() + 1;
        format!(
            "{}{body}r0 = 0\nexit",
            lookup.replace("{exit}", &exit.to_string())
        )
    };
    let read_and_release = |check: &str, release: &str| {
        prog(&format!(
            "r1 = r7\ncall bpf_skc_to_tcp_sock\n{check}r1 = *(u32 *)(r0 + {cwnd})\n{release}"
        ))
    };
    accepts(
        &read_and_release("if r0 == 0 goto +1\n", "r1 = r7\ncall bpf_sk_release\n"),
        &tc(),
    );
    rejects(
        &read_and_release("", "r1 = r7\ncall bpf_sk_release\n"),
        &tc(),
        15,
        "R0 invalid mem access 'ptr_or_null_'",
    );
    rejects(
        &read_and_release("if r0 == 0 goto +1\n", ""),
        &tc(),
        18,
        "Unreleased reference",
    );
    // The cast releases the socket as well as the lookup's pointer does.
    accepts(
        &prog(
            "r1 = r7\ncall bpf_skc_to_tcp_sock\nif r0 != 0 goto +3\nr1 = r7\n\
             call bpf_sk_release\ngoto +2\nr1 = r0\ncall bpf_sk_release\n",
        ),
        &tc(),
    );
    // Not a kernel socket: a map value.
    rejects(
        "r1 = map[idx:0]\nr2 = r10\nr2 += -8\nr3 = 0\n*(u64 *)(r10 - 8) = r3\n\
         call bpf_map_lookup_elem\nif r0 == 0 goto +2\nr1 = r0\ncall bpf_skc_to_tcp_sock\n\
         r0 = 0\nexit",
        &tc(),
        9,
        "R1 type=map_value expected=sock_common, sock, tcp_sock, xdp_sock, ptr_, trusted_ptr_",
    );
    // Only on the networking hooks and tracing programs.
    rejects(
        "r1 = 0\ncall bpf_skc_to_tcp_sock\nr0 = 0\nexit",
        &uprobe(),
        1,
        "cannot use helper bpf_skc_to_tcp_sock#137",
    );
}

/// The helpers of cgroup_skb, sysctl, sockops, perf event and syscall
/// programs check their buffers as the kernel does, on their hooks only.
#[test]
fn hook_specific_helpers_check_their_buffers_on_their_hooks_only() {
    // bpf_skb_load_bytes_relative writes 8 bytes of stack (uninitialised
    // is fine); a size of 0 is not.
    let load = |size: u32| {
        format!(
            "r2 = 0\nr3 = r10\nr3 += -8\nr4 = {size}\nr5 = 1\n\
             call bpf_skb_load_bytes_relative\nr0 = *(u64 *)(r10 - 8)\nr0 = 0\nexit"
        )
    };
    accepts(&load(8), &tc());
    accepts(&load(8), &socket());
    rejects(&load(0), &tc(), 5, "invalid zero-sized read");
    rejects(
        &load(16),
        &tc(),
        5,
        "invalid write to stack R3 off=-8 size=16",
    );
    rejects(
        &load(8),
        &xdp(),
        5,
        "cannot use helper bpf_skb_load_bytes_relative#68",
    );
    // bpf_sysctl_get_name reads an initialised buffer (ARG_PTR_TO_MEM).
    let sysctl = env(ProgramType::CgroupSysctl, Context::Sysctl);
    let name = |init: &str| {
        format!("{init}r2 = r10\nr2 += -8\nr3 = 8\nr4 = 0\ncall bpf_sysctl_get_name\nr0 = 1\nexit")
    };
    accepts(&name("r2 = 0\n*(u64 *)(r10 - 8) = r2\n"), &sysctl);
    rejects(&name(""), &sysctl, 4, "invalid read from stack");
    rejects(
        &name(""),
        &tc(),
        4,
        "cannot use helper bpf_sysctl_get_name#101",
    );
}

/// sk_reuseport programs take the cookie of a socket, not of their
/// context (`bpf_get_socket_ptr_cookie_proto`): `sk`, or the
/// `migrating_sk` that may be NULL.
#[test]
fn sk_reuseport_programs_take_the_cookie_of_a_socket() {
    let reuseport = env(ProgramType::SkReuseport, Context::SkReuseport);
    let cookie = |arg: &str| format!("{arg}call bpf_get_socket_cookie\nr0 = 1\nexit");
    accepts(&cookie("r1 = *(u64 *)(r1 + 40)\n"), &reuseport);
    accepts(&cookie("r1 = *(u64 *)(r1 + 48)\n"), &reuseport);
    accepts(&cookie("r1 = 0\n"), &reuseport);
    rejects(
        &cookie(""),
        &reuseport,
        0,
        "R1 type=ctx expected=sock_common, sock, tcp_sock, xdp_sock, ptr_, trusted_ptr_",
    );
    // An __sk_buff program's cookie is its context's.
    accepts(&cookie(""), &tc());
}

/// The shape of Linux's selftest `test_verif_scale3` (which the kernel
/// accepts in 837k processed instructions): 100 steps, each calling a
/// long function on the packet at offset `i` (and incrementing `i`) or
/// skipping it when fewer than 32 bytes are left. Step `k` is reached
/// with `k + 1` different offsets, so its states must stay listed while
/// the many others miss them, or the same calls are explored again.
#[test]
fn states_that_others_miss_stay_listed_while_they_may_still_match() {
    let step = "r1 = r7\nr1 += r9\nr2 = r1\nr2 += 32\nif r2 > r8 goto +4\n\
                r2 = *(u32 *)(r6 + 48)\nw2 += w9\ncall pc+{to}\nw9 += 1\n";
    let steps = 100;
    let step_len = 9;
    let mut src = String::from("r6 = r1\nw9 = 0\nr8 = *(u32 *)(r6 + 80)\nr7 = *(u32 *)(r6 + 76)\n");
    for k in 0..steps {
        // From the call at this step's 8th instruction to the function
        // after the last step and the exit.
        let to = (steps - k - 1) * step_len + 1 + 2;
        src.push_str(&step.replace("{to}", &to.to_string()));
    }
    src.push_str("r0 = 0\nexit\n");
    // The function: the 32 bytes read, mixed over 146 instructions.
    src.push_str("w0 = w2\n");
    for k in 0..8 {
        src.push_str(&format!("r3 = *(u32 *)(r1 + {})\nw0 += w3\n", k * 4));
        for _ in 0..4 {
            src.push_str("w4 = w0\nw4 <<= 7\nw0 ^= w4\nw0 += 0x9e37\n");
        }
    }
    src.push_str("exit\n");
    let processed = accepts(&src, &tc());
    println!("{processed} instructions processed");
    assert!(processed > 500_000, "{processed}");
}

/// The distance between two pointers into one region is a number, in 64
/// or 32 bits (`len = data_end - data` on `u32`s); between regions it
/// would tell where they lie.
#[test]
fn pointers_into_one_region_subtract_in_64_and_32_bits() {
    let packet = "r2 = *(u32 *)(r1 + 4)\nr4 = *(u32 *)(r1 + 0)\n";
    accepts(&format!("{packet}r4 -= r2\nr0 = r4\nexit"), &xdp());
    accepts(
        &format!("{packet}w2 -= w4\nif w2 > 1500 goto +1\nr0 = 0\nr0 = 1\nexit"),
        &xdp(),
    );
    // The 32-bit distance is a number of 32 bits: the exit without r0
    // is never reached; the 64-bit one may be anything.
    let over_32_bits = |sub: &str| {
        format!("{packet}{sub}\nr3 = 0xffffffff ll\nif r2 > r3 goto +2\nr0 = 0\nexit\nexit")
    };
    accepts(&over_32_bits("w2 -= w4"), &xdp());
    rejects(&over_32_bits("r2 -= r4"), &xdp(), 8, "R0 !read_ok");
    rejects(
        &format!("{packet}r3 = r10\nw3 -= w4\nr0 = 0\nexit"),
        &xdp(),
        3,
        "R3 pointer -= pointer prohibited",
    );
}

/// The lightweight tunnel helpers, on their hooks, change the packet.
#[test]
fn lwt_encap_and_segment_routing_helpers_change_the_packet() {
    let seg6 = env(
        ProgramType::LwtSeg6local,
        Context::SkBuff(userbpf_verifier::SkbKind::Lwt),
    );
    let lwt_in = env(
        ProgramType::LwtIn,
        Context::SkBuff(userbpf_verifier::SkbKind::Lwt),
    );
    // r7 = data, 1 byte proven; read again after the call.
    let after = |call: &str| {
        format!(
            "r6 = r1\nr7 = *(u32 *)(r6 + 76)\nr8 = *(u32 *)(r6 + 80)\nr2 = r7\nr2 += 1\n\
             if r2 <= r8 goto +2\nr0 = 0\nexit\n{call}r0 = *(u8 *)(r7 + 0)\nr0 = 0\nexit"
        )
    };
    let adjust = "r1 = r6\nr2 = 0\nr3 = 8\ncall bpf_lwt_seg6_adjust_srh\n";
    accepts(&after(""), &seg6);
    rejects(&after(adjust), &seg6, 12, "R7 !read_ok");
    rejects(
        &after(adjust),
        &lwt_in,
        11,
        "cannot use helper bpf_lwt_seg6_adjust_srh#75",
    );
}

/// Every load of `data` from the context is the same pointer: a bounds
/// check through one proves the others, loaded before or after it.
#[test]
fn a_bounds_check_on_one_load_of_data_proves_the_others() {
    let src = |check_on: &str, read_at: &str| {
        format!(
            "r2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr4 = *(u32 *)(r1 + 0)\n\
             r5 = {check_on}\nr5 += 8\nr0 = 0\nif r5 > r3 goto +1\nr0 = *(u64 *)({read_at} + 0)\nr0 = 0\nexit"
        )
    };
    accepts(&src("r2", "r4"), &xdp());
    accepts(&src("r4", "r2"), &xdp());
    // Not past what was checked.
    rejects(
        &src("r2", "r4 + 1").replace("(r4 + 1 + 0)", "(r4 + 1)"),
        &xdp(),
        7,
        "invalid access to packet",
    );
}

#[test]
fn a_writable_raw_tracepoint_reads_and_writes_its_buffer_at_constant_offsets() {
    let tp = env(
        ProgramType::RawTracepointWritable,
        Context::RawTracepointWritable,
    );
    // args[0] is the buffer: written at 8..16, read at 19..23, added to
    // atomically at 24..32; args[1] a number.
    let src = "
        r2 = *(u64 *)(r1 + 0)
        r3 = *(u64 *)(r1 + 8)
        *(u64 *)(r2 + 8) = r3
        r2 += 16
        r0 = *(u32 *)(r2 + 3)
        r4 = 1
        lock *(u64 *)(r2 + 8) += r4
        r0 = 0
        exit";
    let p = Program::new("t", assemble(src).unwrap()).unwrap();
    let report = check(&p, &tp, &Options::default(), None).unwrap();
    assert_eq!(report.stats.max_tp_access, 32);
    // A plain raw tracepoint's args[0] is a number.
    rejects(
        src,
        &env(ProgramType::RawTracepoint, Context::RawTracepoint),
        2,
        "R2 invalid mem access 'scalar'",
    );
    rejects(
        "r2 = *(u64 *)(r1 + 0)\nr2 += 8\nr0 = *(u8 *)(r2 - 9)\nr0 = 0\nexit",
        &tp,
        2,
        "R2 invalid tracepoint buffer access: off=-1, size=1",
    );
    rejects(
        "r2 = *(u64 *)(r1 + 0)\nr3 = *(u64 *)(r1 + 8)\nr3 &= 7\nr2 += r3\n*(u8 *)(r2 + 0) = 1\nr0 = 0\nexit",
        &tp,
        4,
        "R2 invalid variable buffer offset: off=0, var_off=(0x0; 0x7)",
    );
    // The buffer pointer is read whole; the arguments are not written.
    rejects(
        "r2 = *(u32 *)(r1 + 0)\nr0 = 0\nexit",
        &tp,
        0,
        "invalid bpf_context access off=0 size=4",
    );
    rejects(
        "*(u64 *)(r1 + 8) = 0\nr0 = 0\nexit",
        &tp,
        0,
        "invalid bpf_context access off=8 size=8",
    );
    // No address stored into it (userbpf's rule against leaks).
    rejects(
        "r2 = *(u64 *)(r1 + 0)\n*(u64 *)(r2 + 0) = r10\nr0 = 0\nexit",
        &tp,
        1,
        "R10 leaks addr into mem",
    );
}
