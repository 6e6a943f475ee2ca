//! A stream's epoch: an opaque token naming one life of a room's sequence.
//!
//! A new epoch is drawn whenever the stream's past is lost (a new stream, a master that
//! started without its file), so a client's `(epoch, seq)` can never be mistaken for a
//! position in a different life of the room. 8 random bytes from the OS, as 16 hex digits:
//! unique in practice and not guessable by a client.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest epoch accepted from a file (ours are 16 characters).
pub const MAX_EPOCH_BYTES: usize = 64;

/// One life of a room's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// A fresh, random epoch.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            bytes = fallback_bytes();
        }
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(text.into())
    }

    /// An epoch read back from a file; `None` when empty, too long or not printable
    /// ASCII (the file is then damaged).
    pub fn from_saved(text: &str) -> Option<Self> {
        let ok = !text.is_empty()
            && text.len() <= MAX_EPOCH_BYTES
            && text.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(text.into()))
    }

    /// The text clients see and send back.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Only if the OS refuses randomness: std's randomly keyed SipHash over a counter and the
/// clock, still unique within the process and not predictable from outside.
fn fallback_bytes() -> [u8; 8] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish().to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_hex_and_distinct() {
        let a = Epoch::generate();
        let b = Epoch::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(fallback_bytes(), fallback_bytes());
    }

    #[test]
    fn saved_epochs_are_checked() {
        assert_eq!(
            Epoch::from_saved("0123abcd").unwrap().to_string(),
            "0123abcd"
        );
        assert!(Epoch::from_saved("").is_none());
        assert!(Epoch::from_saved("has space").is_none());
        assert!(Epoch::from_saved(&"x".repeat(65)).is_none());
    }
}
