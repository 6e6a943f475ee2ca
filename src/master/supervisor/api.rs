//! The loop's side of the server API: publishes and broadcasts ordered at the same one
//! point as a client's (through [`Rooms`](crate::master::rooms::Rooms)), history pages,
//! and questions sent to the workers. Everything is answered at once; answers from the
//! workers arrive later on the receivers handed back.

use tokio::sync::oneshot;
use tokio::time::Instant;
use wsfleet_worker::ipc::ToWorker;

use super::{Supervisor, send};
use crate::master::api::calls::{Call, NotServing, Published};
use crate::master::rooms::Rooms;
use crate::master::spawner::Spawner;
use crate::master::state::{Phase, WorkerState};

impl<S: Spawner> Supervisor<S> {
    pub(super) fn on_api(&mut self, call: Call, now: Instant) {
        let serving = self.phase() == Phase::Running;
        match call {
            Call::Publish { items, reply } => {
                let answer = serving.then(|| {
                    items
                        .into_iter()
                        .map(|p| {
                            let key = p.key;
                            if let Some(done) =
                                key.as_deref().and_then(|k| self.idempotency.get(k, now))
                            {
                                return Published {
                                    duplicate: true,
                                    ..done
                                };
                            }
                            let workers = &self.state.workers;
                            let (seq, epoch) =
                                self.rooms
                                    .publish(&p.room, &p.data, now.into_std(), |to, m| {
                                        send(workers, to, m)
                                    });
                            let published = Published {
                                seq,
                                epoch,
                                duplicate: false,
                            };
                            if let Some(key) = key {
                                self.idempotency.insert(key, published.clone(), now);
                            }
                            published
                        })
                        .collect()
                });
                let _ = reply.send(answer.ok_or(NotServing));
            }
            Call::Broadcast { data, reply } => {
                if serving {
                    let workers = &self.state.workers;
                    Rooms::broadcast(&data, |to, m| send(workers, to, m));
                }
                let _ = reply.send(if serving { Ok(()) } else { Err(NotServing) });
            }
            Call::History {
                room,
                limit,
                since,
                reverse,
                reply,
            } => {
                if serving {
                    let since = since.as_ref();
                    let now = now.into_std();
                    self.rooms
                        .api_history(room, limit, since, reverse, reply, now);
                } else {
                    let _ = reply.send(Err(NotServing));
                }
            }
            Call::Ask { query, reply } => {
                if !serving {
                    let _ = reply.send(Err(NotServing));
                    return;
                }
                let mut waits = Vec::new();
                for w in self
                    .state
                    .workers
                    .values_mut()
                    .filter(|w| w.linked && w.state != WorkerState::Starting)
                {
                    self.next_request += 1;
                    let id = self.next_request;
                    let (tx, rx) = oneshot::channel();
                    w.asked.insert(id, tx);
                    w.tx.send(ToWorker::Query {
                        id,
                        query: query.clone(),
                    });
                    waits.push((w.slot, rx));
                }
                let _ = reply.send(Ok(waits));
            }
        }
    }
}
