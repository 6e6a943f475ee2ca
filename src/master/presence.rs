//! Presence: the master's registry of who is in which room, and what the other members are
//! told about it.
//!
//! A member is registered when the master accepts its join (so its join costs the master
//! one registry update, whatever the room's size) and removed by the worker's `Leave`, or
//! when its worker exits. Each room's namespace sets its presence mode
//! (`src/namespaces.rs`): `on` sends a join/leave notice to the other members for every
//! change, `off` sends nothing, and `auto` (the default) sends notices while the room has at
//! most `threshold` members and, above it, at most one `{"type":"presence","room":R,
//! "count":N}` per room per coalescing interval (and one more when the room falls back to
//! the threshold, so the last count shown is true). A count costs one frame per member, so
//! with a fixed interval a room that grows by N members costs ~N²/(2·rate·interval) frames:
//! a room's counts are further spaced so they cost at most [`Pacing::count_rate`] frames a
//! second (`--presence-count-rate`, 2,000 by default: a count to `n` members is followed by
//! the next no sooner than `n / 2,000` seconds later, 10 s at 20,000 members); rooms up to
//! `count_rate × interval` members keep the interval. A `presence` request is answered with
//! the count, and the member ids while the room is at most at its threshold (always in mode
//! `on`).
//!
//! The registry keeps every member (connection, worker, `user`, `info`) at any size, about
//! 50 bytes each in a big room; [`Registry::members`], [`Registry::count`] and
//! [`Registry::rooms`] are the queries the rest of the master (the server API) uses.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wsfleet_worker::protocol::{self, RoomPattern};

use super::members::{Extra, MemberKey, Set};
use super::relay::WorkerKey;
use crate::namespaces::{Namespaces, PresenceMode, PresenceOptions};

/// How often a room above its threshold gets a count: at most once per `interval`, and
/// spaced so one room's counts cost at most `count_rate` frames a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// Least time between two counts of one room (`--presence-interval`).
    pub interval: Duration,
    /// Count frames a second one room's counts may cost (a count goes to every member):
    /// after a count to `n` members the next waits at least `n / count_rate` seconds
    /// (`--presence-count-rate`); 0: no spacing.
    pub count_rate: u32,
}

impl Pacing {
    /// How long after a count to `n` members the room's next count may go, if longer than
    /// the interval.
    fn spacing(&self, n: usize) -> Option<Duration> {
        if self.count_rate == 0 {
            return None;
        }
        let gap = Duration::from_secs_f64(n as f64 / f64::from(self.count_rate));
        (gap > self.interval).then_some(gap)
    }
}

/// One member as the queries show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    /// The fleet-wide id clients see (`slot.generation.conn`).
    pub id: String,
    /// The member's worker.
    pub worker: WorkerKey,
    /// Its connection id on that worker.
    pub conn: u64,
    /// The authenticated user, if its token named one.
    pub user: Option<&'a str>,
    /// Its token's `info`, raw JSON text.
    pub info: Option<&'a str>,
}

/// A notice to send now: the frame, and the member that must not receive it (the subject
/// of a join).
#[derive(Debug, PartialEq, Eq)]
pub struct Notice {
    /// The complete JSON text frame.
    pub frame: String,
    /// The joining member (its own join is not news to it).
    pub skip: Option<MemberKey>,
}

/// One room's presence state.
#[derive(Debug, Default)]
struct RoomPresence {
    /// Who is in.
    members: Set,
    /// A count is owed at the next flush.
    dirty: bool,
}

/// Every room's members, and the counts owed.
#[derive(Debug)]
pub struct Registry {
    /// Per-room mode and threshold.
    namespaces: Namespaces,
    /// How often a room's counts may go.
    pacing: Pacing,
    /// Rooms with at least one member.
    rooms: HashMap<Box<str>, RoomPresence>,
    /// Each linked worker's slot and generation, for the fleet ids of its members.
    workers: HashMap<WorkerKey, (u32, u64)>,
    /// Rooms owed a count (each once: `RoomPresence::dirty`) and when each may go.
    owed: Vec<(Box<str>, Instant)>,
    /// The earliest of the owed counts' times.
    due: Option<Instant>,
    /// Rooms whose last count went to so many members that the next must wait longer than
    /// the interval ([`Pacing::count_rate`]): the earliest time it may go. Only big rooms
    /// have an entry.
    spaced: HashMap<Box<str>, Instant>,
}

impl Registry {
    /// No members; modes from `namespaces`, counts paced by `pacing`.
    pub fn new(namespaces: Namespaces, pacing: Pacing) -> Self {
        Self {
            namespaces,
            pacing,
            rooms: HashMap::new(),
            workers: HashMap::new(),
            owed: Vec::new(),
            due: None,
            spaced: HashMap::new(),
        }
    }

    /// New modes and pacing (a reload); rooms keep their members.
    pub fn reconfigure(&mut self, namespaces: Namespaces, pacing: Pacing) {
        self.namespaces = namespaces;
        self.pacing = pacing;
    }

    /// Records a linked worker's slot and generation (its members' ids are made of them).
    pub fn linked(&mut self, worker: WorkerKey, slot: u32, generation: u64) {
        self.workers.insert(worker, (slot, generation));
    }

    /// The master accepted a join of `conn` on `worker`: registers it and returns the
    /// notice for the other members, if the room's mode gives one.
    pub fn join(
        &mut self,
        room: &str,
        member: MemberKey,
        extra: Option<Extra>,
        now: Instant,
    ) -> Option<Notice> {
        // A token's user (and info) goes in the join notice; built before `extra` moves.
        let frame = extra
            .as_ref()
            .and_then(|e| Some((e.user.as_deref()?, e.info.as_deref())))
            .map(|who| protocol::presence(room, true, &self.id(member), Some(who)));
        let r = match self.rooms.get_mut(room) {
            Some(r) => r,
            None => self.rooms.entry(room.into()).or_default(),
        };
        if !r.members.add(member, extra) {
            return None;
        }
        let count = r.members.len();
        let options = self.namespaces.lookup(room).presence;
        match options.mode {
            // Alone in the room: nobody to tell (the idle case: one room per connection).
            _ if count == 1 => None,
            PresenceMode::Off => None,
            _ if notices(options, count) => Some(Notice {
                frame: frame
                    .unwrap_or_else(|| protocol::presence(room, true, &self.id(member), None)),
                skip: Some(member),
            }),
            _ => {
                self.owe(room, now);
                None
            }
        }
    }

    /// Undoes one accepted join (the worker's `Leave`): the notice for the others, if the
    /// room's mode gives one.
    pub fn leave(&mut self, room: &str, member: MemberKey, now: Instant) -> Option<Notice> {
        let r = self.rooms.get_mut(room)?;
        if !r.members.remove(member) {
            return None;
        }
        let count = r.members.len();
        if r.members.is_empty() {
            self.rooms.remove(room);
            self.spaced.remove(room);
        }
        let options = self.namespaces.lookup(room).presence;
        if options.mode == PresenceMode::Off {
            return None;
        }
        if !notices(options, count) || !notices(options, count + 1) {
            // Above the threshold, or just back to it: the count tells the rest.
            self.owe(room, now);
        }
        (count > 0 && notices(options, count)).then(|| Notice {
            frame: protocol::presence(room, false, &self.id(member), None),
            skip: None,
        })
    }

    /// Forgets a worker that exited and its members; rooms counted by number get the new
    /// count (members of rooms with notices are not told one by one).
    pub fn remove_worker(&mut self, worker: WorkerKey, now: Instant) {
        self.workers.remove(&worker);
        let mut changed = Vec::new();
        self.rooms.retain(|room, r| {
            if r.members.remove_worker(worker) > 0 {
                changed.push(room.clone());
            }
            !r.members.is_empty()
        });
        let rooms = &self.rooms;
        self.spaced.retain(|room, _| rooms.contains_key(room));
        for room in changed {
            let options = self.namespaces.lookup(&room).presence;
            if options.mode != PresenceMode::Off && !notices(options, self.count(&room) + 1) {
                self.owe(&room, now);
            }
        }
    }

    /// When the owed counts are due (for the loop's next tick).
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The owed counts due at `now`: `(room, frame)` for every such room that still has
    /// members. Counts owed for later stay owed.
    pub fn flush(&mut self, now: Instant) -> Vec<(Box<str>, String)> {
        if self.due.is_none_or(|due| due > now) {
            return Vec::new();
        }
        self.due = None;
        let mut out = Vec::new();
        let mut later = Vec::new();
        for (room, at) in std::mem::take(&mut self.owed) {
            if at > now {
                self.due = Some(self.due.map_or(at, |d| d.min(at)));
                later.push((room, at));
                continue;
            }
            let Some(r) = self.rooms.get_mut(&room) else {
                continue;
            };
            r.dirty = false;
            let n = r.members.len();
            if let Some(gap) = self.pacing.spacing(n) {
                self.spaced.insert(room.clone(), now + gap);
            }
            out.push((room.clone(), protocol::presence_count(&room, n)));
        }
        self.owed = later;
        out
    }

    /// The join or leave notice of `member` for the room's members on other hosts (with
    /// `--redis`), when a room of `count` members across hosts sends notices; built even
    /// when this host has no other member to tell.
    pub fn notice_for_hosts(
        &self,
        room: &str,
        member: MemberKey,
        joined: bool,
        extra: Option<&Extra>,
        count: usize,
    ) -> Option<String> {
        let options = self.namespaces.lookup(room).presence;
        if !notices(options, count) {
            return None;
        }
        let who = extra.and_then(|e| Some((e.user.as_deref()?, e.info.as_deref())));
        Some(protocol::presence(
            room,
            joined,
            &self.id(member),
            who.filter(|_| joined),
        ))
    }

    /// The answer to a client's `presence` request: the count (`total` when other hosts
    /// count too, with `--redis`), and this host's member ids while the room shows them.
    pub fn answer(&self, room: &str, id: Option<&str>, total: Option<u64>) -> String {
        let count = total.map_or_else(|| self.count(room), |t| t as usize);
        let options = self.namespaces.lookup(room).presence;
        let ids: Option<Vec<String>> = lists(options, count).then(|| {
            self.rooms
                .get(room)
                .map(|r| r.members.iter().map(|(k, _)| self.id(k)).collect())
                .unwrap_or_default()
        });
        protocol::presence_answer(room, count, ids.as_deref(), id)
    }

    /// Members of `room`, with their `user` and `info`.
    #[allow(dead_code)] // the server API's presence method reads it (issue 12)
    pub fn members(&self, room: &str) -> Vec<Member<'_>> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        r.members
            .iter()
            .map(|(key, extra)| Member {
                id: self.id(key),
                worker: key.0,
                conn: key.1,
                user: extra.and_then(|e| e.user.as_deref()),
                info: extra.and_then(|e| e.info.as_deref()),
            })
            .collect()
    }

    /// Members of `room` now.
    pub fn count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.members.len())
    }

    /// Rooms matching `pattern` with their member counts.
    #[allow(dead_code)] // the server API's presence method reads it (issue 12)
    pub fn rooms(&self, pattern: &RoomPattern) -> Vec<(String, usize)> {
        self.rooms
            .iter()
            .filter(|(name, _)| pattern.matches(name))
            .map(|(name, r)| (name.to_string(), r.members.len()))
            .collect()
    }

    /// A member's fleet-wide id.
    fn id(&self, (worker, conn): MemberKey) -> String {
        let (slot, generation) = self.workers.get(&worker).copied().unwrap_or_default();
        protocol::fleet_id(slot, generation, conn)
    }

    /// Owes `room` a count, one interval from now (so two counts for a room are at least
    /// an interval apart), or later when its last count went to many members
    /// ([`Pacing::count_rate`]).
    fn owe(&mut self, room: &str, now: Instant) {
        if let Some(r) = self.rooms.get_mut(room)
            && !r.dirty
        {
            r.dirty = true;
            let mut at = now + self.pacing.interval;
            if let Some(spaced) = self.spaced.remove(room) {
                at = at.max(spaced);
            }
            self.owed.push((room.into(), at));
            self.due = Some(self.due.map_or(at, |d| d.min(at)));
        }
    }
}

/// Whether a room with `count` members gets join/leave notices.
fn notices(options: PresenceOptions, count: usize) -> bool {
    match options.mode {
        PresenceMode::On => true,
        PresenceMode::Off => false,
        PresenceMode::Auto => count <= options.threshold,
    }
}

/// Whether a `presence` answer lists the members of a room of `count`.
fn lists(options: PresenceOptions, count: usize) -> bool {
    options.mode == PresenceMode::On || count <= options.threshold
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespaces::{HistoryOptions, NamespaceSpec, RoomOptions};

    /// The count rate of the tests' registries.
    const RATE: u32 = 2_000;

    fn registry(threshold: usize) -> Registry {
        let defaults = RoomOptions {
            history: HistoryOptions {
                size: 0,
                ttl: Duration::from_secs(1),
            },
            presence: PresenceOptions {
                mode: PresenceMode::Auto,
                threshold,
            },
        };
        let specs = [
            NamespaceSpec {
                pattern: "quiet:*".into(),
                presence: Some(PresenceMode::Off),
                ..Default::default()
            },
            NamespaceSpec {
                pattern: "loud:*".into(),
                presence: Some(PresenceMode::On),
                ..Default::default()
            },
        ];
        let ns = Namespaces::from_specs(defaults, &specs).unwrap();
        let mut r = Registry::new(
            ns,
            Pacing {
                interval: Duration::from_millis(100),
                count_rate: RATE,
            },
        );
        r.linked(1, 0, 3);
        r
    }

    #[test]
    fn under_the_threshold_each_change_is_a_notice() {
        let mut r = registry(3);
        let now = Instant::now();
        assert!(
            r.join("a", (1, 4), None, now).is_none(),
            "alone: nobody to tell"
        );
        let n = r.join("a", (1, 5), None, now).expect("a notice");
        assert_eq!(n.skip, Some((1, 5)));
        assert!(
            n.frame.contains(r#""event":"join","id":"0.3.5""#),
            "{}",
            n.frame
        );
        assert!(r.join("a", (1, 5), None, now).is_none(), "again: no news");
        assert!(r.leave("a", (1, 5), now).is_none(), "one join still stands");
        let n = r.leave("a", (1, 5), now).expect("a leave notice");
        assert!(n.frame.contains(r#""event":"leave""#));
        assert!(
            r.leave("a", (1, 4), now).is_none(),
            "the last one out: nobody to tell"
        );
        assert_eq!(r.count("a"), 0);
        assert_eq!(r.due(), None, "nothing owed");
    }

    #[test]
    fn above_the_threshold_counts_are_coalesced_per_interval() {
        let mut r = registry(3);
        let t0 = Instant::now();
        for c in 0..3 {
            assert_eq!(r.join("a", (1, c), None, t0).is_some(), c > 0);
        }
        for c in 3..10 {
            assert!(r.join("a", (1, c), None, t0).is_none(), "no notice above 3");
        }
        let due = r.due().expect("a count is owed");
        assert_eq!(due, t0 + Duration::from_millis(100));
        assert!(r.flush(t0).is_empty(), "not before the interval");
        let sent = r.flush(due);
        assert_eq!(sent.len(), 1, "one count for seven joins");
        assert_eq!(&*sent[0].0, "a");
        assert!(sent[0].1.contains(r#""count":10"#), "{}", sent[0].1);
        for c in 3..9 {
            assert!(r.leave("a", (1, c), due).is_none());
        }
        let n = r.leave("a", (1, 9), due).expect("back at 3: notices again");
        assert!(n.frame.contains("leave"));
        let sent = r.flush(r.due().unwrap());
        assert!(
            sent[0].1.contains(r#""count":3"#),
            "the true count after the drop"
        );
    }

    #[test]
    fn a_big_room_s_counts_cost_at_most_the_frame_budget() {
        let mut r = registry(3);
        let t0 = Instant::now();
        let big = 2 * u64::from(RATE); // a count to them: 2 s before the next
        for c in 0..big {
            r.join("big", (1, c), None, t0);
        }
        r.join("small", (1, 0), None, t0);
        for c in 1..10 {
            r.join("small", (1, c), None, t0);
        }
        let t1 = r.due().unwrap();
        assert_eq!(t1, t0 + Duration::from_millis(100));
        assert_eq!(
            r.flush(t1).len(),
            2,
            "both rooms' first counts at the interval"
        );
        r.join("big", (1, big), None, t1);
        r.join("small", (1, 10), None, t1);
        let t2 = r.due().unwrap();
        assert_eq!(
            t2,
            t1 + Duration::from_millis(100),
            "the small room keeps it"
        );
        let sent = r.flush(t2);
        assert_eq!(sent.len(), 1);
        assert_eq!(&*sent[0].0, "small");
        assert_eq!(
            r.due(),
            Some(t1 + Duration::from_secs(2)),
            "the big room waits"
        );
        assert!(r.flush(t1 + Duration::from_millis(1999)).is_empty());
        let sent = r.flush(t1 + Duration::from_secs(2));
        assert_eq!(&*sent[0].0, "big");
        assert!(sent[0].1.contains(&format!(r#""count":{}"#, big + 1)));
        for c in 0..=big {
            r.leave("big", (1, c), t1);
        }
        assert!(r.spaced.is_empty(), "an emptied room is forgotten");
    }

    #[test]
    fn a_count_rate_of_zero_keeps_every_room_on_the_interval() {
        let mut r = registry(3);
        let interval = Duration::from_millis(100);
        r.reconfigure(
            r.namespaces.clone(),
            Pacing {
                interval,
                count_rate: 0,
            },
        );
        let t0 = Instant::now();
        let big = 2 * u64::from(RATE);
        for c in 0..big {
            r.join("big", (1, c), None, t0);
        }
        let t1 = r.due().unwrap();
        assert_eq!(r.flush(t1).len(), 1);
        r.join("big", (1, big), None, t1);
        assert_eq!(r.due(), Some(t1 + interval), "no spacing for its size");
        assert!(r.spaced.is_empty());
    }

    #[test]
    fn modes_by_namespace_and_the_presence_answer() {
        let mut r = registry(2);
        let now = Instant::now();
        for c in 0..5 {
            assert!(r.join("quiet:x", (1, c), None, now).is_none());
            assert_eq!(r.join("loud:x", (1, c), None, now).is_some(), c > 0);
        }
        assert_eq!(r.due(), None, "off owes nothing, on sends notices");
        let quiet = r.answer("quiet:x", Some("7"), None);
        let v: serde_json::Value = serde_json::from_str(&quiet).unwrap();
        assert_eq!(v["count"], 5);
        assert!(v.get("members").is_none(), "5 > 2: count only");
        assert_eq!(v["id"], 7);
        let loud: serde_json::Value =
            serde_json::from_str(&r.answer("loud:x", None, None)).unwrap();
        assert_eq!(loud["members"].as_array().map(Vec::len), Some(5));
        let empty: serde_json::Value = serde_json::from_str(&r.answer("none", None, None)).unwrap();
        assert_eq!(
            (
                empty["count"].as_u64(),
                empty["members"].as_array().map(Vec::len)
            ),
            (Some(0), Some(0))
        );
    }

    #[test]
    fn queries_and_a_worker_exit() {
        let mut r = registry(100);
        let now = Instant::now();
        let extra = Extra {
            user: Some("ann".into()),
            info: Some("{}".into()),
        };
        r.join("chat:a", (1, 1), Some(extra), now);
        r.join("chat:a", (2, 1), None, now);
        r.join("dm:b", (2, 2), None, now);
        let members = r.members("chat:a");
        assert_eq!(members.len(), 2);
        let ann = members.iter().find(|m| m.worker == 1).unwrap();
        assert_eq!(
            (ann.user, ann.info, ann.id.as_str()),
            (Some("ann"), Some("{}"), "0.3.1")
        );
        let mut rooms = r.rooms(&RoomPattern::parse("chat:*").unwrap());
        rooms.sort();
        assert_eq!(rooms, [("chat:a".to_owned(), 2)]);
        r.remove_worker(2, now);
        assert_eq!((r.count("chat:a"), r.count("dm:b")), (1, 0));
        assert!(r.rooms(&RoomPattern::parse("*").unwrap()).len() == 1);
    }
}
