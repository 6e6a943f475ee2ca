//! Results: latency histograms (shared, fed in batches), percentile summaries, the JSON line
//! of every mode (exact key set is a contract with scripts/bench.sh), and printing them.

use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::delivery::DeliveryReport;

/// A histogram shared by all connection tasks; they record through a [`Batch`].
#[derive(Clone)]
pub struct Hist {
    /// The merged histogram (values in µs).
    inner: Arc<Mutex<Histogram<u64>>>,
}

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

impl Hist {
    /// An empty histogram for 1 µs .. 1 h with 3 significant digits (larger values are
    /// clamped; an auto-resizing one would not grow under `saturating_record`).
    pub fn new() -> Hist {
        let h = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Hist {
            inner: Arc::new(Mutex::new(h)),
        }
    }

    /// A per-task recorder that takes the lock once per 256 values.
    pub fn batch(&self) -> Batch {
        Batch {
            buf: Vec::with_capacity(BATCH),
            hist: self.clone(),
        }
    }

    /// p50/p99/max of everything recorded.
    pub fn pcts(&self) -> Pcts {
        let h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Pcts::of(&h)
    }

    /// Number of values recorded.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

const BATCH: usize = 256;

/// Buffers values and adds them to the shared histogram in batches (and on drop).
pub struct Batch {
    /// Values not yet merged.
    buf: Vec<u64>,
    /// Where they go.
    hist: Hist,
}

impl Batch {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.buf.push(v);
        if self.buf.len() >= BATCH {
            self.flush();
        }
    }

    /// Merges buffered values.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut h = self.hist.inner.lock().unwrap_or_else(|p| p.into_inner());
        for v in self.buf.drain(..) {
            h.saturating_record(v);
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Percentiles of a latency distribution.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Pcts {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Pcts {
    /// From a histogram (zeros when empty).
    pub fn of(h: &Histogram<u64>) -> Pcts {
        if h.is_empty() {
            return Pcts::default();
        }
        Pcts {
            p50: h.value_at_quantile(0.5) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            max: h.max() as f64,
        }
    }

    /// Divided by `d` (µs → ms), rounded to µs precision.
    pub fn scaled(self, d: f64) -> Pcts {
        Pcts {
            p50: round3(self.p50 / d),
            p99: round3(self.p99 / d),
            max: round3(self.max / d),
        }
    }
}

/// Rounds to 3 decimals (keeps the JSON readable).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `a / b`, or 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// `echo` results.
#[derive(Debug, Serialize)]
pub struct EchoReport {
    /// Always "echo".
    pub mode: &'static str,
    /// Connections asked for.
    pub conns: usize,
    /// Payload bytes.
    pub size: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// Round trips completed.
    pub messages: u64,
    /// Round trips per second.
    pub msgs_per_s: f64,
    /// Round-trip time, µs.
    pub rtt_us: Pcts,
    /// Failed connects plus connections that failed mid-run.
    pub errors: u64,
    /// This process's CPU ÷ wall × 100 during the measurement.
    pub client_cpu_pct: f64,
    /// Server CPU seconds during the measurement.
    pub server_cpu_s: Option<f64>,
    /// Server CPU µs per echoed message.
    pub server_cpu_us_per_unit: Option<f64>,
    /// Server RSS at the end of the measurement.
    pub server_rss_bytes: Option<u64>,
}

/// `fanout` results.
#[derive(Debug, Serialize)]
pub struct FanoutReport {
    /// Always "fanout".
    pub mode: &'static str,
    /// Subscribers asked for.
    pub subs: usize,
    /// Rate, totals and measurements (one subscriber room, one publisher).
    #[serde(flatten)]
    pub delivery: DeliveryReport,
    /// Bytes read off the sockets (subscribers and publisher) per delivery while
    /// publishing: the frames as sent, compressed or not.
    pub wire_bytes_per_delivery: Option<f64>,
    /// Connections that negotiated permessage-deflate (`--deflate`).
    pub deflate_negotiated: u64,
}

/// `idle` results.
#[derive(Debug, Serialize)]
pub struct IdleReport {
    /// Always "idle".
    pub mode: &'static str,
    /// Connections asked for.
    pub conns: usize,
    /// Connections that got `joined`.
    pub connected: u64,
    /// Connections that did not.
    pub failed: u64,
    /// Connect + handshake + join → joined, ms.
    pub connect_ms: Pcts,
    /// Seconds held.
    pub hold_s: f64,
    /// This process's CPU ÷ wall × 100 from the first connect to the end of the hold.
    pub client_cpu_pct: f64,
    /// Server RSS before connecting.
    pub server_rss_bytes_before: Option<u64>,
    /// Server RSS with all connections open.
    pub server_rss_bytes: Option<u64>,
    /// (rss − rss before) ÷ connected.
    pub server_rss_per_conn_bytes: Option<f64>,
    /// Server CPU seconds from the first connect to the end of the hold.
    pub server_cpu_s: Option<f64>,
}

/// Churn failure counts.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Failures {
    /// ECONNREFUSED.
    pub refused: u64,
    /// Reset, EPIPE, unexpected EOF.
    pub reset: u64,
    /// HTTP status not 101 or a bad handshake.
    pub handshake: u64,
    /// No `joined` within the timeout.
    pub timeout: u64,
    /// Anything else (including server `error` replies and attempts skipped for lack of sockets).
    pub other: u64,
}

/// `churn` results.
#[derive(Debug, Serialize)]
pub struct ChurnReport {
    /// Always "churn".
    pub mode: &'static str,
    /// Attempts per second asked for.
    pub rate: f64,
    /// Whether every attempt presented a freshly minted token (`--token-secret-file`).
    pub with_token: bool,
    /// Seconds from the first attempt until the last one finished.
    pub duration_s: f64,
    /// Attempts started.
    pub attempted: u64,
    /// Attempts that got `joined`.
    pub succeeded: u64,
    /// Attempts that did not.
    pub failed: u64,
    /// Why.
    pub failures: Failures,
    /// This process's CPU ÷ wall × 100.
    pub client_cpu_pct: f64,
    /// Server CPU seconds.
    pub server_cpu_s: Option<f64>,
    /// Server CPU µs per attempt.
    pub server_cpu_us_per_unit: Option<f64>,
}

/// Prints the human summary (stdout, or stderr with `--json`) and the JSON line.
pub fn emit<T: Serialize>(json: bool, human: &str, report: &T) -> anyhow::Result<()> {
    if json {
        eprint!("{human}");
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{human}");
    }
    Ok(())
}

/// A line about the tester's own CPU use, so a reader can tell if the tester was the limit.
pub fn client_cpu_line(pct: f64, threads: usize) -> String {
    let cap = threads as f64 * 100.0;
    let verdict = if pct
        >= 0.85
            * cap.min(100.0 * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64)
    {
        "the tester itself may have been the bottleneck"
    } else {
        "the tester was not the bottleneck"
    };
    format!("client CPU    {pct:.1}% of one core (runtime threads: {threads}); {verdict}\n")
}

/// A line about server CPU/RSS, or that it was not measured.
pub fn server_line(
    cpu_s: Option<f64>,
    per_unit: Option<f64>,
    unit: &str,
    rss: Option<u64>,
) -> String {
    match (cpu_s, rss) {
        (Some(c), Some(r)) => format!(
            "server        {c:.2} s CPU, {:.2} µs CPU per {unit}, RSS {:.1} MiB\n",
            per_unit.unwrap_or(0.0),
            r as f64 / 1048576.0
        ),
        (Some(c), None) => format!(
            "server        {c:.2} s CPU, {:.2} µs CPU per {unit}\n",
            per_unit.unwrap_or(0.0)
        ),
        _ => "server        not measured (no --server-pid)\n".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys, sorted (serde_json's map is ordered by key).
    fn keys(v: &serde_json::Value) -> Vec<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    fn sorted<const N: usize>(k: [&str; N]) -> Vec<String> {
        let mut v: Vec<String> = k.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn histogram_batches_and_percentiles() {
        let h = Hist::new();
        {
            let mut b = h.batch();
            for v in 1..=1000 {
                b.record(v);
            }
        }
        assert_eq!(h.len(), 1000);
        let p = h.pcts();
        assert!((p.p50 - 500.0).abs() <= 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() <= 1.0, "{p:?}");
        assert_eq!(p.max, 1000.0);
        let h = Hist::new();
        h.batch().record(5_000_000);
        assert!((h.pcts().max - 5e6).abs() < 5e3, "{:?}", h.pcts());
        assert_eq!(Hist::new().pcts(), Pcts::default());
        assert_eq!(
            Pcts {
                p50: 1500.0,
                p99: 2000.0,
                max: 1.0
            }
            .scaled(1000.0)
            .p50,
            1.5
        );
    }

    #[test]
    fn json_shapes() {
        let e = EchoReport {
            mode: "echo",
            conns: 1,
            size: 2,
            duration_s: 1.0,
            messages: 3,
            msgs_per_s: 3.0,
            rtt_us: Pcts::default(),
            errors: 0,
            client_cpu_pct: 1.0,
            server_cpu_s: None,
            server_cpu_us_per_unit: None,
            server_rss_bytes: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            keys(&v),
            sorted([
                "mode",
                "conns",
                "size",
                "duration_s",
                "messages",
                "msgs_per_s",
                "rtt_us",
                "errors",
                "client_cpu_pct",
                "server_cpu_s",
                "server_cpu_us_per_unit",
                "server_rss_bytes"
            ])
        );
        assert!(v["server_cpu_s"].is_null());
        assert_eq!(keys(&v["rtt_us"]), sorted(["p50", "p99", "max"]));

        let c = ChurnReport {
            mode: "churn",
            rate: 1.0,
            with_token: false,
            duration_s: 1.0,
            attempted: 1,
            succeeded: 1,
            failed: 0,
            failures: Failures::default(),
            client_cpu_pct: 0.0,
            server_cpu_s: Some(1.0),
            server_cpu_us_per_unit: Some(2.0),
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            keys(&v["failures"]),
            sorted(["refused", "reset", "handshake", "timeout", "other"])
        );
        assert_eq!(v["server_cpu_s"], 1.0);

        let i = IdleReport {
            mode: "idle",
            conns: 1,
            connected: 1,
            failed: 0,
            connect_ms: Pcts::default(),
            hold_s: 0.0,
            client_cpu_pct: 0.0,
            server_rss_bytes_before: None,
            server_rss_bytes: None,
            server_rss_per_conn_bytes: None,
            server_cpu_s: None,
        };
        let v = serde_json::to_value(&i).unwrap();
        for k in [
            "connect_ms",
            "server_rss_bytes_before",
            "server_rss_per_conn_bytes",
            "hold_s",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }

        let f = FanoutReport {
            mode: "fanout",
            subs: 1,
            delivery: DeliveryReport::sample(),
            wire_bytes_per_delivery: None,
            deflate_negotiated: 0,
        };
        // The flattened delivery part keeps its place and order in the line.
        let line = serde_json::to_string(&f).unwrap();
        assert!(
            line.starts_with(
                r#"{"mode":"fanout","subs":1,"rate":"max","size":1,"duration_s":1.0,"published":0,"#
            ),
            "{line}"
        );
        assert!(
            line.ends_with(
                r#""server_cpu_us_per_unit":null,"server_rss_bytes":null,"wire_bytes_per_delivery":null,"deflate_negotiated":0}"#
            ),
            "{line}"
        );
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["rate"], "max");
        for k in [
            "published",
            "expected",
            "received",
            "lost",
            "duplicated",
            "out_of_order",
            "deliveries_per_s",
            "latency_us",
            "errors",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }
}
