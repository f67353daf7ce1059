//! userbpf: a user-space eBPF runtime with a verifier, a Cranelift JIT and
//! kernel offload.
//!
//! This facade crate ties the layers together for the CLI and for embedders:
//! it reads programs and objects from files ([`source`]) and runs them on an
//! engine ([`engine`]): the checked interpreter ([`vm`]) or the Cranelift
//! JIT ([`jit`]). Until the verifier lands, everything runs in checked
//! mode; attachment arrives with its issues.
#![deny(missing_docs)]

pub mod engine;
pub mod hex;
pub mod hooked;
pub mod probe;
pub mod source;
pub mod syscall;
pub mod syscall_names;
pub mod usdt;

pub use userbpf_jit as jit;
pub use userbpf_shims as shims;
pub use userbpf_vm as vm;
