//! A store on a small file system that fills up: the writer gets ENOSPC, nothing already
//! written is damaged, and deleting a volume makes room again.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::thread;
use std::time::Duration;

use sheep_tests::file::{must_fsync, must_pread, pattern};
use sheep_tests::guard::{LoopDev, MountGuard};
use sheep_tests::{must_run, require, Node, MIB};

fn must_create_rw(path: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

/// Writes `pattern(seed)` in 1 MiB pieces from `offset` until `limit` bytes or an error.
/// Returns the bytes written and the error, if any.
fn write_until_error(file: &std::fs::File, seed: u64, limit: u64) -> (u64, Option<std::io::Error>) {
    let chunk = pattern(seed, 1 << 20);
    let mut done = 0;
    while done < limit {
        match file.write_at(&chunk, done) {
            Ok(n) => done += n as u64,
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

#[test]
fn a_full_store_gives_enospc_and_damages_nothing() {
    if !require(&["mkfs.ext4", "losetup", "mount", "umount"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = tmp.path().join("store.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(96 * MIB))
        .expect("store image");
    let dev = LoopDev::attach(&image);
    must_run("mkfs.ext4", &["-q".as_ref(), dev.path().as_os_str()]);
    let fs = MountGuard::mount(dev.path(), &tmp.path().join("fs"));
    let store = fs.path().join("store");
    let node = Node::start_on(&store, &[]);

    // 24 MiB of data that must survive, fsynced.
    let kept = must_create_rw(&node.path("kept"));
    let (n, err) = write_until_error(&kept, 1, 24 * MIB);
    assert!(
        err.is_none() && n == 24 * MIB,
        "writing the first volume: {err:?}"
    );
    must_fsync(&kept);

    // Fill the rest: the writer must see ENOSPC, not EIO and not success.
    let filler = std::fs::File::create(node.path("filler")).expect("create filler");
    let (written, err) = write_until_error(&filler, 2, 512 * MIB);
    let err = err.expect("a 512 MiB write into a 96 MiB store must fail");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOSPC),
        "{err} after {written} bytes"
    );
    assert!(
        written > 16 * MIB,
        "the filler got {written} bytes before ENOSPC"
    );
    let fsync = filler.sync_all();
    assert!(
        fsync.is_ok()
            || fsync
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::StorageFull),
        "{fsync:?}"
    );

    // What was written before is intact.
    let want = pattern(1, 1 << 20);
    for mib in [0, 7, 23] {
        assert_eq!(
            must_pread(&kept, mib * MIB, 1 << 20),
            want,
            "kept volume at {mib} MiB"
        );
    }

    // Deleting the filler makes room again (the reclaimer runs every 2 s).
    drop(filler);
    std::fs::remove_file(node.path("filler")).expect("rm filler");
    let mut again = std::fs::File::create(node.path("again")).expect("create again");
    let mut ok = false;
    for _ in 0..100 {
        if again.write_all(&pattern(3, 1 << 20)).is_ok() {
            ok = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "no room came back after deleting the filler");
    drop((kept, again));
    node.stop();
    fs.must_unmount();
}
