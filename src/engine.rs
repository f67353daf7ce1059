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

/// An engine name that is not known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
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

    /// Makes every program prepared from now on in this process run on
    /// this engine: for the JIT, checked-mode native code is attached to
    /// each program (programs the JIT cannot take run in the interpreter,
    /// with a note on standard error). Until the verifier lands, the
    /// runtime only uses checked mode.
    pub fn install(self) {
        if self == Engine::Jit {
            userbpf_vm::interp::set_compile_hook(jit_hook);
        }
    }
}

fn jit_hook(prog: &std::sync::Arc<userbpf_vm::interp::PreparedProgram>) {
    if let Err(e) = userbpf_jit::jit_checked(prog, userbpf_jit::Options::default()) {
        eprintln!("userbpf: note: {e}; running it in the interpreter");
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
