//! `wsfleet-worker`: everything that runs inside a worker process, and the IPC types the
//! master and the workers share.
#![allow(unsafe_code)] // only in `fd`, see there

pub mod ipc;
