//! The daemon's resident memory stays within `--cache-size` under parallel large direct I/O,
//! and `dog node info` reports the budget, its peak and the daemon's VmRSS/VmHWM.

use sheep_tests::cmd::{command_line, describe, run};
use sheep_tests::{require, Node, MIB};

/// The cache size the daemon runs with.
const CACHE: u64 = 48 * MIB;

/// What the resident memory may grow by under load beyond the cache size: the malloc arenas
/// of the 32 FUSE threads and the data-path threads for their small allocations, page tables,
/// tracing, the open VDI's tables and descriptors (measured: 2-4 MiB).
const MARGIN: u64 = 16 * MIB;

/// `VmRSS` and `VmHWM` of process `pid`, in bytes.
fn rss_and_hwm(pid: u32) -> (u64, u64) {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {path}:\n{text}"))
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs fio with `job` on `MNT/vol`; panics with its output unless it exits 0 without errors.
fn must_fio(node: &Node, job: &[&str]) {
    let filename = format!("--filename={}", node.path("vol").display());
    let mut args = vec!["--name=mem", filename.as_str(), "--group_reporting"];
    args.extend(job);
    let out = run("fio", &args);
    let line = command_line("fio", &args);
    assert!(out.status.success(), "{}", describe(&line, &out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("err= 0"),
        "fio reports an error\n{}",
        describe(&line, &out)
    );
}

#[test]
fn parallel_large_direct_io_keeps_the_resident_memory_within_the_cache_size() {
    if !require(&["fio"]) {
        return;
    }
    let node = Node::start_with(&["--cache-size", "48M"]);
    std::fs::File::create(node.path("vol"))
        .and_then(|f| f.set_len(1 << 30))
        .expect("create the volume");
    let (idle_rss, idle_hwm) = rss_and_hwm(node.pid());
    let common = [
        "--bs=4M",
        "--iodepth=8",
        "--numjobs=4",
        "--direct=1",
        "--ioengine=libaio",
        "--size=256M",
    ];
    for rw in ["--rw=randwrite", "--rw=randread"] {
        let mut job = vec![rw];
        job.extend(common);
        must_fio(&node, &job);
    }
    let (rss, hwm) = rss_and_hwm(node.pid());
    let bound = idle_rss + CACHE + MARGIN;
    eprintln!(
        "idle VmRSS {} KiB, VmHWM {} KiB; after the load VmRSS {} KiB, VmHWM {} KiB, bound {} KiB",
        idle_rss >> 10,
        idle_hwm >> 10,
        rss >> 10,
        hwm >> 10,
        bound >> 10
    );
    assert!(
        hwm <= bound,
        "VmHWM {} MiB over idle VmRSS {} MiB (VmHWM {} MiB) + cache {} MiB + margin {} MiB\n{}",
        hwm / MIB,
        idle_rss / MIB,
        idle_hwm / MIB,
        CACHE / MIB,
        MARGIN / MIB,
        node.log()
    );

    let json = node.must_dog(&["node", "info", "--json"]);
    let info: serde_json::Value = serde_json::from_str(&json).expect("dog node info --json");
    let m = &info["memory"];
    let num = |key: &str| {
        m[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no memory.{key} in {json}"))
    };
    assert_eq!(num("cache_size"), CACHE, "{json}");
    assert_eq!(num("fuse_buffers") + num("io_budget"), CACHE, "{json}");
    assert!(num("peak") > 0, "the reads took no buffer: {json}");
    assert!(num("peak") <= num("io_budget"), "{json}");
    assert_eq!(num("in_use"), 0, "{json}");
    assert!(num("vm_hwm") >= hwm && num("vm_rss") > 0, "{json}");
    let text = node.must_dog(&["node", "info"]);
    eprintln!("{text}");
    assert!(text.contains("Cache size:     48 MiB"), "{text}");
    node.stop();
}
