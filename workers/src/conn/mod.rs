//! One WebSocket connection.
//!
//! - [`shared::Conn`]: the socket and its bounded write queue, shared by the connection's
//!   own task and by every fan-out that delivers to it. Frames are written straight to the
//!   socket (vectored, many frames per syscall) by whoever flushes; the task only steps in
//!   when the socket is full.
//! - [`frame`]: server→client frames, encoded once and shared by every recipient.
//! - [`outgoing`]: a message's plain frame and, for clients that negotiated
//!   permessage-deflate, its compressed frame, each encoded at most once.
//! - [`driver`]: the protocol side: tungstenite parses the client's frames (and queues its
//!   pong and close replies into the same write queue), behind the compressed-frame reader
//!   (`deflate::Reader`) when the client negotiated permessage-deflate. Its state exists
//!   only while a message is read ([`boundary`] tells when the client is between two).
//! - [`task`]: the connection's whole life as one small hand-written future, calling the
//!   endpoint's [`Handler`] and telling its [`Host`] what every connection does.
//! - [`clock`]: the coarse millisecond clock connections are stamped with.
//!
//! This layer knows nothing of rooms or of the worker: whoever owns connections implements
//! [`Host`], and each endpoint (`/ws`, `/echo`) implements [`Handler`].

mod boundary;
pub mod clock;
pub mod driver;
pub mod frame;
pub mod outgoing;
pub mod shared;
pub mod task;

pub use clock::now_ms;
pub use driver::{Driver, Event};
pub use outgoing::Outgoing;
pub use shared::{CloseCause, Conn, Pushed};
pub use task::{ConnTask, Handler, Host};

/// Two ends of a loopback TCP connection (the connecting one first), for unit tests.
#[cfg(test)]
pub(crate) async fn socket_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = tokio::net::TcpStream::connect(l.local_addr().unwrap())
        .await
        .unwrap();
    let (b, _) = l.accept().await.unwrap();
    (a, b)
}

/// A `/ws` connection over a real loopback socket whose peer stays open (kept for the
/// thread's life), for unit tests of the layers above.
#[cfg(test)]
pub(crate) fn test_conn(id: u64) -> std::rc::Rc<Conn> {
    thread_local! {
        static PEERS: std::cell::RefCell<Vec<std::net::TcpStream>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    a.set_nonblocking(true).unwrap();
    PEERS.with(|p| p.borrow_mut().push(b));
    let stream = tokio::net::TcpStream::from_std(a).unwrap();
    std::rc::Rc::new(Conn::new(id, true, stream))
}
