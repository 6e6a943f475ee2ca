//! `GET /metrics`: the fleet's figures in the Prometheus text exposition format (0.0.4),
//! encoded by `prometheus-client` from one snapshot taken per scrape.
//!
//! The snapshot reuses [`super::stats::collect`] (the same live counters `wsfleet stats`
//! shows) and adds what only the master knows: IPC queue depths, restarts, slot states,
//! reloads. Per-worker series carry a `worker` label with the **slot** index, not the pid:
//! a slot's counters add its exited workers' last figures (`Slot::retired`), so they keep
//! growing across restarts and reloads, and the label set stays bounded.

use std::collections::BTreeMap;
use std::rc::Rc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use wsfleet_worker::ipc::{LatencyHistogram, WorkerCounters};

use super::fleet::{Master, WorkerState};
use super::stats::add_counters;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One slot's figures: its live processes summed, plus its exited workers for counters.
#[derive(Debug, Default)]
struct SlotFigures {
    /// Counters of live and exited workers (only counter fields are read from it).
    counters: WorkerCounters,
    /// Gauges: live processes only.
    connections: u64,
    /// Rooms with a member on this slot's live workers.
    rooms: u64,
    /// Messages queued by the master for this slot's workers, not yet written.
    ipc_queue_depth: u64,
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

/// Takes a snapshot (asking every worker for its counters, bounded wait) and encodes it.
pub async fn render(master: &Rc<Master>) -> String {
    let stats = super::stats::collect(master).await;
    let ready = super::admin::readiness(master).0;
    let st = master.state.borrow();
    let mut slots: Vec<SlotFigures> = st
        .slots
        .iter()
        .map(|s| {
            let mut f = SlotFigures {
                restarts: s.restarts,
                generation: s.generation,
                cpu_s: s.retired_cpu_s,
                ..Default::default()
            };
            add_counters(&mut f.counters, &s.retired);
            for state in ["starting", "ready", "draining", "backoff", "down"] {
                f.states.insert(state, 0);
            }
            if s.current.is_none() {
                let state = if s.backoff_until.is_some() {
                    "backoff"
                } else {
                    "down"
                };
                f.states.insert(state, 1);
            }
            f
        })
        .collect();
    for w in st.workers.values() {
        let Some(f) = slots.get_mut(w.slot as usize) else {
            continue;
        };
        if let Some(c) = &w.last_counters {
            add_counters(&mut f.counters, c);
            f.connections += c.connections_current;
            f.rooms += c.rooms;
        }
        f.ipc_queue_depth += w.tx.depth();
        f.rss_bytes += w.cpu.sample.rss_bytes;
        f.cpu_s += w.cpu.sample.cpu_s;
        let state = match w.state {
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Draining => "draining",
        };
        *f.states.entry(state).or_default() += 1;
    }
    let snapshot = Snapshot {
        slots,
        fleet_rooms: stats.master.rooms as u64,
        reloads: st.reloads,
        last_reload_ok: st.last_reload_ok,
        reloading: st.reloading,
        ready,
        master_rss_bytes: st.cpu.sample.rss_bytes,
        master_cpu_s: st.cpu.sample.cpu_s,
        uptime_s: stats.master.uptime_s,
    };
    drop(st);
    encode(snapshot)
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

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let slots = || self.slots.iter().enumerate();
        let counter = |get: fn(&WorkerCounters) -> u64| {
            slots()
                .map(move |(i, s)| (labels(i, None), get(&s.counters)))
                .collect::<Vec<_>>()
        };
        let e = &mut enc;
        per_slot(
            e,
            "wsfleet_connections",
            "WebSocket connections open now.",
            Gauge,
            slots().map(|(i, s)| (labels(i, None), s.connections)),
        )?;
        per_slot(
            e,
            "wsfleet_connections_accepted",
            "WebSocket connections accepted.",
            Counter,
            counter(|c| c.connections_total),
        )?;
        let mut rejected = Vec::new();
        for (i, s) in slots() {
            for (reason, v) in [
                ("full", s.counters.rejected_full),
                ("draining", s.counters.rejected_draining),
                ("origin", s.counters.rejected_origin),
            ] {
                rejected.push((labels(i, Some(("reason", reason))), v));
            }
        }
        per_slot(
            e,
            "wsfleet_connections_rejected",
            "WebSocket upgrades refused: full (max_connections, 503), draining (503), origin (403).",
            Counter,
            rejected,
        )?;
        per_slot(
            e,
            "wsfleet_received_messages",
            "WebSocket data messages received from clients.",
            Counter,
            counter(|c| c.messages_in),
        )?;
        per_slot(
            e,
            "wsfleet_sent_messages",
            "WebSocket data messages queued to clients.",
            Counter,
            counter(|c| c.messages_out),
        )?;
        per_slot(
            e,
            "wsfleet_received_bytes",
            "Payload bytes received from clients.",
            Counter,
            counter(|c| c.bytes_in),
        )?;
        per_slot(
            e,
            "wsfleet_sent_bytes",
            "Payload bytes queued to clients.",
            Counter,
            counter(|c| c.bytes_out),
        )?;
        per_slot(
            e,
            "wsfleet_rooms",
            "Rooms with at least one member on this worker.",
            Gauge,
            slots().map(|(i, s)| (labels(i, None), s.rooms)),
        )?;
        single(
            e,
            "wsfleet_fleet_rooms",
            "Rooms with at least one member anywhere in the fleet (the master's relay table).",
            Gauge,
            self.fleet_rooms,
        )?;
        per_slot(
            e,
            "wsfleet_publishes",
            "Room publishes this worker's clients sent, relayed by the master.",
            Counter,
            counter(|c| c.publishes),
        )?;
        per_slot(
            e,
            "wsfleet_slow_consumer_closes",
            "Clients closed with 1013 because their outgoing buffer overflowed.",
            Counter,
            counter(|c| c.slow_consumer_closes),
        )?;
        per_slot(
            e,
            "wsfleet_protocol_error_closes",
            "Connections closed for a protocol violation (1002, 1007, 1009).",
            Counter,
            counter(|c| c.protocol_errors),
        )?;
        per_slot(
            e,
            "wsfleet_request_errors",
            "Error frames sent for /ws requests that could not be honoured.",
            Counter,
            counter(|c| c.request_errors),
        )?;
        let mut frames = Vec::new();
        for (i, s) in slots() {
            frames.push((
                labels(i, Some(("direction", "to_worker"))),
                s.counters.ipc_frames_in,
            ));
            frames.push((
                labels(i, Some(("direction", "to_master"))),
                s.counters.ipc_frames_out,
            ));
        }
        per_slot(
            e,
            "wsfleet_ipc_frames",
            "Frames over the master-worker link, as counted by the worker.",
            Counter,
            frames,
        )?;
        per_slot(
            e,
            "wsfleet_ipc_queue_depth",
            "Messages the master has queued for this slot's workers and not yet written to their link.",
            Gauge,
            slots().map(|(i, s)| (labels(i, None), s.ipc_queue_depth)),
        )?;
        {
            let mut m = e.encode_descriptor(
                "wsfleet_delivery_latency_seconds",
                "Time from the master ordering a room publish to this worker having written it to its members' sockets (one observation per room message per worker).",
                None,
                MetricType::Histogram,
            )?;
            for (i, s) in slots() {
                let h: &LatencyHistogram = &s.counters.delivery_latency;
                let l = labels(i, None);
                let mut f = m.encode_family(&l)?;
                f.encode_histogram::<NoLabelSet>(
                    s.counters.delivery_latency.sum_ns as f64 / 1e9,
                    h.count(),
                    &h.cumulative_seconds(),
                    None,
                )?;
            }
        }
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
        slot.counters.messages_in = 7;
        slot.counters.delivery_latency.record(1_000_000);
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
