//! The worker's accept loop, and what it does when the process is out of descriptors.
//!
//! Past the open-file limit `accept` fails with EMFILE (or ENFILE, system-wide) and the
//! connection stays queued, so its client would hang until a descriptor frees up. The loop
//! keeps one descriptor in reserve (`/dev/null`): out of descriptors, it gives the reserve
//! up, accepts the waiting connection, answers `503` and closes it, and takes the reserve
//! back — every client gets a fast answer. Such refusals are logged once per
//! [`LOG_EVERY`], with their count, not once per attempt.
//!
//! [`fit_open_file_limit`] lowers `max_connections` at start-up to what the limit the
//! worker got can hold, so a default configuration answers 503 at the limit instead of
//! reaching it.

use std::fs::File;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::net::TcpListener;

use crate::counters;
use crate::ipc::WorkerSettings;
use crate::pubsub::rooms::Rooms;

/// Descriptors a worker needs besides its WebSockets: stdio, the listening socket, the
/// master link, the runtime's epoll and wakers, the reserve, handshakes in progress.
pub const SPARE_FDS: u64 = 64;

/// Shortest time between two log lines about refused or failed accepts.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// How long to wait after an accept error that is not about descriptors.
const RETRY_AFTER_ERROR: Duration = Duration::from_millis(50);

/// What a client accepted past the open-file limit reads before the close.
const OUT_OF_FDS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Type: text/plain\r\nContent-Length: 45\r\nConnection: close\r\n\r\n\
this worker is out of file descriptors; retry\n";

/// `settings` with `max_connections` lowered, if needed, to fit the open-file limit this
/// process got (minus [`SPARE_FDS`]); says so in the log when it lowers it.
pub fn fit_open_file_limit(mut settings: WorkerSettings) -> WorkerSettings {
    let Ok((soft, _)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    else {
        return settings;
    };
    let fits = fits(soft);
    if (settings.max_connections as u64) > fits {
        tracing::info!(
            open_file_limit = soft,
            configured = settings.max_connections,
            max_connections = fits,
            "max_connections lowered to fit the open-file limit (raise the limit to allow more)"
        );
        settings.max_connections = usize::try_from(fits).unwrap_or(usize::MAX);
    }
    settings
}

/// WebSockets that fit in an open-file limit of `soft` descriptors.
fn fits(soft: u64) -> u64 {
    soft.saturating_sub(SPARE_FDS).max(1)
}

/// Rate-limited logging of accept problems: the first one at once, then a summary at
/// most once per [`LOG_EVERY`].
struct Throttle {
    /// When the last line was logged.
    last: Option<Instant>,
    /// Problems since that line.
    unlogged: u64,
}

impl Throttle {
    /// Counts one problem; true when it should be logged now (with [`Self::unlogged`]).
    fn tick(&mut self, now: Instant) -> bool {
        self.unlogged += 1;
        match self.last {
            Some(last) if now.duration_since(last) < LOG_EVERY => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }

    /// The count to report, reset.
    fn take(&mut self) -> u64 {
        std::mem::take(&mut self.unlogged)
    }
}

fn out_of_fds(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE
    )
}

/// Whether sockets accepted from `listener` come with TCP_NODELAY already. Linux copies it
/// from the listening socket, on which the master sets it (`src/master/listeners.rs`): then
/// the `setsockopt` per accepted connection (one system call per connect) is not needed.
fn accepted_have_nodelay(listener: &TcpListener) -> bool {
    use nix::sys::socket::{getsockopt, sockopt::TcpNoDelay};
    getsockopt(listener, TcpNoDelay).unwrap_or(false)
}

/// Accepts until the worker stops accepting, each connection served by [`crate::http`].
pub async fn run(rooms: Rc<Rooms>, listener: TcpListener) {
    let set_nodelay = !accepted_have_nodelay(&listener);
    let mut reserve = File::open("/dev/null").ok();
    let mut refused = Throttle {
        last: None,
        unlogged: 0,
    };
    let mut failed = Throttle {
        last: None,
        unlogged: 0,
    };
    loop {
        tokio::select! {
            biased;
            _ = rooms.worker().stop_accepting.notified() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if set_nodelay {
                        let _ = stream.set_nodelay(true);
                    }
                    let serve = crate::http::serve_connection(rooms.clone(), stream, peer.ip());
                    tokio::task::spawn_local(serve);
                }
                Err(e) if out_of_fds(&e) && reserve.is_some() => {
                    drop(reserve.take());
                    // The connection that hit the limit is waiting: one poll accepts it.
                    if let Some(Ok((stream, _))) = listener.accept().now_or_never() {
                        let _ = stream.try_write(OUT_OF_FDS);
                        counters::add(&rooms.worker().counters.rejected_full, 1);
                    }
                    reserve = File::open("/dev/null").ok();
                    if refused.tick(Instant::now()) {
                        tracing::warn!(
                            error = %e,
                            refused = refused.take(),
                            "out of file descriptors: answering new connections with 503 \
                             (raise the open-file limit or lower --max-connections)"
                        );
                    }
                }
                Err(e) => {
                    // A transient error, or out of descriptors with no reserve: the
                    // connection stays queued; back off briefly instead of spinning.
                    if failed.tick(Instant::now()) {
                        tracing::warn!(error = %e, failures = failed.take(), "accept failed; retrying");
                    }
                    tokio::time::sleep(RETRY_AFTER_ERROR).await;
                }
            },
        }
    }
    tracing::info!("stopped accepting; the slot's next worker accepts from here on");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_problem_then_once_per_interval_with_a_count() {
        let mut t = Throttle {
            last: None,
            unlogged: 0,
        };
        let t0 = Instant::now();
        assert!(t.tick(t0));
        assert_eq!(t.take(), 1);
        for ms in [50, 100, 9_000] {
            assert!(!t.tick(t0 + Duration::from_millis(ms)));
        }
        assert!(t.tick(t0 + LOG_EVERY));
        assert_eq!(t.take(), 4);
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert!(!accepted_have_nodelay(&plain));
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_nodelay(true).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(8).unwrap();
        assert!(accepted_have_nodelay(&listener));
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "the kernel copies TCP_NODELAY to accepted sockets (what skipping setsockopt relies on)"
        );
    }

    #[test]
    fn max_connections_fits_the_limit() {
        assert_eq!(fits(1024), 1024 - SPARE_FDS);
        assert_eq!(fits(10), 1);
        let lowered = fit_open_file_limit(WorkerSettings {
            max_connections: usize::MAX,
            ..WorkerSettings::default()
        });
        let (soft, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(lowered.max_connections as u64, fits(soft));
        let kept = fit_open_file_limit(WorkerSettings {
            max_connections: 1,
            ..WorkerSettings::default()
        });
        assert_eq!(kept.max_connections, 1);
    }
}
