//! Flags of the two workloads issue 11 added: `bench rooms` (many small rooms, every member
//! publishing) and `bench join` (N clients joining one room), and their validation.

use super::args::{
    ArgError, CommonArgs, MAX_SIZE, Rate, check_room, one_room, parse_rate, range, seconds,
};

/// `wsfleet bench rooms`.
#[derive(Debug, Clone, clap::Args)]
pub struct RoomsArgs {
    /// Options shared by all modes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Number of rooms.
    #[arg(long, default_value_t = 2500)]
    pub rooms: usize,
    /// Members per room; every member publishes into its room and receives everything.
    #[arg(long, default_value_t = 4)]
    pub members: usize,
    /// Publishes per member per second, or `max` (each member keeps `--window` of its own
    /// publishes in flight until it receives them back).
    #[arg(long, default_value = "1", value_parser = parse_rate)]
    pub rate: Rate,
    /// Approximate bytes of each publish's `data`.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seconds of publishing, after every member joined.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// With `--rate max`: a member's own publishes in flight.
    #[arg(long, default_value_t = 4)]
    pub window: usize,
    /// Seconds to wait after the last publish for stragglers before counting the rest lost.
    #[arg(long, default_value_t = 2.0)]
    pub grace: f64,
    /// Room names are this prefix followed by the room's index.
    #[arg(long, default_value = "rooms-")]
    pub prefix: String,
}

/// `wsfleet bench join`.
#[derive(Debug, Clone, clap::Args)]
pub struct JoinArgs {
    /// Options shared by all modes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Number of clients, all joining the same room.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// The one room every client joins.
    #[arg(long, default_value = "live")]
    pub room: String,
    /// Seconds to hold the connections after the joins (memory is read at the start of it).
    #[arg(long, default_value_t = 2.0)]
    pub hold: f64,
    /// Seconds from the first connect after which the run stops waiting for joins and reports
    /// how many joined within it (the per-connection `--timeout` still applies too).
    #[arg(long, default_value_t = 60.0, value_name = "S")]
    pub max_time: f64,
}

impl RoomsArgs {
    /// Validates the rooms options.
    pub fn validate(&self) -> Result<(), ArgError> {
        range("rooms", self.rooms, 1, 1_000_000)?;
        range("members", self.members, 1, 10_000)?;
        range("size", self.size, 1, MAX_SIZE)?;
        range("window", self.window, 1, 1 << 16)?;
        seconds("duration", self.duration, false)?;
        seconds("grace", self.grace, true)?;
        // The longest name this run uses must be a valid room.
        check_room(&self.room(self.rooms - 1))?;
        one_room(
            &self.prefix,
            "the room index is appended to --prefix; `{i}` has no meaning here",
        )?;
        Ok(())
    }

    /// The name of room `r`.
    pub fn room(&self, r: usize) -> String {
        format!("{}{r}", self.prefix)
    }
}

impl JoinArgs {
    /// Validates the join options.
    pub fn validate(&self) -> Result<(), ArgError> {
        range("conns", self.conns, 1, 1_000_000)?;
        seconds("hold", self.hold, true)?;
        seconds("max-time", self.max_time, false)?;
        check_room(&self.room)?;
        one_room(
            &self.room,
            "join puts every client in ONE room; for a room per client use `idle`",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::args::Mode;
    use super::super::args::tests::parse;
    use super::*;

    #[test]
    fn rooms_defaults_and_checks() {
        let u = "ws://127.0.0.1:1/ws";
        let Mode::Rooms(r) = parse(&["rooms", "--url", u]).unwrap() else {
            panic!("not rooms")
        };
        assert_eq!((r.rooms, r.members, r.rate), (2500, 4, Rate::PerSec(1.0)));
        assert_eq!(r.room(7), "rooms-7");
        assert!(parse(&["rooms", "--url", u, "--members", "0"]).is_err());
        assert!(parse(&["rooms", "--url", u, "--rate", "max", "--window", "0"]).is_err());
        let long = "x".repeat(127);
        assert!(
            parse(&["rooms", "--url", u, "--rooms", "100", "--prefix", &long])
                .unwrap_err()
                .contains("--room")
        );
        assert!(parse(&["rooms", "--url", u, "--prefix", "r{i}"]).is_err());
    }

    #[test]
    fn join_defaults_and_checks() {
        let u = "ws://127.0.0.1:1/ws";
        let Mode::Join(j) = parse(&["join", "--url", u, "--conns", "19900"]).unwrap() else {
            panic!("not join")
        };
        assert_eq!(
            (j.conns, j.room.as_str(), j.max_time),
            (19900, "live", 60.0)
        );
        assert!(parse(&["join", "--url", u, "--room", "r{i}"]).is_err());
        assert!(parse(&["join", "--url", u, "--max-time", "0"]).is_err());
        assert!(parse(&["join", "--url", u, "--hold", "0"]).is_ok());
    }
}
