//! The two read paths of a stream: recovery after a reconnect (all or nothing) and the
//! `history` request (a page of what is stored).
//!
//! `history` semantics, with `limit` capped by what is stored (0 = position only):
//! - no `since`, forward: the **oldest** `limit` stored messages, ascending;
//! - no `since`, `reverse`: the **newest** `limit`, newest first;
//! - `since` N, forward: the first `limit` messages after N (`N+1…`), ascending — paging
//!   forward from the last one seen;
//! - `since` N, `reverse`: the `limit` messages before N (`…N-1`), newest first — paging
//!   back from the oldest one seen.
//!
//! A page is never an error for missing messages: the caller compares the first `seq` with
//! N+1 if it needs completeness (that is what recovery is for). A `since` in another epoch
//! is refused ([`QueryError::EpochChanged`]), and one beyond the top is invalid.

use super::epoch::Epoch;
use super::stream::{Cause, Message, Stream};

/// Why a recovery was refused (the client gets `recovered:false` and reloads its state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client's epoch is not the room's: the stream it saw is gone.
    EpochChanged,
    /// Part of the gap has left history; the cause is that of the newest lost message.
    Evicted(Cause),
    /// The gap is longer than the recovery limit.
    TooLong {
        /// Messages missed.
        gap: u64,
        /// The limit.
        max: u64,
    },
    /// The gap's messages are larger together than one replay may be.
    TooLarge {
        /// Bytes of message data in the gap.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// The outcome of a join with `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Every missed message, in order (empty when nothing was missed).
    Recovered {
        /// The room's epoch (the client's).
        epoch: Epoch,
        /// The room's top `seq`; `messages` end there.
        top: u64,
        /// `since + 1 ..= top`.
        messages: Vec<Message>,
    },
    /// Nothing is replayed.
    NotRecovered {
        /// The room's current epoch, for the client's next `since`.
        epoch: Epoch,
        /// The room's top `seq`.
        top: u64,
        /// Why.
        reason: Refusal,
    },
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The room's epoch.
    pub epoch: Epoch,
    /// The room's top `seq`.
    pub top: u64,
    /// In the order the semantics above say.
    pub messages: Vec<Message>,
}

/// A request the caller must answer with an error frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The room keeps no history (its namespace sets `history_size = 0`).
    #[error("room {room:?} keeps no history")]
    HistoryOff {
        /// The room.
        room: String,
    },
    /// `since.seq` is past the room's top in the same epoch (`invalid_field`).
    #[error("since.seq {since} is beyond the room's last seq {top}")]
    SinceBeyondTop {
        /// What the client sent.
        since: u64,
        /// The room's top.
        top: u64,
    },
    /// A `history` page was asked from another epoch.
    #[error(
        "since.epoch is not the room's epoch {epoch}: the stream was reset, start again without since"
    )]
    EpochChanged {
        /// The room's epoch.
        epoch: Epoch,
        /// The room's top `seq`.
        top: u64,
    },
}

/// A position as a client sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since<'a> {
    /// The epoch the client saw.
    pub epoch: &'a str,
    /// The last `seq` it saw.
    pub seq: u64,
}

/// All-or-nothing recovery of `since.seq + 1 ..= top` from `stream`.
pub(super) fn recover(
    stream: &Stream,
    since: Since<'_>,
    recovery_max: u64,
    max_bytes: usize,
) -> Result<Recovery, QueryError> {
    let (epoch, top) = (stream.epoch.clone(), stream.top);
    let refuse = |reason| Recovery::NotRecovered {
        epoch: stream.epoch.clone(),
        top,
        reason,
    };
    if since.epoch != epoch.as_str() {
        return Ok(refuse(Refusal::EpochChanged));
    }
    if since.seq > top {
        return Err(QueryError::SinceBeyondTop {
            since: since.seq,
            top,
        });
    }
    let gap = top - since.seq;
    if gap > recovery_max {
        return Ok(refuse(Refusal::TooLong {
            gap,
            max: recovery_max,
        }));
    }
    if gap > 0 && stream.first_seq() > since.seq + 1 {
        // Every loss records its cause, so `None` cannot happen with a gap; Size is the
        // least surprising answer if it ever did.
        let cause = stream.last_loss.unwrap_or(Cause::Size);
        return Ok(refuse(Refusal::Evicted(cause)));
    }
    let messages: Vec<Message> = stream.range(since.seq + 1, top).collect();
    let bytes = messages.iter().map(|m| m.data.len()).sum();
    if bytes > max_bytes {
        return Ok(refuse(Refusal::TooLarge {
            bytes,
            max: max_bytes,
        }));
    }
    Ok(Recovery::Recovered {
        epoch,
        top,
        messages,
    })
}

/// A page of `stream` as the module docs describe.
pub(super) fn page(
    stream: &Stream,
    limit: usize,
    since: Option<Since<'_>>,
    reverse: bool,
) -> Result<Page, QueryError> {
    let top = stream.top;
    let (from, to) = match since {
        None => (0, top),
        Some(s) if s.epoch != stream.epoch.as_str() => {
            return Err(QueryError::EpochChanged {
                epoch: stream.epoch.clone(),
                top,
            });
        }
        Some(s) if s.seq > top => {
            return Err(QueryError::SinceBeyondTop { since: s.seq, top });
        }
        Some(s) if reverse => match s.seq.checked_sub(1) {
            Some(to) => (0, to),
            None => (1, 0),
        },
        Some(s) => (s.seq + 1, top),
    };
    let range = stream.range(from, to);
    let messages = if reverse {
        range.rev().take(limit).collect()
    } else {
        range.take(limit).collect()
    };
    Ok(Page {
        epoch: stream.epoch.clone(),
        top,
        messages,
    })
}
