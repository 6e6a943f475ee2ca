//! Start-up and stop, as steps the loop takes: spawn every slot → all ready → `Running`
//! (a slot failing 3 times, or the start-up deadline, → stop with an error); stop: drain
//! every worker → all gone within drain + 10 s, else kill → reaped within 3 s → `Stopped`.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use wsfleet_worker::ipc::ToWorker;

use super::{REAP_LIMIT, Supervisor};
use crate::master::events::MasterCmd;
use crate::master::history::persist;
use crate::master::spawner::Spawner;
use crate::master::state::{Phase, WorkerState};

/// Consecutive failures of one slot during start-up after which the master gives up.
pub const STARTUP_FAILURES: u32 = 3;

/// Extra time past the drain period before draining workers are killed.
const DRAIN_SLACK: Duration = Duration::from_secs(10);

/// A stop in progress.
#[derive(Debug, Clone, Copy)]
pub struct Stop {
    /// When the next step is due (kill the rest, or give up on reaping them).
    pub deadline: Instant,
    /// Whether every worker was already sent SIGKILL.
    pub killed: bool,
}

impl<S: Spawner> Supervisor<S> {
    /// Spawns a worker for every slot.
    pub fn start(&mut self, now: Instant) {
        let dir = self.settings.run_dir.clone();
        let store = self.rooms.recall().store();
        let limit = persist::file_limit(store.budget());
        persist::load(&dir, store, now.into_std(), SystemTime::now(), limit);
        for slot in 0..self.state.slots.len() as u32 {
            if let Err(e) = self.start_worker(slot, false, now) {
                self.fail(e, now);
                break;
            }
        }
        self.progress(now);
    }

    /// Moves the phase on when what it waits for has happened.
    pub(super) fn progress(&mut self, now: Instant) {
        if self.phase() == Phase::Starting {
            if self.state.all_ready() {
                self.set_phase(Phase::Running);
            } else if let Some((i, s)) = self
                .state
                .slots
                .iter()
                .enumerate()
                .find(|(_, s)| s.backoff.failures >= STARTUP_FAILURES)
            {
                let why = format!(
                    "the worker for slot {i} failed to start {} times (last: {}); see the log lines above",
                    s.backoff.failures,
                    s.last_exit.as_deref().unwrap_or("unknown")
                );
                self.fail(why, now);
            }
        }
        if self.phase() == Phase::Stopping && self.state.workers.is_empty() {
            tracing::info!("stopped");
            self.stopped(now);
        }
    }

    /// The end: every worker is gone (or given up on), so no publish can come any more;
    /// the history is written for the next master on this run directory.
    fn stopped(&mut self, now: Instant) {
        let dir = self.settings.run_dir.clone();
        let store = self.rooms.recall().store();
        if store.stats().rooms > 0 {
            match persist::save(&dir, store, now.into_std(), SystemTime::now()) {
                Ok(saved) => tracing::info!(
                    rooms = saved.rooms,
                    messages = saved.messages,
                    bytes = saved.bytes,
                    "history saved for the next master"
                ),
                Err(e) => tracing::error!(error = %e, "history not saved"),
            }
        }
        self.set_phase(Phase::Stopped);
    }

    pub(super) fn on_command(&mut self, cmd: MasterCmd, now: Instant) {
        let phase = self.phase();
        match (cmd, phase) {
            (MasterCmd::Reload, Phase::Running) => self.reload_begin(None, now),
            (MasterCmd::Reload, _) => {
                tracing::warn!(
                    phase = phase.name(),
                    "ignoring a reload: the fleet is not running"
                )
            }
            (MasterCmd::Stop { .. } | MasterCmd::Interrupt, Phase::Starting) => {
                tracing::warn!(?cmd, "stopped while starting");
                self.begin_stop(true, now);
            }
            (MasterCmd::Stop { now: false } | MasterCmd::Interrupt, Phase::Running) => {
                tracing::info!("stopping: draining every worker");
                self.begin_stop(false, now);
            }
            (MasterCmd::Stop { now: false }, _) => tracing::info!("already stopping"),
            (MasterCmd::Stop { now: true }, Phase::Running) | (_, Phase::Stopping) => {
                tracing::warn!("stopping now: killing every worker");
                self.begin_stop(true, now);
            }
            (_, Phase::Stopped) => {}
        }
    }

    /// Start-up failed: kill what runs and exit with `why`.
    fn fail(&mut self, why: String, now: Instant) {
        self.failure = Some(why);
        self.begin_stop(true, now);
    }

    /// Enters `Stopping`: drain every worker (or kill them `now`).
    fn begin_stop(&mut self, now_: bool, now: Instant) {
        self.set_phase(Phase::Stopping);
        self.reload_abort(now);
        for s in &mut self.state.slots {
            s.backoff_until = None;
        }
        if now_ {
            self.kill_all();
            self.stop = Some(Stop {
                deadline: now + REAP_LIMIT,
                killed: true,
            });
            return;
        }
        let grace = self.settings.drain_timeout;
        for w in self.state.workers.values_mut() {
            w.state = WorkerState::Draining;
            w.tx.send(ToWorker::Drain {
                grace_ms: grace.as_millis() as u64,
                stop_accepting: false,
            });
        }
        if self.stop.is_none() {
            self.stop = Some(Stop {
                deadline: now + grace + DRAIN_SLACK,
                killed: false,
            });
        }
    }

    fn kill_all(&mut self) {
        for w in self.state.workers.values() {
            self.spawner.kill(w.pid);
        }
    }

    /// Deadlines of start-up and stop.
    pub(super) fn lifecycle_tick(&mut self, now: Instant) {
        if self.phase() == Phase::Starting && now >= self.startup_deadline {
            let why = format!(
                "workers were not all ready within {:?}; see the log lines above",
                self.settings.ready_timeout * 3
            );
            self.fail(why, now);
            return;
        }
        let Some(stop) = self.stop else {
            return;
        };
        if self.phase() != Phase::Stopping || now < stop.deadline {
            return;
        }
        if stop.killed {
            tracing::warn!(
                workers = self.state.workers.len(),
                "killed workers were not reaped in time; exiting anyway"
            );
            self.stopped(now);
        } else {
            tracing::warn!("workers still alive after the drain period; killing them");
            self.begin_stop(true, now);
        }
    }
}
