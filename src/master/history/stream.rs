//! One room's stream: its position (epoch, top `seq`) and the ring of recent messages,
//! bounded by the room's size and TTL, with honest byte accounting.
//!
//! The ring holds consecutive sequence numbers ending at `top` (appends go to the back,
//! every loss is from the front), so an entry's `seq` is implied by its index and not
//! stored.

use std::collections::VecDeque;
use std::mem::size_of;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::epoch::Epoch;
use crate::namespaces::HistoryOptions;

/// Heap bytes of an `Arc<str>` besides its text (the strong and weak counts).
const ARC_HEADER: usize = 2 * size_of::<usize>();

/// Why messages left history before a reader asked for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The room's `history_size` was reached.
    Size,
    /// Older than the room's `history_ttl`.
    Ttl,
    /// The global memory budget was exceeded.
    Budget,
}

/// One stored message.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// When it was stored (TTL is measured from here).
    pub stored_at: Instant,
    /// The client's `data`, raw JSON text, shared with whoever replays it.
    pub data: Arc<str>,
}

/// A message handed to a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its position in the room's order.
    pub seq: u64,
    /// Raw JSON text.
    pub data: Arc<str>,
}

/// One room's stream.
#[derive(Debug)]
pub(super) struct Stream {
    /// This life of the room's sequence.
    pub epoch: Epoch,
    /// Last sequence number assigned (0: nothing published yet).
    pub top: u64,
    /// Messages `top - len + 1 ..= top`, oldest first ([`Stream::entries`]); `None` while
    /// the room holds none (one word where an empty ring is four: most rooms with members
    /// hold no messages, and the table keeps one stream per such room).
    #[allow(clippy::box_collection)]
    ring: Option<Box<VecDeque<Entry>>>,
    /// The limits of the room, from its namespace.
    pub options: HistoryOptions,
    /// Why the newest lost message was lost: the reason a refused recovery reports.
    pub last_loss: Option<Cause>,
    /// Publish clock value of the last append (the budget evicts the smallest first).
    pub tick: u64,
    /// Sum of payload lengths plus per-payload heap headers.
    payload_bytes: usize,
}

impl Stream {
    /// A new life of a room, at `seq` 0.
    pub fn new(options: HistoryOptions) -> Self {
        Self {
            epoch: Epoch::generate(),
            top: 0,
            ring: None,
            options,
            last_loss: None,
            tick: 0,
            payload_bytes: 0,
        }
    }

    /// Bytes this stream holds for its messages: ring slots actually allocated plus
    /// payloads and their headers. (Per-room overhead is counted by the store.)
    pub fn message_bytes(&self) -> usize {
        let ring = self.ring.as_ref().map_or(0, |r| {
            size_of::<VecDeque<Entry>>() + r.capacity() * size_of::<Entry>()
        });
        ring + self.payload_bytes
    }

    /// The stored messages, oldest first.
    pub fn entries(&self) -> &VecDeque<Entry> {
        static NONE: VecDeque<Entry> = VecDeque::new();
        self.ring.as_deref().unwrap_or(&NONE)
    }

    /// Gives back ring slots past `size` (a smaller room size after a reload).
    pub fn shrink_to(&mut self, size: usize) {
        if let Some(ring) = &mut self.ring {
            ring.shrink_to(size);
        }
    }

    /// The oldest sequence number still stored (`top + 1` when none is).
    pub fn first_seq(&self) -> u64 {
        self.top + 1 - self.entries().len() as u64
    }

    /// Stores the next message, trimming to the room's size; returns its `seq` and how
    /// many messages the size limit pushed out.
    pub fn push(&mut self, data: Arc<str>, now: Instant) -> (u64, usize) {
        self.top += 1;
        let mut dropped = 0;
        while self.entries().len() >= self.options.size && self.pop_front(Cause::Size) {
            dropped += 1;
        }
        let size = self.options.size.max(1);
        let ring = self.ring.get_or_insert_default();
        if ring.len() == ring.capacity() {
            // Grow by doubling but never past the room's size, so a full ring of 100
            // messages has 100 slots, not 128.
            let want = (ring.capacity() * 2).max(4).min(size);
            ring.reserve_exact(want - ring.len());
        }
        self.payload_bytes += data.len() + ARC_HEADER;
        ring.push_back(Entry {
            stored_at: now,
            data,
        });
        (self.top, dropped)
    }

    /// Drops the oldest message; false when there is none.
    pub fn pop_front(&mut self, cause: Cause) -> bool {
        let Some(e) = self.ring.as_mut().and_then(|r| r.pop_front()) else {
            return false;
        };
        self.payload_bytes -= e.data.len() + ARC_HEADER;
        self.last_loss = Some(cause);
        if self.entries().is_empty() {
            // Give the ring's memory back: an idle room keeps only its position.
            self.ring = None;
        }
        true
    }

    /// Drops messages older than the TTL at `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let ttl = self.options.ttl;
        let mut n = 0;
        while self
            .entries()
            .front()
            .is_some_and(|e| is_expired(e.stored_at, now, ttl))
        {
            self.pop_front(Cause::Ttl);
            n += 1;
        }
        n
    }

    /// Messages `from ..= to` (clamped to what is stored), oldest first.
    pub fn range(&self, from: u64, to: u64) -> impl DoubleEndedIterator<Item = Message> + '_ {
        let first = self.first_seq();
        let lo = from.max(first);
        let hi = to.min(self.top);
        let (skip, take) = if lo > hi {
            (0, 0)
        } else {
            ((lo - first) as usize, (hi - lo + 1) as usize)
        };
        self.entries()
            .range(skip..skip + take)
            .enumerate()
            .map(move |(i, e)| Message {
                seq: lo + i as u64,
                data: e.data.clone(),
            })
    }
}

/// Whether a message stored at `stored_at` has outlived `ttl` (no `Instant` overflow for
/// any TTL).
pub(super) fn is_expired(stored_at: Instant, now: Instant, ttl: Duration) -> bool {
    now.saturating_duration_since(stored_at) >= ttl
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(size: usize, ttl_s: u64) -> HistoryOptions {
        HistoryOptions {
            size,
            ttl: Duration::from_secs(ttl_s),
        }
    }

    #[test]
    fn seqs_are_implied_and_the_ring_is_bounded() {
        let now = Instant::now();
        let mut s = Stream::new(opts(3, 60));
        for i in 1..=5u64 {
            assert_eq!(s.push(i.to_string().into(), now).0, i);
        }
        assert_eq!((s.first_seq(), s.top, s.entries().len()), (3, 5, 3));
        assert!(
            s.entries().capacity() <= 4,
            "ring grew past its size: {}",
            s.entries().capacity()
        );
        let seqs: Vec<_> = s
            .range(0, 99)
            .map(|m| (m.seq, m.data.to_string()))
            .collect();
        assert_eq!(seqs, [(3, "3".into()), (4, "4".into()), (5, "5".into())]);
        assert_eq!(s.range(4, 4).count(), 1);
        assert_eq!(s.range(6, 9).count(), 0);
        assert_eq!(s.last_loss, Some(Cause::Size));
    }

    #[test]
    fn expiry_frees_the_ring_and_keeps_the_position() {
        let t0 = Instant::now();
        let mut s = Stream::new(opts(10, 5));
        s.push("\"a\"".into(), t0);
        s.push("\"b\"".into(), t0 + Duration::from_secs(3));
        assert_eq!(s.expire(t0 + Duration::from_secs(5)), 1);
        assert_eq!(s.expire(t0 + Duration::from_secs(8)), 1);
        assert_eq!((s.top, s.first_seq(), s.entries().capacity()), (2, 3, 0));
        assert_eq!(s.message_bytes(), 0);
        assert_eq!(s.last_loss, Some(Cause::Ttl));
    }
}
