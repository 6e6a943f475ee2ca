//! Building the `wsfleet stats` answer from a [`FleetView`] and the counters the workers
//! answered with.

use crate::control_api::{FleetStats, MasterRow, Totals, WorkerRow};

use super::state::SlotState;
use super::view::{Answers, FleetView};

/// The fleet's figures as `wsfleet stats` shows them.
pub fn fleet_stats(view: &FleetView, mut answers: Answers) -> FleetStats {
    let mut workers = Vec::new();
    let mut total = Totals::default();
    for w in &view.workers {
        let slot = &view.slots[w.slot as usize];
        let counters = answers.remove(&w.key);
        if let Some(c) = &counters {
            total.counters.add(c);
        }
        total.processes += 1;
        total.rss_bytes += w.cpu.sample.rss_bytes;
        total.cpu_pct += w.cpu.pct;
        workers.push(WorkerRow {
            slot: w.slot,
            pid: Some(w.pid),
            state: w.state.name().into(),
            generation: w.generation,
            uptime_s: w.uptime_s,
            restarts: slot.restarts,
            rss_bytes: w.cpu.sample.rss_bytes,
            cpu_pct: w.cpu.pct,
            cpu_s: w.cpu.sample.cpu_s,
            backoff_ms: None,
            counters,
        });
    }
    for (i, slot) in view.slots.iter().enumerate() {
        if matches!(slot.state, SlotState::Backoff | SlotState::Down) {
            workers.push(WorkerRow {
                slot: i as u32,
                state: slot.state.name().into(),
                generation: slot.generation,
                restarts: slot.restarts,
                backoff_ms: slot.backoff_ms,
                ..Default::default()
            });
        }
    }
    workers.sort_by_key(|w| (w.slot, w.generation));
    total.restarts = view.slots.iter().map(|s| s.restarts).sum();
    FleetStats {
        master: MasterRow {
            pid: std::process::id(),
            listen: view.listen.clone(),
            slots: view.slots.len(),
            uptime_s: view.uptime_s,
            rss_bytes: view.master_cpu.sample.rss_bytes,
            cpu_pct: view.master_cpu.pct,
            reloads: view.reloads,
            last_reload_ok: view.last_reload_ok,
            reloading: view.reloading,
            rooms: view.rooms,
            history: view.history,
            redis: view.redis.clone(),
        },
        workers,
        total,
    }
}
