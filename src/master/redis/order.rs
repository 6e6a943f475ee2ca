//! One room's order on this host, kept whole over an at-most-once pub/sub: which `seq` was
//! delivered last, messages held while a read from Redis is in flight, and joins waiting
//! for that read. Pure bookkeeping: the engine feeds it pub/sub messages and read results
//! and carries out what it returns (deliver, read again, answer joins).
//!
//! Rules: a message one past the last delivered is delivered; an older one is a duplicate
//! and dropped; a newer one (a gap) or one of another epoch is held and a read back-fills
//! the gap from the room's stored messages before anything later is delivered. Every join
//! is answered after a read, at the point the read reached, so its replay and the live
//! messages after it meet without overlap or hole.

use std::collections::BTreeMap;

use wsfleet_worker::ipc::JoinAnswer;
use wsfleet_worker::protocol::{self, Since};

use super::script::Delivery;
use crate::master::relay::WorkerKey;

/// Largest replay, in bytes of message data (it travels to the worker in one IPC frame).
const MAX_REPLAY_BYTES: usize = 32 * 1024 * 1024;

/// A join waiting for the room's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingJoin {
    /// The joining connection's worker.
    pub from: WorkerKey,
    /// The connection on that worker.
    pub conn: u64,
    /// The worker's token for this join (a stale answer is recognised by it).
    pub token: u64,
    /// Where the client left off, to recover from.
    pub since: Option<Since>,
}

/// What Redis answered to a read: the room's position and stored messages after a point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The room's last `seq` in Redis.
    pub top: u64,
    /// The room's epoch in Redis.
    pub epoch: String,
    /// Stored messages after the point asked for, oldest first: `(seq, data)`.
    pub entries: Vec<(u64, String)>,
}

/// What the engine must do after a step.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Messages to deliver to the room's local members, in order: `(seq, data)`.
    pub deliver: Vec<(u64, String)>,
    /// Joins to answer.
    pub answers: Vec<(WaitingJoin, JoinAnswer)>,
    /// Read the room again, with stored messages after this point (`None`: none).
    pub read: Option<Option<u64>>,
    /// Messages skipped because Redis no longer stored them (a gap that could not be filled).
    pub lost: u64,
    /// Messages delivered from a read rather than from pub/sub.
    pub backfilled: u64,
}

/// One room's order on this host.
#[derive(Debug, Default)]
pub struct RoomOrder {
    /// The epoch of the last delivered message (`None` before the first read).
    epoch: Option<String>,
    /// The last `seq` delivered to local members.
    delivered: u64,
    /// A read is in flight: pub/sub messages are held.
    reading: bool,
    /// Messages held until they can be delivered in order, by `seq`.
    held: BTreeMap<u64, Delivery>,
    /// Joins waiting for the read in flight.
    joins: Vec<WaitingJoin>,
}

impl RoomOrder {
    /// The room's position on this host, once known.
    pub fn position(&self) -> Option<(&str, u64)> {
        Some((self.epoch.as_deref()?, self.delivered))
    }

    /// A join: it waits for a read (started here unless one is in flight).
    pub fn join(&mut self, join: WaitingJoin, recovery_max: u64) -> Outcome {
        self.joins.push(join);
        self.start_read(recovery_max)
    }

    /// The link came back (or the room must be read again for another reason).
    pub fn resync(&mut self, recovery_max: u64) -> Outcome {
        self.start_read(recovery_max)
    }

    fn start_read(&mut self, recovery_max: u64) -> Outcome {
        if self.reading {
            return Outcome::default();
        }
        self.reading = true;
        Outcome {
            read: Some(self.read_from(recovery_max)),
            ..Outcome::default()
        }
    }

    /// The point to read stored messages after: the last delivered (to back-fill) and the
    /// `since` of every waiting join that could still recover.
    fn read_from(&self, recovery_max: u64) -> Option<u64> {
        let known = self.epoch.as_deref();
        let sinces = self
            .joins
            .iter()
            .filter_map(|j| j.since.as_ref())
            .filter(|s| match known {
                Some(e) => s.epoch == e && self.delivered.saturating_sub(s.seq) <= recovery_max,
                None => true,
            });
        let sinces = sinces.map(|s| s.seq);
        known
            .map(|_| self.delivered)
            .into_iter()
            .chain(sinces)
            .min()
    }

    /// A message from the room's channel.
    pub fn message(&mut self, d: Delivery, recovery_max: u64) -> Outcome {
        let current = self.epoch.as_deref() == Some(d.epoch.as_str());
        if current && d.seq <= self.delivered {
            return Outcome::default();
        }
        self.held.insert(d.seq, d);
        if self.reading {
            return Outcome::default();
        }
        let mut out = Outcome::default();
        self.drain(&mut out);
        if !self.held.is_empty() {
            let read = self.start_read(recovery_max);
            out.read = read.read;
        }
        out
    }

    /// Delivers held messages that continue the order; leaves the rest held.
    fn drain(&mut self, out: &mut Outcome) {
        let Some(epoch) = self.epoch.clone() else {
            return;
        };
        while let Some(entry) = self.held.first_entry() {
            let d = entry.get();
            if d.epoch == epoch && d.seq <= self.delivered {
                entry.remove();
            } else if d.epoch == epoch && d.seq == self.delivered + 1 {
                let d = entry.remove();
                self.delivered = d.seq;
                out.deliver.push((d.seq, d.data));
            } else {
                break;
            }
        }
    }

    /// A read's answer: back-fill, answer the waiting joins at the point reached, then
    /// deliver what was held (reading again if a gap remains).
    pub fn read(&mut self, room: &str, snap: Snapshot, recovery_max: u64) -> Outcome {
        self.reading = false;
        let mut out = Outcome::default();
        match self.epoch.as_deref() {
            Some(e) if e == snap.epoch => {}
            // A new epoch under members: Redis lost the room; its new messages are all news.
            Some(_) => {
                self.epoch = Some(snap.epoch.clone());
                self.delivered = 0;
            }
            // First read: members join from here on.
            None => {
                self.epoch = Some(snap.epoch.clone());
                self.delivered = snap.top;
            }
        }
        // Held messages of another epoch can never be delivered: the read saw the room's.
        self.held.retain(|_, d| d.epoch == snap.epoch);
        for (seq, data) in &snap.entries {
            if *seq <= self.delivered {
                continue;
            }
            out.lost += seq - self.delivered - 1;
            self.delivered = *seq;
            out.backfilled += 1;
            out.deliver.push((*seq, data.clone()));
        }
        if snap.top > self.delivered {
            // Stored messages did not reach the top (trimmed meanwhile): skip ahead.
            out.lost += snap.top - self.delivered;
            self.delivered = snap.top;
        }
        for join in std::mem::take(&mut self.joins) {
            let answer = answer(room, &join, &snap, self.delivered, recovery_max);
            out.answers.push((join, answer));
        }
        self.drain(&mut out);
        if !self.held.is_empty() {
            out.read = self.start_read(recovery_max).read;
        }
        out
    }

    /// A read failed (Redis unreachable): waiting joins are answered with what is known
    /// (no replay); the engine reads again when the link is back.
    pub fn read_failed(&mut self, room: &str) -> Outcome {
        self.reading = false;
        let mut out = Outcome::default();
        for join in std::mem::take(&mut self.joins) {
            let recovered = join.since.as_ref().map(|_| false);
            let frame = match &self.epoch {
                Some(e) => protocol::joined_at(room, e, self.delivered, recovered),
                None => protocol::membership("joined", room),
            };
            out.answers.push((
                join,
                JoinAnswer::Accepted {
                    frames: vec![frame],
                },
            ));
        }
        out
    }
}

/// A join's answer at position `top` of `snap`'s epoch: `joined`, and the replay when
/// `since` can be recovered whole from the stored messages.
fn answer(
    room: &str,
    join: &WaitingJoin,
    snap: &Snapshot,
    top: u64,
    recovery_max: u64,
) -> JoinAnswer {
    let joined = |recovered| protocol::joined_at(room, &snap.epoch, top, recovered);
    let Some(since) = &join.since else {
        return JoinAnswer::Accepted {
            frames: vec![joined(None)],
        };
    };
    let refused = JoinAnswer::Accepted {
        frames: vec![joined(Some(false))],
    };
    if since.epoch != snap.epoch {
        return refused;
    }
    if since.seq > top {
        return JoinAnswer::Refused {
            message: format!(
                "since.seq {} is beyond the room's last seq {top}; send the epoch and seq of the last message you received",
                since.seq
            ),
        };
    }
    let gap = top - since.seq;
    let replay: Vec<&(u64, String)> = snap
        .entries
        .iter()
        .filter(|(s, _)| *s > since.seq && *s <= top)
        .collect();
    let bytes: usize = replay.iter().map(|(_, d)| d.len()).sum();
    if gap > recovery_max || replay.len() as u64 != gap || bytes > MAX_REPLAY_BYTES {
        return refused;
    }
    let mut frames = Vec::with_capacity(1 + replay.len());
    frames.push(joined(Some(true)));
    frames.extend(
        replay
            .iter()
            .map(|(s, d)| protocol::room_message(room, *s, d)),
    );
    JoinAnswer::Accepted { frames }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(seq: u64, epoch: &str) -> Delivery {
        Delivery {
            seq,
            epoch: epoch.into(),
            data: seq.to_string(),
        }
    }

    fn snap(top: u64, epoch: &str, from: u64) -> Snapshot {
        Snapshot {
            top,
            epoch: epoch.into(),
            entries: (from..=top).map(|s| (s, s.to_string())).collect(),
        }
    }

    fn seqs(o: &Outcome) -> Vec<u64> {
        o.deliver.iter().map(|(s, _)| *s).collect()
    }

    fn joined(from: WorkerKey, since: Option<(&str, u64)>) -> WaitingJoin {
        WaitingJoin {
            from,
            conn: 1,
            token: 1,
            since: since.map(|(epoch, seq)| Since {
                epoch: epoch.into(),
                seq,
            }),
        }
    }

    fn frames(a: &JoinAnswer) -> Vec<serde_json::Value> {
        let JoinAnswer::Accepted { frames } = a else {
            panic!("refused: {a:?}")
        };
        frames
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect()
    }

    #[test]
    fn a_first_join_reads_then_messages_flow_in_order_and_duplicates_drop() {
        let mut o = RoomOrder::default();
        let out = o.join(joined(1, None), 100);
        assert_eq!(out.read, Some(None));
        assert!(
            o.message(d(6, "e"), 100).deliver.is_empty(),
            "held while reading"
        );
        let out = o.read("r", snap(5, "e", 6), 100);
        let f = frames(&out.answers[0].1);
        assert_eq!(
            (f[0]["seq"].as_u64(), f[0]["epoch"].as_str()),
            (Some(5), Some("e"))
        );
        assert_eq!(seqs(&out), [6], "the held message follows the answer");
        assert_eq!(seqs(&o.message(d(7, "e"), 100)), [7]);
        assert!(o.message(d(7, "e"), 100).deliver.is_empty());
        assert_eq!(o.position(), Some(("e", 7)));
    }

    #[test]
    fn a_gap_is_backfilled_from_the_read_before_later_messages() {
        let mut o = RoomOrder::default();
        o.join(joined(1, None), 100);
        o.read("r", snap(2, "e", 3), 100);
        let out = o.message(d(5, "e"), 100);
        assert_eq!((seqs(&out), out.read), (vec![], Some(Some(2))));
        assert!(o.message(d(6, "e"), 100).deliver.is_empty());
        let out = o.read("r", snap(5, "e", 3), 100);
        assert_eq!(seqs(&out), [3, 4, 5, 6]);
        assert_eq!((out.backfilled, out.lost, out.read), (3, 0, None));
    }

    #[test]
    fn a_gap_redis_no_longer_stores_is_skipped_and_counted() {
        let mut o = RoomOrder::default();
        o.join(joined(1, None), 100);
        o.read("r", snap(2, "e", 3), 100);
        o.message(d(9, "e"), 100);
        let out = o.read("r", snap(9, "e", 7), 100);
        assert_eq!((seqs(&out), out.lost), (vec![7, 8, 9], 4));
    }

    #[test]
    fn joins_with_since_recover_whole_or_not_at_all() {
        let mut o = RoomOrder::default();
        o.join(joined(1, Some(("e", 3))), 2);
        o.join(joined(2, Some(("e", 1))), 2);
        o.join(joined(3, Some(("old", 1))), 2);
        o.join(joined(4, Some(("e", 9))), 2);
        let out = o.read("r", snap(5, "e", 2), 2);
        let ok = frames(&out.answers[0].1);
        assert_eq!(ok[0]["recovered"], true);
        let replay: Vec<u64> = ok[1..].iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(replay, [4, 5]);
        assert_eq!(frames(&out.answers[1].1)[0]["recovered"], false, "over max");
        assert_eq!(
            frames(&out.answers[2].1)[0]["recovered"],
            false,
            "other epoch"
        );
        assert!(matches!(out.answers[3].1, JoinAnswer::Refused { .. }));
        let out = o.join(joined(5, Some(("e", 4))), 2);
        assert_eq!(
            out.read,
            Some(Some(4)),
            "reads from the oldest point still needed"
        );
    }

    #[test]
    fn a_new_epoch_under_members_delivers_the_new_life_from_its_start() {
        let mut o = RoomOrder::default();
        o.join(joined(1, None), 100);
        o.read("r", snap(7, "old", 8), 100);
        let out = o.message(d(2, "new"), 100);
        assert_eq!(out.read, Some(Some(7)));
        let out = o.read("r", snap(2, "new", 1), 100);
        assert_eq!(seqs(&out), [1, 2]);
        assert_eq!(o.position(), Some(("new", 2)));
    }

    #[test]
    fn a_failed_read_answers_joins_without_replay() {
        let mut o = RoomOrder::default();
        o.join(joined(1, Some(("e", 1))), 100);
        let out = o.read_failed("r");
        let f = frames(&out.answers[0].1);
        assert_eq!(f[0]["type"], "joined");
        assert_eq!(o.resync(100).read, Some(None));
    }
}
