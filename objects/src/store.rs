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
}
