//! Presence across hosts, host by host: each host writes how many members it has of each
//! room it serves into the room's hash in Redis (`wsf:{R}:p`, field = host id) and keeps a
//! heartbeat key (`wsf:h:HOST`) alive; reading a room's hash sums the hosts whose heartbeat
//! is alive and deletes the others' fields. A host that dies stops its heartbeat, so its
//! members are forgotten at most [`HOST_TTL`] + [`BEAT`] after its last beat.
//!
//! The seam for the master's member registry (issue 11): [`HostPresence::member`] is the
//! only input (today fed by the workers' join/leave notices) and
//! [`HostPresence::total`] the only output (members of a room on every live host).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::master::relay::WorkerKey;

/// How long a host's heartbeat key lives: past it, its members are forgotten.
pub const HOST_TTL: Duration = Duration::from_secs(9);

/// How often a host beats and rewrites (and reads back) the counts of its rooms.
pub const BEAT: Duration = Duration::from_secs(3);

/// Writes this host's count and reads the room's live total. KEYS: the room's hash.
/// ARGV: host id, its count, hash TTL in seconds, heartbeat key prefix. Returns the total.
pub const SYNC: &str = r"
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #all, 2 do
  if redis.call('EXISTS', ARGV[4] .. all[i]) == 1 then
    total = total + tonumber(all[i + 1])
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return total
";

/// The heartbeat key of `host`.
pub fn host_key(host: &str) -> String {
    format!("{HOST_KEY_PREFIX}{host}")
}

/// What heartbeat keys start with.
pub const HOST_KEY_PREFIX: &str = "wsf:h:";

/// The presence hash of `room`.
pub fn hash_key(room: &str) -> String {
    format!("wsf:{{{room}}}:p")
}

/// This host's members per room, and what the last beat read of every host's.
#[derive(Debug)]
pub struct HostPresence {
    /// This host's id in Redis (random per master start).
    host: String,
    /// Members per room per local worker (a worker that exits takes its members along).
    local: HashMap<String, HashMap<WorkerKey, u64>>,
    /// Rooms whose count changed since the last beat (written even when it fell to 0).
    changed: BTreeSet<String>,
    /// Members of a room on every live host, as last read.
    totals: HashMap<String, u64>,
    /// When the last beat was.
    last_beat: Option<Instant>,
}

/// One beat's work: the heartbeat, then each room's count to write and total to read.
#[derive(Debug, PartialEq, Eq)]
pub struct Beat {
    /// Rooms and this host's member count in each.
    pub rooms: Vec<(String, u64)>,
}

impl HostPresence {
    /// A host named `host`, with no members yet.
    pub fn new(host: String) -> Self {
        Self {
            host,
            local: HashMap::new(),
            changed: BTreeSet::new(),
            totals: HashMap::new(),
            last_beat: None,
        }
    }

    /// This host's id.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The seam's input: a member of `room` on `worker` joined or left.
    pub fn member(&mut self, room: &str, worker: WorkerKey, joined: bool) {
        let per = self.local.entry(room.to_owned()).or_default();
        let n = per.entry(worker).or_default();
        *n = if joined { *n + 1 } else { n.saturating_sub(1) };
        if *n == 0 {
            per.remove(&worker);
        }
        if per.is_empty() {
            self.local.remove(room);
        }
        self.changed.insert(room.to_owned());
    }

    /// A worker exited: its members are gone.
    pub fn remove_worker(&mut self, worker: WorkerKey) {
        for (room, per) in self.local.iter_mut() {
            if per.remove(&worker).is_some() {
                self.changed.insert(room.clone());
            }
        }
        self.local.retain(|_, per| !per.is_empty());
    }

    /// This host's members of `room`.
    fn count(&self, room: &str) -> u64 {
        self.local.get(room).map_or(0, |per| per.values().sum())
    }

    /// The seam's output: members of `room` on every live host, as of the last beat.
    pub fn total(&self, room: &str) -> Option<u64> {
        self.totals.get(room).copied()
    }

    /// Members of every room this host serves, on every live host (for `stats`).
    pub fn served_total(&self) -> u64 {
        self.local.keys().filter_map(|r| self.total(r)).sum()
    }

    /// A read's answer.
    pub fn read(&mut self, room: &str, total: u64) {
        if self.local.contains_key(room) {
            self.totals.insert(room.to_owned(), total);
        } else {
            self.totals.remove(room);
        }
    }

    /// The beat's work when one is due at `now`: every room with members here (kept
    /// alive) and every room whose count changed (a 0 deletes this host's field).
    pub fn beat(&mut self, now: Instant) -> Option<Beat> {
        if self
            .last_beat
            .is_some_and(|t| now.saturating_duration_since(t) < BEAT)
        {
            return None;
        }
        self.last_beat = Some(now);
        let mut rooms: BTreeSet<String> = std::mem::take(&mut self.changed);
        rooms.extend(self.local.keys().cloned());
        self.totals.retain(|r, _| self.local.contains_key(r));
        let rooms = rooms
            .into_iter()
            .map(|r| {
                let n = self.count(&r);
                (r, n)
            })
            .collect();
        Some(Beat { rooms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_joins_leaves_and_exits_and_beats_are_spaced() {
        let mut p = HostPresence::new("h".into());
        let t = Instant::now();
        p.member("a", 1, true);
        p.member("a", 2, true);
        p.member("a", 2, true);
        p.member("b", 1, true);
        let beat = p.beat(t).unwrap();
        assert_eq!(beat.rooms, [("a".to_owned(), 3), ("b".to_owned(), 1)]);
        assert_eq!(p.beat(t + BEAT / 2), None);
        p.remove_worker(2);
        p.member("b", 1, false);
        let beat = p.beat(t + BEAT).unwrap();
        assert_eq!(beat.rooms, [("a".to_owned(), 1), ("b".to_owned(), 0)]);
        p.read("a", 4);
        p.read("b", 2);
        assert_eq!(
            (p.total("a"), p.total("b"), p.served_total()),
            (Some(4), None, 4)
        );
    }
}
