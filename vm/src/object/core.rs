//! CO-RE ("compile once, run everywhere") relocations, with libbpf's
//! semantics (`tools/lib/bpf/relo_core.c`).
//!
//! clang records, for every instruction whose constant depends on a type
//! layout (`BPF_CORE_READ()`, `bpf_core_field_exists()`, any access through
//! a `preserve_access_index` struct such as vmlinux.h's), a `struct
//! bpf_core_relo` in `.BTF.ext`: the local root type, an access string
//! (`"0:1:2"`: pointer index, then member or array indexes) and a kind. For
//! each, the types of the target BTF with the same *essential* name (the
//! name without a `___flavor` suffix) and a compatible kind are candidates;
//! the access is matched by member *names* in each candidate (anonymous
//! members searched recursively), all matching candidates must agree, and
//! the instruction is patched: the `imm` of ALU/ALU64 and `lddw`, or the
//! `off` (and, for pointers and unsigned integers of another size, the
//! access size) of LDX/ST/STX. The instruction's original constant must
//! equal what the local BTF gives, or the relocation is refused.
//!
//! When no candidate matches, existence checks (`FIELD_EXISTS`,
//! `TYPE_EXISTS`, `ENUMVAL_EXISTS`, `TYPE_MATCHES`) and type sizes and ids
//! become 0, and every other relocation *poisons* its instruction as
//! libbpf does: it becomes `call 0xbad2310` ([`CORE_POISON_HELPER`]), a
//! helper that is never registered. Dead code guarded by an existence check
//! never runs it; if it runs, the interpreter stops with
//! [`FaultKind::PoisonedCoreRelocation`](crate::interp::FaultKind) and the
//! object's [`CoreFailure`](super::CoreFailure) for that pc says which
//! relocation failed.

use std::collections::HashMap;

use super::btf::{essential_name_len, Btf, Kind, Type, BTF_INT_SIGNED};
use super::btf_ext::CoreRelo;
use crate::insn::{op, Insn};
pub use crate::interp::CORE_POISON_HELPER;

/// `BPF_CORE_SPEC_MAX_LEN`: the deepest access libbpf follows.
const SPEC_MAX_LEN: usize = 64;
/// Recursion limit for type comparisons.
const MAX_DEPTH: i32 = 32;
/// Members and types one relocation may visit: the kernel's BTF has no
/// cycles through embedded members, but a crafted object's may, and a
/// search through them would never end.
const VISIT_BUDGET: u32 = 1 << 20;

/// Counts visits against [`VISIT_BUDGET`].
fn visit(budget: &mut u32) -> Result<(), String> {
    *budget = budget
        .checked_sub(1)
        .ok_or_else(|| "too many types visited (cyclic BTF?)".to_string())?;
    Ok(())
}

/// `enum bpf_core_relo_kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ReloKind {
    FieldByteOffset,
    FieldByteSize,
    FieldExists,
    FieldSigned,
    FieldLshiftU64,
    FieldRshiftU64,
    TypeIdLocal,
    TypeIdTarget,
    TypeExists,
    TypeSize,
    EnumvalExists,
    EnumvalValue,
    TypeMatches,
}

impl ReloKind {
    /// The kind numbered `k`.
    pub fn from_u32(k: u32) -> Option<ReloKind> {
        use ReloKind::*;
        Some(match k {
            0 => FieldByteOffset,
            1 => FieldByteSize,
            2 => FieldExists,
            3 => FieldSigned,
            4 => FieldLshiftU64,
            5 => FieldRshiftU64,
            6 => TypeIdLocal,
            7 => TypeIdTarget,
            8 => TypeExists,
            9 => TypeSize,
            10 => EnumvalExists,
            11 => EnumvalValue,
            12 => TypeMatches,
            _ => return None,
        })
    }

    /// libbpf's name for the kind (`byte_off`, `field_exists`, ...).
    pub fn name(self) -> &'static str {
        use ReloKind::*;
        match self {
            FieldByteOffset => "byte_off",
            FieldByteSize => "byte_sz",
            FieldExists => "field_exists",
            FieldSigned => "signed",
            FieldLshiftU64 => "lshift_u64",
            FieldRshiftU64 => "rshift_u64",
            TypeIdLocal => "local_type_id",
            TypeIdTarget => "target_type_id",
            TypeExists => "type_exists",
            TypeSize => "type_size",
            EnumvalExists => "enumval_exists",
            EnumvalValue => "enumval_value",
            TypeMatches => "type_matches",
        }
    }

    fn is_field(self) -> bool {
        use ReloKind::*;
        matches!(
            self,
            FieldByteOffset
                | FieldByteSize
                | FieldExists
                | FieldSigned
                | FieldLshiftU64
                | FieldRshiftU64
        )
    }

    fn is_type(self) -> bool {
        use ReloKind::*;
        matches!(
            self,
            TypeIdLocal | TypeIdTarget | TypeExists | TypeSize | TypeMatches
        )
    }

    fn is_enumval(self) -> bool {
        matches!(self, ReloKind::EnumvalExists | ReloKind::EnumvalValue)
    }
}

/// One high-level step of an access: a named member, or an array index
/// (`name` is `None`; the first step is the pointer index).
#[derive(Clone, Debug, Default)]
struct Accessor {
    /// The composite (member) or element (array) type, modifiers skipped.
    type_id: u32,
    idx: u32,
    name: Option<String>,
}

/// A parsed access (libbpf's `struct bpf_core_spec`).
#[derive(Clone, Debug, Default)]
struct Spec {
    root_type_id: u32,
    /// Every step, anonymous members included.
    raw: Vec<u32>,
    /// Named members and array indexes.
    acc: Vec<Accessor>,
    bit_offset: u32,
    /// Visits left for the member search.
    budget: u32,
}

/// A type with modifiers and typedefs skipped; `None` is `void`.
type Resolved = Option<(u32, Type)>;

/// Skips modifiers and typedefs; id 0 is `void`.
fn skip(btf: &Btf, id: u32) -> Result<Resolved, String> {
    if id == 0 {
        return Ok(None);
    }
    let mut id = id;
    for _ in 0..MAX_DEPTH {
        if id == 0 {
            return Ok(None);
        }
        let t = btf
            .get(id)
            .ok_or_else(|| format!("type id {id} does not exist"))?;
        match t.kind {
            Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                id = t.size_or_type
            }
            _ => return Ok(Some((id, t))),
        }
    }
    Err(format!("type id {id}: modifier chain too long"))
}

fn skip_some(btf: &Btf, id: u32) -> Result<(u32, Type), String> {
    skip(btf, id)?.ok_or_else(|| "unexpected void type".to_string())
}

fn size_of(btf: &Btf, id: u32) -> Result<u32, String> {
    btf.size_of(id)
        .ok_or_else(|| format!("size of {} is unknown", btf.describe(id)))
}

fn kinds_compat(a: Kind, b: Kind) -> bool {
    let any_enum = |k| matches!(k, Kind::Enum | Kind::Enum64);
    a == b || (any_enum(a) && any_enum(b))
}

fn essential(name: &str) -> &[u8] {
    let b = name.as_bytes();
    &b[..essential_name_len(b)]
}

fn add(a: u32, b: u32) -> Result<u32, String> {
    a.checked_add(b)
        .ok_or_else(|| "bit offset overflows".to_string())
}

fn elem_bits(idx: u32, size: u32) -> Result<u32, String> {
    idx.checked_mul(size)
        .and_then(|v| v.checked_mul(8))
        .ok_or_else(|| "bit offset overflows".to_string())
}

/// Whether the array reached through `acc` (the accessor of the member
/// holding it) is a flexible array member: zero elements, last member.
fn is_flex_arr(btf: &Btf, acc: Option<&Accessor>, nelems: u32) -> bool {
    let Some(acc) = acc else { return false };
    if acc.name.is_none() || nelems > 0 {
        return false;
    }
    btf.get(acc.type_id)
        .is_some_and(|t| t.vlen > 0 && acc.idx == t.vlen - 1)
}

/// Parses access string `spec_str` of `root` (`bpf_core_parse_spec`).
fn parse_spec(btf: &Btf, root: u32, spec_str: &str, kind: ReloKind) -> Result<Spec, String> {
    if spec_str.is_empty() || spec_str.starts_with(':') {
        return Err(format!("invalid access string `{spec_str}`"));
    }
    let mut spec = Spec {
        root_type_id: root,
        ..Spec::default()
    };
    if kind.is_type() {
        if spec_str != "0" {
            return Err(format!(
                "type relocation with access string `{spec_str}` (expected `0`)"
            ));
        }
        return Ok(spec);
    }
    for part in spec_str.split(':') {
        let idx: u32 = part
            .parse()
            .map_err(|_| format!("invalid access string `{spec_str}`"))?;
        if spec.raw.len() == SPEC_MAX_LEN {
            return Err(format!("access string `{spec_str}` is too deep"));
        }
        spec.raw.push(idx);
    }
    let (mut id, t) = skip_some(btf, root)?;
    let first = spec.raw[0];
    spec.acc.push(Accessor {
        type_id: id,
        idx: first,
        name: None,
    });
    if kind.is_enumval() {
        if !t.is_any_enum() || spec.raw.len() > 1 || first >= t.vlen {
            return Err(format!(
                "enumerator access `{spec_str}` does not fit {}",
                btf.describe(root)
            ));
        }
        spec.acc[0].name = t.enumerators.get(first as usize).map(|e| e.name.clone());
        return Ok(spec);
    }
    spec.bit_offset = elem_bits(first, size_of(btf, id)?)?;
    for i in 1..spec.raw.len() {
        let (rid, t) = skip_some(btf, id)?;
        id = rid;
        let idx = spec.raw[i];
        if t.is_composite() {
            let m = t
                .members
                .get(idx as usize)
                .ok_or_else(|| format!("member {idx} of {} does not exist", btf.describe(id)))?;
            spec.bit_offset = add(spec.bit_offset, m.offset)?;
            if !m.name.is_empty() {
                spec.acc.push(Accessor {
                    type_id: id,
                    idx,
                    name: Some(m.name.clone()),
                });
            }
            id = m.type_id;
        } else if t.kind == Kind::Array {
            let (elem, nelems) = t.array.unwrap_or((0, 0));
            let (eid, _) = skip_some(btf, elem)?;
            if !is_flex_arr(btf, spec.acc.last(), nelems) && idx >= nelems {
                return Err(format!(
                    "index {idx} is past the {nelems} elements of the array"
                ));
            }
            spec.acc.push(Accessor {
                type_id: eid,
                idx,
                name: None,
            });
            spec.bit_offset = add(spec.bit_offset, elem_bits(idx, size_of(btf, eid)?)?)?;
            id = eid;
        } else {
            return Err(format!(
                "access `{spec_str}` step {i} reaches {}, neither a struct, union nor array",
                btf.describe(id)
            ));
        }
    }
    Ok(spec)
}

/// `bpf_core_fields_are_compat`.
fn fields_compat(local: &Btf, lid: u32, targ: &Btf, tid: u32) -> Result<bool, String> {
    let (mut lid, mut tid) = (lid, tid);
    for _ in 0..MAX_DEPTH {
        let (Some((_, l)), Some((_, t))) = (skip(local, lid)?, skip(targ, tid)?) else {
            return Ok(false);
        };
        if l.is_composite() && t.is_composite() {
            return Ok(true);
        }
        if !kinds_compat(l.kind, t.kind) {
            return Ok(false);
        }
        return Ok(match l.kind {
            Kind::Ptr | Kind::Float => true,
            Kind::Fwd | Kind::Enum | Kind::Enum64 => {
                let (ln, tn) = (essential(&l.name), essential(&t.name));
                ln.is_empty() || tn.is_empty() || ln == tn
            }
            Kind::Int => l.int_offset() == 0 && t.int_offset() == 0,
            Kind::Array => {
                lid = l.array.map_or(0, |a| a.0);
                tid = t.array.map_or(0, |a| a.0);
                continue;
            }
            _ => false,
        });
    }
    Err("array nesting too deep".to_string())
}

/// `bpf_core_match_member`: finds the member named like the local
/// accessor's in target type `targ_id`, searching anonymous members.
fn match_member(
    local: &Btf,
    local_acc: &Accessor,
    targ: &Btf,
    targ_id: u32,
    spec: &mut Spec,
    next_targ_id: &mut u32,
) -> Result<bool, String> {
    let Some((targ_id, tt)) = skip(targ, targ_id)? else {
        return Ok(false);
    };
    if !tt.is_composite() {
        return Ok(false);
    }
    let lt = local
        .get(local_acc.type_id)
        .ok_or("local accessor type vanished")?;
    let lm = lt
        .members
        .get(local_acc.idx as usize)
        .ok_or("local accessor member vanished")?;
    for (i, m) in tt.members.iter().enumerate() {
        visit(&mut spec.budget)?;
        if spec.raw.len() == SPEC_MAX_LEN {
            return Err("struct/union/array nesting is too deep".to_string());
        }
        spec.bit_offset = add(spec.bit_offset, m.offset)?;
        spec.raw.push(i as u32);
        if m.name.is_empty() {
            if match_member(local, local_acc, targ, m.type_id, spec, next_targ_id)? {
                return Ok(true);
            }
        } else if m.name == lm.name {
            spec.acc.push(Accessor {
                type_id: targ_id,
                idx: i as u32,
                name: Some(m.name.clone()),
            });
            *next_targ_id = m.type_id;
            let found = fields_compat(local, lm.type_id, targ, m.type_id)?;
            if !found {
                spec.acc.pop();
            }
            return Ok(found);
        }
        spec.bit_offset = spec.bit_offset.saturating_sub(m.offset);
        spec.raw.pop();
    }
    Ok(false)
}

/// `__bpf_core_types_are_compat` (type-based relocations).
fn types_compat(
    local: &Btf,
    lid: u32,
    targ: &Btf,
    tid: u32,
    level: i32,
    budget: &mut u32,
) -> Result<bool, String> {
    let (mut lid, mut tid) = (lid, tid);
    for _ in 0..MAX_DEPTH {
        visit(budget)?;
        let (l, t) = match (skip(local, lid)?, skip(targ, tid)?) {
            (None, None) => return Ok(true),
            (Some((_, l)), Some((_, t))) => (l, t),
            _ => return Ok(false),
        };
        if !kinds_compat(l.kind, t.kind) {
            return Ok(false);
        }
        match l.kind {
            Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 | Kind::Fwd => return Ok(true),
            Kind::Int => return Ok(l.int_offset() == 0 && t.int_offset() == 0),
            Kind::Ptr => (lid, tid) = (l.size_or_type, t.size_or_type),
            Kind::Array => {
                lid = l.array.map_or(0, |a| a.0);
                tid = t.array.map_or(0, |a| a.0);
            }
            Kind::FuncProto => {
                if l.params.len() != t.params.len() {
                    return Ok(false);
                }
                for (lp, tp) in l.params.iter().zip(&t.params) {
                    if level <= 0 {
                        return Err("function prototypes nest too deep".to_string());
                    }
                    if !types_compat(local, lp.type_id, targ, tp.type_id, level - 1, budget)? {
                        return Ok(false);
                    }
                }
                (lid, tid) = (l.size_or_type, t.size_or_type);
            }
            _ => return Ok(false),
        }
    }
    Err("type nesting too deep".to_string())
}

/// `bpf_core_names_match`: essential names equal (an anonymous target
/// only matches an anonymous local).
fn names_match(local: &str, targ: &str) -> bool {
    if targ.is_empty() {
        return local.is_empty();
    }
    essential(local) == essential(targ)
}

/// `__bpf_core_types_match` (`bpf_core_type_matches()`).
fn types_match(
    local: &Btf,
    (lid, tid): (u32, u32),
    targ: &Btf,
    behind_ptr: bool,
    level: i32,
    budget: &mut u32,
) -> Result<bool, String> {
    if level <= 0 {
        return Err("types nest too deep".to_string());
    }
    let (mut lid, mut tid, mut behind_ptr) = (lid, tid, behind_ptr);
    for _ in 0..MAX_DEPTH {
        visit(budget)?;
        let (l, t) = match (skip(local, lid)?, skip(targ, tid)?) {
            (None, None) => return Ok(true),
            (Some((_, l)), Some((_, t))) => (l, t),
            _ => return Ok(false),
        };
        if !names_match(&l.name, &t.name) {
            return Ok(false);
        }
        match l.kind {
            Kind::Fwd => {
                return Ok(if behind_ptr && t.kind != Kind::Fwd {
                    (t.kind == Kind::Struct && !l.kind_flag)
                        || (t.kind == Kind::Union && l.kind_flag)
                } else {
                    t.kind == Kind::Fwd && l.kind_flag == t.kind_flag
                });
            }
            Kind::Enum | Kind::Enum64 => {
                if !t.is_any_enum() || l.size_or_type != t.size_or_type || l.vlen > t.vlen {
                    return Ok(false);
                }
                return Ok(l.enumerators.iter().all(|le| {
                    t.enumerators
                        .iter()
                        .any(|te| names_match(&le.name, &te.name))
                }));
            }
            Kind::Struct | Kind::Union => {
                if behind_ptr {
                    if l.kind == t.kind {
                        return Ok(true);
                    }
                    return Ok(t.kind == Kind::Fwd && (l.kind == Kind::Union) == t.kind_flag);
                }
                if l.kind != t.kind || l.vlen > t.vlen {
                    return Ok(false);
                }
                for lm in &l.members {
                    let mut matched = false;
                    for tm in &t.members {
                        if !names_match(&lm.name, &tm.name) {
                            continue;
                        }
                        let ids = (lm.type_id, tm.type_id);
                        if types_match(local, ids, targ, behind_ptr, level - 1, budget)? {
                            matched = true;
                            break;
                        }
                    }
                    if !matched {
                        return Ok(false);
                    }
                }
                return Ok(true);
            }
            Kind::Int => {
                let sign = |x: &Type| x.int_encoding() & BTF_INT_SIGNED;
                return Ok(t.kind == Kind::Int
                    && l.int_bits() == t.int_bits()
                    && sign(&l) == sign(&t));
            }
            Kind::Ptr => {
                if t.kind != Kind::Ptr {
                    return Ok(false);
                }
                behind_ptr = true;
                (lid, tid) = (l.size_or_type, t.size_or_type);
            }
            Kind::Array => {
                let (Some(la), Some(ta)) = (l.array, t.array) else {
                    return Ok(false);
                };
                if t.kind != Kind::Array || la.1 != ta.1 {
                    return Ok(false);
                }
                (lid, tid) = (la.0, ta.0);
            }
            Kind::FuncProto => {
                if t.kind != Kind::FuncProto || l.params.len() != t.params.len() {
                    return Ok(false);
                }
                for (lp, tp) in l.params.iter().zip(&t.params) {
                    let ids = (lp.type_id, tp.type_id);
                    if !types_match(local, ids, targ, behind_ptr, level - 1, budget)? {
                        return Ok(false);
                    }
                }
                (lid, tid) = (l.size_or_type, t.size_or_type);
            }
            _ => return Ok(false),
        }
    }
    Err("type nesting too deep".to_string())
}

/// `bpf_core_spec_match`: the target spec of `local_spec` in candidate
/// `targ_id`, or `None` if it does not match.
fn spec_match(
    local: &Btf,
    local_spec: &Spec,
    kind: ReloKind,
    targ: &Btf,
    targ_id: u32,
) -> Result<Option<Spec>, String> {
    let mut ts = Spec {
        root_type_id: targ_id,
        budget: VISIT_BUDGET,
        ..Spec::default()
    };
    if kind.is_type() {
        let root = local_spec.root_type_id;
        let budget = &mut ts.budget;
        let ok = if kind == ReloKind::TypeMatches {
            types_match(local, (root, targ_id), targ, false, MAX_DEPTH, budget)?
        } else {
            let (lk, tk) = (local.kind(root), targ.kind(targ_id));
            lk.zip(tk).is_some_and(|(l, t)| kinds_compat(l, t))
                && types_compat(local, root, targ, targ_id, MAX_DEPTH, budget)?
        };
        return Ok(ok.then_some(ts));
    }
    if kind.is_enumval() {
        let Some((tid, tt)) = skip(targ, targ_id)? else {
            return Ok(None);
        };
        if !tt.is_any_enum() {
            return Ok(None);
        }
        let lname = local_spec.acc[0].name.as_deref().unwrap_or("");
        for (i, e) in tt.enumerators.iter().enumerate() {
            if essential(&e.name) == essential(lname) {
                ts.acc.push(Accessor {
                    type_id: tid,
                    idx: i as u32,
                    name: Some(e.name.clone()),
                });
                ts.raw.push(i as u32);
                return Ok(Some(ts));
            }
        }
        return Ok(None);
    }
    let mut targ_id = targ_id;
    for (i, la) in local_spec.acc.iter().enumerate() {
        let (tid, tt) = skip_some(targ, targ_id)?;
        targ_id = tid;
        if la.name.is_some() {
            if !match_member(local, la, targ, targ_id, &mut ts, &mut targ_id)? {
                return Ok(None);
            }
        } else {
            if i > 0 {
                let Some((elem, nelems)) = tt.array.filter(|_| tt.kind == Kind::Array) else {
                    return Ok(None);
                };
                if !is_flex_arr(targ, ts.acc.last(), nelems) && la.idx >= nelems {
                    return Ok(None);
                }
                targ_id = skip_some(targ, elem)?.0;
            }
            if ts.raw.len() == SPEC_MAX_LEN {
                return Err("struct/union/array nesting is too deep".to_string());
            }
            ts.acc.push(Accessor {
                type_id: targ_id,
                idx: la.idx,
                name: None,
            });
            ts.raw.push(la.idx);
            let bits = elem_bits(la.idx, size_of(targ, targ_id)?)?;
            ts.bit_offset = add(ts.bit_offset, bits)?;
        }
    }
    Ok(Some(ts))
}

/// A value could not be computed: poison the instruction, or refuse.
enum CalcError {
    Poison,
    Fail(String),
}

impl From<String> for CalcError {
    fn from(s: String) -> CalcError {
        CalcError::Fail(s)
    }
}

impl From<&str> for CalcError {
    fn from(s: &str) -> CalcError {
        CalcError::Fail(s.to_string())
    }
}

#[derive(Default)]
struct FieldValue {
    val: u64,
    size: u32,
    type_id: u32,
    validate: bool,
}

/// `bpf_core_calc_field_relo`.
fn calc_field(kind: ReloKind, spec: Option<(&Btf, &Spec)>) -> Result<FieldValue, CalcError> {
    let mut out = FieldValue {
        validate: true,
        ..FieldValue::default()
    };
    if kind == ReloKind::FieldExists {
        out.val = u64::from(spec.is_some());
        return Ok(out);
    }
    let Some((btf, spec)) = spec else {
        return Err(CalcError::Poison);
    };
    let acc = spec.acc.last().ok_or("empty access")?;
    if acc.name.is_none() {
        let sz = size_of(btf, acc.type_id)?;
        match kind {
            ReloKind::FieldByteOffset => {
                out.val = u64::from(spec.bit_offset / 8);
                out.size = sz;
                out.type_id = acc.type_id;
            }
            ReloKind::FieldByteSize => out.val = u64::from(sz),
            _ => {
                return Err(CalcError::Fail(format!(
                    "{} cannot be applied to an array element",
                    kind.name()
                )))
            }
        }
        return Ok(out);
    }
    let t = btf.get(acc.type_id).ok_or("accessor type vanished")?;
    let m = t
        .members
        .get(acc.idx as usize)
        .ok_or("accessor member vanished")?;
    let (field_type_id, mt) = skip_some(btf, m.type_id)?;
    let bit_off = spec.bit_offset;
    let mut bit_sz = m.bitfield_size;
    let bitfield = bit_sz > 0;
    let (mut byte_sz, mut byte_off);
    if bitfield {
        byte_sz = mt.size_or_type;
        if byte_sz == 0 {
            return Err(CalcError::Fail("bitfield of a zero-sized type".to_string()));
        }
        byte_off = bit_off / 8 / byte_sz * byte_sz;
        while u64::from(bit_off) + u64::from(bit_sz) - u64::from(byte_off) * 8
            > u64::from(byte_sz) * 8
        {
            if byte_sz >= 8 {
                return Err(CalcError::Fail(
                    "the bitfield cannot be read with a 64-bit load".to_string(),
                ));
            }
            byte_sz *= 2;
            byte_off = bit_off / 8 / byte_sz * byte_sz;
        }
    } else {
        byte_sz = size_of(btf, field_type_id)?;
        byte_off = bit_off / 8;
        bit_sz = byte_sz.wrapping_mul(8);
    }
    out.validate = !bitfield;
    // libbpf computes the shifts in 32 bits.
    let in_bits = bit_off
        .wrapping_add(bit_sz)
        .wrapping_sub(byte_off.wrapping_mul(8));
    match kind {
        ReloKind::FieldByteOffset => {
            out.val = u64::from(byte_off);
            if !bitfield {
                out.size = byte_sz;
                out.type_id = field_type_id;
            }
        }
        ReloKind::FieldByteSize => out.val = u64::from(byte_sz),
        ReloKind::FieldSigned => {
            let signed = (mt.is_any_enum() && mt.kind_flag)
                || (mt.kind == Kind::Int && mt.int_encoding() & BTF_INT_SIGNED != 0);
            out.val = u64::from(signed);
            out.validate = true;
        }
        ReloKind::FieldLshiftU64 => out.val = u64::from(64u32.wrapping_sub(in_bits)),
        ReloKind::FieldRshiftU64 => {
            out.val = u64::from(64u32.wrapping_sub(bit_sz));
            out.validate = true;
        }
        _ => return Err(CalcError::Fail("not a field relocation".to_string())),
    }
    Ok(out)
}

/// `bpf_core_calc_type_relo`: value and whether to validate.
fn calc_type(kind: ReloKind, spec: Option<(&Btf, &Spec)>) -> Result<(u64, bool), CalcError> {
    let Some((btf, spec)) = spec else {
        return Ok((0, true));
    };
    Ok(match kind {
        ReloKind::TypeIdTarget => (u64::from(spec.root_type_id), false),
        ReloKind::TypeExists | ReloKind::TypeMatches => (1, true),
        ReloKind::TypeSize => (u64::from(size_of(btf, spec.root_type_id)?), true),
        _ => return Err(CalcError::Fail("not a type relocation".to_string())),
    })
}

/// `bpf_core_calc_enumval_relo`.
fn calc_enumval(kind: ReloKind, spec: Option<(&Btf, &Spec)>) -> Result<u64, CalcError> {
    match (kind, spec) {
        (ReloKind::EnumvalExists, s) => Ok(u64::from(s.is_some())),
        (_, None) => Err(CalcError::Poison),
        (_, Some((btf, spec))) => {
            let acc = spec.acc.first().ok_or("empty access")?;
            btf.get(acc.type_id)
                .and_then(|t| t.enumerators.get(acc.idx as usize).map(|e| e.value))
                .ok_or_else(|| CalcError::Fail("enumerator vanished".to_string()))
        }
    }
}

/// What to do with the instruction (`struct bpf_core_relo_res`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Resolution {
    orig_val: u64,
    new_val: u64,
    poison: bool,
    validate: bool,
    fail_memsz_adjust: bool,
    orig_sz: u32,
    new_sz: u32,
}

/// `bpf_core_calc_relo`.
fn calc_relo(
    kind: ReloKind,
    local: (&Btf, &Spec),
    targ: Option<(&Btf, &Spec)>,
) -> Result<Resolution, String> {
    let mut res = Resolution {
        validate: true,
        ..Resolution::default()
    };
    let outcome: Result<(), CalcError> = (|| {
        if kind.is_field() {
            let orig = calc_field(kind, Some(local))?;
            res.orig_val = orig.val;
            res.validate = orig.validate;
            res.orig_sz = orig.size;
            let new = calc_field(kind, targ)?;
            res.new_val = new.val;
            res.new_sz = new.size;
            if res.orig_sz != res.new_sz {
                let ot = local.0.get(orig.type_id);
                let nt = targ.and_then(|(b, _)| b.get(new.type_id));
                let unsigned_int =
                    |t: &Type| t.kind == Kind::Int && t.int_encoding() != BTF_INT_SIGNED;
                let ok = match (ot, nt) {
                    (Some(o), Some(n)) => {
                        (o.kind == Kind::Ptr && n.kind == Kind::Ptr)
                            || (unsigned_int(&o) && unsigned_int(&n))
                    }
                    _ => false,
                };
                res.fail_memsz_adjust = !ok;
            }
        } else if kind.is_type() {
            let (v, validate) = calc_type(kind, Some(local))?;
            res.orig_val = v;
            res.validate = validate;
            res.new_val = calc_type(kind, targ)?.0;
        } else {
            res.orig_val = calc_enumval(kind, Some(local))?;
            res.new_val = calc_enumval(kind, targ)?;
        }
        Ok(())
    })();
    match outcome {
        Ok(()) => Ok(res),
        Err(CalcError::Poison) => {
            res.poison = true;
            Ok(res)
        }
        Err(CalcError::Fail(m)) => Err(m),
    }
}

/// The instruction libbpf puts in place of one whose relocation failed.
pub fn poison_insn() -> Insn {
    Insn::new(op::CALL, 0, 0, 0, CORE_POISON_HELPER)
}

/// Resolves CO-RE relocations of one object against one target BTF,
/// caching candidates per local type as libbpf does.
pub(crate) struct Resolver<'a> {
    local: &'a Btf,
    target: &'a Btf,
    /// Local root type id -> candidate target ids (pruned to those that
    /// matched, once one did).
    cands: HashMap<u32, Vec<u32>>,
}

/// A relocation that could not be resolved and poisoned its instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Poisoned {
    /// What the relocation is about.
    pub what: String,
    /// Why it is poisoned, beyond "no match in the target".
    pub why: Option<String>,
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(local: &'a Btf, target: &'a Btf) -> Resolver<'a> {
        Resolver {
            local,
            target,
            cands: HashMap::new(),
        }
    }

    /// `bpf_core_find_cands`: target types with the same essential name
    /// and a compatible kind.
    fn find_cands(&self, local_type: &Type) -> Vec<u32> {
        let ess = essential(&local_type.name);
        self.target
            .by_essential_name(ess)
            .iter()
            .copied()
            .filter(|&id| {
                self.target
                    .kind(id)
                    .is_some_and(|k| kinds_compat(k, local_type.kind))
            })
            .collect()
    }

    /// A description of relocation `relo` for messages (`field
    /// \`di\` of \`struct pt_regs\``), from its local type and access.
    pub(crate) fn describe(&self, relo: &CoreRelo) -> String {
        let local = self.local;
        let root = local.describe(relo.type_id);
        let spec_str = local.str_at(relo.access_str_off);
        let Some(kind) = ReloKind::from_u32(relo.kind) else {
            return format!("kind {} on `{root}`", relo.kind);
        };
        let what = match parse_spec(local, relo.type_id, &spec_str, kind) {
            Ok(spec) if kind.is_field() => {
                let mut path = String::new();
                for (i, a) in spec.acc.iter().enumerate() {
                    match &a.name {
                        Some(n) if path.is_empty() => path.push_str(n),
                        Some(n) => {
                            path.push('.');
                            path.push_str(n);
                        }
                        None if i > 0 || a.idx > 0 => path.push_str(&format!("[{}]", a.idx)),
                        None => {}
                    }
                }
                format!("field `{path}` of `{root}`")
            }
            Ok(spec) if kind.is_enumval() => format!(
                "enumerator `{}` of `{root}`",
                spec.acc[0].name.as_deref().unwrap_or("?")
            ),
            _ => format!("type `{root}`"),
        };
        format!("{}: {what}, access {spec_str}", kind.name())
    }

    /// Resolves `relo` and patches `insns` (the instructions of its
    /// section). `Ok(Some(_))` when the instruction was poisoned.
    pub(crate) fn apply(
        &mut self,
        relo: &CoreRelo,
        insns: &mut [Insn],
    ) -> Result<Option<Poisoned>, String> {
        let kind = ReloKind::from_u32(relo.kind)
            .ok_or_else(|| format!("unknown CO-RE relocation kind {}", relo.kind))?;
        if !relo.insn_off.is_multiple_of(8) {
            return Err(format!(
                "instruction offset {:#x} is not a multiple of 8",
                relo.insn_off
            ));
        }
        let pc = (relo.insn_off / 8) as usize;
        if pc >= insns.len() {
            return Err(format!(
                "instruction {pc} is past the end of the section ({} instructions)",
                insns.len()
            ));
        }
        let local_type = self
            .local
            .get(relo.type_id)
            .ok_or_else(|| format!("local type id {} does not exist", relo.type_id))?;
        let spec_str = self.local.str_at(relo.access_str_off);
        if spec_str.is_empty() {
            return Err("empty access string".to_string());
        }
        let local_spec = parse_spec(self.local, relo.type_id, &spec_str, kind)
            .map_err(|e| format!("parsing the local access failed: {e}"))?;
        let res = if kind == ReloKind::TypeIdLocal {
            Resolution {
                orig_val: u64::from(relo.type_id),
                new_val: u64::from(relo.type_id),
                ..Resolution::default()
            }
        } else {
            if local_type.name.is_empty() {
                return Err(format!(
                    "{} relocations against anonymous types are not supported (nor by libbpf)",
                    kind.name()
                ));
            }
            self.resolve(relo.type_id, &local_type, &local_spec, kind)?
        };
        patch(insns, pc, &res)
    }

    /// `bpf_core_calc_relo_insn`: every candidate, checked for ambiguity.
    fn resolve(
        &mut self,
        local_id: u32,
        local_type: &Type,
        local_spec: &Spec,
        kind: ReloKind,
    ) -> Result<Resolution, String> {
        let cands = match self.cands.get(&local_id) {
            Some(c) => c.clone(),
            None => {
                let c = self.find_cands(local_type);
                self.cands.insert(local_id, c.clone());
                c
            }
        };
        let local = (self.local, local_spec);
        let mut kept = Vec::new();
        let mut chosen: Option<(Resolution, Spec)> = None;
        for &cand in &cands {
            let Some(ts) = spec_match(self.local, local_spec, kind, self.target, cand)
                .map_err(|e| format!("matching candidate {}: {e}", self.target.describe(cand)))?
            else {
                continue;
            };
            let res = calc_relo(kind, local, Some((self.target, &ts)))?;
            if let Some((prev, prev_spec)) = &chosen {
                if ts.bit_offset != prev_spec.bit_offset {
                    return Err(format!(
                        "field offset ambiguity: candidates {} disagree ({} != {} bits)",
                        self.target.describe(cand),
                        ts.bit_offset,
                        prev_spec.bit_offset
                    ));
                }
                if res.poison != prev.poison || res.new_val != prev.new_val {
                    return Err(format!(
                        "relocation decision ambiguity: candidate {} gives {}, another {}",
                        self.target.describe(cand),
                        res.new_val,
                        prev.new_val
                    ));
                }
            } else {
                chosen = Some((res, ts));
            }
            kept.push(cand);
        }
        if !kept.is_empty() {
            self.cands.insert(local_id, kept);
        }
        match chosen {
            Some((res, _)) => Ok(res),
            None => calc_relo(kind, local, None),
        }
    }
}

fn mem_size_bytes(code: u8) -> u32 {
    match code & 0x18 {
        op::SIZE_DW => 8,
        op::SIZE_W => 4,
        op::SIZE_H => 2,
        _ => 1,
    }
}

fn mem_size_code(bytes: u32) -> Option<u8> {
    Some(match bytes {
        8 => op::SIZE_DW,
        4 => op::SIZE_W,
        2 => op::SIZE_H,
        1 => op::SIZE_B,
        _ => return None,
    })
}

/// `bpf_core_patch_insn`.
fn patch(insns: &mut [Insn], pc: usize, res: &Resolution) -> Result<Option<Poisoned>, String> {
    let poison = |insns: &mut [Insn], why: Option<String>| {
        if insns[pc].code == op::LDDW {
            if let Some(next) = insns.get_mut(pc + 1) {
                *next = poison_insn();
            }
        }
        insns[pc] = poison_insn();
        Ok(Some(Poisoned {
            what: String::new(),
            why,
        }))
    };
    if res.poison {
        return poison(insns, None);
    }
    let insn = insns[pc];
    let (orig, new) = (res.orig_val, res.new_val);
    match insn.class() {
        op::CLS_ALU | op::CLS_ALU64 => {
            if insn.code & op::SRC_X != 0 {
                return Err(format!("cannot relocate {insn}: not an immediate operand"));
            }
            if res.validate && i64::from(insn.imm) as u64 != orig {
                return Err(format!(
                    "unexpected ALU/ALU64 immediate: got {}, expected {orig} (-> {new})",
                    insn.imm
                ));
            }
            insns[pc].imm = new as i32;
        }
        op::CLS_LDX | op::CLS_ST | op::CLS_STX => {
            if res.validate && i64::from(insn.off) as u64 != orig {
                return Err(format!(
                    "unexpected LDX/ST/STX offset: got {}, expected {orig} (-> {new})",
                    insn.off
                ));
            }
            if new > i16::MAX as u64 {
                return Err(format!("LDX/ST/STX offset {new} is too big"));
            }
            if res.fail_memsz_adjust {
                return poison(
                    insns,
                    Some(format!(
                        "the field is {} bytes in the target, {} here, and is neither a pointer \
                         nor an unsigned integer, so the access size cannot be adjusted",
                        res.new_sz, res.orig_sz
                    )),
                );
            }
            insns[pc].off = new as i16;
            if res.new_sz != res.orig_sz {
                let have = mem_size_bytes(insn.code);
                if have != res.orig_sz {
                    return Err(format!(
                        "unexpected memory access size {have}, expected {}",
                        res.orig_sz
                    ));
                }
                let size = mem_size_code(res.new_sz)
                    .ok_or_else(|| format!("invalid new memory access size {}", res.new_sz))?;
                insns[pc].code = (insn.code & !0x18) | size;
            }
        }
        op::CLS_LD => {
            let next = insns.get(pc + 1).copied();
            let Some(next) = next.filter(|n| {
                insn.code == op::LDDW
                    && insn.src == 0
                    && insn.off == 0
                    && n.code == 0
                    && n.dst == 0
                    && n.src == 0
                    && n.off == 0
            }) else {
                return Err(format!("{insn} is not a plain lddw"));
            };
            let imm = u64::from(insn.imm as u32) | u64::from(next.imm as u32) << 32;
            if res.validate && imm != orig {
                return Err(format!(
                    "unexpected lddw value: got {imm}, expected {orig} (-> {new})"
                ));
            }
            insns[pc].imm = new as i32;
            insns[pc + 1].imm = (new >> 32) as i32;
        }
        _ => return Err(format!("cannot relocate {insn}")),
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in 0..13 {
            assert!(ReloKind::from_u32(k).is_some());
        }
        assert!(ReloKind::from_u32(13).is_none());
    }

    #[test]
    fn patching_checks_the_original_value() {
        let res = Resolution {
            orig_val: 8,
            new_val: 112,
            validate: true,
            ..Resolution::default()
        };
        // r0 = *(u64 *)(r1 + 8)
        let mut insns = [Insn::new(0x79, 0, 1, 8, 0)];
        assert_eq!(patch(&mut insns, 0, &res), Ok(None));
        assert_eq!(insns[0].off, 112);
        let mut wrong = [Insn::new(0x79, 0, 1, 16, 0)];
        assert!(patch(&mut wrong, 0, &res)
            .unwrap_err()
            .contains("got 16, expected 8"));
        // r1 += 8
        let mut alu = [Insn::new(0x07, 1, 0, 0, 8)];
        assert_eq!(patch(&mut alu, 0, &res), Ok(None));
        assert_eq!(alu[0].imm, 112);
        // lddw r1, 8
        let mut lddw = [Insn::new(op::LDDW, 1, 0, 0, 8), Insn::default()];
        assert_eq!(patch(&mut lddw, 0, &res), Ok(None));
        assert_eq!((lddw[0].imm, lddw[1].imm), (112, 0));
        let poisoned = Resolution {
            poison: true,
            ..res
        };
        let mut lddw = [Insn::new(op::LDDW, 1, 0, 0, 8), Insn::default()];
        assert!(patch(&mut lddw, 0, &poisoned).unwrap().is_some());
        assert_eq!(lddw, [poison_insn(), poison_insn()]);
    }

    #[test]
    fn size_adjustment_only_for_pointers_and_unsigned_integers() {
        let res = Resolution {
            orig_val: 0,
            new_val: 4,
            validate: true,
            orig_sz: 8,
            new_sz: 4,
            ..Resolution::default()
        };
        let mut ldx = [Insn::new(0x79, 0, 1, 0, 0)];
        assert_eq!(patch(&mut ldx, 0, &res), Ok(None));
        assert_eq!(ldx[0].code, 0x61, "u64 load became a u32 load");
        let bad = Resolution {
            fail_memsz_adjust: true,
            ..res
        };
        let mut ldx = [Insn::new(0x79, 0, 1, 0, 0)];
        assert!(patch(&mut ldx, 0, &bad).unwrap().unwrap().why.is_some());
        assert_eq!(ldx[0], poison_insn());
    }
}
