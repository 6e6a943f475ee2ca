//! The control socket's protocol, shared by the master (server) and the `stats`, `reload`
//! and `stop` commands (clients): one JSON object per line in each direction, so `socat`
//! and scripts can speak it too.
//!
//! ```text
//! → {"cmd":"stats"}            ← {"ok":true,"stats":{...}}
//! → {"cmd":"reload"}           ← {"ok":true,"reload":{"ok":true,"slots":[...]}}   (when done)
//! → {"cmd":"stop","now":false} ← {"ok":true}
//! → anything else              ← {"ok":false,"error":"..."}
//! ```

use serde::{Deserialize, Serialize};
use wsfleet_worker::ipc::{LatencyHistogram, WorkerCounters};

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Live figures.
    Stats,
    /// Rolling restart; answered when it is over.
    Reload,
    /// Stop the fleet (drain first unless `now`).
    Stop {
        /// Kill the workers without draining.
        #[serde(default)]
        now: bool,
    },
}

/// A response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// What went wrong, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The answer to `stats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<FleetStats>,
    /// The answer to `reload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadReport>,
}

impl Response {
    /// A failed response.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            ..Default::default()
        }
    }
}

/// Everything `wsfleet stats` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FleetStats {
    /// The master itself.
    pub master: MasterRow,
    /// One row per worker process (ready, starting, draining) or slot in backoff.
    pub workers: Vec<WorkerRow>,
    /// Sums over the worker rows.
    pub total: Totals,
}

/// The master process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MasterRow {
    /// Master pid.
    pub pid: u32,
    /// The address served.
    pub listen: String,
    /// Configured worker slots.
    pub slots: usize,
    /// Seconds since the master started.
    pub uptime_s: f64,
    /// Resident memory.
    pub rss_bytes: u64,
    /// CPU use over the last second, percent of one core.
    pub cpu_pct: f64,
    /// Reloads started.
    pub reloads: u64,
    /// Result of the last reload, if any.
    pub last_reload_ok: Option<bool>,
    /// Whether a reload is running now.
    pub reloading: bool,
    /// Rooms with members anywhere in the fleet (the relay's routing table).
    pub rooms: usize,
    /// Room history held by the master.
    #[serde(default)]
    pub history: HistoryRow,
    /// The Redis engine (`--redis`), when it is on.
    #[serde(default)]
    pub redis: Option<RedisRow>,
}

/// The Redis engine: each instance's link and counts since the master started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisRow {
    /// One per `--redis` URL, in order.
    pub instances: Vec<RedisInstanceRow>,
    /// This host's id in Redis (presence fields, heartbeat key `wsf:h:ID`).
    pub host: String,
    /// Rooms this host is subscribed to (has members of).
    pub rooms: u64,
    /// Members of those rooms on every live host, as of the last presence beat.
    pub members: u64,
    /// Publishes Redis ordered.
    pub published: u64,
    /// Publishes refused with `unavailable` (Redis unreachable).
    pub refused: u64,
    /// Messages received on room channels (one per publish per subscribed host).
    pub received: u64,
    /// Messages received for rooms this host no longer serves (unsubscribe in flight).
    pub unrouted: u64,
    /// Messages delivered to local members, in order (pub/sub and back-fill).
    pub delivered: u64,
    /// Messages delivered from Redis's stored log to fill a gap.
    pub backfilled: u64,
    /// Messages skipped because Redis no longer stored them when a gap was filled.
    pub lost: u64,
    /// Reads of a room's position and messages (joins, gaps, resyncs).
    pub reads: u64,
    /// Times a pub/sub link came up (each one back-fills every room it serves).
    pub resyncs: u64,
}

/// One Redis instance's link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisInstanceRow {
    /// Its URL, password hidden.
    pub url: String,
    /// Whether the pub/sub link is up (publishes are refused while it is down).
    pub up: bool,
    /// Why it last went down.
    pub last_error: Option<String>,
}

/// The master's room history: sizes now and counts since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRow {
    /// Rooms with a stream (a position, with or without stored messages).
    pub rooms: u64,
    /// Messages stored.
    pub messages: u64,
    /// Bytes counted against the history budget.
    pub bytes: u64,
    /// Messages pushed out by a room's history size.
    pub evicted_size: u64,
    /// Messages expired by their TTL.
    pub evicted_ttl: u64,
    /// Messages evicted by the global budget.
    pub evicted_budget: u64,
    /// Joins with `since` that replayed their whole gap.
    pub recoveries_ok: u64,
    /// Joins with `since` answered `recovered:false`.
    pub recoveries_failed: u64,
}

/// One worker process, or one slot waiting in backoff.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerRow {
    /// Slot index.
    pub slot: u32,
    /// Process id (none while in backoff).
    pub pid: Option<u32>,
    /// starting, ready, draining or backoff.
    pub state: String,
    /// Incarnation of the slot.
    pub generation: u64,
    /// Seconds since the process started.
    pub uptime_s: f64,
    /// Times this slot's worker died and was replaced.
    pub restarts: u64,
    /// Resident memory from /proc.
    pub rss_bytes: u64,
    /// CPU over the last second, percent of one core.
    pub cpu_pct: f64,
    /// CPU seconds used since start (user + system).
    pub cpu_s: f64,
    /// Milliseconds until the next start attempt (backoff only).
    pub backoff_ms: Option<u64>,
    /// The worker's own counters (none if it did not answer in time).
    pub counters: Option<Counters>,
}

/// Fleet-wide sums.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Worker processes alive.
    pub processes: usize,
    /// Resident memory of all workers.
    pub rss_bytes: u64,
    /// CPU of all workers, percent of one core.
    pub cpu_pct: f64,
    /// Restarts over all slots.
    pub restarts: u64,
    /// Summed worker counters.
    pub counters: Counters,
}

/// Whether a figure only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterKind {
    /// Grows; `/metrics` adds the figures of a slot's exited workers.
    Counter,
    /// Goes up and down; `/metrics` shows live workers only.
    Gauge,
}

/// One figure of [`Counters`], as `wsfleet stats` and `/metrics` show it.
#[derive(Debug, Clone, Copy)]
pub struct CounterInfo {
    /// Counter or gauge.
    pub kind: CounterKind,
    /// Its `wsfleet stats` column (empty: not shown).
    pub column: &'static str,
    /// Its `/metrics` family.
    pub metric: &'static str,
    /// The label that tells it apart within a shared family.
    pub label: Option<(&'static str, &'static str)>,
    /// What it counts.
    pub help: &'static str,
    /// Reads it.
    pub get: fn(&Counters) -> u64,
}

macro_rules! kind {
    (counter) => {
        CounterKind::Counter
    };
    (gauge) => {
        CounterKind::Gauge
    };
}

/// Builds [`Counters`], its conversion from the IPC type and [`COUNTERS`].
macro_rules! public_counters {
    ($($name:ident $kind:ident $col:literal $metric:literal $lk:literal $lv:literal $help:literal;)*) => {
        /// A worker's counters as the control socket shows them (the JSON field names
        /// are part of the public interface).
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Counters {
            $(#[doc = $help] pub $name: u64,)*
            /// Publish-to-delivery latency of room messages.
            pub delivery_latency: LatencyHistogram,
        }

        /// Every figure of [`Counters`], in order.
        pub const COUNTERS: &[CounterInfo] = &[$(CounterInfo {
            kind: kind!($kind),
            column: $col,
            metric: $metric,
            label: if $lk.is_empty() { None } else { Some(($lk, $lv)) },
            help: $help,
            get: |c| c.$name,
        },)*];

        impl Counters {
            /// Adds every figure of `other` into `self`.
            pub fn add(&mut self, other: &Self) {
                $(self.$name += other.$name;)*
                self.delivery_latency.merge(&other.delivery_latency);
            }
        }

        /// The IPC type becomes the public one (the master does it where the workers'
        /// answers arrive, and nowhere else).
        impl From<WorkerCounters> for Counters {
            fn from(c: WorkerCounters) -> Self {
                Self {
                    $($name: c.$name,)*
                    delivery_latency: c.delivery_latency,
                }
            }
        }
    };
}

wsfleet_worker::with_counters!(public_counters);

impl Counters {
    /// Bytes of compressed frames per byte those messages would have been plain
    /// (permessage-deflate); `None` before anything went out compressed.
    pub fn compression_ratio(&self) -> Option<f64> {
        (self.bytes_out_compressed_from > 0)
            .then(|| self.bytes_out_compressed as f64 / self.bytes_out_compressed_from as f64)
    }
}

/// What a reload did, slot by slot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Whether every slot was replaced.
    pub ok: bool,
    /// Why the reload stopped, when it did.
    pub error: Option<String>,
    /// Per-slot outcomes, in order.
    pub slots: Vec<SlotOutcome>,
    /// Wall time of the whole reload.
    pub duration_ms: u64,
}

/// One slot's part of a reload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SlotOutcome {
    /// Slot index.
    pub slot: u32,
    /// Whether the new worker took over.
    pub ok: bool,
    /// The worker that is now draining.
    pub old_pid: Option<u32>,
    /// The worker that now serves (or failed to).
    pub new_pid: Option<u32>,
    /// The new worker's generation.
    pub generation: u64,
    /// Start-to-ready time of the new worker.
    pub ready_ms: Option<u64>,
    /// What went wrong.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_from_plain_json() {
        let r: Request = serde_json::from_str(r#"{"cmd":"stop","now":true}"#).unwrap();
        assert_eq!(r, Request::Stop { now: true });
        let r: Request = serde_json::from_str(r#"{"cmd":"stop"}"#).unwrap();
        assert_eq!(r, Request::Stop { now: false });
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"dance"}"#).is_err());
        assert!(serde_json::from_str::<Request>("nope").is_err());
    }

    #[test]
    fn counters_keep_their_json_names_and_add_up() {
        let ipc = WorkerCounters {
            connections_current: 2,
            ipc_frames_out: 5,
            ..Default::default()
        };
        let mut c = Counters::from(ipc.clone());
        c.add(&Counters::from(ipc.clone()));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["connections_current"], 4);
        assert_eq!(json["ipc_frames_out"], 10);
        assert!(json["delivery_latency"].is_object());
        let ipc_json = serde_json::to_value(&ipc).unwrap();
        let keys =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&json), keys(&ipc_json), "same shape as before");
        assert_eq!(COUNTERS.len() + 1, keys(&json).len());
        assert_eq!((COUNTERS[0].get)(&c), 4);
    }
}
