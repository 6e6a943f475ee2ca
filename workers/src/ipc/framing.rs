//! Length-prefixed frames on a byte stream: a little-endian `u32` length, then the payload.
//!
//! The length is checked against [`MAX_FRAME_BYTES`] before anything is allocated, so a
//! corrupt or hostile peer cannot make the reader reserve gigabytes. Writes are batched:
//! callers queue any number of messages and flush once.

use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{self, CodecError};
use super::queue::{Level, Weighed};

/// The largest payload either side accepts. The master caps client messages 64 KiB
/// below this, so a publish of the largest allowed message always fits.
pub const MAX_FRAME_BYTES: usize = codec::MAX_PAYLOAD_BYTES;

/// Why the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The socket failed.
    #[error("IPC link I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer announced a frame larger than [`MAX_FRAME_BYTES`].
    #[error("IPC frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte cap; closing the link")]
    TooLarge(usize),
    /// A payload did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Reads whole frames from a stream.
pub struct FrameReader<R> {
    /// The buffered read half of the link.
    inner: tokio::io::BufReader<R>,
    /// Reused payload buffer, so steady traffic does not allocate per frame.
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps the read half of a link.
    pub fn new(inner: R) -> Self {
        Self {
            inner: tokio::io::BufReader::with_capacity(64 * 1024, inner),
            buf: Vec::new(),
        }
    }

    /// Whether a whole frame is already buffered, so [`next`](Self::next) will not wait.
    pub fn has_buffered_frame(&self) -> bool {
        self.buffered_len().is_some()
    }

    /// The payload length of the next frame when all of it is already buffered.
    fn buffered_len(&self) -> Option<usize> {
        let buf = self.inner.buffer();
        let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
        (buf.len() - 4 >= len).then_some(len)
    }

    /// The next message, or `None` when the peer closed the link cleanly between frames.
    /// Not cancel-safe: call it from a task that does nothing else.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, LinkError> {
        if let Some(len) = self.buffered_len() {
            // The whole frame is in the read buffer (the usual case: one read brings a
            // batch): decode it in place rather than copying it out first.
            if len > MAX_FRAME_BYTES {
                return Err(LinkError::TooLarge(len));
            }
            let msg = codec::decode(&self.inner.buffer()[4..4 + len]);
            self.inner.consume(4 + len);
            return Ok(Some(msg?));
        }
        let mut len = [0u8; 4];
        match self.inner.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(LinkError::TooLarge(len));
        }
        self.buf.clear();
        self.buf.resize(len, 0);
        self.inner.read_exact(&mut self.buf).await?;
        let msg = codec::decode(&self.buf)?;
        if self.buf.capacity() > 1024 * 1024 {
            self.buf = Vec::new();
        }
        Ok(Some(msg))
    }
}

/// Queues frames in memory and writes them with as few syscalls as possible.
pub struct FrameWriter<W> {
    /// The write half of the link.
    inner: W,
    /// Encoded frames waiting for the next flush.
    buf: Vec<u8>,
    /// Frames in `buf`.
    queued: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Wraps the write half of a link.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(8 * 1024),
            queued: 0,
        }
    }

    /// Encodes `msg` into the batch; nothing is written until [`flush`](Self::flush).
    pub fn queue<T: Serialize>(&mut self, msg: &T) -> Result<(), LinkError> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        codec::encode_into(msg, &mut self.buf)?;
        let len = self.buf.len() - start - 4;
        if len > MAX_FRAME_BYTES {
            self.buf.truncate(start);
            return Err(LinkError::TooLarge(len));
        }
        self.buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        self.queued += 1;
        Ok(())
    }

    /// Bytes waiting in the batch.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Writes every queued frame; returns how many frames went out.
    pub async fn flush(&mut self) -> Result<usize, LinkError> {
        if self.buf.is_empty() {
            return Ok(0);
        }
        self.inner.write_all(&self.buf).await?;
        self.inner.flush().await?;
        self.buf.clear();
        if self.buf.capacity() > 4 * 1024 * 1024 {
            self.buf = Vec::with_capacity(8 * 1024);
        }
        Ok(std::mem::take(&mut self.queued))
    }

    /// Queues and flushes one message.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), LinkError> {
        self.queue(msg)?;
        self.flush().await.map(|_| ())
    }
}

/// Pumps every message from `rx` into `writer`, batching whatever is already queued (up to
/// about `batch_bytes`) into one write; after each write `level` loses what it carried and
/// `sent` is told how many frames went out. Returns when the channel closes, or with the
/// error that broke the link.
pub async fn pump<T: Serialize + Weighed, W: AsyncWrite + Unpin>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
    mut writer: FrameWriter<W>,
    batch_bytes: usize,
    level: &Level,
    sent: impl Fn(u64),
) -> Result<(), LinkError> {
    while let Some(msg) = rx.recv().await {
        let mut weight = msg.weight() as u64;
        writer.queue(&msg)?;
        drop(msg);
        while writer.pending_bytes() < batch_bytes {
            match rx.try_recv() {
                Ok(msg) => {
                    weight += msg.weight() as u64;
                    writer.queue(&msg)?;
                }
                Err(_) => break,
            }
        }
        let n = {
            // Not ready at once: the socket is full, the peer is not taking data.
            let mut flush = std::pin::pin!(writer.flush());
            let n = match futures_util::poll!(flush.as_mut()) {
                std::task::Poll::Ready(n) => n,
                std::task::Poll::Pending => {
                    level.set_blocked(true);
                    let n = flush.await;
                    level.set_blocked(false);
                    n
                }
            };
            n?
        };
        level.written(n as u64, weight);
        sent(n as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::messages::{ToMaster, ToWorker};

    #[tokio::test]
    async fn batches_round_trip_in_order() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = FrameWriter::new(a);
        for i in 0..100u64 {
            w.queue(&ToWorker::CountersRequest { id: i }).unwrap();
        }
        assert_eq!(w.flush().await.unwrap(), 100);
        drop(w);
        let mut r = FrameReader::new(b);
        for i in 0..100u64 {
            let m: ToWorker = r.next().await.unwrap().unwrap();
            assert_eq!(m, ToWorker::CountersRequest { id: i });
        }
        assert!(r.next::<ToWorker>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_frame_cut_across_reads_follows_frames_decoded_in_the_buffer() {
        let mut w = FrameWriter::new(Vec::new());
        for i in 0..3u64 {
            w.queue(&ToWorker::CountersRequest { id: i }).unwrap();
        }
        w.queue(&ToWorker::Broadcast {
            frame: "y".repeat(300),
        })
        .unwrap();
        let bytes = std::mem::take(&mut w.buf);
        let (mut a, b) = tokio::io::duplex(1 << 16);
        // The three small frames and the head of the big one arrive in one read.
        let cut = bytes.len() - 100;
        a.write_all(&bytes[..cut]).await.unwrap();
        let mut r = FrameReader::new(b);
        for i in 0..3u64 {
            assert!(r.has_buffered_frame() || i == 0);
            let m: ToWorker = r.next().await.unwrap().unwrap();
            assert_eq!(m, ToWorker::CountersRequest { id: i });
        }
        assert!(!r.has_buffered_frame(), "the last frame is not all here");
        a.write_all(&bytes[cut..]).await.unwrap();
        let m: ToWorker = r.next().await.unwrap().unwrap();
        assert_eq!(
            m,
            ToWorker::Broadcast {
                frame: "y".repeat(300)
            }
        );
    }

    #[tokio::test]
    async fn the_pump_lowers_the_level_and_says_when_the_peer_is_not_reading() {
        let (a, mut b) = tokio::io::duplex(1024);
        let (tx, rx, level) = crate::ipc::queue::channel::<ToWorker>(0);
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                let pumped = level.clone();
                let pump = tokio::task::spawn_local(async move {
                    pump(rx, FrameWriter::new(a), 64 * 1024, &pumped, |_| {}).await
                });
                let frame = "x".repeat(10_000);
                tx.send(ToWorker::Broadcast { frame });
                tokio::task::yield_now().await;
                assert!(
                    level.blocked(),
                    "10 KB do not fit in a 1 KB pipe nobody reads"
                );
                assert_eq!(level.messages(), 1);
                let mut r = FrameReader::new(&mut b);
                let m: ToWorker = r.next().await.unwrap().unwrap();
                assert!(matches!(m, ToWorker::Broadcast { .. }));
                drop(tx);
                pump.await.unwrap().unwrap();
                assert!(!level.blocked());
                assert_eq!((level.messages(), level.bytes()), (0, 0));
            })
            .await;
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_allocating() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        let mut r = FrameReader::new(b);
        assert!(matches!(
            r.next::<ToMaster>().await,
            Err(LinkError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&10u32.to_le_bytes()).await.unwrap();
        a.write_all(&[1, 2]).await.unwrap();
        drop(a);
        let mut r = FrameReader::new(b);
        assert!(r.next::<ToMaster>().await.is_err());
    }
}
