//! One `sheepfs` daemon with its mount, store and admin socket, released on drop.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub use crate::daemon::{is_mounted, lazy_unmount, open_files_under};
use crate::daemon::{must_tempdir, Daemon};
use crate::env::bin;

/// A store directory that outlives the daemon that used it, for a restart with
/// [`Node::start_on`]. It owns (and removes on drop) the temporary directory of a node started
/// with [`Node::start`]; for a node started on a caller's store it is only the path.
#[derive(Debug)]
pub struct StoreDir {
    path: PathBuf,
    _keep: Option<TempDir>,
}

impl StoreDir {
    /// Returns the store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Deref for StoreDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for StoreDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// A running `sheepfs` daemon in this network namespace with `--no-mdns`, mounted and ready. It
/// dereferences to its [`Daemon`]: `node.mount`, `node.store`, `node.socket`, `node.path(…)`,
/// `node.dog(…)`, `node.must_dog(…)`, `node.pid()`, `node.log()`.
///
/// On drop it kills the daemon (SIGKILL, by PID) if it still runs, lazily unmounts the mount
/// point if it is still mounted, and removes its temporary directory.
#[derive(Debug)]
pub struct Node {
    daemon: Daemon,
    tmp: Option<TempDir>,
    owns_store: bool,
}

impl Deref for Node {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl Node {
    /// Starts a daemon on a fresh store with `--no-mdns` and waits until it is ready.
    pub fn start() -> Node {
        let tmp = must_tempdir();
        let store = tmp.path().join("store");
        Node::spawn(tmp, store, true, &[])
    }

    /// Starts a daemon on a fresh store with `--no-mdns` and `extra` arguments (for example
    /// `--listen` and `--peer`) and waits until it is ready.
    pub fn start_with(extra: &[&str]) -> Node {
        let tmp = must_tempdir();
        let store = tmp.path().join("store");
        Node::spawn(tmp, store, true, extra)
    }

    /// Starts a daemon on an existing `store` with `extra` arguments and waits until it is
    /// ready. The mount point, socket and log are in a fresh temporary directory.
    pub fn start_on(store: &Path, extra: &[&str]) -> Node {
        Node::spawn(must_tempdir(), store.to_path_buf(), false, extra)
    }

    fn spawn(tmp: TempDir, store: PathBuf, owns_store: bool, extra: &[&str]) -> Node {
        let mut daemon = Daemon::new(tmp.path(), store);
        // Root-namespace daemons never multicast, and listen on loopback only, on a port of
        // their own (tests run in parallel).
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let args: Vec<&str> = ["--no-mdns"]
            .iter()
            .chain(listen)
            .chain(extra)
            .copied()
            .collect();
        daemon.spawn(Command::new(bin("sheepfs")), &args);
        let mut node = Node {
            daemon,
            tmp: Some(tmp),
            owns_store,
        };
        node.daemon.must_wait_ready();
        node
    }

    /// The daemon's PID (0 once it stopped).
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Stops the daemon with SIGTERM; asserts that it exits 0 within 30 s and unmounts.
    ///
    /// The test must have closed every file it opened on the mount: an open file keeps the
    /// mount busy, so it cannot be unmounted.
    pub fn stop(mut self) -> StoreDir {
        self.daemon.must_stop("Node::stop()");
        self.store_dir()
    }

    /// Waits for a daemon that was already signalled to exit by itself (no further signal);
    /// asserts that it exits 0 within 30 s and unmounts.
    pub fn wait_stopped(mut self) -> StoreDir {
        self.daemon.must_exit_cleanly();
        self.store_dir()
    }

    /// Kills the daemon with SIGKILL (a crash), then lazily unmounts the dead mount.
    pub fn kill(mut self) -> StoreDir {
        self.daemon.kill();
        self.store_dir()
    }

    fn store_dir(&mut self) -> StoreDir {
        StoreDir {
            path: self.daemon.store.clone(),
            _keep: if self.owns_store {
                self.tmp.take()
            } else {
                None
            },
        }
    }
}
