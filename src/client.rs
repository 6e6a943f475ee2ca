//! `wsfleet stats`, `wsfleet reload` and `wsfleet stop`: one request to the control
//! socket, a readable answer, and an exit status scripts can trust.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::{ControlArgs, StatsArgs, StopArgs};
use crate::control_api::{COUNTERS, Counters, FleetStats, Request, Response};

/// Sends one request and reads the answer.
pub fn request(path: &Path, req: &Request, timeout: Option<Duration>) -> anyhow::Result<Response> {
    let mut stream = UnixStream::connect(path).with_context(|| {
        format!(
            "cannot reach a wsfleet master at {}; is it running? (pass --run-dir or --control to point at it)",
            path.display()
        )
    })?;
    stream.set_read_timeout(timeout)?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .context("the master did not answer (timed out or closed the connection)")?;
    if answer.is_empty() {
        bail!("the master closed the control connection without answering");
    }
    serde_json::from_str(&answer)
        .with_context(|| format!("unreadable answer from the master: {answer}"))
}

fn path(args: &ControlArgs) -> anyhow::Result<std::path::PathBuf> {
    Ok(crate::config::control_path(args)?)
}

/// `wsfleet stats`.
pub fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let path = path(&args.control)?;
    loop {
        let resp = request(&path, &Request::Stats, Some(Duration::from_secs(10)))?;
        let Some(stats) = resp.stats.filter(|_| resp.ok) else {
            bail!(
                "{}",
                resp.error
                    .unwrap_or_else(|| "the master sent no stats".into())
            );
        };
        let text = if args.json {
            format!("{}\n", serde_json::to_string(&stats)?)
        } else if args.watch.is_some() {
            format!("\x1b[2J\x1b[H{}", render(&stats))
        } else {
            render(&stats)
        };
        if !emit(&text)? {
            return Ok(());
        }
        match args.watch {
            Some(every) => std::thread::sleep(every.max(Duration::from_millis(200))),
            None => return Ok(()),
        }
    }
}

/// Writes `text` to stdout; `false` when the reader has gone away (`wsfleet stats | head`),
/// which ends the command quietly instead of panicking like `print!` would.
fn emit(text: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}M", bytes as f64 / (1024.0 * 1024.0))
}

fn human(n: u64) -> String {
    match n {
        0..10_000 => n.to_string(),
        10_000..10_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// Width of the `i`th counter column (the first sits right after `cpu%`).
fn width(i: usize) -> usize {
    if i == 0 { 7 } else { 8 }
}

/// The stats table.
pub fn render(s: &FleetStats) -> String {
    let mut out = String::new();
    let m = &s.master;
    out.push_str(&format!(
        "master pid {}  listen {}  slots {}  up {:.0}s  rss {}  cpu {:.1}%  reloads {}{}\n",
        m.pid,
        m.listen,
        m.slots,
        m.uptime_s,
        mib(m.rss_bytes),
        m.cpu_pct,
        m.reloads,
        if m.reloading { " (reloading)" } else { "" }
    ));
    let h = &m.history;
    out.push_str(&format!(
        "history rooms {}  messages {}  bytes {}  evicted size/ttl/budget {}/{}/{}  recoveries ok {} failed {}\n",
        h.rooms,
        h.messages,
        mib(h.bytes),
        h.evicted_size,
        h.evicted_ttl,
        h.evicted_budget,
        h.recoveries_ok,
        h.recoveries_failed
    ));
    if let Some(r) = &m.redis {
        for (i, inst) in r.instances.iter().enumerate() {
            let state = match (&inst.up, &inst.last_error) {
                (true, _) => "up".to_owned(),
                (false, Some(why)) => format!("down ({why})"),
                (false, None) => "down".to_owned(),
            };
            out.push_str(&format!("redis {i} {}  {state}\n", inst.url));
        }
        out.push_str(&format!(
            "redis host {}  rooms {}  members (all hosts) {}  published {}  refused {}  received {}  delivered {}  backfilled {}  lost {}  reads {}  resyncs {}\n",
            r.host, r.rooms, r.members, r.published, r.refused, r.received, r.delivered, r.backfilled, r.lost, r.reads, r.resyncs
        ));
    }
    let columns = || COUNTERS.iter().filter(|c| !c.column.is_empty());
    let mut header = format!(
        "{:>4} {:>8} {:<9} {:>4} {:>8} {:>4} {:>8} {:>6}",
        "slot", "pid", "state", "gen", "uptime", "rst", "rss", "cpu%"
    );
    for (i, c) in columns().enumerate() {
        header.push_str(&format!(" {:>w$}", c.column, w = width(i)));
    }
    out.push_str(&header);
    out.push('\n');
    let row = |slot: String,
               pid: String,
               state: &str,
               gen_: String,
               up: String,
               rst: u64,
               rss: u64,
               cpu: f64,
               c: Option<&Counters>| {
        let mut line = format!(
            "{:>4} {:>8} {:<9} {:>4} {:>8} {:>4} {:>8} {:>6.1}",
            slot,
            pid,
            state,
            gen_,
            up,
            rst,
            mib(rss),
            cpu
        );
        for (i, col) in columns().enumerate() {
            let v = c.map(|c| human((col.get)(c))).unwrap_or_else(|| "-".into());
            line.push_str(&format!(" {v:>w$}", w = width(i)));
        }
        line.push('\n');
        line
    };
    for w in &s.workers {
        let state = match w.backoff_ms {
            Some(ms) => format!("{}({:.1}s)", w.state, ms as f64 / 1000.0),
            None => w.state.clone(),
        };
        out.push_str(&row(
            w.slot.to_string(),
            w.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            &state,
            w.generation.to_string(),
            format!("{:.0}s", w.uptime_s),
            w.restarts,
            w.rss_bytes,
            w.cpu_pct,
            w.counters.as_ref(),
        ));
    }
    let t = &s.total;
    out.push_str(&row(
        "all".into(),
        format!("{}p", t.processes),
        "",
        "".into(),
        "".into(),
        t.restarts,
        t.rss_bytes,
        t.cpu_pct,
        Some(&t.counters),
    ));
    let c = &t.counters;
    out.push_str(&format!(
        "compression out: {} compressed (from {}, ratio {}), {} plain\n",
        mib(c.bytes_out_compressed),
        mib(c.bytes_out_compressed_from),
        c.compression_ratio()
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
        mib(c.bytes_out.saturating_sub(c.bytes_out_compressed)),
    ));
    out
}

/// `wsfleet reload`.
pub fn reload(args: ControlArgs) -> anyhow::Result<()> {
    let path = path(&args)?;
    let resp = request(&path, &Request::Reload, None)?;
    let Some(report) = resp.reload else {
        bail!(
            "{}",
            resp.error
                .unwrap_or_else(|| "the master sent no reload report".into())
        );
    };
    for s in &report.slots {
        let pid = |p: Option<u32>| p.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        match &s.error {
            None => emit(&format!(
                "slot {}: ok  pid {} -> {}  generation {}  ready in {} ms\n",
                s.slot,
                pid(s.old_pid),
                pid(s.new_pid),
                s.generation,
                s.ready_ms.unwrap_or(0)
            ))?,
            Some(e) => emit(&format!("slot {}: FAILED  {e}\n", s.slot))?,
        };
    }
    if report.ok {
        emit(&format!("reload done in {} ms\n", report.duration_ms))?;
        Ok(())
    } else {
        bail!(
            "reload failed: {}; slots not replaced keep serving with their old workers",
            report.error.unwrap_or_else(|| "unknown error".into())
        )
    }
}

/// `wsfleet stop`.
pub fn stop(args: StopArgs) -> anyhow::Result<()> {
    let path = path(&args.control)?;
    let resp = request(
        &path,
        &Request::Stop { now: args.now },
        Some(Duration::from_secs(10)),
    )?;
    if !resp.ok {
        bail!(
            "{}",
            resp.error
                .unwrap_or_else(|| "the master refused to stop".into())
        );
    }
    emit(if args.now {
        "stopping now\n"
    } else {
        "stopping: draining workers\n"
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_api::{Totals, WorkerRow};

    #[test]
    fn the_table_has_a_column_per_listed_counter() {
        let mut stats = FleetStats::default();
        stats.workers.push(WorkerRow {
            slot: 0,
            pid: Some(42),
            state: "ready".into(),
            counters: Some(Counters {
                messages_in: 12_345,
                ..Default::default()
            }),
            ..Default::default()
        });
        stats.total = Totals::default();
        let text = render(&stats);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(
            lines[5],
            "compression out: 0.0M compressed (from 0.0M, ratio -), 0.0M plain"
        );
        assert!(lines[1].starts_with("history rooms 0"), "{text}");
        let before = format!(
            "{:>4} {:>8} {:<9} {:>4} {:>8} {:>4} {:>8} {:>6} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "slot",
            "pid",
            "state",
            "gen",
            "uptime",
            "rst",
            "rss",
            "cpu%",
            "conns",
            "total",
            "msg_in",
            "msg_out",
            "b_in",
            "b_out",
            "ipc_in",
            "ipc_out"
        );
        assert_eq!(lines[2], before, "the header is as it always was");
        assert!(lines[3].contains("12.3k"), "{text}");
        let cells = |l: &str| l.split_whitespace().count();
        assert_eq!(cells(lines[2]), cells(lines[3]), "{text}");
    }
}
