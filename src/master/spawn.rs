//! Starting one worker process: the same binary re-executed with the hidden `worker`
//! subcommand, inheriting its slot's listening socket and one end of a fresh socket pair.
//!
//! Descriptors are passed by inheritance: both are marked inheritable just for the
//! `spawn` and the listener is made close-on-exec again right after. The master spawns
//! from a single thread, so no other child can inherit them meanwhile.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

use crate::cli::LogFormat;

/// A started worker process.
pub struct Spawned {
    /// The child, to wait on.
    pub child: tokio::process::Child,
    /// The master's end of the link.
    pub link: UnixStream,
    /// The child's pid.
    pub pid: u32,
}

/// What the new worker needs to know.
pub struct WorkerSpec<'a> {
    /// The binary to run (the path the master was started from).
    pub exe: &'a Path,
    /// The slot's listening socket.
    pub listener: &'a socket2::Socket,
    /// Slot index.
    pub slot: u32,
    /// The new worker's generation.
    pub generation: u64,
    /// Log filter for the worker.
    pub log_level: &'a str,
    /// Log format for the worker.
    pub log_format: LogFormat,
}

fn inheritable(fd: impl AsFd, yes: bool) -> std::io::Result<()> {
    let flags = if yes {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))
        .map(|_| ())
        .map_err(std::io::Error::from)
}

/// Starts a worker.
pub fn spawn(spec: &WorkerSpec<'_>) -> std::io::Result<Spawned> {
    let (ours, theirs) = UnixStream::pair()?;
    inheritable(&theirs, true)?;
    inheritable(spec.listener, true)?;
    let format = match spec.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let result = tokio::process::Command::new(spec.exe)
        .arg("worker")
        .args(["--slot", &spec.slot.to_string()])
        .args(["--generation", &spec.generation.to_string()])
        .args(["--listen-fd", &spec.listener.as_raw_fd().to_string()])
        .args(["--ipc-fd", &theirs.as_raw_fd().to_string()])
        .args(["--log-level", spec.log_level])
        .args(["--log-format", format])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn();
    let restored = inheritable(spec.listener, false);
    drop(theirs);
    let child = result?;
    restored?;
    let pid = child.id().unwrap_or(0);
    ours.set_nonblocking(true)?;
    Ok(Spawned {
        child,
        link: ours,
        pid,
    })
}
