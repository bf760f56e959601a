//! Cluster figures, measured on real hosts in network namespaces (root only; never run in CI —
//! `cargo bench --no-run` only builds it).
//!
//! ```text
//! cargo build --release --bins
//! cargo bench -p sheep-tests --bench cluster -- form 3 8 16   # start-to-agreement time
//! cargo bench -p sheep-tests --bench cluster -- move 3 8      # objects moved by one more host
//! cargo bench -p sheep-tests --bench cluster -- fio           # bench/fio.sh on a 3-host cluster
//! cargo bench -p sheep-tests --bench cluster -- recovery 2    # recovery figures, 2 GiB of data
//! ```
//!
//! `recovery [GIB]` (4 hosts, 3 copies, `--failure-timeout 2`; needs fio) fills GIB (default 2)
//! from host 0, then measures and prints as one table: the recovery rate (GiB/min of object
//! copies made, from the epoch change to every host reporting its recovery complete) when a host
//! is lost and when a fresh one joins, unthrottled and with `dog node recovery set-throttle 50M`;
//! 4k random-read IOPS on host 0 (fio, libaio, iodepth 32, direct) before and during each
//! recovery; and the bytes the catch-up of a host away for 30 s of 4k random writes copied. It
//! reads `dog node recovery --json` (received_bytes, complete); without it (older daemons) it falls
//! back to the rebalance figures of `dog cluster info --json` (pushed_bytes, complete) and says so.

use sheep_tests::{Host, Net};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(what) = args.first() else {
        eprintln!("usage: cluster (form N... | move N... | fio | recovery [GIB])");
        return;
    };
    let ns: Vec<usize> = args[1..].iter().filter_map(|a| a.parse().ok()).collect();
    match what.as_str() {
        "form" => ns.iter().for_each(|&n| form(n)),
        "move" => ns.iter().for_each(|&n| moved(n)),
        "fio" => fio(),
        "recovery" => recovery::run(ns.first().map_or(2, |&n| n as u64)),
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

/// `recovery [GIB]`: see the module documentation.
mod recovery {
    use serde_json::Value;
    use sheep_tests::{wait_until, Host, Net};
    use std::fmt::Write as _;
    use std::process::Command;
    use std::thread;
    use std::time::{Duration, Instant};

    const ARGS: &[&str] = &["--failure-timeout", "2"];
    const GIB: f64 = (1u64 << 30) as f64;
    const SLOW: Duration = Duration::from_secs(1800);

    /// Where the figures come from.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Source {
        Recovery,
        Rebalance,
    }

    /// (complete at the host's current epoch, bytes this host copied) of one host.
    fn state(h: &Host, source: Source) -> Option<(bool, u64)> {
        let epoch = h.epoch()?;
        let v: Value = match source {
            Source::Recovery => h.recovery()?,
            Source::Rebalance => {
                let out = h.dog(&["cluster", "info", "--json"]);
                serde_json::from_slice::<Value>(&out.stdout).ok()?["rebalance"].clone()
            }
        };
        let bytes_key = match source {
            // Each copy counted once, by the host that received it.
            Source::Recovery => "received_bytes",
            Source::Rebalance => "pushed_bytes",
        };
        let done = v["epoch"].as_u64() == Some(epoch) && v["complete"].as_bool() == Some(true);
        Some((done, v[bytes_key].as_u64().unwrap_or(0)))
    }

    /// Waits until every host of `hosts` reports its recovery complete; returns the sum of
    /// the bytes they copied.
    fn wait_complete(hosts: &[&Host], source: Source) -> u64 {
        let mut total = 0;
        wait_until(SLOW, "every host completes its recovery", || {
            let states: Option<Vec<(bool, u64)>> = hosts.iter().map(|h| state(h, source)).collect();
            match states {
                Some(s) if s.iter().all(|(done, _)| *done) => {
                    total = s.iter().map(|(_, b)| b).sum();
                    true
                }
                _ => false,
            }
        });
        total
    }

    /// Runs fio on `path` in the background; `join` gives its IOPS.
    fn fio(path: &std::path::Path, rw: &str, secs: u64, size: &str) -> thread::JoinHandle<f64> {
        let args = vec![
            "--name=r".to_owned(),
            format!("--filename={}", path.display()),
            format!("--rw={rw}"),
            "--bs=4k".to_owned(),
            "--ioengine=libaio".to_owned(),
            "--direct=1".to_owned(),
            "--iodepth=32".to_owned(),
            format!("--size={size}"),
            format!("--runtime={secs}"),
            "--time_based".to_owned(),
            "--output-format=json".to_owned(),
        ];
        let key = if rw.contains("read") { "read" } else { "write" };
        thread::spawn(move || {
            let out = Command::new("fio").args(&args).output().expect("run fio");
            assert!(
                out.status.success(),
                "fio failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).expect("fio json");
            let job = &v["jobs"][0];
            job[key]["iops"].as_f64().unwrap_or(0.0)
        })
    }

    fn fill(path: &std::path::Path, gib: u64) {
        let out = Command::new("fio")
            .args([
                "--name=fill",
                &format!("--filename={}", path.display()),
                "--rw=write",
                "--bs=1M",
                "--ioengine=libaio",
                "--direct=1",
                "--iodepth=8",
                &format!("--size={gib}G"),
                "--end_fsync=1",
            ])
            .output()
            .expect("run fio");
        assert!(out.status.success(), "fill failed");
    }

    fn set_throttle(hosts: &[&Host], value: &str) -> bool {
        hosts.iter().all(|h| {
            h.dog(&["node", "recovery", "set-throttle", value])
                .status
                .success()
        })
    }

    /// One recovery: `event` changes the membership (kill or start a host); measures from the
    /// epoch change seen by `watch` to completion on every host of `after`, with fio random
    /// reads on `reader` meanwhile.
    struct Phase {
        name: String,
        secs: f64,
        bytes: u64,
        iops: f64,
    }

    pub fn run(gib: u64) {
        let mut net = Net::new(4);
        let mut hosts = Host::start_all(&net, ARGS);
        for h in &hosts {
            h.wait_members(4);
        }
        let size = format!("{gib}G");
        hosts[0].must_dog(&["vdi", "create", "bench", &format!("{}G", gib + 1)]);
        let path = hosts[0].path("bench");
        let t = Instant::now();
        fill(&path, gib);
        println!(
            "recovery: filled {gib} GiB (3 copies on 4 hosts) in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let source = if hosts[0].recovery().is_some() {
            Source::Recovery
        } else {
            println!("recovery: no `dog node recovery`: using the rebalance figures of `dog cluster info`");
            Source::Rebalance
        };
        let base = fio(&path, "randread", 10, &size).join().expect("fio");
        let mut phases: Vec<Phase> = Vec::new();

        // A host lost, unthrottled; then a fresh host joins; then, throttled, both again.
        for throttled in [false, true] {
            if throttled
                && (source != Source::Recovery
                    || !set_throttle(&hosts.iter().collect::<Vec<_>>(), "50M"))
            {
                println!("recovery: cannot set a throttle; skipping the throttled runs");
                break;
            }
            let tag = if throttled {
                "throttle 50M"
            } else {
                "unthrottled"
            };
            // Lose the last host.
            let victim = hosts.len() - 1;
            let epoch = hosts[0].epoch().unwrap_or(0);
            let reader = fio(&path, "randread", 10, &size);
            hosts[victim].kill9();
            wait_until(SLOW, "the epoch moves", || {
                hosts[0].epoch().unwrap_or(0) > epoch
            });
            let t = Instant::now();
            let survivors: Vec<&Host> = hosts[..victim].iter().collect();
            let bytes = wait_complete(&survivors, source);
            let secs = t.elapsed().as_secs_f64();
            println!("recovery: host lost ({tag}): {bytes} bytes copied in {secs:.1} s");
            phases.push(Phase {
                name: format!("host lost ({tag})"),
                secs,
                bytes,
                iops: reader.join().expect("fio"),
            });
            drop(hosts.pop());
            // A fresh host joins.
            let epoch = hosts[0].epoch().unwrap_or(0);
            let i = net.add_host();
            let reader = fio(&path, "randread", 10, &size);
            let new = Host::start(&net, i, ARGS);
            if throttled {
                set_throttle(&[&new], "50M");
            }
            hosts.push(new);
            wait_until(SLOW, "the epoch moves", || {
                hosts[0].epoch().unwrap_or(0) > epoch
            });
            let t = Instant::now();
            let all: Vec<&Host> = hosts.iter().collect();
            let bytes = wait_complete(&all, source);
            phases.push(Phase {
                name: format!("host joined ({tag})"),
                secs: t.elapsed().as_secs_f64(),
                bytes,
                iops: reader.join().expect("fio"),
            });
        }
        if source == Source::Recovery {
            set_throttle(&hosts.iter().collect::<Vec<_>>(), "off");
        }

        // Catch-up after 30 s away during random writes: over the whole volume, then over a
        // hot 256 MiB region of it.
        let away = 1;
        let mut catch_ups = Vec::new();
        for region in [size.clone(), "256M".to_owned()] {
            hosts[away].kill9();
            for (i, h) in hosts.iter().enumerate() {
                if i != away {
                    h.wait_members(3);
                }
            }
            let writes = fio(&path, "randwrite", 30, &region).join().expect("fio");
            let epoch = hosts[0].epoch().unwrap_or(0);
            let t = Instant::now();
            hosts[away].relaunch(ARGS);
            wait_until(SLOW, "the returning host mounts", || hosts[away].mounted());
            println!(
                "recovery: the host away for 30 s (writes over {region}) is back and mounted after {:.1} s",
                t.elapsed().as_secs_f64()
            );
            hosts[away].wait_ready();
            wait_until(SLOW, "the epoch moves", || {
                hosts[0].epoch().unwrap_or(0) > epoch
            });
            let all: Vec<&Host> = hosts.iter().collect();
            let total = wait_complete(&all, source);
            let returning = state(&hosts[away], source).map_or(0, |(_, b)| b);
            let secs = t.elapsed().as_secs_f64();
            let kept = hosts[away]
                .recovery()
                .and_then(|r| r["kept_bytes"].as_u64())
                .unwrap_or(0);
            println!(
                "recovery: catch-up (writes over {region}): received {:.3} GiB, kept {:.3} GiB found current",
                returning as f64 / GIB,
                kept as f64 / GIB
            );
            catch_ups.push((region, writes, secs, total, returning, kept));
        }

        let mut table = String::new();
        let _ = writeln!(table, "\n| recovery, {gib} GiB, 4 hosts, 3 copies | seconds | GiB copied | GiB/min | 4k rand-read IOPS during |");
        let _ = writeln!(table, "|---|---:|---:|---:|---:|");
        let _ = writeln!(table, "| (before, idle cluster) | | | | {base:.0} |");
        for p in &phases {
            let g = p.bytes as f64 / GIB;
            let rate = if p.secs > 0.0 {
                g / (p.secs / 60.0)
            } else {
                0.0
            };
            let _ = writeln!(
                table,
                "| {} | {:.1} | {g:.2} | {rate:.2} | {:.0} |",
                p.name, p.secs, p.iops
            );
        }
        for (region, writes, secs, total, returning, kept) in &catch_ups {
            let _ = writeln!(
                table,
                "| catch-up after 30 s away, 4k writes over {region} ({writes:.0} IOPS meanwhile) | {secs:.1} | {:.3} (returning host received {:.3}, kept {:.3} as current) | | |",
                *total as f64 / GIB,
                *returning as f64 / GIB,
                *kept as f64 / GIB
            );
        }
        println!("{table}");
        if source == Source::Rebalance {
            println!("(bytes: rebalance pushed_bytes of `dog cluster info`, not `dog node recovery` copied_bytes)");
        }
    }
}
