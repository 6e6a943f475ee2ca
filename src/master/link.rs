//! One worker's link: the writer task (the master's queue to its socket, in batches),
//! the reader as a stream of [`Event`]s (the Hello handshake, then every message) that
//! the loop's own task polls, so a relayed message costs no extra task hop, and the exit
//! watcher task. None of them touches the fleet state.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use wsfleet_worker::ipc::framing::{LinkError, pump};
use wsfleet_worker::ipc::{
    FrameReader, FrameWriter, Hello, LinkReadHalf, PROTOCOL_VERSION, ToMaster, socket,
};

use super::events::Event;
use super::relay::WorkerKey;
use super::spawn::Spawned;
use super::state::WorkerTx;

/// A worker's link as events, for the loop to poll.
pub type LinkEvents = Pin<Box<dyn Stream<Item = Event>>>;

/// How the worker was started, to check its Hello against.
pub struct Expect {
    /// The supervisor's key for it.
    pub key: WorkerKey,
    /// Its slot.
    pub slot: u32,
    /// Its generation.
    pub generation: u64,
    /// How long it has to say Hello.
    pub hello_timeout: Duration,
}

/// A freshly spawned worker's link: its message queue and its events.
pub struct Link {
    /// Messages to the worker (a writer task drains them).
    pub tx: WorkerTx,
    /// What the worker says, for the loop to poll.
    pub events: LinkEvents,
}

/// Starts the writer and exit-watcher tasks of a freshly spawned worker; exits are
/// reported on `exits`.
pub fn start(
    spawned: Spawned,
    expect: Expect,
    exits: mpsc::UnboundedSender<Event>,
) -> std::io::Result<Link> {
    let Spawned {
        mut child,
        link,
        pid,
    } = spawned;
    let (read_half, write_half) = socket::split(link)?;
    let (tx, rx, level) = WorkerTx::channel();
    tokio::task::spawn_local(async move {
        let writer = FrameWriter::new(write_half);
        let _ = pump(rx, writer, 256 * 1024, &level, |_| {}).await;
    });
    let key = expect.key;
    tokio::task::spawn_local(async move {
        let status = child.wait().await;
        let _ = exits.send(Event::Exited(key, describe(&status)));
    });
    Ok(Link {
        tx,
        events: Box::pin(read(FrameReader::new(read_half), pid, expect)),
    })
}

/// Where a link's reader is.
enum Stage {
    /// Waiting for the Hello.
    Hello,
    /// Linked: forwarding messages.
    Linked,
    /// Ended (closed, or the worker is to be killed).
    Done,
}

/// The worker's Hello (checked), then its messages; `Misbehaved` ends a link whose
/// worker must be killed.
fn read(reader: FrameReader<LinkReadHalf>, pid: u32, expect: Expect) -> impl Stream<Item = Event> {
    futures_util::stream::unfold(
        (reader, Stage::Hello, expect),
        move |(mut reader, stage, expect)| async move {
            let key = expect.key;
            let event = match stage {
                Stage::Done => return None,
                Stage::Hello => match hello(&mut reader, pid, &expect).await {
                    Some(true) => Event::Hello(key),
                    Some(false) => Event::Misbehaved(key),
                    None => return None,
                },
                Stage::Linked => match reader.next::<ToMaster>().await {
                    Ok(Some(msg)) => Event::Message(key, msg),
                    Ok(None) => return None,
                    Err(LinkError::Io(e)) => {
                        // A reset or a frame cut short: the worker is exiting (killed, or
                        // crashed). Its exit is reported, with how it ended, by the watcher;
                        // a worker that is not exiting falls silent and the heartbeat
                        // replaces it.
                        tracing::debug!(slot = expect.slot, pid, error = %e, "worker link closed");
                        return None;
                    }
                    Err(e) => {
                        tracing::error!(slot = expect.slot, pid, error = %e, "bad frame from worker; killing it");
                        Event::Misbehaved(key)
                    }
                },
            };
            let next = match event {
                Event::Message(..) | Event::Hello(_) => Stage::Linked,
                _ => Stage::Done,
            };
            Some((event, (reader, next, expect)))
        },
    )
}

/// Reads and checks the Hello: `Some(true)` linked, `Some(false)` kill it, `None` the
/// worker exited before saying anything (its exit reports it).
async fn hello(reader: &mut FrameReader<LinkReadHalf>, pid: u32, expect: &Expect) -> Option<bool> {
    let slot = expect.slot;
    let timeout = expect.hello_timeout;
    let hello = match tokio::time::timeout(timeout, reader.next::<ToMaster>()).await {
        Ok(Ok(Some(ToMaster::Hello(hello)))) => hello,
        Ok(Ok(Some(other))) => {
            tracing::error!(
                slot,
                pid,
                "worker spoke before saying Hello ({other:?}); killing it"
            );
            return Some(false);
        }
        Ok(Ok(None) | Err(LinkError::Io(_))) => return None,
        Ok(Err(e)) => {
            tracing::error!(slot, pid, error = %e, "worker's first message is unreadable (is the binary on disk another wsfleet version?); killing it");
            return Some(false);
        }
        Err(_) => {
            tracing::error!(
                slot,
                pid,
                "worker sent no Hello within {timeout:?}; killing it"
            );
            return Some(false);
        }
    };
    if let Err(why) = check_hello(&hello, expect) {
        tracing::error!(slot, pid, ?hello, "{why}");
        return Some(false);
    }
    Some(true)
}

/// Whether a Hello is from the worker we started, speaking our protocol.
fn check_hello(hello: &Hello, expect: &Expect) -> Result<(), String> {
    if hello.version != PROTOCOL_VERSION {
        return Err(format!(
            "worker speaks IPC protocol v{} but this master speaks v{PROTOCOL_VERSION}: refusing it. The binary on disk is incompatible with the running master; restart the master to upgrade across protocol versions",
            hello.version
        ));
    }
    if hello.slot != expect.slot || hello.generation != expect.generation {
        return Err("worker's Hello does not match how it was started; killing it".into());
    }
    Ok(())
}

/// How a process ended, for logs.
pub fn describe(status: &std::io::Result<std::process::ExitStatus>) -> String {
    use nix::sys::signal::Signal;
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(name) => format!("signal {sig} ({name})"),
                Err(_) => format!("signal {sig}"),
            },
            _ => "unknown status".into(),
        },
        Err(e) => format!("wait failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    /// A link whose worker end the test writes `msgs` to, then closes.
    async fn link_with(msgs: &[ToMaster], expect: Expect) -> Vec<Event> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (read_half, _write_half) = socket::split(ours).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let theirs = tokio::net::UnixStream::from_std(theirs).unwrap();
        let mut writer = FrameWriter::new(theirs);
        for m in msgs {
            writer.queue(m).unwrap();
        }
        writer.flush().await.unwrap();
        drop(writer);
        let events = read(FrameReader::new(read_half), 9, expect);
        tokio::time::timeout(Duration::from_secs(5), events.collect::<Vec<_>>())
            .await
            .unwrap()
    }

    fn expect() -> Expect {
        Expect {
            key: 1,
            slot: 2,
            generation: 3,
            hello_timeout: Duration::from_secs(1),
        }
    }

    fn names(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Hello(k) => format!("hello {k}"),
                Event::Message(k, m) => format!("message {k} {m:?}"),
                Event::Misbehaved(k) => format!("misbehaved {k}"),
                _ => "other".into(),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_good_hello_links_and_messages_follow_in_order() {
        let hello = ToMaster::Hello(Hello {
            slot: 2,
            pid: 9,
            generation: 3,
            version: PROTOCOL_VERSION,
        });
        let events = link_with(&[hello, ToMaster::Ready], expect()).await;
        assert_eq!(names(&events), ["hello 1", "message 1 Ready"]);
    }

    #[tokio::test]
    async fn speaking_before_hello_or_a_wrong_generation_gets_the_worker_killed() {
        let events = link_with(&[ToMaster::Ready], expect()).await;
        assert_eq!(names(&events), ["misbehaved 1"]);
        let stale = ToMaster::Hello(Hello {
            slot: 2,
            pid: 9,
            generation: 2,
            version: PROTOCOL_VERSION,
        });
        let events = link_with(&[stale, ToMaster::Ready], expect()).await;
        assert_eq!(names(&events), ["misbehaved 1"], "nothing after");
    }

    #[test]
    fn hello_must_match_version_slot_and_generation() {
        let expect = Expect {
            key: 1,
            slot: 2,
            generation: 3,
            hello_timeout: Duration::from_secs(1),
        };
        let good = Hello {
            slot: 2,
            pid: 9,
            generation: 3,
            version: PROTOCOL_VERSION,
        };
        assert!(check_hello(&good, &expect).is_ok());
        let old = Hello {
            version: PROTOCOL_VERSION + 1,
            ..good.clone()
        };
        assert!(check_hello(&old, &expect).unwrap_err().contains("protocol"));
        let other = Hello {
            generation: 4,
            ..good
        };
        assert!(check_hello(&other, &expect).is_err());
    }
}
