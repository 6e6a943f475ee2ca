//! Drives one WebSocket: reads frames, writes whatever the [`Outbox`] holds with one flush
//! per wake-up, pings on schedule, and closes with the right code.
//!
//! Reading and writing happen in one `poll_fn`, so the stream is never split (no lock
//! between halves) and a client that stops reading never stops us reading it.

use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};

use super::outbox::{CloseCause, Outbox};

/// How long a closing connection may take to deliver its close frame and hear the
/// client's answer before the socket is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// What happened on the connection.
#[derive(Debug)]
pub enum Event {
    /// A frame from the client (text, binary, ping, pong or its close frame).
    Message(Message),
    /// The server must close the connection (slow consumer, drain, ping timeout).
    Close(CloseCause),
    /// The client broke the protocol; close with this cause.
    Violation(CloseCause),
    /// The connection is gone (closed cleanly or by an I/O error).
    Ended,
}

/// The WebSocket plus the bookkeeping that goes with it.
pub struct Driver {
    /// The socket, already upgraded.
    ws: WebSocketStream<TcpStream>,
    /// Frames others queued for this client.
    outbox: Rc<Outbox>,
    /// Bytes handed to the WebSocket layer since the last completed flush.
    unflushed: usize,
    /// Whether the WebSocket layer may hold bytes not yet flushed (frames, auto-pongs).
    dirty: bool,
    /// Fires at the next ping or at the ping timeout, whichever comes first.
    timer: Pin<Box<Sleep>>,
    /// When the client last sent anything.
    last_seen: Instant,
    /// When the next ping is due.
    next_ping: Instant,
    /// Ping period.
    ping_interval: Duration,
    /// Silence after which the client is dropped.
    ping_timeout: Duration,
}

impl Driver {
    /// Wraps an upgraded socket.
    pub fn new(
        ws: WebSocketStream<TcpStream>,
        outbox: Rc<Outbox>,
        ping_interval: Duration,
        ping_timeout: Duration,
    ) -> Self {
        let now = Instant::now();
        let next_ping = now + ping_interval;
        Self {
            ws,
            outbox,
            unflushed: 0,
            dirty: false,
            timer: Box::pin(tokio::time::sleep_until(next_ping.min(now + ping_timeout))),
            last_seen: now,
            next_ping,
            ping_interval,
            ping_timeout,
        }
    }

    /// The connection's outbox.
    pub fn outbox(&self) -> &Rc<Outbox> {
        &self.outbox
    }

    /// Waits for the next thing that needs the session's attention, writing queued frames
    /// meanwhile.
    pub async fn next_event(&mut self) -> Event {
        poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if let Some(cause) = self.outbox.closing() {
            return Poll::Ready(Event::Close(cause));
        }
        if self.poll_write(cx).is_err() {
            return Poll::Ready(Event::Ended);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if now >= self.last_seen + self.ping_timeout {
                return Poll::Ready(Event::Close(CloseCause::PING_TIMEOUT));
            }
            if now >= self.next_ping {
                self.outbox.push(Message::Ping(Default::default()));
                self.next_ping = now + self.ping_interval;
            }
            let due = self.next_ping.min(self.last_seen + self.ping_timeout);
            self.timer.as_mut().reset(due);
            let _ = self.timer.as_mut().poll(cx);
            if self.poll_write(cx).is_err() {
                return Poll::Ready(Event::Ended);
            }
        }
        self.outbox.register(cx.waker());
        match self.ws.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(msg))) => {
                self.last_seen = Instant::now();
                // Reading a ping queues a pong inside the WebSocket layer.
                self.dirty = true;
                Poll::Ready(Event::Message(msg))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(match violation(&e) {
                Some(cause) => Event::Violation(cause),
                None => Event::Ended,
            }),
            Poll::Ready(None) => Poll::Ready(Event::Ended),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Moves queued frames into the WebSocket layer and flushes; never waits.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<(), WsError> {
        while self.outbox.has_queued() {
            match self.ws.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
            let Some(msg) = self.outbox.pop() else { break };
            self.unflushed += msg.len();
            self.dirty = true;
            self.ws.start_send_unpin(msg)?;
        }
        if self.dirty {
            match self.ws.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    self.dirty = false;
                    self.outbox.flushed(std::mem::take(&mut self.unflushed));
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// Sends a close frame with `cause`, waits (bounded) for the client's answer, and
    /// drops the socket.
    pub async fn close(mut self, cause: CloseCause) {
        self.outbox.close_with(cause);
        let frame = CloseFrame {
            code: CloseCode::from(cause.code),
            reason: cause.reason.into(),
        };
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            if self.ws.send(Message::Close(Some(frame))).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        })
        .await;
    }

    /// Finishes a close the client started (flushes the echoed close frame), bounded.
    pub async fn finish(mut self) {
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            let _ = self.ws.flush().await;
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// The close code for a read error that the client caused, if it was one.
fn violation(e: &WsError) -> Option<CloseCause> {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => Some(CloseCause {
            code: 1009,
            reason: "message too big",
        }),
        WsError::Capacity(_) => Some(CloseCause {
            code: 1009,
            reason: "message too big",
        }),
        WsError::Utf8(_) => Some(CloseCause {
            code: 1007,
            reason: "invalid UTF-8",
        }),
        WsError::Protocol(_) => Some(CloseCause {
            code: 1002,
            reason: "protocol error",
        }),
        _ => None,
    }
}
