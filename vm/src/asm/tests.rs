//! Assembler tests: both syntaxes, errors, the negative corpus.

use super::*;
use crate::disasm::disassemble;

fn r(n: u8) -> Reg {
    Reg::new(n).expect("valid register")
}

/// Assembles one instruction.
fn one(text: &str) -> Instruction {
    match assemble_instructions(text) {
        Ok(v) if v.len() == 1 => v[0],
        other => panic!("`{text}`: {other:?}"),
    }
}

/// The error message for `text`.
fn error(text: &str) -> AsmError {
    match assemble(text) {
        Err(e) => e,
        Ok(v) => panic!("`{text}` assembled to {v:?}"),
    }
}

fn assert_error(text: &str, needle: &str) {
    let e = error(text);
    assert!(
        e.message.contains(needle),
        "`{text}`: message `{}` does not mention `{needle}`",
        e.message
    );
}

fn alu(width: Width, op: AluOp, dst: u8, src: Source) -> Instruction {
    Instruction::Alu {
        width,
        op,
        dst: r(dst),
        src,
    }
}

#[test]
fn conformance_alu() {
    use AluOp::*;
    use Width::*;
    assert_eq!(one("mov %r0, 1"), alu(W64, Mov, 0, Source::Imm(1)));
    assert_eq!(one("mov64 %r0, %r1"), alu(W64, Mov, 0, Source::Reg(r(1))));
    assert_eq!(one("add32 %r0, -3"), alu(W32, Add, 0, Source::Imm(-3)));
    assert_eq!(one("sdiv32 %r2, %r3"), alu(W32, SDiv, 2, Source::Reg(r(3))));
    assert_eq!(one("smod %r2, 7"), alu(W64, SMod, 2, Source::Imm(7)));
    assert_eq!(one("arsh %r0, 4"), alu(W64, Arsh, 0, Source::Imm(4)));
    assert_eq!(one("xor32 %r9, %r10"), alu(W32, Xor, 9, Source::Reg(r(10))));
    assert_eq!(
        one("mov32 %r0, 0xffffffff"),
        alu(W32, Mov, 0, Source::Imm(-1))
    );
    assert_eq!(one("mov %r0, -0x10"), alu(W64, Mov, 0, Source::Imm(-16)));
    assert_eq!(
        one("mov %r0, -2147483648"),
        alu(W64, Mov, 0, Source::Imm(i32::MIN))
    );
    assert_eq!(
        one("neg32 %r1"),
        Instruction::Neg {
            width: W32,
            dst: r(1)
        }
    );
    assert_eq!(
        one("neg %r1"),
        Instruction::Neg {
            width: W64,
            dst: r(1)
        }
    );
    for (text, op, bits) in [
        ("be16 %r0", EndianOp::ToBe, 16),
        ("le32 %r0", EndianOp::ToLe, 32),
        ("swap64 %r0", EndianOp::Swap, 64),
        ("bswap16 %r0", EndianOp::Swap, 16),
    ] {
        assert_eq!(
            one(text),
            Instruction::Endian {
                op,
                dst: r(0),
                bits
            },
            "{text}"
        );
    }
    for (text, width, bits) in [
        ("movsx864 %r0, %r1", W64, 8),
        ("movsx832 %r0, %r1", W32, 8),
        ("movsx1664 %r0, %r1", W64, 16),
        ("movsx1632 %r0, %r1", W32, 16),
        ("movsx3264 %r0, %r1", W64, 32),
    ] {
        assert_eq!(
            one(text),
            Instruction::MovSx {
                width,
                dst: r(0),
                src: r(1),
                bits
            },
            "{text}"
        );
    }
}

#[test]
fn conformance_memory() {
    assert_eq!(
        one("ldxw %r2, [%r1+4]"),
        Instruction::Load {
            size: MemSize::W,
            dst: r(2),
            src: r(1),
            off: 4
        }
    );
    assert_eq!(
        one("ldxdw %r0, [%r10-8]"),
        Instruction::Load {
            size: MemSize::DW,
            dst: r(0),
            src: r(10),
            off: -8
        }
    );
    assert_eq!(
        one("ldxb %r0, [%r1]"),
        Instruction::Load {
            size: MemSize::B,
            dst: r(0),
            src: r(1),
            off: 0
        }
    );
    assert_eq!(
        one("ldxh %r0, [%r1+0x10]"),
        Instruction::Load {
            size: MemSize::H,
            dst: r(0),
            src: r(1),
            off: 16
        }
    );
    assert_eq!(
        one("ldxsh %r0, [%r10 - 2]"),
        Instruction::LoadSx {
            size: MemSize::H,
            dst: r(0),
            src: r(10),
            off: -2
        }
    );
    assert_eq!(
        one("stw [%r10-4], 0x80000001"),
        Instruction::Store {
            size: MemSize::W,
            dst: r(10),
            off: -4,
            src: Source::Imm(i32::MIN + 1)
        }
    );
    assert_eq!(
        one("stxdw [%r10-8], %r1"),
        Instruction::Store {
            size: MemSize::DW,
            dst: r(10),
            off: -8,
            src: Source::Reg(r(1))
        }
    );
    assert_eq!(
        one("lddw %r0, 0x10000000c"),
        Instruction::LoadImm64 {
            dst: r(0),
            value: Lddw::Imm(0x1_0000_000c)
        }
    );
    assert_eq!(
        one("lddw %r1, -1"),
        Instruction::LoadImm64 {
            dst: r(1),
            value: Lddw::Imm(u64::MAX)
        }
    );
    assert_eq!(
        one("lddw %r1, 18446744073709551615"),
        Instruction::LoadImm64 {
            dst: r(1),
            value: Lddw::Imm(u64::MAX)
        }
    );
    assert_eq!(
        one("ldabsh 12"),
        Instruction::LoadPacket {
            size: MemSize::H,
            mode: PacketMode::Abs,
            imm: 12
        }
    );
    assert_eq!(
        one("ldindb %r1, -4"),
        Instruction::LoadPacket {
            size: MemSize::B,
            mode: PacketMode::Ind(r(1)),
            imm: -4
        }
    );
}

#[test]
fn conformance_atomics() {
    let at = |size, op, fetch, src| Instruction::Atomic {
        size,
        op,
        fetch,
        dst: r(10),
        src: r(src),
        off: -8,
    };
    use AtomicOp::*;
    use MemSize::{DW, W};
    assert_eq!(one("lock add [%r10-8], %r1"), at(DW, Add, false, 1));
    assert_eq!(one("lock add32 [%r10-8], %r1"), at(W, Add, false, 1));
    assert_eq!(one("lock fetch add [%r10-8], %r1"), at(DW, Add, true, 1));
    assert_eq!(one("lock or [%r10-8], %r1"), at(DW, Or, false, 1));
    assert_eq!(one("lock fetch and32 [%r10-8], %r3"), at(W, And, true, 3));
    assert_eq!(one("lock fetch xor [%r10-8], %r3"), at(DW, Xor, true, 3));
    assert_eq!(one("lock xchg [%r10-8], %r1"), at(DW, Xchg, true, 1));
    assert_eq!(one("lock xchg32 [%r10-8], %r1"), at(W, Xchg, true, 1));
    assert_eq!(one("lock cmpxchg [%r10-8], %r1 "), at(DW, CmpXchg, true, 1));
    assert_eq!(one("lock cmpxchg32 [%r10-8], %r1"), at(W, CmpXchg, true, 1));
    assert_eq!(
        one("lock add32 [%r1], %r2"),
        Instruction::Atomic {
            size: W,
            op: Add,
            fetch: false,
            dst: r(1),
            src: r(2),
            off: 0
        }
    );
}

#[test]
fn conformance_jumps_labels_and_calls() {
    let program = "\
            mov %r0, 0\n\
            lddw %r1, 0x1122334455667788\n\
            loop:\n\
            jeq %r1, 5, done\n\
            jsgt32 %r1, %r2, loop\n\
            ja +1\n\
            ja -3\n\
            ja32 done\n\
            done:\n\
            call local func\n\
            exit\n\
            func:\n\
            call 5\n\
            call helper 0x10000\n\
            call %r2\n\
            call helper %r3\n\
            call runtime 77\n\
            exit";
    let got = assemble_instructions(program).expect("assembles");
    let jump = |width, cond, src, off| Instruction::Jump {
        width,
        cond,
        dst: r(1),
        src,
        off,
    };
    // pcs: mov 0, lddw 1-2, jeq 3, jsgt32 4, ja 5, ja 6, ja32 7, call 8, exit 9, call 10...
    assert_eq!(got[2], jump(Width::W64, JmpCond::Eq, Source::Imm(5), 4));
    assert_eq!(
        got[3],
        jump(Width::W32, JmpCond::SGt, Source::Reg(r(2)), -2)
    );
    assert_eq!(got[4], Instruction::Ja { off: 1 });
    assert_eq!(got[5], Instruction::Ja { off: -3 });
    assert_eq!(got[6], Instruction::JaLong { imm: 0 });
    assert_eq!(got[7], Instruction::Call(CallTarget::Local(1)));
    assert_eq!(got[9], Instruction::Call(CallTarget::Helper(5)));
    assert_eq!(got[10], Instruction::Call(CallTarget::Helper(0x10000)));
    assert_eq!(got[11], Instruction::CallX { reg: r(2) });
    assert_eq!(got[12], Instruction::CallX { reg: r(3) });
    assert_eq!(
        got[13],
        Instruction::Call(CallTarget::Kfunc {
            btf_id: 77,
            btf_idx: 0
        })
    );
}

#[test]
fn exit_label_is_the_first_exit_unless_defined() {
    let got = assemble_instructions("jeq %r1, 0xb, exit\nmov %r0, 1\nexit\nexit").unwrap();
    assert_eq!(
        got[0],
        Instruction::Jump {
            width: Width::W64,
            cond: JmpCond::Eq,
            dst: r(1),
            src: Source::Imm(11),
            off: 1
        }
    );
    let got = assemble_instructions("ja exit\nexit\nexit:\nexit").unwrap();
    assert_eq!(got[0], Instruction::Ja { off: 1 });
}

#[test]
fn c_like_alu() {
    use AluOp::*;
    use Width::*;
    assert_eq!(one("r0 += 1"), alu(W64, Add, 0, Source::Imm(1)));
    assert_eq!(one("w0 -= w1"), alu(W32, Sub, 0, Source::Reg(r(1))));
    assert_eq!(one("r0 s/= r1"), alu(W64, SDiv, 0, Source::Reg(r(1))));
    assert_eq!(one("r0 s%= -3"), alu(W64, SMod, 0, Source::Imm(-3)));
    assert_eq!(one("r0 s>>= 3"), alu(W64, Arsh, 0, Source::Imm(3)));
    assert_eq!(one("r0 <<= 0x3"), alu(W64, Lsh, 0, Source::Imm(3)));
    assert_eq!(one("w0 = w1"), alu(W32, Mov, 0, Source::Reg(r(1))));
    assert_eq!(one("r0 = -1"), alu(W64, Mov, 0, Source::Imm(-1)));
    assert_eq!(one("w0 = 0xffffffff"), alu(W32, Mov, 0, Source::Imm(-1)));
    assert_eq!(
        one("r0 = (s16)r1"),
        Instruction::MovSx {
            width: W64,
            dst: r(0),
            src: r(1),
            bits: 16
        }
    );
    assert_eq!(
        one("w0 = -w0"),
        Instruction::Neg {
            width: W32,
            dst: r(0)
        }
    );
    assert_eq!(
        one("r3 = bswap32 r3"),
        Instruction::Endian {
            op: EndianOp::Swap,
            dst: r(3),
            bits: 32
        }
    );
}

#[test]
fn c_like_constants_pick_mov_or_lddw() {
    let lddw = |dst, v| Instruction::LoadImm64 {
        dst: r(dst),
        value: Lddw::Imm(v),
    };
    assert_eq!(
        one("r1 = 0x1122334455667788 ll"),
        lddw(1, 0x1122334455667788)
    );
    assert_eq!(one("r1 = 0x1122334455667788"), lddw(1, 0x1122334455667788));
    assert_eq!(one("r0 = 0x1 ll"), lddw(0, 1));
    assert_eq!(one("r0 = 1 ll"), lddw(0, 1));
    assert_eq!(one("r0 = -1 ll"), lddw(0, u64::MAX));
    // 0xffffffff does not fit a sign-extended 32-bit immediate.
    assert_eq!(one("r0 = 0xffffffff"), lddw(0, 0xffff_ffff));
    assert_eq!(one("r0 = 4294967298 ll"), lddw(0, 0x1_0000_0002));
    // bpftool's opcode annotation says lddw.
    assert_eq!(one("   7: (18) r1 = 0x5"), lddw(1, 5));
    assert_eq!(
        one("r0 = 0x1"),
        alu(Width::W64, AluOp::Mov, 0, Source::Imm(1))
    );
}

#[test]
fn c_like_memory_and_atomics() {
    assert_eq!(
        one("w0 = *(u32 *)(r1 + 4)"),
        Instruction::Load {
            size: MemSize::W,
            dst: r(0),
            src: r(1),
            off: 4
        }
    );
    assert_eq!(
        one("r0 = *(u8 *)(r10 -8)"),
        Instruction::Load {
            size: MemSize::B,
            dst: r(0),
            src: r(10),
            off: -8
        }
    );
    assert_eq!(
        one("r0 = *(u64 *)(r1)"),
        Instruction::Load {
            size: MemSize::DW,
            dst: r(0),
            src: r(1),
            off: 0
        }
    );
    assert_eq!(
        one("*(u32 *)(r10 - 8) = w1"),
        Instruction::Store {
            size: MemSize::W,
            dst: r(10),
            off: -8,
            src: Source::Reg(r(1))
        }
    );
    let at = |size, op, fetch, src| Instruction::Atomic {
        size,
        op,
        fetch,
        dst: r(1),
        src: r(src),
        off: 0,
    };
    use AtomicOp::*;
    use MemSize::{DW, W};
    assert_eq!(one("lock *(u64 *)(r1 + 0) |= r2"), at(DW, Or, false, 2));
    assert_eq!(one("lock *(u32 *)(r1 +0) += r2"), at(W, Add, false, 2));
    assert_eq!(
        one("r2 = atomic64_fetch_add((u64 *)(r1 +0), r2)"),
        at(DW, Add, true, 2)
    );
    assert_eq!(
        one("w2 = atomic_fetch_xor((u32 *)(r1 + 0), w2)"),
        at(W, Xor, true, 2)
    );
    assert_eq!(
        one("r2 = atomic64_xchg((u64 *)(r1 +0), r2)"),
        at(DW, Xchg, true, 2)
    );
    assert_eq!(
        one("r0 = atomic64_cmpxchg((u64 *)(r1 +0), r0, r2)"),
        at(DW, CmpXchg, true, 2)
    );
    assert_eq!(
        one("r0 = atomic_cmpxchg((u32 *)(r1 +0), r0, r2)"),
        at(W, CmpXchg, true, 2)
    );
    assert_eq!(one("w2 = xchg32_32(r1 + 0, w2)"), at(W, Xchg, true, 2));
    assert_eq!(
        one("w0 = cmpxchg32_32(r1 + 0, w0, w2)"),
        at(W, CmpXchg, true, 2)
    );
}

#[test]
fn c_like_lddw_variants_and_packets() {
    let l = |value| Instruction::LoadImm64 { dst: r(1), value };
    assert_eq!(one("r1 = map[fd:3]"), l(Lddw::MapFd(3)));
    assert_eq!(
        one("r1 = map[fd:3][0]+16"),
        l(Lddw::MapValue { fd: 3, off: 16 })
    );
    assert_eq!(one("r1 = map[idx:2]"), l(Lddw::MapIdx(2)));
    assert_eq!(
        one("r1 = map[idx:2][0]+16"),
        l(Lddw::MapIdxValue { idx: 2, off: 16 })
    );
    assert_eq!(
        one("r1 = var[btf_id:5][btf_fd:6]"),
        l(Lddw::BtfVar {
            btf_id: 5,
            btf_fd: 6
        })
    );
    assert_eq!(one("r1 = func[pc-3]"), l(Lddw::Func(-3)));
    assert_eq!(
        one("r0 = *(u16 *)skb[r1 - 5]"),
        Instruction::LoadPacket {
            size: MemSize::H,
            mode: PacketMode::Ind(r(1)),
            imm: -5
        }
    );
    assert_eq!(
        one("r0 = *(u32 *)skb[-5]"),
        Instruction::LoadPacket {
            size: MemSize::W,
            mode: PacketMode::Abs,
            imm: -5
        }
    );
}

#[test]
fn c_like_jumps_and_calls() {
    let got = assemble_instructions(
        "start:\n\
             if r1 > 5 goto end\n\
             if w1 == w2 goto +1\n\
             if r1 & 0x4 goto pc-1\n\
             goto start\n\
             gotol +3\n\
             end:\n\
             call bpf_map_lookup_elem#1\n\
             call 12\n\
             call ktime_get_ns\n\
             call bpf_tail_call\n\
             call whatever#77\n\
             call #-7\n\
             call pc+5\n\
             call kfunc#1234[btf_idx:2]\n\
             callx r2\n\
             exit",
    )
    .expect("assembles");
    assert_eq!(
        got[0],
        Instruction::Jump {
            width: Width::W64,
            cond: JmpCond::Gt,
            dst: r(1),
            src: Source::Imm(5),
            off: 4
        }
    );
    assert_eq!(
        got[1],
        Instruction::Jump {
            width: Width::W32,
            cond: JmpCond::Eq,
            dst: r(1),
            src: Source::Reg(r(2)),
            off: 1
        }
    );
    assert_eq!(
        got[2],
        Instruction::Jump {
            width: Width::W64,
            cond: JmpCond::Set,
            dst: r(1),
            src: Source::Imm(4),
            off: -1
        }
    );
    assert_eq!(got[3], Instruction::Ja { off: -4 });
    assert_eq!(got[4], Instruction::JaLong { imm: 3 });
    let helpers: Vec<_> = got[5..11].to_vec();
    assert_eq!(
        helpers,
        [1, 12, 5, 12, 77, -7].map(|id| Instruction::Call(CallTarget::Helper(id)))
    );
    assert_eq!(got[11], Instruction::Call(CallTarget::Local(5)));
    assert_eq!(
        got[12],
        Instruction::Call(CallTarget::Kfunc {
            btf_id: 1234,
            btf_idx: 2
        })
    );
    assert_eq!(got[13], Instruction::CallX { reg: r(2) });
    assert_eq!(got[14], Instruction::Exit);
}

#[test]
fn both_syntaxes_mix_and_agree() {
    let conformance = "mov %r0, 1\nlddw %r1, 0x100000002\nldxw %r2, [%r1+4]\n\
                           jsge %r2, -1, +1\nlock fetch add [%r10-8], %r1\nexit";
    let c_like = "r0 = 1\nr1 = 0x100000002 ll\nr2 = *(u32 *)(r1 + 4)\n\
                      if r2 s>= -1 goto +1\nr1 = atomic_fetch_add((u64 *)(r10 - 8), r1)\nexit";
    let mixed = "mov %r0, 1\nr1 = 0x100000002 ll\nldxw %r2, [%r1+4]\n\
                     if r2 s>= -1 goto +1\nlock fetch add [%r10-8], %r1\nexit";
    let a = assemble(conformance).unwrap();
    assert_eq!(assemble(c_like).unwrap(), a);
    assert_eq!(assemble(mixed).unwrap(), a);
    assert_eq!(assemble(&disassemble(&a).unwrap()).unwrap(), a);
}

#[test]
fn disassembler_decorations_and_comments_are_ignored() {
    let listing = "\
0000000000000000 <prog>:
       0:	b7 00 00 00 01 00 00 00	r0 = 1 ; set r0
       1:	18 01 00 00 88 77 66 55 00 00 00 00 44 33 22 11	r1 = 0x1122334455667788 ll
       3:	05 00 01 00 00 00 00 00	goto +1 <LBB0_2>
   4: (85) call bpf_ktime_get_ns#5 // bpftool
   5: (95) exit
# a comment line
; another
// and another
       b7 00 00 00 02 00 00 00
LBB0_2:
mov %r0, 2 # conformance comment
call #12 # helper by number, then a comment
exit";
    let got = assemble_instructions(listing).expect("assembles");
    assert_eq!(
        got,
        vec![
            alu(Width::W64, AluOp::Mov, 0, Source::Imm(1)),
            Instruction::LoadImm64 {
                dst: r(1),
                value: Lddw::Imm(0x1122334455667788)
            },
            Instruction::Ja { off: 1 },
            Instruction::Call(CallTarget::Helper(5)),
            Instruction::Exit,
            alu(Width::W64, AluOp::Mov, 0, Source::Imm(2)),
            Instruction::Call(CallTarget::Helper(12)),
            Instruction::Exit,
        ]
    );
}

#[test]
fn conformance_errors() {
    assert_error("mov32 %r0, 2147483648", "out of 32-bit range");
    assert_error("mov32 %r0, 0x100000000", "out of 32-bit range");
    assert_error("mov %r0, -2147483649", "out of 32-bit range");
    assert_error("ldxb %r0, [%r1+0x10000]", "out of 16-bit range");
    assert_error("ldxb %r0, [%r1+32768]", "out of 16-bit range");
    assert_error("lddw %r0", "invalid number of operands for `lddw`");
    assert_error("lddw %r0, 0x10000000000000000", "out of 64-bit range");
    assert_error("jeq %r1, 5", "invalid number of operands");
    assert_error("lock", "Invalid number of operands for lock");
    assert_error("lock or [%r10-8]", "Invalid number of operands for lock");
    assert_error("lock fetch", "Invalid number of operands for lock");
    assert_error("lock nand [%r10-8], %r1", "invalid atomic operation");
    assert_error("lock fetch add [%r10-8], %r10", "r10");
    assert_error("ldxb %r0, %r1", "memory operand");
    assert_error("ldxq %r0, %r1", "invalid mnemonic `ldxq`");
    assert_error("or %r0, %r50", "invalid register `%r50`");
    assert_error("mov %r11, 1", "invalid register");
    assert_error("mov r1, 1", "invalid register");
    assert_error("mov %r10, 1", "r10");
    assert_error("ldxw %r10, [%r1]", "r10");
    assert_error("ja NOT_A_LABEL", "undefined label `NOT_A_LABEL`");
    assert_error("ja 5", "invalid jump target");
    assert_error("ja +32768", "out of 16-bit range");
    assert_error("mov %r0, 1,", "empty operand");
    assert_error("mov %r0, 1x", "invalid number");
    assert_error("exit 1", "invalid number of operands for `exit`");
    assert_error("call", "invalid number of operands for `call`");
    assert_error("call local nowhere", "undefined label `nowhere`");
    assert_error("movsx3232 %r0, %r1", "invalid mnemonic");
    assert_error("a:\na:\nexit", "duplicate label `a`");
    assert_error("1a: exit", "invalid label name");
}

#[test]
fn c_like_errors() {
    assert_error("w0 += r1", "mixed");
    assert_error("if w1 == r2 goto +1", "mixed");
    assert_error("r10 = 1", "r10");
    assert_error("r10 += r1", "r10");
    assert_error("r10 = *(u64 *)(r1 + 0)", "r10");
    assert_error("r10 = atomic_fetch_add((u64 *)(r1 + 0), r10)", "r10");
    assert_error("r11 = 1", "invalid register `r11`");
    assert_error("r0 = r16", "invalid register `r16`");
    assert_error("w0 = (s32)w1", "(s16)");
    assert_error("r0 = -r1", "in place");
    assert_error("r0 = le16 r1", "in place");
    assert_error("w1 = 0x1122334455667788", "out of 32-bit range");
    assert_error("w1 = 1 ll", "r register");
    assert_error("w0 = *(u64 *)(r1 + 0)", "r register");
    assert_error("r0 = *(u32 *)(r1 + 32768)", "out of 16-bit range");
    assert_error("*(s32 *)(r1 + 0) = 1", "sign-extending");
    assert_error("r1 = *(u8 *)skb[5]", "r0");
    assert_error(
        "r2 = atomic_fetch_add((u64 *)(r1 + 0), r3)",
        "source register",
    );
    assert_error("r1 = cmpxchg_64(r1 + 0, r0, r2)", "r0");
    assert_error("r1 = atomic_fetch_add((u16 *)(r1 + 0), r1)", "access size");
    assert_error("w1 = xchg_64(r1 + 0, w1)", "r registers");
    assert_error("call not_a_helper", "unknown helper `not_a_helper`");
    assert_error("goto nowhere", "undefined label `nowhere`");
    assert_error("if r1 ~ 2 goto +1", "unexpected character");
    assert_error("if r1 => 2 goto +1", "comparison");
    assert_error("r0 = 1 2", "unexpected `2`");
    assert_error("foo r0", "invalid mnemonic `foo`");
    assert_error("goto +32768", "out of 16-bit range");
    assert_error("gotol +2147483648", "out of 32-bit range");
}

#[test]
fn errors_name_the_line() {
    let e = error("mov %r0, 1\n\n  lddw %r0  \nexit");
    assert_eq!(e.line, 3);
    assert_eq!(e.text, "lddw %r0");
    assert_eq!(
        e.to_string(),
        "line 3: invalid number of operands for `lddw`: expected 2, found 1: `lddw %r0`"
    );
    let e = error("ja end\nexit");
    assert_eq!(e.line, 1);
}

#[test]
fn label_offsets_count_slots_and_are_range_checked() {
    let mut program = String::from("ja far\n");
    for _ in 0..40000 {
        program.push_str("mov %r0, 0\n");
    }
    program.push_str("far:\nexit\n");
    assert_error(&program, "out of 16-bit range");
    let long = program.replacen("ja far", "ja32 far", 1);
    assert_eq!(
        assemble_instructions(&long).unwrap()[0],
        Instruction::JaLong { imm: 40000 }
    );
    let got = assemble_instructions("ja l\nlddw %r0, 1\nl:\nexit").unwrap();
    assert_eq!(got[0], Instruction::Ja { off: 2 });
    // A function's address by its label: `func[cb]` (C-like syntax;
    // relative to the lddw's first slot).
    let got = assemble_instructions("r2 = func[cb]\nexit\ncb:\nr0 = 0\nexit").unwrap();
    assert_eq!(
        got[0],
        Instruction::LoadImm64 {
            dst: Reg::R2,
            value: Lddw::Func(2),
        }
    );
    assert_error("r2 = func[nowhere]\nexit", "undefined label `nowhere`");
}

#[test]
fn empty_and_comment_only_programs() {
    assert_eq!(assemble(""), Ok(vec![]));
    assert_eq!(assemble("\n  \n# nothing\n; nothing\n"), Ok(vec![]));
}

#[test]
fn no_panics_on_truncated_or_odd_input() {
    let samples = [
        "r2 = atomic_fetch_add((u64 *)(r1 + 0), r2)",
        "r0 = cmpxchg_64(r1 + 0, r0, r2)",
        "r1 = map[idx:2][0]+16",
        "r1 = var[btf_id:5][btf_fd:7]",
        "r0 = *(u16 *)skb[r1 - 5]",
        "call kfunc#1234[btf_idx:2]",
        "lock fetch xor32 [%r10-8], %r1",
        "   1: (18) r1 = 0x5",
        "  12:\tb7 00 00 00 01 00 00 00\tr0 = 1 <x>",
        "ldxh %r0, [%r1+0x10]",
        "jsle32 %r1, -0x80000000, exit",
        "r0 = é\u{3000}<ü>",
        "\u{3000}#\u{3000}",
        "call #",
        "call -",
        "call pc+",
        "call kfunc#[btf_idx:",
    ];
    for s in samples {
        for (i, _) in s.char_indices().chain([(s.len(), ' ')]) {
            let _ = assemble(&s[..i]);
            let _ = assemble(&s[i..]);
        }
    }
}

/// The negative assembler cases of the conformance corpus.
#[test]
fn conformance_negative_files_do_not_assemble() {
    let dir = std::env::var_os("USERBPF_CONFORMANCE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance")
        })
        .join("negative");
    let mut checked = 0;
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("invalid_") || name == "invalid_unknown_directive.data" {
            continue;
        }
        let data = std::fs::read_to_string(&path).expect("readable");
        let mut lines = data.lines();
        if !lines.by_ref().any(|l| l.trim_end() == "-- asm") {
            continue;
        }
        let asm: String = lines
            .by_ref()
            .take_while(|l| !l.starts_with("--"))
            .map(|l| format!("{}\n", l.split('#').next().unwrap_or("")))
            .collect();
        let err = assemble(&asm).expect_err(name);
        let expected = data
            .split("-- error")
            .nth(1)
            .map(|e| e.trim().to_lowercase());
        if let Some(expected) = expected.filter(|e| !e.is_empty()) {
            assert!(
                err.message.to_lowercase().contains(&expected),
                "{name}: `{err}` does not mention `{expected}`"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 10);
}
