//! What a verified token says about its bearer ([`Claims`]) and who a connection is
//! ([`Identity`]): the claims are checked here, after the signature and the times.
//!
//! ```json
//! {"sub":"42","exp":1767225600,"info":{"name":"Ada"},"rooms":["chat:lobby"],
//!  "grants":[{"rooms":"chat:*","allow":["join","publish","history","presence"]}]}
//! ```
//! Unknown claims (`iat`, `jti`, the application's own) are ignored.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::capability::{Capabilities, Capability};
use super::pattern::RoomPattern;
use crate::protocol;

/// Longest `sub`, in bytes (a user id, shown beside the connection id).
pub const MAX_SUB_BYTES: usize = 128;
/// Longest `info`, in bytes of JSON text: it is sent to other members with presence.
pub const MAX_INFO_BYTES: usize = 2048;
/// Most rooms a token may join on connect.
pub const MAX_CONNECT_ROOMS: usize = 32;
/// Most grants one token may carry.
pub const MAX_GRANTS: usize = 32;

/// One grant: capabilities in the rooms a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The rooms this grant covers (namespace pattern syntax).
    pub rooms: RoomPattern,
    /// What the bearer may do there (within the namespace's `granted` ceiling).
    pub allow: Capabilities,
}

impl Grant {
    /// Whether this grant allows `cap` in `room`.
    pub fn allows(&self, room: &str, cap: Capability) -> bool {
        self.allow.contains(cap) && self.rooms.matches(room)
    }
}

/// The claims of a token whose signature, algorithm and times were checked.
#[derive(Debug, Clone)]
pub struct Claims {
    /// The user id; user-limited rooms and per-user limits key on it.
    pub sub: String,
    /// Public JSON about the user, kept as the token's raw text (≤ [`MAX_INFO_BYTES`]).
    pub info: Option<Box<RawValue>>,
    /// Rooms to join as soon as the connection opens (each a valid room name).
    pub rooms: Vec<String>,
    /// When the token expires (Unix seconds): the connection must refresh by then.
    pub exp: u64,
    /// Capabilities the application granted beyond the audience-wide ones.
    pub grants: Vec<Grant>,
}

impl PartialEq for Claims {
    fn eq(&self, other: &Self) -> bool {
        let info = |c: &Self| c.info.as_ref().map(|i| i.get().to_owned());
        self.sub == other.sub
            && info(self) == info(other)
            && self.rooms == other.rooms
            && self.exp == other.exp
            && self.grants == other.grants
    }
}

/// The claims as the token's JSON carries them, before the limits are checked.
#[derive(Deserialize)]
struct WireClaims {
    /// See [`Claims::sub`].
    sub: Option<String>,
    /// See [`Claims::info`].
    info: Option<Box<RawValue>>,
    /// See [`Claims::rooms`].
    #[serde(default)]
    rooms: Vec<String>,
    /// See [`Claims::exp`]; the verifier already required it.
    exp: u64,
    /// See [`Claims::grants`].
    #[serde(default)]
    grants: Vec<Grant>,
}

/// Why a correctly signed token's claims are unusable (what the application must fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// A claim has the wrong JSON type or an unknown capability or bad pattern.
    #[error("the token's claims do not parse: {0}")]
    Shape(String),
    /// No `sub`, or an empty one.
    #[error("the token has no `sub` claim; put the user id in `sub`")]
    NoSubject,
    /// `sub` is too long or has control characters.
    #[error("the token's `sub` must be 1 to {MAX_SUB_BYTES} bytes without control characters")]
    BadSubject,
    /// `info` is too large.
    #[error("the token's `info` is over {MAX_INFO_BYTES} bytes of JSON; keep it small")]
    InfoTooBig,
    /// Too many rooms to join on connect.
    #[error("the token lists more than {MAX_CONNECT_ROOMS} rooms to join")]
    TooManyRooms,
    /// A room to join on connect is not a valid room name.
    #[error("the token's `rooms` has an invalid room name: {0}")]
    BadRoom(String),
    /// Too many grants.
    #[error("the token carries more than {MAX_GRANTS} grants; use wider patterns")]
    TooManyGrants,
}

impl Claims {
    /// Parses and checks the claims JSON of a verified token.
    pub fn from_json(json: &str) -> Result<Self, ClaimsError> {
        let wire: WireClaims =
            serde_json::from_str(json).map_err(|e| ClaimsError::Shape(e.to_string()))?;
        let sub = wire
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(ClaimsError::NoSubject)?;
        if sub.len() > MAX_SUB_BYTES || sub.chars().any(char::is_control) {
            return Err(ClaimsError::BadSubject);
        }
        if wire
            .info
            .as_ref()
            .is_some_and(|i| i.get().len() > MAX_INFO_BYTES)
        {
            return Err(ClaimsError::InfoTooBig);
        }
        if wire.rooms.len() > MAX_CONNECT_ROOMS {
            return Err(ClaimsError::TooManyRooms);
        }
        for room in &wire.rooms {
            protocol::validate_room(room)
                .map_err(|r| ClaimsError::BadRoom(r.message.into_owned()))?;
        }
        if wire.grants.len() > MAX_GRANTS {
            return Err(ClaimsError::TooManyGrants);
        }
        Ok(Self {
            sub,
            info: wire.info,
            rooms: wire.rooms,
            exp: wire.exp,
            grants: wire.grants,
        })
    }
}

/// Who a connection is: decided once at the upgrade, replaced only by a refresh.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No token (auth off, or optional and none given).
    Anonymous,
    /// A verified token's bearer.
    User(Box<Claims>),
}

impl Identity {
    /// The user id, if authenticated.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Self::Anonymous => None,
            Self::User(claims) => Some(&claims.sub),
        }
    }

    /// The token's grants (none when anonymous).
    pub fn grants(&self) -> &[Grant] {
        match self {
            Self::Anonymous => &[],
            Self::User(claims) => &claims.grants,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_claims() {
        let c = Claims::from_json(
            r#"{"sub":"42","exp":100,"iat":1,"info":{"name":"Ada", "n": [1,2]},
                "rooms":["chat:lobby"],
                "grants":[{"rooms":"chat:*","allow":["join","publish"]}]}"#,
        )
        .unwrap();
        assert_eq!(c.sub, "42");
        assert_eq!(c.exp, 100);
        assert_eq!(c.info.unwrap().get(), r#"{"name":"Ada", "n": [1,2]}"#);
        assert_eq!(c.rooms, ["chat:lobby"]);
        assert!(c.grants[0].allows("chat:x", Capability::Publish));
        assert!(!c.grants[0].allows("chat:x", Capability::History));
        assert!(!c.grants[0].allows("news", Capability::Join));
    }

    #[test]
    fn minimal_claims() {
        let c = Claims::from_json(r#"{"sub":"u","exp":5}"#).unwrap();
        assert!(c.info.is_none() && c.rooms.is_empty() && c.grants.is_empty());
        let id = Identity::User(Box::new(c));
        assert_eq!(id.user_id(), Some("u"));
        assert_eq!(Identity::Anonymous.user_id(), None);
        assert!(Identity::Anonymous.grants().is_empty());
    }

    #[test]
    fn refused_claims() {
        let cases = [
            (r#"{"exp":5}"#, ClaimsError::NoSubject),
            (r#"{"sub":"","exp":5}"#, ClaimsError::NoSubject),
            (r#"{"sub":"a\nb","exp":5}"#, ClaimsError::BadSubject),
            (
                r#"{"sub":"u","exp":5,"rooms":[""]}"#,
                ClaimsError::BadRoom("a room name is 1 to 128 bytes of UTF-8".into()),
            ),
        ];
        for (json, want) in cases {
            assert_eq!(Claims::from_json(json).unwrap_err(), want, "{json}");
        }
        let long_sub = format!(r#"{{"sub":"{}","exp":5}}"#, "x".repeat(MAX_SUB_BYTES + 1));
        assert_eq!(
            Claims::from_json(&long_sub).unwrap_err(),
            ClaimsError::BadSubject
        );
        let big_info = format!(
            r#"{{"sub":"u","exp":5,"info":"{}"}}"#,
            "x".repeat(MAX_INFO_BYTES)
        );
        assert_eq!(
            Claims::from_json(&big_info).unwrap_err(),
            ClaimsError::InfoTooBig
        );
        let rooms: Vec<String> = (0..=MAX_CONNECT_ROOMS).map(|i| format!("r{i}")).collect();
        let many = serde_json::json!({"sub":"u","exp":5,"rooms":rooms}).to_string();
        assert_eq!(
            Claims::from_json(&many).unwrap_err(),
            ClaimsError::TooManyRooms
        );
        let grants: Vec<_> = (0..=MAX_GRANTS)
            .map(|i| serde_json::json!({"rooms": format!("r{i}"), "allow": ["join"]}))
            .collect();
        let many = serde_json::json!({"sub":"u","exp":5,"grants":grants}).to_string();
        assert_eq!(
            Claims::from_json(&many).unwrap_err(),
            ClaimsError::TooManyGrants
        );
    }

    #[test]
    fn wrong_shapes_are_refused() {
        for json in [
            r#"{"sub":42,"exp":5}"#,
            r#"{"sub":"u"}"#,
            r#"{"sub":"u","exp":5,"grants":[{"rooms":"a*b","allow":["join"]}]}"#,
            r#"{"sub":"u","exp":5,"grants":[{"rooms":"a","allow":["fly"]}]}"#,
            r#"{"sub":"u","exp":5,"grants":[{"rooms":"a","allow":["join"],"x":1}]}"#,
            r#"{"sub":"u","exp":5,"rooms":"chat"}"#,
        ] {
            assert!(
                matches!(Claims::from_json(json), Err(ClaimsError::Shape(_))),
                "{json}"
            );
        }
    }
}
