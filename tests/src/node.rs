//! One `sheepfs` daemon with its mount, store and admin socket, released on drop.

use std::fs::File;
use std::ops::Deref;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::cmd::{describe, run};
use crate::env::bin;

/// How long the daemon may take to mount, and to exit after SIGTERM.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(30);

/// Fs type of the mount in `/proc/self/mountinfo`.
const FS_TYPE: &str = "fuse.sheepfs";

/// How much of the daemon's log a panic message shows.
const LOG_TAIL: usize = 16 << 10;

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

/// A running `sheepfs` daemon, mounted and ready.
///
/// On drop it kills the daemon (SIGKILL, by PID) if it still runs, lazily unmounts the mount
/// point if it is still mounted, and removes its temporary directory.
#[derive(Debug)]
pub struct Node {
    /// The mount point.
    pub mount: PathBuf,
    /// The store directory (`--store`).
    pub store: PathBuf,
    /// The admin socket (`--admin-socket`).
    pub socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    tmp: Option<TempDir>,
    owns_store: bool,
}

impl Node {
    /// Starts a daemon on a fresh store with `--no-mdns` and waits until it is ready.
    pub fn start() -> Node {
        let tmp = must_tempdir();
        let store = tmp.path().join("store");
        Node::spawn(tmp, store, true, &[])
    }

    /// Starts a daemon on an existing `store` with `extra` arguments and waits until it is
    /// ready. The mount point, socket and log are in a fresh temporary directory.
    pub fn start_on(store: &Path, extra: &[&str]) -> Node {
        Node::spawn(must_tempdir(), store.to_path_buf(), false, extra)
    }

    fn spawn(tmp: TempDir, store: PathBuf, owns_store: bool, extra: &[&str]) -> Node {
        let dir = tmp.path().canonicalize().expect("canonicalize tempdir");
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount).expect("create mount point");
        let socket = dir.join("admin.sock");
        let log = dir.join("sheepfs.log");
        let child = spawn_daemon(&mount, &store, &socket, &log, extra);
        let mut node = Node {
            mount,
            store,
            socket,
            log,
            child: Some(child),
            tmp: Some(tmp),
            owns_store,
        };
        node.must_wait_ready();
        node
    }

    fn must_wait_ready(&mut self) {
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "sheepfs exited before it was ready: {status}\n{}",
                    self.log()
                );
            }
            if is_mounted(&self.mount, Some(FS_TYPE)) && UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sheepfs not ready after {DAEMON_TIMEOUT:?} (mounted: {}, socket: {})\n{}",
                is_mounted(&self.mount, Some(FS_TYPE)),
                self.socket.exists(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Returns the path of `file` inside the mount.
    pub fn path(&self, file: &str) -> PathBuf {
        self.mount.join(file)
    }

    /// Runs `dog args…` against this node's admin socket (through `SHEEPFS_SOCKET`).
    pub fn dog(&self, args: &[&str]) -> Output {
        Command::new(bin("dog"))
            .env("SHEEPFS_SOCKET", &self.socket)
            .args(args)
            .output()
            .expect("run dog")
    }

    /// Runs `dog args…` and returns its stdout; panics with its output unless it exits 0.
    pub fn must_dog(&self, args: &[&str]) -> String {
        let out = self.dog(args);
        assert!(
            out.status.success(),
            "{}",
            describe(&format!("dog {}", args.join(" ")), &out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Returns the PID of the daemon.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Returns the last part of what the daemon printed.
    pub fn log(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(LOG_TAIL);
        format!(
            "--- sheepfs log ({}) ---\n{}",
            self.log.display(),
            String::from_utf8_lossy(&text[start..])
        )
    }

    /// Stops the daemon with SIGTERM; asserts that it exits 0 within 30 s and unmounts.
    ///
    /// The test must have closed every file it opened on the mount: an open file keeps the
    /// mount busy, so it cannot be unmounted.
    pub fn stop(mut self) -> StoreDir {
        let open = open_files_under(&self.mount);
        assert!(
            open.is_empty(),
            "close these files before Node::stop(): {open:?}"
        );
        self.signal(Signal::SIGTERM);
        self.must_exit_cleanly()
    }

    /// Waits for a daemon that was already signalled to exit by itself (no further signal);
    /// asserts that it exits 0 within 30 s and unmounts.
    pub fn wait_stopped(mut self) -> StoreDir {
        self.must_exit_cleanly()
    }

    fn must_exit_cleanly(&mut self) -> StoreDir {
        let status = self.must_wait_exit();
        assert!(
            status.success(),
            "sheepfs exited with {status}\n{}",
            self.log()
        );
        assert!(
            !is_mounted(&self.mount, None),
            "sheepfs exited 0 but left {} mounted\n{}",
            self.mount.display(),
            self.log()
        );
        self.child = None;
        self.store_dir()
    }

    /// Kills the daemon with SIGKILL (a crash), then lazily unmounts the dead mount.
    pub fn kill(mut self) -> StoreDir {
        self.signal(Signal::SIGKILL);
        self.must_wait_exit();
        self.child = None;
        lazy_unmount(&self.mount);
        self.store_dir()
    }

    fn store_dir(&mut self) -> StoreDir {
        StoreDir {
            path: self.store.clone(),
            _keep: if self.owns_store {
                self.tmp.take()
            } else {
                None
            },
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.pid()).expect("pid fits i32");
        kill(Pid::from_raw(pid), signal).expect("signal sheepfs");
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("wait for sheepfs"))
    }

    fn must_wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sheepfs still running {DAEMON_TIMEOUT:?} after the signal\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!("{}", self.log());
        }
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            let _ = child.wait();
        }
        if is_mounted(&self.mount, None) {
            lazy_unmount(&self.mount);
        }
    }
}

fn must_tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("sheep-")
        .tempdir()
        .expect("create tempdir")
}

fn spawn_daemon(mount: &Path, store: &Path, socket: &Path, log: &Path, extra: &[&str]) -> Child {
    let out = File::create(log).expect("create daemon log");
    let err = out.try_clone().expect("clone daemon log");
    Command::new(bin("sheepfs"))
        .arg(mount)
        .arg("--store")
        .arg(store)
        .arg("--admin-socket")
        .arg(socket)
        .arg("--no-mdns")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin("sheepfs").display()))
}

/// Returns the files under `dir` that this process holds open.
pub fn open_files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.starts_with(dir))
        .collect()
}

/// Detaches `mount` lazily (`umount -l`), ignoring failures.
pub fn lazy_unmount(mount: &Path) {
    let out = run("umount", &[std::ffi::OsStr::new("-l"), mount.as_os_str()]);
    if !out.status.success() {
        eprintln!(
            "{}",
            describe(&format!("umount -l {}", mount.display()), &out)
        );
    }
}

/// Returns true when `/proc/self/mountinfo` lists `mount` (with fs type `fs_type`, if given).
pub fn is_mounted(mount: &Path, fs_type: Option<&str>) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|line| {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            return false;
        };
        let point = left.split(' ').nth(4).map(unescape_mountinfo);
        let kind = right.split(' ').next();
        point.as_deref() == Some(mount.to_string_lossy().as_ref())
            && fs_type.is_none_or(|want| kind == Some(want))
    })
}

/// Undoes the octal escapes (`\040` for a space) of `/proc/self/mountinfo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_octal_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
    }

    #[test]
    fn root_is_always_mounted() {
        assert!(is_mounted(Path::new("/proc"), Some("proc")));
        assert!(!is_mounted(Path::new("/no/such/mount"), None));
    }
}
