//! An in-memory object store that can simulate a crash.
//!
//! Every object keeps its current content and the content that was last made durable by
//! `sync` or `put_atomic`. [`MemStore::crash`] throws away everything that was not durable,
//! removals included, which is the harshest behaviour a local file system may show.
//!
//! A data object's version lives with its content (so a crash forgets a version not synced);
//! its digest is computed from the content on demand. [`MemStore::corrupt`] flips a byte as a
//! bad disk would: the block it is in then fails its check (`CorruptObject`) on read, on
//! `verify` and on a write or punch that keeps part of it, until a write covers it whole.

use crate::error::{Error, Result};
use crate::oid::ObjectKind;
use crate::oid::Oid;
use crate::store::{
    block_crc, digest_of_crcs, unversioned, ObjectMeta, ObjectStore, StoreStats, OBJECT_BLOCKS,
    ZERO_BLOCK_CRC,
};
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
    version: u64,
    /// Pages whose content was damaged by [`MemStore::corrupt`], with the crc of what they
    /// held before.
    corrupt: BTreeMap<u64, u32>,
}

impl MemObj {
    /// Fails if a page of `offset..offset+len` is corrupt; with `whole_ok`, pages the range
    /// covers whole do not count (they are about to be replaced).
    fn check(&self, oid: Oid, offset: u64, len: u64, whole_ok: bool) -> Result<()> {
        if self.corrupt.is_empty() || len == 0 {
            return Ok(());
        }
        let end = offset + len;
        for (&page, _) in self.corrupt.range(offset / PAGE..end.div_ceil(PAGE)) {
            let covered = offset <= page * PAGE && (page + 1) * PAGE <= end;
            if !(whole_ok && covered) {
                return Err(Error::CorruptObject(oid));
            }
        }
        Ok(())
    }

    /// Forgets the damage of pages `offset..offset+len` covers whole.
    fn heal(&mut self, offset: u64, len: u64) {
        if self.corrupt.is_empty() {
            return;
        }
        let first = offset.div_ceil(PAGE);
        let last = (offset + len) / PAGE;
        let healed: Vec<u64> = self
            .corrupt
            .range(first..last.max(first))
            .map(|(&p, _)| p)
            .collect();
        for p in healed {
            self.corrupt.remove(&p);
        }
    }

    fn digest(&self) -> u64 {
        let blocks = usize::try_from(self.len.div_ceil(PAGE))
            .unwrap_or(usize::MAX)
            .max(OBJECT_BLOCKS) as u64;
        digest_of_crcs((0..blocks).map(|i| {
            if let Some(&c) = self.corrupt.get(&i) {
                return c;
            }
            self.pages
                .get(&i)
                .map_or(ZERO_BLOCK_CRC, |p| block_crc(&p[..]))
        }))
    }

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

    /// Flips a byte at `offset` of `oid`, as a bad disk would: the 4 KiB block holding it
    /// now fails its check. `NotFound` if the object is absent.
    pub fn corrupt(&self, oid: Oid, offset: u64) -> Result<()> {
        let mut objects = self.objects.lock();
        let obj = objects
            .get_mut(&oid)
            .and_then(|s| s.current.as_mut())
            .ok_or(Error::NotFound(oid))?;
        let page = offset / PAGE;
        let entry = obj
            .pages
            .entry(page)
            .or_insert_with(|| Arc::new([0u8; PAGE_BYTES]));
        let before = block_crc(&entry[..]);
        Arc::make_mut(entry)[in_page_offset(offset)] ^= 0x5a;
        obj.corrupt.entry(page).or_insert(before);
        Ok(())
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
    fn read(&self, oid: Oid, offset: u64, buf: &mut [u8]) -> Result<()> {
        let objects = self.objects.lock();
        let obj = objects
            .get(&oid)
            .and_then(|s| s.current.as_ref())
            .ok_or(Error::NotFound(oid))?;
        obj.check(oid, offset, buf.len() as u64, false)?;
        obj.read(offset, buf);
        Ok(())
    }

    fn write(&self, oid: Oid, offset: u64, data: &[u8]) -> Result<()> {
        let mut objects = self.objects.lock();
        if Self::used_locked(&objects) + data.len() as u64 > self.capacity {
            return Err(Error::NoSpace);
        }
        let slot = objects.entry(oid).or_default();
        let obj = slot.current.get_or_insert_with(MemObj::default);
        obj.check(oid, offset, data.len() as u64, true)?;
        obj.heal(offset, data.len() as u64);
        obj.write(offset, data);
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
        obj.check(oid, offset, len, true)?;
        obj.heal(offset, len);
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

    fn meta(&self, oid: Oid) -> Result<ObjectMeta> {
        let objects = self.objects.lock();
        let obj = objects
            .get(&oid)
            .and_then(|s| s.current.as_ref())
            .ok_or(Error::NotFound(oid))?;
        Ok(ObjectMeta {
            version: obj.version,
            digest: obj.digest(),
        })
    }

    fn set_version(&self, oid: Oid, version: u64) -> Result<()> {
        let mut objects = self.objects.lock();
        let obj = objects
            .get_mut(&oid)
            .and_then(|s| s.current.as_mut())
            .ok_or(Error::NotFound(oid))?;
        if oid.kind() != ObjectKind::Data {
            return Err(unversioned(oid));
        }
        obj.version = version;
        Ok(())
    }

    fn verify(&self, oid: Oid) -> Result<()> {
        let objects = self.objects.lock();
        let obj = objects
            .get(&oid)
            .and_then(|s| s.current.as_ref())
            .ok_or(Error::NotFound(oid))?;
        if obj.corrupt.is_empty() {
            Ok(())
        } else {
            Err(Error::CorruptObject(oid))
        }
    }
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
    fn a_corrupted_block_fails_its_reads_until_rewritten_whole() {
        let s = MemStore::new();
        let o = Oid(1);
        s.write(o, 0, &[3u8; 3 * 4096]).unwrap();
        let before = s.meta(o).unwrap();
        s.corrupt(o, 4096 + 9).unwrap();
        let mut buf = vec![0u8; 4096];
        s.read(o, 0, &mut buf).unwrap();
        s.read(o, 8192, &mut buf).unwrap();
        assert!(matches!(
            s.read(o, 4000, &mut buf),
            Err(Error::CorruptObject(_))
        ));
        assert!(matches!(s.verify(o), Err(Error::CorruptObject(_))));
        assert_eq!(s.meta(o).unwrap(), before, "the digest is what was written");
        assert!(matches!(
            s.write(o, 4097, b"x"),
            Err(Error::CorruptObject(_))
        ));
        s.write(o, 4096, &[3u8; 4096]).unwrap();
        s.verify(o).unwrap();
        s.read(o, 4000, &mut buf).unwrap();
        assert!(matches!(s.corrupt(Oid(2), 0), Err(Error::NotFound(_))));
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
