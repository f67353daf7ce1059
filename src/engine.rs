//! Execution engines and how the runtime picks one.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use userbpf_verifier::Verified;
use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::Program;

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
    /// this engine: for the JIT, native code is attached to each program —
    /// without run-time checks for the programs the verifier accepted
    /// (see [`add_proof`]), in checked mode for the others (programs the
    /// JIT cannot take run in the interpreter, with a note on standard
    /// error).
    pub fn install(self) {
        if self == Engine::Jit {
            userbpf_vm::interp::set_compile_hook(jit_hook);
        }
    }
}

/// The verifier's proofs for the programs this process runs: a prepared
/// program made from one of them runs in the JIT's unchecked mode.
static PROOFS: Mutex<Vec<Verified<Program>>> = Mutex::new(Vec::new());

/// Records that `program` passed the verifier: the JIT compiles programs
/// prepared from it without run-time checks.
pub fn add_proof(program: Verified<Program>) {
    if let Ok(mut p) = PROOFS.lock() {
        p.push(program);
    }
}

/// Why [`verify_object_program`] refused a program.
#[derive(Debug)]
pub enum ProgramRefused {
    /// It is not a program this object can run (a bad instruction, a
    /// missing map...).
    Invalid(String),
    /// The verifier rejected it (the message names the pc).
    Rejected(String),
}

/// Verifies program `name` of `object` (`verify` false skips it: the
/// program then runs in checked mode) and records the proof, so the JIT
/// compiles it without run-time checks. The hooks' common first step.
/// Returns the verifier's statistics (`None` unverified), which say what
/// of its context the program reads.
pub fn verify_object_program(
    object: &userbpf_vm::object::Object,
    name: &str,
    verify: bool,
) -> Result<Option<userbpf_verifier::Stats>, ProgramRefused> {
    let prog = object
        .program(name)
        .map_err(|e| ProgramRefused::Invalid(e.to_string()))?;
    let program = prog
        .to_program()
        .map_err(|e| ProgramRefused::Invalid(e.to_string()))?;
    if !verify {
        return Ok(None);
    }
    let env = userbpf_verifier::Env::for_object(object, prog);
    let (proof, report) =
        userbpf_verifier::verify(program, &env, &userbpf_verifier::Options::default())
            .map_err(|e| ProgramRefused::Rejected(e.to_string()))?;
    add_proof(proof);
    Ok(Some(report.stats))
}

/// The proof that `prog` was verified, if [`add_proof`] recorded one.
pub fn proof_for(prog: &Arc<PreparedProgram>) -> Option<Verified<Arc<PreparedProgram>>> {
    PROOFS.lock().ok()?.iter().find_map(|v| v.vouch_for(prog))
}

/// How the runtime compiles: tiered, so a program runs native code at
/// once (the baseline generator's, well under a microsecond per
/// instruction) and Cranelift's optimised code as soon as a background
/// thread has it; programs the baseline generator does not take get
/// Cranelift's before they run.
pub fn jit_options() -> userbpf_jit::Options {
    userbpf_jit::Options {
        tier: userbpf_jit::Tier::Tiered,
        ..userbpf_jit::Options::default()
    }
}

fn jit_hook(prog: &Arc<PreparedProgram>) {
    let result = match proof_for(prog) {
        Some(verified) => userbpf_jit::jit_verified(&verified, jit_options()),
        None => userbpf_jit::jit_checked(prog, jit_options()),
    };
    if let Err(e) = result {
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
