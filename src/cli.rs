//! The command line.

use clap::{Parser, Subcommand};

/// wsfleet: a multi-core WebSocket server.
#[derive(Debug, Parser)]
#[command(name = "wsfleet", version, about)]
pub struct Cli {
    /// What to do; bare `wsfleet` is `wsfleet serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load-test a WebSocket server (wsfleet or any server speaking its protocol).
    Bench(crate::bench::BenchArgs),
}
