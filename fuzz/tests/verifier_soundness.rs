//! The `verifier_soundness` fuzz oracle under proptest: random plausible
//! programs that the verifier accepts (raw programs on a buffer, with
//! maps) never fault in the checked interpreter, on several random inputs,
//! and leave the same results wherever their memory lies (no address
//! leaks).
//! Prints the share the verifier accepted and its most frequent reasons
//! to reject. `PROPTEST_CASES=N` runs N cases instead of [`CASES`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use userbpf_fuzz::verifier_oracle::{message_group, Verdict};

/// Cases per run (a debug build does them in a few seconds).
const CASES: u32 = 2000;

/// `(accepted)` or the verifier's message with its numbers replaced.
fn verdict_key(verdict: Verdict) -> String {
    match verdict {
        Verdict::Accepted => "(accepted)".to_string(),
        Verdict::Rejected(message) => message_group(&message),
    }
}

#[test]
fn accepted_programs_never_fault() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    let verdicts: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());
    let mut runner = TestRunner::new(Config {
        cases,
        source_file: Some(file!()),
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(any::<u8>(), 0..1536), |data| {
        let key = verdict_key(userbpf_fuzz::verifier_soundness(&data));
        if let Ok(mut v) = verdicts.lock() {
            *v.entry(key).or_default() += 1;
        }
        Ok(())
    });
    let verdicts = verdicts.into_inner().unwrap_or_default();
    let total: u32 = verdicts.values().sum();
    let accepted = verdicts.get("(accepted)").copied().unwrap_or(0);
    println!(
        "verifier soundness: {accepted} of {total} programs accepted ({:.1}%), each run without a fault",
        f64::from(accepted) * 100.0 / f64::from(total.max(1)),
    );
    let mut rejections: Vec<(&String, &u32)> = verdicts
        .iter()
        .filter(|(k, _)| *k != "(accepted)")
        .collect();
    rejections.sort_by(|a, b| b.1.cmp(a.1));
    for (message, n) in rejections.iter().take(20) {
        println!("  {n:5}  rejected: {message}");
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// An input the fuzzer once ran out of memory on
/// (`fuzz/regressions/verifier_soundness/loop-around-for-each-oom`): a
/// loop of the caller's own around `bpf_for_each_map_elem` that never
/// changes its state. Its head never stored a state, so the search went
/// round it to the limit of 1,000,000 processed instructions, keeping
/// 142,856 states of 64 stack slots (2.4 GB). The call stores every state
/// reaching it, and now finds the same one again there.
#[test]
fn a_loop_around_a_callback_helper_is_found_at_the_call() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions/verifier_soundness/loop-around-for-each-oom");
    let data = std::fs::read(&path).expect("the regression input");
    match userbpf_fuzz::verifier_soundness(&data) {
        Verdict::Rejected(message) => assert!(
            message.starts_with("infinite loop detected at insn 22"),
            "{message}"
        ),
        Verdict::Accepted => panic!("the loop that never ends was accepted"),
    }
}
