//! Hosts in network namespaces on one bridge, with mDNS and no cluster flags, become one pool:
//! one membership, one VDI table, every host reads what another wrote, image locks hold across
//! hosts, a killed sequencer loses nothing acknowledged, and a joining host takes its share.

use serde_json::Value;
use sheep_tests::cmd::describe;
use sheep_tests::file::utf8;
use sheep_tests::vm::must_start_vm_holding;
use sheep_tests::{must_qemu_io, must_run, require, run, wait_until, Host, Net, MIB};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const TOOLS: &[&str] = &["ip", "nsenter", "qemu-io"];

/// `dog vdi list --json` of a host, as (name, size, vid) sorted by name.
fn table(h: &Host) -> Vec<(String, u64, u64)> {
    let out = h.must_dog(&["vdi", "list", "--json"]);
    let v: Value = serde_json::from_str(&out).expect("vdi list json");
    let mut rows: Vec<(String, u64, u64)> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            let name = match r["tag"].as_str() {
                Some(t) => format!("{}@{t}", r["name"].as_str().unwrap_or("")),
                None => r["name"].as_str().unwrap_or("").to_owned(),
            };
            (
                name,
                r["size"].as_u64().unwrap_or(0),
                r["vid"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// The host that orders the cluster, as host `h` sees it.
fn sequencer_id(h: &Host) -> String {
    let out = h.must_dog(&["node", "list", "--json"]);
    let v: Value = serde_json::from_str(&out).expect("node list json");
    v.as_array()
        .expect("array")
        .iter()
        .find(|m| m["sequencer"].as_bool() == Some(true))
        .and_then(|m| m["node_id"].as_str())
        .expect("a sequencer")
        .to_owned()
}

fn local_id(h: &Host) -> String {
    let out = h.must_dog(&["node", "info", "--json"]);
    let v: Value = serde_json::from_str(&out).expect("node info json");
    v["node_id"].as_str().expect("node id").to_owned()
}

/// Runs qemu-io commands on `path` (see [`must_qemu_io`]).
fn qemu_io(path: &Path, direct: bool, cmd: &str) {
    must_qemu_io(path, direct, &[cmd]);
}

/// Runs several qemu-io commands in one process.
fn qemu_io_all(path: &Path, direct: bool, cmds: &[String]) {
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    must_qemu_io(path, direct, &cmds);
}

#[test]
fn three_hosts_find_each_other_and_serve_one_pool() {
    if !require(TOOLS) {
        return;
    }
    let net = Net::new(3);
    let t0 = Instant::now();
    let hosts = Host::start_all(&net, &[]);
    for h in &hosts {
        h.wait_members(3);
    }
    eprintln!(
        "3 hosts agreed on membership {:?} after start",
        t0.elapsed()
    );
    let epochs: Vec<Option<u64>> = hosts.iter().map(Host::epoch).collect();
    assert!(
        epochs.iter().all(|e| *e == epochs[0]),
        "epochs differ: {epochs:?}"
    );

    // Every host creates VDIs at once; some names collide.
    let results: Vec<Vec<(String, bool)>> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                s.spawn(move || {
                    let mut r = Vec::new();
                    for k in 0..6 {
                        let name = if k % 2 == 0 {
                            format!("shared{k}")
                        } else {
                            format!("own{i}-{k}")
                        };
                        let out = h.dog(&["vdi", "create", &name, "64M"]);
                        let code = out.status.code();
                        assert!(
                            code == Some(0) || code == Some(4),
                            "{}",
                            describe(&format!("dog vdi create {name}"), &out)
                        );
                        r.push((name, code == Some(0)));
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("creator"))
            .collect()
    });
    let mut wins: BTreeMap<String, usize> = BTreeMap::new();
    for (name, won) in results.into_iter().flatten() {
        *wins.entry(name).or_default() += usize::from(won);
    }
    assert!(
        wins.values().all(|n| *n == 1),
        "not exactly one create per name: {wins:?}"
    );
    let first = table(&hosts[0]);
    assert_eq!(first.len(), wins.len());
    for h in &hosts[1..] {
        assert_eq!(table(h), first, "VDI tables differ");
    }

    // Write on A, read the same bytes on B and C (direct and buffered).
    let a = &hosts[0];
    qemu_io(&a.path("shared0"), true, "write -P 0xa5 0 5M");
    qemu_io(&a.path("shared0"), true, "write -P 0x3c 8388000 10000");
    for h in &hosts[1..] {
        qemu_io(&h.path("shared0"), true, "read -P 0xa5 0 5M");
        qemu_io(&h.path("shared0"), false, "read -P 0x3c 8388000 10000");
        qemu_io(&h.path("shared0"), true, "read -P 0 5M 3000000");
    }
    // B writes the same VDI next (the ownership moves), A and C see it.
    qemu_io(&hosts[1].path("shared0"), true, "write -P 0x77 1M 1M");
    for h in [&hosts[0], &hosts[2]] {
        qemu_io(&h.path("shared0"), true, "read -P 0x77 1M 1M");
        qemu_io(&h.path("shared0"), true, "read -P 0xa5 2M 3M");
    }
    // fio writes with verification headers on C, and B verifies them.
    let fio = |h: &Host, extra: &[&str]| {
        let target = format!("--filename={}", utf8(&h.path("shared2")));
        let mut args = vec![
            "--name=cross",
            &target,
            "--rw=randwrite",
            "--bs=16k",
            "--size=48M",
            "--ioengine=libaio",
            "--direct=1",
            "--iodepth=8",
            "--verify=crc32c",
            "--randseed=7",
        ];
        args.extend(extra);
        must_run("fio", &args);
    };
    if require(&["fio"]) {
        fio(&hosts[2], &["--do_verify=0"]);
        fio(&hosts[1], &["--verify_only"]);
    }
}

#[test]
fn an_image_a_vm_holds_on_one_host_is_refused_on_the_others_until_it_stops() {
    if !require(&["ip", "nsenter", "qemu-io", "qemu-system-x86_64"]) {
        return;
    }
    // Three hosts: when one fails, the other two are a majority and go on.
    let net = Net::new(3);
    let hosts = Host::start_all(&net, &[]);
    for h in &hosts {
        h.wait_members(3);
    }
    hosts[0].must_dog(&["vdi", "create", "vm0", "16M"]);
    let vm = must_start_vm_holding(&hosts[0].path("vm0"));
    let other = hosts[1].path("vm0");
    let args = ["-f", "raw", "-c", "write 0 512", utf8(&other)];
    let out = run("qemu-io", &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Failed to get") && err.contains("lock"),
        "the second host's writer was not refused: {}",
        describe("qemu-io", &out)
    );
    // Readers that share the image are fine.
    must_run(
        "qemu-io",
        &["-r", "-U", "-f", "raw", "-c", "read 0 512", utf8(&other)],
    );
    drop(vm);
    wait_until(Duration::from_secs(10), "the VM's locks to go", || {
        run("qemu-io", &args).status.success()
    });
    // A host that fails takes its locks with it.
    let _vm = must_start_vm_holding(&hosts[0].path("vm0"));
    assert!(
        !run("qemu-io", &args).status.success(),
        "the lock is back on host 0"
    );
    let mut hosts = hosts;
    hosts[0].kill9();
    wait_until(
        Duration::from_secs(20),
        "the failed host's locks to go",
        || run("qemu-io", &args).status.success(),
    );
}

#[test]
fn fewer_hosts_than_copies_is_degraded_until_a_host_joins() {
    if !require(TOOLS) {
        return;
    }
    let mut net = Net::new(2);
    let mut hosts = Host::start_all(&net, &[]);
    for h in &hosts {
        h.wait_members(2);
    }
    let info = |h: &Host| -> Value {
        serde_json::from_str(&h.must_dog(&["cluster", "info", "--json"])).expect("json")
    };
    let redundancy = info(&hosts[0])["redundancy"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(redundancy.contains("degraded"), "{redundancy}");
    hosts[0].must_dog(&["vdi", "create", "vm0", "64M"]);
    let writes: Vec<String> = (0..16u64)
        .map(|k| format!("write -P 9 {} 64k", k * 4 * MIB))
        .collect();
    qemu_io_all(&hosts[0].path("vm0"), true, &writes);
    let held = |hosts: &[Host]| -> Vec<u64> {
        hosts
            .iter()
            .map(|h| info(h)["rebalance"]["objects"].as_u64().unwrap_or(0))
            .collect()
    };
    // Two hosts for three copies: both hold every object.
    assert_eq!(held(&hosts), vec![16, 16]);
    let i = net.add_host();
    hosts.push(Host::start(&net, i, &[]));
    for h in &hosts {
        h.wait_members(3);
    }
    wait_until(Duration::from_secs(60), "the third copies", || {
        held(&hosts) == vec![16, 16, 16]
    });
    let redundancy = info(&hosts[2])["redundancy"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert_eq!(redundancy, "3 copies");
    let reads: Vec<String> = (0..16u64)
        .map(|k| format!("read -P 9 {} 64k", k * 4 * MIB))
        .collect();
    qemu_io_all(&hosts[2].path("vm0"), true, &reads);
}

#[test]
fn killing_the_sequencer_during_metadata_operations_loses_nothing_acknowledged() {
    if !require(TOOLS) {
        return;
    }
    let net = Net::new(3);
    let mut hosts = Host::start_all(&net, &["--failure-timeout", "2"]);
    for h in &hosts {
        h.wait_members(3);
    }
    let seq = sequencer_id(&hosts[0]);
    let victim = hosts
        .iter()
        .position(|h| local_id(h) == seq)
        .expect("sequencer host");
    let worker = (victim + 1) % 3;
    let epoch_before = hosts[worker].epoch().unwrap_or(0);
    let acked: Vec<String> = std::thread::scope(|s| {
        let w = &hosts[worker];
        let creator = s.spawn(move || {
            let mut acked = Vec::new();
            for k in 0..60 {
                let name = format!("m{k:03}");
                if w.dog(&["vdi", "create", &name, "4M"]).status.success() {
                    acked.push(name);
                }
            }
            acked
        });
        std::thread::sleep(Duration::from_millis(400));
        sigkill(&hosts, victim);
        creator.join().expect("creator")
    });
    hosts[victim].kill9();
    let survivors: Vec<&Host> = hosts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, h)| h)
        .collect();
    for h in &survivors {
        h.wait_members(2);
    }
    let t = table(survivors[0]);
    assert_eq!(table(survivors[1]), t, "survivors disagree");
    let names: Vec<&str> = t.iter().map(|r| r.0.as_str()).collect();
    for a in &acked {
        assert!(
            names.contains(&a.as_str()),
            "acknowledged create of {a} lost"
        );
    }
    assert!(
        acked.len() >= 30,
        "too few creates went through: {}",
        acked.len()
    );
    assert!(survivors[0].epoch().unwrap_or(0) > epoch_before);
    let _ = &mut hosts;
}

/// SIGKILLs host `i` by pid, in the middle of the creates (its mount is released later, by
/// [`Host::kill9`]).
fn sigkill(hosts: &[Host], i: usize) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(hosts[i].pid()).expect("pid"));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
}

#[test]
fn a_fourth_host_takes_about_a_quarter_of_the_copies() {
    if !require(TOOLS) {
        return;
    }
    let mut net = Net::new(3);
    let mut hosts = Host::start_all(&net, &[]);
    for h in &hosts {
        h.wait_members(3);
    }
    hosts[0].must_dog(&["vdi", "create", "big", "1G"]);
    // One small extent in each of the 256 objects.
    let path = hosts[0].path("big");
    let writes: Vec<String> = (0..256u64)
        .map(|k| format!("write -P {} {} 4k", k % 251, k * 4 * MIB))
        .collect();
    qemu_io_all(&path, true, &writes);
    let i = net.add_host();
    hosts.push(Host::start(&net, i, &[]));
    for h in &hosts {
        h.wait_members(4);
    }
    let rebalance = |h: &Host| -> Value {
        let out = h.must_dog(&["cluster", "info", "--json"]);
        let v: Value = serde_json::from_str(&out).expect("cluster info json");
        v["rebalance"].clone()
    };
    wait_until(Duration::from_secs(60), "rebalancing to complete", || {
        hosts
            .iter()
            .all(|h| rebalance(h)["complete"].as_bool() == Some(true))
    });
    let held: Vec<u64> = hosts
        .iter()
        .map(|h| rebalance(h)["objects"].as_u64().unwrap_or(0))
        .collect();
    let total: u64 = held.iter().sum();
    // The new host started empty: every copy it holds moved to it.
    let fraction = held[3] as f64 / total as f64;
    eprintln!(
        "4th host: {} of {total} object copies moved to it ({fraction:.3}); held {held:?}",
        held[3]
    );
    assert_eq!(total, 256 * 3, "every object has 3 copies");
    assert!(
        (0.15..=0.35).contains(&fraction),
        "moved {fraction:.3}, expected about 1/4"
    );
    // Every byte still reads back, from the new host too.
    let reads: Vec<String> = (0..256u64)
        .map(|k| format!("read -P {} {} 4k", k % 251, k * 4 * MIB))
        .collect();
    qemu_io_all(&hosts[3].path("big"), true, &reads);
    let _ = &mut net;
}

/// A free TCP port on loopback (bound and released; the daemon binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn two_hosts_on_loopback_join_with_peer_and_no_multicast() {
    if !require(&["qemu-io"]) {
        return;
    }
    let (p1, p2) = (free_port(), free_port());
    let l1 = format!("127.0.0.1:{p1}");
    let l2 = format!("127.0.0.1:{p2}");
    let first = sheep_tests::Node::start_with(&["--listen", &l1]);
    let second = sheep_tests::Node::start_with(&["--listen", &l2, "--peer", &l1]);
    wait_until(
        Duration::from_secs(30),
        "both hosts to list two members",
        || {
            [&first, &second].iter().all(|n| {
                let out = n.dog(&["node", "list", "--json"]);
                serde_json::from_slice::<Value>(&out.stdout)
                    .ok()
                    .and_then(|v| v.as_array().map(Vec::len))
                    == Some(2)
            })
        },
    );
    second.must_dog(&["vdi", "create", "vm0", "32M", "--copies", "2"]);
    qemu_io(&first.path("vm0"), true, "write -P 0x42 4M 6M");
    qemu_io(&second.path("vm0"), true, "read -P 0x42 4M 6M");
    let list = first.must_dog(&["vdi", "list"]);
    assert!(list.contains("vm0"), "{list}");
}
