//! The program model: decoded, structurally valid bytecode with a name.
//!
//! [`Program::new`] decodes every slot and checks what can be checked without
//! running or verifying: every jump, bpf-to-bpf call and function address
//! lands on an instruction inside the program, and the last instruction is an
//! `exit` or a jump, so execution can never fall off the end.

use crate::insn::{insns_from_bytes, Insn, LengthError};
use crate::isa::{decode_all, CallTarget, DecodeError, Instruction, Lddw};

/// Why bytecode is not a valid program.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    /// The byte length is not a multiple of 8.
    #[error("program `{program}`: {source}")]
    Length {
        /// Program name.
        program: String,
        /// Details.
        source: LengthError,
    },
    /// The program has no instructions.
    #[error("program `{program}` has no instructions")]
    Empty {
        /// Program name.
        program: String,
    },
    /// A slot does not decode.
    #[error("program `{program}`: {source}")]
    Decode {
        /// Program name.
        program: String,
        /// Details, with the pc.
        source: DecodeError,
    },
    /// A jump, call or function address points outside the program or into
    /// the second slot of an `lddw`.
    #[error("program `{program}`: {what} at pc {pc} targets pc {target}, {why}")]
    BadTarget {
        /// Program name.
        program: String,
        /// `jump`, `call` or `function address`.
        what: &'static str,
        /// pc of the instruction.
        pc: usize,
        /// The target pc.
        target: i64,
        /// Out of range or into an lddw.
        why: &'static str,
    },
    /// The last instruction can fall through past the end.
    #[error("program `{program}`: last insn is not an exit or jmp (pc {pc})")]
    FallsOffEnd {
        /// Program name.
        program: String,
        /// pc of the last instruction.
        pc: usize,
    },
    /// Too many instructions (the kernel's `BPF_COMPLEXITY_LIMIT_INSNS`).
    #[error("program `{program}` has {len} instructions, more than the limit of {limit}")]
    TooLong {
        /// Program name.
        program: String,
        /// Number of slots.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

/// Maximum number of slots in a program (the kernel's limit for privileged
/// programs, `BPF_COMPLEXITY_LIMIT_INSNS`).
pub const MAX_INSNS: usize = 1_000_000;

/// Valid bytecode: every slot decodes and every static target is in range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    name: String,
    insns: Vec<Insn>,
    /// Indexed by pc; `None` for the second slot of an `lddw`.
    decoded: Vec<Option<Instruction>>,
}

impl Program {
    /// Validates `insns` as a program called `name`.
    pub fn new(name: impl Into<String>, insns: Vec<Insn>) -> Result<Program, ProgramError> {
        let name = name.into();
        if insns.is_empty() {
            return Err(ProgramError::Empty { program: name });
        }
        if insns.len() > MAX_INSNS {
            return Err(ProgramError::TooLong {
                program: name,
                len: insns.len(),
                limit: MAX_INSNS,
            });
        }
        let list = match decode_all(&insns) {
            Ok(l) => l,
            Err(source) => {
                return Err(ProgramError::Decode {
                    program: name,
                    source,
                })
            }
        };
        let mut decoded = vec![None; insns.len()];
        for &(pc, i) in &list {
            decoded[pc] = Some(i);
        }
        let len = insns.len() as i64;
        for &(pc, i) in &list {
            let (what, rel) = match i {
                Instruction::Ja { .. } | Instruction::JaLong { .. } | Instruction::Jump { .. } => {
                    ("jump", i.jump_offset().unwrap_or(0))
                }
                Instruction::Call(CallTarget::Local(rel)) => ("call", i64::from(rel)),
                Instruction::LoadImm64 {
                    value: Lddw::Func(rel),
                    ..
                } => ("function address", i64::from(rel)),
                _ => continue,
            };
            let target = pc as i64 + 1 + rel;
            let why = if target < 0 || target >= len {
                Some("outside the program")
            } else if decoded[target as usize].is_none() {
                Some("the second slot of an lddw")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(ProgramError::BadTarget {
                    program: name,
                    what,
                    pc,
                    target,
                    why,
                });
            }
        }
        let &(last_pc, last) = list.last().ok_or_else(|| ProgramError::Empty {
            program: name.clone(),
        })?;
        if !matches!(
            last,
            Instruction::Exit | Instruction::Ja { .. } | Instruction::JaLong { .. }
        ) {
            return Err(ProgramError::FallsOffEnd {
                program: name,
                pc: last_pc,
            });
        }
        Ok(Program {
            name,
            insns,
            decoded,
        })
    }

    /// Validates raw little-endian bytecode.
    pub fn from_bytes(name: impl Into<String>, bytes: &[u8]) -> Result<Program, ProgramError> {
        let name = name.into();
        match insns_from_bytes(bytes) {
            Ok(insns) => Program::new(name, insns),
            Err(source) => Err(ProgramError::Length {
                program: name,
                source,
            }),
        }
    }

    /// The program's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw slots.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Always false: a program has at least one instruction.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// The instruction at `pc`, `None` for the second slot of an `lddw` or a
    /// pc past the end.
    pub fn instruction(&self, pc: usize) -> Option<Instruction> {
        self.decoded.get(pc).copied().flatten()
    }

    /// `(pc, instruction)` for every instruction.
    pub fn instructions(&self) -> impl Iterator<Item = (usize, Instruction)> + '_ {
        self.decoded
            .iter()
            .enumerate()
            .filter_map(|(pc, i)| i.map(|i| (pc, i)))
    }

    /// The bytecode as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::insn::insns_to_bytes(&self.insns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn::op;

    fn prog(insns: &[Insn]) -> Result<Program, ProgramError> {
        Program::new("t", insns.to_vec())
    }

    #[test]
    fn accepts_a_minimal_program() {
        let p = prog(&[Insn::new(0xb7, 0, 0, 0, 1), Insn::new(op::EXIT, 0, 0, 0, 0)]).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p.instructions().count(), 2);
    }

    #[test]
    fn rejects_empty_and_fall_through() {
        assert!(matches!(prog(&[]), Err(ProgramError::Empty { .. })));
        assert!(matches!(
            prog(&[Insn::new(0xb7, 0, 0, 0, 1)]),
            Err(ProgramError::FallsOffEnd { pc: 0, .. })
        ));
    }

    #[test]
    fn rejects_jumps_out_of_range_and_into_lddw() {
        let e = prog(&[
            Insn::new(op::JA, 0, 0, 5, 0),
            Insn::new(op::EXIT, 0, 0, 0, 0),
        ]);
        assert!(matches!(
            e,
            Err(ProgramError::BadTarget {
                pc: 0,
                target: 6,
                ..
            })
        ));
        let e = prog(&[
            Insn::new(op::JA, 0, 0, 1, 0),
            Insn::new(op::LDDW, 0, 0, 0, 1),
            Insn::new(0, 0, 0, 0, 0),
            Insn::new(op::EXIT, 0, 0, 0, 0),
        ]);
        assert!(matches!(
            e,
            Err(ProgramError::BadTarget {
                pc: 0,
                target: 2,
                ..
            })
        ));
        let e = prog(&[
            Insn::new(op::CALL, 0, op::CALL_LOCAL, 0, -5),
            Insn::new(op::EXIT, 0, 0, 0, 0),
        ]);
        assert!(matches!(
            e,
            Err(ProgramError::BadTarget { what: "call", .. })
        ));
    }

    #[test]
    fn from_bytes_checks_length_and_names_the_program() {
        let e = Program::from_bytes("named", &[0; 7]).unwrap_err();
        assert!(e.to_string().contains("named"), "{e}");
    }
}
