//! `userbpf exec OBJ [--prog NAME[=TARGET]]... [--json] -- CMD ARGS...`:
//! runs CMD with the agent preloaded, its user-space programs attached
//! inside it, streams what the programs output, and prints the maps when
//! CMD exits.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use userbpf::probe::section_target;
use userbpf::usdt;
use userbpf_shims::session::{unescape, ControlPeer, ControlServer, SessionDir, SESSION_ENV};
use userbpf_vm::maps::MapSet;
use userbpf_vm::object::{Object, ProgramType};

/// The arguments of `userbpf exec`.
pub struct ExecArgs {
    pub file: PathBuf,
    pub progs: Vec<String>,
    pub json: bool,
    pub no_verify: bool,
    pub agent: Option<PathBuf>,
    pub cmd: Vec<OsString>,
}

/// How a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    /// A uprobe or uretprobe: `BINARY:FUNCTION[+OFF]`.
    Uprobe,
    /// A USDT probe: `BINARY:PROVIDER:NAME`.
    Usdt,
    /// A syscall tracepoint (the section says which).
    Syscall,
}

impl Hook {
    fn word(self) -> &'static str {
        match self {
            Hook::Uprobe => "attach",
            Hook::Usdt => "usdt",
            Hook::Syscall => "syscall",
        }
    }

    fn form(self) -> &'static str {
        match self {
            Hook::Uprobe => "BINARY:FUNCTION",
            Hook::Usdt => "BINARY:PROVIDER:NAME",
            Hook::Syscall => "(none: the section names the syscall)",
        }
    }
}

/// A program's hook and the target its section names, if it is one
/// `userbpf exec` attaches.
fn hook_of(p: &userbpf_vm::object::ObjProgram) -> Option<(Hook, Option<String>)> {
    if let Some(Ok(_)) = userbpf::syscall::SyscallProgram::of_section(&p.kind.section) {
        return Some((Hook::Syscall, Some(p.kind.section.clone())));
    }
    if p.kind.prog_type != ProgramType::Kprobe {
        return None;
    }
    if let Some(t) = usdt::section_target(&p.kind.section) {
        return Some((Hook::Usdt, t.map(|t| t.to_string())));
    }
    section_target(&p.kind.section).map(|(_, t)| (Hook::Uprobe, t.map(str::to_string)))
}

/// The programs to attach: (name, hook, target). `--prog NAME=TARGET`
/// names both; `--prog NAME` takes the target from the section
/// (`uprobe/BINARY:FUNCTION`, `usdt/BINARY:PROVIDER:NAME`); no `--prog`:
/// every uprobe, uretprobe and USDT program whose section names its
/// target.
fn plan(file: &Path, object: &Object, progs: &[String]) -> Result<Vec<(String, Hook, String)>> {
    let mut out = Vec::new();
    if progs.is_empty() {
        for p in &object.programs {
            if let Some((hook, Some(target))) = hook_of(p) {
                out.push((p.name.clone(), hook, target));
            }
        }
        if out.is_empty() {
            bail!(
                "{}: no syscall program, and no uprobe, uretprobe or USDT program that \
                 names its target in its section (`uprobe/BINARY:FUNCTION`, \
                 `usdt/BINARY:PROVIDER:NAME`); give them with --prog NAME=TARGET",
                file.display()
            );
        }
        return Ok(out);
    }
    for spec in progs {
        let (name, target) = match spec.split_once('=') {
            Some((n, t)) => (n.to_string(), Some(t.to_string())),
            None => (spec.clone(), None),
        };
        let p = object
            .program(&name)
            .with_context(|| format!("{}: --prog {name}", file.display()))?;
        let Some((hook, from_section)) = hook_of(p) else {
            bail!(
                "{}: program `{name}` (section `{}`) is not a uprobe, uretprobe, USDT or \
                 syscall program, the hooks `userbpf exec` attaches in the process",
                file.display(),
                p.kind.section
            );
        };
        let target = target.or(from_section).with_context(|| {
            format!(
                "{}: program `{name}` has no target: give it as --prog {name}={}",
                file.display(),
                hook.form()
            )
        })?;
        out.push((name, hook, target));
    }
    Ok(out)
}

/// Resolves CMD[0] as the shell would (a path, or a name on $PATH).
fn find_command(cmd: &OsString) -> Result<PathBuf> {
    let p = PathBuf::from(cmd);
    if p.components().count() > 1 {
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let c = dir.join(&p);
        if c.is_file() {
            return Ok(c);
        }
    }
    bail!("{}: command not found", p.display())
}

/// Refuses targets the agent cannot reach: static executables (no
/// dynamic loader to preload it) and set-user/group-id programs (the
/// loader ignores LD_PRELOAD for them).
fn check_reachable(exe: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(exe).with_context(|| exe.display().to_string())?;
    let mode = meta.permissions().mode();
    if mode & 0o6000 != 0 {
        bail!(
            "{}: a set-user-ID or set-group-ID program: the dynamic loader ignores LD_PRELOAD \
             for it, so the agent cannot trace it",
            exe.display()
        );
    }
    let bytes = std::fs::read(exe).with_context(|| exe.display().to_string())?;
    if bytes.starts_with(b"#!") {
        // A script: its interpreter is what runs (and is checked when it
        // starts: the agent reports from every process).
        return Ok(());
    }
    let elf = goblin::elf::Elf::parse(&bytes)
        .with_context(|| format!("{}: not an ELF executable", exe.display()))?;
    if elf.interpreter.is_none() {
        bail!(
            "{}: a statically linked executable: it has no dynamic loader to preload the \
             agent, so userbpf cannot trace it in-process",
            exe.display()
        );
    }
    Ok(())
}

/// The agent library: --agent, $USERBPF_AGENT, or next to this binary.
fn find_agent(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("USERBPF_AGENT") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating userbpf")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    for c in [
        dir.join("libuserbpf_agent.so"),
        dir.join("../libuserbpf_agent.so"),
    ] {
        if c.is_file() {
            return Ok(c.canonicalize().unwrap_or(c));
        }
    }
    bail!(
        "the agent library libuserbpf_agent.so is not next to {} (build it with \
         `cargo build -p userbpf-agent`, or name it with --agent / USERBPF_AGENT)",
        exe.display()
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Prints what arrived: control messages and ring/perf buffer records.
struct Output {
    json: bool,
}

impl Output {
    /// A program's counters at its process's exit (`PID PROGRAM TARGET
    /// MISSES MISSED_RETURNS FAULTS [LAST FAULT]`; the pid the agent
    /// gives, as a fork child shares its parent's connection): what was
    /// lost goes to stderr; with `--json`, one line each, lost or not.
    fn stats(&self, _peer: i32, text: &str) {
        let mut f = text.splitn(7, ' ');
        let (Some(pid), Some(program), Some(target)) = (f.next(), f.next(), f.next()) else {
            return;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            return;
        };
        let mut num = || f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let (misses, missed_returns, faults) = (num(), num(), num());
        let last = f.next().filter(|l| !l.is_empty());
        if self.json {
            let v = serde_json::json!({
                "pid": pid,
                "program": program,
                "target": target,
                "misses": misses,
                "missed_returns": missed_returns,
                "faults": faults,
                "last_fault": last,
            });
            let _ = writeln!(std::io::stdout().lock(), "{v}");
        }
        let mut lost = Vec::new();
        if misses > 0 {
            lost.push(format!(
                "{misses} hit(s) skipped (the thread was already running a probe)"
            ));
        }
        if missed_returns > 0 {
            lost.push(format!(
                "{missed_returns} return(s) missed (longjmp, exception, or deeper than 64 pending returns)"
            ));
        }
        if faults > 0 {
            lost.push(format!(
                "{faults} run(s) faulted{}",
                last.map(|l| format!(" (last: {l})")).unwrap_or_default()
            ));
        }
        if !lost.is_empty() {
            eprintln!(
                "userbpf: process {pid}: {program} at {target}: {}",
                lost.join(", ")
            );
        }
    }

    fn record(&self, map: &str, cpu: Option<usize>, data: &[u8]) {
        let mut out = std::io::stdout().lock();
        if self.json {
            let mut v = serde_json::json!({ "map": map, "data": hex(data) });
            if let Some(c) = cpu {
                v["cpu"] = c.into();
            }
            let _ = writeln!(out, "{v}");
        } else {
            let _ = writeln!(out, "{map}: {}", hex(data));
        }
    }

    fn control(&self, pid: i32, line: &str) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let text = unescape(rest);
        match word {
            "printk" => {
                let msg = String::from_utf8_lossy(&unhex(&text)).into_owned();
                let msg = msg.trim_end_matches('\n');
                let mut out = std::io::stdout().lock();
                if self.json {
                    let v = serde_json::json!({ "pid": pid, "printk": msg });
                    let _ = writeln!(out, "{v}");
                } else {
                    let _ = writeln!(out, "[{pid}] {msg}");
                }
            }
            "error" => eprintln!("userbpf: process {pid}: {text}"),
            "stats" => self.stats(pid, &text),
            "attached" if std::env::var_os("USERBPF_VERBOSE").is_some() => {
                eprintln!("userbpf: process {pid}: attached {text}");
            }
            _ => {}
        }
    }
}

/// `BPF_MAP_TYPE_RINGBUF`.
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
/// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`.
const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = 4;

fn drain(maps: &MapSet, out: &Output) {
    for m in maps.maps() {
        let name = &m.spec().name;
        match m.spec().map_type {
            BPF_MAP_TYPE_RINGBUF => {
                m.ringbuf_consume(|rec| out.record(name, None, rec));
            }
            BPF_MAP_TYPE_PERF_EVENT_ARRAY => {
                let (_, lost) = m.perf_consume(|cpu, rec| out.record(name, Some(cpu), rec));
                if lost > 0 {
                    eprintln!("userbpf: {name}: {lost} records lost (perf buffer full)");
                }
            }
            _ => {}
        }
    }
}

/// A key or value as text: 4- and 8-byte ones as little-endian numbers
/// (the usual ids, counters and sizes), others in hex.
fn number_or_hex(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => u32::from_le_bytes(bytes.try_into().unwrap_or([0; 4])).to_string(),
        8 => u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8])).to_string(),
        _ => hex(bytes),
    }
}

/// A map's contents for people: `KEY => VALUE` lines; array entries that
/// are all zero are counted, not listed.
fn print_map(out: &mut impl Write, m: &userbpf_vm::maps::Map) -> std::io::Result<()> {
    let spec = m.spec();
    // (Buffers stream; libbpf's USDT bookkeeping and .kconfig are not the
    // program's data. --json shows every map.)
    if matches!(
        spec.map_type,
        BPF_MAP_TYPE_RINGBUF | BPF_MAP_TYPE_PERF_EVENT_ARRAY
    ) || spec.name.starts_with("__bpf_usdt_")
        || spec.name == ".kconfig"
    {
        return Ok(());
    }
    writeln!(out, "map {}:", spec.name)?;
    let mut zeros = 0usize;
    for k in m.keys() {
        let Some(v) = m.lookup(&k) else { continue };
        let v = &v[..(spec.value_size as usize).min(v.len())];
        if spec.map_type == 2 && v.iter().all(|b| *b == 0) {
            zeros += 1;
            continue;
        }
        writeln!(out, "  {} => {}", number_or_hex(&k), number_or_hex(v))?;
    }
    if zeros > 0 {
        writeln!(out, "  ({zeros} entries are zero)")?;
    }
    Ok(())
}

pub fn cmd_exec(args: ExecArgs) -> Result<ExitCode> {
    let Some(first) = args.cmd.first() else {
        bail!("no command: userbpf exec OBJ -- CMD ARGS...");
    };
    let object_path = args
        .file
        .canonicalize()
        .with_context(|| args.file.display().to_string())?;
    let object = userbpf::source::load_object(&object_path)?;
    let plan = plan(&args.file, &object, &args.progs)?;
    // Verify here first: a rejection is an error before CMD starts (the
    // agent verifies again in the target).
    if !args.no_verify {
        use userbpf::engine::{verify_object_program, ProgramRefused};
        for (name, _, _) in &plan {
            match verify_object_program(&object, name, true) {
                Ok(_) => {}
                Err(ProgramRefused::Invalid(e)) => bail!("{}: {e}", args.file.display()),
                Err(ProgramRefused::Rejected(e)) => bail!(
                    "{}: {e}\n(the verifier rejected it; `userbpf verify -v` shows why, \
                     `--no-verify` runs it unverified in checked mode)",
                    args.file.display()
                ),
            }
        }
    }
    let exe = find_command(first)?;
    check_reachable(&exe)?;
    let agent = find_agent(args.agent.as_deref())?;
    let session = SessionDir::create(None).context("creating the session directory")?;
    let maps = Arc::new(
        MapSet::create_in(&object, session.path())
            .with_context(|| format!("{}: creating the maps", args.file.display()))?,
    );
    let mut text = format!(
        "object {}\nverify {}\n",
        object_path.display(),
        u8::from(!args.no_verify)
    );
    for (name, hook, target) in &plan {
        text.push_str(&format!("{} {name} {target}\n", hook.word()));
    }
    std::fs::write(session.path().join("session"), text)?;
    let server = ControlServer::bind(&session.control_path())?;
    let mut preload = agent.as_os_str().to_owned();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let mut child = std::process::Command::new(&exe)
        .args(&args.cmd[1..])
        .env("LD_PRELOAD", preload)
        .env(SESSION_ENV, session.path())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let out = Output { json: args.json };
    let mut peers: Vec<ControlPeer> = Vec::new();
    let poll = |peers: &mut Vec<ControlPeer>| {
        let (new, refused) = server.accept_pending();
        for r in refused {
            eprintln!("userbpf: control channel: {}", r.reason);
        }
        peers.extend(new);
        for p in peers.iter_mut() {
            for line in p.read_lines() {
                out.control(p.cred.pid, &line);
            }
        }
        peers.retain(|p| !p.is_closed());
        drain(&maps, &out);
    };
    let status = loop {
        poll(&mut peers);
        match child.try_wait()? {
            Some(status) => break status,
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    // What the last moments left.
    poll(&mut peers);
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let contents = super::map_contents(&maps);
        writeln!(stdout, "{}", serde_json::json!({ "maps": contents }))?;
    } else {
        for m in maps.maps() {
            print_map(&mut stdout, m)?;
        }
    }
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
