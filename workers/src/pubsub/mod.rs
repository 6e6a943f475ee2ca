//! Rooms and broadcasts: the worker's local room table ([`hub`]), joining, leaving and
//! delivering ([`rooms`]), and the per-connection session that parses a `/ws` client's
//! requests ([`session`]; the wire format is [`crate::protocol`]).
//!
//! Layers point one way: session → rooms → hub, and rooms → worker → conn.

pub(crate) mod hub;
mod query;
pub(crate) mod rooms;
pub(crate) mod session;
