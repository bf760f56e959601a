//! POSIX behaviour of the mount: refused node types, rename, unlink while open, attributes,
//! statfs, SEEK_DATA/SEEK_HOLE, fallocate, ftruncate, O_DIRECT, concurrent I/O, byte-range
//! locks (also through QEMU's image locking), fsync.

use std::fs::{File, FileTimes};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{fallocate, fcntl, FallocateFlags, FcntlArg};
use nix::sys::stat::Mode;
use nix::unistd::{lseek, Whence};
use rand::{Rng, SeedableRng};
use sheep_tests::cmd::{command_line, describe, run};
use sheep_tests::file::{allocated, assert_same_bytes, assert_zeros, len, must_create};
use sheep_tests::file::{must_fsync, must_list, must_metadata, must_open_direct, must_open_rw};
use sheep_tests::file::{must_pread, must_pwrite, must_read_all, pattern, utf8, AlignedBuf};
use sheep_tests::vm::must_start_vm_holding;
use sheep_tests::{must_run, require, Node, MIB, OBJECT_SIZE};

fn errno_of(err: &std::io::Error) -> Option<Errno> {
    err.raw_os_error().map(Errno::from_raw)
}

/// Checks that `result` failed with EPERM and that `name` does not exist afterwards.
fn refusal(node: &Node, what: &str, name: &str, result: Result<(), Errno>) -> Option<String> {
    let left = must_list(&node.mount).contains(&name.to_owned());
    match result {
        Err(Errno::EPERM) if !left => None,
        Err(e) if !left => Some(format!("{what}: {e} ({}), want EPERM", e as i32)),
        Err(e) => Some(format!("{what}: {e} but left {name} behind")),
        Ok(()) => Some(format!("{what} succeeded, want EPERM")),
    }
}

fn io_errno(result: std::io::Result<()>) -> Result<(), Errno> {
    result.map_err(|e| errno_of(&e).unwrap_or(Errno::UnknownErrno))
}

#[test]
fn mkdir_symlink_link_and_mknod_are_refused_with_eperm_and_leave_nothing_behind() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    drop(must_create(&node.path("vol"), MIB));
    let failures: Vec<String> = [
        refusal(
            &node,
            "mkdir",
            "dir",
            io_errno(std::fs::create_dir(node.path("dir"))),
        ),
        refusal(
            &node,
            "symlink",
            "sym",
            io_errno(std::os::unix::fs::symlink("vol", node.path("sym"))),
        ),
        refusal(
            &node,
            "link",
            "hard",
            io_errno(std::fs::hard_link(node.path("vol"), node.path("hard"))),
        ),
        refusal(
            &node,
            "mkfifo",
            "fifo",
            nix::unistd::mkfifo(&node.path("fifo"), Mode::from_bits_truncate(0o644)),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(must_list(&node.mount), vec!["vol".to_owned()]);
    node.stop();
}

/// Writes a 4 KiB file whose every 8-byte word is `generation`, fsynced.
fn must_write_generation(path: &Path, generation: u64) {
    let file = must_create(path, 0);
    must_pwrite(&file, 0, &generation.to_le_bytes().repeat(512));
    must_fsync(&file);
}

/// Opens `path` in a loop until `stop`; returns the first failure or the generations seen.
fn rename_reader(path: &Path, stop: &AtomicBool) -> Result<Vec<u64>, String> {
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let file = File::open(path).map_err(|e| format!("open during rename: {e}"))?;
        let mut word = [0; 8];
        file.read_exact_at(&mut word, 0)
            .map_err(|e| format!("read during rename: {e}"))?;
        seen.push(u64::from_le_bytes(word));
    }
    Ok(seen)
}

#[test]
fn rename_over_an_existing_file_replaces_it_atomically() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let target = node.path("vm0");
    must_write_generation(&target, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (target, stop) = (target.clone(), Arc::clone(&stop));
        thread::spawn(move || rename_reader(&target, &stop))
    };
    for generation in 1..=30 {
        let tmp = node.path(&format!("tmp{generation}"));
        must_write_generation(&tmp, generation);
        std::fs::rename(&tmp, &target).unwrap_or_else(|e| panic!("rename {generation}: {e}"));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = reader
        .join()
        .expect("reader thread")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "generations went back: {seen:?}"
    );
    assert_eq!(must_read_all(&target), 30_u64.to_le_bytes().repeat(512));
    assert_eq!(must_list(&node.mount), vec!["vm0".to_owned()]);
    node.stop();
}

#[test]
fn unlinked_file_keeps_working_through_an_open_fd_until_close() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let path = node.path("gone");
    let file = must_create(&path, 8 * MIB);
    must_pwrite(&file, OBJECT_SIZE - 10, &pattern(1, 100));
    std::fs::remove_file(&path).expect("unlink");
    assert!(must_list(&node.mount).is_empty(), "unlinked name is gone");
    assert_same_bytes(
        &must_pread(&file, OBJECT_SIZE - 10, 100),
        &pattern(1, 100),
        0,
        "after unlink",
    );
    must_pwrite(&file, 6 * MIB, &pattern(2, 5000));
    must_fsync(&file);
    assert_same_bytes(
        &must_pread(&file, 6 * MIB, 5000),
        &pattern(2, 5000),
        0,
        "write after unlink",
    );
    assert_eq!(file.metadata().expect("fstat after unlink").len(), 8 * MIB);
    drop(file);
    let again = must_create(&path, 0);
    assert_eq!(
        again.metadata().expect("fstat").len(),
        0,
        "a new file of the same name is new"
    );
    drop(again);
    node.stop();
}

#[test]
fn chmod_chown_and_utimes_are_stored_and_survive_a_restart() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let vol = node.path("vm0");
    drop(must_create(&vol, MIB));
    std::fs::set_permissions(&vol, PermissionsExt::from_mode(0o604)).expect("chmod");
    std::os::unix::fs::chown(&vol, Some(107), Some(108)).expect("chown to qemu");
    let when = SystemTime::UNIX_EPOCH + Duration::new(1_500_000_000, 5000);
    let file = File::options().write(true).open(&vol).expect("open");
    file.set_times(FileTimes::new().set_accessed(when).set_modified(when))
        .expect("utimes");
    drop(file);
    let check = |node: &Node, what: &str| {
        let meta = must_metadata(&node.path("vm0"));
        assert_eq!(meta.mode() & 0o7777, 0o604, "mode {what}");
        assert_eq!((meta.uid(), meta.gid()), (107, 108), "owner {what}");
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec()),
            (1_500_000_000, 5000),
            "mtime {what}"
        );
        assert!(meta.is_file(), "still a regular file {what}");
    };
    check(&node, "before restart");
    let store = node.stop();
    let node = Node::start_on(&store, &[]);
    check(&node, "after restart");
    node.stop();
}

#[test]
fn statfs_reports_sane_sizes_and_df_works() {
    if !require(&["df"]) {
        return;
    }
    let node = Node::start();
    let fs = nix::sys::statvfs::statvfs(&node.mount).expect("statvfs mount");
    let store = nix::sys::statvfs::statvfs(&node.store).expect("statvfs store");
    let total = fs.blocks() * fs.fragment_size();
    let store_total = store.blocks() * store.fragment_size();
    assert!(
        fs.block_size() > 0 && fs.blocks() > 0,
        "empty statfs: {fs:?}"
    );
    assert!(
        fs.blocks_free() <= fs.blocks() && fs.blocks_available() <= fs.blocks_free(),
        "{fs:?}"
    );
    assert!(
        total <= store_total,
        "mount {total} bytes > store fs {store_total} bytes"
    );
    assert!(fs.name_max() > 0, "{fs:?}");
    let df = must_run("df", &["-B1", utf8(&node.mount)]);
    assert!(df.contains(utf8(&node.mount)), "{df}");
    node.stop();
}

fn seek(file: &File, offset: u64, whence: Whence) -> Result<u64, Errno> {
    let offset = i64::try_from(offset).expect("fits");
    lseek(file.as_raw_fd(), offset, whence).map(|o| u64::try_from(o).expect("positive"))
}

#[test]
fn seek_data_and_seek_hole_find_data_at_0_and_8m_in_a_16m_file() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let file = must_create(&node.path("vm0"), 16 * MIB);
    must_pwrite(&file, 0, &pattern(1, 4096));
    must_pwrite(&file, 8 * MIB, &pattern(2, 4096));
    must_fsync(&file);
    let (data, hole) = (Whence::SeekData, Whence::SeekHole);
    assert_eq!(seek(&file, 0, data), Ok(0), "SEEK_DATA from 0");
    let first_hole = seek(&file, 0, hole).expect("SEEK_HOLE from 0");
    assert!(
        (4096..=OBJECT_SIZE).contains(&first_hole),
        "SEEK_HOLE from 0 = {first_hole}"
    );
    assert_eq!(
        seek(&file, OBJECT_SIZE, data),
        Ok(8 * MIB),
        "SEEK_DATA from 4M"
    );
    let second_hole = seek(&file, 8 * MIB, hole).expect("SEEK_HOLE from 8M");
    assert!(
        (8 * MIB + 4096..=12 * MIB).contains(&second_hole),
        "SEEK_HOLE from 8M = {second_hole}"
    );
    assert_eq!(
        seek(&file, 12 * MIB, data),
        Err(Errno::ENXIO),
        "SEEK_DATA from 12M"
    );
    assert_eq!(
        seek(&file, 12 * MIB, hole),
        Ok(12 * MIB),
        "SEEK_HOLE from 12M"
    );
    assert_eq!(
        seek(&file, 16 * MIB, data),
        Err(Errno::ENXIO),
        "SEEK_DATA at EOF"
    );
    drop(file);
    node.stop();
}

fn must_fallocate(file: &File, flags: FallocateFlags, offset: u64, n: u64) {
    let (o, l) = (
        i64::try_from(offset).expect("fits"),
        i64::try_from(n).expect("fits"),
    );
    fallocate(file.as_raw_fd(), flags, o, l)
        .unwrap_or_else(|e| panic!("fallocate({flags:?}, {offset}, {n}): {e}"));
}

/// Creates a 16 MiB file full of data, fsynced; returns it and its allocated bytes.
fn must_full_volume(node: &Node) -> (File, u64) {
    let file = must_create(&node.path("vm0"), 16 * MIB);
    must_pwrite(&file, 0, &pattern(3, len(16 * MIB)));
    must_fsync(&file);
    let used = allocated(&node.path("vm0"));
    assert!(used >= 16 * MIB, "16 MiB written, {used} allocated");
    (file, used)
}

fn must_free_at_least(node: &Node, before: u64, freed: u64, what: &str) {
    let after = allocated(&node.path("vm0"));
    assert!(
        after + freed <= before,
        "{what} freed {} bytes, want {freed} ({before} -> {after})",
        before.saturating_sub(after)
    );
}

#[test]
fn punch_hole_frees_space_and_reads_zeros() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let (file, before) = must_full_volume(&node);
    let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    must_fallocate(&file, punch, 4 * MIB, 8 * MIB);
    must_fallocate(&file, punch, 100, 5000);
    assert_eq!(file.metadata().expect("fstat").len(), 16 * MIB, "KEEP_SIZE");
    assert_zeros(
        &must_pread(&file, 4 * MIB, len(8 * MIB)),
        4 * MIB,
        "punched objects",
    );
    assert_zeros(&must_pread(&file, 100, 5000), 100, "punched bytes");
    let all = pattern(3, len(16 * MIB));
    assert_same_bytes(
        &must_pread(&file, 5100, 4000),
        &all[5100..9100],
        5100,
        "after small hole",
    );
    assert_same_bytes(
        &must_pread(&file, 12 * MIB, 4096),
        &all[len(12 * MIB)..len(12 * MIB) + 4096],
        12 * MIB,
        "after hole",
    );
    must_free_at_least(&node, before, 8 * MIB, "PUNCH_HOLE of 8 MiB");
    drop(file);
    node.stop();
}

#[test]
fn zero_range_reads_zeros_and_frees_whole_objects() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let (file, before) = must_full_volume(&node);
    must_fallocate(
        &file,
        FallocateFlags::FALLOC_FL_ZERO_RANGE,
        4 * MIB,
        4 * MIB,
    );
    must_fallocate(
        &file,
        FallocateFlags::FALLOC_FL_ZERO_RANGE,
        10 * MIB + 3,
        777,
    );
    assert_zeros(
        &must_pread(&file, 4 * MIB, len(4 * MIB)),
        4 * MIB,
        "zeroed object",
    );
    assert_zeros(
        &must_pread(&file, 10 * MIB + 3, 777),
        10 * MIB + 3,
        "zeroed bytes",
    );
    assert_eq!(file.metadata().expect("fstat").len(), 16 * MIB);
    must_free_at_least(&node, before, 4 * MIB, "ZERO_RANGE of a whole object");
    drop(file);
    node.stop();
}

#[test]
fn plain_fallocate_is_accepted_and_extends_the_file() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let file = must_create(&node.path("vm0"), 0);
    must_fallocate(&file, FallocateFlags::empty(), 0, 8 * MIB);
    assert_eq!(
        file.metadata().expect("fstat").len(),
        8 * MIB,
        "fallocate extends the size"
    );
    assert_zeros(&must_pread(&file, 0, len(8 * MIB)), 0, "preallocated range");
    must_fallocate(&file, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, 16 * MIB);
    assert_eq!(
        file.metadata().expect("fstat").len(),
        8 * MIB,
        "KEEP_SIZE keeps the size"
    );
    drop(file);
    node.stop();
}

#[test]
fn ftruncate_shrink_then_grow_reads_zeros_past_the_old_end() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let file = must_create(&node.path("vm0"), 0);
    must_pwrite(&file, 0, &vec![0xaa; len(8 * MIB)]);
    let cut = 5 * MIB + 123;
    file.set_len(cut).expect("ftruncate shrink");
    file.set_len(8 * MIB).expect("ftruncate grow");
    must_fsync(&file);
    assert!(
        must_pread(&file, 0, len(cut)).iter().all(|&b| b == 0xaa),
        "data before the cut"
    );
    assert_zeros(
        &must_pread(&file, cut, len(8 * MIB - cut)),
        cut,
        "past the old end",
    );
    let fresh = File::open(node.path("vm0")).expect("open");
    assert_zeros(
        &must_pread(&fresh, cut, len(8 * MIB - cut)),
        cut,
        "past the old end, new fd",
    );
    drop((file, fresh));
    node.stop();
}

#[test]
fn o_direct_512_aligned_reads_and_writes_round_trip() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    drop(must_create(&node.path("vm0"), 12 * MIB));
    let file = must_open_direct(&node.path("vm0"));
    let writes = [
        (512 * 7, 512 * 3, 1),
        (OBJECT_SIZE - 512, 1024, 2),
        (8 * MIB - 65536, 131_072, 3),
    ];
    for &(at, n, seed) in &writes {
        let buf = AlignedBuf::from_slice(&pattern(seed, n));
        file.write_all_at(buf.as_slice(), at)
            .unwrap_or_else(|e| panic!("O_DIRECT write at {at}: {e}"));
    }
    must_fsync(&file);
    let buffered = File::open(node.path("vm0")).expect("open");
    for &(at, n, seed) in &writes {
        let mut buf = AlignedBuf::zeroed(n);
        file.read_exact_at(buf.as_mut_slice(), at)
            .unwrap_or_else(|e| panic!("O_DIRECT read at {at}: {e}"));
        assert_same_bytes(buf.as_slice(), &pattern(seed, n), at, "O_DIRECT read");
        assert_same_bytes(
            &must_pread(&buffered, at, n),
            &pattern(seed, n),
            at,
            "buffered read",
        );
    }
    drop((file, buffered));
    node.stop();
}

/// Number of threads of the concurrent I/O test, and the bytes each one owns.
const THREADS: u64 = 8;
const REGION: u64 = 3 * MIB + 4097;

/// Random unaligned writes and verifying reads inside the thread's own region, checked
/// against an in-memory copy; returns the copy.
fn region_worker(file: &File, index: u64) -> Vec<u8> {
    let base = index * REGION;
    let mut model = vec![0; len(REGION)];
    let mut rng = rand::rngs::StdRng::seed_from_u64(index);
    for op in 0..150 {
        let at = rng.gen_range(0..REGION - 1);
        let n = rng.gen_range(1..=(REGION - at).min(300_000));
        let (a, b) = (len(at), len(at + n));
        if op % 3 == 2 {
            assert_same_bytes(
                &must_pread(file, base + at, len(n)),
                &model[a..b],
                base + at,
                "thread read",
            );
        } else {
            let data = pattern(index * 1000 + op, len(n));
            must_pwrite(file, base + at, &data);
            model[a..b].copy_from_slice(&data);
        }
    }
    model
}

#[test]
fn concurrent_unaligned_io_from_8_threads_matches_an_in_memory_copy() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let file = Arc::new(must_create(&node.path("vm0"), THREADS * REGION));
    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let file = Arc::clone(&file);
            thread::spawn(move || region_worker(&file, i))
        })
        .collect();
    let model: Vec<u8> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    must_fsync(&file);
    assert_same_bytes(&must_read_all(&node.path("vm0")), &model, 0, "whole file");
    drop(file);
    node.stop();
}

fn write_lock(start: i64, n: i64) -> libc::flock {
    libc::flock {
        l_type: i16::try_from(libc::F_WRLCK).expect("fits"),
        l_whence: i16::try_from(libc::SEEK_SET).expect("fits"),
        l_start: start,
        l_len: n,
        l_pid: 0,
    }
}

fn unlock(start: i64, n: i64) -> libc::flock {
    libc::flock {
        l_type: i16::try_from(libc::F_UNLCK).expect("fits"),
        ..write_lock(start, n)
    }
}

#[test]
fn ofd_and_posix_locks_conflict_across_open_files_with_eagain() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    drop(must_create(&node.path("vm0"), MIB));
    let (fa, fb) = (
        must_open_rw(&node.path("vm0")),
        must_open_rw(&node.path("vm0")),
    );
    let (a, b) = (fa.as_raw_fd(), fb.as_raw_fd());
    fcntl(a, FcntlArg::F_OFD_SETLK(&write_lock(0, 100))).expect("first OFD lock");
    assert_eq!(
        fcntl(b, FcntlArg::F_OFD_SETLK(&write_lock(50, 10))),
        Err(Errno::EAGAIN),
        "conflicting OFD lock"
    );
    fcntl(b, FcntlArg::F_OFD_SETLK(&write_lock(100, 10))).expect("adjacent OFD lock");
    fcntl(a, FcntlArg::F_OFD_SETLK(&unlock(0, 100))).expect("OFD unlock");
    fcntl(b, FcntlArg::F_OFD_SETLK(&write_lock(50, 10))).expect("OFD lock after unlock");
    fcntl(a, FcntlArg::F_SETLK(&write_lock(1000, 10))).expect("POSIX lock");
    assert_eq!(
        fcntl(b, FcntlArg::F_OFD_SETLK(&write_lock(1005, 1))),
        Err(Errno::EAGAIN),
        "OFD lock over a POSIX lock"
    );
    drop((fa, fb));
    node.stop();
}

#[test]
fn qemu_io_refuses_to_write_an_image_that_a_running_vm_holds() {
    if !require(&["qemu-io", "qemu-system-x86_64"]) {
        return;
    }
    let node = Node::start();
    let vol = node.path("vm0");
    drop(must_create(&vol, 16 * MIB));
    let mut vm = must_start_vm_holding(&vol);
    let args = ["-f", "raw", "-c", "write 0 512", utf8(&vol)];
    let out = run("qemu-io", &args);
    let err = String::from_utf8_lossy(&out.stderr);
    let refused = !out.status.success() && err.contains("Failed to get") && err.contains("lock");
    assert!(
        refused,
        "second writer not refused: {}",
        describe(&command_line("qemu-io", &args), &out)
    );
    must_run(
        "qemu-io",
        &["-r", "-f", "raw", "-c", "read 0 512", utf8(&vol)],
    );
    assert!(vm.try_wait().is_none(), "the VM exited early");
    drop(vm);
    must_run("qemu-io", &["-f", "raw", "-c", "write 0 512", utf8(&vol)]);
    node.stop();
}

#[test]
fn fsync_and_fdatasync_succeed() {
    if !require(&[]) {
        return;
    }
    let node = Node::start();
    let file = must_create(&node.path("vm0"), 8 * MIB);
    must_pwrite(&file, 3 * MIB, &pattern(9, len(2 * MIB)));
    file.sync_data().expect("fdatasync");
    must_pwrite(&file, 0, b"meta");
    file.set_len(9 * MIB).expect("grow");
    file.sync_all().expect("fsync");
    assert!(matches!(
        File::open(node.path("none")).map_err(|e| e.kind()),
        Err(ErrorKind::NotFound)
    ));
    drop(file);
    node.stop();
}
