//! `qemu-img` on a real sheepfs mount: create, convert from qcow2, map (sparse extents),
//! truncate, and `du` of sparse and written volumes.

use std::collections::BTreeSet;
use std::path::Path;

use sheep_tests::file::{allocated, must_create, must_fsync, must_metadata, must_open_rw};
use sheep_tests::file::{assert_zeros, len, must_pread, must_pwrite, pattern, utf8};
use sheep_tests::{must_run, require, Node, MIB, OBJECT_SIZE};

/// Writes (offset, length, pattern byte) made on both images, some across object boundaries.
const WRITES: &[(u64, u64, u8)] = &[
    (0, 64 << 10, 0x11),
    (5 * MIB, MIB, 0x22),
    (20 * MIB - 4096, 8192, 0x33),
    (40 * MIB + 512, 4096, 0x44),
    (60 * MIB, 3 * MIB, 0x55),
];

/// Virtual size of the images the writes go to.
const IMAGE_SIZE: u64 = 64 * MIB;

fn must_qemu_io_writes(image: &Path, format: &str) {
    let mut args = vec!["-f".to_owned(), format.to_owned()];
    for (off, len, pat) in WRITES {
        args.push("-c".into());
        args.push(format!("write -P {pat:#x} {off} {len}"));
    }
    args.push(utf8(image).to_owned());
    let out = must_run("qemu-io", &args);
    assert!(!out.contains("failed"), "qemu-io: {out}");
}

fn must_make_qcow2(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src.qcow2");
    must_run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", utf8(&src), "64M"],
    );
    must_qemu_io_writes(&src, "qcow2");
    src
}

/// Returns the indexes of the `chunk`-sized ranges that `qemu-img map` reports data in.
fn must_data_chunks(image: &Path, chunk: u64) -> BTreeSet<u64> {
    let out = must_run(
        "qemu-img",
        &["map", "--output=json", "-f", "raw", utf8(image)],
    );
    let map: serde_json::Value = serde_json::from_str(&out).expect("qemu-img map JSON");
    let mut chunks = BTreeSet::new();
    for extent in map.as_array().expect("qemu-img map gives an array") {
        if extent["data"].as_bool() != Some(true) {
            continue;
        }
        let start = extent["start"].as_u64().expect("start");
        let length = extent["length"].as_u64().expect("length");
        chunks.extend(start / chunk..(start + length).div_ceil(chunk));
    }
    chunks
}

fn must_convert_and_compare(extra: &[&str]) {
    if !require(&["qemu-img", "qemu-io"]) {
        return;
    }
    let node = Node::start();
    let local = tempfile::tempdir().expect("tempdir");
    let src = must_make_qcow2(local.path());
    let dst = node.path("vm0");
    let mut args = vec!["convert"];
    args.extend(extra);
    args.extend(["-f", "qcow2", "-O", "raw", utf8(&src), utf8(&dst)]);
    must_run("qemu-img", &args);
    assert_eq!(
        must_metadata(&dst).len(),
        IMAGE_SIZE,
        "converted image size"
    );
    must_run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            utf8(&src),
            utf8(&dst),
        ],
    );
    node.stop();
}

#[test]
fn qemu_img_create_makes_a_sparse_raw_file_of_the_requested_size() {
    if !require(&["qemu-img"]) {
        return;
    }
    let node = Node::start();
    let vol = node.path("vm0");
    must_run("qemu-img", &["create", "-q", "-f", "raw", utf8(&vol), "1G"]);
    assert_eq!(must_metadata(&vol).len(), 1 << 30);
    let info = must_run(
        "qemu-img",
        &["info", "--output=json", "-f", "raw", utf8(&vol)],
    );
    let info: serde_json::Value = serde_json::from_str(&info).expect("qemu-img info JSON");
    assert_eq!(info["virtual-size"].as_u64(), Some(1 << 30), "{info}");
    let used = allocated(&vol);
    assert!(
        used <= 2 * OBJECT_SIZE,
        "a fresh 1G image allocates {used} bytes"
    );
    node.stop();
}

#[test]
fn qemu_img_convert_from_qcow2_makes_an_equal_raw_image() {
    must_convert_and_compare(&[]);
}

#[test]
fn qemu_img_convert_with_cache_none_makes_an_equal_raw_image() {
    must_convert_and_compare(&["-t", "none"]);
}

#[test]
fn qemu_img_map_shows_data_only_where_written_like_a_local_file() {
    if !require(&["qemu-img", "qemu-io"]) {
        return;
    }
    let node = Node::start();
    let local = tempfile::tempdir().expect("tempdir");
    let images = [local.path().join("local.raw"), node.path("vm0")];
    for image in &images {
        must_run(
            "qemu-img",
            &["create", "-q", "-f", "raw", utf8(image), "64M"],
        );
        must_qemu_io_writes(image, "raw");
    }
    let want = must_data_chunks(&images[0], OBJECT_SIZE);
    let got = must_data_chunks(&images[1], OBJECT_SIZE);
    assert_eq!(got, want, "4 MiB chunks with data: sheepfs vs local file");
    assert!(got.len() < 10, "only written chunks hold data: {got:?}");
    node.stop();
}

#[test]
fn truncate_grows_and_shrinks_a_volume_and_the_regrown_range_reads_zeros() {
    if !require(&["truncate"]) {
        return;
    }
    let node = Node::start();
    let vol = node.path("vm0");
    must_run("truncate", &["-s", "100M", utf8(&vol)]);
    assert_eq!(must_metadata(&vol).len(), 100 * MIB);
    let file = must_open_rw(&vol);
    must_pwrite(&file, 90 * MIB, &pattern(1, len(2 * MIB)));
    must_fsync(&file);
    must_run("truncate", &["-s", "50M", utf8(&vol)]);
    assert_eq!(must_metadata(&vol).len(), 50 * MIB);
    assert!(
        allocated(&vol) < OBJECT_SIZE,
        "shrinking frees what lies past the end"
    );
    must_run("truncate", &["-s", "100M", utf8(&vol)]);
    assert_eq!(must_metadata(&vol).len(), 100 * MIB);
    assert_zeros(
        &must_pread(&file, 90 * MIB, len(2 * MIB)),
        90 * MIB,
        "regrown range",
    );
    drop(file);
    node.stop();
}

#[test]
fn du_of_a_sparse_volume_is_small_and_grows_when_written() {
    if !require(&["du"]) {
        return;
    }
    let node = Node::start();
    let vol = node.path("vm0");
    let file = must_create(&vol, 1 << 30);
    let du = |path: &Path| -> u64 {
        let out = must_run("du", &["-s", "--block-size=1", utf8(path)]);
        out.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("du output")
    };
    assert!(du(&vol) <= MIB, "sparse 1G volume: du says {}", du(&vol));
    must_pwrite(&file, 100 * MIB, &pattern(2, len(8 * MIB)));
    must_fsync(&file);
    let used = du(&vol);
    assert!(
        (8 * MIB..=8 * MIB + OBJECT_SIZE).contains(&used),
        "after writing 8 MiB du says {used}"
    );
    assert_eq!(used, allocated(&vol), "du agrees with st_blocks");
    drop(file);
    node.stop();
}
