//! Target: the WebSocket frame reader and driver (tungstenite behind `conn::Driver`), fed
//! a client's bytes through `wsfleet_worker::fuzzing::drive`, with and without the
//! permessage-deflate reader in front.

use proptest::prelude::*;
use wsfleet_worker::fuzzing::{Seen, drive, drive_with};

use crate::config;

/// Largest message the driver accepts in these runs.
const MAX: usize = 1024;
/// The write-queue limit in these runs.
const OUTBOX: usize = 4096;

/// A client message: opcode and payload.
#[derive(Debug, Clone)]
enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        "\\PC{0,40}".prop_map(Msg::Text),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Msg::Binary),
        proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Msg::Ping),
    ]
}

/// One masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// `msg` as frames (text and binary split in two fragments when `split`).
fn encode(msg: &Msg, mask: [u8; 4], split: bool) -> Vec<u8> {
    let (opcode, payload) = match msg {
        Msg::Text(t) => (1, t.as_bytes().to_vec()),
        Msg::Binary(b) => (2, b.clone()),
        Msg::Ping(p) => return frame(true, 9, p, mask),
    };
    if !split {
        return frame(true, opcode, &payload, mask);
    }
    let half = payload.len() / 2;
    let mut out = frame(false, opcode, &payload[..half], mask);
    out.extend(frame(true, 0, &payload[half..], mask));
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_end_in_one_known_way_with_and_without_the_inflater(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        for inflate in [false, true] {
            let run = drive_with(&bytes, MAX, OUTBOX, inflate);
            let (last, before) = run.seen.split_last().unwrap();
            prop_assert!(matches!(
                last,
                Seen::Ended | Seen::ClientClose | Seen::Violation(1002 | 1007 | 1009) | Seen::ServerClose(1013)
            ), "{last:?}");
            prop_assert!(before.iter().all(|s| matches!(s, Seen::Text(_) | Seen::Binary(_) | Seen::Control)));
            prop_assert!(run.most_queued <= OUTBOX, "queued {}", run.most_queued);
        }
    }

    #[test]
    fn valid_frames_arrive_whole_and_in_order(
        msgs in proptest::collection::vec((msg(), any::<[u8; 4]>(), any::<bool>()), 0..12),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = Vec::new();
        for (m, mask, split) in &msgs {
            bytes.extend(encode(m, *mask, *split));
        }
        let run = drive(&bytes, MAX, OUTBOX);
        let expected: Vec<Seen> = msgs
            .iter()
            .map(|(m, _, _)| match m {
                Msg::Text(t) => Seen::Text(t.clone()),
                Msg::Binary(b) => Seen::Binary(b.clone()),
                Msg::Ping(_) => Seen::Control,
            })
            .chain([Seen::Ended])
            .collect();
        prop_assert_eq!(run.seen, expected);
        // Cut anywhere: whole messages before the cut, then the end, never a panic.
        let cut = cut.index(bytes.len() + 1);
        let run = drive(&bytes[..cut], MAX, OUTBOX);
        prop_assert_eq!(run.seen.last(), Some(&Seen::Ended));
    }

    #[test]
    fn a_message_over_the_cap_is_closed_with_1009(extra in 1usize..2048, mask in any::<[u8; 4]>()) {
        let bytes = frame(true, 2, &vec![7u8; MAX + extra], mask);
        let run = drive(&bytes, MAX, OUTBOX);
        prop_assert_eq!(run.seen, vec![Seen::Violation(1009)]);
    }

    #[test]
    fn invalid_utf8_text_is_closed_with_1007(mask in any::<[u8; 4]>(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut payload = vec![0xC3, 0x28];
        payload.extend(tail);
        let run = drive(&frame(true, 1, &payload, mask), MAX, OUTBOX);
        prop_assert_eq!(run.seen, vec![Seen::Violation(1007)]);
    }

    #[test]
    fn plain_and_compressed_messages_read_the_same_with_the_inflater(
        msgs in proptest::collection::vec((msg(), any::<[u8; 4]>(), any::<bool>(), any::<bool>()), 0..12),
    ) {
        let mut plain = Vec::new();
        let mut mixed = Vec::new();
        for (m, mask, split, compress) in &msgs {
            plain.extend(encode(m, *mask, *split));
            mixed.extend(match m {
                Msg::Ping(_) => encode(m, *mask, *split),
                _ if !*compress => encode(m, *mask, *split),
                Msg::Text(t) => compressed(1, t.as_bytes(), *mask, *split),
                Msg::Binary(b) => compressed(2, b, *mask, *split),
            });
        }
        let without = drive(&plain, MAX, OUTBOX);
        prop_assert_eq!(&drive_with(&plain, MAX, OUTBOX, true).seen, &without.seen);
        prop_assert_eq!(&drive_with(&mixed, MAX, OUTBOX, true).seen, &without.seen);
    }
}

/// A compressed message (RSV1 on its first frame), in two frames when `split`.
fn compressed(opcode: u8, payload: &[u8], mask: [u8; 4], split: bool) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut z = Vec::with_capacity(payload.len() * 2 + 64);
    c.compress_vec(payload, &mut z, flate2::FlushCompress::Sync)
        .unwrap();
    z.truncate(z.len() - 4);
    let mut out = if split {
        let half = z.len() / 2;
        let mut f = frame(false, opcode, &z[..half], mask);
        f.extend(frame(true, 0, &z[half..], mask));
        f
    } else {
        frame(true, opcode, &z, mask)
    };
    out[0] |= 0x40;
    out
}
