//! The object write path of the disk store: 4 KiB pwrite into an object, 4 KiB random
//! overwrites, 1 MiB writes, reads, and sync.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sheep_objects::{DiskStore, ObjectStore, Oid, Vid, OBJECT_SIZE};
use std::hint::black_box;
use std::time::Duration;

/// Objects pre-filled for the overwrite benchmarks.
const FILLED: u32 = 8;

/// A xorshift step: cheap, deterministic offsets.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

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

    let big = vec![0x5au8; 1 << 20];
    for i in 0..FILLED {
        for o in 0..4u64 {
            store
                .write(Oid::data(Vid(3), i), o << 20, &big)
                .expect("fill");
        }
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut g = c.benchmark_group("disk store");
    g.throughput(Throughput::Bytes(4096));
    g.bench_function("4k random overwrite", |b| {
        b.iter(|| {
            let r = next(&mut x);
            let idx = u32::try_from(r % u64::from(FILLED)).unwrap_or(0);
            let off = (r >> 8) % (OBJECT_SIZE / 4096) * 4096;
            store.write(Oid::data(Vid(3), idx), off, black_box(&buf))
        })
    });
    let mut rbuf = vec![0u8; 4096];
    g.bench_function("4k random read", |b| {
        b.iter(|| {
            let r = next(&mut x);
            let idx = u32::try_from(r % u64::from(FILLED)).unwrap_or(0);
            let off = (r >> 8) % (OBJECT_SIZE / 4096) * 4096;
            store.read(Oid::data(Vid(3), idx), off, black_box(&mut rbuf))
        })
    });
    g.throughput(Throughput::Bytes(1 << 20));
    let mut n = 0u64;
    g.bench_function("1M overwrite", |b| {
        b.iter(|| {
            n += 1;
            let idx = u32::try_from(n % u64::from(FILLED)).unwrap_or(0);
            store.write(Oid::data(Vid(3), idx), (n % 4) << 20, black_box(&big))
        })
    });
    let mut rbig = vec![0u8; 1 << 20];
    g.bench_function("1M read", |b| {
        b.iter(|| {
            n += 1;
            let idx = u32::try_from(n % u64::from(FILLED)).unwrap_or(0);
            store.read(Oid::data(Vid(3), idx), (n % 4) << 20, black_box(&mut rbig))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).noise_threshold(0.05).measurement_time(Duration::from_secs(2));
    targets = disk_write
}
criterion_main!(benches);
