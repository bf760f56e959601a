//! `fio --verify=crc32c` on a real sheepfs mount: random direct writes of mixed sizes through
//! libaio, and sequential buffered writes.

use sheep_tests::cmd::{command_line, describe, run};
use sheep_tests::{require, Node};

/// Runs fio on `MNT/vol` with the common arguments and `extra`; panics unless it exits 0 and
/// reports no error or verify failure.
fn must_fio(node: &Node, extra: &[&str]) {
    let filename = format!("--filename={}", node.path("vol").display());
    let mut args = vec![
        "--name=v",
        filename.as_str(),
        "--size=256M",
        "--verify=crc32c",
    ];
    // No verify state file: fio would write it into the working directory (the package).
    args.extend(["--do_verify=1", "--verify_fatal=1", "--verify_state_save=0"]);
    args.push("--group_reporting");
    args.extend(extra);
    let out = run("fio", &args);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let line = command_line("fio", &args);
    assert!(out.status.success(), "{}", describe(&line, &out));
    assert!(
        text.contains("err= 0"),
        "fio reports an error\n{}",
        describe(&line, &out)
    );
    assert!(
        !text.contains("verify"),
        "fio reports a verify problem\n{}",
        describe(&line, &out)
    );
}

#[test]
fn fio_random_direct_writes_of_mixed_sizes_verify_with_crc32c() {
    if !require(&["fio"]) {
        return;
    }
    let node = Node::start();
    must_fio(
        &node,
        &[
            "--rw=randwrite",
            "--bsrange=4k-1M",
            "--ioengine=libaio",
            "--direct=1",
            "--iodepth=16",
        ],
    );
    node.stop();
}

#[test]
fn fio_sequential_buffered_writes_verify_with_crc32c() {
    if !require(&["fio"]) {
        return;
    }
    let node = Node::start();
    must_fio(
        &node,
        &[
            "--rw=write",
            "--bs=64k",
            "--ioengine=psync",
            "--direct=0",
            "--end_fsync=1",
        ],
    );
    node.stop();
}
