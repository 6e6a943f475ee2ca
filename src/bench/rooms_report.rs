//! The JSON lines of `bench rooms` and `bench join` (their key sets are a contract with
//! scripts/bench.sh, like the other modes' in `report`).

use serde::Serialize;

use super::delivery::DeliveryReport;
use super::report::Pcts;

/// `rooms` results.
#[derive(Debug, Serialize)]
pub struct RoomsReport {
    /// Always "rooms".
    pub mode: &'static str,
    /// Rooms asked for.
    pub rooms: usize,
    /// Members per room asked for.
    pub members: usize,
    /// Members that joined (every one of them publishes).
    pub joined: u64,
    /// Rate (per member), totals and measurements.
    #[serde(flatten)]
    pub delivery: DeliveryReport,
}

/// `join` results.
#[derive(Debug, Serialize)]
pub struct JoinReport {
    /// Always "join".
    pub mode: &'static str,
    /// The room.
    pub room: String,
    /// Clients asked for.
    pub conns: usize,
    /// Clients that got `joined`.
    pub joined: u64,
    /// Clients whose connect or join failed (refused, reset, per-connection timeout, error).
    pub failed: u64,
    /// Clients still connecting or waiting for `joined` when `--max-time` ran out.
    pub unfinished: u64,
    /// Whether `--max-time` ran out before every client joined or failed.
    pub timed_out: bool,
    /// The `--max-time` bound, s.
    pub max_time_s: f64,
    /// Seconds from the first connect to the last `joined`.
    pub duration_s: f64,
    /// joined ÷ duration_s: connects + joins per second.
    pub joins_per_s: f64,
    /// Connect + handshake + join → joined per client, ms.
    pub connect_ms: Pcts,
    /// Frames the clients received after their `joined` until the end of the hold (presence).
    pub frames_received: u64,
    /// Clients the server closed or reset after they joined.
    pub dropped: u64,
    /// Seconds held after the joins.
    pub hold_s: f64,
    /// This process's CPU ÷ wall × 100 during the joins.
    pub client_cpu_pct: f64,
    /// Server CPU seconds from the first connect until the joins ended.
    pub server_cpu_s: Option<f64>,
    /// Server CPU µs per joined client.
    pub server_cpu_us_per_unit: Option<f64>,
    /// Server RSS before connecting.
    pub server_rss_bytes_before: Option<u64>,
    /// Server RSS half a second after the joins ended.
    pub server_rss_bytes: Option<u64>,
    /// (rss − rss before) ÷ joined.
    pub server_rss_per_conn_bytes: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys() {
        let j = JoinReport {
            mode: "join",
            room: "live".into(),
            conns: 1,
            joined: 1,
            failed: 0,
            unfinished: 0,
            timed_out: false,
            max_time_s: 1.0,
            duration_s: 1.0,
            joins_per_s: 1.0,
            connect_ms: Pcts::default(),
            frames_received: 0,
            dropped: 0,
            hold_s: 0.0,
            client_cpu_pct: 0.0,
            server_cpu_s: None,
            server_cpu_us_per_unit: None,
            server_rss_bytes_before: None,
            server_rss_bytes: None,
            server_rss_per_conn_bytes: None,
        };
        let v = serde_json::to_value(&j).unwrap();
        for k in [
            "joins_per_s",
            "timed_out",
            "unfinished",
            "server_rss_per_conn_bytes",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        let r = RoomsReport {
            mode: "rooms",
            rooms: 1,
            members: 1,
            joined: 1,
            delivery: DeliveryReport::sample(),
        };
        let v = serde_json::to_value(&r).unwrap();
        for k in [
            "expected",
            "lost",
            "out_of_order",
            "latency_us",
            "server_cpu_us_per_unit",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }
}
