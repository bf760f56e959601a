//! Errors of the daemon's start-up and configuration.

use std::path::PathBuf;

/// Errors of the daemon outside FUSE operations (those map to errno through
/// [`crate::errno::ToErrno`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The mount point cannot be used; `reason` says why and what to do.
    #[error("cannot mount on {}: {reason}", path.display())]
    Mountpoint {
        /// The mount point given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid {field}: {reason}")]
    Config {
        /// The option (`--copies`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The node id file exists but does not hold a node id.
    #[error("{} does not hold a node id (32 hex digits); remove it to get a new one", path.display())]
    BadNodeId {
        /// The file.
        path: PathBuf,
    },
    /// A file-system call failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done ("cannot create store directory").
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
