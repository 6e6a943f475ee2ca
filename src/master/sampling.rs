//! CPU and memory of the master and its workers, from two /proc samples.

use tokio::time::Instant;

use crate::sys::procfs::ProcSample;

/// CPU use derived from two /proc samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuMeter {
    /// Latest sample.
    pub sample: ProcSample,
    /// When it was taken (none before the first).
    pub at: Option<Instant>,
    /// CPU percent (of one core) between the last two samples.
    pub pct: f64,
}

impl CpuMeter {
    /// Records a new sample taken at `now` (`None`: the process is gone; keep the last).
    pub fn update(&mut self, sample: Option<ProcSample>, now: Instant) {
        let Some(sample) = sample else {
            return;
        };
        if let Some(at) = self.at {
            let wall = now.duration_since(at).as_secs_f64();
            if wall > 0.0 {
                self.pct = ((sample.cpu_s - self.sample.cpu_s) / wall * 100.0).max(0.0);
            }
        }
        self.sample = sample;
        self.at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn percent_is_cpu_over_wall_time() {
        let t0 = Instant::now();
        let mut m = CpuMeter::default();
        m.update(
            Some(ProcSample {
                rss_bytes: 1,
                cpu_s: 1.0,
            }),
            t0,
        );
        m.update(None, t0 + Duration::from_secs(1));
        m.update(
            Some(ProcSample {
                rss_bytes: 2,
                cpu_s: 1.5,
            }),
            t0 + Duration::from_secs(2),
        );
        assert!((m.pct - 25.0).abs() < 1e-9, "{}", m.pct);
        assert_eq!(m.sample.rss_bytes, 2);
    }
}
