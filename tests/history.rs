//! Rooms that remember (issue 10), against the real binary: while publishers on every
//! worker publish continuously, a client that was closed by a reload or a worker crash
//! re-joins with `since` and gets every missed message once, in order; a graceful master restart keeps the history, a crash starts new epochs; bad
//! `since` values are `invalid_field` errors.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Fleet, T, TempDir, Ws, client, recv, recv_type, send};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Joins `room` (with `since` when given) and returns the `joined` frame.
async fn join(ws: &mut Ws, room: &str, since: Option<(&str, u64)>) -> Value {
    let mut req = json!({"type":"join","room":room});
    if let Some((epoch, seq)) = since {
        req["since"] = json!({"epoch":epoch,"seq":seq});
    }
    send(ws, req).await;
    let (joined, _) = recv_type(ws, "joined").await;
    joined
}

/// Publishes `from..=to` into `room` with acks, returning the acks' epoch.
async fn publish(ws: &mut Ws, room: &str, from: u64, to: u64) -> String {
    let mut epoch = String::new();
    for i in from..=to {
        send(ws, json!({"type":"publish","room":room,"data":i,"id":i})).await;
        let (ack, _) = recv_type(ws, "ack").await;
        assert_eq!(ack["seq"], i, "{ack}");
        epoch = ack["epoch"]
            .as_str()
            .expect("ack carries the epoch")
            .to_owned();
    }
    epoch
}

/// Reads `message` frames of `room` until `seq` `last`, returning their seqs.
async fn seqs_until(ws: &mut Ws, room: &str, last: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    loop {
        let v = recv(ws).await;
        if v["type"] == "message" && v["room"] == room {
            let seq = v["seq"].as_u64().unwrap();
            seqs.push(seq);
            if seq >= last {
                return seqs;
            }
        }
    }
}

/// Reads until the server closes the connection (frames in between are returned).
async fn until_closed(ws: &mut Ws) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .expect("no close in time")
        {
            Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return frames,
            Some(Ok(_)) => {}
        }
    }
}

/// Subscribers on every worker in two rooms lose their connection (`disrupt`), messages
/// are published meanwhile, and each re-joins with `since`: every room's seqs are
/// exactly 1..=N.
async fn lossless(disrupt: impl FnOnce(&Fleet, &[u64])) {
    // Room for everything published while the subscribers are away.
    let fleet = Fleet::start(&[
        "--workers",
        "2",
        "--history-size",
        "1000",
        "--recovery-max",
        "1000",
    ]);
    let rooms = ["chat:a", "chat:b"];
    let (a, b) = common::clients_on_two_workers(&fleet).await;
    let mut subs = [a, b];
    let mut positions = Vec::new();
    for (ws, _, _) in subs.iter_mut() {
        let mut p = Vec::new();
        for room in rooms {
            let j = join(ws, room, None).await;
            assert_eq!(j["seq"], 0, "{j}");
            p.push(j["epoch"].as_str().unwrap().to_owned());
        }
        positions.push(p);
    }
    let (mut publisher, _, _) = client(&fleet).await;
    for room in rooms {
        publish(&mut publisher, room, 1, 10).await;
    }
    let mut received: Vec<Vec<Vec<u64>>> = vec![vec![Vec::new(); rooms.len()]; subs.len()];
    for (s, (ws, _, _)) in subs.iter_mut().enumerate() {
        for (r, room) in rooms.iter().enumerate() {
            received[s][r].extend(seqs_until(ws, room, 10).await);
        }
    }
    // Publishers on every worker publish continuously from here on, through the
    // disruption (they reconnect when closed).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (p1, p2) = common::clients_on_two_workers(&fleet).await;
    let publishers: Vec<_> = [p1.0, p2.0]
        .into_iter()
        .map(|ws| {
            let (url, stop, sent) = (fleet.url("/ws"), stop.clone(), sent.clone());
            tokio::spawn(keep_publishing(ws, url, rooms, stop, sent))
        })
        .collect();
    let sent_at_least = |n: u64| {
        let sent = sent.clone();
        async move {
            tokio::time::timeout(T, async {
                while sent.load(Ordering::Relaxed) < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the publishers publish")
        }
    };
    sent_at_least(10).await;
    let slots: Vec<u64> = subs.iter().map(|(_, slot, _)| *slot).collect();
    tokio::task::block_in_place(|| disrupt(&fleet, &slots));
    for (s, (ws, _, _)) in subs.iter_mut().enumerate() {
        for frame in until_closed(ws).await {
            if frame["type"] == "message" {
                let r = rooms.iter().position(|r| frame["room"] == *r).unwrap();
                received[s][r].push(frame["seq"].as_u64().unwrap());
            }
        }
    }
    // More while every subscriber is away.
    sent_at_least(sent.load(Ordering::Relaxed) + 10).await;
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        tokio::time::timeout(T, p)
            .await
            .expect("publisher stops")
            .unwrap();
    }
    let (mut asker, _, _) = client(&fleet).await;
    let mut tops = Vec::new();
    for room in rooms {
        send(&mut asker, json!({"type":"history","room":room,"limit":0})).await;
        tops.push(
            recv_type(&mut asker, "history").await.0["seq"]
                .as_u64()
                .unwrap(),
        );
    }
    for (s, p) in positions.iter().enumerate() {
        let (mut ws, _, _) = client(&fleet).await;
        for (r, room) in rooms.iter().enumerate() {
            let last = *received[s][r].last().unwrap();
            let j = join(&mut ws, room, Some((&p[r], last))).await;
            assert_eq!(j["recovered"], true, "{j}");
            assert_eq!(j["epoch"], p[r].as_str(), "same stream: {j}");
            assert_eq!(j["seq"], tops[r], "{j}");
            if tops[r] > last {
                received[s][r].extend(seqs_until(&mut ws, room, tops[r]).await);
            }
        }
        for (r, seqs) in received[s].iter().enumerate() {
            let want: Vec<u64> = (1..=tops[r]).collect();
            assert_eq!(seqs, &want, "subscriber {s} room {}", rooms[r]);
        }
    }
    let stats = fleet.stats();
    assert_eq!(stats["master"]["history"]["recoveries_ok"], 4, "{stats}");
    assert_eq!(stats["master"]["history"]["rooms"], 2, "{stats}");
}

/// Publishes into `rooms` in turn every 20 ms until `stop`, reconnecting when closed,
/// counting its publishes in `sent`.
async fn keep_publishing(
    mut ws: Ws,
    url: String,
    rooms: [&'static str; 2],
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let room = rooms[(n % 2) as usize];
        let frame = json!({"type":"publish","room":room,"data":n}).to_string();
        let sending = tokio::time::timeout(T, ws.send(Message::text(frame))).await;
        let mut closed = !matches!(sending, Ok(Ok(())));
        // Read what came (welcome, the close) without waiting.
        while let Some(Some(m)) = ws.next().now_or_never() {
            if matches!(m, Err(_) | Ok(Message::Close(_))) {
                closed = true;
                break;
            }
        }
        if closed {
            ws = common::connect(&url).await;
            continue;
        }
        n += 1;
        sent.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_loses_no_message_for_clients_that_rejoin_with_since() {
    lossless(|fleet, _| {
        let out = fleet.cli(&["reload"]);
        assert!(out.status.success(), "{out:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_no_message_for_clients_that_rejoin_with_since() {
    lossless(|fleet, _| {
        for (_, pid, _) in fleet.ready_pids() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        }
    })
    .await;
}

/// A fleet on `dir`'s run directory.
fn start_in(dir: TempDir) -> Fleet {
    Fleet::start_in(common::BIN, dir, &["--workers", "1"]).unwrap_or_else(|e| panic!("{e}"))
}

/// Takes the directory out of a fleet that has exited, for the next master.
fn take_dir(fleet: &mut Fleet) -> TempDir {
    std::mem::replace(&mut fleet.dir, TempDir(PathBuf::new()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_keeps_history_and_a_crash_starts_new_epochs() {
    let mut fleet = start_in(TempDir::new());
    let (mut ws, _, _) = client(&fleet).await;
    let epoch = publish(&mut ws, "r", 1, 5).await;
    drop(ws);
    fleet.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(fleet.wait_exit(T).success());
    fleet.assert_logged("history saved");
    let mut fleet = start_in(take_dir(&mut fleet));
    fleet.assert_logged("history restored");
    let (mut ws, _, _) = client(&fleet).await;
    let j = join(&mut ws, "r", Some((&epoch, 2))).await;
    assert_eq!(
        (&j["recovered"], &j["seq"]),
        (&json!(true), &json!(5)),
        "{j}"
    );
    assert_eq!(seqs_until(&mut ws, "r", 5).await, [3, 4, 5]);
    let p: Value = {
        send(
            &mut ws,
            json!({"type":"history","room":"r","limit":2,"reverse":true,"id":1}),
        )
        .await;
        recv_type(&mut ws, "history").await.0
    };
    assert_eq!(
        p["messages"],
        json!([{"seq":5,"data":5},{"seq":4,"data":4}]),
        "{p}"
    );
    assert_eq!(p["id"], 1);

    // A crash saves nothing: the next master has new epochs.
    fleet.signal(nix::sys::signal::Signal::SIGKILL);
    fleet.wait_exit(T);
    fleet.kill_tree();
    let dir = take_dir(&mut fleet);
    let fleet = start_in(dir);
    let (mut ws, _, _) = client(&fleet).await;
    let j = join(&mut ws, "r", Some((&epoch, 5))).await;
    assert_eq!(j["recovered"], false, "{j}");
    assert_ne!(j["epoch"], epoch.as_str(), "a new epoch: {j}");
    assert_eq!(fleet.stats()["master"]["history"]["recoveries_failed"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_history_file_is_set_aside() {
    let dir = TempDir::new();
    let run = dir.0.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("history.bin"), b"not a history file").unwrap();
    let fleet = start_in(dir);
    fleet.assert_logged("history file not trusted");
    let aside = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("history.bin.damaged-")
        });
    assert!(aside, "the damaged file is moved aside");
    assert!(!run.join("history.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_is_refused_when_the_gap_is_gone_or_too_long_and_bad_since_is_an_error() {
    let fleet = Fleet::start(&[
        "--workers",
        "1",
        "--history-size",
        "5",
        "--recovery-max",
        "3",
    ]);
    let (mut ws, _, _) = client(&fleet).await;
    let epoch = publish(&mut ws, "r", 1, 8).await;
    for (since, why) in [
        ((epoch.as_str(), 6), None),
        (("0000000000000000", 8), Some("wrong epoch")),
        ((epoch.as_str(), 2), Some("evicted by size")),
        ((epoch.as_str(), 4), Some("over recovery-max")),
    ] {
        let (mut sub, _, _) = client(&fleet).await;
        let j = join(&mut sub, "r", Some(since)).await;
        assert_eq!(j["recovered"], why.is_none(), "{why:?}: {j}");
        assert_eq!(j["seq"], 8);
    }
    for bad in [
        json!({"type":"join","room":"r","since":{"epoch":epoch,"seq":9},"id":1}),
        json!({"type":"join","room":"r","since":{"epoch":epoch,"seq":-1},"id":1}),
        json!({"type":"join","room":"r","since":"yesterday","id":1}),
        json!({"type":"join","room":"r","since":{"seq":1},"id":1}),
    ] {
        send(&mut ws, bad.clone()).await;
        let (e, _) = recv_type(&mut ws, "error").await;
        assert_eq!(
            (&e["code"], &e["id"]),
            (&json!("invalid_field"), &json!(1)),
            "{bad}: {e}"
        );
    }
    // Still serving, and the connection is in no room it was refused.
    let j = join(&mut ws, "r", None).await;
    assert_eq!(j["seq"], 8);
    let h = fleet.stats()["master"]["history"].clone();
    assert_eq!(
        (&h["recoveries_ok"], &h["recoveries_failed"]),
        (&json!(1), &json!(3)),
        "{h}"
    );
    assert_eq!(h["evicted_size"], 3, "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_eviction_refuses_recovery() {
    let fleet = Fleet::start(&["--workers", "1", "--history-ttl", "0.2"]);
    let (mut ws, _, _) = client(&fleet).await;
    let epoch = publish(&mut ws, "r", 1, 3).await;
    // The sweep runs every second: wait (bounded) until it has expired the messages.
    fleet.wait_stats("messages expired", T, |s| {
        s["master"]["history"]["evicted_ttl"].as_u64() >= Some(3)
    });
    let j = join(&mut ws, "r", Some((&epoch, 1))).await;
    assert_eq!(j["recovered"], false, "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_eviction_refuses_recovery() {
    let fleet = Fleet::start(&["--workers", "1", "--history-budget-bytes", "2000"]);
    let (mut ws, _, _) = client(&fleet).await;
    let epoch = publish(&mut ws, "a", 1, 3).await;
    publish(&mut ws, "b", 1, 20).await;
    let j = join(&mut ws, "a", Some((&epoch, 1))).await;
    assert_eq!(j["recovered"], false, "{j}");
    let h = fleet.stats()["master"]["history"].clone();
    assert!(h["evicted_budget"].as_u64() > Some(0), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rereads_the_namespaces() {
    let dir = TempDir::new();
    let config = dir.0.join("wsfleet.toml");
    std::fs::write(&config, "").unwrap();
    let config = config.to_str().unwrap().to_owned();
    let fleet = Fleet::start_in(common::BIN, dir, &["--config", &config]).unwrap();
    let ack = |fleet: &Fleet| {
        let url = fleet.url("/ws");
        async move {
            let mut ws = common::connect(&url).await;
            send(
                &mut ws,
                json!({"type":"publish","room":"live:1","data":1,"id":1}),
            )
            .await;
            recv_type(&mut ws, "ack").await.0
        }
    };
    assert!(
        ack(&fleet).await["epoch"].is_string(),
        "history on by default"
    );
    std::fs::write(
        &config,
        "[[namespace]]\npattern = \"live:*\"\nhistory_size = 0\n",
    )
    .unwrap();
    let out = tokio::task::block_in_place(|| fleet.cli(&["reload"]));
    assert!(out.status.success(), "{out:?}");
    let a = ack(&fleet).await;
    assert!(
        a.get("epoch").is_none(),
        "the namespace turned history off: {a}"
    );
    assert_eq!(fleet.stats()["master"]["history"]["rooms"], 0);
}
