//! The per-connection outgoing queue, shared between the connection's own task and every
//! fan-out that delivers to it.
//!
//! Senders never write to the socket: they push a (cheaply cloned) frame and wake the
//! connection's task, which writes everything queued with one flush. The queue is bounded
//! in bytes; a client that lets it overflow is marked for closing with 1013 and its queue
//! is dropped, so one slow reader never makes the worker grow or slows anyone else.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::Waker;

use tokio_tungstenite::tungstenite::Message;

/// Why the server is closing a connection, with the close code the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCause {
    /// RFC 6455 close code.
    pub code: u16,
    /// Short reason text (≤ 123 bytes).
    pub reason: &'static str,
}

impl CloseCause {
    /// The client did not read fast enough (1013 "try again later").
    pub const SLOW_CONSUMER: Self = Self {
        code: 1013,
        reason: "slow consumer",
    };
    /// The worker is draining for a restart (1012 "service restart").
    pub const RESTART: Self = Self {
        code: 1012,
        reason: "service restart",
    };
    /// The peer went silent past the ping timeout (1001 "going away").
    pub const PING_TIMEOUT: Self = Self {
        code: 1001,
        reason: "ping timeout",
    };
}

/// The outgoing side of one connection.
pub struct Outbox {
    /// Connection number, unique within this worker.
    pub id: u64,
    /// Whether this is a `/ws` (pub/sub) connection, the ones a broadcast reaches.
    pub pubsub: bool,
    /// Frames waiting for the connection task.
    queue: RefCell<VecDeque<Message>>,
    /// Bytes queued here or handed to the socket layer but not yet flushed.
    queued_bytes: Cell<usize>,
    /// The most `queued_bytes` may reach before the client counts as a slow consumer.
    limit: usize,
    /// The connection task's waker, set each time it waits.
    waker: RefCell<Option<Waker>>,
    /// Set when the connection must be closed; the task sees it on its next wake.
    close: Cell<Option<CloseCause>>,
}

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// The connection is already closing; the frame was dropped.
    Closed,
    /// The frame overflowed the queue: the connection is now closing with 1013.
    Overflow,
}

impl Outbox {
    /// An empty outbox with a byte `limit`.
    pub fn new(id: u64, pubsub: bool, limit: usize) -> Self {
        Self {
            id,
            pubsub,
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            limit,
            waker: RefCell::new(None),
            close: Cell::new(None),
        }
    }

    /// Queues `msg` and wakes the connection task.
    pub fn push(&self, msg: Message) -> Pushed {
        if self.close.get().is_some() {
            return Pushed::Closed;
        }
        let len = msg.len();
        let total = self.queued_bytes.get() + len;
        if total > self.limit {
            self.close_with(CloseCause::SLOW_CONSUMER);
            return Pushed::Overflow;
        }
        self.queued_bytes.set(total);
        self.queue.borrow_mut().push_back(msg);
        self.wake();
        Pushed::Queued
    }

    /// Marks the connection for closing with `cause` (the first cause wins) and drops
    /// whatever is still queued.
    pub fn close_with(&self, cause: CloseCause) {
        if self.close.get().is_none() {
            self.close.set(Some(cause));
            let dropped: usize = self.queue.borrow_mut().drain(..).map(|m| m.len()).sum();
            self.queued_bytes
                .set(self.queued_bytes.get().saturating_sub(dropped));
            self.wake();
        }
    }

    /// The pending close, if any.
    pub fn closing(&self) -> Option<CloseCause> {
        self.close.get()
    }

    /// Takes the next queued frame.
    pub(crate) fn pop(&self) -> Option<Message> {
        self.queue.borrow_mut().pop_front()
    }

    /// Whether frames are waiting.
    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.borrow().is_empty()
    }

    /// Forgets `n` bytes that the socket has now taken.
    pub(crate) fn flushed(&self, n: usize) {
        self.queued_bytes
            .set(self.queued_bytes.get().saturating_sub(n));
        let mut q = self.queue.borrow_mut();
        if q.is_empty() && q.capacity() > 64 {
            // Give back the memory a burst needed; idle connections should stay small.
            *q = VecDeque::new();
        }
    }

    /// Remembers the task to wake when something is pushed.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        match slot.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_with_1013_and_drops_the_queue() {
        let o = Outbox::new(1, true, 10);
        assert_eq!(o.push(Message::text("12345")), Pushed::Queued);
        assert_eq!(o.push(Message::text("12345")), Pushed::Queued);
        assert_eq!(o.push(Message::text("1")), Pushed::Overflow);
        assert_eq!(o.closing(), Some(CloseCause::SLOW_CONSUMER));
        assert!(!o.has_queued());
        assert_eq!(o.push(Message::text("1")), Pushed::Closed);
    }

    #[test]
    fn flushed_bytes_make_room_again() {
        let o = Outbox::new(1, true, 10);
        assert_eq!(o.push(Message::text("1234567890")), Pushed::Queued);
        assert!(o.pop().is_some());
        o.flushed(10);
        assert_eq!(o.push(Message::text("1234567890")), Pushed::Queued);
    }
}
