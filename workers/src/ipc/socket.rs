//! The link's socket as the runtime sees it: registered for readability only, with write
//! readiness asked for only while a write is blocked.
//!
//! Why not `tokio::net::UnixStream`: it registers both interests, and on an AF_UNIX stream
//! the kernel signals the writer (EPOLLOUT, edge-triggered) each time the peer *reads*,
//! whether or not the writer was ever blocked. Every frame the peer consumed woke the
//! sender's event loop for nothing: measured at 250 rooms × 4 members, 1 publish/s each,
//! the master made ~2 `epoll_wait` calls and ~2.2 context switches per publish for ~0.9
//! reads. Here the read half is the only registration in normal operation; a write that
//! finds the socket full registers a duplicate descriptor for writability, waits, and drops
//! it once a write goes through whole.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// The reading end of a link (the same socket as its [`LinkWriteHalf`]).
pub struct LinkReadHalf {
    /// The socket, registered for readability only.
    fd: AsyncFd<UnixStream>,
}

/// The writing end of a link.
pub struct LinkWriteHalf {
    /// A duplicate of the socket, not registered: writes go straight to it.
    stream: UnixStream,
    /// While a write is blocked (the socket is full): another duplicate registered for
    /// writability, dropped (deregistered) once a write goes through whole.
    waiting: Option<AsyncFd<UnixStream>>,
}

/// Splits a connected link socket into its halves; must run inside the runtime.
pub fn split(stream: UnixStream) -> io::Result<(LinkReadHalf, LinkWriteHalf)> {
    stream.set_nonblocking(true)?;
    let write = stream.try_clone()?;
    let read = crate::fd::register_unix(stream, Interest::READABLE)?;
    Ok((
        LinkReadHalf { fd: read },
        LinkWriteHalf {
            stream: write,
            waiting: None,
        },
    ))
}

impl AsyncRead for LinkReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let want = unfilled.len();
            match guard.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    // Less than asked for: the socket is drained (as tokio's own sockets
                    // assume on Linux), so the next read waits for the next edge instead
                    // of costing a system call that says EAGAIN.
                    if n > 0 && n < want {
                        guard.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for LinkWriteHalf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            if let Some(waiting) = &self.waiting {
                let mut guard = ready!(waiting.poll_write_ready(cx))?;
                match guard.try_io(|fd| fd.get_ref().write(data)) {
                    Ok(result) => {
                        drop(guard);
                        if matches!(result, Ok(n) if n == data.len()) {
                            self.waiting = None;
                        }
                        return Poll::Ready(result);
                    }
                    Err(_would_block) => continue,
                }
            }
            match (&self.stream).write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let dup = self.stream.try_clone()?;
                    self.waiting = Some(crate::fd::register_unix(dup, Interest::WRITABLE)?);
                }
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.shutdown(std::net::Shutdown::Write))
    }
}

impl Drop for LinkWriteHalf {
    /// Like tokio's `OwnedWriteHalf`: the peer reads end-of-stream once we stop writing,
    /// even while our read half lives on.
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_cross_both_ways_and_a_close_reads_as_end_of_stream() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut ra, mut wa) = split(a).unwrap();
        let (mut rb, mut wb) = split(b).unwrap();
        wa.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        rb.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        wb.write_all(b"pong").await.unwrap();
        ra.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        // Dropping the write half alone is end-of-stream for the peer, as with tokio's
        // own halves; our read half still works.
        drop(wa);
        let mut rest = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(10), rb.read_to_end(&mut rest));
        assert_eq!(
            end.await.unwrap().unwrap(),
            0,
            "end-of-stream, nothing more"
        );
        wb.write_all(b"last").await.unwrap();
        ra.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"last");
    }

    #[tokio::test]
    async fn a_write_to_a_full_socket_waits_for_the_reader_and_loses_nothing() {
        let (a, b) = UnixStream::pair().unwrap();
        let (_ra, mut wa) = split(a).unwrap();
        let (mut rb, _wb) = split(b).unwrap();
        // Far more than a socketpair buffers: the writer must block and resume.
        let sent: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expect = sent.clone();
        let writer = tokio::spawn(async move {
            wa.write_all(&sent).await.unwrap();
            assert!(
                wa.waiting.is_none(),
                "the write registration is dropped after"
            );
        });
        let mut got = vec![0u8; expect.len()];
        tokio::time::timeout(Duration::from_secs(10), rb.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert!(got == expect, "every byte arrives, in order");
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .unwrap()
            .unwrap();
    }
}
