//! Loops of the shapes checked code proves on entry, on the interpreter
//! and checked native code: identical results, faults, counts and memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    userbpf_fuzz::loop_differential(data);
});
