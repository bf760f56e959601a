//! `sheep-p2p`: the bottom of the sheepfs stack.
//!
//! It owns node identity ([`NodeId`]) and the one codec module ([`codec`]) through which every
//! message and on-disk record of the higher crates is encoded. Discovery (mDNS), gossip and the
//! sequencer's total order arrive here in the cluster issue. This crate must not depend on any
//! other sheepfs crate.
#![warn(missing_docs)]

pub mod codec;
pub mod error;
pub mod node;

pub use error::{Error, Result};
pub use node::NodeId;
