//! The worker's one compressor: a message is compressed once, whatever the number of
//! recipients, and the context is reset before every message (`server_no_context_takeover`)
//! so the same bytes are valid on every connection that negotiated the extension.

use std::cell::RefCell;

use flate2::{Compress, Compression, FlushCompress, Status};

/// zlib level: 6 (zlib's default) gave the same size as 9 on chat-like JSON at about half
/// the time; level 1 was a few points larger. A message is compressed once per worker, so
/// the level costs little next to the writes.
const LEVEL: u32 = 6;

/// The tail every sync-flushed deflate block ends with; RFC 7692 §7.2.1 drops it from the
/// frame and the reader appends it again.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

thread_local! {
    /// One raw-deflate context per worker thread, reset per message.
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::new(LEVEL), false));
}

/// `payload` compressed for a permessage-deflate frame, or `None` when that would not be
/// smaller (the message then goes out plain).
pub fn compress(payload: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        // Room for the tail: the output only counts if it ends before the buffer does
        // (a full buffer could mean the flush is unfinished).
        let mut out = Vec::with_capacity(payload.len() + TAIL.len());
        let status = c
            .compress_vec(payload, &mut out, FlushCompress::Sync)
            .ok()?;
        let done = status == Status::Ok
            && c.total_in() == payload.len() as u64
            && out.len() < out.capacity()
            && out.ends_with(&TAIL);
        if !done {
            return None;
        }
        out.truncate(out.len() - TAIL.len());
        (out.len() < payload.len()).then_some(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn inflate(data: &[u8]) -> Vec<u8> {
        let mut d = Decompress::new(false);
        let mut input = data.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn json_shrinks_and_inflates_back() {
        let json =
            r#"{"type":"message","room":"lobby","data":{"user":"ann","text":"hello there"}}"#
                .repeat(12);
        let small = compress(json.as_bytes()).unwrap();
        assert!(
            small.len() * 3 < json.len(),
            "{} of {}",
            small.len(),
            json.len()
        );
        assert_eq!(inflate(&small), json.as_bytes());
    }

    #[test]
    fn each_message_stands_alone() {
        let a = compress(&b"abcabcabcabcabcabcabcabc".repeat(10)).unwrap();
        let b = compress(&b"abcabcabcabcabcabcabcabc".repeat(10)).unwrap();
        assert_eq!(a, b, "no context carried over from the previous message");
    }

    #[test]
    fn incompressible_payloads_stay_plain() {
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert_eq!(compress(&noise), None);
        assert_eq!(compress(b"a"), None);
    }
}
