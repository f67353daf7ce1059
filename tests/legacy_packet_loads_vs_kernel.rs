//! Legacy packet loads (`BPF_LD_ABS`, `BPF_LD_IND`) run by the kernel
//! (`BPF_PROG_TEST_RUN`) and by userbpf's interpreter, Cranelift code and
//! baseline code, checked and verified: the same r0 for every offset,
//! the negative ones included (`SKF_NET_OFF` reads from the network
//! header, `SKF_LL_OFF` from the Ethernet header), and the offset taken
//! as the kernel takes it (`src + imm` as a 32-bit `int`).
//!
//! Needs root and bpf(); skips with a printed reason otherwise, unless
//! `USERBPF_REQUIRE_KERNEL=1` (CI), where it fails instead.

use std::sync::Arc;

use userbpf_jit::{jit_checked, jit_verified, CodeTier, Options, Tier};
use userbpf_kernel::{kernel_required, kernel_unavailable, KernelProgram, LoadRequest};
use userbpf_verifier::{verify, Context, Env, SkbKind};
use userbpf_vm::interp::{Config, PreparedProgram, SKF_LL_OFF, SKF_NET_OFF};
use userbpf_vm::object::ProgramType;
use userbpf_vm::{Helpers, Program, Vm};

/// An Ethernet frame: IPv4, UDP to port 53, `extra` payload bytes.
fn frame(extra: usize) -> Vec<u8> {
    let mut p = vec![
        0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00, // Ethernet, IPv4
        0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
        0x30, 0x39, 0, 53, 0, 12, 0, 0, // UDP
    ];
    p.extend((0..extra).map(|i| (i as u8).wrapping_mul(29) ^ 0x5a));
    p
}

/// A run's r0 on each engine, named.
fn runs(program: &Program, prog_type: ProgramType, packet: &[u8]) -> Vec<(String, u64)> {
    let l2 = prog_type == ProgramType::SchedCls;
    let kind = if l2 {
        SkbKind::Tc
    } else {
        SkbKind::SocketFilter
    };
    let env = Env {
        prog_type: Some(prog_type),
        context: Context::SkBuff(kind),
        ..Env::raw(0)
    };
    let proof = verify(program.clone(), &env, &userbpf_verifier::Options::default())
        .map(|(v, _)| v)
        .ok();
    let mut out = Vec::new();
    let run = |vm: &mut Vm| {
        userbpf_vm::context::run_skb(vm, packet, l2)
            .unwrap_or_else(|e| panic!("{e}"))
            .r0
    };
    let prepared = || {
        Arc::new(
            PreparedProgram::new(program, &Helpers::kernel_basics(), Config::default()).unwrap(),
        )
    };
    let mut interp = Vm::from_prepared(prepared());
    interp.set_use_compiled(false);
    out.push(("interpreter".to_string(), run(&mut interp)));
    for tier in [Tier::Optimized, Tier::Baseline] {
        let want = if tier == Tier::Baseline {
            CodeTier::Baseline
        } else {
            CodeTier::Optimized
        };
        let options = Options {
            tier,
            ..Options::default()
        };
        let p = prepared();
        let code = jit_checked(&p, options).unwrap();
        assert_eq!(code.tier(), want);
        out.push((format!("{tier:?} checked"), run(&mut Vm::from_prepared(p))));
        if let Some(proof) = &proof {
            let p = prepared();
            let v = proof.vouch_for(&p).expect("the proof is of this program");
            let code = jit_verified(&v, options).unwrap();
            assert_eq!(code.tier(), want);
            out.push((format!("{tier:?} verified"), run(&mut Vm::from_prepared(p))));
        }
    }
    out
}

#[test]
fn legacy_packet_loads_read_what_the_kernel_reads_at_every_offset() {
    match kernel_unavailable() {
        None => {}
        Some(why) if kernel_required() => panic!("kernel required but unavailable: {why}"),
        Some(why) => {
            println!("SKIP legacy_packet_loads_read_what_the_kernel_reads_at_every_offset: {why}");
            return;
        }
    }
    let net = SKF_NET_OFF;
    let ll = SKF_LL_OFF;
    let cases: Vec<(&str, String)> = vec![
        // The IP protocol byte, from the network header.
        ("SKF_NET_OFF + 9", format!("r0 = *(u8 *)skb[{}]", net + 9)),
        // The Ethertype and the destination MAC, from the Ethernet header.
        ("SKF_LL_OFF + 12", format!("r0 = *(u16 *)skb[{}]", ll + 12)),
        ("SKF_LL_OFF", format!("r0 = *(u32 *)skb[{ll}]")),
        // Past the Ethernet header into the IP header, through it.
        (
            "SKF_LL_OFF + 12, 4 bytes",
            format!("r0 = *(u32 *)skb[{}]", ll + 12),
        ),
        // Ancillary-data offsets (classic BPF's SKF_AD_OFF), and below
        // the network header by its own offset: nothing to read.
        ("SKF_AD_OFF", "r0 = *(u8 *)skb[-4096]".to_string()),
        ("SKF_NET_OFF - 1", format!("r0 = *(u8 *)skb[{}]", net - 1)),
        ("below SKF_LL_OFF", format!("r0 = *(u8 *)skb[{}]", ll - 1)),
        // Indirect: the register's low 32 bits count (the kernel passes
        // `src + imm` as an int).
        (
            "ind, 64-bit register",
            "r7 = 0x100000002 ll\nr0 = *(u16 *)skb[r7 + 0]".to_string(),
        ),
        (
            "ind, SKF_NET_OFF in a register",
            format!("r7 = {net}\nr0 = *(u8 *)skb[r7 + 9]"),
        ),
        // Near the end of the packet.
        ("at 40, 4 bytes", "r0 = *(u32 *)skb[40]".to_string()),
        (
            "ind at 38 + 2",
            "r7 = 38\nr0 = *(u16 *)skb[r7 + 2]".to_string(),
        ),
        // A load that fails ends the program with 0, after the ones that
        // worked.
        (
            "sum, then past the end",
            format!(
                "r0 = *(u8 *)skb[{}]\nr8 = r0\nr0 = *(u8 *)skb[5000]\nr0 += r8",
                net + 9
            ),
        ),
    ];
    let mut checked = 0;
    let mut failures = Vec::new();
    for (what, body) in &cases {
        let text = format!("r6 = r1\n{body}\nexit");
        let insns = userbpf_vm::asm::assemble(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
        let program = Program::new("p", insns.clone()).unwrap();
        for prog_type in [ProgramType::SocketFilter, ProgramType::SchedCls] {
            let request = LoadRequest::new("p", prog_type as u32, &insns);
            let kernel = KernelProgram::load_request(&request)
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", e.log));
            for extra in [0usize, 10, 40] {
                let packet = frame(extra);
                let (want, _) = kernel.test_run_packet(&packet).unwrap();
                for (engine, r0) in runs(&program, prog_type, &packet) {
                    checked += 1;
                    if r0 != u64::from(want) {
                        failures.push(format!(
                            "{what} ({prog_type:?}, {} bytes): kernel {want:#x}, {engine} {r0:#x}",
                            packet.len()
                        ));
                    }
                }
            }
        }
    }
    println!("{checked} runs compared with the kernel's");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
