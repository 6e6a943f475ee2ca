//! `/echo`: every text or binary message comes straight back. It shares the WebSocket
//! layer with `/ws`, so the Autobahn TestSuite run against it checks both.

use std::rc::Rc;

use tokio_tungstenite::tungstenite::Message;

use crate::conn::{Driver, Event};
use crate::counters;
use crate::worker::Worker;

/// Serves one upgraded `/echo` connection to its end.
pub async fn serve(worker: Rc<Worker>, mut driver: Driver) {
    let outbox = driver.outbox().clone();
    loop {
        match driver.next_event().await {
            Event::Message(msg @ (Message::Text(_) | Message::Binary(_))) => {
                counters::add(&worker.counters.messages_in, 1);
                counters::add(&worker.counters.bytes_in, msg.len() as u64);
                worker.deliver(&outbox, msg);
            }
            Event::Message(Message::Close(_)) => return driver.finish().await,
            Event::Message(_) => {}
            Event::Close(cause) => return driver.close(cause).await,
            Event::Violation(cause) => {
                counters::add(&worker.counters.protocol_errors, 1);
                return driver.close(cause).await;
            }
            Event::Ended => return,
        }
    }
}
