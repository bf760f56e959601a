//! Wire format of the data channel: fixed little-endian headers followed by a raw body.
//!
//! ```text
//! request (64 bytes)
//!  0 magic "SDQ1" u32 | 4 op u8 | 5 flags u8 | 6 reserved u16 | 8 epoch u64 | 16 from NodeId (16)
//! 32 oid u64 | 40 a u64 | 48 b u64 | 56 body_len u32 | 60 reserved u32 | 64 body...
//!
//! response (32 bytes)
//!  0 magic "SDR1" u32 | 4 status u8 | 5..8 reserved | 8 epoch u64 (the server's) | 16 value u64
//! 24 body_len u32 | 28 reserved u32 | 32 body...
//! ```
//!
//! Bodies are raw bytes (object data) or small arrays of little-endian `u64`s, so object data
//! is never re-encoded. Every length is checked against [`MAX_BODY`] before anything is
//! allocated, and decoders return errors, never panic.

use crate::oid::{Oid, OBJECT_BYTES, OBJECT_SIZE};
use crate::store::OBJECT_BLOCKS;
use sheep_p2p::NodeId;
use std::ops::Range;

/// Magic of a request header.
pub const REQ_MAGIC: u32 = u32::from_le_bytes(*b"SDQ1");
/// Magic of a response header.
pub const RESP_MAGIC: u32 = u32::from_le_bytes(*b"SDR1");
/// Length of a request header.
pub const REQ_HEADER_LEN: usize = 64;
/// Length of a response header.
pub const RESP_HEADER_LEN: usize = 32;
/// Largest body of a request or response: one whole object plus its extent list.
pub const MAX_BODY: usize = OBJECT_BYTES + MAX_EXTENTS * 16 + 4;
/// Most extents an object image may list (one per 4 KiB page).
pub const MAX_EXTENTS: usize = OBJECT_BYTES / 4096;
/// Flag of [`Op::Fetch`]: the server is a holder and must first make its copy current.
pub const FLAG_AS_HOLDER: u8 = 1;
/// Flag of [`Op::Put`]: replace the copy whatever its version (a repair by `check`).
pub const FLAG_FORCE: u8 = 2;
/// Flag of [`Op::Write`]: the object exists (it is allocated); never create it.
pub const FLAG_EXISTING: u8 = 4;
/// Flag of [`Op::Exists`]: a rebalance walk asks the holder to make its copy current; what the
/// holder copies for that goes through its recovery throttle.
pub const FLAG_BACKGROUND: u8 = 8;
/// Length of one object's answer in a batched [`Op::Have`]: state `u8`, version, digest.
pub const HAVE_ENTRY: usize = 17;

/// Request kinds. The meaning of `oid`, `a` and `b` is given per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read `b` bytes at `a` of `oid`; the response body is the data.
    Read = 1,
    /// Write the body at `a` of `oid`.
    Write = 2,
    /// Make `oid` a copy of object `a`.
    Copy = 3,
    /// Punch `b` bytes at `a` of `oid`.
    Punch = 4,
    /// Remove `oid`.
    Remove = 5,
    /// Does `oid` exist (value 0/1), after the holder made its copy current (throttled with
    /// [`FLAG_BACKGROUND`]).
    Exists = 6,
    /// Extents of `oid`; body: `(start, end)` pairs of `u64`.
    Extents = 7,
    /// Allocated bytes of `oid` (value).
    Allocated = 8,
    /// Sync the objects listed in the body (`u64` oids).
    Sync = 9,
    /// Store the object image in the body as `oid` at version `b`, if the local copy is
    /// absent, unverified or older (always with [`FLAG_FORCE`]); value 1 if stored.
    Put = 10,
    /// What this host's copy of `oid` is right now, without on-demand fetch: value = state
    /// (0 absent, 1 good, 2 unverified), body = version `u64`, digest `u64`. With a body (a
    /// list of `u64` oids), one [`HAVE_ENTRY`] per listed object instead.
    Have = 11,
    /// The object image of `oid` (its extent table, then their bytes); value = its version.
    Fetch = 12,
    /// The sender finished rebalancing for epoch `a`.
    RebalanceDone = 13,
    /// Read and check the whole local copy of `oid` against its checksums: value = state
    /// (0 absent, 1 good, 2 unverified, 3 bad), body = version `u64`, digest `u64`.
    Verify = 14,
    /// Hold `oid` for a repair for `a` milliseconds (0: release the hold): until released or
    /// expired, reads and changes of this host's copy are refused with [`Status::Retry`]
    /// (their senders retry), and the hold is answered once those already under way ended.
    Hold = 15,
    /// What each 4 KiB block of this host's copy of `oid` holds, its data hashed with seed `a`
    /// (read under the object's lock): value = the copy's version, body = the copy's digest
    /// `u64`, then [`BlockSums`]. Refused with [`Status::Retry`] while the copy is unverified.
    Sums = 16,
    /// The bytes of the listed ranges of `oid` (body: sorted, disjoint `(start, end)` pairs of
    /// `u64`, as [`decode_extents`] takes them), read under the object's lock: value = the
    /// copy's version, body = an [`Image`] whose extents are those ranges. Refused with
    /// [`Status::Retry`] while the copy is unverified.
    Blocks = 17,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Read,
            2 => Op::Write,
            3 => Op::Copy,
            4 => Op::Punch,
            5 => Op::Remove,
            6 => Op::Exists,
            7 => Op::Extents,
            8 => Op::Allocated,
            9 => Op::Sync,
            10 => Op::Put,
            11 => Op::Have,
            12 => Op::Fetch,
            13 => Op::RebalanceDone,
            14 => Op::Verify,
            15 => Op::Hold,
            16 => Op::Sums,
            17 => Op::Blocks,
            _ => return None,
        })
    }
}

/// Outcome codes of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done.
    Ok = 0,
    /// The server is at another epoch (in the header); nothing was done.
    WrongEpoch = 1,
    /// The object does not exist.
    NotFound = 2,
    /// The server's store is full.
    NoSpace = 3,
    /// The range is outside the object.
    OutOfRange = 4,
    /// The server's copy is corrupt.
    Corrupt = 5,
    /// A local I/O error on the server; body: message.
    Io = 6,
    /// The request was malformed; body: message.
    BadRequest = 7,
    /// A transient condition (a peer needed for an on-demand fetch did not answer, the epoch
    /// changed meanwhile); nothing was done, retry later. Body: message.
    Retry = 8,
}

impl Status {
    fn from_u8(v: u8) -> Option<Status> {
        Some(match v {
            0 => Status::Ok,
            1 => Status::WrongEpoch,
            2 => Status::NotFound,
            3 => Status::NoSpace,
            4 => Status::OutOfRange,
            5 => Status::Corrupt,
            6 => Status::Io,
            7 => Status::BadRequest,
            8 => Status::Retry,
            _ => return None,
        })
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a frame of this protocol.
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    /// Unknown request kind or status.
    #[error("unknown code {0}")]
    UnknownCode(u8),
    /// The announced body is larger than [`MAX_BODY`].
    #[error("body of {0} bytes is too large")]
    TooLarge(u64),
    /// The body does not have the layout its kind requires.
    #[error("malformed body: {0}")]
    Malformed(&'static str),
}

/// A decoded request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReqHeader {
    /// Request kind.
    pub op: Op,
    /// Kind-specific flags.
    pub flags: u8,
    /// The sender's epoch.
    pub epoch: u64,
    /// The sender.
    pub from: NodeId,
    /// The object.
    pub oid: Oid,
    /// First argument (offset, source object, epoch).
    pub a: u64,
    /// Second argument (length).
    pub b: u64,
    /// Length of the body that follows.
    pub body_len: u32,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

impl ReqHeader {
    /// A request of kind `op` on `oid`, with zero arguments and no body.
    pub fn new(op: Op, from: NodeId, oid: Oid) -> ReqHeader {
        ReqHeader {
            op,
            flags: 0,
            epoch: 0,
            from,
            oid,
            a: 0,
            b: 0,
            body_len: 0,
        }
    }

    /// The most bytes the response body to this request holds when it succeeds, for the
    /// server to reserve before it serves it (an error message may be longer; it is small).
    pub fn reply_bound(&self) -> usize {
        let listed = self.body_len as usize / 8;
        match self.op {
            Op::Read => usize::try_from(self.b).map_or(MAX_BODY, |b| b.min(MAX_BODY)),
            Op::Fetch | Op::Blocks => MAX_BODY,
            // A `Sums` answer: the digest, then the block count, a kind per block and a
            // 128-bit hash per data block.
            Op::Sums => 8 + 4 + OBJECT_BLOCKS * 17,
            Op::Extents => MAX_EXTENTS * 16,
            Op::Have if self.body_len > 0 => listed * HAVE_ENTRY,
            Op::Have | Op::Verify => 16,
            Op::Write
            | Op::Copy
            | Op::Punch
            | Op::Remove
            | Op::Exists
            | Op::Allocated
            | Op::Sync
            | Op::Put
            | Op::RebalanceDone
            | Op::Hold => 0,
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; REQ_HEADER_LEN] {
        let mut h = [0u8; REQ_HEADER_LEN];
        h[0..4].copy_from_slice(&REQ_MAGIC.to_le_bytes());
        h[4] = self.op as u8;
        h[5] = self.flags;
        h[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        h[16..32].copy_from_slice(&self.from.0);
        h[32..40].copy_from_slice(&self.oid.0.to_le_bytes());
        h[40..48].copy_from_slice(&self.a.to_le_bytes());
        h[48..56].copy_from_slice(&self.b.to_le_bytes());
        h[56..60].copy_from_slice(&self.body_len.to_le_bytes());
        h
    }

    /// Decodes and checks a header (magic, kind, body length bound).
    pub fn decode(h: &[u8; REQ_HEADER_LEN]) -> Result<ReqHeader, FrameError> {
        let magic = u32_at(h, 0);
        if magic != REQ_MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let op = Op::from_u8(h[4]).ok_or(FrameError::UnknownCode(h[4]))?;
        let body_len = u32_at(h, 56);
        if body_len as usize > MAX_BODY {
            return Err(FrameError::TooLarge(u64::from(body_len)));
        }
        let mut from = [0u8; 16];
        from.copy_from_slice(&h[16..32]);
        Ok(ReqHeader {
            op,
            flags: h[5],
            epoch: u64_at(h, 8),
            from: NodeId(from),
            oid: Oid(u64_at(h, 32)),
            a: u64_at(h, 40),
            b: u64_at(h, 48),
            body_len,
        })
    }
}

/// A decoded response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespHeader {
    /// Outcome.
    pub status: Status,
    /// The server's epoch.
    pub epoch: u64,
    /// Kind-specific value (a boolean, a byte count).
    pub value: u64,
    /// Length of the body that follows.
    pub body_len: u32,
}

impl RespHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; RESP_HEADER_LEN] {
        let mut h = [0u8; RESP_HEADER_LEN];
        h[0..4].copy_from_slice(&RESP_MAGIC.to_le_bytes());
        h[4] = self.status as u8;
        h[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        h[16..24].copy_from_slice(&self.value.to_le_bytes());
        h[24..28].copy_from_slice(&self.body_len.to_le_bytes());
        h
    }

    /// Decodes and checks a header.
    pub fn decode(h: &[u8; RESP_HEADER_LEN]) -> Result<RespHeader, FrameError> {
        let magic = u32_at(h, 0);
        if magic != RESP_MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let status = Status::from_u8(h[4]).ok_or(FrameError::UnknownCode(h[4]))?;
        let body_len = u32_at(h, 24);
        if body_len as usize > MAX_BODY {
            return Err(FrameError::TooLarge(u64::from(body_len)));
        }
        Ok(RespHeader {
            status,
            epoch: u64_at(h, 8),
            value: u64_at(h, 16),
            body_len,
        })
    }
}

/// Checks that `offset..offset+len` lies inside a data object.
pub fn in_object(offset: u64, len: u64) -> bool {
    offset
        .checked_add(len)
        .is_some_and(|end| end <= OBJECT_SIZE)
}

/// Encodes a list of `u64`s (oids, extent bounds).
pub fn encode_u64s(values: impl IntoIterator<Item = u64>) -> Vec<u8> {
    values.into_iter().flat_map(u64::to_le_bytes).collect()
}

/// Decodes a body of `u64`s.
pub fn decode_u64s(body: &[u8]) -> Result<Vec<u64>, FrameError> {
    if !body.chunks_exact(8).remainder().is_empty() {
        return Err(FrameError::Malformed("not a whole number of u64s"));
    }
    Ok(body.chunks_exact(8).map(|c| u64_at(c, 0)).collect())
}

/// Decodes an extent list body: sorted, disjoint `(start, end)` pairs inside an object.
pub fn decode_extents(body: &[u8]) -> Result<Vec<Range<u64>>, FrameError> {
    let v = decode_u64s(body)?;
    if !v.chunks_exact(2).remainder().is_empty() {
        return Err(FrameError::Malformed("odd number of extent bounds"));
    }
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len() / 2);
    for p in v.chunks_exact(2) {
        let r = p[0]..p[1];
        if r.start > r.end || r.end > OBJECT_SIZE || out.last().is_some_and(|l| l.end > r.start) {
            return Err(FrameError::Malformed(
                "extents out of order or outside the object",
            ));
        }
        out.push(r);
    }
    Ok(out)
}

/// An object's data extents and their bytes: the body of `Put` and `Fetch`.
///
/// ```text
/// count u32 | count x (start u64, len u64) | the extents' bytes, in order
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    /// Data extents, sorted and disjoint.
    pub extents: Vec<Range<u64>>,
    /// Their bytes, concatenated.
    pub data: Vec<u8>,
}

impl Image {
    /// Encodes the image; `None` if it breaks the limits (which no store produces).
    pub fn encode(&self) -> Option<Vec<u8>> {
        let count = u32::try_from(self.extents.len()).ok()?;
        if self.extents.len() > MAX_EXTENTS {
            return None;
        }
        let mut out = Vec::with_capacity(4 + self.extents.len() * 16 + self.data.len());
        out.extend_from_slice(&count.to_le_bytes());
        for r in &self.extents {
            out.extend_from_slice(&r.start.to_le_bytes());
            out.extend_from_slice(&(r.end - r.start).to_le_bytes());
        }
        out.extend_from_slice(&self.data);
        (out.len() <= MAX_BODY).then_some(out)
    }

    /// Decodes and validates an image.
    pub fn decode(body: &[u8]) -> Result<Image, FrameError> {
        let (extents, data) = decode_image(body)?;
        Ok(Image {
            extents,
            data: data.to_vec(),
        })
    }
}

/// Decodes and validates an image without copying its data: the extents and their bytes.
pub fn decode_image(body: &[u8]) -> Result<(Vec<Range<u64>>, &[u8]), FrameError> {
    let count =
        usize::try_from(u32_at(body, 0)).map_err(|_| FrameError::Malformed("extent count"))?;
    if body.len() < 4 || count > MAX_EXTENTS {
        return Err(FrameError::Malformed("extent count"));
    }
    let table_end = 4 + count * 16;
    if body.len() < table_end {
        return Err(FrameError::Malformed("truncated extent table"));
    }
    let mut extents: Vec<Range<u64>> = Vec::with_capacity(count);
    let mut total = 0u64;
    for i in 0..count {
        let start = u64_at(body, 4 + i * 16);
        let len = u64_at(body, 12 + i * 16);
        if !in_object(start, len) || extents.last().is_some_and(|l| l.end > start) {
            return Err(FrameError::Malformed(
                "extent out of order or outside the object",
            ));
        }
        total += len;
        extents.push(start..start + len);
    }
    let data = &body[table_end..];
    if data.len() as u64 != total {
        return Err(FrameError::Malformed(
            "data length differs from the extents",
        ));
    }
    Ok((extents, data))
}

/// What one 4 KiB block of a copy holds (an element of [`BlockSums`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockSum {
    /// Not allocated: reads as zeros.
    Hole,
    /// Allocated, all zeros.
    Zero,
    /// Allocated data: its 128-bit hash (with the seed the request gave).
    Data(u128),
}

impl BlockSum {
    /// True if the block reads as zeros (a hole or a block of zeros).
    pub fn is_zero(&self) -> bool {
        !matches!(self, BlockSum::Data(_))
    }
}

/// The per-block summary of a copy: the body of an [`Op::Sums`] answer.
///
/// ```text
/// count u32 | count x kind u8 (0 hole, 1 zeros, 2 data) | 16-byte hash (u128 LE) per data block
/// ```
///
/// Blocks from `count` to the end of the object are holes, so a sparse object's summary is
/// small: at most 4 + 1024 x 17 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockSums(pub Vec<BlockSum>);

impl BlockSums {
    /// Encodes the summary, trailing holes left out; `None` if it lists more blocks than an
    /// object has.
    pub fn encode(&self) -> Option<Vec<u8>> {
        if self.0.len() > OBJECT_BLOCKS {
            return None;
        }
        let count = self
            .0
            .iter()
            .rposition(|b| *b != BlockSum::Hole)
            .map_or(0, |i| i + 1);
        let blocks = &self.0[..count];
        let data = blocks.iter().filter(|b| !b.is_zero()).count();
        let mut out = Vec::with_capacity(4 + count + data * 16);
        out.extend_from_slice(&u32::try_from(count).ok()?.to_le_bytes());
        out.extend(blocks.iter().map(|b| match b {
            BlockSum::Hole => 0u8,
            BlockSum::Zero => 1,
            BlockSum::Data(_) => 2,
        }));
        for b in blocks {
            if let BlockSum::Data(h) = b {
                out.extend_from_slice(&h.to_le_bytes());
            }
        }
        Some(out)
    }

    /// Decodes and validates a summary: one entry per block of an object (trailing holes
    /// filled in).
    pub fn decode(body: &[u8]) -> Result<BlockSums, FrameError> {
        if body.len() < 4 {
            return Err(FrameError::Malformed("block count"));
        }
        let count = usize::try_from(u32_at(body, 0))
            .ok()
            .filter(|c| *c <= OBJECT_BLOCKS)
            .ok_or(FrameError::Malformed("block count"))?;
        let kinds = body
            .get(4..4 + count)
            .ok_or(FrameError::Malformed("truncated block kinds"))?;
        let data = kinds.iter().filter(|k| **k == 2).count();
        if body.len() != 4 + count + data * 16 {
            return Err(FrameError::Malformed(
                "summary length differs from its kinds",
            ));
        }
        let mut hashes = body[4 + count..].chunks_exact(16);
        let mut out = Vec::with_capacity(OBJECT_BLOCKS);
        for k in kinds {
            out.push(match k {
                0 => BlockSum::Hole,
                1 => BlockSum::Zero,
                2 => {
                    let mut h = [0u8; 16];
                    h.copy_from_slice(hashes.next().ok_or(FrameError::Malformed("hashes"))?);
                    BlockSum::Data(u128::from_le_bytes(h))
                }
                _ => return Err(FrameError::Malformed("block kind")),
            });
        }
        out.resize(OBJECT_BLOCKS, BlockSum::Hole);
        Ok(BlockSums(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reply_bounds_cover_what_each_kind_answers() {
        let mut r = ReqHeader::new(Op::Read, NodeId([1; 16]), Oid(1));
        r.b = 8192;
        assert_eq!(r.reply_bound(), 8192);
        r.b = u64::MAX;
        assert_eq!(r.reply_bound(), MAX_BODY);
        r.op = Op::Fetch;
        assert_eq!(r.reply_bound(), MAX_BODY);
        r.op = Op::Have;
        r.body_len = 80;
        assert_eq!(r.reply_bound(), 10 * HAVE_ENTRY);
        r.op = Op::Write;
        assert_eq!(r.reply_bound(), 0);
    }

    #[test]
    fn headers_round_trip() {
        let mut h = ReqHeader::new(Op::Write, NodeId([7; 16]), Oid(42));
        h.epoch = 9;
        h.a = 4096;
        h.b = 3;
        h.flags = FLAG_AS_HOLDER;
        h.body_len = 3;
        assert_eq!(ReqHeader::decode(&h.encode()), Ok(h));
        let r = RespHeader {
            status: Status::WrongEpoch,
            epoch: 12,
            value: 1,
            body_len: 0,
        };
        assert_eq!(RespHeader::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn oversized_bodies_are_refused_from_the_header() {
        let mut h = ReqHeader::new(Op::Write, NodeId([0; 16]), Oid(1)).encode();
        h[56..60].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            ReqHeader::decode(&h),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn images_round_trip_and_bad_ones_are_refused() {
        let img = Image {
            extents: vec![0..4096, 8192..8200],
            data: vec![5u8; 4104],
        };
        let enc = img.encode().unwrap();
        assert_eq!(Image::decode(&enc).unwrap(), img);
        assert!(Image::decode(&enc[..enc.len() - 1]).is_err());
        let overlapping = Image {
            extents: vec![0..4096, 100..200],
            data: vec![0u8; 4196],
        };
        assert!(Image::decode(&overlapping.encode().unwrap()).is_err());
        assert!(Image::decode(&[]).is_err());
        assert_eq!(Image::decode(&[0, 0, 0, 0]).unwrap(), Image::default());
    }

    #[test]
    fn block_sums_round_trip_without_their_trailing_holes() {
        let mut sums = vec![BlockSum::Hole; OBJECT_BLOCKS];
        sums[0] = BlockSum::Data(u128::MAX - 7);
        sums[2] = BlockSum::Zero;
        sums[9] = BlockSum::Data(42);
        let sums = BlockSums(sums);
        let enc = sums.encode().unwrap();
        assert_eq!(enc.len(), 4 + 10 + 2 * 16);
        assert_eq!(BlockSums::decode(&enc).unwrap(), sums);
        let empty = BlockSums(vec![BlockSum::Hole; OBJECT_BLOCKS]);
        assert_eq!(empty.encode().unwrap(), vec![0, 0, 0, 0]);
        assert_eq!(BlockSums::decode(&[0, 0, 0, 0]).unwrap(), empty);
        // Truncated, a bad kind, a count past the object, a hash too many.
        assert!(BlockSums::decode(&enc[..enc.len() - 1]).is_err());
        let mut bad = enc.clone();
        bad[5] = 3;
        assert!(BlockSums::decode(&bad).is_err());
        let too_many = u32::try_from(OBJECT_BLOCKS + 1).unwrap().to_le_bytes();
        assert!(BlockSums::decode(&too_many).is_err());
        let mut long = enc;
        long.extend_from_slice(&[0; 16]);
        assert!(BlockSums::decode(&long).is_err());
        assert!(BlockSums(vec![BlockSum::Zero; OBJECT_BLOCKS + 1])
            .encode()
            .is_none());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut h = [0u8; REQ_HEADER_LEN];
            for (d, s) in h.iter_mut().zip(bytes.iter()) { *d = *s; }
            let _ = ReqHeader::decode(&h);
            let mut r = [0u8; RESP_HEADER_LEN];
            for (d, s) in r.iter_mut().zip(bytes.iter()) { *d = *s; }
            let _ = RespHeader::decode(&r);
            let _ = Image::decode(&bytes);
            let _ = decode_extents(&bytes);
            let _ = decode_u64s(&bytes);
            let _ = BlockSums::decode(&bytes);
        }

        #[test]
        fn valid_magic_with_random_rest_never_panics(
            rest in proptest::collection::vec(any::<u8>(), 60),
            count in 0u32..2000,
            tail in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut h = [0u8; REQ_HEADER_LEN];
            h[..4].copy_from_slice(&REQ_MAGIC.to_le_bytes());
            h[4..].copy_from_slice(&rest);
            let _ = ReqHeader::decode(&h);
            let mut body = count.to_le_bytes().to_vec();
            body.extend_from_slice(&tail);
            let _ = Image::decode(&body);
        }
    }
}
