//! Issue 15, part 2b: every request answered in order, strict JSON for `data` and `id`,
//! a strict handshake, and bounded control frames — against the real binary.

mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn back_to_back_join_and_leave_are_each_answered_in_order() {
    let fleet = Fleet::start(&["--workers", "1", "--rate-limit", "0"]);
    let (mut ws, _, _) = client(&fleet).await;
    const PAIRS: usize = 2_000;
    for i in 0..PAIRS {
        let room = format!("r{}", i % 7);
        ws.feed(Message::text(
            json!({"type": "join", "room": room, "id": format!("j{i}")}).to_string(),
        ))
        .await
        .unwrap();
        ws.feed(Message::text(
            json!({"type": "leave", "room": room, "id": format!("l{i}")}).to_string(),
        ))
        .await
        .unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..PAIRS {
        let room = format!("r{}", i % 7);
        let mut got: Vec<Value> = [
            recv(&mut ws).await,
            recv(&mut ws).await,
            recv(&mut ws).await,
        ]
        .into_iter()
        .chain([recv(&mut ws).await])
        .collect();
        // `joined` carries the room's position (history is on by default): check it is
        // there, then compare the rest.
        if let Some(joined) = got[0].as_object_mut() {
            assert!(
                joined.remove("epoch").is_some_and(|e| e.is_string()),
                "pair {i}"
            );
            assert!(joined.remove("seq").is_some_and(|s| s.is_u64()), "pair {i}");
        }
        let expected = vec![
            json!({"type": "joined", "room": room}),
            json!({"type": "ack", "id": format!("j{i}")}),
            json!({"type": "left", "room": room}),
            json!({"type": "ack", "id": format!("l{i}")}),
        ];
        assert_eq!(got, expected, "pair {i}");
    }
}

#[tokio::test]
async fn data_and_id_are_strict_json_and_null_is_a_value() {
    let fleet = Fleet::start(&["--workers", "1"]);
    let (mut ws, _, _) = client(&fleet).await;
    join(&mut ws, "r").await;

    let nulls = r#"{"type":"publish","room":"r","data":null,"id":null}"#;
    ws.send(Message::text(nulls)).await.unwrap();
    let m = recv_type(&mut ws, "message").await.0;
    assert_eq!(m["data"], Value::Null, "{m}");
    let ack = recv(&mut ws).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert!(ack.get("id").is_some_and(Value::is_null), "{ack}");

    let deep = 30_000;
    let cases = [
        (
            format!(
                r#"{{"type":"publish","room":"r","data":{}{},"id":1}}"#,
                "[".repeat(deep),
                "]".repeat(deep)
            ),
            "invalid_field",
            "deeper than 64",
        ),
        (
            format!(
                r#"{{"type":"publish","room":"r","data":{}0{},"id":2}}"#,
                "[".repeat(65),
                "]".repeat(65)
            ),
            "invalid_field",
            "deeper than 64",
        ),
        (
            r#"{"type":"publish","room":"r","data":"\ud800","id":3}"#.into(),
            "invalid_field",
            "surrogate",
        ),
        (
            r#"{"type":"broadcast","data":{"a":"\udc00"}}"#.into(),
            "invalid_field",
            "surrogate",
        ),
        (
            r#"{"type":"join","type":"leave","room":"r"}"#.into(),
            "bad_json",
            "duplicate key",
        ),
    ];
    for (text, code, says) in cases {
        ws.send(Message::text(text.clone())).await.unwrap();
        let v = recv(&mut ws).await;
        let short = &text[..text.len().min(80)];
        assert_eq!(v["type"], "error", "{short} -> {v}");
        assert_eq!(v["code"], code, "{short} -> {v}");
        assert!(v["message"].as_str().unwrap().contains(says), "{v}");
    }
    // 64 levels are fine, and still delivered.
    let ok = format!(
        r#"{{"type":"publish","room":"r","data":{}0{}}}"#,
        "[".repeat(64),
        "]".repeat(64)
    );
    ws.send(Message::text(ok)).await.unwrap();
    let m = recv_type(&mut ws, "message").await.0;
    assert!(m["data"].is_array());
}

#[tokio::test]
async fn a_client_that_pings_and_never_reads_cannot_grow_the_worker() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fleet = Fleet::start(&["--workers", "1"]);
    let (mut bystander, _, _) = client(&fleet).await;
    let rss = |fleet: &Fleet| fleet.stats()["total"]["rss_bytes"].as_u64().unwrap();
    let before = rss(&fleet);
    let host = fleet.addr.clone();
    let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
    s.write_all(upgrade_request(&host).as_bytes())
        .await
        .unwrap();
    // 200,000 masked 125-byte pings, never reading a byte of the answers.
    let mask = [1u8, 2, 3, 4];
    let mut ping = vec![0x89u8, 0x80 | 125];
    ping.extend_from_slice(&mask);
    ping.extend((0..125).map(|i| b'p' ^ mask[i % 4]));
    let batch: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 1000)
        .collect();
    for _ in 0..200 {
        tokio::time::timeout(T, s.write_all(&batch))
            .await
            .expect("the worker stopped reading the pinging client")
            .unwrap();
    }
    // The worker has read every ping once a request sent after them is answered.
    let mut ws = connect(&fleet.url("/ws")).await;
    let _ = recv(&mut ws).await;
    let after = rss(&fleet);
    eprintln!("worker RSS before {before} B, after 200,000 unread pings {after} B");
    assert!(
        after < before + 16 * 1024 * 1024,
        "pongs grew the worker from {before} to {after} bytes"
    );
    // The client reads again: it gets pongs, and the connection still works.
    let mut buf = vec![0u8; 1 << 16];
    let n = tokio::time::timeout(T, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(n > 0);
    send(&mut bystander, json!({"type": "broadcast", "data": 1})).await;
    assert_eq!(recv_type(&mut bystander, "message").await.0["data"], 1);
}

#[tokio::test]
async fn a_bad_key_or_http_1_0_gets_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fleet = Fleet::start(&["--workers", "1"]);
    let host = fleet.addr.clone();
    let good = "dGhlIHNhbXBsZSBub25jZQ==";
    let cases = [
        ("1.1", Some(good), "101"),
        ("1.1", Some(""), "400"),
        ("1.1", Some("not base64 at all"), "400"),
        ("1.1", Some("dGhlIHNhbXBsZSBub25j"), "400"),
        ("1.0", Some(good), "400"),
    ];
    for (version, key, status) in cases {
        let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
        let key_line = key.map(|k| format!("Sec-WebSocket-Key: {k}\r\n")).unwrap();
        let req = format!(
            "GET /ws HTTP/{version}\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\n{key_line}Sec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .expect("no answer to the handshake")
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        let first = head.lines().next().unwrap_or_default().to_owned();
        assert!(
            first.contains(status),
            "HTTP/{version} key {key:?}: expected {status}, got {first:?}"
        );
    }
}

#[tokio::test]
async fn client_broadcast_can_be_turned_off() {
    let fleet = Fleet::start(&["--workers", "1", "--client-broadcast", "off"]);
    let (mut ws, _, _) = client(&fleet).await;
    send(&mut ws, json!({"type": "broadcast", "data": 1, "id": 5})).await;
    let v = recv(&mut ws).await;
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{v}"
    );
    assert_eq!(v["id"], 5);
    join(&mut ws, "r").await;
    send(&mut ws, json!({"type": "publish", "room": "r", "data": 2})).await;
    assert_eq!(recv_type(&mut ws, "message").await.0["data"], 2);
}

/// What a flood did: how many of the 20 readers were closed, the most broadcasts one of
/// them received, and the close code the flooder got (if any).
#[derive(Debug)]
struct Flood {
    closed: usize,
    delivered: usize,
    flooder: Option<u16>,
}

/// Finding 6's reproduction: one client sends `count` 60 KB broadcasts as fast as it can
/// while 20 others read.
async fn flood(extra: &[&str], count: usize) -> Flood {
    use futures_util::StreamExt;
    let mut args = vec!["--workers", "1", "--rate-limit", "0"];
    args.extend_from_slice(extra);
    let fleet = Fleet::start(&args);
    let mut readers = Vec::new();
    for _ in 0..20 {
        let (ws, _, _) = client(&fleet).await;
        readers.push(tokio::spawn(async move {
            let (_, mut rx) = ws.split();
            let mut got = 0;
            // Read until closed, or until nothing came for 3 s (the flood is over).
            loop {
                match tokio::time::timeout(std::time::Duration::from_secs(3), rx.next()).await {
                    Ok(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => return (true, got),
                    Ok(Some(Ok(_))) => got += 1,
                    Err(_) => return (false, got),
                }
            }
        }));
    }
    let (ws, _, _) = client(&fleet).await;
    let (mut tx, mut rx) = ws.split();
    // The flooder reads its own broadcasts as they come back, as a real client does: one
    // that stopped reading would (rightly) be closed as a slow consumer (1013) instead,
    // which on a loaded machine can happen before the byte-rate limit is reached.
    let flooder = tokio::spawn(async move {
        while let Ok(Some(Ok(m))) = tokio::time::timeout(T, rx.next()).await {
            if let Message::Close(f) = m {
                return f.map(|f| u16::from(f.code));
            }
        }
        None
    });
    let data = "x".repeat(60_000);
    let msg = json!({"type": "broadcast", "data": data}).to_string();
    for _ in 0..count {
        if tx.feed(Message::text(msg.clone())).await.is_err() {
            break;
        }
    }
    let _ = tx.flush().await;
    let flooder = tokio::time::timeout(T, flooder).await.unwrap().unwrap();
    let mut result = Flood {
        closed: 0,
        delivered: 0,
        flooder,
    };
    for r in readers {
        let (closed, got) = tokio::time::timeout(T, r).await.unwrap().unwrap();
        result.closed += usize::from(closed);
        result.delivered = result.delivered.max(got);
    }
    result
}

#[tokio::test]
async fn a_broadcast_flood_closes_the_flooder_with_1008_and_nobody_else() {
    let flood = flood(&[], 4_000).await;
    eprintln!("4,000 x 60 KB broadcasts, default byte-rate limit: {flood:?}");
    assert_eq!(flood.flooder, Some(1008), "{flood:?}");
    assert_eq!(flood.closed, 0, "the flood closed other clients: {flood:?}");
    assert!(flood.delivered < 4_000, "{flood:?}");
}
