//! Mount options and the kernel connection's tuning.

use fuser::{Config, Errno, MountOption, SessionACL};
use sheep_objects::MemBudget;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the kernel may cache attributes and directory entries.
pub const TTL: Duration = Duration::from_secs(1);

/// Largest write request asked of the kernel, when `fs.fuse.max_pages_limit` allows it.
pub const MAX_WRITE: u32 = 4 << 20;

/// Pending background requests (readahead, async direct I/O) the kernel may queue.
pub(crate) const MAX_BACKGROUND: u16 = 256;

/// Queue length at which the kernel treats the mount as congested.
pub(crate) const CONGESTION_THRESHOLD: u16 = 192;

/// Tuning of the mount, fixed at mount time.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// Largest write request; clamped to what the kernel allows (`fs.fuse.max_pages_limit`).
    pub max_write: u32,
    /// Serve O_DIRECT opens with `FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES`, so that
    /// concurrent O_DIRECT writers to one file (QEMU `cache=none,aio=threads`) are not
    /// serialised on the inode lock. Buffered opens always use the page cache.
    pub parallel_direct_writes: bool,
    /// Data operations (read, write, fsync, fallocate, copy_file_range) wait for the cluster
    /// to hold a quorum, and fail with EIO when it does not within its timeout. `None`: no
    /// gate (a pool of its own).
    pub quorum: Option<QuorumGate>,
    /// The memory budget that read replies are taken from (see [`crate::memory`]).
    pub budget: Arc<MemBudget>,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            max_write: max_write_allowed(MAX_WRITE),
            parallel_direct_writes: true,
            quorum: None,
            budget: MemBudget::new(sheep_objects::budget::DEFAULT_LIMIT),
        }
    }
}

/// How often a data operation looks at a closed quorum gate again.
const GATE_POLL: Duration = Duration::from_millis(20);

/// The quorum gate of the data path: a host cut off in a minority of the cluster must not
/// read data the majority may have overwritten, nor write where the majority cannot see it.
/// Each data operation asks `open` (cheap: an atomic load, see
/// `sheep_p2p::net::Cluster::has_quorum`) and, while it is closed, waits up to `timeout`
/// (`--io-timeout`), then fails with EIO.
#[derive(Clone)]
pub struct QuorumGate {
    open: Arc<dyn Fn() -> bool + Send + Sync>,
    timeout: Duration,
}

impl QuorumGate {
    /// A gate that is open while `open` says so.
    pub fn new(open: impl Fn() -> bool + Send + Sync + 'static, timeout: Duration) -> QuorumGate {
        QuorumGate {
            open: Arc::new(open),
            timeout,
        }
    }

    /// Returns at once when the gate is open, else once it opens, or `EIO` after the timeout.
    /// The returned scope makes the timeout the deadline of the whole operation on this
    /// thread (see [`sheep_objects::deadline`]): every later wait of the operation ends by
    /// then too, so it answers within `--io-timeout` of its start.
    pub fn pass(&self) -> Result<sheep_objects::deadline::Scope, Errno> {
        let deadline = Instant::now() + self.timeout;
        let scope = sheep_objects::deadline::scope(deadline);
        if (self.open)() {
            return Ok(scope);
        }
        loop {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    timeout = ?self.timeout,
                    "no quorum of the cluster within the I/O timeout: EIO"
                );
                return Err(Errno::EIO);
            }
            std::thread::sleep(GATE_POLL.min(deadline - now));
            if (self.open)() {
                return Ok(scope);
            }
        }
    }
}

impl std::fmt::Debug for QuorumGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumGate")
            .field("open", &(self.open)())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Returns `want` clamped to `fs.fuse.max_pages_limit` pages (at least 128 KiB).
pub fn max_write_allowed(want: u32) -> u32 {
    let limit_pages = std::fs::read_to_string("/proc/sys/fs/fuse/max_pages_limit")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(256);
    want.min(limit_pages.saturating_mul(4096)).max(128 << 10)
}

/// Mount options: fs name `sheepfs`, type `fuse.sheepfs`, `allow_other`, `default_permissions`.
pub fn mount_config(threads: usize) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("sheepfs".into()),
        // fuser passes `Subtype` only to fusermount; with mount(2) the kernel takes it as data.
        MountOption::CUSTOM("subtype=sheepfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(threads.max(1));
    config.clone_fd = true;
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_is_fuse_sheepfs_for_everyone_with_kernel_permission_checks() {
        let c = mount_config(32);
        assert_eq!(c.n_threads, Some(32));
        assert!(c.clone_fd);
        assert_eq!(c.acl, SessionACL::All);
        assert!(c.mount_options.contains(&MountOption::DefaultPermissions));
        assert!(c
            .mount_options
            .contains(&MountOption::CUSTOM("subtype=sheepfs".into())));
        assert_eq!(mount_config(0).n_threads, Some(1));
    }

    #[test]
    fn the_quorum_gate_passes_when_open_and_fails_with_eio_after_its_timeout() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let open = Arc::new(AtomicBool::new(true));
        let o = open.clone();
        let gate = QuorumGate::new(move || o.load(Ordering::SeqCst), Duration::from_millis(150));
        assert!(gate.pass().is_ok());
        open.store(false, Ordering::SeqCst);
        let t = Instant::now();
        assert_eq!(gate.pass().err(), Some(Errno::EIO));
        assert!(t.elapsed() >= Duration::from_millis(150));
        // It opens while an operation waits: the operation goes on.
        let o = open.clone();
        let opener = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            o.store(true, Ordering::SeqCst);
        });
        let long = QuorumGate::new(
            {
                let o = open.clone();
                move || o.load(Ordering::SeqCst)
            },
            Duration::from_secs(10),
        );
        assert!(long.pass().is_ok());
        opener.join().unwrap();
    }

    #[test]
    fn max_write_is_clamped_to_something_sane() {
        let w = max_write_allowed(MAX_WRITE);
        assert!((128 << 10..=MAX_WRITE).contains(&w));
    }
}
