//! The worker's room table: which local connections are members of which room, and
//! whether the master already routes the room's messages here.
//!
//! A room's first local join asks the master for the room's messages (an `Interest`
//! carrying a fresh token) and waits, pending, for the answer; only then are joins
//! confirmed, so a member never misses a message ordered after its `joined`. The last
//! local leave withdraws the interest. Pure bookkeeping: the caller sends the frames.

use std::collections::HashMap;
use std::rc::Rc;

use crate::conn::Conn;

/// A join waiting for the master to route the room here.
pub struct PendingJoin {
    /// The joining connection.
    pub conn: Rc<Conn>,
    /// The request's `id` (raw JSON), to acknowledge once joined.
    pub ack: Option<String>,
}

/// One room with local members.
struct Room {
    /// Confirmed members: they receive the room's messages.
    members: Vec<Rc<Conn>>,
    /// Joins waiting for the interest acknowledgement.
    pending: Vec<PendingJoin>,
    /// The token of the interest request in flight, or `None` once acknowledged.
    awaiting: Option<u64>,
}

/// What a join did.
pub enum Join {
    /// Already a member or confirmed at once: reply `joined` now.
    Joined,
    /// Waiting for the master; send it `Interest { on: true, token }` if `Some`.
    Pending(Option<u64>),
}

/// What a leave did.
#[derive(Debug, PartialEq, Eq)]
pub struct Left {
    /// The connection was a confirmed member (so the others get a presence notice).
    pub was_member: bool,
    /// The room has no local members left: withdraw the interest.
    pub room_empty: bool,
    /// The connection's join was still waiting for the master: it must be answered now
    /// (`joined`, then its ack), before the leave's answers.
    pub cancelled: Option<Cancelled>,
}

/// A pending join that a leave ended before the master answered.
#[derive(Debug, PartialEq, Eq)]
pub struct Cancelled {
    /// The join's `id` (raw JSON), to acknowledge.
    pub ack: Option<String>,
}

/// All rooms of this worker.
#[derive(Default)]
pub struct Hub {
    /// Rooms with at least one member or pending join. Boxed values keep the table's
    /// slots small (a worker may hold tens of thousands of one-member rooms).
    rooms: HashMap<Box<str>, Box<Room>>,
    /// Source of interest tokens.
    next_token: u64,
}

impl Hub {
    /// Number of rooms with local members or pending joins.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Adds `conn` to `room`.
    pub fn join(&mut self, room: &str, conn: &Rc<Conn>, ack: Option<String>) -> Join {
        if let Some(r) = self.rooms.get_mut(room) {
            if r.members.iter().any(|m| m.id == conn.id) {
                return Join::Joined;
            }
            if r.awaiting.is_none() {
                r.members.push(conn.clone());
                return Join::Joined;
            }
            if !r.pending.iter().any(|p| p.conn.id == conn.id) {
                r.pending.push(PendingJoin {
                    conn: conn.clone(),
                    ack,
                });
            }
            return Join::Pending(None);
        }
        self.next_token += 1;
        let token = self.next_token;
        self.rooms.insert(
            room.into(),
            Box::new(Room {
                members: Vec::with_capacity(1),
                pending: vec![PendingJoin {
                    conn: conn.clone(),
                    ack,
                }],
                awaiting: Some(token),
            }),
        );
        Join::Pending(Some(token))
    }

    /// Removes connection `id` from `room` (member or pending).
    pub fn leave(&mut self, room: &str, id: u64) -> Left {
        let Some(r) = self.rooms.get_mut(room) else {
            return Left {
                was_member: false,
                room_empty: false,
                cancelled: None,
            };
        };
        let mut was_member = false;
        let mut cancelled = None;
        if let Some(i) = r.members.iter().position(|m| m.id == id) {
            r.members.swap_remove(i);
            was_member = true;
        } else if let Some(i) = r.pending.iter().position(|p| p.conn.id == id) {
            let join = r.pending.swap_remove(i);
            cancelled = Some(Cancelled { ack: join.ack });
        }
        let room_empty = r.members.is_empty() && r.pending.is_empty();
        if room_empty {
            self.rooms.remove(room);
        }
        Left {
            was_member,
            room_empty,
            cancelled,
        }
    }

    /// The master now routes `room` here: confirms and returns the pending joins, unless
    /// `token` is stale.
    pub fn interest_acked(&mut self, room: &str, token: u64) -> Vec<PendingJoin> {
        let Some(r) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        if r.awaiting != Some(token) {
            return Vec::new();
        }
        r.awaiting = None;
        let joined = std::mem::take(&mut r.pending);
        r.members.extend(joined.iter().map(|p| p.conn.clone()));
        joined
    }

    /// The confirmed members of `room`.
    pub fn members(&self, room: &str) -> &[Rc<Conn>] {
        self.rooms
            .get(room)
            .map(|r| r.members.as_slice())
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::conn::test_conn as conn;

    #[tokio::test]
    async fn first_join_waits_for_the_master_then_later_joins_are_immediate() {
        let mut hub = Hub::default();
        let (a, b, c) = (conn(1), conn(2), conn(3));
        let Join::Pending(Some(token)) = hub.join("r", &a, Some("1".into())) else {
            panic!()
        };
        assert!(matches!(hub.join("r", &b, None), Join::Pending(None)));
        assert!(hub.members("r").is_empty(), "pending joins receive nothing");
        let joined = hub.interest_acked("r", token);
        assert_eq!(joined.len(), 2);
        assert_eq!(joined[0].ack.as_deref(), Some("1"));
        assert!(matches!(hub.join("r", &c, None), Join::Joined));
        assert_eq!(hub.members("r").len(), 3);
    }

    #[tokio::test]
    async fn a_stale_ack_does_not_confirm_a_rejoin() {
        let mut hub = Hub::default();
        let a = conn(1);
        let Join::Pending(Some(t1)) = hub.join("r", &a, None) else {
            panic!()
        };
        assert_eq!(
            hub.leave("r", 1),
            Left {
                was_member: false,
                room_empty: true,
                cancelled: Some(Cancelled { ack: None })
            }
        );
        let Join::Pending(Some(t2)) = hub.join("r", &a, None) else {
            panic!()
        };
        assert!(hub.interest_acked("r", t1).is_empty());
        assert!(hub.members("r").is_empty());
        assert_eq!(hub.interest_acked("r", t2).len(), 1);
        assert_eq!(hub.members("r").len(), 1);
    }

    #[tokio::test]
    async fn last_leave_empties_the_room() {
        let mut hub = Hub::default();
        let (a, b) = (conn(1), conn(2));
        let Join::Pending(Some(t)) = hub.join("r", &a, None) else {
            panic!()
        };
        hub.interest_acked("r", t);
        assert!(matches!(hub.join("r", &b, None), Join::Joined));
        assert_eq!(
            hub.leave("r", 1),
            Left {
                was_member: true,
                room_empty: false,
                cancelled: None
            }
        );
        assert_eq!(
            hub.leave("r", 2),
            Left {
                was_member: true,
                room_empty: true,
                cancelled: None
            }
        );
        assert_eq!(hub.len(), 0);
        assert_eq!(
            hub.leave("r", 2),
            Left {
                was_member: false,
                room_empty: false,
                cancelled: None
            }
        );
    }
}
