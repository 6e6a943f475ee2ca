//! Server→client WebSocket frames (RFC 6455 §5.2): unmasked, so the encoded bytes are the
//! same for every recipient and a fan-out encodes a message once per worker.

use bytes::Bytes;

const FIN: u8 = 0x80;
/// RSV1: the message is compressed (permessage-deflate, RFC 7692 §6).
const RSV1: u8 = 0x40;
/// The text opcode.
pub(super) const TEXT: u8 = 0x1;
/// The binary opcode.
pub(super) const BINARY: u8 = 0x2;
const PING: u8 = 0x9;

/// Encodes one complete (FIN) data or control frame, with RSV1 when `compressed`.
pub(super) fn encode(opcode: u8, compressed: bool, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 10);
    let b0 = FIN | if compressed { RSV1 } else { 0 } | opcode;
    crate::deflate::push_header(&mut out, b0, false, payload.len());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// An empty ping.
pub fn ping() -> Bytes {
    Bytes::from_static(&[FIN | PING, 0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    fn reference(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Frame::message(payload.to_vec(), opcode, true)
            .format(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn matches_tungstenite_for_every_length_class() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 200_000] {
            let payload = vec![b'a'; len];
            let text_frame = encode(TEXT, false, &payload);
            assert_eq!(
                &text_frame[..],
                &reference(OpCode::Data(Data::Text), &payload)[..],
                "len {len}"
            );
            assert_eq!(
                &encode(BINARY, false, &payload)[..],
                &reference(OpCode::Data(Data::Binary), &payload)[..]
            );
        }
    }

    #[test]
    fn a_compressed_frame_sets_rsv1() {
        let f = encode(TEXT, true, b"abc");
        assert_eq!(&f[..2], &[0xC1, 3]);
        assert_eq!(&f[2..], b"abc");
    }

    #[test]
    fn ping_is_two_bytes() {
        assert_eq!(&ping()[..], &[0x89, 0x00]);
    }
}
