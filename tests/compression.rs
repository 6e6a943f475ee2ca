//! Issue 14: permessage-deflate against the real binary, spoken with raw frames and an
//! independent deflate (flate2): the negotiation answer, compressed echo and fan-out
//! (one compressed frame per message, plain frames for clients without the extension),
//! compressed client frames, a decompression bomb closed with 1009, and the counters.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};

const OFFER: &str = "permessage-deflate; client_max_window_bits";
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// A blocking client speaking raw frames, optionally with permessage-deflate.
struct Raw {
    s: TcpStream,
    /// The handshake response headers.
    head: String,
    /// Bytes read past what was parsed.
    buf: Vec<u8>,
}

/// One frame from the server.
#[derive(Debug)]
struct Frame {
    rsv1: bool,
    opcode: u8,
    /// The payload, inflated when RSV1 was set.
    payload: Vec<u8>,
    /// Bytes of the frame on the wire.
    wire: usize,
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

impl Raw {
    fn open(fleet: &Fleet, path: &str, extensions: Option<&str>) -> Raw {
        let mut s = TcpStream::connect(&fleet.addr).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let ext = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n",
            fleet.addr
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Raw {
            s,
            head: String::new(),
            buf: Vec::new(),
        };
        let end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            raw.fill();
        };
        raw.head = String::from_utf8(raw.buf.drain(..end).collect()).unwrap();
        assert!(raw.head.starts_with("HTTP/1.1 101"), "{}", raw.head);
        raw
    }

    fn extensions(&self) -> Option<String> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix("sec-websocket-extensions: "))
            .map(str::to_owned)
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.s.read(&mut chunk).expect("the server answers in time");
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Sends one masked frame (RSV1 and compressed payload when `compress`).
    fn send(&mut self, opcode: u8, payload: &[u8], compress: bool) {
        let body = if compress {
            deflate(payload)
        } else {
            payload.to_vec()
        };
        let mut f = Vec::new();
        let b0 = 0x80 | if compress { 0x40 } else { 0 } | opcode;
        wsfleet_worker::deflate::push_header(&mut f, b0, true, body.len());
        let key = [9u8, 8, 7, 6];
        f.extend_from_slice(&key);
        f.extend(body.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.s.write_all(&f).unwrap();
    }

    fn send_json(&mut self, v: Value, compress: bool) {
        self.send(1, v.to_string().as_bytes(), compress);
    }

    /// The next frame (the server's frames are unmasked and unfragmented).
    fn recv(&mut self) -> Frame {
        loop {
            if self.buf.len() >= 2 {
                let (len, at) = match self.buf[1] & 0x7F {
                    126 if self.buf.len() >= 4 => (
                        usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                        4,
                    ),
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (usize::from(n), 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let b0 = self.buf[0];
                    assert_eq!(self.buf[1] & 0x80, 0, "server frames are unmasked");
                    let body: Vec<u8> = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    let rsv1 = b0 & 0x40 != 0;
                    return Frame {
                        rsv1,
                        opcode: b0 & 0x0F,
                        payload: if rsv1 { inflate(&body) } else { body },
                        wire: at + len,
                    };
                }
            }
            self.fill();
        }
    }

    /// The next text frame that is not a ping, as JSON.
    fn recv_json(&mut self) -> (Value, Frame) {
        loop {
            let f = self.recv();
            if f.opcode == 1 {
                return (serde_json::from_slice(&f.payload).unwrap(), f);
            }
        }
    }
}

/// A chat-like JSON message of about 1 KiB: repeated keys, text, numbers.
fn chat_json() -> Value {
    let msgs: Vec<Value> = (0..10)
        .map(|i| {
            json!({"user": format!("user{i}"), "text": "the quick brown fox jumps over the lazy dog",
                   "ts": 1_764_460_000_000u64 + i, "likes": i * 3})
        })
        .collect();
    json!({"kind": "batch", "messages": msgs})
}

#[test]
fn echo_negotiates_and_compresses_both_ways_with_the_counters() {
    let fleet = Fleet::start(&["--workers", "1"]);
    let mut c = Raw::open(&fleet, "/echo", Some(OFFER));
    assert_eq!(c.extensions().as_deref(), Some(ANSWER));
    let text = chat_json().to_string();
    assert!(text.len() > 900, "{}", text.len());
    for compress in [true, false] {
        c.send(1, text.as_bytes(), compress);
        let f = c.recv();
        assert!(f.rsv1, "a 1 KiB JSON echo goes out compressed");
        assert_eq!(f.payload, text.as_bytes());
        assert!(
            f.wire * 100 <= text.len() * 40,
            "{} of {}",
            f.wire,
            text.len()
        );
    }
    c.send(1, b"hi", true);
    let f = c.recv();
    assert_eq!(
        (f.rsv1, &f.payload[..]),
        (false, &b"hi"[..]),
        "under the threshold"
    );
    let s = fleet.wait_stats("compressed bytes counted", T, |s| {
        s["total"]["counters"]["bytes_out_compressed"].as_u64() > Some(0)
    });
    let from = s["total"]["counters"]["bytes_out_compressed_from"]
        .as_u64()
        .unwrap();
    let z = s["total"]["counters"]["bytes_out_compressed"]
        .as_u64()
        .unwrap();
    assert!(z * 100 <= from * 40, "{z} of {from}");
    let out = fleet.cli(&["stats"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("compression out: "), "{table}");
}

#[test]
fn a_bomb_is_closed_with_1009_and_rsv1_without_the_extension_with_1002() {
    let fleet = Fleet::start(&["--workers", "1"]);
    let mut c = Raw::open(&fleet, "/echo", Some("permessage-deflate"));
    // 64 MiB of zeros in about 64 KiB: the limit is 64 KiB.
    let bomb = vec![0u8; 64 << 20];
    c.send(2, &bomb, true);
    let f = c.recv();
    assert_eq!(f.opcode, 8);
    assert_eq!(u16::from_be_bytes([f.payload[0], f.payload[1]]), 1009);

    let mut plain = Raw::open(&fleet, "/echo", None);
    assert_eq!(plain.extensions(), None);
    plain.send(1, b"hello hello hello", true);
    let f = plain.recv();
    assert_eq!(f.opcode, 8);
    assert_eq!(u16::from_be_bytes([f.payload[0], f.payload[1]]), 1002);
}

#[test]
fn compression_off_declines_the_offer() {
    let fleet = Fleet::start(&["--workers", "1", "--compression", "off"]);
    let c = Raw::open(&fleet, "/echo", Some(OFFER));
    assert_eq!(c.extensions(), None);
}

#[test]
fn a_room_message_is_compressed_for_members_that_negotiated_and_plain_for_the_others() {
    let fleet = Fleet::start(&["--workers", "1"]);
    let mut members = [
        Raw::open(&fleet, "/ws", Some(OFFER)),
        Raw::open(&fleet, "/ws", Some(OFFER)),
        Raw::open(&fleet, "/ws", None),
    ];
    for (i, m) in members.iter_mut().enumerate() {
        let (welcome, _) = m.recv_json();
        assert_eq!(welcome["type"], "welcome");
        m.send_json(json!({"type": "join", "room": "z", "id": i}), i == 0);
        loop {
            let (v, _) = m.recv_json();
            if v["type"] == "ack" {
                break;
            }
        }
    }
    let data = chat_json();
    members[2].send_json(json!({"type": "publish", "room": "z", "data": data}), false);
    let mut wire = Vec::new();
    for m in &mut members {
        let (v, f) = loop {
            let (v, f) = m.recv_json();
            if v["type"] == "message" {
                break (v, f);
            }
        };
        assert_eq!(v["data"], data);
        wire.push((f.rsv1, f.wire));
    }
    assert!(wire[0].0 && wire[1].0 && !wire[2].0, "{wire:?}");
    assert_eq!(wire[0].1, wire[1].1, "the same compressed frame for both");
    assert!(wire[0].1 * 100 <= wire[2].1 * 40, "{wire:?}");
}
