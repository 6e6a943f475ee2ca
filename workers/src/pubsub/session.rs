//! One `/ws` client: welcome, then requests in, frames out, until it goes; on the way out
//! it leaves every room it was in.

use std::rc::Rc;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::hub::Join;
use super::protocol::{self, Refusal, Request};
use crate::conn::{Driver, Event, Outbox};
use crate::counters;
use crate::ipc::ToMaster;
use crate::worker::Worker;

/// Per-connection state beyond the socket.
struct Session {
    /// Rooms this connection joined (confirmed or pending), to leave on disconnect.
    rooms: Vec<Box<str>>,
    /// Token bucket for the request rate limit.
    tokens: f64,
    /// When the bucket was last refilled.
    refilled: Instant,
}

/// Serves one upgraded `/ws` connection to its end.
pub async fn serve(worker: Rc<Worker>, mut driver: Driver) {
    let outbox = driver.outbox().clone();
    worker.deliver_text(
        &outbox,
        protocol::welcome(worker.slot, &worker.fleet_id(outbox.id)),
    );
    let rate = f64::from(worker.settings.rate_limit_per_sec);
    let mut session = Session {
        rooms: Vec::new(),
        tokens: rate,
        refilled: Instant::now(),
    };
    loop {
        match driver.next_event().await {
            Event::Message(Message::Text(text)) => {
                counters::add(&worker.counters.messages_in, 1);
                counters::add(&worker.counters.bytes_in, text.len() as u64);
                session.handle(&worker, &outbox, text.as_str());
            }
            Event::Message(Message::Binary(bin)) => {
                counters::add(&worker.counters.messages_in, 1);
                counters::add(&worker.counters.bytes_in, bin.len() as u64);
                let refusal = Refusal::new(
                    "bad_json",
                    "binary frames are not part of the /ws protocol; send JSON text frames",
                );
                session.refuse(&worker, &outbox, &refusal, None);
            }
            Event::Message(Message::Close(_)) => {
                driver.finish().await;
                break;
            }
            Event::Message(_) => {}
            Event::Close(cause) => {
                driver.close(cause).await;
                break;
            }
            Event::Violation(cause) => {
                counters::add(&worker.counters.protocol_errors, 1);
                driver.close(cause).await;
                break;
            }
            Event::Ended => break,
        }
    }
    for room in session.rooms.drain(..) {
        worker.leave_room(&room, outbox.id);
    }
}

impl Session {
    fn handle(&mut self, worker: &Worker, outbox: &Rc<Outbox>, text: &str) {
        let (id, request) = protocol::parse(text);
        if !self.allow(worker.settings.rate_limit_per_sec) {
            let refusal = Refusal::new(
                "rate_limited",
                format!(
                    "more than {} requests per second; slow down",
                    worker.settings.rate_limit_per_sec
                ),
            );
            return self.refuse(worker, outbox, &refusal, id);
        }
        let request = match request {
            Ok(r) => r,
            Err(refusal) => return self.refuse(worker, outbox, &refusal, id),
        };
        match request {
            Request::Join { room } => self.join(worker, outbox, room, id),
            Request::Leave { room } => {
                if let Some(i) = self.rooms.iter().position(|r| **r == *room) {
                    self.rooms.swap_remove(i);
                    worker.leave_room(&room, outbox.id);
                }
                worker.deliver_text(outbox, protocol::membership("left", &room));
                if let Some(id) = id {
                    worker.deliver_text(outbox, protocol::ack(id, None));
                }
            }
            Request::Publish { room, data } => {
                counters::add(&worker.counters.publishes, 1);
                worker.send(ToMaster::Publish {
                    room,
                    data: data.to_owned(),
                    conn: outbox.id,
                    ack: id.map(str::to_owned),
                });
            }
            Request::Broadcast { data } => {
                worker.send(ToMaster::Broadcast {
                    data: data.to_owned(),
                    conn: outbox.id,
                    ack: id.map(str::to_owned),
                });
            }
        }
    }

    fn join(&mut self, worker: &Worker, outbox: &Rc<Outbox>, room: String, id: Option<&str>) {
        if self.rooms.iter().any(|r| **r == *room) {
            // Already a member (or on the way): answer again, change nothing.
            worker.deliver_text(outbox, protocol::membership("joined", &room));
            if let Some(id) = id {
                worker.deliver_text(outbox, protocol::ack(id, None));
            }
            return;
        }
        let max = worker.settings.max_rooms_per_connection;
        if self.rooms.len() >= max {
            let refusal = Refusal::new(
                "too_many_rooms",
                format!("a connection may be in at most {max} rooms; leave one first"),
            );
            return self.refuse(worker, outbox, &refusal, id);
        }
        self.rooms.push(room.as_str().into());
        let joined = worker
            .hub
            .borrow_mut()
            .join(&room, outbox, id.map(str::to_owned));
        worker.counters.rooms.set(worker.hub.borrow().len() as u64);
        match joined {
            Join::Joined => worker.confirm_join(&room, outbox, id),
            Join::Pending(Some(token)) => worker.send(ToMaster::Interest {
                room,
                on: true,
                token,
            }),
            Join::Pending(None) => {}
        }
    }

    fn refuse(&self, worker: &Worker, outbox: &Outbox, refusal: &Refusal, id: Option<&str>) {
        counters::add(&worker.counters.request_errors, 1);
        worker.deliver_text(outbox, protocol::error(refusal, id));
    }

    /// Takes one token from the rate-limit bucket.
    fn allow(&mut self, rate: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let rate = f64::from(rate);
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
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
