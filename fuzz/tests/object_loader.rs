//! The `object_loader` oracle under proptest: a real object with random
//! byte flips, truncations and splices.

use proptest::prelude::*;

fn fixture() -> Vec<u8> {
    let dir = match std::env::var_os("USERBPF_FIXTURES_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/bpf"),
    };
    std::fs::read(dir.join("calls.bpf.o")).unwrap()
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
