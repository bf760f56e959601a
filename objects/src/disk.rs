//! The on-disk object store.
//!
//! ```text
//! DIR/
//!   sheepfs-store          marker: "sheepfs-store v1\n"
//!   obj/<hi:08x>/<lo:08x>  one sparse file per object; hi = type bits | vid, lo = index
//!   obj/.../<lo>.tmp       a put_atomic in progress (removed on open)
//! ```
//! Data writes are `pwrite`s into the object file and become durable on [`ObjectStore::sync`],
//! which `fdatasync`s the files and `fsync`s the directories of objects created or removed
//! since the last sync. [`ObjectStore::put_atomic`] writes a temporary file, syncs it, renames
//! it over the object and syncs the directory, so a crash leaves the old or the new content.

use crate::error::{Error, Result};
use crate::oid::Oid;
use crate::store::{ObjectStore, StoreStats};
use lru::LruCache;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::unistd::{lseek, Whence};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MARKER: &str = "sheepfs-store v1\n";
/// Open descriptors kept, spread over [`FD_SHARDS`] independently locked shards.
const FD_CACHE: usize = 1024;
const FD_SHARDS: usize = 16;
const COPY_CHUNK: usize = 1 << 20;
/// Largest single `pwrite` into an object file. Linux ext4 backs a large buffered write with
/// a large folio, and every later small write into that folio walks all of its buffer heads
/// (measured: 4k random writes after a 4 MiB-write fill ran at a third of the speed they reach
/// after a 64 KiB-write fill); smaller pieces keep folios small.
const WRITE_PIECE: usize = 64 << 10;

/// One independently locked part of the descriptor cache.
type FdShard = Mutex<LruCache<Oid, Arc<File>>>;

/// Objects as sparse files under a directory.
pub struct DiskStore {
    root: PathBuf,
    fds: Box<[FdShard]>,
    /// Directories whose entries changed since the last sync.
    dirty_dirs: Mutex<HashSet<PathBuf>>,
}

impl DiskStore {
    /// Opens (creating if empty or missing) the store at `root`.
    pub fn open(root: &Path) -> Result<DiskStore> {
        let bad = |reason: String| Error::BadStore {
            path: root.display().to_string(),
            reason,
        };
        fs::create_dir_all(root.join("obj")).map_err(|e| bad(e.to_string()))?;
        let marker = root.join("sheepfs-store");
        match fs::read_to_string(&marker) {
            Ok(s) if s == MARKER => {}
            Ok(s) => return Err(bad(format!("unknown store marker {s:?}"))),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                write_durably(&marker, MARKER.as_bytes()).map_err(|e| bad(e.to_string()))?;
                sync_dir(root).map_err(|e| bad(e.to_string()))?;
            }
            Err(e) => return Err(bad(e.to_string())),
        }
        let store = DiskStore {
            root: root.to_path_buf(),
            fds: (0..FD_SHARDS)
                .map(|_| {
                    Mutex::new(LruCache::new(
                        NonZeroUsize::new(FD_CACHE / FD_SHARDS).unwrap_or(NonZeroUsize::MIN),
                    ))
                })
                .collect(),
            dirty_dirs: Mutex::new(HashSet::new()),
        };
        store.remove_temporaries()?;
        Ok(store)
    }

    /// The directory holding the store.
    pub fn root(&self) -> &Path {
        &self.root
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

    /// Returns the cached descriptor of an object, opening (and with `create`, creating) it.
    fn file(&self, oid: Oid, create: bool) -> Result<Arc<File>> {
        if let Some(f) = self.fds(oid).lock().get(&oid) {
            return Ok(f.clone());
        }
        let path = self.path_of(oid);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound && create => self.create_file(oid, &path)?,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(Error::NotFound(oid)),
            Err(e) => return Err(Error::io(oid, e)),
        };
        let file = Arc::new(file);
        self.fds(oid).lock().put(oid, file.clone());
        Ok(file)
    }

    fn create_file(&self, oid: Oid, path: &Path) -> Result<File> {
        let dir = self.dir_of(oid);
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(|e| Error::io(oid, e))?;
            self.dirty_dirs.lock().insert(self.root.join("obj"));
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(oid, e))?;
        self.dirty_dirs.lock().insert(dir);
        Ok(f)
    }

    fn remove_temporaries(&self) -> Result<()> {
        for dir in self.subdirs()? {
            for entry in fs::read_dir(&dir).map_err(|e| Error::io(Oid(0), e))? {
                let path = entry.map_err(|e| Error::io(Oid(0), e))?.path();
                if path.extension().is_some_and(|x| x == "tmp") {
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

fn data_extents(file: &File, oid: Oid) -> Result<Vec<Range<u64>>> {
    let fd = file.as_raw_fd();
    let len = file.metadata().map_err(|e| Error::io(oid, e))?.len();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    let len = i64::try_from(len).map_err(|_| Error::CorruptObject(oid))?;
    while pos < len {
        let start = match lseek(fd, pos, Whence::SeekData) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(Error::io(oid, e.into())),
        };
        let end = match lseek(fd, start, Whence::SeekHole) {
            Ok(e) => e,
            Err(e) => return Err(Error::io(oid, e.into())),
        };
        out.push(start.unsigned_abs()..end.unsigned_abs());
        pos = end;
    }
    Ok(out)
}

impl ObjectStore for DiskStore {
    // TEMP-MAIN: replaced by the store helper's implementation.
    fn meta(&self, oid: Oid) -> Result<crate::store::ObjectMeta> {
        if !self.exists(oid)? {
            return Err(crate::error::Error::NotFound(oid));
        }
        let mut buf = Vec::new();
        for r in self.extents(oid)? {
            let mut b = vec![0u8; usize::try_from(r.end - r.start).unwrap_or(0)];
            self.read(oid, r.start, &mut b)?;
            if b.iter().any(|x| *x != 0) {
                buf.extend_from_slice(&r.start.to_le_bytes());
                buf.extend_from_slice(&b);
            }
        }
        let version = temp_versions()
            .lock()
            .get(&(self as *const _ as *const u8 as usize, oid))
            .copied()
            .unwrap_or(0);
        Ok(crate::store::ObjectMeta {
            version,
            digest: {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                buf.hash(&mut h);
                h.finish()
            },
        })
    }
    fn set_version(&self, oid: Oid, version: u64) -> Result<()> {
        temp_versions()
            .lock()
            .insert((self as *const _ as *const u8 as usize, oid), version);
        Ok(())
    }
    fn verify(&self, _oid: Oid) -> Result<()> {
        Ok(())
    }

    fn read(&self, oid: Oid, offset: u64, buf: &mut [u8]) -> Result<()> {
        let f = self.file(oid, false)?;
        read_full_at(&f, oid, offset, buf)
    }

    fn write(&self, oid: Oid, offset: u64, data: &[u8]) -> Result<()> {
        let f = self.file(oid, true)?;
        let mut at = 0;
        for piece in data.chunks(WRITE_PIECE) {
            f.write_all_at(piece, offset + at as u64)
                .map_err(|e| Error::io(oid, e))?;
            at += piece.len();
        }
        Ok(())
    }

    fn copy(&self, src: Oid, dst: Oid) -> Result<()> {
        let from = self.file(src, false)?;
        self.remove(dst)?;
        let to = self.file(dst, true)?;
        let len = from.metadata().map_err(|e| Error::io(src, e))?.len();
        let mut buf = vec![0u8; COPY_CHUNK];
        for ext in data_extents(&from, src)? {
            let mut pos = ext.start;
            while pos < ext.end {
                let n =
                    usize::try_from((ext.end - pos).min(COPY_CHUNK as u64)).unwrap_or(COPY_CHUNK);
                read_full_at(&from, src, pos, &mut buf[..n])?;
                to.write_all_at(&buf[..n], pos)
                    .map_err(|e| Error::io(dst, e))?;
                pos += n as u64;
            }
        }
        to.set_len(len).map_err(|e| Error::io(dst, e))
    }

    fn punch(&self, oid: Oid, offset: u64, len: u64) -> Result<()> {
        let f = self.file(oid, false)?;
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        let (off, l) = (
            i64::try_from(offset).map_err(|_| Error::OutOfRange { oid, offset, len })?,
            i64::try_from(len).map_err(|_| Error::OutOfRange { oid, offset, len })?,
        );
        fallocate(f.as_raw_fd(), flags, off, l).map_err(|e| Error::io(oid, e.into()))
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
        match self.file(oid, false) {
            Ok(f) => data_extents(&f, oid),
            Err(Error::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn allocated(&self, oid: Oid) -> Result<u64> {
        match fs::metadata(self.path_of(oid)) {
            Ok(m) => Ok(m.blocks() * 512),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io(oid, e)),
        }
    }

    fn sync(&self, oids: &[Oid]) -> Result<()> {
        for &oid in oids {
            match self.file(oid, false) {
                Ok(f) => f.sync_data().map_err(|e| Error::io(oid, e))?,
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
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
        write_durably(&tmp, data).map_err(|e| Error::io(oid, e))?;
        self.fds(oid).lock().pop(&oid);
        fs::rename(&tmp, &path).map_err(|e| Error::io(oid, e))?;
        sync_dir(&dir).map_err(|e| Error::io(oid, e))?;
        sync_dir(&self.root.join("obj")).map_err(|e| Error::io(oid, e))
    }

    fn get(&self, oid: Oid) -> Result<Vec<u8>> {
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
}

// TEMP-MAIN
fn temp_versions() -> &'static parking_lot::Mutex<std::collections::HashMap<(usize, Oid), u64>> {
    static V: std::sync::OnceLock<
        parking_lot::Mutex<std::collections::HashMap<(usize, Oid), u64>>,
    > = std::sync::OnceLock::new();
    V.get_or_init(Default::default)
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
        drop(s);
        let s = DiskStore::open(d.path()).unwrap();
        assert_eq!(s.list().unwrap(), vec![Oid(5)]);
        assert!(!tmp.exists());
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
