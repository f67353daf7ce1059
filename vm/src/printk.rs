//! The printf subset of `bpf_trace_printk`, `bpf_trace_vprintk` and
//! `bpf_snprintf`: `%d %i %u %x %X %o %c %s %p %%` with flags `-+ #0`,
//! width, precision and the length modifiers `h hh l ll z`. Integers
//! without `l` are 32-bit, as in the kernel. `%s` arguments are read with
//! the caller's reader; everything else is an error, as the kernel refuses
//! unknown conversions.

/// Formats `fmt` (without its NUL) with `args`. `read_str` reads a string
/// argument's bytes.
pub fn format(
    fmt: &[u8],
    args: &[u64],
    mut read_str: impl FnMut(u64) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(fmt.len() + 16);
    let mut next_arg = args.iter();
    let mut i = 0;
    while i < fmt.len() {
        let c = fmt[i];
        i += 1;
        if c != b'%' {
            out.push(c);
            continue;
        }
        let start = i - 1;
        let mut left = false;
        let mut plus = false;
        let mut space = false;
        let mut alt = false;
        let mut zero = false;
        while let Some(&f) = fmt.get(i) {
            match f {
                b'-' => left = true,
                b'+' => plus = true,
                b' ' => space = true,
                b'#' => alt = true,
                b'0' => zero = true,
                _ => break,
            }
            i += 1;
        }
        let mut width = 0usize;
        while let Some(d) = fmt.get(i).filter(|d| d.is_ascii_digit()) {
            width = width
                .saturating_mul(10)
                .saturating_add(usize::from(d - b'0'))
                .min(1024);
            i += 1;
        }
        let mut precision = None;
        if fmt.get(i) == Some(&b'.') {
            i += 1;
            let mut p = 0usize;
            while let Some(d) = fmt.get(i).filter(|d| d.is_ascii_digit()) {
                p = p
                    .saturating_mul(10)
                    .saturating_add(usize::from(d - b'0'))
                    .min(1024);
                i += 1;
            }
            precision = Some(p);
        }
        let mut long = 0;
        while let Some(&l) = fmt.get(i) {
            match l {
                b'l' | b'z' => long += 1,
                b'h' => {}
                _ => break,
            }
            i += 1;
        }
        let Some(&conv) = fmt.get(i) else {
            return Err("format ends inside a conversion".into());
        };
        i += 1;
        let spec = String::from_utf8_lossy(&fmt[start..i]).into_owned();
        if conv == b'%' {
            out.push(b'%');
            continue;
        }
        let arg = *next_arg
            .next()
            .ok_or_else(|| format!("not enough arguments for `{spec}`"))?;
        let wide = long > 0;
        let body: Vec<u8> = match conv {
            b'd' | b'i' => {
                let v = if wide {
                    arg as i64
                } else {
                    i64::from(arg as u32 as i32)
                };
                let mut s = v.unsigned_abs().to_string();
                if let Some(p) = precision {
                    while s.len() < p {
                        s.insert(0, '0');
                    }
                }
                let sign = if v < 0 {
                    "-"
                } else if plus {
                    "+"
                } else if space {
                    " "
                } else {
                    ""
                };
                pad_number(sign, &s, width, left, zero && precision.is_none())
            }
            b'u' | b'x' | b'X' | b'o' => {
                let v = if wide { arg } else { u64::from(arg as u32) };
                let mut s = match conv {
                    b'u' => v.to_string(),
                    b'x' => format!("{v:x}"),
                    b'X' => format!("{v:X}"),
                    _ => format!("{v:o}"),
                };
                if let Some(p) = precision {
                    while s.len() < p {
                        s.insert(0, '0');
                    }
                }
                let prefix = match (alt && v != 0, conv) {
                    (true, b'x') => "0x",
                    (true, b'X') => "0X",
                    (true, b'o') => "0",
                    _ => "",
                };
                pad_number(prefix, &s, width, left, zero && precision.is_none())
            }
            b'c' => pad(vec![arg as u8], width, left),
            b'p' => {
                // %p, %px, %pK: the address in hex.
                if let Some(&x) = fmt.get(i) {
                    if matches!(x, b'x' | b'K') {
                        i += 1;
                    } else if x.is_ascii_alphabetic() {
                        return Err(format!("unsupported conversion `%p{}`", x as char));
                    }
                }
                pad(format!("0x{arg:x}").into_bytes(), width, left)
            }
            b's' => {
                let mut s = read_str(arg).unwrap_or_else(|| b"(efault)".to_vec());
                if let Some(p) = precision {
                    s.truncate(p);
                }
                pad(s, width, left)
            }
            _ => return Err(format!("unsupported conversion `{spec}`")),
        };
        out.extend_from_slice(&body);
    }
    Ok(out)
}

fn pad(mut s: Vec<u8>, width: usize, left: bool) -> Vec<u8> {
    if s.len() >= width {
        return s;
    }
    let fill = vec![b' '; width - s.len()];
    if left {
        s.extend_from_slice(&fill);
        s
    } else {
        let mut v = fill;
        v.extend_from_slice(&s);
        v
    }
}

fn pad_number(prefix: &str, digits: &str, width: usize, left: bool, zero: bool) -> Vec<u8> {
    let len = prefix.len() + digits.len();
    if zero && !left && len < width {
        let mut v = prefix.as_bytes().to_vec();
        v.extend(std::iter::repeat_n(b'0', width - len));
        v.extend_from_slice(digits.as_bytes());
        return v;
    }
    pad(format!("{prefix}{digits}").into_bytes(), width, left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(fmt: &str, args: &[u64]) -> String {
        let strings: Vec<&[u8]> = vec![b"abc", b"hello"];
        let out = format(fmt.as_bytes(), args, |p| {
            strings.get(p as usize).map(|s| s.to_vec())
        })
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_like_the_kernel() {
        assert_eq!(f("n=%d", &[0xffff_ffff]), "n=-1");
        assert_eq!(f("n=%ld", &[0xffff_ffff]), "n=4294967295");
        assert_eq!(f("n=%lld", &[u64::MAX]), "n=-1");
        assert_eq!(
            f("%u %lu", &[0xffff_ffff, u64::MAX]),
            "4294967295 18446744073709551615"
        );
        assert_eq!(
            f("%x %X %#x %08x", &[255, 255, 255, 255]),
            "ff FF 0xff 000000ff"
        );
        assert_eq!(f("[%5d|%-5d|%05d]", &[42, 42, 42]), "[   42|42   |00042]");
        assert_eq!(f("%s and %.3s", &[0, 1]), "abc and hel");
        assert_eq!(f("%c%c 100%%", &[b'o' as u64, b'k' as u64]), "ok 100%");
        assert_eq!(f("%p", &[0x1000]), "0x1000");
        assert_eq!(f("%s", &[9]), "(efault)");
    }

    #[test]
    fn refuses_what_the_kernel_refuses() {
        assert!(format(b"%d %d", &[1], |_| None).is_err());
        assert!(format(b"%f", &[1], |_| None).is_err());
        assert!(format(b"%pI4", &[1], |_| None).is_err());
        assert!(format(b"%", &[], |_| None).is_err());
    }
}
