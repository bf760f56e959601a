//! The one conformance suite every [`ObjectStore`] implementation must pass.
//!
//! `run_all(&|| Box::new(MyStore::new()))` runs each check on a fresh store. The checks panic
//! with a message naming the property that failed.

use crate::error::Error;
use crate::oid::{Oid, Vid, OBJECT_BYTES, OBJECT_SIZE};
use crate::store::{digest_of_content, ObjectStore};

/// Builds a fresh, empty store for one check.
pub type MakeStore<'a> = &'a dyn Fn() -> Box<dyn ObjectStore>;

/// Runs every check of the suite, for a store that keeps the versions it is given (a local
/// store).
pub fn run_all(make: MakeStore<'_>) {
    run_common(make);
    meta_set_version_and_verify_of_missing_objects_are_not_found(&*make());
    versions_are_recorded_and_kept_by_writes(&*make());
    digests_follow_the_content(&*make());
    copy_carries_version_and_digest(&*make());
    punch_updates_the_digest(&*make());
    objects_other_than_data_have_no_version(&*make());
}

/// Runs the checks that hold for every store, also one that sets versions itself (the
/// replicated store stamps each change with its epoch).
pub fn run_common(make: MakeStore<'_>) {
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

/// The digest `content` (from offset 0, zeros after it) must have on every store.
fn digest(content: &[u8]) -> u64 {
    digest_of_content(content)
}

fn meta_set_version_and_verify_of_missing_objects_are_not_found(s: &dyn ObjectStore) {
    assert!(matches!(s.meta(data(30)), Err(Error::NotFound(_))));
    assert!(matches!(
        s.set_version(data(30), 1),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(s.verify(data(30)), Err(Error::NotFound(_))));
    s.write(data(30), 0, b"x").unwrap();
    s.remove(data(30)).unwrap();
    assert!(matches!(s.meta(data(30)), Err(Error::NotFound(_))));
    assert!(matches!(
        s.set_version(data(30), 1),
        Err(Error::NotFound(_))
    ));
}

fn versions_are_recorded_and_kept_by_writes(s: &dyn ObjectStore) {
    s.write(data(31), 4096, b"v").unwrap();
    assert_eq!(
        s.meta(data(31)).unwrap().version,
        0,
        "a new object has version 0"
    );
    s.set_version(data(31), 7).unwrap();
    s.set_version(data(31), 7).unwrap();
    assert_eq!(s.meta(data(31)).unwrap().version, 7);
    s.write(data(31), 0, &pattern(10000, 4)).unwrap();
    s.punch(data(31), 0, 4096).unwrap();
    assert_eq!(
        s.meta(data(31)).unwrap().version,
        7,
        "writes keep the version"
    );
    s.set_version(data(31), 3).unwrap();
    s.sync(&[data(31)]).unwrap();
    assert_eq!(
        s.meta(data(31)).unwrap().version,
        3,
        "a version may go down"
    );
    s.set_version(data(31), u64::MAX).unwrap();
    assert_eq!(s.meta(data(31)).unwrap().version, u64::MAX);
    s.verify(data(31)).unwrap();
    s.remove(data(31)).unwrap();
    s.write(data(31), 0, b"again").unwrap();
    assert_eq!(
        s.meta(data(31)).unwrap().version,
        0,
        "remove drops the version"
    );
}

fn digests_follow_the_content(s: &dyn ObjectStore) {
    let (a, b, c) = (data(32), data(33), data(34));
    s.write(a, 0, &[]).unwrap();
    s.write(b, 8192, &[0u8; 4096]).unwrap();
    s.write(c, 100, b"not zero").unwrap();
    let zero = digest(&[]);
    assert_eq!(
        s.meta(a).unwrap().digest,
        zero,
        "an empty object digests as zeros"
    );
    assert_eq!(
        s.meta(b).unwrap().digest,
        zero,
        "written zeros digest as holes"
    );
    let mut expect = vec![0u8; 108];
    expect[100..].copy_from_slice(b"not zero");
    assert_eq!(s.meta(c).unwrap().digest, digest(&expect));
    assert_ne!(s.meta(c).unwrap().digest, zero);

    // Unaligned writes across blocks, and one at the very end of the object.
    let p = pattern(3 * 4096 + 77, 5);
    s.write(a, 4000, &p).unwrap();
    s.write(a, OBJECT_SIZE - 5, b"tail!").unwrap();
    let mut whole = vec![0u8; OBJECT_BYTES];
    whole[4000..4000 + p.len()].copy_from_slice(&p);
    whole[OBJECT_BYTES - 5..].copy_from_slice(b"tail!");
    assert_eq!(s.meta(a).unwrap().digest, digest(&whole));
    s.write(b, 0, &whole).unwrap();
    assert_eq!(
        s.meta(b).unwrap().digest,
        s.meta(a).unwrap().digest,
        "equal content, equal digest, however written"
    );
    s.verify(a).unwrap();
    s.verify(b).unwrap();

    // Overwriting with the old content gives the old digest back.
    s.write(c, 100, b"changed!").unwrap();
    assert_ne!(s.meta(c).unwrap().digest, digest(&expect));
    s.write(c, 100, b"not zero").unwrap();
    assert_eq!(s.meta(c).unwrap().digest, digest(&expect));
    s.write(c, 0, &[0u8; 4096]).unwrap();
    assert_eq!(s.meta(c).unwrap().digest, zero);
}

fn copy_carries_version_and_digest(s: &dyn ObjectStore) {
    let (src, dst) = (data(35), data(36));
    s.write(src, 5000, &pattern(70000, 6)).unwrap();
    s.write(src, 3 << 20, b"far").unwrap();
    s.set_version(src, 42).unwrap();
    s.write(dst, 0, b"old content").unwrap();
    s.set_version(dst, 1).unwrap();
    s.copy(src, dst).unwrap();
    let (m_src, m_dst) = (s.meta(src).unwrap(), s.meta(dst).unwrap());
    assert_eq!(m_dst, m_src, "copy carries version and digest");
    assert_eq!(m_dst.version, 42);
    s.verify(dst).unwrap();
    assert_eq!(must_read(s, dst, 5000, 70000), pattern(70000, 6));
    s.write(dst, 5000, b"diverge").unwrap();
    assert_ne!(s.meta(dst).unwrap().digest, m_src.digest);
    assert_eq!(s.meta(src).unwrap(), m_src, "the source is untouched");
}

fn punch_updates_the_digest(s: &dyn ObjectStore) {
    let o = data(37);
    let p = pattern(64 << 10, 7);
    s.write(o, 0, &p).unwrap();
    let mut expect = p.clone();
    // A punch of whole blocks, then one that cuts blocks in part at both ends.
    s.punch(o, 8192, 8192).unwrap();
    expect[8192..16384].fill(0);
    assert_eq!(s.meta(o).unwrap().digest, digest(&expect));
    s.punch(o, 20000, 10000).unwrap();
    expect[20000..30000].fill(0);
    assert_eq!(s.meta(o).unwrap().digest, digest(&expect));
    assert_eq!(must_read(s, o, 0, expect.len()), expect);
    s.verify(o).unwrap();
    s.punch(o, 0, OBJECT_SIZE).unwrap();
    assert_eq!(s.meta(o).unwrap().digest, digest(&[]));
    s.verify(o).unwrap();
}

fn objects_other_than_data_have_no_version(s: &dyn ObjectStore) {
    let m = Oid::meta(40);
    s.put_atomic(m, b"a record").unwrap();
    assert_eq!(
        s.meta(m).unwrap(),
        crate::store::ObjectMeta {
            version: 0,
            digest: digest(b"a record")
        }
    );
    assert!(matches!(s.set_version(m, 1), Err(Error::Io { .. })));
    s.verify(m).unwrap();
    let a = Oid::alloc(Vid(40));
    s.write(a, 0, &[1; 4096]).unwrap();
    assert_eq!(s.meta(a).unwrap().digest, digest(&[1; 4096]));
    s.verify(a).unwrap();
}
