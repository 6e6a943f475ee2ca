//! CPU and memory sampling: the server's process tree (utime+stime of each `--server-pid`
//! and all its descendants, VmRSS summed over the same tree; /proc is read through
//! [`crate::sys::procfs`]), and this process's own CPU time (getrusage) for
//! `client_cpu_pct`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};

use super::report::{ratio, round3};
use crate::sys::procfs;

/// `roots` and all their descendants, given every process's parent.
pub fn tree(roots: &[u32], parents: &HashMap<u32, u32>) -> Vec<u32> {
    let mut out: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|p| parents.contains_key(p))
        .collect();
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        for (&pid, &pp) in parents {
            if pp == parent && !out.contains(&pid) {
                out.push(pid);
            }
        }
        i += 1;
    }
    out
}

/// CPU ticks per process and summed RSS of a server process tree at one moment.
#[derive(Debug, Clone, Default)]
pub struct TreeSample {
    /// utime+stime ticks of each process in the tree.
    ticks: HashMap<u32, u64>,
    /// Summed VmRSS, bytes.
    pub rss_bytes: u64,
}

impl TreeSample {
    /// CPU seconds spent between `earlier` and `self` by processes alive at `self` (processes
    /// that appeared in between count in full; ones that exited are lost).
    pub fn cpu_s_since(&self, earlier: &TreeSample) -> f64 {
        let ticks: u64 = self
            .ticks
            .iter()
            .map(|(pid, t)| t.saturating_sub(earlier.ticks.get(pid).copied().unwrap_or(0)))
            .sum();
        procfs::ticks_to_s(ticks)
    }
}

/// Samples the server: nothing when no pid was given.
#[derive(Debug, Clone)]
pub struct ServerProbe {
    /// The `--server-pid`s.
    roots: Vec<u32>,
}

impl ServerProbe {
    /// Checks the pids exist (a typo should fail up front, not produce zeros).
    pub fn new(roots: &[u32]) -> anyhow::Result<Option<ServerProbe>> {
        if roots.is_empty() {
            return Ok(None);
        }
        for pid in roots {
            procfs::read_stat(*pid).ok_or_else(|| {
                anyhow::anyhow!(
                    "--server-pid {pid}: /proc/{pid}/stat is missing or unreadable; check the pid"
                )
            })?;
        }
        Ok(Some(ServerProbe {
            roots: roots.to_vec(),
        }))
    }

    /// Samples the tree now.
    pub fn sample(&self) -> TreeSample {
        let mut stats = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                if let Some(st) = procfs::read_stat(pid) {
                    stats.insert(pid, st);
                }
            }
        }
        let parents: HashMap<u32, u32> = stats.iter().map(|(p, s)| (*p, s.ppid)).collect();
        let mut out = TreeSample::default();
        for pid in tree(&self.roots, &parents) {
            out.ticks.insert(pid, stats[&pid].utime + stats[&pid].stime);
            out.rss_bytes += procfs::read_vmrss(pid).unwrap_or(0);
        }
        out
    }
}

/// Samples an optional probe.
pub fn sample(p: &Option<ServerProbe>) -> Option<TreeSample> {
    p.as_ref().map(ServerProbe::sample)
}

/// The server's RSS before, at `mid`, and the growth per connection over `conns` (rounded);
/// all `None` without `--server-pid`.
pub fn rss_growth(
    before: &Option<TreeSample>,
    mid: &Option<TreeSample>,
    conns: u64,
) -> (Option<u64>, Option<u64>, Option<f64>) {
    let rss_before = before.as_ref().map(|s| s.rss_bytes);
    let rss = mid.as_ref().map(|s| s.rss_bytes);
    let per_conn = rss_before
        .zip(rss)
        .map(|(b, r)| round3(ratio(r as f64 - b as f64, conns as f64)));
    (rss_before, rss, per_conn)
}

/// This process's CPU time (user + system) so far.
pub fn self_cpu() -> Duration {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::new(t.tv_sec().max(0) as u64, (t.tv_usec().max(0) as u32) * 1000)
            };
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// Measures this process's CPU use over an interval.
#[derive(Debug, Clone, Copy)]
pub struct ClientCpu {
    /// CPU time at the start.
    cpu: Duration,
    /// Wall time at the start.
    wall: Instant,
}

impl ClientCpu {
    /// Starts measuring.
    pub fn start() -> ClientCpu {
        ClientCpu {
            cpu: self_cpu(),
            wall: Instant::now(),
        }
    }

    /// CPU ÷ wall × 100 since the start (100 = one core busy).
    pub fn pct(&self) -> f64 {
        let wall = self.wall.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        super::report::round3((self_cpu().saturating_sub(self.cpu)).as_secs_f64() / wall * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants() {
        let parents: HashMap<u32, u32> = [(10, 1), (11, 10), (12, 10), (13, 11), (20, 1), (99, 98)]
            .into_iter()
            .collect();
        let mut t = tree(&[10], &parents);
        t.sort();
        assert_eq!(t, vec![10, 11, 12, 13]);
        assert!(tree(&[5], &parents).is_empty());
    }

    #[test]
    fn self_tree_samples() {
        let me = std::process::id();
        let p = ServerProbe::new(&[me]).unwrap().unwrap();
        let a = p.sample();
        assert!(a.rss_bytes > 0);
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(p.sample().cpu_s_since(&a) >= 0.0);
        assert!(ServerProbe::new(&[u32::MAX]).is_err());
        assert!(ClientCpu::start().pct() >= 0.0);
    }
}
