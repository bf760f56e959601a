//! Total order: membership and metadata operations in one log that every member applies in
//! the same sequence (see `docs/CLUSTER.md`).

mod api;
mod machine;

pub use api::*;
pub use machine::{preferred, quorum, Ballot, ClusterId, Heartbeat, Msg, OrderNode};
