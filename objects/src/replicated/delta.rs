//! Delta catch-up: a local copy that exists but is stale or unverified is made current by
//! copying only the 4 KiB blocks that differ from a good copy, not the whole object.
//!
//! ```text
//! receiver (holds the object's lock)              source (a good copy, the freshest)
//!   sums of its own copy (read whole, seed s)
//!   | -- Sums(oid, seed s) --------------------->  lock, read whole copy, hash each block
//!   | <-------- version, digest, BlockSums ------  (a hole, zeros, or xxh3-128 of the data)
//!   compare block by block:
//!     source hole,  mine not a hole  -> punch        (no transfer)
//!     source zeros, mine not zeros   -> write zeros  (no transfer)
//!     source data,  mine different   -> fetch
//!   more than half the source's data blocks to fetch: the whole object instead (Fetch)
//!   | -- Blocks(oid, ranges) ------------------->  lock, read those ranges
//!   | <-------- version, Image of the ranges ----
//!   mark the copy unverified (persisted) if it is not;
//!   under the epoch fence: write, zero, punch; check the digest against the source's;
//!   set the version; sync; (the caller) mark it verified
//! ```
//!
//! Blocks are compared by a 128-bit hash of their data, never by their crc32c alone (a crc
//! collision would keep a stale block), with a seed the receiver draws per request. The
//! digest check after patching (the store's crc-based digest of the patched copy against the
//! source's at the time of `Sums`) catches a source that changed between the two requests:
//! the whole object is then copied instead. Any failure of the two requests falls back to a
//! whole-object fetch from the same source, so a source that does not know these requests
//! still serves.
//!
//! A crash mid-patch never leaves a copy taken for current: the copy is in the persisted
//! unverified list (a stale copy that was not is added first) until the patch, its version
//! and the sync are done and the caller marks it verified; after a restart it is compared
//! with the others by version and digest (the store re-checksums what a crash left
//! unmatched), so a copy holding the new version with old blocks is fetched again. A patch
//! given up (the digests differ, the epoch moved) leaves it unverified the same way.

use super::{ReplicatedStore, SErr, View};
use crate::budget::Buf;
use crate::error::{Error, Result};
use crate::net::proto::{
    decode_extents, decode_image, encode_u64s, BlockSum, BlockSums, Op, Status, MAX_EXTENTS,
};
use crate::oid::{Oid, OBJECT_BYTES};
use crate::store::{ObjectStore, BLOCK_BYTES, OBJECT_BLOCKS};
use sheep_p2p::NodeId;
use std::hash::BuildHasher;
use std::ops::Range;

const BLOCK: u64 = BLOCK_BYTES as u64;

/// Blocks read at once while summing a copy (1 MiB).
const READ_BLOCKS: usize = 256;

/// What one fetch brought to the local copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Fetched {
    /// Bytes received from the source: the object image, or the block summary and the
    /// differing blocks.
    pub bytes: u64,
    /// Set when the copy was patched in place rather than replaced whole.
    pub patched: Option<Patched>,
}

/// What a patch changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Patched {
    /// Blocks written, zeroed or punched.
    pub blocks: u64,
    /// Bytes the whole object image would have taken more than the patch.
    pub saved: u64,
}

/// The hash of one block's data.
fn hash_block(seed: u64, block: &[u8]) -> u128 {
    twox_hash::XxHash3_128::oneshot_with_seed(seed, block)
}

/// What a block of `block`'s bytes is: zeros or data (by its hash).
fn sum_of(seed: u64, block: &[u8]) -> BlockSum {
    if block.iter().all(|b| *b == 0) {
        BlockSum::Zero
    } else {
        BlockSum::Data(hash_block(seed, block))
    }
}

/// The per-block summary of `store`'s copy of `oid` (which the caller knows exists), reading
/// its data extents whole (their checksums are verified as they are read).
pub(super) fn sums_of(store: &dyn ObjectStore, oid: Oid, seed: u64) -> Result<BlockSums> {
    let mut allocated = vec![false; OBJECT_BLOCKS];
    for r in store.extents(oid)? {
        let first = usize::try_from(r.start / BLOCK).map_err(|_| Error::CorruptObject(oid))?;
        let end = usize::try_from(r.end.div_ceil(BLOCK)).map_err(|_| Error::CorruptObject(oid))?;
        for a in allocated.iter_mut().take(end).skip(first) {
            *a = true;
        }
    }
    let mut sums = vec![BlockSum::Hole; OBJECT_BLOCKS];
    let mut buf = vec![0u8; READ_BLOCKS * BLOCK_BYTES];
    let mut i = 0;
    while i < OBJECT_BLOCKS {
        if !allocated[i] {
            i += 1;
            continue;
        }
        let run = allocated[i..]
            .iter()
            .take(READ_BLOCKS)
            .take_while(|a| **a)
            .count();
        let bytes = &mut buf[..run * BLOCK_BYTES];
        store.read(oid, i as u64 * BLOCK, bytes)?;
        for (k, block) in bytes.chunks_exact(BLOCK_BYTES).enumerate() {
            sums[i + k] = sum_of(seed, block);
        }
        i += run;
    }
    Ok(BlockSums(sums))
}

/// How a local copy becomes the source's: block ranges to fetch, to zero and to punch.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    pub fetch: Vec<Range<u64>>,
    pub zero: Vec<Range<u64>>,
    pub punch: Vec<Range<u64>>,
    /// Blocks to fetch.
    pub fetch_blocks: usize,
    /// Blocks changed in all (fetched, zeroed, punched).
    pub changed_blocks: usize,
    /// Blocks holding data (not zeros) on the source.
    pub source_data_blocks: usize,
    /// Blocks allocated on the source (what its whole image would carry).
    pub source_allocated_blocks: usize,
}

impl Plan {
    /// Compares `mine` with `theirs` block by block.
    pub fn new(mine: &BlockSums, theirs: &BlockSums) -> Plan {
        let (mut fetch, mut zero, mut punch) = (Vec::new(), Vec::new(), Vec::new());
        let mut plan = Plan::default();
        let blank = BlockSum::Hole;
        for i in 0..OBJECT_BLOCKS {
            let t = theirs.0.get(i).unwrap_or(&blank);
            let m = mine.0.get(i).unwrap_or(&blank);
            plan.source_data_blocks += usize::from(!t.is_zero());
            plan.source_allocated_blocks += usize::from(*t != BlockSum::Hole);
            match (t, m) {
                (BlockSum::Hole, BlockSum::Hole) | (BlockSum::Zero, BlockSum::Zero) => {}
                (BlockSum::Data(a), BlockSum::Data(b)) if a == b => {}
                (BlockSum::Hole, _) => punch.push(i),
                (BlockSum::Zero, _) => zero.push(i),
                (BlockSum::Data(_), _) => fetch.push(i),
            }
        }
        plan.fetch_blocks = fetch.len();
        plan.changed_blocks = fetch.len() + zero.len() + punch.len();
        plan.fetch = runs(&fetch);
        plan.zero = runs(&zero);
        plan.punch = runs(&punch);
        plan
    }

    /// A whole copy is the better way: more than half of the source's data blocks differ.
    pub fn too_big(&self) -> bool {
        self.fetch_blocks * 2 > self.source_data_blocks
    }

    /// Bytes to fetch.
    pub fn fetch_bytes(&self) -> u64 {
        self.fetch_blocks as u64 * BLOCK
    }
}

/// Byte ranges of the runs of consecutive block numbers in `blocks` (sorted).
fn runs(blocks: &[usize]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for &b in blocks {
        let (start, end) = (b as u64 * BLOCK, (b as u64 + 1) * BLOCK);
        match out.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => out.push(start..end),
        }
    }
    out
}

/// A fresh seed for the block hashes of one comparison.
fn new_seed(oid: Oid) -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(oid.0)
}

/// The body of a `Sums` answer: the copy's digest, then its [`BlockSums`].
fn encode_sums(digest: u64, sums: &BlockSums) -> Option<Vec<u8>> {
    let mut out = digest.to_le_bytes().to_vec();
    out.extend_from_slice(&sums.encode()?);
    Some(out)
}

fn decode_sums(body: &[u8]) -> Option<(u64, BlockSums)> {
    let digest = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    Some((digest, BlockSums::decode(&body[8..]).ok()?))
}

/// Zeros written at once.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Writes zeros over `r` of `oid`.
fn write_zeros(store: &dyn ObjectStore, oid: Oid, r: &Range<u64>) -> Result<()> {
    let mut at = r.start;
    while at < r.end {
        let n = usize::try_from(r.end - at).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
        store.write(oid, at, &ZEROS[..n])?;
        at += n as u64;
    }
    Ok(())
}

impl ReplicatedStore {
    /// Serves [`Op::Sums`]: the summary of the local good copy of `oid`.
    pub(super) fn serve_sums(&self, oid: Oid, seed: u64, out: &mut Vec<u8>) -> Result<u64, SErr> {
        let _g = self.locks.lock(oid);
        if self.is_unverified(oid) {
            return Err(SErr::Retry(format!("the copy of {oid} here is unverified")));
        }
        let meta = self.local.meta(oid)?;
        let sums = sums_of(&*self.local, oid, seed).inspect_err(|e| self.bad_source(oid, e))?;
        *out = encode_sums(meta.digest, &sums).ok_or(SErr::Store(Error::CorruptObject(oid)))?;
        Ok(meta.version)
    }

    /// Serves [`Op::Blocks`]: the listed ranges of the local good copy of `oid`.
    pub(super) fn serve_blocks(
        &self,
        oid: Oid,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u64, SErr> {
        let extents = decode_extents(body).map_err(|_| SErr::Bad("block ranges"))?;
        if extents.len() > MAX_EXTENTS {
            return Err(SErr::Bad("too many block ranges"));
        }
        let _g = self.locks.lock(oid);
        if self.is_unverified(oid) {
            return Err(SErr::Retry(format!("the copy of {oid} here is unverified")));
        }
        let version = self.local.meta(oid)?.version;
        let inside = extents
            .iter()
            .all(|r| r.start < r.end && r.end <= OBJECT_BYTES as u64);
        if !inside || extents.windows(2).any(|w| w[0].end > w[1].start) {
            return Err(SErr::Bad("block ranges not sorted inside the object"));
        }
        self.read_ranges_into(oid, &extents, out)
            .inspect_err(|e| self.bad_source(oid, e))?;
        Ok(version)
    }

    /// A read of the local copy for another host failed: repair it if it is bad.
    fn bad_source(&self, oid: Oid, e: &Error) {
        if matches!(e, Error::CorruptObject(_) | Error::Io { .. }) {
            self.spawn_repair(oid);
        }
    }

    /// One request to `src` answered `Ok`: (value, body); `None` otherwise (logged).
    fn call_ok(
        &self,
        view: &View,
        src: NodeId,
        req: &crate::net::proto::ReqHeader,
        body: &[u8],
    ) -> Option<(u64, Buf)> {
        match self.call_holder(view, src, req, body) {
            Ok((Status::Ok, value, body)) => Some((value, body)),
            Ok((status, ..)) => {
                tracing::debug!(oid = %req.oid, from = %src, op = ?req.op, ?status, "delta catch-up: refused");
                None
            }
            Err(e) => {
                tracing::debug!(oid = %req.oid, from = %src, op = ?req.op, error = %self.serr_text(e), "delta catch-up: request failed");
                None
            }
        }
    }

    /// Makes the existing local copy of `oid` the same as `src`'s by copying only the blocks
    /// that differ (see the module docs). `Ok(None)`: not done, copy the whole object
    /// instead (the local copy cannot be read, too much differs, `src` did not answer or
    /// changed meanwhile). With `throttled`, the blocks go through the recovery throttle.
    /// The caller holds the object's lock.
    pub(super) fn patch_from(
        &self,
        view: &View,
        oid: Oid,
        src: NodeId,
        throttled: bool,
    ) -> Result<Option<Fetched>, SErr> {
        let Some(diff) = self.diff_with(view, oid, src) else {
            return Ok(None);
        };
        if diff.plan.too_big() {
            return Ok(None);
        }
        let mut image = Buf::empty();
        if diff.plan.fetch_blocks > 0 {
            if throttled {
                self.throttled(diff.plan.fetch_bytes(), view.epoch)?;
            }
            let req = self.header(Op::Blocks, oid, view.epoch);
            let ranges = encode_u64s(diff.plan.fetch.iter().flat_map(|r| [r.start, r.end]));
            match self.call_ok(view, src, &req, &ranges) {
                Some((v, body)) if v == diff.version => image = body,
                _ => return Ok(None),
            }
        }
        let data = if image.is_empty() {
            &[][..]
        } else {
            match decode_image(&image) {
                Ok((extents, data)) if extents == diff.plan.fetch => data,
                _ => return Ok(None),
            }
        };
        if !self.apply_patch(view, oid, &diff, data)? {
            tracing::info!(%oid, from = %src, "delta catch-up: the patched copy differs from its source, copying it whole");
            return Ok(None);
        }
        let bytes = diff.sums_bytes + data.len() as u64;
        let whole = diff.plan.source_allocated_blocks as u64 * BLOCK;
        tracing::debug!(%oid, from = %src, version = diff.version, blocks = diff.plan.changed_blocks, bytes, "patched the local copy");
        Ok(Some(Fetched {
            bytes,
            patched: Some(Patched {
                blocks: diff.plan.changed_blocks as u64,
                saved: whole.saturating_sub(bytes),
            }),
        }))
    }

    /// Sums the local copy of `oid` and compares it with `src`'s sums; `None` if the local
    /// copy cannot be read or `src` does not answer.
    fn diff_with(&self, view: &View, oid: Oid, src: NodeId) -> Option<Diff> {
        let seed = new_seed(oid);
        let mine = sums_of(&*self.local, oid, seed)
            .inspect_err(|e| {
                tracing::debug!(%oid, error = %e, "delta catch-up: local copy unreadable, copying it whole");
            })
            .ok()?;
        let mut req = self.header(Op::Sums, oid, view.epoch);
        req.a = seed;
        let (version, body) = self.call_ok(view, src, &req, &[])?;
        let (digest, theirs) = decode_sums(&body)?;
        Some(Diff {
            version,
            digest,
            plan: Plan::new(&mine, &theirs),
            sums_bytes: body.len() as u64,
        })
    }

    /// Applies `diff` to the local copy of `oid` under the epoch fence, `data` being the
    /// bytes of its fetched ranges: false (version untouched) if the patched copy's digest is
    /// not the source's. The copy is in the persisted unverified list from before its first
    /// block changes; the caller marks it verified once this returned true.
    fn apply_patch(&self, view: &View, oid: Oid, diff: &Diff, data: &[u8]) -> Result<bool, SErr> {
        // A crash mid-patch leaves a copy that is compared with the others before use.
        self.mark_unverified(oid);
        self.fenced(view.epoch, || {
            let mut at = 0usize;
            for r in &diff.plan.fetch {
                let len =
                    usize::try_from(r.end - r.start).map_err(|_| Error::CorruptObject(oid))?;
                let piece = data.get(at..at + len).ok_or(Error::CorruptObject(oid))?;
                self.local.write(oid, r.start, piece)?;
                at += len;
            }
            for r in &diff.plan.zero {
                write_zeros(&*self.local, oid, r)?;
            }
            for r in &diff.plan.punch {
                self.local.punch(oid, r.start, r.end - r.start)?;
            }
            if self.local.meta(oid)?.digest != diff.digest {
                return Ok(false);
            }
            self.local.set_version(oid, diff.version)?;
            self.local.sync(&[oid])?;
            Ok(true)
        })
    }
}

/// A local copy compared with a source's.
struct Diff {
    /// The source's version and digest.
    version: u64,
    digest: u64,
    plan: Plan,
    /// Bytes of the source's sums.
    sums_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemStore;
    use crate::oid::Vid;

    fn sums(store: &MemStore, oid: Oid) -> BlockSums {
        sums_of(store, oid, 7).unwrap()
    }

    #[test]
    fn sums_tell_holes_zeros_and_data_apart() {
        let s = MemStore::new();
        let oid = Oid::data(Vid(1), 0);
        s.write(oid, BLOCK, &[0u8; BLOCK_BYTES]).unwrap();
        s.write(oid, 3 * BLOCK, &[5u8; BLOCK_BYTES]).unwrap();
        s.write(oid, 5 * BLOCK + 10, b"x").unwrap();
        let got = sums(&s, oid);
        assert_eq!(got.0.len(), OBJECT_BLOCKS);
        assert_eq!(got.0[0], BlockSum::Hole);
        assert_eq!(got.0[1], BlockSum::Zero);
        assert_eq!(got.0[3], BlockSum::Data(hash_block(7, &[5u8; BLOCK_BYTES])));
        assert!(matches!(got.0[5], BlockSum::Data(_)));
        assert_eq!(got.0[6..], vec![BlockSum::Hole; OBJECT_BLOCKS - 6][..]);
        // Another seed, other hashes; same content, same hashes.
        assert_ne!(sums_of(&s, oid, 8).unwrap(), got);
        let other = Oid::data(Vid(1), 1);
        s.copy(oid, other).unwrap();
        assert_eq!(sums(&s, other), got);
    }

    #[test]
    fn a_corrupt_copy_has_no_sums() {
        let s = MemStore::new();
        let oid = Oid::data(Vid(1), 0);
        s.write(oid, 0, &[1u8; 3 * BLOCK_BYTES]).unwrap();
        s.corrupt(oid, BLOCK + 1).unwrap();
        assert!(matches!(sums_of(&s, oid, 1), Err(Error::CorruptObject(_))));
    }

    #[test]
    fn the_plan_fetches_differing_data_and_zeroes_or_punches_locally() {
        let d = |h: u128| BlockSum::Data(h);
        let mut theirs = vec![BlockSum::Hole; OBJECT_BLOCKS];
        let mut mine = vec![BlockSum::Hole; OBJECT_BLOCKS];
        // 0..4 same data; 4, 5 differ (one run); 6: data where mine is a hole; 7: hole on
        // theirs, data on mine; 8: zeros on theirs, data on mine; 9: zeros on theirs, a hole
        // on mine; 10: a hole on theirs, zeros on mine; 11: zeros on both.
        for (i, b) in theirs.iter_mut().enumerate().take(7) {
            *b = d(i as u128);
        }
        for (i, b) in mine.iter_mut().enumerate().take(4) {
            *b = d(i as u128);
        }
        mine[4] = d(99);
        mine[5] = BlockSum::Zero;
        mine[7] = d(1);
        theirs[8] = BlockSum::Zero;
        mine[8] = d(1);
        theirs[9] = BlockSum::Zero;
        mine[10] = BlockSum::Zero;
        theirs[11] = BlockSum::Zero;
        mine[11] = BlockSum::Zero;
        let plan = Plan::new(&BlockSums(mine), &BlockSums(theirs));
        assert_eq!(plan.fetch, vec![4 * BLOCK..7 * BLOCK]);
        assert_eq!(plan.zero, vec![8 * BLOCK..10 * BLOCK]);
        assert_eq!(
            plan.punch,
            vec![7 * BLOCK..8 * BLOCK, 10 * BLOCK..11 * BLOCK]
        );
        assert_eq!((plan.fetch_blocks, plan.changed_blocks), (3, 7));
        assert_eq!(
            (plan.source_data_blocks, plan.source_allocated_blocks),
            (7, 10)
        );
        assert!(!plan.too_big());
        assert_eq!(plan.fetch_bytes(), 3 * BLOCK);
    }

    #[test]
    fn more_than_half_the_data_to_fetch_is_too_big() {
        let theirs = BlockSums(
            (0..OBJECT_BLOCKS)
                .map(|i| BlockSum::Data(i as u128))
                .collect(),
        );
        let mut mine = theirs.clone();
        for b in mine.0.iter_mut().take(OBJECT_BLOCKS / 2) {
            *b = BlockSum::Hole;
        }
        assert!(!Plan::new(&mine, &theirs).too_big());
        mine.0[OBJECT_BLOCKS / 2] = BlockSum::Zero;
        assert!(Plan::new(&mine, &theirs).too_big());
        // Nothing on the source: only punches, never too big.
        let empty = BlockSums(vec![BlockSum::Hole; OBJECT_BLOCKS]);
        let plan = Plan::new(&theirs, &empty);
        assert!(!plan.too_big());
        assert_eq!(plan.punch, vec![0..OBJECT_BLOCKS as u64 * BLOCK]);
    }

    #[test]
    fn sums_replies_round_trip() {
        let s = MemStore::new();
        let oid = Oid::data(Vid(1), 0);
        s.write(oid, 0, b"data").unwrap();
        let sums = sums(&s, oid);
        let body = encode_sums(42, &sums).unwrap();
        assert_eq!(decode_sums(&body), Some((42, sums)));
        assert_eq!(decode_sums(&body[..7]), None);
    }
}
