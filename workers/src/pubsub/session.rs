//! One `/ws` client: welcome, then requests in, frames out, until it goes; on the way out
//! it leaves every room it was in. (The connection's task is `conn::ConnTask`.)

use std::rc::Rc;

use super::hub::Join;
use crate::conn::{Conn, Handler};
use crate::counters;
use crate::ipc::ToMaster;
use crate::protocol::{self, Refusal, Request};
use crate::worker::Worker;

/// One `/ws` client's state beyond the socket.
pub struct Session {
    /// Rooms this connection joined (confirmed or pending), to leave on disconnect.
    rooms: Vec<Box<str>>,
    /// Token bucket for the request rate limit (requests left).
    tokens: f32,
    /// When the bucket was last refilled ([`crate::heartbeat::now_ms`]).
    refilled: u32,
}

impl Session {
    /// Greets a new client and starts its session.
    pub fn start(worker: &Worker, conn: &Conn) -> Self {
        worker.reply_text(
            conn,
            &protocol::welcome(worker.slot, &worker.fleet_id(conn.id)),
        );
        Self {
            rooms: Vec::new(),
            tokens: worker.settings.rate_limit_per_sec as f32,
            refilled: crate::heartbeat::now_ms(),
        }
    }
}

impl Handler for Session {
    fn on_text(&mut self, worker: &Worker, conn: &Rc<Conn>, text: &str) {
        self.handle(worker, conn, text);
    }

    fn on_binary(&mut self, worker: &Worker, conn: &Rc<Conn>, _: &[u8]) {
        let refusal = Refusal::new(
            "bad_json",
            "binary frames are not part of the /ws protocol; send JSON text frames",
        );
        self.refuse(worker, conn, &refusal, None);
    }

    fn on_end(&mut self, worker: &Worker, conn: &Rc<Conn>) {
        for room in self.rooms.drain(..) {
            worker.leave_room(&room, conn.id);
        }
    }
}

impl Session {
    fn handle(&mut self, worker: &Worker, conn: &Rc<Conn>, text: &str) {
        let (id, request) = protocol::parse(text);
        if !self.allow(worker.settings.rate_limit_per_sec) {
            let refusal = Refusal::new(
                "rate_limited",
                format!(
                    "more than {} requests per second; slow down",
                    worker.settings.rate_limit_per_sec
                ),
            );
            return self.refuse(worker, conn, &refusal, id);
        }
        let request = match request {
            Ok(r) => r,
            Err(refusal) => return self.refuse(worker, conn, &refusal, id),
        };
        match request {
            Request::Join { room } => self.join(worker, conn, room, id),
            Request::Leave { room } => {
                if let Some(i) = self.rooms.iter().position(|r| **r == *room) {
                    self.rooms.swap_remove(i);
                    worker.leave_room(&room, conn.id);
                }
                worker.reply_text(conn, &protocol::membership("left", &room));
                if let Some(id) = id {
                    worker.reply_text(conn, &protocol::ack(id, None));
                }
            }
            Request::Publish { room, data } => {
                counters::add(&worker.counters.publishes, 1);
                worker.send(ToMaster::Publish {
                    room,
                    data: data.to_owned(),
                    conn: conn.id,
                    ack: id.map(str::to_owned),
                });
            }
            Request::Broadcast { data } => {
                worker.send(ToMaster::Broadcast {
                    data: data.to_owned(),
                    conn: conn.id,
                    ack: id.map(str::to_owned),
                });
            }
        }
    }

    fn join(&mut self, worker: &Worker, conn: &Rc<Conn>, room: String, id: Option<&str>) {
        if self.rooms.iter().any(|r| **r == *room) {
            // Already a member (or on the way): answer again, change nothing.
            worker.reply_text(conn, &protocol::membership("joined", &room));
            if let Some(id) = id {
                worker.reply_text(conn, &protocol::ack(id, None));
            }
            return;
        }
        let max = worker.settings.max_rooms_per_connection;
        if self.rooms.len() >= max {
            let refusal = Refusal::new(
                "too_many_rooms",
                format!("a connection may be in at most {max} rooms; leave one first"),
            );
            return self.refuse(worker, conn, &refusal, id);
        }
        // Most clients are in one or two rooms: grow the list one slot at a time rather
        // than by Vec's default of four.
        self.rooms.reserve_exact(1);
        self.rooms.push(room.as_str().into());
        let joined = worker
            .hub
            .borrow_mut()
            .join(&room, conn, id.map(str::to_owned));
        worker.counters.rooms.set(worker.hub.borrow().len() as u64);
        match joined {
            Join::Joined => worker.confirm_join(&room, conn, id),
            Join::Pending(Some(token)) => worker.send(ToMaster::Interest {
                room,
                on: true,
                token,
            }),
            Join::Pending(None) => {}
        }
    }

    fn refuse(&self, worker: &Worker, conn: &Conn, refusal: &Refusal, id: Option<&str>) {
        counters::add(&worker.counters.request_errors, 1);
        worker.reply_text(conn, &protocol::error(refusal, id));
    }

    /// Takes one token from the rate-limit bucket.
    fn allow(&mut self, rate: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let rate = rate as f32;
        let now = crate::heartbeat::now_ms();
        let elapsed = now.wrapping_sub(self.refilled) as f32 / 1000.0;
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
