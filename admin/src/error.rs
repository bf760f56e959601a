//! Errors of the admin library.

use crate::wire::WireError;
use std::path::PathBuf;

/// Errors of the admin client, server and size parser.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The admin socket could not be reached.
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The admin socket could not be created.
    #[error("cannot listen on {}: {source}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An I/O error on an established connection.
    #[error("I/O error on the admin socket: {0}")]
    Io(#[from] std::io::Error),
    /// A frame could not be encoded or decoded.
    #[error("bad admin frame: {0}")]
    Codec(#[from] sheep_p2p::Error),
    /// The daemon refused or failed the request.
    #[error("{0}")]
    Remote(WireError),
    /// The peer closed the connection before answering.
    #[error("the daemon closed the connection")]
    Closed,
    /// The daemon did not answer within the read timeout.
    #[error("the daemon did not answer in time")]
    Timeout,
    /// A human size could not be parsed.
    #[error("invalid size {input:?}: {reason}")]
    InvalidSize {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
