//! Object ids.
//!
//! ```text
//!  63  62  61  60  59 .. 56 55 ............ 32 31 ............... 0
//! +---+---+---+---+--------+----------------+-------------------+
//! | I | - | M | A |   0    |   vid (24 bit) |   index (32 bit)  |
//! +---+---+---+---+--------+----------------+-------------------+
//! ```
//! `I` marks an inode object, `A` an allocation-table object, `M` node-local metadata; none
//! set is a 4 MiB data object, named after the VDI that owns it and its index in the volume.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Size of a data object: 4 MiB.
pub const OBJECT_SIZE: u64 = 4 << 20;
/// [`OBJECT_SIZE`] as a buffer length.
pub const OBJECT_BYTES: usize = 4 << 20;

const INODE_BIT: u64 = 1 << 63;
const META_BIT: u64 = 1 << 61;
const ALLOC_BIT: u64 = 1 << 60;
const TYPE_MASK: u64 = 0xff << 56;

/// A 24-bit VDI id. `Vid(0)` never names a VDI: in an allocation table it means "unallocated".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Vid(pub u32);

impl Vid {
    /// The largest valid VDI id.
    pub const MAX: Vid = Vid((1 << 24) - 1);
    /// The "no VDI" id.
    pub const NONE: Vid = Vid(0);

    /// Returns true for `Vid(0)`.
    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Vid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06x}", self.0)
    }
}

impl fmt::Debug for Vid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vid({:06x})", self.0)
    }
}

/// What an object holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A 4 MiB piece of a volume.
    Data,
    /// A VDI's inode record.
    Inode,
    /// A VDI's allocation table.
    Alloc,
    /// Node-local metadata (the VDI table).
    Meta,
}

/// A 64-bit object id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Oid(pub u64);

impl Oid {
    /// The data object holding index `idx` of the volume owned by `vid`.
    pub fn data(vid: Vid, idx: u32) -> Oid {
        Oid((u64::from(vid.0 & Vid::MAX.0) << 32) | u64::from(idx))
    }

    /// The inode object of `vid`.
    pub fn inode(vid: Vid) -> Oid {
        Oid(INODE_BIT | (u64::from(vid.0 & Vid::MAX.0) << 32))
    }

    /// The allocation-table object of `vid`.
    pub fn alloc(vid: Vid) -> Oid {
        Oid(ALLOC_BIT | (u64::from(vid.0 & Vid::MAX.0) << 32))
    }

    /// Node-local metadata object number `n`.
    pub fn meta(n: u32) -> Oid {
        Oid(META_BIT | u64::from(n))
    }

    /// The kind of object this id names.
    pub fn kind(self) -> ObjectKind {
        if self.0 & INODE_BIT != 0 {
            ObjectKind::Inode
        } else if self.0 & ALLOC_BIT != 0 {
            ObjectKind::Alloc
        } else if self.0 & META_BIT != 0 {
            ObjectKind::Meta
        } else {
            ObjectKind::Data
        }
    }

    /// The VDI id part.
    pub fn vid(self) -> Vid {
        Vid(((self.0 >> 32) & u64::from(Vid::MAX.0)) as u32)
    }

    /// The index part.
    pub fn idx(self) -> u32 {
        (self.0 & 0xffff_ffff) as u32
    }

    /// Returns true if the type bits hold a combination this version writes.
    pub fn is_valid(self) -> bool {
        let t = self.0 & TYPE_MASK;
        t == 0 || t == INODE_BIT || t == ALLOC_BIT || t == META_BIT
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({:016x})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_oid_round_trips_vid_and_index() {
        let o = Oid::data(Vid(0xabcdef), 0x1234_5678);
        assert_eq!(o.vid(), Vid(0xabcdef));
        assert_eq!(o.idx(), 0x1234_5678);
        assert_eq!(o.kind(), ObjectKind::Data);
        assert!(o.is_valid());
    }

    #[test]
    fn kinds_are_told_apart() {
        assert_eq!(Oid::inode(Vid(5)).kind(), ObjectKind::Inode);
        assert_eq!(Oid::alloc(Vid(5)).kind(), ObjectKind::Alloc);
        assert_eq!(Oid::meta(1).kind(), ObjectKind::Meta);
        assert_eq!(Oid::inode(Vid(5)).vid(), Vid(5));
        assert!(!Oid(INODE_BIT | ALLOC_BIT).is_valid());
    }

    #[test]
    fn vid_is_masked_to_24_bits() {
        assert_eq!(Oid::data(Vid(0x1ff_ffff), 0).vid(), Vid::MAX);
    }
}
