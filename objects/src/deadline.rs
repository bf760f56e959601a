//! The deadline of the operation this thread is serving.
//!
//! A file-system operation on a host cut off from its cluster must answer EIO after
//! `--io-timeout`, not after the sum of every wait on its way (the quorum gate, a VDI's gate
//! held by a handover's flush, the store's quorum wait, a holder that does not answer). The
//! FUSE layer opens a [`scope`] when an operation starts; every wait below it ends at
//! [`clamp`]ed times, so the whole operation fails within its deadline. Threads without a
//! scope (background work, the data channel's servers) keep their own timeouts.

use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Restores the previous deadline when dropped.
#[must_use = "the deadline holds only while the scope lives"]
#[derive(Debug)]
pub struct Scope {
    prev: Option<Instant>,
}

/// Sets the deadline of this thread's operation to `at` (or keeps an earlier one) until the
/// returned scope is dropped.
pub fn scope(at: Instant) -> Scope {
    let prev = DEADLINE.get();
    DEADLINE.set(Some(prev.map_or(at, |p| p.min(at))));
    Scope { prev }
}

impl Drop for Scope {
    fn drop(&mut self) {
        DEADLINE.set(self.prev);
    }
}

/// The deadline of this thread's operation, if any.
pub fn current() -> Option<Instant> {
    DEADLINE.get()
}

/// `at`, or this thread's operation deadline if that is earlier.
pub fn clamp(at: Instant) -> Instant {
    current().map_or(at, |d| d.min(at))
}

/// `timeout` from now, cut to this thread's operation deadline.
pub fn within(timeout: Duration) -> Instant {
    clamp(Instant::now() + timeout)
}

/// True once this thread's operation deadline has passed.
pub fn passed() -> bool {
    current().is_some_and(|d| Instant::now() >= d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_keep_the_earliest_and_restore() {
        assert_eq!(current(), None);
        let far = Instant::now() + Duration::from_secs(60);
        let near = Instant::now() + Duration::from_secs(1);
        {
            let _a = scope(near);
            assert_eq!(current(), Some(near));
            {
                let _b = scope(far);
                assert_eq!(current(), Some(near), "a later deadline does not extend");
            }
            assert_eq!(clamp(far), near);
            assert!(within(Duration::from_secs(30)) <= near);
        }
        assert_eq!(current(), None);
        assert_eq!(clamp(far), far);
        assert!(!passed());
        let _p = scope(Instant::now());
        assert!(passed());
    }

    #[test]
    fn a_deadline_is_per_thread() {
        let _a = scope(Instant::now());
        std::thread::spawn(|| assert_eq!(current(), None))
            .join()
            .unwrap();
    }
}
