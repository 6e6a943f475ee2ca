//! One `/ws` client: welcome, then requests in, frames out, until it goes; on the way out
//! it leaves every room it was in. Joining and leaving are [`Rooms`]' business; the
//! session parses, rate-limits, checks permissions and dispatches. (The connection's task
//! is `conn::ConnTask`.)
//!
//! Who the client is ([`Identity`]) was decided at the upgrade: it is shown in `welcome`,
//! its token's `rooms` are joined at once, every join, publish and history request is
//! checked against the room permissions (`forbidden` error, the connection stays open),
//! and a `refresh` replaces it with a fresh token's claims for the same user.

use std::rc::Rc;

use super::rooms::{HistoryRequest, Membership, Rooms};
use crate::admission::Admitted;
use crate::auth::capability::Capability;
use crate::auth::claims::Identity;
use crate::auth::expiry::{self, Expiry, RefreshError};
use crate::auth::permissions::Decision;
use crate::conn::{CloseCause, Conn, Handler, now_ms};
use crate::counters;
use crate::heartbeat::unix_now;
use crate::http::Client;
use crate::ipc::{ToMaster, WorkerSettings};
use crate::protocol::{self, Refusal, Request, Since};
use crate::worker::Worker;

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
    /// Who the client is: every permission check asks; a refresh replaces it.
    identity: Identity,
    /// Its place in the per-user and per-IP connection counts, given back at the end.
    _admitted: Option<Box<Admitted>>,
}

impl Session {
    /// Greets a new client, starts its token's expiry clock and joins its token's rooms.
    pub fn start(rooms: &Rooms, conn: &Rc<Conn>, client: Client) -> Self {
        let worker = rooms.worker();
        let Client { identity, admitted } = client;
        let connect_rooms = match &identity {
            Identity::User(claims) => {
                let clock = Expiry::new(claims, worker.settings.auth.grace());
                worker.token_clocks.borrow_mut().insert(conn.id, clock);
                claims.rooms.clone()
            }
            Identity::Anonymous => Vec::new(),
        };
        let mut session = Self {
            rooms: Membership::default(),
            tokens: worker.settings.rate_limit_per_sec as f32,
            bytes_left: worker.settings.inbound_bytes_per_sec,
            refilled: now_ms(),
            identity,
            _admitted: admitted,
        };
        if let Some((user, info)) = session.user() {
            conn.set_user(user, info);
        }
        let user = session.user().map(|(user, _info)| user);
        let welcome = protocol::welcome(worker.slot, &worker.fleet_id(conn.id), user);
        worker.reply_text(conn, &welcome);
        for room in connect_rooms {
            session.join(rooms, conn, room, None, None);
        }
        session
    }

    /// The connection's user id and its token's `info` (raw JSON text); None when
    /// anonymous. What presence and the server API show beside the connection id.
    pub fn user(&self) -> Option<(&str, Option<&str>)> {
        match &self.identity {
            Identity::User(claims) => Some((&claims.sub, claims.info.as_deref().map(|i| i.get()))),
            Identity::Anonymous => None,
        }
    }

    /// Whether this connection may use `cap` in `room`; the `forbidden` refusal if not.
    pub fn permit(
        &self,
        settings: &WorkerSettings,
        room: &str,
        cap: Capability,
    ) -> Result<(), Refusal> {
        match settings.permissions.allowed(&self.identity, room, cap) {
            Decision::Allow => Ok(()),
            Decision::Deny(denial) => Err(denial.refusal()),
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
        rooms.leave_all(&mut self.rooms, conn);
        if let Identity::User(_) = self.identity {
            rooms.worker().token_clocks.borrow_mut().remove(conn.id);
        }
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
            Request::Join { room, since } => self.join(rooms, conn, room, since, id),
            Request::History { room, .. }
                if let Err(refusal) = self.permit(&worker.settings, &room, Capability::History) =>
            {
                refuse(rooms, conn, &refusal, id);
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
            Request::Publish { room, .. }
                if let Err(refusal) = self.permit(&worker.settings, &room, Capability::Publish) =>
            {
                refuse(rooms, conn, &refusal, id);
            }
            Request::Presence { room, .. }
                if let Err(refusal) =
                    self.permit(&worker.settings, &room, Capability::Presence) =>
            {
                refuse(rooms, conn, &refusal, id);
            }
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
            Request::Refresh { token } => self.refresh(worker, conn, token, id),
        }
    }

    /// A join (a request, or one of the token's `rooms` at connect): the room's `join`
    /// permission, and `history` too when it recovers from `since`.
    fn join(
        &mut self,
        rooms: &Rooms,
        conn: &Rc<Conn>,
        room: String,
        since: Option<Since>,
        id: Option<&str>,
    ) {
        let settings = &rooms.worker().settings;
        let permitted = self
            .permit(settings, &room, Capability::Join)
            .and_then(|()| match since {
                Some(_) => self.permit(settings, &room, Capability::History),
                None => Ok(()),
            });
        let blind = self
            .permit(settings, &room, Capability::Presence)
            .is_err()
            .then(|| room.clone());
        match permitted.and_then(|()| rooms.join(&mut self.rooms, conn, room, since, id)) {
            Ok(()) => {
                if let Some(room) = blind {
                    rooms.hide_presence(&room, conn.id);
                }
            }
            Err(refusal) => refuse(rooms, conn, &refusal, id),
        }
    }

    /// `{"type":"refresh","token":…}`: a fresh token for the same user restarts the
    /// expiry clock (`refreshed`); anything else is refused (`refresh_refused`) and the
    /// clock runs on; after the grace period the connection is closed with 4001.
    fn refresh(&mut self, worker: &Worker, conn: &Conn, token: &str, id: Option<&str>) {
        let result = match self.identity {
            Identity::Anonymous => Err(RefreshError::Anonymous),
            Identity::User(_) => worker
                .auth
                .identify(Some(token))
                .map_err(RefreshError::Token)
                .and_then(|fresh| {
                    let Identity::User(claims) = fresh else {
                        return Err(RefreshError::Anonymous);
                    };
                    let clocks = &mut worker.token_clocks.borrow_mut();
                    let exp = clocks.refresh(conn.id, &claims, unix_now())?;
                    self.identity = Identity::User(claims);
                    Ok(exp)
                }),
        };
        match result {
            Ok(exp) => {
                worker.reply_text(conn, &expiry::refreshed_frame(exp));
                if let Some(id) = id {
                    worker.reply_text(conn, &protocol::ack(id, None, None));
                }
            }
            Err(e) => {
                counters::add(&worker.counters.request_errors, 1);
                worker.reply_text(conn, &protocol::error(&e.refusal(), id));
                if e == RefreshError::TooLate {
                    conn.close_with(CloseCause::TOKEN_EXPIRED);
                }
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
