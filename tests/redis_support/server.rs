//! A private `redis-server` for a test: a free port, no persistence, killed on drop. Tests
//! skip (with a message) when `redis-server` is not installed; `scripts/test.sh` installs it.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    /// The process (None once stopped).
    child: Option<Child>,
    /// Its address.
    pub host: String,
    /// Its port.
    pub port: u16,
}

/// The `redis-server` binary, if installed.
pub fn binary() -> Option<String> {
    let found = Command::new("sh")
        .args(["-c", "command -v redis-server"])
        .output()
        .ok()?;
    let path = String::from_utf8(found.stdout).ok()?.trim().to_owned();
    (!path.is_empty()).then_some(path)
}

/// Starts one, or says why the test is skipped.
pub fn start() -> Option<RedisServer> {
    start_on("127.0.0.1")
}

/// Starts one listening on `host` (all interfaces for `0.0.0.0`).
pub fn start_on(host: &str) -> Option<RedisServer> {
    let Some(bin) = binary() else {
        eprintln!(
            "SKIP: redis-server not found (scripts/test.sh installs it: apt-get install -y redis-server)"
        );
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = RedisServer {
        child: None,
        host: if host == "0.0.0.0" {
            "127.0.0.1".into()
        } else {
            host.into()
        },
        port,
    };
    s.launch(&bin, host);
    Some(s)
}

impl RedisServer {
    fn launch(&mut self, bin: &str, bind: &str) {
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", bind])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.try_cmd(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://host:port`.
    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.host, self.port)
    }

    /// Kills it (SIGKILL: nothing saved).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let bin = binary().expect("redis-server");
        let bind = self.host.clone();
        self.launch(&bin, &bind);
    }

    /// Runs a command; its first reply line (`+OK`, `:3`, `$5` …).
    pub fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd(args)
            .unwrap_or_else(|| panic!("redis command {args:?} failed"))
    }

    /// Runs a command and reads an integer reply.
    pub fn int(&self, args: &[&str]) -> i64 {
        let line = self.cmd(args);
        line.strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{args:?}: not an integer reply: {line}"))
    }

    fn try_cmd(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect((self.host.as_str(), self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
