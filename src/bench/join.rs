//! `bench join`: N clients connect and all join ONE room (a live dashboard, a stream with its
//! viewers). It measures connects + joins per second from the first connect to the last
//! `joined`, the server CPU per join, then the server's RSS per connection while they are held.
//! Every client keeps reading after its `joined` (presence notices from the later joins), so
//! none is closed as a slow consumer. `--max-time` bounds the run: when it passes, the run
//! reports how many joined within it instead of waiting on a server that is slow at this.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::args_rooms::JoinArgs;
use super::connect::{self, Opener};
use super::hold::{Counts, hold};
use super::report::{self, Hist, round3};
use super::rooms_report::JoinReport;
use super::{Ctx, close_ws, cpu, progress, wait_for};

/// Counters shared by the client tasks and the coordinator.
#[derive(Default)]
struct Shared {
    /// Joined, failed, dropped, the first error.
    c: Counts,
    /// Frames received after `joined`.
    frames: AtomicU64,
    /// µs since the start of the latest `joined`.
    last_joined_us: AtomicU64,
}

/// Runs the one-big-room join benchmark.
pub async fn run(a: JoinArgs, ctx: Ctx) -> anyhow::Result<()> {
    connect::check_budget(a.conns as u64, ctx.budget, "join --conns")?;
    let cfg = connect::ws_config(4 << 10, 64 << 10);
    let timeout = ctx.common.timeout();
    let sh = Arc::new(Shared::default());
    let connect_us = Hist::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let target = Arc::new(ctx.target.clone());

    let server0 = cpu::sample(&ctx.probe);
    let client = cpu::ClientCpu::start();
    let start = Instant::now();
    let opener = Opener::new(a.conns, ctx.common.ramp(), ctx.common.connect_concurrency);
    let n = a.conns;
    let prog = progress::Progress::start("join", &sh, move |sh, t| {
        format!(
            "{t:.0}s joined {}/{n} failed {} frames {}",
            sh.c.joined.load(Relaxed),
            sh.c.failed.load(Relaxed),
            sh.frames.load(Relaxed)
        )
    });
    let mut set = JoinSet::new();
    for i in 0..a.conns {
        let (target, opener, sh, mut stop_rx, room) = (
            target.clone(),
            opener.clone(),
            sh.clone(),
            stop_rx.clone(),
            a.room.clone(),
        );
        let mut batch = connect_us.batch();
        set.spawn(async move {
            let open = async {
                let permit = opener.slot(i).await;
                let t0 = Instant::now();
                let r = target.connect_joined(i, cfg, &room, timeout).await;
                drop(permit);
                (t0, r)
            };
            let (t0, r) = tokio::select! {
                biased;
                _ = stop_rx.changed() => return,
                r = open => r,
            };
            let ws = match r {
                Ok(ws) => ws,
                Err(e) => return sh.c.first_error.connect_failed(e, &sh.c.failed),
            };
            sh.last_joined_us
                .fetch_max(start.elapsed().as_micros() as u64, Relaxed);
            sh.c.joined.fetch_add(1, Relaxed);
            batch.record(t0.elapsed().as_micros() as u64);
            batch.flush();
            let mut frames = 0u64;
            let counted = |frames: &mut u64| {
                *frames += 1;
                // Published now and then so the progress line moves.
                if *frames & 1023 == 0 {
                    sh.frames.fetch_add(1024, Relaxed);
                }
            };
            let held = hold(ws, &mut stop_rx, "after joining", &sh.c, || {
                counted(&mut frames)
            })
            .await;
            sh.frames.fetch_add(frames & 1023, Relaxed);
            if let Some(ws) = held {
                close_ws(ws).await;
            }
        });
    }
    let n = a.conns as u64;
    let max_time = Duration::from_secs_f64(a.max_time);
    let finished = wait_for(
        || sh.c.joined.load(Relaxed) + sh.c.failed.load(Relaxed) >= n,
        Some(start + max_time),
    )
    .await;
    let server_joined = cpu::sample(&ctx.probe);
    let client_pct = client.pct();
    let joined = sh.c.joined.load(Relaxed);
    let failed = sh.c.failed.load(Relaxed);
    // Let the server settle (presence still in flight, allocator) before reading its RSS.
    tokio::time::sleep(Duration::from_millis(500).min(Duration::from_secs_f64(a.hold))).await;
    let server_mid = cpu::sample(&ctx.probe);
    tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    prog.stop();
    let _ = stop_tx.send(true);
    while set.join_next().await.is_some() {}

    let last = sh.last_joined_us.load(Relaxed) as f64 / 1e6;
    let duration = if finished { last } else { a.max_time };
    let server_cpu_s = server0
        .as_ref()
        .zip(server_joined.as_ref())
        .map(|(s0, s1)| round3(s1.cpu_s_since(s0)));
    let (rss_before, rss, rss_per_conn) = cpu::rss_growth(&server0, &server_mid, joined);
    let rep = JoinReport {
        mode: "join",
        room: a.room.clone(),
        conns: a.conns,
        joined,
        failed,
        unfinished: n.saturating_sub(joined + failed),
        timed_out: !finished,
        max_time_s: a.max_time,
        duration_s: round3(duration),
        joins_per_s: round3(report::ratio(joined as f64, duration)),
        connect_ms: connect_us.pcts().scaled(1000.0),
        frames_received: sh.frames.load(Relaxed),
        dropped: sh.c.dropped.load(Relaxed),
        hold_s: a.hold,
        client_cpu_pct: client_pct,
        server_cpu_s,
        server_cpu_us_per_unit: server_cpu_s.map(|c| round3(report::ratio(c * 1e6, joined as f64))),
        server_rss_bytes_before: rss_before,
        server_rss_bytes: rss,
        server_rss_per_conn_bytes: rss_per_conn,
    };
    let verdict = if finished {
        String::new()
    } else {
        format!(
            "NOT FINISHED  --max-time {} s ran out with {} clients still connecting or waiting for joined\n",
            a.max_time, rep.unfinished
        )
    };
    let mem = match (
        rep.server_rss_bytes_before,
        rep.server_rss_bytes,
        rep.server_rss_per_conn_bytes,
    ) {
        (Some(b), Some(r), Some(p)) => format!(
            "server RSS    {:.1} MiB before, {:.1} MiB after the joins: {:.0} B per joined client\n\
             server CPU    {:.2} s during the joins, {:.1} µs per join\n",
            b as f64 / 1048576.0,
            r as f64 / 1048576.0,
            p,
            rep.server_cpu_s.unwrap_or(0.0),
            rep.server_cpu_us_per_unit.unwrap_or(0.0)
        ),
        _ => "server        not measured (no --server-pid)\n".into(),
    };
    let human = format!(
        "join          {} clients into room {:?}: {} joined, {} failed, {} dropped afterwards\n\
         rate          {:.0} connects+joins/s ({:.2} s from the first connect to the last joined)\n\
         connect       p50 {} ms, p99 {} ms, max {} ms (connect + handshake + join)\n\
         frames        {} received after joined (presence)\n{verdict}{}{}{}",
        a.conns,
        a.room,
        joined,
        failed,
        rep.dropped,
        rep.joins_per_s,
        rep.duration_s,
        rep.connect_ms.p50,
        rep.connect_ms.p99,
        rep.connect_ms.max,
        rep.frames_received,
        sh.c.first_error.line(),
        report::client_cpu_line(client_pct, ctx.common.threads),
        mem,
    );
    report::emit(ctx.common.json, &human, &rep)
}
