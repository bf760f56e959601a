//! The block-history check without failures: the baseline of the recovery tests. Workers write
//! tagged 4 KiB blocks and read random ones with O_DIRECT, several at once on few blocks so that
//! reads often overlap writes of the same block; every read must be explained by the writes
//! (`sheep_tests::history`): no stale value, no lost write, no torn block.

use std::time::Duration;

use sheep_tests::history::{must_check, read_all, Config, Op, Worker};
use sheep_tests::{require, Host, Net, Node};

/// Few blocks, in two objects: reads and writes of one block collide often.
fn layout(worker: u32) -> Config {
    Config {
        stride: 1 << 20,
        ..Config::new(worker, 8)
    }
}

/// Runs a worker on each path for `secs` (read-only where `readers` says so).
fn run(paths: &[std::path::PathBuf], readers: &[bool], secs: u64) -> Vec<Op> {
    let workers: Vec<Worker> = paths
        .iter()
        .zip(1..)
        .map(|(p, id)| {
            let reader = readers.get(id as usize - 1).copied().unwrap_or(false);
            let config = Config {
                read_percent: if reader { 100 } else { 50 },
                ..layout(id)
            };
            Worker::start(p, config)
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    workers
        .into_iter()
        .flat_map(|w| w.finish(Duration::from_secs(60)))
        .collect()
}

#[test]
fn concurrent_reads_and_writes_on_one_host_never_return_a_mixed_block() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let path = node.path("vol");
    node.must_dog(&["vdi", "create", "vol", "16M"]);
    let mut ops = run(
        &[path.clone(), path.clone(), path.clone(), path.clone()],
        &[],
        8,
    );
    ops.extend(read_all(&path, 100, &layout(100)));
    must_check(&ops, "four workers on one host");
    node.stop();
}

/// Starts 3 hosts, runs workers on `on` (host indexes; read-only where `readers` says so) for
/// 8 s, reads every block on every host and checks the whole.
fn three_hosts(on: &[usize], readers: &[bool], what: &str) {
    let net = Net::new(3);
    let hosts = Host::start_all(&net, &[]);
    for h in &hosts {
        h.wait_members(3);
    }
    hosts[0].must_dog(&["vdi", "create", "vol", "16M"]);
    let paths: Vec<_> = on.iter().map(|&i| hosts[i].path("vol")).collect();
    let mut ops = run(&paths, readers, 8);
    for (i, h) in hosts.iter().enumerate() {
        let id = 100 + u32::try_from(i).expect("index");
        ops.extend(read_all(&h.path("vol"), id, &layout(id)));
    }
    must_check(&ops, what);
}

#[test]
fn writes_on_one_host_and_reads_on_three_are_explained_by_the_writes() {
    if !require(&["ip", "nsenter"]) {
        return;
    }
    three_hosts(
        &[0, 0, 1, 2],
        &[false, false, true, true],
        "two writers on one host, readers on the others",
    );
}

#[test]
fn writes_on_three_hosts_at_once_are_explained_by_the_writes() {
    if !require(&["ip", "nsenter"]) {
        return;
    }
    // The VDI's ownership moves back and forth between the writers' hosts.
    three_hosts(&[0, 1, 2], &[], "a writer on each host");
}
