//! Target: the IPC payload codec (`ipc::codec`), both message directions.

use proptest::prelude::*;
use wsfleet_worker::ipc::codec::{self, CodecError};
use wsfleet_worker::ipc::{ToMaster, ToWorker};

use crate::config;
use crate::strategies::{to_master, to_worker};

fn encode<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_into(msg, &mut out).expect("every IPC message encodes");
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_decode_to_a_value_or_a_typed_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        // Reaching the end without a panic is the property; whatever decodes must be a
        // value the codec can write and read back unchanged.
        if let Ok(msg) = codec::decode::<ToMaster>(&bytes) {
            prop_assert_eq!(codec::decode::<ToMaster>(&encode(&msg)).unwrap(), msg);
        }
        if let Ok(msg) = codec::decode::<ToWorker>(&bytes) {
            prop_assert_eq!(codec::decode::<ToWorker>(&encode(&msg)).unwrap(), msg);
        }
    }

    #[test]
    fn every_to_master_round_trips(msg in to_master()) {
        prop_assert_eq!(codec::decode::<ToMaster>(&encode(&msg)).unwrap(), msg);
    }

    #[test]
    fn every_to_worker_round_trips(msg in to_worker()) {
        prop_assert_eq!(codec::decode::<ToWorker>(&encode(&msg)).unwrap(), msg);
    }

    #[test]
    fn a_cut_or_padded_message_is_an_error(msg in to_master(), cut in any::<prop::sample::Index>(), pad in proptest::collection::vec(any::<u8>(), 1..16)) {
        let bytes = encode(&msg);
        let short = &bytes[..cut.index(bytes.len())];
        prop_assert!(matches!(codec::decode::<ToMaster>(short), Err(CodecError::Decode(_))));
        let mut long = bytes.clone();
        long.extend_from_slice(&pad);
        let trailing = codec::decode::<ToMaster>(&long);
        prop_assert!(matches!(trailing, Err(CodecError::Trailing(n)) if n == pad.len()), "{:?}", trailing);
    }
}
