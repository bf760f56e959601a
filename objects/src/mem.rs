//! An in-memory object store that can simulate a crash.
//!
//! Every object keeps its current content and the content that was last made durable by
//! `sync` or `put_atomic`. [`MemStore::crash`] throws away everything that was not durable,
//! removals included, which is the harshest behaviour a local file system may show.

use crate::error::{Error, Result};
use crate::oid::Oid;
use crate::store::{ObjectStore, StoreStats};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

const PAGE: u64 = 4096;
const PAGE_BYTES: usize = 4096;

/// The offset of `pos` inside its page (always below 4096, so the cast is lossless).
#[allow(clippy::cast_possible_truncation)]
fn in_page_offset(pos: u64) -> usize {
    (pos % PAGE) as usize
}

/// Sparse object content: 4 KiB pages, absent pages read as zeros.
#[derive(Clone, Default, Debug)]
struct MemObj {
    pages: BTreeMap<u64, Arc<[u8; PAGE_BYTES]>>,
    len: u64,
}

impl MemObj {
    fn read(&self, offset: u64, buf: &mut [u8]) {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (page, in_page) = (pos / PAGE, in_page_offset(pos));
            let n = (PAGE_BYTES - in_page).min(buf.len() - done);
            match self.pages.get(&page) {
                Some(p) => buf[done..done + n].copy_from_slice(&p[in_page..in_page + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let (page, in_page) = (pos / PAGE, in_page_offset(pos));
            let n = (PAGE_BYTES - in_page).min(data.len() - done);
            let p = self
                .pages
                .entry(page)
                .or_insert_with(|| Arc::new([0u8; PAGE_BYTES]));
            Arc::make_mut(p)[in_page..in_page + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        self.len = self.len.max(offset + data.len() as u64);
    }

    fn punch(&mut self, offset: u64, len: u64) {
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let page = pos / PAGE;
            let page_end = (page + 1) * PAGE;
            let n = page_end.min(end) - pos;
            if n == PAGE {
                self.pages.remove(&page);
            } else if let Some(p) = self.pages.get_mut(&page) {
                let s = in_page_offset(pos);
                Arc::make_mut(p)[s..s + in_page_offset(n)].fill(0);
            }
            pos += n;
        }
    }

    fn extents(&self) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for &p in self.pages.keys() {
            let r = p * PAGE..(p + 1) * PAGE;
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }
}

#[derive(Default)]
struct Slot {
    current: Option<MemObj>,
    durable: Option<MemObj>,
}

/// An in-memory [`ObjectStore`], for tests and the reference model.
#[derive(Default)]
pub struct MemStore {
    objects: Mutex<HashMap<Oid, Slot>>,
    capacity: u64,
}

impl MemStore {
    /// Returns an empty store reporting 1 TiB of capacity.
    pub fn new() -> MemStore {
        MemStore::with_capacity(1 << 40)
    }

    /// Returns an empty store that refuses to grow past `capacity` bytes.
    pub fn with_capacity(capacity: u64) -> MemStore {
        MemStore {
            objects: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Simulates a power loss: every change not made durable is lost.
    pub fn crash(&self) {
        let mut objects = self.objects.lock();
        objects.retain(|_, slot| {
            slot.current = slot.durable.clone();
            slot.current.is_some()
        });
    }

    /// Number of objects currently held.
    pub fn len(&self) -> usize {
        self.objects
            .lock()
            .values()
            .filter(|s| s.current.is_some())
            .count()
    }

    /// Returns true when no object is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn used_locked(objects: &HashMap<Oid, Slot>) -> u64 {
        objects
            .values()
            .filter_map(|s| s.current.as_ref())
            .map(|o| o.pages.len() as u64 * PAGE)
            .sum()
    }
}

impl ObjectStore for MemStore {
    // TEMP-MAIN: replaced by the store helper's implementation.
    fn meta(&self, oid: Oid) -> Result<crate::store::ObjectMeta> {
        if !self.exists(oid)? {
            return Err(crate::error::Error::NotFound(oid));
        }
        let mut buf = Vec::new();
        for r in self.extents(oid)? {
            let mut b = vec![0u8; usize::try_from(r.end - r.start).unwrap_or(0)];
            self.read(oid, r.start, &mut b)?;
            if b.iter().any(|x| *x != 0) {
                buf.extend_from_slice(&r.start.to_le_bytes());
                buf.extend_from_slice(&b);
            }
        }
        let version = temp_versions()
            .lock()
            .get(&(self as *const _ as *const u8 as usize, oid))
            .copied()
            .unwrap_or(0);
        Ok(crate::store::ObjectMeta {
            version,
            digest: {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                buf.hash(&mut h);
                h.finish()
            },
        })
    }
    fn set_version(&self, oid: Oid, version: u64) -> Result<()> {
        temp_versions()
            .lock()
            .insert((self as *const _ as *const u8 as usize, oid), version);
        Ok(())
    }
    fn verify(&self, _oid: Oid) -> Result<()> {
        Ok(())
    }

    fn read(&self, oid: Oid, offset: u64, buf: &mut [u8]) -> Result<()> {
        let objects = self.objects.lock();
        let obj = objects
            .get(&oid)
            .and_then(|s| s.current.as_ref())
            .ok_or(Error::NotFound(oid))?;
        obj.read(offset, buf);
        Ok(())
    }

    fn write(&self, oid: Oid, offset: u64, data: &[u8]) -> Result<()> {
        let mut objects = self.objects.lock();
        if Self::used_locked(&objects) + data.len() as u64 > self.capacity {
            return Err(Error::NoSpace);
        }
        let slot = objects.entry(oid).or_default();
        slot.current
            .get_or_insert_with(MemObj::default)
            .write(offset, data);
        Ok(())
    }

    fn copy(&self, src: Oid, dst: Oid) -> Result<()> {
        let mut objects = self.objects.lock();
        let obj = objects
            .get(&src)
            .and_then(|s| s.current.clone())
            .ok_or(Error::NotFound(src))?;
        objects.entry(dst).or_default().current = Some(obj);
        Ok(())
    }

    fn punch(&self, oid: Oid, offset: u64, len: u64) -> Result<()> {
        let mut objects = self.objects.lock();
        let obj = objects
            .get_mut(&oid)
            .and_then(|s| s.current.as_mut())
            .ok_or(Error::NotFound(oid))?;
        obj.punch(offset, len);
        Ok(())
    }

    fn remove(&self, oid: Oid) -> Result<()> {
        if let Some(slot) = self.objects.lock().get_mut(&oid) {
            slot.current = None;
        }
        Ok(())
    }

    fn exists(&self, oid: Oid) -> Result<bool> {
        Ok(self
            .objects
            .lock()
            .get(&oid)
            .is_some_and(|s| s.current.is_some()))
    }

    fn list(&self) -> Result<Vec<Oid>> {
        let objects = self.objects.lock();
        let mut out: Vec<Oid> = objects
            .iter()
            .filter(|(_, s)| s.current.is_some())
            .map(|(o, _)| *o)
            .collect();
        out.sort();
        Ok(out)
    }

    fn extents(&self, oid: Oid) -> Result<Vec<Range<u64>>> {
        let objects = self.objects.lock();
        Ok(objects
            .get(&oid)
            .and_then(|s| s.current.as_ref())
            .map(MemObj::extents)
            .unwrap_or_default())
    }

    fn allocated(&self, oid: Oid) -> Result<u64> {
        let objects = self.objects.lock();
        Ok(objects
            .get(&oid)
            .and_then(|s| s.current.as_ref())
            .map_or(0, |o| o.pages.len() as u64 * PAGE))
    }

    fn sync(&self, oids: &[Oid]) -> Result<()> {
        let mut objects = self.objects.lock();
        for oid in oids {
            if let Some(slot) = objects.get_mut(oid) {
                slot.durable = slot.current.clone();
            }
        }
        objects.retain(|_, s| s.current.is_some() || s.durable.is_some());
        Ok(())
    }

    fn put_atomic(&self, oid: Oid, data: &[u8]) -> Result<()> {
        let mut obj = MemObj::default();
        obj.write(0, data);
        let mut objects = self.objects.lock();
        let slot = objects.entry(oid).or_default();
        slot.current = Some(obj.clone());
        slot.durable = Some(obj);
        Ok(())
    }

    fn get(&self, oid: Oid) -> Result<Vec<u8>> {
        let objects = self.objects.lock();
        let obj = objects
            .get(&oid)
            .and_then(|s| s.current.as_ref())
            .ok_or(Error::NotFound(oid))?;
        let len = usize::try_from(obj.len).map_err(|_| Error::CorruptObject(oid))?;
        let mut buf = vec![0u8; len];
        obj.read(0, &mut buf);
        Ok(buf)
    }

    fn stats(&self) -> Result<StoreStats> {
        let used = Self::used_locked(&self.objects.lock());
        Ok(StoreStats {
            capacity: self.capacity,
            free: self.capacity.saturating_sub(used),
            used,
        })
    }
}

// TEMP-MAIN
fn temp_versions() -> &'static parking_lot::Mutex<std::collections::HashMap<(usize, Oid), u64>> {
    static V: std::sync::OnceLock<
        parking_lot::Mutex<std::collections::HashMap<(usize, Oid), u64>>,
    > = std::sync::OnceLock::new();
    V.get_or_init(Default::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memstore_passes_the_conformance_suite() {
        crate::conformance::run_all(&|| Box::new(MemStore::new()));
    }

    #[test]
    fn crash_drops_unsynced_writes_and_keeps_synced_ones() {
        let s = MemStore::new();
        let (a, b) = (Oid(1), Oid(2));
        s.write(a, 0, b"durable").unwrap();
        s.sync(&[a]).unwrap();
        s.write(a, 0, b"volatil").unwrap();
        s.write(b, 0, b"gone").unwrap();
        s.crash();
        let mut buf = [0u8; 7];
        s.read(a, 0, &mut buf).unwrap();
        assert_eq!(&buf, b"durable");
        assert!(!s.exists(b).unwrap());
    }

    #[test]
    fn a_removal_not_synced_is_undone_by_a_crash() {
        let s = MemStore::new();
        s.write(Oid(1), 0, b"x").unwrap();
        s.sync(&[Oid(1)]).unwrap();
        s.remove(Oid(1)).unwrap();
        s.crash();
        assert!(s.exists(Oid(1)).unwrap());
        s.remove(Oid(1)).unwrap();
        s.sync(&[Oid(1)]).unwrap();
        s.crash();
        assert!(!s.exists(Oid(1)).unwrap());
    }
}
