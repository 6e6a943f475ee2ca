//! Rolling restart, one slot at a time: start the slot's new worker on the same
//! listening socket, wait until it is ready, then let the old one drain. A new worker that
//! is not ready in time (or dies) stops the reload; every slot not yet replaced keeps its
//! old worker, so the fleet keeps serving.

use std::rc::Rc;

use tokio::time::Instant;

use super::fleet::{Master, Phase};
use crate::config::Settings;
use crate::control_api::{ReloadReport, SlotOutcome};

/// Re-reads the config and replaces every worker.
pub async fn reload(master: &Rc<Master>) -> ReloadReport {
    let t0 = Instant::now();
    {
        let mut st = master.state.borrow_mut();
        if st.reloading {
            return ReloadReport {
                ok: false,
                error: Some("a reload is already in progress; wait for it to finish".into()),
                ..Default::default()
            };
        }
        if st.phase != Phase::Running {
            return ReloadReport {
                ok: false,
                error: Some("the fleet is not running (starting or stopping); try again".into()),
                ..Default::default()
            };
        }
        st.reloading = true;
        st.reloads += 1;
    }
    tracing::info!("reload: re-reading settings and replacing workers one slot at a time");
    let mut report = run(master).await;
    report.duration_ms = t0.elapsed().as_millis() as u64;
    {
        let mut st = master.state.borrow_mut();
        st.reloading = false;
        st.last_reload_ok = Some(report.ok);
    }
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
    report
}

async fn run(master: &Rc<Master>) -> ReloadReport {
    if let Err(e) = apply_settings(master) {
        return ReloadReport {
            ok: false,
            error: Some(e),
            ..Default::default()
        };
    }
    let settings = master.settings();
    let mut slots = Vec::new();
    for slot in 0..settings.workers as u32 {
        if master.state.borrow().phase != Phase::Running {
            return ReloadReport {
                ok: false,
                error: Some("the fleet began stopping".into()),
                slots,
                duration_ms: 0,
            };
        }
        let mut outcome = SlotOutcome {
            slot,
            ..Default::default()
        };
        let (key, ready) = match master.start_worker(slot, true) {
            Ok(started) => started,
            Err(e) => {
                outcome.error = Some(e.clone());
                slots.push(outcome);
                return ReloadReport {
                    ok: false,
                    error: Some(e),
                    slots,
                    duration_ms: 0,
                };
            }
        };
        {
            let st = master.state.borrow();
            if let Some(w) = st.workers.get(&key) {
                outcome.new_pid = Some(w.pid);
                outcome.generation = w.generation;
            }
        }
        let failure = match tokio::time::timeout(settings.ready_timeout, ready).await {
            Ok(Ok(Ok(took))) => {
                outcome.ready_ms = Some(took.as_millis() as u64);
                outcome.old_pid = master.promote(key);
                outcome.ok = true;
                tracing::info!(
                    slot,
                    new_pid = outcome.new_pid,
                    old_pid = outcome.old_pid,
                    "reload: slot replaced; old worker draining"
                );
                None
            }
            Ok(Ok(Err(why))) => Some(why),
            Ok(Err(_)) => Some("the new worker vanished before it was ready".to_owned()),
            Err(_) => {
                master.kill(key);
                Some(format!(
                    "the new worker was not ready within {:?}; killed it",
                    settings.ready_timeout
                ))
            }
        };
        if let Some(why) = failure {
            outcome.error = Some(why.clone());
            slots.push(outcome);
            let error = format!("slot {slot}: {why}");
            return ReloadReport {
                ok: false,
                error: Some(error),
                slots,
                duration_ms: 0,
            };
        }
        slots.push(outcome);
    }
    ReloadReport {
        ok: true,
        error: None,
        slots,
        duration_ms: 0,
    }
}

/// Re-resolves settings from the command line, environment and config file. What the
/// running master cannot change (listen address, worker count, paths) is kept, with a
/// warning; everything else applies to the workers this reload starts.
fn apply_settings(master: &Master) -> Result<(), String> {
    let fresh =
        Settings::resolve(&master.args).map_err(|e| format!("settings not reloaded: {e}"))?;
    let mut st = master.state.borrow_mut();
    let old = &st.settings;
    for (what, changed) in [
        ("listen", fresh.listen != old.listen),
        ("workers", fresh.workers != old.workers),
        ("run_dir", fresh.run_dir != old.run_dir),
        ("control", fresh.control != old.control),
        ("backlog", fresh.backlog != old.backlog),
        ("admin", fresh.admin != old.admin),
    ] {
        if changed {
            tracing::warn!(
                "reload: a change of `{what}` needs a restart of the master; keeping the current value"
            );
        }
    }
    let merged = Settings {
        listen: old.listen,
        workers: old.workers,
        run_dir: old.run_dir.clone(),
        control: old.control.clone(),
        backlog: old.backlog,
        admin: old.admin,
        ..fresh
    };
    st.settings = Rc::new(merged);
    Ok(())
}
