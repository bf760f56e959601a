//! A daemon restart on the same store brings back every VDI with its size, metadata and bytes;
//! after kill -9, everything fsynced before it is there.

use std::collections::BTreeMap;
use std::fs::{File, FileTimes};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sheep_tests::file::pattern;
use sheep_tests::file::{assert_same_bytes, len, must_content_hash, must_create, must_fsync};
use sheep_tests::file::{must_list, must_metadata, must_open_rw, must_pread_direct, must_pwrite};
use sheep_tests::{require, Node, MIB, OBJECT_SIZE};

/// What must survive a restart for one file of the mount.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    content: u64,
}

fn must_inventory(node: &Node) -> BTreeMap<String, Entry> {
    must_list(&node.mount)
        .into_iter()
        .map(|name| {
            let path = node.path(&name);
            let meta = must_metadata(&path);
            let entry = Entry {
                size: meta.len(),
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                content: must_content_hash(&path),
            };
            (name, entry)
        })
        .collect()
}

/// Returns `dog vdi list --json` as a list sorted by name and tag.
fn must_vdi_list(node: &Node) -> Vec<serde_json::Value> {
    let json = node.must_dog(&["vdi", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&json).expect("dog vdi list --json");
    let mut list = list.as_array().expect("JSON array").clone();
    list.sort_by_key(|v| (v["name"].to_string(), v["tag"].to_string()));
    list
}

/// Returns "name@tag field: before -> after" for every field that differs between two lists.
fn vdi_list_diffs(before: &[serde_json::Value], after: &[serde_json::Value]) -> Vec<String> {
    let mut diffs = Vec::new();
    if before.len() != after.len() {
        diffs.push(format!(
            "{} VDIs before, {} after",
            before.len(),
            after.len()
        ));
    }
    for (b, a) in before.iter().zip(after) {
        let name = format!("{}@{}", b["name"], b["tag"]);
        let fields = b.as_object().into_iter().flat_map(|o| o.keys());
        for field in fields.filter(|f| b[f.as_str()] != a[f.as_str()]) {
            diffs.push(format!(
                "{name} {field}: {} -> {}",
                b[field.as_str()],
                a[field.as_str()]
            ));
        }
    }
    diffs
}

/// Writes `n` bytes of pattern `seed` at each of `offsets`, then fsyncs.
fn must_write_at(path: &Path, seed: u64, n: u64, offsets: &[u64]) {
    let file = must_open_rw(path);
    for (i, &at) in offsets.iter().enumerate() {
        must_pwrite(&file, at, &pattern(seed + i as u64, len(n)));
    }
    must_fsync(&file);
}

/// Builds volumes, a snapshot and a clone with data and metadata of their own.
fn must_populate(node: &Node) {
    drop(must_create(&node.path("a"), 20 * MIB));
    must_write_at(
        &node.path("a"),
        10,
        300_000,
        &[0, OBJECT_SIZE - 1000, 17 * MIB],
    );
    node.must_dog(&["vdi", "snapshot", "a", "-s", "t1"]);
    must_write_at(&node.path("a"), 20, 5000, &[100, 9 * MIB]);
    node.must_dog(&["vdi", "clone", "a@t1", "c"]);
    must_write_at(&node.path("c"), 30, 70_000, &[2 * MIB]);
    drop(must_create(&node.path("b"), 256 * MIB));
    must_write_at(&node.path("b"), 40, MIB, &[200 * MIB + 7]);
    node.must_dog(&["vdi", "create", "d", "64M"]);
    std::fs::set_permissions(node.path("a"), PermissionsExt::from_mode(0o640)).expect("chmod");
    std::os::unix::fs::chown(node.path("b"), Some(1234), Some(5678)).expect("chown");
    let mtime = SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    let c = File::options()
        .write(true)
        .open(node.path("c"))
        .expect("open c");
    c.set_times(FileTimes::new().set_modified(mtime).set_accessed(mtime))
        .expect("utimes");
}

#[test]
fn every_vdi_with_its_metadata_and_bytes_survives_a_clean_restart() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    must_populate(&node);
    let want = must_inventory(&node);
    let want_list = must_vdi_list(&node);
    assert_eq!(want.len(), 5, "a, a@t1, b, c, d: {want:?}");
    let store = node.stop();
    let node = Node::start_on(&store, &[]);
    let got = must_inventory(&node);
    for (name, entry) in &want {
        assert_eq!(got.get(name), Some(entry), "{name} after restart");
    }
    assert_eq!(
        got.len(),
        want.len(),
        "files after restart: {:?}",
        got.keys()
    );
    let diffs = vdi_list_diffs(&want_list, &must_vdi_list(&node));
    assert!(
        diffs.is_empty(),
        "dog vdi list --json changed across the restart: {diffs:#?}"
    );
    node.stop();
}

#[test]
fn fsynced_data_survives_kill_9_and_a_restart() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let vol = node.path("vol");
    drop(must_create(&vol, 12 * MIB));
    let offsets = [0, OBJECT_SIZE - 512, 9 * MIB];
    must_write_at(&vol, 60, 65536, &offsets);
    let store = node.kill();
    let node = Node::start_on(&store, &[]);
    assert_eq!(must_metadata(&node.path("vol")).len(), 12 * MIB);
    for (i, &at) in offsets.iter().enumerate() {
        let got = must_pread_direct(&node.path("vol"), at, 65536);
        assert_same_bytes(
            &got,
            &pattern(60 + i as u64, 65536),
            at,
            "fsynced data after kill -9",
        );
    }
    node.stop();
}

#[test]
fn sigterm_while_a_file_is_open_exits_0_once_it_is_closed_and_keeps_its_writes() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let file = must_create(&node.path("vol"), 8 * MIB);
    must_pwrite(&file, OBJECT_SIZE - 100, &pattern(80, 70_000));
    let pid = Pid::from_raw(i32::try_from(node.pid()).expect("pid fits i32"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM sheepfs");
    std::thread::sleep(Duration::from_secs(1));
    drop(file);
    let store = node.wait_stopped();
    let node = Node::start_on(&store, &[]);
    let got = must_pread_direct(&node.path("vol"), OBJECT_SIZE - 512, 70_656);
    assert_same_bytes(
        &got[412..70_412],
        &pattern(80, 70_000),
        OBJECT_SIZE - 100,
        "after SIGTERM",
    );
    node.stop();
}
