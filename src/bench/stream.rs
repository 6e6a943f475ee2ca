//! The load tester's socket: counts the bytes it reads off the wire and, with `--deflate`,
//! inflates the server's compressed (RSV1) messages for tungstenite, which refuses them,
//! with the server's own reader (`wsfleet_worker::deflate::Inflate`), and compresses the
//! data messages tungstenite writes (as a browser does) with the server's compressor.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use wsfleet_worker::deflate::Inflate;

/// Bytes read off every connection's socket since the process started (handshakes
/// included), for bytes on the wire per delivery.
pub static WIRE_BYTES_IN: AtomicU64 = AtomicU64::new(0);

/// The `Sec-WebSocket-Extensions` offer sent with `--deflate`: what browsers send, plus
/// `server_no_context_takeover`, which the reader needs (it inflates every message on its
/// own) and which wsfleet always answers anyway; a peer that would otherwise keep its
/// window between messages (Node's `ws`) is asked not to.
pub const OFFER: &str = "permessage-deflate; server_no_context_takeover; client_max_window_bits";

/// What `--deflate` adds to a connection.
struct Inflating {
    /// Transcodes the frames after the handshake.
    inflate: Inflate,
    /// How much of the handshake's `\r\n\r\n` was seen (4: the frames have started).
    head_end: u8,
    /// Transcoded bytes not yet read.
    pending: Vec<u8>,
    /// How much of `pending` was read.
    at: usize,
}

/// Smallest payload the tester sends compressed (the server's default threshold).
const COMPRESS_FROM: usize = 128;

/// What `--deflate` adds on the write side.
#[derive(Default)]
struct Deflating {
    /// How much of the handshake request's `\r\n\r\n` was seen (4: frames follow).
    head_end: u8,
    /// Bytes of the frame tungstenite is writing, until it is complete.
    frame: Vec<u8>,
    /// Frames ready for the socket.
    out: Vec<u8>,
    /// How much of `out` was written.
    at: usize,
}

/// A client TCP stream as tungstenite reads and writes it.
pub struct BenchStream {
    /// The socket.
    tcp: TcpStream,
    /// With `--deflate`.
    inflating: Option<Box<Inflating>>,
    /// With `--deflate`.
    deflating: Option<Box<Deflating>>,
}

impl BenchStream {
    /// Wraps `tcp`; with `deflate`, messages of up to `max_message` bytes are inflated.
    pub fn new(tcp: TcpStream, deflate: bool, max_message: usize) -> Self {
        let inflating = deflate.then(|| {
            Box::new(Inflating {
                inflate: Inflate::new(max_message),
                head_end: 0,
                pending: Vec::new(),
                at: 0,
            })
        });
        let deflating = deflate.then(Box::default);
        Self {
            tcp,
            inflating,
            deflating,
        }
    }
}

impl Deflating {
    /// Takes what tungstenite wrote; each complete frame goes to `out`, a data message of
    /// at least [`COMPRESS_FROM`] bytes compressed (RSV1) when that is smaller.
    fn take(&mut self, bytes: &[u8]) {
        let head = head_bytes(&mut self.head_end, bytes);
        self.out.extend_from_slice(&bytes[..head]);
        self.frame.extend_from_slice(&bytes[head..]);
        while let Some((head, len)) = frame_len(&self.frame) {
            if self.frame.len() < head + len {
                return;
            }
            let rest = self.frame.split_off(head + len);
            let frame = std::mem::replace(&mut self.frame, rest);
            self.out
                .extend_from_slice(&compress_frame(&frame, head).unwrap_or(frame));
        }
    }
}

/// Header and payload length of the masked client frame at the start of `f`, once known.
fn frame_len(f: &[u8]) -> Option<(usize, usize)> {
    let (len, at) = match *f.get(1)? & 0x7F {
        126 => (usize::from(u16::from_be_bytes([*f.get(2)?, *f.get(3)?])), 4),
        127 => (
            usize::try_from(u64::from_be_bytes(f.get(2..10)?.try_into().ok()?)).ok()?,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let mask = if f[1] & 0x80 != 0 { 4 } else { 0 };
    Some((at + mask, len))
}

/// A whole masked data frame (`head` bytes of header) compressed, if it is a complete
/// message worth it.
fn compress_frame(f: &[u8], head: usize) -> Option<Vec<u8>> {
    let opcode = f[0] & 0x0F;
    if f[0] & 0xF0 != 0x80 || !matches!(opcode, 1 | 2) || f[1] & 0x80 == 0 {
        return None;
    }
    let key: [u8; 4] = f[head - 4..head].try_into().ok()?;
    let plain: Vec<u8> = f[head..]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    if plain.len() < COMPRESS_FROM {
        return None;
    }
    let z = wsfleet_worker::deflate::compress(&plain, 15, false)?;
    let mut out = Vec::with_capacity(z.len() + 14);
    wsfleet_worker::deflate::push_header(&mut out, 0xC0 | opcode, true, z.len());
    out.extend_from_slice(&key);
    out.extend(z.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    Some(out)
}

impl BenchStream {
    /// Writes what the compressor left for the socket; ready once all of it is written.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(d) = self.deflating.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while d.at < d.out.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &d.out[d.at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            d.at += n;
        }
        d.out.clear();
        d.at = 0;
        Poll::Ready(Ok(()))
    }
}

impl Inflating {
    /// Passes the handshake response through and transcodes what follows it.
    fn take(&mut self, raw: &[u8]) -> io::Result<()> {
        let i = head_bytes(&mut self.head_end, raw);
        self.pending.extend_from_slice(&raw[..i]);
        self.inflate
            .feed(&raw[i..], &mut self.pending)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// How many bytes at the start of `bytes` still belong to the HTTP handshake, whose end
/// (`\r\n\r\n`) `seen` tracks across calls (4 once it has passed).
fn head_bytes(seen: &mut u8, bytes: &[u8]) -> usize {
    let mut i = 0;
    while *seen < 4 && i < bytes.len() {
        let want = b"\r\n\r\n"[usize::from(*seen)];
        *seen = match (bytes[i] == want, bytes[i] == b'\r') {
            (true, _) => *seen + 1,
            (false, true) => 1,
            _ => 0,
        };
        i += 1;
    }
    i
}

impl AsyncRead for BenchStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(inf) = this.inflating.as_mut() else {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
            WIRE_BYTES_IN.fetch_add((buf.filled().len() - before) as u64, Relaxed);
            return Poll::Ready(Ok(()));
        };
        loop {
            if inf.at < inf.pending.len() {
                let n = buf.remaining().min(inf.pending.len() - inf.at);
                buf.put_slice(&inf.pending[inf.at..inf.at + n]);
                inf.at += n;
                if inf.at == inf.pending.len() {
                    inf.pending.clear();
                    inf.at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut raw = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut raw);
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            WIRE_BYTES_IN.fetch_add(n as u64, Relaxed);
            inf.take(&raw[..n])?;
        }
    }
}

impl AsyncWrite for BenchStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.deflating.is_none() {
            return Pin::new(&mut this.tcp).poll_write(cx, buf);
        }
        ready!(this.poll_out(cx))?;
        if let Some(d) = this.deflating.as_mut() {
            d.take(buf);
        }
        // Taken whatever the socket does now: a write that would block is finished by
        // the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_out(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_data_frames_go_out_compressed_and_the_rest_as_written() {
        let key = [1u8, 2, 3, 4];
        let masked = |first: u8, p: &[u8]| {
            let mut f = vec![first, 0x80 | 126];
            f.extend_from_slice(&(p.len() as u16).to_be_bytes());
            f.extend_from_slice(&key);
            f.extend(p.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            f
        };
        let long = masked(0x81, &b"abcd".repeat(100));
        let ping = masked(0x89, &[7; 126][..125]);
        let mut d = Deflating::default();
        let request = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
        d.take(request);
        assert_eq!(d.out, request, "the handshake passes as written");
        d.out.clear();
        let both = [long.clone(), ping.clone()].concat();
        for piece in both.chunks(3) {
            d.take(piece);
        }
        assert_eq!(d.out[0], 0xC1, "FIN, RSV1, text");
        assert!(d.out.len() < long.len() / 4 + ping.len());
        assert!(d.out.ends_with(&ping), "control frames pass as written");
        // The server's reader gets the text back.
        let mut inf = Inflate::new(1 << 20);
        let mut plain = Vec::new();
        inf.feed(&d.out[..d.out.len() - ping.len()], &mut plain)
            .unwrap();
        assert!(plain.windows(8).any(|w| w == b"abcdabcd"));
    }

    #[test]
    fn the_handshake_passes_and_a_compressed_frame_after_it_is_inflated() {
        let mut inf = Inflating {
            inflate: Inflate::new(1 << 20),
            head_end: 0,
            pending: Vec::new(),
            at: 0,
        };
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        // "Hello" compressed (RFC 7692 §7.2.3.1), unmasked, FIN + RSV1 + text.
        let frame = [0xC1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut raw = head.to_vec();
        raw.extend_from_slice(&frame);
        for split in [1, 10, raw.len()] {
            inf.head_end = 0;
            inf.pending.clear();
            inf.inflate = Inflate::new(1 << 20);
            for piece in raw.chunks(split) {
                inf.take(piece).unwrap();
            }
            let (h, rest) = inf.pending.split_at(head.len());
            assert_eq!(h, head);
            // The inflated message, in as many fragments as pieces came in: text, then
            // continuations, the last one FIN.
            assert_eq!(rest[0] & 0x0F, 1);
            let (mut text, mut at, mut fin) = (Vec::new(), 0, false);
            while at < rest.len() {
                let len = usize::from(rest[at + 1]);
                fin = rest[at] & 0x80 != 0;
                text.extend_from_slice(&rest[at + 2..at + 2 + len]);
                at += 2 + len;
            }
            assert!(fin, "{split}");
            assert_eq!(text, b"Hello", "{split}");
        }
    }
}
