//! The `userbpf` command line.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

mod cli_exec;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::sync::Arc;
use userbpf::engine::Engine;
use userbpf::hex::parse_hex_bytes;
use userbpf::source::{load_program, source_kind, SourceKind};

use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::maps::MapSet;
use userbpf_vm::object::{LoadOptions, TargetBtf};
use userbpf_vm::{conformance, disasm, Config, Helpers, Program, Vm};

/// userbpf: verify eBPF programs and run them in user space, JIT-compiled:
/// once (`run`), or attached inside a process (`exec`: uprobes, uretprobes,
/// USDT probes and syscall hooks).
#[derive(Parser, Debug)]
#[command(name = "userbpf", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EngineArg {
    /// The checked interpreter.
    Interp,
    /// The Cranelift JIT (checked mode; programs above its size limit run
    /// in the interpreter, with a note).
    Jit,
}

impl From<EngineArg> for Engine {
    fn from(e: EngineArg) -> Engine {
        match e {
            EngineArg::Interp => Engine::Interp,
            EngineArg::Jit => Engine::Jit,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Assemble a program (conformance-suite or llvm-objdump C-like syntax)
    /// into raw bytecode.
    Asm {
        /// Assembler text.
        file: PathBuf,
        /// Output file (default: FILE with the extension `.bin`).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Disassemble raw bytecode (or assembler text) into the C-like syntax of
    /// llvm-objdump and bpftool.
    Disasm {
        /// Raw bytecode (`.bin`) or assembler text (`.s`).
        file: PathBuf,
        /// Program to show, for ELF objects.
        #[arg(long)]
        prog: Option<String>,
        /// Resolve CO-RE relocations against this BTF file (raw BTF, like
        /// /sys/kernel/btf/vmlinux) instead of the running kernel's, or the
        /// built-in BTF when the kernel exposes none (libbpf's
        /// btf_custom_path).
        #[arg(long, value_name = "FILE")]
        btf: Option<PathBuf>,
    },
    /// List the programs (section, kind, attach target, instructions) and maps
    /// (type, key/value size, max entries) of a BPF object.
    Inspect {
        /// A BPF ELF object (`clang -target bpf`).
        file: PathBuf,
        /// Resolve CO-RE relocations against this BTF file (raw BTF, like
        /// /sys/kernel/btf/vmlinux) instead of the running kernel's, or the
        /// built-in BTF when the kernel exposes none (libbpf's
        /// btf_custom_path).
        #[arg(long, value_name = "FILE")]
        btf: Option<PathBuf>,
    },
    /// Run a command with the agent preloaded and the object's user-space
    /// programs (uprobes, uretprobes) attached inside it; stream their
    /// ring-buffer and perf-buffer records and trace_printk lines, and
    /// print the maps when the command exits. The exit status is the
    /// command's.
    Exec {
        /// A BPF ELF object.
        file: PathBuf,
        /// A program to attach, with its target unless its section names
        /// one (`uprobe/BINARY:FUNCTION`): NAME or NAME=BINARY:FUNCTION[+OFF]
        /// (BINARY: a path, a library such as libc.so.6, or `self` for the
        /// command's executable). Default: every program whose section
        /// names its target.
        #[arg(long = "prog", value_name = "NAME[=TARGET]")]
        progs: Vec<String>,
        /// One JSON object per line for each record and message, and the
        /// maps at the end as {"maps": {"NAME": [["KEY_HEX", "VALUE_HEX"], ...]}}.
        #[arg(long)]
        json: bool,
        /// Skip the verifier: the programs run in checked mode.
        #[arg(long)]
        no_verify: bool,
        /// The agent library (default: libuserbpf_agent.so next to userbpf,
        /// or $USERBPF_AGENT).
        #[arg(long, value_name = "PATH")]
        agent: Option<PathBuf>,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<std::ffi::OsString>,
    },
    /// Run a program once (or N times) and print r0.
    ///
    /// r1 points to the memory given with --mem/--mem-file (r1 = 0 without
    /// one) and r2 holds its length. Helpers use the kernel's ids; those that
    /// need no maps (bpf_ktime_get_ns, bpf_get_current_pid_tgid, ...) are
    /// available.
    Run {
        /// Raw bytecode (`.bin`) or assembler text (`.s`).
        file: PathBuf,
        /// Program to run, for ELF objects.
        #[arg(long)]
        prog: Option<String>,
        /// Input memory as hex bytes ("11 22 33" or "112233").
        #[arg(long, conflicts_with = "mem_file")]
        mem: Option<String>,
        /// Input memory from a file.
        #[arg(long)]
        mem_file: Option<PathBuf>,
        /// Execution engine.
        #[arg(long, value_enum, default_value = "interp")]
        engine: EngineArg,
        /// Run N times (on the same memory: stores persist across runs) and
        /// report the mean time per run.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        repeat: Option<u64>,
        /// Instructions allowed per run before the run is stopped (checked
        /// mode's guard against unbounded loops).
        #[arg(long, value_name = "N", default_value_t = userbpf_vm::interp::DEFAULT_BUDGET,
              value_parser = clap::value_parser!(u64).range(1..))]
        budget: u64,
        /// Print one JSON object: program, engine, r0, runs, ns_per_run (and
        /// maps, for objects).
        #[arg(long)]
        json: bool,
        /// Set a global variable of an object before its maps are created
        /// (`const volatile` configuration, as libbpf-tools set `targ_pid`):
        /// an integer (decimal, 0x hex, negative), true/false, or a string
        /// for a char array. Repeatable.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Resolve `__kconfig` externs from this `.config` file instead of
        /// the running kernel's (/proc/config.gz or /boot/config-$(uname -r)).
        #[arg(long, value_name = "FILE")]
        kconfig: Option<PathBuf>,
        /// Resolve CO-RE relocations against this BTF file (raw BTF, like
        /// /sys/kernel/btf/vmlinux) instead of the running kernel's, or the
        /// built-in BTF when the kernel exposes none (libbpf's
        /// btf_custom_path).
        #[arg(long, value_name = "FILE")]
        btf: Option<PathBuf>,
        /// With --engine jit: print the native code (Cranelift's
        /// disassembly) before running (on standard error with --json).
        #[arg(long)]
        dump_asm: bool,
        /// Run the program without verifying it first: it runs in checked
        /// mode (every access checked, faults reported), never in the
        /// JIT's unchecked mode. By default a program the verifier rejects
        /// does not run.
        #[arg(long)]
        no_verify: bool,
    },
    /// Verify the programs of a BPF object (or raw bytecode): print
    /// `accepted` or `rejected` with the pc, the instruction and the
    /// kernel's message, and the statistics (instructions processed,
    /// states, time). Exits with 1 when a program is rejected.
    Verify {
        /// A BPF ELF object, raw bytecode (`.bin`) or assembler text (`.s`).
        file: PathBuf,
        /// Only this program of the object.
        #[arg(long)]
        prog: Option<String>,
        /// Print the verifier log: every instruction processed with the
        /// state before it (the kernel's log_level 2).
        #[arg(short, long)]
        verbose: bool,
        /// Raw bytecode: the size of the buffer r1 points to (r2 holds it;
        /// 0: r1 and r2 are 0), as `run --mem` passes it.
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        mem_size: u32,
        /// Resolve CO-RE relocations, and check reads of kernel
        /// structures (`bpf_get_current_task_btf`), against this BTF file
        /// instead of the running kernel's.
        #[arg(long, value_name = "FILE")]
        btf: Option<PathBuf>,
    },
    /// Act as a bpf_conformance plugin: read the program as hex bytes on
    /// stdin, run it with MEM_HEX as memory, print r0 in hex. Helper 5 is the
    /// suite's `unwind`.
    ConformancePlugin {
        /// Input memory as hex bytes.
        mem_hex: Option<String>,
        /// Execution engine.
        #[arg(long, value_enum, default_value = "interp")]
        engine: EngineArg,
        /// The program on stdin is an ELF object (bpf_conformance --elf).
        #[arg(long)]
        elf: bool,
    },
}

/// The bpf_conformance runner passes the test's memory *before* the plugin
/// options (`userbpf MEM_HEX conformance-plugin ...` when the options are
/// `conformance-plugin ...`): put the subcommand first so that
/// `--plugin_path userbpf --plugin_options conformance-plugin` works.
fn plugin_argv(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    if let Some(pos) = args.iter().position(|a| a == "conformance-plugin") {
        if pos > 1 {
            let sub = args.remove(pos);
            args.insert(1, sub);
        }
    }
    args
}

/// The error and its causes, each once (library errors often include
/// their source in their own message already).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if text.contains(&c) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&c);
    }
    text
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of our
    // output goes away (`userbpf disasm x.o | head`).
    // SAFETY: restoring the default disposition of SIGPIPE before any
    // thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse_from(plugin_argv(std::env::args_os().collect()));
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("userbpf: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Asm { file, output } => cmd_asm(&file, output.as_deref()),
        Cmd::Disasm { file, prog, btf } => cmd_disasm(&file, prog.as_deref(), btf),
        Cmd::Inspect { file, btf } => cmd_inspect(&file, btf),
        Cmd::Exec {
            file,
            progs,
            json,
            no_verify,
            agent,
            cmd,
        } => cli_exec::cmd_exec(cli_exec::ExecArgs {
            file,
            progs,
            json,
            no_verify,
            agent,
            cmd,
        }),
        Cmd::Run {
            file,
            prog,
            mem,
            mem_file,
            engine,
            repeat,
            budget,
            json,
            set,
            kconfig,
            btf,
            dump_asm,
            no_verify,
        } => cmd_run(RunArgs {
            file,
            prog,
            mem,
            mem_file,
            engine: engine.into(),
            repeat,
            budget,
            json,
            set,
            kconfig,
            btf,
            dump_asm,
            no_verify,
        }),
        Cmd::Verify {
            file,
            prog,
            verbose,
            mem_size,
            btf,
        } => cmd_verify(&file, prog.as_deref(), verbose, mem_size, btf),
        Cmd::ConformancePlugin {
            mem_hex,
            engine,
            elf,
        } => cmd_plugin(mem_hex.as_deref(), engine.into(), elf),
    }
}

fn cmd_verify(
    file: &Path,
    prog: Option<&str>,
    verbose: bool,
    mem_size: u32,
    btf: Option<PathBuf>,
) -> Result<ExitCode> {
    use userbpf_verifier::{check, Env, Options};
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let opts = Options {
        log_level: if verbose { 2 } else { 0 },
        ..Options::default()
    };
    let mut jobs: Vec<(Program, Env)> = Vec::new();
    if source_kind(file, &bytes) == SourceKind::Elf {
        let kernel_btf = match &btf {
            Some(path) => Some(
                TargetBtf::File(path.clone())
                    .load()
                    .map_err(anyhow::Error::msg)?
                    .btf,
            ),
            None => None,
        };
        let object = userbpf::source::load_object_with(file, &load_options(btf))?;
        for p in &object.programs {
            if prog.is_some_and(|name| name != p.name) {
                continue;
            }
            let program = p.to_program().with_context(|| file.display().to_string())?;
            let mut env = Env::for_object(&object, p);
            env.kernel_btf.clone_from(&kernel_btf);
            jobs.push((program, env));
        }
        if let Some(name) = prog {
            if jobs.is_empty() {
                object.program(name)?;
            }
        }
    } else {
        jobs.push((load_program(file, prog)?, Env::raw(mem_size)));
    }
    let mut all_ok = true;
    for (program, env) in &jobs {
        match check(program, env, &opts, None) {
            Ok(report) => {
                if verbose {
                    print!("{}", report.log);
                }
                println!("{}: accepted ({})", program.name(), report.stats);
            }
            Err(e) => {
                all_ok = false;
                if verbose {
                    print!("{}", e.log);
                }
                println!(
                    "{}: rejected at pc {}: {}\n  {}: {}\n  ({})",
                    program.name(),
                    e.pc,
                    e.message,
                    e.pc,
                    e.insn,
                    e.stats
                );
            }
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cmd_asm(file: &Path, output: Option<&Path>) -> Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    if source_kind(file, &bytes) == SourceKind::Elf {
        bail!("{}: is an ELF object, not assembler text", file.display());
    }
    let text = std::str::from_utf8(&bytes)
        .with_context(|| format!("{}: assembler text must be UTF-8", file.display()))?;
    let insns = userbpf_vm::asm::assemble(text).with_context(|| file.display().to_string())?;
    let name = userbpf::source::program_name(file);
    let program = Program::new(name, insns).with_context(|| file.display().to_string())?;
    let out = match output {
        Some(o) => o.to_path_buf(),
        None => file.with_extension("bin"),
    };
    std::fs::write(&out, program.to_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "{}: {} instructions -> {}",
        file.display(),
        program.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Load options with the target BTF of `--btf`.
fn load_options(btf: Option<PathBuf>) -> LoadOptions<'static> {
    LoadOptions {
        target_btf: btf.map(TargetBtf::File).unwrap_or_default(),
        ..LoadOptions::default()
    }
}

fn cmd_disasm(file: &Path, prog: Option<&str>, btf: Option<PathBuf>) -> Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    if source_kind(file, &bytes) == SourceKind::Elf {
        let object = userbpf::source::load_object_with(file, &load_options(btf))?;
        let mut out = std::io::stdout().lock();
        for p in &object.programs {
            if prog.is_some_and(|n| n != p.name) {
                continue;
            }
            writeln!(out, "{} (SEC(\"{}\")):", p.name, p.kind.section)?;
            let text = disasm::disassemble(&p.insns)?;
            for line in text.lines() {
                let pc: usize = line
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .parse()
                    .unwrap_or(usize::MAX);
                if let Some((name, _)) = p.subprograms.iter().find(|(_, start)| *start == pc) {
                    writeln!(out, "{name}:")?;
                }
                let note = p
                    .insns
                    .get(pc)
                    .and_then(|_| map_reference(&object, &p.insns, pc))
                    .or_else(|| {
                        p.core_failure_at(pc)
                            .map(|f| format!("unresolved CO-RE relocation: {}", f.what))
                    });
                match note {
                    Some(what) => writeln!(out, "{line}  ; {what}")?,
                    None => writeln!(out, "{line}")?,
                }
            }
        }
        if let Some(name) = prog {
            object.program(name)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let program = load_program(file, prog)?;
    let text = disasm::disassemble(program.insns())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}:", program.name())?;
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// What the lddw at `pc` refers to, by name: the map (`counts`), or the
/// global variable of a data map (`.bss: last_key`, `.kconfig: CONFIG_HZ`).
fn map_reference(
    object: &userbpf_vm::object::Object,
    insns: &[userbpf_vm::insn::Insn],
    pc: usize,
) -> Option<String> {
    use userbpf_vm::insn::op;
    let insn = insns.get(pc)?;
    if insn.code != op::LDDW {
        return None;
    }
    let map = object.maps.get(usize::try_from(insn.imm).ok()?)?;
    match insn.src {
        op::PSEUDO_MAP_IDX => Some(map.name.clone()),
        op::PSEUDO_MAP_IDX_VALUE => {
            let off = u32::try_from(insns.get(pc + 1)?.imm).ok()?;
            let var = map
                .vars
                .iter()
                .find(|v| v.offset <= off && off < v.offset + v.size.max(1));
            Some(match var {
                Some(v) if v.offset == off => format!("{}: {}", map.name, v.name),
                Some(v) => format!("{}: {}+{}", map.name, v.name, off - v.offset),
                None => map.name.clone(),
            })
        }
        _ => None,
    }
}

fn cmd_inspect(file: &Path, btf: Option<PathBuf>) -> Result<ExitCode> {
    let object = userbpf::source::load_object_with(file, &load_options(btf))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: license {:?}",
        file.display(),
        object.license.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "programs:")?;
    writeln!(
        out,
        "  {:<24} {:<28} {:<34} {:<24} {:>6}",
        "name", "section", "type", "attach target", "insns"
    )?;
    for p in &object.programs {
        writeln!(
            out,
            "  {:<24} {:<28} {:<34} {:<24} {:>6}",
            p.name,
            p.kind.section,
            p.kind.prog_type.kernel_name(),
            p.kind.target.to_string(),
            p.insns.len()
        )?;
    }
    writeln!(out, "maps:")?;
    writeln!(
        out,
        "  {:<24} {:>5} {:>8} {:>10} {:>11} {:>8}",
        "name", "type", "key", "value", "max_entries", "flags"
    )?;
    for m in &object.maps {
        writeln!(
            out,
            "  {:<24} {:>5} {:>8} {:>10} {:>11} {:>#8x}",
            m.name, m.map_type, m.key_size, m.value_size, m.max_entries, m.flags
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// How `--mem` reaches a program.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PacketKind {
    /// As raw context memory (r1 = mem, r2 = length).
    Raw,
    /// As the packet of a `struct xdp_md`.
    Xdp,
    /// As the packet of a `struct __sk_buff` (`l2`: from the Ethernet header).
    Skb { l2: bool },
}

struct RunArgs {
    file: PathBuf,
    prog: Option<String>,
    mem: Option<String>,
    mem_file: Option<PathBuf>,
    engine: Engine,
    repeat: Option<u64>,
    budget: u64,
    json: bool,
    set: Vec<String>,
    kconfig: Option<PathBuf>,
    btf: Option<PathBuf>,
    dump_asm: bool,
    no_verify: bool,
}

/// Verifies `program` in `env` for `userbpf run`: a rejection stops the
/// run; an accepted program's proof lets the JIT drop run-time checks.
/// Returns the context bytes the program needs.
fn verify_for_run(
    file: &Path,
    program: &Program,
    env: &userbpf_verifier::Env,
    origin: Option<&userbpf_vm::object::ObjProgram>,
) -> Result<u32> {
    let (proof, report) =
        userbpf_verifier::verify(program.clone(), env, &userbpf_verifier::Options::default())
            .map_err(|e| {
                // A poisoned CO-RE relocation explains its instruction.
                let core = origin
                    .and_then(|p| p.core_failure_at(e.pc))
                    .map(|f| format!("\n{f}"))
                    .unwrap_or_default();
                anyhow::anyhow!(
                    "{}: {e}{core}\n(the verifier rejected it; `userbpf verify -v` shows why, `--no-verify` runs it unverified in checked mode)",
                    file.display()
                )
            })?;
    userbpf::engine::add_proof(proof);
    Ok(report.stats.max_ctx_offset)
}

fn cmd_run(args: RunArgs) -> Result<ExitCode> {
    if args.dump_asm && args.engine != Engine::Jit {
        bail!("--dump-asm shows the JIT's code: add --engine jit");
    }
    args.engine.install();
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    // Objects bring their maps: create them and bind the map helpers.
    let mut packet_kind = PacketKind::Raw;
    // Tracing programs: the kernel's context size (the context is padded
    // with zeros to it) and whether it starts with the registers.
    let mut trace_ctx: Option<(usize, bool)> = None;
    // The context bytes the verifier saw the program use.
    let mut ctx_need = 0usize;
    let (program, maps, object) = if source_kind(&args.file, &bytes) == SourceKind::Elf {
        let config = match &args.kconfig {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--kconfig {}", path.display()))?;
                use userbpf_vm::object::KernelConfig;
                let mut config = KernelConfig::parse(&text);
                if let Some(release) = KernelConfig::running_release() {
                    config = config.with_release(&release);
                }
                Some(config)
            }
        };
        let options = LoadOptions {
            kconfig: config.as_ref(),
            ..load_options(args.btf.clone())
        };
        let mut object = userbpf::source::load_object_with(&args.file, &options)?;
        for assignment in &args.set {
            let (name, value) = assignment
                .split_once('=')
                .with_context(|| format!("--set {assignment}: expected NAME=VALUE"))?;
            let var = object.global(name).with_context(|| {
                format!(
                    "--set {name}: {} has no global variable `{name}`",
                    args.file.display()
                )
            })?;
            let bytes = global_value(value, var.size as usize)
                .with_context(|| format!("--set {assignment}"))?;
            object.set_global(name, &bytes)?;
        }
        let object = object;
        let p = userbpf::source::select_program(&args.file, &object, args.prog.as_deref())?;
        let program = p
            .to_program()
            .with_context(|| args.file.display().to_string())?;
        let maps = MapSet::from_object(&object).with_context(|| args.file.display().to_string())?;
        use userbpf_vm::object::ProgramType as T;
        trace_ctx = userbpf_vm::context::trace::context_size(&p.kind)
            .map(|size| (size, matches!(p.kind.prog_type, T::Kprobe | T::PerfEvent)));
        packet_kind = match p.kind.prog_type {
            T::Xdp => PacketKind::Xdp,
            T::SchedCls | T::SchedAct => PacketKind::Skb { l2: true },
            T::SocketFilter | T::CgroupSkb => PacketKind::Skb { l2: false },
            _ => PacketKind::Raw,
        };
        let entry = p.name.clone();
        if !args.no_verify {
            let env = userbpf_verifier::Env::for_object(&object, p);
            // The context is --mem, padded to what the program reads
            // (packet programs get theirs built).
            ctx_need = verify_for_run(&args.file, &program, &env, Some(p))? as usize;
            // Programs reachable through program arrays run too.
            for def in &object.maps {
                if def.map_type != 3 {
                    continue;
                }
                for (_, name) in &def.initial_slots {
                    if let Ok(target) = object.program(name) {
                        let tp = target
                            .to_program()
                            .with_context(|| args.file.display().to_string())?;
                        let env = userbpf_verifier::Env::for_object(&object, target);
                        verify_for_run(&args.file, &tp, &env, Some(target))?;
                    }
                }
            }
        }
        (program, Some(Arc::new(maps)), Some((object, entry)))
    } else {
        if !args.set.is_empty() {
            bail!(
                "--set applies to the global variables of BPF objects; {} is not one",
                args.file.display()
            );
        }
        (load_program(&args.file, args.prog.as_deref())?, None, None)
    };
    let mut mem = match (&args.mem, &args.mem_file) {
        (Some(hex), _) => parse_hex_bytes(hex).context("--mem")?,
        (None, Some(path)) => {
            std::fs::read(path).with_context(|| format!("--mem-file {}", path.display()))?
        }
        (None, None) => Vec::new(),
    };
    if object.is_none() && !args.no_verify {
        // Raw bytecode runs on the --mem buffer: r1 points to it, r2 is its
        // length.
        let len = u32::try_from(mem.len()).context("--mem: larger than 4 GiB")?;
        verify_for_run(&args.file, &program, &userbpf_verifier::Env::raw(len), None)?;
    }
    let config = Config {
        budget: Some(args.budget),
    };
    let helpers = Helpers::kernel_basics();
    let mut vm = match (&maps, &object) {
        // Objects: the program with its maps, program arrays filled.
        (Some(set), Some((obj, entry))) => set
            .vm_for_object(obj, entry, &helpers, config)
            .map_err(anyhow::Error::from),
        _ => PreparedProgram::new(&program, &helpers, config)
            .map(|p| Vm::from_prepared(Arc::new(p)))
            .map_err(anyhow::Error::from),
    }
    .with_context(|| args.file.display().to_string())?;
    if let Some((size, _)) = trace_ctx {
        if mem.len() < size {
            mem.resize(size, 0);
        }
    }
    if packet_kind == PacketKind::Raw && mem.len() < ctx_need {
        mem.resize(ctx_need, 0);
    }
    if args.dump_asm {
        let options = userbpf_jit::Options {
            keep_asm: true,
            ..Default::default()
        };
        let proof = userbpf::engine::proof_for(vm.prepared());
        let code = match &proof {
            Some(verified) => userbpf_jit::compile_verified(verified, options),
            None => userbpf_jit::compile_checked(vm.prepared(), options),
        }
        .with_context(|| args.file.display().to_string())?;
        let text =
            format!(
            "; {} ({} mode): {} bytes of x86-64, compiled in {:?}; loops proven on entry: {}\n{}",
            program.name(),
            if proof.is_some() { "verified" } else { "checked" },
            code.code_size(),
            code.compile_time(),
            code.proven_loops().unwrap_or(0),
            code.asm().unwrap_or("")
        );
        if args.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
    let runs = args.repeat.unwrap_or(1);
    let start = Instant::now();
    let mut r0 = 0;
    for _ in 0..runs {
        // Packet programs: --mem is the packet, behind the kernel's context
        // (struct xdp_md or struct __sk_buff); others get it as raw memory.
        let out = match packet_kind {
            PacketKind::Xdp => Some(userbpf_vm::context::run_xdp(&mut vm, &mem)),
            PacketKind::Skb { l2 } => Some(userbpf_vm::context::run_skb(&mut vm, &mem, l2)),
            PacketKind::Raw => None,
        };
        r0 = match out {
            Some(out) => {
                let out = out.with_context(|| args.file.display().to_string())?;
                mem = out.packet;
                out.r0
            }
            None => {
                if let Some((_, true)) = trace_ctx {
                    // uprobes, USDT, perf events: the registers of the event
                    // are the context (for bpf_get_stack, bpf_get_func_ip).
                    let ip = userbpf_vm::context::PtRegs::from_bytes(&mem).map_or(0, |r| r.ip);
                    vm.set_hook_info(userbpf_vm::HookInfo {
                        func_ip: ip,
                        user_regs: Some(mem.as_ptr() as u64),
                        ..userbpf_vm::HookInfo::default()
                    });
                }
                vm.run(&mut mem)
                    .map_err(|fault| explain_fault(fault, object.as_ref()))
                    .with_context(|| args.file.display().to_string())?
            }
        };
    }
    let elapsed = start.elapsed();
    // The engine that ran: the interpreter when the JIT fell back (a
    // program above its size limit).
    let engine = match args.engine {
        Engine::Jit if vm.prepared().compiled().is_none() => Engine::Interp,
        e => e,
    };
    drop(vm);
    let ns_per_run = elapsed.as_secs_f64() * 1e9 / runs as f64;
    if args.json {
        let report = RunReport {
            program: program.name(),
            engine: engine.name(),
            verified: !args.no_verify,
            r0,
            runs,
            ns_per_run,
            maps: maps.as_deref().map(map_contents),
        };
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("r0 = {r0} ({r0:#x})");
        if args.repeat.is_some() {
            println!("{runs} runs, {ns_per_run:.1} ns/run");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A run-time fault, with the failed CO-RE relocation it comes from when
/// the program ran into a poisoned instruction.
fn explain_fault(
    fault: userbpf_vm::interp::Fault,
    object: Option<&(userbpf_vm::object::Object, String)>,
) -> anyhow::Error {
    let failure = (fault.kind == userbpf_vm::interp::FaultKind::PoisonedCoreRelocation)
        .then(|| {
            object?
                .0
                .program(&fault.program)
                .ok()?
                .core_failure_at(fault.pc)
        })
        .flatten();
    match failure {
        Some(f) => anyhow::Error::new(fault).context(f.to_string()),
        None => anyhow::Error::new(fault),
    }
}

/// The bytes of `--set` VALUE for a variable of `size` bytes.
fn global_value(value: &str, size: usize) -> Result<Vec<u8>> {
    let int = match value {
        "true" => Some(1i128),
        "false" => Some(0),
        v => {
            let (neg, digits) = match v.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, v),
            };
            let parsed = match digits
                .strip_prefix("0x")
                .or_else(|| digits.strip_prefix("0X"))
            {
                Some(h) => i128::from_str_radix(h, 16).ok(),
                None => digits.parse::<i128>().ok(),
            };
            parsed.map(|p| if neg { -p } else { p })
        }
    };
    match int {
        Some(n) if matches!(size, 1 | 2 | 4 | 8) => {
            let bits = size * 8;
            let min = -(1i128 << (bits - 1));
            let max = (1i128 << bits) - 1;
            if n < min || n > max {
                bail!("{n} does not fit in {size} bytes");
            }
            Ok((n as u128 as u64).to_le_bytes()[..size].to_vec())
        }
        Some(_) => bail!("an integer cannot set a {size}-byte variable"),
        None => {
            let mut b = value.as_bytes().to_vec();
            if b.len() >= size {
                bail!("the string is longer than the {size}-byte variable allows");
            }
            b.resize(size, 0);
            Ok(b)
        }
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Map contents for `--json`: `{NAME: [[KEY_HEX, VALUE_HEX], ...]}`.
fn map_contents(set: &MapSet) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for m in set.maps() {
        let entries: Vec<serde_json::Value> = m
            .keys()
            .into_iter()
            .filter_map(|k| {
                let v = m.lookup(&k)?;
                Some(match m.percpu_slots() {
                    // Per-CPU maps: one value string per CPU.
                    Some(n) => {
                        let stride = v.len() / n.max(1);
                        let size = (m.spec().value_size as usize).min(stride);
                        let per_cpu: Vec<String> = v
                            .chunks(stride.max(1))
                            .map(|c| hex_string(&c[..size]))
                            .collect();
                        serde_json::json!([hex_string(&k), per_cpu])
                    }
                    None => serde_json::json!([hex_string(&k), hex_string(&v)]),
                })
            })
            .collect();
        out.insert(m.spec().name.clone(), serde_json::Value::Array(entries));
    }
    out
}

/// The `--json` output of `userbpf run`, fields in this order.
#[derive(serde::Serialize)]
struct RunReport<'a> {
    program: &'a str,
    engine: &'a str,
    /// Whether the verifier accepted the program before it ran.
    verified: bool,
    r0: u64,
    runs: u64,
    ns_per_run: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    maps: Option<serde_json::Map<String, serde_json::Value>>,
}

fn cmd_plugin(mem_hex: Option<&str>, engine: Engine, elf: bool) -> Result<ExitCode> {
    engine.install();
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the program from stdin")?;
    let code = parse_hex_bytes(&input).context("program on stdin")?;
    let insns = if elf {
        // An object: its first program, linked.
        let obj = userbpf_vm::object::Object::parse("<stdin>", &code)?;
        let Some(p) = obj.programs.first() else {
            bail!("<stdin>: the object has no program");
        };
        p.insns.clone()
    } else {
        userbpf_vm::insn::insns_from_bytes(&code)?
    };
    let mut mem = match mem_hex {
        Some(h) => parse_hex_bytes(h).context("MEM_HEX")?,
        None => Vec::new(),
    };
    match conformance::run_interpreter(&insns, &mut mem) {
        Ok(r0) => {
            println!("{r0:x}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
