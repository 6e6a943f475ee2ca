//! Publish-to-delivery latency: the shared clock both processes stamp with, and the
//! fixed-bucket histogram a worker keeps and reports in [`WorkerCounters`](super::WorkerCounters).
//!
//! The master stamps each room publish once, when it orders it; the worker records
//! `now − stamp` once per room message (not per recipient) after it has written the batch
//! that carried it to its members' sockets. Both read `CLOCK_MONOTONIC`, which on Linux is
//! one clock for every process on the host, so the difference is meaningful across the
//! process boundary (and immune to wall-clock steps).

use serde::{Deserialize, Serialize};

/// Upper bounds of the histogram buckets, in nanoseconds (an implicit last bucket holds
/// everything slower). Fixed, so histograms from every worker add up bucket by bucket.
pub const BOUNDS_NS: [u64; 15] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

/// `CLOCK_MONOTONIC` in nanoseconds; 0 if the clock cannot be read (never on Linux).
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec() as u64),
        Err(_) => 0,
    }
}

/// A latency histogram with the [`BOUNDS_NS`] buckets.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative): `counts[i]` ≤ `BOUNDS_NS[i]`, the last
    /// entry above every bound. Empty until the first observation.
    pub counts: Vec<u64>,
    /// Sum of every observation, in nanoseconds.
    pub sum_ns: u64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn record(&mut self, ns: u64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BOUNDS_NS.len() + 1];
        }
        let i = BOUNDS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(BOUNDS_NS.len());
        self.counts[i] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Adds `other` into `self`, bucket by bucket.
    pub fn merge(&mut self, other: &Self) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Cumulative `(upper bound in seconds, count ≤ bound)` pairs, ending with `+Inf`, as
    /// Prometheus histograms want them.
    pub fn cumulative_seconds(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        let mut out = Vec::with_capacity(BOUNDS_NS.len() + 1);
        for (i, &b) in BOUNDS_NS.iter().enumerate() {
            acc += self.counts.get(i).copied().unwrap_or(0);
            out.push((b as f64 / 1e9, acc));
        }
        acc += self.counts.get(BOUNDS_NS.len()).copied().unwrap_or(0);
        out.push((f64::INFINITY, acc));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_merge() {
        let mut h = LatencyHistogram::default();
        h.record(10_000);
        h.record(50_000);
        h.record(60_000);
        h.record(10_000_000_000);
        assert_eq!(h.count(), 4);
        let c = h.cumulative_seconds();
        assert_eq!(c[0], (0.00005, 2));
        assert_eq!(c[1].1, 3);
        assert_eq!(c.last().unwrap().1, 4);
        let mut total = LatencyHistogram::default();
        total.merge(&h);
        total.merge(&h);
        assert_eq!(total.count(), 8);
        assert_eq!(total.sum_ns, 2 * h.sum_ns);
    }

    #[test]
    fn the_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
