//! `qemu-io -f raw` on a real sheepfs mount, buffered and with `-t none` (O_DIRECT): patterns
//! across 4 MiB object boundaries, discard, write-zeroes, aio bursts and flush.

use std::path::{Path, PathBuf};

use sheep_tests::file::{allocated, must_create};
use sheep_tests::{must_qemu_io, require, Node, MIB};

/// Size of the test volumes.
const VOL_SIZE: u64 = 20 * MIB;

/// Writes (offset, length, pattern byte) for buffered mode: unaligned, across boundaries.
const BUFFERED_WRITES: &[(u64, u64, u8)] = &[
    (1, 3, 0xef),
    (4 * MIB - 512, 1024, 0xab),
    (8 * MIB - 3, 7, 0xcd),
    (12 * MIB - 100_001, 300_003, 0x5a),
    (16 * MIB - 1, 2, 0x99),
];

/// Writes for O_DIRECT mode: 512-aligned, across boundaries.
const DIRECT_WRITES: &[(u64, u64, u8)] = &[
    (512, 512, 0xef),
    (4 * MIB - 512, 1024, 0xab),
    (8 * MIB - 4096, 8192 + 512, 0xcd),
    (12 * MIB - 65536, 131_072, 0x5a),
    (16 * MIB - 512, 1024, 0x99),
];

fn must_volume(node: &Node, name: &str) -> PathBuf {
    let vol = node.path(name);
    drop(must_create(&vol, VOL_SIZE));
    vol
}

/// Returns the ranges of `[0, size)` that no write covers; the writes must be sorted.
fn gaps(writes: &[(u64, u64, u8)], size: u64) -> Vec<(u64, u64)> {
    let mut gaps = Vec::new();
    let mut pos = 0;
    for (off, len, _) in writes {
        if *off > pos {
            gaps.push((pos, off - pos));
        }
        pos = off + len;
    }
    if pos < size {
        gaps.push((pos, size - pos));
    }
    gaps
}

/// Returns the `read -P` commands that check the writes and the zeros between them.
fn verify_cmds(writes: &[(u64, u64, u8)]) -> Vec<String> {
    let mut cmds: Vec<String> = writes
        .iter()
        .map(|(off, len, pat)| format!("read -P {pat:#x} {off} {len}"))
        .collect();
    cmds.extend(
        gaps(writes, VOL_SIZE)
            .iter()
            .map(|(off, len)| format!("read -P 0 {off} {len}")),
    );
    cmds
}

fn must_io(vol: &Path, direct: bool, cmds: &[String]) -> String {
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    must_qemu_io(vol, direct, &cmds)
}

fn must_write_read_back(direct: bool, writes: &[(u64, u64, u8)]) {
    if !require(&["qemu-io"]) {
        return;
    }
    let node = Node::start();
    let vol = must_volume(&node, "vm0");
    let mut cmds: Vec<String> = writes
        .iter()
        .map(|(off, len, pat)| format!("write -P {pat:#x} {off} {len}"))
        .collect();
    cmds.extend(verify_cmds(writes));
    cmds.push("flush".into());
    must_io(&vol, direct, &cmds);
    // A new process sees the same bytes, in both cache modes.
    must_io(&vol, direct, &verify_cmds(writes));
    must_io(&vol, !direct, &verify_cmds(writes));
    node.stop();
}

fn must_discard_frees_and_zeros(direct: bool) {
    if !require(&["qemu-io"]) {
        return;
    }
    let node = Node::start();
    let vol = must_volume(&node, "vm0");
    must_qemu_io(&vol, direct, &["write -P 0x77 0 16M", "flush"]);
    let before = allocated(&vol);
    assert!(
        before >= 16 * MIB,
        "16 MiB written, {before} bytes allocated"
    );
    must_qemu_io(
        &vol,
        direct,
        &[
            "discard 4M 8M",
            "discard 1049088 4096",
            "flush",
            "read -P 0 4M 8M",
            "read -P 0 1049088 4096",
            "read -P 0x77 0 1049088",
            "read -P 0x77 1053184 3141120",
            "read -P 0x77 12M 4M",
        ],
    );
    let after = allocated(&vol);
    assert!(
        after + 8 * MIB <= before,
        "discarding 8 MiB of whole objects freed {} bytes ({before} -> {after})",
        before.saturating_sub(after)
    );
    must_qemu_io(&vol, !direct, &["read -P 0 4M 8M", "read -P 0x77 12M 4M"]);
    node.stop();
}

fn must_write_zeroes_read_zeros(direct: bool) {
    if !require(&["qemu-io"]) {
        return;
    }
    let node = Node::start();
    let vol = must_volume(&node, "vm0");
    must_qemu_io(&vol, direct, &["write -P 0x33 0 16M", "flush"]);
    let before = allocated(&vol);
    must_qemu_io(
        &vol,
        direct,
        &[
            "write -z 2M 4M",
            "write -z -u 8M 4M",
            "flush",
            "read -P 0x33 0 2M",
            "read -P 0 2M 4M",
            "read -P 0x33 6M 2M",
            "read -P 0 8M 4M",
            "read -P 0x33 12M 4M",
        ],
    );
    let after = allocated(&vol);
    assert!(
        after + 4 * MIB <= before,
        "write -z -u of a whole object freed {} bytes ({before} -> {after})",
        before.saturating_sub(after)
    );
    must_qemu_io(&vol, !direct, &["read -P 0 2M 4M", "read -P 0 8M 4M"]);
    node.stop();
}

/// Bursts of aio writes: (offset, length, pattern byte), some across object boundaries.
const AIO_WRITES: &[(u64, u64, u8)] = &[
    (0, MIB, 0x01),
    (4 * MIB - 65536, 131_072, 0x02),
    (5 * MIB, 512, 0x03),
    (6 * MIB, 2 * MIB, 0x04),
    (8 * MIB + 4096, 4096, 0x05),
    (12 * MIB - 512, 1024, 0x06),
    (13 * MIB, 3 * MIB, 0x07),
    (16 * MIB, 4096, 0x08),
];

fn must_aio_bursts_read_back(direct: bool) {
    if !require(&["qemu-io"]) {
        return;
    }
    let node = Node::start();
    let vol = must_volume(&node, "vm0");
    let mut cmds: Vec<String> = AIO_WRITES
        .iter()
        .map(|(off, len, pat)| format!("aio_write -P {pat:#x} {off} {len}"))
        .collect();
    cmds.push("aio_flush".into());
    cmds.extend(verify_cmds(AIO_WRITES));
    cmds.push("flush".into());
    must_io(&vol, direct, &cmds);
    must_io(&vol, !direct, &verify_cmds(AIO_WRITES));
    node.stop();
}

#[test]
fn buffered_unaligned_writes_across_object_boundaries_read_back() {
    must_write_read_back(false, BUFFERED_WRITES);
}

#[test]
fn direct_writes_across_object_boundaries_read_back() {
    must_write_read_back(true, DIRECT_WRITES);
}

#[test]
fn buffered_discard_reads_zeros_and_frees_blocks() {
    must_discard_frees_and_zeros(false);
}

#[test]
fn direct_discard_reads_zeros_and_frees_blocks() {
    must_discard_frees_and_zeros(true);
}

#[test]
fn buffered_write_zeroes_reads_zeros_and_unmap_frees_blocks() {
    must_write_zeroes_read_zeros(false);
}

#[test]
fn direct_write_zeroes_reads_zeros_and_unmap_frees_blocks() {
    must_write_zeroes_read_zeros(true);
}

#[test]
fn buffered_aio_write_bursts_with_aio_flush_read_back() {
    must_aio_bursts_read_back(false);
}

#[test]
fn direct_aio_write_bursts_with_aio_flush_read_back() {
    must_aio_bursts_read_back(true);
}
