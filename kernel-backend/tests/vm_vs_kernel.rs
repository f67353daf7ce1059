//! The same object runs in the user-space VM and in the kernel
//! (`BPF_PROG_TEST_RUN`): same r0, same context, same map contents.
//!
//! Needs root and bpf(); skips with a printed reason otherwise, unless
//! `USERBPF_REQUIRE_KERNEL=1` (CI), where it fails instead.

use std::path::PathBuf;
use std::sync::Arc;

use userbpf_kernel::{kernel_required, kernel_unavailable, load, KernelMap};
use userbpf_vm::maps::MapSet;
use userbpf_vm::object::Object;
use userbpf_vm::{Config, Helpers, Vm};

fn kernel_or_skip(test: &str) -> bool {
    match kernel_unavailable() {
        None => true,
        Some(why) if kernel_required() => panic!("{test}: kernel required but unavailable: {why}"),
        Some(why) => {
            println!("SKIP {test}: {why}");
            false
        }
    }
}

fn object(name: &str) -> Object {
    let dir = match std::env::var_os("USERBPF_FIXTURES_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/bpf"),
    };
    let path = dir.join(name);
    let bytes = std::fs::read(&path).unwrap();
    Object::parse(&path.display().to_string(), &bytes).unwrap_or_else(|e| panic!("{e}"))
}

/// The VM side: the program with its maps.
struct VmSide {
    vm: Vm,
    maps: Arc<MapSet>,
}

fn vm_side(obj: &Object, prog: &str) -> VmSide {
    let maps = Arc::new(MapSet::from_object(obj).unwrap());
    let vm = maps
        .vm_for_object(obj, prog, &Helpers::kernel_basics(), Config::default())
        .unwrap();
    VmSide { vm, maps }
}

#[test]
fn calls_fixture_matches_the_kernel() {
    if !kernel_or_skip("calls_fixture_matches_the_kernel") {
        return;
    }
    let obj = object("calls.bpf.o");
    let prog = obj.program("calls").unwrap();
    let k = load(&obj, prog).unwrap_or_else(|e| panic!("{e}"));
    let mut side = vm_side(&obj, "calls");
    for (a, b) in [
        (0u64, 0u64),
        (1, 2),
        (0xdead_beef, 0x1234_5678_9abc_def0),
        (u64::MAX, 7),
    ] {
        let mut ctx = [0u8; 24];
        ctx[..8].copy_from_slice(&a.to_le_bytes());
        ctx[8..16].copy_from_slice(&b.to_le_bytes());
        let mut kctx = ctx;
        let kr0 = k.program.test_run_syscall(&mut kctx).unwrap();
        let r0 = side.vm.run(&mut ctx).unwrap();
        assert_eq!(r0 as u32, kr0, "r0 for a={a:#x} b={b:#x}");
        assert_eq!(ctx, kctx, "context after the run");
    }
}

/// Runs `prog` of `fixture` on each context in the VM and in the kernel and
/// compares r0, the context after the run, and every map afterwards.
fn compare_syscall(test: &str, fixture: &str, prog: &str, ctxs: &[Vec<u8>]) {
    if !kernel_or_skip(test) {
        return;
    }
    let obj = object(fixture);
    let p = obj.program(prog).unwrap();
    let k = load(&obj, p).unwrap_or_else(|e| panic!("{e}"));
    let mut side = vm_side(&obj, prog);
    for ctx in ctxs {
        let mut ours = ctx.clone();
        let mut theirs = ctx.clone();
        let kr0 = k.program.test_run_syscall(&mut theirs).unwrap();
        let r0 = side.vm.run(&mut ours).unwrap();
        assert_eq!(r0 as u32, kr0, "{test}: r0");
        assert_eq!(ours, theirs, "{test}: context after the run");
    }
    assert_same_maps(test, &obj, &side.maps, &k.maps);
}

/// Every map of `obj` holds the same entries in the VM and in the kernel.
fn assert_same_maps(test: &str, obj: &Object, ours: &MapSet, kernel: &[KernelMap]) {
    let dump = |keys: Vec<Vec<u8>>, get: &dyn Fn(&[u8]) -> Option<Vec<u8>>| {
        let mut v: Vec<(Vec<u8>, Vec<u8>)> = keys
            .into_iter()
            .map(|key| (get(&key).unwrap(), key))
            .map(|(v, k)| (k, v))
            .collect();
        v.sort();
        v
    };
    assert_eq!(kernel.len(), obj.maps.len(), "{test}: kernel maps");
    for ((def, vm_map), kmap) in obj.maps.iter().zip(ours.maps()).zip(kernel) {
        let theirs = dump(kmap.keys(), &|k| kmap.lookup(k));
        let ours = dump(vm_map.keys(), &|k| vm_map.lookup(k));
        assert_eq!(ours, theirs, "{test}: map `{}`", def.name);
    }
}

#[test]
fn counter_fixture_leaves_the_same_maps_as_the_kernel() {
    let ctxs: Vec<Vec<u8>> = [(5u32, 2u64), (5, 2), (13, 1), (7, 9), (5, 400), (5, 1)]
        .iter()
        .map(|(key, add)| {
            let mut ctx = vec![0u8; 16];
            ctx[..4].copy_from_slice(&key.to_le_bytes());
            ctx[8..].copy_from_slice(&add.to_le_bytes());
            ctx
        })
        .collect();
    compare_syscall("counter", "counter.bpf.o", "count", &ctxs);
}

fn ipv4_udp(dport: u16, ttl: u8, proto: u8) -> Vec<u8> {
    let mut p = vec![
        0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00, // ethernet, IPv4
        0x45, 0, 0, 32, 0, 1, 0, 0, ttl, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
        0x30, 0x39, // source port 12345
    ];
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 12, 0, 0, b'h', b'i', b'!', b'!']);
    p
}

#[test]
fn xdp_filter_matches_the_kernel_on_packets() {
    if !kernel_or_skip("xdp_filter_matches_the_kernel_on_packets") {
        return;
    }
    let obj = object("xdp.bpf.o");
    let p = obj.program("filter").unwrap();
    let k = load(&obj, p).unwrap_or_else(|e| panic!("{e}"));
    let mut side = vm_side(&obj, "filter");
    let mut arp = ipv4_udp(53, 64, 17);
    arp[12] = 0x08;
    arp[13] = 0x06;
    let packets = [
        ipv4_udp(9, 64, 17),                // UDP discard: XDP_DROP
        ipv4_udp(53, 64, 17),               // UDP DNS: XDP_PASS, TTL 63
        ipv4_udp(80, 1, 6),                 // TCP, TTL stays 1
        arp,                                // not IPv4
        ipv4_udp(9, 64, 17)[..20].to_vec(), // truncated IPv4: XDP_ABORTED
    ];
    let mut verdicts = Vec::new();
    for (i, pkt) in packets.iter().enumerate() {
        let (kr0, kout) = k.program.test_run_packet(pkt).unwrap();
        let ours = userbpf_vm::context::run_xdp(&mut side.vm, pkt).unwrap();
        assert_eq!(ours.r0 as u32, kr0, "packet {i}: verdict");
        assert_eq!(ours.packet, kout, "packet {i}: packet after the run");
        verdicts.push(kr0);
        if i == 1 {
            assert_eq!(ours.packet[22], 63, "TTL decremented");
        }
    }
    // XDP_ABORTED 0, XDP_DROP 1, XDP_PASS 2, as the C source decides.
    assert_eq!(verdicts, [1, 2, 2, 2, 0]);
    let kmap = &k.maps[0];
    for proto in [6u32, 17] {
        let key = proto.to_le_bytes();
        assert_eq!(
            side.maps.maps()[0].lookup(&key),
            kmap.lookup(&key),
            "proto {proto}"
        );
    }
}

/// Runs `prog` of `fixture` (a __sk_buff program) on each packet in the VM
/// and in the kernel: same verdict, packet and map contents.
fn compare_skb(test: &str, fixture: &str, prog: &str, l2: bool, packets: &[Vec<u8>]) -> Vec<u32> {
    if !kernel_or_skip(test) {
        return Vec::new();
    }
    let obj = object(fixture);
    let p = obj.program(prog).unwrap();
    let k = load(&obj, p).unwrap_or_else(|e| panic!("{e}"));
    let mut side = vm_side(&obj, prog);
    let mut verdicts = Vec::new();
    for (i, pkt) in packets.iter().enumerate() {
        let (kr0, kout) = k.program.test_run_packet(pkt).unwrap();
        let ours = userbpf_vm::context::run_skb(&mut side.vm, pkt, l2).unwrap();
        assert_eq!(ours.r0 as u32, kr0, "{test}: packet {i}: verdict");
        assert_eq!(
            ours.packet, kout,
            "{test}: packet {i}: packet after the run"
        );
        verdicts.push(kr0);
    }
    assert_same_maps(test, &obj, &side.maps, &k.maps);
    verdicts
}

#[test]
fn tc_classifier_matches_the_kernel_on_packets() {
    let packets = [
        ipv4_udp(9, 64, 17),
        ipv4_udp(53, 64, 17),
        ipv4_udp(80, 64, 6),
        ipv4_udp(53, 64, 17),
    ];
    let v = compare_skb("tc", "tc.bpf.o", "classify", true, &packets);
    if !v.is_empty() {
        // TC_ACT_SHOT (2) for UDP port 9, TC_ACT_OK (0) otherwise.
        assert_eq!(v, [2, 0, 0, 0]);
    }
}

#[test]
fn socket_filter_with_legacy_loads_matches_the_kernel() {
    let mut big = ipv4_udp(53, 64, 17);
    big.extend_from_slice(&[7u8; 100]);
    let packets = [
        ipv4_udp(9, 64, 17),
        ipv4_udp(53, 64, 17),
        ipv4_udp(80, 64, 6),
        big,
    ];
    let v = compare_skb("socket", "socket.bpf.o", "keep_udp", false, &packets);
    if !v.is_empty() {
        // 0 = drop; UDP keeps min(len from the IP header, 64).
        assert_eq!(v, [0, 32, 0, 64]);
    }
}

#[test]
fn legacy_loads_past_the_packet_return_from_their_subprogram_as_in_the_kernel() {
    // sub_loads sums three subprogram calls: a byte at 90 (BPF_LD_ABS),
    // a half at 2 and one at 1000 (BPF_LD_IND), each the field + 1, or 0
    // when the load is past the packet: the subprogram returns 0 and the
    // caller goes on (it does not end the program).
    let sizes = [15usize, 17, 64, 105, 120];
    let packets: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&n| (0..n).map(|i| (i as u8).wrapping_mul(37) ^ 0xa5).collect())
        .collect();
    let v = compare_skb("sub_loads", "socket.bpf.o", "sub_loads", false, &packets);
    if v.is_empty() {
        return;
    }
    for (pkt, got) in packets.iter().zip(v) {
        // The program sees the packet from the network header.
        let net = &pkt[14..];
        let field = |off: usize, n: usize| -> u32 {
            net.get(off..off + n).map_or(0, |b| {
                b.iter().fold(0u32, |v, &x| (v << 8) | u32::from(x)) + 1
            })
        };
        let want = field(90, 1) * 100_000 + field(2, 2) * 3 + field(1000, 2) + 7;
        assert_eq!(got, want, "{} bytes", pkt.len());
    }
}

#[test]
fn queue_and_stack_maps_match_the_kernel() {
    let ctxs: Vec<Vec<u8>> = [
        (3u32, [10u32, 20, 30, 40, 50, 60]),
        (4, [1, 2, 3, 4, 5, 6]),
        (4, [7; 6]),
    ]
    .iter()
    .map(|(pops, vals)| {
        let mut ctx = Vec::new();
        for v in vals {
            ctx.extend_from_slice(&v.to_le_bytes());
        }
        ctx.extend_from_slice(&pops.to_le_bytes());
        ctx.extend_from_slice(&[0u8; 4 + 32]);
        ctx
    })
    .collect();
    compare_syscall("queue", "queue.bpf.o", "qs", &ctxs);
}

#[test]
fn lpm_trie_matches_the_kernel() {
    if !kernel_or_skip("lpm_trie_matches_the_kernel") {
        return;
    }
    let obj = object("lpm.bpf.o");
    let p = obj.program("by_prefix").unwrap();
    let k = load(&obj, p).unwrap_or_else(|e| panic!("{e}"));
    let side = vm_side(&obj, "by_prefix");
    let mut vm = side.vm;
    // 10.0.0.0/8 -> drop, 10.1.0.0/16 -> pass, 10.1.2.0/24 -> drop.
    for (len, ip, verdict) in [
        (8u32, [10u8, 0, 0, 0], 1u32),
        (16, [10, 1, 0, 0], 2),
        (24, [10, 1, 2, 0], 1),
    ] {
        let mut key = len.to_le_bytes().to_vec();
        key.extend_from_slice(&ip);
        k.maps[0].update(&key, &verdict.to_le_bytes(), 0).unwrap();
        side.maps.maps()[0]
            .update(&key, &verdict.to_le_bytes(), 0)
            .unwrap();
    }
    let mut verdicts = Vec::new();
    for src in [
        [10u8, 1, 2, 3],
        [10, 1, 9, 9],
        [10, 9, 9, 9],
        [192, 168, 0, 1],
    ] {
        let mut pkt = ipv4_udp(53, 64, 17);
        pkt[26..30].copy_from_slice(&src);
        let (kr0, _) = k.program.test_run_packet(&pkt).unwrap();
        let ours = userbpf_vm::context::run_xdp(&mut vm, &pkt).unwrap();
        assert_eq!(ours.r0 as u32, kr0, "source {src:?}");
        verdicts.push(kr0);
    }
    assert_eq!(verdicts, [1, 2, 1, 2]);
}

#[test]
fn tail_calls_match_the_kernel() {
    if !kernel_or_skip("tail_calls_match_the_kernel") {
        return;
    }
    let obj = object("tail.bpf.o");
    let k = load(&obj, obj.program("entry").unwrap()).unwrap_or_else(|e| panic!("{e}"));
    let mut side = vm_side(&obj, "entry");
    for index in [1u32, 3, 0, 7] {
        // The kernel needs an Ethernet header's worth of packet.
        let mut pkt = index.to_le_bytes().to_vec();
        pkt.extend_from_slice(&[0; 12]);
        let (kr0, kout) = k.program.test_run_packet(&pkt).unwrap();
        let ours = userbpf_vm::context::run_xdp(&mut side.vm, &pkt).unwrap();
        assert_eq!(ours.r0 as u32, kr0, "slot {index}: verdict");
        assert_eq!(ours.packet, kout, "slot {index}: trail");
    }
}

#[test]
fn kconfig_externs_match_the_kernel() {
    // Both sides get the `.kconfig` map the loader filled from this
    // kernel's configuration; the kernel reads it as libbpf would set it.
    compare_syscall(
        "kconfig_externs_match_the_kernel",
        "kconfig.bpf.o",
        "kconfig",
        &[vec![0xaa; 48]],
    );
}

#[test]
fn bloom_filter_with_map_extra_matches_the_kernel() {
    if !kernel_or_skip("bloom_filter_with_map_extra_matches_the_kernel") {
        return;
    }
    let obj = object("bloom.bpf.o");
    assert_eq!(
        obj.maps[0].map_extra, 3,
        "__uint(map_extra, 3) in the source"
    );
    let p = obj.program("bloom").unwrap();
    let k = load(&obj, p).unwrap_or_else(|e| panic!("{e}"));
    let mut side = vm_side(&obj, "bloom");
    assert_eq!(side.maps.maps()[0].spec().map_extra, 3);
    let cmd = |op: u64, value: u64| {
        let mut pkt = op.to_le_bytes().to_vec();
        pkt.extend_from_slice(&value.to_le_bytes());
        pkt
    };
    // Peek 5, push 5, peek 5, push 7, peek 7, peek 6, a short packet. With a
    // thousand-entry filter holding two values a false positive is
    // vanishingly unlikely on either side.
    let packets = [
        cmd(1, 5),
        cmd(0, 5),
        cmd(1, 5),
        cmd(0, 7),
        cmd(1, 7),
        cmd(1, 6),
        // Shorter than a command (BPF_PROG_TEST_RUN needs 14 bytes).
        vec![0; 14],
    ];
    let mut verdicts = Vec::new();
    for (i, pkt) in packets.iter().enumerate() {
        let (kr0, kout) = k.program.test_run_packet(pkt).unwrap();
        let ours = userbpf_vm::context::run_xdp(&mut side.vm, pkt).unwrap();
        assert_eq!(ours.r0 as u32, kr0, "packet {i}: verdict");
        assert_eq!(ours.packet, kout, "packet {i}: packet after the run");
        verdicts.push(kr0);
    }
    // XDP_ABORTED 0, XDP_DROP 1, XDP_PASS 2.
    assert_eq!(verdicts, [1, 2, 2, 2, 2, 1, 0]);
    // map_extra reaches the kernel: 16 hash functions is EINVAL there, as
    // in the VM.
    let e = userbpf_kernel::KernelMap::create("bloom_bad", 30, 0, 8, 10, 0, 16).unwrap_err();
    assert_eq!(e.source.raw_os_error(), Some(libc::EINVAL), "{e}");
}

#[test]
fn jiffies64_agrees_with_the_kernel() {
    let test = "jiffies64_agrees_with_the_kernel";
    if !kernel_or_skip(test) {
        return;
    }
    let obj = object("hooks.bpf.o");
    let k = load(&obj, obj.program("jiffies").unwrap()).unwrap_or_else(|e| panic!("{e}"));
    let mut side = vm_side(&obj, "jiffies");
    let kernel = |k: &userbpf_kernel::KernelLoad| {
        let mut ctx = [0u8; 24];
        k.program.test_run_syscall(&mut ctx).unwrap();
        u64::from_le_bytes(ctx[..8].try_into().unwrap())
    };
    let before = kernel(&k);
    let mut ctx = vec![0u8; 24];
    side.vm.run(&mut ctx).unwrap();
    let ours = u64::from_le_bytes(ctx[..8].try_into().unwrap());
    let after = kernel(&k);
    // One tick of slack each way: the tick and the clock read are not
    // the same instant.
    assert!(
        before.saturating_sub(1) <= ours && ours <= after + 1,
        "kernel {before}..{after}, userbpf {ours}"
    );
}

#[test]
fn percpu_hashes_match_the_kernel_on_one_cpu() {
    // Both sides run on CPU 0, so each writes CPU 0's values; every CPU's
    // values are compared afterwards.
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a zeroed cpu_set_t with CPU 0 set, for this thread.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
            let ctxs: Vec<Vec<u8>> = [(3u32, 5u64), (3, 1), (4, 2), (9, 7), (3, 100)]
                .iter()
                .map(|&(key, add)| {
                    let mut ctx = vec![0u8; 16];
                    ctx[..4].copy_from_slice(&key.to_le_bytes());
                    ctx[8..].copy_from_slice(&add.to_le_bytes());
                    ctx
                })
                .collect();
            compare_syscall("percpu", "percpu.bpf.o", "count", &ctxs);
        })
        .join()
        .unwrap()
    });
}
