//! The `ObjectStore` trait: the seam between volumes and storage.

use crate::error::Result;
use crate::oid::Oid;
use std::ops::Range;

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

/// What one copy of an object says about itself: enough to compare copies without reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjectMeta {
    /// The epoch of the copy's last change, as last given to `set_version` (0 if never set).
    pub version: u64,
    /// Digest of the content: equal content (holes read as zeros) gives an equal digest on any
    /// store; computed from the per-block checksums, without reading the data.
    pub digest: u64,
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
    fn meta(&self, oid: Oid) -> Result<ObjectMeta>;

    /// Records the version of `oid` (durable with the object's next `sync`); `NotFound` if absent.
    fn set_version(&self, oid: Oid, version: u64) -> Result<()>;

    /// Reads all of `oid` and checks every block against its checksum.
    fn verify(&self, oid: Oid) -> Result<()>;
}
