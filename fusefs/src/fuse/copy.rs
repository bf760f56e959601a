//! `copy_file_range` of more than one FUSE reply can report.
//!
//! The request carries a 64-bit length but the reply a 32-bit count, so the kernel (and `cp`)
//! loops over a large copy. To keep a whole-file copy point-in-time consistent, the first call
//! copies the whole requested range at once (sharing objects, O(metadata)) and reports one
//! chunk; the calls that continue that copy on the same pair of handles are then answered from
//! what was already copied. Records are dropped when either handle is released.

use parking_lot::Mutex;
use std::collections::HashMap;

/// Largest count one reply reports: a `u32`, rounded down to whole objects so the calls that
/// follow stay object-aligned.
pub(super) const MAX_COPY_CHUNK: u64 =
    (u32::MAX as u64 / sheep_objects::OBJECT_SIZE) * sheep_objects::OBJECT_SIZE;

/// Where a copy made ahead continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cursor {
    pub(super) ino_in: u64,
    pub(super) off_in: u64,
    pub(super) ino_out: u64,
    pub(super) off_out: u64,
}

#[derive(Debug, Clone, Copy)]
struct Ahead {
    next: Cursor,
    /// End of the copied range in the source.
    end_in: u64,
}

/// Copies made ahead, by (source handle, destination handle).
#[derive(Default)]
pub(super) struct CopyAhead {
    done: Mutex<HashMap<(u64, u64), Ahead>>,
}

impl CopyAhead {
    /// If the call at `at` continues a copy made ahead, returns the count to report.
    pub(super) fn take(&self, fhs: (u64, u64), at: Cursor, len: u64) -> Option<u64> {
        let mut done = self.done.lock();
        let ahead = done.get_mut(&fhs)?;
        if ahead.next != at {
            done.remove(&fhs);
            return None;
        }
        let n = len.min(MAX_COPY_CHUNK).min(ahead.end_in - at.off_in);
        ahead.next.off_in += n;
        ahead.next.off_out += n;
        if ahead.next.off_in >= ahead.end_in || n == 0 {
            done.remove(&fhs);
        }
        Some(n)
    }

    /// Records that `copied` bytes from `at` are done; returns the count to report now.
    pub(super) fn record(&self, fhs: (u64, u64), at: Cursor, copied: u64) -> u64 {
        let report = copied.min(MAX_COPY_CHUNK);
        if copied > report {
            let next = Cursor {
                off_in: at.off_in + report,
                off_out: at.off_out + report,
                ..at
            };
            self.done.lock().insert(
                fhs,
                Ahead {
                    next,
                    end_in: at.off_in + copied,
                },
            );
        }
        report
    }

    /// Forgets copies involving handle `fh`.
    pub(super) fn forget(&self, fh: u64) {
        self.done.lock().retain(|k, _| k.0 != fh && k.1 != fh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(off: u64) -> Cursor {
        Cursor {
            ino_in: 2,
            off_in: off,
            ino_out: 3,
            off_out: off,
        }
    }

    #[test]
    fn a_large_copy_is_reported_in_chunks_that_continue_it() {
        let c = CopyAhead::default();
        let total = 10u64 << 30;
        let first = c.record((1, 2), at(0), total);
        assert_eq!(first, MAX_COPY_CHUNK);
        let mut off = first;
        while off < total {
            let n = c.take((1, 2), at(off), total - off).expect("continues");
            assert!(n > 0);
            off += n;
        }
        assert_eq!(off, total);
        assert_eq!(c.take((1, 2), at(off), 1), None);
    }

    #[test]
    fn another_offset_or_a_released_handle_ends_the_record() {
        let c = CopyAhead::default();
        c.record((1, 2), at(0), 9 << 30);
        assert_eq!(c.take((1, 2), at(5), 10), None);
        c.record((1, 2), at(0), 9 << 30);
        c.forget(2);
        assert_eq!(c.take((1, 2), at(MAX_COPY_CHUNK), 10), None);
    }

    #[test]
    fn chunks_fit_a_u32_and_keep_object_alignment() {
        assert!(MAX_COPY_CHUNK <= u64::from(u32::MAX));
        assert_eq!(MAX_COPY_CHUNK % sheep_objects::OBJECT_SIZE, 0);
    }
}
