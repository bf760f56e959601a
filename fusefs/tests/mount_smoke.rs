//! A real mount of the `sheepfs` binary: start, write and read a VDI through the kernel, stop
//! with SIGTERM, and find the data again after a restart on the same store.
//!
//! Needs root and `/dev/fuse`. Under `CI=true` their absence fails the test; otherwise the test
//! is skipped with a loud message.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sheep_fusefs::mountpoint::{find_mount, mount_table, FS_TYPE};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Returns false (after a loud message) when this machine cannot run a real mount.
fn fuse_available() -> bool {
    let missing = match (
        nix::unistd::geteuid().is_root(),
        Path::new("/dev/fuse").exists(),
    ) {
        (true, true) => return true,
        (false, _) => "root",
        (true, false) => "/dev/fuse",
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but {missing} is missing: real-mount tests cannot run");
    }
    eprintln!("!!! SKIPPING real-mount test: {missing} is missing (set CI=true to fail instead)");
    false
}

/// A running `sheepfs`; dropping it kills the daemon and lazily unmounts whatever is left.
struct Daemon {
    child: Child,
    mount: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    fn start(mount: &Path, store: &Path, socket: &Path) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_sheepfs"))
            .arg(mount)
            .arg("--store")
            .arg(store)
            .arg("--admin-socket")
            .arg(socket)
            .arg("--no-mdns")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--threads")
            .arg("4")
            .env("RUST_LOG", "sheep=debug")
            .stdin(Stdio::null())
            .spawn()
            .expect("cannot spawn sheepfs");
        let mut d = Daemon {
            child,
            mount: mount.to_owned(),
            socket: socket.to_owned(),
        };
        d.must_become_ready();
        d
    }

    fn must_become_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !is_sheepfs_mount(&self.mount) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sheepfs exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "sheepfs did not mount in time");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            self.socket.exists(),
            "the admin socket is missing once mounted"
        );
    }

    fn must_stop(mut self) -> ExitStatus {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGTERM).expect("cannot signal sheepfs");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "sheepfs did not stop in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_sheepfs_mount(&self.mount) {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}

fn is_sheepfs_mount(path: &Path) -> bool {
    let table = mount_table().expect("cannot read the mount table");
    find_mount(&table, path).is_some_and(|m| m.fs_type == FS_TYPE)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect()
}

#[test]
fn a_vdi_written_through_the_mount_survives_sigterm_and_restart() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mount, store, socket) = (
        dir.path().join("mnt"),
        dir.path().join("store"),
        dir.path().join("admin.sock"),
    );
    std::fs::create_dir(&mount).unwrap();

    let daemon = Daemon::start(&mount, &store, &socket);
    let vm0 = mount.join("vm0");
    let data = pattern((5 << 20) + 123); // crosses an object boundary, unaligned end
    std::fs::write(&vm0, &data).unwrap();
    assert_eq!(std::fs::read(&vm0).unwrap(), data);
    assert_eq!(std::fs::metadata(&vm0).unwrap().len(), data.len() as u64);
    let names: Vec<_> = std::fs::read_dir(&mount)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["vm0"]);
    let status = daemon.must_stop();
    assert!(status.success(), "sheepfs exited with {status}");
    assert!(!is_sheepfs_mount(&mount), "still mounted after SIGTERM");
    assert!(!socket.exists(), "the admin socket was left behind");

    let daemon = Daemon::start(&mount, &store, &socket);
    assert_eq!(std::fs::read(&vm0).unwrap(), data);
    let status = daemon.must_stop();
    assert!(status.success(), "sheepfs exited with {status}");
    assert!(!is_sheepfs_mount(&mount));
}

#[test]
fn a_mountpoint_that_is_not_empty_is_refused() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("mnt");
    std::fs::create_dir(&mount).unwrap();
    std::fs::write(mount.join("junk"), b"x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sheepfs"))
        .arg(&mount)
        .arg("--store")
        .arg(dir.path().join("store"))
        .arg("--admin-socket")
        .arg(dir.path().join("admin.sock"))
        .arg("--no-mdns")
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not empty"), "{stderr}");
}
