//! `sheep-objects`: object ids and the stores that hold objects.
//!
//! A volume is cut into 4 MiB data objects named by an [`Oid`] in Sheepdog's style (type bits,
//! 24-bit [`Vid`], 32-bit index). The [`ObjectStore`] trait is the seam between the volume layer
//! and storage: [`DiskStore`] keeps objects as sparse files under `--store DIR`, [`MemStore`]
//! keeps them in memory, and both pass the one conformance suite in [`conformance`].
//! Placement, replication and recovery arrive here with the cluster. This crate depends only on
//! `sheep-p2p`.
#![warn(missing_docs)]

pub mod conformance;
pub mod disk;
pub mod error;
pub mod faulty;
pub mod mem;
pub mod oid;
pub mod store;

pub use disk::DiskStore;
pub use error::{Error, Result};
pub use faulty::FaultyStore;
pub use mem::MemStore;
pub use oid::{ObjectKind, Oid, Vid, OBJECT_BYTES, OBJECT_SIZE};
pub use store::{ObjectStore, StoreStats};
