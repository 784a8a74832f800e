//! Slab pool: acquire, fill and release, for an empty object and for a 256 KiB one.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use s3_ordered::__internals::PoolBench;

fn pool(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let pool = PoolBench::new(64 << 10, 4096);
    let mut g = c.benchmark_group("memory_pool");
    g.throughput(Throughput::Elements(1));
    g.bench_function("acquire_release_empty", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(pool.cycle(&[]).await) })
    });
    let data = vec![7u8; 256 << 10];
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("acquire_fill_release_256KiB", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(pool.cycle(&data).await) })
    });
    g.finish();
}

criterion_group!(benches, pool);
criterion_main!(benches);
