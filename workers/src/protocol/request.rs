//! The server's side of a client request: parsing one text frame into a [`Request`] or a
//! [`Refusal`].
//!
//! Requests are parsed with borrowed fields and `data`/`id` are kept as raw JSON text, so
//! a publish is never re-serialised on its way to the master.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::strict::{self, MAX_DEPTH, NotStrict};
use super::{Refusal, truncate, validate_room};

/// A client request that parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Become a member of `room`.
    Join {
        /// The room.
        room: String,
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
            "missing \"type\" (join, leave, publish or broadcast)",
        )
    })?;
    let kind: Cow<'_, str> = serde_json::from_str(kind.get())
        .map_err(|_| Refusal::new("invalid_field", "\"type\" must be a string"))?;
    match kind.as_ref() {
        "join" => Ok(Request::Join { room: room(env)? }),
        "leave" => Ok(Request::Leave { room: room(env)? }),
        "publish" => Ok(Request::Publish {
            room: room(env)?,
            data: data(env)?,
        }),
        "broadcast" => Ok(Request::Broadcast { data: data(env)? }),
        other => Err(Refusal {
            code: "unknown_type",
            message: format!(
                "unknown request type {:?}; use join, leave, publish or broadcast",
                truncate(other, 64)
            )
            .into(),
        }),
    }
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
                room: "general".into()
            })
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
    fn id_survives_a_refusal() {
        let (id, req) = parse(r#"{"type":"dance","id":"abc"}"#);
        assert_eq!(id, Some(r#""abc""#));
        assert!(req.is_err());
    }
}
