//! One worker's link tasks: the writer (the master's queue to its socket, in batches),
//! the reader (the Hello handshake, then every message) and the exit watcher. They only
//! turn what they see into [`Event`]s for the supervisor's loop; none touches the state.

use std::time::Duration;

use tokio::sync::mpsc;
use wsfleet_worker::ipc::framing::pump;
use wsfleet_worker::ipc::{FrameReader, FrameWriter, Hello, PROTOCOL_VERSION, ToMaster};

use super::events::Event;
use super::relay::WorkerKey;
use super::spawn::Spawned;
use super::state::WorkerTx;

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

/// Starts the link tasks of a freshly spawned worker; returns its message queue.
pub fn start(
    spawned: Spawned,
    expect: Expect,
    events: mpsc::UnboundedSender<Event>,
) -> std::io::Result<WorkerTx> {
    let Spawned {
        mut child,
        link,
        pid,
    } = spawned;
    let link = tokio::net::UnixStream::from_std(link)?;
    let (read_half, write_half) = link.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let (tx, queued) = WorkerTx::new(tx);
    tokio::task::spawn_local(async move {
        let written = |n: u64| queued.set(queued.get().saturating_sub(n));
        let _ = pump(rx, FrameWriter::new(write_half), 256 * 1024, written).await;
    });
    let key = expect.key;
    let reader_events = events.clone();
    tokio::task::spawn_local(async move {
        if !read(FrameReader::new(read_half), pid, &expect, &reader_events).await {
            let _ = reader_events.send(Event::Misbehaved(key));
        }
    });
    tokio::task::spawn_local(async move {
        let status = child.wait().await;
        let _ = events.send(Event::Exited(key, describe(&status)));
    });
    Ok(tx)
}

/// Reads the Hello, then forwards every message; false if the worker must be killed.
async fn read(
    mut reader: FrameReader<tokio::net::unix::OwnedReadHalf>,
    pid: u32,
    expect: &Expect,
    events: &mpsc::UnboundedSender<Event>,
) -> bool {
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
            return false;
        }
        Ok(Ok(None)) => return true, // exited before saying anything; its exit reports it
        Ok(Err(e)) => {
            tracing::error!(slot, pid, error = %e, "worker's first message is unreadable (is the binary on disk another wsfleet version?); killing it");
            return false;
        }
        Err(_) => {
            tracing::error!(
                slot,
                pid,
                "worker sent no Hello within {timeout:?}; killing it"
            );
            return false;
        }
    };
    if let Err(why) = check_hello(&hello, expect) {
        tracing::error!(slot, pid, ?hello, "{why}");
        return false;
    }
    if events.send(Event::Hello(expect.key)).is_err() {
        return true;
    }
    loop {
        match reader.next::<ToMaster>().await {
            Ok(Some(msg)) => {
                if events.send(Event::Message(expect.key, msg)).is_err() {
                    return true;
                }
            }
            Ok(None) => return true,
            Err(e) => {
                tracing::error!(slot, pid, error = %e, "bad frame from worker; killing it");
                return false;
            }
        }
    }
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
    use super::*;

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
