//! A store wrapper that injects failures, for tests of error paths.
//!
//! Faults are switched either in the process ([`FaultyStore`]'s public flags) or, for a
//! running daemon, through a control file ([`FaultyStore::with_control_file`]) that the store
//! re-reads when its modification time, size or inode changed, looking at most every 200 ms.
//! One rule a line (blank lines and `#` comments ignored):
//!
//! ```text
//! eio read OIDHEX    reads of this object fail (read, get, verify, meta, copy from it)
//! eio read *         reads of every object fail
//! eio write OIDHEX   changes of this object fail (write, punch, copy onto it, remove,
//!                    put_atomic, set_version, and a sync naming it)
//! eio write *        changes of every object fail
//! eio all            every call fails, listing and space figures included (a dead disk)
//! ```
//! `OIDHEX` is the id as objects print it (`0000070000000001`, a `0x` prefix allowed). An
//! injected failure is `Error::io(oid, EIO)`. An absent or empty file injects nothing.

use crate::error::{Error, Result};
use crate::oid::Oid;
use crate::store::{ObjectMeta, ObjectStore, StoreStats};
use parking_lot::{Mutex, RwLock};
use std::collections::HashSet;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tracing::{info, warn};

/// How often the control file is looked at, at most.
const CONTROL_CHECK_MS: u64 = 200;

/// Which calls the control file makes fail.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Rules {
    all: bool,
    read_all: bool,
    read: HashSet<Oid>,
    write_all: bool,
    write: HashSet<Oid>,
}

impl Rules {
    fn parse(text: &str) -> Rules {
        let mut r = Rules::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["eio", "all"] => r.all = true,
                ["eio", "read", "*"] => r.read_all = true,
                ["eio", "write", "*"] => r.write_all = true,
                ["eio", kind @ ("read" | "write"), id] => match parse_oid(id) {
                    Some(oid) if *kind == "read" => {
                        r.read.insert(oid);
                    }
                    Some(oid) => {
                        r.write.insert(oid);
                    }
                    None => warn!(line, "fault control file: bad object id"),
                },
                _ => warn!(line, "fault control file: unknown rule"),
            }
        }
        r
    }

    fn is_empty(&self) -> bool {
        *self == Rules::default()
    }

    fn fails(&self, op: Op, oid: Oid) -> bool {
        self.all
            || match op {
                Op::Read => self.read_all || self.read.contains(&oid),
                Op::Write => self.write_all || self.write.contains(&oid),
                Op::Other => false,
            }
    }
}

fn parse_oid(s: &str) -> Option<Oid> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(hex, 16).ok().map(Oid)
}

/// What kind of call a fault rule applies to.
#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
    /// Neither reads nor changes one object: fails only under `eio all`.
    Other,
}

/// The control file and the rules last read from it.
struct Control {
    path: PathBuf,
    epoch: Instant,
    next_check_ms: AtomicU64,
    /// Modification time, size and inode of the file last read (`None`: absent).
    seen: Mutex<Option<(i64, i64, u64, u64)>>,
    active: AtomicBool,
    rules: RwLock<Rules>,
}

impl Control {
    fn refresh(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now < self.next_check_ms.load(Ordering::Relaxed) {
            return;
        }
        let Some(mut seen) = self.seen.try_lock() else {
            return;
        };
        self.next_check_ms
            .store(now + CONTROL_CHECK_MS, Ordering::Relaxed);
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.mtime(), m.mtime_nsec(), m.size(), m.ino()));
        if stamp == *seen {
            return;
        }
        *seen = stamp;
        let rules = std::fs::read_to_string(&self.path)
            .map(|t| Rules::parse(&t))
            .unwrap_or_default();
        info!(path = %self.path.display(), ?rules, "fault control file read");
        self.active.store(!rules.is_empty(), Ordering::SeqCst);
        *self.rules.write() = rules;
    }

    fn fails(&self, op: Op, oid: Oid) -> bool {
        self.refresh();
        self.active.load(Ordering::SeqCst) && self.rules.read().fails(op, oid)
    }
}

/// Wraps a store; each switch makes one kind of call fail with an I/O error until cleared.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    /// `sync` fails (as `fsync` does after a write-back error).
    pub fail_sync: AtomicBool,
    /// `sync` fails with [`Error::Unavailable`] and syncs nothing (as a replicated store whose
    /// holders are not reached in time).
    pub unreachable_sync: AtomicBool,
    /// `write` fails.
    pub fail_write: AtomicBool,
    /// `write` fails with "no space".
    pub full: AtomicBool,
    /// `write` and `copy` into objects that do not exist yet fail with "no space", as on a
    /// full file system where overwriting allocated blocks still works.
    pub full_for_new: AtomicBool,
    control: Option<Control>,
}

impl FaultyStore {
    /// Wraps `inner` with every fault off.
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultyStore {
        FaultyStore {
            inner,
            fail_sync: AtomicBool::new(false),
            unreachable_sync: AtomicBool::new(false),
            fail_write: AtomicBool::new(false),
            full: AtomicBool::new(false),
            full_for_new: AtomicBool::new(false),
            control: None,
        }
    }

    /// Wraps `inner`, failing the calls the rules in the file at `path` name (see the module
    /// docs), for fault-injection tests of a running daemon.
    pub fn with_control_file(inner: Arc<dyn ObjectStore>, path: impl Into<PathBuf>) -> FaultyStore {
        let control = Control {
            path: path.into(),
            epoch: Instant::now(),
            next_check_ms: AtomicU64::new(0),
            seen: Mutex::new(None),
            active: AtomicBool::new(false),
            rules: RwLock::new(Rules::default()),
        };
        control.refresh();
        FaultyStore {
            control: Some(control),
            ..FaultyStore::new(inner)
        }
    }

    fn injected(oid: Oid) -> Error {
        Error::io(oid, std::io::Error::from_raw_os_error(nix::libc::EIO))
    }

    /// The injected error if the control file makes this call fail.
    fn check(&self, op: Op, oid: Oid) -> Result<()> {
        match &self.control {
            Some(c) if c.fails(op, oid) => Err(Self::injected(oid)),
            _ => Ok(()),
        }
    }
}

impl ObjectStore for FaultyStore {
    fn read(&self, oid: Oid, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check(Op::Read, oid)?;
        self.inner.read(oid, offset, buf)
    }

    fn write(&self, oid: Oid, offset: u64, data: &[u8]) -> Result<()> {
        if self.full_for_new.load(Ordering::SeqCst) && !self.inner.exists(oid)? {
            return Err(Error::NoSpace);
        }
        if self.full.load(Ordering::SeqCst) {
            return Err(Error::NoSpace);
        }
        if self.fail_write.load(Ordering::SeqCst) {
            return Err(Self::injected(oid));
        }
        self.check(Op::Write, oid)?;
        self.inner.write(oid, offset, data)
    }

    fn copy(&self, src: Oid, dst: Oid) -> Result<()> {
        if self.full.load(Ordering::SeqCst) || self.full_for_new.load(Ordering::SeqCst) {
            return Err(Error::NoSpace);
        }
        self.check(Op::Read, src)?;
        self.check(Op::Write, dst)?;
        self.inner.copy(src, dst)
    }

    fn punch(&self, oid: Oid, offset: u64, len: u64) -> Result<()> {
        self.check(Op::Write, oid)?;
        self.inner.punch(oid, offset, len)
    }

    fn remove(&self, oid: Oid) -> Result<()> {
        self.check(Op::Write, oid)?;
        self.inner.remove(oid)
    }

    fn exists(&self, oid: Oid) -> Result<bool> {
        self.check(Op::Other, oid)?;
        self.inner.exists(oid)
    }

    fn list(&self) -> Result<Vec<Oid>> {
        self.check(Op::Other, Oid(0))?;
        self.inner.list()
    }

    fn extents(&self, oid: Oid) -> Result<Vec<Range<u64>>> {
        self.check(Op::Other, oid)?;
        self.inner.extents(oid)
    }

    fn allocated(&self, oid: Oid) -> Result<u64> {
        self.check(Op::Other, oid)?;
        self.inner.allocated(oid)
    }

    fn sync(&self, oids: &[Oid]) -> Result<()> {
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(Self::injected(oids.first().copied().unwrap_or(Oid(0))));
        }
        if self.unreachable_sync.load(Ordering::SeqCst) {
            return Err(Error::Unavailable {
                oid: oids.first().copied().unwrap_or(Oid(0)),
                reason: "injected: holders not reached".into(),
            });
        }
        for &oid in oids {
            self.check(Op::Write, oid)?;
        }
        self.check(Op::Other, Oid(0))?;
        self.inner.sync(oids)
    }

    fn put_atomic(&self, oid: Oid, data: &[u8]) -> Result<()> {
        self.check(Op::Write, oid)?;
        self.inner.put_atomic(oid, data)
    }

    fn get(&self, oid: Oid) -> Result<Vec<u8>> {
        self.check(Op::Read, oid)?;
        self.inner.get(oid)
    }

    fn stats(&self) -> Result<StoreStats> {
        self.check(Op::Other, Oid(0))?;
        self.inner.stats()
    }

    fn meta(&self, oid: Oid) -> Result<ObjectMeta> {
        self.check(Op::Read, oid)?;
        self.inner.meta(oid)
    }

    fn set_version(&self, oid: Oid, version: u64) -> Result<()> {
        self.check(Op::Write, oid)?;
        self.inner.set_version(oid, version)
    }

    fn verify(&self, oid: Oid) -> Result<()> {
        self.check(Op::Read, oid)?;
        self.inner.verify(oid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemStore;

    #[test]
    fn faultystore_without_faults_passes_the_conformance_suite() {
        crate::conformance::run_all(&|| Box::new(FaultyStore::new(Arc::new(MemStore::new()))));
    }

    #[test]
    fn switched_faults_fail_their_calls() {
        let s = FaultyStore::new(Arc::new(MemStore::new()));
        s.full.store(true, Ordering::SeqCst);
        assert!(matches!(s.write(Oid(1), 0, b"x"), Err(Error::NoSpace)));
        s.full.store(false, Ordering::SeqCst);
        s.write(Oid(1), 0, b"x").unwrap();
        s.fail_sync.store(true, Ordering::SeqCst);
        assert!(matches!(s.sync(&[Oid(1)]), Err(Error::Io { .. })));
    }

    fn is_eio(r: Result<()>) -> bool {
        matches!(r, Err(Error::Io { source, .. }) if source.raw_os_error() == Some(nix::libc::EIO))
    }

    /// Rewrites the control file and waits until the store has looked at it again.
    fn set_rules(path: &std::path::Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(CONTROL_CHECK_MS + 50));
    }

    #[test]
    fn faultystore_with_an_absent_control_file_passes_the_conformance_suite() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("faults");
        crate::conformance::run_all(&|| {
            Box::new(FaultyStore::with_control_file(
                Arc::new(MemStore::new()),
                &path,
            ))
        });
    }

    #[test]
    fn the_control_file_switches_faults_on_and_off() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("faults");
        let s = FaultyStore::with_control_file(Arc::new(MemStore::new()), &path);
        let (a, b) = (Oid(0x70000000001), Oid(0x70000000002));
        s.write(a, 0, b"a").unwrap();
        s.write(b, 0, b"b").unwrap();
        let mut buf = [0u8; 1];

        set_rules(&path, &format!("# comment\n\neio read {a}\n"));
        assert!(is_eio(s.read(a, 0, &mut buf)));
        assert!(is_eio(s.meta(a).map(drop)));
        assert!(is_eio(s.verify(a)));
        assert!(is_eio(s.copy(a, Oid(3))));
        s.read(b, 0, &mut buf).unwrap();
        s.write(a, 0, b"A").unwrap();

        set_rules(&path, "eio write *\n");
        s.read(a, 0, &mut buf).unwrap();
        assert_eq!(&buf, b"A");
        assert!(is_eio(s.write(b, 0, b"x")));
        assert!(is_eio(s.punch(b, 0, 1)));
        assert!(is_eio(s.set_version(b, 2)));
        assert!(is_eio(s.sync(&[b])));
        s.exists(b).unwrap();

        set_rules(&path, &format!("eio write 0x{:x}\neio read *\n", b.0));
        s.write(a, 0, b"x").unwrap();
        assert!(is_eio(s.write(b, 0, b"x")));
        assert!(is_eio(s.read(a, 0, &mut buf)));

        set_rules(&path, "eio all\n");
        assert!(is_eio(s.list().map(drop)));
        assert!(is_eio(s.stats().map(drop)));
        assert!(is_eio(s.exists(a).map(drop)));
        assert!(is_eio(s.write(a, 0, b"x")));

        set_rules(&path, "");
        s.read(a, 0, &mut buf).unwrap();
        s.write(b, 0, b"y").unwrap();

        set_rules(&path, "eio read *\n");
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(CONTROL_CHECK_MS + 50));
        s.read(a, 0, &mut buf).unwrap();
    }

    #[test]
    fn unknown_rules_are_ignored() {
        let r = Rules::parse("eio read nothex\nflip 1\neio write 10\n");
        assert!(r.write.contains(&Oid(0x10)) && r.read.is_empty() && !r.all);
    }
}
