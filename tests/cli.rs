//! The `userbpf` command line, driven as a subprocess.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use userbpf_vm::conformance::TestCase;
use userbpf_vm::insn::insns_to_bytes;

fn userbpf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_userbpf"))
}

/// A scratch directory unique to one test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("userbpf-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `userbpf run FILE ARGS... --json`, which must succeed: the JSON it prints.
fn run_json(file: &Path, args: &[&str]) -> serde_json::Value {
    let o = userbpf()
        .arg("run")
        .arg(file)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(stdout(&o).trim()).unwrap()
}

#[test]
fn asm_then_disasm_then_run() {
    let s = Scratch::new("asm");
    let src = s.file("add.s", b"mov %r0, 40\nadd %r0, 2\nexit\n");
    let bin = s.0.join("add.bin");
    let o = userbpf()
        .arg("asm")
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&bin).unwrap().len(), 24);

    let o = userbpf().arg("disasm").arg(&bin).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("0: r0 = 40"), "{text}");
    assert!(text.contains("1: r0 += 2"), "{text}");
    assert!(text.contains("2: exit"), "{text}");

    let o = userbpf().arg("run").arg(&bin).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("r0 = 42 (0x2a)"), "{}", stdout(&o));
}

#[test]
fn run_json_reports_exact_u64_and_timing() {
    let s = Scratch::new("json");
    let src = s.file("big.s", b"lddw %r0, 0xfffffffffffffffe\nexit\n");
    let o = userbpf()
        .args(["run", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["program"], "big");
    assert_eq!(v["engine"], "interp");
    assert_eq!(v["r0"].as_u64(), Some(u64::MAX - 1));
    assert_eq!(v["runs"].as_u64(), Some(1));
    assert!(v["ns_per_run"].as_f64().unwrap() > 0.0);
    // The fields come in the documented order.
    let line = stdout(&o);
    let pos = |k: &str| line.find(&format!("\"{k}\"")).unwrap();
    assert!(pos("program") < pos("engine") && pos("engine") < pos("r0"));
    assert!(pos("r0") < pos("runs") && pos("runs") < pos("ns_per_run"));

    let o = userbpf()
        .args(["run", "--json", "--repeat", "1000"])
        .arg(&src)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["runs"].as_u64(), Some(1000));
}

#[test]
fn run_passes_memory_from_hex_and_files() {
    let s = Scratch::new("mem");
    let src = s.file(
        "sum.s",
        b"ldxb %r0, [%r1]\nldxb %r3, [%r1+1]\nadd %r0, %r3\nadd %r0, %r2\nexit\n",
    );
    let o = userbpf()
        .arg("run")
        .arg(&src)
        .args(["--mem", "10 20"])
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("r0 = 50 "),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let mem = s.file("mem.bin", &[1, 2, 3]);
    let o = userbpf()
        .arg("run")
        .arg(&src)
        .arg("--mem-file")
        .arg(&mem)
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("r0 = 6 "),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn errors_name_the_file_program_and_pc() {
    let s = Scratch::new("errors");
    let src = s.file("oob.s", b"mov %r0, 0\nldxdw %r0, [%r1+4]\nexit\n");
    let o = userbpf()
        .arg("run")
        .arg(&src)
        .args(["--mem", "00 11"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("oob.s") && e.contains("program `oob`") && e.contains("pc 1"),
        "{e}"
    );

    let bad = s.file("bad.s", b"mov %r0, 1\nfrobnicate %r0\nexit\n");
    let o = userbpf().arg("run").arg(&bad).output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));

    let odd = s.file("odd.bin", &[0x95, 0, 0]);
    let o = userbpf().arg("run").arg(&odd).output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("multiple of 8"), "{}", stderr(&o));

    let elf = s.file("obj.o", b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    let o = userbpf().arg("run").arg(&elf).output().unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("obj.o: not a valid ELF object"),
        "{}",
        stderr(&o)
    );

    // --dump-asm is the JIT's.
    let o = userbpf()
        .arg("run")
        .arg(&src)
        .arg("--dump-asm")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--engine jit"), "{}", stderr(&o));

    let o = userbpf()
        .args(["run", "/nonexistent/x.bin"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/x.bin"), "{}", stderr(&o));
}

#[test]
fn help_is_available_everywhere() {
    for sub in [
        &[][..],
        &["asm"],
        &["disasm"],
        &["run"],
        &["conformance-plugin"],
    ] {
        let o = userbpf().args(sub).arg("--help").output().unwrap();
        assert!(o.status.success(), "{sub:?}");
        assert!(stdout(&o).contains("Usage"), "{sub:?}");
    }
}

fn corpus_file(name: &str) -> String {
    let dir = match std::env::var_os("USERBPF_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance"),
    };
    std::fs::read_to_string(dir.join("tests").join(name)).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}  ")).collect()
}

/// Runs the plugin as bpf_conformance does: program bytes in hex on stdin,
/// memory (when any) as the first argument.
fn plugin(program: &[u8], mem: &[u8]) -> Output {
    let mut cmd = userbpf();
    cmd.arg("conformance-plugin");
    if !mem.is_empty() {
        cmd.arg(hex(mem));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(hex(program).as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn conformance_plugin_speaks_the_protocol() {
    let files = [
        "add.data",
        "ldxh.data",
        "subnet.data",
        "mem-len.data",
        "lock_cmpxchg.data",
        "call_local.data",
        "callx.data",
        "call_unwind_fail.data",
        "sdiv64-intmin-by-negone-reg.data",
        "be64.data",
    ];
    for f in files {
        let case = TestCase::parse(&corpus_file(f)).unwrap();
        let code = insns_to_bytes(&case.program().unwrap());
        let o = plugin(&code, &case.mem);
        assert!(o.status.success(), "{f}: {}", stderr(&o));
        let got = u64::from_str_radix(stdout(&o).trim(), 16).unwrap();
        assert_eq!(Some(got), case.result, "{f}");
    }
    // The stock runner puts the memory before the plugin options:
    // `userbpf MEM_HEX conformance-plugin`.
    let case = TestCase::parse(&corpus_file("ldxh.data")).unwrap();
    let code = insns_to_bytes(&case.program().unwrap());
    let mut child = userbpf()
        .arg(hex(&case.mem))
        .arg("conformance-plugin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(hex(&code).as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(u64::from_str_radix(stdout(&o).trim(), 16).ok(), case.result);

    // A program the decoder refuses: non-zero exit, message on stderr.
    let o = plugin(
        &[
            0x07, 0x00, 0x01, 0x00, 0x01, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0,
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("pc 0"), "{}", stderr(&o));
}

fn fixture(name: &str) -> PathBuf {
    match std::env::var_os("USERBPF_FIXTURES_DIR") {
        Some(d) => PathBuf::from(d).join(name),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/bpf")
            .join(name),
    }
}

#[test]
fn objects_inspect_disasm_and_run() {
    let obj = fixture("calls.bpf.o");
    let o = userbpf().arg("inspect").arg(&obj).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("calls") && text.contains("BPF_PROG_TYPE_SYSCALL"),
        "{text}"
    );

    let o = userbpf()
        .arg("disasm")
        .arg(&obj)
        .args(["--prog", "calls"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("calls (SEC(\"syscall\")):"), "{text}");
    assert!(
        text.contains("\nmix:\n") && text.contains("\nfinish:\n"),
        "{text}"
    );

    // a = 1, b = 2 (see tests/bpf/calls.bpf.c and vm/tests/object.rs).
    let mem = "01 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00";
    let v = run_json(&obj, &["--prog", "calls", "--mem", mem]);
    assert_eq!(v["program"], "calls");
    assert_eq!(v["r0"].as_u64(), Some(255_667_627));

    let o = userbpf()
        .arg("run")
        .arg(&obj)
        .args(["--prog", "nope"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no program named `nope` (programs: calls)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn run_json_lists_map_contents_after_the_run() {
    let obj = fixture("counter.bpf.o");
    // key 5, add 2: counts[5] = 2 * scale (3); runs: 100 -> 101.
    let mem = "05 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00";
    let v = run_json(&obj, &["--mem", mem]);
    assert_eq!(v["r0"].as_u64(), Some(6));
    assert_eq!(
        v["maps"]["counts"],
        serde_json::json!([["05000000", "0600000000000000"]])
    );
    assert_eq!(
        v["maps"][".data"],
        serde_json::json!([["00000000", "6500000000000000"]])
    );
    // Arrays list every index.
    assert_eq!(v["maps"]["by_slot"].as_array().unwrap().len(), 8);
    assert_eq!(
        v["maps"]["by_slot"][5],
        serde_json::json!(["05000000", "0100000000000000"])
    );
}

#[test]
fn set_changes_const_volatile_configuration_before_load() {
    let obj = fixture("counter.bpf.o");
    let mem = "05 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00";
    // scale defaults to 3 (r0 = 6); with --set scale=5, r0 = 2 * 5.
    let o = userbpf()
        .arg("run")
        .arg(&obj)
        .args([
            "--mem",
            mem,
            "--json",
            "--set",
            "scale=5",
            "--set",
            "runs=0x10",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["r0"].as_u64(), Some(10));
    assert_eq!(
        v["maps"][".data"],
        serde_json::json!([["00000000", "1100000000000000"]])
    );
    let o = userbpf()
        .arg("run")
        .arg(&obj)
        .args(["--set", "nope=1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no global variable `nope`"),
        "{}",
        stderr(&o)
    );
    let o = userbpf()
        .arg("run")
        .arg(&obj)
        .args(["--set", "last_key=0x100000000"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("does not fit in 4 bytes"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn xdp_programs_take_the_packet_from_mem() {
    let obj = fixture("xdp.bpf.o");
    // Ethernet + IPv4 (TTL 64, UDP) + UDP to port 9: dropped (XDP_DROP = 1).
    let pkt = "02 00 00 00 00 01 02 00 00 00 00 02 08 00 \
               45 00 00 20 00 01 00 00 40 11 00 00 0a 00 00 01 0a 00 00 02 \
               30 39 00 09 00 0c 00 00 68 69 21 21";
    let v = run_json(&obj, &["--mem", pkt]);
    assert_eq!(v["r0"].as_u64(), Some(1));
    // proto_count[17] (UDP) = 1.
    assert_eq!(
        v["maps"]["proto_count"][17],
        serde_json::json!(["11000000", "0100000000000000"])
    );
}

#[test]
fn tc_programs_take_the_packet_from_mem() {
    let obj = fixture("tc.bpf.o");
    let pkt = "02 00 00 00 00 01 02 00 00 00 00 02 08 00 \
               45 00 00 20 00 01 00 00 40 11 00 00 0a 00 00 01 0a 00 00 02 \
               30 39 00 09 00 0c 00 00 68 69 21 21";
    let v = run_json(&obj, &["--mem", pkt]);
    // UDP to port 9: TC_ACT_SHOT (2); 46 bytes counted for protocol 17.
    assert_eq!(v["r0"].as_u64(), Some(2));
    assert_eq!(
        v["maps"]["bytes_by_proto"],
        serde_json::json!([["11000000", "2e00000000000000"]])
    );
}

#[test]
fn json_lists_per_cpu_values_per_cpu() {
    let obj = fixture("maps.bpf.o");
    let v = run_json(&obj, &[]);
    // counters[0] += 1 on the run's CPU slot: one list entry per CPU, summing to 1.
    let per_cpu = v["maps"]["counters"][0][1].as_array().unwrap();
    assert_eq!(per_cpu.len(), userbpf_vm::maps::percpu::ncpus());
    let sum: u64 = per_cpu
        .iter()
        .map(|s| u64::from_str_radix(&s.as_str().unwrap()[..2], 16).unwrap())
        .sum();
    assert_eq!(sum, 1);
    // The event for our pid landed in the hash map; `seen` went from 7 to 8.
    assert_eq!(v["maps"]["events_by_pid"].as_array().unwrap().len(), 1);
    assert_eq!(v["maps"][".data"][0][1], "0800000000000000");
}

#[test]
fn run_resolves_kconfig_externs_from_a_given_config_file() {
    let s = Scratch::new("kconfig");
    let obj = fixture("kconfig.bpf.o");
    let mem = "00".repeat(48);
    // CONFIG_HZ=1234 = 0x4d2 lands in the `.kconfig` map after the version
    // (4 bytes) and two bools, aligned to 4.
    let cfg = s.file(
        "good.config",
        b"CONFIG_BPF_SYSCALL=y\nCONFIG_HZ=1234\nCONFIG_DEFAULT_HOSTNAME=\"h\"\n",
    );
    let v = run_json(&obj, &["--mem", &mem, "--kconfig", cfg.to_str().unwrap()]);
    let entry = &v["maps"][".kconfig"][0];
    assert_eq!(entry[0], "00000000", "{v}");
    let value = entry[1].as_str().unwrap();
    assert_eq!(&value[8..12], "0101", "{v}");
    assert_eq!(&value[16..24], "d2040000", "{v}");

    // A non-weak extern missing from the file is an error naming it.
    let cfg = s.file("bad.config", b"CONFIG_HZ=1234\n");
    let o = userbpf()
        .args(["run", "--mem", &mem, "--kconfig"])
        .arg(&cfg)
        .arg(&obj)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("CONFIG_BPF_SYSCALL"), "{}", stderr(&o));
}

#[test]
fn disasm_names_the_maps_and_globals_an_object_refers_to() {
    // Names from tests/bpf/counter.bpf.c and kconfig.bpf.c.
    let o = userbpf()
        .arg("disasm")
        .arg(fixture("counter.bpf.o"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for want in [
        "]+0  ; .rodata: scale\n",
        "]+0  ; .bss: last_key\n",
        "]  ; counts\n",
    ] {
        assert!(text.contains(want), "{want:?} missing in\n{text}");
    }
    let o = userbpf()
        .arg("disasm")
        .arg(fixture("kconfig.bpf.o"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("  ; .kconfig: CONFIG_HZ\n"), "{text}");
}

#[test]
fn uprobe_programs_get_pt_regs_padded_and_the_event_registers() {
    // struct pt_regs with only ip (offset 128) set: the rest is padded.
    let mut regs = vec![0u8; 136];
    regs[128..136].copy_from_slice(&0x401000u64.to_le_bytes());
    let v = run_json(
        &fixture("hooks.bpf.o"),
        &["--prog", "probe", "--mem", &hex(&regs)],
    );
    assert_eq!(v["r0"], 0);
    let bss = v["maps"][".bss"][0][1].as_str().unwrap();
    let word = |i: usize| {
        let b: Vec<u8> = (0..8)
            .map(|j| u8::from_str_radix(&bss[(i * 8 + j) * 2..(i * 8 + j) * 2 + 2], 16).unwrap())
            .collect();
        u64::from_le_bytes(b.try_into().unwrap())
    };
    assert_eq!(word(0), 0x401000, "bpf_get_func_ip is the probed ip");
    assert_eq!(word(2), 8, "bpf_get_stack: one frame (bp is 0)");
    assert_eq!(word(3), 0x401000, "the frame is the ip");
}

#[test]
fn core_relocations_use_the_btf_given_and_explain_poisoned_instructions() {
    // A struct pt_regs image (x86-64: di is the 15th of 21 u64 fields).
    let regs: Vec<u8> = (0..21u64).flat_map(|i| (0x100 + i).to_le_bytes()).collect();
    let mem = hex(&regs);
    let obj = fixture("core.bpf.o");
    let vmlinux = Path::new("/sys/kernel/btf/vmlinux");
    if vmlinux.exists() {
        let v = run_json(
            &obj,
            &[
                "--prog",
                "parm1",
                "--mem",
                &mem,
                "--btf",
                "/sys/kernel/btf/vmlinux",
            ],
        );
        assert_eq!(v["r0"], 0x100 + 14, "{v}");
    }
    let o = userbpf()
        .args(["run", "--prog", "unguarded", "--mem", &mem])
        .arg(&obj)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("CO-RE relocation #")
            && err.contains("at pc 0")
            && err.contains("field `userbpf_no_such_field` of `struct pt_regs___mine`")
            && err.contains("could not be resolved"),
        "{err}"
    );
    let o = userbpf()
        .args(["inspect", "--btf", "/nonexistent/btf"])
        .arg(&obj)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/btf"), "{}", stderr(&o));
    let o = userbpf()
        .args(["disasm", "--prog", "guarded"])
        .arg(&obj)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o)
            .contains("; unresolved CO-RE relocation: byte_off: field `userbpf_no_such_field`"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn the_jit_engine_runs_programs_objects_and_the_plugin() {
    let dir = Scratch::new("jit");
    let src = dir.file(
        "sum.s",
        b"mov %r0, 0\nmov %r1, 0\nloop:\nadd %r0, %r1\nadd %r1, 1\njlt %r1, 100, loop\nexit\n",
    );
    for engine in ["interp", "jit"] {
        let v = run_json(&src, &["--engine", engine]);
        assert_eq!(v["r0"], 4950, "{engine}");
        assert_eq!(v["engine"], engine);
    }
    // Objects with maps and helpers: the same map contents on both engines.
    let counter = fixture("counter.bpf.o");
    let mem = "05 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00";
    let a = run_json(&counter, &["--mem", mem, "--engine", "interp"]);
    let b = run_json(&counter, &["--mem", mem, "--engine", "jit"]);
    assert_eq!(a["r0"], b["r0"]);
    assert_eq!(a["maps"], b["maps"]);
    // Packet programs: the same verdict and maps.
    let pkt = "02 00 00 00 00 01 02 00 00 00 00 02 08 00 \
               45 00 00 20 00 01 00 00 40 11 00 00 0a 00 00 01 0a 00 00 02 \
               30 39 00 09 00 0c 00 00 68 69 21 21";
    for (obj, prog) in [
        ("xdp.bpf.o", "filter"),
        ("tc.bpf.o", "classify"),
        ("socket.bpf.o", "keep_udp"),
        ("socket.bpf.o", "sub_loads"),
    ] {
        let args = |engine| ["--prog", prog, "--mem", pkt, "--engine", engine];
        let a = run_json(&fixture(obj), &args("interp"));
        let b = run_json(&fixture(obj), &args("jit"));
        assert_eq!((&a["r0"], &a["maps"]), (&b["r0"], &b["maps"]), "{obj}");
    }
    // --dump-asm prints the native code.
    let o = userbpf()
        .arg("run")
        .arg(&src)
        .args(["--engine", "jit", "--dump-asm"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("bytes of x86-64") && out.contains("r0 = 4950"),
        "{out}"
    );
    // The plugin protocol on the JIT: a corpus case.
    let case = TestCase::parse(&corpus_file("add64.data")).unwrap();
    let program = case.program().unwrap();
    let mut p = userbpf()
        .args(["conformance-plugin", "--engine", "jit"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin
        .take()
        .unwrap()
        .write_all(hex(&insns_to_bytes(&program)).as_bytes())
        .unwrap();
    let o = p.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(u64::from_str_radix(stdout(&o).trim(), 16).ok(), case.result);
}

#[test]
fn programs_too_large_for_the_jit_run_in_the_interpreter_with_a_note() {
    let dir = Scratch::new("jitcap");
    // MAX_JIT_INSNS + 1 slots: `mov r0, 1` repeated, then `exit`.
    let n = userbpf::jit::MAX_JIT_INSNS;
    let mut code = Vec::with_capacity((n + 1) * 8);
    for _ in 0..n {
        code.extend_from_slice(&[0xb7, 0, 0, 0, 1, 0, 0, 0]);
    }
    code.extend_from_slice(&[0x95, 0, 0, 0, 0, 0, 0, 0]);
    let file = dir.file("big.bin", &code);
    let o = userbpf()
        .arg("run")
        .arg(&file)
        .args(["--engine", "jit", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("more than the JIT's limit") && stderr(&o).contains("interpreter"),
        "{}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["r0"], 1);
    // The report names the engine that ran.
    assert_eq!(v["engine"], "interp");
}

#[test]
fn verify_reports_each_program_and_fails_on_a_rejection() {
    let out = userbpf()
        .arg("verify")
        .arg(fixture("xdp.bpf.o"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("filter: accepted (processed "), "{text}");

    let dir = Scratch::new("verify");
    // Reads 8 bytes of stack of which 4 were written.
    let src = dir.file(
        "bad.s",
        b"*(u32 *)(r10 - 8) = 0\nr2 = r10\nr2 += -8\nr1 = 7\nr0 = *(u64 *)(r2 + 0)\nexit\n",
    );
    let out = userbpf().arg("verify").arg(&src).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("rejected at pc 4: invalid read from stack off -8+4 size 8"),
        "{text}"
    );
    assert!(text.contains("4: r0 = *(u64 *)(r2 + 0)"), "{text}");

    // -v prints the state at each instruction, kernel style.
    let good = dir.file("good.s", b"r0 = 0\nexit\n");
    let out = userbpf()
        .args(["verify", "-v"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("0: R1=0 R2=0 R10=fp0\n0: r0 = 0"), "{text}");
    assert!(text.contains("processed 2 insns"), "{text}");

    // A raw program reads the buffer given by --mem-size.
    let buf = dir.file("buf.s", b"r0 = *(u32 *)(r1 + 4)\nexit\n");
    let out = userbpf()
        .args(["verify", "--mem-size", "8"])
        .arg(&buf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    let out = userbpf()
        .args(["verify", "--mem-size", "6"])
        .arg(&buf)
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("invalid access to memory, mem_size=6 off=4 size=4"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn run_verifies_first_and_no_verify_runs_in_checked_mode() {
    let dir = Scratch::new("run-verify");
    // Reads 4 bytes at offset 4 of the buffer: safe for 8 bytes, not for 6.
    let src = dir.file("read.s", b"r0 = *(u32 *)(r1 + 4)\nexit\n");
    let ok = userbpf()
        .args([
            "run",
            "--engine",
            "jit",
            "--json",
            "--mem",
            "01 02 03 04 05 06 07 08",
        ])
        .arg(&src)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(v["r0"], 0x0807_0605, "{v}");

    let bad = userbpf()
        .args(["run", "--mem", "01 02 03 04 05 06"])
        .arg(&src)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = stderr(&bad);
    assert!(
        err.contains("rejected at pc 0")
            && err.contains("mem_size=6 off=4 size=4")
            && err.contains("--no-verify"),
        "{err}"
    );
    // Unverified, the run is checked: the fault is caught and reported.
    for engine in ["interp", "jit"] {
        let o = userbpf()
            .args([
                "run",
                "--no-verify",
                "--engine",
                engine,
                "--mem",
                "01 02 03 04 05 06",
            ])
            .arg(&src)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{engine}");
        assert!(stderr(&o).contains("pc 0"), "{engine}: {}", stderr(&o));
    }
}
