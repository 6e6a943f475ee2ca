//! The `wsfleet` binary: one command line for the master (`serve`), its clients
//! (`stats`, `reload`, `stop`), the load tester (`bench`) and the hidden `worker` entry
//! the master re-executes for every worker process.
//!
//! # Layout
//! - `cli`: the command line (clap); `config`: how options merge with env vars and the
//!   TOML file; `defaults`: every default, once (config, help and README read it).
//! - `master/`: the supervisor: listening sockets, worker processes, relay, signals,
//!   control socket.
//! - `control_api`: the control socket's JSON messages; `client`: `stats`, `reload`,
//!   `stop`.
//! - `bench/`: `wsfleet bench`.
//! - `logging`: tracing setup for master and workers; `allocator`: jemalloc decay, so idle
//!   processes give memory back.
//! - `namespaces`: per-room options (history, later presence and permissions) by room-name
//!   pattern from the config file.
//! - `sys/`: /proc sampling and the open-file limit, shared by the master and the bench.
//! - The worker itself lives in the `wsfleet-worker` crate (`workers/`).

mod allocator;
mod auth_config;
mod bench;
mod cli;
mod client;
mod config;
mod control_api;
mod defaults;
mod logging;
mod master;
// Not wired into the config yet (issue 10, part 1): the wiring task removes the allow.
#[allow(dead_code)]
mod namespaces;
mod sys;

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Err(e) = allocator::give_back_when_idle() {
        eprintln!(
            "wsfleet: warning: cannot tune the allocator ({e}); memory taken in a spike may not be returned when idle"
        );
    }
    let cli = cli::parse();
    let result = match cli.command {
        None => master::run(cli::ServeArgs::default()),
        Some(cli::Command::Serve(args)) => master::run(*args),
        Some(cli::Command::Stats(args)) => client::stats(args),
        Some(cli::Command::Reload(args)) => client::reload(args),
        Some(cli::Command::Stop(args)) => client::stop(args),
        Some(cli::Command::Bench(args)) => bench::run(args),
        Some(cli::Command::Worker(args)) => worker(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsfleet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A worker process: it obeys its master only, so the terminal's SIGINT (sent to the
/// whole process group on Ctrl-C) and a stray SIGTERM or SIGHUP do not stop it; the
/// master drains it, or it exits when the master's link closes.
fn worker(args: cli::WorkerCliArgs) -> anyhow::Result<()> {
    let identity = logging::WorkerIdentity {
        slot: args.slot,
        pid: std::process::id(),
        generation: args.generation,
    };
    logging::init(&args.log_level, args.log_format, Some(identity))?;
    let ignored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, ignored.clone())?;
    }
    let span = tracing::info_span!(
        "worker",
        slot = identity.slot,
        pid = identity.pid,
        generation = identity.generation
    );
    let _entered = span.enter();
    wsfleet_worker::run(wsfleet_worker::WorkerArgs {
        slot: args.slot,
        generation: args.generation,
        listen_fd: args.listen_fd,
        ipc_fd: args.ipc_fd,
    })?;
    Ok(())
}

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
