//! The default of every [`WorkerSettings`](super::WorkerSettings) field, defined once:
//! `WorkerSettings::default`, the master's config merge and the `serve --help` text (from
//! which README's configuration table is generated) all read these.

/// Largest client message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// WebSocket connections per worker.
pub const MAX_CONNECTIONS: usize = 50_000;
/// Rooms one connection may be in at once.
pub const MAX_ROOMS_PER_CONNECTION: usize = 64;
/// Bytes queued towards one client before it is closed as a slow consumer.
pub const OUTBOX_LIMIT_BYTES: usize = 1024 * 1024;
/// Milliseconds between server pings.
pub const PING_INTERVAL_MS: u64 = 20_000;
/// Milliseconds of client silence before it is closed.
pub const PING_TIMEOUT_MS: u64 = 45_000;
/// Milliseconds a client has to finish its HTTP upgrade request.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Requests per second one `/ws` connection may make.
pub const RATE_LIMIT_PER_SEC: u32 = 1_000;
/// Message bytes per second one `/ws` connection may send.
pub const INBOUND_BYTES_PER_SEC: u64 = 4 * 1024 * 1024;
/// Whether `/ws` clients may broadcast to the whole fleet.
pub const CLIENT_BROADCAST: bool = true;
/// Connections one user may hold across the fleet (0 = no limit).
pub const MAX_CONNECTIONS_PER_USER: u32 = 0;
/// Connections one client IP may hold across the fleet (0 = no limit).
pub const MAX_CONNECTIONS_PER_IP: u32 = 0;
/// Upgrades one client IP may make per minute on one worker (0 = no limit).
pub const IP_CONNECTS_PER_MINUTE: u32 = 0;
/// Clock skew allowed on a token's `exp` and `nbf`, in seconds.
pub const AUTH_LEEWAY_SECS: u64 = 30;
/// Seconds after a token's `exp` an open connection has to send a fresh one.
pub const AUTH_REFRESH_GRACE_SECS: u64 = 30;
/// Whether permessage-deflate is negotiated.
pub const COMPRESSION: bool = true;
/// Smallest payload sent compressed, in bytes. Measured on chat frames (zlib level 6, raw,
/// sync tail dropped): an ack of 23 B grows to 24, a `joined` of 59 B shrinks 5 %, a
/// message of 81 B 9 %, of 96–127 B 14 %, of 128–159 B 18 %, of 256–287 B 32 %. Below
/// 128 B the saving is a handful of bytes per frame while every direct reply would still
/// pay a compressor reset and run.
pub const COMPRESSION_THRESHOLD: usize = 128;
