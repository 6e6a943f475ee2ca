//! Test harness: starts the real `wsfleet` binary on port 0 with a short temporary run
//! directory, waits for its ready line, talks to its control socket, and kills the whole
//! process group on drop.
#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const BIN: &str = env!("CARGO_BIN_EXE_wsfleet");
pub const T: Duration = Duration::from_secs(15);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A short, unique, self-deleting directory under /tmp (Unix socket paths must be short).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = PathBuf::from(format!(
            "/tmp/wsft-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running master and its workers.
pub struct Fleet {
    pub child: Option<Child>,
    pub dir: TempDir,
    pub addr: String,
    /// The admin listener's address (`--admin 127.0.0.1:0` unless a test chose otherwise),
    /// from the ready line; None with `--admin off`.
    pub admin: Option<String>,
    /// The server API's address (`--api`), from the ready line; None when it is off.
    pub api: Option<String>,
    pub control: PathBuf,
    pub stderr_log: PathBuf,
    pub stdout_rx: mpsc::Receiver<String>,
}

impl Fleet {
    /// Starts `bin serve` with 2 workers on 127.0.0.1:0 plus `extra` arguments.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with(BIN, extra)
    }

    pub fn start_with(bin: &str, extra: &[&str]) -> Self {
        let dir = TempDir::new();
        Self::start_in(bin, dir, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a fleet from a private copy of the binary in its own directory, so the test
    /// can replace "the binary on disk" ([`break_binary`](Self::break_binary)).
    pub fn start_from_copy(extra: &[&str]) -> Self {
        let dir = TempDir::new();
        let bin = dir.0.join("wsfleet");
        std::fs::copy(BIN, &bin).unwrap();
        Self::start_in(bin.to_str().unwrap(), dir, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The private binary of a fleet started with [`start_from_copy`](Self::start_from_copy).
    pub fn private_bin(&self) -> PathBuf {
        self.dir.0.join("wsfleet")
    }

    /// Replaces the private binary (by rename, as an upgrade would) with a script that
    /// runs `body`; returns a saved copy of the working binary for
    /// [`restore_binary`](Self::restore_binary).
    pub fn break_binary(&self, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let (bin, good, broken) = (
            self.private_bin(),
            self.dir.0.join("good"),
            self.dir.0.join("broken"),
        );
        std::fs::copy(&bin, &good).unwrap();
        std::fs::write(&broken, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&broken, &bin).unwrap();
        good
    }

    /// Puts the working binary saved by [`break_binary`](Self::break_binary) back.
    pub fn restore_binary(&self, good: &Path) {
        std::fs::rename(good, self.private_bin()).unwrap();
    }

    pub fn start_in(bin: &str, dir: TempDir, extra: &[&str]) -> Result<Self, String> {
        let stderr_log = dir.0.join("stderr.log");
        let run_dir = dir.0.join("run");
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args(default_unless(extra, "--listen", "127.0.0.1:0"))
            .args(default_unless(extra, "--drain-timeout", "0.5"))
            .args(default_unless(extra, "--workers", "2"))
            // Never the default 9090: tests run in parallel.
            .args(default_unless(extra, "--admin", "127.0.0.1:0"))
            .arg("--run-dir")
            .arg(&run_dir)
            .args(extra)
            .env_remove("WSFLEET_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .process_group(0);
        // A binary copied by a test may still be open for writing in a child that
        // another test forked meanwhile (ETXTBSY): retry briefly.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Ok(child) => break child,
                Err(e) if e.raw_os_error() == Some(26) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("spawn {bin}: {e}")),
            }
        };
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut fleet = Fleet {
            child: Some(child),
            dir,
            addr: String::new(),
            admin: None,
            api: None,
            control: run_dir.join("control.sock"),
            stderr_log,
            stdout_rx: rx,
        };
        let line = fleet
            .stdout_rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| format!("no ready line within 30 s; stderr:\n{}", fleet.stderr()))?;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .ok_or_else(|| format!("unexpected first line {line:?}"))?;
        fleet.addr = addr.to_owned();
        fleet.admin = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("admin="))
            .filter(|a| *a != "off")
            .map(str::to_owned);
        fleet.api = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("api="))
            .filter(|a| *a != "off")
            .map(str::to_owned);
        Ok(fleet)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Fails the test, showing the whole log, unless the master's stderr contains `text`.
    pub fn assert_logged(&self, text: &str) {
        let log = self.stderr();
        assert!(log.contains(text), "stderr lacks {text:?}:\n{log}");
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the master to exit and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "master did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One control-socket request (a JSON line) and its answer.
    pub fn control(&self, request: &str) -> Value {
        control_at(&self.control, request)
    }

    pub fn stats(&self) -> Value {
        let v = self.control(r#"{"cmd":"stats"}"#);
        assert_eq!(v["ok"], true, "{v}");
        v["stats"].clone()
    }

    /// Runs the real `wsfleet` client with `args` against this fleet.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .arg("--control")
            .arg(&self.control)
            .output()
            .unwrap()
    }

    /// Ready worker pids by slot.
    pub fn ready_pids(&self) -> Vec<(u64, u64, u64)> {
        let s = self.stats();
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] == "ready")
            .map(|w| {
                (
                    w["slot"].as_u64().unwrap(),
                    w["pid"].as_u64().unwrap(),
                    w["generation"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Polls `stats` until `cond` holds (a control-socket answer, not a sleep).
    pub fn wait_stats(&self, what: &str, limit: Duration, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.stats();
            if cond(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last stats: {s:#}\nstderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `GET path` on the admin listener: the status and the body.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let addr = self
            .admin
            .as_deref()
            .expect("the fleet has an admin listener");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (status, body) = http_answer(&out);
        (status, body.to_owned())
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn kill_tree(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_tree();
    }
}

/// `[flag, value]` unless the test passes `flag` itself.
fn default_unless<'a>(extra: &[&str], flag: &'a str, value: &'a str) -> Vec<&'a str> {
    if extra.contains(&flag) {
        Vec::new()
    } else {
        vec![flag, value]
    }
}

pub fn control_at(path: &Path, request: &str) -> Value {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad answer {line:?}: {e}"))
}

/// Connects a WebSocket client.
pub async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect failed");
    ws
}

/// The next text frame as JSON (skipping pings/pongs).
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(T, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("stream ended")
            .expect("read error");
        match msg {
            Message::Text(t) => {
                return serde_json::from_str(t.as_str()).expect("server sent invalid JSON");
            }
            Message::Close(f) => panic!("closed by server: {f:?}"),
            _ => {}
        }
    }
}

/// Receives until a frame of `kind` arrives, returning it (others are returned too).
pub async fn recv_type(ws: &mut Ws, kind: &str) -> (Value, Vec<Value>) {
    let mut skipped = Vec::new();
    loop {
        let v = recv(ws).await;
        if v["type"] == kind {
            return (v, skipped);
        }
        skipped.push(v);
    }
}

pub async fn send(ws: &mut Ws, v: Value) {
    tokio::time::timeout(T, ws.send(Message::text(v.to_string())))
        .await
        .expect("send timed out")
        .expect("send failed");
}

/// Joins `room` (the request built by the protocol module's client side) and waits for
/// its `joined`, skipping other frames.
pub async fn join(ws: &mut Ws, room: &str) {
    let request = wsfleet_worker::protocol::client::join(room, None);
    tokio::time::timeout(T, ws.send(Message::text(request)))
        .await
        .expect("send timed out")
        .expect("send failed");
    loop {
        let v = recv(ws).await;
        if wsfleet_worker::protocol::client::joined(&v.to_string()).as_deref() == Some(room) {
            return;
        }
    }
}

/// The code of the close frame the server ends `ws` with (None: a close without a code);
/// anything else before it is skipped, an end without a close frame fails the test.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .expect("no close frame")
        {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    }
}

/// A `/ws` client with its welcome read.
pub async fn client(fleet: &Fleet) -> (Ws, u64, String) {
    let mut ws = connect(&fleet.url("/ws")).await;
    let w = recv(&mut ws).await;
    assert_eq!(w["type"], "welcome", "{w}");
    (
        ws,
        w["worker"].as_u64().unwrap(),
        w["id"].as_str().unwrap().to_owned(),
    )
}

/// Clients on two different workers (reconnecting until the kernel spreads them).
pub async fn clients_on_two_workers(fleet: &Fleet) -> ((Ws, u64, String), (Ws, u64, String)) {
    let a = client(fleet).await;
    for _ in 0..200 {
        let b = client(fleet).await;
        if b.1 != a.1 {
            return (a, b);
        }
    }
    panic!("200 connections all landed on worker {}", a.1);
}

/// The status and body of a raw HTTP/1.1 answer read to its end.
pub fn http_answer(out: &str) -> (u16, &str) {
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {out:?}"));
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    (status, body)
}

/// A valid `/ws` upgrade request, for tests that speak raw bytes after it.
pub fn upgrade_request(host: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// One raw HTTP/1.1 request to the API: (status, JSON body).
pub async fn api_request(
    fleet: &Fleet,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let addr = fleet.api.as_deref().expect("the fleet has an API listener");
    let auth = key
        .map(|k| format!("Authorization: apikey {k}\r\n"))
        .unwrap_or_default();
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(text.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    };
    let out = tokio::time::timeout(T, exchange)
        .await
        .expect("API answer timed out");
    let (status, body) = http_answer(&out);
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
    (status, json)
}
