//! The history concern of the loop: a room's position and stored messages turned into what
//! clients get — the publish's position, a join's answer (`joined` with the position, and
//! the replay when `since` recovers) and `history` pages — over the pure
//! [`HistoryStore`]. [`super::rooms`] calls it at the one point where it orders a room
//! message, so a join's replay and the live messages meet without overlap or hole.

use std::time::Instant;

use wsfleet_worker::ipc::JoinAnswer;
use wsfleet_worker::protocol::{self, Refusal, Since as ClientSince};

use crate::control_api::HistoryRow;

use super::history::{HistoryStats, HistoryStore, Position, QueryError, Recovery, Since};

/// Largest `history` answer, in bytes of message data: a page stops before it (the client
/// pages on with `since`), so an answer always fits in one IPC frame.
const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// Largest replay, in bytes of message data: a longer one answers `recovered:false`
/// (the replay travels to the worker in one IPC frame, capped at 64 MiB).
const MAX_REPLAY_BYTES: usize = 32 * 1024 * 1024;

/// Room history and recovery, as the loop uses them.
#[derive(Debug)]
pub struct Recall {
    /// Every room stream.
    store: HistoryStore,
    /// Longest gap a join with `since` replays (`--recovery-max`).
    recovery_max: u64,
}

impl Recall {
    /// Recall over `store`.
    pub fn new(store: HistoryStore, recovery_max: u64) -> Self {
        Self {
            store,
            recovery_max,
        }
    }

    /// The store (to save, load, sweep and reconfigure it).
    pub fn store(&mut self) -> &mut HistoryStore {
        &mut self.store
    }

    /// A new `--recovery-max` (a reload).
    pub fn set_recovery_max(&mut self, max: u64) {
        self.recovery_max = max;
    }

    /// Counters for `stats` and `/metrics`, as the control socket's public type.
    pub fn history_row(&self) -> HistoryRow {
        let s: HistoryStats = self.store.stats();
        HistoryRow {
            rooms: s.rooms as u64,
            messages: s.messages as u64,
            bytes: s.bytes as u64,
            evicted_size: s.evicted_size,
            evicted_ttl: s.evicted_ttl,
            evicted_budget: s.evicted_budget,
            recoveries_ok: s.recoveries_ok,
            recoveries_failed: s.recoveries_failed,
        }
    }

    /// Orders and stores a publish; `None` when the room keeps no history.
    pub fn publish(&mut self, room: &str, data: &str, now: Instant) -> Option<Position> {
        self.store.append(room, data, now)
    }

    /// What a joining connection gets, at this point of the room's order.
    pub fn join(&mut self, room: &str, since: Option<ClientSince>, now: Instant) -> JoinAnswer {
        let Some(since) = since else {
            let frame = match self.store.position(room, now) {
                Some(p) => protocol::joined_at(room, p.epoch.as_str(), p.seq, None),
                None => protocol::membership("joined", room),
            };
            return JoinAnswer::Accepted {
                frames: vec![frame],
            };
        };
        let asked = Since {
            epoch: &since.epoch,
            seq: since.seq,
        };
        let max = self.recovery_max;
        match self
            .store
            .recover_bounded(room, asked, max, MAX_REPLAY_BYTES, now)
        {
            Ok(Recovery::Recovered {
                epoch,
                top,
                messages,
            }) => {
                let mut frames = Vec::with_capacity(1 + messages.len());
                frames.push(protocol::joined_at(room, epoch.as_str(), top, Some(true)));
                frames.extend(
                    messages
                        .iter()
                        .map(|m| protocol::room_message(room, m.seq, &m.data)),
                );
                JoinAnswer::Accepted { frames }
            }
            Ok(Recovery::NotRecovered { epoch, top, reason }) => {
                tracing::debug!(room, ?reason, "recovery refused");
                JoinAnswer::Accepted {
                    frames: vec![protocol::joined_at(room, epoch.as_str(), top, Some(false))],
                }
            }
            // History off for the room: nothing to recover, today's `joined`.
            Err(QueryError::HistoryOff { .. }) => JoinAnswer::Accepted {
                frames: vec![protocol::membership("joined", room)],
            },
            Err(e) => JoinAnswer::Refused {
                message: format!("{e}; send the epoch and seq of the last message you received"),
            },
        }
    }

    /// The answer to a `history` request: a page, or an error frame.
    pub fn page(
        &mut self,
        room: &str,
        limit: usize,
        since: Option<&ClientSince>,
        reverse: bool,
        id: Option<&str>,
        now: Instant,
    ) -> String {
        let since = since.map(|s| Since {
            epoch: &s.epoch,
            seq: s.seq,
        });
        match self.store.history(room, limit, since, reverse, now) {
            Ok(page) => {
                let messages = page.messages.iter().map(|m| (m.seq, &*m.data));
                page_frame(room, page.epoch.as_str(), page.top, messages, id)
            }
            Err(e) => query_error_frame(&e, id),
        }
    }
}

/// A `history` answer of `messages` (in the order to send), stopped before
/// [`MAX_PAGE_BYTES`] of data (the client pages on with `since`) — from this host's store
/// or, with `--redis`, from the room's Redis stream.
pub fn page_frame<'a>(
    room: &str,
    epoch: &str,
    top: u64,
    messages: impl Iterator<Item = (u64, &'a str)>,
    id: Option<&str>,
) -> String {
    let mut bytes = 0;
    let messages = messages.take_while(|(_, data)| {
        bytes += data.len();
        bytes <= MAX_PAGE_BYTES
    });
    protocol::history(room, epoch, top, messages, id)
}

/// The error frame of a `history` request the room cannot answer.
pub fn query_error_frame(e: &QueryError, id: Option<&str>) -> String {
    let code = match e {
        QueryError::HistoryOff { .. } => "history_off",
        QueryError::EpochChanged { .. } => "epoch_changed",
        QueryError::SinceBeyondTop { .. } => "invalid_field",
    };
    protocol::error(&Refusal::new(code, e.to_string()), id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespaces::{HistoryOptions, Namespaces, RoomOptions};
    use std::time::Duration;

    fn recall(size: usize, recovery_max: u64) -> Recall {
        let history = HistoryOptions {
            size,
            ttl: Duration::from_secs(60),
        };
        let ns = Namespaces::new(RoomOptions {
            history,
            presence: Default::default(),
        });
        Recall::new(HistoryStore::new(ns, 1 << 20), recovery_max)
    }

    fn frames(a: JoinAnswer) -> Vec<serde_json::Value> {
        let JoinAnswer::Accepted { frames } = a else {
            panic!("refused: {a:?}")
        };
        frames
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect()
    }

    #[test]
    fn a_join_replays_the_gap_after_its_joined_or_refuses_all_of_it() {
        let now = Instant::now();
        let mut r = recall(10, 3);
        let j = frames(r.join("a", None, now));
        assert_eq!(
            (j[0]["seq"].as_u64(), j[0].get("recovered")),
            (Some(0), None)
        );
        let epoch = j[0]["epoch"].as_str().unwrap().to_owned();
        for i in 1..=5 {
            assert_eq!(r.publish("a", &i.to_string(), now).unwrap().seq, i);
        }
        let since = |seq| {
            Some(ClientSince {
                epoch: epoch.clone(),
                seq,
            })
        };
        let j = frames(r.join("a", since(3), now));
        assert_eq!(j[0]["recovered"], true);
        assert_eq!(j[0]["seq"], 5);
        let seqs: Vec<u64> = j[1..].iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [4, 5]);
        assert_eq!(j[2]["data"], 5);
        let j = frames(r.join("a", since(1), now));
        assert_eq!(
            (j.len(), &j[0]["recovered"]),
            (1, &false.into()),
            "over max"
        );
        let wrong = Some(ClientSince {
            epoch: "other".into(),
            seq: 5,
        });
        assert_eq!(frames(r.join("a", wrong, now))[0]["recovered"], false);
        assert!(matches!(
            r.join("a", since(6), now),
            JoinAnswer::Refused { .. }
        ));
        assert_eq!(r.history_row().recoveries_ok, 1);
        assert_eq!(r.history_row().recoveries_failed, 2);
    }

    #[test]
    fn a_replay_larger_than_its_byte_limit_is_refused_whole() {
        let now = Instant::now();
        let mut r = recall(10, 300);
        let p = r.publish("a", "\"0123456789\"", now).unwrap();
        r.publish("a", "\"0123456789\"", now);
        let since = Since {
            epoch: p.epoch.as_str(),
            seq: 0,
        };
        let store = r.store();
        assert!(matches!(
            store.recover_bounded("a", since, 300, 20, now),
            Ok(Recovery::NotRecovered {
                reason: crate::master::history::Refusal::TooLarge { bytes: 24, max: 20 },
                ..
            })
        ));
        assert!(matches!(
            store.recover_bounded("a", since, 300, 24, now),
            Ok(Recovery::Recovered { .. })
        ));
    }

    #[test]
    fn history_off_keeps_todays_frames_and_pages_answer_or_refuse() {
        let now = Instant::now();
        let mut off = recall(0, 3);
        assert!(off.publish("a", "1", now).is_none());
        let j = frames(off.join("a", None, now));
        assert!(j[0].get("epoch").is_none());
        let e: serde_json::Value =
            serde_json::from_str(&off.page("a", 5, None, false, Some("1"), now)).unwrap();
        assert_eq!((&e["code"], &e["id"]), (&"history_off".into(), &1.into()));

        let mut on = recall(10, 3);
        for i in 1..=4 {
            on.publish("a", &i.to_string(), now);
        }
        let p: serde_json::Value =
            serde_json::from_str(&on.page("a", 2, None, true, None, now)).unwrap();
        assert_eq!(p["seq"], 4);
        assert_eq!(p["messages"][0]["seq"], 4);
        assert_eq!(p["messages"][1]["data"], 3);
    }
}
