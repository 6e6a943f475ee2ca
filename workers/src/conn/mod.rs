//! One WebSocket connection.
//!
//! - [`shared::Conn`]: the socket and its bounded write queue, shared by the connection's
//!   own task and by every fan-out that delivers to it. Frames are written straight to the
//!   socket (vectored, many frames per syscall) by whoever flushes; the task only steps in
//!   when the socket is full.
//! - [`frame`]: server→client frames, encoded once and shared by every recipient.
//! - [`driver`]: the protocol side: tungstenite parses the client's frames (and queues its
//!   pong and close replies into the same write queue).
//! - [`task`]: the connection's whole life as one small hand-written future, calling the
//!   endpoint's [`Handler`] and telling its [`Host`] what every connection does.
//! - [`clock`]: the coarse millisecond clock connections are stamped with.
//!
//! This layer knows nothing of rooms or of the worker: whoever owns connections implements
//! [`Host`], and each endpoint (`/ws`, `/echo`) implements [`Handler`].

pub mod clock;
pub mod driver;
pub mod frame;
pub mod shared;
pub mod task;

pub use clock::now_ms;
pub use driver::{Driver, Event};
pub use shared::{CloseCause, Conn, Pushed};
pub use task::{ConnTask, Handler, Host};
