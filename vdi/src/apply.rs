//! Applying log commands: the deterministic half of the pool.
//!
//! Every host applies the same commands in the same order and so holds the same records,
//! tables, reference counts, owners and locks. Applying never blocks on a VDI's gate or a
//! stripe lock (a proposer may hold those while it waits for its command), never reads the
//! clock and never touches object data; it takes only the short leaf locks.

use crate::alloc::AllocTable;
use crate::attr::{Ino, Time};
use crate::cmd::{self, AttrChange, Cmd};
use crate::error::{Error, Result};
use crate::inode::{check_name, split_name, InodeV1};
use crate::pool::{Outcome, Pool, MAX_VDI_SIZE};
use crate::vdi::Vdi;
use sheep_objects::{Oid, Vid, OBJECT_SIZE};
use sheep_p2p::NodeId;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Pool {
    /// Applies one log entry (an encoded proposal). Called by the log, in order, once per
    /// entry; a proposal of this host leaves its result for the waiting proposer. Returns the
    /// host of a [`Cmd::StoreOut`], which the host layer applies to the data placement.
    pub fn apply_entry(&self, seq: u64, bytes: &[u8]) -> Option<NodeId> {
        let proposal = match cmd::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(seq, error = %e, "undecodable log entry skipped");
                return None;
            }
        };
        let store_out = match proposal.cmd {
            Cmd::StoreOut { node } => Some(node),
            _ => None,
        };
        let result = {
            let mut applied = self.applied.lock();
            let r = if self.gone.lock().contains(&proposal.node) {
                // Proposed before the log removed its host, ordered after (a new sequencer
                // re-proposes what the old one left pending): applying it would, say, give
                // a lock or an ownership to a host that is no longer there to release it.
                Err(Error::Unavailable(format!(
                    "proposed by {}, which the cluster removed before ordering it",
                    proposal.node
                )))
            } else {
                self.apply_cmd(&proposal.cmd)
            };
            *applied = seq;
            r
        };
        if let Err(e) = &result {
            tracing::debug!(seq, error = %e, "log command refused");
        }
        if proposal.node == self.me {
            self.results.lock().insert(proposal.token, result);
        }
        self.changed.notify_all();
        store_out
    }

    /// A host left the cluster or failed (a log entry): its ownerships, opens and locks go,
    /// and until it joins again its later proposals are refused and nothing is handed to it.
    pub fn node_gone(&self, node: NodeId) {
        let _applied = self.applied.lock();
        self.gone.lock().insert(node);
        self.release_node(node);
    }

    /// A host joined the cluster (a log entry): it may own, open and lock again.
    pub fn node_joined(&self, node: NodeId) {
        let _applied = self.applied.lock();
        self.gone.lock().remove(&node);
    }

    fn release_node(&self, node: NodeId) {
        self.locks.lock().release_node(node);
        let vdis: Vec<Arc<Vdi>> = self.vdis.read().values().cloned().collect();
        for v in vdis {
            let purge = {
                let mut i = v.inner.lock();
                if i.owner == Some(node) {
                    i.owner = None;
                }
                i.opened.remove(&node) && i.opened.is_empty() && i.rec.unlinked
            };
            if purge {
                self.purge(&v);
            }
        }
        self.changed.notify_all();
    }

    fn apply_cmd(&self, cmd: &Cmd) -> Result<Outcome> {
        match cmd {
            Cmd::Create {
                name,
                size,
                copies,
                mode,
                uid,
                gid,
                time,
            } => self.apply_create(name, *size, *copies, (*mode, *uid, *gid), *time),
            Cmd::Unlink { name } => self.apply_unlink(name).map(|()| Outcome::Done),
            Cmd::Rename {
                from,
                to,
                replace,
                time,
            } => self
                .apply_rename(from, to, *replace, *time)
                .map(|()| Outcome::Done),
            Cmd::SetAttr { ino, change, time } => self
                .apply_setattr(Ino(*ino), change, *time)
                .map(|()| Outcome::Done),
            Cmd::Resize { ino, size, time } => self
                .apply_resize(Ino(*ino), *size, *time)
                .map(|()| Outcome::Done),
            Cmd::Extend { ino, size, time } => {
                let v = self.vdi(Ino(*ino))?;
                let mut i = v.inner.lock();
                if i.rec.size < *size {
                    i.rec.size = *size;
                }
                i.rec.mtime = i.rec.mtime.max(*time);
                i.rec.ctime = i.rec.ctime.max(*time);
                Ok(Outcome::Done)
            }
            Cmd::SetEntries { ino, vid, entries } => self
                .apply_entries(Ino(*ino), Vid(*vid), entries)
                .map(|()| Outcome::Done),
            Cmd::Snapshot { name, tag, time } => self.apply_snapshot(name, tag, *time),
            Cmd::Clone { src, dst, time } => self.apply_clone(src, dst, *time),
            Cmd::Rollback { name, tag, time } => self
                .apply_rollback(name, tag, *time)
                .map(|()| Outcome::Done),
            Cmd::Share {
                src,
                dst,
                first,
                last,
                end,
                time,
            } => self
                .apply_share(Ino(*src), Ino(*dst), (*first, *last), *end, *time)
                .map(|()| Outcome::Done),
            Cmd::Open { ino, node } => {
                let v = self.vdi(Ino(*ino))?;
                v.inner.lock().opened.insert(*node);
                Ok(Outcome::Done)
            }
            Cmd::Close { ino, node } => {
                let v = self.vdi(Ino(*ino))?;
                let purge = {
                    let mut i = v.inner.lock();
                    i.opened.remove(node);
                    i.opened.is_empty() && i.rec.unlinked
                };
                if purge {
                    self.purge(&v);
                }
                Ok(Outcome::Done)
            }
            Cmd::Want {
                ino,
                node: wanted_by,
            } => {
                let v = self.vdi(Ino(*ino))?;
                let owner = v.inner.lock().owner;
                if owner == Some(self.me) && *wanted_by != self.me {
                    self.wants.lock().push((Ino(*ino), *wanted_by));
                    self.changed.notify_all();
                }
                Ok(Outcome::Done)
            }
            Cmd::Own {
                ino,
                node: to,
                from,
            } => {
                let v = self.vdi(Ino(*ino))?;
                let mut i = v.inner.lock();
                if i.owner != *from {
                    return Err(Error::Busy(i.rec.display_name()));
                }
                // A handover to a host removed since it asked leaves the VDI to whoever
                // claims it next.
                i.owner = (!self.gone.lock().contains(to)).then_some(*to);
                Ok(Outcome::Done)
            }
            Cmd::Restarted { node } => {
                self.release_node(*node);
                Ok(Outcome::Done)
            }
            Cmd::StoreOut { .. } => Ok(Outcome::Done),
            Cmd::Lock(l) => match self.locks.lock().apply(l) {
                Ok(()) => Ok(Outcome::Done),
                Err(held) => Err(Error::Locked(held)),
            },
        }
    }

    /// Picks the next VDI id that no record uses and that owns no referenced object. Ids are
    /// handed out in a cycle, so one is reused only after 16 million others.
    fn alloc_vid(&self) -> Result<Vid> {
        let used: HashSet<Vid> = self
            .vdis
            .read()
            .values()
            .map(|v| v.inner.lock().vid())
            .collect();
        for _ in 0..Vid::MAX.0 {
            let mut n = self.next_vid.fetch_add(1, Ordering::SeqCst);
            if n == 0 || n > Vid::MAX.0 {
                self.next_vid.store(2, Ordering::SeqCst);
                n = 1;
            }
            let vid = Vid(n);
            if !used.contains(&vid) && !self.refs.lock().owns_objects(vid) {
                return Ok(vid);
            }
        }
        Err(Error::NoVid)
    }

    fn alloc_ino(&self) -> Ino {
        Ino(self.next_ino.fetch_add(1, Ordering::SeqCst))
    }

    fn insert_vdi(&self, vdi: Vdi) -> Ino {
        let (ino, name) = {
            let i = vdi.inner.lock();
            (i.rec.ino(), i.rec.display_name())
        };
        self.vdis.write().insert(ino, Arc::new(vdi));
        self.names.write().insert(name, ino);
        ino
    }

    fn apply_create(
        &self,
        name: &str,
        size: u64,
        copies: u8,
        (mode, uid, gid): (u32, u32, u32),
        time: Time,
    ) -> Result<Outcome> {
        check_name(name)?;
        if size > MAX_VDI_SIZE {
            return Err(Error::TooBig(size));
        }
        if copies == 0 {
            return Err(Error::Invalid("copies must be at least 1".into()));
        }
        if self.names.read().contains_key(name) {
            return Err(Error::Exists(name.to_owned()));
        }
        let vid = self.alloc_vid()?;
        let rec = InodeV1 {
            ino: self.alloc_ino().0,
            name: name.to_owned(),
            tag: None,
            vid: vid.0,
            parent: None,
            size,
            copies,
            mode: mode & 0o7777,
            uid,
            gid,
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            snapshot: false,
            unlinked: false,
        };
        self.vid_copies.lock().insert(vid, copies);
        let ino = self.insert_vdi(Vdi::new(rec, AllocTable::new()));
        tracing::info!(name, vid = %vid, size, "created VDI");
        Ok(Outcome::Ino(ino))
    }

    fn apply_unlink(&self, name: &str) -> Result<()> {
        let ino = self.ino_of(name)?;
        self.unlink_ino(ino, name);
        Ok(())
    }

    /// Removes `name` from the namespace; the VDI goes now, or when its last host closes it.
    fn unlink_ino(&self, ino: Ino, name: &str) {
        self.names.write().remove(name);
        let Ok(v) = self.vdi(ino) else { return };
        let open = {
            let mut i = v.inner.lock();
            i.rec.unlinked = true;
            !i.opened.is_empty()
        };
        if !open {
            self.purge(&v);
        }
        tracing::info!(name, "unlinked VDI");
    }

    /// Deletes an unlinked VDI that no host has open: its table references go.
    fn purge(&self, v: &Vdi) {
        let (ino, entries) = {
            let mut i = v.inner.lock();
            let entries: Vec<(u32, Vid)> = i.table.iter().collect();
            i.table = AllocTable::new();
            i.dirty_objects.clear();
            (i.rec.ino(), entries)
        };
        self.vdis.write().remove(&ino);
        self.locks.lock().forget(ino.0);
        for (idx, owner) in entries {
            self.drop_ref(Oid::data(owner, idx));
        }
    }

    fn apply_rename(&self, from: &str, to: &str, replace: bool, time: Time) -> Result<()> {
        check_name(to)?;
        let ino = self.ino_of(from)?;
        let vdi = self.vdi(ino)?;
        if vdi.inner.lock().rec.snapshot {
            return Err(Error::ReadOnly(from.to_owned()));
        }
        if from == to {
            return Ok(());
        }
        if let Ok(target) = self.ino_of(to) {
            if !replace {
                return Err(Error::Exists(to.to_owned()));
            }
            if !self.snapshots_of(to).is_empty() {
                return Err(Error::Busy(format!(
                    "{to} has snapshots; delete them first"
                )));
            }
            self.unlink_ino(target, to);
        }
        let snaps = self.snapshots_of(from);
        for i in snaps.iter().copied().chain([ino]) {
            let v = self.vdi(i)?;
            let (old, new) = {
                let mut inner = v.inner.lock();
                let old = inner.rec.display_name();
                inner.rec.name = to.to_owned();
                inner.rec.ctime = time;
                (old, inner.rec.display_name())
            };
            let mut names = self.names.write();
            names.remove(&old);
            names.insert(new, i);
        }
        tracing::info!(from, to, "renamed VDI");
        Ok(())
    }

    fn apply_setattr(&self, ino: Ino, c: &AttrChange, time: Time) -> Result<()> {
        let v = self.vdi(ino)?;
        let mut i = v.inner.lock();
        let r = &mut i.rec;
        if let Some(m) = c.mode {
            r.mode = m & 0o7777;
        }
        if let Some(u) = c.uid {
            r.uid = u;
        }
        if let Some(g) = c.gid {
            r.gid = g;
        }
        if let Some(t) = c.atime {
            r.atime = t;
        }
        if let Some(t) = c.mtime {
            r.mtime = t;
        }
        r.ctime = time;
        Ok(())
    }

    fn apply_resize(&self, ino: Ino, size: u64, time: Time) -> Result<()> {
        if size > MAX_VDI_SIZE {
            return Err(Error::TooBig(size));
        }
        let v = self.vdi(ino)?;
        let dropped: Vec<Oid> = {
            let mut i = v.inner.lock();
            if i.rec.snapshot {
                return Err(Error::ReadOnly(i.rec.display_name()));
            }
            let first = u32::try_from(size.div_ceil(OBJECT_SIZE)).unwrap_or(u32::MAX);
            let gone: Vec<(u32, Vid)> = i.table.iter_from(first).collect();
            for (idx, _) in &gone {
                i.set_entry(*idx, Vid::NONE);
            }
            i.rec.size = size;
            i.rec.mtime = time;
            i.rec.ctime = time;
            gone.into_iter().map(|(idx, o)| Oid::data(o, idx)).collect()
        };
        for oid in dropped {
            self.drop_ref(oid);
        }
        Ok(())
    }

    fn apply_entries(&self, ino: Ino, vid: Vid, entries: &[(u32, u32, u32)]) -> Result<()> {
        let v = self.vdi(ino)?;
        let mut i = v.inner.lock();
        if i.vid() != vid || i.rec.snapshot {
            return Err(Error::Busy(format!(
                "{} changed while it was written",
                i.rec.display_name()
            )));
        }
        if let Some((idx, expected, _)) = entries
            .iter()
            .find(|(idx, expected, _)| i.table.get(*idx) != Vid(*expected))
        {
            return Err(Error::Busy(format!(
                "entry {idx} of {} is not {expected} any more",
                i.rec.display_name()
            )));
        }
        let mut dropped = Vec::new();
        {
            let mut refs = self.refs.lock();
            for &(idx, old, new) in entries {
                i.set_entry(idx, Vid(new));
                if new != 0 {
                    refs.inc(Oid::data(Vid(new), idx));
                }
                if old != 0 {
                    dropped.push(Oid::data(Vid(old), idx));
                }
            }
        }
        drop(i);
        for oid in dropped {
            self.drop_ref(oid);
        }
        Ok(())
    }

    /// Moves a writable VDI to a fresh id whose table is a copy of the old one (see cow.rs).
    /// Returns the old id.
    fn freeze(&self, v: &Vdi) -> Result<Vid> {
        let new = self.alloc_vid()?;
        let mut i = v.inner.lock();
        let old = i.vid();
        i.rec.vid = new.0;
        i.rec.parent = Some(old.0);
        self.vid_copies.lock().insert(new, i.rec.copies);
        Ok(old)
    }

    fn ref_table(&self, table: &AllocTable) {
        let mut refs = self.refs.lock();
        for (idx, owner) in table.iter() {
            refs.inc(Oid::data(owner, idx));
        }
    }

    fn apply_snapshot(&self, name: &str, tag: &str, time: Time) -> Result<Outcome> {
        check_name(name)?;
        check_name(tag)?;
        let full = format!("{name}@{tag}");
        if self.names.read().contains_key(&full) {
            return Err(Error::Exists(full));
        }
        let vdi = self.vdi(self.ino_of(name)?)?;
        let old = self.freeze(&vdi)?;
        let (mut rec, table) = {
            let i = vdi.inner.lock();
            (i.rec.clone(), i.table.clone())
        };
        rec.ino = self.alloc_ino().0;
        rec.tag = Some(tag.to_owned());
        rec.vid = old.0;
        rec.parent = None;
        rec.snapshot = true;
        (rec.crtime, rec.ctime) = (time, time);
        self.ref_table(&table);
        let ino = self.insert_vdi(Vdi::new(rec, table));
        tracing::info!(name, tag, vid = %old, "took snapshot");
        Ok(Outcome::Ino(ino))
    }

    fn apply_clone(&self, src: &str, dst: &str, time: Time) -> Result<Outcome> {
        split_name(src)?;
        check_name(dst)?;
        if self.names.read().contains_key(dst) {
            return Err(Error::Exists(dst.to_owned()));
        }
        let svdi = self.vdi(self.ino_of(src)?)?;
        let (snapshot, vid) = {
            let i = svdi.inner.lock();
            (i.rec.snapshot, i.vid())
        };
        let base = if snapshot { vid } else { self.freeze(&svdi)? };
        let (mut rec, table) = {
            let i = svdi.inner.lock();
            (i.rec.clone(), i.table.clone())
        };
        let vid = self.alloc_vid()?;
        rec.ino = self.alloc_ino().0;
        rec.name = dst.to_owned();
        rec.tag = None;
        rec.vid = vid.0;
        rec.parent = Some(base.0);
        rec.snapshot = false;
        rec.unlinked = false;
        (rec.atime, rec.mtime, rec.ctime, rec.crtime) = (time, time, time, time);
        self.vid_copies.lock().insert(vid, rec.copies);
        self.ref_table(&table);
        let ino = self.insert_vdi(Vdi::new(rec, table));
        tracing::info!(src, dst, "cloned VDI");
        Ok(Outcome::Ino(ino))
    }

    fn apply_rollback(&self, name: &str, tag: &str, time: Time) -> Result<()> {
        check_name(name)?;
        check_name(tag)?;
        let vdi = self.vdi(self.ino_of(name)?)?;
        let snap = self.vdi(self.ino_of(&format!("{name}@{tag}"))?)?;
        let (snap_vid, snap_size, table) = {
            let s = snap.inner.lock();
            (s.vid(), s.rec.size, s.table.clone())
        };
        let vid = self.alloc_vid()?;
        self.ref_table(&table);
        let old_table = {
            let mut i = vdi.inner.lock();
            let old = std::mem::replace(&mut i.table, table);
            i.rec.vid = vid.0;
            i.rec.parent = Some(snap_vid.0);
            i.rec.size = snap_size;
            i.rec.mtime = time;
            i.rec.ctime = time;
            i.usage = None;
            self.vid_copies.lock().insert(vid, i.rec.copies);
            old
        };
        for (idx, owner) in old_table.iter() {
            self.drop_ref(Oid::data(owner, idx));
        }
        tracing::info!(name, tag, "rolled back VDI");
        Ok(())
    }

    fn apply_share(
        &self,
        src: Ino,
        dst: Ino,
        (first, last): (u32, u32),
        end: u64,
        time: Time,
    ) -> Result<()> {
        let svdi = self.vdi(src)?;
        let dvdi = self.vdi(dst)?;
        if dvdi.inner.lock().rec.snapshot {
            return Err(Error::ReadOnly(dvdi.inner.lock().rec.display_name()));
        }
        let needs_freeze = {
            let s = svdi.inner.lock();
            !s.rec.snapshot
                && s.table
                    .iter_from(first)
                    .take_while(|(i, _)| *i <= last)
                    .any(|(_, v)| v == s.vid())
        };
        if needs_freeze {
            self.freeze(&svdi)?;
        }
        // Only the allocated entries of either table in the range change: a sparse 64 TiB
        // copy costs what its tables hold, not 16 M index steps.
        let in_range = |t: &AllocTable| -> Vec<u32> {
            t.iter_from(first)
                .take_while(|(i, _)| *i <= last)
                .map(|(i, _)| i)
                .collect()
        };
        let mut indexes = in_range(&svdi.inner.lock().table);
        indexes.extend(in_range(&dvdi.inner.lock().table));
        indexes.sort_unstable();
        indexes.dedup();
        for idx in indexes {
            let owner = svdi.inner.lock().table.get(idx);
            let prev = dvdi.inner.lock().set_entry(idx, owner);
            if !owner.is_none() {
                self.refs.lock().inc(Oid::data(owner, idx));
            }
            if !prev.is_none() {
                self.drop_ref(Oid::data(prev, idx));
            }
        }
        let mut d = dvdi.inner.lock();
        if d.rec.size < end {
            d.rec.size = end;
        }
        d.rec.mtime = time;
        d.rec.ctime = time;
        Ok(())
    }
}
