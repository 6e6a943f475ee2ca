//! The `/ws` client protocol, defined once: the room-name rules, JSON string escaping, the
//! server's parsing of requests ([`request`]), every frame the server sends ([`frames`]),
//! and what a client needs to speak it ([`client`]). The worker, the master's relay,
//! `wsfleet bench` and the tests all use this module.
//!
//! Frames are JSON text built with `format!` around raw JSON pieces (a publish's `data`
//! and `id` are passed through as the client wrote them, never re-serialised).

pub mod client;
pub mod frames;
pub mod request;
pub mod strict;

use std::borrow::Cow;

pub use frames::{
    ack, broadcast_message, error, fleet_id, history, joined_at, membership, presence,
    presence_answer, presence_count, room_message, welcome,
};
pub use request::{Request, Since, parse};

/// The room rules' pattern type (`prefix*`, `exact`, `*`), shared by permission rules,
/// token grants and the config file's namespaces.
pub use crate::auth::pattern::{PatternError, RoomPattern};

/// Longest room name, in bytes.
pub const MAX_ROOM_BYTES: usize = 128;

/// A request that could not be honoured: the error frame's `code` and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable code.
    pub code: &'static str,
    /// What went wrong and what to do instead.
    pub message: Cow<'static, str>,
}

impl Refusal {
    /// A refusal with a fixed message.
    pub fn new(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Checks a room name: 1–128 bytes of UTF-8 without control characters.
pub fn validate_room(room: &str) -> Result<(), Refusal> {
    if room.is_empty() || room.len() > MAX_ROOM_BYTES {
        return Err(Refusal::new(
            "bad_room",
            "a room name is 1 to 128 bytes of UTF-8",
        ));
    }
    if room.chars().any(char::is_control) {
        return Err(Refusal::new(
            "bad_room",
            "a room name may not contain control characters",
        ));
    }
    Ok(())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// JSON string literal for `s`.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    out
}

/// Appends the JSON string literal for `s` to `out`. A string with nothing to escape (a
/// room name, almost always) is copied between quotes; anything else goes through
/// serde_json, which escapes exactly `"`, `\` and control characters.
pub fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_match_serde_json_with_and_without_escapes() {
        for s in [
            "lobby",
            "général/👋",
            "a\"b",
            "back\\slash",
            "tab\tnew\nline\u{1}",
            "del\u{7f} sep\u{2028}",
            "",
        ] {
            assert_eq!(json_str(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn room_rules() {
        assert!(validate_room("général").is_ok());
        assert!(validate_room(&"x".repeat(MAX_ROOM_BYTES)).is_ok());
        assert!(validate_room(&"x".repeat(MAX_ROOM_BYTES + 1)).is_err());
        assert!(validate_room("").is_err());
        assert_eq!(validate_room("a\tb").unwrap_err().code, "bad_room");
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("éé", 3), "é");
        assert_eq!(json_str("a\"b"), r#""a\"b""#);
    }
}
