//! `/echo`: every text or binary message comes straight back. It shares the WebSocket
//! layer with `/ws`, so the Autobahn TestSuite run against it checks both.

use std::rc::Rc;

use tokio_tungstenite::tungstenite::Message;

use crate::conn::{Driver, Event, frame};
use crate::counters;
use crate::worker::Worker;

/// Serves one upgraded `/echo` connection to its end.
pub async fn serve(worker: Rc<Worker>, mut driver: Driver) {
    let conn = driver.conn().clone();
    loop {
        match driver.next_event().await {
            Event::Message(Message::Text(text)) => {
                counters::add(&worker.counters.messages_in, 1);
                counters::add(&worker.counters.bytes_in, text.len() as u64);
                worker.reply_text(&conn, text.as_str());
            }
            Event::Message(Message::Binary(data)) => {
                counters::add(&worker.counters.messages_in, 1);
                counters::add(&worker.counters.bytes_in, data.len() as u64);
                worker.reply_frame(&conn, frame::binary(&data));
            }
            Event::Message(Message::Close(_)) => return Box::pin(driver.finish()).await,
            Event::Message(_) => {}
            Event::Close(cause) => return Box::pin(driver.close(cause)).await,
            Event::Violation(cause) => {
                counters::add(&worker.counters.protocol_errors, 1);
                return Box::pin(driver.close(cause)).await;
            }
            Event::Ended => return,
        }
    }
}
