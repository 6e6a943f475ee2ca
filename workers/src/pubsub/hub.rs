//! The worker's room table: which local connections are members of which room, and which
//! joins wait for the master.
//!
//! Every join asks the master (a `Join` carrying a fresh token) and waits, pending, for
//! its answer; the master answers at one point of the room's order (with the position and
//! any replay), so a member never misses a message ordered after its `joined` and never
//! gets one twice. A pending join receives none of the room's live messages. A client's
//! leave that comes while its join still waits is kept on the join and carried out with
//! the answer, so the join is answered first. The last local leave withdraws the room.
//! Pure bookkeeping: the caller sends the frames.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::conn::Conn;

/// A join waiting for the master's answer.
pub struct PendingJoin {
    /// The joining connection.
    pub conn: Rc<Conn>,
    /// The request's `id` (raw JSON), to acknowledge once joined.
    pub ack: Option<String>,
    /// The token of the `Join` sent for it: an answer with another token is stale.
    pub token: u64,
    /// The client asked to leave while the join waited (`Some(id)`, the leave's request
    /// `id`): when the answer comes, `joined` and the join's ack go first, then `left`.
    pub leave: Option<Option<String>>,
}

/// One room with local members.
struct Room {
    /// Confirmed members: they receive the room's messages.
    members: Vec<Rc<Conn>>,
    /// Joins waiting for the master's answer.
    pending: Vec<PendingJoin>,
    /// Members and pending joins (by connection id) without the room's `presence`
    /// permission: presence frames skip them. None in the usual case: one pointer, where
    /// an empty set's 48-byte header made a one-member room's entry a size class larger.
    #[allow(clippy::box_collection)]
    blind: Option<Box<HashSet<u64>>>,
}

impl Room {
    /// Takes pending join `i` out; the last one gives the list's memory back (a room
    /// whose joins are all answered keeps no slots for more: every one-member room kept
    /// 4 × 64 bytes there).
    fn take_pending(&mut self, i: usize) -> PendingJoin {
        let join = self.pending.swap_remove(i);
        if self.pending.is_empty() {
            self.pending = Vec::new();
        }
        join
    }

    /// Forgets that connection `id` lacks the presence permission (it left); the last
    /// one gives the set back.
    fn show_presence(&mut self, id: u64) {
        if let Some(blind) = &mut self.blind {
            blind.remove(&id);
            if blind.is_empty() {
                self.blind = None;
            }
        }
    }
}

/// What a join did.
pub enum Join {
    /// Already a member: reply `joined` now, tell nobody.
    Member,
    /// Already waiting for the master: its answer will come.
    Waiting,
    /// Waiting: send the master a `Join` with this token.
    Ask(u64),
}

/// What a leave did.
#[derive(Debug, PartialEq, Eq)]
pub struct Left {
    /// The connection was a confirmed member (so the others get a presence notice).
    pub was_member: bool,
    /// The room has no local members left: withdraw the interest.
    pub room_empty: bool,
    /// The connection's join still waits for the master: the leave is carried out (and
    /// answered) with that answer.
    pub deferred: bool,
}

/// What a master's answer to a join did.
pub struct Answered {
    /// The join it answered.
    pub join: PendingJoin,
    /// The room has no local members or joins left: withdraw the interest.
    pub room_empty: bool,
}

/// All rooms of this worker.
#[derive(Default)]
pub struct Hub {
    /// Rooms with at least one member or pending join. Boxed values keep the table's
    /// slots small (a worker may hold tens of thousands of one-member rooms).
    rooms: HashMap<Box<str>, Box<Room>>,
    /// Source of join tokens.
    next_token: u64,
}

impl Hub {
    /// Number of rooms with local members or pending joins.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Adds `conn` to `room`'s pending joins.
    pub fn join(&mut self, room: &str, conn: &Rc<Conn>, ack: Option<String>) -> Join {
        let r = self.room(room);
        // Pointer comparisons: a big room's members are scanned without touching each
        // connection.
        if r.members.iter().any(|m| Rc::ptr_eq(m, conn)) {
            return Join::Member;
        }
        if r.pending
            .iter()
            .any(|p| Rc::ptr_eq(&p.conn, conn) && p.leave.is_none())
        {
            return Join::Waiting;
        }
        Join::Ask(self.ask(room, conn, ack))
    }

    /// Adds `conn`, which the caller knows is neither a member of `room` nor waiting to
    /// be (its own membership list says so), to the room's pending joins without scanning
    /// the room: a join into a room of 10,000 local members costs what one into an empty
    /// room does. Returns the token for the master's `Join`.
    pub fn ask(&mut self, room: &str, conn: &Rc<Conn>, ack: Option<String>) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        self.room(room).pending.push(PendingJoin {
            conn: conn.clone(),
            ack,
            token,
            leave: None,
        });
        token
    }

    /// `room`'s entry, made if it has none.
    fn room(&mut self, room: &str) -> &mut Room {
        if !self.rooms.contains_key(room) {
            let fresh = Box::new(Room {
                members: Vec::with_capacity(1),
                pending: Vec::new(),
                blind: None,
            });
            self.rooms.insert(room.into(), fresh);
        }
        self.rooms.get_mut(room).expect("inserted above")
    }

    /// Whether `conn` is a member of `room` or waiting to be.
    pub fn contains(&self, room: &str, conn: &Conn) -> bool {
        self.rooms.get(room).is_some_and(|r| {
            r.members.iter().any(|m| same(m, conn))
                || r.pending
                    .iter()
                    .any(|p| same(&p.conn, conn) && p.leave.is_none())
        })
    }

    /// Removes `conn` from `room`. A join of its still waiting for the master is dropped
    /// when `defer` is `None` (the client went away), or keeps waiting with the leave
    /// (`defer`: the leave's request id) recorded on it. Members are found by address: when
    /// a room of 10,000 local members empties, each leave scans contiguous pointers rather
    /// than reading every member's connection (a cache miss each).
    pub fn leave(&mut self, room: &str, conn: &Conn, defer: Option<Option<String>>) -> Left {
        let Some(r) = self.rooms.get_mut(room) else {
            return Left {
                was_member: false,
                room_empty: false,
                deferred: false,
            };
        };
        let mut was_member = false;
        let mut deferred = false;
        if let Some(i) = r.members.iter().position(|m| same(m, conn)) {
            r.members.swap_remove(i);
            was_member = true;
        } else if let Some(i) = r
            .pending
            .iter()
            .position(|p| same(&p.conn, conn) && p.leave.is_none())
        {
            match defer {
                Some(leave) => {
                    r.pending[i].leave = Some(leave);
                    deferred = true;
                }
                None => {
                    r.take_pending(i);
                }
            }
        }
        if !deferred {
            r.show_presence(conn.id);
        }
        let room_empty = r.members.is_empty() && r.pending.is_empty();
        if room_empty {
            self.rooms.remove(room);
        }
        Left {
            was_member,
            room_empty,
            deferred,
        }
    }

    /// The master answered connection `id`'s join with `token`: takes the pending join
    /// out, making it a member if `accept` and no leave came meanwhile; `None` when the
    /// answer is stale.
    pub fn answered(&mut self, room: &str, id: u64, token: u64, accept: bool) -> Option<Answered> {
        let r = self.rooms.get_mut(room)?;
        let i = r
            .pending
            .iter()
            .position(|p| p.conn.id == id && p.token == token)?;
        let join = r.take_pending(i);
        if accept && join.leave.is_none() {
            r.members.push(join.conn.clone());
        } else {
            r.show_presence(id);
        }
        let room_empty = r.members.is_empty() && r.pending.is_empty();
        if room_empty {
            self.rooms.remove(room);
        }
        Some(Answered { join, room_empty })
    }

    /// Rooms with confirmed local members that `keep` accepts, and how many members each.
    pub fn counts(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, u64)> {
        self.rooms
            .iter()
            .filter(|(name, r)| !r.members.is_empty() && keep(name))
            .map(|(name, r)| (name.to_string(), r.members.len() as u64))
            .collect()
    }

    /// Connection `id`, a member of `room` or waiting to be, lacks the room's `presence`
    /// permission: presence frames skip it while it stays in the room.
    pub fn hide_presence(&mut self, room: &str, id: u64) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.blind.get_or_insert_default().insert(id);
        }
    }

    /// The members of `room` that presence frames skip; None when there are none.
    pub fn blind(&self, room: &str) -> Option<&HashSet<u64>> {
        self.rooms.get(room).and_then(|r| r.blind.as_deref())
    }

    /// The confirmed members of `room`.
    pub fn members(&self, room: &str) -> &[Rc<Conn>] {
        self.rooms
            .get(room)
            .map(|r| r.members.as_slice())
            .unwrap_or(&[])
    }
}

/// Whether `member` is the connection `conn` (by address: both are alive, so the
/// addresses differ exactly when the connections do).
fn same(member: &Rc<Conn>, conn: &Conn) -> bool {
    std::ptr::eq(Rc::as_ptr(member), conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::conn::test_conn as conn;

    #[tokio::test]
    async fn every_join_waits_for_its_own_answer() {
        let mut hub = Hub::default();
        let (a, b) = (conn(1), conn(2));
        let Join::Ask(ta) = hub.join("r", &a, Some("1".into())) else {
            panic!()
        };
        let Join::Ask(tb) = hub.join("r", &b, None) else {
            panic!()
        };
        assert_ne!(ta, tb);
        assert!(matches!(hub.join("r", &b, None), Join::Waiting));
        assert!(hub.members("r").is_empty(), "pending joins receive nothing");
        let joined = hub.answered("r", 1, ta, true).unwrap();
        assert_eq!(joined.join.ack.as_deref(), Some("1"));
        assert_eq!(hub.members("r").len(), 1, "b still waits for its answer");
        assert!(hub.answered("r", 2, tb, true).is_some());
        assert!(matches!(hub.join("r", &b, None), Join::Member));
        assert_eq!(hub.members("r").len(), 2);
    }

    #[tokio::test]
    async fn a_stale_answer_does_not_confirm_a_rejoin_and_a_refusal_leaves() {
        let mut hub = Hub::default();
        let a = conn(1);
        let Join::Ask(t1) = hub.join("r", &a, None) else {
            panic!()
        };
        assert_eq!(
            hub.leave("r", &a, None),
            Left {
                was_member: false,
                room_empty: true,
                deferred: false
            }
        );
        let Join::Ask(t2) = hub.join("r", &a, None) else {
            panic!()
        };
        assert!(hub.answered("r", 1, t1, true).is_none());
        assert!(hub.members("r").is_empty());
        assert!(hub.contains("r", &a));
        assert!(hub.answered("r", 1, t2, false).is_some());
        assert!(!hub.contains("r", &a), "a refused join is not a member");
    }

    #[tokio::test]
    async fn counts_list_confirmed_members_only() {
        let mut hub = Hub::default();
        let (a, b) = (conn(1), conn(2));
        let Join::Ask(t) = hub.join("r", &a, None) else {
            panic!()
        };
        hub.answered("r", 1, t, true);
        hub.join("s", &b, None);
        hub.join("r", &b, None);
        assert_eq!(hub.counts(|_| true), [("r".to_owned(), 1)]);
        assert!(hub.counts(|room| room != "r").is_empty());
    }

    #[tokio::test]
    async fn last_leave_empties_the_room() {
        let mut hub = Hub::default();
        let (a, b) = (conn(1), conn(2));
        for c in [&a, &b] {
            let Join::Ask(t) = hub.join("r", c, None) else {
                panic!()
            };
            hub.answered("r", c.id, t, true);
        }
        assert_eq!(
            hub.leave("r", &a, Some(None)),
            Left {
                was_member: true,
                room_empty: false,
                deferred: false
            }
        );
        assert_eq!(
            hub.leave("r", &b, Some(None)),
            Left {
                was_member: true,
                room_empty: true,
                deferred: false
            }
        );
        assert_eq!(hub.len(), 0);
        assert_eq!(
            hub.leave("r", &b, Some(None)),
            Left {
                was_member: false,
                room_empty: false,
                deferred: false
            }
        );
    }

    #[tokio::test]
    async fn a_leave_while_the_join_waits_is_carried_out_with_the_answer() {
        let mut hub = Hub::default();
        let a = conn(1);
        let Join::Ask(t) = hub.join("r", &a, Some("7".into())) else {
            panic!()
        };
        assert_eq!(
            hub.leave("r", &a, Some(Some("8".into()))),
            Left {
                was_member: false,
                room_empty: false,
                deferred: true
            }
        );
        assert!(!hub.contains("r", &a), "no longer counts as joining");
        let Join::Ask(t2) = hub.join("r", &a, None) else {
            panic!("a new join after the leave asks again")
        };
        assert_ne!(t, t2);
        let answered = hub.answered("r", 1, t, true).unwrap();
        assert_eq!(answered.join.leave, Some(Some("8".into())));
        assert!(!answered.room_empty, "the second join still waits");
        assert!(hub.members("r").is_empty(), "the left join is not a member");
        let answered = hub.answered("r", 1, t2, true).unwrap();
        assert!(answered.join.leave.is_none());
        assert_eq!(hub.members("r").len(), 1);
    }

    #[tokio::test]
    async fn presence_blind_members_are_forgotten_when_they_leave() {
        let mut hub = Hub::default();
        let (a, b) = (conn(1), conn(2));
        let Join::Ask(ta) = hub.join("r", &a, None) else {
            panic!()
        };
        hub.hide_presence("r", 1);
        let Join::Ask(tb) = hub.join("r", &b, None) else {
            panic!()
        };
        hub.answered("r", 1, ta, true).unwrap();
        hub.answered("r", 2, tb, true).unwrap();
        assert!(hub.blind("r").unwrap().contains(&1));
        assert!(!hub.blind("r").unwrap().contains(&2));
        hub.leave("r", &a, None);
        assert!(hub.blind("r").is_none(), "a left member is not remembered");
        hub.hide_presence("r", 2);
        let Join::Ask(t) = hub.join("r", &a, None) else {
            panic!()
        };
        hub.hide_presence("r", 1);
        hub.answered("r", 1, t, false).unwrap();
        assert_eq!(
            hub.blind("r").map(|b| b.len()),
            Some(1),
            "a refused join is not remembered"
        );
        hub.hide_presence("gone", 3);
        assert!(hub.blind("gone").is_none(), "no room is made for it");
    }
}
