//! Execution engines and how the runtime picks one.

use std::fmt;
use std::str::FromStr;

/// An execution engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Engine {
    /// The checked interpreter (`userbpf_vm::Vm`).
    Interp,
    /// The Cranelift JIT.
    Jit,
}

/// An engine that cannot be used (yet).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The JIT has not landed.
    #[error("the JIT engine is not available yet: it lands with the Cranelift JIT issue (#4); use --engine interp")]
    JitUnavailable,
    /// An unknown engine name.
    #[error("unknown engine `{0}`: expected `interp` or `jit`")]
    Unknown(String),
}

impl Engine {
    /// The engine's name on the command line and in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Interp => "interp",
            Engine::Jit => "jit",
        }
    }

    /// Fails for engines that are not available in this build.
    pub fn ensure_available(self) -> Result<(), EngineError> {
        match self {
            Engine::Interp => Ok(()),
            Engine::Jit => Err(EngineError::JitUnavailable),
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Engine {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Engine, EngineError> {
        match s {
            "interp" | "interpreter" => Ok(Engine::Interp),
            "jit" => Ok(Engine::Jit),
            other => Err(EngineError::Unknown(other.to_string())),
        }
    }
}
