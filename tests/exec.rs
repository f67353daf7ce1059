//! `userbpf exec`: the demo program traced through the LD_PRELOAD agent,
//! with exact counts, streamed records, the target's exit status, and
//! clear errors for what cannot be traced. Needs the agent library and
//! the demo next to the test binaries (`cargo test --workspace` builds
//! them; alone: `cargo build -p userbpf-agent -p userbpf-demo`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/artifacts.rs"]
mod artifacts;

use artifacts::{built, json_records, le_u64};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/bpf")
        .join(name)
}

fn userbpf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_userbpf"))
        .args(args)
        .env("USERBPF_AGENT", built("libuserbpf_agent.so"))
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The final `{"maps": ...}` line's entries of `map` as (key, value) hex.
fn final_map(stdout: &str, map: &str) -> Vec<(String, String)> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("{\"maps\""))
        .unwrap_or_else(|| panic!("no maps line in {stdout}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["maps"][map]
        .as_array()
        .unwrap_or_else(|| panic!("no map {map} in {line}"))
        .iter()
        .map(|e| {
            (
                e[0].as_str().unwrap().to_string(),
                e[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn u64_at(entries: &[(String, String)], key: u32) -> u64 {
    let k: String = key
        .to_le_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    le_u64(&entries.iter().find(|(kk, _)| *kk == k).unwrap().1)
}

#[test]
fn uprobes_and_uretprobes_in_the_demo_count_every_call() {
    let demo = built("userbpf-demo");
    let out = userbpf(&[
        "exec",
        fixture("uprobe.bpf.o").to_str().unwrap(),
        "--prog",
        "count_calls=self:demo_work",
        "--prog",
        "count_returns=self:demo_work",
        "--json",
        "--",
        demo.to_str().unwrap(),
        "1000",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("demo: 1000 calls"), "{stdout}");
    let counts = final_map(&stdout, "counts");
    assert_eq!(u64_at(&counts, 0), 1000, "calls");
    assert_eq!(u64_at(&counts, 1), 999, "the last call's argument");
    assert_eq!(u64_at(&counts, 2), 1000, "returns");
    assert_eq!(u64_at(&counts, 3), 999 * 999 + 1, "the last return value");
}

#[test]
fn ring_buffer_records_and_trace_printk_lines_stream_as_they_arrive() {
    let demo = built("userbpf-demo");
    let out = userbpf(&[
        "exec",
        fixture("uprobe.bpf.o").to_str().unwrap(),
        "--prog",
        "report=self:demo_work",
        "--json",
        "--",
        demo.to_str().unwrap(),
        "50",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let records: Vec<u64> = json_records(&stdout, "events")
        .iter()
        .map(|v| le_u64(v["data"].as_str().unwrap()))
        .collect();
    assert_eq!(
        records,
        (0..50).collect::<Vec<u64>>(),
        "every record, in order"
    );
    let printk: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["printk"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        printk,
        vec![
            "hello from call 0",
            "hello from call 1",
            "hello from call 2"
        ]
    );
}

#[test]
fn a_fault_injector_makes_the_function_fail_and_the_exit_status_is_the_commands() {
    let demo = built("userbpf-demo");
    let out = userbpf(&[
        "exec",
        fixture("uprobe.bpf.o").to_str().unwrap(),
        "--prog",
        "fail_unlucky=self:demo_reserve",
        "--",
        demo.to_str().unwrap(),
        "20",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("1 reservations failed"),
        "demo_reserve(13) returned -ENOMEM: {stdout}"
    );
    // The command's own status comes back.
    let out = userbpf(&[
        "exec",
        fixture("uprobe.bpf.o").to_str().unwrap(),
        "--prog",
        "count_calls=libc.so.6:getpid",
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
}

#[test]
fn what_cannot_be_traced_gets_a_clear_error() {
    let demo = built("userbpf-demo");
    let obj = fixture("uprobe.bpf.o");
    // A malformed object.
    let junk = std::env::temp_dir().join(format!("userbpf-junk-{}.o", std::process::id()));
    std::fs::write(&junk, b"\x7fELF not really").unwrap();
    let out = userbpf(&["exec", junk.to_str().unwrap(), "--", "true"]);
    std::fs::remove_file(&junk).ok();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("userbpf-junk"),
        "{}",
        text(&out.stderr)
    );
    // A program without a target.
    let out = userbpf(&[
        "exec",
        obj.to_str().unwrap(),
        "--prog",
        "count_calls",
        "--",
        "true",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("count_calls=BINARY:FUNCTION"),
        "{}",
        text(&out.stderr)
    );
    // A missing symbol: reported by the agent, the command still runs.
    let out = userbpf(&[
        "exec",
        obj.to_str().unwrap(),
        "--prog",
        "count_calls=self:no_such_function",
        "--",
        demo.to_str().unwrap(),
        "3",
    ]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("demo: 3 calls"));
    let err = text(&out.stderr);
    assert!(
        err.contains("no_such_function") && err.contains("count_calls"),
        "{err}"
    );
    // A program the verifier rejects: an error before the command runs,
    // naming the program, the pc and the reason (`--no-verify` is the
    // explicit way to run it checked).
    let out = userbpf(&[
        "exec",
        fixture("core.bpf.o").to_str().unwrap(),
        "--prog",
        "bitfield=self:demo_work",
        "--",
        demo.to_str().unwrap(),
        "3",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("bitfield") && err.contains("pc 16") && err.contains("--no-verify"),
        "{err}"
    );
    assert!(
        !text(&out.stdout).contains("demo:"),
        "the command did not start"
    );
    // A command that does not exist.
    let out = userbpf(&[
        "exec",
        obj.to_str().unwrap(),
        "--prog",
        "count_calls=self:demo_work",
        "--",
        "userbpf-no-such-command",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("userbpf-no-such-command"));
}

#[test]
fn static_and_setuid_targets_are_refused() {
    let obj = fixture("uprobe.bpf.o");
    let dir = std::env::temp_dir().join(format!("userbpf-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A static executable: an ELF without an interpreter (built with the
    // C compiler when there is one).
    let src = dir.join("s.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let st = dir.join("static");
    let built = Command::new("cc")
        .args(["-static", "-o"])
        .arg(&st)
        .arg(&src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if built {
        let out = userbpf(&[
            "exec",
            obj.to_str().unwrap(),
            "--prog",
            "count_calls=self:main",
            "--",
            st.to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("statically linked"),
            "{}",
            text(&out.stderr)
        );
    } else {
        println!("static target not tested: no `cc -static` here");
    }
    // A set-user-ID copy of the demo.
    use std::os::unix::fs::PermissionsExt;
    let suid = dir.join("suid-demo");
    std::fs::copy(built_demo(), &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let out = userbpf(&[
        "exec",
        obj.to_str().unwrap(),
        "--prog",
        "count_calls=self:demo_work",
        "--",
        suid.to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(&dir).ok();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("set-user-ID"),
        "{}",
        text(&out.stderr)
    );
}

fn built_demo() -> PathBuf {
    built("userbpf-demo")
}

#[test]
fn processes_started_by_the_target_join_and_share_the_maps() {
    // sh runs the demo twice: each demo process loads the agent (the
    // environment carries it) and counts into the same maps. (sh itself
    // has no demo_work: its agent reports that and sh runs on.)
    let demo = built("userbpf-demo");
    let script = format!("{0} 10 && {0} 20", demo.display());
    let out = userbpf(&[
        "exec",
        fixture("uprobe.bpf.o").to_str().unwrap(),
        "--prog",
        "count_calls=self:demo_work",
        "--json",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(u64_at(&final_map(&stdout, "counts"), 0), 30);
}

#[test]
fn a_target_that_crashes_ends_the_trace_cleanly_with_its_status() {
    let demo = built("userbpf-demo");
    let out = userbpf(&[
        "exec",
        fixture("uprobe.bpf.o").to_str().unwrap(),
        "--prog",
        "count_calls=self:demo_work",
        "--json",
        "--",
        demo.to_str().unwrap(),
        "25",
        "abort",
    ]);
    // 128 + SIGABRT, and the maps as the target left them.
    assert_eq!(out.status.code(), Some(128 + 6), "{}", text(&out.stderr));
    assert_eq!(u64_at(&final_map(&text(&out.stdout), "counts"), 0), 25);
}

#[test]
fn perf_buffer_records_stream_with_their_cpu() {
    let demo = built("userbpf-demo");
    let out = userbpf(&[
        "exec",
        fixture("uprobe.bpf.o").to_str().unwrap(),
        "--prog",
        "perf_report=self:demo_work",
        "--json",
        "--",
        demo.to_str().unwrap(),
        "40",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let mut args: Vec<u64> = json_records(&stdout, "perf_events")
        .iter()
        .map(|v| {
            assert!(v["cpu"].is_u64(), "a CPU with each record: {v}");
            le_u64(v["data"].as_str().unwrap())
        })
        .collect();
    // (Per-CPU rings: in order per CPU, so compare as a set.)
    args.sort_unstable();
    assert_eq!(args, (0..40).collect::<Vec<u64>>(), "every call's record");
}

/// A C target of a test: built from `source` with `cc` and `flags` into a
/// directory of its own (removed on drop), or `None` (the reason printed)
/// without a C compiler.
struct CTarget {
    dir: PathBuf,
    exe: PathBuf,
}

impl CTarget {
    fn build(name: &str, source: &str, flags: &[&str]) -> Option<CTarget> {
        let dir = std::env::temp_dir().join(format!("userbpf-exec-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join(format!("{name}.c"));
        std::fs::write(&src, source).unwrap();
        let exe = dir.join(name);
        let target = CTarget { dir, exe };
        match Command::new("cc")
            .args(flags)
            .arg("-o")
            .arg(&target.exe)
            .arg(&src)
            .output()
        {
            Ok(o) if o.status.success() => Some(target),
            Ok(o) => panic!("cc {flags:?} failed on {name}.c: {}", text(&o.stderr)),
            Err(e) => {
                println!("skipped: no C compiler (`cc`): {e}");
                None
            }
        }
    }

    fn path(&self) -> &str {
        self.exe.to_str().unwrap()
    }
}

impl Drop for CTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A C target built as a non-PIE executable (`ET_EXEC`, fixed addresses)
/// that forks: the child and the parent each call `np_work(i)` for `i`
/// in `0..N`.
const NOPIE_FORK_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) long np_work(long i)
{
	return i * i + 1;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10;
	volatile long sum = 0;
	pid_t child = fork();
	if (child < 0)
		return 2;
	for (long i = 0; i < n; i++)
		sum += np_work(i);
	if (child == 0)
		return 0;
	int status = 0;
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return 3;
	printf("nopie: %ld calls in each of two processes, sum %ld\n", n, sum);
	return 0;
}
"#;

#[test]
fn a_non_pie_target_and_its_forked_child_are_traced_with_exact_counts() {
    let Some(exe) = CTarget::build("nopie", NOPIE_FORK_C, &["-O1", "-fno-pie", "-no-pie"]) else {
        return;
    };
    // ELF e_type at offset 16: ET_EXEC (2), not ET_DYN: really non-PIE.
    let elf = std::fs::read(&exe.exe).unwrap();
    assert_eq!(u16::from_le_bytes([elf[16], elf[17]]), 2, "ET_EXEC");
    let out = userbpf(&[
        "exec",
        fixture("uprobe.bpf.o").to_str().unwrap(),
        "--prog",
        "count_calls=self:np_work",
        "--prog",
        "count_returns=self:np_work",
        "--json",
        "--",
        exe.path(),
        "500",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let sum: u64 = (0..500u64).map(|i| i * i + 1).sum();
    assert!(
        stdout.contains(&format!(
            "nopie: 500 calls in each of two processes, sum {sum}"
        )),
        "{stdout}"
    );
    let counts = final_map(&stdout, "counts");
    assert_eq!(u64_at(&counts, 0), 1000, "calls in both processes");
    assert_eq!(u64_at(&counts, 1), 499, "the last call's argument");
    assert_eq!(u64_at(&counts, 2), 1000, "returns in both processes");
    assert_eq!(u64_at(&counts, 3), 499 * 499 + 1, "the last return value");
}

/// A C target whose `lj_work(i)` leaves through `longjmp` when `i % 3 ==
/// 2`: those returns never happen. Then it forks a child that calls
/// `lj_work(0)` once (its probes lose nothing).
const LONGJMP_C: &str = r#"
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static jmp_buf env;

__attribute__((noinline)) void lj_bail(long i)
{
	longjmp(env, (int)i + 1);
}

__attribute__((noinline)) long lj_work(long i)
{
	if (i % 3 == 2)
		lj_bail(i);
	return i * 2 + 1;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10;
	volatile long sum = 0, jumped = 0;
	for (volatile long i = 0; i < n; i++) {
		if (setjmp(env) == 0)
			sum += lj_work(i);
		else
			jumped++;
	}
	printf("longjmp: %ld calls, sum %ld, %ld left by longjmp\n", n, sum, jumped);
	fflush(stdout);
	pid_t child = fork();
	if (child == 0) {
		sum += lj_work(0);
		exit(0);
	}
	int status = 0;
	waitpid(child, &status, 0);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 3;
}
"#;

#[test]
fn what_the_probes_lost_is_reported_when_the_target_exits() {
    let Some(exe) = CTarget::build("lj", LONGJMP_C, &["-O1"]) else {
        return;
    };
    // 31 calls: 10 leave by longjmp (i = 2, 5, ..., 29); the last call
    // returns, so every skipped frame is found.
    let out = userbpf(&[
        "exec",
        fixture("uprobe.bpf.o").to_str().unwrap(),
        "--prog",
        "count_calls=self:lj_work",
        "--prog",
        "count_returns=self:lj_work",
        "--json",
        "--",
        exe.path(),
        "31",
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("31 calls"), "{stdout}");
    assert!(stdout.contains("10 left by longjmp"), "{stdout}");
    let counts = final_map(&stdout, "counts");
    assert_eq!(u64_at(&counts, 0), 32, "calls (the child's one too)");
    assert_eq!(u64_at(&counts, 2), 22, "returns");
    let stats: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("program").is_some())
        .collect();
    // One line per program and process: the parent's and the child's.
    let of = |p: &str| -> Vec<&serde_json::Value> {
        stats.iter().filter(|v| v["program"] == p).collect()
    };
    let rets = of("count_returns");
    assert_eq!(rets.len(), 2, "{stdout}");
    let mut missed: Vec<u64> = rets
        .iter()
        .map(|v| v["missed_returns"].as_u64().unwrap())
        .collect();
    missed.sort_unstable();
    assert_eq!(
        missed,
        vec![0, 10],
        "the parent's 10, none for the child (not its parent's again): {stdout}"
    );
    assert!(rets.iter().all(|v| v["target"] == "self:lj_work"));
    assert_ne!(rets[0]["pid"], rets[1]["pid"]);
    for v in of("count_calls") {
        assert_eq!(v["missed_returns"], 0);
        assert_eq!(v["faults"], 0);
    }
    assert!(
        stderr.contains("count_returns at self:lj_work: 10 return(s) missed"),
        "{stderr}"
    );
}
