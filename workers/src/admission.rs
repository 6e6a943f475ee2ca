//! Who may open another WebSocket: the per-user and per-IP connection limits and the
//! per-IP connect rate, checked at the upgrade (429 past them).
//!
//! **Connection limits are fleet-wide.** When `max_connections_per_user` or
//! `max_connections_per_ip` is set, the upgrade is held while the worker asks the master
//! ([`ToMaster::Admit`]), which counts every worker's connections by user and by IP and
//! answers ([`ToWorker::Admitted`](crate::ipc::ToWorker::Admitted)); the connection's
//! [`Admitted`] gives its place back ([`ToMaster::Release`]) when it ends, and the master
//! drops every place of a worker that exits. No answer within the handshake timeout is a
//! 503 (the master is behind). With neither limit set there is no round trip.
//!
//! **The connect rate is per worker.** `ip_connects_per_minute` is a token bucket per IP
//! in each worker, so one IP may connect up to `rate × workers` times a minute across the
//! fleet (the kernel spreads its connections over the workers). Counting it in the master
//! would put a round trip on every upgrade of a rate-limited fleet.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::conn::now_ms;
pub use crate::ipc::Limited;
use crate::ipc::{ToMaster, WorkerSettings};
use crate::worker::Worker;

/// Past this many tracked IPs, buckets that have refilled completely are forgotten.
const PRUNE_AT: usize = 4096;

impl Limited {
    /// The header value and what the client should do.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Self::User => (
                "user",
                "too many connections for this user across the fleet; close one first\n",
            ),
            Self::Ip => (
                "ip",
                "too many connections from this address across the fleet; close one first\n",
            ),
            Self::Rate => ("rate", "too many connects from this address; slow down\n"),
        }
    }
}

/// Why an upgrade was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A limit was reached (429).
    Limited(Limited),
    /// The master did not answer in time (503: retry).
    Unanswered,
}

/// A per-IP token bucket for the connect rate.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Connects left.
    tokens: f64,
    /// When it was last refilled ([`now_ms`]).
    at: u32,
}

/// One worker's side of the limits.
#[derive(Debug, Default)]
pub struct Admission {
    /// Connect-rate buckets by client IP (only when the rate limit is on).
    rate: RefCell<HashMap<IpAddr, Bucket>>,
    /// Upgrades waiting for the master's answer, by request id.
    waiting: RefCell<HashMap<u64, oneshot::Sender<Option<Limited>>>>,
    /// Source of admission ids.
    next_id: Cell<u64>,
}

/// One connection's place in the master's counts, given back on drop (also while its
/// upgrade still waits for the answer, so an abandoned upgrade frees its place).
pub struct Admitted {
    /// Where the release is sent.
    worker: Rc<Worker>,
    /// The admission's id.
    id: u64,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted").field("id", &self.id).finish()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.worker.admission.waiting.borrow_mut().remove(&self.id);
        self.worker.send(ToMaster::Release { id: self.id });
    }
}

/// Whether any connection limit counted by the master is on.
fn counted(settings: &WorkerSettings) -> bool {
    settings.max_connections_per_user > 0 || settings.max_connections_per_ip > 0
}

impl Admission {
    /// Admits a connection from `ip` for `user` (None: anonymous) or says why not;
    /// `Ok(None)` when no connection limit is on (nothing counted, no round trip).
    pub async fn admit(
        worker: &Rc<Worker>,
        ip: IpAddr,
        user: Option<&str>,
    ) -> Result<Option<Box<Admitted>>, Refusal> {
        let settings = &worker.settings;
        let ip = ip.to_canonical();
        let per_minute = settings.ip_connects_per_minute;
        if per_minute > 0 && !worker.admission.rate_ok(ip, per_minute) {
            return Err(Refusal::Limited(Limited::Rate));
        }
        if !counted(settings) {
            return Ok(None);
        }
        let this = &worker.admission;
        let id = this.next_id.get();
        this.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        this.waiting.borrow_mut().insert(id, tx);
        let admitted = Box::new(Admitted {
            worker: worker.clone(),
            id,
        });
        worker.send(ToMaster::Admit {
            id,
            ip,
            user: user.map(str::to_owned),
        });
        let wait = Duration::from_millis(settings.handshake_timeout_ms);
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(None)) => Ok(Some(admitted)),
            Ok(Ok(Some(limited))) => Err(Refusal::Limited(limited)),
            // Timed out (or the worker is going away): `admitted` drops and releases the
            // place in case the master counted it after all.
            Ok(Err(_)) | Err(_) => Err(Refusal::Unanswered),
        }
    }

    /// The master answered admission `id`.
    pub fn answer(&self, id: u64, refused: Option<Limited>) {
        if let Some(tx) = self.waiting.borrow_mut().remove(&id) {
            let _ = tx.send(refused);
        }
    }

    /// Takes one connect from `ip`'s bucket (`per_minute` per minute, burst the same).
    fn rate_ok(&self, ip: IpAddr, per_minute: u32) -> bool {
        let now = now_ms();
        let full = f64::from(per_minute);
        let refill = |b: &Bucket| {
            let elapsed = f64::from(now.wrapping_sub(b.at));
            (b.tokens + elapsed * full / 60_000.0).min(full)
        };
        let mut rate = self.rate.borrow_mut();
        if rate.len() >= PRUNE_AT {
            rate.retain(|_, b| refill(b) < full);
        }
        let bucket = rate.entry(ip).or_insert(Bucket {
            tokens: full,
            at: now,
        });
        bucket.tokens = refill(bucket);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn the_connect_rate_is_per_ip() {
        let t = Admission::default();
        for _ in 0..3 {
            assert!(t.rate_ok(A, 3));
        }
        assert!(!t.rate_ok(A, 3));
        assert!(t.rate_ok(B, 3));
    }

    #[test]
    fn an_answer_reaches_its_waiting_upgrade_only() {
        let t = Admission::default();
        let (tx, mut rx) = oneshot::channel();
        t.waiting.borrow_mut().insert(7, tx);
        t.answer(8, None);
        assert!(rx.try_recv().is_err(), "another id's answer is ignored");
        t.answer(7, Some(Limited::User));
        assert_eq!(rx.try_recv().unwrap(), Some(Limited::User));
        assert!(t.waiting.borrow().is_empty());
    }
}
