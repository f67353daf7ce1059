//! The `object_loader` oracle under proptest: a real object with random
//! byte flips, truncations and splices.

use proptest::prelude::*;

fn fixture_named(name: &str) -> Vec<u8> {
    let dir = match std::env::var_os("USERBPF_FIXTURES_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/bpf"),
    };
    std::fs::read(dir.join(name)).unwrap()
}

fn fixture() -> Vec<u8> {
    fixture_named("calls.bpf.o")
}

/// Start of the BTF blob whose header length is `hdr_len` (24: `.BTF`, 32:
/// `.BTF.ext`) in an object.
fn btf_blob(bytes: &[u8], hdr_len: u8) -> usize {
    let magic = [0x9f, 0xeb, 1, 0, hdr_len, 0, 0, 0];
    bytes
        .windows(magic.len())
        .position(|w| w == magic)
        .expect("BTF blob")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn mutated_objects_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = fixture();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if truncate {
            let n = cut.index(bytes.len());
            bytes.truncate(n);
        }
        userbpf_fuzz::object_loader(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The CO-RE fixture with flips inside `.BTF` (local types, access
    /// strings) or `.BTF.ext` (relocation records).
    #[test]
    fn mutated_core_relocations_never_panic(
        ext in any::<bool>(),
        flips in proptest::collection::vec((0usize..2048, any::<u8>()), 1..8),
    ) {
        let mut bytes = fixture_named("core.bpf.o");
        let start = btf_blob(&bytes, if ext { 32 } else { 24 });
        for (at, value) in flips {
            let i = (start + at).min(bytes.len() - 1);
            bytes[i] = value;
        }
        userbpf_fuzz::object_loader(&bytes);
    }
}

/// Inputs the fuzzer once crashed the loader with (`fuzz/regressions/`):
/// each must now load or fail with an error.
#[test]
fn past_fuzzer_crashes_are_errors() {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("regressions/object_loader");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            std::panic::catch_unwind(|| userbpf_fuzz::object_loader(&bytes)).is_ok(),
            "{}",
            path.display()
        );
        n += 1;
    }
    assert!(n > 0, "no regression inputs in {}", dir.display());
}
