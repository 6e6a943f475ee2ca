//! The bits of the wsfleet client protocol the load tester speaks: building `join` and
//! `publish` frames, and parsing only what it needs from what the server sends (borrowed,
//! no allocation on the delivery fast path).

use std::fmt::Write as _;

use serde::Deserialize;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// `{"type":"join","room":R}`.
pub fn join(room: &str) -> String {
    format!(r#"{{"type":"join","room":{}}}"#, json_str(room))
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// What kind of server message a frame is (by its `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `welcome`.
    Welcome,
    /// `joined`.
    Joined,
    /// `message` (a room delivery or broadcast).
    Message,
    /// `presence`.
    Presence,
    /// `ack`.
    Ack,
    /// `error`.
    Error,
    /// Anything else, or not JSON.
    Other,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
}

/// Classifies a text frame by its `type`.
pub fn classify(text: &str) -> Kind {
    match serde_json::from_str::<Head<'_>>(text) {
        Ok(h) => match h.kind {
            "welcome" => Kind::Welcome,
            "joined" => Kind::Joined,
            "message" => Kind::Message,
            "presence" => Kind::Presence,
            "ack" => Kind::Ack,
            "error" => Kind::Error,
            _ => Kind::Other,
        },
        Err(_) => Kind::Other,
    }
}

/// The first 200 bytes of a frame, for error reports.
pub fn short(text: &str) -> String {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A close frame as `CODE reason`.
pub fn close_text(f: Option<&CloseFrame>) -> String {
    match f {
        Some(f) => format!("{} {}", u16::from(f.code), f.reason.as_str()),
        None => "no close frame".into(),
    }
}

/// The part of a fan-out delivery the tester reads:
/// `{"type":"message","room":R,"seq":N,"data":{"p":PUBSEQ,"t":SENT_US,...}}`.
#[derive(Debug, Deserialize, PartialEq)]
pub struct Delivery<'a> {
    /// Must be `message`.
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
    /// The server's per-room sequence number.
    #[serde(default)]
    pub seq: Option<u64>,
    /// The publisher's payload.
    pub data: BenchData,
}

/// What the publisher puts in `data` besides padding.
#[derive(Debug, Deserialize, PartialEq)]
pub struct BenchData {
    /// The publisher's sequence number, from 0.
    pub p: u64,
    /// Send time, microseconds since the run's epoch.
    pub t: u64,
}

/// Parses a delivery of this tester's publisher; `None` for anything else.
pub fn delivery(text: &str) -> Option<Delivery<'_>> {
    serde_json::from_str::<Delivery<'_>>(text)
        .ok()
        .filter(|d| d.kind == "message")
}

#[derive(Deserialize)]
struct AckMsg<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    id: Option<u64>,
}

/// The numeric id of an `ack`, if the frame is one.
pub fn ack_id(text: &str) -> Option<u64> {
    serde_json::from_str::<AckMsg<'_>>(text)
        .ok()
        .filter(|a| a.kind == "ack")
        .and_then(|a| a.id)
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
            prefix: format!(r#"{{"type":"publish","room":{},"id":"#, json_str(room)),
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
        assert_eq!(classify(r#"{"type":"joined","room":"x"}"#), Kind::Joined);
        assert_eq!(
            classify(r#"{"room":"x","type":"error","code":"bad_room"}"#),
            Kind::Error
        );
        assert_eq!(classify("not json"), Kind::Other);
        assert_eq!(ack_id(r#"{"type":"ack","id":5,"seq":9}"#), Some(5));
        assert_eq!(ack_id(r#"{"type":"joined","id":5}"#), None);
        assert_eq!(join("a\"b"), r#"{"type":"join","room":"a\"b"}"#);
        assert_eq!(short(&"é".repeat(200)).len(), 200);
    }
}
