//! userbpf: a user-space eBPF runtime with a verifier, a Cranelift JIT and
//! kernel offload.
//!
//! This facade crate ties the layers together for the CLI and for embedders:
//! it reads programs from files ([`source`]) and runs them on an engine
//! ([`engine`]). Object loading, verification, the JIT and attachment arrive
//! with their issues; until then the interpreter runs everything in checked
//! mode.
#![deny(missing_docs)]

pub mod engine;
pub mod hex;
pub mod source;

pub use userbpf_vm as vm;
