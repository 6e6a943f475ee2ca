//! Smoke test of `wsfleet bench` against a real 2-worker fleet: a short echo and a short
//! fan-out run, checking the JSON line's shape and that nothing was lost.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_wsfleet");

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("run bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).expect("utf8");
    serde_json::from_str(line.trim()).expect("one JSON line on stdout")
}

#[test]
fn echo_and_fanout_against_a_fleet() {
    let run_dir = std::env::temp_dir().join(format!("wsf-bench-smoke-{}", std::process::id()));
    let mut server = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--run-dir",
        ])
        .arg(&run_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .unwrap_or_else(|| panic!("no listen= in {line:?}"))
        .to_owned();
    let pid = server.id().to_string();

    let echo = bench(&[
        "echo",
        "--url",
        &format!("ws://{addr}/echo"),
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
        &format!("ws://{addr}/ws"),
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
    assert_eq!(fan["lost"], 0);
    assert!(fan["server_cpu_s"].is_null());

    let _ = Command::new(BIN)
        .args(["stop", "--run-dir"])
        .arg(&run_dir)
        .status();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&run_dir);
}
