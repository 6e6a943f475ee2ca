//! The command line (clap). Every `serve` option can also come from an environment
//! variable and from the TOML file named by `--config`; [`crate::config`] merges them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// wsfleet: one master, one worker per core, one port — a multi-core WebSocket server.
#[derive(Debug, Parser)]
#[command(name = "wsfleet", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do; bare `wsfleet` is `wsfleet serve` on its defaults.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the master and its workers in the foreground (the default).
    Serve(Box<ServeArgs>),
    /// Show live per-worker figures from a running master.
    Stats(StatsArgs),
    /// Rolling restart, one slot at a time (like SIGHUP, but waits and reports).
    Reload(ControlArgs),
    /// Stop a running master: drain every worker, then exit.
    Stop(StopArgs),
    /// Load-test a WebSocket server (wsfleet, or any server speaking its protocol).
    Bench(crate::bench::BenchArgs),
    /// Internal: one worker process, started by the master.
    #[command(hide = true)]
    Worker(WorkerCliArgs),
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Options of `wsfleet serve`. Unset options fall back to the environment variable, then
/// the config file, then the built-in default (shown in brackets).
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of these options (keys are the long names with `_`); re-read on
    /// every reload.
    #[arg(long, env = "WSFLEET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address the workers serve on; port 0 picks a free port [0.0.0.0:8080].
    #[arg(long, env = "WSFLEET_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Number of worker processes [available cores].
    #[arg(long, env = "WSFLEET_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Directory for the control socket and lock file [$XDG_RUNTIME_DIR/wsfleet or
    /// /tmp/wsfleet-$UID].
    #[arg(long, env = "WSFLEET_RUN_DIR", value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Control socket path [<run-dir>/control.sock].
    #[arg(long, env = "WSFLEET_CONTROL", value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Seconds a draining worker keeps serving its clients before closing them with
    /// 1012 [5].
    #[arg(long, env = "WSFLEET_DRAIN_TIMEOUT", value_name = "SECS", value_parser = seconds)]
    pub drain_timeout: Option<Duration>,
    /// Seconds a new worker has to report ready before a reload gives up [10].
    #[arg(long, env = "WSFLEET_READY_TIMEOUT", value_name = "SECS", value_parser = seconds)]
    pub ready_timeout: Option<Duration>,
    /// Accept-queue length of each slot's listening socket [4096].
    #[arg(long, env = "WSFLEET_BACKLOG", value_name = "N")]
    pub backlog: Option<u32>,
    /// WebSocket connections per worker before upgrades get 503 [50000].
    #[arg(long, env = "WSFLEET_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Largest client message in bytes; larger ones are closed with 1009 [65536].
    #[arg(long, env = "WSFLEET_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Rooms one connection may be in at once [64].
    #[arg(long, env = "WSFLEET_MAX_ROOMS", value_name = "N")]
    pub max_rooms: Option<usize>,
    /// Bytes queued for one client before it is closed as a slow consumer (1013)
    /// [1048576].
    #[arg(long, env = "WSFLEET_OUTBOX_LIMIT_BYTES", value_name = "BYTES")]
    pub outbox_limit_bytes: Option<usize>,
    /// Seconds between server pings [20].
    #[arg(long, env = "WSFLEET_PING_INTERVAL", value_name = "SECS", value_parser = seconds)]
    pub ping_interval: Option<Duration>,
    /// Seconds of client silence (pongs included) before it is closed [45].
    #[arg(long, env = "WSFLEET_PING_TIMEOUT", value_name = "SECS", value_parser = seconds)]
    pub ping_timeout: Option<Duration>,
    /// Seconds a client has to send its HTTP request headers [5].
    #[arg(long, env = "WSFLEET_HANDSHAKE_TIMEOUT", value_name = "SECS", value_parser = seconds)]
    pub handshake_timeout: Option<Duration>,
    /// Comma-separated Origins allowed to open WebSockets; others get 403 [any].
    #[arg(
        long,
        env = "WSFLEET_ALLOWED_ORIGINS",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,
    /// Requests per second one /ws connection may make; 0 = unlimited [1000].
    #[arg(long, env = "WSFLEET_RATE_LIMIT", value_name = "N")]
    pub rate_limit: Option<u32>,
    /// Log level or filter, e.g. `info` or `wsfleet=debug` (RUST_LOG also works) [info].
    #[arg(long, env = "WSFLEET_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log line format [text].
    #[arg(long, env = "WSFLEET_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// Where the clients find the control socket.
#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    /// The master's run directory [$XDG_RUNTIME_DIR/wsfleet or /tmp/wsfleet-$UID].
    #[arg(long, env = "WSFLEET_RUN_DIR", value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Control socket path [<run-dir>/control.sock].
    #[arg(long, env = "WSFLEET_CONTROL", value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// The master's config file, if it sets `run_dir` or `control`.
    #[arg(long, env = "WSFLEET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Options of `wsfleet stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// Where the master is.
    #[command(flatten)]
    pub control: ControlArgs,
    /// Print the raw JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Refresh every SECS seconds until interrupted.
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub watch: Option<Duration>,
}

/// Options of `wsfleet stop`.
#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// Where the master is.
    #[command(flatten)]
    pub control: ControlArgs,
    /// Stop at once: kill the workers without draining.
    #[arg(long)]
    pub now: bool,
}

/// Options of the hidden `worker` subcommand (set by the master).
#[derive(Debug, Clone, Args)]
pub struct WorkerCliArgs {
    /// The slot served.
    #[arg(long)]
    pub slot: u32,
    /// The slot's incarnation.
    #[arg(long)]
    pub generation: u64,
    /// Inherited listening socket.
    #[arg(long)]
    pub listen_fd: i32,
    /// Inherited IPC socket.
    #[arg(long)]
    pub ipc_fd: i32,
    /// Log filter.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Parses a number of seconds (fractions allowed) into a `Duration`.
pub fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{s:?} is not a non-negative number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(seconds("-1").is_err());
        assert!(seconds("soon").is_err());
    }
}
