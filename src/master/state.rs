//! The fleet's state as the supervisor owns it: phases, slot and worker states (each an
//! enum with one `name()`), the slots and the worker processes. Plain data: only the
//! supervisor's loop mutates it.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use wsfleet_worker::ipc::{Level, LinkTx, QueryAnswer, ToWorker, WorkerCounters};

use crate::control_api::Counters;

use super::backoff::Backoff;
use super::relay::WorkerKey;
use super::sampling::CpuMeter;

/// Where the fleet is in its life; published on a `watch` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Workers are starting; the ready line is not printed yet.
    Starting,
    /// Serving; dead workers are replaced.
    Running,
    /// Draining or killing; nothing is restarted.
    Stopping,
    /// Every worker is gone (or given up on): the master exits.
    Stopped,
}

impl Phase {
    /// The name `/health` and `/ready` show.
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }
}

/// A worker process's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Spawned, not yet ready.
    Starting,
    /// Accepting connections.
    Ready,
    /// Told to drain; will exit by itself.
    Draining,
    /// Missed its link heartbeat for half of `--worker-timeout` (stopped or wedged);
    /// killed and replaced at the full timeout. Shown only ([`WorkerEntry::shown_state`]):
    /// the state machines keep the state it had, which it is back in if it answers.
    Unresponsive,
}

impl WorkerState {
    /// The name `wsfleet stats` shows.
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Unresponsive => "unresponsive",
        }
    }
}

/// A slot's state: its current worker's, or why it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// The slot has a worker in this state.
    Serving(WorkerState),
    /// No worker; the next start is due after a crash-loop delay.
    Backoff,
    /// No worker and none scheduled (stopping).
    Down,
}

impl SlotState {
    /// Every state, in the order `/metrics` lists them.
    pub const ALL: [SlotState; 6] = [
        Self::Serving(WorkerState::Starting),
        Self::Serving(WorkerState::Ready),
        Self::Serving(WorkerState::Draining),
        Self::Serving(WorkerState::Unresponsive),
        Self::Backoff,
        Self::Down,
    ];

    /// The name `wsfleet stats`, `/ready` and `/metrics` show.
    pub fn name(self) -> &'static str {
        match self {
            Self::Serving(w) => w.name(),
            Self::Backoff => "backoff",
            Self::Down => "down",
        }
    }
}

/// The master's queue of messages to one worker, measured in messages and bytes not yet
/// written to the worker's socket (the `/metrics` IPC queue depth). Sending never blocks
/// (the relay must not stall the master's single thread); the supervisor checks the
/// bounds after every event and replaces a worker that fell too far behind, after which
/// its queue takes nothing more ([`shut`](Self::shut)).
pub struct WorkerTx {
    /// The measured channel the worker's link task drains.
    tx: LinkTx<ToWorker>,
    /// Set once the worker is being killed: further messages are dropped.
    shut: Cell<bool>,
}

impl WorkerTx {
    /// A queue, the receiver its writer task drains and the level that task lowers.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<ToWorker>, Rc<Level>) {
        let (tx, rx, level) = wsfleet_worker::ipc::queue::channel(0);
        let tx = Self {
            tx,
            shut: Cell::new(false),
        };
        (tx, rx, level)
    }

    /// Queues `msg` for the worker; a worker whose link is gone is about to be reported
    /// exited, and one being killed will never read it, so the message is dropped.
    pub fn send(&self, msg: ToWorker) {
        if !self.shut.get() {
            self.tx.send(msg);
        }
    }

    /// Messages queued and not yet written.
    pub fn depth(&self) -> u64 {
        self.tx.level().messages()
    }

    /// Bytes queued and not yet written.
    pub fn bytes(&self) -> u64 {
        self.tx.level().bytes()
    }

    /// Whether its writer is stuck on a full socket: the worker is not taking data (a
    /// long queue while the writer merely waits its turn is not the worker's fault).
    pub fn blocked(&self) -> bool {
        self.tx.level().blocked()
    }

    /// Takes nothing more (the worker is being killed).
    pub fn shut(&self) {
        self.shut.set(true);
    }

    /// Whether [`shut`](Self::shut) was called.
    pub fn is_shut(&self) -> bool {
        self.shut.get()
    }
}

/// One listening socket's slot and the worker that serves it.
#[derive(Default)]
pub struct Slot {
    /// The worker that serves (or is starting to serve) this slot.
    pub current: Option<WorkerKey>,
    /// Last generation handed out.
    pub generation: u64,
    /// Unplanned replacements so far.
    pub restarts: u64,
    /// Crash-loop state.
    pub backoff: Backoff,
    /// When the next start is due, while backing off.
    pub backoff_until: Option<Instant>,
    /// How the slot's last worker ended, for error messages.
    pub last_exit: Option<String>,
    /// Counters of the slot's exited workers (as last reported), so `/metrics` counters
    /// per slot keep growing across restarts instead of resetting.
    pub retired: Counters,
    /// CPU seconds used by the slot's exited workers, for the same reason.
    pub retired_cpu_s: f64,
}

/// One worker process.
pub struct WorkerEntry {
    /// Its slot.
    pub slot: u32,
    /// Its generation.
    pub generation: u64,
    /// Its pid.
    pub pid: u32,
    /// Its state.
    pub state: WorkerState,
    /// When it was spawned.
    pub started: Instant,
    /// When it reported ready (the uptime that resets the crash-loop count).
    pub ready_at: Option<Instant>,
    /// Messages to it (written in batches by its link task).
    pub tx: WorkerTx,
    /// Whether its Hello was accepted and Start sent: nothing else may reach it before.
    pub linked: bool,
    /// When it last said anything (its Hello, a heartbeat answer, any message): the
    /// heartbeat measures silence from here.
    pub heard: Instant,
    /// Whether it has been silent past half of `--worker-timeout`.
    pub unresponsive: bool,
    /// Heartbeats sent, the id of the next one.
    pub pings: u64,
    /// Counter requests waiting for an answer.
    pub pending: HashMap<u64, oneshot::Sender<WorkerCounters>>,
    /// Server-API questions waiting for its answer.
    pub asked: HashMap<u64, oneshot::Sender<QueryAnswer>>,
    /// CPU and memory from /proc.
    pub cpu: CpuMeter,
    /// Its counters as it last reported them; added to its slot's `retired` when it exits.
    pub last_counters: Option<Counters>,
}

impl WorkerEntry {
    /// The state `stats`, `/ready` and `/metrics` show: [`WorkerState::Unresponsive`]
    /// while it misses its heartbeat, else the state it is in.
    pub fn shown_state(&self) -> WorkerState {
        if self.unresponsive {
            WorkerState::Unresponsive
        } else {
            self.state
        }
    }
}

/// Everything about the fleet that changes, owned by the supervisor.
pub struct FleetState {
    /// Slots by index.
    pub slots: Vec<Slot>,
    /// Live worker processes.
    pub workers: BTreeMap<WorkerKey, WorkerEntry>,
    /// Next worker key.
    pub next_key: WorkerKey,
    /// Reloads started.
    pub reloads: u64,
    /// Outcome of the last reload.
    pub last_reload_ok: Option<bool>,
    /// The master's own CPU meter.
    pub cpu: CpuMeter,
}

impl FleetState {
    /// A fleet of `slots` empty slots.
    pub fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots).map(|_| Slot::default()).collect(),
            workers: BTreeMap::new(),
            next_key: 1,
            reloads: 0,
            last_reload_ok: None,
            cpu: CpuMeter::default(),
        }
    }

    /// The state of slot `i`.
    pub fn slot_state(&self, i: usize) -> SlotState {
        let slot = &self.slots[i];
        match slot.current.and_then(|k| self.workers.get(&k)) {
            Some(w) => SlotState::Serving(w.shown_state()),
            None if slot.backoff_until.is_some() => SlotState::Backoff,
            None => SlotState::Down,
        }
    }

    /// Whether every slot has a ready worker.
    pub fn all_ready(&self) -> bool {
        (0..self.slots.len()).all(|i| self.slot_state(i) == SlotState::Serving(WorkerState::Ready))
    }
}
