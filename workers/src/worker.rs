//! The state one worker process shares between its tasks: settings, counters, every open
//! WebSocket (and the fan-out's end-of-batch flush), the link to the master, and the drain
//! switch. Rooms are `pubsub`'s; this module does not know them.
//!
//! The worker runs on one thread, so everything here is `Rc`/`Cell`/`RefCell`; no borrow
//! is ever held across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::admission::Admission;
use crate::auth::expiry::{self, Action, Clocks};
use crate::auth::source::Auth;
use crate::conn::{self, CloseCause, Conn, Outgoing, Pushed, frame};
use crate::counters::{self, Counters};
use crate::ipc::{LinkTx, Target, ToMaster, WorkerSettings};

/// Why a worker is draining; it decides what happens to new upgrades meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainMode {
    /// A rolling restart: a new worker accepts on this slot; handshakes already accepted
    /// here still complete (their clients get 1012 with everyone else).
    Reload,
    /// The fleet is stopping: new upgrades get 503 so load balancers move on.
    Stop,
}

/// One worker process's shared state.
pub struct Worker {
    /// The slot this worker serves.
    pub slot: u32,
    /// This incarnation of the slot.
    pub generation: u64,
    /// Our pid, reported on `/health`.
    pub pid: u32,
    /// Limits and timeouts from the master.
    pub settings: WorkerSettings,
    /// Live figures for `wsfleet stats`.
    pub counters: Counters,
    /// The WebSocket layer's configuration, chosen for many small connections.
    pub ws_config: Rc<WebSocketConfig>,
    /// How upgrades are authenticated (built from `settings.auth` at start).
    pub auth: Auth,
    /// Connect rates per IP and the upgrades waiting for the master's fleet-wide count
    /// (429 past the limits).
    pub admission: Rc<Admission>,
    /// The token expiry of every authenticated connection, checked by the heartbeat.
    pub token_clocks: RefCell<Clocks>,
    /// Messages to the master (written in batches by the link task), measured: past its
    /// hold mark, connections stop reading their clients until it drains.
    link: LinkTx<ToMaster>,
    /// Every open WebSocket by connection number (drain closes them; broadcasts reach the
    /// `/ws` ones).
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    /// Connections that got frames during the current batch of master messages; flushed
    /// together at the end of the batch ([`flush_dirty`](Self::flush_dirty)).
    dirty: RefCell<Vec<Rc<Conn>>>,
    /// Source of connection numbers.
    next_conn: Cell<u64>,
    /// Set once the master asked us to drain.
    drain: Cell<Option<DrainMode>>,
    /// Set when the drain period is over and every client is being closed.
    closing_all: Cell<bool>,
    /// Wakes the accept loop so it stops accepting.
    pub stop_accepting: Notify,
    /// Signalled when the last WebSocket or HTTP connection goes away.
    all_closed: Notify,
    /// Accepted connections still speaking HTTP (not yet upgraded): a draining worker
    /// waits for them too, so a handshake it accepted is never cut off by its exit.
    http_open: Cell<u64>,
}

/// Counts one accepted HTTP connection for as long as it lives.
pub struct HttpGuard(Rc<Worker>);

impl Drop for HttpGuard {
    fn drop(&mut self) {
        counters::sub(&self.0.http_open, 1);
        self.0.notify_if_idle();
    }
}

impl Worker {
    /// A worker with no connections yet.
    pub fn new(
        slot: u32,
        generation: u64,
        settings: WorkerSettings,
        link: LinkTx<ToMaster>,
    ) -> Self {
        let ws_config = WebSocketConfig::default()
            // tungstenite allocates the read buffer whenever a connection's state is made
            // (at each message after a rest, see `conn::driver`): keep it small; large
            // messages grow it on demand.
            .read_buffer_size(512)
            // tungstenite only writes its own pongs and close frames, into the
            // connection's queue (a memory write): hand them over at once.
            .write_buffer_size(0)
            .max_message_size(Some(settings.max_message_bytes))
            .max_frame_size(Some(settings.max_message_bytes));
        Self {
            slot,
            generation,
            pid: std::process::id(),
            settings,
            counters: Counters::default(),
            ws_config: Rc::new(ws_config),
            auth: Auth::Off,
            admission: Rc::default(),
            token_clocks: RefCell::default(),
            link,
            conns: RefCell::new(HashMap::new()),
            dirty: RefCell::new(Vec::new()),
            next_conn: Cell::new(0),
            drain: Cell::new(None),
            closing_all: Cell::new(false),
            stop_accepting: Notify::new(),
            all_closed: Notify::new(),
            http_open: Cell::new(0),
        }
    }

    /// The worker with its token policy (built by the caller from `settings.auth`).
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// The connection id clients see: unique across the fleet and its restarts.
    pub fn fleet_id(&self, conn: u64) -> String {
        crate::protocol::fleet_id(self.slot, self.generation, conn)
    }

    /// Queues a message for the master.
    pub fn send(&self, msg: ToMaster) {
        // A closed link means the master is gone; the link reader exits the process.
        self.link.send(msg);
    }

    /// Whether the queue to the master is over its hold mark (the master is behind); if
    /// so `cx`'s task is woken once it drains. `/ws` connections stop reading meanwhile.
    pub fn link_held(&self, cx: &mut std::task::Context<'_>) -> bool {
        self.link.level().hold(cx)
    }

    /// The drain state.
    pub fn draining(&self) -> Option<DrainMode> {
        self.drain.get()
    }

    /// Takes a connection slot if the worker may accept another WebSocket.
    pub fn reserve_connection(&self) -> Result<(), Refused> {
        if self.drain.get() == Some(DrainMode::Stop) || self.closing_all.get() {
            counters::add(&self.counters.rejected_draining, 1);
            return Err(Refused::Draining);
        }
        let current = self.counters.connections_current.get();
        if current >= self.settings.max_connections as u64 {
            counters::add(&self.counters.rejected_full, 1);
            return Err(Refused::Full);
        }
        self.counters.connections_current.set(current + 1);
        counters::add(&self.counters.connections_total, 1);
        Ok(())
    }

    /// Gives back a slot taken by [`reserve_connection`](Self::reserve_connection).
    pub fn release_connection(&self) {
        counters::sub(&self.counters.connections_current, 1);
        self.notify_if_idle();
    }

    /// Counts an accepted connection until the guard drops.
    pub fn http_guard(self: &Rc<Self>) -> HttpGuard {
        counters::add(&self.http_open, 1);
        HttpGuard(self.clone())
    }

    fn idle(&self) -> bool {
        self.counters.connections_current.get() == 0 && self.http_open.get() == 0
    }

    fn notify_if_idle(&self) {
        if self.idle() {
            self.all_closed.notify_waiters();
        }
    }

    /// Registers a newly upgraded connection; `deflate`: the window (bits) its compressed
    /// frames use, 0 for none; `answer`: the HTTP answer not yet written (the 101), which
    /// goes out ahead of every frame.
    pub fn open(
        &self,
        stream: tokio::net::TcpStream,
        pubsub: bool,
        deflate: u8,
        answer: Vec<u8>,
    ) -> Rc<Conn> {
        let id = self.next_conn.get() + 1;
        self.next_conn.set(id);
        let conn = Rc::new(Conn::new(id, pubsub, stream).with_deflate(deflate));
        conn.push_answer(answer.into());
        if self.closing_all.get() {
            conn.close_with(CloseCause::RESTART);
        }
        self.conns.borrow_mut().insert(id, conn.clone());
        conn
    }

    /// Forgets a closed connection.
    pub fn close(&self, id: u64) {
        self.conns.borrow_mut().remove(&id);
    }

    /// Queues a message for one client (the variant it reads), counting it, and schedules
    /// the client for the end-of-batch flush. An overflow closes the client with 1013.
    pub fn deliver(&self, to: &Rc<Conn>, msg: &Outgoing) {
        if self.queue(to, msg) && !to.scheduled.replace(true) {
            self.dirty.borrow_mut().push(to.clone());
        }
    }

    /// Queues a text message for a client from its own task (which flushes it itself).
    pub fn reply_text(&self, to: &Conn, text: &str) {
        self.queue(to, &Outgoing::text(text));
    }

    /// Queues a message for a client from its own task.
    pub fn reply(&self, to: &Conn, msg: &Outgoing) {
        self.queue(to, msg);
    }

    /// Queues the variant of `msg` that `to` reads (compressed when it negotiated
    /// permessage-deflate and the message shrinks), counting it; false if not queued.
    fn queue(&self, to: &Conn, msg: &Outgoing) -> bool {
        let deflated = match to.deflate {
            0 => None,
            bits => msg.deflated(self.settings.compression_threshold, bits),
        };
        let compressed = deflated.is_some();
        let frame = deflated.unwrap_or_else(|| msg.plain().clone());
        let len = frame.len() as u64;
        match to.push(frame, self.settings.outbox_limit_bytes) {
            Pushed::Queued => {
                counters::add(&self.counters.messages_out, 1);
                counters::add(&self.counters.bytes_out, len);
                if compressed {
                    counters::add(&self.counters.bytes_out_compressed, len);
                    let from = msg.plain().len() as u64;
                    counters::add(&self.counters.bytes_out_compressed_from, from);
                }
                true
            }
            Pushed::Overflow => {
                counters::add(&self.counters.slow_consumer_closes, 1);
                false
            }
            Pushed::Closed => false,
        }
    }

    /// Writes everything queued by the fan-out since the last call, one vectored write per
    /// connection; a connection whose socket is full (or broken) is handed to its task.
    pub fn flush_dirty(&self) {
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        for conn in &dirty {
            conn.scheduled.set(false);
            if !matches!(conn.flush_now(), Ok(true)) {
                conn.wake();
            }
        }
        let mut slot = self.dirty.borrow_mut();
        if slot.is_empty() && slot.capacity() < dirty.capacity() {
            // Keep the bigger allocation for the next batch.
            let mut reuse = dirty;
            reuse.clear();
            *slot = reuse;
        }
    }

    /// A broadcast from the master: encoded once, shared by every local `/ws` client.
    pub fn on_broadcast(&self, text: String) {
        let frame = Outgoing::text(&text);
        let conns: Vec<Rc<Conn>> = self
            .conns
            .borrow()
            .values()
            .filter(|c| c.pubsub)
            .cloned()
            .collect();
        for conn in &conns {
            self.deliver(conn, &frame);
        }
    }

    /// A frame the master answered one connection with (a publish's or broadcast's
    /// `ack`, a `history` page); dropped if the connection is gone.
    pub fn reply_to(&self, conn: u64, text: &str) {
        let target = self.conns.borrow().get(&conn).cloned();
        if let Some(target) = target {
            self.deliver(&target, &Outgoing::text(text));
        }
    }

    /// Closes the local connections `target` names with `code` (the server API's
    /// disconnect); returns how many.
    pub fn disconnect(&self, target: &Target, code: u16) -> u64 {
        let cause = CloseCause {
            code,
            reason: CloseCause::DISCONNECTED.reason,
        };
        let matching: Vec<Rc<Conn>> = match target {
            Target::Conn(id) => self.local_conn(id).into_iter().collect(),
            Target::User(user) => self
                .conns
                .borrow()
                .values()
                .filter(|c| c.user() == Some(user.as_str()))
                .cloned()
                .collect(),
        };
        let mut closed = 0;
        for conn in matching.iter().filter(|c| c.closing().is_none()) {
            conn.close_with(cause);
            closed += 1;
        }
        closed
    }

    /// The connection with fleet-wide id `id` (see [`fleet_id`](Self::fleet_id)), if it
    /// is one of this worker's.
    fn local_conn(&self, id: &str) -> Option<Rc<Conn>> {
        let mut parts = id.split('.');
        let (slot, generation, conn) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || slot.parse::<u32>().ok()? != self.slot
            || generation.parse::<u64>().ok()? != self.generation
        {
            return None;
        }
        self.conns.borrow().get(&conn.parse::<u64>().ok()?).cloned()
    }

    /// One heartbeat sweep: close connections silent for `timeout_ms`, ping the others if
    /// `ping` (the heartbeat task calls this a few times per ping period).
    pub fn sweep(&self, now_ms: u32, timeout_ms: u32, ping: bool) {
        let conns: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
        for conn in &conns {
            if conn.silent_for(now_ms) >= timeout_ms {
                conn.close_with(CloseCause::PING_TIMEOUT);
            } else if ping
                && conn.push(frame::ping(), self.settings.outbox_limit_bytes) == Pushed::Queued
                && !conn.scheduled.replace(true)
            {
                self.dirty.borrow_mut().push(conn.clone());
            }
        }
        self.flush_dirty();
    }

    /// Warns the authenticated connections whose token has expired (`token_expiring`)
    /// and closes those past the grace period with 4001; `now` is Unix seconds. Called by
    /// the heartbeat task; cheap until the earliest deadline is due.
    pub fn check_tokens(&self, now: u64) {
        let due = self.token_clocks.borrow_mut().due(now);
        if due.is_empty() {
            return;
        }
        for (id, action) in due {
            let Some(conn) = self.conns.borrow().get(&id).cloned() else {
                continue;
            };
            match action {
                Action::Warn { exp, close_at } => {
                    self.deliver(
                        &conn,
                        &Outgoing::text(&expiry::warning_frame(exp, close_at)),
                    );
                }
                Action::Close => conn.close_with(CloseCause::TOKEN_EXPIRED),
                Action::Wait => {}
            }
        }
        self.flush_dirty();
    }

    /// Starts draining: stop taking clients as `mode` says, serve the current ones for
    /// `grace`, close them with 1012, and exit once they are gone (bounded).
    pub fn start_drain(self: &Rc<Self>, grace: Duration, mode: DrainMode) {
        if self.drain.get().is_some() {
            return;
        }
        self.drain.set(Some(mode));
        if mode == DrainMode::Reload {
            self.stop_accepting.notify_one();
        }
        tracing::info!(grace_ms = grace.as_millis() as u64, ?mode, "draining");
        let this = self.clone();
        tokio::task::spawn_local(async move {
            tokio::time::sleep(grace).await;
            this.closing_all.set(true);
            let conns: Vec<Rc<Conn>> = this.conns.borrow().values().cloned().collect();
            tracing::info!(
                clients = conns.len(),
                "drain period over; closing clients with 1012"
            );
            for c in &conns {
                c.close_with(CloseCause::RESTART);
            }
            let wait = this.all_closed.notified();
            if !this.idle() {
                let _ = tokio::time::timeout(Duration::from_secs(7), wait).await;
            }
            tracing::info!("drained; exiting");
            std::process::exit(0);
        });
    }
}

/// Every connection, whatever its endpoint, is counted and unregistered here.
impl conn::Host for Worker {
    fn received(&self, bytes: usize) {
        counters::add(&self.counters.messages_in, 1);
        counters::add(&self.counters.bytes_in, bytes as u64);
    }

    fn violated(&self) {
        counters::add(&self.counters.protocol_errors, 1);
    }

    /// `/echo` sends nothing to the master: never held.
    fn hold_reads(&self, _cx: &mut std::task::Context<'_>) -> bool {
        false
    }

    fn ended(&self, conn: &Conn) {
        self.close(conn.id);
        self.release_connection();
    }
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The worker is draining.
    Draining,
    /// The worker is at `max_connections`.
    Full,
}
