//! The daemon's memory plan (`--cache-size`) and its report (`dog node info`).
//!
//! `--cache-size` is the memory the daemon may spend on I/O buffers. It is split in two:
//!
//! ```text
//! cache size = FUSE receive buffers               + I/O buffer budget
//!              threads x (max_write + 4 KiB)        every other large I/O buffer
//!              (fuser's, one per worker thread,     (sheep_objects::budget: FUSE read
//!               touched as far as requests fill it)  replies, data-channel bodies, images)
//! ```
//!
//! fuser gives each worker thread a receive buffer that a write request fills up to
//! `max_write` (plus its header); those pages stay resident once touched, whatever the load
//! is afterwards, so they are bounded by choosing `max_write` and the thread count: the FUSE
//! buffers may take at most three quarters of the cache size. `max_write` is halved (from 4 MiB,
//! or what `fs.fuse.max_pages_limit` allows, down to 128 KiB) until they fit; if they still do
//! not fit at 128 KiB, the thread count is lowered. What is left, at least a quarter, is the
//! budget of every other I/O buffer. With the default 256 MiB and 32 threads: 4 MiB writes
//! (128.1 MiB of FUSE buffers) and a 127.9 MiB budget; with 48 MiB: 1 MiB writes, 15.9 MiB.
//!
//! Not bounded by it (the rest of the resident memory, about 11 MiB on an idle host with a
//! release build): the code, the tokio and libp2p runtimes, the metadata (inode records and
//! allocation tables of open VDIs), thread stacks, and buffers under 64 KiB (a FUSE worker's
//! buffer of small reads, at most `threads x 64 KiB`; data-channel messages under 64 KiB, one
//! or two per connection at a time). The kernel's page cache of the store, which caches the
//! object data, is not the daemon's memory.

use sheep_admin::MemoryInfo;
use sheep_objects::MemBudget;
use std::sync::Arc;

/// Default `--cache-size`.
pub const DEFAULT_CACHE_SIZE: u64 = 256 << 20;
/// Smallest `--cache-size`.
pub const MIN_CACHE_SIZE: u64 = 16 << 20;
/// What a fuser receive buffer holds beyond `max_write`: the request's header, a page.
pub const FUSE_HEADER_ROOM: u64 = 4096;
/// Smallest `max_write` the plan chooses (what FUSE recommends at least).
pub const MIN_MAX_WRITE: u32 = 128 << 10;

/// How the cache size is spent; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// `--cache-size`, in bytes.
    pub cache_size: u64,
    /// FUSE worker threads.
    pub threads: usize,
    /// Largest FUSE request (write or read), in bytes.
    pub max_write: u32,
    /// `threads x (max_write + FUSE_HEADER_ROOM)`.
    pub fuse_buffers: u64,
    /// The budget of every other large I/O buffer: `cache_size - fuse_buffers`.
    pub io_budget: u64,
}

/// Plans `cache_size` for `threads` worker threads whose requests may be up to `max_write`
/// bytes (as the kernel allows); see the module docs for the rule.
pub fn plan(cache_size: u64, threads: usize, max_write: u32) -> MemoryPlan {
    let share = cache_size / 4 * 3;
    let per_thread = |w: u32| u64::from(w) + FUSE_HEADER_ROOM;
    let total = |n: usize, w: u32| (n as u64).saturating_mul(per_thread(w));
    let mut threads = threads.max(1);
    let mut max_write = max_write.max(MIN_MAX_WRITE);
    while max_write > MIN_MAX_WRITE && total(threads, max_write) > share {
        max_write = (max_write / 2 / 4096 * 4096).max(MIN_MAX_WRITE);
    }
    if total(threads, max_write) > share {
        let fit = share / per_thread(max_write);
        threads = usize::try_from(fit).unwrap_or(usize::MAX).max(1);
    }
    let fuse_buffers = total(threads, max_write);
    MemoryPlan {
        cache_size,
        threads,
        max_write,
        fuse_buffers,
        io_budget: cache_size.saturating_sub(fuse_buffers),
    }
}

/// Resident memory of this process, from `/proc/self/status`, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcMemory {
    /// `VmRSS`: resident now.
    pub rss: u64,
    /// `VmHWM`: the most ever resident.
    pub hwm: u64,
}

impl ProcMemory {
    /// This process's figures (zeros where `/proc` cannot be read).
    pub fn current() -> ProcMemory {
        std::fs::read_to_string("/proc/self/status")
            .map(|s| ProcMemory::parse(&s))
            .unwrap_or_default()
    }

    /// Reads `VmRSS` and `VmHWM` (in kB) from the text of a `/proc/PID/status`.
    pub fn parse(status: &str) -> ProcMemory {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(0, |kb| kb.saturating_mul(1024))
        };
        ProcMemory {
            rss: field("VmRSS"),
            hwm: field("VmHWM"),
        }
    }
}

/// What `dog node info` reports about memory: the plan, the budget's figures and `/proc`.
#[derive(Debug, Clone)]
pub struct MemorySource {
    /// The plan the daemon runs with.
    pub plan: MemoryPlan,
    /// The I/O buffer budget.
    pub budget: Arc<MemBudget>,
}

impl MemorySource {
    /// The report, now.
    pub fn info(&self) -> MemoryInfo {
        let s = self.budget.stats();
        let proc = ProcMemory::current();
        MemoryInfo {
            cache_size: self.plan.cache_size,
            fuse_threads: u32::try_from(self.plan.threads).unwrap_or(u32::MAX),
            max_write: self.plan.max_write,
            fuse_buffers: self.plan.fuse_buffers,
            io_budget: s.limit,
            in_use: s.in_use,
            cached: s.cached,
            peak: s.peak,
            waits: s.waits,
            overdrafts: s.nested + s.overdrafts,
            oversized: s.oversized,
            refused: s.timeouts,
            vm_rss: proc.rss,
            vm_hwm: proc.hwm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_default_keeps_4_mib_writes_for_32_threads() {
        let p = plan(DEFAULT_CACHE_SIZE, 32, 4 << 20);
        assert_eq!((p.threads, p.max_write), (32, 4 << 20));
        assert_eq!(p.fuse_buffers, 32 * (4 * MIB + 4096));
        assert_eq!(p.fuse_buffers + p.io_budget, DEFAULT_CACHE_SIZE);
    }

    #[test]
    fn a_small_cache_lowers_max_write_before_the_threads() {
        let p = plan(48 * MIB, 32, 4 << 20);
        assert_eq!((p.threads, p.max_write), (32, 1 << 20));
        assert!(
            p.fuse_buffers <= 36 * MIB && p.io_budget >= 12 * MIB,
            "{p:?}"
        );
        let p = plan(64 * MIB, 32, 4 << 20);
        assert_eq!(p.max_write, 1 << 20);
    }

    #[test]
    fn the_smallest_cache_lowers_the_threads_at_the_smallest_max_write() {
        let p = plan(MIN_CACHE_SIZE, 128, 4 << 20);
        assert_eq!(p.max_write, MIN_MAX_WRITE);
        assert_eq!(p.threads, 93); // 12 MiB / (128 KiB + 4 KiB)
        assert!(p.fuse_buffers <= MIN_CACHE_SIZE / 4 * 3);
        assert_eq!(plan(0, 32, 4 << 20).threads, 1);
    }

    #[test]
    fn the_kernel_limit_is_kept_and_never_raised() {
        let p = plan(DEFAULT_CACHE_SIZE, 32, 1 << 20);
        assert_eq!(p.max_write, 1 << 20);
        // A limit that is not a power of two stays page aligned when halved.
        let p = plan(24 * MIB, 32, 300 * 4096);
        assert_eq!(p.max_write % 4096, 0);
        assert!(p.fuse_buffers <= 18 * MIB, "{p:?}");
    }

    #[test]
    fn proc_status_figures_are_read_in_bytes() {
        let text = "Name:\tsheepfs\nVmPeak:\t  999 kB\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\n";
        let m = ProcMemory::parse(text);
        assert_eq!((m.rss, m.hwm), (1 << 20, 2 << 20));
        assert_eq!(ProcMemory::parse("garbage"), ProcMemory::default());
        let me = ProcMemory::current();
        assert!(me.rss > 0 && me.hwm >= me.rss, "{me:?}");
    }

    #[test]
    fn the_report_shows_the_plan_and_the_budget() {
        let budget = MemBudget::new(8 << 20);
        let held = budget.buf(1 << 20);
        let src = MemorySource {
            plan: plan(32 * MIB, 8, 1 << 20),
            budget: budget.clone(),
        };
        let info = src.info();
        assert_eq!(info.cache_size, 32 * MIB);
        assert_eq!((info.io_budget, info.in_use), (8 * MIB, MIB));
        assert!(info.peak <= info.io_budget);
        assert!(info.vm_rss > 0);
        drop(held);
    }
}
