//! Placement: which hosts hold the copies of an object.
//!
//! Consistent hashing with virtual nodes. Every member gets virtual nodes in proportion to its
//! capacity ([`VNODES_PER_TIB`] per TiB, clamped to [`MIN_VNODES`]..=[`MAX_VNODES`]); a virtual
//! node sits on the ring at the hash of `(NodeId, vnode number)`. An object's copies are the first
//! `copies` distinct members met clockwise from the hash of its [`Oid`].
//!
//! The hash is a fixed splitmix64-style mixer written here, so placement is the same in every
//! process, on every architecture and in every version: changing [`mix64`] or the seeds below
//! moves data and is a format change.

use crate::oid::Oid;
use sheep_p2p::NodeId;

/// Virtual nodes per TiB of capacity.
pub const VNODES_PER_TIB: u64 = 64;
/// Fewest virtual nodes a member gets.
pub const MIN_VNODES: u64 = 16;
/// Most virtual nodes a member gets.
pub const MAX_VNODES: u64 = 1024;

const TIB: u64 = 1 << 40;
const SEED_VNODE: u64 = 0x5348_4545_5056_4e31; // "SHEEPVN1"
const SEED_OID: u64 = 0x5348_4545_504f_4931; // "SHEEPOI1"

/// The splitmix64 finaliser: a bijective 64-bit mixer with full avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Position of virtual node `vnode` of `id` on the ring.
pub fn vnode_hash(id: &NodeId, vnode: u64) -> u64 {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&id.0[..8]);
    hi.copy_from_slice(&id.0[8..]);
    let h = mix64(SEED_VNODE ^ u64::from_le_bytes(lo));
    let h = mix64(h ^ u64::from_le_bytes(hi));
    mix64(h ^ vnode)
}

/// Position of an object on the ring.
pub fn oid_hash(oid: Oid) -> u64 {
    mix64(mix64(SEED_OID ^ oid.0))
}

/// Number of virtual nodes for a member of `capacity` bytes.
pub fn vnodes_for(capacity: u64) -> u64 {
    (capacity / (TIB / VNODES_PER_TIB)).clamp(MIN_VNODES, MAX_VNODES)
}

/// A ring built from a member list; cheap to query, immutable.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Members sorted by id (a duplicated id keeps its smallest capacity).
    members: Vec<NodeId>,
    /// `(position, index into members)`, sorted by position then member id.
    ring: Vec<(u64, u32)>,
}

impl Placement {
    /// Builds the ring of `members` (`(id, capacity in bytes)`); the order of the slice does
    /// not matter, and an id given twice counts once, with the smaller capacity.
    pub fn new(members: &[(NodeId, u64)]) -> Placement {
        let mut sorted: Vec<(NodeId, u64)> = members.to_vec();
        sorted.sort_unstable();
        sorted.dedup_by_key(|m| m.0);
        let mut ring = Vec::new();
        for (i, (id, cap)) in sorted.iter().enumerate() {
            let Ok(idx) = u32::try_from(i) else { break };
            for v in 0..vnodes_for(*cap) {
                ring.push((vnode_hash(id, v), idx));
            }
        }
        // Ties between positions (astronomically rare) are broken by member id, which is the
        // index order, so the ring does not depend on the input order.
        ring.sort_unstable();
        Placement {
            members: sorted.into_iter().map(|m| m.0).collect(),
            ring,
        }
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Returns true when the ring has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Returns true if `id` is a member.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.members.binary_search(id).is_ok()
    }

    /// The holders of `oid`: `min(copies, members)` distinct members, first in ring order.
    pub fn holders(&self, oid: Oid, copies: usize) -> Vec<NodeId> {
        let want = copies.min(self.members.len());
        let mut out: Vec<NodeId> = Vec::with_capacity(want);
        if want == 0 || self.ring.is_empty() {
            return out;
        }
        let h = oid_hash(oid);
        let start = self.ring.partition_point(|&(pos, _)| pos < h);
        let n = self.ring.len();
        for k in 0..n {
            let (_, idx) = self.ring[(start + k) % n];
            let Some(id) = usize::try_from(idx).ok().and_then(|i| self.members.get(i)) else {
                continue;
            };
            if !out.contains(id) {
                out.push(*id);
                if out.len() == want {
                    break;
                }
            }
        }
        out
    }

    /// Returns true if `id` is one of the `copies` holders of `oid`.
    pub fn is_holder(&self, oid: Oid, copies: usize, id: &NodeId) -> bool {
        self.holders(oid, copies).contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn node(i: u8) -> NodeId {
        let mut b = [0u8; 16];
        b[0] = i;
        b[15] = i.wrapping_mul(37);
        NodeId(b)
    }

    fn ring(n: u8) -> Placement {
        let m: Vec<(NodeId, u64)> = (0..n).map(|i| (node(i), TIB)).collect();
        Placement::new(&m)
    }

    #[test]
    fn mixer_is_fixed() {
        // These values are part of the on-disk layout of a cluster: never change them.
        assert_eq!(mix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(oid_hash(Oid(1)), oid_hash(Oid(1)));
        assert_ne!(oid_hash(Oid(1)), oid_hash(Oid(2)));
    }

    #[test]
    fn vnode_counts_follow_capacity() {
        assert_eq!(vnodes_for(0), MIN_VNODES);
        assert_eq!(vnodes_for(TIB), 64);
        assert_eq!(vnodes_for(4 * TIB), 256);
        assert_eq!(vnodes_for(1 << 60), MAX_VNODES);
    }

    #[test]
    fn holders_are_distinct_and_capped_by_members() {
        let p = ring(3);
        for i in 0..1000u32 {
            let h = p.holders(Oid::data(crate::Vid(1), i), 5);
            assert_eq!(h.len(), 3);
            let set: HashSet<_> = h.iter().collect();
            assert_eq!(set.len(), 3);
        }
        assert!(Placement::new(&[]).holders(Oid(1), 3).is_empty());
        assert!(p.holders(Oid(1), 0).is_empty());
    }

    #[test]
    fn capacity_weights_the_share() {
        let p = Placement::new(&[(node(1), TIB), (node(2), 4 * TIB)]);
        let big = (0..20_000u32)
            .filter(|&i| p.holders(Oid::data(crate::Vid(3), i), 1)[0] == node(2))
            .count();
        let share = big as f64 / 20_000.0;
        assert!(
            (0.65..0.92).contains(&share),
            "share of the 4x member: {share}"
        );
    }

    /// Fraction of replicas that are on a holder that did not have them before.
    fn moved_fraction(before: &Placement, after: &Placement, copies: usize, n: u32) -> f64 {
        let mut moved = 0usize;
        let mut total = 0usize;
        for i in 0..n {
            let oid = Oid::data(crate::Vid(i % 977 + 1), i);
            let old = before.holders(oid, copies);
            let new = after.holders(oid, copies);
            total += new.len();
            moved += new.iter().filter(|h| !old.contains(h)).count();
        }
        moved as f64 / total as f64
    }

    #[test]
    fn a_join_moves_about_one_nth_of_the_replicas() {
        for (from, copies) in [(3u8, 1usize), (3, 2), (3, 3), (8, 1), (8, 2), (8, 3)] {
            let before = ring(from);
            let after = ring(from + 1);
            let f = moved_fraction(&before, &after, copies, 100_000);
            let ideal = 1.0 / f64::from(from + 1);
            println!(
                "join {from}->{}: copies {copies}: moved {:.4} of replicas (ideal {ideal:.4})",
                from + 1,
                f
            );
            assert!(
                (f - ideal).abs() <= 0.4 * ideal,
                "{from}->{}: copies {copies}: moved {f}, ideal {ideal}",
                from + 1
            );
        }
    }

    #[test]
    fn a_leave_moves_only_the_leavers_replicas() {
        let before = ring(5);
        let after = ring(4); // node(4) left
        for i in 0..10_000u32 {
            let oid = Oid::data(crate::Vid(9), i);
            let old = before.holders(oid, 2);
            let new = after.holders(oid, 2);
            for h in &old {
                if *h != node(4) {
                    assert!(new.contains(h), "a survivor lost {oid}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn holders_are_deterministic_and_independent_of_member_order(
            ids in proptest::collection::vec(any::<[u8; 16]>(), 1..12),
            caps in proptest::collection::vec(0u64..(8 * TIB), 12),
            oids in proptest::collection::vec(any::<u64>(), 1..50),
            copies in 1usize..5,
            rot in 0usize..12,
        ) {
            let members: Vec<(NodeId, u64)> =
                ids.iter().zip(caps.iter()).map(|(i, c)| (NodeId(*i), *c)).collect();
            let mut shuffled = members.clone();
            shuffled.reverse();
            let r = rot % shuffled.len();
            shuffled.rotate_left(r);
            let a = Placement::new(&members);
            let b = Placement::new(&shuffled);
            let distinct: HashSet<NodeId> = members.iter().map(|m| m.0).collect();
            for o in oids {
                let h = a.holders(Oid(o), copies);
                prop_assert_eq!(&h, &b.holders(Oid(o), copies));
                prop_assert_eq!(&h, &Placement::new(&members).holders(Oid(o), copies));
                prop_assert_eq!(h.len(), copies.min(distinct.len()));
                let set: HashSet<_> = h.iter().collect();
                prop_assert_eq!(set.len(), h.len());
            }
        }
    }
}
