//! `bench storm`: a reconnect storm against rooms with history. N subscribers spread over
//! R rooms, one publisher publishing round-robin into them; mid-publish the fleet is
//! reloaded through its control socket, every subscriber is closed (1012) by its draining
//! worker, reconnects at once and re-joins with `since`. Reports messages lost and
//! duplicated (both should be 0: the `seq` of every room must reach each subscriber once,
//! in order), recoveries refused, the time from the reload to the last subscriber having
//! its replay, each subscriber's time from its disconnect to its replay, and the master's
//! CPU over the storm.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use wsfleet_worker::protocol::client;

use super::args::StormArgs;
use super::connect::{self, ConnError, Target, Ws};
use super::report::{self, round3};
use super::{Ctx, FirstError, progress};
use crate::control_api::{Request, Response};

/// Counters shared by the subscribers, the publisher and the coordinator.
#[derive(Default)]
struct Shared {
    /// Subscribers joined the first time.
    joined: AtomicU64,
    /// Subscribers that gave up (could not connect or re-join).
    failed: AtomicU64,
    /// Re-joins answered `recovered:true`.
    recovered: AtomicU64,
    /// Re-joins answered `recovered:false`.
    refused: AtomicU64,
    /// Messages a subscriber never got (gaps in its room's `seq`, or short of the top).
    lost: AtomicU64,
    /// Messages a subscriber got twice (a `seq` not above the last one).
    dups: AtomicU64,
    /// Publishes sent.
    published: AtomicU64,
    /// Set when publishing is over and `tops` holds each room's last `seq`.
    done: AtomicBool,
    /// Each room's last `seq` once publishing is over.
    tops: Vec<AtomicU64>,
    /// For the summary.
    first_error: FirstError,
}

/// One subscriber's timings (monotonic, relative to nothing: the coordinator subtracts).
#[derive(Debug, Default, Clone, Copy)]
struct Times {
    /// When its connection was last closed under it.
    disconnected: Option<Instant>,
    /// When its last re-join's replay was complete.
    recovered: Option<Instant>,
}

/// `storm` results.
#[derive(Debug, Serialize)]
pub struct StormReport {
    /// Always "storm".
    pub mode: &'static str,
    /// Subscribers.
    pub subs: usize,
    /// Rooms.
    pub rooms: usize,
    /// Publishes sent.
    pub published: u64,
    /// Re-joins with `recovered:true`.
    pub recovered: u64,
    /// Re-joins with `recovered:false`.
    pub refused: u64,
    /// Subscribers that gave up.
    pub failed: u64,
    /// Messages lost over all subscribers.
    pub lost: u64,
    /// Messages received twice over all subscribers.
    pub duplicates: u64,
    /// Seconds the reload took (control-socket answer).
    pub reload_s: f64,
    /// Seconds from the reload request to the last subscriber having its replay.
    pub last_recovered_s: Option<f64>,
    /// Per subscriber, seconds from its disconnect to its replay: median, p99, max.
    pub recovery_p50_s: Option<f64>,
    /// 99th percentile of the same.
    pub recovery_p99_s: Option<f64>,
    /// Largest of the same.
    pub recovery_max_s: Option<f64>,
    /// The master's CPU seconds from the reload to the last recovery.
    pub master_cpu_s: Option<f64>,
    /// The same as a percentage of one core.
    pub master_cpu_pct: Option<f64>,
}

/// Runs the storm.
pub async fn run(a: StormArgs, ctx: Ctx) -> anyhow::Result<()> {
    connect::check_budget(a.subs as u64 + 2, ctx.budget, "subscribers")?;
    let master_pid = control(a.control.clone(), Request::Stats)
        .await?
        .stats
        .map(|s| s.master.pid);
    let cfg = connect::ws_config(4 << 10, 64 << 10);
    let timeout = ctx.common.timeout();
    let sh = Arc::new(Shared {
        tops: (0..a.rooms).map(|_| AtomicU64::new(0)).collect(),
        ..Shared::default()
    });
    let target = Arc::new(ctx.target.clone());
    let opener = connect::Opener::new(a.subs, ctx.common.ramp(), ctx.common.connect_concurrency);
    let prog = progress::Progress::start("storm", &sh, |sh, t| {
        format!(
            "{t:.0}s joined {} published {} recovered {} refused {} lost {} dups {}",
            sh.joined.load(Relaxed),
            sh.published.load(Relaxed),
            sh.recovered.load(Relaxed),
            sh.refused.load(Relaxed),
            sh.lost.load(Relaxed),
            sh.dups.load(Relaxed)
        )
    });
    let mut subs = JoinSet::new();
    for i in 0..a.subs {
        let (target, sh, opener) = (target.clone(), sh.clone(), opener.clone());
        let r = i % a.rooms;
        let room = room_name(&a.prefix, r);
        let grace = Duration::from_secs_f64(a.grace);
        subs.spawn(async move {
            let permit = opener.slot(i).await;
            let t = subscriber(&target, i, cfg, timeout, &room, r, grace, &sh, permit).await;
            if let Err(e) = &t {
                sh.first_error.note(e);
                sh.failed.fetch_add(1, Relaxed);
            }
            t.unwrap_or_default()
        });
    }
    super::wait_for(
        || sh.joined.load(Relaxed) + sh.failed.load(Relaxed) >= a.subs as u64,
        None,
    )
    .await;
    let publisher = tokio::spawn(publish(target.clone(), cfg, timeout, a.clone(), sh.clone()));
    tokio::time::sleep(Duration::from_secs_f64(a.before)).await;
    let cpu0 = master_pid.and_then(crate::sys::procfs::read_stat);
    let reload_at = Instant::now();
    let answer = control(a.control.clone(), Request::Reload).await;
    let reload_s = reload_at.elapsed().as_secs_f64();
    match answer {
        Ok(r) if r.ok => {}
        Ok(r) => sh.first_error.note(format!("reload failed: {:?}", r.error)),
        Err(e) => sh.first_error.note(format!("reload failed: {e}")),
    }
    tokio::time::sleep(Duration::from_secs_f64(a.after)).await;
    publisher.abort();
    let _ = publisher.await;
    // Let the last publishes be ordered, then read every room's top.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tops(&target, cfg, timeout, &a, &sh).await?;
    sh.done.store(true, Relaxed);
    let mut times = Vec::new();
    while let Some(t) = subs.join_next().await {
        times.push(t.unwrap_or_default());
    }
    let cpu1 = master_pid.and_then(crate::sys::procfs::read_stat);
    prog.stop();

    let last = times.iter().filter_map(|t| t.recovered).max();
    let mut per: Vec<f64> = times
        .iter()
        .filter_map(|t| Some(t.recovered?.saturating_duration_since(t.disconnected?)))
        .map(|d| d.as_secs_f64())
        .collect();
    per.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        (!per.is_empty()).then(|| round3(per[((per.len() - 1) as f64 * q).round() as usize]))
    };
    let storm_s = last.map(|l| l.saturating_duration_since(reload_at).as_secs_f64());
    let master_cpu_s = cpu0
        .zip(cpu1)
        .map(|(c0, c1)| round3(c1.cpu_s() - c0.cpu_s()));
    let rep = StormReport {
        mode: "storm",
        subs: a.subs,
        rooms: a.rooms,
        published: sh.published.load(Relaxed),
        recovered: sh.recovered.load(Relaxed),
        refused: sh.refused.load(Relaxed),
        failed: sh.failed.load(Relaxed),
        lost: sh.lost.load(Relaxed),
        duplicates: sh.dups.load(Relaxed),
        reload_s: round3(reload_s),
        last_recovered_s: storm_s.map(round3),
        recovery_p50_s: pct(0.5),
        recovery_p99_s: pct(0.99),
        recovery_max_s: pct(1.0),
        master_cpu_s,
        master_cpu_pct: master_cpu_s
            .zip(storm_s)
            .map(|(c, s)| round3(report::ratio(c * 100.0, s))),
    };
    let opt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.3} s"));
    let human = format!(
        "storm         {} subscribers in {} rooms, {} publishes, reload took {:.2} s\n\
         recoveries    {} recovered, {} refused, {} subscribers failed\n\
         lost          {}   duplicates {}\n\
         recovered     last {} after the reload; per subscriber from its disconnect: p50 {}, p99 {}, max {}\n\
         master cpu    {} over the storm ({})\n{}",
        rep.subs,
        rep.rooms,
        rep.published,
        rep.reload_s,
        rep.recovered,
        rep.refused,
        rep.failed,
        rep.lost,
        rep.duplicates,
        opt(rep.last_recovered_s),
        opt(rep.recovery_p50_s),
        opt(rep.recovery_p99_s),
        opt(rep.recovery_max_s),
        rep.master_cpu_s
            .map_or("n/a".to_owned(), |c| format!("{c:.3} s")),
        rep.master_cpu_pct
            .map_or("n/a".to_owned(), |p| format!("{p:.0}% of one core")),
        sh.first_error.line(),
    );
    report::emit(ctx.common.json, &human, &rep)
}

/// The name of room `r`.
fn room_name(prefix: &str, r: usize) -> String {
    format!("{prefix}{r}")
}

/// One control-socket request, off the runtime's threads.
async fn control(path: PathBuf, req: Request) -> anyhow::Result<Response> {
    tokio::task::spawn_blocking(move || {
        crate::client::request(&path, &req, Some(Duration::from_secs(300)))
    })
    .await?
}

/// A room's position as a `joined` frame gives it.
struct Joined {
    /// The stream's epoch.
    epoch: String,
    /// The top `seq` at the join.
    seq: u64,
    /// `recovered`, for a join with `since`.
    recovered: Option<bool>,
}

/// Sends `request` and reads until `joined` (messages before it cannot come: the join is
/// pending until then).
async fn join(ws: &mut Ws, request: String, timeout: Duration) -> Result<Joined, ConnError> {
    let fut = async {
        ws.send(Message::text(request))
            .await
            .map_err(ConnError::ws)?;
        while let Some(msg) = ws.next().await {
            let Message::Text(t) = msg.map_err(ConnError::ws)? else {
                continue;
            };
            if let Some(p) = client::position(t.as_str()) {
                let epoch = p.epoch.map(|e| e.into_owned()).ok_or_else(|| {
                    ConnError::Server("the room keeps no history (history_size 0?)".into())
                })?;
                return Ok(Joined {
                    epoch,
                    seq: p.seq.unwrap_or(0),
                    recovered: p.recovered,
                });
            }
            if client::classify(t.as_str()) == client::Kind::Error {
                return Err(ConnError::Server(t.as_str().to_owned()));
            }
        }
        Err(ConnError::Reset("closed before joined".into()))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or(Err(ConnError::Timeout))
}

/// Connects, retrying every 20 ms for `timeout` (a reloading slot may refuse for a moment).
async fn reconnect(
    target: &Target,
    i: usize,
    cfg: WebSocketConfig,
    timeout: Duration,
) -> Result<Ws, ConnError> {
    let until = Instant::now() + timeout;
    loop {
        match target.connect(i, cfg, timeout).await {
            Ok(ws) => return Ok(ws),
            Err(e) if Instant::now() >= until => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// One subscriber: join, read, and after every close re-join with `since`; ends once
/// publishing is over and it has its room's top (or `grace` later, counting the rest lost).
#[allow(clippy::too_many_arguments)]
async fn subscriber(
    target: &Target,
    i: usize,
    cfg: WebSocketConfig,
    timeout: Duration,
    room: &str,
    r: usize,
    grace: Duration,
    sh: &Shared,
    opening: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Times, ConnError> {
    let mut times = Times::default();
    let mut ws = reconnect(target, i, cfg, timeout).await?;
    let first = join(&mut ws, client::join(room, None), timeout).await?;
    // Opened: the next connection may start.
    drop(opening);
    sh.joined.fetch_add(1, Relaxed);
    let (mut epoch, mut last) = (first.epoch, first.seq);
    let mut replay_until: Option<u64> = None;
    let mut done_since: Option<Instant> = None;
    loop {
        if sh.done.load(Relaxed) {
            let top = sh.tops[r].load(Relaxed);
            let since = *done_since.get_or_insert_with(Instant::now);
            if last >= top {
                break;
            }
            if since.elapsed() >= grace {
                sh.lost.fetch_add(top - last, Relaxed);
                break;
            }
        }
        let next = tokio::time::timeout(Duration::from_millis(100), ws.next()).await;
        let msg = match next {
            Err(_) => continue,
            Ok(Some(Ok(m))) => m,
            Ok(_) => {
                // Closed under us (1012 from a draining worker, or a crash): come back.
                times.disconnected = Some(Instant::now());
                ws = reconnect(target, i, cfg, timeout).await?;
                let req = client::join_since(room, &epoch, last, None);
                let j = join(&mut ws, req, timeout).await?;
                if j.recovered == Some(true) {
                    sh.recovered.fetch_add(1, Relaxed);
                    if j.seq > last {
                        replay_until = Some(j.seq);
                    } else {
                        times.recovered = Some(Instant::now());
                    }
                } else {
                    sh.refused.fetch_add(1, Relaxed);
                    sh.lost.fetch_add(j.seq.saturating_sub(last), Relaxed);
                    (epoch, last) = (j.epoch, j.seq);
                    times.recovered = Some(Instant::now());
                }
                continue;
            }
        };
        let Message::Text(t) = msg else { continue };
        let Some(m) = client::message::<serde::de::IgnoredAny>(t.as_str()) else {
            continue;
        };
        let Some(seq) = m.seq else { continue };
        if seq <= last {
            sh.dups.fetch_add(1, Relaxed);
            continue;
        }
        sh.lost.fetch_add(seq - last - 1, Relaxed);
        last = seq;
        if replay_until.is_some_and(|u| seq >= u) {
            replay_until = None;
            times.recovered = Some(Instant::now());
        }
    }
    super::close_ws(ws).await;
    Ok(times)
}

/// Publishes round-robin into the rooms at `--rate`, reconnecting when closed, until aborted.
async fn publish(
    target: Arc<Target>,
    cfg: WebSocketConfig,
    timeout: Duration,
    a: StormArgs,
    sh: Arc<Shared>,
) {
    let rooms: Vec<String> = (0..a.rooms).map(|r| room_name(&a.prefix, r)).collect();
    let every = Duration::from_secs_f64(1.0 / a.rate);
    let mut tick = tokio::time::interval(every);
    let mut n = 0u64;
    loop {
        let Ok(mut ws) = reconnect(&target, usize::MAX / 2, cfg, timeout).await else {
            continue;
        };
        loop {
            tick.tick().await;
            let room = &rooms[n as usize % rooms.len()];
            let frame = client::publish(room, &n.to_string(), None);
            if ws.send(Message::text(frame)).await.is_err() {
                break;
            }
            n += 1;
            sh.published.fetch_add(1, Relaxed);
            // Read what the server sent (welcome, errors, its close) without waiting.
            while let Some(Some(m)) = ws.next().now_or_never() {
                if m.is_err() || matches!(m, Ok(Message::Close(_))) {
                    break;
                }
            }
        }
    }
}

/// Reads every room's top `seq` with `history` requests (limit 0) into `sh.tops`.
async fn tops(
    target: &Target,
    cfg: WebSocketConfig,
    timeout: Duration,
    a: &StormArgs,
    sh: &Shared,
) -> anyhow::Result<()> {
    let mut ws = reconnect(target, 0, cfg, timeout).await?;
    for r in 0..a.rooms {
        let req = format!(
            r#"{{"type":"history","room":{},"limit":0}}"#,
            wsfleet_worker::protocol::json_str(&room_name(&a.prefix, r))
        );
        ws.send(Message::text(req)).await?;
        let top = tokio::time::timeout(timeout, async {
            while let Some(msg) = ws.next().await {
                if let Message::Text(t) = msg? {
                    let v: serde_json::Value = serde_json::from_str(t.as_str())?;
                    if v["type"] == "history" {
                        return anyhow::Ok(v["seq"].as_u64().unwrap_or(0));
                    }
                    if v["type"] == "error" {
                        anyhow::bail!("history request refused: {t}");
                    }
                }
            }
            anyhow::bail!("closed before the history answer")
        })
        .await??;
        sh.tops[r].store(top, Relaxed);
    }
    super::close_ws(ws).await;
    Ok(())
}
