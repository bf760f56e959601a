//! A store wrapper that injects failures, for tests of error paths.

use crate::error::{Error, Result};
use crate::oid::Oid;
use crate::store::{ObjectStore, StoreStats};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Wraps a store; each switch makes one kind of call fail with an I/O error until cleared.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    /// `sync` fails (as `fsync` does after a write-back error).
    pub fail_sync: AtomicBool,
    /// `write` fails.
    pub fail_write: AtomicBool,
    /// `write` fails with "no space".
    pub full: AtomicBool,
    /// `write` and `copy` into objects that do not exist yet fail with "no space", as on a
    /// full file system where overwriting allocated blocks still works.
    pub full_for_new: AtomicBool,
}

impl FaultyStore {
    /// Wraps `inner` with every fault off.
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultyStore {
        FaultyStore {
            inner,
            fail_sync: AtomicBool::new(false),
            fail_write: AtomicBool::new(false),
            full: AtomicBool::new(false),
            full_for_new: AtomicBool::new(false),
        }
    }

    fn injected(oid: Oid) -> Error {
        Error::io(oid, std::io::Error::from_raw_os_error(nix::libc::EIO))
    }
}

impl ObjectStore for FaultyStore {
    fn meta(&self, oid: Oid) -> Result<crate::store::ObjectMeta> {
        self.inner.meta(oid)
    }
    fn set_version(&self, oid: Oid, version: u64) -> Result<()> {
        self.inner.set_version(oid, version)
    }
    fn verify(&self, oid: Oid) -> Result<()> {
        self.inner.verify(oid)
    }
    fn read(&self, oid: Oid, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read(oid, offset, buf)
    }

    fn write(&self, oid: Oid, offset: u64, data: &[u8]) -> Result<()> {
        if self.full_for_new.load(Ordering::SeqCst) && !self.inner.exists(oid)? {
            return Err(Error::NoSpace);
        }
        if self.full.load(Ordering::SeqCst) {
            return Err(Error::NoSpace);
        }
        if self.fail_write.load(Ordering::SeqCst) {
            return Err(Self::injected(oid));
        }
        self.inner.write(oid, offset, data)
    }

    fn copy(&self, src: Oid, dst: Oid) -> Result<()> {
        if self.full.load(Ordering::SeqCst) || self.full_for_new.load(Ordering::SeqCst) {
            return Err(Error::NoSpace);
        }
        self.inner.copy(src, dst)
    }

    fn punch(&self, oid: Oid, offset: u64, len: u64) -> Result<()> {
        self.inner.punch(oid, offset, len)
    }

    fn remove(&self, oid: Oid) -> Result<()> {
        self.inner.remove(oid)
    }

    fn exists(&self, oid: Oid) -> Result<bool> {
        self.inner.exists(oid)
    }

    fn list(&self) -> Result<Vec<Oid>> {
        self.inner.list()
    }

    fn extents(&self, oid: Oid) -> Result<Vec<Range<u64>>> {
        self.inner.extents(oid)
    }

    fn allocated(&self, oid: Oid) -> Result<u64> {
        self.inner.allocated(oid)
    }

    fn sync(&self, oids: &[Oid]) -> Result<()> {
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(Self::injected(oids.first().copied().unwrap_or(Oid(0))));
        }
        self.inner.sync(oids)
    }

    fn put_atomic(&self, oid: Oid, data: &[u8]) -> Result<()> {
        self.inner.put_atomic(oid, data)
    }

    fn get(&self, oid: Oid) -> Result<Vec<u8>> {
        self.inner.get(oid)
    }

    fn stats(&self) -> Result<StoreStats> {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemStore;

    #[test]
    fn faultystore_without_faults_passes_the_conformance_suite() {
        crate::conformance::run_all(&|| Box::new(FaultyStore::new(Arc::new(MemStore::new()))));
    }

    #[test]
    fn switched_faults_fail_their_calls() {
        let s = FaultyStore::new(Arc::new(MemStore::new()));
        s.full.store(true, Ordering::SeqCst);
        assert!(matches!(s.write(Oid(1), 0, b"x"), Err(Error::NoSpace)));
        s.full.store(false, Ordering::SeqCst);
        s.write(Oid(1), 0, b"x").unwrap();
        s.fail_sync.store(true, Ordering::SeqCst);
        assert!(matches!(s.sync(&[Oid(1)]), Err(Error::Io { .. })));
    }
}
