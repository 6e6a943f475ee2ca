//! Every default of `wsfleet serve`, defined once. The config merge falls back to these,
//! `WorkerSettings::default` to the worker ones (re-exported from
//! `wsfleet_worker::ipc::defaults`), and [`shown`] puts them in the `serve --help` text,
//! from which README's configuration table is generated: a default changed here changes
//! the behaviour, the help and (through the README test) the documentation together.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use clap::ValueEnum;
pub use wsfleet_worker::ipc::defaults::*;

use crate::logging::LogFormat;
use wsfleet_worker::auth::settings::Algorithm;
use wsfleet_worker::auth::source::AuthMode;

/// Where the workers serve.
pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080));
/// How long a draining worker keeps serving its clients.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new worker has to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Accept-queue length of each listening socket.
pub const BACKLOG: u32 = 4096;
/// Messages queued for one worker before it counts as stalled.
pub const IPC_QUEUE_LIMIT: u64 = 1_000_000;
/// Bytes queued for one worker before it counts as stalled: 64 MiB is about a thousand
/// maximum-size (64 KiB) room messages, tens of seconds of a busy room for a live worker
/// (which drains its link in milliseconds), and small next to the master's memory.
pub const IPC_QUEUE_LIMIT_BYTES: u64 = 64 * 1024 * 1024;
/// How long a worker may leave the link heartbeat unanswered before it is killed and
/// replaced (shown unresponsive from half of it).
pub const WORKER_TIMEOUT: Duration = Duration::from_secs(10);
/// Log filter.
pub const LOG_LEVEL: &str = "info";
/// Log line format.
pub const LOG_FORMAT: LogFormat = LogFormat::Text;
/// The admin listener's address.
pub const ADMIN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9090));
/// The server API's address: off (it needs a key, which has no default).
pub const API: Option<SocketAddr> = None;
/// Largest server API request body: 1 MiB holds a batch of a thousand 1 KiB publishes.
pub const API_MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long the server API remembers a publish's idempotency key (and its answer): long
/// enough for a backend's retries with backoff, short enough to stay small.
pub const API_IDEMPOTENCY_TTL: Duration = Duration::from_secs(5 * 60);
/// Most idempotency keys remembered at once (past it the oldest is forgotten first): at
/// ~150 B each, 100,000 keys are ~15 MiB at most.
pub const API_IDEMPOTENCY_KEYS: usize = 100_000;

// Room history. A chat user expects a reconnect to show what was missed, so history is
// **on** by default:
// - HISTORY_SIZE 100 messages per room: a busy chat room sees a few messages a second, so
//   100 covers the few seconds of a rolling reload or a worker restart many times over,
//   and a phone that drops off for a minute in a normal room. A live dashboard that only
//   needs the last value wants less (`history_size = 1` in its namespace).
// - HISTORY_TTL 10 minutes: long enough for a laptop lid, a train tunnel or a crashed tab;
//   short enough that the master does not hold a day of chatter.
// - BUDGET_BYTES 64 MiB for all rooms together. Measured (`master/history/tests/memory.rs`):
//   a message costs its payload + ~65 B of real memory (the budget counts payload + 51 B),
//   a room ~300–350 B + its name. So 64 MiB holds ~400,000 messages of 100 B, e.g. 4,000
//   rooms with a full history, on a master whose RSS is otherwise a few MiB. Past it, the
//   least recently published rooms lose their oldest messages first.
// - RECOVERY_MAX 300 messages: a replay longer than that costs more than the client
//   reloading its state from the application.

/// Messages kept per room (0 = history off).
pub const HISTORY_SIZE: usize = 100;
/// How long a message stays in history.
pub const HISTORY_TTL: Duration = Duration::from_secs(10 * 60);
/// Bytes of history (payloads plus bookkeeping) for all rooms together.
pub const BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// Longest gap (in messages) a join with `since` replays.
pub const RECOVERY_MAX: u64 = 300;

// Presence (issue 11). PRESENCE_THRESHOLD 64: a room of up to 64 members gets a notice per
// join and leave (the chat page shows who comes and goes; 64 joins cost 2,016 notice
// frames); above it the notices' N²/2 frames (200 million for 20,000 members) give way to
// one count per PRESENCE_INTERVAL. Measured with `bench join` (README, Performance): the
// joins/s of a 19,900-member room no longer depend on the threshold once it is far below
// the room's size. PRESENCE_INTERVAL 1 s: a viewer count that moves once a second reads as
// live, and costs each member one small frame a second at most.

/// Members up to which a room (presence `auto`) sends join/leave notices; above it, counts.
pub const PRESENCE_THRESHOLD: usize = 64;
/// Least time between two coalesced counts of one room.
pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(1);
/// Count frames a second one room's coalesced counts may cost (a count goes to every
/// member), so a join storm's counts stay a small share of its writes. Measured (README,
/// Performance): in a 19,900-member join storm, counts at a fixed 1 s interval cost about as
/// many writes as the joins and halved the join rate; 2,000 frames a second is ~2% of a core
/// per big room. Rooms of up to 2,000 members keep the interval; a 20,000-member room gets a
/// count every 10 s. 0: no spacing (every room one count per interval).
pub const PRESENCE_COUNT_RATE: u32 = 2_000;

/// The defaults `serve --help` shows, by clap argument id, as the help text writes them
/// (durations in seconds). Options whose default is not a fixed value (`workers`,
/// `run_dir`, `control`, `allowed_origins`) describe it in their own help text.
pub fn shown() -> Vec<(&'static str, String)> {
    let secs = |ms: u64| Duration::from_millis(ms).as_secs_f64().to_string();
    let format = LOG_FORMAT
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default();
    vec![
        ("listen", LISTEN.to_string()),
        ("drain_timeout", DRAIN_TIMEOUT.as_secs_f64().to_string()),
        ("ready_timeout", READY_TIMEOUT.as_secs_f64().to_string()),
        ("backlog", BACKLOG.to_string()),
        ("ipc_queue_limit", IPC_QUEUE_LIMIT.to_string()),
        ("ipc_queue_limit_bytes", IPC_QUEUE_LIMIT_BYTES.to_string()),
        ("worker_timeout", WORKER_TIMEOUT.as_secs_f64().to_string()),
        ("max_connections", MAX_CONNECTIONS.to_string()),
        ("max_message_bytes", MAX_MESSAGE_BYTES.to_string()),
        ("max_rooms", MAX_ROOMS_PER_CONNECTION.to_string()),
        ("outbox_limit_bytes", OUTBOX_LIMIT_BYTES.to_string()),
        ("ping_interval", secs(PING_INTERVAL_MS)),
        ("ping_timeout", secs(PING_TIMEOUT_MS)),
        ("handshake_timeout", secs(HANDSHAKE_TIMEOUT_MS)),
        ("rate_limit", RATE_LIMIT_PER_SEC.to_string()),
        (
            "inbound_rate_limit_bytes",
            INBOUND_BYTES_PER_SEC.to_string(),
        ),
        ("client_broadcast", on_off(CLIENT_BROADCAST).to_owned()),
        ("compression", on_off(COMPRESSION).to_owned()),
        ("compression_threshold", COMPRESSION_THRESHOLD.to_string()),
        ("log_level", LOG_LEVEL.to_owned()),
        ("log_format", format),
        ("admin", ADMIN.to_string()),
        (
            "api",
            API.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        ),
        ("api_max_body_bytes", API_MAX_BODY_BYTES.to_string()),
        ("history_size", HISTORY_SIZE.to_string()),
        ("history_ttl", HISTORY_TTL.as_secs_f64().to_string()),
        ("history_budget_bytes", BUDGET_BYTES.to_string()),
        ("recovery_max", RECOVERY_MAX.to_string()),
        ("auth", AuthMode::default().name().to_owned()),
        ("auth_algorithm", Algorithm::default().name().to_owned()),
        ("auth_leeway", AUTH_LEEWAY_SECS.to_string()),
        ("auth_refresh_grace", AUTH_REFRESH_GRACE_SECS.to_string()),
        (
            "max_connections_per_user",
            MAX_CONNECTIONS_PER_USER.to_string(),
        ),
        ("max_connections_per_ip", MAX_CONNECTIONS_PER_IP.to_string()),
        ("ip_connects_per_minute", IP_CONNECTS_PER_MINUTE.to_string()),
        ("presence_threshold", PRESENCE_THRESHOLD.to_string()),
        (
            "presence_interval",
            PRESENCE_INTERVAL.as_secs_f64().to_string(),
        ),
        ("presence_count_rate", PRESENCE_COUNT_RATE.to_string()),
        ("redis", "off".to_owned()),
    ]
}

/// How the command line and the config file spell a switch.
pub fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}
