//! ReplicatedStore over loopback: replication, rebalancing, epochs, hostile input.

use sheep_objects::net::proto::{REQ_HEADER_LEN, REQ_MAGIC};
use sheep_objects::placement::Placement;
use sheep_objects::{
    ClusterMap, Error, FixedCopies, MemBudget, MemStore, Member, ObjectStore, Oid, ReplicaConfig,
    ReplicatedStore, StoreStats, Vid, OBJECT_BYTES,
};
use sheep_p2p::NodeId;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::Range;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const TIB: u64 = 1 << 40;

fn node(i: u8) -> NodeId {
    let mut b = [0u8; 16];
    b[0] = 0xa0 ^ i;
    b[7] = i.wrapping_mul(91);
    b[15] = i;
    NodeId(b)
}

struct Host {
    store: Arc<ReplicatedStore>,
    local: Arc<Hooked>,
    member: Member,
}

/// A store (memory, unless said) whose listing (the start of a rebalance walk) can be held,
/// and whose next change can be slowed, to open the windows of races deterministically.
struct Hooked {
    inner: Arc<dyn ObjectStore>,
    /// The memory store behind `inner`, if it is one (to damage it).
    mem: Option<Arc<MemStore>>,
    /// While true, `list` waits.
    hold_list: Mutex<bool>,
    released: Condvar,
    /// Set: the next removal or write reports on the sender, then waits for the receiver (at
    /// most 20 s) before it is applied.
    #[allow(clippy::type_complexity)]
    slow_change: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
}

impl Hooked {
    fn new() -> Hooked {
        let mem = Arc::new(MemStore::new());
        let mut h = Hooked::on(mem.clone());
        h.mem = Some(mem);
        h
    }

    fn on(inner: Arc<dyn ObjectStore>) -> Hooked {
        Hooked {
            inner,
            mem: None,
            hold_list: Mutex::new(false),
            released: Condvar::new(),
            slow_change: Mutex::new(None),
        }
    }

    fn hold_walks(&self, hold: bool) {
        *self.hold_list.lock().unwrap() = hold;
        self.released.notify_all();
    }

    fn maybe_slow(&self) {
        let slow = self.slow_change.lock().unwrap().take();
        if let Some((tell, go)) = slow {
            let _ = tell.send(());
            let _ = go.recv_timeout(Duration::from_secs(20));
        }
    }
}

impl ObjectStore for Hooked {
    fn read(&self, oid: Oid, offset: u64, buf: &mut [u8]) -> sheep_objects::Result<()> {
        self.inner.read(oid, offset, buf)
    }
    fn write(&self, oid: Oid, offset: u64, data: &[u8]) -> sheep_objects::Result<()> {
        self.maybe_slow();
        self.inner.write(oid, offset, data)
    }
    fn copy(&self, src: Oid, dst: Oid) -> sheep_objects::Result<()> {
        self.inner.copy(src, dst)
    }
    fn punch(&self, oid: Oid, offset: u64, len: u64) -> sheep_objects::Result<()> {
        self.inner.punch(oid, offset, len)
    }
    fn remove(&self, oid: Oid) -> sheep_objects::Result<()> {
        self.maybe_slow();
        self.inner.remove(oid)
    }
    fn exists(&self, oid: Oid) -> sheep_objects::Result<bool> {
        self.inner.exists(oid)
    }
    fn list(&self) -> sheep_objects::Result<Vec<Oid>> {
        let mut held = self.hold_list.lock().unwrap();
        while *held {
            held = self.released.wait(held).unwrap();
        }
        drop(held);
        self.inner.list()
    }
    fn extents(&self, oid: Oid) -> sheep_objects::Result<Vec<Range<u64>>> {
        self.inner.extents(oid)
    }
    fn allocated(&self, oid: Oid) -> sheep_objects::Result<u64> {
        self.inner.allocated(oid)
    }
    fn sync(&self, oids: &[Oid]) -> sheep_objects::Result<()> {
        self.inner.sync(oids)
    }
    fn put_atomic(&self, oid: Oid, data: &[u8]) -> sheep_objects::Result<()> {
        self.inner.put_atomic(oid, data)
    }
    fn get(&self, oid: Oid) -> sheep_objects::Result<Vec<u8>> {
        self.inner.get(oid)
    }
    fn meta(&self, oid: Oid) -> sheep_objects::Result<sheep_objects::ObjectMeta> {
        self.inner.meta(oid)
    }
    fn set_version(&self, oid: Oid, version: u64) -> sheep_objects::Result<()> {
        self.inner.set_version(oid, version)
    }
    fn verify(&self, oid: Oid) -> sheep_objects::Result<()> {
        self.inner.verify(oid)
    }
    fn stats(&self) -> sheep_objects::Result<StoreStats> {
        self.inner.stats()
    }
}

fn host(i: u8, copies: u8, timeout: Duration) -> Host {
    host_on(i, copies, timeout, Hooked::new())
}

fn host_on(i: u8, copies: u8, timeout: Duration, local: Hooked) -> Host {
    host_on_with(i, copies, timeout, local, ReplicaConfig::default().budget)
}

fn host_with(i: u8, copies: u8, timeout: Duration, budget: Arc<MemBudget>) -> Host {
    host_on_with(i, copies, timeout, Hooked::new(), budget)
}

fn host_on_with(
    i: u8,
    copies: u8,
    timeout: Duration,
    local: Hooked,
    budget: Arc<MemBudget>,
) -> Host {
    let local = Arc::new(local);
    let store = ReplicatedStore::new(
        node(i),
        local.clone(),
        Arc::new(FixedCopies(copies)),
        ReplicaConfig {
            io_timeout: timeout,
            reserve: None,
            budget,
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    store.serve(listener).expect("serve");
    Host {
        store,
        local,
        member: Member {
            id: node(i),
            capacity: TIB,
            data_addrs: vec![addr],
        },
    }
}

struct Cluster {
    hosts: Vec<Host>,
    epoch: u64,
    copies: u8,
}

impl Cluster {
    fn start(n: u8, copies: u8) -> Cluster {
        Cluster::start_with(n, copies, Duration::from_secs(20))
    }

    fn start_with(n: u8, copies: u8, timeout: Duration) -> Cluster {
        let hosts = (0..n).map(|i| host(i, copies, timeout)).collect();
        Cluster::form(hosts, copies)
    }

    /// `n` hosts, each with a memory budget of its own (returned in host order).
    fn start_budgeted(n: u8, copies: u8, limit: usize) -> (Cluster, Vec<Arc<MemBudget>>) {
        let budgets: Vec<Arc<MemBudget>> = (0..n).map(|_| MemBudget::new(limit)).collect();
        let hosts = (0..n)
            .map(|i| {
                host_with(
                    i,
                    copies,
                    Duration::from_secs(20),
                    budgets[usize::from(i)].clone(),
                )
            })
            .collect();
        (Cluster::form(hosts, copies), budgets)
    }

    fn form(hosts: Vec<Host>, copies: u8) -> Cluster {
        let mut c = Cluster {
            hosts,
            epoch: 0,
            copies,
        };
        c.new_epoch();
        c.wait_complete();
        c
    }

    fn map(&self) -> ClusterMap {
        ClusterMap {
            epoch: self.epoch,
            cluster_epoch: self.epoch,
            members: self.hosts.iter().map(|h| h.member.clone()).collect(),
        }
    }

    fn new_epoch(&mut self) {
        self.epoch += 1;
        let map = self.map();
        for h in &self.hosts {
            h.store.set_map(map.clone());
        }
    }

    fn placement(&self) -> Placement {
        let m: Vec<(NodeId, u64)> = self
            .hosts
            .iter()
            .map(|h| (h.member.id, h.member.capacity))
            .collect();
        Placement::new(&m)
    }

    fn wait_complete(&self) {
        let t0 = Instant::now();
        loop {
            if self.hosts.iter().all(|h| {
                let s = h.store.status();
                s.epoch == self.epoch && s.complete
            }) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "rebalancing did not complete: {:?}",
                self.hosts
                    .iter()
                    .map(|h| h.store.status())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn holders_locally(&self, oid: Oid) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .hosts
            .iter()
            .filter(|h| h.local.exists(oid).unwrap())
            .map(|h| h.member.id)
            .collect();
        v.sort();
        v
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for h in &self.hosts {
            h.store.shutdown();
        }
    }
}

#[allow(clippy::cast_possible_truncation)]
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(31) ^ seed.wrapping_mul(2_654_435_761)) as u8)
        .collect()
}

fn read(s: &dyn ObjectStore, oid: Oid, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    s.read(oid, off, &mut b)
        .unwrap_or_else(|e| panic!("read {oid}: {e}"));
    b
}

/// Lets the conformance suite own a store that lives in an `Arc` (and a cluster behind it).
struct Shared(Arc<ReplicatedStore>, #[allow(dead_code)] Option<Cluster>);

impl ObjectStore for Shared {
    fn read(&self, oid: Oid, offset: u64, buf: &mut [u8]) -> sheep_objects::Result<()> {
        self.0.read(oid, offset, buf)
    }
    fn write(&self, oid: Oid, offset: u64, data: &[u8]) -> sheep_objects::Result<()> {
        self.0.write(oid, offset, data)
    }
    fn copy(&self, src: Oid, dst: Oid) -> sheep_objects::Result<()> {
        self.0.copy(src, dst)
    }
    fn punch(&self, oid: Oid, offset: u64, len: u64) -> sheep_objects::Result<()> {
        self.0.punch(oid, offset, len)
    }
    fn remove(&self, oid: Oid) -> sheep_objects::Result<()> {
        self.0.remove(oid)
    }
    fn exists(&self, oid: Oid) -> sheep_objects::Result<bool> {
        self.0.exists(oid)
    }
    fn list(&self) -> sheep_objects::Result<Vec<Oid>> {
        self.0.list()
    }
    fn extents(&self, oid: Oid) -> sheep_objects::Result<Vec<Range<u64>>> {
        self.0.extents(oid)
    }
    fn allocated(&self, oid: Oid) -> sheep_objects::Result<u64> {
        self.0.allocated(oid)
    }
    fn sync(&self, oids: &[Oid]) -> sheep_objects::Result<()> {
        self.0.sync(oids)
    }
    fn put_atomic(&self, oid: Oid, data: &[u8]) -> sheep_objects::Result<()> {
        self.0.put_atomic(oid, data)
    }
    fn get(&self, oid: Oid) -> sheep_objects::Result<Vec<u8>> {
        self.0.get(oid)
    }
    fn meta(&self, oid: Oid) -> sheep_objects::Result<sheep_objects::ObjectMeta> {
        self.0.meta(oid)
    }
    fn set_version(&self, oid: Oid, version: u64) -> sheep_objects::Result<()> {
        self.0.set_version(oid, version)
    }
    fn verify(&self, oid: Oid) -> sheep_objects::Result<()> {
        self.0.verify(oid)
    }
    fn stats(&self) -> sheep_objects::Result<StoreStats> {
        self.0.stats()
    }
}

#[test]
fn a_one_member_store_passes_the_conformance_suite() {
    // Before any map: this host alone.
    sheep_objects::conformance::run_common(&|| {
        let s = ReplicatedStore::new(
            node(1),
            Arc::new(MemStore::new()),
            Arc::new(FixedCopies(3)),
            ReplicaConfig::default(),
        );
        Box::new(Shared(s, None))
    });
    // With a map of one member, serving on loopback.
    sheep_objects::conformance::run_common(&|| {
        let c = Cluster::start(1, 3);
        Box::new(Shared(c.hosts[0].store.clone(), Some(c)))
    });
}

#[test]
fn a_three_member_store_passes_the_conformance_suite() {
    sheep_objects::conformance::run_common(&|| {
        let c = Cluster::start(3, 3);
        Box::new(Shared(c.hosts[1].store.clone(), Some(c)))
    });
}

#[test]
fn a_write_on_one_host_is_read_identically_everywhere_with_three_copies() {
    let c = Cluster::start(3, 3);
    let oid = Oid::data(Vid(5), 7);
    let p = pattern(1 << 20, 1);
    c.hosts[0].store.write(oid, 4096, &p).unwrap();
    c.hosts[0].store.sync(&[oid]).unwrap();
    for h in &c.hosts {
        assert_eq!(read(&*h.store, oid, 4096, p.len()), p);
        assert_eq!(
            read(&*h.local, oid, 4096, p.len()),
            p,
            "local copy on {:?}",
            h.member.id
        );
        assert!(h.store.exists(oid).unwrap());
    }
    // punch, copy and remove reach every copy too.
    c.hosts[1].store.punch(oid, 4096, 8192).unwrap();
    let dst = Oid::data(Vid(6), 1);
    c.hosts[2].store.copy(oid, dst).unwrap();
    for h in &c.hosts {
        assert_eq!(read(&*h.local, oid, 4096, 8192), vec![0; 8192]);
        assert_eq!(read(&*h.local, dst, 4096 + 8192, 100), p[8192..8292]);
        assert_eq!(h.store.extents(dst).unwrap(), h.local.extents(oid).unwrap());
    }
    c.hosts[2].store.remove(oid).unwrap();
    for h in &c.hosts {
        assert!(!h.local.exists(oid).unwrap());
        assert!(!h.store.exists(oid).unwrap());
        assert!(matches!(
            h.store.read(oid, 0, &mut [0u8; 4]),
            Err(Error::NotFound(_))
        ));
    }
    // Non-data objects stay local.
    c.hosts[0].store.put_atomic(Oid::meta(1), b"mine").unwrap();
    assert!(!c.hosts[1].local.exists(Oid::meta(1)).unwrap());
}

#[test]
fn with_two_copies_each_object_is_on_exactly_its_two_holders() {
    let c = Cluster::start(3, 2);
    let placement = c.placement();
    for i in 0..60u32 {
        let oid = Oid::data(Vid(9), i);
        c.hosts[(i % 3) as usize]
            .store
            .write(oid, u64::from(i) * 4096, &pattern(4096, i))
            .unwrap();
    }
    let mut per_host = [0usize; 3];
    for i in 0..60u32 {
        let oid = Oid::data(Vid(9), i);
        let mut want = placement.holders(oid, 2);
        want.sort();
        assert_eq!(c.holders_locally(oid), want, "{oid}");
        for (k, h) in c.hosts.iter().enumerate() {
            per_host[k] += usize::from(h.local.exists(oid).unwrap());
            assert_eq!(
                read(&*h.store, oid, u64::from(i) * 4096, 4096),
                pattern(4096, i)
            );
        }
    }
    println!("objects per host with 2 copies on 3 hosts: {per_host:?}");
    // list() shows what the host holds.
    for (k, h) in c.hosts.iter().enumerate() {
        assert_eq!(h.store.list().unwrap().len(), per_host[k]);
    }
}

fn fill(c: &Cluster, n: u32, vid: u32) -> Vec<(Oid, u64, Vec<u8>)> {
    let mut objs = Vec::new();
    for i in 0..n {
        let oid = Oid::data(Vid(vid), i);
        let off = u64::from(i % 64) * 65536;
        let data = pattern(8192 + (i as usize % 5) * 4096, i ^ vid);
        c.hosts[i as usize % c.hosts.len()]
            .store
            .write(oid, off, &data)
            .unwrap();
        objs.push((oid, off, data));
    }
    objs
}

fn check_all(c: &Cluster, objs: &[(Oid, u64, Vec<u8>)], exact_placement: bool) {
    let placement = c.placement();
    for (oid, off, data) in objs {
        if exact_placement {
            let mut want = placement.holders(*oid, usize::from(c.copies));
            want.sort();
            assert_eq!(c.holders_locally(*oid), want, "copies of {oid}");
        }
        for h in &c.hosts {
            assert_eq!(&read(&*h.store, *oid, *off, data.len()), data, "{oid}");
            let head = if *off == 0 {
                data[..16].to_vec()
            } else {
                vec![0; 16]
            };
            assert_eq!(read(&*h.store, *oid, 0, 16), head, "{oid}");
        }
    }
}

fn moved_fraction(c: &Cluster, objects: usize) -> (f64, u64, u64) {
    let (mut pushed, mut dropped) = (0u64, 0u64);
    for h in &c.hosts {
        let s = h.store.status();
        pushed += s.pushed;
        dropped += s.dropped;
    }
    let total = objects as f64 * f64::from(c.copies);
    (pushed as f64 / total, pushed, dropped)
}

#[test]
fn a_joining_member_gets_its_share_and_everything_stays_intact() {
    for (from, copies, n) in [(3u8, 2u8, 400u32), (3, 3, 200)] {
        let mut c = Cluster::start(from, copies);
        let objs = fill(&c, n, 11);
        check_all(&c, &objs, true);
        c.hosts.push(host(from, copies, Duration::from_secs(20)));
        c.new_epoch();
        c.wait_complete();
        check_all(&c, &objs, true);
        let (f, pushed, dropped) = moved_fraction(&c, objs.len());
        let ideal = 1.0 / f64::from(from + 1);
        println!(
            "join {from}->{} copies {copies}: {pushed} objects pushed, {dropped} dropped, \
             moved fraction {f:.3} (ideal {ideal:.3})",
            from + 1
        );
        assert!((f - ideal).abs() < 0.5 * ideal, "moved {f}, ideal {ideal}");
        // Each moved replica is created once on the newcomer and dropped once by the host
        // that gave it up.
        assert_eq!(pushed, dropped);
    }
}

#[test]
fn eight_to_nine_moves_about_a_ninth() {
    let mut c = Cluster::start(8, 2);
    let objs = fill(&c, 600, 12);
    c.hosts.push(host(8, 2, Duration::from_secs(20)));
    c.new_epoch();
    c.wait_complete();
    check_all(&c, &objs, true);
    let (f, pushed, dropped) = moved_fraction(&c, objs.len());
    println!("join 8->9 copies 2: {pushed} pushed, {dropped} dropped, moved fraction {f:.3} (ideal 0.111)");
    assert!((f - 1.0 / 9.0).abs() < 0.5 / 9.0, "moved {f}");
    assert_eq!(pushed, dropped);
}

#[test]
fn reads_survive_a_member_removal_and_copies_are_restored() {
    let mut c = Cluster::start(3, 2);
    let objs = fill(&c, 120, 13);
    let gone = c.hosts.pop().expect("a host");
    gone.store.shutdown();
    drop(gone);
    // Reads work before the map changes (another holder answers)...
    for (oid, off, data) in &objs {
        for h in &c.hosts {
            assert_eq!(&read(&*h.store, *oid, *off, data.len()), data);
        }
    }
    // ...and after: every object is back to two copies, on the two survivors.
    c.new_epoch();
    c.wait_complete();
    check_all(&c, &objs, true);
    for (oid, _, _) in &objs {
        assert_eq!(c.holders_locally(*oid).len(), 2);
    }
    assert!(!c.hosts[0].store.status().degraded);
}

#[test]
fn a_write_waits_for_an_unreachable_holder_until_the_map_drops_it() {
    let mut c = Cluster::start(3, 3);
    let gone = c.hosts.pop().expect("a host");
    gone.store.shutdown();
    drop(gone);
    let oid = Oid::data(Vid(14), 0);
    let a = c.hosts[0].store.clone();
    let t0 = Instant::now();
    let writer = std::thread::spawn(move || a.write(oid, 0, b"after the failure"));
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        !writer.is_finished(),
        "the write must not skip the unreachable holder"
    );
    c.new_epoch();
    writer.join().unwrap().unwrap();
    println!("write completed {:?} after the holder failed", t0.elapsed());
    for h in &c.hosts {
        assert_eq!(read(&*h.local, oid, 0, 17), b"after the failure");
    }
    assert!(c.hosts[0].store.status().degraded, "2 members for 3 copies");
}

#[test]
fn an_unreachable_holder_gives_an_io_error_after_the_timeout() {
    let mut c = Cluster::start_with(2, 2, Duration::from_millis(600));
    let gone = c.hosts.pop().expect("a host");
    gone.store.shutdown();
    drop(gone);
    let t0 = Instant::now();
    let r = c.hosts[0].store.write(Oid::data(Vid(15), 0), 0, b"x");
    assert!(matches!(r, Err(Error::Unavailable { .. })), "{r:?}");
    assert!(t0.elapsed() >= Duration::from_millis(500));
}

#[test]
fn a_lagging_map_makes_requests_wait_and_retry() {
    let mut c = Cluster::start(3, 3);
    let objs = fill(&c, 30, 16);
    // Hosts 1, 2 and a new host 3 move to epoch 2; host 0 lags.
    c.hosts.push(host(3, 3, Duration::from_secs(20)));
    c.epoch += 1;
    let map = c.map();
    for h in &c.hosts[1..] {
        h.store.set_map(map.clone());
    }
    let behind = c.hosts[0].store.clone();
    let ahead = c.hosts[1].store.clone();
    let w1 = std::thread::spawn(move || {
        // Host 0 is behind: the others answer WrongEpoch(2), it waits for its map.
        for i in 0..10u32 {
            behind.write(Oid::data(Vid(17), i), 0, &pattern(4096, i))?;
        }
        Ok::<_, Error>(())
    });
    let w2 = std::thread::spawn(move || {
        // Host 1 is ahead: host 0 answers WrongEpoch(1), host 1 retries until it catches up.
        for i in 0..10u32 {
            ahead.write(Oid::data(Vid(18), i), 0, &pattern(4096, i + 100))?;
        }
        Ok::<_, Error>(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!w1.is_finished() && !w2.is_finished());
    c.hosts[0].store.set_map(map);
    w1.join().unwrap().unwrap();
    w2.join().unwrap().unwrap();
    c.wait_complete();
    check_all(&c, &objs, true);
    for i in 0..10u32 {
        for h in &c.hosts {
            assert_eq!(
                read(&*h.store, Oid::data(Vid(17), i), 0, 4096),
                pattern(4096, i)
            );
            assert_eq!(
                read(&*h.store, Oid::data(Vid(18), i), 0, 4096),
                pattern(4096, i + 100)
            );
        }
    }
}

#[test]
fn hostile_frames_close_the_connection_and_the_server_keeps_serving() {
    let c = Cluster::start(2, 2);
    let addr = c.hosts[1].member.data_addrs[0];
    let expect_closed = |bytes: &[u8]| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(bytes);
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("connection not closed: {other:?}"),
        }
    };
    expect_closed(&[0xffu8; 200]);
    expect_closed(
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: {}\r\n\r\n",
            "y".repeat(80)
        )
        .as_bytes(),
    );
    // A valid magic announcing a 4 GiB body, and an unknown kind.
    let mut h = [0u8; REQ_HEADER_LEN];
    h[..4].copy_from_slice(&REQ_MAGIC.to_le_bytes());
    h[4] = 2;
    h[56..60].copy_from_slice(&u32::MAX.to_le_bytes());
    expect_closed(&h);
    h[4] = 200;
    h[56..60].copy_from_slice(&0u32.to_le_bytes());
    expect_closed(&h);
    // A well-formed write far outside the object is refused, not applied, not a crash.
    let mut h = [0u8; REQ_HEADER_LEN];
    h[..4].copy_from_slice(&REQ_MAGIC.to_le_bytes());
    h[4] = 2;
    h[8..16].copy_from_slice(&c.epoch.to_le_bytes());
    h[40..48].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
    h[56..60].copy_from_slice(&4u32.to_le_bytes());
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&h).unwrap();
    s.write_all(b"evil").unwrap();
    let mut resp = [0u8; 32];
    s.read_exact(&mut resp).unwrap();
    assert_eq!(resp[4], 4, "OutOfRange status");
    // Half a header then silence, held open while others are served.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(&h[..10]).unwrap();
    let oid = Oid::data(Vid(19), 0);
    c.hosts[0].store.write(oid, 0, b"still fine").unwrap();
    assert_eq!(read(&*c.hosts[1].store, oid, 0, 10), b"still fine");
    drop(idle);
}

/// Installs a map of the given hosts (by index) at the next epoch on those hosts.
fn map_of(c: &mut Cluster, members: &[usize]) {
    c.epoch += 1;
    let map = ClusterMap {
        epoch: c.epoch,
        cluster_epoch: c.epoch,
        members: members.iter().map(|&i| c.hosts[i].member.clone()).collect(),
    };
    for &i in members {
        c.hosts[i].store.set_map(map.clone());
    }
}

#[test]
fn a_host_back_from_an_outage_copies_only_what_changed() {
    let mut c = Cluster::start(3, 3);
    let objs = fill(&c, 40, 20);
    // Host 2 is recorded as gone: the others go on at a new epoch without it.
    c.hosts[2].store.suspect_local_data();
    map_of(&mut c, &[0, 1]);
    // Meanwhile 5 objects change...
    let mut objs = objs;
    for (i, o) in objs.iter_mut().take(5).enumerate() {
        o.2 = pattern(o.2.len(), 900 + u32::try_from(i).unwrap());
        c.hosts[0].store.write(o.0, o.1, &o.2).unwrap();
    }
    // ...and host 2, cut off, applied a write alone that was never acknowledged (same
    // version as before, other content): it must be undone, not kept.
    let (t_oid, t_off, _) = objs[10].clone();
    c.hosts[2].local.write(t_oid, t_off, b"TENTATIVE").unwrap();
    let unverified = c.hosts[2].store.recovery().unverified;
    assert_eq!(unverified, 40);
    // Host 2 returns.
    map_of(&mut c, &[0, 1, 2]);
    c.wait_complete();
    check_all(&c, &objs, true);
    let r = c.hosts[2].store.recovery();
    println!("catch-up of host 2: {r:?}");
    assert_eq!(r.unverified, 0);
    assert_eq!(
        r.received, 6,
        "5 changed objects and the tentative write: {r:?}"
    );
    assert_eq!(r.kept, 34, "{r:?}");
}

#[test]
fn an_unverified_copy_is_made_current_before_it_is_served() {
    let mut c = Cluster::start(3, 3);
    let objs = fill(&c, 10, 22);
    c.hosts[2].store.suspect_local_data();
    map_of(&mut c, &[0, 1]);
    let (oid, off, _) = objs[0].clone();
    let fresh = pattern(4096, 77);
    c.hosts[0].store.write(oid, off, &fresh).unwrap();
    map_of(&mut c, &[0, 1, 2]);
    // Read through host 2 at once, before its walk may have reached the object.
    assert_eq!(read(&*c.hosts[2].store, oid, off, 4096), fresh);
    c.wait_complete();
    assert_eq!(read(&*c.hosts[2].local, oid, off, 4096), fresh);
}

/// Host 2 of `c` is recorded as gone: the others go on at a new epoch without it.
fn host_2_away(c: &mut Cluster) {
    c.hosts[2].store.suspect_local_data();
    map_of(c, &[0, 1]);
}

/// Host 2 of `c` returns; waits until the epoch's rebalancing is complete.
fn host_2_back(c: &mut Cluster) -> sheep_objects::RecoveryStatus {
    map_of(c, &[0, 1, 2]);
    c.wait_complete();
    let r = c.hosts[2].store.recovery();
    println!("catch-up of host 2: {r:?}");
    assert_eq!(r.unverified, 0, "{r:?}");
    r
}

/// Every host's local copy of `oid` is host 0's: same version, digest, extents and bytes.
fn must_be_identical(c: &Cluster, oid: Oid) {
    let want = c.hosts[0].local.meta(oid).unwrap();
    let data = read(&*c.hosts[0].local, oid, 0, 4 << 20);
    let extents = c.hosts[0].local.extents(oid).unwrap();
    for h in &c.hosts[1..] {
        assert_eq!(h.local.meta(oid).unwrap(), want, "{oid} on {}", h.member.id);
        assert!(
            read(&*h.local, oid, 0, 4 << 20) == data,
            "{oid} on {}",
            h.member.id
        );
        assert_eq!(
            h.local.extents(oid).unwrap(),
            extents,
            "{oid} on {}",
            h.member.id
        );
    }
}

#[test]
fn a_host_back_after_scattered_block_writes_receives_only_those_blocks() {
    const BLOCK: u64 = 4096;
    let mut c = Cluster::start(3, 3);
    // 24 objects of 256 KiB (64 blocks) each.
    let oids: Vec<Oid> = (0..24).map(|i| Oid::data(Vid(40), i)).collect();
    for (i, &oid) in oids.iter().enumerate() {
        let seed = u32::try_from(i).unwrap();
        c.hosts[i % 3]
            .store
            .write(oid, 0, &pattern(64 << 12, seed))
            .unwrap();
    }
    host_2_away(&mut c);
    // One 4 KiB block of each of 16 objects changes meanwhile.
    for (i, &oid) in oids.iter().enumerate().take(16) {
        let seed = 1000 + u32::try_from(i).unwrap();
        let at = (i as u64 * 5 % 64) * BLOCK;
        c.hosts[i % 2]
            .store
            .write(oid, at, &pattern(4096, seed))
            .unwrap();
    }
    let r = host_2_back(&mut c);
    for &oid in &oids {
        must_be_identical(&c, oid);
    }
    assert_eq!(
        (r.received, r.patched, r.patched_blocks),
        (16, 16, 16),
        "{r:?}"
    );
    assert_eq!(r.kept, 8, "{r:?}");
    // The blocks, plus a summary of each changed object (64 kinds and hashes of 17 bytes).
    let blocks = 16 * BLOCK;
    assert!(
        r.received_bytes >= blocks && r.received_bytes < blocks + 16 * 1200,
        "received {} bytes for {blocks} bytes of changed blocks: {r:?}",
        r.received_bytes
    );
    assert!(r.saved_bytes > 16 * (60 << 12), "{r:?}");
    // Nobody sent whole objects.
    for h in &c.hosts {
        let s = h.store.recovery();
        assert_eq!((s.sent, s.sent_bytes), (0, 0), "{}: {s:?}", h.member.id);
    }
}

#[test]
fn catch_up_punches_holes_zeroes_blocks_and_undoes_a_tentative_write() {
    catch_up_holes_zeros_and_tentative(|_| Hooked::new());
}

#[test]
fn catch_up_patches_a_disk_store_copy_in_place() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    catch_up_holes_zeros_and_tentative(|i| {
        Hooked::on(Arc::new(
            sheep_objects::DiskStore::open(dirs[i].path()).unwrap(),
        ))
    });
}

/// While host 2 is away, host 0 punches a block host 2 has, writes zeros over one and into a
/// hole, and data into a hole; host 2 alone (never acknowledged) punches a block and
/// overwrites another, in that object and in one the others leave alone.
fn catch_up_holes_zeros_and_tentative(store: impl Fn(usize) -> Hooked) {
    const BLOCK: u64 = 4096;
    let hosts = (0..3u8)
        .map(|i| host_on(i, 3, Duration::from_secs(20), store(usize::from(i))))
        .collect();
    let mut c = Cluster {
        hosts,
        epoch: 0,
        copies: 3,
    };
    c.new_epoch();
    c.wait_complete();
    let (changed, alone) = (Oid::data(Vid(41), 0), Oid::data(Vid(41), 1));
    for oid in [changed, alone] {
        c.hosts[0]
            .store
            .write(oid, 0, &pattern(16 << 12, 5))
            .unwrap();
    }
    c.hosts[0].store.sync(&[changed, alone]).unwrap();
    host_2_away(&mut c);
    let s = &c.hosts[0].store;
    s.punch(changed, 3 * BLOCK, BLOCK).unwrap();
    s.write(changed, 5 * BLOCK, &[0; 4096]).unwrap();
    s.write(changed, 20 * BLOCK, &pattern(4096, 6)).unwrap();
    s.write(changed, 30 * BLOCK, &[0; 4096]).unwrap();
    let away = &c.hosts[2].local;
    away.punch(changed, 7 * BLOCK, BLOCK).unwrap();
    away.write(changed, 9 * BLOCK + 100, b"TENTATIVE").unwrap();
    away.write(alone, 2 * BLOCK, b"TENTATIVE").unwrap();
    let r = host_2_back(&mut c);
    for oid in [changed, alone] {
        must_be_identical(&c, oid);
    }
    assert_eq!(r.received, 2, "{r:?}");
    assert_eq!(r.patched, 2, "{r:?}");
    // Punched 3, zeroed 5 and 30, fetched 20, 7 and 9; fetched 2 of the other object.
    assert_eq!(r.patched_blocks, 7, "{r:?}");
    assert!(
        r.received_bytes >= 4 * BLOCK && r.received_bytes < 4 * BLOCK + 2048,
        "{r:?}"
    );
}

#[test]
fn catch_up_copies_whole_objects_when_the_copy_is_missing_damaged_or_mostly_changed() {
    let mut c = Cluster::start(3, 3);
    let oids: Vec<Oid> = (0..4).map(|i| Oid::data(Vid(42), i)).collect();
    for &oid in &oids {
        c.hosts[0]
            .store
            .write(oid, 0, &pattern(64 << 12, 7))
            .unwrap();
    }
    host_2_away(&mut c);
    let (missing, damaged, rewritten, patched) = (oids[0], oids[1], oids[2], oids[3]);
    c.hosts[2].local.remove(missing).unwrap();
    c.hosts[2]
        .local
        .mem
        .as_ref()
        .unwrap()
        .corrupt(damaged, 4096 * 40)
        .unwrap();
    for &oid in &[missing, damaged, patched] {
        c.hosts[0]
            .store
            .write(oid, 4096, &pattern(4096, 8))
            .unwrap();
    }
    c.hosts[0]
        .store
        .write(rewritten, 0, &pattern(40 << 12, 9))
        .unwrap();
    let r = host_2_back(&mut c);
    for &oid in &oids {
        must_be_identical(&c, oid);
        c.hosts[2].local.verify(oid).unwrap();
    }
    assert_eq!(
        (r.received, r.patched, r.patched_blocks),
        (4, 1, 1),
        "{r:?}"
    );
    assert!(r.received_bytes >= 3 * (64 << 12), "{r:?}");
}

#[test]
fn check_finds_and_repairs_a_diverged_copy() {
    let c = Cluster::start(3, 3);
    let objs = fill(&c, 3, 23);
    let (oid, off, data) = objs[1].clone();
    let rep = c.hosts[0].store.check_object(oid, false).unwrap();
    assert_eq!(
        (rep.copies, rep.good, rep.repaired, rep.lost),
        (3, 3, 0, false)
    );
    // One copy changes behind the cluster's back.
    c.hosts[1].local.write(oid, off, b"ROT").unwrap();
    let rep = c.hosts[0].store.check_object(oid, false).unwrap();
    assert_eq!((rep.good, rep.repaired), (2, 0), "{rep:?}");
    let rep = c.hosts[2].store.check_object(oid, true).unwrap();
    assert_eq!((rep.good, rep.repaired), (2, 1), "{rep:?}");
    assert_eq!(read(&*c.hosts[1].local, oid, off, data.len()), data);
    let rep = c.hosts[0].store.check_object(oid, false).unwrap();
    assert_eq!((rep.good, rep.repaired), (3, 0), "{rep:?}");
}

#[test]
fn a_removal_during_rebalancing_is_not_undone_by_a_late_push() {
    let mut c = Cluster::start(3, 2);
    let objs = fill(&c, 200, 21);
    c.hosts.push(host(3, 2, Duration::from_secs(20)));
    c.new_epoch();
    // Remove everything while the walk runs.
    for (oid, _, _) in &objs {
        c.hosts[0].store.remove(*oid).unwrap();
    }
    c.wait_complete();
    for (oid, _, _) in &objs {
        assert!(c.holders_locally(*oid).is_empty(), "{oid} came back");
    }
}

#[test]
fn a_write_to_an_allocated_object_that_no_member_has_fails_rather_than_recreating_it() {
    let c = Cluster::start_with(3, 2, Duration::from_millis(800));
    let oid = Oid::data(Vid(24), 0);
    c.hosts[0].store.write(oid, 0, b"allocated").unwrap();
    for h in &c.hosts {
        h.local.remove(oid).unwrap();
    }
    let r = c.hosts[0].store.write_existing(oid, 4096, b"more");
    // No holder could serve it in time: the writer gets EIO.
    assert!(matches!(r, Err(Error::Unavailable { .. })), "{r:?}");
    for h in &c.hosts {
        assert!(
            !h.local.exists(oid).unwrap(),
            "recreated on {}",
            h.member.id
        );
    }
    // A plain write (a first write) still creates it.
    c.hosts[0].store.write(oid, 0, b"new").unwrap();
}

#[test]
fn writes_during_an_on_demand_fetch_are_kept_when_the_epoch_completes_meanwhile() {
    // Host 1 makes its copy current on demand (its walk is done, host 2's is not) while the
    // rebalancing of the epoch completes: a write that host 1 serves during that fetch must
    // not be overwritten by the fetched image. (Seen as blocks reading zeros on one survivor
    // after a host was killed during fio --verify.)
    write_during_an_on_demand_fetch(true);
}

#[test]
fn writes_during_an_on_demand_patch_are_kept_when_the_epoch_completes_meanwhile() {
    // The same when host 1 patches its copy with the blocks that differ: a write it serves
    // meanwhile to a block the patch writes must not be overwritten by the fetched block.
    write_during_an_on_demand_fetch(false);
}

/// Host 1's copy lacks a change of host 0's; host 1 fetches it on demand (the whole object
/// if `whole`, else only the changed block), slowed, while the epoch completes and a second
/// write to the changed block comes.
fn write_during_an_on_demand_fetch(whole: bool) {
    let mut c = Cluster::start(3, 2);
    // An object of hosts 0 and 1 only: host 2's walk, held back, is what keeps the epoch
    // from completing, and nothing it does touches this object.
    let mut ids = [c.hosts[0].member.id, c.hosts[1].member.id];
    ids.sort();
    let oid = (0..1000)
        .map(|i| Oid::data(Vid(25), i))
        .find(|o| {
            let mut h = c.placement().holders(*o, 2);
            h.sort();
            h == ids
        })
        .expect("an object held by hosts 0 and 1");
    c.hosts[0].store.write(oid, 0, &pattern(4096, 1)).unwrap();
    c.hosts[2].local.hold_walks(true);
    map_of(&mut c, &[0, 1, 2]);
    let t0 = Instant::now();
    while !(c.hosts[0].store.status().done && c.hosts[1].store.status().done) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the walks of hosts 0 and 1 did not end"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!c.hosts[1].store.status().complete);
    // Host 0 applied a write of the new epoch to its copy first (as the writer's own copy
    // does): host 1's copy is now older than host 0's. One block of two differs (a patch),
    // or three of four (the whole object).
    let blocks = if whole { 3 } else { 1 };
    let changed = pattern(4096 * blocks, 2);
    c.hosts[0].local.write(oid, 8192, &changed).unwrap();
    c.hosts[0].local.set_version(oid, c.epoch).unwrap();
    // The next write makes host 1 fetch host 0's copy; the fetch is slowed before it changes
    // host 1's copy, and the epoch completes meanwhile.
    let (tell, entered) = mpsc::channel();
    let (go, wait) = mpsc::channel();
    *c.hosts[1].local.slow_change.lock().unwrap() = Some((tell, wait));
    let first = {
        let s = c.hosts[0].store.clone();
        std::thread::spawn(move || s.write(oid, 8192, &pattern(4096, 2)))
    };
    entered
        .recv_timeout(Duration::from_secs(20))
        .expect("host 1 did not fetch on demand");
    c.hosts[2].local.hold_walks(false);
    let t0 = Instant::now();
    while !c.hosts[1].store.status().complete {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the epoch did not complete"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // A second write, to the block the fetch brings, while host 1's fetch is still under
    // way; it is acknowledged once every holder applied it, whether host 1 makes it wait for
    // the fetch or not.
    let second = pattern(4096, 3);
    let write = {
        let s = c.hosts[0].store.clone();
        let d = second.clone();
        std::thread::spawn(move || s.write(oid, 8192, &d))
    };
    std::thread::sleep(Duration::from_millis(200));
    go.send(()).unwrap();
    write.join().unwrap().unwrap();
    first.join().unwrap().unwrap();
    let r = c.hosts[1].store.recovery();
    assert_eq!(r.patched, u64::from(!whole), "{r:?}");
    let mut want = vec![(0, pattern(4096, 1)), (8192, second.clone())];
    if whole {
        want.push((12288, changed[4096..].to_vec()));
    }
    for h in &c.hosts[..2] {
        for (off, data) in &want {
            assert!(
                read(&*h.local, oid, *off, data.len()) == *data,
                "host {} lost the acknowledged write at {off}",
                h.member.id
            );
        }
    }
}

#[test]
fn check_and_repair_while_an_object_is_written_loses_no_write() {
    // `dog vdi check --repair` on a VDI in use: copies differ for a moment while a write is
    // applied on some holders and not yet on others. The check must not take that for a bad
    // copy and overwrite it with a copy lacking acknowledged writes.
    let c = Cluster::start(3, 3);
    let oid = Oid::data(Vid(26), 0);
    c.hosts[0].store.write(oid, 0, &pattern(4096, 0)).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let s = c.hosts[0].store.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut written = Vec::new();
                let mut n = 0u64;
                // 4 writers, each on its own blocks: 256 blocks of 4 KiB each at most.
                while !stop.load(std::sync::atomic::Ordering::SeqCst) && n < 256 {
                    let off = (n * 4 + w) * 4096;
                    let data = pattern(4096, u32::try_from(off).unwrap() ^ 0x5a5a);
                    s.write(oid, off, &data).unwrap();
                    written.push((off, data));
                    n += 1;
                }
                written
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut checks = 0;
    while t0.elapsed() < Duration::from_millis(1500) {
        c.hosts[1].store.check_object(oid, true).unwrap();
        checks += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written: Vec<(u64, Vec<u8>)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    eprintln!("{checks} checks during {} writes", written.len());
    for h in &c.hosts {
        for (off, data) in &written {
            assert!(
                read(&*h.local, oid, *off, 4096) == *data,
                "host {} lost the acknowledged write at {off}",
                h.member.id
            );
        }
    }
    let rep = c.hosts[2].store.check_object(oid, false).unwrap();
    assert_eq!((rep.copies, rep.good), (3, 3), "{rep:?}");
}

#[test]
fn parallel_whole_object_io_between_hosts_stays_within_each_memory_budget() {
    // Three hosts, one copy: most objects live on another host than the writer, so their
    // data crosses the data channel both ways. Each budget holds two 4 MiB bodies.
    let limit = 2 * OBJECT_BYTES;
    let (c, budgets) = Cluster::start_budgeted(3, 1, limit);
    let writer = c.hosts[0].store.clone();
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let s = writer.clone();
            std::thread::spawn(move || {
                for i in 0..4u32 {
                    let oid = Oid::data(Vid(40), t * 4 + i);
                    let byte = u8::try_from((t * 4 + i) % 251).expect("byte");
                    s.write(oid, 0, &vec![byte; OBJECT_BYTES]).expect("write");
                    let mut back = vec![0u8; OBJECT_BYTES];
                    s.read(oid, 0, &mut back).expect("read");
                    assert!(back.iter().all(|b| *b == byte), "{oid} read back wrong");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker");
    }
    for (i, b) in budgets.iter().enumerate() {
        let s = b.stats();
        assert_eq!(s.in_use, 0, "host {i}: {s:?}");
        assert!(
            s.peak <= limit as u64,
            "host {i} held more than its budget: {s:?}"
        );
    }
    let served: u64 = budgets[1..].iter().map(|b| b.stats().peak).sum();
    assert!(served > 0, "no data crossed the channel");
}
