//! A block-I/O history recorder and checker: workers write tagged 4 KiB blocks and read random
//! ones through a sheepfs mount with O_DIRECT, each op recorded with its block, the value written
//! or read, its start and end on one monotonic clock and its result; [`check`] then looks for
//! reads that no order of the writes explains.
//!
//! # Block format
//! Every written block carries a header — magic, writer id, counter, block number — and a
//! payload derived from them, with a 64-bit hash over everything else. [`decode`] tells a block
//! that was written whole by one write ([`Value::Tag`]) from a never-written one
//! ([`Value::Zero`]) and from anything else: torn, misplaced or corrupted ([`Value::Garbled`]).
//!
//! # What the checker accepts
//! Every worker runs in this process (one thread per worker, any number of mounts), so all
//! times come from one clock. A write that returned success is *acknowledged*; one that failed
//! (EIO, …) may or may not have landed. For a successful read `r` of block `b` that returned the
//! value of write `w`:
//! * `w` wrote block `b` and started before `r` ended (no value from the future);
//! * no acknowledged write `w'` of `b` lies wholly between them — started after `w` ended and
//!   ended before `r` started (no stale value: `w'` overwrote `w` before `r` began);
//! * zeros only while no acknowledged write of `b` ended before `r` started;
//! * no garbled block, ever (a read that overlaps a write returns the old or the new block,
//!   never a mix).
//!
//! That accepts the value of any write that overlaps the read, of any write that overlaps the
//! last acknowledged one (two concurrent writes may land in either order), and of failed writes
//! unless something acknowledged overwrote them — and nothing else. It is the product's contract
//! ("a read never returns data older than the last acknowledged write").
//!
//! [`Strictness::Linearizable`] also rejects *new then old*: if a read `r1` that ended before `r`
//! started returned `w1`, then `r` must not return a `w` that ended before `w1` started (nor
//! zeros). The contract allows that while `w1` is in flight or failed (a write visible on one
//! copy before the others have it); [`must_check`] reports such reads without failing.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::file::{must_open_direct, AlignedBuf};

/// Size of one block of a history.
pub const BLOCK: usize = 4096;

const MAGIC: &[u8; 8] = b"SHEEPHIS";
/// Header: magic, writer (u32), counter (u64), block (u64), hash (u64).
const HEADER: usize = 8 + 4 + 8 + 8 + 8;
const HASH_AT: usize = HEADER - 8;

/// The clock every op is timed on: nanoseconds since the first call in this process, plus one
/// (so that 0 is before every op).
pub fn now_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX) + 1
}

/// Who wrote a block: a writer id unique in the history and that writer's counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    /// The writer (worker) id.
    pub writer: u32,
    /// The writer's counter, unique per write.
    pub counter: u64,
}

/// What a block holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// Never written: all zeros.
    Zero,
    /// Written whole by the write with this tag.
    Tag(Tag),
    /// Neither: torn, written for another block, or corrupted.
    Garbled,
}

/// A read or a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `pread` of one block.
    Read,
    /// `pwrite` of one block.
    Write,
}

/// One recorded operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The worker that issued it.
    pub worker: u32,
    /// Read or write.
    pub kind: Kind,
    /// The block (offset / [`BLOCK`]).
    pub block: u64,
    /// The value written, or the value a successful read returned (`Zero` for a failed read).
    pub value: Value,
    /// When it was issued ([`now_ns`]).
    pub start: u64,
    /// When it returned ([`now_ns`]).
    pub end: u64,
    /// `Ok`, or the errno it failed with.
    pub result: Result<(), i32>,
    /// For a garbled read: what the block held (see [`describe_garbled`]).
    pub note: Option<String>,
}

impl Op {
    /// Returns how long it took.
    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.end.saturating_sub(self.start))
    }

    /// Returns true when it succeeded.
    pub fn ok(&self) -> bool {
        self.result.is_ok()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |ns: u64| ns as f64 / 1e9;
        let value = match self.value {
            Value::Zero => "zeros".to_owned(),
            Value::Garbled => "garbled".to_owned(),
            Value::Tag(t) => format!("w{}#{}", t.writer, t.counter),
        };
        let result = match self.result {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("errno {e} ({})", nix::errno::Errno::from_raw(e).desc()),
        };
        write!(
            f,
            "worker {} {:?} block {} value {value} [{:.6} s .. {:.6} s] {result}",
            self.worker,
            self.kind,
            self.block,
            secs(self.start),
            secs(self.end)
        )?;
        if let Some(note) = &self.note {
            write!(f, " ({note})")?;
        }
        Ok(())
    }
}

/// A 64-bit FNV-1a hash.
fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Returns the 4 KiB block that the write `tag` puts at `block`.
pub fn encode(tag: Tag, block: u64) -> Vec<u8> {
    let mut buf = vec![0u8; BLOCK];
    buf[..8].copy_from_slice(MAGIC);
    buf[8..12].copy_from_slice(&tag.writer.to_le_bytes());
    buf[12..20].copy_from_slice(&tag.counter.to_le_bytes());
    buf[20..28].copy_from_slice(&block.to_le_bytes());
    let seed = (u64::from(tag.writer) << 48) ^ tag.counter ^ block.rotate_left(29);
    let payload = crate::file::pattern(seed, BLOCK - HEADER);
    buf[HEADER..].copy_from_slice(&payload);
    let h = hash(&[&buf[..HASH_AT], &buf[HEADER..]]);
    buf[HASH_AT..HEADER].copy_from_slice(&h.to_le_bytes());
    buf
}

/// Tells what `buf`, read at `block`, holds.
pub fn decode(buf: &[u8], block: u64) -> Value {
    if buf.len() != BLOCK {
        return Value::Garbled;
    }
    if buf.iter().all(|&b| b == 0) {
        return Value::Zero;
    }
    let word = |r: std::ops::Range<usize>| -> u64 {
        let mut a = [0u8; 8];
        a[..r.len()].copy_from_slice(&buf[r]);
        u64::from_le_bytes(a)
    };
    if &buf[..8] != MAGIC || word(20..28) != block {
        return Value::Garbled;
    }
    if hash(&[&buf[..HASH_AT], &buf[HEADER..]]) != word(HASH_AT..HEADER) {
        return Value::Garbled;
    }
    let tag = Tag {
        writer: u32::try_from(word(8..12)).unwrap_or(u32::MAX),
        counter: word(12..20),
    };
    // The hash covers the payload, but a payload from another tag with a forged hash is not
    // what a write put there: compare it too.
    if encode(tag, block) != buf {
        return Value::Garbled;
    }
    Value::Tag(tag)
}

/// Describes a block that [`decode`] calls garbled: its header, and which byte ranges match the
/// block its header names and which are zeros.
pub fn describe_garbled(buf: &[u8], block: u64) -> String {
    if buf.len() != BLOCK {
        return format!("{} bytes", buf.len());
    }
    let word = |r: std::ops::Range<usize>| -> u64 {
        let mut a = [0u8; 8];
        a[..r.len()].copy_from_slice(&buf[r]);
        u64::from_le_bytes(a)
    };
    if &buf[..8] != MAGIC {
        let zeros = buf.iter().filter(|&&b| b == 0).count();
        return format!("no header; {zeros} zero bytes of {BLOCK}");
    }
    let tag = Tag {
        writer: u32::try_from(word(8..12)).unwrap_or(u32::MAX),
        counter: word(12..20),
    };
    let want = encode(tag, word(20..28));
    // Runs of 512-byte sectors: = matches the header's write, 0 zeros, x anything else.
    let map: String = buf
        .chunks(512)
        .zip(want.chunks(512))
        .map(|(got, want)| {
            if got == want {
                '='
            } else if got.iter().all(|&b| b == 0) {
                '0'
            } else {
                'x'
            }
        })
        .collect();
    format!(
        "header says w{}#{} block {} (read at block {block}); sectors vs that write: {map}",
        tag.writer,
        tag.counter,
        word(20..28)
    )
}

/// What a worker does.
#[derive(Clone, Debug)]
pub struct Config {
    /// Its id: the writer id of its tags and the worker of its ops; unique in a history.
    pub worker: u32,
    /// It uses blocks `0..blocks` of the file.
    pub blocks: u64,
    /// Block `b` is at offset `b * stride` (a multiple of [`BLOCK`]; [`BLOCK`] by default):
    /// a larger stride spreads the blocks over more objects.
    pub stride: u64,
    /// Percentage of reads (the rest are writes).
    pub read_percent: u32,
    /// Seed of its random choices.
    pub seed: u64,
    /// Sleep after each op (none by default).
    pub pause: Duration,
    /// Sleep after a failed op, so that a worker whose mount is gone does not spin.
    pub pause_after_error: Duration,
}

impl Config {
    /// Worker `worker` on blocks `0..blocks`, half reads, no pause, 50 ms after an error.
    pub fn new(worker: u32, blocks: u64) -> Config {
        Config {
            worker,
            blocks,
            stride: BLOCK as u64,
            read_percent: 50,
            seed: 0x5eed ^ u64::from(worker),
            pause: Duration::ZERO,
            pause_after_error: Duration::from_millis(50),
        }
    }
}

/// The op a worker is in the middle of: kind, block and start.
type InFlight = Option<(Kind, u64, u64)>;

/// A thread that writes and reads random blocks of one file (opened with O_DIRECT) until it is
/// told to stop, recording every op. Not a scoped thread: a worker stuck in an op on a dead
/// mount must not keep the test from dropping (and so killing) the daemons.
#[derive(Debug)]
pub struct Worker {
    config: Config,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    ops: Arc<Mutex<Vec<Op>>>,
    in_flight: Arc<Mutex<InFlight>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Opens `path` (read-write, O_DIRECT) here, so that an open that fails fails now, and
    /// starts the thread.
    pub fn start(path: &Path, config: Config) -> Worker {
        assert!(config.blocks > 0, "a worker needs blocks");
        assert!(
            config.stride >= BLOCK as u64 && config.stride.is_multiple_of(BLOCK as u64),
            "the stride must be a multiple of the block size"
        );
        let file = must_open_direct(path);
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(Mutex::new(None));
        let thread = {
            let (config, stop, ops, in_flight) = (
                config.clone(),
                Arc::clone(&stop),
                Arc::clone(&ops),
                Arc::clone(&in_flight),
            );
            std::thread::Builder::new()
                .name(format!("history-{}", config.worker))
                .spawn(move || work(&file, &config, &stop, &ops, &in_flight))
                .expect("spawn history worker")
        };
        Worker {
            config,
            path: path.to_path_buf(),
            stop,
            ops,
            in_flight,
            thread: Some(thread),
        }
    }

    /// Returns its id.
    pub fn id(&self) -> u32 {
        self.config.worker
    }

    /// Returns a copy of the ops it completed so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Returns the op it is in the middle of and for how long, if any.
    pub fn in_flight(&self) -> Option<(Kind, u64, Duration)> {
        let cur = *self.in_flight.lock().ok()?;
        cur.map(|(k, b, s)| (k, b, Duration::from_nanos(now_ns().saturating_sub(s))))
    }

    /// Tells it to stop after its current op, waits up to `timeout` for it and returns its
    /// history. Panics, naming the op it is stuck in, if it does not stop in time (its thread
    /// is left behind; the daemons' guards unblock it when they kill the daemons).
    pub fn finish(mut self, timeout: Duration) -> Vec<Op> {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            if Instant::now() >= deadline {
                panic!(
                    "history worker {} on {} did not stop within {timeout:?}: stuck in {:?}",
                    self.config.worker,
                    self.path.display(),
                    self.in_flight()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(t) = self.thread.take() {
            if let Err(e) = t.join() {
                std::panic::resume_unwind(e);
            }
        }
        self.ops()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Never joined here: a panicking test must not wait for a worker stuck on a mount.
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn work(
    file: &File,
    config: &Config,
    stop: &AtomicBool,
    ops: &Mutex<Vec<Op>>,
    in_flight: &Mutex<InFlight>,
) {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut counter = 0u64;
    let mut buf = AlignedBuf::zeroed(BLOCK);
    while !stop.load(Ordering::Relaxed) {
        let block = rng.gen_range(0..config.blocks);
        let kind = if rng.gen_range(0..100) < config.read_percent {
            Kind::Read
        } else {
            Kind::Write
        };
        let value = match kind {
            Kind::Write => {
                counter += 1;
                let tag = Tag {
                    writer: config.worker,
                    counter,
                };
                buf.as_mut_slice().copy_from_slice(&encode(tag, block));
                Value::Tag(tag)
            }
            Kind::Read => Value::Zero,
        };
        let at = Place {
            block,
            offset: block * config.stride,
        };
        let op = do_op(file, config.worker, kind, at, value, &mut buf, in_flight);
        let failed = !op.ok();
        if let Ok(mut o) = ops.lock() {
            o.push(op);
        }
        if failed {
            std::thread::sleep(config.pause_after_error);
        } else if !config.pause.is_zero() {
            std::thread::sleep(config.pause);
        }
    }
}

/// A block and its offset in the file.
#[derive(Clone, Copy, Debug)]
struct Place {
    block: u64,
    offset: u64,
}

/// Issues one op on `file` and records it (`value` is what a write writes; a read's is what it
/// found). `buf` holds the block to write.
fn do_op(
    file: &File,
    worker: u32,
    kind: Kind,
    Place { block, offset }: Place,
    value: Value,
    buf: &mut AlignedBuf,
    in_flight: &Mutex<InFlight>,
) -> Op {
    let start = now_ns();
    if let Ok(mut f) = in_flight.lock() {
        *f = Some((kind, block, start));
    }
    let res = match kind {
        Kind::Write => file.write_all_at(buf.as_slice(), offset),
        Kind::Read => file.read_exact_at(buf.as_mut_slice(), offset),
    };
    let end = now_ns();
    if let Ok(mut f) = in_flight.lock() {
        *f = None;
    }
    let value = match (kind, &res) {
        (Kind::Read, Ok(())) => decode(buf.as_slice(), block),
        (Kind::Read, Err(_)) => Value::Zero,
        (Kind::Write, _) => value,
    };
    let note = (value == Value::Garbled).then(|| describe_garbled(buf.as_slice(), block));
    Op {
        worker,
        kind,
        block,
        value,
        start,
        end,
        result: res.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)),
        note,
    }
}

/// Reads the blocks of `layout` (its `blocks` and `stride`) of `path` once, in order, with
/// O_DIRECT, as worker `worker`, and returns the ops: a final look at what a host reads, to check
/// with the workers' histories.
pub fn read_all(path: &Path, worker: u32, layout: &Config) -> Vec<Op> {
    let file = must_open_direct(path);
    let mut buf = AlignedBuf::zeroed(BLOCK);
    let none = Mutex::new(None);
    (0..layout.blocks)
        .map(|block| {
            let at = Place {
                block,
                offset: block * layout.stride,
            };
            do_op(&file, worker, Kind::Read, at, Value::Zero, &mut buf, &none)
        })
        .collect()
}

/// Returns the value each block holds according to `reads` (the last successful read of each
/// block), for comparing what several hosts read.
pub fn values_read(reads: &[Op]) -> std::collections::BTreeMap<u64, Value> {
    reads
        .iter()
        .filter(|op| op.kind == Kind::Read && op.ok())
        .map(|op| (op.block, op.value))
        .collect()
}

/// What [`check`] looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Successful writes.
    pub writes_ok: usize,
    /// Failed writes, by errno.
    pub writes_failed: HashMap<i32, usize>,
    /// Successful reads, each checked.
    pub reads_ok: usize,
    /// Failed reads, by errno.
    pub reads_failed: HashMap<i32, usize>,
    /// Successful reads that returned zeros.
    pub reads_zero: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} writes ok, failed {:?}; {} reads ok ({} zeros), failed {:?}",
            self.writes_ok, self.writes_failed, self.reads_ok, self.reads_zero, self.reads_failed
        )
    }
}

/// How much [`check_with`] asks of a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// The product's contract (see the [module documentation](self)).
    Contract,
    /// The contract, and no new-then-old between two reads in sequence.
    Linearizable,
}

/// Checks `history` against the contract (see the [module documentation](self)); returns what
/// it looked at, or one line per violation.
pub fn check(history: &[Op]) -> Result<Summary, Vec<String>> {
    check_with(history, Strictness::Contract)
}

/// Checks `history` with `strictness`; returns what it looked at, or one line per violation.
pub fn check_with(history: &[Op], strictness: Strictness) -> Result<Summary, Vec<String>> {
    let mut summary = Summary::default();
    let mut bad = Vec::new();
    let mut writes: HashMap<Tag, &Op> = HashMap::new();
    // Per block: acknowledged writes, and successful reads.
    let mut acked: HashMap<u64, Vec<&Op>> = HashMap::new();
    let mut reads: HashMap<u64, Vec<&Op>> = HashMap::new();
    for op in history {
        match (op.kind, op.result) {
            (Kind::Write, res) => {
                let Value::Tag(tag) = op.value else {
                    bad.push(format!("a write without a tag (harness bug): {op}"));
                    continue;
                };
                if writes.insert(tag, op).is_some() {
                    bad.push(format!("two writes with one tag (harness bug): {op}"));
                }
                match res {
                    Ok(()) => {
                        summary.writes_ok += 1;
                        acked.entry(op.block).or_default().push(op);
                    }
                    Err(e) => *summary.writes_failed.entry(e).or_default() += 1,
                }
            }
            (Kind::Read, Ok(())) => {
                summary.reads_ok += 1;
                summary.reads_zero += usize::from(op.value == Value::Zero);
                reads.entry(op.block).or_default().push(op);
            }
            (Kind::Read, Err(e)) => *summary.reads_failed.entry(e).or_default() += 1,
        }
    }
    for (block, mut block_reads) in reads {
        let mut acks: Vec<&Op> = acked.remove(&block).unwrap_or_default();
        acks.sort_by_key(|w| w.end);
        // For the acknowledged writes ended by acks[i].end: the latest start among them.
        let latest_start: Vec<(u64, &Op)> = acks
            .iter()
            .scan(None::<&Op>, |best, w| {
                if best.is_none_or(|b| w.start > b.start) {
                    *best = Some(w);
                }
                *best
            })
            .map(|w| (w.start, w))
            .collect();
        // The latest-starting acknowledged write of the block that ended before `t`.
        let overwriter = |t: u64| -> Option<&Op> {
            let n = acks.partition_point(|w| w.end < t);
            n.checked_sub(1).map(|i| latest_start[i].1)
        };
        // The interval of the write whose value a read returned: zeros are a write at 0.
        let source = |r: &Op| -> Option<(u64, u64)> {
            match r.value {
                Value::Zero => Some((0, 0)),
                Value::Tag(t) => writes.get(&t).map(|w| (w.start, w.end)),
                Value::Garbled => None,
            }
        };
        for r in &block_reads {
            match r.value {
                Value::Garbled => {
                    let overlapping: Vec<String> = history
                        .iter()
                        .filter(|w| w.kind == Kind::Write && w.block == block)
                        .filter(|w| w.start < r.end && w.end > r.start)
                        .map(|w| format!("\n    overlapping write: {w}"))
                        .collect();
                    bad.push(format!(
                        "torn or garbled block: {r}{}",
                        overlapping.concat()
                    ));
                    continue;
                }
                Value::Tag(t) => match writes.get(&t) {
                    None => {
                        bad.push(format!("a value no write of this history wrote: {r}"));
                        continue;
                    }
                    Some(w) if w.block != block => {
                        bad.push(format!("a value written to another block: {r} (by {w})"));
                        continue;
                    }
                    Some(w) if w.start >= r.end => {
                        bad.push(format!(
                            "a value from the future: {r} returned {w}, which started after the read ended"
                        ));
                        continue;
                    }
                    Some(_) => {}
                },
                Value::Zero => {}
            }
            let (_, w_end) = source(r).unwrap_or((0, 0));
            if let Some(o) = overwriter(r.start) {
                if o.start > w_end {
                    let what = match r.value {
                        Value::Tag(t) => format!("{}", writes[&t]),
                        _ => "nothing (zeros)".to_owned(),
                    };
                    bad.push(format!(
                        "stale read: {r}\n    returned {what}\n    but this write was acknowledged after it and before the read: {o}"
                    ));
                }
            }
        }
        if strictness == Strictness::Contract {
            continue;
        }
        // New then old: sort by end, and keep, for the reads ended so far, the latest start of
        // the write each returned.
        block_reads.sort_by_key(|r| r.end);
        let mut by_end: Vec<(u64, u64, &Op)> = Vec::new();
        let mut best: Option<(u64, &Op)> = None;
        for r in &block_reads {
            if let Some((w_start, _)) = source(r) {
                if best.is_none_or(|(s, _)| w_start > s) {
                    best = Some((w_start, r));
                }
            }
            if let Some((s, r1)) = best {
                by_end.push((r.end, s, r1));
            }
        }
        for r in &block_reads {
            let Some((_, w_end)) = source(r) else {
                continue;
            };
            let n = by_end.partition_point(|(end, _, _)| *end < r.start);
            if let Some(&(_, s, r1)) = n.checked_sub(1).and_then(|i| by_end.get(i)) {
                if s > w_end {
                    bad.push(format!(
                        "new then old: {r}\n    returned a value older than an earlier read saw: {r1}"
                    ));
                }
            }
        }
    }
    if bad.is_empty() {
        Ok(summary)
    } else {
        Err(bad)
    }
}

/// Checks `history` against the contract and panics with the first violations (and the
/// summary) if any; prints the summary and how many reads the linearizable check rejects
/// besides (new then old), with the first few.
pub fn must_check(history: &[Op], what: &str) -> Summary {
    match check(history) {
        Ok(summary) => {
            eprintln!("history check of {what}: {summary}");
            if let Err(extra) = check_with(history, Strictness::Linearizable) {
                eprintln!(
                    "  not linearizable (allowed by the contract): {} reads saw an older value than a read before them; the first ones:\n  {}",
                    extra.len(),
                    extra.iter().take(3).cloned().collect::<Vec<_>>().join("\n  ")
                );
            }
            summary
        }
        Err(bad) => {
            let shown: Vec<&String> = bad.iter().take(20).collect();
            panic!(
                "history check of {what} found {} violations ({} ops); the first ones:\n{}",
                bad.len(),
                history.len(),
                shown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// Returns the longest latency of the ops that overlap `from..to` (times of [`now_ns`]), and
/// that op.
pub fn longest_op_between(history: &[Op], from: u64, to: u64) -> Option<(Duration, &Op)> {
    history
        .iter()
        .filter(|op| op.end >= from && op.start <= to)
        .map(|op| (op.latency(), op))
        .max_by_key(|(d, _)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(worker: u32, counter: u64, block: u64, start: u64, end: u64, ok: bool) -> Op {
        Op {
            worker,
            kind: Kind::Write,
            block,
            value: Value::Tag(Tag {
                writer: worker,
                counter,
            }),
            start,
            end,
            result: if ok { Ok(()) } else { Err(libc::EIO) },
            note: None,
        }
    }

    fn r(worker: u32, block: u64, value: Value, start: u64, end: u64) -> Op {
        Op {
            worker,
            kind: Kind::Read,
            block,
            value,
            start,
            end,
            result: Ok(()),
            note: None,
        }
    }

    fn tag(writer: u32, counter: u64) -> Value {
        Value::Tag(Tag { writer, counter })
    }

    #[test]
    fn blocks_round_trip_and_torn_or_misplaced_ones_are_garbled() {
        let t = Tag {
            writer: 3,
            counter: 17,
        };
        let a = encode(t, 5);
        assert_eq!(decode(&a, 5), Value::Tag(t));
        assert_eq!(decode(&a, 6), Value::Garbled, "read at another block");
        assert_eq!(decode(&vec![0; BLOCK], 5), Value::Zero);
        let b = encode(
            Tag {
                writer: 3,
                counter: 18,
            },
            5,
        );
        let mut torn = a.clone();
        torn[2048..].copy_from_slice(&b[2048..]);
        assert_eq!(decode(&torn, 5), Value::Garbled, "half of two writes");
        let mut half_zero = a.clone();
        half_zero[2048..].fill(0);
        assert_eq!(decode(&half_zero, 5), Value::Garbled, "half written");
        let mut flipped = a;
        flipped[1000] ^= 1;
        assert_eq!(decode(&flipped, 5), Value::Garbled, "one flipped bit");
        let mut torn = encode(t, 5);
        torn[1024..1536].fill(0);
        torn[3584..].copy_from_slice(&b[3584..]);
        assert_eq!(
            describe_garbled(&torn, 5),
            "header says w3#17 block 5 (read at block 5); sectors vs that write: ==0====x"
        );
    }

    #[test]
    fn a_read_of_the_last_acknowledged_write_passes() {
        let h = vec![
            w(1, 1, 0, 10, 20, true),
            w(1, 2, 0, 30, 40, true),
            r(2, 0, tag(1, 2), 50, 60),
            r(2, 1, Value::Zero, 50, 60),
        ];
        let s = check(&h).expect("valid");
        assert_eq!((s.writes_ok, s.reads_ok, s.reads_zero), (2, 2, 1));
    }

    #[test]
    fn one_stale_read_is_caught() {
        let h = vec![
            w(1, 1, 0, 10, 20, true),
            w(1, 2, 0, 30, 40, true),
            r(2, 0, tag(1, 2), 50, 60),
            r(2, 0, tag(1, 1), 70, 80),
        ];
        let bad = check(&h).expect_err("stale read");
        assert!(bad.iter().any(|b| b.starts_with("stale read")), "{bad:?}");
    }

    #[test]
    fn reads_overlapping_a_write_may_return_the_old_or_the_new_value() {
        let h = vec![
            w(1, 1, 0, 10, 20, true),
            w(1, 2, 0, 30, 100, true),
            r(2, 0, tag(1, 1), 40, 50),
            r(3, 0, tag(1, 2), 40, 50),
            r(2, 0, tag(1, 2), 60, 70),
            // Overlaps the read that saw the new value: it may still see the old one.
            r(3, 0, tag(1, 1), 45, 65),
        ];
        check(&h).expect("valid concurrent overlap");
    }

    #[test]
    fn two_overlapping_acknowledged_writes_may_land_in_either_order() {
        let h = vec![
            w(1, 1, 0, 10, 40, true),
            w(2, 1, 0, 20, 30, true),
            r(3, 0, tag(1, 1), 50, 60),
            r(4, 0, tag(1, 1), 70, 80),
        ];
        check(&h).expect("either order");
        let h2 = vec![
            w(1, 1, 0, 10, 40, true),
            w(2, 1, 0, 20, 30, true),
            r(3, 0, tag(2, 1), 50, 60),
        ];
        check(&h2).expect("either order");
    }

    #[test]
    fn a_failed_write_may_or_may_not_have_landed_unless_overwritten() {
        let base = vec![w(1, 1, 0, 10, 20, true), w(1, 2, 0, 30, 40, false)];
        for seen in [tag(1, 1), tag(1, 2)] {
            let mut h = base.clone();
            h.push(r(2, 0, seen, 50, 60));
            check(&h).expect("a failed write may or may not land");
        }
        let mut h = base;
        h.push(w(1, 3, 0, 45, 48, true));
        h.push(r(2, 0, tag(1, 2), 50, 60));
        let bad = check(&h).expect_err("a failed write resurfacing after an acknowledged one");
        assert!(bad.iter().any(|b| b.starts_with("stale read")), "{bad:?}");
    }

    #[test]
    fn zeros_after_an_acknowledged_write_are_caught() {
        let h = vec![w(1, 1, 0, 10, 20, true), r(2, 0, Value::Zero, 30, 40)];
        let bad = check(&h).expect_err("lost write");
        assert!(bad.iter().any(|b| b.starts_with("stale read")), "{bad:?}");
        // Zeros while the first write is in flight are fine.
        let h = vec![w(1, 1, 0, 10, 50, true), r(2, 0, Value::Zero, 30, 40)];
        check(&h).expect("zeros during the first write");
    }

    #[test]
    fn garbled_future_and_unknown_values_are_caught() {
        let h = vec![
            w(1, 1, 0, 10, 20, true),
            r(2, 0, Value::Garbled, 30, 40),
            r(2, 0, tag(1, 2), 30, 40),
            w(1, 3, 0, 100, 110, true),
            r(2, 0, tag(1, 3), 30, 40),
            w(1, 4, 1, 10, 20, true),
            r(2, 0, tag(1, 4), 30, 40),
        ];
        let bad = check(&h).expect_err("four bad reads");
        assert_eq!(bad.len(), 4, "{bad:#?}");
    }

    #[test]
    fn new_then_old_between_two_reads_is_caught() {
        // Both writes overlap both reads' starts, but the reads are in sequence: once the new
        // value was seen, the old one must not come back.
        let h = vec![
            w(1, 1, 0, 10, 20, false),
            w(1, 2, 0, 30, 200, false),
            r(2, 0, tag(1, 2), 40, 50),
            r(3, 0, tag(1, 1), 60, 70),
        ];
        check(&h).expect("the contract allows new then old while a write is in flight");
        let bad = check_with(&h, Strictness::Linearizable).expect_err("new then old");
        assert!(bad.iter().any(|b| b.starts_with("new then old")), "{bad:?}");
        let h = vec![
            w(1, 1, 0, 10, 200, false),
            r(2, 0, tag(1, 1), 40, 50),
            r(3, 0, Value::Zero, 60, 70),
        ];
        check(&h).expect("the contract allows a failed write seen, then not");
        let bad = check_with(&h, Strictness::Linearizable).expect_err("written then zeros");
        assert!(bad.iter().any(|b| b.starts_with("new then old")), "{bad:?}");
    }

    /// Simulates workers on a linearizable store: every op takes effect at a random instant
    /// between its start and its end (a failed write at such an instant, or never).
    fn simulate(rng: &mut StdRng, workers: u32, blocks: u64, ops_each: usize) -> Vec<Op> {
        let mut ops = Vec::new();
        for worker in 0..workers {
            let mut t = rng.gen_range(1..50u64);
            for counter in 1..=ops_each as u64 {
                let start = t + rng.gen_range(0..20);
                let end = start + rng.gen_range(1..60);
                t = end;
                let block = rng.gen_range(0..blocks);
                let op = if rng.gen_bool(0.5) {
                    let mut op = w(worker, counter, block, start, end, rng.gen_bool(0.8));
                    op.value = tag(worker, counter);
                    op
                } else {
                    r(worker, block, Value::Zero, start, end)
                };
                ops.push(op);
            }
        }
        // Effect instants; failed writes land only sometimes.
        let mut effects: Vec<(u64, usize)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if op.ok() || rng.gen_bool(0.5) {
                effects.push((rng.gen_range(op.start..=op.end), i));
            }
        }
        effects.sort_unstable();
        let mut state: HashMap<u64, Value> = HashMap::new();
        for (_, i) in effects {
            let op = &mut ops[i];
            match op.kind {
                Kind::Write => {
                    state.insert(op.block, op.value);
                }
                Kind::Read => op.value = *state.get(&op.block).unwrap_or(&Value::Zero),
            }
        }
        ops
    }

    #[test]
    fn simulated_linearizable_histories_pass_and_an_injected_stale_read_fails() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut caught = 0;
        for round in 0..300 {
            let mut h = simulate(&mut rng, 4, 3, 40);
            if let Err(bad) = check_with(&h, Strictness::Linearizable) {
                panic!("round {round}: a linearizable history fails: {bad:#?}");
            }
            // A read after everything, of a value some acknowledged write overwrote.
            let end = h.iter().map(|op| op.end).max().unwrap_or(0);
            let acked: Vec<&Op> = h
                .iter()
                .filter(|o| o.kind == Kind::Write && o.ok())
                .collect();
            let Some(last) = acked.iter().max_by_key(|o| o.end) else {
                continue;
            };
            let old = h
                .iter()
                .find(|o| o.kind == Kind::Write && o.block == last.block && o.end < last.start);
            if let Some(old) = old {
                let stale = r(99, old.block, old.value, end + 10, end + 20);
                h.push(stale);
                assert!(check(&h).is_err(), "round {round}: stale read not caught");
                caught += 1;
            }
        }
        assert!(
            caught > 100,
            "only {caught} rounds had a stale read to inject"
        );
    }

    #[test]
    fn failed_reads_are_counted_not_checked() {
        let mut read = r(2, 0, Value::Zero, 30, 40);
        read.result = Err(libc::EIO);
        let s = check(&[w(1, 1, 0, 10, 20, true), read]).expect("valid");
        assert_eq!(s.reads_failed.get(&libc::EIO), Some(&1));
    }

    #[test]
    fn longest_op_between_picks_overlapping_ops() {
        let h = vec![
            w(1, 1, 0, 10, 20, true),
            w(1, 2, 0, 30, 90, true),
            w(1, 3, 0, 100, 500, true),
        ];
        let (d, op) = longest_op_between(&h, 25, 95).expect("an op");
        assert_eq!((d, op.start), (Duration::from_nanos(60), 30));
    }
}
