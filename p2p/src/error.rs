//! Errors of the p2p crate.

/// Errors of the codec, the durable log and the cluster driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input does not start with the expected magic.
    #[error("bad magic: expected {expected:#010x}, found {found:#010x}")]
    BadMagic {
        /// The magic this decoder accepts.
        expected: u32,
        /// The magic found in the input.
        found: u32,
    },
    /// The major version differs, or the minor version is newer than ours.
    #[error("unsupported version {major}.{minor} (we speak {our_major}.{our_minor})")]
    Version {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
        /// Our major version.
        our_major: u16,
        /// Our minor version.
        our_minor: u16,
    },
    /// The input is larger than the decoder accepts.
    #[error("record of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Length of the input or the announced payload.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The input is shorter than its header says.
    #[error("truncated record")]
    Truncated,
    /// The checksum of the payload does not match.
    #[error("checksum mismatch")]
    Checksum,
    /// The payload could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(String),
    /// An I/O error (the durable log).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Another process (or driver) holds the log file.
    #[error("log file {0} is in use by another process")]
    Locked(std::path::PathBuf),
    /// A `--peer` address is neither `IP:PORT` nor a multiaddr.
    #[error("bad peer address {0:?}")]
    BadPeer(String),
    /// The libp2p network could not be set up.
    #[error("network: {0}")]
    Net(String),
    /// The proposal was refused by the order layer.
    #[error("proposal refused: {0:?}")]
    Refused(crate::order::Refusal),
    /// A forced recovery (`dog cluster recover force`) was refused.
    #[error("cannot force a recovery: {0}")]
    NoForce(crate::order::NoForce),
    /// The operation did not complete in time.
    #[error("timed out")]
    Timeout,
    /// The cluster driver has stopped.
    #[error("cluster driver stopped")]
    Stopped,
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
