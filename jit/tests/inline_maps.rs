//! Verified code computes `bpf_map_lookup_elem` on array maps inline (no
//! call-out): in-range keys give the value's address in the map, the
//! others 0, exactly as the helper does; the code is then closed and the
//! VM runs it on its fast path even with the maps' regions added. Both
//! code generators: Cranelift and the baseline generator.

use std::sync::Arc;

use userbpf_jit::{jit_verified, CodeTier, Options, Tier};
use userbpf_verifier::Verified;
use userbpf_vm::asm::assemble;
use userbpf_vm::interp::{CompiledProgram, Config};
use userbpf_vm::maps::{Map, MapSet, MapSpec};
use userbpf_vm::{Helpers, Program};

/// r0 = *(u64 *)lookup(map[idx:0], key) + 1, or 1000 when absent; the
/// value is then incremented in place.
const SRC: &str = "
    r6 = *(u32 *)(r1 + 0)
    *(u32 *)(r10 - 4) = r6
    r2 = r10
    r2 += -4
    r1 = map[idx:0]
    call bpf_map_lookup_elem
    if r0 == 0 goto absent
    r1 = *(u64 *)(r0 + 0)
    r1 += 1
    *(u64 *)(r0 + 0) = r1
    r0 = r1
    exit
absent:
    r0 = 1000
    exit
";

fn setup(value_size: u32, tier: Tier) -> (Arc<MapSet>, userbpf_vm::Vm, userbpf_vm::Vm) {
    let mut set = MapSet::default();
    set.push(
        Map::create(MapSpec {
            name: "arr".into(),
            map_type: 2,
            key_size: 4,
            value_size,
            max_entries: 5,
            flags: 0,
            map_extra: 0,
        })
        .unwrap(),
    );
    let set = Arc::new(set);
    let program = Program::new("inline", assemble(SRC).unwrap()).unwrap();
    let jit = set
        .vm(&program, &Helpers::new(), Config::default())
        .unwrap();
    // SAFETY: the program reads a 4-byte context, writes its stack, and
    // accesses the looked-up value only after its null check.
    let v = unsafe { Verified::assume_verified(Arc::clone(jit.prepared())) };
    let code = jit_verified(
        &v,
        Options {
            tier,
            ..Options::default()
        },
    )
    .unwrap();
    let want = match tier {
        Tier::Baseline => CodeTier::Baseline,
        Tier::Optimized => CodeTier::Optimized,
        // (Baseline code first, Cranelift's when the background compile
        // is in.)
        _ => code.tier(),
    };
    assert_eq!(code.tier(), want);
    assert!(
        code.closed_entry().is_some(),
        "an array lookup needs no call-out"
    );
    let interp = set
        .vm(&program, &Helpers::new(), Config::default())
        .unwrap();
    let mut interp = interp;
    interp.set_use_compiled(false);
    (set, jit, interp)
}

#[test]
fn inline_array_lookups_match_the_helper_for_every_key() {
    for (value_size, tier) in [8, 12, 16]
        .into_iter()
        .flat_map(|v| [(v, Tier::Optimized), (v, Tier::Baseline)])
    {
        let (set, mut jit, mut interp) = setup(value_size, tier);
        for round in 0..3u64 {
            for key in [0u32, 1, 4, 5, 6, u32::MAX, 0x8000_0000] {
                let mut ctx = key.to_le_bytes();
                let want = interp.run(&mut ctx).unwrap();
                let mut ctx = key.to_le_bytes();
                let got = jit.run(&mut ctx).unwrap();
                if key < 5 {
                    // The interpreter and the JIT each incremented it.
                    assert_eq!(want, 2 * round + 1, "interp, key {key}");
                    assert_eq!(
                        got,
                        2 * round + 2,
                        "jit, key {key}, value size {value_size}"
                    );
                } else {
                    assert_eq!((want, got), (1000, 1000), "key {key}");
                }
            }
        }
        // Every in-range value was written where the helper's pointer
        // points.
        for (key, want) in [(0u32, 6), (1, 6), (2, 0), (3, 0), (4, 6)] {
            let v = set.maps()[0].lookup(&key.to_le_bytes()).unwrap();
            assert_eq!(
                u64::from_le_bytes(v[..8].try_into().unwrap()),
                want,
                "key {key}"
            );
        }
    }
}

/// Verified Cranelift code that calls nothing (array lookups inline) is a
/// leaf: it runs on a context that is only a head (registers, stack top)
/// and gives what the VM gives. The baseline generator's code, checked
/// code and code with a helper call are not leaves.
#[test]
fn verified_code_without_calls_is_a_leaf_that_runs_on_a_head_alone() {
    use userbpf_vm::interp::{ClosedCode, ClosedHead, LEAF_STACK};
    for tier in [Tier::Optimized, Tier::Tiered] {
        let (set, jit, mut interp) = setup(8, tier);
        let leaf = jit
            .prepared()
            .leaf_code()
            .unwrap_or_else(|| panic!("{tier:?}: a leaf"));
        assert!(leaf.len > 0);
        // SAFETY: leaf code has the `ClosedCode` signature.
        let code: ClosedCode = unsafe { std::mem::transmute(leaf.entry) };
        let mut stack = [0u64; LEAF_STACK / 8];
        for key in [0u32, 3, 4, 5] {
            let mut head = ClosedHead {
                budget: 0,
                max_depth: 0,
                seed: [0; 4],
                regs: [0; 11],
            };
            head.regs[10] = stack.as_mut_ptr_range().end as u64;
            let mut ctx = key.to_le_bytes();
            // SAFETY: the head and stack above; the context is 4 bytes.
            let got = unsafe { code(&mut head, 0, ctx.as_mut_ptr() as u64, 4, 0, 0) };
            assert_eq!(got.status, 0);
            let want = interp.run(&mut key.to_le_bytes()).unwrap();
            // (Both increment the value: the interpreter's run is the
            // next one.)
            let expect = if key < 5 { want - 1 } else { want };
            assert_eq!(got.r0, expect, "{tier:?} key {key}");
        }
        drop(set);
    }
    let (_set, baseline, _) = setup(8, Tier::Baseline);
    assert!(baseline.prepared().leaf_code().is_none(), "baseline code");

    let program = Program::new(
        "helper",
        assemble("call bpf_ktime_get_ns\nr0 = 0\nexit").unwrap(),
    )
    .unwrap();
    let set = Arc::new(MapSet::default());
    let vm = set
        .vm(&program, &Helpers::kernel_basics(), Config::default())
        .unwrap();
    // SAFETY: a helper call and an exit.
    let v = unsafe { Verified::assume_verified(Arc::clone(vm.prepared())) };
    jit_verified(&v, Options::default()).unwrap();
    assert!(vm.prepared().leaf_code().is_none(), "a helper call");

    let program = Program::new("plain", assemble("r0 = 7\nexit").unwrap()).unwrap();
    let vm = set
        .vm(&program, &Helpers::new(), Config::default())
        .unwrap();
    userbpf_jit::jit_checked(vm.prepared(), Options::default()).unwrap();
    assert!(vm.prepared().leaf_code().is_none(), "checked code");
}
