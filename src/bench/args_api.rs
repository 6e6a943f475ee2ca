//! Flags of `bench api` (issue 12): HTTP publishes through the master's server API into a
//! room with WebSocket subscribers, and their validation.

use std::path::PathBuf;

use super::args::{ArgError, CommonArgs, MAX_SIZE, check_room, one_room, range, seconds};

/// `wsfleet bench api`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Options shared by all modes (`--url` is where the subscribers connect).
    #[command(flatten)]
    pub common: CommonArgs,
    /// The server API's address, `HOST:PORT` (the `api=` field of the ready line).
    #[arg(long, value_name = "HOST:PORT")]
    pub api: String,
    /// File whose first line is the API key; without it, WSFLEET_API_KEY holds the key.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// WebSocket subscribers in the room (spread over the workers by the kernel).
    #[arg(long, default_value_t = 100)]
    pub subs: usize,
    /// HTTP connections publishing at once, each with one request in flight (keep-alive).
    #[arg(long, default_value_t = 4)]
    pub conns: usize,
    /// Publishes per request: 1 uses `publish`, more use `publish_batch`.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// The room.
    #[arg(long, default_value = "bench-api")]
    pub room: String,
    /// Approximate bytes of each publish's `data`.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seconds of publishing, after every subscriber joined.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait after the last publish for deliveries still on their way.
    #[arg(long, default_value_t = 2.0)]
    pub grace: f64,
}

impl ApiArgs {
    /// Checks the flags.
    pub fn validate(&self) -> Result<(), ArgError> {
        range("subs", self.subs, 0, 1_000_000)?;
        range("conns", self.conns, 1, 1024)?;
        range("batch", self.batch, 1, 1000)?;
        range("size", self.size, 1, MAX_SIZE)?;
        seconds("duration", self.duration, false)?;
        seconds("grace", self.grace, true)?;
        check_room(&self.room)?;
        one_room(
            &self.room,
            "api publishes into one room, so `{i}` has no meaning here",
        )
    }

    /// The API key: the first line of `--api-key-file`, else WSFLEET_API_KEY.
    pub fn key(&self) -> anyhow::Result<String> {
        let key = match &self.api_key_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read --api-key-file {}: {e}", path.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
            None => std::env::var(crate::config::API_KEY_ENV)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        };
        anyhow::ensure!(
            !key.is_empty(),
            "bench api needs the server's API key: --api-key-file FILE or {}",
            crate::config::API_KEY_ENV
        );
        Ok(key)
    }
}
