//! The object write path of the disk store: 4 KiB pwrite into an object, and sync.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use sheep_objects::{DiskStore, ObjectStore, Oid, Vid};
use std::hint::black_box;
use std::time::Duration;

fn disk_write(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DiskStore::open(dir.path()).expect("store");
    let buf = vec![0xa5u8; 4096];
    let mut off = 0u64;
    c.bench_function("disk store 4k write", |b| {
        b.iter(|| {
            off = (off + 4096) % (4 << 20);
            store.write(Oid::data(Vid(1), 0), off, black_box(&buf))
        })
    });
    c.bench_function("disk store 4k write + sync", |b| {
        b.iter(|| {
            store
                .write(Oid::data(Vid(2), 0), 0, black_box(&buf))
                .expect("write");
            store.sync(&[Oid::data(Vid(2), 0)])
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).noise_threshold(0.05).measurement_time(Duration::from_secs(2));
    targets = disk_write
}
criterion_main!(benches);
