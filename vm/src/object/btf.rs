//! Just enough BTF (`.BTF`) to read BTF-defined maps: the type table, type
//! sizes, and the `.maps` data section.
//!
//! Format: `include/uapi/linux/btf.h`. Type ids start at 1; every type is a
//! 12-byte `struct btf_type` followed by kind-specific data.

use std::collections::HashMap;

/// `BTF_MAGIC`.
pub const BTF_MAGIC: u16 = 0xeb9f;

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
    fn from_u32(k: u32) -> Option<Kind> {
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
}

/// A member of a struct or union, or an entry of a data section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Name (empty for data section entries).
    pub name: String,
    /// Type id.
    pub type_id: u32,
    /// Bit offset (struct members) or byte offset (data section entries).
    pub offset: u32,
    /// Size in bytes (data section entries only).
    pub size: u32,
}

/// One BTF type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Type {
    /// Its kind.
    pub kind: Kind,
    /// Its name (may be empty).
    pub name: String,
    /// `size` for sized kinds, else the referenced type id.
    pub size_or_type: u32,
    /// Array element type and count.
    pub array: Option<(u32, u32)>,
    /// Struct/union members or data section entries.
    pub members: Vec<Member>,
    /// The word after the header of `INT` (encoding, offset, bits) and `VAR`
    /// (linkage) types; 0 for other kinds.
    pub extra: u32,
}

/// A parsed type table.
#[derive(Clone, Debug, Default)]
pub struct Btf {
    /// Types by id - 1.
    types: Vec<Type>,
    by_name: HashMap<String, Vec<u32>>,
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

impl Btf {
    /// Parses a little-endian `.BTF` section.
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
        let name = |off: u32| -> String {
            let off = off as usize;
            strings
                .get(off..)
                .map(|s| {
                    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
                    String::from_utf8_lossy(&s[..end]).into_owned()
                })
                .unwrap_or_default()
        };
        let mut btf = Btf::default();
        let mut o = 0usize;
        while o < types.len() {
            let name_off = rd32(types, o)?;
            let info = rd32(types, o + 4)?;
            let size_or_type = rd32(types, o + 8)?;
            o += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = Kind::from_u32((info >> 24) & 0x1f)
                .ok_or_else(|| BtfError(format!("unknown kind {}", (info >> 24) & 0x1f)))?;
            let mut t = Type {
                kind,
                name: name(name_off),
                size_or_type,
                array: None,
                members: Vec::new(),
                extra: 0,
            };
            match kind {
                Kind::Int | Kind::Var | Kind::DeclTag => {
                    t.extra = rd32(types, o)?;
                    o += 4;
                }
                Kind::Array => {
                    t.array = Some((rd32(types, o)?, rd32(types, o + 8)?));
                    o += 12;
                }
                Kind::Struct | Kind::Union => {
                    for _ in 0..vlen {
                        t.members.push(Member {
                            name: name(rd32(types, o)?),
                            type_id: rd32(types, o + 4)?,
                            offset: rd32(types, o + 8)?
                                & if info >> 31 != 0 { 0xff_ffff } else { u32::MAX },
                            size: 0,
                        });
                        o += 12;
                    }
                }
                Kind::Enum | Kind::FuncProto => o += 8 * vlen,
                Kind::Enum64 => o += 12 * vlen,
                Kind::Datasec => {
                    for _ in 0..vlen {
                        t.members.push(Member {
                            name: String::new(),
                            type_id: rd32(types, o)?,
                            offset: rd32(types, o + 4)?,
                            size: rd32(types, o + 8)?,
                        });
                        o += 12;
                    }
                }
                _ => {}
            }
            if o > types.len() {
                return Err(BtfError("type section truncated".into()));
            }
            let id = btf.types.len() as u32 + 1;
            btf.by_name.entry(t.name.clone()).or_default().push(id);
            btf.types.push(t);
        }
        Ok(btf)
    }

    /// The type with this id.
    pub fn get(&self, id: u32) -> Option<&Type> {
        id.checked_sub(1).and_then(|i| self.types.get(i as usize))
    }

    /// Ids of the types with this name.
    pub fn by_name(&self, name: &str) -> &[u32] {
        self.by_name.get(name).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// Follows typedefs and qualifiers.
    pub fn resolve(&self, mut id: u32) -> Option<(u32, &Type)> {
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

    /// Size in bytes of a type.
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
    pub fn datasec(&self, name: &str) -> Option<&Type> {
        self.by_name(name)
            .iter()
            .filter_map(|&id| self.get(id))
            .find(|t| t.kind == Kind::Datasec)
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
}

impl Btf {
    /// Reads the map definition of the `.maps` variable whose type is
    /// `var_type` (a VAR).
    pub fn map_def(&self, var_type: u32) -> Result<BtfMapDef, String> {
        let (_, var) = self.resolve(var_type).ok_or("unknown type")?;
        let def_type = if var.kind == Kind::Var {
            var.size_or_type
        } else {
            var_type
        };
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
                "value" => def.value_size = pointee_size()?,
                "values" => {
                    def.has_values = true;
                    def.values_offset = m.offset / 8;
                }
                other => return Err(format!("unknown map definition member `{other}`")),
            }
        }
        Ok(def)
    }
}
