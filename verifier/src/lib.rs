//! Empty until the verifier issue (#5) lands; it will hold static safety proof of a program.
#![deny(missing_docs)]
