//! Rooms and broadcasts: the `/ws` client protocol, the worker's local room table, and
//! the per-connection session that ties them to the master.

pub mod hub;
pub mod protocol;
pub mod session;
