//! Random programs that run without a fault on the checked interpreter
//! give the same result and memory on the JIT's baseline code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    userbpf_fuzz::baseline_differential(data);
});
