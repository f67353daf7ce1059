//! The `baseline_differential` fuzz oracle under proptest: random
//! programs without calls that the checked interpreter runs without a
//! fault give the same result and memory on the JIT's baseline code
//! (verified mode, no checks).

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20000))]

    #[test]
    fn the_interpreter_and_the_baseline_code_agree(data in proptest::collection::vec(any::<u8>(), 0..1536)) {
        userbpf_fuzz::baseline_differential(&data);
    }
}
