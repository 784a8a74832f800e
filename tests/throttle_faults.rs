//! The throttle-heavy fault mix (5 % 503 SlowDown, 3 % resets, 3 % truncated bodies, 1 % 2-second
//! stalls) against clients with default settings: nothing may be lost, over every seed.
//!
//! A test binary of its own, like the main fault suite, so its sockets and timing are not
//! shared with other tests.

#[path = "support/certs.rs"]
#[allow(dead_code)]
mod certs;
#[path = "support/fault_server.rs"]
#[allow(dead_code)]
mod fault_server;
#[path = "support/fault_suite.rs"]
#[allow(dead_code)]
mod fault_suite;
#[path = "support/quiescent.rs"]
#[allow(dead_code)]
mod quiescent;
#[path = "support/sockets.rs"]
mod sockets;

use fault_suite::{run_all, run_defaults_seed, seeds};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_flaky_server_loses_nothing_with_default_settings() {
    // RUST_LOG=s3_ordered=debug shows what the client does (with one seed, S3O_FAULT_SEED).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let t = run_all(&seeds(1..=16), 8, run_defaults_seed, |r| {
        assert_eq!(r.failed, 0, "an object was lost: {r:?}");
    })
    .await;
    eprintln!("throttle-heavy mix: {t:?}");
    if t.runs > 1 {
        assert!(t.throttled > 0, "no throttling happened");
        assert!(t.requests > t.ok, "no faults happened");
    }
}
