//! The `interp_checked` fuzz oracle under proptest: a few thousand random
//! inputs (raw bytecode and valid-by-construction programs) in the checked
//! interpreter. No panic, no access outside the given regions (guard pages
//! turn one into a crash), identical reruns.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn random_programs_stay_inside_their_regions(data in proptest::collection::vec(any::<u8>(), 0..1536)) {
        userbpf_fuzz::interp_checked(&data);
    }
}
