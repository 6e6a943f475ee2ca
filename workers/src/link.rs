//! The worker's end of the master link: the loop that reads the master's messages and
//! acts on them (writes go through `ipc::framing::pump`).

use std::rc::Rc;
use std::time::Duration;

use crate::counters;
use crate::ipc::{FrameReader, LinkReadHalf, ToMaster, ToWorker, framing::LinkError, monotonic_ns};
use crate::protocol;
use crate::pubsub::rooms::Rooms;
use crate::worker::DrainMode;

/// Most bytes gathered into one write to the master.
pub const BATCH_BYTES: usize = 256 * 1024;

/// Bytes queued for the master past which `/ws` connections stop reading their clients
/// until the queue drains (back-pressure instead of unbounded growth when the master is
/// behind). 8 MiB is 32 full batches: never reached while the master keeps up, and with
/// one client message in flight per connection at most (a held connection reads nothing)
/// the queue cannot grow much past it.
pub const HOLD_READS_ABOVE_BYTES: u64 = 8 * 1024 * 1024;

/// Reads the master's messages until the link closes.
pub(crate) async fn read_loop(
    rooms: Rc<Rooms>,
    mut reader: FrameReader<LinkReadHalf>,
) -> Result<(), LinkError> {
    let worker = rooms.worker();
    // Order stamps of the room publishes in the current batch: their latency is recorded
    // once the batch has been written out (one clock read per batch).
    let mut stamps: Vec<u64> = Vec::new();
    while let Some(msg) = reader.next::<ToWorker>().await? {
        counters::add(&worker.counters.ipc_frames_in, 1);
        match msg {
            ToWorker::Room {
                room,
                frame,
                skip,
                ordered_ns,
                presence,
            } => {
                rooms.on_room(&room, frame, skip, presence);
                if ordered_ns != 0 {
                    stamps.push(ordered_ns);
                }
            }
            ToWorker::Ordered {
                conn,
                ack,
                seq,
                epoch,
            } => worker.reply_to(conn, &protocol::ack(&ack, seq, epoch.as_deref())),
            ToWorker::Broadcast { frame } => worker.on_broadcast(frame),
            ToWorker::Joined {
                room,
                conn,
                token,
                answer,
            } => rooms.on_joined(&room, conn, token, answer),
            ToWorker::Reply { conn, frame } => worker.reply_to(conn, &frame),
            ToWorker::Ping { id } => worker.send(ToMaster::Pong { id }),
            ToWorker::CountersRequest { id } => {
                let counters = worker.counters.snapshot();
                worker.send(ToMaster::Counters { id, counters });
            }
            ToWorker::Drain {
                grace_ms,
                stop_accepting,
            } => {
                let mode = if stop_accepting {
                    DrainMode::Reload
                } else {
                    DrainMode::Stop
                };
                worker.start_drain(Duration::from_millis(grace_ms), mode);
            }
            ToWorker::Query { id, query } => {
                let answer = rooms.answer(query);
                worker.send(ToMaster::Answer { id, answer });
            }
            ToWorker::Admitted { id, refused } => worker.admission.answer(id, refused),
            ToWorker::Start(_) => tracing::warn!("ignoring a second Start from the master"),
        }
        // End of a batch: everything the master sent in one go has been queued; write it
        // out, one vectored write per touched connection.
        if !reader.has_buffered_frame() {
            worker.flush_dirty();
            if !stamps.is_empty() {
                let now = monotonic_ns();
                let mut h = worker.counters.delivery_latency.borrow_mut();
                for t in stamps.drain(..) {
                    h.record(now.saturating_sub(t));
                }
            }
        }
    }
    Ok(())
}
