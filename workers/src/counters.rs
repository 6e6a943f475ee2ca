//! The worker's live counters. The worker is single-threaded, so plain `Cell`s suffice;
//! a snapshot goes to the master on request.

use std::cell::{Cell, RefCell};

use crate::ipc::{LatencyHistogram, WorkerCounters};

/// One counter per figure in [`WorkerCounters`]; see there for what each means.
#[derive(Default)]
#[allow(missing_docs)]
pub struct Counters {
    pub connections_current: Cell<u64>,
    pub connections_total: Cell<u64>,
    pub rejected_full: Cell<u64>,
    pub rejected_draining: Cell<u64>,
    pub rejected_origin: Cell<u64>,
    pub messages_in: Cell<u64>,
    pub messages_out: Cell<u64>,
    pub bytes_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    pub rooms: Cell<u64>,
    pub publishes: Cell<u64>,
    pub slow_consumer_closes: Cell<u64>,
    pub protocol_errors: Cell<u64>,
    pub request_errors: Cell<u64>,
    pub ipc_frames_in: Cell<u64>,
    pub ipc_frames_out: Cell<u64>,
    pub delivery_latency: RefCell<LatencyHistogram>,
}

/// Adds `n` to a counter.
pub fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// Subtracts `n` from a gauge, saturating at zero.
pub fn sub(c: &Cell<u64>, n: u64) {
    c.set(c.get().saturating_sub(n));
}

impl Counters {
    /// The figures as they are now.
    pub fn snapshot(&self) -> WorkerCounters {
        WorkerCounters {
            connections_current: self.connections_current.get(),
            connections_total: self.connections_total.get(),
            rejected_full: self.rejected_full.get(),
            rejected_draining: self.rejected_draining.get(),
            rejected_origin: self.rejected_origin.get(),
            messages_in: self.messages_in.get(),
            messages_out: self.messages_out.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            rooms: self.rooms.get(),
            publishes: self.publishes.get(),
            slow_consumer_closes: self.slow_consumer_closes.get(),
            protocol_errors: self.protocol_errors.get(),
            request_errors: self.request_errors.get(),
            ipc_frames_in: self.ipc_frames_in.get(),
            ipc_frames_out: self.ipc_frames_out.get(),
            delivery_latency: self.delivery_latency.borrow().clone(),
        }
    }
}
