//! Async server of the admin socket, run by the `sheepfs` daemon.
//!
//! The socket is root-only twice over: the file is mode 0600, and each connection's peer uid
//! (`SO_PEERCRED`) must be root or the daemon's own effective uid. Each connection gets a task;
//! each request runs [`AdminService::handle`] on a blocking thread. A malformed frame gets a
//! [`WireError::Invalid`] reply and the connection is closed.

use crate::error::{Error, Result};
use crate::service::AdminService;
use crate::wire::{Reply, Request, WireError, ADMIN_KIND, MAX_FRAME};
use sheep_p2p::codec::{decode, decode_header, encode, HEADER_LEN};
use std::fs::Permissions;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

/// The answer sent to a peer that is neither root nor the daemon's own user.
pub const PERMISSION_DENIED: &str = "permission denied: root only";

/// Which peer uids may use the socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerPolicy {
    allowed: [u32; 2],
}

impl PeerPolicy {
    /// Root and the effective uid of this process.
    fn current() -> PeerPolicy {
        PeerPolicy {
            allowed: [0, nix::unistd::geteuid().as_raw()],
        }
    }

    fn allows(self, uid: u32) -> bool {
        self.allowed.contains(&uid)
    }
}

/// Serves `service` on the Unix socket `path` until `shutdown` becomes true (or its sender is
/// dropped), then removes the socket file.
///
/// Creates the parent directory, replaces a stale socket file (one nobody listens on), and
/// refuses to start if another daemon answers on `path` or `path` is not a socket.
pub async fn serve(
    path: &Path,
    service: Arc<dyn AdminService>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    serve_with_policy(path, service, shutdown, PeerPolicy::current()).await
}

pub(crate) async fn serve_with_policy(
    path: &Path,
    service: Arc<dyn AdminService>,
    mut shutdown: watch::Receiver<bool>,
    policy: PeerPolicy,
) -> Result<()> {
    let listener = bind(path).await?;
    info!(socket = %path.display(), "admin socket listening");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let conn = serve_connection(stream, Arc::clone(&service), policy, shutdown.clone());
                    tokio::spawn(conn);
                }
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = wait_for_shutdown(&mut shutdown) => break,
        }
    }
    drop(listener);
    if let Err(e) = tokio::fs::remove_file(path).await {
        warn!(socket = %path.display(), error = %e, "cannot remove admin socket");
    }
    info!(socket = %path.display(), "admin socket closed");
    Ok(())
}

/// Returns once shutdown is requested or nobody can request it any more.
async fn wait_for_shutdown(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn bind(path: &Path) -> Result<UnixListener> {
    let err = |source| Error::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await.map_err(err)?;
    }
    remove_stale_socket(path).await.map_err(err)?;
    let listener = UnixListener::bind(path).map_err(err)?;
    // Peers that connect before the chmod are still refused by the uid check.
    let mode = Permissions::from_mode(0o600);
    tokio::fs::set_permissions(path, mode).await.map_err(err)?;
    Ok(listener)
}

/// Removes a socket file that nobody listens on; refuses other files and live sockets.
async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match tokio::fs::symlink_metadata(path).await {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        let msg = "exists and is not a socket";
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, msg));
    }
    if UnixStream::connect(path).await.is_ok() {
        let msg = "another daemon is listening on this socket";
        return Err(io::Error::new(io::ErrorKind::AddrInUse, msg));
    }
    debug!(socket = %path.display(), "removing stale admin socket");
    tokio::fs::remove_file(path).await
}

async fn serve_connection(
    mut stream: UnixStream,
    service: Arc<dyn AdminService>,
    policy: PeerPolicy,
    mut shutdown: watch::Receiver<bool>,
) {
    let allowed = match stream.peer_cred() {
        Ok(cred) => policy.allows(cred.uid()),
        Err(e) => {
            warn!(error = %e, "cannot read admin peer credentials");
            false
        }
    };
    loop {
        let frame = tokio::select! {
            frame = read_request(&mut stream) => frame,
            () = wait_for_shutdown(&mut shutdown) => return,
        };
        let (reply, keep_open) = match frame {
            Ok(None) => return,
            Ok(Some(req)) if allowed => (dispatch(&service, req).await, true),
            Ok(Some(_)) => (Err(WireError::Invalid(PERMISSION_DENIED.into())), false),
            Err(e) => {
                warn!(error = %e, "malformed admin frame");
                (
                    Err(WireError::Invalid(format!("malformed frame: {e}"))),
                    false,
                )
            }
        };
        if let Err(e) = write_reply(&mut stream, &reply).await {
            debug!(error = %e, "cannot send admin reply");
            return;
        }
        if !keep_open {
            return;
        }
    }
}

/// Reads one request; `None` when the peer closed the connection between frames.
async fn read_request(stream: &mut UnixStream) -> Result<Option<Request>> {
    let mut header = [0u8; HEADER_LEN];
    let first = stream.read(&mut header).await?;
    if first == 0 {
        return Ok(None);
    }
    stream.read_exact(&mut header[first..]).await?;
    let h = decode_header(ADMIN_KIND, &header, MAX_FRAME)?;
    let len = usize::try_from(h.len).map_err(|_| sheep_p2p::Error::TooLarge {
        len: u64::from(h.len),
        limit: MAX_FRAME,
    })?;
    let mut frame = header.to_vec();
    frame.resize(HEADER_LEN + len, 0);
    stream.read_exact(&mut frame[HEADER_LEN..]).await?;
    Ok(Some(decode(ADMIN_KIND, &frame, MAX_FRAME)?))
}

async fn dispatch(service: &Arc<dyn AdminService>, req: Request) -> Result<Reply, WireError> {
    debug!(?req, "admin request");
    let service = Arc::clone(service);
    match tokio::task::spawn_blocking(move || service.handle(req)).await {
        Ok(reply) => reply,
        Err(e) => {
            error!(error = %e, "admin request handler failed");
            Err(WireError::Io("internal error; see the daemon log".into()))
        }
    }
}

async fn write_reply(stream: &mut UnixStream, reply: &Result<Reply, WireError>) -> Result<()> {
    let frame = match encode(ADMIN_KIND, reply, MAX_FRAME) {
        Ok(frame) => frame,
        Err(e) => {
            warn!(error = %e, "admin reply cannot be encoded");
            let fallback: Result<Reply, WireError> = Err(WireError::Io(e.to_string()));
            encode(ADMIN_KIND, &fallback, MAX_FRAME)?
        }
    };
    stream.write_all(&frame).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
