//! This host's place in the cluster: the metadata log over `sheep-p2p`, the apply loop that
//! feeds the pool, and the membership map of the replicated object store (see
//! `docs/CLUSTER.md`).

use parking_lot::Mutex;
use sheep_objects::replicated::{ClusterMap, CopiesOf, Member, ReplicatedStore};
use sheep_objects::Vid;
use sheep_p2p::net::{Cluster, Delivery};
use sheep_p2p::order::{Body, Entry, MemberInfo};
use sheep_p2p::NodeId;
use sheep_vdi::{MetaLog, Pool};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tracing::{error, info, warn};

/// The pool's metadata log: the cluster's total order.
pub struct ClusterLog {
    cluster: Cluster,
    timeout: Duration,
}

impl ClusterLog {
    /// A log over `cluster`; a command that the cluster has not acknowledged within `timeout`
    /// (`--io-timeout`: a host cut off in a minority, a cluster that lost its quorum) fails,
    /// and the caller gets EIO.
    pub fn new(cluster: Cluster, timeout: Duration) -> ClusterLog {
        ClusterLog { cluster, timeout }
    }
}

impl MetaLog for ClusterLog {
    fn submit(&self, _pool: &Pool, bytes: Vec<u8>) -> sheep_vdi::Result<()> {
        // Within the deadline of the file-system operation this thread serves, if any.
        let timeout = sheep_objects::deadline::within(self.timeout)
            .saturating_duration_since(std::time::Instant::now());
        if timeout.is_zero() {
            return Err(sheep_vdi::Error::Unavailable(
                "the I/O timeout passed before the command was proposed".into(),
            ));
        }
        self.cluster
            .propose(bytes, timeout)
            .map(|_| ())
            .map_err(|e| sheep_vdi::Error::Unavailable(e.to_string()))
    }
}

/// Copies of each VDI id, as the pool knows them (set once the pool exists).
#[derive(Default)]
pub struct PoolCopies {
    pool: OnceLock<Weak<Pool>>,
    default: u8,
}

impl PoolCopies {
    /// Copies default to `default` until [`PoolCopies::attach`].
    pub fn new(default: u8) -> PoolCopies {
        PoolCopies {
            pool: OnceLock::new(),
            default,
        }
    }

    /// Answers from `pool` from now on.
    pub fn attach(&self, pool: &Arc<Pool>) {
        let _ = self.pool.set(Arc::downgrade(pool));
    }
}

impl CopiesOf for PoolCopies {
    fn copies(&self, vid: Vid) -> u8 {
        match self.pool.get().and_then(Weak::upgrade) {
            Some(p) => p.copies_of(vid),
            None => self.default,
        }
    }
}

/// The members in log order, as the log's membership entries say.
pub struct Membership {
    me: MemberInfo,
    members: Vec<MemberInfo>,
    /// The cluster recorded this host as gone: its copies may be stale.
    absent: bool,
    /// Members whose store failed ([`sheep_vdi::cmd::Cmd::StoreOut`]): no copies on them.
    store_out: std::collections::BTreeSet<NodeId>,
}

impl Membership {
    /// Membership of host `me`.
    pub fn new(me: MemberInfo) -> Membership {
        Membership {
            me,
            members: Vec::new(),
            absent: false,
            store_out: std::collections::BTreeSet::new(),
        }
    }

    /// Applies a membership entry; returns the host that left or failed, if any.
    fn apply(&mut self, body: &Body, live: bool, store: &ReplicatedStore) -> Option<NodeId> {
        match body {
            Body::Join(info) => {
                self.members.retain(|m| m.id != info.id);
                self.members.push(info.clone());
                self.store_out.remove(&info.id);
                if live && info.id == self.me.id && self.absent {
                    info!("rejoined: unverified copies are compared with the cluster's, only what changed is copied");
                    self.absent = false;
                }
                None
            }
            Body::Leave(id) | Body::Fail(id) => {
                self.members.retain(|m| m.id != *id);
                self.store_out.remove(id);
                if live && *id == self.me.id && !self.absent {
                    // The cluster goes on without this host: from now on what it holds may
                    // be stale, so nothing of it is served or pushed before it is compared
                    // with the others' copies (incremental catch-up).
                    warn!("the cluster recorded this host as gone: its copies are now unverified");
                    store.suspect_local_data();
                    self.absent = true;
                }
                Some(*id)
            }
            Body::App { .. } => None,
        }
    }

    /// The data map after the entry at `seq`: its epoch is the entry's position, so every
    /// change of the data placement (membership, a failing store) gives a newer map on every
    /// host alike.
    fn map(&self, seq: u64, cluster_epoch: u64) -> ClusterMap {
        ClusterMap {
            epoch: seq,
            cluster_epoch,
            members: self
                .members
                .iter()
                .filter(|m| !self.store_out.contains(&m.id))
                .map(|m| Member {
                    id: m.id,
                    capacity: m.capacity,
                    data_addrs: m.data_addrs.clone(),
                })
                .collect(),
        }
    }
}

/// Applies one delivered entry to the pool and the store.
pub fn apply(
    entry: &Entry,
    live: bool,
    pool: &Pool,
    store: &ReplicatedStore,
    members: &Mutex<Membership>,
) {
    match &entry.body {
        Body::App { cmd, .. } => {
            if let Some(node) = pool.apply_entry(entry.seq, cmd) {
                let mut m = members.lock();
                if m.members.iter().any(|x| x.id == node) && m.store_out.insert(node) {
                    warn!(%node, seq = entry.seq, "a member's store is failing: its copies are rebuilt on the others");
                    store.set_map(m.map(entry.seq, entry.epoch));
                }
            }
        }
        body => {
            let gone = {
                let mut m = members.lock();
                let gone = m.apply(body, live, store);
                store.set_map(m.map(entry.seq, entry.epoch));
                gone
            };
            match (gone, body) {
                (Some(id), _) => pool.node_gone(id),
                (None, Body::Join(info)) => pool.node_joined(info.id),
                _ => {}
            }
            info!(seq = entry.seq, epoch = entry.epoch, "membership changed");
        }
    }
}

/// Runs the apply loop on its own thread until the driver stops.
pub fn spawn_apply_loop(
    rx: std::sync::mpsc::Receiver<Delivery>,
    cluster: Cluster,
    pool: Arc<Pool>,
    store: Arc<ReplicatedStore>,
    members: Arc<Mutex<Membership>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sheep-apply".into())
        .spawn(move || {
            for d in rx {
                match d {
                    Delivery::Entry(e) => {
                        apply(&e, true, &pool, &store, &members);
                        cluster.applied(e.seq);
                    }
                    Delivery::Reset => {
                        error!("the cluster's history differs from ours: starting over from it");
                        members.lock().members.clear();
                        pool.reset();
                        store.suspect_local_data();
                    }
                }
            }
            info!("apply loop ended");
        })
}
