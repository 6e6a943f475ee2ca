//! The pub/sub issue: rooms and broadcasts across workers, ordering, presence, acks, bad
//! input, slow consumers.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// The next `message` frame, skipping presence notices and acks.
async fn next_message(ws: &mut Ws) -> Value {
    recv_type(ws, "message").await.0
}

#[tokio::test]
async fn two_workers_share_a_room_in_one_order_and_broadcasts_reach_everyone() {
    let fleet = Fleet::start(&[]);
    let ((mut a, wa, _), (mut b, wb, _)) = clients_on_two_workers(&fleet).await;
    assert_ne!(wa, wb);
    join(&mut a, "general").await;
    join(&mut b, "general").await;
    send(
        &mut a,
        json!({"type": "publish", "room": "general", "data": {"from": "a"}}),
    )
    .await;
    send(
        &mut b,
        json!({"type": "publish", "room": "general", "data": {"from": "b"}}),
    )
    .await;
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for _ in 0..2 {
        let m = next_message(&mut a).await;
        seen_a.push((m["seq"].as_u64().unwrap(), m["data"]["from"].clone()));
        let m = next_message(&mut b).await;
        seen_b.push((m["seq"].as_u64().unwrap(), m["data"]["from"].clone()));
    }
    assert_eq!(seen_a, seen_b, "both members see one order");
    assert_eq!(seen_a.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2]);

    let (mut c, _, _) = client(&fleet).await;
    send(&mut c, json!({"type": "broadcast", "data": "hello all"})).await;
    for ws in [&mut a, &mut b, &mut c] {
        let m = next_message(ws).await;
        assert_eq!(m, json!({"type": "message", "data": "hello all"}));
    }
}

#[tokio::test]
async fn leave_stops_delivery_and_presence_and_acks_arrive() {
    // Today's rules for rooms without history (tests/history.rs has the rooms with it).
    let fleet = Fleet::start(&["--history-size", "0"]);
    let ((mut a, _, _), (mut b, _, id_b)) = clients_on_two_workers(&fleet).await;
    join(&mut a, "r").await;
    send(&mut b, json!({"type": "join", "room": "r", "id": "j1"})).await;
    let (joined, _) = recv_type(&mut b, "joined").await;
    assert_eq!(joined["room"], "r");
    let (ack, _) = recv_type(&mut b, "ack").await;
    assert_eq!(ack["id"], "j1");
    let (p, _) = recv_type(&mut a, "presence").await;
    assert_eq!(
        p,
        json!({"type": "presence", "room": "r", "event": "join", "id": id_b})
    );

    // A publish ack comes once the master ordered it, so the message is already queued
    // for every member: the publisher, a member, sees the message before the ack.
    send(
        &mut b,
        json!({"type": "publish", "room": "r", "data": 1, "id": 7}),
    )
    .await;
    // (b may first see a presence notice for a: a's join notice can be ordered after b's
    // join took effect, since the two workers' messages reach the master independently.)
    let (first, before) = recv_type(&mut b, "message").await;
    assert!(before.iter().all(|v| v["type"] == "presence"), "{before:?}");
    assert_eq!(first["data"], 1);
    let ack = recv(&mut b).await;
    assert_eq!(ack, json!({"type": "ack", "id": 7, "seq": 1}));
    assert_eq!(next_message(&mut a).await["data"], 1);

    send(&mut b, json!({"type": "leave", "room": "r", "id": [1]})).await;
    assert_eq!(recv(&mut b).await, json!({"type": "left", "room": "r"}));
    assert_eq!(recv(&mut b).await, json!({"type": "ack", "id": [1]}));
    let (p, _) = recv_type(&mut a, "presence").await;
    assert_eq!(p["event"], "leave");
    assert_eq!(p["id"], id_b);

    send(&mut a, json!({"type": "publish", "room": "r", "data": 2})).await;
    assert_eq!(next_message(&mut a).await["data"], 2);
    // b left: the next thing b gets is our broadcast, not the room message.
    send(&mut a, json!({"type": "broadcast", "data": "x"})).await;
    assert_eq!(recv(&mut b).await, json!({"type": "message", "data": "x"}));

    // A publisher need not be a member; a room nobody is in orders nothing.
    send(
        &mut b,
        json!({"type": "publish", "room": "r", "data": 3, "id": "p"}),
    )
    .await;
    assert_eq!(
        recv(&mut b).await,
        json!({"type": "ack", "id": "p", "seq": 3})
    );
    send(
        &mut b,
        json!({"type": "publish", "room": "empty", "data": 3, "id": "q"}),
    )
    .await;
    assert_eq!(recv(&mut b).await, json!({"type": "ack", "id": "q"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_on_both_workers_yield_one_gapless_sequence() {
    const PUBLISHERS: usize = 4;
    const EACH: usize = 250;
    let fleet = Fleet::start(&["--rate-limit", "0"]);
    let ((mut m1, _, _), (mut m2, _, _)) = clients_on_two_workers(&fleet).await;
    let ((mut m3, _, _), (mut m4, _, _)) = clients_on_two_workers(&fleet).await;
    for m in [&mut m1, &mut m2, &mut m3, &mut m4] {
        join(m, "order").await;
    }
    let mut pubs = Vec::new();
    for p in 0..PUBLISHERS {
        let (mut ws, _, _) = client(&fleet).await;
        pubs.push(tokio::spawn(async move {
            for i in 0..EACH {
                ws.feed(Message::text(
                    json!({"type": "publish", "room": "order", "data": [p, i]}).to_string(),
                ))
                .await
                .unwrap();
            }
            ws.flush().await.unwrap();
            ws
        }));
    }
    let collect = |mut ws: Ws| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < PUBLISHERS * EACH {
                let m = next_message(&mut ws).await;
                got.push((m["seq"].as_u64().unwrap(), m["data"].clone()));
            }
            got
        })
    };
    let readers: Vec<_> = [m1, m2, m3, m4].into_iter().map(collect).collect();
    let mut first: Option<Vec<(u64, Value)>> = None;
    for r in readers {
        let got = tokio::time::timeout(Duration::from_secs(30), r)
            .await
            .unwrap()
            .unwrap();
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            seqs,
            (1..=(PUBLISHERS * EACH) as u64).collect::<Vec<_>>(),
            "gap or duplicate"
        );
        match &first {
            None => first = Some(got),
            Some(f) => assert_eq!(f, &got, "members disagree on the order"),
        }
    }
    // Each publisher's own messages stay in the order it sent them.
    let order = first.unwrap();
    for p in 0..PUBLISHERS {
        let mine: Vec<u64> = order
            .iter()
            .filter(|(_, d)| d[0] == p)
            .map(|(_, d)| d[1].as_u64().unwrap())
            .collect();
        assert_eq!(mine, (0..EACH as u64).collect::<Vec<_>>());
    }
    for p in pubs {
        p.await.unwrap();
    }
}

#[tokio::test]
async fn bad_requests_get_error_frames_and_the_connection_stays_open() {
    let fleet = Fleet::start(&["--max-rooms", "2"]);
    let (mut ws, _, _) = client(&fleet).await;
    let long_room = "x".repeat(129);
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "bad_json"),
        ("[1]".into(), "bad_json"),
        (json!({"room": "a"}).to_string(), "missing_field"),
        (json!({"type": "dance"}).to_string(), "unknown_type"),
        (json!({"type": "join"}).to_string(), "missing_field"),
        (
            json!({"type": "join", "room": 5}).to_string(),
            "invalid_field",
        ),
        (json!({"type": "join", "room": ""}).to_string(), "bad_room"),
        (
            json!({"type": "join", "room": long_room}).to_string(),
            "bad_room",
        ),
        (
            json!({"type": "join", "room": "a\u{7}b"}).to_string(),
            "bad_room",
        ),
        (
            json!({"type": "publish", "room": "a"}).to_string(),
            "missing_field",
        ),
    ];
    for (text, code) in cases {
        ws.send(Message::text(text.clone())).await.unwrap();
        let v = recv(&mut ws).await;
        assert_eq!(v["type"], "error", "{text} -> {v}");
        assert_eq!(v["code"], code, "{text} -> {v}");
        assert!(v["message"].as_str().unwrap().len() > 10);
    }
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(recv(&mut ws).await["type"], "error");
    join(&mut ws, "one").await;
    join(&mut ws, "two").await;
    send(&mut ws, json!({"type": "join", "room": "three", "id": 1})).await;
    let v = recv(&mut ws).await;
    assert_eq!(
        (v["code"].as_str(), v["id"].as_u64()),
        (Some("too_many_rooms"), Some(1)),
        "{v}"
    );
    // Still fully usable.
    send(
        &mut ws,
        json!({"type": "publish", "room": "one", "data": "ok"}),
    )
    .await;
    assert_eq!(next_message(&mut ws).await["data"], "ok");
}

#[tokio::test]
async fn rate_limit_answers_with_an_error_frame() {
    let fleet = Fleet::start(&["--rate-limit", "5"]);
    let (mut ws, _, _) = client(&fleet).await;
    for _ in 0..20 {
        ws.feed(Message::text(
            json!({"type": "leave", "room": "r"}).to_string(),
        ))
        .await
        .unwrap();
    }
    ws.flush().await.unwrap();
    let (v, _) = recv_type(&mut ws, "error").await;
    assert_eq!(v["code"], "rate_limited");
}

async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("no close") {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test]
async fn protocol_violations_get_their_close_codes_and_others_keep_being_served() {
    let fleet = Fleet::start(&["--max-message-bytes", "1024"]);
    let (mut bystander, _, _) = client(&fleet).await;

    let (mut ws, _, _) = client(&fleet).await;
    ws.send(Message::text("x".repeat(2000))).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1009));

    let (mut ws, _, _) = client(&fleet).await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x41], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1007));

    let (mut ws, _, _) = client(&fleet).await;
    let mut frame = Frame::message(b"hi".to_vec(), OpCode::Data(Data::Text), true);
    frame.header_mut().rsv1 = true;
    ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1002));

    send(&mut bystander, json!({"type": "broadcast", "data": 1})).await;
    assert_eq!(next_message(&mut bystander).await["data"], 1);
    // A worker's counters reach `stats` once it answers the master's sample.
    fleet.wait_stats("three protocol errors counted", T, |s| {
        s["total"]["counters"]["protocol_errors"] == 3
    });
}

#[tokio::test]
async fn upgrade_refusals_404_426_403_503() {
    use tokio_tungstenite::tungstenite::{Error, client::IntoClientRequest};
    let fleet = Fleet::start(&[
        "--workers",
        "1",
        "--max-connections",
        "1",
        "--allowed-origins",
        "https://ok.example",
    ]);
    let status = |r: Result<_, Error>| match r {
        Err(Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => 101,
    };
    let with_origin = |path: &str, origin: &str| {
        let mut req = fleet.url(path).into_client_request().unwrap();
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        req
    };
    assert_eq!(
        status(
            tokio_tungstenite::connect_async(with_origin("/nope", "https://ok.example"))
                .await
                .map(|_| ())
        ),
        404
    );
    assert_eq!(
        status(
            tokio_tungstenite::connect_async(with_origin("/ws", "https://evil.example"))
                .await
                .map(|_| ())
        ),
        403
    );
    let first = tokio_tungstenite::connect_async(with_origin("/ws", "https://ok.example"))
        .await
        .unwrap();
    assert_eq!(
        status(
            tokio_tungstenite::connect_async(with_origin("/ws", "https://ok.example"))
                .await
                .map(|_| ())
        ),
        503
    );
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_with_1013_and_the_others_keep_receiving() {
    let fleet = Fleet::start(&[
        "--workers",
        "1",
        "--outbox-limit-bytes",
        "262144",
        "--rate-limit",
        "0",
        // 48 MiB from one publisher: past the default inbound byte rate.
        "--inbound-rate-limit-bytes",
        "0",
    ]);
    let (mut slow, _, _) = client(&fleet).await;
    join(&mut slow, "flood").await;
    let (mut fast, _, _) = client(&fleet).await;
    join(&mut fast, "flood").await;
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = progress.clone();
    let reader = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            let m = next_message(&mut fast).await;
            n += 1;
            seen.store(n, std::sync::atomic::Ordering::Relaxed);
            if m["data"]["last"] == true {
                return n;
            }
        }
    });
    let (mut publisher, _, _) = client(&fleet).await;
    const COUNT: u64 = 3000; // 48 MiB: far beyond socket buffers plus the 256 KiB outbox
    let publishing = tokio::spawn(async move {
        let blob = "y".repeat(16 * 1024);
        for i in 0..COUNT {
            let data = json!({"i": i, "blob": blob, "last": i == COUNT - 1});
            publisher
                .send(Message::text(
                    json!({"type": "publish", "room": "flood", "data": data}).to_string(),
                ))
                .await
                .unwrap();
            // Stay a few messages ahead of the reading member, so only the one that never
            // reads falls behind.
            while i >= progress.load(std::sync::atomic::Ordering::Relaxed) + 8 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        publisher.flush().await.unwrap();
    });
    tokio::task::block_in_place(|| {
        fleet.wait_stats("a slow-consumer close", Duration::from_secs(60), |s| {
            s["total"]["counters"]["slow_consumer_closes"] == 1
        })
    });
    // The slow client now reads (while the flood goes on, so within the server's close
    // linger however slow the machine): what was already on the wire, then the 1013 close.
    assert_eq!(close_code(&mut slow).await, Some(1013));
    tokio::time::timeout(Duration::from_secs(60), publishing)
        .await
        .unwrap()
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, COUNT, "the fast member lost messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peers_are_dropped_after_the_ping_timeout() {
    let fleet = Fleet::start(&[
        "--workers",
        "1",
        "--ping-interval",
        "0.1",
        "--ping-timeout",
        "0.5",
    ]);
    // A raw TCP client that upgrades and then never answers pings.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&fleet.addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    tokio::task::block_in_place(|| {
        fleet.wait_stats("one connection", T, |s| {
            s["total"]["counters"]["connections_current"] == 1
        });
        fleet.wait_stats("the silent peer dropped", T, |s| {
            s["total"]["counters"]["connections_current"] == 0
        })
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handshake_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fleet = Fleet::start(&["--workers", "1", "--handshake-timeout", "0.5"]);
    let mut s = tokio::net::TcpStream::connect(&fleet.addr).await.unwrap();
    // Slowloris: a request line and one header, then nothing.
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(T, s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a half-sent handshake open");
    // Others are still served.
    let (_ws, _, _) = client(&fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_master_holds_the_workers_reading_instead_of_their_memory_growing() {
    // No inbound byte-rate limit: on a fast machine the 60 MB flood would pass 4 MiB/s and be
    // closed with 1008 (its further input discarded), which is not what this test is about.
    let fleet = Fleet::start(&[
        "--workers",
        "1",
        "--rate-limit",
        "0",
        "--inbound-rate-limit-bytes",
        "0",
    ]);
    let (mut ws, _, _) = client(&fleet).await;
    let master = nix::unistd::Pid::from_raw(fleet.pid());
    nix::sys::signal::kill(master, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // 1,000 publishes of 60 KB (60 MB): with nowhere to send them, the worker stops
    // reading past its 8 MiB hold mark, so the socket buffers fill and sending stalls.
    let blob = "z".repeat(60_000);
    let publish = |i: u64| {
        Message::text(json!({"type": "publish", "room": "r", "data": [i, blob]}).to_string())
    };
    let mut accepted = 0u64;
    let mut stalled = false;
    for i in 0..1000 {
        ws.feed(publish(i)).await.unwrap();
        if tokio::time::timeout(Duration::from_secs(3), ws.flush())
            .await
            .is_err()
        {
            stalled = true;
            break;
        }
        accepted += 1;
    }
    assert!(
        stalled,
        "all {accepted} × 60 KB accepted while the master was stopped"
    );
    // The master back: the held reads resume and everything sent arrives in order.
    nix::sys::signal::kill(master, nix::sys::signal::Signal::SIGCONT).unwrap();
    tokio::time::timeout(T, ws.flush()).await.unwrap().unwrap();
    send(
        &mut ws,
        json!({"type": "publish", "room": "r", "data": 0, "id": "last"}),
    )
    .await;
    let (ack, _) = recv_type(&mut ws, "ack").await;
    assert_eq!(ack["id"], "last", "{ack}");
    eprintln!(
        "master stopped: the worker took {accepted} × 60 KB ({} MB) before the client's sends stalled",
        accepted * 60_000 / 1_000_000
    );
}
