//! The worker's rooms, in one place: a client's join and leave (limits, replies, and the
//! join, leave and interest messages to the master, which keeps presence), the master's
//! answer that confirms waiting joins, and the delivery of a room's messages to its local
//! members.
//! The bookkeeping itself is [`Hub`]; sessions call in here, and nothing here calls a
//! session.

use std::cell::RefCell;
use std::rc::Rc;

use super::hub::{Answered, Hub, Join};
use crate::conn::{self, Conn, Outgoing};
use crate::counters;
use crate::ipc::{JoinAnswer, ToMaster};
use crate::protocol::{self, Refusal, Since};
use crate::worker::Worker;

/// What a `history` request asks for besides its room.
pub(crate) struct HistoryRequest {
    /// Most messages wanted.
    pub limit: usize,
    /// Page from this position.
    pub since: Option<Since>,
    /// Newest first.
    pub reverse: bool,
}

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
    pub(super) hub: RefCell<Hub>,
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

    /// A client asks to join `room` (`id`: its request id, raw JSON, to acknowledge),
    /// recovering what it missed after `since`.
    pub fn join(
        &self,
        member: &mut Membership,
        conn: &Rc<Conn>,
        room: String,
        since: Option<Since>,
        id: Option<&str>,
    ) -> Result<(), Refusal> {
        let w = &self.worker;
        // Joins the master refused are not rooms of this connection any more.
        member.rooms.retain(|r| self.hub.borrow().contains(r, conn));
        if member.position(&room).is_some() {
            let asked = self.hub.borrow_mut().join(&room, conn, None);
            match asked {
                Join::Member => {
                    // Already a member: answer again, change nothing.
                    w.reply_text(conn, &protocol::membership("joined", &room));
                    if let Some(id) = id {
                        w.reply_text(conn, &protocol::ack(id, None, None));
                    }
                }
                Join::Waiting => {}
                // Not while `member.rooms` agrees with the hub; if it ever did not, the
                // master is asked as for any new join.
                Join::Ask(token) => self.ask_master(room, conn, token, since),
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
        // Not in `member.rooms`, so neither a member nor waiting: no need to scan the room.
        let token = self
            .hub
            .borrow_mut()
            .ask(&room, conn, id.map(str::to_owned));
        self.count_rooms();
        self.ask_master(room, conn, token, since);
        Ok(())
    }

    /// Connection `conn`, which just asked to join `room`, lacks its `presence` permission:
    /// it gets no join/leave notices or counts there.
    pub fn hide_presence(&self, room: &str, conn: u64) {
        self.hub.borrow_mut().hide_presence(room, conn);
    }

    /// Sends the master the `Join` of connection `conn` (its answer carries `token`), with
    /// its token's user and info for presence.
    fn ask_master(&self, room: String, conn: &Conn, token: u64, since: Option<Since>) {
        self.worker.send(ToMaster::Join {
            room,
            conn: conn.id,
            token,
            since,
            user: conn.user().map(str::to_owned),
            info: conn.user_info().map(str::to_owned),
        });
    }

    /// A client asks for a page of `room`'s history: the master answers it directly.
    pub fn history(&self, conn: &Conn, room: String, page: HistoryRequest, id: Option<&str>) {
        self.worker.send(ToMaster::History {
            room,
            conn: conn.id,
            limit: page.limit,
            since: page.since,
            reverse: page.reverse,
            id: id.map(str::to_owned),
        });
    }

    /// A client asks to leave `room`; it gets `left` (and the ack) whether or not it was in.
    pub fn leave(&self, member: &mut Membership, conn: &Conn, room: &str, id: Option<&str>) {
        if let Some(i) = member.position(room) {
            member.rooms.swap_remove(i);
            if self.remove(room, conn, Some(id.map(str::to_owned))) {
                // Every request is answered in order: the join still waiting for the
                // master is answered first, and this leave right after it (`on_joined`).
                return;
            }
        }
        self.worker
            .reply_text(conn, &protocol::membership("left", room));
        if let Some(id) = id {
            self.worker.reply_text(conn, &protocol::ack(id, None, None));
        }
    }

    /// A client went away: it leaves every room it was in.
    pub fn leave_all(&self, member: &mut Membership, conn: &Conn) {
        for room in member.rooms.drain(..) {
            self.remove(&room, conn, None);
        }
    }

    /// The master answered a join at one point of the room's order: the connection gets
    /// `joined` and its replay now and the room's live messages from here on, or the
    /// refusal. A stale answer (the connection left meanwhile) is dropped.
    pub fn on_joined(&self, room: &str, conn: u64, token: u64, answer: JoinAnswer) {
        let accept = matches!(answer, JoinAnswer::Accepted { .. });
        let Some(Answered { join, room_empty }) =
            self.hub.borrow_mut().answered(room, conn, token, accept)
        else {
            if accept {
                // The connection went away while its join waited: the master counted it.
                self.send_leave(room, conn);
            }
            return;
        };
        let w = &self.worker;
        match answer {
            JoinAnswer::Accepted { frames } => {
                let mut frames = frames.into_iter();
                if let Some(joined) = frames.next() {
                    w.deliver(&join.conn, &Outgoing::text(&joined));
                }
                if let Some(ack) = &join.ack {
                    w.deliver(&join.conn, &Outgoing::text(&protocol::ack(ack, None, None)));
                }
                if join.leave.is_none() {
                    for replayed in frames {
                        w.deliver(&join.conn, &Outgoing::text(&replayed));
                    }
                } else {
                    // Left while the join waited: undo the join the master counted.
                    self.send_leave(room, conn);
                }
            }
            JoinAnswer::Refused { message } => {
                counters::add(&w.counters.request_errors, 1);
                let refusal = Refusal::new("invalid_field", message);
                let error = protocol::error(&refusal, join.ack.as_deref());
                w.deliver(&join.conn, &Outgoing::text(&error));
            }
        }
        if let Some(leave) = &join.leave {
            // The leave that came while the join waited, answered right after it.
            w.deliver(
                &join.conn,
                &Outgoing::text(&protocol::membership("left", room)),
            );
            if let Some(id) = leave {
                w.deliver(&join.conn, &Outgoing::text(&protocol::ack(id, None, None)));
            }
        }
        if room_empty {
            w.send(ToMaster::Withdraw {
                room: room.to_owned(),
            });
        }
        self.count_rooms();
    }

    /// A room message from the master: encoded once, shared by every local member (a
    /// `presence` frame only by those with the room's `presence` permission).
    pub fn on_room(&self, room: &str, text: String, skip: Option<u64>, presence: bool) {
        let frame = Outgoing::text(&text);
        let hub = self.hub.borrow();
        let blind = if presence { hub.blind(room) } else { None };
        for member in hub.members(room) {
            if Some(member.id) != skip && !blind.is_some_and(|b| b.contains(&member.id)) {
                self.worker.deliver(member, &frame);
            }
        }
    }

    /// Removes connection `conn` from `room`, telling the others and the master; `true`
    /// when its join still waits and the leave (`defer`, the leave's request id) is
    /// carried out with the master's answer.
    fn remove(&self, room: &str, conn: &Conn, defer: Option<Option<String>>) -> bool {
        let left = self.hub.borrow_mut().leave(room, conn, defer);
        if left.was_member {
            self.send_leave(room, conn.id);
        }
        if left.room_empty {
            self.worker.send(ToMaster::Withdraw {
                room: room.to_owned(),
            });
        }
        self.count_rooms();
        left.deferred
    }

    /// Tells the master that one join it accepted for `conn` no longer stands.
    fn send_leave(&self, room: &str, conn: u64) {
        self.worker.send(ToMaster::Leave {
            room: room.to_owned(),
            conn,
        });
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

    fn accepted(text: &str) -> JoinAnswer {
        JoinAnswer::Accepted {
            frames: vec![text.to_owned()],
        }
    }

    #[tokio::test]
    async fn a_join_waits_for_the_master_and_a_last_leave_withdraws() {
        let (rooms, mut rx) = rooms(1);
        let a = test_conn(1);
        let mut member = Membership::default();
        rooms
            .join(&mut member, &a, "r".into(), None, Some("7"))
            .unwrap();
        let Ok(ToMaster::Join {
            room,
            conn: 1,
            token,
            since: None,
            user: None,
            info: None,
        }) = rx.try_recv()
        else {
            panic!("the join asks the master")
        };
        assert_eq!(room, "r");
        assert_eq!(a.queued_bytes(), 0, "no `joined` before the master answers");
        assert_eq!(rooms.worker().counters.rooms.get(), 1);

        let refused = rooms
            .join(&mut member, &a, "s".into(), None, None)
            .unwrap_err();
        assert_eq!(refused.code, "too_many_rooms");

        rooms.on_joined("r", 1, token + 1, accepted("{}"));
        assert_eq!(a.queued_bytes(), 0, "a stale answer is dropped");
        assert!(
            matches!(rx.try_recv(), Ok(ToMaster::Leave { conn: 1, .. })),
            "and the join the master counted for it undone"
        );
        rooms.on_joined("r", 1, token, accepted("{}"));
        assert!(
            rx.try_recv().is_err(),
            "a confirmed join sends the master nothing"
        );
        assert!(a.queued_bytes() > 0, "`joined` and the ack are queued");

        rooms.leave_all(&mut member, &a);
        assert!(matches!(rx.try_recv(), Ok(ToMaster::Leave { conn: 1, .. })));
        assert!(matches!(rx.try_recv(), Ok(ToMaster::Withdraw { .. })));
        assert_eq!(rooms.worker().counters.rooms.get(), 0);
    }

    #[tokio::test]
    async fn a_leave_right_after_a_join_is_answered_after_the_join() {
        let (rooms, mut rx) = rooms(4);
        let a = test_conn(1);
        let mut member = Membership::default();
        rooms
            .join(&mut member, &a, "r".into(), None, Some("7"))
            .unwrap();
        let Ok(ToMaster::Join { token, .. }) = rx.try_recv() else {
            panic!("the join asks the master")
        };
        rooms.leave(&mut member, &a, "r", Some("8"));
        assert_eq!(a.queued_bytes(), 0, "the leave waits for the join's answer");
        assert!(
            rx.try_recv().is_err(),
            "nothing withdrawn before the answer"
        );
        let joined = protocol::membership("joined", "r");
        rooms.on_joined("r", 1, token, accepted(&joined));
        let expected: usize = [
            joined.clone(),
            protocol::ack("7", None, None),
            protocol::membership("left", "r"),
            protocol::ack("8", None, None),
        ]
        .iter()
        .map(|t| Outgoing::text(t).plain().len())
        .sum();
        assert_eq!(a.queued_bytes(), expected, "joined, ack 7, left, ack 8");
        assert!(
            matches!(rx.try_recv(), Ok(ToMaster::Leave { conn: 1, .. })),
            "the join the master accepted is undone"
        );
        assert!(
            matches!(rx.try_recv(), Ok(ToMaster::Withdraw { .. })),
            "then the room is withdrawn"
        );
        assert!(rooms.hub.borrow().members("r").is_empty());
    }

    /// Connection 1 asks to join "r": its membership, and the token the master answers.
    fn asked(
        rooms: &Rooms,
        rx: &mut mpsc::UnboundedReceiver<ToMaster>,
    ) -> (Membership, u64, Rc<Conn>) {
        let mut member = Membership::default();
        let a = test_conn(1);
        rooms.join(&mut member, &a, "r".into(), None, None).unwrap();
        let Ok(ToMaster::Join { token, .. }) = rx.try_recv() else {
            panic!("the join asks the master")
        };
        (member, token, a)
    }

    #[tokio::test]
    async fn an_accepted_join_of_a_connection_gone_meanwhile_is_undone() {
        let (rooms, mut rx) = rooms(4);
        let (mut member, token, a) = asked(&rooms, &mut rx);
        rooms.leave_all(&mut member, &a);
        assert!(matches!(rx.try_recv(), Ok(ToMaster::Withdraw { .. })));
        rooms.on_joined("r", 1, token, accepted("{}"));
        assert!(
            matches!(rx.try_recv(), Ok(ToMaster::Leave { conn: 1, .. })),
            "the master counted the accepted join: undo it"
        );
        let refused = JoinAnswer::Refused {
            message: "no".into(),
        };
        rooms.on_joined("r", 1, token, refused);
        assert!(rx.try_recv().is_err(), "a refused join was never counted");
    }

    #[tokio::test]
    async fn a_refused_join_is_an_error_withdraws_and_frees_its_place() {
        let (rooms, mut rx) = rooms(1);
        let a = test_conn(1);
        let mut member = Membership::default();
        rooms.join(&mut member, &a, "r".into(), None, None).unwrap();
        let Ok(ToMaster::Join { token, .. }) = rx.try_recv() else {
            panic!()
        };
        let message = "since.seq 9 is beyond the room's last seq 2".to_owned();
        rooms.on_joined("r", 1, token, JoinAnswer::Refused { message });
        assert!(a.queued_bytes() > 0, "the error is sent");
        assert!(matches!(rx.try_recv(), Ok(ToMaster::Withdraw { .. })));
        assert_eq!(rooms.worker().counters.request_errors.get(), 1);
        rooms
            .join(&mut member, &a, "s".into(), None, None)
            .expect("the refused room no longer counts against the limit");
    }

    #[tokio::test]
    async fn joining_twice_changes_nothing_and_leaving_a_stranger_room_still_answers() {
        let (rooms, mut rx) = rooms(4);
        let a = test_conn(1);
        let mut member = Membership::default();
        rooms.join(&mut member, &a, "r".into(), None, None).unwrap();
        let Ok(ToMaster::Join { token, .. }) = rx.try_recv() else {
            panic!()
        };
        rooms.join(&mut member, &a, "r".into(), None, None).unwrap();
        assert!(
            rx.try_recv().is_err(),
            "a second join while waiting sends the master nothing"
        );
        rooms.on_joined("r", 1, token, accepted("{}"));
        let before = a.queued_bytes();
        rooms.join(&mut member, &a, "r".into(), None, None).unwrap();
        assert!(rx.try_recv().is_err(), "a member's join sends nothing");
        assert!(a.queued_bytes() > before, "but is answered with `joined`");

        let b = test_conn(2);
        rooms.leave(&mut Membership::default(), &b, "r", Some("1"));
        assert!(rx.try_recv().is_err(), "b was not in r: nobody is told");
        assert!(b.queued_bytes() > 0, "b still gets `left` and the ack");
    }
}
