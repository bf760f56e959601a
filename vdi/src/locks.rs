//! Cluster-wide byte-range locks (POSIX and OFD, as QEMU uses them for image locking).
//!
//! The lock table is part of the replicated metadata state: a lock is taken by a log command,
//! so every host sees the same locks, and a host that leaves or fails loses all of its locks.
//! A request that conflicts with a lock of another owner is refused (`EAGAIN`); blocking
//! requests retry.

use serde::{Deserialize, Serialize};
use sheep_p2p::NodeId;
use std::collections::BTreeMap;

/// Who holds a lock: a lock owner (the kernel's `lock_owner`) on one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LockOwner {
    /// The host.
    pub node: NodeId,
    /// The kernel's lock owner id on that host.
    pub owner: u64,
}

/// Kind of a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// Shared (F_RDLCK).
    Read,
    /// Exclusive (F_WRLCK).
    Write,
}

/// One held lock on `start..=end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Holder.
    pub owner: LockOwner,
    /// Process id reported by F_GETLK (on the holder's host).
    pub pid: u32,
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive; `u64::MAX` = to the end).
    pub end: u64,
    /// Kind.
    pub kind: LockKind,
}

/// A lock command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockCmd {
    /// Take (or convert to) `kind` on `start..=end`, or unlock it (`kind: None`).
    Set {
        /// The VDI.
        ino: u64,
        /// Holder.
        owner: LockOwner,
        /// Process id.
        pid: u32,
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
        /// The lock, or `None` to unlock.
        kind: Option<LockKind>,
    },
    /// Drop every lock of `owner` on the VDI (close).
    ReleaseOwner {
        /// The VDI.
        ino: u64,
        /// Holder.
        owner: LockOwner,
    },
}

/// Every lock of every VDI.
#[derive(Clone, Debug, Default)]
pub struct LockTable {
    by_ino: BTreeMap<u64, Vec<Lock>>,
}

fn overlaps(a: &Lock, start: u64, end: u64) -> bool {
    a.start <= end && start <= a.end
}

impl LockTable {
    /// The first lock of another owner that conflicts with the request, if any (F_GETLK).
    pub fn conflict(
        &self,
        ino: u64,
        owner: LockOwner,
        start: u64,
        end: u64,
        kind: LockKind,
    ) -> Option<Lock> {
        self.by_ino.get(&ino)?.iter().copied().find(|l| {
            l.owner != owner
                && overlaps(l, start, end)
                && (kind == LockKind::Write || l.kind == LockKind::Write)
        })
    }

    /// Applies a command; `Err(conflicting lock)` leaves the table as it was.
    pub fn apply(&mut self, cmd: &LockCmd) -> Result<(), Lock> {
        match *cmd {
            LockCmd::Set {
                ino,
                owner,
                pid,
                start,
                end,
                kind,
            } => {
                if let Some(k) = kind {
                    if let Some(c) = self.conflict(ino, owner, start, end, k) {
                        return Err(c);
                    }
                }
                let locks = self.by_ino.entry(ino).or_default();
                carve(locks, owner, start, end);
                if let Some(kind) = kind {
                    locks.push(Lock {
                        owner,
                        pid,
                        start,
                        end,
                        kind,
                    });
                }
                if locks.is_empty() {
                    self.by_ino.remove(&ino);
                }
                Ok(())
            }
            LockCmd::ReleaseOwner { ino, owner } => {
                if let Some(locks) = self.by_ino.get_mut(&ino) {
                    locks.retain(|l| l.owner != owner);
                    if locks.is_empty() {
                        self.by_ino.remove(&ino);
                    }
                }
                Ok(())
            }
        }
    }

    /// Drops every lock held on `node` (it left or failed).
    pub fn release_node(&mut self, node: NodeId) {
        self.by_ino.retain(|_, locks| {
            locks.retain(|l| l.owner.node != node);
            !locks.is_empty()
        });
    }

    /// True if any lock is held on `node`.
    pub fn held_by(&self, node: NodeId) -> bool {
        self.by_ino
            .values()
            .any(|locks| locks.iter().any(|l| l.owner.node == node))
    }

    /// Drops every lock of a deleted VDI.
    pub fn forget(&mut self, ino: u64) {
        self.by_ino.remove(&ino);
    }

    /// Locks held on a VDI.
    pub fn held(&self, ino: u64) -> Vec<Lock> {
        self.by_ino.get(&ino).cloned().unwrap_or_default()
    }
}

/// Removes `start..=end` from `owner`'s locks, splitting the ones that straddle it.
fn carve(locks: &mut Vec<Lock>, owner: LockOwner, start: u64, end: u64) {
    let mut out = Vec::with_capacity(locks.len() + 1);
    for l in locks.drain(..) {
        if l.owner != owner || !overlaps(&l, start, end) {
            out.push(l);
            continue;
        }
        if l.start < start {
            out.push(Lock {
                end: start - 1,
                ..l
            });
        }
        if l.end > end {
            out.push(Lock {
                start: end + 1,
                ..l
            });
        }
    }
    *locks = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(n: u8, o: u64) -> LockOwner {
        LockOwner {
            node: NodeId([n; 16]),
            owner: o,
        }
    }

    fn set(owner: LockOwner, start: u64, end: u64, kind: Option<LockKind>) -> LockCmd {
        LockCmd::Set {
            ino: 5,
            owner,
            pid: 1,
            start,
            end,
            kind,
        }
    }

    #[test]
    fn readers_share_writers_exclude_and_owners_do_not_conflict_with_themselves() {
        let mut t = LockTable::default();
        t.apply(&set(who(1, 1), 100, 200, Some(LockKind::Read)))
            .unwrap();
        t.apply(&set(who(2, 1), 150, 160, Some(LockKind::Read)))
            .unwrap();
        let c = t
            .apply(&set(who(2, 1), 100, 100, Some(LockKind::Write)))
            .unwrap_err();
        assert_eq!(c.owner, who(1, 1));
        // The same owner upgrades its own range.
        t.apply(&set(who(1, 1), 100, 140, Some(LockKind::Write)))
            .unwrap();
        assert!(t.conflict(5, who(3, 9), 120, 120, LockKind::Read).is_some());
        assert!(t
            .conflict(5, who(3, 9), 201, 300, LockKind::Write)
            .is_none());
    }

    #[test]
    fn unlock_splits_and_release_drops_everything_of_a_host() {
        let mut t = LockTable::default();
        t.apply(&set(who(1, 1), 0, 99, Some(LockKind::Write)))
            .unwrap();
        t.apply(&set(who(1, 1), 40, 59, None)).unwrap();
        let held = t.held(5);
        assert_eq!(held.len(), 2);
        assert!(t.conflict(5, who(2, 1), 40, 59, LockKind::Write).is_none());
        assert!(t.conflict(5, who(2, 1), 0, 0, LockKind::Write).is_some());
        t.apply(&set(who(1, 2), 200, 300, Some(LockKind::Read)))
            .unwrap();
        t.release_node(NodeId([1; 16]));
        assert!(t.held(5).is_empty());
    }
}
