//! CPU and memory sampling: the server's process tree from /proc (utime+stime of each
//! `--server-pid` and all its descendants, VmRSS summed over the same tree), and this
//! process's own CPU time (getrusage) for `client_cpu_pct`.

use std::collections::HashMap;
use std::fs;
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};

/// Clock ticks per second of /proc/PID/stat times: USER_HZ, which Linux fixes at 100 in its
/// user-space ABI on every architecture.
const TICKS_PER_S: f64 = 100.0;

/// The fields of /proc/PID/stat the tester uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Parent pid, to find descendants.
    pub ppid: u32,
    /// User CPU ticks.
    pub utime: u64,
    /// System CPU ticks.
    pub stime: u64,
}

/// Parses /proc/PID/stat (the command name may contain spaces and parentheses, so fields are
/// counted after the last `)`).
pub fn parse_stat(s: &str) -> Option<Stat> {
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After ")": state(0) ppid(1) ... utime(11) stime(12).
    Some(Stat {
        ppid: f.get(1)?.parse().ok()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
    })
}

/// Parses VmRSS from /proc/PID/status, in bytes (kernel threads have none).
pub fn parse_vmrss(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line["VmRSS:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

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
        ticks as f64 / TICKS_PER_S
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
            let s = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| {
                anyhow::anyhow!("--server-pid {pid}: cannot read /proc/{pid}/stat: {e}")
            })?;
            parse_stat(&s).ok_or_else(|| {
                anyhow::anyhow!("--server-pid {pid}: unparsable /proc/{pid}/stat")
            })?;
        }
        Ok(Some(ServerProbe {
            roots: roots.to_vec(),
        }))
    }

    /// Samples the tree now.
    pub fn sample(&self) -> TreeSample {
        let mut stats = HashMap::new();
        if let Ok(dir) = fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                if let Some(st) = fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .as_deref()
                    .and_then(parse_stat)
                {
                    stats.insert(pid, st);
                }
            }
        }
        let parents: HashMap<u32, u32> = stats.iter().map(|(p, s)| (*p, s.ppid)).collect();
        let mut out = TreeSample::default();
        for pid in tree(&self.roots, &parents) {
            out.ticks.insert(pid, stats[&pid].utime + stats[&pid].stime);
            out.rss_bytes += fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .as_deref()
                .and_then(parse_vmrss)
                .unwrap_or(0);
        }
        out
    }
}

/// Samples an optional probe.
pub fn sample(p: &Option<ServerProbe>) -> Option<TreeSample> {
    p.as_ref().map(ServerProbe::sample)
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
    fn stat_with_odd_comm() {
        let s = "1234 (my (weird) prog) S 77 1234 1234 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 3 0 1000 1000 100";
        assert_eq!(
            parse_stat(s),
            Some(Stat {
                ppid: 77,
                utime: 250,
                stime: 31
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn vmrss() {
        let s = "Name:\tx\nVmPeak:\t 100 kB\nVmRSS:\t    2048 kB\nThreads: 1\n";
        assert_eq!(parse_vmrss(s), Some(2048 * 1024));
        assert_eq!(parse_vmrss("Name:\tkthreadd\n"), None);
    }

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
