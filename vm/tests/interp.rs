//! Behaviour of the checked interpreter beyond the conformance corpus:
//! faults, limits, calls, tail calls, helpers, regions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use userbpf_vm::asm::assemble;
use userbpf_vm::helpers::{ArgKind, ArgSize, HelperError, HelperProto};
use userbpf_vm::interp::{
    MapResolver, PrepareError, PreparedProgram, ProgramArray, DEFAULT_BUDGET, MAX_CALL_FRAMES,
    MAX_TAIL_CALLS,
};
use userbpf_vm::isa::Lddw;
use userbpf_vm::memory::{Access, Region, RegionKind};
use userbpf_vm::{Config, Fault, FaultKind, Helpers, Program, Vm};

fn program(name: &str, src: &str) -> Program {
    let insns = assemble(src).unwrap_or_else(|e| panic!("{e}"));
    Program::new(name, insns).unwrap_or_else(|e| panic!("{e}"))
}

fn vm(src: &str, helpers: Helpers) -> Vm {
    Vm::new(&program("test", src), helpers).unwrap_or_else(|e| panic!("{e}"))
}

fn run(src: &str, mem: &mut [u8]) -> Result<u64, Fault> {
    vm(src, Helpers::new()).run(mem)
}

#[test]
fn division_and_modulo_follow_rfc_9669() {
    // Division by zero gives 0; modulo by zero leaves dst (64-bit) or its
    // zero-extended low half (32-bit); INT_MIN / -1 wraps.
    assert_eq!(
        run("mov %r0, 7\nmov %r1, 0\ndiv %r0, %r1\nexit", &mut []),
        Ok(0)
    );
    assert_eq!(
        run("mov %r0, 7\nmov %r1, 0\nmod %r0, %r1\nexit", &mut []),
        Ok(7)
    );
    assert_eq!(
        run(
            "lddw %r0, 0x100000007\nmov %r1, 0\nmod32 %r0, %r1\nexit",
            &mut []
        ),
        Ok(7)
    );
    assert_eq!(
        run("lddw %r0, 0x8000000000000000\nsdiv %r0, -1\nexit", &mut []),
        Ok(0x8000_0000_0000_0000)
    );
    assert_eq!(
        run("mov %r0, -7\nsmod %r0, 2\nexit", &mut []),
        Ok((-1i64) as u64)
    );
    // Shift amounts are masked; 32-bit results are zero-extended.
    assert_eq!(run("mov %r0, 1\nlsh %r0, 65\nexit", &mut []), Ok(2));
    assert_eq!(
        run("mov %r0, -1\nadd32 %r0, 0\nexit", &mut []),
        Ok(0xffff_ffff)
    );
}

#[test]
fn out_of_bounds_loads_fault_with_pc_address_and_length() {
    let mut mem = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let base = mem.as_ptr() as u64;
    let err = run("mov %r0, 0\nldxw %r0, [%r1+6]\nexit", &mut mem).unwrap_err();
    assert_eq!(err.pc, 1);
    assert_eq!(err.addr, base + 6);
    assert_eq!(err.len, 4);
    assert_eq!(
        err.kind,
        FaultKind::OutOfBounds {
            access: Access::Read
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("program `test`"), "{msg}");
    assert!(msg.contains("pc 1"), "{msg}");
    assert!(msg.contains("r0 = *(u32 *)(r1 + 6)"), "{msg}");
    // In bounds, little endian.
    assert_eq!(run("ldxw %r0, [%r1+4]\nexit", &mut mem), Ok(0x0807_0605));
}

#[test]
fn null_and_wild_pointers_fault() {
    let err = run("mov %r1, 0\nldxb %r0, [%r1]\nexit", &mut []).unwrap_err();
    assert_eq!(err.addr, 0);
    let err = run("lddw %r1, 0x7fff00001000\nstxdw [%r1], %r1\nexit", &mut []).unwrap_err();
    assert_eq!(
        err.kind,
        FaultKind::OutOfBounds {
            access: Access::Write
        }
    );
}

#[test]
fn stores_into_read_only_regions_fault() {
    let ro = vec![9u8; 16];
    let mut v = vm("ldxdw %r0, [%r1]\nstdw [%r1], 1\nexit", Helpers::new());
    // SAFETY: `ro` outlives the VM's runs.
    unsafe { v.add_region(Region::from_slice(&ro, RegionKind::MapValue)) };
    let err = v
        .run_with_args([ro.as_ptr() as u64, 0, 0, 0, 0])
        .unwrap_err();
    assert_eq!(err.pc, 1);
    assert_eq!(
        err.kind,
        FaultKind::ReadOnly {
            region: RegionKind::MapValue
        }
    );
    v.clear_regions();
    let err = v
        .run_with_args([ro.as_ptr() as u64, 0, 0, 0, 0])
        .unwrap_err();
    assert_eq!(err.pc, 0, "cleared regions are no longer readable");
}

#[test]
fn the_stack_is_512_bytes_per_frame_and_bounded() {
    assert_eq!(
        run("stdw [%r10-512], 7\nldxdw %r0, [%r10-512]\nexit", &mut []),
        Ok(7)
    );
    let err = run("stdw [%r10-520], 7\nexit", &mut []).unwrap_err();
    assert_eq!(err.pc, 0);
    let err = run("ldxb %r0, [%r10]\nexit", &mut []).unwrap_err();
    assert_eq!(
        err.kind,
        FaultKind::OutOfBounds {
            access: Access::Read
        }
    );
}

#[test]
fn the_stack_is_zeroed_before_each_run() {
    // Reads its slot and its callee's slot, then leaves secrets in both.
    let src = "
        ldxdw %r0, [%r10-8]
        call local f
        lddw %r2, 0x5ec7e7
        stxdw [%r10-8], %r2
        exit
    f:
        ldxdw %r3, [%r10-8]
        or %r0, %r3
        lddw %r2, 0x5ec7e7
        stxdw [%r10-8], %r2
        exit";
    let mut v = vm(src, Helpers::new());
    assert_eq!(v.run(&mut []), Ok(0));
    assert_eq!(v.run(&mut []), Ok(0), "data leaked from the previous run");
}

#[test]
fn callees_get_fresh_frames_and_can_use_callers_stack_through_pointers() {
    let src = "
        mov %r6, 11
        stdw [%r10-8], 1
        mov %r1, %r10
        add %r1, -8
        call local f
        ldxdw %r0, [%r10-8]
        add %r0, %r6
        exit
    f:
        mov %r6, 99
        stdw [%r10-8], 5
        ldxdw %r2, [%r10-8]
        stxdw [%r1], %r2
        exit";
    // r6 is restored (11), the caller's slot was written through r1 (5).
    assert_eq!(run(src, &mut []), Ok(16));
}

#[test]
fn calls_nest_up_to_eight_frames() {
    // f(n): if n == 0 return 0; return f(n - 1) + 1, called with r1 = depth.
    let src = "
        call local f
        exit
    f:
        jeq %r1, 0, done
        sub %r1, 1
        call local f
        add %r0, 1
        exit
    done:
        mov %r0, 0
        exit";
    let p = program("rec", src);
    let mut v = Vm::new(&p, Helpers::new()).unwrap();
    // main + f(0..=6): 8 frames.
    assert_eq!(v.run_with_args([6, 0, 0, 0, 0]), Ok(6));
    let err = v.run_with_args([7, 0, 0, 0, 0]).unwrap_err();
    assert_eq!(
        err.kind,
        FaultKind::CallDepthExceeded {
            limit: MAX_CALL_FRAMES
        }
    );
}

#[test]
fn the_instruction_budget_stops_infinite_loops() {
    let src = "mov %r0, 0\nloop:\nadd %r0, 1\nja loop\nexit";
    let err = run(src, &mut []).unwrap_err();
    assert_eq!(
        err.kind,
        FaultKind::BudgetExhausted {
            limit: DEFAULT_BUDGET
        }
    );
    let p = program("loop", src);
    let mut v = Vm::with_config(&p, &Helpers::new(), Config { budget: Some(10) }).unwrap();
    let err = v.run(&mut []).unwrap_err();
    assert_eq!(err.kind, FaultKind::BudgetExhausted { limit: 10 });
    assert_eq!(v.last_insn_count(), 10);
    // Without a budget a terminating loop of 3M instructions completes.
    let src = "mov %r0, 0\nloop:\nadd %r0, 1\njlt %r0, 1000000, loop\nexit";
    let p = program("long", src);
    let mut v = Vm::with_config(&p, &Helpers::new(), Config { budget: None }).unwrap();
    assert_eq!(v.run(&mut []), Ok(1_000_000));
    assert_eq!(v.last_insn_count(), 2_000_002);
}

#[test]
fn helpers_receive_r1_to_r5_and_pointer_arguments_are_checked() {
    let mut h = Helpers::new();
    h.register_fn(0x100, "sum5", |a, b, c, d, e| a + b + c + d + e);
    h.register(
        0x101,
        "read_u64",
        HelperProto::new(&[ArgKind::ReadMem {
            size: ArgSize::Arg(1),
            nullable: false,
        }]),
        |ctx, a| {
            let b = ctx.read(a[0], 8)?;
            Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        },
    );
    let src = "mov %r1, 1\nmov %r2, 2\nmov %r3, 3\nmov %r4, 4\nmov %r5, 5\ncall 0x100\nexit";
    assert_eq!(vm(src, h.clone()).run(&mut []), Ok(15));

    let mut mem = 0x1122_3344_5566_7788u64.to_le_bytes();
    let src = "mov %r2, 8\ncall 0x101\nexit";
    assert_eq!(vm(src, h.clone()).run(&mut mem), Ok(0x1122_3344_5566_7788));
    // Size 9 overruns the 8-byte region: refused before the helper runs.
    let src = "mov %r2, 9\ncall 0x101\nexit";
    let err = vm(src, h).run(&mut mem).unwrap_err();
    assert_eq!(err.pc, 1);
    assert_eq!(err.len, 9);
    assert_eq!(
        err.kind,
        FaultKind::HelperArgument {
            helper: 0x101,
            arg: 1,
            access: Access::Read
        }
    );
}

extern "C" fn native_mul(a: u64, b: u64, _: u64, _: u64, _: u64) -> u64 {
    a.wrapping_mul(b)
}

#[test]
fn native_helpers_errors_and_panics() {
    let mut h = Helpers::new();
    h.register_native(0x200, "mul", native_mul);
    h.register(0x201, "fails", HelperProto::SCALARS, |_, _| {
        Err(HelperError::Failed("nope".into()))
    });
    h.register(0x202, "panics", HelperProto::SCALARS, |_, _| panic!("boom"));
    assert_eq!(
        vm("mov %r1, 6\nmov %r2, 7\ncall 0x200\nexit", h.clone()).run(&mut []),
        Ok(42)
    );
    let err = vm("call 0x201\nexit", h.clone()).run(&mut []).unwrap_err();
    assert!(matches!(err.kind, FaultKind::Helper { helper: 0x201, .. }));
    assert!(err.to_string().contains("nope"));
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let err = vm("call 0x202\nexit", h).run(&mut []).unwrap_err();
    std::panic::set_hook(prev);
    assert!(err.to_string().contains("boom"), "{err}");
}

#[test]
fn unknown_helpers_kfuncs_and_maps_are_refused_at_load() {
    let p = program("p", "call 77777\nexit");
    let err = Vm::new(&p, Helpers::new()).unwrap_err();
    assert!(matches!(
        err,
        PrepareError::UnknownHelper {
            pc: 0,
            id: 77777,
            ..
        }
    ));
    let p = program("p", "call 1\nexit");
    let err = Vm::new(&p, Helpers::new()).unwrap_err();
    assert!(err.to_string().contains("bpf_map_lookup_elem"), "{err}");
    let p = program("p", "call runtime 1234\nexit");
    let err = Vm::new(&p, Helpers::new()).unwrap_err();
    assert!(err.to_string().contains("kfunc"), "{err}");
    // lddw src=1 (map fd) needs a resolver.
    let p = program("p", "r1 = map[fd:3]\nmov %r0, %r1\nexit");
    let err = Vm::new(&p, Helpers::new()).unwrap_err();
    assert!(matches!(err, PrepareError::Lddw { pc: 0, .. }), "{err}");
    struct Maps;
    impl MapResolver for Maps {
        fn resolve(&self, _pc: usize, value: Lddw) -> Result<u64, String> {
            match value {
                Lddw::MapFd(fd) => Ok(0x1000 + fd as u64),
                _ => Err("unsupported".into()),
            }
        }
    }
    let prepared =
        PreparedProgram::with_maps(&p, &Helpers::new(), Config::default(), &Maps).unwrap();
    assert_eq!(
        Vm::from_prepared(Arc::new(prepared)).run(&mut []),
        Ok(0x1003)
    );
}

#[test]
fn callx_calls_subprograms_by_address_and_helpers_by_id() {
    let src = "
        r2 = func[pc+4]
        mov %r1, 20
        callx r2
        exit
    f:
        mov %r0, %r1
        add %r0, 1
        exit";
    // `func[pc+4]` at pc 0 targets pc 5 (lddw takes two slots).
    assert_eq!(run(src, &mut []), Ok(21));
    let mut h = Helpers::new();
    h.register_fn(9, "nine", |_, _, _, _, _| 9);
    assert_eq!(vm("mov %r3, 9\ncallx r3\nexit", h).run(&mut []), Ok(9));
    let err = run("lddw %r3, 0x123456789\ncallx r3\nexit", &mut []).unwrap_err();
    assert_eq!(
        err.kind,
        FaultKind::BadCallTarget {
            value: 0x1_2345_6789
        }
    );
}

#[test]
fn misaligned_atomics_fault() {
    let err = run("mov %r1, 1\nlock add [%r10-15], %r1\nexit", &mut []).unwrap_err();
    assert_eq!(err.kind, FaultKind::Misaligned);
    assert_eq!(
        run(
            "stdw [%r10-8], 40\nmov %r1, 2\nlock fetch add [%r10-8], %r1\nldxdw %r0, [%r10-8]\nadd %r0, %r1\nexit",
            &mut []
        ),
        Ok(82)
    );
}

#[test]
fn legacy_packet_loads_are_big_endian_and_end_the_program_out_of_bounds() {
    let mut pkt = [0x12u8, 0x34, 0x56, 0x78, 0x9a];
    assert_eq!(run("r0 = *(u16 *)skb[1]\nexit", &mut pkt), Ok(0x3456));
    assert_eq!(
        run(
            "mov %r6, %r1\nmov %r3, 1\nr0 = *(u32 *)skb[r3 + 0]\nexit",
            &mut pkt
        ),
        Ok(0x3456_789a)
    );
    // Out of bounds: the program ends with r0 = 0.
    assert_eq!(
        run(
            "mov %r0, 5\nr0 = *(u32 *)skb[2]\nmov %r0, 7\nexit",
            &mut pkt
        ),
        Ok(0)
    );
}

struct Array {
    progs: Vec<Option<Arc<PreparedProgram>>>,
    lookups: AtomicUsize,
}

impl ProgramArray for Array {
    fn get(&self, map: u64, index: u32) -> Option<Arc<PreparedProgram>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        if map != 0xa77a {
            return None;
        }
        self.progs.get(index as usize).cloned().flatten()
    }
}

fn prepared(name: &str, src: &str) -> Arc<PreparedProgram> {
    Arc::new(PreparedProgram::new(&program(name, src), &Helpers::new(), Config::default()).unwrap())
}

#[test]
fn tail_calls_replace_the_program_and_are_limited_to_33() {
    // Entry: count in mem[0], tail call slot 1 with r1 = ctx; if it falls
    // through, return 1000 + count.
    let entry = "
        ldxdw %r2, [%r1]
        add %r2, 1
        stxdw [%r1], %r2
        lddw %r2, 0xa77a
        mov %r3, 1
        call 12
        ldxdw %r0, [%r1]
        add %r0, 1000
        exit";
    let target_ok = prepared("target", "ldxdw %r0, [%r1]\nadd %r0, 500\nexit");
    let array = Arc::new(Array {
        progs: vec![None, Some(target_ok)],
        lookups: AtomicUsize::new(0),
    });
    let mut v = vm(entry, Helpers::new());
    v.set_program_array(Some(array.clone()));
    let mut mem = [0u8; 8];
    assert_eq!(v.run(&mut mem), Ok(501));

    // An empty slot falls through with the helper's r0 = -ENOENT.
    let fallthrough = "lddw %r2, 0xa77a\nmov %r3, 0\ncall 12\nexit";
    let mut v = vm(fallthrough, Helpers::new());
    v.set_program_array(Some(array));
    assert_eq!(v.run(&mut []), Ok((-2i64) as u64));

    // A program that tail-calls itself runs 1 + 33 times, then falls through.
    let me = prepared("self", entry);
    let array = Arc::new(Array {
        progs: vec![None, Some(me.clone())],
        lookups: AtomicUsize::new(0),
    });
    let mut v = Vm::from_prepared(me);
    v.set_program_array(Some(array));
    let mut mem = [0u8; 8];
    assert_eq!(v.run(&mut mem), Ok(1000 + 1 + u64::from(MAX_TAIL_CALLS)));
}

#[test]
fn tail_calls_from_subprograms_return_to_the_caller() {
    let entry = "
        call local f
        add %r0, 1
        exit
    f:
        lddw %r2, 0xa77a
        mov %r3, 0
        call 12
        mov %r0, 100
        exit";
    let target = prepared("target", "mov %r0, 41\nexit");
    let array = Arc::new(Array {
        progs: vec![Some(target)],
        lookups: AtomicUsize::new(0),
    });
    let mut v = vm(entry, Helpers::new());
    v.set_program_array(Some(array));
    assert_eq!(v.run(&mut []), Ok(42));
}

#[test]
fn helpers_can_grant_memory_for_the_rest_of_the_run() {
    static DATA: [u8; 8] = 0x0102_0304_0506_0708u64.to_le_bytes();
    let mut h = Helpers::new();
    h.register(0x300, "get_data", HelperProto::SCALARS, |ctx, _| {
        // SAFETY: DATA is static and read-only.
        unsafe { ctx.grant(Region::from_slice(&DATA, RegionKind::HelperMemory)) };
        Ok(DATA.as_ptr() as u64)
    });
    let mut v = vm("call 0x300\nldxdw %r0, [%r0]\nexit", h);
    assert_eq!(v.run(&mut []), Ok(0x0102_0304_0506_0708));
    // The grant ends with the run.
    let mut v2 = vm("ldxdw %r0, [%r1]\nexit", Helpers::new());
    assert!(v2
        .run_with_args([DATA.as_ptr() as u64, 0, 0, 0, 0])
        .is_err());
}

#[test]
fn bpf_loop_calls_the_callback_until_it_returns_nonzero() {
    // r0 = bpf_loop(10, cb, ctx = mem, 0); the callback stores its index i
    // into mem[0] and returns 1 (stop) at i == 5.
    let src = "
        mov %r6, %r1
        mov %r1, 10
        lddw %r2, 0
        mov %r3, %r6
        mov %r4, 0
        call 181
        exit
    cb:
        stxdw [%r2], %r1
        mov %r0, 0
        jne %r1, 5, out
        mov %r0, 1
    out:
        exit";
    // Patch the lddw into a function address of `cb`.
    let mut insns = assemble(src).unwrap();
    insns[2].src = userbpf_vm::insn::op::PSEUDO_FUNC;
    insns[2].imm = 8 - 2 - 1;
    let p = Program::new("loop", insns).unwrap();
    let mut v = Vm::new(&p, Helpers::new()).unwrap();
    let mut mem = [0u8; 8];
    // Stops at i = 5: returns i + 1 = 6; the last index written is 5.
    assert_eq!(v.run(&mut mem), Ok(6));
    assert_eq!(u64::from_le_bytes(mem), 5);
    // Flags must be 0; more than BPF_MAX_LOOPS is refused.
    let mut bad = assemble(src).unwrap();
    bad[2].src = userbpf_vm::insn::op::PSEUDO_FUNC;
    bad[2].imm = 5;
    bad[5] = userbpf_vm::insn::Insn::new(0xb7, 4, 0, 0, 1);
    let p = Program::new("flags", bad).unwrap();
    assert_eq!(
        Vm::new(&p, Helpers::new()).unwrap().run(&mut mem),
        Ok((-(libc::EINVAL as i64)) as u64)
    );
}
