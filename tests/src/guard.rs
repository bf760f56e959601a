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
        let out = must_run("losetup", &["-f".as_ref(), "--show".as_ref(), file.as_os_str()]);
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
            eprintln!("{}", describe(&format!("losetup -d {}", self.dev.display()), &out));
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
            eprintln!("{}", describe(&format!("umount -l {}", self.dir.display()), &out));
        }
    }
}
