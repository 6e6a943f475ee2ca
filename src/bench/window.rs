//! The in-flight window of `fanout --rate max`: a message is complete when every subscriber
//! received it. Subscribers count down a per-message slot in a lock-free ring; the publisher
//! waits while `published - completed >= window`.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Ring of per-message remaining-receiver counters shared by publisher and subscribers.
pub struct Window {
    /// Slot `p % len`: high 32 bits = `p` (mod 2^32), low 32 bits = receivers still missing.
    slots: Box<[AtomicU64]>,
    /// Subscribers every message must reach.
    subs: u32,
    /// Messages completed or abandoned.
    done: AtomicU64,
    /// Wakes the publisher when `done` moves.
    pub notify: Notify,
}

const LOW: u64 = 0xffff_ffff;

impl Window {
    /// A window for `window` messages in flight and `subs` receivers.
    pub fn new(window: usize, subs: usize) -> Window {
        let len = (window * 4).next_power_of_two().max(64);
        Window {
            slots: (0..len).map(|_| AtomicU64::new(0)).collect(),
            subs: subs.min(u32::MAX as usize) as u32,
            done: AtomicU64::new(0),
            notify: Notify::new(),
        }
    }

    /// Messages completed or abandoned so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    fn slot(&self, p: u64) -> &AtomicU64 {
        &self.slots[(p as usize) & (self.slots.len() - 1)]
    }

    fn complete_one(&self) {
        self.done.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// The publisher is about to send `p`. A still-incomplete older message in that slot is
    /// abandoned (counted done, so a lost message cannot stall the window forever).
    pub fn publish(&self, p: u64) {
        let old = self
            .slot(p)
            .swap(((p & LOW) << 32) | u64::from(self.subs), Ordering::AcqRel);
        if old & LOW != 0 {
            self.complete_one();
        }
    }

    /// A subscriber received `p`; late, duplicate or foreign receipts are ignored.
    pub fn received(&self, p: u64) {
        let slot = self.slot(p);
        let mut cur = slot.load(Ordering::Acquire);
        loop {
            if cur >> 32 != p & LOW || cur & LOW == 0 {
                return;
            }
            match slot.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if cur & LOW == 1 {
                        self.complete_one();
                    }
                    return;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Gives up on every incomplete message (after a stall); returns how many.
    pub fn abandon_all(&self) -> u64 {
        let mut n = 0;
        for slot in self.slots.iter() {
            let mut cur = slot.load(Ordering::Acquire);
            while cur & LOW != 0 {
                match slot.compare_exchange_weak(
                    cur,
                    cur & !LOW,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        n += 1;
                        self.complete_one();
                        break;
                    }
                    Err(now) => cur = now,
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_when_all_received() {
        let w = Window::new(4, 3);
        w.publish(0);
        w.publish(1);
        w.received(0);
        w.received(0);
        assert_eq!(w.done(), 0);
        w.received(0);
        assert_eq!(w.done(), 1);
        w.received(0); // duplicate
        assert_eq!(w.done(), 1);
        w.received(1);
        assert_eq!(w.abandon_all(), 1);
        assert_eq!(w.done(), 2);
        w.received(1); // late
        assert_eq!(w.done(), 2);
    }

    #[test]
    fn reuse_abandons_old() {
        let w = Window::new(1, 2);
        let len = w.slots.len() as u64;
        w.publish(0);
        w.publish(len); // same slot
        assert_eq!(w.done(), 1);
        w.received(0); // stale: ignored
        w.received(len);
        w.received(len);
        assert_eq!(w.done(), 2);
    }
}
