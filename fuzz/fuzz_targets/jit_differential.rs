//! Random programs on the interpreter and the checked JIT: identical
//! results and faults.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    userbpf_fuzz::jit_differential(data);
});
