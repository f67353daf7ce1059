//! Static register liveness: which registers may be read, on some path
//! from each instruction, before they are written. State pruning ignores
//! dead registers (the kernel's `REG_LIVE_READ` marks, computed ahead of
//! the search here).

use crate::cfg::Cfg;
use userbpf_vm::isa::{CallTarget, Instruction, PacketMode, Source};
use userbpf_vm::proto::{kernel_proto, ArgType};

/// Bit `r` set: register `r` is read.
pub type RegMask = u16;

const R0: RegMask = 1;
const ARGS: RegMask = 0b11_1110;
const CALLER_SAVED: RegMask = 0b11_1111;

/// The mask of register `r`.
pub(crate) fn bit(r: u8) -> RegMask {
    1u16.checked_shl(u32::from(r)).unwrap_or(0)
}

/// Registers read and written by one instruction.
fn uses_defs(i: &Instruction) -> (RegMask, RegMask) {
    use Instruction as I;
    let src = |s: &Source| match s {
        Source::Reg(r) => bit(r.num()),
        Source::Imm(_) => 0,
    };
    match i {
        I::Alu {
            op, dst, src: s, ..
        } => {
            let d = bit(dst.num());
            if *op == userbpf_vm::isa::AluOp::Mov {
                (src(s), d)
            } else {
                (src(s) | d, d)
            }
        }
        I::MovSx { dst, src, .. } => (bit(src.num()), bit(dst.num())),
        I::Neg { dst, .. } | I::Endian { dst, .. } => (bit(dst.num()), bit(dst.num())),
        I::Load { dst, src, .. } | I::LoadSx { dst, src, .. } => (bit(src.num()), bit(dst.num())),
        I::Store { dst, src: s, .. } => (bit(dst.num()) | src(s), 0),
        I::Atomic {
            op,
            fetch,
            dst,
            src,
            ..
        } => {
            let mut uses = bit(dst.num()) | bit(src.num());
            let mut defs = 0;
            if *op == userbpf_vm::isa::AtomicOp::CmpXchg {
                uses |= R0;
                defs |= R0;
            } else if *fetch {
                defs |= bit(src.num());
            }
            (uses, defs)
        }
        I::LoadImm64 { dst, .. } => (0, bit(dst.num())),
        I::LoadPacket { mode, .. } => {
            let ind = match mode {
                PacketMode::Ind(r) => bit(r.num()),
                PacketMode::Abs => 0,
            };
            // r6 holds the skb; r1-r5 are clobbered, r0 is the result.
            (bit(6) | ind, CALLER_SAVED)
        }
        I::Ja { .. } | I::JaLong { .. } => (0, 0),
        I::Jump { dst, src: s, .. } => (bit(dst.num()) | src(s), 0),
        I::Call(CallTarget::Helper(id)) => {
            let uses = match kernel_proto(*id) {
                Some(p) => p
                    .args
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| **a != ArgType::DontCare)
                    .fold(0, |m, (n, _)| {
                        m | bit(u8::try_from(n).unwrap_or(0).wrapping_add(1))
                    }),
                None => ARGS,
            };
            (uses, CALLER_SAVED)
        }
        I::Call(_) => (ARGS, CALLER_SAVED),
        I::CallX { reg } => (ARGS | bit(reg.num()), CALLER_SAVED),
        I::Exit => (R0, 0),
    }
}

/// `live_in[pc]`: registers live before the instruction at `pc` (a call
/// continues at the next instruction; the callee is a separate function).
pub fn live_in(cfg: &Cfg) -> Vec<RegMask> {
    cfg.backward(
        |a: RegMask, b| a | b,
        |_, i, out| {
            let (uses, defs) = uses_defs(i);
            uses | (out & !defs)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use userbpf_vm::asm::assemble;

    #[test]
    fn a_register_overwritten_before_use_is_dead() {
        let code = assemble("r0 = 1\nr1 = 2\nr1 = 3\nr0 += r1\nexit").unwrap();
        let p = userbpf_vm::Program::new("t", code).unwrap();
        let live = live_in(&Cfg::new(&p));
        // Before pc 1, r1 is dead (written at 1 and 2 before the read at 3).
        assert_eq!(live[1] & bit(1), 0);
        assert_ne!(live[1] & bit(0), 0);
        assert_ne!(live[3] & bit(1), 0);
        // Every register is written before it is read.
        assert_eq!(live[0], 0);
    }

    #[test]
    fn helper_calls_read_only_their_arguments() {
        // bpf_ktime_get_ns (5) takes no arguments.
        let code = assemble("r1 = 1\ncall 5\nexit").unwrap();
        let p = userbpf_vm::Program::new("t", code).unwrap();
        let live = live_in(&Cfg::new(&p));
        assert_eq!(live[1], 0);
    }
}
