//! `sheep-tests`: the harness for tests that run the real `sheepfs` daemon on a real FUSE mount
//! and drive it with clients nobody here wrote (`qemu-img`, `qemu-io`, `mkfs.ext4`, `fio`).
//!
//! It owns [`Node`] (one daemon and its mount, stopped or killed on drop), [`Net`] and [`Host`]
//! (several daemons, each in a network namespace of its own on one bridge), [`require`] (the
//! prerequisite gate: a failure under `CI=true`, a loud skip elsewhere), [`bin`], the command
//! helpers ([`must_run`], [`must_qemu_io`]), the [`LoopDev`], [`MountGuard`] and [`LoopFs`] guards,
//! the file helpers in [`mod@file`] and the block-I/O history checker in [`history`]. It depends on no other crate of the workspace: it talks to the
//! binaries only through their command lines and the mount, as a user would.
//!
//! Every resource a test creates (process, mount, loop device, temporary directory, network
//! namespace, veth, bridge) is released by a guard, by PID or by name, also when the test panics.
#![warn(missing_docs)]

pub mod cmd;
pub mod daemon;
pub mod env;
pub mod file;
pub mod guard;
pub mod history;
pub mod netns;
pub mod node;
pub mod vm;

pub use cmd::{must_qemu_io, must_run, run};
pub use daemon::poll_until;
pub use daemon::Daemon;
pub use env::{bin, in_ci, require};
pub use file::{MIB, OBJECT_SIZE};
pub use guard::{ChildGuard, LoopDev, LoopFs, MountGuard};
pub use netns::{wait_until, Host, Net, Setup};
pub use node::{Node, StoreDir};
