//! What history really costs in memory.

use std::time::{Duration, Instant};

use super::super::*;
use super::TTL;
use crate::namespaces::{HistoryOptions, Namespaces, RoomOptions};

/// Accounted bytes against what the allocator really hands out, measured as RSS growth
/// (run alone: `cargo test history_memory_cost -- --ignored --nocapture --test-threads=1`).
/// Both stores stay alive to the end: freed memory is not returned to the OS at once.
#[test]
#[ignore = "measures process RSS; run alone"]
fn history_memory_cost() {
    let rss = || {
        crate::sys::procfs::sample(std::process::id())
            .unwrap()
            .rss_bytes as f64
    };
    let now = Instant::now();
    let options = RoomOptions {
        history: HistoryOptions {
            size: 100,
            ttl: TTL,
        },
        presence: Default::default(),
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
