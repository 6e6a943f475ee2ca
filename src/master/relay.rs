//! The broker that replaces Redis: which workers have members in which room, and each
//! room's sequence number. Pure bookkeeping; the fleet sends the frames.
//!
//! Ordering: the master handles messages one at a time, so the `seq` it assigns is the
//! room's single order, and every worker receives a room's frames over one stream socket
//! in that order. A room's sequence starts at 1 when the fleet gains its first member of
//! it and is forgotten when the last worker withdraws.

use std::collections::HashMap;

/// Worker keys, as the fleet numbers its worker processes.
pub type WorkerKey = u64;

/// One room as the master sees it.
#[derive(Debug, Default)]
struct Route {
    /// Last sequence number assigned.
    seq: u64,
    /// Workers with at least one local member.
    workers: Vec<WorkerKey>,
}

/// All rooms of the fleet.
#[derive(Debug, Default)]
pub struct Relay {
    /// Rooms with at least one interested worker.
    rooms: HashMap<Box<str>, Route>,
}

impl Relay {
    /// Records that `worker` gained (`on`) or lost its local members of `room`.
    pub fn interest(&mut self, worker: WorkerKey, room: &str, on: bool) {
        if on {
            let route = self.rooms.entry(room.into()).or_default();
            if !route.workers.contains(&worker) {
                // Most rooms live on one or two workers: grow one slot at a time.
                route.workers.reserve_exact(1);
                route.workers.push(worker);
            }
        } else if let Some(route) = self.rooms.get_mut(room) {
            route.workers.retain(|w| *w != worker);
            if route.workers.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// Orders a publish: the room's next `seq` and the workers to send it to; `None`
    /// when no worker has members (nobody to deliver to, nothing to order).
    pub fn publish(&mut self, room: &str) -> Option<(u64, &[WorkerKey])> {
        let route = self.rooms.get_mut(room)?;
        route.seq += 1;
        Some((route.seq, &route.workers))
    }

    /// Workers with members of `room`.
    pub fn targets(&self, room: &str) -> &[WorkerKey] {
        self.rooms
            .get(room)
            .map(|r| r.workers.as_slice())
            .unwrap_or(&[])
    }

    /// Forgets a worker that exited.
    pub fn remove_worker(&mut self, worker: WorkerKey) {
        self.rooms.retain(|_, route| {
            route.workers.retain(|w| *w != worker);
            !route.workers.is_empty()
        });
    }

    /// Rooms with members somewhere in the fleet.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_is_per_room_and_gapless() {
        let mut r = Relay::default();
        r.interest(1, "a", true);
        r.interest(2, "a", true);
        r.interest(2, "b", true);
        assert_eq!(
            r.publish("a").map(|(s, t)| (s, t.to_vec())),
            Some((1, vec![1, 2]))
        );
        assert_eq!(r.publish("a").map(|(s, _)| s), Some(2));
        assert_eq!(
            r.publish("b").map(|(s, t)| (s, t.to_vec())),
            Some((1, vec![2]))
        );
        assert_eq!(r.publish("nobody"), None);
    }

    #[test]
    fn interest_off_and_exit_remove_routes() {
        let mut r = Relay::default();
        r.interest(1, "a", true);
        r.interest(1, "a", true);
        r.interest(2, "a", true);
        r.interest(1, "a", false);
        assert_eq!(r.targets("a"), &[2]);
        r.remove_worker(2);
        assert_eq!(r.rooms(), 0);
        r.interest(3, "a", true);
        assert_eq!(
            r.publish("a").map(|(s, _)| s),
            Some(1),
            "a new life starts at 1"
        );
    }
}
