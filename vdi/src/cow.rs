//! Copy-on-write operations: snapshot, clone, rollback and copy_file_range sharing.
//!
//! They all rest on one step, *freezing* a writable VDI: its current VDI id `X` stops being
//! written in place, the VDI continues under a fresh id `Y` whose table is a copy of `X`'s,
//! and every later first write to an index copies that one object into `Y`. A snapshot keeps
//! `X`; a clone or a copy shares `X`'s objects through its own table.

use crate::alloc::AllocTable;
use crate::attr::{Ino, Time, VdiAttr};
use crate::error::{Error, Result};
use crate::inode::{check_name, split_name};
use crate::io::pieces;
use crate::pool::Pool;
use crate::vdi::Vdi;
use sheep_objects::{Oid, Vid, OBJECT_SIZE};
use std::sync::Arc;

impl Pool {
    /// Copies the durable allocation object of `from` to `to` and syncs it.
    fn copy_alloc(&self, from: Vid, to: Vid) -> Result<()> {
        match self.store.copy(Oid::alloc(from), Oid::alloc(to)) {
            Ok(()) => {}
            Err(sheep_objects::Error::NotFound(_)) => self.store.remove(Oid::alloc(to))?,
            Err(e) => return Err(e.into()),
        }
        self.store.sync(&[Oid::alloc(to)])?;
        Ok(())
    }

    /// Flushes a VDI while its writes go on (its gate held shared).
    fn flush_shared(&self, vdi: &Vdi) -> Result<()> {
        let _g = vdi.gate.read();
        self.flush_locked(vdi)
    }

    /// Moves a writable VDI to a fresh id (see the module doc). The caller holds `ns` and the
    /// VDI's gate exclusively, and persists the table. Returns the old id.
    fn freeze(&self, vdi: &Vdi) -> Result<Vid> {
        self.flush_locked(vdi)?;
        let old = vdi.inner.lock().vid();
        let new = self.alloc_vid()?;
        self.copy_alloc(old, new)?;
        let mut inner = vdi.inner.lock();
        inner.rec.vid = new.0;
        inner.rec.parent = Some(old.0);
        Ok(old)
    }

    /// Like [`Pool::freeze`] without flushing the VDI's data first: the new id's table is
    /// written from memory, so it may name objects whose latest writes are not durable yet —
    /// exactly the state of any write not yet fsynced. copy_file_range uses it; the objects
    /// it shares stay in the source's dirty set and are added to the destination's.
    fn freeze_volatile(&self, vdi: &Vdi) -> Result<Vid> {
        let (old, chunks) = {
            let i = vdi.inner.lock();
            let chunks: Vec<(u32, Vec<u8>)> = i
                .table
                .chunk_numbers()
                .into_iter()
                .map(|c| (c, i.table.chunk_bytes(c)))
                .collect();
            (i.vid(), chunks)
        };
        let new = self.alloc_vid()?;
        self.store.remove(Oid::alloc(new))?;
        AllocTable::store_chunks(&*self.store, new, &chunks)?;
        self.store.sync(&[Oid::alloc(new)])?;
        let mut inner = vdi.inner.lock();
        inner.rec.vid = new.0;
        inner.rec.parent = Some(old.0);
        inner.dirty_chunks.clear();
        Ok(old)
    }

    fn unfreeze(&self, vdi: &Vdi, old: Vid) {
        let mut inner = vdi.inner.lock();
        let new = inner.vid();
        inner.rec.vid = old.0;
        // The old table may lag the memory one: write every chunk at the next flush.
        let chunks = inner.table.chunk_numbers();
        inner.dirty_chunks.extend(chunks);
        let _ = self.store.remove(Oid::alloc(new));
    }

    /// Adds a table reference for every allocated entry.
    fn ref_table(&self, table: &AllocTable) {
        let mut refs = self.refs.lock();
        for (idx, owner) in table.iter() {
            refs.inc(Oid::data(owner, idx));
        }
    }

    /// Takes a read-only snapshot `name@tag` of VDI `name` as it is now; writes to the VDI
    /// go on during and after it.
    pub fn snapshot(&self, name: &str, tag: &str) -> Result<VdiAttr> {
        check_name(name)?;
        check_name(tag)?;
        let _ns = self.ns.lock();
        let full = format!("{name}@{tag}");
        if self.names.read().contains_key(&full) {
            return Err(Error::Exists(full));
        }
        let vdi = self.vdi(self.ino_of(name)?)?;
        // Most dirty data is flushed while writes go on; the VDI pauses only for the rest.
        self.flush_shared(&vdi)?;
        let _g = vdi.gate.write();
        let old = self.freeze(&vdi)?;
        let (mut rec, table) = {
            let i = vdi.inner.lock();
            (i.rec.clone(), i.table.clone())
        };
        let now = Time::now();
        rec.ino = self.alloc_ino().0;
        rec.tag = Some(tag.to_owned());
        rec.vid = old.0;
        rec.parent = None;
        rec.snapshot = true;
        (rec.crtime, rec.ctime) = (now, now);
        let ino = rec.ino();
        self.ref_table(&table);
        self.insert_vdi(Vdi::new(rec, table.clone()));
        if let Err(e) = self.persist_table() {
            self.forget_vdi(ino, &full);
            for (idx, owner) in table.iter() {
                self.drop_ref(Oid::data(owner, idx));
            }
            self.unfreeze(&vdi, old);
            return Err(e);
        }
        tracing::info!(name, tag, vid = %old, "took snapshot");
        drop(_g);
        self.getattr(ino)
    }

    /// Creates the writable VDI `dst` sharing every object of `src` (`name` or `name@tag`).
    pub fn clone_vdi(&self, src: &str, dst: &str) -> Result<VdiAttr> {
        split_name(src)?;
        check_name(dst)?;
        let _ns = self.ns.lock();
        if self.names.read().contains_key(dst) {
            return Err(Error::Exists(dst.to_owned()));
        }
        let svdi = self.vdi(self.ino_of(src)?)?;
        self.flush_shared(&svdi)?;
        let _g = svdi.gate.write();
        let frozen = if svdi.inner.lock().rec.snapshot {
            None
        } else {
            Some(self.freeze(&svdi)?)
        };
        let result = self.clone_frozen(&svdi, dst, frozen);
        match (&result, frozen) {
            (Err(_), Some(old)) => self.unfreeze(&svdi, old),
            (Ok(_), Some(old)) => {
                let _ = self.store.remove(Oid::alloc(old));
            }
            _ => {}
        }
        drop(_g);
        let ino = result?;
        tracing::info!(src, dst, "cloned VDI");
        self.getattr(ino)
    }

    fn clone_frozen(&self, svdi: &Vdi, dst: &str, frozen: Option<Vid>) -> Result<Ino> {
        let (mut rec, table) = {
            let i = svdi.inner.lock();
            (i.rec.clone(), i.table.clone())
        };
        let base = frozen.unwrap_or(Vid(rec.vid));
        let vid = self.alloc_vid()?;
        self.copy_alloc(base, vid)?;
        let now = Time::now();
        rec.ino = self.alloc_ino().0;
        rec.name = dst.to_owned();
        rec.tag = None;
        rec.vid = vid.0;
        rec.parent = Some(base.0);
        rec.snapshot = false;
        (rec.atime, rec.mtime, rec.ctime, rec.crtime) = (now, now, now, now);
        let ino = rec.ino();
        self.ref_table(&table);
        self.insert_vdi(Vdi::new(rec, table.clone()));
        if let Err(e) = self.persist_table() {
            self.forget_vdi(ino, dst);
            for (idx, owner) in table.iter() {
                self.drop_ref(Oid::data(owner, idx));
            }
            let _ = self.store.remove(Oid::alloc(vid));
            return Err(e);
        }
        Ok(ino)
    }

    /// Atomically makes VDI `name` equal to its snapshot `name@tag` (the snapshot stays).
    pub fn rollback(&self, name: &str, tag: &str) -> Result<()> {
        check_name(name)?;
        check_name(tag)?;
        let _ns = self.ns.lock();
        let vdi = self.vdi(self.ino_of(name)?)?;
        let snap = self.vdi(self.ino_of(&format!("{name}@{tag}"))?)?;
        let _g = vdi.gate.write();
        let (snap_vid, snap_size, table) = {
            let s = snap.inner.lock();
            (s.vid(), s.rec.size, s.table.clone())
        };
        let vid = self.alloc_vid()?;
        self.copy_alloc(snap_vid, vid)?;
        self.ref_table(&table);
        let (old_vid, old_table, old_size, old_parent) = {
            let mut i = vdi.inner.lock();
            let old = (
                i.vid(),
                std::mem::replace(&mut i.table, table.clone()),
                i.rec.size,
                i.rec.parent,
            );
            i.rec.vid = vid.0;
            i.rec.parent = Some(snap_vid.0);
            i.rec.size = snap_size;
            i.rec.mtime = Time::now();
            i.dirty_chunks.clear();
            i.usage = None;
            old
        };
        if let Err(e) = self.persist_table() {
            let mut i = vdi.inner.lock();
            (i.rec.vid, i.table, i.rec.size, i.rec.parent) =
                (old_vid.0, old_table, old_size, old_parent);
            drop(i);
            for (idx, owner) in table.iter() {
                self.drop_ref(Oid::data(owner, idx));
            }
            let _ = self.store.remove(Oid::alloc(vid));
            return Err(e);
        }
        for (idx, owner) in old_table.iter() {
            self.drop_ref(Oid::data(owner, idx));
        }
        let _ = self.store.remove(Oid::alloc(old_vid));
        tracing::info!(name, tag, "rolled back VDI");
        Ok(())
    }

    /// copy_file_range: whole objects at the same index in both files are shared
    /// copy-on-write, the rest is copied. The copy is point-in-time consistent: both VDIs are
    /// quiesced while it is made. Returns the bytes copied.
    pub fn copy_range(
        &self,
        src: Ino,
        src_off: u64,
        dst: Ino,
        dst_off: u64,
        len: u64,
    ) -> Result<u64> {
        let _ns = self.ns.lock();
        let svdi = self.vdi(src)?;
        let dvdi = self.vdi(dst)?;
        let src_size = svdi.inner.lock().rec.size;
        let len = len.min(src_size.saturating_sub(src_off));
        if len == 0 {
            return Ok(0);
        }
        if dvdi.inner.lock().rec.snapshot {
            return Err(Error::ReadOnly(dvdi.inner.lock().rec.display_name()));
        }
        if src == dst {
            if src_off < dst_off + len && dst_off < src_off + len {
                return Err(Error::Invalid("overlapping copy within one file".into()));
            }
            let _g = svdi.gate.write();
            return self.copy_bytes(&svdi, src_off, &svdi, dst_off, len);
        }
        let (_g1, _g2) = if src < dst {
            let a = svdi.gate.write();
            (a, dvdi.gate.write())
        } else {
            let b = dvdi.gate.write();
            (svdi.gate.write(), b)
        };
        self.copy_locked(&svdi, src_off, &dvdi, dst_off, len)
    }

    fn copy_locked(
        &self,
        svdi: &Arc<Vdi>,
        soff: u64,
        dvdi: &Arc<Vdi>,
        doff: u64,
        len: u64,
    ) -> Result<u64> {
        let shared = self.shareable(svdi, soff, dvdi, doff, len);
        let Some((first, last)) = shared else {
            return self.copy_bytes(svdi, soff, dvdi, doff, len);
        };
        let (a, b) = (
            u64::from(first) * OBJECT_SIZE,
            (u64::from(last) + 1) * OBJECT_SIZE,
        );
        let end = soff + len;
        self.copy_bytes(svdi, soff, dvdi, doff, a.min(end) - soff)?;
        self.share_objects(svdi, dvdi, first, last)?;
        if b < end {
            self.copy_bytes(svdi, b, dvdi, b, end - b)?;
        }
        let mut d = dvdi.inner.lock();
        if d.rec.size < end {
            d.rec.size = end;
            d.rec_dirty = true;
        }
        d.rec.mtime = Time::now();
        Ok(len)
    }

    /// The range of object indexes that can be shared whole, if any.
    fn shareable(
        &self,
        svdi: &Vdi,
        soff: u64,
        dvdi: &Vdi,
        doff: u64,
        len: u64,
    ) -> Option<(u32, u32)> {
        if soff != doff {
            return None;
        }
        let end = soff + len;
        let first = soff.div_ceil(OBJECT_SIZE);
        let src_size = svdi.inner.lock().rec.size;
        let dst_size = dvdi.inner.lock().rec.size;
        // The last object may be shared whole when the copy reaches the source's end and the
        // destination holds nothing after it: past the source's end its object reads zeros.
        let last_end = if end == src_size && dst_size <= end {
            end.div_ceil(OBJECT_SIZE)
        } else {
            end / OBJECT_SIZE
        };
        if last_end <= first {
            return None;
        }
        Some((
            u32::try_from(first).ok()?,
            u32::try_from(last_end - 1).ok()?,
        ))
    }

    /// Points the destination's entries `first..=last` at the source's objects.
    fn share_objects(&self, svdi: &Vdi, dvdi: &Vdi, first: u32, last: u32) -> Result<()> {
        let needs_freeze = {
            let s = svdi.inner.lock();
            !s.rec.snapshot
                && s.table
                    .iter_from(first)
                    .take_while(|(i, _)| *i <= last)
                    .any(|(_, v)| v == s.vid())
        };
        if needs_freeze {
            let old = self.freeze_volatile(svdi)?;
            if let Err(e) = self.persist_table() {
                self.unfreeze(svdi, old);
                return Err(e);
            }
            let _ = self.store.remove(Oid::alloc(old));
        }
        for idx in first..=last {
            let _s = self.stripe(idx).write();
            let (owner, dirty) = {
                let s = svdi.inner.lock();
                let owner = s.table.get(idx);
                (owner, s.dirty_objects.contains(&Oid::data(owner, idx)))
            };
            let prev = {
                let mut d = dvdi.inner.lock();
                if dirty {
                    // The destination's fsync must make the shared content durable too.
                    d.dirty_objects.insert(Oid::data(owner, idx));
                }
                d.set_entry(idx, owner)
            };
            if !owner.is_none() {
                self.refs.lock().inc(Oid::data(owner, idx));
            }
            if !prev.is_none() {
                self.drop_ref(Oid::data(prev, idx));
            }
        }
        Ok(())
    }

    /// Copies bytes through a buffer; both gates are held by the caller.
    fn copy_bytes(&self, svdi: &Vdi, soff: u64, dvdi: &Vdi, doff: u64, len: u64) -> Result<u64> {
        let mut buf = vec![0u8; sheep_objects::OBJECT_BYTES];
        let mut done = 0;
        for p in pieces(soff, len) {
            let n = usize::try_from(p.len).unwrap_or(buf.len());
            let got = self.read_locked(svdi, soff + done, &mut buf[..n])?;
            if got == 0 {
                break;
            }
            if buf[..got].iter().any(|b| *b != 0) {
                self.write_locked(dvdi, doff + done, &buf[..got])?;
            } else {
                self.zero_locked(dvdi, doff + done, got as u64)?;
            }
            done += got as u64;
        }
        Ok(done)
    }

    /// Makes a range read as zeros without allocating, growing the VDI to cover it.
    fn zero_locked(&self, vdi: &Vdi, offset: u64, len: u64) -> Result<()> {
        for p in pieces(offset, len) {
            self.discard_piece(vdi, p)?;
        }
        let mut i = vdi.inner.lock();
        if i.rec.size < offset + len {
            i.rec.size = offset + len;
            i.rec_dirty = true;
        }
        Ok(())
    }
}
