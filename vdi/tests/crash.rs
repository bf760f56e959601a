//! Crash consistency on a store that forgets everything not made durable.

#![allow(clippy::cast_possible_truncation)] // Test sizes are small.
use sheep_objects::{
    MemStore, ObjectKind, ObjectMeta, ObjectStore, Oid, Result as ObjResult, StoreStats,
};
use sheep_vdi::{CreateOpts, Pool, PoolConfig};
use std::sync::Arc;

const OBJ: u64 = 4 << 20;

fn must_open(store: &Arc<MemStore>) -> Pool {
    Pool::open(store.clone(), PoolConfig::default()).expect("open pool")
}

fn must_read(pool: &Pool, name: &str, off: u64, len: usize) -> Vec<u8> {
    let a = pool.lookup(name).expect("lookup");
    let mut buf = vec![0xeeu8; len];
    let n = pool.read(a.ino, off, &mut buf).expect("read");
    buf.truncate(n);
    buf
}

fn must_write(pool: &Pool, name: &str, off: u64, data: &[u8]) {
    let a = pool.lookup(name).expect("lookup");
    pool.write(a.ino, off, data).expect("write");
}

#[test]
fn flushed_writes_survive_a_crash() {
    let store = Arc::new(MemStore::new());
    let pool = must_open(&store);
    pool.create("a", 3 * OBJ, CreateOpts::default()).unwrap();
    must_write(&pool, "a", OBJ - 2, b"durable");
    pool.flush(pool.lookup("a").unwrap().ino).unwrap();
    must_write(&pool, "a", 2 * OBJ, b"volatile");
    drop(pool);
    store.crash();
    let pool = must_open(&store);
    assert_eq!(must_read(&pool, "a", OBJ - 2, 7), b"durable");
    let tail = must_read(&pool, "a", 2 * OBJ, 8);
    assert!(tail == b"volatile" || tail == [0; 8], "{tail:?}");
}

#[test]
fn a_write_that_grew_the_vdi_survives_once_flushed() {
    let store = Arc::new(MemStore::new());
    let pool = must_open(&store);
    pool.create("g", 0, CreateOpts::default()).unwrap();
    must_write(&pool, "g", 5 * OBJ, b"far");
    pool.flush(pool.lookup("g").unwrap().ino).unwrap();
    drop(pool);
    store.crash();
    let pool = must_open(&store);
    assert_eq!(pool.lookup("g").unwrap().size, 5 * OBJ + 3);
    assert_eq!(must_read(&pool, "g", 5 * OBJ, 3), b"far");
}

#[test]
fn copy_on_write_never_loses_flushed_data_in_a_crash() {
    let store = Arc::new(MemStore::new());
    let pool = must_open(&store);
    pool.create("a", 2 * OBJ, CreateOpts::default()).unwrap();
    must_write(&pool, "a", 0, &vec![7u8; OBJ as usize]);
    pool.flush(pool.lookup("a").unwrap().ino).unwrap();
    pool.snapshot("a", "s").unwrap();
    // Copy-on-write into a new object, not flushed; then the snapshot goes away.
    must_write(&pool, "a", 100, b"new");
    pool.unlink("a@s").unwrap();
    assert!(pool.pending_reclaim() > 0);
    drop(pool);
    store.crash();
    let pool = must_open(&store);
    let data = must_read(&pool, "a", 0, OBJ as usize);
    assert!(data[..100].iter().all(|b| *b == 7));
    assert!(data[100..103] == *b"new" || data[100..103] == [7, 7, 7]);
    assert!(data[103..].iter().all(|b| *b == 7));
}

#[test]
fn reclaim_flushes_every_table_before_deleting_shared_objects() {
    let store = Arc::new(MemStore::new());
    let pool = must_open(&store);
    pool.create("a", OBJ, CreateOpts::default()).unwrap();
    must_write(&pool, "a", 0, &vec![1u8; OBJ as usize]);
    pool.clone_vdi("a", "b").unwrap();
    // Both move away from the shared object; neither is flushed by hand.
    must_write(&pool, "a", 0, b"A");
    must_write(&pool, "b", 0, b"B");
    assert!(pool.reclaim().unwrap() >= 1);
    drop(pool);
    store.crash();
    let pool = must_open(&store);
    assert_eq!(must_read(&pool, "a", 0, 2), b"A\x01");
    assert_eq!(must_read(&pool, "b", 0, 2), b"B\x01");
    assert_eq!(pool.unreferenced_objects().unwrap(), vec![]);
}

#[test]
fn an_unlinked_vdi_still_open_at_a_crash_is_deleted_at_the_next_start() {
    let store = Arc::new(MemStore::new());
    let pool = must_open(&store);
    let a = pool.create("gone", OBJ, CreateOpts::default()).unwrap();
    must_write(&pool, "gone", 0, b"data");
    pool.open_handle(a.ino, true).unwrap();
    pool.unlink("gone").unwrap();
    assert!(pool.lookup("gone").is_err());
    let mut buf = [0u8; 4];
    pool.read(a.ino, 0, &mut buf).unwrap();
    assert_eq!(&buf, b"data");
    pool.flush_all().unwrap();
    drop(pool);
    store.crash();
    let pool = must_open(&store);
    assert!(pool.list().is_empty());
    let data: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .filter(|o| o.kind() == sheep_objects::ObjectKind::Data)
        .collect();
    assert!(data.is_empty(), "{data:?}");
}

#[test]
fn a_snapshot_is_a_point_in_time_image_while_writers_run() {
    let store = Arc::new(MemStore::new());
    let pool = Arc::new(must_open(&store));
    let objs = 8u64;
    pool.create("v", 4 * objs * OBJ, CreateOpts::default())
        .unwrap();
    let ino = pool.lookup("v").unwrap().ino;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4u64)
        .map(|t| {
            let (pool, stop) = (pool.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut gen = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    gen += 1;
                    for k in 0..objs {
                        let off = (t * objs + k) * OBJ + 512 * k;
                        pool.write(ino, off, &gen.to_le_bytes()).unwrap();
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(50));
    pool.snapshot("v", "s").unwrap();
    let c = pool.create("copy", 0, CreateOpts::default()).unwrap();
    pool.copy_range(ino, 0, c.ino, 0, 4 * objs * OBJ).unwrap();
    // Let the writers go past the snapshot (however slow the machine is), then stop them.
    let gen_at =
        |image: &str| u64::from_le_bytes(must_read(&pool, image, 0, 8).try_into().unwrap());
    let t0 = std::time::Instant::now();
    while gen_at("v") <= gen_at("v@s") {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "the writers made no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    for image in ["v@s", "copy"] {
        for t in 0..4u64 {
            let gens: Vec<u64> = (0..objs)
                .map(|k| {
                    let b = must_read(&pool, image, (t * objs + k) * OBJ + 512 * k, 8);
                    u64::from_le_bytes(b.try_into().unwrap())
                })
                .collect();
            // Writes go in object order, so a point-in-time image shows generation g in a
            // prefix of the objects and g-1 in the rest.
            assert!(
                gens.windows(2).all(|w| w[0] == w[1] || w[0] == w[1] + 1),
                "{image} {t}: {gens:?}"
            );
        }
    }
    // The writers kept working after the snapshot: the VDI moved past it.
    let now = must_read(&pool, "v", 0, 8);
    let snap = must_read(&pool, "v@s", 0, 8);
    assert!(
        u64::from_le_bytes(now.try_into().unwrap()) > u64::from_le_bytes(snap.try_into().unwrap())
    );
}

#[test]
fn a_copy_fsynced_on_its_destination_survives_a_crash_of_an_unflushed_source() {
    let store = Arc::new(MemStore::new());
    let pool = must_open(&store);
    let src = pool.create("src", 3 * OBJ, CreateOpts::default()).unwrap();
    must_write(&pool, "src", 0, &vec![5u8; (2 * OBJ) as usize]);
    must_write(&pool, "src", 2 * OBJ + 7, b"tail");
    let dst = pool.create("dst", 0, CreateOpts::default()).unwrap();
    assert_eq!(
        pool.copy_range(src.ino, 0, dst.ino, 0, 3 * OBJ).unwrap(),
        3 * OBJ
    );
    pool.flush(dst.ino).unwrap();
    drop(pool);
    store.crash();
    let pool = must_open(&store);
    let data = must_read(&pool, "dst", 0, (3 * OBJ) as usize);
    assert!(data[..(2 * OBJ) as usize].iter().all(|b| *b == 5));
    assert_eq!(
        &data[(2 * OBJ + 7) as usize..(2 * OBJ + 11) as usize],
        b"tail"
    );
    assert_eq!(pool.unreferenced_objects().unwrap(), vec![]);
}

#[test]
fn after_a_failed_flush_the_vdi_refuses_writes_and_flushes_until_restart() {
    use sheep_objects::FaultyStore;
    use std::sync::atomic::Ordering;
    let mem = Arc::new(MemStore::new());
    let faulty = Arc::new(FaultyStore::new(mem.clone()));
    let pool = Pool::open(faulty.clone(), PoolConfig::default()).unwrap();
    let a = pool.create("a", OBJ, CreateOpts::default()).unwrap();
    let b = pool.create("b", OBJ, CreateOpts::default()).unwrap();
    pool.write(a.ino, 0, b"lost?").unwrap();
    faulty.fail_sync.store(true, Ordering::SeqCst);
    assert!(pool.flush(a.ino).is_err());
    faulty.fail_sync.store(false, Ordering::SeqCst);
    // The error is sticky: a later fsync must not report success for data that may be gone.
    assert!(matches!(
        pool.flush(a.ino),
        Err(sheep_vdi::Error::WriteBack(..))
    ));
    assert!(matches!(
        pool.write(a.ino, 0, b"x"),
        Err(sheep_vdi::Error::WriteBack(..))
    ));
    // Other VDIs are not affected.
    pool.write(b.ino, 0, b"fine").unwrap();
    pool.flush(b.ino).unwrap();
    drop(pool);
    let pool = Pool::open(faulty, PoolConfig::default()).unwrap();
    assert_eq!(must_read(&pool, "b", 0, 4), b"fine");
    pool.write(pool.lookup("a").unwrap().ino, 0, b"again")
        .unwrap();
}

#[test]
fn a_flush_that_reaches_no_holder_fails_but_the_next_one_makes_the_writes_durable() {
    // A host cut off from its cluster: its flush fails (EIO), nothing was dropped, and once
    // the holders are reached again a flush syncs the writes made before the failure.
    use sheep_objects::FaultyStore;
    use std::sync::atomic::Ordering;
    let mem = Arc::new(MemStore::new());
    let faulty = Arc::new(FaultyStore::new(mem.clone()));
    let pool = Pool::open(faulty.clone(), PoolConfig::default()).unwrap();
    let a = pool.create("a", OBJ, CreateOpts::default()).unwrap();
    pool.flush(a.ino).unwrap();
    pool.write(a.ino, 100, b"before").unwrap();
    faulty.unreachable_sync.store(true, Ordering::SeqCst);
    assert!(matches!(
        pool.flush(a.ino),
        Err(sheep_vdi::Error::Object(
            sheep_objects::Error::Unavailable { .. }
        ))
    ));
    faulty.unreachable_sync.store(false, Ordering::SeqCst);
    // Not latched: writes and flushes go on, and the flush covers the earlier write too.
    pool.write(a.ino, 200, b"after").unwrap();
    pool.flush(a.ino).unwrap();
    drop(pool);
    mem.crash();
    let pool = must_open(&mem);
    assert_eq!(must_read(&pool, "a", 100, 6), b"before");
    assert_eq!(must_read(&pool, "a", 200, 5), b"after");
}

#[test]
fn a_full_store_gives_no_space_and_corrupts_nothing() {
    use sheep_objects::FaultyStore;
    use std::sync::atomic::Ordering;
    let faulty = Arc::new(FaultyStore::new(Arc::new(MemStore::new())));
    let pool = Pool::open(faulty.clone(), PoolConfig::default()).unwrap();
    let a = pool.create("a", 2 * OBJ, CreateOpts::default()).unwrap();
    pool.write(a.ino, 0, b"kept").unwrap();
    pool.flush(a.ino).unwrap();
    faulty.full.store(true, Ordering::SeqCst);
    let err = pool.write(a.ino, OBJ, b"more").unwrap_err();
    assert!(
        matches!(err, sheep_vdi::Error::Object(sheep_objects::Error::NoSpace)),
        "{err}"
    );
    faulty.full.store(false, Ordering::SeqCst);
    assert_eq!(must_read(&pool, "a", 0, 4), b"kept");
    assert_eq!(must_read(&pool, "a", OBJ, 4), [0; 4]);
    pool.write(a.ino, OBJ, b"more").unwrap();
    pool.flush(a.ino).unwrap();
}

#[test]
fn a_write_cut_short_by_a_full_store_reports_what_landed() {
    use sheep_objects::FaultyStore;
    use std::sync::atomic::Ordering;
    let faulty = Arc::new(FaultyStore::new(Arc::new(MemStore::new())));
    let pool = Pool::open(faulty.clone(), PoolConfig::default()).unwrap();
    let a = pool.create("a", 2 * OBJ, CreateOpts::default()).unwrap();
    pool.write(a.ino, 0, b"x").unwrap();
    // Overwriting the object the VDI owns still works; the next object needs new space.
    faulty.full_for_new.store(true, Ordering::SeqCst);
    let data = vec![9u8; 8192];
    assert_eq!(pool.write(a.ino, OBJ - 4096, &data).unwrap(), 4096);
    let err = pool.write(a.ino, OBJ, &data[4096..]).unwrap_err();
    assert!(
        matches!(err, sheep_vdi::Error::Object(sheep_objects::Error::NoSpace)),
        "{err}"
    );
    faulty.full_for_new.store(false, Ordering::SeqCst);
    assert_eq!(must_read(&pool, "a", OBJ - 4096, 4096), vec![9u8; 4096]);
    assert_eq!(must_read(&pool, "a", OBJ, 4096), vec![0u8; 4096]);
    assert_eq!(pool.unreferenced_objects().unwrap(), vec![]);
}

/// A store whose next sync of data objects (a flush) can be held up, like a write-back of a
/// lot of dirty data, then let through or made to fail without syncing anything (the power
/// going out before it was done).
struct HeldSync {
    inner: Arc<MemStore>,
    state: std::sync::Mutex<Hold>,
    changed: std::sync::Condvar,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hold {
    Off,
    Armed,
    Holding,
    Proceed,
    Fail,
}

impl HeldSync {
    fn new(inner: Arc<MemStore>) -> Arc<HeldSync> {
        Arc::new(HeldSync {
            inner,
            state: std::sync::Mutex::new(Hold::Off),
            changed: std::sync::Condvar::new(),
        })
    }

    fn set(&self, h: Hold) {
        *self.state.lock().unwrap() = h;
        self.changed.notify_all();
    }

    /// Waits until a sync is held.
    fn wait_holding(&self) {
        let g = self.state.lock().unwrap();
        let (_g, t) = self
            .changed
            .wait_timeout_while(g, std::time::Duration::from_secs(10), |h| {
                *h != Hold::Holding
            })
            .unwrap();
        assert!(!t.timed_out(), "no flush reached the store");
    }
}

impl ObjectStore for HeldSync {
    fn read(&self, oid: Oid, offset: u64, buf: &mut [u8]) -> ObjResult<()> {
        self.inner.read(oid, offset, buf)
    }
    fn write(&self, oid: Oid, offset: u64, data: &[u8]) -> ObjResult<()> {
        self.inner.write(oid, offset, data)
    }
    fn copy(&self, src: Oid, dst: Oid) -> ObjResult<()> {
        self.inner.copy(src, dst)
    }
    fn punch(&self, oid: Oid, offset: u64, len: u64) -> ObjResult<()> {
        self.inner.punch(oid, offset, len)
    }
    fn remove(&self, oid: Oid) -> ObjResult<()> {
        self.inner.remove(oid)
    }
    fn exists(&self, oid: Oid) -> ObjResult<bool> {
        self.inner.exists(oid)
    }
    fn list(&self) -> ObjResult<Vec<Oid>> {
        self.inner.list()
    }
    fn extents(&self, oid: Oid) -> ObjResult<Vec<std::ops::Range<u64>>> {
        self.inner.extents(oid)
    }
    fn allocated(&self, oid: Oid) -> ObjResult<u64> {
        self.inner.allocated(oid)
    }
    fn sync(&self, oids: &[Oid]) -> ObjResult<()> {
        let mut h = self.state.lock().unwrap();
        if *h == Hold::Armed && oids.iter().any(|o| o.kind() == ObjectKind::Data) {
            *h = Hold::Holding;
            self.changed.notify_all();
            h = self.changed.wait_while(h, |h| *h == Hold::Holding).unwrap();
            let fail = *h == Hold::Fail;
            *h = Hold::Off;
            drop(h);
            if fail {
                return Err(sheep_objects::Error::io(
                    oids[0],
                    std::io::Error::other("power lost during the write-back"),
                ));
            }
        } else {
            drop(h);
        }
        self.inner.sync(oids)
    }
    fn put_atomic(&self, oid: Oid, data: &[u8]) -> ObjResult<()> {
        self.inner.put_atomic(oid, data)
    }
    fn get(&self, oid: Oid) -> ObjResult<Vec<u8>> {
        self.inner.get(oid)
    }
    fn stats(&self) -> ObjResult<StoreStats> {
        self.inner.stats()
    }
    fn meta(&self, oid: Oid) -> ObjResult<ObjectMeta> {
        self.inner.meta(oid)
    }
    fn set_version(&self, oid: Oid, version: u64) -> ObjResult<()> {
        self.inner.set_version(oid, version)
    }
    fn verify(&self, oid: Oid) -> ObjResult<()> {
        self.inner.verify(oid)
    }
}

/// Runs `f` on another thread; panics if it takes more than 10 s.
fn within_10s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} waited for the flush in progress"))
}

#[test]
fn a_copy_does_not_wait_for_a_flush_of_its_source_and_stays_point_in_time_and_durable() {
    let mem = Arc::new(MemStore::new());
    let held = HeldSync::new(mem.clone());
    let pool = Arc::new(Pool::open(held.clone(), PoolConfig::default()).unwrap());
    let objs = 16u64;
    let src = pool
        .create("src", objs * OBJ, CreateOpts::default())
        .unwrap();
    // The first write to an object makes it durable (allocation); the second stays dirty.
    pool.write(src.ino, 0, &vec![1u8; (objs * OBJ) as usize])
        .unwrap();
    pool.write(src.ino, 0, &vec![2u8; (objs * OBJ) as usize])
        .unwrap();
    let dst = pool.create("dst", 0, CreateOpts::default()).unwrap();
    // A write-back of the source is under way (and slow).
    held.set(Hold::Armed);
    let writeback = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.flush(src.ino))
    };
    held.wait_holding();
    // The copy neither waits for it nor syncs anything.
    let p = pool.clone();
    let copied = within_10s("copy_range", move || {
        p.copy_range(src.ino, 0, dst.ino, 0, objs * OBJ)
    });
    assert_eq!(copied.unwrap(), objs * OBJ);
    // Point in time: later writes to the source do not show in the copy.
    pool.write(src.ino, 0, &vec![3u8; OBJ as usize]).unwrap();
    assert!(must_read(&pool, "dst", 0, OBJ as usize)
        .iter()
        .all(|b| *b == 2));
    // The destination's fsync makes what the source held at the copy durable by itself,
    // without waiting for the source's flush.
    let p = pool.clone();
    within_10s("fsync of the copy", move || p.flush(dst.ino)).unwrap();
    // The power goes out before the source's write-back is done.
    held.set(Hold::Fail);
    assert!(writeback.join().unwrap().is_err());
    drop(pool);
    mem.crash();
    let pool = must_open(&mem);
    let data = must_read(&pool, "dst", 0, (objs * OBJ) as usize);
    assert!(
        data.iter().all(|b| *b == 2),
        "the copy lost data fsynced through it"
    );
}

#[test]
fn an_fsync_waits_for_a_flush_in_progress_of_its_file() {
    let mem = Arc::new(MemStore::new());
    let held = HeldSync::new(mem.clone());
    let pool = Arc::new(Pool::open(held.clone(), PoolConfig::default()).unwrap());
    let a = pool.create("a", OBJ, CreateOpts::default()).unwrap();
    pool.write(a.ino, 0, b"first").unwrap();
    pool.write(a.ino, 0, b"again").unwrap();
    held.set(Hold::Armed);
    let writeback = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.flush(a.ino))
    };
    held.wait_holding();
    // The write-back took the dirty object; an fsync now must still not return before it
    // is durable.
    let (tx, rx) = std::sync::mpsc::channel();
    let fsync = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let r = pool.flush(a.ino);
            let _ = tx.send(());
            r
        })
    };
    assert!(rx
        .recv_timeout(std::time::Duration::from_millis(300))
        .is_err());
    held.set(Hold::Proceed);
    writeback.join().unwrap().unwrap();
    fsync.join().unwrap().unwrap();
    drop(pool);
    mem.crash();
    let pool = must_open(&mem);
    assert_eq!(must_read(&pool, "a", 0, 5), b"again");
}
