//! The worker's live counters. The worker is single-threaded, so plain `Cell`s suffice;
//! a snapshot goes to the master on request. The fields come from the one list in
//! [`with_counters!`](crate::with_counters).

use std::cell::{Cell, RefCell};

use crate::ipc::{LatencyHistogram, WorkerCounters};

/// Builds [`Counters`] and its snapshot from the counter list.
macro_rules! counter_cells {
    ($($name:ident $kind:ident $col:literal $metric:literal $lk:literal $lv:literal $help:literal;)*) => {
        /// One cell per figure in [`WorkerCounters`].
        #[derive(Default)]
        pub struct Counters {
            $(#[doc = $help] pub $name: Cell<u64>,)*
            /// Publish-to-delivery latency of room messages.
            pub delivery_latency: RefCell<LatencyHistogram>,
        }

        impl Counters {
            /// The figures as they are now.
            pub fn snapshot(&self) -> WorkerCounters {
                WorkerCounters {
                    $($name: self.$name.get(),)*
                    delivery_latency: self.delivery_latency.borrow().clone(),
                }
            }
        }
    };
}

crate::with_counters!(counter_cells);

/// Adds `n` to a counter.
pub fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// Subtracts `n` from a gauge, saturating at zero.
pub fn sub(c: &Cell<u64>, n: u64) {
    c.set(c.get().saturating_sub(n));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_copies_every_cell() {
        let c = Counters::default();
        add(&c.messages_in, 3);
        add(&c.connections_current, 2);
        sub(&c.connections_current, 5);
        c.delivery_latency.borrow_mut().record(1_000);
        let s = c.snapshot();
        assert_eq!(s.messages_in, 3);
        assert_eq!(s.connections_current, 0);
        assert_eq!(s.delivery_latency.count(), 1);
    }
}
