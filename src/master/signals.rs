//! Signals (signal-hook): a thread turns them into [`MasterCmd`]s for the supervisor's loop.
//! SIGHUP reloads; SIGTERM stops gracefully; SIGINT stops gracefully, a second one at
//! once; SIGQUIT stops at once.

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::mpsc;

use super::events::{Event, MasterCmd};

/// Starts the signal thread.
pub fn forward(tx: mpsc::UnboundedSender<Event>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT, SIGQUIT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let cmd = match sig {
                    SIGHUP => MasterCmd::Reload,
                    SIGTERM => MasterCmd::Stop { now: false },
                    SIGINT => MasterCmd::Interrupt,
                    _ => MasterCmd::Stop { now: true },
                };
                tracing::info!(signal = sig, ?cmd, "signal received");
                if tx.send(Event::Command(cmd)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}
