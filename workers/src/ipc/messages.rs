//! Every message that crosses the master–worker link, in both directions.

use serde::{Deserialize, Serialize};

use super::defaults;
use super::latency::LatencyHistogram;
use crate::auth::permissions::PermissionRules;
use crate::auth::settings::AuthSettings;
use crate::protocol::{RoomPattern, Since};

/// Bumped whenever a message below changes shape. The master refuses a worker whose
/// Hello carries another version, so a half-upgraded fleet never misreads a frame.
pub const PROTOCOL_VERSION: u32 = 8;

/// The first message a worker sends: who it is and which protocol it speaks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    /// The listening-socket slot this worker was started for.
    pub slot: u32,
    /// The worker's process id, so the master can match it to the child it spawned.
    pub pid: u32,
    /// Which incarnation of the slot this is (grows with every restart or reload).
    pub generation: u64,
    /// The worker's [`PROTOCOL_VERSION`].
    pub version: u32,
}

/// Settings the master hands a worker in [`ToWorker::Start`]; re-read from the config
/// file on every reload, so a rolling restart applies new values slot by slot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Largest WebSocket message a client may send; larger ones get close code 1009.
    pub max_message_bytes: usize,
    /// Connections this worker accepts before it answers upgrades with 503.
    pub max_connections: usize,
    /// Rooms one connection may be a member of at once.
    pub max_rooms_per_connection: usize,
    /// Bytes queued towards one client before it is closed as a slow consumer (1013).
    pub outbox_limit_bytes: usize,
    /// How often the server pings each client.
    pub ping_interval_ms: u64,
    /// A client silent (no frame at all, pong included) for this long is closed.
    pub ping_timeout_ms: u64,
    /// How long a client has to finish the HTTP upgrade (slowloris guard).
    pub handshake_timeout_ms: u64,
    /// Origins allowed to open WebSockets; empty means any.
    pub allowed_origins: Vec<String>,
    /// Requests per second one `/ws` connection may make (burst of the same size);
    /// 0 turns the limit off.
    pub rate_limit_per_sec: u32,
    /// Message bytes per second one `/ws` connection may send (burst of the same size);
    /// past it the connection is closed with 1008. 0 turns the limit off.
    pub inbound_bytes_per_sec: u64,
    /// Whether `/ws` clients may send `broadcast` (refused with `forbidden` when not).
    pub client_broadcast: bool,
    /// Connection tokens: mode, key, checks and refresh grace.
    pub auth: AuthSettings,
    /// Who may join, publish, read history and see presence, by room pattern (from the
    /// config file's `[[namespace]]` tables).
    pub permissions: PermissionRules,
    /// Connections one user (token `sub`) may hold across the fleet (counted by the
    /// master, see [`ToMaster::Admit`]); 0 = no limit.
    pub max_connections_per_user: u32,
    /// Connections one client IP may hold across the fleet (counted by the master);
    /// 0 = no limit.
    pub max_connections_per_ip: u32,
    /// Upgrades one client IP may make per minute on this worker (burst of the same
    /// size); 0 = no limit.
    pub ip_connects_per_minute: u32,
    /// Whether permessage-deflate is negotiated with clients that offer it.
    pub compression: bool,
    /// Smallest message payload (bytes) sent compressed; smaller ones go plain.
    pub compression_threshold: usize,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            max_connections: defaults::MAX_CONNECTIONS,
            max_rooms_per_connection: defaults::MAX_ROOMS_PER_CONNECTION,
            outbox_limit_bytes: defaults::OUTBOX_LIMIT_BYTES,
            ping_interval_ms: defaults::PING_INTERVAL_MS,
            ping_timeout_ms: defaults::PING_TIMEOUT_MS,
            handshake_timeout_ms: defaults::HANDSHAKE_TIMEOUT_MS,
            allowed_origins: Vec::new(),
            rate_limit_per_sec: defaults::RATE_LIMIT_PER_SEC,
            inbound_bytes_per_sec: defaults::INBOUND_BYTES_PER_SEC,
            client_broadcast: defaults::CLIENT_BROADCAST,
            auth: AuthSettings::default(),
            permissions: PermissionRules::default(),
            max_connections_per_user: defaults::MAX_CONNECTIONS_PER_USER,
            max_connections_per_ip: defaults::MAX_CONNECTIONS_PER_IP,
            ip_connects_per_minute: defaults::IP_CONNECTS_PER_MINUTE,
            compression: defaults::COMPRESSION,
            compression_threshold: defaults::COMPRESSION_THRESHOLD,
        }
    }
}

/// Every counter a worker keeps, listed once. Each entry is
/// `field kind "stats column" "metric family" "label key" "label value" "help";` and the
/// list is handed to the macro named by the caller, which builds what it needs from it:
/// the IPC struct below, the worker's live cells (`counters.rs`), the control socket's
/// public counters and the `/metrics` families in the master. `kind` is `counter` (grows;
/// `/metrics` adds exited workers' figures) or `gauge` (live workers only); an empty
/// column is not shown by `wsfleet stats`; entries sharing a family are one metric with
/// a label (the first entry's help is the family's). Adding a counter is one line here.
#[macro_export]
macro_rules! with_counters {
    ($then:ident) => {
        $then! {
            connections_current gauge "conns" "wsfleet_connections" "" ""
                "WebSocket connections open now.";
            connections_total counter "total" "wsfleet_connections_accepted" "" ""
                "WebSocket connections accepted.";
            rejected_full counter "" "wsfleet_connections_rejected" "reason" "full"
                "WebSocket upgrades refused: full (max_connections, 503), draining (503), origin (403), auth (401), limit (429).";
            rejected_draining counter "" "wsfleet_connections_rejected" "reason" "draining"
                "Upgrades refused because the worker was draining (503).";
            rejected_origin counter "" "wsfleet_connections_rejected" "reason" "origin"
                "Upgrades refused for a bad Origin (403).";
            rejected_auth counter "" "wsfleet_connections_rejected" "reason" "auth"
                "Upgrades refused for a missing or bad connection token (401).";
            rejected_limit counter "" "wsfleet_connections_rejected" "reason" "limit"
                "Upgrades refused by a per-user or per-IP limit (429).";
            messages_in counter "msg_in" "wsfleet_received_messages" "" ""
                "WebSocket data messages received from clients.";
            messages_out counter "msg_out" "wsfleet_sent_messages" "" ""
                "WebSocket data messages queued to clients.";
            bytes_in counter "b_in" "wsfleet_received_bytes" "" ""
                "Payload bytes received from clients.";
            bytes_out counter "b_out" "wsfleet_sent_bytes" "" ""
                "Payload bytes queued to clients.";
            bytes_out_compressed counter "" "wsfleet_sent_compressed_bytes" "" ""
                "Bytes of permessage-deflate frames queued to clients (part of wsfleet_sent_bytes; the rest went plain).";
            bytes_out_compressed_from counter "" "wsfleet_sent_compressed_original_bytes" "" ""
                "What those compressed frames would have been plain; wsfleet_sent_compressed_bytes over this is the compression ratio.";
            rooms gauge "" "wsfleet_rooms" "" ""
                "Rooms with at least one member on this worker.";
            publishes counter "" "wsfleet_publishes" "" ""
                "Room publishes this worker's clients sent, relayed by the master.";
            slow_consumer_closes counter "" "wsfleet_slow_consumer_closes" "" ""
                "Clients closed with 1013 because their outgoing buffer overflowed.";
            protocol_errors counter "" "wsfleet_protocol_error_closes" "" ""
                "Connections closed for a protocol violation (1002, 1007, 1009).";
            request_errors counter "" "wsfleet_request_errors" "" ""
                "Error frames sent for /ws requests that could not be honoured.";
            ipc_frames_in counter "ipc_in" "wsfleet_ipc_frames" "direction" "to_worker"
                "Frames over the master-worker link, as counted by the worker.";
            ipc_frames_out counter "ipc_out" "wsfleet_ipc_frames" "direction" "to_master"
                "IPC frames the worker sent to the master.";
        }
    };
}

/// Builds [`WorkerCounters`] from the [`with_counters!`] list.
macro_rules! ipc_counters {
    ($($name:ident $kind:ident $col:literal $metric:literal $lk:literal $lv:literal $help:literal;)*) => {
        /// Live counters a worker reports when the master asks (`wsfleet stats`, `/metrics`).
        #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
        pub struct WorkerCounters {
            $(#[doc = $help] pub $name: u64,)*
            /// Time from the master ordering a room publish to this worker having written
            /// it to its local members (one observation per room message, not per recipient).
            pub delivery_latency: LatencyHistogram,
        }
    };
}

crate::with_counters!(ipc_counters);

/// Master → worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ToWorker {
    /// Answer to a compatible Hello: start serving with these settings.
    Start(WorkerSettings),
    /// Stop taking new clients, keep serving the current ones for `grace_ms`, then close
    /// them with 1012 and exit. With `stop_accepting` the worker also stops accepting at
    /// once (a reload, where the new worker of the slot accepts); without it, it keeps
    /// answering `/health` with 503 and upgrades with 503 until it exits (a fleet stop).
    Drain {
        /// How long current clients keep being served.
        grace_ms: u64,
        /// Whether to stop calling accept() right away.
        stop_accepting: bool,
    },
    /// Report [`WorkerCounters`] in a [`ToMaster::Counters`] carrying the same id.
    CountersRequest {
        /// Matches the answer to the request.
        id: u64,
    },
    /// The answer to a [`ToMaster::Join`], sent at one point of the room's order: the
    /// worker already receives the room, every message ordered before this answer is in
    /// its replay (or was before the client's `since`), every one after it follows it.
    Joined {
        /// The room joined.
        room: String,
        /// The joining local connection.
        conn: u64,
        /// The join's token; a stale answer (the connection left, or left and joined
        /// again, meanwhile) is ignored.
        token: u64,
        /// What the connection gets.
        answer: JoinAnswer,
    },
    /// A frame for one local connection (a `history` answer or its error).
    Reply {
        /// The local connection.
        conn: u64,
        /// The ready-to-send JSON text.
        frame: String,
    },
    /// A room message for local members: `frame` is the complete JSON text frame, built
    /// once by the master and sent as is to every member.
    Room {
        /// The room whose members receive it.
        room: String,
        /// The ready-to-send JSON text.
        frame: String,
        /// A local connection that must not receive it (the subject of a presence notice).
        skip: Option<u64>,
        /// When the master ordered it (`CLOCK_MONOTONIC` ns, see `ipc::latency`); 0 for
        /// messages that are not publishes (presence), which are not timed.
        ordered_ns: u64,
        /// A presence frame (join/leave notice or coalesced count), set by the master: the
        /// worker skips members without the room's `presence` permission, without
        /// reading the frame.
        presence: bool,
    },
    /// A frame for every local `/ws` client.
    Broadcast {
        /// The ready-to-send JSON text.
        frame: String,
    },
    /// The link heartbeat: answer with [`ToMaster::Pong`] carrying the same id. A worker
    /// that stops answering (stopped, wedged) is marked unresponsive, then replaced.
    Ping {
        /// Matches the answer to the heartbeat.
        id: u64,
    },
    /// A publish or broadcast from this worker has been ordered: acknowledge it.
    Ordered {
        /// The local connection that asked for the acknowledgement.
        conn: u64,
        /// The client's `id`, as raw JSON.
        ack: String,
        /// The room sequence number assigned (None for a broadcast).
        seq: Option<u64>,
        /// The room's epoch, for a room with history.
        epoch: Option<String>,
    },
    /// The answer to a [`ToMaster::Admit`]: the upgrade it held may go on (`refused`
    /// None, the master counts it until [`ToMaster::Release`]) or gets 429.
    Admitted {
        /// The request's id.
        id: u64,
        /// Which fleet-wide limit refused it, if one did.
        refused: Option<Limited>,
    },
    /// A question from the master's server API (presence, room list, disconnect); answer
    /// with [`ToMaster::Answer`] carrying the same id.
    Query {
        /// Matches the answer to the question.
        id: u64,
        /// What is asked.
        query: WorkerQuery,
    },
}

/// Which connection limit refused an upgrade (429, named by `X-Wsfleet-Limit`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Limited {
    /// `max_connections_per_user`, fleet-wide.
    User,
    /// `max_connections_per_ip`, fleet-wide.
    Ip,
    /// `ip_connects_per_minute` (per worker).
    Rate,
}

/// Which connections a server-API disconnect closes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Target {
    /// One connection, by the fleet-wide id clients see (`slot.generation.conn`).
    Conn(String),
    /// Every connection of this user id (the token's `sub`).
    User(String),
}

/// What the master's server API asks every worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum WorkerQuery {
    /// The confirmed local members of a room.
    Members {
        /// The room.
        room: String,
    },
    /// Rooms with local members and how many, optionally only those matching a pattern.
    Rooms {
        /// Only rooms this matches (None: every room).
        pattern: Option<RoomPattern>,
    },
    /// Close the matching local connections with `code`.
    Disconnect {
        /// Which connections.
        target: Target,
        /// The WebSocket close code they get.
        code: u16,
    },
}

/// One local member of a room, as a worker reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberEntry {
    /// The fleet-wide connection id.
    pub id: String,
    /// The connection's user id, when it has one.
    pub user: Option<String>,
    /// Its token's public `info` (raw JSON text), when it has one.
    pub info: Option<String>,
}

/// A worker's answer to a [`WorkerQuery`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum QueryAnswer {
    /// The room's local members.
    Members(Vec<MemberEntry>),
    /// `(room, local members)` pairs.
    Rooms(Vec<(String, u64)>),
    /// How many connections were closed.
    Disconnected(u64),
}

/// The master's answer to a join.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum JoinAnswer {
    /// The connection is a member: send it these frames (`joined`, then the replay), then
    /// the room's live messages.
    Accepted {
        /// Complete JSON text frames, in order.
        frames: Vec<String>,
    },
    /// The join's `since` is impossible (beyond the room's last `seq`): the connection is
    /// not a member and gets an `invalid_field` error with this message.
    Refused {
        /// What was wrong and what to do.
        message: String,
    },
}

/// Worker → master.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ToMaster {
    /// Always the first message.
    Hello(Hello),
    /// The worker is accepting connections.
    Ready,
    /// A local connection asks to join `room`: the master routes the room to this worker
    /// (if it did not already) and answers with [`ToWorker::Joined`].
    Join {
        /// The room.
        room: String,
        /// The joining local connection.
        conn: u64,
        /// Echoed in the answer.
        token: u64,
        /// The client's last seen position, to recover from.
        since: Option<Since>,
        /// The authenticated user (from the client's token), for the master's presence
        /// registry; None without a token.
        user: Option<String>,
        /// The token's `info` (raw JSON text), for the registry; None without one.
        info: Option<String>,
    },
    /// Undoes one join the master accepted: the member left or disconnected, or the
    /// accepted join did not end as a member (left or gone while it waited). The master
    /// counts accepted joins per connection, so it drops the member at the last one.
    Leave {
        /// The room.
        room: String,
        /// The local connection.
        conn: u64,
    },
    /// A client's `presence` request; the master answers with [`ToWorker::Reply`].
    PresenceQuery {
        /// The room.
        room: String,
        /// The asking local connection.
        conn: u64,
        /// The client's `id` as raw JSON, echoed in the answer.
        id: Option<String>,
    },
    /// The worker lost its last local member (or pending join) of `room`.
    Withdraw {
        /// The room concerned.
        room: String,
    },
    /// A client's `history` request; the master answers with [`ToWorker::Reply`].
    History {
        /// The room.
        room: String,
        /// The asking local connection.
        conn: u64,
        /// Most messages wanted.
        limit: usize,
        /// Page from this position.
        since: Option<Since>,
        /// Newest first.
        reverse: bool,
        /// The client's `id` as raw JSON, echoed in the answer.
        id: Option<String>,
    },
    /// A client published to a room; the master orders it and fans it out.
    Publish {
        /// The target room.
        room: String,
        /// The client's `data`, as raw JSON.
        data: String,
        /// The publishing local connection (for the acknowledgement).
        conn: u64,
        /// The client's `id` as raw JSON, if it asked for an acknowledgement.
        ack: Option<String>,
    },
    /// A client sent a fleet-wide broadcast.
    Broadcast {
        /// The client's `data`, as raw JSON.
        data: String,
        /// The sending local connection (for the acknowledgement).
        conn: u64,
        /// The client's `id` as raw JSON, if it asked for an acknowledgement.
        ack: Option<String>,
    },
    /// An upgrade asks for a place under the fleet-wide per-user and per-IP limits (sent
    /// only when one is set); the master answers with [`ToWorker::Admitted`].
    Admit {
        /// Matches the answer, and names the place in [`ToMaster::Release`].
        id: u64,
        /// The client's address (counted when the per-IP limit is on).
        ip: std::net::IpAddr,
        /// The token's user (counted when the per-user limit is on); None: anonymous.
        user: Option<String>,
    },
    /// The connection admitted by [`ToMaster::Admit`] `id` ended (or its upgrade was
    /// abandoned): give its place back. An unknown id is ignored.
    Release {
        /// The admission's id.
        id: u64,
    },
    /// Answer to [`ToWorker::Ping`].
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// Answer to [`ToWorker::CountersRequest`].
    Counters {
        /// The request's id.
        id: u64,
        /// The live figures.
        counters: WorkerCounters,
    },
    /// Answer to [`ToWorker::Query`].
    Answer {
        /// The question's id.
        id: u64,
        /// What the worker found or did.
        answer: QueryAnswer,
    },
}

/// Bytes a queued message holds: the enum plus the strings it owns (what the link's byte
/// bounds count).
impl super::Weighed for ToWorker {
    fn weight(&self) -> usize {
        let owned = match self {
            Self::Start(s) => {
                let strings = s.allowed_origins.iter().chain(&s.auth.audience);
                strings
                    .chain(&s.auth.issuer)
                    .map(String::len)
                    .sum::<usize>()
                    + s.auth.key.0.len()
                    + s.permissions
                        .rules
                        .iter()
                        .map(|r| std::mem::size_of_val(r) + r.pattern.to_string().len())
                        .sum::<usize>()
            }
            Self::Joined { room, answer, .. } => {
                room.len()
                    + match answer {
                        JoinAnswer::Accepted { frames } => frames.iter().map(String::len).sum(),
                        JoinAnswer::Refused { message } => message.len(),
                    }
            }
            Self::Reply { frame, .. } => frame.len(),
            Self::Room { room, frame, .. } => room.len() + frame.len(),
            Self::Broadcast { frame } => frame.len(),
            Self::Ordered { ack, epoch, .. } => ack.len() + epoch.as_ref().map_or(0, String::len),
            Self::Query { query, .. } => match query {
                WorkerQuery::Members { room } => room.len(),
                WorkerQuery::Rooms { pattern } => {
                    pattern.as_ref().map_or(0, |p| p.to_string().len())
                }
                WorkerQuery::Disconnect {
                    target: Target::Conn(s) | Target::User(s),
                    ..
                } => s.len(),
            },
            Self::Drain { .. }
            | Self::CountersRequest { .. }
            | Self::Ping { .. }
            | Self::Admitted { .. } => 0,
        };
        std::mem::size_of::<Self>() + owned
    }
}

/// Bytes a queued message holds, as for [`ToWorker`].
impl super::Weighed for ToMaster {
    fn weight(&self) -> usize {
        let owned = match self {
            Self::Join {
                room,
                since,
                user,
                info,
                ..
            } => {
                room.len()
                    + since.as_ref().map_or(0, |s| s.epoch.len())
                    + user.as_ref().map_or(0, String::len)
                    + info.as_ref().map_or(0, String::len)
            }
            Self::Leave { room, .. } => room.len(),
            Self::PresenceQuery { room, id, .. } => room.len() + id.as_ref().map_or(0, String::len),
            Self::Withdraw { room } => room.len(),
            Self::History {
                room, since, id, ..
            } => {
                room.len()
                    + since.as_ref().map_or(0, |s| s.epoch.len())
                    + id.as_ref().map_or(0, String::len)
            }
            Self::Publish {
                room, data, ack, ..
            } => room.len() + data.len() + ack.as_ref().map_or(0, String::len),
            Self::Broadcast { data, ack, .. } => data.len() + ack.as_ref().map_or(0, String::len),
            Self::Answer { answer, .. } => match answer {
                QueryAnswer::Members(m) => m
                    .iter()
                    .map(|m| m.id.len() + m.user.as_ref().map_or(0, String::len))
                    .sum(),
                QueryAnswer::Rooms(r) => r.iter().map(|(room, _)| room.len() + 8).sum(),
                QueryAnswer::Disconnected(_) => 0,
            },
            Self::Admit { user, .. } => user.as_ref().map_or(0, String::len),
            Self::Hello(_)
            | Self::Ready
            | Self::Counters { .. }
            | Self::Pong { .. }
            | Self::Release { .. } => 0,
        };
        std::mem::size_of::<Self>() + owned
    }
}
