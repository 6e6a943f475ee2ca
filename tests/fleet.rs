//! The fleet issue: process model, shared port, supervision, reloads, stop, control socket.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn workers_share_the_port_and_connections_spread() {
    let fleet = Fleet::start(&[]);
    let pids = fleet.ready_pids();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert_ne!(pids[0].1, pids[1].1);
    let mut seen = HashSet::new();
    let mut clients = Vec::new();
    for _ in 0..64 {
        let (ws, slot, _) = client(&fleet).await;
        seen.insert(slot);
        clients.push(ws);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "connections never reached both workers");
    let stats = fleet.stats();
    assert_eq!(
        stats["total"]["counters"]["connections_current"],
        clients.len() as u64
    );
}

/// Outcome counts of a connect loop.
#[derive(Default)]
struct Loop {
    ok: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
}

/// A running connect loop.
struct ConnectLoop {
    stop: Arc<AtomicBool>,
    out: Arc<Loop>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ConnectLoop {
    fn start(addr: &str, tasks: usize) -> Self {
        let (stop, out) = (Arc::new(AtomicBool::new(false)), Arc::new(Loop::default()));
        let tasks = connect_loop(addr.to_owned(), tasks, stop.clone(), out.clone());
        Self { stop, out, tasks }
    }

    fn ok(&self) -> u64 {
        self.out.ok.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until `n` more connects than `since` succeeded.
    async fn wait_ok(&self, since: u64, n: u64) {
        let started = Instant::now();
        while self.ok() < since + n {
            assert!(started.elapsed() < T, "connect loop made no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the loop and returns (ok, refused, other).
    async fn finish(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let o = &self.out;
        (
            o.ok.load(Ordering::Relaxed),
            o.refused.load(Ordering::Relaxed),
            o.other.load(Ordering::Relaxed),
        )
    }
}

/// Connects, upgrades to /ws, reads the welcome and closes, over and over, from
/// `tasks` concurrent tasks until `stop` is set.
fn connect_loop(
    addr: String,
    tasks: usize,
    stop: Arc<AtomicBool>,
    out: Arc<Loop>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|_| {
            let (addr, stop, out) = (addr.clone(), stop.clone(), out.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let attempt = tokio::time::timeout(Duration::from_secs(5), async {
                        let (mut ws, _) =
                            tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
                        match ws.next().await {
                            Some(Ok(m)) if m.is_text() => {}
                            other => {
                                return Err(std::io::Error::other(format!(
                                    "no welcome: {other:?}"
                                ))
                                .into());
                            }
                        }
                        let _ = ws.close(None).await;
                        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
                    })
                    .await;
                    match attempt {
                        Ok(Ok(())) => out.ok.fetch_add(1, Ordering::Relaxed),
                        Ok(Err(tokio_tungstenite::tungstenite::Error::Io(e)))
                            if e.kind() == std::io::ErrorKind::ConnectionRefused =>
                        {
                            out.refused.fetch_add(1, Ordering::Relaxed)
                        }
                        Ok(Err(e)) => {
                            eprintln!("connect loop failure: {e}");
                            out.other.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(_) => {
                            eprintln!("connect loop timeout");
                            out.other.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_replaces_the_worker_and_no_connect_is_refused() {
    let fleet = Fleet::start(&[]);
    let before = fleet.ready_pids();
    let connects = ConnectLoop::start(&fleet.addr, 4);
    connects.wait_ok(0, 50).await;
    let (slot, victim, _) = before[0];
    let killed = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let stats = tokio::task::block_in_place(|| {
        fleet.wait_stats("a replacement worker", T, |s| {
            s["workers"].as_array().unwrap().iter().any(|w| {
                w["slot"] == slot
                    && w["state"] == "ready"
                    && w["pid"] != victim
                    && w["generation"] == 2
            })
        })
    });
    let replaced_in = killed.elapsed();
    let row = stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["slot"] == slot)
        .unwrap()
        .clone();
    assert_eq!(row["restarts"], 1, "{row}");
    connects.wait_ok(connects.ok(), 50).await;
    let (ok, refused, other) = connects.finish().await;
    eprintln!(
        "kill -9: replaced and ready in {replaced_in:?} (stats poll included); connects ok={ok} refused={refused} other={other}"
    );
    assert_eq!(
        refused, 0,
        "a connect was refused while the worker was replaced"
    );
    fleet.assert_logged("signal 9 (SIGKILL)");
    fleet.assert_logged(&format!("pid={victim}"));
    let log = fleet.stderr();
    assert!(
        !log.contains("bad frame"),
        "a killed worker is an exit, not a protocol error:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_replaces_every_worker_with_zero_failed_connects() {
    let fleet = Fleet::start(&[]);
    let before = fleet.ready_pids();
    let connects = ConnectLoop::start(&fleet.addr, 8);
    connects.wait_ok(0, 100).await;
    let started = Instant::now();
    let ok_before = connects.ok();
    fleet.signal(Signal::SIGHUP);
    tokio::task::block_in_place(|| {
        fleet.wait_stats(
            "every slot at generation 2 and the old workers gone",
            T,
            |s| {
                let w = s["workers"].as_array().unwrap();
                w.len() == 2
                    && w.iter()
                        .all(|w| w["generation"] == 2 && w["state"] == "ready")
            },
        )
    });
    let took = started.elapsed();
    let during = connects.ok() - ok_before;
    connects.wait_ok(connects.ok(), 100).await;
    let (ok, refused, other) = connects.finish().await;
    let after = fleet.ready_pids();
    for (slot, pid, _) in &before {
        assert!(
            after
                .iter()
                .any(|(s, p, g)| s == slot && p != pid && *g == 2),
            "slot {slot} not replaced: {after:?}"
        );
    }
    eprintln!(
        "SIGHUP: done (old workers drained and gone) in {took:?}; {during} connects during it; total ok={ok} refused={refused} other={other}"
    );
    assert_eq!(
        (refused, other),
        (0, 0),
        "connects failed during the reload"
    );
    assert_eq!(fleet.stats()["master"]["last_reload_ok"], true);
}

#[test]
fn reload_with_a_broken_binary_rolls_back_and_keeps_serving() {
    let fleet = Fleet::start_from_copy(&["--ready-timeout", "3"]);
    let before = fleet.ready_pids();
    // An upgrade gone wrong: the binary on disk now exits at once.
    fleet.break_binary("echo 'broken build' >&2\nexit 3");
    let out = fleet.cli(&["reload"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "reload should fail: {stdout} {stderr}"
    );
    assert!(stderr.contains("reload failed"), "{stderr}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    assert_eq!(fleet.ready_pids(), before, "old workers must keep serving");
    assert_eq!(fleet.stats()["master"]["last_reload_ok"], false);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_ws, _, _) = client(&fleet).await;
    });
}

#[test]
fn a_crash_looping_slot_backs_off_and_recovers() {
    let fleet = Fleet::start_from_copy(&[]);
    let good = fleet.break_binary("exit 7");
    let (slot, victim, _) = fleet.ready_pids()[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let s = fleet.wait_stats("the slot in backoff", T, |s| {
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["slot"] == slot && w["state"] == "backoff")
    });
    let row = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["slot"] == slot)
        .unwrap()
        .clone();
    assert!(row["restarts"].as_u64().unwrap() >= 2, "{row}");
    fleet.assert_logged("exit code 7");
    // Fix the binary: the slot comes back by itself.
    fleet.restore_binary(&good);
    fleet.wait_stats("the slot serving again", Duration::from_secs(30), |s| {
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["slot"] == slot && w["state"] == "ready")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1012_and_exits_zero() {
    let mut fleet = Fleet::start(&[]);
    let (mut ws, _, _) = client(&fleet).await;
    fleet.signal(Signal::SIGTERM);
    assert_eq!(close_code(&mut ws).await, Some(1012));
    let status = tokio::task::block_in_place(|| fleet.wait_exit(T));
    assert!(status.success(), "{status:?}\n{}", fleet.stderr());
    assert!(!fleet.control.exists(), "control socket left behind");
    assert!(
        !fleet.control.with_file_name("master.lock").exists(),
        "lock file left behind"
    );
    // The master waits for (and reaps) every worker before it exits: nothing of the
    // process group is left.
    let group = nix::unistd::Pid::from_raw(fleet.pid());
    assert_eq!(
        nix::sys::signal::killpg(group, None),
        Err(nix::errno::Errno::ESRCH),
        "a worker outlived the master"
    );
}

#[test]
fn control_socket_answers_garbage_with_an_error_and_keeps_serving() {
    use std::io::{BufRead, BufReader, Write};
    let fleet = Fleet::start(&[]);
    let mut s = std::os::unix::net::UnixStream::connect(&fleet.control).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    for bad in ["hello", "{\"cmd\":\"dance\"}", "{\"cmd\":5}", "[]"] {
        writeln!(s, "{bad}").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], false, "{bad} -> {v}");
        assert!(v["error"].as_str().unwrap().contains("bad request"), "{v}");
    }
    writeln!(s, "{}", json!({"cmd": "stats"})).unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["stats"]["workers"].as_array().unwrap().len(), 2);
    let out = fleet.cli(&["stats"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("all"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A reader that goes away (`wsfleet stats | head -0`) ends the client quietly: the
    // pipe's read end is closed before the client has its answer to print.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(BIN)
        .args(["stats", "--json", "--control"])
        .arg(&fleet.control)
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_command_lines_and_conflicts_get_one_clear_error() {
    let run = |args: &[&str]| std::process::Command::new(BIN).args(args).output().unwrap();
    let out = run(&["serve", "--no-such-flag"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    let out = run(&["serve", "--listen", "nonsense"]);
    assert!(!out.status.success());

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new();
    let run_dir = dir.0.join("run");
    let out = run(&[
        "serve",
        "--listen",
        &addr,
        "--workers",
        "1",
        "--run-dir",
        run_dir.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("in use"), "{err}");

    let fleet = Fleet::start(&[]);
    let run_dir = fleet.control.parent().unwrap();
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--run-dir",
        run_dir.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("already running"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = run(&["stats", "--run-dir", "/nonexistent-wsfleet"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is it running"));

    let out = run(&[
        "serve",
        "--run-dir",
        "/proc/wsfleet-cannot-be-here",
        "--listen",
        "127.0.0.1:0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot use run directory"), "{err}");
}

#[test]
fn a_stale_control_socket_from_a_crashed_master_is_cleaned_up() {
    let dir = TempDir::new();
    let run_dir = dir.0.join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    drop(std::os::unix::net::UnixListener::bind(run_dir.join("control.sock")).unwrap());
    assert!(run_dir.join("control.sock").exists());
    let fleet = Fleet::start_in(BIN, dir, &[]).unwrap();
    assert_eq!(fleet.ready_pids().len(), 2);
}

#[tokio::test]
async fn health_and_plain_http_routes() {
    let fleet = Fleet::start(&[]);
    let get = |path: &'static str| {
        let addr = fleet.addr.clone();
        async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            tokio::time::timeout(T, s.read_to_string(&mut out))
                .await
                .unwrap()
                .unwrap();
            out
        }
    };
    assert!(get("/health").await.starts_with("HTTP/1.1 200"));
    assert!(get("/ws").await.starts_with("HTTP/1.1 426"));
    assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
    let page = get("/").await;
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("text/html"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigint_stops_at_once() {
    // A long drain period: only the second SIGINT can make the master exit quickly.
    let mut fleet = Fleet::start(&["--drain-timeout", "60"]);
    let (_ws, _, _) = client(&fleet).await;
    fleet.signal(Signal::SIGINT);
    tokio::task::block_in_place(|| {
        fleet.wait_stats("every worker draining", T, |s| {
            s["workers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["state"] == "draining")
        })
    });
    fleet.signal(Signal::SIGINT);
    let status = tokio::task::block_in_place(|| fleet.wait_exit(T));
    assert!(status.success(), "{status:?}");
    fleet.assert_logged("stopping now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rereads_the_config_file() {
    let dir = TempDir::new();
    let config = dir.0.join("wsfleet.toml");
    std::fs::write(&config, "max_rooms = 1\n").unwrap();
    let config = config.to_str().unwrap().to_owned();
    let fleet = Fleet::start_in(BIN, dir, &["--config", &config]).unwrap();
    let rooms_allowed = |fleet: &Fleet| {
        let url = fleet.url("/ws");
        async move {
            let mut ws = connect(&url).await;
            recv(&mut ws).await; // welcome
            send(&mut ws, json!({"type": "join", "room": "a"})).await;
            recv_type(&mut ws, "joined").await;
            send(&mut ws, json!({"type": "join", "room": "b"})).await;
            let v = recv(&mut ws).await;
            v["type"] == "joined"
        }
    };
    assert!(
        !rooms_allowed(&fleet).await,
        "max_rooms = 1 from the file applies"
    );
    std::fs::write(&config, "max_rooms = 5\n").unwrap();
    let out = tokio::task::block_in_place(|| fleet.cli(&["reload"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        rooms_allowed(&fleet).await,
        "the reload applied max_rooms = 5"
    );
    // A broken file: the reload is refused before any worker is touched.
    let before = fleet.ready_pids();
    std::fs::write(&config, "max_rooms = \"many\"\n").unwrap();
    let out = tokio::task::block_in_place(|| fleet.cli(&["reload"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("settings not reloaded") && err.contains("max_rooms"),
        "{err}"
    );
    assert_eq!(fleet.ready_pids(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_is_killed_and_replaced() {
    let fleet = Fleet::start(&["--ipc-queue-limit", "500", "--rate-limit", "0"]);
    let ((mut a, _, _), (mut b, slot_b, _)) = clients_on_two_workers(&fleet).await;
    // Only b is a member: a, which never reads, must not be sent its own 3 MB of
    // messages back (its outbox limit would close it mid-flood on a slow machine).
    join(&mut b, "r").await;
    let pid_b = fleet
        .ready_pids()
        .into_iter()
        .find(|w| w.0 == slot_b)
        .unwrap()
        .1;
    // Freeze b's worker: it stops reading its link while a's publishes keep coming.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid_b as i32), Signal::SIGSTOP).unwrap();
    let blob = "z".repeat(1024);
    for i in 0..3000 {
        a.feed(tokio_tungstenite::tungstenite::Message::text(
            json!({"type": "publish", "room": "r", "data": [i, blob]}).to_string(),
        ))
        .await
        .unwrap();
    }
    a.flush().await.unwrap();
    tokio::task::block_in_place(|| {
        fleet.wait_stats("the stalled worker replaced", T, |s| {
            s["workers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["slot"] == slot_b && w["state"] == "ready" && w["pid"] != pid_b)
        })
    });
    fleet.assert_logged("not reading its master link");
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_master_closes_every_client_with_1012() {
    let fleet = Fleet::start(&[]);
    let ((mut a, _, _), (mut b, _, _)) = clients_on_two_workers(&fleet).await;
    let workers: Vec<u64> = fleet.ready_pids().into_iter().map(|w| w.1).collect();
    fleet.signal(Signal::SIGKILL);
    let killed = Instant::now();
    for ws in [&mut a, &mut b] {
        assert_eq!(close_code(ws).await, Some(1012));
    }
    let closed_in = killed.elapsed();
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + T;
        while !workers.iter().all(|&pid| exited(pid)) {
            assert!(
                Instant::now() < deadline,
                "workers {workers:?} outlived their master"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    fleet.assert_logged("the master is gone; closing every client with 1012");
    eprintln!("kill -9 of the master: both clients got 1012 in {closed_in:?}");
}
