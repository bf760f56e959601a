//! The node's answers to `dog`: [`sheep_admin::AdminService`] over the [`Pool`].
//!
//! Requests are translated to `Pool` calls and `sheep_vdi` errors to [`WireError`] here, in one
//! place. Changes made behind the kernel's back (a resize, a rollback, a delete) are pushed to
//! the mount through the FUSE [`Notifier`], so cached sizes, data and names do not linger.

use crate::config::MAX_COPIES;
use crate::memory::MemorySource;
use fuser::{INodeNo, Notifier};
use sheep_admin::{
    AdminService, CheckBatch, ClusterInfo, EpochInfo, ForceInfo, MemberSummary, NodeInfo,
    RebalanceInfo, RecoveryInfo, Reply, Request, VdiInfo, WaitingInfo, WireError,
};
use sheep_objects::Oid;
use sheep_p2p::order::{Status, Waiting};
use sheep_p2p::NodeId;
use sheep_vdi::{CreateOpts, Error, Ino, Pool, SetAttr, VdiAttr};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tracing::{debug, info, info_span, warn};

/// How long one `dog vdi check` / `dog cluster check` request checks objects before it
/// answers (dog then asks for the next ones and shows the progress).
const CHECK_SLICE: Duration = Duration::from_secs(1);

/// What the node says about itself.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// The node's id.
    pub node_id: NodeId,
    /// The store directory.
    pub store: PathBuf,
    /// The mount point.
    pub mount: PathBuf,
    /// The cluster name (`--cluster`).
    pub cluster: String,
}

/// The admin service of one node.
pub struct NodeService {
    pool: Arc<Pool>,
    node: NodeIdentity,
    notifier: OnceLock<Notifier>,
    cluster: OnceLock<Arc<ClusterInfoSource>>,
    memory: OnceLock<MemorySource>,
}

/// Where `dog cluster info` and `dog node list` get the cluster's state from.
#[derive(Clone)]
pub struct ClusterInfoSource {
    /// The cluster driver.
    pub cluster: sheep_p2p::net::Cluster,
    /// The replicated object store.
    pub store: Arc<sheep_objects::replicated::ReplicatedStore>,
    /// The pool.
    pub pool: Arc<Pool>,
}

impl ClusterInfoSource {
    fn info(&self, name: &str, copies: u8) -> ClusterInfo {
        let st = self.cluster.status();
        let rs = self.store.status();
        let members: Vec<MemberSummary> = st
            .view
            .as_ref()
            .map(|v| {
                v.members
                    .iter()
                    .map(|m| MemberSummary {
                        node_id: m.id.to_string(),
                        addr: m
                            .data_addrs
                            .first()
                            .map(|a| a.to_string())
                            .unwrap_or_default(),
                        capacity: m.capacity,
                        sequencer: v.sequencer == Some(m.id),
                        local: m.id == st.me.id,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let epochs = st
            .epoch_log
            .iter()
            .map(|v| EpochInfo {
                epoch: v.epoch,
                nodes: v.members.iter().map(|m| m.id.to_string()).collect(),
            })
            .collect();
        let rebalance = RebalanceInfo {
            epoch: rs.epoch,
            objects: rs.objects,
            pushed: rs.pushed,
            pushed_bytes: rs.pushed_bytes,
            pulled: rs.pulled,
            dropped: rs.dropped,
            complete: rs.complete,
        };
        let waiting = st.waiting.as_ref().map(waiting_info);
        let status = match &st.waiting {
            Some(w) => waiting_status(w),
            None => format!("{:?}", st.status).to_lowercase(),
        };
        ClusterInfo {
            name: name.to_owned(),
            status,
            epoch: st.waiting.as_ref().map_or(st.epoch, |w| w.epoch),
            nodes: members.iter().map(|m| m.node_id.clone()).collect(),
            default_copies: copies,
            redundancy: redundancy(copies, members.len().max(1)),
            members,
            epochs,
            rebalance,
            waiting,
        }
    }

    /// Whether this host is a member of the cluster (with or without a quorum).
    fn is_member(&self) -> bool {
        matches!(
            self.cluster.status().status,
            Status::Member | Status::NoQuorum
        )
    }
}

/// What a waiting host shows in `dog cluster info`.
fn waiting_info(w: &Waiting) -> WaitingInfo {
    WaitingInfo {
        epoch: w.epoch,
        members: w.members.iter().map(ToString::to_string).collect(),
        missing: w.missing.iter().map(ToString::to_string).collect(),
        forced: w.forced,
    }
}

/// The status line of a waiting host.
fn waiting_status(w: &Waiting) -> String {
    let ids: Vec<String> = w.missing.iter().map(ToString::to_string).collect();
    if w.forced {
        return format!(
            "forced recovery of epoch {} under way, without {}",
            w.epoch,
            ids.join(" ")
        );
    }
    let n = ids.len();
    format!(
        "waiting for {n} member{} of epoch {}: {}; run `dog cluster recover force` to resume without {}",
        if n == 1 { "" } else { "s" },
        w.epoch,
        ids.join(" "),
        if n == 1 { "it" } else { "them" }
    )
}

/// Checks the objects of `oids` (sorted) after `after`: at most `max`, and for at most
/// `slice` (at least one object); `check` gives (copies, good, repaired, lost) of one object.
fn check_batch(
    oids: &[Oid],
    after: Option<u64>,
    max: u32,
    slice: Duration,
    mut check: impl FnMut(Oid) -> Result<(u32, u32, u32, bool), String>,
) -> CheckBatch {
    let started = Instant::now();
    let start = after.map_or(0, |a| oids.partition_point(|o| o.0 <= a));
    let mut b = CheckBatch {
        total: oids.len() as u64,
        last: after,
        ..CheckBatch::default()
    };
    let mut i = start;
    while i < oids.len()
        && b.objects < u64::from(max.max(1))
        && (b.objects == 0 || started.elapsed() < slice)
    {
        let oid = oids[i];
        match check(oid) {
            Ok((copies, good, repaired, lost)) => {
                b.copies += u64::from(copies);
                b.good += u64::from(good);
                b.repaired += u64::from(repaired);
                if lost {
                    b.lost.push(oid.0);
                }
            }
            Err(e) => b.failed.push((oid.0, e)),
        }
        b.objects += 1;
        b.last = Some(oid.0);
        i += 1;
    }
    b.done = i as u64;
    b.finished = i >= oids.len();
    b
}

impl NodeService {
    /// Answers for `node`, whose VDIs are in `pool`.
    pub fn new(pool: Arc<Pool>, node: NodeIdentity) -> NodeService {
        NodeService {
            pool,
            node,
            notifier: OnceLock::new(),
            cluster: OnceLock::new(),
            memory: OnceLock::new(),
        }
    }

    /// Answers the memory part of `dog node info` from now on.
    pub fn set_memory(&self, source: MemorySource) {
        let _ = self.memory.set(source);
    }

    fn memory(&self) -> Result<Reply, WireError> {
        match self.memory.get() {
            Some(m) => Ok(Reply::Memory(m.info())),
            None => Err(WireError::Invalid(
                "this node reports no memory budget".into(),
            )),
        }
    }

    /// Answers `dog cluster info` and `dog node list` from the cluster from now on.
    pub fn set_cluster(&self, source: Arc<ClusterInfoSource>) {
        let _ = self.cluster.set(source);
    }

    /// Lets the service invalidate the kernel's caches once the mount exists.
    pub fn set_notifier(&self, notifier: Notifier) {
        let _ = self.notifier.set(notifier);
    }

    fn list(&self) -> Reply {
        Reply::VdiList(self.pool.list().iter().map(vdi_info).collect())
    }

    fn create(&self, name: &str, size: u64, copies: Option<u8>) -> Result<Reply, Error> {
        if let Some(c) = copies.filter(|c| !(1..=MAX_COPIES).contains(c)) {
            return Err(Error::Invalid(format!(
                "copies {c} is not in 1..={MAX_COPIES}"
            )));
        }
        let opts = CreateOpts {
            copies,
            ..CreateOpts::default()
        };
        self.pool.create(name, size, opts)?;
        self.forget_name(name);
        Ok(Reply::Done)
    }

    fn delete(&self, full: &str) -> Result<Reply, Error> {
        let ino = self.pool.lookup(full)?.ino;
        self.pool.unlink(full)?;
        // Tell the kernel the file is gone (not only stale), so it drops its inode and sends
        // the forget that lets the pool delete the VDI's data.
        if let Some(n) = self.notifier.get() {
            if let Err(e) = n.delete(INodeNo::ROOT, INodeNo(ino.0), OsStr::new(full)) {
                debug!(name = full, error = %e, "delete notification skipped");
                self.forget_name(full);
            }
        }
        self.forget_inode(ino);
        Ok(Reply::Done)
    }

    fn rollback(&self, name: &str, tag: &str) -> Result<Reply, Error> {
        let ino = self.pool.lookup(name)?.ino;
        self.pool.rollback(name, tag)?;
        self.forget_inode(ino);
        Ok(Reply::Done)
    }

    fn resize(&self, name: &str, size: u64) -> Result<Reply, Error> {
        let ino = self.pool.lookup(name)?.ino;
        let set = SetAttr {
            size: Some(size),
            ..SetAttr::default()
        };
        self.pool.setattr(ino, set)?;
        self.forget_inode(ino);
        Ok(Reply::Done)
    }

    fn node_info(&self) -> Result<Reply, Error> {
        let s = self.pool.stats()?;
        Ok(Reply::NodeInfo(NodeInfo {
            node_id: self.node.node_id.to_string(),
            store: self.node.store.display().to_string(),
            mount: self.node.mount.display().to_string(),
            capacity: s.capacity,
            used: s.used,
            free: s.free,
            vdis: s.vdis,
        }))
    }

    fn cluster_info(&self) -> Result<Reply, Error> {
        let copies = self.pool.stats()?.default_copies;
        if let Some(c) = self.cluster.get() {
            return Ok(Reply::ClusterInfo(c.info(&self.node.cluster, copies)));
        }
        Ok(Reply::ClusterInfo(ClusterInfo {
            name: self.node.cluster.clone(),
            status: "running (single host)".into(),
            epoch: 1,
            nodes: vec![self.node.node_id.to_string()],
            default_copies: copies,
            redundancy: redundancy(copies, 1),
            members: Vec::new(),
            epochs: Vec::new(),
            rebalance: RebalanceInfo::default(),
            waiting: None,
        }))
    }

    fn source(&self) -> Result<&Arc<ClusterInfoSource>, WireError> {
        self.cluster
            .get()
            .ok_or_else(|| WireError::Invalid("this host runs without a cluster".into()))
    }

    /// Refuses what needs the cluster while this host is not a member of it.
    fn need_member(&self) -> Result<(), WireError> {
        match self.cluster.get() {
            Some(c) if !c.is_member() => Err(WireError::Busy(
                "this host is not a member of a cluster yet; `dog cluster info` says why".into(),
            )),
            _ => Ok(()),
        }
    }

    fn recover_force(&self) -> Result<Reply, WireError> {
        let c = self.source()?;
        match c.cluster.recover_force() {
            Ok(f) => {
                warn!(
                    epoch = f.epoch,
                    resumer = %f.resumer,
                    removed = ?f.removed,
                    "forced recovery asked for by dog"
                );
                Ok(Reply::Forced(ForceInfo {
                    epoch: f.epoch,
                    resumer: f.resumer.to_string(),
                    local: f.resumer == self.node.node_id,
                    present: f.present.iter().map(ToString::to_string).collect(),
                    removed: f.removed.iter().map(ToString::to_string).collect(),
                }))
            }
            Err(sheep_p2p::Error::NoForce(why)) => Err(WireError::Invalid(why.to_string())),
            Err(e) => Err(WireError::Io(e.to_string())),
        }
    }

    fn recovery(&self) -> Result<Reply, WireError> {
        let r = self.source()?.store.recovery();
        Ok(Reply::Recovery(RecoveryInfo {
            epoch: r.epoch,
            to_check: r.to_check,
            checked: r.checked,
            copied: r.copied,
            copied_bytes: r.copied_bytes,
            kept: r.kept,
            throttle: r.throttle,
            done: r.done,
            complete: r.complete,
            full: r.full,
            sent: r.sent,
            sent_bytes: r.sent_bytes,
            received: r.received,
            received_bytes: r.received_bytes,
            kept_bytes: r.kept_bytes,
            unverified: r.unverified,
            repaired: r.repaired,
            skipped_full: r.skipped_full,
            total_received_bytes: r.total_received_bytes,
            patched: r.patched,
            patched_blocks: r.patched_blocks,
            saved_bytes: r.saved_bytes,
        }))
    }

    fn set_throttle(&self, bytes_per_sec: Option<u64>) -> Result<Reply, WireError> {
        self.source()?.store.set_throttle(bytes_per_sec);
        info!(?bytes_per_sec, "recovery throttle set");
        self.recovery()
    }

    fn check(
        &self,
        vdi: Option<&str>,
        repair: bool,
        after: Option<u64>,
        max: u32,
    ) -> Result<Reply, WireError> {
        let c = self.source()?;
        self.need_member()?;
        let oids = match vdi {
            Some(name) => self.pool.data_objects(name).map_err(|e| wire_error(&e))?,
            None => self.pool.all_data_objects(),
        };
        let batch = check_batch(&oids, after, max, CHECK_SLICE, |oid| {
            c.store
                .check_object(oid, repair)
                .map(|r| (r.copies, r.good, r.repaired, r.lost))
                .map_err(|e| e.to_string())
        });
        for oid in &batch.lost {
            warn!(oid = %Oid(*oid), "check: object has no good copy left");
        }
        Ok(Reply::Check(batch))
    }

    /// Drops the kernel's cached entry for `name` (a no-op before the mount exists).
    fn forget_name(&self, name: &str) {
        if let Some(n) = self.notifier.get() {
            if let Err(e) = n.inval_entry(INodeNo::ROOT, OsStr::new(name)) {
                debug!(name, error = %e, "entry invalidation skipped");
            }
        }
    }

    /// Drops the kernel's cached attributes and pages of `ino`.
    fn forget_inode(&self, ino: Ino) {
        if let Some(n) = self.notifier.get() {
            if let Err(e) = n.inval_inode(INodeNo(ino.0), 0, 0) {
                debug!(ino = ino.0, error = %e, "inode invalidation skipped");
            }
        }
    }

    fn dispatch(&self, req: Request) -> Result<Reply, Error> {
        match req {
            Request::VdiList | Request::VdiTree => Ok(self.list()),
            Request::VdiCreate { name, size, copies } => self.create(&name, size, copies),
            Request::VdiDelete { name, tag } => self.delete(&full_name(&name, tag.as_deref())?),
            Request::VdiSnapshot { name, tag } => {
                self.pool.snapshot(&name, &tag)?;
                Ok(Reply::Done)
            }
            Request::VdiClone { src, tag, dst } => {
                self.pool
                    .clone_vdi(&full_name(&src, tag.as_deref())?, &dst)?;
                self.forget_name(&dst);
                Ok(Reply::Done)
            }
            Request::VdiRollback { name, tag } => self.rollback(&name, &tag),
            Request::VdiResize { name, size } => self.resize(&name, size),
            Request::NodeInfo => self.node_info(),
            Request::ClusterInfo => self.cluster_info(),
            Request::ClusterRecoverForce
            | Request::NodeRecovery
            | Request::SetRecoveryThrottle { .. }
            | Request::NodeMemory
            | Request::Check { .. } => Err(Error::Invalid("not a pool request".into())),
        }
    }
}

impl AdminService for NodeService {
    fn handle(&self, req: Request) -> Result<Reply, WireError> {
        let _span = info_span!("admin", req = ?req).entered();
        let reads = matches!(
            req,
            Request::VdiList
                | Request::VdiTree
                | Request::NodeInfo
                | Request::ClusterInfo
                | Request::NodeRecovery
                | Request::NodeMemory
                | Request::Check { repair: false, .. }
        );
        let res = match req {
            Request::ClusterRecoverForce => self.recover_force(),
            Request::NodeMemory => self.memory(),
            Request::NodeRecovery => self.recovery(),
            Request::SetRecoveryThrottle { bytes_per_sec } => self.set_throttle(bytes_per_sec),
            Request::Check {
                vdi,
                repair,
                after,
                max,
            } => self.check(vdi.as_deref(), repair, after, max),
            req if reads => self.dispatch(req).map_err(|e| wire_error(&e)),
            req => self
                .need_member()
                .and_then(|()| self.dispatch(req).map_err(|e| wire_error(&e))),
        };
        match &res {
            Ok(_) if !reads => info!("admin request done"),
            Ok(_) => debug!("admin request done"),
            Err(e) => info!(error = %e, "admin request failed"),
        }
        res
    }
}

/// `name@tag` for a snapshot, `name` otherwise.
fn full_name(name: &str, tag: Option<&str>) -> Result<String, Error> {
    match tag {
        None => Ok(name.to_owned()),
        Some(_) if name.contains('@') => Err(Error::Invalid(format!(
            "{name} already names a snapshot; give either NAME@TAG or -s TAG"
        ))),
        Some(tag) => Ok(format!("{name}@{tag}")),
    }
}

/// The redundancy line of `dog cluster info`.
fn redundancy(copies: u8, hosts: usize) -> String {
    match usize::from(copies) > hosts {
        true if hosts == 1 => format!("degraded: 1 host for {copies} copies"),
        true => format!("degraded: {hosts} hosts for {copies} copies"),
        false if copies == 1 => "1 copy (no redundancy)".to_owned(),
        false => format!("{copies} copies"),
    }
}

/// One line of `dog vdi list`.
pub fn vdi_info(a: &VdiAttr) -> VdiInfo {
    VdiInfo {
        name: a.base.clone(),
        tag: a.tag.clone(),
        vid: a.vid.0,
        size: a.size,
        used: a.allocated.saturating_sub(a.shared),
        shared: a.shared,
        copies: a.copies,
        created: u64::try_from(a.crtime.secs).unwrap_or(0),
        parent: a.parent.map(|v| v.0),
        snapshot: a.snapshot,
    }
}

/// The one place where volume errors become admin-protocol errors.
pub fn wire_error(e: &Error) -> WireError {
    match e {
        Error::NotFound(name) => WireError::NotFound(name.clone()),
        Error::Exists(name) => WireError::Exists(name.clone()),
        Error::InvalidName(..) | Error::Invalid(_) | Error::TooBig(_) => {
            WireError::Invalid(e.to_string())
        }
        Error::NotSupported(_) => WireError::Invalid(e.to_string()),
        Error::ReadOnly(name) => WireError::ReadOnly(name.clone()),
        Error::Busy(name) => WireError::Busy(name.clone()),
        Error::Locked(_) => WireError::Busy(e.to_string()),
        Error::NoVid => WireError::NoSpace,
        Error::Object(sheep_objects::Error::NoSpace) => WireError::NoSpace,
        Error::CorruptMeta { .. }
        | Error::WriteBack(..)
        | Error::Object(_)
        | Error::Unavailable(_) => WireError::Io(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheep_objects::Vid;
    use sheep_vdi::Time;

    #[test]
    fn snapshot_names_join_name_and_tag() {
        assert_eq!(full_name("vm0", None).unwrap(), "vm0");
        assert_eq!(full_name("vm0", Some("nightly")).unwrap(), "vm0@nightly");
        assert_eq!(full_name("vm0@a", None).unwrap(), "vm0@a");
        assert!(full_name("vm0@a", Some("b")).is_err());
    }

    #[test]
    fn one_host_with_several_copies_is_degraded() {
        assert_eq!(redundancy(3, 1), "degraded: 1 host for 3 copies");
        assert_eq!(redundancy(1, 1), "1 copy (no redundancy)");
        assert_eq!(redundancy(2, 3), "2 copies");
        assert_eq!(redundancy(3, 2), "degraded: 2 hosts for 3 copies");
    }

    #[test]
    fn vdi_errors_map_to_wire_errors() {
        assert_eq!(
            wire_error(&Error::NotFound("a".into())),
            WireError::NotFound("a".into())
        );
        assert_eq!(
            wire_error(&Error::Exists("a".into())),
            WireError::Exists("a".into())
        );
        assert_eq!(
            wire_error(&Error::Busy("a".into())),
            WireError::Busy("a".into())
        );
        assert_eq!(
            wire_error(&Error::ReadOnly("a@t".into())),
            WireError::ReadOnly("a@t".into())
        );
        assert_eq!(wire_error(&Error::NoVid), WireError::NoSpace);
        assert_eq!(
            wire_error(&Error::Object(sheep_objects::Error::NoSpace)),
            WireError::NoSpace
        );
        assert!(matches!(
            wire_error(&Error::TooBig(1 << 62)),
            WireError::Invalid(_)
        ));
        assert!(matches!(
            wire_error(&Error::CorruptMeta {
                vid: Vid::NONE,
                reason: "x".into()
            }),
            WireError::Io(_)
        ));
    }

    #[test]
    fn a_waiting_host_names_what_it_waits_for() {
        let w = Waiting {
            epoch: 9,
            members: vec![NodeId([1; 16]), NodeId([2; 16]), NodeId([3; 16])],
            missing: vec![NodeId([3; 16])],
            forced: false,
        };
        let i = waiting_info(&w);
        assert_eq!((i.epoch, i.members.len()), (9, 3));
        assert_eq!(i.missing, vec![NodeId([3; 16]).to_string()]);
        let id = NodeId([3; 16]);
        assert_eq!(
            waiting_status(&w),
            format!("waiting for 1 member of epoch 9: {id}; run `dog cluster recover force` to resume without it")
        );
        let forced = Waiting { forced: true, ..w };
        assert_eq!(
            waiting_status(&forced),
            format!("forced recovery of epoch 9 under way, without {id}")
        );
    }

    #[test]
    fn checks_go_in_batches_that_continue_after_the_last_object() {
        let oids: Vec<Oid> = (1..=10).map(|i| Oid::data(Vid(7), i)).collect();
        let mut seen = Vec::new();
        let mut check = |o: Oid| {
            seen.push(o);
            match o.idx() {
                3 => Err("unreachable".to_owned()),
                5 => Ok((3, 0, 0, true)),
                _ => Ok((3, 2, 1, false)),
            }
        };
        let slice = Duration::from_secs(60);
        let a = check_batch(&oids, None, 4, slice, &mut check);
        assert_eq!((a.total, a.done, a.objects, a.finished), (10, 4, 4, false));
        assert_eq!(a.last, Some(oids[3].0));
        assert_eq!(a.failed, vec![(oids[2].0, "unreachable".to_owned())]);
        assert_eq!((a.copies, a.good, a.repaired), (9, 6, 3));
        let b = check_batch(&oids, a.last, 100, slice, &mut check);
        assert_eq!((b.done, b.objects, b.finished), (10, 6, true));
        assert_eq!(b.lost, vec![oids[4].0]);
        let c = check_batch(&oids, b.last, 100, slice, &mut check);
        assert_eq!((c.objects, c.finished, c.last), (0, true, b.last));
        // A zero time slice still checks one object per request.
        let d = check_batch(&oids, None, 100, Duration::ZERO, &mut check);
        assert_eq!(d.objects, 1);
        let empty = check_batch(&[], None, 10, slice, &mut check);
        assert!(empty.finished && empty.total == 0 && empty.last.is_none());
        assert_eq!(seen.len(), 11);
    }

    #[test]
    fn vdi_info_splits_used_and_shared() {
        let a = VdiAttr {
            ino: Ino(5),
            name: "vm0@t".into(),
            base: "vm0".into(),
            tag: Some("t".into()),
            vid: Vid(9),
            parent: Some(Vid(3)),
            size: 1 << 30,
            allocated: 12 << 20,
            shared: 4 << 20,
            mode: 0o644,
            uid: 0,
            gid: 0,
            atime: Time::default(),
            mtime: Time::default(),
            ctime: Time::default(),
            crtime: Time {
                secs: 1_700_000_000,
                nsecs: 0,
            },
            copies: 3,
            snapshot: true,
        };
        let i = vdi_info(&a);
        assert_eq!((i.name.as_str(), i.tag.as_deref()), ("vm0", Some("t")));
        assert_eq!((i.used, i.shared), (8 << 20, 4 << 20));
        assert_eq!((i.vid, i.parent, i.created), (9, Some(3), 1_700_000_000));
        assert!(i.snapshot);
    }
}
