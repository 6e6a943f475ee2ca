//! `bench rooms`: everyday chat. R rooms of M members each; every member joins its room and
//! publishes into it at `--rate` per second (spread evenly over the second across members) or,
//! with `--rate max`, keeps `--window` of its own publishes in flight until it receives them
//! back. Each publish's `data` carries (sender, counter, send time), so every receiver checks
//! loss, duplicates and order per sender, and the room's server `seq` for gaps and
//! regressions. Publishing starts once every member joined and lasts `--duration`; then the
//! run waits up to `--grace` for stragglers.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use wsfleet_worker::protocol::client;

use super::args::Rate;
use super::args_rooms::RoomsArgs;
use super::connect::{self, ConnError, Opener, Ws};
use super::delivery::{self, DeliveryReport, Measured, Tally};
use super::report::{self, Batch, Hist};
use super::rooms_report::RoomsReport;
use super::seq::{SeqTracker, ServerSeqTracker};
use super::{Ctx, FirstError, close_ws, cpu, progress, wait_attempts, wait_for, wire};

/// A member's window with no own publish coming back for this long is reset.
const STALL: Duration = Duration::from_secs(1);

/// What a member puts in `data` besides padding.
#[derive(Debug, Deserialize, PartialEq)]
struct RoomData {
    /// The sender: its connection index (room × members + member).
    s: u64,
    /// The sender's own counter, from 0.
    p: u64,
    /// Send time, µs since the run's epoch.
    t: u64,
}

/// Builds one member's publish frames (`id` = counter, so acks say which were accepted).
struct Frames {
    /// `{"type":"publish","room":R,"id":`.
    prefix: String,
    /// The sender's index.
    sender: u64,
    /// Padding to reach about `--size` bytes of data.
    pad: String,
}

impl Frames {
    fn new(room: &str, sender: u64, size: usize) -> Frames {
        let used = format!(r#"{{"s":{sender},"p":0,"t":0,"x":""}}"#).len();
        Frames {
            prefix: client::publish_prefix(room),
            sender,
            pad: "x".repeat(size.saturating_sub(used + 12)),
        }
    }

    fn frame(&self, p: u64, t: u64) -> String {
        let mut s = String::with_capacity(self.prefix.len() + self.pad.len() + 80);
        s.push_str(&self.prefix);
        let _ = write!(
            s,
            r#"{p},"data":{{"s":{},"p":{p},"t":{t},"x":"{}"}}}}"#,
            self.sender, self.pad
        );
        s
    }
}

/// Counters shared by the members and the coordinator.
#[derive(Default)]
struct Shared {
    /// Members that got `joined`.
    joined: AtomicU64,
    /// Members that could not connect or join.
    failed: AtomicU64,
    /// Publishes sent.
    sent: AtomicU64,
    /// Publishes acked by the server.
    acked: AtomicU64,
    /// Distinct deliveries received.
    received: AtomicU64,
    /// Server `error` frames, closes, resets after joining.
    errors: AtomicU64,
    /// Windows reset after a stall (`--rate max`).
    stalls: AtomicU64,
    /// µs since the epoch of the latest delivery.
    last_delivery_us: AtomicU64,
    /// For the summary.
    first_error: FirstError,
}

/// When publishing happens, sent to every member once all joined.
#[derive(Clone, Copy)]
struct Go {
    /// The first publish of the run.
    start: Instant,
    /// No publish at or after this.
    deadline: Instant,
}

/// One member's accounting, handed back at the end.
struct Member {
    /// Its room.
    room: usize,
    /// Its index in the room.
    member: usize,
    /// Its publishes the server acked.
    acked: SeqTracker,
    /// Publishes sent.
    sent: u64,
    /// What it received from each member of its room, by member index.
    from: Vec<SeqTracker>,
    /// The room's server `seq` as it saw it.
    server_seq: ServerSeqTracker,
}

/// What a member task needs besides its connection.
struct MemberCtx {
    /// Connection index = room × members + member.
    idx: usize,
    /// Members per room.
    members: usize,
    /// The publish rate.
    rate: Rate,
    /// The window for `--rate max`.
    window: u64,
    /// Connections in the run (spreads the publish phases).
    total: usize,
    /// The run's clock origin (send times in `data`).
    epoch: Instant,
    /// Its frames.
    frames: Frames,
    /// Counters.
    sh: Arc<Shared>,
}

/// Runs the many-rooms benchmark.
pub async fn run(a: RoomsArgs, ctx: Ctx) -> anyhow::Result<()> {
    let total = a.rooms * a.members;
    connect::check_budget(total as u64, ctx.budget, "rooms --rooms × --members")?;
    let epoch = Instant::now();
    let timeout = ctx.common.timeout();
    let max_msg = a.size * 2 + a.prefix.len() + 1024;
    let cfg = connect::ws_config((a.size * 4).clamp(4 << 10, 64 << 10), max_msg)
        .write_buffer_size(16 << 10);
    let sh = Arc::new(Shared::default());
    let latency = Hist::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (go_tx, go_rx) = watch::channel(None::<Go>);
    let target = Arc::new(ctx.target.clone());
    let opener = Opener::new(total, ctx.common.ramp(), ctx.common.connect_concurrency);
    let prog = progress::Progress::start("rooms", &sh, move |sh, _| {
        let (ok, failed) = (sh.joined.load(Relaxed), sh.failed.load(Relaxed));
        format!("joined {ok}/{total} failed {failed}")
    });
    let mut set = JoinSet::new();
    for idx in 0..total {
        let (room, member) = (idx / a.members, idx % a.members);
        let name = a.room(room);
        let (target, opener, stop_rx, go_rx) = (
            target.clone(),
            opener.clone(),
            stop_rx.clone(),
            go_rx.clone(),
        );
        let mc = MemberCtx {
            idx,
            members: a.members,
            rate: a.rate,
            window: a.window as u64,
            total,
            epoch,
            frames: Frames::new(&name, idx as u64, a.size),
            sh: sh.clone(),
        };
        let batch = latency.batch();
        set.spawn(async move {
            let permit = opener.slot(idx).await;
            let r = target.connect_joined(idx, cfg, &name, timeout).await;
            drop(permit);
            let ws = match r {
                Ok(ws) => ws,
                Err(e) => {
                    mc.sh.first_error.note(format_args!("member: {e}"));
                    mc.sh.failed.fetch_add(1, Relaxed);
                    return None;
                }
            };
            mc.sh.joined.fetch_add(1, Relaxed);
            let mut m = Member {
                room,
                member,
                acked: SeqTracker::default(),
                sent: 0,
                from: vec![SeqTracker::default(); mc.members],
                server_seq: ServerSeqTracker::default(),
            };
            let ws = member_loop(ws, &mc, &mut m, batch, go_rx, stop_rx).await;
            if let Some(ws) = ws {
                close_ws(ws).await;
            }
            Some(m)
        });
    }
    wait_attempts(&sh.joined, &sh.failed, total as u64).await;
    prog.stop();
    let joined = sh.joined.load(Relaxed);
    if joined == 0 {
        let _ = stop_tx.send(true);
        set.shutdown().await;
        anyhow::bail!(
            "no member could join ({})",
            sh.first_error.get().unwrap_or_default()
        );
    }
    // Let presence notices from the joins drain before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let server0 = cpu::sample(&ctx.probe);
    let client = cpu::ClientCpu::start();
    let start = Instant::now();
    let start_us = epoch.elapsed().as_micros() as u64;
    let deadline = start + Duration::from_secs_f64(a.duration);
    let _ = go_tx.send(Some(Go { start, deadline }));
    let prog = progress::Progress::start("rooms", &sh, move |sh, t| {
        let (s, r) = (sh.sent.load(Relaxed), sh.received.load(Relaxed));
        format!(
            "{t:.0}s sent {s}, received {r} ({:.0}/s), errors {}",
            r as f64 / t,
            sh.errors.load(Relaxed)
        )
    });
    tokio::time::sleep_until(deadline).await;
    // Every member of a full room receives every accepted publish of its room; with failed
    // joins the exact count is only known at the end, so the grace period runs in full.
    let members = a.members as u64;
    let all_joined = sh.failed.load(Relaxed) == 0;
    wait_for(
        || {
            let acked = sh.acked.load(Relaxed);
            all_joined
                && sh.sent.load(Relaxed) == acked
                && sh.received.load(Relaxed) >= acked * members
        },
        Some(Instant::now() + Duration::from_secs_f64(a.grace)),
    )
    .await;
    let client_pct = client.pct();
    let server1 = cpu::sample(&ctx.probe);
    prog.stop();
    let _ = stop_tx.send(true);

    let mut by_room: Vec<Vec<Option<Member>>> = (0..a.rooms)
        .map(|_| (0..a.members).map(|_| None).collect())
        .collect();
    while let Some(r) = set.join_next().await {
        if let Ok(Some(m)) = r {
            let (room, member) = (m.room, m.member);
            by_room[room][member] = Some(m);
        }
    }
    let t = tally(&by_room);

    let elapsed = delivery::elapsed_s(start, start_us, sh.last_delivery_us.load(Relaxed));
    let m = Measured {
        elapsed,
        latency: latency.pcts(),
        errors: sh.failed.load(Relaxed) + sh.errors.load(Relaxed),
        window_stalls: sh.stalls.load(Relaxed),
        client_cpu_pct: client_pct,
        server: (server0, server1),
    };
    let rep = RoomsReport {
        mode: "rooms",
        rooms: a.rooms,
        members: a.members,
        joined,
        delivery: DeliveryReport::new(&a.rate, a.size, &t, m),
    };
    let rate = match a.rate {
        Rate::PerSec(r) => format!("{r}/s per member"),
        Rate::Max => format!("max (window {} per member)", a.window),
    };
    let human = format!(
        "rooms         {} rooms × {} members ({} joined), rate {rate}, {} B, {:.2} s\n{}",
        a.rooms,
        a.members,
        joined,
        a.size,
        elapsed,
        rep.delivery
            .summary(" by sender", &sh.first_error.line(), ctx.common.threads),
    );
    report::emit(ctx.common.json, &human, &rep)
}

/// Adds up every receiver's view of every sender of its room (members that never joined
/// neither send nor receive).
fn tally(by_room: &[Vec<Option<Member>>]) -> Tally {
    let mut t = Tally::default();
    let none = ServerSeqTracker::default();
    for room in by_room {
        for sender in room.iter().flatten() {
            t.published += sender.acked.unique;
            t.sent += sender.sent;
        }
        for receiver in room.iter().flatten() {
            for sender in room.iter().flatten() {
                t.expected += sender.acked.unique;
                t.seq
                    .add(&receiver.from[sender.member], &none, &sender.acked);
            }
            t.seq.server_seq_regressions += receiver.server_seq.regressions;
            t.seq.server_seq_gaps += receiver.server_seq.gaps;
        }
    }
    t
}

/// One member after its `joined`: waits for the go, then publishes and reads until stopped.
/// Returns the connection unless the server closed it.
async fn member_loop(
    mut ws: Ws,
    mc: &MemberCtx,
    m: &mut Member,
    mut batch: Batch,
    mut go_rx: watch::Receiver<Option<Go>>,
    mut stop_rx: watch::Receiver<bool>,
) -> Option<Ws> {
    let sh = &mc.sh;
    // Until the go: read (presence of later joins) so the server never sees a slow reader.
    let go = loop {
        if let Some(go) = *go_rx.borrow_and_update() {
            break go;
        }
        tokio::select! {
            biased;
            _ = stop_rx.changed() => return Some(ws),
            r = go_rx.changed() => if r.is_err() { return Some(ws) },
            msg = ws.next() => if !incoming(msg, mc, m, &mut batch) { return None },
        }
    };
    let mut publishing = true;
    let mut next_due = match mc.rate {
        // Spread the members' phases evenly over one period.
        Rate::PerSec(r) => go.start + Duration::from_secs_f64(mc.idx as f64 / mc.total as f64 / r),
        Rate::Max => go.start,
    };
    let mut abandoned = 0u64;
    let mut last_progress = (Instant::now(), 0u64);
    loop {
        let own = m.from[m.member].unique;
        // Own publishes neither received back nor given up on.
        let in_flight = m.sent.saturating_sub(own + abandoned);
        let wake = match mc.rate {
            _ if !publishing => go.deadline + Duration::from_secs(86_400),
            Rate::PerSec(_) => next_due,
            Rate::Max if in_flight < mc.window => Instant::now(),
            Rate::Max => {
                if own != last_progress.1 {
                    last_progress = (Instant::now(), own);
                }
                last_progress.0 + STALL
            }
        };
        tokio::select! {
            biased;
            _ = stop_rx.changed() => break,
            msg = ws.next() => if !incoming(msg, mc, m, &mut batch) { batch.flush(); return None },
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= go.deadline {
                    publishing = false;
                    continue;
                }
                let burst = match mc.rate {
                    Rate::PerSec(r) => {
                        next_due += Duration::from_secs_f64(1.0 / r);
                        1
                    }
                    Rate::Max if in_flight < mc.window => mc.window - in_flight,
                    Rate::Max => {
                        // Nothing of ours came back for a second: give up on what is in flight.
                        abandoned += in_flight;
                        last_progress = (now, own);
                        sh.stalls.fetch_add(1, Relaxed);
                        0
                    }
                };
                for _ in 0..burst {
                    let t = mc.epoch.elapsed().as_micros() as u64;
                    if let Err(e) = ws.feed(Message::text(mc.frames.frame(m.sent, t))).await {
                        sh.errors.fetch_add(1, Relaxed);
                        sh.first_error.note(format_args!("member publish: {}", ConnError::ws(e)));
                        batch.flush();
                        return None;
                    }
                    m.sent += 1;
                }
                sh.sent.fetch_add(burst, Relaxed);
                if let Err(e) = ws.flush().await {
                    sh.errors.fetch_add(1, Relaxed);
                    sh.first_error.note(format_args!("member publish: {}", ConnError::ws(e)));
                    batch.flush();
                    return None;
                }
            }
        }
    }
    batch.flush();
    Some(ws)
}

/// Handles one incoming frame; false when the connection is over.
fn incoming(
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    mc: &MemberCtx,
    m: &mut Member,
    batch: &mut Batch,
) -> bool {
    let sh = &mc.sh;
    match msg {
        Some(Ok(Message::Text(t))) => {
            let text = t.as_str();
            if let Some(d) = client::message::<RoomData>(text) {
                let now = mc.epoch.elapsed().as_micros() as u64;
                batch.record(now.saturating_sub(d.data.t));
                if let Some(q) = d.seq {
                    m.server_seq.observe(q);
                }
                let first = (m.room * mc.members) as u64;
                let k = d.data.s.wrapping_sub(first);
                if k < mc.members as u64 && m.from[k as usize].observe(d.data.p) {
                    sh.received.fetch_add(1, Relaxed);
                    sh.last_delivery_us.fetch_max(now, Relaxed);
                }
            } else if let Some(id) = wire::ack_id(text) {
                if m.acked.observe(id) {
                    sh.acked.fetch_add(1, Relaxed);
                }
            } else if client::classify(text) == client::Kind::Error {
                sh.errors.fetch_add(1, Relaxed);
                sh.first_error
                    .note(format_args!("member got: {}", wire::short(text)));
            }
            true
        }
        Some(Ok(Message::Close(f))) => {
            sh.errors.fetch_add(1, Relaxed);
            sh.first_error.note(format_args!(
                "member closed by server: {}",
                wire::close_text(f.as_ref())
            ));
            false
        }
        Some(Ok(_)) => true,
        Some(Err(e)) => {
            sh.errors.fetch_add(1, Relaxed);
            sh.first_error
                .note(format_args!("member: {}", ConnError::ws(e)));
            false
        }
        None => {
            sh.errors.fetch_add(1, Relaxed);
            sh.first_error.note("member: EOF");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_back() {
        let f = Frames::new("r\"1", 42, 128);
        let text = f.frame(7, 99);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["id"].as_u64()),
            (Some("publish"), Some(7))
        );
        assert_eq!(v["room"], "r\"1");
        let data = serde_json::to_string(&v["data"]).unwrap();
        assert!((100..=160).contains(&data.len()), "{data}");
        let back: RoomData = serde_json::from_value(v["data"].clone()).unwrap();
        assert_eq!(back, RoomData { s: 42, p: 7, t: 99 });
    }

    fn member(room: usize, member: usize, acked: &[u64], got: &[&[u64]]) -> Member {
        let mut m = Member {
            room,
            member,
            acked: SeqTracker::default(),
            sent: acked.len() as u64,
            from: got
                .iter()
                .map(|ps| {
                    let mut t = SeqTracker::default();
                    ps.iter().for_each(|p| {
                        t.observe(*p);
                    });
                    t
                })
                .collect(),
            server_seq: ServerSeqTracker::default(),
        };
        acked.iter().for_each(|p| {
            m.acked.observe(*p);
        });
        m
    }

    #[test]
    fn tally_counts_per_sender() {
        // Room 0: two members, each published 0..3; member 1 missed sender 0's #2 and got
        // sender 1's #0 after #1. Room 1: its second member never joined.
        let rooms = vec![
            vec![
                Some(member(0, 0, &[0, 1, 2], &[&[0, 1, 2], &[0, 1, 2]])),
                Some(member(0, 1, &[0, 1, 2], &[&[0, 1], &[1, 0, 2]])),
            ],
            vec![Some(member(1, 0, &[0], &[&[0], &[]])), None],
        ];
        let t = tally(&rooms);
        assert_eq!((t.published, t.sent, t.expected), (7, 7, 13));
        assert_eq!((t.seq.unique, t.seq.lost, t.seq.out_of_order), (12, 1, 1));
    }
}
