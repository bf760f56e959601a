//! Snapshots, clones, rollback and delete through `dog` while the volume is open and being
//! written, as QEMU keeps it during a live snapshot.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use sheep_tests::file::{assert_same_bytes, len, must_create, must_fsync, must_list};
use sheep_tests::file::{must_metadata, must_open_rw, must_pread, must_pread_direct, must_pwrite};
use sheep_tests::file::{must_read_all, pattern};
use sheep_tests::{require, Node, MIB, OBJECT_SIZE};

/// Size of the volume.
const VOL_SIZE: u64 = 16 * MIB;

/// Where the background writer writes (object 1).
const WRITER_AT: u64 = OBJECT_SIZE;

/// Where the test's own data lies: (offset, seed, length), fsynced before each snapshot.
const DATA: &[(u64, u64, u64)] = &[(0, 1, OBJECT_SIZE), (8 * MIB + 12345, 2, MIB)];

/// A thread that rewrites one 4 KiB block of the volume in a loop (pwrite, no fsync).
struct Writer {
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    handle: JoinHandle<Result<u64, String>>,
}

impl Writer {
    fn start(path: &Path) -> Writer {
        let file = must_open_rw(path);
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let (s, w) = (Arc::clone(&stop), Arc::clone(&writes));
        let handle = thread::spawn(move || {
            let mut generation = 0_u64;
            while !s.load(Ordering::Relaxed) {
                generation += 1;
                let block = generation.to_le_bytes().repeat(512);
                file.write_all_at(&block, WRITER_AT)
                    .map_err(|e| format!("write {generation} failed: {e}"))?;
                w.fetch_add(1, Ordering::Relaxed);
            }
            Ok(generation)
        });
        Writer {
            stop,
            writes,
            handle,
        }
    }

    /// Waits until the writer has made `n` more writes; panics after 10 s.
    fn must_progress(&self, n: u64) {
        let start = self.writes.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.writes.load(Ordering::Relaxed) < start + n {
            assert!(
                !self.handle.is_finished() && Instant::now() < deadline,
                "the writer stopped after {} writes",
                self.writes.load(Ordering::Relaxed)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the writer; panics if one of its writes failed. Returns the last generation.
    fn must_stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.join().expect("writer thread") {
            Ok(generation) => generation,
            Err(e) => panic!("background writer: {e}"),
        }
    }
}

/// Creates the volume with the test's data, fsynced, and returns it open.
fn must_make_volume(path: &Path) -> File {
    let file = must_create(path, VOL_SIZE);
    for &(at, seed, n) in DATA {
        must_pwrite(&file, at, &pattern(seed, len(n)));
    }
    must_fsync(&file);
    file
}

/// Panics unless `path` holds the test's original data.
fn must_hold_original_data(path: &Path, what: &str) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {what}: {e}"));
    for &(at, seed, n) in DATA {
        assert_same_bytes(
            &must_pread(&file, at, len(n)),
            &pattern(seed, len(n)),
            at,
            what,
        );
    }
}

/// Overwrites the first 64 KiB of `file` with new data, fsynced.
fn must_overwrite_start(file: &File, seed: u64) {
    must_pwrite(file, 0, &pattern(seed, 65536));
    must_fsync(file);
}

fn snap(node: &Node, tag: &str) -> PathBuf {
    node.path(&format!("vol@{tag}"))
}

/// Starts a node with `vol` open and being written, then snapshots it as `vol@s1`.
fn must_snapshot_while_writing() -> (Node, File, Writer) {
    let node = Node::start();
    let file = must_make_volume(&node.path("vol"));
    let writer = Writer::start(&node.path("vol"));
    writer.must_progress(100);
    node.must_dog(&["vdi", "snapshot", "vol", "-s", "s1"]);
    (node, file, writer)
}

#[test]
fn snapshot_of_a_volume_being_written_is_read_only_and_holds_the_content_at_snapshot_time() {
    if !require(&[]) {
        return;
    }
    let (node, file, writer) = must_snapshot_while_writing();
    assert!(
        must_list(&node.mount).contains(&"vol@s1".to_owned()),
        "vol@s1 is listed"
    );
    assert_eq!(must_metadata(&snap(&node, "s1")).len(), VOL_SIZE);
    must_overwrite_start(&file, 99);
    must_hold_original_data(&snap(&node, "s1"), "vol@s1 after the volume changed");
    let block = must_pread_direct(&snap(&node, "s1"), WRITER_AT, 4096);
    assert!(
        block.chunks(8).all(|c| c == &block[..8]),
        "torn writer block in vol@s1"
    );
    writer.must_stop();
    drop(file);
    node.stop();
}

#[test]
fn writer_keeps_working_after_a_snapshot_and_its_writes_land_in_the_volume() {
    if !require(&[]) {
        return;
    }
    let (node, file, writer) = must_snapshot_while_writing();
    writer.must_progress(1000);
    let last = writer.must_stop();
    must_fsync(&file);
    let block = must_pread_direct(&node.path("vol"), WRITER_AT, 4096);
    assert_eq!(
        block,
        last.to_le_bytes().repeat(512),
        "the volume holds the last write"
    );
    drop(file);
    node.stop();
}

#[test]
fn snapshot_refuses_opens_for_writing() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    drop(must_make_volume(&node.path("vol")));
    node.must_dog(&["vdi", "snapshot", "vol", "-s", "s1"]);
    let refused = [Errno::EROFS, Errno::EACCES, Errno::EPERM].map(|e| e as i32);
    for (what, result) in [
        (
            "O_WRONLY",
            OpenOptions::new().write(true).open(snap(&node, "s1")),
        ),
        (
            "O_RDWR",
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(snap(&node, "s1")),
        ),
    ] {
        let err = result
            .err()
            .unwrap_or_else(|| panic!("{what} open of vol@s1 succeeded"));
        assert!(
            err.raw_os_error().is_some_and(|e| refused.contains(&e)),
            "{what} open of vol@s1: {err}, want EROFS (or EACCES/EPERM)"
        );
    }
    must_hold_original_data(&snap(&node, "s1"), "vol@s1 read-only open");
    node.stop();
}

#[test]
fn clone_of_a_snapshot_is_writable_and_independent() {
    if !require(&[]) {
        return;
    }
    let (node, file, writer) = must_snapshot_while_writing();
    writer.must_stop();
    node.must_dog(&["vdi", "clone", "vol@s1", "c1"]);
    node.must_dog(&["vdi", "clone", "-s", "s1", "vol", "c2"]);
    for clone in ["c1", "c2"] {
        must_hold_original_data(&node.path(clone), clone);
    }
    let c1 = must_open_rw(&node.path("c1"));
    must_overwrite_start(&c1, 50);
    must_overwrite_start(&file, 51);
    assert_same_bytes(
        &must_pread(&c1, 0, 65536),
        &pattern(50, 65536),
        0,
        "c1 after writes",
    );
    must_hold_original_data(
        &snap(&node, "s1"),
        "vol@s1 after writes to clone and volume",
    );
    must_hold_original_data(&node.path("c2"), "c2 after writes to c1 and volume");
    let vol_start = must_pread_direct(&node.path("vol"), 0, 65536);
    assert_same_bytes(&vol_start, &pattern(51, 65536), 0, "vol after writes to c1");
    drop((file, c1));
    node.stop();
}

#[test]
fn rollback_while_open_brings_back_the_snapshot_content() {
    if !require(&[]) {
        return;
    }
    let (node, file, writer) = must_snapshot_while_writing();
    writer.must_stop();
    must_overwrite_start(&file, 77);
    must_pwrite(&file, 8 * MIB + 12345, &pattern(78, 4096));
    must_fsync(&file);
    node.must_dog(&["vdi", "rollback", "vol", "-s", "s1"]);
    for &(at, seed, n) in DATA {
        let want = pattern(seed, len(n));
        assert_same_bytes(
            &must_pread(&file, at, len(n)),
            &want,
            at,
            "vol via the open fd",
        );
    }
    must_hold_original_data(&node.path("vol"), "vol after rollback");
    must_overwrite_start(&file, 79);
    assert_same_bytes(
        &must_pread_direct(&node.path("vol"), 0, 65536),
        &pattern(79, 65536),
        0,
        "write after rollback",
    );
    must_hold_original_data(&snap(&node, "s1"), "vol@s1 after rollback and write");
    drop(file);
    node.stop();
}

#[test]
fn deleting_a_snapshot_in_the_middle_keeps_every_other_vdi_intact() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let file = must_make_volume(&node.path("vol"));
    node.must_dog(&["vdi", "snapshot", "vol", "-s", "s1"]);
    node.must_dog(&["vdi", "clone", "vol@s1", "c1"]);
    must_overwrite_start(&file, 5);
    node.must_dog(&["vdi", "snapshot", "vol", "-s", "s2"]);
    node.must_dog(&["vdi", "delete", "vol", "-s", "s1"]);
    let names = must_list(&node.mount);
    assert!(
        !names.contains(&"vol@s1".to_owned()),
        "vol@s1 deleted: {names:?}"
    );
    must_hold_original_data(&node.path("c1"), "c1 after its snapshot was deleted");
    let s2 = must_read_all(&snap(&node, "s2"));
    assert_same_bytes(&s2[..65536], &pattern(5, 65536), 0, "vol@s2");
    node.must_dog(&["vdi", "delete", "vol@s2"]);
    node.must_dog(&["vdi", "delete", "c1"]);
    assert_eq!(must_list(&node.mount), vec!["vol".to_owned()]);
    let vol = must_pread_direct(&node.path("vol"), 0, 65536);
    assert_same_bytes(&vol, &pattern(5, 65536), 0, "vol after deletes");
    assert_eq!(
        File::open(snap(&node, "s1")).map_err(|e| e.kind()).err(),
        Some(ErrorKind::NotFound)
    );
    drop(file);
    node.stop();
}

/// Returns every VDI object of `dog vdi list --json`.
fn must_vdi_list(node: &Node) -> Vec<serde_json::Value> {
    let json = node.must_dog(&["vdi", "list", "--json"]);
    let list: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("dog vdi list --json: {e}\n{json}"));
    list.as_array()
        .unwrap_or_else(|| panic!("not a JSON array: {json}"))
        .clone()
}

#[test]
fn vdi_list_json_lists_every_vdi_and_snapshot() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    drop(must_make_volume(&node.path("vol")));
    node.must_dog(&["vdi", "snapshot", "vol", "-s", "s1"]);
    node.must_dog(&["vdi", "clone", "vol@s1", "c1"]);
    let list = must_vdi_list(&node);
    let find = |name: &str, tag: Option<&str>| {
        list.iter()
            .find(|v| v["name"] == name && v["tag"].as_str() == tag)
            .unwrap_or_else(|| panic!("{name} {tag:?} not in {list:?}"))
    };
    for (name, tag, snapshot) in [
        ("vol", None, false),
        ("vol", Some("s1"), true),
        ("c1", None, false),
    ] {
        let vdi = find(name, tag);
        assert_eq!(vdi["size"].as_u64(), Some(VOL_SIZE), "{vdi}");
        assert_eq!(vdi["snapshot"].as_bool(), Some(snapshot), "{vdi}");
    }
    assert_eq!(list.len(), 3, "{list:?}");
    node.stop();
}

#[test]
fn vdi_tree_shows_a_snapshot_and_its_clone() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    drop(must_make_volume(&node.path("vol")));
    node.must_dog(&["vdi", "snapshot", "vol", "-s", "s1"]);
    node.must_dog(&["vdi", "clone", "vol@s1", "c1"]);
    let tree = node.must_dog(&["vdi", "tree"]);
    for word in ["vol", "s1", "c1"] {
        assert!(tree.contains(word), "dog vdi tree lacks {word}:\n{tree}");
    }
    let json = node.must_dog(&["vdi", "tree", "--json"]);
    serde_json::from_str::<serde_json::Value>(&json)
        .unwrap_or_else(|e| panic!("dog vdi tree --json: {e}\n{json}"));
    node.stop();
}
