//! The master's settings: command line over environment over config file over defaults.
//!
//! clap already puts a command-line value over its environment variable; this module
//! adds the TOML file under both and the defaults ([`crate::defaults`]) under everything. The file is re-read on
//! every reload, so worker settings can change without a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use wsfleet_worker::ipc::WorkerSettings;

use crate::cli::{AdminAddr, ControlArgs, LogFormat, ServeArgs};
use crate::defaults;
use crate::master::presence::Pacing;
use crate::namespaces::{
    HistoryOptions, MAX_HISTORY_SIZE, MAX_HISTORY_TTL, NamespaceSpec, Namespaces, PresenceMode,
    PresenceOptions, RoomOptions,
};

/// Largest `max_message_bytes` allowed: a publish of that size must still fit in one
/// IPC frame together with its room name and envelope.
pub const MAX_MESSAGE_BYTES: usize = wsfleet_worker::ipc::MAX_FRAME_BYTES - 64 * 1024;

/// The shortest `worker_timeout`: the heartbeat runs every second, and a worker is shown
/// unresponsive from half the timeout, so anything shorter would flag live workers.
pub const MIN_WORKER_TIMEOUT: Duration = Duration::from_secs(2);

/// The resolved settings of a master.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where the workers listen.
    pub listen: SocketAddr,
    /// How many worker slots.
    pub workers: usize,
    /// Directory for the lock file and (by default) the control socket.
    pub run_dir: PathBuf,
    /// Control socket path.
    pub control: PathBuf,
    /// The config file these came from, if any (re-read on reload).
    pub config: Option<PathBuf>,
    /// How long a draining worker serves its clients before closing them.
    pub drain_timeout: Duration,
    /// How long a new worker has to report ready.
    pub ready_timeout: Duration,
    /// Accept queue length per listening socket.
    pub backlog: u32,
    /// Messages queued for one worker before the master kills it as stalled.
    pub ipc_queue_limit: u64,
    /// Bytes queued for one worker before the master kills it as stalled (what bounds
    /// the master's memory; the message count only guards against floods of tiny ones).
    pub ipc_queue_limit_bytes: u64,
    /// Heartbeat silence after which a worker is killed and replaced.
    pub worker_timeout: Duration,
    /// Log filter.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// The admin HTTP listener's address (None: off). Read at start only.
    pub admin: Option<SocketAddr>,
    /// The server API (None: off). Read at start only.
    pub api: Option<ApiSettings>,
    /// What the workers get in `Start`.
    pub worker: WorkerSettings,
    /// Room history: per-room options (history and presence) and the master-wide limits.
    pub history: HistorySettings,
    /// How often a room above its presence threshold gets a member count.
    pub presence_pacing: Pacing,
    /// Redis instances for rooms across hosts (empty: off). Read at start only.
    pub redis: Vec<String>,
}

/// The server API's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The key every request must carry.
    pub key: ApiKey,
    /// Largest request body (413 past it).
    pub max_body_bytes: usize,
}

/// The server API's key; `Debug` does not show it, so settings can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(pub String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// The environment variable that may hold the server API's key itself.
pub const API_KEY_ENV: &str = "WSFLEET_API_KEY";

/// Shortest API key accepted: anything shorter is guessable.
pub const MIN_API_KEY_BYTES: usize = 16;

/// The master's history settings (re-read on reload like the rest).
#[derive(Debug, Clone, PartialEq)]
pub struct HistorySettings {
    /// Per-room size and TTL: the `[[namespace]]` tables over the global defaults.
    pub namespaces: Namespaces,
    /// Bytes of history for all rooms together.
    pub budget_bytes: usize,
    /// Longest gap a join with `since` replays.
    pub recovery_max: u64,
}

/// Why settings could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation (line, key, expected type).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// The config file: the same options as `wsfleet serve`, snake_case keys, durations in
/// seconds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub workers: Option<usize>,
    pub run_dir: Option<PathBuf>,
    pub control: Option<PathBuf>,
    pub drain_timeout: Option<f64>,
    pub ready_timeout: Option<f64>,
    pub backlog: Option<u32>,
    pub ipc_queue_limit: Option<u64>,
    pub ipc_queue_limit_bytes: Option<u64>,
    pub worker_timeout: Option<f64>,
    pub max_connections: Option<usize>,
    pub max_message_bytes: Option<usize>,
    pub max_rooms: Option<usize>,
    pub outbox_limit_bytes: Option<usize>,
    pub ping_interval: Option<f64>,
    pub ping_timeout: Option<f64>,
    pub handshake_timeout: Option<f64>,
    pub allowed_origins: Option<Vec<String>>,
    pub rate_limit: Option<u32>,
    pub inbound_rate_limit_bytes: Option<u64>,
    pub client_broadcast: Option<String>,
    pub compression: Option<String>,
    pub compression_threshold: Option<usize>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub admin: Option<String>,
    pub api: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub api_max_body_bytes: Option<usize>,
    pub history_size: Option<usize>,
    pub history_ttl: Option<f64>,
    pub history_budget_bytes: Option<usize>,
    pub recovery_max: Option<u64>,
    pub auth: Option<String>,
    pub auth_algorithm: Option<String>,
    pub auth_key_file: Option<PathBuf>,
    pub auth_secret_env: Option<String>,
    pub auth_audience: Option<Vec<String>>,
    pub auth_issuer: Option<Vec<String>>,
    pub auth_leeway: Option<f64>,
    pub auth_refresh_grace: Option<f64>,
    pub max_connections_per_user: Option<u32>,
    pub max_connections_per_ip: Option<u32>,
    pub ip_connects_per_minute: Option<u32>,
    pub presence_threshold: Option<usize>,
    pub presence_interval: Option<f64>,
    pub presence_count_rate: Option<u32>,
    pub redis: Option<Vec<String>>,
    /// `[[namespace]]` tables, validated by [`Namespaces::from_specs`].
    #[serde(default)]
    pub namespace: Vec<NamespaceSpec>,
}

impl FileConfig {
    /// Reads `path`, or returns an empty config when there is no file.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

/// The default run directory, one no other user can pre-create: `/run/wsfleet` for root,
/// else `$XDG_RUNTIME_DIR/wsfleet`, else `$HOME/.wsfleet`; `/tmp/wsfleet-$UID` only with
/// neither set (the master then refuses it unless it is ours and private).
pub fn default_run_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        PathBuf::from("/run/wsfleet")
    } else if let Some(dir) = var("XDG_RUNTIME_DIR") {
        PathBuf::from(dir).join("wsfleet")
    } else if let Some(home) = var("HOME") {
        PathBuf::from(home).join(".wsfleet")
    } else {
        PathBuf::from(format!("/tmp/wsfleet-{uid}"))
    }
}

fn secs(file: Option<f64>, key: &str) -> Result<Option<Duration>, ConfigError> {
    file.map(|s| {
        Duration::try_from_secs_f64(s).map_err(|_| {
            ConfigError::Invalid(format!(
                "{key} = {s} is not a non-negative number of seconds"
            ))
        })
    })
    .transpose()
}

impl Settings {
    /// Merges command line/environment (`args`) over the config file over defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = FileConfig::load(args.config.as_deref())?;
        let history = history_settings(args, &file)?;
        let auth = crate::auth_config::resolve(args, &file)?;
        let api = api_settings(args, &file, |name| std::env::var(name).ok())?;
        let presence_interval = args
            .presence_interval
            .or(secs(file.presence_interval, "presence_interval")?)
            .unwrap_or(defaults::PRESENCE_INTERVAL);
        if presence_interval.is_zero() || presence_interval > MAX_PRESENCE_INTERVAL {
            return Err(ConfigError::Invalid(format!(
                "presence_interval = {}s: use more than 0 and at most {} s",
                presence_interval.as_secs_f64(),
                MAX_PRESENCE_INTERVAL.as_secs()
            )));
        }
        let d = WorkerSettings::default();
        let ms = |d: Duration| d.as_millis() as u64;
        let run_dir = args
            .run_dir
            .clone()
            .or(file.run_dir)
            .unwrap_or_else(default_run_dir);
        let control = args
            .control
            .clone()
            .or(file.control)
            .unwrap_or_else(|| run_dir.join("control.sock"));
        let workers = args.workers.or(file.workers).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        if workers == 0 || workers > 1024 {
            return Err(ConfigError::Invalid(format!(
                "workers = {workers}: use 1 to 1024"
            )));
        }
        let worker = WorkerSettings {
            max_message_bytes: args
                .max_message_bytes
                .or(file.max_message_bytes)
                .unwrap_or(d.max_message_bytes),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(d.max_connections),
            max_rooms_per_connection: args
                .max_rooms
                .or(file.max_rooms)
                .unwrap_or(d.max_rooms_per_connection),
            outbox_limit_bytes: args
                .outbox_limit_bytes
                .or(file.outbox_limit_bytes)
                .unwrap_or(d.outbox_limit_bytes),
            ping_interval_ms: args
                .ping_interval
                .or(secs(file.ping_interval, "ping_interval")?)
                .map(ms)
                .unwrap_or(d.ping_interval_ms),
            ping_timeout_ms: args
                .ping_timeout
                .or(secs(file.ping_timeout, "ping_timeout")?)
                .map(ms)
                .unwrap_or(d.ping_timeout_ms),
            handshake_timeout_ms: args
                .handshake_timeout
                .or(secs(file.handshake_timeout, "handshake_timeout")?)
                .map(ms)
                .unwrap_or(d.handshake_timeout_ms),
            allowed_origins: args
                .allowed_origins
                .clone()
                .or(file.allowed_origins)
                .unwrap_or_default(),
            rate_limit_per_sec: args
                .rate_limit
                .or(file.rate_limit)
                .unwrap_or(d.rate_limit_per_sec),
            inbound_bytes_per_sec: args
                .inbound_rate_limit_bytes
                .or(file.inbound_rate_limit_bytes)
                .unwrap_or(d.inbound_bytes_per_sec),
            client_broadcast: match (args.client_broadcast, file.client_broadcast) {
                (Some(on), _) => on,
                (None, Some(text)) => crate::cli::on_off(&text)
                    .map_err(|e| ConfigError::Invalid(format!("client_broadcast = {e}")))?,
                (None, None) => d.client_broadcast,
            },
            auth,
            permissions: history.namespaces.permissions(),
            max_connections_per_user: args
                .max_connections_per_user
                .or(file.max_connections_per_user)
                .unwrap_or(d.max_connections_per_user),
            max_connections_per_ip: args
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(d.max_connections_per_ip),
            ip_connects_per_minute: args
                .ip_connects_per_minute
                .or(file.ip_connects_per_minute)
                .unwrap_or(d.ip_connects_per_minute),
            compression: match (args.compression, file.compression) {
                (Some(on), _) => on,
                (None, Some(text)) => crate::cli::on_off(&text)
                    .map_err(|e| ConfigError::Invalid(format!("compression = {e}")))?,
                (None, None) => d.compression,
            },
            compression_threshold: args
                .compression_threshold
                .or(file.compression_threshold)
                .unwrap_or(d.compression_threshold),
        };
        if worker.max_message_bytes < 16 || worker.max_message_bytes > MAX_MESSAGE_BYTES {
            return Err(ConfigError::Invalid(format!(
                "max_message_bytes = {}: use 16 bytes to 64 MiB",
                worker.max_message_bytes
            )));
        }
        if worker.ping_interval_ms == 0
            || worker.ping_timeout_ms == 0
            || worker.handshake_timeout_ms == 0
        {
            return Err(ConfigError::Invalid(
                "ping_interval, ping_timeout and handshake_timeout must be above 0".into(),
            ));
        }
        if worker.outbox_limit_bytes < worker.max_message_bytes {
            return Err(ConfigError::Invalid(format!(
                "outbox_limit_bytes = {} is below max_message_bytes = {}: one message must fit",
                worker.outbox_limit_bytes, worker.max_message_bytes
            )));
        }
        if worker.inbound_bytes_per_sec != 0
            && worker.inbound_bytes_per_sec < worker.max_message_bytes as u64
        {
            return Err(ConfigError::Invalid(format!(
                "inbound_rate_limit_bytes = {} is below max_message_bytes = {}: one message \
                 must fit (or use 0 for no limit)",
                worker.inbound_bytes_per_sec, worker.max_message_bytes
            )));
        }
        let admin = match (args.admin, file.admin) {
            (Some(a), _) => a,
            (None, Some(text)) => crate::cli::admin_addr(&text)
                .map_err(|e| ConfigError::Invalid(format!("admin = {text:?}: {e}")))?,
            (None, None) => AdminAddr::At(defaults::ADMIN),
        };
        let worker_timeout = args
            .worker_timeout
            .or(secs(file.worker_timeout, "worker_timeout")?)
            .unwrap_or(defaults::WORKER_TIMEOUT);
        if worker_timeout < MIN_WORKER_TIMEOUT {
            return Err(ConfigError::Invalid(format!(
                "worker_timeout = {}s is too short: the link heartbeat runs once a second, so a live worker could be killed; use at least {}",
                worker_timeout.as_secs_f64(),
                MIN_WORKER_TIMEOUT.as_secs()
            )));
        }
        Ok(Self {
            api,
            admin: match admin {
                AdminAddr::Off => None,
                AdminAddr::At(a) => Some(a),
            },
            listen: args.listen.or(file.listen).unwrap_or(defaults::LISTEN),
            workers,
            run_dir,
            control,
            config: args.config.clone(),
            drain_timeout: args
                .drain_timeout
                .or(secs(file.drain_timeout, "drain_timeout")?)
                .unwrap_or(defaults::DRAIN_TIMEOUT),
            ready_timeout: args
                .ready_timeout
                .or(secs(file.ready_timeout, "ready_timeout")?)
                .unwrap_or(defaults::READY_TIMEOUT),
            backlog: args.backlog.or(file.backlog).unwrap_or(defaults::BACKLOG),
            ipc_queue_limit: args
                .ipc_queue_limit
                .or(file.ipc_queue_limit)
                .unwrap_or(defaults::IPC_QUEUE_LIMIT)
                .max(1),
            ipc_queue_limit_bytes: args
                .ipc_queue_limit_bytes
                .or(file.ipc_queue_limit_bytes)
                .unwrap_or(defaults::IPC_QUEUE_LIMIT_BYTES)
                .max(1),
            worker_timeout,
            log_level: args
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| defaults::LOG_LEVEL.into()),
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(defaults::LOG_FORMAT),
            worker,
            history,
            presence_pacing: Pacing {
                interval: presence_interval,
                count_rate: args
                    .presence_count_rate
                    .or(file.presence_count_rate)
                    .unwrap_or(defaults::PRESENCE_COUNT_RATE),
            },
            redis: redis_urls(args, file.redis)?,
        })
    }
}

/// The server API's address (flag over environment over file; off by default) and, when
/// it is on, its key: the first line of `api_key_file`, else `WSFLEET_API_KEY` (read
/// through `env`).
fn api_settings(
    args: &ServeArgs,
    file: &FileConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ApiSettings>, ConfigError> {
    let addr = match (args.api, &file.api) {
        (Some(a), _) => a,
        (None, Some(text)) => crate::cli::admin_addr(text)
            .map_err(|e| ConfigError::Invalid(format!("api = {text:?}: {e}")))?,
        (None, None) => defaults::API.map_or(AdminAddr::Off, AdminAddr::At),
    };
    let AdminAddr::At(addr) = addr else {
        return Ok(None);
    };
    let key = match args.api_key_file.clone().or(file.api_key_file.clone()) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::Invalid(format!(
                    "cannot read the server API key file {}: {e}; write the key on its first line",
                    path.display()
                ))
            })?;
            text.lines().next().unwrap_or("").trim().to_owned()
        }
        None => env(API_KEY_ENV).unwrap_or_default().trim().to_owned(),
    };
    if key.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "--api {addr} needs a key: write it on the first line of a file given with --api-key-file (WSFLEET_API_KEY_FILE, `api_key_file`), or put it in {API_KEY_ENV}; generate one with `openssl rand -hex 32`"
        )));
    }
    if key.len() < MIN_API_KEY_BYTES {
        return Err(ConfigError::Invalid(format!(
            "the server API key is {} bytes; use at least {MIN_API_KEY_BYTES} (e.g. `openssl rand -hex 32`)",
            key.len()
        )));
    }
    let max_body_bytes = args
        .api_max_body_bytes
        .or(file.api_max_body_bytes)
        .unwrap_or(defaults::API_MAX_BODY_BYTES);
    if max_body_bytes < 1024 {
        return Err(ConfigError::Invalid(format!(
            "api_max_body_bytes = {max_body_bytes}: use at least 1024"
        )));
    }
    Ok(Some(ApiSettings {
        addr,
        key: ApiKey(key),
        max_body_bytes,
    }))
}
/// Longest `presence_interval`: a count older than a minute is no longer presence.
const MAX_PRESENCE_INTERVAL: Duration = Duration::from_secs(60);

/// The global history defaults (flags over environment over file over [`defaults`]) and
/// the file's namespaces over them.
fn history_settings(args: &ServeArgs, file: &FileConfig) -> Result<HistorySettings, ConfigError> {
    let size = args
        .history_size
        .or(file.history_size)
        .unwrap_or(defaults::HISTORY_SIZE);
    if size > MAX_HISTORY_SIZE {
        return Err(ConfigError::Invalid(format!(
            "history_size = {size}: use 0 (off) to {MAX_HISTORY_SIZE}"
        )));
    }
    let ttl = args
        .history_ttl
        .or(secs(file.history_ttl, "history_ttl")?)
        .unwrap_or(defaults::HISTORY_TTL);
    if ttl.is_zero() || ttl > MAX_HISTORY_TTL {
        return Err(ConfigError::Invalid(format!(
            "history_ttl = {}s: use more than 0 and at most {} s (7 days)",
            ttl.as_secs_f64(),
            MAX_HISTORY_TTL.as_secs()
        )));
    }
    let defaults = RoomOptions {
        history: HistoryOptions { size, ttl },
        presence: PresenceOptions {
            mode: PresenceMode::Auto,
            threshold: args
                .presence_threshold
                .or(file.presence_threshold)
                .unwrap_or(defaults::PRESENCE_THRESHOLD),
        },
    };
    let namespaces = Namespaces::from_specs(defaults, &file.namespace)
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(HistorySettings {
        namespaces,
        budget_bytes: args
            .history_budget_bytes
            .or(file.history_budget_bytes)
            .unwrap_or(defaults::BUDGET_BYTES),
        recovery_max: args
            .recovery_max
            .or(file.recovery_max)
            .unwrap_or(defaults::RECOVERY_MAX),
    })
}

/// The `--redis` URLs (flags over environment over file); each must look like a Redis URL.
fn redis_urls(args: &ServeArgs, file: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let urls = if args.redis.is_empty() {
        file.unwrap_or_default()
    } else {
        args.redis.clone()
    };
    let urls: Vec<String> = urls.into_iter().map(|u| u.trim().to_owned()).collect();
    for url in &urls {
        if !(url.starts_with("redis://") || url.starts_with("unix://")) {
            return Err(ConfigError::Invalid(format!(
                "redis = {url:?}: use redis://HOST:PORT[/DB] (or unix:///path/to/redis.sock)"
            )));
        }
    }
    Ok(urls)
}

/// The control socket path the client commands use.
pub fn control_path(args: &ControlArgs) -> Result<PathBuf, ConfigError> {
    if let Some(path) = &args.control {
        return Ok(path.clone());
    }
    let file = FileConfig::load(args.config.as_deref())?;
    if args.run_dir.is_none()
        && let Some(control) = file.control
    {
        return Ok(control);
    }
    let run_dir = args
        .run_dir
        .clone()
        .or(file.run_dir)
        .unwrap_or_else(default_run_dir);
    Ok(run_dir.join("control.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("wsfleet.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    mod tempdir {
        /// A throwaway directory removed on drop.
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "wsfleet-cfg-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn command_line_beats_file_beats_default() {
        let (_d, path) = write("workers = 3\nlisten = \"127.0.0.1:9000\"\ndrain_timeout = 0.5\n");
        let args = ServeArgs {
            config: Some(path),
            workers: Some(5),
            ..Default::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.workers, 5);
        assert_eq!(s.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(s.drain_timeout, Duration::from_millis(500));
        assert_eq!(s.worker.max_message_bytes, 65536);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let (_d, path) = write("wokers = 3\n");
        let err = Settings::resolve(&ServeArgs {
            config: Some(path),
            ..Default::default()
        });
        assert!(err.unwrap_err().to_string().contains("wokers"));
        let (_d, path) = write("drain_timeout = -1\n");
        assert!(
            Settings::resolve(&ServeArgs {
                config: Some(path),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Settings::resolve(&ServeArgs {
                workers: Some(0),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn the_link_bounds_and_worker_timeout_come_from_the_file_and_a_too_short_timeout_is_refused() {
        let s = Settings::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(s.ipc_queue_limit_bytes, defaults::IPC_QUEUE_LIMIT_BYTES);
        assert_eq!(s.worker_timeout, defaults::WORKER_TIMEOUT);
        let (_d, path) = write("ipc_queue_limit_bytes = 1000\nworker_timeout = 2.5\n");
        let s = Settings::resolve(&ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.ipc_queue_limit_bytes, 1000);
        assert_eq!(s.worker_timeout, Duration::from_millis(2500));
        let err = Settings::resolve(&ServeArgs {
            worker_timeout: Some(Duration::from_secs(1)),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("worker_timeout") && err.contains("at least 2"),
            "{err}"
        );
    }

    #[test]
    fn the_api_is_off_by_default_and_needs_a_long_enough_key_from_a_file_or_the_environment() {
        let none = |_: &str| None;
        let file = FileConfig::default();
        assert_eq!(
            api_settings(&ServeArgs::default(), &file, none).unwrap(),
            None
        );
        let on = ServeArgs {
            api: Some(AdminAddr::At("127.0.0.1:0".parse().unwrap())),
            ..Default::default()
        };
        let err = api_settings(&on, &file, none).unwrap_err().to_string();
        assert!(
            err.contains("needs a key") && err.contains(API_KEY_ENV),
            "{err}"
        );
        let short = |_: &str| Some("abc".to_owned());
        let err = api_settings(&on, &file, short).unwrap_err().to_string();
        assert!(err.contains("at least 16"), "{err}");
        let env = |_: &str| Some(" 0123456789abcdef0123\n".to_owned());
        let api = api_settings(&on, &file, env).unwrap().unwrap();
        assert_eq!(api.key.0, "0123456789abcdef0123");
        assert_eq!(api.max_body_bytes, defaults::API_MAX_BODY_BYTES);
        assert!(!format!("{api:?}").contains("0123"), "Debug hides the key");
        let (_d, key_file) = write("fedcba9876543210fedcba\nignored\n");
        let from_file = ServeArgs {
            api_key_file: Some(key_file),
            ..on.clone()
        };
        let api = api_settings(&from_file, &file, env).unwrap().unwrap();
        assert_eq!(
            api.key.0, "fedcba9876543210fedcba",
            "the file wins over the variable"
        );
    }

    #[test]
    fn admin_defaults_to_loopback_9090_and_can_be_off() {
        let s = Settings::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(s.admin, Some("127.0.0.1:9090".parse().unwrap()));
        let (_d, path) = write("admin = \"off\"\n");
        let s = Settings::resolve(&ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.admin, None);
        let (_d, path) = write("admin = \"nowhere\"\n");
        assert!(
            Settings::resolve(&ServeArgs {
                config: Some(path),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn history_defaults_flags_and_namespaces_come_from_the_file() {
        let s = Settings::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(s.history.recovery_max, 300);
        assert_eq!(s.history.budget_bytes, defaults::BUDGET_BYTES);
        let room = s.history.namespaces.lookup("any").history;
        assert_eq!((room.size, room.ttl), (100, Duration::from_secs(600)));

        let (_d, path) = write(
            "history_size = 5\nhistory_ttl = 30\nrecovery_max = 7\n\
             [[namespace]]\npattern = \"live:*\"\nhistory_size = 0\n",
        );
        let s = Settings::resolve(&ServeArgs {
            config: Some(path),
            history_size: Some(9),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.history.recovery_max, 7);
        let chat = s.history.namespaces.lookup("chat").history;
        assert_eq!((chat.size, chat.ttl), (9, Duration::from_secs(30)));
        assert!(!s.history.namespaces.lookup("live:1").history.enabled());

        let (_d, path) = write("[[namespace]]\npattern = \"*\"\n[[namespace]]\npattern = \"a*\"\n");
        let err = Settings::resolve(&ServeArgs {
            config: Some(path),
            ..Default::default()
        });
        assert!(err.unwrap_err().to_string().contains("a*"));
        assert!(
            Settings::resolve(&ServeArgs {
                history_size: Some(MAX_HISTORY_SIZE + 1),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let args = ServeArgs {
            config: Some("/nonexistent/wsfleet.toml".into()),
            ..Default::default()
        };
        assert!(
            Settings::resolve(&args)
                .unwrap_err()
                .to_string()
                .contains("cannot read config file")
        );
    }

    #[test]
    fn redis_urls_come_from_flags_over_the_file_and_must_be_redis_urls() {
        let (_d, path) = write("redis = [\"redis://a:1\", \"redis://b:2\"]\n");
        let mut args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.redis, ["redis://a:1", "redis://b:2"]);
        args.redis = vec!["redis://c:3".into()];
        assert_eq!(Settings::resolve(&args).unwrap().redis, ["redis://c:3"]);
        args.redis = vec!["http://c:3".into()];
        let e = Settings::resolve(&args).unwrap_err().to_string();
        assert!(e.contains("use redis://HOST:PORT"), "{e}");
        assert!(
            Settings::resolve(&ServeArgs::default())
                .unwrap()
                .redis
                .is_empty()
        );
    }

    #[test]
    fn every_serve_option_is_a_config_file_key() {
        let cli = crate::cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "config") {
                continue;
            }
            let key = long.replace('-', "_");
            let value = match key.as_str() {
                "listen" => "\"127.0.0.1:1\"".to_owned(),
                "run_dir" | "control" | "log_level" | "api_key_file" => "\"x\"".to_owned(),
                "log_format" => "\"json\"".to_owned(),
                "admin" | "api" | "client_broadcast" | "auth" | "compression" => {
                    "\"off\"".to_owned()
                }
                "auth_algorithm" | "auth_key_file" | "auth_secret_env" => "\"x\"".to_owned(),
                "allowed_origins" | "redis" | "auth_audience" | "auth_issuer" => {
                    "[\"https://a\"]".to_owned()
                }
                _ => "1".to_owned(),
            };
            let text = format!("{key} = {value}\n");
            assert!(
                toml::from_str::<FileConfig>(&text).is_ok(),
                "--{long} has no config-file key {key}"
            );
            assert!(
                arg.get_env().is_some(),
                "--{long} has no environment variable"
            );
        }
    }
}
