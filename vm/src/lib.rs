//! userbpf's VM core: the BPF instruction set (RFC 9669 plus the v4
//! additions), an assembler and a disassembler, the program model and the
//! checked interpreter.
//!
//! # Embedding
//!
//! ```
//! use userbpf_vm::{asm, Helpers, Program, Vm};
//!
//! // r0 = my_helper(r2) + 1, where r2 is the length of the memory passed in.
//! let code = asm::assemble("mov %r1, %r2\ncall 0x10000\nadd %r0, 1\nexit").unwrap();
//! let program = Program::new("example", code).unwrap();
//!
//! let mut helpers = Helpers::new();
//! helpers.register_fn(0x10000, "times_ten", |x, _, _, _, _| x * 10);
//!
//! let mut vm = Vm::new(&program, helpers).unwrap();
//! let mut mem = [0u8; 4];
//! assert_eq!(vm.run(&mut mem).unwrap(), 41);
//! ```
#![deny(missing_docs)]

pub mod asm;
pub mod conformance;
pub mod context;
pub mod disasm;
pub mod dynptr;
pub mod gen;
pub mod helper_names;
pub mod helpers;
pub mod identity;
pub mod insn;
pub mod interp;
pub mod isa;
pub mod kfunc;
pub mod maps;
pub mod memory;
pub mod object;
pub mod own_code;
pub mod printk;
pub mod probe;
pub mod program;
pub mod proto;
pub mod quiet;
pub mod stack;
pub mod thread_words;
pub mod tracing;

pub use helpers::{CallbackDriver, HelperContext, HelperError, Helpers, HookInfo, RunOutcome};
pub use insn::Insn;
pub use interp::{Config, Fault, FaultKind, PreparedProgram, Vm};
pub use isa::{Instruction, Reg};
pub use program::{Program, ProgramError};
