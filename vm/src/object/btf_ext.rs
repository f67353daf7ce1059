//! `.BTF.ext`: the CO-RE relocation records clang emits next to `.BTF`.
//!
//! Layout (`tools/lib/bpf/libbpf_internal.h`, `struct btf_ext_header`):
//! `u16 magic (0xeb9f), u8 version, u8 flags, u32 hdr_len`, then offsets
//! and lengths, relative to the end of the header, of the `func_info` and
//! `line_info` subsections and (when `hdr_len` covers them) of the
//! `core_relo` subsection. A subsection is a `u32` record size followed,
//! per ELF section, by `u32 sec_name_off` (into the `.BTF` strings), `u32
//! num_info` and `num_info` records. A CO-RE record is `struct
//! bpf_core_relo { u32 insn_off; u32 type_id; u32 access_str_off; u32 kind;
//! }`. Only the CO-RE records are kept; the other subsections are checked
//! for bounds.

use super::btf::{Btf, BTF_MAGIC};

/// Size of the header up to and including the line info fields.
const MIN_HEADER: u32 = 24;
/// Size of the header with the CO-RE fields.
const CORE_HEADER: u32 = 32;
/// `sizeof(struct bpf_core_relo)`.
pub const CORE_RELO_SIZE: u32 = 16;

/// One `struct bpf_core_relo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreRelo {
    /// Byte offset of the instruction in its section.
    pub insn_off: u32,
    /// Local (`.BTF`) type id of the root type.
    pub type_id: u32,
    /// Offset of the access string (`"0:1:2"`) in the `.BTF` strings.
    pub access_str_off: u32,
    /// `enum bpf_core_relo_kind`.
    pub kind: u32,
}

/// The CO-RE relocations of one ELF section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreReloSection {
    /// The ELF section's name (`.text`, `uprobe`, ...).
    pub section: String,
    /// Its relocations, in file order.
    pub relos: Vec<CoreRelo>,
}

/// What is wrong with a `.BTF.ext` section.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BtfExtError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, BtfExtError> {
    Err(BtfExtError(m.into()))
}

fn rd32(b: &[u8], o: usize, what: &str) -> Result<u32, BtfExtError> {
    match o.checked_add(4).and_then(|e| b.get(o..e)) {
        Some(s) => Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]])),
        None => err(format!("truncated: {what} at offset {o}")),
    }
}

/// Subsection `off`/`len` of the data after the header.
fn subsection<'a>(body: &'a [u8], off: u32, len: u32, what: &str) -> Result<&'a [u8], BtfExtError> {
    let start = off as usize;
    match start
        .checked_add(len as usize)
        .and_then(|end| body.get(start..end))
    {
        Some(s) => Ok(s),
        None => err(format!(
            "{what} subsection [{off:#x}, +{len:#x}) lies outside the section ({} bytes after the header)",
            body.len()
        )),
    }
}

/// Parses `.BTF.ext` and returns its CO-RE relocations; section names come
/// from the strings of `btf`.
pub fn parse_core_relos(data: &[u8], btf: &Btf) -> Result<Vec<CoreReloSection>, BtfExtError> {
    let magic = match data.get(0..2) {
        Some(m) => u16::from_le_bytes([m[0], m[1]]),
        None => return err("truncated header"),
    };
    if magic != BTF_MAGIC {
        return err(format!(
            "bad magic {magic:#06x} (expected {BTF_MAGIC:#06x}; big-endian objects are not supported)"
        ));
    }
    let version = data.get(2).copied().unwrap_or(0);
    if version != 1 {
        return err(format!("unsupported version {version}"));
    }
    let hdr_len = rd32(data, 4, "hdr_len")?;
    if hdr_len < MIN_HEADER {
        return err(format!(
            "header length {hdr_len} is shorter than {MIN_HEADER} bytes"
        ));
    }
    let Some(body) = data.get(hdr_len as usize..) else {
        return err(format!(
            "header length {hdr_len} exceeds the section ({} bytes)",
            data.len()
        ));
    };
    for (name, at) in [("func_info", 8), ("line_info", 16)] {
        let off = rd32(data, at, name)?;
        let len = rd32(data, at + 4, name)?;
        subsection(body, off, len, name)?;
    }
    if hdr_len < CORE_HEADER {
        return Ok(Vec::new());
    }
    let off = rd32(data, 24, "core_relo_off")?;
    let len = rd32(data, 28, "core_relo_len")?;
    let sub = subsection(body, off, len, "core_relo")?;
    if sub.is_empty() {
        return Ok(Vec::new());
    }
    let rec_size = rd32(sub, 0, "core_relo record size")?;
    if rec_size < CORE_RELO_SIZE || !rec_size.is_multiple_of(4) {
        return err(format!(
            "core_relo record size {rec_size} (must be a multiple of 4, at least {CORE_RELO_SIZE})"
        ));
    }
    let mut out = Vec::new();
    let mut o = 4usize;
    while o < sub.len() {
        let name_off = rd32(sub, o, "core_relo sec_name_off")?;
        let num = rd32(sub, o.saturating_add(4), "core_relo num_info")?;
        o = o.saturating_add(8);
        let section = btf.str_at(name_off);
        if section.is_empty() {
            return err(format!(
                "core_relo section name at string offset {name_off} is empty or out of range"
            ));
        }
        if num == 0 {
            return err(format!(
                "core_relo info for section `{section}` has no records"
            ));
        }
        let bytes = (num as usize)
            .checked_mul(rec_size as usize)
            .and_then(|n| o.checked_add(n))
            .filter(|&end| end <= sub.len());
        let Some(end) = bytes else {
            return err(format!(
                "core_relo info for section `{section}`: {num} records of {rec_size} bytes run past the subsection"
            ));
        };
        let mut relos = Vec::with_capacity(num as usize);
        while o < end {
            relos.push(CoreRelo {
                insn_off: rd32(sub, o, "insn_off")?,
                type_id: rd32(sub, o + 4, "type_id")?,
                access_str_off: rd32(sub, o + 8, "access_str_off")?,
                kind: rd32(sub, o + 12, "kind")?,
            });
            o += rec_size as usize;
        }
        out.push(CoreReloSection { section, relos });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.BTF` with no types and strings "\0.text\00:1\0".
    fn btf() -> Btf {
        let strings = b"\0.text\x000:1\0";
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, 0, 0, strings.len() as u32] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(strings);
        Btf::parse(&b).unwrap()
    }

    /// A `.BTF.ext` with a CO-RE subsection holding `core`.
    fn ext(core: &[u32]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        let core_len = (core.len() * 4) as u32;
        for w in [32u32, 0, 0, 0, 0, 0, core_len] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        for w in core {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_core_relocations_by_section() {
        let data = ext(&[16, 1, 2, 8, 5, 7, 0, 24, 6, 7, 2]);
        let secs = parse_core_relos(&data, &btf()).unwrap();
        assert_eq!(secs.len(), 1);
        assert_eq!(secs[0].section, ".text");
        assert_eq!(
            secs[0].relos,
            [
                CoreRelo {
                    insn_off: 8,
                    type_id: 5,
                    access_str_off: 7,
                    kind: 0
                },
                CoreRelo {
                    insn_off: 24,
                    type_id: 6,
                    access_str_off: 7,
                    kind: 2
                }
            ]
        );
    }

    #[test]
    fn header_without_core_fields_has_no_relocations() {
        let mut data = ext(&[]);
        data[4..8].copy_from_slice(&24u32.to_le_bytes());
        data.truncate(24);
        assert_eq!(parse_core_relos(&data, &btf()).unwrap(), []);
    }

    #[test]
    fn malformed_sections_are_errors() {
        let b = btf();
        let e = |data: &[u8]| parse_core_relos(data, &b).unwrap_err().0;
        assert!(e(&[]).contains("truncated header"));
        assert!(e(&[0x9f, 0xeb]).contains("version"));
        assert!(e(&[0xeb, 0x9f, 1, 0, 32, 0, 0, 0]).contains("bad magic"));
        let good = ext(&[16, 1, 1, 8, 5, 7, 0]);
        // Every truncation of a valid section is an error or parses fewer
        // records, never a panic.
        for n in 0..good.len() {
            let _ = parse_core_relos(&good[..n], &b);
        }
        let mut short_hdr = good.clone();
        short_hdr[4..8].copy_from_slice(&8u32.to_le_bytes());
        assert!(e(&short_hdr).contains("header length 8"));
        let mut huge_hdr = good.clone();
        huge_hdr[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(e(&huge_hdr).contains("exceeds the section"));
        let mut far = good.clone();
        far[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(e(&far).contains("core_relo subsection"));
        assert!(e(&ext(&[12, 1, 1, 8, 5, 7])).contains("record size 12"));
        assert!(e(&ext(&[18, 1, 1, 8, 5, 7, 0])).contains("record size 18"));
        assert!(e(&ext(&[16, 1, 0])).contains("no records"));
        assert!(e(&ext(&[16, 1, 2, 8, 5, 7, 0])).contains("run past"));
        assert!(e(&ext(&[16, 1, u32::MAX, 8, 5, 7, 0])).contains("run past"));
        assert!(e(&ext(&[16, 999, 1, 8, 5, 7, 0])).contains("section name"));
        assert!(e(&ext(&[16, 1])).contains("num_info"));
    }
}
