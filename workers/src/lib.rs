//! `wsfleet-worker`: everything that runs inside a worker process, and the IPC types the
//! master and the workers share.
//!
//! # Layout
//! - [`ipc`]: master ⇄ worker messages, their codec and framing (used by both sides).
//! - [`run`]: a worker's life: adopt inherited sockets, Hello/Start, accept, drain, exit.
//! - [`fd`]: the only `unsafe`: adopting inherited file descriptors.
//! - [`worker`]: the state a worker's tasks share (settings, counters, rooms, clients).
//! - [`link`]: the worker side of the master link (batched writes, dispatch of reads).
//! - [`http`]: hyper routes and the WebSocket upgrade.
//! - [`conn`]: one WebSocket: its bounded outbox and the read/write driver.
//! - [`pubsub`]: the `/ws` protocol, the local room table, the per-client session.
//! - [`echo`]: the `/echo` endpoint.
//! - [`counters`]: live figures for `wsfleet stats`.
//! - [`assets`]: the chat page and icon.

pub mod assets;
pub mod conn;
pub mod counters;
pub mod echo;
pub mod fd;
pub mod http;
pub mod ipc;
pub mod link;
pub mod pubsub;
pub mod run;
pub mod worker;

pub use run::{WorkerArgs, WorkerError, run};
