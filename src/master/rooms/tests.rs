//! The room concern's unit tests: routing, ordering, acks, presence flags, history.

use std::time::Duration;

use super::*;
use crate::master::history::HistoryStore;
use crate::master::presence::Pacing;
use crate::namespaces::{HistoryOptions, Namespaces, RoomOptions};

fn rooms(history_size: usize) -> Rooms {
    let history = HistoryOptions {
        size: history_size,
        ttl: Duration::from_secs(60),
    };
    let store = HistoryStore::new(
        Namespaces::new(RoomOptions {
            history,
            presence: Default::default(),
        }),
        1 << 20,
    );
    let options = RoomOptions {
        history: HistoryOptions {
            size: 0,
            ttl: Duration::from_secs(60),
        },
        presence: Default::default(),
    };
    let pacing = Pacing {
        interval: Duration::from_millis(10),
        count_rate: 2_000,
    };
    let presence = Registry::new(Namespaces::new(options), pacing);
    Rooms::new(Recall::new(store, 300), presence)
}

fn send(rooms: &mut Rooms, from: WorkerKey, msg: ToMaster) -> Vec<(To, ToWorker)> {
    let mut sent = Vec::new();
    let back = rooms.handle(from, msg, Instant::now(), |to, m| sent.push((to, m)));
    assert!(back.is_none());
    sent
}

fn join(rooms: &mut Rooms, from: WorkerKey, room: &str) -> Vec<(To, ToWorker)> {
    let msg = ToMaster::Join {
        room: room.into(),
        conn: 9,
        token: 7,
        since: None,
        user: None,
        info: None,
    };
    send(rooms, from, msg)
}

fn publish(room: &str) -> ToMaster {
    ToMaster::Publish {
        room: room.into(),
        data: "1".into(),
        conn: 5,
        ack: Some("\"x\"".into()),
    }
}

#[test]
fn publish_goes_to_interested_workers_in_order_and_acks_the_sender() {
    let mut rooms = rooms(0);
    let answer = join(&mut rooms, 1, "a");
    assert!(matches!(
        &answer[..],
        [(
            To::Worker(1),
            ToWorker::Joined {
                token: 7,
                conn: 9,
                ..
            }
        )]
    ));
    join(&mut rooms, 2, "a");
    let sent = send(&mut rooms, 3, publish("a"));
    let targets: Vec<To> = sent.iter().map(|(to, _)| *to).collect();
    assert_eq!(targets, [To::Worker(1), To::Worker(2), To::Worker(3)]);
    assert!(matches!(
        &sent[2].1,
        ToWorker::Ordered {
            conn: 5,
            seq: Some(1),
            epoch: None,
            ..
        }
    ));
    assert_eq!(rooms.count(), 1);
    send(&mut rooms, 1, ToMaster::Withdraw { room: "a".into() });
    rooms.remove_worker(2, Instant::now());
    assert_eq!(rooms.count(), 0);
}

#[test]
fn presence_frames_are_flagged_and_publishes_are_not() {
    let mut rooms = rooms(0);
    rooms.linked(1, 0, 1);
    rooms.linked(2, 1, 1);
    join(&mut rooms, 1, "a");
    let sent = join(&mut rooms, 2, "a");
    let flags: Vec<(To, bool)> = sent
        .iter()
        .filter_map(|(to, m)| match m {
            ToWorker::Room { presence, .. } => Some((*to, *presence)),
            _ => None,
        })
        .collect();
    assert!(!flags.is_empty(), "a join notice: {sent:?}");
    assert!(flags.iter().all(|(_, p)| *p), "{flags:?}");
    let sent = send(&mut rooms, 1, publish("a"));
    let published: Vec<bool> = sent
        .iter()
        .filter_map(|(_, m)| match m {
            ToWorker::Room { presence, .. } => Some(*presence),
            _ => None,
        })
        .collect();
    assert_eq!(published, [false, false]);
}

#[test]
fn a_room_with_history_orders_publishes_without_members_and_acks_the_epoch() {
    let mut rooms = rooms(10);
    let sent = send(&mut rooms, 3, publish("a"));
    let [(To::Worker(3), ToWorker::Ordered { seq, epoch, .. })] = &sent[..] else {
        panic!("only the ack: {sent:?}")
    };
    assert_eq!(*seq, Some(1));
    let epoch = epoch.clone().expect("the ack carries the epoch");
    let answer = send(
        &mut rooms,
        1,
        ToMaster::Join {
            room: "a".into(),
            conn: 9,
            token: 1,
            since: Some(protocol::Since { epoch, seq: 0 }),
            user: None,
            info: None,
        },
    );
    let [(_, ToWorker::Joined { answer, .. })] = &answer[..] else {
        panic!()
    };
    let wsfleet_worker::ipc::JoinAnswer::Accepted { frames } = answer else {
        panic!()
    };
    assert_eq!(frames.len(), 2, "joined, then the one stored message");
    assert!(frames[1].contains(r#""seq":1"#));
    let sent = send(&mut rooms, 3, publish("a"));
    assert!(matches!(sent[0], (To::Worker(1), ToWorker::Room { .. })));
}

#[test]
fn history_requests_are_answered_to_the_asker_and_others_come_back() {
    let mut rooms = rooms(10);
    let msg = ToMaster::History {
        room: "a".into(),
        conn: 4,
        limit: 10,
        since: None,
        reverse: false,
        id: None,
    };
    let sent = send(&mut rooms, 2, msg);
    assert!(matches!(
        &sent[..],
        [(To::Worker(2), ToWorker::Reply { conn: 4, .. })]
    ));
    let back = rooms.handle(1, ToMaster::Ready, Instant::now(), |_, _| {
        panic!("nothing to send")
    });
    assert_eq!(back, Some(ToMaster::Ready));
}
