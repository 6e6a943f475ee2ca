//! Log setup (tracing): human-readable lines or one JSON object per line, on stderr.
//! Worker processes log inside a `worker` span carrying their slot, pid and generation,
//! so every text line says where it came from; in JSON, a worker also puts `slot`, `pid`
//! and `generation` at the top level of every object, where log pipelines index fields
//! (the span's copy stays under `span`).

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, format};
use tracing_subscriber::registry::LookupSpan;

/// How log lines look.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Who a worker process is, for its log lines.
#[derive(Debug, Clone, Copy)]
pub struct WorkerIdentity {
    /// Its slot.
    pub slot: u32,
    /// Its process id.
    pub pid: u32,
    /// Its generation.
    pub generation: u64,
}

/// Installs the global subscriber. `filter` is a level (`info`) or an env-filter
/// directive list; an explicit `RUST_LOG` overrides the default `info`. `worker` is set
/// in worker processes.
pub fn init(
    filter: &str,
    log_format: LogFormat,
    worker: Option<WorkerIdentity>,
) -> anyhow::Result<()> {
    let directive = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() && filter == "info" => env,
        _ => filter.to_owned(),
    };
    let filter = EnvFilter::try_new(&directive).map_err(|e| {
        anyhow::anyhow!(
            "invalid --log-level {directive:?}: {e}; use e.g. info, debug or wsfleet=debug"
        )
    })?;
    // Not logging write errors matters: tracing-subscriber reports them with eprintln!,
    // which panics when stderr is a closed pipe (a log collector gone, `| head`), and a
    // panic in the signal thread would leave the master deaf to SIGTERM.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let json = || {
        format()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
    };
    let result = match (log_format, worker) {
        (LogFormat::Text, _) => builder
            .with_target(false)
            .with_ansi(worker.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        (LogFormat::Json, None) => builder.json().event_format(json()).try_init(),
        (LogFormat::Json, Some(id)) => builder
            .json()
            .event_format(WithIdentity {
                inner: json(),
                fields: format!(
                    "\"slot\":{},\"pid\":{},\"generation\":{},",
                    id.slot, id.pid, id.generation
                ),
            })
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// A JSON event format that opens every object with the worker's identity fields.
struct WithIdentity<F> {
    /// The JSON formatter that writes the rest.
    inner: F,
    /// `"slot":S,"pid":P,"generation":G,` (constant for the process's life).
    fields: String,
}

impl<S, N, F> FormatEvent<S, N> for WithIdentity<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => {
                writer.write_char('{')?;
                writer.write_str(&self.fields)?;
                writer.write_str(rest)
            }
            None => writer.write_str(&line),
        }
    }
}
