//! copy_file_range inside a sheepfs mount: whole-file copies are equal, independent, survive
//! the deletion of their source, share space until written, and are point-in-time consistent
//! while the source is being written. `cp` (plain and `--sparse=always`) makes equal files.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use sheep_tests::file::{allocated, assert_same_bytes, len, must_create, must_fsync};
use sheep_tests::file::{
    must_metadata, must_open_direct, must_open_rw, must_pread_direct, must_pwrite,
};
use sheep_tests::file::{must_read_all_direct, pattern, utf8, AlignedBuf};
use sheep_tests::{must_run, require, Node, MIB, OBJECT_SIZE};

/// Size of the source: 3 written objects, then a sparse tail.
const SRC_SIZE: u64 = 32 * MIB;

/// Bytes of data at the start of the source.
const SRC_DATA: u64 = 3 * OBJECT_SIZE;

/// Writes the source volume (3 objects of pattern, sparse up to `SRC_SIZE`), fsynced and closed.
/// Returns its expected content.
fn must_make_source(path: &Path) -> Vec<u8> {
    let file = must_create(path, SRC_SIZE);
    let mut model = vec![0; len(SRC_SIZE)];
    model[..len(SRC_DATA)].copy_from_slice(&pattern(7, len(SRC_DATA)));
    must_pwrite(&file, 0, &model[..len(SRC_DATA)]);
    must_fsync(&file);
    model
}

/// Copies the first `n` bytes of `src` to `dst` with copy_file_range, looping on short copies.
fn must_copy_range(src: &File, dst: &File, n: u64) {
    let (mut off_in, mut off_out) = (0_i64, 0_i64);
    let end = i64::try_from(n).expect("fits");
    while off_in < end {
        let chunk = len(u64::try_from(end - off_in).expect("positive"));
        let copied =
            nix::fcntl::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), chunk)
                .unwrap_or_else(|e| panic!("copy_file_range at {off_in}: {e}"));
        assert!(copied > 0, "copy_file_range returned 0 at {off_in} of {n}");
    }
}

/// Creates `dst` (size 0, as `open(O_CREAT)` does) and copies the whole of `src` into it.
fn must_copy_file(src: &Path, dst: &Path) -> File {
    let input = File::open(src).expect("open copy source");
    let output = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dst)
        .expect("create copy destination");
    must_copy_range(&input, &output, must_metadata(src).len());
    must_fsync(&output);
    output
}

/// Returns the store's disk usage in bytes (`du -s --block-size=1`).
fn must_store_usage(node: &Node) -> u64 {
    let out = must_run("du", &["-s", "--block-size=1", utf8(&node.store)]);
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du output")
}

/// Returns `(used, shared)` of the working VDI `name` from `dog vdi list --json`, if present.
fn vdi_space(node: &Node, name: &str) -> Option<(u64, u64)> {
    let json = node.must_dog(&["vdi", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&json).expect("dog vdi list --json");
    let vdi = list
        .as_array()?
        .iter()
        .find(|v| v["name"] == name && v["tag"].is_null())?;
    Some((vdi["used"].as_u64()?, vdi["shared"].as_u64()?))
}

#[test]
fn copy_file_range_of_a_whole_volume_makes_an_equal_sparse_file() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let model = must_make_source(&node.path("src"));
    drop(must_copy_file(&node.path("src"), &node.path("dst")));
    assert_eq!(must_metadata(&node.path("dst")).len(), SRC_SIZE);
    assert_same_bytes(&must_read_all_direct(&node.path("dst")), &model, 0, "copy");
    let (src_used, dst_used) = (allocated(&node.path("src")), allocated(&node.path("dst")));
    assert!(
        dst_used <= src_used,
        "sparse tail stays sparse: src {src_used}, dst {dst_used}"
    );
    node.stop();
}

#[test]
fn copies_made_by_copy_file_range_diverge_independently() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let mut src_model = must_make_source(&node.path("src"));
    let src = must_open_rw(&node.path("src"));
    let dst = must_copy_file(&node.path("src"), &node.path("dst"));
    let mut dst_model = src_model.clone();
    let (src_write, dst_write) = (pattern(70, 4096), pattern(71, 6000));
    must_pwrite(&src, 100, &src_write);
    must_fsync(&src);
    must_pwrite(&dst, OBJECT_SIZE + 200, &dst_write);
    must_pwrite(&dst, 20 * MIB, &dst_write);
    must_fsync(&dst);
    src_model[100..100 + 4096].copy_from_slice(&src_write);
    for at in [len(OBJECT_SIZE) + 200, len(20 * MIB)] {
        dst_model[at..at + 6000].copy_from_slice(&dst_write);
    }
    assert_same_bytes(
        &must_read_all_direct(&node.path("src")),
        &src_model,
        0,
        "source",
    );
    assert_same_bytes(
        &must_read_all_direct(&node.path("dst")),
        &dst_model,
        0,
        "copy",
    );
    drop((src, dst));
    node.stop();
}

#[test]
fn deleting_the_source_of_a_copy_leaves_the_copy_intact() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let model = must_make_source(&node.path("src"));
    drop(must_copy_file(&node.path("src"), &node.path("dst")));
    std::fs::remove_file(node.path("src")).expect("unlink source");
    assert_same_bytes(
        &must_read_all_direct(&node.path("dst")),
        &model,
        0,
        "copy after rm",
    );
    let store = node.stop();
    let node = Node::start_on(&store, &[]);
    assert_same_bytes(
        &must_read_all_direct(&node.path("dst")),
        &model,
        0,
        "copy after restart",
    );
    node.stop();
}

#[test]
fn copy_file_range_shares_space_until_one_side_writes() {
    if !require(&["du"]) {
        return;
    }
    let node = Node::start();
    must_make_source(&node.path("src"));
    let before = must_store_usage(&node);
    let dst = must_copy_file(&node.path("src"), &node.path("dst"));
    let after_copy = must_store_usage(&node);
    assert!(
        after_copy < before + MIB,
        "copying {SRC_DATA} bytes grew the store by {} bytes: objects not shared",
        after_copy.saturating_sub(before)
    );
    let spaces = (vdi_space(&node, "src"), vdi_space(&node, "dst"));
    if let (Some((_, src_shared)), Some((_, dst_shared))) = spaces {
        assert!(
            src_shared + dst_shared >= SRC_DATA,
            "dog vdi list shared: {spaces:?}"
        );
    }
    must_pwrite(&dst, OBJECT_SIZE + 10, b"diverge");
    must_fsync(&dst);
    let after_write = must_store_usage(&node);
    let grown = after_write.saturating_sub(after_copy);
    assert!(
        (OBJECT_SIZE / 2..=2 * OBJECT_SIZE + MIB).contains(&grown),
        "a write into one shared object grew the store by {grown} bytes, want about one object"
    );
    drop(dst);
    node.stop();
}

#[test]
fn cp_of_a_sparse_volume_makes_an_equal_file() {
    if !require(&["cp"]) {
        return;
    }
    let node = Node::start();
    let model = must_make_source(&node.path("src"));
    must_run("cp", &[utf8(&node.path("src")), utf8(&node.path("dst"))]);
    assert_eq!(must_metadata(&node.path("dst")).len(), SRC_SIZE);
    assert_same_bytes(
        &must_read_all_direct(&node.path("dst")),
        &model,
        0,
        "cp copy",
    );
    node.stop();
}

#[test]
fn cp_sparse_always_keeps_the_copy_sparse() {
    if !require(&["cp"]) {
        return;
    }
    let node = Node::start();
    let model = must_make_source(&node.path("src"));
    let dst = node.path("dst");
    must_run(
        "cp",
        &["--sparse=always", utf8(&node.path("src")), utf8(&dst)],
    );
    assert_same_bytes(
        &must_read_all_direct(&dst),
        &model,
        0,
        "cp --sparse=always copy",
    );
    let used = allocated(&dst);
    assert!(
        used <= SRC_DATA + MIB,
        "cp --sparse=always: {used} bytes allocated"
    );
    node.stop();
}

/// Objects of the volume that the concurrent writer stamps.
const STAMPED_OBJECTS: u64 = 8;

/// Bytes of each stamp (one O_DIRECT block at the start of an object).
const STAMP: usize = 4096;

fn stamp(generation: u64) -> AlignedBuf {
    AlignedBuf::from_slice(&generation.to_le_bytes().repeat(STAMP / 8))
}

/// Writes generation after generation of stamps to objects 0, 1, … in order, with O_DIRECT
/// like QEMU with cache=none, until `stop`. Returns the last generation written.
fn stamp_writer(path: &Path, stop: &AtomicBool) -> u64 {
    let file = must_open_direct(path);
    let mut generation = 0;
    while !stop.load(Ordering::Relaxed) {
        generation += 1;
        let buf = stamp(generation);
        for k in 0..STAMPED_OBJECTS {
            must_pwrite(&file, k * OBJECT_SIZE, buf.as_slice());
        }
    }
    generation
}

/// Reads the stamps of a copy; panics on a torn stamp or a state that never existed.
fn must_check_prefix_consistent(path: &Path) -> Vec<u64> {
    let gens: Vec<u64> = (0..STAMPED_OBJECTS)
        .map(|k| {
            let block = must_pread_direct(path, k * OBJECT_SIZE, STAMP);
            let first = u64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
            assert_eq!(
                block,
                stamp(first).as_slice(),
                "torn stamp in object {k} of copy"
            );
            first
        })
        .collect();
    let ordered = gens.windows(2).all(|w| w[0] >= w[1]);
    let close = gens[0].saturating_sub(gens[len(STAMPED_OBJECTS - 1)]) <= 1;
    assert!(
        ordered && close,
        "copy is not a point-in-time state: generations {gens:?}"
    );
    gens
}

#[test]
fn copy_taken_while_the_source_is_written_is_point_in_time_consistent() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let src = node.path("src");
    drop(must_create(&src, STAMPED_OBJECTS * OBJECT_SIZE));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (src, stop) = (src.clone(), Arc::clone(&stop));
        thread::spawn(move || stamp_writer(&src, &stop))
    };
    let mut seen = Vec::new();
    for round in 0..6 {
        thread::sleep(Duration::from_millis(150));
        let copy = node.path(&format!("copy{round}"));
        drop(must_copy_file(&src, &copy));
        seen.push(must_check_prefix_consistent(&copy));
    }
    stop.store(true, Ordering::Relaxed);
    let last = writer.join().expect("writer thread");
    assert!(last > 1, "the writer made progress: {last} generations");
    assert!(
        seen.iter().any(|g| g[0] > 0),
        "copies saw the writer's stamps: {seen:?}"
    );
    node.stop();
}

/// Waits up to `secs` for the store's usage to drop to `at_most` bytes; returns the last reading.
fn must_wait_store_usage(node: &Node, at_most: u64, secs: u64) -> u64 {
    let mut used = must_store_usage(node);
    for _ in 0..secs * 10 {
        if used <= at_most {
            break;
        }
        thread::sleep(Duration::from_millis(100));
        used = must_store_usage(node);
    }
    used
}

#[test]
fn space_returns_once_nothing_shares_it() {
    if !require(&["du"]) {
        return;
    }
    let node = Node::start();
    let empty = must_store_usage(&node);
    must_make_source(&node.path("src"));
    drop(must_copy_file(&node.path("src"), &node.path("dst")));
    let full = must_store_usage(&node);
    assert!(
        full >= empty + SRC_DATA,
        "data is stored: {empty} -> {full}"
    );
    // The copy still shares every object: deleting the source frees nothing.
    std::fs::remove_file(node.path("src")).expect("rm src");
    thread::sleep(Duration::from_secs(3));
    let after_src = must_store_usage(&node);
    assert!(
        after_src + MIB >= full,
        "shared data kept: {full} -> {after_src}"
    );
    // Nothing references the objects any more: the reclaimer deletes them within seconds.
    std::fs::remove_file(node.path("dst")).expect("rm dst");
    let after_dst = must_wait_store_usage(&node, empty + MIB, 20);
    assert!(
        after_dst <= empty + MIB,
        "space returned: {full} -> {after_dst} (empty store {empty})"
    );
    node.stop();
}
