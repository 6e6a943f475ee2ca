//! Room-name patterns for permission rules and token grants: the syntax of the config
//! file's namespaces (`src/namespaces.rs`): a trailing `*` matches by prefix, `*` alone
//! matches every room, anything else matches exactly one room.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::protocol::MAX_ROOM_BYTES;

/// Longest pattern, in bytes: a room name and its `*`.
const MAX_PATTERN_BYTES: usize = MAX_ROOM_BYTES + 1;

/// Which rooms a rule or a grant applies to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum RoomPattern {
    /// Room names starting with this (`""` for `"*"`: every room).
    Prefix(String),
    /// Exactly this room.
    Exact(String),
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is the empty string.
    #[error("a room pattern is empty (use \"*\" for every room)")]
    Empty,
    /// The pattern is longer than any room name could match.
    #[error("a room pattern is longer than {MAX_PATTERN_BYTES} bytes")]
    TooLong,
    /// A `*` appears before the end.
    #[error("a room pattern may only have `*` at its end (prefix match): {0:?}")]
    InnerStar(String),
}

impl RoomPattern {
    /// Parses `text`: a trailing `*` makes a prefix; `*` anywhere else is refused.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.len() > MAX_PATTERN_BYTES {
            return Err(PatternError::TooLong);
        }
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.contains('*') {
            return Err(PatternError::InnerStar(text.to_owned()));
        }
        Ok(if prefix {
            Self::Prefix(body.to_owned())
        } else {
            Self::Exact(body.to_owned())
        })
    }

    /// Whether `room` matches.
    pub fn matches(&self, room: &str) -> bool {
        match self {
            Self::Prefix(p) => room.starts_with(p.as_str()),
            Self::Exact(e) => room == e,
        }
    }

    /// Whether every room `later` matches is already matched by `self` (a later rule or
    /// namespace that `self` covers can never apply).
    pub fn covers(&self, later: &RoomPattern) -> bool {
        match (self, later) {
            (Self::Prefix(p), Self::Prefix(q) | Self::Exact(q)) => q.starts_with(p.as_str()),
            (Self::Exact(e), Self::Exact(q)) => e == q,
            (Self::Exact(_), Self::Prefix(_)) => false,
        }
    }
}

impl TryFrom<String> for RoomPattern {
    type Error = PatternError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<RoomPattern> for String {
    fn from(pattern: RoomPattern) -> Self {
        pattern.to_string()
    }
}

impl fmt::Display for RoomPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Prefix(p) => write!(f, "{p}*"),
            Self::Exact(e) => f.write_str(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_exact_and_all() {
        let all = RoomPattern::parse("*").unwrap();
        assert!(all.matches("anything") && all.matches("x"));
        let chat = RoomPattern::parse("chat:*").unwrap();
        assert!(chat.matches("chat:") && chat.matches("chat:lobby"));
        assert!(!chat.matches("chatter") && !chat.matches("news:chat:x"));
        let lobby = RoomPattern::parse("lobby").unwrap();
        assert!(lobby.matches("lobby") && !lobby.matches("lobby2"));
        assert_eq!(chat.to_string(), "chat:*");
        assert_eq!(lobby.to_string(), "lobby");
    }

    #[test]
    fn covers_what_it_shadows() {
        let p = |t| RoomPattern::parse(t).unwrap();
        assert!(p("*").covers(&p("chat:*")) && p("*").covers(&p("lobby")));
        assert!(p("chat:*").covers(&p("chat:lobby")) && p("chat:*").covers(&p("chat:x*")));
        assert!(p("lobby").covers(&p("lobby")));
        assert!(!p("chat:*").covers(&p("*")) && !p("lobby").covers(&p("lobby*")));
        assert!(!p("chat:a*").covers(&p("chat:*")) && !p("a").covers(&p("b")));
    }

    #[test]
    fn refuses_bad_patterns() {
        assert_eq!(RoomPattern::parse(""), Err(PatternError::Empty));
        assert!(matches!(
            RoomPattern::parse("a*b"),
            Err(PatternError::InnerStar(_))
        ));
        assert!(matches!(
            RoomPattern::parse("**"),
            Err(PatternError::InnerStar(_))
        ));
        let long = "x".repeat(MAX_PATTERN_BYTES + 1);
        assert_eq!(RoomPattern::parse(&long), Err(PatternError::TooLong));
        let err = serde_json::from_str::<RoomPattern>(r#""a*b""#).unwrap_err();
        assert!(
            err.to_string().contains("only have `*` at its end"),
            "{err}"
        );
    }
}
