//! The seeded fault suite: 200 runs in CI (`S3O_FAULT_RUNS` for more, `S3O_FAULT_SEED` to
//! replay one); `cargo run --release --example soak` runs thousands.
//!
//! A test binary of its own: the suite samples the kernel's socket table, which every socket of
//! the process appears in, so no other test may run beside it; its two tests (plain, and a subset
//! over TLS) take turns.

#[path = "support/certs.rs"]
#[allow(dead_code)]
mod certs;
#[path = "support/fault_server.rs"]
mod fault_server;
#[path = "support/fault_suite.rs"]
#[allow(dead_code)] // the throttle-heavy runs are tests/throttle_faults.rs
mod fault_suite;
#[path = "support/quiescent.rs"]
#[allow(dead_code)]
mod quiescent;

use fault_suite::{run_seed, run_seed_tls, RunReport};

/// The two tests of this binary run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_runs_keep_every_invariant() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let seeds: Vec<u64> = match std::env::var("S3O_FAULT_SEED") {
        Ok(s) => vec![s.parse().expect("S3O_FAULT_SEED is a number")],
        Err(_) => {
            let runs: u64 = std::env::var("S3O_FAULT_RUNS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(200);
            (1..=runs).collect()
        }
    };
    let (mut ok, mut failed, mut cancelled, mut requests) = (0, 0, 0, 0);
    // Several runs at once, each with its own server and client.
    for batch in seeds.chunks(8) {
        let handles: Vec<_> = batch.iter().map(|&s| tokio::spawn(run_seed(s))).collect();
        for h in handles {
            let r = match h.await {
                Ok(r) => r,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            ok += r.ok;
            failed += r.failed;
            cancelled += usize::from(r.cancelled);
            requests += r.requests;
        }
    }
    eprintln!(
        "fault suite: {} runs, {ok} objects ok, {failed} failed with typed errors, \
         {cancelled} runs cancelled, {requests} requests",
        seeds.len()
    );
    // The faults were real: far more requests than objects, and both outcomes seen.
    if seeds.len() >= 50 {
        assert!(requests > ok + failed, "no retries happened");
        assert!(ok > 0 && failed > 0 && cancelled > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_runs_over_tls_keep_every_invariant() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // A subset over https: the same faults cut TLS records short, reset and stall inside them.
    let seeds: Vec<u64> = match std::env::var("S3O_FAULT_SEED") {
        Ok(s) => vec![s.parse().expect("S3O_FAULT_SEED is a number")],
        Err(_) => (1001..=1060).collect(),
    };
    let (mut ok, mut failed, mut requests) = (0, 0, 0);
    for batch in seeds.chunks(8) {
        let handles: Vec<_> = batch
            .iter()
            .map(|&s| tokio::spawn(run_seed_tls(s)))
            .collect();
        for h in handles {
            let r: RunReport = match h.await {
                Ok(r) => r,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            ok += r.ok;
            failed += r.failed;
            requests += r.requests;
        }
    }
    eprintln!(
        "fault suite over TLS: {} runs, {ok} objects ok, {failed} failed with typed errors, \
         {requests} requests",
        seeds.len()
    );
    if seeds.len() >= 50 {
        assert!(requests > ok + failed, "no retries happened");
        assert!(ok > 0 && failed > 0);
    }
}
