//! What [`Node`](crate::Node) and [`Host`](crate::Host) share: one `sheepfs` process with its
//! mount, store, admin socket and log, killed and unmounted on drop; and the mount-table helpers.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::cmd::{describe, run};
use crate::env::bin;

/// How long the daemon may take to mount, and to exit after a signal.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(30);

/// Fs type of the mount in `/proc/self/mountinfo`.
const FS_TYPE: &str = "fuse.sheepfs";

/// How much of the daemon's log a panic message shows (`SHEEP_TEST_LOG_TAIL` bytes if set,
/// e.g. with `RUST_LOG=sheep=debug`).
const LOG_TAIL: usize = 16 << 10;

fn log_tail() -> usize {
    std::env::var("SHEEP_TEST_LOG_TAIL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LOG_TAIL)
}

/// The test daemons' `--store-reserve` (through `SHEEPFS_STORE_RESERVE`). The default, 2% of
/// the file system up to 4 GiB, made stores in `/tmp` refuse new objects ("store near full")
/// whenever the test machine had less than 4 GiB free, which a CI machine's disk sometimes
/// has; a test needs only what it writes. 16 MiB is also what the default gives the small
/// loop-device file systems of the full-disk tests, so those see the product's default.
pub const TEST_STORE_RESERVE: &str = "16M";

/// How often the wait loops look again.
const POLL: Duration = Duration::from_millis(50);

/// One `sheepfs` daemon: its mount point, store, admin socket and log, and its process while it
/// runs. [`Node`](crate::Node) and [`Host`](crate::Host) dereference to it.
///
/// On drop it kills the daemon (SIGKILL, by PID) if it still runs and lazily unmounts the mount
/// point if it is still mounted; the directories belong to its owner.
#[derive(Debug)]
pub struct Daemon {
    /// The mount point.
    pub mount: PathBuf,
    /// The store directory (`--store`).
    pub store: PathBuf,
    /// The admin socket (`--admin-socket`).
    pub socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Lays out a daemon that is not started yet: `dir/mnt` (created), `dir/admin.sock` and
    /// `dir/sheepfs.log`, with its store at `store`. `dir` is canonicalized, as the mount table
    /// shows it.
    pub(crate) fn new(dir: &Path, store: PathBuf) -> Daemon {
        let dir = dir.canonicalize().expect("canonicalize daemon directory");
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount).expect("create mount point");
        Daemon {
            mount,
            store,
            socket: dir.join("admin.sock"),
            log: dir.join("sheepfs.log"),
            child: None,
        }
    }

    /// Starts `launcher MOUNT --store STORE --admin-socket SOCKET extra…`, where `launcher` is
    /// the command that runs `sheepfs` (the binary itself, or `nsenter … sheepfs`). Its stdout and
    /// stderr are appended to the log. Does not wait until it is ready.
    ///
    /// The store's reserve is [`TEST_STORE_RESERVE`] unless `extra` sets `--store-reserve`.
    pub(crate) fn spawn(&mut self, mut launcher: Command, extra: &[&str]) {
        assert!(self.child.is_none(), "sheepfs is already running");
        launcher.env("SHEEPFS_STORE_RESERVE", TEST_STORE_RESERVE);
        launcher
            .arg(&self.mount)
            .arg("--store")
            .arg(&self.store)
            .arg("--admin-socket")
            .arg(&self.socket)
            .args(extra)
            .stdin(Stdio::null());
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open daemon log");
        writeln!(out, "=== harness: starting {launcher:?}").expect("write daemon log");
        let err = out.try_clone().expect("clone daemon log");
        let child = launcher
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {launcher:?}: {e}"));
        self.child = Some(child);
    }

    /// Waits until the mount shows in `/proc/self/mountinfo` as `fuse.sheepfs` and the admin
    /// socket accepts connections; panics with the log if the daemon exits first or takes longer
    /// than [`DAEMON_TIMEOUT`].
    pub(crate) fn must_wait_ready(&mut self) {
        let mut exited = None;
        let ready = poll_until(DAEMON_TIMEOUT, || {
            exited = self.try_wait();
            exited.is_some() || self.is_ready()
        });
        if let Some(status) = exited {
            panic!(
                "sheepfs exited before it was ready: {status}\n{}",
                self.log()
            );
        }
        assert!(
            ready,
            "sheepfs not ready after {DAEMON_TIMEOUT:?} (mounted: {}, socket: {})\n{}",
            is_mounted(&self.mount, Some(FS_TYPE)),
            self.socket.exists(),
            self.log()
        );
    }

    fn is_ready(&self) -> bool {
        is_mounted(&self.mount, Some(FS_TYPE)) && UnixStream::connect(&self.socket).is_ok()
    }

    /// Returns the path of `file` inside the mount.
    pub fn path(&self, file: &str) -> PathBuf {
        self.mount.join(file)
    }

    /// Runs `dog args…` against this daemon's admin socket (through `SHEEPFS_SOCKET`).
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
            "{}\n{}",
            describe(&format!("dog {}", args.join(" ")), &out),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Returns the PID of the daemon, 0 when it does not run (any more).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Every thread's stack of the running daemon (`gdb -batch`), to show where a hung host
    /// waits; a line saying why not when gdb is missing or the daemon has exited.
    pub fn stacks(&self) -> String {
        let pid = self.pid();
        match Command::new("gdb")
            .args([
                "-p",
                &pid.to_string(),
                "-batch",
                "-nx",
                "-ex",
                "thread apply all bt",
            ])
            .output()
        {
            Ok(o) => format!(
                "--- sheepfs stacks (pid {pid}) ---\n{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("(no stacks of pid {pid}: gdb: {e})"),
        }
    }

    /// Returns the last part of what the daemon printed (of every start, for a restarted one).
    pub fn log(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(log_tail());
        format!(
            "--- sheepfs log ({}) ---\n{}",
            self.log.display(),
            String::from_utf8_lossy(&text[start..])
        )
    }

    /// Returns true while the daemon process runs (false once it exited, was killed or
    /// stopped).
    pub(crate) fn running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// SIGTERM; asserts that the daemon exits 0 within [`DAEMON_TIMEOUT`] and unmounts. The test
    /// must have closed every file it opened on the mount (an open file keeps it busy).
    pub(crate) fn must_stop(&mut self, who: &str) {
        let open = open_files_under(&self.mount);
        assert!(open.is_empty(), "close these files before {who}: {open:?}");
        self.signal(Signal::SIGTERM);
        self.must_exit_cleanly();
    }

    /// Waits for a daemon that was already signalled to exit by itself; asserts that it exits 0
    /// within [`DAEMON_TIMEOUT`] and unmounts.
    pub(crate) fn must_exit_cleanly(&mut self) {
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
    }

    /// Kills the daemon with SIGKILL (a crash), waits for it, then lazily unmounts the dead
    /// mount.
    pub(crate) fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.must_wait_exit();
        self.child = None;
        lazy_unmount(&self.mount);
    }

    fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.pid()).expect("pid fits i32");
        assert!(pid != 0, "sheepfs does not run");
        kill(Pid::from_raw(pid), signal).expect("signal sheepfs");
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("wait for sheepfs"))
    }

    fn must_wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        poll_until(DAEMON_TIMEOUT, || {
            status = self.try_wait();
            status.is_some()
        });
        status.unwrap_or_else(|| {
            panic!(
                "sheepfs still running {DAEMON_TIMEOUT:?} after the signal\n{}",
                self.log()
            )
        })
    }
}

impl Drop for Daemon {
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

/// Calls `f` every 50 ms until it returns true (then true) or `timeout` has passed (then false).
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Creates a fresh temporary directory `sheep-…` (removed when the guard drops).
pub(crate) fn must_tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("sheep-")
        .tempdir()
        .expect("create tempdir")
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

    #[test]
    fn poll_until_gives_up_after_the_timeout() {
        let mut calls = 0;
        assert!(!poll_until(Duration::from_millis(120), || {
            calls += 1;
            false
        }));
        assert!(calls >= 2, "{calls}");
        assert!(poll_until(Duration::ZERO, || true));
    }
}
