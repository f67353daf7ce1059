//! The examples in examples/bpf, run with `userbpf exec` on the demo
//! program (their objects are committed; CI rebuilds them from source and
//! runs this again on the rebuilt ones through USERBPF_EXAMPLES_DIR).

use std::path::PathBuf;
use std::process::Command;

#[path = "support/artifacts.rs"]
mod artifacts;

use artifacts::{built, json_records, le_u64, unhex};

fn example(name: &str) -> PathBuf {
    std::env::var_os("USERBPF_EXAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/bpf"))
        .join(name)
}

/// Runs `userbpf exec EXAMPLE --json -- userbpf-demo N`: the demo's
/// output line and the final maps.
fn exec_demo(obj: &str, n: u64) -> (String, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_userbpf"))
        .arg("exec")
        .arg(example(obj))
        .arg("--json")
        .arg("--")
        .arg(built("userbpf-demo"))
        .arg(n.to_string())
        .env("USERBPF_AGENT", built("libuserbpf_agent.so"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{obj}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let demo = stdout
        .lines()
        .find(|l| l.starts_with("demo:"))
        .unwrap_or_default()
        .to_string();
    let maps = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["maps"].clone())
        .unwrap_or_default();
    (demo, maps)
}

/// The sum of a map's u64 values.
fn total(maps: &serde_json::Value, map: &str) -> u64 {
    maps[map]
        .as_array()
        .unwrap_or_else(|| panic!("no map {map}: {maps}"))
        .iter()
        .map(|e| le_u64(e[1].as_str().unwrap()))
        .sum()
}

#[test]
fn malloc_count_counts_every_malloc_of_the_demo() {
    // The demo mallocs once per iteration, plus what its runtime does:
    // 1,000 more iterations are exactly 1,000 more calls.
    let (_, small) = exec_demo("malloc_count.bpf.o", 1000);
    let (_, large) = exec_demo("malloc_count.bpf.o", 2000);
    let (a, b) = (total(&small, "calls"), total(&large, "calls"));
    assert!(a >= 1000, "{small}");
    assert_eq!(b - a, 1000, "calls: {a} then {b}");
    // One process: one key.
    assert_eq!(large["calls"].as_array().unwrap().len(), 1);
}

#[test]
fn latency_histogram_has_one_sample_per_call() {
    let (demo, maps) = exec_demo("latency.bpf.o", 500);
    assert!(demo.contains("500 calls"), "{demo}");
    assert_eq!(total(&maps, "hist"), 500, "{maps}");
}

#[test]
fn fault_inject_makes_one_reservation_fail() {
    let (demo, maps) = exec_demo("fault_inject.bpf.o", 20);
    assert!(demo.contains("1 reservations failed"), "{demo}");
    assert_eq!(total(&maps, "injected"), 1);
    // Below 13 the function is never called with it: nothing injected.
    let (demo, maps) = exec_demo("fault_inject.bpf.o", 10);
    assert!(demo.contains("0 reservations failed"), "{demo}");
    assert_eq!(total(&maps, "injected"), 0);
}

#[test]
fn usdt_reader_sees_every_probe_and_enables_the_gated_one() {
    let (demo, maps) = exec_demo("usdt_reader.bpf.o", 100);
    // The semaphore-gated probe fired on every iteration: the demo counts
    // the times its semaphore was set.
    assert!(demo.contains("100 ticks"), "{demo}");
    let sum: u64 = demo
        .split("sum ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sum in {demo}"));
    let stat = |i: usize| le_u64(maps["stats"][i][1].as_str().unwrap());
    assert_eq!(stat(0), 100, "demo:work probes");
    assert_eq!(stat(1), sum, "the probes' second argument, summed");
    assert_eq!(stat(2), 100, "demo:tick probes");
    assert_eq!(stat(3), sum, "the last tick's running sum");
}

#[test]
fn opensnoop_sees_the_demos_opens_through_syscall_hooks() {
    let out = Command::new(env!("CARGO_BIN_EXE_userbpf"))
        .arg("exec")
        .arg(example("opensnoop.bpf.o"))
        .arg("--json")
        .arg("--")
        .arg(built("userbpf-demo"))
        .arg("3")
        .env("USERBPF_AGENT", built("libuserbpf_agent.so"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Records: u32 pid, s32 result, char name[64].
    let opens: Vec<(i32, String)> = json_records(&stdout, "events")
        .iter()
        .map(|v| {
            let b = unhex(v["data"].as_str().unwrap());
            let ret = i32::from_le_bytes(b[4..8].try_into().unwrap());
            let name = &b[8..72];
            let end = name.iter().position(|c| *c == 0).unwrap_or(64);
            (ret, String::from_utf8_lossy(&name[..end]).into_owned())
        })
        .collect();
    let stat: Vec<_> = opens
        .iter()
        .filter(|(_, n)| n == "/proc/self/stat")
        .collect();
    assert_eq!(
        stat.len(),
        1,
        "the demo opens /proc/self/stat once: {opens:?}"
    );
    assert!(stat[0].0 >= 0, "and gets a descriptor: {opens:?}");
}
