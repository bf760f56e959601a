//! Several hosts' pools fed by one log: the same commands give the same state everywhere,
//! writes hand the VDI's ownership over, and locks are seen cluster-wide.

use parking_lot::Mutex;
use sheep_objects::{MemStore, ObjectStore};
use sheep_p2p::NodeId;
use sheep_vdi::cmd::{self, Cmd, Proposal};
use sheep_vdi::{CreateOpts, Error, LockKind, MetaLog, Pool, PoolConfig};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// A log that applies every command on every pool, in one order.
#[derive(Default)]
struct SharedLog {
    pools: Mutex<Vec<Weak<Pool>>>,
    order: Mutex<u64>,
}

impl MetaLog for SharedLog {
    fn submit(&self, _pool: &Pool, bytes: Vec<u8>) -> sheep_vdi::Result<()> {
        let mut seq = self.order.lock();
        *seq += 1;
        for p in self.pools.lock().iter().filter_map(Weak::upgrade) {
            p.apply_entry(*seq, &bytes);
        }
        Ok(())
    }
}

struct Cluster {
    pools: Vec<Arc<Pool>>,
    log: Arc<SharedLog>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `n` pools over one shared data store (as if every copy were everywhere).
fn cluster(n: u8) -> Cluster {
    let store: Arc<dyn ObjectStore> = Arc::new(MemStore::new());
    let log = Arc::new(SharedLog::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pools: Vec<Arc<Pool>> = (1..=n)
        .map(|i| {
            let p = Arc::new(Pool::new(
                store.clone(),
                store.clone(),
                PoolConfig::default(),
                NodeId([i; 16]),
                log.clone(),
            ));
            log.pools.lock().push(Arc::downgrade(&p));
            let (w, s) = (Arc::downgrade(&p), stop.clone());
            std::thread::spawn(move || {
                while !s.load(std::sync::atomic::Ordering::SeqCst) {
                    let Some(p) = w.upgrade() else { return };
                    p.serve_handovers();
                    drop(p);
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            p
        })
        .collect();
    Cluster { pools, log, stop }
}

fn names(p: &Pool) -> Vec<(String, u64, u32)> {
    p.list()
        .into_iter()
        .map(|a| (a.name, a.size, a.vid.0))
        .collect()
}

#[test]
fn every_host_sees_the_same_vdis_and_reads_what_another_wrote() {
    let c = cluster(3);
    let (a, b, h3) = (&c.pools[0], &c.pools[1], &c.pools[2]);
    let v = a.create("vm0", 16 << 20, CreateOpts::default()).unwrap();
    assert!(matches!(
        b.create("vm0", 1 << 20, CreateOpts::default()),
        Err(Error::Exists(_))
    ));
    a.write(v.ino, (4 << 20) - 3, b"across the boundary")
        .unwrap();
    let mut buf = [0u8; 19];
    b.read(v.ino, (4 << 20) - 3, &mut buf).unwrap();
    assert_eq!(&buf, b"across the boundary");
    // B writes: the ownership moves from A to B, and A reads B's bytes.
    b.write(v.ino, 100, b"from b").unwrap();
    let mut buf = [0u8; 6];
    a.read(v.ino, 100, &mut buf).unwrap();
    assert_eq!(&buf, b"from b");
    // Snapshot taken on the third host while B owns it; writes go on on A afterwards.
    h3.snapshot("vm0", "s1").unwrap();
    a.write(v.ino, 100, b"after!").unwrap();
    let s = b.lookup("vm0@s1").unwrap();
    b.read(s.ino, 100, &mut buf).unwrap();
    assert_eq!(&buf, b"from b");
    h3.read(v.ino, 100, &mut buf).unwrap();
    assert_eq!(&buf, b"after!");
    h3.clone_vdi("vm0@s1", "vm1").unwrap();
    b.rename("vm1", "vm2").unwrap();
    a.setattr(
        v.ino,
        sheep_vdi::SetAttr {
            size: Some(8 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    let first = names(a);
    assert_eq!(first.len(), 3);
    for p in &c.pools {
        assert_eq!(names(p), first);
    }
}

#[test]
fn a_write_lock_on_one_host_refuses_the_others_until_released_or_the_host_is_gone() {
    let c = cluster(2);
    let (a, b) = (&c.pools[0], &c.pools[1]);
    let v = a.create("img", 1 << 20, CreateOpts::default()).unwrap();
    a.set_lock(v.ino, 7, 100, (100, 100), Some(LockKind::Write))
        .unwrap();
    assert!(matches!(
        b.set_lock(v.ino, 7, 200, (100, 100), Some(LockKind::Read)),
        Err(Error::Locked(_))
    ));
    assert!(b
        .test_lock(v.ino, 1, (0, u64::MAX), LockKind::Read)
        .is_some());
    a.release_locks(v.ino, 7).unwrap();
    b.set_lock(v.ino, 1, 200, (100, 100), Some(LockKind::Read))
        .unwrap();
    assert!(matches!(
        a.set_lock(v.ino, 7, 100, (0, 200), Some(LockKind::Write)),
        Err(Error::Locked(_))
    ));
    // B fails: its locks go.
    a.node_gone(b.node_id());
    b.node_gone(b.node_id());
    a.set_lock(v.ino, 7, 100, (0, 200), Some(LockKind::Write))
        .unwrap();
}

#[test]
fn a_removed_host_is_handed_nothing_and_its_late_proposals_are_refused() {
    let c = cluster(3);
    let (a, b, h3) = (&c.pools[0], &c.pools[1], &c.pools[2]);
    let v = a.create("img", 8 << 20, CreateOpts::default()).unwrap();
    a.write(v.ino, 0, b"a owns it").unwrap();
    // B is removed from the cluster; then the log orders what was proposed before that: A's
    // handover of the VDI to B (B had asked for it), and a lock B asked for.
    for p in &c.pools {
        p.node_gone(b.node_id());
    }
    let own = cmd::encode(&Proposal {
        node: a.node_id(),
        token: u64::MAX,
        cmd: Cmd::Own {
            ino: v.ino.0,
            node: b.node_id(),
            from: Some(a.node_id()),
        },
    })
    .unwrap();
    c.log.submit(a, own).unwrap();
    // Nobody owns the VDI now, so the third host takes it at once (handed to B, it would wait
    // for a handover that never comes).
    let t = std::time::Instant::now();
    h3.write(v.ino, 0, b"3 owns it").unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(matches!(
        b.set_lock(v.ino, 7, 200, (0, 100), Some(LockKind::Write)),
        Err(Error::Unavailable(_))
    ));
    a.set_lock(v.ino, 7, 100, (0, 100), Some(LockKind::Write))
        .unwrap();
    a.release_locks(v.ino, 7).unwrap();
    // Once B joins again, it is a host like any other.
    for p in &c.pools {
        p.node_joined(b.node_id());
    }
    b.set_lock(v.ino, 7, 200, (0, 100), Some(LockKind::Write))
        .unwrap();
    b.write(v.ino, 0, b"b owns it").unwrap();
    let mut buf = [0u8; 9];
    a.read(v.ino, 0, &mut buf).unwrap();
    assert_eq!(&buf, b"b owns it");
}
