//! `bench api`: WebSocket subscribers join one room, then HTTP connections publish into it
//! through the master's server API (`publish`, or `publish_batch` with `--batch`), each
//! keeping one request in flight on a keep-alive connection. Reports requests/s,
//! publishes/s, the request latency, and deliveries/s counted at the subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use wsfleet_worker::protocol::client;

use super::args_api::ApiArgs;
use super::report::{self, Hist, Pcts, round3};
use super::{Ctx, FirstError, close_ws, connect, cpu, open_subscriber, wait_attempts, wait_for};

/// Counters shared by the subscribers, the HTTP connections and the coordinator.
#[derive(Default)]
struct Shared {
    /// Subscribers that got `joined`.
    joined: AtomicU64,
    /// Subscribers that could not connect or join.
    failed: AtomicU64,
    /// Requests answered 200.
    requests: AtomicU64,
    /// Publishes in those requests.
    publishes: AtomicU64,
    /// Requests not answered 200, and broken connections.
    errors: AtomicU64,
    /// `message` frames the subscribers received.
    received: AtomicU64,
    /// µs since the start of the run of the latest delivery.
    last_delivery_us: AtomicU64,
    /// For the summary.
    first_error: FirstError,
}

/// The JSON line.
#[derive(Debug, Serialize)]
struct ApiReport {
    /// Always "api".
    mode: &'static str,
    /// Subscribers joined.
    subs: u64,
    /// HTTP connections.
    http_conns: usize,
    /// Publishes per request.
    batch: usize,
    /// Approximate bytes of `data`.
    size: usize,
    /// Seconds of publishing.
    duration_s: f64,
    /// Requests answered 200.
    requests: u64,
    /// Requests per second.
    requests_per_s: f64,
    /// Publishes ordered.
    publishes: u64,
    /// Publishes per second.
    publishes_per_s: f64,
    /// Deliveries expected (publishes × subscribers).
    expected: u64,
    /// Deliveries received.
    deliveries: u64,
    /// Deliveries per second, from the first publish to the last delivery.
    deliveries_per_s: f64,
    /// Request latency, ms.
    latency_ms: Pcts,
    /// Failed requests and connections.
    errors: u64,
    /// The tester's CPU use, % of one core.
    client_cpu_pct: f64,
}

/// Runs the API benchmark.
pub async fn run(a: ApiArgs, ctx: Ctx) -> anyhow::Result<()> {
    let key = a.key()?;
    connect::check_budget(
        (a.subs + a.conns) as u64,
        ctx.budget,
        "api --subs plus --conns",
    )?;
    let epoch = Instant::now();
    let timeout = ctx.common.timeout();
    let sh = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let target = Arc::new(ctx.target.clone());
    let opener = connect::Opener::new(a.subs, ctx.common.ramp(), ctx.common.connect_concurrency);
    let cfg = connect::ws_config(16 << 10, a.size * 2 + 1024);
    let mut subs = JoinSet::new();
    for i in 0..a.subs {
        let (target, opener, sh, mut stop_rx, room) = (
            target.clone(),
            opener.clone(),
            sh.clone(),
            stop_rx.clone(),
            a.room.clone(),
        );
        subs.spawn(async move {
            let Some(mut ws) = open_subscriber(
                &target,
                &opener,
                i,
                cfg,
                &room,
                timeout,
                &sh.first_error,
                &sh.failed,
            )
            .await
            else {
                return;
            };
            sh.joined.fetch_add(1, Relaxed);
            loop {
                let m =
                    tokio::select! { biased; _ = stop_rx.changed() => break, m = ws.next() => m };
                match m {
                    Some(Ok(Message::Text(t))) => {
                        if client::classify(t.as_str()) == client::Kind::Message {
                            sh.received.fetch_add(1, Relaxed);
                            let now = epoch.elapsed().as_micros() as u64;
                            sh.last_delivery_us.fetch_max(now, Relaxed);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        sh.errors.fetch_add(1, Relaxed);
                        sh.first_error.note("a subscriber's connection ended");
                        break;
                    }
                }
            }
            close_ws(ws).await;
        });
    }
    wait_attempts(&sh.joined, &sh.failed, a.subs as u64).await;
    let joined = sh.joined.load(Relaxed);
    // Let the joins' presence notices drain before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    sh.received.store(0, Relaxed);

    let latency = Hist::new();
    let body = request_body(&a);
    let path = if a.batch == 1 {
        "/api/publish"
    } else {
        "/api/publish_batch"
    };
    let request = Arc::new(format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: apikey {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        a.api,
        body.len()
    ));
    let server0 = cpu::sample(&ctx.probe);
    let client_cpu = cpu::ClientCpu::start();
    let start = Instant::now();
    let start_us = epoch.elapsed().as_micros() as u64;
    let deadline = start + Duration::from_secs_f64(a.duration);
    let mut publishers = JoinSet::new();
    for _ in 0..a.conns {
        let (sh, request, addr, batch) =
            (sh.clone(), request.clone(), a.api.clone(), a.batch as u64);
        let mut record = latency.batch();
        publishers.spawn(async move {
            let mut conn = match TcpStream::connect(&addr).await {
                Ok(s) => BufStream::new(s),
                Err(e) => {
                    sh.errors.fetch_add(1, Relaxed);
                    sh.first_error.note(format_args!("API connect {addr}: {e}"));
                    return;
                }
            };
            let _ = conn.get_ref().set_nodelay(true);
            while Instant::now() < deadline {
                let sent = Instant::now();
                match exchange(&mut conn, request.as_bytes()).await {
                    Ok(200) => {
                        record.record(sent.elapsed().as_micros() as u64);
                        sh.requests.fetch_add(1, Relaxed);
                        sh.publishes.fetch_add(batch, Relaxed);
                    }
                    Ok(status) => {
                        sh.errors.fetch_add(1, Relaxed);
                        sh.first_error.note(format_args!("API answered {status}"));
                    }
                    Err(e) => {
                        sh.errors.fetch_add(1, Relaxed);
                        sh.first_error.note(format_args!("API request: {e}"));
                        return;
                    }
                }
            }
        });
    }
    while publishers.join_next().await.is_some() {}
    let elapsed_pub = start.elapsed().as_secs_f64();
    let expected = sh.publishes.load(Relaxed) * joined;
    let grace_end = Instant::now() + Duration::from_secs_f64(a.grace);
    wait_for(|| sh.received.load(Relaxed) >= expected, Some(grace_end)).await;
    let client_pct = client_cpu.pct();
    let server1 = cpu::sample(&ctx.probe);
    let _ = stop_tx.send(true);
    while subs.join_next().await.is_some() {}

    let (requests, publishes) = (sh.requests.load(Relaxed), sh.publishes.load(Relaxed));
    let deliveries = sh.received.load(Relaxed);
    let last = sh.last_delivery_us.load(Relaxed);
    let delivery_s = if last > start_us {
        (last - start_us) as f64 / 1e6
    } else {
        elapsed_pub
    };
    let rep = ApiReport {
        mode: "api",
        subs: joined,
        http_conns: a.conns,
        batch: a.batch,
        size: a.size,
        duration_s: round3(elapsed_pub),
        requests,
        requests_per_s: round3(requests as f64 / elapsed_pub),
        publishes,
        publishes_per_s: round3(publishes as f64 / elapsed_pub),
        expected,
        deliveries,
        deliveries_per_s: round3(deliveries as f64 / delivery_s),
        latency_ms: latency.pcts().scaled(1000.0),
        errors: sh.errors.load(Relaxed) + sh.failed.load(Relaxed),
        client_cpu_pct: round3(client_pct),
    };
    let cpu_s = server0
        .as_ref()
        .zip(server1.as_ref())
        .map(|(s0, s1)| round3(s1.cpu_s_since(s0)));
    let rss = server1.map(|s| s.rss_bytes);
    let human = format!(
        "api           {} subs ({} failed to join), {} HTTP conns, batch {}, {} B, {:.2} s\n\
         requests      {} ({:.0}/s), publishes {} ({:.0}/s)\n\
         latency       p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n\
         deliveries    {}/{} ({:.0}/s)\n\
         errors        {}\n{}{}{}",
        joined,
        sh.failed.load(Relaxed),
        a.conns,
        a.batch,
        a.size,
        elapsed_pub,
        requests,
        rep.requests_per_s,
        publishes,
        rep.publishes_per_s,
        rep.latency_ms.p50,
        rep.latency_ms.p99,
        rep.latency_ms.max,
        deliveries,
        expected,
        rep.deliveries_per_s,
        rep.errors,
        sh.first_error.line(),
        report::client_cpu_line(client_pct, ctx.common.threads),
        report::server_line(
            cpu_s,
            cpu_s.map(|c| c * 1e6 / publishes.max(1) as f64),
            "publish",
            rss
        ),
    );
    report::emit(ctx.common.json, &human, &rep)
}

/// The request body every request sends: one publish or a batch of them.
fn request_body(a: &ApiArgs) -> String {
    let pad = "x".repeat(a.size.saturating_sub(16));
    let one = serde_json::json!({"room": a.room, "data": {"pad": pad}});
    if a.batch == 1 {
        one.to_string()
    } else {
        serde_json::json!({"publishes": vec![one; a.batch]}).to_string()
    }
}

/// Sends one request on a keep-alive connection and reads the answer; returns its status.
async fn exchange(conn: &mut BufStream<TcpStream>, request: &[u8]) -> std::io::Result<u16> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    conn.write_all(request).await?;
    conn.flush().await?;
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("not an HTTP answer"))?;
    let mut length = None;
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(bad("the answer ended in its headers"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length.ok_or_else(|| bad("an answer without Content-Length"))?];
    conn.read_exact(&mut body).await?;
    Ok(status)
}
