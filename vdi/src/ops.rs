//! Metadata operations: create, unlink, rename, attributes, handles.

use crate::alloc::AllocTable;
use crate::attr::{CreateOpts, Ino, SetAttr, Time, VdiAttr};
use crate::error::{Error, Result};
use crate::inode::{check_name, InodeV1};
use crate::pool::{Pool, MAX_VDI_SIZE};
use crate::vdi::Vdi;
use sheep_objects::{Oid, Vid, OBJECT_SIZE};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Pool {
    /// Picks a VDI id that no record uses and that owns no referenced object.
    /// The caller holds `ns`.
    pub(crate) fn alloc_vid(&self) -> Result<Vid> {
        let used: HashSet<Vid> = self
            .vdis
            .read()
            .values()
            .map(|v| v.inner.lock().vid())
            .collect();
        for _ in 0..Vid::MAX.0 {
            let mut n = self.next_vid.fetch_add(1, Ordering::SeqCst);
            if n == 0 || n > Vid::MAX.0 {
                self.next_vid.store(2, Ordering::SeqCst);
                n = 1;
            }
            let vid = Vid(n);
            // An id is reused only once nothing references its objects and none of them waits
            // for reclaim: a durable table elsewhere may still name a pending object.
            if !used.contains(&vid)
                && !self.refs.lock().owns_objects(vid)
                && !self.pending.lock().iter().any(|o| o.vid() == vid)
            {
                return Ok(vid);
            }
        }
        Err(Error::NoVid)
    }

    pub(crate) fn alloc_ino(&self) -> Ino {
        Ino(self.next_ino.fetch_add(1, Ordering::SeqCst))
    }

    pub(crate) fn insert_vdi(&self, vdi: Vdi) -> Arc<Vdi> {
        let (ino, name) = {
            let i = vdi.inner.lock();
            (i.rec.ino(), i.rec.display_name())
        };
        let vdi = Arc::new(vdi);
        self.vdis.write().insert(ino, vdi.clone());
        self.names.write().insert(name, ino);
        vdi
    }

    pub(crate) fn forget_vdi(&self, ino: Ino, name: &str) {
        self.vdis.write().remove(&ino);
        let mut names = self.names.write();
        if names.get(name) == Some(&ino) {
            names.remove(name);
        }
    }

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
        let _ns = self.ns.lock();
        if self.names.read().contains_key(name) {
            return Err(Error::Exists(name.to_owned()));
        }
        let vid = self.alloc_vid()?;
        // A table left by a crash under this id must not come back at the next start.
        self.store.remove(Oid::alloc(vid))?;
        let now = Time::now();
        let rec = InodeV1 {
            ino: self.alloc_ino().0,
            name: name.to_owned(),
            tag: None,
            vid: vid.0,
            parent: None,
            size,
            copies,
            mode: opts.mode & 0o7777,
            uid: opts.uid,
            gid: opts.gid,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            snapshot: false,
            unlinked: false,
        };
        let ino = rec.ino();
        self.insert_vdi(Vdi::new(rec, AllocTable::new()));
        if let Err(e) = self.persist_table() {
            self.forget_vdi(ino, name);
            return Err(e);
        }
        tracing::info!(name, vid = %vid, size, "created VDI");
        self.getattr(ino)
    }

    /// Removes a VDI or snapshot from the namespace; its data goes when the last handle
    /// closes (at once if none is open).
    pub fn unlink(&self, name: &str) -> Result<()> {
        let _ns = self.ns.lock();
        let ino = self.ino_of(name)?;
        self.unlink_locked(ino, name)?;
        self.persist_table()
    }

    /// Unlinks `ino` from the namespace; the caller holds `ns` and persists the table.
    fn unlink_locked(&self, ino: Ino, name: &str) -> Result<()> {
        self.names.write().remove(name);
        self.detach_locked(ino)?;
        tracing::info!(name, "unlinked VDI");
        Ok(())
    }

    /// Deletes a VDI already gone from the namespace, or marks it unlinked while the kernel
    /// or an open handle still refers to it. The caller holds `ns`.
    fn detach_locked(&self, ino: Ino) -> Result<()> {
        let vdi = self.vdi(ino)?;
        if vdi.in_use() {
            vdi.inner.lock().rec.unlinked = true;
        } else {
            self.vdis.write().remove(&ino);
            self.drop_table(&vdi);
        }
        Ok(())
    }

    /// Drops every reference of a deleted VDI's table and its allocation object.
    fn drop_table(&self, vdi: &Vdi) {
        let _g = vdi.gate.write();
        let (vid, entries) = {
            let mut inner = vdi.inner.lock();
            let entries: Vec<(u32, Vid)> = inner.table.iter().collect();
            inner.table = AllocTable::new();
            inner.dirty_chunks.clear();
            inner.dirty_objects.clear();
            (inner.vid(), entries)
        };
        for (idx, owner) in entries {
            self.drop_ref(Oid::data(owner, idx));
        }
        if let Err(e) = self.store.remove(Oid::alloc(vid)) {
            tracing::warn!(vid = %vid, error = %e, "could not remove allocation table; it is removed at the next start");
        }
    }

    /// Renames atomically, replacing `to` if it exists. Snapshots move with their VDI.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.rename_with(from, to, true)
    }

    /// Renames atomically; an existing `to` is replaced if `replace`, else the rename fails
    /// with [`Error::Exists`] (`RENAME_NOREPLACE`).
    pub fn rename_with(&self, from: &str, to: &str, replace: bool) -> Result<()> {
        check_name(to)?;
        let _ns = self.ns.lock();
        let ino = self.ino_of(from)?;
        let vdi = self.vdi(ino)?;
        if vdi.inner.lock().rec.snapshot {
            return Err(Error::ReadOnly(from.to_owned()));
        }
        if from == to {
            return Ok(());
        }
        let snaps = self.snapshots_of(from);
        if let Ok(target) = self.ino_of(to) {
            if !replace {
                return Err(Error::Exists(to.to_owned()));
            }
            if !self.snapshots_of(to).is_empty() {
                return Err(Error::Busy(format!(
                    "{to} has snapshots; delete them first"
                )));
            }
            self.unlink_locked(target, to)?;
        }
        for i in snaps.iter().copied().chain([ino]) {
            let v = self.vdi(i)?;
            let (old, new) = {
                let mut inner = v.inner.lock();
                let old = inner.rec.display_name();
                inner.rec.name = to.to_owned();
                inner.rec.ctime = Time::now();
                (old, inner.rec.display_name())
            };
            let mut names = self.names.write();
            names.remove(&old);
            names.insert(new, i);
        }
        self.persist_table()?;
        tracing::info!(from, to, "renamed VDI");
        Ok(())
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
        let _ns = self.ns.lock();
        let vdi = self.vdi(ino)?;
        if let Some(size) = set.size {
            self.resize_locked(&vdi, size)?;
        }
        {
            let mut inner = vdi.inner.lock();
            let r = &mut inner.rec;
            if let Some(m) = set.mode {
                r.mode = m & 0o7777;
            }
            if let Some(u) = set.uid {
                r.uid = u;
            }
            if let Some(g) = set.gid {
                r.gid = g;
            }
            if let Some(t) = set.atime {
                r.atime = t;
            }
            if let Some(t) = set.mtime {
                r.mtime = t;
            }
            r.ctime = Time::now();
        }
        self.persist_table()?;
        self.getattr(ino)
    }

    /// Grows or shrinks a VDI; what lies past a new, smaller end is freed and reads as zeros
    /// if the VDI grows again. The caller holds `ns` and persists the table.
    fn resize_locked(&self, vdi: &Vdi, size: u64) -> Result<()> {
        if size > MAX_VDI_SIZE {
            return Err(Error::TooBig(size));
        }
        let _g = vdi.gate.write();
        let (old, snapshot, name) = {
            let i = vdi.inner.lock();
            (i.rec.size, i.rec.snapshot, i.rec.display_name())
        };
        if snapshot {
            return Err(Error::ReadOnly(name));
        }
        if size < old {
            let entries: Vec<u32> = {
                let i = vdi.inner.lock();
                let first = u32::try_from(size / OBJECT_SIZE).unwrap_or(u32::MAX);
                i.table.iter_from(first).map(|(idx, _)| idx).collect()
            };
            for idx in entries {
                let base = u64::from(idx) * OBJECT_SIZE;
                let from = size.max(base) - base;
                let piece = crate::io::Piece {
                    idx,
                    off: from,
                    len: OBJECT_SIZE - from,
                    pos: 0,
                };
                self.discard_piece(vdi, piece)?;
            }
            self.flush_locked(vdi)?;
        }
        let mut inner = vdi.inner.lock();
        inner.rec.size = size;
        inner.rec.mtime = Time::now();
        Ok(())
    }

    /// Counts an open handle, which keeps an unlinked VDI alive until it is released.
    pub fn open_handle(&self, ino: Ino, write: bool) -> Result<()> {
        let vdi = self.vdi(ino)?;
        let inner = vdi.inner.lock();
        if write && inner.rec.snapshot {
            return Err(Error::ReadOnly(inner.rec.display_name()));
        }
        vdi.handles.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Drops an open handle; the last reference to an unlinked VDI deletes it.
    pub fn release_handle(&self, ino: Ino) -> Result<()> {
        let vdi = self.vdi(ino)?;
        if vdi.handles.fetch_sub(1, Ordering::SeqCst) != 1 {
            return Ok(());
        }
        self.delete_if_unused(ino, &vdi)
    }

    /// Counts a reference the kernel holds (a FUSE lookup or create reply), which keeps an
    /// unlinked VDI alive until [`Pool::forget`] drops it.
    pub fn remember(&self, ino: Ino) {
        if let Ok(vdi) = self.vdi(ino) {
            vdi.lookups.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Drops `n` kernel references (FUSE forget); the last reference to an unlinked VDI
    /// deletes it.
    pub fn forget(&self, ino: Ino, n: u64) -> Result<()> {
        let Ok(vdi) = self.vdi(ino) else {
            return Ok(());
        };
        let prev = vdi
            .lookups
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                Some(l.saturating_sub(n))
            })
            .unwrap_or(0);
        if prev > n {
            return Ok(());
        }
        self.delete_if_unused(ino, &vdi)
    }

    fn delete_if_unused(&self, ino: Ino, vdi: &Arc<Vdi>) -> Result<()> {
        if !vdi.inner.lock().rec.unlinked {
            return Ok(());
        }
        let _ns = self.ns.lock();
        if vdi.in_use() || !self.vdis.read().contains_key(&ino) {
            return Ok(());
        }
        self.vdis.write().remove(&ino);
        self.drop_table(vdi);
        self.persist_table()
    }
}
