//! Building the `wsfleet stats` answer: live counters asked from every worker (bounded
//! wait), /proc figures sampled once a second, and the slot states.

use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use super::fleet::Master;
use crate::control_api::{FleetStats, MasterRow, Totals, WorkerRow};

/// How long the master waits for workers' counters.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Adds every counter of `b` into `a`.
pub fn add_counters(
    a: &mut wsfleet_worker::ipc::WorkerCounters,
    b: &wsfleet_worker::ipc::WorkerCounters,
) {
    a.connections_current += b.connections_current;
    a.connections_total += b.connections_total;
    a.rejected_full += b.rejected_full;
    a.rejected_draining += b.rejected_draining;
    a.rejected_origin += b.rejected_origin;
    a.messages_in += b.messages_in;
    a.messages_out += b.messages_out;
    a.bytes_in += b.bytes_in;
    a.bytes_out += b.bytes_out;
    a.rooms += b.rooms;
    a.publishes += b.publishes;
    a.slow_consumer_closes += b.slow_consumer_closes;
    a.protocol_errors += b.protocol_errors;
    a.request_errors += b.request_errors;
    a.ipc_frames_in += b.ipc_frames_in;
    a.ipc_frames_out += b.ipc_frames_out;
    a.delivery_latency.merge(&b.delivery_latency);
}

/// Collects the fleet's figures.
pub async fn collect(master: &Rc<Master>) -> FleetStats {
    let waits = master.request_counters();
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut answers = std::collections::HashMap::new();
    for (key, rx) in waits {
        if let Ok(Ok(c)) = tokio::time::timeout_at(deadline, rx).await {
            answers.insert(key, c);
        }
    }
    master.sample_new_processes();
    {
        let mut st = master.state.borrow_mut();
        for (key, c) in &answers {
            if let Some(w) = st.workers.get_mut(key) {
                w.last_counters = Some(c.clone());
            }
        }
    }
    let st = master.state.borrow();
    let now = Instant::now();
    let mut workers = Vec::new();
    let mut total = Totals::default();
    for (key, w) in &st.workers {
        let slot = &st.slots[w.slot as usize];
        let counters = answers.remove(key);
        if let Some(c) = &counters {
            add_counters(&mut total.counters, c);
        }
        total.processes += 1;
        total.rss_bytes += w.cpu.sample.rss_bytes;
        total.cpu_pct += w.cpu.pct;
        workers.push(WorkerRow {
            slot: w.slot,
            pid: Some(w.pid),
            state: w.state.name().into(),
            generation: w.generation,
            uptime_s: now.duration_since(w.started).as_secs_f64(),
            restarts: slot.restarts,
            rss_bytes: w.cpu.sample.rss_bytes,
            cpu_pct: w.cpu.pct,
            cpu_s: w.cpu.sample.cpu_s,
            backoff_ms: None,
            counters,
        });
    }
    for (i, slot) in st.slots.iter().enumerate() {
        if slot.current.is_none() {
            let backoff_ms = slot
                .backoff_until
                .map(|t| t.saturating_duration_since(now).as_millis() as u64);
            workers.push(WorkerRow {
                slot: i as u32,
                state: if backoff_ms.is_some() {
                    "backoff"
                } else {
                    "down"
                }
                .into(),
                generation: slot.generation,
                restarts: slot.restarts,
                backoff_ms,
                ..Default::default()
            });
        }
    }
    workers.sort_by_key(|w| (w.slot, w.generation));
    total.restarts = st.slots.iter().map(|s| s.restarts).sum();
    FleetStats {
        master: MasterRow {
            pid: std::process::id(),
            listen: master.listen.to_string(),
            slots: st.slots.len(),
            uptime_s: master.started.elapsed().as_secs_f64(),
            rss_bytes: st.cpu.sample.rss_bytes,
            cpu_pct: st.cpu.pct,
            reloads: st.reloads,
            last_reload_ok: st.last_reload_ok,
            reloading: st.reloading,
            rooms: st.relay.rooms(),
        },
        workers,
        total,
    }
}
