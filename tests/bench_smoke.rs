//! Smoke test of `wsfleet bench` against a real 2-worker fleet: a short run of every mode
//! (the reconnect storm reloads the fleet, so it runs last),
//! checking the JSON line's shape and that nothing was lost. Benchmarks measure; this
//! only proves the tool works (no figure is asserted).

mod common;

use std::process::Command;

use common::*;

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("run bench");
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).expect("utf8");
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("not one JSON line ({e}): {line}"))
}

#[test]
fn every_mode_runs_against_a_fleet() {
    let fleet = Fleet::start(&[]);
    let pid = fleet.pid().to_string();
    let ws = fleet.url("/ws");

    let echo = bench(&[
        "echo",
        "--url",
        &fleet.url("/echo"),
        "--conns",
        "4",
        "--duration",
        "1",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(echo["mode"], "echo");
    assert!(echo["messages"].as_u64().unwrap() > 0);
    assert_eq!(echo["errors"], 0);
    assert!(echo["rtt_us"]["p99"].as_f64().unwrap() > 0.0);
    assert!(echo["server_cpu_s"].is_number());

    let fan = bench(&[
        "fanout",
        "--url",
        &ws,
        "--subs",
        "20",
        "--rate",
        "50",
        "--duration",
        "1",
    ]);
    assert_eq!(fan["mode"], "fanout");
    assert!(fan["published"].as_u64().unwrap() > 0);
    assert_eq!(fan["received"], fan["expected"]);
    assert_eq!(
        (
            fan["lost"].as_u64(),
            fan["duplicated"].as_u64(),
            fan["out_of_order"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert!(fan["server_cpu_s"].is_null());

    let idle = bench(&[
        "idle",
        "--url",
        &ws,
        "--conns",
        "50",
        "--hold",
        "0",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(
        (idle["connected"].as_u64(), idle["failed"].as_u64()),
        (Some(50), Some(0))
    );
    assert!(idle["server_rss_per_conn_bytes"].is_number());

    let churn = bench(&["churn", "--url", &ws, "--rate", "50", "--duration", "1"]);
    assert!(churn["attempted"].as_u64().unwrap() > 0);
    assert_eq!(churn["failed"], 0, "{churn}");

    let control = fleet.control.to_str().unwrap().to_owned();
    let storm = bench(&[
        "storm",
        "--url",
        &ws,
        "--control",
        &control,
        "--subs",
        "40",
        "--rooms",
        "4",
        "--rate",
        "100",
        "--before",
        "0.3",
        "--after",
        "0.3",
    ]);
    assert_eq!(storm["mode"], "storm");
    assert_eq!(
        (
            storm["lost"].as_u64(),
            storm["duplicates"].as_u64(),
            storm["failed"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{storm}"
    );
    assert_eq!(
        storm["recovered"], 40,
        "every subscriber re-joined with since: {storm}"
    );
    assert!(storm["master_cpu_s"].is_number(), "{storm}");
}
