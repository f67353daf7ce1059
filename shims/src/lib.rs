//! userbpf-shims: the mechanisms that run BPF programs inside a process.
//!
//! - [`symbols`]: the modules mapped into a process and their symbols
//!   (`binary:symbol[+offset]` to an address);
//! - [`usdt`]: USDT probe notes (`.note.stapsdt`) and their argument specs;
//! - [`hook`]: inline hooks on x86-64 functions (uprobes and uretprobes)
//!   that hand a `struct pt_regs` to the probes attached at a site.
//! - [`syscall`]: in-process syscall hooks (zpoline rewriting + Syscall User Dispatch).
//!
//! This crate never depends on the facade: it knows nothing of objects or
//! engines, only of probes (`Fn(&mut PtRegs)`).
#![deny(missing_docs)]

pub mod hook;
mod maps;
pub mod session;
pub mod symbols;
pub mod syscall;
pub mod usdt;
