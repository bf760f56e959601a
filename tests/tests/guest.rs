//! A QEMU guest whose virtio-blk disk is a sheepfs volume (BRIEF §9: "a QEMU guest booted from
//! a volume").
//!
//! `tests/guest/build-initramfs.sh` packs the host's Debian kernel, busybox and the virtio-blk
//! modules; its `/init` writes a seeded pattern to `/dev/vda` with O_DIRECT and fsync (a virtio
//! FLUSH), reads it back with O_DIRECT, prints `SHEEPTEST-OK <md5>` and powers off. The guest
//! runs under TCG (`-accel tcg`: KVM guests hang on these machines) with a hard timeout, killed
//! by PID. The host then checks the same bytes in the volume file, again after a daemon restart.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sheep_tests::env::which;
use sheep_tests::{in_ci, must_run, require, Node, MIB};
use tempfile::TempDir;

/// Size of the guest's disk.
const DISK_SIZE: &str = "256M";
/// Byte ranges the guest writes, as `(offset, length)`: the first object, a range over two
/// object boundaries (4 MiB and 8 MiB) and one over the 100 MiB boundary. Multiples of 4096.
const REGIONS: &[(u64, u64)] = &[
    (0, MIB),
    (4 * MIB - 4096, 4 * MIB + 8192),
    (100 * MIB - 65536, MIB),
];
/// Size of one pattern record (see `tests/guest/init`).
const RECORD: u64 = 64;
/// Hard limit for one guest run. A boot under TCG takes 10-20 s on an idle core.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// Returns the bytes `tests/guest/init` writes at `off..off + len` for `seed`: 64-byte records
/// `sheeptest seed=SEED off=OFFSET`, left-aligned in 63 bytes of spaces, then a newline.
fn expected(seed: &str, off: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(len).expect("region fits usize"));
    for x in (off..off + len).step_by(usize::try_from(RECORD).expect("record size")) {
        let text = format!("sheeptest seed={seed} off={x}");
        out.extend_from_slice(format!("{text:<63}\n").as_bytes());
    }
    out
}

/// The `sheeptest=` value for `mode`, with the regions spelled out so that this file is the one
/// source of truth for where the guest writes.
fn sheeptest_arg(mode: &str, seed: &str) -> String {
    let regions: Vec<String> = REGIONS.iter().map(|(o, n)| format!("{o}+{n}")).collect();
    format!("{mode}:{seed}:{}", regions.join(","))
}

/// Builds the guest kernel + initramfs into a fresh temporary directory.
fn guest_kit() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/build-initramfs.sh");
    let out = must_run("bash", &[script.as_os_str(), dir.path().as_os_str()]);
    eprintln!("{}", out.trim());
    dir
}

/// Returns true if a kernel for the guest is installed; under CI its absence is a failure.
fn have_guest_kernel() -> bool {
    let found = std::fs::read_dir("/boot").is_ok_and(|dir| {
        dir.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
    });
    assert!(
        found || !in_ci(),
        "no /boot/vmlinuz-*: apt-get install -y linux-image-amd64 (CI=true: a failure)"
    );
    if !found {
        eprintln!(
            "\n!!!!!!!! SKIPPED: no /boot/vmlinuz-* (apt-get install linux-image-amd64) !!!!!!!!\n"
        );
    }
    found
}

/// Boots the guest once on `disk` with `-drive cache=CACHE`, and returns its console output.
/// Kills QEMU (by PID) after [`BOOT_TIMEOUT`].
fn boot(kit: &Path, disk: &Path, cache: &str, arg: &str) -> String {
    let console: PathBuf = kit.join(format!("console-{cache}.log"));
    let log = File::create(&console).expect("create console log");
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-machine",
            "q35",
            "-m",
            "256",
            "-nographic",
        ])
        .args(["-no-reboot", "-nic", "none", "-kernel"])
        .arg(kit.join("vmlinuz"))
        .arg("-initrd")
        .arg(kit.join("initramfs.cpio.gz"))
        .arg("-append")
        // no_timer_check: under TCG on busy cores the guest's IO-APIC timer check can time out
        // and panic at boot ("IO-APIC + timer doesn't work!"; seen once in a CI run).
        .arg(format!(
            "console=ttyS0 panic=-1 no_timer_check loglevel=3 sheeptest={arg}"
        ))
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,cache={cache}",
            disk.display()
        ))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("spawn qemu-system-x86_64");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for qemu") {
            break Some(status);
        }
        if start.elapsed() > BOOT_TIMEOUT {
            // Child::kill sends SIGKILL to this child's PID only.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).into_owned();
    eprintln!(
        "guest (cache={cache}) ran {:.1} s, qemu status {status:?}",
        start.elapsed().as_secs_f64()
    );
    assert!(
        status.is_some(),
        "guest did not power off within {BOOT_TIMEOUT:?}; console:\n{text}"
    );
    text
}

/// Asserts that `path` holds the guest's pattern for `seed` in every region.
fn assert_pattern_on_host(path: &Path, seed: &str) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    for &(off, len) in REGIONS {
        let want = expected(seed, off, len);
        let mut got = vec![0u8; want.len()];
        file.read_exact_at(&mut got, off)
            .unwrap_or_else(|e| panic!("read {}+{len} of {}: {e}", off, path.display()));
        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
            let at = off + u64::try_from(i).expect("index fits u64");
            let end = (i + 64).min(got.len());
            panic!(
                "{} differs from the guest's pattern at byte {at}: got {:?}, want {:?}",
                path.display(),
                String::from_utf8_lossy(&got[i..end]),
                String::from_utf8_lossy(&want[i..end])
            );
        }
    }
}

/// The whole test for one QEMU cache mode.
fn guest_round_trip(cache: &str) {
    if !require(&["qemu-system-x86_64", "cpio", "busybox", "truncate", "gzip"])
        || !have_guest_kernel()
    {
        return;
    }
    let kit = guest_kit();
    let node = Node::start();
    let vol = node.path("vol");
    must_run(
        "truncate",
        &[
            Path::new("-s").as_os_str(),
            DISK_SIZE.as_ref(),
            vol.as_os_str(),
        ],
    );
    let seed = format!("{cache}-{:08x}", rand::random::<u32>());

    let console = boot(kit.path(), &vol, cache, &sheeptest_arg("write", &seed));
    let result = console.lines().find(|l| l.contains("SHEEPTEST-"));
    assert!(
        result.is_some_and(|l| l.contains("SHEEPTEST-OK")),
        "guest result: {result:?}\n--- console ---\n{console}\n{}",
        node.log()
    );
    assert_pattern_on_host(&vol, &seed);

    // What the guest flushed survives a clean restart of the daemon.
    let store = node.stop();
    let node = Node::start_on(&store, &[]);
    assert_pattern_on_host(&node.path("vol"), &seed);
    node.stop();
}

/// Checks the guest's own tools and kernel, for the baseline test that needs no daemon.
fn have_guest_tools() -> bool {
    let tools = ["qemu-system-x86_64", "cpio", "busybox", "gzip"];
    let missing: Vec<&str> = tools.into_iter().filter(|t| which(t).is_none()).collect();
    assert!(
        missing.is_empty() || !in_ci(),
        "missing {missing:?} (CI=true: a failure)"
    );
    if !missing.is_empty() {
        eprintln!("\n!!!!!!!! SKIPPED: missing {missing:?} !!!!!!!!\n");
        return false;
    }
    have_guest_kernel()
}

/// The baseline: the same guest on a plain local file. When this passes and the sheepfs tests
/// fail, the kit (kernel, initramfs, QEMU) is fine and sheepfs is not.
#[test]
fn guest_kit_works_on_a_plain_local_file() {
    if !have_guest_tools() {
        return;
    }
    let kit = guest_kit();
    let disk = kit.path().join("disk.raw");
    File::create(&disk)
        .and_then(|f| f.set_len(256 * MIB))
        .expect("create disk.raw");
    let seed = format!("local-{:08x}", rand::random::<u32>());
    let console = boot(kit.path(), &disk, "none", &sheeptest_arg("write", &seed));
    assert!(
        console.contains("SHEEPTEST-OK"),
        "--- console ---\n{console}"
    );
    assert_pattern_on_host(&disk, &seed);
}

#[test]
fn guest_writes_flushes_and_reads_back_with_cache_none() {
    guest_round_trip("none");
}

#[test]
fn guest_writes_flushes_and_reads_back_with_cache_writeback() {
    guest_round_trip("writeback");
}

#[test]
fn expected_pattern_has_64_byte_records_with_their_offsets() {
    let data = expected("s1", 4096, 128);
    assert_eq!(data.len(), 128);
    assert!(data.starts_with(b"sheeptest seed=s1 off=4096 "));
    assert_eq!(&data[64..90], b"sheeptest seed=s1 off=4160");
    assert_eq!(data[63], b'\n');
    assert_eq!(sheeptest_arg("write", "x").split(':').count(), 3);
}
