//! The memory budget: taking and giving back a buffer, alone and from 4 threads at once.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use sheep_objects::MemBudget;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn take_and_give_back(c: &mut Criterion) {
    let budget = MemBudget::new(64 << 20);
    for len in [4096usize, 1 << 20] {
        c.bench_function(&format!("buf({len}) and drop"), |b| {
            b.iter(|| drop(budget.buf(black_box(len))))
        });
    }
    // Four threads take 4 KiB buffers at once: the figure is per buffer.
    c.bench_function("buf(4096) and drop, 4 threads", |b| {
        b.iter_custom(|iters| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let budget = Arc::clone(&budget);
                    std::thread::spawn(move || {
                        let t = Instant::now();
                        for _ in 0..iters {
                            drop(budget.buf(black_box(4096)));
                        }
                        t.elapsed()
                    })
                })
                .collect();
            let total: Duration = threads
                .into_iter()
                .map(|t| t.join().unwrap_or_default())
                .sum();
            total / 4
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .noise_threshold(0.05)
        .measurement_time(Duration::from_secs(3));
    targets = take_and_give_back
}
criterion_main!(benches);
