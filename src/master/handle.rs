//! How the control socket and the admin listener talk to the supervisor's loop: they
//! send it events with a reply channel and await the answer, never touching its state.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::api::calls::{Call, NotServing, Reply};
use super::events::{Event, MasterCmd, Request};
use super::view::{Answers, FleetView};
use crate::control_api::Counters;
use crate::control_api::ReloadReport;

/// How long a snapshot waits for workers' counters.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// A sender of events to the loop.
#[derive(Clone)]
pub struct Handle {
    /// The loop's event queue.
    events: mpsc::UnboundedSender<Event>,
}

impl Handle {
    /// A handle on the loop reading `events`.
    pub fn new(events: mpsc::UnboundedSender<Event>) -> Self {
        Self { events }
    }

    /// Sends a command (stop, reload) without waiting.
    pub fn command(&self, cmd: MasterCmd) {
        let _ = self.events.send(Event::Command(cmd));
    }

    async fn ask<T>(&self, req: impl FnOnce(oneshot::Sender<T>) -> Request) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.events.send(Event::Request(req(tx))).ok()?;
        rx.await.ok()
    }

    /// A server API call; a master that is exiting is not serving.
    pub async fn api<T>(&self, call: impl FnOnce(Reply<T>) -> Call) -> Result<T, NotServing> {
        self.ask(|reply| Request::Api(call(reply)))
            .await
            .unwrap_or(Err(NotServing))
    }

    /// A rolling restart, answered when it is over.
    pub async fn reload(&self) -> ReloadReport {
        self.ask(Request::Reload)
            .await
            .unwrap_or_else(|| ReloadReport {
                ok: false,
                error: Some("the master is exiting".into()),
                ..Default::default()
            })
    }

    /// A snapshot without asking the workers anything (`/health`, `/ready`).
    pub async fn view(&self) -> Option<FleetView> {
        self.ask(|reply| Request::View {
            answers: HashMap::new(),
            reply,
        })
        .await
    }

    /// Asks every worker for its counters (bounded wait), then takes a snapshot; the
    /// answers are returned too (a worker that did not answer has none).
    pub async fn view_with_counters(&self) -> Option<(FleetView, Answers)> {
        let waits = self.ask(Request::AskCounters).await?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut answers = HashMap::new();
        for (key, rx) in waits {
            if let Ok(Ok(c)) = tokio::time::timeout_at(deadline, rx).await {
                // The one place the IPC counters become the public type.
                answers.insert(key, Counters::from(c));
            }
        }
        let view = self
            .ask(|reply| Request::View {
                answers: answers.clone(),
                reply,
            })
            .await?;
        Some((view, answers))
    }
}
