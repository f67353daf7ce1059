//! Maps: kernel semantics and error codes, concurrency across threads and
//! processes.

use std::sync::atomic::{AtomicU64, Ordering};

use userbpf_vm::maps::{
    Map, MapSpec, BPF_ANY, BPF_EXIST, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_NOEXIST,
};

/// A VM running the assembler program `src` (named `name`) with `set`'s
/// maps and `helpers`.
fn vm_running(
    set: &std::sync::Arc<userbpf_vm::maps::MapSet>,
    name: &str,
    src: &str,
    helpers: &userbpf_vm::Helpers,
) -> userbpf_vm::Vm {
    let program = userbpf_vm::Program::new(name, userbpf_vm::asm::assemble(src).unwrap()).unwrap();
    set.vm(&program, helpers, userbpf_vm::Config::default())
        .unwrap()
}

fn spec(name: &str, map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> MapSpec {
    MapSpec {
        name: name.into(),
        map_type,
        key_size,
        value_size,
        max_entries,
        flags: 0,
        map_extra: 0,
    }
}

fn errno(r: Result<(), userbpf_vm::maps::MapError>) -> i32 {
    r.map(|_| 0).unwrap_or_else(|e| e.errno())
}

#[test]
fn array_semantics() {
    let m = Map::create(spec("arr", BPF_MAP_TYPE_ARRAY, 4, 8, 4)).unwrap();
    assert_eq!(m.lookup(&0u32.to_le_bytes()), Some(vec![0; 8]));
    assert_eq!(m.lookup(&4u32.to_le_bytes()), None);
    m.update(&2u32.to_le_bytes(), &9u64.to_le_bytes(), BPF_ANY)
        .unwrap();
    assert_eq!(
        m.lookup(&2u32.to_le_bytes()),
        Some(9u64.to_le_bytes().to_vec())
    );
    m.update(&2u32.to_le_bytes(), &10u64.to_le_bytes(), BPF_EXIST)
        .unwrap();
    assert_eq!(
        errno(m.update(&2u32.to_le_bytes(), &1u64.to_le_bytes(), BPF_NOEXIST)),
        libc::EEXIST
    );
    assert_eq!(
        errno(m.update(&4u32.to_le_bytes(), &1u64.to_le_bytes(), BPF_ANY)),
        libc::E2BIG
    );
    assert_eq!(
        errno(m.update(&0u32.to_le_bytes(), &1u64.to_le_bytes(), 7)),
        libc::EINVAL
    );
    assert_eq!(errno(m.delete(&0u32.to_le_bytes())), libc::EINVAL);
    assert_eq!(m.keys().len(), 4);
    assert!(Map::create(spec("bad", BPF_MAP_TYPE_ARRAY, 8, 8, 4)).is_err());
    let e = Map::create(spec("later", 14, 4, 4, 16)).unwrap_err(); // BPF_MAP_TYPE_DEVMAP
    assert!(e.to_string().contains("not supported yet"), "{e}");
}

#[test]
fn hash_semantics_and_error_codes() {
    let m = Map::create(spec("h", BPF_MAP_TYPE_HASH, 4, 8, 3)).unwrap();
    let k = |i: u32| i.to_le_bytes();
    let v = |i: u64| i.to_le_bytes();
    assert_eq!(m.lookup(&k(1)), None);
    assert_eq!(errno(m.update(&k(1), &v(10), BPF_EXIST)), libc::ENOENT);
    m.update(&k(1), &v(10), BPF_NOEXIST).unwrap();
    assert_eq!(errno(m.update(&k(1), &v(11), BPF_NOEXIST)), libc::EEXIST);
    m.update(&k(1), &v(12), BPF_EXIST).unwrap();
    m.update(&k(2), &v(20), BPF_ANY).unwrap();
    m.update(&k(3), &v(30), BPF_ANY).unwrap();
    // Full: a new key is refused, an existing one still updates.
    assert_eq!(errno(m.update(&k(4), &v(40), BPF_ANY)), libc::E2BIG);
    m.update(&k(3), &v(31), BPF_ANY).unwrap();
    assert_eq!(m.lookup(&k(1)), Some(v(12).to_vec()));
    assert_eq!(m.lookup(&k(3)), Some(v(31).to_vec()));
    let mut keys = m.keys();
    keys.sort();
    assert_eq!(keys, vec![k(1).to_vec(), k(2).to_vec(), k(3).to_vec()]);
    assert_eq!(errno(m.delete(&k(9))), libc::ENOENT);
    m.delete(&k(2)).unwrap();
    assert_eq!(m.lookup(&k(2)), None);
    // The freed element is reused.
    m.update(&k(4), &v(40), BPF_ANY).unwrap();
    assert_eq!(m.lookup(&k(4)), Some(v(40).to_vec()));
    assert_eq!(errno(m.update(&[1, 2], &v(1), BPF_ANY)), libc::EINVAL);
    // Lookup pointers point into the value region programs may use.
    let p = m.lookup_ptr(&k(4)).unwrap() as u64;
    assert!(m.value_region().contains(p, 8));
}

#[test]
fn many_keys_with_collisions() {
    let m = Map::create(spec("big", BPF_MAP_TYPE_HASH, 8, 8, 10_000)).unwrap();
    for i in 0..10_000u64 {
        m.update(&i.to_le_bytes(), &(i * 3).to_le_bytes(), BPF_NOEXIST)
            .unwrap();
    }
    for i in (0..10_000u64).step_by(2) {
        m.delete(&i.to_le_bytes()).unwrap();
    }
    for i in 0..10_000u64 {
        let got = m.lookup(&i.to_le_bytes());
        if i % 2 == 0 {
            assert_eq!(got, None);
        } else {
            assert_eq!(got, Some((i * 3).to_le_bytes().to_vec()));
        }
    }
    assert_eq!(m.keys().len(), 5_000);
}

const KEYS: u32 = 16;
const THREADS: usize = 8;
const ADDS: u64 = 1_000_000;

/// Each thread adds 1 to a value of every key, ADDS times in total, through
/// the pointer lookup returns (as a program's atomic add would).
fn hammer(m: &Map) {
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                for n in 0..ADDS {
                    let key = ((n + t as u64) % u64::from(KEYS)) as u32;
                    let p = m.lookup_ptr(&key.to_le_bytes()).expect("key present");
                    // SAFETY: values are 8-aligned u64s inside the region.
                    let cell = unsafe { AtomicU64::from_ptr(p.cast()) };
                    cell.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
}

fn total(m: &Map) -> u64 {
    (0..KEYS)
        .map(|k| u64::from_le_bytes(m.lookup(&k.to_le_bytes()).unwrap().try_into().unwrap()))
        .sum()
}

#[test]
fn concurrent_updates_from_threads_lose_nothing() {
    let m = Map::create(spec("conc", BPF_MAP_TYPE_HASH, 4, 8, 64)).unwrap();
    for k in 0..KEYS {
        m.update(&k.to_le_bytes(), &0u64.to_le_bytes(), BPF_NOEXIST)
            .unwrap();
    }
    hammer(&m);
    assert_eq!(total(&m), THREADS as u64 * ADDS);
}

/// The child side of `two_processes_share_a_hash_map`: runs only when the
/// parent sets USERBPF_TEST_MAP_PATH.
#[test]
fn child_process_updater() {
    let Some(path) = std::env::var_os("USERBPF_TEST_MAP_PATH") else {
        return;
    };
    let m = Map::open(std::path::Path::new(&path)).unwrap();
    hammer(&m);
}

#[test]
fn two_processes_share_a_hash_map() {
    let path = std::env::temp_dir().join(format!("userbpf-map-test-{}", std::process::id()));
    let m = Map::create_at(spec("shared", BPF_MAP_TYPE_HASH, 4, 8, 64), &path).unwrap();
    for k in 0..KEYS {
        m.update(&k.to_le_bytes(), &0u64.to_le_bytes(), BPF_NOEXIST)
            .unwrap();
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_updater", "--nocapture"])
        .env("USERBPF_TEST_MAP_PATH", &path)
        .spawn()
        .unwrap();
    hammer(&m);
    assert!(child.wait().unwrap().success());
    assert_eq!(total(&m), 2 * THREADS as u64 * ADDS);
    drop(m);
    assert!(!path.exists(), "the map file is removed with the map");
}

fn qspec(map_type: u32, max: u32) -> MapSpec {
    MapSpec {
        name: "q".into(),
        map_type,
        key_size: 0,
        value_size: 4,
        max_entries: max,
        flags: 0,
        map_extra: 0,
    }
}

#[test]
fn queues_are_fifo_stacks_are_lifo_with_kernel_errors() {
    use userbpf_vm::maps::queue::{BPF_MAP_TYPE_QUEUE, BPF_MAP_TYPE_STACK};
    let v = |x: u32| x.to_le_bytes();
    for (map_type, order) in [
        (BPF_MAP_TYPE_QUEUE, [1u32, 2, 3]),
        (BPF_MAP_TYPE_STACK, [3, 2, 1]),
    ] {
        let q = Map::create(qspec(map_type, 3)).unwrap();
        assert_eq!(q.pop(true).unwrap_err().errno(), libc::ENOENT);
        for x in 1..=3 {
            q.push(&v(x), 0).unwrap();
        }
        assert_eq!(q.push(&v(4), 0).unwrap_err().errno(), libc::E2BIG);
        assert_eq!(q.pop(false).unwrap(), v(order[0]).to_vec(), "peek");
        for x in order {
            assert_eq!(q.pop(true).unwrap(), v(x).to_vec());
        }
        assert_eq!(q.pop(false).unwrap_err().errno(), libc::ENOENT);
    }
    // BPF_EXIST on a full map drops the oldest value.
    let q = Map::create(qspec(BPF_MAP_TYPE_QUEUE, 2)).unwrap();
    for x in [1, 2, 3] {
        q.push(&v(x), BPF_EXIST).unwrap();
    }
    assert_eq!(q.pop(true).unwrap(), v(2).to_vec());
    assert_eq!(q.pop(true).unwrap(), v(3).to_vec());
    let s = Map::create(qspec(BPF_MAP_TYPE_STACK, 2)).unwrap();
    for x in [1, 2, 3] {
        s.push(&v(x), BPF_EXIST).unwrap();
    }
    assert_eq!(s.pop(true).unwrap(), v(3).to_vec());
    assert_eq!(s.pop(true).unwrap(), v(2).to_vec());
    assert_eq!(
        s.push(&v(1), BPF_NOEXIST).unwrap_err().errno(),
        libc::EINVAL
    );
    assert!(Map::create(MapSpec {
        key_size: 4,
        ..qspec(BPF_MAP_TYPE_QUEUE, 2)
    })
    .is_err());
}

#[test]
fn bloom_filters_have_no_false_negatives() {
    use userbpf_vm::maps::bloom::BPF_MAP_TYPE_BLOOM_FILTER;
    let b = Map::create(MapSpec {
        name: "bloom".into(),
        map_type: BPF_MAP_TYPE_BLOOM_FILTER,
        key_size: 0,
        value_size: 8,
        max_entries: 1000,
        flags: 0,
        map_extra: 0,
    })
    .unwrap();
    for i in 0..1000u64 {
        b.update(&[], &(i * 7919).to_le_bytes(), BPF_ANY).unwrap();
    }
    for i in 0..1000u64 {
        assert!(
            b.bloom_contains(&(i * 7919).to_le_bytes()),
            "false negative {i}"
        );
    }
    // With 5 hashes and ~1.4 bits per hash per entry the false-positive
    // rate stays low: check it on 10,000 absent values.
    let fp = (0..10_000u64)
        .filter(|i| b.bloom_contains(&(i * 7919 + 1).to_le_bytes()))
        .count();
    // Theory: (1 - e^(-5 * 1000 / 8192))^5, about 2%.
    assert!(fp < 400, "{fp} false positives out of 10,000");
}

/// False positives among 10,000 absent values after 1,000 insertions into
/// a bloom filter with this `map_extra`.
fn bloom_false_positives(b: &Map) -> usize {
    for i in 0..1000u64 {
        b.update(&[], &(i * 7919).to_le_bytes(), BPF_ANY).unwrap();
    }
    (0..10_000u64)
        .filter(|i| b.bloom_contains(&(i * 7919 + 1).to_le_bytes()))
        .count()
}

#[test]
fn bloom_filters_take_their_hash_count_from_map_extra() {
    use userbpf_vm::maps::bloom::BPF_MAP_TYPE_BLOOM_FILTER;
    let bloom = |map_extra: u64| MapSpec {
        name: "bloom_extra".into(),
        map_type: BPF_MAP_TYPE_BLOOM_FILTER,
        key_size: 0,
        value_size: 8,
        max_entries: 1000,
        flags: 0,
        map_extra,
    };
    // One hash over 2048 bits: about 1 - e^(-1000/2048) = 39% false
    // positives. Fifteen hashes over 32768 bits: about 3e-7.
    let one = bloom_false_positives(&Map::create(bloom(1)).unwrap());
    assert!(one > 2500, "{one} false positives with one hash");
    let fifteen = bloom_false_positives(&Map::create(bloom(15)).unwrap());
    assert!(fifteen < 10, "{fifteen} false positives with 15 hashes");

    // A map opened from its file keeps the creator's hash count.
    let path = std::env::temp_dir().join(format!("userbpf-bloom-test-{}", std::process::id()));
    let created = Map::create_at(bloom(1), &path).unwrap();
    let opened = Map::open(&path).unwrap();
    assert_eq!(opened.spec().map_extra, 1);
    assert!(bloom_false_positives(&opened) > 2500);
    for i in 0..1000u64 {
        assert!(created.bloom_contains(&(i * 7919).to_le_bytes()));
    }
    drop(opened);
    drop(created);
    assert!(!path.exists());

    // As the kernel: 16 or more hashes, or map_extra on another map type,
    // is EINVAL.
    let e = Map::create(bloom(16)).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    let mut array = spec("array_extra", BPF_MAP_TYPE_ARRAY, 4, 8, 1);
    array.map_extra = 3;
    assert_eq!(Map::create(array).unwrap_err().errno(), libc::EINVAL);
}

#[test]
fn lru_hash_evicts_what_was_not_used_and_never_fills_up() {
    use userbpf_vm::maps::hash::BPF_MAP_TYPE_LRU_HASH;
    let m = Map::create(spec("lru", BPF_MAP_TYPE_LRU_HASH, 4, 8, 4)).unwrap();
    let k = |i: u32| i.to_le_bytes();
    for i in 0..4 {
        m.update(&k(i), &u64::from(i).to_le_bytes(), BPF_NOEXIST)
            .unwrap();
    }
    // Programs use keys 0 and 2 (user-space lookups do not count as uses,
    // as in the kernel); inserting 4 and 5 evicts unused ones (1 and 3).
    assert!(m.lookup_ptr(&k(0)).is_some());
    assert!(m.lookup_ptr(&k(2)).is_some());
    m.update(&k(4), &4u64.to_le_bytes(), BPF_ANY).unwrap();
    m.update(&k(5), &5u64.to_le_bytes(), BPF_ANY).unwrap();
    let mut keys = m.keys();
    keys.sort();
    assert_eq!(
        keys,
        vec![k(0).to_vec(), k(2).to_vec(), k(4).to_vec(), k(5).to_vec()]
    );
    // Many more inserts: never -E2BIG, never more than max_entries.
    for i in 10..1000u32 {
        m.update(&k(i), &u64::from(i).to_le_bytes(), BPF_ANY)
            .unwrap();
        assert!(m.keys().len() <= 4);
    }
    assert_eq!(m.lookup(&k(999)), Some(999u64.to_le_bytes().to_vec()));
}

#[test]
fn lru_hash_under_concurrent_inserts_stays_consistent() {
    use userbpf_vm::maps::hash::BPF_MAP_TYPE_LRU_HASH;
    let m = Map::create(spec("lru-conc", BPF_MAP_TYPE_LRU_HASH, 4, 8, 64)).unwrap();
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let m = &m;
            s.spawn(move || {
                for n in 0..20_000u32 {
                    let key = (n.wrapping_mul(2_654_435_761) ^ t) % 500;
                    m.update(&key.to_le_bytes(), &u64::from(key).to_le_bytes(), BPF_ANY)
                        .unwrap();
                    if let Some(v) = m.lookup(&key.to_le_bytes()) {
                        // A value always belongs to its key (no torn links).
                        assert!(u64::from_le_bytes(v.try_into().unwrap()) < 500);
                    }
                }
            });
        }
    });
    let keys = m.keys();
    assert!(keys.len() <= 64 && !keys.is_empty());
    for k in keys {
        let v = u64::from_le_bytes(m.lookup(&k).unwrap().try_into().unwrap());
        assert_eq!(v, u64::from(u32::from_le_bytes(k.try_into().unwrap())));
    }
}

#[test]
fn percpu_array_loses_no_update_from_preempted_runs() {
    use std::sync::Arc;
    use userbpf_vm::asm::assemble;
    use userbpf_vm::interp::PreparedProgram;
    use userbpf_vm::maps::array::BPF_MAP_TYPE_PERCPU_ARRAY;
    use userbpf_vm::maps::percpu::ncpus;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::{Config, Program, Vm};

    let mut set = MapSet::default();
    let map = Map::create(spec("pcpu", BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 4)).unwrap();
    let handle = map.handle();
    set.push(map);
    let set = Arc::new(set);
    // A deliberately racy, non-atomic increment with busy work between the
    // load and the store: only the slot lease keeps it exact.
    let src = format!(
        "lddw %r1, {handle:#x}
        stw [%r10-4], 2
        mov %r2, %r10
        add %r2, -4
        call 1
        jeq %r0, 0, out
        ldxdw %r6, [%r0]
        mov %r7, 0
    spin:
        add %r7, 1
        jlt %r7, 50, spin
        add %r6, 1
        stxdw [%r0], %r6
    out:
        mov %r0, 0
        exit"
    );
    let program = Program::new("inc", assemble(&src).unwrap()).unwrap();
    let prepared =
        Arc::new(PreparedProgram::new(&program, &set.helpers(), Config::default()).unwrap());
    const THREADS: u64 = 8;
    const RUNS: u64 = 50_000;
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let prepared = prepared.clone();
            let set = set.clone();
            s.spawn(move || {
                let mut vm = Vm::from_prepared(prepared);
                for r in set.regions() {
                    // SAFETY: `set` outlives `vm` in this closure.
                    unsafe { vm.add_region(r) };
                }
                for _ in 0..RUNS {
                    vm.run_with_args([0; 5]).unwrap();
                }
            });
        }
    });
    let m = &set.maps()[0];
    assert_eq!(m.percpu_slots(), Some(ncpus()));
    let all = m.lookup(&2u32.to_le_bytes()).unwrap();
    assert_eq!(all.len(), 8 * ncpus());
    let total: u64 = all
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .sum();
    assert_eq!(total, THREADS * RUNS);
}

#[test]
fn lpm_trie_finds_the_longest_matching_prefix() {
    use userbpf_vm::maps::lpm::BPF_MAP_TYPE_LPM_TRIE;
    use userbpf_vm::maps::BPF_F_NO_PREALLOC;
    let lpm_spec = MapSpec {
        name: "lpm".into(),
        map_type: BPF_MAP_TYPE_LPM_TRIE,
        key_size: 8,
        value_size: 4,
        max_entries: 4,
        flags: BPF_F_NO_PREALLOC,
        map_extra: 0,
    };
    assert!(
        Map::create(MapSpec {
            flags: 0,
            map_extra: 0,
            ..lpm_spec.clone()
        })
        .is_err(),
        "needs NO_PREALLOC"
    );
    let m = Map::create(lpm_spec).unwrap();
    let key = |len: u32, ip: [u8; 4]| {
        let mut k = len.to_le_bytes().to_vec();
        k.extend_from_slice(&ip);
        k
    };
    let v = |x: u32| x.to_le_bytes();
    m.update(&key(8, [10, 0, 0, 0]), &v(8), BPF_ANY).unwrap();
    m.update(&key(16, [10, 1, 0, 0]), &v(16), BPF_ANY).unwrap();
    m.update(&key(24, [10, 1, 2, 99]), &v(24), BPF_ANY).unwrap(); // bits past 24 ignored
    m.update(&key(0, [0, 0, 0, 0]), &v(0), BPF_ANY).unwrap(); // default route
    let find = |ip: [u8; 4]| {
        m.lookup(&key(32, ip))
            .map(|x| u32::from_le_bytes(x.try_into().unwrap()))
    };
    assert_eq!(find([10, 1, 2, 3]), Some(24));
    assert_eq!(find([10, 1, 9, 9]), Some(16));
    assert_eq!(find([10, 9, 9, 9]), Some(8));
    assert_eq!(find([192, 168, 0, 1]), Some(0));
    // A lookup key's own prefix length bounds the match.
    assert_eq!(m.lookup(&key(12, [10, 1, 2, 3])).map(|x| x[0]), Some(8));
    assert_eq!(
        m.update(&key(8, [10, 0, 0, 0]), &v(1), BPF_NOEXIST)
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    assert_eq!(
        m.update(&key(30, [1, 2, 3, 4]), &v(1), BPF_ANY)
            .unwrap_err()
            .errno(),
        libc::ENOSPC
    );
    assert_eq!(
        m.update(&key(33, [1, 2, 3, 4]), &v(1), BPF_ANY)
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    m.delete(&key(24, [10, 1, 2, 0])).unwrap();
    assert_eq!(find([10, 1, 2, 3]), Some(16));
    assert_eq!(
        m.delete(&key(24, [10, 1, 2, 0])).unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(m.keys().len(), 3);
}

#[test]
fn percpu_hash_keeps_one_value_per_cpu() {
    use userbpf_vm::maps::hash::BPF_MAP_TYPE_PERCPU_HASH;
    use userbpf_vm::maps::percpu::{ncpus, release_leases};
    let m = Map::create(spec("pch", BPF_MAP_TYPE_PERCPU_HASH, 4, 8, 8)).unwrap();
    assert_eq!(m.percpu_slots(), Some(ncpus()));
    // From a program: the run's slot only; a new key starts zeroed elsewhere.
    m.update_from_program(&7u32.to_le_bytes(), &5u64.to_le_bytes(), BPF_ANY)
        .unwrap();
    release_leases();
    let all = m.lookup(&7u32.to_le_bytes()).unwrap();
    assert_eq!(all.len(), 8 * ncpus());
    let vals: Vec<u64> = all
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(vals.iter().sum::<u64>(), 5);
    assert_eq!(vals.iter().filter(|&&v| v == 5).count(), 1);
    // From user space: every CPU's value at once.
    let block: Vec<u8> = (0..ncpus() as u64)
        .flat_map(|c| (c + 1).to_le_bytes())
        .collect();
    m.update(&7u32.to_le_bytes(), &block, BPF_EXIST).unwrap();
    assert_eq!(m.lookup(&7u32.to_le_bytes()).unwrap(), block);
    assert_eq!(
        m.update(&7u32.to_le_bytes(), &5u64.to_le_bytes(), BPF_ANY)
            .unwrap_err()
            .errno(),
        libc::EINVAL,
        "user space passes every CPU's value"
    );
}

#[test]
fn perf_event_array_delivers_samples_per_cpu_and_counts_lost_ones() {
    use userbpf_vm::maps::percpu::ncpus;
    use userbpf_vm::maps::perf::{BPF_F_CURRENT_CPU, BPF_MAP_TYPE_PERF_EVENT_ARRAY, RING_BYTES};
    let m = Map::create(MapSpec {
        name: "events".into(),
        map_type: BPF_MAP_TYPE_PERF_EVENT_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 0,
        flags: 0,
        map_extra: 0,
    })
    .unwrap();
    assert_eq!(m.spec().max_entries as usize, ncpus(), "sized to the CPUs");
    m.perf_output(0, b"first").unwrap();
    m.perf_output(BPF_F_CURRENT_CPU, b"here").unwrap();
    assert_eq!(m.perf_output(ncpus() as u64, b"x"), Err(libc::E2BIG));
    let mut got = Vec::new();
    let (n, lost) = m.perf_consume(|cpu, d| got.push((cpu, d.to_vec())));
    assert_eq!((n, lost), (2, 0));
    assert!(got.contains(&(0, b"first".to_vec())));
    assert!(got.iter().any(|(_, d)| d == b"here"));
    // Fill CPU 0's ring: what does not fit is lost, and counted.
    let rec = vec![7u8; 1000];
    let mut sent = 0u64;
    let mut refused = 0u64;
    for _ in 0..(RING_BYTES / 1000 + 10) {
        match m.perf_output(0, &rec) {
            Ok(()) => sent += 1,
            Err(e) => {
                assert_eq!(e, libc::ENOSPC);
                refused += 1;
            }
        }
    }
    assert!(refused > 0);
    let (n, lost) = m.perf_consume(|_, d| assert_eq!(d, &rec[..]));
    assert_eq!((n as u64, lost), (sent, refused));
    // The ring wraps around after consumption.
    for _ in 0..200 {
        m.perf_output(0, &rec).unwrap();
        assert_eq!(m.perf_consume(|_, d| assert_eq!(d, &rec[..])), (1, 0));
    }
}

#[test]
fn program_lookups_take_the_direct_path_with_the_helpers_semantics() {
    use std::sync::Arc;
    use userbpf_vm::asm::assemble;
    use userbpf_vm::interp::FaultKind;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::{Config, Helpers, Program};

    let mut set = MapSet::default();
    let m = Map::create(spec("h", BPF_MAP_TYPE_HASH, 4, 8, 8)).unwrap();
    m.update(&7u32.to_le_bytes(), &42u64.to_le_bytes(), BPF_ANY)
        .unwrap();
    let handle = m.handle();
    set.push(m);
    let set = Arc::new(set);
    // r0 = *lookup(map, &key) or 99 when absent; the key comes from r1's
    // memory (or r2 as a raw pointer when r1 is 0).
    let src = format!(
        "lddw %r6, {handle:#x}
        mov %r2, %r1
        jne %r1, 0, have
        mov %r2, 0x1000
    have:
        mov %r1, %r6
        call 1
        jeq %r0, 0, absent
        ldxdw %r0, [%r0]
        exit
    absent:
        mov %r0, 99
        exit"
    );
    let mut vm = vm_running(&set, "lookup", &src, &Helpers::new());
    assert_eq!(vm.run(&mut 7u32.to_le_bytes()), Ok(42), "present key");
    assert_eq!(vm.run(&mut 8u32.to_le_bytes()), Ok(99), "absent key");
    // A key outside the program's memory: the helper's fault, named.
    let err = vm.run(&mut []).unwrap_err();
    assert!(
        matches!(&err.kind, FaultKind::Helper { helper: 1, .. }),
        "{err}"
    );
    // A map handle that is not a map: the helper's fault too.
    let bad = Program::new(
        "bad",
        assemble("mov %r2, %r1\nmov %r1, 12345\ncall 1\nexit").unwrap(),
    )
    .unwrap();
    let mut vm = set.vm(&bad, &Helpers::new(), Config::default()).unwrap();
    let err = vm.run(&mut 7u32.to_le_bytes()).unwrap_err();
    assert!(err.to_string().contains("is not a map"), "{err}");
}

#[test]
fn every_kernel_helper_has_the_kernels_prototype_and_name() {
    use std::sync::Arc;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::proto::kernel_proto;
    use userbpf_vm::Helpers;

    let mut all = Helpers::kernel_basics();
    all.extend(&Arc::new(MapSet::default()).helpers());
    all.extend(&Helpers::probe_write_user());
    let mut n = 0;
    for h in all.iter() {
        let p = kernel_proto(h.id())
            .unwrap_or_else(|| panic!("{}#{} has no kernel prototype", h.name(), h.id()));
        assert_eq!(h.name(), p.name());
        assert_eq!(*h.proto(), p.runtime(), "{}", h.name());
        n += 1;
    }
    // Every prototype in the table belongs to a helper userbpf registers,
    // except the two the interpreter runs itself (tail_call, loop) and
    // the kernel-only ones, which user space must not register.
    let registered: Vec<i32> = all.iter().map(|h| h.id()).collect();
    for p in userbpf_vm::proto::KERNEL_PROTOS {
        let kernel_only = userbpf_vm::proto::KERNEL_ONLY.contains(&p.id);
        assert!(
            registered.contains(&p.id) != kernel_only || matches!(p.id, 12 | 181),
            "{} is in the table but not registered, or registered but kernel-only",
            p.name()
        );
    }
    assert!(n >= 45, "{n} helpers");
}

#[test]
fn dynptrs_over_ring_buffer_records_and_map_values() {
    use std::sync::Arc;
    use userbpf_vm::maps::ringbuf::BPF_MAP_TYPE_RINGBUF;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Helpers;

    let mut set = MapSet::default();
    let rb = Map::create(spec("rb", BPF_MAP_TYPE_RINGBUF, 0, 0, 4096)).unwrap();
    let arr = Map::create(spec("arr", BPF_MAP_TYPE_ARRAY, 4, 16, 1)).unwrap();
    let (rb_handle, arr_handle) = (rb.handle(), arr.handle());
    set.push(rb);
    set.push(arr);
    let set = Arc::new(set);
    // r1: 8 input bytes. A ring buffer dynptr gets them at offset 0 and
    // 0x1122 through a slice at offset 8, is read back and submitted
    // (then NULL: a read fails with -EINVAL, kept in the array's value);
    // a local dynptr over the array's value gets the input at offset 8,
    // and a write past its end fails with -E2BIG, returned.
    let src = format!(
        "mov %r6, %r1
        lddw %r1, {rb_handle:#x}
        mov %r2, 16
        mov %r3, 0
        mov %r4, %r10
        add %r4, -16
        call 198
        jne %r0, 0, fail
        mov %r1, %r10
        add %r1, -16
        mov %r2, 0
        mov %r3, %r6
        mov %r4, 8
        mov %r5, 0
        call 202
        jne %r0, 0, fail
        mov %r1, %r10
        add %r1, -16
        mov %r2, 8
        mov %r3, 8
        call 203
        jeq %r0, 0, fail
        mov %r1, 0x1122
        stxdw [%r0], %r1
        mov %r1, %r10
        add %r1, -32
        mov %r2, 8
        mov %r3, %r10
        add %r3, -16
        mov %r4, 0
        mov %r5, 0
        call 201
        jne %r0, 0, fail
        ldxdw %r7, [%r10-32]
        ldxdw %r1, [%r6]
        jne %r7, %r1, fail
        mov %r1, %r10
        add %r1, -16
        mov %r2, 0
        call 199
        mov %r1, %r10
        add %r1, -32
        mov %r2, 8
        mov %r3, %r10
        add %r3, -16
        mov %r4, 0
        mov %r5, 0
        call 201
        mov %r8, %r0
        stw [%r10-36], 0
        lddw %r1, {arr_handle:#x}
        mov %r2, %r10
        add %r2, -36
        call 1
        jeq %r0, 0, fail
        mov %r9, %r0
        mov %r1, %r0
        mov %r2, 16
        mov %r3, 0
        mov %r4, %r10
        add %r4, -56
        call 197
        jne %r0, 0, fail
        mov %r1, %r10
        add %r1, -56
        mov %r2, 8
        mov %r3, %r6
        mov %r4, 8
        mov %r5, 0
        call 202
        jne %r0, 0, fail
        stxdw [%r9], %r8
        mov %r1, %r10
        add %r1, -56
        mov %r2, 12
        mov %r3, %r6
        mov %r4, 8
        mov %r5, 0
        call 202
        exit
    fail:
        mov %r0, 1
        exit"
    );
    let mut vm = vm_running(&set, "dynptrs", &src, &Helpers::kernel_basics());
    let input = 0x0807_0605_0403_0201u64;
    let r0 = vm.run(&mut input.to_le_bytes()).unwrap();
    assert_eq!(r0 as i64, -i64::from(libc::E2BIG), "write past the end");
    let mut records = Vec::new();
    set.maps()[0].ringbuf_consume(|r| records.push(r.to_vec()));
    let mut expected = input.to_le_bytes().to_vec();
    expected.extend_from_slice(&0x1122u64.to_le_bytes());
    assert_eq!(records, vec![expected], "the submitted record");
    let value = set.maps()[1].lookup(&0u32.to_le_bytes()).unwrap();
    assert_eq!(
        i64::from_le_bytes(value[..8].try_into().unwrap()),
        -i64::from(libc::EINVAL),
        "a read through the submitted (NULL) dynptr"
    );
    assert_eq!(
        &value[8..],
        &input.to_le_bytes(),
        "the local dynptr's write"
    );
}

#[test]
fn a_program_reads_another_cpu_slot_of_a_per_cpu_map() {
    use std::sync::Arc;
    use userbpf_vm::maps::array::BPF_MAP_TYPE_PERCPU_ARRAY;
    use userbpf_vm::maps::hash::BPF_MAP_TYPE_PERCPU_HASH;
    use userbpf_vm::maps::MapSet;
    use userbpf_vm::Helpers;

    for map_type in [BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_PERCPU_HASH] {
        let m = Map::create(spec("pc", map_type, 4, 8, 4)).unwrap();
        let slots = m.percpu_slots().unwrap();
        // Slot i holds 100 + i (user space writes every slot, 8 bytes each).
        let all: Vec<u8> = (0..slots as u64)
            .flat_map(|i| (100 + i).to_le_bytes())
            .collect();
        m.update(&0u32.to_le_bytes(), &all, BPF_ANY).unwrap();
        let handle = m.handle();
        let mut set = MapSet::default();
        set.push(m);
        let set = Arc::new(set);
        // r0 = *lookup_percpu(map, &0, *(u32 *)r1), or 99 when NULL.
        let src = format!(
            "ldxw %r3, [%r1]
            stw [%r10-4], 0
            lddw %r1, {handle:#x}
            mov %r2, %r10
            add %r2, -4
            call 195
            jeq %r0, 0, absent
            ldxdw %r0, [%r0]
            exit
        absent:
            mov %r0, 99
            exit"
        );
        let mut vm = vm_running(&set, "percpu", &src, &Helpers::new());
        for cpu in 0..slots as u32 {
            assert_eq!(
                vm.run(&mut cpu.to_le_bytes()),
                Ok(100 + u64::from(cpu)),
                "map type {map_type}, slot {cpu}"
            );
        }
        assert_eq!(
            vm.run(&mut (slots as u32).to_le_bytes()),
            Ok(99),
            "past the slots"
        );
    }
}
