//! Presence that scales (issue 11): join/leave notices while a room is at most at its
//! threshold, a coalesced count above it, a namespace turning presence off, and the
//! `presence` request's answer.

mod common;

use common::*;
use serde_json::{Value, json};

/// Starts a fleet with presence threshold 3, a short coalescing interval and a namespace
/// `quiet:*` with presence off.
fn fleet() -> Fleet {
    let dir = TempDir::new();
    let config = dir.0.join("wsfleet.toml");
    std::fs::write(
        &config,
        "[[namespace]]\npattern = \"quiet:*\"\npresence = \"off\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    Fleet::start_in(
        common::BIN,
        dir,
        &[
            "--config",
            &config,
            "--presence-threshold",
            "3",
            "--presence-interval",
            "0.05",
            "--history-size",
            "0",
        ],
    )
    .unwrap()
}

/// Asks for `room`'s presence and returns the answer (skipping other frames).
async fn ask(ws: &mut Ws, room: &str) -> Value {
    send(ws, json!({"type": "presence", "room": room, "id": "q"})).await;
    loop {
        let (v, _) = recv_type(ws, "presence").await;
        if v["id"] == "q" {
            return v;
        }
    }
}

/// The next presence frame for `room` that is a count (skipping notices and the rest).
async fn next_count(ws: &mut Ws, room: &str) -> u64 {
    loop {
        let (v, _) = recv_type(ws, "presence").await;
        if v["room"] == room
            && v.get("id").is_none()
            && let Some(n) = v["count"].as_u64()
        {
            return n;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_under_the_threshold_then_a_coalesced_count() {
    let fleet = fleet();
    let ((mut a, _, _), (mut b, _, id_b)) = clients_on_two_workers(&fleet).await;
    join(&mut a, "big").await;
    join(&mut b, "big").await;
    let (p, _) = recv_type(&mut a, "presence").await;
    assert_eq!(
        p,
        json!({"type": "presence", "room": "big", "event": "join", "id": id_b}),
        "2 members: a notice"
    );
    let answer = ask(&mut a, "big").await;
    assert_eq!(answer["count"], 2, "{answer}");
    let mut ids: Vec<&str> = answer["members"]
        .as_array()
        .expect("members listed under the threshold")
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    ids.sort();
    assert!(ids.contains(&id_b.as_str()), "{answer}");

    // Six more join: members 3 gets a notice, 4..8 only counts, coalesced.
    let mut others = Vec::new();
    for _ in 0..6 {
        let (mut c, _, _) = client(&fleet).await;
        join(&mut c, "big").await;
        others.push(c);
    }
    let mut count = next_count(&mut a, "big").await;
    while count < 8 {
        count = next_count(&mut a, "big").await;
    }
    assert_eq!(count, 8);
    let answer = ask(&mut a, "big").await;
    assert_eq!(answer["count"], 8, "{answer}");
    assert!(
        answer.get("members").is_none(),
        "count only above 3: {answer}"
    );

    // When the room falls back to the threshold, members get its count once more.
    drop(others);
    while next_count(&mut b, "big").await > 3 {}
    let mut left = ask(&mut b, "big").await;
    for _ in 0..1000 {
        if left["count"] == 2 {
            break;
        }
        left = ask(&mut b, "big").await;
    }
    assert_eq!(left["count"], 2, "everyone but a and b left: {left}");
    assert_eq!(left["members"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_turns_presence_off_and_the_request_still_counts() {
    let fleet = fleet();
    let ((mut a, _, _), (mut b, _, _)) = clients_on_two_workers(&fleet).await;
    join(&mut a, "quiet:x").await;
    join(&mut b, "quiet:x").await;
    // A marker through the same path: a publish reaches a after any notice would have.
    send(
        &mut b,
        json!({"type": "publish", "room": "quiet:x", "data": "m"}),
    )
    .await;
    let (m, before) = recv_type(&mut a, "message").await;
    assert_eq!(m["data"], "m");
    assert!(before.is_empty(), "no presence in quiet:*: {before:?}");
    let answer = ask(&mut a, "quiet:x").await;
    assert_eq!(answer["count"], 2, "{answer}");
    assert_eq!(answer["members"].as_array().map(Vec::len), Some(2));
    let nobody = ask(&mut a, "empty").await;
    assert_eq!(
        nobody,
        json!({"type": "presence", "room": "empty", "count": 0, "members": [], "id": "q"})
    );
    // A bad room is refused like any request.
    send(&mut a, json!({"type": "presence", "id": 1})).await;
    let (e, _) = recv_type(&mut a, "error").await;
    assert_eq!(e["code"], "missing_field");
}
