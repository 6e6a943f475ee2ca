//! Strict JSON for the values a client hands to others (`data`, `id`): at most
//! [`MAX_DEPTH`] levels of nesting and no lone UTF-16 surrogate escapes (`"\ud800"`), the
//! two things serde_json accepts in raw values but that make other parsers (browsers,
//! members' JSON libraries) throw.
//!
//! The input is already valid JSON (a `RawValue`), so one pass over its bytes suffices:
//! brackets outside strings count depth, `\u` escapes inside strings are paired.

/// Deepest nesting of arrays and objects allowed in `data` or `id` (a scalar is depth 0,
/// `[1]` depth 1).
pub const MAX_DEPTH: usize = 64;

/// Why a raw JSON value is not strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStrict {
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A `\uD800`–`\uDFFF` escape that is not half of a surrogate pair.
    LoneSurrogate,
}

/// Checks a raw JSON value (valid JSON, as serde_json's `RawValue` guarantees).
pub fn check(raw: &str) -> Result<(), NotStrict> {
    let b = raw.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(NotStrict::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => i = string_end(b, i + 1)?,
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Scans a string body starting at `i` (after its opening quote); returns the index of
/// its closing quote.
fn string_end(b: &[u8], mut i: usize) -> Result<usize, NotStrict> {
    while i < b.len() {
        match b[i] {
            b'"' => return Ok(i),
            b'\\' if b.get(i + 1) == Some(&b'u') => {
                let unit = hex4(b, i + 2);
                i += 6;
                match unit {
                    Some(0xD800..=0xDBFF) => {
                        let low = if b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'u') {
                            hex4(b, i + 2)
                        } else {
                            None
                        };
                        if !matches!(low, Some(0xDC00..=0xDFFF)) {
                            return Err(NotStrict::LoneSurrogate);
                        }
                        i += 6;
                    }
                    Some(0xDC00..=0xDFFF) => return Err(NotStrict::LoneSurrogate),
                    _ => {}
                }
            }
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Ok(i)
}

/// The four hex digits at `i`, if there are four.
fn hex4(b: &[u8], i: usize) -> Option<u16> {
    let s = std::str::from_utf8(b.get(i..i + 4)?).ok()?;
    u16::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json_and_pairs() {
        for ok in [
            "null",
            "1",
            r#""a\"[{""#,
            r#"{"a":[1,{"b":"\u00e9"}]}"#,
            r#""\ud83d\ude00""#,
            r#""\\ud800""#,
            r#""\\\ud83d\ude00""#,
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(check(&deep), Ok(()));
    }

    #[test]
    fn refuses_depth_past_the_limit() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(check(&deep), Err(NotStrict::TooDeep));
        let objs = format!("{}1{}", r#"{"a":"#.repeat(30_000), "}".repeat(30_000));
        assert_eq!(check(&objs), Err(NotStrict::TooDeep));
        // Brackets inside strings are not nesting.
        let text = format!("\"{}\"", "[".repeat(1000));
        assert_eq!(check(&text), Ok(()));
    }

    #[test]
    fn refuses_lone_surrogates() {
        for bad in [
            r#""\ud800""#,
            r#""\uDBFFx""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#"["\ud83d"]"#,
            r#""\ude00\ud83d""#,
        ] {
            assert_eq!(check(bad), Err(NotStrict::LoneSurrogate), "{bad}");
        }
    }
}
