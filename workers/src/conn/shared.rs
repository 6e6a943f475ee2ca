//! The part of a connection that others touch: its socket and its bounded write queue.
//!
//! Whoever has frames for the client pushes them here. The worker's fan-out then flushes
//! every connection it touched once per batch of master messages (like uWebSockets'
//! corking): one vectored write carries all frames queued for a socket, and no task is
//! woken unless the socket is full. The connection's own task flushes what it queued
//! itself (replies) and takes over when a write would block.
//!
//! The queue is bounded in bytes: a client past `limit` is marked for closing with 1013,
//! its unsent frames are dropped (a frame already partly on the wire is kept, so the byte
//! stream stays valid), and nothing else waits for it.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::task::Waker;

use bytes::Bytes;
use tokio::net::TcpStream;

/// Why the server is closing a connection, with the close code the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCause {
    /// RFC 6455 close code.
    pub code: u16,
    /// Short reason text (≤ 123 bytes).
    pub reason: &'static str,
}

/// Declares each cause once: its constant and its place in [`CloseCause::ALL`].
macro_rules! close_causes {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $reason:literal;)*) => {
        impl CloseCause {
            $(
                $(#[$doc])*
                pub const $name: Self = Self { code: $code, reason: $reason };
            )*

            /// Every cause the server uses, so a connection can store just the code.
            const ALL: &'static [Self] = &[$(Self::$name),*];
        }
    };
}

close_causes! {
    /// The client sent a message over the size limit (1009).
    TOO_BIG = 1009, "message too big";
    /// The client sent invalid UTF-8 (1007).
    BAD_UTF8 = 1007, "invalid UTF-8";
    /// The client broke the protocol (1002).
    PROTOCOL = 1002, "protocol error";
    /// The client did not read fast enough (1013 "try again later").
    SLOW_CONSUMER = 1013, "slow consumer";
    /// The client sent more message bytes per second than allowed (1008 "policy
    /// violation").
    INBOUND_RATE = 1008, "inbound byte rate limit";
    /// The worker is draining for a restart (1012 "service restart").
    RESTART = 1012, "service restart";
    /// The peer went silent past the ping timeout (1001 "going away").
    PING_TIMEOUT = 1001, "ping timeout";
    /// The application's backend closed it through the server API (its default code; the
    /// API may pick another 4xxx code, sent without a reason).
    DISCONNECTED = 4000, "disconnected by the server";
    /// The connection's token expired and no fresh one came within the grace period
    /// (4001; 4000–4999 is the application's range, RFC 6455 §7.4.2).
    TOKEN_EXPIRED = 4001, "token expired";
}

impl CloseCause {
    fn from_code(code: u16) -> Self {
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.code == code)
            .unwrap_or(Self { code, reason: "" })
    }
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

/// Frames waiting for the socket.
#[derive(Default)]
struct Queue {
    /// Encoded frames, oldest first.
    frames: VecDeque<Bytes>,
    /// Bytes of the front frame already written.
    front_written: usize,
    /// Bytes queued and not yet written.
    bytes: usize,
}

/// Whether `frame` is exactly one encoded pong (server frames are unmasked; a control
/// frame's payload is at most 125 bytes, so its header is two bytes).
fn is_pong(frame: &[u8]) -> bool {
    frame.len() >= 2 && frame[0] == 0x8A && frame.len() == 2 + usize::from(frame[1] & 0x7F)
}

/// Most frames handed to one `writev`.
const IOV_MAX: usize = 64;

/// One WebSocket connection as the rest of the worker sees it.
pub struct Conn {
    /// Connection number, unique within this worker.
    pub id: u64,
    /// Whether this is a `/ws` (pub/sub) connection, the ones a broadcast reaches.
    pub pubsub: bool,
    /// The window (bits) messages to this client are compressed with, 0 when it did not
    /// negotiate permessage-deflate: it gets the compressed variant of each
    /// [`Outgoing`](super::Outgoing) message.
    pub deflate: u8,
    /// The socket. Reads happen only in the connection's task; writes happen wherever
    /// the queue is flushed (always on the worker's one thread).
    pub(crate) stream: TcpStream,
    /// Frames not yet written.
    queue: RefCell<Queue>,
    /// The connection task's waker, set each time it waits.
    waker: RefCell<Option<Waker>>,
    /// The close code once the connection must be closed (0: open); the task sees it on
    /// its next wake. Just the code: this struct exists once per connection.
    close: Cell<u16>,
    /// When the client last sent a frame ([`super::now_ms`]).
    last_seen: Cell<u32>,
    /// Whether the worker's fan-out will flush this connection at the end of its batch.
    pub(crate) scheduled: Cell<bool>,
    /// Whether the queue's front is the HTTP answer that opens the connection (the 101,
    /// see [`Conn::push_answer`]): a close keeps it, as it keeps a frame already started.
    answer_first: Cell<bool>,
    /// The token's user id and `info` (raw JSON), set once when the session starts, for
    /// the server API (presence, disconnect by user). Boxed: one pointer when anonymous.
    identity: OnceCell<Box<(String, Option<String>)>>,
}

impl Conn {
    /// A connection with an empty queue.
    pub fn new(id: u64, pubsub: bool, stream: TcpStream) -> Self {
        Self {
            id,
            pubsub,
            deflate: 0,
            stream,
            queue: RefCell::new(Queue::default()),
            waker: RefCell::new(None),
            close: Cell::new(0),
            last_seen: Cell::new(super::now_ms()),
            scheduled: Cell::new(false),
            answer_first: Cell::new(false),
            identity: OnceCell::new(),
        }
    }

    /// Queues the HTTP answer that opens the connection (the upgrade's 101, which hyper
    /// was kept from writing), so it leaves with the first frames in one write. Called
    /// once, on a new connection, before any frame; nothing is queued when it is empty. A
    /// close keeps it: the client reads the 101, then the close frame.
    pub fn push_answer(&self, answer: Bytes) {
        if answer.is_empty() {
            return;
        }
        let mut q = self.queue.borrow_mut();
        debug_assert!(q.frames.is_empty(), "the answer goes first");
        q.bytes += answer.len();
        q.frames.push_front(answer);
        self.answer_first.set(true);
    }

    /// The same connection, receiving frames compressed with a window of `window_bits`
    /// (0: plain frames only).
    pub fn with_deflate(mut self, window_bits: u8) -> Self {
        self.deflate = window_bits;
        self
    }

    /// Queues a data frame, unless the connection is closing or the queue would pass
    /// `limit` bytes (which closes it with 1013).
    pub fn push(&self, frame: Bytes, limit: usize) -> Pushed {
        if self.close.get() != 0 {
            return Pushed::Closed;
        }
        let mut q = self.queue.borrow_mut();
        if q.bytes + frame.len() > limit {
            drop(q);
            self.close_with(CloseCause::SLOW_CONSUMER);
            return Pushed::Overflow;
        }
        q.bytes += frame.len();
        q.frames.push_back(frame);
        Pushed::Queued
    }

    /// Queues a frame the protocol layer must send. A close frame is always queued, even
    /// while closing. A pong counts against `limit` like data (past it the connection
    /// closes with 1013) and replaces a pong still waiting at the back of the queue:
    /// answering only the latest ping is enough (RFC 6455 §5.5.3), so a client that pings
    /// and never reads cannot grow the queue. Pongs are dropped once closing.
    pub(crate) fn push_control(&self, bytes: Bytes, limit: usize) {
        let mut q = self.queue.borrow_mut();
        if is_pong(&bytes) {
            if self.close.get() != 0 {
                return;
            }
            let back_started = q.frames.len() == 1 && q.front_written > 0;
            if !back_started
                && q.frames.back().is_some_and(|f| is_pong(f))
                && let Some(old) = q.frames.pop_back()
            {
                q.bytes -= old.len();
            }
            if q.bytes + bytes.len() > limit {
                drop(q);
                self.close_with(CloseCause::SLOW_CONSUMER);
                return;
            }
        }
        q.bytes += bytes.len();
        q.frames.push_back(bytes);
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queue.borrow().bytes
    }

    /// Writes as much of the queue as the socket takes without blocking. `Ok(true)` when
    /// the queue is empty, `Ok(false)` when the socket is full.
    pub fn flush_now(&self) -> io::Result<bool> {
        let mut q = self.queue.borrow_mut();
        loop {
            if q.frames.is_empty() {
                if q.frames.capacity() > 0 {
                    // An idle connection keeps no queue memory.
                    q.frames = VecDeque::new();
                }
                return Ok(true);
            }
            let result = {
                let mut iov = [IoSlice::new(&[]); IOV_MAX];
                let mut n = 0;
                for (i, frame) in q.frames.iter().take(IOV_MAX).enumerate() {
                    iov[i] = IoSlice::new(if i == 0 {
                        &frame[q.front_written..]
                    } else {
                        frame
                    });
                    n += 1;
                }
                self.stream.try_write_vectored(&iov[..n])
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut written) => {
                    q.bytes -= written;
                    while written > 0 {
                        let rest = q.frames[0].len() - q.front_written;
                        if written >= rest {
                            q.frames.pop_front();
                            q.front_written = 0;
                            self.answer_first.set(false);
                            written -= rest;
                        } else {
                            q.front_written += written;
                            written = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Marks the connection for closing with `cause` (the first cause wins), drops the
    /// frames not yet started, and wakes its task.
    pub fn close_with(&self, cause: CloseCause) {
        if self.close.get() != 0 {
            return;
        }
        self.close.set(cause.code);
        let mut q = self.queue.borrow_mut();
        let keep = usize::from(q.front_written > 0 || self.answer_first.get());
        while q.frames.len() > keep {
            if let Some(f) = q.frames.pop_back() {
                q.bytes -= f.len();
            }
        }
        drop(q);
        self.wake();
    }

    /// The pending close, if any.
    pub fn closing(&self) -> Option<CloseCause> {
        match self.close.get() {
            0 => None,
            code => Some(CloseCause::from_code(code)),
        }
    }

    /// The user id of the connection's token; None for an anonymous connection.
    pub fn user(&self) -> Option<&str> {
        self.identity.get().map(|i| i.0.as_str())
    }

    /// The token's public `info` (raw JSON text), when it has one.
    pub fn user_info(&self) -> Option<&str> {
        self.identity.get().and_then(|i| i.1.as_deref())
    }

    /// Records the connection's user (once: a refresh must keep the same `sub`).
    pub fn set_user(&self, user: &str, info: Option<&str>) {
        let _ = self
            .identity
            .set(Box::new((user.to_owned(), info.map(str::to_owned))));
    }

    /// Records that the client just sent something.
    pub fn seen(&self, now_ms: u32) {
        self.last_seen.set(now_ms);
    }

    /// Milliseconds since the client last sent something.
    pub fn silent_for(&self, now_ms: u32) -> u32 {
        now_ms.wrapping_sub(self.last_seen.get())
    }

    /// Remembers the task to wake when it must take over.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        match slot.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Wakes the connection's task.
    pub fn wake(&self) {
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::conn::socket_pair as pair;

    #[tokio::test]
    async fn overflow_closes_with_1013_and_drops_unsent_frames() {
        let (a, _b) = pair().await;
        let c = Conn::new(1, true, a);
        assert_eq!(c.push(Bytes::from_static(b"12345"), 10), Pushed::Queued);
        assert_eq!(c.push(Bytes::from_static(b"12345"), 10), Pushed::Queued);
        assert_eq!(c.push(Bytes::from_static(b"1"), 10), Pushed::Overflow);
        assert_eq!(c.closing(), Some(CloseCause::SLOW_CONSUMER));
        assert_eq!(c.queued_bytes(), 0);
        assert_eq!(c.push(Bytes::from_static(b"1"), 10), Pushed::Closed);
    }

    fn pong(payload: &[u8]) -> Bytes {
        let mut f = vec![0x8A, payload.len() as u8];
        f.extend_from_slice(payload);
        Bytes::from(f)
    }

    #[tokio::test]
    async fn only_the_latest_pong_waits_and_pongs_count_against_the_limit() {
        let (a, _b) = pair().await;
        let c = Conn::new(1, true, a);
        c.push(Bytes::from_static(b"data"), 100);
        for i in 0..10_000u32 {
            c.push_control(pong(&i.to_be_bytes()), 100);
        }
        assert_eq!(c.queued_bytes(), 4 + 6, "the data frame and one pong");
        assert_eq!(c.closing(), None);
        c.push_control(pong(&[0; 125]), 100);
        assert_eq!(c.closing(), Some(CloseCause::SLOW_CONSUMER));
        let close = Bytes::from_static(&[0x88, 0x02, 0x03, 0xF5]);
        c.push_control(close, 100);
        assert_eq!(
            c.queued_bytes(),
            4,
            "a close frame is queued even while closing"
        );
        c.push_control(pong(b"late"), 100);
        assert_eq!(c.queued_bytes(), 4, "no pongs once closing");
    }

    #[test]
    fn every_cause_is_found_by_its_code() {
        assert_eq!(CloseCause::ALL.len(), 9);
        for c in CloseCause::ALL {
            assert_eq!(CloseCause::from_code(c.code), *c);
        }
        assert_eq!(CloseCause::from_code(4999).reason, "");
        assert_eq!(CloseCause::from_code(4000), CloseCause::DISCONNECTED);
        assert_eq!(CloseCause::from_code(4001), CloseCause::TOKEN_EXPIRED);
    }

    #[test]
    fn recognises_exactly_one_pong() {
        assert!(is_pong(&pong(b"")));
        assert!(is_pong(&pong(&[1; 125])));
        assert!(!is_pong(&[0x89, 0]));
        assert!(!is_pong(&[0x8A, 2, 1]));
        let mut two = pong(b"a").to_vec();
        two.extend_from_slice(&pong(b"b"));
        assert!(!is_pong(&two));
    }

    #[tokio::test]
    async fn flush_writes_every_frame_in_order_in_one_go() {
        use tokio::io::AsyncReadExt;
        let (a, mut b) = pair().await;
        let c = Conn::new(1, true, a);
        for part in [&b"ab"[..], b"cd", b"ef"] {
            c.push(Bytes::copy_from_slice(part), 1 << 20);
        }
        assert!(c.flush_now().unwrap());
        assert_eq!(c.queued_bytes(), 0);
        let mut got = [0u8; 6];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcdef");
    }

    #[tokio::test]
    async fn the_answer_leaves_first_with_the_frames_and_survives_a_close() {
        use tokio::io::AsyncReadExt;
        let (a, mut b) = pair().await;
        let c = Conn::new(1, true, a);
        c.push_answer(Bytes::from_static(b"HTTP/1.1 101\r\n\r\n"));
        c.push(Bytes::from_static(b"welcome"), 1 << 20);
        assert!(c.flush_now().unwrap());
        let mut got = [0u8; 23];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HTTP/1.1 101\r\n\r\nwelcome");

        // Closed before anything was written (a drain): the answer stays, frames go.
        let (a, _b) = pair().await;
        let c = Conn::new(2, true, a);
        c.push_answer(Bytes::from_static(b"101"));
        c.push(Bytes::from_static(b"welcome"), 1 << 20);
        c.close_with(CloseCause::RESTART);
        assert_eq!(c.queued_bytes(), 3);
        assert!(c.flush_now().unwrap());
        c.push(Bytes::from_static(b"x"), 1 << 20);
        c.push_answer(Bytes::new());
        assert_eq!(
            c.queued_bytes(),
            0,
            "closed: no data, and an empty answer is nothing"
        );
    }

    #[tokio::test]
    async fn a_full_socket_keeps_the_rest_and_a_close_keeps_the_partial_frame() {
        let (a, _b) = pair().await;
        let c = Conn::new(1, true, a);
        let big = Bytes::from(vec![7u8; 1 << 20]);
        let mut queued = 0;
        while c.queued_bytes() == 0 || c.flush_now().unwrap() {
            c.push(big.clone(), usize::MAX);
            queued += 1;
            assert!(queued < 1000, "socket never filled");
        }
        c.push(big.clone(), usize::MAX);
        let before = c.queued_bytes();
        assert!(before > 0);
        c.close_with(CloseCause::RESTART);
        let after = c.queued_bytes();
        assert!(after < before);
        assert!(after < big.len(), "only the partly written frame may stay");
    }
}
