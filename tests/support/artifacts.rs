//! The agent library and the demo program for the tests that trace a
//! process: `cargo test` builds neither (they are other packages' cdylib
//! and binary), so the first test that needs them builds them, with the
//! same cargo, profile and target directory as the test itself.

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
