//! What a connection may do in a room: the four capabilities and a small set of them, as
//! config rules and token grants spell them (`["join","publish","history","presence"]`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// One thing a client may be allowed to do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Become a member and receive the room's messages.
    Join,
    /// Send messages into the room.
    Publish,
    /// Read the room's recent messages (recovery on join).
    History,
    /// See who else is in the room.
    Presence,
}

impl Capability {
    /// Every capability, in a fixed order.
    pub const ALL: [Self; 4] = [Self::Join, Self::Publish, Self::History, Self::Presence];

    /// The name clients and config files use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Publish => "publish",
            Self::History => "history",
            Self::Presence => "presence",
        }
    }

    /// This capability's bit in a [`Capabilities`] set.
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities; deserialises from a list of names (duplicates are harmless).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(from = "Vec<Capability>", into = "Vec<Capability>")]
pub struct Capabilities(u8);

impl Capabilities {
    /// No capability.
    pub const NONE: Self = Self(0);
    /// Every capability.
    pub const ALL: Self = Self(0b1111);

    /// Whether `cap` is in the set.
    pub fn contains(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }

    /// The set with `cap` added.
    pub fn with(self, cap: Capability) -> Self {
        Self(self.0 | cap.bit())
    }
}

impl From<Vec<Capability>> for Capabilities {
    fn from(list: Vec<Capability>) -> Self {
        list.into_iter().fold(Self::NONE, Self::with)
    }
}

impl From<Capabilities> for Vec<Capability> {
    fn from(set: Capabilities) -> Self {
        Capability::ALL
            .into_iter()
            .filter(|c| set.contains(*c))
            .collect()
    }
}

impl<const N: usize> From<[Capability; N]> for Capabilities {
    fn from(list: [Capability; N]) -> Self {
        list.into_iter().fold(Self::NONE, Self::with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_from_names() {
        let set: Capabilities = serde_json::from_str(r#"["join","history","join"]"#).unwrap();
        assert!(set.contains(Capability::Join) && set.contains(Capability::History));
        assert!(!set.contains(Capability::Publish) && !set.contains(Capability::Presence));
        assert_eq!(Capabilities::from(Capability::ALL), Capabilities::ALL);
        assert!(
            Capability::ALL
                .iter()
                .all(|c| !Capabilities::NONE.contains(*c))
        );
    }

    #[test]
    fn unknown_name_is_refused_with_the_known_ones() {
        let err = serde_json::from_str::<Capabilities>(r#"["join","admin"]"#).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("admin") && text.contains("publish"), "{text}");
    }
}
