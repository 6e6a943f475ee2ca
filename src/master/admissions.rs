//! The fleet-wide per-user and per-IP connection counts. A worker asks at each upgrade
//! while a limit is set ([`ToMaster::Admit`](wsfleet_worker::ipc::ToMaster::Admit)), the
//! supervisor's loop answers from here, and the place is given back when the connection
//! ends (`Release`) or when its worker exits ([`Admissions::remove_worker`]).

use std::collections::HashMap;
use std::net::IpAddr;

use wsfleet_worker::ipc::Limited;

use super::relay::WorkerKey;

/// What one admitted connection holds in the counts.
#[derive(Debug)]
struct Place {
    /// The IP counted (None when the per-IP limit was off at admission).
    ip: Option<IpAddr>,
    /// The user counted (None: anonymous, or the per-user limit was off).
    user: Option<String>,
}

/// Open connections by user and by IP across every worker.
#[derive(Debug, Default)]
pub struct Admissions {
    /// Connections by client IP.
    per_ip: HashMap<IpAddr, u32>,
    /// Connections by user id.
    per_user: HashMap<String, u32>,
    /// Every admitted connection by worker and the worker's admission id, so a release
    /// gives back exactly what was taken and an exited worker gives back everything.
    places: HashMap<WorkerKey, HashMap<u64, Place>>,
}

impl Admissions {
    /// Admits connection `id` of worker `key` under `per_user` and `per_ip` (0 = off), or
    /// says which limit refuses it (nothing is counted then).
    pub fn admit(
        &mut self,
        key: WorkerKey,
        id: u64,
        ip: IpAddr,
        user: Option<String>,
        (per_user, per_ip): (u32, u32),
    ) -> Result<(), Limited> {
        let user = user.filter(|_| per_user > 0);
        let ip = (per_ip > 0).then_some(ip);
        if ip.is_some_and(|ip| self.per_ip.get(&ip).copied().unwrap_or(0) >= per_ip) {
            return Err(Limited::Ip);
        }
        if let Some(u) = &user
            && self.per_user.get(u).copied().unwrap_or(0) >= per_user
        {
            return Err(Limited::User);
        }
        if let Some(ip) = ip {
            *self.per_ip.entry(ip).or_insert(0) += 1;
        }
        if let Some(u) = &user {
            *self.per_user.entry(u.clone()).or_insert(0) += 1;
        }
        self.places
            .entry(key)
            .or_default()
            .insert(id, Place { ip, user });
        Ok(())
    }

    /// Gives back connection `id` of worker `key` (unknown ids are ignored).
    pub fn release(&mut self, key: WorkerKey, id: u64) {
        let Some(places) = self.places.get_mut(&key) else {
            return;
        };
        if let Some(place) = places.remove(&id) {
            if places.is_empty() {
                self.places.remove(&key);
            }
            self.give_back(place);
        }
    }

    /// Worker `key` is gone: every place it held is free.
    pub fn remove_worker(&mut self, key: WorkerKey) {
        for (_, place) in self.places.remove(&key).unwrap_or_default() {
            self.give_back(place);
        }
    }

    fn give_back(&mut self, place: Place) {
        if let Some(ip) = place.ip {
            decrement(&mut self.per_ip, &ip);
        }
        if let Some(user) = &place.user {
            decrement(&mut self.per_user, user);
        }
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn u(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn limits_hold_across_workers_and_refusals_count_nothing() {
        let mut t = Admissions::default();
        let lim = (2, 3);
        assert!(t.admit(1, 0, A, u("u"), lim).is_ok());
        assert!(t.admit(2, 0, A, u("u"), lim).is_ok());
        assert_eq!(t.admit(2, 1, A, u("u"), lim), Err(Limited::User));
        assert_eq!(t.per_ip[&A], 2, "the refused user took no IP place");
        assert!(t.admit(1, 1, A, None, lim).is_ok());
        assert_eq!(t.admit(2, 2, A, None, lim), Err(Limited::Ip));
        assert!(t.admit(2, 3, B, u("v"), lim).is_ok());
        t.release(1, 0);
        t.release(1, 0);
        assert_eq!(t.per_user["u"], 1, "a repeated release gives back once");
        assert!(t.admit(2, 4, A, u("u"), lim).is_ok());
    }

    #[test]
    fn a_gone_worker_gives_back_all_its_places() {
        let mut t = Admissions::default();
        let lim = (1, 0);
        assert!(t.admit(1, 0, A, u("u"), lim).is_ok());
        assert!(t.admit(1, 1, A, u("v"), lim).is_ok());
        assert!(t.admit(2, 0, A, u("w"), lim).is_ok());
        t.remove_worker(1);
        assert!(t.admit(2, 1, A, u("u"), lim).is_ok());
        assert!(t.admit(2, 2, A, u("v"), lim).is_ok());
        assert_eq!(t.admit(2, 3, A, u("w"), lim), Err(Limited::User));
        assert!(t.per_ip.is_empty(), "the per-IP limit is off");
    }
}
