//! Reading a process's CPU time and memory from /proc: the master's per-worker figures
//! ([`sample`]) and `wsfleet bench`'s server-tree sampling ([`read_stat`], [`read_vmrss`])
//! parse the same files here.

use std::sync::OnceLock;

/// Resident set size and CPU time of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// User + system CPU time in seconds.
    pub cpu_s: f64,
}

/// The fields of /proc/PID/stat that are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Parent pid, to find descendants.
    pub ppid: u32,
    /// User CPU, in clock ticks.
    pub utime: u64,
    /// System CPU, in clock ticks.
    pub stime: u64,
}

impl Stat {
    /// User + system CPU time in seconds.
    pub fn cpu_s(&self) -> f64 {
        ticks_to_s(self.utime + self.stime)
    }
}

/// Converts /proc clock ticks to seconds (`sysconf(_SC_CLK_TCK)`, read once).
pub fn ticks_to_s(ticks: u64) -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    let per_s = *TICKS.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .map(|t| t as f64)
            .unwrap_or(100.0)
    });
    ticks as f64 / per_s
}

fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map(|p| p as u64)
            .unwrap_or(4096)
    })
}

/// Samples process `pid`; `None` if it is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = read_stat(pid)?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let rss_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(ProcSample {
        rss_bytes: rss_pages * page_size(),
        cpu_s: stat.cpu_s(),
    })
}

/// Reads /proc/PID/stat; `None` if the process is gone or the file is unreadable.
pub fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Reads VmRSS from /proc/PID/status, in bytes; `None` if gone (or a kernel thread).
pub fn read_vmrss(pid: u32) -> Option<u64> {
    parse_vmrss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Parses a /proc/PID/stat line. The command name may contain spaces and parentheses, so
/// fields are counted after the last `)`.
pub fn parse_stat(s: &str) -> Option<Stat> {
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    // After ")": state(0) ppid(1) ... utime(11) stime(12).
    let ppid = f.nth(1)?.parse().ok()?;
    let utime = f.nth(9)?.parse().ok()?;
    let stime = f.next()?.parse().ok()?;
    Some(Stat { ppid, utime, stime })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_even_with_odd_command_names() {
        let line =
            "123 (a) b (c)) S 1 123 123 0 -1 4194560 100 0 0 0 25 17 0 0 20 0 1 0 100 1000 50";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 1,
                utime: 25,
                stime: 17
            })
        );
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
    fn samples_this_process() {
        let me = std::process::id();
        let s = sample(me).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(read_vmrss(me).unwrap() > 0);
        assert!(read_stat(me).unwrap().cpu_s() >= 0.0);
        assert!(sample(u32::MAX).is_none());
    }
}
