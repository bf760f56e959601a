//! Runs the built `dog` binary against an in-test admin server with a fake service.

use sheep_admin::{
    AdminService, CheckBatch, Client, ClusterInfo, ForceInfo, MemoryInfo, NodeInfo, RecoveryInfo,
    Reply, Request, VdiInfo, WaitingInfo, WireError,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

/// Knows `vm0` (with snapshot `base`), records every request, and refuses `missing` and
/// `taken` with `NotFound` and `Exists`.
#[derive(Default)]
struct FakeService {
    seen: Mutex<Vec<Request>>,
}

impl AdminService for FakeService {
    fn handle(&self, req: Request) -> Result<Reply, WireError> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(req.clone());
        }
        match req {
            Request::VdiList | Request::VdiTree => Ok(Reply::VdiList(vdis())),
            Request::NodeInfo => Ok(Reply::NodeInfo(node())),
            Request::NodeMemory => Ok(Reply::Memory(memory())),
            Request::ClusterInfo => Ok(Reply::ClusterInfo(cluster())),
            Request::VdiDelete { name, .. } if name == "missing" => Err(WireError::NotFound(name)),
            Request::VdiCreate { name, .. } if name == "taken" => Err(WireError::Exists(name)),
            Request::ClusterRecoverForce => Ok(Reply::Forced(ForceInfo {
                epoch: 7,
                resumer: "node-1".into(),
                local: true,
                present: vec!["node-1".into(), "node-2".into()],
                removed: vec!["node-3".into()],
            })),
            Request::NodeRecovery => Ok(Reply::Recovery(recovery(Some(100 << 20)))),
            Request::SetRecoveryThrottle { bytes_per_sec } => {
                Ok(Reply::Recovery(recovery(bytes_per_sec)))
            }
            Request::Check { vdi, after, .. } => check(vdi.as_deref(), after),
            _ => Ok(Reply::Done),
        }
    }
}

fn recovery(throttle: Option<u64>) -> RecoveryInfo {
    RecoveryInfo {
        epoch: 3,
        to_check: 100,
        checked: 40,
        copied: 5,
        copied_bytes: 20 << 20,
        kept: 35,
        throttle,
        done: false,
        complete: false,
        full: false,
        ..RecoveryInfo::default()
    }
}

/// `vm0` has objects 1 to 5 (answered 3 at a time, object 4 lost); `missing` is unknown;
/// the whole cluster has one object.
fn check(vdi: Option<&str>, after: Option<u64>) -> Result<Reply, WireError> {
    let oids: Vec<u64> = match vdi {
        Some("vm0") => (1..=5).collect(),
        Some(name) => return Err(WireError::NotFound(name.into())),
        None => vec![9],
    };
    let next: Vec<u64> = oids
        .iter()
        .copied()
        .filter(|o| after.is_none_or(|a| *o > a))
        .take(3)
        .collect();
    let last = next.last().copied().or(after);
    let done = oids
        .iter()
        .filter(|o| last.is_some_and(|l| **o <= l))
        .count();
    let lost: Vec<u64> = next.iter().copied().filter(|o| *o == 4).collect();
    let n = next.len() as u64;
    Ok(Reply::Check(CheckBatch {
        total: oids.len() as u64,
        done: done as u64,
        last,
        finished: done == oids.len(),
        objects: n,
        copies: 3 * n,
        good: 3 * n - 1,
        repaired: 1,
        lost,
        failed: vec![],
    }))
}

fn vdis() -> Vec<VdiInfo> {
    let base = VdiInfo {
        name: "vm0".into(),
        tag: Some("base".into()),
        vid: 1,
        size: 10 << 30,
        used: 4 << 20,
        shared: 0,
        copies: 1,
        created: 1_700_000_000,
        parent: None,
        snapshot: true,
    };
    let current = VdiInfo {
        tag: None,
        vid: 2,
        parent: Some(1),
        snapshot: false,
        created: 1_700_000_100,
        ..base.clone()
    };
    vec![base, current]
}

fn node() -> NodeInfo {
    NodeInfo {
        node_id: "node-1".into(),
        store: "/var/lib/sheepfs".into(),
        mount: "/mnt/sheep".into(),
        capacity: 100 << 30,
        used: 1 << 30,
        free: 99 << 30,
        vdis: 2,
    }
}

fn memory() -> MemoryInfo {
    MemoryInfo {
        cache_size: 48 << 20,
        fuse_threads: 32,
        max_write: 1 << 20,
        fuse_buffers: 32 * ((1 << 20) + 4096),
        io_budget: (48 << 20) - 32 * ((1 << 20) + 4096),
        peak: 10 << 20,
        vm_rss: 70 << 20,
        vm_hwm: 90 << 20,
        ..MemoryInfo::default()
    }
}

fn cluster() -> ClusterInfo {
    ClusterInfo {
        name: "pool".into(),
        status: "running, single host".into(),
        epoch: 1,
        nodes: vec!["node-1".into()],
        default_copies: 1,
        redundancy: "1 copy".into(),
        members: vec![sheep_admin::MemberSummary {
            node_id: "node-1".into(),
            addr: "127.0.0.1:7001".into(),
            capacity: 100 << 30,
            sequencer: true,
            local: true,
        }],
        epochs: vec![sheep_admin::EpochInfo {
            epoch: 1,
            nodes: vec!["node-1".into()],
        }],
        rebalance: sheep_admin::RebalanceInfo::default(),
        waiting: Some(WaitingInfo {
            epoch: 1,
            members: vec!["node-1".into(), "node-2".into()],
            missing: vec!["node-2".into()],
            forced: false,
        }),
    }
}

/// A server on a tempdir socket, run by a tokio runtime in a background thread.
struct Daemon {
    _dir: tempfile::TempDir,
    path: PathBuf,
    service: Arc<FakeService>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Daemon {
    fn must_start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let service = Arc::new(FakeService::default());
        let (stop, rx) = watch::channel(false);
        let thread = std::thread::spawn({
            let (path, service) = (path.clone(), Arc::clone(&service));
            move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(sheep_admin::server::serve(&path, service, rx))
                    .unwrap();
            }
        });
        must_wait_until_ready(&path);
        Daemon {
            _dir: dir,
            path,
            service,
            stop,
            thread: Some(thread),
        }
    }

    fn dog(&self, args: &[&str]) -> Output {
        let mut all = vec!["--socket", self.path.to_str().unwrap()];
        all.extend_from_slice(args);
        dog(&all)
    }

    fn last_request(&self) -> Request {
        self.service.seen.lock().unwrap().last().cloned().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn must_wait_until_ready(path: &Path) {
    for _ in 0..500 {
        if Client::connect(path).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("admin server did not start");
}

fn dog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dog"))
        .args(args)
        .env_remove("SHEEPFS_SOCKET")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn vdi_list_prints_a_table_and_exits_zero() {
    let d = Daemon::must_start();
    let out = d.dog(&["vdi", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("Name"), "{text}");
    assert!(text.contains("base") && text.contains("10 GiB"), "{text}");
}

#[test]
fn every_json_listing_parses() {
    let d = Daemon::must_start();
    for args in [
        &["vdi", "list", "--json"][..],
        &["vdi", "tree", "--json"],
        &["node", "info", "--json"],
        &["cluster", "info", "--json"],
        &["cluster", "recover", "force", "--json"],
        &["node", "recovery", "--json"],
        &["cluster", "check", "--json"],
    ] {
        let out = d.dog(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(!json.is_null(), "{args:?}");
    }
    let out = d.dog(&["vdi", "list", "--json"]);
    let listed: Vec<VdiInfo> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed, vdis());
    let out = d.dog(&["node", "list", "--json"]);
    let members: Vec<sheep_admin::MemberSummary> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(members, cluster().members);
    let out = d.dog(&["node", "list"]);
    assert!(stdout(&out).contains("node-1") && stdout(&out).contains("sequencer"));
}

#[test]
fn node_info_shows_the_node_and_its_memory() {
    let d = Daemon::must_start();
    let out = d.dog(&["node", "info"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("node-1"), "{text}");
    assert!(text.contains("Cache size:     48 MiB"), "{text}");
    assert!(
        text.contains("Resident:       70 MiB (peak 90 MiB)"),
        "{text}"
    );
    assert_eq!(d.last_request(), Request::NodeMemory);
    let out = d.dog(&["node", "info", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["node_id"], "node-1");
    assert_eq!(json["memory"]["cache_size"], 48 << 20);
    assert_eq!(json["memory"]["vm_hwm"], 90 << 20);
}

#[test]
fn vdi_tree_draws_the_snapshot_above_the_vdi() {
    let d = Daemon::must_start();
    let out = d.dog(&["vdi", "tree"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("vm0@base"), "{text}");
    assert!(lines[1].starts_with("└─ vm0 "), "{text}");
}

#[test]
fn delete_of_a_missing_vdi_exits_three_with_a_hint() {
    let d = Daemon::must_start();
    let out = d.dog(&["vdi", "delete", "missing"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("dog vdi list"), "{}", stderr(&out));
}

#[test]
fn create_of_a_taken_name_exits_four() {
    let d = Daemon::must_start();
    assert_eq!(
        d.dog(&["vdi", "create", "taken", "1G"]).status.code(),
        Some(4)
    );
}

#[test]
fn commands_send_the_request_the_contract_describes() {
    let d = Daemon::must_start();
    let out = d.dog(&["vdi", "create", "vm1", "10G", "--copies", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want = Request::VdiCreate {
        name: "vm1".into(),
        size: 10 << 30,
        copies: Some(2),
    };
    assert_eq!(d.last_request(), want);
    assert_eq!(d.dog(&["vdi", "delete", "vm0@base"]).status.code(), Some(0));
    let want = Request::VdiDelete {
        name: "vm0".into(),
        tag: Some("base".into()),
    };
    assert_eq!(d.last_request(), want);
    assert_eq!(
        d.dog(&["vdi", "clone", "-s", "base", "vm0", "vm2"])
            .status
            .code(),
        Some(0)
    );
    let want = Request::VdiClone {
        src: "vm0".into(),
        tag: Some("base".into()),
        dst: "vm2".into(),
    };
    assert_eq!(d.last_request(), want);
}

#[test]
fn the_socket_can_come_from_the_environment() {
    let d = Daemon::must_start();
    let out = Command::new(env!("CARGO_BIN_EXE_dog"))
        .args(["cluster", "info"])
        .env("SHEEPFS_SOCKET", &d.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("running, single host"));
}

#[test]
fn a_missing_socket_exits_five_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    let out = dog(&["--socket", path.to_str().unwrap(), "vdi", "list"]);
    assert_eq!(out.status.code(), Some(5));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach sheepfs") && err.contains("SHEEPFS_SOCKET"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_two() {
    let d = Daemon::must_start();
    assert_eq!(
        d.dog(&["vdi", "create", "vm1", "10Q"]).status.code(),
        Some(2)
    );
    assert_eq!(d.dog(&["vdi", "snapshot", "vm0"]).status.code(), Some(2));
    assert_eq!(d.dog(&["vdi", "frobnicate"]).status.code(), Some(2));
}

#[test]
fn help_lists_every_command() {
    let out = dog(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for word in [
        "vdi",
        "node",
        "cluster",
        "--socket",
        "SHEEPFS_SOCKET",
        "Exit codes",
    ] {
        assert!(text.contains(word), "{word} missing from:\n{text}");
    }
    let text = stdout(&dog(&["vdi", "--help"]));
    for verb in [
        "list", "create", "delete", "snapshot", "clone", "rollback", "resize", "tree", "check",
    ] {
        assert!(text.contains(verb), "{verb} missing from:\n{text}");
    }
}

#[test]
fn cluster_info_json_says_what_a_restarted_host_waits_for() {
    let d = Daemon::must_start();
    let out = d.dog(&["cluster", "info", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["waiting"]["missing"][0], "node-2");
    assert_eq!(json["waiting"]["epoch"], 1);
    assert_eq!(json["waiting"]["forced"], false);
}

#[test]
fn recover_force_reports_who_resumes_and_who_is_removed() {
    let d = Daemon::must_start();
    let out = d.dog(&["cluster", "recover", "force"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(d.last_request(), Request::ClusterRecoverForce);
    let text = stdout(&out);
    assert!(text.contains("resumes with 2 of 3 members"), "{text}");
    assert!(text.contains("node-1 (this host)") && text.contains("Removed:        node-3"));
}

#[test]
fn node_recovery_shows_progress_and_sets_the_throttle() {
    let d = Daemon::must_start();
    let out = d.dog(&["node", "recovery"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("40% (40 of 100 objects)"),
        "{}",
        stdout(&out)
    );
    let out = d.dog(&["node", "recovery", "set-throttle", "50M"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        d.last_request(),
        Request::SetRecoveryThrottle {
            bytes_per_sec: Some(50 << 20)
        }
    );
    assert_eq!(stdout(&out), "Recovery throttle of this host: 50 MiB/s\n");
    let out = d.dog(&["node", "recovery", "set-throttle", "off"]);
    assert!(stdout(&out).contains("off (unthrottled)"));
    assert_eq!(
        d.dog(&["node", "recovery", "set-throttle", "fast"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn vdi_check_goes_through_every_batch_and_sums_up() {
    let d = Daemon::must_start();
    let out = d.dog(&["vdi", "check", "vm0"]);
    // Object 4 is lost: the summary is printed and the exit code says so.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(
            "vm0: 5 objects checked, 15 copies (13 good), 2 copies repaired, 1 object lost"
        ),
        "{text}"
    );
    assert!(text.contains("lost: object 0000000000000004"), "{text}");
    // Not a terminal: a line per 10% on stderr.
    let err = stderr(&out);
    assert!(err.contains("checked 60% (3/5 objects)"), "{err}");
    assert!(err.contains("checked 100% (5/5 objects)"), "{err}");
    assert!(err.contains("no good copy"), "{err}");
    let want = Request::Check {
        vdi: Some("vm0".into()),
        repair: true,
        after: Some(3),
        max: 256,
    };
    assert_eq!(d.last_request(), want);

    let out = d.dog(&["cluster", "check", "--json", "--no-repair"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["objects"], 1);
    assert_eq!(json["repair"], false);
    assert!(matches!(
        d.last_request(),
        Request::Check {
            vdi: None,
            repair: false,
            ..
        }
    ));
    assert_eq!(d.dog(&["vdi", "check", "missing"]).status.code(), Some(3));
}
