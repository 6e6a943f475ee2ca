//! permessage-deflate (RFC 7692), shared by every connection of a worker:
//!
//! - [`offer`]: negotiation; the answer always has `server_no_context_takeover` and
//!   `client_no_context_takeover`, so no connection keeps a window between messages.
//! - [`compress`]: the worker's one compressor, reset per message, so a message is
//!   compressed once and the same bytes go to every member that negotiated the extension.
//! - [`inflate`]: compressed client frames inflated in front of tungstenite (which refuses
//!   RSV1), the size limit applied to the inflated size as it grows; [`reader`] puts it
//!   between a socket and tungstenite.

pub mod compress;
pub mod inflate;
pub mod offer;
pub mod reader;

pub use compress::compress;
pub use inflate::{Inflate, InflateError, push_header};
pub use offer::{Agreed, negotiate};
pub use reader::Reader;
