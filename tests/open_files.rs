//! Past the open-file limit a worker answers 503 at once (and logs it once per interval)
//! instead of leaving clients hanging; `max_connections` is fitted to the limit.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn out_of_descriptors_new_clients_get_503_fast() {
    let dir = TempDir::new();
    let wrapper = dir.0.join("low-nofile");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nulimit -n 128 || exit 99\nexec {BIN} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fleet = Fleet::start_in(wrapper.to_str().unwrap(), dir, &["--workers", "1"])
        .unwrap_or_else(|e| panic!("{e}"));
    fleet.assert_logged("max_connections lowered to fit the open-file limit");
    let host = fleet.addr.clone();
    // Idle connections that never finish their request hold a descriptor each (until the
    // handshake timeout): enough of them exhaust the worker's 128.
    let mut idle = Vec::new();
    for _ in 0..160 {
        idle.push(tokio::net::TcpStream::connect(&host).await.unwrap());
    }
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
        let _ = s
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut buf = vec![0u8; 256];
        let n = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .expect("a client past the open-file limit hangs")
            .unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 503"), "{head:?}");
    }
    fleet.assert_logged("out of file descriptors: answering new connections with 503");
    let lines = fleet.stderr().matches("out of file descriptors").count();
    assert!(lines <= 2, "logged {lines} times, not once per interval");
    drop(idle);
}
