//! The libp2p driver on loopback: clusters form from `--peer` addresses, proposals are applied
//! everywhere in one order, the log survives a restart, and another cluster's node stays out.
//!
//! Everything runs in the root network namespace of the CI machine, so mDNS is off everywhere
//! and all traffic goes to 127.0.0.1.

use sheep_p2p::net::{Cluster, Delivery, NetConfig};
use sheep_p2p::order::{Body, Config, Entry, MemberInfo, View};
use sheep_p2p::NodeId;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn order_config() -> Config {
    Config {
        heartbeat: Duration::from_millis(100),
        failure_timeout: Duration::from_millis(1500),
        discovery_window: Duration::from_millis(500),
    }
}

fn net_config(cluster: &str, dir: &Path, peers: Vec<String>) -> NetConfig {
    NetConfig {
        cluster: cluster.to_string(),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers,
        mdns: false,
        order: order_config(),
        log_dir: dir.to_path_buf(),
    }
}

fn member(id: NodeId) -> MemberInfo {
    MemberInfo {
        id,
        data_addrs: vec![],
        capacity: 1 << 40,
        incarnation: rand::random(),
    }
}

/// A node and the application that applies what it delivers.
struct Node {
    cluster: Cluster,
    restored: Vec<Entry>,
    entries: Arc<Mutex<Vec<Entry>>>,
    app: Option<JoinHandle<()>>,
}

impl Node {
    fn start(rt: &tokio::runtime::Runtime, cfg: NetConfig, id: NodeId) -> Node {
        let (cluster, restored, rx) = Cluster::start(cfg, member(id), rt.handle()).unwrap();
        let entries = Arc::new(Mutex::new(restored.clone()));
        let app = {
            let entries = entries.clone();
            let cluster = cluster.clone();
            std::thread::spawn(move || {
                while let Ok(d) = rx.recv() {
                    match d {
                        Delivery::Entry(e) => {
                            let seq = e.seq;
                            entries.lock().unwrap().push(e);
                            cluster.applied(seq);
                        }
                        Delivery::Reset => entries.lock().unwrap().clear(),
                    }
                }
            })
        };
        Node {
            cluster,
            restored,
            entries,
            app: Some(app),
        }
    }

    fn addr(&self) -> String {
        self.cluster.listen_addrs()[0].to_string()
    }

    fn entries(&self) -> Vec<Entry> {
        self.entries.lock().unwrap().clone()
    }

    fn app_cmds(&self) -> Vec<Vec<u8>> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e.body {
                Body::App { cmd, .. } => Some(cmd),
                _ => None,
            })
            .collect()
    }

    /// Stops the driver and waits for the application thread to drain.
    fn stop(mut self, leave: bool) -> Vec<Entry> {
        if leave {
            self.cluster.leave(Duration::from_secs(10)).unwrap();
        } else {
            self.cluster.shutdown(Duration::from_secs(10)).unwrap();
        }
        self.app.take().unwrap().join().unwrap();
        self.entries()
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn view_ids(v: &View) -> Vec<NodeId> {
    v.members.iter().map(|m| m.id).collect()
}

/// Waits until every node's view holds exactly `ids` (any order).
fn wait_view(nodes: &[&Node], ids: &[NodeId]) -> View {
    let mut want = ids.to_vec();
    want.sort();
    let mut agreed = None;
    wait_until("one view of the expected members", T, || {
        let views: Vec<_> = nodes.iter().map(|n| n.cluster.view()).collect();
        let Some(Some(first)) = views.first() else {
            return false;
        };
        let mut got = view_ids(first);
        got.sort();
        if got == want && views.iter().all(|v| v.as_ref() == Some(first)) {
            agreed = Some(first.clone());
            true
        } else {
            false
        }
    });
    agreed.unwrap()
}

#[test]
fn three_nodes_form_one_cluster_and_apply_proposals_in_one_order() {
    let rt = runtime();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ids: Vec<NodeId> = (0..3).map(|_| NodeId::random()).collect();
    let a = Node::start(&rt, net_config("loop", dirs[0].path(), vec![]), ids[0]);
    a.cluster.wait_member(T).unwrap();
    let b = Node::start(
        &rt,
        net_config("loop", dirs[1].path(), vec![a.addr()]),
        ids[1],
    );
    let c = Node::start(
        &rt,
        net_config("loop", dirs[2].path(), vec![a.addr()]),
        ids[2],
    );
    b.cluster.wait_member(T).unwrap();
    c.cluster.wait_member(T).unwrap();
    let view = wait_view(&[&a, &b, &c], &ids);
    assert_eq!(view.sequencer, Some(ids[0]));

    // Every node proposes concurrently.
    const N: usize = 15;
    std::thread::scope(|s| {
        for (i, n) in [&a, &b, &c].into_iter().enumerate() {
            s.spawn(move || {
                for k in 0..N {
                    let cmd = format!("node{i}-cmd{k}").into_bytes();
                    let seq = n.cluster.propose(cmd.clone(), T).unwrap();
                    // Acknowledged means applied everywhere.
                    let at = n.entries().into_iter().find(|e| e.seq == seq).unwrap();
                    assert!(matches!(at.body, Body::App { cmd: ref c, .. } if *c == cmd));
                }
            });
        }
    });
    let all = a.app_cmds();
    assert_eq!(all.len(), 3 * N);
    wait_until("equal logs", T, || {
        let ea = a.entries();
        ea == b.entries() && ea == c.entries()
    });
    let ea = a.entries();
    for (i, e) in ea.iter().enumerate() {
        assert_eq!(
            e.seq,
            u64::try_from(i).unwrap() + 1,
            "seqs are dense from 1"
        );
    }
    // Each node's own proposals landed in the order it made them.
    for i in 0..3 {
        let mine: Vec<_> = all
            .iter()
            .filter(|c| c.starts_with(format!("node{i}-").as_bytes()))
            .cloned()
            .collect();
        let want: Vec<_> = (0..N)
            .map(|k| format!("node{i}-cmd{k}").into_bytes())
            .collect();
        assert_eq!(mine, want);
    }
    let st = a.cluster.status();
    assert_eq!(st.peers.len(), 2, "{st:?}");
    assert_eq!(st.epoch, view.epoch);
    assert!(!st.epoch_log.is_empty());
    for n in [a, b, c] {
        n.stop(false);
    }
}

#[test]
fn the_log_survives_a_restart_and_the_node_catches_up() {
    let rt = runtime();
    let da = tempfile::tempdir().unwrap();
    let db = tempfile::tempdir().unwrap();
    let (ia, ib) = (NodeId::random(), NodeId::random());
    let a = Node::start(&rt, net_config("restart", da.path(), vec![]), ia);
    a.cluster.wait_member(T).unwrap();
    let peer = vec![a.addr()];
    let b = Node::start(&rt, net_config("restart", db.path(), peer.clone()), ib);
    b.cluster.wait_member(T).unwrap();
    wait_view(&[&a, &b], &[ia, ib]);
    for k in 0..5 {
        a.cluster.propose(format!("a{k}").into_bytes(), T).unwrap();
        b.cluster.propose(format!("b{k}").into_bytes(), T).unwrap();
    }
    let had = b.stop(true);
    assert!(had.len() >= 12, "{} entries", had.len());
    wait_view(&[&a], &[ia]);
    // The cluster goes on without b.
    for k in 5..10 {
        a.cluster.propose(format!("a{k}").into_bytes(), T).unwrap();
    }

    let b = Node::start(&rt, net_config("restart", db.path(), peer), ib);
    assert_eq!(b.restored, had, "restored = what was delivered before");
    b.cluster.wait_member(T).unwrap();
    wait_view(&[&a, &b], &[ia, ib]);
    b.cluster.propose(b"b-again".to_vec(), T).unwrap();
    wait_until("b caught up", T, || a.entries() == b.entries());
    assert!(b.app_cmds().contains(&b"a9".to_vec()));
    let eb = b.stop(false);
    a.stop(false);

    // What b delivered after the restart was appended to what it had.
    let (_log, opened) =
        sheep_p2p::net::log::LogFile::<Entry>::open(&db.path().join("log")).unwrap();
    assert_eq!(opened.records, eb);
    assert_eq!(opened.truncated, 0);
}

#[test]
fn a_node_of_another_cluster_does_not_join() {
    let rt = runtime();
    let da = tempfile::tempdir().unwrap();
    let dx = tempfile::tempdir().unwrap();
    let (ia, ix) = (NodeId::random(), NodeId::random());
    let a = Node::start(&rt, net_config("alpha", da.path(), vec![]), ia);
    a.cluster.wait_member(T).unwrap();
    let x = Node::start(&rt, net_config("beta", dx.path(), vec![a.addr()]), ix);
    // x hears nobody of its cluster: after its discovery window it forms its own.
    let vx = x.cluster.wait_member(T).unwrap();
    assert_eq!(view_ids(&vx), vec![ix]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(view_ids(&a.cluster.view().unwrap()), vec![ia]);
    assert!(a.cluster.status().peers.is_empty());
    assert!(x.cluster.status().peers.is_empty());
    a.cluster.propose(b"only-alpha".to_vec(), T).unwrap();
    x.cluster.propose(b"only-beta".to_vec(), T).unwrap();
    assert_eq!(a.app_cmds(), vec![b"only-alpha".to_vec()]);
    assert_eq!(x.app_cmds(), vec![b"only-beta".to_vec()]);
    a.stop(false);
    x.stop(false);
}

/// Median and 99th percentile of `count` proposals made one after the other on `n`.
fn measure(n: &Node, count: usize) -> (Duration, Duration) {
    let mut lat = Vec::with_capacity(count);
    for k in 0..count {
        let t = Instant::now();
        n.cluster
            .propose(format!("lat{k}").into_bytes(), T)
            .unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    (lat[lat.len() / 2], lat[(lat.len() * 99).div_ceil(100) - 1])
}

/// Proposals made one after the other on one node, then on the sequencer and on another member
/// of three, are all acknowledged and applied on every node in one order. Prints the latency
/// (a figure for the notes, not a check): `cargo test -p sheep-p2p --test net_loopback --
/// --nocapture sequential_proposals`.
#[test]
fn sequential_proposals_are_acknowledged_and_applied_everywhere() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let rt = runtime();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ids: Vec<NodeId> = (0..3).map(|_| NodeId::random()).collect();
    let a = Node::start(&rt, net_config("lat", dirs[0].path(), vec![]), ids[0]);
    a.cluster.wait_member(T).unwrap();
    let (m, p) = measure(&a, 200);
    println!("1 node: propose median {m:?}, p99 {p:?}");
    let b = Node::start(
        &rt,
        net_config("lat", dirs[1].path(), vec![a.addr()]),
        ids[1],
    );
    let c = Node::start(
        &rt,
        net_config("lat", dirs[2].path(), vec![a.addr()]),
        ids[2],
    );
    wait_view(&[&a, &b, &c], &ids);
    let (m, p) = measure(&a, 200);
    println!("3 nodes, from the sequencer: propose median {m:?}, p99 {p:?}");
    let (m, p) = measure(&b, 200);
    println!("3 nodes, from another member: propose median {m:?}, p99 {p:?}");
    let want: Vec<Vec<u8>> = (0..3)
        .flat_map(|_| (0..200).map(|k| format!("lat{k}").into_bytes()))
        .collect();
    wait_until("every node to apply all 600 proposals", T, || {
        [&a, &b, &c]
            .iter()
            .all(|n| n.app_cmds().len() >= want.len())
    });
    for n in [&a, &b, &c] {
        assert_eq!(n.app_cmds(), want);
    }
    for n in [a, b, c] {
        n.stop(false);
    }
}

/// Starts three nodes (the first founds the cluster) and waits for one view of all three.
fn three(
    rt: &tokio::runtime::Runtime,
    name: &str,
    dirs: &[tempfile::TempDir],
    order: Config,
) -> (Vec<NodeId>, Vec<Node>) {
    let cfg = |dir: &Path, peers| NetConfig {
        order: order.clone(),
        ..net_config(name, dir, peers)
    };
    let ids: Vec<NodeId> = (0..3).map(|_| NodeId::random()).collect();
    let a = Node::start(rt, cfg(dirs[0].path(), vec![]), ids[0]);
    a.cluster.wait_member(T).unwrap();
    let b = Node::start(rt, cfg(dirs[1].path(), vec![a.addr()]), ids[1]);
    b.cluster.wait_member(T).unwrap();
    let c = Node::start(rt, cfg(dirs[2].path(), vec![a.addr()]), ids[2]);
    c.cluster.wait_member(T).unwrap();
    wait_view(&[&a, &b, &c], &ids);
    (ids, vec![a, b, c])
}

/// The quorum gate of the data path: two of three keep it when one stops; the last one,
/// not the oldest member of its view, loses it within half a failure timeout and a tick.
/// (A longer failure timeout than the other tests: the gate's window is half of it, and a
/// loaded CI machine must not stall a driver that long.)
#[test]
fn the_quorum_gate_follows_the_members_heard() {
    let rt = runtime();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let order = Config {
        failure_timeout: Duration::from_secs(3),
        ..order_config()
    };
    let (ids, mut nodes) = three(&rt, "gate", &dirs, order.clone());
    wait_until("every node has the quorum gate open", T, || {
        nodes.iter().all(|n| n.cluster.has_quorum())
    });
    let c = nodes.pop().unwrap();
    c.stop(false);
    // a and b (two of three) keep it all along, through the removal of c.
    let end = Instant::now() + order.failure_timeout * 2;
    while Instant::now() < end {
        for n in &nodes {
            assert!(n.cluster.has_quorum(), "{:?}", n.cluster.status());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_view(&[&nodes[0], &nodes[1]], &ids[..2]);
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    assert!(b.cluster.status().quorum);
    // b alone is half of {a, b} without the oldest member: no quorum.
    a.stop(false);
    let stopped = Instant::now();
    wait_until("b's gate closes", T, || !b.cluster.has_quorum());
    let took = stopped.elapsed();
    let limit = order.failure_timeout / 2 + sheep_p2p::net::TICK + Duration::from_millis(500);
    assert!(took <= limit, "closed after {took:?}");
    b.stop(false);
}

/// The whole cluster stops; two of three come back and wait for the third (and say so);
/// `recover_force` on one of them resumes the cluster with the two, with its whole history;
/// the third, started later, rejoins and catches up.
#[test]
fn a_forced_recovery_resumes_a_stopped_cluster_without_its_absent_member() {
    let rt = runtime();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ids, nodes) = three(&rt, "force", &dirs, order_config());
    for k in 0..5 {
        nodes[k % 3]
            .cluster
            .propose(format!("before{k}").into_bytes(), T)
            .unwrap();
    }
    let err = nodes[0].cluster.recover_force().unwrap_err();
    assert!(
        matches!(
            err,
            sheep_p2p::Error::NoForce(sheep_p2p::order::NoForce::Member)
        ),
        "{err}"
    );
    let logs: Vec<Vec<Entry>> = nodes.into_iter().map(|n| n.stop(false)).collect();
    let epoch = logs[0].last().unwrap().epoch;

    let a = Node::start(&rt, net_config("force", dirs[0].path(), vec![]), ids[0]);
    let b = Node::start(
        &rt,
        net_config("force", dirs[1].path(), vec![a.addr()]),
        ids[1],
    );
    assert_eq!(a.restored, logs[0]);
    wait_until("a waits for c only", T, || {
        a.cluster
            .status()
            .waiting
            .is_some_and(|w| w.missing == vec![ids[2]] && w.epoch == epoch)
    });
    std::thread::sleep(order_config().discovery_window * 2);
    assert!(a.cluster.view().is_none() && b.cluster.view().is_none());
    assert!(!a.cluster.has_quorum());

    let f = b.cluster.recover_force().unwrap();
    assert_eq!(f.removed, vec![ids[2]]);
    assert_eq!(f.epoch, epoch);
    let v = wait_view(&[&a, &b], &ids[..2]);
    assert_eq!(v.epoch, epoch + 1);
    let before: Vec<Vec<u8>> = (0..5).map(|k| format!("before{k}").into_bytes()).collect();
    assert_eq!(a.app_cmds(), before);
    b.cluster.propose(b"after".to_vec(), T).unwrap();
    wait_until("both gates open", T, || {
        a.cluster.has_quorum() && b.cluster.has_quorum()
    });

    let c = Node::start(
        &rt,
        net_config("force", dirs[2].path(), vec![a.addr()]),
        ids[2],
    );
    c.cluster.wait_member(T).unwrap();
    wait_view(&[&a, &b, &c], &ids);
    wait_until("c caught up", T, || c.entries() == a.entries());
    assert!(c.app_cmds().ends_with(&[b"after".to_vec()]));
    for n in [a, b, c] {
        n.stop(false);
    }
}
