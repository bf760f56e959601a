//! The one place where volume-layer errors become errno values.
//!
//! Every [`sheep_vdi::Error`] variant is matched explicitly, so a new variant does not compile
//! until someone decides its errno here; anything without a better answer is `EIO`.

use sheep_objects::Error as ObjectError;
use sheep_vdi::Error;

/// Longest name a directory entry may have, as `statfs` reports it.
pub const NAME_MAX: usize = 255;

/// Maps an error to the errno that the kernel hands back to the caller.
pub trait ToErrno {
    /// Returns a positive errno value.
    fn to_errno(&self) -> i32;
}

impl ToErrno for Error {
    fn to_errno(&self) -> i32 {
        match self {
            Error::NotFound(_) => libc::ENOENT,
            Error::Exists(_) => libc::EEXIST,
            Error::InvalidName(name, _) if name.len() > NAME_MAX => libc::ENAMETOOLONG,
            Error::InvalidName(..) => libc::EINVAL,
            Error::Invalid(_) => libc::EINVAL,
            Error::ReadOnly(_) => libc::EROFS,
            Error::Busy(_) => libc::EBUSY,
            Error::Locked(_) => libc::EAGAIN,
            Error::Unavailable(_) => libc::EIO,
            Error::TooBig(_) => libc::EFBIG,
            Error::NoVid => libc::ENOSPC,
            Error::NotSupported(_) => libc::EOPNOTSUPP,
            Error::CorruptMeta { .. } => libc::EIO,
            Error::WriteBack(..) => libc::EIO,
            Error::Object(e) => e.to_errno(),
        }
    }
}

impl ToErrno for ObjectError {
    fn to_errno(&self) -> i32 {
        match self {
            ObjectError::NoSpace => libc::ENOSPC,
            // A missing object behind a VDI is damage, not a missing file.
            ObjectError::NotFound(_) => libc::EIO,
            ObjectError::OutOfRange { .. } => libc::EIO,
            ObjectError::CorruptObject(_) => libc::EIO,
            ObjectError::BadStore { .. } => libc::EIO,
            ObjectError::Io { .. } => libc::EIO,
            ObjectError::Unavailable { .. } => libc::EIO,
        }
    }
}

/// The `fuser` form of an error's errno.
pub fn fuse_errno(e: &impl ToErrno) -> fuser::Errno {
    fuser::Errno::from_i32(e.to_errno())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheep_objects::{Oid, Vid};

    #[test]
    fn each_vdi_error_maps_to_its_errno() {
        let cases = [
            (Error::NotFound("a".into()), libc::ENOENT),
            (Error::Exists("a".into()), libc::EEXIST),
            (
                Error::InvalidName("a/b".into(), "contains '/'"),
                libc::EINVAL,
            ),
            (Error::Invalid("offset".into()), libc::EINVAL),
            (Error::ReadOnly("a@t".into()), libc::EROFS),
            (Error::Busy("a".into()), libc::EBUSY),
            (Error::TooBig(1 << 60), libc::EFBIG),
            (Error::NoVid, libc::ENOSPC),
            (Error::NotSupported("xattr"), libc::EOPNOTSUPP),
            (
                Error::CorruptMeta {
                    vid: Vid::NONE,
                    reason: "bad magic".into(),
                },
                libc::EIO,
            ),
        ];
        for (err, errno) in cases {
            assert_eq!(err.to_errno(), errno, "{err:?}");
        }
    }

    #[test]
    fn a_name_longer_than_name_max_is_enametoolong() {
        let err = Error::InvalidName("x".repeat(256), "too long");
        assert_eq!(err.to_errno(), libc::ENAMETOOLONG);
        let err = Error::InvalidName("x".repeat(255), "bad character");
        assert_eq!(err.to_errno(), libc::EINVAL);
    }

    #[test]
    fn object_errors_map_to_enospc_or_eio() {
        assert_eq!(Error::Object(ObjectError::NoSpace).to_errno(), libc::ENOSPC);
        let missing = Error::Object(ObjectError::NotFound(Oid::data(Vid(7), 0)));
        assert_eq!(missing.to_errno(), libc::EIO);
        let io = Error::Object(ObjectError::Io {
            oid: Oid(0),
            source: std::io::Error::other("disk gone"),
        });
        assert_eq!(io.to_errno(), libc::EIO);
    }

    #[test]
    fn fuse_errno_carries_the_code() {
        assert_eq!(fuse_errno(&Error::NoVid).code(), libc::ENOSPC);
    }
}
