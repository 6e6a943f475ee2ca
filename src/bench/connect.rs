//! Opening connections: parsing the target URL, raising and checking the open-files limit,
//! spreading sockets over local source addresses, pacing (ramp + bounded concurrency),
//! the WebSocket handshake, joining a room, and classifying why any of that failed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use wsfleet_worker::protocol::client;

use super::args::ArgError;
use super::stream::{self, BenchStream};
use super::wire;

/// A client WebSocket over plain TCP (counted, and inflating with `--deflate`).
pub type Ws = WebSocketStream<BenchStream>;

/// Connections whose handshake answer accepted permessage-deflate.
pub static DEFLATE_NEGOTIATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// File descriptors kept back for the runtime, stdio, /proc reads and the like.
const FD_RESERVE: u64 = 64;

/// Where to connect, resolved once.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given; sent in the handshake (Host header and path).
    pub url: String,
    /// The resolved server address; the only address this tool ever connects to.
    pub addr: SocketAddr,
    /// Local addresses to bind before connecting, round-robin; empty = let the kernel choose.
    pub sources: Vec<Ipv4Addr>,
    /// Further servers (`--also-url`): connection `idx` goes to entry `idx mod (1 + len)`,
    /// 0 being `url`/`addr`.
    pub others: Vec<(String, SocketAddr)>,
    /// Offer permessage-deflate (`--deflate`) and inflate what comes compressed.
    pub deflate: bool,
}

/// Splits `ws://HOST:PORT/PATH` into host, port and path.
pub fn parse_url(url: &str) -> Result<(String, u16, String), ArgError> {
    let bad = |why| ArgError::BadUrl {
        url: url.to_owned(),
        why,
    };
    let rest = if let Some(r) = url.strip_prefix("ws://") {
        r
    } else if url.starts_with("wss://") {
        return Err(bad("wss:// (TLS) is not supported, use ws://"));
    } else {
        return Err(bad("must start with ws://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(bad("missing host"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in host"))?;
        (h, p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("bad port"))?,
    };
    Ok((host.to_owned(), port, path.to_owned()))
}

/// The source addresses to spread over: 127.0.0.1..=127.0.0.N when the target is loopback
/// IPv4, else none.
pub fn source_addrs(target: IpAddr, n: u32) -> Vec<Ipv4Addr> {
    match target {
        IpAddr::V4(v4) if v4.octets()[0] == 127 && n > 1 => (1..=n.min(254))
            .map(|i| Ipv4Addr::new(127, 0, 0, i as u8))
            .collect(),
        _ => Vec::new(),
    }
}

impl Target {
    /// Parses and resolves the URL.
    pub async fn resolve(url: &str, sources: u32) -> anyhow::Result<Target> {
        let (host, port, _path) = parse_url(url)?;
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| anyhow::anyhow!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{host} resolves to no address"))?;
        Ok(Target {
            url: url.to_owned(),
            addr,
            sources: source_addrs(addr.ip(), sources),
            others: Vec::new(),
            deflate: false,
        })
    }

    /// Opens TCP (from source address number `idx` mod N) and does the WebSocket handshake,
    /// all within `timeout`.
    pub async fn connect(
        &self,
        idx: usize,
        cfg: WebSocketConfig,
        timeout: Duration,
    ) -> Result<Ws, ConnError> {
        self.connect_to(None, idx, cfg, timeout).await
    }

    /// [`connect`](Self::connect), presenting `token` (a JWT) as the URL's `token` query
    /// parameter when given.
    async fn connect_to(
        &self,
        token: Option<&str>,
        idx: usize,
        cfg: WebSocketConfig,
        timeout: Duration,
    ) -> Result<Ws, ConnError> {
        match tokio::time::timeout(timeout, self.connect_inner(token, idx, cfg)).await {
            Ok(r) => r,
            Err(_) => Err(ConnError::Timeout),
        }
    }

    /// [`connect`](Self::connect), then joins `room` and waits for `joined` (each step
    /// within `timeout`).
    pub async fn connect_joined(
        &self,
        idx: usize,
        cfg: WebSocketConfig,
        room: &str,
        timeout: Duration,
    ) -> Result<Ws, ConnError> {
        self.connect_joined_as(idx, cfg, room, timeout, None).await
    }

    /// [`connect_joined`](Self::connect_joined), presenting `token` (a JWT) as the
    /// URL's `token` query parameter when given.
    pub async fn connect_joined_as(
        &self,
        idx: usize,
        cfg: WebSocketConfig,
        room: &str,
        timeout: Duration,
        token: Option<&str>,
    ) -> Result<Ws, ConnError> {
        let mut ws = self.connect_to(token, idx, cfg, timeout).await?;
        join(&mut ws, room, timeout).await?;
        Ok(ws)
    }

    async fn connect_inner(
        &self,
        token: Option<&str>,
        idx: usize,
        cfg: WebSocketConfig,
    ) -> Result<Ws, ConnError> {
        let (base, addr) = match idx % (1 + self.others.len()) {
            0 => (self.url.as_str(), self.addr),
            i => (self.others[i - 1].0.as_str(), self.others[i - 1].1),
        };
        let with_token;
        let url = match token {
            Some(token) => {
                let sep = if base.contains('?') { '&' } else { '?' };
                with_token = format!("{base}{sep}token={token}");
                with_token.as_str()
            }
            None => base,
        };
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(ConnError::io)?;
        if !self.sources.is_empty() {
            let src = self.sources[idx % self.sources.len()];
            sock.set_reuseaddr(true).map_err(ConnError::io)?;
            sock.bind(SocketAddr::new(IpAddr::V4(src), 0))
                .map_err(ConnError::io)?;
        }
        let stream = sock.connect(addr).await.map_err(ConnError::io)?;
        // One small message in flight per connection: Nagle would add delayed-ACK stalls.
        stream.set_nodelay(true).map_err(ConnError::io)?;
        let stream = BenchStream::new(
            stream,
            self.deflate,
            cfg.max_message_size.unwrap_or(usize::MAX),
        );
        let mut req = url.into_client_request().map_err(ConnError::ws)?;
        if self.deflate {
            req.headers_mut().insert(
                "Sec-WebSocket-Extensions",
                http::HeaderValue::from_static(stream::OFFER),
            );
        }
        let (ws, resp) = tokio_tungstenite::client_async_with_config(req, stream, Some(cfg))
            .await
            .map_err(ConnError::ws)?;
        if resp.headers().contains_key("Sec-WebSocket-Extensions") {
            DEFLATE_NEGOTIATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(ws)
    }
}

/// WebSocket settings for the tool's connections. `read` is the read buffer, allocated up front
/// per connection (small for idle/churn, larger for echo/fan-out); writes go out at once
/// (`write_buffer_size` 0) unless the caller batches with `feed`; incoming messages are capped
/// at twice the largest message the tool would expect.
pub fn ws_config(read: usize, max_message: usize) -> WebSocketConfig {
    let max = max_message.max(64 << 10);
    WebSocketConfig::default()
        .read_buffer_size(read)
        .write_buffer_size(0)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Why a connection attempt (or an established connection) failed, by kind.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The server actively refused the TCP connection (ECONNREFUSED).
    #[error("connection refused")]
    Refused,
    /// The connection was reset, hit a broken pipe or an unexpected EOF.
    #[error("connection reset: {0}")]
    Reset(String),
    /// The HTTP upgrade failed: a status other than 101, or a malformed handshake.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// The server answered with an `error` message or closed with a close frame.
    #[error("server said: {0}")]
    Server(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Failure classes as counted by churn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// ECONNREFUSED.
    Refused,
    /// Reset, EPIPE, EOF.
    Reset,
    /// Bad HTTP upgrade.
    Handshake,
    /// No `joined` in time.
    Timeout,
    /// The rest.
    Other,
}

impl ConnError {
    /// Classifies an I/O error.
    pub fn io(e: io::Error) -> ConnError {
        use io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => ConnError::Refused,
            K::ConnectionReset | K::BrokenPipe | K::UnexpectedEof | K::ConnectionAborted => {
                ConnError::Reset(e.to_string())
            }
            K::TimedOut => ConnError::Timeout,
            _ => ConnError::Other(e.to_string()),
        }
    }

    /// Classifies a tungstenite error (during the handshake or later).
    pub fn ws(e: WsError) -> ConnError {
        match e {
            WsError::Io(e) => ConnError::io(e),
            WsError::Http(resp) => ConnError::Handshake(format!("HTTP status {}", resp.status())),
            WsError::HttpFormat(e) => ConnError::Handshake(e.to_string()),
            WsError::Protocol(
                ProtocolError::HandshakeIncomplete | ProtocolError::ResetWithoutClosingHandshake,
            ) => ConnError::Reset("closed without a complete handshake".into()),
            WsError::Protocol(p) => ConnError::Handshake(p.to_string()),
            WsError::ConnectionClosed | WsError::AlreadyClosed => {
                ConnError::Reset("connection closed".into())
            }
            e => ConnError::Other(e.to_string()),
        }
    }

    /// The churn failure class.
    pub fn kind(&self) -> FailKind {
        match self {
            ConnError::Refused => FailKind::Refused,
            ConnError::Reset(_) => FailKind::Reset,
            ConnError::Handshake(_) => FailKind::Handshake,
            ConnError::Timeout => FailKind::Timeout,
            ConnError::Server(_) | ConnError::Other(_) => FailKind::Other,
        }
    }
}

/// Sends `join` and reads until `joined` for that room, within `timeout`; other messages
/// (welcome, presence) are skipped.
pub async fn join(ws: &mut Ws, room: &str, timeout: Duration) -> Result<(), ConnError> {
    let fut = async {
        ws.send(Message::text(client::join(room, None)))
            .await
            .map_err(ConnError::ws)?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => match client::classify(t.as_str()) {
                    client::Kind::Joined => return Ok(()),
                    client::Kind::Error => return Err(ConnError::Server(wire::short(t.as_str()))),
                    _ => {}
                },
                Some(Ok(Message::Close(f))) => {
                    return Err(ConnError::Server(format!(
                        "closed: {}",
                        wire::close_text(f.as_ref())
                    )));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ConnError::ws(e)),
                None => return Err(ConnError::Reset("EOF before joined".into())),
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ConnError::Timeout),
    }
}

/// Paces connection opening: connection `i` of `n` may start at `start + ramp * i / n`, and at
/// most `concurrency` are being opened at once.
#[derive(Clone)]
pub struct Opener {
    /// When opening began.
    start: Instant,
    /// The ramp; zero = no spacing.
    ramp: Duration,
    /// How many connections are paced over the ramp.
    n: usize,
    /// Bounds concurrent opens.
    sem: Arc<Semaphore>,
}

impl Opener {
    /// A pacer for `n` connections.
    pub fn new(n: usize, ramp: Duration, concurrency: usize) -> Opener {
        Opener {
            start: Instant::now(),
            ramp,
            n: n.max(1),
            sem: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// Waits for connection `i`'s turn; hold the permit while opening (`None` only if the
    /// semaphore were closed, which it never is).
    pub async fn slot(&self, i: usize) -> Option<OwnedSemaphorePermit> {
        if !self.ramp.is_zero() {
            let at = self.start + self.ramp.mul_f64(i as f64 / self.n as f64);
            tokio::time::sleep_until(at).await;
        }
        self.sem.clone().acquire_owned().await.ok()
    }
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit and returns how many sockets this
/// process can have open (the soft limit minus a reserve).
pub fn raise_nofile() -> anyhow::Result<u64> {
    let limit = crate::sys::nofile::raise()
        .map_err(|e| anyhow::anyhow!("cannot read the open-file limit (RLIMIT_NOFILE): {e}"))?;
    Ok(limit.soft.saturating_sub(FD_RESERVE))
}

/// Fails clearly when `wanted` sockets do not fit in the open-files budget.
pub fn check_budget(wanted: u64, budget: u64, what: &str) -> anyhow::Result<()> {
    if wanted > budget {
        anyhow::bail!(
            "{what} needs {wanted} sockets but this process can open only {budget} \
             (RLIMIT_NOFILE hard limit minus {FD_RESERVE} reserved); ask for at most {budget}, \
             or run several bench processes"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("ws://127.0.0.1:8080/ws").unwrap(),
            ("127.0.0.1".into(), 8080, "/ws".into())
        );
        assert_eq!(
            parse_url("ws://localhost/echo").unwrap(),
            ("localhost".into(), 80, "/echo".into())
        );
        assert_eq!(
            parse_url("ws://[::1]:9/x").unwrap(),
            ("::1".into(), 9, "/x".into())
        );
        assert_eq!(parse_url("ws://h:1").unwrap().2, "/");
        assert!(parse_url("http://h:1/").is_err());
        assert!(
            parse_url("wss://h:1/")
                .unwrap_err()
                .to_string()
                .contains("TLS")
        );
        assert!(parse_url("ws://:1/").is_err());
        assert!(parse_url("ws://h:0/").is_err());
        assert!(parse_url("ws://h:99999/").is_err());
        assert!(parse_url("ws://h:x/").is_err());
    }

    #[test]
    fn sources_only_for_loopback_v4() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            source_addrs(lo, 3),
            vec![
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 3)
            ]
        );
        assert!(source_addrs(lo, 1).is_empty());
        assert!(source_addrs("10.0.0.1".parse().unwrap(), 8).is_empty());
        assert!(source_addrs("::1".parse().unwrap(), 8).is_empty());
    }

    #[test]
    fn budget() {
        assert!(check_budget(100, 100, "x").is_ok());
        let e = check_budget(30_000, 19_936, "idle")
            .unwrap_err()
            .to_string();
        assert!(e.contains("19936") && e.contains("30000"), "{e}");
    }

    #[test]
    fn classify_io() {
        assert_eq!(
            ConnError::io(io::ErrorKind::ConnectionRefused.into()).kind(),
            FailKind::Refused
        );
        assert_eq!(
            ConnError::io(io::ErrorKind::BrokenPipe.into()).kind(),
            FailKind::Reset
        );
        assert_eq!(
            ConnError::io(io::ErrorKind::UnexpectedEof.into()).kind(),
            FailKind::Reset
        );
        assert_eq!(
            ConnError::ws(WsError::ConnectionClosed).kind(),
            FailKind::Reset
        );
    }
}
