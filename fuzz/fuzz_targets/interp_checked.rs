//! Random bytecode and valid-by-construction programs in the checked
//! interpreter: no panic, no access outside the regions, identical reruns.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    userbpf_fuzz::interp_checked(data);
});
