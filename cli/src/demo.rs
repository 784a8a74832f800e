//! `s3-ordered demo`: a self-contained run against an embedded S3-compatible server (s3s-fs
//! over a temporary directory, SigV4 checked by the server), so the tool can be tried with no
//! account and no network.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use futures::StreamExt;
use s3_ordered::{Client, ObjectRef};

const BUCKET: &str = "demo";
const ACCESS_KEY: &str = "DEMOACCESSKEY";
const SECRET_KEY: &str = "demo-secret-key";

/// Options of `s3-ordered demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// How many objects to write and fetch.
    #[arg(long, default_value_t = 3000)]
    objects: usize,
    /// Largest object size (plain bytes or with a unit); sizes are mixed from 0 up to this.
    #[arg(long, default_value = "1MiB", value_parser = parse_object_size)]
    max_object_size: usize,
    /// Connections open at once.
    #[arg(long, default_value_t = 16)]
    max_connections: usize,
    /// Memory budget for bodies held at once: plain bytes or with a unit (16MiB, 1GiB).
    #[arg(long, default_value = "32MiB", value_parser = s3_ordered::parse_size)]
    max_bytes: u64,
}

fn parse_object_size(text: &str) -> Result<usize, String> {
    let n = s3_ordered::parse_size(text)?;
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= 1 << 30)
        .ok_or_else(|| format!("{text:?} is more than the demo's 1GiB limit"))
}

/// Size of object `i`: mostly small, a few large, some empty — like a real ingestion batch.
fn size_of(i: usize, max: usize) -> usize {
    match i % 40 {
        0 => 0,
        1 => max,
        2..=4 => max / 4 + i % 1000,
        _ => (i * 7919) % (max / 16).max(1),
    }
}

/// Deterministic bytes for object `i`, so every body can be checked.
fn content(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (j.wrapping_mul(31) ^ i) as u8).collect()
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.objects > 0, "--objects must be at least 1");
    let dir = tempfile::tempdir().context("creating the server's storage directory")?;
    let addr = start_server(dir.path()).await?;
    println!(
        "embedded S3 server at http://{addr} (s3s-fs in {})",
        dir.path().display()
    );
    let client = Client::builder()
        .endpoint_url(format!("http://{addr}"))
        .static_credentials(ACCESS_KEY, SECRET_KEY, None)
        .max_connections(args.max_connections)
        .max_bytes(args.max_bytes)
        .build()?;

    let started = Instant::now();
    let bucket_dir = dir.path().join(BUCKET);
    std::fs::create_dir_all(&bucket_dir).context("creating the bucket")?;
    let mut objects = Vec::with_capacity(args.objects);
    let mut total = 0u64;
    for i in 0..args.objects {
        let key = format!("batch-{:02}/part-{i:06}.bin", i % 13);
        let data = content(i, size_of(i, args.max_object_size));
        let path = bucket_dir.join(&key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).context("creating a key's directory")?;
        }
        std::fs::write(&path, &data).with_context(|| format!("writing {key}"))?;
        total += data.len() as u64;
        objects.push(ObjectRef::new(key, data.len() as u64));
    }
    println!(
        "wrote {} objects, {:.1} MiB, in {:.2} s",
        objects.len(),
        total as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );

    println!(
        "fetching with max_connections {}, max_bytes {:.1} MiB",
        args.max_connections,
        args.max_bytes as f64 / (1 << 20) as f64
    );

    let started = Instant::now();
    let mut stream = client.get_all(BUCKET, objects.clone());
    let (mut ok, mut failed, mut peak_bytes, mut peak_conns) = (0usize, 0usize, 0u64, 0usize);
    let mut seq = 0usize;
    while let Some(item) = stream.next().await {
        let stats = client.stats();
        peak_bytes = peak_bytes.max(stats.bytes_in_use);
        peak_conns = peak_conns.max(stats.open_connections);
        let expected = content(seq, objects[seq].size.unwrap_or_default() as usize);
        match item {
            Ok(mut obj) => {
                // Chunk by chunk, so objects larger than the budget (streaming bodies) verify too.
                let mut matches = obj.key == objects[seq].key;
                let mut at = 0usize;
                while let Some(chunk) = obj.body.next_chunk().await {
                    match chunk {
                        Ok(chunk) => {
                            let end = at + chunk.len();
                            matches &= expected.get(at..end) == Some(&chunk[..]);
                            at = end;
                        }
                        Err(e) => {
                            matches = false;
                            eprintln!("{e}");
                            break;
                        }
                    }
                }
                if matches && at == expected.len() {
                    ok += 1;
                } else {
                    failed += 1;
                    eprintln!("object {:?} at #{seq}: wrong key or bytes", obj.key);
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{e}");
            }
        }
        seq += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = client.stats();
    println!(
        "fetched {seq} objects in input order in {secs:.2} s: {:.1} MiB/s, {:.0} objects/s",
        stats.bytes as f64 / (1 << 20) as f64 / secs,
        seq as f64 / secs
    );
    println!(
        "verified {ok} ok, {failed} failed; requests {}, retries {}, throttled {}, errors {}, \
         connections opened {}",
        stats.requests, stats.retries, stats.throttled, stats.errors, stats.connections_opened
    );
    println!(
        "peak body memory {:.1} MiB of {:.1} MiB budget; peak open connections {peak_conns} of {}",
        peak_bytes as f64 / (1 << 20) as f64,
        args.max_bytes as f64 / (1 << 20) as f64,
        args.max_connections
    );
    Ok(if failed == 0 && seq == objects.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Starts s3s-fs over `root` on 127.0.0.1; it serves until the process ends.
///
/// s3s-fs computes the MD5 of the whole file on every GET of a file written behind its back,
/// ranged or not, so objects of hundreds of MiB (fetched as many ranged parts) are bound by the
/// server here, not by the client.
async fn start_server(root: &std::path::Path) -> anyhow::Result<SocketAddr> {
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    crate::serve::start(root, any_port, ACCESS_KEY, SECRET_KEY, None).await
}
