//! A token's expiry on an open connection, as a state machine with the clock passed in.
//!
//! At the token's `exp` (T) the server sends a warning, and the client has a grace period
//! (G) to send a fresh token for the same user; at T + G the connection is closed:
//!
//! ```text
//! client ← {"type":"token_expiring","exp":T,"close_at":T+G}       at T
//! client → {"type":"refresh","token":"<JWT>"}                      any time before T+G
//! client ← {"type":"refreshed","exp":T2}                           accepted: new identity
//! client ← {"type":"error","code":"refresh_refused","message":…}   refused: clock still runs
//! close 4001 "token expired"                                       at T+G, unrefreshed
//! ```
//! A refresh is accepted before T too (a client may refresh early). The fresh token must
//! name the same `sub`: a connection never changes user. A refused refresh does not close
//! the connection; the deadline already running still applies.
//!
//! A worker keeps every authenticated connection's clock in one [`Clocks`] table, which
//! the heartbeat task checks about once a second: no timer per connection, and a pass
//! is skipped until the earliest deadline is due.

use std::collections::HashMap;
use std::time::Duration;

use super::claims::Claims;
use super::token::TokenError;
use crate::protocol::{Refusal, json_str};

/// Time to send a fresh token after the warning unless configured otherwise.
pub const DEFAULT_GRACE: Duration =
    Duration::from_secs(crate::ipc::defaults::AUTH_REFRESH_GRACE_SECS);

/// What the connection must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing; call [`Expiry::tick`] again at [`Expiry::next_check`].
    Wait,
    /// Send [`warning_frame`] (once): the token has expired, refresh before `close_at`.
    Warn {
        /// The expired token's `exp`.
        exp: u64,
        /// When the connection will be closed (Unix seconds).
        close_at: u64,
    },
    /// Close with 4001 "token expired" (`CloseCause::TOKEN_EXPIRED`).
    Close,
}

/// Why a refresh was refused (the connection stays open until its deadline).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The fresh token did not verify.
    #[error("the fresh token is not valid: {0}")]
    Token(#[from] TokenError),
    /// The fresh token is for another user.
    #[error("the fresh token is for another user; a connection cannot change user")]
    OtherUser,
    /// The grace period is over (the connection is being closed).
    #[error("the grace period is over; reconnect with a fresh token")]
    TooLate,
    /// The connection is anonymous: there is nothing to refresh.
    #[error("this connection has no token to refresh; reconnect with one")]
    Anonymous,
}

impl RefreshError {
    /// The error frame's contents: code `refresh_refused`, the reason in the message.
    pub fn refusal(&self) -> Refusal {
        let reason = match self {
            Self::Token(e) => e.reason(),
            Self::OtherUser => "other_user",
            Self::TooLate => "too_late",
            Self::Anonymous => "anonymous",
        };
        Refusal::new("refresh_refused", format!("{reason}: {self}"))
    }
}

/// Where a connection's token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before `exp`.
    Valid,
    /// Warned; closed at `close_at` unless refreshed.
    Warned {
        /// When the grace period ends.
        close_at: u64,
    },
    /// The close was ordered.
    Closed,
}

/// The expiry clock of one authenticated connection.
#[derive(Debug, Clone)]
pub struct Expiry {
    /// The connection's user: a refresh must carry the same.
    sub: String,
    /// The current token's `exp` (Unix seconds).
    exp: u64,
    /// How long after `exp` a refresh is still accepted.
    grace: Duration,
    /// Where we are.
    phase: Phase,
}

impl Expiry {
    /// The clock for a connection opened with `claims`.
    pub fn new(claims: &Claims, grace: Duration) -> Self {
        Self {
            sub: claims.sub.clone(),
            exp: claims.exp,
            grace,
            phase: Phase::Valid,
        }
    }

    /// When [`Expiry::tick`] next has something to do (Unix seconds); `None` once closed.
    pub fn next_check(&self) -> Option<u64> {
        match self.phase {
            Phase::Valid => Some(self.exp),
            Phase::Warned { close_at } => Some(close_at),
            Phase::Closed => None,
        }
    }

    /// Advances the clock to `now` (Unix seconds).
    pub fn tick(&mut self, now: u64) -> Action {
        match self.phase {
            Phase::Valid if now >= self.exp => {
                let close_at = self.exp.saturating_add(self.grace.as_secs());
                if now >= close_at {
                    self.phase = Phase::Closed;
                    return Action::Close;
                }
                self.phase = Phase::Warned { close_at };
                Action::Warn {
                    exp: self.exp,
                    close_at,
                }
            }
            Phase::Warned { close_at } if now >= close_at => {
                self.phase = Phase::Closed;
                Action::Close
            }
            _ => Action::Wait,
        }
    }

    /// Takes a verified fresh token's claims at `now`; on success the clock restarts at
    /// their `exp` and the caller replaces the connection's identity with them.
    /// [`RefreshError::TooLate`] means the deadline has passed: close the connection with
    /// 4001 (this call took the place of the `tick` that says so).
    pub fn refresh(&mut self, fresh: &Claims, now: u64) -> Result<u64, RefreshError> {
        if self.tick(now) == Action::Close || self.phase == Phase::Closed {
            return Err(RefreshError::TooLate);
        }
        if fresh.sub != self.sub {
            return Err(RefreshError::OtherUser);
        }
        self.exp = fresh.exp;
        self.phase = Phase::Valid;
        Ok(self.exp)
    }
}

/// `{"type":"token_expiring","exp":T,"close_at":T+G}`
pub fn warning_frame(exp: u64, close_at: u64) -> String {
    format!(r#"{{"type":"token_expiring","exp":{exp},"close_at":{close_at}}}"#)
}

/// The clocks of a worker's authenticated connections, by connection number.
#[derive(Debug)]
pub struct Clocks {
    /// One clock per open authenticated connection.
    by_conn: HashMap<u64, Expiry>,
    /// No clock has anything to do before this (Unix seconds): passes before it are
    /// skipped. May be early (after a refresh), never late.
    next_due: u64,
}

impl Default for Clocks {
    fn default() -> Self {
        Self {
            by_conn: HashMap::new(),
            next_due: u64::MAX,
        }
    }
}

impl Clocks {
    /// Starts the clock of connection `conn`.
    pub fn insert(&mut self, conn: u64, expiry: Expiry) {
        if let Some(at) = expiry.next_check() {
            self.next_due = self.next_due.min(at);
        }
        self.by_conn.insert(conn, expiry);
    }

    /// Forgets a closed connection's clock.
    pub fn remove(&mut self, conn: u64) {
        self.by_conn.remove(&conn);
    }

    /// A refresh on connection `conn` (see [`Expiry::refresh`]); an anonymous connection
    /// has no clock.
    pub fn refresh(&mut self, conn: u64, fresh: &Claims, now: u64) -> Result<u64, RefreshError> {
        let clock = self.by_conn.get_mut(&conn).ok_or(RefreshError::Anonymous)?;
        let result = clock.refresh(fresh, now);
        if result == Err(RefreshError::TooLate) {
            self.by_conn.remove(&conn);
        }
        result
    }

    /// Advances every clock to `now`: the connections to warn or close. Closed clocks are
    /// dropped.
    pub fn due(&mut self, now: u64) -> Vec<(u64, Action)> {
        if now < self.next_due {
            return Vec::new();
        }
        let mut actions = Vec::new();
        let mut next_due = u64::MAX;
        self.by_conn.retain(|conn, clock| {
            let action = clock.tick(now);
            if action != Action::Wait {
                actions.push((*conn, action));
            }
            match clock.next_check() {
                Some(at) => {
                    next_due = next_due.min(at);
                    true
                }
                None => false,
            }
        });
        self.next_due = next_due;
        actions
    }
}

/// `{"type":"refreshed","exp":T}`
pub fn refreshed_frame(exp: u64) -> String {
    format!(r#"{{"type":"refreshed","exp":{exp}}}"#)
}

/// `{"type":"refresh","token":TOKEN}`: what a client sends (for tests and `wsfleet bench`).
pub fn refresh_request(token: &str) -> String {
    format!(r#"{{"type":"refresh","token":{}}}"#, json_str(token))
}

#[cfg(test)]
#[path = "expiry_tests.rs"]
mod tests;
