//! The one place that knows the IPC payload encoding (bincode 2 with its serde bridge).
//!
//! bincode is kept behind these two functions because the crate is unmaintained and its
//! 3.0.0 release is a tombstone: should it have to go, only this file changes.

use serde::{Serialize, de::DeserializeOwned};

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be written (a bug: every IPC type is encodable).
    #[error("could not encode an IPC message: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a message of the expected type: a peer built from another version.
    #[error("could not decode an IPC message (is the peer from another wsfleet build?): {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The bytes decoded, but some were left over.
    #[error("IPC message has {0} trailing bytes (is the peer from another wsfleet build?)")]
    Trailing(usize),
}

/// The largest payload either side accepts (the frame cap): a length inside a payload
/// that claims more is refused before anything is allocated for it.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024 + 64 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        // Without a limit bincode allocates whatever a string's length prefix claims:
        // a corrupt frame of a few bytes aborted the process (found by workers/tests/fuzz).
        .with_limit::<MAX_PAYLOAD_BYTES>()
}

/// Appends the encoding of `value` to `out`, written in place: no scratch vector per
/// message (bincode's `encode_to_vec` starts empty and reallocates as it grows, then the
/// bytes were copied again; measured at ~10% of the master's CPU in the many-rooms bench).
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_writer(value, Append(out), config())?;
    Ok(())
}

/// bincode's output straight onto the end of a caller's buffer.
struct Append<'a>(
    /// The buffer the encoding is appended to.
    &'a mut Vec<u8>,
);

impl bincode::enc::write::Writer for Append<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Decodes one whole value from `bytes`; leftover bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::messages::{Hello, ToMaster, ToWorker};

    #[test]
    fn round_trips_a_hello() {
        let msg = ToMaster::Hello(Hello {
            slot: 3,
            pid: 42,
            generation: 7,
            version: 1,
        });
        let mut buf = Vec::new();
        encode_into(&msg, &mut buf).unwrap();
        let back: ToMaster = decode(&buf).unwrap();
        assert!(matches!(
            back,
            ToMaster::Hello(Hello {
                slot: 3,
                pid: 42,
                generation: 7,
                version: 1
            })
        ));
    }

    #[test]
    fn a_huge_claimed_length_is_an_error_not_an_abort() {
        // A Broadcast whose frame's length prefix claims 2^63 bytes.
        let mut bytes = Vec::new();
        encode_into(
            &ToWorker::Broadcast {
                frame: String::new(),
            },
            &mut bytes,
        )
        .unwrap();
        assert_eq!(bytes.len(), 2, "variant, then the empty string's length");
        bytes.pop();
        bytes.extend_from_slice(&[253, 0, 0, 0, 0, 0, 0, 0, 0x80]);
        assert!(matches!(
            decode::<ToWorker>(&bytes),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<ToMaster>(&[0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode::<ToMaster>(&[]).is_err());
    }
}
