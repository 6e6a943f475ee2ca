//! `bench churn`: at R attempts per second for S seconds, each attempt connects, joins a room,
//! waits for `joined` and closes; counts successes and failures by kind (refused, reset,
//! handshake, timeout, other). Attempts in flight are bounded by the open-files budget; an
//! attempt that would exceed it is counted as `other` instead of being made. With
//! `--token-secret-file` each attempt mints its own HS256 token and presents it, so the
//! figures compare with and without the server verifying one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::args::ChurnArgs;
use super::connect::{self, FailKind};
use super::report::{self, ChurnReport, Failures, round3};
use super::{Ctx, FirstError, close_ws, cpu, progress};

/// Counters shared by the attempts and the coordinator.
#[derive(Default)]
struct Shared {
    /// Attempts started.
    attempted: AtomicU64,
    /// Attempts that got `joined`.
    succeeded: AtomicU64,
    /// Failures by kind: refused, reset, handshake, timeout, other.
    failures: [AtomicU64; 5],
    /// Attempts not finished yet.
    in_flight: AtomicU64,
    /// For the summary.
    first_error: FirstError,
}

impl Shared {
    fn fail(&self, kind: FailKind) {
        let i = match kind {
            FailKind::Refused => 0,
            FailKind::Reset => 1,
            FailKind::Handshake => 2,
            FailKind::Timeout => 3,
            FailKind::Other => 4,
        };
        self.failures[i].fetch_add(1, Relaxed);
    }

    fn failed(&self) -> u64 {
        self.failures.iter().map(|f| f.load(Relaxed)).sum()
    }
}

/// What an attempt needs to mint its token.
struct Minter {
    /// The HS256 key.
    key: jsonwebtoken::EncodingKey,
}

impl Minter {
    /// Reads the secret file (trailing whitespace trimmed, as the server reads it).
    fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            anyhow::anyhow!("cannot read the token secret file {}: {e}", path.display())
        })?;
        let secret = bytes.trim_ascii_end();
        let key = jsonwebtoken::EncodingKey::from_secret(secret)
            .map_err(|e| anyhow::anyhow!("the token secret is unusable: {e}"))?;
        Ok(Self { key })
    }

    /// A token for user `bench-<i>`, valid for an hour.
    fn mint(&self, i: u64) -> Result<String, String> {
        let exp = jsonwebtoken::get_current_timestamp() + 3600;
        let claims = serde_json::json!({ "sub": format!("bench-{i}"), "exp": exp });
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &self.key)
            .map_err(|e| format!("cannot mint a token: {e}"))
    }
}

/// Runs the churn benchmark.
pub async fn run(a: ChurnArgs, ctx: Ctx) -> anyhow::Result<()> {
    let minter = match &a.token_secret_file {
        Some(path) => Some(Arc::new(Minter::load(path)?)),
        None => None,
    };
    let cfg = connect::ws_config(4 << 10, 64 << 10);
    let timeout = ctx.common.timeout();
    let sh = Arc::new(Shared::default());
    let target = Arc::new(ctx.target.clone());
    let server0 = cpu::sample(&ctx.probe);
    let client = cpu::ClientCpu::start();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.duration);
    let prog = progress::Progress::start("churn", &sh, move |sh, t| {
        format!(
            "{t:.0}s attempted {} succeeded {} failed {} in flight {}",
            sh.attempted.load(Relaxed),
            sh.succeeded.load(Relaxed),
            sh.failed(),
            sh.in_flight.load(Relaxed)
        )
    });
    let mut set = JoinSet::new();
    let mut i = 0u64;
    loop {
        let due = start + Duration::from_secs_f64(i as f64 / a.rate);
        if due >= deadline {
            break;
        }
        tokio::time::sleep_until(due).await;
        while set.try_join_next().is_some() {}
        sh.attempted.fetch_add(1, Relaxed);
        if sh.in_flight.load(Relaxed) >= ctx.budget {
            sh.first_error
                .note("attempt skipped: no file descriptors left (too many attempts in flight)");
            sh.fail(FailKind::Other);
            i += 1;
            continue;
        }
        sh.in_flight.fetch_add(1, Relaxed);
        let (target, sh, minter) = (target.clone(), sh.clone(), minter.clone());
        let room = a.room.replace("{i}", &i.to_string());
        let idx = i as usize;
        set.spawn(async move {
            let token = match minter.map(|m| m.mint(idx as u64)).transpose() {
                Ok(token) => token,
                Err(e) => {
                    sh.first_error.note(&e);
                    sh.fail(FailKind::Other);
                    sh.in_flight.fetch_sub(1, Relaxed);
                    return;
                }
            };
            let r = target
                .connect_joined_as(idx, cfg, &room, timeout, token.as_deref())
                .await;
            match r {
                Ok(ws) => {
                    sh.succeeded.fetch_add(1, Relaxed);
                    close_ws(ws).await;
                }
                Err(e) => {
                    sh.first_error.note(&e);
                    sh.fail(e.kind());
                }
            }
            sh.in_flight.fetch_sub(1, Relaxed);
        });
        i += 1;
    }
    // Every attempt ends within its timeouts (connect, join, a 1 s close).
    while set.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let client_pct = client.pct();
    let server1 = cpu::sample(&ctx.probe);
    prog.stop();

    let f = |k: usize| sh.failures[k].load(Relaxed);
    let attempted = sh.attempted.load(Relaxed);
    let server_cpu_s = server0
        .as_ref()
        .zip(server1.as_ref())
        .map(|(s0, s1)| round3(s1.cpu_s_since(s0)));
    let rep = ChurnReport {
        mode: "churn",
        rate: a.rate,
        with_token: minter.is_some(),
        duration_s: round3(elapsed),
        attempted,
        succeeded: sh.succeeded.load(Relaxed),
        failed: sh.failed(),
        failures: Failures {
            refused: f(0),
            reset: f(1),
            handshake: f(2),
            timeout: f(3),
            other: f(4),
        },
        client_cpu_pct: client_pct,
        server_cpu_s,
        server_cpu_us_per_unit: server_cpu_s
            .map(|c| round3(report::ratio(c * 1e6, attempted as f64))),
    };
    let human = format!(
        "churn         {} attempts/s for {} s ({:.2} s until the last finished){}\n\
         attempted     {}, succeeded {}, failed {}\n\
         failures      refused {}, reset {}, handshake {}, timeout {}, other {}\n{}{}{}",
        a.rate,
        a.duration,
        elapsed,
        if minter.is_some() {
            ", each with a token"
        } else {
            ""
        },
        attempted,
        rep.succeeded,
        rep.failed,
        rep.failures.refused,
        rep.failures.reset,
        rep.failures.handshake,
        rep.failures.timeout,
        rep.failures.other,
        sh.first_error.line(),
        report::client_cpu_line(client_pct, ctx.common.threads),
        report::server_line(
            rep.server_cpu_s,
            rep.server_cpu_us_per_unit,
            "attempt",
            None
        ),
    );
    report::emit(ctx.common.json, &human, &rep)
}
