//! The one directory of the mount and its `readdir` offsets.
//!
//! Offsets are stable across calls without per-handle state: `.` is 1, `..` is 2 and a VDI's
//! offset is its inode number plus 2, with entries returned in inode order. A `readdir` that
//! resumes at offset `o` returns the entries whose offset is greater than `o`, so VDIs created or
//! removed between two calls never make the listing repeat or skip a VDI that stayed.

use fuser::{FileType, INodeNo};
use sheep_vdi::{Ino, VdiAttr};

/// One entry of the root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number.
    pub ino: INodeNo,
    /// Offset of the entry after this one's position (what the kernel resumes from).
    pub offset: u64,
    /// File type.
    pub kind: FileType,
    /// Name.
    pub name: String,
}

/// Offset of the VDI with inode `ino`.
fn vdi_offset(ino: Ino) -> u64 {
    ino.0.saturating_add(2)
}

/// The entries of the root directory after `offset`, given every VDI (in any order).
pub fn entries_after(mut vdis: Vec<VdiAttr>, offset: u64) -> Vec<DirEntry> {
    let mut out = Vec::new();
    for (off, name) in [(1, "."), (2, "..")] {
        if offset < off {
            out.push(DirEntry {
                ino: INodeNo::ROOT,
                offset: off,
                kind: FileType::Directory,
                name: name.to_owned(),
            });
        }
    }
    vdis.retain(|v| vdi_offset(v.ino) > offset);
    vdis.sort_by_key(|v| v.ino);
    out.extend(vdis.into_iter().map(|v| DirEntry {
        ino: INodeNo(v.ino.0),
        offset: vdi_offset(v.ino),
        kind: FileType::RegularFile,
        name: v.name,
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheep_objects::Vid;
    use sheep_vdi::Time;

    fn vdi(ino: u64, name: &str) -> VdiAttr {
        VdiAttr {
            ino: Ino(ino),
            name: name.into(),
            base: name.into(),
            tag: None,
            vid: Vid(1),
            parent: None,
            size: 0,
            allocated: 0,
            shared: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            atime: Time::default(),
            mtime: Time::default(),
            ctime: Time::default(),
            crtime: Time::default(),
            copies: 1,
            snapshot: false,
        }
    }

    fn names(entries: &[DirEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn a_listing_starts_with_dot_and_dotdot_then_vdis_in_inode_order() {
        let all = entries_after(vec![vdi(9, "b"), vdi(3, "a@t"), vdi(5, "a")], 0);
        assert_eq!(names(&all), [".", "..", "a@t", "a", "b"]);
        let offsets: Vec<u64> = all.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [1, 2, 5, 7, 11]);
    }

    #[test]
    fn resuming_after_an_entry_skips_it_even_when_others_come_and_go() {
        let first = entries_after(vec![vdi(3, "a"), vdi(5, "b"), vdi(9, "c")], 0);
        let resume = first[3].offset; // after "b"
        let rest = entries_after(vec![vdi(3, "a"), vdi(4, "new"), vdi(9, "c")], resume);
        assert_eq!(names(&rest), ["c"]);
    }

    #[test]
    fn an_offset_past_the_end_gives_nothing() {
        assert!(entries_after(vec![vdi(3, "a")], 5).is_empty());
    }
}
