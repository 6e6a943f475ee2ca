//! The master's admin HTTP listener (`--admin`, 127.0.0.1:9090 by default): `GET /metrics`
//! (Prometheus), `GET /health` (liveness: the master's loop answers) and `GET /ready`
//! (readiness: every slot has a ready worker and the last reload did not fail).
//!
//! It is separate from the public port on purpose: metrics and probes stay reachable when
//! the public port is saturated, and are not exposed to clients. It runs on the master's
//! single-threaded runtime, like everything else of the master; a scrape asks the workers
//! for their counters with a bounded wait and never holds the fleet state across an
//! `.await`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::time::Instant;

use super::fleet::{Master, Phase, WorkerState};

use wsfleet_worker::http::Body;

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
pub async fn serve(listener: tokio::net::TcpListener, master: Rc<Master>) {
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

async fn route(master: &Rc<Master>, req: Request<Incoming>) -> Response<Body> {
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
    match path {
        "/metrics" => {
            let text = super::metrics::render(master).await;
            let mut res = Response::new(Body::from(text));
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(super::metrics::CONTENT_TYPE),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        "/health" => json(StatusCode::OK, &health(master)),
        _ => {
            let (ready, body) = readiness(master);
            let status = if ready {
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

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Starting => "starting",
        Phase::Running => "running",
        Phase::Stopping => "stopping",
    }
}

fn health(master: &Master) -> Health {
    Health {
        status: "alive",
        pid: std::process::id(),
        phase: phase_name(master.state.borrow().phase),
        uptime_s: master.started.elapsed().as_secs_f64(),
    }
}

/// The readiness answer.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// Whether the fleet should get traffic.
    pub ready: bool,
    /// `starting`, `running` or `stopping`.
    pub phase: &'static str,
    /// Why it is not ready (empty when ready).
    pub reasons: Vec<String>,
    /// Rolling restarts.
    pub reload: ReloadState,
    /// One entry per slot.
    pub slots: Vec<SlotReadiness>,
}

/// The reload part of `/ready`.
#[derive(Debug, Serialize)]
pub struct ReloadState {
    /// Reloads started.
    pub reloads: u64,
    /// Whether one runs now.
    pub in_progress: bool,
    /// Outcome of the last one (none before the first).
    pub last_ok: Option<bool>,
}

/// One slot in `/ready`.
#[derive(Debug, Serialize)]
pub struct SlotReadiness {
    /// Slot index.
    pub slot: u32,
    /// Whether its current worker is ready.
    pub ready: bool,
    /// `ready`, `starting`, `draining`, `backoff` or `down`.
    pub state: &'static str,
    /// The current worker's pid.
    pub pid: Option<u32>,
    /// The slot's newest generation.
    pub generation: u64,
    /// Unplanned restarts so far.
    pub restarts: u64,
    /// Milliseconds until the next start attempt, while backing off.
    pub backoff_ms: Option<u64>,
    /// How the slot's last worker ended.
    pub last_exit: Option<String>,
}

/// Whether the fleet is ready, and the per-slot detail `/ready` shows.
pub fn readiness(master: &Master) -> (bool, Readiness) {
    let st = master.state.borrow();
    let now = Instant::now();
    let mut reasons = Vec::new();
    if st.phase != Phase::Running {
        reasons.push(format!("the master is {}", phase_name(st.phase)));
    }
    let slots: Vec<SlotReadiness> = st
        .slots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let current = s.current.and_then(|k| st.workers.get(&k));
            let backoff_ms = s
                .backoff_until
                .map(|t| t.saturating_duration_since(now).as_millis() as u64);
            let state = match (current, backoff_ms) {
                (Some(w), _) => w.state.name(),
                (None, Some(_)) => "backoff",
                (None, None) => "down",
            };
            let ready = current.is_some_and(|w| w.state == WorkerState::Ready);
            if !ready {
                reasons.push(format!("slot {i} has no ready worker ({state})"));
            }
            SlotReadiness {
                slot: i as u32,
                ready,
                state,
                pid: current.map(|w| w.pid),
                generation: s.generation,
                restarts: s.restarts,
                backoff_ms,
                last_exit: s.last_exit.clone(),
            }
        })
        .collect();
    if st.last_reload_ok == Some(false) {
        reasons.push(
            "the last reload failed (see the master's log); the fleet runs a mix of old and new workers until a reload succeeds"
                .into(),
        );
    }
    let ready = reasons.is_empty();
    let body = Readiness {
        ready,
        phase: phase_name(st.phase),
        reasons,
        reload: ReloadState {
            reloads: st.reloads,
            in_progress: st.reloading,
            last_ok: st.last_reload_ok,
        },
        slots,
    };
    (ready, body)
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    wsfleet_worker::http::json(status, text)
}
