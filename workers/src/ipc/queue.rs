//! A link's outgoing queue, measured in messages and bytes: the sender adds each message
//! and its weight when it queues it, the writer task ([`pump`](super::framing::pump))
//! subtracts what it wrote. Both ends of the master link use it: the master to find a
//! worker that fell too far behind (and replace it), the worker to stop reading its
//! clients while the master is behind (back-pressure instead of unbounded growth).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Context, Waker};

use tokio::sync::mpsc;

/// A message that knows roughly how many bytes of memory it holds while queued.
pub trait Weighed {
    /// The message's size in memory: the value itself plus what its fields own.
    fn weight(&self) -> usize;
}

/// What is queued on a link and not yet written, shared by the sender and the writer task.
#[derive(Debug, Default)]
pub struct Level {
    /// Messages queued and not yet written.
    messages: Cell<u64>,
    /// Their weight in bytes.
    bytes: Cell<u64>,
    /// Past this many bytes [`hold`](Self::hold) asks callers to wait (0: never).
    hold_above: u64,
    /// Whether the writer is waiting for the peer to take data (its socket is full), as
    /// opposed to merely not having run yet: only then does a long queue mean the peer
    /// is not reading.
    blocked: Cell<bool>,
    /// Who waits for the queue to fall back to `hold_above`.
    waiting: RefCell<Vec<Waker>>,
}

impl Level {
    /// A level whose [`hold`](Self::hold) says wait above `hold_above` bytes (0: never).
    pub fn new(hold_above: u64) -> Self {
        Self {
            hold_above,
            ..Self::default()
        }
    }

    /// Messages queued and not yet written.
    pub fn messages(&self) -> u64 {
        self.messages.get()
    }

    /// Bytes queued and not yet written.
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    /// Whether the writer is stuck on a full socket (the peer is not taking data).
    pub fn blocked(&self) -> bool {
        self.blocked.get()
    }

    /// The writer tells whether it is waiting on a full socket.
    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.set(blocked);
    }

    /// Counts one queued message of `weight` bytes.
    pub fn queued(&self, weight: usize) {
        self.messages.set(self.messages.get() + 1);
        self.bytes.set(self.bytes.get() + weight as u64);
    }

    /// Subtracts what the writer wrote; wakes the waiters once the queue is back under
    /// the hold mark.
    pub fn written(&self, messages: u64, bytes: u64) {
        self.messages
            .set(self.messages.get().saturating_sub(messages));
        self.bytes.set(self.bytes.get().saturating_sub(bytes));
        if self.bytes.get() <= self.hold_above {
            for w in self.waiting.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    /// Whether the queue is over its hold mark; if so `cx`'s task is woken when it drains.
    pub fn hold(&self, cx: &mut Context<'_>) -> bool {
        if self.hold_above == 0 || self.bytes.get() <= self.hold_above {
            return false;
        }
        let mut waiting = self.waiting.borrow_mut();
        if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
            waiting.push(cx.waker().clone());
        }
        true
    }
}

/// The sending side of a measured link queue.
pub struct LinkTx<T> {
    /// The channel the writer task drains.
    tx: mpsc::UnboundedSender<T>,
    /// What is queued, shared with the writer task.
    level: Rc<Level>,
}

impl<T: Weighed> LinkTx<T> {
    /// Queues `msg`; false when the writer task is gone (the link closed).
    pub fn send(&self, msg: T) -> bool {
        let weight = msg.weight();
        let sent = self.tx.send(msg).is_ok();
        if sent {
            self.level.queued(weight);
        }
        sent
    }

    /// What is queued and not yet written.
    pub fn level(&self) -> &Level {
        &self.level
    }
}

/// A measured queue: the sender, the receiver for the writer task and the shared level,
/// whose [`hold`](Level::hold) says wait above `hold_above` bytes (0: never).
pub fn channel<T>(hold_above: u64) -> (LinkTx<T>, mpsc::UnboundedReceiver<T>, Rc<Level>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let level = Rc::new(Level::new(hold_above));
    (
        LinkTx {
            tx,
            level: level.clone(),
        },
        rx,
        level,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl Weighed for Vec<u8> {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    #[test]
    fn the_level_follows_sends_and_writes_and_holds_above_its_mark() {
        let (tx, mut rx, level) = channel::<Vec<u8>>(100);
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(tx.send(vec![0; 60]));
        assert!(!level.hold(&mut cx), "60 bytes is under the mark");
        assert!(tx.send(vec![0; 60]));
        assert_eq!((level.messages(), level.bytes()), (2, 120));
        assert!(level.hold(&mut cx));
        assert!(level.hold(&mut cx), "asked twice, registered once");
        level.written(1, 60);
        assert_eq!(
            woken.0.load(Ordering::Relaxed),
            1,
            "woken once under the mark"
        );
        assert!(!level.hold(&mut cx));
        rx.close();
        while rx.try_recv().is_ok() {}
        assert!(!tx.send(vec![1]), "a closed link refuses");
        assert_eq!(level.messages(), 1);
    }

    #[test]
    fn a_mark_of_zero_never_holds() {
        let (tx, _rx, level) = channel::<Vec<u8>>(0);
        tx.send(vec![0; 1 << 20]);
        let waker = Waker::noop();
        assert!(!level.hold(&mut Context::from_waker(waker)));
    }
}
