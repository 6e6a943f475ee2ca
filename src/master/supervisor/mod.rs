//! The master's event loop: [`Supervisor`] owns the fleet state by value and handles one
//! [`Event`] at a time — a worker spoke, a worker exited, a command, a request, a tick —
//! with the time of the event passed in, so unit tests drive it with a fake
//! [`Spawner`] and a clock of their own. Start-up and stop live in `lifecycle`, the
//! rolling reload in `reload`; room messages go to [`Rooms`].

mod api;
mod lifecycle;
mod reload;
mod requests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use wsfleet_worker::ipc::{ToMaster, ToWorker};

use super::admissions::Admissions;
use super::api::calls::Published;
use super::api::idempotency::Idempotency;
use super::backoff::{self, Backoff};
use super::events::Event;
use super::history::HistoryStore;
use super::presence::Registry;
use super::recall::Recall;
use super::relay::WorkerKey;
use super::rooms::{Rooms, To};
use super::spawner::Spawner;
use super::state::{FleetState, Phase, WorkerEntry, WorkerState};
use crate::config::{HistorySettings, Settings};
use crate::defaults;

/// Re-reads the settings for a reload (the command line, environment and config file).
pub type Resolve = Box<dyn FnMut() -> Result<Settings, String>>;

/// The owner of the fleet.
pub struct Supervisor<S: Spawner> {
    /// Starts and kills processes.
    spawner: S,
    /// Settings in force (replaced by a reload).
    settings: Settings,
    /// Re-reads settings on reload.
    resolve: Resolve,
    /// Slots and workers.
    state: FleetState,
    /// Room routes and sequences.
    rooms: Rooms,
    /// The life phase, for waiters and tests.
    phase: watch::Sender<Phase>,
    /// The rolling reload in progress.
    reload: Option<reload::Reload>,
    /// The stop in progress.
    stop: Option<lifecycle::Stop>,
    /// When start-up gives up.
    startup_deadline: Instant,
    /// Why the master exits with an error, once it failed.
    failure: Option<String>,
    /// When the master started.
    started: Instant,
    /// The address served.
    listen: SocketAddr,
    /// Source of counter-request and query ids.
    next_request: u64,
    /// The server API's recent idempotency keys and the publishes they answered: kept
    /// here, at the one point of order, so a retry is ordered once even if it races.
    idempotency: Idempotency<Published>,
    /// The fleet-wide per-user and per-IP connection counts the workers ask at upgrades.
    admissions: Admissions,
}

impl<S: Spawner> Supervisor<S> {
    /// A supervisor with empty slots; call [`start`](Self::start) to spawn the workers.
    pub fn new(
        spawner: S,
        settings: Settings,
        resolve: Resolve,
        listen: SocketAddr,
        now: Instant,
    ) -> Self {
        Self {
            spawner,
            state: FleetState::new(settings.workers),
            startup_deadline: now + settings.ready_timeout * 3,
            rooms: Rooms::new(
                recall(&settings.history),
                Registry::new(
                    settings.history.namespaces.clone(),
                    settings.presence_pacing,
                ),
            ),
            settings,
            resolve,
            phase: watch::channel(Phase::Starting).0,
            reload: None,
            stop: None,
            failure: None,
            started: now,
            listen,
            next_request: 0,
            idempotency: Idempotency::new(
                defaults::API_IDEMPOTENCY_TTL,
                defaults::API_IDEMPOTENCY_KEYS,
            ),
            admissions: Admissions::default(),
        }
    }

    /// Turns the Redis engine on (`--redis`), before [`start`](Self::start).
    pub fn attach_redis(&mut self, engine: super::redis::Engine) {
        self.rooms.attach_redis(engine);
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Follows the phase.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// How the master ends: an error if start-up failed.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.send_if_modified(|p| {
            let changed = *p != phase;
            *p = phase;
            changed
        });
    }

    /// Handles one event that happened at `now`.
    pub fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::Hello(key) => {
                if let Some(w) = self.state.workers.get_mut(&key) {
                    w.tx.send(ToWorker::Start(self.settings.worker.clone()));
                    w.linked = true;
                    w.heard = now;
                    self.rooms.linked(key, w.slot, w.generation);
                }
            }
            Event::Message(key, msg) => self.on_message(key, msg, now),
            Event::Exited(key, how) => self.on_exit(key, &how, now),
            Event::Misbehaved(key) => self.kill(key),
            Event::Command(cmd) => self.on_command(cmd, now),
            Event::Request(req) => self.on_request(req, now),
            Event::Tick => self.on_tick(now),
            Event::Redis(report) => {
                let workers = &self.state.workers;
                self.rooms.on_redis(report, |to, m| send(workers, to, m));
            }
        }
        self.kill_stalled(false);
        self.progress(now);
    }

    /// The earliest time a [`Event::Tick`] has something to do besides sampling.
    pub fn next_deadline(&self) -> Option<Instant> {
        let backoffs = self.state.slots.iter().filter_map(|s| s.backoff_until);
        let reload = self.reload.as_ref().and_then(|r| r.deadline());
        let stop = self.stop.as_ref().map(|s| s.deadline);
        let startup = (self.phase() == Phase::Starting).then_some(self.startup_deadline);
        let presence = self.rooms.presence_due().map(Instant::from_std);
        backoffs
            .chain(reload)
            .chain(stop)
            .chain(startup)
            .chain(presence)
            .min()
    }

    fn on_message(&mut self, key: WorkerKey, msg: ToMaster, now: Instant) {
        self.heard(key, now);
        let workers = &self.state.workers;
        let msg = self
            .rooms
            .handle(key, msg, now.into_std(), |to, m| send(workers, to, m));
        match msg {
            Some(ToMaster::Ready) => self.on_ready(key, now),
            Some(ToMaster::Counters { id, counters }) => {
                let w = self.state.workers.get_mut(&key);
                if let Some(tx) = w.and_then(|w| w.pending.remove(&id)) {
                    let _ = tx.send(counters);
                }
            }
            Some(ToMaster::Answer { id, answer }) => {
                let w = self.state.workers.get_mut(&key);
                if let Some(tx) = w.and_then(|w| w.asked.remove(&id)) {
                    let _ = tx.send(answer);
                }
            }
            Some(ToMaster::Admit { id, ip, user }) => {
                let w = &self.settings.worker;
                let limits = (w.max_connections_per_user, w.max_connections_per_ip);
                let refused = self.admissions.admit(key, id, ip, user, limits).err();
                if let Some(w) = self.state.workers.get(&key) {
                    w.tx.send(ToWorker::Admitted { id, refused });
                }
            }
            Some(ToMaster::Release { id }) => self.admissions.release(key, id),
            Some(ToMaster::Pong { .. }) => {} // the heartbeat: `heard` above is its effect
            Some(ToMaster::Hello(_)) => tracing::warn!("ignoring a repeated Hello"),
            Some(other) => tracing::warn!(?other, "unexpected message from a worker"),
            None => {}
        }
    }

    fn on_ready(&mut self, key: WorkerKey, now: Instant) {
        let Some(w) = self.state.workers.get_mut(&key) else {
            return;
        };
        if w.state != WorkerState::Starting {
            return;
        }
        w.state = WorkerState::Ready;
        w.ready_at = Some(now);
        let took = now.duration_since(w.started);
        tracing::info!(
            slot = w.slot,
            pid = w.pid,
            generation = w.generation,
            ready_ms = took.as_secs_f64() * 1000.0,
            "worker ready"
        );
        self.reload_ready(key, took, now);
    }

    /// Supervision: a worker process ended.
    fn on_exit(&mut self, key: WorkerKey, how: &str, now: Instant) {
        self.rooms.remove_worker(key, now.into_std());
        self.admissions.remove_worker(key);
        let Some(w) = self.state.workers.remove(&key) else {
            return;
        };
        let (s, pid, generation) = (w.slot, w.pid, w.generation);
        let stopping = matches!(self.phase(), Phase::Stopping | Phase::Stopped);
        let slot = &mut self.state.slots[s as usize];
        if let Some(c) = &w.last_counters {
            slot.retired.add(c);
        }
        slot.retired_cpu_s += w.cpu.sample.cpu_s;
        if slot.current != Some(key) {
            if w.state == WorkerState::Draining {
                tracing::info!(slot = s, pid, generation, status = %how, "drained worker exited");
            } else {
                tracing::warn!(slot = s, pid, generation, status = %how, "reload candidate exited");
            }
            let why = format!("worker pid {pid} exited ({how}) before it was ready");
            self.reload_lost(key, why, now);
            return;
        }
        slot.current = None;
        slot.last_exit = Some(format!("pid {pid} {how}"));
        if stopping {
            tracing::info!(slot = s, pid, generation, status = %how, "worker exited");
            return;
        }
        let delay = slot
            .backoff
            .crashed(w.ready_at.map(|r| now.duration_since(r)));
        slot.restarts += 1;
        tracing::warn!(
            slot = s,
            pid,
            generation,
            status = %how,
            restart_in_ms = delay.as_millis() as u64,
            failures = slot.backoff.failures,
            "worker exited unexpectedly; replacing it"
        );
        if delay.is_zero() {
            self.restart(s, now);
        } else {
            slot.backoff_until = Some(now + delay);
        }
    }

    /// Starts slot `slot`'s next worker; a failure to spawn backs off like a crash.
    fn restart(&mut self, slot: u32, now: Instant) {
        if let Err(e) = self.start_worker(slot, false, now) {
            tracing::error!(slot, error = %e, "could not start a worker; backing off");
            let s = &mut self.state.slots[slot as usize];
            let delay = s.backoff.crashed(None).max(backoff::BASE);
            s.last_exit = Some(e);
            s.backoff_until = Some(now + delay);
        }
    }

    /// Spawns a worker for `slot`. A normal start makes it the slot's worker at once; a
    /// reload `candidate` waits for [`promote`](Self::promote).
    fn start_worker(
        &mut self,
        slot: u32,
        candidate: bool,
        now: Instant,
    ) -> Result<WorkerKey, String> {
        let key = self.state.next_key;
        let generation = self.state.slots[slot as usize].generation + 1;
        let spawned = self.spawner.spawn(key, slot, generation, &self.settings)?;
        self.state.next_key += 1;
        let s = &mut self.state.slots[slot as usize];
        s.generation = generation;
        s.backoff_until = None;
        if !candidate {
            s.current = Some(key);
        }
        tracing::info!(
            slot,
            pid = spawned.pid,
            generation,
            candidate,
            "worker started"
        );
        self.state.workers.insert(
            key,
            WorkerEntry {
                slot,
                generation,
                pid: spawned.pid,
                state: WorkerState::Starting,
                started: now,
                ready_at: None,
                tx: spawned.tx,
                linked: false,
                heard: now,
                unresponsive: false,
                pings: 0,
                pending: HashMap::new(),
                asked: HashMap::new(),
                cpu: Default::default(),
                last_counters: None,
            },
        );
        Ok(key)
    }

    /// Makes reload candidate `key` its slot's worker and drains the one it replaces;
    /// returns the replaced worker's pid.
    fn promote(&mut self, key: WorkerKey) -> Option<u32> {
        let slot = self.state.workers.get(&key)?.slot as usize;
        let old = self.state.slots[slot].current.replace(key);
        self.state.slots[slot].backoff = Backoff::default();
        let grace_ms = self.settings.drain_timeout.as_millis() as u64;
        let w = self.state.workers.get_mut(&old?)?;
        w.state = WorkerState::Draining;
        w.tx.send(ToWorker::Drain {
            grace_ms,
            stop_accepting: true,
        });
        Some(w.pid)
    }

    fn kill(&mut self, key: WorkerKey) {
        if let Some(w) = self.state.workers.get(&key) {
            self.spawner.kill(w.pid);
        }
    }

    /// Time passed: /proc figures, stalled workers, due restarts, deadlines.
    fn on_tick(&mut self, now: Instant) {
        let own = self.spawner.sample(std::process::id());
        self.state.cpu.update(own, now);
        for w in self.state.workers.values_mut() {
            w.cpu.update(self.spawner.sample(w.pid), now);
        }
        self.kill_stalled(true);
        self.heartbeat(now);
        self.rooms.sweep(now.into_std());
        let workers = &self.state.workers;
        self.rooms
            .flush_presence(now.into_std(), |to, m| send(workers, to, m));
        if matches!(self.phase(), Phase::Starting | Phase::Running) {
            let due: Vec<u32> = (0..self.state.slots.len() as u32)
                .filter(|&i| {
                    let s = &self.state.slots[i as usize];
                    s.current.is_none() && s.backoff_until.is_some_and(|t| t <= now)
                })
                .collect();
            for slot in due {
                self.restart(slot, now);
            }
        }
        self.reload_tick(now);
        self.lifecycle_tick(now);
    }

    /// Kills workers that stopped reading their link (a stopped or wedged process): the
    /// master would otherwise buffer their relayed messages without bound. The byte bound
    /// is checked after every event, so a queue overshoots it by one event's messages at
    /// most; it applies while the worker's socket is full (a queue that is long only
    /// because its writer has not run yet is not the worker's fault), and a single message
    /// larger than the bound is let through. The message count is checked at each `tick`,
    /// as it always was. Supervision then replaces them like any crashed worker.
    fn kill_stalled(&mut self, tick: bool) {
        let (limit, limit_bytes) = (
            self.settings.ipc_queue_limit,
            self.settings.ipc_queue_limit_bytes,
        );
        let stalled: Vec<WorkerKey> = self
            .state
            .workers
            .iter()
            .filter(|(_, w)| !w.tx.is_shut())
            .filter(|(_, w)| {
                let bytes = w.tx.bytes() > limit_bytes && w.tx.depth() > 1 && w.tx.blocked();
                bytes || (tick && w.tx.depth() > limit)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in stalled {
            let w = &self.state.workers[&key];
            tracing::error!(
                slot = w.slot,
                pid = w.pid,
                queued = w.tx.depth(),
                queued_bytes = w.tx.bytes(),
                limit,
                limit_bytes,
                "worker is not reading its master link (stalled?); killing it so it is replaced"
            );
            self.shut_and_kill(key);
        }
    }

    /// The link heartbeat, once a tick: a ping to every linked worker; one silent for
    /// half of `--worker-timeout` is shown unresponsive (`/ready` 503), one silent for
    /// all of it is killed, and supervision replaces it.
    fn heartbeat(&mut self, now: Instant) {
        let timeout = self.settings.worker_timeout;
        let mut dead = Vec::new();
        for (key, w) in self.state.workers.iter_mut() {
            if !w.linked || w.tx.is_shut() {
                continue;
            }
            let silent = now.saturating_duration_since(w.heard);
            if silent >= timeout {
                dead.push(*key);
                continue;
            }
            if silent >= timeout / 2 && !w.unresponsive {
                w.unresponsive = true;
                tracing::warn!(
                    slot = w.slot,
                    pid = w.pid,
                    silent_ms = silent.as_millis() as u64,
                    "worker is not answering its link heartbeat (stopped or wedged?); shown unresponsive, killed if silent for {timeout:?}"
                );
            }
            w.pings += 1;
            w.tx.send(ToWorker::Ping { id: w.pings });
        }
        for key in dead {
            let w = &self.state.workers[&key];
            tracing::error!(
                slot = w.slot,
                pid = w.pid,
                silent_ms = now.saturating_duration_since(w.heard).as_millis() as u64,
                "worker did not answer its link heartbeat within {timeout:?}; killing it so it is replaced"
            );
            self.shut_and_kill(key);
        }
    }

    /// A worker spoke: its heartbeat is fresh.
    fn heard(&mut self, key: WorkerKey, now: Instant) {
        if let Some(w) = self.state.workers.get_mut(&key) {
            w.heard = now;
            if std::mem::take(&mut w.unresponsive) {
                tracing::info!(
                    slot = w.slot,
                    pid = w.pid,
                    "worker answers its heartbeat again"
                );
            }
        }
    }

    /// Kills worker `key`, whose queue takes nothing more from now on.
    fn shut_and_kill(&mut self, key: WorkerKey) {
        if let Some(w) = self.state.workers.get(&key) {
            w.tx.shut();
            self.spawner.kill(w.pid);
        }
    }
}

/// Sends `m` where `to` says, through the workers' link queues.
fn send(workers: &BTreeMap<WorkerKey, WorkerEntry>, to: To, m: ToWorker) {
    match to {
        To::Worker(k) => {
            if let Some(w) = workers.get(&k) {
                w.tx.send(m);
            }
        }
        To::Serving => {
            for w in workers
                .values()
                .filter(|w| w.state != WorkerState::Starting)
            {
                w.tx.send(m.clone());
            }
        }
    }
}

/// An empty history store with `settings`' limits.
fn recall(settings: &HistorySettings) -> Recall {
    let store = HistoryStore::new(settings.namespaces.clone(), settings.budget_bytes);
    Recall::new(store, settings.recovery_max)
}

/// How long a stop waits for killed workers to be reaped before giving up on them.
const REAP_LIMIT: Duration = Duration::from_secs(3);
