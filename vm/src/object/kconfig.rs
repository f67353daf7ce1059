//! `__kconfig` externs, resolved as libbpf does.
//!
//! A program declares `extern int CONFIG_HZ __kconfig;` (section `.kconfig`
//! in BTF); the loader places every such extern in a read-only `.kconfig`
//! array map and fills it from the kernel configuration
//! (`/proc/config.gz`, else `/boot/config-$(uname -r)`), plus the
//! `LINUX_KERNEL_VERSION`, `LINUX_HAS_BPF_COOKIE` and
//! `LINUX_HAS_SYSCALL_WRAPPER` values libbpf provides. Values follow
//! libbpf: `y`/`n`/`m` fill `bool` (1/0; `m` refused), `enum
//! libbpf_tristate` (1/0/2) and `char` (the letter); numbers fill integers
//! that can hold them; quoted strings fill `char` arrays. An extern the
//! configuration lacks is an error unless it is `__weak`, which reads as 0.

use std::collections::HashMap;
use std::io::Read;

use super::btf::{Btf, Kind};

/// `BTF_INT_SIGNED`.
const BTF_INT_SIGNED: u32 = 1;
/// `BTF_INT_BOOL`.
const BTF_INT_BOOL: u32 = 4;

/// The largest `.kconfig` map value accepted (the externs together).
pub const MAX_KCONFIG_SIZE: u32 = 1 << 20;

/// Why the kernel configuration could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the kernel configuration: {0}")]
pub struct KconfigError(pub String);

/// A kernel configuration: `CONFIG_*` values and the kernel release.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    values: HashMap<String, String>,
    release: Option<String>,
}

impl KernelConfig {
    /// Parses the text of a `.config` file: `CONFIG_NAME=value` lines;
    /// comments (including `# CONFIG_X is not set`) are skipped, as libbpf
    /// does, so such options are missing.
    pub fn parse(text: &str) -> KernelConfig {
        let values = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("CONFIG_"))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        KernelConfig {
            values,
            release: None,
        }
    }

    /// Sets the kernel release (`uname -r`, e.g. `6.18.4-amd64`), the
    /// source of `LINUX_KERNEL_VERSION`.
    pub fn with_release(mut self, release: &str) -> KernelConfig {
        self.release = Some(release.to_string());
        self
    }

    /// The running kernel's configuration: `/proc/config.gz`, else
    /// `/boot/config-$(uname -r)`, with the release from `uname`.
    pub fn system() -> Result<KernelConfig, KconfigError> {
        let release = uname_release();
        let mut tried = Vec::new();
        match std::fs::File::open("/proc/config.gz") {
            Ok(f) => {
                let mut text = String::new();
                flate2::read::GzDecoder::new(f)
                    .read_to_string(&mut text)
                    .map_err(|e| KconfigError(format!("/proc/config.gz: {e}")))?;
                let cfg = KernelConfig::parse(&text);
                return Ok(match &release {
                    Some(r) => cfg.with_release(r),
                    None => cfg,
                });
            }
            Err(e) => tried.push(format!("/proc/config.gz: {e}")),
        }
        if let Some(r) = &release {
            let path = format!("/boot/config-{r}");
            match std::fs::read_to_string(&path) {
                Ok(text) => return Ok(KernelConfig::parse(&text).with_release(r)),
                Err(e) => tried.push(format!("{path}: {e}")),
            }
        }
        Err(KconfigError(tried.join("; ")))
    }

    /// The running kernel's release (`uname -r`).
    pub fn running_release() -> Option<String> {
        uname_release()
    }

    /// The raw value of option `name` (`y`, `m`, `100`, `"string"`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `LINUX_KERNEL_VERSION`: `KERNEL_VERSION(a, b, c)` of the release,
    /// with `c` capped at 255 as the kernel does.
    pub fn kernel_version(&self) -> Option<u32> {
        let release = self.release.as_deref()?;
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let mut num = || parts.next().and_then(|p| p.parse::<u32>().ok());
        let (a, b) = (num()?, num()?);
        let c = num().unwrap_or(0);
        Some((a << 16).wrapping_add(b << 8).wrapping_add(c.min(255)))
    }
}

fn uname_release() -> Option<String> {
    // SAFETY: utsname is plain data; uname fills it and we read the
    // NUL-terminated release field only on success.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return None;
        }
        let r = std::ffi::CStr::from_ptr(u.release.as_ptr());
        Some(r.to_string_lossy().into_owned())
    }
}

/// How an extern's bytes are filled (libbpf's `enum kcfg_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueKind {
    Bool,
    Tristate,
    Char,
    Int { signed: bool },
    CharArray,
}

/// One `__kconfig` extern, placed in the `.kconfig` map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Extern {
    pub name: String,
    pub offset: u32,
    pub size: u32,
    kind: ValueKind,
    weak: bool,
}

fn value_kind(btf: &Btf, type_id: u32) -> Option<(ValueKind, u32, u32)> {
    let (_, t) = btf.resolve(type_id)?;
    match t.kind {
        Kind::Int => {
            let enc = (t.extra >> 24) & 0xf;
            let size = t.size_or_type;
            if enc & BTF_INT_BOOL != 0 {
                return (size == 1).then_some((ValueKind::Bool, 1, 1));
            }
            if size == 1 {
                return Some((ValueKind::Char, 1, 1));
            }
            if !matches!(size, 2 | 4 | 8) {
                return None;
            }
            let signed = enc & BTF_INT_SIGNED != 0;
            Some((ValueKind::Int { signed }, size, size))
        }
        Kind::Enum if t.name == "libbpf_tristate" && t.size_or_type == 4 => {
            Some((ValueKind::Tristate, 4, 4))
        }
        Kind::Array => {
            let (elem, n) = t.array?;
            let (_, e) = btf.resolve(elem)?;
            (e.kind == Kind::Int && e.size_or_type == 1 && n > 0).then_some((
                ValueKind::CharArray,
                n,
                1,
            ))
        }
        _ => None,
    }
}

/// Lays out the externs of BTF data section `.kconfig`; `is_weak` tells
/// whether a symbol is `__weak`. Returns them and the map's value size.
pub(crate) fn layout(
    btf: &Btf,
    is_weak: impl Fn(&str) -> bool,
) -> Result<(Vec<Extern>, u32), String> {
    let Some(sec) = btf.datasec(".kconfig") else {
        return Ok((Vec::new(), 0));
    };
    let mut externs = Vec::new();
    let mut off = 0u32;
    for m in &sec.members {
        let var = btf
            .get(m.type_id)
            .filter(|v| v.kind == Kind::Var)
            .ok_or_else(|| format!("`.kconfig` entry type {} is not a variable", m.type_id))?;
        let (kind, size, align) = value_kind(btf, var.size_or_type).ok_or_else(|| {
            format!(
                "extern `{}` (__kconfig) has a type libbpf does not support \
                 (bool, char, char[N], enum libbpf_tristate, or an integer of 2, 4 or 8 bytes)",
                var.name
            )
        })?;
        off = off.div_ceil(align) * align;
        let end = off
            .checked_add(size)
            .filter(|&e| e <= MAX_KCONFIG_SIZE)
            .ok_or_else(|| {
                format!(
                    "extern `{}` (__kconfig) ends beyond {MAX_KCONFIG_SIZE} bytes of externs",
                    var.name
                )
            })?;
        externs.push(Extern {
            name: var.name.clone(),
            offset: off,
            size,
            kind,
            weak: is_weak(&var.name),
        });
        off = end;
    }
    Ok((externs, off.div_ceil(8) * 8))
}

/// Fills the `.kconfig` map value `buf` from `config`.
pub(crate) fn fill(
    externs: &[Extern],
    config: &KernelConfig,
    buf: &mut [u8],
) -> Result<(), String> {
    for e in externs {
        let dst = &mut buf[e.offset as usize..(e.offset + e.size) as usize];
        let raw: Option<String> = match e.name.as_str() {
            "LINUX_KERNEL_VERSION" => config.kernel_version().map(|v| v.to_string()),
            // Every kernel userbpf supports has BPF cookies and (on x86-64
            // and arm64) syscall wrappers.
            "LINUX_HAS_BPF_COOKIE" | "LINUX_HAS_SYSCALL_WRAPPER" => Some("y".to_string()),
            n if n.starts_with("LINUX_") => {
                return Err(format!(
                    "extern `{n}` (__kconfig) is not a value libbpf knows"
                ))
            }
            n => config.get(n).map(str::to_string),
        };
        let Some(raw) = raw else {
            if e.weak {
                dst.fill(0);
                continue;
            }
            return Err(format!(
                "extern `{}` (__kconfig) is not set in the kernel configuration \
                 (declare it `__weak` to read 0)",
                e.name
            ));
        };
        set_value(e, &raw, dst).map_err(|m| format!("extern `{}` (__kconfig): {m}", e.name))?;
    }
    Ok(())
}

fn set_value(e: &Extern, raw: &str, dst: &mut [u8]) -> Result<(), String> {
    let raw = raw.trim();
    match raw {
        "y" | "n" | "m" => {
            let c = raw.as_bytes()[0];
            match e.kind {
                ValueKind::Bool if c == b'm' => {
                    Err("value `m` does not fit a bool (use enum libbpf_tristate)".to_string())
                }
                ValueKind::Bool => {
                    dst[0] = u8::from(c == b'y');
                    Ok(())
                }
                ValueKind::Tristate => {
                    let v: u32 = match c {
                        b'y' => 1,
                        b'm' => 2,
                        _ => 0,
                    };
                    dst.copy_from_slice(&v.to_le_bytes());
                    Ok(())
                }
                ValueKind::Char => {
                    dst[0] = c;
                    Ok(())
                }
                _ => Err(format!("value `{raw}` does not fit its type")),
            }
        }
        s if s.starts_with('"') => {
            if e.kind != ValueKind::CharArray {
                return Err(format!("string value {s} needs a char array"));
            }
            let inner = s
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .ok_or_else(|| format!("malformed string value {s}"))?;
            let n = inner.len().min(dst.len() - 1);
            dst.fill(0);
            dst[..n].copy_from_slice(&inner.as_bytes()[..n]);
            Ok(())
        }
        s => {
            let v = parse_number(s).ok_or_else(|| format!("value `{s}` is not a number"))?;
            let bits = match e.kind {
                ValueKind::Int { .. } | ValueKind::Char => e.size * 8,
                _ => return Err(format!("number `{s}` does not fit its type")),
            };
            let signed = matches!(e.kind, ValueKind::Int { signed: true });
            let fits = bits == 64
                || if signed {
                    v.wrapping_add(1 << (bits - 1)) < (1 << bits)
                } else {
                    v < (1 << bits)
                };
            if !fits {
                return Err(format!("value `{s}` does not fit in {} bytes", e.size));
            }
            dst.copy_from_slice(&v.to_le_bytes()[..e.size as usize]);
            Ok(())
        }
    }
}

/// `strtoull(s, NULL, 0)` on a whole string: decimal, `0x` hex, `0` octal,
/// an optional `-` (two's complement).
fn parse_number(s: &str) -> Option<u64> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let v = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()?
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()?
    } else {
        s.parse::<u64>().ok()?
    };
    Some(if neg { v.wrapping_neg() } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(kind: ValueKind, size: u32) -> Extern {
        Extern {
            name: "CONFIG_X".into(),
            offset: 0,
            size,
            kind,
            weak: false,
        }
    }

    #[test]
    fn config_text_is_parsed_like_libbpf() {
        let c = KernelConfig::parse(
            "# comment\nCONFIG_HZ=250\n# CONFIG_FOO is not set\nCONFIG_BAR=m\nCONFIG_S=\"abc\"\n",
        );
        assert_eq!(c.get("CONFIG_HZ"), Some("250"));
        assert_eq!(c.get("CONFIG_BAR"), Some("m"));
        assert_eq!(c.get("CONFIG_S"), Some("\"abc\""));
        assert_eq!(c.get("CONFIG_FOO"), None);
    }

    #[test]
    fn kernel_version_follows_kernel_version_macro() {
        let c = KernelConfig::default().with_release("6.18.44-cloud-amd64");
        assert_eq!(c.kernel_version(), Some((6 << 16) + (18 << 8) + 44));
        let c = KernelConfig::default().with_release("5.4.300");
        assert_eq!(c.kernel_version(), Some((5 << 16) + (4 << 8) + 255));
        assert_eq!(KernelConfig::default().kernel_version(), None);
    }

    #[test]
    fn values_are_checked_against_their_types() {
        let mut b = [0u8; 8];
        assert!(set_value(&ext(ValueKind::Bool, 1), "m", &mut b[..1]).is_err());
        set_value(&ext(ValueKind::Bool, 1), "y", &mut b[..1]).unwrap();
        assert_eq!(b[0], 1);
        set_value(&ext(ValueKind::Tristate, 4), "m", &mut b[..4]).unwrap();
        assert_eq!(u32::from_le_bytes(b[..4].try_into().unwrap()), 2);
        set_value(&ext(ValueKind::Char, 1), "m", &mut b[..1]).unwrap();
        assert_eq!(b[0], b'm');
        let u16x = ext(ValueKind::Int { signed: false }, 2);
        assert!(set_value(&u16x, "65536", &mut b[..2]).is_err());
        set_value(&u16x, "0x1234", &mut b[..2]).unwrap();
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x1234);
        let i16x = ext(ValueKind::Int { signed: true }, 2);
        set_value(&i16x, "-2", &mut b[..2]).unwrap();
        assert_eq!(i16::from_le_bytes([b[0], b[1]]), -2);
        assert!(set_value(&i16x, "40000", &mut b[..2]).is_err());
        assert!(set_value(&i16x, "y", &mut b[..2]).is_err());
        let mut s = [0xffu8; 4];
        set_value(&ext(ValueKind::CharArray, 4), "\"abcdef\"", &mut s).unwrap();
        assert_eq!(&s, b"abc\0");
        assert!(set_value(
            &ext(ValueKind::Int { signed: false }, 4),
            "\"x\"",
            &mut b[..4]
        )
        .is_err());
    }
}
