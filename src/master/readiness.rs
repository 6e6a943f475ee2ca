//! Whether the fleet should get traffic (`/ready`, the `wsfleet_ready` gauge), worked out
//! from a [`FleetView`].

use serde::Serialize;

use super::state::{Phase, SlotState, WorkerState};
use super::view::FleetView;
use crate::control_api::RedisInstanceRow;

/// The readiness answer.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// Whether the fleet should get traffic.
    pub ready: bool,
    /// `starting`, `running` or `stopping`.
    pub phase: &'static str,
    /// Why it is not ready (empty when ready).
    pub reasons: Vec<String>,
    /// Rolling restarts.
    pub reload: ReloadState,
    /// One entry per slot.
    pub slots: Vec<SlotReadiness>,
    /// Each Redis instance's link (`--redis`; absent when off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<Vec<RedisInstanceRow>>,
}

/// The reload part of `/ready`.
#[derive(Debug, Serialize)]
pub struct ReloadState {
    /// Reloads started.
    pub reloads: u64,
    /// Whether one runs now.
    pub in_progress: bool,
    /// Outcome of the last one (none before the first).
    pub last_ok: Option<bool>,
}

/// One slot in `/ready`.
#[derive(Debug, Serialize)]
pub struct SlotReadiness {
    /// Slot index.
    pub slot: u32,
    /// Whether its current worker is ready.
    pub ready: bool,
    /// `ready`, `starting`, `draining`, `backoff` or `down`.
    pub state: &'static str,
    /// The current worker's pid.
    pub pid: Option<u32>,
    /// The slot's newest generation.
    pub generation: u64,
    /// Unplanned restarts so far.
    pub restarts: u64,
    /// Milliseconds until the next start attempt, while backing off.
    pub backoff_ms: Option<u64>,
    /// How the slot's last worker ended.
    pub last_exit: Option<String>,
}

/// Whether the fleet is ready, with the per-slot detail `/ready` shows.
pub fn readiness(view: &FleetView) -> Readiness {
    let mut reasons = Vec::new();
    if view.phase != Phase::Running {
        reasons.push(format!("the master is {}", view.phase.name()));
    }
    let slots: Vec<SlotReadiness> = view
        .slots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let ready = s.state == SlotState::Serving(WorkerState::Ready);
            if !ready {
                reasons.push(format!("slot {i} has no ready worker ({})", s.state.name()));
            }
            SlotReadiness {
                slot: i as u32,
                ready,
                state: s.state.name(),
                pid: s.pid,
                generation: s.generation,
                restarts: s.restarts,
                backoff_ms: s.backoff_ms,
                last_exit: s.last_exit.clone(),
            }
        })
        .collect();
    if view.last_reload_ok == Some(false) {
        reasons.push(
            "the last reload failed (see the master's log); the fleet runs a mix of old and new workers until a reload succeeds"
                .into(),
        );
    }
    let redis = view.redis.as_ref().map(|r| r.instances.clone());
    for (i, inst) in redis.iter().flatten().enumerate().filter(|(_, r)| !r.up) {
        reasons.push(format!(
            "Redis instance {i} ({}) is unreachable ({}): publishes to its rooms are refused",
            inst.url,
            inst.last_error.as_deref().unwrap_or("down")
        ));
    }
    Readiness {
        redis,
        ready: reasons.is_empty(),
        phase: view.phase.name(),
        reasons,
        reload: ReloadState {
            reloads: view.reloads,
            in_progress: view.reloading,
            last_ok: view.last_reload_ok,
        },
        slots,
    }
}
