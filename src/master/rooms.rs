//! The room concern of the loop: turns workers' room messages (publish, presence,
//! interest, broadcast) into the frames to send, through the pure [`Relay`] table. It
//! knows nothing of processes or slots: the supervisor hands it a message and a way to
//! send, and tells it when a worker is gone.

use wsfleet_worker::ipc::{RoomEvent, ToMaster, ToWorker, monotonic_ns};
// The one path to the client protocol's frame builders (moving to `wsfleet_worker::protocol`).
use wsfleet_worker::protocol;

use super::relay::{Relay, WorkerKey};

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// One worker.
    Worker(WorkerKey),
    /// Every worker past its start (ready or draining).
    Serving,
}

/// Room routes and sequences.
#[derive(Debug, Default)]
pub struct Rooms {
    /// Which workers have members of which room, and each room's sequence.
    relay: Relay,
}

impl Rooms {
    /// Handles a room message from `from`, sending through `out`; gives back a message
    /// that is not about rooms.
    pub fn handle(
        &mut self,
        from: WorkerKey,
        msg: ToMaster,
        mut out: impl FnMut(To, ToWorker),
    ) -> Option<ToMaster> {
        match msg {
            ToMaster::Publish {
                room,
                data,
                conn,
                ack,
            } => {
                let seq = self.relay.publish(&room).map(|(seq, targets)| {
                    let frame = protocol::room_message(&room, seq, &data);
                    let ordered_ns = monotonic_ns();
                    for t in targets {
                        out(
                            To::Worker(*t),
                            ToWorker::Room {
                                room: room.clone(),
                                frame: frame.clone(),
                                skip: None,
                                ordered_ns,
                            },
                        );
                    }
                    seq
                });
                if let Some(ack) = ack {
                    out(To::Worker(from), ToWorker::Ordered { conn, ack, seq });
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
            ToMaster::Interest { room, on, token } => {
                self.relay.interest(from, &room, on);
                if on {
                    out(To::Worker(from), ToWorker::InterestAck { room, token });
                }
            }
            ToMaster::Broadcast { data, conn, ack } => {
                let frame = protocol::broadcast_message(&data);
                out(To::Serving, ToWorker::Broadcast { frame });
                if let Some(ack) = ack {
                    let seq = None;
                    out(To::Worker(from), ToWorker::Ordered { conn, ack, seq });
                }
            }
            other => return Some(other),
        }
        None
    }

    /// Forgets a worker that exited.
    pub fn remove_worker(&mut self, key: WorkerKey) {
        self.relay.remove_worker(key);
    }

    /// Rooms with members somewhere in the fleet.
    pub fn count(&self) -> usize {
        self.relay.rooms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interest(rooms: &mut Rooms, from: WorkerKey, room: &str) -> Vec<(To, ToWorker)> {
        let mut sent = Vec::new();
        let msg = ToMaster::Interest {
            room: room.into(),
            on: true,
            token: 7,
        };
        assert!(
            rooms
                .handle(from, msg, |to, m| sent.push((to, m)))
                .is_none()
        );
        sent
    }

    #[test]
    fn publish_goes_to_interested_workers_in_order_and_acks_the_sender() {
        let mut rooms = Rooms::default();
        let acks = interest(&mut rooms, 1, "a");
        assert_eq!(
            acks,
            [(
                To::Worker(1),
                ToWorker::InterestAck {
                    room: "a".into(),
                    token: 7
                }
            )]
        );
        interest(&mut rooms, 2, "a");
        let mut sent = Vec::new();
        let publish = ToMaster::Publish {
            room: "a".into(),
            data: "1".into(),
            conn: 5,
            ack: Some("\"x\"".into()),
        };
        rooms.handle(3, publish, |to, m| sent.push((to, m)));
        let targets: Vec<To> = sent.iter().map(|(to, _)| *to).collect();
        assert_eq!(targets, [To::Worker(1), To::Worker(2), To::Worker(3)]);
        assert!(matches!(
            &sent[2].1,
            ToWorker::Ordered {
                conn: 5,
                seq: Some(1),
                ..
            }
        ));
        assert_eq!(rooms.count(), 1);
        rooms.remove_worker(1);
        rooms.remove_worker(2);
        assert_eq!(rooms.count(), 0);
    }

    #[test]
    fn non_room_messages_come_back() {
        let mut rooms = Rooms::default();
        let back = rooms.handle(1, ToMaster::Ready, |_, _| panic!("nothing to send"));
        assert_eq!(back, Some(ToMaster::Ready));
    }
}
