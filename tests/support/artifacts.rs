//! What the tests that trace a process share: readers of `userbpf exec
//! --json` output, and the agent library and the demo program. `cargo
//! test` builds neither of those two (other packages' cdylib and binary),
//! so the first test that needs them builds them, with the same cargo,
//! profile and target directory as the test itself.

use std::path::PathBuf;
use std::sync::OnceLock;

/// target/<profile>, where the test binary's `deps` directory is.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_path_buf()
}

/// Builds `userbpf-agent` and `userbpf-demo` (once per test binary).
fn build() -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let profile = profile_dir();
            let target = profile.parent().ok_or("no target directory")?.to_path_buf();
            let mut cmd = std::process::Command::new(env!("CARGO"));
            cmd.args(["build", "-q", "-p", "userbpf-agent", "-p", "userbpf-demo"])
                .arg("--target-dir")
                .arg(&target)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().map_err(|e| format!("running cargo: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!(
                    "cargo build -p userbpf-agent -p userbpf-demo: {status}"
                ))
            }
        })
        .clone()
}

/// `name` in target/<profile>, built (brought up to date) first.
pub fn built(name: &str) -> PathBuf {
    let p = profile_dir().join(name);
    if let Err(e) = build() {
        panic!("{} could not be built: {e}", p.display());
    }
    assert!(p.exists(), "{} is missing after the build", p.display());
    p
}

/// Bytes from hex text.
pub fn unhex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The little-endian u64 in the first 8 bytes of hex text.
pub fn le_u64(h: &str) -> u64 {
    u64::from_le_bytes(unhex(&h[..16]).try_into().unwrap())
}

/// The records `userbpf exec --json` streamed from buffer map `map`
/// (`{"map": ..., "data": HEX, ["cpu": N]}` lines).
pub fn json_records(stdout: &str, map: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["map"] == map)
        .collect()
}
