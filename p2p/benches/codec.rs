//! Encode/decode cost of a typical record through the codec envelope.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use serde::{Deserialize, Serialize};
use sheep_p2p::codec::{decode, encode, Kind};
use std::hint::black_box;
use std::time::Duration;

const KIND: Kind = Kind {
    magic: 0x4245_4e43,
    major: 1,
    minor: 0,
};

#[derive(Serialize, Deserialize)]
struct Record {
    name: String,
    size: u64,
    entries: Vec<u32>,
}

fn codec(c: &mut Criterion) {
    let rec = Record {
        name: "vm0".into(),
        size: 10 << 30,
        entries: (0..1024).collect(),
    };
    let bytes = encode(KIND, &rec, 1 << 20).expect("encode");
    c.bench_function("encode 4 KiB record", |b| {
        b.iter(|| encode(KIND, black_box(&rec), 1 << 20))
    });
    c.bench_function("decode 4 KiB record", |b| {
        b.iter(|| decode::<Record>(KIND, black_box(&bytes), 1 << 20))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).noise_threshold(0.05).measurement_time(Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
