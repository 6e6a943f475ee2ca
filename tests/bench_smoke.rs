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

    // --deflate with chat-like JSON: every connection negotiates the extension, the
    // deliveries arrive compressed (fewer bytes on the wire than the payload) and whole.
    let z = bench(&[
        "fanout",
        "--url",
        &ws,
        "--subs",
        "20",
        "--rate",
        "50",
        "--duration",
        "1",
        "--payload",
        "json",
        "--size",
        "1024",
        "--deflate",
    ]);
    assert_eq!(z["deflate_negotiated"], 21, "{z}");
    assert_eq!(z["received"], z["expected"], "{z}");
    assert_eq!(z["lost"], 0, "{z}");
    assert!(
        z["wire_bytes_per_delivery"].as_f64().unwrap() < 700.0,
        "{z}"
    );
    let echo_z = bench(&[
        "echo",
        "--url",
        &fleet.url("/echo"),
        "--conns",
        "2",
        "--duration",
        "1",
        "--payload",
        "json",
        "--size",
        "1024",
        "--deflate",
    ]);
    assert!(echo_z["messages"].as_u64().unwrap() > 0, "{echo_z}");
    assert_eq!(echo_z["errors"], 0, "{echo_z}");

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

#[test]
fn rooms_and_join_run_against_a_fleet() {
    let fleet = Fleet::start(&[]);
    let pid = fleet.pid().to_string();
    let ws = fleet.url("/ws");

    // 6 rooms × 3 members over two workers: members of one room sit on different workers.
    let rooms = bench(&[
        "rooms",
        "--url",
        &ws,
        "--rooms",
        "6",
        "--members",
        "3",
        "--rate",
        "20",
        "--duration",
        "1",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(rooms["mode"], "rooms");
    assert_eq!(rooms["joined"], 18);
    let published = rooms["published"].as_u64().unwrap();
    assert!(published > 0, "{rooms}");
    assert_eq!(rooms["expected"].as_u64(), Some(published * 3), "{rooms}");
    assert_eq!(rooms["received"], rooms["expected"], "{rooms}");
    assert_eq!(
        (
            rooms["lost"].as_u64(),
            rooms["duplicated"].as_u64(),
            rooms["out_of_order"].as_u64(),
            rooms["out_of_order_server_seq"].as_u64(),
            rooms["server_seq_gaps"].as_u64(),
            rooms["errors"].as_u64()
        ),
        (Some(0), Some(0), Some(0), Some(0), Some(0), Some(0)),
        "{rooms}"
    );
    assert!(rooms["latency_us"]["p99"].as_f64().unwrap() > 0.0);
    assert!(rooms["server_cpu_us_per_unit"].is_number());

    let max = bench(&[
        "rooms",
        "--url",
        &ws,
        "--rooms",
        "2",
        "--members",
        "2",
        "--rate",
        "max",
        "--window",
        "2",
        "--duration",
        "1",
    ]);
    assert!(max["published"].as_u64().unwrap() > 0, "{max}");
    assert_eq!(max["received"], max["expected"], "{max}");

    // Every client joins the same room.
    let join = bench(&[
        "join",
        "--url",
        &ws,
        "--conns",
        "30",
        "--room",
        "live",
        "--hold",
        "0",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(join["mode"], "join");
    assert_eq!(
        (
            join["joined"].as_u64(),
            join["failed"].as_u64(),
            join["timed_out"].as_bool()
        ),
        (Some(30), Some(0), Some(false)),
        "{join}"
    );
    assert!(join["joins_per_s"].as_f64().unwrap() > 0.0);
    assert!(join["server_rss_per_conn_bytes"].is_number());
    // Presence notices: at most one per join to each other member (one joining a moment
    // after another may still hear of it); how many arrive before the run ends, or whether
    // the server coalesces them, is not fixed.
    let frames = join["frames_received"].as_u64().unwrap();
    assert!(frames <= 30 * 29, "{join}");
}
