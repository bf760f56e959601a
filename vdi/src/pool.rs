//! The pool: every VDI of the cluster, and the operations the mount and `dog` call.
//!
//! The metadata (records, allocation tables, reference counts, owners, locks) is a state
//! machine fed by the metadata log (see `docs/CLUSTER.md` and [`crate::log`]): an operation
//! proposes a command and returns once it has been applied here ([`Pool::apply_entry`]).
//! Object data goes straight to the store.
//!
//! Locking, outermost first: `ns` (one local metadata operation at a time) → a VDI's `gate`
//! (data I/O shared, id/table changes exclusive) → a stripe lock of the object index (shared
//! for in-place I/O, exclusive to allocate, copy-on-write or reclaim) → a VDI's `flush_lock`
//! (one flush of the VDI at a time; held while its objects are synced) → `applied` (the apply
//! of one log command) → a VDI's `inner` → `refs`, `pending`, `locks`, `results` (leaves).
//! Applying a command takes only `applied` and what follows it, so a proposer may hold a gate
//! or a stripe while it waits for its command.
//!
//! Durability: a command is durable in the log before it is applied. A write is acknowledged
//! once every copy has it in its (volatile) cache; `flush` syncs the VDI's written objects on
//! every copy. A new object (allocation or copy-on-write) is synced before the command that
//! points the table at it, so a durable table never names an object that could be missing.

use crate::attr::{Ino, VdiAttr};
use crate::cmd::{self, Cmd, Proposal};
use crate::error::{Error, Result};
use crate::locks::LockTable;
use crate::log::{LocalLog, MetaLog, LOCAL_NODE};
use crate::refs::Refs;
use crate::vdi::Vdi;
use parking_lot::{Condvar, Mutex, RwLock};
use sheep_objects::{ObjectKind, ObjectStore, Oid, Vid};
use sheep_p2p::NodeId;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest VDI size: 64 TiB.
pub const MAX_VDI_SIZE: u64 = 64 << 40;

const STRIPES: usize = 1024;

/// How often an fsync puts a modification time changed by writes in the log.
const MTIME_EVERY: Duration = Duration::from_secs(1);

/// How long a write waits for the VDI's owner to hand it over.
const OWNER_TIMEOUT: Duration = Duration::from_secs(60);

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

/// What applying a command produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    Ino(Ino),
}

/// All VDIs of the pool.
pub struct Pool {
    /// Where object data goes (in a cluster: every copy).
    pub(crate) store: Arc<dyn ObjectStore>,
    /// This host's own objects (reclaim deletes its copies here).
    pub(crate) local: Arc<dyn ObjectStore>,
    pub(crate) config: PoolConfig,
    pub(crate) me: NodeId,
    log: Arc<dyn MetaLog>,
    pub(crate) ns: Mutex<()>,
    pub(crate) vdis: RwLock<HashMap<Ino, Arc<Vdi>>>,
    pub(crate) names: RwLock<BTreeMap<String, Ino>>,
    pub(crate) refs: Mutex<Refs>,
    /// Copies of the objects of each VDI id in use.
    pub(crate) vid_copies: Mutex<HashMap<Vid, u8>>,
    /// Objects whose last reference went away, waiting for [`Pool::reclaim`].
    pub(crate) pending: Mutex<Vec<Oid>>,
    pub(crate) locks: Mutex<LockTable>,
    /// Hosts the log removed ([`Pool::node_gone`]) and that have not joined again
    /// ([`Pool::node_joined`]): their proposals that the log ordered after their removal are
    /// refused, and nothing is handed over to them.
    pub(crate) gone: Mutex<HashSet<NodeId>>,
    pub(crate) next_ino: AtomicU64,
    pub(crate) next_vid: AtomicU32,
    /// The last applied log entry; held while one is applied.
    pub(crate) applied: Mutex<u64>,
    /// Results of this host's proposals, by token.
    pub(crate) results: Mutex<HashMap<u64, Result<Outcome>>>,
    next_token: AtomicU64,
    /// Signalled after every applied command (owners waiting for a handover).
    pub(crate) changed: Condvar,
    changed_lock: Mutex<()>,
    /// Handovers asked of this host: (VDI, the host that wants it).
    pub(crate) wants: Mutex<Vec<(Ino, NodeId)>>,
    stripes: Box<[RwLock<()>]>,
}

impl Pool {
    /// Opens a pool on its own, its metadata log kept in `store` ([`LocalLog`]): replays the
    /// log, then removes objects that nothing references (left by a crash).
    pub fn open(store: Arc<dyn ObjectStore>, config: PoolConfig) -> Result<Pool> {
        let (log, entries) = LocalLog::open(store.clone())?;
        let pool = Pool::new(store.clone(), store, config, LOCAL_NODE, Arc::new(log));
        pool.replay(entries);
        pool.restarted()?;
        pool.collect_garbage()?;
        Ok(pool)
    }

    /// A pool with no VDIs whose commands go through `log`; replay what the log already holds
    /// with [`Pool::replay`] (or let the log deliver it) before serving.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        local: Arc<dyn ObjectStore>,
        config: PoolConfig,
        me: NodeId,
        log: Arc<dyn MetaLog>,
    ) -> Pool {
        Pool {
            store,
            local,
            config,
            me,
            log,
            ns: Mutex::new(()),
            vdis: RwLock::new(HashMap::new()),
            names: RwLock::new(BTreeMap::new()),
            refs: Mutex::new(Refs::default()),
            vid_copies: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            locks: Mutex::new(LockTable::default()),
            gone: Mutex::new(HashSet::new()),
            next_ino: AtomicU64::new(2),
            next_vid: AtomicU32::new(1),
            applied: Mutex::new(0),
            results: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            changed: Condvar::new(),
            changed_lock: Mutex::new(()),
            wants: Mutex::new(Vec::new()),
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
        }
    }

    /// Applies stored log entries, in order, numbered from 1.
    pub fn replay(&self, entries: Vec<Vec<u8>>) {
        for (i, e) in entries.into_iter().enumerate() {
            self.apply_entry(i as u64 + 1, &e);
        }
        self.results.lock().clear();
    }

    /// Releases what this host's previous run held (call once at start, after the replay
    /// and, in a cluster, once this host is a member again).
    pub fn restarted(&self) -> Result<()> {
        let me = self.me;
        let held = self.vdis.read().values().any(|v| {
            let i = v.inner.lock();
            i.owner == Some(me) || i.opened.contains(&me)
        }) || self.locks.lock().held_by(me);
        if !held {
            // Nothing to release: no log entry (an empty cluster stays empty, so it may still
            // merge into another one).
            return Ok(());
        }
        self.submit(Cmd::Restarted { node: me }).map(|_| ())
    }

    /// Tells the cluster that this host's store is failing: it holds no data copies from now
    /// on (see [`Cmd::StoreOut`]).
    pub fn store_out(&self) -> Result<()> {
        self.submit(Cmd::StoreOut { node: self.me }).map(|_| ())
    }

    /// Forgets every VDI (the cluster's history replaced ours; it is delivered again).
    pub fn reset(&self) {
        let _a = self.applied.lock();
        self.vdis.write().clear();
        self.names.write().clear();
        *self.refs.lock() = Refs::default();
        self.vid_copies.lock().clear();
        *self.locks.lock() = LockTable::default();
        self.gone.lock().clear();
        self.next_ino.store(2, Ordering::SeqCst);
        self.next_vid.store(1, Ordering::SeqCst);
    }

    /// This host's id in the cluster.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// The highest log entry applied.
    pub fn applied_seq(&self) -> u64 {
        *self.applied.lock()
    }

    /// Copies of the objects of VDI id `vid` (the pool default for an id it does not know).
    pub fn copies_of(&self, vid: Vid) -> u8 {
        self.vid_copies
            .lock()
            .get(&vid)
            .copied()
            .unwrap_or(self.config.default_copies)
    }

    /// Proposes `cmd` and returns what applying it here gave.
    pub(crate) fn submit(&self, cmd: Cmd) -> Result<Outcome> {
        let token = self.next_token.fetch_add(1, Ordering::SeqCst);
        let bytes = cmd::encode(&Proposal {
            node: self.me,
            token,
            cmd,
        })?;
        self.log.submit(self, bytes)?;
        self.results
            .lock()
            .remove(&token)
            .unwrap_or_else(|| Err(Error::Invalid("the log lost a command's result".into())))
    }

    /// Waits until `done` holds after some applied command, or `timeout`; returns whether
    /// it holds.
    pub fn wait_applied(&self, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.changed_lock.lock();
        loop {
            if done() {
                return true;
            }
            if self
                .changed
                .wait_until(
                    &mut g,
                    deadline.min(Instant::now() + Duration::from_millis(100)),
                )
                .timed_out()
                && Instant::now() >= deadline
            {
                return done();
            }
        }
    }

    /// Makes this host the VDI's owner, asking the current owner to hand it over.
    pub(crate) fn claim(&self, vdi: &Vdi) -> Result<()> {
        let deadline = sheep_objects::deadline::within(OWNER_TIMEOUT);
        loop {
            let (owner, ino, name) = {
                let i = vdi.inner.lock();
                (i.owner, i.rec.ino(), i.rec.display_name())
            };
            match owner {
                Some(o) if o == self.me => return Ok(()),
                None => match self.submit(Cmd::Own {
                    ino: ino.0,
                    node: self.me,
                    from: None,
                }) {
                    Ok(_) | Err(Error::Busy(_)) => continue,
                    Err(e) => return Err(e),
                },
                Some(_) => {
                    self.submit(Cmd::Want {
                        ino: ino.0,
                        node: self.me,
                    })?;
                    let me = self.me;
                    let pause = deadline.saturating_duration_since(Instant::now());
                    self.wait_applied(Duration::from_secs(2).min(pause), || {
                        let o = vdi.inner.lock().owner;
                        o == Some(me) || o.is_none()
                    });
                    if !self.vdis.read().contains_key(&ino) {
                        return Err(Error::NotFound(name));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Busy(format!(
                    "{name}: its owner did not hand it over"
                )));
            }
        }
    }

    /// Hands VDIs other hosts asked for over, once their in-flight writes are done. Run by the
    /// background worker.
    pub fn serve_handovers(&self) {
        let wants: Vec<(Ino, NodeId)> = std::mem::take(&mut *self.wants.lock());
        for (ino, to) in wants {
            let Ok(vdi) = self.vdi(ino) else { continue };
            let _g = vdi.gate.write();
            if vdi.inner.lock().owner != Some(self.me) {
                continue;
            }
            if let Err(e) = self
                .flush_vdi(&vdi)
                .and_then(|()| self.log_mtime(&vdi, true))
            {
                // Not handed over: the host that wants it asks again (every 2 s) and gets it
                // once a flush succeeds. Trying the log now would only hold the gate, and
                // this host's own writes behind it, for another I/O timeout (a host cut off
                // in a minority must answer EIO within --io-timeout, not a multiple of it).
                tracing::warn!(ino = ino.0, error = %e, "flush before handing a VDI over failed; not handed over");
                continue;
            }
            match self.submit(Cmd::Own {
                ino: ino.0,
                node: to,
                from: Some(self.me),
            }) {
                Ok(_) => tracing::debug!(ino = ino.0, to = %to, "handed VDI over"),
                Err(e) => tracing::warn!(ino = ino.0, error = %e, "handover failed"),
            }
        }
    }

    /// True while another host waits for a VDI this host owns.
    pub fn handovers_waiting(&self) -> bool {
        !self.wants.lock().is_empty()
    }

    /// Removes this host's data objects that no table references (after a crash). Only for a
    /// pool on its own: in a cluster another host may be creating an object here right now.
    fn collect_garbage(&self) -> Result<()> {
        let mut removed = 0usize;
        for oid in self.local.list()? {
            let garbage = match oid.kind() {
                ObjectKind::Data => self.refs.lock().count(oid) == 0,
                ObjectKind::Alloc => true,
                ObjectKind::Inode | ObjectKind::Meta => false,
            };
            if garbage {
                self.local.remove(oid)?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(objects = removed, "removed unreferenced objects");
            self.local.sync(&[])?;
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

    /// The data objects a VDI's allocation table names (its own and those it shares with a
    /// parent), by its mount name (`name` or `name@tag`), sorted by id.
    pub fn data_objects(&self, name: &str) -> Result<Vec<Oid>> {
        let vdi = self.vdi(self.ino_of(name)?)?;
        let mut oids: Vec<Oid> = {
            let inner = vdi.inner.lock();
            inner.table.iter().map(|(i, v)| Oid::data(v, i)).collect()
        };
        oids.sort_unstable();
        oids.dedup();
        Ok(oids)
    }

    /// Every data object some allocation table names (of every VDI, snapshot and unlinked
    /// but open VDI), sorted by id.
    pub fn all_data_objects(&self) -> Vec<Oid> {
        let mut oids: Vec<Oid> = self.refs.lock().objects().collect();
        oids.sort_unstable();
        oids
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

    /// Makes every write acknowledged so far to this VDI durable (fsync and fdatasync).
    ///
    /// It does not take the VDI's gate: writes, and a copy_file_range or snapshot that needs
    /// the gate exclusively, go on while the objects are synced (a whole-file copy does not
    /// wait for the write-back of the source's dirty data, see `docs/CONTRACTS.md`).
    pub fn flush(&self, ino: Ino) -> Result<()> {
        let vdi = self.vdi(ino)?;
        self.flush_vdi(&vdi)
    }

    /// Syncs the VDI's written objects on every copy, then logs a changed modification time.
    /// The caller may hold the VDI's gate (shared or exclusive) or not.
    ///
    /// Flushes of one VDI are serialised (`flush_lock`): one that starts while another syncs
    /// what it took from the dirty set waits for it, so it never returns before a write
    /// acknowledged before it began is durable. While a flush runs, the objects it syncs are
    /// in `syncing`, where a copy sharing them finds them (see [`Pool::copy_range`]).
    pub(crate) fn flush_vdi(&self, vdi: &Vdi) -> Result<()> {
        {
            let _f = vdi.flush_locked()?;
            let objects: Vec<Oid> = {
                let mut inner = vdi.inner.lock();
                inner.check_failed()?;
                inner.syncing = std::mem::take(&mut inner.dirty_objects);
                inner.syncing.iter().copied().collect()
            };
            let synced = self.store.sync(&objects);
            let mut inner = vdi.inner.lock();
            let taken = std::mem::take(&mut inner.syncing);
            if let Err(e @ sheep_objects::Error::Unavailable { .. }) = synced {
                // The holders were not reached in time (this host cut off, a holder not
                // answering): no copy reported a failed sync, so nothing was dropped. The
                // objects stay dirty, and the next flush (or the fsync retried by the
                // application) syncs them.
                inner.dirty_objects.extend(taken);
                return Err(e.into());
            }
            if let Err(e) = synced {
                // After a failed fsync the kernel may have dropped the dirty pages; a later
                // fsync could then succeed without them. Refuse rather than lie.
                let e: Error = e.into();
                tracing::error!(vdi = %inner.rec.display_name(), error = %e, "fsync failed; the VDI refuses writes until restart");
                inner.failed = Some(e.to_string());
                return Err(e);
            }
        }
        self.log_mtime(vdi, false)
    }

    /// Puts a modification time changed by writes in the log: always when `force` (last
    /// close, handover, write-back), else at most once per [`MTIME_EVERY`], so that an fsync
    /// after every small write does not cost a log round trip each.
    pub(crate) fn log_mtime(&self, vdi: &Vdi, force: bool) -> Result<()> {
        let touch = {
            let mut inner = vdi.inner.lock();
            let due = force
                || inner
                    .mtime_logged
                    .is_none_or(|t| t.elapsed() >= MTIME_EVERY);
            if !inner.mtime_dirty || !due {
                return Ok(());
            }
            inner.mtime_dirty = false;
            inner.mtime_logged = Some(Instant::now());
            (inner.rec.ino, inner.rec.mtime)
        };
        let (ino, mtime) = touch;
        let change = crate::cmd::AttrChange {
            mtime: Some(mtime),
            ..Default::default()
        };
        match self.submit(Cmd::SetAttr {
            ino,
            change,
            time: mtime,
        }) {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => {
                vdi.inner.lock().mtime_dirty = true;
                Err(e)
            }
        }
    }

    /// Flushes every VDI (shutdown, syncfs).
    pub fn flush_all(&self) -> Result<()> {
        let vdis: Vec<Arc<Vdi>> = self.vdis.read().values().cloned().collect();
        for vdi in vdis {
            // Without the gate: the write-back of a VDI full of dirty data does not hold up
            // a copy, snapshot or handover of it (they take the gate exclusively).
            self.flush_vdi(&vdi)?;
            self.log_mtime(&vdi, true)?;
        }
        Ok(())
    }

    /// Deletes this host's copies of objects whose last reference went away (no durable
    /// table names them: the log recorded the change before it was applied). Returns how many
    /// objects were deleted.
    pub fn reclaim(&self) -> Result<usize> {
        let candidates: Vec<Oid> = std::mem::take(&mut *self.pending.lock());
        let mut deleted = 0;
        for (n, oid) in candidates.iter().enumerate() {
            let _s = self.stripe(oid.idx()).write();
            if self.refs.lock().count(*oid) == 0 {
                if let Err(e) = self.local.remove(*oid) {
                    self.pending.lock().extend_from_slice(&candidates[n..]);
                    return Err(e.into());
                }
                deleted += 1;
            }
        }
        tracing::debug!(deleted, "reclaimed objects");
        Ok(deleted)
    }

    /// Data objects of this host that no table references (after [`Pool::reclaim`] there
    /// should be none but those of writes racing with the check).
    pub fn unreferenced_objects(&self) -> Result<Vec<Oid>> {
        let refs = self.refs.lock();
        Ok(self
            .local
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

    /// Locks held on a VDI (F_GETLK answers from here).
    pub fn locks_of(&self, ino: Ino) -> Vec<crate::locks::Lock> {
        self.locks.lock().held(ino.0)
    }
}
