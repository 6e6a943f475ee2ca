//! One `/ws` client: welcome, then requests in, frames out, until it goes; on the way out
//! it leaves every room it was in. Joining and leaving are [`Rooms`]' business; the
//! session parses, rate-limits and dispatches. (The connection's task is `conn::ConnTask`.)

use std::rc::Rc;

use super::rooms::{HistoryRequest, Membership, Rooms};
use crate::conn::{CloseCause, Conn, Handler, now_ms};
use crate::counters;
use crate::ipc::{ToMaster, WorkerSettings};
use crate::protocol::{self, Refusal, Request};

/// One `/ws` client's state beyond the socket.
pub(crate) struct Session {
    /// Rooms this connection joined (confirmed or pending), to leave on disconnect.
    rooms: Membership,
    /// Token bucket for the request rate limit (requests left).
    tokens: f32,
    /// Token bucket for the inbound byte-rate limit (message bytes left).
    bytes_left: u64,
    /// When the buckets were last refilled ([`now_ms`]).
    refilled: u32,
}

impl Session {
    /// Greets a new client and starts its session.
    pub fn start(rooms: &Rooms, conn: &Conn) -> Self {
        let worker = rooms.worker();
        worker.reply_text(
            conn,
            &protocol::welcome(worker.slot, &worker.fleet_id(conn.id)),
        );
        Self {
            rooms: Membership::default(),
            tokens: worker.settings.rate_limit_per_sec as f32,
            bytes_left: worker.settings.inbound_bytes_per_sec,
            refilled: now_ms(),
        }
    }
}

impl Handler for Session {
    type Host = Rooms;

    fn on_text(&mut self, rooms: &Rooms, conn: &Rc<Conn>, text: &str) {
        self.handle(rooms, conn, text);
    }

    fn on_binary(&mut self, rooms: &Rooms, conn: &Rc<Conn>, data: &[u8]) {
        if !self.take_bytes(rooms, conn, data.len()) {
            return;
        }
        let refusal = Refusal::new(
            "bad_json",
            "binary frames are not part of the /ws protocol; send JSON text frames",
        );
        refuse(rooms, conn, &refusal, None);
    }

    fn on_end(&mut self, rooms: &Rooms, conn: &Rc<Conn>) {
        rooms.leave_all(&mut self.rooms, conn.id);
    }
}

impl Session {
    fn handle(&mut self, rooms: &Rooms, conn: &Rc<Conn>, text: &str) {
        let worker = rooms.worker();
        if !self.take_bytes(rooms, conn, text.len()) {
            return;
        }
        let (id, request) = protocol::parse(text);
        if !self.allow(worker.settings.rate_limit_per_sec) {
            let refusal = Refusal::new(
                "rate_limited",
                format!(
                    "more than {} requests per second; slow down",
                    worker.settings.rate_limit_per_sec
                ),
            );
            return refuse(rooms, conn, &refusal, id);
        }
        let request = match request {
            Ok(r) => r,
            Err(refusal) => return refuse(rooms, conn, &refusal, id),
        };
        match request {
            Request::Join { room, since } => {
                if let Err(refusal) = rooms.join(&mut self.rooms, conn, room, since, id) {
                    refuse(rooms, conn, &refusal, id);
                }
            }
            Request::History {
                room,
                limit,
                since,
                reverse,
            } => {
                let page = HistoryRequest {
                    limit,
                    since,
                    reverse,
                };
                rooms.history(conn, room, page, id);
            }
            Request::Leave { room } => rooms.leave(&mut self.rooms, conn, &room, id),
            Request::Presence { room } => worker.send(ToMaster::PresenceQuery {
                room,
                conn: conn.id,
                id: id.map(str::to_owned),
            }),
            Request::Publish { room, data } => {
                counters::add(&worker.counters.publishes, 1);
                worker.send(ToMaster::Publish {
                    room,
                    data: data.to_owned(),
                    conn: conn.id,
                    ack: id.map(str::to_owned),
                });
            }
            Request::Broadcast { .. } if !worker.settings.client_broadcast => {
                let refusal = Refusal::new(
                    "forbidden",
                    "this server does not let clients broadcast; publish to a room instead",
                );
                refuse(rooms, conn, &refusal, id);
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

    /// Refills both buckets for the time since the last message.
    fn refill(&mut self, settings: &WorkerSettings) {
        let now = now_ms();
        let elapsed = now.wrapping_sub(self.refilled);
        self.refilled = now;
        let rate = settings.rate_limit_per_sec as f32;
        self.tokens = (self.tokens + elapsed as f32 / 1000.0 * rate).min(rate);
        let bytes = settings.inbound_bytes_per_sec;
        let earned = u64::from(elapsed).saturating_mul(bytes) / 1000;
        self.bytes_left = self.bytes_left.saturating_add(earned).min(bytes);
    }

    /// Charges a message of `len` bytes to the inbound byte-rate bucket; past the limit
    /// the connection is closed with 1008 (the message is dropped) and false returned.
    fn take_bytes(&mut self, rooms: &Rooms, conn: &Conn, len: usize) -> bool {
        let settings = &rooms.worker().settings;
        self.refill(settings);
        if settings.inbound_bytes_per_sec == 0 {
            return true;
        }
        match self.bytes_left.checked_sub(len as u64) {
            Some(left) => {
                self.bytes_left = left;
                true
            }
            None => {
                conn.close_with(CloseCause::INBOUND_RATE);
                false
            }
        }
    }

    /// Takes one token from the request rate-limit bucket (refilled by [`Self::take_bytes`],
    /// which runs first for every message).
    fn allow(&mut self, rate: u32) -> bool {
        if rate == 0 {
            return true;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Answers a request that could not be honoured with an error frame, counting it.
fn refuse(rooms: &Rooms, conn: &Conn, refusal: &Refusal, id: Option<&str>) {
    let worker = rooms.worker();
    counters::add(&worker.counters.request_errors, 1);
    worker.reply_text(conn, &protocol::error(refusal, id));
}
