//! The baseline generator's subprograms in verified code: `bpf_loop`,
//! helpers that call back (`bpf_for_each_map_elem`), bpf-to-bpf calls in
//! clang-built objects, and runs that start at a subprogram (a timer's
//! callback). Programs the verifier accepts (the real verifier, for the
//! objects) run on baseline code and in the interpreter, on separate maps:
//! the same results, context bytes and map contents.

use std::path::PathBuf;
use std::sync::Arc;

use userbpf_jit::{jit_verified, CodeTier, Options, Tier};
use userbpf_verifier::Verified;
use userbpf_vm::asm::assemble;
use userbpf_vm::interp::{Config, PreparedProgram};
use userbpf_vm::maps::MapSet;
use userbpf_vm::object::Object;
use userbpf_vm::{FaultKind, Helpers, Program, Vm};

fn baseline() -> Options {
    Options {
        tier: Tier::Baseline,
        ..Options::default()
    }
}

/// r0 = bpf_loop(10, cb, ctx = mem, flags); the callback stores its index
/// into mem[0] and stops at index `stop`.
fn loop_program(flags: i32, stop: i32, nr: i32) -> Program {
    let src = format!(
        "
        mov %r6, %r1
        mov %r1, {nr}
        lddw %r2, 0
        mov %r3, %r6
        mov %r4, {flags}
        call 181
        exit
    cb:
        stxdw [%r2], %r1
        mov %r0, 0
        jne %r1, {stop}, out
        mov %r0, 1
    out:
        exit"
    );
    let mut insns = assemble(&src).unwrap();
    insns[2].src = userbpf_vm::insn::op::PSEUDO_FUNC;
    insns[2].imm = 8 - 2 - 1;
    Program::new("loop", insns).unwrap()
}

/// A run's result (or fault's pc and kind) and memory after it.
type Outcome = (Result<u64, (usize, FaultKind)>, Vec<u8>);

fn run_both(program: &Program, mem: &[u8]) -> [Outcome; 2] {
    let p = Arc::new(PreparedProgram::new(program, &Helpers::new(), Config::default()).unwrap());
    let mut interp = Vm::from_prepared(Arc::clone(&p));
    interp.set_use_compiled(false);
    let mut m = mem.to_vec();
    let want = (interp.run(&mut m).map_err(|f| (f.pc, f.kind)), m);
    // SAFETY: the loop programs store only into their 8-byte context and
    // end (at most 10 rounds).
    let v = unsafe { Verified::assume_verified(Arc::clone(&p)) };
    let code = jit_verified(&v, baseline()).unwrap();
    assert_eq!(code.tier(), CodeTier::Baseline);
    let mut vm = Vm::from_prepared(p);
    let mut m = mem.to_vec();
    let got = (vm.run(&mut m).map_err(|f| (f.pc, f.kind)), m);
    [want, got]
}

#[test]
fn bpf_loop_runs_its_callback_on_baseline_code() {
    // (flags, stop, nr): stops early, runs them all, no round, bad flags,
    // too many rounds.
    for (flags, stop, nr) in [
        (0, 5, 10),
        (0, 99, 10),
        (0, 5, 0),
        (1, 5, 10),
        (0, 5, 1 << 24),
    ] {
        let [want, got] = run_both(&loop_program(flags, stop, nr), &[0u8; 8]);
        assert_eq!(got, want, "flags {flags}, stop {stop}, nr {nr}");
    }
    let [want, _] = run_both(&loop_program(0, 5, 10), &[0u8; 8]);
    assert_eq!(want.0, Ok(6));
    // A callback that is not a function address: the interpreter's fault.
    let mut insns = loop_program(0, 5, 10).insns().to_vec();
    insns[2].src = 0;
    insns[2].imm = 77;
    let bad = Program::new("bad", insns).unwrap();
    let [want, got] = run_both(&bad, &[0u8; 8]);
    assert!(want.0.is_err(), "{want:?}");
    assert_eq!(got, want);
}

/// `p` compiled by the baseline generator alone, checked or verified.
fn on_baseline(p: &Arc<PreparedProgram>, checked: bool) -> Arc<userbpf_jit::JitProgram> {
    if checked {
        userbpf_jit::jit_checked(p, baseline())
    } else {
        // SAFETY: the callers' programs touch no memory but through legacy
        // packet loads (which check their own bounds), and end.
        jit_verified(
            &unsafe { Verified::assume_verified(Arc::clone(p)) },
            baseline(),
        )
    }
    .unwrap()
}

/// Two VMs for `program`: one interpreting, one running the baseline
/// generator's code (checked or verified).
fn interpreter_and_baseline(program: &Program, checked: bool) -> (Vm, Vm) {
    let p = Arc::new(PreparedProgram::new(program, &Helpers::new(), Config::default()).unwrap());
    let mut interp = Vm::from_prepared(Arc::clone(&p));
    interp.set_use_compiled(false);
    let code = on_baseline(&p, checked);
    assert_eq!(code.tier(), CodeTier::Baseline);
    (interp, Vm::from_prepared(p))
}

fn fixture(name: &str) -> Object {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/bpf")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Object::parse(name, &bytes).unwrap_or_else(|e| panic!("{e}"))
}

/// Program `name` of `file`, verified by the verifier, on fresh maps: a
/// VM running baseline code and one interpreting, each on maps of its
/// own.
fn object_vms(file: &str, name: &str) -> ([Vm; 2], [Arc<MapSet>; 2]) {
    let obj = fixture(file);
    let prog = obj.program(name).unwrap();
    let program = prog.to_program().unwrap();
    let env = userbpf_verifier::Env::for_object(&obj, prog);
    let (proof, _) =
        userbpf_verifier::verify(program.clone(), &env, &userbpf_verifier::Options::default())
            .unwrap_or_else(|e| panic!("{file}:{name}: {e}"));
    let mut vms = Vec::new();
    let mut sets = Vec::new();
    for native in [true, false] {
        let set = Arc::new(MapSet::from_object(&obj).unwrap());
        let mut vm = set
            .vm_for_object(&obj, name, &Helpers::new(), Config::default())
            .unwrap();
        if native {
            let v = proof
                .vouch_for(vm.prepared())
                .expect("the proof is of this program");
            let code =
                jit_verified(&v, baseline()).unwrap_or_else(|e| panic!("{file}:{name}: {e}"));
            assert_eq!(code.tier(), CodeTier::Baseline);
        } else {
            vm.set_use_compiled(false);
        }
        vms.push(vm);
        sets.push(set);
    }
    let [a, b] = <[Vm; 2]>::try_from(vms).ok().unwrap();
    let [c, d] = <[Arc<MapSet>; 2]>::try_from(sets).ok().unwrap();
    ([a, b], [c, d])
}

fn map_contents(set: &MapSet) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    set.maps()
        .iter()
        .map(|m| {
            let mut all: Vec<_> = m
                .keys()
                .into_iter()
                .map(|k| {
                    let v = m.lookup(&k).map(|v| v.to_vec()).unwrap_or_default();
                    (k, v)
                })
                .collect();
            all.sort();
            all
        })
        .collect()
}

/// loop.bpf.o's `histogram` context: 16 values (a 0 among them: the
/// callback stops there), their count and a result slot.
fn hist_ctx() -> Vec<u8> {
    let mut ctx = Vec::new();
    for v in [1u64, 2, 3, 4, 100, 1000, 7, 0, 5, 5, 5, 5, 5, 5, 5, 5] {
        ctx.extend_from_slice(&v.to_le_bytes());
    }
    ctx.extend_from_slice(&16u32.to_le_bytes());
    ctx.extend_from_slice(&0u32.to_le_bytes());
    ctx
}

/// foreach.bpf.o's `walk` context: keys 1..=`n` into the hash map, the
/// array walk stopping at `stop`, and the result fields.
fn walk_ctx(n: u32, stop: u32) -> Vec<u8> {
    let mut ctx = vec![0u8; 48];
    ctx[..4].copy_from_slice(&n.to_le_bytes());
    ctx[4..8].copy_from_slice(&stop.to_le_bytes());
    ctx
}

#[test]
fn object_programs_with_callbacks_and_calls_agree_with_the_interpreter() {
    // (file, program, contexts to run on, in turn).
    let cases: Vec<(&str, &str, Vec<Vec<u8>>)> = vec![
        ("loop.bpf.o", "histogram", vec![hist_ctx(), hist_ctx()]),
        (
            "foreach.bpf.o",
            "walk",
            vec![walk_ctx(5, 3), walk_ctx(5, 99)],
        ),
        (
            "calls.bpf.o",
            "calls",
            vec![vec![0u8; 24], {
                let mut c = vec![0u8; 24];
                c[..8].copy_from_slice(&5u64.to_le_bytes());
                c[8..16].copy_from_slice(&9u64.to_le_bytes());
                c
            }],
        ),
    ];
    for (file, name, contexts) in cases {
        let ([mut native, mut interp], [native_maps, interp_maps]) = object_vms(file, name);
        for ctx in contexts {
            let mut a = ctx.clone();
            let mut b = ctx;
            let got = native.run(&mut a).map_err(|f| (f.pc, f.kind));
            let want = interp.run(&mut b).map_err(|f| (f.pc, f.kind));
            assert_eq!(got, want, "{file}:{name}");
            assert!(want.is_ok(), "{file}:{name}: {want:?}");
            assert_eq!(a, b, "{file}:{name}: context");
            assert_eq!(
                map_contents(&native_maps),
                map_contents(&interp_maps),
                "{file}:{name}: maps"
            );
        }
    }
}

#[test]
fn a_run_may_start_at_a_subprogram() {
    // main returns the callback's address; the callback (run directly, as
    // a timer runs its callback) calls a subprogram of its own.
    let src = "
        lddw %r0, 0
        exit
    cb:
        mov %r6, %r1
        call local twice
        add %r0, %r2
        add %r0, %r6
        exit
    twice:
        mov %r0, %r1
        lsh %r0, 1
        exit";
    let mut insns = assemble(src).unwrap();
    insns[0].src = userbpf_vm::insn::op::PSEUDO_FUNC;
    // (`cb` is at pc 3: relative to the lddw's second slot.)
    insns[0].imm = 2;
    let program = Program::new("entries", insns).unwrap();
    let p = Arc::new(PreparedProgram::new(&program, &Helpers::new(), Config::default()).unwrap());
    let mut interp = Vm::from_prepared(Arc::clone(&p));
    interp.set_use_compiled(false);
    let cb = interp.run(&mut []).unwrap();
    let want = interp.run_subprogram(cb, [21, 5, 0, 0, 0]);
    assert_eq!(want, Ok(21 * 2 + 5 + 21));
    // SAFETY: the program touches no memory and ends.
    let v = unsafe { Verified::assume_verified(Arc::clone(&p)) };
    let code = jit_verified(&v, baseline()).unwrap();
    assert_eq!(code.tier(), CodeTier::Baseline);
    let mut vm = Vm::from_prepared(p);
    assert_eq!(vm.run(&mut []), Ok(cb));
    for _ in 0..3 {
        assert_eq!(vm.run_subprogram(cb, [21, 5, 0, 0, 0]), want);
    }
    assert_eq!(vm.run(&mut []), Ok(cb));
}

#[test]
fn a_poisoned_core_relocation_faults_on_baseline_code_as_in_the_interpreter() {
    let program = Program::new(
        "poison",
        assemble("mov %r0, 1\njeq %r1, 0, skip\ncall 0xbad2310\nskip:\nexit").unwrap(),
    )
    .unwrap();
    for checked in [false, true] {
        let (mut interp, mut vm) = interpreter_and_baseline(&program, checked);
        for mem in [vec![0u8; 8], vec![1u8; 8]] {
            let want = interp.run(&mut mem.clone()).map_err(|f| (f.pc, f.kind));
            let got = vm.run(&mut mem.clone()).map_err(|f| (f.pc, f.kind));
            assert_eq!(got, want, "checked: {checked}");
        }
        let fault = interp.run(&mut [1u8; 8]).unwrap_err();
        assert_eq!(fault.pc, 2);
    }
}

#[test]
fn tail_calls_and_packet_loads_leave_baseline_code_as_the_interpreter_does() {
    // tail.bpf.o: entry tail-calls target_a or target_b by the packet's
    // first word (empty slots and bad indexes fall through).
    let ([mut native, mut interp], _) = object_vms("tail.bpf.o", "entry");
    for index in [1u32, 3, 0, 7] {
        let mut pkt = index.to_le_bytes().to_vec();
        pkt.extend_from_slice(&[0; 12]);
        let run = |vm: &mut Vm| {
            let out = userbpf_vm::context::run_xdp(vm, &pkt).unwrap();
            (out.r0, out.packet)
        };
        assert_eq!(run(&mut native), run(&mut interp), "index {index}");
    }
    // Legacy packet loads, absolute and indirect, inside the packet, past
    // its end (the function, here the program, returns 0) and without one,
    // in both modes.
    let src = "
        mov %r6, %r1
        mov %r7, 3
        ldabsh 2
        mov %r8, %r0
        ldindw %r7, 1
        add %r0, %r8
        exit";
    let program = Program::new("packet", assemble(src).unwrap()).unwrap();
    for checked in [false, true] {
        let (mut interp, mut vm) = interpreter_and_baseline(&program, checked);
        for len in [16usize, 8, 5, 0] {
            let mem: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(29) ^ 0x5a).collect();
            let want = interp.run(&mut mem.clone()).map_err(|f| (f.pc, f.kind));
            let got = vm.run(&mut mem.clone()).map_err(|f| (f.pc, f.kind));
            assert_eq!(got, want, "checked: {checked}, {len} bytes");
        }
    }
}

/// Program `name` of `file` checked with `budget`, on fresh maps: native
/// (baseline code) or interpreted.
fn checked_object_vm(file: &str, name: &str, budget: u64, native: bool) -> (Vm, Arc<MapSet>) {
    let obj = fixture(file);
    let set = Arc::new(MapSet::from_object(&obj).unwrap());
    let config = Config {
        budget: Some(budget),
    };
    let mut vm = set
        .vm_for_object(&obj, name, &Helpers::new(), config)
        .unwrap();
    if native {
        let code = userbpf_jit::jit_checked(vm.prepared(), baseline()).unwrap();
        assert_eq!(code.tier(), CodeTier::Baseline);
    } else {
        vm.set_use_compiled(false);
    }
    (vm, set)
}

#[test]
fn checked_subprograms_stop_where_the_interpreter_stops_for_every_budget() {
    // Calls, bpf_loop's callbacks and a helper's callbacks charge the
    // budget as the interpreter does: with every budget from none to
    // enough, the same fault (or result), instruction count, context and
    // maps.
    // (A walk over a hash map stopped midway has changed the elements
    // its order reached first: the two runs' maps hash differently, so
    // only whole walks leave the same maps.)
    for (file, name, ctx, partial_maps) in [
        ("calls.bpf.o", "calls", vec![3u8; 24], true),
        ("loop.bpf.o", "histogram", hist_ctx(), true),
        ("foreach.bpf.o", "walk", walk_ctx(5, 3), false),
    ] {
        let run = |budget: u64, native: bool| {
            let (mut vm, set) = checked_object_vm(file, name, budget, native);
            let mut c = ctx.clone();
            let r = vm.run(&mut c).map_err(|f| (f.pc, f.kind));
            let maps = (partial_maps || r.is_ok()).then(|| map_contents(&set));
            (r, vm.last_insn_count(), c, maps)
        };
        let full = run(1 << 30, false);
        assert!(full.0.is_ok(), "{file}:{name}: {:?}", full.0);
        for budget in (1..=full.1 + 1).chain([1 << 30]) {
            assert!(
                run(budget, true) == run(budget, false),
                "{file}:{name}, budget {budget}: {:?} against {:?}",
                {
                    let r = run(budget, true);
                    (r.0, r.1, r.2)
                },
                {
                    let r = run(budget, false);
                    (r.0, r.1, r.2)
                }
            );
        }
    }
}

/// A program array whose one slot (map 0xa77a, index 0) is `self.0`.
struct Array(Arc<PreparedProgram>);

impl userbpf_vm::interp::ProgramArray for Array {
    fn get(&self, map: u64, index: u32) -> Option<Arc<PreparedProgram>> {
        (map == 0xa77a && index == 0).then(|| Arc::clone(&self.0))
    }
}

#[test]
fn verified_tail_calls_from_a_subprogram_return_the_targets_r0() {
    // f tail-calls the target (index 0) or falls through (index 1); the
    // caller adds 1 to whatever f returns.
    let target = "mov %r0, 41\nexit";
    let entry = "
        mov %r6, %r1
        call local f
        add %r0, 1
        exit
    f:
        ldxw %r3, [%r6+0]
        lddw %r2, 0xa77a
        call 12
        mov %r0, 100
        exit";
    let prepare = |src: &str| {
        let program = Program::new("tail", assemble(src).unwrap()).unwrap();
        Arc::new(PreparedProgram::new(&program, &Helpers::new(), Config::default()).unwrap())
    };
    for index in [0u32, 1] {
        let run = |native: bool| {
            let (t, e) = (prepare(target), prepare(entry));
            if native {
                for p in [&t, &e] {
                    // SAFETY: the programs read the 4-byte context and end.
                    let v = unsafe { Verified::assume_verified(Arc::clone(p)) };
                    assert_eq!(
                        jit_verified(&v, baseline()).unwrap().tier(),
                        CodeTier::Baseline
                    );
                }
            }
            let mut vm = Vm::from_prepared(e);
            if !native {
                vm.set_use_compiled(false);
            }
            vm.set_program_array(Some(Arc::new(Array(t))));
            vm.run(&mut index.to_le_bytes()).map_err(|f| (f.pc, f.kind))
        };
        let want = run(false);
        assert_eq!(want, Ok(if index == 0 { 42 } else { 101 }));
        assert_eq!(run(true), want, "index {index}");
    }
}

#[test]
fn legacy_loads_past_the_packet_return_from_their_subprogram_in_native_code() {
    // socket.bpf.o's sub_loads sums three subprogram calls, each a packet
    // field + 1, or 0 when the load (BPF_LD_ABS at 90, BPF_LD_IND at 2
    // and 1000) is past the packet: the subprogram returns 0 and its
    // caller goes on, as after the kernel's gen_ld_abs (the kernel's own
    // verdicts: kernel-backend/tests/vm_vs_kernel.rs).
    let obj = fixture("socket.bpf.o");
    let prog = obj.program("sub_loads").unwrap();
    let env = userbpf_verifier::Env::for_object(&obj, prog);
    let (proof, _) = userbpf_verifier::verify(
        prog.to_program().unwrap(),
        &env,
        &userbpf_verifier::Options::default(),
    )
    .unwrap_or_else(|e| panic!("sub_loads: {e}"));
    let packets: Vec<Vec<u8>> = [15usize, 17, 64, 105, 120]
        .iter()
        .map(|&n| (0..n).map(|i| (i as u8).wrapping_mul(37) ^ 0xa5).collect())
        .collect();
    for (tier, verified) in [
        (Tier::Baseline, true),
        (Tier::Baseline, false),
        (Tier::Optimized, true),
        (Tier::Optimized, false),
    ] {
        let what = format!("{tier:?}, verified: {verified}");
        let set = Arc::new(MapSet::from_object(&obj).unwrap());
        let mut native = set
            .vm_for_object(&obj, "sub_loads", &Helpers::new(), Config::default())
            .unwrap();
        let mut interp = Vm::from_prepared(Arc::clone(native.prepared()));
        interp.set_use_compiled(false);
        let options = Options {
            tier,
            ..Options::default()
        };
        let code = if verified {
            let v = proof.vouch_for(native.prepared()).expect("this program");
            jit_verified(&v, options)
        } else {
            userbpf_jit::jit_checked(native.prepared(), options)
        }
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let want_tier = match tier {
            Tier::Baseline => CodeTier::Baseline,
            _ => CodeTier::Optimized,
        };
        assert_eq!(code.tier(), want_tier, "{what}");
        for pkt in &packets {
            // The program sees the packet from the network header.
            let net = &pkt[14..];
            let field = |off: usize, n: usize| -> u64 {
                net.get(off..off + n).map_or(0, |b| {
                    b.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)) + 1
                })
            };
            let want = field(90, 1) * 100_000 + field(2, 2) * 3 + field(1000, 2) + 7;
            let run = |vm: &mut Vm| {
                let out = userbpf_vm::context::run_skb(vm, pkt, false).unwrap();
                (out.r0, out.packet)
            };
            let (r0, out) = run(&mut native);
            assert_eq!(r0, want, "{what}: {} bytes", pkt.len());
            assert_eq!((r0, out), run(&mut interp), "{what}: {} bytes", pkt.len());
        }
    }
}
