//! The supervisor driven without processes: a fake spawner records what it was asked to
//! do, events are fed by hand with a clock the test moves, and every test asserts the
//! sequence of phases and slot states it went through.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use tokio::time::Instant;
use wsfleet_worker::ipc::{Level, ToMaster, ToWorker, Weighed, WorkerSettings};

use super::Supervisor;
use crate::cli::LogFormat;
use crate::config::Settings;
use crate::control_api::ReloadReport;
use crate::master::events::{Event, MasterCmd, Request};
use crate::master::presence::Pacing;
use crate::master::relay::WorkerKey;
use crate::master::spawner::{SpawnedWorker, Spawner};
use crate::master::state::{Phase, WorkerTx};

/// What the fake spawner was asked to do.
#[derive(Default)]
struct Log {
    /// `(key, slot, generation, pid)` of every spawn, in order.
    spawned: Vec<(WorkerKey, u32, u64, u32)>,
    /// Pids killed, in order.
    killed: Vec<u32>,
    /// Each worker's queue, as the worker would read it.
    inbox: HashMap<WorkerKey, mpsc::UnboundedReceiver<ToWorker>>,
    /// Each queue's level, lowered as the test reads the inbox (as the link task would).
    levels: HashMap<WorkerKey, Rc<Level>>,
    /// Spawns that fail before one succeeds again.
    fail_next: u32,
}

/// A spawner that starts nothing and logs what it was asked.
struct Fake(
    /// Shared with the test.
    Rc<RefCell<Log>>,
);

impl Spawner for Fake {
    fn spawn(
        &mut self,
        key: WorkerKey,
        _slot: u32,
        generation: u64,
        _settings: &Settings,
    ) -> Result<SpawnedWorker, String> {
        let mut log = self.0.borrow_mut();
        if log.fail_next > 0 {
            log.fail_next -= 1;
            return Err("cannot start /fake: No such file or directory".into());
        }
        let pid = 1000 + key as u32;
        log.spawned.push((key, _slot, generation, pid));
        let (tx, rx, level) = WorkerTx::channel();
        // Nothing reads the queue but the test: as if the worker's socket were full.
        level.set_blocked(true);
        log.inbox.insert(key, rx);
        log.levels.insert(key, level);
        Ok(SpawnedWorker { pid, tx })
    }

    fn kill(&mut self, pid: u32) {
        self.0.borrow_mut().killed.push(pid);
    }

    fn sample(&mut self, _pid: u32) -> Option<crate::sys::procfs::ProcSample> {
        None
    }
}

fn settings(workers: usize) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers,
        run_dir: "/nonexistent".into(),
        control: "/nonexistent/control.sock".into(),
        config: None,
        drain_timeout: Duration::from_secs(1),
        ready_timeout: Duration::from_secs(2),
        backlog: 16,
        ipc_queue_limit: 100,
        ipc_queue_limit_bytes: 1 << 30,
        // Tests about the heartbeat set their own; the others never answer it.
        worker_timeout: Duration::from_secs(3600),
        log_level: "info".into(),
        log_format: LogFormat::Text,
        admin: None,
        api: None,
        worker: WorkerSettings::default(),
        history: crate::config::HistorySettings {
            namespaces: crate::namespaces::Namespaces::new(crate::namespaces::RoomOptions {
                history: crate::namespaces::HistoryOptions {
                    size: 0,
                    ttl: Duration::from_secs(60),
                },
                presence: Default::default(),
            }),
            budget_bytes: 1 << 20,
            recovery_max: 300,
        },
        presence_pacing: Pacing {
            interval: Duration::from_secs(1),
            count_rate: 2_000,
        },
        redis: Vec::new(),
    }
}

/// A supervisor, its fake's log, the test's clock and the phases seen so far.
struct Harness {
    /// The supervisor under test.
    sup: Supervisor<Fake>,
    /// What its spawner was asked to do.
    log: Rc<RefCell<Log>>,
    /// The test's clock: every event happens at this time.
    now: Instant,
    /// The published phase, as a waiter reads it.
    phase: watch::Receiver<Phase>,
    /// Every distinct phase seen, in order.
    phases: Vec<Phase>,
}

impl Harness {
    fn new(settings: Settings) -> Self {
        let log = Rc::new(RefCell::new(Log::default()));
        let now = Instant::now();
        let fresh = settings.clone();
        let resolve = Box::new(move || Ok(fresh.clone()));
        let listen = settings.listen;
        let mut sup = Supervisor::new(Fake(log.clone()), settings, resolve, listen, now);
        let phase = sup.subscribe();
        sup.start(now);
        let mut h = Self {
            sup,
            log,
            now,
            phase,
            phases: Vec::new(),
        };
        h.record();
        h
    }

    /// A fleet of `workers` slots, every worker linked and ready.
    fn running(settings: Settings) -> Self {
        let mut h = Self::new(settings);
        for key in h.keys() {
            h.ready(key);
        }
        assert_eq!(h.sup.phase(), Phase::Running);
        h
    }

    fn record(&mut self) {
        let phase = *self.phase.borrow_and_update();
        if self.phases.last() != Some(&phase) {
            self.phases.push(phase);
        }
    }

    fn send(&mut self, event: Event) {
        self.sup.handle(event, self.now);
        self.record();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.send(Event::Tick);
    }

    fn ready(&mut self, key: WorkerKey) {
        self.send(Event::Hello(key));
        self.send(Event::Message(key, ToMaster::Ready));
    }

    fn exit(&mut self, key: WorkerKey) {
        self.send(Event::Exited(key, "signal 9 (SIGKILL)".into()));
    }

    fn keys(&self) -> Vec<WorkerKey> {
        self.log.borrow().spawned.iter().map(|s| s.0).collect()
    }

    fn last_key(&self) -> WorkerKey {
        *self.keys().last().unwrap()
    }

    fn pid(&self, key: WorkerKey) -> u32 {
        let log = self.log.borrow();
        log.spawned.iter().find(|s| s.0 == key).unwrap().3
    }

    /// The names of every slot's state.
    fn slots(&self) -> Vec<&'static str> {
        let st = &self.sup.state;
        (0..st.slots.len())
            .map(|i| st.slot_state(i).name())
            .collect()
    }

    /// Messages queued to worker `key` so far (read and written, as its link task would).
    fn received(&self, key: WorkerKey) -> Vec<ToWorker> {
        let mut log = self.log.borrow_mut();
        let rx = log.inbox.get_mut(&key).unwrap();
        let msgs: Vec<ToWorker> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let bytes = msgs.iter().map(|m| m.weight() as u64).sum();
        log.levels[&key].written(msgs.len() as u64, bytes);
        msgs
    }

    /// A connection on worker `key` joins room `room` (the worker then gets its messages).
    fn join(&mut self, key: WorkerKey, room: &str) {
        self.send(Event::Message(
            key,
            ToMaster::Join {
                room: room.into(),
                conn: 1,
                token: 1,
                since: None,
                user: None,
                info: None,
            },
        ));
    }

    /// Worker `key` answers every heartbeat it was sent.
    fn answer_pings(&mut self, key: WorkerKey) {
        for msg in self.received(key) {
            if let ToWorker::Ping { id } = msg {
                self.send(Event::Message(key, ToMaster::Pong { id }));
            }
        }
    }

    fn reload(&mut self) -> oneshot::Receiver<ReloadReport> {
        let (tx, rx) = oneshot::channel();
        self.send(Event::Request(Request::Reload(tx)));
        rx
    }
}

#[test]
fn startup_reaches_running_when_every_slot_is_ready() {
    let mut h = Harness::new(settings(2));
    assert_eq!(h.keys(), [1, 2]);
    let mut seen = vec![h.slots()];
    h.send(Event::Hello(1));
    assert!(matches!(h.received(1).as_slice(), [ToWorker::Start(_)]));
    h.send(Event::Message(1, ToMaster::Ready));
    seen.push(h.slots());
    assert_eq!(h.sup.phase(), Phase::Starting);
    h.ready(2);
    seen.push(h.slots());
    assert_eq!(
        seen,
        [
            ["starting", "starting"],
            ["ready", "starting"],
            ["ready", "ready"]
        ]
    );
    assert_eq!(h.phases, [Phase::Starting, Phase::Running]);
}

#[test]
fn a_crash_loop_backs_off_and_a_stable_worker_resets_it() {
    let mut h = Harness::running(settings(1));
    let mut delays = Vec::new();
    let mut states = Vec::new();
    // Crash: the first replacement is immediate, each further one waits twice as long.
    for _ in 0..4 {
        let before = h.keys().len();
        let t0 = h.now;
        h.exit(h.last_key());
        states.push(h.slots()[0]);
        while h.keys().len() == before {
            let due = h.sup.next_deadline().expect("a restart is scheduled");
            h.now = due;
            h.send(Event::Tick);
        }
        delays.push((h.now - t0).as_millis() as u64);
        states.push(h.slots()[0]);
    }
    assert_eq!(delays, [0, 100, 200, 400]);
    assert_eq!(
        states,
        [
            "starting", "starting", "backoff", "starting", "backoff", "starting", "backoff",
            "starting"
        ]
    );
    // Stable for the stable period: the next crash is replaced at once again.
    h.ready(h.last_key());
    h.advance(Duration::from_secs(11));
    h.exit(h.last_key());
    assert_eq!(
        h.slots(),
        ["starting"],
        "replaced at once after a stable run"
    );
    assert_eq!(h.sup.state.slots[0].restarts, 5);
    assert_eq!(h.phases, [Phase::Starting, Phase::Running]);
}

#[test]
fn a_rolling_reload_replaces_each_slot_after_its_candidate_is_ready() {
    let mut h = Harness::running(settings(2));
    let mut report = h.reload();
    let mut seen = vec![h.slots()];
    assert_eq!(h.keys(), [1, 2, 3], "a candidate for slot 0");
    h.received(1);
    h.ready(3);
    assert!(matches!(
        h.received(1).as_slice(),
        [ToWorker::Drain {
            stop_accepting: true,
            ..
        }]
    ));
    seen.push(h.slots());
    assert_eq!(h.keys(), [1, 2, 3, 4], "then one for slot 1");
    assert!(report.try_recv().is_err(), "answered only when done");
    h.ready(4);
    seen.push(h.slots());
    h.exit(1);
    h.exit(2);
    seen.push(h.slots());
    assert_eq!(
        seen,
        [
            ["ready", "ready"],
            ["ready", "ready"],
            ["ready", "ready"],
            ["ready", "ready"]
        ]
    );
    let report = report.try_recv().unwrap();
    assert!(report.ok, "{report:?}");
    let pids: Vec<_> = report
        .slots
        .iter()
        .map(|s| (s.old_pid, s.new_pid))
        .collect();
    assert_eq!(
        pids,
        [
            (Some(h.pid(1)), Some(h.pid(3))),
            (Some(h.pid(2)), Some(h.pid(4)))
        ]
    );
    assert_eq!(h.sup.state.slots[0].generation, 2);
    assert_eq!(
        h.sup.state.slots[0].restarts, 0,
        "drained workers are not restarts"
    );
    assert_eq!(h.sup.state.last_reload_ok, Some(true));
    assert_eq!(h.phases, [Phase::Starting, Phase::Running]);
}

#[test]
fn a_reload_stops_when_its_candidate_dies_and_old_workers_keep_serving() {
    let mut h = Harness::running(settings(2));
    let mut report = h.reload();
    h.send(Event::Hello(3));
    h.exit(3);
    let report = report.try_recv().unwrap();
    assert!(!report.ok);
    let error = report.error.unwrap();
    assert!(
        error.starts_with("slot 0: worker pid 1003 exited"),
        "{error}"
    );
    assert_eq!(report.slots.len(), 1);
    assert_eq!(h.keys(), [1, 2, 3], "no candidate for slot 1");
    assert_eq!(h.slots(), ["ready", "ready"]);
    assert_eq!(h.sup.state.slots[0].current, Some(1));
    assert_eq!(h.sup.state.last_reload_ok, Some(false));
    // The fleet can be reloaded again.
    let mut again = h.reload();
    h.ready(4);
    h.ready(5);
    assert!(again.try_recv().unwrap().ok);
}

#[test]
fn a_reload_stops_when_its_candidate_is_not_ready_in_time() {
    let mut h = Harness::running(settings(1));
    let mut report = h.reload();
    let deadline = h.sup.next_deadline().unwrap();
    assert_eq!(deadline - h.now, Duration::from_secs(2));
    h.advance(Duration::from_millis(1999));
    assert!(report.try_recv().is_err(), "still waiting");
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.log.borrow().killed,
        [h.pid(2)],
        "the late candidate is killed"
    );
    let report = report.try_recv().unwrap();
    assert!(report.error.unwrap().contains("not ready within 2s"));
    h.exit(2);
    assert_eq!(h.slots(), ["ready"]);
    assert_eq!(h.sup.state.slots[0].restarts, 0);
}

#[test]
fn a_second_reload_while_one_runs_is_refused() {
    let mut h = Harness::running(settings(1));
    let _first = h.reload();
    let mut second = h.reload();
    let refused = second.try_recv().unwrap();
    assert!(refused.error.unwrap().contains("already in progress"));
    assert_eq!(h.sup.state.reloads, 1);
}

#[test]
fn a_stalled_worker_is_killed_and_replaced() {
    let mut s = settings(2);
    s.ipc_queue_limit = 5;
    let mut h = Harness::running(s);
    h.join(1, "a");
    for _ in 0..5 {
        h.send(Event::Message(
            2,
            ToMaster::Publish {
                room: "a".into(),
                data: "1".into(),
                conn: 1,
                ack: None,
            },
        ));
    }
    // Worker 1 read nothing: Start, InterestAck and 5 room messages are queued.
    h.advance(Duration::from_secs(1));
    assert_eq!(h.log.borrow().killed, [h.pid(1)]);
    h.exit(1);
    assert_eq!(h.slots(), ["starting", "ready"]);
    assert_eq!(h.keys(), [1, 2, 3]);
    assert_eq!(h.sup.state.slots[0].restarts, 1);
    assert_eq!(h.sup.rooms.count(), 0, "its rooms are forgotten");
}

#[test]
fn a_graceful_stop_drains_and_ends_when_every_worker_is_gone() {
    let mut h = Harness::running(settings(2));
    h.received(1);
    h.send(Event::Command(MasterCmd::Stop { now: false }));
    assert!(matches!(
        h.received(1).as_slice(),
        [ToWorker::Drain {
            stop_accepting: false,
            ..
        }]
    ));
    let mut seen = vec![h.slots()];
    h.exit(1);
    seen.push(h.slots());
    assert_eq!(h.sup.phase(), Phase::Stopping);
    h.exit(2);
    seen.push(h.slots());
    assert_eq!(
        seen,
        [
            ["draining", "draining"],
            ["down", "draining"],
            ["down", "down"]
        ]
    );
    assert_eq!(h.keys(), [1, 2], "nothing restarted while stopping");
    assert!(h.log.borrow().killed.is_empty());
    assert_eq!(
        h.phases,
        [
            Phase::Starting,
            Phase::Running,
            Phase::Stopping,
            Phase::Stopped
        ]
    );
    assert_eq!(h.sup.failure(), None);
}

#[test]
fn a_graceful_stop_kills_workers_still_alive_after_the_drain_period() {
    let mut h = Harness::running(settings(1));
    h.send(Event::Command(MasterCmd::Stop { now: false }));
    h.advance(Duration::from_secs(10));
    assert!(
        h.log.borrow().killed.is_empty(),
        "drain 1 s + 10 s not over"
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(h.log.borrow().killed, [h.pid(1)]);
    h.advance(Duration::from_secs(3));
    assert_eq!(
        h.phases,
        [
            Phase::Starting,
            Phase::Running,
            Phase::Stopping,
            Phase::Stopped
        ],
        "an unreaped worker does not keep the master alive"
    );
}

#[test]
fn stop_now_and_a_second_interrupt_kill_every_worker() {
    let mut h = Harness::running(settings(2));
    h.send(Event::Command(MasterCmd::Stop { now: true }));
    assert_eq!(h.log.borrow().killed, [h.pid(1), h.pid(2)]);
    h.exit(1);
    h.exit(2);
    assert_eq!(
        h.phases,
        [
            Phase::Starting,
            Phase::Running,
            Phase::Stopping,
            Phase::Stopped
        ]
    );

    let mut h = Harness::running(settings(1));
    h.send(Event::Command(MasterCmd::Interrupt));
    assert!(h.log.borrow().killed.is_empty(), "the first one drains");
    assert_eq!(h.slots(), ["draining"]);
    h.send(Event::Command(MasterCmd::Interrupt));
    assert_eq!(h.log.borrow().killed, [h.pid(1)], "the second one kills");
    h.exit(1);
    assert_eq!(h.sup.phase(), Phase::Stopped);
}

#[test]
fn startup_fails_when_one_slot_fails_three_times() {
    let mut h = Harness::new(settings(2));
    h.ready(2);
    let mut states = vec![h.slots()[0]];
    for _ in 0..3 {
        let key = h.sup.state.slots[0].current.expect("slot 0 has a worker");
        h.exit(key);
        states.push(h.slots()[0]);
        if let Some(due) = h.sup.state.slots[0].backoff_until {
            h.now = due;
            h.send(Event::Tick);
        }
    }
    assert_eq!(states, ["starting", "starting", "backoff", "down"]);
    let failure = h.sup.failure().unwrap();
    assert!(
        failure.contains("slot 0 failed to start 3 times"),
        "{failure}"
    );
    assert_eq!(
        h.log.borrow().killed,
        [h.pid(2)],
        "the ready slot is killed too"
    );
    h.exit(2);
    assert_eq!(h.phases, [Phase::Starting, Phase::Stopping, Phase::Stopped]);
}

#[test]
fn startup_fails_when_a_worker_cannot_be_spawned() {
    let s = settings(1);
    let log = Rc::new(RefCell::new(Log {
        fail_next: 1,
        ..Default::default()
    }));
    let (listen, now, fresh) = (s.listen, Instant::now(), s.clone());
    let resolve = Box::new(move || Ok(fresh.clone()));
    let mut sup = Supervisor::new(Fake(log), s, resolve, listen, now);
    let mut phase = sup.subscribe();
    sup.start(now);
    assert_eq!(
        *phase.borrow_and_update(),
        Phase::Stopped,
        "nothing to wait for"
    );
    assert!(sup.failure().unwrap().contains("No such file"));
}

#[test]
fn a_spawn_failure_while_running_backs_off_like_a_crash() {
    let mut h = Harness::running(settings(1));
    h.log.borrow_mut().fail_next = 1;
    h.exit(1);
    assert_eq!(h.slots(), ["backoff"]);
    let last = h.sup.state.slots[0].last_exit.clone().unwrap();
    assert!(last.contains("No such file"), "{last}");
    h.advance(Duration::from_millis(100));
    assert_eq!(h.slots(), ["starting"]);
    assert_eq!(h.phases, [Phase::Starting, Phase::Running]);
}

#[test]
fn a_silent_worker_is_shown_unresponsive_then_killed_and_replaced() {
    let mut s = settings(2);
    s.worker_timeout = Duration::from_secs(4);
    let mut h = Harness::running(s);
    let mut seen = Vec::new();
    // Worker 2 answers every heartbeat; worker 1 (SIGSTOPped, say) answers none.
    for _ in 0..4 {
        h.advance(Duration::from_secs(1));
        h.answer_pings(2);
        seen.push(h.slots());
    }
    assert_eq!(
        seen,
        [
            ["ready", "ready"],
            ["unresponsive", "ready"],
            ["unresponsive", "ready"],
            ["unresponsive", "ready"]
        ],
        "unresponsive from half the timeout"
    );
    assert_eq!(h.log.borrow().killed, [h.pid(1)], "killed at the timeout");
    assert!(
        h.received(1)
            .iter()
            .any(|m| matches!(m, ToWorker::Ping { .. }))
    );
    h.advance(Duration::from_secs(1));
    assert!(
        h.received(1).is_empty(),
        "no heartbeat to a worker being killed"
    );
    assert_eq!(h.log.borrow().killed, [h.pid(1)], "killed once");
    h.exit(1);
    assert_eq!(h.slots(), ["starting", "ready"], "replaced");
    assert_eq!(h.sup.state.slots[0].restarts, 1);
}

#[test]
fn a_worker_that_answers_again_is_ready_again() {
    let mut s = settings(1);
    s.worker_timeout = Duration::from_secs(4);
    let mut h = Harness::running(s);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.slots(), ["unresponsive"]);
    h.answer_pings(1);
    assert_eq!(h.slots(), ["ready"]);
    h.advance(Duration::from_secs(3));
    assert!(h.log.borrow().killed.is_empty(), "its silence restarted");
}

#[test]
fn a_worker_too_many_bytes_behind_is_killed_when_its_queue_overflows() {
    let mut s = settings(2);
    s.ipc_queue_limit_bytes = 10_000;
    let mut h = Harness::running(s);
    h.join(1, "a");
    h.received(1);
    let publish = |n: usize| {
        Event::Message(
            2,
            ToMaster::Publish {
                room: "a".into(),
                data: format!("\"{}\"", "x".repeat(n)),
                conn: 1,
                ack: None,
            },
        )
    };
    // One message larger than the bound always fits.
    h.send(publish(20_000));
    assert!(h.log.borrow().killed.is_empty());
    h.received(1);
    // Worker 1 stops reading: the bytes bound is crossed on the event that queues past it.
    for _ in 0..3 {
        h.send(publish(3_000));
    }
    assert!(h.log.borrow().killed.is_empty(), "3 × 3 KB fit in 10 KB");
    // Over the bound while its writer merely has not run yet: not the worker's fault.
    h.log.borrow().levels[&1].set_blocked(false);
    h.send(publish(3_000));
    assert!(
        h.log.borrow().killed.is_empty(),
        "the writer was not blocked"
    );
    h.log.borrow().levels[&1].set_blocked(true);
    h.send(publish(3_000));
    assert_eq!(h.log.borrow().killed, [h.pid(1)]);
    let depth = h.sup.state.workers[&1].tx.depth();
    h.send(publish(3_000));
    assert_eq!(
        h.sup.state.workers[&1].tx.depth(),
        depth,
        "a killed worker's queue takes nothing more"
    );
    assert_eq!(h.log.borrow().killed, [h.pid(1)], "killed once");
}

/// A server API call, answered at once by the loop.
fn api<T>(
    h: &mut Harness,
    call: impl FnOnce(crate::master::api::calls::Reply<T>) -> crate::master::api::calls::Call,
) -> Result<T, crate::master::api::calls::NotServing> {
    let (tx, mut rx) = oneshot::channel();
    h.send(Event::Request(Request::Api(call(tx))));
    rx.try_recv().expect("the loop answers API calls at once")
}

#[test]
fn api_publishes_are_ordered_like_a_clients_once_per_key_and_only_while_serving() {
    use crate::master::api::calls::{Call, NotServing, Publish};
    let publish = |key: Option<&str>| {
        let items = vec![Publish {
            room: "r".into(),
            data: "1".into(),
            key: key.map(str::to_owned),
        }];
        move |reply| Call::Publish { items, reply }
    };
    let mut h = Harness::new(settings(1));
    assert_eq!(
        api(&mut h, publish(None)),
        Err(NotServing),
        "still starting"
    );
    let key = h.last_key();
    h.ready(key);
    h.join(key, "r");
    h.received(key);
    let first = api(&mut h, publish(Some("k"))).unwrap();
    assert_eq!((first[0].seq, first[0].duplicate), (Some(1), false));
    let client = ToMaster::Publish {
        room: "r".into(),
        data: "2".into(),
        conn: 1,
        ack: None,
    };
    h.send(Event::Message(key, client));
    let retry = api(&mut h, publish(Some("k"))).unwrap();
    assert_eq!((retry[0].seq, retry[0].duplicate), (Some(1), true));
    let seqs: Vec<String> = h
        .received(key)
        .into_iter()
        .filter_map(|m| match m {
            ToWorker::Room { frame, .. } => Some(frame),
            _ => None,
        })
        .collect();
    assert_eq!(seqs.len(), 2, "the retry was not delivered again: {seqs:?}");
    assert!(seqs[0].contains(r#""seq":1"#) && seqs[1].contains(r#""seq":2"#));
}

#[test]
fn api_questions_reach_every_serving_worker_and_their_answers_come_back() {
    use crate::master::api::calls::Call;
    use wsfleet_worker::ipc::{QueryAnswer, WorkerQuery};
    let mut h = Harness::running(settings(2));
    let query = WorkerQuery::Rooms { pattern: None };
    let waits = api(&mut h, |reply| Call::Ask { query, reply }).unwrap();
    assert_eq!(waits.len(), 2);
    for key in h.keys() {
        let id = h
            .received(key)
            .into_iter()
            .find_map(|m| match m {
                ToWorker::Query { id, .. } => Some(id),
                _ => None,
            })
            .expect("the worker was asked");
        let answer = QueryAnswer::Rooms(vec![("r".into(), key)]);
        h.send(Event::Message(key, ToMaster::Answer { id, answer }));
    }
    let mut got: Vec<QueryAnswer> = waits
        .into_iter()
        .map(|(_, mut rx)| rx.try_recv().unwrap())
        .collect();
    got.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(
        got,
        h.keys()
            .into_iter()
            .map(|k| QueryAnswer::Rooms(vec![("r".into(), k)]))
            .collect::<Vec<_>>()
    );
}
