//! `ReplicatedStore`: an [`ObjectStore`] whose data objects live on `copies` hosts.
//!
//! Placement ([`crate::placement`]) names the holders of each data object from the cluster
//! map; other kinds of object (inodes, allocation tables, node-local metadata) stay in the
//! local store, because the metadata log is their durable truth.
//!
//! * **Writes** (write, punch, copy, remove) are sent to every holder at once over the data
//!   channel ([`crate::net`]), the local holder applies its part meanwhile, and the call
//!   returns when every holder has applied it. A holder that does not answer is retried with a
//!   short backoff until the map changes (the application removes failed members) or
//!   `io_timeout` passes, then the call fails with an I/O error: a holder is never skipped.
//! * **Reads** use the local copy when this host is a holder, else another holder (the next
//!   one on failure).
//! * **Epochs**: every request carries the sender's epoch and a host at another epoch answers
//!   `WrongEpoch` without doing anything. A sender behind waits for its map to reach the
//!   server's epoch, recomputes the holders and retries; a sender ahead retries after a pause.
//!   Local changes are fenced by the epoch (a read lock that [`ReplicatedStore::set_map`]
//!   takes for writing), so no change of an old epoch lands after the rebalance walk of the
//!   new one has started.
//! * **Versions**: every copy carries the epoch of its last change and a digest of its
//!   content (from the store's per-block checksums). Copies are compared by these, never by
//!   reading them.
//! * **Recovery** after a new map: every host walks its local data objects and asks every
//!   other member, in batches, what its copy of each is (`Have`: absent, good or unverified,
//!   version, digest). A copy older than the freshest good copy anywhere is replaced from it
//!   (or dropped if this host no longer holds the object); the new holders that lack the
//!   object get it pushed (`Put`, data extents only, throttled by
//!   [`ReplicatedStore::set_throttle`]), those holding an older or unverified copy are asked to
//!   make it current themselves (see catch-up); a host drops its copy of an object it no
//!   longer holds once every holder has confirmed. Then it tells every member
//!   `RebalanceDone`. Until every member has done so, a holder asked for an object first makes
//!   its copy current from the freshest copy anywhere (on demand, not throttled), so objects a
//!   VM uses are recovered first. Per-object locks keep pushes, fetches and writes to one
//!   object from interleaving, and a host remembers which objects it has made current in this
//!   epoch ("settled"), so a late push never resurrects an object removed or overwritten
//!   meanwhile.
//! * **Catch-up**: a host that the cluster recorded as gone (failed, partitioned away, or
//!   left) marks every local copy *unverified* ([`ReplicatedStore::suspect_local_data`],
//!   persisted). An unverified copy is never served nor pushed; it is compared with the good
//!   copies of the others and kept if it matches the freshest (same version and digest), else
//!   made current. A copy that exists is patched with only its 4 KiB blocks that differ from
//!   the freshest good copy (compared by 128-bit hashes; see `delta.rs`), a missing, damaged or
//!   mostly different one is replaced whole. So a host back from a short outage copies only the
//!   blocks that changed meanwhile, and a write it applied alone on the minority side of a
//!   partition (never acknowledged) is undone.
//! * **Bad copies**: a copy whose checksum fails or whose store gives an I/O error is not
//!   served: the reader goes to the next holder and the host repairs its copy from a good one
//!   in the background. A holder whose store fails a write or a sync drops its copy (marks it
//!   unverified); the write is acknowledged if another holder has it. A host whose store is
//!   near full takes no new objects nor new copies and says so ([`RecoveryStatus::full`]).
//! * **Quorum**: with [`ReplicatedStore::set_quorum_check`], requests from this host wait while
//!   it cannot reach a quorum of the cluster (the minority side of a partition) and fail with
//!   an I/O error after `io_timeout`.

use crate::budget::{Buf, MemBudget};
use crate::error::{Error, Result};
use crate::net::client::{NetError, Pool, Response};
use crate::net::proto::{
    decode_extents, decode_image, decode_u64s, encode_u64s, in_object, Op, ReqHeader, Status,
    FLAG_AS_HOLDER, FLAG_BACKGROUND, FLAG_EXISTING, FLAG_FORCE, HAVE_ENTRY, MAX_BODY, MAX_EXTENTS,
};
use crate::net::server::{Handler, Reply, Server};
use crate::oid::{ObjectKind, Oid, Vid, OBJECT_BYTES};
use crate::placement::{mix64, Placement};
use crate::store::{ObjectMeta, ObjectStore, StoreStats};
use parking_lot::{Condvar, Mutex, RwLock};
use sheep_p2p::NodeId;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

mod delta;
use delta::Fetched;

/// A member of the cluster as the data layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub id: NodeId,
    /// Its capacity in bytes (weights its share of objects).
    pub capacity: u64,
    /// Where its data channel listens, in order of preference.
    pub data_addrs: Vec<SocketAddr>,
}

/// The members at one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMap {
    /// The map's number: every change of the data placement gives a higher one, the same on
    /// every host (the host layer uses the position of the log entry that changed it).
    pub epoch: u64,
    /// The cluster's epoch (count of membership changes) when the map was made, as shown to
    /// users in the status.
    pub cluster_epoch: u64,
    /// The members.
    pub members: Vec<Member>,
}

/// How many copies the data objects of a VDI have.
pub trait CopiesOf: Send + Sync {
    /// The number of copies of `vid`'s data objects (0 is taken as 1).
    fn copies(&self, vid: Vid) -> u8;
}

/// The same number of copies for every VDI.
#[derive(Debug, Clone, Copy)]
pub struct FixedCopies(pub u8);

impl CopiesOf for FixedCopies {
    fn copies(&self, _vid: Vid) -> u8 {
        self.0
    }
}

/// Tuning of a [`ReplicatedStore`].
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// How long a request waits for an unreachable holder (or a lagging epoch) before it
    /// fails with an I/O error; also the socket timeout.
    pub io_timeout: Duration,
    /// Free space below which this host takes no new objects nor new copies; `None`: 2% of
    /// the store's capacity, at least 16 MiB and at most 4 GiB.
    pub reserve: Option<u64>,
    /// The memory budget that the data channel's bodies (both sides) and the object images
    /// read for a fetch or a push are taken from (see [`crate::budget`]).
    pub budget: Arc<MemBudget>,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            io_timeout: Duration::from_secs(30),
            reserve: None,
            budget: MemBudget::new(crate::budget::DEFAULT_LIMIT),
        }
    }
}

/// Recovery progress of this host, as `dog node recovery` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryStatus {
    /// The epoch being recovered.
    pub epoch: u64,
    /// Local objects the walk of this epoch looks at.
    pub to_check: u64,
    /// Of those, looked at so far.
    pub checked: u64,
    /// Objects copied to or from this host for recovery in this epoch (sent, received, fetched,
    /// patched).
    pub copied: u64,
    /// Bytes those copies transferred (see `received_bytes`).
    pub copied_bytes: u64,
    /// Objects sent to other holders.
    pub sent: u64,
    /// Data bytes sent.
    pub sent_bytes: u64,
    /// Objects received (pushed here, fetched or patched).
    pub received: u64,
    /// Bytes received for those: object data, and for a patched copy its source's block
    /// summary and the blocks that differed.
    pub received_bytes: u64,
    /// Unverified copies found current and kept (what catch-up did not have to copy).
    pub kept: u64,
    /// Data bytes of those.
    pub kept_bytes: u64,
    /// Of the objects received, those patched in place: only their blocks that differed
    /// were copied (delta catch-up).
    pub patched: u64,
    /// Blocks (4 KiB) those patches wrote, zeroed or punched.
    pub patched_blocks: u64,
    /// Bytes those patches did not copy: what whole objects would have taken more.
    pub saved_bytes: u64,
    /// Copies still unverified.
    pub unverified: u64,
    /// Bad copies (checksum or I/O error) repaired from a good one since start.
    pub repaired: u64,
    /// Copies not made because the target host is near full.
    pub skipped_full: u64,
    /// Bytes per second this host may push for recovery; `None`: unthrottled.
    pub throttle: Option<u64>,
    /// Data bytes received for recovery since the start of this process.
    pub total_received_bytes: u64,
    /// This host finished its walk for the epoch.
    pub done: bool,
    /// Every member finished its walk for the epoch.
    pub complete: bool,
    /// This host's store is near full: it takes no new objects nor copies.
    pub full: bool,
}

/// What [`ReplicatedStore::check_object`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Holders of the object.
    pub copies: u32,
    /// Holders whose copy is good and current.
    pub good: u32,
    /// Copies brought back (bad, stale, missing or diverged).
    pub repaired: u32,
    /// No good copy anywhere.
    pub lost: bool,
}

/// What [`ReplicatedStore::status`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The epoch of the map in use.
    pub epoch: u64,
    /// Members in the map.
    pub members: usize,
    /// Data objects in the local store.
    pub objects: u64,
    /// Local objects the rebalance walk of this epoch has still to look at.
    pub pending: u64,
    /// Objects this host created on new holders in this epoch.
    pub pushed: u64,
    /// Data bytes of those objects.
    pub pushed_bytes: u64,
    /// Objects this host fetched on demand in this epoch.
    pub pulled: u64,
    /// Data bytes of those objects.
    pub pulled_bytes: u64,
    /// Local copies dropped in this epoch because this host no longer holds them.
    pub dropped: u64,
    /// Allocated bytes of those copies.
    pub dropped_bytes: u64,
    /// This host finished its rebalance walk for the epoch.
    pub done: bool,
    /// Every member reported `RebalanceDone` for the epoch.
    pub complete: bool,
    /// Fewer members than the largest copies count seen: every member holds every object.
    pub degraded: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    pending: u64,
    to_check: u64,
    pushed: u64,
    pushed_bytes: u64,
    pulled: u64,
    pulled_bytes: u64,
    received: u64,
    received_bytes: u64,
    kept: u64,
    kept_bytes: u64,
    patched: u64,
    patched_blocks: u64,
    saved_bytes: u64,
    dropped: u64,
    dropped_bytes: u64,
    skipped_full: u64,
}

/// Counters kept since the start of the process.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    repaired: u64,
    received_bytes: u64,
}

/// What a holder says of its copy of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyState {
    Absent = 0,
    Good = 1,
    Unverified = 2,
    Bad = 3,
}

impl CopyState {
    fn from_u64(v: u64) -> CopyState {
        match v {
            1 => CopyState::Good,
            2 => CopyState::Unverified,
            3 => CopyState::Bad,
            _ => CopyState::Absent,
        }
    }
}

/// One holder's copy: its state, version and digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CopyInfo {
    state: CopyState,
    meta: ObjectMeta,
}

impl CopyInfo {
    const ABSENT: CopyInfo = CopyInfo {
        state: CopyState::Absent,
        meta: ObjectMeta {
            version: 0,
            digest: 0,
        },
    };

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.state as u8);
        out.extend_from_slice(&self.meta.version.to_le_bytes());
        out.extend_from_slice(&self.meta.digest.to_le_bytes());
    }

    fn decode(state: u64, b: &[u8]) -> CopyInfo {
        let word = |i: usize| {
            b.get(i..i + 8)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map_or(0, u64::from_le_bytes)
        };
        CopyInfo {
            state: CopyState::from_u64(state),
            meta: ObjectMeta {
                version: word(0),
                digest: word(8),
            },
        }
    }

    fn good(&self) -> bool {
        self.state == CopyState::Good
    }
}

/// Picks the freshest good copy among `infos`: the highest version, then the digest most
/// copies agree on, then `prefer`'s digest, then the first listed.
fn freshest(
    infos: &[(NodeId, CopyInfo)],
    prefer: Option<ObjectMeta>,
) -> Option<(NodeId, ObjectMeta)> {
    let top = infos
        .iter()
        .filter(|(_, i)| i.good())
        .map(|(_, i)| i.meta.version)
        .max()?;
    let cands: Vec<&(NodeId, CopyInfo)> = infos
        .iter()
        .filter(|(_, i)| i.good() && i.meta.version == top)
        .collect();
    let votes = |d: u64| cands.iter().filter(|(_, i)| i.meta.digest == d).count();
    let mut best = cands[0];
    for c in &cands[1..] {
        let (vc, vb) = (votes(c.1.meta.digest), votes(best.1.meta.digest));
        let pc = prefer.is_some_and(|p| p == c.1.meta);
        let pb = prefer.is_some_and(|p| p == best.1.meta);
        if vc > vb || (vc == vb && pc && !pb) {
            best = c;
        }
    }
    Some((best.0, best.1.meta))
}

/// A token bucket limiting recovery traffic.
struct Bucket {
    rate: Option<u64>,
    tokens: f64,
    last: Instant,
}

/// Node-local object holding the persisted list of unverified copies.
fn unverified_oid() -> Oid {
    Oid::meta(0x20)
}

/// The map in use and what is derived from it.
struct View {
    epoch: u64,
    placement: Placement,
    addrs: HashMap<NodeId, Vec<SocketAddr>>,
    /// False for the bootstrap view (this host alone) used before the first map.
    from_map: bool,
}

/// Rebalancing state of the current epoch.
#[derive(Default)]
struct Rebal {
    epoch: u64,
    cluster_epoch: u64,
    members: Vec<NodeId>,
    done: HashSet<NodeId>,
    /// `RebalanceDone` notices for epochs this host has not reached yet.
    early: BTreeMap<u64, HashSet<NodeId>>,
    /// Objects whose local state is current for this epoch (fetched, pushed in, written or
    /// removed here): neither fetched again nor overwritten by a push.
    settled: HashSet<Oid>,
    /// Requests of this epoch holding an object lock because the epoch was unsettled when
    /// they began: each may be replacing its object with a fetched copy. Until none is left,
    /// the epoch is not published as settled, so no request skips the object locks while a
    /// fetched image could still overwrite what it writes.
    inflight: u64,
    self_done: bool,
    counters: Counters,
}

impl Rebal {
    fn complete(&self) -> bool {
        self.members.iter().all(|m| self.done.contains(m))
    }

    /// Requests of this epoch must lock their object: rebalancing is incomplete, or requests
    /// that began before it completed still hold their locks.
    fn unsettled(&self, epoch: u64) -> bool {
        self.epoch == epoch && (!self.complete() || self.inflight > 0)
    }
}

/// Per-object locks, taken by pushes, fetches and writes while rebalancing.
#[derive(Default)]
struct OidLocks {
    held: Mutex<HashSet<Oid>>,
    cv: Condvar,
}

struct OidGuard<'a> {
    locks: &'a OidLocks,
    oid: Oid,
}

impl OidLocks {
    fn lock(&self, oid: Oid) -> OidGuard<'_> {
        let mut held = self.held.lock();
        while held.contains(&oid) {
            self.cv.wait(&mut held);
        }
        held.insert(oid);
        OidGuard { locks: self, oid }
    }
}

impl Drop for OidGuard<'_> {
    fn drop(&mut self) {
        self.locks.held.lock().remove(&self.oid);
        self.locks.cv.notify_all();
    }
}

/// An object lock taken by a request (see [`ReplicatedStore::lock_if_unsettled`]); when the
/// epoch was unsettled, it counts in [`Rebal::inflight`] until dropped.
struct RequestLock<'a> {
    store: &'a ReplicatedStore,
    /// The epoch it counts in, if it does.
    counted: Option<u64>,
    _oid: OidGuard<'a>,
}

impl Drop for RequestLock<'_> {
    fn drop(&mut self) {
        if let Some(epoch) = self.counted {
            let mut r = self.store.reb.lock();
            if r.epoch == epoch {
                r.inflight = r.inflight.saturating_sub(1);
                self.store.note_complete(&r);
            }
        }
    }
}

/// Why the serving side did not complete a request.
enum SErr {
    Store(Error),
    /// The epoch differs: this host is at the one given.
    Epoch(u64),
    Retry(String),
    Bad(&'static str),
}

impl From<Error> for SErr {
    fn from(e: Error) -> Self {
        SErr::Store(e)
    }
}

/// One holder's answer, as the requesting side sees it.
enum Outcome {
    Ok(u64, Buf),
    /// Final: the operation failed.
    Fail(Error),
    /// This holder's copy is bad (checksum or I/O error; for a change, it dropped its copy):
    /// another holder may serve.
    Bad(Error),
    /// The holder is at a later epoch.
    Ahead(u64),
    /// Retry later (unreachable, behind, busy).
    Transient(String),
}

/// Objects probed with one `Have` list per holder during the rebalance walk.
const WALK_BATCH: usize = 1024;

/// Stripes of the locks that a hold takes to wait for requests under way.
const HOLD_STRIPES: usize = 256;

/// How long a check waits before it looks again at copies that differed (writes under way
/// land meanwhile).
const CHECK_PAUSE: Duration = Duration::from_millis(200);

/// How long a repair holds the copies of an object at most (a repairer that dies releases
/// its holds this way).
const HOLD_LEASE: Duration = Duration::from_secs(10);

/// A request of a fan-out: the target, the header (its epoch is filled per attempt), the body.
type Planned<'a> = (NodeId, ReqHeader, Cow<'a, [u8]>);

fn unavailable(oid: Oid, msg: impl Into<String>) -> Error {
    Error::Unavailable {
        oid,
        reason: msg.into(),
    }
}

fn eio(oid: Oid, msg: impl Into<String>) -> Error {
    Error::Io {
        oid,
        source: io::Error::other(msg.into()),
    }
}

fn is_data(oid: Oid) -> bool {
    oid.kind() == ObjectKind::Data
}

/// An [`ObjectStore`] that keeps each data object on its holders; see the module docs.
pub struct ReplicatedStore {
    me: NodeId,
    local: Arc<dyn ObjectStore>,
    copies: Arc<dyn CopiesOf>,
    cfg: ReplicaConfig,
    pool: Pool,
    /// The map in use; also the epoch fence (local changes hold it for reading).
    view: RwLock<Arc<View>>,
    epoch_now: Mutex<u64>,
    epoch_cv: Condvar,
    reb: Mutex<Rebal>,
    locks: OidLocks,
    max_copies: AtomicU8,
    stopped: AtomicBool,
    server: Mutex<Option<Arc<Server>>>,
    this: Weak<ReplicatedStore>,
    /// Local copies not to be served nor pushed until compared with the others.
    unverified: Mutex<HashSet<Oid>>,
    /// `unverified` is not empty (read without the lock on every request).
    any_unverified: AtomicBool,
    /// The epoch whose rebalancing every member reported done (0: none): lets every request
    /// skip `reb`'s lock once the map settled, the usual case.
    settled_epoch: AtomicU64,
    /// Recent errors of the local store, and what to do when they become too many.
    store_errors: Mutex<std::collections::VecDeque<Instant>>,
    on_store_failed: Mutex<Option<StoreFailed>>,
    /// Objects whose local copy is being repaired.
    repairing: Mutex<HashSet<Oid>>,
    /// Copies held for a repair ([`Op::Hold`]) and when each hold expires.
    holds: Mutex<HashMap<Oid, Instant>>,
    /// `holds` is not empty (read without the lock on every request).
    any_hold: AtomicBool,
    /// Reads and changes of a local copy hold its stripe shared; a hold takes it exclusively
    /// once, to wait for those already under way.
    stripes: Box<[RwLock<()>]>,
    bucket: Mutex<Bucket>,
    totals: Mutex<Totals>,
    quorum: RwLock<Option<QuorumCheck>>,
    /// Near-full state of the local store and when it was last looked at (ms since `born`).
    full: AtomicBool,
    full_checked: AtomicU64,
    born: Instant,
}

/// Tells whether this host reaches a quorum of the cluster.
pub type QuorumCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Called once when the local store is failing (see [`ReplicatedStore::on_store_failed`]).
pub type StoreFailed = Box<dyn FnOnce() + Send>;

/// Store errors within [`STORE_ERROR_WINDOW`] after which the store is taken as failing.
const STORE_ERROR_LIMIT: usize = 8;
const STORE_ERROR_WINDOW: Duration = Duration::from_secs(60);

impl ReplicatedStore {
    /// A store for host `me` over `local`. Until the first [`ReplicatedStore::set_map`] it
    /// works as a cluster of this host alone (epoch 0).
    pub fn new(
        me: NodeId,
        local: Arc<dyn ObjectStore>,
        copies: Arc<dyn CopiesOf>,
        cfg: ReplicaConfig,
    ) -> Arc<Self> {
        let view = View {
            epoch: 0,
            placement: Placement::new(&[(me, 1)]),
            addrs: HashMap::new(),
            from_map: false,
        };
        let reb = Rebal {
            epoch: 0,
            members: vec![me],
            done: HashSet::from([me]),
            self_done: true,
            ..Rebal::default()
        };
        let unverified = match local.get(unverified_oid()) {
            Ok(b) => decode_u64s(&b)
                .map(|v| v.into_iter().map(Oid).collect())
                .unwrap_or_default(),
            Err(_) => HashSet::new(),
        };
        if !unverified.is_empty() {
            tracing::info!(
                objects = unverified.len(),
                "local copies left unverified by the previous run"
            );
        }
        let store = Arc::new_cyclic(|this| ReplicatedStore {
            me,
            local,
            copies,
            pool: Pool::new(cfg.io_timeout, cfg.budget.clone()),
            cfg,
            view: RwLock::new(Arc::new(view)),
            epoch_now: Mutex::new(0),
            epoch_cv: Condvar::new(),
            reb: Mutex::new(reb),
            locks: OidLocks::default(),
            max_copies: AtomicU8::new(0),
            stopped: AtomicBool::new(false),
            server: Mutex::new(None),
            this: this.clone(),
            any_unverified: AtomicBool::new(!unverified.is_empty()),
            settled_epoch: AtomicU64::new(0),
            store_errors: Mutex::new(std::collections::VecDeque::new()),
            on_store_failed: Mutex::new(None),
            unverified: Mutex::new(unverified),
            repairing: Mutex::new(HashSet::new()),
            holds: Mutex::new(HashMap::new()),
            any_hold: AtomicBool::new(false),
            stripes: (0..HOLD_STRIPES).map(|_| RwLock::new(())).collect(),
            bucket: Mutex::new(Bucket {
                rate: None,
                tokens: 0.0,
                last: Instant::now(),
            }),
            totals: Mutex::new(Totals::default()),
            quorum: RwLock::new(None),
            full: AtomicBool::new(false),
            full_checked: AtomicU64::new(0),
            born: Instant::now(),
        });
        // A request of an epoch that is over waits for no holder: the plan is made again
        // from the new map (a holder cut off without an RST would otherwise hold every call
        // to it for the whole I/O timeout, and a flush would fail although the cluster went
        // on without that holder).
        let weak = Arc::downgrade(&store);
        store.pool.set_abandon(Box::new(move |sent| {
            sent != 0 && weak.upgrade().is_some_and(|s| s.epoch() != sent)
        }));
        store
    }

    /// This host's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// The local store.
    pub fn local(&self) -> &Arc<dyn ObjectStore> {
        &self.local
    }

    /// Serves the data channel on `listener` (background threads).
    pub fn serve(self: &Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        let server = Server::spawn(listener, self.clone(), self.cfg.budget.clone())?;
        if let Some(old) = self.server.lock().replace(server) {
            old.shutdown();
        }
        Ok(())
    }

    /// Stops serving and stops the background rebalancing (for a host leaving, and tests).
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(s) = self.server.lock().take() {
            s.shutdown();
        }
        self.epoch_cv.notify_all();
    }

    /// Installs the map of a new epoch: placement is recomputed and rebalancing starts in the
    /// background. A map of an epoch not newer than the current one is ignored.
    pub fn set_map(&self, map: ClusterMap) {
        let members: Vec<(NodeId, u64)> = map.members.iter().map(|m| (m.id, m.capacity)).collect();
        let placement = Placement::new(&members);
        let addrs: HashMap<NodeId, Vec<SocketAddr>> = map
            .members
            .iter()
            .map(|m| (m.id, m.data_addrs.clone()))
            .collect();
        let epoch = map.epoch;
        {
            let mut v = self.view.write();
            if v.from_map && epoch <= v.epoch {
                tracing::debug!(epoch, current = v.epoch, "ignoring a map that is not newer");
                return;
            }
            let mut r = self.reb.lock();
            let new = View {
                epoch,
                placement,
                addrs,
                from_map: true,
            };
            r.epoch = epoch;
            r.cluster_epoch = map.cluster_epoch;
            r.members = new.placement.members().to_vec();
            r.done = r.early.remove(&epoch).unwrap_or_default();
            r.early.retain(|e, _| *e > epoch);
            r.settled.clear();
            r.inflight = 0;
            r.self_done = false;
            r.counters = Counters::default();
            self.note_complete(&r);
            *v = Arc::new(new);
        }
        *self.epoch_now.lock() = epoch;
        self.epoch_cv.notify_all();
        tracing::info!(
            epoch,
            members = map.members.len(),
            "data placement: new map"
        );
        self.spawn_rebalance(epoch);
    }

    /// Epoch, rebalancing counters and health.
    pub fn status(&self) -> ReplicaStatus {
        let objects = self
            .local
            .list()
            .map(|l| l.iter().filter(|o| is_data(**o)).count() as u64)
            .unwrap_or(0);
        let members = self.current_view().placement.len();
        let r = self.reb.lock();
        let c = r.counters;
        ReplicaStatus {
            epoch: r.cluster_epoch,
            members,
            objects,
            pending: c.pending,
            pushed: c.pushed,
            pushed_bytes: c.pushed_bytes,
            pulled: c.pulled,
            pulled_bytes: c.pulled_bytes,
            dropped: c.dropped,
            dropped_bytes: c.dropped_bytes,
            done: r.self_done,
            complete: r.complete(),
            degraded: members < usize::from(self.max_copies.load(Ordering::Relaxed)),
        }
    }

    /// Checks every copy of `oid` on its holders: each reads its copy whole against its
    /// checksums, and the copies' versions and digests are compared. With `repair`, bad,
    /// stale, missing or diverged copies are replaced by the freshest good one (on a tie of
    /// versions, the content most copies agree on).
    pub fn check_object(&self, oid: Oid, repair: bool) -> Result<CheckReport> {
        if !is_data(oid) {
            return Err(eio(oid, "not a data object"));
        }
        self.wait_quorum(oid)?;
        let deadline = Instant::now() + self.cfg.io_timeout;
        let mut attempt = 0u32;
        loop {
            let view = self.current_view();
            match self.check_once(&view, oid, repair) {
                Ok(r) => return Ok(r),
                Err(SErr::Store(e)) => return Err(e),
                Err(SErr::Bad(m)) => return Err(eio(oid, m)),
                Err(e) => {
                    let msg = self.serr_text(e);
                    if Instant::now() >= deadline || self.stopped.load(Ordering::SeqCst) {
                        return Err(unavailable(oid, format!("check: {msg}")));
                    }
                    self.backoff(attempt, view.epoch, deadline);
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    fn check_once(&self, view: &View, oid: Oid, repair: bool) -> Result<CheckReport, SErr> {
        let holders = self.holders(view, oid);
        let infos = self.verify_all(view, oid, &holders)?;
        let report = self.judge(&holders, &infos);
        if report.good == report.copies || report.lost {
            return Ok(report);
        }
        // The copies differ: a write may be under way (applied on some copies, not yet on
        // the others). Look again after a pause, then hold every copy, so none is being
        // changed, and look a third time: what differs is repaired while held; the writes
        // that reached only some copies are retried by their writers after the release and
        // reach every copy then.
        std::thread::sleep(CHECK_PAUSE);
        let before = self.verify_all(view, oid, &holders)?;
        self.hold_all(view, oid, &holders)?;
        let res = self.check_held(view, oid, &holders, repair, &before);
        self.release_all(view, oid, &holders);
        res
    }

    fn check_held(
        &self,
        view: &View,
        oid: Oid,
        holders: &[NodeId],
        repair: bool,
        before: &[(NodeId, CopyInfo)],
    ) -> Result<CheckReport, SErr> {
        let infos = self.verify_all(view, oid, holders)?;
        let mut report = self.judge(holders, &infos);
        let Some((src, best)) = freshest(&infos, None) else {
            return Ok(report);
        };
        // A copy with the freshest version but other content may hold a write still on its
        // way to the other copies (sent to all, applied on this one, not yet read from the
        // others' sockets: the hold only waits for the requests a holder is serving).
        // Overwriting it with the majority's content would undo that write once the others
        // apply it and its writer is acknowledged. So such a copy is repaired only when the
        // copies did not change across the pause and the hold (a diverged copy left by a
        // writer that died); damaged, missing and older copies are repaired always.
        let stable = infos == before;
        let bad: Vec<NodeId> = infos
            .iter()
            .filter(|(_, i)| !(i.good() && i.meta == best))
            .filter(|(_, i)| stable || !i.good() || i.meta.version < best.version)
            .map(|(n, _)| *n)
            .collect();
        if !repair || bad.is_empty() {
            return Ok(report);
        }
        let body = if src == self.me {
            // The buffer before the lock (holders of the budget may wait for the lock), and
            // not for longer than a moment (the copies are held, for a lease).
            let mut body = self.cfg.budget.vec_within(MAX_BODY, Duration::from_secs(1));
            let _g = self.locks.lock(oid);
            self.read_image_into(oid, body.vec_mut())?;
            body
        } else {
            let addrs = view.addrs.get(&src).map(Vec::as_slice).unwrap_or(&[]);
            let r = self
                .pool
                .call(addrs, &self.header(Op::Fetch, oid, view.epoch), &[], None)
                .map_err(|e| SErr::Retry(format!("member {src}: {e}")))?;
            if r.header.status != Status::Ok {
                return Err(SErr::Retry(format!("member {src}: {:?}", r.header.status)));
            }
            r.body
        };
        for t in bad {
            let mut req = self.header(Op::Put, oid, view.epoch);
            req.b = best.version;
            req.flags = FLAG_FORCE;
            let (status, ..) = self.call_holder(view, t, &req, &body)?;
            if status != Status::Ok {
                return Err(SErr::Retry(format!("repairing on member {t}: {status:?}")));
            }
            report.repaired += 1;
            self.totals.lock().repaired += 1;
            tracing::info!(%oid, on = %t, "check: copy repaired");
        }
        Ok(report)
    }

    /// Sends `req` to member `h` (served here when `h` is this host); its status, value and
    /// body.
    fn call_holder(
        &self,
        view: &View,
        h: NodeId,
        req: &ReqHeader,
        body: &[u8],
    ) -> Result<(Status, u64, Buf), SErr> {
        if h == self.me {
            let mut out = Vec::new();
            let reply = self.handle_req(req, body, &mut out);
            return Ok((reply.status, reply.value, Buf::from(out)));
        }
        let addrs = view.addrs.get(&h).map(Vec::as_slice).unwrap_or(&[]);
        let r = self
            .pool
            .call(addrs, req, body, None)
            .map_err(|e| SErr::Retry(format!("member {h}: {e}")))?;
        Ok((r.header.status, r.header.value, r.body))
    }

    /// Each holder reads its copy of `oid` whole against its checksums.
    fn verify_all(
        &self,
        view: &View,
        oid: Oid,
        holders: &[NodeId],
    ) -> Result<Vec<(NodeId, CopyInfo)>, SErr> {
        let mut infos = Vec::with_capacity(holders.len());
        for &h in holders {
            let req = self.header(Op::Verify, oid, view.epoch);
            let (status, value, body) = self.call_holder(view, h, &req, &[])?;
            match status {
                Status::Ok => infos.push((h, CopyInfo::decode(value, &body))),
                Status::WrongEpoch => return Err(SErr::Retry("epoch changed".into())),
                s => return Err(SErr::Retry(format!("member {h}: {s:?}"))),
            }
        }
        Ok(infos)
    }

    /// The report of the copies `infos` of the object of `holders`.
    fn judge(&self, holders: &[NodeId], infos: &[(NodeId, CopyInfo)]) -> CheckReport {
        let mut report = CheckReport {
            copies: u32::try_from(holders.len()).unwrap_or(u32::MAX),
            ..CheckReport::default()
        };
        let Some((_, best)) = freshest(infos, None) else {
            report.lost = infos.iter().any(|(_, i)| i.state != CopyState::Absent);
            if !report.lost {
                report.copies = 0; // no copy anywhere: the object does not exist
            }
            return report;
        };
        let bad = infos
            .iter()
            .filter(|(_, i)| !(i.good() && i.meta == best))
            .count();
        report.good = report
            .copies
            .saturating_sub(u32::try_from(bad).unwrap_or(u32::MAX));
        report
    }

    /// Recovery progress of this host.
    pub fn recovery(&self) -> RecoveryStatus {
        let unverified = self.unverified.lock().len() as u64;
        let throttle = self.bucket.lock().rate;
        let totals = *self.totals.lock();
        let full = self.is_full();
        let r = self.reb.lock();
        let c = r.counters;
        RecoveryStatus {
            epoch: r.cluster_epoch,
            to_check: c.to_check,
            checked: c.to_check.saturating_sub(c.pending),
            copied: c.pushed + c.received + c.pulled,
            copied_bytes: c.pushed_bytes + c.received_bytes + c.pulled_bytes,
            sent: c.pushed,
            sent_bytes: c.pushed_bytes,
            received: c.received + c.pulled,
            received_bytes: c.received_bytes + c.pulled_bytes,
            kept: c.kept,
            kept_bytes: c.kept_bytes,
            patched: c.patched,
            patched_blocks: c.patched_blocks,
            saved_bytes: c.saved_bytes,
            unverified,
            repaired: totals.repaired,
            skipped_full: c.skipped_full,
            throttle,
            total_received_bytes: totals.received_bytes,
            done: r.self_done,
            complete: r.complete(),
            full,
        }
    }

    /// Limits the data this host sends or fetches for background recovery to `bytes_per_sec`
    /// (`None`: unthrottled). On-demand fetches (objects a VM uses) are never throttled.
    pub fn set_throttle(&self, bytes_per_sec: Option<u64>) {
        let mut b = self.bucket.lock();
        b.rate = bytes_per_sec.filter(|r| *r > 0);
        b.tokens = 0.0;
        b.last = Instant::now();
        tracing::info!(rate = ?b.rate, "recovery throttle");
    }

    /// From now on, requests of this host wait while `check` says it does not reach a quorum
    /// of the cluster, and fail with an I/O error after `io_timeout`.
    pub fn set_quorum_check(&self, check: QuorumCheck) {
        *self.quorum.write() = Some(check);
    }

    /// Marks every local data copy unverified (persisted): the cluster went on without this
    /// host, so what it holds may be stale. Each copy is compared with the others' good
    /// copies before it is served or pushed again (see the module docs).
    pub fn suspect_local_data(&self) {
        let oids = match self.local.list() {
            Ok(l) => l.into_iter().filter(|o| is_data(*o)).collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(error = %e, "suspect: cannot list the local store");
                Vec::new()
            }
        };
        let mut u = self.unverified.lock();
        u.extend(oids.iter().copied());
        self.any_unverified.store(!u.is_empty(), Ordering::SeqCst);
        self.persist_unverified(&u);
        drop(u);
        self.reb.lock().settled.clear();
        tracing::info!(
            objects = oids.len(),
            "local copies marked unverified: each is compared with the cluster's before use"
        );
    }

    fn persist_unverified(&self, set: &HashSet<Oid>) {
        let res = if set.is_empty() {
            self.local
                .remove(unverified_oid())
                .and_then(|()| self.local.sync(&[unverified_oid()]))
        } else {
            let mut v: Vec<u64> = set.iter().map(|o| o.0).collect();
            v.sort_unstable();
            self.local.put_atomic(unverified_oid(), &encode_u64s(v))
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "cannot store the list of unverified copies");
        }
    }

    fn is_unverified(&self, oid: Oid) -> bool {
        self.any_unverified.load(Ordering::SeqCst) && self.unverified.lock().contains(&oid)
    }

    /// Adds the local copy of `oid` to the persisted unverified copies.
    fn mark_unverified(&self, oid: Oid) {
        let mut u = self.unverified.lock();
        if u.insert(oid) {
            self.any_unverified.store(true, Ordering::SeqCst);
            self.persist_unverified(&u);
        }
    }

    fn mark_verified(&self, oid: Oid) {
        if !self.any_unverified.load(Ordering::SeqCst) {
            return;
        }
        let mut u = self.unverified.lock();
        if u.remove(&oid) && u.is_empty() {
            self.any_unverified.store(false, Ordering::SeqCst);
            self.persist_unverified(&u);
            tracing::info!("every unverified copy has been checked");
        }
    }

    /// Runs `f` once if the local store turns out to be failing (eight I/O
    /// errors or bad copies within a minute): the host then takes itself out of the data
    /// placement, so its copies are rebuilt on other hosts.
    pub fn on_store_failed(&self, f: StoreFailed) {
        *self.on_store_failed.lock() = Some(f);
    }

    fn note_store_error(&self) {
        let now = Instant::now();
        let fire = {
            let mut q = self.store_errors.lock();
            q.push_back(now);
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) > STORE_ERROR_WINDOW)
            {
                q.pop_front();
            }
            q.len() >= STORE_ERROR_LIMIT
        };
        if fire {
            if let Some(f) = self.on_store_failed.lock().take() {
                tracing::error!(
                    "the local store keeps failing: this host takes itself out of the data placement"
                );
                f();
            }
        }
    }

    /// The copy of `oid` here cannot be trusted (its store failed): drop it and repair it
    /// from a good copy in the background.
    fn drop_bad_copy(&self, oid: Oid) {
        self.note_store_error();
        tracing::warn!(%oid, "dropping a copy this host's store failed on");
        if let Err(e) = self.local.remove(oid) {
            tracing::warn!(%oid, error = %e, "cannot remove a bad copy");
        }
        self.mark_unverified(oid);
        self.reb.lock().settled.remove(&oid);
        self.spawn_repair(oid);
    }

    /// True when free space is below the reserve (looked at again at most once a second).
    fn is_full(&self) -> bool {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.full_checked.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < 1000 {
            return self.full.load(Ordering::Relaxed);
        }
        self.full_checked.store(now, Ordering::Relaxed);
        let full = match self.local.stats() {
            Ok(st) => {
                let reserve = self
                    .cfg
                    .reserve
                    .unwrap_or_else(|| (st.capacity / 50).clamp(16 << 20, 4 << 30));
                st.capacity > 0 && st.free < reserve
            }
            Err(_) => false,
        };
        if full != self.full.swap(full, Ordering::Relaxed) {
            if full {
                tracing::warn!("store near full: taking no new objects nor copies");
            } else {
                tracing::info!("store no longer near full");
            }
        }
        full
    }

    /// Waits for the bucket to allow `bytes` of recovery traffic; false if superseded.
    fn throttle(&self, bytes: usize, epoch: u64) -> bool {
        loop {
            let wait = {
                let mut b = self.bucket.lock();
                let Some(rate) = b.rate else {
                    return true;
                };
                let now = Instant::now();
                let rate = rate as f64;
                b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(rate);
                b.last = now;
                if b.tokens >= 0.0 {
                    b.tokens -= bytes as f64;
                    return true;
                }
                Duration::from_secs_f64((-b.tokens / rate).min(0.1))
            };
            if self.superseded(epoch) {
                return false;
            }
            std::thread::sleep(wait);
        }
    }

    /// The checks before data I/O on `offset..offset+len` of `oid`: a quorum, a range inside
    /// the object.
    fn enter(&self, oid: Oid, offset: u64, len: u64) -> Result<()> {
        self.wait_quorum(oid)?;
        if !in_object(offset, len) {
            return Err(Error::OutOfRange { oid, offset, len });
        }
        Ok(())
    }

    /// Waits while this host does not reach a quorum; an I/O error after `io_timeout`.
    fn wait_quorum(&self, oid: Oid) -> Result<()> {
        let check = {
            let q = self.quorum.read();
            match q.as_ref() {
                None => return Ok(()),
                Some(c) if c() => return Ok(()),
                Some(c) => c.clone(),
            }
        };
        let deadline = crate::deadline::within(self.cfg.io_timeout);
        while !check() {
            if Instant::now() >= deadline || self.stopped.load(Ordering::SeqCst) {
                return Err(unavailable(
                    oid,
                    "this host does not reach a quorum of the cluster (partitioned away)",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    // ----- helpers -------------------------------------------------------------------------

    fn current_view(&self) -> Arc<View> {
        self.view.read().clone()
    }

    fn epoch(&self) -> u64 {
        *self.epoch_now.lock()
    }

    fn copies_of(&self, oid: Oid) -> usize {
        let c = self.copies.copies(oid.vid()).max(1);
        self.max_copies.fetch_max(c, Ordering::Relaxed);
        usize::from(c)
    }

    fn holders(&self, view: &View, oid: Oid) -> Vec<NodeId> {
        view.placement.holders(oid, self.copies_of(oid))
    }

    /// Waits until the map reaches `target`; false on timeout or shutdown.
    fn wait_epoch(&self, target: u64, deadline: Instant) -> bool {
        let mut g = self.epoch_now.lock();
        while *g < target {
            if self.stopped.load(Ordering::SeqCst)
                || self.epoch_cv.wait_until(&mut g, deadline).timed_out()
            {
                return *g >= target;
            }
        }
        true
    }

    /// Waits for the map of epoch `target`, which a holder already has, before a retry.
    fn catch_up(&self, oid: Oid, target: u64, deadline: Instant) -> Result<()> {
        if self.wait_epoch(target, deadline) {
            Ok(())
        } else {
            Err(unavailable(
                oid,
                format!("map did not reach epoch {target} in time"),
            ))
        }
    }

    /// Sleeps a growing pause, cut short if the map changes.
    fn backoff(&self, attempt: u32, epoch: u64, deadline: Instant) {
        let pause = Duration::from_millis(5u64 << attempt.min(6)).min(Duration::from_millis(200));
        let until = (Instant::now() + pause).min(deadline);
        let mut g = self.epoch_now.lock();
        while *g == epoch && !self.stopped.load(Ordering::SeqCst) {
            if self.epoch_cv.wait_until(&mut g, until).timed_out() {
                break;
            }
        }
    }

    fn header(&self, op: Op, oid: Oid, epoch: u64) -> ReqHeader {
        let mut h = ReqHeader::new(op, self.me, oid);
        h.epoch = epoch;
        h
    }

    fn outcome(&self, oid: Oid, sent_epoch: u64, reply: Reply, body: Buf) -> Outcome {
        let msg = || String::from_utf8_lossy(&body).into_owned();
        match reply.status {
            Status::Ok => Outcome::Ok(reply.value, body),
            Status::WrongEpoch if reply.epoch > sent_epoch => Outcome::Ahead(reply.epoch),
            Status::WrongEpoch => Outcome::Transient(format!(
                "holder at epoch {} behind ours {sent_epoch}",
                reply.epoch
            )),
            Status::NotFound => Outcome::Fail(Error::NotFound(oid)),
            Status::NoSpace => Outcome::Fail(Error::NoSpace),
            Status::OutOfRange => Outcome::Fail(Error::OutOfRange {
                oid,
                offset: 0,
                len: 0,
            }),
            Status::Corrupt => Outcome::Bad(Error::CorruptObject(oid)),
            Status::Io => Outcome::Bad(eio(oid, format!("on a holder: {}", msg()))),
            Status::BadRequest => Outcome::Fail(eio(oid, format!("refused: {}", msg()))),
            Status::Retry => Outcome::Transient(msg()),
        }
    }

    fn net_outcome(&self, oid: Oid, sent_epoch: u64, r: Result<Response, NetError>) -> Outcome {
        match r {
            Ok(resp) => {
                let reply = Reply {
                    status: resp.header.status,
                    epoch: resp.header.epoch,
                    value: resp.header.value,
                };
                self.outcome(oid, sent_epoch, reply, resp.body)
            }
            Err(e) => Outcome::Transient(e.to_string()),
        }
    }

    // ----- requesting side -----------------------------------------------------------------

    /// Sends the planned requests to every target at once, applies the local one, collects,
    /// and retries the whole plan (recomputed from the map) until every target applied it.
    fn fan_out<'a>(&self, oid: Oid, plan: impl Fn(&View) -> Vec<Planned<'a>>) -> Result<()> {
        let deadline = crate::deadline::within(self.cfg.io_timeout);
        let mut attempt = 0u32;
        loop {
            let view = self.current_view();
            let planned = plan(&view);
            let mut outcomes = Vec::with_capacity(planned.len());
            let mut calls = Vec::with_capacity(planned.len());
            for (node, req, body) in &planned {
                if *node == self.me {
                    continue;
                }
                let mut req = *req;
                req.epoch = view.epoch;
                match view.addrs.get(node) {
                    Some(addrs) => match self.pool.send(addrs, &req, body, false) {
                        Ok(c) => calls.push((req.oid, c)),
                        Err(e) => outcomes.push(Outcome::Transient(format!("member {node}: {e}"))),
                    },
                    None => outcomes.push(Outcome::Transient(format!("member {node}: no address"))),
                }
            }
            for (node, req, body) in &planned {
                if *node == self.me {
                    let mut req = *req;
                    req.epoch = view.epoch;
                    let mut out = Vec::new();
                    let reply = self.handle_req(&req, body, &mut out);
                    outcomes.push(self.outcome(req.oid, view.epoch, reply, Buf::from(out)));
                }
            }
            for (req_oid, c) in calls {
                let r = c.recv(&self.pool, None);
                outcomes.push(self.net_outcome(req_oid, view.epoch, r));
            }
            let mut hard = None;
            let mut ahead = None;
            let mut transient = None;
            let mut bad = None;
            let mut ok = 0usize;
            for o in outcomes {
                match o {
                    Outcome::Ok(..) => ok += 1,
                    Outcome::Fail(e) => {
                        hard.get_or_insert(e);
                    }
                    // That holder dropped its copy (its store failed); the others carry it.
                    Outcome::Bad(e) => {
                        bad.get_or_insert(e);
                    }
                    Outcome::Ahead(e) => ahead = Some(ahead.map_or(e, |a: u64| a.max(e))),
                    Outcome::Transient(m) => transient = Some(m),
                }
            }
            if let Some(target) = ahead {
                self.catch_up(oid, target, deadline)?;
                continue;
            }
            if let Some(e) = hard {
                return Err(e);
            }
            if let Some(e) = bad {
                if ok == 0 && transient.is_none() {
                    return Err(e);
                }
                tracing::warn!(%oid, error = %e, "a holder dropped its copy; the others have it");
            }
            let Some(msg) = transient else {
                return Ok(());
            };
            if Instant::now() >= deadline || self.stopped.load(Ordering::SeqCst) {
                return Err(unavailable(oid, format!("a holder is unavailable: {msg}")));
            }
            tracing::debug!(%oid, attempt, reason = %msg, "retrying a replicated request");
            self.backoff(attempt, view.epoch, deadline);
            attempt += 1;
        }
    }

    /// Asks the holders of `oid` one after the other (this host first if it is one) until one
    /// answers.
    fn try_holders(
        &self,
        oid: Oid,
        mut one: impl FnMut(&View, NodeId) -> Outcome,
    ) -> Result<(u64, Buf)> {
        let deadline = crate::deadline::within(self.cfg.io_timeout);
        let mut attempt = 0u32;
        loop {
            let view = self.current_view();
            let mut hs = self.holders(&view, oid);
            if let Some(i) = hs.iter().position(|h| *h == self.me) {
                hs.swap(0, i);
            }
            let mut ahead = None;
            let mut last = String::from("no holder");
            let asked = hs.len();
            let mut bad = Vec::new();
            for h in hs {
                match one(&view, h) {
                    Outcome::Ok(v, b) => return Ok((v, b)),
                    Outcome::Fail(e) => return Err(e),
                    Outcome::Bad(e) => {
                        tracing::warn!(%oid, holder = %h, error = %e, "bad copy: trying the next holder");
                        last = format!("member {h}: {e}");
                        bad.push(e);
                    }
                    Outcome::Ahead(e) => {
                        ahead = Some(e);
                        break;
                    }
                    Outcome::Transient(m) => last = format!("member {h}: {m}"),
                }
            }
            if let Some(target) = ahead {
                self.catch_up(oid, target, deadline)?;
                continue;
            }
            if asked > 0 && bad.len() == asked {
                // Every copy is bad: never serve one, never retry forever.
                return Err(bad.swap_remove(0));
            }
            if Instant::now() >= deadline || self.stopped.load(Ordering::SeqCst) {
                return Err(unavailable(oid, format!("no holder answered: {last}")));
            }
            self.backoff(attempt, view.epoch, deadline);
            attempt += 1;
        }
    }

    /// A small query (exists, extents, allocated) answered by one holder.
    fn ask(&self, op: Op, oid: Oid) -> Result<(u64, Buf)> {
        self.try_holders(oid, |view, h| {
            let req = self.header(op, oid, view.epoch);
            if h == self.me {
                let mut out = Vec::new();
                let reply = self.handle_req(&req, &[], &mut out);
                return self.outcome(oid, view.epoch, reply, Buf::from(out));
            }
            match view.addrs.get(&h) {
                Some(addrs) => {
                    let r = self.pool.call(addrs, &req, &[], None);
                    self.net_outcome(oid, view.epoch, r)
                }
                None => Outcome::Transient("no address".into()),
            }
        })
    }

    fn single(&self, oid: Oid, req: ReqHeader) -> impl Fn(&View) -> Vec<Planned<'static>> + '_ {
        move |view| {
            self.holders(view, oid)
                .into_iter()
                .map(|n| (n, req, Cow::Borrowed(&[][..])))
                .collect()
        }
    }

    // ----- serving side --------------------------------------------------------------------

    /// Serves one request (from the network or from this host's own requesting side).
    fn handle_req(&self, req: &ReqHeader, body: &[u8], out: &mut Vec<u8>) -> Reply {
        let res = if self.stopped.load(Ordering::SeqCst) {
            Err(SErr::Retry("host is shutting down".into()))
        } else {
            self.serve_inner(req, body, out)
        };
        match res {
            Ok(value) => Reply {
                status: Status::Ok,
                epoch: self.epoch(),
                value,
            },
            Err(e) => self.serve_reply_of(e, out),
        }
    }

    fn view_at(&self, epoch: u64) -> Result<Arc<View>, SErr> {
        let v = self.current_view();
        if v.epoch != epoch {
            return Err(SErr::Epoch(v.epoch));
        }
        Ok(v)
    }

    /// Runs a local change under the epoch fence.
    fn fenced<T>(&self, epoch: u64, f: impl FnOnce() -> Result<T>) -> Result<T, SErr> {
        let v = self.view.read();
        if v.epoch != epoch {
            return Err(SErr::Epoch(v.epoch));
        }
        Ok(f()?)
    }

    /// Publishes whether `r`'s epoch is settled: its rebalancing complete and no request that
    /// began before that still holding an object lock (the caller holds `reb`).
    fn note_complete(&self, r: &Rebal) {
        let e = if r.unsettled(r.epoch) { 0 } else { r.epoch };
        self.settled_epoch.store(e, Ordering::Release);
    }

    fn settle(&self, epoch: u64, oid: Oid) {
        if self.settled_epoch.load(Ordering::Acquire) == epoch {
            return;
        }
        let mut r = self.reb.lock();
        if r.epoch == epoch && !r.complete() {
            r.settled.insert(oid);
        }
    }

    /// Locks `oid` for a request of `epoch` while that epoch is unsettled (objects may still
    /// be replaced by fetched copies here) or the local copy is unverified; `None` otherwise,
    /// the common case, which costs one atomic load.
    ///
    /// A request that finds the epoch unsettled counts as in flight until it drops the lock,
    /// and the epoch is published as settled only once none is left: a request that locked
    /// while rebalancing was incomplete may be replacing its object with a fetched image, and
    /// a request skipping the lock meanwhile would write into the copy about to be replaced
    /// (an acknowledged write lost on that holder).
    fn lock_if_unsettled(&self, epoch: u64, oid: Oid) -> Option<RequestLock<'_>> {
        let counted = self.settled_epoch.load(Ordering::Acquire) != epoch && {
            let mut r = self.reb.lock();
            let unsettled = r.unsettled(epoch);
            if unsettled {
                r.inflight += 1;
            }
            unsettled
        };
        if !counted && !self.is_unverified(oid) {
            return None;
        }
        Some(RequestLock {
            store: self,
            counted: counted.then_some(epoch),
            _oid: self.locks.lock(oid),
        })
    }

    /// What this host's copy of `oid` is (no on-demand fetch).
    fn copy_info(&self, oid: Oid) -> Result<CopyInfo> {
        match self.local.meta(oid) {
            Ok(meta) => Ok(CopyInfo {
                state: if self.is_unverified(oid) {
                    CopyState::Unverified
                } else {
                    CopyState::Good
                },
                meta,
            }),
            Err(Error::NotFound(_)) => Ok(CopyInfo::ABSENT),
            Err(e) => Err(e),
        }
    }

    /// Asks every other member of the view what its copy of `oid` is (in parallel).
    fn survey(&self, view: &View, oid: Oid) -> Result<Vec<(NodeId, CopyInfo)>, SErr> {
        let mut calls = Vec::new();
        for m in view.placement.members() {
            if *m == self.me {
                continue;
            }
            let Some(addrs) = view.addrs.get(m) else {
                return Err(SErr::Retry(format!("member {m} has no address")));
            };
            let call = self
                .pool
                .send(addrs, &self.header(Op::Have, oid, view.epoch), &[], false)
                .map_err(|e| SErr::Retry(format!("probing member {m}: {e}")))?;
            calls.push((*m, call));
        }
        let mut out = Vec::with_capacity(calls.len());
        for (m, call) in calls {
            let r = call
                .recv(&self.pool, None)
                .map_err(|e| SErr::Retry(format!("probing member {m}: {e}")))?;
            if r.header.status != Status::Ok {
                return Err(SErr::Retry(format!(
                    "probing member {m}: {:?} at epoch {}",
                    r.header.status, r.header.epoch
                )));
            }
            out.push((m, CopyInfo::decode(r.header.value, &r.body)));
        }
        Ok(out)
    }

    /// Makes the local copy of `oid` current before serving it. While rebalancing is
    /// incomplete, or when the local copy is unverified, the copies of every other member are
    /// compared: a missing, older or (if unverified) different copy is replaced by the
    /// freshest good one (patched in place when it exists: only its differing blocks are
    /// copied). The caller holds the object's lock.
    fn ensure_local(&self, view: &View, oid: Oid) -> Result<(), SErr> {
        self.ensure_local_as(view, oid, false)
    }

    /// [`ReplicatedStore::ensure_local`]; with `throttled`, what it copies goes through the
    /// recovery throttle (a rebalance walk asked for it).
    fn ensure_local_as(&self, view: &View, oid: Oid, throttled: bool) -> Result<(), SErr> {
        let unverified = self.is_unverified(oid);
        if !unverified {
            if self.settled_epoch.load(Ordering::Acquire) == view.epoch {
                return Ok(());
            }
            let r = self.reb.lock();
            if r.epoch != view.epoch || r.complete() || r.settled.contains(&oid) {
                return Ok(());
            }
        }
        let mine = match self.local.meta(oid) {
            Ok(m) => Some(m),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let infos = self.survey(view, oid)?;
        let best = freshest(&infos, mine);
        match (mine, best) {
            // A good copy is kept unless a newer one exists; an unverified one only if it is
            // the freshest exactly (a newer unverified copy holds a write never acknowledged).
            (Some(m), Some((_, b))) if (!unverified && b.version <= m.version) || b == m => {
                if unverified {
                    self.count_kept(oid);
                }
            }
            (Some(_), None) if unverified => {
                tracing::info!(%oid, "an unverified copy is the only one left: kept");
                self.count_kept(oid);
            }
            (_, Some(_)) => {
                let fetched = self.fetch_replace(view, oid, &infos, mine, throttled)?;
                self.count_fetched(&fetched);
            }
            (_, None) => {} // nobody has it: it does not exist yet
        }
        self.mark_verified(oid);
        self.settle(view.epoch, oid);
        Ok(())
    }

    fn count_kept(&self, oid: Oid) {
        let bytes = self.local.allocated(oid).unwrap_or(0);
        let mut r = self.reb.lock();
        r.counters.kept += 1;
        r.counters.kept_bytes += bytes;
    }

    /// Counts a copy made current by a fetch (whole or patched).
    fn count_fetched(&self, f: &Fetched) {
        let mut r = self.reb.lock();
        r.counters.pulled += 1;
        r.counters.pulled_bytes += f.bytes;
        if let Some(p) = f.patched {
            r.counters.patched += 1;
            r.counters.patched_blocks += p.blocks;
            r.counters.saved_bytes += p.saved;
        }
        drop(r);
        self.totals.lock().received_bytes += f.bytes;
    }

    /// Waits for the recovery throttle to allow `bytes`; `SErr::Epoch` if the epoch moved on
    /// (or the store stops) meanwhile.
    fn throttled(&self, bytes: u64, epoch: u64) -> Result<(), SErr> {
        if self.throttle(usize::try_from(bytes).unwrap_or(usize::MAX), epoch) {
            Ok(())
        } else {
            Err(SErr::Epoch(self.epoch()))
        }
    }

    /// Makes the local copy of `oid` the freshest good copy among `infos` (trying the next
    /// one if a source's copy turns out bad): with `mine` (the local copy exists), by copying
    /// only the blocks that differ ([`ReplicatedStore::patch_from`]), else or when that does
    /// not do, by replacing it whole. With `throttled`, what it copies goes through the
    /// recovery throttle. Returns what was copied. The caller holds the object's lock.
    fn fetch_replace(
        &self,
        view: &View,
        oid: Oid,
        infos: &[(NodeId, CopyInfo)],
        mine: Option<ObjectMeta>,
        throttled: bool,
    ) -> Result<Fetched, SErr> {
        let mut left: Vec<(NodeId, CopyInfo)> = infos.to_vec();
        let mut last = String::from("no good copy");
        while let Some((src, _)) = freshest(&left, mine) {
            left.retain(|(n, _)| *n != src);
            let Some(addrs) = view.addrs.get(&src) else {
                continue;
            };
            if mine.is_some() {
                match self.patch_from(view, oid, src, throttled) {
                    Ok(Some(fetched)) => return Ok(fetched),
                    Ok(None) => {} // copied whole, from the same source
                    Err(e) => return Err(self.failed_fetch(oid, e)),
                }
            }
            let got =
                match self
                    .pool
                    .call(addrs, &self.header(Op::Fetch, oid, view.epoch), &[], None)
                {
                    Ok(g) => g,
                    Err(e) => {
                        last = format!("fetching from member {src}: {e}");
                        continue;
                    }
                };
            if got.header.status != Status::Ok {
                last = format!("fetching from member {src}: {:?}", got.header.status);
                continue;
            }
            let (extents, data) =
                decode_image(&got.body).map_err(|e| SErr::Retry(format!("member {src}: {e}")))?;
            if throttled {
                self.throttled(data.len() as u64, view.epoch)?;
            }
            let version = got.header.value;
            self.fenced(view.epoch, || {
                self.local.remove(oid)?;
                self.write_image(oid, &extents, data)?;
                self.local.set_version(oid, version)?;
                self.local.sync(&[oid])
            })
            .map_err(|e| self.failed_fetch(oid, e))?;
            tracing::debug!(%oid, from = %src, version, "made the local copy current");
            return Ok(Fetched {
                bytes: data.len() as u64,
                patched: None,
            });
        }
        Err(SErr::Retry(format!("cannot make {oid} current: {last}")))
    }

    /// The error of a fetch that failed while changing the local copy: a copy the store
    /// failed on (other than for space) is dropped, to be repaired.
    fn failed_fetch(&self, oid: Oid, e: SErr) -> SErr {
        if let SErr::Store(err) = &e {
            if !matches!(err, Error::NoSpace) {
                self.drop_bad_copy(oid);
            }
        }
        e
    }

    /// Repairs the local copy of `oid` from a good copy, in the background.
    fn spawn_repair(&self, oid: Oid) {
        if !self.repairing.lock().insert(oid) {
            return;
        }
        let Some(this) = self.this.upgrade() else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("sheep-repair".into())
            .spawn(move || {
                let mut attempt = 0u32;
                let deadline = Instant::now() + this.cfg.io_timeout;
                loop {
                    let view = this.current_view();
                    let res = this.repair_held(&view, oid);
                    match res {
                        Ok(true) => {
                            this.totals.lock().repaired += 1;
                            tracing::info!(%oid, "repaired a bad copy from a good one");
                            break;
                        }
                        Ok(false) => break,
                        Err(e) => {
                            if Instant::now() >= deadline || this.stopped.load(Ordering::SeqCst) {
                                tracing::warn!(%oid, error = %e, "cannot repair a bad copy");
                                break;
                            }
                            this.backoff(attempt, view.epoch, deadline);
                            attempt = attempt.saturating_add(1);
                        }
                    }
                }
                this.repairing.lock().remove(&oid);
            });
        if let Err(e) = spawned {
            self.repairing.lock().remove(&oid);
            tracing::error!(error = %e, "cannot start a repair");
        }
    }

    /// Repairs the local copy of `oid` while every holder's copy is held (no write is being
    /// applied anywhere, so the fetched copy holds every write applied here).
    fn repair_held(&self, view: &View, oid: Oid) -> Result<bool, String> {
        let holders = self.holders(view, oid);
        if !holders.contains(&self.me) {
            let _g = self.locks.lock(oid);
            return self.repair_once(view, oid);
        }
        self.hold_all(view, oid, &holders)
            .map_err(|e| self.serr_text(e))?;
        let res = {
            let _g = self.locks.lock(oid);
            self.repair_once(view, oid)
        };
        self.release_all(view, oid, &holders);
        res
    }

    fn repair_once(&self, view: &View, oid: Oid) -> Result<bool, String> {
        if !self.holders(view, oid).contains(&self.me) {
            // Not ours to keep: drop it, the holders have theirs.
            let _ = self.fenced(view.epoch, || self.local.remove(oid));
            self.mark_verified(oid);
            return Ok(false);
        }
        let infos = self.survey(view, oid).map_err(|e| self.serr_text(e))?;
        if freshest(&infos, None).is_none() {
            return Err("no good copy on another member".into());
        }
        let fetched = self
            .fetch_replace(view, oid, &infos, None, false)
            .map_err(|e| self.serr_text(e))?;
        self.totals.lock().received_bytes += fetched.bytes;
        self.mark_verified(oid);
        self.settle(view.epoch, oid);
        Ok(true)
    }

    fn serr_text(&self, e: SErr) -> String {
        match e {
            SErr::Store(e) => e.to_string(),
            SErr::Epoch(ep) => format!("epoch moved to {ep}"),
            SErr::Retry(m) => m,
            SErr::Bad(m) => m.to_string(),
        }
    }

    fn write_image(&self, oid: Oid, extents: &[Range<u64>], data: &[u8]) -> Result<()> {
        self.local.write(oid, 0, &[])?;
        let mut at = 0usize;
        for r in extents {
            let len = usize::try_from(r.end - r.start).map_err(|_| Error::CorruptObject(oid))?;
            let piece = data.get(at..at + len).ok_or(Error::CorruptObject(oid))?;
            self.local.write(oid, r.start, piece)?;
            at += len;
        }
        Ok(())
    }

    /// Reads the local copy's data extents (coalesced if there are too many to send) into
    /// `out` as an encoded image (see [`crate::net::proto::Image`]), the bytes read in place.
    fn read_image_into(&self, oid: Oid, out: &mut Vec<u8>) -> Result<()> {
        if !self.local.exists(oid)? {
            return Err(Error::NotFound(oid));
        }
        let mut extents = self.local.extents(oid)?;
        if extents.len() > MAX_EXTENTS {
            let (s, e) = (extents[0].start, extents[extents.len() - 1].end);
            extents.clear();
            extents.push(s..e);
        }
        self.read_ranges_into(oid, &extents, out)
    }

    /// Reads `extents` of the local copy of `oid` into `out` as an encoded image (see
    /// [`crate::net::proto::Image`]), the bytes read in place.
    pub(crate) fn read_ranges_into(
        &self,
        oid: Oid,
        extents: &[std::ops::Range<u64>],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let total: u64 = extents.iter().map(|r| r.end - r.start).sum();
        let total = usize::try_from(total).map_err(|_| Error::CorruptObject(oid))?;
        if total > OBJECT_BYTES || extents.len() > MAX_EXTENTS {
            return Err(Error::CorruptObject(oid));
        }
        let count = u32::try_from(extents.len()).map_err(|_| Error::CorruptObject(oid))?;
        out.clear();
        out.extend_from_slice(&count.to_le_bytes());
        for r in extents {
            out.extend_from_slice(&r.start.to_le_bytes());
            out.extend_from_slice(&(r.end - r.start).to_le_bytes());
        }
        let mut at = out.len();
        out.resize(at + total, 0);
        for r in extents {
            let len = usize::try_from(r.end - r.start).map_err(|_| Error::CorruptObject(oid))?;
            self.local.read(oid, r.start, &mut out[at..at + len])?;
            at += len;
        }
        Ok(())
    }

    fn serve_read(&self, epoch: u64, oid: Oid, offset: u64, buf: &mut [u8]) -> Result<(), SErr> {
        let view = self.view_at(epoch)?;
        let _e = self.enter_copy(oid)?;
        let _g = self.lock_if_unsettled(epoch, oid);
        self.ensure_local(&view, oid)?;
        let res = self.fenced(epoch, || self.local.read(oid, offset, buf));
        if let Err(SErr::Store(Error::CorruptObject(_) | Error::Io { .. })) = &res {
            tracing::warn!(%oid, "bad local copy: not served, repairing it");
            self.note_store_error();
            self.spawn_repair(oid);
        }
        res
    }

    /// A local change: lock, make current, apply under the fence, mark settled.
    fn serve_change<T>(
        &self,
        view: &View,
        oid: Oid,
        ensure: bool,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T, SErr> {
        let _e = self.enter_copy(oid)?;
        let _g = self.lock_if_unsettled(view.epoch, oid);
        if ensure {
            self.ensure_local(view, oid)?;
        }
        let r = match self.fenced(view.epoch, f) {
            Ok(r) => r,
            Err(SErr::Store(e @ (Error::Io { .. } | Error::CorruptObject(_)))) => {
                // This copy can no longer be trusted; the other holders carry the change.
                self.drop_bad_copy(oid);
                return Err(SErr::Store(e));
            }
            Err(e) => return Err(e),
        };
        self.settle(view.epoch, oid);
        Ok(r)
    }

    /// Refuses to create a new local object while the store is near full.
    fn room_for(&self, oid: Oid) -> Result<()> {
        if self.is_full() && !self.local.exists(oid)? {
            return Err(Error::NoSpace);
        }
        Ok(())
    }

    fn serve_copy(&self, view: &View, src: Oid, dst: Oid) -> Result<u64, SErr> {
        if !is_data(src) {
            return Err(SErr::Bad("copy source is not a data object"));
        }
        if self.holders(view, src).contains(&self.me) {
            {
                let _g = self.lock_if_unsettled(view.epoch, src);
                self.ensure_local(view, src)?;
            }
            self.serve_change(view, dst, false, || {
                self.room_for(dst)?;
                self.local.copy(src, dst)?;
                self.local.set_version(dst, view.epoch)
            })?;
            self.mark_verified(dst);
            return Ok(0);
        }
        // Not a holder of the source: fetch its data from one.
        let mut last = String::from("no holder");
        for h in self.holders(view, src) {
            let Some(addrs) = view.addrs.get(&h) else {
                continue;
            };
            let mut req = self.header(Op::Fetch, src, view.epoch);
            req.flags = FLAG_AS_HOLDER;
            match self.pool.call(addrs, &req, &[], None) {
                Ok(resp) if resp.header.status == Status::Ok => {
                    let (extents, data) = decode_image(&resp.body)
                        .map_err(|e| SErr::Retry(format!("member {h}: {e}")))?;
                    self.serve_change(view, dst, false, || {
                        self.room_for(dst)?;
                        self.local.remove(dst)?;
                        self.write_image(dst, &extents, data)?;
                        self.local.set_version(dst, view.epoch)
                    })?;
                    self.mark_verified(dst);
                    return Ok(0);
                }
                Ok(resp) if resp.header.status == Status::NotFound => {
                    return Err(SErr::Store(Error::NotFound(src)))
                }
                Ok(resp) => last = format!("member {h}: {:?}", resp.header.status),
                Err(e) => last = format!("member {h}: {e}"),
            }
        }
        Err(SErr::Retry(format!("copy source unavailable: {last}")))
    }

    fn serve_inner(&self, req: &ReqHeader, body: &[u8], out: &mut Vec<u8>) -> Result<u64, SErr> {
        if req.op == Op::RebalanceDone {
            self.note_done(req.from, req.a);
            return Ok(0);
        }
        let view = self.view_at(req.epoch)?;
        let oid = req.oid;
        let listed = req.op == Op::Sync || (req.op == Op::Have && !body.is_empty());
        if !listed && !is_data(oid) {
            return Err(SErr::Bad("not a data object"));
        }
        let range = |off: u64, len: u64| {
            if in_object(off, len) {
                Ok(())
            } else {
                Err(SErr::Store(Error::OutOfRange {
                    oid,
                    offset: off,
                    len,
                }))
            }
        };
        match req.op {
            Op::Read => {
                range(req.a, req.b)?;
                let len = usize::try_from(req.b).map_err(|_| SErr::Bad("length"))?;
                out.resize(len, 0);
                self.serve_read(view.epoch, oid, req.a, out)?;
                Ok(0)
            }
            Op::Write => {
                range(req.a, body.len() as u64)?;
                let existing = req.flags & FLAG_EXISTING != 0;
                let res = self.serve_change(&view, oid, true, || {
                    if existing {
                        if !self.local.exists(oid)? {
                            return Err(Error::NotFound(oid));
                        }
                    } else {
                        self.room_for(oid)?;
                    }
                    self.local.write(oid, req.a, body)?;
                    self.local.set_version(oid, view.epoch)
                });
                match res {
                    // An allocated object no reachable member has: never recreate it empty
                    // (its copies may come back); the writer gets EIO in the end.
                    Err(SErr::Store(Error::NotFound(_))) if existing => Err(SErr::Retry(format!(
                        "{oid} has no copy here nor on any member"
                    ))),
                    r => r.map(|()| 0),
                }
            }
            Op::Copy => self.serve_copy(&view, Oid(req.a), oid),
            Op::Punch => {
                range(req.a, req.b)?;
                self.serve_change(&view, oid, true, || {
                    self.local.punch(oid, req.a, req.b)?;
                    self.local.set_version(oid, view.epoch)
                })?;
                Ok(0)
            }
            Op::Remove => {
                self.serve_change(&view, oid, false, || self.local.remove(oid))?;
                self.mark_verified(oid);
                Ok(0)
            }
            Op::Exists | Op::Extents | Op::Allocated => {
                let _e = self.enter_copy(oid)?;
                let _g = self.lock_if_unsettled(view.epoch, oid);
                let background = req.op == Op::Exists && req.flags & FLAG_BACKGROUND != 0;
                self.ensure_local_as(&view, oid, background)?;
                match req.op {
                    Op::Exists => Ok(u64::from(self.local.exists(oid)?)),
                    Op::Allocated => Ok(self.local.allocated(oid)?),
                    _ => {
                        let ext = self.local.extents(oid)?;
                        *out = encode_u64s(ext.iter().flat_map(|r| [r.start, r.end]));
                        Ok(0)
                    }
                }
            }
            Op::Sync => {
                let oids: Vec<Oid> = decode_u64s(body)
                    .map_err(|_| SErr::Bad("sync list"))?
                    .into_iter()
                    .map(Oid)
                    .collect();
                if let Err(e) = self.local.sync(&oids) {
                    // Writes may be lost from these copies: they can no longer be trusted.
                    if !matches!(e, Error::NotFound(_)) {
                        for &o in &oids {
                            self.drop_bad_copy(o);
                        }
                    }
                    return Err(e.into());
                }
                Ok(0)
            }
            Op::Put => {
                let (extents, data) = decode_image(body).map_err(|_| SErr::Bad("object image"))?;
                let version = req.b;
                let pushed = ObjectMeta {
                    version,
                    digest: req.a,
                };
                let force = req.flags & FLAG_FORCE != 0;
                let _g = self.locks.lock(oid);
                let stored = self.fenced(view.epoch, || {
                    if !force {
                        if self.reb.lock().settled.contains(&oid) {
                            return Ok(false);
                        }
                        match self.copy_info(oid)? {
                            CopyInfo {
                                state: CopyState::Good,
                                meta,
                            } if meta.version >= version => return Ok(false),
                            CopyInfo {
                                state: CopyState::Unverified,
                                meta,
                            } if meta == pushed => {
                                // The unverified copy is the pushed one exactly: keep it.
                                self.count_kept(oid);
                                self.mark_verified(oid);
                                return Ok(false);
                            }
                            CopyInfo {
                                state: CopyState::Absent,
                                ..
                            } if self.is_full() => return Err(Error::NoSpace),
                            _ => {}
                        }
                    }
                    self.local.remove(oid)?;
                    self.write_image(oid, &extents, data)?;
                    self.local.set_version(oid, version)?;
                    self.local.sync(&[oid])?;
                    Ok(true)
                })?;
                if stored {
                    self.mark_verified(oid);
                    self.settle(view.epoch, oid);
                    let mut r = self.reb.lock();
                    r.counters.received += 1;
                    r.counters.received_bytes += data.len() as u64;
                    drop(r);
                    self.totals.lock().received_bytes += data.len() as u64;
                }
                Ok(u64::from(stored))
            }
            Op::Have if body.is_empty() => {
                let info = self.copy_info(oid)?;
                out.clear();
                info.encode(out);
                out.remove(0);
                Ok(info.state as u64)
            }
            Op::Have => {
                // A batch: one entry per listed object.
                let oids = decode_u64s(body).map_err(|_| SErr::Bad("have list"))?;
                out.clear();
                for o in oids {
                    self.copy_info(Oid(o))?.encode(out);
                }
                Ok(0)
            }
            Op::Fetch => {
                let _g = self.locks.lock(oid);
                if req.flags & FLAG_AS_HOLDER != 0 {
                    self.ensure_local(&view, oid)?;
                } else if self.is_unverified(oid) {
                    return Err(SErr::Retry(format!("the copy of {oid} here is unverified")));
                }
                let version = match self.local.meta(oid) {
                    Ok(m) => m.version,
                    Err(e) => return Err(e.into()),
                };
                match self.read_image_into(oid, out) {
                    Ok(()) => Ok(version),
                    Err(e @ (Error::CorruptObject(_) | Error::Io { .. })) => {
                        out.clear();
                        self.spawn_repair(oid);
                        Err(e.into())
                    }
                    Err(e) => {
                        out.clear();
                        Err(e.into())
                    }
                }
            }
            Op::Verify => {
                let _g = self.locks.lock(oid);
                let info = match self.local.verify(oid) {
                    Ok(()) => self.copy_info(oid)?,
                    Err(Error::NotFound(_)) => CopyInfo::ABSENT,
                    Err(e) => {
                        tracing::warn!(%oid, error = %e, "check: bad copy");
                        CopyInfo {
                            state: CopyState::Bad,
                            meta: self.local.meta(oid).unwrap_or_default(),
                        }
                    }
                };
                out.clear();
                info.encode(out);
                out.remove(0);
                Ok(info.state as u64)
            }
            Op::Hold => {
                self.hold(oid, Duration::from_millis(req.a));
                Ok(0)
            }
            Op::Sums => self.serve_sums(oid, req.a, out),
            Op::Blocks => self.serve_blocks(oid, body, out),
            Op::RebalanceDone => Ok(0),
        }
    }

    /// Holds the local copy of `oid` for `lease` (releases it if zero); returns once the
    /// reads and changes of it already under way have ended.
    fn hold(&self, oid: Oid, lease: Duration) {
        {
            let mut h = self.holds.lock();
            let now = Instant::now();
            h.retain(|_, until| *until > now);
            if lease.is_zero() {
                h.remove(&oid);
            } else {
                h.insert(oid, now + lease);
            }
            self.any_hold.store(!h.is_empty(), Ordering::SeqCst);
        }
        if !lease.is_zero() {
            drop(self.stripe(oid).write());
        }
    }

    fn stripe(&self, oid: Oid) -> &RwLock<()> {
        let i = usize::try_from(mix64(oid.0) % HOLD_STRIPES as u64).unwrap_or(0);
        &self.stripes[i]
    }

    /// Enters a read or a change of the local copy of `oid`: refused while a repair holds it.
    fn enter_copy(&self, oid: Oid) -> Result<parking_lot::RwLockReadGuard<'_, ()>, SErr> {
        let g = self.stripe(oid).read();
        if self.any_hold.load(Ordering::SeqCst) {
            let held = self
                .holds
                .lock()
                .get(&oid)
                .is_some_and(|until| *until > Instant::now());
            if held {
                return Err(SErr::Retry(format!("{oid} is held for a repair")));
            }
        }
        Ok(g)
    }

    /// Holds every holder's copy of `oid` (see [`Op::Hold`]): afterwards no write is being
    /// applied to any copy, and the writes that reached only some copies are retried by
    /// their writers once the holds are released. Releases what it took if one fails.
    fn hold_all(&self, view: &View, oid: Oid, holders: &[NodeId]) -> Result<(), SErr> {
        let lease = u64::try_from(HOLD_LEASE.as_millis()).unwrap_or(u64::MAX);
        for (i, &h) in holders.iter().enumerate() {
            if let Err(e) = self.hold_one(view, oid, h, lease) {
                self.release_all(view, oid, &holders[..i]);
                return Err(e);
            }
        }
        Ok(())
    }

    fn release_all(&self, view: &View, oid: Oid, holders: &[NodeId]) {
        for &h in holders {
            if let Err(e) = self.hold_one(view, oid, h, 0) {
                // The hold expires by itself at the end of its lease.
                tracing::debug!(%oid, holder = %h, error = %self.serr_text(e), "cannot release a hold");
            }
        }
    }

    fn hold_one(&self, view: &View, oid: Oid, h: NodeId, lease_ms: u64) -> Result<(), SErr> {
        let mut req = self.header(Op::Hold, oid, view.epoch);
        req.a = lease_ms;
        let (status, ..) = self.call_holder(view, h, &req, &[])?;
        if status == Status::Ok {
            Ok(())
        } else {
            Err(SErr::Retry(format!("holding on member {h}: {status:?}")))
        }
    }

    fn note_done(&self, from: NodeId, epoch: u64) {
        let mut r = self.reb.lock();
        if epoch == r.epoch {
            r.done.insert(from);
            self.note_complete(&r);
        } else if epoch > r.epoch {
            r.early.entry(epoch).or_default().insert(from);
        }
    }

    // ----- rebalancing ---------------------------------------------------------------------

    fn spawn_rebalance(&self, epoch: u64) {
        let Some(this) = self.this.upgrade() else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("sheep-rebalance".into())
            .spawn(move || this.rebalance(epoch));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start rebalancing");
        }
    }

    fn superseded(&self, epoch: u64) -> bool {
        self.stopped.load(Ordering::SeqCst) || self.epoch() != epoch
    }

    fn rebalance(&self, epoch: u64) {
        let view = self.current_view();
        if view.epoch != epoch {
            return;
        }
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut oids = loop {
            match self.local.list() {
                Ok(l) => break l.into_iter().filter(|o| is_data(*o)).collect::<Vec<_>>(),
                Err(e) => {
                    tracing::warn!(error = %e, "rebalance: cannot list the local store");
                    if self.superseded(epoch) {
                        return;
                    }
                    self.backoff(attempt, epoch, Instant::now() + Duration::from_secs(1));
                    attempt = attempt.saturating_add(1);
                }
            }
        };
        // Each host walks in its own order, so hosts holding the same object rarely push it
        // to the same new holder at the same time.
        // Unverified copies first: until checked, they are neither served nor pushed.
        let salt = crate::placement::vnode_hash(&self.me, u64::MAX);
        oids.sort_by_key(|o| (!self.is_unverified(*o), mix64(o.0 ^ salt)));
        {
            let mut r = self.reb.lock();
            r.counters.pending = oids.len() as u64;
            r.counters.to_check = oids.len() as u64;
        }
        for batch in oids.chunks(WALK_BATCH) {
            let Some(infos) = self.probe_batch(&view, batch) else {
                return;
            };
            for (oid, infos) in batch.iter().zip(infos) {
                if !self.rebalance_one(&view, *oid, &infos) {
                    return;
                }
                let mut r = self.reb.lock();
                r.counters.pending = r.counters.pending.saturating_sub(1);
            }
        }
        {
            let mut r = self.reb.lock();
            if r.epoch != epoch {
                return;
            }
            r.self_done = true;
            r.done.insert(self.me);
            self.note_complete(&r);
        }
        let c = self.reb.lock().counters;
        tracing::info!(
            epoch,
            pushed = c.pushed,
            pushed_bytes = c.pushed_bytes,
            dropped = c.dropped,
            elapsed_ms = started.elapsed().as_millis(),
            "rebalance walk done"
        );
        self.announce_done(&view);
    }

    /// Tells every other member that this host finished rebalancing `view.epoch`.
    fn announce_done(&self, view: &View) {
        let mut left: Vec<NodeId> = view
            .placement
            .members()
            .iter()
            .copied()
            .filter(|m| *m != self.me)
            .collect();
        let mut attempt = 0u32;
        while !left.is_empty() {
            if self.superseded(view.epoch) {
                return;
            }
            let mut req = self.header(Op::RebalanceDone, Oid(0), view.epoch);
            req.a = view.epoch;
            let calls: Vec<(NodeId, std::result::Result<_, NetError>)> = left
                .iter()
                .map(|m| {
                    let addrs = view.addrs.get(m).map(Vec::as_slice).unwrap_or(&[]);
                    (*m, self.pool.send(addrs, &req, &[], false))
                })
                .collect();
            left.clear();
            for (m, c) in calls {
                let ok = c
                    .and_then(|c| c.recv(&self.pool, None))
                    .is_ok_and(|r| r.header.status == Status::Ok);
                if !ok {
                    left.push(m);
                }
            }
            if !left.is_empty() {
                self.backoff(attempt, view.epoch, Instant::now() + Duration::from_secs(1));
                attempt = attempt.saturating_add(1);
            }
        }
    }

    /// Asks every other member what its copy of each object of `batch` is (one `Have` list
    /// per member). `None` if the epoch changed meanwhile.
    fn probe_batch(&self, view: &View, batch: &[Oid]) -> Option<Vec<Vec<(NodeId, CopyInfo)>>> {
        let mut out: Vec<Vec<(NodeId, CopyInfo)>> = vec![Vec::new(); batch.len()];
        let body = encode_u64s(batch.iter().map(|o| o.0));
        let others: Vec<NodeId> = view
            .placement
            .members()
            .iter()
            .copied()
            .filter(|m| *m != self.me)
            .collect();
        for node in others {
            let req = self.header(Op::Have, Oid(0), view.epoch);
            let mut attempt = 0u32;
            let have = loop {
                if self.superseded(view.epoch) {
                    return None;
                }
                let addrs = view.addrs.get(&node).map(Vec::as_slice).unwrap_or(&[]);
                match self.pool.call(addrs, &req, &body, None) {
                    Ok(r)
                        if r.header.status == Status::Ok
                            && r.body.len() == batch.len() * HAVE_ENTRY =>
                    {
                        break r.body
                    }
                    Ok(r) => {
                        tracing::debug!(to = %node, status = ?r.header.status, "rebalance probe refused")
                    }
                    Err(e) => tracing::debug!(to = %node, error = %e, "rebalance probe failed"),
                }
                self.backoff(attempt, view.epoch, Instant::now() + Duration::from_secs(1));
                attempt = attempt.saturating_add(1);
            };
            for (i, e) in have.chunks_exact(HAVE_ENTRY).enumerate() {
                out[i].push((node, CopyInfo::decode(u64::from(e[0]), &e[1..])));
            }
        }
        Some(out)
    }

    /// Recovers one local object: makes or drops a stale or unverified local copy, pushes it
    /// to the holders that lack it (or hold an older or unverified copy) and drops the local
    /// copy once every holder has it, if this host no longer holds it. Returns false if the
    /// epoch changed (walk abandoned).
    fn rebalance_one(&self, view: &View, oid: Oid, infos: &[(NodeId, CopyInfo)]) -> bool {
        let mine = match self.copy_info(oid) {
            Ok(i) if i.state == CopyState::Absent => return true,
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(%oid, error = %e, "rebalance: cannot look at a local copy");
                return true;
            }
        };
        let holders = self.holders(view, oid);
        let i_hold = holders.contains(&self.me);
        let unverified = mine.state == CopyState::Unverified;
        let current = match freshest(infos, Some(mine.meta)) {
            None => true,
            Some((_, b)) if unverified => b == mine.meta,
            Some((_, b)) => b.version <= mine.meta.version,
        };
        if !current {
            let _g = self.locks.lock(oid);
            if self.reb.lock().settled.contains(&oid) {
                return true; // made current meanwhile (a write or a fetch of this epoch)
            }
            if i_hold {
                match self.fetch_replace(view, oid, infos, Some(mine.meta), true) {
                    Ok(fetched) => {
                        self.mark_verified(oid);
                        self.settle(view.epoch, oid);
                        self.count_fetched(&fetched);
                    }
                    Err(SErr::Epoch(_)) => return false,
                    Err(e) => {
                        // Left for the on-demand path (the copy stays unverified or stale
                        // copies are still compared there while rebalancing).
                        tracing::debug!(%oid, error = %self.serr_text(e), "rebalance: cannot refresh a stale copy");
                    }
                }
            } else {
                match self.fenced(view.epoch, || self.local.remove(oid)) {
                    Ok(()) => {
                        self.mark_verified(oid);
                        self.reb.lock().counters.dropped += 1;
                    }
                    Err(SErr::Epoch(_)) => return false,
                    Err(_) => {}
                }
            }
            return true;
        }
        if unverified {
            self.count_kept(oid);
            self.mark_verified(oid);
        }
        let mut image: Option<(Buf, ObjectMeta)> = None;
        let mut all_confirmed = true;
        for &t in holders.iter().filter(|h| **h != self.me) {
            let info = infos
                .iter()
                .find(|(n, _)| *n == t)
                .map_or(CopyInfo::ABSENT, |(_, i)| *i);
            if (info.good() && info.meta.version >= mine.meta.version)
                || (info.state == CopyState::Unverified && info.meta == mine.meta)
            {
                // Current, or an unverified copy that will find itself current.
                continue;
            }
            // A holder with a copy of its own (older, or unverified and different) makes it
            // current itself, copying only the blocks that differ; one without gets it whole.
            let refresh = info.state != CopyState::Absent;
            let mut attempt = 0u32;
            loop {
                if self.superseded(view.epoch) {
                    return false;
                }
                let push = if refresh {
                    self.refresh_on(view, t, oid)
                } else {
                    self.push_to(view, t, oid, &mut image)
                };
                match push {
                    Push::Confirmed => break,
                    // Removed here meanwhile: a removal reached the holders, nothing to move.
                    Push::Gone => return true,
                    Push::Full => {
                        self.reb.lock().counters.skipped_full += 1;
                        all_confirmed = false;
                        break;
                    }
                    Push::Retry(msg) => {
                        tracing::debug!(%oid, to = %t, reason = %msg, "rebalance push retry");
                        self.backoff(attempt, view.epoch, Instant::now() + Duration::from_secs(1));
                        attempt = attempt.saturating_add(1);
                    }
                }
            }
        }
        if !i_hold && all_confirmed {
            let _g = self.locks.lock(oid);
            let res = self.fenced(view.epoch, || {
                let bytes = self.local.allocated(oid)?;
                self.local.remove(oid)?;
                Ok(bytes)
            });
            match res {
                Ok(bytes) => {
                    let mut r = self.reb.lock();
                    r.counters.dropped += 1;
                    r.counters.dropped_bytes += bytes;
                }
                Err(SErr::Epoch(_)) => return false,
                Err(SErr::Store(e)) => {
                    tracing::warn!(%oid, error = %e, "rebalance: cannot drop a moved copy");
                }
                Err(_) => {}
            }
        }
        true
    }

    /// Asks `to`, which holds a copy of `oid` older than this host's or unverified, to make
    /// it current itself (the request that makes a holder do so before it answers, flagged
    /// as background work: the holder throttles what it copies). The holder patches its copy
    /// with the blocks that differ from the freshest good copy, rather than this host sending
    /// it the whole object.
    fn refresh_on(&self, view: &View, to: NodeId, oid: Oid) -> Push {
        let Some(addrs) = view.addrs.get(&to) else {
            return Push::Retry("no address".into());
        };
        let mut req = self.header(Op::Exists, oid, view.epoch);
        req.flags = FLAG_BACKGROUND;
        match self.pool.call(addrs, &req, &[], None) {
            Ok(r) if r.header.status == Status::Ok => Push::Confirmed,
            Ok(r) => Push::refused(&r),
            Err(e) => Push::Retry(e.to_string()),
        }
    }

    /// Stores `oid` on `to` unless it has it at this version or newer (the image and its
    /// version are read once, lazily).
    fn push_to(
        &self,
        view: &View,
        to: NodeId,
        oid: Oid,
        image: &mut Option<(Buf, ObjectMeta)>,
    ) -> Push {
        let Some(addrs) = view.addrs.get(&to) else {
            return Push::Retry("no address".into());
        };
        if image.is_none() {
            // The buffer before the lock: holders of the budget may wait for the lock.
            let mut body = self.cfg.budget.vec(MAX_BODY);
            let _g = self.locks.lock(oid);
            if self.is_unverified(oid) {
                return Push::Gone;
            }
            let version = match self.local.meta(oid) {
                Ok(m) => m,
                Err(Error::NotFound(_)) => return Push::Gone,
                Err(e) => return Push::Retry(e.to_string()),
            };
            match self.read_image_into(oid, body.vec_mut()) {
                Ok(()) => *image = Some((body, version)),
                Err(Error::NotFound(_)) => return Push::Gone,
                Err(e @ (Error::CorruptObject(_) | Error::Io { .. })) => {
                    // A bad copy is never pushed; the other holders push theirs.
                    drop(_g);
                    tracing::warn!(%oid, error = %e, "rebalance: local copy is bad, not pushed");
                    self.note_store_error();
                    self.spawn_repair(oid);
                    return Push::Gone;
                }
                Err(e) => return Push::Retry(e.to_string()),
            }
        }
        let Some((body, version)) = image.as_ref() else {
            return Push::Gone;
        };
        let data_len = decode_image(body).map_or(0, |(_, data)| data.len());
        if !self.throttle(data_len, view.epoch) {
            return Push::Retry("epoch changed".into());
        }
        let mut req = self.header(Op::Put, oid, view.epoch);
        req.a = version.digest;
        req.b = version.version;
        match self.pool.call(addrs, &req, body, None) {
            Ok(r) if r.header.status == Status::Ok => {
                if r.header.value == 1 {
                    let mut rb = self.reb.lock();
                    rb.counters.pushed += 1;
                    rb.counters.pushed_bytes += data_len as u64;
                }
                Push::Confirmed
            }
            Ok(r) => Push::refused(&r),
            Err(e) => Push::Retry(e.to_string()),
        }
    }
}

enum Push {
    /// The target has the object at this version or newer (or made its copy current).
    Confirmed,
    Gone,
    /// The target is near full and takes no new copies.
    Full,
    Retry(String),
}

impl Push {
    /// What a push or refresh answered with another status than `Ok` means.
    fn refused(r: &Response) -> Push {
        if r.header.status == Status::NoSpace {
            Push::Full
        } else {
            Push::Retry(format!(
                "{:?}: {}",
                r.header.status,
                String::from_utf8_lossy(&r.body)
            ))
        }
    }
}

impl Handler for ReplicatedStore {
    fn handle(&self, req: &ReqHeader, body: &[u8], out: &mut Vec<u8>) -> Reply {
        self.handle_req(req, body, out)
    }
}

impl ObjectStore for ReplicatedStore {
    fn read(&self, oid: Oid, offset: u64, buf: &mut [u8]) -> Result<()> {
        if !is_data(oid) {
            return self.local.read(oid, offset, buf);
        }
        self.enter(oid, offset, buf.len() as u64)?;
        self.try_holders(oid, |view, h| {
            if h == self.me {
                return match self.serve_read(view.epoch, oid, offset, buf) {
                    Ok(()) => Outcome::Ok(0, Buf::empty()),
                    Err(e) => {
                        let mut out = Vec::new();
                        let reply = self.serve_reply_of(e, &mut out);
                        self.outcome(oid, view.epoch, reply, Buf::from(out))
                    }
                };
            }
            let Some(addrs) = view.addrs.get(&h) else {
                return Outcome::Transient("no address".into());
            };
            let mut req = self.header(Op::Read, oid, view.epoch);
            req.a = offset;
            req.b = buf.len() as u64;
            let r = self.pool.call(addrs, &req, &[], Some(&mut *buf));
            match self.net_outcome(oid, view.epoch, r) {
                Outcome::Ok(_, body) if !body.is_empty() => {
                    Outcome::Transient("read answer of the wrong length".into())
                }
                o => o,
            }
        })
        .map(|_| ())
    }

    fn write(&self, oid: Oid, offset: u64, data: &[u8]) -> Result<()> {
        self.write_flagged(oid, offset, data, 0)
    }

    fn write_existing(&self, oid: Oid, offset: u64, data: &[u8]) -> Result<()> {
        self.write_flagged(oid, offset, data, FLAG_EXISTING)
    }

    fn copy(&self, src: Oid, dst: Oid) -> Result<()> {
        match (is_data(src), is_data(dst)) {
            (false, false) => self.local.copy(src, dst),
            (true, true) => {
                self.wait_quorum(dst)?;
                let mut req = self.header(Op::Copy, dst, 0);
                req.a = src.0;
                self.fan_out(dst, self.single(dst, req))
            }
            _ => Err(Error::Io {
                oid: dst,
                source: io::Error::new(
                    io::ErrorKind::Unsupported,
                    "copy between a data object and another kind",
                ),
            }),
        }
    }

    fn punch(&self, oid: Oid, offset: u64, len: u64) -> Result<()> {
        if !is_data(oid) {
            return self.local.punch(oid, offset, len);
        }
        self.enter(oid, offset, len)?;
        let mut req = self.header(Op::Punch, oid, 0);
        req.a = offset;
        req.b = len;
        self.fan_out(oid, self.single(oid, req))
    }

    fn remove(&self, oid: Oid) -> Result<()> {
        if !is_data(oid) {
            return self.local.remove(oid);
        }
        self.wait_quorum(oid)?;
        let req = self.header(Op::Remove, oid, 0);
        self.fan_out(oid, self.single(oid, req))
    }

    fn exists(&self, oid: Oid) -> Result<bool> {
        if !is_data(oid) {
            return self.local.exists(oid);
        }
        self.wait_quorum(oid)?;
        Ok(self.ask(Op::Exists, oid)?.0 != 0)
    }

    /// This host's objects: its local non-data objects and the data objects it holds. The
    /// union over the members is the cluster's content.
    fn list(&self) -> Result<Vec<Oid>> {
        let view = self.current_view();
        Ok(self
            .local
            .list()?
            .into_iter()
            .filter(|o| !is_data(*o) || self.holders(&view, *o).contains(&self.me))
            .collect())
    }

    fn extents(&self, oid: Oid) -> Result<Vec<Range<u64>>> {
        if !is_data(oid) {
            return self.local.extents(oid);
        }
        self.wait_quorum(oid)?;
        let (_, body) = self.ask(Op::Extents, oid)?;
        decode_extents(&body).map_err(|e| eio(oid, format!("extents from a holder: {e}")))
    }

    fn allocated(&self, oid: Oid) -> Result<u64> {
        if !is_data(oid) {
            return self.local.allocated(oid);
        }
        self.wait_quorum(oid)?;
        Ok(self.ask(Op::Allocated, oid)?.0)
    }

    fn sync(&self, oids: &[Oid]) -> Result<()> {
        let (data, other): (Vec<Oid>, Vec<Oid>) = oids.iter().partition(|o| is_data(**o));
        if !other.is_empty() {
            self.local.sync(&other)?;
        }
        if data.is_empty() {
            return Ok(());
        }
        self.wait_quorum(data[0])?;
        let req = self.header(Op::Sync, Oid(0), 0);
        self.fan_out(data[0], |view| {
            let mut groups: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
            for &o in &data {
                for h in self.holders(view, o) {
                    groups.entry(h).or_default().push(o.0);
                }
            }
            groups
                .into_iter()
                .map(|(n, list)| (n, req, Cow::Owned(encode_u64s(list))))
                .collect()
        })
    }

    fn put_atomic(&self, oid: Oid, data: &[u8]) -> Result<()> {
        if is_data(oid) {
            return Err(Error::Io {
                oid,
                source: io::Error::new(
                    io::ErrorKind::Unsupported,
                    "put_atomic of a replicated data object",
                ),
            });
        }
        self.local.put_atomic(oid, data)
    }

    fn get(&self, oid: Oid) -> Result<Vec<u8>> {
        if is_data(oid) {
            return Err(Error::Io {
                oid,
                source: io::Error::new(
                    io::ErrorKind::Unsupported,
                    "get of a replicated data object",
                ),
            });
        }
        self.local.get(oid)
    }

    fn stats(&self) -> Result<StoreStats> {
        self.local.stats()
    }

    fn meta(&self, oid: Oid) -> Result<ObjectMeta> {
        if !is_data(oid) {
            return self.local.meta(oid);
        }
        self.wait_quorum(oid)?;
        let (state, body) = self.ask(Op::Have, oid)?;
        let info = CopyInfo::decode(state, &body);
        match info.state {
            CopyState::Absent => Err(Error::NotFound(oid)),
            _ => Ok(info.meta),
        }
    }

    fn set_version(&self, oid: Oid, version: u64) -> Result<()> {
        if !is_data(oid) {
            return self.local.set_version(oid, version);
        }
        Err(Error::Io {
            oid,
            source: io::Error::new(
                io::ErrorKind::Unsupported,
                "the version of a replicated data object is its epoch",
            ),
        })
    }

    fn verify(&self, oid: Oid) -> Result<()> {
        if !is_data(oid) {
            return self.local.verify(oid);
        }
        let rep = self.check_object(oid, false)?;
        if rep.copies == 0 || rep.good == rep.copies {
            Ok(())
        } else {
            Err(Error::CorruptObject(oid))
        }
    }
}

impl ReplicatedStore {
    fn write_flagged(&self, oid: Oid, offset: u64, data: &[u8], flags: u8) -> Result<()> {
        if !is_data(oid) {
            return self.local.write(oid, offset, data);
        }
        self.enter(oid, offset, data.len() as u64)?;
        let mut req = self.header(Op::Write, oid, 0);
        req.a = offset;
        req.flags = flags;
        self.fan_out(oid, |view| {
            self.holders(view, oid)
                .into_iter()
                .map(|n| (n, req, Cow::Borrowed(data)))
                .collect()
        })
    }

    fn serve_reply_of(&self, e: SErr, out: &mut Vec<u8>) -> Reply {
        let epoch = self.epoch();
        let (status, msg) = match e {
            SErr::Epoch(ep) => {
                return Reply {
                    status: Status::WrongEpoch,
                    epoch: ep,
                    value: 0,
                }
            }
            SErr::Retry(m) => (Status::Retry, m),
            SErr::Bad(m) => (Status::BadRequest, m.to_string()),
            SErr::Store(Error::NotFound(_)) => (Status::NotFound, String::new()),
            SErr::Store(Error::NoSpace) => (Status::NoSpace, String::new()),
            SErr::Store(Error::OutOfRange { .. }) => (Status::OutOfRange, String::new()),
            SErr::Store(Error::CorruptObject(_)) => (Status::Corrupt, String::new()),
            SErr::Store(e @ Error::Unavailable { .. }) => (Status::Retry, e.to_string()),
            SErr::Store(e) => (Status::Io, e.to_string()),
        };
        out.clear();
        out.extend_from_slice(msg.as_bytes());
        Reply {
            status,
            epoch,
            value: 0,
        }
    }
}
