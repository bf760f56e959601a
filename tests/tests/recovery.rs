//! Recovery after failures, on real hosts in network namespaces (3 hosts, 3 copies unless
//! said): a host killed during writes, two hosts lost one after the other, a 2|1 partition, the
//! whole cluster killed at once (and restarted without one member), a full disk, injected I/O
//! errors and a flipped byte in an object file. Data is checked with patterns and with the
//! block-history checker of `sheep_tests::history` (no stale read, no lost acknowledged write,
//! no torn block).
//!
//! Timing assertions are liveness bounds only: I/O resumes within 10 s of a host's death, a
//! minority host answers EIO within `--io-timeout` plus a wide margin.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sheep_tests::file::{
    assert_same_bytes, must_fsync, must_open_direct, must_pread_direct, must_pwrite, pattern,
    AlignedBuf,
};
use sheep_tests::history::{self, must_check, now_ns, Config, Kind, Op, Worker};
use sheep_tests::{require, wait_until, Host, LoopFs, Net, Setup, MIB, OBJECT_SIZE};

const TOOLS: &[&str] = &["ip", "nsenter"];

/// `--failure-timeout` of every test: a dead host is removed after 2 s of silence.
const FAST: [&str; 2] = ["--failure-timeout", "2"];

/// `--io-timeout` of the partition test.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest one host's death may stall I/O on the others (the bound).
const RESUME_BOUND: Duration = Duration::from_secs(10);

/// How long a recovery, a rejoin or a restart may take before the test gives up.
const SLOW: Duration = Duration::from_secs(120);

const KIB: u64 = 1024;

/// Starts 3 hosts with `extra` and waits until each lists 3 members.
fn cluster(extra: &[&str]) -> (Net, Vec<Host>) {
    let net = Net::new(3);
    let hosts = Host::start_all(&net, extra);
    for h in &hosts {
        h.wait_members(3);
    }
    (net, hosts)
}

/// Returns true when host `h` says it is the sequencer (`dog node list --json`).
fn is_sequencer(h: &Host) -> bool {
    let v: Value =
        serde_json::from_str(&h.must_dog(&["node", "list", "--json"])).expect("node list json");
    v.as_array()
        .and_then(|m| m.iter().find(|m| m["local"].as_bool() == Some(true)))
        .is_some_and(|m| m["sequencer"].as_bool() == Some(true))
}

/// Returns the index of the sequencer.
fn sequencer(hosts: &[Host]) -> usize {
    hosts
        .iter()
        .position(is_sequencer)
        .expect("a host says it is the sequencer")
}

/// Waits up to `timeout` until `h` lists `n` live members.
fn wait_members_within(h: &Host, n: usize, timeout: Duration) {
    wait_until(
        timeout,
        &format!("host {} lists {n} members", h.index()),
        || h.members().len() == n,
    );
}

/// Returns the vid of VDI `name` (`dog vdi list --json`).
fn vid_of(h: &Host, name: &str) -> u32 {
    let v: Value =
        serde_json::from_str(&h.must_dog(&["vdi", "list", "--json"])).expect("vdi list json");
    let row = v
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["name"].as_str() == Some(name) && r["tag"].is_null())
        })
        .unwrap_or_else(|| panic!("no VDI {name} in {v}"));
    u32::try_from(row["vid"].as_u64().expect("vid")).expect("24-bit vid")
}

/// The file of data object `idx` of `vid` in `store` (objects/src/disk.rs).
fn object_file(store: &Path, vid: u32, idx: u64) -> PathBuf {
    store
        .join("obj")
        .join(format!("{vid:08x}"))
        .join(format!("{idx:08x}"))
}

/// One pattern per object: `len` bytes at the start of each of `objects`.
#[derive(Clone, Debug)]
struct Fill {
    seed: u64,
    objects: Vec<u64>,
    len: usize,
}

impl Fill {
    fn new(seed: u64, objects: impl IntoIterator<Item = u64>, len: u64) -> Fill {
        assert!(len.is_multiple_of(4096) && len <= OBJECT_SIZE);
        Fill {
            seed,
            objects: objects.into_iter().collect(),
            len: usize::try_from(len).expect("len"),
        }
    }

    fn data(&self, obj: u64) -> Vec<u8> {
        pattern(self.seed.wrapping_mul(1_000_003) ^ obj, self.len)
    }

    fn bytes(&self) -> u64 {
        self.objects.len() as u64 * self.len as u64
    }

    /// Writes every object's pattern with O_DIRECT, then fsyncs.
    fn write(&self, path: &Path) {
        let file = must_open_direct(path);
        for &obj in &self.objects {
            let buf = AlignedBuf::from_slice(&self.data(obj));
            must_pwrite(&file, obj * OBJECT_SIZE, buf.as_slice());
        }
        must_fsync(&file);
    }

    /// Reads every object's pattern back with O_DIRECT.
    fn verify(&self, path: &Path, what: &str) {
        for &obj in &self.objects {
            let got = must_pread_direct(path, obj * OBJECT_SIZE, self.len);
            assert_same_bytes(&got, &self.data(obj), obj * OBJECT_SIZE, what);
        }
    }

    /// Like [`Fill::verify`] on every host.
    fn verify_on(&self, hosts: &[&Host], name: &str, what: &str) {
        for h in hosts {
            self.verify(
                &h.path(name),
                &format!("{what}, read on host {}", h.index()),
            );
        }
    }
}

/// The blocks of the history workloads: 48 blocks 260 KiB apart (4 objects).
fn layout(worker: u32) -> Config {
    Config {
        stride: 65 * 4096,
        ..Config::new(worker, 48)
    }
}

/// Waits until `worker` has `n` successful ops that started after `after` (up to `timeout`).
/// Every host's daemon log for a failure message, after its threads' stacks if `stacks`.
fn diagnostics(hosts: &[Host], stacks: bool) -> String {
    hosts
        .iter()
        .map(|h| {
            let stacks = if stacks { h.stacks() } else { String::new() };
            format!("host {}:\n{stacks}\n{}", h.index(), h.daemon_log())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until `worker` made `n` successful ops of `kind` that started after `after`; on a
/// timeout the failure shows what it did meanwhile, and the stacks and logs of `hosts`.
fn wait_progress(
    worker: &Worker,
    hosts: &[Host],
    n: usize,
    after: u64,
    kind: Option<Kind>,
    timeout: Duration,
) {
    let done = || {
        worker
            .ops()
            .iter()
            .filter(|o| o.ok() && o.start > after && kind.is_none_or(|k| o.kind == k))
            .count()
            >= n
    };
    if sheep_tests::poll_until(timeout, done) {
        return;
    }
    // What it did meanwhile: ops since `after` by kind and outcome, the last ones, and the op
    // it is in now.
    let ops: Vec<Op> = worker.ops().into_iter().filter(|o| o.end > after).collect();
    let mut outcomes = std::collections::BTreeMap::new();
    for o in &ops {
        *outcomes
            .entry(format!("{:?} {:?}", o.kind, o.result))
            .or_insert(0usize) += 1;
    }
    let last: Vec<String> = ops.iter().rev().take(5).map(ToString::to_string).collect();
    panic!(
        "timed out after {timeout:?} waiting until history worker {} makes {n} successful \
         {kind:?} ops; since then: {outcomes:?}; the last ones: {last:#?}; in flight now: {:?}\n{}",
        worker.id(),
        worker.in_flight(),
        diagnostics(hosts, true)
    );
}

/// Reads every block of the history layout on every host (fresh opens), asserts that every
/// host reads the same values and returns the reads (workers 100 + host index).
fn final_reads(hosts: &[&Host], name: &str) -> Vec<Op> {
    let mut all = Vec::new();
    let mut first: Option<(usize, std::collections::BTreeMap<u64, history::Value>)> = None;
    for h in hosts {
        let worker = 100 + u32::try_from(h.index()).expect("index");
        let reads = history::read_all(&h.path(name), worker, &layout(worker));
        let failed: Vec<String> = reads
            .iter()
            .filter(|o| !o.ok())
            .map(ToString::to_string)
            .collect();
        assert!(
            failed.is_empty(),
            "final reads on host {} failed: {failed:#?}",
            h.index()
        );
        let values = history::values_read(&reads);
        match &first {
            None => first = Some((h.index(), values)),
            Some((i, v)) => assert_eq!(
                &values,
                v,
                "hosts {i} and {} read different blocks",
                h.index()
            ),
        }
        all.extend(reads);
    }
    all
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Returns `dog node recovery --json` of `h` once it reports its recovery for the epoch it is
/// at done and complete; panics with the last answer after [`SLOW`].
fn wait_recovered(h: &Host) -> Value {
    let deadline = Instant::now() + SLOW;
    let mut last = None;
    loop {
        let out = h.dog(&["node", "recovery", "--json"]);
        assert!(
            out.status.code() != Some(2),
            "`dog node recovery --json` is not there: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let epoch = h.epoch();
        let rec = h.recovery();
        if let (Some(epoch), Some(rec)) = (epoch, &rec) {
            let at = rec["epoch"].as_u64() == Some(epoch);
            let finished =
                rec["done"].as_bool() == Some(true) && rec["complete"].as_bool() == Some(true);
            if at && finished {
                return rec.clone();
            }
        }
        last = rec.or(last);
        assert!(
            Instant::now() < deadline,
            "host {} did not finish recovering within {SLOW:?}; last `dog node recovery --json`: {last:?}\n{}",
            h.index(),
            h.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn u64_field(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// (checked, repaired, lost) of `dog vdi check --json` / `dog cluster check --json`: the first
/// numeric field, at any depth, whose name contains the word.
fn check_summary(json: &str) -> (u64, u64, u64) {
    // `dog vdi check --json`: {"objects": checked, "repaired": n, "lost": [oids], "failed": [..]}
    let v: Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("check output is not JSON: {e}\n{json}"));
    let count = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("no `{k}` count in {v}"))
    };
    let lost = v["lost"]
        .as_array()
        .unwrap_or_else(|| panic!("no `lost` list in {v}"))
        .len() as u64;
    assert!(
        v["failed"].as_array().is_some_and(Vec::is_empty),
        "objects the check could not check: {v}"
    );
    (count("objects"), count("repaired"), lost)
}

// ---------------------------------------------------------------------------------------------
// a. A host killed during writes.

#[test]
fn a_host_killed_during_writes_stalls_io_under_10_s_and_rejoins_with_everything() {
    if !require(TOOLS) {
        return;
    }
    let t0 = Instant::now();
    let (_net, mut hosts) = cluster(&FAST);
    // The sequencer: the hardest host to lose, it orders the cluster.
    let victim = sequencer(&hosts);
    let (writer, reader) = ((victim + 1) % 3, (victim + 2) % 3);
    hosts[writer].must_dog(&["vdi", "create", "vol", "64M"]);
    let path = hosts[writer].path("vol");
    let workers = vec![
        Worker::start(&path, layout(1)),
        Worker::start(&path, layout(2)),
        Worker::start(
            &hosts[reader].path("vol"),
            Config {
                read_percent: 100,
                ..layout(3)
            },
        ),
    ];
    for w in &workers {
        wait_progress(w, &hosts, 20, 0, None, Duration::from_secs(60));
    }
    std::thread::sleep(Duration::from_secs(3));
    let kill_at = now_ns();
    hosts[victim].kill9();
    for i in [writer, reader] {
        hosts[i].wait_members(2);
    }
    let recorded = now_ns();
    // Go on for 15 s after the kill, and until the writers did something after the bound.
    let bound = kill_at + u64::try_from(RESUME_BOUND.as_nanos()).expect("ns");
    for w in &workers[..2] {
        wait_progress(
            w,
            &hosts,
            5,
            bound,
            Some(Kind::Write),
            Duration::from_secs(60),
        );
    }
    std::thread::sleep(Duration::from_secs(5));
    let mut ops = Vec::new();
    for w in workers {
        ops.extend(w.finish(Duration::from_secs(60)));
    }
    let failed: Vec<String> = ops
        .iter()
        .filter(|o| !o.ok())
        .take(10)
        .map(ToString::to_string)
        .collect();
    assert!(
        failed.is_empty(),
        "I/O failed on a surviving host: {failed:#?}"
    );
    let (longest, op) = history::longest_op_between(&ops, kill_at, now_ns()).expect("ops");
    eprintln!(
        "killed host {victim} (sequencer); failure recorded {:.2} s later; longest op around the kill {longest:?}: {op}",
        secs(recorded - kill_at)
    );
    assert!(
        longest < RESUME_BOUND,
        "I/O stalled {longest:?} (> {RESUME_BOUND:?}) around the kill: {op}"
    );
    must_check(&ops, "the writes and reads around the kill");

    // The host comes back, rejoins and serves what was written while it was away.
    hosts[victim].restart(&FAST);
    for h in &hosts {
        wait_members_within(h, 3, SLOW);
    }
    let all: Vec<&Host> = hosts.iter().collect();
    ops.extend(final_reads(&all, "vol"));
    must_check(&ops, "the workload and every host's final reads");
    eprintln!("done in {:?}", t0.elapsed());
}

#[test]
fn a_host_back_from_a_short_outage_copies_only_what_changed() {
    if !require(TOOLS) {
        return;
    }
    let t0 = Instant::now();
    let (_net, mut hosts) = cluster(&FAST);
    let victim = (sequencer(&hosts) + 1) % 3;
    let writer = (victim + 1) % 3;
    hosts[writer].must_dog(&["vdi", "create", "vol", "1G"]);
    let path = hosts[writer].path("vol");
    // Many objects before the outage...
    let before = Fill::new(1, 0..48, MIB);
    before.write(&path);
    hosts[victim].kill9();
    for i in (0..3).filter(|&i| i != victim) {
        hosts[i].wait_members(2);
    }
    // ...a few while the host is away: two rewritten, two new.
    let changed = Fill::new(2, [0, 1, 100, 101], 256 * KIB);
    changed.write(&path);
    hosts[victim].restart(&FAST);
    for h in &hosts {
        wait_members_within(h, 3, SLOW);
    }
    let rec = wait_recovered(&hosts[victim]);
    for h in &hosts {
        eprintln!(
            "host {}{}: dog node recovery --json: {}",
            h.index(),
            if h.index() == victim {
                " (returned)"
            } else {
                ""
            },
            h.recovery().unwrap_or_default()
        );
    }
    let (copied, copied_bytes, kept) = (
        u64_field(&rec, "copied"),
        u64_field(&rec, "copied_bytes"),
        u64_field(&rec, "kept"),
    );
    eprintln!(
        "the returning host copied {copied} objects ({copied_bytes} bytes) and kept {kept}; \
         {} objects changed while it was away, {} were written before",
        changed.objects.len(),
        before.objects.len()
    );
    assert!(
        copied >= changed.objects.len() as u64,
        "it copied {copied} objects, fewer than the {} that changed: {rec}",
        changed.objects.len()
    );
    assert!(
        copied < kept,
        "not incremental: copied {copied} objects and kept {kept}: {rec}"
    );
    assert!(
        copied_bytes < before.bytes(),
        "copied {copied_bytes} bytes, as much as was written before the outage: {rec}"
    );
    // The two rewritten objects are patched with their 256 KiB that changed (not their whole
    // MiB), the two new ones pushed whole: about what was written during the outage.
    let patched = u64_field(&rec, "patched");
    assert!(
        patched >= 2,
        "the rewritten objects were not patched: {rec}"
    );
    assert!(
        copied_bytes < changed.bytes() + 64 * KIB,
        "copied {copied_bytes} bytes for {} bytes written during the outage: {rec}",
        changed.bytes()
    );
    // Every host, the returning one first, reads the latest data.
    let unchanged = Fill::new(1, 2..48, MIB);
    let order = [victim, (victim + 1) % 3, (victim + 2) % 3];
    let all: Vec<&Host> = order.iter().map(|&i| &hosts[i]).collect();
    changed.verify_on(&all, "vol", "objects written during the outage");
    unchanged.verify_on(&all, "vol", "objects written before the outage");
    eprintln!("done in {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------------
// b. Two hosts lost one after the other.

#[test]
fn losing_two_hosts_one_after_the_other_leaves_every_byte_readable_on_the_last() {
    if !require(TOOLS) {
        return;
    }
    let t0 = Instant::now();
    let (_net, mut hosts) = cluster(&FAST);
    // The sequencer survives: {A, B} -> {A} is exactly half of the view, with the sequencer.
    let survivor = sequencer(&hosts);
    let (first, second) = ((survivor + 1) % 3, (survivor + 2) % 3);
    hosts[first].must_dog(&["vdi", "create", "vol", "256M"]);
    let fill = Fill::new(7, 0..24, MIB);
    fill.write(&hosts[first].path("vol"));
    let small = Fill::new(8, [40, 50], 4 * KIB);
    small.write(&hosts[second].path("vol"));
    let epoch = hosts[survivor].epoch().expect("epoch");

    hosts[first].kill9();
    for i in [survivor, second] {
        hosts[i].wait_members(2);
    }
    let moved = hosts[survivor].epoch().expect("epoch");
    assert!(moved > epoch, "the epoch did not move: {epoch} -> {moved}");
    hosts[second].kill9();
    hosts[survivor].wait_members(1);

    let last = [&hosts[survivor]];
    fill.verify_on(&last, "vol", "data written before both failures");
    small.verify_on(&last, "vol", "data written before both failures");
    // It holds a quorum (the tie rule): it still writes.
    let after = Fill::new(9, [60], 64 * KIB);
    after.write(&hosts[survivor].path("vol"));
    after.verify_on(&last, "vol", "data written by the last host");
    eprintln!("done in {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------------
// c. A 2|1 partition.

#[test]
fn a_partitioned_minority_answers_eio_and_rejoins_by_itself_after_the_heal() {
    if !require(TOOLS) {
        return;
    }
    let t0 = Instant::now();
    let io = IO_TIMEOUT.as_secs().to_string();
    let args = ["--failure-timeout", "2", "--io-timeout", &io];
    let (net, mut hosts) = cluster(&args);
    // The sequencer ends up alone: the majority also has to replace it.
    let minority = sequencer(&hosts);
    let (a, b) = ((minority + 1) % 3, (minority + 2) % 3);
    hosts[a].must_dog(&["vdi", "create", "vol", "64M"]);
    let major = Worker::start(&hosts[a].path("vol"), layout(1));
    let minor = Worker::start(&hosts[minority].path("vol"), layout(2));
    let reader = Worker::start(
        &hosts[b].path("vol"),
        Config {
            read_percent: 100,
            ..layout(3)
        },
    );
    for w in [&major, &minor, &reader] {
        wait_progress(w, &hosts, 10, 0, None, Duration::from_secs(60));
    }

    net.split(&[minority]);
    // From here on the minority is cut off (taken after `ip` returns).
    let split_at = now_ns();
    // The minority blocks and fails with EIO after --io-timeout; the majority goes on.
    wait_progress(
        &major,
        &hosts,
        10,
        split_at,
        Some(Kind::Write),
        Duration::from_secs(60),
    );
    wait_until(
        IO_TIMEOUT * 3 + Duration::from_secs(30),
        "a write on the minority side fails",
        || {
            minor
                .ops()
                .iter()
                .any(|o| o.kind == Kind::Write && o.start >= split_at && !o.ok())
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let heal_at = now_ns();
    net.heal_all();
    for h in &hosts {
        wait_members_within(h, 3, SLOW);
    }
    let rejoined_at = now_ns();
    assert!(
        hosts[minority].running(),
        "the minority's daemon exited\n{}",
        hosts[minority].log()
    );
    std::thread::sleep(Duration::from_secs(5));
    let finish = IO_TIMEOUT + Duration::from_secs(60);
    let (major, minor, reader) = (
        major.finish(finish),
        minor.finish(finish),
        reader.finish(finish),
    );

    // The minority: nothing written after the split was acknowledged before the heal, and
    // what failed failed with EIO, within --io-timeout and a wide margin.
    let during = |o: &&Op| o.end >= split_at && o.start <= heal_at;
    for o in minor.iter().filter(during) {
        if o.kind == Kind::Write && o.start >= split_at && o.end <= heal_at {
            assert!(!o.ok(), "the minority acknowledged a write: {o}");
        }
        if let Err(e) = o.result {
            assert_eq!(e, libc::EIO, "the minority failed with another error: {o}");
        }
        assert!(
            o.latency() <= IO_TIMEOUT + Duration::from_secs(20),
            "a minority op blocked longer than --io-timeout ({IO_TIMEOUT:?}) allows: {o}"
        );
    }
    let eio = minor
        .iter()
        .filter(during)
        .filter(|o| o.result == Err(libc::EIO))
        .count();
    assert!(eio > 0, "no EIO on the minority side");
    // The majority: no error, no op stalled beyond the bound.
    for o in major.iter().chain(&reader) {
        assert!(o.ok(), "an op failed on the majority side: {o}");
    }
    let majority_ops = [major.clone(), reader.clone()].concat();
    let (longest, op) =
        history::longest_op_between(&majority_ops, split_at, heal_at).expect("majority ops");
    assert!(
        longest < RESUME_BOUND,
        "the majority stalled {longest:?} after the split: {op}"
    );
    let minor_after = minor
        .iter()
        .filter(|o| o.ok() && o.start > rejoined_at)
        .count();
    eprintln!(
        "split {:.1} s, healed after {:.1} s, minority rejoined {:.1} s after the heal; \
         minority: {eio} EIO during the split, {minor_after} ops ok after it rejoined; \
         majority: longest op {longest:?}",
        secs(split_at),
        secs(heal_at - split_at),
        secs(rejoined_at - heal_at)
    );

    // Every host reads the same bytes, and the combined history holds.
    let all: Vec<&Host> = hosts.iter().collect();
    let mut ops = [major, minor, reader].concat();
    ops.extend(final_reads(&all, "vol"));
    must_check(
        &ops,
        "both sides of the partition and every host's final reads",
    );
    let _ = &mut hosts;
    eprintln!("done in {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------------
// d. The whole cluster killed at once.

/// Kills every host with SIGKILL, one right after the other (well within a failure timeout).
fn kill_all(hosts: &mut [Host]) {
    for h in hosts.iter_mut() {
        h.kill9();
    }
}

#[test]
fn a_whole_cluster_killed_at_once_comes_back_with_every_acknowledged_byte() {
    if !require(TOOLS) {
        return;
    }
    let t0 = Instant::now();
    let (_net, mut hosts) = cluster(&FAST);
    hosts[0].must_dog(&["vdi", "create", "vol", "256M"]);
    hosts[1].must_dog(&["vdi", "create", "other", "64M"]);
    let fill = Fill::new(11, 0..16, MIB);
    fill.write(&hosts[0].path("vol"));
    let fill2 = Fill::new(12, [0, 3, 7], 128 * KIB);
    fill2.write(&hosts[1].path("other"));
    let more = Fill::new(13, [20, 21], 4 * KIB);
    more.write(&hosts[2].path("vol"));

    kill_all(&mut hosts);
    for h in &mut hosts {
        h.relaunch(&FAST);
    }
    for h in &mut hosts {
        h.wait_ready();
    }
    for h in &hosts {
        wait_members_within(h, 3, SLOW);
    }
    let all: Vec<&Host> = hosts.iter().collect();
    fill.verify_on(&all, "vol", "fsynced before the whole cluster was killed");
    more.verify_on(&all, "vol", "fsynced before the whole cluster was killed");
    fill2.verify_on(&all, "other", "fsynced before the whole cluster was killed");
    eprintln!("done in {:?}", t0.elapsed());
}

/// Returns true when `h` is waiting for the missing members of the last epoch: its mount is
/// not up, or `dog cluster info` says it waits.
fn waiting(h: &mut Host) -> bool {
    if !h.mounted() {
        return true;
    }
    let out = h.dog(&["cluster", "info", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let status = v["status"].as_str().unwrap_or("").to_lowercase();
    ["wait", "quorum", "recover"]
        .iter()
        .any(|w| status.contains(w))
}

#[test]
fn after_a_whole_cluster_stop_two_hosts_wait_for_the_third_until_recover_force() {
    if !require(TOOLS) {
        return;
    }
    let t0 = Instant::now();
    let (_net, mut hosts) = cluster(&FAST);
    hosts[0].must_dog(&["vdi", "create", "vol", "256M"]);
    let fill = Fill::new(21, 0..8, MIB);
    fill.write(&hosts[0].path("vol"));

    kill_all(&mut hosts);
    for h in &mut hosts[..2] {
        h.relaunch(&FAST);
    }
    for h in &hosts[..2] {
        wait_until(
            Duration::from_secs(60),
            &format!("host {}'s admin socket answers while it waits", h.index()),
            || h.dog(&["cluster", "info", "--json"]).status.success(),
        );
    }
    // Well past the discovery window and the failure timeout: they still wait.
    std::thread::sleep(Duration::from_secs(8));
    for h in &mut hosts[..2] {
        let info = h.dog(&["cluster", "info"]);
        eprintln!(
            "host {} while the third is missing: mounted {}\n{}",
            h.index(),
            h.mounted(),
            String::from_utf8_lossy(&info.stdout)
        );
        assert!(
            waiting(h),
            "host {} did not wait for the missing member",
            h.index()
        );
    }
    hosts[0].must_dog(&["cluster", "recover", "force"]);
    for h in &mut hosts[..2] {
        h.wait_ready();
    }
    for h in &hosts[..2] {
        wait_members_within(h, 2, SLOW);
    }
    let two: Vec<&Host> = hosts[..2].iter().collect();
    fill.verify_on(&two, "vol", "written before the stop, after recover force");
    let after = Fill::new(22, [1, 9, 10], 256 * KIB);
    after.write(&hosts[1].path("vol"));
    after.verify_on(&two, "vol", "written after recover force");

    // The third host comes back later and catches up.
    hosts[2].relaunch(&FAST);
    hosts[2].wait_ready();
    for h in &hosts {
        wait_members_within(h, 3, SLOW);
    }
    let third = [&hosts[2]];
    after.verify_on(&third, "vol", "written while the third host was away");
    Fill::new(21, [0, 2, 3, 4, 5, 6, 7], MIB).verify_on(&third, "vol", "written before the stop");
    eprintln!("done in {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------------
// e. A full disk.

/// Writes 1 MiB pieces of a pattern from offset 0 of `path` (O_DIRECT) until an error or
/// `limit`, on a thread of its own; returns the bytes written and the error, panicking if the
/// writer is stuck for `timeout`.
fn write_until_error(path: &Path, limit: u64, timeout: Duration) -> (u64, Option<std::io::Error>) {
    let path = path.to_path_buf();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let file = must_open_direct(&path);
        let chunk = AlignedBuf::from_slice(&pattern(99, 1 << 20));
        let mut done = 0;
        let mut err = None;
        while done < limit {
            match std::os::unix::fs::FileExt::write_at(&file, chunk.as_slice(), done) {
                Ok(n) => done += n as u64,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let _ = tx.send((done, err));
    });
    rx.recv_timeout(timeout)
        .unwrap_or_else(|_| panic!("the writer hung: no answer within {timeout:?}"))
}

#[test]
fn a_full_store_on_one_host_gives_the_writer_enospc_and_damages_nothing() {
    if !require(&["ip", "nsenter", "mkfs.ext4", "losetup"]) {
        return;
    }
    let t0 = Instant::now();
    // Declared first, dropped last: after the daemon that uses it.
    let small = LoopFs::new(96);
    let net = Net::new(3);
    let full = 2;
    let setups = [
        Setup::args(&FAST),
        Setup::args(&FAST),
        Setup::args(&FAST).store(&small.path().join("store")),
    ];
    let hosts = Host::start_all_custom(&net, &setups);
    for h in &hosts {
        h.wait_members(3);
    }
    hosts[0].must_dog(&["vdi", "create", "kept", "64M"]);
    hosts[0].must_dog(&["vdi", "create", "filler", "1G"]);
    let kept = Fill::new(31, 0..6, OBJECT_SIZE);
    kept.write(&hosts[0].path("kept"));

    let (written, err) = write_until_error(
        &hosts[0].path("filler"),
        512 * MIB,
        Duration::from_secs(300),
    );
    let err = err.expect("512 MiB into a cluster with a 96 MiB host must fail");
    eprintln!("the writer got `{err}` after {} MiB", written / MIB);
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOSPC),
        "{err} after {written} bytes (want ENOSPC)"
    );
    assert!(written >= 16 * MIB, "ENOSPC after only {written} bytes");

    let all: Vec<&Host> = hosts.iter().collect();
    kept.verify_on(&all, "kept", "written before the disk filled");
    wait_until(
        Duration::from_secs(10),
        "the full host reports full in `dog node recovery --json`",
        || {
            hosts[full]
                .recovery()
                .is_some_and(|r| r["full"].as_bool() == Some(true))
        },
    );
    eprintln!("full host: {}", hosts[full].recovery().unwrap_or_default());
    drop(hosts);
    drop(net);
    drop(small);
    eprintln!("done in {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------------
// f. Injected I/O errors.

fn set_faults(file: &Path, lines: &str) {
    std::fs::write(file, lines).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    // The store re-reads it every ~200 ms.
    std::thread::sleep(Duration::from_millis(1000));
}

/// Runs a history worker on each of `hosts` (on VDI `name`, worker ids from `first`) for
/// `secs`, and returns their ops.
fn run_workers(hosts: &[&Host], name: &str, first: u32, secs: u64) -> Vec<Op> {
    let workers: Vec<Worker> = hosts
        .iter()
        .zip(first..)
        .map(|(h, id)| Worker::start(&h.path(name), layout(id)))
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    workers
        .into_iter()
        .flat_map(|w| w.finish(Duration::from_secs(90)))
        .collect()
}

#[test]
fn injected_io_errors_on_one_host_lose_no_acknowledged_write_and_reads_stay_correct() {
    if !require(TOOLS) {
        return;
    }
    let t0 = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = dir.path().join("faults");
    std::fs::write(&faults, "").expect("fault file");
    let faults_arg = faults.to_str().expect("utf8").to_owned();
    let net = Net::new(3);
    let bad = 2;
    let setups = [
        Setup::args(&FAST),
        Setup::args(&FAST),
        Setup::args(&FAST).arg(&["--fault-file", &faults_arg]),
    ];
    let hosts = Host::start_all_custom(&net, &setups);
    for h in &hosts {
        h.wait_members(3);
    }
    hosts[0].must_dog(&["vdi", "create", "vol", "64M"]);
    hosts[0].must_dog(&["vdi", "create", "hist", "64M"]);
    let fill = Fill::new(41, 0..8, MIB);
    fill.write(&hosts[0].path("vol"));
    let all: Vec<&Host> = hosts.iter().collect();
    let vid = vid_of(&hosts[0], "vol");

    // Reads: one object, then every object, fails on the bad host's disk.
    let oid = (u64::from(vid) << 32) | 3;
    set_faults(&faults, &format!("eio read {oid:016x}\n"));
    fill.verify_on(&all, "vol", "with reads of object 3 failing on one host");
    set_faults(&faults, "eio read *\n");
    fill.verify_on(&all, "vol", "with every read failing on one host");

    // Writes failing on one host, then everything: whatever the writers are told, nothing
    // acknowledged may be lost and every read must be explained.
    let pair = [&hosts[0], &hosts[bad]];
    let mut ops = Vec::new();
    for (phase, lines) in [(1u32, "eio write *\n"), (2, "eio all\n")] {
        set_faults(&faults, lines);
        let got = run_workers(&pair, "hist", phase * 10, 8);
        let summary = history::check(&got).map(|s| s.to_string());
        eprintln!("with `{}` on host {bad}: {summary:?}", lines.trim());
        ops.extend(got);
        set_faults(&faults, "");
        ops.extend(final_reads(&all, "hist"));
        must_check(&ops, &format!("the workloads up to `{}`", lines.trim()));
    }
    fill.verify_on(&all, "vol", "after the faults were cleared");
    eprintln!("done in {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------------
// g. A flipped byte in an object file.

/// Flips the byte at `offset` of `file` in place (through the page cache, as the store reads
/// it) and returns its original value.
fn flip_byte(file: &Path, offset: u64) -> u8 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset)
        .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    f.write_all_at(&[b[0] ^ 0x5a], offset)
        .unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    b[0]
}

fn byte_at(file: &Path, offset: u64) -> u8 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(file).unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset)
        .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    b[0]
}

#[test]
fn a_flipped_byte_in_one_copy_is_never_served_and_check_repairs_it() {
    if !require(TOOLS) {
        return;
    }
    let t0 = Instant::now();
    let (_net, hosts) = cluster(&FAST);
    hosts[0].must_dog(&["vdi", "create", "vol", "64M"]);
    let fill = Fill::new(51, 0..8, MIB);
    fill.write(&hosts[0].path("vol"));
    let vid = vid_of(&hosts[0], "vol");
    let all: Vec<&Host> = hosts.iter().collect();
    let at = 3 * 4096 + 100;
    let good = |obj: u64| fill.data(obj)[usize::try_from(at).expect("offset")];
    for h in &hosts {
        for obj in 0..8 {
            let f = object_file(&h.store, vid, obj);
            assert!(f.is_file(), "no copy of object {obj} at {}", f.display());
        }
    }

    // A read: served from a good copy on every host, the bad copy repaired.
    let file1 = object_file(&hosts[1].store, vid, 1);
    assert_eq!(flip_byte(&file1, at), good(1));
    fill.verify_on(
        &[&hosts[1], &hosts[0], &hosts[2]],
        "vol",
        "object 1 flipped on host 1",
    );
    wait_until(
        Duration::from_secs(10),
        "the read to repair the bad copy",
        || byte_at(&file1, at) == good(1),
    );

    // `dog vdi check`: finds and repairs a flipped byte nobody read; a second finds nothing.
    let file2 = object_file(&hosts[2].store, vid, 5);
    flip_byte(&file2, at);
    let first = hosts[0].must_dog(&["vdi", "check", "vol", "--json"]);
    eprintln!("dog vdi check vol (one flipped copy): {first}");
    let (checked, repaired, lost) = check_summary(&first);
    assert!(checked >= 8, "checked {checked} objects of 8: {first}");
    assert_eq!((repaired, lost), (1, 0), "{first}");
    assert_eq!(
        byte_at(&file2, at),
        good(5),
        "the check did not repair the copy"
    );
    let second = hosts[1].must_dog(&["vdi", "check", "vol", "--json"]);
    let (_, repaired, lost) = check_summary(&second);
    assert_eq!((repaired, lost), (0, 0), "a second check: {second}");

    // `dog cluster check` likewise.
    let file0 = object_file(&hosts[0].store, vid, 6);
    flip_byte(&file0, at);
    let out = hosts[2].must_dog(&["cluster", "check", "--json"]);
    eprintln!("dog cluster check (one flipped copy): {out}");
    let (_, repaired, lost) = check_summary(&out);
    assert_eq!((repaired, lost), (1, 0), "{out}");
    let out = hosts[2].must_dog(&["cluster", "check", "--json"]);
    let (_, repaired, lost) = check_summary(&out);
    assert_eq!((repaired, lost), (0, 0), "a second cluster check: {out}");

    fill.verify_on(&all, "vol", "after the repairs");
    eprintln!("done in {:?}", t0.elapsed());
}

/// Runs fio with `args` (plus JSON output) and returns the largest completion latency it saw.
fn fio_json(args: &[String]) -> Duration {
    let out = std::process::Command::new("fio")
        .args(args)
        .arg("--output-format=json")
        .output()
        .expect("run fio");
    assert!(
        out.status.success(),
        "fio {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("fio output: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let job = &v["jobs"][0];
    let max_ns = ["write", "read"]
        .iter()
        .filter_map(|k| job[*k]["clat_ns"]["max"].as_f64())
        .fold(0.0f64, f64::max);
    Duration::from_secs_f64(max_ns / 1e9)
}

/// The text of a panic's payload.
fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".to_owned())
}

/// Runs `f`; if it panics, panics again with every host's daemon log added.
fn with_logs<T>(hosts: &[Host], f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|e| panic!("{}\n{}", panic_text(&e), diagnostics(hosts, false)))
}

#[test]
fn a_host_killed_during_fio_verify_stalls_io_under_10_s_and_verification_passes() {
    if !require(&["ip", "nsenter", "fio"]) {
        return;
    }
    let (_net, mut hosts) = cluster(&FAST);
    let victim = sequencer(&hosts);
    let (writer, other) = ((victim + 1) % 3, (victim + 2) % 3);
    hosts[writer].must_dog(&["vdi", "create", "fio", "64M"]);
    let job = |h: &Host, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--name=verify",
            "--rw=randwrite",
            "--bs=4k",
            "--size=48M",
            "--ioengine=libaio",
            "--direct=1",
            "--iodepth=8",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--randseed=11",
            // About 6 s of writes, so the kill lands in the middle of them.
            "--rate_iops=2000",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        v.push(format!("--filename={}", h.path("fio").display()));
        v.extend(extra.iter().map(ToString::to_string));
        v
    };
    // fio writes 48 MiB of 4k blocks with verification headers and reads them all back;
    // the sequencer's host is killed once the writes are under way.
    let args = job(&hosts[writer], &[]);
    let fio = std::thread::spawn(move || fio_json(&args));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !fio.is_finished(),
        "fio finished before the kill: make it longer"
    );
    hosts[victim].kill9();
    let killed = Instant::now();
    let longest = fio
        .join()
        .unwrap_or_else(|e| panic!("{}\n{}", panic_text(&e), diagnostics(&hosts, false)));
    assert!(
        killed.elapsed() > Duration::from_secs(2),
        "fio ended right after the kill: the kill did not land during its writes"
    );
    eprintln!("fio --verify passed on host {writer}; longest completion {longest:?} (host {victim} killed)");
    assert!(
        longest < RESUME_BOUND,
        "an I/O took {longest:?} (> {RESUME_BOUND:?}) around the kill"
    );
    // The other survivor and the returning host verify the same data.
    with_logs(&hosts, || fio_json(&job(&hosts[other], &["--verify_only"])));
    hosts[victim].restart(&FAST);
    for h in &hosts {
        wait_members_within(h, 3, SLOW);
    }
    with_logs(&hosts, || {
        fio_json(&job(&hosts[victim], &["--verify_only"]))
    });
    let r = wait_recovered(&hosts[victim]);
    eprintln!("returning host's recovery: {r}");
}

#[test]
fn a_host_whose_store_keeps_failing_leaves_the_placement_and_its_copies_are_rebuilt_elsewhere() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = dir.path().join("faults");
    std::fs::write(&faults, "").expect("fault file");
    let faults_arg = faults.to_str().expect("utf8").to_owned();
    // Four hosts, three copies: a host that drops out leaves room to rebuild elsewhere.
    let net = Net::new(4);
    let bad = 3;
    let mut setups: Vec<Setup> = (0..4).map(|_| Setup::args(&FAST)).collect();
    setups[bad] = Setup::args(&FAST).arg(&["--fault-file", &faults_arg]);
    let hosts = Host::start_all_custom(&net, &setups);
    for h in &hosts {
        h.wait_members(4);
    }
    hosts[0].must_dog(&["vdi", "create", "vol", "64M"]);
    let objects = 12u64;
    let fill = Fill::new(51, 0..objects, MIB);
    fill.write(&hosts[0].path("vol"));
    let vid = vid_of(&hosts[0], "vol");
    let good: Vec<&Host> = hosts.iter().filter(|h| h.index() != bad).collect();
    let copies_on_good = |idx: u64| {
        good.iter()
            .filter(|h| object_file(&h.store, vid, idx).exists())
            .count()
    };
    let held_by_bad = (0..objects)
        .filter(|i| object_file(&hosts[bad].store, vid, *i).exists())
        .count();
    assert!(
        held_by_bad > 0,
        "the bad host holds no copy: nothing to test"
    );
    // Its disk fails: every store call gives EIO. Reads through its mount still work (from
    // the other copies) and, after a few errors, it takes itself out of the data placement.
    set_faults(&faults, "eio all\n");
    let all: Vec<&Host> = hosts.iter().collect();
    fill.verify_on(&all, "vol", "with the bad host's store failing");
    wait_until(SLOW, "every object has 3 copies on the good hosts", || {
        (0..objects).all(|i| copies_on_good(i) == 3)
    });
    eprintln!("{held_by_bad} copies of the bad host were rebuilt on the 3 good hosts");
    fill.verify_on(&all, "vol", "after the rebuild");
    // Writes go on, to the good hosts only, and everyone reads them (the bad host as a
    // gateway).
    let more = Fill::new(52, [0, 5, 11], 64 * KIB);
    more.write(&hosts[bad].path("vol"));
    more.verify_on(
        &all,
        "vol",
        "written through the bad host after it left the placement",
    );
}
