//! Inode records and the VDI table record that holds them all.
//!
//! The VDI table is one record, `Oid::meta(0)`, replaced atomically (`put_atomic`) by every
//! metadata operation, so an operation that touches several VDIs (snapshot, copy, rename over
//! an existing name) commits at one instant:
//!
//! ```text
//! codec envelope (magic "SDVT", 1.0, crc32c) { next_ino, next_vid, inodes: [InodeV1] }
//! ```
//! Allocation tables live beside it, one object per VDI id (see [`crate::alloc`]).

use crate::attr::{Ino, Time};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sheep_objects::{ObjectStore, Oid, Vid};
use sheep_p2p::codec::{self, Kind};

/// The object holding the VDI table.
pub const TABLE_OID: Oid = Oid(1 << 61);

const TABLE_KIND: Kind = Kind {
    magic: 0x5456_4453, // "SDVT"
    major: 1,
    minor: 0,
};

/// The largest VDI table record accepted (about 300 000 VDIs).
const TABLE_LIMIT: u64 = 128 << 20;

/// The longest VDI name or tag, in bytes.
pub const NAME_MAX: usize = 255;

/// One VDI or snapshot, as stored. Fields are append-only (bincode is not self-describing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InodeV1 {
    /// Stable inode number.
    pub ino: u64,
    /// Base name.
    pub name: String,
    /// Snapshot tag (snapshots only).
    pub tag: Option<String>,
    /// Current VDI id; owns the objects this VDI writes in place.
    pub vid: u32,
    /// VDI id this one descends from.
    pub parent: Option<u32>,
    /// Size in bytes.
    pub size: u64,
    /// Copies per object.
    pub copies: u8,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access time.
    pub atime: Time,
    /// Modification time.
    pub mtime: Time,
    /// Change time.
    pub ctime: Time,
    /// Creation time.
    pub crtime: Time,
    /// Read-only snapshot.
    pub snapshot: bool,
    /// Removed from the namespace but still open; deleted at the next start.
    pub unlinked: bool,
}

impl InodeV1 {
    /// The VDI id as a newtype.
    pub fn vid(&self) -> Vid {
        Vid(self.vid)
    }

    /// The inode number as a newtype.
    pub fn ino(&self) -> Ino {
        Ino(self.ino)
    }

    /// The name shown in the mount: `name` or `name@tag`.
    pub fn display_name(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}@{}", self.name, t),
            None => self.name.clone(),
        }
    }
}

/// The whole VDI table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableV1 {
    /// Next inode number to hand out.
    pub next_ino: u64,
    /// Next VDI id to try.
    pub next_vid: u32,
    /// Every VDI and snapshot.
    pub inodes: Vec<InodeV1>,
}

/// Versioned envelope of the table; variants are append-only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableRecord {
    /// Version 1.
    V1(TableV1),
}

/// Loads the table; a store without one holds an empty pool.
pub fn load_table(store: &dyn ObjectStore) -> Result<TableV1> {
    let bytes = match store.get(TABLE_OID) {
        Ok(b) => b,
        Err(sheep_objects::Error::NotFound(_)) => {
            return Ok(TableV1 {
                next_ino: 2,
                next_vid: 1,
                inodes: Vec::new(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let rec: TableRecord =
        codec::decode(TABLE_KIND, &bytes, TABLE_LIMIT).map_err(|e| Error::CorruptMeta {
            vid: Vid::NONE,
            reason: e.to_string(),
        })?;
    match rec {
        TableRecord::V1(t) => Ok(t),
    }
}

/// Replaces the table atomically and durably.
pub fn store_table(store: &dyn ObjectStore, table: TableV1) -> Result<()> {
    let bytes = codec::encode(TABLE_KIND, &TableRecord::V1(table), TABLE_LIMIT).map_err(|e| {
        Error::CorruptMeta {
            vid: Vid::NONE,
            reason: e.to_string(),
        }
    })?;
    store.put_atomic(TABLE_OID, &bytes)?;
    Ok(())
}

/// Checks a VDI name or snapshot tag.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |why| Err(Error::InvalidName(name.to_owned(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > NAME_MAX {
        return bad("longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return bad("reserved");
    }
    if name.contains(['/', '@', '\0']) {
        return bad("contains '/', '@' or NUL");
    }
    Ok(())
}

/// Splits a mount name into base name and optional tag, checking both.
pub fn split_name(full: &str) -> Result<(&str, Option<&str>)> {
    match full.split_once('@') {
        Some((name, tag)) => {
            check_name(name)?;
            check_name(tag)?;
            Ok((name, Some(tag)))
        }
        None => {
            check_name(full)?;
            Ok((full, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheep_objects::MemStore;

    fn inode(ino: u64, name: &str) -> InodeV1 {
        InodeV1 {
            ino,
            name: name.into(),
            tag: None,
            vid: 7,
            parent: None,
            size: 1 << 30,
            copies: 3,
            mode: 0o644,
            uid: 0,
            gid: 0,
            atime: Time::now(),
            mtime: Time::now(),
            ctime: Time::now(),
            crtime: Time::now(),
            snapshot: false,
            unlinked: false,
        }
    }

    #[test]
    fn a_stored_table_loads_back() {
        let store = MemStore::new();
        assert!(load_table(&store).unwrap().inodes.is_empty());
        let t = TableV1 {
            next_ino: 9,
            next_vid: 3,
            inodes: vec![inode(2, "vm0"), inode(3, "vm1")],
        };
        store_table(&store, t.clone()).unwrap();
        assert_eq!(load_table(&store).unwrap(), t);
    }

    #[test]
    fn a_corrupt_table_is_an_error_not_a_panic() {
        let store = MemStore::new();
        store
            .put_atomic(TABLE_OID, b"garbage garbage garbage")
            .unwrap();
        assert!(matches!(load_table(&store), Err(Error::CorruptMeta { .. })));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("vm0.img").is_ok());
        for bad in ["", ".", "..", "a/b", "a@b", "a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(256)).is_err());
        assert_eq!(split_name("vm@snap").unwrap(), ("vm", Some("snap")));
        assert!(split_name("vm@").is_err());
    }
}
