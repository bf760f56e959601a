//! Allocation-table lookup and the write paths (in place and copy-on-write) on a MemStore.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use sheep_objects::{MemStore, Vid};
use sheep_vdi::alloc::AllocTable;
use sheep_vdi::{CreateOpts, Pool, PoolConfig};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn table_lookup(c: &mut Criterion) {
    let mut t = AllocTable::new();
    for i in (0..1 << 20).step_by(3) {
        t.set(i, Vid(7));
    }
    let mut i = 0u32;
    c.bench_function("alloc table lookup (1M entries)", |b| {
        b.iter(|| {
            i = (i + 7919) % (1 << 20);
            black_box(t.get(i))
        })
    });
}

fn write_paths(c: &mut Criterion) {
    let pool = Pool::open(Arc::new(MemStore::new()), PoolConfig::default()).expect("pool");
    let a = pool
        .create("a", 1 << 30, CreateOpts::default())
        .expect("create");
    let buf = vec![0x5au8; 4096];
    pool.write(a.ino, 0, &buf).expect("write");
    c.bench_function("4k write in place", |b| {
        b.iter(|| pool.write(a.ino, 8192, black_box(&buf)))
    });
    let mut n = 0u64;
    c.bench_function("4k write with copy-on-write of a 4 MiB object", |b| {
        b.iter(|| {
            n += 1;
            pool.snapshot("a", &format!("s{n}")).expect("snapshot");
            pool.write(a.ino, 0, black_box(&buf))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).noise_threshold(0.05).measurement_time(Duration::from_secs(2));
    targets = table_lookup, write_paths
}
criterion_main!(benches);
