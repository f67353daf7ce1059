//! PREVAIL's verifier test corpus (tests/prevail/test-data, MIT, see the
//! licence beside it) run through userbpf's verifier: each case's assembly
//! becomes our bytecode, its `pre` facts the initial state, and our verdict
//! is compared with PREVAIL's. Every disagreement is listed, with its
//! reason, in tests/prevail-disagreements.txt; this test fails when the
//! list changes (set `PREVAIL_BLESS=1` to rewrite it, keeping the reasons
//! already written).

#[path = "support/prevail.rs"]
mod prevail;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use prevail::{Case, Fact, Kind, Type, Var, Verdict};
use userbpf_verifier::reg::{Reg, RegType};
use userbpf_verifier::scalar::Scalar;
use userbpf_verifier::state::{ByteKind, Frame, Slot, State};
use userbpf_verifier::{check, Context, Env, MapInfo, Options};
use userbpf_vm::Program;

/// PREVAIL's test platform: a 64-byte context with `data` at 0 and
/// `data_end` at 4.
fn platform_context() -> Context {
    Context::Generic {
        size: prevail::CTX_SIZE as u32,
        data: Some(prevail::CTX_DATA_OFFSET as u32),
        data_end: Some(prevail::CTX_DATA_END_OFFSET as u32),
        meta: None,
        writable: true,
    }
}

/// Where the stack's frame pointer is, in PREVAIL's stack offsets.
fn stack_top(case: &Case) -> i64 {
    case.pre
        .iter()
        .find_map(|f| match f {
            Fact::Attr {
                reg: 10,
                kind: Kind::StackOffset,
                min,
                max,
            } if min == max => Some(*min),
            _ => None,
        })
        .unwrap_or(prevail::SUBPROGRAM_STACK_SIZE)
}

/// The initial state and environment a case's `pre` facts describe, or
/// why they cannot be expressed in userbpf's domain.
fn initial(
    case: &Case,
    choice: &BTreeMap<u8, Type>,
    program: &Program,
) -> Result<(State, Env), String> {
    let top = stack_top(case);
    let mut meta_offset: Option<(i64, i64)> = None;
    // `rN.svalue=rM.svalue` (or uvalue): equal numbers, linked by one id.
    let mut equal_regs: Vec<(u8, u8)> = Vec::new();
    // `rN.uvalue=rM.svalue`: with a same-kind equality of the pair, both
    // are one number in 0..=i64::MAX; alone, it is dropped (a weaker
    // initial state: sound, and we may only reject more).
    let mut cross_equal: Vec<(u8, u8)> = Vec::new();
    let mut types: BTreeMap<u8, Type> = BTreeMap::new();
    let mut values: BTreeMap<u8, Scalar> = BTreeMap::new();
    let mut attrs: BTreeMap<(u8, Kind), (i64, i64)> = BTreeMap::new();
    let mut packet_size: Option<(i64, i64)> = None;
    let mut packet_end_regs = Vec::new();
    // `meta_offset=rN.packet_offset`: rN points at data_meta.
    let mut meta_regs = Vec::new();
    let mut nonneg = Vec::new();
    let mut stack_numbers: Vec<(i64, i64)> = Vec::new();
    let mut stack_values: BTreeMap<(i64, i64), u64> = BTreeMap::new();
    for fact in &case.pre {
        match fact {
            Fact::Type { reg, ty } => {
                types.insert(*reg, *ty);
            }
            // A union of types: the caller picks one (every combination
            // is verified).
            Fact::TypeIn { reg, .. } => {
                let ty = choice
                    .get(reg)
                    .ok_or_else(|| format!("r{reg}: a type union with no choice"))?;
                types.insert(*reg, *ty);
            }
            Fact::SValue { reg, min, max } => {
                let v = values.entry(*reg).or_insert(Scalar::UNKNOWN);
                v.smin = v.smin.max(*min);
                v.smax = v.smax.min(*max);
            }
            Fact::UValue { reg, min, max } => {
                let v = values.entry(*reg).or_insert(Scalar::UNKNOWN);
                v.umin = v.umin.max(*min);
                v.umax = v.umax.min(*max);
            }
            Fact::Attr {
                reg,
                kind,
                min,
                max,
            } => {
                attrs.insert((*reg, *kind), (*min, *max));
            }
            Fact::PacketSize { min, max } => packet_size = Some((*min, *max)),
            Fact::MetaOffset { min, max } => meta_offset = Some((*min, *max)),
            Fact::Equal {
                lhs:
                    Var::Reg {
                        reg,
                        kind: lk @ (Kind::SValue | Kind::UValue),
                    },
                rhs:
                    Var::Reg {
                        reg: other,
                        kind: rk @ (Kind::SValue | Kind::UValue),
                    },
            } if reg != other => {
                if lk == rk {
                    equal_regs.push((*reg, *other));
                } else {
                    cross_equal.push((*reg, *other));
                }
            }
            // `rN.type=rM.type`: the choice of types already made them equal
            // (see `ours`).
            Fact::SameType { .. } => {}
            Fact::Equal {
                lhs:
                    Var::Reg {
                        reg,
                        kind: Kind::UValue,
                    },
                rhs:
                    Var::Reg {
                        reg: other,
                        kind: Kind::SValue,
                    },
            } if reg == other => nonneg.push(*reg),
            Fact::Equal {
                lhs:
                    Var::Reg {
                        reg,
                        kind: Kind::PacketOffset,
                    },
                rhs: Var::PacketSize,
            } => packet_end_regs.push(*reg),
            Fact::Equal {
                lhs: Var::MetaOffset,
                rhs:
                    Var::Reg {
                        reg,
                        kind: Kind::PacketOffset,
                    },
            }
            | Fact::Equal {
                lhs:
                    Var::Reg {
                        reg,
                        kind: Kind::PacketOffset,
                    },
                rhs: Var::MetaOffset,
            } => meta_regs.push(*reg),
            Fact::StackType {
                start,
                end,
                ty: Type::Number,
            } => stack_numbers.push((*start, *end)),
            Fact::StackSValue { start, end, value } => {
                stack_values.insert((*start, *end), *value as u64);
            }
            Fact::StackUValue { start, end, value } => {
                stack_values.insert((*start, *end), *value);
            }
            other => return Err(format!("pre fact not expressible: {other:?}")),
        }
    }
    let mut frame = Frame::new(0, 0, 0);
    frame.regs[10] = Reg::NOT_INIT;
    let mut max_fd = 0;
    let mut prog_array_fds = Vec::new();
    for r in 0u8..=10 {
        let attr = |k: Kind| attrs.get(&(r, k)).copied();
        let fixed = |k: Kind| -> Result<i32, String> {
            match attr(k) {
                Some((a, b)) if a == b => i32::try_from(a).map_err(|e| e.to_string()),
                Some(_) => Err(format!(
                    "r{r}: a range of {k:?} (a variable pointer offset)"
                )),
                None => Ok(0),
            }
        };
        // A register with values but no type may hold anything: userbpf
        // has no such state, and treats it as unusable.
        let Some(&ty) = types.get(&r) else {
            continue;
        };
        let reg = match ty {
            Type::Number => {
                let mut v = values.get(&r).copied().unwrap_or(Scalar::UNKNOWN);
                if nonneg.contains(&r) {
                    v.smin = v.smin.max(0);
                }
                if !v.try_sync() {
                    return Err(format!("r{r}: empty value"));
                }
                Reg::scalar(v)
            }
            // A range of context offsets is a variable offset (which
            // the kernel, and userbpf, refuse to dereference).
            Type::Ctx => match attr(Kind::CtxOffset) {
                Some((a, b)) if a < b => {
                    let mut var = Scalar::UNKNOWN;
                    (var.umin, var.umax) = (0, (b - a) as u64);
                    (var.smin, var.smax) = (0, b - a);
                    if !var.try_sync() {
                        return Err(format!("r{r}: empty context offset"));
                    }
                    Reg {
                        val: var,
                        ..Reg::pointer(RegType::Ctx, i32::try_from(a).map_err(|e| e.to_string())?)
                    }
                }
                _ => Reg::pointer(RegType::Ctx, fixed(Kind::CtxOffset)?),
            },
            Type::Stack => {
                let off = attr(Kind::StackOffset).map(|(a, _)| a).unwrap_or(top);
                Reg::pointer(
                    RegType::Stack { frame: 0 },
                    i32::try_from(off - top).map_err(|e| e.to_string())?,
                )
            }
            Type::Packet if packet_end_regs.contains(&r) => Reg::pointer(RegType::PacketEnd, 0),
            // data_meta itself: nothing after it is known to be readable
            // before a comparison.
            Type::Packet if meta_regs.contains(&r) => Reg {
                id: 1,
                ..Reg::pointer(RegType::PacketMeta { range: 0 }, 0)
            },
            // An empty packet behind a data_meta area of fixed size: the
            // pointer reaches only the meta area, which userbpf models as
            // its own region starting at data_meta (`meta_offset` bytes
            // before data).
            Type::Packet
                if matches!(meta_offset, Some((m, n)) if m == n && m < 0)
                    && packet_size.is_some_and(|(_, max)| max == 0) =>
            {
                let m = meta_offset.map_or(0, |(m, _)| m);
                let off = fixed(Kind::PacketOffset)? as i64 - m;
                Reg {
                    id: 1,
                    ..Reg::pointer(
                        RegType::PacketMeta {
                            range: u32::try_from(-m).map_err(|e| e.to_string())?,
                        },
                        i32::try_from(off).map_err(|e| e.to_string())?,
                    )
                }
            }
            Type::Packet => {
                let range = packet_size.map_or(0, |(min, _)| min.clamp(0, 0xffff) as u32);
                Reg {
                    id: 1,
                    ..Reg::pointer(RegType::Packet { range }, fixed(Kind::PacketOffset)?)
                }
            }
            Type::Shared => {
                let size = attr(Kind::SharedRegionSize)
                    .map(|(a, _)| a)
                    .ok_or_else(|| format!("r{r}: shared region without a size"))?;
                // Null only if a value fact allows 0.
                let non_null = values.get(&r).is_none_or(|v| v.umin > 0 || v.smin > 0);
                // (Each register its own region: distinct ids.)
                Reg {
                    maybe_null: !non_null,
                    id: 100 + u32::from(r),
                    ..Reg::pointer(
                        RegType::Mem {
                            size: u32::try_from(size).map_err(|e| e.to_string())?,
                            rdonly: false,
                        },
                        fixed(Kind::SharedOffset)?,
                    )
                }
            }
            Type::MapFd | Type::MapFdPrograms => {
                let kind = if ty == Type::MapFd {
                    Kind::MapFd
                } else {
                    Kind::MapFdPrograms
                };
                let fd = u32::try_from(fixed(kind)?).map_err(|e| e.to_string())?;
                max_fd = max_fd.max(fd);
                if ty == Type::MapFdPrograms {
                    prog_array_fds.push(fd);
                }
                Reg::pointer(RegType::ConstMap { map: fd }, 0)
            }
        };
        frame.regs[usize::from(r)] = reg;
    }
    for (i, (a, b)) in equal_regs.iter().enumerate() {
        let (ra, rb) = (frame.regs[usize::from(*a)], frame.regs[usize::from(*b)]);
        if !ra.is_scalar() || !rb.is_scalar() {
            return Err(format!("r{a}=r{b}: an equality between non-numbers"));
        }
        // Both hold the same number: both ranges bound it, and one id
        // links them (as after `r{a} = r{b}`).
        let mut v = ra.val;
        if cross_equal
            .iter()
            .any(|&(x, y)| (x, y) == (*a, *b) || (y, x) == (*a, *b))
        {
            v.smin = v.smin.max(0);
        }
        v.smin = v.smin.max(rb.val.smin);
        v.smax = v.smax.min(rb.val.smax);
        v.umin = v.umin.max(rb.val.umin);
        v.umax = v.umax.min(rb.val.umax);
        if !v.try_sync() {
            return Err(format!("r{a}=r{b}: empty value"));
        }
        let id = 200 + i as u32;
        for r in [a, b] {
            frame.regs[usize::from(*r)] = Reg {
                id,
                ..Reg::scalar(v)
            };
        }
    }
    if frame.regs[10].ty == RegType::NotInit {
        // PREVAIL leaves r10 undefined without a fact; userbpf's frame
        // pointer always exists.
        frame.regs[10] = Reg::pointer(RegType::Stack { frame: 0 }, 0);
    }
    for (start, end) in stack_numbers {
        for b in start..=end {
            let off = i32::try_from(b - top).map_err(|e| e.to_string())?;
            if !(-512..0).contains(&off) {
                return Err(format!("stack byte {b} outside the frame"));
            }
            let (slot, i) = frame.slot_mut(off);
            slot.bytes[i] = ByteKind::Misc;
        }
    }
    for ((start, end), value) in stack_values {
        // A whole 8-byte cell with a known value is a spilled constant.
        let off = i32::try_from(start - top).map_err(|e| e.to_string())?;
        if end - start == 7 && off % 8 == 0 && (-512..0).contains(&off) {
            let (slot, _) = frame.slot_mut(off);
            *slot = Slot {
                bytes: [ByteKind::Spill; 8],
                spill: Reg::constant(value),
            };
        } else if value == 0 {
            for b in start..=end {
                let off = i32::try_from(b - top).map_err(|e| e.to_string())?;
                if (-512..0).contains(&off) {
                    let (slot, i) = frame.slot_mut(off);
                    slot.bytes[i] = ByteKind::Zero;
                }
            }
        }
    }
    // PREVAIL's platform resolves any small fd to its test map, which has
    // no type: userbpf needs one, and takes a ring buffer
    // (BPF_MAP_TYPE_RINGBUF) if the case calls a ring-buffer helper
    // (bpf_ringbuf_output/reserve/query), else an array.
    const RINGBUF_HELPERS: [i64; 3] = [130, 131, 134];
    let ringbuf = program
        .insns()
        .iter()
        .any(|i| i.code == 0x85 && i.src == 0 && RINGBUF_HELPERS.contains(&i64::from(i.imm)))
        // `callx rN` with rN a ring-buffer helper's id.
        || program.insns().iter().any(|i| {
            i.code == 0x8d
                && values
                    .get(&i.dst)
                    .is_some_and(|v| v.smin == v.smax && RINGBUF_HELPERS.contains(&v.smin))
        });
    let maps = (0..=max_fd.max(8))
        .map(|fd| MapInfo {
            name: format!("map{fd}"),
            map_type: if prog_array_fds.contains(&fd) {
                3
            } else if ringbuf {
                27
            } else {
                2
            },
            key_size: if ringbuf { 0 } else { prevail::MAP_KEY_SIZE },
            value_size: if ringbuf { 0 } else { prevail::MAP_VALUE_SIZE },
            max_entries: if ringbuf {
                4096
            } else {
                prevail::MAP_MAX_ENTRIES
            },
            read_only: false,
            write_only: false,
            direct_value: true,
            contents: None,
            inner: None,
            spin_lock: None,
            timer: None,
        })
        .collect();
    let env = Env {
        prog_type: None,
        attach_type: None,
        context: platform_context(),
        maps,
        subprogram_names: Vec::new(),
        sleepable: false,
        kernel_btf: None,
        attach_btf_name: None,
        non_scalar_returns: Vec::new(),
        global_functions: Vec::new(),
    };
    Ok((
        State {
            frames: vec![frame],
            refs: Vec::new(),
            lock: None,
        },
        env,
    ))
}

/// Our verdict on a case: `Ok(true)` accepted, `Ok(false)` rejected (with
/// the message), `Err` if the case cannot be run here.
fn ours(case: &Case) -> Result<(bool, String), String> {
    let code = case.code.as_ref().map_err(|e| e.clone())?;
    let code = if code.falls_off_end() {
        code.with_exit_tail()
    } else {
        code.clone()
    };
    let program = Program::new(case.name.clone(), code.insns.clone()).map_err(|e| e.to_string())?;
    let opts = Options {
        allow_division_by_zero: prevail::options(case)?.allow_division_by_zero,
        ..Options::default()
    };
    // `rN.type in {..}`: the program must be safe for every type.
    let unions: Vec<(u8, Vec<Type>)> = case
        .pre
        .iter()
        .filter_map(|f| match f {
            Fact::TypeIn { reg, types } => Some((*reg, types.clone())),
            _ => None,
        })
        .collect();
    let mut choices = vec![BTreeMap::new()];
    // `rN.type=rM.type`: only the choices giving both the same type.
    let same: Vec<(u8, u8)> = case
        .pre
        .iter()
        .filter_map(|f| match f {
            Fact::SameType { reg, other } => Some((*reg, *other)),
            _ => None,
        })
        .collect();
    for (reg, types) in &unions {
        choices = choices
            .into_iter()
            .flat_map(|c| {
                types.iter().map(move |t| {
                    let mut c = c.clone();
                    c.insert(*reg, *t);
                    c
                })
            })
            .collect();
    }
    choices.retain(|c| same.iter().all(|(a, b)| c.get(a) == c.get(b)));
    for choice in &choices {
        let (state, env) = initial(case, choice, &program)?;
        if let Err(e) = check(&program, &env, &opts, Some(state)) {
            return Ok((
                false,
                format!("{}: {}", e.pc, e.message.replace('\n', " / ")),
            ));
        }
    }
    Ok((true, String::new()))
}

/// Why a disagreement is expected, when the reason is one of PREVAIL's
/// options that userbpf's semantics do not have.
fn known_reason(case: &Case, prevail_rejects: bool, our_message: &str) -> Option<&'static str> {
    let opts = prevail::options(case).ok()?;
    if prevail_rejects && !opts.allow_division_by_zero {
        return Some("domain: BPF defines division by zero (x/0 = 0, x%0 = x); PREVAIL's !allow_division_by_zero forbids it");
    }
    if !prevail_rejects
        && !opts.check_for_termination
        && (our_message.contains("infinite loop") || our_message.contains("too large"))
    {
        return Some(
            "domain: userbpf always proves termination; PREVAIL checks it only with `termination`",
        );
    }
    let reject_reasons: &[(&str, &str)] = &[
        ("div by zero", "domain: the kernel rejects division by an immediate 0"),
        ("invalid shift", "domain: the kernel rejects shifts by an immediate outside 0..width"),
        ("R0 !read_ok", "domain: the kernel requires r0 to be set at exit"),
        ("jump out of range", "domain: the kernel rejects a jump out of a function (`jump out of range`)"),
        ("last insn is not an exit or jmp", "domain: the kernel rejects a function that falls into the next one"),
        ("unreachable insn", "domain: the kernel rejects dead code (`unreachable insn`) (shown on the kernel by tests/verifier_rules_vs_kernel.rs)"),
        ("misaligned", "domain: the kernel requires aligned stack and atomic accesses"),
        ("invalid read from stack", "domain: userbpf rejects reads of uninitialised stack, as the kernel does for loaders without CAP_PERFMON (shown on the kernel by tests/verifier_rules_vs_kernel.rs)"),
        ("!read_ok", "domain: the kernel rejects reading a register never written (callee frames start with r1-r5 only)"),
        ("invalid func unknown", "domain: userbpf has no such helper"),
        (
            "is not supported by userbpf's verifier",
            "domain: userbpf's verifier has no prototype of this kernel helper",
        ),
        ("Unreleased reference", "domain: the kernel requires every acquired reference (ring-buffer reservation, socket lookup) to be released on every path; PREVAIL tracks no references"),
        (
            "subtraction from stack pointer prohibited",
            "domain: the kernel forbids subtracting from a stack pointer (`r1 -= 8`; compilers add a negative offset) (shown on the kernel by tests/verifier_rules_vs_kernel.rs)",
        ),
        ("invalid size of register spill", "domain: the kernel rejects spilling a pointer with a store narrower than 8 bytes"),
        ("invalid bpf_context access off=4", "domain: packet pointer fields of the context are read whole (4 bytes)"),
    ];
    if !prevail_rejects {
        for (needle, reason) in reject_reasons {
            if our_message.contains(needle) {
                return Some(reason);
            }
        }
    }
    None
}

fn disagreements_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/prevail-disagreements.txt")
}

#[test]
fn prevail_corpus_verdicts_agree_except_the_listed_cases() {
    let cases = prevail::load_corpus(&prevail::corpus_dir()).expect("corpus");
    let mut agree = 0usize;
    let mut total = 0usize;
    let mut lines = Vec::new();
    let mut unsafe_accepts = Vec::new();
    for case in &cases {
        let verdict = prevail::verdict(case);
        if verdict == Verdict::Excluded {
            continue;
        }
        total += 1;
        let prevail_rejects = verdict == Verdict::Reject;
        let theirs = if prevail_rejects {
            format!("reject ({})", prevail::error_messages(case).join("; "))
        } else {
            "accept".to_string()
        };
        let (mine, message) = match ours(case) {
            Ok((true, _)) => ("accept".to_string(), String::new()),
            Ok((false, m)) => (format!("reject ({m})"), m),
            Err(why) => (format!("not run ({why})"), String::new()),
        };
        let we_reject = mine.starts_with("reject");
        let we_accept = mine == "accept";
        if (prevail_rejects && we_reject) || (!prevail_rejects && we_accept) {
            agree += 1;
            continue;
        }
        if prevail_rejects && we_accept {
            unsafe_accepts.push(format!("{} | {}", case.file, case.name));
        }
        let key = format!("{} | {}", case.file, case.name);
        let reason = known_reason(case, prevail_rejects, &message).unwrap_or("");
        lines.push((
            key,
            format!("PREVAIL {theirs} | userbpf {mine}"),
            reason.to_string(),
        ));
    }
    println!(
        "PREVAIL corpus: {agree}/{total} verdicts agree ({:.1}%), {} disagreements",
        agree as f64 * 100.0 / total as f64,
        lines.len()
    );
    // Compare with the checked-in list (keys and verdicts; reasons are
    // written by hand and kept on rewrite).
    let path = disagreements_file();
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut old_reasons: BTreeMap<String, String> = BTreeMap::new();
    let mut old_keys = Vec::new();
    for line in old
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let parts: Vec<&str> = line.splitn(5, " | ").collect();
        if parts.len() >= 3 {
            let key = format!("{} | {}", parts[0], parts[1]);
            old_keys.push(format!("{key} | {}", parts.get(2).copied().unwrap_or("")));
            if let Some(r) = parts.get(4) {
                old_reasons.insert(key, r.to_string());
            }
        }
    }
    let mut out = String::from(
        "# PREVAIL corpus cases where userbpf's verdict differs from PREVAIL's.\n\
         # file | case | PREVAIL's verdict | userbpf's verdict | reason\n\
         # Reasons: `domain:` a documented difference of userbpf's rules; `bug:` ours to fix;\n\
         # `harness:` the case cannot be expressed in userbpf's domain.\n",
    );
    let mut new_keys = Vec::new();
    for (key, verdicts, reason) in &lines {
        let (theirs, mine) = verdicts.split_once(" | ").unwrap_or((verdicts, ""));
        let reason = old_reasons
            .get(key)
            .filter(|r| !r.is_empty())
            .cloned()
            .unwrap_or_else(|| reason.clone());
        let _ = writeln!(out, "{key} | {theirs} | {mine} | {reason}");
        new_keys.push(format!("{key} | {theirs}"));
    }
    // The report: how many disagreements each kind of reason explains.
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, _, reason) in &lines {
        let reason = old_reasons.get(key).map_or(reason.as_str(), String::as_str);
        let kind = reason
            .split(':')
            .next()
            .filter(|k| !k.is_empty())
            .unwrap_or("unexplained");
        *by_kind.entry(kind).or_default() += 1;
    }
    println!("PREVAIL corpus disagreements by reason: {by_kind:?}");
    if std::env::var_os("PREVAIL_BLESS").is_some() {
        std::fs::write(&path, &out).unwrap();
        return;
    }
    let old_set: std::collections::BTreeSet<_> = old_keys.iter().collect();
    let new_set: std::collections::BTreeSet<_> = new_keys.iter().collect();
    let gone: Vec<_> = old_set.difference(&new_set).collect();
    let added: Vec<_> = new_set.difference(&old_set).collect();
    assert!(
        gone.is_empty() && added.is_empty(),
        "the disagreements changed (PREVAIL_BLESS=1 rewrites {}):\nno longer: {gone:#?}\nnew: {added:#?}",
        path.display()
    );
    // No case where PREVAIL rejects a program and we accept it may be a
    // memory-safety difference: each needs a `domain:` reason.
    for key in &unsafe_accepts {
        let reason = old_reasons.get(key).map(String::as_str).unwrap_or("");
        assert!(
            reason.starts_with("domain:"),
            "PREVAIL rejects `{key}`, userbpf accepts it, and no domain reason explains it: `{reason}`"
        );
    }
}

/// PREVAIL's forms with no BPF encoding become their exact equivalents:
/// the negated jset `&!=` (in `if` and as the failure of an `assume` of a
/// jset) a jset over a `goto`, and `w2 s32= r2` a 32-bit move.
#[test]
fn harness_lowers_forms_without_an_encoding() {
    use userbpf_vm::isa::{decode_all, AluOp, Instruction, JmpCond, Source, Width};
    use userbpf_vm::Reg as R;
    let block = |label: &str, lines: &[&str]| {
        (
            label.to_string(),
            lines.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        )
    };
    let code = prevail::assemble(&[
        block(
            "<start>",
            &["if w1 &!= 6 goto <out>", "assume r2 &== 1", "w3 s32= r4"],
        ),
        block("<out>", &["exit"]),
    ])
    .expect("assembles");
    let got: Vec<Instruction> = decode_all(&code.insns)
        .expect("decodes")
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    let jset = |width, dst: u8, imm, off| Instruction::Jump {
        width,
        cond: JmpCond::Set,
        dst: R::new(dst).unwrap(),
        src: Source::Imm(imm),
        off,
    };
    let out = code.labels["<out>"] as i16;
    // pc 0-1: the `if`; 2-3: the `assume`; 4: the move; 5: exit at <out>;
    // then the failed-assume tail `r0 = 0; exit` at 6.
    assert_eq!(out, 5);
    assert_eq!(got[0], jset(Width::W32, 1, 6, 1));
    assert_eq!(got[1], Instruction::Ja { off: out - 2 });
    assert_eq!(got[2], jset(Width::W64, 2, 1, 1));
    assert_eq!(got[3], Instruction::Ja { off: 6 - 4 });
    assert_eq!(
        got[4],
        Instruction::Alu {
            width: Width::W32,
            op: AluOp::Mov,
            dst: R::new(3).unwrap(),
            src: Source::Reg(R::new(4).unwrap()),
        }
    );
    assert_eq!(got[5], Instruction::Exit);
}
