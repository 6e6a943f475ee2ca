//! The master's admin listener against the real binary: /metrics parsed as Prometheus
//! exposition while traffic crosses both workers, /ready through a crash loop, /health,
//! a taken admin port, and JSON logs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// A blocking `GET` on the admin listener: (status, body).
fn get(fleet: &Fleet, path: &str) -> (u16, String) {
    fleet.admin_get(path)
}

/// Scrapes /metrics and parses it with a Prometheus parser.
fn scrape(fleet: &Fleet) -> prometheus_parse::Scrape {
    let (status, body) = get(fleet, "/metrics");
    assert_eq!(status, 200, "{body}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus exposition");
    // The parser skips lines it cannot read: every declared family must have samples.
    for name in scrape.docs.keys() {
        assert!(
            scrape.samples.iter().any(|s| s.metric == *name),
            "{name} is declared but none of its samples parsed:\n{body}"
        );
    }
    scrape
}

/// The value of `metric` for `worker` (a counter or gauge), or a histogram's count.
fn value(scrape: &prometheus_parse::Scrape, metric: &str, worker: &str) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && s.labels.get("worker") == Some(worker))
        .unwrap_or_else(|| panic!("no {metric}{{worker={worker:?}}}"));
    match &s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        prometheus_parse::Value::Histogram(buckets) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map(|b| b.count)
            .unwrap_or(0.0),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_traffic_through_both_workers() {
    let fleet = Fleet::start(&[]);
    let before = scrape(&fleet);
    for w in ["0", "1"] {
        assert_eq!(value(&before, "wsfleet_connections", w), 0.0);
    }
    let ((mut a, wa, _), (mut b, wb, _)) = clients_on_two_workers(&fleet).await;
    for ws in [&mut a, &mut b] {
        send(ws, json!({"type":"join","room":"metrics","id":1})).await;
        recv_type(ws, "ack").await;
    }
    for i in 0..5 {
        send(&mut a, json!({"type":"publish","room":"metrics","data":i})).await;
        send(&mut b, json!({"type":"publish","room":"metrics","data":i})).await;
    }
    for ws in [&mut a, &mut b] {
        let mut got = 0;
        while got < 10 {
            if recv(ws).await["type"] == "message" {
                got += 1;
            }
        }
    }
    let after = tokio::task::block_in_place(|| scrape(&fleet));
    for w in [wa.to_string(), wb.to_string()] {
        let w = w.as_str();
        assert_eq!(value(&after, "wsfleet_connections", w), 1.0, "worker {w}");
        assert!(value(&after, "wsfleet_connections_accepted_total", w) >= 1.0);
        // join + 5 publishes each
        assert!(value(&after, "wsfleet_received_messages_total", w) >= 6.0);
        assert!(value(&after, "wsfleet_sent_messages_total", w) >= 10.0);
        assert!(
            value(&after, "wsfleet_received_bytes_total", w)
                > value(&before, "wsfleet_received_bytes_total", w)
        );
        assert_eq!(value(&after, "wsfleet_publishes_total", w), 5.0);
        assert_eq!(value(&after, "wsfleet_rooms", w), 1.0);
        // every room message reached this worker: 10 publishes timed
        assert!(value(&after, "wsfleet_delivery_latency_seconds", w) >= 10.0);
        assert!(value(&after, "wsfleet_worker_resident_memory_bytes", w) > 0.0);
    }
    let fleet_rooms = after
        .samples
        .iter()
        .find(|s| s.metric == "wsfleet_fleet_rooms")
        .unwrap();
    assert_eq!(fleet_rooms.value, prometheus_parse::Value::Gauge(1.0));
    // The room keeps history (the default): its stream and 10 messages are counted.
    let sample = |name: &str, label: Option<(&str, &str)>| {
        after
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("/metrics lacks {name} {label:?}"))
            .value
            .clone()
    };
    assert_eq!(
        sample("wsfleet_history_rooms", None),
        prometheus_parse::Value::Gauge(1.0)
    );
    assert_eq!(
        sample("wsfleet_history_messages", None),
        prometheus_parse::Value::Gauge(10.0)
    );
    for (key, value) in [("cause", "size"), ("cause", "ttl"), ("cause", "budget")] {
        sample("wsfleet_history_evictions_total", Some((key, value)));
    }
    for outcome in ["ok", "failed"] {
        sample(
            "wsfleet_history_recoveries_total",
            Some(("outcome", outcome)),
        );
    }
}

/// Polls /ready until its status is `want`.
fn wait_ready(fleet: &Fleet, want: u16, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (status, body) = get(fleet, "/ready");
        let v: Value = serde_json::from_str(&body).expect("/ready answers JSON");
        if status == want {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "/ready stayed {status}, wanted {want}: {v:#}\nstderr:\n{}",
            fleet.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ready_is_503_while_a_slot_crash_loops_and_200_again_after() {
    let fleet = Fleet::start_from_copy(&[]);
    let (status, body) = get(&fleet, "/health");
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "alive");
    let ready = wait_ready(&fleet, 200, T);
    assert_eq!(ready["slots"].as_array().unwrap().len(), 2);

    let good = fleet.break_binary("exit 7");
    let (slot, victim, _) = fleet.ready_pids()[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();

    let v = wait_ready(&fleet, 503, T);
    assert_eq!(v["ready"], false);
    let row = &v["slots"][slot as usize];
    assert_eq!(row["ready"], false, "{v:#}");
    assert!(
        matches!(row["state"].as_str(), Some("backoff" | "down" | "starting")),
        "{v:#}"
    );
    // Still unready while it keeps crashing.
    fleet.wait_stats("a second crash", T, |s| {
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["slot"] == slot && w["restarts"].as_u64().unwrap_or(0) >= 2)
    });
    assert_eq!(get(&fleet, "/ready").0, 503);
    let metrics = scrape(&fleet);
    assert!(value(&metrics, "wsfleet_worker_restarts_total", &slot.to_string()) >= 2.0);

    fleet.restore_binary(&good);
    let v = wait_ready(&fleet, 200, Duration::from_secs(30));
    assert_eq!(v["ready"], true, "{v:#}");
}

#[test]
fn a_taken_admin_port_is_one_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new();
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--admin",
            &addr,
        ])
        .arg("--run-dir")
        .arg(dir.0.join("run"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains(&addr) && errors[0].contains("--admin"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no ready line expected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_off_prints_off_in_the_ready_line() {
    let fleet = Fleet::start(&["--admin", "off"]);
    assert_eq!(fleet.admin, None);
    let (_ws, _, _) = client(&fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_slot_and_pid_on_worker_lines() {
    let mut fleet = Fleet::start(&["--log-format", "json"]);
    let ((mut a, _, _), (mut b, _, _)) = clients_on_two_workers(&fleet).await;
    // A bad request makes no log line, but closing and a graceful stop do.
    send(&mut a, json!({"type":"join","room":"x"})).await;
    send(&mut b, json!({"type":"join","room":"x"})).await;
    drop((a, b));
    fleet.signal(Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| fleet.wait_exit(T));
    assert!(status.success());
    let log = fleet.stderr();
    let mut worker_lines = 0;
    let mut slots = std::collections::BTreeSet::new();
    for line in log.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line:?}"));
        assert!(v.is_object(), "{line}");
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        if v["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("wsfleet_worker"))
        {
            worker_lines += 1;
            assert!(v["slot"].is_u64(), "worker line without slot: {line}");
            assert!(v["pid"].is_u64(), "worker line without pid: {line}");
            slots.insert(v["slot"].as_u64().unwrap());
        }
    }
    assert!(worker_lines >= 4, "{log}");
    assert_eq!(slots.len(), 2, "{log}");
}

#[test]
fn a_stopped_worker_at_zero_traffic_is_found_by_the_heartbeat_and_replaced() {
    let fleet = Fleet::start(&["--worker-timeout", "8"]);
    wait_ready(&fleet, 200, T);
    let (slot, victim, _) = fleet.ready_pids()[0];
    let row = |s: &Value| {
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["slot"] == slot)
            .cloned()
            .unwrap_or_default()
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    fleet.wait_stats("the stopped worker shown unresponsive", T, |s| {
        row(s)["state"] == "unresponsive"
    });
    let detected = stopped.elapsed();
    // Between half the timeout and the kill: /ready and /metrics say so too.
    let (status, body) = get(&fleet, "/ready");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 503, "{ready:#}");
    assert_eq!(
        ready["slots"][slot as usize]["state"], "unresponsive",
        "{ready:#}"
    );
    let metrics = scrape(&fleet);
    let unresponsive = metrics
        .samples
        .iter()
        .find(|s| {
            s.metric == "wsfleet_worker_state"
                && s.labels.get("worker") == Some(&slot.to_string())
                && s.labels.get("state") == Some("unresponsive")
        })
        .map(|s| format!("{:?}", s.value));
    assert_eq!(unresponsive.as_deref(), Some("Gauge(1.0)"));
    // At the timeout it is killed and its slot gets a new worker.
    fleet.wait_stats("a new worker in the slot", T, |s| {
        let w = row(s);
        w["state"] == "ready" && w["pid"] != victim
    });
    let replaced = stopped.elapsed();
    fleet.assert_logged("did not answer its link heartbeat");
    assert_eq!(wait_ready(&fleet, 200, T)["ready"], true);
    eprintln!(
        "SIGSTOP at zero traffic, --worker-timeout 8: shown unresponsive after {detected:?}, replaced and ready after {replaced:?} (stats polls included)"
    );
}
