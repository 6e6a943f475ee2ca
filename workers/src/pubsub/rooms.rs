//! The worker's rooms, in one place: a client's join and leave (limits, replies, presence
//! and interest messages to the master), the master's interest acknowledgement that
//! confirms waiting joins, and the delivery of a room's messages to its local members.
//! The bookkeeping itself is [`Hub`]; sessions call in here, and nothing here calls a
//! session.

use std::cell::RefCell;
use std::rc::Rc;

use super::hub::{Cancelled, Hub, Join};
use crate::conn::{self, Conn, frame};
use crate::ipc::{RoomEvent, ToMaster};
use crate::protocol::{self, Refusal};
use crate::worker::Worker;

/// The rooms one connection is in (confirmed or pending), kept by its session so that a
/// disconnect leaves every one of them.
#[derive(Default)]
pub(crate) struct Membership {
    /// Room names; most clients are in one or two rooms.
    rooms: Vec<Box<str>>,
}

impl Membership {
    fn position(&self, room: &str) -> Option<usize> {
        self.rooms.iter().position(|r| **r == *room)
    }
}

/// The worker's room table and what joining, leaving and delivering involve.
pub(crate) struct Rooms {
    /// The worker: settings, counters, the link to the master, frame delivery.
    worker: Rc<Worker>,
    /// Local membership.
    hub: RefCell<Hub>,
}

impl Rooms {
    /// No rooms yet.
    pub fn new(worker: Rc<Worker>) -> Self {
        Self {
            worker,
            hub: RefCell::new(Hub::default()),
        }
    }

    /// The worker the rooms belong to.
    pub fn worker(&self) -> &Rc<Worker> {
        &self.worker
    }

    /// A client asks to join `room` (`id`: its request id, raw JSON, to acknowledge).
    pub fn join(
        &self,
        member: &mut Membership,
        conn: &Rc<Conn>,
        room: String,
        id: Option<&str>,
    ) -> Result<(), Refusal> {
        let w = &self.worker;
        if member.position(&room).is_some() {
            // Already a member (or on the way): answer again, change nothing.
            w.reply_text(conn, &protocol::membership("joined", &room));
            if let Some(id) = id {
                w.reply_text(conn, &protocol::ack(id, None));
            }
            return Ok(());
        }
        let max = w.settings.max_rooms_per_connection;
        if member.rooms.len() >= max {
            return Err(Refusal::new(
                "too_many_rooms",
                format!("a connection may be in at most {max} rooms; leave one first"),
            ));
        }
        // Grow the list one slot at a time rather than by Vec's default of four.
        member.rooms.reserve_exact(1);
        member.rooms.push(room.as_str().into());
        let joined = self
            .hub
            .borrow_mut()
            .join(&room, conn, id.map(str::to_owned));
        self.count_rooms();
        match joined {
            Join::Joined => self.confirm_join(&room, conn, id),
            Join::Pending(Some(token)) => w.send(ToMaster::Interest {
                room,
                on: true,
                token,
            }),
            Join::Pending(None) => {}
        }
        Ok(())
    }

    /// A client asks to leave `room`; it gets `left` (and the ack) whether or not it was in.
    pub fn leave(&self, member: &mut Membership, conn: &Conn, room: &str, id: Option<&str>) {
        if let Some(i) = member.position(room) {
            member.rooms.swap_remove(i);
            if let Some(join) = self.remove(room, conn.id) {
                // Every request is answered in order: the join that was still waiting
                // for the master gets its `joined` and ack before the leave's.
                self.worker
                    .reply_text(conn, &protocol::membership("joined", room));
                if let Some(ack) = join.ack {
                    self.worker.reply_text(conn, &protocol::ack(&ack, None));
                }
            }
        }
        self.worker
            .reply_text(conn, &protocol::membership("left", room));
        if let Some(id) = id {
            self.worker.reply_text(conn, &protocol::ack(id, None));
        }
    }

    /// A client went away: it leaves every room it was in.
    pub fn leave_all(&self, member: &mut Membership, conn: u64) {
        for room in member.rooms.drain(..) {
            let _ = self.remove(&room, conn);
        }
    }

    /// The master routes `room` here now: confirm the joins that waited for it.
    pub fn on_interest_ack(&self, room: &str, token: u64) {
        let joined = self.hub.borrow_mut().interest_acked(room, token);
        for j in joined {
            self.confirm_join(room, &j.conn, j.ack.as_deref());
        }
    }

    /// A room message from the master: encoded once, shared by every local member.
    pub fn on_room(&self, room: &str, text: String, skip: Option<u64>) {
        let frame = frame::text(&text);
        let hub = self.hub.borrow();
        for member in hub.members(room) {
            if Some(member.id) != skip {
                self.worker.deliver(member, frame.clone());
            }
        }
    }

    /// Sends `joined` (and the ack) to a new member and tells the room's other members.
    fn confirm_join(&self, room: &str, conn: &Rc<Conn>, ack: Option<&str>) {
        let w = &self.worker;
        w.deliver(conn, frame::text(&protocol::membership("joined", room)));
        if let Some(ack) = ack {
            w.deliver(conn, frame::text(&protocol::ack(ack, None)));
        }
        w.send(ToMaster::Presence {
            room: room.to_owned(),
            event: RoomEvent::Join,
            conn: conn.id,
            id: w.fleet_id(conn.id),
        });
    }

    /// Removes connection `conn` from `room`, telling the others and the master; returns
    /// its join if that was still waiting for the master.
    fn remove(&self, room: &str, conn: u64) -> Option<Cancelled> {
        let left = self.hub.borrow_mut().leave(room, conn);
        if left.was_member {
            self.worker.send(ToMaster::Presence {
                room: room.to_owned(),
                event: RoomEvent::Leave,
                conn,
                id: self.worker.fleet_id(conn),
            });
        }
        if left.room_empty {
            self.worker.send(ToMaster::Interest {
                room: room.to_owned(),
                on: false,
                token: 0,
            });
        }
        self.count_rooms();
        left.cancelled
    }

    fn count_rooms(&self) {
        let n = self.hub.borrow().len() as u64;
        self.worker.counters.rooms.set(n);
    }
}

/// `/ws` connections report to the worker like any other.
impl conn::Host for Rooms {
    fn received(&self, bytes: usize) {
        self.worker.received(bytes);
    }

    fn violated(&self) {
        self.worker.violated();
    }

    fn ended(&self, conn: &Conn) {
        self.worker.ended(conn);
    }

    /// What a `/ws` client sends goes to the master: stop reading while it is behind.
    fn hold_reads(&self, cx: &mut std::task::Context<'_>) -> bool {
        self.worker.link_held(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::conn::test_conn;
    use crate::ipc::WorkerSettings;

    fn rooms(max_rooms: usize) -> (Rooms, mpsc::UnboundedReceiver<ToMaster>) {
        let (tx, rx, _) = crate::ipc::queue::channel(0);
        let settings = WorkerSettings {
            max_rooms_per_connection: max_rooms,
            ..WorkerSettings::default()
        };
        (Rooms::new(Rc::new(Worker::new(0, 1, settings, tx))), rx)
    }

    #[tokio::test]
    async fn a_first_join_waits_for_the_master_and_a_last_leave_withdraws() {
        let (rooms, mut rx) = rooms(1);
        let a = test_conn(1);
        let mut member = Membership::default();
        rooms.join(&mut member, &a, "r".into(), Some("7")).unwrap();
        let Ok(ToMaster::Interest {
            room,
            on: true,
            token,
        }) = rx.try_recv()
        else {
            panic!("the first join asks the master for the room")
        };
        assert_eq!(room, "r");
        assert_eq!(
            a.queued_bytes(),
            0,
            "no `joined` before the master routes the room"
        );
        assert_eq!(rooms.worker().counters.rooms.get(), 1);

        let refused = rooms.join(&mut member, &a, "s".into(), None).unwrap_err();
        assert_eq!(refused.code, "too_many_rooms");

        rooms.on_interest_ack("r", token);
        assert!(matches!(
            rx.try_recv(),
            Ok(ToMaster::Presence {
                event: RoomEvent::Join,
                conn: 1,
                ..
            })
        ));
        assert!(a.queued_bytes() > 0, "`joined` and the ack are queued");

        rooms.leave_all(&mut member, 1);
        assert!(matches!(
            rx.try_recv(),
            Ok(ToMaster::Presence {
                event: RoomEvent::Leave,
                conn: 1,
                ..
            })
        ));
        assert!(matches!(
            rx.try_recv(),
            Ok(ToMaster::Interest { on: false, .. })
        ));
        assert_eq!(rooms.worker().counters.rooms.get(), 0);
    }

    #[tokio::test]
    async fn a_leave_right_after_a_join_answers_the_join_first() {
        let (rooms, mut rx) = rooms(4);
        let a = test_conn(1);
        let mut member = Membership::default();
        rooms.join(&mut member, &a, "r".into(), Some("7")).unwrap();
        let Ok(ToMaster::Interest { token, .. }) = rx.try_recv() else {
            panic!("the first join asks the master for the room")
        };
        rooms.leave(&mut member, &a, "r", Some("8"));
        let expected: usize = [
            protocol::membership("joined", "r"),
            protocol::ack("7", None),
            protocol::membership("left", "r"),
            protocol::ack("8", None),
        ]
        .iter()
        .map(|t| frame::text(t).len())
        .sum();
        assert_eq!(a.queued_bytes(), expected, "joined, ack 7, left, ack 8");
        assert!(
            matches!(rx.try_recv(), Ok(ToMaster::Interest { on: false, .. })),
            "no presence for a member that never was; the interest is withdrawn"
        );
        rooms.on_interest_ack("r", token);
        assert_eq!(a.queued_bytes(), expected, "the late ack confirms nothing");
    }

    #[tokio::test]
    async fn joining_twice_changes_nothing_and_leaving_a_stranger_room_still_answers() {
        let (rooms, mut rx) = rooms(4);
        let a = test_conn(1);
        let mut member = Membership::default();
        rooms.join(&mut member, &a, "r".into(), None).unwrap();
        assert!(matches!(
            rx.try_recv(),
            Ok(ToMaster::Interest { on: true, .. })
        ));
        rooms.join(&mut member, &a, "r".into(), None).unwrap();
        assert!(
            rx.try_recv().is_err(),
            "a second join sends the master nothing"
        );
        assert!(a.queued_bytes() > 0, "but is answered with `joined`");

        let b = test_conn(2);
        rooms.leave(&mut Membership::default(), &b, "r", Some("1"));
        assert!(rx.try_recv().is_err(), "b was not in r: nobody is told");
        assert!(b.queued_bytes() > 0, "b still gets `left` and the ack");
    }
}
