//! BPF objects built by clang-19 (tests/bpf/*.bpf.c): parsing, linking,
//! running, and errors on malformed input.
//!
//! The objects come from `tests/bpf/`, or from `USERBPF_FIXTURES_DIR` when
//! set (CI rebuilds the fixtures from source and runs these tests on them).

use std::path::PathBuf;

use userbpf_vm::object::{AttachTarget, Object, ObjectError, ProgramType};
use userbpf_vm::{Helpers, Vm};

fn fixture(name: &str) -> (String, Vec<u8>) {
    let dir = match std::env::var_os("USERBPF_FIXTURES_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/bpf"),
    };
    let path = dir.join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path.display().to_string(), bytes)
}

/// A 16-byte context: a u32 key (or selector) at 0, a u64 to add at 8,
/// as the counter and map-of-maps fixtures read theirs.
fn key_add(key: u32, add: u64) -> [u8; 16] {
    let mut ctx = [0u8; 16];
    ctx[..4].copy_from_slice(&key.to_le_bytes());
    ctx[8..].copy_from_slice(&add.to_le_bytes());
    ctx
}

/// The fixture's algorithm, in Rust.
fn calls_expected(a: u64, b: u64) -> (u64, u64) {
    let mut s = 0u64;
    for i in 0..16u64 {
        s = s.wrapping_mul(31).wrapping_add(a.wrapping_add(i) ^ 0x5a);
    }
    let out = ((s >> 7) ^ (s << 3)) ^ b;
    (out & 0x7fff_ffff, out)
}

#[test]
fn links_subprograms_and_runs_the_calls_fixture() {
    let (file, bytes) = fixture("calls.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(obj.license.as_deref(), Some("Dual MIT/GPL"));
    assert_eq!(obj.programs.len(), 1);
    let p = obj.program("calls").unwrap();
    assert_eq!(p.kind.prog_type, ProgramType::Syscall);
    assert_eq!(p.kind.target, AttachTarget::None);
    let mut subs: Vec<&str> = p.subprograms.iter().map(|(n, _)| n.as_str()).collect();
    subs.sort();
    assert_eq!(subs, ["finish", "mix"]);
    assert!(p.insns.len() > p.own_len);

    let program = p.to_program().unwrap();
    let mut vm = Vm::new(&program, Helpers::new()).unwrap();
    for (a, b) in [
        (0u64, 0u64),
        (1, 2),
        (0xdead_beef, 0x1234_5678_9abc_def0),
        (u64::MAX, 7),
    ] {
        let mut ctx = [0u8; 24];
        ctx[..8].copy_from_slice(&a.to_le_bytes());
        ctx[8..16].copy_from_slice(&b.to_le_bytes());
        let (r0, out) = calls_expected(a, b);
        assert_eq!(vm.run(&mut ctx), Ok(r0), "a={a:#x} b={b:#x}");
        assert_eq!(u64::from_le_bytes(ctx[16..].try_into().unwrap()), out);
    }
    assert!(obj
        .program("nope")
        .unwrap_err()
        .to_string()
        .contains("calls"));
}

#[test]
fn counter_fixture_uses_hash_array_and_global_data_maps() {
    use std::sync::Arc;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    let (file, bytes) = fixture("counter.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let program = obj.program("count").unwrap().to_program().unwrap();
    let mut vm = set
        .vm(&program, &Helpers::new(), Config::default())
        .unwrap();
    let mut run = |key: u32, add: u64| {
        let mut ctx = key_add(key, add);
        vm.run(&mut ctx).unwrap()
    };
    // counts[key] += add * scale (scale = 3 in .rodata).
    assert_eq!(run(5, 2), 6);
    assert_eq!(run(5, 2), 12);
    assert_eq!(run(13, 1), 3);
    let map = |n: &str| {
        set.maps()
            .iter()
            .find(|m| m.spec().name == n)
            .unwrap()
            .clone()
    };
    let u64_of = |v: Option<Vec<u8>>| u64::from_le_bytes(v.unwrap().try_into().unwrap());
    let counts = map("counts");
    assert_eq!(u64_of(counts.lookup(&5u32.to_le_bytes())), 12);
    assert_eq!(u64_of(counts.lookup(&13u32.to_le_bytes())), 3);
    // Keys 5 and 13 share slot 5.
    assert_eq!(u64_of(map("by_slot").lookup(&5u32.to_le_bytes())), 3);
    // Globals: runs starts at 100, last_key is the last key.
    assert_eq!(u64_of(map(".data").lookup(&0u32.to_le_bytes())), 103);
    assert_eq!(
        map(".bss").lookup(&0u32.to_le_bytes()),
        Some(13u32.to_le_bytes().to_vec())
    );
    // Over 1000 the program deletes the key.
    assert_eq!(run(5, 400), 12 + 1200);
    assert_eq!(counts.lookup(&5u32.to_le_bytes()), None);
    // .rodata is read-only to programs.
    assert!(!map(".rodata").value_region().writable);
}

#[test]
fn events_fixture_streams_records_through_the_ring_buffer() {
    use std::sync::Arc;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    let (file, bytes) = fixture("events.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let program = obj.program("emit").unwrap().to_program().unwrap();
    let mut vm = set
        .vm(&program, &Helpers::new(), Config::default())
        .unwrap();
    let rb = set.maps()[0].clone();
    let mut run = |count: u32, discard_every: u32, base: u64| {
        let mut ctx = [0u8; 16];
        ctx[..4].copy_from_slice(&count.to_le_bytes());
        ctx[4..8].copy_from_slice(&discard_every.to_le_bytes());
        ctx[8..].copy_from_slice(&base.to_le_bytes());
        vm.run(&mut ctx).unwrap()
    };
    let mut records = Vec::new();
    let take = |records: &mut Vec<(u32, u32, u64)>| {
        rb.ringbuf_consume(|r| {
            records.push((
                u32::from_le_bytes(r[..4].try_into().unwrap()),
                u32::from_le_bytes(r[4..8].try_into().unwrap()),
                u64::from_le_bytes(r[8..16].try_into().unwrap()),
            ))
        });
    };
    // 10 events, every 3rd discarded (i = 0, 3, 6, 9): 6 sent, then `done`.
    assert_eq!(run(10, 3, 1000), 6);
    take(&mut records);
    let expected: Vec<(u32, u32, u64)> = [1, 2, 4, 5, 7, 8]
        .iter()
        .map(|&i| (i, 1, 1000 + u64::from(i)))
        .chain([(6, 2, 1000)])
        .collect();
    assert_eq!(records, expected);
    // 64 events of 24 bytes (16 + 8 header) fill 1536 of 4096 bytes; three
    // runs without consuming overflow the ring: the program sees NULL from
    // reserve and the ring counts what it refused.
    records.clear();
    let sent: u64 = (0..3).map(|_| run(64, 0, 0)).sum();
    take(&mut records);
    let delivered_events = records.iter().filter(|r| r.1 == 1).count() as u64;
    assert_eq!(delivered_events, sent);
    assert!(sent < 3 * 64);
    assert!(rb.ringbuf_dropped() >= 1);
}

#[test]
fn printk_fixture_probes_memory_prints_and_formats() {
    use std::sync::{Arc, Mutex};
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    let (file, bytes) = fixture("printk.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let printed = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = {
        let printed = printed.clone();
        Arc::new(move |m: &[u8]| {
            printed
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(m).into_owned())
        })
    };
    let helpers = Helpers::kernel_basics_with_trace(sink);
    let program = obj.program("probes").unwrap().to_program().unwrap();
    let mut vm = set.vm(&program, &helpers, Config::default()).unwrap();
    let name = std::ffi::CString::new("userbpf").unwrap();
    let mut ctx = [0u8; 64];
    ctx[..8].copy_from_slice(&(name.as_ptr() as u64).to_le_bytes());
    ctx[8..16].copy_from_slice(&8u64.to_le_bytes());
    let r0 = vm.run(&mut ctx).unwrap();
    let i64_at = |o: usize| i64::from_le_bytes(ctx[o..o + 8].try_into().unwrap());
    assert_eq!(
        i64_at(16),
        -(libc::EFAULT as i64),
        "probe_read_user of a bad address"
    );
    assert_eq!(i64_at(24), 8, "strlen(\"userbpf\") + NUL");
    assert_eq!(&ctx[32..43], b"userbpf=42\0");
    assert_eq!(r0, 11, "snprintf returns the length with the NUL");
    assert_eq!(
        *printed.lock().unwrap(),
        vec!["hello userbpf, 8 bytes".to_string()]
    );
}

#[test]
fn bpf_loop_fills_a_histogram_in_a_hash_map() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    let (file, bytes) = fixture("loop.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let program = obj.program("histogram").unwrap().to_program().unwrap();
    let mut vm = set
        .vm(&program, &Helpers::new(), Config::default())
        .unwrap();
    let values = [1u64, 2, 3, 4, 100, 1000, 7, 0, 5, 5, 5, 5, 5, 5, 5, 5];
    let mut ctx = Vec::new();
    for v in values {
        ctx.extend_from_slice(&v.to_le_bytes());
    }
    ctx.extend_from_slice(&16u32.to_le_bytes());
    ctx.extend_from_slice(&0u32.to_le_bytes());
    // The callback stops at the first 0 (index 7): bpf_loop returns 8.
    assert_eq!(vm.run(&mut ctx), Ok(8));
    // values[0] = the sum of the values before the 0.
    assert_eq!(
        u64::from_le_bytes(ctx[..8].try_into().unwrap()),
        values[..7].iter().sum::<u64>()
    );
    // The histogram, computed here: floor(log2(v)).
    let mut expected = BTreeMap::new();
    for v in &values[..7] {
        *expected.entry(63 - v.leading_zeros()).or_insert(0u64) += 1;
    }
    let hist = &set.maps()[0];
    let mut got = BTreeMap::new();
    for k in hist.keys() {
        let slot = u32::from_le_bytes(k[..4].try_into().unwrap());
        let n = u64::from_le_bytes(hist.lookup(&k).unwrap().try_into().unwrap());
        got.insert(slot, n);
    }
    assert_eq!(got, expected);
}

/// Replaces every occurrence (string tables share suffixes: the name
/// `syscall` may live inside `.relsyscall`).
#[test]
fn reads_btf_legacy_and_global_data_maps() {
    use userbpf_vm::isa::{Instruction, Lddw};
    use userbpf_vm::object::MapOrigin;

    let (file, bytes) = fixture("maps.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let map = |n: &str| {
        obj.maps
            .iter()
            .find(|m| m.name == n)
            .unwrap_or_else(|| panic!("no map {n}"))
    };
    // Types and sizes as written in tests/bpf/maps.bpf.c (kernel type ids:
    // HASH 1, ARRAY 2, PERCPU_ARRAY 6, LRU_HASH 9, RINGBUF 27).
    let h = map("events_by_pid");
    assert_eq!(
        (h.map_type, h.key_size, h.value_size, h.max_entries),
        (1, 4, 32, 1024)
    );
    assert_eq!(h.origin, MapOrigin::Btf);
    let c = map("counters");
    assert_eq!(
        (c.map_type, c.key_size, c.value_size, c.max_entries),
        (6, 4, 8, 4)
    );
    let rb = map("rb");
    assert_eq!((rb.map_type, rb.max_entries), (27, 256 * 1024));
    let lru = map("lru");
    assert_eq!(
        (lru.map_type, lru.key_size, lru.value_size, lru.flags),
        (9, 8, 16, 2)
    );
    let legacy = map("legacy_array");
    assert_eq!(
        (
            legacy.map_type,
            legacy.key_size,
            legacy.value_size,
            legacy.max_entries
        ),
        (2, 4, 8, 16)
    );
    assert_eq!(legacy.origin, MapOrigin::Legacy);
    let data = map(".data");
    assert_eq!(data.initial.as_deref(), Some(&7u64.to_le_bytes()[..]));
    let rodata = map(".rodata");
    assert_ne!(rodata.flags & userbpf_vm::object::BPF_F_RDONLY_PROG, 0);
    assert_eq!(map(".bss").initial.as_deref(), Some(&[0u8; 8][..]));

    // Every map load in the program names an existing map; together they
    // cover the maps the C source uses.
    let p = obj.program("on_getpid").unwrap();
    assert_eq!(p.kind.prog_type, ProgramType::Tracepoint);
    assert!(p.kind.user_space_hook());
    let program = p.to_program().unwrap();
    let mut used: Vec<&str> = program
        .instructions()
        .filter_map(|(_, i)| match i {
            Instruction::LoadImm64 {
                value: Lddw::MapIdx(m) | Lddw::MapIdxValue { idx: m, .. },
                ..
            } => Some(obj.maps[m as usize].name.as_str()),
            _ => None,
        })
        .collect();
    used.sort();
    used.dedup();
    assert_eq!(
        used,
        [
            ".bss",
            ".data",
            ".rodata",
            "counters",
            "events_by_pid",
            "legacy_array",
            "rb"
        ]
    );
}

fn replace_all(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut v = bytes.to_vec();
    let mut found = false;
    let mut i = 0;
    while i + from.len() <= v.len() {
        if &v[i..i + from.len()] == from {
            v[i..i + from.len()].copy_from_slice(to);
            found = true;
        }
        i += 1;
    }
    assert!(found, "pattern present");
    v
}

#[test]
fn malformed_objects_are_errors_naming_the_problem() {
    let (file, bytes) = fixture("calls.bpf.o");
    // Truncated at every 97th byte: never a panic, always an error or (for
    // lucky cuts past everything needed) a parse.
    for cut in (0..bytes.len()).step_by(97) {
        if let Err(e) = Object::parse(&file, &bytes[..cut]) {
            assert!(e.to_string().contains(&file), "{e}");
        }
    }
    let e = Object::parse(&file, &bytes[..16]).unwrap_err();
    assert!(matches!(e, ObjectError::Elf { .. }), "{e}");

    // Wrong machine: EM_X86_64.
    let mut x86 = bytes.clone();
    x86[18] = 62;
    x86[19] = 0;
    let e = Object::parse(&file, &x86).unwrap_err();
    assert!(
        matches!(e, ObjectError::WrongMachine { machine: 62, .. }),
        "{e}"
    );

    // An unknown program section.
    let bogus = replace_all(&bytes, b"syscall\0", b"sysxall\0");
    let e = Object::parse(&file, &bogus).unwrap_err();
    assert!(
        e.to_string().contains("unknown program section `sysxall`"),
        "{e}"
    );

    // A call relocation against the wrong symbol type: turn the relocation
    // type R_BPF_64_32 (10) of the first call into R_BPF_64_ABS64 (2).
    let e = Object::parse(&file, &corrupt_first_call_reloc(&bytes)).unwrap_err();
    assert!(matches!(e, ObjectError::Relocation { .. }), "{e}");
    assert!(e.to_string().contains("relocation type 2"), "{e}");
}

/// Finds `.relsyscall` and sets the type of its first entry to 2.
fn corrupt_first_call_reloc(bytes: &[u8]) -> Vec<u8> {
    let elf = goblin_like::sections(bytes);
    let (off, _) = elf
        .into_iter()
        .find(|(_, name)| name == ".relsyscall")
        .expect(".relsyscall");
    let mut v = bytes.to_vec();
    // Elf64_Rel { r_offset: u64, r_info: u64 }: the type is the low 32 bits
    // of r_info.
    let info = off + 8;
    v[info..info + 4].copy_from_slice(&2u32.to_le_bytes());
    v
}

/// Just enough ELF64 reading to find section offsets by name.
mod goblin_like {
    fn u16_at(b: &[u8], o: usize) -> usize {
        u16::from_le_bytes([b[o], b[o + 1]]) as usize
    }
    fn u32_at(b: &[u8], o: usize) -> usize {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize
    }
    fn u64_at(b: &[u8], o: usize) -> usize {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize
    }

    /// (file offset, name) of every section.
    pub fn sections(b: &[u8]) -> Vec<(usize, String)> {
        let shoff = u64_at(b, 0x28);
        let shentsize = u16_at(b, 0x3a);
        let shnum = u16_at(b, 0x3c);
        let shstrndx = u16_at(b, 0x3e);
        let strtab = u64_at(b, shoff + shstrndx * shentsize + 0x18);
        (0..shnum)
            .map(|i| {
                let sh = shoff + i * shentsize;
                let name_off = strtab + u32_at(b, sh);
                let end = b[name_off..].iter().position(|&c| c == 0).unwrap();
                let name = String::from_utf8_lossy(&b[name_off..name_off + end]).into_owned();
                (u64_at(b, sh + 0x18), name)
            })
            .collect()
    }
}

#[test]
fn tail_calls_go_through_the_objects_program_array() {
    use std::sync::Arc;
    use userbpf_vm::context::run_xdp;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    let (file, bytes) = fixture("tail.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        obj.maps[0].initial_slots,
        vec![(1, "target_a".to_string()), (3, "target_b".to_string())]
    );
    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let mut vm = set
        .vm_for_object(&obj, "entry", &Helpers::new(), Config::default())
        .unwrap();
    let mut run = |index: u32| {
        let mut pkt = index.to_le_bytes().to_vec();
        pkt.extend_from_slice(&[0; 12]);
        let out = run_xdp(&mut vm, &pkt).unwrap();
        (
            out.r0,
            u32::from_le_bytes(out.packet[4..8].try_into().unwrap()),
        )
    };
    // XDP_PASS 2, XDP_DROP 1. entry (1) -> target_a (2) -> target_b (3).
    assert_eq!(run(1), (2, 123));
    // entry -> target_b directly.
    assert_eq!(run(3), (2, 13));
    // Empty slots and out-of-range indexes fall through in entry.
    assert_eq!(run(0), (1, 19));
    assert_eq!(run(7), (1, 19));
}

#[test]
fn perf_fixture_sends_samples_through_the_perf_event_array() {
    use std::sync::Arc;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    let (file, bytes) = fixture("perf.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let mut vm = set
        .vm_for_object(&obj, "emit", &Helpers::kernel_basics(), Config::default())
        .unwrap();
    let mut ctx = [0u8; 16];
    ctx[..8].copy_from_slice(&5u64.to_le_bytes());
    ctx[8..].copy_from_slice(&100u64.to_le_bytes());
    assert_eq!(vm.run(&mut ctx), Ok(0));
    let mut samples = Vec::new();
    let (n, lost) = set.maps()[0].perf_consume(|_, d| {
        samples.push((
            u32::from_le_bytes(d[..4].try_into().unwrap()),
            u32::from_le_bytes(d[4..8].try_into().unwrap()),
            u64::from_le_bytes(d[8..16].try_into().unwrap()),
        ))
    });
    assert_eq!((n, lost), (5, 0));
    samples.sort();
    let pid = std::process::id();
    assert_eq!(
        samples,
        (0..5)
            .map(|i| (i, pid, 100 + u64::from(i)))
            .collect::<Vec<_>>()
    );
}

#[test]
fn arrays_of_maps_hand_programs_their_inner_maps() {
    use std::sync::Arc;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    let (file, bytes) = fixture("mapinmap.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let outer = obj.maps.iter().find(|m| m.name == "outer").unwrap();
    assert_eq!(
        outer.initial_slots,
        vec![(0, "inner_a".to_string()), (1, "inner_b".to_string())]
    );
    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let mut vm = set
        .vm_for_object(&obj, "pick", &Helpers::new(), Config::default())
        .unwrap();
    let mut run = |which: u32, add: u64| {
        let mut ctx = key_add(which, add);
        vm.run(&mut ctx).unwrap() as u32 as i32
    };
    assert_eq!(run(0, 5), 5);
    assert_eq!(run(1, 7), 7);
    assert_eq!(run(0, 1), 6);
    // An empty slot and an index past the end: no inner map.
    assert_eq!(run(2, 1), -1);
    assert_eq!(run(9, 1), -1);
    let value = |name: &str| {
        let m = set.maps().iter().find(|m| m.spec().name == name).unwrap();
        u64::from_le_bytes(m.lookup(&0u32.to_le_bytes()).unwrap().try_into().unwrap())
    };
    assert_eq!((value("inner_a"), value("inner_b")), (6, 7));
    // The hash of maps holds inner_b under key 5 only.
    let mut by_key = set
        .vm_for_object(&obj, "pick_by_key", &Helpers::new(), Config::default())
        .unwrap();
    let mut run_by_key = |key: u32, add: u64| {
        let mut ctx = key_add(key, add);
        by_key.run(&mut ctx).unwrap() as u32 as i32
    };
    assert_eq!(run_by_key(5, 10), 17);
    assert_eq!(run_by_key(0, 1), -1, "no key 0 in the hash of maps");
    assert_eq!((value("inner_a"), value("inner_b")), (6, 17));
    // Programs cannot read the ids in the outer map as memory.
    let outer_map = set
        .maps()
        .iter()
        .find(|m| m.spec().name == "outer")
        .unwrap();
    assert_eq!(outer_map.value_region().len, 0);
}

#[test]
fn maps_of_maps_filled_at_run_time_give_only_maps_of_their_inner_definition() {
    use std::sync::Arc;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    let (file, bytes) = fixture("mapinmap.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    // The inner definition (`__array(values, struct { ... })`), named as
    // libbpf names its template.
    let runtime = obj.maps.iter().find(|m| m.name == "runtime").unwrap();
    assert!(runtime.initial_slots.is_empty());
    let inner = runtime.inner.as_deref().expect("inner map definition");
    assert_eq!(
        (
            inner.name.as_str(),
            inner.map_type,
            inner.key_size,
            inner.value_size,
            inner.max_entries
        ),
        ("runtime.inner", 2, 4, 8, 1)
    );
    // `__array(values, struct inner)` names a definition too.
    let outer = obj.maps.iter().find(|m| m.name == "outer").unwrap();
    assert_eq!(outer.inner.as_deref().map(|d| d.value_size), Some(8));
    assert!(obj.maps.iter().all(|m| m.name != "runtime.inner"));

    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let id = |name: &str| {
        set.maps()
            .iter()
            .position(|m| m.spec().name == name)
            .map(|i| i as u32 + 1)
            .unwrap()
    };
    let runtime_map = set
        .maps()
        .iter()
        .find(|m| m.spec().name == "runtime")
        .unwrap();
    // Slot 0: inner_a (8-byte values, as the definition); slot 1: `other`
    // (4-byte values), which a program verified for 8 would overrun.
    runtime_map
        .update(&0u32.to_le_bytes(), &id("inner_a").to_le_bytes(), 0)
        .unwrap();
    runtime_map
        .update(&1u32.to_le_bytes(), &id("other").to_le_bytes(), 0)
        .unwrap();
    let mut vm = set
        .vm_for_object(&obj, "pick_runtime", &Helpers::new(), Config::default())
        .unwrap();
    let mut run = |which: u32, add: u64| {
        let mut ctx = key_add(which, add);
        vm.run(&mut ctx).unwrap() as u32 as i32
    };
    assert_eq!(run(0, 3), 3);
    assert_eq!(run(1, 3), -1, "a map of another shape is not an inner map");
    let other = set
        .maps()
        .iter()
        .find(|m| m.spec().name == "other")
        .unwrap();
    assert_eq!(other.lookup(&0u32.to_le_bytes()).unwrap(), vec![0u8; 4]);
}

/// Runs the kconfig fixture's program on `obj` and returns its output.
fn run_kconfig(obj: &Object) -> Vec<u8> {
    use std::sync::Arc;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    let set = Arc::new(MapSet::from_object(obj).unwrap());
    let program = obj.program("kconfig").unwrap().to_program().unwrap();
    let mut vm = set
        .vm(&program, &Helpers::new(), Config::default())
        .unwrap();
    let mut out = vec![0xaau8; 48];
    assert_eq!(vm.run(&mut out), Ok(0));
    out
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

#[test]
fn kconfig_externs_are_filled_from_the_given_configuration() {
    use userbpf_vm::object::KernelConfig;

    let (file, bytes) = fixture("kconfig.bpf.o");
    let config = KernelConfig::parse(
        "CONFIG_BPF_SYSCALL=y\nCONFIG_HZ=300\nCONFIG_USERBPF_TEST_TRISTATE=m\n\
         CONFIG_USERBPF_TEST_CHAR=m\nCONFIG_DEFAULT_HOSTNAME=\"host\"\n",
    )
    .with_release("5.15.7-test");
    let obj = Object::parse_with_kconfig(&file, &bytes, &config).unwrap_or_else(|e| panic!("{e}"));
    let out = run_kconfig(&obj);
    assert_eq!(u32_at(&out, 0), (5 << 16) | (15 << 8) | 7);
    assert_eq!(u32_at(&out, 4), 1, "LINUX_HAS_BPF_COOKIE");
    assert_eq!(u32_at(&out, 8), 1, "CONFIG_BPF_SYSCALL=y");
    assert_eq!(u32_at(&out, 12), 300, "CONFIG_HZ");
    assert_eq!(u32_at(&out, 16), 2, "TRI_MODULE");
    assert_eq!(u32_at(&out, 20), u32::from(b'm'));
    assert_eq!(&out[24..32], &[0; 8], "a missing __weak extern reads 0");
    assert_eq!(&out[32..48], b"host\0\0\0\0\0\0\0\0\0\0\0\0");

    // "# CONFIG_BPF_SYSCALL is not set" leaves it missing; a missing
    // extern that is not __weak is an error naming it.
    let config = KernelConfig::parse("# CONFIG_BPF_SYSCALL is not set\nCONFIG_HZ=100\n")
        .with_release("6.1.0");
    let e = Object::parse_with_kconfig(&file, &bytes, &config).unwrap_err();
    assert!(e.to_string().contains("CONFIG_BPF_SYSCALL"), "{e}");
    // A value that does not fit its type is an error too.
    let config = KernelConfig::parse("CONFIG_BPF_SYSCALL=m\nCONFIG_HZ=100\n").with_release("6.1");
    let e = Object::parse_with_kconfig(&file, &bytes, &config).unwrap_err();
    assert!(e.to_string().contains("CONFIG_BPF_SYSCALL") && e.to_string().contains("bool"));
}

#[test]
fn kconfig_externs_default_to_the_running_kernel() {
    // The running kernel's HZ, read independently with zcat.
    let Ok(out) = std::process::Command::new("zcat")
        .arg("/proc/config.gz")
        .output()
    else {
        eprintln!("skipped: zcat is not available");
        return;
    };
    if !out.status.success() {
        assert!(
            std::env::var_os("USERBPF_REQUIRE_KERNEL").is_none(),
            "/proc/config.gz is not readable"
        );
        eprintln!("skipped: no /proc/config.gz");
        return;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let hz: i32 = text
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .unwrap()
        .parse()
        .unwrap();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let v: Vec<u32> = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|p| p.parse().unwrap())
        .collect();

    let (file, bytes) = fixture("kconfig.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let out = run_kconfig(&obj);
    assert_eq!(u32_at(&out, 0), (v[0] << 16) | (v[1] << 8) | v[2].min(255));
    assert_eq!(u32_at(&out, 12) as i32, hz);
    let kconfig = obj.maps.iter().find(|m| m.name == ".kconfig").unwrap();
    assert!(kconfig.vars.iter().any(|v| v.name == "CONFIG_HZ"));
}

#[test]
fn for_each_map_elem_walks_hash_and_array_maps() {
    use std::sync::Arc;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    let (file, bytes) = fixture("foreach.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let program = obj.program("walk").unwrap().to_program().unwrap();
    let mut vm = set
        .vm(&program, &Helpers::new(), Config::default())
        .unwrap();
    let field =
        |ctx: &[u8], i: usize| u64::from_le_bytes(ctx[8 + 8 * i..16 + 8 * i].try_into().unwrap());
    // Keys 1..=5 with values 10*k; the array holds i*i+1 and the walk stops
    // at index 3.
    let mut ctx = vec![0u8; 48];
    ctx[..4].copy_from_slice(&5u32.to_le_bytes());
    ctx[4..8].copy_from_slice(&3u32.to_le_bytes());
    assert_eq!(vm.run(&mut ctx), Ok(0));
    assert_eq!(
        field(&ctx, 0),
        (1..=5).map(|k| 10 * k).sum::<u64>(),
        "hash sum"
    );
    assert_eq!(field(&ctx, 1), 5, "hash callback calls");
    assert_eq!(
        field(&ctx, 2),
        (0..=3).map(|i| i * i + 1).sum::<u64>(),
        "array sum"
    );
    assert_eq!(field(&ctx, 3), 4, "array calls include the one that stops");
    assert_eq!(field(&ctx, 4), 15, "keys seen by the callback");
    // The hash callback wrote through its value pointer.
    let h = &set.maps()[0];
    for k in 1u32..=5 {
        let v = u64::from_le_bytes(h.lookup(&k.to_le_bytes()).unwrap().try_into().unwrap());
        assert_eq!(v, u64::from(k) * 10 + 1000);
    }
    // A second run: the values were reset by the updates, the walk again
    // adds 1000; the array walk without a stop visits all 8 elements.
    ctx[4..8].copy_from_slice(&99u32.to_le_bytes());
    assert_eq!(vm.run(&mut ctx), Ok(0));
    assert_eq!(field(&ctx, 3), 8);
    assert_eq!(field(&ctx, 2), (0..8).map(|i| i * i + 1).sum::<u64>());
}

/// Loads hooks.bpf.o with its maps and a VM for `prog`.
fn hooks_vm(prog: &str) -> (std::sync::Arc<userbpf_vm::maps::MapSet>, Vm) {
    use std::sync::Arc;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    let (file, bytes) = fixture("hooks.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let vm = set
        .vm_for_object(&obj, prog, &Helpers::kernel_basics(), Config::default())
        .unwrap_or_else(|e| panic!("{e}"));
    (set, vm)
}

fn map_named<'a>(set: &'a userbpf_vm::maps::MapSet, name: &str) -> &'a userbpf_vm::maps::Map {
    set.maps()
        .iter()
        .find(|m| m.spec().name == name)
        .unwrap_or_else(|| panic!("no map {name}"))
}

fn words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn hook_helpers_report_the_event_and_walk_the_user_stack() {
    use userbpf_vm::HookInfo;

    let (set, mut vm) = hooks_vm("probe");
    // A frame-pointer chain: three frames returning to 0x1111, 0x2222 and
    // 0x3333, the last with a null frame pointer.
    let mut frames = vec![0u64; 6];
    let base = frames.as_ptr() as u64;
    frames[0] = base + 16;
    frames[1] = 0x1111;
    frames[2] = base + 32;
    frames[3] = 0x2222;
    frames[4] = 0;
    frames[5] = 0x3333;
    // struct pt_regs (x86-64): bp at 32, ip at 128, sp at 152.
    let mut regs = vec![0u8; 168];
    regs[32..40].copy_from_slice(&base.to_le_bytes());
    regs[128..136].copy_from_slice(&0x4000u64.to_le_bytes());
    regs[152..160].copy_from_slice(&base.to_le_bytes());
    vm.set_hook_info(HookInfo {
        attach_cookie: 0xc00c1e,
        func_ip: 0x4000,
        user_regs: Some(regs.as_ptr() as u64),
        ..HookInfo::default()
    });
    assert_eq!(vm.run(&mut regs.clone()), Ok(0));
    std::hint::black_box(&frames);
    let res = words(&map_named(&set, ".bss").lookup(&0u32.to_le_bytes()).unwrap());
    // ip, cookie, user_bytes, user[4], kernel_bytes, bad_size, stackid,
    // stackid_again, stackid_skip2, override (then the fexit result).
    assert_eq!(res[0], 0x4000, "bpf_get_func_ip");
    assert_eq!(res[1], 0xc00c1e, "bpf_get_attach_cookie");
    assert_eq!(res[2] as i64, 32, "bpf_get_stack fills the 4-frame buffer");
    assert_eq!(&res[3..7], &[0x4000, 0x1111, 0x2222, 0x3333]);
    assert_eq!(res[7] as i64, 0, "no kernel stack in user space");
    assert_eq!(
        res[8] as i64, -22,
        "a size that is not a multiple of 8 is -EINVAL"
    );
    let id = res[9] as i64;
    assert!(id >= 0, "bpf_get_stackid: {id}");
    assert_eq!(res[10] as i64, id, "the same stack gets the same id");
    let stacks = map_named(&set, "stacks");
    let trace = words(&stacks.lookup(&(id as u32).to_le_bytes()).unwrap());
    assert_eq!(trace, vec![0x4000, 0x1111, 0x2222, 0x3333, 0, 0, 0, 0]);
    let skipped = res[11] as i64;
    if skipped >= 0 {
        let trace = words(&stacks.lookup(&(skipped as u32).to_le_bytes()).unwrap());
        assert_eq!(trace, vec![0x2222, 0x3333, 0, 0, 0, 0, 0, 0]);
    } else {
        assert_eq!(skipped, -17, "a bucket taken by another stack is -EEXIST");
    }
    assert_eq!(res[12], 0, "bpf_override_return");
    assert_eq!(vm.last_outcome().override_return, Some(42));
    // Stack ids can be deleted from user space; updates are refused.
    assert!(stacks.delete(&(id as u32).to_le_bytes()).is_ok());
    assert!(stacks.lookup(&(id as u32).to_le_bytes()).is_none());
    assert!(stacks.update(&0u32.to_le_bytes(), &[0u8; 64], 0).is_err());

    // Without registers from the hook there is no user stack: -EFAULT.
    vm.set_hook_info(HookInfo::default());
    assert_eq!(vm.run(&mut regs.clone()), Ok(0));
    let res = words(&map_named(&set, ".bss").lookup(&0u32.to_le_bytes()).unwrap());
    assert_eq!(res[2] as i64, -14);
    assert_eq!(&res[3..7], &[0, 0, 0, 0], "the buffer is zeroed on error");
    assert_eq!(res[9] as i64, -14);
}

#[test]
fn func_arg_helpers_read_the_traced_functions_arguments() {
    use userbpf_vm::HookInfo;

    let (set, mut vm) = hooks_vm("fexit_add");
    // userbpf_demo_add(7, 35) returned 42: args then the return value.
    let mut ctx: Vec<u8> = [7u64, 35, 42]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    vm.set_hook_info(HookInfo {
        func_arg_count: Some(2),
        func_has_ret: true,
        ..HookInfo::default()
    });
    assert_eq!(vm.run(&mut ctx), Ok(0));
    let bss = words(&map_named(&set, ".bss").lookup(&0u32.to_le_bytes()).unwrap());
    // fexit_res follows probe_res (13 words).
    assert_eq!(&bss[13..19], &[2, 35, 0, (-22i64) as u64, 42, 0]);

    // fentry style (no return value): bpf_get_func_ret is -EOPNOTSUPP.
    vm.set_hook_info(HookInfo {
        func_arg_count: Some(2),
        ..HookInfo::default()
    });
    assert_eq!(vm.run(&mut ctx), Ok(0));
    let bss = words(&map_named(&set, ".bss").lookup(&0u32.to_le_bytes()).unwrap());
    assert_eq!(bss[18] as i64, -95);

    // A hook that passes no arguments: a fault naming the helper.
    vm.set_hook_info(HookInfo::default());
    let err = vm.run(&mut ctx).unwrap_err().to_string();
    assert!(
        err.contains("bpf_get_func_arg_cnt") && err.contains("no function arguments"),
        "{err}"
    );
}

#[test]
fn send_signal_signals_the_current_thread() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static GOT: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_usr2(_: libc::c_int) {
        GOT.store(true, Ordering::SeqCst);
    }
    // SAFETY: installs an async-signal-safe handler for SIGUSR2, which no
    // other test uses.
    unsafe { libc::signal(libc::SIGUSR2, on_usr2 as *const () as libc::sighandler_t) };
    let (_set, mut vm) = hooks_vm("signal");
    let run = |vm: &mut Vm, sig: u32, thread: u32| {
        let mut ctx = vec![0u8; 24];
        ctx[16..20].copy_from_slice(&sig.to_le_bytes());
        ctx[20..24].copy_from_slice(&thread.to_le_bytes());
        assert_eq!(vm.run(&mut ctx), Ok(0));
        i64::from_le_bytes(ctx[8..16].try_into().unwrap())
    };
    assert_eq!(run(&mut vm, 0, 0), 0, "signal 0 only checks");
    assert_eq!(run(&mut vm, 65, 0), -22, "beyond _NSIG is -EINVAL");
    assert!(!GOT.load(Ordering::SeqCst));
    assert_eq!(run(&mut vm, libc::SIGUSR2 as u32, 1), 0);
    assert!(GOT.load(Ordering::SeqCst), "the handler ran on this thread");
}

#[test]
fn timers_fire_rearm_and_cancel() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    let (file, bytes) = fixture("timer.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let mut arm = set
        .vm_for_object(&obj, "arm", &Helpers::new(), Config::default())
        .unwrap();
    let mut cancel = set
        .vm_for_object(&obj, "cancel", &Helpers::new(), Config::default())
        .unwrap();
    let args = |key: u32, ns: u64, rearm: u64| {
        let mut a = vec![0u8; 80];
        a[..4].copy_from_slice(&key.to_le_bytes());
        a[8..16].copy_from_slice(&ns.to_le_bytes());
        a[16..24].copy_from_slice(&rearm.to_le_bytes());
        a
    };
    let field = |a: &[u8], off: usize| i64::from_le_bytes(a[off..off + 8].try_into().unwrap());
    let elem = |key: u32| words(&set.maps()[0].lookup(&key.to_le_bytes()).unwrap());

    // Key 0: fires after 1 ms and re-arms itself until it has fired 3 times.
    let mut a = args(0, 1_000_000, 3);
    assert_eq!(arm.run(&mut a), Ok(0));
    assert_eq!(field(&a, 72), -22, "clock 3 is -EINVAL");
    assert_eq!(field(&a, 24), 0, "bpf_timer_init");
    assert_eq!(field(&a, 32), -16, "a second init is -EBUSY");
    assert_eq!(field(&a, 40), -22, "start without a callback is -EINVAL");
    assert_eq!(field(&a, 48), 0, "bpf_timer_set_callback");
    assert_eq!(field(&a, 56), 0, "bpf_timer_start");
    let deadline = Instant::now() + Duration::from_secs(10);
    while elem(0)[2] < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(20));
    let e = elem(0);
    assert_eq!(e[2], 3, "fired exactly 3 times");
    assert_eq!(e[3], 0, "the callback saw its key");
    assert_eq!(
        e[4] as i64, -35,
        "cancelling itself from its callback is -EDEADLK"
    );

    // Key 1: armed for 60 s, cancelled: 1 (it was pending), then 0.
    let mut a = args(1, 60_000_000_000, 1);
    assert_eq!(arm.run(&mut a), Ok(0));
    assert_eq!(field(&a, 56), 0);
    let mut c = args(1, 0, 0);
    assert_eq!(cancel.run(&mut c), Ok(0));
    assert_eq!(field(&c, 64), 1, "a pending timer was cancelled");
    assert_eq!(cancel.run(&mut c), Ok(0));
    assert_eq!(field(&c, 64), 0, "nothing left to cancel");
    assert_eq!(elem(1)[2], 0, "never fired");

    // Key 2 was never initialised: cancel is -EINVAL.
    let mut c = args(2, 0, 0);
    assert_eq!(cancel.run(&mut c), Ok(0));
    assert_eq!(field(&c, 64), -22);

    // Timers in hash map elements: the one whose element is deleted before
    // it expires never fires; the other does.
    let mut arm_hash = set
        .vm_for_object(&obj, "arm_hash", &Helpers::new(), Config::default())
        .unwrap();
    for key in [1u32, 2] {
        let mut a = args(key, 30_000_000, 1);
        assert_eq!(arm_hash.run(&mut a), Ok(0));
        assert_eq!((field(&a, 24), field(&a, 48), field(&a, 56)), (0, 0, 0));
    }
    let htimers = map_named(&set, "htimers");
    htimers.delete(&1u32.to_le_bytes()).unwrap();
    let fired = || words(&map_named(&set, ".bss").lookup(&0u32.to_le_bytes()).unwrap())[0];
    let deadline = Instant::now() + Duration::from_secs(10);
    while fired() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(fired(), 1, "only the timer whose element lives fired");
}

#[test]
fn numeric_iterator_kfuncs_run_in_user_space() {
    use std::sync::Arc;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    let (file, bytes) = fixture("iter.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let mut vm = set
        .vm_for_object(
            &obj,
            "sum_range",
            &Helpers::kernel_basics(),
            Config::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let mut run = |start: i32, end: i32| {
        let mut ctx = vec![0u8; 32];
        ctx[..4].copy_from_slice(&start.to_le_bytes());
        ctx[4..8].copy_from_slice(&end.to_le_bytes());
        assert_eq!(vm.run(&mut ctx), Ok(0));
        let w = |o: usize| i64::from_le_bytes(ctx[o..o + 8].try_into().unwrap());
        (w(8), w(16), w(24))
    };
    // (sum, count, bpf_iter_num_new's return), the sums computed here.
    assert_eq!(run(0, 10), ((0..10).sum(), 10, 0));
    assert_eq!(run(-5, 3), ((-5..3).sum(), 8, 0));
    assert_eq!(run(7, 7), (0, 0, 0), "an empty range");
    assert_eq!(run(5, 1), (0, 0, -22), "start > end is -EINVAL");
    assert_eq!(
        run(0, 9_000_000),
        (0, 0, -7),
        "more than BPF_MAX_LOOPS is -E2BIG"
    );
}

#[test]
fn unknown_kfuncs_and_ksyms_are_errors_naming_the_symbol() {
    let (file, bytes) = fixture("iter.bpf.o");
    // The same object calling a kfunc user space does not have (the name
    // patched in the string table, same length).
    let patched = replace_all(&bytes, b"bpf_iter_num_destroy", b"bpf_rcu_read_unlock_");
    let err = Object::parse(&file, &patched).unwrap_err().to_string();
    assert!(
        err.contains("kfunc `bpf_rcu_read_unlock_`") && err.contains("sum_range"),
        "{err}"
    );
    let (file, bytes) = fixture("ksym.bpf.o");
    let err = Object::parse(&file, &bytes).unwrap_err().to_string();
    assert!(
        err.contains("`bpf_prog_active`") && err.contains("__ksym") && err.contains("read_ksym"),
        "{err}"
    );
}

#[test]
fn opensnoop_style_tracepoints_see_the_kernels_records() {
    use std::sync::Arc;
    use userbpf_vm::context::trace::{context_size, raw_tracepoint_args, SYS_ENTER_SIZE};
    use userbpf_vm::context::{PtRegs, SysEnter, SysExit};
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    const OPENAT: i64 = 257;
    let (file, bytes) = fixture("opensnoop.bpf.o");
    let mut obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        context_size(&obj.program("enter_openat").unwrap().kind),
        Some(SYS_ENTER_SIZE)
    );
    let pid = std::process::id();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let fname = c"/etc/hostname";
    let run = |obj: &Object| {
        let set = Arc::new(MapSet::from_object(obj).unwrap());
        let vm = |name: &str| {
            set.vm_for_object(obj, name, &Helpers::kernel_basics(), Config::default())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let (mut enter, mut exit) = (vm("enter_openat"), vm("exit_openat"));
        let mut rec = SysEnter {
            id: OPENAT,
            args: [
                (-100i64) as u64, // AT_FDCWD
                fname.as_ptr() as u64,
                0o2101, // O_WRONLY | O_CREAT | O_APPEND... as flags
                0o644,
                0,
                0,
            ],
            ..SysEnter::default()
        }
        .to_bytes();
        assert_eq!(enter.run(&mut rec), Ok(0));
        let mut rec = SysExit {
            id: OPENAT,
            ret: 7,
            ..SysExit::default()
        }
        .to_bytes();
        assert_eq!(exit.run(&mut rec), Ok(0));
        let events = set
            .maps()
            .iter()
            .find(|m| m.spec().name == "events")
            .unwrap();
        let mut got = Vec::new();
        events.ringbuf_consume(|r| got.push(r.to_vec()));
        got
    };
    let got = run(&obj);
    assert_eq!(got.len(), 1, "one event");
    let e = &got[0];
    let u32_at = |o: usize| u32::from_le_bytes(e[o..o + 4].try_into().unwrap());
    assert_eq!(u32_at(0), pid);
    assert_eq!(u32_at(4), tid);
    assert_eq!(u32_at(8), 0o2101, "flags from args[2]");
    assert_eq!(u32_at(12), 7, "ret from the exit record");
    let name = &e[32..32 + 64];
    let end = name.iter().position(|&b| b == 0).unwrap();
    assert_eq!(&name[..end], fname.to_bytes());

    // targ_tgid set before load to another process: no event.
    obj.set_global("targ_tgid", &(pid + 1).to_le_bytes())
        .unwrap();
    assert!(run(&obj).is_empty());

    // The raw tracepoint: args[0] is the pt_regs of the syscall, args[1]
    // its number.
    obj.set_global("targ_tgid", &0u32.to_le_bytes()).unwrap();
    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let mut raw = set
        .vm_for_object(
            &obj,
            "raw_enter",
            &Helpers::kernel_basics(),
            Config::default(),
        )
        .unwrap();
    let regs = PtRegs::with_args(&[0xfeed_f00d, 2, 3]).to_bytes();
    for _ in 0..3 {
        let mut ctx = raw_tracepoint_args(&[regs.as_ptr() as u64, OPENAT as u64]);
        assert_eq!(raw.run(&mut ctx), Ok(0));
    }
    let map = |name: &str| set.maps().iter().find(|m| m.spec().name == name).unwrap();
    let count = map("syscalls")
        .lookup(&(OPENAT as u32).to_le_bytes())
        .unwrap();
    assert_eq!(u64::from_le_bytes(count.try_into().unwrap()), 3);
    let last = map(".bss").lookup(&0u32.to_le_bytes()).unwrap();
    assert_eq!(u64::from_le_bytes(last.try_into().unwrap()), 0xfeed_f00d);
}

// ---- CO-RE relocations (core.bpf.o, built against vmlinux.h) ----

use userbpf_vm::interp::FaultKind;
use userbpf_vm::object::{LoadOptions, TargetBtf};

/// x86-64 `struct pt_regs` (arch/x86/include/asm/ptrace.h): 21 eight-byte
/// fields in this order (`cs` and `ss` are unions of the same size since
/// FRED).
const PT_REGS: [&str; 21] = [
    "r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di",
    "orig_ax", "ip", "cs", "flags", "sp", "ss",
];

fn pt_regs_offset(field: &str) -> usize {
    8 * PT_REGS.iter().position(|&f| f == field).unwrap()
}

/// A `struct pt_regs` image: field `i` holds `0x01020304_00000000 | (i + 1) * 0x11`.
fn pt_regs_image() -> Vec<u8> {
    (0..PT_REGS.len() as u64)
        .flat_map(|i| (0x0102_0304_0000_0000 | ((i + 1) * 0x11)).to_le_bytes())
        .collect()
}

fn reg(image: &[u8], field: &str) -> u64 {
    let o = pt_regs_offset(field);
    u64::from_le_bytes(image[o..o + 8].try_into().unwrap())
}

fn load_core(target: TargetBtf) -> Object {
    let (file, bytes) = fixture("core.bpf.o");
    let options = LoadOptions {
        target_btf: target,
        ..LoadOptions::default()
    };
    Object::parse_with(&file, &bytes, &options).unwrap_or_else(|e| panic!("{e}"))
}

fn run_core(obj: &Object, prog: &str) -> Result<u64, userbpf_vm::interp::Fault> {
    let program = obj.program(prog).unwrap().to_program().unwrap();
    let mut vm = Vm::new(&program, Helpers::kernel_basics()).unwrap_or_else(|e| panic!("{e}"));
    vm.run(&mut pt_regs_image())
}

/// The LDX offsets of a linked program, in order.
fn load_offsets(obj: &Object, prog: &str) -> Vec<i16> {
    obj.program(prog)
        .unwrap()
        .insns
        .iter()
        .filter(|i| i.code & 0x07 == 0x01)
        .map(|i| i.off)
        .collect()
}

/// What every target BTF with the x86-64 `struct pt_regs` gives.
fn check_core_fixture(obj: &Object, kernel_enum: bool) {
    let image = pt_regs_image();
    let (si, di, ip) = (
        pt_regs_offset("si"),
        pt_regs_offset("di"),
        pt_regs_offset("ip"),
    );
    // Direct accesses through vmlinux.h's preserve_access_index types.
    assert_eq!(load_offsets(obj, "parm1"), [di as i16]);
    assert_eq!(run_core(obj, "parm1"), Ok(reg(&image, "di")));
    // BPF_CORE_READ: bpf_probe_read_kernel at a relocated offset.
    assert_eq!(run_core(obj, "core_read"), Ok(reg(&image, "si")));
    // A ___flavor struct with fields in another order, and a .text
    // subprogram relocated in each program it is linked into.
    assert_eq!(
        load_offsets(obj, "flavor"),
        [ip as i16, di as i16, si as i16]
    );
    assert_eq!(load_offsets(obj, "subprog"), [si as i16]);
    assert_eq!(
        run_core(obj, "flavor"),
        Ok(reg(&image, "ip") ^ (reg(&image, "di") << 1) ^ (reg(&image, "si") << 2))
    );
    assert_eq!(run_core(obj, "subprog"), Ok(reg(&image, "si")));
    // Existence, sizes, signedness, type matches.
    let bits = run_core(obj, "exists").unwrap();
    let expected = 1 // field di exists
        | 1 << 2 // struct pt_regs exists
        // struct trace_entry does not "match": type matching compares the
        // names of member types, and clang calls `unsigned short` what
        // pahole calls `short unsigned int` (libbpf gives 0 too).
        | u64::from(kernel_enum) << 6
        | 1 << 7 // struct trace_entry___pid { int pid; } matches
        | 8 << 8 // sizeof di
        | 8 << 16 // sizeof(struct trace_entry)
        | 1 << 24 // trace_entry.pid is signed
        | 1 << 26 // struct pt_regs has a target type id
        | (di as u64) << 32;
    assert_eq!(bits, expected, "{bits:#x} != {expected:#x}");
    // A missing field guarded by bpf_core_field_exists: the poisoned load
    // is dead code.
    assert_eq!(run_core(obj, "guarded"), Ok(7));
    // Unguarded: a fault at the poisoned instruction, which the object
    // explains.
    let fault = run_core(obj, "unguarded").unwrap_err();
    assert_eq!(fault.kind, FaultKind::PoisonedCoreRelocation, "{fault}");
    assert!(fault.to_string().contains("CO-RE relocation"), "{fault}");
    let p = obj.program("unguarded").unwrap();
    let failure = p
        .core_failure_at(fault.pc)
        .expect("the failure is recorded");
    let text = failure.to_string();
    assert!(
        text.contains("field `userbpf_no_such_field` of `struct pt_regs___mine`")
            && text.contains(&format!("at pc {}", fault.pc))
            && text.contains("could not be resolved"),
        "{text}"
    );
    // A local bitfield read from the target's plain int (trace_entry.pid
    // is at byte 4: the upper half of the first register).
    assert_eq!(
        run_core(obj, "bitfield"),
        Ok((reg(&image, "r15") >> 32) as i32 as i64 as u64)
    );
    // An enumerator of a ___flavor enum: the kernel's value, or absent.
    let bpf_func_probe_read_kernel = 113;
    assert_eq!(
        run_core(obj, "enumval"),
        Ok(if kernel_enum {
            bpf_func_probe_read_kernel
        } else {
            0xffff
        })
    );
}

#[test]
fn core_relocations_against_the_kernel_btf() {
    if !std::path::Path::new(userbpf_vm::object::VMLINUX_BTF).exists() {
        eprintln!("skipped: no /sys/kernel/btf/vmlinux");
        return;
    }
    let obj = load_core(TargetBtf::System);
    check_core_fixture(&obj, true);
    let failure = &obj.program("unguarded").unwrap().core_failures[0];
    assert_eq!(failure.target, "/sys/kernel/btf/vmlinux");
    // The same file, named explicitly.
    let obj = load_core(TargetBtf::File(userbpf_vm::object::VMLINUX_BTF.into()));
    check_core_fixture(&obj, true);
}

#[test]
fn core_relocations_against_the_builtin_btf() {
    let obj = load_core(TargetBtf::Builtin);
    check_core_fixture(&obj, false);
    let failure = &obj.program("unguarded").unwrap().core_failures[0];
    assert!(failure.target.contains("built-in"), "{failure}");
}

#[test]
fn core_target_without_the_types_poisons_or_answers_zero() {
    // An empty target BTF: nothing matches.
    let empty = userbpf_vm::object::btf::Btf::default();
    let obj = load_core(TargetBtf::Parsed(std::sync::Arc::new(empty)));
    let fault = run_core(&obj, "parm1").unwrap_err();
    assert_eq!(fault.kind, FaultKind::PoisonedCoreRelocation);
    let failure = obj.program("parm1").unwrap().core_failure_at(0).unwrap();
    assert!(
        failure.what.contains("field `di` of `struct pt_regs`"),
        "{failure}"
    );
    // Existence checks still answer (0) and the guarded program runs.
    assert_eq!(run_core(&obj, "guarded"), Ok(7));
    assert_eq!(run_core(&obj, "enumval"), Ok(0xffff));
    // `exists` asks for the size of a field that is not there: poisoned.
    let fault = run_core(&obj, "exists").unwrap_err();
    let p = obj.program("exists").unwrap();
    let failure = p.core_failure_at(fault.pc).expect("recorded");
    assert!(failure.what.starts_with("target_type_id") || failure.what.starts_with("byte_"));
}

#[test]
fn core_target_btf_errors_name_the_file() {
    let (file, bytes) = fixture("core.bpf.o");
    let options = LoadOptions {
        target_btf: TargetBtf::File("/nonexistent/vmlinux".into()),
        ..LoadOptions::default()
    };
    let e = Object::parse_with(&file, &bytes, &options).unwrap_err();
    assert!(matches!(e, ObjectError::TargetBtf { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
    // Objects without CO-RE relocations never load the target BTF.
    let (file, bytes) = fixture("calls.bpf.o");
    Object::parse_with(&file, &bytes, &options).unwrap_or_else(|e| panic!("{e}"));
}

/// File offset of the first CO-RE record of `.BTF.ext` in `bytes`.
fn first_core_record(bytes: &[u8]) -> usize {
    let (off, _) = goblin_like::sections(bytes)
        .into_iter()
        .find(|(_, n)| n == ".BTF.ext")
        .expect(".BTF.ext");
    let word = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
    let hdr_len = word(off + 4);
    let core_off = word(off + 24);
    // record size, then sec_name_off and num_info.
    off + hdr_len + core_off + 4 + 8
}

#[test]
fn malformed_core_relocations_are_errors() {
    let (file, bytes) = fixture("core.bpf.o");
    let rec = first_core_record(&bytes);
    let parse = |b: &[u8]| Object::parse_with(&file, b, &LoadOptions::default());

    let mut kind = bytes.clone();
    kind[rec + 12..rec + 16].copy_from_slice(&99u32.to_le_bytes());
    let e = parse(&kind).unwrap_err();
    assert!(matches!(e, ObjectError::CoreRelocation { .. }), "{e}");
    assert!(
        e.to_string().contains("unknown CO-RE relocation kind 99"),
        "{e}"
    );

    let mut misaligned = bytes.clone();
    misaligned[rec..rec + 4].copy_from_slice(&3u32.to_le_bytes());
    let e = parse(&misaligned).unwrap_err();
    assert!(e.to_string().contains("not a multiple of 8"), "{e}");

    let mut past = bytes.clone();
    past[rec..rec + 4].copy_from_slice(&0x10_0000u32.to_le_bytes());
    let e = parse(&past).unwrap_err();
    assert!(e.to_string().contains("past the end of the section"), "{e}");

    let mut type_id = bytes.clone();
    type_id[rec + 4..rec + 8].copy_from_slice(&0xffff_u32.to_le_bytes());
    let e = parse(&type_id).unwrap_err();
    assert!(e.to_string().contains("type id 65535"), "{e}");

    // The instruction does not hold what the local BTF says: the first
    // record is `second_arg`'s load of `si` at offset 8 in .text.
    let (text, _) = goblin_like::sections(&bytes)
        .into_iter()
        .find(|(_, n)| n == ".text")
        .unwrap();
    let mut off = bytes.clone();
    off[text + 2..text + 4].copy_from_slice(&16i16.to_le_bytes());
    let e = parse(&off).unwrap_err();
    assert!(
        e.to_string().contains("got 16, expected 8") && e.to_string().contains("section `.text`"),
        "{e}"
    );

    // Truncated or corrupted headers: errors naming .BTF.ext, no panic.
    let (ext, _) = goblin_like::sections(&bytes)
        .into_iter()
        .find(|(_, n)| n == ".BTF.ext")
        .unwrap();
    let mut magic = bytes.clone();
    magic[ext] = 0;
    let e = parse(&magic).unwrap_err();
    assert!(
        e.to_string().contains(".BTF.ext") && e.to_string().contains("magic"),
        "{e}"
    );
    for byte in 0..48 {
        let mut b = bytes.clone();
        b[ext + byte] ^= 0xff;
        if let Err(e) = parse(&b) {
            assert!(e.to_string().contains(&file), "{e}");
        }
    }
}

/// Runs `f` on a thread pinned to CPU 0 (per-CPU values land in slot 0).
fn on_cpu0<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a zeroed cpu_set_t with CPU 0 set, for this thread.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
            f()
        })
        .join()
        .unwrap()
    })
}

#[test]
fn percpu_hashes_add_to_the_running_cpus_value() {
    use std::sync::Arc;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Config;

    let (file, bytes) = fixture("percpu.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let results = on_cpu0(|| {
        let mut vm = set
            .vm_for_object(&obj, "count", &Helpers::new(), Config::default())
            .unwrap();
        [(3u32, 5u64), (3, 1), (4, 2)]
            .iter()
            .map(|&(key, add)| {
                let mut ctx = key_add(key, add);
                vm.run(&mut ctx).unwrap()
            })
            .collect::<Vec<_>>()
    });
    // counts + recent (twice the amount): 5+10, 6+12, 2+4.
    assert_eq!(results, vec![15, 18, 6]);
    for (name, scale) in [("counts", 1u64), ("recent", 2)] {
        let m = map_named(&set, name);
        let all = words(&m.lookup(&3u32.to_le_bytes()).unwrap());
        assert_eq!(
            all.len(),
            userbpf_vm::maps::percpu::ncpus(),
            "{name}: one value per CPU"
        );
        assert_eq!(all[0], 6 * scale, "{name}: CPU 0's value");
        assert!(
            all[1..].iter().all(|&v| v == 0),
            "{name}: other CPUs untouched"
        );
    }
}

/// A map whose value type holds a `struct bpf_spin_lock` records where:
/// `struct counts { __u64 packets; struct bpf_spin_lock lock; __u64 bytes; }`
/// has it at byte 8; maps without one record none.
#[test]
fn finds_the_spin_lock_of_map_values() {
    let (file, bytes) = fixture("spinlock.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let totals = obj.maps.iter().find(|m| m.name == "totals").expect("map");
    assert_eq!(totals.spin_lock, Some(8));
    assert_eq!(totals.value_size, 24);
    let (file, bytes) = fixture("counter.bpf.o");
    let obj = Object::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    assert!(obj.maps.iter().all(|m| m.spin_lock.is_none()));
}

#[test]
fn function_signatures_give_linkage_parameters_and_tags_as_the_kernel_reads_them() {
    use userbpf_vm::object::{FuncReturn, ParamType};
    let (name, bytes) = fixture("globals.bpf.o");
    let obj = Object::parse(&name, &bytes).unwrap();
    // `__noinline int read_checked(int *p)`: global, a pointer to 4 bytes.
    let f = &obj.functions["read_checked"];
    assert!(f.global);
    assert_eq!(f.ret, FuncReturn::Scalar);
    assert_eq!(f.params.len(), 1);
    assert_eq!(f.params[0].name, "p");
    match &f.params[0].ty {
        ParamType::Pointer {
            size,
            record,
            typedefs,
            ..
        } => {
            assert_eq!(*size, Some(4));
            assert_eq!(*record, None);
            assert!(typedefs.is_empty());
        }
        other => panic!("read_checked's p: {other:?}"),
    }
    // A pointer to the context structure, by its name.
    match &obj.functions["packet_len"].params[0].ty {
        ParamType::Pointer { record, .. } => assert_eq!(record.as_deref(), Some("__sk_buff")),
        other => panic!("packet_len's skb: {other:?}"),
    }
    // `__u32 x`: a scalar through its typedef; `void store(int *)`.
    assert_eq!(obj.functions["small_index"].params[0].ty, ParamType::Scalar);
    assert_eq!(obj.functions["store"].ret, FuncReturn::Void);
    // The programs themselves are global functions too.
    assert!(obj.functions["ctx_param"].global);
    // libbpf's `__weak __hidden` USDT helpers (STV_HIDDEN) load as static.
    let (name, bytes) = fixture("usdt.bpf.o");
    let usdt = Object::parse(&name, &bytes).unwrap();
    let arg = &usdt.functions["bpf_usdt_arg"];
    assert!(!arg.global, "{arg:?}");
    assert_eq!(arg.params.len(), 3);
}
