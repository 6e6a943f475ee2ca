//! The one module with `unsafe`: adopting the file descriptors the master leaves open
//! across `exec` (the slot's listening socket and the worker's end of the IPC link), and
//! registering a link socket with the runtime for chosen interests (`ipc::socket`).
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Why an inherited descriptor could not be adopted.
#[derive(Debug, thiserror::Error)]
pub enum FdError {
    /// The number does not name an open descriptor in this process.
    #[error(
        "file descriptor {fd} ({what}) is not open: `wsfleet worker` is started by the master, not by hand"
    )]
    NotOpen {
        /// The descriptor number passed on the command line.
        fd: RawFd,
        /// What it was supposed to be.
        what: &'static str,
    },
    /// The descriptor is stdin/stdout/stderr, which the worker must not take over.
    #[error("file descriptor {fd} ({what}) is a standard stream; refusing to adopt it")]
    Standard {
        /// The descriptor number passed on the command line.
        fd: RawFd,
        /// What it was supposed to be.
        what: &'static str,
    },
}

/// Takes ownership of descriptor `fd`, inherited from the master, after checking that it
/// is open and not a standard stream. Call it once per descriptor.
pub fn adopt(fd: RawFd, what: &'static str) -> Result<OwnedFd, FdError> {
    if fd <= 2 {
        return Err(FdError::Standard { fd, what });
    }
    // F_GETFD fails with EBADF on a closed descriptor; it does not change anything.
    if nix::fcntl::fcntl(
        // SAFETY: the borrowed fd is used only for this F_GETFD probe, which is valid
        // on any integer and returns EBADF when it is not an open descriptor.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .is_err()
    {
        return Err(FdError::NotOpen { fd, what });
    }
    // SAFETY: `fd` is open (checked above), not a standard stream, and was handed to
    // this process by the master for this purpose only; nothing else in the worker owns
    // or closes it, so taking ownership here is sound.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
/// Registers a Unix socket with the runtime for `interest` only (tokio made the
/// registration `unsafe`: it cannot see that the descriptor stays the same while
/// registered). Must run inside the runtime.
pub fn register_unix(
    stream: std::os::unix::net::UnixStream,
    interest: tokio::io::Interest,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::unix::net::UnixStream>> {
    // SAFETY: a `UnixStream` owns its descriptor and closes it only when dropped, and it
    // moves into the `AsyncFd`, which hands it out only by shared reference: the
    // descriptor stays open and names the same socket for as long as it is registered.
    Ok(unsafe { tokio::io::unix::AsyncFd::register_with_interest(stream, interest) }?)
}
