//! Start-up checks of the host limits that matter for many connections. Each problem is
//! one warning line in the log; none of them stops the master (the operator may know
//! better, e.g. a test with few connections).
//!
//! - `RLIMIT_NOFILE`: every WebSocket is a descriptor in a worker. The soft limit is
//!   raised to the hard limit first ([`crate::sys::nofile`]; workers inherit it), then
//!   compared with `max_connections` (each worker) plus some headroom.
//! - `net.core.somaxconn`: the kernel silently caps every listen backlog to it, so a
//!   `--backlog` above it is not what the operator gets.

/// Descriptors a worker needs besides its WebSockets (listening socket, IPC link,
/// runtime, in-flight HTTP handshakes), as a rough margin.
const HEADROOM: u64 = 64;

/// Raises the descriptor soft limit and warns about limits too low for the settings.
pub fn check(max_connections: usize, workers: usize, backlog: u32) {
    check_nofile(max_connections as u64, workers as u64);
    if let Ok(text) = std::fs::read_to_string("/proc/sys/fs/file-max") {
        check_file_max(text.trim(), max_connections as u64, workers as u64);
    }
    if let Ok(text) = std::fs::read_to_string("/proc/sys/net/core/somaxconn") {
        check_somaxconn(text.trim(), backlog);
    }
}

fn check_nofile(max_connections: u64, workers: u64) {
    let limit = match crate::sys::nofile::raise() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit (RLIMIT_NOFILE)");
            return;
        }
    };
    let (soft, hard) = (limit.soft, limit.hard);
    match limit.raise_error {
        Some(e) => {
            tracing::warn!(soft, hard, error = %e, "cannot raise the open-file soft limit to the hard limit")
        }
        None if limit.before < soft => tracing::info!(
            from = limit.before,
            to = soft,
            "raised the open-file soft limit to the hard limit"
        ),
        None => {}
    }
    let need = max_connections.saturating_add(HEADROOM);
    if soft < need {
        tracing::warn!(
            limit = soft,
            max_connections,
            workers,
            fleet_connections = max_connections.saturating_mul(workers),
            "the open-file limit ({soft}) is below max_connections ({max_connections}) per worker: each worker takes at most {} connections and answers 503 past that. Raise it (systemd LimitNOFILE=, `ulimit -n`, /etc/security/limits.conf) or lower --max-connections",
            soft.saturating_sub(HEADROOM)
        );
    }
}

/// The per-process limit applies to each worker; the system-wide `fs.file-max` to all of
/// them together.
fn check_file_max(text: &str, max_connections: u64, workers: u64) {
    let Ok(file_max) = text.parse::<u64>() else {
        return;
    };
    let fleet = max_connections.saturating_mul(workers);
    if file_max < fleet {
        tracing::warn!(
            file_max,
            fleet_connections = fleet,
            "fs.file-max ({file_max}) is below workers x max_connections ({fleet}): the host runs out of descriptors before the fleet is full. Raise it (sysctl -w fs.file-max=...) or lower --max-connections"
        );
    }
}

fn check_somaxconn(text: &str, backlog: u32) {
    let Ok(somaxconn) = text.parse::<u64>() else {
        return;
    };
    if somaxconn < u64::from(backlog) {
        tracing::warn!(
            somaxconn,
            backlog,
            "net.core.somaxconn ({somaxconn}) is below --backlog ({backlog}): the kernel silently caps each slot's accept queue at {somaxconn}. Raise it (sysctl -w net.core.somaxconn={backlog}) or lower --backlog"
        );
    }
}
