//! Log setup (tracing): human-readable lines or one JSON object per line, on stderr.
//! Worker processes log inside a `worker` span carrying their slot, pid and generation,
//! so every line says where it came from.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. `filter` is a level (`info`) or an env-filter
/// directive list; an explicit `RUST_LOG` overrides the default `info`.
pub fn init(filter: &str, format: LogFormat, worker: Option<&str>) -> anyhow::Result<()> {
    let directive = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() && filter == "info" => env,
        _ => filter.to_owned(),
    };
    let filter = EnvFilter::try_new(&directive).map_err(|e| {
        anyhow::anyhow!(
            "invalid --log-level {directive:?}: {e}; use e.g. info, debug or wsfleet=debug"
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(worker.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
