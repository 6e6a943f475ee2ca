//! Command-line options of `wsfleet bench` (clap) and their validation: every mode's flags,
//! the options all modes share, and the checks that turn bad input into one clear error.

use std::time::Duration;

pub use super::args_api::ApiArgs;
pub use super::args_rooms::{JoinArgs, RoomsArgs};

/// Options of `wsfleet bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which load to generate.
    #[command(subcommand)]
    pub mode: Mode,
}

/// The load patterns.
#[derive(Debug, clap::Subcommand)]
pub enum Mode {
    /// Round-trip throughput: every connection keeps one message in flight on an echo endpoint.
    Echo(EchoArgs),
    /// Room fan-out: N subscribers in one room, one publisher; counts loss, dups, order, latency.
    Fanout(FanoutArgs),
    /// Idle capacity: open N connections, join a room, hold them; connect time and server memory.
    Idle(IdleArgs),
    /// Connection churn: connect, join, close at a fixed attempt rate; classifies failures.
    Churn(ChurnArgs),
    /// Reconnect storm: subscribers in rooms with history, a publisher, a reload mid-publish
    /// (control socket); everyone re-joins with `since`; counts loss, dups, recovery time.
    Storm(StormArgs),
    /// Many small rooms, every member publishing; counts loss, dups, per-sender order, latency.
    Rooms(RoomsArgs),
    /// One big room: N clients join the same room; joins/s, then server memory per connection.
    Join(JoinArgs),
    /// Server API publishes: HTTP requests to `--api` into one room with N WebSocket
    /// subscribers; requests/s, publishes/s, request latency, deliveries/s.
    Api(ApiArgs),
}

/// Options every mode shares.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Where to connect: `ws://HOST:PORT/PATH` (the path is sent as given, e.g. /echo or /ws).
    #[arg(long)]
    pub url: String,
    /// More servers of the same service (other hosts sharing rooms through Redis), repeatable:
    /// connection number i goes to the (i mod N)-th of `--url` and these, so a mode's first
    /// connection (the fan-out publisher) is on `--url` and the rest are spread.
    #[arg(long, value_name = "URL")]
    pub also_url: Vec<String>,
    /// Spread connection opening evenly over this many seconds (0 = as fast as the bounded
    /// connect concurrency allows).
    #[arg(long, default_value_t = 0.0, value_name = "S")]
    pub ramp: f64,
    /// Print one machine-readable JSON line on stdout at the end (the human summary then goes
    /// to stderr).
    #[arg(long)]
    pub json: bool,
    /// A server process to measure (CPU time and RSS of it and all its descendants); repeatable.
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pid: Vec<u32>,
    /// Spread connections over source addresses 127.0.0.1..127.0.0.N (only when the target is a
    /// 127.x address), so one source address's ephemeral ports do not run out.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub sources: u32,
    /// TCP connect + WebSocket handshake timeout, and how long to wait for `joined`, in seconds.
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    pub timeout: f64,
    /// Tokio worker threads of the load generator (1 = a single-threaded runtime).
    #[arg(long, default_value_t = 2, value_name = "T")]
    pub threads: usize,
    /// At most this many connections being opened (connect + handshake + join) at once.
    #[arg(long, default_value_t = 256, value_name = "K")]
    pub connect_concurrency: usize,
    /// Offer permessage-deflate on every connection (as browsers do) and read compressed
    /// messages; the report says how many connections negotiated it.
    #[arg(long)]
    pub deflate: bool,
}

/// `wsfleet bench echo`.
#[derive(Debug, Clone, clap::Args)]
pub struct EchoArgs {
    /// Options shared by all modes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Number of connections, each with exactly one message in flight.
    #[arg(long, default_value_t = 50)]
    pub conns: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// What the payload is: `pad` (one repeated byte, binary) or `json` (chat-like JSON
    /// of about `--size` bytes, as text).
    #[arg(long, value_enum, default_value_t = Payload::Pad)]
    pub payload: Payload,
    /// Seconds of measurement, after all connections are open.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
}

/// What fills a publish's `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Payload {
    /// One repeated character.
    Pad,
    /// Realistic chat-like JSON.
    Json,
}

/// `wsfleet bench fanout`.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Options shared by all modes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Number of subscriber connections in the room.
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    /// The room to publish into.
    #[arg(long, default_value = "bench")]
    pub room: String,
    /// Publishes per second, or `max` (as fast as delivery keeps up, with `--window` in flight).
    #[arg(long, default_value = "20", value_parser = parse_rate)]
    pub rate: Rate,
    /// Approximate bytes of each publish's `data` (sequence number, timestamp and padding).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// What fills `data` up to `--size`: `pad` (one repeated character) or `json` (chat-like
    /// JSON: repeated keys, words, ids and numbers, as compression would meet in use).
    #[arg(long, value_enum, default_value_t = Payload::Pad)]
    pub payload: Payload,
    /// Seconds of publishing, after all subscribers joined.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// With `--rate max`: messages in flight, i.e. published but not yet received by every
    /// subscriber.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Seconds to wait after the last publish for stragglers before counting the rest lost.
    #[arg(long, default_value_t = 2.0)]
    pub grace: f64,
}

/// `wsfleet bench idle`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Options shared by all modes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Number of connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// Seconds to hold them once all are open.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// The room every connection joins; `{i}` in it is replaced by the connection's index (one
    /// room per connection avoids N² presence messages).
    #[arg(long, default_value = "idle")]
    pub room: String,
}

/// `wsfleet bench churn`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChurnArgs {
    /// Options shared by all modes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connection attempts per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds during which attempts are started.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// The room every attempt joins; `{i}` is replaced by the attempt's index.
    #[arg(long, default_value = "churn")]
    pub room: String,
    /// Present a connection token: each attempt mints an HS256 JWT (`sub` = `bench-<i>`,
    /// valid for an hour) with the secret in this file and passes it as `?token=`, to
    /// measure the handshake's cost with a token (serve with `--auth` and the same key).
    #[arg(long, value_name = "FILE")]
    pub token_secret_file: Option<std::path::PathBuf>,
}

/// `wsfleet bench storm`.
#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    /// Options shared by all modes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The fleet's control socket (the reload is requested there).
    #[arg(long, value_name = "PATH")]
    pub control: std::path::PathBuf,
    /// Number of subscriber connections.
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    /// Number of rooms; subscriber i joins room i mod R.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Room names are this prefix and the room's number.
    #[arg(long, default_value = "storm:")]
    pub prefix: String,
    /// Publishes per second (round-robin over the rooms).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of publishing before the reload.
    #[arg(long, default_value_t = 1.0)]
    pub before: f64,
    /// Seconds of publishing after the reload finished.
    #[arg(long, default_value_t = 1.0)]
    pub after: f64,
    /// Seconds a subscriber waits for its room's last message before counting the rest lost.
    #[arg(long, default_value_t = 5.0)]
    pub grace: f64,
}

/// The fan-out publish rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// This many publishes per second.
    PerSec(f64),
    /// As fast as delivery keeps up, bounded by the window.
    Max,
}

/// Parses `--rate`: a positive number or `max`.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::PerSec(r)),
        _ => Err(format!("expected a positive number or `max`, got {s:?}")),
    }
}

/// Why the options cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgError {
    /// A duration-like flag is negative, zero where it must not be, or not a number.
    #[error("--{flag} must be a finite number of seconds {bound}, got {value}")]
    BadSeconds {
        /// The flag's name.
        flag: &'static str,
        /// What it must be.
        bound: &'static str,
        /// What was given.
        value: f64,
    },
    /// A count is out of range.
    #[error("--{flag} must be between {min} and {max}, got {value}")]
    OutOfRange {
        /// The flag's name.
        flag: &'static str,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
        /// What was given.
        value: u64,
    },
    /// A room name the server would reject.
    #[error("--room {room:?}: {why}")]
    BadRoom {
        /// The name given.
        room: String,
        /// The rule it breaks.
        why: String,
    },
    /// The URL is not `ws://HOST:PORT/PATH`.
    #[error("--url {url:?}: {why}")]
    BadUrl {
        /// What was given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Largest message the tool sends (the server's own default limit is 64 KiB).
pub const MAX_SIZE: usize = 16 << 20;

pub(super) fn seconds(
    flag: &'static str,
    value: f64,
    allow_zero: bool,
) -> Result<Duration, ArgError> {
    let ok =
        value.is_finite() && value <= 86_400.0 && (value > 0.0 || (allow_zero && value == 0.0));
    if !ok {
        let bound = if allow_zero {
            ">= 0 and <= 86400"
        } else {
            "> 0 and <= 86400"
        };
        return Err(ArgError::BadSeconds { flag, bound, value });
    }
    Ok(Duration::from_secs_f64(value))
}

pub(super) fn range(
    flag: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), ArgError> {
    if value < min || value > max {
        return Err(ArgError::OutOfRange {
            flag,
            min: min as u64,
            max: max as u64,
            value: value as u64,
        });
    }
    Ok(())
}

/// Checks a room name the way the server does (room names with `{i}` are checked with `0`).
pub fn check_room(room: &str) -> Result<(), ArgError> {
    wsfleet_worker::protocol::validate_room(&room.replace("{i}", "0")).map_err(|refusal| {
        ArgError::BadRoom {
            room: room.to_owned(),
            why: refusal.message.into_owned(),
        }
    })
}

/// Refuses a room name with `{i}` where the mode has no per-connection rooms; `why` says so.
pub fn one_room(room: &str, why: &str) -> Result<(), ArgError> {
    if room.contains("{i}") {
        return Err(ArgError::BadRoom {
            room: room.to_owned(),
            why: why.into(),
        });
    }
    Ok(())
}

/// Checks a per-second rate flag (`--rate` of churn and storm): above 0, at most 100,000.
fn attempts_rate(rate: f64) -> Result<(), ArgError> {
    if rate.is_finite() && rate > 0.0 && rate <= 100_000.0 {
        return Ok(());
    }
    Err(ArgError::OutOfRange {
        flag: "rate",
        min: 1,
        max: 100_000,
        value: rate.max(0.0) as u64,
    })
}

impl CommonArgs {
    /// Validates the shared options.
    pub fn validate(&self) -> Result<(), ArgError> {
        seconds("ramp", self.ramp, true)?;
        seconds("timeout", self.timeout, false)?;
        range("sources", self.sources as usize, 1, 254)?;
        range("threads", self.threads, 1, 64)?;
        range("connect-concurrency", self.connect_concurrency, 1, 100_000)?;
        Ok(())
    }

    /// The connect/handshake/join timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }

    /// The ramp.
    pub fn ramp(&self) -> Duration {
        Duration::from_secs_f64(self.ramp)
    }
}

impl Mode {
    /// The shared options of whichever mode this is.
    pub fn common(&self) -> &CommonArgs {
        match self {
            Mode::Echo(a) => &a.common,
            Mode::Fanout(a) => &a.common,
            Mode::Idle(a) => &a.common,
            Mode::Churn(a) => &a.common,
            Mode::Storm(a) => &a.common,
            Mode::Rooms(a) => &a.common,
            Mode::Join(a) => &a.common,
            Mode::Api(a) => &a.common,
        }
    }

    /// Validates every option of the chosen mode.
    pub fn validate(&self) -> Result<(), ArgError> {
        self.common().validate()?;
        match self {
            Mode::Echo(a) => {
                range("conns", a.conns, 1, 1_000_000)?;
                range("size", a.size, 1, MAX_SIZE)?;
                seconds("duration", a.duration, false)?;
            }
            Mode::Fanout(a) => {
                range("subs", a.subs, 1, 1_000_000)?;
                range("size", a.size, 1, MAX_SIZE)?;
                range("window", a.window, 1, 1 << 20)?;
                seconds("duration", a.duration, false)?;
                seconds("grace", a.grace, true)?;
                check_room(&a.room)?;
                one_room(
                    &a.room,
                    "fanout publishes into one room, so `{i}` has no meaning here",
                )?;
            }
            Mode::Idle(a) => {
                range("conns", a.conns, 1, 1_000_000)?;
                seconds("hold", a.hold, true)?;
                check_room(&a.room)?;
            }
            Mode::Churn(a) => {
                attempts_rate(a.rate)?;
                seconds("duration", a.duration, false)?;
                check_room(&a.room)?;
            }
            Mode::Storm(a) => {
                range("subs", a.subs, 1, 1_000_000)?;
                range("rooms", a.rooms, 1, 100_000)?;
                attempts_rate(a.rate)?;
                seconds("before", a.before, true)?;
                seconds("after", a.after, true)?;
                seconds("grace", a.grace, true)?;
                check_room(&format!("{}{}", a.prefix, a.rooms))?;
            }
            Mode::Rooms(a) => a.validate()?,
            Mode::Join(a) => a.validate()?,
            Mode::Api(a) => a.validate()?,
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        b: BenchArgs,
    }

    /// Parses and validates a `bench` command line (without the program name).
    pub(in crate::bench) fn parse(args: &[&str]) -> Result<Mode, String> {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        let t = T::try_parse_from(v).map_err(|e| e.to_string())?;
        t.b.mode.validate().map_err(|e| e.to_string())?;
        Ok(t.b.mode)
    }

    #[test]
    fn defaults() {
        let Mode::Fanout(f) = parse(&["fanout", "--url", "ws://127.0.0.1:1/ws"]).unwrap() else {
            panic!("not fanout")
        };
        assert_eq!(f.subs, 1000);
        assert_eq!(f.rate, Rate::PerSec(20.0));
        assert_eq!(f.window, 32);
        assert_eq!(f.room, "bench");
        assert_eq!(f.common.sources, 8);
        let Mode::Echo(e) = parse(&["echo", "--url", "ws://h:1/echo"]).unwrap() else {
            panic!()
        };
        assert_eq!((e.conns, e.size, e.duration), (50, 64, 10.0));
    }

    #[test]
    fn rate_max_and_bad() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("MAX"), Ok(Rate::Max));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("nan").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn rejects_bad_values() {
        let u = "ws://127.0.0.1:1/x";
        assert!(
            parse(&["echo", "--url", u, "--conns", "0"])
                .unwrap_err()
                .contains("--conns")
        );
        assert!(
            parse(&["echo", "--url", u, "--duration=-1"])
                .unwrap_err()
                .contains("--duration")
        );
        assert!(parse(&["echo", "--url", u, "--duration", "inf"]).is_err());
        assert!(
            parse(&["echo", "--url", u, "--ramp", "nan"])
                .unwrap_err()
                .contains("--ramp")
        );
        assert!(parse(&["echo", "--url", u, "--sources", "0"]).is_err());
        assert!(parse(&["echo", "--url", u, "--sources", "300"]).is_err());
        assert!(
            parse(&["fanout", "--url", u, "--room", ""])
                .unwrap_err()
                .contains("--room")
        );
        assert!(parse(&["idle", "--url", u, "--room", "a\nb"]).is_err());
        assert!(parse(&["churn", "--url", u, "--rate", "0"]).is_err());
        assert!(parse(&["echo"]).is_err(), "--url is required");
        assert!(parse(&["idle", "--url", u, "--hold", "0"]).is_ok());
        assert!(parse(&["idle", "--url", u, "--room", "r{i}"]).is_ok());
    }
}
