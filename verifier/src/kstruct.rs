//! Reads of kernel structures through pointers the kernel's BTF describes
//! (`PTR_TO_BTF_ID`): which field an access at a constant offset reaches,
//! and what it yields (`btf_struct_walk`, `btf_struct_access`): a number,
//! a pointer to another structure, or a pointer to memory that is not a
//! structure. Then how far the kernel trusts a pointer read from a field
//! (`check_ptr_to_btf_access`), from the lists of fields it declares safe
//! in its own BTF (`struct task_struct__safe_rcu` and the like).

use userbpf_vm::object::btf::{Btf, Kind, Type};

use crate::reg::Trust;

/// What a read of a kernel structure yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Walked {
    /// A number (a scalar field, an array of them, a bitfield).
    Scalar,
    /// A pointer field to the structure with this id.
    Ptr {
        /// The pointed-to structure (typedefs and qualifiers skipped).
        id: u32,
        /// The field's name, for the kernel's lists of safe fields.
        field: String,
        /// Whether the walk went through a union of several members
        /// (which makes the pointer untrusted).
        via_union: bool,
    },
    /// A pointer field to something other than a structure: read-only
    /// memory of unknown size (`PTR_TO_MEM | MEM_RDONLY | PTR_UNTRUSTED`).
    UntrustedMem,
    /// The structure looked for by [`ids_match`] starts at the offset.
    Nested,
}

/// Whether `t` is a typedef or a qualifier (`btf_type_is_modifier`).
fn is_modifier(t: &Type) -> bool {
    matches!(
        t.kind,
        Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag
    )
}

/// A member's type resolved to something with a size
/// (`__btf_resolve_size`): arrays (of arrays) are flattened into their
/// element and count.
struct Resolved {
    /// The member's type after typedefs and qualifiers: an array, or the
    /// type itself.
    outer: Type,
    /// Total size in bytes.
    size: u32,
    /// For arrays: the innermost element (typedefs and qualifiers
    /// skipped), its id, and the number of elements in all dimensions.
    elem: Option<(u32, Type, u32)>,
    /// The id of `outer` (or of the element for arrays).
    id: u32,
}

fn resolve_size(btf: &Btf, mut id: u32) -> Option<Resolved> {
    let mut outer: Option<(u32, Type)> = None;
    let mut nelems: u32 = 1;
    for _ in 0..32 {
        let t = btf.get(id)?;
        let size = match t.kind {
            Kind::Int | Kind::Struct | Kind::Union | Kind::Enum | Kind::Float | Kind::Enum64 => {
                t.size_or_type
            }
            Kind::Ptr => 8,
            _ if is_modifier(&t) => {
                id = t.size_or_type;
                continue;
            }
            Kind::Array => {
                let (elem, n) = t.array?;
                nelems = nelems.checked_mul(n)?;
                if outer.is_none() {
                    outer = Some((id, t));
                }
                id = elem;
                continue;
            }
            _ => return None,
        };
        let total = size.checked_mul(nelems)?;
        return Some(match outer {
            Some((aid, a)) => Resolved {
                outer: a,
                size: total,
                elem: Some((id, t, nelems)),
                id: aid,
            },
            None => Resolved {
                outer: t,
                size: total,
                elem: None,
                id,
            },
        });
    }
    None
}

/// The name of type `id` as the kernel prints it.
pub(crate) fn type_name(btf: &Btf, id: u32) -> String {
    btf.get(id).map(|t| display_name(&t)).unwrap_or_default()
}

/// A type's name as the kernel prints it (`(anon)` for none).
pub(crate) fn display_name(t: &Type) -> String {
    if t.name.is_empty() {
        "(anon)".to_string()
    } else {
        t.name.clone()
    }
}

/// What reading `size` bytes at `off` of the structure `id` yields, or
/// the kernel's message for an access it refuses (`btf_struct_access` on
/// a pointer that is not to a program-allocated object).
pub(crate) fn struct_access(btf: &Btf, id: u32, off: u32, size: u32) -> Result<Walked, String> {
    walk(btf, id, off, size, None)
}

/// Whether a pointer to structure `id` moved by `off` bytes points to a
/// structure `target` (`btf_struct_ids_match`): `target` itself, or a
/// structure nested at that offset.
pub(crate) fn ids_match(btf: &Btf, id: u32, off: u32, target: u32) -> bool {
    if off == 0 && btf.resolve(id).map(|(i, _)| i) == Some(target) {
        return true;
    }
    walk(btf, id, off, 1, Some(target)) == Ok(Walked::Nested)
}

/// `btf_struct_walk` through nested structures, down to the field read;
/// with `want`, stops with [`Walked::Nested`] at a nested structure of
/// that id starting exactly at the offset.
fn walk(btf: &Btf, id: u32, off: u32, size: u32, want: Option<u32>) -> Result<Walked, String> {
    let mut via_union = false;
    let mut off = off;
    let (mut id, mut t) = btf
        .resolve(id)
        .ok_or_else(|| format!("unknown BTF type {id}"))?;
    'again: for _ in 0..64 {
        let tname = display_name(&t);
        if !t.is_composite() {
            return Err(format!("Type '{tname}' is not a struct"));
        }
        let vlen = t.members.len();
        if t.kind == Kind::Union && vlen != 1 {
            via_union = true;
        }
        let beyond = || format!("access beyond struct {tname} at off {off} size {size}");
        if off.saturating_add(size) > t.size_or_type {
            // A flexible array at the end extends the structure.
            let last = t.members.last().ok_or_else(beyond)?;
            let (_, at) = btf.resolve(last.type_id).ok_or_else(beyond)?;
            let (elem, n) = at.array.ok_or_else(beyond)?;
            if at.kind != Kind::Array || n != 0 {
                return Err(beyond());
            }
            let moff = last.offset / 8;
            if off < moff {
                return Err(beyond());
            }
            let (eid, et) = btf.resolve(elem).ok_or_else(beyond)?;
            if et.kind == Kind::Int {
                return Ok(Walked::Scalar);
            }
            if !et.is_composite() || et.size_or_type == 0 {
                return Err(beyond());
            }
            off = off
                .wrapping_sub(moff)
                .checked_rem(et.size_or_type)
                .unwrap_or(0);
            id = eid;
            t = et;
            continue 'again;
        }
        let members = t.members.clone();
        for m in &members {
            let moff = m.offset / 8;
            if off.saturating_add(size) <= moff {
                break;
            }
            if m.bitfield_size != 0 {
                let end_bit = m.offset.saturating_add(m.bitfield_size);
                if off <= moff && end_bit.div_ceil(8) <= off.saturating_add(size) {
                    return Ok(Walked::Scalar);
                }
                continue;
            }
            if off < moff {
                break;
            }
            let r = resolve_size(btf, m.type_id)
                .ok_or_else(|| format!("field {} doesn't have size", m.name))?;
            let mtrue_end = moff.saturating_add(r.size);
            if off >= mtrue_end {
                continue;
            }
            let (mut mid, mut mtype, mut msize, mut moff) = (r.id, r.outer, r.size, moff);
            if mtype.kind == Kind::Array {
                let Some((eid, et, nelems)) = r.elem else {
                    continue;
                };
                if moff == mtrue_end || nelems == 0 {
                    continue;
                }
                msize = msize.checked_div(nelems).unwrap_or(0);
                if msize == 0 {
                    continue;
                }
                let idx = off.wrapping_sub(moff).checked_div(msize).unwrap_or(0);
                moff = moff.saturating_add(idx.saturating_mul(msize));
                mtype = et;
                mid = eid;
            }
            if mtype.is_composite() {
                if off == moff && want == Some(mid) {
                    return Ok(Walked::Nested);
                }
                off = off.wrapping_sub(moff);
                id = mid;
                t = mtype;
                continue 'again;
            }
            if mtype.kind == Kind::Ptr {
                if msize != size || off != moff {
                    return Err(format!(
                        "cannot access ptr member {} with moff {moff} in struct {tname} with off {off} size {size}",
                        m.name
                    ));
                }
                return Ok(match btf.resolve(mtype.size_or_type) {
                    Some((sid, st)) if st.is_composite() => Walked::Ptr {
                        id: sid,
                        field: m.name.clone(),
                        via_union,
                    },
                    _ => Walked::UntrustedMem,
                });
            }
            if off.saturating_add(size) > mtrue_end && !via_union {
                return Err(format!(
                    "access beyond the end of member {} (mend:{mtrue_end}) in struct {tname} with off {off} size {size}",
                    m.name
                ));
            }
            return Ok(Walked::Scalar);
        }
        let _ = id;
        return Err(format!("struct {tname} doesn't have field at offset {off}"));
    }
    Err(format!("BTF type {id} nests too deeply"))
}

/// Whether the kernel declares `field` of structure `container`, a
/// pointer to structure `target`, safe in the list named by `suffix`
/// (`btf_nested_type_is_trusted`: `struct task_struct__safe_rcu` lists
/// the fields of `struct task_struct` that are RCU-protected).
fn listed(btf: &Btf, container: u32, field: &str, target: u32, suffix: &str) -> bool {
    let Some(ct) = btf.get(container) else {
        return false;
    };
    let name = format!("{}{suffix}", ct.name);
    btf.by_name(&name)
        .into_iter()
        .filter_map(|id| btf.get(id))
        .filter(|t| t.kind == ct.kind)
        .any(|safe| {
            safe.members.iter().any(|m| {
                m.name == field
                    && btf.get(m.type_id).is_some_and(|mt| {
                        mt.kind == Kind::Ptr
                            && btf.resolve(mt.size_or_type).map(|(id, _)| id) == Some(target)
                    })
            })
        })
}

/// The trust and nullness of a pointer read from `field` of structure
/// `container` through a pointer of trust `base` (`check_ptr_to_btf_access`
/// for non-sleepable programs, which run in an RCU read section, when
/// `in_rcu` holds).
pub(crate) fn loaded_trust(
    btf: &Btf,
    base: Trust,
    container: u32,
    field: &str,
    target: u32,
    via_union: bool,
    in_rcu: bool,
) -> (Trust, bool) {
    let walked = if via_union {
        Trust::Untrusted
    } else {
        Trust::Plain
    };
    match base {
        Trust::Untrusted => (Trust::Untrusted, false),
        Trust::Plain => (walked, false),
        Trust::Trusted | Trust::Rcu => {
            let is = |suffix| listed(btf, container, field, target, suffix);
            let or_untrusted = |t: Trust| if via_union { Trust::Untrusted } else { t };
            if is("__safe_trusted") {
                (or_untrusted(Trust::Trusted), false)
            } else if is("__safe_trusted_or_null") {
                (or_untrusted(Trust::Trusted), true)
            } else if !in_rcu {
                (Trust::Untrusted, false)
            } else if is("__safe_rcu") {
                (or_untrusted(Trust::Rcu), false)
            } else if is("__safe_rcu_or_null") {
                // Always trusted, even through a union.
                (Trust::Rcu, true)
            } else {
                (walked, false)
            }
        }
    }
}

/// The arguments of the kernel function or tracepoint a tracing program
/// attaches to, from the kernel's BTF (`prog->aux->attach_func_proto`).
#[derive(Clone, Debug)]
pub(crate) struct TracedFunc {
    /// The name, for messages.
    pub name: String,
    /// Parameters: type id and name (a tracepoint's first, `void
    /// *__data`, included).
    params: Vec<(u32, String)>,
    /// The return type (0: void).
    ret: u32,
    /// A tracepoint (`btf_trace_NAME`): its first parameter is not the
    /// program's (`attach_btf_trace`).
    tracepoint: bool,
}

/// What a tracing program's context word holds (`btf_ctx_access`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CtxArg {
    /// A number (an integer, an enum, a structure passed by value, a
    /// pointer to something that is not a structure).
    Scalar,
    /// A pointer to the kernel structure with this id.
    Ptr {
        /// The structure.
        id: u32,
        /// Declared `__nullable`: may be NULL.
        nullable: bool,
    },
}

/// The function `name` (`fentry`, `fexit`, `fmod_ret`) or tracepoint
/// (`tp_btf`) from the kernel's BTF, if it has one.
pub(crate) fn traced_func(btf: &Btf, name: &str, tracepoint: bool) -> Option<TracedFunc> {
    let proto = if tracepoint {
        // typedef void (*btf_trace_NAME)(void *__data, args...).
        let id = btf
            .by_name(&format!("btf_trace_{name}"))
            .into_iter()
            .find(|&id| btf.kind(id) == Some(Kind::Typedef))?;
        let (_, ptr) = btf.resolve(id)?;
        if ptr.kind != Kind::Ptr {
            return None;
        }
        btf.resolve(ptr.size_or_type)?.1
    } else {
        let id = btf
            .by_name(name)
            .into_iter()
            .find(|&id| btf.kind(id) == Some(Kind::Func))?;
        btf.get(btf.get(id)?.size_or_type)?
    };
    if proto.kind != Kind::FuncProto {
        return None;
    }
    Some(TracedFunc {
        name: name.to_string(),
        params: proto
            .params
            .iter()
            .map(|p| (p.type_id, p.name.clone()))
            .collect(),
        ret: proto.size_or_type,
        tracepoint,
    })
}

/// Bytes a value of type `id` takes among the context's words: 8 for a
/// pointer, its size rounded up to 8 otherwise (0 for void).
fn slot_bytes(btf: &Btf, id: u32) -> u32 {
    match btf.resolve(id) {
        Some((_, t)) if t.kind == Kind::Ptr => 8,
        Some((_, t)) if t.kind != Kind::Func && t.kind != Kind::FuncProto => {
            t.size_or_type.div_ceil(8).saturating_mul(8)
        }
        _ => 0,
    }
}

/// What reading `size` bytes at `off` of a tracing program's context
/// gives (`btf_ctx_access`, after `tracing_prog_is_valid_access`'s
/// checks), or the kernel's log line for a refusal. `ret` says the
/// return value follows the arguments (`fexit`), `fmod_ret` that it
/// must be an integer.
pub(crate) fn ctx_arg(
    btf: &Btf,
    f: &TracedFunc,
    off: u32,
    size: u32,
    ret: bool,
    fmod_ret: bool,
) -> Result<CtxArg, String> {
    let tname = &f.name;
    if !off.is_multiple_of(8) {
        return Err(format!("func '{tname}' offset {off} is not multiple of 8"));
    }
    // `btf_ctx_arg_idx`, over the whole prototype.
    let mut end = 0u32;
    let mut arg = f.params.len().saturating_add(1);
    for (i, &(ty, _)) in f.params.iter().enumerate() {
        end = end.saturating_add(slot_bytes(btf, ty));
        if off < end {
            arg = i;
            break;
        }
    }
    if arg > f.params.len() {
        end = end.saturating_add(slot_bytes(btf, f.ret));
        if off < end {
            arg = f.params.len();
        }
    }
    let params: &[(u32, String)] = if f.tracepoint {
        f.params.get(1..).unwrap_or(&[])
    } else {
        &f.params
    };
    let nr_args = params.len();
    let missing = || {
        format!(
            "func '{tname}' doesn't have {}-th argument",
            arg.saturating_add(1)
        )
    };
    if arg > nr_args {
        return Err(missing());
    }
    let (ty, nullable) = if arg == nr_args {
        if fmod_ret {
            let small_int = btf
                .resolve(f.ret)
                .is_some_and(|(_, t)| t.kind == Kind::Int && t.size_or_type <= 8);
            if !small_int {
                return Err(format!(
                    "ret type {} not allowed for fmod_ret",
                    btf.describe(f.ret)
                ));
            }
            (f.ret, false)
        } else if ret {
            (f.ret, false)
        } else {
            return Err(missing());
        }
    } else {
        let (ty, name) = &params[arg];
        (*ty, name.ends_with("__nullable"))
    };
    let Some((_, t)) = btf.resolve(ty) else {
        // void: nothing is there to read.
        return Err(missing());
    };
    if (t.kind == Kind::Int && t.size_or_type <= 8) || t.is_any_enum() || t.is_composite() {
        return Ok(CtxArg::Scalar);
    }
    if t.kind != Kind::Ptr {
        return Err(format!(
            "func '{tname}' arg{arg} has type {}. Only pointer access is allowed",
            btf.describe(ty)
        ));
    }
    if size != 8 {
        return Err(format!("func '{tname}' size {size} must be 8"));
    }
    match btf.resolve(t.size_or_type) {
        Some((id, pointee)) if pointee.kind == Kind::Struct || pointee.kind == Kind::Union => {
            Ok(CtxArg::Ptr { id, nullable })
        }
        _ => Ok(CtxArg::Scalar),
    }
}

/// The kernel structure behind a map of type `map_type` (its ops'
/// `map_btf_id`), which programs may read through the map's pointer.
pub(crate) fn map_struct(map_type: u32) -> Option<&'static str> {
    Some(match map_type {
        // Arrays: plain, per-CPU, programs, perf events, cgroups, maps.
        2 | 3 | 4 | 6 | 8 | 12 => "bpf_array",
        // Hashes: plain, per-CPU, LRU (and per-CPU), maps.
        1 | 5 | 9 | 10 | 13 => "bpf_htab",
        7 => "bpf_stack_map",
        11 => "lpm_trie",
        14 | 25 => "bpf_dtab",
        15 => "bpf_stab",
        16 => "bpf_cpu_map",
        17 => "xsk_map",
        18 => "bpf_shtab",
        20 => "reuseport_array",
        22 | 23 => "bpf_queue_stack",
        24 | 28 | 29 | 32 => "bpf_local_storage_map",
        27 | 31 => "bpf_ringbuf_map",
        30 => "bpf_bloom_filter",
        _ => return None,
    })
}

/// The id of the kernel structure called `name`.
pub(crate) fn struct_id(btf: &Btf, name: &str) -> Option<u32> {
    btf.by_name(name)
        .into_iter()
        .find(|&id| btf.kind(id) == Some(Kind::Struct))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use userbpf_vm::object::TargetBtf;

    fn kernel() -> Option<Arc<Btf>> {
        let loaded = TargetBtf::System.load().ok()?;
        loaded.origin.starts_with('/').then_some(loaded.btf)
    }

    /// A field found through the kernel's BTF reads as the field's kind:
    /// `pid` a number, `real_parent` a task, `comm` bytes; a pointer read
    /// in part is refused.
    #[test]
    fn task_struct_fields() {
        let Some(btf) = kernel() else {
            println!("SKIP task_struct_fields: no readable /sys/kernel/btf/vmlinux");
            return;
        };
        let task = struct_id(&btf, "task_struct").expect("task_struct");
        let t = btf.get(task).expect("type");
        let field = |name: &str| {
            t.members
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.offset / 8)
                .expect("field")
        };
        assert_eq!(
            struct_access(&btf, task, field("pid"), 4),
            Ok(Walked::Scalar)
        );
        assert_eq!(
            struct_access(&btf, task, field("real_parent"), 8),
            Ok(Walked::Ptr {
                id: task,
                field: "real_parent".to_string(),
                via_union: false
            })
        );
        assert!(struct_access(&btf, task, field("real_parent") + 1, 4)
            .unwrap_err()
            .starts_with("cannot access ptr member real_parent"));
        assert_eq!(
            struct_access(&btf, task, field("comm") + 3, 8),
            Ok(Walked::Scalar)
        );
        assert!(struct_access(&btf, task, t.size_or_type, 1)
            .unwrap_err()
            .starts_with("access beyond struct task_struct"));
        // The kernel lists real_parent as RCU-protected.
        assert_eq!(
            loaded_trust(&btf, Trust::Trusted, task, "real_parent", task, false, true),
            (Trust::Rcu, false)
        );
        assert_eq!(
            loaded_trust(
                &btf,
                Trust::Trusted,
                task,
                "real_parent",
                task,
                false,
                false
            ),
            (Trust::Untrusted, false)
        );
    }
}
