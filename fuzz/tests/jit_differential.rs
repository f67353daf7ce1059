//! The `jit_differential` fuzz oracle under proptest: random programs (raw
//! bytecode and valid-by-construction) on the interpreter and the checked
//! JIT give identical results or identical faults.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_interpreter_and_the_jit_agree(data in proptest::collection::vec(any::<u8>(), 0..1536)) {
        userbpf_fuzz::jit_differential(&data);
    }
}

/// Inputs the fuzzer once failed on (fuzz/regressions/jit_differential/).
#[test]
fn past_failures_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions/jit_differential");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("the regressions directory") {
        let path = e.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        userbpf_fuzz::jit_differential(&data);
        n += 1;
    }
    assert!(n > 0, "no regression inputs in {}", dir.display());
}
