//! The commands of the metadata log: every change to the pool's metadata is one of these,
//! applied in the same order on every host (see `docs/CLUSTER.md`).
//!
//! Commands carry everything their effect depends on (times, sizes, expected owners), so
//! applying one is deterministic: the same log gives the same state everywhere. Fields and
//! variants are append-only (bincode is not self-describing).

use crate::attr::{SetAttr, Time};
use serde::{Deserialize, Serialize};
use sheep_p2p::codec::{self, Kind};
use sheep_p2p::NodeId;

/// Envelope kind of a proposal.
const PROPOSAL_KIND: Kind = Kind {
    magic: 0x4344_4d53, // "SMDC"
    major: 1,
    minor: 0,
};

/// Largest encoded command (a batch of allocation entries stays far below it).
pub const CMD_LIMIT: u64 = 1 << 20;

/// A command with the token its proposer waits on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The proposing node.
    pub node: NodeId,
    /// Unique per proposing process: the proposer finds its result under it.
    pub token: u64,
    /// What to do.
    pub cmd: Cmd,
}

/// Attribute changes as they travel (the size goes through [`Cmd::Resize`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrChange {
    /// Permission bits.
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Access time.
    pub atime: Option<Time>,
    /// Modification time.
    pub mtime: Option<Time>,
}

impl From<&SetAttr> for AttrChange {
    fn from(s: &SetAttr) -> Self {
        AttrChange {
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            atime: s.atime,
            mtime: s.mtime,
        }
    }
}

/// One metadata change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmd {
    /// Create an empty VDI.
    Create {
        /// Name.
        name: String,
        /// Size in bytes.
        size: u64,
        /// Copies per object.
        copies: u8,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Creation time.
        time: Time,
    },
    /// Remove a name (VDI or snapshot); the data goes when no host has it open.
    Unlink {
        /// Name (`name` or `name@tag`).
        name: String,
    },
    /// Rename a VDI with its snapshots.
    Rename {
        /// Old name.
        from: String,
        /// New name.
        to: String,
        /// Replace an existing `to`.
        replace: bool,
        /// Change time.
        time: Time,
    },
    /// Change attributes other than the size.
    SetAttr {
        /// The VDI.
        ino: u64,
        /// What changes.
        change: AttrChange,
        /// Change time.
        time: Time,
    },
    /// Set the size; on a shrink, entries past the end are dropped.
    Resize {
        /// The VDI.
        ino: u64,
        /// New size.
        size: u64,
        /// Modification time.
        time: Time,
    },
    /// Grow to at least `size` (a write or a copy past the end).
    Extend {
        /// The VDI.
        ino: u64,
        /// Size at least.
        size: u64,
        /// Modification time.
        time: Time,
    },
    /// Change allocation entries: each `(idx, expected, new)`; all or none apply.
    SetEntries {
        /// The VDI.
        ino: u64,
        /// The VDI id the proposer wrote under (the change is refused if it moved on).
        vid: u32,
        /// The entries.
        entries: Vec<(u32, u32, u32)>,
    },
    /// Take snapshot `name@tag`.
    Snapshot {
        /// The VDI.
        name: String,
        /// The tag.
        tag: String,
        /// Creation time.
        time: Time,
    },
    /// Create `dst` sharing every object of `src` (`name` or `name@tag`).
    Clone {
        /// Source.
        src: String,
        /// Destination name.
        dst: String,
        /// Creation time.
        time: Time,
    },
    /// Make `name` equal to `name@tag`.
    Rollback {
        /// The VDI.
        name: String,
        /// The snapshot tag.
        tag: String,
        /// Modification time.
        time: Time,
    },
    /// Share the source's objects `first..=last` with the destination (copy_file_range),
    /// freezing the source first if it writes any of them in place; grow the destination to
    /// at least `end`.
    Share {
        /// Source VDI.
        src: u64,
        /// Destination VDI.
        dst: u64,
        /// First index.
        first: u32,
        /// Last index.
        last: u32,
        /// Destination size at least.
        end: u64,
        /// Modification time.
        time: Time,
    },
    /// `node` opened the VDI (its first handle).
    Open {
        /// The VDI.
        ino: u64,
        /// The host.
        node: NodeId,
    },
    /// `node` closed its last handle of the VDI.
    Close {
        /// The VDI.
        ino: u64,
        /// The host.
        node: NodeId,
    },
    /// `node` wants to write the VDI; its owner hands it over when idle.
    Want {
        /// The VDI.
        ino: u64,
        /// The host.
        node: NodeId,
    },
    /// The VDI's owner becomes `node` if it still is `from`.
    Own {
        /// The VDI.
        ino: u64,
        /// New owner.
        node: NodeId,
        /// Expected current owner.
        from: Option<NodeId>,
    },
    /// A byte-range lock operation (see [`crate::locks`]).
    Lock(crate::locks::LockCmd),
    /// `node` restarted: what its previous run held (owners, opens, locks) is released.
    Restarted {
        /// The host.
        node: NodeId,
    },
    /// `node`'s object store is failing: it holds no data copies from now on (its copies are
    /// rebuilt on other hosts) until it joins again. Not pool state: the host layer applies it
    /// to the data placement.
    StoreOut {
        /// The host.
        node: NodeId,
    },
}

/// Encodes a proposal for the log.
pub fn encode(p: &Proposal) -> crate::Result<Vec<u8>> {
    codec::encode(PROPOSAL_KIND, p, CMD_LIMIT).map_err(|e| crate::Error::Invalid(e.to_string()))
}

/// Decodes a proposal from the log.
pub fn decode(bytes: &[u8]) -> crate::Result<Proposal> {
    codec::decode(PROPOSAL_KIND, bytes, CMD_LIMIT).map_err(|e| crate::Error::CorruptMeta {
        vid: sheep_objects::Vid::NONE,
        reason: format!("log entry: {e}"),
    })
}
