//! The `loop_differential` fuzz oracle under proptest: random loops of the
//! shapes checked native code proves on entry (hoisted range checks) give
//! the interpreter's results, faults, instruction counts and memory.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn loops_proven_on_entry_run_as_the_interpreter_runs_them(
        data in proptest::collection::vec(any::<u8>(), 8..256)
    ) {
        userbpf_fuzz::loop_differential(&data);
    }
}
