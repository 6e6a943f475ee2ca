//! Server→client WebSocket frames (RFC 6455 §5.2): unmasked, so the encoded bytes are the
//! same for every recipient and a fan-out encodes a message once per worker.

use bytes::Bytes;

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const PING: u8 = 0x9;

/// Encodes one complete (FIN) data or control frame.
fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = Vec::with_capacity(len + 10);
    out.push(FIN | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A text frame.
pub fn text(payload: &str) -> Bytes {
    encode(TEXT, payload.as_bytes())
}

/// A binary frame.
pub fn binary(payload: &[u8]) -> Bytes {
    encode(BINARY, payload)
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
            let text_frame = text(std::str::from_utf8(&payload).unwrap());
            assert_eq!(
                &text_frame[..],
                &reference(OpCode::Data(Data::Text), &payload)[..],
                "len {len}"
            );
            assert_eq!(
                &binary(&payload)[..],
                &reference(OpCode::Data(Data::Binary), &payload)[..]
            );
        }
    }

    #[test]
    fn ping_is_two_bytes() {
        assert_eq!(&ping()[..], &[0x89, 0x00]);
    }
}
