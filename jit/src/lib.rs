//! Empty until the JIT issue (#4) lands; it will hold Cranelift code generation.
#![deny(missing_docs)]
