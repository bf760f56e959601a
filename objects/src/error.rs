//! Errors of the object layer.

use crate::oid::Oid;

/// Errors of object stores.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist.
    #[error("object {0} not found")]
    NotFound(Oid),
    /// The store has no space left.
    #[error("no space left in the store")]
    NoSpace,
    /// The request lies outside what an object may hold.
    #[error("range {offset}+{len} is outside object {oid}")]
    OutOfRange {
        /// The object.
        oid: Oid,
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
    },
    /// An object's content failed its checks.
    #[error("object {0} is corrupt")]
    CorruptObject(Oid),
    /// The store directory belongs to something else or a newer version.
    #[error("store at {path}: {reason}")]
    BadStore {
        /// The store directory.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The holders of an object could not be reached in time (no quorum, holders cut off or
    /// not answering): nothing is known to be lost, the same request may succeed later.
    #[error("{oid} unavailable: {reason}")]
    Unavailable {
        /// The object.
        oid: Oid,
        /// Why.
        reason: String,
    },
    /// An I/O error from the local file system.
    #[error("I/O error on {oid}: {source}")]
    Io {
        /// The object being accessed (`Oid(0)` when none).
        oid: Oid,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error, turning ENOSPC/EDQUOT into [`Error::NoSpace`].
    pub fn io(oid: Oid, source: std::io::Error) -> Error {
        match source.raw_os_error() {
            Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT) => Error::NoSpace,
            _ => Error::Io { oid, source },
        }
    }
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
