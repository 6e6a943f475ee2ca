//! Every frame the server sends a `/ws` client. `id` and `data` arguments are raw JSON
//! (as the client wrote them); room names and ids are escaped here.

use super::{Refusal, json_str, push_json_str};

/// `{"type":"welcome","worker":SLOT,"id":ID}`, with `"user":SUB` for a connection that
/// presented a token.
pub fn welcome(slot: u32, id: &str, user: Option<&str>) -> String {
    let user = user.map_or_else(String::new, |u| format!(r#","user":{}"#, json_str(u)));
    format!(
        r#"{{"type":"welcome","worker":{slot},"id":{}{user}}}"#,
        json_str(id)
    )
}

/// `{"type":"joined","room":R}` or `{"type":"left","room":R}`
pub fn membership(kind: &str, room: &str) -> String {
    format!(r#"{{"type":"{kind}","room":{}}}"#, json_str(room))
}

/// `{"type":"ack","id":ID}` (with `"seq"` for a publish, and `"epoch"` for a publish to
/// a room with history).
pub fn ack(id: &str, seq: Option<u64>, epoch: Option<&str>) -> String {
    match (seq, epoch) {
        (Some(seq), Some(epoch)) => format!(
            r#"{{"type":"ack","id":{id},"seq":{seq},"epoch":{}}}"#,
            json_str(epoch)
        ),
        (Some(seq), None) => format!(r#"{{"type":"ack","id":{id},"seq":{seq}}}"#),
        _ => format!(r#"{{"type":"ack","id":{id}}}"#),
    }
}

/// `{"type":"joined","room":R,"epoch":E,"seq":TOP}` for a room with history, with
/// `"recovered"` when the join carried `since`.
pub fn joined_at(room: &str, epoch: &str, seq: u64, recovered: Option<bool>) -> String {
    let recovered = match recovered {
        Some(r) => format!(r#","recovered":{r}"#),
        None => String::new(),
    };
    format!(
        r#"{{"type":"joined","room":{},"epoch":{},"seq":{seq}{recovered}}}"#,
        json_str(room),
        json_str(epoch)
    )
}

/// `{"type":"history","room":R,"epoch":E,"seq":TOP,"messages":[{"seq":S,"data":D},…]}`
/// (with the request's `"id"` when it had one). `messages` are `(seq, raw JSON data)`.
pub fn history<'a>(
    room: &str,
    epoch: &str,
    top: u64,
    messages: impl IntoIterator<Item = (u64, &'a str)>,
    id: Option<&str>,
) -> String {
    let mut out = format!(
        r#"{{"type":"history","room":{},"epoch":{},"seq":{top},"messages":["#,
        json_str(room),
        json_str(epoch)
    );
    for (i, (seq, data)) in messages.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(r#"{{"seq":{seq},"data":{data}}}"#));
    }
    out.push(']');
    if let Some(id) = id {
        out.push_str(&format!(r#","id":{id}"#));
    }
    out.push('}');
    out
}

/// `{"type":"error","code":C,"message":M}` (with the request's `"id"` when it had one).
pub fn error(refusal: &Refusal, id: Option<&str>) -> String {
    let msg = json_str(&refusal.message);
    match id {
        Some(id) => {
            format!(
                r#"{{"type":"error","code":"{}","message":{msg},"id":{id}}}"#,
                refusal.code
            )
        }
        None => format!(
            r#"{{"type":"error","code":"{}","message":{msg}}}"#,
            refusal.code
        ),
    }
}

/// `{"type":"message","room":R,"seq":N,"data":DATA}` — built once by the master, per
/// publish: written into one buffer of the right size rather than through `format!`
/// (which grew its buffer step by step, ~11% of the master's instructions per publish).
pub fn room_message(room: &str, seq: u64, data: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(48 + room.len() + data.len());
    out.push_str(r#"{"type":"message","room":"#);
    push_json_str(&mut out, room);
    let _ = write!(out, r#","seq":{seq},"data":"#);
    out.push_str(data);
    out.push('}');
    out
}

/// `{"type":"message","data":DATA}` — a broadcast, built once by the master.
pub fn broadcast_message(data: &str) -> String {
    format!(r#"{{"type":"message","data":{data}}}"#)
}

/// `{"type":"presence","room":R,"event":"join"|"leave","id":ID}`, with `"user"` (and the
/// token's raw `"info"`) when the member presented a token.
pub fn presence(room: &str, join: bool, id: &str, user: Option<(&str, Option<&str>)>) -> String {
    let event = if join { "join" } else { "leave" };
    let mut out = format!(
        r#"{{"type":"presence","room":{},"event":"{event}","id":{}"#,
        json_str(room),
        json_str(id)
    );
    if let Some((user, info)) = user {
        out.push_str(r#","user":"#);
        out.push_str(&json_str(user));
        if let Some(info) = info {
            // Raw JSON text the worker took from a verified token.
            out.push_str(r#","info":"#);
            out.push_str(info);
        }
    }
    out.push('}');
    out
}

/// `{"type":"presence","room":R,"count":N}`: a big room's coalesced member count.
pub fn presence_count(room: &str, count: usize) -> String {
    format!(
        r#"{{"type":"presence","room":{},"count":{count}}}"#,
        json_str(room)
    )
}

/// The answer to a `presence` request: `{"type":"presence","room":R,"count":N}` with
/// `"members":[ID,…]` when the room lists them, and the request's `"id"`.
pub fn presence_answer(
    room: &str,
    count: usize,
    members: Option<&[String]>,
    id: Option<&str>,
) -> String {
    let mut out = format!(
        r#"{{"type":"presence","room":{},"count":{count}"#,
        json_str(room)
    );
    if let Some(members) = members {
        out.push_str(r#","members":["#);
        for (i, m) in members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&json_str(m));
        }
        out.push(']');
    }
    if let Some(id) = id {
        out.push_str(&format!(r#","id":{id}"#));
    }
    out.push('}');
    out
}

/// A connection's fleet-wide id as clients see it: `slot.generation.conn`, unique across
/// the fleet and its restarts.
pub fn fleet_id(slot: u32, generation: u64, conn: u64) -> String {
    format!("{slot}.{generation}.{conn}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_message_carries_the_room_seq_and_data_as_given() {
        for room in ["lobby", "a\"b\\c\u{1}", "général"] {
            let frame = room_message(room, 9, r#"{"k":[1,"x"]}"#);
            let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
            assert_eq!(
                v,
                serde_json::json!({"type": "message", "room": room, "seq": 9, "data": {"k": [1, "x"]}}),
                "{frame}"
            );
        }
    }

    #[test]
    fn frames_are_valid_json() {
        for frame in [
            welcome(1, "1.2.3", None),
            welcome(1, "1.2.3", Some("4\"2")),
            membership("joined", "a\"b"),
            ack("\"x\"", Some(4), None),
            ack("\"x\"", Some(4), Some("e1")),
            ack("5", None, None),
            joined_at("r", "e1", 3, None),
            joined_at("r", "e1", 3, Some(true)),
            history("r", "e1", 2, [(1, "\"a\""), (2, "{}")], Some("9")),
            history("r", "e1", 0, [], None),
            error(&Refusal::new("bad_room", "no \"quotes\""), Some("1")),
            room_message("r", 9, r#"{"k":1}"#),
            broadcast_message("[1]"),
            presence("r", true, "0.1.2", None),
            presence("r", true, "0.1.3", Some(("ann", Some(r#"{"n":1}"#)))),
            presence_count("r", 3),
            presence_answer("r", 2, Some(&["0.1.2".into(), "1.1.3".into()]), Some("[1]")),
            presence_answer("r", 900, None, None),
        ] {
            let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
            assert!(v["type"].is_string(), "{frame}");
        }
    }
}
