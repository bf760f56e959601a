//! The state behind the mount and the multi-step operations of its callbacks.

use super::options::{FsOptions, TTL};
use crate::attr::{file_attr, root_attr, BLOCK_SIZE};
use crate::errno::{fuse_errno, NAME_MAX};
use crate::falloc;
use fuser::{
    Errno, FileAttr, FileHandle, FopenFlags, INodeNo, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyEmpty, ReplyStatfs, Request,
};
use sheep_vdi::{CreateOpts, Error, Ino, Pool, SetAttr, VdiAttr};
use std::cell::RefCell;
use std::ffi::OsStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{error, warn};

/// The sheepfs filesystem: a flat directory of VDIs.
pub struct SheepFs {
    pub(super) pool: Arc<Pool>,
    pub(super) options: FsOptions,
    started: SystemTime,
    next_fh: AtomicU64,
    pub(super) copies: super::copy::CopyAhead,
    /// Lock owners that took a lock through each open handle. The kernel does not tell a
    /// FUSE file system when an OFD lock's file closes (its owner is the file, and only POSIX
    /// owners get a FLUSH), so the release of the handle drops them.
    pub(super) lock_owners:
        parking_lot::Mutex<std::collections::HashMap<u64, std::collections::HashSet<u64>>>,
}

impl SheepFs {
    /// Serves `pool`.
    pub fn new(pool: Arc<Pool>, options: FsOptions) -> SheepFs {
        SheepFs {
            pool,
            options,
            started: SystemTime::now(),
            next_fh: AtomicU64::new(1),
            copies: super::copy::CopyAhead::default(),
            lock_owners: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The quorum gate of the data path (see [`super::QuorumGate`]): `EIO` when the cluster
    /// holds no quorum within the I/O timeout.
    /// The scope returned sets the deadline of the operation (see [`super::QuorumGate::pass`]).
    pub(super) fn gate(&self) -> Result<Option<sheep_objects::deadline::Scope>, Errno> {
        self.options
            .quorum
            .as_ref()
            .map_or(Ok(None), |g| g.pass().map(Some))
    }

    /// Opens a handle on `ino`: counts it, honours `O_TRUNC`, picks the cache mode.
    pub(super) fn open_file(
        &self,
        ino: Ino,
        flags: i32,
    ) -> Result<(FileHandle, FopenFlags), Error> {
        let write = OpenFlags(flags).acc_mode() != OpenAccMode::O_RDONLY;
        self.pool.open_handle(ino, write)?;
        if write && flags & libc::O_TRUNC != 0 {
            let trunc = SetAttr {
                size: Some(0),
                ..SetAttr::default()
            };
            if let Err(e) = self.pool.setattr(ino, trunc) {
                self.release_quietly(ino);
                return Err(e);
            }
        }
        let mut fopen = FopenFlags::empty();
        if self.options.parallel_direct_writes && flags & libc::O_DIRECT != 0 {
            fopen |= FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES;
        }
        let fh = FileHandle(self.next_fh.fetch_add(1, Ordering::Relaxed));
        Ok((fh, fopen))
    }

    pub(super) fn release_quietly(&self, ino: Ino) {
        if let Err(e) = self.pool.release_handle(ino) {
            warn!(ino = ino.0, error = %e, "releasing a handle failed");
        }
    }

    pub(super) fn attr_of(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        if ino == INodeNo::ROOT {
            return Ok(root_attr(self.started));
        }
        self.pool
            .getattr(Ino(ino.0))
            .map(|a| file_attr(&a))
            .map_err(|e| fuse_errno(&e))
    }

    pub(super) fn do_setattr(&self, ino: INodeNo, set: SetAttr) -> Result<FileAttr, Errno> {
        if ino == INodeNo::ROOT {
            // The root is fixed; time updates (`touch MNT`) are accepted and ignored.
            let changes_more_than_times =
                set.size.is_some() || set.mode.is_some() || set.uid.is_some() || set.gid.is_some();
            return match changes_more_than_times {
                true => Err(Errno::EPERM),
                false => Ok(root_attr(self.started)),
            };
        }
        let ino = Ino(ino.0);
        let attr = match set == SetAttr::default() {
            true => self.pool.getattr(ino),
            false => self.pool.setattr(ino, set),
        };
        attr.map(|a| file_attr(&a)).map_err(|e| fuse_errno(&e))
    }

    pub(super) fn do_create(
        &self,
        req: &Request,
        name: &str,
        mode: u32,
        flags: i32,
    ) -> CreateResult {
        if mode & libc::S_IFMT != 0 && mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno::EPERM);
        }
        let opts = CreateOpts {
            copies: None,
            mode: mode & 0o7777,
            uid: req.uid(),
            gid: req.gid(),
        };
        let created = match self.pool.create(name, 0, opts) {
            // Another creator won the race: a non-exclusive create opens the existing file.
            Err(Error::Exists(_)) if flags & libc::O_EXCL == 0 => self.pool.lookup(name),
            other => other,
        };
        let attr = created.map_err(|e| fuse_errno(&e))?;
        let (fh, fopen) = self
            .open_file(attr.ino, flags)
            .map_err(|e| fuse_errno(&e))?;
        match self.pool.getattr(attr.ino) {
            Ok(attr) => Ok((attr, fh, fopen)),
            Err(e) => {
                self.release_quietly(attr.ino);
                Err(fuse_errno(&e))
            }
        }
    }

    pub(super) fn do_rename(&self, from: &str, to: &str, flags: RenameFlags) -> Result<(), Errno> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT)
            || !RenameFlags::all().contains(flags)
        {
            return Err(Errno::EINVAL);
        }
        let replace = !flags.contains(RenameFlags::RENAME_NOREPLACE);
        self.pool
            .rename_with(from, to, replace)
            .map_err(|e| fuse_errno(&e))
    }

    pub(super) fn do_fallocate(
        &self,
        ino: Ino,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        let size = self.pool.getattr(ino).map_err(|e| fuse_errno(&e))?.size;
        let plan = falloc::plan(mode, offset, len, size).map_err(Errno::from_i32)?;
        if let Some((off, len)) = plan.discard {
            self.pool
                .discard(ino, off, len)
                .map_err(|e| fuse_errno(&e))?;
        }
        if let Some(size) = plan.grow_to {
            let grow = SetAttr {
                size: Some(size),
                ..SetAttr::default()
            };
            self.pool.setattr(ino, grow).map_err(|e| fuse_errno(&e))?;
        }
        Ok(())
    }

    pub(super) fn do_lseek(&self, ino: Ino, offset: i64, whence: i32) -> Result<i64, Errno> {
        let offset = u64::try_from(offset).map_err(|_| Errno::ENXIO)?;
        let size = self.pool.getattr(ino).map_err(|e| fuse_errno(&e))?.size;
        if offset >= size {
            return Err(Errno::ENXIO);
        }
        let found = match whence {
            libc::SEEK_DATA => match self.pool.seek_data(ino, offset) {
                Ok(Some(data)) if data < size => data,
                Ok(_) => return Err(Errno::ENXIO),
                Err(e) => return Err(fuse_errno(&e)),
            },
            libc::SEEK_HOLE => self
                .pool
                .seek_hole(ino, offset)
                .map_err(|e| fuse_errno(&e))?
                .min(size),
            _ => return Err(Errno::EINVAL),
        };
        i64::try_from(found).map_err(|_| Errno::EOVERFLOW)
    }

    pub(super) fn do_statfs(&self, reply: ReplyStatfs) {
        match self.pool.stats() {
            Ok(s) => {
                let copies = u64::from(s.default_copies.max(1));
                let block = u64::from(BLOCK_SIZE);
                let files = u64::from(sheep_objects::Vid::MAX.0);
                reply.statfs(
                    s.capacity / copies / block,
                    s.free / copies / block,
                    s.free / copies / block,
                    files,
                    files.saturating_sub(u64::from(s.vdis)),
                    BLOCK_SIZE,
                    u32::try_from(NAME_MAX).unwrap_or(255),
                    BLOCK_SIZE,
                );
            }
            Err(e) => reply.error(fuse_errno(&e)),
        }
    }
}

pub(super) type CreateResult = Result<(VdiAttr, FileHandle, FopenFlags), Errno>;

/// Runs one FUSE callback, turning a panic into a log line; the reply, dropped while unwinding,
/// answers `EIO`.
pub(super) fn guarded(op: &'static str, f: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        error!(op, panic = %msg, "FUSE operation panicked; answered EIO");
    }
}

/// A directory-entry name as a VDI name; `Err` is the errno for a name no VDI can have.
pub(super) fn vdi_name(name: &OsStr) -> Result<&str, Errno> {
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    name.to_str().ok_or(Errno::EINVAL)
}

/// Checks that `parent` is the root and returns `name` as a VDI name.
pub(super) fn child_name(parent: INodeNo, name: &OsStr) -> Result<&str, Errno> {
    if parent != INodeNo::ROOT {
        return Err(Errno::ENOTDIR);
    }
    vdi_name(name)
}

pub(super) fn vdi_ino(ino: INodeNo) -> Result<Ino, Errno> {
    match ino == INodeNo::ROOT {
        true => Err(Errno::EISDIR),
        false => Ok(Ino(ino.0)),
    }
}

thread_local! {
    /// Per-worker buffer of the reads under [`sheep_objects::budget::POOL_MIN`] (larger ones
    /// take theirs from the memory budget), so that small reads do not allocate.
    pub(super) static SMALL_READ: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn empty_reply(reply: ReplyEmpty, res: Result<(), Errno>) {
    match res {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

pub(super) fn attr_reply(reply: ReplyAttr, res: Result<FileAttr, Errno>) {
    match res {
        Ok(a) => reply.attr(&TTL, &a),
        Err(e) => reply.error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn names_are_checked_before_the_pool_sees_them() {
        assert_eq!(vdi_name(OsStr::new("vm0")), Ok("vm0"));
        let long = "x".repeat(NAME_MAX + 1);
        assert_eq!(vdi_name(OsStr::new(&long)), Err(Errno::ENAMETOOLONG));
        assert_eq!(child_name(INodeNo(5), OsStr::new("a")), Err(Errno::ENOTDIR));
        assert_eq!(vdi_ino(INodeNo::ROOT), Err(Errno::EISDIR));
    }

    #[test]
    pub(super) fn a_panicking_operation_is_contained() {
        guarded("test", || panic!("boom"));
    }
}
