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
//! * **Rebalancing** after a new map: every host walks its local data objects, pushes each to
//!   the new holders that lack it (`PutIfAbsent`, data extents only), drops its own copy once
//!   every new holder has confirmed if it no longer holds the object, then tells every member
//!   `RebalanceDone`. Until every member has done so, a holder asked for an object it lacks
//!   first asks the others (`Have`) and fetches it (`Fetch`). Per-object locks keep pushes,
//!   fetches and writes to one object from interleaving, and a host remembers which objects it
//!   has made current in this epoch ("settled"), so a late push never resurrects an object
//!   removed or overwritten meanwhile.

use crate::error::{Error, Result};
use crate::net::client::{NetError, Pool, Response};
use crate::net::proto::{
    decode_extents, decode_image, decode_u64s, encode_u64s, in_object, Image, Op, ReqHeader,
    Status, FLAG_AS_HOLDER, MAX_EXTENTS,
};
use crate::net::server::{Handler, Reply, Server};
use crate::oid::{ObjectKind, Oid, Vid, OBJECT_BYTES};
use crate::placement::{mix64, Placement};
use crate::store::{ObjectStore, StoreStats};
use parking_lot::{Condvar, Mutex, RwLock};
use sheep_p2p::NodeId;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

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
    /// The epoch (number of membership changes so far).
    pub epoch: u64,
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
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            io_timeout: Duration::from_secs(30),
        }
    }
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
    pushed: u64,
    pushed_bytes: u64,
    pulled: u64,
    pulled_bytes: u64,
    dropped: u64,
    dropped_bytes: u64,
}

/// The map in use and what is derived from it.
struct View {
    epoch: u64,
    placement: Placement,
    addrs: HashMap<NodeId, Vec<SocketAddr>>,
    /// Placement of the previous map, if there was one.
    prev: Option<Placement>,
    /// False for the bootstrap view (this host alone) used before the first map.
    from_map: bool,
}

/// Rebalancing state of the current epoch.
#[derive(Default)]
struct Rebal {
    epoch: u64,
    members: Vec<NodeId>,
    done: HashSet<NodeId>,
    /// `RebalanceDone` notices for epochs this host has not reached yet.
    early: BTreeMap<u64, HashSet<NodeId>>,
    /// Objects whose local state is current for this epoch (fetched, pushed in, written or
    /// removed here): neither fetched again nor overwritten by a push.
    settled: HashSet<Oid>,
    self_done: bool,
    /// Set by `discard_local_data`: fetch on demand until the next epoch.
    forced_incomplete: bool,
    counters: Counters,
}

impl Rebal {
    fn complete(&self) -> bool {
        !self.forced_incomplete && self.members.iter().all(|m| self.done.contains(m))
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
    Ok(u64, Vec<u8>),
    /// Final: the operation failed.
    Fail(Error),
    /// The holder is at a later epoch.
    Ahead(u64),
    /// Retry later (unreachable, behind, busy).
    Transient(String),
}

/// Objects probed with one `Have` list per holder during the rebalance walk.
const WALK_BATCH: usize = 1024;

/// A request of a fan-out: the target, the header (its epoch is filled per attempt), the body.
type Planned<'a> = (NodeId, ReqHeader, Cow<'a, [u8]>);

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
}

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
            prev: None,
            from_map: false,
        };
        let reb = Rebal {
            epoch: 0,
            members: vec![me],
            done: HashSet::from([me]),
            self_done: true,
            ..Rebal::default()
        };
        Arc::new_cyclic(|this| ReplicatedStore {
            me,
            local,
            copies,
            pool: Pool::new(cfg.io_timeout),
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
        })
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
        let server = Server::spawn(listener, self.clone())?;
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
                prev: v.from_map.then(|| v.placement.clone()),
                from_map: true,
            };
            r.epoch = epoch;
            r.members = new.placement.members().to_vec();
            r.done = r.early.remove(&epoch).unwrap_or_default();
            r.early.retain(|e, _| *e > epoch);
            r.settled.clear();
            r.self_done = false;
            r.forced_incomplete = false;
            r.counters = Counters::default();
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
            epoch: r.epoch,
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

    /// Removes every local data object, so copies that may be stale (a host rejoining a live
    /// cluster after being away) are never served; the other hosts' rebalance pushes repopulate
    /// this one, and until the next epoch this host fetches objects it lacks on demand.
    pub fn discard_local_data(&self) {
        let oids = match self.local.list() {
            Ok(l) => l.into_iter().filter(|o| is_data(*o)).collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(error = %e, "discard: cannot list the local store");
                Vec::new()
            }
        };
        {
            let mut r = self.reb.lock();
            r.forced_incomplete = true;
            r.settled.clear();
        }
        for &oid in &oids {
            let _g = self.locks.lock(oid);
            if let Err(e) = self.local.remove(oid) {
                tracing::warn!(%oid, error = %e, "discard: cannot remove a local copy");
            }
        }
        if let Err(e) = self.local.sync(&oids) {
            tracing::warn!(error = %e, "discard: sync failed");
        }
        tracing::info!(objects = oids.len(), "discarded local data copies");
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
            Err(eio(
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

    fn outcome(&self, oid: Oid, sent_epoch: u64, reply: Reply, body: Vec<u8>) -> Outcome {
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
            Status::Corrupt => Outcome::Fail(Error::CorruptObject(oid)),
            Status::Io => Outcome::Fail(eio(oid, format!("on a holder: {}", msg()))),
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
        let deadline = Instant::now() + self.cfg.io_timeout;
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
                    outcomes.push(self.outcome(req.oid, view.epoch, reply, out));
                }
            }
            for (req_oid, c) in calls {
                let r = c.recv(&self.pool, None);
                outcomes.push(self.net_outcome(req_oid, view.epoch, r));
            }
            let mut hard = None;
            let mut ahead = None;
            let mut transient = None;
            for o in outcomes {
                match o {
                    Outcome::Ok(..) => {}
                    Outcome::Fail(e) => {
                        hard.get_or_insert(e);
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
            let Some(msg) = transient else {
                return Ok(());
            };
            if Instant::now() >= deadline || self.stopped.load(Ordering::SeqCst) {
                return Err(eio(oid, format!("a holder is unavailable: {msg}")));
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
    ) -> Result<(u64, Vec<u8>)> {
        let deadline = Instant::now() + self.cfg.io_timeout;
        let mut attempt = 0u32;
        loop {
            let view = self.current_view();
            let mut hs = self.holders(&view, oid);
            if let Some(i) = hs.iter().position(|h| *h == self.me) {
                hs.swap(0, i);
            }
            let mut ahead = None;
            let mut last = String::from("no holder");
            for h in hs {
                match one(&view, h) {
                    Outcome::Ok(v, b) => return Ok((v, b)),
                    Outcome::Fail(e) => return Err(e),
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
            if Instant::now() >= deadline || self.stopped.load(Ordering::SeqCst) {
                return Err(eio(oid, format!("no holder answered: {last}")));
            }
            self.backoff(attempt, view.epoch, deadline);
            attempt += 1;
        }
    }

    /// A small query (exists, extents, allocated) answered by one holder.
    fn ask(&self, op: Op, oid: Oid) -> Result<(u64, Vec<u8>)> {
        self.try_holders(oid, |view, h| {
            let req = self.header(op, oid, view.epoch);
            if h == self.me {
                let mut out = Vec::new();
                let reply = self.handle_req(&req, &[], &mut out);
                return self.outcome(oid, view.epoch, reply, out);
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

    /// True while objects may still be missing here (rebalancing of `epoch` incomplete).
    fn unsettled(&self, epoch: u64) -> bool {
        let r = self.reb.lock();
        r.epoch == epoch && !r.complete()
    }

    fn settle(&self, epoch: u64, oid: Oid) {
        let mut r = self.reb.lock();
        if r.epoch == epoch && !r.complete() {
            r.settled.insert(oid);
        }
    }

    fn lock_if_unsettled(&self, epoch: u64, oid: Oid) -> Option<OidGuard<'_>> {
        self.unsettled(epoch).then(|| self.locks.lock(oid))
    }

    /// Makes the local copy of `oid` current before serving it: while rebalancing is
    /// incomplete, an object missing here is fetched from a member that has it. The caller
    /// holds the object's lock.
    fn ensure_local(&self, view: &View, oid: Oid) -> Result<(), SErr> {
        {
            let r = self.reb.lock();
            if r.epoch != view.epoch || r.complete() || r.settled.contains(&oid) {
                return Ok(());
            }
        }
        if self.local.exists(oid)? {
            self.settle(view.epoch, oid);
            return Ok(());
        }
        // Ask the previous holders first, then everyone else.
        let copies = self.copies_of(oid);
        let mut order: Vec<NodeId> = view
            .prev
            .as_ref()
            .map(|p| p.holders(oid, copies))
            .unwrap_or_default();
        for m in view.placement.members() {
            if !order.contains(m) {
                order.push(*m);
            }
        }
        order.retain(|m| *m != self.me && view.placement.contains(m));
        for m in order {
            let Some(addrs) = view.addrs.get(&m) else {
                return Err(SErr::Retry(format!("member {m} has no address")));
            };
            let have = self
                .pool
                .call(addrs, &self.header(Op::Have, oid, view.epoch), &[], None)
                .map_err(|e| SErr::Retry(format!("probing member {m}: {e}")))?;
            if have.header.status != Status::Ok {
                return Err(SErr::Retry(format!(
                    "probing member {m}: {:?} at epoch {}",
                    have.header.status, have.header.epoch
                )));
            }
            if have.header.value == 0 {
                continue;
            }
            let got = self
                .pool
                .call(addrs, &self.header(Op::Fetch, oid, view.epoch), &[], None)
                .map_err(|e| SErr::Retry(format!("fetching from member {m}: {e}")))?;
            if got.header.status != Status::Ok {
                return Err(SErr::Retry(format!(
                    "fetching from member {m}: {:?}",
                    got.header.status
                )));
            }
            let (extents, data) =
                decode_image(&got.body).map_err(|e| SErr::Retry(format!("member {m}: {e}")))?;
            self.fenced(view.epoch, || {
                if !self.local.exists(oid)? {
                    self.write_image(oid, &extents, data)?;
                }
                Ok(())
            })?;
            self.settle(view.epoch, oid);
            let mut r = self.reb.lock();
            r.counters.pulled += 1;
            r.counters.pulled_bytes += data.len() as u64;
            tracing::debug!(%oid, from = %m, "fetched an object on demand");
            return Ok(());
        }
        // Nobody has it: it does not exist yet.
        self.settle(view.epoch, oid);
        Ok(())
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

    /// Reads the local copy's data extents (coalesced if there are too many to send).
    fn read_image(&self, oid: Oid) -> Result<Image> {
        if !self.local.exists(oid)? {
            return Err(Error::NotFound(oid));
        }
        let mut extents = self.local.extents(oid)?;
        if extents.len() > MAX_EXTENTS {
            let (s, e) = (extents[0].start, extents[extents.len() - 1].end);
            extents.clear();
            extents.push(s..e);
        }
        let total: u64 = extents.iter().map(|r| r.end - r.start).sum();
        let total = usize::try_from(total).map_err(|_| Error::CorruptObject(oid))?;
        if total > OBJECT_BYTES {
            return Err(Error::CorruptObject(oid));
        }
        let mut data = vec![0u8; total];
        let mut at = 0usize;
        for r in &extents {
            let len = usize::try_from(r.end - r.start).map_err(|_| Error::CorruptObject(oid))?;
            self.local.read(oid, r.start, &mut data[at..at + len])?;
            at += len;
        }
        Ok(Image { extents, data })
    }

    fn serve_read(&self, epoch: u64, oid: Oid, offset: u64, buf: &mut [u8]) -> Result<(), SErr> {
        let view = self.view_at(epoch)?;
        let _g = self.lock_if_unsettled(epoch, oid);
        self.ensure_local(&view, oid)?;
        self.fenced(epoch, || self.local.read(oid, offset, buf))
    }

    /// A local change: lock, make current, apply under the fence, mark settled.
    fn serve_change<T>(
        &self,
        view: &View,
        oid: Oid,
        ensure: bool,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T, SErr> {
        let _g = self.lock_if_unsettled(view.epoch, oid);
        if ensure {
            self.ensure_local(view, oid)?;
        }
        let r = self.fenced(view.epoch, f)?;
        self.settle(view.epoch, oid);
        Ok(r)
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
            self.serve_change(view, dst, false, || self.local.copy(src, dst))?;
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
                        self.local.remove(dst)?;
                        self.write_image(dst, &extents, data)
                    })?;
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
                self.serve_change(&view, oid, true, || self.local.write(oid, req.a, body))?;
                Ok(0)
            }
            Op::Copy => self.serve_copy(&view, Oid(req.a), oid),
            Op::Punch => {
                range(req.a, req.b)?;
                self.serve_change(&view, oid, true, || self.local.punch(oid, req.a, req.b))?;
                Ok(0)
            }
            Op::Remove => {
                self.serve_change(&view, oid, false, || self.local.remove(oid))?;
                Ok(0)
            }
            Op::Exists | Op::Extents | Op::Allocated => {
                let _g = self.lock_if_unsettled(view.epoch, oid);
                self.ensure_local(&view, oid)?;
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
                self.local.sync(&oids)?;
                Ok(0)
            }
            Op::PutIfAbsent => {
                let (extents, data) = decode_image(body).map_err(|_| SErr::Bad("object image"))?;
                let _g = self.locks.lock(oid);
                let created = self.fenced(view.epoch, || {
                    let settled = self.reb.lock().settled.contains(&oid);
                    if settled || self.local.exists(oid)? {
                        return Ok(false);
                    }
                    self.write_image(oid, &extents, data)?;
                    self.local.sync(&[oid])?;
                    Ok(true)
                })?;
                self.settle(view.epoch, oid);
                Ok(u64::from(created))
            }
            Op::Have if body.is_empty() => Ok(u64::from(self.local.exists(oid)?)),
            Op::Have => {
                // A batch: one byte per listed object.
                let oids = decode_u64s(body).map_err(|_| SErr::Bad("have list"))?;
                out.clear();
                for o in oids {
                    out.push(u8::from(self.local.exists(Oid(o))?));
                }
                Ok(0)
            }
            Op::Fetch => {
                let _g = self.locks.lock(oid);
                if req.flags & FLAG_AS_HOLDER != 0 {
                    self.ensure_local(&view, oid)?;
                }
                let img = self.read_image(oid)?;
                *out = img.encode().ok_or(SErr::Store(Error::CorruptObject(oid)))?;
                Ok(0)
            }
            Op::RebalanceDone => Ok(0),
        }
    }

    fn note_done(&self, from: NodeId, epoch: u64) {
        let mut r = self.reb.lock();
        if epoch == r.epoch {
            r.done.insert(from);
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
        let salt = crate::placement::vnode_hash(&self.me, u64::MAX);
        oids.sort_by_key(|o| mix64(o.0 ^ salt));
        self.reb.lock().counters.pending = oids.len() as u64;
        for batch in oids.chunks(WALK_BATCH) {
            let Some(missing) = self.probe_batch(&view, batch) else {
                return;
            };
            for (oid, lacking) in batch.iter().zip(missing) {
                if !self.rebalance_one(&view, *oid, &lacking) {
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

    /// Asks each new holder which objects of `batch` it lacks (one `Have` list per holder).
    /// Returns, per object, the new holders (other than this host) that lack it; `None` if
    /// the epoch changed meanwhile.
    fn probe_batch(&self, view: &View, batch: &[Oid]) -> Option<Vec<Vec<NodeId>>> {
        let mut per_node: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        for (i, oid) in batch.iter().enumerate() {
            for h in self.holders(view, *oid) {
                if h != self.me {
                    per_node.entry(h).or_default().push(i);
                }
            }
        }
        let mut missing: Vec<Vec<NodeId>> = vec![Vec::new(); batch.len()];
        for (node, idxs) in per_node {
            let body = encode_u64s(idxs.iter().map(|&i| batch[i].0));
            let mut req = self.header(Op::Have, Oid(0), view.epoch);
            req.flags = 0;
            let mut attempt = 0u32;
            let have = loop {
                if self.superseded(view.epoch) {
                    return None;
                }
                let addrs = view.addrs.get(&node).map(Vec::as_slice).unwrap_or(&[]);
                match self.pool.call(addrs, &req, &body, None) {
                    Ok(r) if r.header.status == Status::Ok && r.body.len() == idxs.len() => {
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
            for (&i, &h) in idxs.iter().zip(have.iter()) {
                if h == 0 {
                    missing[i].push(node);
                }
            }
        }
        Some(missing)
    }

    /// Pushes one local object to the new holders that lack it and drops the local copy if
    /// this host no longer holds it. Returns false if the epoch changed (walk abandoned).
    fn rebalance_one(&self, view: &View, oid: Oid, lacking: &[NodeId]) -> bool {
        let mut image: Option<Image> = None;
        for &t in lacking {
            let mut attempt = 0u32;
            loop {
                if self.superseded(view.epoch) {
                    return false;
                }
                match self.push_to(view, t, oid, &mut image) {
                    Push::Confirmed => break,
                    // Removed here meanwhile: a removal reached the holders, nothing to move.
                    Push::Gone => return true,
                    Push::Retry(msg) => {
                        tracing::debug!(%oid, to = %t, reason = %msg, "rebalance push retry");
                        self.backoff(attempt, view.epoch, Instant::now() + Duration::from_secs(1));
                        attempt = attempt.saturating_add(1);
                    }
                }
            }
        }
        if !self.holders(view, oid).contains(&self.me) {
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

    /// Creates `oid` on `to` unless it exists there (the image is read once, lazily).
    fn push_to(&self, view: &View, to: NodeId, oid: Oid, image: &mut Option<Image>) -> Push {
        let Some(addrs) = view.addrs.get(&to) else {
            return Push::Retry("no address".into());
        };
        if image.is_none() {
            let _g = self.locks.lock(oid);
            match self.read_image(oid) {
                Ok(img) => *image = Some(img),
                Err(Error::NotFound(_)) => return Push::Gone,
                Err(e) => return Push::Retry(e.to_string()),
            }
        }
        let Some(img) = image.as_ref() else {
            return Push::Gone;
        };
        let Some(body) = img.encode() else {
            tracing::warn!(%oid, "rebalance: object image too large to send");
            return Push::Gone;
        };
        match self.pool.call(
            addrs,
            &self.header(Op::PutIfAbsent, oid, view.epoch),
            &body,
            None,
        ) {
            Ok(r) if r.header.status == Status::Ok => {
                if r.header.value == 1 {
                    let mut rb = self.reb.lock();
                    rb.counters.pushed += 1;
                    rb.counters.pushed_bytes += img.data.len() as u64;
                }
                Push::Confirmed
            }
            Ok(r) => Push::Retry(format!(
                "{:?}: {}",
                r.header.status,
                String::from_utf8_lossy(&r.body)
            )),
            Err(e) => Push::Retry(e.to_string()),
        }
    }
}

enum Push {
    Confirmed,
    Gone,
    Retry(String),
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
        if !in_object(offset, buf.len() as u64) {
            return Err(Error::OutOfRange {
                oid,
                offset,
                len: buf.len() as u64,
            });
        }
        self.try_holders(oid, |view, h| {
            if h == self.me {
                return match self.serve_read(view.epoch, oid, offset, buf) {
                    Ok(()) => Outcome::Ok(0, Vec::new()),
                    Err(e) => {
                        let mut out = Vec::new();
                        let reply = self.serve_reply_of(e, &mut out);
                        self.outcome(oid, view.epoch, reply, out)
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
        if !is_data(oid) {
            return self.local.write(oid, offset, data);
        }
        if !in_object(offset, data.len() as u64) {
            return Err(Error::OutOfRange {
                oid,
                offset,
                len: data.len() as u64,
            });
        }
        let mut req = self.header(Op::Write, oid, 0);
        req.a = offset;
        self.fan_out(oid, |view| {
            self.holders(view, oid)
                .into_iter()
                .map(|n| (n, req, Cow::Borrowed(data)))
                .collect()
        })
    }

    fn copy(&self, src: Oid, dst: Oid) -> Result<()> {
        match (is_data(src), is_data(dst)) {
            (false, false) => self.local.copy(src, dst),
            (true, true) => {
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
        if !in_object(offset, len) {
            return Err(Error::OutOfRange { oid, offset, len });
        }
        let mut req = self.header(Op::Punch, oid, 0);
        req.a = offset;
        req.b = len;
        self.fan_out(oid, self.single(oid, req))
    }

    fn remove(&self, oid: Oid) -> Result<()> {
        if !is_data(oid) {
            return self.local.remove(oid);
        }
        let req = self.header(Op::Remove, oid, 0);
        self.fan_out(oid, self.single(oid, req))
    }

    fn exists(&self, oid: Oid) -> Result<bool> {
        if !is_data(oid) {
            return self.local.exists(oid);
        }
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
        let (_, body) = self.ask(Op::Extents, oid)?;
        decode_extents(&body).map_err(|e| eio(oid, format!("extents from a holder: {e}")))
    }

    fn allocated(&self, oid: Oid) -> Result<u64> {
        if !is_data(oid) {
            return self.local.allocated(oid);
        }
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
}

impl ReplicatedStore {
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
