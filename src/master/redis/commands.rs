//! What the loop's engine and a Redis link task say to each other: commands go to the task
//! of the room's instance in order, reports come back to the loop as events.

use super::order::Snapshot;
use crate::master::api::calls::Reply;
use crate::master::relay::WorkerKey;

/// Who waits for a publish's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The publisher's worker.
    pub from: WorkerKey,
    /// The publisher's connection on that worker.
    pub conn: u64,
    /// The publish's request id (raw JSON), when it asked for an ack.
    pub ack: Option<String>,
}

/// Who waits for a `history` page.
#[derive(Debug)]
pub enum Asker {
    /// A client's request, answered with a frame to its connection.
    Client {
        /// The client's worker.
        from: WorkerKey,
        /// The connection on that worker.
        conn: u64,
        /// The request's id (raw JSON), echoed in the answer.
        id: Option<String>,
    },
    /// The server API's `history` method, answered with the frame.
    Api(Reply<String>),
}

/// What a `history` request asks for (the client protocol's fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Most messages.
    pub limit: usize,
    /// The room's namespace `history_size`: older messages are not served, as without Redis.
    pub size: usize,
    /// Page from this position (epoch, seq).
    pub since: Option<(String, u64)>,
    /// Newest first.
    pub reverse: bool,
}

/// The history script's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageAnswer {
    /// A page: the room's position and the messages, in the order asked.
    Page {
        /// The room's last `seq`.
        top: u64,
        /// The room's epoch.
        epoch: String,
        /// `(seq, data)`.
        messages: Vec<(u64, String)>,
    },
    /// `since` was from another life of the room.
    EpochChanged {
        /// The room's last `seq`.
        top: u64,
        /// The room's epoch.
        epoch: String,
    },
    /// `since.seq` is past the room's last `seq`.
    BeyondTop {
        /// The room's last `seq`.
        top: u64,
    },
}

/// A command for a link task; each instance's task carries them out in order.
#[derive(Debug)]
pub enum Command {
    /// Order, store and fan out a message (the publish script).
    Publish {
        /// The room.
        room: String,
        /// The raw JSON data.
        data: String,
        /// Messages the room's stored log keeps.
        cap: usize,
        /// Seconds the room's keys live after its last publish.
        ttl_s: u64,
        /// Whom to answer.
        ticket: Ticket,
    },
    /// Read the room's position and stored messages (the read script).
    Read {
        /// The room.
        room: String,
        /// Stored messages after this `seq` (`None`: none).
        after: Option<u64>,
        /// The epoch this host knows for the room, if any.
        known: Option<String>,
        /// Seconds a room started by the read lives.
        ttl_s: u64,
    },
    /// A page of the room's stored messages (the history script).
    History {
        /// The room.
        room: String,
        /// What was asked.
        request: PageRequest,
        /// Seconds a room started by the read lives.
        ttl_s: u64,
        /// Whom to answer.
        asker: Asker,
    },
    /// This host has members of the room: listen on its channel.
    Subscribe(String),
    /// This host has no member of the room left.
    Unsubscribe(String),
    /// A broadcast for every host.
    Broadcast {
        /// The raw JSON data.
        data: String,
        /// Whom to answer.
        ticket: Ticket,
    },
    /// A presence notice for the room's members on other hosts.
    Notice {
        /// The room.
        room: String,
        /// The channel payload (`script::notice_payload`).
        payload: String,
    },
    /// This host is alive (its heartbeat key, on every instance).
    Beat {
        /// The host id.
        host: String,
        /// Seconds the key lives.
        ttl_s: u64,
    },
    /// Write this host's member count of a room and read the live total.
    Members {
        /// The room.
        room: String,
        /// The host id.
        host: String,
        /// This host's members of the room.
        count: u64,
        /// Seconds the room's hash lives without a beat.
        ttl_s: u64,
    },
}

/// What a link task reports to the loop.
#[derive(Debug)]
pub enum Report {
    /// A publish was ordered (`seq`, `epoch`) or refused (why).
    Published {
        /// Whom to answer.
        ticket: Ticket,
        /// The room.
        room: String,
        /// The position, or why Redis could not be used.
        result: Result<(u64, String), String>,
    },
    /// A read's answer.
    Read {
        /// The room.
        room: String,
        /// The position and messages, or why Redis could not be used.
        result: Result<Snapshot, String>,
    },
    /// A `history` page, or why Redis could not be used.
    History {
        /// The room.
        room: String,
        /// What was asked (`since` for the error message).
        request: PageRequest,
        /// Whom to answer.
        asker: Asker,
        /// The page, or why Redis could not be used.
        result: Result<PageAnswer, String>,
    },
    /// A message on a room's channel.
    Message {
        /// The room.
        room: String,
        /// The payload the publish script sent.
        delivery: super::script::Delivery,
    },
    /// A broadcast was handed to Redis (`Ok`) or could not be (why).
    Broadcasted {
        /// Whom to answer.
        ticket: Ticket,
        /// Whether Redis took it.
        result: Result<(), String>,
    },
    /// A broadcast from some host.
    Broadcast(String),
    /// A presence notice from some host.
    Notice {
        /// The room.
        room: String,
        /// Who joined or left, on which host.
        notice: super::script::Notice,
    },
    /// Members of a room on every live host.
    Members {
        /// The room.
        room: String,
        /// Their number.
        total: u64,
    },
    /// The instance's pub/sub link came up (subscriptions restored) or went down.
    Link {
        /// Index into the `--redis` list.
        instance: usize,
        /// Whether it is up now.
        up: bool,
        /// Why it went down.
        why: Option<String>,
    },
}
