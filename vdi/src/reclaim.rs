//! The background reclaimer: deletes objects nothing references any more, soon after the
//! last reference goes.

use crate::pool::Pool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running reclaimer thread; dropping it stops the thread and waits for it.
pub struct Reclaimer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reclaimer {
    /// Starts a thread named `sheep-reclaim` that runs [`Pool::reclaim`] every `interval`
    /// while objects wait for it.
    pub fn spawn(pool: Arc<Pool>, interval: Duration) -> std::io::Result<Reclaimer> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sheep-reclaim".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    std::thread::park_timeout(interval);
                    if pool.pending_reclaim() == 0 {
                        continue;
                    }
                    match pool.reclaim() {
                        Ok(n) => tracing::debug!(objects = n, "reclaimed"),
                        Err(e) => tracing::warn!(error = %e, "reclaim failed; will retry"),
                    }
                }
            })?;
        Ok(Reclaimer {
            stop,
            thread: Some(thread),
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
        let _r = Reclaimer::spawn(pool.clone(), Duration::from_millis(10)).unwrap();
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
}
