//! What the load tester adds to the client protocol (`wsfleet_worker::protocol::client`):
//! its own publish payload (sequence number and send time, padded to a size), built without
//! re-escaping per message and read back without allocating, plus short texts for reports.

use std::fmt::Write as _;

use serde::Deserialize;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use wsfleet_worker::protocol::client;

/// The first 200 bytes of a frame, for error reports.
pub fn short(text: &str) -> String {
    wsfleet_worker::protocol::truncate(text, 200).to_owned()
}

/// A close frame as `CODE reason`.
pub fn close_text(f: Option<&CloseFrame>) -> String {
    match f {
        Some(f) => format!("{} {}", u16::from(f.code), f.reason.as_str()),
        None => "no close frame".into(),
    }
}

/// What the publisher puts in `data` besides padding.
#[derive(Debug, Deserialize, PartialEq)]
pub struct BenchData {
    /// The publisher's sequence number, from 0.
    pub p: u64,
    /// Send time, microseconds since the run's epoch.
    pub t: u64,
}

/// A fan-out delivery of this tester's publisher:
/// `{"type":"message","room":R,"seq":N,"data":{"p":PUBSEQ,"t":SENT_US,...}}`.
pub type Delivery<'a> = client::Message<'a, BenchData>;

/// Parses a delivery of this tester's publisher; `None` for anything else.
pub fn delivery(text: &str) -> Option<Delivery<'_>> {
    client::message(text)
}

/// The numeric id of an `ack`, if the frame is one.
pub fn ack_id(text: &str) -> Option<u64> {
    client::ack::<u64>(text).map(|a| a.id)
}

/// Builds publish frames of about `size` bytes of `data`, reusing one padding string.
pub struct Publisher {
    /// `{"type":"publish","room":"R","id":` — the constant prefix (the id asks for an ack, so
    /// the tester knows which publishes the server accepted, e.g. under its rate limit).
    prefix: String,
    /// Target size of `data`.
    size: usize,
    /// `size` pad characters, sliced per message.
    pad: String,
}

impl Publisher {
    /// Frames for `room` with `data` of about `size` bytes.
    pub fn new(room: &str, size: usize) -> Publisher {
        Publisher {
            prefix: client::publish_prefix(room),
            size,
            pad: "x".repeat(size),
        }
    }

    /// The frame for publisher sequence `p` sent at `t` µs.
    pub fn frame(&self, p: u64, t: u64) -> String {
        let mut s = String::with_capacity(self.prefix.len() + self.size + 48);
        s.push_str(&self.prefix);
        let _ = write!(s, r#"{p},"data":"#);
        let start = s.len();
        let _ = write!(s, r#"{{"p":{p},"t":{t},"x":""#);
        // Data so far plus the closing `"}` of data, then `}` of the frame.
        let used = s.len() - start + 2;
        s.push_str(&self.pad[..self.size.saturating_sub(used)]);
        s.push_str("\"}}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_frame_is_valid_and_sized() {
        let p = Publisher::new("be\"nch", 256);
        let f = p.frame(12, 3456);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["type"], "publish");
        assert_eq!(v["room"], "be\"nch");
        assert_eq!(v["data"]["p"], 12);
        assert_eq!(v["id"], 12);
        assert_eq!(v["data"]["t"], 3456);
        assert_eq!(serde_json::to_string(&v["data"]).unwrap().len(), 256);
        // Too small to pad: still valid.
        let f = Publisher::new("r", 1).frame(u64::MAX, u64::MAX);
        assert!(serde_json::from_str::<serde_json::Value>(&f).is_ok());
    }

    #[test]
    fn parses_deliveries_and_kinds() {
        let d = delivery(
            r#"{"type":"message","room":"bench","seq":7,"data":{"p":3,"t":99,"x":"xxxx"}}"#,
        )
        .unwrap();
        assert_eq!((d.seq, d.data.p, d.data.t), (Some(7), 3, 99));
        assert!(delivery(r#"{"type":"message","room":"bench","seq":7,"data":"hello"}"#).is_none());
        assert!(
            delivery(r#"{"type":"presence","room":"b","event":"join","id":"1.1.1"}"#).is_none()
        );
        assert_eq!(ack_id(r#"{"type":"ack","id":5,"seq":9}"#), Some(5));
        assert_eq!(ack_id(r#"{"type":"joined","id":5}"#), None);
        assert_eq!(short(&"é".repeat(200)).len(), 200);
    }
}
