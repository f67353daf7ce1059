//! userbpf's verifier: the static proof that a program is safe to run
//! without run-time checks. The analysis itself lands with the verifier
//! issue (#5); this crate already holds the type-state its result is:
//! [`Verified<P>`], which the JIT's unchecked mode requires.
#![deny(missing_docs)]

use std::ops::Deref;

/// A program the verifier accepted. Only the verifier makes one (and, for
/// tests and benchmarks of programs known to be safe, the `unsafe`
/// [`Verified::assume_verified`], which neither the CLI nor the agent
/// calls): engines may run it without bounds checks.
#[derive(Debug, Clone)]
pub struct Verified<P>(P);

impl<P> Verified<P> {
    /// Declares `program` verified without running the verifier.
    ///
    /// # Safety
    /// The program must be safe as the verifier would prove it: every
    /// memory access in bounds of the memory it is given, every helper call
    /// with valid arguments, termination. An engine runs it without checks,
    /// so a wrong promise is undefined behaviour in the host process.
    pub unsafe fn assume_verified(program: P) -> Verified<P> {
        Verified(program)
    }

    /// The program.
    pub fn program(&self) -> &P {
        &self.0
    }

    /// The program, consuming the proof.
    pub fn into_inner(self) -> P {
        self.0
    }
}

impl<P> Deref for Verified<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.0
    }
}
