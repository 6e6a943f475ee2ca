//! Crash-loop backoff for one slot, the way systemd and PM2 do it: the first crash is
//! replaced at once; each further crash within the stable period doubles the wait, up to
//! a cap; a worker that stayed up for the stable period resets the count.

use std::time::Duration;

/// First non-zero delay.
pub const BASE: Duration = Duration::from_millis(100);
/// Longest delay.
pub const CAP: Duration = Duration::from_secs(10);
/// A worker that served this long counts as stable.
pub const STABLE: Duration = Duration::from_secs(10);

/// A slot's crash history.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Crashes in a row without a stable period in between.
    pub failures: u32,
}

impl Backoff {
    /// Records a crash of a worker that was up for `uptime` (`None`: never became ready)
    /// and returns how long to wait before starting the next one.
    pub fn crashed(&mut self, uptime: Option<Duration>) -> Duration {
        if uptime.is_some_and(|u| u >= STABLE) {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        match self.failures {
            1 => Duration::ZERO,
            n => BASE.saturating_mul(1 << (n - 2).min(16)).min(CAP),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_crash_is_immediate_then_doubling_to_the_cap() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..10)
            .map(|_| b.crashed(None).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [0, 100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
    }

    #[test]
    fn a_stable_worker_resets_the_count() {
        let mut b = Backoff::default();
        b.crashed(None);
        b.crashed(Some(Duration::from_secs(1)));
        assert_eq!(b.crashed(Some(Duration::from_secs(60))), Duration::ZERO);
    }
}
