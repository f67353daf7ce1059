//! Empty until the kernel backend issue lands; it will hold the aya loader and attacher for kernel-only hooks.
#![deny(missing_docs)]
