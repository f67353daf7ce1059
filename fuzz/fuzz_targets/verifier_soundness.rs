//! Random plausible programs the verifier accepts never fault in the
//! checked interpreter (raw programs on a buffer, with maps).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = userbpf_fuzz::verifier_soundness(data);
});
