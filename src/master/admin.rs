//! The master's admin HTTP listener (`--admin`, 127.0.0.1:9090 by default): `GET /metrics`
//! (Prometheus), `GET /health` (liveness: the master's loop answers) and `GET /ready`
//! (readiness: every slot has a ready worker and the last reload did not fail).
//!
//! It is separate from the public port on purpose: metrics and probes stay reachable when
//! the public port is saturated, and are not exposed to clients. It runs on the master's
//! single-threaded runtime, like everything else of the master; it only sends requests to
//! the supervisor's loop through a [`Handle`] (a scrape asks the workers for their
//! counters with a bounded wait) and renders the snapshot it gets back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;

use super::handle::Handle;
use super::readiness::readiness;

/// Why the admin listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Another process holds the address.
    #[error(
        "cannot listen for the admin endpoint (/metrics, /health, /ready) on {addr}: the address is already in use (another wsfleet?); choose another one with --admin ADDR (WSFLEET_ADMIN, `admin` in the config file) or turn it off with --admin off"
    )]
    InUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Any other bind failure (permission, no such address).
    #[error(
        "cannot listen for the admin endpoint on {addr}: {source}; choose another address with --admin ADDR or turn it off with --admin off"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Binds the admin address (before any worker starts, so a taken port fails fast).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, AdminError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            AdminError::InUse { addr }
        } else {
            AdminError::Bind { addr, source }
        }
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| AdminError::Bind { addr, source })?;
    Ok(listener)
}

/// Accepts admin connections forever.
pub async fn serve(listener: tokio::net::TcpListener, master: Handle) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: do not spin.
                tracing::warn!(error = %e, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let master = master.clone();
        tokio::task::spawn_local(async move {
            let service = hyper::service::service_fn(move |req| {
                let master = master.clone();
                async move { Ok::<_, Infallible>(route(&master, req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .max_buf_size(16 * 1024);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            // A scraper that keeps its connection open is fine; one that stalls is not.
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(300), conn).await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

/// The answers' body: small, complete strings.
type Body = String;

async fn route(master: &Handle, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/health" | "/ready") {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not found; try /metrics, /health or /ready"}),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "use GET"}),
        );
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    let view = match path {
        "/metrics" => master.view_with_counters().await.map(|(view, _)| view),
        _ => master.view().await,
    };
    let Some(view) = view else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "the master is exiting"}),
        );
    };
    match path {
        "/metrics" => {
            let mut res = Response::new(super::metrics::render(&view));
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(super::metrics::CONTENT_TYPE),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        "/health" => json(
            StatusCode::OK,
            &Health {
                status: "alive",
                pid: std::process::id(),
                phase: view.phase.name(),
                uptime_s: view.uptime_s,
            },
        ),
        _ => {
            let body = readiness(&view);
            let status = if body.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &body)
        }
    }
}

/// The liveness answer: answering at all proves the master's loop runs.
#[derive(Debug, Serialize)]
struct Health {
    /// Always `alive`.
    status: &'static str,
    /// The master's pid.
    pid: u32,
    /// `starting`, `running` or `stopping`.
    phase: &'static str,
    /// Seconds since the master started.
    uptime_s: f64,
}

/// A JSON answer that is never cached.
fn json(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(text)
        .unwrap_or_else(|_| Response::new(String::new()))
}
