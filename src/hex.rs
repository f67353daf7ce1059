//! Hex byte strings as the CLI and the conformance plugin protocol use them.

/// A string that is not a sequence of hex bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid hex input: {0}")]
pub struct HexError(pub String);

/// Parses hex bytes: whitespace-separated two-digit tokens (`"11 22 3"`
/// allows one-digit tokens too), or one run of digits (`"112233"`), with
/// optional `0x` prefixes and `,` separators.
pub fn parse_hex_bytes(text: &str) -> Result<Vec<u8>, HexError> {
    let mut out = Vec::new();
    for tok in text.split(|c: char| c.is_whitespace() || c == ',') {
        let tok = tok
            .strip_prefix("0x")
            .or_else(|| tok.strip_prefix("0X"))
            .unwrap_or(tok);
        if tok.is_empty() {
            continue;
        }
        if !tok.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(HexError(format!("`{tok}` is not hex")));
        }
        if tok.len() <= 2 {
            out.push(u8::from_str_radix(tok, 16).map_err(|e| HexError(e.to_string()))?);
            continue;
        }
        if tok.len() % 2 != 0 {
            return Err(HexError(format!("`{tok}` has an odd number of digits")));
        }
        for i in (0..tok.len()).step_by(2) {
            out.push(u8::from_str_radix(&tok[i..i + 2], 16).map_err(|e| HexError(e.to_string()))?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spaced_packed_and_prefixed_bytes() {
        assert_eq!(parse_hex_bytes("11  22 3 "), Ok(vec![0x11, 0x22, 0x03]));
        assert_eq!(parse_hex_bytes("aabbcc"), Ok(vec![0xaa, 0xbb, 0xcc]));
        assert_eq!(parse_hex_bytes("0x01,0x02"), Ok(vec![1, 2]));
        assert_eq!(parse_hex_bytes(""), Ok(vec![]));
        assert!(parse_hex_bytes("zz").is_err());
        assert!(parse_hex_bytes("abc").is_err());
    }
}
