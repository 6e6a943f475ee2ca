//! Target: the server's parse of a `/ws` client request (`protocol::parse`), with the
//! strict-JSON rules for `data` and `id`.

use proptest::prelude::*;
use serde_json::{Value, json};
use wsfleet_worker::protocol::strict::MAX_DEPTH;
use wsfleet_worker::protocol::{Request, parse, validate_room};

use crate::config;

/// Any JSON value, nested up to about `depth` levels, with strings of any characters
/// (integers only: serde_json re-reads a printed float slightly differently, which would
/// fail the comparison below, not the server, which relays the text as written).
fn value(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 256, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Nesting depth of a value (a scalar is 0).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// `v` wrapped in `n` arrays.
fn wrap(mut v: Value, n: usize) -> Value {
    for _ in 0..n {
        v = Value::Array(vec![v]);
    }
    v
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_is_parsed_or_refused_and_what_passes_is_strict(text in "\\PC{0,200}") {
        let (id, request) = parse(&text);
        if let Some(id) = id {
            prop_assert!(serde_json::from_str::<Value>(id).is_ok(), "id {id:?}");
        }
        match request {
            Ok(Request::Join { room, .. } | Request::Leave { room } | Request::History { room, .. } | Request::Presence { room }) => {
                prop_assert!(validate_room(&room).is_ok());
            }
            Ok(Request::Publish { room, data }) => {
                prop_assert!(validate_room(&room).is_ok());
                prop_assert!(serde_json::from_str::<Value>(data).is_ok(), "data {data:?}");
            }
            Ok(Request::Broadcast { data }) => {
                prop_assert!(serde_json::from_str::<Value>(data).is_ok(), "data {data:?}");
            }
            Ok(Request::Refresh { token }) => {
                prop_assert!(!token.is_empty() && !token.contains(['"', '\\']), "token {token:?}");
            }
            Err(refusal) => prop_assert!(!refusal.message.is_empty()),
        }
    }

    #[test]
    fn arbitrary_bytes_in_a_request_shape_never_panic(
        kind in prop_oneof![Just("join"), Just("leave"), Just("publish"), Just("broadcast"), Just("refresh")],
        junk in "[\\[\\]{}\",:\\\\u0-9a-fA-FdD ]{0,80}",
    ) {
        let _ = parse(&format!(r#"{{"type":"{kind}","room":"r","data":{junk}}}"#));
        let _ = parse(&format!(r#"{{"type":"{kind}","room":"r","data":"{junk}"}}"#));
        let _ = parse(&format!(r#"{{"type":"{kind}","room":"r","id":{junk},"data":1}}"#));
    }

    #[test]
    fn any_value_within_the_depth_limit_is_relayed_as_written(
        data in value(6),
        id in value(3),
        extra in 0usize..70,
    ) {
        let data = wrap(data, extra);
        let text = json!({"type": "publish", "room": "r", "data": data, "id": id}).to_string();
        let (got_id, request) = parse(&text);
        if depth(&data) <= MAX_DEPTH && depth(&id) <= MAX_DEPTH {
            prop_assert_eq!(serde_json::from_str::<Value>(got_id.unwrap()).unwrap(), id);
            let Ok(Request::Publish { data: raw, .. }) = request else {
                return Err(TestCaseError::fail(format!("refused: {request:?}")));
            };
            prop_assert_eq!(serde_json::from_str::<Value>(raw).unwrap(), data);
        } else {
            prop_assert_eq!(request.unwrap_err().code, "invalid_field");
        }
    }

    #[test]
    fn unicode_escapes_are_accepted_exactly_when_they_form_valid_unicode(
        units in proptest::collection::vec(any::<u16>(), 1..4),
    ) {
        let escaped: String = units.iter().map(|u| format!("\\u{u:04x}")).collect();
        let text = format!(r#"{{"type":"broadcast","data":"{escaped}"}}"#);
        let valid = char::decode_utf16(units.iter().copied()).all(|c| c.is_ok());
        match parse(&text).1 {
            Ok(_) => prop_assert!(valid, "accepted {escaped}"),
            Err(refusal) => {
                prop_assert!(!valid, "refused {escaped}: {refusal:?}");
                prop_assert_eq!(refusal.code, "invalid_field");
            }
        }
    }

    #[test]
    fn a_key_given_twice_is_named(key in prop_oneof![Just("type"), Just("room"), Just("data"), Just("id")]) {
        let text = format!(r#"{{"type":"publish","room":"r","data":1,"id":2,"{key}":"again"}}"#);
        let refusal = parse(&text).1.unwrap_err();
        prop_assert_eq!(refusal.code, "bad_json");
        prop_assert!(refusal.message.contains("duplicate key"), "{}", refusal.message);
    }
}
