//! `wsfleet-worker`: everything that runs inside a worker process, the IPC types the
//! master and the workers share, and the `/ws` client protocol.
//!
//! # Public surface
//! What the master and `wsfleet bench` use, and nothing else:
//! - [`run`], [`WorkerArgs`], [`WorkerError`]: the worker process's entry point.
//! - [`ipc`]: master ⇄ worker messages, their codec and framing, the settings the master
//!   sends ([`ipc::WorkerSettings`]) and their defaults ([`ipc::defaults`]).
//! - [`protocol`]: the `/ws` client protocol (parse requests, build frames, room rules,
//!   and the client's side: build requests, read the server's frames).
//! - [`http`]: only its JSON response helper is public, for the master's admin listener.
//! - [`auth`]: connection tokens and room permissions; the master reads the key and the
//!   `[[namespace]]` permissions into [`ipc::WorkerSettings`] with these types.
//! - [`deflate`]: permessage-deflate (negotiation, the shared compressor, the inflating
//!   frame reader), public for `wsfleet bench --deflate`, which reads compressed frames
//!   with the same reader.
//!
//! # Layout (private)
//! - `run`: a worker's life: adopt inherited sockets, Hello/Start, accept, drain, exit.
//! - `accept`: the accept loop; 503 past the open-file limit (a reserved descriptor), and
//!   `max_connections` fitted to that limit at start-up.
//! - `fd`: the only `unsafe`: adopting inherited file descriptors, registering the link socket.
//! - `worker`: the state a worker's tasks share (settings, counters, rooms, clients).
//! - `link`: the worker side of the master link (batched writes, dispatch of reads).
//! - `http`: hyper routes and the WebSocket upgrade.
//! - `upgrade_io`: the socket under hyper; holds the 101 answer back so it leaves with
//!   the first frames in one write.
//! - `conn`: one WebSocket: its socket and bounded write queue (shared with the fan-out),
//!   frame encoding, and the task-side driver. Knows nothing of rooms or the worker.
//! - `pubsub`: the local room table and the per-client session.
//! - `echo`: the `/echo` endpoint.
//! - `heartbeat`: pings and the silence timeout, one sweep for all connections.
//! - `counters`: live figures for `wsfleet stats`.
//! - `admission`: the per-IP connect rate (per worker) and the wait for the master's
//!   fleet-wide per-user and per-IP count (429 at the upgrade).
//! - `assets`: the chat page and icon.
//! - `fuzzing` (public but hidden): a real connection driver fed arbitrary client bytes,
//!   for the property tests in `tests/fuzz/`.

mod accept;
mod admission;
mod assets;
pub mod auth;
mod conn;
mod counters;
pub mod deflate;
mod echo;
mod fd;
#[doc(hidden)]
pub mod fuzzing;
mod heartbeat;
mod http;
pub mod ipc;
mod link;
pub mod protocol;
mod pubsub;
mod run;
mod upgrade_io;
mod worker;

pub use run::{WorkerArgs, WorkerError, run};
