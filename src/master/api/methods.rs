//! The server API's methods: each one parses its JSON body (unknown fields refused),
//! checks its values, asks the supervisor's loop or the [`RoomDirectory`], and answers a
//! JSON value. The wire format of every method is in README ("Server API").

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use wsfleet_worker::ipc::{QueryAnswer, Target, WorkerQuery};
use wsfleet_worker::protocol::request::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};
use wsfleet_worker::protocol::{self, RoomPattern, Since};

use super::calls::{Call, Publish, Published};
use super::directory::{RoomDirectory, WorkerDirectory};
use super::errors::ApiError;
use crate::master::handle::Handle;
use crate::master::state::Phase;

/// Most publishes in one `publish_batch`.
pub const MAX_BATCH: usize = 1000;

/// Longest idempotency key, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// The close code a `disconnect` sends when it names none.
pub const DEFAULT_CLOSE_CODE: u16 = 4000;

/// Runs method `name` with `body`.
pub async fn call(handle: &Handle, name: &str, body: &[u8]) -> Result<Value, ApiError> {
    match name {
        "publish" => publish(handle, parse(body)?).await,
        "publish_batch" => publish_batch(handle, parse(body)?).await,
        "broadcast" => broadcast(handle, parse(body)?).await,
        "history" => history(handle, parse(body)?).await,
        "presence" => presence(&WorkerDirectory(handle), parse(body)?).await,
        "presence_stats" => presence_stats(&WorkerDirectory(handle), parse(body)?).await,
        "rooms" => rooms(&WorkerDirectory(handle), parse(body)?).await,
        "disconnect" => disconnect(handle, parse(body)?).await,
        "info" => info(handle, parse(body)?).await,
        _ => Err(ApiError::NotFound(format!("/api/{name}"))),
    }
}

/// Parses a JSON body; an empty body is `{}`.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not what this method takes: {e}")))
}

fn room(name: &str) -> Result<(), ApiError> {
    protocol::validate_room(name).map_err(|r| ApiError::BadRequest(format!("room: {}", r.message)))
}

/// `publish`'s body, and each item of `publish_batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    /// The room.
    room: String,
    /// Any JSON value.
    data: Value,
    /// Retries with the same key are ordered once.
    idempotency_key: Option<String>,
}

impl PublishBody {
    fn check(self) -> Result<Publish, ApiError> {
        room(&self.room)?;
        if let Some(k) = &self.idempotency_key
            && (k.is_empty() || k.len() > MAX_KEY_BYTES)
        {
            return Err(ApiError::BadRequest(format!(
                "idempotency_key: use 1 to {MAX_KEY_BYTES} bytes"
            )));
        }
        Ok(Publish {
            room: self.room,
            data: self.data.to_string(),
            key: self.idempotency_key,
        })
    }
}

fn published(p: &Published) -> Value {
    json!({"seq": p.seq, "epoch": p.epoch, "duplicate": p.duplicate})
}

async fn publish(handle: &Handle, body: PublishBody) -> Result<Value, ApiError> {
    let items = vec![body.check()?];
    let answers = handle.api(|reply| Call::Publish { items, reply }).await?;
    Ok(answers.first().map(published).unwrap_or(Value::Null))
}

/// `publish_batch`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    /// The publishes, in order.
    publishes: Vec<PublishBody>,
}

async fn publish_batch(handle: &Handle, body: BatchBody) -> Result<Value, ApiError> {
    if body.publishes.is_empty() || body.publishes.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "publishes: send 1 to {MAX_BATCH} publishes per batch"
        )));
    }
    let items = body
        .publishes
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            p.check()
                .map_err(|e| ApiError::BadRequest(format!("publishes[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let answers = handle.api(|reply| Call::Publish { items, reply }).await?;
    Ok(json!({"results": answers.iter().map(published).collect::<Vec<_>>()}))
}

/// `broadcast`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    /// Any JSON value.
    data: Value,
}

async fn broadcast(handle: &Handle, body: BroadcastBody) -> Result<Value, ApiError> {
    let data = body.data.to_string();
    handle.api(|reply| Call::Broadcast { data, reply }).await?;
    Ok(json!({}))
}

/// `history`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryBody {
    /// The room.
    room: String,
    /// Most messages (default 100, at most 1000).
    limit: Option<usize>,
    /// Page from this position.
    since: Option<Since>,
    /// Newest first.
    #[serde(default)]
    reverse: bool,
}

async fn history(handle: &Handle, body: HistoryBody) -> Result<Value, ApiError> {
    room(&body.room)?;
    let limit = body.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    if limit > MAX_HISTORY_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit: at most {MAX_HISTORY_LIMIT}; page with since for more"
        )));
    }
    let frame = handle
        .api(|reply| Call::History {
            room: body.room,
            limit,
            since: body.since,
            reverse: body.reverse,
            reply,
        })
        .await?;
    let mut page: Value = serde_json::from_str(&frame)
        .map_err(|e| ApiError::BadRequest(format!("history could not be read: {e}")))?;
    let Some(fields) = page.as_object_mut() else {
        return Err(ApiError::BadRequest("history could not be read".into()));
    };
    if fields.get("type").and_then(Value::as_str) == Some("error") {
        let text = |k: &str| {
            fields
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        return Err(ApiError::History {
            code: text("code"),
            message: text("message"),
        });
    }
    fields.remove("type");
    Ok(page)
}

/// The body of `presence` and `presence_stats`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomBody {
    /// The room.
    room: String,
}

async fn presence(dir: &impl RoomDirectory, body: RoomBody) -> Result<Value, ApiError> {
    room(&body.room)?;
    let members = dir.members(&body.room).await?;
    Ok(json!({"room": body.room, "members": members}))
}

async fn presence_stats(dir: &impl RoomDirectory, body: RoomBody) -> Result<Value, ApiError> {
    room(&body.room)?;
    let counts = dir.counts(&body.room).await?;
    Ok(json!({"room": body.room, "connections": counts.connections, "users": counts.users}))
}

/// `rooms`' body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsBody {
    /// Only rooms matching this (`prefix*`, `exact`, `*`).
    pattern: Option<String>,
}

async fn rooms(dir: &impl RoomDirectory, body: RoomsBody) -> Result<Value, ApiError> {
    let pattern = body
        .pattern
        .as_deref()
        .map(RoomPattern::parse)
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("pattern: {e}")))?;
    let rooms = dir.rooms(pattern).await?;
    let rooms: Vec<Value> = rooms
        .into_iter()
        .map(|(room, members)| json!({"room": room, "members": members}))
        .collect();
    Ok(json!({"rooms": rooms}))
}

/// `disconnect`'s body: exactly one of `conn` and `user`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    /// A connection id, as `welcome` and presence show it.
    conn: Option<String>,
    /// A user id: every connection of that user.
    user: Option<String>,
    /// The close code (1000, or 3000 to 4999; default 4000).
    code: Option<u16>,
}

async fn disconnect(handle: &Handle, body: DisconnectBody) -> Result<Value, ApiError> {
    let target = match (body.conn, body.user) {
        (Some(c), None) if !c.is_empty() => Target::Conn(c),
        (None, Some(u)) if !u.is_empty() => Target::User(u),
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of conn (a connection id) and user (a user id)".into(),
            ));
        }
    };
    let code = body.code.unwrap_or(DEFAULT_CLOSE_CODE);
    if code != 1000 && !(3000..=4999).contains(&code) {
        return Err(ApiError::BadRequest(format!(
            "code {code}: use 1000 or an application code from 3000 to 4999"
        )));
    }
    let answers = WorkerDirectory::ask(handle, WorkerQuery::Disconnect { target, code }).await?;
    let closed: u64 = answers
        .iter()
        .map(|(_, a)| match a {
            QueryAnswer::Disconnected(n) => *n,
            _ => 0,
        })
        .sum();
    Ok(json!({"disconnected": closed}))
}

/// `info`'s body: nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InfoBody {}

async fn info(handle: &Handle, _: InfoBody) -> Result<Value, ApiError> {
    let (view, _) = handle
        .view_with_counters()
        .await
        .ok_or(ApiError::NotServing)?;
    if view.phase != Phase::Running {
        return Err(ApiError::NotServing);
    }
    let workers: Vec<Value> = view
        .workers
        .iter()
        .map(|w| {
            let c = w.last_counters.as_ref();
            json!({
                "slot": w.slot,
                "pid": w.pid,
                "state": w.state.name(),
                "uptime_s": w.uptime_s,
                "connections": c.map(|c| c.connections_current),
                "rooms": c.map(|c| c.rooms),
            })
        })
        .collect();
    let connections: u64 = view
        .workers
        .iter()
        .filter_map(|w| w.last_counters.as_ref())
        .map(|c| c.connections_current)
        .sum();
    Ok(json!({
        "phase": view.phase.name(),
        "uptime_s": view.uptime_s,
        "connections": connections,
        "rooms": view.rooms,
        "workers": workers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_say_what_was_wrong() {
        let e = parse::<PublishBody>(br#"{"room":"a"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `data`"), "{e}");
        let e = parse::<PublishBody>(br#"{"room":"a","data":1,"x":2}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `x`"), "{e}");
        assert!(parse::<PublishBody>(b"{nope").is_err());
        assert!(parse::<InfoBody>(b"").is_ok(), "an empty body is {{}}");
        let long = PublishBody {
            room: "a".into(),
            data: Value::Null,
            idempotency_key: Some("k".repeat(MAX_KEY_BYTES + 1)),
        };
        assert!(long.check().is_err());
        let bad_room = PublishBody {
            room: String::new(),
            data: Value::Null,
            idempotency_key: None,
        };
        assert!(
            bad_room
                .check()
                .unwrap_err()
                .to_string()
                .starts_with("room:")
        );
    }
}
