//! `GET /metrics`: the fleet's figures in the Prometheus text exposition format (0.0.4),
//! encoded by `prometheus-client` from one snapshot taken per scrape.
//!
//! The snapshot is built from a [`FleetView`] (the same live counters `wsfleet stats`
//! shows, plus what only the master knows: IPC queue depths, restarts, slot states,
//! reloads). The worker counter families follow the one counter list ([`COUNTERS`]).
//! Per-worker series carry a `worker` label with the **slot** index, not the pid: a
//! slot's counters add its exited workers' last figures, so they keep growing across
//! restarts and reloads, and the label set stays bounded.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::readiness::readiness;
use super::state::SlotState;
use super::view::FleetView;
use crate::control_api::{COUNTERS, CounterKind, Counters, HistoryRow, RedisRow};

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One slot's figures: its live processes summed, plus its exited workers for counters.
#[derive(Debug, Default)]
struct SlotFigures {
    /// Counters of live and exited workers (what counter families show).
    all: Counters,
    /// Counters of live workers only (what gauge families show).
    live: Counters,
    /// Messages queued by the master for this slot's workers, not yet written.
    ipc_queue_depth: u64,
    /// Bytes those messages hold.
    ipc_queue_bytes: u64,
    /// Unplanned restarts of the slot.
    restarts: u64,
    /// The slot's current generation.
    generation: u64,
    /// Processes of the slot per state, plus `backoff`/`down` when it has no worker.
    states: BTreeMap<&'static str, u64>,
    /// Resident memory of the slot's live processes.
    rss_bytes: u64,
    /// CPU seconds of the slot's live and exited processes.
    cpu_s: f64,
}

/// Everything one scrape shows; owned, so the collector needs no access to the master.
#[derive(Debug, Default)]
struct Snapshot {
    /// Per slot, by index.
    slots: Vec<SlotFigures>,
    /// Rooms known to the relay (with a member anywhere).
    fleet_rooms: u64,
    /// The master's room history.
    history: HistoryRow,
    /// The Redis engine, when on.
    redis: Option<RedisRow>,
    /// Reloads started.
    reloads: u64,
    /// Outcome of the last reload, if there was one.
    last_reload_ok: Option<bool>,
    /// Whether a reload runs now.
    reloading: bool,
    /// Whether `/ready` would answer 200.
    ready: bool,
    /// The master's own resident memory.
    master_rss_bytes: u64,
    /// The master's CPU seconds.
    master_cpu_s: f64,
    /// Seconds since the master started.
    uptime_s: f64,
}

/// Encodes the fleet's figures as `/metrics` shows them.
pub fn render(view: &FleetView) -> String {
    encode(snapshot(view))
}

fn snapshot(view: &FleetView) -> Snapshot {
    let mut slots: Vec<SlotFigures> = view
        .slots
        .iter()
        .map(|s| {
            let mut f = SlotFigures {
                restarts: s.restarts,
                generation: s.generation,
                cpu_s: s.retired_cpu_s,
                all: s.retired.clone(),
                ..Default::default()
            };
            for state in SlotState::ALL {
                f.states.insert(state.name(), 0);
            }
            if matches!(s.state, SlotState::Backoff | SlotState::Down) {
                f.states.insert(s.state.name(), 1);
            }
            f
        })
        .collect();
    for w in &view.workers {
        let Some(f) = slots.get_mut(w.slot as usize) else {
            continue;
        };
        if let Some(c) = &w.last_counters {
            f.all.add(c);
            f.live.add(c);
        }
        f.ipc_queue_depth += w.ipc_queue_depth;
        f.ipc_queue_bytes += w.ipc_queue_bytes;
        f.rss_bytes += w.cpu.sample.rss_bytes;
        f.cpu_s += w.cpu.sample.cpu_s;
        *f.states.entry(w.state.name()).or_default() += 1;
    }
    Snapshot {
        slots,
        fleet_rooms: view.rooms as u64,
        history: view.history,
        redis: view.redis.clone(),
        reloads: view.reloads,
        last_reload_ok: view.last_reload_ok,
        reloading: view.reloading,
        ready: readiness(view).ready,
        master_rss_bytes: view.master_cpu.sample.rss_bytes,
        master_cpu_s: view.master_cpu.sample.cpu_s,
        uptime_s: view.uptime_s,
    }
}

/// Encodes a snapshot in the Prometheus text format.
fn encode(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a name.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "cannot encode /metrics");
    }
    out
}

/// A `worker` label (the slot index), optionally with one more label.
fn labels(slot: usize, extra: Option<(&'static str, &'static str)>) -> Vec<(&'static str, String)> {
    let mut l = vec![("worker", slot.to_string())];
    if let Some((k, v)) = extra {
        l.push((k, v.to_owned()));
    }
    l
}

/// A sample value: counts stay integers in the text, times and other fractions do not.
#[derive(Debug, Clone, Copy)]
enum V {
    /// A count.
    I(u64),
    /// A fraction (seconds).
    F(f64),
}

impl From<u64> for V {
    fn from(v: u64) -> Self {
        Self::I(v)
    }
}

impl From<f64> for V {
    fn from(v: f64) -> Self {
        Self::F(v)
    }
}

fn encode_value(
    m: &mut prometheus_client::encoding::MetricEncoder,
    kind: MetricType,
    v: V,
) -> Result<(), std::fmt::Error> {
    match (kind, v) {
        (MetricType::Counter, V::I(v)) => m.encode_counter::<NoLabelSet, u64, u64>(&v, None),
        (MetricType::Counter, V::F(v)) => m.encode_counter::<NoLabelSet, f64, f64>(&v, None),
        (_, V::I(v)) => m.encode_gauge(&(v.min(i64::MAX as u64) as i64)),
        (_, V::F(v)) => m.encode_gauge(&v),
    }
}

/// Writes one metric family of per-slot values. Counter names get `_total` appended by
/// the encoder.
fn per_slot<T: Into<V>>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Vec<(&'static str, String)>, T)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        let mut f = m.encode_family(&labels)?;
        encode_value(&mut f, kind, v.into())?;
    }
    Ok(())
}

/// One unlabelled value.
fn single(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    v: impl Into<V>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    encode_value(&mut m, kind, v.into())
}

/// The master's room history families.
fn history(enc: &mut DescriptorEncoder, h: &HistoryRow) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter, Gauge};
    let by = |key: &'static str, rows: [(&str, u64); 3]| {
        rows.map(|(value, v)| (vec![(key, value.to_owned())], v))
    };
    single(
        enc,
        "wsfleet_history_rooms",
        "Rooms whose stream (position and history) the master keeps.",
        Gauge,
        h.rooms,
    )?;
    single(
        enc,
        "wsfleet_history_messages",
        "Messages stored in room history.",
        Gauge,
        h.messages,
    )?;
    single(
        enc,
        "wsfleet_history_bytes",
        "Bytes of room history counted against --history-budget-bytes.",
        Gauge,
        h.bytes,
    )?;
    per_slot(
        enc,
        "wsfleet_history_evictions",
        "Messages that left room history: pushed out by history_size, expired by TTL, or evicted by the global budget.",
        Counter,
        by(
            "cause",
            [
                ("size", h.evicted_size),
                ("ttl", h.evicted_ttl),
                ("budget", h.evicted_budget),
            ],
        ),
    )?;
    let outcomes = [("ok", h.recoveries_ok), ("failed", h.recoveries_failed)];
    per_slot(
        enc,
        "wsfleet_history_recoveries",
        "Joins with since: ok replayed the whole gap, failed answered recovered:false.",
        Counter,
        outcomes.map(|(value, v)| (vec![("outcome", value.to_owned())], v)),
    )
}

/// The Redis engine's families (`--redis`).
fn redis(enc: &mut DescriptorEncoder, r: &RedisRow) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter, Gauge};
    per_slot(
        enc,
        "wsfleet_redis_up",
        "Whether the pub/sub link to each --redis instance is up (publishes to its rooms are refused while it is down).",
        Gauge,
        r.instances
            .iter()
            .enumerate()
            .map(|(i, inst)| (vec![("instance", i.to_string())], u64::from(inst.up))),
    )?;
    let kinds = [
        ("published", r.published),
        ("refused", r.refused),
        ("received", r.received),
        ("delivered", r.delivered),
        ("backfilled", r.backfilled),
        ("lost", r.lost),
    ];
    per_slot(
        enc,
        "wsfleet_redis_messages",
        "Room messages through Redis: published (ordered by Redis), refused (unavailable), received (on channels), delivered (to local members), backfilled (read from the stream to fill a gap), lost (no longer stored).",
        Counter,
        kinds.map(|(k, v)| (vec![("kind", k.to_owned())], v)),
    )?;
    single(
        enc,
        "wsfleet_redis_members",
        "Members of this host's rooms on every live host, as of the last presence beat.",
        Gauge,
        r.members,
    )
}

/// The worker counter families, one per distinct `metric` of [`COUNTERS`] (entries that
/// share one become its label values).
fn worker_counters(
    enc: &mut DescriptorEncoder,
    slots: &[SlotFigures],
) -> Result<(), std::fmt::Error> {
    let mut i = 0;
    while i < COUNTERS.len() {
        let first = &COUNTERS[i];
        let family: Vec<_> = COUNTERS[i..]
            .iter()
            .take_while(|c| c.metric == first.metric)
            .collect();
        i += family.len();
        let kind = match first.kind {
            CounterKind::Counter => MetricType::Counter,
            CounterKind::Gauge => MetricType::Gauge,
        };
        let mut rows = Vec::new();
        for (slot, s) in slots.iter().enumerate() {
            let figures = match first.kind {
                CounterKind::Counter => &s.all,
                CounterKind::Gauge => &s.live,
            };
            for c in &family {
                rows.push((labels(slot, c.label), (c.get)(figures)));
            }
        }
        per_slot(enc, first.metric, first.help, kind, rows)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let slots = || self.slots.iter().enumerate();
        let e = &mut enc;
        worker_counters(e, &self.slots)?;
        single(
            e,
            "wsfleet_fleet_rooms",
            "Rooms with at least one member anywhere in the fleet (the master's relay table).",
            Gauge,
            self.fleet_rooms,
        )?;
        history(e, &self.history)?;
        if let Some(r) = &self.redis {
            redis(e, r)?;
        }
        per_slot(
            e,
            "wsfleet_ipc_queue_depth",
            "Messages the master has queued for this slot's workers and not yet written to their link.",
            Gauge,
            slots().map(|(i, s)| (labels(i, None), s.ipc_queue_depth)),
        )?;
        per_slot(
            e,
            "wsfleet_ipc_queue_bytes",
            "Bytes the master has queued for this slot's workers and not yet written to their link (bounded by --ipc-queue-limit-bytes).",
            Gauge,
            slots().map(|(i, s)| (labels(i, None), s.ipc_queue_bytes)),
        )?;
        {
            let mut m = e.encode_descriptor(
                "wsfleet_delivery_latency_seconds",
                "Time from the master ordering a room publish to this worker having written it to its members' sockets (one observation per room message per worker).",
                None,
                MetricType::Histogram,
            )?;
            for (i, s) in slots() {
                let h = &s.all.delivery_latency;
                let l = labels(i, None);
                let mut f = m.encode_family(&l)?;
                f.encode_histogram::<NoLabelSet>(
                    h.sum_ns as f64 / 1e9,
                    h.count(),
                    &h.cumulative_seconds(),
                    None,
                )?;
            }
        }
        per_slot(
            e,
            "wsfleet_compression_ratio",
            "Compressed bytes out per byte those messages would have been plain (permessage-deflate; 1 before anything went out compressed).",
            Gauge,
            slots().map(|(i, s)| (labels(i, None), s.all.compression_ratio().unwrap_or(1.0))),
        )?;
        per_slot(
            e,
            "wsfleet_worker_restarts",
            "Times this slot's worker died unexpectedly and was replaced.",
            Counter,
            slots().map(|(i, s)| (labels(i, None), s.restarts)),
        )?;
        per_slot(
            e,
            "wsfleet_worker_generation",
            "Incarnation of the slot's newest worker (grows with every restart or reload).",
            Gauge,
            slots().map(|(i, s)| (labels(i, None), s.generation)),
        )?;
        let mut states = Vec::new();
        for (i, s) in slots() {
            for (state, n) in &s.states {
                states.push((labels(i, Some(("state", state))), *n));
            }
        }
        per_slot(
            e,
            "wsfleet_worker_state",
            "Worker processes of the slot in each state; backoff/down are 1 while the slot has no worker.",
            Gauge,
            states,
        )?;
        per_slot(
            e,
            "wsfleet_worker_resident_memory_bytes",
            "Resident memory of the slot's worker processes.",
            Gauge,
            slots().map(|(i, s)| (labels(i, None), s.rss_bytes)),
        )?;
        per_slot(
            e,
            "wsfleet_worker_cpu_seconds",
            "CPU time (user + system) used by the slot's worker processes, exited ones included.",
            Counter,
            slots().map(|(i, s)| (labels(i, None), s.cpu_s)),
        )?;
        single(
            e,
            "wsfleet_master_resident_memory_bytes",
            "Resident memory of the master process.",
            Gauge,
            self.master_rss_bytes,
        )?;
        single(
            e,
            "wsfleet_master_cpu_seconds",
            "CPU time (user + system) used by the master process.",
            Counter,
            self.master_cpu_s,
        )?;
        single(
            e,
            "wsfleet_master_uptime_seconds",
            "Seconds since the master started.",
            Gauge,
            self.uptime_s,
        )?;
        single(
            e,
            "wsfleet_slots",
            "Configured worker slots.",
            Gauge,
            self.slots.len() as u64,
        )?;
        single(
            e,
            "wsfleet_ready",
            "1 when every slot has a ready worker and the last reload did not fail (what /ready answers 200 for).",
            Gauge,
            u64::from(self.ready),
        )?;
        single(
            e,
            "wsfleet_reloads",
            "Rolling restarts started (SIGHUP or `wsfleet reload`).",
            Counter,
            self.reloads,
        )?;
        single(
            e,
            "wsfleet_reload_in_progress",
            "1 while a rolling restart runs.",
            Gauge,
            u64::from(self.reloading),
        )?;
        if let Some(ok) = self.last_reload_ok {
            single(
                e,
                "wsfleet_reload_last_success",
                "1 if the last reload replaced every slot, 0 if it failed (absent before the first reload).",
                Gauge,
                u64::from(ok),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_with_total_and_histograms_with_buckets() {
        let mut slot = SlotFigures::default();
        slot.all.messages_in = 7;
        slot.all.delivery_latency.record(1_000_000);
        let text = encode(Snapshot {
            slots: vec![slot, SlotFigures::default()],
            ..Default::default()
        });
        assert!(
            text.contains("wsfleet_received_messages_total{worker=\"0\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("wsfleet_delivery_latency_seconds_bucket{"),
            "{text}"
        );
        assert!(text.contains("le=\"+Inf\"} 1"), "{text}");
        assert!(
            text.contains("wsfleet_delivery_latency_seconds_count{worker=\"1\"} 0"),
            "{text}"
        );
    }
}
