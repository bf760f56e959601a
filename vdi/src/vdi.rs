//! The in-memory state of one VDI or snapshot.

use crate::alloc::AllocTable;
use crate::attr::VdiAttr;
use crate::error::{Error, Result};
use crate::inode::InodeV1;
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use sheep_objects::{Oid, Vid};
use sheep_p2p::NodeId;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64};

/// One VDI: its record, its allocation table and what is not yet durable.
pub(crate) struct Vdi {
    /// Data I/O holds it shared; operations that change the VDI id or the whole table hold it
    /// exclusively, so they see no write half done. Local to this host.
    pub(crate) gate: RwLock<()>,
    pub(crate) inner: Mutex<Inner>,
    /// Open file handles on this host.
    pub(crate) handles: AtomicU32,
    /// Serialises this host's first open and last close, so the cluster learns of them in
    /// the order they happened.
    pub(crate) open_lock: Mutex<()>,
    /// Serialises the flushes of this VDI on this host, so that a flush returns only once
    /// every object an earlier flush took from `dirty_objects` is synced too (see
    /// [`crate::pool::Pool::flush`]). Taken after the gate, never held while taking it.
    pub(crate) flush_lock: Mutex<()>,
    /// References this host's kernel holds (FUSE lookup count).
    pub(crate) lookups: AtomicU64,
}

/// Bytes a VDI's objects take, as last computed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Usage {
    pub(crate) generation: u64,
    pub(crate) allocated: u64,
    pub(crate) shared: u64,
}

/// Mutable state of a VDI, held under a short-lived lock. `rec`, `table`, `owner` and
/// `opened` are replicated state (changed only by applying log commands); the rest is local.
pub(crate) struct Inner {
    pub(crate) rec: InodeV1,
    pub(crate) table: AllocTable,
    /// The host that writes this VDI (see `docs/CLUSTER.md`).
    pub(crate) owner: Option<NodeId>,
    /// Hosts with at least one open handle.
    pub(crate) opened: BTreeSet<NodeId>,
    /// Data objects written on this host since its last flush.
    pub(crate) dirty_objects: HashSet<Oid>,
    /// Data objects the flush in progress took from `dirty_objects` and is syncing (empty
    /// when none runs): a copy that shares them hands them to the destination as dirty.
    pub(crate) syncing: HashSet<Oid>,
    /// The modification time changed on this host and is not in the log yet.
    pub(crate) mtime_dirty: bool,
    /// When this host last put the modification time in the log.
    pub(crate) mtime_logged: Option<std::time::Instant>,
    /// Set when a flush failed: writes and flushes fail from then on (see `Error::WriteBack`).
    pub(crate) failed: Option<String>,
    /// Cached (allocated, shared) bytes and the reference generation they were computed at.
    pub(crate) usage: Option<Usage>,
}

impl Vdi {
    /// Takes the gate shared, within the deadline of the operation this thread serves (see
    /// [`sheep_objects::deadline`]): an operation of a host cut off must answer EIO after
    /// `--io-timeout` even while a handover or a copy holds the gate.
    pub(crate) fn gate_shared(&self) -> Result<RwLockReadGuard<'_, ()>> {
        match sheep_objects::deadline::current() {
            None => Ok(self.gate.read()),
            Some(d) => self.gate.try_read_until(d).ok_or_else(|| self.busy_gate()),
        }
    }

    /// Takes the gate exclusively, within this thread's operation deadline.
    pub(crate) fn gate_exclusive(&self) -> Result<RwLockWriteGuard<'_, ()>> {
        match sheep_objects::deadline::current() {
            None => Ok(self.gate.write()),
            Some(d) => self.gate.try_write_until(d).ok_or_else(|| self.busy_gate()),
        }
    }

    /// Takes the flush lock, within this thread's operation deadline.
    pub(crate) fn flush_locked(&self) -> Result<MutexGuard<'_, ()>> {
        match sheep_objects::deadline::current() {
            None => Ok(self.flush_lock.lock()),
            Some(d) => self
                .flush_lock
                .try_lock_until(d)
                .ok_or_else(|| self.busy_gate()),
        }
    }

    fn busy_gate(&self) -> Error {
        Error::Unavailable(format!(
            "{} is busy (a flush, handover or copy of it did not end within the I/O timeout)",
            self.inner.lock().rec.display_name()
        ))
    }

    pub(crate) fn new(rec: InodeV1, table: AllocTable) -> Vdi {
        Vdi {
            gate: RwLock::new(()),
            inner: Mutex::new(Inner {
                rec,
                table,
                owner: None,
                opened: BTreeSet::new(),
                dirty_objects: HashSet::new(),
                syncing: HashSet::new(),
                mtime_dirty: false,
                mtime_logged: None,
                failed: None,
                usage: None,
            }),
            handles: AtomicU32::new(0),
            open_lock: Mutex::new(()),
            flush_lock: Mutex::new(()),
            lookups: AtomicU64::new(0),
        }
    }
}

impl Inner {
    /// Fails if an earlier flush of this VDI failed.
    pub(crate) fn check_failed(&self) -> crate::error::Result<()> {
        match &self.failed {
            Some(why) => Err(crate::error::Error::WriteBack(
                self.rec.display_name(),
                why.clone(),
            )),
            None => Ok(()),
        }
    }

    pub(crate) fn vid(&self) -> Vid {
        self.rec.vid()
    }

    /// Records that `oid` changed: it is synced at the next flush and the usage is stale.
    pub(crate) fn mark_written(&mut self, oid: Oid) {
        self.dirty_objects.insert(oid);
        self.usage = None;
    }

    /// Sets a table entry; returns the previous owner.
    pub(crate) fn set_entry(&mut self, idx: u32, vid: Vid) -> Vid {
        self.usage = None;
        self.table.set(idx, vid)
    }

    pub(crate) fn attr(&self, usage: (u64, u64)) -> VdiAttr {
        let r = &self.rec;
        VdiAttr {
            ino: r.ino(),
            name: r.display_name(),
            base: r.name.clone(),
            tag: r.tag.clone(),
            vid: r.vid(),
            parent: r.parent.map(Vid),
            size: r.size,
            allocated: usage.0,
            shared: usage.1,
            mode: r.mode,
            uid: r.uid,
            gid: r.gid,
            atime: r.atime,
            mtime: r.mtime,
            ctime: r.ctime,
            crtime: r.crtime,
            copies: r.copies,
            snapshot: r.snapshot,
        }
    }
}
