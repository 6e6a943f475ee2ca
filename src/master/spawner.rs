//! Starting and killing worker processes behind a small trait, so the supervisor's unit
//! tests drive it with a fake and no process. The real [`ProcessSpawner`] uses
//! [`super::spawn`] and starts the worker's link ([`super::link`]): its reader goes to
//! the loop as a stream of [`Event`]s, its exit arrives on the loop's event queue.

use std::path::PathBuf;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::events::Event;
use super::link::LinkEvents;
use super::relay::WorkerKey;
use super::spawn::{self, WorkerSpec};
use super::state::WorkerTx;
use crate::config::Settings;
use crate::sys::procfs::{self, ProcSample};

/// A started worker, as the supervisor keeps it.
pub struct SpawnedWorker {
    /// Its pid.
    pub pid: u32,
    /// Its queue of messages (written to its link by a task the spawner started).
    pub tx: WorkerTx,
}

/// What the supervisor needs from the operating system.
pub trait Spawner {
    /// Starts the worker `key` for `slot`, incarnation `generation`; its Hello, messages
    /// and exit arrive later as events tagged with `key`.
    fn spawn(
        &mut self,
        key: WorkerKey,
        slot: u32,
        generation: u64,
        settings: &Settings,
    ) -> Result<SpawnedWorker, String>;

    /// SIGKILLs a worker (its exit arrives as an event).
    fn kill(&mut self, pid: u32);

    /// CPU and memory of a process (the master's or a worker's); `None` if it is gone.
    fn sample(&mut self, pid: u32) -> Option<ProcSample> {
        procfs::sample(pid)
    }
}

/// The real spawner: the wsfleet binary re-executed as a worker on its slot's socket.
pub struct ProcessSpawner {
    /// The binary workers are started from (re-read at every spawn: replacing it on disk
    /// and reloading upgrades the fleet).
    exe: PathBuf,
    /// One listening socket per slot, owned by the master for its whole life.
    sockets: Vec<socket2::Socket>,
    /// Where worker exits are reported.
    events: mpsc::UnboundedSender<Event>,
    /// Where each new worker's link reader goes, for the loop to poll.
    links: mpsc::UnboundedSender<LinkEvents>,
}

impl ProcessSpawner {
    /// A spawner for `sockets` (one per slot) reporting exits to `events` and handing
    /// link readers to `links`.
    pub fn new(
        exe: PathBuf,
        sockets: Vec<socket2::Socket>,
        events: mpsc::UnboundedSender<Event>,
        links: mpsc::UnboundedSender<LinkEvents>,
    ) -> Self {
        Self {
            exe,
            sockets,
            events,
            links,
        }
    }
}

impl Spawner for ProcessSpawner {
    fn spawn(
        &mut self,
        key: WorkerKey,
        slot: u32,
        generation: u64,
        settings: &Settings,
    ) -> Result<SpawnedWorker, String> {
        let listener = self
            .sockets
            .get(slot as usize)
            .ok_or_else(|| format!("no listening socket for slot {slot}"))?;
        let spec = WorkerSpec {
            exe: &self.exe,
            listener,
            slot,
            generation,
            log_level: &settings.log_level,
            log_format: settings.log_format,
        };
        let spawned =
            spawn::spawn(&spec).map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let pid = spawned.pid;
        let hello_timeout = settings
            .ready_timeout
            .max(std::time::Duration::from_secs(1));
        let link = super::link::start(
            spawned,
            super::link::Expect {
                key,
                slot,
                generation,
                hello_timeout,
            },
            self.events.clone(),
        )
        .map_err(|e| format!("cannot use the link to worker pid {pid}: {e}"))?;
        // The loop outlives every spawn; if it is gone, nothing is left to tell.
        let _ = self.links.send(link.events);
        Ok(SpawnedWorker { pid, tx: link.tx })
    }

    fn kill(&mut self, pid: u32) {
        kill_pid(pid);
    }
}

/// SIGKILLs `pid` (ignoring one that is already gone).
pub fn kill_pid(pid: u32) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}
