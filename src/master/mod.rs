//! The master: owns the listening sockets and the run directory, starts and supervises
//! one worker per slot, relays rooms between them, handles signals and the control socket.
//!
//! Lifecycle: `Starting` (sockets bound, workers spawned, waiting for every slot to be
//! ready, then the ready line) → `Running` (supervision, reloads) → `Stopping` (drain or
//! kill, wait for every worker, remove the socket files) → exit.

mod admin;
mod backoff;
mod control;
mod fleet;
mod limits;
mod listeners;
mod metrics;
mod procfs;
mod relay;
mod reload;
mod rundir;
mod signals;
mod spawn;
mod stats;

use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::LocalSet;
use tokio::time::Instant;

use crate::cli::ServeArgs;
use crate::config::Settings;
use fleet::{Master, Phase};

/// Consecutive failures of one slot during start-up after which the master gives up.
const STARTUP_FAILURES: u32 = 3;

/// What the main loop is asked to do (by signals or the control socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterCmd {
    /// Rolling restart.
    Reload,
    /// Stop the fleet; `now` skips draining.
    Stop {
        /// Kill instead of drain.
        now: bool,
    },
    /// SIGINT: the first one stops gracefully, the second at once.
    Interrupt,
    /// Everything stopped: leave the loop.
    Exit,
}

/// Runs the master in the foreground until it is stopped.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(&args)?;
    crate::logging::init(&settings.log_level, settings.log_format, None)?;
    limits::check(
        settings.worker.max_connections,
        settings.workers,
        settings.backlog,
    );
    let run_dir = rundir::RunDir::claim(&settings.run_dir, &settings.control)?;
    let sockets = listeners::bind(settings.listen, settings.workers, settings.backlog)?;
    let admin = settings.admin.map(admin::bind).transpose()?;
    let listen = sockets[0]
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .context("listening socket has no address")?;
    let exe = std::env::current_exe().context("cannot find the path of the wsfleet binary")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the master's runtime")?;
    let result =
        LocalSet::new().block_on(&runtime, serve(settings, args, exe, sockets, listen, admin));
    run_dir.remove_lock_file();
    result
}

async fn serve(
    settings: Settings,
    args: ServeArgs,
    exe: std::path::PathBuf,
    sockets: Vec<socket2::Socket>,
    listen: std::net::SocketAddr,
    admin: Option<std::net::TcpListener>,
) -> anyhow::Result<()> {
    let admin = admin
        .map(tokio::net::TcpListener::from_std)
        .transpose()
        .context("cannot use the admin listener")?;
    let admin_addr = match &admin {
        Some(l) => l
            .local_addr()
            .context("admin listener has no address")?
            .to_string(),
        None => "off".to_owned(),
    };
    let control_path = settings.control.clone();
    let (control, _control_file) = control::bind(&control_path).with_context(|| {
        format!(
            "cannot create the control socket {}",
            control_path.display()
        )
    })?;
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
    signals::forward(cmd_tx.clone()).context("cannot install signal handlers")?;
    let workers = settings.workers;
    let master = Rc::new(Master::new(settings, args, exe, sockets, listen));
    for slot in 0..workers as u32 {
        if let Err(e) = master.start_worker(slot, false) {
            master.kill_all();
            anyhow::bail!("{e}");
        }
    }
    let sampler = master.clone();
    tokio::task::spawn_local(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            sampler.sample_processes();
            sampler.kill_stalled();
        }
    });
    tokio::task::spawn_local(control::serve(control, master.clone(), cmd_tx.clone()));
    if let Some(admin) = admin {
        // Up before the workers are ready: /health answers and /ready says 503 meanwhile.
        tokio::task::spawn_local(admin::serve(admin, master.clone()));
    }
    tokio::select! {
        started = wait_started(&master) => if let Err(e) = started {
            master.state.borrow_mut().phase = Phase::Stopping;
            master.kill_all();
            wait_stopped(&master, Duration::from_secs(3)).await;
            return Err(e);
        },
        cmd = cmd_rx.recv() => {
            tracing::warn!(?cmd, "stopped while starting");
            master.state.borrow_mut().phase = Phase::Stopping;
            master.kill_all();
            wait_stopped(&master, Duration::from_secs(3)).await;
            return Ok(());
        }
    }
    master.state.borrow_mut().phase = Phase::Running;
    let mut out = std::io::stdout().lock();
    // Fields are only ever appended: scripts parse `listen=` and `control=`.
    writeln!(
        out,
        "wsfleet ready listen={listen} workers={workers} control={} admin={admin_addr}",
        control_path.display()
    )?;
    out.flush()?;
    drop(out);
    tracing::info!(%listen, workers, control = %control_path.display(), admin = %admin_addr, "fleet ready");

    let mut stopping = false;
    while let Some(cmd) = cmd_rx.recv().await {
        match cmd {
            MasterCmd::Reload if !stopping => {
                let master = master.clone();
                tokio::task::spawn_local(async move {
                    super::master::reload::reload(&master).await;
                });
            }
            MasterCmd::Reload => tracing::warn!("ignoring a reload while stopping"),
            MasterCmd::Stop { now: false } | MasterCmd::Interrupt if !stopping => {
                stopping = true;
                tracing::info!("stopping: draining every worker");
                master.state.borrow_mut().phase = Phase::Stopping;
                master.drain_all();
                let (master, tx) = (master.clone(), cmd_tx.clone());
                tokio::task::spawn_local(async move {
                    let grace = master.settings().drain_timeout;
                    if !wait_stopped(&master, grace + Duration::from_secs(10)).await {
                        tracing::warn!("workers still alive after the drain period; killing them");
                        master.kill_all();
                        wait_stopped(&master, Duration::from_secs(3)).await;
                    }
                    let _ = tx.send(MasterCmd::Exit);
                });
            }
            MasterCmd::Stop { now: false } => tracing::info!("already stopping"),
            MasterCmd::Stop { now: true } | MasterCmd::Interrupt => {
                tracing::warn!("stopping now: killing every worker");
                master.state.borrow_mut().phase = Phase::Stopping;
                master.kill_all();
                wait_stopped(&master, Duration::from_secs(3)).await;
                break;
            }
            MasterCmd::Exit => break,
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Waits until every slot has a ready worker; fails if a slot keeps crashing first.
async fn wait_started(master: &Master) -> anyhow::Result<()> {
    let mut changed = master.changed.subscribe();
    let deadline = Instant::now() + master.settings().ready_timeout * 3;
    loop {
        changed.borrow_and_update();
        {
            let st = master.state.borrow();
            let all_ready = st.slots.iter().all(|s| {
                s.current
                    .and_then(|k| st.workers.get(&k))
                    .is_some_and(|w| w.state == fleet::WorkerState::Ready)
            });
            if all_ready {
                return Ok(());
            }
            if let Some((i, s)) = st
                .slots
                .iter()
                .enumerate()
                .find(|(_, s)| s.backoff.failures >= STARTUP_FAILURES)
            {
                anyhow::bail!(
                    "the worker for slot {i} failed to start {} times (last: {}); see the log lines above",
                    s.backoff.failures,
                    s.last_exit.as_deref().unwrap_or("unknown")
                );
            }
        }
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            anyhow::bail!(
                "workers were not all ready within {:?}; see the log lines above",
                master.settings().ready_timeout * 3
            );
        }
    }
}

/// Waits until no worker process is left; false on timeout.
async fn wait_stopped(master: &Master, limit: Duration) -> bool {
    let mut changed = master.changed.subscribe();
    let deadline = Instant::now() + limit;
    loop {
        changed.borrow_and_update();
        if master.state.borrow().workers.is_empty() {
            return true;
        }
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            return false;
        }
    }
}
