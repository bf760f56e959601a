//! What `fallocate(2)` does to a VDI, decided without touching it.
//!
//! | mode                        | effect                                                 |
//! |-----------------------------|--------------------------------------------------------|
//! | `0`                         | preallocation: grows the size to `offset + len`        |
//! | `KEEP_SIZE`                 | nothing (space is allocated on write anyway)           |
//! | `PUNCH_HOLE \| KEEP_SIZE`    | frees the range (guest discard)                        |
//! | `ZERO_RANGE [\| KEEP_SIZE]`  | frees the range, grows the size unless `KEEP_SIZE`     |
//! | anything else               | `EOPNOTSUPP`                                           |
//!
//! Sparse VDIs read unallocated ranges as zeros, so freeing a range is zeroing it.

const KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;
const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE;

/// The VDI calls a `fallocate` turns into, in order: discard, then grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FallocPlan {
    /// Range to discard, `(offset, len)`, already clipped to the current size.
    pub discard: Option<(u64, u64)>,
    /// New size, when the call grows the VDI.
    pub grow_to: Option<u64>,
}

/// Plans `fallocate(mode, offset, len)` on a VDI of `size` bytes; `Err` is an errno.
pub fn plan(mode: i32, offset: u64, len: u64, size: u64) -> Result<FallocPlan, i32> {
    if len == 0 {
        return Err(libc::EINVAL);
    }
    let end = offset.checked_add(len).ok_or(libc::EFBIG)?;
    if mode & !(KEEP_SIZE | PUNCH_HOLE | ZERO_RANGE) != 0 {
        return Err(libc::EOPNOTSUPP);
    }
    let keep = mode & KEEP_SIZE != 0;
    let grow_to = (!keep && end > size).then_some(end);
    let clipped = (offset < size).then(|| (offset, end.min(size) - offset));
    match (mode & PUNCH_HOLE != 0, mode & ZERO_RANGE != 0) {
        (true, false) if keep => Ok(FallocPlan {
            discard: clipped,
            grow_to: None,
        }),
        (true, _) => Err(libc::EOPNOTSUPP),
        (false, true) => Ok(FallocPlan {
            discard: clipped,
            grow_to,
        }),
        (false, false) => Ok(FallocPlan {
            discard: None,
            grow_to,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn plain_preallocation_grows_only_past_the_end() {
        assert_eq!(plan(0, 0, 8 * MIB, 4 * MIB).unwrap().grow_to, Some(8 * MIB));
        assert_eq!(plan(0, 0, MIB, 4 * MIB).unwrap(), FallocPlan::default());
        assert_eq!(
            plan(KEEP_SIZE, 0, 8 * MIB, MIB).unwrap(),
            FallocPlan::default()
        );
    }

    #[test]
    fn punch_hole_discards_within_the_size_and_never_grows() {
        let p = plan(PUNCH_HOLE | KEEP_SIZE, 3 * MIB, 4 * MIB, 4 * MIB).unwrap();
        assert_eq!(p.discard, Some((3 * MIB, MIB)));
        assert_eq!(p.grow_to, None);
        let past = plan(PUNCH_HOLE | KEEP_SIZE, 5 * MIB, MIB, 4 * MIB).unwrap();
        assert_eq!(past, FallocPlan::default());
    }

    #[test]
    fn punch_hole_without_keep_size_is_not_supported() {
        assert_eq!(plan(PUNCH_HOLE, 0, MIB, 4 * MIB), Err(libc::EOPNOTSUPP));
    }

    #[test]
    fn zero_range_discards_and_grows_unless_keep_size() {
        let p = plan(ZERO_RANGE, 2 * MIB, 4 * MIB, 4 * MIB).unwrap();
        assert_eq!(p.discard, Some((2 * MIB, 2 * MIB)));
        assert_eq!(p.grow_to, Some(6 * MIB));
        let k = plan(ZERO_RANGE | KEEP_SIZE, 2 * MIB, 4 * MIB, 4 * MIB).unwrap();
        assert_eq!(k.grow_to, None);
    }

    #[test]
    fn other_modes_and_bad_ranges_are_refused() {
        assert_eq!(
            plan(libc::FALLOC_FL_COLLAPSE_RANGE, 0, MIB, 4 * MIB),
            Err(libc::EOPNOTSUPP)
        );
        assert_eq!(plan(0, 0, 0, 4 * MIB), Err(libc::EINVAL));
        assert_eq!(plan(0, u64::MAX, 2, 0), Err(libc::EFBIG));
    }
}
