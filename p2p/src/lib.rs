//! `sheep-p2p`: the bottom of the sheepfs stack.
//!
//! It owns node identity ([`NodeId`]) and the one codec module ([`codec`]) through which every
//! message and on-disk record of the higher crates is encoded, the total-order state machine
//! ([`order`]) and the libp2p driver that runs it on the network with its durable log ([`net`]).
//! This crate must not depend on any other sheepfs crate.
#![warn(missing_docs)]

pub mod codec;
pub mod error;
pub mod net;
pub mod node;
pub mod order;

pub use error::{Error, Result};
pub use node::NodeId;
