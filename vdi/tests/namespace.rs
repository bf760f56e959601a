//! Names, kernel references and accounting.

use sheep_objects::{MemStore, ObjectKind, ObjectStore};
use sheep_vdi::{CreateOpts, Error, Pool, PoolConfig};
use std::sync::Arc;

const OBJ: u64 = 4 << 20;

fn data_objects(store: &MemStore) -> usize {
    store
        .list()
        .unwrap()
        .into_iter()
        .filter(|o| o.kind() == ObjectKind::Data)
        .count()
}

#[test]
fn an_unlinked_vdi_lives_while_a_handle_is_open_and_only_a_handle_keeps_it() {
    let store = Arc::new(MemStore::new());
    let pool = Pool::open(store.clone(), PoolConfig::default()).unwrap();
    pool.create("a", OBJ, CreateOpts::default()).unwrap();
    let a = pool.lookup_entry("a").unwrap();
    pool.write(a.ino, 0, b"still here").unwrap();
    pool.open_handle(a.ino, true).unwrap();
    pool.unlink("a").unwrap();
    assert!(matches!(pool.lookup("a"), Err(Error::NotFound(_))));
    pool.forget(a.ino, 1).unwrap();
    let mut buf = [0u8; 10];
    pool.read(a.ino, 0, &mut buf).unwrap();
    assert_eq!(&buf, b"still here");
    pool.write(a.ino, 0, b"STILL").unwrap();
    pool.release_handle(a.ino).unwrap();
    assert!(pool.getattr(a.ino).is_err());
    pool.reclaim().unwrap();
    assert_eq!(data_objects(&store), 0);

    // A kernel reference alone (a lookup, no open handle) does not keep it: the VDI may have
    // been unlinked on another host, which cannot know of this kernel's references.
    pool.create("b", OBJ, CreateOpts::default()).unwrap();
    let b = pool.lookup_entry("b").unwrap();
    pool.write(b.ino, 0, b"gone").unwrap();
    pool.unlink("b").unwrap();
    assert!(matches!(
        pool.open_handle(b.ino, true),
        Err(Error::NotFound(_))
    ));
    pool.forget(b.ino, 1).unwrap();
    pool.reclaim().unwrap();
    assert_eq!(data_objects(&store), 0);
}

#[test]
fn rename_over_an_existing_vdi_replaces_it_and_moves_snapshots() {
    let store = Arc::new(MemStore::new());
    let pool = Pool::open(store.clone(), PoolConfig::default()).unwrap();
    let a = pool.create("a", OBJ, CreateOpts::default()).unwrap();
    let b = pool.create("b", OBJ, CreateOpts::default()).unwrap();
    pool.write(a.ino, 0, b"A").unwrap();
    pool.write(b.ino, 0, b"B").unwrap();
    pool.snapshot("a", "s").unwrap();
    assert!(matches!(
        pool.rename_with("a", "b", false),
        Err(Error::Exists(_))
    ));
    pool.rename("a", "b").unwrap();
    let names: Vec<String> = pool.list().into_iter().map(|v| v.name).collect();
    assert_eq!(names, vec!["b", "b@s"]);
    let mut buf = [0u8; 1];
    pool.read(pool.lookup("b").unwrap().ino, 0, &mut buf)
        .unwrap();
    assert_eq!(&buf, b"A");
    assert!(pool.rename("b@s", "c").is_err());
    pool.reclaim().unwrap();
    assert_eq!(pool.unreferenced_objects().unwrap(), vec![]);
}

#[test]
fn shared_bytes_follow_the_references_of_other_vdis() {
    let store = Arc::new(MemStore::new());
    let pool = Pool::open(store, PoolConfig::default()).unwrap();
    let a = pool.create("a", 2 * OBJ, CreateOpts::default()).unwrap();
    pool.write(a.ino, 0, &[1u8; 8192]).unwrap();
    pool.snapshot("a", "s").unwrap();
    assert_eq!(pool.lookup("a@s").unwrap().shared, 8192);
    // The VDI moves off the shared object: the snapshot holds it alone now.
    pool.write(a.ino, 0, b"x").unwrap();
    let s = pool.lookup("a@s").unwrap();
    assert_eq!((s.allocated, s.shared), (8192, 0));
}

#[test]
fn the_data_objects_of_a_vdi_and_of_the_pool_are_listed_for_checks() {
    let store = Arc::new(MemStore::new());
    let pool = Pool::open(store.clone(), PoolConfig::default()).unwrap();
    let a = pool.create("a", 4 * OBJ, CreateOpts::default()).unwrap();
    pool.write(a.ino, 0, b"0").unwrap();
    pool.write(a.ino, 2 * OBJ, b"2").unwrap();
    assert_eq!(pool.data_objects("a").unwrap().len(), 2);
    pool.snapshot("a", "t").unwrap();
    // The snapshot and the VDI share both objects; a write to the VDI copies one.
    assert_eq!(
        pool.data_objects("a@t").unwrap(),
        pool.data_objects("a").unwrap()
    );
    pool.write(a.ino, 0, b"x").unwrap();
    let own = pool.data_objects("a").unwrap();
    let snap = pool.data_objects("a@t").unwrap();
    assert_eq!((own.len(), snap.len()), (2, 2));
    assert_ne!(own, snap);
    let all = pool.all_data_objects();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    for o in own.iter().chain(&snap) {
        assert!(all.contains(o));
    }
    assert!(matches!(pool.data_objects("b"), Err(Error::NotFound(_))));
}
