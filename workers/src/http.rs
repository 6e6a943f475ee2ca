//! The HTTP side of a worker (hyper, HTTP/1.1): routes, the WebSocket upgrade, and the
//! hand-over of the upgraded socket to `/ws` or `/echo`.
//!
//! Routes: `GET /` (the chat page), `GET /health`, `GET /stats`, and the WebSocket
//! endpoints `/ws` and `/echo`. The upgrade answers a permessage-deflate offer
//! (`crate::deflate::offer`) unless `--compression off`. The upgrade hands the raw `TcpStream` back from hyper, so
//! an open WebSocket keeps no HTTP state.
//!
//! An upgrade is checked in this order: WebSocket headers (400/405/426), Origin (403),
//! the connection token (401 with `X-Wsfleet-Auth-Error: <reason>`, see `auth::source`),
//! the per-IP connect rate and the fleet-wide per-user and per-IP connection limits (429
//! with `X-Wsfleet-Limit: rate|ip|user`; the upgrade waits for the master's count, 503 if
//! it does not come in time, see `admission`), then the worker's own capacity (503).
//!
//! hyper serves on an [`UpgradeIo`]: the 101 answer is held back and queued ahead of the
//! connection's first frames, so the answer and `welcome` leave in one write.

use std::convert::Infallible;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::admission::{Admission, Admitted, Refusal};
use crate::auth::claims::Identity;
use crate::conn::{ConnTask, Driver};
use crate::deflate::Agreed;
use crate::pubsub::{rooms::Rooms, session::Session};
use crate::upgrade_io::{Hold, UpgradeIo};
use crate::worker::{Refused, Worker};
use crate::{assets, echo};

/// Every response body here is one in-memory chunk.
pub type Body = Full<Bytes>;

/// The response header naming why a token was refused.
const AUTH_ERROR_HEADER: &str = "x-wsfleet-auth-error";
/// The response header naming which connection limit refused an upgrade.
const LIMIT_HEADER: &str = "x-wsfleet-limit";

/// Serves HTTP on one accepted connection from `peer` until it closes or upgrades (to
/// `/ws`, whose sessions use `rooms`, or `/echo`).
pub(crate) async fn serve_connection(rooms: Rc<Rooms>, stream: TcpStream, peer: IpAddr) {
    let _open = rooms.worker().http_guard();
    let timeout = Duration::from_millis(rooms.worker().settings.handshake_timeout_ms);
    let hold = Hold::default();
    let io = UpgradeIo::new(stream, hold.clone());
    let service = hyper::service::service_fn(move |req| {
        let (rooms, hold) = (rooms.clone(), hold.clone());
        async move { Ok::<_, Infallible>(route(&rooms, req, peer, &hold).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(16 * 1024);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Answers one request; `hold` is told when the answer is a 101 (see [`UpgradeIo`]).
async fn route(
    rooms: &Rc<Rooms>,
    req: Request<Incoming>,
    peer: IpAddr,
    hold: &Hold,
) -> Response<Body> {
    let worker = rooms.worker();
    match req.uri().path() {
        "/ws" => upgrade(rooms, req, peer, true, hold).await,
        "/echo" => upgrade(rooms, req, peer, false, hold).await,
        "/health" => get_only(&req).unwrap_or_else(|| health(worker)),
        "/stats" => get_only(&req).unwrap_or_else(|| stats(worker)),
        "/" | "/index.html" => get_only(&req).unwrap_or_else(|| {
            let mut res = text(StatusCode::OK, assets::INDEX_HTML);
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            // Revalidate every time: a reload may have upgraded the page with the binary.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(
                header::ETAG,
                HeaderValue::from_str(assets::index_etag())
                    .unwrap_or(HeaderValue::from_static("\"0\"")),
            );
            if req
                .headers()
                .get(header::IF_NONE_MATCH)
                .map(HeaderValue::as_bytes)
                == Some(assets::index_etag().as_bytes())
            {
                *res.status_mut() = StatusCode::NOT_MODIFIED;
                *res.body_mut() = Body::default();
            }
            res
        }),
        "/favicon.ico" => {
            let mut res = text(StatusCode::OK, assets::FAVICON_SVG);
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            );
            res
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: wsfleet serves /, /ws, /echo, /health and /stats\n",
        ),
    }
}

fn get_only(req: &Request<Incoming>) -> Option<Response<Body>> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return None;
    }
    let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(res)
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A JSON response that is never cached (also used by the master's admin listener).
pub fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn health(worker: &Worker) -> Response<Body> {
    let (status, state) = match worker.draining() {
        None => (StatusCode::OK, "serving"),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
    };
    let body = serde_json::json!({
        "status": state,
        "slot": worker.slot,
        "generation": worker.generation,
        "pid": worker.pid,
        "connections": worker.counters.connections_current.get(),
    });
    json(status, body.to_string())
}

fn stats(worker: &Worker) -> Response<Body> {
    let body = serde_json::json!({
        "slot": worker.slot,
        "generation": worker.generation,
        "pid": worker.pid,
        "draining": worker.draining().is_some(),
        "counters": worker.counters.snapshot(),
    });
    json(StatusCode::OK, body.to_string())
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Whether `key` is the base64 of 16 bytes (RFC 6455 §4.1): 22 base64 characters and
/// `==`.
fn valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key[22..] == *b"=="
        && key[..22]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

async fn upgrade(
    rooms: &Rc<Rooms>,
    mut req: Request<Incoming>,
    peer: IpAddr,
    pubsub: bool,
    hold: &Hold,
) -> Response<Body> {
    let worker = rooms.worker();
    let h = req.headers();
    if !has_token(h, header::CONNECTION, "upgrade") || !has_token(h, header::UPGRADE, "websocket") {
        let mut res = text(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket: connect with a WebSocket client (ws://host/ws)\n",
        );
        res.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        return res;
    }
    if req.version() != hyper::Version::HTTP_11 {
        return text(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs HTTP/1.1 (RFC 6455 §4.1)\n",
        );
    }
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade must be a GET\n",
        );
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut res = text(
            StatusCode::BAD_REQUEST,
            "unsupported WebSocket version; use 13\n",
        );
        res.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return res;
    }
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    if !valid_key(key.as_bytes()) {
        return text(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be the base64 of 16 random bytes (24 characters)\n",
        );
    }
    let origins = &worker.settings.allowed_origins;
    if !origins.is_empty() {
        let origin = h
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("");
        if !origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            crate::counters::add(&worker.counters.rejected_origin, 1);
            return text(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
    }
    let accept = derive_accept_key(key.as_bytes());
    let identity = match worker.auth.identify_request(&req) {
        Ok(identity) => identity,
        Err(e) => {
            crate::counters::add(&worker.counters.rejected_auth, 1);
            tracing::debug!(reason = e.reason(), error = %e, "upgrade refused: connection token");
            let mut res = text(
                StatusCode::UNAUTHORIZED,
                "the connection token was refused; the X-Wsfleet-Auth-Error header says why\n",
            );
            res.headers_mut()
                .insert(AUTH_ERROR_HEADER, HeaderValue::from_static(e.reason()));
            return res;
        }
    };
    // Held here while the master counts the fleet-wide limits (only when one is set).
    let admitted = match Admission::admit(worker, peer, identity.user_id()).await {
        Ok(admitted) => admitted,
        Err(Refusal::Limited(limited)) => {
            crate::counters::add(&worker.counters.rejected_limit, 1);
            let (name, body) = limited.describe();
            let mut res = text(StatusCode::TOO_MANY_REQUESTS, body);
            let h = res.headers_mut();
            h.insert(LIMIT_HEADER, HeaderValue::from_static(name));
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return res;
        }
        Err(Refusal::Unanswered) => {
            let mut res = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the connection limits could not be checked in time; retry\n",
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return res;
        }
    };
    if let Err(refused) = worker.reserve_connection() {
        let body = match refused {
            Refused::Draining => "this worker is shutting down; retry\n",
            Refused::Full => "this worker is at its connection limit; retry later\n",
        };
        let mut res = text(StatusCode::SERVICE_UNAVAILABLE, body);
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return res;
    }
    let deflate = worker
        .settings
        .compression
        .then(|| {
            let offers = h.get_all(header::SEC_WEBSOCKET_EXTENSIONS).iter();
            crate::deflate::negotiate(offers.filter_map(|v| v.to_str().ok()))
        })
        .flatten();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let rooms = rooms.clone();
    tokio::task::spawn_local(async move {
        match take_stream(on_upgrade.await) {
            Some((stream, answer, early)) => {
                let client = Client { identity, admitted };
                let bytes = Handshake { answer, early };
                start_websocket(&rooms, stream, bytes, pubsub, client, deflate);
            }
            None => rooms.worker().release_connection(),
        }
    });
    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(v) = deflate.and_then(|a| HeaderValue::from_str(&a.header()).ok()) {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    hold.hold();
    res
}

/// The raw socket behind a completed upgrade, the 101 answer hyper wrote (held, not yet
/// sent) and the bytes the client sent after its request. `read_buf` is a slice of
/// hyper's 8 KiB read buffer: the bytes are copied so the buffer is freed now, not when
/// the connection ends.
fn take_stream(
    upgraded: hyper::Result<hyper::upgrade::Upgraded>,
) -> Option<(TcpStream, Vec<u8>, Vec<u8>)> {
    match upgraded.map(|u| u.downcast::<TokioIo<UpgradeIo>>()) {
        Ok(Ok(parts)) => {
            let (stream, answer) = parts.io.into_inner().into_parts();
            Some((stream, answer, parts.read_buf.to_vec()))
        }
        Ok(Err(_)) => {
            tracing::error!("upgraded connection is not a TCP stream; dropping it");
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade did not complete");
            None
        }
    }
}

/// Who an upgraded connection is, decided at the upgrade.
pub(crate) struct Client {
    /// The token's bearer, or anonymous.
    pub identity: Identity,
    /// Its place in the per-user and per-IP counts (None when no limit is on).
    pub admitted: Option<Box<Admitted>>,
}

/// The HTTP bytes around an upgrade that the WebSocket takes over.
struct Handshake {
    /// The 101 answer, still to be written (ahead of every frame).
    answer: Vec<u8>,
    /// What the client sent after its request.
    early: Vec<u8>,
}

/// Starts the connection's own task. It is spawned on its own (not awaited here) so the
/// long-lived task is only the small [`ConnTask`], without the upgrade's state.
/// `bytes`: the held 101 answer (queued first) and the client's early bytes; `client`: who the connection is (its token) and its admission; `deflate`: the
/// permessage-deflate agreement, if the client offered it and we accepted.
fn start_websocket(
    rooms: &Rc<Rooms>,
    stream: TcpStream,
    bytes: Handshake,
    pubsub: bool,
    client: Client,
    deflate: Option<Agreed>,
) {
    let worker = rooms.worker();
    let window = deflate.map_or(0, |a| a.window_bits());
    let conn = worker.open(stream, pubsub, window, bytes.answer);
    let driver = Driver::new(
        conn,
        bytes.early,
        worker.ws_config.clone(),
        worker.settings.outbox_limit_bytes,
        deflate.is_some(),
    );
    if pubsub {
        let session = Session::start(rooms, driver.conn(), client);
        tokio::task::spawn_local(ConnTask::new(rooms.clone(), driver, session));
    } else {
        let echo = echo::Echo {
            _admitted: client.admitted,
        };
        tokio::task::spawn_local(ConnTask::new(worker.clone(), driver, echo));
    }
}

#[cfg(test)]
mod tests {
    use super::valid_key;

    #[test]
    fn a_key_is_the_base64_of_16_bytes() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(valid_key(b"AAAAAAAAAAAAAAAAAAAAAA=="));
        for bad in [
            &b""[..],
            b"x",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZQ=",
            b"dGhlIHNhbXBsZSBub25jZQ===",
            b"dGhlIHNhbXBsZSBub25j!Q==",
            b"dGhlIHNhbXBsZSBub25jZQ\r\n",
            b"dGhlIHNhbXBsZSBub25jZQ==dGhl",
        ] {
            assert!(!valid_key(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
