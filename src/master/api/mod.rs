//! The server API (`--api ADDR`, off by default): an HTTP listener on the master for the
//! application's backend, JSON in and out, `POST /api/<method>`. This file owns the
//! listener, the routing and the authentication; the methods are in `methods`, errors in
//! `errors`, idempotency keys in `idempotency`, presence in `directory`, and what the
//! supervisor's loop is asked in `calls`.
//!
//! Every request must carry `Authorization: apikey KEY`, compared in constant time. The
//! API runs on the master's single-threaded runtime like the admin listener and only talks
//! to the loop through [`Handle`] (a oneshot reply per call, never a wait inside the
//! loop). It cannot take the master down: connections are capped, bodies are bounded
//! (413), every answer is built without panicking, and a stalled client is dropped.
//! TLS is the reverse proxy's job.

pub mod calls;
mod directory;
mod errors;
pub mod idempotency;
mod methods;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::handle::Handle;
use crate::config::{ApiKey, ApiSettings};
use errors::ApiError;

/// Most API connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 256;

/// How long one request may take to arrive in full (headers and body).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the API listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen for the server API on {addr}: {source}; choose another address with --api ADDR (WSFLEET_API, `api` in the config file) or turn it off with --api off"
)]
pub struct BindError {
    /// The address asked for.
    addr: SocketAddr,
    /// The OS error.
    source: std::io::Error,
}

/// Binds the API address (before any worker starts, so a taken port fails fast).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, BindError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| BindError { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| BindError { addr, source })?;
    Ok(listener)
}

/// What every request handler needs.
struct Api {
    /// The supervisor's loop.
    master: Handle,
    /// The key requests must carry.
    key: ApiKey,
    /// Largest body.
    max_body_bytes: usize,
}

/// Accepts API connections forever.
pub async fn serve(listener: tokio::net::TcpListener, master: Handle, settings: ApiSettings) {
    let api = Rc::new(Api {
        master,
        key: settings.key,
        max_body_bytes: settings.max_body_bytes,
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: do not spin.
                tracing::warn!(error = %e, "server API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let api = api.clone();
        tokio::task::spawn_local(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.answer(req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .max_buf_size(64 * 1024);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            // A backend keeps its connection for many requests; an idle one goes after a while.
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(300), conn).await {
                tracing::debug!(error = %e, "server API connection ended with an error");
            }
        });
    }
}

impl Api {
    async fn answer(&self, req: Request<Incoming>) -> Response<String> {
        let (status, body) = match self.route(req).await {
            Ok(v) => (StatusCode::OK, v),
            Err(e) => {
                tracing::debug!(code = e.code(), error = %e, "server API request refused");
                (e.status(), e.body())
            }
        };
        let text = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
        let mut res = Response::new(text);
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("apikey"));
        }
        res
    }

    async fn route(&self, req: Request<Incoming>) -> Result<serde_json::Value, ApiError> {
        if !authorized(req.headers().get(header::AUTHORIZATION), &self.key) {
            return Err(ApiError::Unauthorized);
        }
        let path = req.uri().path().to_owned();
        let Some(name) = path.strip_prefix("/api/") else {
            return Err(ApiError::NotFound(path));
        };
        if !errors::METHODS.contains(&name) {
            return Err(ApiError::NotFound(path));
        }
        if req.method() != Method::POST {
            return Err(ApiError::MethodNotAllowed);
        }
        let too_large = ApiError::TooLarge {
            limit: self.max_body_bytes,
        };
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|n| n > self.max_body_bytes as u64) {
            return Err(too_large);
        }
        let body = Limited::new(req.into_body(), self.max_body_bytes);
        let body = match tokio::time::timeout(REQUEST_TIMEOUT, body.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large),
            Ok(Err(e)) => return Err(ApiError::BadRequest(format!("cannot read the body: {e}"))),
            Err(_) => {
                return Err(ApiError::BadRequest(format!(
                    "the body did not arrive within {REQUEST_TIMEOUT:?}"
                )));
            }
        };
        methods::call(&self.master, name, &body).await
    }
}

/// Whether `header` is `apikey KEY` with the right key (compared in constant time).
fn authorized(header: Option<&HeaderValue>, key: &ApiKey) -> bool {
    let Some(given) = header.and_then(|h| h.as_bytes().strip_prefix(b"apikey ")) else {
        return false;
    };
    given.ct_eq(key.0.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_key_after_apikey_is_authorized() {
        let key = ApiKey("0123456789abcdef".into());
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(authorized(Some(&h("apikey 0123456789abcdef")), &key));
        assert!(!authorized(Some(&h("apikey 0123456789abcdeF")), &key));
        assert!(!authorized(Some(&h("apikey 0123456789abcde")), &key));
        assert!(!authorized(Some(&h("Bearer 0123456789abcdef")), &key));
        assert!(!authorized(Some(&h("0123456789abcdef")), &key));
        assert!(!authorized(None, &key));
    }
}
