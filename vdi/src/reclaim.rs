//! The background worker of a pool: deletes objects nothing references any more, soon after
//! the last reference goes, and writes back what no fsync has made durable, so a crash loses
//! at most the last `writeback` interval of unflushed writes (like a file system's commit
//! interval).

use crate::pool::Pool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running reclaimer thread; dropping it stops the thread and waits for it.
pub struct Reclaimer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    handover: Option<JoinHandle<()>>,
}

impl Reclaimer {
    /// Starts a thread named `sheep-reclaim` that runs [`Pool::reclaim`] every `interval`
    /// while objects wait for it, and [`Pool::flush_all`] every `writeback` (if given).
    pub fn spawn(
        pool: Arc<Pool>,
        interval: Duration,
        writeback: Option<Duration>,
    ) -> std::io::Result<Reclaimer> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (flag2, p) = (stop.clone(), pool.clone());
        let thread = std::thread::Builder::new()
            .name("sheep-reclaim".into())
            .spawn(move || {
                let mut flushed = Instant::now();
                while !flag.load(Ordering::SeqCst) {
                    std::thread::park_timeout(interval);
                    if writeback.is_some_and(|w| flushed.elapsed() >= w) {
                        flushed = Instant::now();
                        if let Err(e) = pool.flush_all() {
                            tracing::warn!(error = %e, "background write-back failed");
                        }
                    }
                    if pool.pending_reclaim() == 0 {
                        continue;
                    }
                    match pool.reclaim() {
                        Ok(n) => tracing::debug!(objects = n, "reclaimed"),
                        Err(e) => tracing::warn!(error = %e, "reclaim failed; will retry"),
                    }
                }
            })?;
        // Hands VDIs over to hosts that want to write them, as soon as they ask.
        let flag = flag2;
        let handover = std::thread::Builder::new()
            .name("sheep-handover".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    p.wait_applied(Duration::from_millis(100), || p.handovers_waiting());
                    p.serve_handovers();
                }
            })?;
        Ok(Reclaimer {
            stop,
            thread: Some(thread),
            handover: Some(handover),
        })
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        if let Some(t) = self.handover.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CreateOpts, PoolConfig};
    use sheep_objects::{MemStore, ObjectStore};

    #[test]
    fn deleted_data_is_reclaimed_in_the_background() {
        let store = Arc::new(MemStore::new());
        let pool = Arc::new(Pool::open(store.clone(), PoolConfig::default()).unwrap());
        let a = pool.create("a", 8 << 20, CreateOpts::default()).unwrap();
        pool.write(a.ino, 0, &[1u8; 8192]).unwrap();
        let _r = Reclaimer::spawn(pool.clone(), Duration::from_millis(10), None).unwrap();
        pool.unlink("a").unwrap();
        for _ in 0..500 {
            if store
                .list()
                .unwrap()
                .iter()
                .all(|o| o.kind() != sheep_objects::ObjectKind::Data)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("data objects were not reclaimed");
    }

    #[test]
    fn unflushed_writes_are_written_back_in_the_background() {
        let store = Arc::new(MemStore::new());
        let pool = Arc::new(Pool::open(store.clone(), PoolConfig::default()).unwrap());
        let a = pool.create("a", 8 << 20, CreateOpts::default()).unwrap();
        pool.write(a.ino, 0, b"eventually durable").unwrap();
        let r = Reclaimer::spawn(
            pool.clone(),
            Duration::from_millis(5),
            Some(Duration::from_millis(20)),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(r);
        drop(pool);
        store.crash();
        let pool = Pool::open(store, PoolConfig::default()).unwrap();
        let mut buf = [0u8; 18];
        pool.read(pool.lookup("a").unwrap().ino, 0, &mut buf)
            .unwrap();
        assert_eq!(&buf, b"eventually durable");
    }
}
