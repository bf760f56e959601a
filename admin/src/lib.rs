//! `sheep-admin`: the admin protocol of sheepfs and the `dog` command line.
//!
//! It owns the admin messages ([`Request`], [`Reply`], [`WireError`] in [`wire`]), the blocking
//! [`Client`] that `dog` uses, the async [`server::serve`] loop that the `sheepfs` daemon runs on
//! its root-only Unix socket with an [`AdminService`], and human sizes ([`parse_size`],
//! [`format_size`]). Frames use the `sheep_p2p::codec` envelope. This crate must not depend on
//! `sheep-vdi` or `sheep-fusefs`: the daemon translates between its types and these.
#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod server;
pub mod service;
pub mod size;
pub mod wire;

pub use client::Client;
pub use error::{Error, Result};
pub use service::AdminService;
pub use size::{format_size, parse_size};
pub use wire::{
    CheckBatch, ClusterInfo, EpochInfo, ForceInfo, MemberSummary, MemoryInfo, NodeInfo,
    RebalanceInfo, RecoveryInfo, Reply, Request, VdiInfo, WaitingInfo, WireError, ADMIN_KIND,
    ADMIN_MAGIC, MAX_FRAME,
};
