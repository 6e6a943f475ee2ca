//! A server→client message encoded for every recipient at most twice: the plain frame,
//! and (on first need, once) the permessage-deflate frame for connections that negotiated
//! the extension. A fan-out builds one and hands each member the variant it reads.

use std::cell::OnceCell;

use bytes::Bytes;

use super::frame;
use crate::deflate;

/// One message, plain and (lazily) compressed.
pub struct Outgoing {
    /// The plain frame (every client reads it).
    plain: Bytes,
    /// Where the payload starts in `plain` (the header's length).
    payload_at: usize,
    /// The frame's opcode, for the compressed variant's header.
    opcode: u8,
    /// The compressed frame for the full window (what every browser gets), once computed:
    /// `None` when the message is under the threshold or does not shrink.
    deflated: OnceCell<Option<Bytes>>,
}

impl Outgoing {
    /// A text message.
    pub fn text(payload: &str) -> Self {
        Self::new(frame::TEXT, payload.as_bytes())
    }

    /// A binary message.
    pub fn binary(payload: &[u8]) -> Self {
        Self::new(frame::BINARY, payload)
    }

    fn new(opcode: u8, payload: &[u8]) -> Self {
        let plain = frame::encode(opcode, false, payload);
        Self {
            payload_at: plain.len() - payload.len(),
            plain,
            opcode,
            deflated: OnceCell::new(),
        }
    }

    /// The plain frame.
    pub fn plain(&self) -> &Bytes {
        &self.plain
    }

    /// The compressed frame with a window of `window_bits`, if the payload has at least
    /// `threshold` bytes and shrinks (threshold 0: always, even when it grows). The
    /// full-window frame is compressed on the first call only; a smaller window (a client
    /// that asked for one) is compressed for each call.
    pub fn deflated(&self, threshold: usize, window_bits: u8) -> Option<Bytes> {
        let make = || {
            let payload = &self.plain[self.payload_at..];
            if payload.len() < threshold {
                return None;
            }
            let small = deflate::compress(payload, window_bits, threshold == 0)?;
            Some(frame::encode(self.opcode, true, &small))
        };
        if window_bits < deflate::compress::MAX_WINDOW_BITS {
            return make();
        }
        self.deflated.get_or_init(make).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_messages_stay_plain_and_large_ones_shrink_once() {
        let small = Outgoing::text("{\"type\":\"ack\"}");
        assert_eq!(small.deflated(64, 15), None);
        let always = Outgoing::text("{\"type\":\"ack\"}");
        assert_eq!(
            always.deflated(0, 15).unwrap()[0],
            0xC1,
            "threshold 0: always"
        );
        assert_eq!(&small.plain()[..2], &[0x81, 14]);
        let text = "{\"type\":\"message\",\"room\":\"lobby\"}".repeat(20);
        let big = Outgoing::text(&text);
        let d = big.deflated(64, 15).unwrap();
        assert_eq!(d[0], 0xC1, "FIN, RSV1, text");
        assert!(d.len() < big.plain().len() / 3);
        assert_eq!(
            big.deflated(64, 15).unwrap().as_ptr(),
            d.as_ptr(),
            "computed once"
        );
        assert_ne!(
            big.deflated(64, 9).unwrap().as_ptr(),
            d.as_ptr(),
            "a small window: its own"
        );
    }
}
