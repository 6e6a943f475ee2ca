//! The `wsfleet` binary: one command line for the master (`serve`), its clients
//! (`stats`, `reload`, `stop`), the load tester (`bench`) and the hidden `worker` entry
//! the master re-executes for every worker process.
//!
//! # Layout
//! - `cli`: the command line (clap), and how options merge with env vars and the TOML file.
//! - `master/`: the supervisor: listening sockets, worker processes, signals, relay,
//!   control socket.
//! - `client`: `stats`, `reload`, `stop` — talk to the control socket.
//! - `bench/`: `wsfleet bench`.
//! - The worker itself lives in the `wsfleet-worker` crate (`workers/`).

mod bench;
mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        Some(cli::Command::Bench(args)) => exit(bench::run(args)),
        _ => exit(Err(anyhow::anyhow!("not wired yet"))),
    }
}

fn exit(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsfleet: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
