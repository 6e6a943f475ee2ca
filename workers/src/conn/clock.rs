//! The coarse clock connections are stamped with: read on every client frame and by the
//! heartbeat sweep, so it is a cheap `u32` of milliseconds.

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the process started, wrapping after 49 days; compare two readings
/// with `wrapping_sub`.
pub fn now_ms() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u32
}
