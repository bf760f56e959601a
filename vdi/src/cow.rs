//! Copy-on-write operations: snapshot, clone, rollback and copy_file_range sharing.
//!
//! They all rest on one step, *freezing* a writable VDI: its current VDI id `X` stops being
//! written in place, the VDI continues under a fresh id `Y` whose table is a copy of `X`'s,
//! and every later first write to an index copies that one object into `Y`. A snapshot keeps
//! `X`; a clone or a copy shares `X`'s objects through its own table.

use crate::attr::{Ino, Time, VdiAttr};
use crate::cmd::Cmd;
use crate::error::{Error, Result};
use crate::inode::{check_name, split_name};
use crate::io::pieces;
use crate::pool::{Outcome, Pool};
use crate::vdi::Vdi;
use sheep_objects::{Oid, OBJECT_SIZE};
use std::sync::Arc;

impl Pool {
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
        if vdi.inner.lock().rec.snapshot {
            return Err(Error::ReadOnly(name.to_owned()));
        }
        // Most dirty data is flushed while writes go on; the VDI pauses only for the rest.
        {
            let _g = self.owned_gate(&vdi)?;
            self.flush_vdi(&vdi)?;
        }
        let _g = self.owned_gate_mut(&vdi)?;
        self.flush_vdi(&vdi)?;
        let out = self.submit(Cmd::Snapshot {
            name: name.to_owned(),
            tag: tag.to_owned(),
            time: Time::now(),
        })?;
        drop(_g);
        self.attr_of(out, &full)
    }

    fn attr_of(&self, out: Outcome, name: &str) -> Result<VdiAttr> {
        match out {
            Outcome::Ino(ino) => self.getattr(ino),
            Outcome::Done => self.lookup(name),
        }
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
        let cmd = Cmd::Clone {
            src: src.to_owned(),
            dst: dst.to_owned(),
            time: Time::now(),
        };
        let out = if svdi.inner.lock().rec.snapshot {
            self.submit(cmd)?
        } else {
            {
                let _g = self.owned_gate(&svdi)?;
                self.flush_vdi(&svdi)?;
            }
            let _g = self.owned_gate_mut(&svdi)?;
            self.flush_vdi(&svdi)?;
            self.submit(cmd)?
        };
        self.attr_of(out, dst)
    }

    /// Atomically makes VDI `name` equal to its snapshot `name@tag` (the snapshot stays).
    pub fn rollback(&self, name: &str, tag: &str) -> Result<()> {
        check_name(name)?;
        check_name(tag)?;
        let _ns = self.ns.lock();
        let vdi = self.vdi(self.ino_of(name)?)?;
        self.ino_of(&format!("{name}@{tag}"))?;
        let _g = self.owned_gate_mut(&vdi)?;
        // What was written but not flushed belongs to the state being thrown away.
        vdi.inner.lock().dirty_objects.clear();
        self.submit(Cmd::Rollback {
            name: name.to_owned(),
            tag: tag.to_owned(),
            time: Time::now(),
        })
        .map(|_| ())
    }

    /// copy_file_range: whole objects at the same index in both files are shared
    /// copy-on-write, the rest is copied. The copy is point-in-time consistent: both VDIs are
    /// quiesced while it is made (their gates held exclusively: in-flight writes finish, a
    /// flush in progress goes on without holding them up). Returns the bytes copied.
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
        if dvdi.inner.lock().rec.snapshot {
            return Err(Error::ReadOnly(dvdi.inner.lock().rec.display_name()));
        }
        if !svdi.inner.lock().rec.snapshot {
            self.claim(&svdi)?;
        }
        self.claim(&dvdi)?;
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
            let _g = self.owned_gate_mut(&svdi)?;
            return self.copy_bytes(&svdi, src_off, &svdi, dst_off, len);
        }
        let (_g1, _g2) = if src < dst {
            let a = svdi.gate_exclusive()?;
            (a, dvdi.gate_exclusive()?)
        } else {
            let b = dvdi.gate_exclusive()?;
            (svdi.gate_exclusive()?, b)
        };
        let owned = |v: &Vdi| {
            let i = v.inner.lock();
            i.rec.snapshot || i.owner == Some(self.me)
        };
        if !owned(&svdi) || !owned(&dvdi) {
            return Err(Error::Busy(
                "another host took the file over during the copy".into(),
            ));
        }
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
        self.share_objects(svdi, dvdi, first, last, b.min(end))?;
        if b < end {
            self.copy_bytes(svdi, b, dvdi, b, end - b)?;
        }
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

    /// Points the destination's entries `first..=last` at the source's objects (one log
    /// command, which also freezes the source if it writes any of them in place); it costs
    /// no data I/O and no sync, whatever the size and the dirty data of the source.
    ///
    /// Source objects written but not yet durable join the destination's dirty set, so the
    /// destination's fsync makes the shared content durable too: those still in the source's
    /// dirty set and those a flush of the source is syncing right now (flushes do not hold
    /// the gate, so one may run during the copy; the destination's fsync must not return
    /// before they are synced, and it syncs them itself rather than wait for that flush).
    fn share_objects(&self, svdi: &Vdi, dvdi: &Vdi, first: u32, last: u32, end: u64) -> Result<()> {
        let dirty: Vec<Oid> = {
            let s = svdi.inner.lock();
            s.dirty_objects
                .iter()
                .chain(s.syncing.iter())
                .filter(|o| (first..=last).contains(&o.idx()) && s.table.get(o.idx()) == o.vid())
                .copied()
                .collect()
        };
        let (src, dst) = (svdi.inner.lock().rec.ino, dvdi.inner.lock().rec.ino);
        self.submit(Cmd::Share {
            src,
            dst,
            first,
            last,
            end,
            time: Time::now(),
        })?;
        let mut d = dvdi.inner.lock();
        d.dirty_objects.extend(dirty);
        d.usage = None;
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
        let (ino, size) = {
            let i = vdi.inner.lock();
            (i.rec.ino, i.rec.size)
        };
        if size < offset + len {
            self.submit(Cmd::Extend {
                ino,
                size: offset + len,
                time: Time::now(),
            })?;
        }
        Ok(())
    }
}
