//! `wsfleet bench`: the load tester. It builds its own small tokio runtime, opens WebSocket
//! connections to one server address, drives one load pattern (echo, fanout, idle, churn, storm) for
//! a bounded time, and prints a human summary and optionally one JSON line.
//!
//! # Layout
//! - `args`: flags and validation. `connect`: target URL, sockets, pacing, failure classes.
//!   `stream`: the socket tungstenite reads (wire bytes counted, `--deflate` inflating).
//! - `wire`: the protocol frames it sends and parses. `seq`, `window`: fan-out accounting.
//! - `echo`, `fanout`, `idle`, `churn`, `storm` (reconnect storm with history), `rooms`,
//!   `join`, `api` (HTTP publishes through the server API): the modes (`args_rooms`,
//!   `rooms_report` and `args_api`: the flags and JSON of the last three).
//!   `report`: histograms and output.
//! - `cpu`: /proc and getrusage sampling. `progress`: the live line on stderr.

mod api;
mod args;
mod args_api;
mod args_rooms;
mod churn;
mod connect;
mod cpu;
mod delivery;
mod echo;
mod fanout;
mod hold;
mod idle;
mod join;
mod progress;
mod report;
mod rooms;
mod rooms_report;
mod seq;
mod storm;
mod stream;
mod window;
mod wire;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

pub use args::BenchArgs;
use args::{CommonArgs, Mode};

/// What every mode needs besides its own flags.
pub struct Ctx {
    /// The shared flags.
    pub common: CommonArgs,
    /// Where to connect.
    pub target: connect::Target,
    /// The server's processes, if given.
    pub probe: Option<cpu::ServerProbe>,
    /// How many sockets this process may open.
    pub budget: u64,
}

/// Runs a benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    args.mode.validate()?;
    let common = args.mode.common().clone();
    // Validate the URL before anything else so a typo is the first and only complaint.
    connect::parse_url(&common.url)?;
    for url in &common.also_url {
        connect::parse_url(url)?;
    }
    let budget = connect::raise_nofile()?;
    let probe = cpu::ServerProbe::new(&common.server_pid)?;
    let mut builder = if common.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(common.threads);
        b
    };
    let rt = builder.enable_all().build()?;
    let result = rt.block_on(async move {
        let mut target = connect::Target::resolve(&common.url, common.sources).await?;
        for url in &common.also_url {
            let other = connect::Target::resolve(url, common.sources).await?;
            target.others.push((other.url, other.addr));
        }
        target.deflate = common.deflate;
        let ctx = Ctx {
            common,
            target,
            probe,
            budget,
        };
        match args.mode {
            Mode::Echo(a) => echo::run(a, ctx).await,
            Mode::Fanout(a) => fanout::run(a, ctx).await,
            Mode::Idle(a) => idle::run(a, ctx).await,
            Mode::Churn(a) => churn::run(a, ctx).await,
            Mode::Storm(a) => storm::run(a, ctx).await,
            Mode::Rooms(a) => rooms::run(a, ctx).await,
            Mode::Join(a) => join::run(a, ctx).await,
            Mode::Api(a) => api::run(a, ctx).await,
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

/// Polls `done` every 10 ms until it holds or `until` passes; returns whether it held.
pub async fn wait_for(done: impl Fn() -> bool, until: Option<Instant>) -> bool {
    loop {
        if done() {
            return true;
        }
        if until.is_some_and(|u| Instant::now() >= u) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until each of `n` connection attempts has succeeded or failed (every attempt
/// ends within the ramp plus its timeouts).
pub async fn wait_attempts(ok: &AtomicU64, failed: &AtomicU64, n: u64) {
    wait_for(|| ok.load(Relaxed) + failed.load(Relaxed) >= n, None).await;
}

/// Keeps the first error message seen, for the summary.
#[derive(Default)]
pub struct FirstError {
    /// The message.
    msg: Mutex<Option<String>>,
}

impl FirstError {
    /// Remembers `e` if it is the first.
    pub fn note(&self, e: impl std::fmt::Display) {
        let mut m = self.msg.lock().unwrap_or_else(|p| p.into_inner());
        if m.is_none() {
            *m = Some(e.to_string());
        }
    }

    /// Notes a failed connect (or join) and counts it in `failed`.
    pub fn connect_failed(&self, e: impl std::fmt::Display, failed: &AtomicU64) {
        self.note(format_args!("connect: {e}"));
        failed.fetch_add(1, Relaxed);
    }

    /// The first error, if any.
    pub fn get(&self) -> Option<String> {
        self.msg.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `"\nfirst error   ...\n"` or nothing.
    pub fn line(&self) -> String {
        self.get()
            .map(|e| format!("first error   {e}\n"))
            .unwrap_or_default()
    }
}

/// Opens subscriber `i` (paced by `opener`) joined to `room`; a failure is noted in
/// `first_error` and counted in `failed`.
#[allow(clippy::too_many_arguments)]
pub async fn open_subscriber(
    target: &connect::Target,
    opener: &connect::Opener,
    i: usize,
    cfg: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
    room: &str,
    timeout: Duration,
    first_error: &FirstError,
    failed: &AtomicU64,
) -> Option<connect::Ws> {
    let permit = opener.slot(i).await;
    let r = target.connect_joined(i + 1, cfg, room, timeout).await;
    drop(permit);
    match r {
        Ok(ws) => Some(ws),
        Err(e) => {
            first_error.note(format_args!("subscriber: {e}"));
            failed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// Closes a connection politely: close frame, then wait up to a second for the server's.
pub async fn close_ws(mut ws: connect::Ws) {
    use futures_util::StreamExt;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
