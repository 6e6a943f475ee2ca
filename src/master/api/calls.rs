//! What the server API asks the supervisor's loop, and what the loop answers: plain data
//! sent over the loop's event queue, each call with a oneshot reply. The loop never
//! waits for anything here; questions for the workers come back as receivers the API
//! awaits on its own time.

use tokio::sync::oneshot;
use wsfleet_worker::ipc::{QueryAnswer, WorkerQuery};
use wsfleet_worker::protocol::Since;

/// The fleet is not serving (starting or stopping): the API answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotServing;

/// Where the loop puts its answer.
pub type Reply<T> = oneshot::Sender<Result<T, NotServing>>;

/// One publish as the API received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The target room (validated).
    pub room: String,
    /// The message, as compact JSON text.
    pub data: String,
    /// The caller's idempotency key: a retry with the same key is answered from the
    /// first publish instead of being ordered again.
    pub key: Option<String>,
}

/// How a publish was ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The room's sequence number (None: a room without history and without members).
    pub seq: Option<u64>,
    /// The room's epoch, for a room with history.
    pub epoch: Option<String>,
    /// Whether this is the remembered answer to an earlier publish with the same key.
    pub duplicate: bool,
}

/// A server API call for the loop.
pub enum Call {
    /// Order these publishes, one after the other (a batch is contiguous in the order of
    /// every room it touches).
    Publish {
        /// The publishes, in order.
        items: Vec<Publish>,
        /// One answer per publish, in the same order.
        reply: Reply<Vec<Published>>,
    },
    /// A fleet-wide broadcast.
    Broadcast {
        /// The message, as compact JSON text.
        data: String,
        /// Answered once it is queued for every serving worker.
        reply: Reply<()>,
    },
    /// A page of a room's history.
    History {
        /// The room.
        room: String,
        /// Most messages.
        limit: usize,
        /// Page from this position.
        since: Option<Since>,
        /// Newest first.
        reverse: bool,
        /// The client protocol's `history` (or `error`) frame.
        reply: Reply<String>,
    },
    /// Ask every serving worker a question.
    Ask {
        /// The question.
        query: WorkerQuery,
        /// `(slot, answer to come)` per worker asked.
        reply: Reply<Vec<(u32, oneshot::Receiver<QueryAnswer>)>>,
    },
}
