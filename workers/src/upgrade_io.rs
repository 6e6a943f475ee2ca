//! The socket hyper serves HTTP on: a pass-through, except that the `101 Switching
//! Protocols` answer of a WebSocket upgrade is held back instead of written.
//!
//! hyper writes every response itself, so an upgrade used to cost two writes (and two
//! loopback segments, and two reads for the client): hyper's 101, then the connection's
//! first frame (`welcome` on `/ws`). Once the service has decided to upgrade it calls
//! [`Hold::hold`]; from then on hyper's writes go into a buffer and its flush succeeds at
//! once. The upgraded socket comes back from hyper with that buffer
//! ([`UpgradeIo::into_parts`]), and the connection queues it ahead of its first frames,
//! so the answer and `welcome` leave in one `writev`. Nothing else changes: the bytes, and
//! their order, are what hyper would have written.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The service's handle on its connection's socket: says when hyper's writes must be held.
/// (An `Arc`: hyper wants an upgradable socket to be `Send`; it never leaves the worker's
/// one thread.)
#[derive(Clone, Default)]
pub(crate) struct Hold(Arc<AtomicBool>);

impl Hold {
    /// From now on, what hyper writes on this connection is held for the upgraded socket
    /// (called with the 101 answer: nothing follows it on the HTTP side).
    pub fn hold(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// An accepted socket under hyper, holding back what hyper writes once told to.
pub(crate) struct UpgradeIo {
    /// The client's socket.
    stream: TcpStream,
    /// Set by the service when it answers 101.
    hold: Hold,
    /// What hyper wrote since then (the 101 answer), not yet on the wire.
    held: Vec<u8>,
}

impl UpgradeIo {
    /// Wraps `stream`; writes pass through until `hold` is set.
    pub fn new(stream: TcpStream, hold: Hold) -> Self {
        Self {
            stream,
            hold,
            held: Vec::new(),
        }
    }

    /// The socket, and the bytes hyper wrote while held: the caller must write them
    /// before anything else.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.held)
    }

    fn holding(&self) -> bool {
        self.hold.0.load(Ordering::Relaxed)
    }
}

impl AsyncRead for UpgradeIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpgradeIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.holding() {
            this.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.holding() {
            let before = this.held.len();
            for buf in bufs {
                this.held.extend_from_slice(buf);
            }
            return Poll::Ready(Ok(this.held.len() - before));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.holding() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    /// hyper shuts the socket down only when it gives the connection up; what it held is
    /// written first, so a client is never left without the answer it was sent.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.held.is_empty() {
            match Pin::new(&mut this.stream).poll_write(cx, &this.held) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    this.held.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The server's end first.
    async fn pair() -> (TcpStream, TcpStream) {
        let (client, server) = crate::conn::socket_pair().await;
        (server, client)
    }

    #[tokio::test]
    async fn writes_pass_through_until_held_then_come_back_with_the_socket() {
        let (server, mut client) = pair().await;
        let hold = Hold::default();
        let mut io = UpgradeIo::new(server, hold.clone());
        io.write_all(b"before").await.unwrap();
        io.flush().await.unwrap();
        let mut got = [0u8; 6];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"before");

        hold.hold();
        let bufs = [IoSlice::new(b"HTTP/1.1 101 "), IoSlice::new(b"\r\n\r\n")];
        let n = io.write_vectored(&bufs).await.unwrap();
        assert_eq!(n, 17);
        io.write_all(b"!").await.unwrap();
        io.flush().await.unwrap();
        let (server, held) = io.into_parts();
        assert_eq!(held, b"HTTP/1.1 101 \r\n\r\n!");

        // Nothing of it reached the client: the socket's next bytes are the caller's.
        server.try_write(b"next").unwrap();
        let mut got = [0u8; 4];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"next");
    }

    #[tokio::test]
    async fn a_shutdown_writes_what_was_held_first() {
        let (server, mut client) = pair().await;
        let hold = Hold::default();
        let mut io = UpgradeIo::new(server, hold.clone());
        hold.hold();
        io.write_all(b"answer").await.unwrap();
        io.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"answer");
    }
}
