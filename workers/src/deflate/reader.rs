//! A connection's byte source with compressed messages inflated: what tungstenite reads on
//! a connection that negotiated permessage-deflate.

use std::cell::RefCell;
use std::io;

use super::{Inflate, InflateError};

thread_local! {
    /// Transcoded bytes of the current read (one per thread; emptied before it returns).
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// [`Inflate`] plus what it produced beyond the reader's buffer.
#[derive(Debug)]
pub struct Reader {
    /// The frame transcoder.
    inflate: Inflate,
    /// Transcoded bytes not yet read (empty, without capacity, when idle).
    pending: Vec<u8>,
    /// How much of `pending` was read.
    at: usize,
}

impl Reader {
    /// A reader for messages of at most `limit` bytes, inflated.
    pub fn new(limit: usize) -> Self {
        Self {
            inflate: Inflate::new(limit),
            pending: Vec::new(),
            at: 0,
        }
    }

    /// Whether nothing is carried over to the next read: the connection may drop this
    /// reader and start a new one then (an idle connection keeps none).
    pub fn at_rest(&self) -> bool {
        self.at == self.pending.len() && self.inflate.at_rest()
    }

    /// The reason reads fail, once they do.
    pub fn failed(&self) -> Option<InflateError> {
        self.inflate.failed()
    }

    /// Takes bytes that arrived before the reader existed (right after the handshake).
    pub fn preload(&mut self, raw: &[u8]) {
        // A failure is kept by the transcoder: what came before it is still read first.
        let _ = self.inflate.feed(raw, &mut self.pending);
    }

    /// Fills `buf` with transcoded bytes, reading raw bytes with `raw` (into `buf`) when
    /// nothing is pending. `Ok(0)` only at the end of the stream.
    pub fn read(
        &mut self,
        buf: &mut [u8],
        mut raw: impl FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.at < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.at);
                buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
                self.at += n;
                if self.at == self.pending.len() {
                    self.pending = Vec::new();
                    self.at = 0;
                }
                return Ok(n);
            }
            if let Some(e) = self.failed() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            let n = raw(buf)?;
            if n == 0 {
                return Ok(0);
            }
            let given = OUT.with(|out| {
                let mut out = out.borrow_mut();
                out.clear();
                // A failure is kept by the transcoder and reported by the next call, after
                // what came before it.
                let _ = self.inflate.feed(&buf[..n], &mut out);
                let given = out.len().min(buf.len());
                buf[..given].copy_from_slice(&out[..given]);
                if given < out.len() {
                    self.pending = out[given..].to_vec();
                }
                if out.capacity() > 64 * 1024 {
                    // A large message passed: do not keep its buffer for the worker's life.
                    *out = Vec::new();
                }
                given
            });
            if given > 0 {
                return Ok(given);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::fuzzing::{Seen, drive_with};

    /// A masked client frame with a zero key (short payloads only).
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    }

    fn deflated(data: &[u8]) -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn the_driver_reads_compressed_messages_and_closes_a_bomb_with_1009() {
        let hello = deflated(b"hello hello hello hello");
        let bomb = deflated(&[b'x'; 100_000]);
        assert!(bomb.len() < 125);
        let mut input = frame(0xC1, &hello);
        input.extend(frame(0xC1, &bomb));
        let d = drive_with(&input, 64 * 1024, 1 << 20, true);
        assert_eq!(
            d.seen,
            [
                Seen::Text("hello hello hello hello".into()),
                Seen::Violation(1009)
            ]
        );
    }

    #[test]
    fn without_the_extension_rsv1_is_a_protocol_error() {
        let input = frame(0xC1, &deflated(b"hello hello hello hello"));
        let d = drive_with(&input, 64 * 1024, 1 << 20, false);
        assert_eq!(d.seen, [Seen::Violation(1002)]);
    }
}
