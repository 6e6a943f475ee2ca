//! What `bench fanout` and `bench rooms` share once publishing is over: the delivery totals,
//! the part of their JSON line from `rate` on (its key order is a contract with
//! scripts/bench.sh), and the matching lines of the human summary.

use serde::Serialize;
use tokio::time::Instant;

use super::args::Rate;
use super::cpu::TreeSample;
use super::report::{self, Pcts, round3};
use super::seq::SeqTotals;

/// The run's publish and delivery totals.
#[derive(Debug, Default, PartialEq)]
pub struct Tally {
    /// Accepted publishes.
    pub published: u64,
    /// Sent publishes.
    pub sent: u64,
    /// Accepted publishes × the joined receivers they were meant for.
    pub expected: u64,
    /// Deliveries, loss, duplicates, order.
    pub seq: SeqTotals,
}

/// What a publishing run measured besides its [`Tally`].
pub struct Measured {
    /// Seconds from the first publish to the last delivery (see [`elapsed_s`]).
    pub elapsed: f64,
    /// Publish → delivery, µs.
    pub latency: Pcts,
    /// Failed joins or connects, mid-run failures, server `error` frames.
    pub errors: u64,
    /// Times a `--rate max` window was reset after making no progress.
    pub window_stalls: u64,
    /// This process's CPU ÷ wall × 100 while publishing.
    pub client_cpu_pct: f64,
    /// The server's CPU and RSS before publishing and at the end (without `--server-pid`, none).
    pub server: (Option<TreeSample>, Option<TreeSample>),
}

/// Seconds from `start_us` to the last delivery, or to now when nothing was delivered.
pub fn elapsed_s(start: Instant, start_us: u64, last_delivery_us: u64) -> f64 {
    if last_delivery_us > start_us {
        (last_delivery_us - start_us) as f64 / 1e6
    } else {
        start.elapsed().as_secs_f64()
    }
}

/// The delivery part of the `fanout` and `rooms` JSON lines (flattened into them).
#[derive(Debug, Serialize)]
pub struct DeliveryReport {
    /// Publishes per second (per member for `rooms`), or "max".
    pub rate: serde_json::Value,
    /// Approximate bytes of `data`.
    pub size: usize,
    /// Seconds from the first publish to the last delivery (or the end of the grace period).
    pub duration_s: f64,
    /// Publishes the server accepted (acked).
    pub published: u64,
    /// Publishes sent (accepted + rejected, e.g. over the server's per-connection rate limit).
    pub sent: u64,
    /// Each accepted publish × the receivers that joined its room.
    pub expected: u64,
    /// Distinct deliveries received.
    pub received: u64,
    /// Expected deliveries never received.
    pub lost: u64,
    /// Deliveries received more than once.
    pub duplicated: u64,
    /// Deliveries received after a later one of the same sender.
    pub out_of_order: u64,
    /// Deliveries out of order or repeated by the room's server `seq`.
    pub out_of_order_server_seq: u64,
    /// Server `seq` numbers a receiver never saw.
    pub server_seq_gaps: u64,
    /// Distinct deliveries per second.
    pub deliveries_per_s: f64,
    /// Publish → delivery, µs.
    pub latency_us: Pcts,
    /// Failed joins or connects, mid-run failures, server `error` frames.
    pub errors: u64,
    /// With `--rate max`: times a window made no progress for its timeout and was reset.
    pub window_stalls: u64,
    /// This process's CPU ÷ wall × 100 while publishing.
    pub client_cpu_pct: f64,
    /// Server CPU seconds while publishing (plus the grace wait).
    pub server_cpu_s: Option<f64>,
    /// Server CPU µs per delivery.
    pub server_cpu_us_per_unit: Option<f64>,
    /// Server RSS at the end.
    pub server_rss_bytes: Option<u64>,
}

impl DeliveryReport {
    /// The report of a run with `--rate`, `--size`, its totals and measurements.
    pub fn new(rate: &Rate, size: usize, t: &Tally, m: Measured) -> DeliveryReport {
        let (server0, server1) = m.server;
        let server_cpu_s = server0
            .as_ref()
            .zip(server1.as_ref())
            .map(|(s0, s1)| round3(s1.cpu_s_since(s0)));
        let unique = t.seq.unique as f64;
        DeliveryReport {
            rate: match rate {
                Rate::PerSec(r) => serde_json::json!(r),
                Rate::Max => serde_json::json!("max"),
            },
            size,
            duration_s: round3(m.elapsed),
            published: t.published,
            sent: t.sent,
            expected: t.expected,
            received: t.seq.unique,
            lost: t.seq.lost,
            duplicated: t.seq.duplicated,
            out_of_order: t.seq.out_of_order,
            out_of_order_server_seq: t.seq.server_seq_regressions,
            server_seq_gaps: t.seq.server_seq_gaps,
            deliveries_per_s: round3(report::ratio(unique, m.elapsed)),
            latency_us: m.latency,
            errors: m.errors,
            window_stalls: m.window_stalls,
            client_cpu_pct: m.client_cpu_pct,
            server_cpu_s,
            server_cpu_us_per_unit: server_cpu_s.map(|c| round3(report::ratio(c * 1e6, unique))),
            server_rss_bytes: server1.map(|s| s.rss_bytes),
        }
    }

    /// The human summary from the `published` line on; `order_note` follows "out of order N"
    /// (what the order is judged by), `first_error` is [`super::FirstError::line`].
    pub fn summary(&self, order_note: &str, first_error: &str, threads: usize) -> String {
        format!(
            "published     {} accepted of {} sent, expected deliveries {}, received {}\n\
             lost          {}, duplicated {}, out of order {}{order_note} (by server seq: {} reordered, {} gaps)\n\
             deliveries    {:.0}/s\n\
             latency       p50 {} µs, p99 {} µs, max {} µs (publish → delivery)\n\
             errors        {}{}\n{first_error}{}{}",
            self.published,
            self.sent,
            self.expected,
            self.received,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.out_of_order_server_seq,
            self.server_seq_gaps,
            self.deliveries_per_s,
            self.latency_us.p50,
            self.latency_us.p99,
            self.latency_us.max,
            self.errors,
            if self.window_stalls > 0 {
                format!(", window stalls {}", self.window_stalls)
            } else {
                String::new()
            },
            report::client_cpu_line(self.client_cpu_pct, threads),
            report::server_line(
                self.server_cpu_s,
                self.server_cpu_us_per_unit,
                "delivery",
                self.server_rss_bytes
            ),
        )
    }
}

#[cfg(test)]
impl DeliveryReport {
    /// A report of a run that measured nothing, for the JSON shape tests.
    pub fn sample() -> DeliveryReport {
        let m = Measured {
            elapsed: 1.0,
            latency: Pcts::default(),
            errors: 0,
            window_stalls: 0,
            client_cpu_pct: 0.0,
            server: (None, None),
        };
        DeliveryReport::new(&Rate::Max, 1, &Tally::default(), m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_from_tally_and_its_summary() {
        let t = Tally {
            published: 4,
            sent: 5,
            expected: 8,
            seq: SeqTotals {
                unique: 6,
                lost: 2,
                ..SeqTotals::default()
            },
        };
        let m = Measured {
            elapsed: 2.0,
            latency: Pcts::default(),
            errors: 1,
            window_stalls: 3,
            client_cpu_pct: 0.0,
            server: (None, None),
        };
        let r = DeliveryReport::new(&Rate::Max, 10, &t, m);
        assert_eq!(r.rate, "max");
        assert_eq!((r.received, r.lost, r.deliveries_per_s), (6, 2, 3.0));
        assert_eq!(r.server_cpu_s, None);
        let s = r.summary(" by sender", "", 1);
        assert!(s.starts_with(
            "published     4 accepted of 5 sent, expected deliveries 8, received 6\n"
        ));
        assert!(s.contains("out of order 0 by sender (by server seq"), "{s}");
        assert!(s.contains("errors        1, window stalls 3\n"), "{s}");
    }
}
