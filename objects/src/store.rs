//! The `ObjectStore` trait: the seam between volumes and storage.

use crate::error::Result;
use crate::oid::{Oid, OBJECT_BYTES};
use crate::placement::mix64;
use std::ops::Range;

/// Bytes of one checksummed block of a data object.
pub const BLOCK_BYTES: usize = 4096;
/// Checksummed blocks in a data object.
pub const OBJECT_BLOCKS: usize = OBJECT_BYTES / BLOCK_BYTES;
/// `crc32c` of a block of zeros (what a hole or a never-written block checks as).
pub const ZERO_BLOCK_CRC: u32 = 0x98f9_4189;
const DIGEST_SEED: u64 = 0x5348_4545_5044_4731; // "SHEEPDG1"

/// The `crc32c` of one block (any length; [`BLOCK_BYTES`] for the canonical digest).
pub fn block_crc(block: &[u8]) -> u32 {
    crc32c::crc32c(block)
}

/// The canonical digest of an object from the `crc32c` of each of its 4 KiB blocks, in order
/// (a hole or a never-written block counts as [`ZERO_BLOCK_CRC`]; a data object has
/// [`OBJECT_BLOCKS`] of them, trailing zero blocks included): a chain of
/// [`mix64`] over the seed and each block's crc.
pub fn digest_of_crcs(crcs: impl IntoIterator<Item = u32>) -> u64 {
    crcs.into_iter()
        .fold(DIGEST_SEED, |h, c| mix64(h ^ u64::from(c)))
}

/// The canonical digest of `content` (an object's bytes from offset 0; everything past its
/// end, up to at least [`OBJECT_BYTES`], reads as zeros).
pub fn digest_of_content(content: &[u8]) -> u64 {
    let blocks = content.len().div_ceil(BLOCK_BYTES).max(OBJECT_BLOCKS);
    digest_of_crcs((0..blocks).map(|i| {
        let start = (i * BLOCK_BYTES).min(content.len());
        let end = ((i + 1) * BLOCK_BYTES).min(content.len());
        if end - start == BLOCK_BYTES {
            block_crc(&content[start..end])
        } else if start == end {
            ZERO_BLOCK_CRC
        } else {
            let mut b = [0u8; BLOCK_BYTES];
            b[..end - start].copy_from_slice(&content[start..end]);
            block_crc(&b)
        }
    }))
}

/// What one copy of an object says about itself: enough to compare copies without reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjectMeta {
    /// The epoch of the copy's last change, as last given to `set_version` (0 if never set).
    pub version: u64,
    /// Digest of the content: equal content (holes read as zeros) gives an equal digest on any
    /// store; computed from the per-block checksums, without reading the data.
    pub digest: u64,
}

/// Space figures of a store, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Total capacity of the file system (or memory budget) holding the store.
    pub capacity: u64,
    /// Free space.
    pub free: u64,
    /// Space used by objects.
    pub used: u64,
}

/// A store of sparse objects, addressed by [`Oid`].
///
/// Objects are sparse: ranges never written read as zeros and take no space. Writes create the
/// object. Writes are not durable until [`ObjectStore::sync`] returns for that object (a volatile
/// write cache); [`ObjectStore::put_atomic`] is durable and atomic on return. The methods block:
/// callers on an async runtime use `spawn_blocking`.
pub trait ObjectStore: Send + Sync + 'static {
    /// Fills `buf` from `offset` of the object; never-written ranges read as zeros.
    fn read(&self, oid: Oid, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Writes `data` at `offset`, creating the object if needed.
    fn write(&self, oid: Oid, offset: u64, data: &[u8]) -> Result<()>;

    /// Writes `data` at `offset` of an object the caller knows exists (an allocated one): a
    /// store that cannot find it fails rather than create it. By default, [`ObjectStore::write`].
    fn write_existing(&self, oid: Oid, offset: u64, data: &[u8]) -> Result<()> {
        self.write(oid, offset, data)
    }

    /// Creates `dst` as a copy of `src` (holes stay holes), replacing any `dst`.
    fn copy(&self, src: Oid, dst: Oid) -> Result<()>;

    /// Turns `offset..offset+len` of an existing object into a hole that reads as zeros.
    fn punch(&self, oid: Oid, offset: u64, len: u64) -> Result<()>;

    /// Deletes the object. Deleting a missing object is not an error.
    fn remove(&self, oid: Oid) -> Result<()>;

    /// Returns true if the object exists.
    fn exists(&self, oid: Oid) -> Result<bool>;

    /// Lists every object id in the store.
    fn list(&self) -> Result<Vec<Oid>>;

    /// Returns the written (data) ranges of the object, sorted and disjoint; empty if missing.
    fn extents(&self, oid: Oid) -> Result<Vec<Range<u64>>>;

    /// Returns the bytes of storage the object takes; 0 if missing.
    fn allocated(&self, oid: Oid) -> Result<u64>;

    /// Makes every acknowledged write to these objects, and their existence, durable.
    fn sync(&self, oids: &[Oid]) -> Result<()>;

    /// Replaces the whole object with `data`, atomically and durably.
    fn put_atomic(&self, oid: Oid, data: &[u8]) -> Result<()>;

    /// Returns the whole content of an object written with `put_atomic`.
    fn get(&self, oid: Oid) -> Result<Vec<u8>>;

    /// Returns capacity, free and used space.
    fn stats(&self) -> Result<StoreStats>;

    /// The version and digest of `oid`; `Error::NotFound` if absent.
    ///
    /// The digest is [`digest_of_content`] of the object's content. Only data objects carry
    /// versions and checksums: other objects report version 0 and a digest computed by
    /// reading them.
    fn meta(&self, oid: Oid) -> Result<ObjectMeta>;

    /// Records the version of `oid` (durable with the object's next `sync`); `NotFound` if absent.
    /// Cheap when unchanged (called after every write).
    ///
    /// Data objects only: for another kind of object, an `Error::Io` of kind `Unsupported`.
    fn set_version(&self, oid: Oid, version: u64) -> Result<()>;

    /// Reads all of `oid` and checks every block against its checksum:
    /// `Error::CorruptObject(oid)` on a mismatch, `NotFound` if absent.
    ///
    /// Objects other than data objects carry no checksums: they are read, never found corrupt.
    fn verify(&self, oid: Oid) -> Result<()>;
}

/// The error of [`ObjectStore::set_version`] on an object that is not a data object.
pub fn unversioned(oid: Oid) -> crate::error::Error {
    crate::error::Error::Io {
        oid,
        source: std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "only data objects carry versions",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zero_block_crc_is_the_crc_of_a_zero_block() {
        assert_eq!(
            block_crc(&[0u8; BLOCK_BYTES]),
            ZERO_BLOCK_CRC,
            "{:#x}",
            block_crc(&[0u8; BLOCK_BYTES])
        );
    }

    #[test]
    fn the_digest_of_content_counts_every_block_of_an_object() {
        let zero = digest_of_crcs(std::iter::repeat_n(ZERO_BLOCK_CRC, OBJECT_BLOCKS));
        assert_eq!(digest_of_content(&[]), zero);
        assert_eq!(digest_of_content(&[0u8; 5000]), zero);
        assert_ne!(digest_of_content(&[1u8]), zero);
        assert_ne!(digest_of_content(&[1u8]), digest_of_content(&[0u8, 1]));
    }
}
