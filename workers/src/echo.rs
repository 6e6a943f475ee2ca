//! `/echo`: every text or binary message comes straight back. It shares the WebSocket
//! layer with `/ws`, so the Autobahn TestSuite run against it checks both.

use std::rc::Rc;

use crate::conn::{Conn, Handler, Outgoing};
use crate::worker::Worker;

/// The `/echo` endpoint (no state of its own beyond its place in the connection limits).
pub(crate) struct Echo {
    /// Counted in the per-IP (and per-user) limits until the connection ends.
    pub _admitted: Option<Box<crate::admission::Admitted>>,
}

impl Handler for Echo {
    type Host = Worker;

    fn on_text(&mut self, worker: &Worker, conn: &Rc<Conn>, text: &str) {
        worker.reply_text(conn, text);
    }

    fn on_binary(&mut self, worker: &Worker, conn: &Rc<Conn>, data: &[u8]) {
        worker.reply(conn, &Outgoing::binary(data));
    }

    fn on_end(&mut self, _: &Worker, _: &Rc<Conn>) {}
}
