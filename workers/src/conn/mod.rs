//! One WebSocket connection: its outbox (shared with whoever sends to it) and the driver
//! that moves frames between the socket and the session logic.

pub mod driver;
pub mod outbox;

pub use driver::{Driver, Event};
pub use outbox::{CloseCause, Outbox};
