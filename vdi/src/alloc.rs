//! The allocation table: which VDI's data object holds each 4 MiB index.
//!
//! In memory the table is a vector of optional 1024-entry chunks, so a 64 TiB VDI with little
//! data costs little memory. On disk it is the allocation object `Oid::alloc(vid)`: a sparse
//! file of little-endian `u32` entries, entry `i` at byte `4 * i`, so chunk `c` is the 4 KiB
//! page at `4096 * c` and unwritten pages read as "unallocated".
//!
//! ```text
//! alloc object:  | chunk 0: entries 0..1024 (4 KiB) | chunk 1 | ... (holes = all zero) |
//! entry value:   0 = unallocated, else the 24-bit Vid whose object Oid::data(vid, i) holds it
//! ```

use crate::error::{Error, Result};
use sheep_objects::{ObjectStore, Oid, Vid};

/// Entries per chunk.
pub const CHUNK_ENTRIES: u32 = 1024;
/// Bytes of one chunk on disk.
pub const CHUNK_BYTES: usize = CHUNK_ENTRIES as usize * 4;

/// One chunk of entries.
pub type Chunk = Box<[u32; CHUNK_ENTRIES as usize]>;

/// The allocation table of one VDI.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct AllocTable {
    chunks: Vec<Option<Chunk>>,
}

/// The index of entry `e` of chunk `c`. Chunks only exist for indexes that fit in a `u32`, so
/// the casts are lossless.
#[allow(clippy::cast_possible_truncation)]
fn entry_index(c: usize, e: usize) -> u32 {
    c as u32 * CHUNK_ENTRIES + e as u32
}

fn split(idx: u32) -> (usize, usize) {
    (
        (idx / CHUNK_ENTRIES) as usize,
        (idx % CHUNK_ENTRIES) as usize,
    )
}

impl AllocTable {
    /// Returns an empty table.
    pub fn new() -> AllocTable {
        AllocTable::default()
    }

    /// The owner of index `idx` (`Vid::NONE` if unallocated).
    pub fn get(&self, idx: u32) -> Vid {
        let (c, e) = split(idx);
        match self.chunks.get(c) {
            Some(Some(chunk)) => Vid(chunk[e]),
            _ => Vid::NONE,
        }
    }

    /// Sets the owner of `idx`; returns the previous owner.
    pub fn set(&mut self, idx: u32, vid: Vid) -> Vid {
        let (c, e) = split(idx);
        if self.chunks.len() <= c {
            if vid.is_none() {
                return Vid::NONE;
            }
            self.chunks.resize_with(c + 1, || None);
        }
        let chunk = self.chunks[c].get_or_insert_with(|| Box::new([0; CHUNK_ENTRIES as usize]));
        Vid(std::mem::replace(&mut chunk[e], vid.0))
    }

    /// Iterates over the allocated `(idx, owner)` pairs in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, Vid)> + '_ {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk.iter().flat_map(move |ch| {
                ch.iter()
                    .enumerate()
                    .filter(|(_, v)| **v != 0)
                    .map(move |(e, v)| (entry_index(c, e), Vid(*v)))
            })
        })
    }

    /// Iterates over allocated entries with `idx >= from`.
    pub fn iter_from(&self, from: u32) -> impl Iterator<Item = (u32, Vid)> + '_ {
        let first = (from / CHUNK_ENTRIES) as usize;
        self.chunks
            .iter()
            .enumerate()
            .skip(first)
            .flat_map(move |(c, chunk)| {
                chunk.iter().flat_map(move |ch| {
                    ch.iter()
                        .enumerate()
                        .filter(|(_, v)| **v != 0)
                        .map(move |(e, v)| (entry_index(c, e), Vid(*v)))
                })
            })
            .filter(move |(i, _)| *i >= from)
    }

    /// Number of allocated entries.
    pub fn count(&self) -> u64 {
        self.chunks
            .iter()
            .flatten()
            .map(|c| c.iter().filter(|v| **v != 0).count() as u64)
            .sum()
    }

    /// The chunk numbers that hold at least one entry.
    pub fn chunk_numbers(&self) -> Vec<u32> {
        (0..self.chunks.len())
            .filter(|&c| self.chunks[c].is_some())
            .map(|c| entry_index(c, 0) / CHUNK_ENTRIES)
            .collect()
    }

    /// The on-disk bytes of chunk `c` (all zeros if absent).
    pub fn chunk_bytes(&self, c: u32) -> Vec<u8> {
        let mut out = vec![0u8; CHUNK_BYTES];
        if let Some(Some(chunk)) = self.chunks.get(c as usize) {
            for (i, v) in chunk.iter().enumerate() {
                out[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// Writes the given chunks into the allocation object of `vid` (not synced).
    pub fn store_chunks(
        store: &dyn ObjectStore,
        vid: Vid,
        chunks: &[(u32, Vec<u8>)],
    ) -> Result<()> {
        for (c, bytes) in chunks {
            store.write(Oid::alloc(vid), u64::from(*c) * CHUNK_BYTES as u64, bytes)?;
        }
        Ok(())
    }

    /// Loads the table of `vid` from the store; a missing object is an empty table.
    /// Entries naming a Vid past 24 bits or entries past `max_idx` mark the object corrupt.
    pub fn load(store: &dyn ObjectStore, vid: Vid, max_idx: u64) -> Result<AllocTable> {
        let oid = Oid::alloc(vid);
        let mut table = AllocTable::new();
        let mut buf = vec![0u8; CHUNK_BYTES];
        for ext in store.extents(oid)? {
            let first = ext.start / CHUNK_BYTES as u64;
            let last = ext.end.div_ceil(CHUNK_BYTES as u64);
            for c in first..last {
                store.read(oid, c * CHUNK_BYTES as u64, &mut buf)?;
                for (e, w) in buf.chunks_exact(4).enumerate() {
                    let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                    if v == 0 {
                        continue;
                    }
                    let idx = c * u64::from(CHUNK_ENTRIES) + e as u64;
                    if v > Vid::MAX.0 || idx >= max_idx {
                        return Err(Error::CorruptMeta {
                            vid,
                            reason: format!("bad allocation entry {idx} = {v:#x}"),
                        });
                    }
                    table.set(u32::try_from(idx).unwrap_or(u32::MAX), Vid(v));
                }
            }
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheep_objects::MemStore;

    #[test]
    fn unset_entries_are_unallocated_and_set_returns_the_old_owner() {
        let mut t = AllocTable::new();
        assert_eq!(t.get(5_000_000), Vid::NONE);
        assert_eq!(t.set(3, Vid(9)), Vid::NONE);
        assert_eq!(t.set(3, Vid(10)), Vid(9));
        assert_eq!(t.get(3), Vid(10));
        assert_eq!(t.set(1 << 22, Vid::NONE), Vid::NONE);
        assert_eq!(t.count(), 1);
    }

    #[test]
    fn iteration_is_in_index_order_and_respects_from() {
        let mut t = AllocTable::new();
        for i in [5000u32, 3, 1023, 1024] {
            t.set(i, Vid(i + 1));
        }
        let all: Vec<u32> = t.iter().map(|(i, _)| i).collect();
        assert_eq!(all, vec![3, 1023, 1024, 5000]);
        let from: Vec<u32> = t.iter_from(1024).map(|(i, _)| i).collect();
        assert_eq!(from, vec![1024, 5000]);
    }

    #[test]
    fn stored_chunks_load_back_identically() {
        let store = MemStore::new();
        let mut t = AllocTable::new();
        for i in [0u32, 7, 1500, 70_000] {
            t.set(i, Vid(42));
        }
        let chunks: Vec<(u32, Vec<u8>)> = t
            .chunk_numbers()
            .into_iter()
            .map(|c| (c, t.chunk_bytes(c)))
            .collect();
        AllocTable::store_chunks(&store, Vid(1), &chunks).unwrap();
        assert_eq!(AllocTable::load(&store, Vid(1), 1 << 24).unwrap(), t);
        assert!(AllocTable::load(&store, Vid(1), 100).is_err());
        assert_eq!(
            AllocTable::load(&store, Vid(2), 10).unwrap(),
            AllocTable::new()
        );
    }
}
