//! ext4 on a loop device over a sheepfs volume: mkfs, a tree of files, fsck, and a daemon
//! restart that brings every byte back.

use std::path::{Path, PathBuf};

use sheep_tests::file::{len, must_create, pattern, utf8};
use sheep_tests::{must_run, require, LoopDev, MountGuard, Node, MIB};

/// Number of files in the tree.
const FILES: u64 = 50;

/// Writes `FILES` files of pseudo-random content under `dir`, in a few subdirectories; every
/// tenth file is a few MiB, the others up to 200 KiB. Returns the total size.
fn must_make_tree(dir: &Path) -> u64 {
    let mut total = 0;
    for i in 0..FILES {
        let sub = dir.join(format!("d{}", i % 5));
        std::fs::create_dir_all(&sub).expect("create tree directory");
        let size = if i % 10 == 0 {
            2 * MIB + i * 4099
        } else {
            1 + i * 4001
        };
        std::fs::write(sub.join(format!("f{i:02}")), pattern(1000 + i, len(size)))
            .expect("write tree file");
        total += size;
    }
    total
}

/// Returns `sha256sum` lines for every file under `dir`, by relative path, sorted.
fn must_tree_digest(dir: &Path) -> String {
    let script = "cd \"$1\" && find . -type f -print0 | sort -z | xargs -0 sha256sum";
    let digest = must_run("sh", &["-c", script, "sh", utf8(dir)]);
    assert_eq!(
        digest.lines().count(),
        usize::try_from(FILES).expect("fits"),
        "{digest}"
    );
    digest
}

fn must_fsck_clean(dev: &Path) {
    must_run("e2fsck", &["-fn", utf8(dev)]);
}

/// Attaches `vol`, mounts it on `dir`, checks the tree against `want`, unmounts and fscks.
fn must_check_tree(vol: &Path, dir: &Path, want: &str) {
    let dev = LoopDev::attach(vol);
    must_fsck_clean(dev.path());
    let mnt = MountGuard::mount(dev.path(), dir);
    assert_eq!(
        must_tree_digest(&mnt.path().join("tree")),
        want,
        "tree after restart"
    );
    mnt.must_unmount();
    must_fsck_clean(dev.path());
}

#[test]
fn ext4_on_a_loop_device_survives_fsck_and_a_daemon_restart() {
    if !require(&["losetup", "mkfs.ext4", "e2fsck", "sha256sum", "cp", "sync"]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let src: PathBuf = work.path().join("src");
    must_make_tree(&src);
    let want = must_tree_digest(&src);
    let mnt_dir = work.path().join("ext4");

    let node = Node::start();
    let vol = node.path("ext4vol");
    drop(must_create(&vol, 512 * MIB));
    {
        let dev = LoopDev::attach(&vol);
        must_run("mkfs.ext4", &["-q", utf8(dev.path())]);
        let mnt = MountGuard::mount(dev.path(), &mnt_dir);
        let tree = mnt.path().join("tree");
        must_run("cp", &["-a", utf8(&src), utf8(&tree)]);
        must_run("sync", &["-f", utf8(&tree)]);
        assert_eq!(must_tree_digest(&tree), want, "tree on ext4");
        mnt.must_unmount();
        must_fsck_clean(dev.path());
    }
    let store = node.stop();
    let node = Node::start_on(&store, &[]);
    must_check_tree(&node.path("ext4vol"), &mnt_dir, &want);
    node.stop();
}
