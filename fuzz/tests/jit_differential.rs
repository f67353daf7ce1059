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
