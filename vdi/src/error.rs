//! Errors of the volume layer.

use sheep_objects::Vid;

/// Errors of VDI operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No VDI (or snapshot) has this name or inode number.
    #[error("no such VDI: {0}")]
    NotFound(String),
    /// A VDI with this name already exists.
    #[error("VDI {0} already exists")]
    Exists(String),
    /// The name is not a valid VDI name.
    #[error("invalid VDI name {0:?}: {1}")]
    InvalidName(String, &'static str),
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The VDI is a read-only snapshot.
    #[error("{0} is a read-only snapshot")]
    ReadOnly(String),
    /// The VDI is in use and the operation needs it idle.
    #[error("{0} is busy")]
    Busy(String),
    /// The requested size exceeds what a VDI may hold.
    #[error("size {0} exceeds the maximum VDI size")]
    TooBig(u64),
    /// Every VDI id is taken.
    #[error("no free VDI id")]
    NoVid,
    /// The operation is not supported on a sheepfs mount.
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    /// A metadata record failed to decode.
    #[error("corrupt metadata for {vid:?}: {reason}")]
    CorruptMeta {
        /// The VDI whose record is bad (`Vid::NONE` for the VDI table).
        vid: Vid,
        /// What failed.
        reason: String,
    },
    /// Writes to this VDI could not be made durable. Linux may drop dirty pages after a
    /// write-back error, so a later fsync could succeed without the data: the VDI refuses
    /// writes and flushes until sheepfs restarts from what is on disk.
    #[error("writes to {0} could not be made durable ({1}); restart sheepfs to recover")]
    WriteBack(String, String),
    /// A byte-range lock of another owner (on this or another host) is in the way.
    #[error("locked by another owner")]
    Locked(crate::locks::Lock),
    /// The cluster could not order the change (no quorum, not a member, timed out).
    #[error("the cluster is unavailable: {0}")]
    Unavailable(String),
    /// The object layer failed.
    #[error(transparent)]
    Object(#[from] sheep_objects::Error),
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
