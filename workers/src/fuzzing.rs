//! A window on the private connection driver for the property tests in `tests/fuzz/`
//! (hidden from the documentation; not for other users): feed a client's bytes to a
//! real [`Driver`] over a loopback socket and see what it makes of them.

use std::future::poll_fn;
use std::io::Write;
use std::rc::Rc;

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::conn::{Conn, Driver, Event};

/// What the driver reported, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping or pong (tungstenite answers pings itself).
    Control,
    /// The client's close frame: the connection ends.
    ClientClose,
    /// A protocol violation, with the close code the client would get.
    Violation(u16),
    /// The server closes the connection (e.g. 1013 for pongs past the outbox limit).
    ServerClose(u16),
    /// The byte stream ended.
    Ended,
}

/// What one run of the driver over some client bytes did.
#[derive(Debug)]
pub struct Drive {
    /// Events in order; the last one ends the connection.
    pub seen: Vec<Seen>,
    /// The most bytes the connection's write queue ever held.
    pub most_queued: usize,
}

/// Feeds `input` (as sent by a client after its handshake, then end of stream) to a
/// driver configured like a worker's, with message cap `max_message` and write-queue
/// limit `outbox_limit`.
pub fn drive(input: &[u8], max_message: usize, outbox_limit: usize) -> Drive {
    drive_with(input, max_message, outbox_limit, false)
}

/// [`drive`] on a connection that negotiated permessage-deflate when `inflate`: client
/// frames with RSV1 are inflated before the driver parses them.
pub fn drive_with(input: &[u8], max_message: usize, outbox_limit: usize, inflate: bool) -> Drive {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback bind");
        let mut client =
            std::net::TcpStream::connect(listener.local_addr().expect("bound")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        // The input arrives as bytes read with the handshake; the stream then ends.
        let _ = client.flush();
        let _ = client.shutdown(std::net::Shutdown::Write);
        let stream = tokio::net::TcpStream::from_std(server).expect("tokio stream");
        let conn = Rc::new(Conn::new(1, true, stream));
        let config = WebSocketConfig::default()
            .read_buffer_size(512)
            .write_buffer_size(0)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        let mut driver = Driver::new(
            conn.clone(),
            input.to_vec(),
            Rc::new(config),
            outbox_limit,
            inflate,
        );
        let mut out = Drive {
            seen: Vec::new(),
            most_queued: 0,
        };
        loop {
            let event = poll_fn(|cx| driver.poll_event(cx, true)).await;
            out.most_queued = out.most_queued.max(conn.queued_bytes());
            let (seen, last) = match event {
                Event::Message(Message::Text(t)) => (Seen::Text(t.as_str().to_owned()), false),
                Event::Message(Message::Binary(b)) => (Seen::Binary(b.to_vec()), false),
                Event::Message(Message::Close(_)) => (Seen::ClientClose, true),
                Event::Message(_) => (Seen::Control, false),
                Event::Violation(cause) => (Seen::Violation(cause.code), true),
                Event::Close(cause) => (Seen::ServerClose(cause.code), true),
                Event::Ended => (Seen::Ended, true),
            };
            out.seen.push(seen);
            if last {
                return out;
            }
        }
    })
}
