//! Where the bytes handed to tungstenite stand in the client's frame stream: between two
//! messages, or inside a frame header, a frame's payload or a fragmented message.
//!
//! The driver keeps tungstenite's state (its read buffer and protocol state, ~1 KiB) only
//! while a connection is in the middle of something; between messages a fresh state reads
//! the next frame exactly as the old one would. This type tells the two apart by following
//! the frame headers as the bytes go by (the payload is skipped by count, never scanned).

/// The longest frame header: 2 bytes, an 8-byte extended length and a 4-byte mask.
const MAX_HEADER: usize = 14;

/// The position in the client's frame stream after the bytes seen so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Boundary {
    /// The current frame header's bytes seen so far (only the first `header_len` count).
    header: [u8; MAX_HEADER],
    /// How many bytes of the current frame header have been seen (0: none, at a frame's
    /// start or inside its payload).
    header_len: u8,
    /// Whether a data message was started without its final frame (continuation frames,
    /// possibly with control frames between them, follow).
    fragmented: bool,
    /// Payload bytes of the current frame not seen yet.
    payload_left: u64,
}

impl Boundary {
    /// Follows `bytes`, the next bytes of the client's frame stream.
    pub fn saw(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            let at = usize::from(self.header_len);
            self.header[at] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if let Some(len) = self.header_done() {
                self.payload_left = len;
                self.header_len = 0;
            }
        }
    }

    /// Whether every frame seen is complete and no fragmented message is open: the next
    /// byte starts a new message.
    pub fn between_messages(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0 && !self.fragmented
    }

    /// The payload length once the header is complete (and the message state it sets).
    fn header_done(&mut self) -> Option<u64> {
        let seen = &self.header[..usize::from(self.header_len)];
        if seen.len() < 2 {
            return None;
        }
        let (extended, len7) = match seen[1] & 0x7F {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        let masked = seen[1] & 0x80 != 0;
        let full = 2 + extended + if masked { 4 } else { 0 };
        if seen.len() < full {
            return None;
        }
        let len = len7.unwrap_or_else(|| {
            seen[2..2 + extended]
                .iter()
                .fold(0u64, |n, b| (n << 8) | u64::from(*b))
        });
        let fin = seen[0] & 0x80 != 0;
        if seen[0] & 0x08 == 0 {
            // A data or continuation frame: the message is open until its final frame.
            self.fragmented = !fin;
        }
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::Boundary;

    /// A masked client frame: `first` is the FIN/opcode byte.
    fn frame(first: u8, payload_len: usize) -> Vec<u8> {
        let mut f = vec![first];
        match payload_len {
            0..=125 => f.push(0x80 | payload_len as u8),
            126..=0xFFFF => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b'x', payload_len));
        f
    }

    /// Feeds `bytes` one at a time, answering `between_messages` after each.
    fn bytewise(bytes: &[u8]) -> Vec<bool> {
        let mut b = Boundary::default();
        bytes
            .iter()
            .map(|x| {
                b.saw(std::slice::from_ref(x));
                b.between_messages()
            })
            .collect()
    }

    #[test]
    fn whole_frames_of_every_length_end_on_a_boundary() {
        for len in [0, 1, 125, 126, 1000, 0xFFFF, 0x10000] {
            let f = frame(0x81, len);
            let mut b = Boundary::default();
            b.saw(&f[..f.len() - 1]);
            assert!(!b.between_messages(), "len {len}: one byte short");
            b.saw(&f[f.len() - 1..]);
            assert!(b.between_messages(), "len {len}: whole frame");
        }
    }

    #[test]
    fn only_the_last_byte_of_a_frame_fed_bytewise_is_a_boundary() {
        let f = frame(0x82, 300);
        let seen = bytewise(&f);
        assert!(seen[..f.len() - 1].iter().all(|b| !b));
        assert!(seen[f.len() - 1]);
    }

    #[test]
    fn a_fragmented_message_stays_open_across_pings_until_its_final_frame() {
        let mut b = Boundary::default();
        b.saw(&frame(0x01, 10)); // text, not final
        assert!(!b.between_messages());
        b.saw(&frame(0x89, 4)); // ping in between
        assert!(!b.between_messages());
        b.saw(&frame(0x00, 10)); // continuation, not final
        assert!(!b.between_messages());
        b.saw(&frame(0x80, 3)); // final continuation
        assert!(b.between_messages());
    }

    #[test]
    fn control_frames_alone_end_on_a_boundary() {
        let mut b = Boundary::default();
        b.saw(&frame(0x89, 0));
        assert!(b.between_messages());
        b.saw(&frame(0x8A, 125));
        assert!(b.between_messages());
    }

    #[test]
    fn several_frames_in_one_read_and_split_headers_are_followed() {
        let mut all = frame(0x81, 5);
        all.extend(frame(0x82, 200));
        all.extend(frame(0x81, 70_000));
        for cut in [1, 2, 3, 7, 10, 12, 13, 220, all.len() - 1] {
            let mut b = Boundary::default();
            b.saw(&all[..cut]);
            assert!(!b.between_messages(), "cut at {cut}");
            b.saw(&all[cut..]);
            assert!(b.between_messages(), "cut at {cut}");
        }
    }

    #[test]
    fn unmasked_headers_are_measured_without_a_mask() {
        let mut b = Boundary::default();
        b.saw(&[0x81, 2, b'h']);
        assert!(!b.between_messages());
        b.saw(b"i");
        assert!(b.between_messages());
    }
}
