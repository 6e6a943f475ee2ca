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
    /// With `--payload json`: chat-like JSON arrays of about `size` bytes, used in turn
    /// instead of the padding.
    json: Vec<String>,
}

/// Words for the chat-like payload.
const WORDS: &[&str] = &[
    "the", "a", "to", "and", "of", "in", "is", "it", "you", "that", "was", "for", "on", "are",
    "with", "they", "be", "at", "one", "have", "this", "from", "by", "hot", "word", "but", "what",
    "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your",
    "how", "said", "an", "each", "she", "which", "do", "their", "time", "if", "will", "way",
    "about", "many", "then", "them", "write", "would", "like", "so", "these", "her", "long",
    "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come",
    "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water", "than",
    "call", "first", "who", "may", "down", "side", "been", "now", "find", "deploy", "build",
];

/// A chat-like JSON array (message objects: ids, users, words, timestamps, counts) of about
/// `size` bytes, different for each `seed`.
pub fn chat_json(size: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut s = String::from("[");
    while s.len() + 40 < size || s.len() == 1 {
        if s.len() > 1 {
            s.push(',');
        }
        let words = 4 + next() % 12;
        let text: Vec<&str> = (0..words)
            .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
            .collect();
        let _ = write!(
            s,
            r#"{{"id":"{:08x}","user":"user{}","text":"{}","ts":{},"likes":{},"room":"lobby"}}"#,
            next() as u32,
            next() % 500,
            text.join(" "),
            1_764_460_000_000 + next() % 100_000_000,
            next() % 50
        );
    }
    s.push(']');
    s
}

impl Publisher {
    /// Frames for `room` with `data` of about `size` bytes.
    pub fn new(room: &str, size: usize) -> Publisher {
        Publisher {
            prefix: client::publish_prefix(room),
            size,
            pad: "x".repeat(size),
            json: Vec::new(),
        }
    }

    /// Frames whose `data` holds chat-like JSON of about `size` bytes (32 variants in turn).
    pub fn json(room: &str, size: usize) -> Publisher {
        Publisher {
            json: (0..32)
                .map(|i| chat_json(size.saturating_sub(40), i))
                .collect(),
            ..Publisher::new(room, 0)
        }
    }

    /// The frame for publisher sequence `p` sent at `t` µs.
    pub fn frame(&self, p: u64, t: u64) -> String {
        let mut s = String::with_capacity(self.prefix.len() + self.size + 48);
        s.push_str(&self.prefix);
        let _ = write!(s, r#"{p},"data":"#);
        if !self.json.is_empty() {
            let body = &self.json[(p % self.json.len() as u64) as usize];
            let _ = write!(s, r#"{{"p":{p},"t":{t},"msgs":{body}}}}}"#);
            return s;
        }
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
    fn json_publish_frames_are_valid_chat_like_and_sized() {
        let p = Publisher::json("r", 1024);
        let f = p.frame(3, 42);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["data"]["p"], 3);
        assert!(v["data"]["msgs"][0]["user"].is_string());
        let data = v["data"].to_string().len();
        assert!((900..1200).contains(&data), "{data}");
        assert_ne!(p.frame(4, 42)[60..], f[60..], "the messages vary");
    }

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
