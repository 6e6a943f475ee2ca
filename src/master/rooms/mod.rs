//! The room concern of the loop: turns workers' room messages (publish, join, leave,
//! presence query, withdraw, history, broadcast) into the frames to send, through the pure
//! [`Relay`] table, the presence [`Registry`] and, for rooms with history, [`Recall`]. It knows nothing of processes or slots:
//! the supervisor hands it a message and a way to send, and tells it when a worker is gone.
//!
//! One point of order per room: a publish to a room with history takes its `seq` from the
//! history store (even with no members); a join is answered — route registered, position
//! read, gap replayed — while handling that one message, so every message ordered before
//! it is in the replay and every one after it is routed to the member's worker.
//!
//! With `--redis`, [`via_redis`] hands room messages to the Redis engine instead.

mod via_redis;

use std::collections::HashMap;
use std::time::Instant;

use wsfleet_worker::ipc::{JoinAnswer, ToMaster, ToWorker, monotonic_ns};
// The one path to the client protocol's frame builders (moving to `wsfleet_worker::protocol`).
use wsfleet_worker::protocol;

use super::api::calls::Reply;
use super::members::{Extra, MemberKey};
use super::presence::{Notice, Registry};
use super::recall::Recall;
use super::redis::{Asker, Engine};
use super::relay::{Relay, WorkerKey};

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// One worker.
    Worker(WorkerKey),
    /// Every worker past its start (ready or draining).
    Serving,
}

/// Room routes, sequences and history.
#[derive(Debug)]
pub struct Rooms {
    /// Which workers have members of which room, and each history-less room's sequence.
    relay: Relay,
    /// Positions and stored messages of rooms with history.
    recall: Recall,
    /// Who is in which room; notices and coalesced counts.
    presence: Registry,
    /// With `--redis`: orders, stores and fans out room messages across hosts instead of
    /// `recall` and the relay's sequences (the relay still routes to local workers).
    redis: Option<Engine>,
    /// With `--redis`: joins waiting for their answer from Redis, with the member's token
    /// details, registered for presence once the answer accepts them.
    waiting: HashMap<(WorkerKey, u64, u64), (String, Option<Extra>)>,
}

impl Rooms {
    /// No routes yet; history in `recall`, members in `presence`.
    pub fn new(recall: Recall, presence: Registry) -> Self {
        Self {
            relay: Relay::default(),
            recall,
            presence,
            redis: None,
            waiting: HashMap::new(),
        }
    }

    /// The member registry (to reconfigure it, and for the queries of the server API).
    pub fn presence(&mut self) -> &mut Registry {
        &mut self.presence
    }

    /// A worker linked: its members' fleet ids are made of its `slot` and `generation`.
    pub fn linked(&mut self, key: WorkerKey, slot: u32, generation: u64) {
        self.presence.linked(key, slot, generation);
    }

    /// When the next coalesced member counts are due.
    pub fn presence_due(&self) -> Option<Instant> {
        self.presence.due()
    }

    /// Sends the coalesced member counts due at `now` to each room's workers.
    pub fn flush_presence(&mut self, now: Instant, mut out: impl FnMut(To, ToWorker)) {
        for (room, frame) in self.presence.flush(now) {
            let notice = Notice { frame, skip: None };
            self.notify(&room, notice, &mut out);
        }
    }

    /// An accepted join of `member`: registered for presence, its notice sent to the room's
    /// workers here and, with `--redis`, counted and sent to the other hosts.
    fn member_joined(
        &mut self,
        room: &str,
        member: MemberKey,
        extra: Option<Extra>,
        now: Instant,
        out: &mut impl FnMut(To, ToWorker),
    ) {
        let before = self.presence.count(room);
        let for_hosts = self.redis.as_ref().and(extra.clone());
        let notice = self.presence.join(room, member, extra, now);
        if let Some(engine) = &mut self.redis
            && self.presence.count(room) > before
        {
            // Other hosts' members count too: whether they get a notice is decided by
            // the room's size across hosts, not by this host's share of it.
            let total = engine.members(room).unwrap_or(0) as usize + 1;
            let frame =
                self.presence
                    .notice_for_hosts(room, member, true, for_hosts.as_ref(), total);
            engine.presence(room, member.0, true, frame.as_deref());
        }
        if let Some(notice) = notice {
            self.notify(room, notice, out);
        }
    }

    /// The server API's `history`: from the room's Redis stream when `--redis` is on
    /// (answered through `reply` when the read comes back), else from this host's store.
    pub fn api_history(
        &mut self,
        room: String,
        limit: usize,
        since: Option<&protocol::Since>,
        reverse: bool,
        reply: Reply<String>,
        now: Instant,
    ) {
        match &mut self.redis {
            Some(engine) => {
                let asker = Asker::Api(reply);
                engine.history(room, limit, since, reverse, asker, &mut |_, _| {});
            }
            None => {
                let frame = self.recall.page(&room, limit, since, reverse, None, now);
                let _ = reply.send(Ok(frame));
            }
        }
    }

    /// Room history (to sweep, save, reconfigure and count it).
    pub fn recall(&mut self) -> &mut Recall {
        &mut self.recall
    }

    /// Handles a room message from `from` at `now`, sending through `out`; gives back a
    /// message that is not about rooms.
    pub fn handle(
        &mut self,
        from: WorkerKey,
        msg: ToMaster,
        now: Instant,
        mut out: impl FnMut(To, ToWorker),
    ) -> Option<ToMaster> {
        let msg = match self.redis {
            Some(_) => self.handle_redis(from, msg, now, &mut out)?,
            None => msg,
        };
        match msg {
            ToMaster::Publish {
                room,
                data,
                conn,
                ack,
            } => {
                let (seq, epoch) = self.publish(&room, &data, now, &mut out);
                if let Some(ack) = ack {
                    out(To::Worker(from), ordered(conn, ack, seq, epoch));
                }
            }
            ToMaster::Join {
                room,
                conn,
                token,
                since,
                user,
                info,
            } => {
                self.relay.interest(from, &room, true);
                let answer = self.recall.join(&room, since, now);
                let accepted = matches!(answer, JoinAnswer::Accepted { .. });
                let name = accepted.then(|| room.clone());
                let joined = ToWorker::Joined {
                    room,
                    conn,
                    token,
                    answer,
                };
                out(To::Worker(from), joined);
                if let Some(room) = name {
                    self.member_joined(&room, (from, conn), extra(user, info), now, &mut out);
                }
            }
            ToMaster::Leave { room, conn } => {
                if let Some(notice) = self.presence.leave(&room, (from, conn), now) {
                    self.notify(&room, notice, &mut out);
                }
            }
            ToMaster::PresenceQuery { room, conn, id } => {
                let frame = self.presence.answer(&room, id.as_deref(), None);
                out(To::Worker(from), ToWorker::Reply { conn, frame });
            }
            ToMaster::Withdraw { room } => self.relay.interest(from, &room, false),
            ToMaster::History {
                room,
                conn,
                limit,
                since,
                reverse,
                id,
            } => {
                let frame =
                    self.recall
                        .page(&room, limit, since.as_ref(), reverse, id.as_deref(), now);
                out(To::Worker(from), ToWorker::Reply { conn, frame });
            }
            ToMaster::Broadcast { data, conn, ack } => {
                Self::broadcast(&data, &mut out);
                if let Some(ack) = ack {
                    out(To::Worker(from), ordered(conn, ack, None, None));
                }
            }
            other => return Some(other),
        }
        None
    }

    /// Orders a publish of raw JSON `data` to `room` — a client's or the server API's, at
    /// the same one point of order — and sends it to the workers with members: the room's
    /// `seq` (None: a room without history and without members, nothing to order) and,
    /// for a room with history, its epoch.
    pub fn publish(
        &mut self,
        room: &str,
        data: &str,
        now: Instant,
        mut out: impl FnMut(To, ToWorker),
    ) -> (Option<u64>, Option<String>) {
        let (seq, epoch, targets) = match self.recall.publish(room, data, now) {
            Some(p) => (
                Some(p.seq),
                Some(p.epoch.as_str().to_owned()),
                self.relay.targets(room),
            ),
            None => match self.relay.publish(room) {
                Some((seq, targets)) => (Some(seq), None, targets),
                None => (None, None, &[][..]),
            },
        };
        if let Some(seq) = seq {
            let frame = protocol::room_message(room, seq, data);
            let ordered_ns = monotonic_ns();
            for t in targets {
                out(
                    To::Worker(*t),
                    ToWorker::Room {
                        room: room.to_owned(),
                        frame: frame.clone(),
                        skip: None,
                        ordered_ns,
                        presence: false,
                    },
                );
            }
        }
        (seq, epoch)
    }

    /// Sends a fleet-wide broadcast of raw JSON `data` (a client's or the server API's).
    pub fn broadcast(data: &str, mut out: impl FnMut(To, ToWorker)) {
        out(
            To::Serving,
            ToWorker::Broadcast {
                frame: protocol::broadcast_message(data),
            },
        );
    }

    /// Forgets a worker that exited, and its members.
    pub fn remove_worker(&mut self, key: WorkerKey, now: Instant) {
        self.relay.remove_worker(key);
        self.presence.remove_worker(key, now);
        self.waiting.retain(|(k, _, _), _| *k != key);
        if let Some(engine) = &mut self.redis {
            engine.remove_worker(key, &self.relay);
        }
    }

    /// Sends a presence frame to every worker with members of `room` (not to each member:
    /// the worker writes it to its own).
    fn notify(&self, room: &str, notice: Notice, out: &mut impl FnMut(To, ToWorker)) {
        for t in self.relay.targets(room) {
            out(
                To::Worker(*t),
                ToWorker::Room {
                    room: room.to_owned(),
                    frame: notice.frame.clone(),
                    skip: notice.skip.filter(|(w, _)| w == t).map(|(_, c)| c),
                    ordered_ns: 0,
                    presence: true,
                },
            );
        }
    }

    /// Rooms with members somewhere in the fleet.
    pub fn count(&self) -> usize {
        self.relay.rooms()
    }

    /// Expires history and forgets rooms left with neither messages nor members.
    pub fn sweep(&mut self, now: Instant) {
        if let Some(engine) = &mut self.redis {
            engine.tick(now);
        }
        let relay = &self.relay;
        self.recall
            .store()
            .sweep(now, |room| !relay.targets(room).is_empty());
    }
}

/// What a member's token says, for presence (None for an anonymous connection).
fn extra(user: Option<String>, info: Option<String>) -> Option<Extra> {
    (user.is_some() || info.is_some()).then(|| Extra {
        user: user.map(Into::into),
        info: info.map(Into::into),
    })
}

/// Queues a room frame for every worker of `targets` (`ordered_ns`: when the publish was
/// ordered, 0 for frames that are not timed; `presence`: a presence notice, which only
/// members with the `presence` permission get).
pub fn to_targets(
    targets: &[WorkerKey],
    room: &str,
    frame: &str,
    (ordered_ns, presence): (u64, bool),
    out: &mut impl FnMut(To, ToWorker),
) {
    for t in targets {
        out(
            To::Worker(*t),
            ToWorker::Room {
                room: room.to_owned(),
                frame: frame.to_owned(),
                skip: None,
                ordered_ns,
                presence,
            },
        );
    }
}

/// The acknowledgement of a publish (`seq`, and `epoch` for a room with history) or of a
/// broadcast (neither).
fn ordered(conn: u64, ack: String, seq: Option<u64>, epoch: Option<String>) -> ToWorker {
    ToWorker::Ordered {
        conn,
        ack,
        seq,
        epoch,
    }
}

#[cfg(test)]
mod tests;
