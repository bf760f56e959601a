//! The data channel: object requests between hosts over plain TCP.
//!
//! Blocking `std::net` sockets with length-prefixed frames ([`proto`]): the server runs one
//! thread per connection ([`server`]), the client keeps a pool of idle connections per peer
//! address ([`client`]). Every request carries the sender's epoch; a server at another epoch
//! answers [`proto::Status::WrongEpoch`] and does nothing.

pub mod client;
pub mod proto;
pub mod server;

pub use client::{Call, NetError, Pool, Response};
pub use proto::{FrameError, Image, Op, ReqHeader, RespHeader, Status};
pub use server::{Handler, Reply, Server};
