//! Keeping history across a graceful master restart: [`save`] on stop writes
//! `<run_dir>/history.bin`; [`load`] on start reads it back and removes it at once.
//!
//! Removing the file as soon as it is read is what makes a crash safe: a master that later
//! dies without saving leaves no file, so the next one draws new epochs and answers
//! `recovered:false`, instead of serving an old snapshot that lacks the crashed master's
//! newer messages under the same epochs (which would be wrong data). A damaged file gets
//! one log line and is renamed `history.bin.damaged-<unix time>`, never trusted.
//!
//! Writing: a temp file in the same directory opened with `O_CREAT|O_EXCL|O_NOFOLLOW`
//! (mode 0600), fsync, rename over `history.bin`, fsync the directory: a reader sees the
//! old file or the whole new one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use nix::fcntl::OFlag;

use super::epoch::Epoch;
use super::format::{self, Damage, RoomRef};
use super::store::HistoryStore;
use super::stream::{Cause, Stream, is_expired};

/// The file's name in the run directory.
pub const FILE_NAME: &str = "history.bin";

/// Why the history could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Writing, syncing or renaming failed.
    #[error("cannot write {path}: {source}; history will not survive this restart")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What [`save`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    /// Streams written.
    pub rooms: usize,
    /// Messages written.
    pub messages: usize,
    /// File size.
    pub bytes: usize,
}

/// What [`load`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// No file: every room starts a new epoch.
    Missing,
    /// Streams restored.
    Restored {
        /// Streams restored.
        rooms: usize,
        /// Messages restored.
        messages: usize,
        /// Messages dropped because their TTL passed while no master ran.
        expired: usize,
    },
    /// The file was not trusted and was set aside (`moved_to`, if the rename worked).
    Damaged {
        /// What was wrong.
        reason: String,
        /// Where it went.
        moved_to: Option<PathBuf>,
    },
    /// The file was read but could not be removed, so it was not used (a later crash
    /// would otherwise leave it to be trusted again).
    NotRemoved {
        /// Why the removal failed.
        reason: String,
    },
}

/// The largest file [`load`] reads for a store with `budget` bytes: the encoding of a
/// message or room is smaller than what the budget counts for it, so a file written under
/// a budget up to twice today's still loads (the budget then evicts); anything larger is
/// set aside unread, so a hostile file cannot make the master allocate more.
pub fn file_limit(budget: usize) -> u64 {
    (budget as u64).saturating_mul(2).saturating_add(1 << 20)
}

/// Writes every stream of `store` (expired at `now` first) to `<dir>/history.bin`.
pub fn save(
    dir: &Path,
    store: &mut HistoryStore,
    now: Instant,
    wall: SystemTime,
) -> Result<Saved, PersistError> {
    store.sweep(now, |_| true);
    let mut saved = Saved {
        rooms: 0,
        messages: 0,
        bytes: 0,
    };
    let rooms: Vec<RoomRef<'_>> = store
        .streams_in_order()
        .map(|(name, s)| {
            saved.rooms += 1;
            saved.messages += s.entries().len();
            RoomRef {
                name,
                epoch: s.epoch.as_str(),
                top: s.top,
                last_loss: s.last_loss,
                messages: s
                    .entries()
                    .iter()
                    .map(|e| (to_wall(e.stored_at, now, wall), &*e.data))
                    .collect(),
            }
        })
        .collect();
    let bytes = format::encode(wall, rooms);
    saved.bytes = bytes.len();
    let path = dir.join(FILE_NAME);
    write_atomically(dir, &path, &bytes).map_err(|source| PersistError::Write { path, source })?;
    Ok(saved)
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp-{}", std::process::id()));
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(&tmp)
    };
    let mut file = match open() {
        // A leftover of an earlier master with our pid: unlink never follows a link.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            open()?
        }
        other => other?,
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

/// Restores `<dir>/history.bin` into `store` and removes the file; a file larger than
/// `max_bytes` is set aside unread. Logs one line for anything but a missing file.
pub fn load(
    dir: &Path,
    store: &mut HistoryStore,
    now: Instant,
    wall: SystemTime,
    max_bytes: u64,
) -> Loaded {
    let path = dir.join(FILE_NAME);
    let bytes = match read_limited(&path, max_bytes) {
        Ok(None) => return Loaded::Missing,
        Ok(Some(bytes)) => bytes,
        Err(damage) => return set_aside(&path, damage.to_string(), wall),
    };
    let rooms = match format::decode(&bytes) {
        Ok(rooms) => rooms,
        Err(damage) => return set_aside(&path, damage.to_string(), wall),
    };
    if let Err(e) = std::fs::remove_file(&path) {
        let reason = e.to_string();
        tracing::error!(
            path = %path.display(), error = %reason,
            "history file read but cannot be removed: not using it, rooms start new epochs; remove it by hand"
        );
        return Loaded::NotRemoved { reason };
    }
    let (mut restored, mut messages, mut expired) = (0, 0, 0);
    for room in rooms {
        let history = store.options(&room.name).history;
        let Some(epoch) = Epoch::from_saved(&room.epoch) else {
            continue;
        };
        if !history.enabled() {
            continue;
        }
        let mut stream = Stream::new(history);
        stream.epoch = epoch;
        stream.last_loss = room.last_loss;
        // `decode` checked that the messages fit below `top`.
        stream.top = room.top - room.messages.len() as u64;
        for (at, data) in room.messages {
            let age = wall.duration_since(at).unwrap_or_default();
            match now.checked_sub(age) {
                Some(stored_at) if !is_expired(stored_at, now, history.ttl) => {
                    stream.push(Arc::from(data), stored_at);
                }
                _ => {
                    // Expired (older ones before it too, if the clock ran backwards: the
                    // ring must stay consecutive).
                    expired += 1 + stream.entries().len();
                    while stream.pop_front(Cause::Ttl) {}
                    stream.top += 1;
                    stream.last_loss = Some(Cause::Ttl);
                }
            }
        }
        messages += stream.entries().len();
        restored += 1;
        store.restore(&room.name, stream);
    }
    store.enforce_budget();
    tracing::info!(
        rooms = restored,
        messages,
        expired,
        "history restored from {}",
        path.display()
    );
    Loaded::Restored {
        rooms: restored,
        messages,
        expired,
    }
}

/// The file's bytes, `None` if it does not exist; too large or unreadable is damage.
fn read_limited(path: &Path, max_bytes: u64) -> Result<Option<Vec<u8>>, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path);
    let file = match file {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("it cannot be opened: {e}")),
        Ok(f) => f,
    };
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if size > max_bytes {
        return Err(Damage::TooLarge {
            size,
            limit: max_bytes,
        }
        .to_string());
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("it cannot be read: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Damage::TooLarge {
            size: bytes.len() as u64,
            limit: max_bytes,
        }
        .to_string());
    }
    Ok(Some(bytes))
}

fn set_aside(path: &Path, reason: String, wall: SystemTime) -> Loaded {
    let aside = path.with_file_name(format!(
        "{FILE_NAME}.damaged-{}",
        format::unix_ms(wall) / 1000
    ));
    let moved_to = std::fs::rename(path, &aside).ok().map(|()| aside);
    tracing::warn!(
        path = %path.display(), moved_to = ?moved_to,
        "history file not trusted because {reason}; rooms start new epochs (clients get recovered:false)"
    );
    Loaded::Damaged { reason, moved_to }
}

/// The wall-clock time of a monotonic `at`, given one moment known on both clocks.
fn to_wall(at: Instant, now: Instant, wall: SystemTime) -> SystemTime {
    wall.checked_sub(now.saturating_duration_since(at))
        .unwrap_or(wall)
}
