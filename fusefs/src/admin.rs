//! The node's answers to `dog`: [`sheep_admin::AdminService`] over the [`Pool`].
//!
//! Requests are translated to `Pool` calls and `sheep_vdi` errors to [`WireError`] here, in one
//! place. Changes made behind the kernel's back (a resize, a rollback, a delete) are pushed to
//! the mount through the FUSE [`Notifier`], so cached sizes, data and names do not linger.

use crate::config::MAX_COPIES;
use fuser::{INodeNo, Notifier};
use sheep_admin::{
    AdminService, ClusterInfo, EpochInfo, MemberSummary, NodeInfo, RebalanceInfo, Reply, Request,
    VdiInfo, WireError,
};
use sheep_p2p::NodeId;
use sheep_vdi::{CreateOpts, Error, Ino, Pool, SetAttr, VdiAttr};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tracing::{debug, info, info_span};

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
        ClusterInfo {
            name: name.to_owned(),
            status: format!("{:?}", st.status).to_lowercase(),
            epoch: st.epoch,
            nodes: members.iter().map(|m| m.node_id.clone()).collect(),
            default_copies: copies,
            redundancy: redundancy(copies, members.len().max(1)),
            members,
            epochs,
            rebalance,
        }
    }
}

impl NodeService {
    /// Answers for `node`, whose VDIs are in `pool`.
    pub fn new(pool: Arc<Pool>, node: NodeIdentity) -> NodeService {
        NodeService {
            pool,
            node,
            notifier: OnceLock::new(),
            cluster: OnceLock::new(),
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
        }))
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
        }
    }
}

impl AdminService for NodeService {
    fn handle(&self, req: Request) -> Result<Reply, WireError> {
        let _span = info_span!("admin", req = ?req).entered();
        let mutates = !matches!(
            req,
            Request::VdiList | Request::VdiTree | Request::NodeInfo | Request::ClusterInfo
        );
        let res = self.dispatch(req);
        match &res {
            Ok(_) if mutates => info!("admin request done"),
            Ok(_) => debug!("admin request done"),
            Err(e) => info!(error = %e, "admin request failed"),
        }
        res.map_err(|e| wire_error(&e))
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
