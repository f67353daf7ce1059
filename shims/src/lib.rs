//! Empty until the in-process hooks issue (#6) lands; it will hold uprobes, USDT, syscall hooks, session.
#![deny(missing_docs)]
