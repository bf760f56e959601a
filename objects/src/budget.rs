//! The memory budget of the I/O buffers: a counting semaphore of bytes with a pool of buffers.
//!
//! Every large I/O buffer of the daemon is a [`Buf`] taken from one [`MemBudget`] (`sheepfs
//! --cache-size`): the reply of a FUSE read, the bodies of data-channel requests and responses
//! on both sides, and the object images a fetch or a push reads. A returned buffer is kept for
//! the next request of its size class instead of going back to `malloc`, whose per-thread
//! arenas would otherwise keep freed memory resident.
//!
//! ```text
//!   held = lent + idle <= limit
//!   lent: bytes of the buffers in use (charged when taken, by size class)
//!   idle: buffers kept for reuse; freed, largest first, when new bytes are needed
//! ```
//!
//! * A request waits, in arrival order, until what is lent plus what it needs fits the limit.
//! * A request larger than the whole limit proceeds once nothing else is lent: it runs alone
//!   and never waits forever (`held` then exceeds the limit for its duration; counted in
//!   [`BudgetStats::oversized`]).
//! * A thread that already holds buffers of the budget never waits for more: it takes them
//!   at once (counted in [`BudgetStats::nested`]). Waiting there could close a cycle (every
//!   holder waiting for another's bytes); a thread that holds nothing is never in a cycle.
//! * A waiter with a patience gives up after it. The data channel's server
//!   ([`MemBudget::try_pair`]) then answers "retry" rather than wait on a budget held by
//!   requests that may be waiting for this host's answers; a response body read by the client
//!   ([`MemBudget::buf_within`], whose caller may hold object locks that the holders of the
//!   budget wait for) is then taken anyway (counted in [`BudgetStats::overdrafts`]). Only
//!   callers that hold no lock wait without end.
//! * Buffers under [`POOL_MIN`] are plain allocations, neither charged nor kept: they are
//!   bounded by the threads that take them (a FUSE worker or a data-channel connection holds
//!   one or two at a time), malloc serves them from its caches, and the hot path of small I/O
//!   (4 KiB random reads) takes no lock. Larger ones are rounded up to a size class (a power of
//!   two up to 4 MiB, then a multiple of 64 KiB), so that buffers are reused by requests of
//!   other sizes.
//!
//! The contents of a reused buffer are whatever its last user left: a user fills what it
//! reads.

use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The limit of a budget nobody configured (`sheepfs` derives its own from `--cache-size`).
pub const DEFAULT_LIMIT: usize = 128 << 20;

/// Buffers at least this large are charged to the budget and kept for reuse; smaller ones are
/// plain allocations.
pub const POOL_MIN: usize = 64 << 10;

/// Largest power-of-two size class; larger buffers are rounded up to [`CLASS_STEP`].
const MAX_POW2_CLASS: usize = 4 << 20;

/// Rounding of the size classes above [`MAX_POW2_CLASS`].
const CLASS_STEP: usize = 64 << 10;

/// The capacity a buffer of `len` bytes is given (and charged, from [`POOL_MIN`] up).
pub fn size_class(len: usize) -> usize {
    if len < POOL_MIN {
        len
    } else if len <= MAX_POW2_CLASS {
        len.next_power_of_two()
    } else {
        len.div_ceil(CLASS_STEP).saturating_mul(CLASS_STEP)
    }
}

/// A snapshot of a budget's figures, in bytes and counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetStats {
    /// The limit.
    pub limit: u64,
    /// Bytes of the buffers lent now.
    pub in_use: u64,
    /// Bytes of the idle buffers kept for reuse.
    pub cached: u64,
    /// Highest `in_use + cached` so far.
    pub peak: u64,
    /// Requests that had to wait for bytes.
    pub waits: u64,
    /// Requests served without waiting by a thread that already held buffers.
    pub nested: u64,
    /// Requests larger than the limit, served alone.
    pub oversized: u64,
    /// Requests that gave up waiting (their patience ran out) and were refused.
    pub timeouts: u64,
    /// Requests whose patience ran out and that took their bytes anyway.
    pub overdrafts: u64,
}

/// A byte budget shared by every large I/O buffer; see the module docs.
pub struct MemBudget {
    limit: usize,
    state: Mutex<State>,
    turn: Condvar,
}

#[derive(Default)]
struct State {
    in_use: usize,
    idle: BTreeMap<usize, Vec<Vec<u8>>>,
    idle_bytes: usize,
    /// Tickets of the waiting requests, in arrival order; the first one is served next.
    queue: VecDeque<u64>,
    next_ticket: u64,
    stats: BudgetStats,
}

impl State {
    fn fits(&self, limit: usize, bytes: usize) -> bool {
        self.in_use == 0 || self.in_use.saturating_add(bytes) <= limit
    }

    /// Charges `bytes`, then takes an idle buffer of each class or notes it is to be
    /// allocated; idle buffers that no longer fit the limit go to `evicted`.
    fn take(
        &mut self,
        limit: usize,
        classes: &[usize],
        evicted: &mut Vec<Vec<u8>>,
    ) -> Vec<Option<Vec<u8>>> {
        let total: usize = classes.iter().sum();
        if self.in_use == 0 && total > limit {
            self.stats.oversized += 1;
        }
        self.in_use += total;
        let taken: Vec<Option<Vec<u8>>> = classes
            .iter()
            .map(|&c| {
                let v = self.idle.get_mut(&c).and_then(Vec::pop)?;
                self.idle_bytes -= c;
                Some(v)
            })
            .collect();
        while self.in_use + self.idle_bytes > limit {
            let Some(mut largest) = self.idle.last_entry() else {
                break;
            };
            let class = *largest.key();
            match largest.get_mut().pop() {
                Some(v) => {
                    self.idle_bytes -= class;
                    evicted.push(v);
                }
                None => {
                    largest.remove();
                }
            }
        }
        let held = (self.in_use + self.idle_bytes) as u64;
        self.stats.peak = self.stats.peak.max(held);
        taken
    }
}

/// How a request waits for its bytes.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// Until they fit.
    Forever,
    /// At most this long, then it is refused.
    Patience(Duration),
    /// At most this long, then it takes them anyway.
    ThenTake(Duration),
}

impl MemBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<MemBudget> {
        Arc::new(MemBudget {
            limit,
            state: Mutex::new(State {
                stats: BudgetStats {
                    limit: limit as u64,
                    ..BudgetStats::default()
                },
                ..State::default()
            }),
            turn: Condvar::new(),
        })
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The current figures.
    pub fn stats(&self) -> BudgetStats {
        let st = self.state.lock();
        BudgetStats {
            in_use: st.in_use as u64,
            cached: st.idle_bytes as u64,
            ..st.stats
        }
    }

    /// A buffer of `len` bytes (contents unspecified), once the budget has room for it.
    pub fn buf(self: &Arc<Self>, len: usize) -> Buf {
        self.one(len, true, Wait::Forever)
    }

    /// A buffer of `len` bytes, once the budget has room for it or after `patience`,
    /// whichever comes first (for callers that may hold locks the budget's holders wait for).
    pub fn buf_within(self: &Arc<Self>, len: usize, patience: Duration) -> Buf {
        self.one(len, true, Wait::ThenTake(patience))
    }

    /// An empty buffer that can grow to `capacity` bytes within its charge (for code that
    /// fills a `Vec`: [`Buf::vec_mut`]), once the budget has room for it.
    pub fn vec(self: &Arc<Self>, capacity: usize) -> Buf {
        self.one(capacity, false, Wait::Forever)
    }

    /// [`MemBudget::vec`] that waits at most `patience` (as [`MemBudget::buf_within`]).
    pub fn vec_within(self: &Arc<Self>, capacity: usize, patience: Duration) -> Buf {
        self.one(capacity, false, Wait::ThenTake(patience))
    }

    /// One buffer of `len` (see [`MemBudget::acquire`]); under [`POOL_MIN`] a plain one at once,
    /// without touching the budget (every response header of the data path takes one).
    fn one(self: &Arc<Self>, len: usize, fill: bool, wait: Wait) -> Buf {
        if len < POOL_MIN {
            return Buf::plain(len, fill);
        }
        self.acquire(&[(len, fill)], wait)
            .and_then(|mut v| v.pop())
            .unwrap_or_else(Buf::empty)
    }

    /// A buffer of `len` bytes and an empty one of `capacity` (as [`MemBudget::vec`]),
    /// charged together, so that a request needing both never holds one while it waits for
    /// the other; `None` if they do not fit within `patience`.
    pub fn try_pair(
        self: &Arc<Self>,
        len: usize,
        capacity: usize,
        patience: Duration,
    ) -> Option<(Buf, Buf)> {
        if len < POOL_MIN && capacity < POOL_MIN {
            // The common request of the data path (a 4 KiB write, a sync): nothing to charge.
            return Some((Buf::plain(len, true), Buf::plain(capacity, false)));
        }
        let mut v = self.acquire(&[(len, true), (capacity, false)], Wait::Patience(patience))?;
        let out = v.pop()?;
        Some((v.pop()?, out))
    }

    /// Charges and takes one buffer per `(len, fill)`: `len` bytes long with `fill`, else
    /// empty with room for `len`.
    fn acquire(self: &Arc<Self>, lens: &[(usize, bool)], wait: Wait) -> Option<Vec<Buf>> {
        let classes: Vec<usize> = lens
            .iter()
            .map(|&(l, _)| if l < POOL_MIN { 0 } else { size_class(l) })
            .collect();
        let total: usize = classes.iter().sum();
        if total == 0 {
            return Some(lens.iter().map(|&(l, fill)| Buf::plain(l, fill)).collect());
        }
        let held = thread_held();
        let nested = held.load(Ordering::Relaxed) > 0;
        let mut evicted = Vec::new();
        let taken = {
            let mut st = self.state.lock();
            if nested {
                st.stats.nested += 1;
            } else if !(st.queue.is_empty() && st.fits(self.limit, total))
                && self.wait_turn(&mut st, total, wait).is_none()
            {
                match wait {
                    Wait::ThenTake(_) => st.stats.overdrafts += 1,
                    Wait::Forever | Wait::Patience(_) => {
                        st.stats.timeouts += 1;
                        return None;
                    }
                }
            }
            st.take(self.limit, &classes, &mut evicted)
        };
        drop(evicted);
        held.fetch_add(total, Ordering::Relaxed);
        let bufs = taken
            .into_iter()
            .zip(classes.iter().zip(lens))
            .map(|(idle, (&class, &(len, fill)))| {
                if class == 0 {
                    return Buf::plain(len, fill);
                }
                let mut vec = idle.unwrap_or_else(|| Vec::with_capacity(class));
                match fill {
                    true => vec.resize(len, 0),
                    false => vec.clear(),
                }
                Buf {
                    vec,
                    charged: class,
                    owner: Some(Owner {
                        budget: Arc::clone(self),
                        held: Arc::clone(&held),
                    }),
                }
            })
            .collect();
        Some(bufs)
    }

    /// Waits, in arrival order, until `total` bytes fit; `None` once the patience ran out
    /// (the request then left the queue).
    fn wait_turn(
        &self,
        st: &mut parking_lot::MutexGuard<'_, State>,
        total: usize,
        wait: Wait,
    ) -> Option<()> {
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push_back(ticket);
        st.stats.waits += 1;
        let deadline = match wait {
            Wait::Forever => None,
            Wait::Patience(p) | Wait::ThenTake(p) => Some(Instant::now() + p),
        };
        loop {
            if st.queue.front() == Some(&ticket) && st.fits(self.limit, total) {
                st.queue.pop_front();
                // The next in line may fit too.
                self.turn.notify_all();
                return Some(());
            }
            match deadline {
                None => self.turn.wait(st),
                Some(d) if Instant::now() >= d => {
                    st.queue.retain(|t| *t != ticket);
                    self.turn.notify_all();
                    return None;
                }
                Some(d) => {
                    self.turn.wait_until(st, d);
                }
            }
        }
    }

    /// Takes back a buffer charged `charged` bytes: keeps it for reuse if it is of a pooled
    /// class and fits, else frees it (outside the lock).
    fn give_back(&self, vec: Vec<u8>, charged: usize) {
        let mut st = self.state.lock();
        st.in_use -= charged;
        let keep = charged >= POOL_MIN
            && vec.capacity() == charged
            && st.in_use + st.idle_bytes + charged <= self.limit;
        let freed = if keep {
            st.idle.entry(charged).or_default().push(vec);
            st.idle_bytes += charged;
            None
        } else {
            Some(vec)
        };
        if !st.queue.is_empty() {
            self.turn.notify_all();
        }
        drop(st);
        drop(freed);
    }
}

impl std::fmt::Debug for MemBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemBudget")
            .field("stats", &self.stats())
            .finish()
    }
}

thread_local! {
    /// Bytes of the budgets' buffers taken by this thread and not yet given back.
    static HELD: Arc<AtomicUsize> = Arc::new(AtomicUsize::new(0));
}

fn thread_held() -> Arc<AtomicUsize> {
    HELD.with(Arc::clone)
}

struct Owner {
    budget: Arc<MemBudget>,
    /// The taking thread's count of held bytes (a buffer may be dropped on another thread).
    held: Arc<AtomicUsize>,
}

/// A buffer of a [`MemBudget`] (or a plain one, from a `Vec`), given back when dropped.
///
/// It dereferences to its bytes; [`Buf::vec_mut`] gives the `Vec` to code that resizes it.
/// Growing it past its charge is allowed, but the excess is not accounted and the buffer is
/// then freed rather than kept.
pub struct Buf {
    vec: Vec<u8>,
    charged: usize,
    owner: Option<Owner>,
}

impl Buf {
    /// An empty buffer that belongs to no budget.
    pub fn empty() -> Buf {
        Buf::from(Vec::new())
    }

    /// A buffer of no budget: `len` zeros with `fill`, else empty with room for `len`.
    fn plain(len: usize, fill: bool) -> Buf {
        match fill {
            true => Buf::from(vec![0u8; len]),
            false => Buf::from(Vec::with_capacity(len)),
        }
    }

    /// The buffer as a `Vec`.
    pub fn vec_mut(&mut self) -> &mut Vec<u8> {
        &mut self.vec
    }

    /// Bytes charged to the budget for it (its size class; 0 for a plain buffer).
    pub fn charged(&self) -> usize {
        self.charged
    }
}

impl From<Vec<u8>> for Buf {
    /// A plain buffer: not charged to any budget.
    fn from(vec: Vec<u8>) -> Buf {
        Buf {
            vec,
            charged: 0,
            owner: None,
        }
    }
}

impl Deref for Buf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.vec
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.vec
    }
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buf")
            .field("len", &self.vec.len())
            .field("charged", &self.charged)
            .finish()
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            owner.held.fetch_sub(self.charged, Ordering::Relaxed);
            owner
                .budget
                .give_back(std::mem::take(&mut self.vec), self.charged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;

    const MIB: usize = 1 << 20;

    /// Runs `f` on a thread of its own (a fresh thread holds no buffer) and returns its
    /// result, or `None` if it has not returned after `within`.
    fn on_thread<T: Send + 'static>(
        within: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(within).ok()
    }

    #[test]
    fn size_classes_round_up_and_leave_small_sizes_exact() {
        assert_eq!(size_class(0), 0);
        assert_eq!(size_class(4096), 4096);
        assert_eq!(size_class(POOL_MIN), POOL_MIN);
        assert_eq!(size_class(POOL_MIN + 1), 2 * POOL_MIN);
        assert_eq!(size_class(3 * MIB), 4 * MIB);
        assert_eq!(size_class(4 * MIB), 4 * MIB);
        assert_eq!(size_class(4 * MIB + 1), 4 * MIB + CLASS_STEP);
    }

    #[test]
    fn a_buffer_has_the_asked_length_and_is_charged_until_dropped() {
        let b = MemBudget::new(8 * MIB);
        let buf = b.buf(MIB + 5);
        assert_eq!(buf.len(), MIB + 5);
        assert_eq!(buf.charged(), 2 * MIB);
        assert_eq!(b.stats().in_use, 2 * MIB as u64);
        drop(buf);
        let s = b.stats();
        assert_eq!(
            (s.in_use, s.cached, s.peak),
            (0, 2 * MIB as u64, 2 * MIB as u64)
        );
    }

    #[test]
    fn a_returned_buffer_is_reused_not_reallocated() {
        let b = MemBudget::new(8 * MIB);
        let mut first = b.buf(MIB);
        first[0] = 7;
        let ptr = first.as_ptr();
        drop(first);
        let again = b.buf(MIB - 100);
        assert_eq!(again.as_ptr(), ptr);
        assert_eq!(again.len(), MIB - 100);
        assert_eq!(b.stats().peak, MIB as u64);
    }

    #[test]
    fn small_buffers_are_plain_allocations() {
        let b = MemBudget::new(MIB);
        let full = b.buf(MIB);
        // No wait although the budget is spent, no charge, nothing kept.
        let small = b.buf(POOL_MIN - 1);
        assert_eq!((small.len(), small.charged()), (POOL_MIN - 1, 0));
        let (body, out) = b.try_pair(4096, 100, Duration::ZERO).expect("small pair");
        assert_eq!((body.len(), out.len(), out.charged()), (4096, 0, 0));
        drop((small, body, out, full));
        let s = b.stats();
        assert_eq!((s.in_use, s.cached, s.waits), (0, MIB as u64, 0));
        assert_eq!(b.buf(0).charged(), 0);
    }

    #[test]
    fn a_request_waits_until_enough_is_given_back() {
        let b = MemBudget::new(4 * MIB);
        let held = b.buf(3 * MIB);
        let b2 = Arc::clone(&b);
        let (tx, rx) = mpsc::channel();
        let waiter = thread::spawn(move || {
            let got = b2.buf(2 * MIB);
            tx.send(got.len()).expect("send");
        });
        // It cannot fit while 4 MiB are lent (3 MiB rounds up to 4).
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(held);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(2 * MIB));
        waiter.join().expect("waiter");
        let s = b.stats();
        assert_eq!((s.waits, s.in_use), (1, 0));
        assert!(s.peak <= 4 * MIB as u64, "{s:?}");
    }

    #[test]
    fn idle_buffers_are_freed_to_make_room_for_other_sizes() {
        let b = MemBudget::new(4 * MIB);
        drop(b.buf(2 * MIB));
        drop(b.buf(MIB));
        assert_eq!(b.stats().cached, 3 * MIB as u64);
        let four = b.buf(4 * MIB);
        let s = b.stats();
        assert_eq!((s.in_use, s.cached, s.waits), (4 * MIB as u64, 0, 0));
        drop(four);
        assert_eq!(b.stats().peak, 4 * MIB as u64);
    }

    #[test]
    fn a_request_larger_than_the_budget_proceeds_alone() {
        let b = MemBudget::new(MIB);
        let small = b.buf(512 << 10);
        let b2 = Arc::clone(&b);
        let big = thread::spawn(move || b2.buf(3 * MIB).len());
        thread::sleep(Duration::from_millis(100));
        assert!(
            !big.is_finished(),
            "the big request must wait for the small one"
        );
        drop(small);
        assert_eq!(big.join().expect("big"), 3 * MIB);
        let s = b.stats();
        assert_eq!((s.oversized, s.in_use), (1, 0));
        // And one alone on an idle budget does not wait at all.
        let got = on_thread(Duration::from_secs(10), {
            let b = Arc::clone(&b);
            move || b.buf(2 * MIB).len()
        });
        assert_eq!(got, Some(2 * MIB));
    }

    #[test]
    fn waiters_are_served_in_arrival_order() {
        let b = MemBudget::new(4 * MIB);
        let held = b.buf(4 * MIB);
        let (tx, rx) = mpsc::channel();
        let mut threads = Vec::new();
        for (i, len) in [4 * MIB, MIB, MIB].into_iter().enumerate() {
            let (b2, tx) = (Arc::clone(&b), tx.clone());
            threads.push(thread::spawn(move || {
                let buf = b2.buf(len);
                tx.send(i).expect("send");
                thread::sleep(Duration::from_millis(50));
                drop(buf);
            }));
            // Makes the arrival order certain.
            while b.stats().waits < i as u64 + 1 {
                thread::sleep(Duration::from_millis(5));
            }
        }
        drop(held);
        let order: Vec<usize> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("served"))
            .collect();
        // The big request first: the small ones behind it do not overtake it.
        assert_eq!(order[0], 0);
        for t in threads {
            t.join().expect("thread");
        }
    }

    #[test]
    fn a_thread_that_holds_buffers_never_waits_for_more() {
        let b = MemBudget::new(2 * MIB);
        // Two threads each hold half and then ask for more: with waiting, neither could
        // proceed (each waits for the other's bytes).
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let b1 = Arc::clone(&b);
        let other = thread::spawn(move || {
            let _mine = b1.buf(MIB);
            go_rx.recv().expect("go");
            b1.buf(MIB).len()
        });
        let done = on_thread(Duration::from_secs(10), {
            let b = Arc::clone(&b);
            move || {
                while b.stats().in_use < MIB as u64 {
                    thread::sleep(Duration::from_millis(5));
                }
                let _mine = b.buf(MIB);
                go_tx.send(()).expect("go");
                b.buf(MIB).len()
            }
        });
        assert_eq!(done, Some(MIB), "a nested request waited");
        assert_eq!(other.join().expect("other"), MIB);
        let s = b.stats();
        assert_eq!((s.in_use, s.nested), (0, 2));
    }

    #[test]
    fn a_patient_request_gives_up_and_leaves_the_queue() {
        let b = MemBudget::new(MIB);
        let held = b.buf(MIB);
        let got = on_thread(Duration::from_secs(10), {
            let b = Arc::clone(&b);
            move || b.try_pair(MIB, 0, Duration::from_millis(100)).is_none()
        });
        assert_eq!(got, Some(true));
        assert_eq!(b.stats().timeouts, 1);
        drop(held);
        // The queue is empty again: the next request goes straight through.
        let got = on_thread(Duration::from_secs(10), {
            let b = Arc::clone(&b);
            move || {
                b.try_pair(MIB, 2 * POOL_MIN, Duration::from_secs(5))
                    .map(|(body, out)| (body.len(), out.len(), out.charged()))
            }
        });
        assert_eq!(got, Some(Some((MIB, 0, 2 * POOL_MIN))));
    }

    #[test]
    fn a_request_with_patience_takes_its_bytes_anyway_once_it_ran_out() {
        let b = MemBudget::new(MIB);
        let held = b.buf(MIB);
        let got = on_thread(Duration::from_secs(10), {
            let b = Arc::clone(&b);
            move || b.buf_within(MIB, Duration::from_millis(100)).len()
        });
        assert_eq!(got, Some(MIB));
        let s = b.stats();
        assert_eq!((s.overdrafts, s.timeouts, s.waits), (1, 0, 1));
        drop(held);
        assert_eq!(b.stats().in_use, 0);
    }

    #[test]
    fn a_buffer_grown_past_its_charge_is_freed_not_kept() {
        let b = MemBudget::new(8 * MIB);
        let mut v = b.vec(POOL_MIN);
        assert!(v.is_empty());
        v.vec_mut().resize(4 * POOL_MIN, 1);
        drop(v);
        let s = b.stats();
        assert_eq!((s.in_use, s.cached), (0, 0));
    }

    #[test]
    fn many_threads_never_hold_more_than_the_limit() {
        let b = MemBudget::new(8 * MIB);
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let b = Arc::clone(&b);
                thread::spawn(move || {
                    for j in 0..50 {
                        let len = [4096, 128 << 10, MIB, 3 * MIB][(i + j) % 4];
                        let mut buf = b.buf(len);
                        buf[len - 1] = 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let s = b.stats();
        assert_eq!(s.in_use, 0);
        assert!(s.peak <= 8 * MIB as u64, "{s:?}");
        assert_eq!(s.nested, 0);
    }
}
