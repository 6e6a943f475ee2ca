//! The server API (`--api`): every method through the real binary, authentication,
//! bad and oversized bodies, idempotent retries, API publishes ordered with client
//! publishes on both workers, and disconnects.

mod common;

use common::*;
use serde_json::{Value, json};

const KEY: &str = "test-key-0123456789abcdef";

/// A fleet with the API on 127.0.0.1:0, its key in a file, plus `extra` arguments.
fn fleet(extra: &[&str]) -> (Fleet, TempDir) {
    let keys = TempDir::new();
    let file = keys.0.join("api.key");
    std::fs::write(&file, format!("{KEY}\n")).unwrap();
    let mut args = vec![
        "--api",
        "127.0.0.1:0",
        "--api-key-file",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (Fleet::start(&args), keys)
}

/// `POST /api/<method>` with the right key; the answer must be 200.
async fn call(fleet: &Fleet, method: &str, body: Value) -> Value {
    let (status, answer) = api_request(
        fleet,
        "POST",
        &format!("/api/{method}"),
        Some(KEY),
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{method} {body}: {answer}");
    answer
}

/// The `message` frames `ws` receives until one carries `data`, and that one.
async fn messages_until(ws: &mut Ws, data: &Value) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let (m, _) = recv_type(ws, "message").await;
        let last = m["data"] == *data;
        seen.push(m);
        if last {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_keys_bad_bodies_and_oversized_bodies_are_refused() {
    let (fleet, _keys) = fleet(&["--api-max-body-bytes", "2048"]);
    let body = json!({"room": "r", "data": 1}).to_string();
    for key in [None, Some("wrong-key-0123456789abcdef"), Some("")] {
        let (status, answer) = api_request(&fleet, "POST", "/api/publish", key, &body).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"]["code"], "unauthorized");
    }
    let (status, _) = api_request(&fleet, "POST", "/api/nope", None, "{}").await;
    assert_eq!(status, 401, "nothing is revealed without the key");
    let (status, answer) = api_request(&fleet, "POST", "/api/nope", Some(KEY), "{}").await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = api_request(&fleet, "GET", "/api/info", Some(KEY), "").await;
    assert_eq!(status, 405);
    for (bad, says) in [
        ("{nope", "key must be a string"),
        (r#"{"room":"r"}"#, "missing field `data`"),
        (
            r#"{"room":"r","data":1,"extra":2}"#,
            "unknown field `extra`",
        ),
        (r#"{"room":"","data":1}"#, "room:"),
        (
            r#"{"room":"r","data":1,"idempotency_key":""}"#,
            "idempotency_key",
        ),
    ] {
        let (status, answer) = api_request(&fleet, "POST", "/api/publish", Some(KEY), bad).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{bad}: {message}");
    }
    let (status, answer) = api_request(
        &fleet,
        "POST",
        "/api/disconnect",
        Some(KEY),
        r#"{"code":4001}"#,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = api_request(
        &fleet,
        "POST",
        "/api/disconnect",
        Some(KEY),
        r#"{"conn":"0.1.1","code":1001}"#,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = api_request(
        &fleet,
        "POST",
        "/api/rooms",
        Some(KEY),
        r#"{"pattern":"a*b"}"#,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let big = json!({"room": "r", "data": "x".repeat(4096)}).to_string();
    let (status, answer) = api_request(&fleet, "POST", "/api/publish", Some(KEY), &big).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "too_large");
    // The API keeps serving after all that.
    let info = call(&fleet, "info", json!({})).await;
    assert_eq!(info["phase"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_answers_from_the_fleet() {
    let (fleet, _keys) = fleet(&[]);
    let ((mut a, wa, ida), (mut b, wb, idb)) = clients_on_two_workers(&fleet).await;
    join(&mut a, "chat:1").await;
    join(&mut b, "chat:1").await;
    join(&mut b, "news").await;

    let info = call(&fleet, "info", json!({})).await;
    assert_eq!(info["workers"].as_array().unwrap().len(), 2, "{info}");
    assert_eq!(info["connections"], 2, "{info}");
    assert_eq!(info["rooms"], 2, "{info}");

    let presence = call(&fleet, "presence", json!({"room": "chat:1"})).await;
    let mut members: Vec<(String, u64)> = presence["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["worker"].as_u64().unwrap(),
            )
        })
        .collect();
    members.sort();
    let mut expected = vec![(ida.clone(), wa), (idb.clone(), wb)];
    expected.sort();
    assert_eq!(members, expected, "{presence}");
    let stats = call(&fleet, "presence_stats", json!({"room": "chat:1"})).await;
    assert_eq!(
        (stats["connections"].as_u64(), stats["users"].as_u64()),
        (Some(2), Some(0))
    );
    let rooms = call(&fleet, "rooms", json!({})).await;
    assert_eq!(
        rooms["rooms"],
        json!([{"room": "chat:1", "members": 2}, {"room": "news", "members": 1}])
    );
    let rooms = call(&fleet, "rooms", json!({"pattern": "chat:*"})).await;
    assert_eq!(rooms["rooms"], json!([{"room": "chat:1", "members": 2}]));

    let one = call(&fleet, "publish", json!({"room": "news", "data": {"n": 1}})).await;
    assert_eq!(one["seq"], 1, "{one}");
    assert!(one["epoch"].is_string(), "news has history: {one}");
    let batch = call(
        &fleet,
        "publish_batch",
        json!({"publishes": [
            {"room": "news", "data": {"n": 2}},
            {"room": "chat:1", "data": "hi"},
            {"room": "news", "data": {"n": 3}},
        ]}),
    )
    .await;
    let seqs: Vec<u64> = batch["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 1, 3], "{batch}");
    let got = messages_until(&mut b, &json!({"n": 3})).await;
    let news: Vec<(&str, u64)> = got
        .iter()
        .filter(|m| m["room"] == "news")
        .map(|m| ("news", m["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(news, [("news", 1), ("news", 2), ("news", 3)]);
    assert!(
        got.iter()
            .any(|m| m["room"] == "chat:1" && m["data"] == "hi")
    );

    let history = call(
        &fleet,
        "history",
        json!({"room": "news", "limit": 2, "reverse": true}),
    )
    .await;
    let datas: Vec<&Value> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["data"])
        .collect();
    assert_eq!(datas, [&json!({"n": 3}), &json!({"n": 2})], "{history}");
    assert_eq!(history["seq"], 3);
    let stale = json!({"room": "news", "since": {"epoch": "not-the-epoch", "seq": 1}});
    let (status, answer) = api_request(
        &fleet,
        "POST",
        "/api/history",
        Some(KEY),
        &stale.to_string(),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("epoch_changed")),
        "{answer}"
    );

    call(
        &fleet,
        "broadcast",
        json!({"data": {"notice": "maintenance"}}),
    )
    .await;
    for ws in [&mut a, &mut b] {
        let got = messages_until(ws, &json!({"notice": "maintenance"})).await;
        assert!(
            got.last().unwrap().get("room").is_none(),
            "a broadcast has no room"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_publishes_take_their_place_in_the_room_order_on_both_workers() {
    let (fleet, _keys) = fleet(&["--history-size", "0"]);
    let ((mut a, _, _), (mut b, _, _)) = clients_on_two_workers(&fleet).await;
    join(&mut a, "live").await;
    join(&mut b, "live").await;
    let mut expected = Vec::new();
    // Message frames a client received while waiting for its ack.
    let mut early: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
    for n in 0..12u64 {
        let data = json!({"n": n});
        let seq = match n % 3 {
            0 => call(&fleet, "publish", json!({"room": "live", "data": data})).await["seq"]
                .as_u64()
                .unwrap(),
            turn => {
                let i = turn as usize - 1;
                let ws = if i == 0 { &mut a } else { &mut b };
                let publish = wsfleet_worker::protocol::client::publish(
                    "live",
                    &data.to_string(),
                    Some(&n.to_string()),
                );
                send(ws, serde_json::from_str(&publish).unwrap()).await;
                let (ack, skipped) = recv_type(ws, "ack").await;
                early[i].extend(skipped.into_iter().filter(|m| m["type"] == "message"));
                ack["seq"].as_u64().unwrap()
            }
        };
        expected.push((seq, data));
    }
    let seqs: Vec<u64> = expected.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=12).collect::<Vec<_>>(),
        "one order, no gaps, the API's included"
    );
    let [early_a, early_b] = early;
    for (ws, mut frames) in [(&mut a, early_a), (&mut b, early_b)] {
        let last = json!({"n": 11});
        if frames.last().is_none_or(|m| m["data"] != last) {
            frames.extend(messages_until(ws, &last).await);
        }
        let got: Vec<(u64, Value)> = frames
            .into_iter()
            .map(|m| (m["seq"].as_u64().unwrap(), m["data"].clone()))
            .collect();
        assert_eq!(
            got, expected,
            "every member sees the same seqs and data, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_gets_the_same_seq_and_is_delivered_once() {
    let (fleet, _keys) = fleet(&[]);
    let (mut a, _, _) = client(&fleet).await;
    join(&mut a, "orders").await;
    let publish = json!({"room": "orders", "data": {"order": 7}, "idempotency_key": "order-7"});
    let first = call(&fleet, "publish", publish.clone()).await;
    let retry = call(&fleet, "publish", publish).await;
    assert_eq!(
        (first["seq"].as_u64(), first["duplicate"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(retry["seq"], first["seq"]);
    assert_eq!(retry["epoch"], first["epoch"]);
    assert_eq!(retry["duplicate"], true);
    let batch = call(
        &fleet,
        "publish_batch",
        json!({"publishes": [
            {"room": "orders", "data": {"order": 7}, "idempotency_key": "order-7"},
            {"room": "orders", "data": "end"},
        ]}),
    )
    .await;
    assert_eq!(batch["results"][0]["seq"], 1);
    assert_eq!(
        batch["results"][1]["seq"], 2,
        "the retry did not take a seq"
    );
    let got = messages_until(&mut a, &json!("end")).await;
    let seen: Vec<(u64, Value)> = got
        .iter()
        .map(|m| (m["seq"].as_u64().unwrap(), m["data"].clone()))
        .collect();
    assert_eq!(seen, [(1, json!({"order": 7})), (2, json!("end"))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_the_named_connection_on_its_worker_and_no_other() {
    let (fleet, _keys) = fleet(&[]);
    let ((mut a, _, ida), (mut b, _, idb)) = clients_on_two_workers(&fleet).await;
    join(&mut a, "room").await;
    let answer = call(&fleet, "disconnect", json!({"conn": idb, "code": 4001})).await;
    assert_eq!(answer["disconnected"], 1, "{answer}");
    assert_eq!(close_code(&mut b).await, Some(4001));
    let answer = call(&fleet, "disconnect", json!({"conn": idb})).await;
    assert_eq!(answer["disconnected"], 0, "already gone");
    let answer = call(&fleet, "disconnect", json!({"user": "nobody"})).await;
    assert_eq!(answer["disconnected"], 0, "no connection has a user id");
    call(
        &fleet,
        "publish",
        json!({"room": "room", "data": "still here"}),
    )
    .await;
    messages_until(&mut a, &json!("still here")).await;
    let answer = call(&fleet, "disconnect", json!({"conn": ida})).await;
    assert_eq!(answer["disconnected"], 1);
    assert_eq!(close_code(&mut a).await, Some(4000), "the default code");
}

#[test]
fn bench_api_publishes_through_the_api_and_every_subscriber_gets_everything() {
    let (fleet, keys) = fleet(&[]);
    let out = std::process::Command::new(BIN)
        .args(["bench", "api", "--url", &fleet.url("/ws")])
        .args(["--api", fleet.api.as_deref().unwrap()])
        .arg("--api-key-file")
        .arg(keys.0.join("api.key"))
        .args([
            "--subs",
            "6",
            "--conns",
            "2",
            "--batch",
            "3",
            "--duration",
            "0.5",
            "--json",
        ])
        .output()
        .expect("run bench api");
    assert!(
        out.status.success(),
        "bench api failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(report["mode"], "api");
    assert_eq!(report["errors"], 0, "{report}");
    let publishes = report["publishes"].as_u64().unwrap();
    assert!(publishes > 0 && publishes.is_multiple_of(3), "{report}");
    assert_eq!(report["requests"].as_u64().unwrap() * 3, publishes);
    assert_eq!(
        report["deliveries"].as_u64(),
        Some(publishes * 6),
        "{report}"
    );
}

#[test]
fn the_api_answers_503_once_the_fleet_stops_serving() {
    let (fleet, _keys) = fleet(&["--drain-timeout", "5"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // A client keeps the draining worker (and so the stopping master) alive.
        let (_ws, _, _) = client(&fleet).await;
        fleet.signal(nix::sys::signal::Signal::SIGTERM);
        let limit = std::time::Instant::now() + T;
        loop {
            let body = json!({"room": "r", "data": 1}).to_string();
            let (status, answer) =
                api_request(&fleet, "POST", "/api/publish", Some(KEY), &body).await;
            if status == 503 {
                assert_eq!(answer["error"]["code"], "not_serving");
                break;
            }
            assert_eq!(status, 200, "{answer}");
            assert!(std::time::Instant::now() < limit, "no 503 while stopping");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
}

/// A token for `sub` with public `info`, signed with `secret`, an hour long.
fn user_token(sub: &str, info: Value, secret: &str) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    let claims = json!({"sub": sub, "info": info, "exp": exp});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_shows_token_users_and_disconnect_by_user_closes_all_of_theirs() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let secrets = TempDir::new();
    let secret_file = secrets.0.join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let secret_path = secret_file.to_str().unwrap().to_owned();
    let (fleet, _keys) = fleet(&["--auth", "optional", "--auth-key-file", &secret_path]);
    let ann = user_token("ann", json!({"name": "Ann"}), SECRET);
    let bob = user_token("bob", json!(null), SECRET);
    let (mut anon, _, anon_id) = client(&fleet).await;
    join(&mut anon, "lobby").await;
    let mut socks = Vec::new();
    for token in [&ann, &ann, &bob] {
        let mut ws = connect(&format!("{}?token={token}", fleet.url("/ws"))).await;
        let welcome = recv(&mut ws).await;
        assert!(welcome["user"].is_string(), "{welcome}");
        join(&mut ws, "lobby").await;
        socks.push(ws);
    }
    // The first member sees each join notice with the joiner's user and info.
    let mut joined = Vec::new();
    while joined.len() < 3 {
        let (notice, _) = recv_type(&mut anon, "presence").await;
        joined.push((notice["user"].clone(), notice["info"].clone()));
    }
    let ann_info = json!({"name": "Ann"});
    assert_eq!(
        joined,
        [
            (json!("ann"), ann_info.clone()),
            (json!("ann"), ann_info),
            (json!("bob"), Value::Null)
        ]
    );

    let answer = call(&fleet, "presence", json!({"room": "lobby"})).await;
    let members = answer["members"].as_array().expect("members");
    assert_eq!(members.len(), 4, "{answer}");
    let of = |user: &str| members.iter().filter(|m| m["user"] == user).count();
    assert_eq!((of("ann"), of("bob")), (2, 1), "{answer}");
    assert!(
        members
            .iter()
            .filter(|m| m["user"] == "ann")
            .all(|m| m["info"] == json!({"name": "Ann"})),
        "{answer}"
    );
    assert!(
        members
            .iter()
            .any(|m| m["id"] == anon_id && m["user"].is_null())
    );
    let stats = call(&fleet, "presence_stats", json!({"room": "lobby"})).await;
    assert_eq!(stats["connections"], 4, "{stats}");
    assert_eq!(stats["users"], 2, "{stats}");

    let answer = call(&fleet, "disconnect", json!({"user": "ann", "code": 4003})).await;
    assert_eq!(answer["disconnected"], 2, "{answer}");
    assert_eq!(close_code(&mut socks[0]).await, Some(4003));
    assert_eq!(close_code(&mut socks[1]).await, Some(4003));
    call(&fleet, "publish", json!({"room": "lobby", "data": "after"})).await;
    messages_until(&mut socks[2], &json!("after")).await;
    messages_until(&mut anon, &json!("after")).await;
}
