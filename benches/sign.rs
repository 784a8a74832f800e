//! SigV4: one GET signed as the client signs it (key cached), without and with a `Range`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use s3_ordered::__internals::SignBench;

fn sign(c: &mut Criterion) {
    let mut signer = SignBench::default();
    let mut g = c.benchmark_group("sigv4");
    g.throughput(Throughput::Elements(1));
    g.bench_function("get", |b| {
        b.iter(|| {
            black_box(signer.sign_get(
                black_box("127.0.0.1:9000"),
                black_box("/bench/objects/000123456.json"),
                None,
            ))
        })
    });
    g.bench_function("get_range", |b| {
        b.iter(|| {
            black_box(signer.sign_get(
                black_box("127.0.0.1:9000"),
                black_box("/bench/objects/000123456.json"),
                Some("bytes=8388608-16777215"),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, sign);
criterion_main!(benches);
