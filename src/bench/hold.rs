//! Holding a joined connection open: `bench idle` and `bench join` read whatever the server
//! sends (so none is closed as a slow consumer) until told to stop, counting the connections
//! the server closes or resets meanwhile.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::connect::{ConnError, Ws};
use super::{FirstError, wire};

/// Counters of the held connections, shared by their tasks and the coordinator.
#[derive(Default)]
pub struct Counts {
    /// Connections that got `joined`.
    pub joined: AtomicU64,
    /// Connections whose connect or join failed.
    pub failed: AtomicU64,
    /// Connections the server closed or reset after joining.
    pub dropped: AtomicU64,
    /// For the summary.
    pub first_error: FirstError,
}

/// Reads `ws` until `stop_rx` changes (returns it, to be closed) or the server closes or
/// resets it: then notes why as `what` ("during hold"), counts it in `c.dropped` and returns
/// `None`. `on_frame` runs for every other frame received.
pub async fn hold(
    mut ws: Ws,
    stop_rx: &mut watch::Receiver<bool>,
    what: &str,
    c: &Counts,
    mut on_frame: impl FnMut(),
) -> Option<Ws> {
    loop {
        let m =
            tokio::select! { biased; _ = stop_rx.changed() => return Some(ws), m = ws.next() => m };
        match m {
            Some(Ok(Message::Close(f))) => {
                c.first_error.note(format_args!(
                    "closed by server {what}: {}",
                    wire::close_text(f.as_ref())
                ));
            }
            Some(Ok(_)) => {
                on_frame();
                continue;
            }
            Some(Err(e)) => c
                .first_error
                .note(format_args!("{what}: {}", ConnError::ws(e))),
            None => {}
        }
        c.dropped.fetch_add(1, Relaxed);
        return None;
    }
}
