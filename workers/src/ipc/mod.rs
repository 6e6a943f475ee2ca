//! The link between the master and one worker: message types both sides share, the
//! bincode codec behind them, and the length-prefixed framing over a Unix stream.
//!
//! One definition serves both processes, so a field added here is seen by the master and
//! the worker at once; [`PROTOCOL_VERSION`] guards against a master and a worker built from
//! different sources (a binary replaced on disk between two reloads).

pub mod codec;
pub mod defaults;
pub mod framing;
pub mod latency;
pub mod messages;
pub mod queue;
pub mod socket;

pub use codec::CodecError;
pub use framing::{FrameReader, FrameWriter, MAX_FRAME_BYTES};
pub use latency::{LatencyHistogram, monotonic_ns};
pub use messages::{
    Hello, JoinAnswer, Limited, MemberEntry, PROTOCOL_VERSION, QueryAnswer, Target, ToMaster,
    ToWorker, WorkerCounters, WorkerQuery, WorkerSettings,
};
pub use queue::{Level, LinkTx, Weighed};
pub use socket::{LinkReadHalf, LinkWriteHalf};
