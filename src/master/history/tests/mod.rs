//! The store, its queries and its file, exercised together through the public API.
//!
//! - `store`: appends, recovery outcomes, eviction by size, TTL and budget, pages.
//! - `persist`: the file round trip, crash safety, expiry on load, damaged files.
//! - `memory`: accounted bytes against real allocation (ignored; run alone).

mod memory;
mod persist;
mod store;

use std::time::{Duration, Instant};

use super::*;
use crate::namespaces::{HistoryOptions, NamespaceSpec, Namespaces, RoomOptions, TtlValue};

pub(super) const TTL: Duration = Duration::from_secs(60);

/// Rooms: default 5 messages / 60 s; `off:*` without history; `big:*` 1000 messages.
pub(super) fn namespaces() -> Namespaces {
    let defaults = RoomOptions {
        history: HistoryOptions { size: 5, ttl: TTL },
        presence: Default::default(),
    };
    let spec = |pattern: &str, size: i64| NamespaceSpec {
        pattern: pattern.into(),
        history_size: Some(size),
        history_ttl: Some(TtlValue::Seconds(60.0)),
        ..NamespaceSpec::default()
    };
    Namespaces::from_specs(defaults, &[spec("off:*", 0), spec("big:*", 1000)]).unwrap()
}

pub(super) fn store() -> HistoryStore {
    HistoryStore::new(namespaces(), 1 << 30)
}

pub(super) fn since(p: &Position) -> Since<'_> {
    Since {
        epoch: p.epoch.as_str(),
        seq: p.seq,
    }
}

pub(super) fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

pub(super) fn publish(s: &mut HistoryStore, room: &str, n: usize, now: Instant) -> Position {
    let mut last = None;
    for i in 0..n {
        last = s.append(room, format!("{{\"i\":{i}}}"), now);
    }
    last.expect("history is on")
}

pub(super) fn refusal(r: Recovery) -> Refusal {
    match r {
        Recovery::NotRecovered { reason, .. } => reason,
        Recovery::Recovered { messages, .. } => panic!("recovered {:?}", seqs(&messages)),
    }
}
