//! Pings and the silence timeout, for every connection of the worker in one sweep.
//!
//! A timer per connection would cost each idle connection a heap-allocated timer entry
//! and a wake-up per ping; instead one task walks the connections a few times per ping
//! period: it closes those silent for longer than `ping_timeout` (1001) and, once per
//! `ping_interval`, queues a ping to the rest. Timeouts are detected within a quarter
//! of the shorter of the two periods (at most 1 s late). The same pass checks the
//! token expiry clocks (`token_expiring` warnings and 4001 closes, at most 1 s late).

use std::rc::Rc;
use std::time::Duration;

use crate::conn::now_ms;
use crate::worker::Worker;

/// How often the sweep runs for the given periods (in ms).
pub fn sweep_period(ping_interval_ms: u64, ping_timeout_ms: u64) -> Duration {
    Duration::from_millis((ping_interval_ms.min(ping_timeout_ms) / 4).clamp(10, 1000))
}

/// The wall clock in Unix seconds (token `exp` is wall-clock time).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the sweep for as long as the worker lives.
pub async fn run(worker: Rc<Worker>) {
    let interval = worker.settings.ping_interval_ms.min(u64::from(u32::MAX)) as u32;
    let timeout = worker.settings.ping_timeout_ms.min(u64::from(u32::MAX)) as u32;
    let mut tick = tokio::time::interval(sweep_period(interval.into(), timeout.into()));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_round = now_ms();
    loop {
        tick.tick().await;
        let now = now_ms();
        let ping = now.wrapping_sub(last_round) >= interval;
        if ping {
            last_round = now;
        }
        worker.sweep(now, timeout, ping);
        worker.check_tokens(unix_now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_runs_often_enough_but_not_too_often() {
        assert_eq!(sweep_period(20_000, 45_000), Duration::from_secs(1));
        assert_eq!(sweep_period(100, 500), Duration::from_millis(25));
        assert_eq!(sweep_period(1, 1), Duration::from_millis(10));
    }
}
