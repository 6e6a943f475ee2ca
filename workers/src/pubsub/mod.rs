//! Rooms and broadcasts: the worker's local room table and the per-connection session
//! that ties a `/ws` client to it and to the master (the wire format is
//! [`crate::protocol`]).

pub(crate) mod hub;
pub(crate) mod session;
