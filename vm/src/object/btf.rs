//! BTF (`.BTF`, `/sys/kernel/btf/vmlinux`): the type table, names, sizes,
//! and the `.maps` data section.
//!
//! Format: `include/uapi/linux/btf.h`. Type ids start at 1 (0 is `void`);
//! every type is a 12-byte `struct btf_type` followed by kind-specific
//! data. [`Btf::parse`] validates the layout of every record in one pass and
//! keeps only their offsets, so the kernel's 5 MB BTF parses in a few
//! milliseconds; [`Btf::get`] decodes a type when asked, and the name index
//! ([`Btf::by_essential_name`]) is built on first use.

use std::sync::OnceLock;

/// `BTF_MAGIC`.
pub const BTF_MAGIC: u16 = 0xeb9f;
/// `BTF_INT_SIGNED` in an `INT`'s encoding.
pub const BTF_INT_SIGNED: u32 = 1;

/// BTF kinds (`BTF_KIND_*`).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    /// The kind with number `k` (`BTF_INFO_KIND`).
    pub fn from_u32(k: u32) -> Option<Kind> {
        use Kind::*;
        Some(match k {
            1 => Int,
            2 => Ptr,
            3 => Array,
            4 => Struct,
            5 => Union,
            6 => Enum,
            7 => Fwd,
            8 => Typedef,
            9 => Volatile,
            10 => Const,
            11 => Restrict,
            12 => Func,
            13 => FuncProto,
            14 => Var,
            15 => Datasec,
            16 => Float,
            17 => DeclTag,
            18 => TypeTag,
            19 => Enum64,
            _ => return None,
        })
    }

    /// The kind's number.
    pub fn to_u32(self) -> u32 {
        self as u32 + 1
    }

    /// The kind as C spells it (`struct`, `union`, `enum`, ...).
    pub fn c_name(self) -> &'static str {
        match self {
            Kind::Int => "int",
            Kind::Ptr => "ptr",
            Kind::Array => "array",
            Kind::Struct => "struct",
            Kind::Union => "union",
            Kind::Enum | Kind::Enum64 => "enum",
            Kind::Fwd => "fwd",
            Kind::Typedef => "typedef",
            Kind::Volatile => "volatile",
            Kind::Const => "const",
            Kind::Restrict => "restrict",
            Kind::Func => "func",
            Kind::FuncProto => "func_proto",
            Kind::Var => "var",
            Kind::Datasec => "datasec",
            Kind::Float => "float",
            Kind::DeclTag => "decl_tag",
            Kind::TypeTag => "type_tag",
        }
    }

    /// Bytes of kind-specific data after the 12-byte header, for `vlen`.
    fn data_len(self, vlen: usize) -> usize {
        match self {
            Kind::Int | Kind::Var | Kind::DeclTag => 4,
            Kind::Array => 12,
            Kind::Struct | Kind::Union | Kind::Datasec | Kind::Enum64 => 12 * vlen,
            Kind::Enum | Kind::FuncProto => 8 * vlen,
            _ => 0,
        }
    }
}

/// A member of a struct or union, or an entry of a data section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Name (empty for anonymous members and data section entries).
    pub name: String,
    /// Type id.
    pub type_id: u32,
    /// Bit offset (struct members) or byte offset (data section entries).
    pub offset: u32,
    /// Size in bytes (data section entries only).
    pub size: u32,
    /// Bitfield size in bits (struct members of a `kind_flag` struct; 0
    /// when not a bitfield).
    pub bitfield_size: u32,
}

/// An enumerator of an `ENUM` or `ENUM64`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnumValue {
    /// Name.
    pub name: String,
    /// Value: the 64 bits of an `ENUM64` value, or an `ENUM` value
    /// sign-extended from 32 bits (as libbpf reads it).
    pub value: u64,
}

/// A parameter of a function prototype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// Name (often empty).
    pub name: String,
    /// Type id (0 for `...`).
    pub type_id: u32,
}

/// One BTF type, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Type {
    /// Its kind.
    pub kind: Kind,
    /// Its name (may be empty).
    pub name: String,
    /// `kind_flag` of `info` (bitfield offsets in structs, signedness of
    /// enums, union for forward declarations).
    pub kind_flag: bool,
    /// `vlen` of `info`: members, enumerators or parameters.
    pub vlen: u32,
    /// `size` for sized kinds, else the referenced type id.
    pub size_or_type: u32,
    /// Array element type and count.
    pub array: Option<(u32, u32)>,
    /// Struct/union members or data section entries.
    pub members: Vec<Member>,
    /// Enumerators of `ENUM` and `ENUM64`.
    pub enumerators: Vec<EnumValue>,
    /// Parameters of a `FUNC_PROTO`.
    pub params: Vec<Param>,
    /// The word after the header of `INT` (encoding, offset, bits) and `VAR`
    /// (linkage) types; 0 for other kinds.
    pub extra: u32,
}

impl Type {
    /// `STRUCT` or `UNION`.
    pub fn is_composite(&self) -> bool {
        matches!(self.kind, Kind::Struct | Kind::Union)
    }

    /// `ENUM` or `ENUM64`.
    pub fn is_any_enum(&self) -> bool {
        matches!(self.kind, Kind::Enum | Kind::Enum64)
    }

    /// `INT` encoding bits (`BTF_INT_SIGNED`, `BTF_INT_CHAR`, `BTF_INT_BOOL`).
    pub fn int_encoding(&self) -> u32 {
        (self.extra >> 24) & 0x0f
    }

    /// `INT` bit offset (non-zero only for deprecated bitfield integers).
    pub fn int_offset(&self) -> u32 {
        (self.extra >> 16) & 0xff
    }

    /// `INT` size in bits.
    pub fn int_bits(&self) -> u32 {
        self.extra & 0xff
    }
}

/// A parsed type table.
#[derive(Clone, Debug, Default)]
pub struct Btf {
    /// The type section.
    types: Vec<u8>,
    /// The string section.
    strings: Vec<u8>,
    /// Offset in `types` of the record of type id `i + 1`.
    offsets: Vec<u32>,
    /// Named type ids sorted by essential name (see
    /// [`essential_name_len`]), then id. Built on first use.
    index: OnceLock<Vec<u32>>,
}

/// Malformed BTF.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid BTF: {0}")]
pub struct BtfError(pub String);

fn rd32(b: &[u8], o: usize) -> Result<u32, BtfError> {
    o.checked_add(4)
        .and_then(|e| b.get(o..e))
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| BtfError(format!("truncated at offset {o}")))
}

/// Length of the "essential" part of a CO-RE name: everything before the
/// last `___` flavor separator (`X___Y` with `X` and `Y` not `_`), or the
/// whole name (libbpf's `bpf_core_essential_name_len`).
pub fn essential_name_len(name: &[u8]) -> usize {
    let n = name.len();
    if n < 5 {
        return n;
    }
    for k in (0..=n - 5).rev() {
        if name[k] != b'_'
            && name[k + 1] == b'_'
            && name[k + 2] == b'_'
            && name[k + 3] == b'_'
            && name[k + 4] != b'_'
        {
            return k + 1;
        }
    }
    n
}

/// The essential part of `name` (`pt_regs` for `pt_regs___mine`).
pub fn essential_name(name: &str) -> &str {
    let len = essential_name_len(name.as_bytes());
    name.get(..len).unwrap_or(name)
}

impl Btf {
    /// Parses a little-endian BTF blob (a `.BTF` section or
    /// `/sys/kernel/btf/vmlinux`). Every type record is bounds-checked
    /// here; decoding happens in [`Btf::get`].
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let magic = data
            .get(0..2)
            .map(|m| u16::from_le_bytes([m[0], m[1]]))
            .ok_or_else(|| BtfError("truncated header".into()))?;
        if magic != BTF_MAGIC {
            return Err(BtfError(format!("bad magic {magic:#x}")));
        }
        let hdr_len = rd32(data, 4)? as usize;
        let type_off = rd32(data, 8)? as usize;
        let type_len = rd32(data, 12)? as usize;
        let str_off = rd32(data, 16)? as usize;
        let str_len = rd32(data, 20)? as usize;
        let section = |off: usize, len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|s| s.checked_add(len).map(|e| (s, e)))
                .and_then(|(s, e)| data.get(s..e))
                .ok_or_else(|| BtfError(format!("{what} section out of bounds")))
        };
        let types = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?;
        let mut offsets = Vec::new();
        let mut o = 0usize;
        while o < types.len() {
            let info = rd32(types, o.saturating_add(4))?;
            let vlen = (info & 0xffff) as usize;
            let kind = Kind::from_u32((info >> 24) & 0x1f)
                .ok_or_else(|| BtfError(format!("unknown kind {}", (info >> 24) & 0x1f)))?;
            let end = o
                .checked_add(12)
                .and_then(|e| e.checked_add(kind.data_len(vlen)))
                .filter(|&e| e <= types.len())
                .ok_or_else(|| {
                    BtfError(format!(
                        "type [{}] at offset {o} runs past the type section",
                        offsets.len() + 1
                    ))
                })?;
            offsets.push(u32::try_from(o).map_err(|_| BtfError("type section too large".into()))?);
            o = end;
        }
        Ok(Btf {
            types: types.to_vec(),
            strings: strings.to_vec(),
            offsets,
            index: OnceLock::new(),
        })
    }

    /// Number of types, `void` excluded: ids run from 1 to this.
    pub fn len(&self) -> u32 {
        self.offsets.len() as u32
    }

    /// Whether the table has no types.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The string at `off` of the string section, as bytes (empty when out
    /// of range).
    pub fn str_bytes(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        &s[..end]
    }

    /// The string at `off` of the string section (lossy UTF-8).
    pub fn str_at(&self, off: u32) -> String {
        String::from_utf8_lossy(self.str_bytes(off)).into_owned()
    }

    fn header(&self, id: u32) -> Option<(usize, u32, u32, u32)> {
        let o = *self.offsets.get(id.checked_sub(1)? as usize)? as usize;
        let name_off = rd32(&self.types, o).ok()?;
        let info = rd32(&self.types, o + 4).ok()?;
        let size_or_type = rd32(&self.types, o + 8).ok()?;
        Some((o + 12, name_off, info, size_or_type))
    }

    /// The name of type `id`, as bytes (empty for anonymous types, `void`
    /// and unknown ids).
    pub fn name_bytes(&self, id: u32) -> &[u8] {
        match self.header(id) {
            Some((_, name_off, _, _)) => self.str_bytes(name_off),
            None => &[],
        }
    }

    /// The kind of type `id`.
    pub fn kind(&self, id: u32) -> Option<Kind> {
        let (_, _, info, _) = self.header(id)?;
        Kind::from_u32((info >> 24) & 0x1f)
    }

    /// The type with this id, decoded.
    pub fn get(&self, id: u32) -> Option<Type> {
        let (mut o, name_off, info, size_or_type) = self.header(id)?;
        let kind = Kind::from_u32((info >> 24) & 0x1f)?;
        let kind_flag = info >> 31 != 0;
        let vlen = info & 0xffff;
        let d = &self.types;
        let mut t = Type {
            kind,
            name: self.str_at(name_off),
            kind_flag,
            vlen,
            size_or_type,
            array: None,
            members: Vec::new(),
            enumerators: Vec::new(),
            params: Vec::new(),
            extra: 0,
        };
        match kind {
            Kind::Int | Kind::Var | Kind::DeclTag => t.extra = rd32(d, o).ok()?,
            Kind::Array => t.array = Some((rd32(d, o).ok()?, rd32(d, o + 8).ok()?)),
            Kind::Struct | Kind::Union => {
                for _ in 0..vlen {
                    let raw = rd32(d, o + 8).ok()?;
                    t.members.push(Member {
                        name: self.str_at(rd32(d, o).ok()?),
                        type_id: rd32(d, o + 4).ok()?,
                        offset: if kind_flag { raw & 0xff_ffff } else { raw },
                        size: 0,
                        bitfield_size: if kind_flag { raw >> 24 } else { 0 },
                    });
                    o += 12;
                }
            }
            Kind::Datasec => {
                for _ in 0..vlen {
                    t.members.push(Member {
                        name: String::new(),
                        type_id: rd32(d, o).ok()?,
                        offset: rd32(d, o + 4).ok()?,
                        size: rd32(d, o + 8).ok()?,
                        bitfield_size: 0,
                    });
                    o += 12;
                }
            }
            Kind::Enum => {
                for _ in 0..vlen {
                    t.enumerators.push(EnumValue {
                        name: self.str_at(rd32(d, o).ok()?),
                        value: i64::from(rd32(d, o + 4).ok()? as i32) as u64,
                    });
                    o += 8;
                }
            }
            Kind::Enum64 => {
                for _ in 0..vlen {
                    let lo = u64::from(rd32(d, o + 4).ok()?);
                    let hi = u64::from(rd32(d, o + 8).ok()?);
                    t.enumerators.push(EnumValue {
                        name: self.str_at(rd32(d, o).ok()?),
                        value: lo | (hi << 32),
                    });
                    o += 12;
                }
            }
            Kind::FuncProto => {
                for _ in 0..vlen {
                    t.params.push(Param {
                        name: self.str_at(rd32(d, o).ok()?),
                        type_id: rd32(d, o + 4).ok()?,
                    });
                    o += 8;
                }
            }
            _ => {}
        }
        Some(t)
    }

    fn index(&self) -> &[u32] {
        self.index.get_or_init(|| {
            let mut keyed: Vec<(&[u8], u32)> = (1..=self.len())
                .filter_map(|id| {
                    let n = self.name_bytes(id);
                    (!n.is_empty()).then(|| (&n[..essential_name_len(n)], id))
                })
                .collect();
            keyed.sort_unstable();
            keyed.into_iter().map(|(_, id)| id).collect()
        })
    }

    /// Ids of the named types whose essential name (the name without a
    /// `___flavor` suffix) is `essential`, in id order.
    pub fn by_essential_name(&self, essential: &[u8]) -> &[u32] {
        let ids = self.index();
        let key = |id: u32| {
            let n = self.name_bytes(id);
            &n[..essential_name_len(n)]
        };
        let lo = ids.partition_point(|&id| key(id) < essential);
        let hi = ids.partition_point(|&id| key(id) <= essential);
        ids.get(lo..hi).unwrap_or(&[])
    }

    /// Ids of the types called exactly `name`, in id order.
    pub fn by_name(&self, name: &str) -> Vec<u32> {
        let essential = &name.as_bytes()[..essential_name_len(name.as_bytes())];
        self.by_essential_name(essential)
            .iter()
            .copied()
            .filter(|&id| self.name_bytes(id) == name.as_bytes())
            .collect()
    }

    /// Follows typedefs and qualifiers (`skip_mods_and_typedefs`).
    pub fn resolve(&self, mut id: u32) -> Option<(u32, Type)> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                    id = t.size_or_type;
                }
                _ => return Some((id, t)),
            }
        }
        None
    }

    /// Size in bytes of a type (`btf__resolve_size`).
    pub fn size_of(&self, id: u32) -> Option<u32> {
        self.size_of_depth(id, 0)
    }

    fn size_of_depth(&self, id: u32, depth: u32) -> Option<u32> {
        if depth > 32 {
            return None;
        }
        let (_, t) = self.resolve(id)?;
        match t.kind {
            Kind::Int
            | Kind::Struct
            | Kind::Union
            | Kind::Enum
            | Kind::Enum64
            | Kind::Float
            | Kind::Datasec => Some(t.size_or_type),
            Kind::Ptr => Some(8),
            Kind::Array => {
                let (elem, n) = t.array?;
                self.size_of_depth(elem, depth + 1)?.checked_mul(n)
            }
            Kind::Var => self.size_of_depth(t.size_or_type, depth + 1),
            _ => None,
        }
    }

    /// The data section called `name`.
    pub fn datasec(&self, name: &str) -> Option<Type> {
        self.by_name(name)
            .into_iter()
            .filter_map(|id| self.get(id))
            .find(|t| t.kind == Kind::Datasec)
    }

    /// `kind name` as C spells it (`struct pt_regs`, `enum bpf_func_id`,
    /// `typedef u64`), `<anon>` for anonymous types.
    pub fn describe(&self, id: u32) -> String {
        if id == 0 {
            return "void".to_string();
        }
        match self.get(id) {
            Some(t) if t.name.is_empty() => format!("{} <anon>", t.kind.c_name()),
            Some(t) if t.kind == Kind::Int => t.name,
            Some(t) => format!("{} {}", t.kind.c_name(), t.name),
            None => format!("[{id}]"),
        }
    }
}

/// Writes a BTF blob type by type (the built-in target BTF; the types the
/// kernel backend loads with programs and maps).
#[derive(Debug, Default)]
pub struct BtfWriter {
    types: Vec<u8>,
    strings: Vec<u8>,
    count: u32,
}

impl BtfWriter {
    /// An empty type table (type 0 is void).
    pub fn new() -> BtfWriter {
        BtfWriter {
            strings: vec![0],
            ..BtfWriter::default()
        }
    }

    /// The offset of `s` in the string section, added (0 for "").
    pub fn string(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn words(&mut self, words: &[u32]) {
        for w in words {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// A type's header; its id.
    fn header(&mut self, name: &str, kind: Kind, vlen: u32, size_or_type: u32) -> u32 {
        let name = self.string(name);
        self.words(&[name, (kind.to_u32() << 24) | vlen, size_or_type]);
        self.count += 1;
        self.count
    }

    /// `INT` of `size` bytes.
    pub fn int(&mut self, name: &str, size: u32, signed: bool) -> u32 {
        let id = self.header(name, Kind::Int, 0, size);
        let enc = if signed { BTF_INT_SIGNED } else { 0 };
        self.words(&[(enc << 24) | (size * 8)]);
        id
    }

    /// `TYPEDEF`.
    pub fn typedef(&mut self, name: &str, to: u32) -> u32 {
        self.header(name, Kind::Typedef, 0, to)
    }

    /// `ARRAY` of `n` `elem`s, indexed by `index`.
    pub fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
        let id = self.header("", Kind::Array, 0, 0);
        self.words(&[elem, index, n]);
        id
    }

    /// A struct whose members (name, type, size) are laid out in order,
    /// each right after the previous (no padding).
    pub fn structure(&mut self, name: &str, members: &[(&str, u32, u32)]) -> u32 {
        let size: u32 = members.iter().map(|m| m.2).sum();
        let id = self.header(name, Kind::Struct, members.len() as u32, size);
        let mut off = 0;
        for &(m, ty, sz) in members {
            let name = self.string(m);
            self.words(&[name, ty, off * 8]);
            off += sz;
        }
        id
    }

    /// `PTR` to `to`.
    pub fn pointer(&mut self, to: u32) -> u32 {
        self.header("", Kind::Ptr, 0, to)
    }

    /// `FUNC_PROTO` returning `ret`, without parameters.
    pub fn func_proto(&mut self, ret: u32) -> u32 {
        self.header("", Kind::FuncProto, 0, ret)
    }

    /// `FUNC_PROTO` returning `ret`, with parameters (name, type).
    pub fn func_proto_with(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
        let id = self.header("", Kind::FuncProto, params.len() as u32, ret);
        for &(name, ty) in params {
            let name = self.string(name);
            self.words(&[name, ty]);
        }
        id
    }

    /// A static `FUNC` of prototype `proto`.
    pub fn func(&mut self, name: &str, proto: u32) -> u32 {
        self.header(name, Kind::Func, 0, proto)
    }

    /// A global `FUNC` (`BTF_FUNC_GLOBAL`) of prototype `proto`.
    pub fn global_func(&mut self, name: &str, proto: u32) -> u32 {
        self.header(name, Kind::Func, 1, proto)
    }

    /// A struct of `size` bytes whose members are not described.
    pub fn opaque_structure(&mut self, name: &str, size: u32) -> u32 {
        self.header(name, Kind::Struct, 0, size)
    }

    /// `DECL_TAG` `tag` on parameter `component` of function `func`.
    pub fn decl_tag(&mut self, tag: &str, func: u32, component: u32) -> u32 {
        let id = self.header(tag, Kind::DeclTag, 0, func);
        self.words(&[component]);
        id
    }

    /// The blob: header, types, strings.
    pub fn finish(self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        let tlen = self.types.len() as u32;
        for w in [24, 0, tlen, tlen, self.strings.len() as u32] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&self.types);
        b.extend_from_slice(&self.strings);
        b
    }
}

/// A BTF-defined map (`struct { __uint(type, ...); ... } name SEC(".maps")`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BtfMapDef {
    /// `type`.
    pub map_type: u32,
    /// `key_size` or the size of `key`.
    pub key_size: u32,
    /// `value_size` or the size of `value`.
    pub value_size: u32,
    /// `max_entries`.
    pub max_entries: u32,
    /// `map_flags`.
    pub flags: u32,
    /// `pinning`.
    pub pinning: u32,
    /// `map_extra` (bloom filter hashes, ...).
    pub map_extra: u64,
    /// `values` (map-in-map or program array initialisers).
    pub has_values: bool,
    /// Byte offset of the `values` member in the definition struct.
    pub values_offset: u32,
    /// The value's type (`__type(value, T)`), 0 when only its size is
    /// given.
    pub value_type: u32,
    /// Maps of maps: the inner maps' definition, the structure
    /// `__array(values, struct { ... })` points to (libbpf's inner map
    /// template).
    pub inner: Option<Box<BtfMapDef>>,
}

impl Btf {
    /// The byte offset of the `struct bpf_spin_lock` in values of type
    /// `id`, searched through nested structures (`btf_find_field`).
    pub fn spin_lock_offset(&self, id: u32) -> Option<u32> {
        self.field_offset(id, "bpf_spin_lock", 0)
    }

    /// The byte offset of the `struct bpf_timer` in values of type `id`.
    pub fn timer_offset(&self, id: u32) -> Option<u32> {
        self.field_offset(id, "bpf_timer", 0)
    }

    /// The byte offset of the first structure called `name` in values
    /// of type `id` (the value itself, or a member, nested).
    fn field_offset(&self, id: u32, name: &str, depth: u32) -> Option<u32> {
        if depth > 16 {
            return None;
        }
        let (_, t) = self.resolve(id)?;
        if !t.is_composite() {
            return None;
        }
        if t.kind == Kind::Struct && t.name == name {
            return Some(0);
        }
        t.members.iter().find_map(|m| {
            if m.bitfield_size != 0 {
                return None;
            }
            let inner = self.field_offset(m.type_id, name, depth + 1)?;
            (m.offset / 8).checked_add(inner)
        })
    }

    /// Reads the map definition of the `.maps` variable whose type is
    /// `var_type` (a VAR).
    pub fn map_def(&self, var_type: u32) -> Result<BtfMapDef, String> {
        let (_, var) = self.resolve(var_type).ok_or("unknown type")?;
        let def_type = if var.kind == Kind::Var {
            var.size_or_type
        } else {
            var_type
        };
        self.map_def_struct(def_type, false)
    }

    /// The map definition structure `def_type`; `inner`: whether it is a
    /// map of maps' inner definition (which may have none of its own).
    fn map_def_struct(&self, def_type: u32, inner: bool) -> Result<BtfMapDef, String> {
        let (_, st) = self
            .resolve(def_type)
            .ok_or("unknown map definition type")?;
        if st.kind != Kind::Struct {
            return Err(format!("map definition is a {:?}, not a struct", st.kind));
        }
        let mut def = BtfMapDef::default();
        for m in &st.members {
            // __uint(name, val) is `int (*name)[val]`.
            let uint = || -> Result<u32, String> {
                let (_, p) = self.resolve(m.type_id).ok_or("bad member type")?;
                if p.kind != Kind::Ptr {
                    return Err(format!("member `{}` is not __uint()", m.name));
                }
                let (_, a) = self.resolve(p.size_or_type).ok_or("bad member type")?;
                a.array
                    .map(|(_, n)| n)
                    .ok_or_else(|| format!("member `{}` is not __uint()", m.name))
            };
            // __type(name, T) is `T *name`.
            let pointee_size = || -> Result<u32, String> {
                let (_, p) = self.resolve(m.type_id).ok_or("bad member type")?;
                if p.kind != Kind::Ptr {
                    return Err(format!("member `{}` is not __type()", m.name));
                }
                self.size_of(p.size_or_type)
                    .ok_or_else(|| format!("size of `{}` type unknown", m.name))
            };
            match m.name.as_str() {
                "type" => def.map_type = uint()?,
                "max_entries" => def.max_entries = uint()?,
                "map_flags" => def.flags = uint()?,
                "key_size" => def.key_size = uint()?,
                "value_size" => def.value_size = uint()?,
                "pinning" => def.pinning = uint()?,
                "numa_node" => {
                    uint()?;
                }
                "map_extra" => def.map_extra = u64::from(uint()?),
                "key" => def.key_size = pointee_size()?,
                "value" => {
                    def.value_size = pointee_size()?;
                    if let Some((_, p)) = self.resolve(m.type_id) {
                        def.value_type = p.size_or_type;
                    }
                }
                "values" => {
                    // `__array(values, T)` is `T *values[]`: T a map
                    // definition (maps of maps) or a function (program
                    // arrays).
                    let pointee = self
                        .resolve(m.type_id)
                        .and_then(|(_, a)| a.array)
                        .and_then(|(elem, _)| self.resolve(elem))
                        .filter(|(_, p)| p.kind == Kind::Ptr)
                        .and_then(|(_, p)| self.resolve(p.size_or_type))
                        .ok_or("member `values` is not __array()")?;
                    if pointee.1.kind == Kind::Struct {
                        if inner {
                            return Err("multi-level inner maps are not supported".into());
                        }
                        let d = self
                            .map_def_struct(pointee.0, true)
                            .map_err(|e| format!("inner map definition: {e}"))?;
                        def.inner = Some(Box::new(d));
                    }
                    def.has_values = true;
                    def.values_offset = m.offset / 8;
                }
                other => return Err(format!("unknown map definition member `{other}`")),
            }
        }
        Ok(def)
    }
}
