//! Arbitrary bytes as a BPF object: an error or a program list, never a
//! panic. Seed it with tests/bpf/*.bpf.o.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    userbpf_fuzz::object_loader(data);
});
