//! A worker process from start to exit: adopt the inherited sockets, greet the master,
//! take its settings, accept until told to drain, and exit when the master goes away.

use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::LocalSet;

use crate::counters;
use crate::fd::{self, FdError};
use crate::ipc::framing::{LinkError, pump};
use crate::ipc::{FrameReader, FrameWriter, Hello, PROTOCOL_VERSION, ToMaster, ToWorker};
use crate::pubsub::rooms::Rooms;
use crate::worker::{DrainMode, Worker};

/// How long the master has to answer the Hello.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the master told this worker on its command line.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// The slot this worker serves.
    pub slot: u32,
    /// Which incarnation of the slot this is.
    pub generation: u64,
    /// The inherited listening socket of the slot.
    pub listen_fd: RawFd,
    /// The inherited worker end of the IPC socket pair.
    pub ipc_fd: RawFd,
}

/// Why a worker stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// An inherited descriptor was missing.
    #[error(transparent)]
    Fd(#[from] FdError),
    /// The runtime or a socket could not be set up.
    #[error("worker setup failed: {0}")]
    Io(#[from] std::io::Error),
    /// The link to the master failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The master did not answer the Hello in time.
    #[error("the master did not send Start within {START_TIMEOUT:?}; exiting")]
    NoStart,
    /// The master answered the Hello with something other than Start.
    #[error("the master answered Hello with {0} instead of Start (mismatched builds?); exiting")]
    Unexpected(String),
    /// The token key in the settings is unusable (the master checks it first, so this
    /// means the master and worker builds differ).
    #[error("the connection-token key is unusable: {0}")]
    AuthKey(#[from] crate::auth::token::KeyError),
}

/// Runs a worker until it drains or its master goes away.
pub fn run(args: WorkerArgs) -> Result<(), WorkerError> {
    let listener = std::net::TcpListener::from(fd::adopt(args.listen_fd, "listening socket")?);
    let link = std::os::unix::net::UnixStream::from(fd::adopt(args.ipc_fd, "master link")?);
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    LocalSet::new().block_on(&runtime, serve(args, listener, link))
}

async fn serve(
    args: WorkerArgs,
    listener: std::net::TcpListener,
    link: std::os::unix::net::UnixStream,
) -> Result<(), WorkerError> {
    let (read_half, write_half) = crate::ipc::socket::split(link)?;
    let mut reader = FrameReader::new(read_half);
    let mut writer = FrameWriter::new(write_half);
    let hello = Hello {
        slot: args.slot,
        pid: std::process::id(),
        generation: args.generation,
        version: PROTOCOL_VERSION,
    };
    writer.send(&ToMaster::Hello(hello)).await?;
    let settings = match tokio::time::timeout(START_TIMEOUT, reader.next::<ToWorker>()).await {
        Ok(Ok(Some(ToWorker::Start(settings)))) => settings,
        Ok(Ok(None)) => return Ok(()), // the master refused us (or died): nothing to do
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(Some(other))) => return Err(WorkerError::Unexpected(format!("{other:?}"))),
        Err(_) => return Err(WorkerError::NoStart),
    };
    let settings = crate::accept::fit_open_file_limit(settings);
    let (tx, rx, level) = crate::ipc::queue::channel(crate::link::HOLD_READS_ABOVE_BYTES);
    let auth = settings.auth.build()?;
    let worker = Rc::new(Worker::new(args.slot, args.generation, settings, tx).with_auth(auth));
    let w = worker.clone();
    tokio::task::spawn_local(async move {
        let sent = |n| counters::add(&w.counters.ipc_frames_out, n);
        match pump(rx, writer, crate::link::BATCH_BYTES, &level, sent).await {
            // The master is gone: the link reader sees it too and closes the clients.
            Ok(()) | Err(LinkError::Io(_)) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot write to the master; exiting");
                std::process::exit(1);
            }
        }
    });
    let rooms = Rc::new(Rooms::new(worker.clone()));
    let listener = TcpListener::from_std(listener)?;
    tokio::task::spawn_local(crate::accept::run(rooms.clone(), listener));
    tokio::task::spawn_local(crate::heartbeat::run(worker.clone()));
    worker.send(ToMaster::Ready);
    tracing::info!("worker ready");
    match crate::link::read_loop(rooms, reader).await {
        Ok(()) => tracing::warn!(
            "master link closed: the master is gone; closing every client with 1012 and exiting"
        ),
        Err(e) => tracing::error!(
            error = %e,
            "master link failed; closing every client with 1012 and exiting"
        ),
    }
    // Without a master nothing is relayed: close every client at once with 1012 (Service
    // Restart) so it reconnects to the next fleet, and stop accepting. The drain exits the
    // process once they are gone (bounded); a drain already under way finishes instead.
    worker.start_drain(Duration::ZERO, DrainMode::Reload);
    std::future::pending::<()>().await;
    Ok(())
}
