//! `bench fanout`: N subscribers join one room, one separate publisher (not a member) publishes
//! sequence-numbered, timestamped messages at a fixed rate or, with `--rate max`, as fast as a
//! window of W messages in flight allows. A message leaves the window when *every* joined
//! subscriber received it (not just a canary), so `max` measures full fan-out throughput; a
//! window that makes no progress for 1 s is abandoned (counted in `window_stalls`) so one lost
//! message cannot stall the run. After publishing it waits `--grace` seconds for stragglers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use wsfleet_worker::protocol::client;

use super::args::{FanoutArgs, Payload, Rate};
use super::connect::{self, ConnError, Opener};
use super::delivery::{self, DeliveryReport, Measured, Tally};
use super::report::{self, FanoutReport, Hist};
use super::seq::{SeqTotals, SeqTracker, ServerSeqTracker};
use super::window::Window;
use super::{
    Ctx, FirstError, close_ws, cpu, open_subscriber, progress, stream, wait_attempts, wait_for,
    wire,
};

/// A window with no completion for this long is abandoned.
const STALL: Duration = Duration::from_secs(1);

/// Counters shared by the subscribers, the publisher and the coordinator.
#[derive(Default)]
struct Shared {
    /// Subscribers that got `joined`.
    joined: AtomicU64,
    /// Subscribers that could not connect or join.
    failed: AtomicU64,
    /// Messages sent by the publisher.
    published: AtomicU64,
    /// Publishes the server answered with an `error` (e.g. rate limited).
    rejected: AtomicU64,
    /// Distinct deliveries received.
    received: AtomicU64,
    /// Errors after setup: server `error` frames, closes, resets.
    errors: AtomicU64,
    /// µs since the epoch of the latest delivery, for deliveries/s.
    last_delivery_us: AtomicU64,
    /// For the summary.
    first_error: FirstError,
}

/// Runs the fan-out benchmark.
pub async fn run(a: FanoutArgs, ctx: Ctx) -> anyhow::Result<()> {
    connect::check_budget(
        a.subs as u64 + 1,
        ctx.budget,
        "fanout --subs (plus the publisher)",
    )?;
    let epoch = Instant::now();
    let timeout = ctx.common.timeout();
    let max_msg = a.size * 2 + a.room.len() + 1024;
    let sub_cfg = connect::ws_config((a.size * 4).clamp(8 << 10, 64 << 10), max_msg);
    let sh = Arc::new(Shared::default());
    let latency = Hist::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (win_tx, win_rx) = watch::channel(None::<Arc<Window>>);
    let target = Arc::new(ctx.target.clone());

    // The publisher first, so a wrong URL fails fast.
    let pub_cfg = connect::ws_config(16 << 10, max_msg).write_buffer_size(64 << 10);
    let pub_ws = target
        .connect(0, pub_cfg, timeout)
        .await
        .map_err(|e| anyhow::anyhow!("publisher connect: {e}"))?;

    let opener = Opener::new(a.subs, ctx.common.ramp(), ctx.common.connect_concurrency);
    let n = a.subs;
    let prog = progress::Progress::start("fanout", &sh, move |sh, _| {
        let (ok, failed) = (sh.joined.load(Relaxed), sh.failed.load(Relaxed));
        format!("joined {ok}/{n} failed {failed}")
    });
    let mut subs = JoinSet::new();
    for i in 0..a.subs {
        let (target, opener, sh, mut stop_rx, win_rx, room) = (
            target.clone(),
            opener.clone(),
            sh.clone(),
            stop_rx.clone(),
            win_rx.clone(),
            a.room.clone(),
        );
        let mut batch = latency.batch();
        subs.spawn(async move {
            let mut ws = open_subscriber(
                &target,
                &opener,
                i,
                sub_cfg,
                &room,
                timeout,
                &sh.first_error,
                &sh.failed,
            )
            .await?;
            sh.joined.fetch_add(1, Relaxed);
            let mut seen = SeqTracker::default();
            let mut server_seq = ServerSeqTracker::default();
            let mut window: Option<Arc<Window>> = None;
            let mut window_fetched = false;
            loop {
                let msg = tokio::select! {
                    biased;
                    _ = stop_rx.changed() => break,
                    m = ws.next() => m,
                };
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        if let Some(d) = wire::delivery(t.as_str()) {
                            let now = epoch.elapsed().as_micros() as u64;
                            batch.record(now.saturating_sub(d.data.t));
                            if let Some(q) = d.seq {
                                server_seq.observe(q);
                            }
                            if seen.observe(d.data.p) {
                                sh.received.fetch_add(1, Relaxed);
                                sh.last_delivery_us.fetch_max(now, Relaxed);
                                if !window_fetched {
                                    // Set before the first publish; read once.
                                    window = win_rx.borrow().clone();
                                    window_fetched = true;
                                }
                                if let Some(w) = &window {
                                    w.received(d.data.p);
                                }
                            }
                        } else if client::classify(t.as_str()) == client::Kind::Error {
                            sh.errors.fetch_add(1, Relaxed);
                            sh.first_error
                                .note(format_args!("subscriber got: {}", wire::short(t.as_str())));
                        }
                    }
                    Some(Ok(Message::Close(f))) => {
                        sh.errors.fetch_add(1, Relaxed);
                        sh.first_error.note(format_args!(
                            "subscriber closed by server: {}",
                            wire::close_text(f.as_ref())
                        ));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        sh.errors.fetch_add(1, Relaxed);
                        sh.first_error
                            .note(format_args!("subscriber: {}", ConnError::ws(e)));
                        break;
                    }
                    None => {
                        sh.errors.fetch_add(1, Relaxed);
                        sh.first_error.note("subscriber: EOF");
                        break;
                    }
                }
            }
            batch.flush();
            close_ws(ws).await;
            Some((seen, server_seq))
        });
    }
    let n = a.subs as u64;
    wait_attempts(&sh.joined, &sh.failed, n).await;
    prog.stop();
    let joined = sh.joined.load(Relaxed);
    if joined == 0 {
        let _ = stop_tx.send(true);
        subs.shutdown().await;
        anyhow::bail!(
            "no subscriber could join ({})",
            sh.first_error.get().unwrap_or_default()
        );
    }
    // Let presence messages from the joins drain before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let window =
        matches!(a.rate, Rate::Max).then(|| Arc::new(Window::new(a.window, joined as usize)));
    let _ = win_tx.send(window.clone());
    let server0 = cpu::sample(&ctx.probe);
    let wire0 = stream::WIRE_BYTES_IN.load(Relaxed);
    let client = cpu::ClientCpu::start();
    let start = Instant::now();
    let start_us = epoch.elapsed().as_micros() as u64;
    let expected_now = {
        let sh = sh.clone();
        move || {
            sh.published
                .load(Relaxed)
                .saturating_sub(sh.rejected.load(Relaxed))
                * joined
        }
    };
    let prog = progress::Progress::start("fanout", &sh, move |sh, t| {
        let (p, r) = (sh.published.load(Relaxed), sh.received.load(Relaxed));
        format!(
            "{t:.0}s published {p}, received {r}/{} ({:.0}/s), errors {}",
            p * joined,
            r as f64 / t,
            sh.errors.load(Relaxed)
        )
    });

    // The publisher's reader: records acks (which publishes the server accepted), counts
    // `error` replies (e.g. its per-connection rate limit) and unexpected closes.
    let (mut sink, mut stream) = pub_ws.split();
    let reader = {
        let (sh, mut stop_rx) = (sh.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let mut acked = SeqTracker::default();
            loop {
                let m = tokio::select! { biased; _ = stop_rx.changed() => break, m = stream.next() => m };
                match m {
                    Some(Ok(Message::Text(t))) => {
                        if let Some(id) = wire::ack_id(t.as_str()) {
                            acked.observe(id);
                        } else if client::classify(t.as_str()) == client::Kind::Error {
                            sh.errors.fetch_add(1, Relaxed);
                            sh.rejected.fetch_add(1, Relaxed);
                            sh.first_error
                                .note(format_args!("publisher got: {}", wire::short(t.as_str())));
                        }
                    }
                    Some(Ok(Message::Close(f))) => {
                        sh.errors.fetch_add(1, Relaxed);
                        sh.first_error.note(format_args!(
                            "publisher closed by server: {}",
                            wire::close_text(f.as_ref())
                        ));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
            (stream, acked)
        })
    };
    let frames = match a.payload {
        Payload::Pad => wire::Publisher::new(&a.room, a.size),
        Payload::Json => wire::Publisher::json(&a.room, a.size),
    };
    let deadline = start + Duration::from_secs_f64(a.duration);
    let mut stalls = 0u64;
    let publish = async {
        let mut i = 0u64;
        match (a.rate, &window) {
            (Rate::PerSec(r), _) => loop {
                let due = start + Duration::from_secs_f64(i as f64 / r);
                if due >= deadline {
                    break;
                }
                if due > Instant::now() {
                    sink.flush().await?;
                    tokio::time::sleep_until(due).await;
                }
                let t = epoch.elapsed().as_micros() as u64;
                sink.feed(Message::text(frames.frame(i, t))).await?;
                i += 1;
                sh.published.store(i, Relaxed);
            },
            (Rate::Max, Some(w)) => 'outer: loop {
                while i - w.done() >= a.window as u64 {
                    sink.flush().await?;
                    let before = w.done();
                    let wake = tokio::select! {
                        _ = w.notify.notified() => true,
                        _ = tokio::time::sleep(STALL) => false,
                        _ = tokio::time::sleep_until(deadline) => break 'outer,
                    };
                    if !wake && w.done() == before {
                        w.abandon_all();
                        stalls += 1;
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
                w.publish(i);
                let t = epoch.elapsed().as_micros() as u64;
                sink.feed(Message::text(frames.frame(i, t))).await?;
                i += 1;
                sh.published.store(i, Relaxed);
                if i & 15 == 0 {
                    sink.flush().await?;
                }
            },
            (Rate::Max, None) => {}
        }
        sink.flush().await?;
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    };
    if let Err(e) = publish.await {
        sh.errors.fetch_add(1, Relaxed);
        sh.first_error
            .note(format_args!("publisher: {}", ConnError::ws(e)));
    }
    let sent = sh.published.load(Relaxed);
    let grace_end = Instant::now() + Duration::from_secs_f64(a.grace);
    wait_for(
        || sh.received.load(Relaxed) >= expected_now(),
        Some(grace_end),
    )
    .await;
    let client_pct = client.pct();
    let server1 = cpu::sample(&ctx.probe);
    let wire = stream::WIRE_BYTES_IN.load(Relaxed) - wire0;
    prog.stop();
    let _ = stop_tx.send(true);

    let acked = match reader.await {
        Ok((stream, acked)) => {
            if let Ok(ws) = sink.reunite(stream) {
                close_ws(ws).await;
            }
            acked
        }
        Err(_) => SeqTracker::default(),
    };
    // Published = accepted by the server (acked); rejected publishes are expected nowhere.
    let published = acked.unique;
    let mut totals = SeqTotals::default();
    while let Some(r) = subs.join_next().await {
        if let Ok(Some((seen, server_seq))) = r {
            totals.add(&seen, &server_seq, &acked);
        }
    }

    let elapsed = delivery::elapsed_s(start, start_us, sh.last_delivery_us.load(Relaxed));
    let t = Tally {
        published,
        sent,
        expected: published * joined,
        seq: totals,
    };
    let m = Measured {
        elapsed,
        latency: latency.pcts(),
        errors: sh.failed.load(Relaxed) + sh.errors.load(Relaxed),
        window_stalls: stalls,
        client_cpu_pct: client_pct,
        server: (server0, server1),
    };
    let deliveries = sh.received.load(Relaxed);
    let rep = FanoutReport {
        mode: "fanout",
        subs: a.subs,
        delivery: DeliveryReport::new(&a.rate, a.size, &t, m),
        wire_bytes_per_delivery: (deliveries > 0).then(|| wire as f64 / deliveries as f64),
        deflate_negotiated: connect::DEFLATE_NEGOTIATED.load(Relaxed),
    };
    let rate = match a.rate {
        Rate::PerSec(r) => format!("{r}/s"),
        Rate::Max => format!("max (window {})", a.window),
    };
    let human = format!(
        "fanout        {} subs ({} failed to join), room {:?}, rate {rate}, {} B, {:.2} s\n\
         wire          {} B read per delivery, permessage-deflate on {} connections\n{}",
        a.subs,
        sh.failed.load(Relaxed),
        a.room,
        a.size,
        elapsed,
        rep.wire_bytes_per_delivery
            .map_or_else(|| "-".to_owned(), |b| format!("{b:.0}")),
        rep.deflate_negotiated,
        rep.delivery
            .summary("", &sh.first_error.line(), ctx.common.threads),
    );
    report::emit(ctx.common.json, &human, &rep)
}
