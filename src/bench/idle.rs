//! `bench idle`: opens N connections, each joins a room and waits for `joined` (connect time
//! = TCP connect + handshake + join → joined, after its pacing slot), then holds them all for
//! S seconds (reading whatever the server sends, so none is closed as a slow consumer) and
//! closes them; reports connect times and the server's RSS before and with all of them open.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::args::IdleArgs;
use super::connect::{self, Opener};
use super::hold::{Counts, hold};
use super::report::{self, Hist, IdleReport, round3};
use super::{Ctx, close_ws, cpu, progress, wait_attempts};

/// Runs the idle benchmark.
pub async fn run(a: IdleArgs, ctx: Ctx) -> anyhow::Result<()> {
    connect::check_budget(a.conns as u64, ctx.budget, "idle --conns")?;
    // Small read buffers: these connections carry little, and there may be thousands.
    let cfg = connect::ws_config(4 << 10, 64 << 10);
    let timeout = ctx.common.timeout();
    let sh = Arc::new(Counts::default());
    let connect_us = Hist::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let target = Arc::new(ctx.target.clone());

    let server0 = cpu::sample(&ctx.probe);
    let client = cpu::ClientCpu::start();
    let opener = Opener::new(a.conns, ctx.common.ramp(), ctx.common.connect_concurrency);
    let n = a.conns;
    let prog = progress::Progress::start("idle", &sh, move |sh, t| {
        format!(
            "{t:.0}s connected {}/{n} failed {} dropped {}",
            sh.joined.load(Relaxed),
            sh.failed.load(Relaxed),
            sh.dropped.load(Relaxed)
        )
    });
    let mut set = JoinSet::new();
    for i in 0..a.conns {
        let (target, opener, sh, mut stop_rx) =
            (target.clone(), opener.clone(), sh.clone(), stop_rx.clone());
        let room = a.room.replace("{i}", &i.to_string());
        let mut batch = connect_us.batch();
        set.spawn(async move {
            let permit = opener.slot(i).await;
            let t0 = Instant::now();
            let r = target.connect_joined(i, cfg, &room, timeout).await;
            drop(permit);
            let ws = match r {
                Ok(ws) => ws,
                Err(e) => return sh.first_error.connect_failed(e, &sh.failed),
            };
            batch.record(t0.elapsed().as_micros() as u64);
            batch.flush();
            sh.joined.fetch_add(1, Relaxed);
            let held = hold(ws, &mut stop_rx, "during hold", &sh, || {});
            if let Some(ws) = held.await {
                close_ws(ws).await;
            }
        });
    }
    let n = a.conns as u64;
    wait_attempts(&sh.joined, &sh.failed, n).await;
    let connected = sh.joined.load(Relaxed);
    // Give the server a moment to settle (presence fan-out, allocator) before reading RSS.
    tokio::time::sleep(Duration::from_millis(500).min(Duration::from_secs_f64(a.hold))).await;
    let server_mid = cpu::sample(&ctx.probe);
    let hold_end = Instant::now() + Duration::from_secs_f64(a.hold);
    tokio::time::sleep_until(hold_end).await;
    let client_pct = client.pct();
    let server1 = cpu::sample(&ctx.probe);
    prog.stop();
    let _ = stop_tx.send(true);
    while set.join_next().await.is_some() {}

    let (rss_before, rss, rss_per_conn) = cpu::rss_growth(&server0, &server_mid, connected);
    let rep = IdleReport {
        mode: "idle",
        conns: a.conns,
        connected,
        failed: sh.failed.load(Relaxed),
        connect_ms: connect_us.pcts().scaled(1000.0),
        hold_s: a.hold,
        client_cpu_pct: client_pct,
        server_rss_bytes_before: rss_before,
        server_rss_bytes: rss,
        server_rss_per_conn_bytes: rss_per_conn,
        server_cpu_s: server0
            .as_ref()
            .zip(server1.as_ref())
            .map(|(s0, s1)| round3(s1.cpu_s_since(s0))),
    };
    let mem = match (
        rep.server_rss_bytes_before,
        rep.server_rss_bytes,
        rep.server_rss_per_conn_bytes,
    ) {
        (Some(b), Some(r), Some(p)) => format!(
            "server RSS    {:.1} MiB before, {:.1} MiB with all open: {:.0} B per connection\nserver CPU    {:.2} s (connect + hold)\n",
            b as f64 / 1048576.0,
            r as f64 / 1048576.0,
            p,
            rep.server_cpu_s.unwrap_or(0.0)
        ),
        _ => "server        not measured (no --server-pid)\n".into(),
    };
    let human = format!(
        "idle          {} conns: {} connected, {} failed, {} dropped during the {} s hold\n\
         connect       p50 {} ms, p99 {} ms, max {} ms (connect + handshake + join)\n{}{}{}",
        a.conns,
        connected,
        rep.failed,
        sh.dropped.load(Relaxed),
        a.hold,
        rep.connect_ms.p50,
        rep.connect_ms.p99,
        rep.connect_ms.max,
        sh.first_error.line(),
        report::client_cpu_line(client_pct, ctx.common.threads),
        mem,
    );
    report::emit(ctx.common.json, &human, &rep)
}
