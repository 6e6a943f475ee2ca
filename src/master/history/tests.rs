//! The store, its queries and its file, exercised together through the public API.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::persist::{self, Loaded};
use super::*;
use crate::namespaces::{HistoryOptions, NamespaceSpec, Namespaces, RoomOptions, TtlValue};

const TTL: Duration = Duration::from_secs(60);

/// Rooms: default 5 messages / 60 s; `off:*` without history; `big:*` 1000 messages.
fn namespaces() -> Namespaces {
    let defaults = RoomOptions {
        history: HistoryOptions { size: 5, ttl: TTL },
    };
    let spec = |pattern: &str, size: i64| NamespaceSpec {
        pattern: pattern.into(),
        history_size: Some(size),
        history_ttl: Some(TtlValue::Seconds(60.0)),
    };
    Namespaces::from_specs(defaults, &[spec("off:*", 0), spec("big:*", 1000)]).unwrap()
}

fn store() -> HistoryStore {
    HistoryStore::new(namespaces(), 1 << 30)
}

fn since(p: &Position) -> Since<'_> {
    Since {
        epoch: p.epoch.as_str(),
        seq: p.seq,
    }
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

fn publish(s: &mut HistoryStore, room: &str, n: usize, now: Instant) -> Position {
    let mut last = None;
    for i in 0..n {
        last = s.append(room, format!("{{\"i\":{i}}}"), now);
    }
    last.expect("history is on")
}

fn refusal(r: Recovery) -> Refusal {
    match r {
        Recovery::NotRecovered { reason, .. } => reason,
        Recovery::Recovered { messages, .. } => panic!("recovered {:?}", seqs(&messages)),
    }
}

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
        },
        &[NamespaceSpec {
            pattern: "x".into(),
            history_size: Some(0),
            history_ttl: None,
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
}

// ---- persistence ----

fn tmp() -> tempdir::Dir {
    tempdir::Dir::new()
}

/// A private directory removed on drop (std only; the crate has no tempfile dependency).
mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "wsfleet-hist-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

const LIMIT: u64 = 1 << 20;

#[test]
fn round_trip_keeps_epochs_positions_and_messages_and_removes_the_file() {
    let dir = tmp();
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let mut a = store();
    let r = publish(&mut a, "r", 7, t0);
    let empty = a.position("empty", t0).unwrap();
    let saved = persist::save(&dir.0, &mut a, t0, wall).unwrap();
    assert_eq!((saved.rooms, saved.messages), (2, 5));
    assert_eq!(files(&dir.0), ["history.bin"]);

    // The next master: another monotonic origin, a little later on the wall clock.
    let (t1, wall1) = (
        Instant::now() + Duration::from_secs(1),
        wall + Duration::from_secs(1),
    );
    let mut b = store();
    let loaded = persist::load(&dir.0, &mut b, t1, wall1, LIMIT);
    assert_eq!(
        loaded,
        Loaded::Restored {
            rooms: 2,
            messages: 5,
            expired: 0
        }
    );
    assert!(
        files(&dir.0).is_empty(),
        "the file must be gone once loaded"
    );
    assert_eq!(b.position("r", t1), Some(r.clone()));
    assert_eq!(b.position("empty", t1), Some(empty));
    let p3 = Position {
        epoch: r.epoch.clone(),
        seq: 3,
    };
    match b.recover("r", since(&p3), 300, t1).unwrap() {
        Recovery::Recovered { messages, .. } => {
            assert_eq!(seqs(&messages), [4, 5, 6, 7]);
            assert_eq!(&*messages[3].data, "{\"i\":6}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.stats().messages, 5);
    // The restored messages keep their age: they expire 60 s after they were published.
    assert_eq!(
        b.sweep(t1 + TTL - Duration::from_secs(1), |_| true).expired,
        5
    );
}

#[test]
fn a_crash_after_loading_leaves_no_file_so_the_next_master_starts_new_epochs() {
    let dir = tmp();
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let mut first = store();
    let p = publish(&mut first, "r", 3, t0);
    persist::save(&dir.0, &mut first, t0, wall).unwrap();
    // Second master loads, publishes more, then crashes (never saves).
    let mut second = store();
    persist::load(&dir.0, &mut second, t0, wall, LIMIT);
    publish(&mut second, "r", 2, t0);
    drop(second);
    // Third master: no file, so a new epoch and recovered:false, never the stale 1..3.
    let mut third = store();
    assert_eq!(
        persist::load(&dir.0, &mut third, t0, wall, LIMIT),
        Loaded::Missing
    );
    let fresh = third.position("r", t0).unwrap();
    assert_ne!(fresh.epoch, p.epoch);
    assert_eq!(
        refusal(third.recover("r", since(&p), 300, t0).unwrap()),
        Refusal::EpochChanged
    );
}

#[test]
fn messages_past_their_ttl_are_dropped_on_load() {
    let dir = tmp();
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let mut a = store();
    let before = publish(&mut a, "r", 2, t0);
    publish(&mut a, "r", 2, t0 + Duration::from_secs(30));
    persist::save(
        &dir.0,
        &mut a,
        t0 + Duration::from_secs(30),
        wall + Duration::from_secs(30),
    )
    .unwrap();
    // 45 s later: the first two are 75 s old (gone), the last two 45 s (kept).
    let mut b = store();
    let loaded = persist::load(&dir.0, &mut b, t0, wall + Duration::from_secs(75), LIMIT);
    assert_eq!(
        loaded,
        Loaded::Restored {
            rooms: 1,
            messages: 2,
            expired: 2
        }
    );
    assert_eq!(
        seqs(&b.history("r", 10, None, false, t0).unwrap().messages),
        [3, 4]
    );
    assert_eq!(
        refusal(
            b.recover("r", since(&Position { seq: 1, ..before }), 300, t0)
                .unwrap()
        ),
        Refusal::Evicted(Cause::Ttl)
    );
}

#[test]
fn damaged_files_are_set_aside_and_never_trusted() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let good = {
        let dir = tmp();
        let mut a = store();
        publish(&mut a, "r", 3, t0);
        persist::save(&dir.0, &mut a, t0, wall).unwrap();
        std::fs::read(dir.0.join("history.bin")).unwrap()
    };
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 0x55;
    let mut version = good.clone();
    version[8] = 2;
    let cases: [(&str, Vec<u8>, u64); 5] = [
        ("magic", b"not a history file at all".to_vec(), LIMIT),
        ("version", version, LIMIT),
        ("checksum", flipped, LIMIT),
        ("truncated", good[..good.len() - 3].to_vec(), LIMIT),
        ("too large", good.clone(), 16),
    ];
    for (what, bytes, limit) in cases {
        let dir = tmp();
        std::fs::write(dir.0.join("history.bin"), &bytes).unwrap();
        let mut s = store();
        match persist::load(&dir.0, &mut s, t0, wall, limit) {
            Loaded::Damaged {
                moved_to: Some(p),
                reason,
            } => {
                assert!(
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("history.bin.damaged-")
                );
                assert_eq!(std::fs::read(&p).unwrap(), bytes, "{what}: kept as it was");
                assert!(!reason.is_empty());
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(
            files(&dir.0).len(),
            1,
            "{what}: only the damaged copy is left"
        );
        assert_eq!(s.stats().rooms, 0, "{what}: nothing restored");
    }
}

#[test]
fn saving_refuses_to_follow_a_planted_symlink_and_replaces_an_old_file() {
    let dir = tmp();
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let target = dir.0.join("target");
    std::fs::write(&target, b"keep").unwrap();
    let tmp_name = dir
        .0
        .join(format!("history.bin.tmp-{}", std::process::id()));
    std::os::unix::fs::symlink(&target, &tmp_name).unwrap();
    let mut a = store();
    publish(&mut a, "r", 1, t0);
    persist::save(&dir.0, &mut a, t0, wall).unwrap();
    persist::save(&dir.0, &mut a, t0, wall).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert_eq!(files(&dir.0), ["history.bin", "target"]);
}

/// Accounted bytes against what the allocator really hands out, measured as RSS growth
/// (run alone: `cargo test history_memory_cost -- --ignored --nocapture --test-threads=1`).
/// Both stores stay alive to the end: freed memory is not returned to the OS at once.
#[test]
#[ignore = "measures process RSS; run alone"]
fn history_memory_cost() {
    let rss = || {
        crate::master::procfs::sample(std::process::id())
            .unwrap()
            .rss_bytes as f64
    };
    let now = Instant::now();
    let options = RoomOptions {
        history: HistoryOptions {
            size: 100,
            ttl: TTL,
        },
    };

    // Per room: positions only (rooms joined, nothing stored yet).
    let mut positions = HistoryStore::new(Namespaces::new(options), usize::MAX);
    let rooms = 100_000;
    let before = rss();
    for r in 0..rooms {
        positions.position(&format!("chat:room-{r}"), now);
    }
    let real = (rss() - before) / rooms as f64;
    let accounted = positions.stats().bytes as f64 / rooms as f64;
    println!(
        "{rooms} rooms without messages: accounted {accounted:.0} B/room, real {real:.0} B/room"
    );
    assert!(
        (0.5..2.0).contains(&(accounted / real)),
        "room accounting is off"
    );

    // Per message: full rings of 100-byte payloads.
    let mut s = HistoryStore::new(Namespaces::new(options), usize::MAX);
    let (rooms, per_room, payload) = (10_000u64, 100u64, 100usize);
    let data: String = format!("\"{}\"", "x".repeat(payload - 2));
    let before = rss();
    for i in 0..per_room {
        for r in 0..rooms {
            s.append(
                &format!("chat:room-{r}"),
                data.as_str(),
                now + Duration::from_millis(i),
            );
        }
    }
    let real = rss() - before;
    let st = s.stats();
    let n = (rooms * per_room) as f64;
    println!(
        "{} messages of {payload} B in {rooms} rooms: accounted {:.0} B/message, real {:.0} B/message",
        st.messages,
        st.bytes as f64 / n,
        real / n
    );
    assert_eq!(st.messages as u64, rooms * per_room);
    let ratio = st.bytes as f64 / real;
    assert!(
        (0.7..1.5).contains(&ratio),
        "accounting is off: accounted/real = {ratio:.2}"
    );
    assert_eq!(positions.stats().messages, 0);
}
