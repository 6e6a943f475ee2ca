//! Requests the loop answers: counter requests to the workers, and the owned snapshot
//! (`FleetView`) that `wsfleet stats`, `/ready` and `/metrics` are built from.

use tokio::sync::oneshot;
use tokio::time::Instant;
use wsfleet_worker::ipc::ToWorker;

use super::Supervisor;
use crate::master::events::Request;
use crate::master::spawner::Spawner;
use crate::master::view::{Answers, FleetView, SlotView, WorkerView};

impl<S: Spawner> Supervisor<S> {
    pub(super) fn on_request(&mut self, req: Request, now: Instant) {
        match req {
            Request::AskCounters(reply) => {
                let mut waits = Vec::new();
                for (key, w) in self.state.workers.iter_mut().filter(|(_, w)| w.linked) {
                    self.next_request += 1;
                    let id = self.next_request;
                    let (tx, rx) = oneshot::channel();
                    w.pending.insert(id, tx);
                    w.tx.send(ToWorker::CountersRequest { id });
                    waits.push((*key, rx));
                }
                let _ = reply.send(waits);
            }
            Request::View { answers, reply } => {
                let _ = reply.send(self.view(answers, now));
            }
            Request::Reload(reply) => self.reload_begin(Some(reply), now),
            Request::Api(call) => self.on_api(call, now),
        }
    }

    /// Records the counters that arrived and takes a snapshot.
    fn view(&mut self, answers: Answers, now: Instant) -> FleetView {
        for (key, c) in answers {
            if let Some(w) = self.state.workers.get_mut(&key) {
                w.last_counters = Some(c);
            }
        }
        // A first sample of workers the once-a-second tick has not seen yet, so a fresh
        // worker does not show 0 bytes of RSS.
        for w in self
            .state
            .workers
            .values_mut()
            .filter(|w| w.cpu.at.is_none())
        {
            w.cpu.update(self.spawner.sample(w.pid), now);
        }
        let st = &self.state;
        let slots = st
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| SlotView {
                state: st.slot_state(i),
                pid: s.current.and_then(|k| st.workers.get(&k)).map(|w| w.pid),
                generation: s.generation,
                restarts: s.restarts,
                backoff_ms: s
                    .backoff_until
                    .filter(|_| s.current.is_none())
                    .map(|t| t.saturating_duration_since(now).as_millis() as u64),
                last_exit: s.last_exit.clone(),
                retired: s.retired.clone(),
                retired_cpu_s: s.retired_cpu_s,
            })
            .collect();
        let workers = st
            .workers
            .iter()
            .map(|(key, w)| WorkerView {
                key: *key,
                slot: w.slot,
                pid: w.pid,
                state: w.shown_state(),
                generation: w.generation,
                uptime_s: now.duration_since(w.started).as_secs_f64(),
                cpu: w.cpu,
                ipc_queue_depth: w.tx.depth(),
                ipc_queue_bytes: w.tx.bytes(),
                last_counters: w.last_counters.clone(),
            })
            .collect();
        FleetView {
            phase: self.phase(),
            listen: self.listen.to_string(),
            uptime_s: now.duration_since(self.started).as_secs_f64(),
            master_cpu: st.cpu,
            reloads: st.reloads,
            last_reload_ok: st.last_reload_ok,
            reloading: self.reload.is_some(),
            rooms: self.rooms.count(),
            history: self.rooms.recall().history_row(),
            redis: self.rooms.redis_row(),
            slots,
            workers,
        }
    }
}
