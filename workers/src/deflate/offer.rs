//! permessage-deflate negotiation (RFC 7692 §5, §7.1): reads the client's
//! `Sec-WebSocket-Extensions` offers and builds the one answer the server ever gives.
//!
//! The answer always carries `server_no_context_takeover` (every message is compressed on
//! its own, so one compressed frame is valid for every recipient) and
//! `client_no_context_takeover` (§7.1.1.2 lets a server add it unasked), so no connection
//! keeps a deflate or inflate window between messages.

use super::compress::{MAX_WINDOW_BITS, MIN_WINDOW_BITS};

/// The accepted offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The `server_max_window_bits` the client asked for, echoed in the answer. Below 15
    /// this client's messages are compressed for it alone with that window (the shared
    /// frames use the full one).
    pub server_max_window_bits: Option<u8>,
}

impl Agreed {
    /// The window messages to this client are compressed with, in bits.
    pub fn window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS)
    }

    /// The `Sec-WebSocket-Extensions` answer.
    pub fn header(&self) -> String {
        let mut h = String::from(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        if let Some(bits) = self.server_max_window_bits {
            h.push_str(&format!("; server_max_window_bits={bits}"));
        }
        h
    }
}

/// The first acceptable permessage-deflate offer among the header values, if any (an
/// offer with an unknown, repeated or invalid parameter is skipped, §5.1).
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Agreed> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .find_map(accept_offer)
}

/// One offer (`permessage-deflate; param; param=value`), if we can take it.
fn accept_offer(offer: &str) -> Option<Agreed> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen = [false; 4];
    let mut agreed = Agreed {
        server_max_window_bits: None,
    };
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let slot = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                let bits = window_bits(value?)?;
                // zlib's raw deflate has no 8-bit window: skip to the next offer.
                (bits >= MIN_WINDOW_BITS).then_some(())?;
                agreed.server_max_window_bits = Some(bits);
                2
            }
            "client_max_window_bits" => {
                // We inflate with the full window, which reads any smaller one.
                if let Some(v) = value {
                    window_bits(v)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
    }
    Some(agreed)
}

/// A window size parameter: 8 to 15, digits only (RFC 7692 §7.1.2).
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=MAX_WINDOW_BITS).contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: &str) -> Option<Agreed> {
        negotiate([v])
    }

    #[test]
    fn a_plain_offer_gets_both_no_context_takeovers() {
        let a = n("permessage-deflate").unwrap();
        assert_eq!(a.window_bits(), 15);
        assert_eq!(
            a.header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn what_browsers_send_is_accepted() {
        let a = n("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(a.server_max_window_bits, None);
        assert!(n("permessage-deflate; client_max_window_bits=8").is_some());
    }

    #[test]
    fn a_small_server_window_is_echoed_and_used() {
        let a = n("permessage-deflate; server_max_window_bits=9").unwrap();
        assert_eq!(a.window_bits(), 9);
        assert!(a.header().ends_with("; server_max_window_bits=9"));
        assert_eq!(n("permessage-deflate; server_max_window_bits=8"), None);
    }

    #[test]
    fn bad_offers_are_skipped_for_the_next_one() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=0x9",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
        let a = negotiate([
            "permessage-deflate; server_max_window_bits=99, permessage-deflate; client_max_window_bits=10",
        ]);
        assert_eq!(
            a,
            Some(Agreed {
                server_max_window_bits: None
            })
        );
        assert!(negotiate(["foo", "permessage-deflate"]).is_some());
        assert_eq!(negotiate([]), None);
    }
}
