//! The master: owns the listening sockets and the run directory, starts and supervises
//! one worker per slot, relays rooms between them, handles signals and the control socket.
//!
//! One event loop owns the fleet: [`supervisor::Supervisor`] holds the state by value
//! and handles one [`events::Event`] at a time. Everything else only sends it events —
//! the worker link tasks (`link`), the signal thread (`signals`), the control socket
//! (`control`), the admin listener (`admin`) and the server API (`api`) through a [`handle::Handle`] — and the
//! driver here feeds it those events and timer ticks until its phase is `Stopped`.
//!
//! Lifecycle: `Starting` (sockets bound, workers spawned, waiting for every slot to be
//! ready, then the ready line) → `Running` (supervision, reloads) → `Stopping` (drain or
//! kill, wait for every worker) → `Stopped` (remove the socket files, exit).

mod admin;
mod admissions;
mod api;
mod backoff;
mod control;
mod events;
mod handle;
mod history;
mod limits;
mod link;
mod listeners;
mod members;
mod metrics;
pub(crate) mod presence;
mod readiness;
mod recall;
mod redis;
mod relay;
mod rooms;
mod rundir;
mod sampling;
mod signals;
mod spawn;
mod spawner;
mod state;
mod stats;
mod supervisor;
mod view;

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::LocalSet;
use tokio::time::Instant;

use crate::cli::ServeArgs;
use crate::config::Settings;
use state::Phase;
use supervisor::Supervisor;

/// How often /proc is sampled and stalled workers are looked for.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

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
    let api = settings
        .api
        .as_ref()
        .map(|a| api::bind(a.addr))
        .transpose()?;
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
    // The loop runs as a local task like the link and control tasks, so the LocalSet
    // schedules them all alike.
    let result = LocalSet::new().block_on(&runtime, async move {
        tokio::task::spawn_local(serve(settings, args, exe, sockets, listen, admin, api))
            .await
            .context("the master's loop panicked")?
    });
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
    api: Option<std::net::TcpListener>,
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
    let api = api
        .map(tokio::net::TcpListener::from_std)
        .transpose()
        .context("cannot use the server API listener")?;
    let api_addr = match &api {
        Some(l) => l
            .local_addr()
            .context("server API listener has no address")?
            .to_string(),
        None => "off".to_owned(),
    };
    let api_settings = settings.api.clone();
    let control_path = settings.control.clone();
    let (control, _control_file) = control::bind(&control_path).with_context(|| {
        format!(
            "cannot create the control socket {}",
            control_path.display()
        )
    })?;
    let (events, mut inbox) = mpsc::unbounded_channel();
    signals::forward(events.clone()).context("cannot install signal handlers")?;
    let workers = settings.workers;
    let (new_links, mut new_link) = mpsc::unbounded_channel();
    let spawner = spawner::ProcessSpawner::new(exe, sockets, events.clone(), new_links);
    let resolve: supervisor::Resolve =
        Box::new(move || Settings::resolve(&args).map_err(|e| e.to_string()));
    let redis_engine = (!settings.redis.is_empty())
        .then(|| {
            let h = &settings.history;
            redis::Engine::start(
                &settings.redis,
                h.namespaces.clone(),
                h.recovery_max,
                &events,
            )
        })
        .transpose()?;
    let mut sup = Supervisor::new(spawner, settings, resolve, listen, Instant::now());
    if let Some(engine) = redis_engine {
        sup.attach_redis(engine);
    }
    let handle = handle::Handle::new(events);
    tokio::task::spawn_local(control::serve(control, handle.clone()));
    if let Some((api, settings)) = api.zip(api_settings) {
        // Up before the workers are ready: it answers 503 meanwhile.
        tokio::task::spawn_local(api::serve(api, handle.clone(), settings));
    }
    if let Some(admin) = admin {
        // Up before the workers are ready: /health answers and /ready says 503 meanwhile.
        tokio::task::spawn_local(admin::serve(admin, handle));
    }
    // The loop and the ready line follow the phase the supervisor publishes.
    let phase = sup.subscribe();
    sup.start(Instant::now());
    let mut announced = false;
    let mut next_sample = Instant::now() + SAMPLE_EVERY;
    // Every worker's link reader, polled by this task itself: a relayed message goes
    // from the worker's socket to the other workers' queues without a task hop.
    let mut links = futures_util::stream::SelectAll::new();
    let timer = tokio::time::sleep_until(next_sample);
    tokio::pin!(timer);
    while *phase.borrow() != Phase::Stopped {
        let wake = sup
            .next_deadline()
            .map_or(next_sample, |d| d.min(next_sample));
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            event = inbox.recv() => match event {
                Some(event) => sup.handle(event, Instant::now()),
                None => break,
            },
            Some(event) = links.next(), if !links.is_empty() => sup.handle(event, Instant::now()),
            Some(link) = new_link.recv() => links.push(link),
            () = &mut timer => {
                let now = Instant::now();
                if now >= next_sample {
                    next_sample = now + SAMPLE_EVERY;
                }
                sup.handle(events::Event::Tick, now);
                // An elapsed timer stays ready: arm it anew even if the wake time repeats.
                timer.as_mut().reset(next_sample);
            }
        }
        if !announced && *phase.borrow() == Phase::Running {
            announced = true;
            let mut out = std::io::stdout().lock();
            // Fields are only ever appended: scripts parse `listen=` and `control=`.
            writeln!(
                out,
                "wsfleet ready listen={listen} workers={workers} control={} admin={admin_addr} api={api_addr}",
                control_path.display()
            )?;
            out.flush()?;
            drop(out);
            tracing::info!(%listen, workers, control = %control_path.display(), admin = %admin_addr, api = %api_addr, "fleet ready");
        }
    }
    match sup.failure() {
        Some(why) => anyhow::bail!("{why}"),
        None => Ok(()),
    }
}
