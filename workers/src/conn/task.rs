//! The whole life of one WebSocket connection as one hand-written future.
//!
//! Written as a struct rather than an `async fn`: the compiler's state machine for the
//! equivalent async code kept a slot for every value moved across an `.await`, about 500
//! bytes per connection — more than the socket's own state. This future is the driver,
//! the protocol handler and a slot for the (boxed, short-lived) closing step.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio_tungstenite::tungstenite::Message;

use super::{Conn, Driver, Event};

/// Events handled between two yields to the scheduler, so a client that floods us cannot
/// starve the others.
const EVENTS_PER_POLL: usize = 64;

/// What the owner of every connection hears from each of them, whatever the endpoint
/// (the worker counts and unregisters here).
pub trait Host {
    /// A data message of `bytes` bytes arrived (before the endpoint sees it).
    fn received(&self, bytes: usize);
    /// The client broke the protocol; the connection is being closed.
    fn violated(&self);
    /// The connection is gone (after the endpoint's [`Handler::on_end`]).
    fn ended(&self, conn: &Conn);
    /// Whether connections must stop reading their clients for now (what they would
    /// produce has nowhere to go); if so, `cx`'s task is woken when they may read again.
    fn hold_reads(&self, cx: &mut Context<'_>) -> bool;
}

/// What an endpoint (`/ws`, `/echo`) does with a connection's messages. Its context (the
/// room table, the worker) is its [`Host`](Handler::Host), held once per connection by
/// the task.
pub trait Handler {
    /// The endpoint's shared context, which also hears every connection's life.
    type Host: Host;
    /// A text message arrived.
    fn on_text(&mut self, host: &Self::Host, conn: &Rc<Conn>, text: &str);
    /// A binary message arrived.
    fn on_binary(&mut self, host: &Self::Host, conn: &Rc<Conn>, data: &[u8]);
    /// The connection is over (called exactly once).
    fn on_end(&mut self, host: &Self::Host, conn: &Rc<Conn>);
}

/// One connection, from upgrade to close.
pub struct ConnTask<H: Handler> {
    /// The endpoint's context.
    host: Rc<H::Host>,
    /// The connection's shared half (kept after the driver moves into the closing step).
    conn: Rc<Conn>,
    /// The protocol side, until closing starts.
    driver: Option<Driver>,
    /// What the endpoint does with messages.
    handler: H,
    /// The close handshake in progress (boxed: it exists only while closing).
    closing: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

impl<H: Handler + Unpin> ConnTask<H> {
    /// A task for an upgraded connection.
    pub fn new(host: Rc<H::Host>, driver: Driver, handler: H) -> Self {
        Self {
            host,
            conn: driver.conn().clone(),
            driver: Some(driver),
            handler,
            closing: None,
        }
    }

    fn start_closing(&mut self, close: impl FnOnce(Driver) -> Pin<Box<dyn Future<Output = ()>>>) {
        if let Some(driver) = self.driver.take() {
            self.closing = Some(close(driver));
        }
    }

    fn end(&mut self) {
        self.handler.on_end(&self.host, &self.conn);
        self.host.ended(&self.conn);
    }
}

impl<H: Handler + Unpin> Future for ConnTask<H> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..EVENTS_PER_POLL {
            if let Some(closing) = this.closing.as_mut() {
                if closing.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.closing = None;
                this.end();
                return Poll::Ready(());
            }
            let Some(driver) = this.driver.as_mut() else {
                return Poll::Ready(());
            };
            let read = !this.host.hold_reads(cx);
            let event = match driver.poll_event(cx, read) {
                Poll::Ready(event) => event,
                Poll::Pending => return Poll::Pending,
            };
            match event {
                Event::Message(Message::Text(text)) => {
                    this.host.received(text.len());
                    this.handler.on_text(&this.host, &this.conn, text.as_str());
                }
                Event::Message(Message::Binary(data)) => {
                    this.host.received(data.len());
                    this.handler.on_binary(&this.host, &this.conn, &data);
                }
                Event::Message(Message::Close(_)) => this.start_closing(|d| Box::pin(d.finish())),
                Event::Message(_) => {}
                Event::Close(cause) => this.start_closing(|d| Box::pin(d.close(cause))),
                Event::Violation(cause) => {
                    this.host.violated();
                    this.start_closing(|d| Box::pin(d.close(cause)));
                }
                Event::Ended => {
                    this.driver = None;
                    this.end();
                    return Poll::Ready(());
                }
            }
        }
        // Budget used up: let the other connections run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
