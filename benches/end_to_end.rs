//! End to end: 2,000 objects × 256 KiB from an in-process server, `s3_ordered` against
//! `futures::stream::iter(..).buffered(n)` over a plain hyper-util client, same server, same n.

#[path = "support/clients.rs"]
#[allow(dead_code)] // the ranged ceiling client is the compare bench's
mod clients;
#[path = "support/server.rs"]
mod server;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const COUNT: usize = 2000;
const SIZE: usize = 256 << 10;
const N: usize = 16;

fn end_to_end(c: &mut Criterion) {
    let addr = server::start(SIZE);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let ours = clients::s3_ordered_client(addr, N, 64 << 20, true, None);
    let baseline = clients::baseline_client(N);

    let mut g = c.benchmark_group("end_to_end_2000x256KiB");
    g.throughput(Throughput::Bytes((COUNT * SIZE) as u64));
    g.sample_size(10);
    g.bench_function("s3_ordered", |b| {
        b.to_async(&rt).iter(|| async {
            let got = clients::run_s3_ordered(&ours, clients::objects(COUNT, SIZE)).await;
            assert_eq!(got, (COUNT * SIZE) as u64);
        })
    });
    g.bench_function("hyper_util_buffered", |b| {
        b.to_async(&rt).iter(|| async {
            let got =
                clients::run_baseline(&baseline, addr, clients::objects(COUNT, SIZE), N).await;
            assert_eq!(got, (COUNT * SIZE) as u64);
        })
    });
    g.finish();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
