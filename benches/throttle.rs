//! Throttling, side by side in one run: a server that answers 503 SlowDown to any request that
//! would make more than K in flight (what an S3 prefix pushed past its request rate does), and
//!
//! * `k_connections`: a client with exactly K connections — the oracle, never throttled;
//! * `adaptive`: 32 connections with the default settings (adaptive concurrency on);
//! * `fixed`: 32 connections with adaptive concurrency off (throttled requests back off one by
//!   one, as most clients do).
//!
//! Each serves the same objects (1 KiB, 5 ms of service time each) and must deliver every one,
//! in order. `cargo bench --bench throttle` prints a Markdown table: time against the oracle,
//! requests sent, and the share of them the server throttled. `--seconds S` sizes each scenario
//! to take about S seconds for the oracle (default 2). `--serve K [--service-ms MS]` runs only
//! the server (for 10 minutes), for other clients such as the CLI: it prints its address, then
//! its request and throttle counts as they change.

#[path = "../tests/support/s3_server.rs"]
#[allow(dead_code)] // only its object contents are used here
mod s3_server;

/// Where `S3Server::builder` starts.
#[allow(dead_code)]
fn client_builder() -> s3_ordered::ClientBuilder {
    s3_ordered::Client::builder()
}
#[path = "../tests/support/shed_server.rs"]
#[allow(dead_code)] // changing K while it runs is the tests'
mod shed_server;

use std::time::{Duration, Instant};

use futures::StreamExt;
use s3_ordered::{Client, ObjectRef, ThrottleConfig};
use s3_server::content;
use shed_server::ShedServer;

const SERVICE: Duration = Duration::from_millis(5);
const LEN: usize = 1024;
const CONNECTIONS: usize = 32;

fn key(i: u64) -> String {
    format!("obj/{i:07}")
}

#[derive(Clone, Copy)]
struct Run {
    secs: f64,
    requests: usize,
    throttled: usize,
    limit_at_end: usize,
}

async fn run(k: usize, n: u64, connections: usize, adaptive: bool) -> Run {
    let server = ShedServer::start(k, SERVICE, LEN).await;
    let client = Client::builder()
        .endpoint_url(format!("http://{}", server.addr))
        .static_credentials("AKIDBENCH", "bench-secret", None)
        .max_connections(connections)
        .throttle(ThrottleConfig {
            adaptive,
            ..ThrottleConfig::default()
        })
        .build()
        .expect("client");
    let started = Instant::now();
    let mut stream = client.get_all("bucket", (0..n).map(|i| ObjectRef::new(key(i), LEN as u64)));
    let mut i = 0;
    while let Some(item) = stream.next().await {
        let obj = item.unwrap_or_else(|e| panic!("object {i}: {e}"));
        assert_eq!(obj.key, key(i));
        assert!(obj.body.to_vec() == content(&obj.key, LEN));
        i += 1;
    }
    assert_eq!(i, n);
    let secs = started.elapsed().as_secs_f64();
    let (throttled, requests) = server.throttled_and_requests();
    Run {
        secs,
        requests,
        throttled,
        limit_at_end: client.stats().concurrency_limit,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--seconds takes a number"))
        .unwrap_or(2.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(k) = args
        .iter()
        .position(|a| a == "--serve")
        .and_then(|i| args.get(i + 1))
    {
        let k: usize = k.parse().expect("--serve takes K");
        let service = args
            .iter()
            .position(|a| a == "--service-ms")
            .and_then(|i| args.get(i + 1))
            .map_or(SERVICE, |v| {
                Duration::from_millis(v.parse().expect("--service-ms takes a number"))
            });
        rt.block_on(async {
            let server = ShedServer::start(k, service, LEN).await;
            println!(
                "http://{} (K = {k}, {service:?} per object of {LEN} bytes)",
                server.addr
            );
            // Report the counts as they change, for at most 10 minutes.
            let mut last = (0, 0);
            for _ in 0..600 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = server.throttled_and_requests();
                if now != last {
                    println!("requests {}, throttled {}", now.1, now.0);
                    last = now;
                }
            }
        });
        return;
    }
    println!(
        "| K | objects | client | time | vs K connections | requests | throttled | limit at end |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for k in [2usize, 8, 16] {
        let n = (seconds * k as f64 / SERVICE.as_secs_f64()) as u64;
        let oracle = rt.block_on(run(k, n, k, true));
        for (name, connections, adaptive) in [
            ("k_connections", k, true),
            ("adaptive", CONNECTIONS, true),
            ("fixed", CONNECTIONS, false),
        ] {
            let r = if name == "k_connections" {
                oracle
            } else {
                rt.block_on(run(k, n, connections, adaptive))
            };
            println!(
                "| {k} | {n} | {name} ({connections} conns) | {:.2} s | {:.2}x | {} | {} ({:.1} %) | {} |",
                r.secs,
                r.secs / oracle.secs,
                r.requests,
                r.throttled,
                100.0 * r.throttled as f64 / r.requests as f64,
                r.limit_at_end
            );
        }
    }
}
