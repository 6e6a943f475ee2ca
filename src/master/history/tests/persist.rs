//! `history.bin`: round trip, crash safety, expiry on load, damaged files.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::super::persist::{self, Loaded};
use super::super::*;
use super::{TTL, publish, refusal, seqs, since, store};

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
    // A symlink planted in its place is not followed, and is set aside too.
    let dir = tmp();
    std::fs::write(dir.0.join("elsewhere"), &good).unwrap();
    std::os::unix::fs::symlink(dir.0.join("elsewhere"), dir.0.join("history.bin")).unwrap();
    let mut s = store();
    assert!(matches!(
        persist::load(&dir.0, &mut s, t0, wall, LIMIT),
        Loaded::Damaged {
            moved_to: Some(_),
            ..
        }
    ));
    assert_eq!(s.stats().rooms, 0);
    assert_eq!(
        files(&dir.0).len(),
        2,
        "the link moved aside, its target untouched"
    );
}

#[test]
fn the_file_limit_admits_what_the_budget_can_hold() {
    let dir = tmp();
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let budget = 64 * 1024;
    let mut a = HistoryStore::new(super::namespaces(), budget);
    for r in 0..50 {
        publish(&mut a, &format!("big:{r}"), 100, t0);
    }
    assert!(a.stats().bytes <= budget);
    let saved = persist::save(&dir.0, &mut a, t0, wall).unwrap();
    assert!(
        (saved.bytes as u64) <= persist::file_limit(budget) / 2,
        "{saved:?}"
    );
    let mut b = HistoryStore::new(super::namespaces(), budget);
    let loaded = persist::load(&dir.0, &mut b, t0, wall, persist::file_limit(budget));
    assert!(matches!(loaded, Loaded::Restored { .. }), "{loaded:?}");
    assert_eq!(b.stats().messages, a.stats().messages);
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
