//! `sheep-fusefs`: the sheepfs mount and the `sheepfs` daemon.
//!
//! It owns the FUSE adapter ([`fuse::SheepFs`], a thin layer over [`sheep_vdi::Pool`] that serves
//! every VDI as a regular file of one flat directory), the errno mapping ([`errno::ToErrno`]), the
//! admin service the daemon answers `dog` with ([`admin::NodeService`]) and the daemon's
//! configuration, memory plan and start-up checks ([`config`], [`memory`], [`mountpoint`],
//! [`identity`]). The binary
//! `sheepfs` wires them together. fuser is used here and nowhere else; no other sheepfs crate
//! may depend on this one.
#![warn(missing_docs)]

pub mod admin;
pub mod attr;
pub mod cluster;
pub mod config;
pub mod dir;
pub mod errno;
pub mod error;
pub mod falloc;
pub mod fuse;
pub mod identity;
pub mod memory;
pub mod mountpoint;

pub use error::{Error, Result};
pub use fuse::{FsOptions, SheepFs};
