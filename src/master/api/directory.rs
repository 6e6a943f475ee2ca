//! Who is in which room, as the server API's `presence`, `presence_stats` and `rooms`
//! see it: the narrow [`RoomDirectory`] trait, and [`WorkerDirectory`], which answers it
//! by asking every serving worker for its local members (bounded wait) and merging.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use wsfleet_worker::ipc::{QueryAnswer, WorkerQuery};
use wsfleet_worker::protocol::RoomPattern;

use super::calls::Call;
use super::errors::ApiError;
use crate::master::handle::Handle;

/// How long the API waits for the workers' answers.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// One member of a room.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    /// The fleet-wide connection id.
    pub id: String,
    /// The token's user id (`sub`), when the connection has one.
    pub user: Option<String>,
    /// The token's public `info`, when it has one.
    pub info: Option<serde_json::Value>,
    /// The slot of the worker holding the connection.
    pub worker: u32,
}

/// A room's member counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Connections that are members.
    pub connections: u64,
    /// Distinct user ids among them (anonymous connections are not counted).
    pub users: u64,
}

/// Where presence comes from.
pub trait RoomDirectory {
    /// The members of `room`, every worker's.
    async fn members(&self, room: &str) -> Result<Vec<Member>, ApiError>;

    /// Rooms with members (matching `pattern`, if any) and how many, sorted by name.
    async fn rooms(&self, pattern: Option<RoomPattern>) -> Result<Vec<(String, u64)>, ApiError>;

    /// The member counts of `room`.
    async fn counts(&self, room: &str) -> Result<Counts, ApiError> {
        let members = self.members(room).await?;
        let users: HashSet<&str> = members.iter().filter_map(|m| m.user.as_deref()).collect();
        Ok(Counts {
            connections: members.len() as u64,
            users: users.len() as u64,
        })
    }
}

/// Presence from the workers' local room tables, asked over the master link.
pub struct WorkerDirectory<'a>(pub &'a Handle);

impl WorkerDirectory<'_> {
    /// Asks every serving worker `query`; the answers that came within the time limit,
    /// with the slot of the worker that gave each.
    pub async fn ask(
        handle: &Handle,
        query: WorkerQuery,
    ) -> Result<Vec<(u32, QueryAnswer)>, ApiError> {
        let waits = handle.api(|reply| Call::Ask { query, reply }).await?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut answers = Vec::with_capacity(waits.len());
        for (slot, rx) in waits {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(answer)) => answers.push((slot, answer)),
                _ => tracing::warn!(slot, "a worker did not answer a server API query in time"),
            }
        }
        Ok(answers)
    }
}

impl RoomDirectory for WorkerDirectory<'_> {
    async fn members(&self, room: &str) -> Result<Vec<Member>, ApiError> {
        let query = WorkerQuery::Members {
            room: room.to_owned(),
        };
        let mut members = Vec::new();
        for (worker, answer) in Self::ask(self.0, query).await? {
            if let QueryAnswer::Members(list) = answer {
                members.extend(list.into_iter().map(|m| Member {
                    id: m.id,
                    user: m.user,
                    info: m.info.and_then(|i| serde_json::from_str(&i).ok()),
                    worker,
                }));
            }
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(members)
    }

    async fn rooms(&self, pattern: Option<RoomPattern>) -> Result<Vec<(String, u64)>, ApiError> {
        let mut rooms = BTreeMap::new();
        for (_, answer) in Self::ask(self.0, WorkerQuery::Rooms { pattern }).await? {
            if let QueryAnswer::Rooms(list) = answer {
                for (room, n) in list {
                    *rooms.entry(room).or_insert(0) += n;
                }
            }
        }
        Ok(rooms.into_iter().collect())
    }
}
