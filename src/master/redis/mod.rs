//! Rooms across hosts through Redis (`--redis URL`, repeatable): the master's engine that
//! replaces the local order and history when it is on. Only the master talks to Redis;
//! workers and the IPC do not change.
//!
//! - A room's `seq` and `epoch` are assigned in Redis by one script that also stores the
//!   message (a capped stream with a TTL) and publishes it (`script`): one round trip per
//!   publish, batched per instance (`link`). The ack carries that `seq` and `epoch`.
//! - Interest: the host subscribes to a room's channel when its first local member joins
//!   and unsubscribes when its last leaves (`link` batches them), so a host with no member
//!   of a room receives none of its messages.
//! - Every member gets messages from pub/sub, in `seq` order per room (`order`): a gap or a
//!   new epoch is back-filled from the stored messages before anything later; a reconnected
//!   pub/sub link back-fills every room it serves. A join is answered after a read, with
//!   the replay for `since` from Redis.
//! - Several instances: a room lives on the instance its name hashes to (`shard`).
//! - While a room's instance is unreachable its publishes are refused (`unavailable`).
//! - Presence across hosts (`presence`): join/leave notices travel on the room's channel
//!   to the other hosts' members; each host's member count per room lives in a Redis hash
//!   next to a host heartbeat, and a dead host's members are forgotten within
//!   [`presence::HOST_TTL`] + [`presence::BEAT`].
//!
//! # Layout
//! `commands` (loop ⇄ link task) · `link` (one task per instance) · `order` (one room's
//! order, pure) · `script` (keys, Lua, payload) · `shard` (room → instance) ·
//! `presence` (host member counts, heartbeat).

mod commands;
mod link;
mod order;
mod presence;
mod script;
mod shard;

use std::collections::HashMap;

use tokio::sync::mpsc::{self, UnboundedSender};
use wsfleet_worker::ipc::{ToWorker, monotonic_ns};
use wsfleet_worker::protocol::{self, Refusal, Since};

pub use commands::{Asker, Report, Ticket};
use commands::{Command, PageAnswer, PageRequest};
use order::{Outcome, RoomOrder, WaitingJoin};
use presence::HostPresence;

use super::events::Event;
use super::history::{Epoch, QueryError};
use super::recall::{page_frame, query_error_frame};
use super::relay::{Relay, WorkerKey};
use super::rooms::{To, to_targets};
use crate::control_api::{RedisInstanceRow, RedisRow};
use crate::namespaces::Namespaces;

/// Messages a room keeps in Redis at least, even with history off: enough to back-fill
/// the gaps of an at-most-once pub/sub.
pub const MIN_LOG: usize = 128;

/// Why `--redis` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// A URL is not a Redis URL.
    #[error("--redis {url:?} is not a Redis URL ({source}); use redis://HOST:PORT[/DB]")]
    Url {
        /// The URL as given (password hidden).
        url: String,
        /// The client's explanation.
        source: redis::RedisError,
    },
}

/// One instance as the loop sees it.
#[derive(Debug)]
struct Instance {
    /// The link task's queue.
    tx: UnboundedSender<Command>,
    /// The URL, password hidden (for `stats`).
    shown: String,
    /// Whether its pub/sub link is up.
    up: bool,
    /// Why it last went down.
    last_error: Option<String>,
}

/// The Redis engine, owned by the loop through [`super::rooms::Rooms`].
#[derive(Debug)]
pub struct Engine {
    /// One per `--redis` URL, in order (the shard index).
    instances: Vec<Instance>,
    /// Rooms this host has members of, with their order here.
    rooms: HashMap<String, RoomOrder>,
    /// Per-room log size and TTL.
    namespaces: Namespaces,
    /// Longest gap a join with `since` replays.
    recovery_max: u64,
    /// Counters for `stats` and `/metrics`.
    counts: RedisRow,
    /// This host's members per room and every live host's totals.
    presence: HostPresence,
}

impl Engine {
    /// Starts one link task per URL (on the current `LocalSet`); reports come back on
    /// `events`.
    pub fn start(
        urls: &[String],
        namespaces: Namespaces,
        recovery_max: u64,
        events: &UnboundedSender<Event>,
    ) -> Result<Self, RedisError> {
        let mut instances = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let shown = hide_password(url);
            let client = redis::Client::open(url.as_str()).map_err(|source| RedisError::Url {
                url: shown.clone(),
                source,
            })?;
            let (tx, rx) = mpsc::unbounded_channel();
            link::spawn(i, client, rx, events.clone(), i == 0);
            instances.push(Instance {
                tx,
                shown,
                up: false,
                last_error: Some("connecting".into()),
            });
        }
        Ok(Self {
            instances,
            rooms: HashMap::new(),
            namespaces,
            recovery_max,
            counts: RedisRow::default(),
            presence: HostPresence::new(Epoch::generate().as_str().to_owned()),
        })
    }

    /// New per-room options and recovery bound (a reload; the URLs are read at start only).
    pub fn reconfigure(&mut self, namespaces: Namespaces, recovery_max: u64) {
        self.namespaces = namespaces;
        self.recovery_max = recovery_max;
    }

    fn instance(&self, room: &str) -> &Instance {
        &self.instances[shard::shard(room, self.instances.len())]
    }

    fn send(&self, room: &str, cmd: Command) {
        let _ = self.instance(room).tx.send(cmd);
    }

    /// Log cap and TTL (seconds) of `room` in Redis.
    fn log_options(&self, room: &str) -> (usize, u64) {
        let h = self.namespaces.lookup(room).history;
        (h.size.max(MIN_LOG), h.ttl.as_secs().max(1))
    }

    /// A publish: sent to Redis, answered when the script ran; refused at once while the
    /// room's instance is unreachable.
    pub fn publish(
        &mut self,
        room: String,
        data: String,
        ticket: Ticket,
        out: &mut impl FnMut(To, ToWorker),
    ) {
        if !self.instance(&room).up {
            self.counts.refused += 1;
            refuse(&ticket, out);
            return;
        }
        let (cap, ttl_s) = self.log_options(&room);
        self.send(
            &room.clone(),
            Command::Publish {
                room,
                data,
                cap,
                ttl_s,
                ticket,
            },
        );
    }

    /// A broadcast for every host (through the first instance, this host's members
    /// included), acked once Redis took it; refused while that instance is down.
    pub fn broadcast(&mut self, data: String, ticket: Ticket, out: &mut impl FnMut(To, ToWorker)) {
        let first = &self.instances[0];
        if !first.up {
            self.counts.refused += 1;
            return refuse(&ticket, out);
        }
        let _ = first.tx.send(Command::Broadcast { data, ticket });
    }

    /// A join on worker `from` (already routed by the relay): subscribes the host on its
    /// first member and reads the room's position (and the replay) before answering.
    pub fn join(&mut self, room: &str, join: WaitingJoinArgs) {
        let first = !self.rooms.contains_key(room);
        if first {
            self.send(room, Command::Subscribe(room.to_owned()));
        }
        let max = self.recovery_max;
        let order = self.rooms.entry(room.to_owned()).or_default();
        let outcome = order.join(
            WaitingJoin {
                from: join.from,
                conn: join.conn,
                token: join.token,
                since: join.since,
            },
            max,
        );
        if let Some(after) = outcome.read {
            self.read(room, after);
        }
    }

    /// A `history` request (a client's or the server API's): a page read from the room's
    /// Redis stream, answered to `asker` when the read comes back. Answered at once when
    /// the room keeps no history (`history_off`, as without Redis) or its instance is
    /// unreachable (`unavailable`).
    pub fn history(
        &mut self,
        room: String,
        limit: usize,
        since: Option<&Since>,
        reverse: bool,
        asker: Asker,
        out: &mut impl FnMut(To, ToWorker),
    ) {
        let size = self.namespaces.lookup(&room).history.size;
        if size == 0 {
            let frame = query_error_frame(&QueryError::HistoryOff { room }, asker.id());
            return asker.answer(frame, out);
        }
        if !self.instance(&room).up {
            let frame = unavailable_history(asker.id());
            return asker.answer(frame, out);
        }
        self.counts.reads += 1;
        let (_, ttl_s) = self.log_options(&room);
        let request = PageRequest {
            limit,
            size,
            since: since.map(|s| (s.epoch.clone(), s.seq)),
            reverse,
        };
        let cmd = Command::History {
            room: room.clone(),
            request,
            ttl_s,
            asker,
        };
        self.send(&room, cmd);
    }

    /// A member of `room` on worker `from` joined or left: counted for presence across
    /// hosts, and the notice sent to the room's members on other hosts (this host's get it
    /// from the relay as without Redis).
    /// `frame` is the notice this host's members got (None: the room sends counts, not
    /// notices, so other hosts get none either).
    pub fn presence(&mut self, room: &str, from: WorkerKey, joined: bool, frame: Option<&str>) {
        self.presence.member(room, from, joined);
        let Some(frame) = frame else {
            return;
        };
        let payload = script::notice_payload(self.presence.host(), joined, frame);
        self.send(
            room,
            Command::Notice {
                room: room.to_owned(),
                payload,
            },
        );
    }

    /// Members of `room` on every live host, as of the last beat (None before the first).
    pub fn members(&self, room: &str) -> Option<u64> {
        self.presence.total(room)
    }

    /// A worker exited: its members leave the host's counts.
    pub fn remove_worker(&mut self, key: WorkerKey, relay: &Relay) {
        self.presence.remove_worker(key);
        self.forget_unrouted(relay);
    }

    /// Once a tick: the host heartbeat and the rooms' member counts, when due.
    pub fn tick(&mut self, now: std::time::Instant) {
        let Some(beat) = self.presence.beat(now) else {
            return;
        };
        let host = self.presence.host().to_owned();
        let ttl_s = presence::HOST_TTL.as_secs();
        for i in &self.instances {
            let _ = i.tx.send(Command::Beat {
                host: host.clone(),
                ttl_s,
            });
        }
        for (room, count) in beat.rooms {
            let cmd = Command::Members {
                room: room.clone(),
                host: host.clone(),
                count,
                ttl_s,
            };
            self.send(&room, cmd);
        }
    }

    /// Rooms the relay no longer routes anywhere on this host: unsubscribe them.
    pub fn forget_unrouted(&mut self, relay: &Relay) {
        let gone: Vec<String> = self
            .rooms
            .keys()
            .filter(|r| relay.targets(r).is_empty())
            .cloned()
            .collect();
        for room in gone {
            self.rooms.remove(&room);
            self.send(&room, Command::Unsubscribe(room.clone()));
        }
    }

    fn read(&mut self, room: &str, after: Option<u64>) {
        self.counts.reads += 1;
        let known = self
            .rooms
            .get(room)
            .and_then(|o| o.position())
            .map(|(e, _)| e.to_owned());
        let (_, ttl_s) = self.log_options(room);
        self.send(
            room,
            Command::Read {
                room: room.to_owned(),
                after,
                known,
                ttl_s,
            },
        );
    }

    /// A link task's report: deliveries, join answers, acks and refusals go out through
    /// `out` to the workers `relay` routes the room to.
    pub fn on_report(&mut self, report: Report, relay: &Relay, out: &mut impl FnMut(To, ToWorker)) {
        let max = self.recovery_max;
        match report {
            Report::Published {
                ticket,
                room,
                result,
            } => match result {
                Ok((seq, epoch)) => {
                    self.counts.published += 1;
                    acknowledge(ticket, Some(seq), Some(epoch), out);
                }
                Err(why) => {
                    tracing::debug!(room, %why, "publish refused: Redis unavailable");
                    self.counts.refused += 1;
                    refuse(&ticket, out);
                }
            },
            Report::Message { room, delivery } => {
                self.counts.received += 1;
                let Some(order) = self.rooms.get_mut(&room) else {
                    // Unsubscribed meanwhile (or a message in flight before it).
                    self.counts.unrouted += 1;
                    return;
                };
                let outcome = order.message(delivery, max);
                self.apply(&room, outcome, relay, out);
            }
            Report::Read { room, result } => {
                let Some(order) = self.rooms.get_mut(&room) else {
                    return;
                };
                let outcome = match result {
                    Ok(snap) => order.read(&room, snap, max),
                    Err(why) => {
                        tracing::debug!(room, %why, "read from Redis failed; again when the link is back");
                        order.read_failed(&room)
                    }
                };
                self.apply(&room, outcome, relay, out);
            }
            Report::History {
                room,
                request,
                asker,
                result,
            } => {
                let id = asker.id().map(str::to_owned);
                let id = id.as_deref();
                let frame = match result {
                    Ok(PageAnswer::Page {
                        top,
                        epoch,
                        messages,
                    }) => {
                        let messages = messages.iter().map(|(seq, data)| (*seq, data.as_str()));
                        page_frame(&room, &epoch, top, messages, id)
                    }
                    Ok(PageAnswer::EpochChanged { top, epoch }) => {
                        // Epochs in Redis are the ones this code generated.
                        let epoch = Epoch::from_saved(&epoch).unwrap_or_else(Epoch::generate);
                        query_error_frame(&QueryError::EpochChanged { epoch, top }, id)
                    }
                    Ok(PageAnswer::BeyondTop { top }) => {
                        let since = request.since.map_or(0, |(_, seq)| seq);
                        query_error_frame(&QueryError::SinceBeyondTop { since, top }, id)
                    }
                    Err(why) => {
                        tracing::debug!(room, %why, "history read from Redis failed");
                        unavailable_history(id)
                    }
                };
                asker.answer(frame, out);
            }
            Report::Notice { room, notice } => {
                if notice.host == self.presence.host() {
                    return;
                }
                to_targets(relay.targets(&room), &room, &notice.frame, (0, true), out);
            }
            Report::Members { room, total } => self.presence.read(&room, total),
            Report::Broadcasted { ticket, result } => match result {
                Ok(()) => acknowledge(ticket, None, None, out),
                Err(_) => {
                    self.counts.refused += 1;
                    refuse(&ticket, out);
                }
            },
            Report::Broadcast(data) => {
                let frame = protocol::broadcast_message(&data);
                out(To::Serving, ToWorker::Broadcast { frame });
            }
            Report::Link { instance, up, why } => {
                let n = self.instances.len();
                let Some(i) = self.instances.get_mut(instance) else {
                    return;
                };
                i.up = up;
                i.last_error = why;
                if up {
                    self.counts.resyncs += 1;
                    // Pub/sub is at most once: whatever was published while it was down
                    // comes from the stored messages.
                    let rooms: Vec<String> = self
                        .rooms
                        .keys()
                        .filter(|r| shard::shard(r, n) == instance)
                        .cloned()
                        .collect();
                    for room in rooms {
                        if let Some(order) = self.rooms.get_mut(&room) {
                            let outcome = order.resync(max);
                            self.apply(&room, outcome, relay, out);
                        }
                    }
                }
            }
        }
    }

    /// Carries out what a room's order decided.
    fn apply(&mut self, room: &str, o: Outcome, relay: &Relay, out: &mut impl FnMut(To, ToWorker)) {
        self.counts.backfilled += o.backfilled;
        self.counts.lost += o.lost;
        if o.lost > 0 {
            tracing::warn!(
                room,
                lost = o.lost,
                "messages Redis no longer stored were skipped"
            );
        }
        let ordered_ns = monotonic_ns();
        for (seq, data) in &o.deliver {
            self.counts.delivered += 1;
            let frame = protocol::room_message(room, *seq, data);
            to_targets(relay.targets(room), room, &frame, (ordered_ns, false), out);
        }
        for (join, answer) in o.answers {
            let joined = ToWorker::Joined {
                room: room.to_owned(),
                conn: join.conn,
                token: join.token,
                answer,
            };
            out(To::Worker(join.from), joined);
        }
        if let Some(after) = o.read {
            self.read(room, after);
        }
    }

    /// The link states and counters for `stats` and `/metrics`.
    pub fn row(&self) -> RedisRow {
        RedisRow {
            instances: self
                .instances
                .iter()
                .map(|i| RedisInstanceRow {
                    url: i.shown.clone(),
                    up: i.up,
                    last_error: i.last_error.clone(),
                })
                .collect(),
            rooms: self.rooms.len() as u64,
            members: self.presence.served_total(),
            host: self.presence.host().to_owned(),
            ..self.counts.clone()
        }
    }
}

/// What a join brings to the engine.
#[derive(Debug)]
pub struct WaitingJoinArgs {
    /// The joining connection's worker.
    pub from: WorkerKey,
    /// The connection.
    pub conn: u64,
    /// The worker's token for the join.
    pub token: u64,
    /// Where the client left off.
    pub since: Option<Since>,
}

/// The ack of a publish (`seq`, `epoch`) or broadcast, when the client asked for one.
fn acknowledge(
    ticket: Ticket,
    seq: Option<u64>,
    epoch: Option<String>,
    out: &mut impl FnMut(To, ToWorker),
) {
    if let Some(ack) = ticket.ack {
        let ordered = ToWorker::Ordered {
            conn: ticket.conn,
            ack,
            seq,
            epoch,
        };
        out(To::Worker(ticket.from), ordered);
    }
}

/// The refusal of a publish Redis could not take.
fn refuse(ticket: &Ticket, out: &mut impl FnMut(To, ToWorker)) {
    let refusal = Refusal::new(
        "unavailable",
        "the room's Redis instance is unreachable; the message was not published, send it again later",
    );
    let frame = protocol::error(&refusal, ticket.ack.as_deref());
    out(
        To::Worker(ticket.from),
        ToWorker::Reply {
            conn: ticket.conn,
            frame,
        },
    );
}

impl Asker {
    /// The request id to echo (the server API's requests have none).
    fn id(&self) -> Option<&str> {
        match self {
            Self::Client { id, .. } => id.as_deref(),
            Self::Api(_) => None,
        }
    }

    /// Sends `frame` to whoever asked.
    fn answer(self, frame: String, out: &mut impl FnMut(To, ToWorker)) {
        match self {
            Self::Client { from, conn, .. } => {
                out(To::Worker(from), ToWorker::Reply { conn, frame })
            }
            Self::Api(reply) => {
                let _ = reply.send(Ok(frame));
            }
        }
    }
}

/// The refusal of a `history` request Redis could not answer.
fn unavailable_history(id: Option<&str>) -> String {
    let refusal = Refusal::new(
        "unavailable",
        "the room's Redis instance is unreachable; history could not be read, ask again later",
    );
    protocol::error(&refusal, id)
}

/// `url` with any password replaced by `***`.
fn hide_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let auth = &url[s + 3..at];
            match auth.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            hide_password("redis://u:secret@h:1/0"),
            "redis://u:***@h:1/0"
        );
        assert_eq!(hide_password("redis://h:1"), "redis://h:1");
    }
}
