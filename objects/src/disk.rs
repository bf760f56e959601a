//! The on-disk object store.
//!
//! ```text
//! DIR/
//!   sheepfs-store          marker: "sheepfs-store v2\n" (v1 stores, without checksums, are refused)
//!   store-boot-id          kernel boot id of the last open (/proc/sys/kernel/random/boot_id)
//!   store-clean            present only between a clean close and the next open
//!   store-dirty.0, .1      intent logs: ids of data objects written recently (see below)
//!   store-reserve          1 MiB kept free for metadata when the file system fills up
//!   obj/<hi:08x>/<lo:08x>  one sparse file per object; hi = type bits | vid, lo = index
//!   obj/.../<lo>.tmp       a put_atomic in progress (removed on open)
//!   obj/.../<lo>.<n>.new   a data object being created (removed on open)
//! ```
//!
//! # Data objects
//!
//! A data object's file holds its 4 MiB of data at offsets `0..OBJECT_SIZE` (holes read as
//! zeros and take no space) and, right past them, a trailer:
//!
//! ```text
//! OBJECT_SIZE + 0     u32 magic "SHCK" (0x4b434853, little endian)
//!             + 4     u32 reserved (0)
//!             + 8     u64 version (as last given to set_version; 0 if never)
//!             + 16    1024 x u32 block checksums, little endian: entry i is
//!                     crc32c(block i) ^ crc32c(4096 zero bytes), so 0 means a zero block
//!                     (a hole or a block never written)
//! file length         OBJECT_SIZE + 4112
//! ```
//!
//! A data object is created whole (a temporary file with a fresh trailer, hard-linked into
//! place), so its file always has a trailer. Every write updates the checksums of the 4 KiB
//! blocks it touches: it computes them from the new data (reading and checking the rest of a
//! block it covers only in part), `pwrite`s the data (in pieces of at most 64 KiB),
//! then `pwrite`s the contiguous run of checksum entries at once. A 4 KiB write costs the data
//! `pwrite` and a 4-byte `pwrite`. Punch updates the checksums the same way. Every read checks
//! the blocks it touches (reading whole blocks when the request is not block aligned) and
//! fails with [`Error::CorruptObject`] on a mismatch, as does a write or punch that would
//! keep part of a damaged block (rewriting the whole block heals it). A write that fails
//! part way (ENOSPC) re-stamps the blocks it touched from what they now hold. Writers and
//! readers of one block are kept apart by striped locks (a reader takes them only to
//! re-check a mismatch). One file per object means one descriptor and one `fdatasync` for
//! data and trailer.
//! `set_version` `pwrite`s the 8-byte version only when it changes (the version is cached
//! next to the descriptor). [`ObjectStore::extents`] never reports the trailer;
//! [`ObjectStore::allocated`] subtracts the trailer's blocks (its size rounded up to the file
//! system's block size: exact on the usual file systems, an estimate elsewhere).
//!
//! Other objects (inodes, allocation tables, node-local metadata and log segments) are plain
//! sparse files of any length, with no trailer, version or checksum.
//!
//! # Crash consistency of the checksums
//!
//! Data and checksums written after an object's last `fdatasync` may disagree after an
//! unclean stop, which must not read as corruption. Two cases:
//!
//! * **Power loss or OS crash** (the kernel's boot id changed since the store was opened and
//!   it was not closed cleanly): any block written since its last sync may have reached the
//!   disk without its checksum or the other way round. `open` then re-computes the checksums
//!   of every data object from its data ("rescrub") before returning, and logs how many
//!   objects and blocks it re-stamped and how long it took.
//! * **The daemon was killed on the same boot** (SIGKILL): the page cache holds everything
//!   written, but a write killed between its data `pwrite` and its checksum `pwrite` leaves
//!   the two apart. So before a data object is first written in an *intent generation*, its
//!   id is appended to that generation's intent log (one 8-byte `pwrite`, never synced: the
//!   page cache survives a killed process). The generation advances about every second,
//!   zeroing in place the log of the generation before the last once none of its writes is
//!   still in flight, so the logs name only objects written in the last second or two;
//!   `open` re-stamps those objects. Then it `syncfs`es the store, so that nothing the killed
//!   process left unsynced in the page cache can later reach the disk apart from its checksum
//!   after the next clean close.
//!
//! `open` removes `store-clean` (durably) before anything is written; [`DiskStore::close`]
//! (also run on drop) syncs every object written since the open and then writes
//! `store-clean`, so a clean stop needs no rescrub even after a reboot. `open` records the
//! boot id only after a rescrub finished, so a rescrub interrupted by another crash is done
//! again in full. A re-stamp cannot tell damage from an unfinished write: damage done to a
//! re-stamped object while the store was down goes undetected.
//!
//! # Space
//!
//! `store-reserve` keeps 1 MiB allocated. When a write finds the file system full, the
//! store frees it, so that metadata (the cluster log, allocation tables) can still grow, and
//! refuses data writes and copies that need new space (`NoSpace`; overwrites of allocated
//! blocks and punches go on) until `statvfs` shows 2 MiB more free than when it ran out;
//! then it takes the reserve again. Checksum and version updates never need space: trailers
//! are written whole when objects are created, and the intent logs are zeroed in place.
//! The clean record is an empty file.
//!
//! # Durability
//!
//! Data writes are `pwrite`s into the object file and become durable on [`ObjectStore::sync`],
//! which `fdatasync`s the files and `fsync`s the directories of objects created or removed
//! since the last sync. [`ObjectStore::put_atomic`] writes a temporary file, syncs it, renames
//! it over the object and syncs the directory, so a crash leaves the old or the new content.

use crate::budget::{Buf, MemBudget};
use crate::error::{Error, Result};
use crate::oid::{ObjectKind, Oid, OBJECT_SIZE};
use crate::placement::mix64;
use crate::store::{
    block_crc, digest_of_content, digest_of_crcs, unversioned, ObjectMeta, ObjectStore, StoreStats,
    BLOCK_BYTES, OBJECT_BLOCKS, ZERO_BLOCK_CRC,
};
use lru::LruCache;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::unistd::{lseek, Whence};
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tracing::{info, warn};

const MARKER: &str = "sheepfs-store v2\n";
const MARKER_V1: &str = "sheepfs-store v1\n";
const BOOT_ID_FILE: &str = "store-boot-id";
const CLEAN_FILE: &str = "store-clean";
const INTENT_FILES: [&str; 2] = ["store-dirty.0", "store-dirty.1"];
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// "SHCK", little endian.
const TRAILER_MAGIC: u32 = 0x4b43_4853;
const HEADER_LEN: usize = 16;
const CRCS_AT: u64 = OBJECT_SIZE + HEADER_LEN as u64;
const CRCS_LEN: usize = 4 * OBJECT_BLOCKS;
const TRAILER_LEN: usize = HEADER_LEN + CRCS_LEN;
/// Length of a data object's file.
const FILE_LEN: u64 = OBJECT_SIZE + TRAILER_LEN as u64;
const BLOCK: u64 = BLOCK_BYTES as u64;

/// Open descriptors kept, spread over [`FD_SHARDS`] independently locked shards.
const FD_CACHE: usize = 1024;
const FD_SHARDS: usize = 16;
const COPY_CHUNK: usize = 1 << 20;
/// How long a copy or check buffer waits for room in the memory budget.
const CHUNK_PATIENCE: Duration = Duration::from_secs(1);
/// Largest single `pwrite` into an object file. Linux ext4 backs a large buffered write with
/// a large folio, and every later small write into that folio walks all of its buffer heads
/// (measured: 4k random writes after a 4 MiB-write fill ran at a third of the speed they reach
/// after a 64 KiB-write fill); smaller pieces keep folios small.
const WRITE_PIECE: usize = 64 << 10;
/// Locks keeping a block's data and checksum updates apart from its readers.
const STRIPES: usize = 256;
/// Consecutive blocks sharing one stripe lock.
const STRIPE_BLOCKS: u64 = 16;
/// How often the intent generation advances.
const ROTATE_MS: u64 = 1000;
/// Bytes of zeros each intent log keeps allocated (records are zeroed in place rather than
/// truncated, so that recording a write never needs space on a full file system).
const INTENT_PREALLOC: usize = 64 << 10;
/// Space kept back in `store-reserve` for metadata (see the module docs).
const RESERVE_BYTES: u64 = 1 << 20;
const RESERVE_FILE: &str = "store-reserve";
/// Threads re-stamping objects after a crash.
const RESCRUB_THREADS: usize = 4;

/// An open object file and what is cached about it.
struct ObjFile {
    file: File,
    /// A data object's version, as in its trailer.
    version: AtomicU64,
    /// The intent generation this object was last recorded in (`u64::MAX`: none).
    marked: AtomicU64,
    /// Written since the store last synced it (see `DiskStore::unsynced`).
    dirty: AtomicBool,
}

impl ObjFile {
    fn new(file: File, version: u64, marked: u64) -> ObjFile {
        ObjFile {
            file,
            version: AtomicU64::new(version),
            marked: AtomicU64::new(marked),
            dirty: AtomicBool::new(false),
        }
    }
}

/// One independently locked part of the descriptor cache.
type FdShard = Mutex<LruCache<Oid, Arc<ObjFile>>>;

/// Objects as sparse files under a directory.
pub struct DiskStore {
    root: PathBuf,
    fds: Box<[FdShard]>,
    /// Directories whose entries changed since the last sync.
    dirty_dirs: Mutex<HashSet<PathBuf>>,
    /// Striped block locks (see [`STRIPES`]).
    stripes: Box<[Mutex<()>]>,
    intent: Intent,
    reserve: Reserve,
    /// Objects written since they were last synced: what [`DiskStore::close`] syncs.
    unsynced: Mutex<HashSet<Oid>>,
    /// Data changes hold it shared; `close` exclusively. True while the clean record is on
    /// disk (after `close`): the next data change removes it first.
    gate: RwLock<bool>,
    /// Tests: drop without closing, as a killed process would.
    abandon: AtomicBool,
    /// Objects and blocks the last `open` re-stamped.
    rescrubbed: (u64, u64),
    tmp_seq: AtomicU64,
    /// Where the copy and verify buffers come from, once set ([`DiskStore::set_budget`]).
    budget: OnceLock<Arc<MemBudget>>,
}

/// The intent logs: which data objects may have a write in flight (see the module docs).
struct Intent {
    logs: [File; 2],
    ends: [AtomicU64; 2],
    gen: AtomicU64,
    inflight: [AtomicU64; 2],
    epoch: Instant,
    next_rotate_ms: AtomicU64,
    rotating: Mutex<()>,
}

/// A write in flight in generation `gen`.
struct InFlight<'a> {
    intent: &'a Intent,
    gen: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.intent.inflight[parity(self.gen)].fetch_sub(1, Ordering::SeqCst);
    }
}

fn parity(gen: u64) -> usize {
    usize::from(gen & 1 == 1)
}

impl Intent {
    fn open(root: &Path) -> std::io::Result<Intent> {
        let open = |name: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(root.join(name))
        };
        Ok(Intent {
            logs: [open(INTENT_FILES[0])?, open(INTENT_FILES[1])?],
            ends: [AtomicU64::new(0), AtomicU64::new(0)],
            gen: AtomicU64::new(0),
            inflight: [AtomicU64::new(0), AtomicU64::new(0)],
            epoch: Instant::now(),
            next_rotate_ms: AtomicU64::new(ROTATE_MS),
            rotating: Mutex::new(()),
        })
    }

    /// Every object id either log names.
    fn recorded(&self) -> std::io::Result<BTreeSet<Oid>> {
        let mut out = BTreeSet::new();
        for log in &self.logs {
            let mut bytes = vec![0u8; us(log.metadata()?.len())];
            log.read_exact_at(&mut bytes, 0)?;
            for rec in bytes.chunks_exact(8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(rec);
                // Zeros: cleared or never written (`Oid(0)` names no object: Vid 0 is none).
                if b != [0; 8] {
                    out.insert(Oid(u64::from_le_bytes(b)));
                }
            }
        }
        Ok(out)
    }

    /// Empties both logs, leaving them [`INTENT_PREALLOC`] bytes of zeros.
    fn truncate(&self) -> std::io::Result<()> {
        for (log, end) in self.logs.iter().zip(&self.ends) {
            log.set_len(0)?;
            log.write_all_at(&[0u8; INTENT_PREALLOC], 0)?;
            end.store(0, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Zeroes the records of log `p` in place (no space is freed or allocated).
    fn clear(&self, p: usize) -> std::io::Result<()> {
        let end = self.ends[p].load(Ordering::SeqCst);
        let zeros = [0u8; INTENT_PREALLOC];
        let mut at = 0;
        while at < end {
            let n = (end - at).min(INTENT_PREALLOC as u64);
            self.logs[p].write_all_at(&zeros[..us(n)], at)?;
            at += n;
        }
        self.ends[p].store(0, Ordering::SeqCst);
        Ok(())
    }

    /// Registers a write in flight in the current generation.
    fn enter(&self) -> InFlight<'_> {
        self.maybe_rotate();
        loop {
            let gen = self.gen.load(Ordering::SeqCst);
            self.inflight[parity(gen)].fetch_add(1, Ordering::SeqCst);
            if self.gen.load(Ordering::SeqCst) == gen {
                return InFlight { intent: self, gen };
            }
            self.inflight[parity(gen)].fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn maybe_rotate(&self) {
        let now = self.now_ms();
        if now >= self.next_rotate_ms.load(Ordering::Relaxed) && self.rotate() {
            self.next_rotate_ms
                .store(now + ROTATE_MS, Ordering::Relaxed);
        }
    }

    /// Starts the next generation, reusing the log of the one before the current one once
    /// none of its writes is in flight. Returns false if it could not yet.
    fn rotate(&self) -> bool {
        let Some(_one) = self.rotating.try_lock() else {
            return false;
        };
        let gen = self.gen.load(Ordering::SeqCst);
        let old = parity(gen + 1);
        if self.inflight[old].load(Ordering::SeqCst) != 0 {
            return false;
        }
        if let Err(e) = self.clear(old) {
            warn!(error = %e, "cannot clear an intent log; keeping its generation");
            return false;
        }
        self.gen.store(gen + 1, Ordering::SeqCst);
        true
    }

    /// Records that `oid` is written in generation `gen` (unless `f` says it already is).
    fn record(&self, w: &InFlight<'_>, oid: Oid, f: Option<&ObjFile>) -> Result<()> {
        if f.is_some_and(|f| f.marked.load(Ordering::SeqCst) == w.gen) {
            return Ok(());
        }
        let p = parity(w.gen);
        let at = self.ends[p].fetch_add(8, Ordering::SeqCst);
        self.logs[p]
            .write_all_at(&oid.0.to_le_bytes(), at)
            .map_err(|e| Error::io(oid, e))?;
        if let Some(f) = f {
            f.marked.store(w.gen, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// The space kept back for metadata, and the "full" state (see the module docs).
struct Reserve {
    root: PathBuf,
    /// Free bytes (`statvfs` `f_bfree`) when the store ran out of space: `Some` while data
    /// changes that need new space are refused.
    floor: Mutex<Option<u64>>,
    full: AtomicBool,
}

impl Reserve {
    fn free_bytes(&self) -> u64 {
        nix::sys::statvfs::statvfs(&self.root)
            .map(|st| st.blocks_free() * st.fragment_size())
            .unwrap_or(0)
    }

    /// Makes `store-reserve` hold [`RESERVE_BYTES`] of written zeros; false if there is no
    /// room for it (then it is removed).
    fn take(&self) -> bool {
        let path = self.root.join(RESERVE_FILE);
        if fs::metadata(&path).is_ok_and(|m| m.len() >= RESERVE_BYTES) {
            return true;
        }
        let zeros = [0u8; 1 << 16];
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(|f| {
                (0..RESERVE_BYTES / zeros.len() as u64)
                    .try_for_each(|i| f.write_all_at(&zeros, i * zeros.len() as u64))
            });
        if written.is_err() {
            let _ = fs::remove_file(&path);
        }
        written.is_ok()
    }

    /// Data writes ran out of space: frees the reserve for metadata and refuses data
    /// changes that need new space until space comes back.
    fn ran_out(&self) {
        let mut floor = self.floor.lock();
        if floor.is_some() {
            return;
        }
        *floor = Some(self.free_bytes());
        let _ = fs::remove_file(self.root.join(RESERVE_FILE));
        self.full.store(true, Ordering::SeqCst);
        warn!(store = %self.root.display(),
              "the store is full: new data is refused and its 1 MiB reserve is freed for metadata");
    }

    /// Whether a data change needing up to `need` new bytes may go ahead; when the store is
    /// full, looks whether space came back (then takes the reserve again and goes on).
    fn admits(&self, need: u64) -> bool {
        if !self.full.load(Ordering::Relaxed) {
            return true;
        }
        let mut floor = self.floor.lock();
        let Some(at) = *floor else {
            return true;
        };
        if self.free_bytes() >= at + 2 * RESERVE_BYTES + need && self.take() {
            *floor = None;
            self.full.store(false, Ordering::SeqCst);
            info!(store = %self.root.display(), "the store has space again");
            return true;
        }
        need == 0
    }
}

/// Whether `offset..end` of a file has a hole (a write there may need new space).
fn has_hole(file: &File, offset: u64, end: u64) -> bool {
    let Ok(at) = i64::try_from(offset) else {
        return true;
    };
    lseek(file.as_raw_fd(), at, Whence::SeekHole).map_or(true, |h| h.unsigned_abs() < end)
}

/// Guards of the stripe locks of some blocks.
type Locks<'a> = Vec<MutexGuard<'a, ()>>;

/// A set of stripe indexes.
#[derive(Default)]
struct StripeSet([u64; STRIPES / 64]);

impl StripeSet {
    fn add(&mut self, oid: Oid, b0: u64, b1: u64) {
        for group in b0 / STRIPE_BLOCKS..b1.div_ceil(STRIPE_BLOCKS) {
            let h = mix64(oid.0 ^ group.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let s = usize::try_from(h % STRIPES as u64).unwrap_or(0);
            self.0[s / 64] |= 1 << (s % 64);
        }
    }
}

fn is_data(oid: Oid) -> bool {
    oid.kind() == ObjectKind::Data
}

/// A checksum entry as stored: 0 for a zero block.
fn entry_of(block: &[u8]) -> u32 {
    block_crc(block) ^ ZERO_BLOCK_CRC
}

fn entries_at(b0: u64) -> u64 {
    CRCS_AT + 4 * b0
}

/// `u64` block numbers and offsets below `FILE_LEN` fit in a `usize`.
fn us(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn read_boot_id() -> Option<String> {
    fs::read_to_string(BOOT_ID_PATH)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

impl DiskStore {
    /// Takes the buffers of copies and checks from `budget` from now on (set once).
    pub fn set_budget(&self, budget: Arc<MemBudget>) {
        let _ = self.budget.set(budget);
    }

    /// A buffer of [`COPY_CHUNK`] bytes, from the budget if one is set; it waits for room at
    /// most [`CHUNK_PATIENCE`], since its caller may hold locks the budget's holders wait for.
    fn chunk_buf(&self) -> Buf {
        match self.budget.get() {
            Some(b) => b.buf_within(COPY_CHUNK, CHUNK_PATIENCE),
            None => Buf::from(vec![0u8; COPY_CHUNK]),
        }
    }

    /// Opens (creating if empty or missing) the store at `root`, re-stamping checksums first
    /// if it was not closed cleanly (see the module docs).
    pub fn open(root: &Path) -> Result<DiskStore> {
        DiskStore::open_as(root, read_boot_id().as_deref())
    }

    /// [`DiskStore::open`] as if the kernel's boot id were `boot_id` (`None`: unknown).
    pub(crate) fn open_as(root: &Path, boot_id: Option<&str>) -> Result<DiskStore> {
        let bad = |reason: String| Error::BadStore {
            path: root.display().to_string(),
            reason,
        };
        fs::create_dir_all(root.join("obj")).map_err(|e| bad(e.to_string()))?;
        let marker = root.join("sheepfs-store");
        let existing = match fs::read_to_string(&marker) {
            Ok(s) if s == MARKER => true,
            Ok(s) if s == MARKER_V1 => {
                return Err(bad(
                    "this store has the v1 format (objects without checksums or versions), \
                     which this sheepfs cannot open; there is no migration: start this host \
                     with an empty store directory and let the cluster copy the objects back"
                        .to_owned(),
                ))
            }
            Ok(s) => return Err(bad(format!("unknown store marker {s:?}"))),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                write_durably(&marker, MARKER.as_bytes()).map_err(|e| bad(e.to_string()))?;
                sync_dir(root).map_err(|e| bad(e.to_string()))?;
                false
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let mut store = DiskStore {
            root: root.to_path_buf(),
            fds: (0..FD_SHARDS)
                .map(|_| {
                    Mutex::new(LruCache::new(
                        NonZeroUsize::new(FD_CACHE / FD_SHARDS).unwrap_or(NonZeroUsize::MIN),
                    ))
                })
                .collect(),
            dirty_dirs: Mutex::new(HashSet::new()),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            intent: Intent::open(root).map_err(|e| bad(e.to_string()))?,
            reserve: Reserve {
                root: root.to_path_buf(),
                floor: Mutex::new(None),
                full: AtomicBool::new(false),
            },
            unsynced: Mutex::new(HashSet::new()),
            gate: RwLock::new(false),
            // Until the open succeeds: a failed open must not record a clean close.
            abandon: AtomicBool::new(true),
            rescrubbed: (0, 0),
            tmp_seq: AtomicU64::new(0),
            budget: OnceLock::new(),
        };
        store.remove_temporaries()?;
        let clean_path = root.join(CLEAN_FILE);
        let clean = clean_path.exists();
        let boot_path = root.join(BOOT_ID_FILE);
        let stored_boot = fs::read_to_string(&boot_path)
            .ok()
            .map(|s| s.trim().to_owned());
        if clean {
            fs::remove_file(&clean_path).map_err(|e| bad(e.to_string()))?;
            sync_dir(root).map_err(|e| bad(e.to_string()))?;
        } else if existing {
            let same_boot = boot_id.is_some() && stored_boot.as_deref() == boot_id;
            let started = Instant::now();
            let (what, oids) = if same_boot {
                let logged = store.intent.recorded().map_err(|e| bad(e.to_string()))?;
                ("written just before the stop", logged.into_iter().collect())
            } else {
                ("every object (the host restarted)", store.list()?)
            };
            let oids: Vec<Oid> = oids.into_iter().filter(|&o| is_data(o)).collect();
            let (objects, blocks) = store.rescrub(&oids)?;
            nix::unistd::syncfs(
                File::open(root)
                    .map_err(|e| bad(e.to_string()))?
                    .as_raw_fd(),
            )
            .map_err(|e| bad(format!("syncfs: {e}")))?;
            info!(
                store = %root.display(),
                checked = oids.len(),
                objects,
                blocks,
                secs = started.elapsed().as_secs_f64(),
                "the store was not closed cleanly: re-stamped the checksums of data objects {what}"
            );
            store.rescrubbed = (objects, blocks);
        }
        store.intent.truncate().map_err(|e| bad(e.to_string()))?;
        if let Some(id) = boot_id {
            if stored_boot.as_deref() != Some(id) {
                write_durably(&boot_path, format!("{id}\n").as_bytes())
                    .and_then(|()| sync_dir(root))
                    .map_err(|e| bad(e.to_string()))?;
            }
        }
        if !store.reserve.take() {
            store.reserve.ran_out();
        }
        store.abandon.store(false, Ordering::SeqCst);
        Ok(store)
    }

    /// The directory holding the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Syncs every object written since the store was opened, then records that the store
    /// was closed cleanly, so that the next `open` needs no rescrub even after a reboot.
    /// Runs on drop too. A change after `close` re-opens the store (removes the record).
    /// Waits for data changes in progress.
    pub fn close(&self) -> Result<()> {
        let mut closed = self.gate.write();
        if *closed {
            return Ok(());
        }
        let oids: Vec<Oid> = self.unsynced.lock().iter().copied().collect();
        self.sync(&oids)?;
        write_durably(&self.root.join(CLEAN_FILE), b"")
            .and_then(|()| sync_dir(&self.root))
            .map_err(|e| Error::io(Oid(0), e))?;
        *closed = true;
        Ok(())
    }

    /// Passes `r` on, noting when the store ran out of space.
    fn out_of_space(&self, r: Result<()>) -> Result<()> {
        if matches!(r, Err(Error::NoSpace)) {
            self.reserve.ran_out();
        }
        r
    }

    /// Admits a data change, first removing the clean record if the store was closed.
    fn admit(&self) -> Result<RwLockReadGuard<'_, bool>> {
        loop {
            let open = self.gate.read();
            if !*open {
                return Ok(open);
            }
            drop(open);
            let mut closed = self.gate.write();
            if *closed {
                match fs::remove_file(self.root.join(CLEAN_FILE)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(Oid(0), e)),
                }
                sync_dir(&self.root).map_err(|e| Error::io(Oid(0), e))?;
                *closed = false;
            }
        }
    }

    fn fds(&self, oid: Oid) -> &FdShard {
        let h = oid.0 ^ (oid.0 >> 32) ^ (oid.0 >> 17);
        &self.fds[usize::try_from(h % FD_SHARDS as u64).unwrap_or(0)]
    }

    fn dir_of(&self, oid: Oid) -> PathBuf {
        self.root.join("obj").join(format!("{:08x}", oid.0 >> 32))
    }

    fn path_of(&self, oid: Oid) -> PathBuf {
        self.dir_of(oid)
            .join(format!("{:08x}", oid.0 & 0xffff_ffff))
    }

    /// Returns the cached descriptor of an object, opening it; with `create`, creating it
    /// (a data object is first recorded in the intent log of that write).
    fn file(&self, oid: Oid, create: Option<&InFlight<'_>>) -> Result<Arc<ObjFile>> {
        if let Some(f) = self.fds(oid).lock().get(&oid) {
            return Ok(f.clone());
        }
        let path = self.path_of(oid);
        let mut created = None;
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => match create {
                Some(w) => {
                    let (f, marked) = self.create_file(oid, &path, w)?;
                    created = Some(marked);
                    f
                }
                None => return Err(Error::NotFound(oid)),
            },
            Err(e) => return Err(Error::io(oid, e)),
        };
        let mut shard = self.fds(oid).lock();
        if let Some(f) = shard.get(&oid) {
            return Ok(f.clone());
        }
        // Read under the shard lock: a version change (made under it) is either already in
        // the file or will update the entry inserted here.
        let version = if is_data(oid) {
            read_header(&file, oid)?
        } else {
            0
        };
        let f = Arc::new(ObjFile::new(file, version, created.unwrap_or(u64::MAX)));
        shard.put(oid, f.clone());
        Ok(f)
    }

    /// Creates an object file: a data object whole, with its trailer, so that no other
    /// opener ever sees it without one. Returns it and the generation it was recorded in.
    fn create_file(&self, oid: Oid, path: &Path, w: &InFlight<'_>) -> Result<(File, u64)> {
        let dir = self.dir_of(oid);
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(|e| Error::io(oid, e))?;
            self.dirty_dirs.lock().insert(self.root.join("obj"));
        }
        if !is_data(oid) {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| Error::io(oid, e))?;
            self.dirty_dirs.lock().insert(dir);
            return Ok((f, u64::MAX));
        }
        self.intent.record(w, oid, None)?;
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{seq}.new"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(oid, e))?;
        let linked = f
            .write_all_at(&trailer(0, &[0; CRCS_LEN]), OBJECT_SIZE)
            .and_then(|()| fs::hard_link(&tmp, path));
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                self.dirty_dirs.lock().insert(dir);
                Ok((f, w.gen))
            }
            // Another writer created it meanwhile: use theirs.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io(oid, e))?;
                Ok((f, w.gen))
            }
            Err(e) => Err(Error::io(oid, e)),
        }
    }

    fn remove_temporaries(&self) -> Result<()> {
        for dir in self.subdirs()? {
            for entry in fs::read_dir(&dir).map_err(|e| Error::io(Oid(0), e))? {
                let path = entry.map_err(|e| Error::io(Oid(0), e))?.path();
                if path.extension().is_some_and(|x| x == "tmp" || x == "new") {
                    fs::remove_file(&path).map_err(|e| Error::io(Oid(0), e))?;
                }
            }
        }
        Ok(())
    }

    fn subdirs(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("obj")).map_err(|e| Error::io(Oid(0), e))? {
            let entry = entry.map_err(|e| Error::io(Oid(0), e))?;
            if entry
                .file_type()
                .map_err(|e| Error::io(Oid(0), e))?
                .is_dir()
            {
                out.push(entry.path());
            }
        }
        Ok(out)
    }

    /// Locks the stripes of the given blocks of the given objects, in a global order.
    fn lock(&self, ranges: &[(Oid, u64, u64)]) -> Locks<'_> {
        let mut set = StripeSet::default();
        for &(oid, b0, b1) in ranges {
            set.add(oid, b0, b1);
        }
        let mut out = Vec::new();
        for (w, &bits) in set.0.iter().enumerate() {
            let mut bits = bits;
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                out.push(self.stripes[w * 64 + b].lock());
            }
        }
        out
    }

    /// Notes that `oid` changed, for `close`.
    fn touched(&self, f: &ObjFile, oid: Oid) {
        if !f.dirty.load(Ordering::SeqCst) && !f.dirty.swap(true, Ordering::SeqCst) {
            self.unsynced.lock().insert(oid);
        }
    }

    /// Fills `buf` (whole blocks from block `b0`) and checks it; a mismatch is checked again
    /// under the blocks' locks, in case a writer was between its data and its checksum.
    fn read_blocks(&self, f: &ObjFile, oid: Oid, b0: u64, buf: &mut [u8]) -> Result<()> {
        let b1 = b0 + (buf.len() / BLOCK_BYTES) as u64;
        let mut entries = [0u8; CRCS_LEN];
        let entries = &mut entries[..4 * us(b1 - b0)];
        read_full_at(&f.file, oid, b0 * BLOCK, buf)?;
        read_full_at(&f.file, oid, entries_at(b0), entries)?;
        if blocks_match(buf, entries) {
            return Ok(());
        }
        let _locks = self.lock(&[(oid, b0, b1)]);
        read_full_at(&f.file, oid, b0 * BLOCK, buf)?;
        read_full_at(&f.file, oid, entries_at(b0), entries)?;
        if blocks_match(buf, entries) {
            Ok(())
        } else {
            Err(Error::CorruptObject(oid))
        }
    }

    fn read_data(&self, oid: Oid, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        check_range(oid, offset, len)?;
        let f = self.file(oid, None)?;
        if buf.is_empty() {
            return Ok(());
        }
        let (b0, b1) = (offset / BLOCK, (offset + len).div_ceil(BLOCK));
        if offset.is_multiple_of(BLOCK) && len.is_multiple_of(BLOCK) {
            return self.read_blocks(&f, oid, b0, buf);
        }
        let mut whole = vec![0u8; us(b1 - b0) * BLOCK_BYTES];
        self.read_blocks(&f, oid, b0, &mut whole)?;
        let skip = us(offset - b0 * BLOCK);
        buf.copy_from_slice(&whole[skip..skip + buf.len()]);
        Ok(())
    }

    /// Writes `data` at `offset` (`None`: punches a hole there) and updates the checksums.
    fn update_data(&self, oid: Oid, offset: u64, len: u64, data: Option<&[u8]>) -> Result<()> {
        let full = self.reserve.full.load(Ordering::Relaxed);
        if full && data.is_some() && !self.exists(oid)? && !self.reserve.admits(FILE_LEN) {
            return Err(Error::NoSpace);
        }
        let _open = self.admit()?;
        let w = self.intent.enter();
        let f = self.file(oid, data.map(|_| &w))?;
        if full
            && data.is_some()
            && has_hole(&f.file, offset, offset + len)
            && !self.reserve.admits(len)
        {
            return Err(Error::NoSpace);
        }
        self.intent.record(&w, oid, Some(&f))?;
        let end = offset + len;
        let (b0, b1) = (offset / BLOCK, end.div_ceil(BLOCK));
        let n = us(b1 - b0);
        let mut run = [0u8; CRCS_LEN];
        let run = &mut run[..4 * n];
        let _locks = self.lock(&[(oid, b0, b1)]);
        let partial = |b: u64| offset > b * BLOCK || end < (b + 1) * BLOCK;
        if partial(b0) || partial(b1 - 1) {
            read_full_at(&f.file, oid, entries_at(b0), run)?;
        }
        for (i, b) in (b0..b1).enumerate() {
            let (lo, hi) = ((b * BLOCK).max(offset), ((b + 1) * BLOCK).min(end));
            let entry = if !partial(b) {
                data.map_or(0, |d| entry_of(&d[us(lo - offset)..us(hi - offset)]))
            } else {
                // The rest of the block stays: check it before vouching for it anew.
                let mut block = [0u8; BLOCK_BYTES];
                read_full_at(&f.file, oid, b * BLOCK, &mut block)?;
                if entry_of(&block).to_le_bytes() != run[4 * i..4 * i + 4] {
                    return Err(Error::CorruptObject(oid));
                }
                let part = &mut block[us(lo - b * BLOCK)..us(hi - b * BLOCK)];
                match data {
                    Some(d) => part.copy_from_slice(&d[us(lo - offset)..us(hi - offset)]),
                    None => part.fill(0),
                }
                entry_of(&block)
            };
            run[4 * i..4 * i + 4].copy_from_slice(&entry.to_le_bytes());
        }
        let changed = match data {
            Some(d) => {
                let mut at = offset;
                d.chunks(WRITE_PIECE).try_for_each(|piece| {
                    f.file.write_all_at(piece, at)?;
                    at += piece.len() as u64;
                    Ok(())
                })
            }
            None => punch_hole(&f.file, offset, len),
        };
        self.touched(&f, oid);
        if let Err(e) = changed {
            // Part of the change may have landed (a write cut short by ENOSPC): stamp the
            // blocks as they now are. The trailer is allocated, so this needs no space.
            if let Err(e2) = restamp(&f.file, oid, b0, run) {
                warn!(%oid, error = %e2, "cannot re-stamp the blocks of a failed write");
            }
            return Err(Error::io(oid, e));
        }
        f.file
            .write_all_at(run, entries_at(b0))
            .map_err(|e| Error::io(oid, e))?;
        Ok(())
    }

    /// Copies data object `src` over `dst`, trailer (version and checksums) included.
    fn copy_data(&self, src: Oid, dst: Oid) -> Result<()> {
        let from = self.file(src, None)?;
        if !self.reserve.admits(FILE_LEN) {
            return Err(Error::NoSpace);
        }
        self.remove(dst)?;
        let _open = self.admit()?;
        let w = self.intent.enter();
        let to = self.file(dst, Some(&w))?;
        self.intent.record(&w, dst, Some(&to))?;
        let mut buf = self.chunk_buf();
        let mut crcs = [0u8; CRCS_LEN];
        // A chunk at a time, its data and checksums under its locks (a writer of the source
        // waits for one chunk at most).
        let per = (COPY_CHUNK / BLOCK_BYTES) as u64;
        for b0 in (0..OBJECT_BLOCKS as u64).step_by(us(per)) {
            let b1 = b0 + per;
            let _locks = self.lock(&[(src, b0, b1), (dst, b0, b1)]);
            let run = &mut crcs[4 * us(b0)..4 * us(b1)];
            read_full_at(&from.file, src, entries_at(b0), run)?;
            for ext in data_extents(&from.file, src, b0 * BLOCK, b1 * BLOCK)? {
                let chunk = &mut buf[..us(ext.end - ext.start)];
                read_full_at(&from.file, src, ext.start, chunk)?;
                let mut pos = ext.start;
                for piece in chunk.chunks(WRITE_PIECE) {
                    to.file
                        .write_all_at(piece, pos)
                        .map_err(|e| Error::io(dst, e))?;
                    pos += piece.len() as u64;
                }
            }
            to.file
                .write_all_at(run, entries_at(b0))
                .map_err(|e| Error::io(dst, e))?;
        }
        let version = read_header(&from.file, src)?;
        to.file
            .write_all_at(&version.to_le_bytes(), OBJECT_SIZE + 8)
            .map_err(|e| Error::io(dst, e))?;
        to.version.store(version, Ordering::SeqCst);
        self.touched(&to, dst);
        Ok(())
    }

    /// Copies between objects of which one is not a data object, through read and write.
    fn copy_through(&self, src: Oid, dst: Oid) -> Result<()> {
        let ext = self.extents(src)?;
        if !self.exists(src)? {
            return Err(Error::NotFound(src));
        }
        self.remove(dst)?;
        self.write(dst, 0, &[])?;
        let mut buf = self.chunk_buf();
        for r in ext {
            let end = if is_data(dst) {
                r.end.min(OBJECT_SIZE)
            } else {
                r.end
            };
            let mut pos = r.start;
            while pos < end {
                let n = us((end - pos).min(COPY_CHUNK as u64));
                self.read(src, pos, &mut buf[..n])?;
                self.write(dst, pos, &buf[..n])?;
                pos += n as u64;
            }
        }
        Ok(())
    }

    /// Re-computes the checksums of `oids` from their data; returns the objects and blocks
    /// whose checksums (or trailer) changed.
    fn rescrub(&self, oids: &[Oid]) -> Result<(u64, u64)> {
        let next = AtomicUsize::new(0);
        let totals = Mutex::new((0u64, 0u64, None::<Error>));
        let threads = RESCRUB_THREADS.min(oids.len().div_ceil(16)).max(1);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&oid) = oids.get(i) else { break };
                    match rescrub_one(&self.path_of(oid), oid) {
                        Ok(0) => {}
                        Ok(blocks) => {
                            let mut t = totals.lock();
                            t.0 += 1;
                            t.1 += blocks;
                        }
                        Err(e) => {
                            totals.lock().2.get_or_insert(e);
                        }
                    }
                });
            }
        });
        let (objects, blocks, err) = totals.into_inner();
        match err {
            Some(e) => Err(e),
            None => Ok((objects, blocks)),
        }
    }

    /// Tests: the objects and blocks the last `open` re-stamped.
    #[cfg(test)]
    fn rescrubbed(&self) -> (u64, u64) {
        self.rescrubbed
    }

    /// Tests: drops the store as a killed process would, without closing it.
    #[cfg(test)]
    fn kill(self) {
        self.abandon.store(true, Ordering::SeqCst);
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        if self.abandon.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.close() {
            warn!(store = %self.root.display(), error = %e,
                  "closing the store failed: the next open re-stamps checksums");
        }
    }
}

/// Writes the checksum entries of the blocks from `b0` (as many as `run` holds) from what
/// they hold now.
fn restamp(file: &File, oid: Oid, b0: u64, run: &mut [u8]) -> std::io::Result<()> {
    let mut block = [0u8; BLOCK_BYTES];
    for (i, e) in run.chunks_exact_mut(4).enumerate() {
        read_full_at(file, oid, (b0 + i as u64) * BLOCK, &mut block)
            .map_err(|_| std::io::Error::from(ErrorKind::Other))?;
        e.copy_from_slice(&entry_of(&block).to_le_bytes());
    }
    file.write_all_at(run, entries_at(b0))
}

/// A trailer holding `version` and the checksum entries `crcs`.
fn trailer(version: u64, crcs: &[u8; CRCS_LEN]) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..4].copy_from_slice(&TRAILER_MAGIC.to_le_bytes());
    t[8..16].copy_from_slice(&version.to_le_bytes());
    t[HEADER_LEN..].copy_from_slice(crcs);
    t
}

/// The version in a trailer header, or `CorruptObject` if it is not one.
fn parse_header(h: &[u8], oid: Oid) -> Result<u64> {
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&h[..4]);
    if u32::from_le_bytes(magic) != TRAILER_MAGIC {
        return Err(Error::CorruptObject(oid));
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&h[8..16]);
    Ok(u64::from_le_bytes(v))
}

fn read_header(file: &File, oid: Oid) -> Result<u64> {
    let mut h = [0u8; HEADER_LEN];
    read_full_at(file, oid, OBJECT_SIZE, &mut h)?;
    parse_header(&h, oid)
}

/// Whether every block of `buf` matches its entry in `entries`.
fn blocks_match(buf: &[u8], entries: &[u8]) -> bool {
    buf.chunks(BLOCK_BYTES)
        .zip(entries.chunks_exact(4))
        .all(|(b, e)| entry_of(b).to_le_bytes() == e)
}

/// Re-computes the checksum entries of one data object file; returns how many changed
/// (all of them if the trailer was missing or damaged).
fn rescrub_one(path: &Path, oid: Oid) -> Result<u64> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(oid, e)),
    };
    let len = file.metadata().map_err(|e| Error::io(oid, e))?.len();
    let mut old = [0u8; TRAILER_LEN];
    read_full_at(&file, oid, OBJECT_SIZE, &mut old)?;
    let header = parse_header(&old, oid).ok().filter(|_| len >= FILE_LEN);
    let mut crcs = [0u8; CRCS_LEN];
    let mut buf = vec![0u8; COPY_CHUNK];
    for ext in data_extents(&file, oid, 0, OBJECT_SIZE)? {
        let (b0, b1) = (ext.start / BLOCK, ext.end.div_ceil(BLOCK));
        let mut b = b0;
        while b < b1 {
            let n = (b1 - b).min((COPY_CHUNK / BLOCK_BYTES) as u64);
            let chunk = &mut buf[..us(n) * BLOCK_BYTES];
            read_full_at(&file, oid, b * BLOCK, chunk)?;
            for (i, block) in chunk.chunks(BLOCK_BYTES).enumerate() {
                let at = 4 * us(b) + 4 * i;
                crcs[at..at + 4].copy_from_slice(&entry_of(block).to_le_bytes());
            }
            b += n;
        }
    }
    let changed = crcs
        .chunks_exact(4)
        .zip(old[HEADER_LEN..].chunks_exact(4))
        .filter(|(a, b)| a != b)
        .count() as u64;
    match header {
        Some(_) if changed == 0 => Ok(0),
        Some(_) => {
            file.write_all_at(&crcs, CRCS_AT)
                .map_err(|e| Error::io(oid, e))?;
            Ok(changed)
        }
        None => {
            file.set_len(FILE_LEN).map_err(|e| Error::io(oid, e))?;
            file.write_all_at(&trailer(0, &crcs), OBJECT_SIZE)
                .map_err(|e| Error::io(oid, e))?;
            Ok(changed.max(1))
        }
    }
}

fn check_range(oid: Oid, offset: u64, len: u64) -> Result<()> {
    if offset.checked_add(len).is_none_or(|end| end > OBJECT_SIZE) {
        return Err(Error::OutOfRange { oid, offset, len });
    }
    Ok(())
}

fn punch_hole(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    let too_far = |_| std::io::Error::from_raw_os_error(nix::libc::EFBIG);
    let (off, l) = (
        i64::try_from(offset).map_err(too_far)?,
        i64::try_from(len).map_err(too_far)?,
    );
    fallocate(file.as_raw_fd(), flags, off, l).map_err(std::io::Error::from)
}

fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parse_name(dir: &str, file: &str) -> Option<Oid> {
    if dir.len() != 8 || file.len() != 8 {
        return None;
    }
    let hi = u64::from_str_radix(dir, 16).ok()?;
    let lo = u64::from_str_radix(file, 16).ok()?;
    Some(Oid((hi << 32) | lo))
}

/// Reads `buf.len()` bytes at `offset`, zero-filling past the end of the file.
fn read_full_at(file: &File, oid: Oid, offset: u64, buf: &mut [u8]) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(oid, e)),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// The whole content of a file (an object other than a data object).
fn read_whole(file: &File, oid: Oid) -> Result<Vec<u8>> {
    let len = file.metadata().map_err(|e| Error::io(oid, e))?.len();
    let mut out = vec![0u8; us(len)];
    read_full_at(file, oid, 0, &mut out)?;
    Ok(out)
}

/// The data ranges of a file within `from..limit`.
fn data_extents(file: &File, oid: Oid, from: u64, limit: u64) -> Result<Vec<Range<u64>>> {
    let fd = file.as_raw_fd();
    let len = file
        .metadata()
        .map_err(|e| Error::io(oid, e))?
        .len()
        .min(limit);
    let mut out = Vec::new();
    let len = i64::try_from(len).map_err(|_| Error::CorruptObject(oid))?;
    let mut pos = i64::try_from(from).map_err(|_| Error::CorruptObject(oid))?;
    while pos < len {
        let start = match lseek(fd, pos, Whence::SeekData) {
            Ok(s) if s >= len => break,
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(Error::io(oid, e.into())),
        };
        let end = match lseek(fd, start, Whence::SeekHole) {
            Ok(e) => e.min(len),
            Err(e) => return Err(Error::io(oid, e.into())),
        };
        out.push(start.unsigned_abs()..end.unsigned_abs());
        pos = end;
    }
    Ok(out)
}

impl ObjectStore for DiskStore {
    fn read(&self, oid: Oid, offset: u64, buf: &mut [u8]) -> Result<()> {
        if is_data(oid) {
            return self.read_data(oid, offset, buf);
        }
        let f = self.file(oid, None)?;
        read_full_at(&f.file, oid, offset, buf)
    }

    fn write(&self, oid: Oid, offset: u64, data: &[u8]) -> Result<()> {
        if is_data(oid) {
            check_range(oid, offset, data.len() as u64)?;
            if data.is_empty() {
                let w = self.intent.enter();
                return self.file(oid, Some(&w)).map(drop);
            }
            return self.out_of_space(self.update_data(oid, offset, data.len() as u64, Some(data)));
        }
        let w = self.intent.enter();
        let f = self.file(oid, Some(&w))?;
        let mut at = 0;
        let written = data.chunks(WRITE_PIECE).try_for_each(|piece| {
            f.file.write_all_at(piece, offset + at as u64)?;
            at += piece.len();
            Ok(())
        });
        self.touched(&f, oid);
        self.out_of_space(written.map_err(|e| Error::io(oid, e)))
    }

    fn copy(&self, src: Oid, dst: Oid) -> Result<()> {
        if src == dst {
            return self.file(src, None).map(drop);
        }
        match (is_data(src), is_data(dst)) {
            (true, true) => return self.out_of_space(self.copy_data(src, dst)),
            (false, false) => {}
            _ => return self.copy_through(src, dst),
        }
        let from = self.file(src, None)?;
        self.remove(dst)?;
        let w = self.intent.enter();
        let to = self.file(dst, Some(&w))?;
        let len = from.file.metadata().map_err(|e| Error::io(src, e))?.len();
        let mut buf = self.chunk_buf();
        for ext in data_extents(&from.file, src, 0, u64::MAX)? {
            let mut pos = ext.start;
            while pos < ext.end {
                let n = us((ext.end - pos).min(COPY_CHUNK as u64));
                read_full_at(&from.file, src, pos, &mut buf[..n])?;
                to.file
                    .write_all_at(&buf[..n], pos)
                    .map_err(|e| Error::io(dst, e))?;
                pos += n as u64;
            }
        }
        to.file.set_len(len).map_err(|e| Error::io(dst, e))?;
        self.touched(&to, dst);
        Ok(())
    }

    fn punch(&self, oid: Oid, offset: u64, len: u64) -> Result<()> {
        if is_data(oid) {
            let end = offset.saturating_add(len).min(OBJECT_SIZE);
            if end <= offset {
                return self.file(oid, None).map(drop);
            }
            return self.update_data(oid, offset, end - offset, None);
        }
        let f = self.file(oid, None)?;
        if i64::try_from(offset.saturating_add(len)).is_err() {
            return Err(Error::OutOfRange { oid, offset, len });
        }
        punch_hole(&f.file, offset, len).map_err(|e| Error::io(oid, e))?;
        self.touched(&f, oid);
        Ok(())
    }

    fn remove(&self, oid: Oid) -> Result<()> {
        self.fds(oid).lock().pop(&oid);
        match fs::remove_file(self.path_of(oid)) {
            Ok(()) => {
                self.dirty_dirs.lock().insert(self.dir_of(oid));
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(oid, e)),
        }
    }

    fn exists(&self, oid: Oid) -> Result<bool> {
        if self.fds(oid).lock().contains(&oid) {
            return Ok(true);
        }
        Ok(self.path_of(oid).exists())
    }

    fn list(&self) -> Result<Vec<Oid>> {
        let mut out = Vec::new();
        for dir in self.subdirs()? {
            let dname = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_owned();
            for entry in fs::read_dir(&dir).map_err(|e| Error::io(Oid(0), e))? {
                let entry = entry.map_err(|e| Error::io(Oid(0), e))?;
                if let Some(oid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|f| parse_name(&dname, f))
                {
                    out.push(oid);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn extents(&self, oid: Oid) -> Result<Vec<Range<u64>>> {
        let limit = if is_data(oid) { OBJECT_SIZE } else { u64::MAX };
        match self.file(oid, None) {
            Ok(f) => data_extents(&f.file, oid, 0, limit),
            Err(Error::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn allocated(&self, oid: Oid) -> Result<u64> {
        match fs::metadata(self.path_of(oid)) {
            Ok(m) if is_data(oid) => {
                let bs = m.blksize().max(512);
                let trailer = (TRAILER_LEN as u64).div_ceil(bs) * bs;
                Ok((m.blocks() * 512).saturating_sub(trailer))
            }
            Ok(m) => Ok(m.blocks() * 512),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io(oid, e)),
        }
    }

    fn sync(&self, oids: &[Oid]) -> Result<()> {
        {
            let mut unsynced = self.unsynced.lock();
            for oid in oids {
                unsynced.remove(oid);
            }
        }
        for &oid in oids {
            let synced = match self.file(oid, None) {
                Ok(f) => {
                    f.dirty.store(false, Ordering::SeqCst);
                    f.file.sync_data()
                }
                Err(Error::NotFound(_)) => Ok(()),
                // A damaged trailer: still make what was written durable.
                Err(Error::CorruptObject(_)) => {
                    File::open(self.path_of(oid)).and_then(|f| f.sync_data())
                }
                Err(e) => return Err(e),
            };
            if let Err(e) = synced {
                self.unsynced.lock().insert(oid);
                return Err(Error::io(oid, e));
            }
        }
        let dirs: Vec<PathBuf> = self.dirty_dirs.lock().drain().collect();
        for (i, dir) in dirs.iter().enumerate() {
            if let Err(e) = sync_dir(dir) {
                if e.kind() != ErrorKind::NotFound {
                    self.dirty_dirs.lock().extend(dirs[i..].iter().cloned());
                    return Err(Error::io(Oid(0), e));
                }
            }
        }
        Ok(())
    }

    fn put_atomic(&self, oid: Oid, data: &[u8]) -> Result<()> {
        let path = self.path_of(oid);
        let dir = self.dir_of(oid);
        fs::create_dir_all(&dir).map_err(|e| Error::io(oid, e))?;
        let tmp = path.with_extension("tmp");
        let written = if is_data(oid) {
            check_range(oid, 0, data.len() as u64)?;
            let mut crcs = [0u8; CRCS_LEN];
            for (i, block) in data.chunks(BLOCK_BYTES).enumerate() {
                let mut b = [0u8; BLOCK_BYTES];
                b[..block.len()].copy_from_slice(block);
                crcs[4 * i..4 * i + 4].copy_from_slice(&entry_of(&b).to_le_bytes());
            }
            File::create(&tmp).and_then(|f| {
                f.write_all_at(data, 0)?;
                f.write_all_at(&trailer(0, &crcs), OBJECT_SIZE)?;
                f.sync_all()
            })
        } else {
            write_durably(&tmp, data)
        };
        written.map_err(|e| Error::io(oid, e))?;
        self.fds(oid).lock().pop(&oid);
        fs::rename(&tmp, &path).map_err(|e| Error::io(oid, e))?;
        sync_dir(&dir).map_err(|e| Error::io(oid, e))?;
        sync_dir(&self.root.join("obj")).map_err(|e| Error::io(oid, e))
    }

    fn get(&self, oid: Oid) -> Result<Vec<u8>> {
        if is_data(oid) {
            // A data object has no length of its own: up to the end of its last data range.
            let end = self.extents(oid)?.last().map_or(0, |r| r.end);
            let mut out = vec![0u8; us(end)];
            self.read(oid, 0, &mut out)?;
            return Ok(out);
        }
        let mut f = match File::open(self.path_of(oid)) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(Error::NotFound(oid)),
            Err(e) => return Err(Error::io(oid, e)),
        };
        let mut out = Vec::new();
        f.read_to_end(&mut out).map_err(|e| Error::io(oid, e))?;
        Ok(out)
    }

    fn stats(&self) -> Result<StoreStats> {
        let st = nix::sys::statvfs::statvfs(&self.root).map_err(|e| Error::io(Oid(0), e.into()))?;
        let frsize = st.fragment_size();
        let capacity = st.blocks() * frsize;
        let free = st.blocks_available() * frsize;
        Ok(StoreStats {
            capacity,
            free,
            used: capacity.saturating_sub(st.blocks_free() * frsize),
        })
    }

    fn meta(&self, oid: Oid) -> Result<ObjectMeta> {
        let f = self.file(oid, None)?;
        if !is_data(oid) {
            return Ok(ObjectMeta {
                version: 0,
                digest: digest_of_content(&read_whole(&f.file, oid)?),
            });
        }
        let mut crcs = [0u8; CRCS_LEN];
        read_full_at(&f.file, oid, CRCS_AT, &mut crcs)?;
        Ok(ObjectMeta {
            version: f.version.load(Ordering::SeqCst),
            digest: digest_of_crcs(
                crcs.chunks_exact(4)
                    .map(|e| u32::from_le_bytes([e[0], e[1], e[2], e[3]]) ^ ZERO_BLOCK_CRC),
            ),
        })
    }

    fn set_version(&self, oid: Oid, version: u64) -> Result<()> {
        let f = self.file(oid, None)?;
        if !is_data(oid) {
            return Err(unversioned(oid));
        }
        if f.version.load(Ordering::SeqCst) == version {
            return Ok(());
        }
        let mut shard = self.fds(oid).lock();
        f.file
            .write_all_at(&version.to_le_bytes(), OBJECT_SIZE + 8)
            .map_err(|e| Error::io(oid, e))?;
        f.version.store(version, Ordering::SeqCst);
        if let Some(cached) = shard.peek_mut(&oid) {
            cached.version.store(version, Ordering::SeqCst);
        }
        drop(shard);
        self.touched(&f, oid);
        Ok(())
    }

    fn verify(&self, oid: Oid) -> Result<()> {
        let f = self.file(oid, None)?;
        if !is_data(oid) {
            return read_whole(&f.file, oid).map(drop);
        }
        read_header(&f.file, oid)?;
        let mut buf = self.chunk_buf();
        let per = (COPY_CHUNK / BLOCK_BYTES) as u64;
        for b in (0..OBJECT_BLOCKS as u64).step_by(us(per)) {
            self.read_blocks(&f, oid, b, &mut buf)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diskstore_passes_the_conformance_suite() {
        let dirs = Mutex::new(Vec::new());
        crate::conformance::run_all(&|| {
            let d = tempfile::tempdir().unwrap();
            let s = DiskStore::open(d.path()).unwrap();
            dirs.lock().push(d);
            Box::new(s)
        });
    }

    #[test]
    fn reopening_keeps_objects_and_drops_temporaries() {
        let d = tempfile::tempdir().unwrap();
        let s = DiskStore::open(d.path()).unwrap();
        s.write(Oid(5), 0, b"kept").unwrap();
        s.sync(&[Oid(5)]).unwrap();
        let tmp = s.path_of(Oid(6)).with_extension("tmp");
        fs::write(&tmp, b"half").unwrap();
        let new = s.path_of(Oid(7)).with_extension("3.new");
        fs::write(&new, b"half").unwrap();
        drop(s);
        let s = DiskStore::open(d.path()).unwrap();
        assert_eq!(s.list().unwrap(), vec![Oid(5)]);
        assert!(!tmp.exists() && !new.exists());
    }

    const BOOT_A: Option<&str> = Some("boot-a");
    const BOOT_B: Option<&str> = Some("boot-b");

    fn obj(i: u32) -> Oid {
        Oid::data(crate::oid::Vid(3), i)
    }

    #[allow(clippy::cast_possible_truncation)] // i % 251 fits in a u8.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    /// Changes bytes of an object's file behind the store's back, as a bad disk (or a write
    /// that reached the disk without its checksum) would.
    fn poke(s: &DiskStore, oid: Oid, offset: u64, bytes: &[u8]) {
        let f = OpenOptions::new().write(true).open(s.path_of(oid)).unwrap();
        f.write_all_at(bytes, offset).unwrap();
    }

    fn flip(s: &DiskStore, oid: Oid, offset: u64) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(s.path_of(oid))
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, offset).unwrap();
        f.write_all_at(&[b[0] ^ 0x10], offset).unwrap();
    }

    fn read(s: &DiskStore, oid: Oid, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        s.read(oid, offset, &mut buf).map(|()| buf)
    }

    fn corrupt<T: std::fmt::Debug>(r: Result<T>) -> bool {
        matches!(r, Err(Error::CorruptObject(_)))
    }

    #[test]
    fn a_flipped_byte_fails_the_reads_of_its_block_only() {
        let d = tempfile::tempdir().unwrap();
        let s = DiskStore::open_as(d.path(), BOOT_A).unwrap();
        let p = pattern(4 * 4096, 1);
        s.write(obj(1), 0, &p).unwrap();
        s.sync(&[obj(1)]).unwrap();
        flip(&s, obj(1), 2 * 4096 + 100);
        assert_eq!(read(&s, obj(1), 0, 8192).unwrap(), p[..8192]);
        assert_eq!(read(&s, obj(1), 3 * 4096, 4096).unwrap(), p[3 * 4096..]);
        assert!(corrupt(read(&s, obj(1), 2 * 4096, 4096)));
        assert!(corrupt(read(&s, obj(1), 2 * 4096 + 4000, 10)), "unaligned");
        assert!(corrupt(read(&s, obj(1), 0, 4 * 4096)));
        assert!(corrupt(s.verify(obj(1))));
        // Data past the hole, and a byte flipped in a hole.
        flip(&s, obj(1), 1 << 20);
        assert!(corrupt(read(&s, obj(1), 1 << 20, 512)));
        assert_eq!(read(&s, obj(1), 2 << 20, 4096).unwrap(), vec![0; 4096]);
        // A write keeping part of a bad block refuses to vouch for it; a whole one heals it.
        assert!(corrupt(s.write(obj(1), 2 * 4096 + 10, b"x")));
        assert!(corrupt(s.punch(obj(1), 2 * 4096 + 10, 1)));
        s.write(obj(1), 2 * 4096, &[7; 4096]).unwrap();
        s.punch(obj(1), 1 << 20, 4096).unwrap();
        assert_eq!(read(&s, obj(1), 2 * 4096, 4096).unwrap(), vec![7; 4096]);
        s.verify(obj(1)).unwrap();
        // A damaged trailer makes the whole object corrupt.
        s.write(obj(2), 0, b"x").unwrap();
        drop(s);
        let s = DiskStore::open_as(d.path(), BOOT_A).unwrap();
        flip(&s, obj(2), OBJECT_SIZE);
        assert!(corrupt(read(&s, obj(2), 0, 1)));
        assert!(corrupt(s.meta(obj(2))));
    }

    #[test]
    fn copy_and_verify_buffers_come_from_the_budget_once_set() {
        let d = tempfile::tempdir().unwrap();
        let s = DiskStore::open_as(d.path(), BOOT_A).unwrap();
        let budget = crate::MemBudget::new(8 << 20);
        s.set_budget(budget.clone());
        let p = pattern(3 << 20, 5);
        s.write(obj(1), 0, &p).unwrap();
        s.copy(obj(1), obj(2)).unwrap();
        s.verify(obj(2)).unwrap();
        assert_eq!(read(&s, obj(2), 0, 3 << 20).unwrap(), p);
        let st = budget.stats();
        assert_eq!((st.in_use, st.peak), (0, COPY_CHUNK as u64), "{st:?}");
    }

    #[test]
    fn memstore_and_diskstore_give_equal_digests_for_equal_content() {
        let d = tempfile::tempdir().unwrap();
        let disk = DiskStore::open(d.path()).unwrap();
        let mem = crate::MemStore::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for step in 0..300u32 {
            let oid = obj(10 + u32::try_from(next(3)).unwrap());
            let offset = next(OBJECT_SIZE);
            let len = next((OBJECT_SIZE - offset).min(70_000)) + 1;
            let stores: [&dyn ObjectStore; 2] = [&disk, &mem];
            for st in stores {
                if step % 5 == 4 && st.exists(oid).unwrap() {
                    st.punch(oid, offset, len).unwrap();
                } else {
                    st.write(oid, offset, &pattern(us(len), step.to_le_bytes()[0]))
                        .unwrap();
                }
            }
            if step % 50 == 49 {
                disk.copy(oid, obj(20)).unwrap();
                mem.copy(oid, obj(20)).unwrap();
            }
        }
        for oid in mem.list().unwrap() {
            let (dm, mm) = (disk.meta(oid).unwrap(), mem.meta(oid).unwrap());
            assert_eq!(dm, mm, "{oid}");
            let whole = read(&disk, oid, 0, crate::oid::OBJECT_BYTES).unwrap();
            assert_eq!(dm.digest, digest_of_content(&whole));
            disk.verify(oid).unwrap();
        }
    }

    #[test]
    fn versions_survive_a_reopen_and_unchanged_ones_are_not_written() {
        let d = tempfile::tempdir().unwrap();
        let s = DiskStore::open_as(d.path(), BOOT_A).unwrap();
        s.write(obj(1), 0, b"v").unwrap();
        s.set_version(obj(1), 9).unwrap();
        s.sync(&[obj(1)]).unwrap();
        // Changed behind the store's back: an unchanged version is answered from the cache.
        poke(&s, obj(1), OBJECT_SIZE + 8, &5u64.to_le_bytes());
        s.set_version(obj(1), 9).unwrap();
        assert_eq!(s.meta(obj(1)).unwrap().version, 9);
        s.set_version(obj(1), 11).unwrap();
        drop(s);
        let s = DiskStore::open_as(d.path(), BOOT_B).unwrap();
        assert_eq!(s.meta(obj(1)).unwrap().version, 11);
        assert_eq!(
            s.rescrubbed(),
            (0, 0),
            "closed cleanly: no rescrub after a reboot"
        );
    }

    #[test]
    fn extents_and_allocated_leave_the_trailer_out() {
        let d = tempfile::tempdir().unwrap();
        let s = DiskStore::open(d.path()).unwrap();
        s.write(obj(1), 0, &[]).unwrap();
        assert!(s.extents(obj(1)).unwrap().is_empty());
        assert_eq!(s.allocated(obj(1)).unwrap(), 0);
        s.write(obj(1), 8192, &[1; 4096]).unwrap();
        assert_eq!(s.extents(obj(1)).unwrap(), vec![8192..12288]);
        assert_eq!(s.allocated(obj(1)).unwrap(), 4096);
        s.write(obj(1), OBJECT_SIZE - 1, &[1]).unwrap();
        assert_eq!(s.extents(obj(1)).unwrap().last().unwrap().end, OBJECT_SIZE);
        assert!(matches!(
            s.write(obj(1), OBJECT_SIZE - 1, &[1, 2]),
            Err(Error::OutOfRange { .. })
        ));
        assert!(matches!(
            read(&s, obj(1), OBJECT_SIZE, 1),
            Err(Error::OutOfRange { .. })
        ));
        s.punch(obj(1), 0, u64::MAX).unwrap();
        assert!(s.extents(obj(1)).unwrap().is_empty());
        s.verify(obj(1)).unwrap();
        s.put_atomic(obj(2), b"atomic data").unwrap();
        assert_eq!(read(&s, obj(2), 0, 11).unwrap(), b"atomic data");
        assert_eq!(&s.get(obj(2)).unwrap()[..11], b"atomic data");
        s.verify(obj(2)).unwrap();
    }

    #[test]
    fn an_unclean_stop_after_a_reboot_re_stamps_every_object() {
        let d = tempfile::tempdir().unwrap();
        let s = DiskStore::open_as(d.path(), BOOT_A).unwrap();
        s.write(obj(1), 0, &pattern(4 * 4096, 1)).unwrap();
        s.write(obj(2), 0, &pattern(4096, 2)).unwrap();
        s.set_version(obj(1), 4).unwrap();
        s.sync(&[obj(1), obj(2)]).unwrap();
        s.intent.rotate();
        s.intent.rotate();
        s.kill();
        // After a power loss, the data of block 2 reached the disk, its checksum did not.
        let s = DiskStore::open_as(d.path(), BOOT_A).unwrap();
        poke(&s, obj(1), 2 * 4096, b"new data");
        s.kill();
        let s = DiskStore::open_as(d.path(), BOOT_B).unwrap();
        assert_eq!(s.rescrubbed(), (1, 1));
        assert_eq!(read(&s, obj(1), 2 * 4096, 8).unwrap(), b"new data");
        s.verify(obj(1)).unwrap();
        s.verify(obj(2)).unwrap();
        assert_eq!(s.meta(obj(1)).unwrap().version, 4, "versions are kept");
        // An unknown boot id is another boot.
        poke(&s, obj(2), 0, b"other");
        s.kill();
        let s = DiskStore::open_as(d.path(), None).unwrap();
        assert_eq!(s.rescrubbed(), (1, 1));
        s.verify(obj(2)).unwrap();
        // A file that lost its trailer gets a new one.
        let f = OpenOptions::new()
            .write(true)
            .open(s.path_of(obj(2)))
            .unwrap();
        f.set_len(4096).unwrap();
        s.kill();
        let s = DiskStore::open_as(d.path(), BOOT_A).unwrap();
        assert_eq!(s.rescrubbed().0, 1);
        assert_eq!(read(&s, obj(2), 0, 5).unwrap(), b"other");
        assert_eq!(s.meta(obj(2)).unwrap().version, 0);
    }

    #[test]
    fn an_unclean_stop_on_the_same_boot_re_stamps_only_recent_writes() {
        let d = tempfile::tempdir().unwrap();
        let s = DiskStore::open_as(d.path(), BOOT_A).unwrap();
        s.write(obj(1), 0, &pattern(4 * 4096, 1)).unwrap();
        s.sync(&[obj(1)]).unwrap();
        // Two generations later obj(1) is no longer in an intent log; obj(2) is written in
        // the current one, killed between its data and its checksum.
        assert!(s.intent.rotate() && s.intent.rotate());
        s.write(obj(2), 0, &pattern(4096, 2)).unwrap();
        poke(&s, obj(2), 100, b"data without its checksum");
        flip(&s, obj(1), 2 * 4096 + 5);
        s.kill();
        let s = DiskStore::open_as(d.path(), BOOT_A).unwrap();
        assert_eq!(s.rescrubbed(), (1, 1));
        assert_eq!(
            read(&s, obj(2), 100, 25).unwrap(),
            b"data without its checksum"
        );
        assert!(
            corrupt(read(&s, obj(1), 2 * 4096, 4096)),
            "damage is still seen"
        );
        assert!(corrupt(s.verify(obj(1))));
        // A clean close and a reboot: no rescrub, damage still seen.
        drop(s);
        assert!(d.path().join(CLEAN_FILE).exists());
        let s = DiskStore::open_as(d.path(), BOOT_B).unwrap();
        assert!(!d.path().join(CLEAN_FILE).exists());
        assert_eq!(s.rescrubbed(), (0, 0));
        assert!(corrupt(s.verify(obj(1))));
        // A write after close removes the clean record again.
        s.close().unwrap();
        assert!(d.path().join(CLEAN_FILE).exists());
        s.write(obj(3), 0, b"after close").unwrap();
        assert!(!d.path().join(CLEAN_FILE).exists());
    }

    #[test]
    fn a_generation_ends_only_when_its_writes_are_done() {
        let d = tempfile::tempdir().unwrap();
        let s = DiskStore::open(d.path()).unwrap();
        let w = s.intent.enter();
        assert!(
            s.intent.rotate(),
            "gen 0 -> 1 while a write of gen 0 is in flight"
        );
        assert!(!s.intent.rotate(), "gen 1 -> 2 would reuse gen 0's log");
        drop(w);
        assert!(s.intent.rotate());
        s.write(obj(1), 0, b"a").unwrap();
        s.write(obj(1), 10, b"b").unwrap();
        assert_eq!(s.intent.recorded().unwrap().len(), 1, "once per generation");
    }

    #[test]
    fn concurrent_partial_writes_and_reads_of_one_block_never_look_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let s = DiskStore::open(d.path()).unwrap();
        s.write(obj(1), 0, &[0u8; 8192]).unwrap();
        std::thread::scope(|t| {
            for i in 0..4u8 {
                let s = &s;
                t.spawn(move || {
                    for j in 0..300u64 {
                        let off = (j * 37 + u64::from(i) * 1000) % 8000;
                        s.write(obj(1), off, &[i; 100]).unwrap();
                        if j % 10 == 0 {
                            s.punch(obj(1), off, 50).unwrap();
                        }
                    }
                });
                t.spawn(move || {
                    if i == 0 {
                        for _ in 0..20 {
                            s.copy(obj(1), obj(2)).unwrap();
                            s.verify(obj(2)).unwrap();
                        }
                    }
                    for j in 0..300u64 {
                        read(s, obj(1), (j * 13) % 8000, 150).unwrap();
                        if j % 50 == 0 {
                            s.verify(obj(1)).unwrap();
                            s.meta(obj(1)).unwrap();
                        }
                    }
                });
            }
        });
        s.verify(obj(1)).unwrap();
    }

    #[test]
    fn a_full_store_refuses_new_space_until_space_comes_back() {
        let d = tempfile::tempdir().unwrap();
        let s = DiskStore::open(d.path()).unwrap();
        let reserve = d.path().join(RESERVE_FILE);
        assert_eq!(fs::metadata(&reserve).unwrap().len(), RESERVE_BYTES);
        s.write(obj(1), 0, &[1; 8192]).unwrap();
        s.reserve.ran_out();
        assert!(!reserve.exists(), "the reserve is freed for metadata");
        let no_space = |r: Result<()>| matches!(r, Err(Error::NoSpace));
        assert!(no_space(s.write(obj(2), 0, b"new object")));
        assert!(no_space(s.write(obj(1), 8192, b"into a hole")));
        assert!(no_space(s.copy(obj(1), obj(3))));
        s.write(obj(1), 100, b"overwrite").unwrap();
        s.punch(obj(1), 0, 4096).unwrap();
        s.set_version(obj(1), 2).unwrap();
        s.write(Oid::meta(1), 0, b"metadata goes on").unwrap();
        // Space comes back (here: the floor is lowered).
        *s.reserve.floor.lock() = Some(0);
        s.write(obj(2), 0, b"new object").unwrap();
        assert!(reserve.exists() && !s.reserve.full.load(Ordering::SeqCst));
        s.verify(obj(1)).unwrap();
    }

    #[test]
    fn a_v1_store_is_refused() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("sheepfs-store"), MARKER_V1).unwrap();
        match DiskStore::open(d.path()) {
            Err(Error::BadStore { reason, .. }) => assert!(reason.contains("v1"), "{reason}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_foreign_marker_is_refused() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("sheepfs-store"), "something else").unwrap();
        assert!(matches!(
            DiskStore::open(d.path()),
            Err(Error::BadStore { .. })
        ));
    }
}
