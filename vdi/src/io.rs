//! Data I/O: read, write, discard and the data/hole map.

use crate::attr::{Ino, Time};
use crate::cmd::Cmd;
use crate::error::{Error, Result};
use crate::pool::{Pool, MAX_VDI_SIZE};
use crate::vdi::Vdi;
use sheep_objects::{Oid, Vid, OBJECT_SIZE};
use std::ops::Range;

/// One piece of a byte range that falls inside a single object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) idx: u32,
    /// Offset inside the object.
    pub(crate) off: u64,
    pub(crate) len: u64,
    /// Offset of the piece inside the caller's buffer.
    pub(crate) pos: usize,
}

/// Splits `offset..offset+len` at object boundaries.
pub(crate) fn pieces(offset: u64, len: u64) -> impl Iterator<Item = Piece> {
    let end = offset + len;
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let idx = at / OBJECT_SIZE;
        let off = at % OBJECT_SIZE;
        let n = (OBJECT_SIZE - off).min(end - at);
        let p = Piece {
            idx: u32::try_from(idx).unwrap_or(u32::MAX),
            off,
            len: n,
            pos: usize::try_from(at - offset).unwrap_or(usize::MAX),
        };
        at += n;
        Some(p)
    })
}

fn span(p: &Piece) -> Range<usize> {
    p.pos..p.pos + usize::try_from(p.len).unwrap_or(usize::MAX)
}

impl Pool {
    /// Reads at `offset`; returns the bytes read (short only at the end of the VDI).
    pub fn read(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let vdi = self.vdi(ino)?;
        let _g = vdi.gate_shared()?;
        self.read_locked(&vdi, offset, buf)
    }

    /// Reads from a VDI whose gate the caller holds.
    pub(crate) fn read_locked(&self, vdi: &Vdi, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let size = vdi.inner.lock().rec.size;
        if offset >= size {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(size - offset);
        for p in pieces(offset, len) {
            let _s = self.stripe(p.idx).read();
            let owner = vdi.inner.lock().table.get(p.idx);
            let dst = &mut buf[span(&p)];
            if owner.is_none() {
                dst.fill(0);
            } else {
                self.store.read(Oid::data(owner, p.idx), p.off, dst)?;
            }
        }
        usize::try_from(len).map_err(|_| Error::Invalid("read length".into()))
    }

    /// Writes at `offset`, growing the VDI if the write ends past its size.
    pub fn write(&self, ino: Ino, offset: u64, data: &[u8]) -> Result<usize> {
        let vdi = self.vdi(ino)?;
        let _g = self.owned_gate(&vdi)?;
        self.write_locked(&vdi, offset, data)
    }

    /// Takes the VDI's gate shared with this host as its owner (claiming it if needed). The
    /// usual case, a VDI this host already writes, costs the gate and one look at `inner`.
    pub(crate) fn owned_gate<'a>(
        &self,
        vdi: &'a Vdi,
    ) -> Result<parking_lot::RwLockReadGuard<'a, ()>> {
        loop {
            let g = vdi.gate_shared()?;
            {
                let i = vdi.inner.lock();
                if i.rec.snapshot {
                    return Err(Error::ReadOnly(i.rec.display_name()));
                }
                if i.owner == Some(self.me) {
                    return Ok(g);
                }
            }
            drop(g);
            self.claim(vdi)?;
        }
    }

    /// Takes the VDI's gate exclusively with this host as its owner.
    pub(crate) fn owned_gate_mut<'a>(
        &self,
        vdi: &'a Vdi,
    ) -> Result<parking_lot::RwLockWriteGuard<'a, ()>> {
        loop {
            self.claim(vdi)?;
            let g = vdi.gate_exclusive()?;
            if vdi.inner.lock().owner == Some(self.me) {
                return Ok(g);
            }
        }
    }

    /// Writes to a VDI whose gate the caller holds.
    pub(crate) fn write_locked(&self, vdi: &Vdi, offset: u64, data: &[u8]) -> Result<usize> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= MAX_VDI_SIZE)
            .ok_or(Error::TooBig(offset.saturating_add(data.len() as u64)))?;
        let (ino, grows) = {
            let mut inner = vdi.inner.lock();
            if inner.rec.snapshot {
                return Err(Error::ReadOnly(inner.rec.display_name()));
            }
            inner.check_failed()?;
            let now = Time::now();
            inner.rec.mtime = now;
            inner.rec.ctime = now;
            inner.mtime_dirty = true;
            (inner.rec.ino, end > inner.rec.size)
        };
        let mut done = data.len();
        for p in pieces(offset, data.len() as u64) {
            if let Err(e) = self.write_piece(vdi, p, &data[span(&p)]) {
                // A short write when part of it landed; the caller retries the rest and gets
                // the error then.
                if p.pos == 0 {
                    return Err(e);
                }
                done = p.pos;
                break;
            }
        }
        if grows {
            let size = offset + done as u64;
            self.submit(Cmd::Extend {
                ino,
                size,
                time: Time::now(),
            })?;
        }
        Ok(done)
    }

    /// Writes inside one object: in place when this VDI owns it, else allocates it or copies
    /// the shared object first (copy-on-write, of that one object only).
    fn write_piece(&self, vdi: &Vdi, p: Piece, data: &[u8]) -> Result<()> {
        {
            let _s = self.stripe(p.idx).read();
            let (vid, owner) = owner_of(vdi, p.idx);
            if owner == vid {
                return self.write_owned(vdi, Oid::data(vid, p.idx), p.off, data);
            }
        }
        let _s = self.stripe(p.idx).write();
        let (vid, owner) = owner_of(vdi, p.idx);
        let oid = Oid::data(vid, p.idx);
        if owner == vid {
            return self.write_owned(vdi, oid, p.off, data);
        }
        self.take_object(vdi, p.idx, vid, owner, Some((p.off, data)))?;
        Ok(())
    }

    fn write_owned(&self, vdi: &Vdi, oid: Oid, off: u64, data: &[u8]) -> Result<()> {
        self.store.write_existing(oid, off, data)?;
        vdi.inner.lock().mark_written(oid);
        Ok(())
    }

    /// Makes `idx` owned by `vid`: a fresh empty object, or a copy of the shared one, with
    /// `first` written into it. The table points at the new object only once every copy holds
    /// all of that durably, so a failure (a full disk) or a crash leaves the old state
    /// readable. The caller holds the stripe of `idx` exclusively and owns the VDI.
    pub(crate) fn take_object(
        &self,
        vdi: &Vdi,
        idx: u32,
        vid: Vid,
        owner: Vid,
        first: Option<(u64, &[u8])>,
    ) -> Result<()> {
        let oid = Oid::data(vid, idx);
        let made = if owner.is_none() {
            // Leftovers of a crash or of a reclaim still pending must not show through.
            self.store.remove(oid).and_then(|()| match first {
                Some((off, data)) => self.store.write(oid, off, data),
                None => self.store.write(oid, 0, &[]),
            })
        } else {
            self.store
                .copy(Oid::data(owner, idx), oid)
                .and_then(|()| first.map_or(Ok(()), |(off, data)| self.store.write(oid, off, data)))
        };
        let made = made.and_then(|()| self.store.sync(&[oid]));
        if let Err(e) = made {
            let _ = self.store.remove(oid);
            return Err(e.into());
        }
        let ino = vdi.inner.lock().rec.ino;
        if let Err(e) = self.submit(Cmd::SetEntries {
            ino,
            vid: vid.0,
            entries: vec![(idx, owner.0, vid.0)],
        }) {
            // A log that did not answer in time (`Unavailable`) may still order the entry
            // later: the object must then be there. Left in place, it is only garbage if the
            // entry never lands (the next allocation of this index removes it first).
            if !matches!(e, Error::Unavailable(_)) {
                let _ = self.store.remove(oid);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Frees `offset..offset+len`: it reads as zeros afterwards; the size does not change.
    pub fn discard(&self, ino: Ino, offset: u64, len: u64) -> Result<()> {
        let vdi = self.vdi(ino)?;
        let _g = self.owned_gate(&vdi)?;
        let end = offset.saturating_add(len).min(MAX_VDI_SIZE);
        for p in pieces(offset, end.saturating_sub(offset)) {
            self.discard_piece(&vdi, p)?;
        }
        Ok(())
    }

    pub(crate) fn discard_piece(&self, vdi: &Vdi, p: Piece) -> Result<()> {
        let _s = self.stripe(p.idx).write();
        let (vid, owner) = owner_of(vdi, p.idx);
        if owner.is_none() {
            return Ok(());
        }
        if p.len == OBJECT_SIZE {
            let ino = vdi.inner.lock().rec.ino;
            self.submit(Cmd::SetEntries {
                ino,
                vid: vid.0,
                entries: vec![(p.idx, owner.0, 0)],
            })?;
            return Ok(());
        }
        if owner != vid {
            self.take_object(vdi, p.idx, vid, owner, None)?;
        }
        let oid = Oid::data(vid, p.idx);
        self.store.punch(oid, p.off, p.len)?;
        vdi.inner.lock().mark_written(oid);
        Ok(())
    }

    /// First offset at or after `offset` that holds data (SEEK_DATA); `None` if none.
    pub fn seek_data(&self, ino: Ino, offset: u64) -> Result<Option<u64>> {
        let vdi = self.vdi(ino)?;
        let _g = vdi.gate_shared()?;
        let (size, entries) = entries_from(&vdi, offset);
        for (idx, owner) in entries {
            let base = u64::from(idx) * OBJECT_SIZE;
            let from = offset.saturating_sub(base);
            for ext in self.store.extents(Oid::data(owner, idx))? {
                if ext.end > from {
                    let at = base + ext.start.max(from);
                    return Ok((at < size).then_some(at));
                }
            }
        }
        Ok(None)
    }

    /// First offset at or after `offset` inside a hole (SEEK_HOLE); the size if there is none.
    pub fn seek_hole(&self, ino: Ino, offset: u64) -> Result<u64> {
        let vdi = self.vdi(ino)?;
        let _g = vdi.gate_shared()?;
        let (size, entries) = entries_from(&vdi, offset);
        let mut at = offset;
        for (idx, owner) in entries {
            let base = u64::from(idx) * OBJECT_SIZE;
            if base > at {
                break;
            }
            let mut pos = at - base;
            for ext in self.store.extents(Oid::data(owner, idx))? {
                if ext.start > pos {
                    break;
                }
                pos = pos.max(ext.end);
            }
            at = base + pos.min(OBJECT_SIZE);
            if pos < OBJECT_SIZE {
                break;
            }
        }
        Ok(at.min(size))
    }
}

fn owner_of(vdi: &Vdi, idx: u32) -> (Vid, Vid) {
    let inner = vdi.inner.lock();
    (inner.vid(), inner.table.get(idx))
}

/// The size and the allocated entries from the object holding `offset` on.
fn entries_from(vdi: &Vdi, offset: u64) -> (u64, Vec<(u32, Vid)>) {
    let inner = vdi.inner.lock();
    let first = u32::try_from(offset / OBJECT_SIZE).unwrap_or(u32::MAX);
    let end = inner.rec.size.div_ceil(OBJECT_SIZE);
    let entries = inner
        .table
        .iter_from(first)
        .take_while(|(i, _)| u64::from(*i) < end)
        .collect();
    (inner.rec.size, entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_split_at_object_boundaries() {
        let v: Vec<Piece> = pieces(OBJECT_SIZE - 10, 20).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].idx, v[0].off, v[0].len, v[0].pos),
            (0, OBJECT_SIZE - 10, 10, 0)
        );
        assert_eq!((v[1].idx, v[1].off, v[1].len, v[1].pos), (1, 0, 10, 10));
        assert_eq!(pieces(0, 0).count(), 0);
        assert_eq!(pieces(0, 3 * OBJECT_SIZE).count(), 3);
    }
}
