//! Property tests: every valid instruction encodes to slots that decode back
//! to it, and its disassembly assembles back to the same slots.

use proptest::prelude::*;
use proptest::sample::select;

use userbpf_vm::asm::{assemble, assemble_instructions};
use userbpf_vm::disasm::{disassemble, format_instruction};
use userbpf_vm::isa::{
    decode, AluOp, AtomicOp, CallTarget, EndianOp, Instruction, JmpCond, Lddw, MemSize, PacketMode,
    Reg, Source, Width,
};

fn reg_in(range: std::ops::RangeInclusive<u8>) -> impl Strategy<Value = Reg> {
    range.prop_map(|n| Reg::new(n).expect("register number in range"))
}

/// Any register, for operands that are only read.
fn reg() -> impl Strategy<Value = Reg> {
    reg_in(0..=10)
}

/// A register that is written: never r10.
fn dst() -> impl Strategy<Value = Reg> {
    reg_in(0..=9)
}

fn width() -> impl Strategy<Value = Width> {
    select(vec![Width::W32, Width::W64])
}

/// Immediates biased towards the small values programs use.
fn imm() -> impl Strategy<Value = i32> {
    prop_oneof![-300i32..=300, any::<i32>()]
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![reg().prop_map(Source::Reg), imm().prop_map(Source::Imm)]
}

fn narrow_size() -> impl Strategy<Value = MemSize> {
    select(vec![MemSize::B, MemSize::H, MemSize::W])
}

fn lddw() -> impl Strategy<Value = Lddw> {
    prop_oneof![
        any::<u64>().prop_map(Lddw::Imm),
        (0u64..=300).prop_map(Lddw::Imm),
        any::<i32>().prop_map(Lddw::MapFd),
        (any::<i32>(), any::<u32>()).prop_map(|(fd, off)| Lddw::MapValue { fd, off }),
        (any::<i32>(), prop_oneof![Just(0i32), any::<i32>()])
            .prop_map(|(btf_id, btf_fd)| Lddw::BtfVar { btf_id, btf_fd }),
        any::<i32>().prop_map(Lddw::Func),
        any::<i32>().prop_map(Lddw::MapIdx),
        (any::<i32>(), any::<u32>()).prop_map(|(idx, off)| Lddw::MapIdxValue { idx, off }),
    ]
}

fn call_target() -> impl Strategy<Value = CallTarget> {
    prop_oneof![
        (-2i32..=220).prop_map(CallTarget::Helper),
        any::<i32>().prop_map(CallTarget::Helper),
        any::<i32>().prop_map(CallTarget::Local),
        (any::<i32>(), prop_oneof![Just(0i16), any::<i16>()])
            .prop_map(|(btf_id, btf_idx)| CallTarget::Kfunc { btf_id, btf_idx }),
    ]
}

fn alu() -> impl Strategy<Value = Instruction> {
    (width(), select(AluOp::ALL.to_vec()), dst(), source()).prop_map(|(width, op, dst, src)| {
        Instruction::Alu {
            width,
            op,
            dst,
            src,
        }
    })
}

fn movsx() -> impl Strategy<Value = Instruction> {
    (width(), dst(), reg(), 0usize..3).prop_map(|(width, dst, src, k)| {
        let bits = match width {
            Width::W32 => [8, 16][k % 2],
            Width::W64 => [8, 16, 32][k],
        };
        Instruction::MovSx {
            width,
            dst,
            src,
            bits,
        }
    })
}

fn endian() -> impl Strategy<Value = Instruction> {
    (
        select(vec![EndianOp::ToLe, EndianOp::ToBe, EndianOp::Swap]),
        dst(),
        select(vec![16u8, 32, 64]),
    )
        .prop_map(|(op, dst, bits)| Instruction::Endian { op, dst, bits })
}

fn memory() -> impl Strategy<Value = Instruction> {
    prop_oneof![
        (select(MemSize::ALL.to_vec()), dst(), reg(), any::<i16>()).prop_map(
            |(size, dst, src, off)| Instruction::Load {
                size,
                dst,
                src,
                off
            }
        ),
        (narrow_size(), dst(), reg(), any::<i16>()).prop_map(|(size, dst, src, off)| {
            Instruction::LoadSx {
                size,
                dst,
                src,
                off,
            }
        }),
        (select(MemSize::ALL.to_vec()), reg(), any::<i16>(), source()).prop_map(
            |(size, dst, off, src)| Instruction::Store {
                size,
                dst,
                off,
                src
            }
        ),
        (
            narrow_size(),
            prop_oneof![Just(None), reg().prop_map(Some)],
            any::<i32>()
        )
            .prop_map(|(size, ind, imm)| Instruction::LoadPacket {
                size,
                mode: ind.map_or(PacketMode::Abs, PacketMode::Ind),
                imm,
            }),
    ]
}

fn atomic() -> impl Strategy<Value = Instruction> {
    (
        select(vec![MemSize::W, MemSize::DW]),
        select(AtomicOp::ALL.to_vec()),
        any::<bool>(),
        reg(),
        reg(),
        any::<i16>(),
    )
        .prop_map(|(size, op, fetch, dst, src, off)| {
            let fetch = fetch || op.always_fetches();
            // A fetching add/or/and/xor/xchg writes its source register.
            let src = if fetch && op != AtomicOp::CmpXchg && src == Reg::R10 {
                Reg::R9
            } else {
                src
            };
            Instruction::Atomic {
                size,
                op,
                fetch,
                dst,
                src,
                off,
            }
        })
}

fn control() -> impl Strategy<Value = Instruction> {
    prop_oneof![
        any::<i16>().prop_map(|off| Instruction::Ja { off }),
        any::<i32>().prop_map(|imm| Instruction::JaLong { imm }),
        (
            width(),
            select(JmpCond::ALL.to_vec()),
            reg(),
            source(),
            any::<i16>()
        )
            .prop_map(|(width, cond, dst, src, off)| Instruction::Jump {
                width,
                cond,
                dst,
                src,
                off
            }),
        call_target().prop_map(Instruction::Call),
        reg().prop_map(|reg| Instruction::CallX { reg }),
        Just(Instruction::Exit),
    ]
}

fn instruction() -> impl Strategy<Value = Instruction> {
    prop_oneof![
        3 => alu(),
        1 => movsx(),
        1 => (width(), dst()).prop_map(|(width, dst)| Instruction::Neg { width, dst }),
        1 => endian(),
        2 => memory(),
        2 => atomic(),
        2 => (dst(), lddw()).prop_map(|(dst, value)| Instruction::LoadImm64 { dst, value }),
        3 => control(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_decode_and_assemble_round_trip(i in instruction()) {
        let slots = i.encode();
        prop_assert_eq!(slots.len(), i.slots());
        prop_assert_eq!(decode(&slots, 0), Ok(i));

        let text = format_instruction(&i);
        prop_assert_eq!(assemble(&text), Ok(slots.clone()), "{}", text);
        prop_assert_eq!(assemble_instructions(&text), Ok(vec![i]), "{}", text);

        let listing = disassemble(&slots).expect("valid instruction disassembles");
        prop_assert_eq!(assemble(&listing), Ok(slots), "{}", listing);
    }
}
