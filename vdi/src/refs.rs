//! Reference counts of data objects and of the VDI ids that own them.
//!
//! A data object `Oid::data(vid, idx)` is referenced by every allocation table whose entry
//! `idx` names `vid`. A VDI id stays reserved while a record uses it or an object it owns is
//! referenced, so a new VDI never writes into an object somebody else still shares.

use sheep_objects::{Oid, Vid};
use std::collections::HashMap;

/// Live reference counts (what the in-memory tables reference).
#[derive(Default, Debug)]
pub(crate) struct Refs {
    objects: HashMap<Oid, u32>,
    vids: HashMap<Vid, u64>,
    /// Changes at every inc and dec, so cached sharing figures know they are stale.
    pub(crate) generation: u64,
}

impl Refs {
    /// Adds a reference to `oid`.
    pub(crate) fn inc(&mut self, oid: Oid) {
        self.generation += 1;
        *self.objects.entry(oid).or_insert(0) += 1;
        *self.vids.entry(oid.vid()).or_insert(0) += 1;
    }

    /// Drops a reference to `oid`; returns true when nothing references it any more.
    pub(crate) fn dec(&mut self, oid: Oid) -> bool {
        self.generation += 1;
        if let Some(v) = self.vids.get_mut(&oid.vid()) {
            *v -= 1;
            if *v == 0 {
                self.vids.remove(&oid.vid());
            }
        }
        match self.objects.get_mut(&oid) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.objects.remove(&oid);
                true
            }
            None => {
                tracing::error!(oid = %oid, "reference count underflow");
                true
            }
        }
    }

    /// References to `oid`.
    pub(crate) fn count(&self, oid: Oid) -> u32 {
        self.objects.get(&oid).copied().unwrap_or(0)
    }

    /// Every referenced object.
    pub(crate) fn objects(&self) -> impl Iterator<Item = Oid> + '_ {
        self.objects.keys().copied()
    }

    /// True while any referenced object is owned by `vid`.
    pub(crate) fn owns_objects(&self, vid: Vid) -> bool {
        self.vids.contains_key(&vid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_dec_reports_unreferenced_and_frees_the_vid() {
        let mut r = Refs::default();
        let o = Oid::data(Vid(3), 9);
        r.inc(o);
        r.inc(o);
        assert!(r.owns_objects(Vid(3)));
        assert!(!r.dec(o));
        assert_eq!(r.count(o), 1);
        assert!(r.dec(o));
        assert!(!r.owns_objects(Vid(3)));
    }
}
