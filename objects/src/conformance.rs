//! The one conformance suite every [`ObjectStore`] implementation must pass.
//!
//! `run_all(&|| Box::new(MyStore::new()))` runs each check on a fresh store. The checks panic
//! with a message naming the property that failed.

use crate::error::Error;
use crate::oid::{Oid, Vid, OBJECT_SIZE};
use crate::store::ObjectStore;

/// Builds a fresh, empty store for one check.
pub type MakeStore<'a> = &'a dyn Fn() -> Box<dyn ObjectStore>;

/// Runs every check of the suite.
pub fn run_all(make: MakeStore<'_>) {
    read_of_missing_object_is_not_found(&*make());
    written_bytes_read_back_and_the_rest_is_zero(&*make());
    writes_across_pages_and_at_object_end_work(&*make());
    copy_is_independent_of_its_source(&*make());
    punch_reads_zeros_and_frees_space(&*make());
    remove_is_idempotent_and_list_tracks_objects(&*make());
    extents_report_written_ranges(&*make());
    put_atomic_replaces_the_whole_object(&*make());
    sync_of_missing_objects_is_fine(&*make());
}

fn data(i: u32) -> Oid {
    Oid::data(Vid(7), i)
}

#[allow(clippy::cast_possible_truncation)] // i % 251 fits in a u8.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

fn must_read(s: &dyn ObjectStore, oid: Oid, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xeeu8; len];
    s.read(oid, offset, &mut buf)
        .unwrap_or_else(|e| panic!("read {oid} at {offset}: {e}"));
    buf
}

fn read_of_missing_object_is_not_found(s: &dyn ObjectStore) {
    let mut buf = [0u8; 16];
    assert!(matches!(
        s.read(data(0), 0, &mut buf),
        Err(Error::NotFound(_))
    ));
    assert!(!s.exists(data(0)).unwrap());
    assert_eq!(s.allocated(data(0)).unwrap(), 0);
}

fn written_bytes_read_back_and_the_rest_is_zero(s: &dyn ObjectStore) {
    let p = pattern(5000, 1);
    s.write(data(1), 1000, &p).unwrap();
    assert!(s.exists(data(1)).unwrap());
    assert_eq!(must_read(s, data(1), 1000, 5000), p);
    assert_eq!(must_read(s, data(1), 0, 1000), vec![0; 1000]);
    assert_eq!(must_read(s, data(1), 6000, 3000), vec![0; 3000]);
    assert_eq!(must_read(s, data(1), OBJECT_SIZE - 10, 10), vec![0; 10]);
}

fn writes_across_pages_and_at_object_end_work(s: &dyn ObjectStore) {
    let p = pattern(8192 + 3, 2);
    s.write(data(2), 4095, &p).unwrap();
    s.write(data(2), OBJECT_SIZE - 3, b"end").unwrap();
    assert_eq!(must_read(s, data(2), 4095, p.len()), p);
    assert_eq!(must_read(s, data(2), OBJECT_SIZE - 3, 3), b"end");
    s.write(data(2), 4096, b"over").unwrap();
    let mut expect = p.clone();
    expect[1..5].copy_from_slice(b"over");
    assert_eq!(must_read(s, data(2), 4095, p.len()), expect);
}

fn copy_is_independent_of_its_source(s: &dyn ObjectStore) {
    s.write(data(3), 0, b"source").unwrap();
    s.write(data(3), 3 << 20, b"tail").unwrap();
    s.copy(data(3), data(4)).unwrap();
    assert_eq!(must_read(s, data(4), 0, 6), b"source");
    assert_eq!(must_read(s, data(4), 3 << 20, 4), b"tail");
    s.write(data(4), 0, b"CHANGE").unwrap();
    assert_eq!(must_read(s, data(3), 0, 6), b"source");
    assert!(s.allocated(data(4)).unwrap() < 1 << 20, "copy keeps holes");
    assert!(matches!(s.copy(data(99), data(5)), Err(Error::NotFound(_))));
}

fn punch_reads_zeros_and_frees_space(s: &dyn ObjectStore) {
    s.write(data(6), 0, &pattern(1 << 20, 3)).unwrap();
    let before = s.allocated(data(6)).unwrap();
    assert!(before >= 1 << 20);
    s.punch(data(6), 4096, 512 << 10).unwrap();
    assert_eq!(must_read(s, data(6), 4096, 512 << 10), vec![0; 512 << 10]);
    assert!(s.allocated(data(6)).unwrap() <= before - (500 << 10));
    s.punch(data(6), 10, 10).unwrap();
    assert_eq!(must_read(s, data(6), 10, 10), vec![0; 10]);
    assert_eq!(must_read(s, data(6), 0, 10), pattern(10, 3));
}

fn remove_is_idempotent_and_list_tracks_objects(s: &dyn ObjectStore) {
    let oids = [
        data(10),
        Oid::inode(Vid(9)),
        Oid::alloc(Vid(9)),
        Oid::meta(1),
    ];
    for o in oids {
        s.write(o, 0, b"x").unwrap();
    }
    let mut listed = s.list().unwrap();
    listed.sort();
    let mut want = oids.to_vec();
    want.sort();
    assert_eq!(listed, want);
    s.remove(data(10)).unwrap();
    s.remove(data(10)).unwrap();
    assert!(!s.exists(data(10)).unwrap());
    assert_eq!(s.list().unwrap().len(), 3);
}

fn extents_report_written_ranges(s: &dyn ObjectStore) {
    assert!(s.extents(data(11)).unwrap().is_empty());
    s.write(data(11), 0, &[1; 4096]).unwrap();
    s.write(data(11), 2 << 20, &[1; 8192]).unwrap();
    let ext = s.extents(data(11)).unwrap();
    assert!(!ext.is_empty());
    assert_eq!(ext[0].start, 0);
    assert!(ext.iter().any(|r| r.contains(&(2 << 20))));
    assert!(!ext.iter().any(|r| r.contains(&(1 << 20))), "{ext:?}");
    assert!(ext.windows(2).all(|w| w[0].end <= w[1].start));
}

fn put_atomic_replaces_the_whole_object(s: &dyn ObjectStore) {
    let m = Oid::meta(2);
    s.put_atomic(m, b"first version, long").unwrap();
    s.put_atomic(m, b"second").unwrap();
    assert_eq!(s.get(m).unwrap(), b"second");
    assert!(matches!(s.get(Oid::meta(3)), Err(Error::NotFound(_))));
}

fn sync_of_missing_objects_is_fine(s: &dyn ObjectStore) {
    s.write(data(12), 0, b"y").unwrap();
    s.sync(&[data(12), data(13)]).unwrap();
    let st = s.stats().unwrap();
    assert!(st.capacity > 0 && st.free <= st.capacity);
}
