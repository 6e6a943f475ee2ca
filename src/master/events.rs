//! What the supervisor's loop handles, one at a time: a worker spoke or exited, a
//! command (signal or control socket), a request with a reply channel, a timer tick.

use tokio::sync::oneshot;
use wsfleet_worker::ipc::{ToMaster, WorkerCounters};

use super::api::calls::Call;
use super::relay::WorkerKey;
use super::view::{Answers, FleetView};
use crate::control_api::ReloadReport;

/// What the master is asked to do (by signals or the control socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterCmd {
    /// Rolling restart.
    Reload,
    /// Stop the fleet; `now` skips draining.
    Stop {
        /// Kill instead of drain.
        now: bool,
    },
    /// SIGINT: the first one stops gracefully, the second at once.
    Interrupt,
}

/// A question for the loop, answered on its reply channel.
pub enum Request {
    /// Ask every linked worker for its counters; the answers arrive on the receivers.
    AskCounters(oneshot::Sender<Vec<(WorkerKey, oneshot::Receiver<WorkerCounters>)>>),
    /// Record the counters that arrived and answer with a snapshot of the fleet.
    View {
        /// Counters the workers answered with (missing: did not answer in time).
        answers: Answers,
        /// Where the snapshot goes.
        reply: oneshot::Sender<FleetView>,
    },
    /// A rolling restart, answered when it is over.
    Reload(oneshot::Sender<ReloadReport>),
    /// A server API call.
    Api(Call),
}

/// One thing that happened.
pub enum Event {
    /// A worker's Hello matched how it was started: it may be sent `Start`.
    Hello(WorkerKey),
    /// A linked worker sent a message.
    Message(WorkerKey, ToMaster),
    /// A worker process ended (`how`: its exit status, for logs).
    Exited(WorkerKey, String),
    /// A worker broke its link protocol (no Hello, bad frame): kill it.
    Misbehaved(WorkerKey),
    /// A signal or control command.
    Command(MasterCmd),
    /// A request with a reply.
    Request(Request),
    /// Time passed: sample /proc, check stalled workers and due deadlines.
    Tick,
    /// A Redis link task reported (`--redis`).
    Redis(super::redis::Report),
}
