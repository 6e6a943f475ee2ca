//! The room concern of the loop: turns workers' room messages (publish, presence, join,
//! withdraw, history, broadcast) into the frames to send, through the pure [`Relay`]
//! table and, for rooms with history, [`Recall`]. It knows nothing of processes or slots:
//! the supervisor hands it a message and a way to send, and tells it when a worker is gone.
//!
//! One point of order per room: a publish to a room with history takes its `seq` from the
//! history store (even with no members); a join is answered — route registered, position
//! read, gap replayed — while handling that one message, so every message ordered before
//! it is in the replay and every one after it is routed to the member's worker.

use std::time::Instant;

use wsfleet_worker::ipc::{RoomEvent, ToMaster, ToWorker, monotonic_ns};
// The one path to the client protocol's frame builders (moving to `wsfleet_worker::protocol`).
use wsfleet_worker::protocol;

use super::recall::Recall;
use super::redis::{Engine, Report, Ticket, WaitingJoinArgs};
use super::relay::{Relay, WorkerKey};
use crate::control_api::RedisRow;

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
    /// With `--redis`: orders, stores and fans out room messages across hosts instead of
    /// `recall` and the relay's sequences (the relay still routes to local workers).
    redis: Option<Engine>,
}

impl Rooms {
    /// No routes yet; history in `recall`.
    pub fn new(recall: Recall) -> Self {
        Self {
            relay: Relay::default(),
            recall,
            redis: None,
        }
    }

    /// Turns the Redis engine on (before any worker is linked).
    pub fn attach_redis(&mut self, engine: Engine) {
        self.redis = Some(engine);
    }

    /// The Redis engine, when it is on (to reconfigure it on reload).
    pub fn redis(&mut self) -> Option<&mut Engine> {
        self.redis.as_mut()
    }

    /// The Redis engine's links and counts, when it is on.
    pub fn redis_row(&self) -> Option<RedisRow> {
        self.redis.as_ref().map(Engine::row)
    }

    /// A report from a Redis link task.
    pub fn on_redis(&mut self, report: Report, mut out: impl FnMut(To, ToWorker)) {
        if let Some(engine) = &mut self.redis {
            engine.on_report(report, &self.relay, &mut out);
        }
    }

    /// A room message with `--redis` on; gives back what the engine does not take.
    fn handle_redis(
        engine: &mut Engine,
        relay: &mut Relay,
        from: WorkerKey,
        msg: ToMaster,
        out: &mut impl FnMut(To, ToWorker),
    ) -> Option<ToMaster> {
        match msg {
            ToMaster::Publish {
                room,
                data,
                conn,
                ack,
            } => engine.publish(room, data, Ticket { from, conn, ack }, out),
            ToMaster::Join {
                room,
                conn,
                token,
                since,
            } => {
                relay.interest(from, &room, true);
                let join = WaitingJoinArgs {
                    from,
                    conn,
                    token,
                    since,
                };
                engine.join(&room, join);
            }
            ToMaster::Withdraw { room } => {
                relay.interest(from, &room, false);
                engine.forget_unrouted(relay);
            }
            ToMaster::History { conn, id, .. } => {
                let refusal = protocol::Refusal::new(
                    "history_off",
                    "history requests are not served with --redis; recover with join and since",
                );
                let frame = protocol::error(&refusal, id.as_deref());
                out(To::Worker(from), ToWorker::Reply { conn, frame });
            }
            ToMaster::Broadcast { data, conn, ack } => {
                engine.broadcast(data, Ticket { from, conn, ack }, out)
            }
            // Counted and sent to the other hosts; this host's members get it below.
            ToMaster::Presence {
                ref room,
                event,
                ref id,
                ..
            } => {
                engine.presence(room, from, event == RoomEvent::Join, id);
                return Some(msg);
            }
            other => return Some(other),
        }
        None
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
        let msg = match &mut self.redis {
            Some(engine) => Self::handle_redis(engine, &mut self.relay, from, msg, &mut out)?,
            None => msg,
        };
        match msg {
            ToMaster::Publish {
                room,
                data,
                conn,
                ack,
            } => {
                let (seq, epoch, targets) = match self.recall.publish(&room, &data, now) {
                    Some(p) => (
                        Some(p.seq),
                        Some(p.epoch.as_str().to_owned()),
                        self.relay.targets(&room),
                    ),
                    None => match self.relay.publish(&room) {
                        Some((seq, targets)) => (Some(seq), None, targets),
                        None => (None, None, &[][..]),
                    },
                };
                if let Some(seq) = seq {
                    let frame = protocol::room_message(&room, seq, &data);
                    to_targets(targets, &room, &frame, monotonic_ns(), &mut out);
                }
                if let Some(ack) = ack {
                    out(To::Worker(from), ordered(conn, ack, seq, epoch));
                }
            }
            ToMaster::Presence {
                room,
                event,
                conn,
                id,
            } => {
                let frame = protocol::presence(&room, event == RoomEvent::Join, &id);
                for t in self.relay.targets(&room) {
                    out(
                        To::Worker(*t),
                        ToWorker::Room {
                            room: room.clone(),
                            frame: frame.clone(),
                            skip: (*t == from).then_some(conn),
                            ordered_ns: 0,
                        },
                    );
                }
            }
            ToMaster::Join {
                room,
                conn,
                token,
                since,
            } => {
                self.relay.interest(from, &room, true);
                let answer = self.recall.join(&room, since, now);
                let joined = ToWorker::Joined {
                    room,
                    conn,
                    token,
                    answer,
                };
                out(To::Worker(from), joined);
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
                let frame = protocol::broadcast_message(&data);
                out(To::Serving, ToWorker::Broadcast { frame });
                if let Some(ack) = ack {
                    out(To::Worker(from), ordered(conn, ack, None, None));
                }
            }
            other => return Some(other),
        }
        None
    }

    /// Forgets a worker that exited.
    pub fn remove_worker(&mut self, key: WorkerKey) {
        self.relay.remove_worker(key);
        if let Some(engine) = &mut self.redis {
            engine.remove_worker(key, &self.relay);
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

/// Queues a room frame for every worker of `targets` (`ordered_ns`: when the publish was
/// ordered, 0 for frames that are not timed).
pub fn to_targets(
    targets: &[WorkerKey],
    room: &str,
    frame: &str,
    ordered_ns: u64,
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
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::master::history::HistoryStore;
    use crate::namespaces::{HistoryOptions, Namespaces, RoomOptions};

    fn rooms(history_size: usize) -> Rooms {
        let history = HistoryOptions {
            size: history_size,
            ttl: Duration::from_secs(60),
        };
        let store = HistoryStore::new(Namespaces::new(RoomOptions { history }), 1 << 20);
        Rooms::new(Recall::new(store, 300))
    }

    fn send(rooms: &mut Rooms, from: WorkerKey, msg: ToMaster) -> Vec<(To, ToWorker)> {
        let mut sent = Vec::new();
        let back = rooms.handle(from, msg, Instant::now(), |to, m| sent.push((to, m)));
        assert!(back.is_none());
        sent
    }

    fn join(rooms: &mut Rooms, from: WorkerKey, room: &str) -> Vec<(To, ToWorker)> {
        let msg = ToMaster::Join {
            room: room.into(),
            conn: 9,
            token: 7,
            since: None,
        };
        send(rooms, from, msg)
    }

    fn publish(room: &str) -> ToMaster {
        ToMaster::Publish {
            room: room.into(),
            data: "1".into(),
            conn: 5,
            ack: Some("\"x\"".into()),
        }
    }

    #[test]
    fn publish_goes_to_interested_workers_in_order_and_acks_the_sender() {
        let mut rooms = rooms(0);
        let answer = join(&mut rooms, 1, "a");
        assert!(matches!(
            &answer[..],
            [(
                To::Worker(1),
                ToWorker::Joined {
                    token: 7,
                    conn: 9,
                    ..
                }
            )]
        ));
        join(&mut rooms, 2, "a");
        let sent = send(&mut rooms, 3, publish("a"));
        let targets: Vec<To> = sent.iter().map(|(to, _)| *to).collect();
        assert_eq!(targets, [To::Worker(1), To::Worker(2), To::Worker(3)]);
        assert!(matches!(
            &sent[2].1,
            ToWorker::Ordered {
                conn: 5,
                seq: Some(1),
                epoch: None,
                ..
            }
        ));
        assert_eq!(rooms.count(), 1);
        send(&mut rooms, 1, ToMaster::Withdraw { room: "a".into() });
        rooms.remove_worker(2);
        assert_eq!(rooms.count(), 0);
    }

    #[test]
    fn a_room_with_history_orders_publishes_without_members_and_acks_the_epoch() {
        let mut rooms = rooms(10);
        let sent = send(&mut rooms, 3, publish("a"));
        let [(To::Worker(3), ToWorker::Ordered { seq, epoch, .. })] = &sent[..] else {
            panic!("only the ack: {sent:?}")
        };
        assert_eq!(*seq, Some(1));
        let epoch = epoch.clone().expect("the ack carries the epoch");
        let answer = send(
            &mut rooms,
            1,
            ToMaster::Join {
                room: "a".into(),
                conn: 9,
                token: 1,
                since: Some(protocol::Since { epoch, seq: 0 }),
            },
        );
        let [(_, ToWorker::Joined { answer, .. })] = &answer[..] else {
            panic!()
        };
        let wsfleet_worker::ipc::JoinAnswer::Accepted { frames } = answer else {
            panic!()
        };
        assert_eq!(frames.len(), 2, "joined, then the one stored message");
        assert!(frames[1].contains(r#""seq":1"#));
        let sent = send(&mut rooms, 3, publish("a"));
        assert!(matches!(sent[0], (To::Worker(1), ToWorker::Room { .. })));
    }

    #[test]
    fn history_requests_are_answered_to_the_asker_and_others_come_back() {
        let mut rooms = rooms(10);
        let msg = ToMaster::History {
            room: "a".into(),
            conn: 4,
            limit: 10,
            since: None,
            reverse: false,
            id: None,
        };
        let sent = send(&mut rooms, 2, msg);
        assert!(matches!(
            &sent[..],
            [(To::Worker(2), ToWorker::Reply { conn: 4, .. })]
        ));
        let back = rooms.handle(1, ToMaster::Ready, Instant::now(), |_, _| {
            panic!("nothing to send")
        });
        assert_eq!(back, Some(ToMaster::Ready));
    }
}
