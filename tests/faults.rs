//! The seeded fault suite: 200 runs in CI (`S3O_FAULT_RUNS` for more, `S3O_FAULT_SEED` to
//! replay one); `cargo run --release --example soak` runs thousands.
//!
//! A test binary of its own: the suite samples the kernel's socket table, which every socket of
//! the process appears in, so no other test may run beside it; its two tests (plain, and a subset
//! over TLS, each also with hyper's HTTP/1.1) take turns.

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
#[path = "support/sockets.rs"]
mod sockets;

use fault_suite::{
    run_all, run_seed, run_seed_hyper, run_seed_tls, run_seed_tls_hyper, seeds, Totals,
};

/// The two tests of this binary run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The faults were real: far more requests than objects, and every outcome seen.
fn assert_faults_were_real(t: &Totals) {
    if t.runs >= 50 {
        assert!(t.requests > t.ok + t.failed, "no retries happened: {t:?}");
        assert!(t.ok > 0 && t.failed > 0 && t.cancelled > 0, "{t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_runs_keep_every_invariant() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let runs: u64 = std::env::var("S3O_FAULT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let t = run_all(&seeds(1..=runs), 8, run_seed, |_| {}).await;
    eprintln!("fault suite: {t:?}");
    assert_faults_were_real(&t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_runs_over_tls_keep_every_invariant() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // A subset over https: the same faults cut TLS records short, reset and stall inside them.
    let t = run_all(&seeds(1001..=1060), 8, run_seed_tls, |_| {}).await;
    eprintln!("fault suite over TLS: {t:?}");
    assert_faults_were_real(&t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_runs_on_hyper_keep_every_invariant() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // A share of the suite with hyper carrying the exchanges, plain and over TLS: the same
    // faults, the same invariants (sockets within max_connections, memory within the budget,
    // every object right or failed at its own place).
    let t = run_all(&seeds(2001..=2060), 8, run_seed_hyper, |_| {}).await;
    eprintln!("fault suite on hyper: {t:?}");
    assert_faults_were_real(&t);
    let t = run_all(&seeds(3001..=3030), 8, run_seed_tls_hyper, |_| {}).await;
    eprintln!("fault suite on hyper over TLS: {t:?}");
    assert_faults_were_real(&t);
}
