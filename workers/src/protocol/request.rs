//! The server's side of a client request: parsing one text frame into a [`Request`] or a
//! [`Refusal`].
//!
//! Requests are parsed with borrowed fields and `data`/`id` are kept as raw JSON text, so
//! a publish is never re-serialised on its way to the master.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::strict::{self, MAX_DEPTH, NotStrict};
use super::{Refusal, truncate, validate_room};

/// A client request that parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Become a member of `room`, recovering what was missed after `since`.
    Join {
        /// The room.
        room: String,
        /// The last position the client saw, to replay the gap from.
        since: Option<Since>,
    },
    /// Stop being a member of `room`.
    Leave {
        /// The room.
        room: String,
    },
    /// Send `data` to every member of `room`.
    Publish {
        /// The room.
        room: String,
        /// Raw JSON.
        data: &'a str,
    },
    /// Send `data` to every `/ws` client of the fleet.
    Broadcast {
        /// Raw JSON.
        data: &'a str,
    },
    /// A page of `room`'s stored messages (see the master's history queries).
    History {
        /// The room.
        room: String,
        /// Most messages wanted (at most [`MAX_HISTORY_LIMIT`]).
        limit: usize,
        /// Page from this position (forward: after it; reverse: before it).
        since: Option<Since>,
        /// Newest first.
        reverse: bool,
    },
    /// Replace the connection's token with a fresh one for the same user (see the worker's
    /// token expiry: `token_expiring`, then close 4001 unless refreshed).
    Refresh {
        /// The fresh JWT.
        token: &'a str,
    },
    /// `room`'s member count, and its member ids while the room lists them.
    Presence {
        /// The room.
        room: String,
    },
}

/// Most messages one `history` request may ask for; page with `since` for more.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// `limit` of a `history` request that leaves it out.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;

/// A stream position as a client sends it: `{"epoch":E,"seq":N}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    /// The epoch the client saw (an opaque string).
    pub epoch: String,
    /// The last `seq` it saw.
    pub seq: u64,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    room: Option<&'a RawValue>,
    /// `null` is a value here (`Some("null")`); only an absent key is `None`.
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    /// As `data`: `"id":null` is an id, acknowledged like any other.
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
    #[serde(borrow, default)]
    limit: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reverse: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
}

/// A key that is present holds a value, even `null` (serde's `Option` would read `null`
/// as absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// What a request looks like, for the refusals of anything else.
const OBJECT_HINT: &str =
    "a request must be a JSON object like {\"type\":\"join\",\"room\":\"general\"}";

/// Parses one text frame. The `id`, when present and the frame is a JSON object, is
/// returned even when the request is refused, so the error can carry it.
pub fn parse(text: &str) -> (Option<&str>, Result<Request<'_>, Refusal>) {
    if !text.trim_start().starts_with('{') {
        return (None, Err(Refusal::new("bad_json", OBJECT_HINT)));
    }
    let env: Envelope<'_> = match serde_json::from_str(text) {
        Ok(env) => env,
        Err(e) => return (None, Err(not_an_envelope(&e))),
    };
    let id = env.id.map(RawValue::get);
    if let Some(raw) = id
        && let Err(why) = strict::check(raw)
    {
        return (None, Err(not_strict("id", why)));
    }
    (id, request(&env))
}

/// The refusal for a frame that is not a request object.
fn not_an_envelope(e: &serde_json::Error) -> Refusal {
    let text = e.to_string();
    if let Some(rest) = text.strip_prefix("duplicate field `") {
        let key = rest.split('`').next().unwrap_or_default();
        let msg = format!("duplicate key \"{key}\" in the request; send each key once");
        return Refusal::new("bad_json", msg);
    }
    if e.is_data() {
        Refusal::new("bad_json", OBJECT_HINT)
    } else {
        Refusal::new("bad_json", format!("request is not valid JSON: {e}"))
    }
}

/// The refusal for a `data` or `id` that is valid JSON but not strict.
fn not_strict(field: &str, why: NotStrict) -> Refusal {
    let msg = match why {
        NotStrict::TooDeep => {
            format!("\"{field}\" is nested deeper than {MAX_DEPTH} levels; flatten it")
        }
        NotStrict::LoneSurrogate => format!(
            "\"{field}\" contains a lone UTF-16 surrogate escape (like \"\\ud800\"); \
             send valid Unicode"
        ),
    };
    Refusal::new("invalid_field", msg)
}

fn request<'a>(env: &Envelope<'a>) -> Result<Request<'a>, Refusal> {
    let kind = env.kind.ok_or_else(|| {
        Refusal::new(
            "missing_field",
            "missing \"type\" (join, leave, publish, broadcast, history, presence or refresh)",
        )
    })?;
    let kind: Cow<'_, str> = serde_json::from_str(kind.get())
        .map_err(|_| Refusal::new("invalid_field", "\"type\" must be a string"))?;
    match kind.as_ref() {
        "join" => Ok(Request::Join {
            room: room(env)?,
            since: since(env)?,
        }),
        "history" => Ok(Request::History {
            room: room(env)?,
            limit: limit(env)?,
            since: since(env)?,
            reverse: reverse(env)?,
        }),
        "leave" => Ok(Request::Leave { room: room(env)? }),
        "presence" => Ok(Request::Presence { room: room(env)? }),
        "publish" => Ok(Request::Publish {
            room: room(env)?,
            data: data(env)?,
        }),
        "broadcast" => Ok(Request::Broadcast { data: data(env)? }),
        "refresh" => Ok(Request::Refresh {
            token: token(env)?,
        }),
        other => Err(Refusal {
            code: "unknown_type",
            message: format!(
                "unknown request type {:?}; use join, leave, publish, broadcast, history, presence or refresh",
                truncate(other, 64)
            )
            .into(),
        }),
    }
}

/// `token`: a JWT is base64url and dots, so a plain JSON string without escapes.
fn token<'a>(env: &Envelope<'a>) -> Result<&'a str, Refusal> {
    let raw = env
        .token
        .ok_or_else(|| Refusal::new("missing_field", "missing \"token\" (the fresh JWT)"))?
        .get();
    raw.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .filter(|t| !t.is_empty() && !t.contains('\\'))
        .ok_or_else(|| Refusal::new("invalid_field", "\"token\" must be the JWT as a string"))
}

fn room(env: &Envelope<'_>) -> Result<String, Refusal> {
    let raw = env
        .room
        .ok_or_else(|| Refusal::new("missing_field", "missing \"room\" (a string)"))?;
    let room: String = serde_json::from_str(raw.get())
        .map_err(|_| Refusal::new("invalid_field", "\"room\" must be a string"))?;
    validate_room(&room)?;
    Ok(room)
}

/// `since`: absent or `null`, or exactly `{"epoch":"…","seq":N}` with N ≥ 0.
fn since(env: &Envelope<'_>) -> Result<Option<Since>, Refusal> {
    let Some(raw) = env.since else {
        return Ok(None);
    };
    if raw.get() == "null" {
        return Ok(None);
    }
    let since: Since = serde_json::from_str(raw.get()).map_err(|_| {
        Refusal::new(
            "invalid_field",
            "\"since\" must be {\"epoch\":\"…\",\"seq\":N} as the last joined, message or ack showed (N a whole number ≥ 0)",
        )
    })?;
    if since.epoch.is_empty() || since.epoch.len() > MAX_EPOCH_BYTES {
        return Err(Refusal::new(
            "invalid_field",
            "\"since.epoch\" must be the non-empty epoch string the server sent",
        ));
    }
    Ok(Some(since))
}

/// Longest `since.epoch` accepted (the server's are 16 characters).
const MAX_EPOCH_BYTES: usize = 64;

fn limit(env: &Envelope<'_>) -> Result<usize, Refusal> {
    let Some(raw) = env.limit else {
        return Ok(DEFAULT_HISTORY_LIMIT);
    };
    match serde_json::from_str::<u64>(raw.get()) {
        Ok(n) if n <= MAX_HISTORY_LIMIT as u64 => Ok(n as usize),
        _ => Err(Refusal {
            code: "invalid_field",
            message: format!(
                "\"limit\" must be a whole number from 0 to {MAX_HISTORY_LIMIT}; page with \"since\" for more"
            )
            .into(),
        }),
    }
}

fn reverse(env: &Envelope<'_>) -> Result<bool, Refusal> {
    env.reverse
        .map(|raw| serde_json::from_str::<bool>(raw.get()))
        .transpose()
        .map(|r| r.unwrap_or(false))
        .map_err(|_| Refusal::new("invalid_field", "\"reverse\" must be true or false"))
}

fn data<'a>(env: &Envelope<'a>) -> Result<&'a str, Refusal> {
    let data = env
        .data
        .map(RawValue::get)
        .ok_or_else(|| Refusal::new("missing_field", "missing \"data\" (any JSON value)"))?;
    strict::check(data).map_err(|why| not_strict("data", why))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_request_type() {
        assert_eq!(
            parse(r#"{"type":"join","room":"general"}"#).1,
            Ok(Request::Join {
                room: "general".into(),
                since: None
            })
        );
        assert_eq!(
            parse(r#"{"type":"presence","room":"r","id":1}"#),
            (Some("1"), Ok(Request::Presence { room: "r".into() }))
        );
        assert_eq!(
            parse(r#"{"type":"leave","room":"g\u00e9n"}"#).1,
            Ok(Request::Leave {
                room: "gén".into()
            })
        );
        let (id, req) = parse(r#"{"type":"publish","room":"r","data":{"a":[1,2]},"id":7}"#);
        assert_eq!(id, Some("7"));
        assert_eq!(
            req,
            Ok(Request::Publish {
                room: "r".into(),
                data: r#"{"a":[1,2]}"#
            })
        );
        assert_eq!(
            parse(r#"{"type":"broadcast","data":"hi"}"#).1,
            Ok(Request::Broadcast { data: r#""hi""# })
        );
    }

    #[test]
    fn refresh_takes_the_token_as_a_plain_string() {
        assert_eq!(
            parse(r#"{"type":"refresh","token":"a.b.c","id":3}"#),
            (Some("3"), Ok(Request::Refresh { token: "a.b.c" }))
        );
        let code = |s: &str| parse(s).1.unwrap_err().code;
        assert_eq!(code(r#"{"type":"refresh"}"#), "missing_field");
        assert_eq!(code(r#"{"type":"refresh","token":null}"#), "missing_field");
        for bad in [r#""""#, "42", r#""a\"b""#, r#""a\u002eb""#] {
            let text = format!(r#"{{"type":"refresh","token":{bad}}}"#);
            assert_eq!(code(&text), "invalid_field", "{text}");
        }
    }

    #[test]
    fn refuses_bad_input_with_codes() {
        let code = |s: &str| parse(s).1.unwrap_err().code;
        assert_eq!(code("{nope"), "bad_json");
        assert_eq!(code("[1,2]"), "bad_json");
        assert_eq!(code(r#"{"room":"x"}"#), "missing_field");
        assert_eq!(code(r#"{"type":5}"#), "invalid_field");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"join"}"#), "missing_field");
        assert_eq!(code(r#"{"type":"join","room":3}"#), "invalid_field");
        assert_eq!(code(r#"{"type":"join","room":""}"#), "bad_room");
        assert_eq!(code(r#"{"type":"join","room":"a\nb"}"#), "bad_room");
        let long = format!(r#"{{"type":"join","room":"{}"}}"#, "x".repeat(129));
        assert_eq!(code(&long), "bad_room");
        assert_eq!(code(r#"{"type":"publish","room":"r"}"#), "missing_field");
    }

    #[test]
    fn null_is_a_value_for_data_and_id() {
        let (id, req) = parse(r#"{"type":"publish","room":"r","data":null,"id":null}"#);
        assert_eq!(id, Some("null"));
        assert_eq!(
            req,
            Ok(Request::Publish {
                room: "r".into(),
                data: "null"
            })
        );
        assert_eq!(
            parse(r#"{"type":"broadcast","data":null}"#).1,
            Ok(Request::Broadcast { data: "null" })
        );
    }

    #[test]
    fn strict_data_and_id() {
        let deep = format!(
            r#"{{"type":"publish","room":"r","data":{}{},"id":1}}"#,
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        let (id, req) = parse(&deep);
        assert_eq!(id, Some("1"));
        let refusal = req.unwrap_err();
        assert_eq!(refusal.code, "invalid_field");
        assert!(
            refusal.message.contains("deeper than 64"),
            "{}",
            refusal.message
        );
        let lone = parse(r#"{"type":"broadcast","data":"\ud800"}"#)
            .1
            .unwrap_err();
        assert_eq!(lone.code, "invalid_field");
        assert!(lone.message.contains("surrogate"));
        let (id, req) = parse(r#"{"type":"join","room":"r","id":"\udfff"}"#);
        assert_eq!(id, None);
        assert_eq!(req.unwrap_err().code, "invalid_field");
    }

    #[test]
    fn duplicate_keys_are_named() {
        for text in [
            r#"{"type":"join","type":"leave","room":"r"}"#,
            r#"{"type":"join","room":"a","room":"b"}"#,
            r#"{"type":"publish","room":"r","data":1,"data":2}"#,
        ] {
            let refusal = parse(text).1.unwrap_err();
            assert_eq!(refusal.code, "bad_json");
            assert!(
                refusal.message.contains("duplicate key"),
                "{}",
                refusal.message
            );
        }
    }

    #[test]
    fn join_since_and_history_parse_and_bad_values_are_invalid_field() {
        assert_eq!(
            parse(r#"{"type":"join","room":"r","since":{"epoch":"e","seq":4}}"#).1,
            Ok(Request::Join {
                room: "r".into(),
                since: Some(Since {
                    epoch: "e".into(),
                    seq: 4
                })
            })
        );
        assert_eq!(
            parse(r#"{"type":"join","room":"r","since":null}"#).1,
            Ok(Request::Join {
                room: "r".into(),
                since: None
            })
        );
        assert_eq!(
            parse(r#"{"type":"history","room":"r","limit":5,"reverse":true}"#).1,
            Ok(Request::History {
                room: "r".into(),
                limit: 5,
                since: None,
                reverse: true
            })
        );
        let code = |s: &str| parse(s).1.unwrap_err().code;
        for bad in [
            r#"{"type":"join","room":"r","since":5}"#,
            r#"{"type":"join","room":"r","since":{"epoch":"e"}}"#,
            r#"{"type":"join","room":"r","since":{"epoch":"e","seq":-1}}"#,
            r#"{"type":"join","room":"r","since":{"epoch":"e","seq":1.5}}"#,
            r#"{"type":"join","room":"r","since":{"epoch":"e","seq":"1"}}"#,
            r#"{"type":"join","room":"r","since":{"epoch":"","seq":1}}"#,
            r#"{"type":"join","room":"r","since":{"epoch":7,"seq":1}}"#,
            r#"{"type":"join","room":"r","since":{"epoch":"e","seq":1,"x":0}}"#,
            r#"{"type":"join","room":"r","since":{"epoch":"e","seq":99999999999999999999999}}"#,
            r#"{"type":"history","room":"r","limit":-1}"#,
            r#"{"type":"history","room":"r","limit":1001}"#,
            r#"{"type":"history","room":"r","reverse":1}"#,
        ] {
            assert_eq!(code(bad), "invalid_field", "{bad}");
        }
    }

    #[test]
    fn id_survives_a_refusal() {
        let (id, req) = parse(r#"{"type":"dance","id":"abc"}"#);
        assert_eq!(id, Some(r#""abc""#));
        assert!(req.is_err());
    }
}
