//! `sheep-objects`: object ids and the stores that hold objects.
//!
//! A volume is cut into 4 MiB data objects named by an [`Oid`] in Sheepdog's style (type bits,
//! 24-bit [`Vid`], 32-bit index). The [`ObjectStore`] trait is the seam between the volume layer
//! and storage: [`DiskStore`] keeps objects as sparse files under `--store DIR`, [`MemStore`]
//! keeps them in memory, and both pass the one conformance suite in [`conformance`].
//! [`placement`] names the hosts holding each data object (consistent hashing),
//! [`ReplicatedStore`] keeps data objects on those hosts over the data channel ([`net`], plain
//! TCP). [`budget`] bounds the memory of the I/O buffers. This crate depends only on
//! `sheep-p2p`.
#![warn(missing_docs)]

pub mod budget;
pub mod conformance;
pub mod deadline;
pub mod disk;
pub mod error;
pub mod faulty;
pub mod mem;
pub mod net;
pub mod oid;
pub mod placement;
pub mod replicated;
pub mod store;

pub use budget::{BudgetStats, Buf, MemBudget};
pub use disk::DiskStore;
pub use error::{Error, Result};
pub use faulty::FaultyStore;
pub use mem::MemStore;
pub use oid::{ObjectKind, Oid, Vid, OBJECT_BYTES, OBJECT_SIZE};
pub use placement::Placement;
pub use replicated::{
    CheckReport, ClusterMap, CopiesOf, FixedCopies, Member, RecoveryStatus, ReplicaConfig,
    ReplicaStatus, ReplicatedStore,
};
pub use store::{ObjectMeta, ObjectStore, StoreStats};
