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
//! path. `FUSE_ASYNC_DIO` is what lets O_DIRECT requests overlap at all (without it: under 900
//! IOPS at any thread count). Measured on a release build, 32 threads with `clone_fd`, 4 KiB
//! O_DIRECT random I/O on one file: about 110k write / 280k read IOPS (fio libaio, QD 32).
//! A panic inside a callback is caught and answered with `EIO` (see `ops::guarded`), so it
//! neither takes the mount down nor kills a worker thread.
//!
//! # Memory
//!
//! A read's reply buffer is taken from the memory budget ([`FsOptions::budget`], see
//! [`crate::memory`]) and given back once replied: a read waits while the budget is spent.
//! Reads under 64 KiB use a buffer of their worker thread instead (at most 64 KiB each, no
//! lock on the path of small random reads). A write's data is fuser's receive buffer of the
//! worker thread (no copy); those buffers are bounded by `max_write` and the thread count,
//! which the daemon derives from `--cache-size`.
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
//! # O_DIRECT
//!
//! In the page-cache mode the kernel serialises O_DIRECT *writes* to one file on its inode lock,
//! which is what QEMU `cache=none,aio=threads` (many threads, `pwritev`) hits. O_DIRECT opens are
//! therefore answered with `FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES` (fio psync, 8 jobs:
//! 33k → 98k write IOPS). With `FUSE_DIRECT_IO_ALLOW_MMAP` the kernel still invalidates cached
//! pages around those writes and allows mmap of such an fd, so buffered, mmap and O_DIRECT users
//! of one file stay coherent (checked by hand on Linux 6.18). See [`FsOptions`].
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

mod copy;
mod ops;
mod options;

pub use ops::SheepFs;
pub use options::{max_write_allowed, mount_config, FsOptions, QuorumGate, MAX_WRITE, TTL};

use crate::attr::{file_attr, perm_bits, time_or_now};
use crate::dir::entries_after;
use crate::errno::fuse_errno;
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLock, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use ops::{attr_reply, child_name, empty_reply, guarded, vdi_ino, SMALL_READ};
use options::{CONGESTION_THRESHOLD, MAX_BACKGROUND};
use sheep_objects::budget::POOL_MIN;
use sheep_vdi::{Error, Ino, LockKind, SetAttr};
use std::ffi::OsStr;
use std::io;
use std::time::SystemTime;
use tracing::{debug, debug_span, info, warn};

impl fuser::Filesystem for SheepFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let wanted = [
            InitFlags::FUSE_ASYNC_DIO,
            // Byte-range locks (POSIX and OFD, QEMU's image locking) come to us, so they are
            // cluster-wide.
            InitFlags::FUSE_POSIX_LOCKS,
            InitFlags::FUSE_BIG_WRITES,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_AUTO_INVAL_DATA,
            InitFlags::FUSE_MAX_PAGES,
            // mmap of an O_DIRECT fd opened with FOPEN_DIRECT_IO, and page-cache invalidation
            // around its direct writes.
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
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
                    .lookup_entry(name)
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

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        guarded("forget", || {
            if let Err(e) = self.pool.forget(Ino(ino.0), nlookup) {
                warn!(ino = ino.0, error = %e, "deleting an unlinked VDI failed");
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
            let _span =
                debug_span!("setattr", req = req.unique().0, ino = ino.0, ?fh, ?size).entered();
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
            // An inode that went away after the kernel looked it up (unlinked or renamed over,
            // maybe on another host) is stale: the kernel then walks the path again.
            let res = vdi_ino(ino).and_then(|ino| {
                self.open_file(ino, flags.0).map_err(|e| match e {
                    sheep_vdi::Error::NotFound(_) => Errno::ESTALE,
                    e => fuse_errno(&e),
                })
            });
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
            let _span = debug_span!(
                "read",
                req = req.unique().0,
                ino = ino.0,
                fh = fh.0,
                offset,
                size
            )
            .entered();
            let Ok(len) = usize::try_from(size) else {
                return reply.error(Errno::EINVAL);
            };
            let _deadline = match self.gate() {
                Ok(d) => d,
                Err(e) => return reply.error(e),
            };
            let serve = |buf: &mut [u8]| match self.pool.read(Ino(ino.0), offset, buf) {
                Ok(n) => reply.data(&buf[..n.min(len)]),
                Err(e) => {
                    debug!(error = %e, "read failed");
                    reply.error(fuse_errno(&e));
                }
            };
            if len < POOL_MIN {
                SMALL_READ.with_borrow_mut(|buf| {
                    if buf.len() < len {
                        buf.resize(len, 0);
                    }
                    serve(&mut buf[..len]);
                });
            } else {
                // Waits for room in the memory budget; the buffer goes back once replied.
                serve(&mut self.options.budget.buf(len));
            }
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
            let _span = debug_span!(
                "write",
                req = req.unique().0,
                ino = ino.0,
                fh = fh.0,
                offset,
                len = data.len()
            )
            .entered();
            let _deadline = match self.gate() {
                Ok(d) => d,
                Err(e) => return reply.error(e),
            };
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
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // `close` is not a durability point (writes are already in the pool); `fsync` is.
        // It does drop the POSIX locks of the closing owner.
        guarded("flush", || {
            let res = self.pool.release_locks(Ino(ino.0), lock_owner.0);
            empty_reply(reply, res.map_err(|e| fuse_errno(&e)));
        });
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        guarded("getlk", || {
            let kind = if typ == libc::F_WRLCK {
                LockKind::Write
            } else {
                LockKind::Read
            };
            match self
                .pool
                .test_lock(Ino(ino.0), lock_owner.0, (start, end), kind)
            {
                Some(l) => {
                    let typ = match l.kind {
                        LockKind::Read => libc::F_RDLCK,
                        LockKind::Write => libc::F_WRLCK,
                    };
                    reply.locked(l.start, l.end, typ, l.pid);
                }
                None => reply.locked(start, end, libc::F_UNLCK, 0),
            }
        });
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        guarded("setlk", || {
            let _span =
                debug_span!("setlk", req = req.unique().0, ino = ino.0, typ, start, end).entered();
            let kind = match typ {
                libc::F_RDLCK => Some(LockKind::Read),
                libc::F_WRLCK => Some(LockKind::Write),
                _ => None,
            };
            if kind.is_some() {
                self.lock_owners
                    .lock()
                    .entry(fh.0)
                    .or_default()
                    .insert(lock_owner.0);
            }
            loop {
                match self
                    .pool
                    .set_lock(Ino(ino.0), lock_owner.0, pid, (start, end), kind)
                {
                    Err(Error::Locked(_)) if sleep => {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    res => {
                        empty_reply(reply, res.map_err(|e| fuse_errno(&e)));
                        return;
                    }
                }
            }
        });
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        guarded("release", || {
            let _span =
                debug_span!("release", req = req.unique().0, ino = ino.0, fh = fh.0).entered();
            self.copies.forget(fh.0);
            let owners = self.lock_owners.lock().remove(&fh.0).unwrap_or_default();
            for owner in owners.into_iter().chain(lock_owner.map(|o| o.0)) {
                if let Err(e) = self.pool.release_locks(Ino(ino.0), owner) {
                    tracing::warn!(ino = ino.0, error = %e, "releasing locks failed");
                }
            }
            let res = self.pool.release_handle(Ino(ino.0));
            empty_reply(reply, res.map_err(|e| fuse_errno(&e)));
        });
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsync", || {
            let _span = debug_span!(
                "fsync",
                req = req.unique().0,
                ino = ino.0,
                fh = fh.0,
                datasync
            )
            .entered();
            let _deadline = match self.gate() {
                Ok(d) => d,
                Err(e) => return reply.error(e),
            };
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

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
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
            let res =
                child_name(parent, name).and_then(|name| self.do_create(req, name, mode, flags));
            match res {
                Ok((attr, fh, fopen)) => {
                    debug!(ino = attr.ino.0, fh = fh.0, "created");
                    self.pool.remember(attr.ino);
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
            let _span = debug_span!(
                "fallocate",
                req = req.unique().0,
                ino = ino.0,
                fh = fh.0,
                offset,
                length,
                mode
            )
            .entered();
            let res = self.gate().and_then(|_deadline| {
                vdi_ino(ino).and_then(|ino| self.do_fallocate(ino, offset, length, mode))
            });
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
            let _span = debug_span!(
                "lseek",
                req = req.unique().0,
                ino = ino.0,
                fh = fh.0,
                offset,
                whence
            )
            .entered();
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
            let _deadline = match self.gate() {
                Ok(d) => d,
                Err(e) => return reply.error(e),
            };
            let fhs = (fh_in.0, fh_out.0);
            let at = copy::Cursor {
                ino_in: ino_in.0,
                off_in: offset_in,
                ino_out: ino_out.0,
                off_out: offset_out,
            };
            if let Some(n) = self.copies.take(fhs, at, len) {
                return reply.written(u32::try_from(n).unwrap_or(u32::MAX));
            }
            let res = self
                .pool
                .copy_range(Ino(ino_in.0), offset_in, Ino(ino_out.0), offset_out, len)
                .map(|copied| self.copies.record(fhs, at, copied));
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
