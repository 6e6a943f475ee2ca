//! The client's side of the `/ws` protocol: building requests and reading the server's
//! frames. Used by `wsfleet bench` (on its hot paths, so the readers borrow from the frame
//! and allocate nothing) and by the integration tests.
//!
//! `id` and `data` arguments are raw JSON (`7`, `"abc"`, `{"k":1}`); room names are escaped
//! here.

use std::borrow::Cow;

use serde::Deserialize;

use super::json_str;

/// `{"type":"join","room":R}` (with `"id"` when given, to get an `ack`).
pub fn join(room: &str, id: Option<&str>) -> String {
    membership_request("join", room, id)
}

/// `{"type":"leave","room":R}` (with `"id"` when given).
pub fn leave(room: &str, id: Option<&str>) -> String {
    membership_request("leave", room, id)
}

/// `{"type":"join","room":R,"since":{"epoch":E,"seq":N}}`: re-join after a reconnect,
/// recovering the messages after `seq` (with `"id"` when given).
pub fn join_since(room: &str, epoch: &str, seq: u64, id: Option<&str>) -> String {
    let id = id.map(|id| format!(r#","id":{id}"#)).unwrap_or_default();
    format!(
        r#"{{"type":"join","room":{},"since":{{"epoch":{},"seq":{seq}}}{id}}}"#,
        json_str(room),
        json_str(epoch)
    )
}

fn membership_request(kind: &str, room: &str, id: Option<&str>) -> String {
    match id {
        Some(id) => format!(r#"{{"type":"{kind}","room":{},"id":{id}}}"#, json_str(room)),
        None => format!(r#"{{"type":"{kind}","room":{}}}"#, json_str(room)),
    }
}

/// The constant start of every acknowledged publish into `room`:
/// `{"type":"publish","room":R,"id":`. A frame is this, the id, `,"data":`, the data and
/// `}` ([`publish`] does exactly that); a sender of many frames keeps the prefix.
pub fn publish_prefix(room: &str) -> String {
    format!(r#"{{"type":"publish","room":{},"id":"#, json_str(room))
}

/// `{"type":"publish","room":R,"id":ID,"data":DATA}`, or without `"id"` when `None`.
pub fn publish(room: &str, data: &str, id: Option<&str>) -> String {
    match id {
        Some(id) => format!(r#"{}{id},"data":{data}}}"#, publish_prefix(room)),
        None => format!(
            r#"{{"type":"publish","room":{},"data":{data}}}"#,
            json_str(room)
        ),
    }
}

/// `{"type":"broadcast","data":DATA}` (with `"id"` when given).
pub fn broadcast(data: &str, id: Option<&str>) -> String {
    match id {
        Some(id) => format!(r#"{{"type":"broadcast","data":{data},"id":{id}}}"#),
        None => format!(r#"{{"type":"broadcast","data":{data}}}"#),
    }
}

/// What kind of server frame a text frame is (by its `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `welcome`: the first frame, with the connection's fleet-wide id.
    Welcome,
    /// `joined`: a join is confirmed.
    Joined,
    /// `left`: a leave is done.
    Left,
    /// `message`: a room delivery or a broadcast.
    Message,
    /// `presence`: another member joined or left.
    Presence,
    /// `ack`: a request carrying an `id` was honoured.
    Ack,
    /// `error`: a request was refused.
    Error,
    /// Anything else, or not JSON.
    Other,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// Classifies a text frame by its `type`.
pub fn classify(text: &str) -> Kind {
    let Ok(head) = serde_json::from_str::<Head<'_>>(text) else {
        return Kind::Other;
    };
    match head.kind.as_ref() {
        "welcome" => Kind::Welcome,
        "joined" => Kind::Joined,
        "left" => Kind::Left,
        "message" => Kind::Message,
        "presence" => Kind::Presence,
        "ack" => Kind::Ack,
        "error" => Kind::Error,
        _ => Kind::Other,
    }
}

/// A `message` frame: `{"type":"message","room":R,"seq":N,"data":DATA}` for a room (a
/// broadcast has neither `room` nor `seq`).
#[derive(Debug, Deserialize, PartialEq)]
pub struct Message<'a, D> {
    /// Must be `message`.
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    /// The room, absent for a broadcast.
    #[serde(borrow, default)]
    pub room: Option<Cow<'a, str>>,
    /// The server's per-room sequence number, absent for a broadcast.
    #[serde(default)]
    pub seq: Option<u64>,
    /// The publisher's `data`, read as the caller's type.
    pub data: D,
}

/// Reads a `message` frame whose `data` parses as `D`; `None` for any other frame.
pub fn message<'a, D: Deserialize<'a>>(text: &'a str) -> Option<Message<'a, D>> {
    serde_json::from_str::<Message<'a, D>>(text)
        .ok()
        .filter(|m| m.kind == "message")
}

/// The room of a `joined` frame; `None` for any other frame.
pub fn joined(text: &str) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct Joined<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow)]
        room: Cow<'a, str>,
    }
    serde_json::from_str::<Joined<'_>>(text)
        .ok()
        .filter(|j| j.kind == "joined")
        .map(|j| j.room)
}

/// A `joined` frame with its stream position (rooms with history).
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Position<'a> {
    /// The room.
    #[serde(borrow)]
    pub room: Cow<'a, str>,
    /// The stream's epoch (absent when the room keeps no history).
    #[serde(borrow, default)]
    pub epoch: Option<Cow<'a, str>>,
    /// The room's last `seq` at the join.
    #[serde(default)]
    pub seq: Option<u64>,
    /// Whether a join with `since` replays the gap (absent without `since`).
    #[serde(default)]
    pub recovered: Option<bool>,
}

/// Reads a `joined` frame's position; `None` for any other frame.
pub fn position(text: &str) -> Option<Position<'_>> {
    #[derive(Deserialize)]
    struct Joined<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(flatten, borrow)]
        position: Position<'a>,
    }
    serde_json::from_str::<Joined<'_>>(text)
        .ok()
        .filter(|j| j.kind == "joined")
        .map(|j| j.position)
}

/// An `ack` frame: `{"type":"ack","id":ID}` (with `"seq"` for a room publish).
#[derive(Debug, Deserialize, PartialEq)]
pub struct Ack<'a, I> {
    /// Must be `ack`.
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    /// The request's `id`, read as the caller's type.
    pub id: I,
    /// The room sequence number the publish got.
    #[serde(default)]
    pub seq: Option<u64>,
}

/// Reads an `ack` frame whose `id` parses as `I`; `None` for any other frame.
pub fn ack<'a, I: Deserialize<'a>>(text: &'a str) -> Option<Ack<'a, I>> {
    serde_json::from_str::<Ack<'a, I>>(text)
        .ok()
        .filter(|a| a.kind == "ack")
}

/// An `error` frame: why the server refused a request.
#[derive(Debug, Deserialize, PartialEq)]
pub struct ServerError<'a> {
    /// Must be `error`.
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    /// Machine-readable code (`bad_room`, `rate_limited`, …).
    #[serde(borrow)]
    pub code: Cow<'a, str>,
    /// What went wrong and what to do.
    #[serde(borrow)]
    pub message: Cow<'a, str>,
}

/// Reads an `error` frame; `None` for any other frame.
pub fn error(text: &str) -> Option<ServerError<'_>> {
    serde_json::from_str::<ServerError<'_>>(text)
        .ok()
        .filter(|e| e.kind == "error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Refusal, Request, frames, parse};

    #[test]
    fn requests_parse_as_the_server_reads_them() {
        let frame = join("a\"b", Some("1"));
        let (id, req) = parse(&frame);
        assert_eq!(
            (id, req),
            (
                Some("1"),
                Ok(Request::Join {
                    room: "a\"b".into(),
                    since: None
                })
            )
        );
        let frame = join_since("r", "e\"1", 4, Some("2"));
        let (id, req) = parse(&frame);
        assert_eq!(id, Some("2"));
        let since = Some(super::super::Since {
            epoch: "e\"1".into(),
            seq: 4,
        });
        assert_eq!(
            req,
            Ok(Request::Join {
                room: "r".into(),
                since
            })
        );
        let frame = frames::joined_at("r", "e1", 7, Some(true));
        let p = position(&frame).unwrap();
        assert_eq!(
            (p.room.as_ref(), p.epoch.as_deref(), p.seq, p.recovered),
            ("r", Some("e1"), Some(7), Some(true))
        );
        let frame = frames::membership("joined", "r");
        let p = position(&frame).unwrap();
        assert_eq!((p.epoch, p.seq), (None, None));
        assert_eq!(
            parse(&leave("r", None)).1,
            Ok(Request::Leave { room: "r".into() })
        );
        let frame = publish("r", r#"{"k":[1]}"#, Some(r#""x""#));
        let (id, req) = parse(&frame);
        assert_eq!(id, Some(r#""x""#));
        assert_eq!(
            req,
            Ok(Request::Publish {
                room: "r".into(),
                data: r#"{"k":[1]}"#
            })
        );
        assert_eq!(
            parse(&publish("r", "2", None)).1,
            Ok(Request::Publish {
                room: "r".into(),
                data: "2"
            })
        );
        assert_eq!(
            parse(&broadcast("\"hi\"", Some("3"))),
            (Some("3"), Ok(Request::Broadcast { data: "\"hi\"" }))
        );
    }

    #[test]
    fn server_frames_read_back() {
        let frame = frames::room_message("r", 7, "42");
        let m = message::<u64>(&frame).unwrap();
        assert_eq!((m.room.as_deref(), m.seq, m.data), (Some("r"), Some(7), 42));
        let frame = frames::broadcast_message("\"hi\"");
        let b = message::<String>(&frame).unwrap();
        assert_eq!((b.room, b.seq, b.data.as_str()), (None, None, "hi"));
        assert!(message::<u64>(&frames::room_message("r", 7, "\"text\"")).is_none());
        assert!(message::<u64>(&frames::ack("1", None, None)).is_none());
        assert_eq!(
            joined(&frames::membership("joined", "g\u{e9}n")).as_deref(),
            Some("gén")
        );
        assert_eq!(joined(&frames::membership("left", "r")), None);
        let frame = frames::ack("5", Some(9), None);
        let a = ack::<u64>(&frame).unwrap();
        assert_eq!((a.id, a.seq), (5, Some(9)));
        assert!(ack::<u64>(&frames::membership("joined", "r")).is_none());
        let frame = frames::error(&Refusal::new("bad_room", "no"), None);
        let e = error(&frame).unwrap();
        assert_eq!((e.code.as_ref(), e.message.as_ref()), ("bad_room", "no"));
    }

    #[test]
    fn classifies_every_server_frame() {
        let r = Refusal::new("x", "y");
        for (frame, kind) in [
            (frames::welcome(1, "1.2.3", None), Kind::Welcome),
            (frames::membership("joined", "r"), Kind::Joined),
            (frames::membership("left", "r"), Kind::Left),
            (frames::room_message("r", 1, "1"), Kind::Message),
            (frames::presence("r", true, "1.1.1", None), Kind::Presence),
            (frames::ack("1", None, None), Kind::Ack),
            (frames::error(&r, None), Kind::Error),
            (r#"{"type":"dance"}"#.to_owned(), Kind::Other),
            ("not json".to_owned(), Kind::Other),
        ] {
            assert_eq!(classify(&frame), kind, "{frame}");
        }
    }
}
