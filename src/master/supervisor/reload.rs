//! Rolling restart as a state machine the loop drives, one slot at a time: re-read the
//! settings → spawn the slot's candidate on the same socket → wait for its `Ready`
//! (or its exit, or the deadline) → promote it and drain the old worker → next slot. A
//! candidate that dies or is late is killed and the reload stops; every slot not yet
//! replaced keeps its old worker. The requester's [`ReloadReport`] is sent at the end.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Supervisor;
use crate::config::Settings;
use crate::control_api::{ReloadReport, SlotOutcome};
use crate::master::relay::WorkerKey;
use crate::master::spawner::Spawner;
use crate::master::state::Phase;

/// A reload in progress.
pub struct Reload {
    /// When it began.
    started: Instant,
    /// Who waits for the report (none for SIGHUP).
    reply: Option<oneshot::Sender<ReloadReport>>,
    /// The next slot to replace.
    next_slot: u32,
    /// The slot's new worker, while it starts.
    candidate: Option<Candidate>,
    /// Outcomes of the slots done so far.
    slots: Vec<SlotOutcome>,
}

/// The new worker of the slot being replaced.
struct Candidate {
    /// Its key.
    key: WorkerKey,
    /// When it must be ready.
    deadline: Instant,
    /// What the report will say about its slot.
    outcome: SlotOutcome,
}

impl Reload {
    /// The candidate's ready deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.candidate.as_ref().map(|c| c.deadline)
    }
}

fn refused(error: &str) -> ReloadReport {
    ReloadReport {
        ok: false,
        error: Some(error.into()),
        ..Default::default()
    }
}

impl<S: Spawner> Supervisor<S> {
    /// Starts a reload (answered on `reply` when over), or refuses one at once.
    pub(super) fn reload_begin(
        &mut self,
        reply: Option<oneshot::Sender<ReloadReport>>,
        now: Instant,
    ) {
        let refusal = if self.reload.is_some() {
            Some("a reload is already in progress; wait for it to finish")
        } else if self.phase() != Phase::Running {
            Some("the fleet is not running (starting or stopping); try again")
        } else {
            None
        };
        if let Some(why) = refusal {
            tracing::warn!("reload refused: {why}");
            if let Some(reply) = reply {
                let _ = reply.send(refused(why));
            }
            return;
        }
        self.state.reloads += 1;
        tracing::info!("reload: re-reading settings and replacing workers one slot at a time");
        self.reload = Some(Reload {
            started: now,
            reply,
            next_slot: 0,
            candidate: None,
            slots: Vec::new(),
        });
        match (self.resolve)() {
            Ok(fresh) => {
                self.settings = merge(&self.settings, fresh);
                let history = &self.settings.history;
                let recall = self.rooms.recall();
                recall.set_recovery_max(history.recovery_max);
                recall.store().reconfigure(
                    history.namespaces.clone(),
                    history.budget_bytes,
                    now.into_std(),
                );
                let (namespaces, pacing) =
                    (history.namespaces.clone(), self.settings.presence_pacing);
                self.rooms.presence().reconfigure(namespaces, pacing);
                if let Some(engine) = self.rooms.redis() {
                    engine.reconfigure(history.namespaces.clone(), history.recovery_max);
                }
                self.reload_step(now);
            }
            Err(e) => self.reload_finish(Some(format!("settings not reloaded: {e}")), now),
        }
    }

    /// Spawns the next slot's candidate, or finishes when every slot is done.
    fn reload_step(&mut self, now: Instant) {
        let Some(reload) = &self.reload else {
            return;
        };
        let slot = reload.next_slot;
        if slot as usize >= self.state.slots.len() {
            return self.reload_finish(None, now);
        }
        match self.start_worker(slot, true, now) {
            Ok(key) => {
                let w = &self.state.workers[&key];
                let outcome = SlotOutcome {
                    slot,
                    new_pid: Some(w.pid),
                    generation: w.generation,
                    ..Default::default()
                };
                let deadline = now + self.settings.ready_timeout;
                if let Some(r) = &mut self.reload {
                    r.candidate = Some(Candidate {
                        key,
                        deadline,
                        outcome,
                    });
                }
            }
            Err(e) => {
                let outcome = SlotOutcome {
                    slot,
                    error: Some(e.clone()),
                    ..Default::default()
                };
                if let Some(r) = &mut self.reload {
                    r.slots.push(outcome);
                }
                self.reload_finish(Some(e), now);
            }
        }
    }

    /// Worker `key` became ready: if it is the candidate, promote it and go on.
    pub(super) fn reload_ready(&mut self, key: WorkerKey, took: Duration, now: Instant) {
        let Some(reload) = &mut self.reload else {
            return;
        };
        let Some(mut c) = reload.candidate.take_if(|c| c.key == key) else {
            return;
        };
        c.outcome.ready_ms = Some(took.as_millis() as u64);
        c.outcome.old_pid = self.promote(key);
        c.outcome.ok = true;
        tracing::info!(
            slot = c.outcome.slot,
            new_pid = c.outcome.new_pid,
            old_pid = c.outcome.old_pid,
            "reload: slot replaced; old worker draining"
        );
        if let Some(r) = &mut self.reload {
            r.slots.push(c.outcome);
            r.next_slot += 1;
        }
        self.reload_step(now);
    }

    /// Worker `key` exited: if it is the candidate, the reload fails with `why`.
    pub(super) fn reload_lost(&mut self, key: WorkerKey, why: String, now: Instant) {
        self.reload_fail_candidate(|c| c.key == key, why, now);
    }

    /// The candidate's deadline passed: kill it and fail.
    pub(super) fn reload_tick(&mut self, now: Instant) {
        let late = self.reload.as_ref().and_then(|r| r.candidate.as_ref());
        let Some(c) = late.filter(|c| now >= c.deadline) else {
            return;
        };
        let key = c.key;
        self.kill(key);
        let why = format!(
            "the new worker was not ready within {:?}; killed it",
            self.settings.ready_timeout
        );
        self.reload_fail_candidate(|c| c.key == key, why, now);
    }

    /// The fleet began stopping: the reload ends here (its candidate drains with the rest).
    pub(super) fn reload_abort(&mut self, now: Instant) {
        if let Some(r) = &mut self.reload {
            if let Some(c) = r.candidate.take() {
                r.slots.push(SlotOutcome {
                    error: Some("the fleet began stopping".into()),
                    ..c.outcome
                });
            }
            self.reload_finish(Some("the fleet began stopping".into()), now);
        }
    }

    fn reload_fail_candidate(
        &mut self,
        is: impl Fn(&Candidate) -> bool,
        why: String,
        now: Instant,
    ) {
        let Some(r) = &mut self.reload else {
            return;
        };
        let Some(c) = r.candidate.take_if(|c| is(c)) else {
            return;
        };
        let slot = c.outcome.slot;
        r.slots.push(SlotOutcome {
            error: Some(why.clone()),
            ..c.outcome
        });
        self.reload_finish(Some(format!("slot {slot}: {why}")), now);
    }

    /// Ends the reload and answers its requester.
    fn reload_finish(&mut self, error: Option<String>, now: Instant) {
        let Some(r) = self.reload.take() else {
            return;
        };
        let report = ReloadReport {
            ok: error.is_none(),
            error,
            slots: r.slots,
            duration_ms: now.duration_since(r.started).as_millis() as u64,
        };
        self.state.last_reload_ok = Some(report.ok);
        if report.ok {
            tracing::info!(
                duration_ms = report.duration_ms,
                "reload done: every slot has a new worker"
            );
        } else {
            tracing::error!(
                duration_ms = report.duration_ms,
                error = report.error.as_deref().unwrap_or(""),
                "reload failed; slots not replaced keep their old workers"
            );
        }
        if let Some(reply) = r.reply {
            let _ = reply.send(report);
        }
    }
}

/// The re-read settings, keeping what the running master cannot change (listen address,
/// worker count, paths) with a warning; everything else applies to the workers this
/// reload starts.
fn merge(old: &Settings, fresh: Settings) -> Settings {
    for (what, changed) in [
        ("listen", fresh.listen != old.listen),
        ("workers", fresh.workers != old.workers),
        ("run_dir", fresh.run_dir != old.run_dir),
        ("control", fresh.control != old.control),
        ("backlog", fresh.backlog != old.backlog),
        ("admin", fresh.admin != old.admin),
        ("redis", fresh.redis != old.redis),
    ] {
        if changed {
            tracing::warn!(
                "reload: a change of `{what}` needs a restart of the master; keeping the current value"
            );
        }
    }
    Settings {
        listen: old.listen,
        workers: old.workers,
        run_dir: old.run_dir.clone(),
        control: old.control.clone(),
        backlog: old.backlog,
        admin: old.admin,
        redis: old.redis.clone(),
        ..fresh
    }
}
