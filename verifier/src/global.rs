//! Global functions (`BTF_FUNC_GLOBAL` linkage: non-static C functions),
//! as the kernel treats them: each call's arguments are checked against
//! the function's BTF prototype (`btf_check_subprog_call`), the function
//! is verified once on its own for any arguments that prototype allows
//! (`do_check_subprogs`), and the caller gets an unknown scalar back.
//!
//! A call that passes the function memory of the caller's stack is also
//! explored with the caller's own arguments (as a static function's): a
//! program is accepted only if both succeed, so userbpf's own rules (no
//! read of uninitialised stack, no spilled address read as a number,
//! which the kernel allows root) are checked on what the function really
//! reads and writes there. Any other call goes on after it at once, as in
//! the kernel: the function can reach nothing of the caller's but what
//! its arguments give, which its own verification covered, so it is
//! verified once however often it is called.

use std::sync::Arc;

use userbpf_vm::object::{FuncReturn, ParamType, ProgramType};
use userbpf_vm::Program;

use crate::env::{Env, GlobalFunction};
use crate::error::VerifyError;
use crate::explore::Verifier;
use crate::mem::Access;
use crate::reg::{Reg, RegType};
use crate::state::{Frame, State};

/// What a global function's parameter takes (`btf_prepare_func_args`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GlobalArg {
    /// `ARG_ANYTHING`: a scalar.
    Scalar,
    /// `ARG_PTR_TO_CTX`: the program's context, unmodified.
    Ctx,
    /// `ARG_PTR_TO_MEM` of `size` bytes, read and written, and NULL
    /// unless tagged `__arg_nonnull`.
    Mem { size: u32, nullable: bool },
}

/// What a verification needs to know of a global function, found once.
pub(crate) struct GlobalFacts<'a> {
    /// The function.
    pub(crate) function: &'a GlobalFunction,
    /// Its number (`func#N`).
    pub(crate) func: usize,
    /// Whether it, or a function it calls, may change the packet
    /// (`changes_pkt_data`).
    pub(crate) changes_packet: bool,
    /// Whether it, or a function it calls, has a legacy packet load.
    legacy_loads: bool,
    /// What each parameter takes, or the kernel's message why the
    /// function cannot be called.
    args: Result<Arc<[GlobalArg]>, String>,
}

/// The facts of `env`'s global functions in `prog`.
pub(crate) fn global_facts<'a>(prog: &Program, env: &'a Env) -> Vec<GlobalFacts<'a>> {
    if env.global_functions.is_empty() {
        return Vec::new();
    }
    let starts = crate::cfg::function_starts(prog);
    env.global_functions
        .iter()
        .map(|g| GlobalFacts {
            function: g,
            func: starts.iter().position(|&s| s == g.start).unwrap_or(0),
            changes_packet: crate::cfg::changes_packet(prog, &starts, g.start),
            legacy_loads: crate::cfg::loads_packet_legacy(prog, &starts, g.start),
            args: global_args(env.prog_type, g).map(Arc::from),
        })
        .collect()
}

/// The names of the program type's context structure, as
/// `btf_is_prog_ctx_type` recognises a pointer to it (the structure the
/// program sees, and the kernel's own for packets).
fn ctx_type_names(prog_type: Option<ProgramType>) -> &'static [&'static str] {
    use ProgramType as P;
    match prog_type {
        Some(
            P::SocketFilter
            | P::SchedCls
            | P::SchedAct
            | P::CgroupSkb
            | P::LwtIn
            | P::LwtOut
            | P::LwtXmit
            | P::LwtSeg6local
            | P::SkSkb
            | P::FlowDissector,
        ) => &["__sk_buff", "sk_buff"],
        Some(P::Xdp) => &["xdp_md", "xdp_buff"],
        Some(P::CgroupSock) => &["bpf_sock"],
        Some(P::CgroupSockAddr) => &["bpf_sock_addr"],
        Some(P::SockOps) => &["bpf_sock_ops"],
        Some(P::SkMsg) => &["sk_msg_md"],
        // (`bpf_user_pt_regs_t` is `struct pt_regs` on x86-64.)
        Some(P::Kprobe) => &["bpf_user_pt_regs_t", "pt_regs"],
        Some(P::PerfEvent) => &["bpf_perf_event_data"],
        Some(P::RawTracepoint | P::RawTracepointWritable) => &["bpf_raw_tracepoint_args"],
        Some(P::CgroupDevice) => &["bpf_cgroup_dev_ctx"],
        Some(P::CgroupSysctl) => &["bpf_sysctl"],
        Some(P::CgroupSockopt) => &["bpf_sockopt"],
        Some(P::SkReuseport) => &["sk_reuseport_md"],
        Some(P::SkLookup) => &["bpf_sk_lookup"],
        _ => &[],
    }
}

/// `btf_prepare_func_args`: what each parameter of `g` takes, or the
/// kernel's message why the function cannot be called.
fn global_args(
    prog_type: Option<ProgramType>,
    g: &GlobalFunction,
) -> Result<Vec<GlobalArg>, String> {
    let name = &g.name;
    if g.sig.ret != FuncReturn::Scalar {
        return Err(format!(
            "Global function {name}() doesn't return scalar. Only those are supported."
        ));
    }
    if g.sig.params.len() > 5 {
        return Err(format!(
            "Global function {name}() with {} > 5 args. Buggy compiler.",
            g.sig.params.len()
        ));
    }
    let ctx_names = ctx_type_names(prog_type);
    let mut args = Vec::with_capacity(g.sig.params.len());
    for (i, p) in g.sig.params.iter().enumerate() {
        let (mut ctx, mut nonnull) = (false, false);
        for tag in &p.tags {
            match tag.as_str() {
                "ctx" => ctx = true,
                "nonnull" => nonnull = true,
                other => {
                    return Err(format!(
                        "arg#{i} of {name}() is tagged arg:{other}: userbpf's verifier \
                             takes only arg:ctx and arg:nonnull (kernel objects and arenas \
                             are not modelled)"
                    ))
                }
            }
        }
        let arg = match &p.ty {
            ParamType::Scalar if ctx || nonnull => {
                return Err(format!(
                    "arg#{i} has pointer tag, but is not a pointer type"
                ))
            }
            ParamType::Scalar => GlobalArg::Scalar,
            ParamType::Pointer { .. } if ctx => GlobalArg::Ctx,
            ParamType::Pointer {
                record: Some(r), ..
            } if r == "bpf_dynptr" => {
                return Err(format!(
                    "arg#{i} of {name}() is a struct bpf_dynptr *: userbpf's verifier does \
                         not take dynptrs as arguments of global functions (make {name} static)"
                ))
            }
            ParamType::Pointer {
                typedefs, record, ..
            } if typedefs
                .iter()
                .chain(record)
                .any(|n| ctx_names.contains(&n.as_str())) =>
            {
                GlobalArg::Ctx
            }
            ParamType::Pointer {
                size: Some(size), ..
            } => GlobalArg::Mem {
                size: *size,
                nullable: !nonnull,
            },
            ParamType::Pointer {
                target, size: None, ..
            } => {
                return Err(format!(
                    "arg#{i} reference type('{target}') size cannot be determined: -22"
                ))
            }
            ParamType::Other(t) => {
                return Err(format!(
                    "Arg#{i} type {t} in {name}() is not supported yet."
                ))
            }
        };
        args.push(arg);
    }
    Ok(args)
}

impl<'a> Verifier<'a> {
    /// The global function starting at `pc`, if it is one: its index in
    /// [`Verifier::globals`].
    pub(crate) fn global(&self, pc: usize) -> Option<usize> {
        self.globals.iter().position(|g| g.function.start == pc)
    }

    /// `btf_check_func_arg_match`: the caller's `r1`.. against `args`.
    fn check_global_call_args(&mut self, st: &State, args: &[GlobalArg]) -> Result<(), String> {
        for (i, arg) in args.iter().enumerate() {
            let regno = u8::try_from(i.wrapping_add(1)).unwrap_or(u8::MAX);
            let reg = *st.reg(regno);
            match *arg {
                GlobalArg::Scalar => {
                    if reg.ty != RegType::Scalar {
                        return Err(format!("R{regno} is not a scalar"));
                    }
                }
                GlobalArg::Ctx => {
                    if reg.ty != RegType::Ctx {
                        return Err(format!("arg#{i} expects pointer to ctx"));
                    }
                    if reg.off != 0 || reg.val.is_const() != Some(0) {
                        return Err(format!(
                            "dereference of modified ctx ptr R{regno} off={} disallowed",
                            reg.off
                        ));
                    }
                }
                GlobalArg::Mem { size, nullable } => {
                    if reg.is_scalar() && reg.const_value() == Some(0) {
                        // NULL: nothing to access (`check_mem_reg`).
                        continue;
                    }
                    let ok = matches!(
                        reg.ty,
                        RegType::Stack { .. }
                            | RegType::MapValue { .. }
                            | RegType::Mem { .. }
                            | RegType::RingbufMem { .. }
                            | RegType::Packet { .. }
                            | RegType::PacketMeta { .. }
                    );
                    if !ok {
                        // (`check_helper_mem_access`'s words.)
                        return Err(format!("R{regno} type={} expected=fp", reg.type_name()));
                    }
                    // Readable and writable for `size` bytes, as if not
                    // null (the function checks for NULL itself). The
                    // write is tried on a copy: the call is explored with
                    // what the function really writes. (Whether the bytes
                    // are initialised is checked where the function reads
                    // them.)
                    let mut probe = st.clone();
                    probe.cur_mut().regs[usize::from(regno)].maybe_null = false;
                    self.helper_mem(
                        &mut probe,
                        regno,
                        u64::from(size),
                        u64::from(size),
                        Access::Write,
                        false,
                    )
                    // (The kernel tries the read first: out of the frame,
                    // it names that.)
                    .map_err(|e| {
                        e.message
                            .replace("invalid write to stack", "invalid read from stack")
                    })?;
                    if reg.maybe_null && !nullable {
                        return Err(format!("arg#{i} is expected to be non-NULL"));
                    }
                }
            }
        }
        Ok(())
    }

    /// A call at `pc` of global function `index`: its arguments checked,
    /// and on the first call from a verified path, the function's own
    /// verification started (a path of its own, from its first pc, with
    /// the arguments its prototype allows). Returns whether the call must
    /// also be explored with the caller's arguments (it passes memory of
    /// a stack).
    pub(crate) fn global_call(
        &mut self,
        st: &State,
        pc: usize,
        index: usize,
    ) -> Result<bool, Box<VerifyError>> {
        let Some(facts) = self.globals.get(index) else {
            return Ok(true);
        };
        let (g, func, args) = (facts.function, facts.func, facts.args.clone());
        let name = &g.name;
        if st.lock.is_some() {
            return Err(self.error(
                "global function calls are not allowed while holding a lock,\nuse static function instead",
            ));
        }
        // Verified on its own, the function cannot know it runs in a
        // callback, where a failed legacy load could not return.
        if facts.legacy_loads && st.frames.iter().any(|f| f.callback) {
            return Err(self.error("cannot use BPF_LD_[ABS|IND] within callback"));
        }
        let args = args
            .and_then(|args| self.check_global_call_args(st, &args).map(|()| args))
            .map_err(|why| {
                self.error(format!(
                    "{why}\nCaller passes invalid args into func#{func} ('{name}')"
                ))
            })?;
        if self.opts.log_level > 0 {
            self.log_line(|| format!("{pc}: Func#{func} ('{name}') is global and assumed valid."));
        }
        if self.called_globals.insert(g.start) {
            let mut frame = Frame::new(0, 0, g.start);
            for (i, arg) in args.iter().enumerate() {
                frame.regs[i.wrapping_add(1)] = match *arg {
                    GlobalArg::Scalar => Reg::unknown(),
                    GlobalArg::Ctx => Reg::pointer(RegType::Ctx, 0),
                    GlobalArg::Mem { size, nullable } => self.pointer_maybe_null(
                        RegType::Mem {
                            size,
                            rdonly: false,
                        },
                        nullable,
                    ),
                };
            }
            let state = State {
                frames: vec![frame],
                refs: Vec::new(),
                lock: None,
            };
            self.spawn(state, g.start);
        }
        let caller = st.cur();
        Ok(args.iter().enumerate().any(|(i, arg)| {
            matches!(arg, GlobalArg::Mem { .. })
                && caller
                    .regs
                    .get(i.wrapping_add(1))
                    .is_some_and(|r| matches!(r.ty, RegType::Stack { .. }))
        }))
    }
}
