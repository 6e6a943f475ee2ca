//! `bench echo`: C connections to an echo endpoint, each with exactly one binary message in
//! flight (send, await the echo, repeat) for the measured duration; msgs/s and round-trip time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::args::{EchoArgs, Payload};
use super::connect::{self, ConnError, Opener};
use super::report::{self, EchoReport, Hist, round3};
use super::{Ctx, FirstError, close_ws, cpu, progress, wait_attempts, wait_for};

/// Counters shared by all echo connections.
#[derive(Default)]
struct Shared {
    /// Connections open.
    connected: AtomicU64,
    /// Connections that could not be opened.
    failed: AtomicU64,
    /// Round trips completed.
    msgs: AtomicU64,
    /// Connections that failed after opening.
    errors: AtomicU64,
    /// Connections that finished their send loop.
    finished: AtomicU64,
    /// For the summary.
    first_error: FirstError,
}

/// Runs the echo benchmark.
pub async fn run(a: EchoArgs, ctx: Ctx) -> anyhow::Result<()> {
    connect::check_budget(a.conns as u64, ctx.budget, "echo --conns")?;
    let cfg = connect::ws_config((a.size + 64).clamp(4 << 10, 64 << 10), a.size * 2 + 1024);
    let payload = match a.payload {
        Payload::Pad => Message::Binary(Bytes::from(vec![b'x'; a.size])),
        Payload::Json => Message::text(super::wire::chat_json(a.size, 1)),
    };
    let sh = Arc::new(Shared::default());
    let rtt = Hist::new();
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let opener = Opener::new(a.conns, ctx.common.ramp(), ctx.common.connect_concurrency);
    let timeout = ctx.common.timeout();
    let target = Arc::new(ctx.target.clone());

    let n = a.conns;
    let prog = progress::Progress::start("echo", &sh, move |sh, _| {
        let (ok, failed) = (sh.connected.load(Relaxed), sh.failed.load(Relaxed));
        format!("connected {ok}/{n} failed {failed}")
    });
    let mut set = JoinSet::new();
    for i in 0..a.conns {
        let (target, opener, sh, payload, mut go_rx, mut batch) = (
            target.clone(),
            opener.clone(),
            sh.clone(),
            payload.clone(),
            go_rx.clone(),
            rtt.batch(),
        );
        set.spawn(async move {
            let permit = opener.slot(i).await;
            let mut ws = match target.connect(i, cfg, timeout).await {
                Ok(ws) => ws,
                Err(e) => return sh.first_error.connect_failed(e, &sh.failed),
            };
            drop(permit);
            sh.connected.fetch_add(1, Relaxed);
            let deadline = loop {
                if let Some(d) = *go_rx.borrow_and_update() {
                    break d;
                }
                if go_rx.changed().await.is_err() {
                    return;
                }
            };
            let size = payload.len();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r: Result<(), ConnError> = async {
                    ws.send(payload.clone()).await.map_err(ConnError::ws)?;
                    loop {
                        match tokio::time::timeout(timeout, ws.next()).await {
                            Err(_) => return Err(ConnError::Timeout),
                            Ok(Some(Ok(Message::Binary(b)))) if b.len() == size => return Ok(()),
                            Ok(Some(Ok(Message::Text(t)))) if t.len() == size => return Ok(()),
                            Ok(Some(Ok(Message::Binary(_) | Message::Text(_)))) => {
                                return Err(ConnError::Other("echo of the wrong size".into()));
                            }
                            Ok(Some(Ok(Message::Close(f)))) => {
                                return Err(ConnError::Server(format!(
                                    "closed: {}",
                                    super::wire::close_text(f.as_ref())
                                )));
                            }
                            Ok(Some(Ok(_))) => {}
                            Ok(Some(Err(e))) => return Err(ConnError::ws(e)),
                            Ok(None) => return Err(ConnError::Reset("EOF".into())),
                        }
                    }
                }
                .await;
                match r {
                    Ok(()) => {
                        batch.record(t0.elapsed().as_micros() as u64);
                        sh.msgs.fetch_add(1, Relaxed);
                    }
                    Err(e) => {
                        sh.first_error.note(format_args!("echo: {e}"));
                        sh.errors.fetch_add(1, Relaxed);
                        break;
                    }
                }
            }
            batch.flush();
            sh.finished.fetch_add(1, Relaxed);
            close_ws(ws).await;
        });
    }
    // Connecting: every task either connects or fails within ramp + its timeout.
    let n = a.conns as u64;
    wait_attempts(&sh.connected, &sh.failed, n).await;
    prog.stop();
    let connected = sh.connected.load(Relaxed);
    if connected == 0 {
        set.shutdown().await;
        anyhow::bail!(
            "no connection could be opened ({})",
            sh.first_error.get().unwrap_or_default()
        );
    }

    let server0 = cpu::sample(&ctx.probe);
    let client = cpu::ClientCpu::start();
    let start = Instant::now();
    let duration = Duration::from_secs_f64(a.duration);
    let _ = go_tx.send(Some(start + duration));
    let prog = progress::Progress::start("echo", &sh, move |sh, t| {
        let m = sh.msgs.load(Relaxed);
        format!(
            "{t:.0}s {m} msgs, {:.0} msgs/s, errors {}",
            m as f64 / t,
            sh.errors.load(Relaxed)
        )
    });
    wait_for(|| sh.finished.load(Relaxed) >= connected, None).await;
    let elapsed = start.elapsed().as_secs_f64();
    let client_pct = client.pct();
    let server1 = cpu::sample(&ctx.probe);
    prog.stop();
    while set.join_next().await.is_some() {}

    let messages = sh.msgs.load(Relaxed);
    let server_cpu_s = server0
        .as_ref()
        .zip(server1.as_ref())
        .map(|(s0, s1)| round3(s1.cpu_s_since(s0)));
    let rep = EchoReport {
        mode: "echo",
        conns: a.conns,
        size: a.size,
        duration_s: round3(elapsed),
        messages,
        msgs_per_s: round3(report::ratio(messages as f64, elapsed)),
        rtt_us: rtt.pcts(),
        errors: sh.failed.load(Relaxed) + sh.errors.load(Relaxed),
        client_cpu_pct: client_pct,
        server_cpu_s,
        server_cpu_us_per_unit: server_cpu_s
            .map(|c| round3(report::ratio(c * 1e6, messages as f64))),
        server_rss_bytes: server1.map(|s| s.rss_bytes),
    };
    let human = format!(
        "echo          {} conns ({} failed), {} B, {:.2} s\n\
         throughput    {} msgs, {:.0} msgs/s\n\
         round trip    p50 {} µs, p99 {} µs, max {} µs\n\
         errors        {}\n{}{}{}",
        a.conns,
        sh.failed.load(Relaxed),
        a.size,
        elapsed,
        messages,
        rep.msgs_per_s,
        rep.rtt_us.p50,
        rep.rtt_us.p99,
        rep.rtt_us.max,
        rep.errors,
        sh.first_error.line(),
        report::client_cpu_line(client_pct, ctx.common.threads),
        report::server_line(
            rep.server_cpu_s,
            rep.server_cpu_us_per_unit,
            "message",
            rep.server_rss_bytes
        ),
    );
    report::emit(ctx.common.json, &human, &rep)
}
