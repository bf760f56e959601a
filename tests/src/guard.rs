//! Guards for a loop device and a kernel mount, released on drop.

use std::path::{Path, PathBuf};

use crate::cmd::{describe, must_run, run};

/// A loop device attached to a file (`losetup -f --show`), detached on drop (`losetup -d`).
#[derive(Debug)]
pub struct LoopDev {
    dev: PathBuf,
}

impl LoopDev {
    /// Attaches `file` to the first free loop device; panics with `losetup`'s output on failure.
    pub fn attach(file: &Path) -> LoopDev {
        let out = must_run(
            "losetup",
            &["-f".as_ref(), "--show".as_ref(), file.as_os_str()],
        );
        LoopDev {
            dev: PathBuf::from(out.trim()),
        }
    }

    /// Returns the device node, such as `/dev/loop0`.
    pub fn path(&self) -> &Path {
        &self.dev
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let out = run("losetup", &["-d".as_ref(), self.dev.as_os_str()]);
        if !out.status.success() {
            eprintln!(
                "{}",
                describe(&format!("losetup -d {}", self.dev.display()), &out)
            );
        }
    }
}

/// A kernel mount of a block device (`mount DEV DIR`), unmounted on drop (`umount DIR`, then
/// `umount -l DIR` if that fails).
#[derive(Debug)]
pub struct MountGuard {
    dir: PathBuf,
    mounted: bool,
}

impl MountGuard {
    /// Mounts `dev` on `dir` (created if needed); panics with `mount`'s output on failure.
    pub fn mount(dev: &Path, dir: &Path) -> MountGuard {
        std::fs::create_dir_all(dir).expect("create mount directory");
        must_run("mount", &[dev.as_os_str(), dir.as_os_str()]);
        MountGuard {
            dir: dir.to_path_buf(),
            mounted: true,
        }
    }

    /// Returns the mount directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Unmounts now; panics with `umount`'s output if it fails.
    pub fn must_unmount(mut self) {
        must_run("umount", &[self.dir.as_os_str()]);
        self.mounted = false;
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        if run("umount", &[self.dir.as_os_str()]).status.success() {
            return;
        }
        let out = run("umount", &["-l".as_ref(), self.dir.as_os_str()]);
        if !out.status.success() {
            eprintln!(
                "{}",
                describe(&format!("umount -l {}", self.dir.display()), &out)
            );
        }
    }
}

/// A child process that the test started, killed by PID (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    child: std::process::Child,
}

impl ChildGuard {
    /// Spawns `cmd`; panics if it cannot start.
    pub fn spawn(cmd: &mut std::process::Command) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        ChildGuard { child }
    }

    /// Returns the PID of the child.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the exit status if the child has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait for child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// A small ext4 file system on a loop device over a sparse image file in a temporary directory,
/// mounted under that directory: for a store that fills up. Its drop unmounts it, detaches the
/// loop device and removes the directory, in that order; whatever uses it (a daemon's store)
/// must be gone first.
#[derive(Debug)]
pub struct LoopFs {
    // Fields drop in this order: the mount, then the device, then the directory.
    mount: MountGuard,
    _dev: LoopDev,
    _tmp: tempfile::TempDir,
}

impl LoopFs {
    /// Creates a `mib` MiB image, attaches it, makes ext4 on it (`mkfs.ext4 -q`) and mounts it.
    pub fn new(mib: u64) -> LoopFs {
        let tmp = tempfile::Builder::new()
            .prefix("sheep-loopfs-")
            .tempdir()
            .expect("create tempdir");
        let image = tmp.path().join("fs.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(mib << 20))
            .unwrap_or_else(|e| panic!("create {}: {e}", image.display()));
        let dev = LoopDev::attach(&image);
        must_run("mkfs.ext4", &["-q".as_ref(), dev.path().as_os_str()]);
        let mount = MountGuard::mount(dev.path(), &tmp.path().join("fs"));
        LoopFs {
            mount,
            _dev: dev,
            _tmp: tmp,
        }
    }

    /// Returns the directory the file system is mounted on.
    pub fn path(&self) -> &Path {
        self.mount.path()
    }
}
