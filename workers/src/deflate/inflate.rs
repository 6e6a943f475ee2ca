//! Reading compressed frames (RFC 7692 §6.2) in front of tungstenite, which refuses RSV1:
//! raw frames go in, and come out with every compressed message inflated into plain
//! frames (RSV1 clear, payload re-masked with a zero key) that tungstenite reads as usual,
//! so its checks (UTF-8, control frames, fragmentation, sizes) still apply to what the
//! client meant.
//!
//! Frames of plain messages and control frames pass through byte for byte. A compressed
//! message comes out as one fragment per chunk of input (a frame of any size arrives in
//! pieces, so inflating never waits for a whole frame), ending with a FIN fragment.
//! The inflated size is counted as it is produced: past `limit` the reader fails at
//! once, having inflated at most `limit` plus one chunk (a decompression bomb gets
//! nothing). No window outlives a message (`client_no_context_takeover`): the inflate
//! context is taken from a per-thread pool when a compressed message starts and reset
//! and given back when it ends, so an idle connection holds none.

use std::cell::RefCell;

use flate2::{Decompress, FlushDecompress, Status};

use super::compress::TAIL;

/// Most inflated bytes produced (and emitted as one fragment) per step.
const STEP: usize = 16 * 1024;

/// Inflate contexts kept per thread for the next compressed messages.
const POOL: usize = 4;

thread_local! {
    /// Reset inflate contexts, ready for the next compressed message on any connection.
    static CONTEXTS: RefCell<Vec<Decompress>> = const { RefCell::new(Vec::new()) };
    /// Inflated bytes of the current step (one per thread: a step finishes before the
    /// next starts).
    static STEP_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Why the client's frames cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// A compressed message inflates past the size limit (close with 1009).
    #[error("a compressed message inflates past the size limit")]
    TooBig,
    /// Bad compressed data, RSV1 where it may not be, or a broken frame (close with 1002).
    #[error("invalid compressed frame")]
    Protocol,
}

/// The message being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    /// Between messages.
    None,
    /// A fragmented plain message (its continuations pass through).
    Plain,
    /// A compressed message.
    Deflated {
        /// Text or binary, for its first inflated fragment.
        opcode: u8,
        /// Whether a fragment of it was emitted already (later ones are continuations).
        started: bool,
        /// Inflated bytes so far, checked against the limit.
        inflated: usize,
    },
}

/// One connection's compressed-frame reader (boxed, only on connections that negotiated
/// the extension).
#[derive(Debug)]
pub struct Inflate {
    /// The largest message, inflated.
    limit: usize,
    /// The header of the frame being read, as it arrives.
    head: [u8; 14],
    /// Header bytes received so far; the header is complete when it equals `head_len`.
    have: u8,
    /// The header's full length, once its first two bytes are known (0 before).
    head_len: u8,
    /// Payload bytes of the current frame still to come (once its header is complete).
    remaining: u64,
    /// Whether the current frame's payload goes through the inflater.
    deflated: bool,
    /// Whether the current frame ends its message.
    fin: bool,
    /// Whether the client masked the current frame (clients must; the bench reads
    /// unmasked server frames with the same reader).
    masked: bool,
    /// The current frame's masking key.
    mask: [u8; 4],
    /// Payload bytes of the current frame unmasked so far (the key's phase).
    offset: u64,
    /// The message being read.
    msg: Msg,
    /// The inflate context while a compressed message is being read.
    ctx: Option<Decompress>,
    /// The first failure; every later read fails the same way.
    failed: Option<InflateError>,
}

impl Inflate {
    /// A reader for messages of at most `limit` bytes (inflated).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            head: [0; 14],
            have: 0,
            head_len: 0,
            remaining: 0,
            deflated: false,
            fin: false,
            masked: false,
            mask: [0; 4],
            offset: 0,
            msg: Msg::None,
            ctx: None,
            failed: None,
        }
    }

    /// Whether the reader is between frames and messages with nothing carried over, so a
    /// new one would do the same from here.
    pub fn at_rest(&self) -> bool {
        self.have == 0 && self.msg == Msg::None && self.failed.is_none()
    }

    /// The first failure, if reading failed.
    pub fn failed(&self) -> Option<InflateError> {
        self.failed
    }

    /// Transcodes raw frame bytes, appending what tungstenite should read to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), InflateError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = (|| {
            while !input.is_empty() || self.frame_done() {
                if self.frame_done() {
                    self.end_frame(out)?;
                    continue;
                }
                if self.head_len == 0 || self.have < self.head_len {
                    let used = self.take_header(input, out)?;
                    input = &input[used..];
                    continue;
                }
                let n = input
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                let (chunk, rest) = input.split_at(n);
                if self.deflated {
                    self.inflate(chunk, out)?;
                } else {
                    out.extend_from_slice(chunk);
                }
                self.remaining -= n as u64;
                input = rest;
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.failed = Some(e);
            self.ctx = None;
        }
        result
    }

    /// Whether the current frame's header and payload are all in.
    fn frame_done(&self) -> bool {
        self.head_len != 0 && self.have == self.head_len && self.remaining == 0
    }

    /// Collects header bytes; once the header is complete, decides what the frame is.
    fn take_header(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, InflateError> {
        let mut used = 0;
        while self.head_len == 0 || self.have < self.head_len {
            let Some(&b) = input.get(used) else {
                return Ok(used);
            };
            self.head[usize::from(self.have)] = b;
            self.have += 1;
            used += 1;
            if self.have == 2 {
                let ext = match self.head[1] & 0x7F {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                self.head_len = 2 + ext + if self.head[1] & 0x80 != 0 { 4 } else { 0 };
            }
        }
        self.start_frame(out)?;
        Ok(used)
    }

    /// A complete header: passes a plain frame's header on, or starts inflating.
    fn start_frame(&mut self, out: &mut Vec<u8>) -> Result<(), InflateError> {
        let h = &self.head[..usize::from(self.head_len)];
        let rsv1 = h[0] & 0x40 != 0;
        let opcode = h[0] & 0x0F;
        self.fin = h[0] & 0x80 != 0;
        self.masked = h[1] & 0x80 != 0;
        let len_end = match h[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        self.remaining = match len_end {
            4 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            10 => u64::from_be_bytes(h[2..10].try_into().map_err(|_| InflateError::Protocol)?),
            _ => u64::from(h[1] & 0x7F),
        };
        if self.masked {
            self.mask.copy_from_slice(&h[len_end..len_end + 4]);
        }
        self.offset = 0;
        self.deflated = match (opcode, self.msg) {
            // Control frames: never compressed, fine between fragments.
            (8.., _) if rsv1 => return Err(InflateError::Protocol),
            (8.., _) => false,
            (1 | 2, Msg::Deflated { .. }) => return Err(InflateError::Protocol),
            (1 | 2, _) if rsv1 => {
                self.msg = Msg::Deflated {
                    opcode,
                    started: false,
                    inflated: 0,
                };
                self.ctx = Some(take_context());
                true
            }
            (1 | 2, _) => {
                self.msg = if self.fin { Msg::None } else { Msg::Plain };
                false
            }
            (0, _) if rsv1 => return Err(InflateError::Protocol),
            (0, Msg::Deflated { .. }) => true,
            (0, _) => {
                if self.fin {
                    self.msg = Msg::None;
                }
                false
            }
            // Reserved opcodes: tungstenite refuses them.
            _ => false,
        };
        if self.deflated && h[0] & 0x30 != 0 {
            // RSV2/RSV3 mean nothing here either.
            return Err(InflateError::Protocol);
        }
        if !self.deflated {
            out.extend_from_slice(h);
        }
        Ok(())
    }

    /// The current frame is complete; a compressed message's last frame ends it.
    fn end_frame(&mut self, out: &mut Vec<u8>) -> Result<(), InflateError> {
        self.have = 0;
        self.head_len = 0;
        if self.deflated && self.fin {
            self.inflate_raw(&TAIL, FlushDecompress::Sync, out)?;
            self.emit(out, true);
            self.msg = Msg::None;
            if let Some(ctx) = self.ctx.take() {
                give_back(ctx);
            }
        }
        self.deflated = false;
        Ok(())
    }

    /// Unmasks a piece of compressed payload and inflates it.
    fn inflate(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), InflateError> {
        let mut buf = [0u8; 1024];
        for piece in chunk.chunks(buf.len()) {
            let plain = &mut buf[..piece.len()];
            for (i, (d, s)) in plain.iter_mut().zip(piece).enumerate() {
                let k = if self.masked {
                    self.mask[((self.offset + i as u64) % 4) as usize]
                } else {
                    0
                };
                *d = s ^ k;
            }
            self.offset += piece.len() as u64;
            self.inflate_raw(plain, FlushDecompress::None, out)?;
        }
        Ok(())
    }

    /// Inflates unmasked compressed bytes, emitting each step's output as a fragment.
    fn inflate_raw(
        &mut self,
        mut data: &[u8],
        flush: FlushDecompress,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        let Msg::Deflated { inflated, .. } = self.msg else {
            return Err(InflateError::Protocol);
        };
        let ctx = self.ctx.as_mut().ok_or(InflateError::Protocol)?;
        let mut total = inflated;
        STEP_BUF.with(|step| {
            let mut step = step.borrow_mut();
            if step.len() < STEP {
                step.resize(STEP, 0);
            }
            loop {
                // One byte past the limit is enough to know the message is too big.
                let room = STEP.min(self.limit.saturating_add(1) - total);
                let (before_in, before_out) = (ctx.total_in(), ctx.total_out());
                let status = ctx
                    .decompress(data, &mut step[..room], flush)
                    .map_err(|_| InflateError::Protocol)?;
                let used = (ctx.total_in() - before_in) as usize;
                let made = (ctx.total_out() - before_out) as usize;
                data = &data[used.min(data.len())..];
                total += made;
                if total > self.limit {
                    return Err(InflateError::TooBig);
                }
                if made > 0 {
                    self.msg = with_inflated(self.msg, total);
                    emit_fragment(&mut self.msg, self.masked, &step[..made], false, out);
                }
                let full = made == room;
                if status == Status::StreamEnd || (data.is_empty() && !full) {
                    return Ok(());
                }
                if made == 0 && used == 0 {
                    // No progress with input left and room to write: the data is bad.
                    return Err(InflateError::Protocol);
                }
            }
        })
    }

    /// Emits the message's final (FIN) fragment, empty.
    fn emit(&mut self, out: &mut Vec<u8>, fin: bool) {
        emit_fragment(&mut self.msg, self.masked, &[], fin, out);
    }
}

/// `msg` with its inflated count set to `total`.
fn with_inflated(msg: Msg, total: usize) -> Msg {
    match msg {
        Msg::Deflated {
            opcode, started, ..
        } => Msg::Deflated {
            opcode,
            started,
            inflated: total,
        },
        other => other,
    }
}

/// Appends one plain fragment of the compressed message `msg` to `out`.
fn emit_fragment(msg: &mut Msg, masked: bool, data: &[u8], fin: bool, out: &mut Vec<u8>) {
    let Msg::Deflated {
        opcode,
        started,
        inflated,
    } = *msg
    else {
        return;
    };
    let first = if started { 0 } else { opcode };
    *msg = Msg::Deflated {
        opcode,
        started: true,
        inflated,
    };
    push_header(out, if fin { 0x80 } else { 0 } | first, masked, data.len());
    if masked {
        // A zero key: the payload reads as it is.
        out.extend_from_slice(&[0; 4]);
    }
    out.extend_from_slice(data);
}

/// Appends a frame header: the first byte `b0` (FIN, RSV, opcode), the mask bit when
/// `masked` (the key is the caller's to append), and the payload length `len` in its
/// shortest form (RFC 6455 §5.2).
pub fn push_header(out: &mut Vec<u8>, b0: u8, masked: bool, len: usize) {
    out.push(b0);
    let mask_bit = if masked { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// An inflate context from the thread's pool, or a new one.
fn take_context() -> Decompress {
    CONTEXTS
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Decompress::new(false))
}

/// Resets a context and keeps it for the next message (up to [`POOL`]).
fn give_back(mut ctx: Decompress) {
    ctx.reset(false);
    CONTEXTS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL {
            p.push(ctx);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::{Seen, drive};

    const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        let len = payload.len();
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 65_535 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(&KEY);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
        f
    }

    /// Raw deflate of `data` with the sync tail removed (what a client sends).
    fn deflated(data: &[u8]) -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    }

    /// `input` transcoded in pieces of `step` bytes.
    fn transcode(input: &[u8], step: usize, limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut r = Inflate::new(limit);
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            r.feed(piece, &mut out)?;
        }
        Ok(out)
    }

    fn json() -> String {
        r#"{"type":"publish","room":"lobby","data":{"user":"ann","text":"hi there, all"}}"#
            .repeat(40)
    }

    #[test]
    fn a_compressed_message_reads_as_the_plain_one_however_it_is_split() {
        let text = json();
        let input = frame(0xC1, &deflated(text.as_bytes()));
        for step in [1, 3, 100, 4096, input.len()] {
            let out = transcode(&input, step, 1 << 20).unwrap();
            let d = drive(&out, 1 << 20, 1 << 20);
            assert_eq!(d.seen[0], Seen::Text(text.clone()), "step {step}");
        }
    }

    #[test]
    fn fragments_with_a_ping_between_and_messages_in_a_row() {
        let text = json();
        let z = deflated(text.as_bytes());
        let (a, b) = z.split_at(z.len() / 2);
        let mut input = frame(0x41, a); // text, RSV1, not FIN
        input.extend(frame(0x89, b"p")); // ping
        input.extend(frame(0x80, b)); // continuation, FIN
        input.extend(frame(
            0xC2,
            &deflated(b"\x00\x01\x02\x00\x01\x02\x00\x01\x02"),
        ));
        input.extend(frame(0x81, b"plain"));
        let d = drive(&transcode(&input, 7, 1 << 20).unwrap(), 1 << 20, 1 << 20);
        assert_eq!(
            d.seen[..4],
            [
                Seen::Control,
                Seen::Text(text),
                Seen::Binary(b"\x00\x01\x02\x00\x01\x02\x00\x01\x02".to_vec()),
                Seen::Text("plain".into())
            ]
        );
    }

    #[test]
    fn plain_frames_pass_byte_for_byte() {
        let mut input = frame(0x01, b"hel");
        input.extend(frame(0x89, b""));
        input.extend(frame(0x80, &[b'l'; 300]));
        input.extend(frame(0x82, &[7; 70_000]));
        assert_eq!(transcode(&input, 5, 1 << 20).unwrap(), input);
    }

    #[test]
    fn a_bomb_fails_after_inflating_at_most_the_limit() {
        let zeros = vec![0u8; 16 << 20];
        let z = deflated(&zeros);
        assert!(z.len() < 100 << 10, "{}", z.len());
        let mut r = Inflate::new(64 << 10);
        let mut out = Vec::new();
        let input = frame(0xC2, &z);
        assert_eq!(r.feed(&input, &mut out), Err(InflateError::TooBig));
        assert!(out.len() < (64 << 10) + STEP + 64, "{}", out.len());
        assert_eq!(
            r.feed(b"\x81", &mut out),
            Err(InflateError::TooBig),
            "sticky"
        );
    }

    #[test]
    fn rsv1_where_it_cannot_be_and_bad_data_are_protocol_errors() {
        let z = deflated(b"hello hello hello");
        for bad in [
            frame(0xC9, b""),                              // RSV1 on a ping
            [frame(0x01, b"a"), frame(0xC0, &z)].concat(), // RSV1 on a continuation
            [frame(0x41, &z), frame(0x81, b"x")].concat(), // new message mid-message
            frame(0xE1, &z),                               // RSV1 + RSV2
            frame(0xC1, &[0xFF; 32]),                      // not deflate data
        ] {
            assert_eq!(transcode(&bad, 1000, 1 << 20), Err(InflateError::Protocol));
        }
    }

    #[test]
    fn the_context_goes_back_to_the_pool_when_the_message_ends() {
        let mut r = Inflate::new(1 << 20);
        let mut out = Vec::new();
        let input = frame(0xC1, &deflated(b"abcabcabc"));
        r.feed(&input[..3], &mut out).unwrap();
        assert!(!r.at_rest(), "mid-frame");
        r.feed(&input[3..], &mut out).unwrap();
        assert!(r.at_rest());
        assert!(r.ctx.is_none(), "an idle reader holds no inflate context");
        assert!(CONTEXTS.with(|p| !p.borrow().is_empty()));
    }
}
