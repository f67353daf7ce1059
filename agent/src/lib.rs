//! libuserbpf_agent.so: preloaded (`LD_PRELOAD`) into a process that
//! `userbpf exec` starts, it joins the session named by `USERBPF_SESSION`
//! before `main` runs: it connects to the session's control socket, opens
//! the session's maps (shared memory files), loads the object, verifies
//! and JIT-compiles its programs and attaches them inside the process. It
//! reports what it attached (or why it could not) and streams
//! `bpf_trace_printk` output over the control socket.
//!
//! Nothing here may take the process down: every failure is reported and
//! the program runs on untraced. Processes the target starts with `exec`
//! load the agent again (the environment carries it) and join too;
//! forked children keep their parent's hooks and share its maps.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use userbpf::probe::{self, AttachOptions, UprobeLink};
use userbpf_shims::session::{ControlClient, SESSION_ENV};
use userbpf_vm::maps::MapSet;
use userbpf_vm::Helpers;

/// An attached program (dropping it would detach).
enum Link {
    Uprobe(UprobeLink),
    Usdt(userbpf::usdt::UsdtLink),
    Syscall(userbpf::syscall::SyscallProbeLink),
}

impl Link {
    /// Hits skipped (re-entered, or no VM for the thread), returns
    /// missed, runs that faulted, and the last fault.
    fn counters(&self) -> (u64, u64, u64, Option<String>) {
        match self {
            Link::Uprobe(l) => {
                let s = l.stats();
                let (faults, last) = l.probe().faults();
                // (The site's returns: a uretprobe's concern only.)
                let missed_returns = match l.kind() {
                    userbpf_shims::hook::ProbeKind::Return => s.missed_returns,
                    _ => 0,
                };
                (s.misses, missed_returns, faults, last)
            }
            Link::Usdt(l) => {
                let (faults, last) = l.faults();
                (l.stats().misses, 0, faults, last)
            }
            Link::Syscall(l) => {
                let (faults, last) = l.faults();
                (l.misses(), 0, faults, last)
            }
        }
    }
}

/// What the agent keeps for the life of the process: the control
/// channel, and each attached program with its name and target.
struct Joined {
    client: Arc<ControlClient>,
    links: Vec<JoinedLink>,
}

/// An attached program, and its counters when this process began (a fork
/// child inherits its parent's: it reports its own only).
struct JoinedLink {
    link: Link,
    program: String,
    target: String,
    base: (u64, u64, u64),
}

/// In a fork child: the counters so far are the parent's.
extern "C" fn rebase_after_fork() {
    if let Ok(mut joined) = JOINED.try_lock() {
        for j in joined.iter_mut() {
            for l in &mut j.links {
                let (m, r, f, _) = l.link.counters();
                l.base = (m, r, f);
            }
        }
    }
}

/// At exit: each program's counters to the tracer (`stats PID PROGRAM
/// TARGET MISSES MISSED_RETURNS FAULTS [LAST FAULT]`), which reports what was
/// lost. (Never blocks: a process exiting while another thread holds the
/// list skips the report.)
extern "C" fn report_at_exit() {
    // Userbpf's own work: the process's hooks do not see it.
    let _ = std::panic::catch_unwind(|| {
        userbpf_vm::quiet::scope(|| {
            let Ok(joined) = JOINED.try_lock() else {
                return;
            };
            for j in joined.iter() {
                for l in &j.links {
                    let (misses, missed_returns, faults, last) = l.link.counters();
                    let (misses, missed_returns, faults) = (
                        misses.saturating_sub(l.base.0),
                        missed_returns.saturating_sub(l.base.1),
                        faults.saturating_sub(l.base.2),
                    );
                    let last = last.filter(|_| faults > 0);
                    // (The pid: a fork child shares its parent's connection,
                    // whose peer credentials name the parent.)
                    let mut line = format!(
                        "{} {} {} {misses} {missed_returns} {faults}",
                        std::process::id(),
                        l.program,
                        l.target
                    );
                    if let Some(last) = last {
                        line.push(' ');
                        line.push_str(&last);
                    }
                    let _ = j.client.send("stats", &line);
                }
            }
        })
    });
}

static JOINED: Mutex<Vec<Joined>> = Mutex::new(Vec::new());

/// One line of the session file: a program and where it goes.
struct Attach {
    /// `attach` (uprobe), `usdt` or `syscall`.
    kind: &'static str,
    program: String,
    target: String,
}

/// The session file (`session` in the directory), written by the tracer:
/// `object PATH`, `verify 0|1`, then `attach PROGRAM TARGET` (uprobes)
/// `usdt PROGRAM BINARY:PROVIDER:NAME` and `syscall PROGRAM SECTION`
/// lines.
struct SessionFile {
    object: PathBuf,
    verify: bool,
    attach: Vec<Attach>,
}

fn read_session(dir: &Path) -> Result<SessionFile, String> {
    let path = dir.join("session");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut object = None;
    let mut verify = true;
    let mut attach = Vec::new();
    for line in text.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "object" => object = Some(PathBuf::from(rest)),
            "verify" => verify = rest != "0",
            "attach" | "usdt" | "syscall" => {
                let (program, target) = rest
                    .split_once(' ')
                    .ok_or_else(|| format!("{}: bad line `{line}`", path.display()))?;
                attach.push(Attach {
                    kind: match word {
                        "usdt" => "usdt",
                        "syscall" => "syscall",
                        _ => "attach",
                    },
                    program: program.to_string(),
                    target: target.to_string(),
                });
            }
            _ => {}
        }
    }
    Ok(SessionFile {
        object: object.ok_or_else(|| format!("{}: no `object` line", path.display()))?,
        verify,
        attach,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Attaches a USDT program at `BINARY:PROVIDER:NAME` (the binary may
/// hold `:`: the last two fields are the probe's).
fn usdt_attach(
    object: &userbpf_vm::object::Object,
    maps: &Arc<MapSet>,
    a: &Attach,
    verify: bool,
    helpers: &Helpers,
) -> Result<(Link, String), String> {
    let mut parts = a.target.rsplitn(3, ':');
    let (Some(name), Some(provider), Some(binary)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "program `{}`: `{}` is not BINARY:PROVIDER:NAME",
            a.program, a.target
        ));
    };
    let options = userbpf::usdt::UsdtOptions {
        verify,
        helpers: Some(helpers.clone()),
        ..userbpf::usdt::UsdtOptions::default()
    };
    let link =
        userbpf::usdt::attach_usdt(object, maps, &a.program, binary, provider, name, &options)
            .map_err(|e| e.to_string())?;
    let sites = link.sites().len();
    Ok((Link::Usdt(link), format!("{sites} site(s)")))
}

fn join(dir: &Path) -> Result<(), String> {
    let client = Arc::new(
        ControlClient::connect(dir).map_err(|e| format!("connecting to {}: {e}", dir.display()))?,
    );
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let _ = client.send("hello", &exe);
    let result = (|| -> Result<Vec<JoinedLink>, String> {
        let session = read_session(dir)?;
        let object = userbpf::source::load_object(&session.object).map_err(|e| e.to_string())?;
        let maps = Arc::new(
            MapSet::open_in(&object, dir)
                .map_err(|e| format!("{}: the session's maps: {e}", session.object.display()))?,
        );
        userbpf::engine::Engine::Jit.install();
        let sink_client = Arc::clone(&client);
        let helpers = Helpers::kernel_basics_with_trace(Arc::new(move |msg: &[u8]| {
            let _ = sink_client.send("printk", &hex(msg));
        }));
        let mut links = Vec::new();
        for a in &session.attach {
            let attached = if a.kind == "usdt" {
                usdt_attach(&object, &maps, a, session.verify, &helpers)
            } else if a.kind == "syscall" {
                let options = userbpf::syscall::SyscallOptions {
                    verify: session.verify,
                    helpers: Some(helpers.clone()),
                };
                userbpf::syscall::attach(&object, &maps, &a.program, &options)
                    .map(|l| (Link::Syscall(l), "syscalls".to_string()))
                    .map_err(|e| e.to_string())
            } else {
                let options = AttachOptions {
                    verify: session.verify,
                    helpers: Some(helpers.clone()),
                    ..AttachOptions::default()
                };
                probe::attach(&object, &maps, &a.program, &a.target, &options)
                    .map(|l| {
                        let addr = l.address();
                        (Link::Uprobe(l), format!("{addr:#x}"))
                    })
                    .map_err(|e| e.to_string())
            };
            match attached {
                Ok((link, at)) => {
                    let _ = client.send("attached", &format!("{} {} {at}", a.program, a.target));
                    links.push(JoinedLink {
                        link,
                        program: a.program.clone(),
                        target: a.target.clone(),
                        base: (0, 0, 0),
                    });
                }
                Err(e) => {
                    let _ = client.send("error", &e);
                }
            }
        }
        Ok(links)
    })();
    match result {
        Ok(links) => {
            let _ = client.send("ready", &links.len().to_string());
            if let Ok(mut j) = JOINED.lock() {
                if j.is_empty() && !links.is_empty() {
                    // SAFETY: registering plain extern "C" functions.
                    unsafe {
                        libc::atexit(report_at_exit);
                        libc::pthread_atfork(None, None, Some(rebase_after_fork));
                    }
                }
                j.push(Joined { client, links });
            }
            Ok(())
        }
        Err(e) => {
            let _ = client.send("error", &e);
            let _ = client.send("ready", "0");
            Err(e)
        }
    }
}

/// Runs before the process's `main`.
#[ctor::ctor(unsafe)]
fn userbpf_agent_start() {
    let Some(dir) = std::env::var_os(SESSION_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    // Userbpf's own work: the hooks it attaches do not see it.
    match std::panic::catch_unwind(|| userbpf_vm::quiet::scope(|| join(&dir))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("userbpf agent: {e}"),
        Err(_) => eprintln!("userbpf agent: internal error (panic); the process runs untraced"),
    }
}
