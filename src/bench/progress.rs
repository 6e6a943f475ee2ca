//! The live progress line on stderr, once a second: an indicatif spinner when stderr is a
//! terminal, a plain line otherwise (logs, CI, scripts).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A running progress reporter; stop it before printing the summary.
pub struct Progress {
    /// The ticking task.
    task: JoinHandle<()>,
    /// The spinner, on a terminal.
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts reporting `label: render(state, elapsed seconds)` every second.
    pub fn start<S: Send + Sync + 'static>(
        label: &'static str,
        state: &Arc<S>,
        render: impl Fn(&S, f64) -> String + Send + 'static,
    ) -> Progress {
        let state = state.clone();
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix}: {msg}") {
                b.set_style(style);
            }
            b.set_prefix(label);
            b
        });
        let bar2 = bar.clone();
        let start = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            loop {
                tick.tick().await;
                let line = render(&state, start.elapsed().as_secs_f64());
                match &bar2 {
                    Some(b) => b.set_message(line),
                    None => eprintln!("{label}: {line}"),
                }
            }
        });
        Progress { task, bar }
    }

    /// Stops and clears the line.
    pub fn stop(self) {
        self.task.abort();
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
