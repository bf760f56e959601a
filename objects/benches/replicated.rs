//! Writes through a 3-member ReplicatedStore on loopback (3 copies) against a plain local store.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sheep_objects::{
    ClusterMap, FixedCopies, MemStore, Member, ObjectStore, Oid, ReplicaConfig, ReplicatedStore,
    Vid,
};
use sheep_p2p::NodeId;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

fn cluster(n: u8) -> Vec<Arc<ReplicatedStore>> {
    let mut stores = Vec::new();
    let mut members = Vec::new();
    for i in 0..n {
        let mut id = [0u8; 16];
        id[0] = i + 1;
        let s = ReplicatedStore::new(
            NodeId(id),
            Arc::new(MemStore::new()),
            Arc::new(FixedCopies(3)),
            ReplicaConfig::default(),
        );
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        s.serve(l).expect("serve");
        members.push(Member {
            id: NodeId(id),
            capacity: 1 << 40,
            data_addrs: vec![addr],
        });
        stores.push(s);
    }
    let map = ClusterMap {
        epoch: 1,
        cluster_epoch: 1,
        members,
    };
    for s in &stores {
        s.set_map(map.clone());
    }
    while !stores.iter().all(|s| s.status().complete) {
        std::thread::sleep(Duration::from_millis(5));
    }
    stores
}

fn writes(c: &mut Criterion) {
    let stores = cluster(3);
    let local = MemStore::new();
    let mut g = c.benchmark_group("write");
    for size in [4usize << 10, 1 << 20] {
        let buf = vec![0xa5u8; size];
        let span = (4u64 << 20) / size as u64;
        g.throughput(Throughput::Bytes(size as u64));
        let mut k = 0u64;
        g.bench_with_input(BenchmarkId::new("local MemStore", size), &buf, |b, buf| {
            b.iter(|| {
                k += 1;
                local
                    .write(Oid::data(Vid(1), 0), (k % span) * size as u64, buf)
                    .expect("write")
            })
        });
        g.bench_with_input(
            BenchmarkId::new("replicated x3 loopback", size),
            &buf,
            |b, buf| {
                b.iter(|| {
                    k += 1;
                    stores[0]
                        .write(Oid::data(Vid(2), 0), (k % span) * size as u64, buf)
                        .expect("write")
                })
            },
        );
    }
    g.finish();
    for s in &stores {
        s.shutdown();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = writes
}
criterion_main!(benches);
