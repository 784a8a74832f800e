//! One seeded run of the fault suite: a client with small budgets fetches objects from the
//! [`FaultServer`](crate::fault_server::FaultServer) and every invariant is checked.
//!
//! * every object comes back exactly once, in input order, with the right bytes — or fails with
//!   a typed error after its attempts (all of them for a retryable kind);
//! * the run ends within its bound;
//! * slabs in use never exceed the budget and sockets never exceed `max_connections` (sampled
//!   on the client, counted on the server);
//! * afterwards every slab and connection unit is back, also when the stream was dropped at a
//!   random point, and dropping the client closes every one of its sockets.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use s3_ordered::{
    ChecksumMode, Client, ErrorKind, HttpTransport, Object, ObjectRef, RetryConfig, ThrottleConfig,
};

use crate::fault_server::{mix, FaultServer, FaultTiming, Mix};
use crate::quiescent::assert_quiescent_for;
use crate::sockets::{client_socket_rows, open_client_sockets};

/// Settings of the suite (kept small so hundreds of runs fit in seconds).
pub const MAX_CONNECTIONS: usize = 3;
pub const SLAB: usize = 4096;
pub const SLABS: u64 = 24;
pub const MAX_ATTEMPTS: u32 = 6;
pub const RUN_BOUND: Duration = Duration::from_secs(30);

/// What one run saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunReport {
    pub ok: usize,
    pub failed: usize,
    pub cancelled: bool,
    pub requests: usize,
    /// Throttled replies the client met.
    pub throttled: usize,
}

/// The reports of many runs, summed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub runs: usize,
    pub ok: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub requests: usize,
    pub throttled: usize,
}

/// The seeds to run: `S3O_FAULT_SEED` alone when it is set, else `default`.
pub fn seeds(default: impl IntoIterator<Item = u64>) -> Vec<u64> {
    match std::env::var("S3O_FAULT_SEED") {
        Ok(s) => vec![s.parse().expect("S3O_FAULT_SEED is a number")],
        Err(_) => default.into_iter().collect(),
    }
}

/// Runs `run` for each seed, `parallel` at a time, each with its own server and client; `check`
/// sees every report. A run's panic fails the caller, with the run's own message.
pub async fn run_all<F, Fut>(
    seeds: &[u64],
    parallel: usize,
    run: F,
    check: impl Fn(&RunReport),
) -> Totals
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = RunReport> + Send + 'static,
{
    let mut t = Totals::default();
    for batch in seeds.chunks(parallel.max(1)) {
        let handles: Vec<_> = batch.iter().map(|&s| tokio::spawn(run(s))).collect();
        for h in handles {
            let r = match h.await {
                Ok(r) => r,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            check(&r);
            t.runs += 1;
            t.ok += r.ok;
            t.failed += r.failed;
            t.cancelled += usize::from(r.cancelled);
            t.requests += r.requests;
            t.throttled += r.throttled;
        }
    }
    t
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Totals) {
        self.runs += o.runs;
        self.ok += o.ok;
        self.failed += o.failed;
        self.cancelled += o.cancelled;
        self.requests += o.requests;
        self.throttled += o.throttled;
    }
}

/// Prints how to replay a seed if the run panics.
pub struct SeedGuard(pub u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "fault suite: seed {} failed; replay with S3O_FAULT_SEED={} cargo test --test faults",
                self.0, self.0
            );
        }
    }
}

/// Runs seed `seed` and checks every invariant (panics on a violation).
pub async fn run_seed(seed: u64) -> RunReport {
    run_hostile(seed, false, HttpTransport::Native).await
}

/// [`run_seed`] with hyper's HTTP/1.1 carrying the exchanges.
pub async fn run_seed_hyper(seed: u64) -> RunReport {
    run_hostile(seed, false, HttpTransport::Hyper).await
}

/// [`run_seed_tls`] with hyper's HTTP/1.1 (over tokio-rustls) carrying the exchanges.
pub async fn run_seed_tls_hyper(seed: u64) -> RunReport {
    run_hostile(seed, true, HttpTransport::Hyper).await
}

/// [`run_seed`] over TLS: the server speaks https with a certificate of a private CA the client
/// is given, so resets, truncations and stalls land inside TLS records.
pub async fn run_seed_tls(seed: u64) -> RunReport {
    run_hostile(seed, true, HttpTransport::Native).await
}

async fn run_hostile(seed: u64, tls: bool, transport: HttpTransport) -> RunReport {
    let _guard = SeedGuard(seed);
    let r = |salt: u64| mix(seed ^ mix(salt));
    let count = 10 + (r(1) % 30) as usize;
    let objects: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| {
            let key = format!("obj-{seed}-{i}");
            let len = (r(100 + i as u64) % (6 * SLAB as u64)) as usize;
            let data = (0..len)
                .map(|j| (mix(seed ^ (i as u64) << 32 ^ j as u64) & 0xff) as u8)
                .collect();
            (key, data)
        })
        .collect();
    let timing = FaultTiming {
        stall: Duration::from_millis(400),
        slow_first_byte: Duration::from_millis(30),
    };
    let ca = tls.then(crate::certs::Ca::new);
    let server_tls = ca
        .as_ref()
        .map(|ca| ca.server_config(crate::certs::Leaf::Good));
    let server =
        FaultServer::start_with(seed, Mix::Hostile, timing, objects.clone(), server_tls).await;
    let mut builder = Client::builder().transport(transport);
    if let Some(ca) = &ca {
        builder = builder.ca_bundle_pem(ca.pem.clone());
    }
    let scheme = if tls { "https" } else { "http" };
    let client = builder
        .endpoint_url(format!("{scheme}://{}", server.addr))
        .static_credentials("AKIDFAULT", "fault-secret", None)
        .max_connections(MAX_CONNECTIONS)
        .max_connections_per_request(2)
        .slab_size(SLAB)
        .max_bytes(SLABS * SLAB as u64)
        // Objects of up to six slabs are fetched as up to three parts; some runs stream those
        // above three slabs.
        .part_size(2 * SLAB as u64)
        .stream_threshold(if r(5) % 3 == 0 {
            3 * SLAB as u64
        } else {
            SLABS * SLAB as u64
        })
        .stall_timeout(Duration::from_millis(150))
        .checksum_mode(if r(2) % 2 == 0 {
            ChecksumMode::WhenAvailable
        } else {
            ChecksumMode::Off
        })
        .retry(RetryConfig {
            max_attempts: MAX_ATTEMPTS,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(30),
            budget_capacity: 1_000_000,
            ..RetryConfig::default()
        })
        .throttle(ThrottleConfig {
            recovery: Duration::from_millis(100),
            base_delay: Duration::from_millis(3),
            max_delay: Duration::from_millis(30),
            ..ThrottleConfig::default()
        })
        .build()
        .expect("client");

    // Sample the budgets while the run goes on: the client's accounting, and the kernel's
    // own count of the client's sockets to this server.
    let port = server.addr.port();
    let sampler = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut max_os = 0;
            for tick in 0u64.. {
                let s = client.stats();
                assert!(s.slabs_in_use as u64 <= SLABS, "seed {seed}: {s:?}");
                assert!(s.open_connections <= MAX_CONNECTIONS, "seed {seed}: {s:?}");
                if tick % 4 == 0 {
                    let os = open_client_sockets(port, MAX_CONNECTIONS);
                    max_os = max_os.max(os);
                    assert!(
                        os <= MAX_CONNECTIONS,
                        "seed {seed}: kernel shows {os} client sockets: {:?}; client {:?}",
                        client_socket_rows(port),
                        client.stats()
                    );
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            max_os
        })
    };

    // Two requests share the client, each allowed 2 of its 3 connections, so only the pool's
    // global cap keeps the sockets at 3. Some runs cancel the first part way; the second must
    // finish untouched.
    let cancel_after = (r(3) % 4 == 0).then(|| (r(4) % count as u64) as usize / 2);
    let (first, second): (Vec<_>, Vec<_>) =
        objects.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let first: Vec<(String, Vec<u8>)> = first.into_iter().map(|(_, o)| o.clone()).collect();
    let second: Vec<(String, Vec<u8>)> = second.into_iter().map(|(_, o)| o.clone()).collect();
    let mut report = RunReport::default();
    let run = async {
        let (a, b) = futures::join!(
            consume(seed, &client, &first, cancel_after, 1),
            consume(seed, &client, &second, None, 2)
        );
        report.ok = a.0 + b.0;
        report.failed = a.1 + b.1;
        report.cancelled = a.2;
    };
    tokio::time::timeout(RUN_BOUND, run)
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: run exceeded {RUN_BOUND:?}"));

    // Everything comes back, cancelled or not.
    assert_quiescent_for(&client, &format!("seed {seed}")).await;
    sampler.abort();
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), sampler).await {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    report.requests = server.counts.requests.load(Ordering::SeqCst);
    report.throttled = client.stats().throttled as usize;

    // Dropping the client closes every socket it had. Wait for that while the server still
    // holds its port, so no later run that gets the same port number sees these sockets.
    drop(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while open_client_sockets(port, 0) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "seed {seed}: client sockets still open after the client was dropped"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(server);
    report
}

/// One run of the throttle-heavy mix ([`Mix::ThrottleHeavy`]) against a client with default
/// settings but for the endpoint and credentials: every object must arrive, in order and right.
pub async fn run_defaults_seed(seed: u64) -> RunReport {
    let _guard = SeedGuard(seed);
    let r = |salt: u64| mix(seed ^ mix(salt));
    let count = 30 + (r(1) % 20) as usize;
    let objects: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| {
            let key = format!("obj-{seed}-{i}");
            let len = (r(100 + i as u64) % (24 << 10)) as usize;
            let data = (0..len)
                .map(|j| (mix(seed ^ j as u64) & 0xff) as u8)
                .collect();
            (key, data)
        })
        .collect();
    let timing = FaultTiming {
        stall: Duration::from_secs(2),
        slow_first_byte: Duration::ZERO,
    };
    let server = FaultServer::start(seed, Mix::ThrottleHeavy, timing, objects.clone()).await;
    let client = Client::builder()
        .endpoint_url(format!("http://{}", server.addr))
        .static_credentials("AKIDFAULT", "fault-secret", None)
        .build()
        .expect("client");
    let (first, second): (Vec<_>, Vec<_>) = objects
        .iter()
        .cloned()
        .partition(|(k, _)| k.bytes().last().is_some_and(|b| b % 2 == 0));
    let run = async {
        let (a, b) = futures::join!(
            consume(seed, &client, &first, None, 1),
            consume(seed, &client, &second, None, 2)
        );
        (a.0 + b.0, a.1 + b.1)
    };
    let (ok, failed) = tokio::time::timeout(RUN_BOUND, run)
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: run exceeded {RUN_BOUND:?}"));
    assert_quiescent_for(&client, &format!("seed {seed}")).await;
    let stats = client.stats();
    RunReport {
        ok,
        failed,
        cancelled: false,
        requests: server.counts.requests.load(Ordering::SeqCst),
        throttled: stats.throttled as usize,
    }
}

/// Reads one request's stream, checking order, bytes and error kinds; returns
/// (ok, failed, cancelled).
async fn consume(
    seed: u64,
    client: &Client,
    objects: &[(String, Vec<u8>)],
    cancel_after: Option<usize>,
    salt: u64,
) -> (usize, usize, bool) {
    // Some sizes are left for the first GET to learn.
    let inputs: Vec<ObjectRef> = objects
        .iter()
        .enumerate()
        .map(|(i, (k, d))| match mix(seed ^ salt << 8 ^ i as u64) % 3 {
            0 => ObjectRef::without_size(k.clone()),
            _ => ObjectRef::new(k.clone(), d.len() as u64),
        })
        .collect();
    let mut stream = client.get_all("bucket", inputs);
    let (mut ok, mut failed) = (0, 0);
    let mut held = Vec::new();
    let mut i = 0usize;
    while let Some(item) = stream.next().await {
        if cancel_after == Some(i) {
            return (ok, failed, true);
        }
        let (key, data) = &objects[i];
        // A streaming body is read to its end here (its bytes, or the error a part ended it with).
        let item = match item {
            Ok(mut obj) if obj.body.is_streaming() => read_streaming(&mut obj)
                .await
                .map(|bytes| (obj, Some(bytes))),
            Ok(obj) => Ok((obj, None)),
            Err(e) => Err(e),
        };
        match item {
            Ok((obj, streamed)) => {
                assert_eq!(
                    (obj.seq, obj.key.as_str()),
                    (i as u64, key.as_str()),
                    "seed {seed}"
                );
                let bytes = streamed.unwrap_or_else(|| obj.body.to_vec());
                assert!(bytes == *data, "seed {seed}: bytes of {key} differ");
                ok += 1;
                // Hold a body for a while, as a slow consumer would. Each request's held body
                // and next object (6 slabs at most each) fit the 24-slab budget together;
                // holding more could wait forever by design (see `Client::get_all`).
                if mix(seed ^ salt ^ i as u64) % 2 == 0 {
                    held.clear();
                }
                held.push(obj);
                if held.len() > 1 {
                    held.remove(0);
                }
            }
            Err(e) => {
                assert_eq!(
                    (e.seq(), e.key()),
                    (Some(i as u64), Some(key.as_str())),
                    "seed {seed}: {e}"
                );
                // Throttling is not among them: it waits, spending no attempts, and the
                // throttle timeout is far beyond a run.
                match e.kind() {
                    ErrorKind::Connect
                    | ErrorKind::Connection
                    | ErrorKind::Timeout
                    | ErrorKind::Status => {
                        assert!(e.is_retryable(), "seed {seed}: {e}");
                        assert_eq!(e.attempts(), MAX_ATTEMPTS, "seed {seed}: {e}");
                        assert_eq!(e.earlier_attempts().len(), MAX_ATTEMPTS as usize - 1);
                    }
                    // The injected ETag change: refused, never mixed.
                    ErrorKind::Changed => {}
                    other => panic!("seed {seed}: unexpected kind {other:?}: {e}"),
                }
                failed += 1;
            }
        }
        i += 1;
    }
    assert_eq!(
        i,
        objects.len(),
        "seed {seed}: {i} items for {} inputs",
        objects.len()
    );
    (ok, failed, false)
}

/// Reads a streaming body to its end: its bytes, or the error a part ended it with.
async fn read_streaming(obj: &mut Object) -> Result<Vec<u8>, s3_ordered::Error> {
    let mut got = Vec::new();
    while let Some(chunk) = obj.body.next_chunk().await {
        got.extend_from_slice(&chunk?);
    }
    Ok(got)
}
