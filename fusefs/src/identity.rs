//! The node's identity, kept in `<store>/node_id` across restarts.

use crate::error::{Error, Result};
use sheep_p2p::NodeId;
use std::io::{ErrorKind, Write};
use std::path::Path;

/// Name of the file holding the node id inside the store.
pub const NODE_ID_FILE: &str = "node_id";

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
