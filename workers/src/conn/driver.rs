//! The connection's own task: tungstenite parses the client's frames from the socket
//! (and queues its automatic pong and close replies into the connection's write queue);
//! this driver flushes that queue whenever it runs and waits for the socket to become
//! readable or writable.
//!
//! Reading and writing happen in one `poll_fn`, so a client that stops reading never stops
//! us reading it. Pings and the silence timeout are a worker-wide sweep (the worker's
//! heartbeat, reading [`Conn::silent_for`]), not a timer per connection.

use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::Interest;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocket, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::boundary::Boundary;
use super::shared::{CloseCause, Conn};
use crate::deflate::{InflateError, Reader};

/// How long a closing connection may take to deliver its close frame and hear the
/// client's answer before the socket is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// How much longer a connection whose socket stayed full through [`CLOSE_LINGER`] may take
/// to accept the rest of what is queued (at most the rest of one frame and the close frame:
/// the rest was dropped when closing started), so a client that stopped reading for a while
/// still reads whole frames and the close frame rather than a stream cut mid-frame.
const TAIL_LINGER: Duration = Duration::from_secs(30);

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

/// tungstenite's view of the socket: reads come from it without blocking (through the
/// compressed-frame reader on connections that negotiated permessage-deflate); writes (only
/// tungstenite's own pongs and close frames) go into the connection's queue, in order with
/// the data frames, pongs bounded by the outbox limit.
pub struct Socket {
    /// The connection whose socket is read and whose queue is written.
    conn: Rc<Conn>,
    /// The outbox limit (bytes) tungstenite's pongs count against.
    outbox_limit: usize,
    /// The compressed-frame reader. It exists only while a read leaves something carried
    /// over (a partial frame, a compressed message, transcoded bytes not yet read, a
    /// failure): an idle connection keeps none, whether it negotiated compression or not.
    reader: Option<Box<Reader>>,
    /// The message limit when the client negotiated permessage-deflate, else 0 (no reader).
    inflate_limit: usize,
    /// Where the bytes handed to tungstenite stand, so its state can be let go of between
    /// messages.
    boundary: Boundary,
}

impl Socket {
    /// Whether tungstenite has been handed whole messages only and nothing is carried over:
    /// a fresh tungstenite state would go on exactly where the current one is.
    fn between_messages(&self) -> bool {
        self.boundary.between_messages() && self.reader.is_none()
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let stream = &self.conn.stream;
        let n = if self.inflate_limit == 0 {
            let n = stream.try_read(buf)?;
            if n > 0 && n < buf.len() {
                // A short read emptied the socket: clear its readiness (as tokio's own
                // `poll_read` does) so tungstenite's next read returns WouldBlock at once
                // instead of paying an EAGAIN `recvfrom` per message. Data arriving later
                // is a new edge, so the task is woken for it.
                let _ = stream.try_io(Interest::READABLE, || {
                    Err::<(), _>(io::ErrorKind::WouldBlock.into())
                });
            }
            n
        } else {
            let limit = self.inflate_limit;
            let reader = self
                .reader
                .get_or_insert_with(|| Box::new(Reader::new(limit)));
            let read = reader.read(buf, |b| stream.try_read(b));
            if reader.at_rest() {
                self.reader = None;
            }
            read?
        };
        self.boundary.saw(&buf[..n]);
        Ok(n)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.conn
            .push_control(Bytes::copy_from_slice(buf), self.outbox_limit);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The protocol side of a connection: its socket alone between messages, tungstenite's
/// state over it while a message (or the close handshake) is under way.
enum Protocol {
    /// Between messages: no tungstenite state kept (its read buffer and protocol state
    /// are most of an idle connection's memory).
    Resting(Socket),
    /// Reading: tungstenite's state machine over the socket (boxed: it exists only while
    /// something is read, and the connection's task stays small).
    Reading(Box<WebSocket<Socket>>),
    /// Only while switching between the two.
    Switching,
}

/// The protocol state of one connection plus its shared half.
pub struct Driver {
    /// tungstenite's state while it is needed, else just the socket.
    protocol: Protocol,
    /// The worker's tungstenite configuration, for each fresh tungstenite state.
    config: Rc<WebSocketConfig>,
    /// The shared half.
    conn: Rc<Conn>,
}

impl Driver {
    /// Wraps an upgraded connection; `early` holds bytes the client sent right after its
    /// handshake; `outbox_limit` bounds the write queue, control frames included; with
    /// `inflate` (permessage-deflate negotiated) compressed messages are inflated.
    pub fn new(
        conn: Rc<Conn>,
        mut early: Vec<u8>,
        config: Rc<WebSocketConfig>,
        outbox_limit: usize,
        inflate: bool,
    ) -> Self {
        let inflate_limit = match inflate {
            true => config.max_message_size.unwrap_or(usize::MAX).max(1),
            false => 0,
        };
        let reader = (inflate && !early.is_empty()).then(|| {
            let mut r = Box::new(Reader::new(inflate_limit));
            r.preload(&std::mem::take(&mut early));
            r
        });
        let mut boundary = Boundary::default();
        boundary.saw(&early);
        let socket = Socket {
            conn: conn.clone(),
            outbox_limit,
            reader,
            inflate_limit,
            boundary,
        };
        let protocol = match socket.between_messages() && early.is_empty() {
            true => Protocol::Resting(socket),
            false => Protocol::Reading(Box::new(WebSocket::from_partially_read(
                socket,
                early,
                Role::Server,
                Some(*config),
            ))),
        };
        Self {
            protocol,
            config,
            conn,
        }
    }

    /// tungstenite's state, a fresh one if the connection was resting.
    fn ws(&mut self) -> &mut WebSocket<Socket> {
        if let Protocol::Resting(_) = self.protocol {
            let Protocol::Resting(socket) =
                std::mem::replace(&mut self.protocol, Protocol::Switching)
            else {
                unreachable!("matched above")
            };
            self.protocol = Protocol::Reading(Box::new(WebSocket::from_raw_socket(
                socket,
                Role::Server,
                Some(*self.config),
            )));
        }
        match &mut self.protocol {
            Protocol::Reading(ws) => ws,
            _ => unreachable!("set above"),
        }
    }

    /// Lets go of tungstenite's state if it sits between messages with nothing pending
    /// (open both ways, its replies already queued, its read buffer empty).
    fn rest(&mut self) {
        let Protocol::Reading(ws) = &self.protocol else {
            return;
        };
        if !(ws.get_ref().between_messages() && ws.can_read() && ws.can_write()) {
            return;
        }
        if let Protocol::Reading(ws) = std::mem::replace(&mut self.protocol, Protocol::Switching) {
            self.protocol = Protocol::Resting(ws.into_inner());
        }
    }

    /// Why the compressed-frame reader stopped, as the close the client gets.
    fn inflate_failure(&self) -> Option<CloseCause> {
        let socket = match &self.protocol {
            Protocol::Resting(socket) => socket,
            Protocol::Reading(ws) => ws.get_ref(),
            Protocol::Switching => return None,
        };
        socket.reader.as_ref()?.failed().map(|e| match e {
            InflateError::TooBig => CloseCause::TOO_BIG,
            InflateError::Protocol => CloseCause::PROTOCOL,
        })
    }

    /// The shared half.
    pub fn conn(&self) -> &Rc<Conn> {
        &self.conn
    }

    /// Polls for the next thing that needs the endpoint's attention, writing queued frames
    /// meanwhile; without `read` the client's socket is left unread (back-pressure).
    pub fn poll_event(&mut self, cx: &mut Context<'_>, read: bool) -> Poll<Event> {
        if let Some(cause) = self.conn.closing() {
            return Poll::Ready(Event::Close(cause));
        }
        if self.poll_flush(cx).is_err() {
            return Poll::Ready(Event::Ended);
        }
        self.conn.register(cx.waker());
        if !read {
            // Held (back-pressure): writing goes on, reading waits for the caller's wake-up.
            return Poll::Pending;
        }
        loop {
            match self.ws().read() {
                Ok(msg) => {
                    self.conn.seen(super::now_ms());
                    return Poll::Ready(Event::Message(msg));
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    match self.conn.stream.poll_read_ready(cx) {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(_)) => return Poll::Ready(Event::Ended),
                        Poll::Pending => {
                            self.rest();
                            return Poll::Pending;
                        }
                    }
                }
                Err(e) => {
                    if let Some(cause) = self.inflate_failure() {
                        return Poll::Ready(Event::Violation(cause));
                    }
                    return Poll::Ready(match violation(&e) {
                        Some(cause) => Event::Violation(cause),
                        None => Event::Ended,
                    });
                }
            }
        }
    }

    /// Writes the queue; when the socket is full, arranges to be woken when it drains.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            if self.conn.flush_now()? {
                return Ok(());
            }
            match self.conn.stream.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(()),
            }
        }
    }

    /// Sends a close frame with `cause` after what is already on the wire, waits (bounded)
    /// for it to go out and for the client's answer, and drops the socket.
    pub async fn close(mut self, cause: CloseCause) {
        self.conn.close_with(cause);
        let frame = CloseFrame {
            code: CloseCode::from(cause.code),
            reason: cause.reason.into(),
        };
        let _ = self.ws().close(Some(frame));
        self.linger().await;
    }

    /// Finishes a close the client started: sends tungstenite's answer and waits (bounded)
    /// for it to go out.
    pub async fn finish(mut self) {
        self.linger().await;
    }

    /// Flushes and reads until the protocol layer says the connection is over, for at
    /// most [`CLOSE_LINGER`]; then, if the socket is still full, writes the rest for at
    /// most [`TAIL_LINGER`]; then discards unread input, so that dropping the socket sends
    /// FIN after the queued bytes rather than a reset that would destroy them.
    async fn linger(&mut self) {
        self.handshake_linger().await;
        if self.conn.queued_bytes() > 0 {
            let _ = tokio::time::timeout(
                TAIL_LINGER,
                poll_fn(|cx| {
                    self.discard_input();
                    match self.poll_flush(cx) {
                        Ok(()) if self.conn.queued_bytes() > 0 => {
                            // Input may also arrive meanwhile: wake for it too.
                            let _ = self.conn.stream.poll_read_ready(cx);
                            Poll::Pending
                        }
                        _ => Poll::Ready(()),
                    }
                }),
            )
            .await;
        }
        self.discard_input();
    }

    /// Reads and drops what the client sent that is waiting in the socket (at most
    /// 64 KiB per call, so a client that keeps sending cannot hold the worker here).
    fn discard_input(&self) {
        let mut sink = [0u8; 1024];
        for _ in 0..64 {
            if !matches!(self.conn.stream.try_read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
    }

    /// The close handshake part of [`Self::linger`].
    async fn handshake_linger(&mut self) {
        let _ = tokio::time::timeout(
            CLOSE_LINGER,
            poll_fn(|cx| {
                if self.poll_flush(cx).is_err() {
                    return Poll::Ready(());
                }
                loop {
                    match self.ws().read() {
                        Ok(_) => continue,
                        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                            // tungstenite may just have queued its close answer.
                            if self.poll_flush(cx).is_err() {
                                return Poll::Ready(());
                            }
                            match self.conn.stream.poll_read_ready(cx) {
                                Poll::Ready(Ok(())) => continue,
                                Poll::Ready(Err(_)) => return Poll::Ready(()),
                                Poll::Pending => return Poll::Pending,
                            }
                        }
                        Err(_) => {
                            // Closed (or broken): write what is left, then we are done.
                            return match self.poll_flush(cx) {
                                Ok(()) if self.conn.queued_bytes() > 0 => Poll::Pending,
                                _ => Poll::Ready(()),
                            };
                        }
                    }
                }
            }),
        )
        .await;
    }
}

/// The close code for a read error that the client caused, if it was one.
fn violation(e: &WsError) -> Option<CloseCause> {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) | WsError::Capacity(_) => {
            Some(CloseCause::TOO_BIG)
        }
        WsError::Utf8(_) => Some(CloseCause::BAD_UTF8),
        // The client went away without a close frame: the connection is over, nothing
        // was violated (and nobody is left to send a close frame to).
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some(CloseCause::PROTOCOL),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::io::Write;
    use std::rc::Rc;
    use std::task::Poll;
    use std::time::Duration;

    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

    use super::{Driver, Event, Protocol};
    use crate::conn::Conn;

    /// A masked client text frame (mask 0: the payload is sent as is).
    fn text_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    }

    /// A driver over a loopback socket and the client's end of it.
    fn pair() -> (Driver, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let conn = Rc::new(Conn::new(
            1,
            true,
            tokio::net::TcpStream::from_std(server).unwrap(),
        ));
        let config = WebSocketConfig::default().read_buffer_size(512);
        (
            Driver::new(conn, Vec::new(), Rc::new(config), 1 << 20, false),
            client,
        )
    }

    /// The next event, or `None` when the driver waits.
    async fn next(driver: &mut Driver) -> Option<Event> {
        let wait = poll_fn(|cx| match driver.poll_event(cx, true) {
            Poll::Ready(e) => Poll::Ready(Some(e)),
            Poll::Pending => Poll::Pending,
        });
        tokio::time::timeout(Duration::from_millis(200), wait)
            .await
            .ok()
            .flatten()
    }

    fn resting(driver: &Driver) -> bool {
        matches!(driver.protocol, Protocol::Resting(_))
    }

    #[tokio::test]
    async fn the_state_is_kept_only_while_a_message_is_under_way() {
        let (mut driver, mut client) = pair();
        assert!(resting(&driver), "a new connection keeps no state");
        client.write_all(&text_frame(b"hello")).unwrap();
        let Some(Event::Message(Message::Text(t))) = next(&mut driver).await else {
            panic!("expected the first message");
        };
        assert_eq!(t.as_str(), "hello");
        assert!(next(&mut driver).await.is_none());
        assert!(resting(&driver), "between messages the state is let go");

        // A frame cut inside its header, then inside its payload: the state stays.
        let frame = text_frame(b"second message");
        client.write_all(&frame[..1]).unwrap();
        assert!(next(&mut driver).await.is_none());
        assert!(!resting(&driver), "inside a header");
        client.write_all(&frame[1..9]).unwrap();
        assert!(next(&mut driver).await.is_none());
        assert!(!resting(&driver), "inside a payload");
        client.write_all(&frame[9..]).unwrap();
        let Some(Event::Message(Message::Text(t))) = next(&mut driver).await else {
            panic!("expected the second message");
        };
        assert_eq!(t.as_str(), "second message");

        // A fragmented message: its first frame alone keeps the state.
        client.write_all(&[0x01, 0x81, 0, 0, 0, 0, b'a']).unwrap();
        assert!(next(&mut driver).await.is_none());
        assert!(!resting(&driver), "a fragmented message is open");
        client.write_all(&[0x80, 0x81, 0, 0, 0, 0, b'b']).unwrap();
        let Some(Event::Message(Message::Text(t))) = next(&mut driver).await else {
            panic!("expected the fragmented message");
        };
        assert_eq!(t.as_str(), "ab");
        assert!(next(&mut driver).await.is_none());
        assert!(resting(&driver));
    }
}
