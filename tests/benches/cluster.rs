//! Cluster figures, measured on real hosts in network namespaces (root only; never run in CI —
//! `cargo bench --no-run` only builds it).
//!
//! ```text
//! cargo build --release --bins
//! cargo bench -p sheep-tests --bench cluster -- form 3 8 16   # start-to-agreement time
//! cargo bench -p sheep-tests --bench cluster -- move 3 8      # objects moved by one more host
//! cargo bench -p sheep-tests --bench cluster -- fio           # bench/fio.sh on a 3-host cluster
//! ```

use sheep_tests::{Host, Net};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(what) = args.first() else {
        eprintln!("usage: cluster (form N... | move N... | fio)");
        return;
    };
    let ns: Vec<usize> = args[1..].iter().filter_map(|a| a.parse().ok()).collect();
    match what.as_str() {
        "form" => ns.iter().for_each(|&n| form(n)),
        "move" => ns.iter().for_each(|&n| moved(n)),
        "fio" => fio(),
        other => eprintln!("unknown figure {other}"),
    }
}

/// Starts `n` hosts at once and reports when every host lists all `n` members.
fn form(n: usize) {
    let net = Net::new(n);
    let t0 = Instant::now();
    let hosts = Host::start_all(&net, &[]);
    let mounted = t0.elapsed();
    for h in &hosts {
        h.wait_members(n);
    }
    println!(
        "form: {n} hosts: every host lists {n} members {:.2} s after start (all mounted after {:.2} s)",
        t0.elapsed().as_secs_f64(),
        mounted.as_secs_f64()
    );
}

/// Writes one extent into 1024 objects on `n` hosts, adds one host and reports the fraction
/// of object copies that moved.
fn moved(n: usize) {
    let mut net = Net::new(n);
    let mut hosts = Host::start_all(&net, &[]);
    for h in &hosts {
        h.wait_members(n);
    }
    hosts[0].must_dog(&["vdi", "create", "big", "4G"]);
    let path = hosts[0].path("big");
    let writes: Vec<String> = (0..1024u64)
        .map(|k| format!("write -P 1 {} 4k", k * (4 << 20)))
        .collect();
    let writes: Vec<&str> = writes.iter().map(String::as_str).collect();
    sheep_tests::must_qemu_io(&path, true, &writes);
    let i = net.add_host();
    let t0 = Instant::now();
    hosts.push(Host::start(&net, i, &[]));
    for h in &hosts {
        h.wait_members(n + 1);
    }
    let info = |h: &Host| -> serde_json::Value {
        serde_json::from_str(&h.must_dog(&["cluster", "info", "--json"])).unwrap_or_default()
    };
    sheep_tests::wait_until(Duration::from_secs(300), "rebalancing", || {
        hosts
            .iter()
            .all(|h| info(h)["rebalance"]["complete"].as_bool() == Some(true))
    });
    let sum = |k: &str| -> u64 {
        hosts
            .iter()
            .map(|h| info(h)["rebalance"][k].as_u64().unwrap_or(0))
            .sum()
    };
    let (pushed, total) = (sum("pushed"), sum("objects"));
    println!(
        "move: {n} -> {} hosts: {pushed} of {total} object copies moved ({:.3}; 1/N = {:.3}) in {:.1} s",
        n + 1,
        pushed as f64 / total.max(1) as f64,
        1.0 / (n + 1) as f64,
        t0.elapsed().as_secs_f64()
    );
}

/// Runs bench/fio.sh against host 0's mount of a 3-host, 3-copy cluster, beside a local file.
fn fio() {
    let net = Net::new(3);
    let hosts = Host::start_all(&net, &[]);
    for h in &hosts {
        h.wait_members(3);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/fio.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .env("MOUNT", &hosts[0].mount)
        .status()
        .expect("bench/fio.sh");
    assert!(status.success(), "bench/fio.sh failed");
    for (i, h) in hosts.iter().enumerate() {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", h.pid())).unwrap_or_default();
        let hwm = status
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .unwrap_or("VmHWM: ?");
        println!(
            "* host {i} sheepfs peak RSS {}",
            hwm.trim_start_matches("VmHWM:").trim()
        );
    }
}
