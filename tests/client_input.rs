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
        let got: Vec<Value> = [
            recv(&mut ws).await,
            recv(&mut ws).await,
            recv(&mut ws).await,
        ]
        .into_iter()
        .chain([recv(&mut ws).await])
        .collect();
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
    let host = fleet.url("/").replace("ws://", "").replace('/', "");
    let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
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
    let host = fleet.url("/").replace("ws://", "").replace('/', "");
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
