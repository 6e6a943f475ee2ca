//! The store and its queries.

use std::time::Instant;

use super::super::*;
use super::{TTL, namespaces, publish, refusal, seqs, since, store};
use crate::namespaces::{HistoryOptions, NamespaceSpec, Namespaces, RoomOptions};

#[test]
fn append_orders_per_room_and_a_new_stream_gets_a_new_epoch() {
    let now = Instant::now();
    let mut s = store();
    let a1 = s.append("a", "1", now).unwrap();
    let a2 = s.append("a", "2", now).unwrap();
    let b1 = s.append("b", "1", now).unwrap();
    assert_eq!((a1.seq, a2.seq, b1.seq), (1, 2, 1));
    assert_eq!(a1.epoch, a2.epoch);
    assert_ne!(a1.epoch, b1.epoch);
    assert_eq!(s.position("a", now), Some(a2));
    assert_eq!(s.position("fresh", now).unwrap().seq, 0);
    assert!(!s.enabled("off:x"));
    assert_eq!(s.append("off:x", "1", now), None);
    assert_eq!(s.position("off:x", now), None);
    let st = s.stats();
    assert_eq!((st.rooms, st.messages), (3, 3));
}

#[test]
fn recovery_replays_exactly_the_gap() {
    let now = Instant::now();
    let mut s = store();
    let seen = publish(&mut s, "r", 2, now);
    publish(&mut s, "r", 3, now);
    match s.recover("r", since(&seen), 300, now).unwrap() {
        Recovery::Recovered {
            epoch,
            top,
            messages,
        } => {
            assert_eq!((epoch, top), (seen.epoch.clone(), 5));
            assert_eq!(seqs(&messages), [3, 4, 5]);
            assert_eq!(&*messages[0].data, "{\"i\":0}");
        }
        other => panic!("{other:?}"),
    }
    // Nothing missed: recovered with no messages.
    let top = s.position("r", now).unwrap();
    assert!(matches!(
        s.recover("r", since(&top), 300, now),
        Ok(Recovery::Recovered { messages, .. }) if messages.is_empty()
    ));
    assert_eq!(
        (s.stats().recoveries_ok, s.stats().recoveries_failed),
        (2, 0)
    );
}

#[test]
fn recovery_refused_for_each_reason() {
    let t0 = Instant::now();
    let mut s = store();
    let p0 = s.position("r", t0).unwrap();
    // Wrong epoch.
    let bad = Since {
        epoch: "nope",
        seq: 0,
    };
    assert_eq!(
        refusal(s.recover("r", bad, 300, t0).unwrap()),
        Refusal::EpochChanged
    );
    // Over recovery_max (everything still stored).
    publish(&mut s, "r", 4, t0);
    assert_eq!(
        refusal(s.recover("r", since(&p0), 3, t0).unwrap()),
        Refusal::TooLong { gap: 4, max: 3 }
    );
    // Gap pushed out by the room's size (5).
    publish(&mut s, "r", 2, t0);
    assert_eq!(
        refusal(s.recover("r", since(&p0), 300, t0).unwrap()),
        Refusal::Evicted(Cause::Size)
    );
    // Gap expired.
    let seen = s.position("r", t0).unwrap();
    publish(&mut s, "r", 1, t0);
    let later = t0 + TTL;
    assert_eq!(
        refusal(s.recover("r", since(&seen), 300, later).unwrap()),
        Refusal::Evicted(Cause::Ttl)
    );
    // Since beyond the top: invalid, not a refusal, not counted.
    let beyond = Since {
        epoch: seen.epoch.as_str(),
        seq: 99,
    };
    assert_eq!(
        s.recover("r", beyond, 300, later),
        Err(QueryError::SinceBeyondTop { since: 99, top: 7 })
    );
    assert_eq!(s.stats().recoveries_failed, 4);
    assert_eq!(
        s.recover("off:r", bad, 300, later),
        Err(QueryError::HistoryOff {
            room: "off:r".into()
        })
    );
}

#[test]
fn budget_evicts_the_least_recently_published_room_first() {
    let now = Instant::now();
    let mut s = HistoryStore::new(namespaces(), usize::MAX);
    let old = s.position("big:old", now).unwrap();
    publish(&mut s, "big:old", 10, now);
    let new = s.position("big:new", now).unwrap();
    publish(&mut s, "big:new", 10, now);
    let full = s.stats().bytes;
    // Shrink the budget by a little: only the old room's oldest messages go.
    s.reconfigure(namespaces(), full - 1, now);
    let st = s.stats();
    assert!(st.bytes < full);
    assert!(st.evicted_budget >= 1);
    assert_eq!(
        refusal(s.recover("big:old", since(&old), 300, now).unwrap()),
        Refusal::Evicted(Cause::Budget)
    );
    assert!(matches!(
        s.recover("big:new", since(&new), 300, now),
        Ok(Recovery::Recovered { .. })
    ));
    // Publishing (more than was freed) to the old room makes the new one the oldest.
    s.append("big:old", "x".repeat(200), now).unwrap();
    assert_eq!(
        refusal(s.recover("big:new", since(&new), 300, now).unwrap()),
        Refusal::Evicted(Cause::Budget)
    );
    // A budget too small for any message keeps only the positions.
    s.reconfigure(namespaces(), 0, now);
    assert_eq!((s.stats().messages, s.stats().rooms), (0, 2));
    assert_eq!(s.position("big:old", now).unwrap().seq, 11);
}

#[test]
fn counters_and_bytes_stay_exact() {
    let t0 = Instant::now();
    let mut s = store();
    publish(&mut s, "a", 7, t0);
    assert_eq!(s.stats().evicted_size, 2);
    publish(&mut s, "b", 1, t0);
    let swept = s.sweep(t0 + TTL, |_| true);
    assert_eq!(
        swept,
        Swept {
            expired: 6,
            forgotten: 0
        }
    );
    let st = s.stats();
    assert_eq!((st.messages, st.evicted_ttl, st.rooms), (0, 6, 2));
    assert_eq!(
        st.bytes,
        2 * ROOM_OVERHEAD + 2,
        "only the rooms' bookkeeping is left"
    );
}

#[test]
fn an_empty_room_keeps_its_position_until_its_history_expires() {
    let t0 = Instant::now();
    let mut s = store();
    let p = publish(&mut s, "r", 3, t0);
    // No members, history still there: kept.
    assert_eq!(s.sweep(t0, |_| false).forgotten, 0);
    // Members, history expired: kept (the relay would keep the seq too).
    assert_eq!(s.sweep(t0 + TTL, |_| true).forgotten, 0);
    assert_eq!(s.position("r", t0 + TTL), Some(p.clone()));
    // No members and nothing stored: forgotten; the next life has a new epoch.
    assert_eq!(s.sweep(t0 + TTL, |_| false).forgotten, 1);
    assert_eq!(s.stats().rooms, 0);
    assert_eq!(s.stats().bytes, 0);
    let next = s.append("r", "1", t0 + TTL).unwrap();
    assert_eq!(next.seq, 1);
    assert_ne!(next.epoch, p.epoch);
    assert_eq!(
        refusal(s.recover("r", since(&p), 300, t0 + TTL).unwrap()),
        Refusal::EpochChanged
    );
}

#[test]
fn history_pages() {
    let now = Instant::now();
    let mut s = store();
    let p = publish(&mut s, "r", 7, now); // stored: 3..=7
    let page = |s: &mut HistoryStore, limit, since, reverse| {
        seqs(&s.history("r", limit, since, reverse, now).unwrap().messages)
    };
    assert_eq!(page(&mut s, 2, None, false), [3, 4]);
    assert_eq!(page(&mut s, 2, None, true), [7, 6]);
    assert_eq!(page(&mut s, 100, None, false), [3, 4, 5, 6, 7]);
    assert_eq!(page(&mut s, 0, None, false), Vec::<u64>::new());
    let at = |seq| {
        Some(Since {
            epoch: p.epoch.as_str(),
            seq,
        })
    };
    assert_eq!(page(&mut s, 2, at(4), false), [5, 6]);
    assert_eq!(page(&mut s, 10, at(4), true), [3]);
    assert_eq!(
        page(&mut s, 10, at(0), false),
        [3, 4, 5, 6, 7],
        "gaps are not errors"
    );
    assert_eq!(page(&mut s, 10, at(0), true), Vec::<u64>::new());
    assert_eq!(page(&mut s, 10, at(7), false), Vec::<u64>::new());
    let full = s.history("r", 1, None, false, now).unwrap();
    assert_eq!((full.epoch, full.top), (p.epoch.clone(), 7));
    assert_eq!(
        s.history("r", 1, at(8), false, now),
        Err(QueryError::SinceBeyondTop { since: 8, top: 7 })
    );
    let other = Some(Since {
        epoch: "old",
        seq: 1,
    });
    assert!(matches!(
        s.history("r", 1, other, false, now),
        Err(QueryError::EpochChanged { top: 7, .. })
    ));
}

#[test]
fn reconfigure_applies_new_limits_and_drops_rooms_turned_off() {
    let now = Instant::now();
    let mut s = store();
    publish(&mut s, "big:a", 50, now);
    publish(&mut s, "x", 3, now);
    let ns = Namespaces::from_specs(
        RoomOptions {
            history: HistoryOptions { size: 10, ttl: TTL },
            presence: Default::default(),
        },
        &[NamespaceSpec {
            pattern: "x".into(),
            history_size: Some(0),
            history_ttl: None,
            ..NamespaceSpec::default()
        }],
    )
    .unwrap();
    s.reconfigure(ns, 1 << 30, now);
    assert!(!s.enabled("x"));
    assert_eq!(s.stats().rooms, 1);
    assert_eq!(
        s.history("big:a", 100, None, false, now)
            .unwrap()
            .messages
            .len(),
        10
    );
    let st = s.stats();
    assert_eq!(st.evicted_size, 40);
    // Name "big:a", at most 16 slots of 32 B, ten 8-byte payloads with 16-byte headers.
    assert!(
        st.bytes <= ROOM_OVERHEAD + 5 + 16 * 32 + 10 * 24,
        "the ring shrank to the new size: {st:?}"
    );
}
