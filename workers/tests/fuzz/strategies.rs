//! Generators of arbitrary IPC messages. Structs with many fields are built from a few
//! varied fields over `Default`, so a field added to them later still compiles here.

use proptest::prelude::*;
use wsfleet_worker::ipc::{
    Hello, JoinAnswer, LatencyHistogram, ToMaster, ToWorker, WorkerCounters, WorkerSettings,
};
use wsfleet_worker::protocol::Since;

/// Any string, including empty, multi-byte and control characters.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..48).prop_map(String::from_iter)
}

fn settings() -> impl Strategy<Value = WorkerSettings> {
    (
        any::<usize>(),
        any::<u64>(),
        proptest::collection::vec(text(), 0..4),
        any::<u32>(),
    )
        .prop_map(|(bytes, ms, origins, rate)| WorkerSettings {
            max_message_bytes: bytes,
            outbox_limit_bytes: bytes / 3,
            ping_interval_ms: ms,
            allowed_origins: origins,
            rate_limit_per_sec: rate,
            ..WorkerSettings::default()
        })
}

fn counters() -> impl Strategy<Value = WorkerCounters> {
    (
        any::<[u64; 4]>(),
        proptest::collection::vec(any::<u64>(), 0..20),
        any::<u64>(),
    )
        .prop_map(|(n, counts, sum_ns)| WorkerCounters {
            connections_current: n[0],
            messages_in: n[1],
            bytes_out: n[2],
            ipc_frames_in: n[3],
            delivery_latency: LatencyHistogram { counts, sum_ns },
            ..WorkerCounters::default()
        })
}

/// Any stream position a client may send.
fn since() -> impl Strategy<Value = Option<Since>> {
    proptest::option::of((text(), any::<u64>()).prop_map(|(epoch, seq)| Since { epoch, seq }))
}

/// Any answer to a join.
fn join_answer() -> impl Strategy<Value = JoinAnswer> {
    prop_oneof![
        proptest::collection::vec(text(), 0..4).prop_map(|frames| JoinAnswer::Accepted { frames }),
        text().prop_map(|message| JoinAnswer::Refused { message }),
    ]
}

/// Any master → worker message.
pub fn to_worker() -> impl Strategy<Value = ToWorker> {
    prop_oneof![
        settings().prop_map(ToWorker::Start),
        (any::<u64>(), any::<bool>()).prop_map(|(grace_ms, stop_accepting)| ToWorker::Drain {
            grace_ms,
            stop_accepting
        }),
        any::<u64>().prop_map(|id| ToWorker::CountersRequest { id }),
        (text(), any::<u64>(), any::<u64>(), join_answer()).prop_map(
            |(room, conn, token, answer)| ToWorker::Joined {
                room,
                conn,
                token,
                answer
            }
        ),
        (any::<u64>(), text()).prop_map(|(conn, frame)| ToWorker::Reply { conn, frame }),
        any::<u64>().prop_map(|id| ToWorker::Ping { id }),
        (
            text(),
            text(),
            any::<Option<u64>>(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(room, frame, skip, ordered_ns, presence)| ToWorker::Room {
                room,
                frame,
                skip,
                ordered_ns,
                presence,
            }),
        text().prop_map(|frame| ToWorker::Broadcast { frame }),
        (
            any::<u64>(),
            text(),
            any::<Option<u64>>(),
            proptest::option::of(text())
        )
            .prop_map(|(conn, ack, seq, epoch)| ToWorker::Ordered {
                conn,
                ack,
                seq,
                epoch
            }),
    ]
}

/// Any worker → master message.
pub fn to_master() -> impl Strategy<Value = ToMaster> {
    prop_oneof![
        any::<(u32, u32, u64, u32)>().prop_map(|(slot, pid, generation, version)| {
            ToMaster::Hello(Hello {
                slot,
                pid,
                generation,
                version,
            })
        }),
        Just(ToMaster::Ready),
        (
            text(),
            any::<u64>(),
            any::<u64>(),
            since(),
            proptest::option::of(text()),
            proptest::option::of(text())
        )
            .prop_map(|(room, conn, token, since, user, info)| ToMaster::Join {
                room,
                conn,
                token,
                since,
                user,
                info,
            }),
        (text(), any::<u64>()).prop_map(|(room, conn)| ToMaster::Leave { room, conn }),
        (text(), any::<u64>(), proptest::option::of(text()))
            .prop_map(|(room, conn, id)| ToMaster::PresenceQuery { room, conn, id }),
        text().prop_map(|room| ToMaster::Withdraw { room }),
        (
            text(),
            any::<u64>(),
            any::<usize>(),
            since(),
            any::<bool>(),
            proptest::option::of(text())
        )
            .prop_map(
                |(room, conn, limit, since, reverse, id)| ToMaster::History {
                    room,
                    conn,
                    limit,
                    since,
                    reverse,
                    id
                }
            ),
        any::<u64>().prop_map(|id| ToMaster::Pong { id }),
        (text(), text(), any::<u64>(), proptest::option::of(text())).prop_map(
            |(room, data, conn, ack)| ToMaster::Publish {
                room,
                data,
                conn,
                ack
            }
        ),
        (text(), any::<u64>(), proptest::option::of(text()))
            .prop_map(|(data, conn, ack)| ToMaster::Broadcast { data, conn, ack }),
        (any::<u64>(), counters()).prop_map(|(id, counters)| ToMaster::Counters { id, counters }),
    ]
}
