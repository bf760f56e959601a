//! The multi-host harness itself ([`Net`], [`Host`]): namespaces on one bridge reach each other
//! by unicast and multicast, a cut host is unreachable until healed, a split net talks only
//! within each side, a daemon mounts from inside a namespace, and everything is gone after drop,
//! also after a panic.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use sheep_tests::daemon::is_mounted;
use sheep_tests::netns::{list_links, list_namespaces};
use sheep_tests::{require, wait_until, Host, Net};

/// The mDNS group and port: what the daemons' discovery uses.
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const PORT: u16 = 5353;

/// How many times a multicast datagram is sent, 100 ms apart, before a host counts as deaf.
const MULTICAST_ROUNDS: usize = 10;

/// Tools the tests run inside the namespaces.
const TOOLS: &[&str] = &["ip", "nsenter", "ping", "nft"];

/// Sends datagrams from host `from` to the mDNS group and returns the other hosts that got one
/// (from `from`'s address) within about a second.
fn multicast_from(net: &Net, from: usize) -> BTreeSet<usize> {
    let receivers: Vec<(usize, UdpSocket)> = (0..net.len())
        .filter(|&i| i != from)
        .map(|i| {
            let ip = net.ip(i);
            let socket = net.in_ns(i, move || {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).expect("bind 5353");
                socket.join_multicast_v4(&GROUP, &ip).expect("join group");
                socket
            });
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("set timeout");
            (i, socket)
        })
        .collect();
    let src = net.ip(from);
    let sender = net.in_ns(from, move || {
        UdpSocket::bind((src, 0)).expect("bind sender")
    });
    let payload = format!("sheep-smoke {} from {from}", net.id());
    let mut got = BTreeSet::new();
    for _ in 0..MULTICAST_ROUNDS {
        sender
            .send_to(payload.as_bytes(), (GROUP, PORT))
            .expect("send to group");
        for (i, socket) in &receivers {
            let mut buf = [0u8; 128];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                if &buf[..n] == payload.as_bytes() && peer.ip() == src {
                    got.insert(*i);
                }
            }
        }
        if got.len() == receivers.len() {
            break;
        }
    }
    got
}

fn others(net: &Net, except: &[usize]) -> BTreeSet<usize> {
    (0..net.len()).filter(|i| !except.contains(i)).collect()
}

/// Asserts that no namespace or link named after net `id` is left.
fn assert_nothing_left(id: &str) {
    let ns: Vec<String> = list_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("sheepnet-{id}-")))
        .collect();
    assert!(ns.is_empty(), "namespaces left: {ns:?}");
    let links: Vec<String> = list_links()
        .into_iter()
        .filter(|l| {
            l.starts_with(&format!("sbr{id}"))
                || l.starts_with(&format!("sp{id}-"))
                || l.starts_with(&format!("sv{id}-"))
        })
        .collect();
    assert!(links.is_empty(), "links left: {links:?}");
}

#[test]
fn namespaces_reach_each_other_until_cut_and_again_when_healed() {
    if !require(TOOLS) {
        return;
    }
    let net = Net::new(3);
    let id = net.id();
    for from in 0..3 {
        for to in others(&net, &[from]) {
            assert!(net.ping(from, to), "host {from} cannot ping host {to}");
        }
        assert_eq!(
            multicast_from(&net, from),
            others(&net, &[from]),
            "multicast from host {from}"
        );
    }
    let routes = net.must_exec(1, "ip", &["route", "show", "224.0.0.0/4"]);
    assert!(routes.contains(&format!("sv{id}-1")), "{routes}");

    net.cut(2);
    assert!(!net.ping(0, 2), "cut host 2 still answers host 0");
    assert!(!net.ping(2, 1), "cut host 2 still reaches host 1");
    assert!(
        net.ping(0, 1),
        "hosts 0 and 1 lost each other when 2 was cut"
    );
    assert_eq!(multicast_from(&net, 0), BTreeSet::from([1]));
    net.heal(2);
    wait_until(Duration::from_secs(5), "healed host 2 answers", || {
        net.ping(0, 2)
    });
    assert_eq!(multicast_from(&net, 2), BTreeSet::from([0, 1]));

    net.split(&[1, 2]);
    assert!(
        net.ping(1, 2),
        "hosts on one side of a split reach each other"
    );
    assert!(!net.ping(0, 1), "a split net still joins host 0 and host 1");
    assert_eq!(multicast_from(&net, 1), BTreeSet::from([2]));
    net.heal_all();
    wait_until(Duration::from_secs(5), "healed net is whole", || {
        net.ping(0, 1) && net.ping(0, 2)
    });

    net.block(0, 1);
    assert!(!net.ping(0, 1), "blocked host 1 still answers host 0");
    assert!(!net.ping(1, 0), "blocked host 0 still answers host 1");
    assert!(
        net.ping(0, 2) && net.ping(1, 2),
        "a block between 0 and 1 cut host 2 off"
    );
    assert_eq!(multicast_from(&net, 1), BTreeSet::from([2]));
    net.unblock(0);
    assert!(net.ping(0, 1), "unblocked host 1 does not answer host 0");

    drop(net);
    assert_nothing_left(&id);
}

#[test]
fn a_daemon_in_a_namespace_mounts_restarts_and_is_removed_on_drop() {
    if !require(TOOLS) {
        return;
    }
    let mut net = Net::new(1);
    let i = net.add_host();
    assert_eq!((i, net.len()), (1, 2));
    let id = net.id();
    let mut host = Host::start(&net, 1, &["--no-mdns"]);
    assert_eq!(host.ip(), net.ip(1));

    let file = host.path("hello");
    let data = format!("written in {}", net.ns(1));
    std::fs::write(&file, &data).expect("write through the mount");
    assert_eq!(std::fs::read_to_string(&file).expect("read back"), data);
    let list = host.must_dog(&["vdi", "list"]);
    assert!(list.contains("hello"), "{list}");

    // The daemon runs in the namespace: it sees only the namespace's links.
    let net_ns = std::fs::read_link(format!("/proc/{}/ns/net", host.pid())).expect("its netns");
    let mine = std::fs::read_link("/proc/self/ns/net").expect("my netns");
    assert_ne!(net_ns, mine, "sheepfs runs in the root network namespace");

    host.stop();
    assert!(!is_mounted(&host.mount, None));
    host.restart(&["--no-mdns"]);
    assert_eq!(
        std::fs::read_to_string(&file).expect("read after restart"),
        data
    );

    host.kill9();
    assert!(!is_mounted(&host.mount, None), "kill9 left a dead mount");
    host.restart(&["--no-mdns"]);
    assert!(
        host.log().contains("=== harness: starting"),
        "{}",
        host.log()
    );

    let mount = host.mount.clone();
    let dir = mount.parent().expect("mount has a parent").to_path_buf();
    drop(host);
    assert!(
        !is_mounted(&mount, None),
        "drop left {} mounted",
        mount.display()
    );
    assert!(!dir.exists(), "drop left {}", dir.display());
    drop(net);
    assert_nothing_left(&id);
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    if !require(TOOLS) {
        return;
    }
    let mut seen = None;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let net = Net::new(2);
        let host = Host::start(&net, 0, &["--no-mdns"]);
        let stray = net.must_exec(1, "sh", &["-c", "sleep 600 >/dev/null 2>&1 & echo $!"]);
        seen = Some((net.id(), host.mount.clone(), stray.trim().to_owned()));
        panic!("the test fails with a daemon and a stray process running");
    }));
    assert!(result.is_err());
    let (id, mount, stray) = seen.expect("the closure ran");
    assert!(
        !is_mounted(&mount, None),
        "{} still mounted",
        mount.display()
    );
    assert_nothing_left(&id);
    wait_until(
        Duration::from_secs(5),
        "the stray process is killed",
        || {
            std::fs::read_to_string(format!("/proc/{stray}/stat"))
                .map_or(true, |stat| stat.contains(") Z "))
        },
    );
}
