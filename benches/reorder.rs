//! `ReorderRing` insert and pop: in order, and in reverse within each window (worst case).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use s3_ordered::ReorderRing;

const N: u64 = 4096;

fn ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("reorder_ring");
    g.throughput(Throughput::Elements(N));
    for window in [64usize, 4096] {
        g.bench_function(format!("in_order/window_{window}"), |b| {
            b.iter_batched_ref(
                || ReorderRing::<u64>::with_capacity(window),
                |r| {
                    for seq in 0..N {
                        r.insert(seq, seq).expect("in window");
                        black_box(r.pop());
                    }
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("reversed/window_{window}"), |b| {
            b.iter_batched_ref(
                || ReorderRing::<u64>::with_capacity(window),
                |r| {
                    let w = window as u64;
                    for base in (0..N).step_by(window) {
                        for seq in (base..base + w).rev() {
                            r.insert(seq, seq).expect("in window");
                        }
                        while let Some(v) = r.pop() {
                            black_box(v);
                        }
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
