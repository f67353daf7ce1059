//! The ring buffer: wire format, wrap-around, dropped records, discards,
//! dead producers, and producers in another process.

use std::collections::HashSet;

use userbpf_vm::maps::ringbuf::{BPF_MAP_TYPE_RINGBUF, BPF_RB_AVAIL_DATA, BPF_RB_RING_SIZE, BUSY};
use userbpf_vm::maps::{Map, MapSpec};

fn spec(size: u32) -> MapSpec {
    MapSpec {
        name: "rb".into(),
        map_type: BPF_MAP_TYPE_RINGBUF,
        key_size: 0,
        value_size: 0,
        max_entries: size,
        flags: 0,
        map_extra: 0,
    }
}

fn drain(m: &Map) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    m.ringbuf_consume(|r| out.push(r.to_vec()));
    out
}

#[test]
fn sizes_must_be_page_multiples_and_powers_of_two() {
    assert!(Map::create(spec(4096 * 3)).is_err());
    assert!(Map::create(spec(1024)).is_err());
    assert!(Map::create(spec(8192)).is_ok());
}

#[test]
fn records_keep_order_wrap_and_discards_disappear() {
    let m = Map::create(spec(4096)).unwrap();
    assert_eq!(m.ringbuf_query(BPF_RB_RING_SIZE), 4096);
    let mut expected = Vec::new();
    // Enough rounds to wrap around the 4 KiB ring several times.
    for round in 0u32..50 {
        for i in 0..5u32 {
            let len = (1 + (round * 7 + i * 13) % 200) as usize;
            let rec: Vec<u8> = (0..len).map(|b| (b as u32 + round + i) as u8).collect();
            assert!(m.ringbuf_output(&rec));
            expected.push(rec);
        }
        let p = m.ringbuf_reserve(24).unwrap();
        // The header before the record has the BUSY bit and the length.
        // SAFETY: the header is 8 bytes before the record, in the ring.
        let hdr = unsafe { (p.sub(8) as *const u32).read() };
        assert_eq!(hdr, 24 | BUSY);
        assert!(m.ringbuf_commit(p as u64, true), "discard");
        assert!(!m.ringbuf_commit(p as u64, false), "double commit");
        assert!(m.ringbuf_query(BPF_RB_AVAIL_DATA) > 0);
        assert_eq!(drain(&m), expected);
        expected.clear();
        assert_eq!(m.ringbuf_query(BPF_RB_AVAIL_DATA), 0);
    }
    assert_eq!(m.ringbuf_dropped(), 0);
}

#[test]
fn a_full_ring_drops_and_counts() {
    let m = Map::create(spec(4096)).unwrap();
    let rec = [7u8; 1000];
    // 1008 bytes per record: 4 fit (4032), the 5th is dropped.
    for _ in 0..4 {
        assert!(m.ringbuf_output(&rec));
    }
    assert!(!m.ringbuf_output(&rec));
    assert_eq!(m.ringbuf_dropped(), 1);
    assert!(m.ringbuf_reserve(5000).is_none(), "larger than the ring");
    assert_eq!(drain(&m).len(), 4);
    assert!(m.ringbuf_output(&rec));
}

/// Child side of the cross-process tests; runs only under the parent.
#[test]
fn child_ringbuf_producer() {
    let Some(path) = std::env::var_os("USERBPF_TEST_RB_PATH") else {
        return;
    };
    let m = Map::open(std::path::Path::new(&path)).unwrap();
    if std::env::var_os("USERBPF_TEST_RB_DIE").is_some() {
        // Reserve and die without submitting.
        let _ = m.ringbuf_reserve(64).unwrap();
        std::process::exit(0);
    }
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let m = &m;
            s.spawn(move || {
                for n in 0..125_000u32 {
                    let mut rec = [0u8; 64];
                    rec[..4].copy_from_slice(&t.to_le_bytes());
                    rec[4..8].copy_from_slice(&n.to_le_bytes());
                    rec[8..].fill((t ^ n) as u8);
                    // A full ring drops (and counts) the record.
                    let _ = m.ringbuf_output(&rec);
                }
            });
        }
    });
}

fn child(path: &std::path::Path, die: bool) -> std::process::Child {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_ringbuf_producer", "--nocapture"])
        .env("USERBPF_TEST_RB_PATH", path);
    if die {
        cmd.env("USERBPF_TEST_RB_DIE", "1");
    }
    cmd.spawn().unwrap()
}

#[test]
fn a_dead_producers_reservation_is_discarded() {
    let path = std::env::temp_dir().join(format!("userbpf-rb-dead-{}", std::process::id()));
    let m = Map::create_at(spec(8192), &path).unwrap();
    assert!(child(&path, true).wait().unwrap().success());
    assert!(m.ringbuf_output(b"after"));
    assert_eq!(drain(&m), vec![b"after".to_vec()]);
}

#[test]
fn eight_producer_threads_in_another_process_lose_nothing_silently() {
    let path = std::env::temp_dir().join(format!("userbpf-rb-xproc-{}", std::process::id()));
    let m = Map::create_at(spec(64 * 1024), &path).unwrap();
    let mut c = child(&path, false);
    let mut seen = HashSet::new();
    let mut check = |r: &[u8]| {
        assert_eq!(r.len(), 64);
        let t = u32::from_le_bytes(r[..4].try_into().unwrap());
        let n = u32::from_le_bytes(r[4..8].try_into().unwrap());
        assert!(r[8..].iter().all(|&b| b == (t ^ n) as u8), "torn record");
        assert!(seen.insert((t, n)), "duplicate record");
    };
    loop {
        m.ringbuf_consume(&mut check);
        if c.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::yield_now();
    }
    m.ringbuf_consume(&mut check);
    let delivered = seen.len() as u64;
    println!("delivered {delivered}, dropped {}", m.ringbuf_dropped());
    assert_eq!(delivered + m.ringbuf_dropped(), 8 * 125_000);
    assert!(delivered > 0);
}
