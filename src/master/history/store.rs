//! The history store: every room stream with history on, the global memory budget, and
//! the counters `stats` and `/metrics` show.
//!
//! Time is passed in (`now`), so the store is pure and its tests need no clock. TTL is
//! applied lazily to the room being read or written, and to all rooms by [`HistoryStore::sweep`],
//! which the caller runs about once a second; sweep also forgets rooms whose history has
//! fully expired and that have no members.
//!
//! Forgetting is correct because the room's next stream gets a **new epoch**: a client
//! still holding `(old epoch, N)` is then told `recovered:false` and reloads its state,
//! which is right — either it missed messages that have expired, or it missed none and a
//! reload costs it little. Keeping the old epoch with a `seq` restarting at 1 would make
//! `(epoch, N)` name two different messages; keeping every room's position forever would let
//! room names grow memory without bound.
//!
//! Memory accounting (what the budget counts): per message its payload + 16 B `Arc`
//! header + a 32 B ring slot (slots are allocated up to the room's size, never past it);
//! per room [`ROOM_OVERHEAD`] + its name. The measured real cost is in the module tests.

use std::collections::{BTreeMap, HashMap};
use std::mem::size_of;
use std::sync::Arc;
use std::time::Instant;

use super::epoch::Epoch;
use super::query::{self, Page, QueryError, Recovery, Since};
use super::stream::{Cause, Stream};
use crate::namespaces::{Namespaces, RoomOptions};

/// Per-room bookkeeping besides messages: the map slot (key + boxed stream + control
/// byte, rounded up for the table's spare capacity), the stream, the shared name's `Arc`
/// header, the epoch text, and the budget order's B-tree entry.
pub const ROOM_OVERHEAD: usize = 2 * (size_of::<(Arc<str>, Box<Stream>)>() + 1)
    + size_of::<Stream>()
    + 16
    + (16 + 16)
    + (size_of::<(u64, Arc<str>)>() + 16);

/// A room's position, as `joined` and the publish ack report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The stream's life.
    pub epoch: Epoch,
    /// Its last `seq`.
    pub seq: u64,
}

/// Counters and gauges for `stats` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Rooms with a stream (a position, with or without stored messages).
    pub rooms: usize,
    /// Messages stored.
    pub messages: usize,
    /// Bytes accounted against the budget.
    pub bytes: usize,
    /// Messages pushed out by a room's `history_size`.
    pub evicted_size: u64,
    /// Messages expired by a room's `history_ttl`.
    pub evicted_ttl: u64,
    /// Messages evicted by the global budget.
    pub evicted_budget: u64,
    /// Joins with `since` that replayed their gap.
    pub recoveries_ok: u64,
    /// Joins with `since` answered `recovered:false`.
    pub recoveries_failed: u64,
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Messages expired.
    pub expired: usize,
    /// Empty rooms without members forgotten.
    pub forgotten: usize,
}

/// All history of the master.
#[derive(Debug)]
pub struct HistoryStore {
    /// Which rooms keep history and how much.
    namespaces: Namespaces,
    /// The global memory budget in bytes.
    budget: usize,
    /// Streams by room name. Boxed: the table keeps spare slots (up to half of them
    /// empty), and a slot holding the ~100-byte stream inline made every one-member
    /// room pay for two.
    streams: HashMap<Arc<str>, Box<Stream>>,
    /// Rooms holding messages, by the publish clock of their last append: the budget
    /// evicts from the smallest (least recently published) first.
    order: BTreeMap<u64, Arc<str>>,
    /// The publish clock: +1 per append.
    clock: u64,
    /// Bytes accounted, always equal to the sum over streams.
    bytes: usize,
    /// Messages stored, always equal to the sum over streams.
    messages: usize,
    /// Counters (the gauges in it are filled by [`HistoryStore::stats`]).
    counters: HistoryStats,
}

impl HistoryStore {
    /// An empty store.
    pub fn new(namespaces: Namespaces, budget: usize) -> Self {
        Self {
            namespaces,
            budget,
            streams: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
            bytes: 0,
            messages: 0,
            counters: HistoryStats::default(),
        }
    }

    /// The options of `room` from its namespace.
    pub fn options(&self, room: &str) -> RoomOptions {
        self.namespaces.lookup(room)
    }

    /// Whether `room` keeps history; when not, the caller orders it by today's rules.
    #[cfg(test)]
    pub fn enabled(&self, room: &str) -> bool {
        self.options(room).history.enabled()
    }

    /// New namespaces or budget (a config reload): existing streams take their new limits
    /// at once; rooms whose history is now off are dropped (the caller's relay numbers them
    /// again from its own rules).
    pub fn reconfigure(&mut self, namespaces: Namespaces, budget: usize, now: Instant) {
        self.namespaces = namespaces;
        self.budget = budget;
        let rooms: Vec<Arc<str>> = self.streams.keys().cloned().collect();
        for room in rooms {
            let history = self.namespaces.lookup(&room).history;
            if !history.enabled() {
                self.remove(&room);
                continue;
            }
            let dropped = self.with_stream(&room, |s| {
                s.options = history;
                let mut n = 0;
                while s.entries().len() > history.size && s.pop_front(Cause::Size) {
                    n += 1;
                }
                // A smaller size gives its ring slots back.
                s.shrink_to(history.size);
                n
            });
            self.counters.evicted_size += dropped.unwrap_or(0) as u64;
            self.expire_room(&room, now);
        }
        self.enforce_budget();
    }

    /// The position of `room` (creating its stream at `seq` 0 if it has none); `None` when
    /// the room keeps no history.
    pub fn position(&mut self, room: &str, now: Instant) -> Option<Position> {
        let s = self.stream(room, now)?;
        Some(Position {
            epoch: s.epoch.clone(),
            seq: s.top,
        })
    }

    /// Orders and stores a publish; `None` when the room keeps no history.
    pub fn append(
        &mut self,
        room: &str,
        data: impl Into<Arc<str>>,
        now: Instant,
    ) -> Option<Position> {
        let key = self.stream_key(room, now)?;
        self.clock += 1;
        let tick = self.clock;
        let data = data.into();
        let (position, old_tick, dropped) = self.with_stream(&key, |s| {
            let (seq, dropped) = s.push(data, now);
            let old = std::mem::replace(&mut s.tick, tick);
            (
                Position {
                    epoch: s.epoch.clone(),
                    seq,
                },
                old,
                dropped,
            )
        })?;
        self.counters.evicted_size += dropped as u64;
        self.order.remove(&old_tick);
        self.order.insert(tick, key);
        self.enforce_budget();
        Some(position)
    }

    /// All-or-nothing recovery of what a client missed since `since`.
    #[cfg(test)]
    pub fn recover(
        &mut self,
        room: &str,
        since: Since<'_>,
        recovery_max: u64,
        now: Instant,
    ) -> Result<Recovery, QueryError> {
        self.recover_bounded(room, since, recovery_max, usize::MAX, now)
    }

    /// All-or-nothing recovery of what a client missed since `since`, refused when the
    /// gap holds more than `max_bytes` of message data (a replay is sent in one piece).
    pub fn recover_bounded(
        &mut self,
        room: &str,
        since: Since<'_>,
        recovery_max: u64,
        max_bytes: usize,
        now: Instant,
    ) -> Result<Recovery, QueryError> {
        let stream = self.stream(room, now).ok_or_else(|| off(room))?;
        let outcome = query::recover(stream, since, recovery_max, max_bytes)?;
        match outcome {
            Recovery::Recovered { .. } => self.counters.recoveries_ok += 1,
            Recovery::NotRecovered { .. } => self.counters.recoveries_failed += 1,
        }
        Ok(outcome)
    }

    /// A page of stored messages (see `query` for the semantics of each combination).
    pub fn history(
        &mut self,
        room: &str,
        limit: usize,
        since: Option<Since<'_>>,
        reverse: bool,
        now: Instant,
    ) -> Result<Page, QueryError> {
        let stream = self.stream(room, now).ok_or_else(|| off(room))?;
        query::page(stream, limit, since, reverse)
    }

    /// Expires every room at `now` and forgets the rooms left without messages for which
    /// `occupied` (does the room have members?) is false.
    pub fn sweep(&mut self, now: Instant, occupied: impl Fn(&str) -> bool) -> Swept {
        let rooms: Vec<Arc<str>> = self.streams.keys().cloned().collect();
        let mut swept = Swept::default();
        for room in rooms {
            swept.expired += self.expire_room(&room, now);
            let empty = self
                .streams
                .get(&room)
                .is_some_and(|s| s.entries().is_empty());
            if empty && !occupied(&room) {
                self.remove(&room);
                swept.forgotten += 1;
            }
        }
        swept
    }

    /// Counters and current sizes.
    pub fn stats(&self) -> HistoryStats {
        HistoryStats {
            rooms: self.streams.len(),
            messages: self.messages,
            bytes: self.bytes,
            ..self.counters
        }
    }

    /// The budget in bytes.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Rooms in budget order (least recently published first, rooms without messages
    /// last), for the file writer.
    pub(super) fn streams_in_order(&self) -> impl Iterator<Item = (&str, &Stream)> {
        let with_messages = self.order.values();
        let without = self
            .streams
            .iter()
            .filter(|(_, s)| s.entries().is_empty())
            .map(|(k, _)| k);
        with_messages
            .chain(without)
            .filter_map(|k| self.streams.get(k).map(|s| (&**k, &**s)))
    }

    /// Adds a stream read from the file; later calls count as more recently published.
    pub(super) fn restore(&mut self, room: &str, stream: Stream) {
        self.remove(room);
        let key: Arc<str> = room.into();
        self.bytes += ROOM_OVERHEAD + key.len() + stream.message_bytes();
        self.messages += stream.entries().len();
        let has_messages = !stream.entries().is_empty();
        self.streams.insert(key.clone(), Box::new(stream));
        if has_messages {
            self.clock += 1;
            let tick = self.clock;
            self.with_stream(&key, |s| s.tick = tick);
            self.order.insert(tick, key);
        }
    }

    /// Applies the budget (after restoring a file).
    pub(super) fn enforce_budget(&mut self) {
        while self.bytes > self.budget {
            let Some((&tick, room)) = self.order.first_key_value() else {
                return;
            };
            let room = room.clone();
            let popped = self.with_stream(&room, |s| s.pop_front(Cause::Budget));
            if popped == Some(true) {
                self.counters.evicted_budget += 1;
            }
            let empty = self
                .streams
                .get(&room)
                .is_none_or(|s| s.entries().is_empty());
            if empty {
                self.order.remove(&tick);
            }
        }
    }

    /// Expires one room; returns how many messages left.
    fn expire_room(&mut self, room: &str, now: Instant) -> usize {
        let Some((n, tick, empty)) =
            self.with_stream(room, |s| (s.expire(now), s.tick, s.entries().is_empty()))
        else {
            return 0;
        };
        self.counters.evicted_ttl += n as u64;
        if n > 0 && empty {
            self.order.remove(&tick);
        }
        n
    }

    /// The stream of `room`, expired at `now`, created if history is on.
    fn stream(&mut self, room: &str, now: Instant) -> Option<&Stream> {
        let key = self.stream_key(room, now)?;
        self.streams.get(&key).map(|s| &**s)
    }

    /// The map key of `room`'s stream (expired at `now`), creating the stream if history is on.
    fn stream_key(&mut self, room: &str, now: Instant) -> Option<Arc<str>> {
        if let Some((key, _)) = self.streams.get_key_value(room) {
            let key = key.clone();
            self.expire_room(room, now);
            return Some(key);
        }
        let history = self.namespaces.lookup(room).history;
        if !history.enabled() {
            return None;
        }
        let key: Arc<str> = room.into();
        self.bytes += ROOM_OVERHEAD + key.len();
        self.streams
            .insert(key.clone(), Box::new(Stream::new(history)));
        Some(key)
    }

    /// Runs `f` on a stream, keeping `bytes` and `messages` equal to the streams' sums.
    fn with_stream<T>(&mut self, room: &str, f: impl FnOnce(&mut Stream) -> T) -> Option<T> {
        let s = self.streams.get_mut(room)?;
        let (bytes, len) = (s.message_bytes(), s.entries().len());
        let out = f(s);
        self.bytes = self.bytes - bytes + s.message_bytes();
        self.messages = self.messages - len + s.entries().len();
        Some(out)
    }

    /// Forgets a room entirely.
    fn remove(&mut self, room: &str) {
        if let Some((key, s)) = self.streams.remove_entry(room) {
            self.bytes -= ROOM_OVERHEAD + key.len() + s.message_bytes();
            self.messages -= s.entries().len();
            if !s.entries().is_empty() {
                self.order.remove(&s.tick);
            }
        }
    }
}

fn off(room: &str) -> QueryError {
    QueryError::HistoryOff {
        room: room.to_owned(),
    }
}
