//! The run directory: created private (0700) or refused unless it is ours and private,
//! locked so that two masters never share it, and the control socket path claimed with a
//! lock of its own so that no master removes a socket a live master is serving.
//!
//! Nothing here follows a symbolic link or truncates a file it did not prove is ours: the
//! run directory may be one another user pre-created (finding 2 of issue 15).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};

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
    /// The directory belongs to someone else, who could plant links or sockets in it.
    #[error(
        "run directory {dir} is owned by uid {owner}, not by uid {me} that runs wsfleet; another user could plant files in it: remove it or pass --run-dir with a directory you own"
    )]
    NotOwned {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        me: u32,
    },
    /// Group or others may create and replace files in the directory.
    #[error(
        "run directory {dir} has mode {mode:o}, writable by group or others; run chmod 700 {dir} or pass --run-dir with a private directory"
    )]
    Writable {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A path wsfleet would open is a symbolic link or a file it does not own.
    #[error(
        "{path} is {what}; wsfleet refuses to open it (another user may have planted it): remove it, or pass another --run-dir or --control"
    )]
    Foreign {
        /// The path.
        path: PathBuf,
        /// What it is instead of a regular file or socket of ours.
        what: String,
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
    /// A live master serves the control socket (its lock is held, or it answers).
    #[error(
        "control socket {0} belongs to a running wsfleet master; stop that master (wsfleet stop --control {0}) or pass another --control"
    )]
    ControlLive(PathBuf),
    /// A socket is at the control path and connecting to it failed oddly.
    #[error(
        "cannot tell whether control socket {path} is in use ({source}); remove it if no master serves it, or pass another --control"
    )]
    ControlUnknown {
        /// The socket.
        path: PathBuf,
        /// Why the probe failed.
        source: std::io::Error,
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

/// The claimed run directory; both locks are held until this is dropped.
pub struct RunDir {
    /// The exclusive flock on `master.lock`, held for the master's life.
    lock: Flock<File>,
    /// The lock file's path, removed on clean exit.
    lock_path: PathBuf,
    /// The exclusive flock on `<control>.lock`: while held, no other master treats the
    /// control socket as stale.
    control_lock: Flock<File>,
    /// That lock file's path, removed on clean exit.
    control_lock_path: PathBuf,
}

/// A file's identity, to remove on exit only what we created (not a replacement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// The device holding it.
    dev: u64,
    /// Its inode on that device.
    ino: u64,
}

impl FileId {
    /// The identity of what `path` names now (the link itself, not its target).
    pub fn of_path(path: &Path) -> std::io::Result<Self> {
        std::fs::symlink_metadata(path).map(|m| Self::of(&m))
    }

    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// Removes `path` if it still names this file; leaves a replacement alone.
    pub fn remove_if_still(self, path: &Path) {
        if Self::of_path(path).ok() == Some(self) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How taking a lock file failed.
enum LockError {
    /// Another process holds it; the file is returned to read its pid.
    Held(File),
    /// It is not a file we can trust (link, not ours, not regular).
    Foreign(String),
    /// open or flock failed.
    Io(std::io::Error),
}

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Opens (creating, 0600) and flocks `path` without following links and without
/// truncating, after checking it is a regular file of ours. A holder that unlinks the
/// file on exit leaves waiters with a stale inode, so the lock counts only if `path`
/// still names the file we locked (else retry).
fn lock_file(path: &Path) -> Result<Flock<File>, LockError> {
    for _ in 0..10 {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
                    LockError::Foreign("a symbolic link".into())
                } else {
                    LockError::Io(e)
                }
            })?;
        let meta = file.metadata().map_err(LockError::Io)?;
        if !meta.file_type().is_file() {
            return Err(LockError::Foreign("not a regular file".into()));
        }
        if meta.uid() != me() {
            return Err(LockError::Foreign(format!(
                "a file owned by uid {}, not by uid {}",
                meta.uid(),
                me()
            )));
        }
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(file, _)| LockError::Held(file))?;
        if FileId::of_path(path).ok() == Some(FileId::of(&meta)) {
            return Ok(lock);
        }
    }
    Err(LockError::Io(std::io::Error::other(
        "the lock file kept being replaced while wsfleet locked it",
    )))
}

/// Creates `dir` (0700) if missing, then checks, on the opened directory itself, that it
/// is a real directory (not a link) owned by us and writable by nobody else.
fn check_dir(dir: &Path) -> Result<(), RunDirError> {
    let unusable = |source| RunDirError::Unusable {
        dir: dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(unusable)?;
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
        .open(dir);
    let meta = match opened {
        Ok(d) => d.metadata().map_err(unusable)?,
        Err(_) if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) => {
            return Err(RunDirError::Foreign {
                path: dir.to_owned(),
                what: "a symbolic link".into(),
            });
        }
        Err(e) => return Err(unusable(e)),
    };
    if meta.uid() != me() {
        return Err(RunDirError::NotOwned {
            dir: dir.to_owned(),
            owner: meta.uid(),
            me: me(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(RunDirError::Writable {
            dir: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// `<control>.lock`.
fn control_lock_path(control: &Path) -> PathBuf {
    let mut p = control.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// With the control lock held: removes a socket at `control` only once it is proven dead
/// (ours, and nobody answers), so a master of an older build that does not take the lock
/// is not robbed of its socket either.
fn clear_stale_socket(control: &Path) -> Result<(), RunDirError> {
    let meta = match std::fs::symlink_metadata(control) {
        Ok(meta) => meta,
        Err(_) => return Ok(()),
    };
    if !meta.file_type().is_socket() {
        return Err(RunDirError::NotASocket(control.to_owned()));
    }
    if meta.uid() != me() {
        return Err(RunDirError::Foreign {
            path: control.to_owned(),
            what: format!("a socket owned by uid {}", meta.uid()),
        });
    }
    match std::os::unix::net::UnixStream::connect(control) {
        Ok(_) => Err(RunDirError::ControlLive(control.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::warn!(path = %control.display(), "removing a stale control socket left by a previous master");
            FileId::of(&meta).remove_if_still(control);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RunDirError::ControlUnknown {
            path: control.to_owned(),
            source,
        }),
    }
}

impl RunDir {
    /// Checks or creates `dir`, locks it, claims the control path and removes a stale
    /// socket there.
    pub fn claim(dir: &Path, control: &Path) -> Result<Self, RunDirError> {
        if control.as_os_str().len() > 107 {
            return Err(RunDirError::PathTooLong(control.to_owned()));
        }
        check_dir(dir)?;
        let unusable = |source| RunDirError::Unusable {
            dir: dir.to_owned(),
            source,
        };
        let foreign = |path: &Path, what| RunDirError::Foreign {
            path: path.to_owned(),
            what,
        };
        let lock_path = dir.join("master.lock");
        let mut lock = match lock_file(&lock_path) {
            Ok(lock) => lock,
            Err(LockError::Held(mut file)) => {
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
            Err(LockError::Foreign(what)) => return Err(foreign(&lock_path, what)),
            Err(LockError::Io(e)) => return Err(unusable(e)),
        };
        // Locked and proven ours: only now may its old content go.
        lock.set_len(0).map_err(unusable)?;
        lock.rewind().map_err(unusable)?;
        write!(lock, "{}", std::process::id()).map_err(unusable)?;
        let control_lock_path = control_lock_path(control);
        let control_lock = match lock_file(&control_lock_path) {
            Ok(lock) => lock,
            Err(LockError::Held(_)) => return Err(RunDirError::ControlLive(control.to_owned())),
            Err(LockError::Foreign(what)) => return Err(foreign(&control_lock_path, what)),
            Err(LockError::Io(e)) => return Err(unusable(e)),
        };
        clear_stale_socket(control)?;
        Ok(Self {
            lock,
            lock_path,
            control_lock,
            control_lock_path,
        })
    }

    /// Removes both lock files if they are still the ones we locked (the locks
    /// themselves go with the process).
    pub fn remove_lock_file(&self) {
        for (file, path) in [
            (&*self.lock, &self.lock_path),
            (&*self.control_lock, &self.control_lock_path),
        ] {
            if let Ok(meta) = file.metadata() {
                FileId::of(&meta).remove_if_still(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A private scratch directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("wsfrd-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::DirBuilder::new().mode(0o700).create(&p).unwrap();
            Self(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
        let s = Scratch::new("link");
        let target = s.0.join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let run = s.0.join("run");
        std::fs::DirBuilder::new().mode(0o700).create(&run).unwrap();
        std::os::unix::fs::symlink(&target, run.join("master.lock")).unwrap();
        let err = RunDir::claim(&run, &run.join("control.sock"))
            .err()
            .expect("a symlinked lock file must be refused");
        assert!(matches!(err, RunDirError::Foreign { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }

    #[test]
    fn a_writable_directory_is_refused() {
        let s = Scratch::new("mode");
        std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = RunDir::claim(&s.0, &s.0.join("control.sock"))
            .err()
            .expect("a world-writable directory must be refused");
        assert!(
            matches!(err, RunDirError::Writable { mode: 0o777, .. }),
            "{err}"
        );
        assert!(!s.0.join("master.lock").exists());
    }

    #[test]
    fn a_symlinked_directory_is_refused() {
        let s = Scratch::new("dirlink");
        let real = s.0.join("real");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&real)
            .unwrap();
        let link = s.0.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = RunDir::claim(&link, &link.join("control.sock"))
            .err()
            .expect("a symlinked run directory must be refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn a_created_directory_is_private_and_the_lock_holds_our_pid() {
        let s = Scratch::new("new");
        let run = s.0.join("a/b");
        let claimed = RunDir::claim(&run, &run.join("control.sock")).unwrap();
        let mode = std::fs::metadata(&run).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        assert_eq!(
            std::fs::read_to_string(run.join("master.lock")).unwrap(),
            std::process::id().to_string()
        );
        assert!(matches!(
            RunDir::claim(&run, &run.join("control.sock")),
            Err(RunDirError::Locked { .. })
        ));
        claimed.remove_lock_file();
        assert!(!run.join("master.lock").exists());
        assert!(!run.join("control.sock.lock").exists());
    }

    #[test]
    fn a_control_path_locked_by_a_live_master_is_not_taken() {
        let s = Scratch::new("ctl");
        let (one, two) = (s.0.join("one"), s.0.join("two"));
        let control = one.join("control.sock");
        let _first = RunDir::claim(&one, &control).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&control).unwrap();
        let err = RunDir::claim(&two, &control)
            .err()
            .expect("a live control socket must not be claimed");
        assert!(matches!(err, RunDirError::ControlLive(_)), "{err}");
        assert!(control.exists());
        drop(listener);
    }

    #[test]
    fn an_answering_socket_is_live_even_without_a_lock() {
        let s = Scratch::new("answer");
        let control = s.0.join("other.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&control).unwrap();
        let err = RunDir::claim(&s.0.join("run"), &control)
            .err()
            .expect("an answering socket is live");
        assert!(matches!(err, RunDirError::ControlLive(_)), "{err}");
        assert!(control.exists());
    }

    #[test]
    fn a_dead_socket_is_removed_and_a_replacement_is_left_alone() {
        let s = Scratch::new("dead");
        let control = s.0.join("control.sock");
        drop(std::os::unix::net::UnixListener::bind(&control).unwrap());
        let run = s.0.join("run");
        let _claimed = RunDir::claim(&run, &control).unwrap();
        assert!(!control.exists());

        drop(std::os::unix::net::UnixListener::bind(&control).unwrap());
        let id = FileId::of_path(&control).unwrap();
        // Keep the first inode alive so the replacement cannot reuse its number.
        std::fs::hard_link(&control, s.0.join("first")).unwrap();
        let other = s.0.join("other.sock");
        drop(std::os::unix::net::UnixListener::bind(&other).unwrap());
        std::fs::rename(&other, &control).unwrap();
        id.remove_if_still(&control);
        assert!(control.exists(), "a socket that is not ours must stay");
    }
}
