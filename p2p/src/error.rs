//! Errors of the p2p crate.

/// Errors raised while encoding or decoding frames and records.
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
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
