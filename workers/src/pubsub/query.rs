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
                        info: c.user_info().map(str::to_owned),
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

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::ipc::{Target, WorkerSettings};
    use crate::worker::Worker;

    async fn stream() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(l.local_addr().unwrap());
        let (a, b) = tokio::join!(a, l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn a_disconnect_closes_only_the_named_local_connection() {
        let (tx, _rx, _) = crate::ipc::queue::channel(0);
        let worker = Rc::new(Worker::new(3, 7, WorkerSettings::default(), tx));
        let rooms = Rooms::new(worker.clone());
        let (s1, _p1) = stream().await;
        let (s2, _p2) = stream().await;
        let (one, two) = (
            worker.open(s1, true, 0, Vec::new()),
            worker.open(s2, true, 0, Vec::new()),
        );
        let close = |target| WorkerQuery::Disconnect { target, code: 4001 };
        for other in ["3.8.2", "2.7.2", "3.7.9", "3.7.2.1", "x"] {
            let answer = rooms.answer(close(Target::Conn(other.into())));
            assert_eq!(answer, QueryAnswer::Disconnected(0), "{other}");
        }
        let id = worker.fleet_id(two.id);
        assert_eq!(id, "3.7.2");
        assert_eq!(
            rooms.answer(close(Target::Conn(id.clone()))),
            QueryAnswer::Disconnected(1)
        );
        assert_eq!(two.closing().map(|c| c.code), Some(4001));
        assert_eq!(one.closing(), None);
        assert_eq!(
            rooms.answer(close(Target::Conn(id))),
            QueryAnswer::Disconnected(0),
            "already closing"
        );
        assert_eq!(
            rooms.answer(close(Target::User("u".into()))),
            QueryAnswer::Disconnected(0),
            "no connection has a user id yet"
        );
        let members = rooms.answer(WorkerQuery::Members { room: "r".into() });
        assert_eq!(members, QueryAnswer::Members(vec![]));
    }
}
