//! Who may open another WebSocket: the per-user and per-IP connection limits and the
//! per-IP connect rate, checked at the upgrade (429 past them), counted while the
//! connection lives.
//!
//! **Counted per worker.** Each worker counts its own connections; the limits are not
//! shared across the fleet. A user or an IP can therefore hold at most `limit × workers`
//! connections fleet-wide (and connect `rate × workers` times a minute); with one worker
//! the limits are exact. Counting in the master would make every handshake wait for a
//! round trip over the link and leave the master with counts to repair when a worker
//! dies; the token is verified in the worker for the same reason. The kernel spreads
//! connections over the workers (SO_REUSEPORT hashing), so in practice a user's
//! connections spread too and the per-worker limit bites near `limit × workers` only
//! for someone opening many.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use crate::conn::now_ms;
use crate::ipc::WorkerSettings;

/// Past this many tracked IPs, buckets that have refilled completely are forgotten.
const PRUNE_AT: usize = 4096;

/// Which limit refused an upgrade; the `X-Wsfleet-Limit` header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// `max_connections_per_user`.
    User,
    /// `max_connections_per_ip`.
    Ip,
    /// `ip_connects_per_minute`.
    Rate,
}

impl Limited {
    /// The header value and what the client should do.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Self::User => (
                "user",
                "too many connections for this user; close one first\n",
            ),
            Self::Ip => (
                "ip",
                "too many connections from this address; close one first\n",
            ),
            Self::Rate => ("rate", "too many connects from this address; slow down\n"),
        }
    }
}

/// A per-IP token bucket for the connect rate.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Connects left.
    tokens: f64,
    /// When it was last refilled ([`now_ms`]).
    at: u32,
}

/// The live counts of one worker.
#[derive(Debug, Default)]
pub struct Admission {
    /// Open connections by client IP (only when the per-IP limit is on).
    per_ip: RefCell<HashMap<IpAddr, u32>>,
    /// Open connections by user id (only when the per-user limit is on).
    per_user: RefCell<HashMap<Box<str>, u32>>,
    /// Connect-rate buckets by client IP (only when the rate limit is on).
    rate: RefCell<HashMap<IpAddr, Bucket>>,
}

/// One admitted connection's place in the counts, given back on drop.
#[derive(Debug)]
pub struct Admitted {
    /// The table counted in.
    table: Rc<Admission>,
    /// The IP counted, if the per-IP limit is on.
    ip: Option<IpAddr>,
    /// The user counted, if the per-user limit is on and the connection has a user.
    user: Option<Box<str>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            release(&mut self.table.per_ip.borrow_mut(), &ip);
        }
        if let Some(user) = &self.user {
            release(&mut self.table.per_user.borrow_mut(), user);
        }
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// Whether one more fits under `limit` (0 = none), and the count taken if so.
fn take<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: K, limit: u32) -> bool {
    let n = map.entry(key).or_insert(0);
    if *n >= limit {
        return false;
    }
    *n += 1;
    true
}

impl Admission {
    /// Admits a connection from `ip` for `user` (None: anonymous) or says which limit
    /// refuses it; `Ok(None)` when no limit is on (nothing to count).
    pub fn admit(
        self: &Rc<Self>,
        settings: &WorkerSettings,
        ip: IpAddr,
        user: Option<&str>,
    ) -> Result<Option<Box<Admitted>>, Limited> {
        let ip = ip.to_canonical();
        if settings.ip_connects_per_minute > 0 && !self.rate_ok(ip, settings.ip_connects_per_minute)
        {
            return Err(Limited::Rate);
        }
        let per_ip = settings.max_connections_per_ip;
        let per_user = settings.max_connections_per_user;
        let user = user.filter(|_| per_user > 0);
        if per_ip == 0 && user.is_none() {
            return Ok(None);
        }
        let mut admitted = Admitted {
            table: self.clone(),
            ip: None,
            user: None,
        };
        if per_ip > 0 {
            if !take(&mut self.per_ip.borrow_mut(), ip, per_ip) {
                return Err(Limited::Ip);
            }
            admitted.ip = Some(ip);
        }
        if let Some(user) = user {
            if !take(&mut self.per_user.borrow_mut(), user.into(), per_user) {
                // `admitted` drops here and gives the IP's count back.
                return Err(Limited::User);
            }
            admitted.user = Some(user.into());
        }
        Ok(Some(Box::new(admitted)))
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

    fn settings(user: u32, ip: u32, rate: u32) -> WorkerSettings {
        WorkerSettings {
            max_connections_per_user: user,
            max_connections_per_ip: ip,
            ip_connects_per_minute: rate,
            ..WorkerSettings::default()
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn no_limits_count_nothing() {
        let t = Rc::new(Admission::default());
        for _ in 0..100 {
            assert!(matches!(
                t.admit(&settings(0, 0, 0), A, Some("u")),
                Ok(None)
            ));
        }
    }

    #[test]
    fn per_ip_and_per_user_refuse_past_the_limit_and_give_back_on_drop() {
        let t = Rc::new(Admission::default());
        let s = settings(2, 3, 0);
        let a1 = t.admit(&s, A, Some("u")).unwrap();
        let _a2 = t.admit(&s, A, Some("u")).unwrap();
        assert_eq!(t.admit(&s, A, Some("u")).unwrap_err(), Limited::User);
        assert_eq!(
            t.per_ip.borrow()[&A],
            2,
            "the refused user gave its IP count back"
        );
        let _a3 = t.admit(&s, A, None).unwrap();
        assert_eq!(t.admit(&s, A, None).unwrap_err(), Limited::Ip);
        assert!(t.admit(&s, B, Some("v")).is_ok(), "another IP and user");
        drop(a1);
        let a4 = t.admit(&s, A, Some("u"));
        assert!(a4.is_ok(), "a closed connection frees its place");
        let v4_mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(t.admit(&s, v4_mapped, None).unwrap_err(), Limited::Ip);
    }

    #[test]
    fn the_connect_rate_is_per_ip() {
        let t = Rc::new(Admission::default());
        let s = settings(0, 0, 3);
        for _ in 0..3 {
            assert!(t.admit(&s, A, None).is_ok());
        }
        assert_eq!(t.admit(&s, A, None).unwrap_err(), Limited::Rate);
        assert!(t.admit(&s, B, None).is_ok());
    }
}
