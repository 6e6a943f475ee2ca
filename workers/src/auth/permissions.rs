//! Who may do what in which room: rules by room pattern, each giving capabilities to
//! three audiences, and user-limited rooms.
//!
//! ```toml
//! [[namespace]]
//! pattern = "dm:*"
//! authenticated = ["join", "publish", "history", "presence"]
//! user_limited = true            # dm:#42,57 — only users 42 and 57
//! [[namespace]]
//! pattern = "chat:*"
//! anonymous = ["join", "history"]
//! authenticated = ["join", "publish", "history", "presence"]
//! [[namespace]]
//! pattern = "admin:*"
//! granted = ["join", "publish", "history", "presence"]
//! [[namespace]]
//! pattern = "*"                  # everything else: read-only for signed-in users
//! authenticated = ["join"]
//! ```
//!
//! - **First match wins**, in order, as with the config file's namespaces. A room no rule
//!   matches is open to everyone (today's behaviour, so adding tokens breaks no room);
//!   end the list with a `"*"` rule to close the rest.
//! - `anonymous` capabilities are everyone's; `authenticated` ones every token holder's
//!   (on top of the anonymous ones); `granted` ones only a token holder's whose token has
//!   a grant matching the room and listing the capability. `granted` is a ceiling: a token
//!   cannot grant what the rule does not list anywhere.
//! - **User-limited rooms**: in a rule with `user_limited = true`, a room whose name
//!   contains `#` is limited to the user ids after its first `#`, separated by commas:
//!   `dm:#42,57` admits only the users whose `sub` is `42` or `57` (and only for what the
//!   rule gives them). An empty id (`dm:#`, `dm:#42,,57`) admits nobody. Anonymous
//!   connections never pass. Rules without `user_limited` treat `#` as an ordinary
//!   character, so existing room names keep working.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::capability::{Capabilities, Capability};
use super::claims::Identity;
use super::pattern::RoomPattern;
use crate::protocol::Refusal;

/// Separates a user-limited room's prefix from its user ids.
pub const USER_LIST_MARK: char = '#';

/// The permissions of the rooms one pattern matches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoomRule {
    /// Which rooms (namespace syntax: `prefix*`, `exact`, `*`).
    pub pattern: RoomPattern,
    /// What everyone may do, with or without a token.
    #[serde(default)]
    pub anonymous: Capabilities,
    /// What any valid token's holder may do besides.
    #[serde(default)]
    pub authenticated: Capabilities,
    /// What a token may grant (a matching grant in the token is needed).
    #[serde(default)]
    pub granted: Capabilities,
    /// Whether `prefix#id,id` rooms here admit only the users they name.
    #[serde(default)]
    pub user_limited: bool,
}

/// Every rule, in order; (de)serialised as the list itself, from the config file and
/// to the workers in `WorkerSettings`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(transparent)]
pub struct PermissionRules {
    /// First match wins.
    pub rules: Vec<RoomRule>,
}

/// The answer to "may this connection do this in this room".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused, and why (see [`Denial::refusal`]).
    Deny(Denial),
}

/// Why a request was refused; the client gets `{"type":"error","code":"forbidden",…}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The room is user-limited and this connection is not one of its users.
    NotListedUser,
    /// Anonymous, and a token would allow it.
    NeedsToken(Capability),
    /// Authenticated, and only a grant in the token would allow it.
    NeedsGrant(Capability),
    /// Nobody may do this here.
    NotAllowed(Capability),
}

impl Denial {
    /// The `forbidden` error the client sees: says what it lacks, nothing about others.
    pub fn refusal(self) -> Refusal {
        let message: Cow<'static, str> = match self {
            Self::NotListedUser => "this room is limited to the users its name lists".into(),
            Self::NeedsToken(cap) => format!("{cap} in this room needs a token").into(),
            Self::NeedsGrant(cap) => format!("your token does not grant {cap} in this room").into(),
            Self::NotAllowed(cap) => format!("{cap} is not allowed in this room").into(),
        };
        Refusal::new("forbidden", message)
    }
}

impl PermissionRules {
    /// Whether `identity` may use `cap` in `room` (a room name already validated).
    pub fn allowed(&self, identity: &Identity, room: &str, cap: Capability) -> Decision {
        let Some(rule) = self.rules.iter().find(|r| r.pattern.matches(room)) else {
            return Decision::Allow;
        };
        if rule.user_limited && !admits(room, identity.user_id()) {
            return Decision::Deny(Denial::NotListedUser);
        }
        if rule.anonymous.contains(cap) {
            return Decision::Allow;
        }
        let Identity::User(_) = identity else {
            return Decision::Deny(
                if rule.authenticated.contains(cap) || rule.granted.contains(cap) {
                    Denial::NeedsToken(cap)
                } else {
                    Denial::NotAllowed(cap)
                },
            );
        };
        if rule.authenticated.contains(cap) {
            return Decision::Allow;
        }
        if !rule.granted.contains(cap) {
            return Decision::Deny(Denial::NotAllowed(cap));
        }
        if identity.grants().iter().any(|g| g.allows(room, cap)) {
            Decision::Allow
        } else {
            Decision::Deny(Denial::NeedsGrant(cap))
        }
    }
}

/// Whether a room in a `user_limited` rule admits `user`: rooms without `#` admit all.
fn admits(room: &str, user: Option<&str>) -> bool {
    let Some((_, list)) = room.split_once(USER_LIST_MARK) else {
        return true;
    };
    let Some(user) = user else {
        return false;
    };
    let mut ids = list.split(',');
    !ids.clone().any(str::is_empty) && ids.any(|id| id == user)
}

#[cfg(test)]
#[path = "permissions_tests.rs"]
mod tests;
