//! One room's member set as the master keeps it: which connection on which worker, how
//! many accepted joins it has outstanding, and the optional `user` and `info` a token gave
//! it. Small rooms (most of them) keep a short vector; a room past [`MANY`] members moves
//! to a hash map, so a join or leave costs the same in a room of 20,000 as in one of 2.

use std::collections::HashMap;

use super::relay::WorkerKey;

/// Past this many members a room's set becomes a hash map: below it a scan is as fast and
/// a one-member room (the common idle case) costs one small allocation.
pub const MANY: usize = 32;

/// A member's identity in the fleet: its worker and its connection id there.
pub type MemberKey = (WorkerKey, u64);

/// What a token says about a member (filled by the worker from the client's token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extra {
    /// The authenticated user, if any.
    pub user: Option<Box<str>>,
    /// The token's `info`, raw JSON text.
    pub info: Option<Box<str>>,
}

/// One member's bookkeeping.
#[derive(Debug)]
pub struct Entry {
    /// Accepted joins not yet undone by a leave: a connection that leaves and re-joins
    /// while its first join is answered has two, and only the last leave removes it.
    refs: u32,
    /// `user` and `info`, boxed so that members without a token cost one pointer.
    extra: Option<Box<Extra>>,
}

/// A room's members.
#[derive(Debug)]
pub enum Set {
    /// Up to [`MANY`] members, scanned.
    Few(Vec<(MemberKey, Entry)>),
    /// More, hashed. Boxed on purpose: the map's 48-byte header inline would double the
    /// size of every small room's set; the extra allocation is paid by big rooms only.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<MemberKey, Entry>>),
}

impl Default for Set {
    fn default() -> Self {
        Self::Few(Vec::with_capacity(1))
    }
}

impl Set {
    /// Members now.
    pub fn len(&self) -> usize {
        match self {
            Self::Few(v) => v.len(),
            Self::Many(m) => m.len(),
        }
    }

    /// Whether nobody is in.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one more accepted join of `key`; true when it is a new member.
    pub fn add(&mut self, key: MemberKey, extra: Option<Extra>) -> bool {
        let entry = match self {
            Self::Few(v) => match v.iter_mut().position(|(k, _)| *k == key) {
                Some(i) => &mut v[i].1,
                None if v.len() < MANY => {
                    v.reserve_exact(1);
                    v.push((key, Entry::new(extra)));
                    return true;
                }
                None => {
                    let mut m: HashMap<_, _> = v.drain(..).collect();
                    m.insert(key, Entry::new(extra));
                    *self = Self::Many(Box::new(m));
                    return true;
                }
            },
            Self::Many(m) => match m.entry(key) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Entry::new(extra));
                    return true;
                }
            },
        };
        entry.refs += 1;
        if extra.is_some() {
            entry.extra = extra.map(Box::new);
        }
        false
    }

    /// Undoes one accepted join of `key`; true when it stopped being a member.
    pub fn remove(&mut self, key: MemberKey) -> bool {
        let gone = match self {
            Self::Few(v) => {
                let Some(i) = v.iter().position(|(k, _)| *k == key) else {
                    return false;
                };
                v[i].1.refs -= 1;
                let gone = v[i].1.refs == 0;
                if gone {
                    v.swap_remove(i);
                }
                gone
            }
            Self::Many(m) => {
                let Some(e) = m.get_mut(&key) else {
                    return false;
                };
                e.refs -= 1;
                let gone = e.refs == 0;
                if gone {
                    m.remove(&key);
                }
                gone
            }
        };
        if let Self::Many(m) = self
            && m.len() < MANY / 2
        {
            // Back to a vector well under the switch point, so a room hovering around
            // it does not move back and forth.
            *self = Self::Few(m.drain().collect());
        }
        gone
    }

    /// Drops every member on `worker`; how many went.
    pub fn remove_worker(&mut self, worker: WorkerKey) -> usize {
        let before = self.len();
        match self {
            Self::Few(v) => v.retain(|((w, _), _)| *w != worker),
            Self::Many(m) => m.retain(|(w, _), _| *w != worker),
        }
        before - self.len()
    }

    /// Every member with its `user` and `info`.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (MemberKey, Option<&Extra>)> + '_> {
        match self {
            Self::Few(v) => Box::new(v.iter().map(|(k, e)| (*k, e.extra.as_deref()))),
            Self::Many(m) => Box::new(m.iter().map(|(k, e)| (*k, e.extra.as_deref()))),
        }
    }
}

impl Entry {
    fn new(extra: Option<Extra>) -> Self {
        Self {
            refs: 1,
            extra: extra.map(Box::new),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_room_costs_a_vector_header_and_one_entry() {
        // The idle case (a room per connection) pays this per room in the master.
        assert_eq!(
            std::mem::size_of::<Set>(),
            24,
            "a vector header, the map boxed"
        );
        assert_eq!(std::mem::size_of::<(MemberKey, Entry)>(), 32);
    }

    #[test]
    fn joins_are_counted_per_connection_and_the_last_leave_removes() {
        let mut s = Set::default();
        assert!(s.add((1, 7), None));
        assert!(
            !s.add((1, 7), None),
            "a second accepted join is not a new member"
        );
        assert!(
            s.add((2, 7), None),
            "same conn id on another worker is another member"
        );
        assert_eq!(s.len(), 2);
        assert!(!s.remove((1, 7)));
        assert!(s.remove((1, 7)));
        assert!(!s.remove((1, 7)), "a stranger's leave changes nothing");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_big_room_moves_to_a_map_and_back_keeping_everyone() {
        let mut s = Set::default();
        let extra = Extra {
            user: Some("ann".into()),
            info: Some(r#"{"n":1}"#.into()),
        };
        s.add((1, 0), Some(extra.clone()));
        for c in 1..100 {
            assert!(s.add((c % 2, c), None));
        }
        assert!(matches!(s, Set::Many(_)));
        assert_eq!(s.len(), 100);
        let ann = s
            .iter()
            .find(|(k, _)| *k == (1, 0))
            .and_then(|(_, e)| e.cloned());
        assert_eq!(ann, Some(extra), "user and info survive the move");
        assert_eq!(s.remove_worker(1), 51, "the 50 odd ones and ann");
        for c in (2..100).step_by(2) {
            assert!(s.remove((0, c)));
        }
        assert!(matches!(s, Set::Few(_)));
        assert_eq!(s.len(), 0);
        assert!(s.is_empty());
    }
}
