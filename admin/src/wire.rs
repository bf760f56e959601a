//! Messages of the admin protocol.
//!
//! One request per frame on a Unix stream socket. Both directions use the
//! [`sheep_p2p::codec`] envelope of kind [`ADMIN_KIND`]:
//!
//! ```text
//! client                                   daemon
//!   | -- envelope(Request) ----------------> |
//!   | <------- envelope(Result<Reply, WireError>) |
//! ```
//!
//! bincode encodes enum variants by index: every enum here is append-only, and fields are never
//! reordered or removed. A changed layout becomes a new variant.

use serde::{Deserialize, Serialize};
use sheep_p2p::codec::Kind;

/// Magic number of admin frames ("SDAD").
pub const ADMIN_MAGIC: u32 = 0x5344_4144;

/// Envelope kind of admin frames, in both directions.
pub const ADMIN_KIND: Kind = Kind {
    magic: ADMIN_MAGIC,
    major: 1,
    minor: 0,
};

/// Largest payload an admin frame may carry, in bytes.
pub const MAX_FRAME: u64 = 16 << 20;

/// A request from `dog` (or any client) to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Lists every VDI and snapshot.
    VdiList,
    /// Creates a VDI of `size` bytes with `copies` replicas (cluster default when `None`).
    VdiCreate {
        /// Name of the new VDI.
        name: String,
        /// Size in bytes.
        size: u64,
        /// Number of replicas; `None` for the cluster default.
        copies: Option<u8>,
    },
    /// Deletes a VDI, or its snapshot `tag`.
    VdiDelete {
        /// Name of the VDI.
        name: String,
        /// Snapshot tag; `None` deletes the working VDI.
        tag: Option<String>,
    },
    /// Takes a read-only snapshot of a VDI named `tag`.
    VdiSnapshot {
        /// Name of the VDI.
        name: String,
        /// Tag of the new snapshot.
        tag: String,
    },
    /// Creates a writable copy-on-write clone `dst` of `src` (or of its snapshot `tag`).
    VdiClone {
        /// Source VDI.
        src: String,
        /// Snapshot of the source; `None` clones the working VDI.
        tag: Option<String>,
        /// Name of the new VDI.
        dst: String,
    },
    /// Brings a VDI back to the content of its snapshot `tag`.
    VdiRollback {
        /// Name of the VDI.
        name: String,
        /// Snapshot to roll back to.
        tag: String,
    },
    /// Changes the size of a VDI.
    VdiResize {
        /// Name of the VDI.
        name: String,
        /// New size in bytes.
        size: u64,
    },
    /// Lists every VDI with its parent, for `dog vdi tree`; answered with [`Reply::VdiList`].
    VdiTree,
    /// Describes the node that serves the socket.
    NodeInfo,
    /// Describes the cluster.
    ClusterInfo,
    /// Resumes a stopped cluster without the members of its last epoch that do not come
    /// back (`dog cluster recover force`); answered with [`Reply::Forced`].
    ClusterRecoverForce,
    /// This node's recovery progress (`dog node recovery`); answered with
    /// [`Reply::Recovery`].
    NodeRecovery,
    /// Limits the bandwidth this node spends on recovery (`dog node recovery set-throttle`);
    /// answered with [`Reply::Recovery`].
    SetRecoveryThrottle {
        /// Bytes per second this node may push for recovery; `None` is unthrottled.
        bytes_per_sec: Option<u64>,
    },
    /// Verifies every copy of the next objects of one VDI, or of every VDI (`dog vdi check`,
    /// `dog cluster check`), and with `repair` brings bad, stale or missing copies back from
    /// the freshest good one. Objects are taken in id order after `after`, as many as the
    /// daemon checks in about a second (at most `max`); answered with [`Reply::Check`].
    Check {
        /// The VDI (`NAME` or `NAME@TAG`); `None` checks the objects of every VDI.
        vdi: Option<String>,
        /// Repair what is found wrong.
        repair: bool,
        /// Continue after this object id (`None` starts at the first).
        after: Option<u64>,
        /// Most objects to check in this request.
        max: u32,
    },
    /// The memory of the node that serves the socket: its cache size, the I/O buffers in use
    /// and the process's resident memory (`dog node info`); answered with [`Reply::Memory`].
    NodeMemory,
}

/// A successful answer of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The request was carried out and returns nothing.
    Done,
    /// The VDIs, for [`Request::VdiList`] and [`Request::VdiTree`].
    VdiList(Vec<VdiInfo>),
    /// The answer to [`Request::NodeInfo`].
    NodeInfo(NodeInfo),
    /// The answer to [`Request::ClusterInfo`].
    ClusterInfo(ClusterInfo),
    /// The answer to [`Request::ClusterRecoverForce`].
    Forced(ForceInfo),
    /// The answer to [`Request::NodeRecovery`] and [`Request::SetRecoveryThrottle`].
    Recovery(RecoveryInfo),
    /// The answer to [`Request::Check`].
    Check(CheckBatch),
    /// The answer to [`Request::NodeMemory`].
    Memory(MemoryInfo),
}

/// One VDI or snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VdiInfo {
    /// Name of the VDI.
    pub name: String,
    /// Snapshot tag; `None` for the working (writable) VDI.
    pub tag: Option<String>,
    /// 24-bit VDI id.
    pub vid: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// Bytes held by objects owned by this VDI.
    pub used: u64,
    /// Bytes held by objects shared with a parent.
    pub shared: u64,
    /// Number of replicas.
    pub copies: u8,
    /// Creation time in seconds since the Unix epoch.
    pub created: u64,
    /// Vid of the VDI this one was snapshotted or cloned from.
    pub parent: Option<u32>,
    /// True for a read-only snapshot.
    pub snapshot: bool,
}

/// The node that serves the admin socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id.
    pub node_id: String,
    /// The store directory.
    pub store: String,
    /// The mount point.
    pub mount: String,
    /// Capacity of the store in bytes.
    pub capacity: u64,
    /// Bytes used in the store.
    pub used: u64,
    /// Bytes free in the store.
    pub free: u64,
    /// Number of VDIs (snapshots included).
    pub vdis: u32,
}

/// The memory of one node (`dog node info`), in bytes unless said otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryInfo {
    /// `--cache-size`: the memory the daemon may spend on I/O buffers.
    pub cache_size: u64,
    /// FUSE worker threads (fewer than `--threads` when their buffers would not fit).
    pub fuse_threads: u32,
    /// Largest FUSE request.
    pub max_write: u32,
    /// The FUSE threads' receive buffers: `fuse_threads x (max_write + 4 KiB)`.
    pub fuse_buffers: u64,
    /// The budget of the other I/O buffers: `cache_size - fuse_buffers`.
    pub io_budget: u64,
    /// Bytes of I/O buffers in use now.
    pub in_use: u64,
    /// Bytes of idle I/O buffers kept for reuse.
    pub cached: u64,
    /// The most bytes of I/O buffers ever held (in use and kept) at once.
    pub peak: u64,
    /// Requests that waited for room in the budget.
    pub waits: u64,
    /// Requests that took their buffers without room in the budget: nested in a request that
    /// holds buffers already, or a response body that waited long enough.
    pub overdrafts: u64,
    /// Requests larger than the whole budget, served alone.
    pub oversized: u64,
    /// Data-channel requests answered "retry" for lack of room.
    pub refused: u64,
    /// Resident memory of the daemon now (`VmRSS`).
    pub vm_rss: u64,
    /// The most resident memory of the daemon so far (`VmHWM`).
    pub vm_hwm: u64,
}

/// The cluster as seen by the node that serves the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Cluster name.
    pub name: String,
    /// Human status, for example "running, single host".
    pub status: String,
    /// Membership epoch.
    pub epoch: u64,
    /// Ids of the member nodes.
    pub nodes: Vec<String>,
    /// Replicas of a VDI created without `--copies`.
    pub default_copies: u8,
    /// Human description of the redundancy, for example "3 copies".
    pub redundancy: String,
    /// The members, oldest first.
    pub members: Vec<MemberSummary>,
    /// The epoch log: the members at every epoch this node knows of, oldest first.
    pub epochs: Vec<EpochInfo>,
    /// Object movement on this node after the last membership change.
    pub rebalance: RebalanceInfo,
    /// Restarted with a stored log, this node waits for members of its last epoch before it
    /// resumes the cluster (`None` when it does not wait).
    pub waiting: Option<WaitingInfo>,
}

/// What a restarted node waits for before it resumes the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingInfo {
    /// The epoch of its stored log.
    pub epoch: u64,
    /// The members of that epoch.
    pub members: Vec<String>,
    /// Those not heard from yet.
    pub missing: Vec<String>,
    /// A forced recovery is under way.
    pub forced: bool,
}

/// What `dog cluster recover force` set in motion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForceInfo {
    /// The epoch of the stored log that is resumed.
    pub epoch: u64,
    /// The node that resumes the cluster (the longest log of the present members).
    pub resumer: String,
    /// Whether that is the node that answered.
    pub local: bool,
    /// The members that resume the cluster.
    pub present: Vec<String>,
    /// The members removed because they are absent.
    pub removed: Vec<String>,
}

/// Recovery progress of one node (`dog node recovery`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryInfo {
    /// The epoch it recovers for.
    pub epoch: u64,
    /// Objects it has to look at.
    pub to_check: u64,
    /// Objects it looked at.
    pub checked: u64,
    /// Objects it copied to (or from) other holders.
    pub copied: u64,
    /// Their bytes.
    pub copied_bytes: u64,
    /// Objects found current (nothing to copy).
    pub kept: u64,
    /// Bytes per second it may push for recovery; `None` is unthrottled.
    pub throttle: Option<u64>,
    /// It finished recovering for the epoch.
    pub done: bool,
    /// Every member finished.
    pub complete: bool,
    /// Its store is near full: it takes no new objects nor copies.
    pub full: bool,
    /// Objects it sent to other holders, and their bytes.
    pub sent: u64,
    /// Bytes of those.
    pub sent_bytes: u64,
    /// Objects it received (pushed to it, fetched or patched by it).
    pub received: u64,
    /// Bytes received for those (for a patched copy: its source's block summary and the
    /// blocks that differed).
    pub received_bytes: u64,
    /// Bytes of the unverified copies found current and kept (what catch-up did not copy).
    pub kept_bytes: u64,
    /// Copies still unverified (compared with the others' before use).
    pub unverified: u64,
    /// Bad copies repaired from good ones since the daemon started.
    pub repaired: u64,
    /// Copies not made because their target host is near full.
    pub skipped_full: u64,
    /// Bytes received for recovery since the daemon started.
    pub total_received_bytes: u64,
    /// Objects received by patching the local copy with only the blocks that differed.
    pub patched: u64,
    /// Blocks (4 KiB) those patches changed.
    pub patched_blocks: u64,
    /// Bytes those patches did not copy (what whole objects would have taken more).
    pub saved_bytes: u64,
}

/// The result of one [`Request::Check`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckBatch {
    /// Objects of the VDI (or of every VDI) now.
    pub total: u64,
    /// Of those, how many come at or before `last` (progress).
    pub done: u64,
    /// The last object id checked; the next request continues after it.
    pub last: Option<u64>,
    /// No object is left after `last`.
    pub finished: bool,
    /// Objects checked in this request.
    pub objects: u64,
    /// Copies looked at.
    pub copies: u64,
    /// Copies found good.
    pub good: u64,
    /// Copies repaired.
    pub repaired: u64,
    /// Objects with no good copy left.
    pub lost: Vec<u64>,
    /// Objects that could not be checked, with why.
    pub failed: Vec<(u64, String)>,
}

/// What one node moved after the last membership change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceInfo {
    /// The epoch it rebalanced for.
    pub epoch: u64,
    /// Data objects this node holds.
    pub objects: u64,
    /// Objects it copied to new holders.
    pub pushed: u64,
    /// Their bytes.
    pub pushed_bytes: u64,
    /// Objects it fetched on demand.
    pub pulled: u64,
    /// Its copies it dropped (no longer a holder).
    pub dropped: u64,
    /// Every member finished rebalancing for the epoch.
    pub complete: bool,
}

/// One member of the cluster (`dog node list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSummary {
    /// Its id.
    pub node_id: String,
    /// Where its object-data channel listens.
    pub addr: String,
    /// Capacity of its store in bytes.
    pub capacity: u64,
    /// It orders the cluster's metadata operations.
    pub sequencer: bool,
    /// It is the node that answered.
    pub local: bool,
}

/// The members at one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochInfo {
    /// The epoch.
    pub epoch: u64,
    /// Ids of its members.
    pub nodes: Vec<String>,
}

/// A failed request, as sent on the wire. Each variant maps to one `dog` exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WireError {
    /// The named VDI, snapshot or object does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The name is already taken.
    #[error("already exists: {0}")]
    Exists(String),
    /// The request is malformed or its arguments are invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The target is in use.
    #[error("busy: {0}")]
    Busy(String),
    /// The store has no space left.
    #[error("no space left in the store")]
    NoSpace,
    /// The daemon failed with an I/O or internal error.
    #[error("I/O error: {0}")]
    Io(String),
    /// The target is read-only (a snapshot).
    #[error("read-only: {0}")]
    ReadOnly(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheep_p2p::codec::{decode, encode, to_bytes, HEADER_LEN};

    fn sample_vdi() -> VdiInfo {
        VdiInfo {
            name: "vm0".into(),
            tag: Some("base".into()),
            vid: 0x7c_2b25,
            size: 10 << 30,
            used: 4 << 20,
            shared: 0,
            copies: 3,
            created: 1_700_000_000,
            parent: None,
            snapshot: true,
        }
    }

    #[test]
    fn request_variant_indices_are_frozen() {
        // bincode writes the variant index as a little-endian u32: these must never change.
        let cases = [
            (Request::VdiList, 0u32),
            (Request::VdiTree, 7),
            (Request::NodeInfo, 8),
            (Request::ClusterInfo, 9),
            (Request::ClusterRecoverForce, 10),
            (Request::NodeRecovery, 11),
            (Request::NodeMemory, 14),
        ];
        for (req, index) in cases {
            assert_eq!(to_bytes(&req, 64).unwrap(), index.to_le_bytes());
        }
    }

    #[test]
    fn wire_error_variant_indices_are_frozen() {
        let bytes = to_bytes(&WireError::NoSpace, 64).unwrap();
        assert_eq!(bytes, 4u32.to_le_bytes());
    }

    #[test]
    fn a_reply_survives_the_envelope() {
        let reply: Result<Reply, WireError> = Ok(Reply::VdiList(vec![sample_vdi()]));
        let bytes = encode(ADMIN_KIND, &reply, MAX_FRAME).unwrap();
        assert_eq!(&bytes[..4], &ADMIN_MAGIC.to_le_bytes());
        assert!(bytes.len() > HEADER_LEN);
        let back: Result<Reply, WireError> = decode(ADMIN_KIND, &bytes, MAX_FRAME).unwrap();
        assert_eq!(back, reply);
    }

    #[test]
    fn the_recovery_replies_survive_the_envelope() {
        let replies = [
            Reply::Forced(ForceInfo {
                epoch: 7,
                resumer: "n1".into(),
                local: true,
                present: vec!["n1".into(), "n2".into()],
                removed: vec!["n3".into()],
            }),
            Reply::Recovery(RecoveryInfo {
                epoch: 3,
                to_check: 10,
                checked: 4,
                copied: 2,
                copied_bytes: 8 << 20,
                kept: 2,
                throttle: Some(100 << 20),
                done: false,
                complete: false,
                full: true,
                received: 2,
                received_bytes: 8 << 20,
                unverified: 1,
                patched: 1,
                patched_blocks: 3,
                saved_bytes: 4 << 20,
                ..RecoveryInfo::default()
            }),
            Reply::Memory(MemoryInfo {
                cache_size: 48 << 20,
                fuse_threads: 32,
                max_write: 1 << 20,
                fuse_buffers: 32 * ((1 << 20) + 4096),
                io_budget: 16 << 20,
                peak: 12 << 20,
                vm_hwm: 90 << 20,
                ..MemoryInfo::default()
            }),
            Reply::Check(CheckBatch {
                total: 9,
                done: 3,
                last: Some(42),
                finished: false,
                objects: 3,
                copies: 9,
                good: 8,
                repaired: 1,
                lost: vec![7],
                failed: vec![(8, "unreachable".into())],
            }),
        ];
        for reply in replies {
            let reply: Result<Reply, WireError> = Ok(reply);
            let bytes = encode(ADMIN_KIND, &reply, MAX_FRAME).unwrap();
            let back: Result<Reply, WireError> = decode(ADMIN_KIND, &bytes, MAX_FRAME).unwrap();
            assert_eq!(back, reply);
        }
        for req in [
            Request::SetRecoveryThrottle {
                bytes_per_sec: Some(1 << 20),
            },
            Request::Check {
                vdi: Some("vm0@t".into()),
                repair: true,
                after: Some(5),
                max: 64,
            },
        ] {
            let bytes = encode(ADMIN_KIND, &req, MAX_FRAME).unwrap();
            let back: Request = decode(ADMIN_KIND, &bytes, MAX_FRAME).unwrap();
            assert_eq!(back, req);
        }
    }

    #[test]
    fn an_error_survives_the_envelope() {
        let reply: Result<Reply, WireError> = Err(WireError::NotFound("vm9".into()));
        let bytes = encode(ADMIN_KIND, &reply, MAX_FRAME).unwrap();
        let back: Result<Reply, WireError> = decode(ADMIN_KIND, &bytes, MAX_FRAME).unwrap();
        assert_eq!(back, reply);
    }

    #[test]
    fn wire_errors_display_their_message() {
        assert_eq!(
            WireError::Busy("vm0 is open".into()).to_string(),
            "busy: vm0 is open"
        );
    }
}
