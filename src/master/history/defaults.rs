//! The out-of-the-box history settings, in one place, with the reasoning.
//!
//! A chat user expects a reconnect to show what was missed, so history is **on** by default:
//! - [`HISTORY_SIZE`] 100 messages per room: a busy chat room sees a few messages a second,
//!   so 100 covers the few seconds of a rolling reload or a worker restart many times over,
//!   and a phone that drops off for a minute in a normal room. A live dashboard that only
//!   needs the last value wants less (`history_size = 1` in its namespace).
//! - [`HISTORY_TTL`] 10 minutes: long enough for a laptop lid, a train tunnel or a
//!   crashed tab; short enough that the master does not hold a day of chatter.
//! - [`BUDGET_BYTES`] 64 MiB for all rooms together. Measured (`tests/memory.rs`): a
//!   message costs its payload + ~65 B of real memory (the budget counts payload + 51 B),
//!   a room ~300–350 B + its name. So 64 MiB holds ~400,000 messages of 100 B, e.g. 4,000
//!   rooms with a full history, on a master whose RSS is otherwise a few MiB. Past it, the
//!   least recently published rooms lose their oldest messages first.
//! - [`RECOVERY_MAX`] 300 messages: the issue's `--recovery-max`; a replay longer than that
//!   costs more than the client reloading its state from the application.

use std::time::Duration;

/// Messages kept per room (0 = history off).
pub const HISTORY_SIZE: usize = 100;

/// How long a message stays in history.
pub const HISTORY_TTL: Duration = Duration::from_secs(10 * 60);

/// Bytes of history (payloads plus bookkeeping) for all rooms together.
pub const BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Longest gap (in messages) a join with `since` replays.
pub const RECOVERY_MAX: u64 = 300;
