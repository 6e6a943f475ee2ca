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

/// Smallest LZ77 window we compress with, in bits (zlib's raw deflate cannot do 8).
pub const MIN_WINDOW_BITS: u8 = 9;

/// The largest window (32 KiB), the one shared frames use.
pub const MAX_WINDOW_BITS: u8 = 15;

thread_local! {
    /// One raw-deflate context per window size per worker thread, made on first use and
    /// reset per message (all but the full window serve only clients that asked for a
    /// smaller one).
    static COMPRESSORS: RefCell<[Option<Compress>; 7]> = const {
        RefCell::new([None, None, None, None, None, None, None])
    };
}

/// `payload` compressed for a permessage-deflate frame with a window of `window_bits`
/// (9 to 15), or `None` when that would not be smaller (the message then goes out plain) —
/// unless `always`, which keeps the compressed form even when it grew.
pub fn compress(payload: &[u8], window_bits: u8, always: bool) -> Option<Vec<u8>> {
    let bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    COMPRESSORS.with(|all| {
        let mut all = all.borrow_mut();
        let c = all[usize::from(bits - MIN_WINDOW_BITS)].get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(LEVEL), false, bits)
        });
        c.reset();
        // Room for the tail, and for a stored block's few bytes of growth when `always`:
        // the output only counts if it ends before the buffer does (a full buffer could
        // mean the flush is unfinished).
        let room = if always { payload.len() / 8 + 64 } else { 0 };
        let mut out = Vec::with_capacity(payload.len() + TAIL.len() + room);
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
        (always || out.len() < payload.len()).then_some(out)
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
        let small = compress(json.as_bytes(), 15, false).unwrap();
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
        let a = compress(&b"abcabcabcabcabcabcabcabc".repeat(10), 15, false).unwrap();
        let b = compress(&b"abcabcabcabcabcabcabcabc".repeat(10), 15, false).unwrap();
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
        assert_eq!(compress(&noise, 15, false), None);
        assert_eq!(compress(b"a", 15, false), None);
        let grown = compress(&noise, 15, true).unwrap();
        assert!(grown.len() > noise.len());
        assert_eq!(inflate(&grown), noise, "always: kept even though it grew");
        assert_eq!(inflate(&compress(b"a", 15, true).unwrap()), b"a");
    }

    #[test]
    fn a_small_window_inflates_like_the_full_one() {
        let text = "0123456789abcdef".repeat(100);
        for bits in [9, 12, 15] {
            let z = compress(text.as_bytes(), bits, false).unwrap();
            assert_eq!(inflate(&z), text.as_bytes(), "{bits} bits");
        }
    }
}
