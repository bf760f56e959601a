//! Placement lookups: `holders()` on rings of 3, 16 and 64 members.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use sheep_objects::placement::Placement;
use sheep_objects::{Oid, Vid};
use sheep_p2p::NodeId;
use std::hint::black_box;
use std::time::Duration;

fn ring(n: u8) -> Placement {
    let members: Vec<(NodeId, u64)> = (0..n)
        .map(|i| {
            let mut id = [0u8; 16];
            id[0] = i;
            id[9] = i.wrapping_mul(13);
            (NodeId(id), 1 << 40)
        })
        .collect();
    Placement::new(&members)
}

fn holders(c: &mut Criterion) {
    for n in [3u8, 16, 64] {
        let p = ring(n);
        let mut i = 0u32;
        c.bench_function(&format!("holders, {n} members, 3 copies"), |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                p.holders(black_box(Oid::data(Vid(7), i)), 3)
            })
        });
    }
    c.bench_function("Placement::new, 64 members", |b| {
        b.iter(|| ring(black_box(64)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(2));
    targets = holders
}
criterion_main!(benches);
