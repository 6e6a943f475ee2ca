//! The worker's answers to the master's server-API questions ([`WorkerQuery`]): who is
//! in a room here, which rooms have members here, and closing connections by id or user.

use crate::ipc::{MemberEntry, QueryAnswer, WorkerQuery};

use super::rooms::Rooms;

impl Rooms {
    /// Answers (or carries out) `query` from this worker's local state.
    pub fn answer(&self, query: WorkerQuery) -> QueryAnswer {
        match query {
            WorkerQuery::Members { room } => {
                let hub = self.hub.borrow();
                let worker = self.worker();
                let members = hub
                    .members(&room)
                    .iter()
                    .map(|c| MemberEntry {
                        id: worker.fleet_id(c.id),
                        user: c.user().map(str::to_owned),
                    })
                    .collect();
                QueryAnswer::Members(members)
            }
            WorkerQuery::Rooms { pattern } => {
                let keep = |room: &str| pattern.as_ref().is_none_or(|p| p.matches(room));
                QueryAnswer::Rooms(self.hub.borrow().counts(keep))
            }
            WorkerQuery::Disconnect { target, code } => {
                QueryAnswer::Disconnected(self.worker().disconnect(&target, code))
            }
        }
    }
}
