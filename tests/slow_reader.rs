//! A client that stops reading for longer than the close linger (5 s) is closed cleanly:
//! whatever it reads afterwards is whole frames, ending with the 1013 close frame or,
//! when even that did not fit, at a frame boundary.

mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Splits server frames (unmasked, no extensions); returns the frames' opcodes and first
/// payload bytes, and the bytes left over after the last whole frame.
fn frames(mut b: &[u8]) -> (Vec<(u8, Vec<u8>)>, usize) {
    let mut out = Vec::new();
    loop {
        if b.len() < 2 {
            return (out, b.len());
        }
        let (len, head) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return (out, b.len()),
            n => (usize::from(n), 2),
        };
        if b.len() < head + len {
            return (out, b.len());
        }
        out.push((b[0] & 0x0F, b[head..head + len.min(4)].to_vec()));
        b = &b[head + len..];
    }
}

#[tokio::test]
async fn a_reader_stopped_past_the_linger_gets_whole_frames_and_the_1013_close() {
    let fleet = Fleet::start(&[
        "--workers",
        "1",
        "--rate-limit",
        "0",
        "--outbox-limit-bytes",
        "65536",
        "--max-message-bytes",
        "16384",
        "--inbound-rate-limit-bytes",
        "0",
    ]);
    let host = fleet.addr.clone();
    // A small receive window, so the server's socket fills up (as over a real network).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(host.parse().unwrap()).await.unwrap();
    s.write_all(upgrade_request(&host).as_bytes())
        .await
        .unwrap();
    // A masked join (mask of zeros keeps the payload as is).
    let join = br#"{"type":"join","room":"r"}"#;
    let mut frame = vec![0x81, 0x80 | join.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(join);
    s.write_all(&frame).await.unwrap();
    // Read the handshake, welcome and joined, then stop reading.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"joined\"") {
        let n = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let (mut publisher, _, _) = client(&fleet).await;
    let data = "y".repeat(10_000);
    // Paced, so each message is written on its own and the reader's socket fills up
    // before its queue does.
    for _ in 0..300 {
        let request = json!({"type": "publish", "room": "r", "data": data}).to_string();
        publisher.send(Message::text(request)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    fleet.wait_stats("the slow reader closed", T, |s| {
        s["total"]["counters"]["slow_consumer_closes"] == 1
    });
    // The reader stays away past the 5 s linger.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let mut rest = Vec::new();
    loop {
        match tokio::time::timeout(T, s.read(&mut buf))
            .await
            .expect("never closed")
        {
            Ok(0) => break,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(e) => panic!("connection reset after {} bytes: {e}", rest.len()),
        }
    }
    let (frames, left) = frames(&rest);
    eprintln!(
        "read {} bytes after the pause: {} whole frames, {left} bytes of a cut frame, last {:?}",
        rest.len(),
        frames.len(),
        frames.last()
    );
    assert_eq!(left, 0, "the stream ended mid-frame");
    assert_eq!(
        frames.last(),
        Some(&(8, vec![3, 245, b's', b'l'])),
        "the last frame is the 1013 close"
    );
}
