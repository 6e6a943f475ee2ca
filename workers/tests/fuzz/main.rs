//! Property ("fuzz") tests of the worker crate's parsers, on stable Rust with `proptest`.
//!
//! Each target is one module: arbitrary bytes must give a typed error and never a panic,
//! and arbitrary values must survive a round trip. `cargo test` runs every property with
//! proptest's default 256 cases (a few seconds); `scripts/fuzz.sh` runs the same binary
//! with `PROPTEST_CASES` raised, for as long as `FUZZ_SECONDS` says.
//!
//! # Adding a target
//! Add `mod <target>;` below and a file with a `proptest! { #![proptest_config(config())] … }`
//! block; value generators shared between targets live in `strategies`.
#![allow(missing_docs)]

mod client_request;
mod ipc_codec;
mod ipc_framing;
mod strategies;
mod ws_driver;

use proptest::test_runner::Config;

/// Cases come from `PROPTEST_CASES` (proptest's own variable, default 256); failures are
/// not persisted to files in the tree, the failing input is printed instead.
pub fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs a future that never waits (in-memory readers and writers) to completion.
pub fn ready<F: std::future::Future>(f: F) -> F::Output {
    use futures_util::FutureExt;
    f.now_or_never()
        .expect("an in-memory read or write never waits")
}
