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
        ("log_level", LOG_LEVEL.to_owned()),
        ("log_format", format),
        ("admin", ADMIN.to_string()),
    ]
}

/// How the command line and the config file spell a switch.
pub fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}
