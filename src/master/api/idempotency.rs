//! The server API's idempotency keys: a publish retried with the same key within the TTL
//! gets the first publish's answer and is not ordered again. Bounded twice: entries
//! expire after the TTL, and past `capacity` the oldest is forgotten first. Pure
//! bookkeeping with the clock passed in; the supervisor owns it at the one point of order.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Remembered answers by key.
#[derive(Debug)]
pub struct Idempotency<V> {
    /// How long a key is remembered.
    ttl: Duration,
    /// Most keys remembered at once.
    capacity: usize,
    /// The answers.
    answers: HashMap<String, V>,
    /// Keys oldest first with when they were recorded: what expires or is evicted next.
    order: VecDeque<(String, Instant)>,
}

impl<V: Clone> Idempotency<V> {
    /// Nothing remembered yet.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            answers: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The answer remembered for `key`, if it has not expired by `now`.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<V> {
        self.expire(now);
        self.answers.get(key).cloned()
    }

    /// Remembers `answer` for `key` (a key not already remembered) from `now`.
    pub fn insert(&mut self, key: String, answer: V, now: Instant) {
        self.expire(now);
        while self.order.len() >= self.capacity {
            if let Some((old, _)) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
        if self.answers.insert(key.clone(), answer).is_none() {
            self.order.push_back((key, now));
        }
    }

    /// Keys remembered now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((key, at)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.ttl {
                break;
            }
            self.answers.remove(key);
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_answered_until_it_expires() {
        let t0 = Instant::now();
        let mut keys = Idempotency::new(Duration::from_secs(10), 100);
        assert_eq!(keys.get("a", t0), None);
        keys.insert("a".into(), 1, t0);
        assert_eq!(keys.get("a", t0 + Duration::from_secs(9)), Some(1));
        assert_eq!(keys.get("a", t0 + Duration::from_secs(10)), None);
        assert_eq!(keys.len(), 0);
    }

    #[test]
    fn past_capacity_the_oldest_key_is_forgotten_first() {
        let t0 = Instant::now();
        let mut keys = Idempotency::new(Duration::from_secs(10), 2);
        keys.insert("a".into(), 1, t0);
        keys.insert("b".into(), 2, t0);
        keys.insert("c".into(), 3, t0);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.get("a", t0), None);
        assert_eq!(keys.get("b", t0), Some(2));
        assert_eq!(keys.get("c", t0), Some(3));
    }
}
