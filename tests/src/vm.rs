//! A QEMU process that holds an image the way a running VM does.

use crate::guard::ChildGuard;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Waits until process `pid` has `path` open.
pub fn must_wait_open(pid: u32, path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten();
        if fds
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|p| p == path)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "QEMU (pid {pid}) never opened {}",
            path.display()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a paused QEMU (no CPU runs) with `image` as a virtio disk, as a VM holds its disk:
/// it takes QEMU's image locks and, unlike `qemu-io`, shares no write permission.
pub fn must_start_vm_holding(image: &Path) -> ChildGuard {
    let drive = format!(
        "file={},format=raw,if=none,id=d0,cache=none",
        image.display()
    );
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-nodefaults",
        "-display",
        "none",
        "-S",
        "-machine",
        "q35,accel=tcg",
        "-m",
        "64",
    ])
    .args(["-drive", &drive, "-device", "virtio-blk-pci,drive=d0"])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let vm = ChildGuard::spawn(&mut cmd);
    must_wait_open(vm.pid(), image);
    // The locks follow the open when the device is realized.
    thread::sleep(Duration::from_millis(500));
    vm
}
