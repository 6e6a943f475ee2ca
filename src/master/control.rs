//! The control socket server: newline-delimited JSON over a Unix socket (mode 0600, and
//! only peers with the master's uid), answering `stats`, `reload` and `stop`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::events::MasterCmd;
use super::handle::Handle;
use super::rundir::FileId;
use crate::control_api::{Request, Response};

/// Longest request line accepted.
const MAX_LINE: u64 = 64 * 1024;

/// The socket file this master bound; dropping it removes the file only if the path
/// still names it, so a socket that replaced ours (another master's) survives our exit.
pub struct BoundSocket {
    /// Where it was bound.
    path: PathBuf,
    /// What we bound there.
    id: FileId,
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        self.id.remove_if_still(&self.path);
    }
}

/// Binds the control socket with mode 0600. `RunDir::claim` has already proven that no
/// live master serves this path and removed a dead one's socket.
pub fn bind(path: &Path) -> std::io::Result<(UnixListener, BoundSocket)> {
    let listener = UnixListener::bind(path)?;
    let bound = BoundSocket {
        path: path.to_owned(),
        id: FileId::of_path(path)?,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, bound))
}

/// Serves control connections until the master exits.
pub async fn serve(listener: UnixListener, master: Handle) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let master = master.clone();
                tokio::task::spawn_local(async move {
                    if let Err(e) = connection(stream, master).await {
                        tracing::debug!(error = %e, "control connection ended with an error");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, master: Handle) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let me = nix::unistd::geteuid().as_raw();
    let peer = write.as_ref().peer_cred()?.uid();
    if peer != me && peer != 0 {
        let resp = Response::error(format!(
            "permission denied: uid {peer} may not control a master run by uid {me}"
        ));
        return reply(&mut write, &resp).await;
    }
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') && n as u64 == MAX_LINE {
            reply(
                &mut write,
                &Response::error("request line longer than 64 KiB"),
            )
            .await?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Request>(text.trim()) {
            Err(e) => Response::error(format!(
                "bad request ({e}); send one JSON object per line: {{\"cmd\":\"stats\"}}, {{\"cmd\":\"reload\"}} or {{\"cmd\":\"stop\",\"now\":false}}"
            )),
            Ok(Request::Stats) => match master.view_with_counters().await {
                Some((view, answers)) => Response {
                    ok: true,
                    stats: Some(super::stats::fleet_stats(&view, answers)),
                    ..Default::default()
                },
                None => Response::error("the master is exiting"),
            },
            Ok(Request::Reload) => {
                let report = master.reload().await;
                Response {
                    ok: report.ok,
                    error: report.error.clone(),
                    reload: Some(report),
                    ..Default::default()
                }
            }
            Ok(Request::Stop { now }) => {
                master.command(MasterCmd::Stop { now });
                Response {
                    ok: true,
                    ..Default::default()
                }
            }
        };
        reply(&mut write, &resp).await?;
    }
}

async fn reply(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    resp: &Response,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(resp).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await
}
