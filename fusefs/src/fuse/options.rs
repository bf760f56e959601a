//! Mount options and the kernel connection's tuning.

use fuser::{Config, MountOption, SessionACL};
use std::time::Duration;

/// How long the kernel may cache attributes and directory entries.
pub const TTL: Duration = Duration::from_secs(1);

/// Largest write request asked of the kernel, when `fs.fuse.max_pages_limit` allows it.
pub(crate) const MAX_WRITE: u32 = 4 << 20;

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
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            max_write: max_write_allowed(MAX_WRITE),
            parallel_direct_writes: true,
        }
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
    fn max_write_is_clamped_to_something_sane() {
        let w = max_write_allowed(MAX_WRITE);
        assert!((128 << 10..=MAX_WRITE).contains(&w));
    }
}
