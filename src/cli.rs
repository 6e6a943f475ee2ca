//! The command line (clap). Every `serve` option can also come from an environment
//! variable and from the TOML file named by `--config`; `config` merges them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

pub use crate::logging::LogFormat;
use wsfleet_worker::auth::settings::Algorithm;
use wsfleet_worker::auth::source::AuthMode;

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

/// The command line, with each fixed `serve` default ([`crate::defaults::shown`])
/// appended to its option's help as ` [DEFAULT]`.
pub fn command() -> clap::Command {
    let shown = crate::defaults::shown();
    Cli::command().mut_subcommand("serve", |serve| {
        // `mut_arg` moves an argument to the end: touch every one, in order, to keep the
        // help's order.
        let ids: Vec<clap::Id> = serve.get_arguments().map(|a| a.get_id().clone()).collect();
        ids.into_iter().fold(serve, |serve, id| {
            let default = shown.iter().find(|(name, _)| id == *name);
            serve.mut_arg(id, |arg| match default {
                Some((_, default)) => {
                    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                    arg.help(format!("{help} [{default}]"))
                }
                None => arg,
            })
        })
    })
}

/// Parses the process's arguments (exits with clap's message on a bad command line).
pub fn parse() -> Cli {
    Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit())
}

/// Options of `wsfleet serve`. Unset options fall back to the environment variable, then
/// the config file, then the built-in default (shown in brackets; the fixed ones are added
/// to the help by [`command`] from [`crate::defaults`]).
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of these options (keys are the long names with `_`); re-read on
    /// every reload.
    #[arg(long, env = "WSFLEET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address the workers serve on; port 0 picks a free port.
    #[arg(long, env = "WSFLEET_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Number of worker processes [available cores].
    #[arg(long, env = "WSFLEET_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Directory for the control socket and lock files; an existing one must be yours
    /// and not group/world-writable [/run/wsfleet (root), else $XDG_RUNTIME_DIR/wsfleet,
    /// else $HOME/.wsfleet].
    #[arg(long, env = "WSFLEET_RUN_DIR", value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Control socket path [<run-dir>/control.sock].
    #[arg(long, env = "WSFLEET_CONTROL", value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Seconds a draining worker keeps serving its clients before closing them with
    /// 1012.
    #[arg(long, env = "WSFLEET_DRAIN_TIMEOUT", value_name = "SECS", value_parser = seconds)]
    pub drain_timeout: Option<Duration>,
    /// Seconds a new worker has to report ready before a reload gives up.
    #[arg(long, env = "WSFLEET_READY_TIMEOUT", value_name = "SECS", value_parser = seconds)]
    pub ready_timeout: Option<Duration>,
    /// Accept-queue length of each slot's listening socket.
    #[arg(long, env = "WSFLEET_BACKLOG", value_name = "N")]
    pub backlog: Option<u32>,
    /// Messages the master may hold for one worker that is not reading its link; past
    /// it the worker counts as stalled and is killed and replaced.
    #[arg(long, env = "WSFLEET_IPC_QUEUE_LIMIT", value_name = "N")]
    pub ipc_queue_limit: Option<u64>,
    /// Bytes the master may hold for one worker that is not reading its link; past it
    /// the worker counts as stalled and is killed and replaced (one message always fits).
    #[arg(long, env = "WSFLEET_IPC_QUEUE_LIMIT_BYTES", value_name = "BYTES")]
    pub ipc_queue_limit_bytes: Option<u64>,
    /// Seconds a worker may leave the master's link heartbeat unanswered before it is
    /// killed and replaced; from half of it the worker is shown unresponsive and /ready
    /// answers 503.
    #[arg(long, env = "WSFLEET_WORKER_TIMEOUT", value_name = "SECS", value_parser = seconds)]
    pub worker_timeout: Option<Duration>,
    /// WebSocket connections per worker before upgrades get 503.
    #[arg(long, env = "WSFLEET_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Largest client message in bytes; larger ones are closed with 1009.
    #[arg(long, env = "WSFLEET_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Rooms one connection may be in at once.
    #[arg(long, env = "WSFLEET_MAX_ROOMS", value_name = "N")]
    pub max_rooms: Option<usize>,
    /// Bytes queued for one client before it is closed as a slow consumer (1013).
    #[arg(long, env = "WSFLEET_OUTBOX_LIMIT_BYTES", value_name = "BYTES")]
    pub outbox_limit_bytes: Option<usize>,
    /// Seconds between server pings.
    #[arg(long, env = "WSFLEET_PING_INTERVAL", value_name = "SECS", value_parser = seconds)]
    pub ping_interval: Option<Duration>,
    /// Seconds of client silence (pongs included) before it is closed.
    #[arg(long, env = "WSFLEET_PING_TIMEOUT", value_name = "SECS", value_parser = seconds)]
    pub ping_timeout: Option<Duration>,
    /// Seconds a client has to send its HTTP request headers.
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
    /// Requests per second one /ws connection may make; 0 = unlimited.
    #[arg(long, env = "WSFLEET_RATE_LIMIT", value_name = "N")]
    pub rate_limit: Option<u32>,
    /// Message bytes per second one /ws connection may send (burst of the same size, at
    /// least --max-message-bytes); past it the connection is closed with 1008; 0 = unlimited.
    #[arg(long, env = "WSFLEET_INBOUND_RATE_LIMIT_BYTES", value_name = "BYTES")]
    pub inbound_rate_limit_bytes: Option<u64>,
    /// Whether /ws clients may send `broadcast` (`on` or `off`; refused with the error
    /// code `forbidden` when off).
    #[arg(long, env = "WSFLEET_CLIENT_BROADCAST", value_name = "on|off", value_parser = on_off)]
    pub client_broadcast: Option<bool>,
    /// Whether permessage-deflate is negotiated with clients that offer it (`on` or
    /// `off`); messages are compressed once per worker, whatever the number of recipients.
    #[arg(long, env = "WSFLEET_COMPRESSION", value_name = "on|off", value_parser = on_off)]
    pub compression: Option<bool>,
    /// Smallest message payload in bytes sent compressed (smaller ones, and those that do
    /// not shrink, go plain); 0 compresses every message, even one that grows.
    #[arg(long, env = "WSFLEET_COMPRESSION_THRESHOLD", value_name = "BYTES")]
    pub compression_threshold: Option<usize>,
    /// Log level or filter, e.g. `info` or `wsfleet=debug` (RUST_LOG also works).
    #[arg(long, env = "WSFLEET_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log line format.
    #[arg(long, env = "WSFLEET_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Address of the master's admin HTTP listener (/metrics, /health, /ready), or `off`;
    /// port 0 picks a free port, shown in the ready line.
    #[arg(long, env = "WSFLEET_ADMIN", value_name = "ADDR|off", value_parser = admin_addr)]
    pub admin: Option<AdminAddr>,
    /// Address of the master's server API (HTTP, JSON; for the application's backend), or
    /// `off`; port 0 picks a free port, shown in the ready line. Needs a key: the first line
    /// of --api-key-file, or WSFLEET_API_KEY.
    #[arg(long, env = "WSFLEET_API", value_name = "ADDR|off", value_parser = admin_addr)]
    pub api: Option<AdminAddr>,
    /// File whose first line is the server API's key (never a flag value, which `ps`
    /// shows); the environment variable WSFLEET_API_KEY may hold the key itself instead.
    #[arg(long, env = "WSFLEET_API_KEY_FILE", value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Largest server API request body in bytes; larger ones get 413.
    #[arg(long, env = "WSFLEET_API_MAX_BODY_BYTES", value_name = "BYTES")]
    pub api_max_body_bytes: Option<usize>,
    /// Messages each room keeps for reconnecting clients (0 = history off); `[[namespace]]`
    /// tables in the config file override it per room-name pattern.
    #[arg(long, env = "WSFLEET_HISTORY_SIZE", value_name = "N")]
    pub history_size: Option<usize>,
    /// Seconds a message stays in a room's history.
    #[arg(long, env = "WSFLEET_HISTORY_TTL", value_name = "SECS", value_parser = seconds)]
    pub history_ttl: Option<Duration>,
    /// Bytes of history for all rooms together; past it the least recently published
    /// rooms lose their oldest messages first.
    #[arg(long, env = "WSFLEET_HISTORY_BUDGET_BYTES", value_name = "BYTES")]
    pub history_budget_bytes: Option<usize>,
    /// Longest gap (in messages) a join with `since` replays; a longer one answers
    /// `recovered:false`.
    #[arg(long, env = "WSFLEET_RECOVERY_MAX", value_name = "N")]
    pub recovery_max: Option<u64>,
    /// Connection tokens (JWT): `off` (every connection anonymous), `optional` (verified
    /// when given) or `required` (401 without a valid one).
    #[arg(long, env = "WSFLEET_AUTH", value_name = "off|optional|required", value_parser = auth_mode)]
    pub auth: Option<AuthMode>,
    /// Token signature algorithm: hs256 (shared secret), rs256 or es256 (public key).
    #[arg(long, env = "WSFLEET_AUTH_ALGORITHM", value_name = "ALG", value_parser = algorithm)]
    pub auth_algorithm: Option<Algorithm>,
    /// File holding the HS256 secret (at least 32 bytes) or the RS256/ES256 public key PEM.
    #[arg(long, env = "WSFLEET_AUTH_KEY_FILE", value_name = "FILE")]
    pub auth_key_file: Option<PathBuf>,
    /// Name of the environment variable holding the HS256 secret (instead of a file; the
    /// secret itself is never a flag value, which `ps` would show).
    #[arg(long, env = "WSFLEET_AUTH_SECRET_ENV", value_name = "VAR")]
    pub auth_secret_env: Option<String>,
    /// Comma-separated accepted token audiences (`aud`) [none: a token with `aud` is
    /// refused].
    #[arg(
        long,
        env = "WSFLEET_AUTH_AUDIENCE",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub auth_audience: Option<Vec<String>>,
    /// Comma-separated accepted token issuers (`iss`) [any].
    #[arg(
        long,
        env = "WSFLEET_AUTH_ISSUER",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub auth_issuer: Option<Vec<String>>,
    /// Seconds of clock skew allowed on a token's `exp` and `nbf` at the upgrade.
    #[arg(long, env = "WSFLEET_AUTH_LEEWAY", value_name = "SECS", value_parser = seconds)]
    pub auth_leeway: Option<Duration>,
    /// Seconds after a token's `exp` an open connection has to send a fresh one (after
    /// the `token_expiring` frame) before it is closed with 4001.
    #[arg(long, env = "WSFLEET_AUTH_REFRESH_GRACE", value_name = "SECS", value_parser = seconds)]
    pub auth_refresh_grace: Option<Duration>,
    /// WebSocket connections one user (token `sub`) may hold across the fleet; past it
    /// upgrades get 429; 0 = unlimited.
    #[arg(long, env = "WSFLEET_MAX_CONNECTIONS_PER_USER", value_name = "N")]
    pub max_connections_per_user: Option<u32>,
    /// WebSocket connections one client IP may hold across the fleet; past it upgrades get
    /// 429; 0 = unlimited.
    #[arg(long, env = "WSFLEET_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<u32>,
    /// WebSocket upgrades one client IP may make per minute per worker (burst of the same
    /// size); past it upgrades get 429; 0 = unlimited.
    #[arg(long, env = "WSFLEET_IP_CONNECTS_PER_MINUTE", value_name = "N")]
    pub ip_connects_per_minute: Option<u32>,
    /// Members up to which a room sends join/leave notices to its members; above it they get
    /// a coalesced count instead; `[[namespace]]` tables override it (and the mode: `presence
    /// = "auto"|"on"|"off"`) per room-name pattern.
    #[arg(long, env = "WSFLEET_PRESENCE_THRESHOLD", value_name = "N")]
    pub presence_threshold: Option<usize>,
    /// Least seconds between two member counts sent for one room above its threshold.
    #[arg(long, env = "WSFLEET_PRESENCE_INTERVAL", value_name = "SECS", value_parser = seconds)]
    pub presence_interval: Option<Duration>,
    /// Count frames a second one room's coalesced counts may cost: after a count to N
    /// members the next waits at least N / this many seconds (never less than the
    /// interval); 0 sends every room's count each interval, whatever its size.
    #[arg(long, env = "WSFLEET_PRESENCE_COUNT_RATE", value_name = "FRAMES")]
    pub presence_count_rate: Option<u32>,
    /// Redis URL for rooms across hosts (repeat it, or separate URLs with commas in the
    /// environment, to spread rooms over several instances by a hash of the room name);
    /// off by default: one host needs no broker.
    #[arg(long, env = "WSFLEET_REDIS", value_name = "URL", value_delimiter = ',')]
    pub redis: Vec<String>,
}

/// Parses `--auth`.
pub fn auth_mode(s: &str) -> Result<AuthMode, String> {
    s.parse()
}

/// Parses `--auth-algorithm`.
pub fn algorithm(s: &str) -> Result<Algorithm, String> {
    s.parse()
}

/// Where the admin listener (or the server API) binds, or that there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAddr {
    /// No listener.
    Off,
    /// Listen on this address.
    At(SocketAddr),
}

/// Parses a switch: `on` or `off`.
pub fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: use on or off")),
    }
}

/// Parses `--admin`: `off` or an address such as `127.0.0.1:9090`.
pub fn admin_addr(s: &str) -> Result<AdminAddr, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(AdminAddr::Off);
    }
    s.parse().map(AdminAddr::At).map_err(|_| {
        format!("{s:?} is neither `off` nor an address with a port such as 127.0.0.1:9090")
    })
}

/// Where the clients find the control socket.
#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    /// The master's run directory [/run/wsfleet (root), else $XDG_RUNTIME_DIR/wsfleet,
    /// else $HOME/.wsfleet].
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
    #[arg(long, default_value = crate::defaults::LOG_LEVEL)]
    pub log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = crate::defaults::LOG_FORMAT)]
    pub log_format: LogFormat,
}

/// The configuration reference (a Markdown table), generated from the `serve` options so
/// README.md cannot drift from the code: a unit test compares the two.
#[cfg(test)]
pub fn config_reference() -> String {
    let cli = command();
    let serve = cli.find_subcommand("serve").expect("serve exists");
    let mut out = String::from(
        "| flag | environment | TOML key | default | meaning |\n|---|---|---|---|---|\n",
    );
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" {
            continue;
        }
        let env = arg
            .get_env()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let (meaning, default) = match help.rfind(" [") {
            Some(i) if help.ends_with(']') => {
                (help[..i].to_owned(), help[i + 2..help.len() - 1].to_owned())
            }
            _ => (help.clone(), "none".to_owned()),
        };
        let key = if long == "config" {
            "—".to_owned()
        } else {
            format!("`{}`", long.replace('-', "_"))
        };
        out.push_str(&format!(
            "| `--{long}` | `{env}` | {key} | {} | {} |\n",
            default.replace('|', "\\|"),
            meaning.replace('|', "\\|").replace('\n', " ")
        ));
    }
    out
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

    #[test]
    fn cli_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn help_shows_the_defaults_from_the_defaults_module() {
        let cli = command();
        let serve = cli.find_subcommand("serve").unwrap();
        for (id, default) in crate::defaults::shown() {
            let arg = serve.get_arguments().find(|a| a.get_id() == id).unwrap();
            let help = arg.get_help().unwrap().to_string();
            assert!(help.ends_with(&format!(" [{default}]")), "--{id}: {help}");
            assert_eq!(help.matches(" [").count(), 1, "--{id}: {help}");
        }
        let ping = serve
            .get_arguments()
            .find(|a| a.get_id() == "ping_interval");
        assert!(
            ping.unwrap()
                .get_help()
                .unwrap()
                .to_string()
                .ends_with(" [20]")
        );
    }

    #[test]
    fn readme_config_reference_matches_the_cli() {
        let readme = include_str!("../README.md");
        let start = "<!-- config-reference:start -->\n";
        let end = "<!-- config-reference:end -->";
        let (Some(a), Some(b)) = (readme.find(start), readme.find(end)) else {
            panic!("README.md lacks the config-reference markers");
        };
        let documented = &readme[a + start.len()..b];
        let generated = config_reference();
        if documented != generated && std::env::var_os("WSFLEET_UPDATE_README").is_some() {
            let updated = format!("{}{generated}{}", &readme[..a + start.len()], &readme[b..]);
            std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"), updated).unwrap();
            return;
        }
        assert!(
            documented == generated,
            "README.md's configuration reference is out of date: run `WSFLEET_UPDATE_README=1 cargo test readme_config` and commit README.md. Expected:\n{generated}"
        );
    }

    #[test]
    fn admin_parses() {
        assert_eq!(admin_addr("off"), Ok(AdminAddr::Off));
        assert_eq!(
            admin_addr("127.0.0.1:0"),
            Ok(AdminAddr::At("127.0.0.1:0".parse().unwrap()))
        );
        assert!(admin_addr("localhost").is_err());
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(seconds("-1").is_err());
        assert!(seconds("soon").is_err());
    }
}
