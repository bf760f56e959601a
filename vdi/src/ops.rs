//! Metadata operations: create, unlink, rename, attributes, handles, locks.

use crate::attr::{CreateOpts, Ino, SetAttr, Time, VdiAttr};
use crate::cmd::{AttrChange, Cmd};
use crate::error::{Error, Result};
use crate::inode::check_name;
use crate::locks::{LockCmd, LockKind, LockOwner};
use crate::pool::{Outcome, Pool, MAX_VDI_SIZE};
use crate::vdi::Vdi;
use sheep_objects::OBJECT_SIZE;
use std::sync::atomic::Ordering;

impl Pool {
    /// Creates an empty VDI.
    pub fn create(&self, name: &str, size: u64, opts: CreateOpts) -> Result<VdiAttr> {
        check_name(name)?;
        if size > MAX_VDI_SIZE {
            return Err(Error::TooBig(size));
        }
        let copies = opts.copies.unwrap_or(self.config.default_copies);
        if copies == 0 {
            return Err(Error::Invalid("copies must be at least 1".into()));
        }
        if self.names.read().contains_key(name) {
            return Err(Error::Exists(name.to_owned()));
        }
        let out = self.submit(Cmd::Create {
            name: name.to_owned(),
            size,
            copies,
            mode: opts.mode,
            uid: opts.uid,
            gid: opts.gid,
            time: Time::now(),
        })?;
        match out {
            Outcome::Ino(ino) => self.getattr(ino),
            Outcome::Done => self.lookup(name),
        }
    }

    /// Removes a VDI or snapshot from the namespace; its data goes when the last handle on
    /// any host closes (at once if none is open).
    pub fn unlink(&self, name: &str) -> Result<()> {
        self.ino_of(name)?;
        self.submit(Cmd::Unlink {
            name: name.to_owned(),
        })
        .map(|_| ())
    }

    /// Renames atomically, replacing `to` if it exists. Snapshots move with their VDI.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.rename_with(from, to, true)
    }

    /// Renames atomically; an existing `to` is replaced if `replace`, else the rename fails
    /// with [`Error::Exists`] (`RENAME_NOREPLACE`).
    pub fn rename_with(&self, from: &str, to: &str, replace: bool) -> Result<()> {
        check_name(to)?;
        self.ino_of(from)?;
        self.submit(Cmd::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
            replace,
            time: Time::now(),
        })
        .map(|_| ())
    }

    /// Inodes of the snapshots of VDI `name`.
    pub(crate) fn snapshots_of(&self, name: &str) -> Vec<Ino> {
        let prefix = format!("{name}@");
        self.names
            .read()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, i)| *i)
            .collect()
    }

    /// Changes size, mode, owner or times.
    pub fn setattr(&self, ino: Ino, set: SetAttr) -> Result<VdiAttr> {
        let vdi = self.vdi(ino)?;
        if let Some(size) = set.size {
            self.resize_vdi(&vdi, size)?;
        }
        let change = AttrChange::from(&set);
        if change != AttrChange::default() || set.size.is_none() {
            self.submit(Cmd::SetAttr {
                ino: ino.0,
                change,
                time: Time::now(),
            })?;
        }
        self.getattr(ino)
    }

    /// Grows or shrinks a VDI; what lies past a new, smaller end is freed and reads as zeros
    /// if the VDI grows again.
    fn resize_vdi(&self, vdi: &Vdi, size: u64) -> Result<()> {
        if size > MAX_VDI_SIZE {
            return Err(Error::TooBig(size));
        }
        let (old, snapshot, name, ino) = {
            let i = vdi.inner.lock();
            (i.rec.size, i.rec.snapshot, i.rec.display_name(), i.rec.ino)
        };
        if snapshot {
            return Err(Error::ReadOnly(name));
        }
        if size < old && !size.is_multiple_of(OBJECT_SIZE) {
            // The object the new end falls in keeps its head: punch its tail (a data change,
            // made by the owner); the log drops the whole objects after it.
            let _g = self.owned_gate_mut(vdi)?;
            let idx = u32::try_from(size / OBJECT_SIZE).unwrap_or(u32::MAX);
            let off = size % OBJECT_SIZE;
            let piece = crate::io::Piece {
                idx,
                off,
                len: OBJECT_SIZE - off,
                pos: 0,
            };
            self.discard_piece(vdi, piece)?;
            self.flush_vdi(vdi)?;
            return self
                .submit(Cmd::Resize {
                    ino,
                    size,
                    time: Time::now(),
                })
                .map(|_| ());
        }
        self.submit(Cmd::Resize {
            ino,
            size,
            time: Time::now(),
        })
        .map(|_| ())
    }

    /// Counts an open handle, which keeps an unlinked VDI alive until it is released on
    /// every host.
    pub fn open_handle(&self, ino: Ino, write: bool) -> Result<()> {
        let vdi = self.vdi(ino)?;
        {
            let inner = vdi.inner.lock();
            if write && inner.rec.snapshot {
                return Err(Error::ReadOnly(inner.rec.display_name()));
            }
        }
        let _o = vdi.open_lock.lock();
        if vdi.handles.load(Ordering::SeqCst) == 0 {
            self.submit(Cmd::Open {
                ino: ino.0,
                node: self.me,
            })?;
        }
        vdi.handles.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Drops an open handle; when this host's last one goes, it tells the cluster (the last
    /// host to close an unlinked VDI deletes it).
    pub fn release_handle(&self, ino: Ino) -> Result<()> {
        let vdi = self.vdi(ino)?;
        let _o = vdi.open_lock.lock();
        if vdi.handles.fetch_sub(1, Ordering::SeqCst) != 1 {
            return Ok(());
        }
        // Closing is not a durability point (fsync is); it only puts the modification time
        // of this host's writes in the log.
        self.log_mtime(&vdi, true)?;
        self.submit(Cmd::Close {
            ino: ino.0,
            node: self.me,
        })
        .map(|_| ())
    }

    /// Counts a reference the kernel holds (a FUSE lookup or create reply).
    pub fn remember(&self, ino: Ino) {
        if let Ok(vdi) = self.vdi(ino) {
            vdi.lookups.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Drops `n` kernel references (FUSE forget).
    pub fn forget(&self, ino: Ino, n: u64) -> Result<()> {
        let Ok(vdi) = self.vdi(ino) else {
            return Ok(());
        };
        let _ = vdi
            .lookups
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                Some(l.saturating_sub(n))
            });
        Ok(())
    }

    /// Takes, converts or drops (`kind: None`) a byte-range lock; a conflict with a lock of
    /// another owner on any host gives [`Error::Locked`].
    pub fn set_lock(
        &self,
        ino: Ino,
        owner: u64,
        pid: u32,
        range: (u64, u64),
        kind: Option<LockKind>,
    ) -> Result<()> {
        self.vdi(ino)?;
        let owner = LockOwner {
            node: self.me,
            owner,
        };
        if let Some(k) = kind {
            if let Some(held) = self
                .locks
                .lock()
                .conflict(ino.0, owner, range.0, range.1, k)
            {
                return Err(Error::Locked(held));
            }
        }
        self.submit(Cmd::Lock(LockCmd::Set {
            ino: ino.0,
            owner,
            pid,
            start: range.0,
            end: range.1,
            kind,
        }))
        .map(|_| ())
    }

    /// The lock that would block the request, if any (F_GETLK).
    pub fn test_lock(
        &self,
        ino: Ino,
        owner: u64,
        range: (u64, u64),
        kind: LockKind,
    ) -> Option<crate::locks::Lock> {
        let owner = LockOwner {
            node: self.me,
            owner,
        };
        self.locks
            .lock()
            .conflict(ino.0, owner, range.0, range.1, kind)
    }

    /// Drops every lock of a lock owner on the VDI (its file was closed).
    pub fn release_locks(&self, ino: Ino, owner: u64) -> Result<()> {
        let owner = LockOwner {
            node: self.me,
            owner,
        };
        if self
            .locks
            .lock()
            .held(ino.0)
            .iter()
            .all(|l| l.owner != owner)
        {
            return Ok(());
        }
        self.submit(Cmd::Lock(LockCmd::ReleaseOwner { ino: ino.0, owner }))
            .map(|_| ())
    }
}
