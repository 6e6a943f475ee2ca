//! The master's picture of its fleet — slots, worker processes, the relay — and what it
//! does when a worker speaks, becomes ready, or exits (supervision with backoff).
//!
//! All of it runs on the master's single thread; `Master` methods borrow the state for
//! a moment and never across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use wsfleet_worker::ipc::framing::pump;
use wsfleet_worker::ipc::{
    FrameReader, FrameWriter, PROTOCOL_VERSION, RoomEvent, ToMaster, ToWorker, WorkerCounters,
    monotonic_ns,
};
use wsfleet_worker::protocol;

use super::backoff::Backoff;
use super::relay::{Relay, WorkerKey};
use super::spawn::{self, WorkerSpec};
use crate::cli::ServeArgs;
use crate::config::Settings;
use crate::sys::procfs::{self, ProcSample};

/// Where the fleet is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Workers are starting; the ready line is not printed yet.
    Starting,
    /// Serving; dead workers are replaced.
    Running,
    /// Draining or killing; nothing is restarted.
    Stopping,
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
}

impl WorkerState {
    /// The name `wsfleet stats` shows.
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
        }
    }
}

/// CPU use derived from two /proc samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuMeter {
    /// Latest sample.
    pub sample: ProcSample,
    /// When it was taken.
    pub at: Option<Instant>,
    /// CPU percent (of one core) between the last two samples.
    pub pct: f64,
}

impl CpuMeter {
    /// Takes a new sample of `pid`.
    pub fn update(&mut self, pid: u32) {
        let Some(sample) = procfs::sample(pid) else {
            return;
        };
        let now = Instant::now();
        if let Some(at) = self.at {
            let wall = now.duration_since(at).as_secs_f64();
            if wall > 0.0 {
                self.pct = ((sample.cpu_s - self.sample.cpu_s) / wall * 100.0).max(0.0);
            }
        }
        self.sample = sample;
        self.at = Some(now);
    }
}

/// The master's queue of messages to one worker, with its depth: messages sent and not
/// yet written to the worker's socket (the `/metrics` IPC queue depth). The queue is
/// unbounded by design (the relay must not block the master's single thread), so its
/// depth is what shows a worker falling behind.
pub struct WorkerTx {
    /// The channel the worker's link task drains.
    tx: mpsc::UnboundedSender<ToWorker>,
    /// Messages queued and not yet written; the link task subtracts what it wrote.
    queued: Rc<Cell<u64>>,
}

impl WorkerTx {
    /// Queues `msg` for the worker; fails only if its link task is gone.
    pub fn send(&self, msg: ToWorker) -> Result<(), mpsc::error::SendError<ToWorker>> {
        self.tx.send(msg)?;
        self.queued.set(self.queued.get() + 1);
        Ok(())
    }

    /// Messages queued and not yet written.
    pub fn depth(&self) -> u64 {
        self.queued.get()
    }
}

/// One listening socket and the worker that serves it.
pub struct Slot {
    /// The slot's SO_REUSEPORT socket, owned by the master for its whole life.
    pub socket: socket2::Socket,
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
    pub retired: WorkerCounters,
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
    /// When it reported ready.
    pub ready_at: Option<Instant>,
    /// Messages to it (written in batches by its link task).
    pub tx: WorkerTx,
    /// A reload candidate: not the slot's worker until the reload promotes it.
    pub candidate: bool,
    /// Whether its Hello was accepted and Start sent: nothing else may reach it before.
    pub linked: bool,
    /// Told when the worker is ready (or dies first).
    pub ready_tx: Option<oneshot::Sender<Result<Duration, String>>>,
    /// Counter requests waiting for an answer.
    pub pending: HashMap<u64, oneshot::Sender<WorkerCounters>>,
    /// CPU and memory from /proc.
    pub cpu: CpuMeter,
    /// Its counters as it last reported them; added to its slot's `retired` when it exits.
    pub last_counters: Option<WorkerCounters>,
}

/// The mutable part of the master.
pub struct FleetState {
    /// Life phase.
    pub phase: Phase,
    /// Settings in force (replaced by a reload).
    pub settings: Rc<Settings>,
    /// Slots by index.
    pub slots: Vec<Slot>,
    /// Live worker processes.
    pub workers: BTreeMap<WorkerKey, WorkerEntry>,
    /// Next worker key.
    pub next_key: WorkerKey,
    /// Room routes and sequences.
    pub relay: Relay,
    /// Reloads started.
    pub reloads: u64,
    /// Outcome of the last reload.
    pub last_reload_ok: Option<bool>,
    /// Whether a reload runs now.
    pub reloading: bool,
    /// The master's own CPU meter.
    pub cpu: CpuMeter,
}

/// The master.
pub struct Master {
    /// When it started.
    pub started: Instant,
    /// The binary workers are started from (re-read at every spawn: replacing it on disk
    /// and reloading upgrades the fleet).
    pub exe: PathBuf,
    /// The command line and environment, to re-resolve settings on reload.
    pub args: ServeArgs,
    /// The address actually served.
    pub listen: SocketAddr,
    /// Everything that changes.
    pub state: RefCell<FleetState>,
    /// Bumped on every state change that someone may wait for (ready, exit).
    pub changed: watch::Sender<()>,
    /// Source of counter-request ids.
    next_request: Cell<u64>,
}

/// How a process ended, for logs.
pub fn describe(status: &std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(name) => format!("signal {sig} ({name})"),
                Err(_) => format!("signal {sig}"),
            },
            _ => "unknown status".into(),
        },
        Err(e) => format!("wait failed: {e}"),
    }
}

impl Master {
    /// A master with `sockets` bound and no workers yet.
    pub fn new(
        settings: Settings,
        args: ServeArgs,
        exe: PathBuf,
        sockets: Vec<socket2::Socket>,
        listen: SocketAddr,
    ) -> Self {
        let slots = sockets
            .into_iter()
            .map(|socket| Slot {
                socket,
                current: None,
                generation: 0,
                restarts: 0,
                backoff: Backoff::default(),
                backoff_until: None,
                last_exit: None,
                retired: WorkerCounters::default(),
                retired_cpu_s: 0.0,
            })
            .collect();
        Self {
            started: Instant::now(),
            exe,
            args,
            listen,
            state: RefCell::new(FleetState {
                phase: Phase::Starting,
                settings: Rc::new(settings),
                slots,
                workers: BTreeMap::new(),
                next_key: 1,
                relay: Relay::default(),
                reloads: 0,
                last_reload_ok: None,
                reloading: false,
                cpu: CpuMeter::default(),
            }),
            changed: watch::channel(()).0,
            next_request: Cell::new(0),
        }
    }

    /// Settings in force.
    pub fn settings(&self) -> Rc<Settings> {
        self.state.borrow().settings.clone()
    }

    /// Starts a worker for `slot`. A normal start makes it the slot's worker at once; a
    /// `candidate` (reload) waits for [`promote`](Self::promote). The receiver learns when
    /// it is ready, or why it died first.
    pub fn start_worker(
        self: &Rc<Self>,
        slot: u32,
        candidate: bool,
    ) -> Result<(WorkerKey, oneshot::Receiver<Result<Duration, String>>), String> {
        let (key, spawned, tx_rx) = {
            let mut st = self.state.borrow_mut();
            let settings = st.settings.clone();
            let s = &mut st.slots[slot as usize];
            let generation = s.generation + 1;
            let spec = WorkerSpec {
                exe: &self.exe,
                listener: &s.socket,
                slot,
                generation,
                log_level: &settings.log_level,
                log_format: settings.log_format,
            };
            let spawned = spawn::spawn(&spec)
                .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
            s.generation = generation;
            s.backoff_until = None;
            let key = st.next_key;
            st.next_key += 1;
            if !candidate {
                st.slots[slot as usize].current = Some(key);
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let tx = WorkerTx {
                tx,
                queued: Rc::new(Cell::new(0)),
            };
            let queued = tx.queued.clone();
            let (ready_tx, ready_rx) = oneshot::channel();
            st.workers.insert(
                key,
                WorkerEntry {
                    slot,
                    generation,
                    pid: spawned.pid,
                    state: WorkerState::Starting,
                    started: Instant::now(),
                    ready_at: None,
                    tx,
                    candidate,
                    linked: false,
                    ready_tx: Some(ready_tx),
                    pending: HashMap::new(),
                    cpu: CpuMeter::default(),
                    last_counters: None,
                },
            );
            tracing::info!(
                slot,
                pid = spawned.pid,
                generation,
                candidate,
                "worker started"
            );
            (key, spawned, (rx, ready_rx, queued))
        };
        let (rx, ready_rx, queued) = tx_rx;
        let spawn::Spawned {
            mut child,
            link,
            pid,
        } = spawned;
        let link = tokio::net::UnixStream::from_std(link).map_err(|e| e.to_string())?;
        let (read_half, write_half) = link.into_split();
        tokio::task::spawn_local(async move {
            let written = |n: u64| queued.set(queued.get().saturating_sub(n));
            let _ = pump(rx, FrameWriter::new(write_half), 256 * 1024, written).await;
        });
        let this = self.clone();
        tokio::task::spawn_local(async move {
            this.read_link(key, pid, slot, FrameReader::new(read_half))
                .await
        });
        let this = self.clone();
        tokio::task::spawn_local(async move {
            let status = child.wait().await;
            this.on_exit(key, status);
        });
        Ok((key, ready_rx))
    }

    async fn read_link(
        self: Rc<Self>,
        key: WorkerKey,
        pid: u32,
        slot: u32,
        mut reader: FrameReader<tokio::net::unix::OwnedReadHalf>,
    ) {
        let timeout = self.settings().ready_timeout.max(Duration::from_secs(1));
        let hello = match tokio::time::timeout(timeout, reader.next::<ToMaster>()).await {
            Ok(Ok(Some(ToMaster::Hello(hello)))) => hello,
            Ok(Ok(Some(other))) => {
                tracing::error!(
                    slot,
                    pid,
                    "worker spoke before saying Hello ({other:?}); killing it"
                );
                return kill_pid(pid);
            }
            Ok(Ok(None)) => return, // exited before saying anything; on_exit reports it
            Ok(Err(e)) => {
                tracing::error!(slot, pid, error = %e, "worker's first message is unreadable (is the binary on disk another wsfleet version?); killing it");
                return kill_pid(pid);
            }
            Err(_) => {
                tracing::error!(
                    slot,
                    pid,
                    "worker sent no Hello within {timeout:?}; killing it"
                );
                return kill_pid(pid);
            }
        };
        if hello.version != PROTOCOL_VERSION {
            tracing::error!(
                slot,
                pid,
                "worker speaks IPC protocol v{} but this master speaks v{PROTOCOL_VERSION}: refusing it. The binary on disk is incompatible with the running master; restart the master to upgrade across protocol versions",
                hello.version
            );
            return kill_pid(pid);
        }
        {
            let mut st = self.state.borrow_mut();
            let settings = st.settings.worker.clone();
            let Some(entry) = st.workers.get_mut(&key) else {
                return;
            };
            if hello.slot != entry.slot || hello.generation != entry.generation {
                tracing::error!(
                    slot,
                    pid,
                    ?hello,
                    "worker's Hello does not match how it was started; killing it"
                );
                drop(st);
                return kill_pid(pid);
            }
            let _ = entry.tx.send(ToWorker::Start(settings));
            entry.linked = true;
        }
        loop {
            match reader.next::<ToMaster>().await {
                Ok(Some(msg)) => self.on_message(key, msg),
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(slot, pid, error = %e, "bad frame from worker; killing it");
                    return kill_pid(pid);
                }
            }
        }
    }

    fn send(st: &FleetState, key: WorkerKey, msg: ToWorker) {
        if let Some(w) = st.workers.get(&key) {
            let _ = w.tx.send(msg);
        }
    }

    /// Handles one message from worker `key`.
    pub fn on_message(&self, key: WorkerKey, msg: ToMaster) {
        let mut st = self.state.borrow_mut();
        match msg {
            ToMaster::Publish {
                room,
                data,
                conn,
                ack,
            } => {
                let st = &mut *st;
                let seq = match st.relay.publish(&room) {
                    Some((seq, targets)) => {
                        let frame = protocol::room_message(&room, seq, &data);
                        let ordered_ns = monotonic_ns();
                        for t in targets {
                            if let Some(w) = st.workers.get(t) {
                                let _ = w.tx.send(ToWorker::Room {
                                    room: room.clone(),
                                    frame: frame.clone(),
                                    skip: None,
                                    ordered_ns,
                                });
                            }
                        }
                        Some(seq)
                    }
                    None => None,
                };
                if let Some(ack) = ack {
                    Self::send(st, key, ToWorker::Ordered { conn, ack, seq });
                }
            }
            ToMaster::Presence {
                room,
                event,
                conn,
                id,
            } => {
                let frame = protocol::presence(&room, event == RoomEvent::Join, &id);
                for t in st.relay.targets(&room) {
                    let skip = (*t == key).then_some(conn);
                    Self::send(
                        &st,
                        *t,
                        ToWorker::Room {
                            room: room.clone(),
                            frame: frame.clone(),
                            skip,
                            ordered_ns: 0,
                        },
                    );
                }
            }
            ToMaster::Interest { room, on, token } => {
                st.relay.interest(key, &room, on);
                if on {
                    Self::send(&st, key, ToWorker::InterestAck { room, token });
                }
            }
            ToMaster::Broadcast { data, conn, ack } => {
                let frame = protocol::broadcast_message(&data);
                for w in st
                    .workers
                    .values()
                    .filter(|w| w.state != WorkerState::Starting)
                {
                    let _ = w.tx.send(ToWorker::Broadcast {
                        frame: frame.clone(),
                    });
                }
                if let Some(ack) = ack {
                    Self::send(
                        &st,
                        key,
                        ToWorker::Ordered {
                            conn,
                            ack,
                            seq: None,
                        },
                    );
                }
            }
            ToMaster::Counters { id, counters } => {
                if let Some(tx) = st.workers.get_mut(&key).and_then(|w| w.pending.remove(&id)) {
                    let _ = tx.send(counters);
                }
            }
            ToMaster::Ready => {
                let Some(w) = st.workers.get_mut(&key) else {
                    return;
                };
                let now = Instant::now();
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
                if let Some(tx) = w.ready_tx.take() {
                    let _ = tx.send(Ok(took));
                }
                drop(st);
                self.changed.send_replace(());
            }
            ToMaster::Hello(_) => tracing::warn!("ignoring a repeated Hello"),
        }
    }

    /// Makes reload candidate `key` its slot's worker, and drains the one it replaces.
    /// Returns the replaced worker's pid.
    pub fn promote(&self, key: WorkerKey) -> Option<u32> {
        let mut st = self.state.borrow_mut();
        let grace = st.settings.drain_timeout;
        let slot = {
            let w = st.workers.get_mut(&key)?;
            w.candidate = false;
            w.slot as usize
        };
        let old = st.slots[slot].current.replace(key);
        st.slots[slot].backoff = Backoff::default();
        old.and_then(|old| {
            let w = st.workers.get_mut(&old)?;
            w.state = WorkerState::Draining;
            let _ = w.tx.send(ToWorker::Drain {
                grace_ms: grace.as_millis() as u64,
                stop_accepting: true,
            });
            Some(w.pid)
        })
    }

    /// Supervision: a worker process ended.
    fn on_exit(self: &Rc<Self>, key: WorkerKey, status: std::io::Result<ExitStatus>) {
        let how = describe(&status);
        let restart = {
            let mut st = self.state.borrow_mut();
            st.relay.remove_worker(key);
            let Some(mut w) = st.workers.remove(&key) else {
                return;
            };
            let phase = st.phase;
            let slot = &mut st.slots[w.slot as usize];
            if let Some(c) = &w.last_counters {
                super::stats::add_counters(&mut slot.retired, c);
            }
            slot.retired_cpu_s += w.cpu.sample.cpu_s;
            let (s, pid, generation) = (w.slot, w.pid, w.generation);
            if let Some(tx) = w.ready_tx.take() {
                let _ = tx.send(Err(format!(
                    "worker pid {pid} exited ({how}) before it was ready"
                )));
            }
            if slot.current != Some(key) {
                if w.state == WorkerState::Draining {
                    tracing::info!(slot = s, pid, generation, status = %how, "drained worker exited");
                } else {
                    tracing::warn!(slot = s, pid, generation, status = %how, "reload candidate exited");
                }
                None
            } else {
                slot.current = None;
                slot.last_exit = Some(format!("pid {pid} {how}"));
                if phase == Phase::Stopping {
                    tracing::info!(slot = s, pid, generation, status = %how, "worker exited");
                    None
                } else {
                    let uptime = w.ready_at.map(|r| r.elapsed());
                    let delay = slot.backoff.crashed(uptime);
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
                    if !delay.is_zero() {
                        slot.backoff_until = Some(Instant::now() + delay);
                    }
                    Some((s, delay))
                }
            }
        };
        self.changed.send_replace(());
        if let Some((slot, delay)) = restart {
            self.restart_after(slot, delay);
        }
    }

    /// Starts the slot's next worker after `delay` (now if zero), unless the slot got
    /// one meanwhile or the fleet is stopping.
    fn restart_after(self: &Rc<Self>, slot: u32, delay: Duration) {
        let this = self.clone();
        let go = move || {
            {
                let st = this.state.borrow();
                if st.phase == Phase::Stopping || st.slots[slot as usize].current.is_some() {
                    return;
                }
            }
            if let Err(e) = this.start_worker(slot, false) {
                tracing::error!(slot, error = %e, "could not start a worker; backing off");
                let delay = {
                    let mut st = this.state.borrow_mut();
                    let s = &mut st.slots[slot as usize];
                    s.last_exit = Some(e);
                    let d = s.backoff.crashed(None).max(super::backoff::BASE);
                    s.backoff_until = Some(Instant::now() + d);
                    d
                };
                this.changed.send_replace(());
                this.restart_after(slot, delay);
            }
        };
        if delay.is_zero() {
            go();
        } else {
            tokio::task::spawn_local(async move {
                tokio::time::sleep(delay).await;
                go();
            });
        }
    }

    /// Sends `Drain` to every worker (a fleet stop: they keep answering 503 meanwhile).
    pub fn drain_all(&self) {
        let mut st = self.state.borrow_mut();
        let grace = st.settings.drain_timeout.as_millis() as u64;
        for w in st.workers.values_mut() {
            w.state = WorkerState::Draining;
            let _ = w.tx.send(ToWorker::Drain {
                grace_ms: grace,
                stop_accepting: false,
            });
        }
    }

    /// SIGKILLs every worker.
    pub fn kill_all(&self) {
        for w in self.state.borrow().workers.values() {
            kill_pid(w.pid);
        }
    }

    /// SIGKILLs one worker.
    pub fn kill(&self, key: WorkerKey) {
        if let Some(w) = self.state.borrow().workers.get(&key) {
            kill_pid(w.pid);
        }
    }

    /// Asks every live worker for its counters; answers arrive on the receivers.
    pub fn request_counters(&self) -> Vec<(WorkerKey, oneshot::Receiver<WorkerCounters>)> {
        let mut st = self.state.borrow_mut();
        let mut waits = Vec::new();
        for (key, w) in st.workers.iter_mut().filter(|(_, w)| w.linked) {
            let id = self.next_request.get() + 1;
            self.next_request.set(id);
            let (tx, rx) = oneshot::channel();
            w.pending.insert(id, tx);
            if w.tx.send(ToWorker::CountersRequest { id }).is_ok() {
                waits.push((*key, rx));
            }
        }
        waits
    }

    /// Kills workers that stopped reading their link (a stopped or wedged process): the
    /// master would otherwise buffer their relayed messages without bound. Supervision
    /// then replaces them like any crashed worker.
    pub fn kill_stalled(&self) {
        let st = self.state.borrow();
        let limit = st.settings.ipc_queue_limit;
        for w in st.workers.values().filter(|w| w.tx.depth() > limit) {
            tracing::error!(
                slot = w.slot,
                pid = w.pid,
                queued = w.tx.depth(),
                limit,
                "worker is not reading its master link (stalled?); killing it so it is replaced"
            );
            kill_pid(w.pid);
        }
    }

    /// Takes a first /proc sample of workers the once-a-second sampler has not seen yet,
    /// so a fresh worker does not show 0 bytes of RSS.
    pub fn sample_new_processes(&self) {
        let mut st = self.state.borrow_mut();
        for w in st.workers.values_mut().filter(|w| w.cpu.at.is_none()) {
            w.cpu.update(w.pid);
        }
    }

    /// Refreshes the /proc figures of the master and every worker.
    pub fn sample_processes(&self) {
        let mut st = self.state.borrow_mut();
        st.cpu.update(std::process::id());
        for w in st.workers.values_mut() {
            w.cpu.update(w.pid);
        }
    }
}

fn kill_pid(pid: u32) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}
