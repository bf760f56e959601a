//! `sheep-vdi`: virtual disk images on top of an [`sheep_objects::ObjectStore`].
//!
//! A VDI is an inode record (name, size, copies, times, owner, mode, parent, snapshot tag) plus
//! an allocation table mapping each 4 MiB index to the [`Vid`](sheep_objects::Vid) whose data
//! object holds it (`Vid::NONE` = unallocated). Snapshots, clones and copies share objects
//! copy-on-write; the [`Pool`] reclaims objects nothing references any more. This crate must not
//! depend on the FUSE or admin crates. Its main type is [`Pool`]; its methods block (local disk
//! I/O) and are safe to call from many threads at once.
#![warn(missing_docs)]

pub mod alloc;
mod apply;
pub mod attr;
pub mod cmd;
mod cow;
pub mod error;
pub mod inode;
mod io;
pub mod locks;
pub mod log;
mod ops;
pub mod pool;
mod reclaim;
mod refs;
mod vdi;

pub use attr::{CreateOpts, Ino, SetAttr, Time, VdiAttr};
pub use error::{Error, Result};
pub use locks::{Lock, LockKind};
pub use log::{LocalLog, MetaLog};
pub use pool::{Pool, PoolConfig, PoolStats, MAX_VDI_SIZE};
pub use reclaim::Reclaimer;
