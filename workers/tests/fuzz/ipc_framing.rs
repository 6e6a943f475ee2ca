//! Target: the length-prefixed frame reader and writer (`ipc::framing`).

use proptest::prelude::*;
use wsfleet_worker::ipc::framing::LinkError;
use wsfleet_worker::ipc::{FrameReader, FrameWriter, MAX_FRAME_BYTES, ToMaster, ToWorker};

use crate::strategies::{to_master, to_worker};
use crate::{config, ready};

/// Reads frames until the stream ends or fails; a successful read must make progress, so
/// this ends for any input.
fn read_all<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> (Vec<T>, Option<LinkError>) {
    let mut reader = FrameReader::new(bytes);
    let mut got = Vec::new();
    loop {
        match ready(reader.next::<T>()) {
            Ok(Some(msg)) => got.push(msg),
            Ok(None) => return (got, None),
            Err(e) => return (got, Some(e)),
        }
    }
}

fn frames<T: serde::Serialize>(msgs: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = FrameWriter::new(&mut out);
    for msg in msgs {
        writer.queue(msg).unwrap();
    }
    assert_eq!(ready(writer.flush()).unwrap(), msgs.len());
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_give_frames_or_a_typed_error(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let (_, err) = read_all::<ToMaster>(&bytes);
        if let Some(LinkError::TooLarge(n)) = err {
            prop_assert!(n > MAX_FRAME_BYTES);
        }
        let _ = read_all::<ToWorker>(&bytes);
    }

    #[test]
    fn a_huge_length_is_refused_before_reading_a_payload(len in (MAX_FRAME_BYTES as u32 + 1)..=u32::MAX, tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(&tail);
        let (got, err) = read_all::<ToWorker>(&bytes);
        prop_assert!(got.is_empty());
        prop_assert!(matches!(err, Some(LinkError::TooLarge(n)) if n == len as usize));
    }

    #[test]
    fn batches_of_messages_round_trip_in_order(to_m in proptest::collection::vec(to_master(), 0..12), to_w in proptest::collection::vec(to_worker(), 0..12)) {
        let (got, err) = read_all::<ToMaster>(&frames(&to_m));
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(got, to_m);
        let (got, err) = read_all::<ToWorker>(&frames(&to_w));
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(got, to_w);
    }

    #[test]
    fn a_stream_cut_inside_a_payload_is_an_error(msgs in proptest::collection::vec(to_master(), 1..8), cut in any::<prop::sample::Index>()) {
        let bytes = frames(&msgs);
        // Frame boundaries and the payload ranges between them.
        let mut ends = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            ends.push((at + 4, at + 4 + len));
            at += 4 + len;
        }
        let cut = cut.index(bytes.len());
        let (got, err) = read_all::<ToMaster>(&bytes[..cut]);
        let whole = ends.iter().filter(|&&(_, end)| end <= cut).count();
        prop_assert_eq!(&got[..], &msgs[..whole]);
        if ends.iter().any(|&(_, end)| end == cut) || cut == 0 {
            prop_assert!(err.is_none(), "{:?}", err);
        } else if ends.iter().any(|&(start, end)| start <= cut && cut < end) {
            // (A cut inside the 4-byte length prefix reads as a clean end today; that is
            // `FrameReader::next` treating any EOF while reading the length as a close.)
            prop_assert!(err.is_some(), "a payload cut at {} of {} bytes read as a clean end", cut, bytes.len());
        }
    }
}
