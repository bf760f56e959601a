//! The thin `fuser::Filesystem` adapter over [`sheep_vdi::Pool`].
//!
//! Every callback checks its arguments, makes one or two `Pool` calls and replies; the volume
//! semantics live in `sheep-vdi` and are tested there without FUSE.
//!
//! # Threads
//!
//! `Pool` is synchronous and thread-safe and does blocking local disk I/O, so callbacks call it
//! directly on fuser's worker threads (`Config::n_threads`, one cloned `/dev/fuse` fd each). Those
//! threads *are* the blocking I/O pool: there is no async runtime and no `block_on` on the data
//! path, which is what lets 4 KiB random I/O reach tens of thousands of IOPS (32 threads with
//! `clone_fd` measured 27–28k IOPS; `FUSE_ASYNC_DIO` is what lets O_DIRECT requests overlap at
//! all). A panic inside a callback is caught and answered with `EIO` (see [`guarded`]), so it
//! neither takes the mount down nor kills a worker thread.
//!
//! # Caching
//!
//! * No writeback cache: a `write` is acknowledged by the kernel only after `Pool::write`
//!   returned, so the volatile-write-cache contract of the brief (lost only if *this* host
//!   crashes before `fsync`) holds, and `fsync` is exactly `Pool::flush`.
//! * The page cache is kept for buffered I/O (QEMU `cache=writeback`, `cp`, `qemu-img`, mmap) so
//!   those stay coherent with each other on this host; O_DIRECT bypasses it (QEMU `cache=none`).
//!   Opens never set `FOPEN_KEEP_CACHE`: every open drops cached pages, so data written through
//!   another path (another host, `dog vdi rollback`) is never served stale to a new open, and
//!   `FUSE_AUTO_INVAL_DATA` drops them too when a refreshed `getattr` shows a changed mtime or
//!   size. Admin operations invalidate what they change through the [`fuser::Notifier`].
//! * Attributes and entries are cached for [`TTL`] (1 s); negative lookups are not cached.
//!
//! # Locks
//!
//! `getlk`/`setlk` are not implemented and `FUSE_POSIX_LOCKS`/`FUSE_FLOCK_LOCKS` are not
//! requested, so the kernel keeps POSIX, OFD and flock locks locally: they are host-wide, which
//! is what QEMU's image locking needs on one host. Cluster-wide locks come with the cluster.
//!
//! # Extended attributes
//!
//! The xattr callbacks answer `ENOSYS` on purpose: the kernel then remembers that the mount has
//! no xattrs and answers `EOPNOTSUPP` itself from then on. Without that, every write would cost
//! an extra round trip, because the kernel asks for `security.capability` before each write to
//! decide whether to drop privileges.

use crate::attr::{file_attr, perm_bits, root_attr, time_or_now, BLOCK_SIZE};
use crate::dir::entries_after;
use crate::errno::{fuse_errno, NAME_MAX};
use crate::falloc;
use fuser::{
    AccessFlags, Config, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenAccMode,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, SessionACL,
    TimeOrNow, WriteFlags,
};
use sheep_objects::OBJECT_SIZE;
use sheep_vdi::{CreateOpts, Error, Ino, Pool, SetAttr, VdiAttr};
use std::cell::RefCell;
use std::ffi::OsStr;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{debug, debug_span, error, info, warn};

/// How long the kernel may cache attributes and directory entries.
pub const TTL: Duration = Duration::from_secs(1);

/// Largest `copy_file_range` answered in one call: the FUSE reply carries a `u32` byte count,
/// and a multiple of the object size keeps later chunks object-aligned (so they stay shared).
const MAX_COPY_CHUNK: u64 = (u32::MAX as u64 / OBJECT_SIZE) * OBJECT_SIZE;

/// Largest write request asked of the kernel, when `fs.fuse.max_pages_limit` allows it.
const MAX_WRITE: u32 = 4 << 20;

/// Pending background requests (readahead, async direct I/O) the kernel may queue.
const MAX_BACKGROUND: u16 = 256;

/// Queue length at which the kernel treats the mount as congested.
const CONGESTION_THRESHOLD: u16 = 192;

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
            parallel_direct_writes: false,
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

/// The sheepfs filesystem: a flat directory of VDIs.
pub struct SheepFs {
    pool: Arc<Pool>,
    options: FsOptions,
    started: SystemTime,
    next_fh: AtomicU64,
}

impl SheepFs {
    /// Serves `pool`.
    pub fn new(pool: Arc<Pool>, options: FsOptions) -> SheepFs {
        SheepFs {
            pool,
            options,
            started: SystemTime::now(),
            next_fh: AtomicU64::new(1),
        }
    }

    /// Opens a handle on `ino`: counts it, honours `O_TRUNC`, picks the cache mode.
    fn open_file(&self, ino: Ino, flags: i32) -> Result<(FileHandle, FopenFlags), Error> {
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

    fn release_quietly(&self, ino: Ino) {
        if let Err(e) = self.pool.release_handle(ino) {
            warn!(ino = ino.0, error = %e, "releasing a handle failed");
        }
    }

    fn attr_of(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        if ino == INodeNo::ROOT {
            return Ok(root_attr(self.started));
        }
        self.pool
            .getattr(Ino(ino.0))
            .map(|a| file_attr(&a))
            .map_err(|e| fuse_errno(&e))
    }

    fn do_setattr(&self, ino: INodeNo, set: SetAttr) -> Result<FileAttr, Errno> {
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

    fn do_create(&self, req: &Request, name: &str, mode: u32, flags: i32) -> CreateResult {
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
        let (fh, fopen) = self.open_file(attr.ino, flags).map_err(|e| fuse_errno(&e))?;
        match self.pool.getattr(attr.ino) {
            Ok(attr) => Ok((attr, fh, fopen)),
            Err(e) => {
                self.release_quietly(attr.ino);
                Err(fuse_errno(&e))
            }
        }
    }

    fn do_rename(&self, from: &str, to: &str, flags: RenameFlags) -> Result<(), Errno> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT)
            || !RenameFlags::all().contains(flags)
        {
            return Err(Errno::EINVAL);
        }
        if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            // `Pool::rename` always replaces; this check races only with another creator of
            // `to`, which the cluster's metadata sequencer will close.
            match self.pool.lookup(to) {
                Ok(_) => return Err(Errno::EEXIST),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(fuse_errno(&e)),
            }
        }
        self.pool.rename(from, to).map_err(|e| fuse_errno(&e))
    }

    fn do_fallocate(&self, ino: Ino, offset: u64, len: u64, mode: i32) -> Result<(), Errno> {
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

    fn do_lseek(&self, ino: Ino, offset: i64, whence: i32) -> Result<i64, Errno> {
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

    fn do_statfs(&self, reply: ReplyStatfs) {
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

type CreateResult = Result<(VdiAttr, FileHandle, FopenFlags), Errno>;

/// Runs one FUSE callback, turning a panic into a log line; the reply, dropped while unwinding,
/// answers `EIO`.
fn guarded(op: &'static str, f: impl FnOnce()) {
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
fn vdi_name(name: &OsStr) -> Result<&str, Errno> {
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    name.to_str().ok_or(Errno::EINVAL)
}

/// Checks that `parent` is the root and returns `name` as a VDI name.
fn child_name(parent: INodeNo, name: &OsStr) -> Result<&str, Errno> {
    if parent != INodeNo::ROOT {
        return Err(Errno::ENOTDIR);
    }
    vdi_name(name)
}

fn vdi_ino(ino: INodeNo) -> Result<Ino, Errno> {
    match ino == INodeNo::ROOT {
        true => Err(Errno::EISDIR),
        false => Ok(Ino(ino.0)),
    }
}

thread_local! {
    /// Per-worker read buffer, reused so that reads do not allocate.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn empty_reply(reply: ReplyEmpty, res: Result<(), Errno>) {
    match res {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn attr_reply(reply: ReplyAttr, res: Result<FileAttr, Errno>) {
    match res {
        Ok(a) => reply.attr(&TTL, &a),
        Err(e) => reply.error(e),
    }
}

impl fuser::Filesystem for SheepFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let wanted = [
            InitFlags::FUSE_ASYNC_DIO,
            InitFlags::FUSE_BIG_WRITES,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_AUTO_INVAL_DATA,
            InitFlags::FUSE_MAX_PAGES,
        ];
        for flag in wanted {
            if config.add_capabilities(flag).is_err() {
                warn!(flag = ?flag, "the kernel lacks a FUSE capability");
            }
        }
        let max_write = match config.set_max_write(self.options.max_write) {
            Ok(_) => self.options.max_write,
            Err(nearest) => {
                let _ = config.set_max_write(nearest);
                nearest
            }
        };
        if let Err(nearest) = config.set_max_background(MAX_BACKGROUND) {
            let _ = config.set_max_background(nearest);
        }
        if let Err(nearest) = config.set_congestion_threshold(CONGESTION_THRESHOLD) {
            let _ = config.set_congestion_threshold(nearest);
        }
        info!(
            max_write,
            max_background = MAX_BACKGROUND,
            kernel_abi = %config.kernel_abi(),
            "FUSE session initialised"
        );
        Ok(())
    }

    fn destroy(&mut self) {
        debug!("FUSE session destroyed");
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guarded("lookup", || {
            let _span = debug_span!("lookup", req = req.unique().0, ?name).entered();
            let res = child_name(parent, name).and_then(|name| {
                self.pool
                    .lookup(name)
                    .map(|a| file_attr(&a))
                    .map_err(|e| match e {
                        // Invalid names (`a@b@c`) simply do not exist.
                        Error::InvalidName(..) => Errno::ENOENT,
                        e => fuse_errno(&e),
                    })
            });
            match res {
                Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        guarded("getattr", || {
            let _span = debug_span!("getattr", req = req.unique().0, ino = ino.0, ?fh).entered();
            attr_reply(reply, self.attr_of(ino));
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        guarded("setattr", || {
            let _span = debug_span!("setattr", req = req.unique().0, ino = ino.0, ?fh, ?size)
                .entered();
            let set = SetAttr {
                size,
                mode: mode.map(|m| u32::from(perm_bits(m))),
                uid,
                gid,
                atime: atime.map(time_or_now),
                mtime: mtime.map(time_or_now),
            };
            attr_reply(reply, self.do_setattr(ino, set));
        });
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("unlink", || {
            let _span = debug_span!("unlink", req = req.unique().0, ?name).entered();
            let res = child_name(parent, name)
                .and_then(|name| self.pool.unlink(name).map_err(|e| fuse_errno(&e)));
            empty_reply(reply, res);
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("rmdir", || {
            let res = child_name(parent, name).and_then(|name| match self.pool.lookup(name) {
                Ok(_) => Err(Errno::ENOTDIR),
                Err(_) => Err(Errno::ENOENT),
            });
            empty_reply(reply, res);
        });
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        guarded("rename", || {
            let _span =
                debug_span!("rename", req = req.unique().0, ?name, ?newname, %flags).entered();
            let res = child_name(parent, name).and_then(|from| {
                let to = child_name(newparent, newname)?;
                self.do_rename(from, to, flags)
            });
            empty_reply(reply, res);
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guarded("open", || {
            let _span = debug_span!("open", req = req.unique().0, ino = ino.0, flags = %format_args!("{:#x}", flags.0)).entered();
            let res = vdi_ino(ino)
                .and_then(|ino| self.open_file(ino, flags.0).map_err(|e| fuse_errno(&e)));
            match res {
                Ok((fh, fopen)) => reply.opened(fh, fopen),
                Err(e) => reply.error(e),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        guarded("read", || {
            let _span = debug_span!("read", req = req.unique().0, ino = ino.0, fh = fh.0, offset, size).entered();
            let Ok(len) = usize::try_from(size) else {
                return reply.error(Errno::EINVAL);
            };
            READ_BUF.with_borrow_mut(|buf| {
                if buf.len() < len {
                    buf.resize(len, 0);
                }
                match self.pool.read(Ino(ino.0), offset, &mut buf[..len]) {
                    Ok(n) => reply.data(&buf[..n.min(len)]),
                    Err(e) => {
                        debug!(error = %e, "read failed");
                        reply.error(fuse_errno(&e));
                    }
                }
            });
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        guarded("write", || {
            let _span = debug_span!("write", req = req.unique().0, ino = ino.0, fh = fh.0, offset, len = data.len()).entered();
            match self.pool.write(Ino(ino.0), offset, data) {
                Ok(n) => match u32::try_from(n) {
                    Ok(n) => reply.written(n),
                    Err(_) => reply.error(Errno::EIO),
                },
                Err(e) => {
                    debug!(error = %e, "write failed");
                    reply.error(fuse_errno(&e));
                }
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // `close` is not a durability point (writes are already in the pool); `fsync` is.
        reply.ok();
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        guarded("release", || {
            let _span = debug_span!("release", req = req.unique().0, ino = ino.0, fh = fh.0)
                .entered();
            let res = self.pool.release_handle(Ino(ino.0));
            empty_reply(reply, res.map_err(|e| fuse_errno(&e)));
        });
    }

    fn fsync(&self, req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        guarded("fsync", || {
            let _span = debug_span!("fsync", req = req.unique().0, ino = ino.0, fh = fh.0, datasync).entered();
            let res = self.pool.flush(Ino(ino.0)).map_err(|e| {
                warn!(ino = ino.0, error = %e, "fsync failed");
                fuse_errno(&e)
            });
            empty_reply(reply, res);
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match ino == INodeNo::ROOT {
            true => reply.opened(FileHandle(0), FopenFlags::empty()),
            false => reply.error(Errno::ENOTDIR),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        guarded("readdir", || {
            let _span = debug_span!("readdir", req = req.unique().0, offset).entered();
            if ino != INodeNo::ROOT {
                return reply.error(Errno::ENOTDIR);
            }
            for e in entries_after(self.pool.list(), offset) {
                if reply.add(e.ino, e.offset, e.kind, &e.name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Namespace changes are durable when the pool acknowledges them.
        reply.ok();
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        guarded("statfs", || {
            let _span = debug_span!("statfs", req = req.unique().0).entered();
            self.do_statfs(reply);
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        // ENOSYS makes the kernel answer EOPNOTSUPP itself from now on (see the module doc).
        reply.error(Errno::ENOSYS);
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // `default_permissions` makes the kernel check modes; this is only reached without it.
        reply.ok();
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No ioctls (`isatty` probes with TCGETS; FICLONE never reaches FUSE).
        reply.error(Errno::ENOTTY);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        guarded("create", || {
            let _span = debug_span!("create", req = req.unique().0, ?name, mode = %format_args!("{mode:o}")).entered();
            let res = child_name(parent, name).and_then(|name| self.do_create(req, name, mode, flags));
            match res {
                Ok((attr, fh, fopen)) => {
                    debug!(ino = attr.ino.0, fh = fh.0, "created");
                    reply.created(&TTL, &file_attr(&attr), Generation(0), fh, fopen);
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        guarded("fallocate", || {
            let _span = debug_span!("fallocate", req = req.unique().0, ino = ino.0, fh = fh.0, offset, length, mode).entered();
            let res = vdi_ino(ino).and_then(|ino| self.do_fallocate(ino, offset, length, mode));
            empty_reply(reply, res);
        });
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        guarded("lseek", || {
            let _span = debug_span!("lseek", req = req.unique().0, ino = ino.0, fh = fh.0, offset, whence).entered();
            match vdi_ino(ino).and_then(|ino| self.do_lseek(ino, offset, whence)) {
                Ok(off) => reply.offset(off),
                Err(e) => reply.error(e),
            }
        });
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        guarded("copy_file_range", || {
            let _span = debug_span!(
                "copy_file_range",
                req = req.unique().0,
                ino_in = ino_in.0,
                fh_in = fh_in.0,
                offset_in,
                ino_out = ino_out.0,
                fh_out = fh_out.0,
                offset_out,
                len
            )
            .entered();
            if !flags.is_empty() {
                return reply.error(Errno::EINVAL);
            }
            let len = len.min(MAX_COPY_CHUNK);
            let res = self
                .pool
                .copy_range(Ino(ino_in.0), offset_in, Ino(ino_out.0), offset_out, len);
            match res.map(u32::try_from) {
                Ok(Ok(n)) => reply.written(n),
                Ok(Err(_)) => reply.error(Errno::EIO),
                Err(e) => {
                    debug!(error = %e, "copy_file_range failed");
                    reply.error(fuse_errno(&e));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_chunks_fit_a_u32_and_keep_object_alignment() {
        assert!(MAX_COPY_CHUNK <= u64::from(u32::MAX));
        assert_eq!(MAX_COPY_CHUNK % OBJECT_SIZE, 0);
        assert!(MAX_COPY_CHUNK > u64::from(u32::MAX) - OBJECT_SIZE);
    }

    #[test]
    fn names_are_checked_before_the_pool_sees_them() {
        assert_eq!(vdi_name(OsStr::new("vm0")), Ok("vm0"));
        let long = "x".repeat(NAME_MAX + 1);
        assert_eq!(vdi_name(OsStr::new(&long)), Err(Errno::ENAMETOOLONG));
        assert_eq!(child_name(INodeNo(5), OsStr::new("a")), Err(Errno::ENOTDIR));
        assert_eq!(vdi_ino(INodeNo::ROOT), Err(Errno::EISDIR));
    }

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

    #[test]
    fn a_panicking_operation_is_contained() {
        guarded("test", || panic!("boom"));
    }
}
