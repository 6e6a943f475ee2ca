//! The room concern under `--redis`: room messages go to the Redis engine, which orders,
//! stores and fans them out across hosts; its reports come back here, and joins it
//! accepts become presence members (counted across hosts).

use std::time::Instant;

use wsfleet_worker::ipc::{JoinAnswer, ToMaster, ToWorker};

use super::{Rooms, To, WorkerKey, extra};
use crate::control_api::RedisRow;
use crate::master::redis::{Asker, Engine, Report, Ticket, WaitingJoinArgs};

impl Rooms {
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

    /// A report from a Redis link task. Joins it accepts become members for presence
    /// (counted across hosts; a notice for rooms that send them).
    pub fn on_redis(&mut self, report: Report, mut out: impl FnMut(To, ToWorker)) {
        let Some(engine) = &mut self.redis else {
            return;
        };
        let mut answered = Vec::new();
        engine.on_report(report, &self.relay, &mut |to, m| {
            if let (
                To::Worker(k),
                ToWorker::Joined {
                    conn,
                    token,
                    answer,
                    ..
                },
            ) = (to, &m)
            {
                let accepted = matches!(answer, JoinAnswer::Accepted { .. });
                answered.push(((k, *conn, *token), accepted));
            }
            out(to, m);
        });
        let now = Instant::now();
        for (key, accepted) in answered {
            if let Some((room, extra)) = self.waiting.remove(&key)
                && accepted
            {
                self.member_joined(&room, (key.0, key.1), extra, now, &mut out);
            }
        }
    }

    /// A room message with `--redis` on; gives back what the engine does not take.
    pub(super) fn handle_redis(
        &mut self,
        from: WorkerKey,
        msg: ToMaster,
        now: Instant,
        out: &mut impl FnMut(To, ToWorker),
    ) -> Option<ToMaster> {
        let Some(engine) = &mut self.redis else {
            return Some(msg);
        };
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
                user,
                info,
            } => {
                self.relay.interest(from, &room, true);
                let join = WaitingJoinArgs {
                    from,
                    conn,
                    token,
                    since,
                };
                engine.join(&room, join);
                self.waiting
                    .insert((from, conn, token), (room, extra(user, info)));
            }
            ToMaster::Leave { room, conn } => {
                let before = self.presence.count(&room);
                let notice = self.presence.leave(&room, (from, conn), now);
                if self.presence.count(&room) < before {
                    let total = engine.members(&room).unwrap_or(0).saturating_sub(1) as usize;
                    let frame =
                        self.presence
                            .notice_for_hosts(&room, (from, conn), false, None, total);
                    engine.presence(&room, from, false, frame.as_deref());
                }
                if let Some(notice) = notice {
                    self.notify(&room, notice, out);
                }
            }
            ToMaster::PresenceQuery { room, conn, id } => {
                let total = engine.members(&room);
                let frame = self.presence.answer(&room, id.as_deref(), total);
                out(To::Worker(from), ToWorker::Reply { conn, frame });
            }
            ToMaster::Withdraw { room } => {
                self.relay.interest(from, &room, false);
                engine.forget_unrouted(&self.relay);
            }
            ToMaster::History {
                room,
                conn,
                limit,
                since,
                reverse,
                id,
            } => {
                let asker = Asker::Client { from, conn, id };
                engine.history(room, limit, since.as_ref(), reverse, asker, out);
            }
            ToMaster::Broadcast { data, conn, ack } => {
                engine.broadcast(data, Ticket { from, conn, ack }, out)
            }
            other => return Some(other),
        }
        None
    }
}
