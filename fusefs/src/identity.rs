//! The node's hold on its store: the store lock and the node id kept in `<store>/node_id`.

use crate::error::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use sheep_p2p::NodeId;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::Path;

/// Name of the file holding the node id inside the store.
pub const NODE_ID_FILE: &str = "node_id";

/// Name of the lock file inside the store.
pub const LOCK_FILE: &str = "sheepfs.lock";

/// An exclusive lock on a store directory, held for the life of the daemon.
#[derive(Debug)]
pub struct StoreLock {
    _lock: Flock<File>,
}

/// Locks `store` so that no second daemon opens it; fails at once if another holds it.
pub fn lock_store(store: &Path) -> Result<StoreLock> {
    let path = store.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::Io {
            what: "cannot open the store lock",
            path: path.clone(),
            source,
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(StoreLock { _lock: lock }),
        Err((_, errno)) => Err(Error::Io {
            what: "the store is in use by another sheepfs (lock held on)",
            path,
            source: errno.into(),
        }),
    }
}

/// Returns the node id kept in `store`, creating and persisting a random one the first time.
pub fn load_or_create_node_id(store: &Path) -> Result<NodeId> {
    let path = store.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => NodeId::parse(&text).ok_or(Error::BadNodeId { path }),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let id = NodeId::random();
            let tmp = store.join(format!("{NODE_ID_FILE}.tmp"));
            let io = |source| Error::Io {
                what: "cannot write the node id to",
                path: tmp.clone(),
                source,
            };
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(format!("{id}\n").as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            Ok(id)
        }
        Err(source) => Err(Error::Io {
            what: "cannot read the node id from",
            path,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_can_be_locked_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_store(dir.path()).unwrap();
        let err = lock_store(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use"), "{err}");
        drop(lock);
        assert!(lock_store(dir.path()).is_ok());
    }

    #[test]
    fn the_node_id_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_node_id(dir.path()).unwrap();
        let again = load_or_create_node_id(dir.path()).unwrap();
        assert_eq!(first, again);
    }

    #[test]
    fn a_garbled_node_id_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NODE_ID_FILE), "not an id").unwrap();
        assert!(matches!(
            load_or_create_node_id(dir.path()),
            Err(Error::BadNodeId { .. })
        ));
    }
}
