//! The pool: every VDI of this store, and the operations the mount and `dog` call.
//!
//! Locking, outermost first: `ns` (one metadata operation at a time) → a VDI's `gate` (data
//! I/O shared, id/table changes exclusive) → a stripe lock of the object index (shared for
//! in-place I/O, exclusive to allocate, copy-on-write or reclaim) → `persist` → a VDI's
//! `inner` → `refs` and `pending` (leaves). Data I/O never takes `ns`.
//!
//! Durability: a write is acknowledged once it is in the store's (volatile) cache; `flush`
//! syncs the VDI's written objects, then the table chunks that point at them, then its record
//! if the size changed — so a durable table never names an object whose content is not
//! durable. An object nothing references is deleted only after every table has been flushed
//! past the change that dropped it ([`Pool::reclaim`]), so a crash never leaves a durable
//! table naming a deleted object.

use crate::alloc::AllocTable;
use crate::attr::{Ino, VdiAttr};
use crate::error::{Error, Result};
use crate::inode::{self, InodeV1, TableV1};
use crate::refs::Refs;
use crate::vdi::Vdi;
use parking_lot::{Mutex, RwLock};
use sheep_objects::{ObjectKind, ObjectStore, Oid, Vid, OBJECT_SIZE};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// The largest VDI size: 64 TiB.
pub const MAX_VDI_SIZE: u64 = 64 << 40;

const STRIPES: usize = 1024;

/// Configuration of a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Copies of each object for VDIs created without an explicit count.
    pub default_copies: u8,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { default_copies: 3 }
    }
}

/// Space and count figures of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Raw capacity of the store.
    pub capacity: u64,
    /// Raw free space of the store.
    pub free: u64,
    /// Raw used space of the store.
    pub used: u64,
    /// VDIs and snapshots.
    pub vdis: u32,
    /// Default copies.
    pub default_copies: u8,
}

/// Why a flush failed: a failed sync leaves the VDI's durability unknown; anything else (a
/// table write refused for lack of space) left the durable state as it was.
enum FlushError {
    Sync(Error),
    Other(Error),
}

/// All VDIs of one store.
pub struct Pool {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) config: PoolConfig,
    pub(crate) ns: Mutex<()>,
    pub(crate) vdis: RwLock<HashMap<Ino, Arc<Vdi>>>,
    pub(crate) names: RwLock<BTreeMap<String, Ino>>,
    pub(crate) refs: Mutex<Refs>,
    /// Objects whose last reference went away, waiting for [`Pool::reclaim`].
    pub(crate) pending: Mutex<Vec<Oid>>,
    pub(crate) persist: Mutex<()>,
    pub(crate) next_ino: AtomicU64,
    pub(crate) next_vid: AtomicU32,
    stripes: Box<[RwLock<()>]>,
}

impl Pool {
    /// Opens the pool kept in `store`: loads the VDI table, deletes VDIs that were unlinked
    /// while open, and removes objects that nothing references (left by a crash).
    pub fn open(store: Arc<dyn ObjectStore>, config: PoolConfig) -> Result<Pool> {
        let table = inode::load_table(&*store)?;
        let pool = Pool {
            store,
            config,
            ns: Mutex::new(()),
            vdis: RwLock::new(HashMap::new()),
            names: RwLock::new(BTreeMap::new()),
            refs: Mutex::new(Refs::default()),
            pending: Mutex::new(Vec::new()),
            persist: Mutex::new(()),
            next_ino: AtomicU64::new(table.next_ino.max(2)),
            next_vid: AtomicU32::new(table.next_vid.max(1)),
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
        };
        let mut dropped = false;
        for rec in table.inodes {
            if rec.unlinked {
                dropped = true;
                continue;
            }
            pool.load_vdi(rec)?;
        }
        if dropped {
            pool.persist_table()?;
        }
        pool.collect_garbage()?;
        Ok(pool)
    }

    fn load_vdi(&self, rec: InodeV1) -> Result<()> {
        let max_idx = rec.size.div_ceil(OBJECT_SIZE);
        let mut table = AllocTable::load(&*self.store, rec.vid(), MAX_VDI_SIZE / OBJECT_SIZE)?;
        let beyond: Vec<u32> = table
            .iter()
            .filter(|(i, _)| u64::from(*i) >= max_idx)
            .map(|(i, _)| i)
            .collect();
        for i in &beyond {
            table.set(*i, Vid::NONE);
        }
        {
            let mut refs = self.refs.lock();
            for (idx, owner) in table.iter() {
                refs.inc(Oid::data(owner, idx));
            }
        }
        let ino = rec.ino();
        let name = rec.display_name();
        let vdi = Vdi::new(rec, table);
        if !beyond.is_empty() {
            let mut inner = vdi.inner.lock();
            for i in beyond {
                inner.dirty_chunks.insert(i / crate::alloc::CHUNK_ENTRIES);
            }
        }
        self.vdis.write().insert(ino, Arc::new(vdi));
        self.names.write().insert(name, ino);
        Ok(())
    }

    /// Removes objects no table references: data objects, and allocation objects of VDI ids
    /// no record uses.
    fn collect_garbage(&self) -> Result<()> {
        let live_vids: HashSet<Vid> = self
            .vdis
            .read()
            .values()
            .map(|v| v.inner.lock().vid())
            .collect();
        let mut removed = Vec::new();
        for oid in self.store.list()? {
            let garbage = match oid.kind() {
                ObjectKind::Data => self.refs.lock().count(oid) == 0,
                ObjectKind::Alloc => !live_vids.contains(&oid.vid()),
                ObjectKind::Inode | ObjectKind::Meta => false,
            };
            if garbage {
                self.store.remove(oid)?;
                removed.push(oid);
            }
        }
        if !removed.is_empty() {
            tracing::info!(objects = removed.len(), "removed unreferenced objects");
            self.store.sync(&[])?;
        }
        Ok(())
    }

    /// Every VDI and snapshot visible in the mount, sorted by name.
    pub fn list(&self) -> Vec<VdiAttr> {
        let inos: Vec<Ino> = self.names.read().values().copied().collect();
        inos.into_iter()
            .filter_map(|i| self.getattr(i).ok())
            .collect()
    }

    /// Looks a VDI up by its mount name (`name` or `name@tag`).
    pub fn lookup(&self, name: &str) -> Result<VdiAttr> {
        let ino = self.ino_of(name)?;
        self.getattr(ino)
    }

    /// Looks a VDI up for the kernel and counts the reference it will hold (see
    /// [`Pool::remember`]); the count is taken under the name lock, so an unlink racing with
    /// the lookup sees it.
    pub fn lookup_entry(&self, name: &str) -> Result<VdiAttr> {
        let ino = {
            let names = self.names.read();
            let ino = names
                .get(name)
                .copied()
                .ok_or_else(|| Error::NotFound(name.to_owned()))?;
            self.vdi(ino)?.lookups.fetch_add(1, Ordering::SeqCst);
            ino
        };
        self.getattr(ino).inspect_err(|_| {
            let _ = self.forget(ino, 1);
        })
    }

    pub(crate) fn ino_of(&self, name: &str) -> Result<Ino> {
        self.names
            .read()
            .get(name)
            .copied()
            .ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    pub(crate) fn vdi(&self, ino: Ino) -> Result<Arc<Vdi>> {
        self.vdis
            .read()
            .get(&ino)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("inode {}", ino.0)))
    }

    /// Attributes of a VDI by inode number (also of one unlinked but still open).
    pub fn getattr(&self, ino: Ino) -> Result<VdiAttr> {
        let vdi = self.vdi(ino)?;
        let usage = self.usage(&vdi)?;
        let inner = vdi.inner.lock();
        Ok(inner.attr(usage))
    }

    /// Returns (allocated, shared) bytes of a VDI, cached until its table or data, or any
    /// reference count, changes.
    fn usage(&self, vdi: &Vdi) -> Result<(u64, u64)> {
        let generation = self.refs.lock().generation;
        let oids: Vec<Oid> = {
            let inner = vdi.inner.lock();
            if let Some(u) = inner.usage.filter(|u| u.generation == generation) {
                return Ok((u.allocated, u.shared));
            }
            inner.table.iter().map(|(i, v)| Oid::data(v, i)).collect()
        };
        let mut allocated = 0;
        let mut shared = 0;
        for oid in oids {
            let bytes = self.store.allocated(oid)?;
            allocated += bytes;
            if self.refs.lock().count(oid) > 1 {
                shared += bytes;
            }
        }
        vdi.inner.lock().usage = Some(crate::vdi::Usage {
            generation,
            allocated,
            shared,
        });
        Ok((allocated, shared))
    }

    pub(crate) fn stripe(&self, idx: u32) -> &RwLock<()> {
        &self.stripes[idx as usize % STRIPES]
    }

    /// Stores the VDI table (every record) atomically.
    pub(crate) fn persist_table(&self) -> Result<()> {
        let _p = self.persist.lock();
        self.persist_table_locked()
    }

    pub(crate) fn persist_table_locked(&self) -> Result<()> {
        let vdis: Vec<Arc<Vdi>> = self.vdis.read().values().cloned().collect();
        let mut inodes: Vec<InodeV1> = Vec::with_capacity(vdis.len());
        for v in &vdis {
            let mut inner = v.inner.lock();
            inner.rec_dirty = false;
            inodes.push(inner.rec.clone());
        }
        inodes.sort_by_key(|r| r.ino);
        let table = TableV1 {
            next_ino: self.next_ino.load(Ordering::SeqCst),
            next_vid: self.next_vid.load(Ordering::SeqCst),
            inodes,
        };
        inode::store_table(&*self.store, table).inspect_err(|_| {
            for v in &vdis {
                v.inner.lock().rec_dirty = true;
            }
        })
    }

    /// Makes every write acknowledged so far to this VDI durable (fsync and fdatasync).
    pub fn flush(&self, ino: Ino) -> Result<()> {
        let vdi = self.vdi(ino)?;
        let _g = vdi.gate.read();
        self.flush_locked(&vdi)
    }

    /// Flushes a VDI whose gate the caller holds (shared or exclusive).
    pub(crate) fn flush_locked(&self, vdi: &Vdi) -> Result<()> {
        let (vid, objects, chunks, rec_dirty) = {
            let mut inner = vdi.inner.lock();
            inner.check_failed()?;
            let objects: Vec<Oid> = inner.dirty_objects.drain().collect();
            let chunk_nos: Vec<u32> = std::mem::take(&mut inner.dirty_chunks)
                .into_iter()
                .collect();
            let chunks: Vec<(u32, Vec<u8>)> = chunk_nos
                .into_iter()
                .map(|c| (c, inner.table.chunk_bytes(c)))
                .collect();
            (inner.vid(), objects, chunks, inner.rec_dirty)
        };
        let result = self.flush_parts(vid, &objects, &chunks, rec_dirty);
        match result {
            Ok(()) => Ok(()),
            Err(FlushError::Sync(e)) => {
                // After a failed fsync the kernel may have dropped the dirty pages; a later
                // fsync could then succeed without them. Refuse rather than lie.
                let mut inner = vdi.inner.lock();
                tracing::error!(vdi = %inner.rec.display_name(), error = %e, "fsync failed; the VDI refuses writes until restart");
                inner.failed = Some(e.to_string());
                Err(e)
            }
            Err(FlushError::Other(e)) => {
                let mut inner = vdi.inner.lock();
                inner.dirty_objects.extend(objects);
                inner.dirty_chunks.extend(chunks.iter().map(|(c, _)| *c));
                Err(e)
            }
        }
    }

    fn flush_parts(
        &self,
        vid: Vid,
        objects: &[Oid],
        chunks: &[(u32, Vec<u8>)],
        rec_dirty: bool,
    ) -> Result<(), FlushError> {
        let sync = |oids: &[Oid]| {
            self.store
                .sync(oids)
                .map_err(|e| FlushError::Sync(e.into()))
        };
        sync(objects)?;
        if !chunks.is_empty() {
            AllocTable::store_chunks(&*self.store, vid, chunks).map_err(FlushError::Other)?;
            sync(&[Oid::alloc(vid)])?;
        }
        if rec_dirty {
            self.persist_table().map_err(FlushError::Other)?;
        }
        Ok(())
    }

    /// Flushes every VDI (shutdown, syncfs).
    pub fn flush_all(&self) -> Result<()> {
        let vdis: Vec<Arc<Vdi>> = self.vdis.read().values().cloned().collect();
        for vdi in vdis {
            let _g = vdi.gate.read();
            self.flush_locked(&vdi)?;
        }
        Ok(())
    }

    /// Deletes objects whose last reference went away. Every VDI is flushed first, so no
    /// durable table still names them; objects dropped meanwhile wait for the next call.
    /// Returns how many objects were deleted.
    pub fn reclaim(&self) -> Result<usize> {
        let candidates: Vec<Oid> = std::mem::take(&mut *self.pending.lock());
        if candidates.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.flush_all() {
            self.pending.lock().extend(candidates);
            return Err(e);
        }
        let mut deleted = 0;
        for oid in candidates {
            let _s = self.stripe(oid.idx()).write();
            if self.refs.lock().count(oid) == 0 {
                self.store.remove(oid)?;
                deleted += 1;
            }
        }
        tracing::debug!(deleted, "reclaimed objects");
        Ok(deleted)
    }

    /// Data objects in the store that no table references (after [`Pool::reclaim`] there
    /// should be none but those of writes racing with the check).
    pub fn unreferenced_objects(&self) -> Result<Vec<Oid>> {
        let refs = self.refs.lock();
        Ok(self
            .store
            .list()?
            .into_iter()
            .filter(|o| o.kind() == ObjectKind::Data && refs.count(*o) == 0)
            .collect())
    }

    /// Objects waiting for [`Pool::reclaim`].
    pub fn pending_reclaim(&self) -> usize {
        self.pending.lock().len()
    }

    /// Space figures for statfs and `dog node info`.
    pub fn stats(&self) -> Result<PoolStats> {
        let st = self.store.stats()?;
        Ok(PoolStats {
            capacity: st.capacity,
            free: st.free,
            used: st.used,
            vdis: u32::try_from(self.names.read().len()).unwrap_or(u32::MAX),
            default_copies: self.config.default_copies,
        })
    }

    /// Drops one table reference; queues the object for reclaim when it was the last.
    pub(crate) fn drop_ref(&self, oid: Oid) {
        if self.refs.lock().dec(oid) {
            self.pending.lock().push(oid);
        }
    }
}
