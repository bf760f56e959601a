//! Attributes as the kernel sees them: [`VdiAttr`] to [`fuser::FileAttr`], and times both ways.

use fuser::{FileAttr, FileType, INodeNo, TimeOrNow};
use sheep_vdi::{Ino, Time, VdiAttr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Block size reported by `stat` (`st_blksize`) and `statfs` (`f_bsize`).
pub const BLOCK_SIZE: u32 = 4096;

/// Converts a stored time to a `SystemTime` (times before 1970 included).
pub fn to_system_time(t: Time) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nsecs.min(999_999_999)));
    let base = match u64::try_from(t.secs) {
        Ok(secs) => UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
        Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(t.secs.unsigned_abs())),
    };
    base.and_then(|b| b.checked_add(nanos))
        .unwrap_or(UNIX_EPOCH)
}

/// Converts a `SystemTime` to a stored time (times before 1970 included).
pub fn from_system_time(t: SystemTime) -> Time {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Time {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nsecs: d.subsec_nanos(),
        },
        Err(e) => {
            // `t` is before the epoch by `d`: floor to whole seconds, keep nanos positive.
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() == 0 {
                Time {
                    secs: -secs,
                    nsecs: 0,
                }
            } else {
                Time {
                    secs: -secs - 1,
                    nsecs: 1_000_000_000 - d.subsec_nanos(),
                }
            }
        }
    }
}

/// Resolves a `setattr` time, where `UTIME_NOW` arrives as [`TimeOrNow::Now`].
pub fn time_or_now(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::Now => Time::now(),
        TimeOrNow::SpecificTime(t) => from_system_time(t),
    }
}

/// The kernel's view of a VDI: a regular file whose blocks are its allocated space.
pub fn file_attr(a: &VdiAttr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino.0),
        size: a.size,
        blocks: a.allocated.div_ceil(512),
        atime: to_system_time(a.atime),
        mtime: to_system_time(a.mtime),
        ctime: to_system_time(a.ctime),
        crtime: to_system_time(a.crtime),
        kind: FileType::RegularFile,
        perm: perm_bits(a.mode),
        nlink: 1,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

/// The mount's root: a root-owned 0755 directory whose times are the daemon's start.
pub fn root_attr(started: SystemTime) -> FileAttr {
    FileAttr {
        ino: INodeNo(Ino::ROOT.0),
        size: 0,
        blocks: 0,
        atime: started,
        mtime: started,
        ctime: started,
        crtime: started,
        kind: FileType::Directory,
        perm: 0o755,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

/// Permission bits (`0o7777`) of a mode.
pub fn perm_bits(mode: u32) -> u16 {
    u16::try_from(mode & 0o7777).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheep_objects::Vid;

    fn sample() -> VdiAttr {
        let t = Time {
            secs: 1_700_000_000,
            nsecs: 5,
        };
        VdiAttr {
            ino: Ino(42),
            name: "vm0".into(),
            base: "vm0".into(),
            tag: None,
            vid: Vid(7),
            parent: None,
            size: 10 << 30,
            allocated: (4 << 20) + 1,
            shared: 0,
            mode: 0o100_640,
            uid: 107,
            gid: 108,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            copies: 3,
            snapshot: false,
        }
    }

    #[test]
    fn a_vdi_is_a_regular_file_with_allocated_blocks() {
        let a = file_attr(&sample());
        assert_eq!(a.ino, INodeNo(42));
        assert_eq!(a.kind, FileType::RegularFile);
        assert_eq!(a.size, 10 << 30);
        assert_eq!(a.blocks, (4 << 20) / 512 + 1);
        assert_eq!(a.perm, 0o640);
        assert_eq!((a.uid, a.gid, a.nlink, a.blksize), (107, 108, 1, 4096));
    }

    #[test]
    fn the_root_is_a_0755_directory() {
        let a = root_attr(UNIX_EPOCH);
        assert_eq!(a.ino, INodeNo::ROOT);
        assert_eq!(a.kind, FileType::Directory);
        assert_eq!(a.perm, 0o755);
    }

    #[test]
    fn times_round_trip_on_both_sides_of_the_epoch() {
        for t in [
            Time { secs: 0, nsecs: 0 },
            Time {
                secs: 1_700_000_000,
                nsecs: 123_456_789,
            },
            Time {
                secs: -1,
                nsecs: 500_000_000,
            },
            Time {
                secs: -86_400,
                nsecs: 0,
            },
        ] {
            assert_eq!(from_system_time(to_system_time(t)), t);
        }
    }

    #[test]
    fn utime_now_resolves_to_the_current_time() {
        let before = Time::now();
        let t = time_or_now(TimeOrNow::Now);
        assert!(t >= before);
    }
}
