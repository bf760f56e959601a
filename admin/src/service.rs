//! The trait the daemon implements to answer admin requests.

use crate::wire::{Reply, Request, WireError};

/// Answers admin requests. The daemon implements it; [`crate::server::serve`] calls it.
///
/// `handle` is blocking: the server calls it on a blocking thread
/// (`tokio::task::spawn_blocking`), so it may do disk I/O or `Handle::block_on`.
pub trait AdminService: Send + Sync + 'static {
    /// Carries out one request.
    fn handle(&self, req: Request) -> Result<Reply, WireError>;
}
