//! Where metadata commands are ordered and made durable.
//!
//! A [`MetaLog`] takes an encoded [`crate::cmd::Proposal`], puts it in the log and returns once
//! this host has applied it ([`Pool::apply_entry`]). In a cluster that is the total-order log
//! of `sheep-p2p`, acknowledged only when every member applied the entry; [`LocalLog`] is the
//! log of a pool on its own (tests, tools), kept in the store itself.

use crate::error::{Error, Result};
use crate::pool::Pool;
use parking_lot::Mutex;
use sheep_objects::{ObjectStore, Oid, OBJECT_SIZE};
use sheep_p2p::codec::{self, Kind, HEADER_LEN};
use sheep_p2p::NodeId;
use std::sync::Arc;

/// Orders metadata commands.
pub trait MetaLog: Send + Sync {
    /// Puts `bytes` (an encoded proposal) in the log and returns once this host has applied it.
    fn submit(&self, pool: &Pool, bytes: Vec<u8>) -> Result<()>;
}

/// Envelope of one stored entry.
const ENTRY_KIND: Kind = Kind {
    magic: 0x474c_4453, // "SDLG"
    major: 1,
    minor: 0,
};

/// First object id of the log's segments: `Oid::meta(SEGMENT_BASE + n)`.
const SEGMENT_BASE: u32 = 0x1000;

/// A log kept in the pool's own store: segments of up to one object each, entries appended
/// and synced before they are applied.
pub struct LocalLog {
    store: Arc<dyn ObjectStore>,
    tail: Mutex<Tail>,
}

struct Tail {
    seq: u64,
    segment: u32,
    offset: u64,
}

impl LocalLog {
    /// Opens the log in `store`; returns it with every entry stored so far, in order. A torn
    /// last entry (a crash during its append) is dropped and overwritten by the next one.
    pub fn open(store: Arc<dyn ObjectStore>) -> Result<(LocalLog, Vec<Vec<u8>>)> {
        let mut entries = Vec::new();
        let mut segment = 0u32;
        let mut offset;
        loop {
            let oid = Oid::meta(SEGMENT_BASE + segment);
            let end = store.extents(oid)?.last().map_or(0, |r| r.end);
            let mut buf = vec![0u8; usize::try_from(end).unwrap_or(0)];
            if end > 0 {
                store.read(oid, 0, &mut buf)?;
            }
            offset = 0usize;
            let mut torn = false;
            while offset < buf.len() {
                let rest = &buf[offset..];
                let Ok(h) = codec::decode_header(ENTRY_KIND, rest, OBJECT_SIZE) else {
                    torn = true;
                    break;
                };
                let len = HEADER_LEN + h.len as usize;
                match codec::decode::<Vec<u8>>(
                    ENTRY_KIND,
                    &rest[..len.min(rest.len())],
                    OBJECT_SIZE,
                ) {
                    Ok(e) => entries.push(e),
                    Err(_) => {
                        torn = true;
                        break;
                    }
                }
                offset += len;
            }
            let next = Oid::meta(SEGMENT_BASE + segment + 1);
            if torn || !store.exists(next)? {
                break;
            }
            segment += 1;
        }
        let tail = Tail {
            seq: entries.len() as u64,
            segment,
            offset: offset as u64,
        };
        Ok((
            LocalLog {
                store,
                tail: Mutex::new(tail),
            },
            entries,
        ))
    }

    fn append(&self, tail: &mut Tail, bytes: &[u8]) -> Result<u64> {
        // A byte slice encodes exactly as the `Vec<u8>` that `open` decodes.
        let rec = codec::encode(ENTRY_KIND, &bytes, OBJECT_SIZE)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        if tail.offset + rec.len() as u64 > OBJECT_SIZE {
            tail.segment += 1;
            tail.offset = 0;
        }
        let oid = Oid::meta(SEGMENT_BASE + tail.segment);
        self.store.write(oid, tail.offset, &rec)?;
        self.store.sync(&[oid])?;
        tail.offset += rec.len() as u64;
        tail.seq += 1;
        Ok(tail.seq)
    }
}

impl MetaLog for LocalLog {
    fn submit(&self, pool: &Pool, bytes: Vec<u8>) -> Result<()> {
        let mut tail = self.tail.lock();
        let seq = self.append(&mut tail, &bytes)?;
        pool.apply_entry(seq, &bytes);
        Ok(())
    }
}

/// The id a pool on its own uses for itself.
pub const LOCAL_NODE: NodeId = NodeId([0; 16]);
