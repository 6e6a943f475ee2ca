//! The run directory and control socket cannot be hijacked (issue 15, findings 2 and 3):
//! a directory another user owns or can write is refused with one error line and nothing
//! in it is touched; a live fleet's control socket is never taken; a dead master's socket
//! is still cleaned up.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Fleet, T, TempDir};

/// Runs `wsfleet serve` that must refuse to start; returns its one error line.
fn refused(run_dir: &Path, extra: &[&str]) -> String {
    let dir = TempDir::new();
    let stderr_path = dir.0.join("stderr");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"])
        .args(["--admin", "off", "--run-dir"])
        .arg(run_dir)
        .args(extra)
        .env_remove("WSFLEET_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            panic!(
                "the master started instead of refusing; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!status.success(), "exit {status}; stderr:\n{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("wsfleet: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "want one error line; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    errors[0].to_owned()
}

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: this test needs root (to give a directory to another uid)");
    false
}

#[test]
fn a_directory_of_another_uid_with_a_symlinked_lock_is_refused_untouched() {
    if !is_root() {
        return;
    }
    let dir = TempDir::new();
    let precious = dir.0.join("precious");
    std::fs::write(&precious, "root's file\n").unwrap();
    let evil = dir.0.join("evil");
    std::fs::create_dir(&evil).unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&precious, evil.join("master.lock")).unwrap();
    std::os::unix::fs::lchown(evil.join("master.lock"), Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::chown(&evil, Some(65534), Some(65534)).unwrap();

    let err = refused(&evil, &[]);
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(err.contains("--run-dir"), "{err}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "root's file\n");
    assert!(!evil.join("control.sock").exists());
    assert!(!evil.join("control.sock.lock").exists());
}

#[test]
fn a_symlinked_lock_in_our_own_directory_is_not_followed() {
    let dir = TempDir::new();
    let precious = dir.0.join("precious");
    std::fs::write(&precious, "keep\n").unwrap();
    let run = dir.0.join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&precious, run.join("master.lock")).unwrap();

    let err = refused(&run, &[]);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep\n");
}

#[test]
fn a_group_or_world_writable_directory_is_refused() {
    for mode in [0o770, 0o757, 0o1777] {
        let dir = TempDir::new();
        let run = dir.0.join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = refused(&run, &[]);
        assert!(
            err.contains("writable by group or others"),
            "{mode:o}: {err}"
        );
        assert!(err.contains("chmod 700"), "{err}");
        assert!(!run.join("master.lock").exists());
    }
}

#[test]
fn a_second_master_cannot_take_a_live_fleets_control_socket() {
    let fleet = Fleet::start(&[]);
    let dir = TempDir::new();
    let err = refused(
        &dir.0.join("run"),
        &["--control", fleet.control.to_str().unwrap()],
    );
    assert!(err.contains("belongs to a running wsfleet master"), "{err}");
    assert!(fleet.control.exists());
    let out = fleet.cli(&["stats", "--json"]);
    assert!(
        out.status.success(),
        "the first fleet must still answer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fleet.ready_pids().len(), 2);
}

#[test]
fn the_socket_of_a_killed_master_is_cleaned_up() {
    let mut fleet = Fleet::start(&[]);
    let control = fleet.control.clone();
    fleet.kill_tree();
    assert!(control.exists(), "SIGKILL leaves the socket behind");
    let dir = std::mem::replace(&mut fleet.dir, TempDir::new());
    let second = Fleet::start_in(BIN, dir, &[]).unwrap();
    assert_eq!(second.ready_pids().len(), 2);
    let out = second.cli(&["stats", "--json"]);
    assert!(out.status.success());
}
