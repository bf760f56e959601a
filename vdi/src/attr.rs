//! Attributes of a VDI as the mount and the admin socket see them.

use serde::{Deserialize, Serialize};
use sheep_objects::Vid;

/// A stable per-VDI number, used as the FUSE inode number. `Ino(1)` is the mount's root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct Ino(pub u64);

impl Ino {
    /// The root directory of the mount.
    pub const ROOT: Ino = Ino(1);
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default, Serialize, Deserialize)]
pub struct Time {
    /// Whole seconds.
    pub secs: i64,
    /// Nanoseconds.
    pub nsecs: u32,
}

impl Time {
    /// The current wall-clock time.
    pub fn now() -> Time {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nsecs: d.subsec_nanos(),
        }
    }
}

/// What the mount shows of one VDI or snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VdiAttr {
    /// Stable inode number.
    pub ino: Ino,
    /// Name as shown in the mount: `name` or `name@tag`.
    pub name: String,
    /// The VDI's base name.
    pub base: String,
    /// Snapshot tag, for snapshots.
    pub tag: Option<String>,
    /// Current VDI id (changes when the VDI is snapshotted, copied or rolled back).
    pub vid: Vid,
    /// VDI this one was created from (snapshot, clone or copy source), if any.
    pub parent: Option<Vid>,
    /// Size in bytes.
    pub size: u64,
    /// Bytes of storage its objects take (the basis of `st_blocks`).
    pub allocated: u64,
    /// Bytes of `allocated` in objects shared with other VDIs.
    pub shared: u64,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last access.
    pub atime: Time,
    /// Last data change.
    pub mtime: Time,
    /// Last attribute change.
    pub ctime: Time,
    /// Creation time.
    pub crtime: Time,
    /// Number of copies of each object.
    pub copies: u8,
    /// True for read-only snapshots.
    pub snapshot: bool,
}

/// Options for creating a VDI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOpts {
    /// Copies of each object; `None` takes the pool default.
    pub copies: Option<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Default for CreateOpts {
    fn default() -> Self {
        CreateOpts {
            copies: None,
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }
}

/// Attribute changes; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New size (grow or shrink).
    pub size: Option<u64>,
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New access time.
    pub atime: Option<Time>,
    /// New modification time.
    pub mtime: Option<Time>,
}
