//! The run directory: created private (0700), locked so that two masters never share
//! it, and cleared of a control socket a crashed master left behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Why the run directory could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// mkdir or open failed.
    #[error("cannot use run directory {dir}: {source}; pass --run-dir with a writable directory")]
    Unusable {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another master holds the lock.
    #[error(
        "another wsfleet master{pid} is already running with run directory {dir}; stop it (wsfleet stop --run-dir {dir}) or pass another --run-dir"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// " (pid N)" when the lock file names it.
        pid: String,
    },
    /// The control socket path is taken by something that is not a socket.
    #[error("{0} exists and is not a socket; refusing to replace it (pass another --control)")]
    NotASocket(PathBuf),
    /// sun_path is 108 bytes.
    #[error(
        "control socket path {0} is longer than the 107 bytes a Unix socket path may have; use a shorter --run-dir or --control"
    )]
    PathTooLong(PathBuf),
}

/// The claimed run directory; the lock is held until this is dropped.
pub struct RunDir {
    /// The exclusive flock on `master.lock`, held for the master's life.
    _lock: Flock<File>,
    /// The lock file's path, removed on clean exit.
    lock_path: PathBuf,
}

impl RunDir {
    /// Creates and locks `dir`, and removes a stale socket at `control`.
    pub fn claim(dir: &Path, control: &Path) -> Result<Self, RunDirError> {
        let unusable = |source| RunDirError::Unusable {
            dir: dir.to_owned(),
            source,
        };
        if control.as_os_str().len() > 107 {
            return Err(RunDirError::PathTooLong(control.to_owned()));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(unusable)?;
        let lock_path = dir.join("master.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(unusable)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let pid = if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                };
                return Err(RunDirError::Locked {
                    dir: dir.to_owned(),
                    pid,
                });
            }
        };
        lock.set_len(0).map_err(unusable)?;
        lock.rewind().map_err(unusable)?;
        write!(lock, "{}", std::process::id()).map_err(unusable)?;
        // We hold the lock, so a socket at the control path belongs to a dead master.
        match std::fs::symlink_metadata(control) {
            Ok(meta) if meta.file_type().is_socket() => {
                tracing::warn!(path = %control.display(), "removing a stale control socket left by a previous master");
                std::fs::remove_file(control).map_err(unusable)?;
            }
            Ok(_) => return Err(RunDirError::NotASocket(control.to_owned())),
            Err(_) => {}
        }
        Ok(Self {
            _lock: lock,
            lock_path,
        })
    }

    /// Removes the lock file (the lock itself goes with the process).
    pub fn remove_lock_file(&self) {
        let _ = std::fs::remove_file(&self.lock_path);
    }
}
