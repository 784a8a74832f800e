//! CRC64NVME (S3's default checksum) with `crc-fast`, as the client computes it: over a 256 KiB
//! body in the cache, in reads of 4, 16 and 64 KiB. What verifying a byte costs at least, set
//! beside the client's own CPU per byte (`PERFORMANCE.md`, "Checksums, verified by default").

use crc_fast::{CrcAlgorithm, Digest};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn crc64nvme(c: &mut Criterion) {
    let body: Vec<u8> = (0..256 << 10).map(|i: u32| (i * 7) as u8).collect();
    let mut g = c.benchmark_group("crc64nvme_256KiB");
    g.throughput(Throughput::Bytes(body.len() as u64));
    for read in [4 << 10, 16 << 10, 64 << 10] {
        g.bench_function(format!("reads_of_{}KiB", read >> 10), |b| {
            b.iter(|| {
                let mut digest = Digest::new(CrcAlgorithm::Crc64Nvme);
                for piece in black_box(&body).chunks(read) {
                    digest.update(piece);
                }
                black_box(digest.finalize())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, crc64nvme);
criterion_main!(benches);
