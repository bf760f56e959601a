//! Cluster figures, measured on real hosts in network namespaces (root only; never run in CI —
//! `cargo bench --no-run` only builds it).
//!
//! ```text
//! cargo build --release --bins
//! cargo bench -p sheep-tests --bench cluster -- form 3 8 16   # start-to-agreement time
//! cargo bench -p sheep-tests --bench cluster -- move 3 8      # objects moved by one more host
//! cargo bench -p sheep-tests --bench cluster -- fio           # bench/fio.sh on a 3-host cluster
//! cargo bench -p sheep-tests --bench cluster -- compare       # local file vs 1 host vs 3 hosts
//! cargo bench -p sheep-tests --bench cluster -- recovery 2    # recovery figures, 2 GiB of data
//! cargo bench -p sheep-tests --bench cluster -- recovery 2 catch-up   # the catch-up figures only
//! ```
//!
//! The daemons are the `sheepfs` beside this bench executable: `target/release/sheepfs`, under
//! `CARGO_TARGET_DIR` when it is set, so build them with the same `CARGO_TARGET_DIR`.
//!
//! `compare` (needs fio, jq, xfs_io, dbench, e2fsprogs; perf for `PROFILE`) measures, in one
//! run on this machine, a plain local file, a 1-host sheepfs (one copy; started by bench/fio.sh
//! in the root network namespace with `--no-mdns`) and host 0 of a 3-host, 3-copy cluster in
//! network namespaces, and prints one markdown table, job | local | 1 host | ratio | 3 hosts |
//! ratio (ratio = figure / local's): bench/fio.sh's fio jobs (libaio, direct=1, on a `SIZE`
//! volume filled once: seq-write and seq-read 1M iodepth 8 in MiB/s, rand-write and rand-read 4k
//! iodepth 32 in IOPS, sync-write 4k iodepth 1 fsync=1 in IOPS and p50 latencies of the write,
//! of the fsync and their sum), `dbench -s -S -t DBENCH_TIME 4` on ext4 over a loop device on a
//! file of each target, the time of a whole-file copy_file_range (`xfs_io copy_range`) of a
//! 10 GiB volume holding 1 GiB and of the filled fio volume (1 host and 3 hosts), then each
//! daemon's memory: VmHWM, and the peak and last VmRSS sampled every second during the load. It
//! runs bench/fio.sh twice — local file and 1 host (`LABEL=1host`), then the cluster
//! (`MOUNT=`host 0's mount, `--no-local`, `LABEL=3hosts`, `SHEEP_PIDS` naming the 3 daemons) —
//! each appending its figures to `OUT/results.tsv`, from which the table is made. Environment:
//! `RUNTIME` (20 s per job), `SIZE` (2G), `JOBS` (all five), `DBENCH_TIME` (30; 0 skips dbench),
//! `OUT` (a new `/var/tmp/sheep-compare-…`: results.tsv, table.md, fio's JSON and the daemons'
//! logs per target, `dog vdi list` of the cluster), `PROFILE=DIR` (perf profiles of the jobs
//! `PROFILE_JOBS` names, default `3hosts:rand-write 1host:sync-write`: see bench/fio.sh). Every
//! daemon, mount, loop device and namespace is removed at the end (bench/fio.sh's trap, and the
//! harness's guards).
//!
//! `recovery [GIB]` (4 hosts, 3 copies, `--failure-timeout 2`; needs fio) fills GIB (default 2)
//! from host 0, then measures and prints as one table: the recovery rate (GiB/min of object
//! copies made, from the epoch change to every host reporting its recovery complete) when a host
//! is lost and when a fresh one joins, unthrottled and with `dog node recovery set-throttle 50M`;
//! 4k random-read IOPS on host 0 (fio, libaio, iodepth 32, direct) before and during each
//! recovery; and the bytes the catch-up of a host away for 30 s of 4k random writes copied (with
//! `catch-up`, only this; `CATCH_UP_IOPS=N` limits those writes to N per second: unlimited,
//! fio's random map rewrites most blocks of a small volume in 30 s), and how many objects it
//! patched with their changed blocks only (a copy with more than half its blocks changed is
//! copied whole). It
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
        eprintln!("usage: cluster (form N... | move N... | fio | compare | recovery [GIB])");
        return;
    };
    let ns: Vec<usize> = args[1..].iter().filter_map(|a| a.parse().ok()).collect();
    match what.as_str() {
        "form" => ns.iter().for_each(|&n| form(n)),
        "move" => ns.iter().for_each(|&n| moved(n)),
        "fio" => fio(),
        "compare" => compare::run(),
        "recovery" => recovery::run(
            ns.first().map_or(2, |&n| n as u64),
            args.iter().any(|a| a == "catch-up"),
        ),
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
        .env("LABEL", "3hosts")
        .env("SHEEP_PIDS", compare::pids(&hosts))
        .status()
        .expect("bench/fio.sh");
    assert!(status.success(), "bench/fio.sh failed");
}

/// `compare`: see the module documentation.
mod compare {
    use sheep_tests::{bin, Host, Net};
    use std::collections::HashMap;
    use std::ffi::OsString;
    use std::fmt::Write as _;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/fio.sh");

    /// The columns of the table, after local: (LABEL in results.tsv, header).
    const TARGETS: [(&str, &str); 2] = [("1host", "1 host"), ("3hosts", "3 hosts")];

    /// `SHEEP_PIDS` for bench/fio.sh: `host0=PID host1=PID …`.
    pub fn pids(hosts: &[Host]) -> String {
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| format!("host{i}={}", h.pid()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn var(name: &str, default: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| default.to_owned())
    }

    /// Runs bench/fio.sh with `LABEL=label`, `RESULTS=out/results.tsv`, `KEEP_JSON=out/label`,
    /// `env` and `args`; returns true when it exits 0.
    fn fio_sh(out: &Path, label: &str, env: &[(&str, OsString)], args: &[&str]) -> bool {
        let mut cmd = Command::new("bash");
        cmd.arg(SCRIPT)
            .args(args)
            .env("LABEL", label)
            .env("RESULTS", out.join("results.tsv"))
            .env("KEEP_JSON", out.join(label));
        if std::env::var_os("PROFILE").is_some() && std::env::var_os("PROFILE_JOBS").is_none() {
            cmd.env("PROFILE_JOBS", "3hosts:rand-write 1host:sync-write");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        eprintln!("compare: {label}: bash {SCRIPT} {}", args.join(" "));
        let ok = cmd.status().is_ok_and(|s| s.success());
        if !ok {
            eprintln!("compare: bench/fio.sh failed for {label}");
        }
        ok
    }

    /// Copies a daemon log to `dest` and returns its warning and error lines.
    fn keep_log(log: &Path, dest: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let _ = std::fs::write(dest, &text);
        text.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"))
            .map(str::to_owned)
            .collect()
    }

    pub fn run() {
        let out = std::env::var_os("OUT").map_or_else(
            || {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                PathBuf::from(format!("/var/tmp/sheep-compare-{t}"))
            },
            PathBuf::from,
        );
        std::fs::create_dir_all(&out).expect("create OUT");
        let _ = std::fs::remove_file(out.join("results.tsv"));
        let dbench = var("DBENCH_TIME", "30") != "0";
        let mut args = vec![];
        if dbench {
            args.push("--dbench");
        }
        let mut failed = Vec::new();
        let mut complaints: Vec<(String, Vec<String>)> = Vec::new();

        // The local file and 1 host: a sheepfs that bench/fio.sh starts (root namespace,
        // --no-mdns).
        let sheepfs = bin("sheepfs");
        if !fio_sh(
            &out,
            "1host",
            &[("SHEEPFS", sheepfs.into_os_string())],
            &args,
        ) {
            failed.push("local + 1 host");
        }
        let log = out.join("1host").join("sheepfs.log");
        complaints.push(("1host".to_owned(), keep_log(&log, &out.join("1host.log"))));

        // 3 hosts, 3 copies, in network namespaces.
        {
            let net = Net::new(3);
            let hosts = Host::start_all(&net, &[]);
            for h in &hosts {
                h.wait_members(3);
            }
            args.push("--no-local");
            let env = [
                ("MOUNT", hosts[0].mount.clone().into_os_string()),
                ("SHEEP_PIDS", pids(&hosts).into()),
            ];
            if !fio_sh(&out, "3hosts", &env, &args) {
                failed.push("3 hosts");
            }
            let _ = std::fs::write(
                out.join("3hosts-vdi-list.json"),
                hosts[0].dog(&["vdi", "list", "--json"]).stdout,
            );
            for (i, h) in hosts.iter().enumerate() {
                let log = h.mount.parent().expect("mount dir").join("sheepfs.log");
                let lines = keep_log(&log, &out.join(format!("3hosts-host{i}.log")));
                complaints.push((format!("3hosts host{i}"), lines));
            }
        }

        let table = table(&out.join("results.tsv"));
        let _ = std::fs::write(out.join("table.md"), &table);
        println!("{table}");
        for (who, lines) in &complaints {
            if !lines.is_empty() {
                println!(
                    "* {who}: {} warning/error lines in its log, first:",
                    lines.len()
                );
                for l in lines.iter().take(5) {
                    println!("  `{}`", l.trim());
                }
            }
        }
        println!("* everything kept in {}", out.display());
        if !failed.is_empty() {
            println!("* FAILED: bench/fio.sh for {}", failed.join(", "));
            std::process::exit(1);
        }
    }

    /// Reads results.tsv (`TARGET<tab>KEY<tab>VALUE`) and makes the markdown table.
    fn table(results: &Path) -> String {
        let text = std::fs::read_to_string(results).unwrap_or_default();
        let mut v: HashMap<(String, String), String> = HashMap::new();
        for line in text.lines() {
            let mut f = line.splitn(3, '\t');
            if let (Some(t), Some(k), Some(x)) = (f.next(), f.next(), f.next()) {
                v.insert((t.to_owned(), k.to_owned()), x.to_owned());
            }
        }
        let num = |t: &str, k: &str| -> Option<f64> {
            v.get(&(t.to_owned(), k.to_owned()))?
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
        };
        let size = var("SIZE", "2G");
        let runtime = var("RUNTIME", "20");
        let dbench_time = var("DBENCH_TIME", "30");
        let rows: Vec<(String, &str, usize)> = vec![
            (format!("fill {size}, 1M qd8 (MiB/s)"), "fill.mibs", 0),
            ("seq-write 1M qd8 (MiB/s)".into(), "seq-write.mibs", 0),
            ("seq-read 1M qd8 (MiB/s)".into(), "seq-read.mibs", 0),
            ("rand-write 4k qd32 (IOPS)".into(), "rand-write.iops", 0),
            ("rand-read 4k qd32 (IOPS)".into(), "rand-read.iops", 0),
            (
                "sync-write 4k qd1 fsync=1 (IOPS)".into(),
                "sync-write.iops",
                0,
            ),
            (
                "sync-write p50 write (µs)".into(),
                "sync-write.p50_write_us",
                1,
            ),
            (
                "sync-write p50 fsync (µs)".into(),
                "sync-write.p50_fsync_us",
                1,
            ),
            (
                "sync-write p50 write + p50 fsync (µs)".into(),
                "sync-write.p50_write_fsync_us",
                1,
            ),
            (
                format!("dbench -s -S -t {dbench_time} 4, ext4 on a loop device (MB/s)"),
                "dbench.mbs",
                1,
            ),
            (
                format!(
                    "copy_range of a {} volume holding {} (s)",
                    var("COPY_SIZE", "10G"),
                    var("COPY_DATA", "1G")
                ),
                "copy.sparse_s",
                3,
            ),
            (
                format!("copy_range of the {size} fio volume, all written (s)"),
                "copy.full_s",
                3,
            ),
        ];
        let fmt =
            |x: Option<f64>, d: usize| x.map_or_else(|| "—".to_owned(), |x| format!("{x:.d$}"));
        let rev = Command::new("git")
            .args([
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "describe",
                "--always",
                "--dirty",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n## local file vs sheepfs 1 host (1 copy) vs 3 hosts (3 copies, network namespaces)\n\n\
             fio libaio direct=1, {size} volume, {runtime} s per job; sheepfs {rev}; kernel {}; {cores} cores\n",
            kernel.trim()
        );
        let mut head = "| job | local |".to_owned();
        for (_, h) in TARGETS {
            let _ = write!(head, " {h} | ratio |");
        }
        let _ = writeln!(
            s,
            "{head}\n|---|---:|{}",
            "---:|---:|".repeat(TARGETS.len())
        );
        for (label, key, d) in &rows {
            let local = num("local", key);
            let cells: Vec<Option<f64>> = TARGETS.iter().map(|(t, _)| num(t, key)).collect();
            if local.is_none() && cells.iter().all(Option::is_none) {
                continue;
            }
            let mut line = format!("| {label} | {} |", fmt(local, *d));
            for x in cells {
                let ratio = match (x, local) {
                    (Some(x), Some(l)) if l > 0.0 => format!("{:.2}", x / l),
                    _ => "—".to_owned(),
                };
                let _ = write!(line, " {} | {ratio} |", fmt(x, *d));
            }
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(
            s,
            "\n| sheepfs memory | VmHWM (MiB) | peak VmRSS under load (MiB) | last VmRSS under load (MiB) |\n|---|---:|---:|---:|"
        );
        let mib = |t: &str, k: &str| fmt(num(t, k).map(|kib| kib / 1024.0), 0);
        for (t, h) in TARGETS {
            for i in 0..3 {
                let host = format!("host{i}");
                if num(t, &format!("rss.{host}.peak_kib")).is_none() {
                    continue;
                }
                let _ = writeln!(
                    s,
                    "| {h}: {host} | {} | {} | {} |",
                    mib(t, &format!("rss.{host}.hwm_kib")),
                    mib(t, &format!("rss.{host}.peak_kib")),
                    mib(t, &format!("rss.{host}.end_kib"))
                );
            }
        }
        let _ = writeln!(
            s,
            "\n* ratio = figure / local's (for latencies and copy times lower is better).\n\
             * 'local' is O_DIRECT on this machine's disk; sheepfs's store files go through the \
             host page cache (a volatile write cache made durable by fsync): sync-write is the \
             like-for-like row.\n\
             * dbench and both copies ran after the fio jobs; 3 hosts: every figure from host 0's mount."
        );
        s
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
        fio_rated(path, rw, secs, size, None)
    }

    /// [`fio`], at most `rate_iops` I/Os per second when set.
    fn fio_rated(
        path: &std::path::Path,
        rw: &str,
        secs: u64,
        size: &str,
        rate_iops: Option<u64>,
    ) -> thread::JoinHandle<f64> {
        let mut args = vec![
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
        if let Some(rate) = rate_iops {
            args.push(format!("--rate_iops={rate}"));
        }
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

    /// With `catch_up_only`, only the catch-up figures (no host lost or joined before).
    pub fn run(gib: u64, catch_up_only: bool) {
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
        let throttling: &[bool] = if catch_up_only { &[] } else { &[false, true] };
        for &throttled in throttling {
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
        let catch_up_iops = std::env::var("CATCH_UP_IOPS")
            .ok()
            .and_then(|v| v.parse().ok());
        for region in [size.clone(), "256M".to_owned()] {
            hosts[away].kill9();
            for (i, h) in hosts.iter().enumerate() {
                if i != away {
                    h.wait_members(3);
                }
            }
            let writes = fio_rated(&path, "randwrite", 30, &region, catch_up_iops)
                .join()
                .expect("fio");
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
            let rec = hosts[away].recovery().unwrap_or_default();
            let field = |k: &str| rec[k].as_u64().unwrap_or(0);
            let kept = field("kept_bytes");
            println!(
                "recovery: catch-up (writes over {region}): received {:.3} GiB, kept {:.3} GiB found current; \
                 {} of {} objects received were patched ({} blocks, {:.3} GiB not copied)",
                returning as f64 / GIB,
                kept as f64 / GIB,
                field("patched"),
                field("received"),
                field("patched_blocks"),
                field("saved_bytes") as f64 / GIB,
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
