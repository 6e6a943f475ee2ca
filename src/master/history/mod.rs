//! Room history and lossless recovery (issue 10): per-room streams with an epoch and a
//! `seq`, a bounded ring of recent messages, a global memory budget, recovery and history
//! queries, and the file that carries it all across a graceful master restart.
//!
//! Pure bookkeeping with time passed in; the master's loop owns one [`HistoryStore`]
//! (through `recall`), orders publishes of rooms with history through it, and sends the
//! frames. The out-of-the-box settings and why are in `crate::defaults`.
//!
//! # Layout
//! - `epoch`: the random token naming one life of a stream.
//! - `stream`: one room's position and ring.
//! - `query`: recovery (all or nothing) and history pages.
//! - `store`: all streams, the budget, the counters.
//! - `format` / `persist`: the `history.bin` layout and its safe writing and loading.

mod epoch;
mod format;
pub mod persist;
mod query;
mod store;
mod stream;

pub use epoch::Epoch;
pub use query::{QueryError, Recovery, Since};
pub use store::{HistoryStats, HistoryStore, Position};
// The rest of the surface, used by the module's tests.
#[cfg(test)]
pub use {
    query::Refusal,
    store::{ROOM_OVERHEAD, Swept},
    stream::{Cause, Message},
};

#[cfg(test)]
mod tests;
