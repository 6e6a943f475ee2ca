//! An owned snapshot of the fleet, taken by the supervisor's loop on request, from which
//! `wsfleet stats`, `/ready`, `/health` and `/metrics` are built outside the loop.

use std::collections::HashMap;

use crate::control_api::{Counters, HistoryRow, RedisRow};

use super::relay::WorkerKey;
use super::sampling::CpuMeter;
use super::state::{Phase, SlotState, WorkerState};

/// Counters that workers answered with, by worker key.
pub type Answers = HashMap<WorkerKey, Counters>;

/// The fleet at one moment.
#[derive(Debug, Clone)]
pub struct FleetView {
    /// The life phase.
    pub phase: Phase,
    /// The address served.
    pub listen: String,
    /// Seconds since the master started.
    pub uptime_s: f64,
    /// The master's own CPU and memory.
    pub master_cpu: CpuMeter,
    /// Reloads started.
    pub reloads: u64,
    /// Outcome of the last reload.
    pub last_reload_ok: Option<bool>,
    /// Whether a reload runs now.
    pub reloading: bool,
    /// Rooms with members anywhere in the fleet.
    pub rooms: usize,
    /// Room history held by the master.
    pub history: HistoryRow,
    /// The Redis engine's links and counts, when it is on.
    pub redis: Option<RedisRow>,
    /// Per slot, by index.
    pub slots: Vec<SlotView>,
    /// Live worker processes, by key.
    pub workers: Vec<WorkerView>,
}

/// One slot.
#[derive(Debug, Clone)]
pub struct SlotView {
    /// Its state.
    pub state: SlotState,
    /// The current worker's pid.
    pub pid: Option<u32>,
    /// The newest generation handed out.
    pub generation: u64,
    /// Unplanned restarts.
    pub restarts: u64,
    /// Milliseconds until the next start attempt, while backing off.
    pub backoff_ms: Option<u64>,
    /// How the last worker ended.
    pub last_exit: Option<String>,
    /// Counters of the slot's exited workers.
    pub retired: Counters,
    /// CPU seconds of the slot's exited workers.
    pub retired_cpu_s: f64,
}

/// One worker process.
#[derive(Debug, Clone)]
pub struct WorkerView {
    /// The supervisor's key (matches counter answers).
    pub key: WorkerKey,
    /// Its slot.
    pub slot: u32,
    /// Its pid.
    pub pid: u32,
    /// Its state.
    pub state: WorkerState,
    /// Its generation.
    pub generation: u64,
    /// Seconds since it was spawned.
    pub uptime_s: f64,
    /// CPU and memory.
    pub cpu: CpuMeter,
    /// Messages queued for it and not yet written.
    pub ipc_queue_depth: u64,
    /// Bytes those messages hold (what `--ipc-queue-limit-bytes` bounds).
    pub ipc_queue_bytes: u64,
    /// Its counters as last reported.
    pub last_counters: Option<Counters>,
}
